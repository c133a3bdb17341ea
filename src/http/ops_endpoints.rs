//! The operational endpoints `/health`, `/ready` and `/metrics` (COMPAT §1.1), answered the same
//! way on both listeners: the public one (`SHOPCHAT_LISTEN`, through the pipeline, right after
//! the Host check) and the internal one (`SHOPCHAT_METRICS_LISTEN`).
//!
//! On the public listener the endpoints that do work are throttled per client IP with a budget
//! of their own (`SHOPCHAT_OPS_RATE_LIMIT`; not the §1.4 throttle: no `X-RateLimit-*` headers),
//! and `/ready` names failing checks without their reasons (security review M7); `/metrics`
//! lives only on the internal listener when there is one.

use std::net::IpAddr;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::http::ratelimit::{Decision, RateKey};
use crate::http::response;
use crate::http::routing::Route;
use crate::ops::metrics::{Sample, CONTENT_TYPE};
use crate::ops::ready::{self, Audience, Subject};
use crate::state::AppState;

/// Which listener a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Public,
    Internal,
}

/// The answer of an operational route to a GET or HEAD; `None` when the route is not served on
/// this listener (`/metrics` on the public one when the internal one exists).
pub async fn answer(
    route: &Route,
    state: &AppState,
    listener: Listener,
    client_ip: IpAddr,
    json_client: bool,
) -> Option<HttpResponse> {
    let public = listener == Listener::Public;
    match route {
        Route::Health => Some(response::json(StatusCode::OK, &json!({"status": "ok"}))),
        Route::Metrics if public && state.settings.http.metrics_listen.is_some() => None,
        Route::Ready | Route::Metrics => {
            if public {
                if let Decision::Limited { retry_after, .. } =
                    state.ops_limiter.hit(RateKey::ip(client_ip))
                {
                    let mut res = response::mirrored_error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "Too Many Attempts.",
                        json_client,
                    );
                    res.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                    return Some(res);
                }
            }
            Some(match route {
                Route::Ready => {
                    let audience = match listener {
                        Listener::Public => Audience::Public,
                        Listener::Internal => Audience::Internal,
                    };
                    readiness(state, audience).await
                }
                _ => metrics(state).await,
            })
        }
        _ => None,
    }
}

async fn readiness(state: &AppState, audience: Audience) -> HttpResponse {
    let pool = state.db();
    let subject = Subject {
        pool: &pool,
        outbox: state.mailbox.outbox(),
        draining: state.ops.is_draining(),
    };
    ready::answer(&state.ops.readiness, subject, audience).await
}

/// Samples what the gauges mirror, then renders every metric.
async fn metrics(state: &AppState) -> HttpResponse {
    let m = &state.ops.metrics;
    let (knowledge, waiters) = state.watcher.sizes();
    let caches: Vec<(&'static str, usize)> = state
        .sanctum
        .cache_sizes()
        .into_iter()
        .chain(state.assets.cache_sizes())
        .chain([
            ("translations", state.translator.cache_size()),
            ("participants", state.participants.len()),
            ("rate_limit", state.limiter.len()),
            ("ops_rate_limit", state.ops_limiter.len()),
            ("poll_knowledge", knowledge),
            ("poll_waiters", waiters),
        ])
        .collect();
    m.sample(Sample {
        pool_size: state.pools.size(),
        pool_idle: state.pools.num_idle(),
        long_poll_waiters: state.watcher.waiting(),
        watcher_statements: state.watcher.statements(),
        caches: &caches,
    });
    if m.outbox_count_due() {
        let outbox = state.mailbox.outbox().clone();
        // A directory listing blocks; keep it off the async threads.
        match tokio::task::spawn_blocking(move || outbox.counts()).await {
            Ok(Ok(c)) => m.outbox_counted(c),
            other => tracing::warn!(?other, "metrics: cannot count the outbox"),
        }
    }
    response::with_body(StatusCode::OK, CONTENT_TYPE, m.render())
}

/// actix-web's handler of the internal listener: the three endpoints, plain 405/404 otherwise.
pub async fn internal_entry(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    use actix_web::http::Method;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return response::with_body(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "method not allowed\n".into(),
        );
    }
    let route = crate::http::routing::match_path(req.path());
    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    match answer(&route, &state, Listener::Internal, peer, true).await {
        Some(res) => res,
        None => response::with_body(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n".into(),
        ),
    }
}

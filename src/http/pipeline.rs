//! The request pipeline of COMPAT §1.2 (K2), in the order the PHP middleware
//! stack runs it. Every request enters through [`entry`]; the first step that
//! answers ends the request.
//!
//! | step | what                           | here                         |
//! |------|--------------------------------|------------------------------|
//! | 0    | request limits                 | actix-http, [`crate::http::conn`], [`read_body`], Content-Length |
//! | 1    | Host check                     | [`entry`]                    |
//! | –    | OPTIONS / 405 / outside `/api/`| [`short_circuit`]            |
//! | 2    | throttle (D8)                  | [`routed`]                   |
//! | 3    | Sanctum + touch (D9)           | [`routed`]                   |
//! | 4–7  | maintenance, System-Key, locale, banned | [`routed`]          |
//! | 8    | handler                        | [`crate::chat::dispatch`]    |

use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;

use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::NaiveDateTime;
use futures_util::StreamExt;
use serde_json::json;

use crate::auth::sanctum::AuthUser;
use crate::chat::{self, Ctx};
use crate::error::{ApiError, ErrorShape};
use crate::http::conn::Clock;
use crate::http::input::Input;
use crate::http::origin;
use crate::http::ratelimit::{Decision, RateKey};
use crate::http::response;
use crate::http::routing::{match_path, Methods, Route};
use crate::laravel::accept::is_json_client;
use crate::laravel::dates::now_naive;
use crate::ops::ready::Audience;
use crate::state::AppState;

/// How a request is executed. `Shadow` is used only by `shopchat shadow`
/// (src/shadow/, COMPAT §11.2): the answer is computed for comparison with the
/// primary's and thrown away, so it must leave no trace — no token touch (D9),
/// no translation insert (§7.1), no throttle charge (§1.4), no token delete
/// (K6), and POST routes only validate (see [`crate::chat::dispatch`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Serve,
    Shadow,
}

impl Mode {
    /// Whether this request may write (the database, the throttle counters).
    pub fn writes(self) -> bool {
        self == Mode::Serve
    }
}

/// Everything known about a request once it passed the Host check.
pub struct RequestInfo {
    pub route: Route,
    /// `<root>`: scheme, host, port and base path (§4.3).
    pub root: String,
    /// `<root>` + the raw path (base removed, trailing `/` removed): the paginator's `path`.
    pub path_url: String,
    pub json_client: bool,
    pub client_ip: IpAddr,
    pub now: NaiveDateTime,
    /// Serve, or shadow (no side effects).
    pub mode: Mode,
    /// The client connection's clock (`http::conn`); `None` for the shadow's in-memory requests.
    pub connection: Option<Rc<Clock>>,
}

pub async fn entry(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    entry_in_mode(req, payload, &state, Mode::Serve).await
}

/// [`entry`] with an explicit [`Mode`]; `shopchat shadow` calls it with
/// `Mode::Shadow` on an in-memory copy of the client's request.
pub async fn entry_in_mode(
    req: HttpRequest,
    payload: web::Payload,
    state: &AppState,
    mode: Mode,
) -> HttpResponse {
    let request_id = origin::request_id(header_str(req.headers(), "x-request-id"));
    let started = std::time::Instant::now();
    let connection = req.conn_data::<Rc<Clock>>().cloned();
    if let Some(c) = &connection {
        c.serving();
    }
    let (route_name, mut res) = answer(&req, payload, state, mode, connection.clone()).await;
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(HeaderName::from_static("x-request-id"), v);
    }
    if let Some(c) = &connection {
        let closing = res
            .headers()
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        c.answered(closing);
    }
    let elapsed = started.elapsed();
    state.ops.metrics.observe(route_name, res.status(), elapsed);
    // The token's user when known; never the bearer secret or the message text.
    let user_id = res.extensions().get::<LoggedUser>().map(|u| u.0);
    tracing::info!(
        method = %req.method(),
        route = route_name,
        status = res.status().as_u16(),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        user_id,
        request_id = %request_id,
        "request"
    );
    res
}

/// The user of a request's valid bearer token, handed from [`routed`] to the log line.
struct LoggedUser(u64);

async fn answer(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    mode: Mode,
    connection: Option<Rc<Clock>>,
) -> (&'static str, HttpResponse) {
    let settings = &state.settings;
    // Step 0: a declared body above the limit is refused before it is read.
    if let Some(len) =
        header_str(req.headers(), "content-length").and_then(|v| v.trim().parse::<u64>().ok())
    {
        if len > settings.http.max_body_bytes as u64 {
            return ("too-large", too_large());
        }
    }

    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let trusted = origin::is_trusted(peer, &settings.http.trusted_proxies);
    let forwarded = |name: &str| {
        if trusted {
            header_str(req.headers(), name).map(origin::first_value)
        } else {
            None
        }
    };

    // Step 1: the Host check (§4.3).
    // A Host that is not even visible ASCII fails the check (it cannot match
    // the allowed characters); it must not count as "no Host".
    let host = forwarded("x-forwarded-host")
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .map(|v| v.to_str().unwrap_or(" "))
        })
        .filter(|h| !h.is_empty());
    let origin_url = match host {
        Some(h) if !origin::valid_host(h) => {
            let json_client = json_client(req.headers());
            return (
                "bad-host",
                response::mirrored_error(
                    StatusCode::NOT_FOUND,
                    "Bad hostname provided.",
                    json_client,
                ),
            );
        }
        Some(h) => {
            let scheme = forwarded("x-forwarded-proto")
                .map(str::to_ascii_lowercase)
                .unwrap_or_else(|| "http".into());
            let scheme = if scheme == "https" { "https" } else { "http" };
            origin::origin(scheme, h, forwarded("x-forwarded-port"))
        }
        None => settings.laravel.url_root().to_string(),
    };

    let raw_path = req.uri().path();
    let base = settings.http.base_path.as_str();
    let (route, rel_path) = match raw_path.strip_prefix(base) {
        Some(rest) if base.is_empty() || rest.is_empty() || rest.starts_with('/') => {
            (match_path(rest), rest)
        }
        _ => (Route::Outside, raw_path),
    };
    let json_client = json_client(req.headers());
    let client_ip = origin::client_ip(
        peer,
        header_str(req.headers(), "x-forwarded-for").filter(|_| trusted),
        &settings.http.trusted_proxies,
    );
    if let Some(res) = short_circuit(
        req.method(),
        &route,
        rel_path,
        json_client,
        client_ip,
        state,
    )
    .await
    {
        return (route.name(), res);
    }

    let root = format!("{origin_url}{base}");
    let info = RequestInfo {
        path_url: format!("{root}{}", rel_path.trim_end_matches('/')),
        root,
        json_client,
        client_ip,
        now: now_naive(settings.laravel.timezone),
        route,
        mode,
        connection,
    };
    let name = info.route.name();
    (name, routed(req, payload, state, info).await)
}

/// The answers given right after the Host check, without throttle, token or
/// System-Key (§1.1): OPTIONS, 405, paths outside `/api/`, the operational endpoints.
async fn short_circuit(
    method: &Method,
    route: &Route,
    rel_path: &str,
    json_client: bool,
    client_ip: IpAddr,
    state: &AppState,
) -> Option<HttpResponse> {
    let is_get = method == Method::GET || method == Method::HEAD;
    // With SHOPCHAT_METRICS_LISTEN set, /metrics lives only on that listener.
    let metrics_here = state.settings.http.metrics_listen.is_none();
    match route {
        Route::Health | Route::Ready | Route::Metrics if !is_get => {
            return Some(method_not_allowed(
                method,
                rel_path,
                Methods::GetHead,
                json_client,
            ))
        }
        Route::Health => return Some(response::json(StatusCode::OK, &json!({"status": "ok"}))),
        // The endpoints that do work are throttled per client IP on this public listener, with
        // a budget of their own (not the §1.4 throttle: no X-RateLimit-* headers; security
        // review M7).
        Route::Ready | Route::Metrics if route == &Route::Ready || metrics_here => {
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
            return Some(match route {
                Route::Ready => crate::ops::ready::answer(state, Audience::Public).await,
                _ => crate::ops::metrics::answer(state).await,
            });
        }
        Route::Outside | Route::Metrics => {
            let trimmed = rel_path.trim_matches('/');
            let shown = if trimmed.is_empty() { "/" } else { trimmed };
            return Some(response::mirrored_error(
                StatusCode::NOT_FOUND,
                &format!("The route {shown} could not be found."),
                json_client,
            ));
        }
        _ => {}
    }
    let methods = route.methods();
    if method == Method::OPTIONS {
        let mut res = response::with_body(StatusCode::OK, response::HTML, String::new());
        res.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static(methods.allow_options()),
        );
        return Some(res);
    }
    if *route == Route::OpenApi && is_get {
        return Some(response::with_body(
            StatusCode::OK,
            response::JSON,
            crate::openapi::document(state),
        ));
    }
    let allowed = match methods {
        Methods::GetHead => is_get,
        // GET/HEAD on a POST-only path is the fallback (§1.1).
        Methods::Post => is_get || method == Method::POST,
    };
    (!allowed).then(|| method_not_allowed(method, rel_path, methods, json_client))
}

fn method_not_allowed(
    method: &Method,
    rel_path: &str,
    methods: Methods,
    json_client: bool,
) -> HttpResponse {
    let message = format!(
        "The {} method is not supported for route {}. Supported methods: {}.",
        method.as_str(),
        rel_path.trim_matches('/'),
        methods.allow_405()
    );
    let mut res = response::mirrored_error(StatusCode::METHOD_NOT_ALLOWED, &message, json_client);
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(methods.allow_405()));
    res
}

/// Steps 2–8 for a routed request (chat route or fallback).
async fn routed(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    info: RequestInfo,
) -> HttpResponse {
    let settings = &state.settings;
    let is_post = req.method() == Method::POST;
    let route = if !is_post && info.route.methods() == Methods::Post {
        Route::Fallback
    } else {
        info.route.clone()
    };

    // Step 0 for bodies without Content-Length, and the body timeout.
    let body = if is_post && route.is_chat() {
        match read_body(
            payload,
            settings.http.max_body_bytes,
            settings.http.client_timeout,
        )
        .await
        {
            Ok(b) => b,
            Err(res) => return res,
        }
    } else {
        Vec::new()
    };

    // The throttle key needs the token's user, resolved without side effects (D8). A client
    // IP whose bucket is spent is answered before any lookup, unless its token is already
    // known good: a flood of random tokens costs the shop's database nothing (§1.4, 2026-12).
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let ip_key = RateKey::ip(info.client_ip);
    let spent = match info.mode {
        Mode::Serve => state
            .limiter
            .spent(ip_key)
            .filter(|_| !state.sanctum.known_good(authorization, info.now)),
        Mode::Shadow => None,
    };
    let auth = match spent {
        Some(_) => Ok(None),
        None => state.sanctum.resolve(authorization, info.now).await,
    };
    let key = match &auth {
        Ok(Some(user)) => RateKey::User(user.user_id),
        _ => ip_key,
    };
    // Step 2. A shadow request is not counted (§11.2): it reports the limit
    // with nothing used, a value the comparison ignores.
    let decision = match (info.mode, spent) {
        (Mode::Serve, Some(limited)) => limited,
        (Mode::Serve, None) => state.limiter.hit(key),
        (Mode::Shadow, _) if settings.http.rate_limit == 0 => Decision::Off,
        (Mode::Shadow, _) => Decision::Allowed {
            limit: settings.http.rate_limit,
            remaining: settings.http.rate_limit,
        },
    };
    let user_id = auth
        .as_ref()
        .ok()
        .and_then(Option::as_ref)
        .map(|u| u.user_id);
    let shape = match route {
        Route::CreateConversation => ErrorShape::ResultFalse,
        _ => ErrorShape::Plain,
    };
    let mut res = if let Decision::Limited { limit, retry_after } = decision {
        too_many_attempts(limit, retry_after, info.json_client)
    } else {
        match steps_3_to_8(req, state, &info, route, auth, body).await {
            Ok(res) => res,
            Err(e) => e.render(info.json_client, &info.root, shape),
        }
    };
    if let Some(id) = user_id {
        res.extensions_mut().insert(LoggedUser(id));
    }
    if let Decision::Allowed { limit, remaining } = decision {
        ratelimit_headers(res.headers_mut(), limit, remaining);
    }
    res
}

/// `X-RateLimit-Limit` and `X-RateLimit-Remaining` (§1.4).
fn ratelimit_headers(h: &mut HeaderMap, limit: u32, remaining: u32) {
    h.insert(
        HeaderName::from_static("x-ratelimit-limit"),
        HeaderValue::from(limit),
    );
    h.insert(
        HeaderName::from_static("x-ratelimit-remaining"),
        HeaderValue::from(remaining),
    );
}

async fn steps_3_to_8(
    req: &HttpRequest,
    state: &AppState,
    info: &RequestInfo,
    route: Route,
    auth: Result<Option<AuthUser>, sqlx::Error>,
    body: Vec<u8>,
) -> Result<HttpResponse, ApiError> {
    let settings = &state.settings;
    let now_s = crate::laravel::dates::format_wall(info.now);
    // Step 3: Sanctum, then the token touch (D9).
    let user = if route.is_chat() {
        let user = auth?.ok_or(ApiError::Unauthenticated)?;
        if info.mode.writes() {
            state.sanctum.touch(user.token_id, info.now).await?;
        }
        Some(user)
    } else {
        None
    };
    // Step 4 (K7): the text is in DEFAULT_LANGUAGE; App-Language is not applied yet.
    if state.maintenance.is_on() {
        let message = state
            .translator
            .translate(
                "We are Under Maintenance",
                settings.laravel.fallback_language(),
                &now_s,
                info.mode.writes(),
            )
            .await?;
        return Ok(response::json(
            StatusCode::OK,
            &json!({"result": false, "status": "maintenance", "message": message}),
        ));
    }
    // Step 5 (K5): byte-equal, never "" or "0"; unset SYSTEM_KEY refuses everything.
    let system_key = req.headers().get("system-key").map(|v| v.as_bytes());
    if !system_key_matches(system_key, settings.laravel.system_key.as_deref()) {
        return Ok(response::json(
            StatusCode::OK,
            &json!({"result": false, "message": "Request not found!"}),
        ));
    }
    let Some(user) = user else {
        // Step 8 of the fallback.
        return Ok(response::json(
            StatusCode::OK,
            &json!({"data": [], "success": false, "status": 404, "message": "Invalid Route"}),
        ));
    };
    // Step 6 (K8): the header wins even when empty.
    let locale = match req.headers().get("app-language") {
        Some(v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        None => settings.laravel.fallback_language().to_string(),
    };
    // Step 7 (K6).
    if user.banned {
        if info.mode.writes() {
            state.sanctum.delete_token(&user).await?;
        }
        let message = state
            .translator
            .translate("user is banned", &locale, &now_s, info.mode.writes())
            .await?;
        return Ok(response::json(
            StatusCode::OK,
            &json!({"result": false, "status": "banned", "message": message}),
        ));
    }
    let query = req.uri().query().unwrap_or("");
    let input = if req.method() == Method::POST {
        Input::from_post(header_str(req.headers(), "content-type"), &body, query).await
    } else {
        Input::from_query(query)
    };
    let ctx = Ctx {
        state,
        user,
        info,
        locale,
        now_s,
        input,
    };
    chat::dispatch(&ctx, &route).await
}

/// K5: the `System-Key` header equals `SYSTEM_KEY` byte for byte, and is neither empty nor
/// `"0"`. Compared in constant time: the key is a shared secret (security review L6).
fn system_key_matches(given: Option<&[u8]>, expected: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    match (given, expected) {
        (Some(given), Some(expected)) if !given.is_empty() && given != b"0" => {
            bool::from(given.ct_eq(expected.as_bytes()))
        }
        _ => false,
    }
}

/// Reads a POST body within the size limit and the client timeout (step 0).
async fn read_body(
    mut payload: web::Payload,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, HttpResponse> {
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| match e {
                PayloadError::Overflow => too_large(),
                // The body ended early or its chunked encoding is broken
                // (actix reports both as incomplete): malformed HTTP,
                // answered like the HTTP server answers other malformed
                // requests. A slow body is the timeout below (408).
                _ => malformed_answer(),
            })?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(timeout_answer()),
    }
}

fn too_large() -> HttpResponse {
    let mut res =
        response::pretty_message(StatusCode::PAYLOAD_TOO_LARGE, "The POST data is too large.");
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

fn malformed_answer() -> HttpResponse {
    let mut res = HttpResponse::BadRequest().finish();
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

fn timeout_answer() -> HttpResponse {
    let mut res = response::pretty_message(StatusCode::REQUEST_TIMEOUT, "Request Timeout");
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// The 429 answer of §1.4, headers in PHP's order.
fn too_many_attempts(limit: u32, retry_after: u64, json_client: bool) -> HttpResponse {
    let mut res = response::mirrored_error(
        StatusCode::TOO_MANY_REQUESTS,
        "Too Many Attempts.",
        json_client,
    );
    let reset = chrono::Utc::now().timestamp() + retry_after as i64;
    let h = res.headers_mut();
    ratelimit_headers(h, limit, 0);
    h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    h.insert(
        HeaderName::from_static("x-ratelimit-reset"),
        HeaderValue::from(reset),
    );
    res
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn json_client(headers: &HeaderMap) -> bool {
    is_json_client(
        header_str(headers, "accept"),
        header_str(headers, "x-requested-with"),
        header_str(headers, "x-pjax"),
    )
}

#[cfg(test)]
mod tests {
    use super::system_key_matches;

    #[test]
    fn system_key_is_byte_equal_and_never_empty_or_zero() {
        assert!(system_key_matches(Some(b"k3y"), Some("k3y")));
        assert!(!system_key_matches(Some(b"k3y "), Some("k3y")));
        assert!(!system_key_matches(Some(b"K3Y"), Some("k3y")));
        assert!(!system_key_matches(Some(b""), Some("")));
        assert!(!system_key_matches(Some(b"0"), Some("0")));
        assert!(!system_key_matches(None, Some("k3y")));
        assert!(
            !system_key_matches(Some(b"k3y"), None),
            "unset refuses everything"
        );
    }
}

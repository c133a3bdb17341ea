//! The shadow listener: a reverse proxy in front of the primary.
//!
//! Every request is forwarded to the primary and its answer goes back to
//! the client unchanged — status, headers (hop-by-hop ones excepted), body
//! streamed as it arrives. For the compared routes a copy of the exchange is
//! queued *after* the primary's body has been handed to the client; a full
//! queue drops the comparison, never the request. `/metrics` on this
//! listener is answered here (the primary's own `/metrics`, if any, is not
//! reachable through the shadow).

use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use actix_web::body::{BodyStream, SizedStream};
use actix_web::dev::Server;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};

use crate::shadow::client::primary_client;
use crate::shadow::compare::Outcome;
use crate::shadow::exchange::{Answer, Kind};
use crate::shadow::metrics::Metrics;
use crate::shadow::worker::{self, Job};
use crate::shadow::{shadow_kind, ShadowConfig};

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What the listener's handlers share.
pub(crate) struct Shared {
    pub config: ShadowConfig,
    pub metrics: Arc<Metrics>,
    pub queue: mpsc::Sender<Job>,
    pub client: reqwest::Client,
}

/// A running shadow proxy.
pub struct Shadow {
    port: u16,
    server: Server,
    metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    worker: std::thread::JoinHandle<()>,
}

impl Shadow {
    /// Binds `config.listen` and starts serving; the comparison worker runs on
    /// its own thread with its own database pool.
    pub async fn start(config: ShadowConfig) -> anyhow::Result<Shadow> {
        let listener = TcpListener::bind(config.listen)
            .with_context(|| format!("--listen: cannot listen on {}", config.listen))?;
        Self::start_with_listener(config, listener).await
    }

    pub async fn start_with_listener(
        config: ShadowConfig,
        listener: TcpListener,
    ) -> anyhow::Result<Shadow> {
        let port = listener.local_addr()?.port();
        let metrics = Arc::new(Metrics::new());
        let (queue, jobs) = mpsc::channel(config.queue_capacity.max(1));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let worker = worker::spawn(config.clone(), metrics.clone(), jobs, shutdown_rx).await?;
        let shared = web::Data::new(Shared {
            client: primary_client()?,
            config,
            metrics: metrics.clone(),
            queue,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                // Bodies are streamed; actix's own size limits do not apply.
                .app_data(web::PayloadConfig::new(usize::MAX))
                .default_service(web::to(handle))
        })
        .listen(listener)?
        .run();
        Ok(Shadow {
            port,
            server,
            metrics,
            shutdown,
            worker,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Serves until SIGINT/SIGTERM, then lets the worker finish the queue
    /// and write the final summary.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        let _ = self.shutdown.send(true);
        let worker = self.worker;
        let _ = tokio::task::spawn_blocking(move || worker.join()).await;
        result
    }
}

async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
) -> HttpResponse {
    if req.path() == "/metrics" && (req.method() == "GET" || req.method() == "HEAD") {
        let text = shared.metrics.render(
            shared.config.queue_capacity
                - shared.queue.capacity().min(shared.config.queue_capacity),
            shared.config.queue_capacity,
        );
        return HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text);
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let method = req.method().as_str().to_string();
    let (route, kind) = shadow_kind(
        &method,
        &path_and_query,
        &shared.config.settings.http.base_path,
    );
    let route_name = route.name();

    // The request body: kept whole up to shopchat's own limit (the shadow
    // needs it), streamed past it.
    // A client that sends its body slower than SHOPCHAT_CLIENT_TIMEOUT gets a 408, as from
    // shopchat itself (security review L4: bodies were read without a time limit).
    let limit = shared.config.settings.http.max_body_bytes;
    let timeout = shared.config.settings.http.client_timeout;
    let body = match tokio::time::timeout(timeout, read_prefix(payload, limit)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "shadow: client request body broken off");
            return HttpResponse::BadRequest().finish();
        }
        Err(_) => {
            tracing::warn!("shadow: client request body not complete in time");
            return HttpResponse::RequestTimeout()
                .insert_header((actix_web::http::header::CONNECTION, "close"))
                .finish();
        }
    };

    let url = match primary_url(&shared.config.primary, &path_and_query) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, path = %path_and_query, "shadow: cannot build the primary URL");
            return HttpResponse::BadRequest().finish();
        }
    };
    let mut headers = reqwest::header::HeaderMap::new();
    let mut recorded_headers = Vec::new();
    let connection_listed: Vec<String> = req
        .headers()
        .get_all("connection")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    for (name, value) in req.headers() {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || connection_listed.iter().any(|c| c == n) {
            continue;
        }
        recorded_headers.push((
            n.to_string(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        ));
        // reqwest/hyper sets Content-Length for a body it holds whole.
        if n == "content-length" && matches!(body, ReqBody::Whole(_)) {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()),
            reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(k, v);
        }
    }
    let peer = req
        .peer_addr()
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    // Like any reverse proxy: the client's address is appended.
    let xff = match req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prior) => format!("{prior}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = reqwest::header::HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }

    let method_r = match reqwest::Method::from_bytes(method.as_bytes()) {
        Ok(m) => m,
        Err(_) => return HttpResponse::MethodNotAllowed().finish(),
    };
    let mut request = shared.client.request(method_r, url).headers(headers);
    let shadow_body: Option<Bytes>;
    match body {
        ReqBody::Whole(bytes) => {
            shadow_body = Some(bytes.clone());
            if !bytes.is_empty() {
                request = request.body(bytes);
            }
        }
        ReqBody::Streaming(stream) => {
            shadow_body = None;
            request = request.body(reqwest::Body::wrap_stream(stream));
        }
    }

    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            shared.metrics.primary_error();
            tracing::warn!(error = %e, route = route_name, "shadow: primary unreachable");
            return HttpResponse::BadGateway()
                .content_type("text/plain; charset=utf-8")
                .body("shopchat shadow: the primary did not answer\n");
        }
    };
    let status = response.status().as_u16();
    shared.metrics.proxied(route_name, status);
    let mut out =
        HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY));
    let mut answer_headers = Vec::new();
    for (name, value) in response.headers() {
        let n = name.as_str();
        answer_headers.push((
            n.to_string(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        ));
        if HOP_BY_HOP.contains(&n) || n == "content-length" {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            out.append_header((k, v));
        }
    }
    let length = response.content_length();
    let is_head = method == "HEAD";

    let job = kind.map(|kind| JobSeed {
        shared: shared.clone().into_inner(),
        route: route_name,
        kind,
        method: method.clone(),
        path: path_and_query.clone(),
        headers: recorded_headers,
        body: shadow_body,
        peer,
        status,
        answer_headers,
    });

    if is_head || length == Some(0) {
        // No body follows (and actix may never poll an empty one): the
        // exchange is complete now.
        if let Some(seed) = job {
            seed.enqueue(Vec::new(), false);
        }
        return match length {
            Some(n) => out.body(SizedStream::new(
                n,
                futures_util::stream::empty::<Result<Bytes, std::io::Error>>(),
            )),
            None => out.finish(),
        };
    }
    let tee = Tee {
        inner: Box::pin(response.bytes_stream()),
        captured: Vec::new(),
        cap: shared.config.max_compare_bytes,
        overflow: false,
        length,
        seen: 0,
        seed: job,
        metrics: shared.metrics.clone(),
    };
    match length {
        Some(n) => out.body(SizedStream::new(n, tee)),
        None => out.body(BodyStream::new(tee)),
    }
}

/// `primary` + the request's path and query (a primary base path is kept).
fn primary_url(primary: &reqwest::Url, path_and_query: &str) -> anyhow::Result<reqwest::Url> {
    let base = primary.as_str().trim_end_matches('/');
    Ok(reqwest::Url::parse(&format!("{base}{path_and_query}"))?)
}

enum ReqBody {
    Whole(Bytes),
    Streaming(Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>),
}

/// Reads the body up to `limit`; a longer one continues as a stream fed by
/// a local task (actix's payload cannot leave its thread, reqwest's body must).
async fn read_prefix(
    mut payload: web::Payload,
    limit: usize,
) -> Result<ReqBody, actix_web::error::PayloadError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        buf.extend_from_slice(&chunk);
        if buf.len() > limit {
            let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
            actix_web::rt::spawn(async move {
                while let Some(chunk) = payload.next().await {
                    let item = chunk.map_err(|e| std::io::Error::other(e.to_string()));
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        break;
                    }
                }
            });
            let rest = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            let prefix = futures_util::stream::once(async move { Ok(buf.freeze()) });
            return Ok(ReqBody::Streaming(Box::pin(prefix.chain(rest))));
        }
    }
    Ok(ReqBody::Whole(buf.freeze()))
}

/// What is known of an exchange before the primary's body has passed.
struct JobSeed {
    shared: Arc<Shared>,
    route: &'static str,
    kind: Kind,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Bytes>,
    peer: SocketAddr,
    status: u16,
    answer_headers: Vec<(String, String)>,
}

impl JobSeed {
    fn enqueue(self, body: Vec<u8>, overflow: bool) {
        let shared = self.shared;
        let job = Job {
            route: self.route,
            kind: self.kind,
            method: self.method,
            path: self.path,
            headers: self.headers,
            body: self.body,
            peer: self.peer,
            primary: Answer {
                status: self.status,
                headers: self.answer_headers,
                body,
            },
            primary_truncated: overflow,
        };
        if let Err(mpsc::error::TrySendError::Full(job)) = shared.queue.try_send(job) {
            shared.metrics.outcome(job.route, Outcome::Dropped, None);
        }
    }
}

/// Passes the primary's body through and keeps a copy (up to `cap`) for the
/// comparison. The exchange is queued as the last chunk is handed on (with a
/// Content-Length: when that many bytes have passed; chunked: at the end), so
/// it is in the queue before the client can have the whole answer — one
/// client's exchanges are queued in the order it sent them.
struct Tee {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    captured: Vec<u8>,
    cap: usize,
    overflow: bool,
    /// The primary's Content-Length, and the bytes passed so far.
    length: Option<u64>,
    seen: u64,
    seed: Option<JobSeed>,
    metrics: Arc<Metrics>,
}

impl Tee {
    fn finish(&mut self) {
        if let Some(seed) = self.seed.take() {
            let body = std::mem::take(&mut self.captured);
            seed.enqueue(body, self.overflow);
        }
    }
}

impl Stream for Tee {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if self.seed.is_some() && !self.overflow {
                    if self.captured.len() + chunk.len() > self.cap {
                        self.overflow = true;
                        self.captured = Vec::new();
                    } else {
                        self.captured.extend_from_slice(&chunk);
                    }
                }
                self.seen += chunk.len() as u64;
                if self.length.is_some_and(|n| self.seen >= n) {
                    self.finish();
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                // The primary broke off: the client sees the connection end
                // the same way; nothing to compare.
                self.metrics.primary_error();
                self.seed = None;
                Poll::Ready(Some(Err(std::io::Error::other(e.to_string()))))
            }
            Poll::Ready(None) => {
                // A body shorter than its Content-Length is an error of the
                // primary; the connection to the client breaks either way.
                if self.length.is_none_or(|n| self.seen >= n) {
                    self.finish();
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_urls_keep_a_base_path() {
        let p = reqwest::Url::parse("http://127.0.0.1:8081/shop/").unwrap();
        assert_eq!(
            primary_url(&p, "/api/v2/chat/messages/%31?page=%2B2")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8081/shop/api/v2/chat/messages/%31?page=%2B2"
        );
    }
}

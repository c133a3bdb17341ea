//! The request pipeline of COMPAT §1.2 (K2), in the order the PHP middleware
//! stack runs it, as a straight line of steps: every request enters through
//! [`entry`] (or [`run`], for the shadow's in-memory requests); the first step
//! that answers ends the request.
//!
//! | step | what                                     | here                                   |
//! |------|------------------------------------------|----------------------------------------|
//! | 0    | request limits                           | actix-http, [`crate::http::conn`], [`answer`] (Content-Length), [`read_body`] |
//! | 1    | Host check, and what the request is      | [`RequestInfo::read`]                  |
//! | –    | OPTIONS / 405 / outside `/api/` / ops    | [`short_circuit`], [`crate::http::ops_endpoints`] |
//! | 2    | throttle (D8), before any token lookup for a spent IP | [`routed`]                |
//! | 3    | Sanctum + touch (D9)                     | [`authenticated_steps`]                |
//! | 4–7  | maintenance, System-Key, locale, banned  | [`authenticated_steps`]                |
//! | 8    | handler                                  | [`crate::chat::dispatch`]              |

use std::time::Instant;

use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{ConnectionType, Method, StatusCode};
use actix_web::{web, HttpResponse};
use futures_util::StreamExt;
use serde_json::json;

use crate::auth::sanctum::AuthUser;
use crate::chat::{self, Ctx};
use crate::error::{ApiError, ErrorShape};
use crate::http::input::Input;
use crate::http::ops_endpoints::{self, Listener};
use crate::http::ratelimit::{Decision, RateKey};
use crate::http::request::{names, Body, Incoming, Mode, RequestInfo};
use crate::http::response;
use crate::http::routing::{Methods, Route};
use crate::ids::UserId;
use crate::state::AppState;

/// actix-web's default service: every request of the public listener (no route table, no
/// middleware in front of it: [`Incoming::take_from`] relies on that).
pub async fn entry(
    mut req: ServiceRequest,
    state: web::Data<AppState>,
) -> Result<ServiceResponse, actix_web::Error> {
    let incoming = Incoming::take_from(&mut req);
    let res = run(incoming, &state, Mode::Serve).await;
    Ok(req.into_response(res))
}

/// The pipeline for one request; `shopchat shadow` runs it with `Mode::Shadow` on an
/// in-memory copy of the client's request.
pub async fn run(req: Incoming, state: &AppState, mode: Mode) -> HttpResponse {
    let started = Instant::now();
    if let Some(c) = &req.connection {
        c.serving();
    }
    let method = req.method.clone();
    let connection = req.connection.clone();
    let (route_name, request_id, mut res) = answer(req, state, mode).await;
    // §1.6: on every answer.
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(HeaderName::from_static("x-request-id"), v);
    }
    if let Some(c) = &connection {
        // While draining, every answer closes its connection: a proxy's kept-alive
        // connections would otherwise keep the drain busy until SHOPCHAT_SHUTDOWN_TIMEOUT cuts
        // them, requests in flight included (docs/scaling.md, rolling restarts).
        let closing =
            state.ops.is_draining() || res.head().connection_type() == ConnectionType::Close;
        if closing {
            res.head_mut().set_connection_type(ConnectionType::Close);
        }
        c.answered(closing);
    }
    let elapsed = started.elapsed();
    state.ops.metrics.observe(route_name, res.status(), elapsed);
    // The token's user when known; never the bearer secret or the message text.
    let user_id = res.extensions().get::<LoggedUser>().map(|u| u.0 .0);
    crate::telemetry::access_line::request(
        &method,
        route_name,
        res.status().as_u16(),
        elapsed,
        user_id,
        &request_id,
    );
    res
}

/// The user of a request's valid bearer token, handed from [`routed`] to the log line.
struct LoggedUser(UserId);

/// Steps 0 to 8: the route's name (for metrics and the log), the request id and the answer.
async fn answer(
    req: Incoming,
    state: &AppState,
    mode: Mode,
) -> (&'static str, String, HttpResponse) {
    let settings = &state.settings;
    // Step 0, first: a head above the HTTP server's limit gets the server's answer, whatever
    // the state of the connection's read buffer (`head_too_large`).
    if head_too_large(&req) {
        let request_id = crate::http::origin::request_id(None);
        return ("head-too-large", request_id, header_fields_too_large());
    }
    // Step 0: a declared body above the limit is refused before it is read.
    if let Some(len) = req
        .header(&header::CONTENT_LENGTH)
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        if len > settings.http.max_body_bytes as u64 {
            let request_id = crate::http::origin::request_id(req.header(&names::X_REQUEST_ID));
            return ("too-large", request_id, too_large());
        }
    }
    // Step 1: the Host check, and everything the later steps read of the request.
    let info = match RequestInfo::read(&req, settings, mode) {
        Ok(info) => info,
        Err(bad) => {
            let res = response::mirrored_error(
                StatusCode::NOT_FOUND,
                "Bad hostname provided.",
                bad.json_client,
            );
            return ("bad-host", bad.request_id, res);
        }
    };
    let name = info.route.name();
    let res = match short_circuit(&req.method, &info, state).await {
        Some(res) => res,
        None => routed(req, state, &info).await,
    };
    (name, info.request_id, res)
}

/// The answers given right after the Host check, without throttle, token or
/// System-Key (§1.1): OPTIONS, 405, paths outside `/api/`, the operational endpoints.
async fn short_circuit(
    method: &Method,
    info: &RequestInfo,
    state: &AppState,
) -> Option<HttpResponse> {
    let route = &info.route;
    let is_get = method == Method::GET || method == Method::HEAD;
    if route.is_operational() && is_get {
        if let Some(res) = ops_endpoints::answer(
            route,
            state,
            Listener::Public,
            info.client_ip,
            info.json_client,
        )
        .await
        {
            return Some(res);
        }
    }
    match route {
        Route::Health | Route::Ready | Route::Metrics if !is_get => {
            return Some(method_not_allowed(
                method,
                &info.rel_path,
                Methods::GetHead,
                info.json_client,
            ))
        }
        Route::Outside | Route::Health | Route::Ready | Route::Metrics => {
            let trimmed = info.rel_path.trim_matches('/');
            let shown = if trimmed.is_empty() { "/" } else { trimmed };
            return Some(response::mirrored_error(
                StatusCode::NOT_FOUND,
                &format!("The route {shown} could not be found."),
                info.json_client,
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
            crate::openapi::document(&state.settings.http.base_path),
        ));
    }
    let allowed = match methods {
        Methods::GetHead => is_get,
        // GET/HEAD on a POST-only path is the fallback (§1.1).
        Methods::Post => is_get || method == Method::POST,
    };
    (!allowed).then(|| method_not_allowed(method, &info.rel_path, methods, info.json_client))
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
async fn routed(mut req: Incoming, state: &AppState, info: &RequestInfo) -> HttpResponse {
    let settings = &state.settings;
    let is_post = req.method == Method::POST;
    let route = if !is_post && info.route.methods() == Methods::Post {
        Route::Fallback
    } else {
        info.route.clone()
    };

    // Step 0 for bodies without Content-Length, and the body timeout.
    let body = if is_post && route.is_chat() {
        let http = &settings.http;
        let body = std::mem::replace(&mut req.body, Body::Bytes(Default::default()));
        match read_body(body, http.max_body_bytes, http.client_timeout).await {
            Ok(b) => b,
            Err(res) => return res,
        }
    } else {
        Vec::new()
    };

    // The throttle key needs the token's user, resolved without side effects (D8). A client
    // IP whose bucket is spent is answered before any lookup, unless its token is already
    // known good: a flood of random tokens costs the shop's database nothing (§1.4, 2026-12).
    let authorization = req.header_bytes(&header::AUTHORIZATION);
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
    let limit = settings.http.rate_limit;
    let decision = match (info.mode, spent) {
        (Mode::Serve, Some(limited)) => limited,
        (Mode::Serve, None) => state.limiter.hit(key).await,
        (Mode::Shadow, _) if limit == 0 => Decision::Off,
        (Mode::Shadow, _) => Decision::Allowed {
            limit,
            remaining: limit,
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
        let fields = RequestFields {
            method: &req.method,
            query: req.uri.query().unwrap_or(""),
            content_type: req.header(&header::CONTENT_TYPE),
            system_key: req.header_bytes(&names::SYSTEM_KEY),
            app_language: req.header_bytes(&names::APP_LANGUAGE),
        };
        match authenticated_steps(state, info, route, auth, fields, body).await {
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

/// What steps 3–8 read of the request besides its body.
struct RequestFields<'a> {
    method: &'a Method,
    query: &'a str,
    content_type: Option<&'a str>,
    system_key: Option<&'a [u8]>,
    app_language: Option<&'a [u8]>,
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

/// Steps 3 (Sanctum) to 8 (the handler).
async fn authenticated_steps(
    state: &AppState,
    info: &RequestInfo,
    route: Route,
    auth: Result<Option<AuthUser>, sqlx::Error>,
    req: RequestFields<'_>,
    body: Vec<u8>,
) -> Result<HttpResponse, ApiError> {
    let laravel = &state.settings.laravel;
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
                laravel.fallback_language(),
                &info.now_s(),
                info.mode.writes(),
            )
            .await?;
        return Ok(response::json(
            StatusCode::OK,
            &json!({"result": false, "status": "maintenance", "message": message}),
        ));
    }
    // Step 5 (K5): byte-equal, never "" or "0"; unset SYSTEM_KEY refuses everything.
    if !system_key_matches(req.system_key, laravel.system_key.as_deref()) {
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
    let locale = match req.app_language {
        Some(v) => String::from_utf8_lossy(v).into_owned(),
        None => laravel.fallback_language().to_string(),
    };
    // Step 7 (K6).
    if user.banned {
        if info.mode.writes() {
            state.sanctum.delete_token(&user).await?;
        }
        let message = state
            .translator
            .translate("user is banned", &locale, &info.now_s(), info.mode.writes())
            .await?;
        return Ok(response::json(
            StatusCode::OK,
            &json!({"result": false, "status": "banned", "message": message}),
        ));
    }
    let input = if *req.method == Method::POST {
        Input::from_post(req.content_type, &body, req.query).await
    } else {
        Input::from_query(req.query)
    };
    let ctx = Ctx {
        state,
        user,
        info,
        locale,
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
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, HttpResponse> {
    let mut payload = match body {
        Body::Stream(payload) => payload,
        // The shadow's copy: whole already, within the limit or refused on its Content-Length.
        Body::Bytes(bytes) if bytes.len() <= limit => return Ok(bytes.to_vec()),
        Body::Bytes(_) => return Err(too_large()),
    };
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

/// An answer after which the connection closes. actix writes `connection: close` and closes
/// from the head's connection type (it ignores a Connection header set by hand).
fn close_after(mut res: HttpResponse) -> HttpResponse {
    res.head_mut().set_connection_type(ConnectionType::Close);
    res
}

/// actix-http's limit of a request head (`MAX_BUFFER_SIZE` in its h1 decoder, 3.20).
const MAX_HEAD_BYTES: usize = 128 * 1024;

/// Whether the head is larger than actix-http accepts (COMPAT §1.2 step 0: the server's own
/// limits). actix-http enforces its limit only on a head still incomplete in the connection's
/// read buffer (read in h1/decoder.rs); a complete head that arrived in one read is parsed
/// whatever its size, and how much one read brings depends on how that buffer grew. Counted
/// here as the request line and header lines would be on the wire, so that a head over the
/// limit is refused the same way every time.
fn head_too_large(req: &Incoming) -> bool {
    let target = req.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + req.uri.authority().map_or(0, |a| a.as_str().len());
    // `<method> <target> HTTP/1.1\r\n`, each field `<name>: <value>\r\n`, the final `\r\n`.
    let mut size = req.method.as_str().len() + target + 12 + 2;
    for (name, value) in req.headers.iter() {
        size += name.as_str().len() + value.len() + 4;
        if size > MAX_HEAD_BYTES {
            return true;
        }
    }
    false
}

/// actix-http's own answer to a head over its limit: 431, empty, then close.
fn header_fields_too_large() -> HttpResponse {
    close_after(HttpResponse::build(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).finish())
}

fn too_large() -> HttpResponse {
    close_after(response::pretty_message(
        StatusCode::PAYLOAD_TOO_LARGE,
        "The POST data is too large.",
    ))
}

fn malformed_answer() -> HttpResponse {
    close_after(HttpResponse::BadRequest().finish())
}

fn timeout_answer() -> HttpResponse {
    close_after(response::pretty_message(
        StatusCode::REQUEST_TIMEOUT,
        "Request Timeout",
    ))
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

#[cfg(test)]
mod tests {
    use super::{head_too_large, system_key_matches, MAX_HEAD_BYTES};
    use crate::http::request::{Body, Incoming};
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
    use actix_web::http::Method;

    /// A GET of `/a` whose head is `size` bytes on the wire, padding in one `x-pad` field.
    fn head_of(size: usize) -> Incoming {
        // `GET /a HTTP/1.1\r\n` is 17 bytes, `x-pad: <value>\r\n` 9 plus the value, the
        // blank line 2.
        let value = "p".repeat(size - 17 - 9 - 2);
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-pad"),
            HeaderValue::from_str(&value).unwrap(),
        );
        Incoming {
            method: Method::GET,
            uri: "/a".parse().unwrap(),
            headers,
            peer: None,
            connection: None,
            body: Body::Bytes(Default::default()),
        }
    }

    #[test]
    fn head_size_is_counted_as_on_the_wire() {
        assert!(!head_too_large(&head_of(MAX_HEAD_BYTES)));
        assert!(head_too_large(&head_of(MAX_HEAD_BYTES + 1)));
        assert!(!head_too_large(&head_of(100)));
    }

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

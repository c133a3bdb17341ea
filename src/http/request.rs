//! A request as the pipeline sees it ([`Incoming`]) and what is known of it once it passed the
//! Host check ([`RequestInfo`]), read once at the entry (COMPAT §1.2 steps 0–1, §1.5, §1.6,
//! §4.3), so that every later step reads fields instead of re-deriving them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

use actix_web::dev::{Payload, ServiceRequest};
use actix_web::http::header::{self, HeaderMap, HeaderName};
use actix_web::http::{Method, Uri};
use actix_web::HttpMessage;
use bytes::Bytes;
use chrono::NaiveDateTime;

use crate::config::Settings;
use crate::http::conn::Clock;
use crate::http::origin;
use crate::http::routing::{route_for, Route};
use crate::laravel::accept::is_json_client;
use crate::laravel::dates::now_naive;

/// How a request is executed. `Shadow` is used only by `shopchat shadow`
/// (src/shadow/, COMPAT §11.2): the answer is computed for comparison with the
/// primary's and thrown away, so it must leave no trace — no token touch (D9),
/// no translation insert (§7.1), no throttle charge (§1.4), no token delete
/// (K6), and POST routes only validate (see `chat::dispatch`).
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

/// The body still to be read: a client's stream, or the bytes of the shadow's in-memory copy.
pub enum Body {
    Stream(Payload),
    Bytes(Bytes),
}

/// The names of the request headers shopchat reads that `http::header` has no constant for.
pub mod names {
    use actix_web::http::header::HeaderName;

    pub const SYSTEM_KEY: HeaderName = HeaderName::from_static("system-key");
    pub const APP_LANGUAGE: HeaderName = HeaderName::from_static("app-language");
    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const X_REQUESTED_WITH: HeaderName = HeaderName::from_static("x-requested-with");
    pub const X_PJAX: HeaderName = HeaderName::from_static("x-pjax");
    pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
}

/// What shopchat reads of an HTTP request.
pub struct Incoming {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub peer: Option<SocketAddr>,
    /// The client connection's clock (`http::conn`); `None` for the shadow's in-memory requests.
    pub connection: Option<Rc<Clock>>,
    pub body: Body,
}

impl Incoming {
    /// A request from actix-web's server. The header map is moved out of the request's head,
    /// not copied. Why: actix-web keeps up to 128 finished requests per worker for reuse, each
    /// with its head as the request left it until the next request reuses it; a head's header
    /// values are slices of the connection's read buffer, so every kept request also kept a
    /// read buffer alive. heaptrack of a process idle after 20,000 simulated app users
    /// (bench/RESULTS-heap.md, 2026-12-06): 2.8 MB of the 4.1 MB still allocated were those
    /// maps and buffers.
    ///
    /// The request must be the one actix-web handed to the default service, not shared: a
    /// request another holder still references makes actix-web's `head_mut` panic. Nothing
    /// wraps the public listener's app, so the default service is the only holder.
    pub fn take_from(req: &mut ServiceRequest) -> Incoming {
        let body = Body::Stream(req.take_payload());
        let peer = req.peer_addr();
        let connection = req.conn_data::<Rc<Clock>>().cloned();
        let head = req.head_mut();
        Incoming {
            method: head.method.clone(),
            uri: head.uri.clone(),
            headers: std::mem::take(&mut head.headers),
            peer,
            connection,
            body,
        }
    }

    /// A header as text (`None` when absent or not visible ASCII).
    ///
    /// Names are typed ([`names`]): a `&str` name is parsed and checked on every lookup, which
    /// cost a poll more instructions than its whole answer's JSON (callgrind, 2026-12-06).
    pub fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A header as raw bytes.
    pub fn header_bytes(&self, name: &HeaderName) -> Option<&[u8]> {
        self.headers.get(name).map(|v| v.as_bytes())
    }

    /// A JSON client (§1.5): decides the form of the PHP-mirroring error answers.
    pub fn json_client(&self) -> bool {
        is_json_client(
            self.header(&header::ACCEPT),
            self.header(&names::X_REQUESTED_WITH),
            self.header(&names::X_PJAX),
        )
    }
}

/// Everything known about a request once it passed the Host check.
pub struct RequestInfo {
    /// The request's own `X-Request-Id` when well-formed, else a new one (§1.6).
    pub request_id: String,
    pub route: Route,
    /// The raw path with the base path removed (what 404 and 405 messages show, §1.1).
    pub rel_path: String,
    /// `<root>`: scheme, host, port and base path (§4.3).
    pub root: String,
    /// `<root>` + the raw path (base removed, trailing `/` removed): the paginator's `path`.
    pub path_url: String,
    pub json_client: bool,
    pub client_ip: IpAddr,
    pub now: NaiveDateTime,
    /// Serve, or shadow (no side effects).
    pub mode: Mode,
    /// The client connection's clock (`http::conn`), when there is one.
    pub connection: Option<Rc<Clock>>,
}

/// A request that fails the Host check (§1.2 step 1): the facts its answer needs.
pub struct BadHost {
    pub request_id: String,
    pub json_client: bool,
}

impl RequestInfo {
    /// `now` as written to TIMESTAMP columns (`YYYY-MM-DD HH:MM:SS` in APP_TIMEZONE).
    pub fn now_s(&self) -> String {
        crate::laravel::dates::format_wall(self.now)
    }

    /// Reads the request's origin, route and client once (§4.3, §1.1); a Host with characters
    /// outside §4.3's set is [`BadHost`].
    pub fn read(req: &Incoming, settings: &Settings, mode: Mode) -> Result<RequestInfo, BadHost> {
        let http = &settings.http;
        let request_id = origin::request_id(req.header(&names::X_REQUEST_ID));
        let json_client = req.json_client();
        let peer = req
            .peer
            .map(|a| a.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        // X-Forwarded-* only from a trusted proxy (§4.3).
        let trusted = origin::is_trusted(peer, &http.trusted_proxies);
        let forwarded = |name: &HeaderName| {
            req.header(name)
                .filter(|_| trusted)
                .map(origin::first_value)
        };
        // A Host that is not even visible ASCII fails the check (it cannot match the allowed
        // characters); it must not count as "no Host".
        let host = forwarded(&names::X_FORWARDED_HOST)
            .or_else(|| {
                req.headers
                    .get(header::HOST)
                    .map(|v| v.to_str().unwrap_or(" "))
            })
            .filter(|h| !h.is_empty());
        let origin_url = match host {
            Some(h) if !origin::valid_host(h) => {
                return Err(BadHost {
                    request_id,
                    json_client,
                })
            }
            Some(h) => {
                let scheme = match forwarded(&names::X_FORWARDED_PROTO) {
                    Some(p) if p.eq_ignore_ascii_case("https") => "https",
                    _ => "http",
                };
                origin::origin(scheme, h, forwarded(&names::X_FORWARDED_PORT))
            }
            None => settings.laravel.url_root().to_string(),
        };
        let (route, rel_path) = route_for(req.uri.path(), &http.base_path);
        // Built by pushes, as the origin is (src/http/origin.rs: both `format!`s cost a poll
        // about 1,700 instructions together).
        let mut root = origin_url;
        root.push_str(&http.base_path);
        let rel_trimmed = rel_path.trim_end_matches('/');
        let mut path_url = String::with_capacity(root.len() + rel_trimmed.len());
        path_url.push_str(&root);
        path_url.push_str(rel_trimmed);
        Ok(RequestInfo {
            request_id,
            path_url,
            rel_path: rel_path.to_string(),
            root,
            route,
            json_client,
            client_ip: origin::client_ip(
                peer,
                req.header(&names::X_FORWARDED_FOR).filter(|_| trusted),
                &http.trusted_proxies,
            ),
            now: now_naive(settings.laravel.timezone),
            mode,
            connection: req.connection.clone(),
        })
    }
}

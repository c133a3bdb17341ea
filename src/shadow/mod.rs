//! `shopchat shadow`, `shopchat replay`: comparing shopchat with the PHP
//! implementation on real traffic before and during the cutover
//! (docs/shadow.md, docs/cutover.md; COMPAT §11.2).
//!
//! ```text
//! client ──► shadow proxy ──► primary (PHP) ──► client gets this answer, unchanged
//!                 │
//!                 └─ after the answer: bounded queue ─► worker thread:
//!                      shopchat's own answer in Mode::Shadow (same database,
//!                      no writes), compare, count, log
//! ```
//!
//! Module map: [`proxy`] (the listener and forwarding), `worker` (in-process
//! answers and judging), [`compare`] (what differs), [`deviations`] (what is
//! `expected`, COMPAT §9), [`rules`] (ignore rules), [`metrics`], [`log`]
//! (capped JSONL), [`report`], [`replay`] (recorded requests and nginx logs).

pub mod client;
pub mod compare;
pub mod deviations;
pub mod exchange;
pub mod log;
pub mod metrics;
pub mod proxy;
pub mod replay;
pub mod report;
pub mod rules;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::Settings;
use crate::http::routing::{route_for, Route};
use exchange::Kind;
pub use proxy::Shadow;
use rules::Rules;

/// Everything `shopchat shadow` needs.
#[derive(Clone)]
pub struct ShadowConfig {
    /// Base URL of the primary, e.g. `http://127.0.0.1:8081`.
    pub primary: reqwest::Url,
    pub listen: SocketAddr,
    pub rules: Rules,
    /// Comparisons waiting beyond this are dropped (and counted).
    pub queue_capacity: usize,
    /// Comparisons running at once.
    pub workers: usize,
    /// Ask the primary a second time (reads only) and ignore what differs.
    pub noise_floor: bool,
    pub log_path: PathBuf,
    pub log_max_bytes: u64,
    /// Primary bodies above this are passed through but not compared.
    pub max_compare_bytes: usize,
    /// How often the log gets a `summary` record (when something changed).
    pub summary_interval: Duration,
    /// shopchat's own settings (database, SYSTEM_KEY, …) for the in-process answers.
    pub settings: Settings,
}

impl ShadowConfig {
    pub fn new(primary: reqwest::Url, listen: SocketAddr, settings: Settings) -> ShadowConfig {
        ShadowConfig {
            primary,
            listen,
            rules: Rules::builtin(),
            queue_capacity: 1000,
            workers: 2,
            noise_floor: false,
            log_path: PathBuf::from("shadow-mismatches.jsonl"),
            log_max_bytes: 64 * 1024 * 1024,
            max_compare_bytes: 4 * 1024 * 1024,
            summary_interval: Duration::from_secs(60),
            settings,
        }
    }
}

/// The route of a request (base path removed) and how it is compared in
/// shadow mode: reads in full, writes by status class, the rest not at all.
pub fn shadow_kind(method: &str, path: &str, base_path: &str) -> (Route, Option<Kind>) {
    let route = route_of(path, base_path);
    let kind = match (method, &route) {
        (
            "GET" | "HEAD",
            Route::Conversations | Route::Messages { .. } | Route::NewMessages { .. },
        ) => Some(Kind::Read),
        ("POST", Route::InsertMessage | Route::CreateConversation) => Some(Kind::Write),
        _ => None,
    };
    (route, kind)
}

/// The COMPAT §1.1 route of a path (query ignored).
pub fn route_of(path_and_query: &str, base_path: &str) -> Route {
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(p, _)| p);
    route_for(path, base_path).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(
            shadow_kind("GET", "/api/v2/chat/messages/1?page=2", "").1,
            Some(Kind::Read)
        );
        assert_eq!(
            shadow_kind("HEAD", "/shop/api/v2/chat/conversations", "/shop").1,
            Some(Kind::Read)
        );
        assert_eq!(
            shadow_kind("POST", "/api/v2/chat/insert-message", "").1,
            Some(Kind::Write)
        );
        assert_eq!(
            shadow_kind("GET", "/api/v2/chat/insert-message", "").1,
            None
        );
        assert_eq!(shadow_kind("GET", "/api/v2/chat/nope", "").1, None);
        assert_eq!(
            route_of("/shopx/api/v2/chat/conversations", "/shop"),
            Route::Outside
        );
    }
}

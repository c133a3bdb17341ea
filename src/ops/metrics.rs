//! Prometheus metrics (`GET /metrics`, text exposition format 0.0.4).
//!
//! One registry per [`crate::state::AppState`], not the process-global one:
//! the integration tests run several services in one process, and each must
//! report only its own traffic. Gauges that mirror state owned elsewhere (pool,
//! outbox directories) are sampled when `/metrics` is scraped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::mail::outbox::Counts;
use crate::sync::LockUnpoisoned;

/// `Content-Type` of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency buckets in seconds: from a cached poll (~1 ms) to a full long-poll
/// (`SHOPCHAT_LONG_POLL_MAX_SECONDS`, 30 s by default).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    query_errors: IntCounterVec,
    rate_limited: IntCounter,
    rate_limit_store_errors: IntCounter,
    /// Requests currently held by the get-new-messages long-poll (§5.4),
    /// sampled from the watcher's count at scrape time.
    long_poll_waiters: IntGauge,
    watcher_statements: IntCounter,
    pool_connections: IntGaugeVec,
    pool_max: IntGauge,
    outbox_entries: IntGaugeVec,
    /// Entries of the in-process caches and tables, sampled at scrape time: their growth is
    /// what a soak test watches (bench/soak.sh).
    cache_entries: IntGaugeVec,
    /// Writes that stored `?` for characters a column cannot hold (COMPAT §5.0).
    storage_degraded: IntCounterVec,
    mail: MailCounters,
    /// All answered requests, one atomic: what [`crate::ops::memory`] reads to tell that the
    /// process has gone quiet (cheaper than summing the labelled counters).
    answered: AtomicU64,
    /// When the outbox directories were last counted: a scrape flood costs no directory scans
    /// (security review M7).
    outbox_counted: Mutex<Option<Instant>>,
}

/// How long one count of the outbox directories answers scrapes.
const OUTBOX_COUNT_TTL: Duration = Duration::from_secs(5);

/// Outcomes of the outbox worker (COMPAT §8.6 step 4), counted where they happen.
#[derive(Clone)]
pub struct MailCounters {
    pub delivered: IntCounter,
    pub retried: IntCounter,
    pub dead: IntCounter,
}

impl Default for MailCounters {
    /// Counters registered nowhere (unit tests of the worker).
    fn default() -> Self {
        let c = |name: &str| IntCounter::new(name, name).expect("valid metric name");
        MailCounters {
            delivered: c("delivered"),
            retried: c("retried"),
            dead: c("dead"),
        }
    }
}

/// A counter registered in `registry` (the helpers below: the same for the other kinds).
pub fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

pub fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

pub fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Metrics {
    /// `instance` names this process among the shop's instances (`SHOPCHAT_INSTANCE`),
    /// `rate_limit_store` is where its throttle counts.
    pub fn new(pool_max: u32, instance: &str, rate_limit_store: &str) -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "shopchat_http_request_duration_seconds",
                "Time from the request's arrival to its answer, by route and status.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "status"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(latency.clone()))
            .expect("unique metric");
        let build = gauge_vec(
            r,
            "shopchat_build_info",
            "Always 1; the version label tells which shopchat answers.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let identity = gauge_vec(
            r,
            "shopchat_instance_info",
            "Always 1; which instance of the shop's shopchat processes this is (SHOPCHAT_INSTANCE, default hostname:port) and where its throttle counts.",
            &["instance", "rate_limit_store"],
        );
        identity
            .with_label_values(&[instance, rate_limit_store])
            .set(1);
        let metrics = Metrics {
            requests: counter_vec(
                r,
                "shopchat_http_requests_total",
                "Answered HTTP requests by route (the route template's name) and status.",
                &["route", "status"],
            ),
            latency,
            query_errors: counter_vec(
                r,
                "shopchat_query_errors_total",
                "Requests that failed on the database or unexpectedly: kind=unavailable (503) or internal (500).",
                &["kind"],
            ),
            rate_limited: counter(
                r,
                "shopchat_rate_limit_rejections_total",
                "Requests refused with 429 by the throttle (COMPAT §1.4).",
            ),
            rate_limit_store_errors: counter(
                r,
                "shopchat_rate_limit_store_errors_total",
                "Throttle hits that Redis did not count (down, unreachable or too slow): counted in this process instead (COMPAT §1.4).",
            ),
            long_poll_waiters: gauge(
                r,
                "shopchat_long_poll_waiters",
                "get-new-messages requests currently waiting for a new message (long-poll).",
            ),
            watcher_statements: counter(
                r,
                "shopchat_watcher_statements_total",
                "Statements the message watcher ran to scan for new messages (while anyone polls: one per 100 ms at most, whatever the number of polls).",
            ),
            pool_connections: gauge_vec(
                r,
                "shopchat_db_pool_connections",
                "Open database connections of all pools (one per HTTP worker thread, one for background tasks): state=idle or in_use.",
                &["state"],
            ),
            pool_max: gauge(
                r,
                "shopchat_db_pool_max_connections",
                "SHOPCHAT_DB_POOL_SIZE: the most connections all pools together open.",
            ),
            outbox_entries: gauge_vec(
                r,
                "shopchat_outbox_entries",
                "E-mails in the outbox by state (pending, sending, dead, staging), counted at scrape time.",
                &["state"],
            ),
            cache_entries: gauge_vec(
                r,
                "shopchat_cache_entries",
                "Entries held by each in-process cache or table (tokens, failed_tokens, token_touches, business_settings, uploads, translations, participants, rate_limit, ops_rate_limit, poll_knowledge, poll_waiters), sampled at scrape time.",
                &["cache"],
            ),
            storage_degraded: counter_vec(
                r,
                "shopchat_storage_degraded_total",
                "Writes that stored '?' for characters the column's character set cannot hold, as PHP does (COMPAT §5.0); ALTER TABLE … CONVERT TO CHARACTER SET utf8mb4 ends them.",
                &["column"],
            ),
            mail: MailCounters {
                delivered: counter(
                    r,
                    "shopchat_outbox_delivered_total",
                    "E-mails handed to the SMTP server (or logged by the log mailer).",
                ),
                retried: counter(
                    r,
                    "shopchat_outbox_retries_total",
                    "Failed deliveries put back to pending with back-off.",
                ),
                dead: counter(
                    r,
                    "shopchat_outbox_dead_total",
                    "E-mails moved to dead/ (permanent failure or attempts exhausted).",
                ),
            },
            answered: AtomicU64::new(0),
            outbox_counted: Mutex::new(None),
            registry,
        };
        metrics.pool_max.set(i64::from(pool_max));
        metrics
    }

    /// Counts one answered request (called once per request by the pipeline).
    pub fn observe(&self, route: &str, status: StatusCode, elapsed: Duration) {
        let code = status.as_str();
        self.requests.with_label_values(&[route, code]).inc();
        self.answered.fetch_add(1, Ordering::Relaxed);
        self.latency
            .with_label_values(&[route, code])
            .observe(elapsed.as_secs_f64());
        // Operational endpoints answer 503 by design (/ready) and never hit the throttle.
        if matches!(route, "health" | "ready" | "metrics") {
            return;
        }
        match status.as_u16() {
            429 => self.rate_limited.inc(),
            503 => self.query_errors.with_label_values(&["unavailable"]).inc(),
            500 => self.query_errors.with_label_values(&["internal"]).inc(),
            _ => {}
        }
    }

    /// Requests answered since start.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// The counter of degraded writes (`chat::storage`), registered in this registry.
    /// Counted by the throttle when Redis fails it ([`crate::http::throttle`]).
    pub fn rate_limit_store_errors(&self) -> IntCounter {
        self.rate_limit_store_errors.clone()
    }

    pub fn storage_degraded(&self) -> IntCounterVec {
        self.storage_degraded.clone()
    }

    /// The worker's counters, registered in this registry.
    pub fn mail_counters(&self) -> MailCounters {
        self.mail.clone()
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        encode(&self.registry)
    }
}

/// The text exposition of a registry's metrics.
pub fn encode(registry: &Registry) -> String {
    let mut buf = Vec::new();
    // Encoding into a Vec only fails on invalid metric families, which the helpers rule out.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// What the in-process state looks like at scrape time (gauges that mirror state owned
/// elsewhere).
pub struct Sample<'a> {
    pub pool_size: u32,
    pub pool_idle: usize,
    pub long_poll_waiters: usize,
    /// Statements the watcher has run so far.
    pub watcher_statements: u64,
    /// (cache name, entries).
    pub caches: &'a [(&'static str, usize)],
}

impl Metrics {
    /// Sets the sampled gauges.
    pub fn sample(&self, s: Sample<'_>) {
        let size = i64::from(s.pool_size);
        let idle = i64::try_from(s.pool_idle).unwrap_or(i64::MAX);
        self.pool_connections.with_label_values(&["idle"]).set(idle);
        self.pool_connections
            .with_label_values(&["in_use"])
            .set((size - idle).max(0));
        self.long_poll_waiters
            .set(i64::try_from(s.long_poll_waiters).unwrap_or(i64::MAX));
        // A counter owned by the watcher, mirrored: only ever moves forward.
        let seen = self.watcher_statements.get();
        if s.watcher_statements > seen {
            self.watcher_statements.inc_by(s.watcher_statements - seen);
        }
        for (cache, n) in s.caches {
            self.cache_entries
                .with_label_values(&[cache])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// Whether the outbox should be counted again (at most every [`OUTBOX_COUNT_TTL`]: a
    /// scrape flood costs no directory scans).
    pub fn outbox_count_due(&self) -> bool {
        let mut counted = self.outbox_counted.lock_unpoisoned();
        let due = counted.is_none_or(|at| at.elapsed() >= OUTBOX_COUNT_TTL);
        if due {
            *counted = Some(Instant::now());
        }
        due
    }

    /// The outbox's entries per directory.
    pub fn outbox_counted(&self, c: Counts) {
        for (s, n) in [
            ("pending", c.pending),
            ("sending", c.sending),
            ("dead", c.dead),
            ("staging", c.staging),
        ] {
            self.outbox_entries
                .with_label_values(&[s])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_rejections_are_counted() {
        let m = Metrics::new(10, "host-a:8000", "memory");
        m.observe("conversations", StatusCode::OK, Duration::from_millis(3));
        m.observe(
            "conversations",
            StatusCode::TOO_MANY_REQUESTS,
            Duration::from_millis(1),
        );
        m.observe("messages", StatusCode::SERVICE_UNAVAILABLE, Duration::ZERO);
        m.observe("ready", StatusCode::SERVICE_UNAVAILABLE, Duration::ZERO);
        let text = m.render();
        assert!(
            text.contains("shopchat_http_requests_total{route=\"conversations\",status=\"200\"} 1")
        );
        assert!(text.contains(
            "shopchat_instance_info{instance=\"host-a:8000\",rate_limit_store=\"memory\"} 1"
        ));
        assert!(text.contains("shopchat_rate_limit_store_errors_total 0"));
        assert!(text.contains("shopchat_rate_limit_rejections_total 1"));
        assert!(text.contains("shopchat_query_errors_total{kind=\"unavailable\"} 1"));
        assert!(text.contains(
            "shopchat_http_request_duration_seconds_bucket{route=\"conversations\",status=\"200\",le=\"0.005\"} 1"
        ));
        assert!(text.contains("shopchat_db_pool_max_connections 10"));
    }
}

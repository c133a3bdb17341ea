//! Operability: readiness, metrics, the `shopchat
//! check` doctor, and the drain signal of a graceful shutdown.
//!
//! `/health`, `/ready` and `/metrics` are answered right after the Host check
//! (COMPAT §1.1, §1.2): no throttle, no token, no System-Key.

pub mod check;
pub mod memory;
pub mod metrics;
pub mod probe;
pub mod ready;
pub mod schema;

use tokio::sync::watch;

use crate::config::{RateLimitStore, Settings};
use metrics::Metrics;
use ready::Readiness;

pub struct Ops {
    pub metrics: Metrics,
    pub readiness: Readiness,
    draining: watch::Sender<bool>,
}

impl Ops {
    /// `pool_max`: the connections all database pools together open at most.
    pub fn new(settings: &Settings, pool_max: u32) -> Ops {
        Ops {
            metrics: Metrics::new(
                pool_max,
                &instance_name(settings),
                match settings.http.rate_limit_store {
                    RateLimitStore::Memory => "memory",
                    RateLimitStore::Redis(_) => "redis",
                },
            ),
            readiness: Readiness::new(settings.ops.ready_timeout, settings.ops.ready_cache),
            draining: watch::Sender::new(false),
        }
    }

    /// Called once on SIGTERM/SIGINT, before the listener stops accepting:
    /// `/ready` fails from now on and get-new-messages no longer holds new
    /// requests (the held ones are released through the watcher, see
    /// [`crate::startup::Stopper::stop`]).
    pub fn begin_drain(&self) {
        self.draining.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }
}

/// `SHOPCHAT_INSTANCE`, else `<hostname>:<listen port>`: unique among instances on several hosts
/// and among instances on one host (they listen on different ports).
pub fn instance_name(settings: &Settings) -> String {
    if let Some(name) = &settings.ops.instance {
        return name.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{host}:{}", settings.http.listen.port())
}

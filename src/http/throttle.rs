//! Where the throttle of COMPAT §1.4 counts: in this process (`SHOPCHAT_RATE_LIMIT_STORE=memory`,
//! the default) or in the shop's Redis, shared by every shopchat instance (`redis`).
//!
//! With Redis, the throttle must never be the reason a request fails: when Redis does not
//! answer (down, unreachable, slower than `SHOPCHAT_REDIS_TIMEOUT_MS`) the hit is counted in
//! this process instead, the failure is logged and counted
//! (`shopchat_rate_limit_store_errors_total`), and Redis is asked again after
//! [`RETRY_AFTER_ERROR`]; `/ready` does not depend on it. While it is away a user gets `L` per
//! instance, as with `memory`.
//!
//! The "spent client IP is answered before any token lookup" rule (§1.4, 2026-12) needs to know
//! without a round trip that an IP is spent: the instance remembers the IPs Redis answered 429
//! for, until their window ends.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cache::Generations;
use crate::config::{HttpSettings, RateLimitStore};
use crate::http::ratelimit::{Decision, RateKey, RateLimiter, WINDOW};
use crate::http::ratelimit_redis::RedisWindows;
use crate::sync::LockUnpoisoned;

/// How long the instance counts in process after Redis failed before it asks Redis again.
pub const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// IPs known spent from Redis' answers, at most this many (a flood of spent IPs beyond it is
/// still answered 429 by Redis, only after its token lookup).
const SPENT_IPS_MAX: usize = 100_000;

pub struct Throttle {
    /// The windows of this process: the store with `memory`, the fallback with `redis`.
    local: RateLimiter,
    shared: Option<Shared>,
}

struct Shared {
    windows: RedisWindows,
    /// Client IPs Redis answered 429 for, with the end of their window.
    spent_ips: Mutex<Generations<RateKey, Instant>>,
    /// Milliseconds since `epoch` before which Redis is not asked (after an error).
    retry_at_ms: AtomicU64,
    epoch: Instant,
    /// Whether the last answer came from Redis (to log the changes only).
    reachable: AtomicBool,
    errors: prometheus::IntCounter,
}

impl Throttle {
    /// The store `SHOPCHAT_RATE_LIMIT_STORE` names. No connection is made here; a Redis URL
    /// the client refuses (the settings built it from checked parts) is logged and the
    /// throttle counts in process.
    pub fn from_settings(http: &HttpSettings, errors: prometheus::IntCounter) -> Throttle {
        let local = RateLimiter::new(http.rate_limit, http.rate_limit_max_keys);
        let RateLimitStore::Redis(redis) = &http.rate_limit_store else {
            return Throttle::in_memory(local);
        };
        match RedisWindows::new(
            redis.url.expose(),
            &redis.prefix,
            http.rate_limit,
            redis.pool_size,
            redis.timeout,
        ) {
            Ok(windows) => Throttle::shared(local, windows, errors),
            Err(e) => {
                tracing::error!(redis = %redis.shown, error = %e, "rate-limit store: Redis refused, counting in this process");
                Throttle::in_memory(local)
            }
        }
    }

    /// Counts in this process only.
    pub fn in_memory(local: RateLimiter) -> Throttle {
        Throttle {
            local,
            shared: None,
        }
    }

    /// Counts in Redis, in this process while Redis does not answer; `errors` counts those
    /// times.
    pub fn shared(
        local: RateLimiter,
        windows: RedisWindows,
        errors: prometheus::IntCounter,
    ) -> Throttle {
        Throttle {
            local,
            shared: Some(Shared {
                windows,
                spent_ips: Mutex::new(Generations::new(WINDOW)),
                retry_at_ms: AtomicU64::new(0),
                epoch: Instant::now(),
                reachable: AtomicBool::new(true),
                errors,
            }),
        }
    }

    /// The 429 a hit of `key` would get without counting it, when that is known without a
    /// round trip (§1.4: a spent client IP is answered before any token lookup).
    pub fn spent(&self, key: RateKey) -> Option<Decision> {
        if let Some(d) = self.local.spent(key) {
            return Some(d);
        }
        let shared = self.shared.as_ref()?;
        let now = Instant::now();
        let mut spent = shared.spent_ips.lock_unpoisoned();
        let until = *spent.get_mut(&key, now)?;
        let left = until.saturating_duration_since(now);
        if left.is_zero() {
            return None;
        }
        let limit = match self.local.hit_limit() {
            0 => return None,
            l => l,
        };
        Some(Decision::Limited {
            limit,
            retry_after: left.as_secs() + u64::from(left.subsec_nanos() > 0),
        })
    }

    /// Counts one hit of `key` (§1.4).
    pub async fn hit(&self, key: RateKey) -> Decision {
        let Some(shared) = &self.shared else {
            return self.local.hit(key);
        };
        if self.local.hit_limit() == 0 {
            return Decision::Off;
        }
        let now_ms = shared.epoch.elapsed().as_millis() as u64;
        if now_ms < shared.retry_at_ms.load(Ordering::Relaxed) {
            return self.local.hit(key);
        }
        match shared.windows.hit(&key).await {
            Ok(decision) => {
                if !shared.reachable.swap(true, Ordering::Relaxed) {
                    tracing::info!("rate-limit store: Redis answers again, counting there");
                }
                if let (RateKey::Ip(_), Decision::Limited { retry_after, .. }) = (key, decision) {
                    shared.remember_spent(key, retry_after);
                }
                decision
            }
            Err(e) => {
                shared.errors.inc();
                shared.retry_at_ms.store(
                    now_ms + RETRY_AFTER_ERROR.as_millis() as u64,
                    Ordering::Relaxed,
                );
                if shared.reachable.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "rate-limit store: Redis failed, counting in this process until it answers");
                } else {
                    tracing::debug!(error = %e, "rate-limit store: Redis still failing");
                }
                self.local.hit(key)
            }
        }
    }

    /// Forgets closed windows (idle).
    pub fn purge_expired(&self) {
        self.local.purge_expired();
        if let Some(shared) = &self.shared {
            let now = Instant::now();
            let mut spent = shared.spent_ips.lock_unpoisoned();
            spent.rotate(now);
            spent.retain(|until| *until > now);
        }
    }

    /// Entries held in this process (windows and known-spent IPs).
    pub fn len(&self) -> usize {
        self.local.len()
            + self
                .shared
                .as_ref()
                .map_or(0, |s| s.spent_ips.lock_unpoisoned().len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `"memory"` or `"redis"`.
    pub fn store(&self) -> &'static str {
        if self.shared.is_some() {
            "redis"
        } else {
            "memory"
        }
    }
}

impl Shared {
    fn remember_spent(&self, key: RateKey, retry_after: u64) {
        let now = Instant::now();
        let mut spent = self.spent_ips.lock_unpoisoned();
        if spent.current_len() < SPENT_IPS_MAX {
            spent.insert(key, now + Duration::from_secs(retry_after), now);
        }
    }
}

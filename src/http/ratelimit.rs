//! The throttle of COMPAT §1.4 (deviation D8): a fixed 60-second window per
//! key, where the key is the authenticated user when the bearer token is
//! valid and the client IP otherwise. Counters live in this process; several
//! shopchat processes each count on their own (documented in the README).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateKey {
    User(u64),
    Ip(IpAddr),
}

/// The outcome of one hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Counted; `remaining` = limit − hits including this one.
    Allowed { limit: u32, remaining: u32 },
    /// Over the limit (not counted); `retry_after` whole seconds until the window ends.
    Limited { limit: u32, retry_after: u64 },
    /// `SHOPCHAT_RATE_LIMIT=0`: no limit and no headers.
    Off,
}

pub struct RateLimiter {
    limit: u32,
    windows: Mutex<HashMap<RateKey, (Instant, u32)>>,
}

impl RateLimiter {
    pub fn new(limit: u32) -> Self {
        RateLimiter {
            limit,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets closed windows (called when the process is idle).
    pub fn purge_expired(&self) {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        windows.shrink_to_fit();
    }

    pub fn hit(&self, key: RateKey) -> Decision {
        self.hit_at(key, Instant::now())
    }

    pub fn hit_at(&self, key: RateKey, now: Instant) -> Decision {
        if self.limit == 0 {
            return Decision::Off;
        }
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        // Keep memory bounded: drop expired windows once the map grows.
        if windows.len() > 10_000 {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let entry = windows.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        if entry.1 >= self.limit {
            let left = WINDOW.saturating_sub(now.duration_since(entry.0));
            // Whole seconds, never 0 while the window is still open.
            let retry_after = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            return Decision::Limited {
                limit: self.limit,
                retry_after: retry_after.max(1),
            };
        }
        entry.1 += 1;
        Decision::Allowed {
            limit: self.limit,
            remaining: self.limit - entry.1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_window_per_key() {
        let rl = RateLimiter::new(2);
        let t0 = Instant::now();
        let a = RateKey::User(5);
        let b = RateKey::Ip("127.0.0.1".parse().unwrap());
        assert_eq!(
            rl.hit_at(a, t0),
            Decision::Allowed {
                limit: 2,
                remaining: 1
            }
        );
        assert_eq!(
            rl.hit_at(a, t0),
            Decision::Allowed {
                limit: 2,
                remaining: 0
            }
        );
        assert_eq!(
            rl.hit_at(a, t0 + Duration::from_millis(500)),
            Decision::Limited {
                limit: 2,
                retry_after: 60
            }
        );
        assert_eq!(
            rl.hit_at(b, t0),
            Decision::Allowed {
                limit: 2,
                remaining: 1
            },
            "other key, own bucket"
        );
        assert_eq!(
            rl.hit_at(a, t0 + Duration::from_secs(59)),
            Decision::Limited {
                limit: 2,
                retry_after: 1
            }
        );
        assert_eq!(
            rl.hit_at(a, t0 + Duration::from_secs(60)),
            Decision::Allowed {
                limit: 2,
                remaining: 1
            }
        );
    }

    #[test]
    fn zero_means_off() {
        assert_eq!(RateLimiter::new(0).hit(RateKey::User(1)), Decision::Off);
    }
}

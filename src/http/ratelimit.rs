//! The throttle of COMPAT §1.4 (deviation D8): a fixed 60-second window per key, where the key
//! is the authenticated user when the bearer token is valid and the client IP otherwise.
//! These are the windows of this process: the throttle's store with
//! `SHOPCHAT_RATE_LIMIT_STORE=memory`, its fallback with `redis` ([`crate::http::throttle`]).
//!
//! Cost and memory do not grow with the number of keys (security review H2): the windows are
//! spread over [`SHARDS`] independently locked maps, and each shard keeps two generations —
//! windows opened in the current minute and in the previous one. Every minute a shard drops
//! its older generation whole (a window is at most 60 s long, so nothing in it is still open),
//! instead of scanning for closed windows. A shard holds at most `max_keys / SHARDS` windows:
//! when it is full a *new* key is refused (429) until the next rotation, so a flood of new keys
//! (an IPv6 client rotating addresses) cannot exhaust memory; keys already counted go on.
//! IPv6 clients are keyed by their /64, the block one subscriber gets.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::cache::Generations;
use crate::ids::UserId;
use crate::sync::LockUnpoisoned;

pub const WINDOW: Duration = Duration::from_secs(60);
/// Independently locked parts of the table (a power of two).
pub const SHARDS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateKey {
    User(UserId),
    Ip(IpAddr),
}

impl RateKey {
    /// The key of a client address: IPv4 as is, IPv6 by its /64 (an IPv4-mapped IPv6
    /// address is its IPv4 address).
    pub fn ip(addr: IpAddr) -> RateKey {
        let addr = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
            },
            v4 => v4,
        };
        RateKey::Ip(addr)
    }
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

#[derive(Debug, Clone, Copy)]
struct Window {
    opened: Instant,
    hits: u32,
}

impl Window {
    fn is_open(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.opened) < WINDOW
    }
}

pub struct RateLimiter {
    limit: u32,
    per_shard: usize,
    hasher: RandomState,
    shards: Box<[Mutex<Generations<RateKey, Window>>]>,
}

impl RateLimiter {
    /// `limit` hits per minute and key (`0` = off); at most `max_keys` windows at a time.
    pub fn new(limit: u32, max_keys: usize) -> Self {
        RateLimiter {
            limit,
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Generations::new(WINDOW)))
                .collect(),
        }
    }

    fn shard(&self, key: &RateKey) -> MutexGuard<'_, Generations<RateKey, Window>> {
        let i = self.hasher.hash_one(key) as usize & (SHARDS - 1);
        self.shards[i].lock_unpoisoned()
    }

    /// Forgets closed windows (called when the process is idle).
    pub fn purge_expired(&self) {
        let now = Instant::now();
        for shard in self.shards.iter() {
            let mut s = shard.lock_unpoisoned();
            s.rotate(now);
            s.retain(|w| w.is_open(now));
        }
    }

    /// Windows held (open or not yet dropped), for tests and the soak benchmark.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock_unpoisoned().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hits per window and key; `0` = off.
    pub fn hit_limit(&self) -> u32 {
        self.limit
    }

    pub fn hit(&self, key: RateKey) -> Decision {
        self.hit_at(key, Instant::now())
    }

    /// The answer a hit would get if the key's bucket is spent, without counting anything:
    /// `Some(Limited)` only then (COMPAT §1.4: a spent IP is answered before any token lookup).
    pub fn spent(&self, key: RateKey) -> Option<Decision> {
        if self.limit == 0 {
            return None;
        }
        let now = Instant::now();
        let mut shard = self.shard(&key);
        let w = shard.get_mut(&key, now).filter(|w| w.is_open(now))?;
        (w.hits >= self.limit).then(|| self.limited(w, now))
    }

    fn limited(&self, w: &Window, now: Instant) -> Decision {
        let left = WINDOW.saturating_sub(now.saturating_duration_since(w.opened));
        // Whole seconds, never 0 while the window is still open.
        let retry_after = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Decision::Limited {
            limit: self.limit,
            retry_after: retry_after.max(1),
        }
    }

    pub fn hit_at(&self, key: RateKey, now: Instant) -> Decision {
        if self.limit == 0 {
            return Decision::Off;
        }
        let mut shard = self.shard(&key);
        if let Some(w) = shard.get_mut(&key, now) {
            if !w.is_open(now) {
                // A closed window of this key: a new one in its place.
                *w = Window {
                    opened: now,
                    hits: 0,
                };
            }
            if w.hits >= self.limit {
                let w = *w;
                return self.limited(&w, now);
            }
            w.hits += 1;
            return Decision::Allowed {
                limit: self.limit,
                remaining: self.limit - w.hits,
            };
        }
        if shard.current_len() >= self.per_shard {
            // A new key while the shard is full: refused until the next generation.
            let left = WINDOW.saturating_sub(now.saturating_duration_since(shard.rotated()));
            return Decision::Limited {
                limit: self.limit,
                retry_after: left.as_secs().max(1),
            };
        }
        shard.insert(
            key,
            Window {
                opened: now,
                hits: 1,
            },
            now,
        );
        Decision::Allowed {
            limit: self.limit,
            remaining: self.limit - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> RateKey {
        RateKey::ip(s.parse().unwrap())
    }

    #[test]
    fn fixed_window_per_key() {
        let rl = RateLimiter::new(2, 1000);
        let t0 = Instant::now();
        let a = RateKey::User(UserId(5));
        let b = ip("127.0.0.1");
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
    fn windows_survive_one_rotation_and_go_with_the_second() {
        let rl = RateLimiter::new(3, 1000);
        let t0 = Instant::now();
        let k = RateKey::User(UserId(1));
        rl.hit_at(k, t0 + Duration::from_secs(50));
        rl.hit_at(k, t0 + Duration::from_secs(50));
        // Another key rotates the shards' generations (or not: the key may live elsewhere).
        for i in 0..200 {
            rl.hit_at(
                RateKey::User(UserId(1000 + i)),
                t0 + Duration::from_secs(61),
            );
        }
        // Still the window opened at 50 s: one hit left.
        assert_eq!(
            rl.hit_at(k, t0 + Duration::from_secs(70)),
            Decision::Allowed {
                limit: 3,
                remaining: 0
            }
        );
        // Ten minutes of new keys, 200 a minute: a shard drops its older generation whole when
        // it rotates (no scan), so what is held stays within a few minutes' worth of keys
        // (a shard nobody hits keeps its two generations until the idle purge).
        for minute in 2..12u64 {
            for i in 0..200 {
                rl.hit_at(
                    RateKey::User(UserId(minute as i64 * 1000 + i)),
                    t0 + Duration::from_secs(minute * 61),
                );
            }
        }
        assert!(rl.len() <= 600, "{}", rl.len());
    }

    #[test]
    fn a_full_table_refuses_new_keys_only() {
        let rl = RateLimiter::new(10, SHARDS); // one window per shard
        let t0 = Instant::now();
        let mut allowed = Vec::new();
        for i in 0..10_000i64 {
            if matches!(
                rl.hit_at(RateKey::User(UserId(i)), t0),
                Decision::Allowed { .. }
            ) {
                allowed.push(i);
            }
        }
        assert_eq!(allowed.len(), SHARDS, "bounded memory");
        assert!(rl.len() <= SHARDS);
        // Keys already counted go on.
        assert!(matches!(
            rl.hit_at(RateKey::User(UserId(allowed[0])), t0),
            Decision::Allowed { remaining: 8, .. }
        ));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(ip("2001:db8:1:2:aaaa::1"), ip("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("::ffff:10.0.0.1"), ip("10.0.0.1"));
        assert_ne!(ip("10.0.0.1"), ip("10.0.0.2"));
        let rl = RateLimiter::new(1, 1000);
        rl.hit(ip("2001:db8::1"));
        assert!(matches!(
            rl.hit(ip("2001:db8::2")),
            Decision::Limited { .. }
        ));
    }

    #[test]
    fn spent_buckets_are_told_without_counting() {
        let rl = RateLimiter::new(2, 1000);
        let k = ip("192.0.2.1");
        assert_eq!(rl.spent(k), None);
        rl.hit(k);
        assert_eq!(rl.spent(k), None);
        rl.hit(k);
        assert!(matches!(rl.spent(k), Some(Decision::Limited { .. })));
        assert!(
            matches!(rl.spent(k), Some(Decision::Limited { .. })),
            "not counted"
        );
        assert_eq!(RateLimiter::new(0, 10).spent(k), None, "off");
    }

    #[test]
    fn zero_means_off() {
        assert_eq!(
            RateLimiter::new(0, 10).hit(RateKey::User(UserId(1))),
            Decision::Off
        );
    }
}

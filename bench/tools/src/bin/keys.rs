//! The throttle's cost per request against the number of distinct keys it holds (COMPAT §1.4;
//! security review H2: above 10,000 live keys every hit scanned the whole table under one lock).
//!
//! For each key count N (1,000 … 1,000,000), N distinct client keys (IPv4 and IPv6 addresses,
//! user ids) each hit the limiter over one simulated minute, from 2 threads at once; the result is
//! the mean cost of one hit, and the cost of refusing a spent IP (`spent`, the check made before
//! any token lookup). The per-hit cost must stay flat as N grows.
//!
//! Output: a Markdown table on stdout and a line "BENCH_JSON {…}".

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::sync::Mutex;

use shopchat::http::ratelimit::{Decision, RateKey, RateLimiter};
use shopchat::ids::UserId;

/// The throttle as it was before the security review (commit 0421809, src/http/ratelimit.rs):
/// one map under one lock, and above 10,000 windows a `retain` over all of them on every hit.
/// Kept here only to show the difference on the same machine.
struct BeforeReview {
    windows: Mutex<HashMap<RateKey, (Instant, u32)>>,
}

impl BeforeReview {
    fn hit_at(&self, key: RateKey, now: Instant) {
        let mut windows = self.windows.lock().unwrap();
        if windows.len() > 10_000 {
            windows.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let entry = windows.entry(key).or_insert((now, 0));
        entry.1 += 1;
    }
}

/// ns per hit of [`BeforeReview`] once it holds `n` live windows (a sample of hits: each one
/// scans the table).
fn before_review(n: u64) -> f64 {
    let old = BeforeReview {
        windows: Mutex::new(HashMap::new()),
    };
    let now = Instant::now();
    for i in 0..n {
        old.windows.lock().unwrap().insert(key(i), (now, 1));
    }
    let sample = 2_000u64;
    let t = Instant::now();
    for i in 0..sample {
        old.hit_at(key(i % n), now);
    }
    t.elapsed().as_nanos() as f64 / sample as f64
}

fn key(i: u64) -> RateKey {
    match i % 3 {
        0 => RateKey::User(UserId(i as i64)),
        1 => RateKey::ip(IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8])),
        // Distinct /64s (addresses within one /64 share a key).
        _ => RateKey::ip(IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            (i >> 16) as u16,
            i as u16,
            0,
            0,
            0,
            1,
        ))),
    }
}

fn main() {
    let counts: Vec<u64> = std::env::args()
        .nth(1)
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000, 1_000_000]);
    println!("| distinct keys in the minute | hits | ns per hit (2 threads) | ns per `spent` check | windows held | before the review: ns per hit |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut json = Vec::new();
    for n in counts {
        // The default cap is 500,000 windows; allow every key here to measure the table itself.
        let limiter = Arc::new(RateLimiter::new(600, 2_000_000));
        let hits_per_key = 3u64;
        let threads = 2u64;
        let t0 = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let limiter = limiter.clone();
                std::thread::spawn(move || {
                    let base = Instant::now();
                    let mut allowed = 0u64;
                    for round in 0..hits_per_key {
                        // Spread over the minute: a window never closes during the run.
                        let at = base + Duration::from_millis(round * 10);
                        let mut i = t;
                        while i < n {
                            if matches!(limiter.hit_at(key(i), at), Decision::Allowed { .. }) {
                                allowed += 1;
                            }
                            i += threads;
                        }
                    }
                    allowed
                })
            })
            .collect();
        let allowed: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let elapsed = t0.elapsed();
        let hits = n * hits_per_key;
        assert_eq!(allowed, hits, "every hit was under the limit");
        let ns_hit = elapsed.as_nanos() as f64 * threads as f64 / hits as f64;
        // The pre-lookup check of a client IP (§1.4 cost), on the full table.
        let t1 = Instant::now();
        let checks = n.min(200_000);
        for i in 0..checks {
            std::hint::black_box(limiter.spent(key(i)));
        }
        let ns_spent = t1.elapsed().as_nanos() as f64 / checks as f64;
        // The old table at a million keys would take hours: measured up to 100,000.
        let old = (n <= 100_000).then(|| before_review(n));
        println!(
            "| {n} | {hits} | {ns_hit:.0} | {ns_spent:.0} | {} | {} |",
            limiter.len(),
            old.map_or("—".to_string(), |ns| format!("{ns:.0}"))
        );
        json.push(format!(
            "{{\"keys\":{n},\"hits\":{hits},\"ns_per_hit\":{ns_hit:.1},\"ns_per_spent_check\":{ns_spent:.1},\"before_review_ns_per_hit\":{}}}",
            old.map_or("null".to_string(), |ns| format!("{ns:.1}"))
        ));
    }
    println!("BENCH_JSON [{}]", json.join(","));
}

//! Gives memory back to the operating system once the process is quiet
//! again (the memory target of bench/README.md: RSS under 20 MB idle, also after a burst of
//! load): when quiet, the caches drop what outlived its time-to-live; when
//! idle, also what only saves statements
//! ([`crate::state::AppState::release_idle_memory`]); then each thread's heap is collected.
//!
//! The `shopchat` binary allocates with mimalloc (src/main.rs). mimalloc keeps a heap per
//! thread, and a thread's freed pages (also those other threads freed into it) go back to the
//! system only when that thread allocates again or collects: an HTTP worker that went idle
//! never does. So the idle release collects on every thread that serves requests
//! ([`ThreadHeaps`]: the HTTP workers register at start) and on the thread it runs on. glibc's
//! allocator (C code, and a build without mimalloc) keeps what a burst freed in its arenas for
//! good: `malloc_trim(0)` trims those. Trimming walks every arena under its lock, so it runs
//! only when no request was answered for a whole interval, twice per quiet period at most:
//! never while requests are being served. Measured after the load: bench/RESULTS.md, "RSS idle
//! after the load".

use std::sync::Mutex;
use std::time::Duration;

use actix_rt::ArbiterHandle;
use tokio::sync::watch;

use crate::sync::LockUnpoisoned;

/// How long the process must have answered nothing before it trims.
pub const QUIET_INTERVAL: Duration = Duration::from_secs(2);
/// Quiet intervals after which the process counts as idle (60 s): the caches that only save
/// statements (token touches, participants, polls' knowledge) are dropped too. By then the
/// touch times (60 s) and the polls' knowledge (re-verified after 60 s) have expired anyway;
/// a shorter period would empty them between the bursts of a moderately busy shop.
const IDLE_INTERVALS: u32 = 30;

/// What to give back at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    Nothing,
    /// The process went quiet: drop expired cache entries, trim the heap.
    Expired,
    /// Quiet for [`IDLE_INTERVALS`] intervals: drop every cache that only saves statements.
    Everything,
}

/// Decides, from the answered-requests counter read once per interval, what
/// to release: after activity, once at the first quiet interval and once
/// when the quiet has lasted [`IDLE_INTERVALS`].
#[derive(Debug, Default)]
pub struct IdleTrim {
    last_count: u64,
    quiet_intervals: u32,
}

impl IdleTrim {
    /// `answered` = requests answered so far.
    pub fn tick(&mut self, answered: u64) -> Release {
        if answered != self.last_count {
            self.last_count = answered;
            self.quiet_intervals = 0;
            return Release::Nothing;
        }
        self.quiet_intervals = self.quiet_intervals.saturating_add(1);
        match self.quiet_intervals {
            1 => Release::Expired,
            IDLE_INTERVALS => Release::Everything,
            _ => Release::Nothing,
        }
    }
}

/// Returns the calling thread's free heap pages to the OS: mimalloc's heap of this thread,
/// then glibc's arenas (where glibc is the C library). Harmless where an allocator is not in
/// use (a test binary allocates with the system's): there is nothing to collect.
pub fn release_free_heap() {
    // SAFETY: mi_collect takes no pointer; it only touches the calling thread's own heap and
    // mimalloc's shared structures under their own synchronisation.
    unsafe { libmimalloc_sys::mi_collect(true) };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only takes the allocator's own locks; no pointer is passed.
        unsafe { libc::malloc_trim(0) };
    }
}

/// How many request heads and response heads actix-http keeps per thread for reuse
/// (`MessagePool` and `BoxedResponsePool` in actix-http 3: "if pool.len() < 128").
const ACTIX_HEAD_POOL: usize = 128;

/// Empties the header maps of the request and response heads that actix-http pools on the
/// calling thread (up to 128 of each per thread). Why: a pooled head keeps its header map's
/// capacity, at least the default (16 entries for a request head, ~6.7 KB; 12 for a response
/// head, ~3.3 KB: ~2.6 MB for two full workers) and more after a request with many headers, and
/// it keeps its last request's header values and URI until it is reused (actix-http 3.20 clears
/// a head when it takes it out of the pool, `MessagePool::get_message`, not when it puts it
/// back). After 20,000 simulated app users over 1,024 connections (bench/apptraffic.sh, heaptrack
/// of the idle process, 2026-12-06) the request heads held 3.4 MB of the 8 MB still allocated.
///
/// Taking 128 heads out (the pool makes new ones when it runs dry, so a pool with fewer fills
/// up to 128 small heads, ~36 KB), giving each an empty map, which holds no allocation, and
/// dropping them puts back heads of a few hundred bytes; the next requests grow their maps
/// again, once. It runs on an HTTP worker's own thread (the pools are thread-local) as a task
/// of that worker, between its other tasks: it has no await, so it runs to its end in one go,
/// and it only touches heads it took from the pool, never one a request in flight holds.
/// Relies on the pools' internals named above (Cargo.toml pins actix-http's minor version).
/// actix-web pools up to 128 requests of its own per worker, each holding a request head;
/// those are out of reach and stay.
pub fn empty_http_head_pools() {
    let mut requests: Vec<actix_http::Request> = (0..ACTIX_HEAD_POOL)
        .map(|_| actix_http::Request::new())
        .collect();
    for request in &mut requests {
        let head = request.head_mut();
        head.headers = actix_http::header::HeaderMap::new();
        head.uri = actix_http::Uri::default();
    }
    drop(requests);
    let mut responses: Vec<actix_http::Response<()>> = (0..ACTIX_HEAD_POOL)
        .map(|_| actix_http::Response::with_body(actix_http::StatusCode::OK, ()))
        .collect();
    for response in &mut responses {
        response.head_mut().headers = actix_http::header::HeaderMap::new();
    }
    drop(responses);
}

/// The threads that serve requests, so that the idle release can collect each one's heap
/// (an allocator's per-thread heap can only be collected on its own thread).
#[derive(Default)]
pub struct ThreadHeaps {
    threads: Mutex<Vec<ArbiterHandle>>,
}

impl ThreadHeaps {
    /// Registers the calling thread (an HTTP worker, at its start); nothing outside an actix
    /// arbiter.
    pub fn register_current(&self) {
        if let Some(arbiter) = actix_rt::Arbiter::try_current() {
            self.threads.lock_unpoisoned().push(arbiter);
        }
    }

    /// Releases free heap pages on the calling thread and on every registered one (there: as a
    /// task of that thread, after emptying its HTTP head pools; a stopped thread is forgotten).
    pub fn release_everywhere(&self) {
        release_free_heap();
        self.threads.lock_unpoisoned().retain(|thread| {
            thread.spawn_fn(|| {
                empty_http_head_pools();
                release_free_heap();
            })
        });
    }

    pub fn len(&self) -> usize {
        self.threads.lock_unpoisoned().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Runs until shutdown: every [`QUIET_INTERVAL`], calls `release` as [`IdleTrim`] decides.
pub async fn when_idle(
    answered: impl Fn() -> u64,
    release: impl Fn(Release),
    mut shutdown: watch::Receiver<bool>,
) {
    let mut idle = IdleTrim::default();
    let mut ticks = tokio::time::interval(QUIET_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        match idle.tick(answered()) {
            Release::Nothing => {}
            what => release(what),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_once_when_quiet_then_once_when_idle_and_never_while_busy() {
        let mut idle = IdleTrim::default();
        let ticks = |idle: &mut IdleTrim, answered: u64, n: usize| -> Vec<Release> {
            (0..n).map(|_| idle.tick(answered)).collect()
        };
        use Release::*;
        // Start: nothing answered yet; quiet from the first tick.
        let first = ticks(&mut idle, 0, IDLE_INTERVALS as usize + 2);
        assert_eq!(first[0], Expired);
        assert_eq!(first[IDLE_INTERVALS as usize - 1], Everything);
        assert_eq!(first.iter().filter(|r| **r != Nothing).count(), 2);
        // Busy: the counter moves at every tick.
        assert_eq!(idle.tick(10), Nothing);
        assert_eq!(idle.tick(500), Nothing);
        // Quiet again, interrupted by one request before it became idle.
        assert_eq!(ticks(&mut idle, 500, 3), [Expired, Nothing, Nothing]);
        assert_eq!(idle.tick(501), Nothing);
        let again = ticks(&mut idle, 501, IDLE_INTERVALS as usize);
        assert_eq!(again[0], Expired);
        assert_eq!(again.last(), Some(&Everything));
    }

    #[test]
    fn the_http_head_pools_keep_no_header_maps_after_emptying() {
        use actix_http::header::{HeaderName, HeaderValue};
        // A burst of 128 concurrent requests and answers with 40 headers each: the pools keep
        // their heads with those maps.
        let name = |i: usize| HeaderName::try_from(format!("x-header-{i}")).unwrap();
        let mut requests: Vec<actix_http::Request> = (0..ACTIX_HEAD_POOL)
            .map(|_| actix_http::Request::new())
            .collect();
        let mut responses: Vec<actix_http::Response<()>> = (0..ACTIX_HEAD_POOL)
            .map(|_| actix_http::Response::with_body(actix_http::StatusCode::OK, ()))
            .collect();
        for i in 0..40 {
            for r in &mut requests {
                r.headers_mut()
                    .insert(name(i), HeaderValue::from_static("v"));
                r.head_mut().uri = actix_http::Uri::from_static("/a/long/path/of/the/last/request");
            }
            for r in &mut responses {
                r.headers_mut()
                    .insert(name(i), HeaderValue::from_static("v"));
            }
        }
        drop((requests, responses));
        let reused = actix_http::Request::new();
        assert!(
            reused.head().headers.capacity() >= 40,
            "the pool keeps a head's map"
        );
        drop(reused);

        empty_http_head_pools();

        let requests: Vec<actix_http::Request> = (0..ACTIX_HEAD_POOL)
            .map(|_| actix_http::Request::new())
            .collect();
        let responses: Vec<actix_http::Response<()>> = (0..ACTIX_HEAD_POOL)
            .map(|_| actix_http::Response::with_body(actix_http::StatusCode::OK, ()))
            .collect();
        assert!(requests.iter().all(|r| r.head().headers.capacity() == 0));
        assert!(requests
            .iter()
            .all(|r| r.uri() == &actix_http::Uri::default()));
        assert!(responses.iter().all(|r| r.headers().capacity() == 0));
    }

    #[test]
    fn trimming_is_harmless() {
        let v: Vec<Vec<u8>> = (0..1000).map(|_| vec![1u8; 4096]).collect();
        drop(v);
        release_free_heap();
        let after = vec![2u8; 4096];
        assert_eq!(after[4095], 2);
    }

    #[test]
    fn each_registered_worker_collects_on_its_own_thread() {
        let heaps = std::sync::Arc::new(ThreadHeaps::default());
        // Outside an arbiter nothing registers.
        heaps.register_current();
        assert!(heaps.is_empty());
        actix_rt::System::new().block_on(async {
            let mut workers: Vec<actix_rt::Arbiter> =
                (0..2).map(|_| actix_rt::Arbiter::new()).collect();
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            for w in &workers {
                let (heaps, done) = (heaps.clone(), done_tx.clone());
                assert!(w.spawn_fn(move || {
                    heaps.register_current();
                    done.send(std::thread::current().id()).unwrap();
                }));
            }
            let threads: Vec<_> = workers
                .iter()
                .map(|_| done_rx.recv_timeout(Duration::from_secs(5)).unwrap())
                .collect();
            assert_ne!(threads[0], threads[1]);
            assert_eq!(heaps.len(), 2);
            heaps.release_everywhere();
            assert_eq!(heaps.len(), 2);
            // A stopped worker is forgotten at the next release.
            let first = workers.remove(0);
            first.stop();
            first.join().unwrap();
            heaps.release_everywhere();
            assert_eq!(heaps.len(), 1);
            for w in workers {
                w.stop();
                w.join().unwrap();
            }
        });
    }
}

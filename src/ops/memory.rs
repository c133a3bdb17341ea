//! Gives memory back to the operating system once the process is quiet
//! again (the memory target of bench/README.md: RSS under 20 MB idle, also after a burst of
//! load): when quiet, the caches drop what outlived its time-to-live; when
//! idle, also what only saves statements
//! ([`crate::state::AppState::release_idle_memory`]); then the heap is trimmed.
//!
//! The `shopchat` binary allocates with mimalloc (src/main.rs), which hands freed pages back
//! to the system by itself (at once: main sets its purge delay to 0). `malloc_trim(0)` still
//! trims glibc's own heap (what C code and glibc allocate), and is what a build on glibc's
//! allocator needs: that one keeps what a burst freed in its arenas for good. It walks every
//! arena under its lock, so it runs only when no request was answered for a whole interval,
//! twice per quiet period at most: never while requests are being served. Measured after the load with mimalloc:
//! bench/RESULTS.md, "RSS idle after the load".

use std::time::Duration;

use tokio::sync::watch;

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

/// Returns glibc's free heap pages to the OS; false where glibc is not the C library.
/// (mimalloc, the binary's allocator, returns its own pages as they are freed.)
pub fn release_free_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only takes the allocator's own locks; no pointer is passed.
        unsafe { libc::malloc_trim(0) };
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
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
    fn trimming_is_harmless() {
        let v: Vec<Vec<u8>> = (0..1000).map(|_| vec![1u8; 4096]).collect();
        drop(v);
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(release_free_heap());
        }
        let after = vec![2u8; 4096];
        assert_eq!(after[4095], 2);
    }
}

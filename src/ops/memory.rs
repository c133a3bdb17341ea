//! Gives memory back to the operating system once the process is quiet
//! again (the performance issue: RSS under 20 MB idle, also after a burst of
//! load): the caches drop what outlived its time-to-live
//! ([`crate::state::AppState::release_idle_memory`]), then the heap is trimmed.
//!
//! glibc's allocator keeps what a burst freed in its arenas (one per thread
//! that allocated), so the resident size stays at the burst's peak for good.
//! `malloc_trim(0)` returns those pages. It walks every arena under its lock,
//! so it runs only when no request was answered for a whole interval, and
//! once per quiet period: never while requests are being served.

use std::time::Duration;

use tokio::sync::watch;

/// How long the process must have answered nothing before it trims.
pub const QUIET_INTERVAL: Duration = Duration::from_secs(2);

/// Decides, from the answered-requests counter read once per interval, when
/// to trim: after activity, at the first interval without any.
#[derive(Debug, Default)]
pub struct IdleTrim {
    last_count: u64,
    trimmed_since_activity: bool,
}

impl IdleTrim {
    /// `answered` = requests answered so far. True when the heap should be trimmed now.
    pub fn tick(&mut self, answered: u64) -> bool {
        if answered != self.last_count {
            self.last_count = answered;
            self.trimmed_since_activity = false;
            return false;
        }
        !std::mem::replace(&mut self.trimmed_since_activity, true)
    }
}

/// Returns the allocator's free pages to the OS; false where that is not
/// possible (allocators other than glibc's).
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

/// Runs until shutdown: every [`QUIET_INTERVAL`], calls `release` once the process went quiet.
pub async fn when_idle(
    answered: impl Fn() -> u64,
    release: impl Fn(),
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
        if idle.tick(answered()) {
            release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_per_quiet_period_and_never_while_busy() {
        let mut idle = IdleTrim::default();
        // Start: nothing answered yet, the first quiet tick trims (start-up garbage).
        assert!(idle.tick(0));
        assert!(!idle.tick(0), "once per quiet period");
        // Busy: the counter moves at every tick.
        assert!(!idle.tick(10));
        assert!(!idle.tick(500));
        // Quiet again: one trim, then nothing until the next burst.
        assert!(idle.tick(500));
        assert!(!idle.tick(500));
        assert!(!idle.tick(501));
        assert!(idle.tick(501));
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

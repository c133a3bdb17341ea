//! Everything a request needs, shared by all workers of one process.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::MySqlPool;

use crate::auth::sanctum::Sanctum;
use crate::chat::repo::Participants;
use crate::chat::storage::Storage;
use crate::chat::watch::Watcher;
use crate::config::Settings;
use crate::db::Pools;
use crate::http::ratelimit::RateLimiter;
use crate::http::throttle::Throttle;
use crate::laravel::encrypter::Encrypter;
use crate::mail::Mailbox;
use crate::ops::memory::{Release, ThreadHeaps};
use crate::ops::Ops;
use crate::shop::assets::Assets;
use crate::shop::translate::Translator;
use crate::sync::LockUnpoisoned;

pub struct AppState {
    pub settings: Settings,
    /// The database: use [`AppState::db`] (the pool of the thread the caller runs on).
    pub pools: Pools,
    pub sanctum: Sanctum,
    pub translator: Translator,
    pub assets: Assets,
    /// The throttle of COMPAT §1.4, in this process or shared through Redis.
    pub limiter: Throttle,
    /// `/ready` and `/metrics` per client IP on the public listener (`SHOPCHAT_OPS_RATE_LIMIT`).
    pub ops_limiter: RateLimiter,
    pub maintenance: Maintenance,
    pub participants: Participants,
    /// Text columns that cannot hold every character (COMPAT §5.0).
    pub storage: Storage,
    /// In-process queue in front of the create-conversation named lock.
    pub pair_locks: crate::chat::locks::PairLocks,
    pub watcher: Arc<Watcher>,
    pub mailbox: Mailbox,
    pub encrypter: Encrypter,
    /// Metrics, readiness and the drain signal of a graceful shutdown.
    pub ops: Ops,
    /// The HTTP workers, whose heaps the idle release collects (`ops::memory`).
    pub thread_heaps: ThreadHeaps,
}

impl AppState {
    pub fn new(settings: Settings, pools: Pools, mailbox: Mailbox) -> AppState {
        let s = &settings;
        let ops = Ops::new(s, pools.max_connections());
        AppState {
            sanctum: Sanctum::new(pools.clone(), &s.auth, s.laravel.timezone),
            translator: Translator::new(
                pools.clone(),
                s.laravel.fallback_language().to_string(),
                s.caches.translations,
            ),
            assets: Assets::new(
                pools.clone(),
                s.laravel.filesystem.clone(),
                s.caches.business_settings,
            ),
            limiter: Throttle::from_settings(&s.http, ops.metrics.rate_limit_store_errors()),
            ops_limiter: RateLimiter::new(s.http.ops_rate_limit, 100_000),
            maintenance: Maintenance::new(
                s.laravel.maintenance_forced,
                s.laravel.laravel_root.clone(),
            ),
            participants: Participants::default(),
            storage: Storage::new(ops.metrics.storage_degraded()),
            pair_locks: Default::default(),
            watcher: Arc::new(Watcher::new(s.long_poll.per_user, s.long_poll.max_held)),
            mailbox,
            encrypter: Encrypter::new(*s.laravel.app_key.expose(), s.laravel.previous_keys()),
            ops,
            thread_heaps: ThreadHeaps::default(),
            pools,
            settings,
        }
    }
}

impl AppState {
    /// The database pool for a statement run on this thread (`crate::db::Pools`).
    pub fn db(&self) -> MySqlPool {
        self.pools.current()
    }

    /// Called when the process has gone quiet after load (`ops::memory`): drops what the
    /// caches hold past its time-to-live — and, once idle, what only saves statements (the
    /// touch times of D9, participants, polls' knowledge: each costs one statement when
    /// needed again) — then returns freed heap pages to the OS.
    pub fn release_idle_memory(&self, what: Release) {
        self.sanctum.purge_expired();
        self.limiter.purge_expired();
        self.ops_limiter.purge_expired();
        self.assets.purge_expired();
        self.translator.purge_expired();
        self.watcher.forget_stale();
        if what == Release::Everything {
            self.sanctum.forget_touches();
            self.participants.clear();
            self.watcher.forget_knowledge();
        }
        self.thread_heaps.release_everywhere();
    }
}

/// Maintenance mode (§1.2 step 4, K7): `SHOPCHAT_MAINTENANCE=on`, or the
/// Laravel app's `storage/framework/down` file, checked at most once a second.
pub struct Maintenance {
    forced: bool,
    down_file: Option<PathBuf>,
    last: Mutex<Option<(Instant, bool)>>,
}

impl Maintenance {
    pub fn new(forced: bool, laravel_root: Option<PathBuf>) -> Self {
        Maintenance {
            forced,
            down_file: laravel_root.map(|root| root.join("storage/framework/down")),
            last: Mutex::new(None),
        }
    }

    pub fn is_on(&self) -> bool {
        if self.forced {
            return true;
        }
        let Some(file) = &self.down_file else {
            return false;
        };
        let mut last = self.last.lock_unpoisoned();
        match *last {
            Some((at, on)) if at.elapsed() < Duration::from_secs(1) => on,
            _ => {
                let on = file.exists();
                *last = Some((Instant::now(), on));
                on
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_follows_the_down_file() {
        let dir = tempfile::tempdir().unwrap();
        let m = Maintenance::new(false, Some(dir.path().to_path_buf()));
        assert!(!m.is_on());
        std::fs::create_dir_all(dir.path().join("storage/framework")).unwrap();
        std::fs::write(dir.path().join("storage/framework/down"), "{}").unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert!(m.is_on());
        assert!(Maintenance::new(true, None).is_on());
        assert!(!Maintenance::new(false, None).is_on());
    }
}

//! One pool of database connections per HTTP worker thread, and one for everything else.
//!
//! actix-server runs each HTTP worker thread on a runtime of its own, and a socket belongs to
//! the runtime that opened it: that runtime's reactor drives it (`crate::per_thread`). With one
//! pool shared by all workers, a connection opened while serving a request on one worker was
//! later used by requests on the others. During a graceful stop each worker ends, and its
//! runtime with it, as soon as its own client connections are done: the connections it had
//! opened then failed for every request still running on another worker ("A Tokio 1.x context
//! was found, but it is being shutdown", a 503 in the middle of a rolling restart;
//! `tests/api/ops.rs`).
//!
//! So each worker thread has a pool of its own ([`Pools::attach_current_thread`], as it
//! starts), and code running on it uses that one ([`Pools::current`]); its connections live
//! and end with its runtime, used by nobody else. Everything else (the batching and watching
//! tasks, the mail recovery: all on the runtime that built the application) uses the home
//! pool. A request's database answers also wake its own thread instead of another worker's:
//! at 20,000 simulated app users shopchat spent 117 µs of CPU per request against 135 with the
//! shared pool, on the same machine the same hour (bench/apptraffic.sh, 2026-12-06).
//!
//! Polling every request on the long-lived home runtime instead would have kept the sockets off
//! the workers too, but that runtime's single thread then drives every database answer: under
//! 40,000 simulated app users `top -H` showed it at 100 % of a core while each worker used
//! 40 % (that load was beyond the machine with either design; the one thread is the point).

use std::sync::Arc;
use std::time::Duration;

use sqlx::mysql::MySqlConnectOptions;
use sqlx::MySqlPool;

use crate::config::DatabaseSettings;
use crate::per_thread::PerThread;

/// `SHOPCHAT_DB_POOL_SIZE` shared out: (the home pool's size, each thread's), for `threads`
/// attached threads. Each pool gets at least one connection; the home pool gets what the
/// division leaves.
fn pool_sizes(total: u32, threads: u32) -> (u32, u32) {
    let per_thread = (total / (threads + 1)).max(1);
    let home = total.saturating_sub(per_thread * threads).max(1);
    (home, per_thread)
}

/// The pools of one process (module docs). Cloning shares them.
#[derive(Clone)]
pub struct Pools(Arc<Inner>);

struct Inner {
    /// How to make a thread's pool; `None`: the home pool serves every thread.
    maker: Option<Maker>,
    max_connections: u32,
    home: MySqlPool,
    /// The attached threads' pools.
    threads: PerThread<MySqlPool>,
}

struct Maker {
    settings: DatabaseSettings,
    options: MySqlConnectOptions,
    ping_after: Duration,
    per_thread: u32,
}

impl Pools {
    /// Lazily connecting pools (`db::pool`) for `threads` worker threads and the home pool,
    /// `SHOPCHAT_DB_POOL_SIZE` connections in all.
    pub fn new(db: &DatabaseSettings, threads: u32) -> anyhow::Result<Pools> {
        let ping_after = super::PING_IF_IDLE_FOR;
        let options = super::connect_options(db)?;
        let (home_size, per_thread) = pool_sizes(db.pool_size, threads);
        let home = super::lazy_pool(db, options.clone(), home_size, ping_after);
        Ok(Pools(Arc::new(Inner {
            maker: Some(Maker {
                settings: db.clone(),
                options,
                ping_after,
                per_thread,
            }),
            max_connections: home_size + per_thread * threads,
            home,
            threads: PerThread::default(),
        })))
    }

    /// One pool for every thread: for code that runs on one runtime only (unit tests).
    pub fn single(pool: MySqlPool) -> Pools {
        Pools(Arc::new(Inner {
            maker: None,
            max_connections: pool.options().get_max_connections(),
            home: pool,
            threads: PerThread::default(),
        }))
    }

    /// Gives the calling thread a pool of its own (once; later calls keep it). Called on each
    /// HTTP worker thread as it starts, on its runtime.
    pub fn attach_current_thread(&self) {
        let inner = &self.0;
        let Some(maker) = &inner.maker else { return };
        inner.threads.get_or_make(|| {
            super::lazy_pool(
                &maker.settings,
                maker.options.clone(),
                maker.per_thread,
                maker.ping_after,
            )
        });
    }

    /// The pool for code running on this thread: its own when attached, else the home pool.
    pub fn current(&self) -> MySqlPool {
        self.0.threads.get().unwrap_or_else(|| self.0.home.clone())
    }

    fn all(&self) -> Vec<MySqlPool> {
        let mut all = vec![self.0.home.clone()];
        all.extend(self.0.threads.all());
        all
    }

    /// Open connections of all pools.
    pub fn size(&self) -> u32 {
        self.all().iter().map(MySqlPool::size).sum()
    }

    /// Idle connections of all pools.
    pub fn num_idle(&self) -> usize {
        self.all().iter().map(MySqlPool::num_idle).sum()
    }

    /// Each attached thread's connections at most (the home pool's when none are made).
    pub fn per_thread(&self) -> u32 {
        match &self.0.maker {
            Some(maker) => maker.per_thread,
            None => self.0.max_connections,
        }
    }

    /// The most connections all pools together open.
    pub fn max_connections(&self) -> u32 {
        self.0.max_connections
    }

    /// Closes every pool (waits for connections in use to come back).
    pub async fn close(&self) {
        for pool in self.all() {
            pool.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_size_is_shared_out_with_at_least_one_each() {
        assert_eq!(pool_sizes(10, 2), (4, 3));
        assert_eq!(pool_sizes(10, 3), (4, 2));
        assert_eq!(pool_sizes(10, 0), (10, 10));
        assert_eq!(pool_sizes(3, 2), (1, 1));
        // Fewer than one each: each still gets one.
        assert_eq!(pool_sizes(1, 2), (1, 1));
    }
}

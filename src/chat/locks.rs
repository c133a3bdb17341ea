//! Locks around "start a conversation" (§5.5 step 3): a per-process queue
//! per (customer, seller) pair in front of MySQL's `GET_LOCK`, so that a burst
//! of taps for one pair waits in memory instead of holding pooled connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::mysql::{MySql, MySqlConnection};
use sqlx::pool::PoolConnection;
use sqlx::MySqlPool;

use crate::error::ApiError;
use crate::sync::LockUnpoisoned;

/// Per-process queues, one per lock name, in front of `GET_LOCK`.
#[derive(Default)]
pub struct PairLocks {
    queues: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A place at the head of a pair's queue; leaving drops the queue when no
/// one else waits in it.
pub struct PairTurn<'a> {
    locks: &'a PairLocks,
    name: String,
    queue: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl PairLocks {
    /// Waits for this process's turn on `name`, at most `timeout` (like
    /// `GET_LOCK`: not getting it is "database unavailable", §1.3).
    pub async fn enter(&self, name: &str, timeout: Duration) -> Result<PairTurn<'_>, ApiError> {
        let queue = self
            .queues
            .lock_unpoisoned()
            .entry(name.to_string())
            .or_default()
            .clone();
        let mut turn = PairTurn {
            locks: self,
            name: name.to_string(),
            queue: queue.clone(),
            guard: None,
        };
        match tokio::time::timeout(timeout, queue.lock_owned()).await {
            Ok(guard) => {
                turn.guard = Some(guard);
                Ok(turn)
            }
            Err(_) => Err(ApiError::Unavailable(format!(
                "{name}: queue not left within the lock timeout"
            ))),
        }
    }
}

impl Drop for PairTurn<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut queues = self.locks.queues.lock_unpoisoned();
        // Ours and the map's: nobody else holds or waits for this queue.
        if Arc::strong_count(&self.queue) == 2 {
            queues.remove(&self.name);
        }
    }
}

/// A MySQL named lock held on a dedicated connection (§5.5 step 3).
pub struct NamedLock {
    conn: Option<PoolConnection<MySql>>,
    name: String,
}

impl NamedLock {
    pub async fn acquire(
        pool: &MySqlPool,
        name: &str,
        timeout: Duration,
    ) -> Result<NamedLock, ApiError> {
        let mut conn = pool.acquire().await?;
        // GET_LOCK takes whole seconds.
        let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
            .bind(name)
            .bind(timeout.as_secs())
            .fetch_one(&mut *conn)
            .await?;
        if got != Some(1) {
            // 0 = timed out, NULL = error: "database unavailable" (§1.3).
            return Err(ApiError::Unavailable(format!(
                "GET_LOCK({name}) not acquired"
            )));
        }
        Ok(NamedLock {
            conn: Some(conn),
            name: name.to_string(),
        })
    }

    /// The connection that holds the lock (`None` only after `release`).
    pub fn connection(&mut self) -> Option<&mut MySqlConnection> {
        self.conn.as_deref_mut()
    }

    pub async fn release(mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let released = tokio::time::timeout(
            Duration::from_secs(5),
            sqlx::query("SELECT RELEASE_LOCK(?)")
                .bind(&self.name)
                .execute(&mut *conn),
        )
        .await;
        if !matches!(released, Ok(Ok(_))) {
            tracing::warn!(lock = %self.name, "RELEASE_LOCK failed; closing the connection instead");
            drop(conn.detach());
        }
    }
}

impl Drop for NamedLock {
    /// A request cancelled while holding the lock: close the connection (the
    /// server then frees the lock) rather than return a locked one to the pool.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

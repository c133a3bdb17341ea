//! §8.6 step 3: what becomes of mail left in `staging/` by a request that never finished
//! (a crash between the staging and the promotion, a commit whose answer was lost).
//!
//! A staged mail is promoted to `pending/` when the message it is about committed, deleted
//! otherwise. An entry is judged only once its transaction cannot be running any more: its
//! writer (the process id in its name) is gone and the file is a few seconds old, or the file is
//! older than [`SETTLED`] whoever wrote it. A younger one may belong to a transaction still
//! running, in this process or another sharing the outbox (security review L2: a start-up
//! recovery used to delete such files). The judgement runs at start-up and then every
//! [`EVERY`], so a mail never waits for the next restart.
//!
//! Processes in other containers sharing one outbox volume have process ids this process
//! cannot see: their staged mail is judged after [`ORPHANED`], which is wrong only for a
//! transaction that stalls between its staging and its commit for longer than that.

use std::sync::Arc;
use std::time::Duration;

use sqlx::MySqlPool;
use tokio::sync::watch;

use crate::mail::outbox::Outbox;
use crate::mail::render::Notification;

/// Longer than any write transaction can run (the lock wait timeout, 50 s by default, plus
/// `SHOPCHAT_LOCK_TIMEOUT`).
pub const SETTLED: Duration = Duration::from_secs(120);
/// The age at which a staged mail whose writer is gone is judged (the commit follows the
/// staging within milliseconds).
pub const ORPHANED: Duration = Duration::from_secs(2);
/// How often `staging/` is looked at (a directory listing, usually of nothing).
pub const EVERY: Duration = Duration::from_secs(5);

/// Recovers settled staged mail now, then every [`EVERY`], until `shutdown` (a recovery cut off
/// by it leaves `staging/` for the next one: nothing is lost).
pub async fn run(outbox: Arc<Outbox>, pool: MySqlPool, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = recover(&outbox, &pool) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Judges every staged mail whose transaction is over (module docs); waits for the database
/// if it is not reachable. Returns (promoted, deleted).
pub async fn recover(outbox: &Arc<Outbox>, pool: &MySqlPool) -> (usize, usize) {
    let ob = outbox.clone();
    let entries = match tokio::task::spawn_blocking(move || {
        ob.staged_entries_settled(|writer, age| {
            age >= SETTLED || (age >= ORPHANED && !process_alive(writer))
        })
    })
    .await
    {
        Ok(Ok(entries)) => entries,
        other => {
            tracing::error!(?other, "outbox: cannot read staging/");
            return (0, 0);
        }
    };
    let (mut promoted, mut deleted) = (0, 0);
    // Retries start fast (a database that is merely busy at start-up answers at once) and
    // back off to 5 s while it is down.
    let mut retry = Duration::from_millis(250);
    for (path, n) in entries {
        let committed = loop {
            match committed(pool, &n).await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox recovery waits for the database");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(5));
                }
            }
        };
        let ob = outbox.clone();
        let result = tokio::task::spawn_blocking(move || {
            if committed {
                ob.promote_path(&path)
            } else {
                ob.delete_path(&path)
            }
        })
        .await;
        match committed {
            true => promoted += 1,
            false => deleted += 1,
        }
        tracing::info!(
            conversation_id = n.conversation_id,
            message_id = n.message_id,
            promoted = committed,
            ?result,
            "outbox: staged mail recovered"
        );
    }
    (promoted, deleted)
}

/// Whether a process with this id runs here (`kill(pid, 0)`); our own process counts as alive.
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks whether the process exists; no signal is sent.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether the transaction that staged `n` committed: its message exists (older entries,
/// without a message id: its conversation exists).
async fn committed(pool: &MySqlPool, n: &Notification) -> Result<bool, sqlx::Error> {
    let count: i64 = match n.message_id {
        Some(message) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE id = ? AND conversation_id = ?")
                .bind(message)
                .bind(n.conversation_id)
                .fetch_one(pool)
                .await?
        }
        None => {
            sqlx::query_scalar("SELECT COUNT(*) FROM conversations WHERE id = ?")
                .bind(n.conversation_id)
                .fetch_one(pool)
                .await?
        }
    };
    Ok(count > 0)
}

#[cfg(test)]
mod tests {
    use super::process_alive;

    #[test]
    fn writers_are_alive_or_gone() {
        assert!(process_alive(std::process::id()));
        assert!(process_alive(1), "init");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_alive(pid), "a reaped child");
    }
}

//! The transactional file outbox for notification e-mails (COMPAT §8.6, D7).
//!
//! Layout under `<outbox>` (`SHOPCHAT_OUTBOX_DIR`, §10):
//!
//! ```text
//! staging/<id>.json                         written before the DB commit (§8.6 step 1)
//! pending/<due>-<id>.json                   committed, waiting for delivery (step 2)
//! sending/<claimed_at>-<due>-<id>.json      claimed by one worker (step 4)
//! dead/<due>-<id>.json                      given up, kept with its last error (step 4)
//! ```
//!
//! `id` = `<unix nanos, 20 digits>-<pid>-<64 random bits hex>`, unique across processes sharing
//! one outbox. `due` and `claimed_at` are unix seconds, zero-padded to 12 digits, so that
//! - a worker finds due entries from directory names alone, without opening files that are
//!   backing off (with the SMTP server down, thousands may be waiting);
//! - the age of a claim is known without trusting mtime/ctime semantics of the file system.
//!
//! Every state change is a `rename(2)` inside one file system: atomic, so an entry is always in
//! exactly one directory and is never half-written. Content changes are write-temp, fsync,
//! rename-over. Temp files start with `.tmp-` and are ignored by every scan.
//!
//! Delivery is at-least-once (§8.6): wherever a crash window cannot be closed, the code errs on
//! the side of a duplicate mail rather than a lost one.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::mail::render::Notification;
use crate::sync::LockUnpoisoned;

const STAGING: &str = "staging";
const PENDING: &str = "pending";
const SENDING: &str = "sending";
const DEAD: &str = "dead";
const TMP_PREFIX: &str = ".tmp-";
const EXT: &str = ".json";

/// Back-off (§8.6 step 4): 1 min, doubling, capped at 1 h.
const BACKOFF_CAP_SECS: u64 = 3600;

/// How failed deliveries are retried (§8.6 step 4): the first retry after
/// `first_backoff_secs` (`SHOPCHAT_MAIL_RETRY_SECONDS`, default 60), doubling
/// up to an hour; dead after `max_attempts` (`SHOPCHAT_MAIL_MAX_ATTEMPTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub first_backoff_secs: u64,
    /// How long `dead/` keeps an entry (`SHOPCHAT_OUTBOX_DEAD_DAYS`); `None` = until purged.
    pub keep_dead: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 20,
            first_backoff_secs: 60,
            keep_dead: Some(Duration::from_secs(30 * 86_400)),
        }
    }
}

/// What one outbox file holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Entry {
    notification: Notification,
    attempts: u32,
    last_error: Option<String>,
    next_attempt_at: u64,
    created_at: u64,
}

/// A handle on `<outbox>`; cheap, safe to share between threads and processes.
#[derive(Debug, Clone)]
pub struct Outbox {
    root: PathBuf,
    /// `SHOPCHAT_OUTBOX_MAX_BYTES`: no new mail is staged beyond it (security review M3).
    max_bytes: Option<u64>,
    /// The bytes the outbox held when last measured, and when (shared by the clones).
    usage: Arc<Mutex<Option<(Instant, u64)>>>,
}

/// How long a measurement of the outbox's size is trusted (staged mail is added to it).
const USAGE_TTL: Duration = Duration::from_secs(5);

/// A mail written to `staging/` whose fate depends on the database commit (§8.6 steps 1–2).
///
/// Dropping it without `promote`/`discard` (a panic, a crash) leaves the file for the start-up
/// recovery of step 3.
#[must_use = "a staged mail must be promoted after the commit or discarded after a rollback"]
#[derive(Debug)]
pub struct StagedMail {
    root: PathBuf,
    id: String,
    /// The full entry, kept so `promote` can re-create it if recovery removed the file (see there).
    bytes: Vec<u8>,
}

/// An entry this process owns in `sending/` (§8.6 step 4).
#[derive(Debug)]
pub struct Claimed {
    root: PathBuf,
    /// Name in `sending/`.
    sending_name: String,
    /// Name it had in `pending/`; reused for `dead/` and for returning stale claims.
    pending_name: String,
    entry: Entry,
}

/// Where a failed delivery went (returned so the worker can log it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Back in `pending/`, due at this unix second.
    Retry { next_attempt_at: u64 },
    /// Moved to `dead/`.
    Dead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    Pending,
    Sending,
    Dead,
}

impl std::fmt::Display for EntryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EntryState::Pending => "pending",
            EntryState::Sending => "sending",
            EntryState::Dead => "dead",
        })
    }
}

/// Entries per directory ([`Outbox::counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub staging: usize,
    pub pending: usize,
    pub sending: usize,
    pub dead: usize,
}

/// One line of `shopchat outbox list` (§8.6 step 5).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntrySummary {
    pub state: EntryState,
    pub file_name: String,
    pub to: String,
    pub subject: String,
    pub attempts: u32,
    /// For an unreadable file: `unreadable entry: <reason>` (to and subject are then empty).
    pub last_error: Option<String>,
    pub next_attempt_at: u64,
    pub created_at: u64,
}

impl std::fmt::Display for EntrySummary {
    /// The line `shopchat outbox list` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<8} {:<48} attempts={} to={} subject={:?} last_error={}",
            self.state.to_string(),
            self.file_name,
            self.attempts,
            self.to,
            self.subject,
            self.last_error.as_deref().unwrap_or("-")
        )
    }
}

impl Outbox {
    /// Opens (creating if needed) the outbox at `root` with its four directories.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Outbox> {
        let root = root.into();
        for dir in [STAGING, PENDING, SENDING, DEAD] {
            let path = root.join(dir);
            if !path.is_dir() {
                let mut builder = fs::DirBuilder::new();
                builder.recursive(true);
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                builder.create(&path)?;
            }
        }
        Ok(Outbox {
            root,
            max_bytes: None,
            usage: Arc::default(),
        })
    }

    /// Refuses to stage mail once the outbox holds `max_bytes` (503 before the disk fills).
    pub fn with_limit(mut self, max_bytes: u64) -> Outbox {
        self.max_bytes = Some(max_bytes);
        self
    }

    /// The bytes held by every entry of the four directories (measured at most every few
    /// seconds; mail staged since is added).
    pub fn usage(&self) -> io::Result<u64> {
        let mut usage = self.usage.lock_unpoisoned();
        if let Some((at, bytes)) = *usage {
            if at.elapsed() < USAGE_TTL {
                return Ok(bytes);
            }
        }
        let mut bytes = 0;
        for dir in [STAGING, PENDING, SENDING, DEAD] {
            for name in entry_names(&self.dir(dir))? {
                match fs::metadata(self.dir(dir).join(name)) {
                    Ok(m) => bytes += m.len(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        *usage = Some((Instant::now(), bytes));
        Ok(bytes)
    }

    fn count_staged(&self, bytes: u64) {
        if let Some((_, used)) = self.usage.lock_unpoisoned().as_mut() {
            *used += bytes;
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// §8.6 step 1: durably writes the mail to `staging/` before the DB commit. An error here
    /// must abort the request with 503.
    pub fn stage(&self, n: &Notification) -> io::Result<StagedMail> {
        let now_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let id = format!(
            "{now_nanos:020}-{}-{:016x}",
            std::process::id(),
            rand::thread_rng().gen::<u64>()
        );
        let now = unix_now();
        let entry = Entry {
            notification: n.clone(),
            attempts: 0,
            last_error: None,
            next_attempt_at: now,
            created_at: now,
        };
        let bytes = serde_json::to_vec_pretty(&entry).map_err(io::Error::other)?;
        if let Some(max) = self.max_bytes {
            let used = self.usage()?;
            if used + bytes.len() as u64 > max {
                return Err(io::Error::other(format!(
                    "the outbox holds {used} bytes; SHOPCHAT_OUTBOX_MAX_BYTES is {max}"
                )));
            }
        }
        write_atomically(&self.dir(STAGING), &format!("{id}{EXT}"), &bytes)?;
        self.count_staged(bytes.len() as u64);
        Ok(StagedMail {
            root: self.root.clone(),
            id,
            bytes,
        })
    }

    /// The staged mails `settled(writer_pid, age)` accepts, by the process id in their name and
    /// their file's age ([`crate::mail::recovery`]).
    pub fn staged_entries_settled(
        &self,
        settled: impl Fn(u32, Duration) -> bool,
    ) -> io::Result<Vec<(PathBuf, Notification)>> {
        Ok(self
            .staged_entries()?
            .into_iter()
            .filter(|(path, _)| {
                let writer = staged_name(path)
                    .ok()
                    .and_then(|name| name.split('-').nth(1)?.parse::<u32>().ok())
                    .unwrap_or(0);
                fs::metadata(path)
                    .and_then(|m| m.modified())
                    .map(|at| settled(writer, at.elapsed().unwrap_or_default()))
                    .unwrap_or(false)
            })
            .collect())
    }

    /// The staged mails, for a caller that checks the database asynchronously and then calls
    /// [`Outbox::promote_path`] or [`Outbox::delete_path`]. A staged file that cannot be parsed
    /// (never written by us: writes are atomic) is moved to `dead/` so an operator sees it.
    pub fn staged_entries(&self) -> io::Result<Vec<(PathBuf, Notification)>> {
        let mut out = Vec::new();
        for name in entry_names(&self.dir(STAGING))? {
            let path = self.dir(STAGING).join(&name);
            match read_entry(&path) {
                Ok(entry) => out.push((path, entry.notification)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    tracing::warn!(file = %name, error = %e, "unreadable staged mail moved to dead/");
                    ignore_not_found(fs::rename(&path, self.dir(DEAD).join(&name)))?;
                    sync_dir(&self.dir(DEAD))?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Moves a staged file (a path from [`Outbox::staged_entries`]) to `pending/`. Already gone
    /// (the request that staged it promoted or discarded it meanwhile) is not an error.
    pub fn promote_path(&self, path: &Path) -> io::Result<()> {
        let name = staged_name(path)?;
        let id = name.strip_suffix(EXT).unwrap_or(name);
        let dest = pending_name(due_from_id(id), id);
        ignore_not_found(fs::rename(
            self.dir(STAGING).join(name),
            self.dir(PENDING).join(dest),
        ))?;
        sync_dir(&self.dir(PENDING))
    }

    /// Deletes a staged file (a path from [`Outbox::staged_entries`]); already gone is fine.
    pub fn delete_path(&self, path: &Path) -> io::Result<()> {
        let name = staged_name(path)?;
        ignore_not_found(fs::remove_file(self.dir(STAGING).join(name)))?;
        sync_dir(&self.dir(STAGING))
    }

    /// §8.6 step 4: claims the most overdue pending entry whose time has come, by renaming it
    /// into `sending/`. Several processes may race for the same file; `rename` succeeds for
    /// exactly one of them, the others get NotFound and try the next entry.
    pub fn claim_next(&self, now_unix: u64) -> io::Result<Option<Claimed>> {
        for name in self.due(now_unix)? {
            if let Some(claimed) = self.claim(&name, now_unix)? {
                return Ok(Some(claimed));
            }
        }
        Ok(None)
    }

    /// The pending entries due at `now_unix`, most overdue first, from the names alone. A
    /// worker claims from one such list until it is used up, instead of listing `pending/`
    /// for every claim (security review L3: that made a backlog of n mails cost n² names).
    pub fn due(&self, now_unix: u64) -> io::Result<Vec<String>> {
        let mut due: Vec<(u64, String)> = entry_names(&self.dir(PENDING))?
            .into_iter()
            .filter_map(|name| Some((parse_pending(&name)?.0, name)))
            .filter(|(at, _)| *at <= now_unix)
            .collect();
        due.sort();
        Ok(due.into_iter().map(|(_, name)| name).collect())
    }

    /// Claims the pending entry `name` (from [`Outbox::due`]); `None` when it is gone (claimed
    /// by another worker) or unreadable (moved to `dead/`).
    pub fn claim(&self, name: &str, now_unix: u64) -> io::Result<Option<Claimed>> {
        let sending_name = format!("{now_unix:012}-{name}");
        let sending_path = self.dir(SENDING).join(&sending_name);
        match fs::rename(self.dir(PENDING).join(name), &sending_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        // The claim needs no fsync: if it is lost in a crash the entry is simply pending
        // again, which is what returning a stale claim would do anyway.
        match read_entry(&sending_path) {
            Ok(entry) => Ok(Some(Claimed {
                root: self.root.clone(),
                sending_name,
                pending_name: name.to_string(),
                entry,
            })),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                // Nothing can be sent from it; keep it visible rather than loop on it.
                tracing::warn!(file = %name, error = %e, "unreadable outbox entry moved to dead/");
                fs::rename(&sending_path, self.dir(DEAD).join(name))?;
                sync_dir(&self.dir(DEAD))?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// §8.6 step 4: claims older than `older_than` (10 min in production) belong to a worker
    /// that died; they go back to `pending/` under their old name, i.e. due at once. Also removes
    /// temp files that old (left by a crash mid-write). Returns the number of claims returned.
    pub fn return_stale_claims(&self, older_than: Duration) -> io::Result<usize> {
        let now = unix_now();
        let mut returned = 0;
        for name in entry_names(&self.dir(SENDING))? {
            let Some((claimed_at, pending)) = parse_sending(&name) else {
                continue;
            };
            if claimed_at.saturating_add(older_than.as_secs()) > now {
                continue;
            }
            match fs::rename(
                self.dir(SENDING).join(&name),
                self.dir(PENDING).join(pending),
            ) {
                Ok(()) => returned += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if returned > 0 {
            sync_dir(&self.dir(PENDING))?;
        }
        for dir in [STAGING, PENDING, SENDING, DEAD] {
            remove_old_temp_files(&self.dir(dir), older_than)?;
        }
        Ok(returned)
    }

    /// How many entries each directory holds, from names alone (no file is opened): cheap
    /// enough for every `/metrics` scrape even with a large backlog.
    pub fn counts(&self) -> io::Result<Counts> {
        let n = |dir: &str| entry_names(&self.dir(dir)).map(|names| names.len());
        Ok(Counts {
            staging: n(STAGING)?,
            pending: n(PENDING)?,
            sending: n(SENDING)?,
            dead: n(DEAD)?,
        })
    }

    /// A file in `staging/` that every scan ignores (`.tmp-` prefix), written and removed again:
    /// proves the outbox accepts new mail (`/ready`), since staging is where a request writes.
    pub fn probe_writable(&self) -> io::Result<()> {
        let path = self.dir(STAGING).join(format!(
            "{TMP_PREFIX}ready-{}-{:016x}",
            std::process::id(),
            rand::thread_rng().gen::<u64>()
        ));
        let result = fs::write(&path, b"ready");
        let _ = fs::remove_file(&path);
        result
    }

    /// `shopchat outbox list` (§8.6 step 5): pending, sending and dead entries, each directory in
    /// name order (oldest due first).
    pub fn list(&self) -> io::Result<Vec<EntrySummary>> {
        let mut out = Vec::new();
        for (state, dir) in [
            (EntryState::Pending, PENDING),
            (EntryState::Sending, SENDING),
            (EntryState::Dead, DEAD),
        ] {
            let mut names = entry_names(&self.dir(dir))?;
            names.sort();
            for name in names {
                let summary = match read_entry(&self.dir(dir).join(&name)) {
                    Ok(e) => EntrySummary {
                        state,
                        file_name: name,
                        to: e.notification.to,
                        subject: e.notification.subject,
                        attempts: e.attempts,
                        last_error: e.last_error,
                        next_attempt_at: e.next_attempt_at,
                        created_at: e.created_at,
                    },
                    // Claimed, delivered or retried by another process since the scan.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => EntrySummary {
                        state,
                        file_name: name,
                        to: String::new(),
                        subject: String::new(),
                        attempts: 0,
                        last_error: Some(format!("unreadable entry: {e}")),
                        next_attempt_at: 0,
                        created_at: 0,
                    },
                };
                out.push(summary);
            }
        }
        Ok(out)
    }

    /// `shopchat outbox retry --dead` (§8.6 step 5): dead entries go back to `pending/`, due now,
    /// with their attempt counter reset (the last error is kept for `list`). Unreadable dead
    /// files stay where they are. Returns how many were moved.
    pub fn retry_dead(&self) -> io::Result<usize> {
        let now = unix_now();
        let mut moved = 0;
        for name in entry_names(&self.dir(DEAD))? {
            // Claim through sending/ first, so that two concurrent `retry` runs cannot both
            // re-create the same entry; a crash after the claim is healed by the stale-claim rule.
            let sending_name = format!("{now:012}-{name}");
            let sending_path = self.dir(SENDING).join(&sending_name);
            match fs::rename(self.dir(DEAD).join(&name), &sending_path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            let mut entry = match read_entry(&sending_path) {
                Ok(entry) => entry,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    fs::rename(&sending_path, self.dir(DEAD).join(&name))?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            entry.attempts = 0;
            entry.next_attempt_at = now;
            let bytes = serde_json::to_vec_pretty(&entry).map_err(io::Error::other)?;
            write_atomically(&self.dir(SENDING), &sending_name, &bytes)?;
            let id = id_of_pending(&name);
            fs::rename(&sending_path, self.dir(PENDING).join(pending_name(now, id)))?;
            moved += 1;
        }
        if moved > 0 {
            sync_dir(&self.dir(PENDING))?;
            sync_dir(&self.dir(DEAD))?;
        }
        Ok(moved)
    }

    /// Deletes the dead entries that died longer ago than `keep` (`SHOPCHAT_OUTBOX_DEAD_DAYS`;
    /// an entry's file is rewritten when it fails, so its modification time is its death).
    /// Returns the count.
    pub fn expire_dead(&self, keep: Duration) -> io::Result<usize> {
        let mut removed = 0;
        for name in entry_names(&self.dir(DEAD))? {
            let path = self.dir(DEAD).join(&name);
            let age = match fs::metadata(&path).and_then(|m| m.modified()) {
                Ok(at) => at.elapsed().unwrap_or_default(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if age > keep {
                match fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if removed > 0 {
            sync_dir(&self.dir(DEAD))?;
        }
        Ok(removed)
    }

    /// `shopchat outbox purge --dead` (§8.6 step 5): deletes every dead entry. Returns the count.
    pub fn purge_dead(&self) -> io::Result<usize> {
        let mut removed = 0;
        for name in entry_names(&self.dir(DEAD))? {
            match fs::remove_file(self.dir(DEAD).join(&name)) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        sync_dir(&self.dir(DEAD))?;
        Ok(removed)
    }
}

impl StagedMail {
    /// The file in `staging/`.
    pub fn path(&self) -> PathBuf {
        self.root.join(STAGING).join(format!("{}{EXT}", self.id))
    }

    /// §8.6 step 2, after the commit: `staging/` → `pending/`.
    ///
    /// If the file is gone, a concurrently starting process ran step 3 between our stage and
    /// our commit: it either promoted the entry (found in pending/sending/dead: done) or, not yet
    /// seeing the uncommitted conversation, deleted it. In the latter case the mail is written
    /// again straight into `pending/`; should it in fact have been promoted and already delivered,
    /// the result is a duplicate, which at-least-once delivery allows, whereas a loss is not.
    pub fn promote(self) -> io::Result<()> {
        let pending_dir = self.root.join(PENDING);
        let dest = pending_name(due_from_id(&self.id), &self.id);
        match fs::rename(self.path(), pending_dir.join(&dest)) {
            Ok(()) => sync_dir(&pending_dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let suffix = format!("-{}{EXT}", self.id);
                for dir in [PENDING, SENDING, DEAD] {
                    if entry_names(&self.root.join(dir))?
                        .iter()
                        .any(|n| n.ends_with(&suffix))
                    {
                        return Ok(());
                    }
                }
                write_atomically(&pending_dir, &dest, &self.bytes)
            }
            Err(e) => Err(e),
        }
    }

    /// After a rollback: the mail must never be sent. Already gone is fine.
    pub fn discard(self) -> io::Result<()> {
        ignore_not_found(fs::remove_file(self.path()))?;
        sync_dir(&self.root.join(STAGING))
    }
}

impl Claimed {
    pub fn notification(&self) -> &Notification {
        &self.entry.notification
    }

    /// Failed attempts so far (0 on the first try).
    pub fn attempts(&self) -> u32 {
        self.entry.attempts
    }

    /// The file's name in `sending/`, for logs.
    pub fn file_name(&self) -> &str {
        &self.sending_name
    }

    fn sending_dir(&self) -> PathBuf {
        self.root.join(SENDING)
    }

    /// Sent: the entry is deleted (§8.6 step 4).
    pub fn delivered(self) -> io::Result<()> {
        ignore_not_found(fs::remove_file(self.sending_dir().join(&self.sending_name)))?;
        sync_dir(&self.sending_dir())
    }

    /// Not sent: count the attempt, keep the error, then either back off in `pending/` or, when
    /// `permanent` (5xx reply, malformed address) or after `max_attempts` attempts, move to
    /// `dead/` (§8.6 step 4). The new content replaces the claim file in place before the entry
    /// moves, so at every instant exactly one complete copy exists.
    pub fn failed(
        mut self,
        error: &str,
        permanent: bool,
        policy: RetryPolicy,
        now_unix: u64,
    ) -> io::Result<FailOutcome> {
        self.entry.attempts = self.entry.attempts.saturating_add(1);
        self.entry.last_error = Some(error.to_owned());
        let dead = permanent || self.entry.attempts >= policy.max_attempts;
        if !dead {
            self.entry.next_attempt_at =
                now_unix + backoff_secs(self.entry.attempts, policy.first_backoff_secs);
        }
        let bytes = serde_json::to_vec_pretty(&self.entry).map_err(io::Error::other)?;
        let sending_dir = self.sending_dir();
        write_atomically(&sending_dir, &self.sending_name, &bytes)?;
        let src = sending_dir.join(&self.sending_name);
        if dead {
            let dead_dir = self.root.join(DEAD);
            fs::rename(src, dead_dir.join(&self.pending_name))?;
            sync_dir(&dead_dir)?;
            Ok(FailOutcome::Dead)
        } else {
            let pending_dir = self.root.join(PENDING);
            let id = id_of_pending(&self.pending_name);
            let next = self.entry.next_attempt_at;
            fs::rename(src, pending_dir.join(pending_name(next, id)))?;
            sync_dir(&pending_dir)?;
            Ok(FailOutcome::Retry {
                next_attempt_at: next,
            })
        }
    }
}

/// Delay before the next try after `attempts` failures: first · 2^(attempts−1), capped at 1 h,
/// plus up to 10 % random jitter so that a backlog does not hit a recovering server in lockstep.
fn backoff_secs(attempts: u32, first: u64) -> u64 {
    let doublings = attempts.saturating_sub(1).min(16);
    let base = first.saturating_mul(1 << doublings).min(BACKOFF_CAP_SECS);
    base + rand::thread_rng().gen_range(0..=base / 10)
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn pending_name(due: u64, id: &str) -> String {
    format!("{due:012}-{id}{EXT}")
}

/// `<digits>-<id>.json` → (due, id).
fn parse_pending(name: &str) -> Option<(u64, &str)> {
    let (due, id) = name.strip_suffix(EXT)?.split_once('-')?;
    if due.is_empty() || !due.bytes().all(|b| b.is_ascii_digit()) || id.is_empty() {
        return None;
    }
    Some((due.parse().ok()?, id))
}

/// `<claimed_at>-<pending name>` → (claimed_at, pending name).
fn parse_sending(name: &str) -> Option<(u64, &str)> {
    let (claimed, pending) = name.split_once('-')?;
    if claimed.is_empty() || !claimed.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    parse_pending(pending)?;
    Some((claimed.parse().ok()?, pending))
}

fn id_of_pending(name: &str) -> &str {
    parse_pending(name)
        .map(|(_, id)| id)
        .unwrap_or_else(|| name.strip_suffix(EXT).unwrap_or(name))
}

/// A staged mail is due when it was staged: the id starts with the unix nanos.
fn due_from_id(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|nanos| nanos.parse::<u128>().ok())
        .map(|nanos| (nanos / 1_000_000_000) as u64)
        .unwrap_or(0)
}

/// Only the file name of a path handed back by the caller is used, so nothing outside
/// `staging/` can be touched through `promote_path`/`delete_path`.
fn staged_name(path: &Path) -> io::Result<&str> {
    path.file_name()
        .and_then(OsStr::to_str)
        .filter(|n| n.ends_with(EXT) && !n.starts_with('.'))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a staged outbox entry: {}", path.display()),
            )
        })
}

/// Names of the entry files in `dir` (temp and other dot files, and non-`.json` files, skipped).
fn entry_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for dirent in fs::read_dir(dir)? {
        let dirent = dirent?;
        if let Some(name) = dirent.file_name().to_str() {
            if !name.starts_with('.') && name.ends_with(EXT) {
                names.push(name.to_owned());
            }
        }
    }
    Ok(names)
}

/// Parse errors are reported as `InvalidData`, distinguishable from I/O errors.
fn read_entry(path: &Path) -> io::Result<Entry> {
    let bytes = fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Temp file, write, fsync, rename over `dir/name`, fsync `dir`: after this returns, `dir/name`
/// holds exactly `bytes` even across a power loss (§8.6 step 1), and no reader ever sees a
/// partial file.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(
        "{TMP_PREFIX}{name}-{:016x}",
        rand::thread_rng().gen::<u64>()
    ));
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        // Mail text and addresses: readable by the service's user only, whatever the umask
        // (the container image sets none: security review L7).
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes a rename/unlink in `dir` durable. (On ext4/xfs one directory fsync commits the whole
/// journaled rename, source side included.)
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn ignore_not_found(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn remove_old_temp_files(dir: &Path, older_than: Duration) -> io::Result<()> {
    let now = SystemTime::now();
    for dirent in fs::read_dir(dir)? {
        let dirent = dirent?;
        let is_tmp = dirent
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TMP_PREFIX));
        if !is_tmp {
            continue;
        }
        let old = match dirent.metadata().and_then(|m| m.modified()) {
            Ok(mtime) => now.duration_since(mtime).unwrap_or_default() >= older_than,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if old {
            ignore_not_found(fs::remove_file(dirent.path()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `mail::recovery` does with each staged mail, its database check replaced by
    /// `committed(conversation_id)`.
    fn judge_staged(
        outbox: &Outbox,
        committed: impl Fn(u64) -> bool,
    ) -> io::Result<(usize, usize)> {
        let (mut promoted, mut deleted) = (0, 0);
        for (path, n) in outbox.staged_entries()? {
            if committed(n.conversation_id) {
                outbox.promote_path(&path)?;
                promoted += 1;
            } else {
                outbox.delete_path(&path)?;
                deleted += 1;
            }
        }
        Ok((promoted, deleted))
    }
    use std::collections::HashSet;
    use std::sync::Arc;

    fn note(conversation_id: u64) -> Notification {
        Notification {
            to: format!("user{conversation_id}@example.com"),
            from_address: "hello@example.com".into(),
            from_name: "Example".into(),
            subject: format!("Sender:- Customer {conversation_id}"),
            html: "<h1>Message</h1>\n".into(),
            conversation_id,
            message_id: None,
        }
    }

    fn files(outbox: &Outbox, dir: &str) -> Vec<String> {
        let mut v = entry_names(&outbox.dir(dir)).unwrap();
        v.sort();
        v
    }

    fn all_files(outbox: &Outbox, dir: &str) -> usize {
        fs::read_dir(outbox.dir(dir)).unwrap().count()
    }

    #[test]
    fn stage_promote_discard() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(tmp.path().join("outbox")).unwrap();

        let a = outbox.stage(&note(1)).unwrap();
        let b = outbox.stage(&note(2)).unwrap();
        assert_eq!(files(&outbox, STAGING).len(), 2);
        assert!(a.path().exists());
        let staged: Entry = serde_json::from_slice(&fs::read(a.path()).unwrap()).unwrap();
        assert_eq!(staged.notification, note(1));
        assert_eq!(staged.attempts, 0);
        assert_eq!(staged.last_error, None);
        assert!(staged.next_attempt_at <= unix_now());

        a.promote().unwrap();
        b.discard().unwrap();
        assert!(files(&outbox, STAGING).is_empty());
        assert_eq!(all_files(&outbox, STAGING), 0, "no temp files left");
        let pending = files(&outbox, PENDING);
        assert_eq!(pending.len(), 1);
        assert!(parse_pending(&pending[0]).is_some());

        let c = outbox.claim_next(unix_now()).unwrap().unwrap();
        assert_eq!(c.notification(), &note(1));
        assert_eq!(c.attempts(), 0);
        c.delivered().unwrap();
        assert!(outbox.claim_next(unix_now()).unwrap().is_none());
        assert!(outbox.list().unwrap().is_empty());
    }

    #[test]
    fn names_are_unique() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(tmp.path()).unwrap();
        let staged: Vec<_> = (0..50).map(|i| outbox.stage(&note(i)).unwrap()).collect();
        let paths: HashSet<_> = staged.iter().map(StagedMail::path).collect();
        assert_eq!(paths.len(), 50);
        staged.into_iter().for_each(|s| s.discard().unwrap());
    }

    #[test]
    fn judging_staged_mail_promotes_committed_and_deletes_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(tmp.path()).unwrap();
        for id in [1, 2, 3, 4] {
            // Simulates a crash between stage and promote.
            std::mem::forget(outbox.stage(&note(id)).unwrap());
        }
        let (promoted, deleted) = judge_staged(&outbox, |id| id % 2 == 0).unwrap();
        assert_eq!((promoted, deleted), (2, 2));
        assert!(files(&outbox, STAGING).is_empty());
        let mut ids: Vec<u64> = outbox
            .list()
            .unwrap()
            .into_iter()
            .map(|s| {
                assert_eq!(s.state, EntryState::Pending);
                s.to.trim_start_matches("user")
                    .trim_end_matches("@example.com")
                    .parse()
                    .unwrap()
            })
            .collect();
        ids.sort();
        assert_eq!(ids, vec![2, 4]);
    }

    #[test]
    fn async_style_recovery_and_unreadable_staged_files() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(tmp.path()).unwrap();
        std::mem::forget(outbox.stage(&note(5)).unwrap());
        fs::write(outbox.dir(STAGING).join("garbage.json"), b"{not json").unwrap();
        let staged = outbox.staged_entries().unwrap();
        assert_eq!(staged.len(), 1);
        assert_eq!(staged[0].1, note(5));
        assert_eq!(files(&outbox, DEAD), vec!["garbage.json".to_string()]);
        outbox.promote_path(&staged[0].0).unwrap();
        // Twice is harmless (the request itself may have promoted it meanwhile).
        outbox.promote_path(&staged[0].0).unwrap();
        outbox.delete_path(&staged[0].0).unwrap();
        assert_eq!(files(&outbox, PENDING).len(), 1);
        assert!(outbox
            .promote_path(Path::new("/etc/passwd"))
            .is_err_and(|e| e.kind() == io::ErrorKind::InvalidInput));
    }

    #[test]
    fn promote_survives_a_concurrent_recovery() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(tmp.path()).unwrap();
        // Another process starting up deletes the entry because our commit is not visible yet.
        let staged = outbox.stage(&note(8)).unwrap();
        assert_eq!(judge_staged(&outbox, |_| false).unwrap(), (0, 1));
        staged.promote().unwrap();
        assert_eq!(files(&outbox, PENDING).len(), 1);

        // ...or promotes it because the commit is visible: no second copy.
        let staged = outbox.stage(&note(9)).unwrap();
        assert_eq!(judge_staged(&outbox, |_| true).unwrap(), (1, 0));
        staged.promote().unwrap();
        assert_eq!(files(&outbox, PENDING).len(), 2);
    }

    #[test]
    fn concurrent_claims_never_overlap() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let outbox = Outbox::open(&root).unwrap();
        const N: u64 = 200;
        for i in 0..N {
            outbox.stage(&note(i)).unwrap().promote().unwrap();
        }
        let now = unix_now();
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                // A separate handle per thread, as separate processes would have.
                let outbox = Outbox::open(&root).unwrap();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut got = Vec::new();
                    while let Some(c) = outbox.claim_next(now).unwrap() {
                        got.push(c.notification().conversation_id);
                        c.delivered().unwrap();
                    }
                    got
                })
            })
            .collect();
        let mut seen = HashSet::new();
        let mut total = 0;
        for h in handles {
            for id in h.join().unwrap() {
                total += 1;
                assert!(seen.insert(id), "conversation {id} claimed twice");
            }
        }
        assert_eq!(total, N as usize);
        assert!(files(&outbox, PENDING).is_empty() && files(&outbox, SENDING).is_empty());
    }

    #[test]
    fn failures_back_off_then_dead_letter() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(tmp.path()).unwrap();
        outbox.stage(&note(1)).unwrap().promote().unwrap();
        let mut now = unix_now();
        let max = 4;
        let mut delays = Vec::new();
        for attempt in 1..max {
            let c = outbox.claim_next(now).unwrap().unwrap();
            assert_eq!(c.attempts(), attempt - 1);
            match c
                .failed(
                    "421 try later",
                    false,
                    RetryPolicy {
                        max_attempts: max,
                        first_backoff_secs: 60,
                        keep_dead: None,
                    },
                    now,
                )
                .unwrap()
            {
                FailOutcome::Retry { next_attempt_at } => {
                    delays.push(next_attempt_at - now);
                    // Not due before its time, found right at it.
                    assert!(outbox.claim_next(next_attempt_at - 1).unwrap().is_none());
                    now = next_attempt_at;
                }
                FailOutcome::Dead => panic!("dead too early"),
            }
            let list = outbox.list().unwrap();
            assert_eq!(list.len(), 1);
            assert_eq!(list[0].state, EntryState::Pending);
            assert_eq!(list[0].attempts, attempt);
            assert_eq!(list[0].last_error.as_deref(), Some("421 try later"));
            assert_eq!(list[0].next_attempt_at, now);
        }
        for (i, d) in delays.iter().enumerate() {
            let base = 60 << i;
            assert!(
                (base..=base + base / 10).contains(d),
                "delay {d} for try {i}"
            );
        }
        let c = outbox.claim_next(now).unwrap().unwrap();
        assert_eq!(
            c.failed(
                "421 again",
                false,
                RetryPolicy {
                    max_attempts: max,
                    first_backoff_secs: 60,
                    keep_dead: None,
                },
                now
            )
            .unwrap(),
            FailOutcome::Dead
        );
        let list = outbox.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].state, EntryState::Dead);
        assert_eq!(list[0].attempts, max);
        assert_eq!(list[0].last_error.as_deref(), Some("421 again"));
        for dir in [PENDING, SENDING] {
            assert_eq!(all_files(&outbox, dir), 0);
        }
    }

    #[test]
    fn backoff_is_capped_at_one_hour_plus_jitter() {
        for attempts in [7, 8, 20, 1000, u32::MAX] {
            let d = backoff_secs(attempts, 60);
            assert!((3600..=3960).contains(&d), "{attempts} → {d}");
        }
        assert!((60..=66).contains(&backoff_secs(1, 60)));
        assert!((1920..=2112).contains(&backoff_secs(6, 60)));
    }

    #[test]
    fn permanent_failure_is_dead_at_once_then_retry_and_purge() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(tmp.path()).unwrap();
        for i in 0..3 {
            outbox.stage(&note(i)).unwrap().promote().unwrap();
        }
        let now = unix_now();
        for _ in 0..3 {
            let c = outbox.claim_next(now).unwrap().unwrap();
            assert_eq!(
                c.failed(
                    "554 rejected",
                    true,
                    RetryPolicy {
                        max_attempts: 20,
                        first_backoff_secs: 60,
                        keep_dead: None,
                    },
                    now
                )
                .unwrap(),
                FailOutcome::Dead
            );
        }
        assert_eq!(files(&outbox, DEAD).len(), 3);
        assert!(outbox.claim_next(now + 10_000).unwrap().is_none());

        assert_eq!(outbox.retry_dead().unwrap(), 3);
        let list = outbox.list().unwrap();
        assert_eq!(list.len(), 3);
        for s in &list {
            assert_eq!(s.state, EntryState::Pending);
            assert_eq!(s.attempts, 0);
            assert!(s.next_attempt_at <= unix_now());
        }

        // Dead again, then purged.
        let now = unix_now();
        while let Some(c) = outbox.claim_next(now).unwrap() {
            c.failed(
                "554 rejected",
                true,
                RetryPolicy {
                    max_attempts: 20,
                    first_backoff_secs: 60,
                    keep_dead: None,
                },
                now,
            )
            .unwrap();
        }
        assert_eq!(outbox.purge_dead().unwrap(), 3);
        assert!(outbox.list().unwrap().is_empty());
        assert_eq!(outbox.retry_dead().unwrap(), 0);
    }

    #[test]
    fn stale_claims_return_to_pending() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(tmp.path()).unwrap();
        outbox.stage(&note(1)).unwrap().promote().unwrap();
        let now = unix_now();
        let claimed = outbox.claim_next(now).unwrap().unwrap();
        // A worker that dies mid-delivery.
        std::mem::forget(claimed);
        assert_eq!(
            outbox
                .return_stale_claims(Duration::from_secs(600))
                .unwrap(),
            0
        );
        assert!(outbox.claim_next(now).unwrap().is_none());
        fs::write(outbox.dir(PENDING).join(".tmp-leftover"), b"x").unwrap();
        assert_eq!(outbox.return_stale_claims(Duration::ZERO).unwrap(), 1);
        assert_eq!(all_files(&outbox, PENDING), 1, "temp file cleaned up");
        let again = outbox.claim_next(now).unwrap().unwrap();
        assert_eq!(again.notification(), &note(1));
        again.delivered().unwrap();
    }

    #[test]
    fn unreadable_pending_entry_goes_dead_and_is_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(tmp.path()).unwrap();
        fs::write(
            outbox.dir(PENDING).join("000000000001-broken.json"),
            b"\x00\x01",
        )
        .unwrap();
        outbox.stage(&note(3)).unwrap().promote().unwrap();
        let c = outbox.claim_next(unix_now()).unwrap().unwrap();
        assert_eq!(c.notification(), &note(3));
        let list = outbox.list().unwrap();
        let broken = list.iter().find(|s| s.state == EntryState::Dead).unwrap();
        assert!(broken
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("unreadable entry"));
        assert_eq!(outbox.retry_dead().unwrap(), 0);
        assert_eq!(outbox.purge_dead().unwrap(), 1);
    }

    #[test]
    fn staging_stops_at_the_size_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(tmp.path()).unwrap().with_limit(2_000);
        let mut staged = Vec::new();
        let err = loop {
            match outbox.stage(&note(staged.len() as u64)) {
                Ok(s) => staged.push(s),
                Err(e) => break e,
            }
            assert!(staged.len() < 100, "the cap never applied");
        };
        assert!(
            err.to_string().contains("SHOPCHAT_OUTBOX_MAX_BYTES"),
            "{err}"
        );
        assert!(outbox.usage().unwrap() <= 2_000);
        assert!(!staged.is_empty(), "mail fits below the cap");
        // Delivered (deleted) mail frees room once the size is measured again.
        for s in staged {
            s.discard().unwrap();
        }
        *outbox.usage.lock().unwrap() = None;
        assert!(outbox.stage(&note(1)).is_ok());
    }

    #[test]
    fn dead_entries_expire() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(tmp.path()).unwrap();
        fs::write(outbox.dir(DEAD).join("000000000001-a.json"), b"{}").unwrap();
        assert_eq!(outbox.expire_dead(Duration::from_secs(3600)).unwrap(), 0);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(outbox.expire_dead(Duration::from_millis(10)).unwrap(), 1);
        assert!(files(&outbox, DEAD).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn mail_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(tmp.path().join("outbox")).unwrap();
        let staged = outbox.stage(&note(1)).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&staged.path()), 0o600);
        assert_eq!(mode(&outbox.dir(PENDING)), 0o700);
        staged.promote().unwrap();
        let pending = entry_names(&outbox.dir(PENDING)).unwrap();
        assert_eq!(mode(&outbox.dir(PENDING).join(&pending[0])), 0o600);
    }
}

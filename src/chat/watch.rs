//! The message watcher behind long-poll (COMPAT §5.4 step 4) and the
//! "nothing new" fast path of get-new-messages (§11.1).
//!
//! Messages are written by shopchat *and* by the Laravel shop (its web chat),
//! so the only reliable source is the table itself. While clients poll, a
//! background task scans `messages` by primary key for rows newer than the
//! last scan (an index range scan, cheap at any table size) and
//! - wakes the long-poll waiters of the conversations that got a message;
//! - keeps what polls have learned current: "conversation C has no message
//!   above id L, verified at time T" moves up to the newest id a scan sees.
//!
//! A poll may be answered "nothing new" from that knowledge only when it is
//! fresh: verified against the database within [`REVERIFY`], and a scan that
//! *started after* the verification finished within [`STALENESS`]. Ids are
//! allocated before commit, so a scan rescans a trailing window of ids
//! ([`RESCAN`]) to see rows that committed late; anything later still is
//! caught by the periodic re-verification. A client that keeps polling
//! therefore never misses a message; it may see it up to [`STALENESS`] late
//! (or [`REVERIFY`] in the pathological long-transaction case).
//!
//! The first scan reads only the end of the table, and forgets what was
//! learned from statements that began before it ended. The watcher idles a
//! minute after the last poll; when polls come back after it has not scanned
//! for a rescan window, it starts over that way rather than reading what was
//! written meanwhile.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::MySqlPool;

use crate::ids::UserId;
use crate::sync::LockUnpoisoned;
use tokio::sync::{watch, Notify};

/// Longest age of the scan that vouches for a "nothing new" answer (§11.1: 250 ms).
pub const STALENESS: Duration = Duration::from_millis(250);
/// A learned "nothing above L" is re-checked against the database this often.
pub const REVERIFY: Duration = Duration::from_secs(60);
/// Ids seen within this time are scanned again (rows committed out of id order).
const RESCAN: Duration = Duration::from_secs(10);
/// Scan period while anyone polls.
const PERIOD: Duration = Duration::from_millis(100);
/// Without polls for this long the watcher idles (no queries at all).
const IDLE_AFTER: Duration = Duration::from_secs(60);
/// Rows per scan query; more are fetched by the next scan at once.
const BATCH: i64 = 5_000;

struct Known {
    /// No message of the conversation has an id above this…
    above: i64,
    /// …as verified by a database query that finished at this time.
    verified_at: Instant,
    /// The conversation's number of messages, when a statement counted them (`above` is then
    /// its newest message id); the scans keep both current as messages arrive.
    tally: Option<Tally>,
}

struct Tally {
    count: i64,
    /// The newest ids counted (at most [`TALLY_IDS`], oldest first): a rescan that meets one
    /// of them again is not a new message; an id below `above` that is not here is a message
    /// that committed out of id order, which the count may lack — the tally is then dropped.
    ids: VecDeque<i64>,
}

/// Ids a tally remembers; more than a page and than the messages of a conversation within the
/// rescan window, in practice.
const TALLY_IDS: usize = 32;

#[derive(Default)]
struct Inner {
    known: HashMap<i64, Known>,
    waiters: HashMap<i64, Arc<Notify>>,
    /// Highest message id any scan has seen (None before the first scan).
    high: Option<i64>,
    /// (when, high) pairs of recent scans, to pick the rescan start.
    history: VecDeque<(Instant, i64)>,
    /// Where the next scan continues after a batch that hit the limit (catch-up).
    resume_from: Option<i64>,
    /// Start and end of the last complete scan.
    last_scan: Option<(Instant, Instant)>,
    last_poll: Option<Instant>,
    /// Bumped by each first scan: a statement that began before it reports in vain
    /// ([`Watcher::epoch`]).
    epoch: u64,
}

/// How a held long-poll ended ([`Watcher::wait_for`]).
pub enum Waited<T> {
    /// The last look's answer: something found, or the deadline passed.
    Looked(T),
    /// The process is shutting down.
    Released,
    /// The client closed its connection.
    ClientGone,
}

impl Known {
    /// A scan saw message `id` of this conversation: whether the knowledge still holds (updated).
    fn saw(&mut self, id: i64) -> bool {
        let Some(tally) = self.tally.as_mut() else {
            // "Nothing above L" and a scan saw M above it: as of that scan nothing is above M
            // (later commits are the later scans' to see, as for any knowledge). A message
            // below M committed out of order changes nothing: polls at M or above never ask
            // for it, and polls below M go to the database.
            self.above = self.above.max(id);
            return true;
        };
        if id > self.above {
            // A new message: one more, and the newest.
            tally.count += 1;
            tally.ids.push_back(id);
            if tally.ids.len() > TALLY_IDS {
                tally.ids.pop_front();
            }
            self.above = id;
            return true;
        }
        // Seen before (the rescan window), or committed out of order and maybe not counted.
        tally.ids.contains(&id)
    }
}

impl Inner {
    /// Polls came back after the watcher idled ([`IDLE_AFTER`] without one). When it has not
    /// scanned for a whole rescan window ([`RESCAN`]) meanwhile, it starts over as a first
    /// scan. Why: catching up read what was written meanwhile (the shop's web chat writes while
    /// no app polls) in batches, and then the rescan window, whose marks were the batches'
    /// ends, sent every scan of the next 10 s back over the whole backlog: after a benchmark's
    /// 360,000 writes, 33,442 statements read 4.8 million rows during 12 s of polls, and the
    /// fast path rarely engaged meanwhile (bench/run.sh, 2026-12-06). Those rows were of use
    /// to nobody: the knowledge they would have kept current was verified before the idle
    /// minute, so it is due again anyway, and the first scan forgets it
    /// ([`Inner::first_scan_done`]); no long-poll waited (one keeps the watcher awake). Scans
    /// that failed (the database did not answer) are caught up with as before.
    fn resume(&mut self) {
        let paused = self
            .history
            .back()
            .is_some_and(|(at, _)| at.elapsed() >= RESCAN);
        if paused {
            self.high = None;
            self.history.clear();
            self.resume_from = None;
            self.last_scan = None;
        }
    }

    /// Where the next scan starts: after the last batch while catching up, else at the oldest
    /// high-water mark of the rescan window (never above `high`); `None` for a first scan,
    /// which reads the current end of the table.
    fn next_scan_from(&self) -> Option<i64> {
        if let Some(resume) = self.resume_from {
            return Some(resume);
        }
        self.high.map(|high| {
            self.history
                .iter()
                .find(|(at, _)| at.elapsed() < RESCAN)
                .map(|(_, h)| *h)
                .unwrap_or(high)
                .min(high)
        })
    }

    /// A first scan read `high`, the current end of the table: later scans start there. What
    /// was learned from statements that began before this scan ended is forgotten, and what
    /// they report later is ignored (a new [`Watcher::epoch`]): a message committed between
    /// such a statement and the reading of `high` has an id the later scans never read, and
    /// the knowledge would have vouched for "nothing new" until it was due again
    /// ([`REVERIFY`]). Returns the waiters to wake: they look for themselves, as nothing
    /// scanned found their messages.
    ///
    /// Not covered: a row of the shop's whose transaction was still open when `high` was read
    /// and commits after a later verification of its conversation has an id below `high`, so
    /// only the re-verification finds it (as for any commit later than the rescan window).
    /// Starting the rescans below `high` instead would send every older row of a counted
    /// conversation through the scans, which cannot tell it from a late commit, and drop the
    /// counts ([`Known::saw`]).
    fn first_scan_done(&mut self, started: Instant, high: i64, ended: Instant) -> Vec<Arc<Notify>> {
        self.high = Some(high);
        self.history.push_back((started, high));
        self.last_scan = Some((started, ended));
        self.epoch += 1;
        self.known.retain(|_, k| k.verified_at > ended);
        self.waiters.values().cloned().collect()
    }

    /// Whether a repeated verification of what `known` says keeps `known`'s time: it is not due
    /// again yet, and a scan has started since (which vouches for it from then on).
    fn keeps_first_verification(&self, known: &Known) -> bool {
        known.verified_at.elapsed() < REVERIFY
            && self
                .last_scan
                .is_some_and(|(start, _)| start > known.verified_at)
    }

    /// Whether what `known` says still holds, within the staleness of COMPAT §11.1: it was
    /// verified less than [`STALENESS`] ago, or (for up to [`REVERIFY`]) a scan that started
    /// after the verification ended less than [`STALENESS`] ago — that scan saw every message
    /// committed since, and a message above `known.above` would have moved it.
    fn vouches_for(&self, known: &Known) -> bool {
        let age = known.verified_at.elapsed();
        if age < STALENESS {
            return true;
        }
        let Some((scan_start, scan_end)) = self.last_scan else {
            return false;
        };
        age < REVERIFY && scan_start > known.verified_at && scan_end.elapsed() < STALENESS
    }
}

pub struct Watcher {
    inner: Mutex<Inner>,
    waiting: AtomicUsize,
    /// Scan statements run so far (`/metrics`).
    statements: AtomicU64,
    released: Notify,
    /// Set by [`Watcher::release_all`]: waits that start or loop afterwards end at once.
    releasing: AtomicBool,
    /// Held long-polls per user, and the caps (security review M6).
    held: Mutex<HashMap<UserId, usize>>,
    per_user: usize,
    max_held: usize,
}

impl Default for Watcher {
    fn default() -> Self {
        Watcher::new(usize::MAX, usize::MAX)
    }
}

impl Watcher {
    /// A watcher that holds at most `per_user` long-polls of one user and `max_held` in all.
    pub fn new(per_user: usize, max_held: usize) -> Watcher {
        Watcher {
            inner: Mutex::default(),
            waiting: AtomicUsize::new(0),
            statements: AtomicU64::new(0),
            released: Notify::new(),
            releasing: AtomicBool::new(false),
            held: Mutex::default(),
            per_user,
            max_held,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock_unpoisoned()
    }

    /// True when the process can vouch that `conversation` has no message
    /// with an id above `last` (answer without a query).
    pub fn nothing_new(&self, conversation: i64, last: i64) -> bool {
        let mut inner = self.lock();
        inner.last_poll = Some(Instant::now());
        let Some(known) = inner.known.get(&conversation) else {
            return false;
        };
        last >= known.above && inner.vouches_for(known)
    }

    /// A database query just found no message above `last`.
    ///
    /// A conversation polled more often than the watcher scans is verified again by polls that
    /// came before the next scan: such a re-verification of the same cursor keeps the first
    /// one's time, so that the scan that started after it still vouches. (Moving the time
    /// forward on each poll left every scan "before the verification", and the fast path
    /// never engaged on exactly the conversations that are polled most.)
    pub fn verified_nothing_new(&self, conversation: i64, last: i64, epoch: u64) {
        let mut inner = self.lock();
        let now = Instant::now();
        inner.last_poll = Some(now);
        if inner.epoch != epoch {
            return;
        }
        let keep = inner
            .known
            .get(&conversation)
            .is_some_and(|k| k.above == last && inner.keeps_first_verification(k));
        if !keep {
            inner.known.insert(
                conversation,
                Known {
                    above: last,
                    verified_at: now,
                    tally: None,
                },
            );
        }
    }

    /// To be read before a statement whose result is reported with
    /// [`Watcher::verified_nothing_new`] or [`Watcher::counted`]: a first scan in between
    /// makes the report count for nothing ([`Inner::first_scan_done`]).
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// The number of messages of `conversation` and its newest message id, when the process
    /// knows them as fresh as the "nothing new" answer may be (§11.1).
    pub fn known_count(&self, conversation: i64) -> Option<(i64, i64)> {
        let inner = self.lock();
        let known = inner.known.get(&conversation)?;
        let tally = known.tally.as_ref()?;
        inner
            .vouches_for(known)
            .then_some((known.above, tally.count))
    }

    /// A statement just counted `count` messages in `conversation`, `newest` first in `ids`
    /// (the ids of the page it read, newest first).
    pub fn counted(&self, conversation: i64, count: i64, ids: &[i64], epoch: u64) {
        let Some(&newest) = ids.first() else {
            return;
        };
        let mut inner = self.lock();
        let now = Instant::now();
        inner.last_poll = Some(now);
        if inner.epoch != epoch {
            return;
        }
        // The same count again before a scan: keep the first time (see verified_nothing_new).
        let keep = inner.known.get(&conversation).is_some_and(|k| {
            k.above == newest
                && k.tally.as_ref().is_some_and(|t| t.count == count)
                && inner.keeps_first_verification(k)
        });
        if !keep {
            inner.known.insert(
                conversation,
                Known {
                    above: newest,
                    verified_at: now,
                    tally: Some(Tally {
                        count,
                        ids: ids.iter().rev().copied().collect(),
                    }),
                },
            );
        }
    }

    /// shopchat committed message `id` in `conversation`: wake the waiters now, and what was
    /// known becomes "nothing above `id`" — the scans vouch for it as they did for what it
    /// replaces, and one that sees a later message moves it on. So the poll that follows a
    /// post (the author's app, asking above its own message) is answered without a statement.
    /// The count is dropped: a message of another writer below `id` may not be scanned yet.
    pub fn message_stored(&self, conversation: i64, id: i64) {
        let notify = {
            let mut inner = self.lock();
            if let Some(k) = inner.known.get_mut(&conversation) {
                k.above = k.above.max(id);
                k.tally = None;
            }
            inner.waiters.get(&conversation).cloned()
        };
        if let Some(n) = notify {
            n.notify_waiters();
        }
    }

    /// The conversation is gone (the shop deleted it): forget what we knew and wake its
    /// waiters, whose next query answers the 404 it has become (§11.1).
    pub fn conversation_gone(&self, conversation: i64) {
        let notify = {
            let mut inner = self.lock();
            inner.known.remove(&conversation);
            inner.waiters.get(&conversation).cloned()
        };
        if let Some(n) = notify {
            n.notify_waiters();
        }
    }

    /// The notifier of a conversation's long-poll waiters.
    pub fn subscribe(&self, conversation: i64) -> Arc<Notify> {
        let mut inner = self.lock();
        inner.last_poll = Some(Instant::now());
        inner.waiters.entry(conversation).or_default().clone()
    }

    /// A place for one more held long-poll of `user`, counted for as long as the guard lives;
    /// `None` when the user or the process already holds as many as allowed (the request is then
    /// answered at once, like one without `wait`: security review M6).
    pub fn waiter(self: &Arc<Self>, user: UserId) -> Option<WaiterGuard> {
        let mut held = self.held.lock_unpoisoned();
        let mine = held.entry(user).or_default();
        if *mine >= self.per_user || self.waiting.load(Ordering::Relaxed) >= self.max_held {
            if *mine == 0 {
                held.remove(&user);
            }
            return None;
        }
        *mine += 1;
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Some(WaiterGuard(self.clone(), user))
    }

    /// Conversations with a known "nothing above L", and with a waiters' notifier (`/metrics`).
    pub fn sizes(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.known.len(), inner.waiters.len())
    }

    /// Scan statements run so far.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Long-poll requests currently held.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A held long-poll (§5.4): runs `look` until it finds something (`.0` true) or
    /// `deadline` passes, looking again each time a message is stored in `conversation`, and
    /// returns its last answer. Each look is registered for wake-ups *before* it runs, so a
    /// message stored while it runs wakes the next one. A graceful shutdown
    /// ([`Watcher::release_all`]) or `client_gone` ends the wait without a last look.
    pub async fn wait_for<T, E, Fut>(
        &self,
        conversation: i64,
        deadline: tokio::time::Instant,
        client_gone: impl Future<Output = ()>,
        mut look: impl FnMut() -> Fut,
    ) -> Result<Waited<T>, E>
    where
        Fut: Future<Output = Result<(bool, T), E>>,
    {
        tokio::pin!(client_gone);
        loop {
            let notify = self.subscribe(conversation);
            let arrived = notify.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            // Registered before the look, and the flag read after: a release that comes while
            // the look runs is not lost (`notify_waiters` wakes only registered futures).
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.releasing.load(Ordering::SeqCst) {
                return Ok(Waited::Released);
            }
            let (found, answer) = look().await?;
            if found || tokio::time::Instant::now() >= deadline {
                return Ok(Waited::Looked(answer));
            }
            tokio::select! {
                _ = &mut arrived => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = &mut released => return Ok(Waited::Released),
                _ = &mut client_gone => return Ok(Waited::ClientGone),
            }
        }
    }

    /// Ends every long-poll wait now, and every one that would start later (graceful
    /// shutdown): they answer with what the database has.
    pub fn release_all(&self) {
        self.releasing.store(true, Ordering::SeqCst);
        self.released.notify_waiters();
    }

    /// Forgets knowledge too old to vouch for anything (called when the process is idle).
    pub fn forget_stale(&self) {
        let mut inner = self.lock();
        inner
            .known
            .retain(|_, k| k.verified_at.elapsed() < REVERIFY);
        inner.known.shrink_to_fit();
        inner.waiters.retain(|_, n| Arc::strong_count(n) > 1);
        inner.waiters.shrink_to_fit();
    }

    /// Forgets every "nothing above L": the next poll of each conversation asks the database
    /// (called when the process is idle).
    pub fn forget_knowledge(&self) {
        self.lock().known = HashMap::new();
    }

    /// The background scan loop; returns when `shutdown` becomes true.
    pub async fn run(self: Arc<Self>, pool: MySqlPool, mut shutdown: watch::Receiver<bool>) {
        let mut was_active = false;
        loop {
            if *shutdown.borrow() {
                self.release_all();
                return;
            }
            // Awake while polls come in, and while a long-poll is held (its wait may be set
            // longer than the idle time: SHOPCHAT_LONG_POLL_MAX_SECONDS).
            let active = self.waiting() > 0
                || self
                    .lock()
                    .last_poll
                    .is_some_and(|t| t.elapsed() < IDLE_AFTER);
            if active && !was_active {
                self.lock().resume();
            }
            was_active = active;
            if active {
                if let Err(e) = self.scan(&pool).await {
                    tracing::debug!(error = %e, "message watcher scan failed");
                }
                if self.lock().resume_from.is_some() {
                    continue; // catching up: the next batch at once
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(PERIOD) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Counts a scan statement once it has run, not before: the count is what `/metrics` reports
    /// and what the tests subtract from the database's own count. A statement that failed counts
    /// too, also one that never reached the server (no connection).
    fn count_statement<T>(&self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn scan(&self, pool: &MySqlPool) -> Result<(), sqlx::Error> {
        let started = Instant::now();
        let from = self.lock().next_scan_from();
        let Some(from) = from else {
            // First scan: start at the current end of the table.
            let high: Result<i64, _> =
                sqlx::query_scalar("SELECT CAST(COALESCE(MAX(id), 0) AS SIGNED) FROM messages")
                    .fetch_one(pool)
                    .await;
            let high = self.count_statement(high)?;
            let wake = self.lock().first_scan_done(started, high, Instant::now());
            for n in wake {
                n.notify_waiters();
            }
            return Ok(());
        };
        let rows: Result<Vec<(i64, i64)>, _> = sqlx::query_as(crate::chat::sql::WATCH_SCAN)
            .bind(from)
            .bind(BATCH)
            .fetch_all(pool)
            .await;
        let rows = self.count_statement(rows)?;
        let complete = (rows.len() as i64) < BATCH;
        let mut wake = Vec::new();
        {
            let mut inner = self.lock();
            for (id, conversation) in &rows {
                if let Some(k) = inner.known.get_mut(conversation) {
                    if !k.saw(*id) {
                        inner.known.remove(conversation);
                    }
                }
                if let Some(n) = inner.waiters.get(conversation) {
                    wake.push(n.clone());
                }
            }
            let high = rows
                .last()
                .map(|r| r.0)
                .unwrap_or(from)
                .max(inner.high.unwrap_or(0));
            inner.high = Some(high);
            inner.history.push_back((started, high));
            while inner
                .history
                .front()
                .is_some_and(|(at, _)| at.elapsed() > RESCAN * 2)
            {
                inner.history.pop_front();
            }
            // A batch that hit the limit has not seen everything: it vouches for
            // nothing, and the next scan continues right after it.
            if complete {
                inner.last_scan = Some((started, Instant::now()));
                inner.resume_from = None;
            } else {
                inner.resume_from = rows.last().map(|r| r.0);
            }
            // Forget conversations nobody waits for and nobody polled lately.
            if inner.known.len() > 100_000 {
                inner
                    .known
                    .retain(|_, k| k.verified_at.elapsed() < REVERIFY);
            }
            inner.waiters.retain(|_, n| Arc::strong_count(n) > 1);
        }
        for n in wake {
            n.notify_waiters();
        }
        Ok(())
    }
}

pub struct WaiterGuard(Arc<Watcher>, UserId);

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        let mut held = self.0.held.lock_unpoisoned();
        if let Some(n) = held.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.1);
            }
        }
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ages the verification of `conversation` by `by` (as if it happened that long ago).
    fn age(w: &Watcher, conversation: i64, by: Duration) {
        let mut inner = w.lock();
        let k = inner.known.get_mut(&conversation).unwrap();
        k.verified_at -= by;
    }

    #[test]
    fn knowledge_needs_a_fresh_verification_or_a_later_fresh_scan() {
        let w = Watcher::default();
        assert!(!w.nothing_new(1, 10), "nothing known");
        w.verified_nothing_new(1, 10, w.epoch());
        assert!(w.nothing_new(1, 10), "the verification itself is fresh");
        age(&w, 1, STALENESS);
        assert!(!w.nothing_new(1, 10), "no scan since the verification");
        let t = Instant::now();
        w.lock().last_scan = Some((t, t));
        assert!(w.nothing_new(1, 10));
        assert!(w.nothing_new(1, 12), "a higher cursor is implied");
        assert!(!w.nothing_new(1, 9), "a lower cursor is not");
        assert!(!w.nothing_new(2, 10), "other conversation");
        w.message_stored(1, 11);
        assert!(
            !w.nothing_new(1, 10),
            "cursors below a stored message go to the database"
        );
        assert!(w.nothing_new(1, 11), "and not those at it");
        w.conversation_gone(1);
        assert!(
            !w.nothing_new(1, 11),
            "a deleted conversation is asked again"
        );
    }

    #[test]
    fn a_first_scan_forgets_what_was_learned_before_it_ended() {
        // The poll that starts the watcher verifies before the first scan reads the end of
        // the table: a message committed in between is below that end, where no later scan
        // reads; that verification must not be vouched for by the later scans, nor one whose
        // statement began before the first scan and reports after it.
        let w = Watcher::default();
        w.verified_nothing_new(1, 10, w.epoch());
        let late = w.epoch();
        let waiter = w.subscribe(2);
        let woken = w
            .lock()
            .first_scan_done(Instant::now(), 5_000, Instant::now());
        assert_eq!(woken.len(), 1, "the waiters look for themselves");
        assert!(Arc::ptr_eq(&woken[0], &waiter));
        assert!(!w.nothing_new(1, 10), "forgotten");
        w.verified_nothing_new(1, 10, late);
        w.counted(1, 3, &[10, 9, 8], late);
        assert!(
            !w.nothing_new(1, 10),
            "a statement from before reports in vain"
        );
        assert!(w.known_count(1).is_none());
        // Verified after the first scan, vouched for by the next one.
        w.verified_nothing_new(1, 10, w.epoch());
        age(&w, 1, STALENESS);
        let t = Instant::now();
        w.lock().last_scan = Some((t, t));
        assert!(w.nothing_new(1, 10));
        assert_eq!(
            w.lock().next_scan_from(),
            Some(5_000),
            "the rescan window starts at the end read"
        );
    }

    #[test]
    fn a_watcher_that_idled_for_a_rescan_window_starts_over() {
        let w = Watcher::default();
        {
            let mut inner = w.lock();
            let long_ago = Instant::now() - RESCAN;
            inner.high = Some(700);
            inner.history.push_back((long_ago, 700));
            inner.last_scan = Some((long_ago, long_ago));
            assert_eq!(inner.next_scan_from(), Some(700), "idle: nothing changes");
            inner.resume();
            assert_eq!(
                inner.next_scan_from(),
                None,
                "polls again: a first scan, at the end of the table"
            );
            assert!(inner.history.is_empty() && inner.high.is_none() && inner.last_scan.is_none());
        }
        let w = Watcher::default();
        let mut inner = w.lock();
        let recent = Instant::now() - RESCAN / 2;
        inner.high = Some(900);
        inner.history.push_back((recent, 800));
        inner.history.push_back((Instant::now(), 900));
        inner.resume();
        assert_eq!(
            inner.next_scan_from(),
            Some(800),
            "a short pause: the rescan window's oldest mark"
        );
        inner.resume_from = Some(850);
        assert_eq!(inner.next_scan_from(), Some(850), "catching up continues");
    }

    #[tokio::test]
    async fn a_release_during_a_look_is_not_lost() {
        // Graceful shutdown released the waiters while this one was asking the database: it
        // must not wait on for its whole wait (the shutdown timeout would cut it off unanswered).
        let w = Arc::new(Watcher::default());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let during_look = w.clone();
        let waited = tokio::time::timeout(
            Duration::from_secs(5),
            w.wait_for(1, deadline, std::future::pending::<()>(), || {
                during_look.release_all();
                async { Ok::<_, ()>((false, ())) }
            }),
        )
        .await;
        assert!(matches!(waited, Ok(Ok(Waited::Released))));
        // And a wait that starts after the release ends at once.
        let waited = tokio::time::timeout(
            Duration::from_secs(5),
            w.wait_for(2, deadline, std::future::pending::<()>(), || async {
                Ok::<_, ()>((false, ()))
            }),
        )
        .await;
        assert!(matches!(waited, Ok(Ok(Waited::Released))));
    }

    #[test]
    fn stale_scans_vouch_for_nothing() {
        let w = Watcher::default();
        w.verified_nothing_new(1, 10, w.epoch());
        age(&w, 1, STALENESS);
        let t = Instant::now();
        w.lock().last_scan = Some((t, t - STALENESS));
        assert!(!w.nothing_new(1, 10));
    }

    #[test]
    fn re_verifying_a_hot_conversation_keeps_the_first_verification() {
        // Polls faster than the scans: each one that came before the scan verified again. The
        // scan that started after the first verification must still vouch afterwards.
        let w = Watcher::default();
        w.verified_nothing_new(1, 10, w.epoch());
        age(&w, 1, STALENESS);
        let first = w.lock().known[&1].verified_at;
        let t = Instant::now();
        w.lock().last_scan = Some((t, t));
        w.verified_nothing_new(1, 10, w.epoch());
        assert_eq!(w.lock().known[&1].verified_at, first, "kept");
        assert!(w.nothing_new(1, 10));
        // Another cursor is new knowledge, verified now.
        w.verified_nothing_new(1, 11, w.epoch());
        assert!(w.lock().known[&1].verified_at > first);
        // So is the same cursor once the first verification is due again.
        age(&w, 1, REVERIFY);
        w.verified_nothing_new(1, 11, w.epoch());
        assert!(w.lock().known[&1].verified_at.elapsed() < STALENESS);
    }

    #[test]
    fn scans_keep_a_count_current_and_drop_it_when_unsure() {
        let w = Watcher::default();
        w.counted(1, 40, &[50, 49, 47], w.epoch());
        assert_eq!(w.known_count(1), Some((50, 40)));
        let mut inner = w.lock();
        let k = inner.known.get_mut(&1).unwrap();
        assert!(k.saw(51), "a new message");
        assert!(k.saw(51), "the rescan meets it again");
        assert!(k.saw(49), "counted by the statement");
        assert_eq!((k.above, k.tally.as_ref().unwrap().count), (51, 41));
        assert!(!k.saw(48), "committed out of order: maybe not counted");
        drop(inner);
        // "Nothing above L" knowledge has no count; a higher id moves L up to it.
        w.verified_nothing_new(2, 30, w.epoch());
        assert_eq!(w.known_count(2), None);
        let mut inner = w.lock();
        let k = inner.known.get_mut(&2).unwrap();
        assert!(k.saw(29) && k.saw(31) && k.saw(30));
        assert_eq!(k.above, 31);
        drop(inner);
        // shopchat's own post keeps the knowledge at its id, without a count.
        w.counted(3, 7, &[70, 69], w.epoch());
        w.message_stored(3, 72);
        assert_eq!(
            w.known_count(3),
            None,
            "71 may be another writer's, not scanned yet"
        );
        assert_eq!(w.lock().known[&3].above, 72);
    }

    #[test]
    fn waiters_are_counted_and_capped() {
        let w = Arc::new(Watcher::new(2, 3));
        let a = w.waiter(UserId(5)).unwrap();
        let b = w.waiter(UserId(5)).unwrap();
        assert_eq!(w.waiting(), 2);
        assert!(w.waiter(UserId(5)).is_none(), "two per user");
        let c = w.waiter(UserId(6)).unwrap();
        assert!(w.waiter(UserId(7)).is_none(), "three in all");
        drop(a);
        assert!(w.waiter(UserId(5)).is_some(), "a place freed");
        drop((b, c));
        assert_eq!(w.waiting(), 0);
        assert!(w.held.lock().unwrap().is_empty());
    }
}

//! apptraffic: an open-loop simulation of the shop's app users against a running shopchat.
//!
//!   apptraffic --base http://127.0.0.1:PORT --pid SHOPCHAT_PID --pairs PAIRS.tsv --users N \
//!              [--seconds 60] [--warmup 15] [--arrivals 5] [--connections 1024] [--leaky 10] \
//!              [--db-url mysql://root@127.0.0.1:PORT/DB] [--db-pid MARIADBD_PID] [--system-key KEY]
//!
//! Users arrive (open the chat screen for the first time) at random times spread evenly over the
//! first `--arrivals` seconds, as a shop's traffic builds up; the measured part starts after
//! `--warmup`, which must leave the last arrivals a poll period. `--arrivals 5` makes every user
//! open the screen within one poll period: the cold-start herd, not a steady state.
//!
//! What one simulated user does (the real Flutter app, ../shared/reviews/real-client-review):
//! - opens the chat screen: the conversation list, then page 1 of its conversation;
//! - polls `get-new-messages/{conversation}/{newest seen}` every 5 s, for as long as the screen
//!   is open (here: the whole run), with its own cursor;
//! - writes a message about every 2 minutes (exponential gaps), which the other party's polls
//!   must show: two users share each conversation (its sender and its receiver);
//! - reopens the screen about every 5 minutes (list and page 1 again);
//! - `--leaky` percent of the users have 2–4 leaked pollers: screens the app never closed, each
//!   polling the same conversation every 5 s with its own cursor.
//!
//! Open loop: every request has an intended send time fixed in advance (a user polls at t0,
//! t0+5 s, …, whatever the answers' latency), and its latency is measured from that time, so a
//! slow server shows up as latency instead of as fewer requests (no coordinated omission).
//! Requests go out over `--connections` keep-alive connections; a request waiting for a free
//! connection is waiting, and counted so.
//!
//! PAIRS.tsv has two rows per conversation, its sender then its receiver:
//! `token_id  user_id  conversation_id  newest_message_id  0` (bench/sql/clients.sql format).
//!
//! Output: one line "BENCH_JSON {…}" with, for the measured part (after `--warmup`): requests by
//! kind with p50/p99/max latency, errors, offered and answered rates, messages written and how
//! late the other party saw them (and how many it never saw), shopchat's CPU per request and
//! RSS, and the database's statements per second (`Questions`, when `--db-url` is given); and,
//! to tell why a step was not served, the answers completed per second during the measured part
//! (below the offered rate: a backlog builds up) and the cores used by shopchat, mariadbd
//! (`--db-pid`), this generator, and left idle.

#[path = "../http1.rs"]
mod http1;

#[path = "../procfs.rs"]
mod procfs;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const POLL_EVERY: Duration = Duration::from_secs(5);
const WRITE_EVERY_S: f64 = 120.0;
const REOPEN_EVERY_S: f64 = 300.0;

struct Args {
    base: String,
    pid: u32,
    pairs: String,
    users: usize,
    seconds: u64,
    warmup: u64,
    arrivals: u64,
    connections: usize,
    leaky: u32,
    db_url: Option<String>,
    db_pid: Option<u32>,
    system_key: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        base: String::new(),
        pid: 0,
        pairs: String::new(),
        users: 0,
        seconds: 60,
        warmup: 15,
        arrivals: 5,
        connections: 1024,
        leaky: 10,
        db_url: None,
        db_pid: None,
        system_key: "bench-system-key".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{k}: {e}"));
        match k.as_str() {
            "--base" => a.base = v.trim_start_matches("http://").trim_end_matches('/').into(),
            "--pid" => a.pid = num(&v)? as u32,
            "--pairs" => a.pairs = v,
            "--users" => a.users = num(&v)? as usize,
            "--seconds" => a.seconds = num(&v)?,
            "--warmup" => a.warmup = num(&v)?,
            "--arrivals" => a.arrivals = num(&v)?.max(1),
            "--connections" => a.connections = num(&v)? as usize,
            "--leaky" => a.leaky = num(&v)? as u32,
            "--db-url" => a.db_url = Some(v),
            "--db-pid" => a.db_pid = Some(num(&v)? as u32),
            "--system-key" => a.system_key = v,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.base.is_empty() || a.pid == 0 || a.pairs.is_empty() || a.users == 0 {
        return Err("--base, --pid, --pairs and --users are required".into());
    }
    if a.warmup < a.arrivals + POLL_EVERY.as_secs() {
        return Err(format!(
            "--warmup must cover --arrivals and the last arrivals' first poll period ({} s at least)",
            a.arrivals + POLL_EVERY.as_secs()
        ));
    }
    Ok(a)
}

/// One simulated user: a token and a conversation (shared with the other party).
struct User {
    token: u64,
    conversation: i64,
    /// The newest message id known when the run started.
    newest: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    List,
    Page,
    Poll,
    Write,
}

const KINDS: [Kind; 4] = [Kind::List, Kind::Page, Kind::Poll, Kind::Write];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::List => "conversations",
            Kind::Page => "messages",
            Kind::Poll => "get-new-messages",
            Kind::Write => "insert-message",
        }
    }
}

/// What to send, when, for whom. `poller` indexes the user's pollers (screens).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    due: Instant,
    kind: Kind,
    user: usize,
    poller: usize,
}

/// Shared state of the run.
struct Run {
    users: Vec<User>,
    /// Each user's pollers' cursors (the first is the open screen; more are leaked ones).
    cursors: Vec<Mutex<Vec<i64>>>,
    /// Messages written and not yet seen by the other party: id → (writer, written at).
    unseen: Mutex<HashMap<i64, (usize, Instant)>>,
    /// (message id, user) of messages a poll or page returned before the answer to their write
    /// was handled (under load the other party's poll can be answered first): no miss.
    /// Locked after `unseen`.
    seen_early: Mutex<HashSet<(i64, usize)>>,
    stats: Mutex<Stats>,
    measure_from: Instant,
    /// Answers (and failures) received so far, whenever their request was due.
    completed: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Stats {
    latencies: HashMap<Kind, Vec<u32>>,
    errors: HashMap<String, u64>,
    visible_after: Vec<u32>,
    written: u64,
}

impl Run {
    fn record(&self, e: &Event, started: Instant, result: Result<(), String>) {
        self.completed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if e.due < self.measure_from {
            return;
        }
        let micros = started.saturating_duration_since(e.due) + started.elapsed();
        let micros = u32::try_from(micros.as_micros()).unwrap_or(u32::MAX);
        let mut s = self.stats.lock().unwrap();
        s.latencies.entry(e.kind).or_default().push(micros);
        if let Err(why) = result {
            *s.errors
                .entry(format!("{}: {why}", e.kind.name()))
                .or_default() += 1;
        }
    }
}

fn load_users(path: &str, n: usize) -> Vec<User> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let users: Vec<User> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Some(User {
                token: f.first()?.parse().ok()?,
                conversation: f.get(2)?.parse().ok()?,
                newest: f.get(3)?.parse().unwrap_or(0),
            })
        })
        .take(n)
        .collect();
    assert!(
        users.len() == n,
        "{path} holds {} users, {n} asked for",
        users.len()
    );
    users
}

/// The other party of `user` (rows come in pairs: sender, receiver).
fn partner(user: usize) -> usize {
    user ^ 1
}

fn request(run: &Run, e: &Event, system_key: &str, rng: &mut impl Rng) -> Vec<u8> {
    let u = &run.users[e.user];
    let (line, body) = match e.kind {
        Kind::List => ("GET /api/v2/chat/conversations".to_string(), String::new()),
        Kind::Page => (
            format!("GET /api/v2/chat/messages/{}", u.conversation),
            String::new(),
        ),
        Kind::Poll => {
            let cursor = run.cursors[e.user].lock().unwrap()[e.poller];
            (
                format!(
                    "GET /api/v2/chat/get-new-messages/{}/{cursor}",
                    u.conversation
                ),
                String::new(),
            )
        }
        Kind::Write => (
            "POST /api/v2/chat/insert-message".to_string(),
            format!(
                "conversation_id={}&user_id={}&message=app+traffic+{}",
                u.conversation,
                e.user,
                rng.gen::<u32>()
            ),
        ),
    };
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/x-www-form-urlencoded\r\n"
    };
    format!(
        "{line} HTTP/1.1\r\nHost: shop.test\r\nAccept: application/json\r\nSystem-Key: {system_key}\r\n\
         Authorization: Bearer {t}|bench-{t}\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
        body.len(),
        t = u.token,
    )
    .into_bytes()
}

/// The message ids of an answer's `data` (a page envelope).
fn data_ids(body: &[u8]) -> Result<Vec<i64>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))?;
    let data = v["data"].as_array().ok_or("no data array")?;
    Ok(data.iter().filter_map(|m| m["id"].as_i64()).collect())
}

/// Handles an answer: cursors move, written messages are noted, seen ones are timed.
fn absorb(run: &Run, e: &Event, status: u16, body: &[u8]) -> Result<(), String> {
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    let ids = data_ids(body)?;
    match e.kind {
        Kind::Poll | Kind::Page => {
            if let Some(&newest) = ids.iter().max() {
                if e.kind == Kind::Poll {
                    let mut cursors = run.cursors[e.user].lock().unwrap();
                    let c = &mut cursors[e.poller];
                    *c = (*c).max(newest);
                }
                // The other party's messages, now seen by this user.
                let now = Instant::now();
                let mut unseen = run.unseen.lock().unwrap();
                for id in ids {
                    let theirs = unseen
                        .get(&id)
                        .is_some_and(|(writer, _)| partner(*writer) == e.user);
                    if !theirs {
                        if !unseen.contains_key(&id) {
                            run.seen_early.lock().unwrap().insert((id, e.user));
                        }
                        continue;
                    }
                    if let Some((_, written)) = unseen.remove(&id) {
                        if written >= run.measure_from {
                            let ms = now.duration_since(written).as_millis() as u32;
                            run.stats.lock().unwrap().visible_after.push(ms);
                        }
                    }
                }
            }
        }
        Kind::Write => {
            // The answer's item is the new message (one-item page, §5.3).
            let id = *ids.first().ok_or("no message in the answer")?;
            // Only the other party's polls count as seeing it; the writer's screen has it.
            let now = Instant::now();
            let mut unseen = run.unseen.lock().unwrap();
            let early = run
                .seen_early
                .lock()
                .unwrap()
                .remove(&(id, partner(e.user)));
            let mut stats = run.stats.lock().unwrap();
            stats.written += 1;
            if early {
                if now >= run.measure_from {
                    stats.visible_after.push(0);
                }
            } else {
                unseen.insert(id, (e.user, now));
            }
        }
        Kind::List => {}
    }
    Ok(())
}

fn exp_gap(rng: &mut impl Rng, mean_s: f64) -> Duration {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    Duration::from_secs_f64(-mean_s * u.ln())
}

/// What comes after `e` for its user (the open loop's schedule).
fn next_of(e: &Event, rng: &mut impl Rng) -> Option<Event> {
    match e.kind {
        Kind::Poll => Some(Event {
            due: e.due + POLL_EVERY,
            ..*e
        }),
        Kind::Write => Some(Event {
            due: e.due + exp_gap(rng, WRITE_EVERY_S),
            ..*e
        }),
        // A screen open: the list, then page 1; the next open later.
        Kind::List => Some(Event {
            due: e.due + Duration::from_millis(50),
            kind: Kind::Page,
            ..*e
        }),
        Kind::Page => Some(Event {
            due: e.due + exp_gap(rng, REOPEN_EVERY_S),
            kind: Kind::List,
            ..*e
        }),
    }
}

async fn questions(db_url: &Option<String>) -> Option<u64> {
    use sqlx::Connection;
    let mut conn = sqlx::MySqlConnection::connect(db_url.as_deref()?)
        .await
        .ok()?;
    let row: (String, String) = sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Questions'")
        .fetch_one(&mut conn)
        .await
        .ok()?;
    row.1.parse().ok()
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("apptraffic: {e}");
            std::process::exit(2);
        }
    };
    // One thread: the generator must not take both cores from the server it measures.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(simulate(a));
}

async fn simulate(a: Args) {
    let users = load_users(&a.pairs, a.users);
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let start = Instant::now() + Duration::from_millis(200);
    let mut queue: BinaryHeap<Reverse<Event>> = BinaryHeap::new();
    let mut cursors = Vec::with_capacity(users.len());
    for (i, u) in users.iter().enumerate() {
        let leaked = if rng.gen_range(0..100) < a.leaky {
            rng.gen_range(2..=4)
        } else {
            0
        };
        cursors.push(Mutex::new(vec![u.newest; 1 + leaked]));
        // Users arrive (open the chat screen) spread evenly over `--arrivals`, then poll from
        // there.
        let opened = start + Duration::from_secs(a.arrivals).mul_f64(rng.gen::<f64>());
        queue.push(Reverse(Event {
            due: opened,
            kind: Kind::List,
            user: i,
            poller: 0,
        }));
        for poller in 0..=leaked {
            queue.push(Reverse(Event {
                due: opened + Duration::from_millis(100) + POLL_EVERY.mul_f64(rng.gen::<f64>()),
                kind: Kind::Poll,
                user: i,
                poller,
            }));
        }
        queue.push(Reverse(Event {
            due: opened + exp_gap(&mut rng, WRITE_EVERY_S),
            kind: Kind::Write,
            user: i,
            poller: 0,
        }));
    }
    let run = Arc::new(Run {
        users,
        cursors,
        unseen: Mutex::default(),
        seen_early: Mutex::default(),
        stats: Mutex::default(),
        measure_from: start + Duration::from_secs(a.warmup),
        completed: Default::default(),
    });
    let end = start + Duration::from_secs(a.warmup + a.seconds);

    // Connections: each takes the next due request from one channel.
    let (tx, rx) = async_channel();
    let mut workers = Vec::new();
    for _ in 0..a.connections {
        let (rx, run, base, key) = (
            rx.clone(),
            run.clone(),
            a.base.clone(),
            a.system_key.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::from_entropy();
            let mut conn: Option<TcpStream> = None;
            let mut buf = Vec::new();
            while let Some(e) = recv(&rx).await {
                let started = Instant::now();
                let req = request(&run, &e, &key, &mut rng);
                if conn.is_none() {
                    conn = TcpStream::connect(&base).await.ok();
                    if let Some(c) = &conn {
                        let _ = c.set_nodelay(true);
                    }
                }
                let result = match conn.as_mut() {
                    None => Err("connect failed".to_string()),
                    Some(s) => match s.write_all(&req).await {
                        Ok(()) => match http1::read_answer(s, &mut buf).await {
                            Ok((status, body)) => absorb(&run, &e, status, &buf[body]),
                            Err(err) => Err(format!("read: {err}")),
                        },
                        Err(err) => Err(format!("write: {err}")),
                    },
                };
                if result
                    .as_ref()
                    .is_err_and(|w| w.starts_with("read") || w.starts_with("write"))
                {
                    conn = None;
                }
                run.record(&e, started, result);
            }
        }));
    }

    // The schedule: each event goes out at its time; its successor is queued at once.
    let (mut cpu0, mut q0, mut t0) = (0, None, start);
    let mut box0 = Cores::default();
    let mut completed0 = 0;
    let mut measuring = false;
    let mut offered = 0u64;
    while let Some(Reverse(e)) = queue.pop() {
        if e.due >= end {
            break;
        }
        if !measuring && e.due >= run.measure_from {
            measuring = true;
            cpu0 = procfs::cpu_ticks(a.pid);
            box0 = Cores::now(a.db_pid);
            completed0 = run.completed.load(std::sync::atomic::Ordering::Relaxed);
            q0 = questions(&a.db_url).await;
            t0 = Instant::now();
        }
        tokio::time::sleep_until(e.due.into()).await;
        if measuring {
            offered += 1;
        }
        if let Some(next) = next_of(&e, &mut rng) {
            queue.push(Reverse(next));
        }
        tx.send(e);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = procfs::cpu_ticks(a.pid);
    let cores = Cores::now(a.db_pid).since(&box0, elapsed);
    let served =
        (run.completed.load(std::sync::atomic::Ordering::Relaxed) - completed0) as f64 / elapsed;
    let q1 = questions(&a.db_url).await;
    tx.close();
    for w in workers {
        let _ = w.await;
    }

    let stats = run.stats.lock().unwrap();
    let ticks_per_s = 100.0; // USER_HZ on Linux
    let cpu_s = (cpu1.saturating_sub(cpu0)) as f64 / ticks_per_s;
    let answered: u64 = stats.latencies.values().map(|v| v.len() as u64).sum();
    let errors: u64 = stats.errors.values().sum();
    let mut kinds = Vec::new();
    let mut worst_p99 = 0;
    for k in KINDS {
        let mut v = stats.latencies.get(&k).cloned().unwrap_or_default();
        v.sort_unstable();
        let p99 = percentile(&v, 0.99);
        worst_p99 = worst_p99.max(p99);
        kinds.push(format!(
            "\"{}\":{{\"requests\":{},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
            k.name(),
            v.len(),
            f64::from(percentile(&v, 0.5)) / 1000.0,
            f64::from(p99) / 1000.0,
            f64::from(v.last().copied().unwrap_or(0)) / 1000.0
        ));
    }
    let mut visible = stats.visible_after.clone();
    visible.sort_unstable();
    // Written during the measured part more than 10 s before its end, and never seen.
    let missed = run
        .unseen
        .lock()
        .unwrap()
        .values()
        .filter(|(_, w)| *w >= run.measure_from && w.elapsed() > Duration::from_secs(10))
        .count();
    let error_kinds: Vec<String> = stats
        .errors
        .iter()
        .map(|(k, v)| format!("\"{}\":{v}", k.replace('"', "'")))
        .collect();
    let statements = match (q0, q1) {
        (Some(a), Some(b)) => format!("{:.0}", (b - a) as f64 / elapsed),
        _ => "null".into(),
    };
    println!(
        "BENCH_JSON {{\"users\":{},\"seconds\":{:.1},\"offered_per_s\":{:.0},\"answered_per_s\":{:.0},\
         \"errors\":{errors},\"error_kinds\":{{{}}},\"worst_p99_ms\":{:.2},\"kinds\":{{{}}},\
         \"written\":{},\"visible_p50_ms\":{},\"visible_p99_ms\":{},\"missed\":{missed},\
         \"cpu_s\":{cpu_s:.2},\"cpu_us_per_request\":{:.1},\"cpu_us_per_user_s\":{:.2},\
         \"rss_kb\":{},\"statements_per_s\":{statements},\"served_per_s\":{served:.0},\
         \"cores\":{{\"shopchat\":{:.2},\"mariadbd\":{},\"generator\":{:.2},\"idle\":{:.2}}}}}",
        a.users,
        elapsed,
        offered as f64 / elapsed,
        answered as f64 / elapsed,
        error_kinds.join(","),
        f64::from(worst_p99) / 1000.0,
        kinds.join(","),
        stats.written,
        percentile(&visible, 0.5),
        percentile(&visible, 0.99),
        cpu_s * 1e6 / answered.max(1) as f64,
        cpu_s * 1e6 / (a.users as f64 * elapsed),
        procfs::rss_kb(a.pid),
        cpu_s / elapsed,
        cores.mariadbd.map_or("null".into(), |c| format!("{c:.2}")),
        cores.generator,
        cores.idle,
    );
}

/// CPU ticks of the other processes sharing the machine with shopchat, and its idle ticks.
#[derive(Default)]
struct Cores {
    mariadbd: Option<u64>,
    generator: u64,
    idle: u64,
}

/// Cores used (or left idle) over a span: ticks / USER_HZ / seconds.
struct CoresUsed {
    mariadbd: Option<f64>,
    generator: f64,
    idle: f64,
}

impl Cores {
    fn now(db_pid: Option<u32>) -> Cores {
        Cores {
            mariadbd: db_pid.map(procfs::cpu_ticks),
            generator: procfs::cpu_ticks(std::process::id()),
            idle: procfs::idle_ticks(),
        }
    }

    fn since(&self, before: &Cores, seconds: f64) -> CoresUsed {
        let per_s = |a: u64, b: u64| a.saturating_sub(b) as f64 / 100.0 / seconds;
        CoresUsed {
            mariadbd: self.mariadbd.zip(before.mariadbd).map(|(a, b)| per_s(a, b)),
            generator: per_s(self.generator, before.generator),
            idle: per_s(self.idle, before.idle),
        }
    }
}

/// A multi-consumer queue of due events (tokio's mpsc has one consumer): the events, the
/// wake-up of idle connections, and "no more events".
type Shared = Arc<(
    Mutex<std::collections::VecDeque<Event>>,
    tokio::sync::Notify,
    std::sync::atomic::AtomicBool,
)>;

struct Sender(Shared);

fn async_channel() -> (Sender, Shared) {
    let shared: Shared = Arc::new(Default::default());
    (Sender(shared.clone()), shared)
}

impl Sender {
    fn send(&self, e: Event) {
        self.0 .0.lock().unwrap().push_back(e);
        self.0 .1.notify_one();
    }

    fn close(&self) {
        self.0 .2.store(true, std::sync::atomic::Ordering::SeqCst);
        self.0 .1.notify_waiters();
    }
}

async fn recv(rx: &Shared) -> Option<Event> {
    loop {
        // Registered before looking, so a send or close in between is not missed.
        let notified = rx.1.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(e) = rx.0.lock().unwrap().pop_front() {
            return Some(e);
        }
        if rx.2.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        notified.await;
    }
}

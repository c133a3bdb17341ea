//! dbceiling: the database's own ceiling for the statements of one shopchat request.
//!
//! It issues, on N connections in a tight loop, the same statements (same SQL text, same binds,
//! prepared like sqlx does in shopchat) that shopchat runs for one request of an endpoint, and
//! reports requests/s, latency percentiles and the time of each statement. The benchmark shows
//! shopchat's throughput as a fraction of this number.
//!
//!   dbceiling --url mysql://root@127.0.0.1:PORT/DB --scenario NAME --clients FILE.tsv \
//!             --concurrency N --duration SECONDS [--max-statement-seconds S]
//!
//! Scenarios (`full` = every statement of a request whose per-request caches miss: the token
//! lookup of `src/auth/tokens.rs` and the participants lookup of `src/chat/repo.rs`; `hot` = only
//! what is left when those caches hit). The long-TTL caches of shopchat (translations, settings,
//! uploads: 60 s) and the `last_used_at` touch (once a minute per token, D9) are left out of both.
//!
//!   get-new-messages-full / -hot   token+user, participants, COUNT(after) [+ page when > 0]
//!   messages-full / -hot           token+user, participants, COUNT + page with authors, one statement
//!   conversations-full / -hot      token+user, COUNT + page with receivers and shops, one statement
//!   insert-message-full            token+user, participants, BEGIN, SELECT … FOR UPDATE, INSERT,
//!                                  UPDATE flags, SELECT the new row, COMMIT
//!   create-conversation-full       token+user, product owner, owner, GET_LOCK, BEGIN, D6
//!                                  candidates, INSERT conversation (or lock + reuse), INSERT
//!                                  message, COMMIT, RELEASE_LOCK, owner's shop
//!
//! The chat reads come from the service's own `src/chat/sql.rs` (a `#[path]` module); the other statements
//! are copies of the service's: when one of those changes in src/, change it here.
//!
//! Output: one line "BENCH_JSON {…}" on stdout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{Connection, Executor, MySql};

/// shopchat's session setup (src/startup.rs).
const SQL_MODE: &str = "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'";

// src/auth/tokens.rs: the token with its user, one id (shopchat batches concurrent lookups into
// `t.id IN (?, ?, …)`; the ceiling sends the one-id form).
const TOKEN_WITH_USER: &str = "SELECT t.id, t.token, t.tokenable_type, t.tokenable_id, \
     CAST(t.created_at AS CHAR) AS created_at, CAST(t.expires_at AS CHAR) AS expires_at, \
     u.user_type, u.name, u.email, CAST(u.banned AS SIGNED) AS banned \
     FROM personal_access_tokens t LEFT JOIN users u ON u.id = t.tokenable_id \
     WHERE t.id IN (?)";
// The chat statements: shopchat's own file, so the text cannot drift (PARTICIPANTS, COUNT_*,
// MESSAGE_PAGE*, CONVERSATION_PAGE, LOCK_CONVERSATION, CLAIM_FOR_POST, REUSE_TITLED, the
// inserts, the viewed flags, PRODUCT_OWNER).
#[allow(dead_code)]
#[path = "../../../../src/chat/sql.rs"]
mod sql;
use sql::*;
// src/chat/locks.rs
const GET_LOCK: &str = "SELECT GET_LOCK(?, ?)";
const RELEASE_LOCK: &str = "SELECT RELEASE_LOCK(?)";

#[derive(Clone, Debug)]
struct Client {
    token_id: u64,
    user_id: u64,
    conversation_id: i64,
    last_id: i64,
    product_id: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    GetNewMessages { full: bool },
    Messages { full: bool },
    Conversations { full: bool },
    InsertMessage,
    CreateConversation,
}

impl Scenario {
    fn parse(s: &str) -> Option<Scenario> {
        Some(match s {
            "get-new-messages-full" => Scenario::GetNewMessages { full: true },
            "get-new-messages-hot" => Scenario::GetNewMessages { full: false },
            "messages-full" => Scenario::Messages { full: true },
            "messages-hot" => Scenario::Messages { full: false },
            "conversations-full" => Scenario::Conversations { full: true },
            "conversations-hot" => Scenario::Conversations { full: false },
            "insert-message-full" => Scenario::InsertMessage,
            "create-conversation-full" => Scenario::CreateConversation,
            _ => return None,
        })
    }
}

/// Latencies in microseconds: of whole requests and of each statement.
#[derive(Default)]
struct Stats {
    requests: Vec<u32>,
    statements: BTreeMap<&'static str, Vec<u32>>,
    errors: u64,
    first_error: Option<String>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.requests.extend(other.requests);
        for (k, v) in other.statements {
            self.statements.entry(k).or_default().extend(v);
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Times one statement under a short name.
macro_rules! timed {
    ($stats:expr, $name:expr, $fut:expr) => {{
        let started = Instant::now();
        let out = $fut.await;
        $stats
            .statements
            .entry($name)
            .or_default()
            .push(micros(started.elapsed()));
        out
    }};
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

fn now_wall() -> String {
    // The value only has to be a valid TIMESTAMP; shopchat writes APP_TIMEZONE wall time.
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(",")
}

/// The token lookup of `src/auth/tokens.rs` (token and user in one statement).
async fn authenticate(
    conn: &mut MySqlConnection,
    c: &Client,
    st: &mut Stats,
) -> Result<(), sqlx::Error> {
    let rows = timed!(
        st,
        "token_with_user",
        sqlx::query(TOKEN_WITH_USER)
            .bind(c.token_id)
            .fetch_all(&mut *conn)
    )?;
    if rows.is_empty() {
        return Err(sqlx::Error::RowNotFound);
    }
    Ok(())
}

async fn participants(
    conn: &mut MySqlConnection,
    id: i64,
    st: &mut Stats,
) -> Result<(i64, i64), sqlx::Error> {
    let row: Option<(i64, i64)> = timed!(
        st,
        "participants",
        sqlx::query_as(PARTICIPANTS)
            .bind(id)
            .fetch_optional(&mut *conn)
    )?;
    row.ok_or(sqlx::Error::RowNotFound)
}

async fn message_page(
    conn: &mut MySqlConnection,
    c: &Client,
    after: Option<&str>,
    st: &mut Stats,
) -> Result<usize, sqlx::Error> {
    // A poll (after = Some) counts first and reads the page only when something is new
    // (src/chat/messages.rs page_of); message_page(): the total and the page in one statement.
    if let Some(a) = after {
        let (_, _, total): (i64, i64, i64) = timed!(
            st,
            "count_messages_after",
            sqlx::query_as(COUNT_MESSAGES_AFTER)
                .bind(c.conversation_id)
                .bind(a)
                .bind(c.conversation_id)
                .fetch_one(&mut *conn)
        )?;
        if total == 0 {
            return Ok(0);
        }
    }
    let (text, name) = match after {
        Some(_) => (MESSAGE_PAGE_AFTER, "message_page_after"),
        None => (MESSAGE_PAGE, "message_page"),
    };
    let mut q = sqlx::query(text).bind(c.conversation_id);
    if let Some(a) = after {
        q = q.bind(a);
    }
    q = q.bind(c.conversation_id);
    if let Some(a) = after {
        q = q.bind(a);
    }
    let rows = timed!(st, name, q.bind(0i64).fetch_all(&mut *conn))?;
    Ok(rows.len())
}

async fn conversation_page(
    conn: &mut MySqlConnection,
    c: &Client,
    st: &mut Stats,
) -> Result<(), sqlx::Error> {
    timed!(
        st,
        "conversation_page",
        sqlx::query(CONVERSATION_PAGE)
            .bind(c.user_id)
            .bind(c.user_id)
            .bind(0i64)
            .fetch_all(&mut *conn)
    )?;
    Ok(())
}

async fn shops_in(
    conn: &mut MySqlConnection,
    sellers: &[i64],
    st: &mut Stats,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "SELECT id, user_id, name, logo FROM shops WHERE user_id IN ({}) ORDER BY id",
        placeholders(sellers.len())
    );
    let mut q = sqlx::query_as::<MySql, (i64, i64, Option<String>, Option<String>)>(&sql);
    for id in sellers {
        q = q.bind(*id);
    }
    timed!(st, "shops_in", q.fetch_all(&mut *conn))?;
    Ok(())
}

async fn insert_message(
    conn: &mut MySqlConnection,
    c: &Client,
    st: &mut Stats,
) -> Result<(), sqlx::Error> {
    authenticate(conn, c, st).await?;
    participants(conn, c.conversation_id, st).await?;
    let now = now_wall();
    let message = format!("Bench message from user {}", c.user_id);
    let mut tx = timed!(st, "begin", conn.begin())?;
    // The claim locks the row and sets the flags in one statement (src/chat/insert_message.rs).
    timed!(
        st,
        "claim_for_post",
        sqlx::query(CLAIM_FOR_POST)
            .bind(c.user_id)
            .bind(c.user_id)
            .bind(&now)
            .bind(c.user_id)
            .bind(c.user_id)
            .bind(c.conversation_id)
            .bind(c.user_id)
            .bind(c.user_id)
            .execute(&mut *tx)
    )?;
    timed!(
        st,
        "insert_message",
        sqlx::query(INSERT_MESSAGE)
            .bind(c.conversation_id)
            .bind(c.user_id)
            .bind(&message)
            .bind(&now)
            .bind(&now)
            .execute(&mut *tx)
    )?;
    // No re-read: shopchat answers with the row it wrote (src/chat/insert_message.rs).
    timed!(st, "commit", tx.commit())?;
    Ok(())
}

async fn create_conversation(
    conn: &mut MySqlConnection,
    c: &Client,
    n: u64,
    st: &mut Stats,
) -> Result<(), sqlx::Error> {
    authenticate(conn, c, st).await?;
    let owner: Option<i64> = timed!(
        st,
        "product_owner",
        sqlx::query_scalar(PRODUCT_OWNER)
            .bind(c.product_id)
            .fetch_optional(&mut *conn)
    )?;
    let owner = owner.ok_or(sqlx::Error::RowNotFound)?;
    let sql = format!(
        "SELECT CAST(id AS SIGNED), user_type, name, email FROM users WHERE id IN ({})",
        placeholders(1)
    );
    let owner_row: Vec<(i64, String, String, Option<String>)> = timed!(
        st,
        "owner",
        sqlx::query_as(&sql).bind(owner).fetch_all(&mut *conn)
    )?;
    let is_admin = owner_row.first().is_some_and(|u| u.1 == "admin");
    let lock = format!("shopchat:cc:{}:{}", c.user_id, owner);
    let got: Option<i64> = timed!(
        st,
        "get_lock",
        sqlx::query_scalar(GET_LOCK)
            .bind(&lock)
            .bind(10u32)
            .fetch_one(&mut *conn)
    )?;
    if got != Some(1) {
        return Err(sqlx::Error::Protocol(format!("GET_LOCK({lock}) = {got:?}")));
    }
    let now = now_wall();
    let title = format!("Bench ceiling question {}", n % 3);
    let message = format!("Is product {} in stock?", c.product_id);
    let result: Result<(), sqlx::Error> = async {
        let mut tx = timed!(st, "begin", conn.begin())?;
        let candidates: Vec<(i64, Option<String>)> = timed!(
            st,
            "candidates",
            sqlx::query_as(REUSE_TITLED)
                .bind(c.user_id)
                .bind(owner)
                .bind(&title)
                .bind(&title)
                .fetch_all(&mut *tx)
        )?;
        let id = match candidates
            .into_iter()
            .find(|(_, t)| t.as_deref() == Some(title.as_str()))
        {
            Some((id, _)) => {
                timed!(
                    st,
                    "lock_conversation",
                    sqlx::query(LOCK_CONVERSATION).bind(id).execute(&mut *tx)
                )?;
                id
            }
            None => timed!(
                st,
                "insert_conversation",
                sqlx::query(INSERT_CONVERSATION)
                    .bind(c.user_id)
                    .bind(owner)
                    .bind(&title)
                    .bind(&now)
                    .bind(&now)
                    .execute(&mut *tx)
            )?
            .last_insert_id() as i64,
        };
        timed!(
            st,
            "insert_message",
            sqlx::query(INSERT_MESSAGE)
                .bind(id)
                .bind(c.user_id)
                .bind(&message)
                .bind(&now)
                .bind(&now)
                .execute(&mut *tx)
        )?;
        timed!(st, "commit", tx.commit())?;
        Ok(())
    }
    .await;
    timed!(
        st,
        "release_lock",
        sqlx::query(RELEASE_LOCK).bind(&lock).execute(&mut *conn)
    )?;
    result?;
    if !is_admin {
        shops_in(conn, &[owner], st).await?;
    }
    Ok(())
}

async fn one_request(
    conn: &mut MySqlConnection,
    scenario: Scenario,
    c: &Client,
    n: u64,
    st: &mut Stats,
) -> Result<(), sqlx::Error> {
    match scenario {
        Scenario::GetNewMessages { full } => {
            if full {
                authenticate(conn, c, st).await?;
                participants(conn, c.conversation_id, st).await?;
            }
            let after = c.last_id.to_string();
            message_page(conn, c, Some(&after), st).await?;
        }
        Scenario::Messages { full } => {
            if full {
                authenticate(conn, c, st).await?;
                participants(conn, c.conversation_id, st).await?;
            }
            message_page(conn, c, None, st).await?;
        }
        Scenario::Conversations { full } => {
            if full {
                authenticate(conn, c, st).await?;
            }
            conversation_page(conn, c, st).await?;
        }
        Scenario::InsertMessage => insert_message(conn, c, st).await?,
        Scenario::CreateConversation => create_conversation(conn, c, n, st).await?,
    }
    Ok(())
}

async fn connect(
    options: &MySqlConnectOptions,
    max_statement_seconds: f64,
) -> Result<MySqlConnection, sqlx::Error> {
    let mut conn = MySqlConnection::connect_with(options).await?;
    conn.execute(SQL_MODE).await?;
    // A statement still running long after the run ended (a full scan at 256 connections on a
    // table without the index) is aborted by the server, so a run ends in bounded time; it counts
    // as an error (MariaDB's max_statement_time, error 1969).
    conn.execute(format!("SET SESSION max_statement_time = {max_statement_seconds:.3}").as_str())
        .await?;
    Ok(conn)
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    options: MySqlConnectOptions,
    max_statement_seconds: f64,
    scenario: Scenario,
    clients: std::sync::Arc<Vec<Client>>,
    start_at: usize,
    connected: std::sync::Arc<tokio::sync::Barrier>,
    go: std::sync::Arc<tokio::sync::Barrier>,
    deadline: std::sync::Arc<std::sync::OnceLock<Instant>>,
) -> Stats {
    let mut st = Stats::default();
    let mut conn = match connect(&options, max_statement_seconds).await {
        Ok(c) => Some(c),
        Err(e) => {
            st.errors += 1;
            st.first_error = Some(format!("connect: {e}"));
            None
        }
    };
    connected.wait().await;
    go.wait().await;
    let Some(end) = deadline.get().copied() else {
        return st;
    };
    let mut i = start_at;
    let mut n: u64 = 0;
    while Instant::now() < end {
        let c = &clients[i % clients.len()];
        i += 1;
        n += 1;
        let Some(cn) = conn.as_mut() else {
            match connect(&options, max_statement_seconds).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    st.errors += 1;
                    st.first_error.get_or_insert(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            continue;
        };
        let started = Instant::now();
        match one_request(cn, scenario, c, n, &mut st).await {
            Ok(()) => st.requests.push(micros(started.elapsed())),
            Err(e) => {
                st.errors += 1;
                st.first_error.get_or_insert(e.to_string());
                // A broken connection is replaced; a statement error keeps it.
                if matches!(e, sqlx::Error::Io(_) | sqlx::Error::Protocol(_)) {
                    conn = None;
                }
            }
        }
    }
    if let Some(c) = conn {
        let _ = c.close().await;
    }
    st
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn load_clients(path: &str) -> Result<Vec<Client>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 5 {
            continue;
        }
        let num = |s: &str| {
            s.trim()
                .parse::<i64>()
                .map_err(|e| format!("{path}:{}: {e}", n + 1))
        };
        out.push(Client {
            token_id: num(f[0])? as u64,
            user_id: num(f[1])? as u64,
            conversation_id: num(f[2])?,
            last_id: num(f[3])?,
            product_id: num(f[4])?,
        });
    }
    if out.is_empty() {
        return Err(format!("{path}: no client rows"));
    }
    Ok(out)
}

struct Args {
    url: String,
    scenario: Scenario,
    scenario_name: String,
    clients: String,
    concurrency: usize,
    duration: Duration,
    max_statement_seconds: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut url = None;
    let mut scenario = None;
    let mut clients = None;
    let mut concurrency = 1usize;
    let mut duration = Duration::from_secs(5);
    let mut max_statement_seconds = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--url" => url = Some(val()?),
            "--scenario" => scenario = Some(val()?),
            "--clients" => clients = Some(val()?),
            "--concurrency" => {
                concurrency = val()?.parse().map_err(|e| format!("--concurrency: {e}"))?
            }
            "--duration" => {
                duration =
                    Duration::from_secs_f64(val()?.parse().map_err(|e| format!("--duration: {e}"))?)
            }
            "--max-statement-seconds" => {
                max_statement_seconds = Some(
                    val()?
                        .parse::<f64>()
                        .map_err(|e| format!("--max-statement-seconds: {e}"))?,
                )
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let scenario_name = scenario.ok_or("--scenario is required")?;
    Ok(Args {
        url: url.ok_or("--url is required")?,
        scenario: Scenario::parse(&scenario_name)
            .ok_or(format!("unknown scenario {scenario_name}"))?,
        scenario_name,
        clients: clients.ok_or("--clients is required")?,
        concurrency: concurrency.max(1),
        duration,
        // Default: twice the run, at least 10 s.
        max_statement_seconds: max_statement_seconds
            .unwrap_or((2.0 * duration.as_secs_f64()).max(10.0)),
    })
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("dbceiling: {e}");
            }
            eprintln!("usage: dbceiling --url mysql://USER@HOST:PORT/DB --scenario NAME --clients FILE.tsv [--concurrency N] [--duration SECONDS] [--max-statement-seconds S]");
            return std::process::ExitCode::from(2);
        }
    };
    let clients = match load_clients(&args.clients) {
        Ok(c) => std::sync::Arc::new(c),
        Err(e) => {
            eprintln!("dbceiling: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let options: MySqlConnectOptions = match args.url.parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("dbceiling: --url: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // Same client settings as shopchat's pool (src/startup.rs).
    let options = options
        .charset("utf8mb4")
        .collation("utf8mb4_unicode_ci")
        .timezone(None)
        .pipes_as_concat(false)
        .no_engine_substitution(false);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dbceiling: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let (stats, elapsed) = runtime.block_on(async {
        let n = args.concurrency;
        let connected = std::sync::Arc::new(tokio::sync::Barrier::new(n + 1));
        let go = std::sync::Arc::new(tokio::sync::Barrier::new(n + 1));
        let deadline = std::sync::Arc::new(std::sync::OnceLock::new());
        let mut tasks = Vec::with_capacity(n);
        for w in 0..n {
            // Each connection walks its own slice of the client list.
            let start_at = w * clients.len() / n;
            tasks.push(tokio::spawn(worker(
                options.clone(),
                args.max_statement_seconds,
                args.scenario,
                clients.clone(),
                start_at,
                connected.clone(),
                go.clone(),
                deadline.clone(),
            )));
        }
        // Every connection is open before the clock starts.
        connected.wait().await;
        let started = Instant::now();
        let _ = deadline.set(started + args.duration);
        go.wait().await;
        let mut stats = Stats::default();
        for t in tasks {
            if let Ok(s) = t.await {
                stats.merge(s);
            }
        }
        (stats, started.elapsed())
    });
    report(&args, stats, elapsed);
    std::process::ExitCode::SUCCESS
}

fn report(args: &Args, mut stats: Stats, elapsed: Duration) {
    stats.requests.sort_unstable();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut per_statement = Vec::new();
    for (name, v) in stats.statements.iter_mut() {
        v.sort_unstable();
        let sum: u64 = v.iter().map(|&x| u64::from(x)).sum();
        per_statement.push(format!(
            "{{\"name\":\"{name}\",\"count\":{},\"mean_us\":{:.1},\"p50_us\":{},\"p99_us\":{}}}",
            v.len(),
            sum as f64 / v.len().max(1) as f64,
            percentile(v, 50.0),
            percentile(v, 99.0)
        ));
    }
    let first_error = stats
        .first_error
        .as_deref()
        .unwrap_or("")
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    println!(
        "BENCH_JSON {{\"scenario\":\"{}\",\"concurrency\":{},\"requests\":{},\"duration_s\":{:.3},\"rps\":{:.1},\"errors\":{},\"first_error\":\"{}\",\"latency_us\":{{\"p50\":{},\"p99\":{},\"max\":{}}},\"statements\":[{}]}}",
        args.scenario_name,
        args.concurrency,
        stats.requests.len(),
        secs,
        stats.requests.len() as f64 / secs,
        stats.errors,
        first_error,
        percentile(&stats.requests, 50.0),
        percentile(&stats.requests, 99.0),
        stats.requests.last().copied().unwrap_or(0),
        per_statement.join(",")
    );
}

//! longpoll: the long-poll benchmark of issue 8 item 3.
//!
//! 1. Baseline: statements/s MariaDB executes while shopchat is idle (watcher running, no waiter),
//!    and shopchat's RSS.
//! 2. Opens N connections to shopchat, each holding
//!    `GET …/get-new-messages/{cid}/{newest}?wait=W` (a "nothing new" poll that waits), and checks
//!    that none is answered early.
//! 3. While they are held: statements/s again (must not grow with N) and RSS (bounded memory).
//! 4. K inserts, one at a time, each into the conversation of a held waiter — alternately through
//!    shopchat (`insert-message`) and straight into the database (as the Laravel web app would) —
//!    and the time from the insert to the waiter's answer, which must carry the new message.
//!
//!   longpoll --base http://127.0.0.1:PORT --db-url mysql://root@127.0.0.1:PORT/DB \
//!            --clients pollers.tsv --pid SHOPCHAT_PID [--waiters 10000] [--wait 30] \
//!            [--inserts 100] [--hold 10] [--system-key KEY]
//!
//! HTTP/1.1 is spoken by hand (one request per connection, `Connection: close`), so 10,000 open
//! requests cost a socket and a small task each. Output: one line "BENCH_JSON {…}".

#[path = "../procfs.rs"]
mod procfs;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

#[derive(Clone, Debug)]
struct Client {
    token_id: u64,
    user_id: u64,
    conversation_id: i64,
    last_id: i64,
}

struct Args {
    base: String,
    db_url: String,
    clients: String,
    pid: u32,
    waiters: usize,
    /// Long-polls one user may hold (shopchat's SHOPCHAT_LONG_POLL_PER_USER, security review M6):
    /// waiters beyond it would be answered at once by design, so they are not chosen.
    per_user: usize,
    wait: u64,
    inserts: usize,
    hold: Duration,
    system_key: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        base: String::new(),
        db_url: String::new(),
        clients: String::new(),
        pid: 0,
        waiters: 10_000,
        per_user: 4,
        wait: 30,
        inserts: 100,
        hold: Duration::from_secs(10),
        system_key: "bench-system-key".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{k}: {e}"));
        match k.as_str() {
            "--base" => a.base = v.trim_end_matches('/').to_string(),
            "--db-url" => a.db_url = v,
            "--clients" => a.clients = v,
            "--pid" => a.pid = num(&v)? as u32,
            "--waiters" => a.waiters = num(&v)? as usize,
            "--per-user" => a.per_user = num(&v)? as usize,
            "--wait" => a.wait = num(&v)?,
            "--inserts" => a.inserts = num(&v)? as usize,
            "--hold" => a.hold = Duration::from_secs(num(&v)?),
            "--system-key" => a.system_key = v,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.base.is_empty() || a.db_url.is_empty() || a.clients.is_empty() || a.pid == 0 {
        return Err("--base, --db-url, --clients and --pid are required".into());
    }
    Ok(a)
}

fn load_clients(path: &str) -> Result<Vec<Client>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 4 {
            continue;
        }
        let (Ok(t), Ok(u), Ok(c), Ok(l)) = (
            f[0].trim().parse(),
            f[1].trim().parse(),
            f[2].trim().parse(),
            f[3].trim().parse(),
        ) else {
            continue;
        };
        out.push(Client {
            token_id: t,
            user_id: u,
            conversation_id: c,
            last_id: l,
        });
    }
    Ok(out)
}

/// host:port of an http:// base URL.
fn authority(base: &str) -> String {
    base.trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("")
        .to_string()
}

struct Answer {
    at: Instant,
    status: u16,
    body: String,
}

/// Sends one request on a new connection and reads the answer to the end.
async fn exchange(addr: &str, request: Vec<u8>) -> std::io::Result<Answer> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(&request).await?;
    let mut buf = Vec::with_capacity(1024);
    s.read_to_end(&mut buf).await?;
    let at = Instant::now();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok(Answer { at, status, body })
}

fn poll_request(a: &Args, host: &str, c: &Client) -> Vec<u8> {
    format!(
        "GET /api/v2/chat/get-new-messages/{}/{}?wait={} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nSystem-Key: {}\r\nAuthorization: Bearer {}|bench-{}\r\nConnection: close\r\n\r\n",
        c.conversation_id, c.last_id, a.wait, a.system_key, c.token_id, c.token_id
    )
    .into_bytes()
}

fn insert_request(a: &Args, host: &str, c: &Client, text: &str) -> Vec<u8> {
    let body = format!(
        "conversation_id={}&message={}",
        c.conversation_id,
        text.replace(' ', "+")
    );
    format!(
        "POST /api/v2/chat/insert-message HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nSystem-Key: {}\r\nAuthorization: Bearer {}|bench-{}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        a.system_key,
        c.token_id,
        c.token_id,
        body.len()
    )
    .into_bytes()
}

async fn questions(db: &mut MySqlConnection) -> Result<i64, sqlx::Error> {
    let row: (String, String) = sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Questions'")
        .fetch_one(&mut *db)
        .await?;
    Ok(row.1.parse().unwrap_or(0))
}

/// Statements/s the server executed during `window`, less our own two status queries.
async fn statement_rate(db: &mut MySqlConnection, window: Duration) -> Result<f64, sqlx::Error> {
    let a = questions(db).await?;
    tokio::time::sleep(window).await;
    let b = questions(db).await?;
    Ok((b - a - 1).max(0) as f64 / window.as_secs_f64())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "{{\"count\":{},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
        v.len(),
        percentile(&v, 50.0),
        percentile(&v, 99.0),
        v.last().copied().unwrap_or(0.0)
    )
}

async fn run(a: Args) -> Result<String, String> {
    // The bench's pollers are parties of conversations picked by activity: the parties of the
    // longest conversations come back many times. No user holds more than shopchat allows.
    let mut held_by: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let clients: Vec<Client> = load_clients(&a.clients)?
        .into_iter()
        .filter(|c| {
            let n = held_by.entry(c.user_id).or_default();
            *n += 1;
            *n <= a.per_user
        })
        .collect();
    if clients.len() < a.waiters {
        return Err(format!(
            "{} has {} rows, fewer than --waiters {}",
            a.clients,
            clients.len(),
            a.waiters
        ));
    }
    let host = authority(&a.base);
    let options: MySqlConnectOptions = a.db_url.parse().map_err(|e| format!("--db-url: {e}"))?;
    let mut db = MySqlConnection::connect_with(&options)
        .await
        .map_err(|e| e.to_string())?;
    let e = |e: sqlx::Error| e.to_string();

    // 1. Baseline. One ordinary poll first, so the watcher is active as it is in production.
    let first = &clients[0];
    let warm = poll_request(&a, &host, first);
    let warm = String::from_utf8_lossy(&warm).replace(&format!("?wait={}", a.wait), "");
    exchange(&host, warm.into_bytes())
        .await
        .map_err(|e| format!("first poll: {e}"))?;
    let rss_idle = procfs::rss_kb(a.pid);
    let idle_rate = statement_rate(&mut db, a.hold).await.map_err(e)?;

    // 2. N held polls, opened in batches (the listen backlog is finite).
    let started = Instant::now();
    let waiters: Vec<Client> = clients[..a.waiters].to_vec();
    let mut answers = Vec::with_capacity(a.waiters);
    let mut connect_errors = 0usize;
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for chunk in waiters.chunks(500) {
        for c in chunk {
            let (tx, rx) = oneshot::channel::<Answer>();
            answers.push(Some(rx));
            let req = poll_request(&a, &host, c);
            let host = host.clone();
            let errors = errors.clone();
            tokio::spawn(async move {
                match exchange(&host, req).await {
                    Ok(ans) => {
                        let _ = tx.send(ans);
                    }
                    Err(_) => {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_seconds = started.elapsed().as_secs_f64();
    // shopchat authenticates and checks every arrival against the database before it waits:
    // wait until that is done (the statement rate is back near idle, at most 120 s).
    let mut settle_seconds = 0.0;
    let threshold = idle_rate * 2.0 + 50.0;
    for _ in 0..120 {
        let rate = statement_rate(&mut db, Duration::from_secs(1))
            .await
            .map_err(e)?;
        settle_seconds = started.elapsed().as_secs_f64();
        if rate <= threshold {
            break;
        }
    }
    // Early answers (an error, or data that was not new) are counted, not waited for.
    let mut early = 0usize;
    let mut early_sample = String::new();
    for slot in answers.iter_mut() {
        let Some(rx) = slot.as_mut() else { continue };
        if let Ok(ans) = rx.try_recv() {
            *slot = None;
            early += 1;
            if early_sample.is_empty() {
                early_sample = format!(
                    "{} {}",
                    ans.status,
                    ans.body.chars().take(160).collect::<String>()
                );
            }
        }
    }
    connect_errors += errors.load(std::sync::atomic::Ordering::Relaxed);

    // 3. Held: the statement rate must not grow with N; memory stays bounded.
    let held_rate = statement_rate(&mut db, a.hold).await.map_err(e)?;
    let rss_held = procfs::rss_kb(a.pid);

    // 4. Inserts into the conversations of held waiters (one waiter per conversation).
    let mut seen = HashSet::new();
    let mut targets = Vec::new();
    for (i, c) in waiters.iter().enumerate() {
        if targets.len() >= a.inserts {
            break;
        }
        // A conversation whose waiter already got its answer is not a target.
        if answers[i].is_some() && seen.insert(c.conversation_id) {
            targets.push(i);
        }
    }
    let mut via_http = Vec::new();
    let mut via_db = Vec::new();
    let mut wake_errors = 0usize;
    let mut first_wake_error = String::new();
    let (mut wake_timeouts, mut wake_failed, mut wake_wrong) = (0usize, 0usize, 0usize);
    let inserts_started = Instant::now();
    let insert_sql = "INSERT INTO messages (conversation_id, user_id, message, created_at, updated_at) VALUES (?, ?, ?, NOW(), NOW())";
    for (n, &i) in targets.iter().enumerate() {
        let c = &waiters[i];
        let text = format!("long-poll wake {n}");
        let Some(rx) = answers[i].take() else {
            continue;
        };
        let t0 = Instant::now();
        if n % 2 == 0 {
            let req = insert_request(&a, &host, c, &text);
            let host = host.clone();
            tokio::spawn(async move { exchange(&host, req).await });
        } else {
            sqlx::query(insert_sql)
                .bind(c.conversation_id)
                .bind(c.user_id)
                .bind(&text)
                .execute(&mut db)
                .await
                .map_err(e)?;
        }
        match tokio::time::timeout(Duration::from_secs(5), rx).await {
            Ok(Ok(ans)) if ans.status == 200 && ans.body.contains(&text) => {
                let ms = ans.at.saturating_duration_since(t0).as_secs_f64() * 1000.0;
                if n % 2 == 0 {
                    via_http.push(ms);
                } else {
                    via_db.push(ms);
                }
            }
            other => {
                wake_errors += 1;
                match &other {
                    Ok(Ok(ans)) => {
                        wake_wrong += 1;
                        if std::env::var_os("LONGPOLL_DEBUG").is_some() {
                            eprintln!(
                                "wrong answer for insert {n} (conversation {}): {} {}",
                                c.conversation_id,
                                ans.status,
                                ans.body.chars().take(400).collect::<String>()
                            );
                        }
                    }
                    Ok(Err(_)) => wake_failed += 1,
                    Err(_) => {
                        wake_timeouts += 1;
                        if std::env::var_os("LONGPOLL_DEBUG").is_some() {
                            eprintln!(
                                "no answer within 5 s for insert {n} ({}) into conversation {} (waiter {i}, {} s after the waiters were opened)",
                                if n % 2 == 0 { "shopchat" } else { "database" },
                                c.conversation_id,
                                started.elapsed().as_secs()
                            );
                        }
                    }
                }
                if first_wake_error.is_empty() {
                    first_wake_error = match other {
                        Ok(Ok(ans)) => format!(
                            "{} {}",
                            ans.status,
                            ans.body.chars().take(160).collect::<String>()
                        ),
                        Ok(Err(_)) => "the connection failed".into(),
                        Err(_) => "no answer within 5 s".into(),
                    };
                }
            }
        }
    }
    let inserts_seconds = inserts_started.elapsed().as_secs_f64();
    let late_connection_errors = errors.load(std::sync::atomic::Ordering::Relaxed) - connect_errors;
    let _ = db.close().await;
    let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    Ok(format!(
        "BENCH_JSON {{\"waiters\":{},\"wait_s\":{},\"open_seconds\":{:.2},\"connect_errors\":{},\"early_answers\":{},\"early_sample\":\"{}\",\"rss_idle_kb\":{},\"rss_held_kb\":{},\"idle_statements_per_s\":{:.1},\"held_statements_per_s\":{:.1},\"hold_s\":{},\"wake_via_shopchat\":{},\"wake_via_database\":{},\"wake_errors\":{},\"wake_timeouts\":{},\"wake_connection_failed\":{},\"wake_wrong_answer\":{},\"first_wake_error\":\"{}\",\"settle_seconds\":{:.2},\"inserts_seconds\":{:.2},\"late_connection_errors\":{}}}",
        a.waiters,
        a.wait,
        open_seconds,
        connect_errors,
        early,
        escape(&early_sample),
        rss_idle,
        rss_held,
        idle_rate,
        held_rate,
        a.hold.as_secs(),
        summary(via_http),
        summary(via_db),
        wake_errors,
        wake_timeouts,
        wake_failed,
        wake_wrong,
        escape(&first_wake_error),
        settle_seconds,
        inserts_seconds,
        late_connection_errors
    ))
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("longpoll: {e}");
            eprintln!("usage: longpoll --base http://127.0.0.1:PORT --db-url mysql://USER@HOST:PORT/DB --clients FILE.tsv --pid PID [--waiters N] [--wait S] [--inserts K] [--hold S] [--system-key KEY]");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("longpoll: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args));
    // Held connections end with the process (shopchat answers them at their deadline or on close).
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(line) => {
            println!("{line}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("longpoll: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

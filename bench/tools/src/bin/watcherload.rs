//! watcherload: what the message watchers of many shopchat instances cost the shop's database.
//!
//! Each instance's watcher runs one statement every 100 ms while anyone polls it
//! (src/chat/watch.rs): `WATCH_SCAN` from the rows above the oldest high-water mark of the last
//! 10 s (the rescan window, for rows that commit out of id order). This tool plays N such
//! watchers, each on its own connection with the same statement and the same cursor rule, while
//! a writer inserts W messages per second, and measures what a real deployment of N instances
//! would see: scans per second, scan latency, rows per scan, and the CPU of the database server.
//!
//!   watcherload --url mysql://root@127.0.0.1:PORT/DB --instances N --writes-per-second W \
//!               --seconds S [--db-pid PID] [--conversation C]
//!
//! The writer inserts into conversation C (default: one no bench client reads) and deletes what
//! it wrote at the end. Output: one line "BENCH_JSON {…}" on stdout.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{Connection, Executor};

#[path = "../procfs.rs"]
mod procfs;
#[allow(dead_code)]
#[path = "../../../../src/chat/sql.rs"]
mod sql;

const PERIOD: Duration = Duration::from_millis(100);
const RESCAN: Duration = Duration::from_secs(10);
const BATCH: i64 = 5_000;
const MARK: &str = "watcherload";

struct Args {
    url: String,
    instances: usize,
    writes_per_second: u64,
    seconds: u64,
    db_pid: Option<u32>,
    conversation: i64,
}

fn args() -> Args {
    let mut a = Args {
        url: String::new(),
        instances: 1,
        writes_per_second: 0,
        seconds: 10,
        db_pid: None,
        conversation: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value,
            "--instances" => a.instances = value.parse().expect("--instances"),
            "--writes-per-second" => {
                a.writes_per_second = value.parse().expect("--writes-per-second")
            }
            "--seconds" => a.seconds = value.parse().expect("--seconds"),
            "--db-pid" => a.db_pid = Some(value.parse().expect("--db-pid")),
            "--conversation" => a.conversation = value.parse().expect("--conversation"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!a.url.is_empty(), "--url is required");
    a
}

async fn connect(url: &str) -> MySqlConnection {
    let opts: MySqlConnectOptions = url.parse().expect("--url");
    MySqlConnection::connect_with(&opts).await.expect("connect")
}

#[derive(Default)]
struct Totals {
    scans: AtomicU64,
    rows: AtomicU64,
    late_periods: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

/// One instance's watcher: the scan every period, from the rescan window's start.
/// Scans before `measure_from` fill the rescan window and are not counted.
async fn watcher(
    url: String,
    measure_from: Instant,
    until: Instant,
    totals: Arc<Totals>,
    offset: Duration,
) {
    let mut conn = connect(&url).await;
    let mut high: i64 =
        sqlx::query_scalar("SELECT CAST(COALESCE(MAX(id), 0) AS SIGNED) FROM messages")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let mut history: VecDeque<(Instant, i64)> = VecDeque::new();
    history.push_back((Instant::now(), high));
    // Instances are not in step: spread their first scans over one period.
    tokio::time::sleep(offset).await;
    let mut ticker = tokio::time::interval(PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < until {
        ticker.tick().await;
        let from = history
            .iter()
            .find(|(at, _)| at.elapsed() < RESCAN)
            .map_or(high, |(_, h)| *h)
            .min(high);
        let started = Instant::now();
        let rows: Vec<(i64, i64)> = sqlx::query_as(sql::WATCH_SCAN)
            .bind(from)
            .bind(BATCH)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let took = started.elapsed();
        if started >= measure_from && took > PERIOD {
            totals.late_periods.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(last) = rows.last() {
            high = high.max(last.0);
        }
        history.push_back((started, high));
        while history
            .front()
            .is_some_and(|(at, _)| at.elapsed() > RESCAN * 2)
        {
            history.pop_front();
        }
        if started < measure_from {
            continue;
        }
        totals.scans.fetch_add(1, Ordering::Relaxed);
        totals.rows.fetch_add(rows.len() as u64, Ordering::Relaxed);
        totals
            .latencies_us
            .lock()
            .unwrap()
            .push(took.as_micros() as u64);
    }
}

/// Inserts `per_second` messages a second, paced, one statement each (like the web chat).
async fn writer(url: String, per_second: u64, conversation: i64, until: Instant) -> u64 {
    if per_second == 0 {
        return 0;
    }
    let mut conn = connect(&url).await;
    let user: i64 = sqlx::query_scalar("SELECT sender_id FROM conversations WHERE id = ?")
        .bind(conversation)
        .fetch_one(&mut conn)
        .await
        .expect("--conversation must exist");
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut written = 0;
    while Instant::now() < until {
        ticker.tick().await;
        sqlx::query(
            "INSERT INTO messages (conversation_id, user_id, message, created_at, updated_at) \
             VALUES (?, ?, ?, UTC_TIMESTAMP(), UTC_TIMESTAMP())",
        )
        .bind(conversation)
        .bind(user)
        .bind(MARK)
        .execute(&mut conn)
        .await
        .unwrap();
        written += 1;
    }
    written
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let a = args();
    // The first 10 s fill the rescan window (as in a watcher that has run for a while).
    let warmup = RESCAN;
    let started = Instant::now();
    let measure_from = started + warmup;
    let until = measure_from + Duration::from_secs(a.seconds);
    let totals = Arc::new(Totals::default());
    let writes = tokio::spawn(writer(
        a.url.clone(),
        a.writes_per_second,
        a.conversation,
        until,
    ));
    let mut tasks = Vec::new();
    for i in 0..a.instances {
        let offset = PERIOD.mul_f64(i as f64 / a.instances as f64);
        tasks.push(tokio::spawn(watcher(
            a.url.clone(),
            measure_from,
            until,
            totals.clone(),
            offset,
        )));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = a.db_pid.map(procfs::cpu_ticks);
    let measured_from = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = measured_from.elapsed().as_secs_f64();
    let cpu_after = a.db_pid.map(procfs::cpu_ticks);
    let written = writes.await.unwrap();

    // Leave the data set as it was.
    let mut conn = connect(&a.url).await;
    conn.execute(
        sqlx::query("DELETE FROM messages WHERE conversation_id = ? AND message = ?")
            .bind(a.conversation)
            .bind(MARK),
    )
    .await
    .unwrap();

    let scans = totals.scans.load(Ordering::Relaxed);
    let rows = totals.rows.load(Ordering::Relaxed);
    let mut lat = totals.latencies_us.lock().unwrap().clone();
    lat.sort_unstable();
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let db_cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => serde_json::json!((a - b) as f64 / ticks_per_second / elapsed),
        _ => serde_json::Value::Null,
    };
    let out = serde_json::json!({
        "instances": a.instances,
        "writes_per_second": a.writes_per_second,
        "written": written,
        "seconds": elapsed,
        "scans_per_second": scans as f64 / elapsed,
        "rows_per_scan": if scans > 0 { rows as f64 / scans as f64 } else { 0.0 },
        "rows_per_second": rows as f64 / elapsed,
        "scan_p50_us": percentile(&lat, 0.50),
        "scan_p99_us": percentile(&lat, 0.99),
        "late_periods": totals.late_periods.load(Ordering::Relaxed),
        "db_cpu_cores": db_cpu,
    });
    println!("BENCH_JSON {out}");
}

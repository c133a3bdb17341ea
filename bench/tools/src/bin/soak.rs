//! soak: an hour (or any time) of mixed traffic against a running shopchat, with many tokens and
//! many client addresses, watching that nothing grows (security review §4 item 3: a soak test
//! would have exposed the throttle's unbounded table and its "purge only when idle" pattern).
//!
//!   soak --base http://127.0.0.1:PORT --metrics 127.0.0.1:MPORT --pid SHOPCHAT_PID \
//!        --clients-dir DIR [--minutes 60] [--rate 400] [--connections 32] [--sample 30] \
//!        [--out soak.csv] [--system-key KEY]
//!
//! The mix, per request (valid tokens and conversations from the benchmark's client lists in DIR;
//! shopchat must trust 127.0.0.1 as a proxy so that `X-Forwarded-For` names the client):
//! 55 % a "nothing new" poll, 10 % a page of messages, 8 % the conversation list, 2 % a message
//! posted (into conversations no reader polls), 15 % a random bearer token from a random IPv6
//! /64, 10 % no token from a random IPv4 address. Requests are sent at a fixed total rate over
//! keep-alive connections.
//!
//! Every `--sample` seconds: shopchat's RSS and open file descriptors (`/proc`), its cache and
//! table sizes (`shopchat_cache_entries` of `/metrics`), and the answers by status. Output: the
//! samples as CSV (`--out`) and one line "BENCH_JSON {…}" with the first and last samples.

#[path = "../http1.rs"]
mod http1;

#[path = "../procfs.rs"]
mod procfs;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone)]
struct Client {
    token_id: u64,
    conversation_id: i64,
    last_id: i64,
}

struct Args {
    base: String,
    metrics: String,
    pid: u32,
    clients_dir: String,
    minutes: f64,
    rate: u64,
    connections: u64,
    sample: u64,
    out: String,
    system_key: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        base: String::new(),
        metrics: String::new(),
        pid: 0,
        clients_dir: String::new(),
        minutes: 60.0,
        rate: 400,
        connections: 32,
        sample: 30,
        out: "soak.csv".into(),
        system_key: "bench-system-key".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{k}: {e}"));
        match k.as_str() {
            "--base" => a.base = v.trim_start_matches("http://").trim_end_matches('/').into(),
            "--metrics" => a.metrics = v,
            "--pid" => a.pid = num(&v)? as u32,
            "--clients-dir" => a.clients_dir = v,
            "--minutes" => a.minutes = v.parse().map_err(|e| format!("{k}: {e}"))?,
            "--rate" => a.rate = num(&v)?,
            "--connections" => a.connections = num(&v)?,
            "--sample" => a.sample = num(&v)?,
            "--out" => a.out = v,
            "--system-key" => a.system_key = v,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.base.is_empty() || a.metrics.is_empty() || a.pid == 0 || a.clients_dir.is_empty() {
        return Err("--base, --metrics, --pid and --clients-dir are required".into());
    }
    Ok(a)
}

fn load(path: &str) -> Vec<Client> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Some(Client {
                token_id: f.first()?.parse().ok()?,
                conversation_id: f.get(2)?.parse().ok()?,
                last_id: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

/// One request's head (and body), as an app or an attacker would send it.
fn request(rng: &mut impl Rng, sets: &Sets, system_key: &str) -> Vec<u8> {
    let common =
        format!("Host: shop.test\r\nAccept: application/json\r\nSystem-Key: {system_key}\r\n");
    let bearer = |c: &Client| {
        format!(
            "Authorization: Bearer {}|bench-{}\r\n",
            c.token_id, c.token_id
        )
    };
    let pick = |v: &[Client], rng: &mut dyn rand::RngCore| v[rng.gen_range(0..v.len())].clone();
    let roll = rng.gen_range(0..100);
    let (line, headers, body) = match roll {
        0..=54 => {
            let c = pick(&sets.pollers, rng);
            (
                format!(
                    "GET /api/v2/chat/get-new-messages/{}/{}",
                    c.conversation_id, c.last_id
                ),
                bearer(&c),
                String::new(),
            )
        }
        55..=64 => {
            let c = pick(&sets.pollers, rng);
            (
                format!("GET /api/v2/chat/messages/{}", c.conversation_id),
                bearer(&c),
                String::new(),
            )
        }
        65..=72 => {
            let c = pick(&sets.listers, rng);
            (
                "GET /api/v2/chat/conversations".to_string(),
                bearer(&c),
                String::new(),
            )
        }
        73..=74 => {
            let c = pick(&sets.writers, rng);
            (
                "POST /api/v2/chat/insert-message".to_string(),
                format!(
                    "{}Content-Type: application/x-www-form-urlencoded\r\n",
                    bearer(&c)
                ),
                format!(
                    "conversation_id={}&message=soak+{}",
                    c.conversation_id,
                    rng.gen::<u32>()
                ),
            )
        }
        75..=89 => {
            let v6: u128 = (0x2001_0db8u128 << 96) | (u128::from(rng.gen::<u64>()) << 32) | 1;
            (
                "GET /api/v2/chat/conversations".to_string(),
                format!(
                    "Authorization: Bearer {}|{:032x}\r\nX-Forwarded-For: {}\r\n",
                    rng.gen_range(1_000_000..u32::MAX),
                    rng.gen::<u128>(),
                    std::net::Ipv6Addr::from(v6)
                ),
                String::new(),
            )
        }
        _ => (
            "GET /api/v2/chat/conversations".to_string(),
            format!(
                "X-Forwarded-For: {}\r\n",
                std::net::Ipv4Addr::from(rng.gen::<u32>() | 0x0a00_0000)
            ),
            String::new(),
        ),
    };
    format!(
        "{line} HTTP/1.1\r\n{common}{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

struct Sets {
    pollers: Vec<Client>,
    listers: Vec<Client>,
    writers: Vec<Client>,
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

async fn cache_sizes(metrics: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(mut s) = TcpStream::connect(metrics).await else {
        return out;
    };
    let _ = s
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text).await;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("shopchat_cache_entries{cache=\"") {
            if let Some((name, value)) = rest.split_once("\"} ") {
                out.insert(name.to_string(), value.trim().parse().unwrap_or(0));
            }
        }
    }
    out
}

#[tokio::main]
async fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    };
    let sets = Arc::new(Sets {
        pollers: load(&format!("{}/pollers.tsv", a.clients_dir)),
        listers: load(&format!("{}/listers.tsv", a.clients_dir)),
        writers: load(&format!("{}/writers.tsv", a.clients_dir)),
    });
    let statuses: Arc<Mutex<BTreeMap<u16, u64>>> = Arc::default();
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(a.minutes * 60.0);
    let per_conn = Duration::from_secs_f64(a.connections as f64 / a.rate as f64);
    let mut tasks = Vec::new();
    for i in 0..a.connections {
        let (sets, statuses, sent, errors) =
            (sets.clone(), statuses.clone(), sent.clone(), errors.clone());
        let (base, key) = (a.base.clone(), a.system_key.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::from_entropy();
            // Spread the connections' schedules over one period.
            let mut next = Instant::now() + per_conn.mul_f64(i as f64 / 32.0);
            let mut conn: Option<TcpStream> = None;
            let mut buf = Vec::new();
            while Instant::now() < deadline {
                tokio::time::sleep_until(next.into()).await;
                next += per_conn;
                let req = request(&mut rng, &sets, &key);
                if conn.is_none() {
                    conn = TcpStream::connect(&base).await.ok();
                }
                let Some(s) = conn.as_mut() else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                sent.fetch_add(1, Ordering::Relaxed);
                let answered = match s.write_all(&req).await {
                    Ok(()) => http1::read_answer(s, &mut buf)
                        .await
                        .map(|(status, _)| status),
                    Err(e) => Err(e),
                };
                match answered {
                    Ok(status) => *statuses.lock().unwrap().entry(status).or_default() += 1,
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
            }
        }));
    }

    let mut csv = String::from("elapsed_s,requests,rss_kb,fds,answers,caches\n");
    let started = Instant::now();
    let mut samples = Vec::new();
    loop {
        let rss = procfs::rss_kb(a.pid);
        let fds = open_fds(a.pid);
        let caches = cache_sizes(&a.metrics).await;
        let answers = statuses.lock().unwrap().clone();
        let elapsed = started.elapsed().as_secs();
        let caches_text: Vec<String> = caches.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let answers_text: Vec<String> = answers.iter().map(|(k, v)| format!("{k}={v}")).collect();
        csv.push_str(&format!(
            "{elapsed},{},{rss},{fds},{},{}\n",
            sent.load(Ordering::Relaxed),
            answers_text.join(" "),
            caches_text.join(" ")
        ));
        eprintln!(
            "soak: {elapsed:>5} s  {:>9} requests  RSS {rss} kB  fds {fds}  {}",
            sent.load(Ordering::Relaxed),
            caches_text.join(" ")
        );
        samples.push((elapsed, rss, fds, caches));
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(a.sample).min(deadline - Instant::now())).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    std::fs::write(&a.out, csv).expect("write the CSV");
    let answers = statuses.lock().unwrap().clone();
    let json_map = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let sample_json = |s: &(u64, u64, usize, BTreeMap<String, u64>)| {
        format!(
            "{{\"elapsed_s\":{},\"rss_kb\":{},\"fds\":{},\"caches\":{{{}}}}}",
            s.0,
            s.1,
            s.2,
            json_map(&s.3)
        )
    };
    // The second sample is the first one taken under load.
    let first = samples.get(1).or(samples.first()).unwrap();
    let last = samples.last().unwrap();
    let max_rss = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let max_fds = samples.iter().map(|s| s.2).max().unwrap_or(0);
    println!(
        "BENCH_JSON {{\"minutes\":{},\"rate\":{},\"requests\":{},\"errors\":{},\"answers\":{{{}}},\"first\":{},\"last\":{},\"max_rss_kb\":{max_rss},\"max_fds\":{max_fds}}}",
        a.minutes,
        a.rate,
        sent.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        answers
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect::<Vec<_>>()
            .join(","),
        sample_json(first),
        sample_json(last)
    );
}

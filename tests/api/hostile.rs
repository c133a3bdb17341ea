//! Thousands of malformed and adversarial requests against a running
//! shopchat: wrong methods, huge bodies, invalid UTF-8 in paths,
//! headers and bodies, deep JSON, SQL-looking strings, overlong headers, odd
//! Host values, slow clients. Asserts: never a 5xx, every complete request is
//! answered (a panic would drop the connection), the server answers normally
//! afterwards, and the database holds exactly the legitimate writes.
//!
//! `SHOPCHAT_HOSTILE_REQUESTS` (default 3000) and `SHOPCHAT_HOSTILE_SEED`
//! (default: time-based, printed) reproduce a run.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::raw_http;

const MAX_BODY: usize = 65_536;
/// actix-http's own head limit (COMPAT §1.2 step 0, 2026-12: the HTTP server's limits).
const MAX_HEADER: usize = 131_072 + 1024;

/// What a case may be answered with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Any status below 500.
    Any,
    Status(u16),
    /// An incomplete head: the HTTP server's own 408, or closed without an answer
    /// (COMPAT §1.2 step 0, 2026-12).
    TimedOut,
}

struct Case {
    bytes: Vec<u8>,
    expect: Expect,
    /// Sent in pieces with pauses (slow client).
    trickle: bool,
    /// The request is a well-formed chat write; its 200 is a legitimate write.
    write: Option<&'static str>,
}

const TOKENS: &[&str] = &[ADMIN, SELLER1, SELLER2, CUST1, CUST2, CUST3, CUST1_EXPIRED];

const SQLISH: &[&str] = &[
    "1 OR 1=1",
    "1; DROP TABLE messages; --",
    "' OR '1'='1",
    "1 UNION SELECT token FROM personal_access_tokens",
    "\\' --",
    "1) OR (1=1",
    "SLEEP(5)",
    "0x41",
    "1e3",
    "-1",
    "99999999999999999999999",
    "%27%20OR%201=1",
    "\u{0}",
];

const HOSTS: &[&str] = &[
    "shop.test",
    "SHOP.test:80",
    "127.0.0.1:8081",
    "[::1]:8080",
    "a b",
    "shop.test/evil",
    "user@shop.test",
    "shop.test:99999",
    "shop.test:-1",
    "[",
    "]",
    "évil.test",
    "",
];

const LANGS: &[&str] = &[
    "en",
    "sa",
    "../../etc/passwd",
    "..\\..\\x",
    "' OR 1=1 --",
    "😀",
    "",
    "EN",
    "xx-very-long-language-name-that-does-not-fit",
];

fn pick<'a, T: ?Sized>(rng: &mut StdRng, items: &'a [&'a T]) -> &'a T {
    items.choose(rng).unwrap()
}

fn random_id(rng: &mut StdRng) -> String {
    match rng.gen_range(0..8) {
        0..=2 => rng.gen_range(1..=7).to_string(),
        3 => rng.gen::<u64>().to_string(),
        4 => pick(rng, SQLISH).to_string(),
        5 => "%FF%FE%00".to_string(),
        6 => format!("{}%2F1", rng.gen_range(1..5)),
        _ => "ab%C3%A9c".to_string(),
    }
}

fn random_text(rng: &mut StdRng) -> String {
    match rng.gen_range(0..9) {
        0 => pick(rng, SQLISH).to_string(),
        1 => "😀 emoji and Ünïcødé".to_string(),
        2 => "<script>alert(1)</script>".to_string(),
        3 => "x".repeat(rng.gen_range(60_000..70_000)),
        4 => "   ".to_string(),
        5 => "\u{202e}rtl\u{200b}".to_string(),
        _ => format!("hostile message {}", rng.gen::<u32>()),
    }
}

/// Percent-encodes what may not appear raw in a request target (the
/// hostile part is the decoded value, not a broken request line).
fn in_uri(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn path(rng: &mut StdRng) -> (String, &'static str) {
    let route = match rng.gen_range(0..12) {
        0 | 1 => "conversations",
        2 | 3 => "messages",
        4 | 5 => "insert-message",
        6 => "get-new-messages",
        7 | 8 => "create-conversation",
        9 => "openapi.json",
        10 => "fallback",
        _ => "outside",
    };
    let p = match route {
        "messages" => format!("/api/v2/chat/messages/{}", in_uri(&random_id(rng))),
        "get-new-messages" => format!(
            "/api/v2/chat/get-new-messages/{}/{}",
            in_uri(&random_id(rng)),
            in_uri(&random_id(rng))
        ),
        "fallback" => format!("/api/v2/chat/{}", in_uri(&random_id(rng))),
        "outside" => ["/", "/foo/%FF", "/../../etc/passwd", "/api", "/health/x"]
            .choose(rng)
            .unwrap()
            .to_string(),
        r => format!("/api/v2/chat/{r}"),
    };
    let query = match rng.gen_range(0..6) {
        0 => format!("?page={}", in_uri(&random_id(rng))),
        1 => "?page[]=2&wait=1".to_string(),
        2 => format!("?conversation_id={}&message=q", in_uri(&random_id(rng))),
        _ => String::new(),
    };
    let trail = if rng.gen_bool(0.1) { "/" } else { "" };
    (format!("{p}{trail}{query}"), route)
}

fn body(rng: &mut StdRng, route: &str) -> (Vec<u8>, &'static str) {
    let cid = if rng.gen_bool(0.6) {
        rng.gen_range(1..=5).to_string()
    } else {
        random_id(rng)
    };
    let pid = rng.gen_range(0..=6).to_string();
    let msg = random_text(rng);
    let id_field = if route == "create-conversation" {
        ("product_id", pid)
    } else {
        ("conversation_id", cid)
    };
    match rng.gen_range(0..10) {
        0..=3 => (
            raw_http::form(&[(id_field.0, &id_field.1), ("message", &msg)]).into_bytes(),
            "application/x-www-form-urlencoded",
        ),
        4..=6 => {
            let mut obj = serde_json::Map::new();
            let idv = match id_field.1.parse::<i64>() {
                Ok(n) if rng.gen_bool(0.5) => serde_json::json!(n),
                _ => serde_json::json!(id_field.1),
            };
            obj.insert(id_field.0.into(), idv);
            obj.insert("message".into(), serde_json::json!(msg));
            if rng.gen_bool(0.3) {
                obj.insert("title".into(), serde_json::json!(random_text(rng)));
            }
            (
                serde_json::Value::Object(obj).to_string().into_bytes(),
                "application/json",
            )
        }
        7 => {
            let depth = rng.gen_range(100..20_000);
            (
                format!("{}1{}", "[".repeat(depth), "]".repeat(depth)).into_bytes(),
                "application/json",
            )
        }
        8 => {
            let mut b = format!("{}=", id_field.0).into_bytes();
            b.extend_from_slice(b"1&message=\xff\xfe\xc3(");
            let ct = if rng.gen_bool(0.5) {
                "application/json"
            } else {
                "application/x-www-form-urlencoded"
            };
            (b, ct)
        }
        _ => (
            format!(
                "--xX\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n{}\r\n--xX\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\n{msg}\r\n--xX",
                id_field.0, id_field.1
            )
            .into_bytes(),
            "multipart/form-data; boundary=xX",
        ),
    }
}

fn head(method: &str, target: &str, headers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n");
    out
}

fn structured(rng: &mut StdRng) -> Case {
    let (target, route) = path(rng);
    let method = match rng.gen_range(0..20) {
        0..=6 => "GET",
        7..=13 => "POST",
        14 => "HEAD",
        15 => "OPTIONS",
        _ => *["PUT", "DELETE", "PATCH", "TRACE", "FOO", "get"]
            .choose(rng)
            .unwrap(),
    };
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    let host = pick(rng, HOSTS);
    let odd_host = !shopchat::http::origin::valid_host(host) && !host.is_empty();
    headers.push(("Host".into(), host.as_bytes().to_vec()));
    if rng.gen_bool(0.7) {
        headers.push(("Accept".into(), b"application/json".to_vec()));
    }
    if rng.gen_bool(0.9) {
        headers.push(("System-Key".into(), SYSTEM_KEY.as_bytes().to_vec()));
    }
    // A share of well-formed writes by a participant: legitimate writes the
    // final database check must account for.
    let legit = method == "POST" && route == "insert-message" && rng.gen_bool(0.3);
    let auth: Vec<u8> = match rng.gen_range(0..10) {
        _ if legit => format!("Bearer {CUST1}").into_bytes(),
        0..=5 => format!("Bearer {}", pick(rng, TOKENS)).into_bytes(),
        6 => format!("Bearer {}|x", pick(rng, SQLISH)).into_bytes(),
        7 => b"Bearer 5|\xff\xfe\x80".to_vec(),
        8 => format!("Bearer {}", "9".repeat(rng.gen_range(1..40))).into_bytes(),
        _ => Vec::new(),
    };
    if !auth.is_empty() {
        headers.push(("Authorization".into(), auth));
    }
    if rng.gen_bool(0.3) {
        let mut lang = pick(rng, LANGS).as_bytes().to_vec();
        if rng.gen_bool(0.2) {
            lang = b"\xff\xfe".to_vec();
        }
        headers.push(("App-Language".into(), lang));
    }
    if rng.gen_bool(0.1) {
        headers.push(("X-Request-Id".into(), b"<script>\xff".to_vec()));
    }
    let mut write = None;
    let (body_bytes, ct) = if legit {
        let msg = random_text(rng);
        (
            raw_http::form(&[("conversation_id", "1"), ("message", &msg)]).into_bytes(),
            "application/x-www-form-urlencoded",
        )
    } else if method == "POST" {
        body(rng, route)
    } else if rng.gen_bool(0.1) {
        (b"{\"ignored\":true}".to_vec(), "application/json")
    } else {
        (Vec::new(), "")
    };
    if !ct.is_empty() {
        headers.push(("Content-Type".into(), ct.as_bytes().to_vec()));
    }
    let chat_write = route == "insert-message" || route == "create-conversation";
    let chunked = !body_bytes.is_empty() && rng.gen_bool(0.1);
    // Step 0 (413 on Content-Length) comes before the Host check (404); a
    // chunked body is measured only where it is read, after routing.
    // A control byte in a header value is malformed HTTP: the HTTP server
    // answers 400 before shopchat sees the request.
    let broken_header = headers
        .iter()
        .any(|(_, v)| v.iter().any(|b| *b < 0x20 && *b != b'\t'));
    let expect = if broken_header {
        Expect::Any
    } else if body_bytes.len() > MAX_BODY && !chunked {
        Expect::Status(413)
    } else if odd_host {
        Expect::Status(404)
    } else if body_bytes.len() > MAX_BODY && method == "POST" && chat_write {
        Expect::Status(413)
    } else {
        Expect::Any
    };
    let mut out;
    if chunked {
        // Chunked instead of Content-Length.
        headers.push(("Transfer-Encoding".into(), b"chunked".to_vec()));
        out = head(method, &target, &headers);
        out.extend_from_slice(b"\r\n");
        for piece in body_bytes.chunks(1000) {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        headers.push((
            "Content-Length".into(),
            body_bytes.len().to_string().into_bytes(),
        ));
        out = head(method, &target, &headers);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body_bytes);
    }
    if method == "POST" && chat_write {
        write = Some(if route == "insert-message" {
            "insert"
        } else {
            "create"
        });
    }
    Case {
        bytes: out,
        expect,
        trickle: false,
        write,
    }
}

fn malformed(rng: &mut StdRng) -> Case {
    let (bytes, expect): (Vec<u8>, Expect) = match rng.gen_range(0..12) {
        0 => (b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(), Expect::Any),
        1 => (
            b"GET /health HTTP/1.1\r\nNoColonHere\r\nHost: x\r\n\r\n".to_vec(),
            Expect::Any,
        ),
        2 => (
            b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n".to_vec(),
            Expect::Any,
        ),
        3 => (
            b"GET /api/v2/chat/messages/\xff\xfe HTTP/1.1\r\nHost: shop.test\r\n\r\n".to_vec(),
            Expect::Any,
        ),
        4 => (
            b"GET http://evil.test/api/v2/chat/conversations HTTP/1.1\r\nHost: shop.test\r\n\r\n"
                .to_vec(),
            Expect::Any,
        ),
        5 => (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), Expect::Any),
        6 => (
            b"POST /api/v2/chat/insert-message HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello".to_vec(),
            Expect::Any,
        ),
        7 => (
            b"POST /api/v2/chat/insert-message HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"
                .to_vec(),
            Expect::Any,
        ),
        8 => (
            b"GET /health HTTP/1.1\nHost: x\n\n".to_vec(),
            Expect::Any,
        ),
        9 => (
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n".to_vec(),
            Expect::Any,
        ),
        10 => {
            // Random garbage ending like a head.
            let mut b: Vec<u8> = (0..rng.gen_range(1..300)).map(|_| rng.gen()).collect();
            b.extend_from_slice(b"\r\n\r\n");
            (b, Expect::Any)
        }
        _ => (
            format!("POST /api/v2/chat/insert-message HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CUST1}\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nhello\r\n0\r\n\r\n").into_bytes(),
            Expect::Status(400),
        ),
    };
    Case {
        bytes,
        expect,
        trickle: false,
        write: None,
    }
}

fn oversized(rng: &mut StdRng) -> Case {
    let bytes = match rng.gen_range(0..4) {
        0 => format!(
            "GET /api/v2/chat/conversations?q={} HTTP/1.1\r\nHost: shop.test\r\n\r\n",
            "a".repeat(rng.gen_range(MAX_HEADER..300_000))
        )
        .into_bytes(),
        1 => format!(
            "GET /health HTTP/1.1\r\nHost: shop.test\r\nCookie: {}\r\n\r\n",
            "c".repeat(rng.gen_range(MAX_HEADER..200_000))
        )
        .into_bytes(),
        2 => {
            let mut h = b"GET /health HTTP/1.1\r\nHost: shop.test\r\n".to_vec();
            for i in 0..rng.gen_range(100..400) {
                h.extend_from_slice(format!("X-H{i}: {i}\r\n").as_bytes());
            }
            h.extend_from_slice(b"\r\n");
            h
        }
        _ => format!(
            "GET /health HTTP/1.1\r\nHost: shop.test\r\nAuthorization: Bearer 5|{}\r\n\r\n",
            "s".repeat(rng.gen_range(MAX_HEADER..200_000))
        )
        .into_bytes(),
    };
    Case {
        bytes,
        expect: Expect::Status(431),
        trickle: false,
        write: None,
    }
}

fn huge_body(rng: &mut StdRng) -> Case {
    let declared = rng.gen_range(MAX_BODY + 1..50_000_000);
    let mut bytes = format!(
        "POST /api/v2/chat/insert-message HTTP/1.1\r\nHost: shop.test\r\nAuthorization: Bearer {CUST1}\r\nSystem-Key: {SYSTEM_KEY}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\nconversation_id=1&message="
    )
    .into_bytes();
    bytes.extend(std::iter::repeat_n(b'z', 20_000));
    Case {
        bytes,
        expect: Expect::Status(413),
        trickle: false,
        write: None,
    }
}

fn slow(rng: &mut StdRng) -> Case {
    if rng.gen_bool(0.5) {
        // Headers never finished.
        Case {
            bytes: b"GET /api/v2/chat/conversations HTTP/1.1\r\nHost: shop.test\r\nX-Slow: "
                .to_vec(),
            expect: Expect::TimedOut,
            trickle: true,
            write: None,
        }
    } else {
        // Headers complete, body never finished: 408.
        Case {
            bytes: format!(
                "POST /api/v2/chat/insert-message HTTP/1.1\r\nHost: shop.test\r\nAuthorization: Bearer {CUST1}\r\nSystem-Key: {SYSTEM_KEY}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\nconversation_id=1&message=slow"
            )
            .into_bytes(),
            expect: Expect::Status(408),
            trickle: false,
            write: None,
        }
    }
}

fn case(rng: &mut StdRng, i: usize) -> Case {
    // A fixed handful of slow clients, spread over the run.
    if i % 150 == 7 {
        return slow(rng);
    }
    match rng.gen_range(0..100) {
        0..=74 => structured(rng),
        75..=86 => malformed(rng),
        87..=93 => oversized(rng),
        _ => huge_body(rng),
    }
}

/// Sends a case; `None` = closed without an answer.
async fn run(addr: &str, case: &Case) -> Option<raw_http::Response> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    if case.trickle {
        for b in &case.bytes {
            if stream.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    } else {
        // The server may stop reading (413, 431) before everything is sent.
        let _ = stream.write_all(&case.bytes).await;
    }
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 16384];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer and no close within 30 s");
    if raw.is_empty() {
        return None;
    }
    Some(raw_http::parse(&raw))
}

#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, usize>,
    silent: usize,
    inserted: Vec<i64>,
    created: Vec<i64>,
    failures: Vec<String>,
}

#[tokio::test]
async fn thousands_of_hostile_requests() {
    let n: usize = std::env::var("SHOPCHAT_HOSTILE_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("SHOPCHAT_HOSTILE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    let app = spawn_app_with(&[
        ("SHOPCHAT_RATE_LIMIT", "0"),
        ("SHOPCHAT_CLIENT_TIMEOUT", "2"),
        ("SHOPCHAT_MAX_BODY_BYTES", &MAX_BODY.to_string()),
        ("SHOPCHAT_LONG_POLL_MAX_SECONDS", "1"),
    ])
    .await;
    let before = Snapshot::take(&app).await;

    let mut rng = StdRng::seed_from_u64(seed);
    let cases: Vec<Case> = (0..n).map(|i| case(&mut rng, i)).collect();
    let tally = Mutex::new(Tally::default());
    futures_util::stream::iter(cases.iter().enumerate())
        .for_each_concurrent(24, |(i, case)| {
            let tally = &tally;
            let addr = app.addr.clone();
            async move {
                let res = run(&addr, case).await;
                let mut t = tally.lock().unwrap();
                let Some(res) = res else {
                    t.silent += 1;
                    if case.expect != Expect::TimedOut {
                        t.failures.push(format!(
                            "case {i}: closed without an answer: {:?}",
                            String::from_utf8_lossy(&case.bytes[..case.bytes.len().min(200)])
                        ));
                    }
                    return;
                };
                *t.statuses.entry(res.status).or_default() += 1;
                let bad = res.status >= 500
                    || match case.expect {
                        Expect::Any => false,
                        Expect::Status(s) => res.status != s,
                        Expect::TimedOut => res.status != 408,
                    };
                if bad {
                    t.failures.push(format!(
                        "case {i}: {} (expected {:?}) {:?} for {:?}",
                        res.status,
                        case.expect,
                        res.text(),
                        String::from_utf8_lossy(&case.bytes[..case.bytes.len().min(300)])
                    ));
                }
                if res.status == 200 {
                    match case.write {
                        Some("insert") => {
                            if let Some(id) = res.json()["data"][0]["id"].as_i64() {
                                t.inserted.push(id);
                            } else if res.json()["data"].is_array() {
                                // page >= 2: stored, not shown (K11).
                                t.inserted.push(-1);
                            }
                        }
                        Some(_) => {
                            if let Some(id) = res.json()["conversation_id"].as_i64() {
                                t.created.push(id);
                            }
                        }
                        None => {}
                    }
                }
            }
        })
        .await;
    let t = tally.into_inner().unwrap();
    let five_xx: usize = t.statuses.range(500..).map(|(_, c)| c).sum();
    println!(
        "hostile: seed {seed}: {n} requests, {} answered, {} closed without an answer, {five_xx} 5xx; statuses {:?}; legitimate writes: {} messages, {} conversations answered",
        n - t.silent,
        t.silent,
        t.statuses,
        t.inserted.len(),
        t.created.len()
    );
    assert!(
        t.failures.is_empty(),
        "seed {seed}: {} failures, first: {:#?}",
        t.failures.len(),
        &t.failures[..t.failures.len().min(10)]
    );

    // Still serving.
    let res = app.call("GET", "/health", None, &[], b"").await;
    assert_eq!(res.status, 200);
    let res = app.get("/api/v2/chat/conversations", CUST2).await;
    assert_eq!(res.status, 200);
    assert!(res.json()["data"].is_array());

    // The database holds exactly the legitimate writes.
    let after = Snapshot::take(&app).await;
    assert_eq!(after.untouched, before.untouched, "tables nobody may write");
    assert_eq!(
        after.tokens, before.tokens,
        "tokens (apart from last_used_at)"
    );
    let new_conversations: std::collections::BTreeSet<i64> = t
        .created
        .iter()
        .copied()
        .filter(|id| *id > before.max_conversation)
        .collect();
    assert_eq!(
        after.conversations,
        before.conversations + new_conversations.len() as i64,
        "one row per new conversation answered"
    );
    assert_eq!(
        after.messages,
        before.messages + (t.inserted.len() + t.created.len()) as i64,
        "one message per 200 answer of insert-message and create-conversation"
    );
    for id in t.inserted.iter().filter(|id| **id > 0) {
        assert!(*id > before.max_message, "message {id} is new");
    }
    // Every new message was written by a participant (no IDOR) and every
    // conversation has its first message.
    assert_eq!(
        app.db
            .scalar(&format!(
                "SELECT COUNT(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.id > {} AND m.user_id NOT IN (c.sender_id, c.receiver_id)",
                before.max_message
            ))
            .await,
        "0"
    );
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM conversations c WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id)")
            .await,
        "0"
    );
    // SQL-looking text is stored verbatim, never interpreted.
    let sqlish: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE message = ?")
        .bind("1; DROP TABLE messages; --")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    println!("hostile: {sqlish} SQL-looking messages stored verbatim");
    app.finish().await;
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    untouched: Vec<Vec<String>>,
    tokens: Vec<Vec<String>>,
    conversations: i64,
    messages: i64,
    max_conversation: i64,
    max_message: i64,
}

impl Snapshot {
    async fn take(app: &TestApp) -> Snapshot {
        let tables: Vec<String> = app
            .db
            .rows("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name NOT IN ('messages', 'conversations', 'personal_access_tokens') ORDER BY table_name")
            .await
            .into_iter()
            .map(|r| r[0].clone())
            .collect();
        let list = tables
            .iter()
            .map(|t| format!("`{t}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let untouched = app
            .db
            .rows(&format!("CHECKSUM TABLE {list} EXTENDED"))
            .await;
        let tokens = app
            .db
            .rows("SELECT id, tokenable_type, tokenable_id, token, CAST(expires_at AS CHAR), CAST(created_at AS CHAR) FROM personal_access_tokens ORDER BY id")
            .await;
        let num = |s: String| s.parse::<i64>().unwrap_or(0);
        Snapshot {
            untouched,
            tokens,
            conversations: num(app.db.scalar("SELECT COUNT(*) FROM conversations").await),
            messages: num(app.db.scalar("SELECT COUNT(*) FROM messages").await),
            max_conversation: num(app.db.scalar("SELECT MAX(id) FROM conversations").await),
            max_message: num(app.db.scalar("SELECT MAX(id) FROM messages").await),
        }
    }
}

/// App-Language reaches SQL (`translations.lang`, a utf8mb3 column) and the
/// mail renderer: any value gives the contract's answer (§1.2 step 6, D11).
#[tokio::test]
async fn any_app_language_value() {
    let app = spawn_app_with(&[("SHOPCHAT_RATE_LIMIT", "0")]).await;
    let mut rng = StdRng::seed_from_u64(7);
    let mut values: Vec<Vec<u8>> = LANGS.iter().map(|l| l.as_bytes().to_vec()).collect();
    values.extend([
        b"\xff\xfe".to_vec(),
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢".as_bytes().to_vec(),
        b"sa\\".to_vec(),
        "x".repeat(300).into_bytes(),
    ]);
    for _ in 0..20 {
        let s: String = (0..rng.gen_range(1..12))
            .map(|_| char::from_u32(rng.gen_range(0x20..0x1FFFF)).unwrap_or('?'))
            .collect();
        values.push(s.into_bytes());
    }
    for (i, lang) in values.iter().enumerate() {
        let lang_text = String::from_utf8_lossy(lang).into_owned();
        let body = raw_http::form(&[("product_id", "3"), ("message", &format!("lang test {i}"))]);
        let res = app
            .call(
                "POST",
                "/api/v2/chat/create-conversation",
                Some(CUST3),
                &[
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("App-Language", &lang_text),
                ],
                body.as_bytes(),
            )
            .await;
        assert_eq!(
            res.status,
            200,
            "App-Language {lang_text:?}: {}",
            res.text()
        );
        // Unknown locales fall back to the default language's text.
        let expected = if lang_text == "sa" {
            "\u{062a}\u{0645} \u{0625}\u{0646}\u{0634}\u{0627}\u{0621} \u{0627}\u{0644}\u{0645}\u{062d}\u{0627}\u{062f}\u{062b}\u{0629}"
        } else {
            "Conversation created"
        };
        assert_eq!(
            res.json()["message"],
            expected,
            "App-Language {lang_text:?}"
        );
    }
    app.finish().await;
}

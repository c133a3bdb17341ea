//! Step 0 of the pipeline (COMPAT §1.2, §1.3, 2026-12): every connection is bounded in time,
//! whatever its framing; heads get the HTTP server's own limits and answers; body size and the
//! body timeout are shopchat's (413, 408 JSON); the connection limit.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::raw_http;

/// `SHOPCHAT_CLIENT_TIMEOUT` in these tests, seconds.
const T: u64 = 2;
/// The contract's bound: disconnected within the client timeout + 5 s. The tests allow 2 s
/// more for a loaded test machine.
const BOUND: Duration = Duration::from_secs(T + 5 + 2);

async fn app() -> TestApp {
    spawn_app_with(&[("SHOPCHAT_CLIENT_TIMEOUT", &T.to_string())]).await
}

/// Everything the server sends until it closes the connection.
async fn exchange(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_all(&mut stream).await
}

async fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    match tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw)).await {
        Ok(Ok(_)) => {}
        // A reset after the answer still leaves what was read.
        Ok(Err(e)) => assert!(
            e.kind() == std::io::ErrorKind::ConnectionReset,
            "read error {e}"
        ),
        Err(_) => panic!("the server kept the connection open for 30 s"),
    }
    raw
}

/// Sends `first` at once, then `trickle` one byte every 300 ms (a slow client), until the
/// server closes the connection. Returns what the server sent and how long after the start
/// of the trickle it closed. Fails when the connection is still open after 30 s.
async fn trickle(addr: &str, first: &[u8], trickle: &[u8]) -> (Vec<u8>, Duration) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write.write_all(first).await.unwrap();
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return (raw, started.elapsed()),
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    });
    let bytes = trickle.to_vec();
    let writer = tokio::spawn(async move {
        for b in bytes.iter().cycle() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if write.write_all(&[*b]).await.is_err() {
                return;
            }
        }
    });
    let (raw, elapsed) = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the server kept a trickling connection open for 30 s")
        .unwrap();
    writer.abort();
    (raw, elapsed)
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: shop.test\r\n\r\n";
const SLOW_HEAD: &[u8] =
    b"GET /health HTTP/1.1\r\nHost: shop.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// The answers in `raw`, by status.
fn statuses(raw: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(raw);
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

#[tokio::test]
async fn slow_heads_are_cut_off_on_new_and_kept_alive_connections() {
    let app = app().await;
    // A new connection: nothing, a partial request line, headers without their end: the HTTP
    // server's own 408 (or a close), within the bound.
    for partial in [
        &b""[..],
        b"GET /heal",
        b"GET /health HTTP/1.1\r\nHost: shop.test\r\n",
    ] {
        let started = Instant::now();
        let raw = exchange(&app.addr, partial).await;
        assert!(started.elapsed() < BOUND, "{:?}", started.elapsed());
        assert!(
            raw.is_empty() || statuses(&raw) == [408],
            "answered {:?}",
            String::from_utf8_lossy(&raw)
        );
    }
    // A new connection whose head trickles in.
    let (raw, elapsed) = trickle(&app.addr, b"", SLOW_HEAD).await;
    assert!(elapsed < BOUND, "open for {elapsed:?}");
    assert!(raw.is_empty() || statuses(&raw) == [408]);

    // A kept-alive connection: the first request is answered, the second head trickles.
    let (raw, elapsed) = trickle(&app.addr, HEALTH, SLOW_HEAD).await;
    assert_eq!(statuses(&raw), [200], "{}", String::from_utf8_lossy(&raw));
    assert!(
        elapsed < BOUND,
        "kept-alive connection open for {elapsed:?}"
    );
    // The server still answers others.
    let ok = raw_http::parse(
        &exchange(
            &app.addr,
            b"GET /health HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert_eq!(ok.status, 200);
    app.finish().await;
}

#[tokio::test]
async fn upgrade_odd_framing_and_pipelining_are_bounded_too() {
    let app = app().await;
    // The security review's H1: `Upgrade: foo` answered, then a head trickled byte by byte.
    let (raw, elapsed) = trickle(
        &app.addr,
        b"GET /health HTTP/1.1\r\nHost: shop.test\r\nUpgrade: foo\r\n\r\n",
        SLOW_HEAD,
    )
    .await;
    assert_eq!(statuses(&raw), [200]);
    assert!(elapsed < BOUND, "after Upgrade: open for {elapsed:?}");
    // `Upgrade: h2c` (curl --http2) and a websocket upgrade nobody accepts.
    for first in [
        &b"GET /health HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"[..],
        b"GET /health HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    ] {
        let (raw, elapsed) = trickle(&app.addr, first, SLOW_HEAD).await;
        assert!(statuses(&raw).len() <= 1, "{}", String::from_utf8_lossy(&raw));
        assert!(elapsed < BOUND, "open for {elapsed:?}");
    }
    // Odd framing: the HTTP server's own 400, and the connection is closed, even when the
    // client keeps sending.
    for head in [
        &b"POST /api/v2/chat/insert-message HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
        b"POST /api/v2/chat/insert-message HTTP/1.1\r\nHost: shop.test\r\nContent-Length: +5\r\n\r\n",
        b"POST /api/v2/chat/insert-message HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST /api/v2/chat/insert-message HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    ] {
        let (raw, elapsed) = trickle(&app.addr, head, b"5\r\nhello\r\n").await;
        assert_eq!(statuses(&raw), [400], "{}", String::from_utf8_lossy(head));
        assert!(elapsed < BOUND, "open for {elapsed:?}");
    }
    // Pipelining: a whole request and the start of the next in one write, the rest trickled.
    let mut first = HEALTH.to_vec();
    first.extend_from_slice(b"GET /health HTTP/1.1\r\nHo");
    let (raw, elapsed) = trickle(
        &app.addr,
        &first,
        b"st: shop.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaa",
    )
    .await;
    assert_eq!(statuses(&raw), [200]);
    assert!(elapsed < BOUND, "pipelined: open for {elapsed:?}");
    // Pipelined requests that are complete are all answered.
    let mut three = Vec::new();
    for _ in 0..3 {
        three.extend_from_slice(HEALTH);
    }
    let (raw, _) = trickle(&app.addr, &three, b"").await;
    assert_eq!(statuses(&raw), [200, 200, 200]);
    app.finish().await;
}

#[tokio::test]
async fn slow_bodies_get_408_and_are_cut_off() {
    let app = spawn_app_with(&[
        ("SHOPCHAT_CLIENT_TIMEOUT", &T.to_string()),
        ("SHOPCHAT_MAX_BODY_BYTES", "1000"),
    ])
    .await;
    let head = format!(
        "POST /api/v2/chat/insert-message HTTP/1.1\r\nHost: shop.test\r\nAuthorization: Bearer {CUST1}\r\nSystem-Key: {SYSTEM_KEY}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    );
    // Content-Length body that trickles: 408 JSON for every client, then the connection is
    // closed although the client goes on sending.
    let (raw, elapsed) = trickle(
        &app.addr,
        format!("{head}Content-Length: 900\r\n\r\nconversation_id=1&mess").as_bytes(),
        b"aaaaaaaaaaaa",
    )
    .await;
    let res = raw_http::parse(&raw);
    assert_eq!(res.status, 408);
    assert_eq!(res.text(), "{\n    \"message\": \"Request Timeout\"\n}");
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.header("connection"), Some("close"));
    assert!(elapsed < BOUND, "open for {elapsed:?}");

    // A chunked body that trickles (actix would drain it for ever after the answer).
    let (raw, elapsed) = trickle(
        &app.addr,
        format!("{head}Transfer-Encoding: chunked\r\n\r\n5\r\nconve\r\n").as_bytes(),
        b"1\r\na\r\n",
    )
    .await;
    assert_eq!(raw_http::parse(&raw).status, 408);
    assert!(elapsed < BOUND, "chunked: open for {elapsed:?}");

    // A chunked body that nobody reads (a GET carries one): answered, then cut off.
    let (raw, elapsed) = trickle(
        &app.addr,
        b"GET /health HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n",
        b"1\r\na\r\n",
    )
    .await;
    assert_eq!(statuses(&raw), [200]);
    assert!(elapsed < BOUND, "unread chunked body: open for {elapsed:?}");

    // Declared too large: 413 before the body is read.
    let raw = exchange(
        &app.addr,
        format!("{head}Content-Length: 5000000\r\n\r\nconversation_id=1").as_bytes(),
    )
    .await;
    let res = raw_http::parse(&raw);
    assert_eq!(res.status, 413);
    assert_eq!(
        res.text(),
        "{\n    \"message\": \"The POST data is too large.\"\n}"
    );
    // Chunked, no Content-Length: decided on the bytes read.
    let mut body = format!("{head}Transfer-Encoding: chunked\r\n\r\n").into_bytes();
    for _ in 0..3 {
        body.extend_from_slice(format!("190\r\n{}\r\n", "m".repeat(400)).as_bytes());
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let res = raw_http::parse(&exchange(&app.addr, &body).await);
    assert_eq!(res.status, 413);
    // A small chunked body is read normally.
    let form = "conversation_id=1&message=chunked+hello";
    let chunked = format!(
        "{head}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{form}\r\n0\r\n\r\n",
        form.len()
    );
    let res = raw_http::parse(&exchange(&app.addr, chunked.as_bytes()).await);
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM messages WHERE message = 'chunked hello'")
            .await,
        "1"
    );
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM messages WHERE message LIKE 'mmm%' OR message LIKE 'a%'")
            .await,
        "0"
    );
    app.finish().await;
}

#[tokio::test]
async fn idle_kept_alive_connections_are_closed() {
    let app = app().await;
    let mut stream = TcpStream::connect(&app.addr).await.unwrap();
    stream.write_all(HEALTH).await.unwrap();
    let started = Instant::now();
    let raw = read_all(&mut stream).await;
    assert_eq!(statuses(&raw), [200]);
    // actix's keep-alive (5 s), plus its disconnect time.
    assert!(
        started.elapsed() < Duration::from_secs(5 + 3),
        "{:?}",
        started.elapsed()
    );
    app.finish().await;
}

#[tokio::test]
async fn heads_get_the_http_servers_own_limits() {
    let app = app().await;
    // Over actix-http's 128 KiB head buffer, or more than its 96 header fields: its own 431
    // (COMPAT §1.2 step 0, 2026-12: body unspecified); nginx usually refuses first.
    let big = format!(
        "GET /api/v2/chat/conversations HTTP/1.1\r\nHost: shop.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(140_000)
    );
    let mut many = b"GET /health HTTP/1.1\r\nHost: shop.test\r\n".to_vec();
    for i in 0..120 {
        many.extend_from_slice(format!("X-F{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    for head in [big.as_bytes(), &many] {
        let raw = exchange(&app.addr, head).await;
        assert_eq!(statuses(&raw), [431], "{}", String::from_utf8_lossy(&raw));
    }
    // A large head below the limit is served (32 KiB of cookies, say).
    let fine = format!(
        "GET /health HTTP/1.1\r\nHost: shop.test\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        "c".repeat(32_000)
    );
    assert_eq!(statuses(&exchange(&app.addr, fine.as_bytes()).await), [200]);
    // Earlier requests on the connection are answered before the 431.
    let mut bytes = HEALTH.to_vec();
    bytes.extend_from_slice(big.as_bytes());
    let raw = exchange(&app.addr, &bytes).await;
    assert_eq!(statuses(&raw), [200, 431]);
    app.finish().await;
}

#[tokio::test]
async fn connections_above_the_limit_wait() {
    // One connection per worker thread (actix-server counts per worker).
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let app = spawn_app_with(&[("SHOPCHAT_MAX_CONNECTIONS", &workers.to_string())]).await;
    let mut held = Vec::new();
    for _ in 0..workers {
        let mut s = TcpStream::connect(&app.addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: shop.test\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = TcpStream::connect(&app.addr).await.unwrap();
    extra
        .write_all(b"GET /health HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_secs(1), extra.read(&mut first)).await;
    assert!(
        early.is_err(),
        "answered while {workers} connections were open"
    );
    // Finishing the held requests frees the slots.
    for s in &mut held {
        s.write_all(b"Connection: close\r\n\r\n").await.unwrap();
        let res = raw_http::parse(&read_all(s).await);
        assert_eq!(res.status, 200);
    }
    let res = raw_http::parse(&read_all(&mut extra).await);
    assert_eq!(res.status, 200);
    app.finish().await;
}

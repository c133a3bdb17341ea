//! Step 0 of the pipeline (COMPAT §1.2, §1.3): header size, client timeout,
//! body size and the connection limit, on raw TCP connections.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::raw_http;

const TOO_LARGE_431: &str = "{\n    \"message\": \"Request Header Fields Too Large\"\n}";

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

fn big_head(extra_header_bytes: usize) -> Vec<u8> {
    format!(
        "GET /api/v2/chat/conversations HTTP/1.1\r\nHost: shop.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(extra_header_bytes)
    )
    .into_bytes()
}

#[tokio::test]
async fn oversized_heads_get_the_json_431() {
    let app = spawn_app_with(&[("SHOPCHAT_MAX_HEADER_BYTES", "8192")]).await;
    // Just under the limit: an ordinary answer.
    let ok = raw_http::parse(&exchange(&app.addr, &big_head(7000)).await);
    assert_eq!(ok.status, 302, "no Accept, no token: the login redirect");

    for head in [big_head(9000), big_head(60_000), big_head(200_000)] {
        let res = raw_http::parse(&exchange(&app.addr, &head).await);
        assert_eq!(res.status, 431, "{} bytes", head.len());
        assert_eq!(res.text(), TOO_LARGE_431);
        assert_eq!(res.header("content-type"), Some("application/json"));
        assert_eq!(res.header("cache-control"), Some("no-cache, private"));
        assert_eq!(res.header("connection"), Some("close"));
        assert!(res.header("date").is_some() && res.header("x-request-id").is_some());
        assert!(res.header("x-ratelimit-limit").is_none(), "not counted");
    }

    // More header fields than the HTTP server parses.
    let mut head = b"GET /health HTTP/1.1\r\nHost: shop.test\r\n".to_vec();
    for i in 0..120 {
        head.extend_from_slice(format!("X-F{i}: v\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let res = raw_http::parse(&exchange(&app.addr, &head).await);
    assert_eq!((res.status, res.text().as_str()), (431, TOO_LARGE_431));
    app.finish().await;
}

#[tokio::test]
async fn earlier_requests_on_the_connection_are_answered_before_the_431() {
    let app = spawn_app_with(&[("SHOPCHAT_MAX_HEADER_BYTES", "4096")]).await;
    let mut bytes = b"GET /health HTTP/1.1\r\nHost: shop.test\r\n\r\n".to_vec();
    bytes.extend_from_slice(&big_head(10_000));
    let raw = exchange(&app.addr, &bytes).await;
    let text = String::from_utf8_lossy(&raw);
    let second = text
        .find("HTTP/1.1 431 ")
        .unwrap_or_else(|| panic!("no 431 in {text}"));
    let first = raw_http::parse(&raw[..second]);
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "{\"status\":\"ok\"}");
    let rejected = raw_http::parse(&raw[second..]);
    assert_eq!(
        (rejected.status, rejected.text().as_str()),
        (431, TOO_LARGE_431)
    );
    app.finish().await;
}

#[tokio::test]
async fn slow_heads_are_disconnected_without_an_answer() {
    let app = spawn_app_with(&[("SHOPCHAT_CLIENT_TIMEOUT", "1")]).await;
    // Nothing at all, a partial request line, headers without the end.
    for partial in [
        &b""[..],
        b"GET /heal",
        b"GET /health HTTP/1.1\r\nHost: shop.test\r\n",
    ] {
        let raw = exchange(&app.addr, partial).await;
        assert!(
            raw.is_empty(),
            "answered {:?} to {:?}",
            String::from_utf8_lossy(&raw),
            String::from_utf8_lossy(partial)
        );
    }
    // A client trickling its headers byte by byte is cut off too.
    let mut stream = TcpStream::connect(&app.addr).await.unwrap();
    let mut sent = 0;
    let mut closed = false;
    for b in
        b"GET /health HTTP/1.1\r\nHost: shop.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter()
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stream.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        sent += 1;
    }
    let raw = read_all(&mut stream).await;
    assert!(
        raw.is_empty(),
        "answered {:?}",
        String::from_utf8_lossy(&raw)
    );
    assert!(closed, "the connection stayed usable for {sent} slow bytes");
    // The server still answers.
    let ok = raw_http::parse(
        &exchange(
            &app.addr,
            b"GET /health HTTP/1.1\r\nHost: shop.test\r\n\r\n",
        )
        .await,
    );
    assert_eq!(ok.status, 200);
    app.finish().await;
}

#[tokio::test]
async fn slow_bodies_get_408_and_large_bodies_413() {
    let app = spawn_app_with(&[
        ("SHOPCHAT_CLIENT_TIMEOUT", "1"),
        ("SHOPCHAT_MAX_BODY_BYTES", "1000"),
    ])
    .await;
    let head = format!(
        "POST /api/v2/chat/insert-message HTTP/1.1\r\nHost: shop.test\r\nAuthorization: Bearer {CUST1}\r\nSystem-Key: {SYSTEM_KEY}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    );
    // Headers complete, body incomplete: 408 JSON for every client, then close.
    let raw = exchange(
        &app.addr,
        format!("{head}Content-Length: 100\r\n\r\nconversation_id=1&mess").as_bytes(),
    )
    .await;
    let res = raw_http::parse(&raw);
    assert_eq!(res.status, 408);
    assert_eq!(res.text(), "{\n    \"message\": \"Request Timeout\"\n}");
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.header("connection"), Some("close"));

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
            .scalar("SELECT COUNT(*) FROM messages WHERE message LIKE 'mmm%'")
            .await,
        "0"
    );
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

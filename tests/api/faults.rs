//! Faults (COMPAT §1.3): the database stopped and started again
//! under a running service, queries killed in the middle of a transaction,
//! and shopchat itself killed with SIGKILL during a write load.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Executor;

use crate::helpers::*;
use crate::process::Binary;
use crate::raw_http::{self, Response};

const UNAVAILABLE: &str = "{\n    \"message\": \"Service Unavailable\"\n}";
/// create-conversation's 503 starts with `"result": false` (COMPAT §5.5 step 7).
const UNAVAILABLE_CREATE: &str =
    "{\n    \"result\": false,\n    \"message\": \"Service Unavailable\"\n}";

/// The 503 body of a route (`kind` = the route's last path segment).
fn unavailable(kind: &str) -> &'static str {
    match kind {
        "create-conversation" => UNAVAILABLE_CREATE,
        _ => UNAVAILABLE,
    }
}

async fn call(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    form: &[(&str, &str)],
) -> Response {
    let body = raw_http::form(form);
    let content =
        (method == "POST").then_some(("application/x-www-form-urlencoded", body.as_bytes()));
    request_at(addr, method, path, token, content).await
}

/// One request of each kind, all needing the database.
async fn each_kind(addr: &str, i: usize) -> Vec<(String, Response)> {
    let text = format!("fault {i}");
    let title = format!("fault title {i}");
    vec![
        (
            "conversations".into(),
            call(addr, "GET", "/api/v2/chat/conversations", CUST1, &[]).await,
        ),
        (
            "messages".into(),
            call(addr, "GET", "/api/v2/chat/messages/1", CUST1, &[]).await,
        ),
        (
            "get-new-messages".into(),
            call(
                addr,
                "GET",
                "/api/v2/chat/get-new-messages/1/0",
                SELLER1,
                &[],
            )
            .await,
        ),
        (
            "insert-message".into(),
            call(
                addr,
                "POST",
                "/api/v2/chat/insert-message",
                CUST1,
                &[("conversation_id", "1"), ("message", &text)],
            )
            .await,
        ),
        (
            "create-conversation".into(),
            call(
                addr,
                "POST",
                "/api/v2/chat/create-conversation",
                CUST2,
                &[("product_id", "3"), ("title", &title), ("message", &text)],
            )
            .await,
        ),
    ]
}

#[tokio::test]
async fn database_stopped_then_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_str().unwrap().to_string();
    let url = private_db(&["start", &dir_path]);
    let server = PrivateServer(dir);
    private_db(&["load", &url, "shopchat_faults"]);
    let port = url.rsplit(':').next().unwrap().to_string();

    let outbox = tempfile::tempdir().unwrap();
    let mut env: HashMap<String, String> = test_env("shopchat_faults", outbox.path());
    for (k, v) in [
        ("DB_HOST", "127.0.0.1"),
        ("DB_PORT", port.as_str()),
        ("DB_USERNAME", "root"),
        ("DB_PASSWORD", ""),
        ("SHOPCHAT_DB_ACQUIRE_TIMEOUT_MS", "1000"),
        ("SHOPCHAT_RATE_LIMIT", "0"),
        ("SHOPCHAT_AUTH_CACHE_MS", "0"),
        ("RUST_LOG", "warn"),
    ] {
        env.insert(k.into(), v.into());
    }
    let bin = Binary::start(&env, None).await;
    for (kind, res) in each_kind(&bin.addr, 0).await {
        assert_eq!(res.status, 200, "{kind} before the fault: {}", res.text());
    }

    let mut faults = 0;
    let mut answered_503 = 0;
    for round in 1..=2 {
        private_db(&["stop", &dir_path]);
        faults += 1;
        for i in 0..3 {
            let started = Instant::now();
            let answers = tokio::time::timeout(
                Duration::from_secs(60),
                each_kind(&bin.addr, round * 100 + i),
            )
            .await
            .expect("answers while the database is down (no hang)");
            for (kind, res) in answers {
                assert_eq!(
                    res.status,
                    503,
                    "{kind} with the database down: {}",
                    res.text()
                );
                assert_eq!(res.text(), unavailable(&kind), "{kind}");
                assert_eq!(res.header("retry-after"), Some("5"), "{kind}");
                assert_eq!(res.header("content-type"), Some("application/json"));
                answered_503 += 1;
            }
            // Each round of five is answered within a bound, not after TCP timeouts.
            assert!(started.elapsed() < Duration::from_secs(30));
        }
        // The readiness probe says so too, so a load balancer takes the instance out.
        let ready = raw_http::send(&bin.addr, "GET", "/ready", &[("Host", "shop.test")], b"").await;
        assert_eq!(
            ready.status,
            503,
            "/ready with the database down: {}",
            ready.text()
        );
        let again = private_db(&["start", &dir_path]);
        assert_eq!(again, url, "restarted on the same port");
        // The service resumes by itself.
        let mut resumed = false;
        for _ in 0..120 {
            let res = call(&bin.addr, "GET", "/api/v2/chat/conversations", CUST1, &[]).await;
            if res.status == 200 {
                resumed = true;
                break;
            }
            assert_eq!(res.status, 503, "{}", res.text());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(resumed, "round {round}: no 200 within 30 s of the restart");
        for (kind, res) in each_kind(&bin.addr, round * 100 + 50).await {
            assert_eq!(res.status, 200, "{kind} after the restart: {}", res.text());
        }
        let mut ready_again = false;
        for _ in 0..120 {
            if raw_http::send(&bin.addr, "GET", "/ready", &[("Host", "shop.test")], b"")
                .await
                .status
                == 200
            {
                ready_again = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(ready_again, "round {round}: /ready did not recover");
    }
    println!("faults: database stopped and restarted {faults} times; {answered_503} requests answered 503 JSON, none 500, none hung; service resumed by itself each time");
    drop(bin);
    drop(server);
}

/// Blocks until a statement of the service matching `pattern` waits in the
/// server; returns its connection id.
async fn waiting_statement(app: &TestApp, pattern: &str) -> u64 {
    for _ in 0..400 {
        let rows = app
            .db
            .rows(&format!(
                "SELECT id FROM information_schema.processlist WHERE db = '{}' AND info LIKE '{pattern}' AND id <> CONNECTION_ID()",
                app.db.name
            ))
            .await;
        if let Some(row) = rows.first() {
            return row[0].parse().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no statement like {pattern} waited");
}

async fn no_partial_state(app: &TestApp) {
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM conversations c WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id)")
            .await,
        "0",
        "a conversation without its first message"
    );
}

async fn counts(app: &TestApp) -> (String, String) {
    (
        app.db.scalar("SELECT COUNT(*) FROM conversations").await,
        app.db.scalar("SELECT COUNT(*) FROM messages").await,
    )
}

#[tokio::test]
async fn queries_killed_mid_transaction_leave_nothing() {
    let app = spawn_app_with(&[("SHOPCHAT_RATE_LIMIT", "0")]).await;
    let mut faults = 0;
    for (kill, route) in [
        ("KILL QUERY", "create-conversation"),
        ("KILL CONNECTION", "create-conversation"),
        ("KILL QUERY", "insert-message"),
        ("KILL CONNECTION", "insert-message"),
    ] {
        let before = counts(&app).await;
        let mut locker = app.db.pool.acquire().await.unwrap();
        // Hold what the request's transaction will wait for after its first
        // write (create: the conversation row is in, the message waits) or
        // before it (insert-message: the conversation row).
        let pattern = if route == "create-conversation" {
            locker.execute("LOCK TABLES messages WRITE").await.unwrap();
            "INSERT INTO messages%"
        } else {
            locker.execute("BEGIN").await.unwrap();
            locker
                .execute("SELECT id FROM conversations WHERE id = 1 FOR UPDATE")
                .await
                .unwrap();
            // insert-message's claim on the row (its lock and the viewed flags).
            "UPDATE conversations SET%sender_viewed = IF(sender_id = ?, 1, 0)%"
        };
        let addr = app.addr.clone();
        let text = format!("{kill} {route}");
        let request = tokio::spawn(async move {
            if route == "create-conversation" {
                call(
                    &addr,
                    "POST",
                    "/api/v2/chat/create-conversation",
                    CUST3,
                    &[("product_id", "4"), ("title", &text), ("message", &text)],
                )
                .await
            } else {
                call(
                    &addr,
                    "POST",
                    "/api/v2/chat/insert-message",
                    CUST1,
                    &[("conversation_id", "1"), ("message", &text)],
                )
                .await
            }
        });
        let pattern = pattern.replace('?', "%");
        let victim = waiting_statement(&app, &pattern).await;
        sqlx::raw_sql(&format!("{kill} {victim}"))
            .execute(&app.db.pool)
            .await
            .unwrap();
        faults += 1;
        let unlock = if route == "create-conversation" {
            "UNLOCK TABLES"
        } else {
            "ROLLBACK"
        };
        locker.execute(unlock).await.unwrap();
        drop(locker);
        let res = request.await.unwrap();
        assert_eq!(res.status, 503, "{kill} during {route}: {}", res.text());
        assert_eq!(res.text(), unavailable(route));
        assert_eq!(
            counts(&app).await,
            before,
            "{kill} during {route}: nothing written"
        );
        no_partial_state(&app).await;
        let staged = std::fs::read_dir(app.outbox.path().join("staging"))
            .unwrap()
            .count();
        assert_eq!(staged, 0, "no staged e-mail left behind");
        // And the next request works.
        let res = app
            .post_form(
                "/api/v2/chat/insert-message",
                CUST1,
                &[("conversation_id", "1"), ("message", "after the kill")],
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
    println!("faults: {faults} queries killed mid-transaction (KILL QUERY / KILL CONNECTION): 503 each, no partial conversation");
    app.finish().await;
}

#[tokio::test]
async fn sigkill_during_write_load_loses_nothing_answered() {
    let db = TestDb::fresh().await;
    let outbox = tempfile::tempdir().unwrap();
    let mut env: HashMap<String, String> = test_env(&db.name, outbox.path());
    env.insert("SHOPCHAT_RATE_LIMIT".into(), "0".into());
    env.insert("RUST_LOG".into(), "warn".into());
    let mut bin = Binary::start(&env, None).await;

    // (route, unique text, conversation id) of every 200 answer.
    let confirmed: Arc<Mutex<Vec<Confirmed>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..12 {
        let (addr, confirmed, stop) = (bin.addr.clone(), confirmed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            for i in 0..300 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let text = format!("load {t}-{i}");
                let (route, res) = if (t + i) % 3 == 0 {
                    let token = [CUST1, CUST2, CUST3][t % 3];
                    let product = ["3", "4", "1"][i % 3];
                    (
                        "create",
                        try_call(
                            &addr,
                            "/api/v2/chat/create-conversation",
                            token,
                            &[
                                ("product_id", product),
                                ("title", &text),
                                ("message", &text),
                            ],
                        )
                        .await,
                    )
                } else {
                    (
                        "insert",
                        try_call(
                            &addr,
                            "/api/v2/chat/insert-message",
                            CUST1,
                            &[("conversation_id", "2"), ("message", &text)],
                        )
                        .await,
                    )
                };
                sent += 1;
                match res {
                    Some(r) if r.status == 200 => {
                        let cid = match route {
                            "create" => r.json()["conversation_id"].as_i64().unwrap(),
                            _ => 2,
                        };
                        confirmed.lock().unwrap().push((route, text, cid));
                    }
                    Some(r) => assert!(r.status < 500 || r.status == 503, "{}", r.text()),
                    None => break,
                }
            }
            sent
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    bin.kill9();
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for t in tasks {
        sent += t.await.unwrap();
    }
    let confirmed = confirmed.lock().unwrap().clone();
    assert!(
        !confirmed.is_empty(),
        "the load got answers before the kill"
    );
    for (route, text, cid) in &confirmed {
        let rows =
            sqlx::query_scalar::<_, i64>("SELECT conversation_id FROM messages WHERE message = ?")
                .bind(text)
                .fetch_all(&db.pool)
                .await
                .unwrap();
        assert_eq!(
            rows,
            vec![*cid],
            "{route} {text:?} answered 200 but is not stored once"
        );
    }
    let orphans = db
        .scalar("SELECT COUNT(*) FROM conversations c WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id)")
        .await;
    assert_eq!(orphans, "0", "a conversation without its first message");

    // A restart recovers the outbox: staged mail of committed conversations
    // is promoted, the rest deleted (§8.6 step 3).
    let bin = Binary::start(&env, None).await;
    let res = call(&bin.addr, "GET", "/api/v2/chat/conversations", CUST1, &[]).await;
    assert_eq!(res.status, 200);
    let staging = outbox.path().join("staging");
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = count_files(&staging);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "staging/ recovered at start-up");
    println!(
        "faults: shopchat SIGKILLed during a write load: {sent} requests sent, {} answered 200, all stored, no conversation without its first message",
        confirmed.len()
    );
    drop(bin);
    db.drop().await;
}

/// A 200 answer: route, its unique text, the conversation id.
type Confirmed = (&'static str, String, i64);

/// Mail entries in an outbox directory. A temp file that a SIGKILL left mid-write (`.tmp-…`,
/// never renamed into place) is no entry: the worker removes such files after 10 minutes.
fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))
                })
                .count()
        })
        .unwrap_or(0)
}

/// A POST that may meet a dead server: `None` when the connection fails or
/// is cut before a complete answer.
async fn try_call(addr: &str, path: &str, token: &str, form: &[(&str, &str)]) -> Option<Response> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = raw_http::form(form);
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: shop.test\r\nAccept: application/json\r\nSystem-Key: {SYSTEM_KEY}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let res = raw_http::parse(&raw);
    // A complete answer only (the kill may cut the body).
    let declared: usize = res.header("content-length")?.parse().ok()?;
    (raw.len() - end - 4 >= declared).then_some(res)
}

/// The database settings of shopchat on `db`, with a pool of one connection, so that each
/// acquisition gets the same connection back.
fn one_connection(db: &TestDb, outbox: &Path) -> shopchat::config::DatabaseSettings {
    let settings = shopchat::config::Settings::load_from(None, test_env(&db.name, outbox))
        .expect("test settings");
    let mut database = settings.database;
    database.pool_size = 1;
    database
}

/// A statement's single value, on the given connection.
async fn scalar(conn: &mut sqlx::MySqlConnection, sql: &str) -> String {
    let row: (String,) = sqlx::query_as(sql).fetch_one(conn).await.unwrap();
    row.0
}

#[tokio::test]
async fn a_connection_in_use_is_pinged_once_per_use() {
    let db = TestDb::fresh().await;
    let outbox = tempfile::tempdir().unwrap();
    let pool = shopchat::db::pool(&one_connection(&db, outbox.path())).unwrap();
    // The pings the pool's one connection has answered so far (a use of its own).
    let pings = || async {
        let sql = "SELECT CAST(VARIABLE_VALUE AS CHAR) FROM information_schema.SESSION_STATUS \
                   WHERE VARIABLE_NAME = 'COM_ADMIN_COMMANDS'";
        let count = scalar(&mut pool.acquire().await.unwrap(), sql).await;
        count.parse::<u64>().unwrap()
    };
    let before = pings().await;
    for _ in 0..10 {
        let mut conn = pool.acquire().await.unwrap();
        scalar(&mut conn, "SELECT 'x'").await;
    }
    let after = pings().await;
    // 11 uses between the two readings: sqlx's ping as each connection goes back to the pool,
    // and none as it is handed out again right away (sqlx's default pinged there too: 22).
    assert_eq!(after - before, 11, "pings on one connection for 11 uses");
    pool.close().await;
    db.drop().await;
}

#[tokio::test]
async fn an_idle_connection_the_server_closed_is_replaced_before_use() {
    let db = TestDb::fresh().await;
    let outbox = tempfile::tempdir().unwrap();
    // Every connection counts as idle long enough to be pinged.
    let pool =
        shopchat::db::pool_pinging_after(&one_connection(&db, outbox.path()), Duration::ZERO)
            .unwrap();
    let id = "SELECT CAST(CONNECTION_ID() AS CHAR)";
    let first = scalar(&mut pool.acquire().await.unwrap(), id).await;
    // Back in the pool once its release ping is answered: wait until the pool holds it idle.
    for _ in 0..100 {
        if pool.num_idle() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pool.num_idle(), 1);
    db.pool
        .execute(format!("KILL CONNECTION {first}").as_str())
        .await
        .unwrap();
    let second = scalar(&mut pool.acquire().await.unwrap(), id).await;
    assert_ne!(first, second, "a new connection replaced the killed one");
    pool.close().await;
    db.drop().await;
}

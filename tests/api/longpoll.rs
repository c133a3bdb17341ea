//! Long-poll (`wait=N`, COMPAT §5.4 step 4) and the "nothing new" fast path
//! (§11.1): answers stay byte-identical to the plain database-backed answer,
//! and no message is ever missed by a client that keeps polling.

use std::time::Duration;

use crate::helpers::*;

const POLL: &str = "/api/v2/chat/get-new-messages/1/35";

/// Starts a long-poll of customer 1 in the background.
fn hold(app: &TestApp, target: &str) -> tokio::task::JoinHandle<crate::raw_http::Response> {
    let (addr, target) = (app.addr.clone(), target.to_string());
    tokio::spawn(async move { request_at(&addr, "GET", &target, CUST1, None).await })
}

/// What Laravel's web chat does: a row written behind shopchat's back.
async fn insert_behind_our_back(app: &TestApp, text: &str) {
    sqlx::query("INSERT INTO messages (conversation_id, user_id, message, created_at, updated_at) VALUES (1, 2, ?, UTC_TIMESTAMP(), UTC_TIMESTAMP())")
        .bind(text)
        .execute(&app.db.pool)
        .await
        .unwrap();
}

/// 20,000 rows in conversation 2 (four of the watcher's scan batches), written behind
/// shopchat's back.
async fn insert_20_000_elsewhere(app: &TestApp) {
    sqlx::query(
        "INSERT INTO messages (conversation_id, user_id, message, created_at, updated_at) \
         SELECT 2, 5, 'bulk', UTC_TIMESTAMP(), UTC_TIMESTAMP() FROM \
         (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) a, \
         (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) b, \
         (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) c, \
         (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 \
          UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) d, \
         (SELECT 0 d UNION ALL SELECT 1) e",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_waiting_poll_wakes_on_a_new_message() {
    let app = spawn_app().await;
    let plain = app.get(POLL, CUST1).await;
    assert_eq!(plain.json()["meta"]["total"], 0);

    // Held open (30 s) until the seller answers through shopchat.
    let waiting = hold(&app, &format!("{POLL}?wait=30"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "nothing new yet: the request is held"
    );
    app.post_form(
        "/api/v2/chat/insert-message",
        SELLER1,
        &[("conversation_id", "1"), ("message", "Shipped today")],
    )
    .await;
    let res = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("woken before its 30 s wait")
        .unwrap();
    let body = res.json();
    assert_eq!(body["meta"]["total"], 1);
    assert_eq!(body["data"][0]["message"], "Shipped today");
    assert_eq!(
        body["meta"]["path"], "http://shop.test/api/v2/chat/get-new-messages/1/35",
        "wait is not part of the path"
    );
    assert_eq!(
        res.text(),
        app.get(POLL, CUST1).await.text(),
        "the same bytes as without wait"
    );

    // A row written by the Laravel app wakes a waiter too (the watcher).
    let waiting = hold(&app, "/api/v2/chat/get-new-messages/1/43?wait=30");
    tokio::time::sleep(Duration::from_millis(300)).await;
    insert_behind_our_back(&app, "from the web chat").await;
    let res = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("woken by the watcher")
        .unwrap();
    assert_eq!(res.json()["data"][0]["message"], "from the web chat");
    app.finish().await;
}

#[tokio::test]
async fn wait_without_news_answers_like_a_plain_poll() {
    let app = spawn_app().await;
    let plain = app.get(POLL, CUST1).await.text();
    assert_eq!(
        app.get(&format!("{POLL}?wait=1"), CUST1).await.text(),
        plain
    );
    for bad in ["abc", "0", "-3", "1.5"] {
        assert_eq!(
            app.get(&format!("{POLL}?wait={bad}"), CUST1).await.text(),
            plain,
            "wait={bad} is ignored"
        );
    }
    app.finish().await;

    // Long-poll off: `wait` is ignored.
    let app = spawn_app_with(&[("SHOPCHAT_LONG_POLL_MAX_SECONDS", "0")]).await;
    let res = tokio::time::timeout(
        Duration::from_secs(20),
        app.get(&format!("{POLL}?wait=30"), CUST1),
    )
    .await
    .expect("answered at once");
    assert_eq!(res.json()["meta"]["total"], 0);
    app.finish().await;
}

#[tokio::test]
async fn repeated_polls_never_miss_a_message() {
    let app = spawn_app().await;
    let empty = app.get(POLL, CUST1).await.text();
    // Many polls: the fast path answers some of them, byte-identical.
    for _ in 0..20 {
        assert_eq!(app.get(POLL, CUST1).await.text(), empty);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    insert_behind_our_back(&app, "late news").await;
    let mut seen = false;
    for _ in 0..200 {
        let body = app.get(POLL, CUST1).await.json();
        if body["meta"]["total"] == 1 {
            assert_eq!(body["data"][0]["message"], "late news");
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the message written behind shopchat's back shows up");
    app.finish().await;
}

#[tokio::test]
async fn a_known_empty_conversation_still_waits() {
    let app = spawn_app().await;
    // Teach the watcher that conversation 1 has nothing above 35 (fast path ready).
    for _ in 0..5 {
        app.get(POLL, CUST1).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let waiting = hold(&app, &format!("{POLL}?wait=30"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a long-poll is held even when the fast path knows the answer"
    );
    insert_behind_our_back(&app, "worth the wait").await;
    let res = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(res.json()["data"][0]["message"], "worth the wait");
    app.finish().await;
}

#[tokio::test]
async fn the_watcher_catches_up_with_a_large_backlog() {
    let app = spawn_app().await;
    app.get(POLL, CUST1).await; // the watcher starts following the table
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = hold(&app, &format!("{POLL}?wait=30"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 20,000 rows in another conversation (four scan batches), then the one that matters.
    insert_20_000_elsewhere(&app).await;
    insert_behind_our_back(&app, "after the flood").await;
    // Without catch-up the watcher advances one batch per rescan window (10 s).
    let res = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("woken after the backlog")
        .unwrap();
    assert_eq!(res.json()["data"][0]["message"], "after the flood");
    app.finish().await;
}

/// The held long-polls, as `/metrics` reports them.
async fn waiters(app: &TestApp) -> String {
    let text = app.call("GET", "/metrics", None, &[], b"").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix("shopchat_long_poll_waiters "))
        .unwrap_or("?")
        .to_string()
}

#[tokio::test]
async fn a_poll_whose_client_went_away_is_released() {
    // actix does not cancel a request whose client closed the connection; the connection's
    // clock sees the close and the wait ends (security review M6).
    use tokio::io::AsyncWriteExt;
    let app = spawn_app().await;
    let mut stream = tokio::net::TcpStream::connect(&app.addr).await.unwrap();
    let head = format!(
        "GET {POLL}?wait=25 HTTP/1.1\r\nHost: shop.test\r\nAccept: application/json\r\nSystem-Key: {SYSTEM_KEY}\r\nAuthorization: Bearer {CUST1}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut held = false;
    for _ in 0..50 {
        if waiters(&app).await == "1" {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(held, "the poll is held");
    drop(stream);
    let mut released = false;
    for _ in 0..50 {
        if waiters(&app).await == "0" {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        released,
        "released when the client went away, not after 25 s"
    );
    app.finish().await;
}

#[tokio::test]
async fn held_polls_are_capped_per_user() {
    // A few accounts must not hold every connection slot (security review M6): beyond its
    // cap a user's poll is answered at once, exactly like a poll without `wait`.
    let app = spawn_app_with(&[("SHOPCHAT_LONG_POLL_PER_USER", "2")]).await;
    let target = format!("{POLL}?wait=20");
    let first = hold(&app, &target);
    let second = hold(&app, &target);
    for _ in 0..50 {
        if waiters(&app).await == "2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(waiters(&app).await, "2");
    let started = std::time::Instant::now();
    let third = app.get(&target, CUST1).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered at once"
    );
    assert_eq!(third.text(), app.get(POLL, CUST1).await.text());
    // Another user still gets a place.
    let seller = {
        let (addr, target) = (app.addr.clone(), target.clone());
        tokio::spawn(async move { request_at(&addr, "GET", &target, SELLER1, None).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(waiters(&app).await, "3");
    // The held ones answer when a message arrives.
    app.post_form(
        "/api/v2/chat/insert-message",
        SELLER1,
        &[("conversation_id", "1"), ("message", "now")],
    )
    .await;
    for h in [first, second, seller] {
        let res = tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(res.json()["meta"]["total"], 1);
    }
    app.finish().await;
}

#[tokio::test]
async fn a_hot_conversations_polls_cost_no_statement_yet_see_new_messages() {
    // The app polls every 5 s per open chat screen, and screens leak pollers: one conversation
    // is polled many times a second. Once a poll has verified "nothing above 35" and a scan has
    // started after it, the polls are answered from that knowledge: the database sees the
    // watcher's scans (one per 100 ms, whatever the number of polls) and a handful of other
    // statements (token, touch, participants), not one statement per poll.
    let db = TestDb::fresh().await;
    let user = db.counted_user().await;
    // More than 600 polls a minute from one user: the throttle (D8) would answer 429 to the
    // polls that look for the new message below, on a slow machine before they see it.
    let mut env = user.env().to_vec();
    env.push(("SHOPCHAT_RATE_LIMIT", "0"));
    let app = spawn_app_on(db, &env).await;
    assert_eq!(app.get(POLL, CUST1).await.json()["meta"]["total"], 0);

    let scans = metric(&app, "shopchat_watcher_statements_total").await;
    let before = statements_besides_scans(&app, &user).await;
    for _ in 0..500 {
        let res = app.get(POLL, CUST1).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.json()["meta"]["total"], 0);
    }
    let spent = statements_besides_scans(&app, &user).await - before;
    let scans = metric(&app, "shopchat_watcher_statements_total").await - scans;
    assert!(
        spent <= 6,
        "{spent} statements besides {scans} scans for 500 polls of one conversation"
    );

    // The shop's web chat writes a message straight into the table: the polls see it within
    // the staleness bound of COMPAT §11.1 (250 ms after a scan; a scan every 100 ms).
    insert_behind_our_back(&app, "from the web chat").await;
    let inserted = std::time::Instant::now();
    let seen_after = loop {
        let res = app.get(POLL, CUST1).await;
        assert_eq!(res.status, 200, "{}", res.text());
        if res.json()["meta"]["total"] == 1 {
            assert_eq!(res.json()["data"][0]["message"], "from the web chat");
            break inserted.elapsed();
        }
        assert!(
            inserted.elapsed() < Duration::from_secs(5),
            "the new message was never seen"
        );
    };
    // Generous for a loaded CI machine; the bound itself is 250 ms plus one scan period.
    assert!(
        seen_after < Duration::from_secs(2),
        "seen after {seen_after:?}"
    );
    app.finish().await;
}

#[tokio::test]
async fn the_polls_after_a_post_cost_no_statement() {
    // Every post is followed by polls above it: the author's app, the other party's once it has
    // the message. What shopchat just committed keeps the conversation's knowledge at the new
    // id (the scans vouch for it as before), instead of sending the next poll to the database.
    let (app, user) = spawn_counted(&[
        ("SHOPCHAT_RATE_LIMIT", "0"),
        ("SHOPCHAT_AUTH_CACHE_MS", "600000"),
    ])
    .await;
    assert_eq!(app.get(POLL, CUST1).await.json()["meta"]["total"], 0);
    // A scan after the verification.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Five posts, each followed by ten polls above it (as the author's app and the other
    // party's would): before, the first poll after each post asked the database again.
    let mut spent = 0;
    for round in 0..5 {
        let posted = app
            .post_form(
                "/api/v2/chat/insert-message",
                CUST1,
                &[
                    ("conversation_id", "1"),
                    ("message", &format!("posted {round}")),
                ],
            )
            .await;
        assert_eq!(posted.status, 200, "{}", posted.text());
        let id = posted.json()["data"][0]["id"].as_i64().unwrap();
        let above_it = format!("/api/v2/chat/get-new-messages/1/{id}");
        let before = statements_besides_scans(&app, &user).await;
        for _ in 0..10 {
            let res = app.get(&above_it, CUST1).await;
            assert_eq!(res.json()["meta"]["total"], 0, "{}", res.text());
        }
        spent += statements_besides_scans(&app, &user).await - before;
    }
    // Room for a scan that came late on a loaded machine (the knowledge then lapses once).
    assert!(
        spent <= 2,
        "{spent} statements besides the scans for 5 × 10 polls above a post"
    );
    // Below it, the post is found (from the database).
    let res = app.get(POLL, CUST1).await.json();
    assert_eq!(res["meta"]["total"], 5);
    assert_eq!(res["data"][0]["message"], "posted 4");
    app.finish().await;
}

#[tokio::test]
async fn the_first_page_is_counted_once_then_kept_by_the_watcher() {
    // messages/{id} shows a conversation's total (§4); counting a long conversation on every
    // read costs a scan of its index range. The watcher knows the count (verified once, then
    // kept by its scans), so reads fetch the page alone — and the totals stay exact.
    let db = TestDb::fresh().await;
    let user = db.counted_user().await;
    let app = spawn_app_on(db, &user.env()).await;
    sqlx::query(
        "INSERT INTO messages (conversation_id, user_id, message, created_at, updated_at) \
         SELECT 1, 2, CONCAT('backlog ', seq), UTC_TIMESTAMP(), UTC_TIMESTAMP() FROM seq_1_to_400",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let total = |res: &crate::raw_http::Response| res.json()["meta"]["total"].as_i64().unwrap();
    let first = app.get("/api/v2/chat/messages/1", CUST1).await;
    let counted = total(&first);
    assert!(counted > 400, "{counted}");

    let rows = app.db.rows_read(&user).await;
    for _ in 0..50 {
        let res = app.get("/api/v2/chat/messages/1", CUST1).await;
        assert_eq!(
            res.text(),
            first.text(),
            "byte-identical to the counted answer"
        );
    }
    let read = app.db.rows_read(&user).await - rows;
    assert!(
        read < 50 * 100,
        "{read} rows read for 50 first pages: the {counted} messages were counted again"
    );

    // A message the web chat inserts: seen with the total one higher, within the staleness.
    insert_behind_our_back(&app, "counted by the watcher").await;
    let inserted = std::time::Instant::now();
    loop {
        let res = app.get("/api/v2/chat/messages/1", CUST1).await;
        if res.json()["data"][0]["message"] == "counted by the watcher" {
            assert_eq!(total(&res), counted + 1, "the page and its total agree");
            break;
        }
        assert_eq!(total(&res), counted, "the old page with the old total");
        assert!(inserted.elapsed() < Duration::from_secs(5), "never seen");
    }

    // The web chat deletes the conversation with its messages: never answered from knowledge.
    sqlx::query("DELETE FROM messages WHERE conversation_id = 1")
        .execute(&app.db.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM conversations WHERE id = 1")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let res = app.get("/api/v2/chat/messages/1", CUST1).await;
    assert!(
        res.status == 404 || total(&res) == 0,
        "{} {}",
        res.status,
        res.text()
    );
    app.finish().await;
}

#[tokio::test]
async fn after_a_pause_the_watcher_starts_over_instead_of_rereading_the_backlog() {
    // The app is closed for a while and the shop's web chat keeps writing: the watcher idles
    // (nobody polls for 60 s) and rows pile up behind its back. When the polls come back, the
    // watcher starts at the end of the table like a new process, instead of reading the
    // backlog and then, for a whole rescan window, reading it again on every scan; the polls
    // get the fast path again at once, and the message of the polled conversation written
    // during the pause is seen. (Slow by necessity: the watcher's idle time is a minute.)
    let (app, user) = spawn_counted(&[("SHOPCHAT_RATE_LIMIT", "0")]).await;
    assert_eq!(app.get(POLL, CUST1).await.json()["meta"]["total"], 0);
    tokio::time::sleep(Duration::from_secs(61)).await;
    insert_20_000_elsewhere(&app).await;
    insert_behind_our_back(&app, "while the app was closed").await;
    // A whole rescan window without a scan.
    tokio::time::sleep(Duration::from_secs(11)).await;

    let res = app.get(POLL, CUST1).await.json();
    assert_eq!(res["meta"]["total"], 1);
    assert_eq!(res["data"][0]["message"], "while the app was closed");
    let newest = format!(
        "/api/v2/chat/get-new-messages/1/{}",
        res["data"][0]["id"].as_i64().unwrap()
    );
    let scans_before = metric(&app, "shopchat_watcher_statements_total").await;
    let before = statements_besides_scans(&app, &user).await;
    let started = std::time::Instant::now();
    let mut polls = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let res = app.get(&newest, CUST1).await;
        assert_eq!(res.json()["meta"]["total"], 0, "{}", res.text());
        polls += 1;
    }
    let scans = metric(&app, "shopchat_watcher_statements_total").await - scans_before;
    let spent = statements_besides_scans(&app, &user).await - before;
    // One scan per 100 ms is 20; re-reading 20,000 rows in 5,000-row batches after each of
    // them was about 4 times as many.
    assert!(
        scans <= 30,
        "{scans} scan statements in 2 s after the pause"
    );
    assert!(
        spent <= 6,
        "{spent} statements besides {scans} scans for {polls} polls after the pause"
    );
    // And the watcher follows the table again.
    insert_behind_our_back(&app, "after the pause").await;
    let inserted = std::time::Instant::now();
    loop {
        let res = app.get(&newest, CUST1).await.json();
        if res["meta"]["total"] == 1 {
            assert_eq!(res["data"][0]["message"], "after the pause");
            break;
        }
        assert!(
            inserted.elapsed() < Duration::from_secs(2),
            "the message after the pause was not seen"
        );
    }
    app.finish().await;
}

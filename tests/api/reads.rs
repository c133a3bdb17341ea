//! The read routes (COMPAT §5.1, §5.2, §5.4): participants only (D1),
//! dangling data never breaks a page (D4), pages and cursors.

use crate::helpers::*;

#[tokio::test]
async fn participants_read_and_others_get_404() {
    let app = spawn_app().await;
    // Sender and receiver may read; the admin is the receiver of conversation 2.
    assert_eq!(app.get("/api/v2/chat/messages/1", CUST1).await.status, 200);
    assert_eq!(
        app.get("/api/v2/chat/messages/1", SELLER1).await.status,
        200
    );
    assert_eq!(app.get("/api/v2/chat/messages/2", ADMIN).await.status, 200);
    for (target, token, id) in [
        ("/api/v2/chat/messages/1", SELLER2, "1"),
        ("/api/v2/chat/messages/1", CUST2, "1"),
        ("/api/v2/chat/messages/2", SELLER1, "2"),
        ("/api/v2/chat/messages/999", CUST1, "999"),
        ("/api/v2/chat/messages/1abc", CUST1, "1abc"),
        ("/api/v2/chat/messages/%2B1", CUST1, "+1"),
        ("/api/v2/chat/messages/-1", CUST1, "-1"),
        (
            "/api/v2/chat/messages/99999999999999999999999",
            CUST1,
            "99999999999999999999999",
        ),
        ("/api/v2/chat/get-new-messages/3/0", CUST1, "3"),
        ("/api/v2/chat/get-new-messages/x/0", CUST1, "x"),
    ] {
        let res = app
            .call("GET", target, Some(token), &[("Accept", "")], b"")
            .await;
        assert_eq!(res.status, 404, "{target}");
        assert_eq!(
            res.header("content-type"),
            Some("application/json"),
            "D1 is JSON for every client"
        );
        assert_eq!(res.text(), format!("{{\n    \"message\": \"No query results for model [App\\\\Models\\\\Conversation] {id}\"\n}}"));
    }
    app.finish().await;
}

#[tokio::test]
async fn new_messages_cursor_is_coerced_like_mysql() {
    let app = spawn_app().await;
    let total = |target: &'static str| {
        let app = &app;
        async move { app.get(target, CUST1).await.json()["meta"]["total"].clone() }
    };
    assert_eq!(total("/api/v2/chat/get-new-messages/1/30").await, 5);
    assert_eq!(
        total("/api/v2/chat/get-new-messages/1/abc").await,
        35,
        "abc → 0"
    );
    assert_eq!(
        total("/api/v2/chat/get-new-messages/1/3e1").await,
        5,
        "3e1 → 30"
    );
    let res = app
        .get("/api/v2/chat/get-new-messages/1/33", CUST1)
        .await
        .json();
    let ids: Vec<i64> = res["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![35, 34], "newest first");
    app.finish().await;
}

#[tokio::test]
async fn absurd_pages_are_empty_pages() {
    let app = spawn_app().await;
    let res = app
        .get("/api/v2/chat/messages/1?page=9223372036854775807", CUST1)
        .await;
    assert_eq!(res.status, 200);
    let body = res.json();
    assert_eq!(body["data"], serde_json::json!([]));
    assert_eq!(body["meta"]["current_page"], 9223372036854775807i64);
    assert_eq!(body["meta"]["total"], 35);
    for page in ["-5", "1e3", "%00", "%FF", "02", "page[]=1"] {
        let res = app
            .get(&format!("/api/v2/chat/messages/1?page={page}"), CUST1)
            .await;
        assert_eq!(res.status, 200, "{page}");
        assert_eq!(res.json()["meta"]["current_page"], 1, "{page}");
    }
    app.finish().await;
}

#[tokio::test]
async fn head_is_get_without_body() {
    let app = spawn_app().await;
    let res = app
        .call("HEAD", "/api/v2/chat/conversations", Some(CUST1), &[], b"")
        .await;
    assert_eq!(res.status, 200);
    assert!(res.body.is_empty());
    assert_eq!(res.header("content-type"), Some("application/json"));
    app.finish().await;
}

#[tokio::test]
async fn dangling_rows_do_not_break_a_page() {
    let app = spawn_app().await;
    let pool = &app.db.pool;
    // D4: a deleted receiver, a deleted author, a logo upload soft-deleted, a zero date.
    sqlx::query("DELETE FROM users WHERE id = 3")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE shops SET logo = '5' WHERE id = 1")
        .execute(pool)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET SESSION sql_mode = ''")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("UPDATE messages SET created_at = '0000-00-00 00:00:00' WHERE id = 38")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("UPDATE conversations SET updated_at = '0000-00-00 00:00:00' WHERE id = 2")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);

    let list = app.get("/api/v2/chat/conversations", CUST2).await;
    assert_eq!(list.status, 200);
    let item = &list.json()["data"][0];
    assert_eq!(item["receiver_type"], "deleted");
    assert_eq!(item["shop_id"], 0);
    assert_eq!(item["shop_name"], "Deleted user");
    assert_eq!(
        item["shop_logo"],
        "http://shop.test/public/assets/img/placeholder.jpg"
    );

    let list = app.get("/api/v2/chat/conversations", CUST1).await.json();
    assert_eq!(list["data"][0]["date"], "-000001-11-30T00:00:00.000000Z");
    assert_eq!(
        list["data"][1]["shop_logo"], "http://shop.test/public/assets/img/placeholder.jpg",
        "soft-deleted upload"
    );

    let msgs = app.get("/api/v2/chat/messages/3", CUST2).await.json();
    assert_eq!(msgs["data"][0]["send_type"], "deleted", "author deleted");
    let msgs = app.get("/api/v2/chat/messages/2", CUST1).await.json();
    let zero = &msgs["data"][0];
    assert_eq!(
        (
            zero["year"].as_str(),
            zero["month"].as_str(),
            zero["day_of_month"].as_str(),
            zero["date"].as_str(),
            zero["time"].as_str()
        ),
        (
            Some("-0001"),
            Some("11"),
            Some("30-Nov"),
            Some("November 30, -0001"),
            Some("12:00 am")
        )
    );
    app.finish().await;
}

#[tokio::test]
async fn dates_follow_app_timezone() {
    let app = spawn_app_with(&[("APP_TIMEZONE", "Asia/Dhaka")]).await;
    let list = app.get("/api/v2/chat/conversations", CUST1).await.json();
    // 2024-06-03 21:45:00 in Dhaka (UTC+6) is 15:45 UTC.
    assert_eq!(list["data"][1]["date"], "2024-06-03T15:45:00.000000Z");
    let msgs = app.get("/api/v2/chat/messages/2", CUST1).await.json();
    assert_eq!(
        msgs["data"][0]["time"], "02:30 pm",
        "message times are shown as stored"
    );
    app.finish().await;
}

#[tokio::test]
async fn session_time_zone_when_configured() {
    // The fixture's TIMESTAMPs were written in UTC. Read through +06:00 and
    // interpreted in Asia/Dhaka they are the same instants again.
    let app = spawn_app_with(&[
        ("APP_TIMEZONE", "Asia/Dhaka"),
        ("SHOPCHAT_DB_TIME_ZONE", "+06:00"),
    ])
    .await;
    let list = app.get("/api/v2/chat/conversations", CUST1).await.json();
    assert_eq!(list["data"][1]["date"], "2024-06-03T21:45:00.000000Z");
    let msgs = app.get("/api/v2/chat/messages/2", CUST1).await.json();
    assert_eq!(
        msgs["data"][0]["time"], "08:30 pm",
        "14:30 UTC shown as Dhaka wall time"
    );
    app.finish().await;
}

/// The poll statement of §5.4 reads the page it answers and nothing more: no on-disk temporary
/// table (the message text is TEXT, so MariaDB builds any temporary table of it on disk, a file
/// created and deleted per poll), no walk over every message above the cursor. The CI run of
/// 2026-12-05 met the cost of the old LEFT JOIN form as a 500: MariaDB failed to delete such a
/// temporary file ("Error on delete of '/tmp/#sql-temptable-….MAI'").
#[tokio::test]
async fn a_poll_statement_reads_a_page_without_a_temporary_table() {
    use sqlx::{Executor, Row};
    let db = TestDb::fresh().await;
    let indexes = std::fs::read_to_string(project_file("schema/recommended-indexes.sql")).unwrap();
    sqlx::raw_sql(&indexes).execute(&db.pool).await.unwrap();
    // 300 messages in conversation 1, all above the cursor 0.
    for _ in 0..3 {
        db.pool
            .execute(
                "INSERT INTO messages (conversation_id, user_id, message, created_at, updated_at) \
                 WITH RECURSIVE s (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 100) \
                 SELECT 1, 5, CONCAT('bulk ', n), NOW(), NOW() FROM s",
            )
            .await
            .unwrap();
    }
    let mut conn = db.pool.acquire().await.unwrap();
    const COUNTERS: [(&str, u64); 4] = [
        ("Created_tmp_tables", 0),
        ("Created_tmp_disk_tables", 0),
        ("Handler_read_next", 0),
        ("Handler_read_prev", 11),
    ];
    // Reading the counters costs something itself (SHOW builds a temporary table): what a
    // poll costs is the difference between two readings around it, less that of two
    // readings around nothing.
    async fn counters(conn: &mut sqlx::MySqlConnection) -> Vec<u64> {
        let rows = sqlx::query(
            "SHOW SESSION STATUS WHERE Variable_name IN \
             ('Created_tmp_tables', 'Created_tmp_disk_tables', 'Handler_read_next', 'Handler_read_prev')",
        )
        .fetch_all(conn)
        .await
        .unwrap();
        COUNTERS
            .iter()
            .map(|(name, _)| {
                let row = rows
                    .iter()
                    .find(|r| r.get::<String, _>(0) == *name)
                    .unwrap();
                row.get::<String, _>(1).parse().unwrap()
            })
            .collect()
    }
    let a = counters(conn.as_mut()).await;
    let b = counters(conn.as_mut()).await;
    let reading: Vec<u64> = b.iter().zip(&a).map(|(b, a)| b - a).collect();
    for (cursor, expected) in [("0", 10), ("99999999", 0)] {
        let before = counters(conn.as_mut()).await;
        let (seen, messages, complete) = shopchat::chat::repo::poll_page(conn.as_mut(), 1, cursor)
            .await
            .unwrap();
        let after = counters(conn.as_mut()).await;
        assert!(matches!(seen, shopchat::chat::repo::Seen::Row(_)));
        assert_eq!(messages.len(), expected, "cursor {cursor}");
        assert_eq!(complete, expected == 0, "cursor {cursor}");
        let ids: Vec<i64> = messages.iter().map(|m| m.id).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(ids, sorted, "newest first");
        for (i, (counter, at_most)) in COUNTERS.iter().enumerate() {
            let spent = after[i] - before[i] - reading[i];
            assert!(
                spent <= *at_most,
                "cursor {cursor}: {counter} +{spent}, at most {at_most}"
            );
        }
    }
    conn.close().await.unwrap();
    db.drop().await;
}

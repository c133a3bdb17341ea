//! The write routes (COMPAT §5.3, §5.5): validation (D2), no partial writes
//! (D3), the viewed flags (D5), reuse instead of duplicates (D6).

use serde_json::json;

use crate::helpers::*;

const INSERT: &str = "/api/v2/chat/insert-message";
const CREATE: &str = "/api/v2/chat/create-conversation";

async fn counts(app: &TestApp) -> (String, String) {
    (
        app.db.scalar("SELECT COUNT(*) FROM conversations").await,
        app.db.scalar("SELECT COUNT(*) FROM messages").await,
    )
}

fn pretty_422(errors: &[(&str, &str)]) -> String {
    let first = errors[0].1;
    let message = match errors.len() {
        1 => first.to_string(),
        2 => format!("{first} (and 1 more error)"),
        n => format!("{first} (and {} more errors)", n - 1),
    };
    let fields: Vec<String> = errors
        .iter()
        .map(|(f, m)| format!("        \"{f}\": [\n            \"{m}\"\n        ]"))
        .collect();
    format!(
        "{{\n    \"message\": \"{message}\",\n    \"errors\": {{\n{}\n    }}\n}}",
        fields.join(",\n")
    )
}

/// create-conversation's own errors start with `"result": false` (COMPAT §5.5 step 7).
fn pretty_422_result_false(errors: &[(&str, &str)]) -> String {
    pretty_422(errors).replacen("{\n", "{\n    \"result\": false,\n", 1)
}

#[tokio::test]
async fn invalid_input_is_422_and_writes_nothing() {
    let app = spawn_app().await;
    let before = counts(&app).await;
    type Case<'a> = (&'a str, serde_json::Value, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            INSERT,
            json!({}),
            vec![
                ("conversation_id", "The conversation id field is required."),
                ("message", "The message field is required."),
            ],
        ),
        (
            INSERT,
            json!({"conversation_id": "one", "message": "x"}),
            vec![("conversation_id", "The conversation id must be an integer.")],
        ),
        (
            INSERT,
            json!({"conversation_id": 1.5, "message": "x"}),
            vec![("conversation_id", "The conversation id must be an integer.")],
        ),
        (
            INSERT,
            json!({"conversation_id": 1, "message": 5}),
            vec![("message", "The message must be a string.")],
        ),
        (
            INSERT,
            json!({"conversation_id": 1, "message": "   "}),
            vec![("message", "The message field is required.")],
        ),
        (
            INSERT,
            json!({"conversation_id": 1, "message": "é".repeat(32_768)}),
            vec![(
                "message",
                "The message may not be greater than 65535 bytes.",
            )],
        ),
        (
            CREATE,
            json!({"title": ["x"]}),
            vec![
                ("product_id", "The product id field is required."),
                ("message", "The message field is required."),
                ("title", "The title must be a string."),
            ],
        ),
        (
            CREATE,
            json!({"product_id": true, "message": "x", "title": "t".repeat(1001)}),
            vec![
                ("product_id", "The product id must be an integer."),
                (
                    "title",
                    "The title may not be greater than 1000 characters.",
                ),
            ],
        ),
    ];
    for (route, body, errors) in cases {
        let res = app.post_json(route, CUST1, &body).await;
        assert_eq!(res.status, 422, "{route} {body}");
        assert_eq!(res.header("content-type"), Some("application/json"));
        let expected = match route {
            CREATE => pretty_422_result_false(&errors),
            _ => pretty_422(&errors),
        };
        assert_eq!(res.text(), expected, "{route} {body}");
    }
    // Form bodies with invalid UTF-8 are not strings.
    let res = app
        .call(
            "POST",
            INSERT,
            Some(CUST1),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"conversation_id=1&message=%FF",
        )
        .await;
    assert_eq!(
        res.text(),
        pretty_422(&[("message", "The message must be a string.")])
    );
    assert_eq!(counts(&app).await, before, "D2/D3: nothing written");
    app.finish().await;
}

#[tokio::test]
async fn non_participants_cannot_post() {
    let app = spawn_app().await;
    let before = counts(&app).await;
    for (token, cid, shown) in [
        (CUST2, "1", "1"),
        (SELLER2, " 2 ", "2"),
        (CUST1, "+999", "+999"),
        (CUST1, "-1", "-1"),
    ] {
        let res = app
            .post_form(
                INSERT,
                token,
                &[("conversation_id", cid), ("message", "hi")],
            )
            .await;
        assert_eq!(res.status, 404);
        assert_eq!(res.text(), format!("{{\n    \"message\": \"No query results for model [App\\\\Models\\\\Conversation] {shown}\"\n}}"));
    }
    let res = app
        .post_json(
            INSERT,
            CUST2,
            &json!({"conversation_id": 1, "message": "hi"}),
        )
        .await;
    assert_eq!(res.status, 404);
    assert_eq!(counts(&app).await, before);
    app.finish().await;
}

#[tokio::test]
async fn viewed_flags_follow_the_author() {
    let app = spawn_app().await;
    let flags = "SELECT sender_viewed, receiver_viewed, CAST(updated_at AS CHAR) FROM conversations WHERE id = 1";
    assert_eq!(app.db.rows(flags).await[0][..2], ["1", "0"]);
    // Sender posts while the flags already say 1/0: no change, updated_at untouched.
    let res = app
        .post_form(
            INSERT,
            CUST1,
            &[
                ("conversation_id", "1"),
                ("message", "again"),
                ("user_id", "2"),
            ],
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        app.db.rows(flags).await[0],
        ["1", "0", "2024-06-03 21:45:00"],
        "client user_id changes nothing"
    );
    // Receiver posts: 0/1 and updated_at moves.
    app.post_form(
        INSERT,
        SELLER1,
        &[
            ("conversation_id", "1"),
            ("message", "reply"),
            ("user_id", "5"),
        ],
    )
    .await;
    let row = &app.db.rows(flags).await[0];
    assert_eq!(row[..2], ["0", "1"]);
    assert_ne!(row[2], "2024-06-03 21:45:00");
    // Sender answers: back to 1/0.
    app.post_json(
        INSERT,
        CUST1,
        &json!({"conversation_id": "1", "message": "thanks"}),
    )
    .await;
    assert_eq!(app.db.rows(flags).await[0][..2], ["1", "0"]);
    // The answer is the new message on a one-item page.
    let res = app
        .post_json(
            INSERT,
            CUST1,
            &json!({"conversation_id": 1, "message": "x / «y»"}),
        )
        .await
        .json();
    assert_eq!(res["meta"]["per_page"], 1);
    assert_eq!(res["data"][0]["message"], "x / «y»");
    assert_eq!(res["data"][0]["user_id"], 5);
    app.finish().await;
}

#[tokio::test]
async fn a_post_is_four_statements() {
    // BEGIN, the claim on the conversation row (its lock and the D5 flags in one UPDATE), the
    // INSERT, COMMIT: writes were most of the statements of app traffic (bench/apptraffic.sh),
    // and each round trip holds a pooled connection inside the transaction.
    // The token's lookup and its touch are counted elsewhere; here they would only add noise.
    let (app, user) = spawn_counted(&[
        ("SHOPCHAT_RATE_LIMIT", "0"),
        ("SHOPCHAT_AUTH_CACHE_MS", "600000"),
    ])
    .await;
    let post = |text: String| {
        let app = &app;
        async move {
            let res = app
                .post_form(
                    INSERT,
                    CUST1,
                    &[("conversation_id", "1"), ("message", &text)],
                )
                .await;
            assert_eq!(res.status, 200, "{}", res.text());
        }
    };
    // Warm: the token, the participants, the pool's connections and their prepared statements.
    for i in 0..12 {
        post(format!("warm {i}")).await;
    }
    let before = statements_besides_scans(&app, &user).await;
    const POSTS: i64 = 20;
    for i in 0..POSTS {
        post(format!("counted {i}")).await;
    }
    let spent = statements_besides_scans(&app, &user).await - before;
    // A little room for a pooled connection that is replaced or prepares again.
    assert!(
        (POSTS * 4..=POSTS * 4 + 6).contains(&spent),
        "{spent} statements for {POSTS} posts"
    );
    let stored: Vec<Vec<String>> = app
        .db
        .rows(
            "SELECT COUNT(*) FROM messages WHERE conversation_id = 1 AND message LIKE 'counted %'",
        )
        .await;
    assert_eq!(stored[0][0], POSTS.to_string());
    app.finish().await;
}

#[tokio::test]
async fn create_reuses_the_newest_matching_conversation() {
    let app = spawn_app().await;
    let res = app
        .post_form(
            CREATE,
            CUST1,
            &[
                ("product_id", "3"),
                ("title", "Mechanical Gaming Keyboard"),
                ("message", "again?"),
            ],
        )
        .await;
    assert_eq!(
        res.json()["conversation_id"],
        1,
        "same sender, receiver and title"
    );
    // Titles compare exactly (case matters) and a missing title matches only NULL titles.
    let other = app
        .post_form(
            CREATE,
            CUST1,
            &[
                ("product_id", "3"),
                ("title", "mechanical gaming keyboard"),
                ("message", "x"),
            ],
        )
        .await
        .json();
    assert_eq!(other["conversation_id"], 6);
    let untitled = app
        .post_form(CREATE, CUST1, &[("product_id", "3"), ("message", "x")])
        .await
        .json();
    assert_eq!(untitled["conversation_id"], 7);
    assert_eq!(untitled["title"], serde_json::Value::Null);
    let again = app
        .post_json(
            CREATE,
            CUST1,
            &json!({"product_id": 3, "message": "y", "title": ""}),
        )
        .await
        .json();
    assert_eq!(again["conversation_id"], 7, "empty title is null");
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM messages WHERE conversation_id = 7")
            .await,
        "2"
    );
    assert_eq!(
        app.db.scalar("SELECT COUNT(*) FROM conversations").await,
        "7"
    );
    app.finish().await;
}

#[tokio::test]
async fn concurrent_creates_across_processes_make_one_conversation() {
    let app = spawn_app().await;
    // A second shopchat "process" on the same database.
    let (other_addr, _second_outbox) = another_instance(&app, &[]).await;

    let body = crate::raw_http::form(&[
        ("product_id", "4"),
        ("title", "Linen Shirt"),
        ("message", "Is it in stock?"),
    ]);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let addr = if i % 2 == 0 {
            app.addr.clone()
        } else {
            other_addr.clone()
        };
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            request_at(
                &addr,
                "POST",
                CREATE,
                CUST2,
                Some(("application/x-www-form-urlencoded", body.as_bytes())),
            )
            .await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        let res = t.await.unwrap();
        assert_eq!(res.status, 200, "{}", res.text());
        ids.push(res.json()["conversation_id"].as_i64().unwrap());
    }
    ids.dedup();
    assert_eq!(
        ids.len(),
        1,
        "every call got the same conversation: {ids:?}"
    );
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM conversations WHERE sender_id = 6 AND receiver_id = 3 AND title = 'Linen Shirt'").await, "1");
    assert_eq!(
        app.db
            .scalar(&format!(
                "SELECT COUNT(*) FROM messages WHERE conversation_id = {}",
                ids[0]
            ))
            .await,
        "16"
    );
    app.finish().await;
}

#[tokio::test]
async fn create_holds_one_pool_connection_at_a_time() {
    // The D6 transaction runs on the named lock's own connection. When it took
    // a second one from the pool, concurrent creates could hold every pooled
    // connection with a lock and all wait for a second (found by bench/run.sh:
    // 503s after the acquire timeout at 16 connections with a pool of 10). With
    // a pool of one connection that wait is certain, so it shows here without
    // any concurrency.
    let app = spawn_app_with(&[
        ("SHOPCHAT_DB_POOL_SIZE", "1"),
        ("SHOPCHAT_DB_ACQUIRE_TIMEOUT_MS", "1000"),
    ])
    .await;
    let res = app
        .post_form(
            CREATE,
            CUST1,
            &[
                ("product_id", "3"),
                ("title", "Mechanical Gaming Keyboard"),
                ("message", "one connection is enough"),
            ],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["conversation_id"], 1, "reused (D6)");
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM messages WHERE conversation_id = 1 AND message = 'one connection is enough'")
            .await,
        "1"
    );
    // The lock was released on that connection: the next call gets it at once.
    let again = app
        .post_form(
            CREATE,
            CUST1,
            &[
                ("product_id", "3"),
                ("title", "Mechanical Gaming Keyboard"),
                ("message", "and again"),
            ],
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.text());
    app.finish().await;
}

#[tokio::test]
async fn a_failure_between_the_inserts_leaves_nothing() {
    let app = spawn_app().await;
    // A message column narrower than the product's own DDL: the *second* insert of a new
    // conversation (the message) fails after the conversation row was written. Existing rows
    // are longer than 10 characters: this ALTER may truncate them.
    let mut conn = app.db.pool.acquire().await.unwrap();
    sqlx::query("SET SESSION sql_mode = ''")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE messages MODIFY message VARCHAR(10)")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let before = counts(&app).await;
    let res = app
        .post_form(
            CREATE,
            CUST2,
            &[
                ("product_id", "3"),
                ("title", "New thing"),
                ("message", "far more than ten characters"),
            ],
        )
        .await;
    assert_eq!(res.status, 422, "{}", res.text());
    assert_eq!(
        res.text(),
        pretty_422_result_false(&[(
            "message",
            "The message may not be greater than 65535 bytes."
        )])
    );
    assert_eq!(
        counts(&app).await,
        before,
        "D3: neither the conversation nor the message"
    );
    let staged = std::fs::read_dir(app.outbox.path().join("staging"))
        .unwrap()
        .count();
    let pending = std::fs::read_dir(app.outbox.path().join("pending"))
        .unwrap()
        .count();
    assert_eq!(
        (staged, pending),
        (0, 0),
        "no e-mail for a conversation that does not exist"
    );

    // Data too long on insert-message is a 422 too (no "result" there).
    let res = app
        .post_form(
            INSERT,
            CUST1,
            &[
                ("conversation_id", "1"),
                ("message", "far more than ten characters"),
            ],
        )
        .await;
    assert_eq!(
        res.text(),
        pretty_422(&[(
            "message",
            "The message may not be greater than 65535 bytes."
        )])
    );
    assert_eq!(counts(&app).await, before);
    app.finish().await;
}

#[tokio::test]
async fn products_without_owner_and_sellers_without_shop() {
    let app = spawn_app().await;
    let res = app
        .post_form(CREATE, CUST1, &[("product_id", " 999 "), ("message", "x")])
        .await;
    assert_eq!(res.status, 404);
    assert_eq!(
        res.text(),
        "{\n    \"message\": \"No query results for model [App\\\\Models\\\\Product] 999\"\n}"
    );
    let res = app
        .call(
            "POST",
            CREATE,
            Some(CUST1),
            &[
                ("Accept", "text/html"),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            b"product_id=999&message=x",
        )
        .await;
    assert_eq!(res.status, 404);
    assert!(
        res.text().contains("404 | Not Found"),
        "PHP-mirroring 404 is HTML for browsers"
    );
    // D4: the owner was deleted → the same 404, nothing written.
    sqlx::query("DELETE FROM users WHERE id = 3")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let before = counts(&app).await;
    let res = app
        .post_json(CREATE, CUST1, &json!({"product_id": 4, "message": "x"}))
        .await;
    assert_eq!(res.status, 404);
    assert_eq!(counts(&app).await, before);
    // D4: a seller without shop answers with his name and the placeholder.
    let res = app
        .post_json(CREATE, CUST1, &json!({"product_id": 5, "message": "mug?"}))
        .await;
    assert_eq!(
        res.text(),
        format!(
            r#"{{"result":true,"conversation_id":{},"shop_name":"Nadia NoShop","shop_logo":"http:\/\/shop.test\/public\/assets\/img\/placeholder.jpg","title":null,"message":"Conversation created"}}"#,
            res.json()["conversation_id"]
        )
    );
    app.finish().await;
}

/// `ALTER TABLE … CONVERT TO CHARACTER SET …` on the shop's database, outside strict mode (the
/// fixture's one emoji, message 35, becomes `?` when narrowing).
async fn convert_table(db: &TestDb, table: &str, charset: &str) {
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::raw_sql(&format!(
        "SET SESSION sql_mode = ''; ALTER TABLE {table} CONVERT TO CHARACTER SET {charset} COLLATE {charset}_unicode_ci"
    ))
    .execute(&mut *conn)
    .await
    .unwrap();
}

async fn degraded(app: &TestApp, column: &str) -> String {
    let metrics = app.call("GET", "/metrics", None, &[], b"").await.text();
    let line = format!("shopchat_storage_degraded_total{{column=\"{column}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or("0")
        .to_string()
}

#[tokio::test]
async fn characters_a_column_cannot_hold_are_stored_as_php_stores_them() {
    // Many shops still have utf8mb3 chat tables: an emoji is stored as `?` with a 200, as PHP
    // (non-strict) stores it, instead of a 422 the app cannot show (COMPAT §5.0, 2026-12).
    let db = TestDb::fresh().await;
    convert_table(&db, "messages", "utf8mb3").await;
    convert_table(&db, "conversations", "utf8mb3").await;
    let app = spawn_app_on(db, &[]).await;

    let res = app
        .post_json(
            INSERT,
            CUST1,
            &json!({"conversation_id": "1", "message": "see you 😀 tomorrow 👍"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["data"][0]["message"], "see you ? tomorrow ?");
    assert_eq!(
        app.db
            .scalar("SELECT message FROM messages ORDER BY id DESC LIMIT 1")
            .await,
        "see you ? tomorrow ?"
    );
    assert_eq!(degraded(&app, "messages.message").await, "1");

    // create-conversation: the title and the message, each in its own column.
    let title = "🔥 Hot keyboard";
    let res = app
        .post_json(
            CREATE,
            CUST2,
            &json!({"product_id": "3", "title": title, "message": "in stock? 🙏"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    assert_eq!(body["result"], true);
    assert_eq!(
        body["title"], title,
        "the answer shows the input (§5.5 step 6)"
    );
    let id = body["conversation_id"].as_i64().unwrap();
    assert_eq!(
        app.db
            .rows(&format!(
                "SELECT c.title, m.message FROM conversations c JOIN messages m ON m.conversation_id = c.id WHERE c.id = {id}"
            ))
            .await,
        vec![vec!["? Hot keyboard".to_string(), "in stock? ?".to_string()]]
    );
    assert_eq!(degraded(&app, "conversations.title").await, "1");
    assert_eq!(degraded(&app, "messages.message").await, "2");
    // The same question again reuses that conversation (D6 on what the column stores).
    let again = app
        .post_json(
            CREATE,
            CUST2,
            &json!({"product_id": "3", "title": title, "message": "hello?"}),
        )
        .await
        .json();
    assert_eq!(again["conversation_id"], id);

    // The shop converts the messages table while shopchat runs: emoji are kept from then on.
    convert_table(&app.db, "messages", "utf8mb4").await;
    let res = app
        .post_json(
            INSERT,
            CUST1,
            &json!({"conversation_id": 1, "message": "now 😀 works"}),
        )
        .await;
    assert_eq!(res.json()["data"][0]["message"], "now 😀 works");
    assert_eq!(degraded(&app, "messages.message").await, "2");
    // …and one converted to utf8mb3 while shopchat runs is met at the first write.
    convert_table(&app.db, "messages", "utf8mb3").await;
    let res = app
        .post_json(
            INSERT,
            SELLER1,
            &json!({"conversation_id": 1, "message": "ok 👌"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["data"][0]["message"], "ok ?");
    assert_eq!(degraded(&app, "messages.message").await, "3");
    // Only that column is written non-strictly: a too-long value is still a 422.
    let res = app
        .post_json(
            INSERT,
            CUST1,
            &json!({"conversation_id": 1, "message": "é".repeat(32_768)}),
        )
        .await;
    assert_eq!(res.status, 422);
    app.finish().await;
}

#[tokio::test]
async fn the_reuse_lookup_reads_only_matching_titles() {
    // Security review M4: create-conversation loaded every conversation of the pair (and their
    // titles, up to 1,000 characters each) inside the lock, to compare titles in code.
    let db = TestDb::fresh().await;
    sqlx::raw_sql(
        "INSERT INTO conversations (sender_id, receiver_id, title, created_at, updated_at) \
         SELECT 6, 2, CONCAT('Question ', seq, ' ', REPEAT('x', 900)), '2024-01-01 00:00:00', '2024-01-01 00:00:00' \
         FROM seq_1_to_500",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let user = db.counted_user().await;
    let app = spawn_app_on(db, &user.env()).await;
    let ask = |title: &str| {
        let body = json!({"product_id": 3, "title": title, "message": "again"});
        let app = &app;
        async move { app.post_json(CREATE, CUST2, &body).await }
    };
    // Warm the pool and the caches first.
    assert_eq!(ask("Warm-up").await.status, 200);
    let before = app.db.rows_sent(&user).await;
    let title = format!("Question 250 {}", "x".repeat(900));
    let res = ask(&title).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let reused = res.json()["conversation_id"].as_i64().unwrap();
    assert_eq!(
        app.db
            .scalar(&format!(
                "SELECT CAST(title = '{title}' AS SIGNED) FROM conversations WHERE id = {reused}"
            ))
            .await,
        "1",
        "the exact match was reused"
    );
    let sent = app.db.rows_sent(&user).await - before;
    assert!(
        sent < 50,
        "{sent} rows sent for one create among 500 conversations of the pair"
    );
    app.finish().await;
}

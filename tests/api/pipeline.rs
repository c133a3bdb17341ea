//! The request pipeline (COMPAT §1, §2): routing answers, Host check,
//! throttle, Sanctum, maintenance, System-Key, locale, request limits.

use crate::helpers::*;

const LIST: &str = "/api/v2/chat/conversations";

#[tokio::test]
async fn options_405_and_404_skip_the_pipeline() {
    let app = spawn_app().await;
    let res = app
        .call("OPTIONS", "/api/v2/chat/insert-message", None, &[], b"")
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("allow"), Some("GET,HEAD,POST"));
    assert_eq!(res.header("content-type"), Some("text/html; charset=UTF-8"));
    assert!(res.body.is_empty());
    assert_eq!(
        res.header("x-ratelimit-limit"),
        None,
        "not counted by the throttle"
    );

    let res = app.call("POST", LIST, None, &[], b"").await;
    assert_eq!(res.status, 405);
    assert_eq!(res.header("allow"), Some("GET, HEAD"));
    assert_eq!(
        res.text(),
        "{\n    \"message\": \"The POST method is not supported for route api/v2/chat/conversations. Supported methods: GET, HEAD.\"\n}"
    );
    let res = app
        .call(
            "DELETE",
            "/api/v2/chat/create-conversation",
            None,
            &[("Accept", "text/html")],
            b"",
        )
        .await;
    assert_eq!(res.status, 405);
    assert_eq!(res.header("allow"), Some("GET, HEAD, POST"));
    assert!(res.text().contains("405 | Method Not Allowed"));

    let res = app.call("GET", "/foo/bar/", None, &[], b"").await;
    assert_eq!(res.status, 404);
    assert_eq!(
        res.text(),
        "{\n    \"message\": \"The route foo/bar could not be found.\"\n}"
    );
    let res = app
        .call("GET", "/", None, &[("Accept", "text/html")], b"")
        .await;
    assert_eq!(res.status, 404);
    assert_eq!(res.header("content-type"), Some("text/html; charset=UTF-8"));
    app.finish().await;
}

#[tokio::test]
async fn host_check_and_headers_on_every_answer() {
    let app = spawn_app().await;
    let res = app
        .call("GET", LIST, Some(CUST1), &[("Host", "bad host")], b"")
        .await;
    assert_eq!(res.status, 404);
    assert_eq!(
        res.text(),
        "{\n    \"message\": \"Bad hostname provided.\"\n}"
    );

    let res = app
        .call(
            "GET",
            LIST,
            Some(CUST1),
            &[("X-Request-Id", "abc-123")],
            b"",
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("cache-control"), Some("no-cache, private"));
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.header("x-request-id"), Some("abc-123"));
    assert!(res.header("date").is_some());
    assert!(res.header("set-cookie").is_none(), "D10: no cookie");
    let res = app
        .call(
            "GET",
            LIST,
            Some(CUST1),
            &[("X-Request-Id", "no spaces allowed")],
            b"",
        )
        .await;
    assert_eq!(res.header("x-request-id").map(str::len), Some(32));

    // The port is kept unless it is the scheme's default (§4.3).
    let res = app
        .call(
            "GET",
            LIST,
            Some(CUST1),
            &[("Host", "Shop.EXAMPLE.com:8443")],
            b"",
        )
        .await;
    assert_eq!(
        res.json()["meta"]["path"],
        "http://shop.example.com:8443/api/v2/chat/conversations"
    );
    app.finish().await;
}

#[tokio::test]
async fn forwarded_headers_only_from_trusted_proxies() {
    let app = spawn_app_with(&[("SHOPCHAT_TRUSTED_PROXIES", "127.0.0.1")]).await;
    let fwd = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "shop.example.com"),
    ];
    let res = app.call("GET", LIST, Some(CUST1), &fwd, b"").await;
    assert_eq!(
        res.json()["meta"]["path"],
        "https://shop.example.com/api/v2/chat/conversations"
    );
    app.finish().await;

    let app = spawn_app().await;
    let res = app.call("GET", LIST, Some(CUST1), &fwd, b"").await;
    assert_eq!(
        res.json()["meta"]["path"],
        "http://shop.test/api/v2/chat/conversations",
        "untrusted peer"
    );
    app.finish().await;
}

#[tokio::test]
async fn base_path_is_part_of_root() {
    let app = spawn_app_with(&[("SHOPCHAT_BASE_PATH", "/shop")]).await;
    let res = app.get("/shop/api/v2/chat/conversations/", CUST1).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.json()["meta"]["path"],
        "http://shop.test/shop/api/v2/chat/conversations"
    );
    let res = app
        .call(
            "GET",
            "/shop/api/v2/chat/conversations",
            None,
            &[("Accept", "text/html")],
            b"",
        )
        .await;
    assert_eq!(res.status, 302);
    assert_eq!(res.header("location"), Some("http://shop.test/shop/login"));
    let res = app.get("/api/v2/chat/conversations", CUST1).await;
    assert_eq!(res.status, 404, "outside the base path");
    app.finish().await;
}

#[tokio::test]
async fn sanctum_failures_are_401_or_302() {
    let app = spawn_app().await;
    for auth in [
        "Bearer 999|nope",
        "Bearer 5|",
        "Bearer 5|0",
        "bearer 5|e82dec50eb35333b411bdc59de6c1b222cbf49b6",
        "Basic abc",
        "Bearer  5|x",
    ] {
        let res = app
            .call("GET", LIST, None, &[("Authorization", auth)], b"")
            .await;
        assert_eq!(res.status, 401, "{auth}");
        assert_eq!(res.text(), "{\"message\":\"Unauthenticated.\"}");
    }
    // The last "Bearer " wins and the value ends at the first comma.
    let res = app
        .call(
            "GET",
            LIST,
            None,
            &[(
                "Authorization",
                &format!("Token x, Bearer {CUST1}, Basic y"),
            )],
            b"",
        )
        .await;
    assert_eq!(res.status, 200);
    let res = app
        .call(
            "GET",
            LIST,
            Some(CUST1_EXPIRED),
            &[("Accept", "text/html")],
            b"",
        )
        .await;
    assert_eq!(res.status, 302);
    assert_eq!(res.header("location"), Some("http://shop.test/login"));

    // A token of a deleted user, and one of an unknown model class.
    sqlx::query("DELETE FROM users WHERE id = 7")
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(app.get(LIST, CUST3).await.status, 401);
    sqlx::query(
        "UPDATE personal_access_tokens SET tokenable_type = 'App\\\\Models\\\\Seller' WHERE id = 6",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(app.get(LIST, CUST2).await.status, 401);
    app.finish().await;
}

#[tokio::test]
async fn token_expiration_setting() {
    // The fixture tokens were created 2024-04-01: a 60-minute lifetime has long passed.
    let app = spawn_app_with(&[
        ("SHOPCHAT_SANCTUM_EXPIRATION", "60"),
        ("SHOPCHAT_AUTH_CACHE_MS", "0"),
    ])
    .await;
    assert_eq!(app.get(LIST, CUST1).await.status, 401);
    sqlx::query("UPDATE personal_access_tokens SET created_at = UTC_TIMESTAMP() WHERE id = 5")
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(app.get(LIST, CUST1).await.status, 200);
    app.finish().await;
}

#[tokio::test]
async fn a_schema_error_never_switches_expiry_checks_off() {
    // A `users` column missing for a moment (a migration) is a failing query, nothing more:
    // expired tokens stay expired afterwards (security review L6; before, any "unknown column"
    // turned expiry checks off for the life of the process).
    let app = spawn_app_with(&[("SHOPCHAT_AUTH_CACHE_MS", "0")]).await;
    assert_eq!(app.get(LIST, CUST1_EXPIRED).await.status, 401);
    sqlx::raw_sql("ALTER TABLE users CHANGE banned banned_x TINYINT NOT NULL DEFAULT 0")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let res = app.get(LIST, CUST1_EXPIRED).await;
    assert!(res.status >= 500, "{}: {}", res.status, res.text());
    sqlx::raw_sql("ALTER TABLE users CHANGE banned_x banned TINYINT NOT NULL DEFAULT 0")
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        app.get(LIST, CUST1_EXPIRED).await.status,
        401,
        "still expired"
    );
    assert_eq!(app.get(LIST, CUST1).await.status, 200);
    app.finish().await;
}

/// Pretends token 5 was last used long ago.
async fn age_last_used(app: &TestApp) {
    sqlx::query(
        "UPDATE personal_access_tokens SET last_used_at = '2020-01-01 00:00:00' WHERE id = 5",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn token_touch_is_throttled() {
    let app = spawn_app_with(&[("SHOPCHAT_AUTH_CACHE_MS", "0")]).await;
    let last_used = "SELECT CAST(last_used_at AS CHAR) FROM personal_access_tokens WHERE id = 5";
    assert_eq!(app.db.scalar(last_used).await, "NULL");
    app.get(LIST, CUST1).await;
    let first = app.db.scalar(last_used).await;
    assert_ne!(first, "NULL", "the first use is recorded");
    age_last_used(&app).await;
    app.get(LIST, CUST1).await;
    assert_eq!(
        app.db.scalar(last_used).await,
        "2020-01-01 00:00:00",
        "D9: at most one write a minute"
    );
    app.finish().await;

    let app = spawn_app_with(&[("SHOPCHAT_TOKEN_TOUCH_SECONDS", "0")]).await;
    app.get(LIST, CUST1).await;
    age_last_used(&app).await;
    app.get(LIST, CUST1).await;
    assert_ne!(
        app.db.scalar(last_used).await,
        "2020-01-01 00:00:00",
        "0 = PHP: every request"
    );
    app.finish().await;
}

#[tokio::test]
async fn rate_limit_per_user_then_ip() {
    let app = spawn_app_with(&[("SHOPCHAT_RATE_LIMIT", "3")]).await;
    for remaining in ["2", "1", "0"] {
        let res = app.get(LIST, CUST1).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(res.header("x-ratelimit-remaining"), Some(remaining));
    }
    let res = app.get(LIST, CUST1).await;
    assert_eq!(res.status, 429);
    assert_eq!(res.text(), "{\n    \"message\": \"Too Many Attempts.\"\n}");
    assert_eq!(res.header("x-ratelimit-remaining"), Some("0"));
    let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    let reset: i64 = res.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!((reset - chrono::Utc::now().timestamp() - retry as i64).abs() <= 1);
    // D8: another user behind the same address has a bucket of his own.
    assert_eq!(app.get(LIST, CUST2).await.status, 200);
    // Without a valid token the client IP is the key.
    for _ in 0..3 {
        assert_eq!(app.call("GET", LIST, None, &[], b"").await.status, 401);
    }
    assert_eq!(app.call("GET", LIST, None, &[], b"").await.status, 429);
    app.finish().await;

    let app = spawn_app_with(&[("SHOPCHAT_RATE_LIMIT", "0")]).await;
    let res = app.get(LIST, CUST1).await;
    assert_eq!(res.header("x-ratelimit-limit"), None, "0 = off, no headers");
    app.finish().await;
}

#[tokio::test]
async fn maintenance_answers_after_authentication() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("storage/framework")).unwrap();
    std::fs::write(dir.path().join("storage/framework/down"), "{}").unwrap();
    let app = spawn_app_with(&[("SHOPCHAT_LARAVEL_ROOT", dir.path().to_str().unwrap())]).await;
    assert_eq!(app.call("GET", LIST, None, &[], b"").await.status, 401);
    let res = app.get(LIST, CUST1).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.text(),
        r#"{"result":false,"status":"maintenance","message":"We are Under Maintenance"}"#
    );
    app.finish().await;
}

#[tokio::test]
async fn system_key_fallback_and_locale() {
    let app = spawn_app().await;
    for key in ["", "0", "wrong"] {
        let res = app
            .call("GET", LIST, Some(CUST1), &[("System-Key", key)], b"")
            .await;
        assert_eq!(
            res.text(),
            r#"{"result":false,"message":"Request not found!"}"#,
            "key {key:?}"
        );
    }
    // The fallback needs the System-Key but no token.
    let res = app.call("GET", "/api/v2/chat/nope", None, &[], b"").await;
    assert_eq!(
        res.text(),
        r#"{"data":[],"success":false,"status":404,"message":"Invalid Route"}"#
    );
    assert_eq!(res.header("x-ratelimit-limit"), Some("600"));
    // D11: a locale with a path separator is a locale without translations.
    let res = app
        .call(
            "POST",
            "/api/v2/chat/create-conversation",
            Some(CUST1),
            &[
                ("App-Language", "../sa"),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            b"product_id=3&message=hi",
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["message"], "Conversation created");
    app.finish().await;
}

#[tokio::test]
async fn banned_user_loses_the_token() {
    let app = spawn_app().await;
    // Without System-Key the banned user keeps the token.
    let res = app
        .call("GET", LIST, Some(BANNED), &[("System-Key", "")], b"")
        .await;
    assert_eq!(
        res.text(),
        r#"{"result":false,"message":"Request not found!"}"#
    );
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM personal_access_tokens WHERE id = 8")
            .await,
        "1"
    );
    let res = app.get(LIST, BANNED).await;
    assert_eq!(
        res.text(),
        r#"{"result":false,"status":"banned","message":"user is banned"}"#
    );
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM personal_access_tokens WHERE id = 8")
            .await,
        "0"
    );
    assert_eq!(app.get(LIST, BANNED).await.status, 401);
    app.finish().await;
}

#[tokio::test]
async fn request_limits() {
    let app = spawn_app_with(&[("SHOPCHAT_MAX_BODY_BYTES", "1000")]).await;
    let big = "x".repeat(2000);
    let res = app
        .post_form(
            "/api/v2/chat/insert-message",
            CUST1,
            &[("conversation_id", "1"), ("message", &big)],
        )
        .await;
    assert_eq!(res.status, 413);
    assert_eq!(
        res.text(),
        "{\n    \"message\": \"The POST data is too large.\"\n}"
    );
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM messages").await, "42");
    app.finish().await;
}

#[tokio::test]
async fn concurrent_token_lookups_are_answered_each_for_its_own_token() {
    // Lookups by id are batched into shared statements under load: every
    // caller must still get exactly its own user (or its own 401).
    let app = spawn_app_with(&[
        ("SHOPCHAT_AUTH_CACHE_MS", "0"),
        ("SHOPCHAT_RATE_LIMIT", "0"),
    ])
    .await;
    let tokens = [
        (CUST1, 200, 2),
        (CUST2, 200, 1),
        (CUST3, 200, 1),
        (SELLER1, 200, 0),
        (CUST1_EXPIRED, 401, 0),
        ("999|nope", 401, 0),
        ("5|wrong-secret", 401, 0),
    ];
    let mut tasks = Vec::new();
    for round in 0..30 {
        for (token, status, conversations) in tokens {
            let addr = app.addr.clone();
            tasks.push(tokio::spawn(async move {
                let res = request_at(&addr, "GET", LIST, token, None).await;
                assert_eq!(res.status, status, "round {round} token {token}");
                if status == 200 {
                    assert_eq!(res.json()["meta"]["total"], conversations, "token {token}");
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    app.finish().await;
}

#[tokio::test]
async fn concurrent_first_requests_each_touch_their_own_token() {
    // Touches due at the same moment share one UPDATE under load (D9): each
    // token that made a request gets its `last_used_at`, no other token does.
    let app = spawn_app_with(&[("SHOPCHAT_RATE_LIMIT", "0")]).await;
    let pool = &app.db.pool;
    let ids: Vec<u64> = (1001..1061).collect();
    for id in &ids {
        sqlx::query(
            "INSERT INTO personal_access_tokens (id, tokenable_type, tokenable_id, name, token, abilities, created_at, updated_at) \
             VALUES (?, 'App\\\\Models\\\\User', 5, 'auth_token', SHA2(?, 256), '[\"*\"]', '2024-04-01 00:00:00', '2024-04-01 00:00:00')",
        )
        .bind(id)
        .bind(format!("secret-{id}"))
        .execute(pool)
        .await
        .unwrap();
    }
    // Every other token of the user, fresh and unused.
    let untouched = ids[40..].to_vec();
    let mut tasks = Vec::new();
    for id in &ids[..40] {
        let (addr, token) = (app.addr.clone(), format!("{id}|secret-{id}"));
        tasks.push(tokio::spawn(async move {
            request_at(&addr, "GET", LIST, &token, None).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let touched = app
        .db
        .rows("SELECT id FROM personal_access_tokens WHERE id > 1000 AND last_used_at IS NOT NULL AND updated_at = last_used_at ORDER BY id")
        .await;
    let touched: Vec<u64> = touched.iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(touched, ids[..40].to_vec());
    let never = app
        .db
        .scalar(&format!(
            "SELECT COUNT(*) FROM personal_access_tokens WHERE id >= {} AND last_used_at IS NULL",
            untouched[0]
        ))
        .await;
    assert_eq!(never, "20");
    app.finish().await;
}

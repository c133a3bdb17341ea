//! Authorization audit: every chat endpoint × caller × target,
//! asserting the documented answer (§1.2 steps 3 and 7, D1, §5) and, for
//! writes, the database afterwards. Also: the service's own log (the real
//! binary at RUST_LOG=debug) never contains a bearer secret or message text.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::helpers::*;
use crate::process::Binary;
use crate::raw_http::{self, Response};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    /// Conversation 1: sender user 5, receiver user 2.
    Sender,
    Receiver,
    OtherCustomer,
    /// User 3: a seller, receiver of conversation 3.
    OtherSeller,
    Admin,
    Banned,
    Expired,
    DeletedToken,
    DeletedUserToken,
}

const CALLERS: [Caller; 9] = [
    Caller::Sender,
    Caller::Receiver,
    Caller::OtherCustomer,
    Caller::OtherSeller,
    Caller::Admin,
    Caller::Banned,
    Caller::Expired,
    Caller::DeletedToken,
    Caller::DeletedUserToken,
];

const DELETED_TOKEN: &str = "60|authz-deleted-token-secret";
const ORPHAN_TOKEN: &str = "61|authz-orphan-token-secret";

impl Caller {
    fn token(self) -> &'static str {
        match self {
            Caller::Sender => CUST1,
            Caller::Receiver => SELLER1,
            Caller::OtherCustomer => CUST3,
            Caller::OtherSeller => SELLER2,
            Caller::Admin => ADMIN,
            Caller::Banned => BANNED,
            Caller::Expired => CUST1_EXPIRED,
            Caller::DeletedToken => DELETED_TOKEN,
            Caller::DeletedUserToken => ORPHAN_TOKEN,
        }
    }

    /// The user id when the token authenticates (banned users do, §1.2 step 7).
    fn user(self) -> Option<i64> {
        match self {
            Caller::Sender => Some(5),
            Caller::Receiver => Some(2),
            Caller::OtherCustomer => Some(7),
            Caller::OtherSeller => Some(3),
            Caller::Admin => Some(1),
            Caller::Banned => Some(8),
            _ => None,
        }
    }
}

/// Conversation targets: 1 (sender 5, receiver 2), 3 (6 ↔ 3), missing.
const TARGETS: [i64; 3] = [1, 3, 999_999];

fn participants(conversation: i64) -> &'static [i64] {
    match conversation {
        1 => &[5, 2],
        3 => &[6, 3],
        _ => &[],
    }
}

fn token_row(id: u64, user: i64, secret: &str) -> String {
    let hash = hex::encode(Sha256::digest(secret.as_bytes()));
    format!("INSERT INTO personal_access_tokens (id, tokenable_type, tokenable_id, name, token, abilities, created_at, updated_at) VALUES ({id}, 'App\\\\Models\\\\User', {user}, 'authz', '{hash}', '[\"*\"]', '2024-04-01 00:00:00', '2024-04-01 00:00:00')")
}

async fn exec(app: &TestApp, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(&app.db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The banned user's token is deleted by every call (K6): put it back.
async fn restore_banned_token(app: &TestApp) {
    exec(app, "DELETE FROM personal_access_tokens WHERE id = 8").await;
    exec(
        app,
        &token_row(8, 8, BANNED.split_once('|').unwrap().1).replace("'authz'", "'auth_token'"),
    )
    .await;
}

/// What may change: messages, conversations and the banned token.
async fn state(app: &TestApp) -> Vec<Vec<String>> {
    let mut rows = app
        .db
        .rows("SELECT id, conversation_id, user_id, message FROM messages ORDER BY id")
        .await;
    rows.extend(
        app.db
            .rows("SELECT id, sender_id, receiver_id, title, sender_viewed, receiver_viewed, CAST(updated_at AS CHAR) FROM conversations ORDER BY id")
            .await,
    );
    rows.extend(
        app.db
            .rows("SELECT id, tokenable_id, token FROM personal_access_tokens ORDER BY id")
            .await,
    );
    rows
}

fn conversation_404(id: i64) -> String {
    format!("{{\n    \"message\": \"No query results for model [App\\\\Models\\\\Conversation] {id}\"\n}}")
}

/// The answer every caller that does not pass authentication gets.
fn check_unauthenticated(caller: Caller, res: &Response, what: &str) -> bool {
    match caller {
        Caller::Banned => {
            assert_eq!(res.status, 200, "{what}");
            assert_eq!(
                res.text(),
                "{\"result\":false,\"status\":\"banned\",\"message\":\"user is banned\"}",
                "{what}"
            );
            true
        }
        Caller::Expired | Caller::DeletedToken | Caller::DeletedUserToken => {
            assert_eq!(res.status, 401, "{what}");
            assert_eq!(res.text(), "{\"message\":\"Unauthenticated.\"}", "{what}");
            true
        }
        _ => false,
    }
}

#[tokio::test]
async fn every_endpoint_caller_and_target() {
    let app = spawn_app_with(&[
        ("SHOPCHAT_RATE_LIMIT", "0"),
        ("SHOPCHAT_AUTH_CACHE_MS", "0"),
    ])
    .await;
    // A deleted token and the token of a deleted user.
    exec(&app, &token_row(60, 6, "authz-deleted-token-secret")).await;
    exec(&app, "DELETE FROM personal_access_tokens WHERE id = 60").await;
    exec(&app, "INSERT INTO users (id, user_type, name, email, banned, created_at, updated_at) VALUES (9, 'customer', 'Gone', 'gone@fixture.test', 0, '2024-04-01 00:00:00', '2024-04-01 00:00:00')").await;
    exec(&app, &token_row(61, 9, "authz-orphan-token-secret")).await;
    exec(&app, "DELETE FROM users WHERE id = 9").await;

    let mut checked = 0;
    for caller in CALLERS {
        // GET conversations: only the conversations the caller started.
        restore_banned_token(&app).await;
        let before = state(&app).await;
        let res = app.get("/api/v2/chat/conversations", caller.token()).await;
        let what = format!("{caller:?} conversations");
        if check_unauthenticated(caller, &res, &what) {
            restore_banned_token(&app).await;
            assert_eq!(state(&app).await, before, "{what}: nothing written");
        } else {
            assert_eq!(res.status, 200, "{what}");
            let user = caller.user().unwrap();
            let own = app
                .db
                .scalar(&format!(
                    "SELECT COUNT(*) FROM conversations WHERE sender_id = {user}"
                ))
                .await;
            assert_eq!(res.json()["meta"]["total"].to_string(), own, "{what}");
            for item in res.json()["data"].as_array().unwrap() {
                let sender = app
                    .db
                    .scalar(&format!(
                        "SELECT sender_id FROM conversations WHERE id = {}",
                        item["id"]
                    ))
                    .await;
                assert_eq!(
                    sender,
                    user.to_string(),
                    "{what}: foreign conversation listed"
                );
            }
        }
        checked += 1;

        for target in TARGETS {
            let allowed = caller
                .user()
                .is_some_and(|u| participants(target).contains(&u) && caller != Caller::Banned);
            for (method, path) in [
                ("GET", format!("/api/v2/chat/messages/{target}")),
                ("GET", format!("/api/v2/chat/get-new-messages/{target}/0")),
                ("POST", "/api/v2/chat/insert-message".to_string()),
            ] {
                restore_banned_token(&app).await;
                let before = state(&app).await;
                let text = format!("authz {caller:?} {target}");
                let res = if method == "POST" {
                    app.post_form(
                        &path,
                        caller.token(),
                        &[("conversation_id", &target.to_string()), ("message", &text)],
                    )
                    .await
                } else {
                    app.get(&path, caller.token()).await
                };
                let what = format!("{caller:?} {method} {path} (conversation {target})");
                checked += 1;
                if check_unauthenticated(caller, &res, &what) {
                    if caller == Caller::Banned {
                        assert_eq!(
                            app.db
                                .scalar("SELECT COUNT(*) FROM personal_access_tokens WHERE id = 8")
                                .await,
                            "0",
                            "{what}: the banned user's token is deleted"
                        );
                    }
                    restore_banned_token(&app).await;
                    assert_eq!(state(&app).await, before, "{what}: nothing written");
                    continue;
                }
                if !allowed {
                    // Foreign and missing conversations look the same (no oracle).
                    assert_eq!(res.status, 404, "{what}: {}", res.text());
                    assert_eq!(res.text(), conversation_404(target), "{what}");
                    assert_eq!(state(&app).await, before, "{what}: nothing written");
                    continue;
                }
                assert_eq!(res.status, 200, "{what}: {}", res.text());
                let after = state(&app).await;
                if method == "GET" {
                    assert_eq!(after, before, "{what}: reads write nothing");
                    continue;
                }
                let user = caller.user().unwrap();
                let id = res.json()["data"][0]["id"].as_i64().unwrap();
                assert_eq!(
                    app.db
                        .rows(&format!(
                            "SELECT conversation_id, user_id, message FROM messages WHERE id = {id}"
                        ))
                        .await,
                    vec![vec![target.to_string(), user.to_string(), text.clone()]],
                    "{what}"
                );
                // D5: the author's side is read, the other side unread.
                let sender = participants(target)[0];
                let flags = if user == sender {
                    ["1", "0"]
                } else {
                    ["0", "1"]
                };
                assert_eq!(
                    app.db
                        .rows(&format!(
                            "SELECT sender_viewed, receiver_viewed FROM conversations WHERE id = {target}"
                        ))
                        .await,
                    vec![vec![flags[0].to_string(), flags[1].to_string()]],
                    "{what}"
                );
                assert_eq!(
                    after.len(),
                    before.len() + 1,
                    "{what}: exactly one row more"
                );
            }
        }

        // create-conversation: any authenticated user may ask about any
        // product; a missing product is 404 Product and writes nothing.
        for (product, owner) in [(3, Some(2)), (5, Some(4)), (999, None)] {
            restore_banned_token(&app).await;
            let before = state(&app).await;
            let text = format!("authz create {caller:?} {product}");
            let res = app
                .post_form(
                    "/api/v2/chat/create-conversation",
                    caller.token(),
                    &[
                        ("product_id", &product.to_string()),
                        ("message", &text),
                        ("title", &format!("authz {caller:?}")),
                    ],
                )
                .await;
            let what = format!("{caller:?} create-conversation product {product}");
            checked += 1;
            if check_unauthenticated(caller, &res, &what) {
                restore_banned_token(&app).await;
                assert_eq!(state(&app).await, before, "{what}: nothing written");
                continue;
            }
            let Some(owner) = owner else {
                assert_eq!(res.status, 404, "{what}");
                assert_eq!(
                    res.text(),
                    "{\n    \"message\": \"No query results for model [App\\\\Models\\\\Product] 999\"\n}"
                );
                assert_eq!(state(&app).await, before, "{what}: nothing written");
                continue;
            };
            assert_eq!(res.status, 200, "{what}: {}", res.text());
            let cid = res.json()["conversation_id"].as_i64().unwrap();
            let user = caller.user().unwrap();
            assert_eq!(
                app.db
                    .rows(&format!(
                        "SELECT c.sender_id, c.receiver_id, m.user_id FROM conversations c JOIN messages m ON m.conversation_id = c.id WHERE c.id = {cid} AND m.message = '{text}'"
                    ))
                    .await,
                vec![vec![user.to_string(), owner.to_string(), user.to_string()]],
                "{what}"
            );
        }
    }
    println!(
        "authz: {checked} endpoint × caller × target cases checked ({} callers)",
        CALLERS.len()
    );
    app.finish().await;
}

#[tokio::test]
async fn logs_hold_no_secret_and_no_message_text() {
    let db = TestDb::fresh().await;
    let outbox = tempfile::tempdir().unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("stderr.log");
    let mut env: HashMap<String, String> = test_env(&db.name, outbox.path());
    // Real SMTP delivery to a port where nobody listens: the worker's
    // failure is logged too.
    env.insert("MAIL_MAILER".into(), "smtp".into());
    env.insert("MAIL_HOST".into(), "127.0.0.1".into());
    env.insert("MAIL_PORT".into(), free_port().to_string());
    env.insert("MAIL_ENCRYPTION".into(), "null".into());
    env.insert("RUST_LOG".into(), "debug".into());
    let mut bin = Binary::start(&env, Some(&log)).await;

    let marker = "zq-private-message-text-4711";
    let wrong_secret = "5|zq-wrong-secret-value-0815";
    let call = |method: &str, path: &str, token: &str, body: String, ct: &str| {
        let auth = format!("Bearer {token}");
        let headers = [
            ("Host".to_string(), "shop.test".to_string()),
            ("Accept".to_string(), "application/json".to_string()),
            ("System-Key".to_string(), SYSTEM_KEY.to_string()),
            ("Authorization".to_string(), auth),
            ("Content-Type".to_string(), ct.to_string()),
        ];
        let (addr, method, path) = (bin.addr.clone(), method.to_string(), path.to_string());
        async move {
            let refs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            raw_http::send(&addr, &method, &path, &refs, body.as_bytes()).await
        }
    };
    let form = |pairs: &[(&str, &str)]| raw_http::form(pairs);
    let mut statuses = Vec::new();
    for res in [
        call(
            "GET",
            "/api/v2/chat/conversations",
            CUST1,
            String::new(),
            "",
        )
        .await,
        call("GET", "/api/v2/chat/messages/1", SELLER1, String::new(), "").await,
        call(
            "POST",
            "/api/v2/chat/insert-message",
            CUST1,
            form(&[("conversation_id", "1"), ("message", marker)]),
            "application/x-www-form-urlencoded",
        )
        .await,
        call(
            "POST",
            "/api/v2/chat/create-conversation",
            CUST2,
            form(&[("product_id", "3"), ("message", marker), ("title", marker)]),
            "application/x-www-form-urlencoded",
        )
        .await,
        call(
            "POST",
            "/api/v2/chat/insert-message",
            CUST1,
            format!("{{\"conversation_id\": \"x\", \"message\": \"{marker}\"}}"),
            "application/json",
        )
        .await,
        call(
            "POST",
            "/api/v2/chat/insert-message",
            CUST1,
            form(&[("conversation_id", "3"), ("message", marker)]),
            "application/x-www-form-urlencoded",
        )
        .await,
        call(
            "GET",
            "/api/v2/chat/conversations",
            wrong_secret,
            String::new(),
            "",
        )
        .await,
        call(
            "GET",
            "/api/v2/chat/conversations",
            BANNED,
            String::new(),
            "",
        )
        .await,
    ] {
        statuses.push(res.status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 422, 404, 401, 200]);
    // Let the outbox worker try (and fail) the delivery.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    bin.kill9();

    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text.lines().count();
    assert!(
        text.contains("request") && lines >= 8,
        "the log was captured ({lines} lines)"
    );
    let secrets: Vec<&str> = [CUST1, SELLER1, CUST2, BANNED, wrong_secret]
        .iter()
        .map(|t| t.split_once('|').unwrap().1)
        .collect();
    for s in &secrets {
        assert!(!text.contains(s), "bearer secret {s} in the log:\n{text}");
    }
    assert!(!text.contains(marker), "message text in the log:\n{text}");
    assert!(
        !text.contains("Bearer "),
        "an Authorization header in the log"
    );
    println!(
        "logs: {lines} lines at RUST_LOG=debug, {} secrets and the message text absent",
        secrets.len()
    );
    db.drop().await;
}

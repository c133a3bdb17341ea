//! The shop's own Laravel web chat writes the same rows as shopchat (the real-client review,
//! `docs/compatibility.md`): its customers and admins delete conversations, its sellers read
//! them and answer. These tests play those writes as SQL between shopchat's requests and check
//! shopchat's answers and rows after each step (COMPAT §11.1, D1, D3, D5).

use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::raw_http::Response;

const INSERT: &str = "/api/v2/chat/insert-message";
const CREATE: &str = "/api/v2/chat/create-conversation";

fn not_found(id: &str) -> String {
    format!(
        "{{\n    \"message\": \"No query results for model [App\\\\Models\\\\Conversation] {id}\"\n}}"
    )
}

/// The web chat's `destroy` (customer) and the admin panel's: the messages, then the row.
async fn web_deletes(app: &TestApp, conversation: i64) {
    sqlx::raw_sql(&format!(
        "DELETE FROM messages WHERE conversation_id = {conversation}; \
         DELETE FROM conversations WHERE id = {conversation}"
    ))
    .execute(&app.db.pool)
    .await
    .unwrap();
}

async fn post(app: &TestApp, token: &str, conversation: &str, text: &str) -> Response {
    app.post_form(
        INSERT,
        token,
        &[("conversation_id", conversation), ("message", text)],
    )
    .await
}

async fn orphans(app: &TestApp) -> String {
    app.db
        .scalar(
            "SELECT COUNT(*) FROM messages m LEFT JOIN conversations c ON c.id = m.conversation_id \
             WHERE c.id IS NULL",
        )
        .await
}

#[tokio::test]
async fn a_conversation_the_shop_deleted_takes_no_message_and_wakes_its_waiters() {
    let app = spawn_app().await;
    // shopchat knows conversation 1 well: its participants are cached by a read and a post.
    assert_eq!(app.get("/api/v2/chat/messages/1", CUST1).await.status, 200);
    assert_eq!(post(&app, CUST1, "1", "before").await.status, 200);
    let newest = app
        .db
        .scalar("SELECT MAX(id) FROM messages WHERE conversation_id = 1")
        .await;
    // The seller's app long-polls it.
    let (addr, target) = (
        app.addr.clone(),
        format!("/api/v2/chat/get-new-messages/1/{newest}?wait=25"),
    );
    let waiter =
        tokio::spawn(async move { request_at(&addr, "GET", &target, SELLER1, None).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!waiter.is_finished(), "held: nothing new yet");

    web_deletes(&app, 1).await;

    // The app's next message: 404, nothing stored, no orphan row.
    let res = post(&app, CUST1, "1", "after the web deleted it").await;
    assert_eq!(res.status, 404, "{}", res.text());
    assert_eq!(res.text(), not_found("1"));
    assert_eq!(orphans(&app).await, "0");
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM messages WHERE message = 'after the web deleted it'")
            .await,
        "0"
    );
    // The waiter answers now, long before its 25 s, with what the conversation has become.
    let started = Instant::now();
    let held = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter answers")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(held.status, 404, "{}", held.text());
    assert_eq!(held.text(), not_found("1"));
    // Reads and the seller's posts see it gone too.
    assert_eq!(app.get("/api/v2/chat/messages/1", CUST1).await.status, 404);
    assert_eq!(post(&app, SELLER1, "1", "reply").await.status, 404);
    assert_eq!(orphans(&app).await, "0");
    app.finish().await;
}

#[tokio::test]
async fn a_deleted_id_given_to_another_pair_is_never_the_old_pairs() {
    let app = spawn_app().await;
    // Customer 1 and seller 1 use conversation 1; shopchat caches its participants.
    assert_eq!(app.get("/api/v2/chat/messages/1", CUST1).await.status, 200);
    assert_eq!(
        app.get("/api/v2/chat/get-new-messages/1/0", SELLER1)
            .await
            .status,
        200
    );
    // The admin deletes it, and (MySQL 5.7 after a restart) the id comes back for customer 2
    // writing to seller 2.
    web_deletes(&app, 1).await;
    sqlx::raw_sql(
        "INSERT INTO conversations (id, sender_id, receiver_id, title, sender_viewed, receiver_viewed, created_at, updated_at) \
         VALUES (1, 6, 3, 'Private question', 1, 0, UTC_TIMESTAMP(), UTC_TIMESTAMP()); \
         INSERT INTO messages (conversation_id, user_id, message, created_at, updated_at) \
         VALUES (1, 6, 'my private address is …', UTC_TIMESTAMP(), UTC_TIMESTAMP())",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();

    // The old pair reads nothing of it, whatever the cache holds…
    for (token, target) in [
        (CUST1, "/api/v2/chat/messages/1"),
        (SELLER1, "/api/v2/chat/messages/1"),
        (CUST1, "/api/v2/chat/get-new-messages/1/0"),
        (SELLER1, "/api/v2/chat/get-new-messages/1/0"),
        (CUST1, "/api/v2/chat/messages/1?page=2"),
    ] {
        let res = app.get(target, token).await;
        assert_eq!(res.status, 404, "{target}: {}", res.text());
        assert!(!res.text().contains("private"), "{target}");
    }
    // …and writes nothing into it.
    for token in [CUST1, SELLER1] {
        let res = post(&app, token, "1", "hello?").await;
        assert_eq!(res.status, 404, "{}", res.text());
    }
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM messages WHERE conversation_id = 1")
            .await,
        "1"
    );
    // The new pair uses it normally.
    let res = app.get("/api/v2/chat/messages/1", CUST2).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["meta"]["total"], 1);
    assert_eq!(post(&app, SELLER2, "1", "answer").await.status, 200);
    app.finish().await;
}

/// The web chat's own actions, interleaved with the app's requests through shopchat.
#[tokio::test]
async fn the_web_chat_and_the_app_take_turns() {
    let app = spawn_app().await;
    let flags = |id: i64| {
        format!(
            "SELECT sender_viewed, receiver_viewed, CAST(updated_at AS CHAR) FROM conversations WHERE id = {id}"
        )
    };
    let unread_for_seller =
        "SELECT COUNT(*) FROM conversations WHERE receiver_id = 2 AND receiver_viewed = 0";
    let unread_for_customer =
        "SELECT COUNT(*) FROM conversations WHERE sender_id = 5 AND sender_viewed = 0";

    // 1. The app: customer 1 writes to seller 1 (conversation 1, already 1/0).
    assert_eq!(post(&app, CUST1, "1", "Any news?").await.status, 200);
    assert_eq!(app.db.rows(&flags(1)).await[0][..2], ["1", "0"]);
    assert_eq!(
        app.db.scalar(unread_for_seller).await,
        "2",
        "the seller's badge"
    );

    // 2. The web: the seller opens the conversation (`show`: own flag read, updated_at moves).
    sqlx::query("UPDATE conversations SET receiver_viewed = 1, updated_at = '2030-01-01 10:00:00' WHERE id = 1")
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(app.db.scalar(unread_for_seller).await, "1");

    // 3. The web: the seller answers (`MessageController::store`: message + flags 0/1).
    sqlx::raw_sql(
        "INSERT INTO messages (conversation_id, user_id, message, created_at, updated_at) \
         VALUES (1, 2, 'Shipped this morning', '2030-01-01 10:05:00', '2030-01-01 10:05:00'); \
         UPDATE conversations SET sender_viewed = 0, receiver_viewed = 1, updated_at = '2030-01-01 10:05:00' WHERE id = 1",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(app.db.scalar(unread_for_customer).await, "1");

    // 4. The app sees the web's message, newest first, with the seller as author.
    let page = app.get("/api/v2/chat/messages/1", CUST1).await.json();
    assert_eq!(page["data"][0]["message"], "Shipped this morning");
    assert_eq!(page["data"][0]["send_type"], "seller");
    let list = app.get("/api/v2/chat/conversations", CUST1).await.json();
    let item = &list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == 1)
        .unwrap()
        .clone();
    assert_eq!(
        (
            item["sender_viewed"].clone(),
            item["receiver_viewed"].clone()
        ),
        (0.into(), 1.into())
    );
    assert_eq!(item["date"], "2030-01-01T10:05:00.000000Z");

    // 5. The app answers: the customer's side read, the seller's unread (as the web does).
    assert_eq!(post(&app, CUST1, "1", "Thanks!").await.status, 200);
    assert_eq!(app.db.rows(&flags(1)).await[0][..2], ["1", "0"]);
    assert_eq!(app.db.scalar(unread_for_customer).await, "0");
    assert_eq!(app.db.scalar(unread_for_seller).await, "2");

    // 6. The web: the customer deletes conversation 1; the app's next post is a 404.
    web_deletes(&app, 1).await;
    let res = post(&app, CUST1, "1", "still there?").await;
    assert_eq!(res.status, 404);
    assert_eq!(orphans(&app).await, "0");
    let list = app.get("/api/v2/chat/conversations", CUST1).await.json();
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["id"] != 1));

    // 7. The web: the admin deletes conversation 2 while the app polls it.
    assert_eq!(
        app.get("/api/v2/chat/get-new-messages/2/38", CUST1)
            .await
            .status,
        200
    );
    web_deletes(&app, 2).await;
    let res = post(&app, CUST1, "2", "hello admin").await;
    assert_eq!(res.status, 404);
    assert_eq!(
        app.get("/api/v2/chat/get-new-messages/2/38", CUST1)
            .await
            .status,
        404,
        "the post found it gone: reads stop at once"
    );

    // 8. "Contact seller" again on product 3: a new conversation (1 is gone), mailed.
    let res = app
        .post_form(
            CREATE,
            CUST1,
            &[
                ("product_id", "3"),
                ("title", "Mechanical Gaming Keyboard"),
                ("message", "Starting over"),
            ],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let id = res.json()["conversation_id"].as_i64().unwrap();
    assert!(id > 5, "a new conversation");
    assert_eq!(app.db.rows(&flags(id)).await[0][..2], ["1", "0"]);
    assert_eq!(orphans(&app).await, "0");
    // No 500 at any step: every answer above was checked.
    app.finish().await;
}

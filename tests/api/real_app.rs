//! Requests exactly as the real Active eCommerce Flutter app (9.11, backend 9.8.1) sends them,
//! replayed beside the canonical request of the golden set: the answers must be the same
//! (`docs/compatibility.md`, "What the real app sends"). dart:io writes header names in lower
//! case; `ApiRequest` merges the common, currency and repository headers, so GETs carry
//! `content-type: application/json` too; package:http appends `; charset=utf-8` to a JSON
//! body's type; every value of a JSON body is a string.

use serde_json::Value;

use crate::helpers::*;
use crate::raw_http::{self, Response};

/// The headers of `ApiRequest.get/post` (lib/repositories/api-request.dart), lower case.
fn app_headers(token: &str, post: bool) -> Vec<(&'static str, String)> {
    vec![
        ("host", "shop.test".to_string()),
        ("user-agent", "Dart/3.5 (dart:io)".to_string()),
        ("accept-encoding", "gzip".to_string()),
        (
            "content-type",
            if post {
                "application/json; charset=utf-8".to_string()
            } else {
                "application/json".to_string()
            },
        ),
        ("app-language", "en".to_string()),
        ("accept", "application/json".to_string()),
        ("system-key", SYSTEM_KEY.to_string()),
        ("authorization", format!("Bearer {token}")),
        ("currency-code", "USD".to_string()),
        ("currency-exchange-rate", "1".to_string()),
    ]
}

async fn as_the_app(
    app: &TestApp,
    method: &str,
    target: &str,
    token: &str,
    body: Option<&Value>,
) -> Response {
    let headers = app_headers(token, body.is_some());
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    raw_http::send(&app.addr, method, target, &headers, body.as_bytes()).await
}

/// The parts of an answer a client can see, with the clock's fields blanked: two services
/// answering a minute apart would differ there and nowhere else.
fn seen(res: &Response) -> (u16, Option<String>, Option<String>, String) {
    let mut text = res.text();
    if let Ok(mut json) = serde_json::from_str::<Value>(&text) {
        if let Some(items) = json.get_mut("data").and_then(Value::as_array_mut) {
            for item in items {
                for key in ["year", "month", "day_of_month", "date", "time"] {
                    if item.get(key).is_some() && item.get("send_type").is_some() {
                        item[key] = Value::Null;
                    }
                }
            }
        }
        text = json.to_string();
    }
    (
        res.status,
        res.header("content-type").map(str::to_string),
        res.header("x-ratelimit-limit").map(str::to_string),
        text,
    )
}

#[tokio::test]
async fn the_apps_reads_answer_like_the_canonical_ones() {
    let app = spawn_app().await;
    for target in [
        "/api/v2/chat/conversations?page=1",
        "/api/v2/chat/conversations?page=2", // infinite scroll never looks at last_page
        "/api/v2/chat/messages/1?page=1",
        "/api/v2/chat/messages/1?page=2",
        "/api/v2/chat/get-new-messages/1/33",
        "/api/v2/chat/get-new-messages/1/35",
        "/api/v2/chat/messages/2?page=1",
    ] {
        let canonical = app.get(target, CUST1).await;
        let shaped = as_the_app(&app, "GET", target, CUST1, None).await;
        assert_eq!(canonical.status, 200, "{target}");
        assert_eq!(shaped.text(), canonical.text(), "{target}");
        assert_eq!(seen(&shaped), seen(&canonical), "{target}");
    }
    // A conversation of someone else: the same 404 either way.
    let target = "/api/v2/chat/messages/3";
    assert_eq!(
        seen(&as_the_app(&app, "GET", target, CUST1, None).await),
        seen(&app.get(target, CUST1).await)
    );
    app.finish().await;
}

#[tokio::test]
async fn the_apps_writes_answer_like_the_canonical_ones() {
    // Each write on its own fresh fixture, so both see the same ids.
    let canonical = spawn_app().await;
    let shaped = spawn_app().await;

    // insert-message: form body with numbers vs the app's all-string JSON with `user_id`.
    let a = canonical
        .post_form(
            "/api/v2/chat/insert-message",
            CUST1,
            &[("conversation_id", "1"), ("message", "Please ship today")],
        )
        .await;
    let b = as_the_app(
        &shaped,
        "POST",
        "/api/v2/chat/insert-message",
        CUST1,
        Some(&serde_json::json!({"user_id": "5", "conversation_id": "1", "message": "Please ship today"})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(seen(&b), seen(&a));
    // What the app reads from it: data[0] becomes `_last_id`.
    assert_eq!(b.json()["data"][0]["id"], 43);

    // create-conversation ("Contact seller"; title pre-filled with the product name).
    let a = canonical
        .post_form(
            "/api/v2/chat/create-conversation",
            CUST2,
            &[
                ("product_id", "3"),
                ("title", "Mechanical Gaming Keyboard"),
                ("message", "Which switches?"),
            ],
        )
        .await;
    let b = as_the_app(
        &shaped,
        "POST",
        "/api/v2/chat/create-conversation",
        CUST2,
        Some(&serde_json::json!({"user_id": "6", "product_id": "3", "title": "Mechanical Gaming Keyboard", "message": "Which switches?"})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(seen(&b), seen(&a));
    let answer = b.json();
    assert_eq!(answer["result"], true);
    assert_eq!(answer["shop_name"], "Tech Haven", "the chat screen's title");

    // The rows written are the same too.
    let rows = "SELECT conversation_id, user_id, message FROM messages WHERE id > 42 ORDER BY id";
    assert_eq!(shaped.db.rows(rows).await, canonical.db.rows(rows).await);
    canonical.finish().await;
    shaped.finish().await;
}

#[tokio::test]
async fn the_apps_failed_create_shows_its_error_toast() {
    // The app checks `message == ""`, not a trimmed value: a message of spaces reaches the
    // server. The answer must carry `"result": false`, the only thing the app looks at before
    // opening a chat screen (COMPAT §5.5 step 7).
    let app = spawn_app().await;
    let res = as_the_app(
        &app,
        "POST",
        "/api/v2/chat/create-conversation",
        CUST1,
        Some(&serde_json::json!({"user_id": "5", "product_id": "3", "title": "Keyboard", "message": "   "})),
    )
    .await;
    assert_eq!(res.status, 422);
    assert_eq!(
        res.text(),
        "{\n    \"result\": false,\n    \"message\": \"The message field is required.\",\n    \"errors\": {\n        \"message\": [\n            \"The message field is required.\"\n        ]\n    }\n}"
    );
    assert_eq!(res.json()["result"], false);
    // Older app builds send no System-Key: the same "Request not found!" PHP 9.8 gives.
    let headers = [
        ("host", "shop.test"),
        (
            "authorization",
            "Bearer 5|e82dec50eb35333b411bdc59de6c1b222cbf49b6",
        ),
    ];
    let res = raw_http::send(
        &app.addr,
        "GET",
        "/api/v2/chat/conversations",
        &headers,
        b"",
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.text(),
        r#"{"result":false,"message":"Request not found!"}"#
    );
    app.finish().await;
}

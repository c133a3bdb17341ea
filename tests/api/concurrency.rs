//! Concurrency: parallel writes to one conversation (D5), the rate
//! limit under parallel load (D8), and parallel create-conversation calls
//! across two shopchat processes on one database (D6).

use futures_util::future::join_all;

use crate::helpers::*;

#[tokio::test]
async fn parallel_inserts_into_one_conversation() {
    let app = spawn_app_with(&[("SHOPCHAT_RATE_LIMIT", "0")]).await;
    let before: i64 = app
        .db
        .scalar("SELECT COUNT(*) FROM messages")
        .await
        .parse()
        .unwrap();
    let rounds = 4;
    let per_round = 60;
    for round in 0..rounds {
        let calls = (0..per_round).map(|i| {
            // Sender (user 5) and receiver (user 2) of conversation 1 interleaved.
            let token = if (i + round) % 2 == 0 { CUST1 } else { SELLER1 };
            let text = format!("parallel {round}-{i}");
            let app = &app;
            async move {
                let res = app
                    .post_form(
                        "/api/v2/chat/insert-message",
                        token,
                        &[("conversation_id", "1"), ("message", &text)],
                    )
                    .await;
                (res, text)
            }
        });
        for (res, text) in join_all(calls).await {
            assert_eq!(res.status, 200, "{text}: {}", res.text());
            let id = res.json()["data"][0]["id"].as_i64().unwrap();
            assert_eq!(
                app.db
                    .scalar(&format!(
                        "SELECT COUNT(*) FROM messages WHERE message = '{text}'"
                    ))
                    .await,
                "1",
                "{text} stored exactly once"
            );
            assert_eq!(
                app.db
                    .scalar(&format!("SELECT message FROM messages WHERE id = {id}"))
                    .await,
                text
            );
        }
        // D5: the flags are those of the newest message's author.
        let last = app
            .db
            .rows("SELECT m.user_id, c.sender_viewed, c.receiver_viewed FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.conversation_id = 1 ORDER BY m.id DESC LIMIT 1")
            .await;
        let expected = if last[0][0] == "5" {
            ["1", "0"]
        } else {
            ["0", "1"]
        };
        assert_eq!(
            [last[0][1].as_str(), last[0][2].as_str()],
            expected,
            "round {round}: flags follow the author of the newest message"
        );
    }
    let after: i64 = app
        .db
        .scalar("SELECT COUNT(*) FROM messages")
        .await
        .parse()
        .unwrap();
    assert_eq!(after - before, (rounds * per_round) as i64);
    println!(
        "concurrency: {} parallel insert-message calls in {rounds} rounds, each stored once",
        rounds * per_round
    );
    app.finish().await;
}

#[tokio::test]
async fn rate_limit_holds_under_parallel_load() {
    let limit = 25;
    let app = spawn_app_with(&[("SHOPCHAT_RATE_LIMIT", &limit.to_string())]).await;
    let total = 100;
    let calls = (0..total).map(|_| app.get("/api/v2/chat/conversations", CUST2));
    let results = join_all(calls).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    let limited = results.iter().filter(|r| r.status == 429).count();
    assert_eq!((ok, limited), (limit, total - limit));
    // The remaining counts handed out are exactly limit-1 … 0, once each.
    let mut remaining: Vec<u32> = results
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.header("x-ratelimit-remaining").unwrap().parse().unwrap())
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..limit as u32).collect::<Vec<_>>());
    // Another user's bucket is untouched.
    assert_eq!(
        app.get("/api/v2/chat/conversations", CUST1).await.status,
        200
    );
    println!("concurrency: {total} parallel requests, limit {limit}: {ok} served, {limited} × 429");
    app.finish().await;
}

#[tokio::test]
async fn parallel_creates_across_two_instances_make_one_conversation() {
    let app = spawn_app_with(&[("SHOPCHAT_RATE_LIMIT", "0")]).await;
    let (second_addr, _outbox) = another_instance(&app, &[("SHOPCHAT_RATE_LIMIT", "0")]).await;
    let before: i64 = app
        .db
        .scalar("SELECT COUNT(*) FROM conversations")
        .await
        .parse()
        .unwrap();
    let n = 40;
    let calls = (0..n).map(|i| {
        let addr = if i % 2 == 0 {
            app.addr.clone()
        } else {
            second_addr.clone()
        };
        let body = crate::raw_http::form(&[
            ("product_id", "3"),
            ("title", "One Keyboard Thread"),
            ("message", &format!("tap {i}")),
        ]);
        async move {
            let auth = format!("Bearer {CUST2}");
            crate::raw_http::send(
                &addr,
                "POST",
                "/api/v2/chat/create-conversation",
                &[
                    ("Host", "shop.test"),
                    ("Accept", "application/json"),
                    ("System-Key", SYSTEM_KEY),
                    ("Authorization", &auth),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                ],
                body.as_bytes(),
            )
            .await
        }
    });
    let results = join_all(calls).await;
    let mut ids = std::collections::BTreeSet::new();
    for r in &results {
        assert_eq!(r.status, 200, "{}", r.text());
        ids.insert(r.json()["conversation_id"].as_i64().unwrap());
    }
    assert_eq!(
        ids.len(),
        1,
        "one conversation for one customer, seller, title (D6)"
    );
    let cid = ids.into_iter().next().unwrap();
    assert_eq!(
        app.db.scalar("SELECT COUNT(*) FROM conversations").await,
        (before + 1).to_string()
    );
    assert_eq!(
        app.db
            .scalar(&format!(
                "SELECT COUNT(*) FROM messages WHERE conversation_id = {cid}"
            ))
            .await,
        n.to_string()
    );
    println!("concurrency: {n} parallel create-conversation calls on 2 instances: 1 conversation, {n} messages");
    app.finish().await;
}

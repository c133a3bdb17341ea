//! The throttle protects the shop's database (COMPAT §1.4, 2026-12; security review H2, M1):
//! what a flood costs in statements, counted by the database server itself.

use rand::Rng;

use crate::helpers::*;

const LIST: &str = "/api/v2/chat/conversations";

fn random_token(rng: &mut impl Rng) -> String {
    if rng.gen_bool(0.5) {
        // `<id>|<secret>`: looked up by id.
        format!(
            "{}|{:040x}",
            rng.gen_range(100..1_000_000u64),
            rng.gen::<u128>()
        )
    } else {
        // A plain token: looked up by its hash.
        format!("{:040x}", rng.gen::<u128>())
    }
}

#[tokio::test]
async fn random_tokens_cost_one_statement_each_until_the_ip_is_spent_then_none() {
    let db = TestDb::fresh().await;
    let user = db.counted_user().await;
    let mut env = user.env().to_vec();
    env.push(("SHOPCHAT_RATE_LIMIT", "60"));
    let app = spawn_app_on(db, &env).await;
    // The pool's first connection and its session setup, before counting.
    assert_eq!(app.get(LIST, CUST1).await.status, 200);
    let mut rng = rand::thread_rng();

    let before = app.db.statements(&user).await;
    let mut statuses = Vec::new();
    for _ in 0..59 {
        let token = random_token(&mut rng);
        statuses.push(app.call("GET", LIST, Some(&token), &[], b"").await.status);
    }
    let spending = app.db.statements(&user).await - before;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    // A pooled connection used for the first time prepares the lookup once (and a new one runs
    // its session set-up): on a loaded machine the pool may open or rotate to one or two more.
    assert!(
        spending <= 59 + 4,
        "{spending} statements for 59 unknown tokens: at most one each"
    );

    // Customer 1's request was counted in his own bucket: the IP's has one hit left, then it
    // is spent, and from then on nothing reaches the database.
    let before = app.db.statements(&user).await;
    let mut limited = 0;
    for _ in 0..241 {
        let token = random_token(&mut rng);
        let res = app.call("GET", LIST, Some(&token), &[], b"").await;
        if res.status == 429 {
            limited += 1;
            assert_eq!(res.header("x-ratelimit-remaining"), Some("0"));
            assert!(res.header("retry-after").is_some());
        }
    }
    let flood = app.db.statements(&user).await - before;
    assert_eq!(limited, 240, "the 61st request and every later one");
    assert!(
        flood <= 1,
        "{flood} statements for 241 requests of a spent IP (one lookup at most)"
    );
    app.finish().await;
}

#[tokio::test]
async fn known_good_tokens_pass_a_spent_ip_and_failures_are_remembered() {
    let db = TestDb::fresh().await;
    let user = db.counted_user().await;
    let mut env = user.env().to_vec();
    env.push(("SHOPCHAT_RATE_LIMIT", "5"));
    env.push(("SHOPCHAT_AUTH_CACHE_MS", "60000"));
    let app = spawn_app_on(db, &env).await;
    // Customer 1's token is resolved (and cached) before the IP's bucket is spent.
    assert_eq!(app.get(LIST, CUST1).await.status, 200);

    // The same unknown token over and over: one lookup, then remembered as failed.
    let before = app.db.statements(&user).await;
    for _ in 0..5 {
        assert_eq!(
            app.call("GET", LIST, Some("4242|nope"), &[], b"")
                .await
                .status,
            401
        );
    }
    let repeated = app.db.statements(&user).await - before;
    assert_eq!(
        repeated, 1,
        "one lookup for five requests with one unknown token"
    );

    // The IP is spent now: unknown tokens get 429 at once…
    let res = app.call("GET", LIST, Some("4243|other"), &[], b"").await;
    assert_eq!(res.status, 429);
    // …a token nobody here resolved lately too (no lookup is made for it)…
    assert_eq!(app.get(LIST, CUST2).await.status, 429);
    // …but customer 1's known good token is served, in his own bucket.
    let res = app.get(LIST, CUST1).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-ratelimit-remaining"), Some("3"));
    app.finish().await;
}

#[tokio::test]
async fn ipv6_clients_share_the_bucket_of_their_64() {
    // A client that rotates through its /64 (directly or through the trusted proxy) has one
    // bucket, not one per address.
    let app = spawn_app_with(&[
        ("SHOPCHAT_RATE_LIMIT", "3"),
        ("SHOPCHAT_TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let xff = format!("2001:db8:5:6::{i:x}");
        let res = app
            .call("GET", LIST, None, &[("X-Forwarded-For", &xff)], b"")
            .await;
        statuses.push(res.status);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429]);
    // Another /64 has a bucket of its own.
    let res = app
        .call(
            "GET",
            LIST,
            None,
            &[("X-Forwarded-For", "2001:db8:5:7::1")],
            b"",
        )
        .await;
    assert_eq!(res.status, 401);
    app.finish().await;
}

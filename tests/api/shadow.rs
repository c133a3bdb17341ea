//! `shopchat shadow` and `shopchat replay` end to end: a primary (a second
//! shopchat, or a small fake written here that answers like PHP), the shadow
//! proxy in front of it on the same database, real HTTP throughout.

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;
use tokio::sync::Semaphore;

use shopchat::config::Settings;
use shopchat::shadow::compare::Outcome;
use shopchat::shadow::metrics::Metrics;
use shopchat::shadow::{Shadow, ShadowConfig};

use crate::helpers::{
    request_with, spawn_app, spawn_app_with, test_env, TestApp, TestDb, BANNED, CUST1, CUST2,
    SELLER1, SYSTEM_KEY,
};
use crate::raw_http::{self, Response};

// ---------------------------------------------------------------- fixtures

struct ShadowProxy {
    addr: String,
    metrics: Arc<Metrics>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The shadow proxy in this process, in front of `primary`, on database `db`.
async fn start_shadow(
    primary: &str,
    db: &TestDb,
    tweak: impl FnOnce(&mut ShadowConfig),
) -> ShadowProxy {
    let dir = tempfile::tempdir().unwrap();
    let env = test_env(&db.name, &dir.path().join("outbox"));
    let settings = Settings::load_from(None, env).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = ShadowConfig::new(
        format!("http://{primary}").parse().unwrap(),
        listener.local_addr().unwrap(),
        settings,
    );
    config.log_path = dir.path().join("mismatches.jsonl");
    tweak(&mut config);
    let log = config.log_path.clone();
    let shadow = Shadow::start_with_listener(config, listener).await.unwrap();
    let addr = format!("127.0.0.1:{}", shadow.port());
    let metrics = shadow.metrics().clone();
    tokio::spawn(shadow.run_until_stopped());
    ShadowProxy {
        addr,
        metrics,
        log,
        _dir: dir,
    }
}

impl ShadowProxy {
    async fn call(
        &self,
        method: &str,
        target: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        request_with(&self.addr, method, target, token, extra, body).await
    }

    /// Waits (bounded) until `n` exchanges have an outcome.
    async fn settle(&self, n: u64) {
        for _ in 0..600 {
            if self.metrics.total() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "only {} of {n} comparisons finished: {:?}",
            self.metrics.total(),
            self.metrics.snapshot().outcomes
        );
    }

    fn count(&self, route: &str, outcome: Outcome) -> u64 {
        self.metrics
            .snapshot()
            .outcomes
            .get(&(route.to_string(), outcome.as_str().to_string()))
            .copied()
            .unwrap_or(0)
    }

    fn outcomes(&self) -> Vec<(String, String, u64)> {
        self.metrics
            .snapshot()
            .outcomes
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|((r, o), n)| (r, o, n))
            .collect()
    }

    fn log_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

pub struct FakeRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl FakeRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub type FakeAnswer = (u16, Vec<(String, String)>, Vec<u8>);
pub type Handler =
    Arc<dyn Fn(FakeRequest) -> Pin<Box<dyn Future<Output = FakeAnswer>>> + Send + Sync>;

/// A small primary that answers whatever `handler` says.
pub async fn fake_primary(handler: Handler) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = HttpServer::new(move || {
        let h = handler.clone();
        App::new()
            .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
            .default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let h = h.clone();
                async move {
                    let fake = FakeRequest {
                        method: req.method().to_string(),
                        path: req
                            .uri()
                            .path_and_query()
                            .map(|p| p.as_str().to_string())
                            .unwrap_or_default(),
                        headers: req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                            })
                            .collect(),
                        body: body.to_vec(),
                    };
                    let (status, headers, body) = h(fake).await;
                    let mut res =
                        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
                    for (k, v) in headers {
                        res.append_header((k, v));
                    }
                    res.body(body)
                }
            }))
    })
    .workers(2)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    addr
}

fn json_answer(status: u16, body: &str) -> FakeAnswer {
    (
        status,
        vec![
            ("Content-Type".into(), "application/json".into()),
            ("Cache-Control".into(), "no-cache, private".into()),
            ("X-RateLimit-Limit".into(), "600".into()),
            ("X-RateLimit-Remaining".into(), "599".into()),
        ],
        body.as_bytes().to_vec(),
    )
}

/// PHP's answer for a conversation that is not the caller's and has no
/// messages it could see: an empty page (D1).
fn php_empty_page(path: &str) -> String {
    let p = format!("http:\\/\\/shop.test{}", path.replace('/', "\\/"));
    format!(
        r#"{{"data":[],"links":{{"first":"{p}?page=1","last":"{p}?page=1","prev":null,"next":null}},"meta":{{"current_page":1,"from":null,"last_page":1,"links":[{{"url":null,"label":"\u00ab Previous","active":false}},{{"url":"{p}?page=1","label":"1","active":true}},{{"url":null,"label":"Next \u00bb","active":false}}],"path":"{p}","per_page":10,"to":null,"total":0}},"success":true,"status":200}}"#
    )
}

/// Everything but Date and the per-process rate-limit counter.
fn comparable(r: &Response) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut headers: Vec<(String, String)> = r
        .headers
        .iter()
        .filter(|(k, _)| {
            !k.eq_ignore_ascii_case("date") && !k.eq_ignore_ascii_case("x-ratelimit-remaining")
        })
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    headers.sort();
    (r.status, headers, r.body.clone())
}

// ------------------------------------------------------------------- tests

#[tokio::test]
async fn clients_get_the_primarys_answer_and_identical_answers_match() {
    let primary: TestApp = spawn_app().await;
    let shadow = start_shadow(&primary.addr, &primary.db, |_| {}).await;
    let rid = [("X-Request-Id", "shadow-test-1")];
    let targets = [
        "/api/v2/chat/conversations",
        "/api/v2/chat/messages/1?page=2",
        "/api/v2/chat/get-new-messages/1/33",
    ];
    for target in targets {
        let via = shadow.call("GET", target, Some(CUST1), &rid, b"").await;
        let direct = primary.call("GET", target, Some(CUST1), &rid, b"").await;
        assert_eq!(via.status, 200, "{}", via.text());
        assert_eq!(comparable(&via), comparable(&direct), "{target}");
    }
    let head = shadow
        .call("HEAD", "/api/v2/chat/conversations", Some(CUST2), &[], b"")
        .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    // Not compared: proxied only.
    let fallback = shadow
        .call("GET", "/api/v2/chat/nope", Some(CUST1), &[], b"")
        .await;
    assert_eq!(fallback.status, 200);
    assert!(fallback.text().contains("Invalid Route"));

    shadow.settle(4).await;
    assert_eq!(shadow.count("conversations", Outcome::Match), 2);
    assert_eq!(shadow.count("messages", Outcome::Match), 1);
    assert_eq!(shadow.count("get-new-messages", Outcome::Match), 1);
    assert_eq!(shadow.metrics.total(), 4, "{:?}", shadow.outcomes());

    // The same counters in the Prometheus text at the shadow's /metrics.
    let m = raw_http::send(&shadow.addr, "GET", "/metrics", &[("Host", "x")], b"").await;
    assert_eq!(m.status, 200);
    let text = m.text();
    assert!(text.contains(
        "shopchat_shadow_comparisons_total{outcome=\"match\",route=\"conversations\"} 2\n"
    ));
    assert!(text.contains(
        "shopchat_shadow_comparisons_total{outcome=\"mismatch\",route=\"messages\"} 0\n"
    ));
    assert!(text.contains("shopchat_shadow_proxied_total{route=\"fallback\",status=\"200\"} 1\n"));
    primary.finish().await;
}

#[tokio::test]
async fn large_bodies_stream_through_unchanged_and_are_not_compared_past_the_cap() {
    let db = TestDb::fresh().await;
    let big: Arc<Vec<u8>> = Arc::new((0..3_000_000u32).map(|i| (i % 251) as u8).collect());
    let b = big.clone();
    let primary = fake_primary(Arc::new(move |_req| {
        let b = b.clone();
        Box::pin(async move {
            (
                200,
                vec![
                    ("Content-Type".into(), "application/octet-stream".into()),
                    ("X-Odd-Header".into(), "kept as is".into()),
                    ("Set-Cookie".into(), "a=1".into()),
                    ("Set-Cookie".into(), "b=2".into()),
                ],
                b.to_vec(),
            )
        })
    }))
    .await;
    let shadow = start_shadow(&primary, &db, |c| c.max_compare_bytes = 1024 * 1024).await;
    let res = shadow
        .call("GET", "/api/v2/chat/conversations", Some(CUST1), &[], b"")
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body.len(), big.len());
    assert!(res.body == *big, "body bytes changed on the way");
    assert_eq!(res.header("x-odd-header"), Some("kept as is"));
    assert_eq!(res.header("content-length"), Some("3000000"));
    let cookies: Vec<_> = res
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .collect();
    assert_eq!(cookies.len(), 2);
    shadow.settle(1).await;
    assert_eq!(shadow.count("conversations", Outcome::Error), 1);
    let log = shadow.log_lines();
    assert!(log[0]["differences"][0]
        .as_str()
        .unwrap()
        .contains("--max-compare-bytes"));
    db.drop().await;
}

#[tokio::test]
async fn php_like_primary_deviations_are_expected_and_differences_are_logged() {
    let db = TestDb::fresh().await;
    // Conversation 3 is customer 2's: PHP shows customer 1 a page anyway
    // (D1); for conversation 1 this fake answers a page PHP would not.
    let primary = fake_primary(Arc::new(|req: FakeRequest| {
        Box::pin(async move {
            let path = req.path.split('?').next().unwrap_or_default().to_string();
            json_answer(200, &php_empty_page(&path))
        })
    }))
    .await;
    let shadow = start_shadow(&primary, &db, |_| {}).await;
    let foreign = shadow
        .call("GET", "/api/v2/chat/messages/3", Some(CUST1), &[], b"")
        .await;
    // The client gets the primary's answer, not shopchat's 404.
    assert_eq!(foreign.status, 200);
    assert_eq!(foreign.text(), php_empty_page("/api/v2/chat/messages/3"));
    let own = shadow
        .call("GET", "/api/v2/chat/messages/1", Some(CUST1), &[], b"")
        .await;
    assert_eq!(own.status, 200);
    shadow.settle(2).await;
    assert_eq!(shadow.count("messages", Outcome::Expected), 1);
    assert_eq!(shadow.count("messages", Outcome::Mismatch), 1);
    assert_eq!(
        shadow
            .metrics
            .snapshot()
            .expected
            .get(&("messages".into(), "D1".into())),
        Some(&1)
    );

    let raw_log = std::fs::read_to_string(&shadow.log).unwrap();
    let secret = CUST1.split_once('|').unwrap().1;
    assert!(
        !raw_log.contains(secret),
        "the bearer secret leaked into the log"
    );
    assert!(
        !raw_log.contains(SYSTEM_KEY),
        "the System-Key leaked into the log"
    );
    let log = shadow.log_lines();
    let mismatch = log.iter().find(|r| r["kind"] == "mismatch").unwrap();
    assert_eq!(mismatch["route"], "messages");
    assert_eq!(mismatch["path"], "/api/v2/chat/messages/1");
    assert!(mismatch["differences"][0]
        .as_str()
        .unwrap()
        .starts_with("body $.data: "));
    assert_eq!(
        mismatch["primary"]["body"].as_str().unwrap(),
        php_empty_page("/api/v2/chat/messages/1")
    );
    assert!(mismatch["shadow"]["body"]
        .as_str()
        .unwrap()
        .starts_with("{\"data\":[{\"id\":"));
    assert_eq!(mismatch["diff"]["offset"], 9);
    let auth = mismatch["request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "authorization")
        .unwrap();
    assert_eq!(auth[1], "Bearer 5|<redacted>");
    let expected = log.iter().find(|r| r["kind"] == "expected").unwrap();
    assert_eq!(expected["deviation"], "D1");

    // The report a person reads.
    let out = Command::new(env!("CARGO_BIN_EXE_shopchat"))
        .args(["shadow", "report"])
        .arg(&shadow.log)
        .output()
        .unwrap();
    assert!(out.status.success());
    let report = String::from_utf8(out.stdout).unwrap();
    assert!(report.contains("D1"), "{report}");
    assert!(report.contains("1 unexpected mismatch"), "{report}");
    assert!(report.contains("GET /api/v2/chat/messages/1"), "{report}");
    db.drop().await;
}

#[tokio::test]
async fn shadow_answers_leave_no_trace() {
    let db = TestDb::fresh().await;
    // A primary that answers everything with a fixed 200 and writes nothing:
    // whatever changes in the database would be the shadow's doing.
    let primary = fake_primary(Arc::new(|_req| {
        Box::pin(async move { json_answer(200, "{}") })
    }))
    .await;
    // `user_is_banned` missing in `en`: a serving shopchat would insert it.
    sqlx::query("DELETE FROM translations WHERE lang_key = 'user_is_banned'")
        .execute(&db.pool)
        .await
        .unwrap();
    let before = (
        db.scalar("SELECT COUNT(*) FROM translations").await,
        db.scalar("SELECT CONCAT(COALESCE(last_used_at, 'NULL'), updated_at) FROM personal_access_tokens WHERE id = 5").await,
        db.scalar("SELECT COUNT(*) FROM personal_access_tokens").await,
        db.scalar("SELECT COUNT(*) FROM messages").await,
        db.scalar("SELECT COUNT(*) FROM conversations").await,
    );
    let shadow = start_shadow(&primary, &db, |c| c.settings.http.rate_limit = 1).await;
    for _ in 0..3 {
        shadow
            .call("GET", "/api/v2/chat/conversations", Some(CUST1), &[], b"")
            .await;
    }
    shadow
        .call("GET", "/api/v2/chat/messages/4", Some(BANNED), &[], b"")
        .await;
    let form = raw_http::form(&[("conversation_id", "1"), ("message", "shadow only")]);
    let ct = [("Content-Type", "application/x-www-form-urlencoded")];
    shadow
        .call(
            "POST",
            "/api/v2/chat/insert-message",
            Some(CUST1),
            &ct,
            form.as_bytes(),
        )
        .await;
    let form = raw_http::form(&[("product_id", "3"), ("message", "new?"), ("title", "T")]);
    shadow
        .call(
            "POST",
            "/api/v2/chat/create-conversation",
            Some(CUST2),
            &ct,
            form.as_bytes(),
        )
        .await;
    shadow.settle(6).await;
    // With a limit of 1 a counted shadow would have answered 429 twice.
    let log = shadow.log_lines();
    assert!(
        log.iter().all(|r| r["status"][1] != 429),
        "shadow requests were counted by the throttle: {log:?}"
    );
    let after = (
        db.scalar("SELECT COUNT(*) FROM translations").await,
        db.scalar("SELECT CONCAT(COALESCE(last_used_at, 'NULL'), updated_at) FROM personal_access_tokens WHERE id = 5").await,
        db.scalar("SELECT COUNT(*) FROM personal_access_tokens").await,
        db.scalar("SELECT COUNT(*) FROM messages").await,
        db.scalar("SELECT COUNT(*) FROM conversations").await,
    );
    assert_eq!(before, after, "the shadow wrote to the database");
    // Both writes were accepted by shopchat's checks, like the primary's 200.
    assert_eq!(shadow.count("insert-message", Outcome::Match), 1);
    assert_eq!(shadow.count("create-conversation", Outcome::Match), 1);
    db.drop().await;
}

#[tokio::test]
async fn posts_reach_the_primary_once() {
    let primary = spawn_app_with(&[("SHOPCHAT_RATE_LIMIT", "0")]).await;
    let shadow = start_shadow(&primary.addr, &primary.db, |_| {}).await;
    let ct = [("Content-Type", "application/x-www-form-urlencoded")];
    let form = raw_http::form(&[("conversation_id", "1"), ("message", "exactly once")]);
    let res = shadow
        .call(
            "POST",
            "/api/v2/chat/insert-message",
            Some(CUST1),
            &ct,
            form.as_bytes(),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let json =
        serde_json::to_vec(&serde_json::json!({"product_id": 3, "message": "Hi", "title": "Once"}))
            .unwrap();
    let res = shadow
        .call(
            "POST",
            "/api/v2/chat/create-conversation",
            Some(CUST2),
            &[("Content-Type", "application/json")],
            &json,
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    // A request shopchat refuses as the primary does: 422 on both sides.
    let bad = raw_http::form(&[("conversation_id", "1")]);
    let res = shadow
        .call(
            "POST",
            "/api/v2/chat/insert-message",
            Some(CUST1),
            &ct,
            bad.as_bytes(),
        )
        .await;
    assert_eq!(res.status, 422);
    shadow.settle(3).await;
    assert_eq!(
        primary
            .db
            .scalar("SELECT COUNT(*) FROM messages WHERE message = 'exactly once'")
            .await,
        "1"
    );
    assert_eq!(
        primary
            .db
            .scalar("SELECT COUNT(*) FROM conversations WHERE title = 'Once'")
            .await,
        "1"
    );
    assert_eq!(shadow.count("insert-message", Outcome::Match), 2);
    assert_eq!(shadow.count("create-conversation", Outcome::Match), 1);
    primary.finish().await;
}

#[tokio::test]
async fn a_full_queue_drops_comparisons_not_requests() {
    let db = TestDb::fresh().await;
    let hold = Arc::new(Semaphore::new(0));
    let arrived = Arc::new(Semaphore::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let (h, a, s) = (hold.clone(), arrived.clone(), seen.clone());
    // The noise floor asks for messages/1 a second time: that request is
    // held until the test releases it, so the single worker stays busy.
    let primary = fake_primary(Arc::new(move |req: FakeRequest| {
        let (h, a, s) = (h.clone(), a.clone(), s.clone());
        Box::pin(async move {
            if req.path == "/api/v2/chat/messages/1" && s.fetch_add(1, Ordering::SeqCst) == 1 {
                a.add_permits(1);
                let _ = h.acquire().await.unwrap();
            }
            json_answer(200, "{}")
        })
    }))
    .await;
    let shadow = start_shadow(&primary, &db, |c| {
        c.queue_capacity = 1;
        c.workers = 1;
        c.noise_floor = true;
    })
    .await;
    let first = shadow
        .call("GET", "/api/v2/chat/messages/1", Some(CUST1), &[], b"")
        .await;
    assert_eq!(first.status, 200);
    tokio::time::timeout(Duration::from_secs(30), arrived.acquire())
        .await
        .expect("the worker asks the primary again")
        .unwrap()
        .forget();
    // The worker is busy: one exchange waits in the queue, the next is dropped.
    let second = shadow
        .call("GET", "/api/v2/chat/conversations", Some(CUST1), &[], b"")
        .await;
    let third = shadow
        .call("GET", "/api/v2/chat/messages/2", Some(CUST1), &[], b"")
        .await;
    assert_eq!((second.status, third.status), (200, 200));
    assert_eq!(
        third.text(),
        "{}",
        "a dropped comparison still answers the client"
    );
    assert_eq!(shadow.count("messages", Outcome::Dropped), 1);
    let m = raw_http::send(&shadow.addr, "GET", "/metrics", &[("Host", "x")], b"").await;
    assert!(
        m.text().contains("shopchat_shadow_queue_depth 1\n"),
        "{}",
        m.text()
    );
    hold.add_permits(1);
    shadow.settle(3).await;
    assert_eq!(shadow.count("conversations", Outcome::Dropped), 0);
    assert_eq!(
        shadow.metrics.total(),
        3,
        "two compared, one dropped: {:?}",
        shadow.outcomes()
    );
    db.drop().await;
}

#[tokio::test]
async fn noise_floor_ignores_what_the_primary_itself_changes() {
    let db = TestDb::fresh().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    // Each answer carries a counter (5, 6, …): the primary disagrees with
    // itself there, and with shopchat's 0.
    let primary = fake_primary(Arc::new(move |req: FakeRequest| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let page = php_empty_page(req.path.split('?').next().unwrap());
            json_answer(
                200,
                &page.replace("\"total\":0", &format!("\"total\":{}", n + 5)),
            )
        })
    }))
    .await;
    let shadow = start_shadow(&primary, &db, |c| c.noise_floor = true).await;
    // Seller 1 has started no conversation: shopchat's page is empty, total 0.
    shadow
        .call("GET", "/api/v2/chat/conversations", Some(SELLER1), &[], b"")
        .await;
    shadow.settle(1).await;
    assert_eq!(
        shadow.count("conversations", Outcome::Match),
        1,
        "{:?} {:?}",
        shadow.outcomes(),
        shadow.log_lines()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2, "asked twice");
    db.drop().await;
}

// ------------------------------------------------------------------ replay

fn write_requests(dir: &std::path::Path, lines: &[Value]) -> PathBuf {
    let path = dir.join("requests.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

fn replay_requests() -> Vec<Value> {
    let h = |tok: &str| {
        serde_json::json!([
            ["Host", "shop.test"],
            ["Accept", "application/json"],
            ["System-Key", SYSTEM_KEY],
            ["Authorization", format!("Bearer {tok}")]
        ])
    };
    vec![
        serde_json::json!({"id": "a", "method": "GET", "path": "/api/v2/chat/conversations", "headers": h(CUST1)}),
        serde_json::json!({"id": "b", "method": "GET", "path": "/api/v2/chat/messages/1?page=2", "headers": h(CUST1)}),
        serde_json::json!({"id": "c", "method": "GET", "path": "/api/v2/chat/messages/3", "headers": h(CUST1)}),
        serde_json::json!({"id": "d", "method": "GET", "path": "/api/v2/chat/nope", "headers": h(CUST1)}),
        serde_json::json!({"id": "e", "method": "POST", "path": "/api/v2/chat/insert-message",
            "headers": [["Host", "shop.test"], ["Accept", "application/json"], ["System-Key", SYSTEM_KEY],
                        ["Authorization", format!("Bearer {CUST1}")], ["Content-Type", "application/x-www-form-urlencoded"]],
            "body": "conversation_id=1&message=replayed"}),
    ]
}

/// The `shopchat replay` binary (on the blocking pool: it talks to servers
/// that run in this process).
async fn run_replay(
    primary: &str,
    candidate: &str,
    requests: &std::path::Path,
    log: &std::path::Path,
) -> std::process::Output {
    run_replay_with(primary, candidate, requests, log, &["--allow-writes"]).await
}

async fn run_replay_with(
    primary: &str,
    candidate: &str,
    requests: &std::path::Path,
    log: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shopchat"));
    cmd.args(["replay", "--primary"])
        .arg(format!("http://{primary}"))
        .arg("--candidate")
        .arg(format!("http://{candidate}"))
        .arg("--requests")
        .arg(requests)
        .arg("--log")
        .arg(log)
        .args(extra)
        .env_clear();
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn replay_refuses_writes_unless_told_the_targets_are_copies() {
    // Security review L5: a --candidate pointed at production would duplicate real users'
    // messages and e-mails.
    let a = spawn_app().await;
    let b = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let requests = write_requests(dir.path(), &replay_requests());
    let log = dir.path().join("replay.jsonl");
    let out = run_replay_with(&a.addr, &b.addr, &requests, &log, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--allow-writes") && err.contains("nothing was sent"),
        "{err}"
    );
    for app in [&a, &b] {
        assert_eq!(
            app.db
                .scalar("SELECT COUNT(*) FROM messages WHERE message = 'replayed'")
                .await,
            "0"
        );
    }
    a.finish().await;
    b.finish().await;
}

#[tokio::test]
async fn replay_compares_two_services_and_reports() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let requests = write_requests(dir.path(), &replay_requests());
    let log = dir.path().join("replay.jsonl");
    // Two shopchats on two copies of the fixture: every answer matches.
    let out = run_replay(&a.addr, &b.addr, &requests, &log).await;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("verdict: no unexpected mismatch"),
        "{report}"
    );
    let total = report.lines().find(|l| l.starts_with("total ")).unwrap();
    assert_eq!(
        total.split_whitespace().collect::<Vec<_>>(),
        ["total", "5", "5", "0", "0", "0", "0"],
        "{report}"
    );
    // Both executed the write (each on its own database).
    for app in [&a, &b] {
        assert_eq!(
            app.db
                .scalar("SELECT COUNT(*) FROM messages WHERE message = 'replayed'")
                .await,
            "1"
        );
    }

    // A PHP-like primary: D1 is expected, the made-up page for a
    // conversation customer 1 takes part in is a mismatch.
    let fake = fake_primary(Arc::new(|req: FakeRequest| {
        Box::pin(async move {
            let path = req.path.split('?').next().unwrap_or_default().to_string();
            json_answer(200, &php_empty_page(&path))
        })
    }))
    .await;
    let mut lines = replay_requests();
    lines.retain(|l| {
        l["path"]
            .as_str()
            .unwrap()
            .starts_with("/api/v2/chat/messages/")
    });
    write_requests(dir.path(), &lines);
    let out = run_replay(&fake, &a.addr, &requests, &log).await;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("1 unexpected mismatch"), "{report}");
    let row: Vec<_> = report
        .lines()
        .find(|l| l.starts_with("messages "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row, ["messages", "2", "0", "1", "1", "0", "0"], "{report}");
    assert!(report.contains("D1"), "{report}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains(CUST1.split_once('|').unwrap().1));
    a.finish().await;
    b.finish().await;
}

#[test]
fn nginx_access_logs_convert_to_request_lists() {
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    std::fs::write(
        &access,
        concat!(
            r#"{"time":"2024-05-01T10:00:00+00:00","method":"GET","uri":"/api/v2/chat/get-new-messages/1/33","status":"200","host":"shop.test","accept":"application/json","authorization":"Bearer 5|x","system_key":"k","app_language":"sa","x_requested_with":"","x_pjax":""}"#,
            "\n",
            r#"{"time":"2024-05-01T10:00:01+00:00","method":"POST","uri":"/api/v2/chat/insert-message","status":"200","host":"shop.test","accept":"","authorization":"","system_key":"","app_language":"","x_requested_with":"","x_pjax":""}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shopchat"))
        .args(["replay", "convert-nginx"])
        .arg(&access)
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1);
    let r: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(r["method"], "GET");
    assert_eq!(r["path"], "/api/v2/chat/get-new-messages/1/33");
    assert!(r["headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h[0] == "App-Language" && h[1] == "sa"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 request(s) written, 1 skipped"));
}

// ------------------------------------------------------ the golden set, shadowed

/// The golden set through the shadow proxy in front of a primary that
/// answers like the PHP implementation: every request really runs on a
/// shopchat ("B", same database, so the data evolves as in the recording),
/// and where the recording shows PHP answering differently on purpose
/// (the D1–D4 overrides of `fixtures/golden/expected.jsonl`) the client gets
/// PHP's recorded answer instead. D5/D6 change what PHP *writes*; with PHP
/// really writing, later reads agree, so B's answers stand there.
/// The cutover's bar (docs/cutover.md): no unexpected mismatch, every deviation `expected`.
#[tokio::test]
async fn golden_set_through_the_shadow_has_only_expected_differences() {
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::helpers::project_file("fixtures/golden/cases.json"))
            .unwrap(),
    )
    .unwrap();
    let records: Vec<Value> = std::fs::read_to_string(crate::helpers::project_file(
        "fixtures/golden/expected.jsonl",
    ))
    .unwrap()
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .skip(1)
    .collect();
    let php: Arc<std::collections::HashMap<String, Value>> = Arc::new(
        records
            .iter()
            .filter(|r| {
                r["override"]["rule"]
                    .as_str()
                    .is_some_and(|rule| ["D1", "D2", "D3", "D4"].iter().any(|d| rule.contains(d)))
            })
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["override"]["php"].clone(),
                )
            })
            .collect(),
    );
    assert_eq!(php.len(), 9, "21, 30, 31, 32, 37, 43, 54, 55, 56");

    let b = spawn_app().await;
    let b_addr = b.addr.clone();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let recorded = php.clone();
    let primary = fake_primary(Arc::new(move |req: FakeRequest| {
        let (client, b_addr, recorded) = (client.clone(), b_addr.clone(), recorded.clone());
        Box::pin(async move {
            let mut fwd = client.request(
                reqwest::Method::from_bytes(req.method.as_bytes()).unwrap(),
                format!("http://{b_addr}{}", req.path),
            );
            for (k, v) in &req.headers {
                if k != "content-length" {
                    fwd = fwd.header(k.as_str(), v.as_bytes());
                }
            }
            let res = fwd.body(req.body.clone()).send().await.unwrap();
            let status = res.status().as_u16();
            let mut headers: Vec<(String, String)> = res
                .headers()
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "content-length" | "date" | "connection"))
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect();
            let body = res.bytes().await.unwrap().to_vec();
            match req.header("x-golden-case").and_then(|id| recorded.get(id)) {
                Some(p) => {
                    for (k, v) in &mut headers {
                        if k == "content-type" {
                            *v = p["content_type"].as_str().unwrap().to_string();
                        }
                    }
                    (
                        p["status"].as_u64().unwrap() as u16,
                        headers,
                        p["body"].as_str().unwrap().as_bytes().to_vec(),
                    )
                }
                None => (status, headers, body),
            }
        })
    }))
    .await;
    let shadow = start_shadow(&primary, &b.db, |_| {}).await;

    let mut compared = 0;
    for (case, record) in spec["cases"].as_array().unwrap().iter().zip(&records) {
        let id = case["id"].as_str().unwrap();
        let (method, path, mut headers, body) =
            crate::golden::request_of(case, &spec, spec["host"].as_str().unwrap());
        headers.push(("X-Golden-Case".into(), id.into()));
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let res = raw_http::send(&shadow.addr, &method, &path, &refs, &body).await;
        let want = match php.get(id) {
            Some(p) => p["status"].as_u64().unwrap(),
            None => record["status"].as_u64().unwrap(),
        };
        assert_eq!(
            res.status as u64, want,
            "{id}: the client gets the primary's status"
        );
        if shopchat::shadow::shadow_kind(&method, &path, "")
            .1
            .is_some()
        {
            compared += 1;
            // One at a time: the shadow reads before the next request writes.
            shadow.settle(compared).await;
        }
    }
    let counts = shadow.metrics.snapshot();
    let sum = |o: Outcome| -> u64 {
        counts
            .outcomes
            .iter()
            .filter(|((_, oc), _)| oc == o.as_str())
            .map(|(_, n)| n)
            .sum()
    };
    let log = shadow.log_lines();
    assert_eq!(sum(Outcome::Mismatch), 0, "unexpected mismatches: {log:#?}");
    assert_eq!(sum(Outcome::Error) + sum(Outcome::Dropped), 0, "{log:#?}");
    let mut by_deviation: std::collections::BTreeMap<String, u64> = Default::default();
    for ((_, dev), n) in &counts.expected {
        *by_deviation.entry(dev.clone()).or_default() += n;
    }
    let by_deviation: Vec<(String, u64)> = by_deviation.into_iter().collect();
    assert_eq!(
        by_deviation,
        [
            ("D1".to_string(), 6),
            ("D2".to_string(), 1),
            ("D4".to_string(), 2),
            ("K6-token-deleted".to_string(), 2)
        ],
        "{log:#?}"
    );
    assert_eq!(sum(Outcome::Match) + 11, compared);
    b.finish().await;
}

//! The shared throttle (`SHOPCHAT_RATE_LIMIT_STORE=redis`, COMPAT §1.4, docs/scaling.md) against a
//! real `redis-server` started by each test (Debian package `redis-server`; scripts/test.sh
//! installs it): one budget across instances, an outage that costs no request, the return.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;

const LIST: &str = "/api/v2/chat/conversations";

/// A private `redis-server` on a free port, nothing kept on disk; stopped on drop.
pub struct PrivateRedis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn redis_server_binary() -> String {
    if let Ok(path) = std::env::var("SHOPCHAT_TEST_REDIS_SERVER") {
        return path;
    }
    for candidate in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.to_string();
        }
    }
    panic!(
        "redis-server not found: apt-get install -y redis-server (scripts/test.sh installs it), \
         or set SHOPCHAT_TEST_REDIS_SERVER"
    );
}

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        let mut redis = PrivateRedis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        redis.start_again().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port, empty.
    pub async fn start_again(&mut self) {
        let child = Command::new(redis_server_binary())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", self.dir.path().to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        wait_for_port(&format!("127.0.0.1:{}", self.port)).await;
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A key's value, read with a connection of the test's own.
    pub async fn get(&self, key: &str) -> Option<String> {
        let client = redis::Client::open(format!("{}/1", self.url())).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn redis_env(limit: &str, url: &str) -> Vec<(String, String)> {
    [
        ("SHOPCHAT_RATE_LIMIT", limit),
        ("SHOPCHAT_RATE_LIMIT_STORE", "redis"),
        ("REDIS_URL", url),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn as_pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn remaining(res: &crate::raw_http::Response) -> Option<u32> {
    res.header("x-ratelimit-remaining")?.parse().ok()
}

async fn metrics(addr: &str) -> String {
    request_with(addr, "GET", "/metrics", None, &[], b"")
        .await
        .text()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[tokio::test]
async fn two_instances_share_one_budget_per_user() {
    let redis = PrivateRedis::start().await;
    let env = redis_env("6", &redis.url());
    let app = spawn_app_with(&as_pairs(&env)).await;
    let (other, _outbox) = another_instance(&app, &as_pairs(&env)).await;

    // Alternating between the instances, one count: 5, 4, … 0, then 429 on either.
    let mut seen = Vec::new();
    for i in 0..6 {
        let addr = if i % 2 == 0 { &app.addr } else { &other };
        let res = request_at(addr, "GET", LIST, CUST1, None).await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.header("x-ratelimit-limit"), Some("6"));
        seen.push(remaining(&res).unwrap());
    }
    assert_eq!(seen, vec![5, 4, 3, 2, 1, 0]);
    for addr in [&app.addr, &other] {
        let res = request_at(addr, "GET", LIST, CUST1, None).await;
        assert_eq!(res.status, 429, "{}", res.text());
        assert_eq!(res.header("x-ratelimit-remaining"), Some("0"));
        let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(res.body, b"{\n    \"message\": \"Too Many Attempts.\"\n}");
    }
    // The window is Redis' key, with the window's TTL; a 429 is not counted (§1.4).
    assert_eq!(
        redis.get("shopchat:throttle:u:5").await.as_deref(),
        Some("6")
    );
    // Another user has his own budget.
    let res = request_at(&other, "GET", LIST, CUST2, None).await;
    assert_eq!((res.status, remaining(&res)), (200, Some(5)));
    let text = metrics(&app.addr).await;
    assert!(
        text.contains("rate_limit_store=\"redis\""),
        "instance identity: {text}"
    );
    assert_eq!(metric(&text, "shopchat_rate_limit_store_errors_total"), 0.0);
    app.finish().await;
}

#[tokio::test]
async fn a_client_ip_spent_in_redis_is_answered_without_a_token_lookup() {
    let redis = PrivateRedis::start().await;
    let db = TestDb::fresh().await;
    let user = db.counted_user().await;
    let mut env = redis_env("3", &redis.url());
    env.extend(
        user.env()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let app = spawn_app_on(db, &as_pairs(&env)).await;
    assert_eq!(app.get(LIST, CUST1).await.status, 200);
    // Three unknown tokens spend the IP's bucket in Redis (one lookup each)…
    for i in 0..3 {
        let res = app.get(LIST, &format!("{i}|nope")).await;
        assert_eq!(res.status, 401);
    }
    assert_eq!(app.get(LIST, "9|nope").await.status, 429);
    // …and from then on the instance knows it: no lookup, no statement.
    let before = app.db.statements(&user).await;
    for i in 10..60 {
        assert_eq!(app.get(LIST, &format!("{i}|nope")).await.status, 429);
    }
    assert_eq!(app.db.statements(&user).await - before, 0);
    app.finish().await;
}

#[tokio::test]
async fn a_redis_outage_costs_no_request_and_counting_returns_to_redis() {
    let mut redis = PrivateRedis::start().await;
    let env = redis_env("100", &redis.url());
    let app = spawn_app_with(&as_pairs(&env)).await;
    for expected in [99, 98] {
        let res = app.get(LIST, CUST1).await;
        assert_eq!((res.status, remaining(&res)), (200, Some(expected)));
    }

    redis.stop();
    // Down: every request is answered, counted in this process (a new window of its own).
    let mut statuses = Vec::new();
    let mut counted = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let res = app.get(LIST, CUST1).await;
        assert!(started.elapsed() < Duration::from_secs(2), "not held up");
        statuses.push(res.status);
        counted.push(remaining(&res).unwrap());
    }
    assert_eq!(statuses, vec![200; 5]);
    assert_eq!(counted, vec![99, 98, 97, 96, 95], "in-process window");
    // Ready stays green: the throttle is not a dependency of serving.
    assert_eq!(
        request_with(&app.addr, "GET", "/ready", None, &[], b"")
            .await
            .status,
        200
    );
    let errors = metric(
        &metrics(&app.addr).await,
        "shopchat_rate_limit_store_errors_total",
    );
    assert!(errors >= 1.0, "{errors}");

    // Back (empty, as after a restart without persistence): after the retry interval the
    // hits go to Redis again.
    redis.start_again().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = app.get(LIST, CUST1).await;
        assert_eq!(res.status, 200);
        if redis.get("shopchat:throttle:u:5").await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "never counted in Redis again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let res = app.get(LIST, CUST1).await;
    let in_redis: u32 = redis
        .get("shopchat:throttle:u:5")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(remaining(&res), Some(100 - in_redis));
    app.finish().await;
}

#[tokio::test]
async fn a_redis_that_does_not_answer_is_waited_for_no_longer_than_its_timeout() {
    // Accepts connections and never answers: a hung Redis, or a black-holed network.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", hung.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hung.accept().await {
            conns.push(c);
        }
    });
    let mut env = redis_env("100", &url);
    env.push(("SHOPCHAT_REDIS_TIMEOUT_MS".into(), "200".into()));
    let app = spawn_app_with(&as_pairs(&env)).await;
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(app.get(LIST, CUST1).await.status);
    }
    assert_eq!(statuses, vec![200; 10]);
    // One wait of the timeout, then in process for the retry interval (1 s): 10 requests take
    // about one timeout, not ten.
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1800), "{took:?}");
    let errors = metric(
        &metrics(&app.addr).await,
        "shopchat_rate_limit_store_errors_total",
    );
    assert!(errors >= 1.0, "{errors}");
    held.abort();
    app.finish().await;
}

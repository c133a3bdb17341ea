//! Several instances, one shop (docs/scaling.md): three `shopchat serve` processes behind a real
//! nginx (the deploy/nginx kit, its `shopchat` upstream round-robin over the three), one MariaDB,
//! one Redis for the shared throttle, one SMTP server, all started here.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::helpers::*;
use crate::mail::{smtp_env, smtp_sink, wait_for_mail, Received};
use crate::nginx::{lay_out, nginx_binary, run_nginx, Nginx};
use crate::redis_store::PrivateRedis;

const INSERT: &str = "/api/v2/chat/insert-message";
const CREATE: &str = "/api/v2/chat/create-conversation";
const FORM: &str = "application/x-www-form-urlencoded";

/// Every route to shopchat, nothing mirrored.
const ALL_SHOPCHAT: &str = r#"
map $shopchat_route $shopchat_stage {
    default                 shopchat;
}
split_clients "${http_authorization}" $shopchat_canary {
    *       shopchat;
}
"#;

/// One `shopchat serve` process with its own outbox; restartable on its port.
struct Instance {
    child: Option<Child>,
    port: u16,
    env: Vec<(String, String)>,
    outbox: tempfile::TempDir,
    /// stderr of every run of this instance, appended: shown when a test fails.
    log: tempfile::NamedTempFile,
}

impl Instance {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_shopchat"))
            .arg("serve")
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(self.log.path())
                    .map_or_else(|_| Stdio::null(), Stdio::from),
            )
            .spawn()
            .expect("start shopchat serve");
        self.child = Some(child);
        wait_for_port(&self.addr()).await;
    }

    /// SIGTERM, as systemd or a container runtime stops it, and wait for the exit.
    async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let t0 = Instant::now();
        for _ in 0..400 {
            if let Ok(Some(status)) = child.try_wait() {
                println!("instance on {} stopped in {:?}", self.port, t0.elapsed());
                assert!(status.success(), "graceful exit: {status}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        panic!("instance on {} did not stop within 20 s", self.port);
    }

    /// Waits (bounded) until `/ready` answers 200.
    async fn wait_ready(&self) {
        for _ in 0..200 {
            if request_with(&self.addr(), "GET", "/ready", None, &[], b"")
                .await
                .status
                == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("instance on {} not ready within 10 s", self.port);
    }

    /// The lines of this instance's log at WARN or ERROR.
    fn troubles(&self) -> Vec<String> {
        std::fs::read_to_string(self.log.path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(|l| format!("{}: {l}", self.port))
            .collect()
    }

    fn outbox_files(&self) -> usize {
        walk(self.outbox.path())
    }
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| {
                let p = e.path();
                if p.is_dir() {
                    walk(&p)
                } else {
                    1
                }
            })
            .sum()
    })
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Cluster {
    db: TestDb,
    instances: Vec<Instance>,
    _nginx: Nginx,
    _nginx_dir: tempfile::TempDir,
    /// nginx: what the app talks to.
    front: String,
    redis: PrivateRedis,
    mail: Arc<std::sync::Mutex<Vec<Received>>>,
}

/// Three instances with `SHOPCHAT_RATE_LIMIT=limit`, counted in Redis.
async fn cluster(limit: &str) -> Cluster {
    let db = TestDb::fresh().await;
    let redis = PrivateRedis::start().await;
    let (smtp_port, mail) = smtp_sink().await;
    let mut instances = Vec::new();
    for i in 0..3 {
        let outbox = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut env = test_env(&db.name, outbox.path());
        for (k, v) in smtp_env(&smtp_port.to_string()) {
            env.insert(k.to_string(), v);
        }
        for (k, v) in [
            ("SHOPCHAT_LISTEN", format!("127.0.0.1:{port}")),
            ("SHOPCHAT_INSTANCE", format!("test-{i}")),
            ("SHOPCHAT_TRUSTED_PROXIES", "127.0.0.1".into()),
            ("SHOPCHAT_RATE_LIMIT", limit.into()),
            ("SHOPCHAT_RATE_LIMIT_STORE", "redis".into()),
            ("REDIS_URL", redis.url()),
            ("SHOPCHAT_SHUTDOWN_TIMEOUT", "10".into()),
        ] {
            env.insert(k.to_string(), v);
        }
        let mut instance = Instance {
            child: None,
            port,
            env: env.into_iter().collect(),
            outbox,
            log: tempfile::NamedTempFile::new().unwrap(),
        };
        instance.start().await;
        instances.push(instance);
    }
    let upstreams = instances
        .iter()
        .map(Instance::addr)
        .collect::<Vec<_>>()
        .join(" ");
    let nginx_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // PHP is never asked (every route goes to shopchat): its address listens nowhere.
    let php = format!("127.0.0.1:{}", free_port());
    let conf = lay_out(nginx_dir.path(), &php, &upstreams, Some(ALL_SHOPCHAT), port);
    let nginx = run_nginx(&nginx_binary(), nginx_dir.path(), &conf);
    let front = format!("127.0.0.1:{port}");
    wait_for_port(&front).await;
    Cluster {
        db,
        instances,
        _nginx: nginx,
        _nginx_dir: nginx_dir,
        front,
        redis,
        mail,
    }
}

impl Cluster {
    /// What the instances logged at WARN or ERROR, for a failing assertion's message.
    fn troubles(&self) -> Vec<String> {
        let nginx = std::fs::read_to_string(self._nginx_dir.path().join("error.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| format!("nginx: {l}"))
            .collect::<Vec<_>>();
        self.instances
            .iter()
            .flat_map(Instance::troubles)
            .chain(nginx)
            .collect()
    }

    async fn finish(mut self) {
        for i in &mut self.instances {
            i.stop().await;
        }
        self.db.drop().await;
    }
}

async fn post(
    addr: &str,
    target: &str,
    token: &str,
    pairs: &[(&str, &str)],
) -> crate::raw_http::Response {
    let body = crate::raw_http::form(pairs);
    request_at(addr, "POST", target, token, Some((FORM, body.as_bytes()))).await
}

#[tokio::test]
async fn a_long_poll_on_one_instance_sees_writes_through_another_and_the_database() {
    let c = cluster("0").await;
    let (a, b) = (c.instances[0].addr(), c.instances[1].addr());
    let newest: i64 =
        c.db.scalar("SELECT MAX(id) FROM messages WHERE conversation_id = 1")
            .await
            .parse()
            .unwrap();

    // Held on instance A, written through instance B.
    let poll = format!("/api/v2/chat/get-new-messages/1/{newest}?wait=20");
    let started = Instant::now();
    let held = tokio::spawn({
        let (a, poll) = (a.clone(), poll.clone());
        async move { request_at(&a, "GET", &poll, SELLER1, None).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = post(
        &b,
        INSERT,
        CUST1,
        &[("conversation_id", "1"), ("message", "via B")],
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let answer = held.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["data"][0]["message"], "via B");
    // Answered by the watcher's scans, long before the 20 s wait is over.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // Held on instance B, written straight into the database (the shop's web chat).
    let newest = answer.json()["data"][0]["id"].as_i64().unwrap();
    let poll = format!("/api/v2/chat/get-new-messages/1/{newest}?wait=20");
    let started = Instant::now();
    let held = tokio::spawn({
        let b = b.clone();
        async move { request_at(&b, "GET", &poll, CUST1, None).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query(
        "INSERT INTO messages (conversation_id, user_id, message, created_at, updated_at) \
         VALUES (1, 2, 'from the web chat', UTC_TIMESTAMP(), UTC_TIMESTAMP())",
    )
    .execute(&c.db.pool)
    .await
    .unwrap();
    let answer = held.await.unwrap();
    assert_eq!(answer.json()["data"][0]["message"], "from the web chat");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    c.finish().await;
}

#[tokio::test]
async fn creates_through_nginx_make_one_conversation_per_pair_and_every_mail_arrives() {
    let c = cluster("0").await;
    // One pair and title, eight taps at once, spread over the instances by nginx (D6).
    let tasks = (0..8).map(|_| {
        let front = c.front.clone();
        async move {
            post(
                &front,
                CREATE,
                CUST1,
                &[
                    ("product_id", "5"),
                    ("title", "Clay mug"),
                    ("message", "Is it glazed?"),
                ],
            )
            .await
        }
    });
    for res in join_all(tasks).await {
        assert_eq!(res.status, 200, "{}", res.text());
    }
    let pair: i64 =
        c.db.scalar("SELECT COUNT(*) FROM conversations WHERE sender_id = 5 AND receiver_id = 4")
            .await
            .parse()
            .unwrap();
    assert_eq!(pair, 1, "one conversation for the pair and title");
    // New pairs, one after another: round-robin hands them to different instances.
    for (token, product) in [
        (CUST2, "3"),
        (CUST3, "4"),
        (CUST1, "4"),
        (CUST2, "5"),
        (CUST3, "3"),
    ] {
        let res = post(
            &c.front,
            CREATE,
            token,
            &[("product_id", product), ("message", "Hello")],
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
    // Six new conversations, six mails: each instance delivered what it accepted.
    let mails = wait_for_mail(&c.mail, 6).await;
    assert_eq!(mails.len(), 6, "{mails:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.mail.lock().unwrap().len(), 6, "no mail twice");
    for i in &c.instances {
        assert_eq!(i.outbox_files(), 0, "outbox of {} drained", i.addr());
    }
    c.finish().await;
}

#[tokio::test]
async fn the_throttle_is_one_budget_across_the_instances() {
    let c = cluster("30").await;
    let mut statuses = Vec::new();
    for _ in 0..45 {
        statuses.push(
            request_at(&c.front, "GET", "/api/v2/chat/conversations", CUST2, None)
                .await
                .status,
        );
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, limited), (30, 15), "{statuses:?}");
    assert_eq!(
        c.redis.get("shopchat:throttle:u:6").await.as_deref(),
        Some("30")
    );
    // Each instance served some of them: the budget was shared, not per instance.
    for i in &c.instances {
        let text = request_with(&i.addr(), "GET", "/metrics", None, &[], b"")
            .await
            .text();
        let served: f64 = text
            .lines()
            .filter(|l| l.starts_with("shopchat_http_requests_total{route=\"conversations\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(served >= 5.0, "{} served {served}", i.addr());
        assert!(text.contains("instance=\"test-"), "{text}");
    }
    c.finish().await;
}

#[tokio::test]
async fn a_rolling_restart_loses_no_write_and_fails_no_request() {
    let mut c = cluster("0").await;
    let stop = Arc::new(AtomicBool::new(false));
    // Steady traffic through nginx: two writers and two pollers.
    let writers = [(CUST1, "1", "w1"), (CUST2, "3", "w2")].map(|(token, conversation, name)| {
        let (front, stop) = (c.front.clone(), stop.clone());
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut failed = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let text = format!("{name}-{n}");
                let res = post(
                    &front,
                    INSERT,
                    token,
                    &[("conversation_id", conversation), ("message", &text)],
                )
                .await;
                if res.status == 200 {
                    accepted.push(text);
                } else {
                    failed.push((text, res.status, res.text()));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (accepted, failed)
        })
    });
    let pollers = [(SELLER1, "1"), (SELLER2, "3")].map(|(token, conversation)| {
        let (front, stop) = (c.front.clone(), stop.clone());
        tokio::spawn(async move {
            let mut failed = Vec::new();
            let mut answered = 0;
            while !stop.load(Ordering::Relaxed) {
                let target = format!("/api/v2/chat/get-new-messages/{conversation}/0");
                let res = request_at(&front, "GET", &target, token, None).await;
                if res.status == 200 {
                    answered += 1;
                } else {
                    failed.push((res.status, res.text()));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (answered, failed)
        })
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The procedure of docs/scaling.md: restart one, wait for /ready and for nginx's
    // fail_timeout (2 s in deploy/nginx) to put it back in rotation, then the next.
    for i in 0..3 {
        c.instances[i].stop().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.instances[i].start().await;
        c.instances[i].wait_ready().await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    stop.store(true, Ordering::Relaxed);

    let mut accepted = HashSet::new();
    for w in writers {
        let (ok, failed) = w.await.unwrap();
        assert!(
            failed.is_empty(),
            "{} writes failed, the first: {:?}\n{:#?}",
            failed.len(),
            failed.first(),
            c.troubles()
        );
        assert!(ok.len() > 20, "traffic flowed: {}", ok.len());
        accepted.extend(ok);
    }
    for p in pollers {
        let (answered, failed) = p.await.unwrap();
        assert!(
            failed.is_empty(),
            "{} polls failed, the first: {:?}\n{:#?}",
            failed.len(),
            failed.first(),
            c.troubles()
        );
        assert!(answered > 20);
    }
    // Every accepted write is stored, once.
    let stored = c
        .db
        .rows("SELECT message, COUNT(*) FROM messages WHERE message LIKE 'w_-%' GROUP BY message")
        .await;
    let stored_texts: HashSet<String> = stored.iter().map(|r| r[0].clone()).collect();
    assert!(stored.iter().all(|r| r[1] == "1"), "a write stored twice");
    let lost: Vec<_> = accepted.difference(&stored_texts).collect();
    assert!(lost.is_empty(), "accepted and lost: {lost:?}");
    println!(
        "rolling restart: {} writes accepted and stored",
        accepted.len()
    );
    c.finish().await;
}

//! The cutover kit of `deploy/nginx/` run by a real nginx (Debian package
//! `nginx-light`; scripts/test.sh installs it) in front of two upstreams
//! that say who answered: per-route routing, canary stickiness on the bearer
//! token, GET-only mirroring, the rollback switch, the replay log format.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::{free_port, project_file, wait_for_port};
use crate::raw_http;
use crate::shadow::{fake_primary, FakeRequest};

type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// The `X-Forwarded-Host` values an upstream received, in order.
static FORWARDED_HOSTS: Mutex<Vec<(&str, String)>> = Mutex::new(Vec::new());

/// An upstream answering its own name and recording (method, path).
async fn upstream(name: &'static str) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let addr = fake_primary(Arc::new(move |req: FakeRequest| {
        s.lock()
            .unwrap()
            .push((req.method.clone(), req.path.clone()));
        if let Some((_, v)) = req
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-forwarded-host"))
        {
            FORWARDED_HOSTS.lock().unwrap().push((name, v.clone()));
        }
        Box::pin(async move {
            (
                200,
                vec![("Content-Type".into(), "text/plain".into())],
                name.as_bytes().to_vec(),
            )
        })
    }))
    .await;
    (addr, seen)
}

pub struct Nginx(Child);

impl Drop for Nginx {
    /// SIGTERM: the master stops its workers (SIGKILL would orphan them).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn nginx_binary() -> String {
    for candidate in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("nginx is not installed: apt-get install nginx-light (scripts/test.sh installs it)");
}

/// The shipped files, with what an operator edits: the upstream addresses
/// and the rollback flag's path (backends.conf), the dial (stages.conf). `shopchat`: one address
/// or several separated by spaces (one upstream server each).
pub fn lay_out(dir: &Path, php: &str, shopchat: &str, stages: Option<&str>, port: u16) -> String {
    let shipped = project_file("deploy/nginx/shopchat");
    for f in [
        "cutover.conf",
        "chat-location.conf",
        "log-format.conf",
        "stages.conf",
    ] {
        std::fs::copy(shipped.join(f), dir.join(f)).unwrap();
    }
    let backends = std::fs::read_to_string(shipped.join("backends.conf"))
        .unwrap()
        .replace("server 127.0.0.1:8081;", &format!("server {php};"))
        .replace(
            "server 127.0.0.1:8000 max_fails=1 fail_timeout=2s;",
            &shopchat
                .split(' ')
                .map(|a| format!("server {a} max_fails=1 fail_timeout=2s;"))
                .collect::<Vec<_>>()
                .join("\n    "),
        )
        .replace(
            "/etc/nginx/shopchat/ROLLBACK",
            dir.join("ROLLBACK").to_str().unwrap(),
        );
    assert!(backends.contains(php) && shopchat.split(' ').all(|a| backends.contains(a)));
    std::fs::write(dir.join("backends.conf"), backends).unwrap();
    if let Some(stages) = stages {
        std::fs::write(dir.join("stages.conf"), stages).unwrap();
    }
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let d = dir.display();
    let conf = format!(
        r#"worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    include backends.conf;
    include stages.conf;
    include cutover.conf;
    include log-format.conf;
    access_log {d}/replay.log shopchat_replay if=$shopchat_route;
    server {{
        listen 127.0.0.1:{port};
        include chat-location.conf;
        location / {{ proxy_pass http://shop_php; }}
    }}
}}
"#
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    path.to_str().unwrap().to_string()
}

/// nginx in the foreground with the configuration `conf` (checked first); stopped on drop.
pub fn run_nginx(bin: &str, dir: &Path, conf: &str) -> Nginx {
    nginx_check(bin, dir, conf);
    Nginx(
        Command::new(bin)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(dir)
            .args(["-c", conf])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn nginx_check(bin: &str, dir: &Path, conf: &str) {
    let out = Command::new(bin)
        .args(["-t", "-e"])
        .arg(dir.join("error.log"))
        .arg("-p")
        .arg(dir)
        .args(["-c", conf])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const STAGES: &str = r#"
map $shopchat_route $shopchat_stage {
    default                 php;
    conversations           canary;
    messages                mirror;
    get-new-messages        shopchat;
    insert-message          mirror;
    create-conversation     php;
}
split_clients "${http_authorization}" $shopchat_canary {
    50%     shopchat;
    *       php;
}
"#;

async fn get(addr: &str, method: &str, target: &str, token: &str) -> String {
    let auth = format!("Bearer {token}");
    let headers = [
        ("Host", "shop.test"),
        ("Accept", "application/json"),
        ("Authorization", auth.as_str()),
    ];
    let body: &[u8] = if method == "POST" { b"a=1" } else { b"" };
    let res = raw_http::send(addr, method, target, &headers, body).await;
    assert_eq!(res.status, 200, "{method} {target}: {}", res.text());
    res.text()
}

/// Waits (bounded) until `seen` holds the request.
async fn arrives(seen: &Seen, method: &str, path: &str) {
    for _ in 0..400 {
        if seen
            .lock()
            .unwrap()
            .iter()
            .any(|(m, p)| m == method && p == path)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "{method} {path} never reached the upstream: {:?}",
        seen.lock().unwrap()
    );
}

fn received(seen: &Seen, method: &str, path: &str) -> bool {
    seen.lock()
        .unwrap()
        .iter()
        .any(|(m, p)| m == method && p == path)
}

#[tokio::test]
async fn nginx_kit_routes_canaries_mirrors_and_rolls_back() {
    let bin = nginx_binary();
    let (php_addr, php_seen) = upstream("php").await;
    let (sc_addr, sc_seen) = upstream("shopchat").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();

    // The shipped dial as it is must load.
    let conf = lay_out(dir.path(), &php_addr, &sc_addr, None, port);
    nginx_check(&bin, dir.path(), &conf);

    let conf = lay_out(dir.path(), &php_addr, &sc_addr, Some(STAGES), port);
    let _nginx = run_nginx(&bin, dir.path(), &conf);
    let addr = format!("127.0.0.1:{port}");
    wait_for_port(&addr).await;

    // (a) per-route routing.
    let tok = "5|secret";
    assert_eq!(
        get(&addr, "GET", "/api/v2/chat/get-new-messages/1/33", tok).await,
        "shopchat"
    );
    assert_eq!(
        get(
            &addr,
            "GET",
            "/api/v2/chat/get-new-messages/1/33?page=2",
            tok
        )
        .await,
        "shopchat"
    );
    assert_eq!(
        get(&addr, "POST", "/api/v2/chat/create-conversation", tok).await,
        "php"
    );
    assert_eq!(get(&addr, "GET", "/api/v2/chat/nope", tok).await, "php");
    assert_eq!(get(&addr, "GET", "/login", tok).await, "php");

    // (b) the kit sets X-Forwarded-Host itself: a client's own value never reaches shopchat,
    // which trusts the header from nginx (security review M2: links in sellers' e-mails).
    let res = raw_http::send(
        &addr,
        "GET",
        "/api/v2/chat/get-new-messages/1/34",
        &[
            ("Host", "shop.test"),
            ("X-Forwarded-Host", "shop-login.attacker.tld"),
            ("Authorization", "Bearer 5|secret"),
        ],
        b"",
    )
    .await;
    assert_eq!(res.text(), "shopchat");
    let forwarded = FORWARDED_HOSTS.lock().unwrap().clone();
    assert!(
        !forwarded.is_empty() && forwarded.iter().all(|(_, h)| h == "shop.test"),
        "{forwarded:?}"
    );

    // (c) mirror: PHP answers, shopchat gets a copy of GETs, never of POSTs.
    assert_eq!(
        get(&addr, "GET", "/api/v2/chat/messages/1", tok).await,
        "php"
    );
    arrives(&sc_seen, "GET", "/api/v2/chat/messages/1").await;
    assert!(received(&php_seen, "GET", "/api/v2/chat/messages/1"));
    assert_eq!(
        get(&addr, "POST", "/api/v2/chat/insert-message", tok).await,
        "php"
    );
    assert_eq!(
        get(&addr, "GET", "/api/v2/chat/messages/2", tok).await,
        "php"
    );
    arrives(&sc_seen, "GET", "/api/v2/chat/messages/2").await;
    assert!(
        !sc_seen.lock().unwrap().iter().any(|(m, _)| m == "POST"),
        "a POST was mirrored: {:?}",
        sc_seen.lock().unwrap()
    );

    // (b) canary: each token sticks to one side; both sides get users.
    let mut sides = Vec::new();
    for i in 1..=20 {
        let token = format!("{i}|token-secret-{i}");
        let first = get(&addr, "GET", "/api/v2/chat/conversations", &token).await;
        for _ in 0..3 {
            assert_eq!(
                get(&addr, "GET", "/api/v2/chat/conversations?page=2", &token).await,
                first,
                "token {token} changed sides"
            );
        }
        sides.push((token, first));
    }
    let on_shopchat: Vec<_> = sides.iter().filter(|(_, s)| s == "shopchat").collect();
    assert!(
        !on_shopchat.is_empty() && on_shopchat.len() < sides.len(),
        "a 50% canary put everyone on one side: {sides:?}"
    );
    let canary_token = on_shopchat[0].0.clone();

    // (d) the rollback switch: no reload, next request on PHP, no mirror.
    std::fs::write(dir.path().join("ROLLBACK"), "").unwrap();
    assert_eq!(
        get(&addr, "GET", "/api/v2/chat/get-new-messages/1/33", tok).await,
        "php"
    );
    assert_eq!(
        get(&addr, "GET", "/api/v2/chat/conversations", &canary_token).await,
        "php"
    );
    assert_eq!(
        get(&addr, "GET", "/api/v2/chat/messages/3", tok).await,
        "php"
    );
    std::fs::remove_file(dir.path().join("ROLLBACK")).unwrap();
    assert_eq!(
        get(&addr, "GET", "/api/v2/chat/get-new-messages/1/33", tok).await,
        "shopchat"
    );
    assert_eq!(
        get(&addr, "GET", "/api/v2/chat/conversations", &canary_token).await,
        "shopchat"
    );
    assert_eq!(
        get(&addr, "GET", "/api/v2/chat/messages/4", tok).await,
        "php"
    );
    arrives(&sc_seen, "GET", "/api/v2/chat/messages/4").await;
    assert!(
        !received(&sc_seen, "GET", "/api/v2/chat/messages/3"),
        "mirrored during the rollback"
    );

    // The replay log format feeds the converter: GETs of the read routes.
    let log = std::fs::read(dir.path().join("replay.log")).unwrap();
    let mut out = Vec::new();
    let (kept, skipped) = shopchat::shadow::replay::convert_nginx(&log[..], &mut out, "").unwrap();
    // 5 get-new-messages + 4 messages + 82 conversations; the 2 POSTs are
    // dropped; neither the fallback (not a chat route) nor mirror
    // subrequests are logged.
    assert_eq!((kept, skipped), (91, 2));
    let first: serde_json::Value =
        serde_json::from_slice(out.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["path"], "/api/v2/chat/get-new-messages/1/33");
    assert!(first["headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h[0] == "Authorization" && h[1] == "Bearer 5|secret"));
}

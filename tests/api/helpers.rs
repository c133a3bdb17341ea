//! Test fixtures: a fresh database per test, loaded with the shop schema and
//! the fixture data, and shopchat serving it on a free port.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use sqlx::mysql::MySqlPoolOptions;
use sqlx::{Executor, MySqlPool, Row};

use shopchat::config::Settings;
use shopchat::startup::Application;

use crate::raw_http::{self, Response};

pub const APP_KEY: &str = "base64:FxO+5zEy133M5/q/XUBpdtp/0srOK9tezZfkWCnyPFc=";
pub const SYSTEM_KEY: &str = "fixture-system-key";

/// Fixture bearer tokens (fixtures/README.md).
pub const ADMIN: &str = "1|b60e293b63dd579d74642d6e5bf7087a0c90b103";
pub const SELLER1: &str = "2|582bbf75c48770eccbe41d19aab94e1134bf12f1";
pub const SELLER2: &str = "3|e006567f55c5963fb96129c549daba11b1cd5343";
pub const CUST1: &str = "5|e82dec50eb35333b411bdc59de6c1b222cbf49b6";
pub const CUST2: &str = "6|50008b5538dfb4495fcbb3dc2caf2e3335f3efb0";
pub const CUST3: &str = "7|1e0a23e17246d82c7ade3e182a0f46b50e1f8264";
pub const BANNED: &str = "8|c123945012bb1f20580e89c59191e080f8df8adf";
pub const CUST1_EXPIRED: &str = "10|ea9aab7a54429c3caa74247e323173ed4e3757fc";

pub fn project_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The server the tests use (`scripts/test.sh` starts a private one).
pub fn server_url() -> String {
    std::env::var("SHOPCHAT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

pub struct TestDb {
    pub name: String,
    pub pool: MySqlPool,
    admin: MySqlPool,
}

impl TestDb {
    /// A new database with `schema/shop.sql` and `fixtures/fixtures.sql` loaded.
    pub async fn fresh() -> TestDb {
        let admin = MySqlPoolOptions::new()
            .max_connections(2)
            .connect(&server_url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "test database server {} unreachable ({e}); run scripts/test.sh",
                    server_url()
                )
            });
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        drop_stale(&admin, stamp).await;
        let name = format!("shopchat_t_{stamp}_{:08x}", rand::thread_rng().gen::<u32>());
        admin
            .execute(
                format!(
                    "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
                .as_str(),
            )
            .await
            .expect("create database");
        let pool = MySqlPoolOptions::new()
            .max_connections(5)
            .connect(&format!("{}/{name}", server_url().trim_end_matches('/')))
            .await
            .expect("connect to test database");
        // The dump sets its own sql_mode for its session; it is loaded on a connection of its
        // own so that every pooled connection a test uses has the server's default mode
        // (otherwise a test's statement would be strict or not depending on which one it got).
        let mut loader = pool.acquire().await.expect("connect to test database");
        for file in ["schema/shop.sql", "fixtures/fixtures.sql"] {
            let sql = std::fs::read_to_string(project_file(file)).expect(file);
            sqlx::raw_sql(&sql)
                .execute(&mut *loader)
                .await
                .unwrap_or_else(|e| panic!("loading {file}: {e}"));
        }
        loader.detach();
        TestDb { name, pool, admin }
    }

    pub async fn drop(self) {
        self.pool.close().await;
        let _ = self
            .admin
            .execute(format!("DROP DATABASE IF EXISTS `{}`", self.name).as_str())
            .await;
    }

    /// One value of a single-row, single-column query, as text (NULL → "NULL").
    pub async fn scalar(&self, sql: &str) -> String {
        self.rows(sql)
            .await
            .first()
            .and_then(|r| r.first().cloned())
            .unwrap_or_else(|| "NULL".into())
    }

    /// All rows of a query, every value as text like the `mariadb` client prints it.
    pub async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        // The text protocol (raw_sql) delivers every value as text.
        let rows = sqlx::raw_sql(sql)
            .fetch_all(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        row.try_get_unchecked::<Option<String>, _>(i)
                            .ok()
                            .flatten()
                            .unwrap_or_else(|| "NULL".into())
                    })
                    .collect()
            })
            .collect()
    }
}

/// A database account of its own for one test's service: the server counts the statements
/// each account runs, so a test sees what its requests cost the database while other tests
/// use the same server (MariaDB's user statistics, MySQL's performance schema).
pub struct CountedUser {
    pub name: String,
    pub password: String,
}

impl CountedUser {
    /// `DB_USERNAME`/`DB_PASSWORD` overrides that make a service use this account.
    pub fn env(&self) -> [(&str, &str); 2] {
        [
            ("DB_USERNAME", self.name.as_str()),
            ("DB_PASSWORD", self.password.as_str()),
        ]
    }
}

impl TestDb {
    /// A new account with every privilege on this database, its statements counted.
    pub async fn counted_user(&self) -> CountedUser {
        let name = format!("sc_{:08x}", rand::thread_rng().gen::<u32>());
        let password = format!("pw{:016x}", rand::thread_rng().gen::<u64>());
        // MariaDB counts per account only with userstat on (a global switch, harmless).
        let _ = self.admin.execute("SET GLOBAL userstat = 1").await;
        for host in ["%", "localhost", "127.0.0.1"] {
            self.admin
                .execute(
                    format!(
                        "CREATE USER IF NOT EXISTS '{name}'@'{host}' IDENTIFIED BY '{password}'"
                    )
                    .as_str(),
                )
                .await
                .expect("create user");
            self.admin
                .execute(
                    format!(
                        "GRANT ALL PRIVILEGES ON `{}`.* TO '{name}'@'{host}'",
                        self.name
                    )
                    .as_str(),
                )
                .await
                .expect("grant");
        }
        CountedUser { name, password }
    }

    /// Rows the server has sent to `user` so far (MariaDB's user statistics).
    pub async fn rows_sent(&self, user: &CountedUser) -> u64 {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(ROWS_SENT) AS SIGNED) FROM information_schema.USER_STATISTICS WHERE USER = ?",
        )
        .bind(&user.name)
        .fetch_one(&self.admin)
        .await
        .expect("rows sent (MariaDB userstat)");
        n.unwrap_or(0) as u64
    }

    /// Rows the server has read (examined) for `user` so far (MariaDB userstat).
    pub async fn rows_read(&self, user: &CountedUser) -> u64 {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(ROWS_READ) AS SIGNED) FROM information_schema.USER_STATISTICS WHERE USER = ?",
        )
        .bind(&user.name)
        .fetch_one(&self.admin)
        .await
        .expect("rows read (MariaDB userstat)");
        n.unwrap_or(0) as u64
    }

    /// Statements the server has run for `user` so far.
    pub async fn statements(&self, user: &CountedUser) -> u64 {
        let mariadb: Result<Option<i64>, _> = sqlx::query_scalar(
            "SELECT CAST(SUM(SELECT_COMMANDS + UPDATE_COMMANDS + OTHER_COMMANDS) AS SIGNED) \
             FROM information_schema.USER_STATISTICS WHERE USER = ?",
        )
        .bind(&user.name)
        .fetch_one(&self.admin)
        .await;
        let count = match mariadb {
            Ok(n) => n,
            Err(_) => sqlx::query_scalar(
                "SELECT CAST(SUM(COUNT_STAR) AS SIGNED) \
                 FROM performance_schema.events_statements_summary_by_user_by_event_name WHERE USER = ?",
            )
            .bind(&user.name)
            .fetch_one(&self.admin)
            .await
            .expect("statement counts (MariaDB userstat or MySQL performance_schema)"),
        };
        count.unwrap_or(0) as u64
    }
}

/// Databases of earlier, interrupted runs (older than an hour) are dropped.
async fn drop_stale(admin: &MySqlPool, now: u64) {
    let names: Vec<String> = sqlx::query_scalar("SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata WHERE schema_name LIKE 'shopchat\\_t\\_%'")
        .fetch_all(admin)
        .await
        .unwrap_or_default();
    for name in names {
        let stamp: u64 = name
            .split('_')
            .nth(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(now);
        if now.saturating_sub(stamp) > 3600 {
            let _ = admin
                .execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str())
                .await;
        }
    }
}

/// The environment of a test service on database `db`.
pub fn test_env(db: &str, outbox: &std::path::Path) -> HashMap<String, String> {
    let url = url_parts(&server_url());
    [
        ("DB_HOST", url.0.as_str()),
        ("DB_PORT", url.1.as_str()),
        ("DB_DATABASE", db),
        ("DB_USERNAME", url.2.as_str()),
        ("DB_PASSWORD", url.3.as_str()),
        ("APP_KEY", APP_KEY),
        ("APP_TIMEZONE", "UTC"),
        ("SYSTEM_KEY", SYSTEM_KEY),
        ("DEFAULT_LANGUAGE", "en"),
        ("MAIL_MAILER", "log"),
        ("SHOPCHAT_OUTBOX_DIR", outbox.to_str().unwrap()),
        ("SHOPCHAT_LISTEN", "127.0.0.1:0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// (host, port, user, password) of a `mysql://user[:pass]@host:port` URL.
fn url_parts(url: &str) -> (String, String, String, String) {
    let rest = url.trim_start_matches("mysql://").trim_end_matches('/');
    let (cred, hostport) = rest.rsplit_once('@').unwrap_or(("root", rest));
    let (user, pass) = cred.split_once(':').unwrap_or((cred, ""));
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "3306"));
    (
        host.to_string(),
        port.to_string(),
        user.to_string(),
        pass.to_string(),
    )
}

pub struct TestApp {
    pub addr: String,
    pub db: TestDb,
    pub outbox: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// shopchat in this process on a free port; `overrides` replace settings.
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_on(TestDb::fresh().await, overrides).await
}

/// shopchat on a database the test prepared first (a shop schema variant, say).
pub async fn spawn_app_on(db: TestDb, overrides: &[(&str, &str)]) -> TestApp {
    // `TEST_LOG=1 cargo test …` shows the service's log lines.
    if std::env::var_os("TEST_LOG").is_some() {
        shopchat::telemetry::init(false);
    }
    let outbox = tempfile::tempdir().unwrap();
    let mut env = test_env(&db.name, outbox.path());
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    let settings = Settings::load_from(None, env).expect("test settings");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let app = Application::build_with_listener(settings, listener)
        .await
        .expect("build app");
    let addr = format!("127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp { addr, db, outbox }
}

/// Another shopchat instance (in this test process) on the same database as `app`, with its
/// own outbox; `overrides` replace settings. Returns its address and its outbox.
pub async fn another_instance(
    app: &TestApp,
    overrides: &[(&str, &str)],
) -> (String, tempfile::TempDir) {
    let outbox = tempfile::tempdir().unwrap();
    let mut env = test_env(&app.db.name, outbox.path());
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    let settings = Settings::load_from(None, env).expect("test settings");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = Application::build_with_listener(settings, listener)
        .await
        .expect("build app");
    let addr = format!("127.0.0.1:{}", other.port());
    tokio::spawn(other.run_until_stopped());
    (addr, outbox)
}

impl TestApp {
    /// A request with the fixture defaults (see [`request_with`]).
    pub async fn call(
        &self,
        method: &str,
        target: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        request_with(&self.addr, method, target, token, extra, body).await
    }

    pub async fn get(&self, target: &str, token: &str) -> Response {
        self.call("GET", target, Some(token), &[], b"").await
    }

    pub async fn post_form(&self, target: &str, token: &str, pairs: &[(&str, &str)]) -> Response {
        let body = raw_http::form(pairs);
        self.call(
            "POST",
            target,
            Some(token),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
        .await
    }

    pub async fn post_json(&self, target: &str, token: &str, json: &serde_json::Value) -> Response {
        self.call(
            "POST",
            target,
            Some(token),
            &[("Content-Type", "application/json")],
            json.to_string().as_bytes(),
        )
        .await
    }

    pub async fn finish(self) {
        self.db.drop().await;
    }
}

/// A fresh database with a counted user, and the app on it with `overrides`: for tests that count
/// the statements a request costs ([`statements_besides_scans`]).
pub async fn spawn_counted(overrides: &[(&'static str, &'static str)]) -> (TestApp, CountedUser) {
    let db = TestDb::fresh().await;
    let user = db.counted_user().await;
    let mut env = user.env().to_vec();
    env.extend_from_slice(overrides);
    (spawn_app_on(db, &env).await, user)
}

/// Statements the counted user has run so far, less the message watcher's scans (which run every
/// 100 ms while anyone polls, whatever the requests).
///
/// The two counts are read apart: a scan in flight between them is counted by one and not yet by
/// the other (CI once saw a round's difference come out at -1). So the pair (scans, statements)
/// is read again 10 ms later until two readings in a row are identical, which a scan (well under
/// 10 ms, one per 100 ms) leaves them only when none ran in between.
pub async fn statements_besides_scans(app: &TestApp, user: &CountedUser) -> i64 {
    let read = || async {
        let scans = metric(app, "shopchat_watcher_statements_total").await;
        (scans, app.db.statements(user).await)
    };
    let mut last = read().await;
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let now = read().await;
        if now == last {
            return now.1 as i64 - now.0 as i64;
        }
        last = now;
    }
    panic!("the statement counts never held still for 10 ms: last (scans, statements) {last:?}");
}

/// A counter of `/metrics`, by its full name (labels included).
pub async fn metric(app: &TestApp, name: &str) -> u64 {
    let text = app.call("GET", "/metrics", None, &[], b"").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// A request to any shopchat address with the fixture defaults: `Host: shop.test`,
/// `Accept: application/json`, the System-Key and (when `token` is given) the
/// bearer token; `extra` headers replace defaults of the same name, and an
/// empty value removes it.
pub async fn request_with(
    addr: &str,
    method: &str,
    target: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    for (name, value) in [
        ("Host", "shop.test"),
        ("Accept", "application/json"),
        ("System-Key", SYSTEM_KEY),
    ] {
        if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
            headers.push((name, value));
        }
    }
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    headers.extend(extra.iter().filter(|(_, v)| !v.is_empty()).copied());
    raw_http::send(addr, method, target, &headers, body).await
}

/// A request with the fixture defaults to any shopchat address (another
/// process, the real binary): `Host: shop.test`, JSON client, System-Key,
/// the bearer `token`, and a body of `content_type` when given.
pub async fn request_at(
    addr: &str,
    method: &str,
    target: &str,
    token: &str,
    body: Option<(&str, &[u8])>,
) -> Response {
    match body {
        Some((content_type, bytes)) => {
            request_with(
                addr,
                method,
                target,
                Some(token),
                &[("Content-Type", content_type)],
                bytes,
            )
            .await
        }
        None => request_with(addr, method, target, Some(token), &[], b"").await,
    }
}

/// Waits until something accepts connections on `addr`.
pub async fn wait_for_port(addr: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {addr}");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `scripts/private-mariadb.sh CMD ARGS…`; the last stdout line.
pub fn private_db(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(project_file("scripts/private-mariadb.sh"))
        .args(args)
        .output()
        .expect("run scripts/private-mariadb.sh");
    assert!(
        out.status.success(),
        "private-mariadb.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// The private server's directory; stopped (and removed) on drop.
pub struct PrivateServer(pub tempfile::TempDir);

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(project_file("scripts/private-mariadb.sh"))
            .arg("stop")
            .arg(self.0.path())
            .output();
    }
}

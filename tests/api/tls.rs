//! TLS to the database (COMPAT §10, 2026-12; security review M5), against a private MariaDB
//! that `scripts/private-mariadb.sh tls` gave a throw-away CA and server certificate.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Command, Output};

use shopchat::config::Settings;
use shopchat::startup::Application;

use crate::helpers::*;

fn check(env: &HashMap<String, String>) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shopchat"))
        .arg("check")
        .env_clear()
        .envs(env)
        .env("RUST_LOG", "error")
        .output()
        .expect("run shopchat check")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// shopchat in this process with exactly `env`; its address.
async fn serve(env: &HashMap<String, String>) -> String {
    let settings = Settings::load_from(None, env.clone()).expect("settings");
    let app = Application::build_with_listener(settings, TcpListener::bind("127.0.0.1:0").unwrap())
        .await
        .expect("build");
    let addr = format!("127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    addr
}

async fn ssl_accepts(url: &str) -> i64 {
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    let (_, n): (String, String) = sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n.parse().unwrap()
}

#[tokio::test]
async fn tls_to_the_database_is_verified_and_refused_when_it_cannot_be() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let ca = private_db(&["tls", &path]);
    let url = private_db(&["start", &path]);
    let _server = PrivateServer(dir);
    private_db(&["load", &url, "shopchat_tls"]);
    let port = url.rsplit(':').next().unwrap().to_string();
    let other_ca = format!("{path}/tls/other-ca.pem");

    let outbox = tempfile::tempdir().unwrap();
    let mut base = test_env("shopchat_tls", outbox.path());
    for (k, v) in [
        ("DB_HOST", "127.0.0.1"),
        ("DB_PORT", port.as_str()),
        ("DB_USERNAME", "root"),
        ("DB_PASSWORD", ""),
    ] {
        base.insert(k.into(), v.into());
    }
    let with = |pairs: &[(&str, &str)]| {
        let mut env = base.clone();
        for (k, v) in pairs {
            env.insert(k.to_string(), v.to_string());
        }
        env
    };

    // 1. The shop's CA: verified TLS (verify_ca is the default with MYSQL_ATTR_SSL_CA), for the
    // service's every connection.
    let before = ssl_accepts(&url).await;
    let env = with(&[("MYSQL_ATTR_SSL_CA", &ca)]);
    let addr = serve(&env).await;
    let res = request_at(&addr, "GET", "/api/v2/chat/conversations", CUST1, None).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(
        ssl_accepts(&url).await > before,
        "the service's connection used TLS"
    );
    let out = check(&env);
    assert!(
        text(&out).contains("server certificate verified (verify_ca)"),
        "{}",
        text(&out)
    );
    // verify_identity: the certificate names 127.0.0.1.
    let out = check(&with(&[
        ("MYSQL_ATTR_SSL_CA", &ca),
        ("SHOPCHAT_DB_SSL_MODE", "verify_identity"),
    ]));
    assert!(
        text(&out).contains("server certificate verified (verify_identity)"),
        "{}",
        text(&out)
    );

    // 2. A wrong CA: refused, with an error that names the settings; the service answers 503.
    let env = with(&[("MYSQL_ATTR_SSL_CA", &other_ca)]);
    let out = check(&env);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("check SHOPCHAT_DB_SSL_MODE (verify_ca) and MYSQL_ATTR_SSL_CA"),
        "{}",
        text(&out)
    );
    let addr = serve(&with(&[
        ("MYSQL_ATTR_SSL_CA", &other_ca),
        ("SHOPCHAT_DB_ACQUIRE_TIMEOUT_MS", "1000"),
    ]))
    .await;
    let res = request_at(&addr, "GET", "/api/v2/chat/conversations", CUST1, None).await;
    assert_eq!(res.status, 503, "{}", res.text());

    // 3. The same server without TLS: `required` refuses…
    private_db(&["stop", &path]);
    std::fs::rename(format!("{path}/tls"), format!("{path}/tls-off")).unwrap();
    let again = private_db(&["start", &path, &port]);
    assert_eq!(again, url);
    let out = check(&with(&[("SHOPCHAT_DB_SSL_MODE", "required")]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("server does not support TLS") && t.contains("SHOPCHAT_DB_SSL_MODE (required)"),
        "{t}"
    );
    // …`preferred` (the default) connects in clear, and DATABASE_URL's ssl-mode wins.
    let out = check(&base);
    assert!(
        text(&out).contains("local database, no TLS"),
        "{}",
        text(&out)
    );
    let out = check(&with(&[
        ("SHOPCHAT_DB_SSL_MODE", "required"),
        (
            "DATABASE_URL",
            &format!("mysql://root@127.0.0.1:{port}/shopchat_tls?ssl-mode=disabled"),
        ),
    ]));
    assert!(
        text(&out).contains("local database, no TLS"),
        "{}",
        text(&out)
    );
}

//! The database: the connection pools ([`Pools`]: one per HTTP worker thread, one for the
//! rest) and the statements over many rows at once ([`batch`]).

pub mod batch;
mod pools;

pub use pools::Pools;

use std::time::Duration;

use anyhow::Context;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions, MySqlSslMode};
use sqlx::{ConnectOptions, Connection, Executor, MySqlPool};

use crate::config::{DatabaseSettings, SslMode};

/// The strict mode every pooled connection runs in (§6.4, D2): writes never truncate.
const SQL_MODE: &str = "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'";

/// How to reach the shop's database (§10): `DATABASE_URL`, else the `DB_*` settings.
pub fn connect_options(db: &DatabaseSettings) -> anyhow::Result<MySqlConnectOptions> {
    // TLS (COMPAT §10, 2026-12): DATABASE_URL's own `ssl-mode`/`ssl-ca` win over
    // SHOPCHAT_DB_SSL_MODE and MYSQL_ATTR_SSL_CA.
    let url_sets = |key: &str| {
        db.url
            .as_deref()
            .and_then(|u| u.split_once('?'))
            .is_some_and(|(_, query)| query.split('&').any(|kv| kv.starts_with(key)))
    };
    let mut options = match &db.url {
        Some(url) => url
            .replace("mariadb://", "mysql://")
            .parse::<MySqlConnectOptions>()
            .context("DATABASE_URL is not a valid mysql:// URL")?,
        None => {
            let mut o = MySqlConnectOptions::new()
                .host(&db.host)
                .port(db.port)
                .username(&db.username)
                .database(&db.database);
            // An empty DB_PASSWORD means "no password", not an empty scramble.
            if !db.password.expose().is_empty() {
                o = o.password(db.password.expose());
            }
            if let Some(socket) = &db.socket {
                o = o.socket(socket);
            }
            o
        }
    };
    if !url_sets("ssl-mode") && !url_sets("sslmode") {
        options = options.ssl_mode(match db.ssl_mode {
            SslMode::Disabled => MySqlSslMode::Disabled,
            SslMode::Preferred => MySqlSslMode::Preferred,
            SslMode::Required => MySqlSslMode::Required,
            SslMode::VerifyCa => MySqlSslMode::VerifyCa,
            SslMode::VerifyIdentity => MySqlSslMode::VerifyIdentity,
        });
    }
    if let (Some(ca), false) = (&db.ssl_ca, url_sets("ssl-ca") || url_sets("sslca")) {
        options = options.ssl_ca(ca);
    }
    Ok(options
        .charset("utf8mb4")
        .collation("utf8mb4_unicode_ci")
        // §6.4: never set the session time zone (sqlx defaults to +00:00), and
        // leave sql_mode to the after-connect hook.
        .timezone(None)
        .pipes_as_concat(false)
        .no_engine_substitution(false)
        .log_statements(tracing::log::LevelFilter::Trace))
}

/// A pooled connection idle for at least this long is pinged before it is handed out.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);

/// A lazily connecting pool: shopchat starts (and answers 503) while the
/// database is down, and recovers by itself when it returns.
pub fn pool(db: &DatabaseSettings) -> anyhow::Result<MySqlPool> {
    pool_pinging_after(db, PING_IF_IDLE_FOR)
}

/// [`pool`], pinging connections idle for `ping_after` or longer before handing them out.
///
/// sqlx pings every connection twice per use: when it is handed out (`test_before_acquire`,
/// on by default) and when it goes back (always, sqlx-core 0.8.6 `return_to_pool`). Under
/// 30,000 simulated app users that was 3,589 pings/s against 2,598 statements/s
/// (`Com_admin_commands`, bench/apptraffic.sh, 2026-12-05): the database's busiest "statement".
/// The ping on return already finds a connection that broke during its use; the one before
/// use only adds something for a connection that sat idle while the server went away (a
/// restart, `wait_timeout`), so it is kept for connections idle that long. A connection
/// that breaks within that time costs the one request using it a 503 (§1.3), and the ping on
/// return then drops it.
pub fn pool_pinging_after(
    db: &DatabaseSettings,
    ping_after: Duration,
) -> anyhow::Result<MySqlPool> {
    Ok(lazy_pool(
        db,
        connect_options(db)?,
        db.pool_size,
        ping_after,
    ))
}

/// A pool of at most `size` connections, with the settings of [`pool_pinging_after`].
fn lazy_pool(
    db: &DatabaseSettings,
    options: MySqlConnectOptions,
    size: u32,
    ping_after: Duration,
) -> MySqlPool {
    let time_zone = db.time_zone.clone();
    MySqlPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(db.acquire_timeout)
        .idle_timeout(Duration::from_secs(300))
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= ping_after {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .after_connect(move |conn, _meta| {
            let time_zone = time_zone.clone();
            Box::pin(async move {
                conn.execute(SQL_MODE).await?;
                if let Some(tz) = time_zone {
                    sqlx::query("SET time_zone = ?")
                        .bind(tz)
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            })
        })
        .connect_lazy_with(options)
}

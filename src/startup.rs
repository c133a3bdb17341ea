//! Wiring: the database pool, the shared state, the HTTP server and the
//! outbox worker.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_http::HttpService;
use actix_server::Server;
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::AppConfig;
use actix_web::{web, App};
use anyhow::Context;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{ConnectOptions, Executor, MySqlPool};
use tokio::sync::watch;

use crate::config::{DatabaseSettings, MailerKind, Settings};
use crate::http::limits::{Guarded, HeadLimits};
use crate::http::pipeline;
use crate::mail::outbox::Outbox;
use crate::mail::smtp::{encryption_from_env, Mailer, SmtpSettings};
use crate::mail::{worker, Mailbox};
use crate::state::AppState;

/// The strict mode every pooled connection runs in (§6.4, D2): writes never truncate.
const SQL_MODE: &str = "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'";

pub fn connect_options(db: &DatabaseSettings) -> anyhow::Result<MySqlConnectOptions> {
    let options = match &db.url {
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
            if !db.password.is_empty() {
                o = o.password(&db.password);
            }
            if let Some(socket) = &db.socket {
                o = o.socket(socket);
            }
            o
        }
    };
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

/// A lazily connecting pool: shopchat starts (and answers 503) while the
/// database is down, and recovers by itself when it returns.
pub fn pool(db: &DatabaseSettings) -> anyhow::Result<MySqlPool> {
    let options = connect_options(db)?;
    let time_zone = db.time_zone.clone();
    Ok(MySqlPoolOptions::new()
        .max_connections(db.pool_size)
        .acquire_timeout(db.acquire_timeout)
        .idle_timeout(Duration::from_secs(300))
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
        .connect_lazy_with(options))
}

pub fn mailer(settings: &Settings) -> Mailer {
    let m = &settings.mail;
    match m.mailer {
        MailerKind::Log => Mailer::Log,
        MailerKind::Smtp => Mailer::Smtp(SmtpSettings {
            host: m.host.clone(),
            port: m.port,
            // Absent MAIL_ENCRYPTION means Laravel's default `tls` (§10).
            encryption: encryption_from_env(Some(m.encryption.as_deref().unwrap_or("tls")), m.port),
            username: m.username.clone(),
            password: m.password.clone(),
            timeout: m.timeout,
        }),
    }
}

/// The HTTP/1.1 server: actix-web's stack, with each connection wrapped in
/// [`Guarded`] so that step 0 of the pipeline (§1.2: header size, client
/// timeout) answers as the contract says rather than as actix-http would
/// (`http::limits`). This is what `HttpServer::listen` builds, plus the
/// wrapper.
fn http_server(state: web::Data<AppState>, listener: TcpListener) -> anyhow::Result<Server> {
    let s = &state.settings;
    let limits = HeadLimits {
        max_head_bytes: s.max_header_bytes,
        client_timeout: s.client_timeout,
    };
    let addr = listener.local_addr()?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    // actix-server counts connections per worker thread.
    let per_worker = s.max_connections.div_ceil(workers).max(1);
    let server = Server::build()
        .workers(workers)
        .max_concurrent_connections(per_worker)
        .shutdown_timeout(30)
        .listen("shopchat-http", listener, move || {
            let app = App::new()
                .app_data(state.clone())
                .default_service(web::to(pipeline::entry))
                .into_factory()
                .map_err(|e: actix_web::Error| e.as_response_error().error_response());
            let h1 = HttpService::<Guarded, _, _, _, _>::build()
                // The head timeout is the wrapper's: actix's would answer 408.
                .client_request_timeout(Duration::ZERO)
                .client_disconnect_timeout(Duration::from_secs(1))
                .local_addr(addr)
                .h1(map_config(app, |_| AppConfig::default()));
            fn_service(move |io: tokio::net::TcpStream| {
                let peer = io.peer_addr().ok();
                std::future::ready(Ok::<_, actix_http::error::DispatchError>((
                    Guarded::new(io, limits),
                    peer,
                )))
            })
            .and_then(h1)
        })?
        .run();
    Ok(server)
}

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    shutdown: watch::Sender<bool>,
    worker: tokio::task::JoinHandle<()>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("SHOPCHAT_LISTEN: cannot listen on {}", settings.listen))?;
        Self::build_with_listener(settings, listener).await
    }

    pub async fn build_with_listener(
        settings: Settings,
        listener: TcpListener,
    ) -> anyhow::Result<Application> {
        let port = listener.local_addr()?.port();
        let pool = pool(&settings.database)?;
        let outbox_dir = settings.mail.outbox_dir.clone();
        let outbox = Arc::new(Outbox::open(&outbox_dir).with_context(|| {
            format!("SHOPCHAT_OUTBOX_DIR: cannot use {}", outbox_dir.display())
        })?);
        let mailer = Arc::new(mailer(&settings));
        let max_attempts = settings.mail.max_attempts;
        let state = web::Data::new(AppState::new(
            settings,
            pool.clone(),
            Mailbox::new(outbox.clone()),
        ));

        let (shutdown, shutdown_rx) = watch::channel(false);
        let worker = tokio::spawn(async move {
            recover_staging(&outbox, &pool).await;
            worker::run_worker(
                outbox,
                mailer,
                max_attempts,
                Duration::from_secs(1),
                shutdown_rx,
            )
            .await;
        });

        let server = http_server(state.clone(), listener)?;
        Ok(Application {
            port,
            server,
            state,
            shutdown,
            worker,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &web::Data<AppState> {
        &self.state
    }

    /// Serves until the server stops (SIGTERM/SIGINT: graceful), then lets
    /// the outbox worker finish the mail in flight.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        let _ = self.shutdown.send(true);
        let _ = self.worker.await;
        result
    }
}

/// §8.6 step 3: staged mail whose conversation committed is promoted, the
/// rest deleted. Waits for the database if it is not reachable yet.
async fn recover_staging(outbox: &Arc<Outbox>, pool: &MySqlPool) {
    let ob = outbox.clone();
    let entries = match tokio::task::spawn_blocking(move || ob.staged_entries()).await {
        Ok(Ok(entries)) => entries,
        other => {
            tracing::error!(?other, "outbox: cannot read staging/");
            return;
        }
    };
    for (path, n) in entries {
        let exists = loop {
            match sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM conversations WHERE id = ?")
                .bind(n.conversation_id)
                .fetch_one(pool)
                .await
            {
                Ok(count) => break count > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox recovery waits for the database");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        };
        let ob = outbox.clone();
        let result = tokio::task::spawn_blocking(move || {
            if exists {
                ob.promote_path(&path)
            } else {
                ob.delete_path(&path)
            }
        })
        .await;
        tracing::info!(
            conversation_id = n.conversation_id,
            promoted = exists,
            ?result,
            "outbox: staged mail recovered"
        );
    }
}

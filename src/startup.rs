//! Wiring: the database pools, the shared state, the HTTP server and the
//! outbox worker.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_http::{Extensions, HttpService, KeepAlive};
use actix_server::Server;
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::AppConfig;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use tokio::sync::watch;

use crate::config::Settings;
use crate::http::conn::{self, Clocked};
use crate::http::pipeline;
use crate::mail::outbox::{Outbox, RetryPolicy};
use crate::mail::smtp::Mailer;
use crate::mail::{worker, Mailbox};
use crate::state::AppState;

/// The HTTP/1.1 server: actix-web's stack with actix-http's own limits and timers (COMPAT §1.2
/// step 0, 2026-12), each connection wrapped in [`Clocked`] for the two shapes those timers do
/// not bound (`http::conn`). This is what `HttpServer::listen` builds, plus the wrapper and the
/// connection data that carries its clock to the requests.
fn http_server(state: web::Data<AppState>, listener: TcpListener) -> anyhow::Result<Server> {
    let s = &state.settings;
    let client_timeout = s.http.client_timeout;
    let addr = listener.local_addr()?;
    let workers = s.http.worker_threads();
    // actix-server counts connections per worker thread.
    let per_worker = s.http.max_connections.div_ceil(workers).max(1);
    let server = Server::build()
        .workers(workers)
        .max_concurrent_connections(per_worker)
        // Signals are handled by the caller (main: SIGTERM/SIGINT → Stopper::stop), so that
        // /ready and the long-poll learn about the drain before the listener closes.
        .disable_signals()
        .shutdown_timeout(s.http.shutdown_timeout.as_secs())
        .listen("shopchat-http", listener, move || {
            // Runs once on each worker thread, as it starts.
            state.thread_heaps.register_current();
            state.pools.attach_current_thread();
            // No route table and no middleware: the pipeline moves the header map out of the
            // request (`Incoming::take_from`), which panics if anything else holds the request.
            let app = App::new()
                .default_service(fn_service({
                    let state = state.clone();
                    move |req| pipeline::entry(req, state.clone())
                }))
                .into_factory()
                .map_err(|e: actix_web::Error| e.as_response_error().error_response());
            let h1 = HttpService::<Clocked, _, _, _, _>::build()
                // The first request head: actix's own 408, then close.
                .client_request_timeout(client_timeout)
                .keep_alive(KeepAlive::Timeout(conn::KEEP_ALIVE))
                // Lingering after an early answer, flushing before a close.
                .client_disconnect_timeout(Duration::from_secs(1))
                .local_addr(addr)
                .on_connect_ext(|io: &Clocked, data: &mut Extensions| {
                    data.insert(io.clock());
                })
                .h1(map_config(app, |_| AppConfig::default()));
            fn_service(move |io: tokio::net::TcpStream| {
                let peer = io.peer_addr().ok();
                std::future::ready(Ok::<_, actix_http::error::DispatchError>((
                    Clocked::new(io, client_timeout),
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
    /// The separate `/metrics` listener (`SHOPCHAT_METRICS_LISTEN`), when configured.
    metrics_server: Option<(u16, Server)>,
    state: web::Data<AppState>,
    shutdown: watch::Sender<bool>,
    worker: tokio::task::JoinHandle<()>,
}

/// Stops an [`Application`] gracefully from another task (the signal handler, tests).
#[derive(Clone)]
pub struct Stopper {
    server: actix_web::dev::ServerHandle,
    state: web::Data<AppState>,
}

impl Stopper {
    /// Drains: `/ready` fails and long-poll waiters are released, the listener stops
    /// accepting, in-flight requests get `SHOPCHAT_SHUTDOWN_TIMEOUT` to finish. Returns when
    /// the server has stopped.
    pub async fn stop(&self) {
        self.state.ops.begin_drain();
        // Held long-polls answer now with what the database has (§5.4), instead of holding
        // the shutdown for up to SHOPCHAT_LONG_POLL_MAX_SECONDS.
        self.state.watcher.release_all();
        self.server.stop(true).await;
    }

    /// Stops at once, dropping in-flight requests (a second signal).
    pub async fn stop_now(&self) {
        self.server.stop(false).await;
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(settings.http.listen).with_context(|| {
            format!("SHOPCHAT_LISTEN: cannot listen on {}", settings.http.listen)
        })?;
        Self::build_with_listener(settings, listener).await
    }

    pub async fn build_with_listener(
        settings: Settings,
        listener: TcpListener,
    ) -> anyhow::Result<Application> {
        let port = listener.local_addr()?.port();
        let metrics_listener = match settings.http.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .with_context(|| format!("SHOPCHAT_METRICS_LISTEN: cannot listen on {addr}"))?,
            ),
            None => None,
        };
        // A pool per HTTP worker thread, of the public and the metrics listener (`db::Pools`).
        let threads = settings.http.worker_threads() + usize::from(metrics_listener.is_some());
        let threads = u32::try_from(threads)?;
        let pools = crate::db::Pools::new(&settings.database, threads)?;
        if pools.per_thread() < 2 {
            // One connection per worker: a create-conversation waiting for its pair lock
            // (up to SHOPCHAT_LOCK_TIMEOUT) holds it, and that worker's other requests wait.
            tracing::warn!(
                pool_size = settings.database.pool_size,
                threads,
                connections = pools.max_connections(),
                "SHOPCHAT_DB_POOL_SIZE leaves fewer than 2 connections per HTTP worker thread: raise it or lower SHOPCHAT_WORKERS"
            );
        }
        // The home pool: the tasks spawned below run on this runtime.
        let pool = pools.current();
        let outbox_dir = settings.mail.outbox_dir.clone();
        let outbox = Arc::new(
            Outbox::open(&outbox_dir)
                .with_context(|| {
                    format!("SHOPCHAT_OUTBOX_DIR: cannot use {}", outbox_dir.display())
                })?
                .with_limit(settings.mail.outbox_max_bytes),
        );
        let mailer = Arc::new(Mailer::from_settings(&settings.mail));
        let policy = RetryPolicy {
            max_attempts: settings.mail.max_attempts,
            first_backoff_secs: settings.mail.first_retry.as_secs(),
            keep_dead: settings.mail.dead_ttl,
        };
        let state = web::Data::new(AppState::new(settings, pools, Mailbox::new(outbox.clone())));

        let (shutdown, shutdown_rx) = watch::channel(false);
        tokio::spawn(state.watcher.clone().run(pool.clone(), shutdown_rx.clone()));
        state.sanctum.start_batching();
        let (quiet, release) = (state.clone(), state.clone());
        tokio::spawn(crate::ops::memory::when_idle(
            move || quiet.ops.metrics.answered(),
            move |what| release.release_idle_memory(what),
            shutdown_rx.clone(),
        ));
        let counters = state.ops.metrics.mail_counters();
        tokio::spawn(crate::mail::recovery::run(
            outbox.clone(),
            pool.clone(),
            shutdown_rx.clone(),
        ));
        let worker = tokio::spawn(async move {
            worker::run_worker(
                outbox,
                mailer,
                policy,
                Duration::from_secs(1),
                shutdown_rx,
                counters,
            )
            .await;
        });

        let server = http_server(state.clone(), listener)?;
        let metrics_server = match metrics_listener {
            Some(listener) => {
                let port = listener.local_addr()?.port();
                let metrics_state = state.clone();
                let server = HttpServer::new(move || {
                    metrics_state.pools.attach_current_thread();
                    App::new()
                        .app_data(metrics_state.clone())
                        .default_service(web::to(crate::http::ops_endpoints::internal_entry))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(1)
                .listen(listener)?
                .run();
                Some((port, server))
            }
            None => None,
        };
        Ok(Application {
            port,
            server,
            metrics_server,
            state,
            shutdown,
            worker,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the separate metrics listener, if one is configured.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_server.as_ref().map(|(port, _)| *port)
    }

    pub fn stopper(&self) -> Stopper {
        Stopper {
            server: self.server.handle(),
            state: self.state.clone(),
        }
    }

    /// Serves until SIGTERM or SIGINT, then drains ([`Stopper::stop`]); a second signal
    /// stops at once. What `shopchat serve` runs.
    pub async fn run_until_signalled(self) -> std::io::Result<()> {
        let stopper = self.stopper();
        actix_web::rt::spawn(async move {
            match shutdown_signal().await {
                Ok(name) => tracing::info!(signal = name, "shutting down: draining requests"),
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for signals");
                    return;
                }
            }
            let graceful = stopper.stop();
            tokio::pin!(graceful);
            tokio::select! {
                _ = &mut graceful => {}
                _ = shutdown_signal() => {
                    tracing::warn!("second signal: stopping without waiting");
                    stopper.stop_now().await;
                }
            }
        });
        self.run_until_stopped().await
    }

    /// Serves until stopped through a [`Stopper`], then stops the metrics listener and lets
    /// the outbox worker finish the mail in flight (within `SHOPCHAT_SHUTDOWN_TIMEOUT`; a
    /// mail abandoned then stays claimed and is retried after 10 minutes, §8.6 step 4).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let metrics = self.metrics_server.map(|(_, server)| {
            let handle = server.handle();
            (handle, tokio::spawn(server))
        });
        let result = self.server.await;
        if let Some((handle, task)) = metrics {
            handle.stop(true).await;
            let _ = task.await;
        }
        let _ = self.shutdown.send(true);
        let grace = self.state.settings.http.shutdown_timeout;
        if tokio::time::timeout(grace, self.worker).await.is_err() {
            tracing::warn!("outbox worker still busy after SHOPCHAT_SHUTDOWN_TIMEOUT; the mail in flight is retried later");
        }
        tracing::info!("shopchat stopped");
        result
    }
}

/// Waits for SIGTERM or SIGINT.
async fn shutdown_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}

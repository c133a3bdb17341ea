use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use shopchat::config::Settings;
use shopchat::startup::Application;

/// shopchat: the Active eCommerce CMS mobile chat API, in Rust.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The shop's Laravel .env file (also SHOPCHAT_ENV_FILE).
    #[arg(long, global = true)]
    env_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API on SHOPCHAT_LISTEN (SIGTERM/SIGINT: graceful stop).
    Serve,
    /// Check configuration, database schema, outbox and indexes; exit 1 on a problem.
    Check {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Also connect to the SMTP server (MAIL_*).
        #[arg(long)]
        smtp: bool,
    },
    /// Ask the running service's /health on SHOPCHAT_LISTEN (exit 0/1; container HEALTHCHECK).
    Health,
    /// Inspect and repair the e-mail outbox.
    Outbox {
        #[command(subcommand)]
        action: OutboxAction,
    },
}

#[derive(Subcommand)]
enum OutboxAction {
    /// Pending, in-flight and dead mail with attempts and last error.
    List,
    /// Move dead mail back to pending.
    Retry,
    /// Delete dead mail.
    Purge {
        /// Required: only dead mail is ever purged.
        #[arg(long)]
        dead: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Check { json, smtp } = cli.command {
        return check(cli.env_file, json, smtp);
    }
    let settings = match Settings::load(cli.env_file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    shopchat::telemetry::init(settings.log_json);
    match cli.command {
        Command::Serve => serve(settings),
        Command::Outbox { action } => outbox(settings, action),
        Command::Health => health(settings),
        Command::Check { .. } => unreachable!("handled before the settings are loaded"),
    }
}

fn health(settings: Settings) -> ExitCode {
    let probe = shopchat::ops::probe::health(
        settings.listen,
        &settings.base_path,
        std::time::Duration::from_secs(3),
    );
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(probe));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shopchat: unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `shopchat check`: a configuration error is one of its findings, not a start-up failure.
fn check(env_file: Option<PathBuf>, json: bool, smtp: bool) -> ExitCode {
    let env_file = env_file.or_else(|| {
        std::env::var_os("SHOPCHAT_ENV_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let source = match &env_file {
        Some(p) => format!("env file {}", p.display()),
        None => "process environment only (no --env-file)".to_string(),
    };
    let settings = Settings::load(env_file);
    // Log lines go to stderr; the report (text or JSON) is the only thing on stdout.
    shopchat::telemetry::init(false);
    let options = shopchat::ops::check::Options { smtp };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shopchat: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(shopchat::ops::check::run(settings, &source, options));
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("shopchat: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.to_text());
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn serve(settings: Settings) -> ExitCode {
    let result = actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).await?;
        tracing::info!(
            port = app.port(),
            metrics_port = app.metrics_port(),
            "shopchat listening"
        );
        let stopper = app.stopper();
        actix_web::rt::spawn(async move {
            match shopchat::startup::shutdown_signal().await {
                Ok(name) => tracing::info!(signal = name, "shutting down: draining requests"),
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for signals");
                    return;
                }
            }
            let graceful = stopper.stop();
            tokio::pin!(graceful);
            // A second signal stops at once.
            tokio::select! {
                _ = &mut graceful => {}
                _ = shopchat::startup::shutdown_signal() => {
                    tracing::warn!("second signal: stopping without waiting");
                    stopper.stop_now().await;
                }
            }
        });
        app.run_until_stopped().await?;
        Ok::<_, anyhow::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shopchat: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn outbox(settings: Settings, action: OutboxAction) -> ExitCode {
    let outbox = match shopchat::mail::outbox::Outbox::open(&settings.mail.outbox_dir) {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "shopchat: cannot open outbox {}: {e}",
                settings.mail.outbox_dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let result = match action {
        OutboxAction::List => outbox.list().map(|entries| {
            if entries.is_empty() {
                println!("outbox {} is empty", settings.mail.outbox_dir.display());
            }
            for e in entries {
                println!(
                    "{:<8} {:<48} attempts={} to={} subject={:?} last_error={}",
                    format!("{:?}", e.state).to_lowercase(),
                    e.file_name,
                    e.attempts,
                    e.to,
                    e.subject,
                    e.last_error.as_deref().unwrap_or("-")
                );
            }
        }),
        OutboxAction::Retry => outbox
            .retry_dead()
            .map(|n| println!("{n} dead mail(s) moved back to pending")),
        OutboxAction::Purge { dead: true } => outbox
            .purge_dead()
            .map(|n| println!("{n} dead mail(s) deleted")),
        OutboxAction::Purge { dead: false } => {
            eprintln!("shopchat: outbox purge needs --dead (only dead mail is ever deleted)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shopchat: {e}");
            ExitCode::FAILURE
        }
    }
}

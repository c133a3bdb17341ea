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
    /// Serve the API on SHOPCHAT_LISTEN.
    Serve,
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
    }
}

fn serve(settings: Settings) -> ExitCode {
    let result = actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings).await?;
        tracing::info!(port = app.port(), "shopchat listening");
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

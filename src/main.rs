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
    /// Proxy to the primary (the PHP shop) and compare shopchat's answers
    /// with its answers on live traffic (docs/shadow.md).
    Shadow(ShadowArgs),
    /// Send a recorded request list to two services and compare the answers
    /// (docs/shadow.md).
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ShadowArgs {
    #[command(subcommand)]
    action: Option<ShadowAction>,
    /// Base URL of the primary, e.g. http://127.0.0.1:8081
    #[arg(long)]
    primary: Option<String>,
    /// Address of the shadow listener (clients and /metrics).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
    #[command(flatten)]
    compare: CompareArgs,
    /// Comparisons waiting beyond this many are dropped (and counted).
    #[arg(long, default_value_t = 1000)]
    queue: usize,
    /// Comparisons running at once.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Primary bodies above this many bytes are passed through, not compared.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_compare_bytes: usize,
}

#[derive(Subcommand)]
enum ShadowAction {
    /// Print a per-route summary of a mismatch log.
    Report { file: PathBuf },
}

#[derive(clap::Args)]
struct CompareArgs {
    /// Ignore rules (TOML, or JSON when the name ends in .json).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// The JSONL mismatch log (appended to).
    #[arg(long, default_value = "shadow-mismatches.jsonl")]
    log: PathBuf,
    /// Detail records stop when the log reaches this many bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    log_max_bytes: u64,
    /// Ask the primary twice and ignore what differs between its own answers.
    #[arg(long)]
    noise_floor: bool,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ReplayArgs {
    #[command(subcommand)]
    action: Option<ReplayAction>,
    /// Base URL of the reference service (the PHP shop).
    #[arg(long)]
    primary: Option<String>,
    /// Base URL of the service under test (shopchat).
    #[arg(long)]
    candidate: Option<String>,
    /// The request list (JSONL, docs/shadow.md).
    #[arg(long)]
    requests: Option<PathBuf>,
    #[command(flatten)]
    compare: CompareArgs,
    /// shopchat's SHOPCHAT_BASE_PATH, to name the routes.
    #[arg(long, default_value = "")]
    base_path: String,
    /// Send the list's writes (POST…) too: both targets execute them, so only ever against
    /// copies of the database.
    #[arg(long)]
    allow_writes: bool,
}

#[derive(Subcommand)]
enum ReplayAction {
    /// Turn an nginx access log (log format shopchat_replay) into a request
    /// list on stdout: GET requests of the read routes only.
    ConvertNginx {
        access_log: PathBuf,
        #[arg(long, default_value = "")]
        base_path: String,
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
    // These need no shop configuration.
    match &cli.command {
        Command::Shadow(ShadowArgs {
            action: Some(ShadowAction::Report { file }),
            ..
        }) => return shadow_report(file),
        Command::Replay(args) => {
            shopchat::telemetry::init(false);
            return replay(args);
        }
        _ => {}
    }
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
    shopchat::telemetry::init(settings.ops.log_json);
    match cli.command {
        Command::Serve => serve(settings),
        Command::Outbox { action } => outbox(settings, action),
        Command::Health => health(settings),
        Command::Check { .. } => unreachable!("handled before the settings are loaded"),
        Command::Shadow(args) => shadow(settings, args),
        Command::Replay(_) => unreachable!("handled before the settings are loaded"),
    }
}

fn health(settings: Settings) -> ExitCode {
    let probe = shopchat::ops::probe::health(
        settings.http.listen,
        &settings.http.base_path,
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

fn url_arg(name: &str, value: &Option<String>) -> Result<reqwest::Url, ExitCode> {
    let Some(v) = value else {
        eprintln!("shopchat: --{name} URL is required");
        return Err(ExitCode::from(2));
    };
    reqwest::Url::parse(v)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| {
            eprintln!("shopchat: --{name} {v:?} is not an http(s) URL");
            ExitCode::from(2)
        })
}

fn rules_arg(args: &CompareArgs) -> Result<shopchat::shadow::rules::Rules, ExitCode> {
    match &args.rules {
        None => Ok(shopchat::shadow::rules::Rules::builtin()),
        Some(path) => shopchat::shadow::rules::Rules::load(path).map_err(|e| {
            eprintln!("shopchat: --rules: {e:#}");
            ExitCode::from(2)
        }),
    }
}

fn shadow(settings: Settings, args: ShadowArgs) -> ExitCode {
    let primary = match url_arg("primary", &args.primary) {
        Ok(u) => u,
        Err(code) => return code,
    };
    let rules = match rules_arg(&args.compare) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut config = shopchat::shadow::ShadowConfig::new(primary, args.listen, settings);
    config.rules = rules;
    config.queue_capacity = args.queue.max(1);
    config.workers = args.workers.max(1);
    config.noise_floor = args.compare.noise_floor;
    config.log_path = args.compare.log;
    config.log_max_bytes = args.compare.log_max_bytes;
    config.max_compare_bytes = args.max_compare_bytes;
    let result = actix_web::rt::System::new().block_on(async move {
        let shadow = shopchat::shadow::Shadow::start(config).await?;
        tracing::info!(port = shadow.port(), "shopchat shadow listening");
        shadow.run_until_stopped().await?;
        Ok::<_, anyhow::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shopchat shadow: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn shadow_report(file: &std::path::Path) -> ExitCode {
    match shopchat::shadow::report::read_log(file) {
        Ok(log) => {
            print!(
                "{}",
                shopchat::shadow::report::render(&file.display().to_string(), &log)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shopchat: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn replay(args: &ReplayArgs) -> ExitCode {
    if let Some(ReplayAction::ConvertNginx {
        access_log,
        base_path,
    }) = &args.action
    {
        let file = match std::fs::File::open(access_log) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("shopchat: cannot read {}: {e}", access_log.display());
                return ExitCode::FAILURE;
            }
        };
        let stdout = std::io::stdout();
        return match shopchat::shadow::replay::convert_nginx(
            std::io::BufReader::new(file),
            stdout.lock(),
            base_path,
        ) {
            Ok((kept, skipped)) => {
                eprintln!("{kept} request(s) written, {skipped} skipped (not GET on a read route)");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("shopchat: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let (primary, candidate) = match (
        url_arg("primary", &args.primary),
        url_arg("candidate", &args.candidate),
    ) {
        (Ok(p), Ok(c)) => (p, c),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let Some(requests) = args.requests.clone() else {
        eprintln!("shopchat: --requests FILE is required");
        return ExitCode::from(2);
    };
    let rules = match rules_arg(&args.compare) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let config = shopchat::shadow::replay::ReplayConfig {
        primary,
        candidate,
        requests,
        rules,
        log_path: args.compare.log.clone(),
        log_max_bytes: args.compare.log_max_bytes,
        noise_floor: args.compare.noise_floor,
        base_path: args.base_path.clone(),
        allow_writes: args.allow_writes,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shopchat: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(shopchat::shadow::replay::replay(&config)) {
        Ok(result) => {
            print!("{}", result.report);
            if result.clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("shopchat replay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

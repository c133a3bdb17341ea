//! `shopchat shadow`: a proxy to the primary (the PHP shop) that compares shopchat's answers with
//! the primary's on live traffic; `shopchat shadow report FILE` summarises a mismatch log
//! (docs/shadow.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use shopchat::shadow::{report, Shadow, ShadowConfig};

use super::CompareArgs;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ShadowArgs {
    #[command(subcommand)]
    action: Option<ShadowAction>,
    /// Base URL of the primary, e.g. http://127.0.0.1:8081
    #[arg(long)]
    primary: Option<String>,
    /// Address of the shadow listener (clients and /metrics).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
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

pub fn run(env_file: Option<PathBuf>, args: ShadowArgs) -> ExitCode {
    if let Some(ShadowAction::Report { file }) = &args.action {
        return print_report(file);
    }
    let (primary, rules) = match (
        super::url_arg("primary", args.primary.as_deref()),
        args.compare.rules(),
    ) {
        (Ok(p), Ok(r)) => (p, r),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let settings = match super::settings(env_file) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut config = ShadowConfig::new(primary, args.listen, settings);
    config.rules = rules;
    config.queue_capacity = args.queue.max(1);
    config.workers = args.workers.max(1);
    config.noise_floor = args.compare.noise_floor;
    config.log_path = args.compare.log;
    config.log_max_bytes = args.compare.log_max_bytes;
    config.max_compare_bytes = args.max_compare_bytes;
    super::block_on("shopchat shadow", async move {
        let shadow = Shadow::start(config).await?;
        tracing::info!(port = shadow.port(), "shopchat shadow listening");
        shadow.run_until_stopped().await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn print_report(file: &Path) -> ExitCode {
    match report::read_log(file) {
        Ok(log) => {
            print!("{}", report::render(&file.display().to_string(), &log));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shopchat: {e:#}");
            ExitCode::FAILURE
        }
    }
}

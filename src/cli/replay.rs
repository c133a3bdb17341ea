//! `shopchat replay`: sends a recorded request list to two services and compares the answers;
//! `shopchat replay convert-nginx LOG` makes such a list from an nginx access log
//! (docs/shadow.md). Needs no shop configuration.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use shopchat::shadow::replay::{self, ReplayConfig};

use super::CompareArgs;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReplayArgs {
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

pub fn run(args: ReplayArgs) -> ExitCode {
    shopchat::telemetry::init(false);
    if let Some(ReplayAction::ConvertNginx {
        access_log,
        base_path,
    }) = &args.action
    {
        return convert_nginx(access_log, base_path);
    }
    let (primary, candidate, rules) = match (
        super::url_arg("primary", args.primary.as_deref()),
        super::url_arg("candidate", args.candidate.as_deref()),
        args.compare.rules(),
    ) {
        (Ok(p), Ok(c), Ok(r)) => (p, c, r),
        (Err(code), _, _) | (_, Err(code), _) | (_, _, Err(code)) => return code,
    };
    let Some(requests) = args.requests else {
        eprintln!("shopchat: --requests FILE is required");
        return ExitCode::from(super::USAGE);
    };
    let config = ReplayConfig {
        primary,
        candidate,
        requests,
        rules,
        log_path: args.compare.log,
        log_max_bytes: args.compare.log_max_bytes,
        noise_floor: args.compare.noise_floor,
        base_path: args.base_path,
        allow_writes: args.allow_writes,
    };
    super::block_on("shopchat replay", async move {
        let result = replay::replay(&config).await?;
        print!("{}", result.report);
        Ok(if result.clean() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

fn convert_nginx(access_log: &Path, base_path: &str) -> ExitCode {
    let file = match std::fs::File::open(access_log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("shopchat: cannot read {}: {e}", access_log.display());
            return ExitCode::FAILURE;
        }
    };
    match replay::convert_nginx(BufReader::new(file), std::io::stdout().lock(), base_path) {
        Ok((kept, skipped)) => {
            eprintln!("{kept} request(s) written, {skipped} skipped (not GET on a read route)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shopchat: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! The subcommands of the `shopchat` binary, one file each. Each owns its arguments, loads the
//! settings only if it needs them, and returns the process's exit code: 0 done, 1 failed (or
//! found a problem), 2 the command line or the configuration is wrong.

pub mod check;
pub mod health;
pub mod outbox;
pub mod replay;
pub mod serve;
pub mod shadow;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use shopchat::config::Settings;
use shopchat::shadow::rules::Rules;

/// Exit code of a wrong command line or configuration.
pub const USAGE: u8 = 2;

/// The settings of a command that needs them, with logging started as they say.
pub fn settings(env_file: Option<PathBuf>) -> Result<Settings, ExitCode> {
    match Settings::load(env_file) {
        Ok(s) => {
            shopchat::telemetry::init(s.ops.log_json);
            Ok(s)
        }
        Err(e) => {
            eprintln!("{e}");
            Err(ExitCode::from(USAGE))
        }
    }
}

/// Runs a command's asynchronous part on a current-thread runtime (actix's: the servers need
/// it, the other commands do not mind it). An error is printed after `what` and exits with 1.
pub fn block_on(what: &str, work: impl Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    match actix_web::rt::System::new().block_on(work) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{what}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How answers are compared, for `shadow` and `replay`.
#[derive(clap::Args)]
pub struct CompareArgs {
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

impl CompareArgs {
    /// The ignore rules: the file given, else the built-in ones.
    fn rules(&self) -> Result<Rules, ExitCode> {
        match &self.rules {
            None => Ok(Rules::builtin()),
            Some(path) => Rules::load(path).map_err(|e| {
                eprintln!("shopchat: --rules: {e:#}");
                ExitCode::from(USAGE)
            }),
        }
    }
}

/// A required `--name` http(s) URL.
fn url_arg(name: &str, value: Option<&str>) -> Result<reqwest::Url, ExitCode> {
    let Some(v) = value else {
        eprintln!("shopchat: --{name} URL is required");
        return Err(ExitCode::from(USAGE));
    };
    reqwest::Url::parse(v)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| {
            eprintln!("shopchat: --{name} {v:?} is not an http(s) URL");
            ExitCode::from(USAGE)
        })
}

//! `shopchat check`: the configuration, database, outbox and indexes, as a report; exit 1 on a
//! problem. A configuration error is one of its findings, not a start-up failure.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use shopchat::config::{chosen_env_file, Settings};
use shopchat::ops::check::{self, Options};

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Also connect to the SMTP server (MAIL_*).
    #[arg(long)]
    smtp: bool,
}

pub fn run(env_file: Option<PathBuf>, args: CheckArgs) -> ExitCode {
    let process: HashMap<String, String> = std::env::vars().collect();
    let source = match chosen_env_file(env_file.clone(), &process) {
        Some(p) => format!("env file {}", p.display()),
        None => "process environment only (no --env-file)".to_string(),
    };
    let settings = Settings::load(env_file);
    // Log lines go to stderr; the report (text or JSON) is the only thing on stdout.
    shopchat::telemetry::init(false);
    let options = Options { smtp: args.smtp };
    super::block_on("shopchat", async move {
        let report = check::run(settings, &source, options).await;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.to_text());
        }
        Ok(if report.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

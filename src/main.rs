//! The `shopchat` binary: reads the command line and runs the subcommand (`cli/`, one file each).

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: profiling 20,000 simulated app users (bench/apptraffic.sh,
/// 2026-12-05) put glibc's malloc, free and their consolidation at ~15 % of shopchat's CPU, and
/// glibc keeps freed arenas after a load where mimalloc returns its pages to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Check(cli::check::CheckArgs),
    /// Ask the running service's /health on SHOPCHAT_LISTEN (exit 0/1; container HEALTHCHECK).
    Health,
    /// Inspect and repair the e-mail outbox.
    Outbox {
        #[command(subcommand)]
        action: cli::outbox::OutboxAction,
    },
    /// Proxy to the primary (the PHP shop) and compare shopchat's answers
    /// with its answers on live traffic (docs/shadow.md).
    Shadow(cli::shadow::ShadowArgs),
    /// Send a recorded request list to two services and compare the answers
    /// (docs/shadow.md).
    Replay(cli::replay::ReplayArgs),
}

fn main() -> ExitCode {
    let Cli { env_file, command } = Cli::parse();
    match command {
        Command::Serve => cli::serve::run(env_file),
        Command::Check(args) => cli::check::run(env_file, args),
        Command::Health => cli::health::run(env_file),
        Command::Outbox { action } => cli::outbox::run(env_file, action),
        Command::Shadow(args) => cli::shadow::run(env_file, args),
        Command::Replay(args) => cli::replay::run(args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        super::Cli::command().debug_assert();
    }
}

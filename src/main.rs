//! The `shopchat` binary: reads the command line and runs the subcommand (`cli/`, one file each).

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: profiling 20,000 simulated app users (bench/apptraffic.sh,
/// 2026-12-05) put glibc's malloc, free and their consolidation at ~15 % of shopchat's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (c_src/mimalloc/v3/include/mimalloc.h).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed pages go back to the system at once rather than after mimalloc's default 1 s delay,
/// which an idle thread never reaches (it purges on its next allocation). The full bench/run.sh
/// on glibc measured the idle RSS after the load at 28.0 MB, with mimalloc's delay at 47.8 MB;
/// a shorter run (three endpoints at 1 and 64 connections) at 29.9 MB with the delay, 28.4 MB
/// with this setting (25.5 MB with MIMALLOC_PURGE_DELAY=0 in the environment), at the same CPU
/// per poll (21 µs). An operator's MIMALLOC_PURGE_DELAY is left alone.
fn purge_freed_pages_at_once() {
    // SAFETY: reading and setting an option takes no pointer; the value read first checks that
    // the index is the purge delay (its default, 1000 ms), so a changed enum sets nothing.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == 1000 {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
    }
}

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
    purge_freed_pages_at_once();
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

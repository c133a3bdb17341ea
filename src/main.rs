//! The `shopchat` binary: reads the command line and runs the subcommand (`cli/`, one file each).

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: profiling 20,000 simulated app users (bench/apptraffic.sh,
/// 2026-12-05) put glibc's malloc, free and their consolidation at ~15 % of shopchat's CPU.
/// The `system-allocator` feature keeps glibc's, for heap profilers that hook malloc
/// (heaptrack: `APP_HEAPTRACK=1 bench/apptraffic.sh`, bench/README.md "Memory").
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` and `mi_option_purge_delay` in mimalloc v3's `mi_option_t`
/// (c_src/mimalloc/v3/include/mimalloc.h of libmimalloc-sys; the crate's own constants follow
/// v2's numbering).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's defaults, tuned for a service that must stay small when idle (bench/README.md:
/// RSS under 20 MB idle, also after the load). An operator's `MIMALLOC_*` variables win: an
/// option is set only while it still has its default value.
/// - Arena memory is committed as it is used, not eagerly (mimalloc's default on Linux, where
///   memory is overcommitted): with transparent huge pages, the eager commit made 10 MB of the
///   first arena resident at start (RSS 20.1 MB at start and 48 MB idle after a load, against
///   11.9 MB and 28 MB with `MIMALLOC_ARENA_EAGER_COMMIT=0`, 2026-12-05).
/// - Freed pages go back to the system at once rather than after the default 1 s delay, which
///   an idle thread never reaches (it purges on its next allocation). The full bench/run.sh
///   measured the idle RSS after the load at 47.8 MB with the delay, 37–39 MB without.
///
/// It runs as a constructor of the executable ([`TUNE_ALLOCATOR`]), before Rust's runtime
/// allocates anything: the first allocation reserves mimalloc's first arena, and set from
/// `main` the commit option came too late for it (RSS at start stayed at 19–20 MB).
#[cfg_attr(
    any(not(target_os = "linux"), feature = "system-allocator"),
    allow(dead_code)
)]
extern "C" fn tune_allocator() {
    // SAFETY: reading and setting an option takes no pointer; each value read first checks that
    // the index is the option meant (its default value), so a changed enum sets nothing.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT) == 2 {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == 1000 {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
    }
}

/// Called by the C runtime with the executable's other constructors, before `main` and before
/// Rust's runtime set-up (which already allocates); the environment is readable by then.
#[cfg(all(target_os = "linux", not(feature = "system-allocator")))]
#[used]
#[link_section = ".init_array"]
static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;

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

//! Logging: one line per request (see the pipeline), level from `RUST_LOG`,
//! text or JSON (`SHOPCHAT_LOG_FORMAT`); the per-request line of the text format is written by
//! [`access_line`].

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub mod access_line;

pub fn init(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only on a terminal: journald and log files get plain `key=value` text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // Ignore the error of a second initialisation (tests start several apps).
    let _ = if json {
        builder.json().try_init()
    } else {
        builder
            .event_format(access_line::TextFormat::default())
            .try_init()
    };
}

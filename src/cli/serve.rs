//! `shopchat serve`: the API on `SHOPCHAT_LISTEN` until SIGTERM/SIGINT (then a graceful drain).

use std::path::PathBuf;
use std::process::ExitCode;

use shopchat::startup::Application;

pub fn run(env_file: Option<PathBuf>) -> ExitCode {
    let settings = match super::settings(env_file) {
        Ok(s) => s,
        Err(code) => return code,
    };
    super::block_on("shopchat", async move {
        let app = Application::build(settings).await?;
        tracing::info!(
            port = app.port(),
            metrics_port = app.metrics_port(),
            "shopchat listening"
        );
        app.run_until_signalled().await?;
        Ok(ExitCode::SUCCESS)
    })
}

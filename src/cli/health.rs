//! `shopchat health`: asks the running service's `/health` (a container's HEALTHCHECK).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

pub fn run(env_file: Option<PathBuf>) -> ExitCode {
    let settings = match super::settings(env_file) {
        Ok(s) => s,
        Err(code) => return code,
    };
    super::block_on("shopchat: unhealthy", async move {
        shopchat::ops::probe::health(
            settings.http.listen,
            &settings.http.base_path,
            Duration::from_secs(3),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        Ok(ExitCode::SUCCESS)
    })
}

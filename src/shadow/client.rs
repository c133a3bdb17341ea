//! The HTTP client towards the primary (shadow and replay).

/// The HTTP client towards the primary: no redirects followed, no
/// decompression, no proxy from the environment (answers pass unchanged).
pub fn primary_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(5))
        // A hung primary must not hold the shadow's connections for ever (security review
        // L4); above a long-poll's longest wait (SHOPCHAT_LONG_POLL_MAX_SECONDS, 30 s).
        .read_timeout(PRIMARY_READ_TIMEOUT)
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build()?)
}

/// The longest pause in the primary's answer before the exchange is abandoned.
const PRIMARY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(65);

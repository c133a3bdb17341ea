//! Typed settings (COMPAT §10).
//!
//! Three layers, lowest first, merged with the `config` crate:
//! `config/default.toml` (compiled in) < the shop's Laravel `.env` file
//! (`--env-file PATH` or `SHOPCHAT_ENV_FILE`) < the process environment.
//! Every key is an environment variable name; the Laravel names work
//! unchanged and shopchat's own settings are `SHOPCHAT_*`.
//!
//! [`Settings::load`] validates everything up front: a missing or malformed
//! value stops start-up with one line naming the variable and the problem.

pub mod dotenv;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;
use ipnet::IpNet;

use crate::laravel::encrypter::parse_app_key;

const DEFAULTS: &str = include_str!("../../config/default.toml");

/// A configuration problem: the variable and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {name}: {problem}")]
pub struct ConfigError {
    pub name: String,
    pub problem: String,
}

/// A secret setting (`APP_KEY`, passwords): shown as `[redacted]` by `Debug`, so that printing
/// the settings can never leak it (security review L6). `expose()` is the one way in.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

fn bad(name: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        name: name.to_string(),
        problem: problem.into(),
    }
}

#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    /// `DATABASE_URL` when given (wins over `DB_*`, sqlx convention).
    pub url: Option<String>,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub username: String,
    pub password: Secret<String>,
    pub socket: Option<String>,
    pub pool_size: u32,
    pub acquire_timeout: Duration,
    /// `SHOPCHAT_DB_TIME_ZONE`: only when set do we touch the session time zone (§6.4).
    pub time_zone: Option<String>,
    /// `SHOPCHAT_DB_SSL_MODE` (§10, 2026-12); `DATABASE_URL`'s `ssl-mode` wins.
    pub ssl_mode: SslMode,
    /// `MYSQL_ATTR_SSL_CA`: the CA the server's certificate is verified against.
    pub ssl_ca: Option<PathBuf>,
}

/// MySQL's `ssl-mode` (COMPAT §10, 2026-12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disabled,
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

impl SslMode {
    pub fn parse(s: &str) -> Option<SslMode> {
        Some(
            match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
                "disabled" => SslMode::Disabled,
                "preferred" => SslMode::Preferred,
                "required" => SslMode::Required,
                "verify_ca" => SslMode::VerifyCa,
                "verify_identity" => SslMode::VerifyIdentity,
                _ => return None,
            },
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disabled => "disabled",
            SslMode::Preferred => "preferred",
            SslMode::Required => "required",
            SslMode::VerifyCa => "verify_ca",
            SslMode::VerifyIdentity => "verify_identity",
        }
    }
}

/// Where uploaded files live (§7.4).
#[derive(Clone, Debug, PartialEq)]
pub enum FileSystem {
    Local,
    /// `aws`/`s3`: `AWS_URL`, else the bucket URL built from bucket and region.
    S3 {
        url: String,
        bucket: String,
        region: String,
    },
    Backblaze {
        url: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum MailerKind {
    Smtp,
    /// `log` and `array`: write the mail to the log instead of sending it.
    Log,
}

#[derive(Clone, Debug)]
pub struct MailSettings {
    pub mailer: MailerKind,
    pub host: String,
    pub port: u16,
    /// Raw `MAIL_ENCRYPTION`: `None` = absent (Laravel default `tls`),
    /// `Some("")` = explicitly empty/null (opportunistic STARTTLS).
    pub encryption: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret<String>>,
    pub from_address: String,
    pub from_name: String,
    pub timeout: Duration,
    pub max_attempts: u32,
    /// First retry delay in seconds (`SHOPCHAT_MAIL_RETRY_SECONDS`), doubling to an hour.
    pub retry_seconds: u64,
    pub outbox_dir: PathBuf,
    /// `SHOPCHAT_OUTBOX_MAX_BYTES`: staging a mail fails (503) once the outbox holds this much.
    pub outbox_max_bytes: u64,
    /// `SHOPCHAT_OUTBOX_DEAD_DAYS`: `dead/` entries older than this are deleted; `None` = kept.
    pub dead_ttl: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub database: DatabaseSettings,
    pub app_key: Secret<[u8; 32]>,
    pub app_previous_keys: Vec<Secret<[u8; 32]>>,
    /// `APP_URL` as the shop set it (COMPAT §10): the root of e-mail links (§8.3) and of
    /// requests without `Host`; `None` when unset or empty.
    pub app_url: Option<String>,
    pub timezone: Tz,
    pub system_key: Option<String>,
    pub default_language: String,
    pub filesystem: FileSystem,
    pub mail: MailSettings,
    pub base_path: String,
    pub trusted_proxies: Vec<IpNet>,
    pub laravel_root: Option<PathBuf>,
    pub maintenance_forced: bool,
    pub rate_limit: u32,
    /// `SHOPCHAT_RATE_LIMIT_MAX_KEYS`: throttle windows held at most (memory bound, §1.4).
    pub rate_limit_max_keys: usize,
    /// `SHOPCHAT_OPS_RATE_LIMIT`: `/ready` and `/metrics` requests per minute and client IP on
    /// the public listener; `0` = off.
    pub ops_rate_limit: u32,
    /// `SHOPCHAT_NEW_CONVERSATIONS_PER_HOUR`: new conversations (and their e-mails) per sender
    /// and receiver and hour; `0` = off.
    pub new_conversations_per_hour: u32,
    pub token_touch_seconds: u64,
    pub sanctum_expiration_minutes: Option<i64>,
    pub tokenable_type: String,
    pub auth_cache: Duration,
    pub translation_ttl: Duration,
    pub settings_ttl: Duration,
    pub long_poll_max_seconds: u64,
    /// `SHOPCHAT_LONG_POLL_PER_USER`: long-polls one user may have held at once; more answer at once.
    pub long_poll_per_user: usize,
    /// Long-polls held at once in the process (`SHOPCHAT_LONG_POLL_MAX_HELD`, kept below
    /// `SHOPCHAT_MAX_CONNECTIONS`); more answer at once.
    pub long_poll_max_held: usize,
    pub max_body_bytes: usize,
    pub client_timeout: Duration,
    /// `SHOPCHAT_MAX_CONNECTIONS`: open client connections at most; more wait
    /// in the listen backlog.
    pub max_connections: usize,
    pub lock_timeout_seconds: u32,
    pub log_json: bool,
    /// `SHOPCHAT_SHUTDOWN_TIMEOUT`: how long in-flight requests (and the mail being sent) may
    /// take to finish after SIGTERM.
    pub shutdown_timeout: Duration,
    /// `SHOPCHAT_READY_TIMEOUT_MS`: `/ready` fails when the database does not answer in time.
    pub ready_timeout: Duration,
    /// `SHOPCHAT_READY_CACHE_SECONDS`: how long `/ready` reuses its schema check; `0` = never.
    pub ready_cache: Duration,
}

/// The merged key → value map (keys lower-cased by `config`), with Laravel's
/// `env()` value rules applied on access.
struct Values(HashMap<String, String>);

impl Values {
    /// The value, `None` when absent or Laravel-`null`.
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .get(&name.to_ascii_lowercase())
            .and_then(|raw| dotenv::laravel_value(raw))
    }

    fn present(&self, name: &str) -> bool {
        self.0.contains_key(&name.to_ascii_lowercase())
    }

    fn string(&self, name: &str) -> String {
        self.get(name).unwrap_or_default()
    }

    fn non_empty(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty())
    }

    fn parse<T: std::str::FromStr>(&self, name: &str) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self.get(name).ok_or_else(|| bad(name, "is required"))?;
        raw.trim()
            .parse::<T>()
            .map_err(|e| bad(name, format!("{raw:?} is not valid: {e}")))
    }

    fn opt_parse<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.non_empty(name) {
            None => Ok(None),
            Some(_) => self.parse(name).map(Some),
        }
    }

    fn on_off(&self, name: &str) -> Result<bool, ConfigError> {
        match self.string(name).trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "1" | "yes" => Ok(true),
            "off" | "false" | "0" | "no" | "" => Ok(false),
            other => Err(bad(name, format!("{other:?} is not on/off"))),
        }
    }
}

impl Settings {
    /// Loads the settings from the defaults, an optional `.env` file and the
    /// process environment.
    pub fn load(env_file: Option<PathBuf>) -> Result<Settings, ConfigError> {
        let process: HashMap<String, String> = std::env::vars().collect();
        Self::load_from(env_file, process)
    }

    /// Same as [`Settings::load`] with an explicit "process environment" (tests).
    pub fn load_from(
        env_file: Option<PathBuf>,
        process: HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        let env_file = env_file.or_else(|| {
            process
                .get("SHOPCHAT_ENV_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        let mut file_values: HashMap<String, String> = HashMap::new();
        if let Some(path) = &env_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                bad(
                    "SHOPCHAT_ENV_FILE",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let lookup = |name: &str| process.get(name).cloned();
            let pairs = dotenv::parse(&text, &lookup)
                .map_err(|e| bad("SHOPCHAT_ENV_FILE", format!("{}: {e}", path.display())))?;
            file_values.extend(pairs);
        }
        let merged = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .add_source(
                config::Environment::default()
                    .source(Some(file_values))
                    .try_parsing(false),
            )
            .add_source(
                config::Environment::default()
                    .source(Some(process))
                    .try_parsing(false),
            )
            .build()
            .map_err(|e| bad("configuration", e.to_string()))?;
        let table = merged
            .try_deserialize::<HashMap<String, config::Value>>()
            .map_err(|e| bad("configuration", e.to_string()))?;
        let values = table
            .into_iter()
            .filter_map(|(k, v)| v.into_string().ok().map(|s| (k.to_ascii_lowercase(), s)))
            .collect();
        Self::from_values(&Values(values))
    }

    fn from_values(v: &Values) -> Result<Settings, ConfigError> {
        match v.string("DB_CONNECTION").as_str() {
            "mysql" | "mariadb" => {}
            other => {
                return Err(bad(
                    "DB_CONNECTION",
                    format!("{other:?} is not supported (mysql or mariadb)"),
                ))
            }
        }
        let database = DatabaseSettings {
            url: v.non_empty("DATABASE_URL"),
            host: v.string("DB_HOST"),
            port: v.parse("DB_PORT")?,
            database: v.string("DB_DATABASE"),
            username: v.string("DB_USERNAME"),
            password: Secret::new(v.string("DB_PASSWORD")),
            socket: v.non_empty("DB_SOCKET"),
            pool_size: positive(v, "SHOPCHAT_DB_POOL_SIZE")?,
            acquire_timeout: Duration::from_millis(v.parse("SHOPCHAT_DB_ACQUIRE_TIMEOUT_MS")?),
            time_zone: v.non_empty("SHOPCHAT_DB_TIME_ZONE"),
            ssl_ca: v.non_empty("MYSQL_ATTR_SSL_CA").map(PathBuf::from),
            // Without a CA: `preferred`, MySQL's default; with one: verify against it (§10).
            ssl_mode: match v.non_empty("SHOPCHAT_DB_SSL_MODE") {
                Some(m) => SslMode::parse(&m).ok_or_else(|| {
                    bad(
                        "SHOPCHAT_DB_SSL_MODE",
                        format!("{m:?} is not disabled, preferred, required, verify_ca or verify_identity"),
                    )
                })?,
                None if v.non_empty("MYSQL_ATTR_SSL_CA").is_some() => SslMode::VerifyCa,
                None => SslMode::Preferred,
            },
        };
        if let Some(url) = &database.url {
            if !(url.starts_with("mysql://") || url.starts_with("mariadb://")) {
                return Err(bad("DATABASE_URL", "must start with mysql://"));
            }
        }

        let app_key_raw = v
            .non_empty("APP_KEY")
            .ok_or_else(|| bad("APP_KEY", "is required (base64:… of 32 bytes)"))?;
        let app_key =
            Secret::new(parse_app_key(&app_key_raw).map_err(|e| bad("APP_KEY", e.to_string()))?);
        let mut app_previous_keys = Vec::new();
        for key in v
            .string("APP_PREVIOUS_KEYS")
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
        {
            app_previous_keys.push(Secret::new(
                parse_app_key(key).map_err(|e| bad("APP_PREVIOUS_KEYS", e.to_string()))?,
            ));
        }
        let timezone_name = v.non_empty("APP_TIMEZONE").unwrap_or_else(|| "UTC".into());
        let timezone: Tz = timezone_name.parse().map_err(|_| {
            bad(
                "APP_TIMEZONE",
                format!("{timezone_name:?} is not a known time zone"),
            )
        })?;

        let filesystem = match v
            .non_empty("FILESYSTEM_DRIVER")
            .unwrap_or_else(|| "local".into())
            .as_str()
        {
            "local" | "public" => FileSystem::Local,
            // 9.8.x names the S3 disk `aws`; `s3` is accepted too (§7.4).
            "aws" | "s3" => FileSystem::S3 {
                url: v.string("AWS_URL"),
                bucket: v.string("AWS_BUCKET"),
                region: v.string("AWS_DEFAULT_REGION"),
            },
            "backblaze" => FileSystem::Backblaze {
                url: v.string("BACKBLAZE_URL"),
            },
            other => {
                return Err(bad(
                    "FILESYSTEM_DRIVER",
                    format!("{other:?} is not supported (local, aws, s3, backblaze)"),
                ))
            }
        };

        // PHP reads MAIL_DRIVER; newer Laravel MAIL_MAILER. Either works (§10).
        let (mailer_name, mailer_var) = match v.non_empty("MAIL_MAILER") {
            Some(m) => (m, "MAIL_MAILER"),
            None => (
                v.non_empty("MAIL_DRIVER").unwrap_or_else(|| "smtp".into()),
                "MAIL_DRIVER",
            ),
        };
        let mailer = match mailer_name.as_str() {
            "smtp" => MailerKind::Smtp,
            "log" | "array" => MailerKind::Log,
            other => {
                return Err(bad(
                    mailer_var,
                    format!("{other:?} is not supported (smtp, log, array)"),
                ))
            }
        };
        let encryption = if v.present("MAIL_ENCRYPTION") {
            Some(v.string("MAIL_ENCRYPTION"))
        } else {
            None
        };
        let mail = MailSettings {
            mailer,
            host: v.string("MAIL_HOST"),
            port: v.parse("MAIL_PORT")?,
            encryption,
            username: v.non_empty("MAIL_USERNAME"),
            password: v.get("MAIL_PASSWORD").map(Secret::new),
            from_address: v.string("MAIL_FROM_ADDRESS"),
            from_name: v.string("MAIL_FROM_NAME"),
            timeout: Duration::from_secs(positive(v, "SHOPCHAT_MAIL_TIMEOUT")?),
            max_attempts: positive(v, "SHOPCHAT_MAIL_MAX_ATTEMPTS")?,
            retry_seconds: positive(v, "SHOPCHAT_MAIL_RETRY_SECONDS")?,
            outbox_dir: PathBuf::from(
                v.non_empty("SHOPCHAT_OUTBOX_DIR")
                    .unwrap_or_else(|| "./outbox".into()),
            ),
            outbox_max_bytes: positive(v, "SHOPCHAT_OUTBOX_MAX_BYTES")?,
            dead_ttl: match v.parse::<u64>("SHOPCHAT_OUTBOX_DEAD_DAYS")? {
                0 => None,
                days => Some(Duration::from_secs(days * 86_400)),
            },
        };

        let mut trusted_proxies = Vec::new();
        for item in v
            .string("SHOPCHAT_TRUSTED_PROXIES")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    bad(
                        "SHOPCHAT_TRUSTED_PROXIES",
                        format!("{item:?} is not an IP address or CIDR"),
                    )
                })?;
            trusted_proxies.push(net);
        }

        let base_path = v.string("SHOPCHAT_BASE_PATH");
        let base_path = base_path.trim_end_matches('/');
        if !base_path.is_empty() && !base_path.starts_with('/') {
            return Err(bad("SHOPCHAT_BASE_PATH", "must start with /"));
        }

        let sanctum_expiration_minutes = v.opt_parse::<i64>("SHOPCHAT_SANCTUM_EXPIRATION")?;
        let tokenable_type = v
            .non_empty("SHOPCHAT_TOKENABLE_TYPE")
            .unwrap_or_else(|| "App\\Models\\User".into());

        Ok(Settings {
            listen: v.parse("SHOPCHAT_LISTEN")?,
            metrics_listen: v.opt_parse("SHOPCHAT_METRICS_LISTEN")?,
            database,
            app_key,
            app_previous_keys,
            app_url: v
                .non_empty("APP_URL")
                .map(|u| u.trim_end_matches('/').to_string()),
            timezone,
            system_key: v.get("SYSTEM_KEY"),
            default_language: v.string("DEFAULT_LANGUAGE"),
            filesystem,
            mail,
            base_path: base_path.to_string(),
            trusted_proxies,
            laravel_root: v.non_empty("SHOPCHAT_LARAVEL_ROOT").map(PathBuf::from),
            maintenance_forced: v.on_off("SHOPCHAT_MAINTENANCE")?,
            rate_limit: v.parse("SHOPCHAT_RATE_LIMIT")?,
            rate_limit_max_keys: positive(v, "SHOPCHAT_RATE_LIMIT_MAX_KEYS")?,
            ops_rate_limit: v.parse("SHOPCHAT_OPS_RATE_LIMIT")?,
            new_conversations_per_hour: v.parse("SHOPCHAT_NEW_CONVERSATIONS_PER_HOUR")?,
            token_touch_seconds: v.parse("SHOPCHAT_TOKEN_TOUCH_SECONDS")?,
            sanctum_expiration_minutes,
            tokenable_type,
            auth_cache: Duration::from_millis(v.parse("SHOPCHAT_AUTH_CACHE_MS")?),
            translation_ttl: Duration::from_secs(v.parse("SHOPCHAT_TRANSLATION_TTL")?),
            settings_ttl: Duration::from_secs(v.parse("SHOPCHAT_SETTINGS_TTL")?),
            long_poll_max_seconds: v.parse("SHOPCHAT_LONG_POLL_MAX_SECONDS")?,
            long_poll_per_user: positive(v, "SHOPCHAT_LONG_POLL_PER_USER")?,
            long_poll_max_held: long_poll_max_held(v)?,
            max_body_bytes: positive::<usize>(v, "SHOPCHAT_MAX_BODY_BYTES")?,
            client_timeout: Duration::from_secs(positive::<u64>(v, "SHOPCHAT_CLIENT_TIMEOUT")?),
            max_connections: positive::<usize>(v, "SHOPCHAT_MAX_CONNECTIONS")?,
            lock_timeout_seconds: v.parse("SHOPCHAT_LOCK_TIMEOUT")?,
            shutdown_timeout: Duration::from_secs(v.parse("SHOPCHAT_SHUTDOWN_TIMEOUT")?),
            ready_timeout: Duration::from_millis(positive(v, "SHOPCHAT_READY_TIMEOUT_MS")?),
            ready_cache: Duration::from_secs(v.parse("SHOPCHAT_READY_CACHE_SECONDS")?),
            log_json: match v.string("SHOPCHAT_LOG_FORMAT").as_str() {
                "json" => true,
                "text" | "" => false,
                other => {
                    return Err(bad(
                        "SHOPCHAT_LOG_FORMAT",
                        format!("{other:?} is not text or json"),
                    ))
                }
            },
        })
    }

    /// The older `APP_PREVIOUS_KEYS`, to verify links with (§8.4).
    pub fn previous_keys(&self) -> Vec<[u8; 32]> {
        self.app_previous_keys.iter().map(|k| *k.expose()).collect()
    }

    /// `<root>` of a request without `Host` (§4.3): `APP_URL`, Laravel's default without it.
    pub fn url_root(&self) -> &str {
        self.app_url.as_deref().unwrap_or("http://localhost")
    }

    /// The root of e-mail links (§8.3, 2026-12): `APP_URL` when set, else the request's
    /// `<root>` — never a host the client chose when the shop set its URL.
    pub fn mail_root<'a>(&'a self, request_root: &'a str) -> &'a str {
        self.app_url.as_deref().unwrap_or(request_root)
    }

    /// The language used before `App-Language` is applied (§1.2 step 6, §7.1).
    pub fn fallback_language(&self) -> &str {
        if self.default_language.is_empty() {
            "en"
        } else {
            &self.default_language
        }
    }
}

/// At most 80 % of `SHOPCHAT_MAX_CONNECTIONS`: held long-polls must leave connections for
/// everything else (security review M6).
fn long_poll_max_held(v: &Values) -> Result<usize, ConfigError> {
    let configured: usize = positive(v, "SHOPCHAT_LONG_POLL_MAX_HELD")?;
    let connections: usize = positive(v, "SHOPCHAT_MAX_CONNECTIONS")?;
    Ok(configured.min(connections / 5 * 4).max(1))
}

fn positive<T>(v: &Values, name: &str) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + Default,
    T::Err: std::fmt::Display,
{
    let value: T = v.parse(name)?;
    if value <= T::default() {
        return Err(bad(name, "must be greater than 0"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "base64:FxO+5zEy133M5/q/XUBpdtp/0srOK9tezZfkWCnyPFc=";

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply() {
        let s = Settings::load_from(None, env(&[("APP_KEY", KEY)])).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(s.database.database, "forge");
        assert_eq!(s.rate_limit, 600);
        assert_eq!(s.tokenable_type, "App\\Models\\User");
        assert_eq!(s.timezone, chrono_tz::UTC);
        assert_eq!(s.system_key, None);
        assert_eq!(s.mail.mailer, MailerKind::Smtp);
        assert_eq!(s.mail.encryption, None);
        assert_eq!(s.filesystem, FileSystem::Local);
        assert_eq!(s.max_connections, 25_000);
        assert_eq!(s.client_timeout, Duration::from_secs(10));
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = Settings::load_from(
            None,
            env(&[
                ("APP_KEY", KEY),
                ("DB_PASSWORD", "db-secret-pw"),
                ("MAIL_PASSWORD", "mail-secret-pw"),
            ]),
        )
        .unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("db-secret-pw") && !shown.contains("mail-secret-pw"));
        // The key's bytes, as Debug would print an array of them.
        assert!(!shown.contains(&format!("{:?}", s.app_key.expose())));
        assert!(shown.contains("[redacted]"));
        assert_eq!(s.database.password.expose(), "db-secret-pw");
    }

    #[test]
    fn request_limits_are_validated() {
        for (name, value) in [
            ("SHOPCHAT_MAX_CONNECTIONS", "0"),
            ("SHOPCHAT_MAX_BODY_BYTES", "x"),
            ("SHOPCHAT_CLIENT_TIMEOUT", "0"),
        ] {
            let err =
                Settings::load_from(None, env(&[("APP_KEY", KEY), (name, value)])).unwrap_err();
            assert_eq!(err.name, name, "{value}");
        }
        let s = Settings::load_from(
            None,
            env(&[("APP_KEY", KEY), ("SHOPCHAT_MAX_CONNECTIONS", "3")]),
        )
        .unwrap();
        assert_eq!(s.max_connections, 3);
    }

    #[test]
    fn env_file_is_layered_under_the_process_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(
            &path,
            format!("APP_KEY={KEY}\nDB_DATABASE=shop\nDB_PORT=3307\nAPP_TIMEZONE=Asia/Dhaka\nSYSTEM_KEY=\"abc\"\nMAIL_ENCRYPTION=null\n"),
        )
        .unwrap();
        let s = Settings::load_from(Some(path), env(&[("DB_PORT", "3308")])).unwrap();
        assert_eq!(s.database.database, "shop");
        assert_eq!(s.database.port, 3308, "process environment wins over .env");
        assert_eq!(s.timezone, chrono_tz::Asia::Dhaka);
        assert_eq!(s.system_key.as_deref(), Some("abc"));
        assert_eq!(
            s.mail.encryption.as_deref(),
            Some(""),
            "null is present but empty"
        );
    }

    #[test]
    fn errors_name_the_variable() {
        let err = Settings::load_from(None, env(&[])).unwrap_err();
        assert_eq!(err.name, "APP_KEY");
        let err = Settings::load_from(None, env(&[("APP_KEY", "base64:AAAA")])).unwrap_err();
        assert_eq!(err.name, "APP_KEY");
        assert!(err.to_string().contains("32"), "{err}");
        let err = Settings::load_from(None, env(&[("APP_KEY", KEY), ("SHOPCHAT_LISTEN", "nope")]))
            .unwrap_err();
        assert_eq!(err.name, "SHOPCHAT_LISTEN");
        let err = Settings::load_from(
            None,
            env(&[("APP_KEY", KEY), ("APP_TIMEZONE", "Mars/Base")]),
        )
        .unwrap_err();
        assert_eq!(err.name, "APP_TIMEZONE");
        let err = Settings::load_from(None, env(&[("APP_KEY", KEY), ("MAIL_MAILER", "ses")]))
            .unwrap_err();
        assert_eq!(err.name, "MAIL_MAILER");
        let err = Settings::load_from(
            None,
            env(&[
                ("APP_KEY", KEY),
                ("SHOPCHAT_TRUSTED_PROXIES", "10.0.0.0/8, x"),
            ]),
        )
        .unwrap_err();
        assert_eq!(err.name, "SHOPCHAT_TRUSTED_PROXIES");
        let err = Settings::load_from(None, env(&[("APP_KEY", KEY), ("DB_CONNECTION", "pgsql")]))
            .unwrap_err();
        assert_eq!(err.name, "DB_CONNECTION");
    }

    /// docs/operations.md is the operator's configuration reference: every key of
    /// config/default.toml and every variable this module reads must be documented there.
    #[test]
    fn every_setting_is_documented_in_operations_md() {
        let doc = include_str!("../../docs/operations.md");
        let mut names: Vec<String> = DEFAULTS
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
            .filter(|k| !k.is_empty() && !k.starts_with('#'))
            .map(str::to_ascii_uppercase)
            .collect();
        assert!(names.iter().any(|n| n.starts_with("SHOPCHAT_")));
        // Every upper-case string literal of this file outside the tests: the variables it reads.
        let source = include_str!("mod.rs")
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default();
        for piece in source.split('"').skip(1).step_by(2) {
            let is_var = piece.len() > 3
                && piece.contains('_')
                && piece
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if is_var {
                names.push(piece.to_string());
            }
        }
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !doc.contains(&format!("`{n}`")))
            .collect();
        assert!(missing.is_empty(), "not in docs/operations.md: {missing:?}");
    }

    #[test]
    fn trusted_proxies_and_flags() {
        let s = Settings::load_from(
            None,
            env(&[
                ("APP_KEY", KEY),
                ("SHOPCHAT_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
                ("SHOPCHAT_MAINTENANCE", "on"),
                ("MAIL_DRIVER", "log"),
                ("SHOPCHAT_BASE_PATH", "/shop/"),
            ]),
        )
        .unwrap();
        assert_eq!(s.trusted_proxies.len(), 2);
        assert!(s.maintenance_forced);
        assert_eq!(s.mail.mailer, MailerKind::Log);
        assert_eq!(s.base_path, "/shop");
    }
}

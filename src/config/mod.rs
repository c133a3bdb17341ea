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
    /// `SHOPCHAT_LOCK_TIMEOUT`: how long create-conversation waits for its `GET_LOCK` (§5.5
    /// step 3; whole seconds).
    pub lock_timeout: Duration,
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
    /// The first retry delay (`SHOPCHAT_MAIL_RETRY_SECONDS`), doubling to an hour.
    pub first_retry: Duration,
    pub outbox_dir: PathBuf,
    /// `SHOPCHAT_OUTBOX_MAX_BYTES`: staging a mail fails (503) once the outbox holds this much.
    pub outbox_max_bytes: u64,
    /// `SHOPCHAT_OUTBOX_DEAD_DAYS`: `dead/` entries older than this are deleted; `None` = kept.
    pub dead_ttl: Option<Duration>,
    /// `SHOPCHAT_NEW_CONVERSATIONS_PER_HOUR`: new conversations (each mails its receiver) per
    /// sender and receiver and hour; `0` = off.
    pub new_conversations_per_hour: u32,
}

/// Every setting, grouped by what it is for (COMPAT §10, docs/operations.md).
#[derive(Clone, Debug)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub laravel: LaravelSettings,
    pub auth: AuthSettings,
    pub caches: CacheSettings,
    pub long_poll: LongPollSettings,
    pub mail: MailSettings,
    pub ops: OpsSettings,
}

/// The listener and what every request meets before a handler (COMPAT §1.2, §1.4, §4.3).
#[derive(Clone, Debug)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// `SHOPCHAT_METRICS_LISTEN`: the internal listener of `/metrics` (and `/health`, `/ready`).
    pub metrics_listen: Option<SocketAddr>,
    /// `SHOPCHAT_BASE_PATH`: the shop's sub-directory, without trailing `/`.
    pub base_path: String,
    pub trusted_proxies: Vec<IpNet>,
    pub max_body_bytes: usize,
    /// `SHOPCHAT_CLIENT_TIMEOUT`: a request head or body must arrive within it (§1.2 step 0).
    pub client_timeout: Duration,
    /// `SHOPCHAT_MAX_CONNECTIONS`: open client connections at most; more wait
    /// in the listen backlog.
    pub max_connections: usize,
    /// `SHOPCHAT_WORKERS`: HTTP worker threads; empty = one per CPU the process may use.
    pub workers: Option<usize>,
    /// `SHOPCHAT_SHUTDOWN_TIMEOUT`: how long in-flight requests (and the mail being sent) may
    /// take to finish after SIGTERM.
    pub shutdown_timeout: Duration,
    /// `SHOPCHAT_RATE_LIMIT`: hits per minute and key (§1.4); `0` = off.
    pub rate_limit: u32,
    /// `SHOPCHAT_RATE_LIMIT_MAX_KEYS`: throttle windows held at most (memory bound, §1.4).
    pub rate_limit_max_keys: usize,
    /// `SHOPCHAT_OPS_RATE_LIMIT`: `/ready` and `/metrics` requests per minute and client IP on
    /// the public listener; `0` = off.
    pub ops_rate_limit: u32,
    /// `SHOPCHAT_RATE_LIMIT_STORE`: where the throttle counts (§1.4).
    pub rate_limit_store: RateLimitStore,
}

/// Where the throttle's windows live (`SHOPCHAT_RATE_LIMIT_STORE`, docs/scaling.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RateLimitStore {
    /// In this process: with N instances a user gets N × the limit (COMPAT §1.4).
    Memory,
    /// In the shop's Redis, counted by all instances together.
    Redis(RedisSettings),
}

/// The Redis connection of the shared throttle: Laravel's `cache` connection (`REDIS_URL`, else
/// `REDIS_HOST`/`REDIS_PORT`/`REDIS_USERNAME`/`REDIS_PASSWORD`; database `REDIS_CACHE_DB`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port/db`, with the password (hence secret).
    pub url: Secret<String>,
    /// The same without the password, for logs and `shopchat check`.
    pub shown: String,
    /// `SHOPCHAT_REDIS_PREFIX`: the start of every key shopchat writes.
    pub prefix: String,
    /// `SHOPCHAT_REDIS_POOL_SIZE`: connections per instance at most.
    pub pool_size: u32,
    /// `SHOPCHAT_REDIS_TIMEOUT_MS`: a connection or an answer that takes longer is a failure
    /// (the hit is counted in process, §1.4).
    pub timeout: Duration,
}

/// The shop's Laravel settings shopchat shares (COMPAT §10).
#[derive(Clone, Debug)]
pub struct LaravelSettings {
    pub app_key: Secret<[u8; 32]>,
    pub app_previous_keys: Vec<Secret<[u8; 32]>>,
    /// `APP_URL` as the shop set it: the root of e-mail links (§8.3) and of requests without
    /// `Host`; `None` when unset or empty.
    pub app_url: Option<String>,
    pub timezone: Tz,
    pub system_key: Option<String>,
    pub default_language: String,
    pub filesystem: FileSystem,
    /// `SHOPCHAT_LARAVEL_ROOT`: the shop's directory (its maintenance file, §1.2 step 4).
    pub laravel_root: Option<PathBuf>,
    /// `SHOPCHAT_MAINTENANCE=on`.
    pub maintenance_forced: bool,
}

/// Sanctum tokens (COMPAT §2, §11.1, D9).
#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// `SHOPCHAT_TOKEN_TOUCH_SECONDS`: `last_used_at` is written at most this often (D9); zero
    /// = PHP's behaviour.
    pub touch_interval: Duration,
    /// `SHOPCHAT_SANCTUM_EXPIRATION`: token lifetime from `created_at`, when set.
    pub expiration: Option<Duration>,
    pub tokenable_type: String,
    /// `SHOPCHAT_AUTH_CACHE_MS`: how long a token's lookup (and a failed one) is reused.
    pub cache: Duration,
}

/// How long the shop's slowly changing rows may be reused (COMPAT §11.1).
#[derive(Clone, Debug)]
pub struct CacheSettings {
    /// `SHOPCHAT_TRANSLATION_TTL` (§7.1).
    pub translations: Duration,
    /// `SHOPCHAT_SETTINGS_TTL` (§7.3).
    pub business_settings: Duration,
}

/// get-new-messages' `wait` (COMPAT §5.4 step 4).
#[derive(Clone, Debug)]
pub struct LongPollSettings {
    /// `SHOPCHAT_LONG_POLL_MAX_SECONDS`: the longest wait; zero = long-poll off.
    pub max_wait: Duration,
    /// `SHOPCHAT_LONG_POLL_PER_USER`: long-polls one user may have held at once; more answer at once.
    pub per_user: usize,
    /// Long-polls held at once in the process (`SHOPCHAT_LONG_POLL_MAX_HELD`, kept below
    /// `SHOPCHAT_MAX_CONNECTIONS`); more answer at once.
    pub max_held: usize,
}

/// Readiness and logging.
#[derive(Clone, Debug)]
pub struct OpsSettings {
    pub log_json: bool,
    /// `SHOPCHAT_READY_TIMEOUT_MS`: `/ready` fails when the database does not answer in time.
    pub ready_timeout: Duration,
    /// `SHOPCHAT_READY_CACHE_SECONDS`: how long `/ready` reuses its schema check; zero = never.
    pub ready_cache: Duration,
    /// `SHOPCHAT_INSTANCE`: this process' name in `/metrics` and logs; empty = `<hostname>:<port>`.
    pub instance: Option<String>,
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

/// The env file settings are read from: `--env-file`, else `SHOPCHAT_ENV_FILE` (empty: none).
pub fn chosen_env_file(
    explicit: Option<PathBuf>,
    process: &HashMap<String, String>,
) -> Option<PathBuf> {
    explicit.or_else(|| {
        process
            .get("SHOPCHAT_ENV_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
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
        let env_file = chosen_env_file(env_file, &process);
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
        Ok(Settings {
            http: http_settings(v)?,
            database: database_settings(v)?,
            laravel: laravel_settings(v)?,
            auth: auth_settings(v)?,
            caches: CacheSettings {
                translations: Duration::from_secs(v.parse("SHOPCHAT_TRANSLATION_TTL")?),
                business_settings: Duration::from_secs(v.parse("SHOPCHAT_SETTINGS_TTL")?),
            },
            long_poll: LongPollSettings {
                max_wait: Duration::from_secs(v.parse("SHOPCHAT_LONG_POLL_MAX_SECONDS")?),
                per_user: positive(v, "SHOPCHAT_LONG_POLL_PER_USER")?,
                max_held: long_poll_max_held(v)?,
            },
            mail: mail_settings(v)?,
            ops: OpsSettings {
                ready_timeout: Duration::from_millis(positive(v, "SHOPCHAT_READY_TIMEOUT_MS")?),
                ready_cache: Duration::from_secs(v.parse("SHOPCHAT_READY_CACHE_SECONDS")?),
                instance: v.non_empty("SHOPCHAT_INSTANCE"),
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
            },
        })
    }
}

impl LaravelSettings {
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

fn database_settings(v: &Values) -> Result<DatabaseSettings, ConfigError> {
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
        lock_timeout: Duration::from_secs(v.parse("SHOPCHAT_LOCK_TIMEOUT")?),
        // Without a CA: `preferred`, MySQL's default; with one: verify against it (§10).
        ssl_mode: match v.non_empty("SHOPCHAT_DB_SSL_MODE") {
            Some(m) => SslMode::parse(&m).ok_or_else(|| {
                bad(
                    "SHOPCHAT_DB_SSL_MODE",
                    format!(
                        "{m:?} is not disabled, preferred, required, verify_ca or verify_identity"
                    ),
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

    Ok(database)
}

fn laravel_settings(v: &Values) -> Result<LaravelSettings, ConfigError> {
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

    Ok(LaravelSettings {
        app_key,
        app_previous_keys,
        app_url: v
            .non_empty("APP_URL")
            .map(|u| u.trim_end_matches('/').to_string()),
        timezone,
        system_key: v.get("SYSTEM_KEY"),
        default_language: v.string("DEFAULT_LANGUAGE"),
        filesystem,
        laravel_root: v.non_empty("SHOPCHAT_LARAVEL_ROOT").map(PathBuf::from),
        maintenance_forced: v.on_off("SHOPCHAT_MAINTENANCE")?,
    })
}

fn mail_settings(v: &Values) -> Result<MailSettings, ConfigError> {
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
        first_retry: Duration::from_secs(positive(v, "SHOPCHAT_MAIL_RETRY_SECONDS")?),
        outbox_dir: PathBuf::from(
            v.non_empty("SHOPCHAT_OUTBOX_DIR")
                .unwrap_or_else(|| "./outbox".into()),
        ),
        outbox_max_bytes: positive(v, "SHOPCHAT_OUTBOX_MAX_BYTES")?,
        dead_ttl: match v.parse::<u64>("SHOPCHAT_OUTBOX_DEAD_DAYS")? {
            0 => None,
            days => Some(Duration::from_secs(days * 86_400)),
        },
        new_conversations_per_hour: v.parse("SHOPCHAT_NEW_CONVERSATIONS_PER_HOUR")?,
    };

    Ok(mail)
}

fn http_settings(v: &Values) -> Result<HttpSettings, ConfigError> {
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

    Ok(HttpSettings {
        listen: v.parse("SHOPCHAT_LISTEN")?,
        metrics_listen: v.opt_parse("SHOPCHAT_METRICS_LISTEN")?,
        base_path: base_path.to_string(),
        trusted_proxies,
        max_body_bytes: positive::<usize>(v, "SHOPCHAT_MAX_BODY_BYTES")?,
        client_timeout: Duration::from_secs(positive::<u64>(v, "SHOPCHAT_CLIENT_TIMEOUT")?),
        max_connections: positive::<usize>(v, "SHOPCHAT_MAX_CONNECTIONS")?,
        workers: match v.non_empty("SHOPCHAT_WORKERS") {
            None => None,
            Some(_) => Some(positive::<usize>(v, "SHOPCHAT_WORKERS")?),
        },
        shutdown_timeout: Duration::from_secs(v.parse("SHOPCHAT_SHUTDOWN_TIMEOUT")?),
        rate_limit: v.parse("SHOPCHAT_RATE_LIMIT")?,
        rate_limit_max_keys: positive(v, "SHOPCHAT_RATE_LIMIT_MAX_KEYS")?,
        ops_rate_limit: v.parse("SHOPCHAT_OPS_RATE_LIMIT")?,
        rate_limit_store: rate_limit_store(v)?,
    })
}

impl HttpSettings {
    /// The HTTP worker threads: `SHOPCHAT_WORKERS`, else one per CPU the process may use.
    pub fn worker_threads(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

fn rate_limit_store(v: &Values) -> Result<RateLimitStore, ConfigError> {
    match v.string("SHOPCHAT_RATE_LIMIT_STORE").trim() {
        "memory" | "" => Ok(RateLimitStore::Memory),
        "redis" => Ok(RateLimitStore::Redis(redis_settings(v)?)),
        other => Err(bad(
            "SHOPCHAT_RATE_LIMIT_STORE",
            format!("{other:?} is not memory or redis"),
        )),
    }
}

/// Laravel's `database.redis.cache` connection: `REDIS_URL` when set (its path, when it has
/// one, names the database), else host, port and credentials; the database is
/// `REDIS_CACHE_DB` (Laravel's default 1) unless the URL names one.
fn redis_settings(v: &Values) -> Result<RedisSettings, ConfigError> {
    let db: u32 = v.parse("REDIS_CACHE_DB")?;
    let userinfo = |user: &str, password: &str| {
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        match (user.is_empty(), password.is_empty()) {
            (true, true) => String::new(),
            (_, true) => format!("{}@", enc(user)),
            _ => format!("{}:{}@", enc(user), enc(password)),
        }
    };
    let (url, shown) = match v.non_empty("REDIS_URL") {
        Some(url) => {
            let rest = match url.split_once("://") {
                Some(("redis", rest)) => rest,
                Some(("rediss", _)) => return Err(bad(
                    "REDIS_URL",
                    "TLS to Redis (rediss://) is not supported; use redis:// on a private network",
                )),
                _ => return Err(bad("REDIS_URL", "must start with redis://")),
            };
            let (authority, path) = match rest.split_once('/') {
                Some((a, p)) => (a, p.split(['?', '#']).next().unwrap_or("")),
                None => (rest.split(['?', '#']).next().unwrap_or(""), ""),
            };
            let db = match path {
                "" => db,
                p => p
                    .parse()
                    .map_err(|_| bad("REDIS_URL", format!("{p:?} is not a database number")))?,
            };
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            (
                format!("redis://{authority}/{db}"),
                format!("redis://{host}/{db}"),
            )
        }
        None => {
            let host = v.string("REDIS_HOST");
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host
            };
            let port: u16 = v.parse("REDIS_PORT")?;
            let auth = userinfo(&v.string("REDIS_USERNAME"), &v.string("REDIS_PASSWORD"));
            (
                format!("redis://{auth}{host}:{port}/{db}"),
                format!("redis://{host}:{port}/{db}"),
            )
        }
    };
    Ok(RedisSettings {
        url: Secret::new(url),
        shown,
        prefix: v.string("SHOPCHAT_REDIS_PREFIX"),
        pool_size: positive(v, "SHOPCHAT_REDIS_POOL_SIZE")?,
        timeout: Duration::from_millis(positive(v, "SHOPCHAT_REDIS_TIMEOUT_MS")?),
    })
}

fn auth_settings(v: &Values) -> Result<AuthSettings, ConfigError> {
    Ok(AuthSettings {
        touch_interval: Duration::from_secs(v.parse("SHOPCHAT_TOKEN_TOUCH_SECONDS")?),
        expiration: v
            .opt_parse::<i64>("SHOPCHAT_SANCTUM_EXPIRATION")?
            .map(|minutes| Duration::from_secs(u64::try_from(minutes.max(0)).unwrap_or(0) * 60)),
        tokenable_type: v
            .non_empty("SHOPCHAT_TOKENABLE_TYPE")
            .unwrap_or_else(|| "App\\Models\\User".into()),
        cache: Duration::from_millis(v.parse("SHOPCHAT_AUTH_CACHE_MS")?),
    })
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
    fn the_throttle_store_reads_laravels_redis_variables() {
        let load = |pairs: &[(&str, &str)]| {
            let mut all = vec![("APP_KEY", KEY)];
            all.extend_from_slice(pairs);
            Settings::load_from(None, env(&all)).map(|s| s.http.rate_limit_store)
        };
        assert_eq!(load(&[]).unwrap(), RateLimitStore::Memory, "the default");
        let redis = |pairs: &[(&str, &str)]| {
            let mut all = vec![("SHOPCHAT_RATE_LIMIT_STORE", "redis")];
            all.extend_from_slice(pairs);
            match load(&all).unwrap() {
                RateLimitStore::Redis(r) => r,
                other => panic!("{other:?}"),
            }
        };
        // Laravel's defaults: 127.0.0.1:6379, the cache connection's database 1, password null.
        let r = redis(&[("REDIS_PASSWORD", "null")]);
        assert_eq!(r.url.expose(), "redis://127.0.0.1:6379/1");
        assert_eq!(r.prefix, "shopchat:throttle:");
        assert_eq!(r.timeout, Duration::from_millis(100));
        let r = redis(&[
            ("REDIS_HOST", "cache.internal"),
            ("REDIS_PORT", "6380"),
            ("REDIS_PASSWORD", "p@ss:w/rd"),
            ("REDIS_CACHE_DB", "3"),
        ]);
        assert_eq!(
            r.url.expose(),
            "redis://:p%40ss%3Aw%2Frd@cache.internal:6380/3"
        );
        assert_eq!(
            r.shown, "redis://cache.internal:6380/3",
            "no password shown"
        );
        assert!(!format!("{r:?}").contains("p@ss"));
        let r = redis(&[("REDIS_HOST", "::1")]);
        assert_eq!(r.url.expose(), "redis://[::1]:6379/1");
        // REDIS_URL wins; its path names the database, else REDIS_CACHE_DB.
        let r = redis(&[("REDIS_URL", "redis://u:secret@10.0.0.5:6379")]);
        assert_eq!(r.url.expose(), "redis://u:secret@10.0.0.5:6379/1");
        assert_eq!(r.shown, "redis://10.0.0.5:6379/1");
        let r = redis(&[("REDIS_URL", "redis://10.0.0.5:6379/7")]);
        assert_eq!(r.url.expose(), "redis://10.0.0.5:6379/7");
        for (name, value) in [
            ("REDIS_URL", "rediss://10.0.0.5"),
            ("REDIS_URL", "http://10.0.0.5"),
            ("REDIS_URL", "redis://10.0.0.5/x"),
            ("REDIS_PORT", "six"),
            ("SHOPCHAT_REDIS_TIMEOUT_MS", "0"),
        ] {
            let e = load(&[("SHOPCHAT_RATE_LIMIT_STORE", "redis"), (name, value)]).unwrap_err();
            assert_eq!(e.name, name, "{value}");
        }
        let e = load(&[("SHOPCHAT_RATE_LIMIT_STORE", "memcached")]).unwrap_err();
        assert_eq!(e.name, "SHOPCHAT_RATE_LIMIT_STORE");
    }

    #[test]
    fn defaults_apply() {
        let s = Settings::load_from(None, env(&[("APP_KEY", KEY)])).unwrap();
        assert_eq!(s.http.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(s.database.database, "forge");
        assert_eq!(s.http.rate_limit, 600);
        assert_eq!(s.auth.tokenable_type, "App\\Models\\User");
        assert_eq!(s.laravel.timezone, chrono_tz::UTC);
        assert_eq!(s.laravel.system_key, None);
        assert_eq!(s.mail.mailer, MailerKind::Smtp);
        assert_eq!(s.mail.encryption, None);
        assert_eq!(s.laravel.filesystem, FileSystem::Local);
        assert_eq!(s.http.max_connections, 25_000);
        assert_eq!(s.http.client_timeout, Duration::from_secs(10));
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
        assert!(!shown.contains(&format!("{:?}", s.laravel.app_key.expose())));
        assert!(shown.contains("[redacted]"));
        assert_eq!(s.database.password.expose(), "db-secret-pw");
    }

    #[test]
    fn request_limits_are_validated() {
        for (name, value) in [
            ("SHOPCHAT_MAX_CONNECTIONS", "0"),
            ("SHOPCHAT_MAX_BODY_BYTES", "x"),
            ("SHOPCHAT_CLIENT_TIMEOUT", "0"),
            ("SHOPCHAT_WORKERS", "0"),
            ("SHOPCHAT_WORKERS", "two"),
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
        assert_eq!(s.http.max_connections, 3);
        assert_eq!(s.http.workers, None, "one per CPU unless set");
        let s =
            Settings::load_from(None, env(&[("APP_KEY", KEY), ("SHOPCHAT_WORKERS", "3")])).unwrap();
        assert_eq!(s.http.workers, Some(3));
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
        assert_eq!(s.laravel.timezone, chrono_tz::Asia::Dhaka);
        assert_eq!(s.laravel.system_key.as_deref(), Some("abc"));
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
        assert_eq!(s.http.trusted_proxies.len(), 2);
        assert!(s.laravel.maintenance_forced);
        assert_eq!(s.mail.mailer, MailerKind::Log);
        assert_eq!(s.http.base_path, "/shop");
    }
}

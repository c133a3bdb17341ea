//! `shopchat check`: the doctor an operator runs before (and after) putting
//! shopchat next to a shop. It reads, never writes (apart from a probe file in
//! the outbox): configuration, `APP_KEY`, the database and every table and
//! column of SCHEMA.md §2–3, the Sanctum token table shape, the outbox, the
//! recommended indexes (with `EXPLAIN` of the queries they speed up) and,
//! with `--smtp`, the mail server.
//!
//! A `fail` makes the exit code 1; `warn` is advice (missing indexes, a
//! charset that cannot store emoji, an unset `SYSTEM_KEY`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use sqlx::{MySqlPool, Row};

use crate::config::{ConfigError, MailerKind, RateLimitStore, Settings, SslMode};
use crate::laravel::encrypter::Encrypter;
use crate::mail::outbox::Outbox;
use crate::mail::smtp::Mailer;
use crate::ops::schema::{self, ColumnInfo, Columns, INSERTS, REQUIRED};

const RECOMMENDED_INDEXES: &str = include_str!("../../schema/recommended-indexes.sql");

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Also connect to the SMTP server (`--smtp`).
    pub smtp: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
    Skip,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
            Level::Skip => "skip",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: String,
    pub level: Level,
    pub message: String,
    /// Further lines (queries sped up, EXPLAIN, the fix).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// One recommended index of `schema/recommended-indexes.sql` and what the database says.
#[derive(Debug, Clone, Serialize)]
pub struct IndexReport {
    pub name: String,
    pub table: String,
    pub columns: Vec<String>,
    pub present: bool,
    /// The comment above the statement in recommended-indexes.sql.
    pub speeds_up: String,
    pub ddl: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<Explain>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Explain {
    pub query: String,
    /// EXPLAIN's access type: `ALL` = full table scan.
    pub access: String,
    pub key: Option<String>,
    pub rows: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub findings: Vec<Finding>,
    /// `with_expires_at` or `without_expires_at` (COMPAT §2), when the database was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_table: Option<&'static str>,
    pub indexes: Vec<IndexReport>,
}

impl Report {
    fn new() -> Report {
        Report {
            ok: true,
            findings: Vec::new(),
            token_table: None,
            indexes: Vec::new(),
        }
    }

    fn add(&mut self, check: &str, level: Level, message: impl Into<String>) -> &mut Finding {
        if level == Level::Fail {
            self.ok = false;
        }
        self.findings.push(Finding {
            check: check.to_string(),
            level,
            message: message.into(),
            details: Vec::new(),
        });
        self.findings.last_mut().expect("just pushed")
    }

    fn count(&self, level: Level) -> usize {
        self.findings.iter().filter(|f| f.level == level).count()
    }

    /// The human-readable form.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            out.push_str(&format!(
                "{:<5} {:<14} {}\n",
                f.level.label(),
                f.check,
                f.message
            ));
            for d in &f.details {
                out.push_str(&format!("{:<20} {d}\n", ""));
            }
        }
        let fails = self.count(Level::Fail);
        let warns = self.count(Level::Warn);
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        out.push_str(&format!(
            "\nresult: {} ({}, {})\n",
            if self.ok { "OK" } else { "FAIL" },
            plural(fails, "problem"),
            plural(warns, "warning")
        ));
        out
    }
}

/// Runs every check. `settings` is the outcome of loading the configuration;
/// `source` says where it came from (for the report).
pub async fn run(
    settings: Result<Settings, ConfigError>,
    source: &str,
    options: Options,
) -> Report {
    let mut report = Report::new();
    let settings = match settings {
        Ok(s) => s,
        Err(e) => {
            report.add("configuration", Level::Fail, e.to_string());
            return report;
        }
    };
    configuration(&mut report, &settings, source);
    outbox(&mut report, &settings);
    database(&mut report, &settings).await;
    redis(&mut report, &settings).await;
    if options.smtp {
        smtp(&mut report, &settings).await;
    }
    report
}

fn configuration(report: &mut Report, s: &Settings, source: &str) {
    let db = &s.database;
    let target = match &db.url {
        Some(_) => "DATABASE_URL".to_string(),
        None => match &db.socket {
            Some(sock) => format!("{} via socket {sock}", db.database),
            None => format!("{} on {}:{}", db.database, db.host, db.port),
        },
    };
    let mailer = match s.mail.mailer {
        MailerKind::Smtp => format!("smtp {}:{}", s.mail.host, s.mail.port),
        MailerKind::Log => "log (mail is logged, not sent)".to_string(),
    };
    report.add(
        "configuration",
        Level::Ok,
        format!(
            "{source}; listen {}; database {target}; mailer {mailer}; APP_TIMEZONE {}",
            s.http.listen, s.laravel.timezone
        ),
    );

    // APP_KEY was decoded while loading (32 bytes or refused); prove it works end to end.
    let enc = Encrypter::new(*s.laravel.app_key.expose(), s.laravel.previous_keys());
    match enc.decrypt_int(&enc.encrypt_int(424242)) {
        Ok(424242) => report.add(
            "APP_KEY",
            Level::Ok,
            format!(
                "decodes to 32 bytes (AES-256-CBC); encrypt/decrypt round trip works; {} previous key(s)",
                s.laravel.app_previous_keys.len()
            ),
        ),
        other => report.add(
            "APP_KEY",
            Level::Fail,
            format!("encrypt/decrypt round trip failed: {other:?}"),
        ),
    };

    // The root of the links in sellers' e-mails (COMPAT §8.3, security review M2).
    match s.laravel.app_url.as_deref() {
        None => report.add(
            "APP_URL",
            Level::Warn,
            "unset: e-mail links use the request's host; set it to the shop's URL so that no client-supplied host can reach a seller's mail".to_string(),
        ),
        Some(u) if u.contains("://localhost") || u.contains("://127.") => report.add(
            "APP_URL",
            Level::Warn,
            format!("{u}: e-mail links would point at this machine, not the shop"),
        ),
        Some(u) => report.add(
            "APP_URL",
            Level::Ok,
            format!("e-mail links start with {u}"),
        ),
    };

    match s.laravel.system_key.as_deref() {
        None | Some("") | Some("0") => report.add(
            "SYSTEM_KEY",
            Level::Warn,
            "unset or empty: every chat request answers \"Request not found!\" (COMPAT §1.2 step 5)",
        ),
        Some(_) => report.add("SYSTEM_KEY", Level::Ok, "set"),
    };

    if let Some(root) = &s.laravel.laravel_root {
        if root.join("storage/framework").is_dir() {
            let down = root.join("storage/framework/down").exists();
            report.add(
                "laravel root",
                if down { Level::Warn } else { Level::Ok },
                if down {
                    format!(
                        "{}: the shop is in maintenance mode (storage/framework/down exists)",
                        root.display()
                    )
                } else {
                    format!("{}: maintenance file is watched", root.display())
                },
            );
        } else {
            report.add(
                "laravel root",
                Level::Warn,
                format!(
                    "SHOPCHAT_LARAVEL_ROOT {} has no storage/framework: `php artisan down` will not be seen",
                    root.display()
                ),
            );
        }
    }
    if s.laravel.maintenance_forced {
        report.add(
            "maintenance",
            Level::Warn,
            "SHOPCHAT_MAINTENANCE=on: every request gets the maintenance answer",
        );
    }
}

fn outbox(report: &mut Report, s: &Settings) {
    let dir = &s.mail.outbox_dir;
    match Outbox::open(dir).and_then(|o| o.probe_writable().map(|()| o)) {
        Ok(o) => {
            let c = o.counts().unwrap_or_default();
            let level = if c.dead > 0 { Level::Warn } else { Level::Ok };
            let f = report.add(
                "outbox",
                level,
                format!(
                    "{} is writable; {} pending, {} sending, {} dead",
                    dir.display(),
                    c.pending,
                    c.sending,
                    c.dead
                ),
            );
            if c.dead > 0 {
                f.details.push(
                    "see `shopchat outbox list`, then `outbox retry` or `outbox purge --dead`"
                        .into(),
                );
            }
        }
        Err(e) => {
            report.add(
                "outbox",
                Level::Fail,
                format!("SHOPCHAT_OUTBOX_DIR {} is not usable: {e}", dir.display()),
            );
        }
    }
}

/// Whether the database connection is encrypted, and whether it should be (security review M5):
/// a database on another host without TLS carries every message and the password in clear.
async fn database_tls(report: &mut Report, s: &Settings, pool: &sqlx::MySqlPool) {
    let db = &s.database;
    let cipher: Option<(String, String)> = sqlx::query_as("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .fetch_optional(pool)
        .await
        .ok()
        .flatten();
    let encrypted = cipher.as_ref().is_some_and(|(_, c)| !c.is_empty());
    let host = match &db.url {
        Some(url) => url
            .rsplit_once('@')
            .map_or(url.as_str(), |(_, h)| h)
            .split(['/', ':', '?'])
            .next()
            .unwrap_or("")
            .to_string(),
        None if db.socket.is_some() => "localhost".to_string(),
        None => db.host.clone(),
    };
    let local = matches!(
        host.as_str(),
        "localhost" | "127.0.0.1" | "::1" | "[::1]" | ""
    );
    let verified = matches!(db.ssl_mode, SslMode::VerifyCa | SslMode::VerifyIdentity);
    let (level, text) = match (encrypted, local, verified) {
        (true, _, true) => (
            Level::Ok,
            format!("TLS ({}), server certificate verified ({})", cipher.unwrap_or_default().1, db.ssl_mode.name()),
        ),
        (true, true, false) => (
            Level::Ok,
            format!("TLS ({}), certificate not verified ({})", cipher.unwrap_or_default().1, db.ssl_mode.name()),
        ),
        (true, false, false) => (
            Level::Warn,
            format!("TLS to {host} without verifying the server's certificate ({}): set MYSQL_ATTR_SSL_CA (verify_ca) against a man in the middle", db.ssl_mode.name()),
        ),
        (false, true, _) => (Level::Ok, "local database, no TLS".to_string()),
        (false, false, _) => (
            Level::Warn,
            format!("{host} is not local and the connection is not encrypted: messages, token hashes and the password cross the network in clear; set MYSQL_ATTR_SSL_CA and SHOPCHAT_DB_SSL_MODE=verify_ca (docs/security.md, M5)"),
        ),
    };
    report.add("database TLS", level, text);
}

async fn database(report: &mut Report, s: &Settings) {
    let pool = match crate::db::pool(&s.database) {
        Ok(p) => p,
        Err(e) => {
            report.add("database", Level::Fail, format!("{e:#}"));
            return;
        }
    };
    let info: Result<(String, String, String, String), sqlx::Error> = sqlx::query_as(
        "SELECT CAST(VERSION() AS CHAR), CAST(DATABASE() AS CHAR), CAST(@@session.time_zone AS CHAR), \
         CAST(@@global.system_time_zone AS CHAR)",
    )
    .fetch_one(&pool)
    .await;
    match info {
        Ok((version, db, tz, system_tz)) => {
            report.add(
                "database",
                Level::Ok,
                format!("connected: server {version}, database {db}, session time_zone {tz} (system {system_tz})"),
            );
        }
        Err(e) => {
            let db = &s.database;
            // rustls reports a certificate it does not trust as an I/O error.
            let about_tls = matches!(e, sqlx::Error::Tls(_)) || {
                let text = e.to_string().to_ascii_lowercase();
                ["certificate", "tls", "ssl", "handshake"]
                    .iter()
                    .any(|w| text.contains(w))
            };
            let hint = match about_tls {
                true => format!(
                    " — TLS to the database failed: check SHOPCHAT_DB_SSL_MODE ({}) and MYSQL_ATTR_SSL_CA ({})",
                    db.ssl_mode.name(),
                    db.ssl_ca
                        .as_deref()
                        .map_or("unset".to_string(), |p| p.display().to_string())
                ),
                false => String::new(),
            };
            report.add(
                "database",
                Level::Fail,
                format!("cannot connect: {e}{hint}"),
            );
            pool.close().await;
            return;
        }
    }
    database_tls(report, s, &pool).await;
    match schema::load_columns(&pool).await {
        Ok(columns) => {
            let collations = table_collations(&pool).await.unwrap_or_default();
            tables(report, &columns, &collations);
            tokens(report, &columns);
            match indexes(&pool).await {
                Ok(r) => index_findings(report, r),
                Err(e) => {
                    report.add(
                        "indexes",
                        Level::Warn,
                        format!("cannot read information_schema.statistics: {e}"),
                    );
                }
            }
        }
        Err(e) => {
            report.add(
                "schema",
                Level::Fail,
                format!("cannot read information_schema.columns: {e}"),
            );
        }
    }
    pool.close().await;
}

async fn table_collations(pool: &MySqlPool) -> Result<BTreeMap<String, String>, sqlx::Error> {
    let rows: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT CAST(table_name AS CHAR), CAST(table_collation AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE()",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(t, c)| Some((t?, c.unwrap_or_default())))
        .collect())
}

fn charset_of(collation: &str) -> &str {
    collation.split('_').next().unwrap_or(collation)
}

/// Tables, columns, types, INSERT defaults and charsets (SCHEMA.md §1–3).
fn tables(report: &mut Report, columns: &Columns, collations: &BTreeMap<String, String>) {
    let problems = schema::problems(columns);
    for table in schema::tables() {
        let mine: Vec<_> = problems.iter().filter(|(r, _)| r.table == table).collect();
        let Some(cols) = columns.get(table) else {
            report.add("schema", Level::Fail, format!("table {table} is missing"));
            continue;
        };
        let collation = collations.get(table).map(String::as_str).unwrap_or("?");
        let used = REQUIRED.iter().filter(|r| r.table == table).count();
        if mine.is_empty() {
            report.add(
                "schema",
                Level::Ok,
                format!(
                    "{table}: {used} used column(s) present with compatible types; table charset {} ({collation})",
                    charset_of(collation)
                ),
            );
        }
        for (r, p) in mine {
            report.add("schema", Level::Fail, schema::describe(r, p));
        }
        for r in REQUIRED
            .iter()
            .filter(|r| r.table == table && r.writes_null)
        {
            if cols.get(r.column).is_some_and(|c| !c.nullable) {
                report.add(
                    "schema",
                    Level::Fail,
                    format!(
                        "column {table}.{} is NOT NULL, but shopchat stores NULL there when the app sends none (COMPAT §5.5)",
                        r.column
                    ),
                );
            }
        }
        if let Some((_, named)) = INSERTS.iter().find(|(t, _)| *t == table) {
            for (name, c) in cols {
                let fills_itself = c.nullable || c.default.is_some() || c.auto_increment;
                if !named.contains(&name.as_str()) && !fills_itself {
                    report.add(
                        "schema",
                        Level::Fail,
                        format!("column {table}.{name} is NOT NULL without a default: shopchat's INSERT INTO {table} would fail"),
                    );
                }
            }
        }
        if table == "conversations" {
            viewed_defaults(report, cols);
        }
        for column in ["title", "message"] {
            if let Some(c) = cols
                .get(column)
                .filter(|_| matches!(table, "conversations" | "messages"))
            {
                text_charset(report, table, column, c);
            }
        }
    }
}

/// New conversations take the flags' defaults (SCHEMA.md §2: 1/0).
fn viewed_defaults(report: &mut Report, cols: &BTreeMap<String, ColumnInfo>) {
    for (column, expected) in [("sender_viewed", "1"), ("receiver_viewed", "0")] {
        if let Some(c) = cols.get(column) {
            let found = c.default.as_deref().map(|d| d.trim_matches('\''));
            if found != Some(expected) {
                report.add(
                    "schema",
                    Level::Warn,
                    format!(
                        "conversations.{column} defaults to {}, the product's DDL has {expected}: new conversations get that value",
                        found.unwrap_or("nothing")
                    ),
                );
            }
        }
    }
}

/// What the charset of the chat text columns means for users (SCHEMA.md §1, COMPAT §5.0).
fn text_charset(report: &mut Report, table: &str, column: &str, c: &ColumnInfo) {
    let charset = c.charset.as_deref().unwrap_or("?");
    let (level, note) = match charset {
        "utf8mb4" => (Level::Ok, "stores every character"),
        // 4 bytes per character: the 65,535-byte TEXT of the product's DDL holds fewer
        // characters than the 65,535-byte message rule allows (SCHEMA.md §1).
        "utf32" if c.data_type.eq_ignore_ascii_case("text") => (
            Level::Ok,
            "stores every character; a TEXT holds 16,383 characters (longer → 422)",
        ),
        "utf32" => (Level::Ok, "stores every character"),
        "utf8" | "utf8mb3" => (
            Level::Warn,
            "cannot hold characters above U+FFFF (emoji): they are stored as '?', as PHP stores them (COMPAT §5.0)",
        ),
        _ => (
            Level::Warn,
            "unusual charset: characters it cannot hold are stored as '?', as PHP stores them (COMPAT §5.0)",
        ),
    };
    // The statement that ends the degradation (the whole table: its other text columns too).
    let note = match level {
        Level::Warn => format!(
            "{note}; `ALTER TABLE {table} CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci` ends it"
        ),
        _ => note.to_string(),
    };
    report.add(
        "charset",
        level,
        format!("{table}.{column} is {} {charset}: {note}", c.column_type),
    );
}

fn tokens(report: &mut Report, columns: &Columns) {
    let Some(cols) = columns.get("personal_access_tokens") else {
        return;
    };
    if cols.contains_key("expires_at") {
        report.token_table = Some("with_expires_at");
        report.add(
            "tokens",
            Level::Ok,
            "personal_access_tokens has expires_at (product ≥ 9.6): expired tokens are refused",
        );
    } else {
        report.token_table = Some("without_expires_at");
        report.add(
            "tokens",
            Level::Ok,
            "personal_access_tokens has no expires_at (product < 9.6): only SHOPCHAT_SANCTUM_EXPIRATION limits token age",
        );
    }
}

/// One `ALTER TABLE … ADD INDEX` of recommended-indexes.sql with its comment.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommended {
    pub table: String,
    pub name: String,
    pub columns: Vec<String>,
    pub comment: String,
    pub ddl: String,
}

/// Parses `schema/recommended-indexes.sql`: each statement and the comment
/// lines directly above it.
pub fn recommended_indexes() -> Vec<Recommended> {
    let mut out = Vec::new();
    let mut comment: Vec<&str> = Vec::new();
    for line in RECOMMENDED_INDEXES.lines() {
        let line = line.trim();
        if let Some(c) = line.strip_prefix("--") {
            comment.push(c.trim());
            continue;
        }
        if line.is_empty() {
            comment.clear();
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["ALTER", "TABLE", table, "ADD", "INDEX", name, ..] = words.as_slice() {
            let columns = column_list(line)
                .split(',')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect();
            out.push(Recommended {
                table: table.to_string(),
                name: name.to_string(),
                columns,
                comment: comment.join(" "),
                ddl: line.to_string(),
            });
        }
        comment.clear();
    }
    out
}

/// The text inside the first parenthesis pair of `line`, nested pairs kept
/// (`(type(191))` → `type(191)`).
fn column_list(line: &str) -> &str {
    let Some(start) = line.find('(') else {
        return "";
    };
    let mut depth = 0usize;
    for (i, ch) in line[start..].char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &line[start + 1..start + i];
                }
            }
            _ => {}
        }
    }
    ""
}

/// A query of shopchat that the table's recommended index speeds up, for EXPLAIN.
fn explain_query(table: &str) -> Option<&'static str> {
    Some(match table {
        "messages" => "SELECT COUNT(*) FROM messages WHERE conversation_id = 1",
        "conversations" => {
            "SELECT id FROM conversations WHERE sender_id = 1 ORDER BY id DESC LIMIT 10"
        }
        "shops" => "SELECT id, user_id, name, logo FROM shops WHERE user_id IN (1) ORDER BY id",
        "translations" => {
            "SELECT lang_key, lang_value FROM translations WHERE lang = 'en' ORDER BY id"
        }
        "business_settings" => {
            "SELECT type, value FROM business_settings WHERE type = 'header_logo' ORDER BY id"
        }
        _ => return None,
    })
}

async fn explain(pool: &MySqlPool, query: &str) -> Result<Explain, sqlx::Error> {
    // The text protocol gives every EXPLAIN column as text, whatever the server's types.
    let rows = sqlx::raw_sql(&format!("EXPLAIN {query}"))
        .fetch_all(pool)
        .await?;
    let text = |name: &str| {
        rows.first().and_then(|r| {
            r.try_get_unchecked::<Option<String>, _>(name)
                .ok()
                .flatten()
        })
    };
    Ok(Explain {
        query: query.to_string(),
        access: text("type").unwrap_or_else(|| "?".into()),
        key: text("key"),
        rows: text("rows"),
    })
}

/// Leading columns of existing indexes: an index whose first column is the
/// recommended one serves the same lookups (InnoDB appends the primary key).
async fn indexes(pool: &MySqlPool) -> Result<Vec<IndexReport>, sqlx::Error> {
    let rows: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR) FROM information_schema.statistics \
         WHERE table_schema = DATABASE() AND seq_in_index = 1",
    )
    .fetch_all(pool)
    .await?;
    let leading: BTreeSet<(String, String)> = rows
        .into_iter()
        .filter_map(|(t, c)| Some((t?, c?)))
        .collect();
    let mut out = Vec::new();
    for rec in recommended_indexes() {
        let first = rec
            .columns
            .first()
            .map(|c| c.split('(').next().unwrap_or(c).trim().to_string())
            .unwrap_or_default();
        let present = leading.contains(&(rec.table.clone(), first));
        let explain = match (present, explain_query(&rec.table)) {
            (false, Some(q)) => explain(pool, q).await.ok(),
            _ => None,
        };
        out.push(IndexReport {
            name: rec.name,
            table: rec.table,
            columns: rec.columns,
            present,
            speeds_up: rec.comment,
            ddl: rec.ddl,
            explain,
        });
    }
    Ok(out)
}

fn index_findings(report: &mut Report, indexes: Vec<IndexReport>) {
    for ix in &indexes {
        if ix.present {
            report.add(
                "index",
                Level::Ok,
                format!("{} ({}) present", ix.name, ix.table),
            );
            continue;
        }
        let f = report.add(
            "index",
            Level::Warn,
            format!(
                "{} missing: optional, results do not change, but these queries scan {}",
                ix.name, ix.table
            ),
        );
        f.details.push(format!("speeds up: {}", ix.speeds_up));
        if let Some(e) = &ix.explain {
            let how = match e.access.as_str() {
                "ALL" => "full table scan".to_string(),
                "index" => "full index scan".to_string(),
                other => format!("access {other}"),
            };
            f.details.push(format!(
                "EXPLAIN {}: type {} ({how}), key {}, ~{} rows",
                e.query,
                e.access,
                e.key.as_deref().unwrap_or("none"),
                e.rows.as_deref().unwrap_or("?")
            ));
        }
        f.details.push(format!("fix: {}", ix.ddl));
    }
    report.indexes = indexes;
}

async fn smtp(report: &mut Report, s: &Settings) {
    match Mailer::from_settings(&s.mail) {
        Mailer::Log => {
            report.add(
                "smtp",
                Level::Skip,
                "the log mailer sends nothing (MAIL_MAILER=log/array)",
            );
        }
        Mailer::Smtp(smtp) => {
            let smtp = &smtp.settings;
            let deadline = smtp.timeout + Duration::from_secs(5);
            let outcome = tokio::time::timeout(deadline, crate::mail::smtp::probe(smtp)).await;
            let target = format!("{}:{}", smtp.host, smtp.port);
            match outcome {
                Ok(Ok(())) => report.add(
                    "smtp",
                    Level::Ok,
                    format!("{target} accepted a connection (TLS and AUTH as configured)"),
                ),
                Ok(Err(e)) => report.add("smtp", Level::Fail, format!("{target}: {e}")),
                Err(_) => report.add(
                    "smtp",
                    Level::Fail,
                    format!("{target}: no answer within {deadline:?}"),
                ),
            };
        }
    }
}

/// The shared throttle's Redis, when `SHOPCHAT_RATE_LIMIT_STORE=redis` (docs/scaling.md).
async fn redis(report: &mut Report, s: &Settings) {
    let RateLimitStore::Redis(r) = &s.http.rate_limit_store else {
        report.add(
            "redis",
            Level::Skip,
            "SHOPCHAT_RATE_LIMIT_STORE=memory: each instance counts its own throttle",
        );
        return;
    };
    // The service allows SHOPCHAT_REDIS_TIMEOUT_MS per answer; the check is patient with a
    // slow first connection but reports the slowness.
    let started = std::time::Instant::now();
    match crate::http::ratelimit_redis::probe(r.url.expose(), r.timeout.max(Duration::from_secs(2))).await {
        Ok(version) if started.elapsed() <= r.timeout => report.add(
            "redis",
            Level::Ok,
            format!("{} answers (Redis {version}); the throttle is shared by every instance using it", r.shown),
        ),
        Ok(version) => report.add(
            "redis",
            Level::Warn,
            format!(
                "{} answers (Redis {version}) but took {:?}, more than SHOPCHAT_REDIS_TIMEOUT_MS ({:?}): the service would count in process",
                r.shown,
                started.elapsed(),
                r.timeout
            ),
        ),
        Err(e) => report.add(
            "redis",
            Level::Fail,
            format!("{}: {e} (the service would count each instance's throttle on its own)", r.shown),
        ),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recommended_indexes_are_parsed_with_their_comment() {
        let all = recommended_indexes();
        assert_eq!(all.len(), 5);
        assert_eq!(all[0].table, "messages");
        assert_eq!(all[0].name, "shopchat_messages_conversation_id_id");
        assert_eq!(all[0].columns, vec!["conversation_id", "id"]);
        assert!(all[0].comment.contains("get-new-messages"), "{:?}", all[0]);
        assert!(all[0].ddl.starts_with("ALTER TABLE messages ADD INDEX"));
        assert_eq!(all[4].columns, vec!["type(191)"]);
        for rec in &all {
            assert!(explain_query(&rec.table).is_some(), "{}", rec.table);
            assert!(!rec.comment.is_empty(), "{}", rec.name);
        }
    }

    #[test]
    fn text_report_counts_problems() {
        let mut r = Report::new();
        r.add("a", Level::Ok, "fine");
        r.add("b", Level::Warn, "hmm").details.push("more".into());
        assert!(r.ok);
        r.add("c", Level::Fail, "broken");
        assert!(!r.ok);
        let text = r.to_text();
        assert!(text.contains("FAIL  c              broken\n"), "{text}");
        assert!(text.contains("\n                     more\n"), "{text}");
        assert!(
            text.ends_with("result: FAIL (1 problem, 1 warning)\n"),
            "{text}"
        );
    }
}

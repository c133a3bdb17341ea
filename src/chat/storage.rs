//! Text that a shop column cannot hold (COMPAT §5.0, 2026-12).
//!
//! Many shops still have `utf8mb3` (or older) `messages.message` and `conversations.title`
//! columns. In strict mode an emoji there is MySQL error 1366; PHP runs non-strict, answers 200
//! and stores the text with `?` for each character the column cannot hold. The real app cannot
//! show an error for a message it already cleared from the input field, so shopchat stores what
//! PHP stores: on 1366 the value is converted by MySQL itself to the column's character set (the
//! same `?` substitution the non-strict write makes) and written again, strictly, in the same
//! transaction. Only that column's value is converted; every other write stays strict.
//!
//! It is decided when a write meets the error, not from a schema read at start-up: shops
//! convert their tables while services run. Each such write is counted
//! (`shopchat_storage_degraded_total{column}`) and logged, at most once a minute per column,
//! with the `ALTER TABLE` that ends it; `shopchat check` reports the column too.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;
use sqlx::{MySql, MySqlConnection, Transaction};

use crate::chat::repo;
use crate::chat::validation::{storage_guard, MESSAGE_LIMIT, TITLE_LIMIT};
use crate::error::{mysql_error_number, ApiError};
use crate::ids::UserId;
use crate::sync::LockUnpoisoned;

/// ER_TRUNCATED_WRONG_VALUE_FOR_FIELD: "Incorrect string value" in strict mode.
const INCORRECT_STRING: u16 = 1366;
/// The warning about a column is repeated at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The text columns shopchat writes user input into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TextColumn {
    Message,
    Title,
}

impl TextColumn {
    pub fn table(self) -> &'static str {
        match self {
            TextColumn::Message => "messages",
            TextColumn::Title => "conversations",
        }
    }

    pub fn column(self) -> &'static str {
        match self {
            TextColumn::Message => "message",
            TextColumn::Title => "title",
        }
    }

    /// `table.column`, the metric label.
    pub fn name(self) -> &'static str {
        match self {
            TextColumn::Message => "messages.message",
            TextColumn::Title => "conversations.title",
        }
    }
}

/// A column seen refusing a character: its character set, and when it was last logged.
struct Degrading {
    charset: String,
    warned_at: Option<Instant>,
}

pub struct Storage {
    degrading: Mutex<HashMap<TextColumn, Degrading>>,
    counter: IntCounterVec,
}

impl Storage {
    pub fn new(counter: IntCounterVec) -> Self {
        Storage {
            degrading: Mutex::new(HashMap::new()),
            counter,
        }
    }

    fn degrading(&self) -> std::sync::MutexGuard<'_, HashMap<TextColumn, Degrading>> {
        self.degrading.lock_unpoisoned()
    }

    /// Inserts a message (§5.3 step 3) and returns its id with the text as stored: a
    /// character `messages.message` cannot hold is stored as `?`, like PHP. Other storage
    /// errors are the 422 of the storage guard (D2).
    pub async fn insert_message<'m>(
        &self,
        tx: &mut Transaction<'_, MySql>,
        conversation_id: i64,
        user_id: UserId,
        message: &'m str,
        now: &str,
    ) -> Result<(i64, Cow<'m, str>), ApiError> {
        let guard = |e| storage_guard(e, "message", MESSAGE_LIMIT);
        match repo::insert_message(tx, conversation_id, user_id, message, now).await {
            Err(e) if mysql_error_number(&e) == Some(INCORRECT_STRING) => {
                let stored = self.degrade(tx, TextColumn::Message, message).await?;
                let id = repo::insert_message(tx, conversation_id, user_id, &stored, now)
                    .await
                    .map_err(guard)?;
                Ok((id, Cow::Owned(stored)))
            }
            other => Ok((other.map_err(guard)?, Cow::Borrowed(message))),
        }
    }

    /// Inserts a conversation (§5.5 step 4); a title `conversations.title` cannot hold is
    /// stored with `?`, like PHP.
    pub async fn insert_conversation(
        &self,
        tx: &mut Transaction<'_, MySql>,
        sender_id: UserId,
        receiver_id: UserId,
        title: Option<&str>,
        now: &str,
    ) -> Result<i64, ApiError> {
        let guard = |e| storage_guard(e, "title", TITLE_LIMIT);
        match repo::insert_conversation(tx, sender_id, receiver_id, title, now).await {
            Err(e) if mysql_error_number(&e) == Some(INCORRECT_STRING) => {
                let stored = match title {
                    Some(t) => Some(self.degrade(tx, TextColumn::Title, t).await?),
                    None => None,
                };
                repo::insert_conversation(tx, sender_id, receiver_id, stored.as_deref(), now)
                    .await
                    .map_err(guard)
            }
            Ok(id) => {
                // Stored as given: a column that degraded before was converted meanwhile.
                self.degrading().remove(&TextColumn::Title);
                Ok(id)
            }
            Err(e) => Err(guard(e)),
        }
    }

    /// What the title column stores for `title` when it was seen degrading titles; `None`
    /// when it holds every character (as far as this process knows). Used by the D6 lookup, so
    /// that a repeated question about a product named with an emoji reuses its conversation.
    pub async fn stored_title(
        &self,
        conn: &mut MySqlConnection,
        title: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        let charset = match self.degrading().get(&TextColumn::Title) {
            Some(d) => d.charset.clone(),
            None => return Ok(None),
        };
        convert(conn, title, &charset).await.map(Some)
    }

    /// The value as the column stores it, counted and logged (module docs).
    async fn degrade(
        &self,
        conn: &mut MySqlConnection,
        column: TextColumn,
        value: &str,
    ) -> Result<String, sqlx::Error> {
        let charset = column_charset(conn, column).await?;
        let stored = convert(conn, value, &charset).await?;
        self.counter.with_label_values(&[column.name()]).inc();
        let warn = {
            let mut degrading = self.degrading();
            let d = degrading.entry(column).or_insert(Degrading {
                charset: charset.clone(),
                warned_at: None,
            });
            d.charset = charset.clone();
            let due = d.warned_at.is_none_or(|at| at.elapsed() >= WARN_EVERY);
            if due {
                d.warned_at = Some(Instant::now());
            }
            due
        };
        if warn {
            tracing::warn!(
                column = column.name(),
                charset = %charset,
                "a character the column cannot hold was stored as '?', as PHP stores it \
                 (COMPAT §5.0); `ALTER TABLE {} CONVERT TO CHARACTER SET utf8mb4 COLLATE \
                 utf8mb4_unicode_ci` ends this",
                column.table()
            );
        }
        Ok(stored)
    }
}

/// The column's character set now (the table may have been converted since start-up).
async fn column_charset(
    conn: &mut MySqlConnection,
    column: TextColumn,
) -> Result<String, sqlx::Error> {
    let charset: Option<Option<String>> = sqlx::query_scalar(
        "SELECT CAST(character_set_name AS CHAR) FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = ? AND column_name = ?",
    )
    .bind(column.table())
    .bind(column.column())
    .fetch_optional(&mut *conn)
    .await?;
    // The common case when the schema cannot tell: a three-byte utf8 column.
    Ok(charset
        .flatten()
        .filter(|c| is_charset_name(c))
        .unwrap_or_else(|| "utf8mb3".to_string()))
}

/// MySQL's own conversion into `charset`, read back as utf8mb4: each character the charset
/// cannot hold becomes `?`, exactly what a non-strict write stores.
async fn convert(
    conn: &mut MySqlConnection,
    value: &str,
    charset: &str,
) -> Result<String, sqlx::Error> {
    // A character set name cannot be bound; it is checked to be a plain identifier.
    let charset = if is_charset_name(charset) {
        charset
    } else {
        "utf8mb3"
    };
    sqlx::query_scalar(&format!(
        "SELECT CONVERT(CONVERT(? USING {charset}) USING utf8mb4)"
    ))
    .bind(value)
    .fetch_one(&mut *conn)
    .await
}

fn is_charset_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_charset_names_reach_sql() {
        assert!(is_charset_name("utf8mb3"));
        assert!(is_charset_name("latin1"));
        assert!(!is_charset_name("utf8mb3) USING x; --"));
        assert!(!is_charset_name(""));
        assert!(!is_charset_name("UTF8"));
    }

    #[test]
    fn columns_are_named_as_in_the_metric() {
        for c in [TextColumn::Message, TextColumn::Title] {
            assert_eq!(c.name(), format!("{}.{}", c.table(), c.column()));
        }
    }
}

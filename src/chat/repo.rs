//! The SQL of the chat routes (COMPAT §5). Every statement binds its values;
//! timestamps are read as text and formatted in code (§6.4).

use std::collections::HashMap;
use std::sync::Mutex;

use sqlx::{MySql, MySqlPool};

use crate::chat::sql;
use crate::db::in_list;
use crate::error::ApiError;

/// A conversation's participants. `sender_id`/`receiver_id` never change, so
/// they may be cached without limit (§11.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parties {
    pub sender_id: i64,
    pub receiver_id: i64,
}

impl Parties {
    pub fn includes(&self, user_id: u64) -> bool {
        self.sender_id as u64 == user_id || self.receiver_id as u64 == user_id
    }
}

#[derive(Default)]
pub struct Participants {
    known: Mutex<HashMap<i64, Parties>>,
}

impl Participants {
    /// Forgets every conversation (re-read when needed; called when the process is idle).
    pub fn clear(&self) {
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = HashMap::new();
    }

    pub async fn get(&self, pool: &MySqlPool, id: i64) -> Result<Option<Parties>, sqlx::Error> {
        if let Some(p) = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(Some(*p));
        }
        let row: Option<(i64, i64)> = sqlx::query_as(sql::PARTICIPANTS)
            .bind(id)
            .fetch_optional(pool)
            .await?;
        let parties = row.map(|(sender_id, receiver_id)| Parties {
            sender_id,
            receiver_id,
        });
        if let Some(p) = parties {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            if known.len() >= 200_000 {
                known.clear();
            }
            known.insert(id, p);
        }
        Ok(parties)
    }
}

/// D1 on a path segment: digits only, fits u64, exists, and `user` takes part;
/// otherwise 404 with the segment as received.
pub async fn require_participant(
    participants: &Participants,
    pool: &MySqlPool,
    segment: &str,
    user_id: u64,
) -> Result<(i64, Parties), ApiError> {
    let not_found = || ApiError::ConversationNotFound(segment.to_string());
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_found());
    }
    let id: u64 = segment.parse().map_err(|_| not_found())?;
    let id = i64::try_from(id).map_err(|_| not_found())?;
    match participants.get(pool, id).await? {
        Some(p) if p.includes(user_id) => Ok((id, p)),
        _ => Err(not_found()),
    }
}

/// One conversation of the list with its receiver (NULL when deleted, D4)
/// and the receiver's first shop (lowest `shops.id`; NULL when none).
#[derive(Debug, Clone)]
pub struct ConversationRow {
    pub id: i64,
    pub receiver_id: i64,
    pub title: Option<String>,
    pub sender_viewed: i64,
    pub receiver_viewed: i64,
    pub updated_at: Option<String>,
    pub receiver: Option<UserBrief>,
    pub shop: Option<ShopBrief>,
}

/// A row of [`conversation_page`]: the item with the total.
#[derive(sqlx::FromRow)]
struct CountedConversation {
    total: i64,
    id: i64,
    receiver_id: i64,
    title: Option<String>,
    sender_viewed: i64,
    receiver_viewed: i64,
    updated_at: Option<String>,
    receiver_type: Option<String>,
    receiver_name: Option<String>,
    shop_id: Option<i64>,
    shop_name: Option<String>,
    shop_logo: Option<String>,
}

impl CountedConversation {
    fn into_row(self) -> ConversationRow {
        let receiver = match (self.receiver_type, self.receiver_name) {
            (Some(user_type), Some(name)) => Some(UserBrief {
                user_type,
                name,
                email: None,
            }),
            _ => None,
        };
        ConversationRow {
            id: self.id,
            receiver_id: self.receiver_id,
            title: self.title,
            sender_viewed: self.sender_viewed,
            receiver_viewed: self.receiver_viewed,
            updated_at: self.updated_at,
            receiver,
            shop: self.shop_id.map(|id| ShopBrief {
                id,
                name: self.shop_name,
                logo: self.shop_logo,
            }),
        }
    }
}

pub async fn count_conversations(pool: &MySqlPool, sender_id: u64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sql::COUNT_CONVERSATIONS)
        .bind(sender_id)
        .fetch_one(pool)
        .await
}

/// The total of U's conversations and the page at `offset`, newest first,
/// with receivers and their first shops: one statement instead of a count,
/// the page and a shop lookup (the total is an uncorrelated subquery, run
/// once; the page is read through the `(sender_id, id)` index). An empty
/// page carries no total, so only then is it counted separately ([`paged`]).
pub async fn conversation_page(
    pool: &MySqlPool,
    sender_id: u64,
    offset: i64,
) -> Result<(i64, Vec<ConversationRow>), sqlx::Error> {
    let rows: Vec<CountedConversation> = sqlx::query_as(sql::CONVERSATION_PAGE)
        .bind(sender_id)
        .bind(sender_id)
        .bind(offset)
        .fetch_all(pool)
        .await?;
    let rows = paged(
        rows,
        offset,
        |r| r.total,
        || count_conversations(pool, sender_id),
    )
    .await?;
    Ok((
        rows.0,
        rows.1
            .into_iter()
            .map(CountedConversation::into_row)
            .collect(),
    ))
}

/// The total of a page whose rows carry it: from the first row; 0 for an
/// empty first page; counted by `count` for an empty later page (past the end).
async fn paged<R, F>(
    rows: Vec<R>,
    offset: i64,
    total_of: impl Fn(&R) -> i64,
    count: impl FnOnce() -> F,
) -> Result<(i64, Vec<R>), sqlx::Error>
where
    F: std::future::Future<Output = Result<i64, sqlx::Error>>,
{
    let total = match rows.first() {
        Some(row) => total_of(row),
        None if offset == 0 => 0,
        None => count().await?,
    };
    Ok((total, rows))
}

/// A receiver as the list shows it: `user_type`, `name`.
#[derive(Clone, Debug)]
pub struct UserBrief {
    pub user_type: String,
    pub name: String,
    pub email: Option<String>,
}

/// Batched user lookup (no N+1 on a page).
pub async fn users(pool: &MySqlPool, ids: &[i64]) -> Result<HashMap<i64, UserBrief>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let (list, ids) = in_list(ids);
    let text = format!(
        "SELECT CAST(id AS SIGNED), user_type, name, email FROM users WHERE id IN ({list})"
    );
    let mut q = sqlx::query_as::<MySql, (i64, String, String, Option<String>)>(&text);
    for id in ids {
        q = q.bind(id);
    }
    Ok(q.fetch_all(pool)
        .await?
        .into_iter()
        .map(|(id, user_type, name, email)| {
            (
                id,
                UserBrief {
                    user_type,
                    name,
                    email,
                },
            )
        })
        .collect())
}

#[derive(Clone, Debug)]
pub struct ShopBrief {
    pub id: i64,
    pub name: Option<String>,
    pub logo: Option<String>,
}

/// Each user's first shop (lowest `shops.id`), batched.
pub async fn first_shops(
    pool: &MySqlPool,
    user_ids: &[i64],
) -> Result<HashMap<i64, ShopBrief>, sqlx::Error> {
    if user_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let (list, user_ids) = in_list(user_ids);
    let text =
        format!("SELECT id, user_id, name, logo FROM shops WHERE user_id IN ({list}) ORDER BY id");
    let mut q = sqlx::query_as::<MySql, (i64, i64, Option<String>, Option<String>)>(&text);
    for id in user_ids {
        q = q.bind(id);
    }
    let mut shops = HashMap::new();
    for (id, user_id, name, logo) in q.fetch_all(pool).await? {
        shops.entry(user_id).or_insert(ShopBrief { id, name, logo });
    }
    Ok(shops)
}

#[derive(sqlx::FromRow, Debug, Clone)]
pub struct MessageRow {
    pub id: i64,
    pub user_id: i64,
    pub message: Option<String>,
    pub created_at: Option<String>,
    /// The author's `user_type`; `None` when the author was deleted (D4).
    pub user_type: Option<String>,
}

/// `after` is the `last_message_id` segment, bound as a string so MySQL
/// coerces it exactly like PHP's query (`abc` → 0, `1e3` → 1000; §5.4).
pub async fn count_messages(
    pool: &MySqlPool,
    conversation_id: i64,
    after: Option<&str>,
) -> Result<i64, sqlx::Error> {
    let q = match after {
        None => sqlx::query_scalar(sql::COUNT_MESSAGES).bind(conversation_id),
        Some(a) => sqlx::query_scalar(sql::COUNT_MESSAGES_AFTER)
            .bind(conversation_id)
            .bind(a),
    };
    q.fetch_one(pool).await
}

/// A row of [`message_page`]: the item with the total.
#[derive(sqlx::FromRow)]
struct CountedMessage {
    total: i64,
    #[sqlx(flatten)]
    row: MessageRow,
}

/// The total of a conversation's messages (above the cursor `after`, bound
/// as text like [`count_messages`]) and the page at `offset`, newest first,
/// in one statement — the same shape as [`conversation_page`].
pub async fn message_page(
    pool: &MySqlPool,
    conversation_id: i64,
    after: Option<&str>,
    offset: i64,
) -> Result<(i64, Vec<MessageRow>), sqlx::Error> {
    let text = match after {
        Some(_) => sql::MESSAGE_PAGE_AFTER,
        None => sql::MESSAGE_PAGE,
    };
    let mut q = sqlx::query_as::<_, CountedMessage>(text).bind(conversation_id);
    if let Some(a) = after {
        q = q.bind(a);
    }
    q = q.bind(conversation_id);
    if let Some(a) = after {
        q = q.bind(a);
    }
    let rows = q.bind(offset).fetch_all(pool).await?;
    let (total, rows) = paged(
        rows,
        offset,
        |r| r.total,
        || count_messages(pool, conversation_id, after),
    )
    .await?;
    Ok((total, rows.into_iter().map(|r| r.row).collect()))
}

pub async fn message_by_id<'e, E: sqlx::Executor<'e, Database = MySql>>(
    executor: E,
    id: i64,
) -> Result<Option<MessageRow>, sqlx::Error> {
    sqlx::query_as(sql::MESSAGE_BY_ID)
        .bind(id)
        .fetch_optional(executor)
        .await
}

/// Inserts a message inside the caller's transaction and returns its id.
pub async fn insert_message(
    tx: &mut sqlx::Transaction<'_, MySql>,
    conversation_id: i64,
    user_id: u64,
    message: &str,
    now: &str,
) -> Result<i64, sqlx::Error> {
    let done = sqlx::query("INSERT INTO messages (conversation_id, user_id, message, updated_at, created_at) VALUES (?, ?, ?, ?, ?)")
        .bind(conversation_id)
        .bind(user_id)
        .bind(message)
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(done.last_insert_id() as i64)
}

/// Locks the conversation row for the rest of the transaction, before its
/// message is inserted. Concurrent posts to one conversation then take their
/// message ids in the order they update the flags, so the flags always
/// belong to the author of the newest message (D5). Without it, two
/// transactions can insert in one order and update the flags in the other
/// (the flag `UPDATE` is the only statement that waits for the row).
pub async fn lock_conversation(
    tx: &mut sqlx::Transaction<'_, MySql>,
    conversation_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT id FROM conversations WHERE id = ? FOR UPDATE")
        .bind(conversation_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// D5: the author's own side is "viewed", the other side "unread":
/// the sender posts ⇒ (1, 0), the receiver posts ⇒ (0, 1). `updated_at`
/// moves only when a flag changes (Eloquent's "dirty" semantics).
pub async fn apply_viewed_flags(
    tx: &mut sqlx::Transaction<'_, MySql>,
    conversation_id: i64,
    parties: Parties,
    author: u64,
    now: &str,
) -> Result<(), sqlx::Error> {
    let (s, r) = if parties.sender_id as u64 == author {
        (1, 0)
    } else {
        (0, 1)
    };
    sqlx::query(
        "UPDATE conversations SET sender_viewed = ?, receiver_viewed = ?, updated_at = ? \
         WHERE id = ? AND (sender_viewed <> ? OR receiver_viewed <> ?)",
    )
    .bind(s)
    .bind(r)
    .bind(now)
    .bind(conversation_id)
    .bind(s)
    .bind(r)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

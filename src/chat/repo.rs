//! The SQL of the chat routes (COMPAT §5). Every statement binds its values;
//! timestamps are read as text and formatted in code (§6.4).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::{MySql, MySqlPool};

use crate::cache::Generations;
use crate::chat::sql;
use crate::db::batch::in_list;
use crate::error::ApiError;
use crate::ids::UserId;
use crate::sync::LockUnpoisoned;

/// A conversation's participants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parties {
    pub sender_id: UserId,
    pub receiver_id: UserId,
}

impl Parties {
    pub fn includes(&self, user: UserId) -> bool {
        self.sender_id == user || self.receiver_id == user
    }
}

/// How long a cached participant pair may answer a read without the database (§11.1,
/// 2026-12): the shop deletes conversations (its web chat, the admin panel), and on MySQL 5.7 a
/// deleted id can come back for another pair after a restart.
pub const PARTICIPANTS_TTL: Duration = Duration::from_secs(60);

/// What a statement learned about a conversation it read (§11.1, 2026-12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The row, read by this statement.
    Row(Parties),
    /// No such row any more.
    Gone,
    /// This statement did not read the row (an empty first page of messages).
    Unread,
}

/// The participants cache of §11.1: conversation → (participants, when read from the
/// database). Reads trust an entry for [`PARTICIPANTS_TTL`]; every statement that reads a
/// conversation's messages also reads its row and corrects the entry ([`Participants::saw`]);
/// writes never trust it (they re-read the row under its lock).
pub struct Participants {
    /// Entries not read again within two TTLs go with their generation, without a scan.
    known: Mutex<Generations<i64, (Parties, Instant)>>,
}

impl Default for Participants {
    fn default() -> Self {
        Participants {
            known: Mutex::new(Generations::new(PARTICIPANTS_TTL)),
        }
    }
}

/// Conversations cached per minute at most (memory bound).
const PARTICIPANTS_CAPACITY: usize = 200_000;

impl Participants {
    fn known(&self) -> std::sync::MutexGuard<'_, Generations<i64, (Parties, Instant)>> {
        self.known.lock_unpoisoned()
    }

    /// Conversations held (for `/metrics`).
    pub fn len(&self) -> usize {
        self.known().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every conversation (re-read when needed; called when the process is idle).
    pub fn clear(&self) {
        *self.known() = Generations::new(PARTICIPANTS_TTL);
    }

    /// The participants, from the cache when read within [`PARTICIPANTS_TTL`], else from the
    /// database; `None` when the conversation does not exist.
    pub async fn get(&self, pool: &MySqlPool, id: i64) -> Result<Option<Parties>, sqlx::Error> {
        if let Some(p) = self.fresh(id) {
            return Ok(Some(p));
        }
        self.reread(pool, id).await
    }

    /// The participants as the database has them now (and recorded); `None`: no such row.
    pub async fn reread(&self, pool: &MySqlPool, id: i64) -> Result<Option<Parties>, sqlx::Error> {
        let row: Option<(UserId, UserId)> = sqlx::query_as(sql::PARTICIPANTS)
            .bind(id)
            .fetch_optional(pool)
            .await?;
        let parties = row.map(|(sender_id, receiver_id)| Parties {
            sender_id,
            receiver_id,
        });
        self.saw(id, parties.map_or(Seen::Gone, Seen::Row));
        Ok(parties)
    }

    /// The cached participants if read within [`PARTICIPANTS_TTL`].
    pub fn fresh(&self, id: i64) -> Option<Parties> {
        let now = Instant::now();
        self.known()
            .get(&id, now)
            .filter(|(_, at)| now.saturating_duration_since(*at) < PARTICIPANTS_TTL)
            .map(|(p, _)| *p)
    }

    /// Records what a statement just read about conversation `id`.
    pub fn saw(&self, id: i64, seen: Seen) {
        let now = Instant::now();
        let mut known = self.known();
        match seen {
            Seen::Row(p) => {
                if known.current_len() >= PARTICIPANTS_CAPACITY {
                    known.retire(now);
                }
                known.insert(id, (p, now), now);
            }
            Seen::Gone => known.remove(&id),
            Seen::Unread => {}
        }
    }

    /// D1 after a statement: records what it read, and answers whether `user_id` may see the
    /// conversation — by the row when the statement read it, else by the (fresh) cache entry
    /// the request was admitted with.
    pub fn admits(&self, id: i64, seen: Seen, user_id: UserId) -> bool {
        self.saw(id, seen);
        match seen {
            Seen::Row(p) => p.includes(user_id),
            Seen::Gone => false,
            Seen::Unread => true,
        }
    }
}

/// D1 on a path segment: digits only, fits u64, exists, and `user` takes part;
/// otherwise 404 with the segment as received.
pub async fn require_participant(
    participants: &Participants,
    pool: &MySqlPool,
    segment: &str,
    user_id: UserId,
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
    pub receiver_id: UserId,
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
    receiver_id: UserId,
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

pub async fn count_conversations(pool: &MySqlPool, sender_id: UserId) -> Result<i64, sqlx::Error> {
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
    sender_id: UserId,
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
pub async fn users(
    pool: &MySqlPool,
    ids: &[UserId],
) -> Result<HashMap<UserId, UserBrief>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let (list, ids) = in_list(ids);
    let text = format!(
        "SELECT CAST(id AS SIGNED), user_type, name, email FROM users WHERE id IN ({list})"
    );
    let mut q = sqlx::query_as::<MySql, (UserId, String, String, Option<String>)>(&text);
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
    user_ids: &[UserId],
) -> Result<HashMap<UserId, ShopBrief>, sqlx::Error> {
    if user_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let (list, user_ids) = in_list(user_ids);
    let text =
        format!("SELECT id, user_id, name, logo FROM shops WHERE user_id IN ({list}) ORDER BY id");
    let mut q = sqlx::query_as::<MySql, (i64, UserId, Option<String>, Option<String>)>(&text);
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
    pub user_id: UserId,
    pub message: Option<String>,
    pub created_at: Option<String>,
    /// The author's `user_type`; `None` when the author was deleted (D4).
    pub user_type: Option<String>,
}

/// A row of [`poll_page`]: the participants, with a message (a row of the `UNION ALL`'s second part) or
/// without (the conversation's own row, its message columns NULL).
#[derive(sqlx::FromRow)]
struct PollRow {
    sender_id: UserId,
    receiver_id: UserId,
    id: Option<i64>,
    user_id: Option<UserId>,
    message: Option<String>,
    created_at: Option<String>,
    user_type: Option<String>,
}

/// A poll's first page above `after` (bound as text, §5.4) in one statement, without a count
/// ([`sql::POLL_PAGE`]): what the statement saw of the conversation, the newest messages above
/// the cursor, and whether they are all of them (at most a page: their number is the total).
pub async fn poll_page<'e>(
    db: impl sqlx::MySqlExecutor<'e>,
    conversation_id: i64,
    after: &str,
) -> Result<(Seen, Vec<MessageRow>, bool), sqlx::Error> {
    let rows: Vec<PollRow> = sqlx::query_as(sql::POLL_PAGE)
        .bind(conversation_id)
        .bind(conversation_id)
        .bind(after)
        .fetch_all(db)
        .await?;
    let Some(first) = rows.first() else {
        return Ok((Seen::Gone, Vec::new(), true));
    };
    let seen = Seen::Row(Parties {
        sender_id: first.sender_id,
        receiver_id: first.receiver_id,
    });
    // The conversation's own row carries no message; SQL leaves the order of a UNION's
    // parts open, so the messages are put newest first here.
    let mut messages: Vec<MessageRow> = rows
        .into_iter()
        .filter_map(|r| {
            Some(MessageRow {
                id: r.id?,
                user_id: r.user_id?,
                message: r.message,
                created_at: r.created_at,
                user_type: r.user_type,
            })
        })
        .collect();
    messages.sort_unstable_by_key(|m| std::cmp::Reverse(m.id));
    let complete = messages.len() < sql::POLL_ROWS;
    messages.truncate(sql::POLL_ROWS - 1);
    Ok((seen, messages, complete))
}

/// A row of [`message_rows`]: a message with the participants its statement read.
#[derive(sqlx::FromRow)]
struct MessageWithParties {
    sender_id: UserId,
    receiver_id: UserId,
    #[sqlx(flatten)]
    row: MessageRow,
}

/// The first page of a conversation's messages without their total ([`sql::MESSAGE_ROWS`]), for
/// a caller that knows the total; [`Seen::Unread`] when there is no message.
pub async fn message_rows(
    pool: &MySqlPool,
    conversation_id: i64,
) -> Result<(Seen, Vec<MessageRow>), sqlx::Error> {
    let rows: Vec<MessageWithParties> = sqlx::query_as(sql::MESSAGE_ROWS)
        .bind(conversation_id)
        .fetch_all(pool)
        .await?;
    let seen = rows.first().map_or(Seen::Unread, |r| {
        Seen::Row(Parties {
            sender_id: r.sender_id,
            receiver_id: r.receiver_id,
        })
    });
    Ok((seen, rows.into_iter().map(|r| r.row).collect()))
}

/// A row of the count statements: the conversation's participants and the total.
#[derive(sqlx::FromRow)]
struct CountRow {
    sender_id: UserId,
    receiver_id: UserId,
    total: i64,
}

/// The number of messages of a conversation (above the cursor `after` when given), read with
/// the conversation's row. `after` is the `last_message_id` segment, bound as a string so MySQL
/// coerces it exactly like PHP's query (`abc` → 0, `1e3` → 1000; §5.4).
pub async fn count_messages(
    pool: &MySqlPool,
    conversation_id: i64,
    after: Option<&str>,
) -> Result<(Seen, i64), sqlx::Error> {
    let q = match after {
        None => sqlx::query_as(sql::COUNT_MESSAGES).bind(conversation_id),
        Some(a) => sqlx::query_as(sql::COUNT_MESSAGES_AFTER)
            .bind(conversation_id)
            .bind(a),
    };
    let row: Option<CountRow> = q.bind(conversation_id).fetch_optional(pool).await?;
    Ok(match row {
        Some(r) => (
            Seen::Row(Parties {
                sender_id: r.sender_id,
                receiver_id: r.receiver_id,
            }),
            r.total,
        ),
        None => (Seen::Gone, 0),
    })
}

/// A row of [`message_page`]: the item with the total and the conversation's participants.
#[derive(sqlx::FromRow)]
struct CountedMessage {
    total: i64,
    sender_id: UserId,
    receiver_id: UserId,
    #[sqlx(flatten)]
    row: MessageRow,
}

/// The total of a conversation's messages (above the cursor `after`, bound as text like
/// [`count_messages`]) and the page at `offset`, newest first, in one statement — the same
/// shape as [`conversation_page`] — with what the statement saw of the conversation's row.
pub async fn message_page(
    pool: &MySqlPool,
    conversation_id: i64,
    after: Option<&str>,
    offset: i64,
) -> Result<(Seen, i64, Vec<MessageRow>), sqlx::Error> {
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
    Ok(match rows.first() {
        Some(first) => (
            Seen::Row(Parties {
                sender_id: first.sender_id,
                receiver_id: first.receiver_id,
            }),
            first.total,
            rows.into_iter().map(|r| r.row).collect(),
        ),
        // An empty first page: no message (the conversation row was not read).
        None if offset == 0 => (Seen::Unread, 0, Vec::new()),
        // Past the end: the total (and the row) from the count statement.
        None => {
            let (seen, total) = count_messages(pool, conversation_id, after).await?;
            (seen, total, Vec::new())
        }
    })
}

/// Inserts a message inside the caller's transaction and returns its id.
pub async fn insert_message(
    tx: &mut sqlx::Transaction<'_, MySql>,
    conversation_id: i64,
    user_id: UserId,
    message: &str,
    now: &str,
) -> Result<i64, sqlx::Error> {
    let done = sqlx::query(sql::INSERT_MESSAGE)
        .bind(conversation_id)
        .bind(user_id)
        .bind(message)
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(done.last_insert_id() as i64)
}

/// Inserts a conversation inside the caller's transaction (§5.5 step 4) and returns its id;
/// the viewed flags keep their column defaults (1/0).
pub async fn insert_conversation(
    tx: &mut sqlx::Transaction<'_, MySql>,
    sender_id: UserId,
    receiver_id: UserId,
    title: Option<&str>,
    now: &str,
) -> Result<i64, sqlx::Error> {
    let done = sqlx::query(sql::INSERT_CONVERSATION)
        .bind(sender_id)
        .bind(receiver_id)
        .bind(title)
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(done.last_insert_id() as i64)
}

/// The owner of a product (`None`: no such product).
pub async fn product_owner(
    pool: &MySqlPool,
    product_id: i64,
) -> Result<Option<UserId>, sqlx::Error> {
    sqlx::query_scalar(sql::PRODUCT_OWNER)
        .bind(product_id)
        .fetch_optional(pool)
        .await
}

/// When the pair's `cap`-th newest conversation was created (as stored, a wall-clock time in
/// `APP_TIMEZONE`): the new-conversation cap looks no further (security review M3).
pub async fn nth_newest_created(
    tx: &mut sqlx::Transaction<'_, MySql>,
    sender_id: UserId,
    receiver_id: UserId,
    cap: u32,
) -> Result<Option<String>, sqlx::Error> {
    let created: Option<Option<String>> = sqlx::query_scalar(
        "SELECT CAST(created_at AS CHAR) FROM conversations \
         WHERE sender_id = ? AND receiver_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?",
    )
    .bind(sender_id)
    .bind(receiver_id)
    .bind(u64::from(cap.max(1)) - 1)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(created.flatten())
}

/// D6 (§5.5 step 4): the newest conversation of the pair whose stored title equals `title`
/// exactly (binary, compared in code: the column collation ignores case, and the SQL match pads
/// with spaces) — or, on a column that stores some characters as `?`, equals `stored_title`,
/// what it stores for that title (§5.0). A missing title matches only NULL titles.
pub async fn reusable_conversation(
    tx: &mut sqlx::Transaction<'_, MySql>,
    sender_id: UserId,
    receiver_id: UserId,
    title: Option<&str>,
    stored_title: Option<&str>,
) -> Result<Option<i64>, sqlx::Error> {
    let candidates: Vec<(i64, Option<String>)> = match title {
        Some(t) => {
            sqlx::query_as(sql::REUSE_TITLED)
                .bind(sender_id)
                .bind(receiver_id)
                .bind(t)
                .bind(stored_title.unwrap_or(t))
                .fetch_all(&mut **tx)
                .await?
        }
        None => {
            sqlx::query_as(sql::REUSE_UNTITLED)
                .bind(sender_id)
                .bind(receiver_id)
                .fetch_all(&mut **tx)
                .await?
        }
    };
    Ok(candidates
        .into_iter()
        .find(|(_, stored)| {
            stored.as_deref() == title || (stored.is_some() && stored.as_deref() == stored_title)
        })
        .map(|(id, _)| id))
}

/// What a failed `COMMIT` did (security review L2): a connection lost while committing may have
/// committed on the server all the same.
#[derive(Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed,
    RolledBack,
    /// The database could not be asked.
    Unknown,
}

/// Commits `tx`; after a failure that leaves the outcome open (the connection was lost), asks
/// the database on another connection whether `message_id` of `conversation_id` is there.
pub async fn commit(
    tx: sqlx::Transaction<'_, MySql>,
    pool: &MySqlPool,
    message_id: i64,
    conversation_id: i64,
) -> Result<(), (sqlx::Error, CommitOutcome)> {
    let Err(e) = tx.commit().await else {
        return Ok(());
    };
    if !crate::error::is_unavailable(&e) {
        return Err((e, CommitOutcome::RolledBack));
    }
    let asked = tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM messages WHERE id = ? AND conversation_id = ?",
        )
        .bind(message_id)
        .bind(conversation_id)
        .fetch_one(pool),
    )
    .await;
    match asked {
        Ok(Ok(n)) if n > 0 => {
            tracing::warn!(error = %e, message_id, "COMMIT failed on the way back, but the message is stored");
            Ok(())
        }
        Ok(Ok(_)) => Err((e, CommitOutcome::RolledBack)),
        _ => Err((e, CommitOutcome::Unknown)),
    }
}

/// The conversation row as a write re-read it under its lock (§11.1, 2026-12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Locked {
    pub parties: Parties,
    /// Whether the receiver had read the conversation before this write (§5.5 step 4).
    pub receiver_viewed: bool,
}

/// Locks the conversation row for the rest of the transaction and re-reads it; `None` when
/// the shop deleted it. A write never trusts the participants cache: a row gone means 404 and
/// nothing written, changed participants mean the row decides (§11.1, 2026-12).
///
/// The lock comes before the message is inserted. Concurrent posts to one conversation then
/// take their message ids in the order they update the flags, so the flags always belong to
/// the author of the newest message (D5). Without it, two transactions can insert in one order
/// and update the flags in the other (the flag `UPDATE` is the only statement that waits for
/// the row).
pub async fn lock_conversation(
    tx: &mut sqlx::Transaction<'_, MySql>,
    conversation_id: i64,
) -> Result<Option<Locked>, sqlx::Error> {
    let row: Option<(UserId, UserId, i64)> = sqlx::query_as(sql::LOCK_CONVERSATION)
        .bind(conversation_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.map(|(sender_id, receiver_id, receiver_viewed)| Locked {
        parties: Parties {
            sender_id,
            receiver_id,
        },
        receiver_viewed: receiver_viewed != 0,
    }))
}

/// insert-message's claim on the conversation, the first statement of its transaction
/// (§11.1, 2026-12; D1, D5): locks the row and sets the viewed flags for `author`, in one round
/// trip. `false`: the row is gone or `author` is no longer one of its parties — nothing was
/// changed, and the caller rolls back. A write never trusts the participants cache.
///
/// The lock comes before the message is inserted, as in [`lock_conversation`]: concurrent
/// posts take their message ids in the order they set the flags, so the flags belong to the
/// author of the newest message.
pub async fn claim_for_post(
    tx: &mut sqlx::Transaction<'_, MySql>,
    conversation_id: i64,
    author: UserId,
    now: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(sql::CLAIM_FOR_POST)
        .bind(author)
        .bind(author)
        .bind(now)
        .bind(author)
        .bind(author)
        .bind(conversation_id)
        .bind(author)
        .bind(author)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// D5 for a reused conversation (§5.5 step 4): its sender `author` posts, so (1, 0), and the
/// conversation always rises to the top of the web inboxes.
pub async fn apply_viewed_flags(
    tx: &mut sqlx::Transaction<'_, MySql>,
    conversation_id: i64,
    parties: Parties,
    author: UserId,
    now: &str,
) -> Result<(), sqlx::Error> {
    let (s, r) = if parties.sender_id == author {
        (1, 0)
    } else {
        (0, 1)
    };
    sqlx::query(sql::VIEWED_FLAGS)
        .bind(s)
        .bind(r)
        .bind(now)
        .bind(conversation_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Parties = Parties {
        sender_id: UserId(5),
        receiver_id: UserId(2),
    };

    #[test]
    fn cached_participants_serve_reads_for_a_minute_at_most() {
        let cache = Participants::default();
        cache.saw(1, Seen::Row(P));
        assert_eq!(cache.fresh(1), Some(P));
        let Some(long_ago) = Instant::now().checked_sub(PARTICIPANTS_TTL) else {
            return; // a machine up for less than a minute cannot express the old entry
        };
        cache.known().insert(1, (P, long_ago), Instant::now());
        assert_eq!(
            cache.fresh(1),
            None,
            "read again after {PARTICIPANTS_TTL:?}"
        );
    }

    #[test]
    fn what_a_statement_saw_decides() {
        let cache = Participants::default();
        cache.saw(1, Seen::Row(P));
        assert!(
            cache.admits(1, Seen::Unread, UserId(5)),
            "the fresh entry admitted it"
        );
        assert!(!cache.admits(1, Seen::Gone, UserId(5)));
        assert_eq!(cache.fresh(1), None, "a gone row drops the entry");
        let other = Parties {
            sender_id: UserId(6),
            receiver_id: UserId(3),
        };
        assert!(
            !cache.admits(1, Seen::Row(other), UserId(5)),
            "the id changed hands"
        );
        assert_eq!(cache.fresh(1), Some(other));
        assert!(cache.admits(1, Seen::Row(other), UserId(3)));
    }
}

//! The SQL text of the chat routes (COMPAT §5), in one place: `repo` sends
//! these statements, and the benchmark's `dbceiling` (bench/tools) compiles
//! this same file as a module of its own (`#[path]`), so that the database's
//! own ceiling is measured with exactly the same text. Plain constants and a
//! macro only: no imports.

/// A message item's columns (§6.2); the author's `user_type` is NULL when the author was
/// deleted (D4).
macro_rules! message_columns {
    () => {
        "m.id, m.user_id, m.message, CAST(m.created_at AS CHAR) AS created_at, u.user_type"
    };
}

/// A page of messages, newest first (§5.2), each row carrying the total of §4 (an uncorrelated
/// subquery, run once) and the conversation's participants as the statement read them: a
/// conversation the shop deleted, or whose id now belongs to another pair, never shows its
/// messages to the old participants (§11.1, 2026-12). `conversations` is read by primary key
/// (a const table: no sort, the page still comes straight off the `(conversation_id, id)`
/// index). Binds: conversation, conversation, offset.
pub const MESSAGE_PAGE: &str = concat!(
    "SELECT (SELECT COUNT(*) FROM messages WHERE conversation_id = ?) AS total, ",
    "c.sender_id, c.receiver_id, ",
    message_columns!(),
    " FROM messages m JOIN conversations c ON c.id = m.conversation_id \
     LEFT JOIN users u ON u.id = m.user_id \
     WHERE m.conversation_id = ? ORDER BY m.id DESC LIMIT 10 OFFSET ?"
);

/// [`MESSAGE_PAGE`] above a cursor, bound as text so that MySQL coerces it like PHP's query
/// (§5.4). Binds: conversation, cursor, conversation, cursor, offset.
pub const MESSAGE_PAGE_AFTER: &str = concat!(
    "SELECT (SELECT COUNT(*) FROM messages WHERE conversation_id = ? AND id > ?) AS total, ",
    "c.sender_id, c.receiver_id, ",
    message_columns!(),
    " FROM messages m JOIN conversations c ON c.id = m.conversation_id \
     LEFT JOIN users u ON u.id = m.user_id \
     WHERE m.conversation_id = ? AND m.id > ? ORDER BY m.id DESC LIMIT 10 OFFSET ?"
);

/// A poll's first page above a cursor (§5.4), without counting: the conversation's row (all
/// message columns NULL), then at most [`POLL_ROWS`] messages above the cursor (bound as text,
/// like PHP), newest first, each with the participants its part read. No row: the conversation
/// is gone; only the conversation's row: nothing new; up to ten messages: they are the page and
/// their number is the total; eleven: the total needs [`MESSAGE_PAGE_AFTER`].
///
/// Two parts of a `UNION ALL` rather than the conversation `LEFT JOIN`ed with its messages:
/// sorted across that outer join, MariaDB read every message above the cursor into a
/// temporary table — on disk, the message text being TEXT — to keep eleven. Each part here
/// comes straight off an index (the `(conversation_id, id)` one read backwards, or the primary
/// key without it). Binds: conversation, conversation, cursor.
pub const POLL_PAGE: &str = concat!(
    "(SELECT c.sender_id, c.receiver_id, NULL AS id, NULL AS user_id, NULL AS message, \
     NULL AS created_at, NULL AS user_type FROM conversations c WHERE c.id = ?) \
     UNION ALL (SELECT c.sender_id, c.receiver_id, ",
    message_columns!(),
    " FROM messages m JOIN conversations c ON c.id = m.conversation_id \
     LEFT JOIN users u ON u.id = m.user_id \
     WHERE m.conversation_id = ? AND m.id > ? ORDER BY m.id DESC LIMIT 11)"
);

/// One more than a page: a poll that finds this many messages counts them.
pub const POLL_ROWS: usize = 11;

/// [`MESSAGE_PAGE`] without the total, for a first page whose total the process knows (the
/// watcher's count, checked against the page's newest id). Binds: conversation.
pub const MESSAGE_ROWS: &str = concat!(
    "SELECT c.sender_id, c.receiver_id, ",
    message_columns!(),
    " FROM messages m JOIN conversations c ON c.id = m.conversation_id \
     LEFT JOIN users u ON u.id = m.user_id \
     WHERE m.conversation_id = ? ORDER BY m.id DESC LIMIT 10"
);

/// The conversation's participants and its number of messages: no row when the conversation
/// is gone (§11.1, 2026-12). Binds: conversation, conversation.
pub const COUNT_MESSAGES: &str = "SELECT c.sender_id, c.receiver_id, \
     (SELECT COUNT(*) FROM messages WHERE conversation_id = ?) AS total \
     FROM conversations c WHERE c.id = ?";

/// [`COUNT_MESSAGES`] above a cursor (bound as text, §5.4): the poll's statement when something
/// may be new. Binds: conversation, cursor, conversation.
pub const COUNT_MESSAGES_AFTER: &str = "SELECT c.sender_id, c.receiver_id, \
     (SELECT COUNT(*) FROM messages WHERE conversation_id = ? AND id > ?) AS total \
     FROM conversations c WHERE c.id = ?";

/// A page of the conversations U started, newest first (§5.1), with the receiver (NULL when
/// deleted, D4) and the receiver's first shop (lowest `shops.id`: the shop face of §6.1), each
/// row carrying the total of §4 (an empty first page means 0; an empty later page is counted
/// with [`COUNT_CONVERSATIONS`]). The page is read through the `(sender_id, id)` index before
/// any join. Binds: sender, sender, offset.
pub const CONVERSATION_PAGE: &str = "SELECT \
     (SELECT COUNT(*) FROM conversations WHERE sender_id = ?) AS total, \
     c.id, c.receiver_id, c.title, CAST(c.sender_viewed AS SIGNED) AS sender_viewed, \
     CAST(c.receiver_viewed AS SIGNED) AS receiver_viewed, \
     CAST(c.updated_at AS CHAR) AS updated_at, \
     u.user_type AS receiver_type, u.name AS receiver_name, \
     s.id AS shop_id, s.name AS shop_name, s.logo AS shop_logo \
     FROM conversations c \
     LEFT JOIN users u ON u.id = c.receiver_id \
     LEFT JOIN shops s ON s.id = (SELECT MIN(f.id) FROM shops f WHERE f.user_id = c.receiver_id) \
     WHERE c.sender_id = ? ORDER BY c.id DESC LIMIT 10 OFFSET ?";

pub const COUNT_CONVERSATIONS: &str = "SELECT COUNT(*) FROM conversations WHERE sender_id = ?";

/// A conversation's two parties (cached for reads at most 60 s, §11.1).
pub const PARTICIPANTS: &str = "SELECT sender_id, receiver_id FROM conversations WHERE id = ?";

/// The conversation row a write re-reads under its lock, in its transaction (§11.1, 2026-12):
/// gone → 404 and nothing written; otherwise its participants decide, and `receiver_viewed`
/// tells whether a reused conversation e-mails its receiver (§5.5 step 4).
pub const LOCK_CONVERSATION: &str = "SELECT sender_id, receiver_id, \
     CAST(receiver_viewed AS SIGNED) FROM conversations WHERE id = ? FOR UPDATE";

/// D6 (§5.5 step 4): the pair's conversations whose title may equal the input, newest first.
/// Narrowed in SQL under a binary collation, which pads with spaces, so this is a tight
/// superset of the exact matches (a stored title with trailing spaces matches too); the exact
/// comparison is made in code. Bounded: a pair with thousands of conversations never loads
/// them all inside the lock. Two titles are bound: the input, and what a column that cannot
/// hold all of its characters stores for it (§5.0; the input again otherwise).
/// Binds: sender, receiver, title, stored title.
pub const REUSE_TITLED: &str = "SELECT id, title FROM conversations \
     WHERE sender_id = ? AND receiver_id = ? \
     AND CONVERT(title USING utf8mb4) COLLATE utf8mb4_bin IN (?, ?) \
     ORDER BY id DESC LIMIT 20";

/// D6 for a missing title: it matches only NULL titles. Binds: sender, receiver.
pub const REUSE_UNTITLED: &str = "SELECT id, title FROM conversations \
     WHERE sender_id = ? AND receiver_id = ? AND title IS NULL ORDER BY id DESC LIMIT 1";

/// A product's owner, the receiver of a new conversation (§5.5 step 2).
pub const PRODUCT_OWNER: &str = "SELECT user_id FROM products WHERE id = ?";

/// Binds: conversation, author, message, updated_at, created_at (§5.3 step 3).
pub const INSERT_MESSAGE: &str = "INSERT INTO messages \
     (conversation_id, user_id, message, updated_at, created_at) VALUES (?, ?, ?, ?, ?)";

/// Binds: sender, receiver, title, updated_at, created_at; the viewed flags keep their column
/// defaults (§5.5 step 4).
pub const INSERT_CONVERSATION: &str = "INSERT INTO conversations \
     (sender_id, receiver_id, title, updated_at, created_at) VALUES (?, ?, ?, ?, ?)";

/// insert-message's first statement in its transaction (§11.1, 2026-12; D1, D5): it locks the
/// conversation row, matches only while the author is still one of its parties, and sets the
/// flags — the author's side "viewed", the other "unread" — with `updated_at` moved only when
/// a flag changes (Eloquent's "dirty" save). `updated_at` comes first: it compares the flags
/// before they are assigned, under MariaDB's left-to-right and its simultaneous assignment
/// alike. The client reports matched rows (sqlx sets CLIENT_FOUND_ROWS), so an unchanged row
/// still counts as 1. Binds: author ×2, now, author ×2, id, author ×2.
pub const CLAIM_FOR_POST: &str = "UPDATE conversations SET \
     updated_at = IF(sender_viewed = IF(sender_id = ?, 1, 0) \
                     AND receiver_viewed = IF(sender_id = ?, 0, 1), updated_at, ?), \
     sender_viewed = IF(sender_id = ?, 1, 0), \
     receiver_viewed = IF(sender_id = ?, 0, 1) \
     WHERE id = ? AND (sender_id = ? OR receiver_id = ?)";

/// D5 for a reused conversation: it always rises to the top (§5.5 step 4).
/// Binds: sender_viewed, receiver_viewed, now, id.
pub const VIEWED_FLAGS: &str = "UPDATE conversations \
     SET sender_viewed = ?, receiver_viewed = ?, updated_at = ? WHERE id = ?";

/// The message watcher's scan (src/chat/watch.rs): rows above the rescan window's start, in id
/// order, a batch at a time. Also run by bench/tools' watcherload, which prices it for many
/// instances (docs/scaling.md).
pub const WATCH_SCAN: &str =
    "SELECT id, conversation_id FROM messages WHERE id > ? ORDER BY id LIMIT ?";

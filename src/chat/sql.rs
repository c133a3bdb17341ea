//! The SQL text of the chat reads (COMPAT §5), in one place: `repo` sends
//! these statements, and the benchmark's `dbceiling` (bench/tools) compiles
//! this same file as a module of its own (`#[path]`), so that the database's
//! own ceiling is measured with exactly the same text. Plain constants and a
//! macro only: no imports.

/// A message item's columns and joins (§6.2); the author's `user_type` is NULL when the
/// author was deleted (D4).
macro_rules! message_from {
    () => {
        "m.id, m.user_id, m.message, CAST(m.created_at AS CHAR) AS created_at, u.user_type \
         FROM messages m LEFT JOIN users u ON u.id = m.user_id"
    };
}

/// A page of messages, newest first (§5.2), each row carrying the total of §4 (an uncorrelated
/// subquery, run once). Binds: conversation, conversation, offset.
pub const MESSAGE_PAGE: &str = concat!(
    "SELECT (SELECT COUNT(*) FROM messages WHERE conversation_id = ?) AS total, ",
    message_from!(),
    " WHERE m.conversation_id = ? ORDER BY m.id DESC LIMIT 10 OFFSET ?"
);

/// [`MESSAGE_PAGE`] above a cursor, bound as text so that MySQL coerces it like PHP's query
/// (§5.4). Binds: conversation, cursor, conversation, cursor, offset.
pub const MESSAGE_PAGE_AFTER: &str = concat!(
    "SELECT (SELECT COUNT(*) FROM messages WHERE conversation_id = ? AND id > ?) AS total, ",
    message_from!(),
    " WHERE m.conversation_id = ? AND m.id > ? ORDER BY m.id DESC LIMIT 10 OFFSET ?"
);

pub const MESSAGE_BY_ID: &str = concat!("SELECT ", message_from!(), " WHERE m.id = ?");

pub const COUNT_MESSAGES: &str = "SELECT COUNT(*) FROM messages WHERE conversation_id = ?";

pub const COUNT_MESSAGES_AFTER: &str =
    "SELECT COUNT(*) FROM messages WHERE conversation_id = ? AND id > ?";

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

/// A conversation's two parties (immutable: cached without limit, §11.1).
pub const PARTICIPANTS: &str = "SELECT sender_id, receiver_id FROM conversations WHERE id = ?";

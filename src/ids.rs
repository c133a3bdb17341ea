//! The ids that cross the code, typed so that whose id a number is stays visible.
//!
//! The shop's tables disagree on the width of a user id: `users.id`, `conversations.sender_id`
//! / `receiver_id`, `messages.user_id` and `products.user_id` are signed `INT`, while Sanctum's
//! `personal_access_tokens.tokenable_id` is `BIGINT UNSIGNED` (docs/spec/SCHEMA.md). A
//! [`UserId`] holds the signed value the chat tables store; the one conversion from a token's
//! unsigned id is [`UserId::from_tokenable`], at authentication.

use std::fmt;

use serde::Serialize;

/// A user of the shop (`users.id`): the authenticated user, a conversation's sender or receiver,
/// a message's author, a product's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::Type, Serialize)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct UserId(pub i64);

impl UserId {
    /// The user a token belongs to. `None` for an id no `users` row can have (above the signed
    /// range): such a token authenticates nobody.
    pub fn from_tokenable(tokenable_id: u64) -> Option<UserId> {
        i64::try_from(tokenable_id).ok().map(UserId)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_beyond_the_signed_range_are_nobody() {
        assert_eq!(UserId::from_tokenable(5), Some(UserId(5)));
        assert_eq!(
            UserId::from_tokenable(i64::MAX as u64),
            Some(UserId(i64::MAX))
        );
        assert_eq!(UserId::from_tokenable(1 << 63), None);
        assert_eq!(UserId(42).to_string(), "42");
    }
}

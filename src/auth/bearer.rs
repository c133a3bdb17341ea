//! Extraction of a Sanctum token from the `Authorization` header (COMPAT §2, parsing part only).
//!
//! The header is handled as raw bytes: PHP strings are byte strings, so a secret with invalid
//! UTF-8 is simply hashed and looked up (and fails there), never rejected as malformed text.

/// What the header carries, before any database lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BearerToken {
    /// `<id>|<secret>`: look the row up by primary key, then compare `sha256(secret)`.
    IdSecret { id: u64, secret: Vec<u8> },
    /// No `|`: look the row up by `token = sha256(whole value)`.
    Plain(Vec<u8>),
}

/// Laravel's `Request::bearerToken()` followed by Sanctum's `isValidBearerToken()` (COMPAT §2).
///
/// - The token starts after the **last** `Bearer ` (case-sensitive, `strrpos`), so
///   `Token x, Bearer 5|abc` works and `bearer 5|abc` does not.
/// - It ends before the first `,` (`Bearer 5|abc, Basic x` → `5|abc`). Nothing is trimmed:
///   `Bearer  5|abc` gives ` 5|abc`, whose id part is not all digits.
/// - With a `|`, the part before the first `|` must be `^[0-9]+$` (`ctype_digit`) and fit u64
///   (`007` = 7; too large → fail, as no row could have that id), and the secret must not be
///   empty or `"0"` (PHP `empty()`).
/// - Without `|`, the value must not be empty or `"0"`.
///
/// `None` means authentication fails without touching the database.
pub fn parse_authorization(h: &[u8]) -> Option<BearerToken> {
    const PREFIX: &[u8] = b"Bearer ";
    let start = h.windows(PREFIX.len()).rposition(|w| w == PREFIX)? + PREFIX.len();
    let rest = &h[start..];
    let token = match rest.iter().position(|&b| b == b',') {
        Some(comma) => &rest[..comma],
        None => rest,
    };
    match token.iter().position(|&b| b == b'|') {
        Some(bar) => {
            let (id_part, secret) = (&token[..bar], &token[bar + 1..]);
            let id = parse_u64_digits(id_part)?;
            if php_empty(secret) {
                return None;
            }
            Some(BearerToken::IdSecret {
                id,
                secret: secret.to_vec(),
            })
        }
        None if php_empty(token) => None,
        None => Some(BearerToken::Plain(token.to_vec())),
    }
}

/// PHP `empty()` on a string: true for `""` and `"0"` only.
fn php_empty(s: &[u8]) -> bool {
    s.is_empty() || s == b"0"
}

/// `^[0-9]+$` as u64; leading zeros allowed (`007` = 7), overflow → `None`.
fn parse_u64_digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_secret(id: u64, secret: &[u8]) -> Option<BearerToken> {
        Some(BearerToken::IdSecret {
            id,
            secret: secret.to_vec(),
        })
    }

    #[test]
    fn examples_of_2() {
        assert_eq!(parse_authorization(b"Bearer 5|abc"), id_secret(5, b"abc"));
        assert_eq!(
            parse_authorization(b"Bearer 5|abc, Basic x"),
            id_secret(5, b"abc")
        );
        assert_eq!(
            parse_authorization(b"Token x, Bearer 5|abc"),
            id_secret(5, b"abc")
        );
        assert_eq!(parse_authorization(b"bearer 5|abc"), None);
        assert_eq!(parse_authorization(b"Bearer  5|abc"), None);
        assert_eq!(parse_authorization(b"Bearer abc|secret"), None);
    }

    #[test]
    fn id_and_secret_rules() {
        assert_eq!(parse_authorization(b"Bearer 007|s"), id_secret(7, b"s"));
        assert_eq!(parse_authorization(b"Bearer 5|"), None);
        assert_eq!(parse_authorization(b"Bearer 5|0"), None);
        assert_eq!(parse_authorization(b"Bearer 5|00"), id_secret(5, b"00"));
        assert_eq!(parse_authorization(b"Bearer |abc"), None);
        assert_eq!(parse_authorization(b"Bearer -5|abc"), None);
        assert_eq!(parse_authorization(b"Bearer 5 |abc"), None);
        // Only the first `|` splits; the secret keeps later ones and trailing spaces.
        assert_eq!(parse_authorization(b"Bearer 5|a|b "), id_secret(5, b"a|b "));
        assert_eq!(
            parse_authorization(b"Bearer 18446744073709551615|x"),
            id_secret(u64::MAX, b"x")
        );
        assert_eq!(parse_authorization(b"Bearer 18446744073709551616|x"), None);
        assert_eq!(
            parse_authorization(b"Bearer 99999999999999999999999999|x"),
            None
        );
    }

    #[test]
    fn plain_tokens() {
        assert_eq!(
            parse_authorization(b"Bearer abcdef"),
            Some(BearerToken::Plain(b"abcdef".to_vec()))
        );
        assert_eq!(parse_authorization(b"Bearer "), None);
        assert_eq!(parse_authorization(b"Bearer 0"), None);
        assert_eq!(parse_authorization(b"Bearer ,x"), None);
        assert_eq!(
            parse_authorization(b"Bearer  x"),
            Some(BearerToken::Plain(b" x".to_vec()))
        );
    }

    #[test]
    fn header_shapes() {
        assert_eq!(parse_authorization(b""), None);
        assert_eq!(parse_authorization(b"Bearer"), None);
        assert_eq!(parse_authorization(b"Basic dXNlcjpwYXNz"), None);
        // The last `Bearer ` wins even inside another token.
        assert_eq!(
            parse_authorization(b"Bearer 1|a Bearer 2|b"),
            id_secret(2, b"b")
        );
        assert_eq!(parse_authorization(b"xBearer 3|c"), id_secret(3, b"c"));
        // Invalid UTF-8 in the secret is passed through as bytes.
        assert_eq!(
            parse_authorization(b"Bearer 5|\xff\xfe"),
            id_secret(5, b"\xff\xfe")
        );
        assert_eq!(
            parse_authorization(b"Bearer \xc3("),
            Some(BearerToken::Plain(b"\xc3(".to_vec()))
        );
    }
}

//! String primitives shared by input normalisation, translation and HTML output.

/// Code points Laravel 10's `TrimStrings` middleware strips from both ends of every input string
/// (COMPAT §5.0). This is wider than PHP's `trim()` and than Rust's ASCII trimming, and not equal to
/// `char::is_whitespace` either (U+180E and U+200B/U+FEFF are included, U+001C–U+001F are not), so
/// the list is spelled out exactly.
fn is_laravel_space(c: char) -> bool {
    matches!(
        c,
        '\u{0009}'..='\u{000D}'
            | '\u{0020}'
            | '\u{0085}'
            | '\u{00A0}'
            | '\u{1680}'
            | '\u{180E}'
            | '\u{2000}'..='\u{200B}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{3000}'
            | '\u{FEFF}'
    )
}

/// Trims the COMPAT §5.0 code point list from both ends (Laravel's `TrimStrings`).
///
/// Callers turn a resulting `""` into `null` themselves (§5.0 normalisation).
pub fn laravel_trim(s: &str) -> &str {
    s.trim_matches(is_laravel_space)
}

/// PHP's `trim()` with its default character list `" \t\n\r\0\x0B"` (COMPAT §7.1: every
/// translation result goes through it). ASCII only: a non-breaking space survives.
pub fn php_trim(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\0' | '\x0B'))
}

/// The translation key of a text (COMPAT §7.1): ASCII-lower-case, `" "` → `"_"`, then delete every
/// character outside `[A-Za-z0-9_]`.
///
/// Only ASCII letters are lower-cased (PHP 8 `strtolower` is locale-independent ASCII); any other
/// character is deleted anyway, so the order of the three steps does not change the result.
/// Example: `Hi! You recieved a message from ` → `hi_you_recieved_a_message_from_` (the trailing
/// space becomes a trailing `_`).
pub fn translation_key(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            ' ' => Some('_'),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            'a'..='z' | '0'..='9' | '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// PHP `htmlspecialchars($s, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8', double_encode: true)`, as used by
/// Blade's `{{ }}` and Symfony's redirect page (COMPAT §1.2 step 3, §8.2).
///
/// Existing entities are escaped again (`&amp;` → `&amp;amp;`) because double encoding is on, and
/// `'` becomes the numeric `&#039;` (not `&apos;`) as PHP writes it.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#039;"),
            _ => out.push(c),
        }
    }
    out
}

/// Strict integer text `^[+-]?(0|[1-9][0-9]*)$` that fits in `i64` (COMPAT §5.0 "integer" rule,
/// §4.2 page strings).
///
/// No trimming here (callers trim per §5.0 first). Leading zeros are refused (`02`), as PHP's
/// `FILTER_VALIDATE_INT` behind Laravel's `integer` rule does. `-0` and `+0` are accepted as `0`;
/// callers that need `>= 1` (pages, §4.2) check that themselves.
pub fn is_integer_string(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    let well_formed = match digits.as_bytes() {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !well_formed {
        return None;
    }
    // `str::parse::<i64>` accepts exactly one leading sign, which the check above guarantees, and
    // reports overflow (e.g. 9223372036854775808) as an error.
    s.parse::<i64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laravel_trim_strips_the_listed_code_points() {
        assert_eq!(laravel_trim("  abc \t\n"), "abc");
        assert_eq!(
            laravel_trim("\u{FEFF}\u{200B}\u{00A0}\u{3000}x y\u{2028}\u{0085}\u{180E}\u{202F}"),
            "x y"
        );
        assert_eq!(
            laravel_trim("\u{000B}\u{000C}\r\u{1680}\u{205F}\u{2029}"),
            ""
        );
        // Not in the list: U+001F and U+200C stay.
        assert_eq!(laravel_trim("\u{1F}a\u{200C}"), "\u{1F}a\u{200C}");
        // Inner spaces are untouched.
        assert_eq!(laravel_trim(" a  b "), "a  b");
    }

    #[test]
    fn php_trim_is_ascii_only() {
        assert_eq!(php_trim(" \t\n\r\0\x0Babc\x0B\0 "), "abc");
        assert_eq!(php_trim("\u{00A0}abc\u{00A0}"), "\u{00A0}abc\u{00A0}");
        assert_eq!(php_trim("\x0C abc"), "\x0C abc");
        assert_eq!(php_trim(""), "");
    }

    #[test]
    fn translation_keys_of_compat_7_1() {
        assert_eq!(translation_key("user is banned"), "user_is_banned");
        assert_eq!(
            translation_key("We are Under Maintenance"),
            "we_are_under_maintenance"
        );
        assert_eq!(
            translation_key("Conversation created"),
            "conversation_created"
        );
        assert_eq!(translation_key("Sender"), "sender");
        assert_eq!(translation_key("Message"), "message");
        assert_eq!(translation_key("See Details"), "see_details");
        assert_eq!(
            translation_key("Hi! You recieved a message from "),
            "hi_you_recieved_a_message_from_"
        );
    }

    #[test]
    fn translation_key_drops_non_ascii_and_other_whitespace() {
        assert_eq!(translation_key("Café-Crème\tX_1"), "cafcrmex_1");
        assert_eq!(translation_key("ÄBC"), "bc");
    }

    #[test]
    fn html_escape_escapes_the_five_characters_and_re_escapes_entities() {
        assert_eq!(
            html_escape(r#"<b>"Tom" & 'Jerry'</b>"#),
            "&lt;b&gt;&quot;Tom&quot; &amp; &#039;Jerry&#039;&lt;/b&gt;"
        );
        assert_eq!(html_escape("&amp; &#039;"), "&amp;amp; &amp;#039;");
        assert_eq!(
            html_escape("http://h/login?a=1&b='x'"),
            "http://h/login?a=1&amp;b=&#039;x&#039;"
        );
        assert_eq!(html_escape("رسالة"), "رسالة");
    }

    #[test]
    fn integer_strings() {
        assert_eq!(is_integer_string("2"), Some(2));
        assert_eq!(is_integer_string("+2"), Some(2));
        assert_eq!(is_integer_string("-1"), Some(-1));
        assert_eq!(is_integer_string("0"), Some(0));
        assert_eq!(is_integer_string("-0"), Some(0));
        assert_eq!(is_integer_string("+0"), Some(0));
        assert_eq!(is_integer_string("9223372036854775807"), Some(i64::MAX));
        assert_eq!(is_integer_string("-9223372036854775808"), Some(i64::MIN));
        for bad in [
            "",
            "+",
            "-",
            "02",
            "-02",
            "00",
            "2.5",
            "2.0",
            "1e1",
            "abc",
            " 3",
            "3 ",
            "++2",
            "+-2",
            "9223372036854775808",
            "-9223372036854775809",
            "１",
        ] {
            assert_eq!(is_integer_string(bad), None, "{bad:?}");
        }
    }
}

//! PHP `json_encode` byte-compatible writers (COMPAT §3).
//!
//! serde_json's own writers differ from PHP in three ways that matter here: they leave non-ASCII
//! characters and `/` unescaped, and their pretty printer uses 2-space indentation. Rather than
//! bending a `serde_json::ser::Formatter`, the `Value` tree is walked directly: the output rules
//! are small and this keeps every byte visible in one place.

use serde_json::{Map, Number, Value};

/// Compact JSON exactly as PHP `json_encode($v)` with flags 0 (COMPAT §3.1).
///
/// Object keys are written in the `Map`'s insertion order, which is why the crate enables
/// serde_json's `preserve_order` feature: every body in COMPAT documents its key order.
pub fn to_php_json(v: &Value) -> String {
    let mut out = String::with_capacity(INITIAL_CAPACITY);
    write_value(&mut out, v, Layout::Compact, 0);
    out
}

/// Room for most bodies written from a tree (answers other than pages, which
/// [`crate::laravel::paginate::envelope`] writes itself): growing from nothing copied a body
/// several times.
const INITIAL_CAPACITY: usize = 1024;

/// Appends `s` as a compact PHP JSON string (§3.1), quotes included: for bodies written piece
/// by piece ([`crate::laravel::paginate::envelope`], [`ObjectWriter`]).
pub fn push_php_string(out: &mut String, s: &str) {
    write_string(out, s, Layout::Compact.escape_slash());
}

/// Writes one compact PHP JSON object (§3.1) member by member, keys in the order written: for
/// the items of a page, which are written straight into the body like the envelope around them.
pub struct ObjectWriter<'a> {
    out: &'a mut String,
    members: usize,
}

impl<'a> ObjectWriter<'a> {
    pub fn new(out: &'a mut String) -> Self {
        out.push('{');
        ObjectWriter { out, members: 0 }
    }

    fn key(&mut self, key: &str) -> &mut String {
        if self.members > 0 {
            self.out.push(',');
        }
        self.members += 1;
        push_php_string(self.out, key);
        self.out.push(':');
        self.out
    }

    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        use std::fmt::Write;
        // Writing into a String cannot fail.
        let _ = write!(self.key(key), "{value}");
        self
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        push_php_string(self.key(key), value);
        self
    }

    /// A string, or `null` for `None`.
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(key, v),
            None => {
                self.key(key).push_str("null");
                self
            }
        }
    }

    pub fn end(&mut self) {
        self.out.push('}');
    }
}

/// Pretty JSON exactly as PHP `json_encode($v, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES)`
/// (COMPAT §3.2, used for error bodies): 4-space indent, LF, `": "`, no trailing newline, `/` not
/// escaped, empty containers as `[]`/`{}`; strings otherwise escaped as in §3.1.
pub fn to_php_json_pretty(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v, Layout::Pretty, 0);
    out
}

/// The two flag sets the API uses: 0 (§3.1) and PRETTY_PRINT | UNESCAPED_SLASHES (§3.2).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    Compact,
    Pretty,
}

impl Layout {
    /// Only the compact bodies escape `/` (§3.1); the pretty ones carry JSON_UNESCAPED_SLASHES.
    fn escape_slash(self) -> bool {
        self == Layout::Compact
    }
}

fn write_value(out: &mut String, v: &Value, layout: Layout, depth: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s, layout.escape_slash()),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                open_member(out, i, layout, depth + 1);
                write_value(out, item, layout, depth + 1);
            }
            close_container(out, items.is_empty(), layout, depth, ']');
        }
        Value::Object(map) => write_object(out, map, layout, depth),
    }
}

fn write_object(out: &mut String, map: &Map<String, Value>, layout: Layout, depth: usize) {
    out.push('{');
    for (i, (k, item)) in map.iter().enumerate() {
        open_member(out, i, layout, depth + 1);
        write_string(out, k, layout.escape_slash());
        out.push_str(match layout {
            Layout::Compact => ":",
            Layout::Pretty => ": ",
        });
        write_value(out, item, layout, depth + 1);
    }
    close_container(out, map.is_empty(), layout, depth, '}');
}

/// Separator before a member: `,` after the previous one; in pretty mode also LF and four spaces
/// per nesting level (PHP's PRETTY_PRINT layout).
fn open_member(out: &mut String, index: usize, layout: Layout, depth: usize) {
    if index > 0 {
        out.push(',');
    }
    if layout == Layout::Pretty {
        out.push('\n');
        push_indent(out, depth);
    }
}

/// Closing bracket; PHP prints empty containers as `[]`/`{}` on one line even when pretty (§3.2),
/// so the line break before the bracket only exists when there were members.
fn close_container(out: &mut String, empty: bool, layout: Layout, depth: usize, close: char) {
    if layout == Layout::Pretty && !empty {
        out.push('\n');
        push_indent(out, depth);
    }
    out.push(close);
}

fn push_indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("    ");
    }
}

/// Integers print in decimal, as PHP does for `int`. COMPAT §3.1 says no floats occur in any body;
/// should one appear anyway, serde_json's shortest round-trip form is used, which equals PHP's
/// (`serialize_precision = -1`) for ordinary values like `2.0` or `0.5` but not for exponent forms
/// (PHP writes `1.0e+25`).
fn write_number(out: &mut String, n: &Number) {
    use std::fmt::Write;
    // Writing into a String cannot fail.
    let _ = write!(out, "{n}");
}

/// A JSON string with PHP's escaping (COMPAT §3.1): short escapes for `\b \f \n \r \t`, `\u00xx`
/// for other C0 controls, U+007F and `< > & '` literal, every non-ASCII code point as lowercase
/// `\uxxxx` (UTF-16 surrogate pairs above U+FFFF), and `/` → `\/` unless JSON_UNESCAPED_SLASHES
/// (`escape_slash == false`, the pretty writer of §3.2).
fn write_string(out: &mut String, s: &str, escape_slash: bool) {
    let plain = if escape_slash {
        &PLAIN_SLASH_ESCAPED
    } else {
        &PLAIN
    };
    out.push('"');
    // Runs of bytes written as they are go out in one piece: most of a body's text (keys,
    // URLs, dates) is such a run. Every other byte starts a character that is escaped.
    let mut rest = s;
    while !rest.is_empty() {
        let run = rest
            .bytes()
            .position(|b| !plain[usize::from(b)])
            .unwrap_or(rest.len());
        out.push_str(&rest[..run]);
        rest = &rest[run..];
        let Some(c) = rest.chars().next() else { break };
        rest = &rest[c.len_utf8()..];
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            // Only reached when `/` is escaped: the pretty layout's table keeps it plain.
            '/' => out.push_str("\\/"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{00}'..='\u{1F}' => push_u_escape(out, c as u16),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    push_u_escape(out, *unit);
                }
            }
        }
    }
    out.push('"');
}

/// The bytes a string keeps as they are: printable ASCII and U+007F (DEL), except `"` and `\`.
const PLAIN: [bool; 256] = plain_bytes(false);
/// The same with `/` escaped (compact bodies, §3.1).
const PLAIN_SLASH_ESCAPED: [bool; 256] = plain_bytes(true);

const fn plain_bytes(escape_slash: bool) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0x20;
    while b <= 0x7F {
        table[b] =
            !(b == b'"' as usize || b == b'\\' as usize || (escape_slash && b == b'/' as usize));
        b += 1;
    }
    table
}

fn push_u_escape(out: &mut String, unit: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str("\\u");
    for shift in [12u16, 8, 4, 0] {
        out.push(char::from(HEX[usize::from((unit >> shift) & 0xF)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compact_str(s: &str) -> String {
        to_php_json(&Value::String(s.to_owned()))
    }

    #[test]
    fn compact_string_examples_of_3_1() {
        assert_eq!(compact_str("Café"), r#""Caf\u00e9""#);
        assert_eq!(compact_str("— আ 😀"), r#""\u2014 \u0986 \ud83d\ude00""#);
        assert_eq!(
            compact_str(r#"<b>"x"</b> & a/b"#),
            r#""<b>\"x\"<\/b> & a\/b""#
        );
        assert_eq!(compact_str("« Previous"), r#""\u00ab Previous""#);
        assert_eq!(compact_str("Next »"), r#""Next \u00bb""#);
    }

    #[test]
    fn compact_runs_between_escapes() {
        assert_eq!(
            compact_str("a/b\"c\\d\u{7F}e\u{e9}f\u{1F600}g\n<>&' /"),
            "\"a\\/b\\\"c\\\\d\u{7F}e\\u00e9f\\ud83d\\ude00g\\n<>&' \\/\""
        );
        assert_eq!(compact_str(""), r#""""#);
        assert_eq!(compact_str("//"), r#""\/\/""#);
        assert_eq!(to_php_json_pretty(&json!("a/\u{e9}")), r#""a/\u00e9""#);
    }

    #[test]
    fn objects_written_member_by_member_match_the_tree_writer() {
        let mut out = String::new();
        ObjectWriter::new(&mut out)
            .int("id", -3)
            .str("url", "http://h/a?b=1")
            .opt_str("none", None)
            .opt_str("some", Some("\u{ab} x"))
            .end();
        let tree = json!({"id": -3, "url": "http://h/a?b=1", "none": null, "some": "\u{ab} x"});
        assert_eq!(out, to_php_json(&tree));
        let mut empty = String::new();
        ObjectWriter::new(&mut empty).end();
        assert_eq!(empty, "{}");
    }

    #[test]
    fn compact_control_characters() {
        assert_eq!(
            compact_str("\u{8}\u{c}\n\r\t\u{0}\u{1}\u{1f}\u{7f}'\\"),
            "\"\\b\\f\\n\\r\\t\\u0000\\u0001\\u001f\u{7f}'\\\\\""
        );
        // Lowercase hex, and the 0x80-0x9F C1 range is escaped as non-ASCII.
        assert_eq!(compact_str("\u{85}\u{FEFF}"), r#""\u0085\ufeff""#);
    }

    #[test]
    fn compact_arabic_banned_message_of_1_2() {
        assert_eq!(
            to_php_json(&json!({"result": false, "status": "banned", "message": "المستخدم محظور"})),
            r#"{"result":false,"status":"banned","message":"\u0627\u0644\u0645\u0633\u062a\u062e\u062f\u0645 \u0645\u062d\u0638\u0648\u0631"}"#
        );
    }

    #[test]
    fn compact_keeps_insertion_order_and_scalars() {
        let v = json!({"data": [], "success": false, "status": 404, "message": "Invalid Route"});
        assert_eq!(
            to_php_json(&v),
            r#"{"data":[],"success":false,"status":404,"message":"Invalid Route"}"#
        );
        let v = json!({"z": null, "a": {}, "m": [1, -2, u64::MAX, true]});
        assert_eq!(
            to_php_json(&v),
            r#"{"z":null,"a":{},"m":[1,-2,18446744073709551615,true]}"#
        );
    }

    #[test]
    fn pretty_404_body_of_3_2() {
        let v = json!({"message": "No query results for model [App\\Models\\Conversation] 7"});
        assert_eq!(
            to_php_json_pretty(&v),
            "{\n    \"message\": \"No query results for model [App\\\\Models\\\\Conversation] 7\"\n}"
        );
    }

    #[test]
    fn pretty_422_body_of_5_0() {
        let v = json!({
            "message": "The product id field is required. (and 1 more error)",
            "errors": {
                "product_id": ["The product id field is required."],
                "message": ["The message field is required."]
            }
        });
        let expected = "{\n    \"message\": \"The product id field is required. (and 1 more error)\",\n    \"errors\": {\n        \"product_id\": [\n            \"The product id field is required.\"\n        ],\n        \"message\": [\n            \"The message field is required.\"\n        ]\n    }\n}";
        assert_eq!(to_php_json_pretty(&v), expected);
    }

    #[test]
    fn pretty_empty_containers_slashes_and_unicode() {
        let v = json!({"a": [], "b": {}, "c": [[], {}, "x/y é"], "d": 1});
        let expected = "{\n    \"a\": [],\n    \"b\": {},\n    \"c\": [\n        [],\n        {},\n        \"x/y \\u00e9\"\n    ],\n    \"d\": 1\n}";
        assert_eq!(to_php_json_pretty(&v), expected);
        assert_eq!(to_php_json_pretty(&json!([])), "[]");
        assert_eq!(to_php_json_pretty(&json!({})), "{}");
        assert_eq!(to_php_json_pretty(&json!("a/b")), "\"a/b\"");
        assert_eq!(to_php_json_pretty(&json!(null)), "null");
    }
}

//! Request input as Laravel sees it (COMPAT §5.0, K13).
//!
//! GET reads the query string only. POST reads the body — JSON when the
//! `Content-Type` mentions `/json` or `+json`, else form fields — and then the
//! query string for keys the body does not have. Every string at any depth is
//! trimmed (Laravel's `TrimStrings`) and `""` becomes `null`
//! (`ConvertEmptyStringsToNull`).

use std::collections::HashSet;

use percent_encoding::percent_decode;
use serde_json::{Map, Value};

use crate::laravel::paginate::{parse_page_json, parse_page_str};
use crate::laravel::text::laravel_trim;

#[derive(Debug, Default, Clone)]
pub struct Input {
    map: Map<String, Value>,
    /// Keys whose form/query text was not valid UTF-8 (stored lossily in
    /// `map`); such a value is never a valid "string" (§5.0).
    invalid_utf8: HashSet<String>,
}

impl Input {
    /// GET: the query string only (a body is ignored).
    pub fn from_query(query: &str) -> Input {
        let mut input = Input::default();
        input.add_form(query.as_bytes(), false);
        input.normalise();
        input
    }

    /// POST: the body (JSON, urlencoded or multipart) wins over the query string.
    pub async fn from_post(content_type: Option<&str>, body: &[u8], query: &str) -> Input {
        let mut input = Input::default();
        let ct = content_type.unwrap_or("").to_ascii_lowercase();
        if ct.contains("/json") || ct.contains("+json") {
            // Invalid JSON or UTF-8, a non-object or nesting deeper than
            // 128 all count as an empty body.
            if let Some(map) = json_object(body) {
                input.map = map;
            }
        } else if ct.starts_with("multipart/form-data") {
            if let Some(boundary) = content_type.and_then(|c| multer::parse_boundary(c).ok()) {
                input.add_multipart(body, boundary).await;
            }
        } else {
            input.add_form(body, false);
        }
        input.add_form(query.as_bytes(), true);
        input.normalise();
        input
    }

    /// Parses `application/x-www-form-urlencoded` text: `+` is a space,
    /// `%XX` decoded, the last of repeated keys wins, `k[]=v` builds a list.
    fn add_form(&mut self, text: &[u8], only_missing: bool) {
        let mut seen_here: HashSet<String> = HashSet::new();
        for pair in text.split(|b| *b == b'&') {
            if pair.is_empty() {
                continue;
            }
            let (raw_key, raw_value) = match pair.iter().position(|b| *b == b'=') {
                Some(pos) => (&pair[..pos], &pair[pos + 1..]),
                None => (pair, &b""[..]),
            };
            let (key, _) = decode_form(raw_key);
            let (value, valid) = decode_form(raw_value);
            let (name, is_list) = split_list_key(key);
            if name.is_empty()
                || (only_missing && self.map.contains_key(&name) && !seen_here.contains(&name))
            {
                continue;
            }
            seen_here.insert(name.clone());
            self.put(name, value, valid, is_list);
        }
    }

    fn put(&mut self, name: String, value: String, valid_utf8: bool, is_list: bool) {
        if is_list {
            match self.map.get_mut(&name) {
                Some(Value::Array(items)) => items.push(Value::String(value)),
                _ => {
                    self.map
                        .insert(name.clone(), Value::Array(vec![Value::String(value)]));
                }
            }
        } else {
            self.map.insert(name.clone(), Value::String(value));
        }
        if valid_utf8 {
            self.invalid_utf8.remove(&name);
        } else {
            self.invalid_utf8.insert(name);
        }
    }

    async fn add_multipart(&mut self, body: &[u8], boundary: String) {
        let stream = futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(
            bytes::Bytes::copy_from_slice(body),
        )));
        let mut multipart = multer::Multipart::new(stream, boundary);
        // A malformed part ends the parsing; what was read so far is kept.
        while let Ok(Some(field)) = multipart.next_field().await {
            if field.file_name().is_some() {
                continue; // files are not chat input
            }
            let Some(key) = field.name().map(str::to_string) else {
                continue;
            };
            let Ok(data) = field.bytes().await else { break };
            let (value, valid) = text_of(data.to_vec());
            let (name, is_list) = split_list_key(key);
            if !name.is_empty() {
                self.put(name, value, valid, is_list);
            }
        }
    }

    fn normalise(&mut self) {
        for value in self.map.values_mut() {
            normalise_value(value);
        }
    }

    /// The normalised value of `key` (`None` when the key is missing).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    /// Absent = missing, `null`, `""` (after trimming), `[]` or `{}` (§5.0).
    pub fn is_absent(&self, key: &str) -> bool {
        match self.map.get(key) {
            None | Some(Value::Null) => true,
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            Some(_) => false,
        }
    }

    pub fn is_valid_utf8(&self, key: &str) -> bool {
        !self.invalid_utf8.contains(key)
    }

    /// The `page` input (§4.2); 1 when absent or invalid.
    pub fn page(&self) -> i64 {
        match self.map.get("page") {
            Some(Value::String(s)) if self.is_valid_utf8("page") => parse_page_str(s),
            Some(v @ Value::Number(_)) => parse_page_json(v),
            _ => 1,
        }
    }

    /// A positive integer parameter parsed like `page` (the long-poll `wait`).
    pub fn positive_int(&self, key: &str) -> Option<i64> {
        let value = match self.map.get(key)? {
            Value::String(s) if self.is_valid_utf8(key) => {
                crate::laravel::text::is_integer_string(laravel_trim(s))?
            }
            Value::Number(n) => n.as_i64()?,
            _ => return None,
        };
        (value >= 1).then_some(value)
    }
}

/// §5.0: nesting deeper than this makes the JSON body `{}`.
const MAX_JSON_DEPTH: usize = 128;

/// The body as a JSON object, if it is one nested at most [`MAX_JSON_DEPTH`]
/// levels. serde_json's own recursion limit stops one level earlier (127), so
/// the depth is checked here first and serde_json's limit is lifted: the
/// check bounds the parser's recursion just as well.
fn json_object(body: &[u8]) -> Option<Map<String, Value>> {
    if json_depth(body) > MAX_JSON_DEPTH {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    de.disable_recursion_limit();
    let value = <Value as serde::Deserialize>::deserialize(&mut de).ok()?;
    de.end().ok()?;
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The deepest nesting of `[`/`{` outside strings (a lexical scan; invalid
/// JSON is rejected by the parser afterwards).
fn json_depth(body: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn decode_form(raw: &[u8]) -> (String, bool) {
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    text_of(percent_decode(&plus_as_space).collect())
}

/// The bytes as text, and whether they were valid UTF-8 (invalid sequences become U+FFFD; the
/// flag makes the field fail `string` validation like PHP's, §5.0).
fn text_of(bytes: Vec<u8>) -> (String, bool) {
    match String::from_utf8(bytes) {
        Ok(s) => (s, true),
        Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), false),
    }
}

fn normalise_value(value: &mut Value) {
    match value {
        Value::String(s) => {
            let trimmed = laravel_trim(s);
            if trimmed.is_empty() {
                *value = Value::Null;
            } else if trimmed.len() != s.len() {
                *s = trimmed.to_string();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise_value),
        Value::Object(map) => map.values_mut().for_each(normalise_value),
        _ => {}
    }
}

/// `k[]` (or `k[anything]`) names the list `k`; any other key is itself.
fn split_list_key(key: String) -> (String, bool) {
    match key.find('[') {
        Some(pos) if key.ends_with(']') => (key[..pos].to_string(), true),
        _ => (key, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn query_rules() {
        let input = Input::from_query("a=1&a=2&b=+x+&c=&l[]=1&l[]=2&page=%2B2&e");
        assert_eq!(
            input.get("a"),
            Some(&Value::String("2".into())),
            "last wins"
        );
        assert_eq!(
            input.get("b"),
            Some(&Value::String("x".into())),
            "plus is space, trimmed"
        );
        assert_eq!(input.get("c"), Some(&Value::Null), "empty becomes null");
        assert!(input.is_absent("c") && input.is_absent("e") && input.is_absent("zzz"));
        assert_eq!(input.get("l"), Some(&serde_json::json!(["1", "2"])));
        assert_eq!(input.page(), 2);
        assert_eq!(
            Input::from_query("page=+2").page(),
            2,
            "raw + is a space, trimmed"
        );
        assert_eq!(Input::from_query("page[]=2").page(), 1);
    }

    #[test]
    fn invalid_utf8_is_marked() {
        let input = Input::from_query("message=%FF%FE");
        assert!(!input.is_absent("message"));
        assert!(!input.is_valid_utf8("message"));
    }

    #[test]
    fn json_body_wins_over_query() {
        let input = block(Input::from_post(
            Some("application/json; charset=utf-8"),
            br#"{"conversation_id": 5, "message": "  hi\u00a0", "page": null, "nested": ["  ", {"k": " v "}]}"#,
            "page=3&x=1",
        ));
        assert_eq!(input.get("conversation_id").unwrap().to_string(), "5");
        assert_eq!(input.get("message"), Some(&Value::String("hi".into())));
        assert_eq!(
            input.get("page"),
            Some(&Value::Null),
            "a body key wins even when null"
        );
        assert_eq!(input.page(), 1);
        assert_eq!(input.get("x"), Some(&Value::String("1".into())));
        assert_eq!(
            input.get("nested"),
            Some(&serde_json::json!([null, {"k": "v"}]))
        );
    }

    #[test]
    fn broken_json_is_an_empty_body() {
        for body in [&b"{"[..], b"[1,2]", b"\"str\"", b"{\"a\":\"\xff\"}"] {
            let input = block(Input::from_post(Some("application/json"), body, ""));
            assert!(input.is_absent("a"));
        }
        // 128 levels are accepted, 129 are not (§5.0); a `[` inside a
        // string does not count.
        for (depth, absent) in [(128, false), (129, true), (5000, true)] {
            let deep = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            let input = block(Input::from_post(
                Some("application/json"),
                deep.as_bytes(),
                "",
            ));
            assert_eq!(input.is_absent("a"), absent, "depth {depth}");
        }
        let tricky = format!("{{\"a\":\"{}\\\"[\"}}", "[".repeat(300));
        let input = block(Input::from_post(
            Some("application/json"),
            tricky.as_bytes(),
            "",
        ));
        assert!(!input.is_absent("a"), "{tricky}");
    }

    #[test]
    fn form_and_multipart_bodies() {
        let input = block(Input::from_post(
            Some("application/x-www-form-urlencoded"),
            b"conversation_id=1&message=Please+ship%20today",
            "message=ignored&page=2",
        ));
        assert_eq!(
            input.get("message"),
            Some(&Value::String("Please ship today".into()))
        );
        assert_eq!(input.page(), 2);

        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\n hello \r\n--XyZ\r\nContent-Disposition: form-data; name=\"product_id\"\r\n\r\n3\r\n--XyZ--\r\n";
        let input = block(Input::from_post(
            Some("multipart/form-data; boundary=XyZ"),
            body.as_bytes(),
            "",
        ));
        assert_eq!(input.get("message"), Some(&Value::String("hello".into())));
        assert_eq!(input.get("product_id"), Some(&Value::String("3".into())));
    }
}

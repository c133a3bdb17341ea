//! Property tests for every parser of hostile input: arbitrary
//! input never panics, and the answer is the contract's, checked against a
//! small model written from COMPAT.md (not from the code under test).

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Map, Value};

use shopchat::auth::bearer::{parse_authorization, BearerToken};
use shopchat::http::input::Input;
use shopchat::http::origin::{origin, valid_host};
use shopchat::http::routing::{match_path, Route};
use shopchat::laravel::json::{to_php_json, to_php_json_pretty};
use shopchat::laravel::paginate::{parse_page_json, parse_page_str};

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// The trimmed code points of §5.0.
const SPACES: &[char] = &[
    '\t', '\n', '\u{b}', '\u{c}', '\r', ' ', '\u{85}', '\u{a0}', '\u{1680}', '\u{180e}',
    '\u{2000}', '\u{2005}', '\u{200a}', '\u{200b}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}',
    '\u{3000}', '\u{feff}',
];

fn spaces() -> impl Strategy<Value = String> {
    vec(proptest::sample::select(SPACES), 0..3).prop_map(|v| v.into_iter().collect())
}

// ---------------------------------------------------------------- bearer (§2)

/// §2's pseudo-code, literally.
fn bearer_model(h: &[u8]) -> Option<BearerToken> {
    let needle = b"Bearer ";
    let p = (0..h.len().saturating_sub(needle.len() - 1))
        .rev()
        .find(|&i| h[i..].starts_with(needle))?;
    let mut t = &h[p + 7..];
    if let Some(c) = t.iter().position(|&b| b == b',') {
        t = &t[..c];
    }
    let empty = |s: &[u8]| s.is_empty() || s == b"0";
    if let Some(bar) = t.iter().position(|&b| b == b'|') {
        let (idp, secret) = (&t[..bar], &t[bar + 1..]);
        if idp.is_empty() || !idp.iter().all(u8::is_ascii_digit) || empty(secret) {
            return None;
        }
        // Leading zeros are allowed ("007" = 7); more than 20 digits never fit u64.
        let digits = std::str::from_utf8(idp).ok()?.trim_start_matches('0');
        let id: u64 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        return Some(BearerToken::IdSecret {
            id,
            secret: secret.to_vec(),
        });
    }
    if empty(t) {
        return None;
    }
    Some(BearerToken::Plain(t.to_vec()))
}

/// Header values built from the pieces that matter, plus arbitrary bytes.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"Bearer ".to_vec()),
        Just(b"bearer ".to_vec()),
        Just(b"Bearer".to_vec()),
        Just(b"|".to_vec()),
        Just(b",".to_vec()),
        Just(b" ".to_vec()),
        Just(b"0".to_vec()),
        Just(b"18446744073709551616".to_vec()),
        "[0-9]{1,20}".prop_map(String::into_bytes),
        "[a-f0-9]{1,40}".prop_map(String::into_bytes),
        vec(any::<u8>(), 0..6),
    ];
    vec(piece, 0..8).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn bearer_matches_the_contract(h in header_bytes()) {
        prop_assert_eq!(parse_authorization(&h), bearer_model(&h));
    }

    #[test]
    fn bearer_never_panics_on_any_bytes(h in vec(any::<u8>(), 0..300)) {
        prop_assert_eq!(parse_authorization(&h), bearer_model(&h));
    }

    #[test]
    fn bearer_id_secret_round_trip(
        id in any::<u64>(),
        secret in vec(any::<u8>().prop_filter("no comma", |b| *b != b','), 1..60),
        prefix in prop_oneof![Just(""), Just("Token x, "), Just("Basic abc, ")],
        suffix in prop_oneof![Just(""), Just(", Basic y")],
    ) {
        prop_assume!(secret != b"0");
        let mut h = format!("{prefix}Bearer {id}|").into_bytes();
        h.extend_from_slice(&secret);
        h.extend_from_slice(suffix.as_bytes());
        // A later "Bearer " inside the secret would win (strrpos); skip those.
        prop_assume!(!secret.windows(7).any(|w| w == b"Bearer "));
        prop_assert_eq!(
            parse_authorization(&h),
            Some(BearerToken::IdSecret { id, secret: secret.clone() })
        );
    }
}

// ---------------------------------------------------------------- page (§4.2)

proptest! {
    #[test]
    fn page_strings(s in ".{0,30}") {
        let page = parse_page_str(&s);
        prop_assert!(page >= 1);
    }

    #[test]
    fn page_integers(n in any::<i64>(), pre in spaces(), post in spaces(), plus in any::<bool>()) {
        let text = format!("{pre}{}{n}{post}", if plus && n >= 0 { "+" } else { "" });
        let expected = if n >= 1 { n } else { 1 };
        prop_assert_eq!(parse_page_str(&text), expected);
        // Leading zeros, fractions and exponents are never a page.
        prop_assert_eq!(parse_page_str(&format!("0{}", n.unsigned_abs())), 1);
        prop_assert_eq!(parse_page_str(&format!("{n}.0")), 1);
        prop_assert_eq!(parse_page_str(&format!("{n}e0")), 1);
    }

    #[test]
    fn page_json_numbers(n in 1i64..=i64::MAX, zeros in 1usize..4, frac in 1u32..10) {
        let parse = |t: &str| parse_page_json(&serde_json::from_str::<Value>(t).unwrap());
        prop_assert_eq!(parse(&n.to_string()), n);
        prop_assert_eq!(parse(&format!("{n}.{}", "0".repeat(zeros))), n);
        prop_assert_eq!(parse(&format!("{n}.{frac}")), 1);
        prop_assert_eq!(parse(&format!("{n}e0")), 1);
        prop_assert_eq!(parse(&format!("-{n}")), 1);
        prop_assert_eq!(parse(&format!("\"{n}\"")), n);
        prop_assert_eq!(parse("true"), 1);
        prop_assert_eq!(parse("null"), 1);
    }

    #[test]
    fn page_json_any_number_text(t in "-?[0-9]{1,25}(\\.[0-9]{1,5})?([eE][+-]?[0-9]{1,3})?") {
        if let Ok(v) = serde_json::from_str::<Value>(&t) {
            prop_assert!(parse_page_json(&v) >= 1);
        }
    }
}

// ---------------------------------------------------------------- routing (§1.1)

/// Percent-encodes some bytes of `s` (always `%`, `/`, `?`, `#`, and at random others).
fn encode_segment(s: &str, mask: &[bool]) -> String {
    let mut out = String::new();
    for (i, b) in s.bytes().enumerate() {
        let forced = matches!(b, b'%' | b'/' | b'?' | b'#') || !b.is_ascii_graphic();
        if forced || mask.get(i % mask.len().max(1)).copied().unwrap_or(false) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

proptest! {
    #[test]
    fn any_path_routes_without_panicking(p in "/?[a-z0-9/%.-]{0,60}") {
        let route = match_path(&p);
        if !p.starts_with("/api/") {
            prop_assert!(matches!(route, Route::Outside | Route::Health | Route::Ready | Route::Metrics));
        }
    }

    #[test]
    fn message_ids_are_decoded_segments(
        id in "[^/]{1,20}",
        mask in vec(any::<bool>(), 1..8),
        slashes in 0usize..3,
    ) {
        let path = format!("/api/v2/chat/messages/{}{}", encode_segment(&id, &mask), "/".repeat(slashes));
        prop_assert_eq!(match_path(&path), Route::Messages { id: id.clone() });
        // Encoded literal segments match too: the path is matched decoded.
        let path = format!("/api/%76%32/chat/get-new-messages/{}/{}", encode_segment(&id, &mask), encode_segment(&id, &[true]));
        prop_assert_eq!(match_path(&path), Route::NewMessages { conversation_id: id.clone(), last_message_id: id.clone() });
        // `%2F` inside a segment or an empty segment is the fallback.
        prop_assert_eq!(match_path(&format!("/api/v2/chat/messages/{}%2F1", encode_segment(&id, &mask))), Route::Fallback);
        prop_assert_eq!(match_path(&format!("/api/v2/chat//messages/{}", encode_segment(&id, &mask))), Route::Fallback);
    }

    #[test]
    fn invalid_utf8_segments_become_replacement_chars(bytes in vec(128u8..=255, 1..6)) {
        let enc: String = bytes.iter().map(|b| format!("%{b:02X}")).collect();
        let expected = String::from_utf8_lossy(&bytes).into_owned();
        prop_assert_eq!(match_path(&format!("/api/v2/chat/messages/{enc}")), Route::Messages { id: expected });
    }
}

// ---------------------------------------------------------------- input (§5.0)

/// §5.0 normalisation, as a model: trim the listed code points, `""` → null.
fn normalised(v: &Value) -> Value {
    match v {
        Value::String(s) => {
            let t =
                s.trim_matches(|c| SPACES.contains(&c) || ('\u{2000}'..='\u{200b}').contains(&c));
            if t.is_empty() {
                Value::Null
            } else {
                Value::String(t.to_string())
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(normalised).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), normalised(v))).collect())
        }
        other => other.clone(),
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        (spaces(), "[a-z]{0,5}", spaces())
            .prop_map(|(a, b, c)| Value::String(format!("{a}{b}{c}"))),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    "[a-z_]{1,12}"
}

proptest! {
    #[test]
    fn json_bodies_are_normalised(
        obj in btree_map(field_name(), json_value(), 0..6),
        query in btree_map(field_name(), "[a-z0-9 ]{0,6}", 0..4),
    ) {
        let body = Value::Object(obj.clone().into_iter().collect());
        let qs = form_urlencoded::Serializer::new(String::new()).extend_pairs(&query).finish();
        let input = block(Input::from_post(Some("application/json"), body.to_string().as_bytes(), &qs));
        for (k, v) in &obj {
            prop_assert_eq!(input.get(k), Some(&normalised(v)), "body key {} wins", k);
        }
        for (k, v) in &query {
            if !obj.contains_key(k) {
                prop_assert_eq!(input.get(k), Some(&normalised(&Value::String(v.clone()))));
            }
        }
    }

    #[test]
    fn form_bodies_round_trip(pairs in vec((field_name(), any::<String>()), 0..8)) {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
        let input = block(Input::from_post(Some("application/x-www-form-urlencoded"), body.as_bytes(), ""));
        // Repeated keys: the last one wins.
        let mut last: std::collections::HashMap<&str, &str> = Default::default();
        for (k, v) in &pairs { last.insert(k, v); }
        for (k, v) in last {
            prop_assert_eq!(input.get(k), Some(&normalised(&Value::String(v.to_string()))));
            prop_assert!(input.is_valid_utf8(k));
        }
    }

    #[test]
    fn multipart_bodies_round_trip(fields in btree_map(field_name(), "[^\r\n]{0,40}", 0..6)) {
        let boundary = "b0undary-x";
        let mut body = String::new();
        for (k, v) in &fields {
            body.push_str(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"));
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        let ct = format!("multipart/form-data; boundary={boundary}");
        let input = block(Input::from_post(Some(&ct), body.as_bytes(), ""));
        for (k, v) in &fields {
            prop_assert_eq!(input.get(k), Some(&normalised(&Value::String(v.clone()))));
        }
    }

    #[test]
    fn any_body_bytes_parse_without_panicking(
        body in vec(any::<u8>(), 0..400),
        ct in prop_oneof![
            Just("application/json"), Just("application/vnd.api+json"),
            Just("application/x-www-form-urlencoded"), Just("multipart/form-data; boundary=x"),
            Just("multipart/form-data"), Just("text/plain"), Just(""),
        ],
        query in "[a-z=&%0-9\\[\\]+]{0,30}",
    ) {
        let input = block(Input::from_post(Some(ct), &body, &query));
        prop_assert!(input.page() >= 1);
        let _ = input.positive_int("wait");
        let q = Input::from_query(&String::from_utf8_lossy(&body));
        prop_assert!(q.page() >= 1);
    }

    #[test]
    fn non_objects_and_deep_json_are_empty(depth in 100usize..400, n in any::<i64>()) {
        let deep = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        let input = block(Input::from_post(Some("application/json"), deep.as_bytes(), ""));
        // §5.0: nesting > 128 → `{}`.
        prop_assert_eq!(input.is_absent("a"), depth > 128);
        let input = block(Input::from_post(Some("application/json"), format!("[{n}]").as_bytes(), "a=1"));
        prop_assert_eq!(input.get("a"), Some(&Value::String("1".into())));
    }
}

// ---------------------------------------------------------------- Host (§4.3)

fn host_model(v: &str) -> bool {
    let body = v.strip_prefix('[').unwrap_or(v);
    !body.is_empty()
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:]".contains(c))
}

proptest! {
    #[test]
    fn host_check_matches_the_contract(v in prop_oneof![".{0,30}", "\\[?[A-Za-z0-9._:\\]\\[ /@-]{0,30}"]) {
        prop_assert_eq!(valid_host(&v), host_model(&v));
    }

    #[test]
    fn origins_of_valid_hosts(
        host in "[A-Za-z0-9-]{1,10}(\\.[A-Za-z0-9-]{1,10}){0,2}",
        port in proptest::option::of(any::<u16>()),
        https in any::<bool>(),
    ) {
        let scheme = if https { "https" } else { "http" };
        let value = match port { Some(p) => format!("{host}:{p}"), None => host.clone() };
        prop_assert!(valid_host(&value));
        let o = origin(scheme, &value, None);
        let default = if https { 443 } else { 80 };
        let expected = match port {
            Some(p) if p != default => format!("{scheme}://{}:{p}", host.to_ascii_lowercase()),
            _ => format!("{scheme}://{}", host.to_ascii_lowercase()),
        };
        prop_assert_eq!(o, expected);
    }

    #[test]
    fn origin_never_panics(v in ".{0,40}", fwd in proptest::option::of(".{0,8}")) {
        let _ = origin("http", &v, fwd.as_deref());
    }
}

// ---------------------------------------------------------------- JSON writer (§3)

proptest! {
    #[test]
    fn php_json_round_trips(v in json_value()) {
        let compact = to_php_json(&v);
        let pretty = to_php_json_pretty(&v);
        prop_assert_eq!(&serde_json::from_str::<Value>(&compact).unwrap(), &v, "{}", compact);
        prop_assert_eq!(&serde_json::from_str::<Value>(&pretty).unwrap(), &v, "{}", pretty);
        // §3.1: every non-ASCII code point is escaped; compact escapes `/`, pretty does not.
        prop_assert!(compact.is_ascii() && pretty.is_ascii());
        prop_assert!(!compact.replace("\\\\", "").replace("\\/", "").contains('/'));
        prop_assert!(!pretty.replace("\\\\", "").contains("\\/"));
        prop_assert!(!compact.contains('\n') && !pretty.ends_with('\n'));
    }

    #[test]
    fn php_json_strings(s in any::<String>()) {
        let out = to_php_json(&Value::String(s.clone()));
        prop_assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s.clone());
        // Escapes use lowercase hex (§3.1).
        let upper = regex::Regex::new(r"\\u[0-9a-fA-F]{0,3}[A-F]").unwrap();
        prop_assert!(!upper.is_match(&out.replace("\\\\", "")));
    }
}

//! Comparing the primary's answer with shopchat's (shadow and replay).
//!
//! Reads (`GET`/`HEAD`) are compared in full: status, the headers of
//! [`super::rules::COMPARED_HEADERS`] and the body, byte for byte except where
//! a rule or the noise floor masks a JSON value. Writes (`POST` to
//! insert-message / create-conversation) are never executed twice, so only
//! the status class is compared (COMPAT §11.2). A difference that one of the
//! deliberate deviations explains (COMPAT §9) is `expected`, not `mismatch`.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::laravel::json::{to_php_json, to_php_json_pretty};
use crate::shadow::deviations::{self, Premises};
use crate::shadow::rules::{self, Rules, Seg};

/// Header names and values as text (values lossily, they are only compared).
pub fn header_pairs<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Vec<(String, String)> {
    headers
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

/// One HTTP answer as compared and logged.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// Reads a whole answer of the primary (or of a replay target).
    pub async fn from_reqwest(res: reqwest::Response) -> reqwest::Result<Answer> {
        let status = res.status().as_u16();
        let headers = header_pairs(
            res.headers()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes())),
        );
        let body = res.bytes().await?.to_vec();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// All values of a header joined with ", " (`None` when absent).
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    pub fn body_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// For the log: the body as text when it is UTF-8, else base64. Cookies the answer sets
    /// (PHP's session cookie) are `<redacted>`: a session is a login (security review L4).
    pub fn to_json(&self) -> Value {
        let headers: Vec<Vec<String>> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("set-cookie") {
                    "<redacted>".to_string()
                } else {
                    v.clone()
                };
                vec![k.clone(), v]
            })
            .collect();
        let mut v = serde_json::json!({
            "status": self.status,
            "headers": headers,
        });
        match std::str::from_utf8(&self.body) {
            Ok(text) => v["body"] = Value::String(text.into()),
            Err(_) => {
                v["body_b64"] =
                    Value::String(base64::engine::general_purpose::STANDARD.encode(&self.body))
            }
        }
        v
    }
}

/// A request as recorded in the replay file and the mismatch log
/// (docs/shadow.md, "Request files").
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecordedRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub method: String,
    /// Path and query string exactly as sent (`/api/v2/chat/messages/1?page=2`).
    pub path: String,
    /// Name/value pairs in order; the file may also give an object.
    #[serde(default, deserialize_with = "headers_any")]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_b64: Option<String>,
}

fn headers_any<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    use serde::de::Error;
    let v = Value::deserialize(d)?;
    let pair = |k: &str, v: &Value| -> Result<(String, String), D::Error> {
        match v {
            Value::String(s) => Ok((k.to_string(), s.clone())),
            other => Err(D::Error::custom(format!(
                "header {k}: {other} is not a string"
            ))),
        }
    };
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Object(map) => map.iter().map(|(k, v)| pair(k, v)).collect(),
        Value::Array(list) => list
            .iter()
            .map(|item| match item.as_array().map(Vec::as_slice) {
                Some([Value::String(k), v]) => pair(k, v),
                _ => Err(D::Error::custom("headers: expected [name, value] pairs")),
            })
            .collect(),
        other => Err(D::Error::custom(format!(
            "headers: {other} is neither a list nor an object"
        ))),
    }
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_bytes(&self) -> anyhow::Result<Vec<u8>> {
        match (&self.body, &self.body_b64) {
            (_, Some(b64)) => Ok(base64::engine::general_purpose::STANDARD.decode(b64)?),
            (Some(text), None) => Ok(text.clone().into_bytes()),
            (None, None) => Ok(Vec::new()),
        }
    }

    /// The same request for the log: the bearer secret, the System-Key and
    /// cookies are replaced by `<redacted>` (the token id stays, it helps).
    pub fn redacted(&self) -> RecordedRequest {
        let mut r = self.clone();
        for (k, v) in &mut r.headers {
            let name = k.to_ascii_lowercase();
            if name == "authorization" || name == "proxy-authorization" {
                *v = redact_authorization(v);
            } else if name == "system-key" || name == "cookie" {
                *v = "<redacted>".into();
            }
        }
        r
    }
}

/// `Bearer 5|secret` → `Bearer 5|<redacted>`; anything else → `<redacted>`.
pub fn redact_authorization(value: &str) -> String {
    if let Some(token) = value.strip_prefix("Bearer ") {
        if let Some((id, _)) = token.split_once('|') {
            if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !value.contains(',') {
                return format!("Bearer {id}|<redacted>");
            }
        }
    }
    "<redacted>".into()
}

/// Reads are compared in full, writes by status class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Match,
    Mismatch,
    Expected,
    Error,
    Dropped,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Match,
        Outcome::Mismatch,
        Outcome::Expected,
        Outcome::Error,
        Outcome::Dropped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Match => "match",
            Outcome::Mismatch => "mismatch",
            Outcome::Expected => "expected",
            Outcome::Error => "error",
            Outcome::Dropped => "dropped",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub outcome: Outcome,
    /// The deviation that explains an `expected` outcome (`D1`, …).
    pub deviation: Option<&'static str>,
    /// What differed (status, headers, first differing body path).
    pub differences: Vec<String>,
}

impl Verdict {
    pub fn error(why: impl Into<String>) -> Verdict {
        Verdict {
            outcome: Outcome::Error,
            deviation: None,
            differences: vec![why.into()],
        }
    }
}

/// One exchange to judge.
pub struct Exchange<'a> {
    pub route: &'a str,
    pub kind: Kind,
    pub request: &'a RecordedRequest,
    pub primary: &'a Answer,
    pub candidate: &'a Answer,
    /// The primary's second answer in noise-floor mode.
    pub primary_again: Option<&'a Answer>,
}

pub fn compare(ex: &Exchange<'_>, rules: &Rules, premises: &Premises) -> Verdict {
    let differences = match ex.kind {
        Kind::Write => {
            let (p, c) = (ex.primary.status / 100, ex.candidate.status / 100);
            if p == c {
                Vec::new()
            } else {
                vec![format!(
                    "status class {p}xx vs {c}xx ({} vs {})",
                    ex.primary.status, ex.candidate.status
                )]
            }
        }
        Kind::Read => read_differences(ex, rules),
    };
    if differences.is_empty() {
        return Verdict {
            outcome: Outcome::Match,
            deviation: None,
            differences,
        };
    }
    // shopchat could not answer for a reason outside the comparison.
    if ex.candidate.status == 503 {
        return Verdict {
            outcome: Outcome::Error,
            deviation: None,
            differences: [
                vec!["shopchat answered 503 (database unavailable)".to_string()],
                differences,
            ]
            .concat(),
        };
    }
    match deviations::classify(ex, premises) {
        Some(id) => Verdict {
            outcome: Outcome::Expected,
            deviation: Some(id),
            differences,
        },
        None => Verdict {
            outcome: Outcome::Mismatch,
            deviation: None,
            differences,
        },
    }
}

fn read_differences(ex: &Exchange<'_>, rules: &Rules) -> Vec<String> {
    let (p, c) = (ex.primary, ex.candidate);
    let mut out = Vec::new();
    if p.status != c.status {
        out.push(format!("status {} vs {}", p.status, c.status));
    }
    for name in &rules.compare_headers {
        let (hp, hc) = (p.header(name), c.header(name));
        let noisy = ex
            .primary_again
            .is_some_and(|again| again.header(name) != hp);
        if rules.header_ignored(ex.route, name) || noisy {
            if hp.is_some() != hc.is_some() {
                out.push(format!(
                    "header {name}: {} vs {}",
                    if hp.is_some() { "present" } else { "absent" },
                    if hc.is_some() { "present" } else { "absent" }
                ));
            }
        } else if hp != hc {
            out.push(format!("header {name}: {hp:?} vs {hc:?}"));
        }
    }
    if let Some(d) = body_difference(ex, rules) {
        out.push(d);
    }
    out
}

/// How a JSON body was written (COMPAT §3): PHP compact or PHP pretty.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Layout {
    Compact,
    Pretty,
}

fn encode(v: &Value, layout: Layout) -> String {
    match layout {
        Layout::Compact => to_php_json(v),
        Layout::Pretty => to_php_json_pretty(v),
    }
}

/// The body as a JSON value and the PHP layout that reproduces it byte for
/// byte; `None` when it is not JSON or not written the way PHP writes it.
fn php_json(body: &[u8]) -> Option<(Value, Layout)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    [Layout::Compact, Layout::Pretty]
        .into_iter()
        .find(|l| encode(&v, *l).as_bytes() == body)
        .map(|l| (v, l))
}

/// `None` when the bodies are equal after masking.
fn body_difference(ex: &Exchange<'_>, rules: &Rules) -> Option<String> {
    let (p, c) = (&ex.primary.body, &ex.candidate.body);
    if p == c {
        return None;
    }
    let raw = || {
        let d = byte_diff(p, c);
        format!(
            "body differs at byte {}: {:?} vs {:?}",
            d.offset, d.primary, d.candidate
        )
    };
    let (Some((mut vp, lp)), Some((mut vc, lc))) = (php_json(p), php_json(c)) else {
        return Some(raw());
    };
    if lp != lc {
        return Some(format!("body layout {lp:?} vs {lc:?}; {}", raw()));
    }
    for rule in rules.paths_for(ex.route) {
        rules::mask(&mut vp, &rule.path, rule.part);
        rules::mask(&mut vc, &rule.path, rule.part);
    }
    if let Some((again, _)) = ex.primary_again.and_then(|a| php_json(&a.body)) {
        let (first, _) = php_json(p)?;
        for path in rules::differing_paths(&first, &again) {
            rules::mask(&mut vp, &path, rules::Part::Whole);
            rules::mask(&mut vc, &path, rules::Part::Whole);
        }
    }
    // Equal encodings ⇔ equal bytes outside the masked values (both sides
    // were shown to be PHP's exact encoding of their value).
    if encode(&vp, lp) == encode(&vc, lc) {
        return None;
    }
    let path = first_difference(&vp, &vc, &mut Vec::new()).unwrap_or_default();
    let at = |v: &Value| {
        let mut found = None;
        rules::for_each_match(&mut v.clone(), &path, &mut |x| found = Some(to_php_json(x)));
        found
            .map(|s| shorten(&s, 120))
            .unwrap_or_else(|| "(absent)".into())
    };
    Some(format!(
        "body {}: {} vs {}",
        rules::show_path(&path),
        at(&vp),
        at(&vc)
    ))
}

/// The first path (document order) where the two values differ, key order included.
fn first_difference(a: &Value, b: &Value, at: &mut Vec<Seg>) -> Option<Vec<Seg>> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for ((k, v), (l, w)) in x.iter().zip(y.iter()) {
                if k != l {
                    return Some(at.clone());
                }
                at.push(Seg::Key(k.clone()));
                let found = first_difference(v, w, at);
                at.pop();
                if found.is_some() {
                    return found;
                }
            }
            (x.len() != y.len()).then(|| at.clone())
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                at.push(Seg::Index(i));
                let found = first_difference(v, w, at);
                at.pop();
                if found.is_some() {
                    return found;
                }
            }
            (x.len() != y.len()).then(|| at.clone())
        }
        _ => (to_php_json(a) != to_php_json(b)).then(|| at.clone()),
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let head: String = s.chars().take(max).collect();
    format!("{head}…")
}

/// A byte-level diff: the common prefix and suffix are cut away and the
/// differing middle of each side is shown with a little context.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ByteDiff {
    /// First differing byte.
    pub offset: usize,
    /// Length of the differing run on each side.
    pub primary_len: usize,
    pub candidate_len: usize,
    /// Context (up to 40 bytes) + the differing run (up to 200) + context.
    pub primary: String,
    pub candidate: String,
}

pub fn byte_diff(a: &[u8], b: &[u8]) -> ByteDiff {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let max_suffix = a.len().min(b.len()) - prefix;
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(max_suffix)
        .take_while(|(x, y)| x == y)
        .count();
    let show = |s: &[u8]| {
        let mid_end = s.len() - suffix;
        let from = prefix.saturating_sub(40);
        let run_end = mid_end.min(prefix + 200);
        let to = (mid_end + 40).min(s.len());
        let mut out = String::from_utf8_lossy(&s[from..prefix]).into_owned();
        out.push_str("[[");
        out.push_str(&String::from_utf8_lossy(&s[prefix..run_end]));
        if run_end < mid_end {
            out.push('…');
        }
        out.push_str("]]");
        out.push_str(&String::from_utf8_lossy(&s[mid_end.max(run_end)..to]));
        out
    };
    ByteDiff {
        offset: prefix,
        primary_len: a.len() - suffix - prefix,
        candidate_len: b.len() - suffix - prefix,
        primary: show(a),
        candidate: show(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("X-RateLimit-Limit".into(), "600".into()),
                ("X-RateLimit-Remaining".into(), "599".into()),
            ],
            body: body.as_bytes().to_vec(),
        }
    }

    fn judge(p: &Answer, c: &Answer, rules: &Rules) -> Verdict {
        let req = RecordedRequest {
            method: "GET".into(),
            path: "/api/v2/chat/conversations".into(),
            ..Default::default()
        };
        compare(
            &Exchange {
                route: "conversations",
                kind: Kind::Read,
                request: &req,
                primary: p,
                candidate: c,
                primary_again: None,
            },
            rules,
            &Premises::default(),
        )
    }

    #[test]
    fn equal_answers_match_and_remaining_is_presence_only() {
        let p = answer(200, r#"{"a":"x\/y"}"#);
        let mut c = p.clone();
        c.headers[2].1 = "12".into();
        assert_eq!(judge(&p, &c, &Rules::builtin()).outcome, Outcome::Match);
        c.headers.remove(2);
        let v = judge(&p, &c, &Rules::builtin());
        assert_eq!(v.outcome, Outcome::Mismatch);
        assert_eq!(
            v.differences,
            vec!["header x-ratelimit-remaining: present vs absent"]
        );
    }

    #[test]
    fn escaping_differences_are_mismatches_even_with_rules() {
        let p = answer(200, r#"{"a":"x\/y","b":"\u00e9"}"#);
        let c = answer(200, r#"{"a":"x/y","b":"\u00e9"}"#);
        let mut rules = Rules::builtin();
        rules.paths.push(rules::PathRule {
            route: "*".into(),
            path: rules::parse_path("b").unwrap(),
            part: rules::Part::Whole,
        });
        let v = judge(&p, &c, &rules);
        assert_eq!(v.outcome, Outcome::Mismatch);
        assert!(
            v.differences[0].contains("layout") || v.differences[0].contains("byte"),
            "{v:?}"
        );
    }

    #[test]
    fn path_rules_mask_values_and_report_paths() {
        let p = answer(200, r#"{"links":[{"url":"http:\/\/a.test\/x"}],"n":1}"#);
        let c = answer(200, r#"{"links":[{"url":"http:\/\/b.test\/x"}],"n":2}"#);
        let mut rules = Rules::builtin();
        rules.paths.push(rules::PathRule {
            route: "conversations".into(),
            path: rules::parse_path("links[*].url").unwrap(),
            part: rules::Part::Host,
        });
        let v = judge(&p, &c, &rules);
        assert_eq!(v.outcome, Outcome::Mismatch);
        assert_eq!(v.differences, vec!["body $.n: 1 vs 2"]);
        let c2 = answer(200, r#"{"links":[{"url":"http:\/\/b.test\/x"}],"n":1}"#);
        assert_eq!(judge(&p, &c2, &rules).outcome, Outcome::Match);
    }

    #[test]
    fn key_order_matters() {
        let p = answer(200, r#"{"a":1,"b":2}"#);
        let c = answer(200, r#"{"b":2,"a":1}"#);
        assert_eq!(judge(&p, &c, &Rules::builtin()).outcome, Outcome::Mismatch);
    }

    #[test]
    fn byte_diffs_show_the_differing_run() {
        let d = byte_diff(b"hello big world", b"hello small world");
        assert_eq!(d.offset, 6);
        assert_eq!(d.primary, "hello [[big]] world");
        assert_eq!(d.candidate, "hello [[small]] world");
        let d = byte_diff(b"abc", b"abcd");
        assert_eq!((d.offset, d.primary_len, d.candidate_len), (3, 0, 1));
    }

    #[test]
    fn logged_answers_hold_no_session_cookie() {
        let a = Answer {
            status: 200,
            headers: vec![
                (
                    "Set-Cookie".into(),
                    "shop_session=eyJpdiI6; path=/; httponly".into(),
                ),
                ("Content-Type".into(), "application/json".into()),
            ],
            body: b"{}".to_vec(),
        };
        let logged = a.to_json().to_string();
        assert!(!logged.contains("shop_session"), "{logged}");
        assert!(logged.contains("<redacted>") && logged.contains("application/json"));
    }

    #[test]
    fn redaction_keeps_the_token_id_only() {
        assert_eq!(redact_authorization("Bearer 5|abc"), "Bearer 5|<redacted>");
        assert_eq!(redact_authorization("Bearer abc"), "<redacted>");
        assert_eq!(redact_authorization("Bearer 5|abc, Basic x"), "<redacted>");
        let r = RecordedRequest {
            method: "GET".into(),
            path: "/".into(),
            headers: vec![
                ("System-Key".into(), "k".into()),
                ("Accept".into(), "x".into()),
            ],
            ..Default::default()
        };
        assert_eq!(r.redacted().headers[0].1, "<redacted>");
        assert_eq!(r.redacted().headers[1].1, "x");
    }
}

//! Comparing the primary's answer with shopchat's (shadow and replay).
//!
//! Reads (`GET`/`HEAD`) are compared in full: status, the headers of
//! [`super::rules::COMPARED_HEADERS`] and the body, byte for byte except where
//! a rule or the noise floor masks a JSON value. Writes (`POST` to
//! insert-message / create-conversation) are never executed twice, so only
//! the status class is compared (COMPAT §11.2). A difference that one of the
//! deliberate deviations explains (COMPAT §9) is `expected`, not `mismatch`.

use serde::Serialize;
use serde_json::Value;

use crate::laravel::json::{to_php_json, to_php_json_pretty};
use crate::shadow::deviations::{self, Premises};
use crate::shadow::exchange::{Exchange, Kind};
use crate::shadow::rules::{self, Rules, Seg};

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
    use crate::shadow::exchange::{Answer, RecordedRequest};

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
}

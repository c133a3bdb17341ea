//! Noise rules: which differences between the primary's answer and
//! shopchat's are not worth a `mismatch` (docs/shadow.md, "Ignore rules").
//!
//! A rules file (TOML, or JSON when the name ends in `.json`) lists
//! `[[ignore]]` entries, each for one route (or `*`) and either a response
//! header or a JSON path of the body:
//!
//! ```toml
//! [[ignore]]
//! route = "*"
//! header = "x-ratelimit-remaining"   # compared for presence only
//!
//! [[ignore]]
//! route = "conversations"
//! path = "meta.links[*].url"
//! part = "host"                      # only scheme://host[:port] is ignored
//! ```
//!
//! Paths: dot-separated keys, `[*]` any element, `[N]` one element, `*` any
//! key. Without `part` the whole value is ignored.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::Value;

/// The headers compared by default (COMPAT §1.3, §1.4, §1.6). Everything
/// else (Date, X-Request-Id, Set-Cookie of D10, Server, …) is not compared.
pub const COMPARED_HEADERS: &[&str] = &[
    "content-type",
    "location",
    "allow",
    "cache-control",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "retry-after",
    "x-ratelimit-reset",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// `false` drops the built-in rules below.
    #[serde(default = "yes")]
    defaults: bool,
    /// Extra headers to compare exactly.
    #[serde(default)]
    compare_headers: Vec<String>,
    #[serde(default)]
    ignore: Vec<IgnoreEntry>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct IgnoreEntry {
    #[serde(default = "any_route")]
    route: String,
    header: Option<String>,
    path: Option<String>,
    part: Option<String>,
    /// The rule's reason, for whoever reads the rules file (accepted, not used: the file
    /// rejects unknown fields).
    #[serde(default, rename = "why")]
    _why: Option<String>,
}

fn any_route() -> String {
    "*".into()
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    AnyKey,
    Index(usize),
    AnyIndex,
}

/// What part of a matched value is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Whole,
    /// The `scheme://host[:port]` prefix of a URL string.
    Host,
}

#[derive(Debug, Clone)]
pub struct PathRule {
    pub route: String,
    pub path: Vec<Seg>,
    pub part: Part,
}

#[derive(Debug, Clone)]
pub struct HeaderRule {
    pub route: String,
    pub header: String,
}

#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub compare_headers: Vec<String>,
    pub headers: Vec<HeaderRule>,
    pub paths: Vec<PathRule>,
}

/// The placeholder an ignored value is replaced with on both sides.
pub const IGNORED: &str = "<ignored>";

impl Rules {
    /// The built-in rules: rate-limit counters and the 429 clock are
    /// per-process (D8, §1.4), so only their presence is compared.
    pub fn builtin() -> Rules {
        let mut r = Rules {
            compare_headers: COMPARED_HEADERS.iter().map(|s| s.to_string()).collect(),
            ..Rules::default()
        };
        for h in ["x-ratelimit-remaining", "x-ratelimit-reset", "retry-after"] {
            r.headers.push(HeaderRule {
                route: "*".into(),
                header: h.into(),
            });
        }
        r
    }

    pub fn load(path: &Path) -> anyhow::Result<Rules> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read rules file {}", path.display()))?;
        let json = path.extension().and_then(|e| e.to_str()) == Some("json");
        Self::parse(&text, json).with_context(|| format!("rules file {}", path.display()))
    }

    pub fn parse(text: &str, json: bool) -> anyhow::Result<Rules> {
        let file: File = if json {
            serde_json::from_str(text)?
        } else {
            toml::from_str(text)?
        };
        let mut rules = if file.defaults {
            Rules::builtin()
        } else {
            Rules {
                compare_headers: COMPARED_HEADERS.iter().map(|s| s.to_string()).collect(),
                ..Rules::default()
            }
        };
        for h in file.compare_headers {
            let h = h.to_ascii_lowercase();
            if !rules.compare_headers.contains(&h) {
                rules.compare_headers.push(h);
            }
        }
        for entry in file.ignore {
            match (entry.header, entry.path) {
                (Some(header), None) => {
                    if entry.part.is_some() {
                        bail!("ignore rule for header {header}: `part` applies to paths only");
                    }
                    rules.headers.push(HeaderRule {
                        route: entry.route,
                        header: header.to_ascii_lowercase(),
                    })
                }
                (None, Some(path)) => {
                    let part = match entry.part.as_deref() {
                        None | Some("value") => Part::Whole,
                        Some("host") => Part::Host,
                        Some(other) => bail!("unknown part {other:?} (value or host)"),
                    };
                    rules.paths.push(PathRule {
                        route: entry.route,
                        path: parse_path(&path)?,
                        part,
                    })
                }
                _ => bail!("each [[ignore]] needs exactly one of `header` or `path`"),
            }
        }
        Ok(rules)
    }

    /// Whether only the presence of `header` is compared on `route`.
    pub fn header_ignored(&self, route: &str, header: &str) -> bool {
        self.headers
            .iter()
            .any(|r| route_matches(&r.route, route) && r.header.eq_ignore_ascii_case(header))
    }

    /// The path rules of `route`.
    pub fn paths_for<'a>(&'a self, route: &'a str) -> impl Iterator<Item = &'a PathRule> + 'a {
        self.paths
            .iter()
            .filter(move |r| route_matches(&r.route, route))
    }
}

fn route_matches(pattern: &str, route: &str) -> bool {
    pattern == "*" || pattern == route
}

/// `meta.links[*].url` → `[Key(meta), Key(links), AnyIndex, Key(url)]`.
pub fn parse_path(text: &str) -> anyhow::Result<Vec<Seg>> {
    let text = text.strip_prefix("$.").unwrap_or(text);
    let mut segs = Vec::new();
    for part in text.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        match name {
            "" if !rest.is_empty() => {}
            "" => bail!("empty segment in path {text:?}"),
            "*" => segs.push(Seg::AnyKey),
            key => segs.push(Seg::Key(key.to_string())),
        }
        while !rest.is_empty() {
            let Some(end) = rest.find(']').filter(|_| rest.starts_with('[')) else {
                bail!("bad index in path {text:?}");
            };
            let inner = &rest[1..end];
            segs.push(if inner == "*" {
                Seg::AnyIndex
            } else {
                Seg::Index(
                    inner
                        .parse()
                        .with_context(|| format!("bad index {inner:?} in path {text:?}"))?,
                )
            });
            rest = &rest[end + 1..];
        }
    }
    Ok(segs)
}

/// Applies `f` to every value `path` designates in `v`.
pub fn for_each_match(v: &mut Value, path: &[Seg], f: &mut dyn FnMut(&mut Value)) {
    let Some((first, rest)) = path.split_first() else {
        f(v);
        return;
    };
    match (first, v) {
        (Seg::Key(k), Value::Object(map)) => {
            if let Some(child) = map.get_mut(k) {
                for_each_match(child, rest, f);
            }
        }
        (Seg::AnyKey, Value::Object(map)) => {
            for child in map.values_mut() {
                for_each_match(child, rest, f);
            }
        }
        (Seg::Index(i), Value::Array(list)) => {
            if let Some(child) = list.get_mut(*i) {
                for_each_match(child, rest, f);
            }
        }
        (Seg::AnyIndex, Value::Array(list)) => {
            for child in list {
                for_each_match(child, rest, f);
            }
        }
        _ => {}
    }
}

/// Masks what a rule ignores.
pub fn mask(v: &mut Value, path: &[Seg], part: Part) {
    for_each_match(v, path, &mut |value| match part {
        Part::Whole => *value = Value::String(IGNORED.into()),
        Part::Host => {
            if let Value::String(s) = value {
                *s = without_host(s);
            }
        }
    });
}

/// `http://shop.test:8080/a/b?c` → `<host>/a/b?c`; other strings unchanged.
fn without_host(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let after = &url[scheme_end + 3..];
    let path_start = after.find(['/', '?', '#']).unwrap_or(after.len());
    format!("<host>{}", &after[path_start..])
}

/// Concrete paths where `a` and `b` differ (for the noise floor): objects by
/// key, arrays by index; a node whose kind or length differs is one path.
pub fn differing_paths(a: &Value, b: &Value) -> Vec<Vec<Seg>> {
    let mut out = Vec::new();
    walk_diff(a, b, &mut Vec::new(), &mut out);
    out
}

fn walk_diff(a: &Value, b: &Value, at: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y))
            if x.len() == y.len() && x.keys().zip(y.keys()).all(|(k, l)| k == l) =>
        {
            for (k, v) in x {
                at.push(Seg::Key(k.clone()));
                walk_diff(v, &y[k], at, out);
                at.pop();
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                at.push(Seg::Index(i));
                walk_diff(v, w, at, out);
                at.pop();
            }
        }
        _ if a == b => {}
        _ => out.push(at.clone()),
    }
}

/// A path for people: `$.data[0].title`.
pub fn show_path(path: &[Seg]) -> String {
    let mut s = String::from("$");
    for seg in path {
        match seg {
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::AnyKey => s.push_str(".*"),
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
            Seg::AnyIndex => s.push_str("[*]"),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_parse() {
        assert_eq!(
            parse_path("meta.links[*].url").unwrap(),
            vec![
                Seg::Key("meta".into()),
                Seg::Key("links".into()),
                Seg::AnyIndex,
                Seg::Key("url".into())
            ]
        );
        assert_eq!(
            parse_path("$.data[0].*").unwrap(),
            vec![Seg::Key("data".into()), Seg::Index(0), Seg::AnyKey]
        );
        assert!(parse_path("a..b").is_err());
        assert!(parse_path("a[x]").is_err());
    }

    #[test]
    fn masking_whole_values_and_hosts() {
        let mut v = json!({"meta": {"links": [{"url": "http://a.test:81/x?page=1"}, {"url": null}]}, "n": 1});
        mask(
            &mut v,
            &parse_path("meta.links[*].url").unwrap(),
            Part::Host,
        );
        assert_eq!(v["meta"]["links"][0]["url"], "<host>/x?page=1");
        assert_eq!(v["meta"]["links"][1]["url"], Value::Null);
        mask(&mut v, &parse_path("n").unwrap(), Part::Whole);
        assert_eq!(v["n"], IGNORED);
    }

    #[test]
    fn rules_files() {
        let r = Rules::parse(
            "compare_headers = [\"X-Extra\"]\n[[ignore]]\nroute = \"messages\"\npath = \"data[*].time\"\n[[ignore]]\nheader = \"Allow\"\n",
            false,
        )
        .unwrap();
        assert!(r.compare_headers.contains(&"x-extra".to_string()));
        assert!(r.header_ignored("conversations", "allow"));
        assert!(r.header_ignored("messages", "x-ratelimit-remaining"));
        assert_eq!(r.paths_for("messages").count(), 1);
        assert_eq!(r.paths_for("conversations").count(), 0);
        let j = Rules::parse(
            r#"{"defaults": false, "ignore": [{"route": "*", "path": "a", "part": "host"}]}"#,
            true,
        )
        .unwrap();
        assert!(!j.header_ignored("messages", "x-ratelimit-remaining"));
        assert_eq!(j.paths[0].part, Part::Host);
        assert!(Rules::parse("[[ignore]]\nroute = \"x\"\n", false).is_err());
        assert!(Rules::parse("[[ignore]]\npath = \"a\"\npart = \"port\"\n", false).is_err());
    }

    #[test]
    fn differing_paths_are_concrete() {
        let a = json!({"data": [{"id": 1, "t": "x"}], "total": 1});
        let b = json!({"data": [{"id": 1, "t": "y"}], "total": 1});
        let d = differing_paths(&a, &b);
        assert_eq!(show_path(&d[0]), "$.data[0].t");
        assert_eq!(d.len(), 1);
        let c = json!({"data": [], "total": 1});
        assert_eq!(show_path(&differing_paths(&a, &c)[0]), "$.data");
    }
}

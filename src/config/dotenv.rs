//! A reader for the shop's Laravel `.env` file (COMPAT §10).
//!
//! Laravel reads `.env` with phpdotenv and then post-processes every value in
//! `env()`. shopchat must understand the very same file, so this module
//! implements the subset of phpdotenv's grammar that real shop `.env` files use:
//! `KEY=value`, optional `export `, `#` comments, single quotes (literal),
//! double quotes (escapes, `${VAR}` expansion, may span lines) and unquoted
//! values (trimmed, inline ` #` comments, `${VAR}` expansion).

use std::collections::HashMap;

/// Parses the text of a `.env` file into `(NAME, raw value)` pairs, in file order.
///
/// `lookup` resolves `${VAR}` references that the file itself has not defined
/// (phpdotenv consults the process environment first: an existing environment
/// variable wins over the file, and so it also wins inside expansions).
pub fn parse(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut defined: HashMap<String, String> = HashMap::new();
    let mut lines = text.lines().enumerate();
    while let Some((lineno, line)) = lines.next() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let trimmed = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let Some((name, rest)) = trimmed.split_once('=') else {
            return Err(format!("line {}: expected NAME=value", lineno + 1));
        };
        let name = name.trim().to_string();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(format!(
                "line {}: invalid variable name {:?}",
                lineno + 1,
                name
            ));
        }
        let rest = rest.trim_start();
        let resolve = |var: &str| -> String {
            lookup(var)
                .or_else(|| defined.get(var).cloned())
                .unwrap_or_default()
        };
        let value = if let Some(body) = rest.strip_prefix('\'') {
            match body.find('\'') {
                Some(end) => body[..end].to_string(),
                None => return Err(format!("line {}: unterminated single quote", lineno + 1)),
            }
        } else if let Some(body) = rest.strip_prefix('"') {
            // Double-quoted values may continue over several lines.
            let mut raw = body.to_string();
            loop {
                if let Some(end) = closing_quote(&raw) {
                    raw.truncate(end);
                    break;
                }
                match lines.next() {
                    Some((_, next)) => {
                        raw.push('\n');
                        raw.push_str(next);
                    }
                    None => return Err(format!("line {}: unterminated double quote", lineno + 1)),
                }
            }
            expand(&unescape(&raw), &resolve)
        } else {
            let value = match rest.find(" #") {
                Some(pos) => &rest[..pos],
                None => rest,
            };
            expand(value.trim(), &resolve)
        };
        defined.insert(name.clone(), value.clone());
        out.push((name, value));
    }
    Ok(out)
}

/// Position of the first unescaped `"`.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('$') => out.push('$'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// `${VAR}` expansion (phpdotenv does not expand bare `$VAR`).
fn expand(s: &str, resolve: &dyn Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start + 2..].find('}') {
            Some(end) => {
                out.push_str(&resolve(&rest[start + 2..start + 2 + end]));
                rest = &rest[start + 2 + end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// What Laravel's `env()` makes of a raw value (COMPAT §10): `null`/`(null)`
/// is unset, `empty`/`(empty)` is the empty string, and a value still wrapped
/// in double quotes loses them. `true`/`false` stay textual here; the typed
/// settings parse them where a boolean is expected.
pub fn laravel_value(raw: &str) -> Option<String> {
    match raw.to_ascii_lowercase().as_str() {
        "null" | "(null)" => return None,
        "empty" | "(empty)" => return Some(String::new()),
        _ => {}
    }
    if raw.len() >= 2 && raw.starts_with('"') && raw.ends_with('"') {
        return Some(raw[1..raw.len() - 1].to_string());
    }
    Some(raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Vec<(String, String)> {
        parse(text, &|name| {
            (name == "FROM_ENV").then(|| "env-value".to_string())
        })
        .unwrap()
    }

    #[test]
    fn plain_quoted_and_commented_values() {
        let got = p("# comment\nAPP_NAME=Active eCommerce\nexport DB_HOST=127.0.0.1 # local\nA='x # y ${B}'\nB=\"two\\nlines\"\nEMPTY=\n");
        assert_eq!(
            got,
            vec![
                ("APP_NAME".into(), "Active eCommerce".into()),
                ("DB_HOST".into(), "127.0.0.1".into()),
                ("A".into(), "x # y ${B}".into()),
                ("B".into(), "two\nlines".into()),
                ("EMPTY".into(), "".into()),
            ]
        );
    }

    #[test]
    fn expansion_uses_file_and_environment() {
        let got = p("HOST=shop.test\nURL=\"https://${HOST}/x\"\nE=${FROM_ENV}-${MISSING}\n");
        assert_eq!(got[1].1, "https://shop.test/x");
        assert_eq!(got[2].1, "env-value-");
    }

    #[test]
    fn multi_line_double_quotes() {
        let got = p("KEY=\"line1\nline2\"\nNEXT=1\n");
        assert_eq!(got[0].1, "line1\nline2");
        assert_eq!(got[1].1, "1");
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("OK=1\nnot a pair\n", &|_| None).unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(parse("A='open\n", &|_| None).is_err());
    }

    #[test]
    fn laravel_value_rules() {
        assert_eq!(laravel_value("null"), None);
        assert_eq!(laravel_value("(null)"), None);
        assert_eq!(laravel_value("(empty)"), Some(String::new()));
        assert_eq!(laravel_value("\"quoted\""), Some("quoted".into()));
        assert_eq!(laravel_value("true"), Some("true".into()));
    }
}

//! Laravel's `Request::expectsJson()` (COMPAT §1.5): decides whether error and authentication
//! answers are JSON (401) or HTML/redirect (302).

/// One entry of the `Accept` header after parsing.
struct AcceptItem {
    /// Media range as written (trimmed); Symfony keys its items by it, so duplicates collapse.
    raw: String,
    quality: f64,
    /// Position of the (last) occurrence, the tie-breaker of the stable sort.
    index: usize,
}

/// `true` iff the request is a "JSON client" per COMPAT §1.5:
/// the first acceptable type contains `/json` or `+json`, or the request is XHR
/// (`X-Requested-With` exactly `XMLHttpRequest`), not PJAX (`X-PJAX` absent, `""` or `"0"`, PHP's
/// loose `== true`), and accepts anything (`Accept` absent/empty, or first type `*/*` or `*`).
///
/// Arguments are the first value of each header, `None` when absent.
pub fn is_json_client(
    accept: Option<&str>,
    x_requested_with: Option<&str>,
    x_pjax: Option<&str>,
) -> bool {
    let first = first_type(accept.unwrap_or(""));
    let first = first.as_deref();

    // Laravel `wantsJson()`.
    if first.is_some_and(|t| t.contains("/json") || t.contains("+json")) {
        return true;
    }

    // Laravel `ajax() && !pjax() && acceptsAnyContentType()`.
    let ajax = x_requested_with == Some("XMLHttpRequest");
    let pjax = matches!(x_pjax, Some(v) if !v.is_empty() && v != "0");
    let accepts_any = matches!(first, None | Some("*/*") | Some("*"));
    ajax && !pjax && accepts_any
}

/// The best media range of an `Accept` value, lower-cased ([`acceptable_types`]). One entry
/// (no comma, what the app sends) is the first whatever its quality: the parse and sort of every
/// entry are not needed for it.
fn first_type(header: &str) -> Option<String> {
    if header.contains(',') {
        acceptable_types(header).into_iter().next()
    } else if header.trim().is_empty() {
        None
    } else {
        Some(media_range(header).to_ascii_lowercase())
    }
}

/// Media ranges of an `Accept` value, lower-cased, best first (COMPAT §1.5): stable sort by `q`
/// descending, so equal qualities keep header order.
///
/// Two PHP details beyond the letter of §1.5 are kept because the PHP implementation has them
/// (Symfony's `AcceptHeader`): blank entries (`a,,b`, a trailing comma) are skipped, and a repeated
/// media range replaces the earlier one (its `q` and position are those of the last occurrence),
/// since Symfony stores items in an array keyed by the media range.
fn acceptable_types(header: &str) -> Vec<String> {
    let mut items: Vec<AcceptItem> = Vec::new();
    for (index, entry) in header.split(',').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        let raw = media_range(entry).to_owned();
        // The parameters: what follows the media range's `;`.
        let parts = entry.split(';').skip(1);
        let mut quality = 1.0;
        for param in parts {
            let (name, value) = match param.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (param, None),
            };
            if name.trim().eq_ignore_ascii_case("q") {
                // A bare `q` is PHP `true`, which casts to 1.0.
                quality = value.map_or(1.0, php_float);
            }
        }
        match items.iter_mut().find(|item| item.raw == raw) {
            Some(existing) => {
                existing.quality = quality;
                existing.index = index;
            }
            None => items.push(AcceptItem {
                raw,
                quality,
                index,
            }),
        }
    }
    items.sort_by(|a, b| b.quality.total_cmp(&a.quality).then(a.index.cmp(&b.index)));
    items
        .into_iter()
        .map(|item| item.raw.to_ascii_lowercase())
        .collect()
}

/// The media range of an `Accept` entry: what comes before its parameters, trimmed.
fn media_range(entry: &str) -> &str {
    entry.split(';').next().unwrap_or("").trim()
}

/// PHP `(float) $string` of a `q` value: optional surrounding double quotes are removed (Symfony's
/// header parser unquotes), then the longest leading decimal number is used and text without one
/// is `0.0`. So a malformed `q=abc` ranks last, as in PHP, rather than being treated as 1.
fn php_float(value: &str) -> f64 {
    let v = value.trim();
    let v = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v);
    let v = v.trim_start_matches([' ', '\t', '\n', '\r', '\x0B', '\x0C']);
    let b = v.as_bytes();
    let digits_from = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut end = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let int_end = digits_from(end);
    let mut has_digits = int_end > end;
    end = int_end;
    if b.get(end) == Some(&b'.') {
        let frac_end = digits_from(end + 1);
        if has_digits || frac_end > end + 1 {
            has_digits = true;
            end = frac_end;
        }
    }
    if !has_digits {
        return 0.0;
    }
    if matches!(b.get(end), Some(b'e' | b'E')) {
        let mut exp = end + 1;
        if matches!(b.get(exp), Some(b'+' | b'-')) {
            exp += 1;
        }
        let exp_end = digits_from(exp);
        if exp_end > exp {
            end = exp_end;
        }
    }
    v[..end].parse().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_is_first_without_the_full_parse() {
        for header in [
            "application/json",
            " Application/JSON ; q=0",
            ";q=1",
            "text/html;level=1",
            "*/*",
            "",
            "  ",
        ] {
            assert_eq!(
                first_type(header),
                acceptable_types(header).into_iter().next(),
                "{header:?}"
            );
        }
    }

    fn json(accept: Option<&str>) -> bool {
        is_json_client(accept, None, None)
    }

    #[test]
    fn examples_of_1_5() {
        assert!(json(Some("application/json")));
        assert!(json(Some("text/html;q=0.5, application/json")));
        assert!(!json(Some("*/*")));
        assert!(is_json_client(Some("*/*"), Some("XMLHttpRequest"), None));
        assert!(!json(None));
    }

    #[test]
    fn json_detection_variants() {
        assert!(json(Some("application/vnd.api+json")));
        assert!(json(Some("  Application/JSON ; charset=utf-8")));
        assert!(!json(Some("text/html, application/json")));
        assert!(!json(Some("")));
        // A plain substring test, as Laravel's `Str::contains`.
        assert!(json(Some("text/json-seq")));
        assert!(!json(Some("text/xjson")));
    }

    #[test]
    fn q_ordering_is_stable_and_descending() {
        assert_eq!(
            acceptable_types("a/a;q=0.5, b/b, c/c;q=0.9, d/d;q=0.5, e/e;q=1"),
            ["b/b", "e/e", "c/c", "a/a", "d/d"]
        );
        assert!(json(Some("text/html;q=0.9, application/json;q=0.91")));
        assert!(!json(Some("application/json;q=0.9, text/html")));
        assert!(json(Some("text/html;Q=0.1, application/json")));
        assert!(json(Some("text/html;q=\"0.1\", application/json")));
        // Equal q keeps header order.
        assert!(!json(Some("text/html;q=0.5, application/json;q=0.5")));
        // Other parameters do not matter.
        assert!(json(Some(
            "application/json;level=1;q=0.8, text/html;q=0.7"
        )));
    }

    #[test]
    fn malformed_q_follows_php_float_cast() {
        // `(float) "abc"` is 0: the entry sinks below the default q=1.
        assert!(!json(Some("application/json;q=abc, text/html")));
        assert!(json(Some("application/json;q=.9x, text/html;q=0.5")));
        // A bare `q` counts as 1.
        assert!(json(Some("application/json;q, text/html;q=0.99")));
        assert_eq!(php_float("0.5"), 0.5);
        assert_eq!(php_float(" 1e-1junk"), 0.1);
        assert_eq!(php_float("1."), 1.0);
        assert_eq!(php_float(".5"), 0.5);
        assert_eq!(php_float("-2"), -2.0);
        assert_eq!(php_float("1e"), 1.0);
        assert_eq!(php_float("."), 0.0);
        assert_eq!(php_float("inf"), 0.0);
        assert_eq!(php_float("nan"), 0.0);
        assert_eq!(php_float(""), 0.0);
    }

    #[test]
    fn blank_and_duplicate_entries() {
        assert_eq!(acceptable_types(" , ,"), Vec::<String>::new());
        assert!(is_json_client(Some(", ,"), Some("XMLHttpRequest"), None));
        assert!(json(Some(",application/json")));
        // The last occurrence of a repeated type decides its q.
        assert!(!json(Some(
            "application/json, text/html;q=0.5, application/json;q=0.1"
        )));
        assert!(json(Some(
            "application/json;q=0.1, text/html;q=0.5, application/json"
        )));
    }

    #[test]
    fn xhr_rules() {
        let xhr = Some("XMLHttpRequest");
        assert!(is_json_client(None, xhr, None));
        assert!(is_json_client(Some(""), xhr, None));
        assert!(is_json_client(Some("*"), xhr, None));
        assert!(is_json_client(Some("*/*;q=0.8"), xhr, None));
        assert!(!is_json_client(Some("text/html"), xhr, None));
        assert!(!is_json_client(Some("text/html, */*"), xhr, None));
        assert!(is_json_client(None, xhr, Some("")));
        assert!(is_json_client(None, xhr, Some("0")));
        assert!(!is_json_client(None, xhr, Some("true")));
        assert!(!is_json_client(None, xhr, Some("1")));
        assert!(!is_json_client(None, Some("xmlhttprequest"), None));
        assert!(!is_json_client(None, Some("XMLHttpRequest "), None));
        // A JSON Accept wins regardless of PJAX.
        assert!(is_json_client(Some("application/json"), xhr, Some("true")));
    }
}

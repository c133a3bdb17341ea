//! Recognising the deliberate deviations of COMPAT §9 in a pair of answers,
//! so that they count as `expected` instead of `mismatch`.
//!
//! Each recogniser is narrow: it names the exact answer shopchat gives for
//! the deviation, and where a wrong classification could hide a real bug
//! (D1: a participant refused) it also needs a premise checked against the
//! database by the shadow worker ([`Premises`]). Replay has no database and
//! leaves premises unknown: the answers alone decide there.

use serde_json::Value;

use crate::shadow::exchange::Exchange;

/// Facts about the request, looked up without side effects after the fact.
/// `None` = not known (replay, or the lookup failed).
#[derive(Debug, Clone, Default)]
pub struct Premises {
    /// D1: the conversation does not exist or the caller takes no part in it.
    pub not_participant: Option<bool>,
    /// K6: the request's token no longer exists.
    pub token_gone: Option<bool>,
}

/// The id of the deviation that explains the difference, if one does.
pub fn classify(ex: &Exchange<'_>, premises: &Premises) -> Option<&'static str> {
    let (p, c) = (ex.primary, ex.candidate);
    let c_json = || serde_json::from_slice::<Value>(&c.body).ok();
    let c_message = || {
        c_json()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
            .unwrap_or_default()
    };

    // D8: PHP counts per client IP, so behind a proxy every user shares one
    // bucket; shopchat counts per token user (§1.4).
    if p.status == 429 && c.status != 429 {
        return Some("D8");
    }
    // §9 "other": request limits (§1.2 step 0) and the Host check are shopchat's own.
    if matches!(c.status, 408 | 413 | 431) {
        return Some("limits");
    }
    if c.status == 404 && c_message() == "Bad hostname provided." {
        return Some("host-check");
    }
    // D11: App-Language with a path separator is a 500 in PHP.
    if let Some(lang) = ex.request.header("app-language") {
        if (lang.contains('/') || lang.contains('\\')) && p.status >= 500 && c.status < 500 {
            return Some("D11");
        }
    }
    // D1: the 404 Conversation answer for a foreign, unknown or malformed id,
    // where PHP shows a page (reads) or stores a row (insert-message).
    if c.status == 404
        && c_message().starts_with("No query results for model [App\\Models\\Conversation] ")
        && premises.not_participant != Some(false)
    {
        match ex.route {
            "messages" | "get-new-messages" if p.status == 200 => return Some("D1"),
            // PHP answers 200 for an existing conversation and stores an
            // orphan row then 500s for an unknown one (D3).
            "insert-message" if p.status == 200 || p.status >= 500 => return Some("D1"),
            _ => {}
        }
    }
    // D2: shopchat validates; PHP stores NULLs, truncates or fails with 500.
    if matches!(ex.route, "insert-message" | "create-conversation")
        && c.status == 422
        && p.status != 422
    {
        return Some("D2");
    }
    // D4: dangling data is shown instead of a 500 for the whole page.
    if p.status >= 500 && c.status == 200 {
        let dangling = match ex.route {
            "conversations" => c_json().is_some_and(|v| has_dangling_receiver(&v)),
            "messages" | "get-new-messages" => c_json().is_some_and(|v| {
                items(&v).any(|i| i.get("send_type").and_then(Value::as_str) == Some("deleted"))
            }),
            // PHP 500s after writing when the receiver has no shop (D3, D4).
            "create-conversation" => true,
            _ => false,
        };
        if dangling {
            return Some("D4");
        }
        // §9 "other": a page whose offset overflows is empty (PHP 500).
        if c_json().is_some_and(|v| {
            v.get("data")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
                && v.pointer("/meta/current_page")
                    .and_then(Value::as_i64)
                    .is_some_and(|page| page > 1_000_000_000_000_000)
        }) {
            return Some("page-overflow");
        }
    }
    // D4: a product whose owner is gone is 404 Product (PHP 500).
    if ex.route == "create-conversation"
        && p.status >= 500
        && c.status == 404
        && c_message().starts_with("No query results for model [App\\Models\\Product] ")
    {
        return Some("D4");
    }
    // §9 "other": an unknown tokenable_type is 401 (PHP 500).
    if p.status >= 500 && matches!(c.status, 401 | 302) {
        return Some("tokenable-type");
    }
    // §1.3: non-JSON clients get a minimal error page with the same status.
    if p.status == c.status
        && p.status >= 400
        && is_html(p.header("content-type"))
        && is_html(c.header("content-type"))
        && ex.kind == crate::shadow::exchange::Kind::Read
    {
        return Some("error-page");
    }
    // K6 seen through a proxy: the primary answered "banned" and deleted the
    // token before shopchat's shadow ran, so shopchat finds no token.
    if p.status == 200
        && matches!(c.status, 401 | 302)
        && premises.token_gone != Some(false)
        && serde_json::from_slice::<Value>(&p.body)
            .ok()
            .is_some_and(|v| v.get("status").and_then(Value::as_str) == Some("banned"))
    {
        return Some("K6-token-deleted");
    }
    None
}

fn is_html(ct: Option<String>) -> bool {
    ct.is_some_and(|c| c.to_ascii_lowercase().starts_with("text/html"))
}

fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.get("data")
        .and_then(Value::as_array)
        .map(|a| a.iter())
        .into_iter()
        .flatten()
}

/// A conversation item shopchat renders for dangling data (§6.3).
fn has_dangling_receiver(v: &Value) -> bool {
    items(v).any(|i| {
        let ty = i.get("receiver_type").and_then(Value::as_str);
        ty == Some("deleted")
            || (ty != Some("admin") && i.get("shop_id").and_then(Value::as_i64) == Some(0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shadow::exchange::{Answer, Kind, RecordedRequest};

    fn ans(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    fn classify_for(
        route: &str,
        p: &Answer,
        c: &Answer,
        premises: &Premises,
    ) -> Option<&'static str> {
        classify_with(route, p, c, premises, &[])
    }

    fn classify_with(
        route: &str,
        p: &Answer,
        c: &Answer,
        premises: &Premises,
        headers: &[(&str, &str)],
    ) -> Option<&'static str> {
        let req = RecordedRequest {
            method: "GET".into(),
            path: "/".into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        classify(
            &Exchange {
                route,
                kind: Kind::Read,
                request: &req,
                primary: p,
                candidate: c,
                primary_again: None,
            },
            premises,
        )
    }

    #[test]
    fn d1_needs_the_404_body_and_a_true_premise() {
        let page = ans(200, r#"{"data":[],"success":true,"status":200}"#);
        let d1 = ans(404, "{\n    \"message\": \"No query results for model [App\\\\Models\\\\Conversation] 3\"\n}");
        let unknown = Premises::default();
        assert_eq!(classify_for("messages", &page, &d1, &unknown), Some("D1"));
        let participant = Premises {
            not_participant: Some(false),
            ..Premises::default()
        };
        assert_eq!(classify_for("messages", &page, &d1, &participant), None);
        assert_eq!(classify_for("conversations", &page, &d1, &unknown), None);
        let other404 = ans(404, "{\n    \"message\": \"Not here\"\n}");
        assert_eq!(classify_for("messages", &page, &other404, &unknown), None);
    }

    #[test]
    fn d4_needs_a_dangling_item() {
        let err = ans(500, "{\n    \"message\": \"Server Error\"\n}");
        let dangling = ans(200, r#"{"data":[{"receiver_type":"seller","shop_id":0}]}"#);
        let fine = ans(200, r#"{"data":[{"receiver_type":"seller","shop_id":2}]}"#);
        let none = Premises::default();
        assert_eq!(
            classify_for("conversations", &err, &dangling, &none),
            Some("D4")
        );
        assert_eq!(classify_for("conversations", &err, &fine, &none), None);
        let d11 = [("App-Language", "a/b")];
        assert_eq!(
            classify_with("conversations", &err, &fine, &none, &d11),
            Some("D11")
        );
    }
}

//! What the shadow and the replay compare: a recorded request, the two
//! answers (primary and shopchat) and the exchange that holds them.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

#[cfg(test)]
mod tests {
    use super::*;

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

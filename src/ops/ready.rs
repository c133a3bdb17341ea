//! `GET /ready`: may a load balancer send chat traffic here?
//!
//! Checks, in order, each named in the JSON body:
//! - `database`: `SELECT 1` answered within `SHOPCHAT_READY_TIMEOUT_MS` (COMPAT §1.3: `/ready`
//!   fails while the database is unavailable);
//! - `schema`: every table and column of SCHEMA.md §2–3 present with a compatible type
//!   ([`crate::ops::schema`]); the result is kept `SHOPCHAT_READY_CACHE_SECONDS`, so frequent
//!   probes cost one `SELECT 1`, not an `information_schema` scan;
//! - `outbox`: a file can be created in `<outbox>/staging/` (where create-conversation writes,
//!   §8.6 step 1; a failure there would answer 503);
//! - `shutdown`: present only while the process drains after SIGTERM, failing, so the load
//!   balancer stops sending before the listener closes.
//!
//! 200 `{"status":"ok",…}` or 503 `{"status":"fail","failed":[…],…}`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::{json, Map, Value};

use crate::http::response;
use crate::ops::schema;
use crate::state::AppState;

pub struct Readiness {
    timeout: Duration,
    schema_ttl: Duration,
    /// When the schema was last read, and the problems found then.
    schema: Mutex<Option<(Instant, Vec<String>)>>,
}

/// One check's outcome: `None` = passed, `Some(reason)` = failed.
type Outcome = Option<String>;

impl Readiness {
    pub fn new(timeout: Duration, schema_ttl: Duration) -> Readiness {
        Readiness {
            timeout,
            schema_ttl,
            schema: Mutex::new(None),
        }
    }

    fn cached_schema(&self) -> Option<Vec<String>> {
        let cached = self.schema.lock().unwrap_or_else(|e| e.into_inner());
        match &*cached {
            Some((at, problems)) if at.elapsed() < self.schema_ttl => Some(problems.clone()),
            _ => None,
        }
    }

    fn store_schema(&self, problems: &[String]) {
        if !self.schema_ttl.is_zero() {
            *self.schema.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((Instant::now(), problems.to_vec()));
        }
    }

    async fn database(&self, state: &AppState) -> Outcome {
        let probe = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool);
        match tokio::time::timeout(self.timeout, probe).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("unavailable: {e}")),
            Err(_) => Some(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    async fn schema(&self, state: &AppState) -> Outcome {
        let problems = match self.cached_schema() {
            Some(p) => p,
            None => {
                let read = schema::load_columns(&state.pool);
                match tokio::time::timeout(self.timeout, read).await {
                    Ok(Ok(columns)) => {
                        let p = schema::summary(&columns);
                        self.store_schema(&p);
                        p
                    }
                    Ok(Err(e)) => return Some(format!("cannot read information_schema: {e}")),
                    Err(_) => {
                        return Some(format!(
                            "information_schema did not answer within {} ms",
                            self.timeout.as_millis()
                        ))
                    }
                }
            }
        };
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

async fn outbox(state: &AppState) -> Outcome {
    let outbox = state.mailbox.outbox().clone();
    match tokio::task::spawn_blocking(move || outbox.probe_writable()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!(
            "{} is not writable: {e}",
            state.mailbox.outbox().root().join("staging").display()
        )),
        Err(e) => Some(format!("probe failed: {e}")),
    }
}

/// Runs the checks and builds the answer.
pub async fn answer(state: &AppState) -> HttpResponse {
    let r = &state.ops.readiness;
    let mut checks: Vec<(&str, Outcome)> = Vec::new();
    if state.ops.is_draining() {
        checks.push(("shutdown", Some("the process is shutting down".into())));
    }
    let db = r.database(state).await;
    let db_ok = db.is_none();
    checks.push(("database", db));
    let schema = if db_ok {
        r.schema(state).await
    } else {
        Some("not checked: the database is unavailable".into())
    };
    checks.push(("schema", schema));
    checks.push(("outbox", outbox(state).await));
    let (status, res_status, body) = render(&checks);
    let mut res = response::with_body(res_status, response::JSON, body);
    if status == "fail" {
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("5"));
        tracing::warn!(
            failed = ?checks.iter().filter(|(_, o)| o.is_some()).map(|(n, _)| *n).collect::<Vec<_>>(),
            "not ready"
        );
    }
    res
}

fn render(checks: &[(&str, Outcome)]) -> (&'static str, StatusCode, String) {
    let failed: Vec<&str> = checks
        .iter()
        .filter(|(_, o)| o.is_some())
        .map(|(n, _)| *n)
        .collect();
    let mut detail = Map::new();
    for (name, outcome) in checks {
        let v = match outcome {
            None => json!({"status": "ok"}),
            Some(reason) => json!({"status": "fail", "error": reason}),
        };
        detail.insert((*name).to_string(), v);
    }
    let (status, code) = if failed.is_empty() {
        ("ok", StatusCode::OK)
    } else {
        ("fail", StatusCode::SERVICE_UNAVAILABLE)
    };
    let mut body = Map::new();
    body.insert("status".into(), json!(status));
    if !failed.is_empty() {
        body.insert("failed".into(), json!(failed));
    }
    body.insert("checks".into(), Value::Object(detail));
    (status, code, Value::Object(body).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_names_the_failing_check() {
        let (status, code, body) = render(&[
            ("database", None),
            (
                "schema",
                Some("column messages.updated_at is missing".into()),
            ),
            ("outbox", None),
        ]);
        assert_eq!(status, "fail");
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            r#"{"status":"fail","failed":["schema"],"checks":{"database":{"status":"ok"},"schema":{"status":"fail","error":"column messages.updated_at is missing"},"outbox":{"status":"ok"}}}"#
        );
        let (_, code, body) = render(&[("database", None)]);
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            body,
            r#"{"status":"ok","checks":{"database":{"status":"ok"}}}"#
        );
    }

    #[test]
    fn schema_cache_honours_its_ttl() {
        let r = Readiness::new(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(r.cached_schema(), None);
        r.store_schema(&["x".into()]);
        assert_eq!(r.cached_schema(), Some(vec!["x".to_string()]));
        let off = Readiness::new(Duration::from_secs(1), Duration::ZERO);
        off.store_schema(&["x".into()]);
        assert_eq!(off.cached_schema(), None, "a zero TTL never caches");
    }
}

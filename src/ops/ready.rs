//! `GET /ready`: may a load balancer send chat traffic here?
//!
//! Checks, in order, each named in the JSON body:
//! - `database`: `SELECT 1` answered within `SHOPCHAT_READY_TIMEOUT_MS` (COMPAT §1.3: `/ready`
//!   fails while the database is unavailable);
//! - `schema`: every table and column of SCHEMA.md §2–3 present with a compatible type
//!   ([`crate::ops::schema`]); the result is kept `SHOPCHAT_READY_CACHE_SECONDS`, so frequent
//!   probes cost one `SELECT 1`, not an `information_schema` scan;
//! - `outbox`: a file can be created in `<outbox>/staging/` (where create-conversation writes,
//!   §8.6 step 1). Reported, never failing: a full outbox disk answers new conversations 503,
//!   but must not take reads out of the load balancer on every instance (security review M3);
//! - `shutdown`: present only while the process drains after SIGTERM, failing, so the load
//!   balancer stops sending before the listener closes.
//!
//! 200 `{"status":"ok",…}` (with `"degraded":[…]` when a reported check fails) or 503
//! `{"status":"fail","failed":[…],…}`.
//!
//! A probe flood costs little (security review M7): the answer is reused for up to a second,
//! the public listener throttles these endpoints per client IP (`SHOPCHAT_OPS_RATE_LIMIT`), and
//! shows which checks fail but not why — database error texts name users and hosts. The
//! reasons are logged, and shown on the internal metrics listener (`SHOPCHAT_METRICS_LISTEN`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::{json, Map, Value};

use sqlx::MySqlPool;

use crate::http::response;
use crate::mail::outbox::Outbox;
use crate::ops::schema;
use crate::sync::LockUnpoisoned;

pub struct Readiness {
    timeout: Duration,
    schema_ttl: Duration,
    /// When the schema was last read, and the problems found then.
    schema: Mutex<Option<(Instant, Vec<String>)>>,
    /// The last outcome of the checks, reused for [`ANSWER_TTL`].
    last: Mutex<Option<(Instant, Vec<Check>)>>,
}

/// How long one run of the checks answers probes.
const ANSWER_TTL: Duration = Duration::from_secs(1);

/// One check: its name, its outcome, and whether a failure makes the process unready.
#[derive(Clone, Debug)]
struct Check {
    name: &'static str,
    outcome: Outcome,
    critical: bool,
}

/// Who asks: the public listener sees no failure reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    Public,
    Internal,
}

/// One check's outcome: `None` = passed, `Some(reason)` = failed.
type Outcome = Option<String>;

impl Readiness {
    pub fn new(timeout: Duration, schema_ttl: Duration) -> Readiness {
        Readiness {
            timeout,
            schema_ttl,
            schema: Mutex::new(None),
            last: Mutex::new(None),
        }
    }

    fn cached_schema(&self) -> Option<Vec<String>> {
        let cached = self.schema.lock_unpoisoned();
        match &*cached {
            Some((at, problems)) if at.elapsed() < self.schema_ttl => Some(problems.clone()),
            _ => None,
        }
    }

    fn store_schema(&self, problems: &[String]) {
        if !self.schema_ttl.is_zero() {
            *self.schema.lock_unpoisoned() = Some((Instant::now(), problems.to_vec()));
        }
    }

    async fn database(&self, pool: &MySqlPool) -> Outcome {
        let probe = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(pool);
        match tokio::time::timeout(self.timeout, probe).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("unavailable: {e}")),
            Err(_) => Some(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    async fn schema(&self, pool: &MySqlPool) -> Outcome {
        let problems = match self.cached_schema() {
            Some(p) => p,
            None => {
                let read = schema::load_columns(pool);
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

async fn outbox(outbox: &std::sync::Arc<Outbox>) -> Outcome {
    let staging = outbox.root().join("staging");
    let outbox = outbox.clone();
    match tokio::task::spawn_blocking(move || outbox.probe_writable()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{} is not writable: {e}", staging.display())),
        Err(e) => Some(format!("probe failed: {e}")),
    }
}

/// What the checks look at.
pub struct Subject<'a> {
    pub pool: &'a MySqlPool,
    pub outbox: &'a std::sync::Arc<Outbox>,
    /// The process drains after SIGTERM.
    pub draining: bool,
}

/// Runs the checks (or reuses a run of the last second) and builds the answer.
pub async fn answer(r: &Readiness, subject: Subject<'_>, audience: Audience) -> HttpResponse {
    let checks = checks(r, subject).await;
    let (status, res_status, body) = render(&checks, audience);
    let mut res = response::with_body(res_status, response::JSON, body);
    if status == "fail" {
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("5"));
    }
    res
}

async fn checks(r: &Readiness, subject: Subject<'_>) -> Vec<Check> {
    let draining = subject.draining;
    // A drain must show at once; otherwise a probe within the second gets the last run.
    let ttl = ANSWER_TTL.min(r.schema_ttl);
    if !draining {
        let last = r.last.lock_unpoisoned();
        if let Some((at, checks)) = &*last {
            if at.elapsed() < ttl {
                return checks.clone();
            }
        }
    }
    let mut checks = Vec::new();
    if draining {
        checks.push(Check {
            name: "shutdown",
            outcome: Some("the process is shutting down".into()),
            critical: true,
        });
    }
    let db = r.database(subject.pool).await;
    let db_ok = db.is_none();
    checks.push(Check {
        name: "database",
        outcome: db,
        critical: true,
    });
    let schema = if db_ok {
        r.schema(subject.pool).await
    } else {
        Some("not checked: the database is unavailable".into())
    };
    checks.push(Check {
        name: "schema",
        outcome: schema,
        critical: true,
    });
    checks.push(Check {
        name: "outbox",
        outcome: outbox(subject.outbox).await,
        critical: false,
    });
    let failing: Vec<String> = checks
        .iter()
        .filter_map(|c| Some(format!("{}: {}", c.name, c.outcome.as_ref()?)))
        .collect();
    if !failing.is_empty() {
        tracing::warn!(failing = ?failing, "readiness checks failing");
    }
    *r.last.lock_unpoisoned() = Some((Instant::now(), checks.clone()));
    checks
}

fn render(checks: &[Check], audience: Audience) -> (&'static str, StatusCode, String) {
    let names = |critical: bool| -> Vec<&str> {
        checks
            .iter()
            .filter(|c| c.outcome.is_some() && c.critical == critical)
            .map(|c| c.name)
            .collect()
    };
    let (failed, degraded) = (names(true), names(false));
    let mut detail = Map::new();
    for c in checks {
        let v = match (&c.outcome, audience) {
            (None, _) => json!({"status": "ok"}),
            (Some(_), Audience::Public) => json!({"status": "fail"}),
            (Some(reason), Audience::Internal) => json!({"status": "fail", "error": reason}),
        };
        detail.insert(c.name.to_string(), v);
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
    if !degraded.is_empty() {
        body.insert("degraded".into(), json!(degraded));
    }
    body.insert("checks".into(), Value::Object(detail));
    (status, code, Value::Object(body).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &'static str, outcome: Option<&str>, critical: bool) -> Check {
        Check {
            name,
            outcome: outcome.map(str::to_string),
            critical,
        }
    }

    #[test]
    fn body_names_the_failing_check() {
        let checks = [
            check("database", None, true),
            check(
                "schema",
                Some("column messages.updated_at is missing"),
                true,
            ),
            check("outbox", None, false),
        ];
        let (status, code, body) = render(&checks, Audience::Internal);
        assert_eq!(status, "fail");
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            r#"{"status":"fail","failed":["schema"],"checks":{"database":{"status":"ok"},"schema":{"status":"fail","error":"column messages.updated_at is missing"},"outbox":{"status":"ok"}}}"#
        );
        // The public listener tells which, not why (security review M7).
        let (_, _, public) = render(&checks, Audience::Public);
        assert_eq!(
            public,
            r#"{"status":"fail","failed":["schema"],"checks":{"database":{"status":"ok"},"schema":{"status":"fail"},"outbox":{"status":"ok"}}}"#
        );
        let (_, code, body) = render(&[check("database", None, true)], Audience::Public);
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            body,
            r#"{"status":"ok","checks":{"database":{"status":"ok"}}}"#
        );
    }

    #[test]
    fn an_outbox_failure_degrades_but_keeps_reads_in() {
        let checks = [
            check("database", None, true),
            check("outbox", Some("disk full"), false),
        ];
        let (status, code, body) = render(&checks, Audience::Public);
        assert_eq!((status, code), ("ok", StatusCode::OK));
        assert_eq!(
            body,
            r#"{"status":"ok","degraded":["outbox"],"checks":{"database":{"status":"ok"},"outbox":{"status":"fail"}}}"#
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

//! `shopchat replay`: a recorded request list sent to two services, answers
//! compared like the shadow proxy compares them; and
//! `shopchat replay convert-nginx`: such a list from an nginx access log
//! written with the `shopchat_replay` log format (deploy/nginx/).
//!
//! Unlike shadow mode both services really execute every request, writes
//! included, each on its own database (replay against copies, never against
//! production). A request list with writes is therefore refused unless
//! `--allow-writes` says the targets are copies (security review L5). Writes
//! are still compared by status class only: ids and times of new rows differ
//! by nature.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::shadow::client::primary_client;
use crate::shadow::compare::{compare, Outcome};
use crate::shadow::deviations::Premises;
use crate::shadow::exchange::{Answer, Exchange, Kind, RecordedRequest};
use crate::shadow::log::{detail_record, MismatchLog};
use crate::shadow::metrics::{Counts, Metrics};
use crate::shadow::report::{self, LogContents};
use crate::shadow::rules::Rules;
use crate::shadow::{route_of, shadow_kind};

pub struct ReplayConfig {
    pub primary: reqwest::Url,
    pub candidate: reqwest::Url,
    pub requests: PathBuf,
    pub rules: Rules,
    pub log_path: PathBuf,
    pub log_max_bytes: u64,
    pub noise_floor: bool,
    /// shopchat's `SHOPCHAT_BASE_PATH`, to name routes.
    pub base_path: String,
    /// `--allow-writes`: the targets are copies; POSTs (and other writes) may be sent.
    pub allow_writes: bool,
}

pub struct ReplayResult {
    pub counts: Counts,
    pub report: String,
}

impl ReplayResult {
    /// Mismatches and errors make `shopchat replay` exit non-zero.
    pub fn clean(&self) -> bool {
        self.counts
            .outcomes
            .iter()
            .all(|((_, o), n)| *n == 0 || (o != "mismatch" && o != "error"))
    }
}

pub async fn replay(cfg: &ReplayConfig) -> anyhow::Result<ReplayResult> {
    let text = std::fs::read_to_string(&cfg.requests)
        .with_context(|| format!("--requests: cannot read {}", cfg.requests.display()))?;
    let mut requests = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: RecordedRequest = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", cfg.requests.display(), i + 1))?;
        requests.push(r);
    }
    let writes = requests
        .iter()
        .filter(|r| !matches!(r.method.as_str(), "GET" | "HEAD" | "OPTIONS"))
        .count();
    if writes > 0 && !cfg.allow_writes {
        bail!(
            "{} holds {writes} write request(s) (POST…), which both services would execute: \
             replay them only against copies of the database, with --allow-writes; nothing was sent",
            cfg.requests.display()
        );
    }
    let client = primary_client()?;
    let metrics = Metrics::new();
    let mut log = MismatchLog::open(&cfg.log_path, cfg.log_max_bytes)
        .with_context(|| format!("--log: cannot open {}", cfg.log_path.display()))?;
    let mut details = Vec::new();
    for r in &requests {
        let (route, kind) = shadow_kind(&r.method, &r.path, &cfg.base_path);
        // Replay compares every request; only writes are reduced to the status class.
        let kind = kind.unwrap_or(Kind::Read);
        let route = route.name();
        let primary = send(&client, &cfg.primary, r).await;
        let candidate = send(&client, &cfg.candidate, r).await;
        let again = if cfg.noise_floor && kind == Kind::Read {
            send(&client, &cfg.primary, r).await.ok()
        } else {
            None
        };
        let redacted = r.redacted();
        let (verdict, p, c) = match (primary, candidate) {
            (Ok(p), Ok(c)) => {
                let ex = Exchange {
                    route,
                    kind,
                    request: r,
                    primary: &p,
                    candidate: &c,
                    primary_again: again.as_ref(),
                };
                (compare(&ex, &cfg.rules, &Premises::default()), p, c)
            }
            (p, c) => {
                let why = [p.as_ref().err(), c.as_ref().err()]
                    .into_iter()
                    .flatten()
                    .map(|e| format!("{e:#}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                (
                    crate::shadow::compare::Verdict::error(why),
                    p.unwrap_or_default(),
                    c.unwrap_or_default(),
                )
            }
        };
        metrics.outcome(route, verdict.outcome, verdict.deviation);
        if verdict.outcome != Outcome::Match {
            let ex = Exchange {
                route,
                kind,
                request: &redacted,
                primary: &p,
                candidate: &c,
                primary_again: None,
            };
            let mut rec = detail_record(&ex, &verdict);
            if let Some(id) = &r.id {
                rec["id"] = Value::String(id.clone());
            }
            if !log.record(&rec)? {
                metrics.log_dropped();
            }
            details.push(rec);
        }
    }
    let counts = metrics.snapshot();
    log.summary(&counts)?;
    let contents = LogContents {
        summary: Some(counts.clone()),
        summary_time: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        details,
        unreadable_lines: 0,
    };
    let report = report::render(&format!("replay of {}", cfg.requests.display()), &contents);
    Ok(ReplayResult { counts, report })
}

/// One recorded request to `base` (its path and query appended verbatim).
pub async fn send(
    client: &reqwest::Client,
    base: &reqwest::Url,
    r: &RecordedRequest,
) -> anyhow::Result<Answer> {
    let url = reqwest::Url::parse(&format!(
        "{}{}",
        base.as_str().trim_end_matches('/'),
        r.path
    ))
    .with_context(|| format!("bad path {:?}", r.path))?;
    let mut req = client.request(reqwest::Method::from_bytes(r.method.as_bytes())?, url);
    for (k, v) in &r.headers {
        if !k.eq_ignore_ascii_case("content-length") {
            req = req.header(k.as_str(), v.as_str());
        }
    }
    let body = r.body_bytes()?;
    if !body.is_empty() {
        req = req.body(body);
    }
    let res = req
        .send()
        .await
        .with_context(|| format!("{} did not answer", base))?;
    Ok(Answer::from_reqwest(res).await?)
}

/// The nginx log fields (deploy/nginx/log-format.conf) and the request
/// headers they become. Empty fields are headers the client did not send.
const NGINX_HEADERS: &[(&str, &str)] = &[
    ("host", "Host"),
    ("accept", "Accept"),
    ("authorization", "Authorization"),
    ("system_key", "System-Key"),
    ("app_language", "App-Language"),
    ("x_requested_with", "X-Requested-With"),
    ("x_pjax", "X-PJAX"),
];

/// Converts an access log in the `shopchat_replay` format into request
/// lines; only `GET` requests of the read routes are kept (a body is never
/// logged, and writes must not be replayed against production data).
/// Returns (kept, skipped).
pub fn convert_nginx(
    input: impl BufRead,
    mut output: impl Write,
    base_path: &str,
) -> anyhow::Result<(usize, usize)> {
    let (mut kept, mut skipped) = (0, 0);
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => bail!(
                "line {}: not a shopchat_replay log line ({e}); see deploy/nginx/log-format.conf",
                i + 1
            ),
        };
        let method = v["method"].as_str().unwrap_or_default();
        let uri = v["uri"].as_str().unwrap_or_default();
        let (_, kind) = shadow_kind(method, uri, base_path);
        if method != "GET" || kind != Some(Kind::Read) {
            skipped += 1;
            continue;
        }
        let _ = route_of(uri, base_path);
        let headers = NGINX_HEADERS
            .iter()
            .filter_map(|(field, name)| {
                v[*field]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(|s| (name.to_string(), s.to_string()))
            })
            .collect();
        let r = RecordedRequest {
            id: Some(format!(
                "{}#{}",
                v["time"].as_str().unwrap_or("line"),
                i + 1
            )),
            method: method.to_string(),
            path: uri.to_string(),
            headers,
            body: None,
            body_b64: None,
        };
        serde_json::to_writer(&mut output, &r)?;
        output.write_all(b"\n")?;
        kept += 1;
    }
    Ok((kept, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_lines_become_get_requests_of_read_routes() {
        let log = concat!(
            r#"{"time":"2024-05-01T10:00:00+00:00","method":"GET","uri":"/api/v2/chat/messages/1?page=2","status":"200","host":"shop.test","accept":"application/json","authorization":"Bearer 5|abc","system_key":"k","app_language":"","x_requested_with":"","x_pjax":""}"#,
            "\n",
            r#"{"time":"t","method":"POST","uri":"/api/v2/chat/insert-message","status":"200","host":"shop.test","accept":"","authorization":"","system_key":"","app_language":"","x_requested_with":"","x_pjax":""}"#,
            "\n",
            r#"{"time":"t","method":"GET","uri":"/api/v2/chat/nope","status":"200","host":"shop.test"}"#,
            "\n"
        );
        let mut out = Vec::new();
        let (kept, skipped) = convert_nginx(log.as_bytes(), &mut out, "").unwrap();
        assert_eq!((kept, skipped), (1, 2));
        let r: RecordedRequest =
            serde_json::from_slice(out.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert_eq!(r.path, "/api/v2/chat/messages/1?page=2");
        assert_eq!(r.header("authorization"), Some("Bearer 5|abc"));
        assert_eq!(r.header("app-language"), None);
        assert!(convert_nginx("not json\n".as_bytes(), Vec::new(), "").is_err());
    }

    #[test]
    fn request_files_take_objects_or_pairs() {
        let a: RecordedRequest = serde_json::from_str(
            r#"{"method":"GET","path":"/x","headers":{"Accept":"application/json"}}"#,
        )
        .unwrap();
        let b: RecordedRequest = serde_json::from_str(
            r#"{"method":"POST","path":"/x","headers":[["Accept","application/json"]],"body":"a=1"}"#,
        )
        .unwrap();
        assert_eq!(a.headers, b.headers);
        assert_eq!(b.body_bytes().unwrap(), b"a=1");
    }
}

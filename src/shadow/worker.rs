//! The comparison worker: one thread with its own single-threaded runtime,
//! its own database pool and shopchat state, so comparisons never compete
//! with the proxy's threads for the client's answer.
//!
//! For each queued exchange: shopchat answers the same request in-process
//! with [`Mode::Shadow`] (no token touch, no translation insert, no throttle
//! charge, writes only checked — COMPAT §11.2), optionally the primary is
//! asked again (noise floor), the answers are judged, counted and logged.

use std::cell::RefCell;
use std::io::Read;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::Method;
use anyhow::Context;
use bytes::Bytes;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::chat::repo::Parties;
use crate::chat::sql;
use crate::http::pipeline;
use crate::http::request::{Body, Incoming, Mode};
use crate::ids::UserId;
use crate::mail::outbox::Outbox;
use crate::mail::Mailbox;
use crate::shadow::client::primary_client;
use crate::shadow::compare::{compare, Outcome, Verdict};
use crate::shadow::deviations::Premises;
use crate::shadow::exchange::{header_pairs, Answer, Exchange, Kind, RecordedRequest};
use crate::shadow::log::{detail_record, MismatchLog};
use crate::shadow::metrics::Metrics;
use crate::shadow::ShadowConfig;
use crate::state::AppState;

/// One exchange waiting for its comparison.
pub struct Job {
    pub route: &'static str,
    pub kind: Kind,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// `None`: longer than shopchat's body limit (not kept).
    pub body: Option<Bytes>,
    pub peer: SocketAddr,
    pub primary: Answer,
    /// The primary's body was longer than `max_compare_bytes`.
    pub primary_truncated: bool,
}

struct Env {
    config: ShadowConfig,
    state: AppState,
    metrics: Arc<Metrics>,
    log: RefCell<MismatchLog>,
    client: reqwest::Client,
}

/// Starts the worker thread; fails when its state cannot be built.
pub async fn spawn(
    config: ShadowConfig,
    metrics: Arc<Metrics>,
    jobs: mpsc::Receiver<Job>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let log = MismatchLog::open(&config.log_path, config.log_max_bytes)
        .with_context(|| format!("--log: cannot open {}", config.log_path.display()))?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
    let handle = std::thread::Builder::new()
        .name("shadow-compare".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let env = match build_env(config, metrics, log) {
                    Ok(env) => {
                        let _ = ready_tx.send(Ok(()));
                        Rc::new(env)
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                run(env, jobs, shutdown).await;
            })
        })?;
    ready_rx
        .await
        .context("the comparison worker stopped while starting")??;
    Ok(handle)
}

fn build_env(config: ShadowConfig, metrics: Arc<Metrics>, log: MismatchLog) -> anyhow::Result<Env> {
    let mut settings = config.settings.clone();
    // The shadow reads what the primary has just written (a deleted token, a
    // new message), so it must not answer from a per-process token cache,
    // and it must answer at once: long-poll is shopchat's own (§5.4).
    settings.auth.cache = Duration::ZERO;
    settings.long_poll.max_wait = Duration::ZERO;
    // One thread, one runtime: one pool (`db::Pools`).
    let pools = crate::db::Pools::new(&settings.database, 0)?;
    // Shadows never mail (§11.2): the write routes stop before staging, and
    // the outbox they are given is a private, empty directory.
    let outbox_dir =
        std::env::temp_dir().join(format!("shopchat-shadow-outbox-{}", std::process::id()));
    let outbox =
        Arc::new(Outbox::open(&outbox_dir).context("cannot create the shadow's empty outbox")?);
    let state = AppState::new(settings, pools, Mailbox::new(outbox));
    Ok(Env {
        client: primary_client()?,
        config,
        state,
        metrics,
        log: RefCell::new(log),
    })
}

async fn run(env: Rc<Env>, mut jobs: mpsc::Receiver<Job>, mut shutdown: watch::Receiver<bool>) {
    let workers = env.config.workers.max(1);
    let permits = Arc::new(Semaphore::new(workers));
    let mut last_summary = env.metrics.snapshot();
    let mut ticker = tokio::time::interval(env.config.summary_interval);
    ticker.tick().await;
    loop {
        // A free worker first, then a job: what waits stays in the bounded queue.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = shutdown.changed() => break,
        };
        let job = tokio::select! {
            job = jobs.recv() => job,
            _ = shutdown.changed() => break,
            _ = ticker.tick() => {
                drop(permit);
                write_summary(&env, &mut last_summary);
                continue;
            }
        };
        let Some(job) = job else { break };
        let env2 = env.clone();
        actix_web::rt::spawn(async move {
            process(&env2, job).await;
            drop(permit);
        });
    }
    // Finish what is queued, then the final summary.
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        let permit = permits.clone().acquire_owned().await.expect("open");
        let env2 = env.clone();
        actix_web::rt::spawn(async move {
            process(&env2, job).await;
            drop(permit);
        });
    }
    let _ = permits.acquire_many(workers as u32).await;
    env.state.pools.close().await;
    last_summary = Default::default();
    write_summary(&env, &mut last_summary);
}

fn write_summary(env: &Env, last: &mut crate::shadow::metrics::Counts) {
    let now = env.metrics.snapshot();
    if &now == last {
        return;
    }
    if let Err(e) = env.log.borrow_mut().summary(&now) {
        tracing::warn!(error = %e, "shadow: cannot write the summary record");
    }
    *last = now;
}

async fn process(env: &Env, job: Job) {
    let request = RecordedRequest {
        id: None,
        method: job.method.clone(),
        path: job.path.clone(),
        headers: job.headers.clone(),
        body: job
            .body
            .as_ref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .filter(|s| !s.is_empty())
            .map(String::from),
        body_b64: job
            .body
            .as_ref()
            .filter(|b| std::str::from_utf8(b).is_err())
            .map(|b| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b)),
    };
    let candidate = in_process(env, &job).await;
    let mut primary = job.primary.clone();
    let verdict = if job.primary_truncated {
        Verdict::error(format!(
            "the primary's body is longer than --max-compare-bytes ({})",
            env.config.max_compare_bytes
        ))
    } else if let Err(e) = decode_body(&mut primary) {
        Verdict::error(e)
    } else {
        let again = if env.config.noise_floor && job.kind == Kind::Read {
            match ask_primary(env, &job).await {
                Ok(mut a) => decode_body(&mut a).ok().map(|_| a),
                Err(e) => {
                    tracing::warn!(error = %e, "shadow: noise-floor request failed");
                    None
                }
            }
        } else {
            None
        };
        let ex = Exchange {
            route: job.route,
            kind: job.kind,
            request: &request,
            primary: &primary,
            candidate: &candidate,
            primary_again: again.as_ref(),
        };
        let first = compare(&ex, &env.config.rules, &Premises::default());
        // Premises are looked up only when a classification depends on one.
        if matches!(first.deviation, Some("D1") | Some("K6-token-deleted")) {
            let premises = premises(env, &job, &candidate).await;
            compare(&ex, &env.config.rules, &premises)
        } else {
            first
        }
    };
    // The log line first, then the count: whoever reads a comparison in the counters (a test's
    // settle, an operator's dashboard) finds its line in the log already.
    if verdict.outcome != Outcome::Match {
        let ex = Exchange {
            route: job.route,
            kind: job.kind,
            request: &request.redacted(),
            primary: &primary,
            candidate: &candidate,
            primary_again: None,
        };
        let written = env.log.borrow_mut().record(&detail_record(&ex, &verdict));
        match written {
            Ok(true) => {}
            Ok(false) => env.metrics.log_dropped(),
            Err(e) => {
                env.metrics.log_dropped();
                tracing::warn!(error = %e, "shadow: cannot write the mismatch log");
            }
        }
    }
    env.metrics
        .outcome(job.route, verdict.outcome, verdict.deviation);
}

/// shopchat's own answer to the request, in shadow mode.
async fn in_process(env: &Env, job: &Job) -> Answer {
    let Ok(method) = Method::from_bytes(job.method.as_bytes()) else {
        return Answer::default();
    };
    // An in-memory request: the pipeline sees the client's method, target,
    // headers, peer address and body as the primary did.
    let Ok(uri) = job.path.parse::<actix_web::http::Uri>() else {
        return Answer::default();
    };
    let mut headers = actix_web::http::header::HeaderMap::new();
    for (k, v) in &job.headers {
        if k == "content-length" {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            actix_web::http::header::HeaderName::from_bytes(k.as_bytes()),
            actix_web::http::header::HeaderValue::from_bytes(v.as_bytes()),
        ) {
            headers.append(name, value);
        }
    }
    let body = match &job.body {
        Some(body) => Body::Bytes(body.clone()),
        // Longer than shopchat's limit: its Content-Length check answers 413.
        None => {
            let too_long = (env.state.settings.http.max_body_bytes + 1).to_string();
            if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&too_long) {
                headers.insert(actix_web::http::header::CONTENT_LENGTH, v);
            }
            Body::Bytes(Default::default())
        }
    };
    let req = Incoming {
        method,
        uri,
        headers,
        peer: Some(job.peer),
        connection: None,
        body,
    };
    let res = pipeline::run(req, &env.state, Mode::Shadow).await;
    let status = res.status().as_u16();
    let headers = header_pairs(
        res.headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes())),
    );
    let body = actix_web::body::to_bytes(res.into_body())
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    Answer {
        status,
        headers,
        // HEAD: the server would send no body (§1.1).
        body: if job.method == "HEAD" {
            Vec::new()
        } else {
            body
        },
    }
}

/// The noise floor: the same request to the primary once more.
async fn ask_primary(env: &Env, job: &Job) -> anyhow::Result<Answer> {
    let url = reqwest::Url::parse(&format!(
        "{}{}",
        env.config.primary.as_str().trim_end_matches('/'),
        job.path
    ))?;
    let mut req = env
        .client
        .request(reqwest::Method::from_bytes(job.method.as_bytes())?, url);
    for (k, v) in &job.headers {
        if k != "content-length" {
            req = req.header(k.as_str(), v.as_str());
        }
    }
    let res = req.send().await?;
    Ok(Answer::from_reqwest(res).await?)
}

/// Decoded bodies larger than this are not compared (a gzip bomb from a broken primary must
/// not fill the shadow's memory: security review L4).
const MAX_DECODED_BYTES: u64 = 64 << 20;

/// A gzip- or deflate-encoded primary body is compared decoded (shopchat's
/// in-process answer is never encoded); other encodings cannot be compared.
fn decode_body(a: &mut Answer) -> Result<(), String> {
    decode_body_within(a, MAX_DECODED_BYTES)
}

fn decode_body_within(a: &mut Answer, max: u64) -> Result<(), String> {
    let encoding = a.header("content-encoding").map(|e| e.to_ascii_lowercase());
    let bounded = |r: &mut dyn Read| {
        let mut out = Vec::new();
        r.take(max + 1)
            .read_to_end(&mut out)
            .and_then(|n| match n as u64 > max {
                true => Err(std::io::Error::other(format!(
                    "larger than {max} bytes decoded"
                ))),
                false => Ok(out),
            })
    };
    let decoded = match encoding.as_deref() {
        None | Some("identity") => return Ok(()),
        _ if a.body.is_empty() => return Ok(()),
        Some("gzip") | Some("x-gzip") => bounded(&mut flate2::read::GzDecoder::new(&a.body[..])),
        Some("deflate") => bounded(&mut flate2::read::ZlibDecoder::new(&a.body[..])),
        Some(other) => {
            return Err(format!(
                "the primary's Content-Encoding {other} cannot be compared"
            ))
        }
    };
    match decoded {
        Ok(body) => {
            a.body = body;
            a.headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("content-encoding"));
            Ok(())
        }
        Err(e) => Err(format!("the primary's encoded body cannot be decoded: {e}")),
    }
}

/// The facts a classification depends on, read without side effects.
async fn premises(env: &Env, job: &Job, candidate: &Answer) -> Premises {
    let pool = &env.state.db();
    let token_id = job
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .and_then(|(_, v)| v.rsplit("Bearer ").next().map(str::to_string))
        .and_then(|t| t.split_once('|').map(|(id, _)| id.to_string()))
        .and_then(|id| id.parse::<u64>().ok());
    let token_gone = match token_id {
        Some(id) => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM personal_access_tokens WHERE id = ?")
                .bind(id)
                .fetch_one(pool)
                .await
                .ok()
                .map(|n| n == 0)
        }
        None => None,
    };
    // The id shopchat refused, as its 404 shows it (§1.3).
    let refused = serde_json::from_slice::<serde_json::Value>(&candidate.body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .and_then(|m| {
            m.strip_prefix("No query results for model [App\\Models\\Conversation] ")
                .map(String::from)
        });
    let not_participant = match refused {
        None => None,
        Some(id) if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) => Some(true),
        Some(id) => {
            let auth = job
                .headers
                .iter()
                .find(|(k, _)| k == "authorization")
                .map(|(_, v)| v.as_bytes());
            let now = crate::laravel::dates::now_naive(env.state.settings.laravel.timezone);
            let user = env.state.sanctum.resolve(auth, now).await.ok().flatten();
            // Read now, not from the participants cache: the premise is what the table says.
            let row: Option<Option<(UserId, UserId)>> = sqlx::query_as(sql::PARTICIPANTS)
                .bind(&id)
                .fetch_optional(pool)
                .await
                .ok();
            match (user, row) {
                (_, Some(None)) => Some(true),
                (Some(u), Some(Some((sender_id, receiver_id)))) => Some(
                    !Parties {
                        sender_id,
                        receiver_id,
                    }
                    .includes(u.user_id),
                ),
                _ => None,
            }
        }
    };
    Premises {
        not_participant,
        token_gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_is_bounded() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vec![b'a'; 100_000]).unwrap();
        let body = gz.finish().unwrap();
        let answer = |body: Vec<u8>| Answer {
            status: 200,
            headers: vec![("Content-Encoding".into(), "gzip".into())],
            body,
        };
        let mut big = answer(body.clone());
        let err = decode_body_within(&mut big, 10_000).unwrap_err();
        assert!(err.contains("larger than 10000 bytes"), "{err}");
        let mut fits = answer(body);
        decode_body_within(&mut fits, 200_000).unwrap();
        assert_eq!(fits.body.len(), 100_000);
    }
}

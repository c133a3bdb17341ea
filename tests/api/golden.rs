//! The golden set (`fixtures/golden/`, a copy of the shared contract data):
//! 58 requests replayed in order against the real `shopchat` binary on a
//! freshly loaded database, each answer compared byte for byte after the
//! normalisation described in `fixtures/README.md` (times of rows written
//! during the run become `<NOW>` when they fall in the run's time window).

use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{NaiveDateTime, TimeZone, Utc};
use regex::{Captures, Regex};
use serde_json::Value;

use crate::helpers::{free_port, project_file, test_env, wait_for_port, TestDb};
use crate::raw_http::{self, Response};

struct Window {
    from: i64,
    to: i64,
    max_message_id: i64,
}

impl Window {
    /// [floor(started) − 5 s, floor(finished) + 1 + 5 s]
    fn new(started: f64, finished: f64, max_message_id: i64) -> Window {
        Window {
            from: started.floor() as i64 - 5,
            to: finished.floor() as i64 + 6,
            max_message_id,
        }
    }
}

fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Replaces run-dependent times by `<NOW>` (conversation dates and the date
/// fields of messages created during the run) and `encrypt()` payloads.
fn normalise(text: &str, w: &Window) -> String {
    let iso = Regex::new(r#""date":"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\.000000Z""#).unwrap();
    let text = iso.replace_all(text, |c: &Captures| {
        let t = NaiveDateTime::parse_from_str(&c[1], "%Y-%m-%dT%H:%M:%S")
            .map(|t| t.and_utc().timestamp());
        match t {
            Ok(t) if (w.from..=w.to).contains(&t) => r#""date":"<NOW>""#.to_string(),
            _ => c[0].to_string(),
        }
    });
    let msg = Regex::new(
        r#"\{"id":(\d+),"user_id":-?\d+,"send_type":"(?:[^"\\]|\\.)*","message":(?:null|"(?:[^"\\]|\\.)*"),"year":"([^"]*)","month":"([^"]*)","day_of_month":"([^"]*)","date":"([^"]*)","time":"([^"]*)"\}"#,
    )
    .unwrap();
    let text = msg.replace_all(&text, |c: &Captures| {
        let whole = c[0].to_string();
        let id: i64 = c[1].parse().unwrap_or(0);
        if id <= w.max_message_id {
            return whole;
        }
        // The five fields must spell one minute overlapping the window (UTC).
        let minute = NaiveDateTime::parse_from_str(&format!("{} {}", &c[5], &c[6]), "%B %d, %Y %I:%M %p")
            .ok()
            .filter(|t| t.format("%Y").to_string() == c[2] && t.format("%m").to_string() == c[3] && t.format("%d-%b").to_string() == c[4])
            .map(|t| Utc.from_utc_datetime(&t).timestamp());
        match minute {
            Some(m) if m <= w.to && m + 60 > w.from => {
                let head = &whole[..whole.find(r#","year":""#).unwrap()];
                format!(r#"{head},"year":"<NOW>","month":"<NOW>","day_of_month":"<NOW>","date":"<NOW>","time":"<NOW>"}}"#)
            }
            _ => whole,
        }
    });
    let enc = Regex::new(r"eyJpdiI6I[A-Za-z0-9+/=_%-]{40,}").unwrap();
    enc.replace_all(&text, "<ENCRYPTED>").into_owned()
}

/// Builds the request of one case: headers over the defaults (`null` removes
/// one), `{tok:…}`/`{secret:…}` substitutions, form / JSON / raw bodies.
pub(crate) fn request_of(
    case: &Value,
    spec: &Value,
    host: &str,
) -> (String, String, Vec<(String, String)>, Vec<u8>) {
    let tokens = &spec["tokens"];
    let subst = |s: &str| -> String {
        Regex::new(r"\{(tok|secret):([A-Za-z0-9_.-]+)\}")
            .unwrap()
            .replace_all(s, |c: &Captures| {
                let tok = tokens[&c[2]].as_str().expect("token alias");
                if &c[1] == "tok" {
                    tok.to_string()
                } else {
                    tok.split_once('|').map(|x| x.1).unwrap_or(tok).to_string()
                }
            })
            .into_owned()
    };
    let mut headers: Vec<(String, Option<String>)> = vec![("Host".into(), Some(host.into()))];
    let mut put = |k: &str, v: Option<String>| match headers
        .iter_mut()
        .find(|(name, _)| name.eq_ignore_ascii_case(k))
    {
        Some(slot) => slot.1 = v,
        None => headers.push((k.to_string(), v)),
    };
    for (k, v) in spec["defaults"]["headers"].as_object().unwrap() {
        put(k, v.as_str().map(String::from));
    }
    if let Some(alias) = case["token"].as_str() {
        put(
            "Authorization",
            Some(format!("Bearer {}", tokens[alias].as_str().unwrap())),
        );
    }
    let mut body = Vec::new();
    if let Some(form) = case["form"].as_object() {
        let pairs: Vec<(String, String)> = form
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
            .into_bytes();
        put(
            "Content-Type",
            Some("application/x-www-form-urlencoded".into()),
        );
    } else if !case["json"].is_null() {
        body = serde_json::to_vec(&case["json"]).unwrap();
        put("Content-Type", Some("application/json".into()));
    } else if let Some(raw) = case["body"].as_str() {
        body = raw.as_bytes().to_vec();
    }
    if let Some(extra) = case["headers"].as_object() {
        for (k, v) in extra {
            put(k, v.as_str().map(&subst));
        }
    }
    let headers = headers
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    (
        case["method"].as_str().unwrap().to_string(),
        case["path"].as_str().unwrap().to_string(),
        headers,
        body,
    )
}

/// Sends one golden case to `addr`; returns its method, path and the answer.
pub(crate) async fn send_case(
    addr: &str,
    case: &Value,
    spec: &Value,
    host: &str,
) -> (String, String, Response) {
    let (method, path, headers, body) = request_of(case, spec, host);
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let res = raw_http::send(addr, &method, &path, &refs, &body).await;
    (method, path, res)
}

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn golden_set_replays_byte_for_byte() {
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(project_file("fixtures/golden/cases.json")).unwrap(),
    )
    .unwrap();
    let expected_lines: Vec<Value> =
        std::fs::read_to_string(project_file("fixtures/golden/expected.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let meta = &expected_lines[0];
    let max_message_id = spec["fixture_max"]["messages"].as_i64().unwrap();
    let expected_window = Window::new(
        meta["started"].as_f64().unwrap(),
        meta["finished"].as_f64().unwrap(),
        max_message_id,
    );

    let db = TestDb::fresh().await;
    let outbox = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut env = test_env(&db.name, outbox.path());
    env.insert("SHOPCHAT_LISTEN".into(), format!("127.0.0.1:{port}"));
    let _service = Service(
        Command::new(env!("CARGO_BIN_EXE_shopchat"))
            .arg("serve")
            .env_clear()
            .envs(&env)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start the shopchat binary"),
    );
    let addr = format!("127.0.0.1:{port}");
    wait_for_port(&addr).await;

    let host = spec["host"].as_str().unwrap();
    let started = now_f64();
    let mut answers: Vec<(Response, Option<Vec<Vec<String>>>)> = Vec::new();
    for case in spec["cases"].as_array().unwrap() {
        let (_, _, res) = send_case(&addr, case, &spec, host).await;
        let rows = match case["sql_after"].as_str() {
            Some(sql) => Some(db.rows(sql).await),
            None => None,
        };
        answers.push((res, rows));
    }
    let actual_window = Window::new(started, now_f64(), max_message_id);

    let mut failures = Vec::new();
    for ((res, rows), exp) in answers.iter().zip(expected_lines.iter().skip(1)) {
        let id = exp["id"].as_str().unwrap();
        let mut problems = Vec::new();
        if res.status as i64 != exp["status"].as_i64().unwrap() {
            problems.push(format!("status {} expected {}", res.status, exp["status"]));
        }
        if exp["content_type"].as_str() != Some("*")
            && res.header("content-type") != exp["content_type"].as_str()
        {
            problems.push(format!(
                "content-type {:?} expected {}",
                res.header("content-type"),
                exp["content_type"]
            ));
        }
        if res.header("location") != exp["location"].as_str() {
            problems.push(format!(
                "location {:?} expected {}",
                res.header("location"),
                exp["location"]
            ));
        }
        if res.header("x-ratelimit-limit") != exp["ratelimit_limit"].as_str() {
            problems.push(format!(
                "x-ratelimit-limit {:?} expected {}",
                res.header("x-ratelimit-limit"),
                exp["ratelimit_limit"]
            ));
        }
        if exp["ratelimit_limit"].is_string() && res.header("x-ratelimit-remaining").is_none() {
            problems.push("x-ratelimit-remaining missing".into());
        }
        let got = normalise(&res.text(), &actual_window);
        let want = normalise(exp["body"].as_str().unwrap(), &expected_window);
        if got != want {
            let at = got
                .bytes()
                .zip(want.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            problems.push(format!(
                "body differs at byte {at}: got {:?} expected {:?}",
                &got[at.saturating_sub(20)..(at + 60).min(got.len())],
                &want[at.saturating_sub(20)..(at + 60).min(want.len())]
            ));
        }
        if let Some(sql) = exp.get("sql_after").filter(|v| !v.is_null()) {
            let want_rows: Vec<Vec<String>> = serde_json::from_value(sql["rows"].clone()).unwrap();
            if rows.as_ref() != Some(&want_rows) {
                problems.push(format!("sql_after {rows:?} expected {want_rows:?}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{id}: {}", problems.join("; ")));
        }
    }
    let total = answers.len();
    println!(
        "golden: {} passed, {} failed",
        total - failures.len(),
        failures.len()
    );
    db.drop().await;
    assert!(
        failures.is_empty(),
        "golden cases failed:\n{}",
        failures.join("\n")
    );
    assert_eq!(total, 58);
}

#[test]
fn normalisation_touches_only_run_times() {
    let w = Window::new(1_795_529_706.0, 1_795_529_708.0, 42);
    // 2026-11-24T14:15:07Z is inside that window, 2024 dates are not.
    let body = r#"{"date":"2026-11-24T14:15:07.000000Z"},{"date":"2024-05-10T14:30:00.000000Z"}"#;
    assert_eq!(
        normalise(body, &w),
        r#"{"date":"<NOW>"},{"date":"2024-05-10T14:30:00.000000Z"}"#
    );
    let fresh = r#"{"id":48,"user_id":5,"send_type":"customer","message":"x","year":"2026","month":"11","day_of_month":"24-Nov","date":"November 24, 2026","time":"02:15 pm"}"#;
    assert!(normalise(fresh, &w).contains(r#""year":"<NOW>""#));
    let old = fresh.replace("\"id\":48", "\"id\":40");
    assert_eq!(normalise(&old, &w), old, "fixture messages stay literal");
    let wrong_zone = fresh.replace("02:15 pm", "08:15 pm");
    assert_eq!(
        normalise(&wrong_zone, &w),
        wrong_zone,
        "a message stamped in another zone fails"
    );
}

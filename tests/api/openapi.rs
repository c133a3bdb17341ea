//! `docs/openapi.json` against reality: the golden requests (and a 429, a 503
//! and a long-poll request) are sent to a real service, and every answer whose
//! path and method the document describes must have a documented status and a
//! body that conforms to the documented schema.
//!
//! The validator below covers the subset of OpenAPI 3.0 schema keywords the
//! document uses: `$ref`, `type` (+ `nullable`), `enum`, `properties`,
//! `required`, `additionalProperties`, `items`, `oneOf`. An unknown keyword
//! fails the test, so the document cannot silently outgrow it.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::golden::send_case;
use crate::helpers::{free_port, project_file, spawn_app_with, TestApp, CUST1};
use crate::raw_http::Response;

fn document() -> Value {
    serde_json::from_str(&std::fs::read_to_string(project_file("docs/openapi.json")).unwrap())
        .expect("docs/openapi.json is JSON")
}

const KNOWN: &[&str] = &[
    "$ref",
    "type",
    "nullable",
    "enum",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "oneOf",
    "description",
    "example",
    "minimum",
];

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unsupported $ref {r}"));
            let target = &doc["components"]["schemas"][name];
            assert!(target.is_object(), "dangling $ref {r}");
            resolve(doc, target)
        }
        None => schema,
    }
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        other => panic!("unsupported type {other}"),
    }
}

/// Appends one line per violation to `errors`.
fn validate(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    let obj = schema
        .as_object()
        .unwrap_or_else(|| panic!("schema at {at} is not an object"));
    for key in obj.keys() {
        assert!(
            KNOWN.contains(&key.as_str()),
            "unsupported keyword {key} at {at}"
        );
    }
    if v.is_null() && schema["nullable"] == true {
        return;
    }
    if let Some(options) = schema["oneOf"].as_array() {
        let outcomes: Vec<Vec<String>> = options
            .iter()
            .map(|o| {
                let mut e = Vec::new();
                validate(doc, o, v, at, &mut e);
                e
            })
            .collect();
        match outcomes.iter().filter(|e| e.is_empty()).count() {
            1 => {}
            // None fits: the closest option's complaints say most about what is wrong.
            0 => errors.extend(
                outcomes
                    .into_iter()
                    .min_by_key(Vec::len)
                    .unwrap_or_default(),
            ),
            n => errors.push(format!("{at}: matches {n} of the oneOf schemas")),
        }
        return;
    }
    if let Some(ty) = schema["type"].as_str() {
        if !type_ok(ty, v) {
            errors.push(format!("{at}: expected {ty}, got {v}"));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            errors.push(format!("{at}: {v} is not one of {allowed:?}"));
        }
    }
    if let Some(map) = v.as_object() {
        let props = schema["properties"].as_object();
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap();
            if !map.contains_key(name) {
                errors.push(format!("{at}: required property {name} is missing"));
            }
        }
        for (k, value) in map {
            let path = format!("{at}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(doc, s, value, &path, errors),
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => errors.push(format!("{path}: not in the schema")),
                    extra if extra.is_object() => validate(doc, extra, value, &path, errors),
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), v.as_array()) {
        for (i, item) in list.iter().enumerate() {
            validate(doc, items, item, &format!("{at}[{i}]"), errors);
        }
    }
}

/// The documented path template a request path falls under.
fn template_of(doc: &Value, path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap().trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').collect();
    doc["paths"].as_object().unwrap().keys().find_map(|tpl| {
        let t: Vec<&str> = tpl.split('/').collect();
        let same = t.len() == segs.len()
            && t.iter().zip(&segs).all(|(t, s)| {
                if t.starts_with('{') {
                    !s.is_empty()
                } else {
                    t == s
                }
            });
        same.then(|| tpl.clone())
    })
}

/// Checks one answer; returns `(operationId, status)` when the document describes the request.
fn check_answer(
    doc: &Value,
    method: &str,
    path: &str,
    res: &Response,
    label: &str,
    errors: &mut Vec<String>,
) -> Option<(String, u16)> {
    let tpl = template_of(doc, path)?;
    let verb = if method == "HEAD" { "get" } else { method }.to_ascii_lowercase();
    let op = &doc["paths"][&tpl][&verb];
    if !op.is_object() {
        return None;
    }
    let op_id = op["operationId"].as_str().unwrap().to_string();
    let documented = &op["responses"][res.status.to_string()];
    if !documented.is_object() {
        errors.push(format!(
            "{label}: {method} {path}: status {} is not documented",
            res.status
        ));
        return None;
    }
    let content_type = res.header("content-type").unwrap_or("");
    let media = content_type
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_ascii_lowercase();
    match documented["content"].as_object() {
        None if res.body.is_empty() => {}
        None => errors.push(format!("{label}: a body where none is documented")),
        Some(content) => match content.get(&media) {
            None => errors.push(format!(
                "{label}: {method} {path} {}: content type {content_type:?} not documented",
                res.status
            )),
            Some(m) if media == "application/json" => match serde_json::from_slice(&res.body) {
                Ok(body) => validate(doc, &m["schema"], &body, label, errors),
                Err(e) => errors.push(format!("{label}: not JSON ({e})")),
            },
            Some(_) => {}
        },
    }
    Some((op_id, res.status))
}

#[tokio::test]
async fn real_answers_conform_to_the_openapi_document() {
    let doc = document();
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(project_file("fixtures/golden/cases.json")).unwrap(),
    )
    .unwrap();
    let host = spec["host"].as_str().unwrap();
    let mut errors = Vec::new();
    let mut seen: BTreeSet<(String, u16)> = BTreeSet::new();

    let app = spawn_app_with(&[]).await;
    // The served document is the checked-in one.
    let served = app
        .call("GET", "/api/v2/chat/openapi.json", None, &[], b"")
        .await;
    assert_eq!(served.status, 200);
    assert_eq!(
        served.body,
        std::fs::read(project_file("docs/openapi.json")).unwrap()
    );

    for case in spec["cases"].as_array().unwrap() {
        let (method, path, res) = send_case(&app.addr, case, &spec, host).await;
        let label = case["id"].as_str().unwrap();
        if let Some(hit) = check_answer(&doc, &method, &path, &res, label, &mut errors) {
            seen.insert(hit);
        }
    }
    // The long-poll parameter: new messages exist, so the answer comes at once.
    let path = "/api/v2/chat/get-new-messages/1/33?wait=5";
    let res = app.get(path, CUST1).await;
    assert_eq!(res.status, 200);
    check_answer(&doc, "GET", path, &res, "wait", &mut errors);
    // The golden set has no 422 of insert-message.
    let path = "/api/v2/chat/insert-message";
    let res = app
        .post_form(path, CUST1, &[("conversation_id", "x")])
        .await;
    seen.extend(check_answer(&doc, "POST", path, &res, "422", &mut errors));
    app.finish().await;

    // 429 from the throttle.
    let app = spawn_app_with(&[("SHOPCHAT_RATE_LIMIT", "1")]).await;
    let path = "/api/v2/chat/conversations";
    app.get(path, CUST1).await;
    let res = app.get(path, CUST1).await;
    seen.extend(check_answer(&doc, "GET", path, &res, "429", &mut errors));
    app.finish().await;

    // 503 while the database is unavailable.
    let closed = free_port().to_string();
    let app: TestApp = spawn_app_with(&[
        ("DB_PORT", closed.as_str()),
        ("SHOPCHAT_DB_ACQUIRE_TIMEOUT_MS", "500"),
    ])
    .await;
    let path = "/api/v2/chat/messages/1";
    let res = app.get(path, CUST1).await;
    seen.extend(check_answer(&doc, "GET", path, &res, "503", &mut errors));
    app.finish().await;

    assert!(errors.is_empty(), "{}", errors.join("\n"));
    for expected in [
        ("listConversations", 200),
        ("listConversations", 302),
        ("listConversations", 401),
        ("listConversations", 429),
        ("listMessages", 200),
        ("listMessages", 404),
        ("listMessages", 503),
        ("getNewMessages", 200),
        ("getNewMessages", 404),
        ("insertMessage", 200),
        ("insertMessage", 404),
        ("insertMessage", 422),
        ("createConversation", 200),
        ("createConversation", 404),
        ("createConversation", 422),
    ] {
        assert!(
            seen.contains(&(expected.0.to_string(), expected.1)),
            "no answer validated for {expected:?}; seen {seen:?}"
        );
    }
}

#[test]
fn the_validator_rejects_what_the_document_forbids() {
    let doc = document();
    let page = serde_json::json!({"$ref": "#/components/schemas/MessagePage"});
    let mut errors = Vec::new();
    let bad = serde_json::json!({
        "data": [{"id": "1", "user_id": 5, "send_type": "customer", "message": null,
                  "year": "2024", "month": "05", "day_of_month": "01-May", "date": "May 01, 2024",
                  "time": "01:45 pm", "extra": 1}],
        "links": {"first": "a", "last": "b", "prev": null},
        "meta": {"current_page": 1, "from": null, "last_page": 1, "links": [], "path": "p",
                 "per_page": 7, "to": null, "total": 0},
        "success": true, "status": 200
    });
    validate(&doc, &page, &bad, "body", &mut errors);
    assert_eq!(
        errors,
        vec![
            "body.data[0].id: expected integer, got \"1\"",
            "body.data[0].extra: not in the schema",
            "body.links: required property next is missing",
            "body.meta.per_page: 7 is not one of [Number(1), Number(10)]",
        ]
    );
    let mut errors = Vec::new();
    let soft = serde_json::json!({"result": false, "message": "Request not found!"});
    let ok_200 = &doc["paths"]["/api/v2/chat/conversations"]["get"]["responses"]["200"]["content"]
        ["application/json"]["schema"];
    validate(&doc, ok_200, &soft, "soft", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    validate(
        &doc,
        ok_200,
        &serde_json::json!({"result": false}),
        "x",
        &mut errors,
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
}

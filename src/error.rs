//! One error type for every handler, so handlers can use `?` (COMPAT §1.3).
//!
//! Some answers depend on the request (JSON client or not, `<root>` of the
//! login redirect), so the pipeline renders errors with
//! [`ApiError::render`]; the `ResponseError` impl is the JSON-client form for
//! the few places outside the pipeline.

use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Map, Value};

use crate::http::response;
use crate::laravel::json::to_php_json_pretty;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Sanctum failed (K3): 401 JSON or 302 to the login page.
    #[error("unauthenticated")]
    Unauthenticated,
    /// D1: not a participant, unknown or malformed id. JSON for every client.
    #[error("conversation {0} not found")]
    ConversationNotFound(String),
    /// `findOrFail` of the product or its owner (§5.5, D4). PHP-mirroring.
    #[error("product {0} not found")]
    ProductNotFound(String),
    /// D2: the fields and their single messages, in field order.
    #[error("validation failed")]
    Validation(Vec<(&'static str, String)>),
    /// create-conversation: the sender started `SHOPCHAT_NEW_CONVERSATIONS_PER_HOUR` new
    /// conversations with this receiver within the hour (security review M3): 429, JSON for
    /// every client, `Retry-After` = seconds until one more is allowed.
    #[error("too many new conversations; retry in {0} s")]
    TooManyConversations(u64),
    /// The database is unavailable (§1.3): 503 with `Retry-After: 5`.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure: logged, 500.
    #[error("internal error: {0}")]
    Internal(String),
}

/// MySQL error numbers that mean "the database is not usable right now"
/// (§1.3): lock wait timeout, too many connections, shutdown in progress,
/// query interrupted (`KILL QUERY`), connection errors reported by the
/// server, MariaDB's "connection was killed" (1927: `KILL CONNECTION`, a
/// server shutting down) and MySQL 8's idle disconnect (4031).
/// `tests/api/faults.rs` produces these by stopping and killing.
const UNAVAILABLE_NUMBERS: &[u16] = &[1205, 1040, 1053, 1317, 1927, 2002, 2003, 2006, 2013, 4031];

/// The MySQL error number (`1366`, …) of a database error. sqlx's
/// `DatabaseError::code()` gives the SQLSTATE instead, which is too coarse.
pub fn mysql_error_number(e: &sqlx::Error) -> Option<u16> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .map(|m| m.number()),
        _ => None,
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            ApiError::Unavailable(e.to_string())
        } else {
            ApiError::Internal(format!("database: {e}"))
        }
    }
}

pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(_) => {
            mysql_error_number(e).is_some_and(|n| UNAVAILABLE_NUMBERS.contains(&n))
        }
        sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

/// How the bodies of shopchat's own 422 and 503 begin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"message": …}` (§1.3, §5.0).
    Plain,
    /// `{"result": false, "message": …}`: create-conversation (§5.5 step 7, 2026-12). The app
    /// shows its error toast only when `result` is `false`; any other body opens a chat screen
    /// that fails on the missing `shop_name`.
    ResultFalse,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::ConversationNotFound(_) | ApiError::ProductNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyConversations(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The answer for this request.
    pub fn render(&self, json_client: bool, root: &str, shape: ErrorShape) -> HttpResponse {
        match self {
            ApiError::Unauthenticated => response::unauthenticated(json_client, root),
            ApiError::ConversationNotFound(id) => response::pretty_message(
                StatusCode::NOT_FOUND,
                &format!("No query results for model [App\\Models\\Conversation] {id}"),
            ),
            ApiError::ProductNotFound(id) => response::mirrored_error(
                StatusCode::NOT_FOUND,
                &format!("No query results for model [App\\Models\\Product] {id}"),
                json_client,
            ),
            ApiError::Validation(errors) => validation_response(errors, shape),
            ApiError::TooManyConversations(retry_after) => {
                let mut res =
                    own_message(StatusCode::TOO_MANY_REQUESTS, "Too Many Attempts.", shape);
                res.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(*retry_after));
                res
            }
            ApiError::Unavailable(reason) => {
                tracing::warn!(%reason, "database unavailable");
                let mut res = own_message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service Unavailable",
                    shape,
                );
                res.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("5"));
                res
            }
            ApiError::Internal(reason) => {
                tracing::error!(%reason, "internal error");
                response::mirrored_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Server Error",
                    json_client,
                )
            }
        }
    }
}

/// A pretty `{"message": …}` of shopchat's own, after `"result": false` on create-conversation
/// (§5.5 step 7).
fn own_message(status: StatusCode, message: &str, shape: ErrorShape) -> HttpResponse {
    let mut body = Map::new();
    if shape == ErrorShape::ResultFalse {
        body.insert("result".into(), Value::Bool(false));
    }
    body.insert("message".into(), message.into());
    response::with_body(
        status,
        response::JSON,
        to_php_json_pretty(&Value::Object(body)),
    )
}

/// The 422 body of §5.0: pretty, `message` then `errors` in field order (after `"result":
/// false` on create-conversation, §5.5 step 7).
fn validation_response(errors: &[(&'static str, String)], shape: ErrorShape) -> HttpResponse {
    let first = errors
        .first()
        .map(|(_, m)| m.as_str())
        .unwrap_or("The given data was invalid.");
    let message = match errors.len() {
        0 | 1 => first.to_string(),
        2 => format!("{first} (and 1 more error)"),
        n => format!("{first} (and {} more errors)", n - 1),
    };
    let mut fields = Map::new();
    for (field, msg) in errors {
        fields.insert(
            (*field).to_string(),
            Value::Array(vec![Value::String(msg.clone())]),
        );
    }
    let mut body = Map::new();
    if shape == ErrorShape::ResultFalse {
        body.insert("result".into(), Value::Bool(false));
    }
    body.insert("message".into(), Value::String(message));
    body.insert("errors".into(), Value::Object(fields));
    response::with_body(
        StatusCode::UNPROCESSABLE_ENTITY,
        response::JSON,
        to_php_json_pretty(&Value::Object(body)),
    )
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        self.render(true, "", ErrorShape::Plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    #[test]
    fn validation_body_matches_the_contract() {
        let err = ApiError::Validation(vec![
            ("product_id", "The product id field is required.".into()),
            ("message", "The message field is required.".into()),
        ]);
        let res = err.render(false, "", ErrorShape::Plain);
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = res.into_body().try_into_bytes().unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "{\n    \"message\": \"The product id field is required. (and 1 more error)\",\n    \"errors\": {\n        \"product_id\": [\n            \"The product id field is required.\"\n        ],\n        \"message\": [\n            \"The message field is required.\"\n        ]\n    }\n}"
        );
    }

    #[test]
    fn create_conversation_errors_start_with_result_false() {
        let err = ApiError::Validation(vec![("message", "The message field is required.".into())]);
        let body = err
            .render(true, "", ErrorShape::ResultFalse)
            .into_body()
            .try_into_bytes()
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "{\n    \"result\": false,\n    \"message\": \"The message field is required.\",\n    \"errors\": {\n        \"message\": [\n            \"The message field is required.\"\n        ]\n    }\n}"
        );
        let res = ApiError::Unavailable("down".into()).render(true, "", ErrorShape::ResultFalse);
        assert_eq!(res.headers().get("retry-after").unwrap(), "5");
        let body = res.into_body().try_into_bytes().unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "{\n    \"result\": false,\n    \"message\": \"Service Unavailable\"\n}"
        );
        // The PHP-mirroring errors keep PHP's bytes.
        let body = ApiError::ProductNotFound("9".into())
            .render(true, "", ErrorShape::ResultFalse)
            .into_body()
            .try_into_bytes()
            .unwrap();
        assert!(!std::str::from_utf8(&body).unwrap().contains("\"result\""));
    }

    #[test]
    fn conversation_404_is_json_for_everyone() {
        let res = ApiError::ConversationNotFound("7".into()).render(false, "", ErrorShape::Plain);
        let body = res.into_body().try_into_bytes().unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "{\n    \"message\": \"No query results for model [App\\\\Models\\\\Conversation] 7\"\n}"
        );
    }

    #[test]
    fn unavailable_carries_retry_after() {
        let res = ApiError::Unavailable("down".into()).render(true, "", ErrorShape::Plain);
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers().get("retry-after").unwrap(), "5");
    }
}

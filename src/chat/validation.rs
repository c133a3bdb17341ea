//! Input validation of the write routes (COMPAT §5.0, deviation D2).
//!
//! Each field yields its first failing rule's message; the messages are
//! normative, byte for byte.

use serde_json::Value;

use crate::error::{mysql_error_number, ApiError};
use crate::http::input::Input;
use crate::laravel::text::is_integer_string;

/// An integer field: the value and its text "as received" (after trimming),
/// which is what the 404 answers show (§1.3).
#[derive(Debug, Clone, PartialEq)]
pub struct IntField {
    pub value: i64,
    pub as_received: String,
}

/// Collects the errors of one request in field order.
#[derive(Default)]
pub struct Validator {
    errors: Vec<(&'static str, String)>,
}

fn label(field: &str) -> String {
    field.replace('_', " ")
}

impl Validator {
    /// `required|integer`: a JSON integer within i64 or an integer string.
    pub fn integer(&mut self, input: &Input, field: &'static str) -> Option<IntField> {
        if input.is_absent(field) {
            self.errors
                .push((field, format!("The {} field is required.", label(field))));
            return None;
        }
        let parsed = match input.get(field) {
            Some(Value::Number(n)) => {
                // Only integers written as integers: `5` yes, `5.0` and `5e0` no.
                let text = n.to_string();
                n.as_i64()
                    .filter(|_| !text.contains(['.', 'e', 'E']))
                    .map(|v| IntField {
                        value: v,
                        as_received: text,
                    })
            }
            Some(Value::String(s)) if input.is_valid_utf8(field) => {
                is_integer_string(s).map(|v| IntField {
                    value: v,
                    as_received: s.clone(),
                })
            }
            _ => None,
        };
        if parsed.is_none() {
            self.errors
                .push((field, format!("The {} must be an integer.", label(field))));
        }
        parsed
    }

    /// `string` with a size rule; `required` or optional (absent → `None`).
    pub fn string(
        &mut self,
        input: &Input,
        field: &'static str,
        required: bool,
        limit: Limit,
    ) -> Option<String> {
        if input.is_absent(field) {
            if required {
                self.errors
                    .push((field, format!("The {} field is required.", label(field))));
            }
            return None;
        }
        let Some(Value::String(s)) = input.get(field).filter(|_| input.is_valid_utf8(field)) else {
            self.errors
                .push((field, format!("The {} must be a string.", label(field))));
            return None;
        };
        let too_long = match limit {
            Limit::Bytes(n) => s.len() > n,
            Limit::Chars(n) => s.chars().count() > n,
        };
        if too_long {
            self.errors.push((field, limit.message(field)));
            return None;
        }
        Some(s.clone())
    }

    /// The parsed input when every field passed, else the 422 with each failing field's first
    /// message. `parsed` is the required fields put together: `None` only when one of them
    /// failed, and a failing field always leaves its message.
    fn finish<T>(self, parsed: Option<T>) -> Result<T, ApiError> {
        match parsed {
            Some(t) if self.errors.is_empty() => Ok(t),
            _ if !self.errors.is_empty() => Err(ApiError::Validation(self.errors)),
            _ => Err(ApiError::Internal(
                "a required field failed without a message".into(),
            )),
        }
    }
}

/// The input of insert-message (§5.3 step 1, D2), fields checked in this order. A `user_id`
/// sent by the app is ignored (D5).
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub conversation: IntField,
    pub message: String,
}

impl NewMessage {
    pub fn parse(input: &Input) -> Result<NewMessage, ApiError> {
        let mut v = Validator::default();
        let conversation = v.integer(input, "conversation_id");
        let message = v.string(input, "message", true, MESSAGE_LIMIT);
        let parsed = conversation
            .zip(message)
            .map(|(conversation, message)| NewMessage {
                conversation,
                message,
            });
        v.finish(parsed)
    }
}

/// The input of create-conversation (§5.5 step 1, D2): product, message, optional title.
#[derive(Debug, Clone, PartialEq)]
pub struct NewConversation {
    pub product: IntField,
    pub message: String,
    pub title: Option<String>,
}

impl NewConversation {
    pub fn parse(input: &Input) -> Result<NewConversation, ApiError> {
        let mut v = Validator::default();
        let product = v.integer(input, "product_id");
        let message = v.string(input, "message", true, MESSAGE_LIMIT);
        let title = v.string(input, "title", false, TITLE_LIMIT);
        let parsed = product
            .zip(message)
            .map(|(product, message)| NewConversation {
                product,
                message,
                title,
            });
        v.finish(parsed)
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// `max` on UTF-8 bytes (the `message`, a TEXT column).
    Bytes(usize),
    /// `max` on Unicode code points (the `title`).
    Chars(usize),
}

impl Limit {
    pub fn message(self, field: &str) -> String {
        match self {
            Limit::Bytes(n) => format!("The {} may not be greater than {n} bytes.", label(field)),
            Limit::Chars(n) => format!(
                "The {} may not be greater than {n} characters.",
                label(field)
            ),
        }
    }
}

pub const MESSAGE_LIMIT: Limit = Limit::Bytes(65_535);
pub const TITLE_LIMIT: Limit = Limit::Chars(1000);

/// The storage guard (§5.0): strict `sql_mode` turns a value the column
/// cannot hold into an error, answered as a 422 on that field.
pub fn storage_guard(e: sqlx::Error, field: &'static str, limit: Limit) -> ApiError {
    match mysql_error_number(&e) {
        // ER_DATA_TOO_LONG
        Some(1406) => ApiError::Validation(vec![(field, limit.message(field))]),
        // ER_TRUNCATED_WRONG_VALUE_FOR_FIELD (e.g. an emoji into utf8mb3)
        Some(1366) => ApiError::Validation(vec![(
            field,
            format!(
                "The {} contains characters that cannot be stored.",
                label(field)
            ),
        )]),
        _ => ApiError::from(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(body: &str) -> Input {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(Input::from_post(
                Some("application/json"),
                body.as_bytes(),
                "",
            ))
    }

    fn errors_of<T: std::fmt::Debug>(parsed: Result<T, ApiError>) -> Vec<(&'static str, String)> {
        match parsed {
            Err(ApiError::Validation(errors)) => errors,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn write_inputs_parse_into_their_fields() {
        let m = NewMessage::parse(&input(
            r#"{"conversation_id": "7", "message": "hi", "user_id": 9}"#,
        ));
        assert_eq!(
            m.unwrap(),
            NewMessage {
                conversation: IntField {
                    value: 7,
                    as_received: "7".into()
                },
                message: "hi".into()
            }
        );
        let c = NewConversation::parse(&input(r#"{"product_id": 3, "message": "q"}"#)).unwrap();
        assert_eq!(
            (c.product.value, c.message.as_str(), c.title),
            (3, "q", None)
        );
        // Every failing field, in the contract's order (§5.0), whichever fields passed.
        assert_eq!(
            errors_of(NewConversation::parse(&input(
                r#"{"title": 5, "message": "ok"}"#
            ))),
            vec![
                (
                    "product_id",
                    "The product id field is required.".to_string()
                ),
                ("title", "The title must be a string.".to_string())
            ]
        );
        assert_eq!(
            errors_of(NewMessage::parse(&input(r#"{"conversation_id": 1}"#))),
            vec![("message", "The message field is required.".to_string())]
        );
    }

    fn run(body: &str, f: impl FnOnce(&mut Validator, &Input)) -> Vec<(&'static str, String)> {
        let input = input(body);
        let mut v = Validator::default();
        f(&mut v, &input);
        match v.finish(Some(())) {
            Ok(()) => vec![],
            Err(ApiError::Validation(errors)) => errors,
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn integers() {
        let ok = |body: &str| {
            let mut got = None;
            run(body, |v, i| got = v.integer(i, "conversation_id"));
            got
        };
        assert_eq!(ok(r#"{"conversation_id": 5}"#).unwrap().as_received, "5");
        assert_eq!(
            ok(r#"{"conversation_id": " +5 "}"#).unwrap(),
            IntField {
                value: 5,
                as_received: "+5".into()
            }
        );
        assert!(ok(r#"{"conversation_id": 5.0}"#).is_none());
        assert!(ok(r#"{"conversation_id": true}"#).is_none());
        assert!(ok(r#"{"conversation_id": "05"}"#).is_none());
        assert!(ok(r#"{"conversation_id": "9223372036854775808"}"#).is_none());
        let errors = run(r#"{"conversation_id": "x"}"#, |v, i| {
            v.integer(i, "conversation_id");
        });
        assert_eq!(
            errors,
            vec![(
                "conversation_id",
                "The conversation id must be an integer.".to_string()
            )]
        );
        let errors = run(r#"{"conversation_id": []}"#, |v, i| {
            v.integer(i, "conversation_id");
        });
        assert_eq!(
            errors,
            vec![(
                "conversation_id",
                "The conversation id field is required.".to_string()
            )]
        );
    }

    #[test]
    fn strings_and_limits() {
        let errors = run(r#"{"message": 5, "title": ["a"]}"#, |v, i| {
            v.string(i, "message", true, MESSAGE_LIMIT);
            v.string(i, "title", false, TITLE_LIMIT);
        });
        assert_eq!(
            errors,
            vec![
                ("message", "The message must be a string.".to_string()),
                ("title", "The title must be a string.".to_string())
            ]
        );
        let long_title = format!(r#"{{"title": "{}"}}"#, "é".repeat(1001));
        let errors = run(&long_title, |v, i| {
            v.string(i, "title", false, TITLE_LIMIT);
        });
        assert_eq!(
            errors[0].1,
            "The title may not be greater than 1000 characters."
        );
        let ok_title = format!(r#"{{"title": "{}"}}"#, "é".repeat(1000));
        assert!(run(&ok_title, |v, i| {
            v.string(i, "title", false, TITLE_LIMIT);
        })
        .is_empty());
        let long_message = format!(r#"{{"message": "{}"}}"#, "é".repeat(32_768));
        let errors = run(&long_message, |v, i| {
            v.string(i, "message", true, MESSAGE_LIMIT);
        });
        assert_eq!(
            errors[0].1,
            "The message may not be greater than 65535 bytes."
        );
    }
}

//! The OpenAPI 3 document of the chat API, served at
//! `/api/v2/chat/openapi.json` (§1.1) and checked in as `docs/openapi.json`.

use crate::state::AppState;

const DOCUMENT: &str = include_str!("../docs/openapi.json");

pub fn document(_state: &AppState) -> String {
    DOCUMENT.to_string()
}

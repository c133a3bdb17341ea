//! The OpenAPI 3 document of the chat API, served at
//! `/api/v2/chat/openapi.json` (§1.1) and checked in as `docs/openapi.json`.
//! `tests/api/openapi.rs` validates real answers against it.

use serde_json::Value;

const DOCUMENT: &str = include_str!("../docs/openapi.json");

/// The document; with `SHOPCHAT_BASE_PATH` set, its server URL is that base
/// path, so that tools resolve the routes where this shop serves them (§4.3).
pub fn document(base: &str) -> String {
    if base.is_empty() {
        return DOCUMENT.to_string();
    }
    match serde_json::from_str::<Value>(DOCUMENT) {
        Ok(mut doc) => {
            doc["servers"] = serde_json::json!([{ "url": base }]);
            serde_json::to_string_pretty(&doc).unwrap_or_else(|_| DOCUMENT.to_string())
        }
        Err(_) => DOCUMENT.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_with_the_five_routes() {
        let doc: Value = serde_json::from_str(DOCUMENT).expect("docs/openapi.json is JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        for (path, method) in [
            ("/api/v2/chat/conversations", "get"),
            ("/api/v2/chat/messages/{id}", "get"),
            ("/api/v2/chat/insert-message", "post"),
            (
                "/api/v2/chat/get-new-messages/{conversation_id}/{last_message_id}",
                "get",
            ),
            ("/api/v2/chat/create-conversation", "post"),
        ] {
            assert!(paths[path][method].is_object(), "{method} {path}");
        }
        let params = &paths["/api/v2/chat/get-new-messages/{conversation_id}/{last_message_id}"]
            ["get"]["parameters"];
        assert!(params
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "wait" && p["in"] == "query"));
    }

    #[test]
    fn base_path_becomes_the_server_url() {
        assert_eq!(document(""), DOCUMENT);
        let doc: Value = serde_json::from_str(&document("/shop")).unwrap();
        assert_eq!(doc["servers"][0]["url"], "/shop");
        assert_eq!(doc["info"]["version"], "2");
    }
}

//! Route matching exactly as COMPAT §1.1 (K1).
//!
//! actix-web's router decodes and matches paths by its own rules; Laravel's
//! differ in details clients can see (`%2F` inside a segment, `//`, trailing
//! slashes, decoded parameters), so shopchat matches paths itself with this
//! small pure function and lets actix do everything else.

use percent_encoding::percent_decode;

/// What a request path (base path already removed) designates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Conversations,
    Messages {
        id: String,
    },
    InsertMessage,
    NewMessages {
        conversation_id: String,
        last_message_id: String,
    },
    CreateConversation,
    OpenApi,
    /// Any other path under `/api/`: the "Invalid Route" answer.
    Fallback,
    Health,
    Ready,
    Metrics,
    /// A path outside `/api/`: 404 "The route … could not be found."
    Outside,
}

/// Which methods a path accepts (§1.1: `Allow` of OPTIONS and 405 answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Methods {
    GetHead,
    Post,
}

impl Route {
    pub fn methods(&self) -> Methods {
        match self {
            Route::InsertMessage | Route::CreateConversation => Methods::Post,
            _ => Methods::GetHead,
        }
    }

    /// Chat routes run the whole pipeline (auth, locale, banned check).
    pub fn is_chat(&self) -> bool {
        matches!(
            self,
            Route::Conversations
                | Route::Messages { .. }
                | Route::InsertMessage
                | Route::NewMessages { .. }
                | Route::CreateConversation
        )
    }

    /// `/health`, `/ready`, `/metrics`: answered outside the pipeline's steps (§1.1).
    pub fn is_operational(&self) -> bool {
        matches!(self, Route::Health | Route::Ready | Route::Metrics)
    }

    /// A short name for logs and metrics (the route template).
    pub fn name(&self) -> &'static str {
        match self {
            Route::Conversations => "conversations",
            Route::Messages { .. } => "messages",
            Route::InsertMessage => "insert-message",
            Route::NewMessages { .. } => "get-new-messages",
            Route::CreateConversation => "create-conversation",
            Route::OpenApi => "openapi",
            Route::Fallback => "fallback",
            Route::Health => "health",
            Route::Ready => "ready",
            Route::Metrics => "metrics",
            Route::Outside => "not-found",
        }
    }
}

impl Methods {
    /// `Allow` header of an OPTIONS answer (no spaces, like PHP).
    pub fn allow_options(self) -> &'static str {
        match self {
            Methods::GetHead => "GET,HEAD",
            Methods::Post => "GET,HEAD,POST",
        }
    }

    /// `Allow` header and the method list of a 405 answer.
    pub fn allow_405(self) -> &'static str {
        match self {
            Methods::GetHead => "GET, HEAD",
            Methods::Post => "GET, HEAD, POST",
        }
    }
}

/// The route of a raw request path (no query) under `SHOPCHAT_BASE_PATH` (§4.3), and the path
/// with the base removed. A path outside the base path is [`Route::Outside`], shown whole.
pub fn route_for<'a>(raw_path: &'a str, base_path: &str) -> (Route, &'a str) {
    match raw_path.strip_prefix(base_path) {
        Some(rest) if base_path.is_empty() || rest.is_empty() || rest.starts_with('/') => {
            (match_path(rest), rest)
        }
        _ => (Route::Outside, raw_path),
    }
}

/// Matches a raw (still percent-encoded) request path, without query string
/// and with the base path already removed.
pub fn match_path(raw_path: &str) -> Route {
    let trimmed = raw_path.trim_end_matches('/');
    match trimmed {
        "/health" => return Route::Health,
        "/ready" => return Route::Ready,
        "/metrics" => return Route::Metrics,
        _ => {}
    }
    let Some(rest) = trimmed.strip_prefix("/api/") else {
        return Route::Outside;
    };
    // Raw segments: `//` makes an empty segment, which never matches a `{x}`. A segment without
    // escapes is borrowed, not copied.
    let mut segments = Vec::with_capacity(6);
    for raw in rest.split('/') {
        let decoded = percent_decode(raw.as_bytes()).decode_utf8_lossy();
        if decoded.is_empty() || decoded.contains('/') {
            return Route::Fallback;
        }
        segments.push(decoded);
    }
    let s: Vec<&str> = segments.iter().map(|c| c.as_ref()).collect();
    match s.as_slice() {
        ["v2", "chat", "conversations"] => Route::Conversations,
        ["v2", "chat", "messages", id] => Route::Messages { id: id.to_string() },
        ["v2", "chat", "insert-message"] => Route::InsertMessage,
        ["v2", "chat", "get-new-messages", cid, last] => Route::NewMessages {
            conversation_id: cid.to_string(),
            last_message_id: last.to_string(),
        },
        ["v2", "chat", "create-conversation"] => Route::CreateConversation,
        ["v2", "chat", "openapi.json"] => Route::OpenApi,
        _ => Route::Fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_routes() {
        assert_eq!(
            match_path("/api/v2/chat/conversations"),
            Route::Conversations
        );
        assert_eq!(
            match_path("/api/v2/chat/conversations/"),
            Route::Conversations
        );
        assert_eq!(
            match_path("/api/v2/chat/messages/1/"),
            Route::Messages { id: "1".into() }
        );
        assert_eq!(
            match_path("/api/v2/chat/messages/%31"),
            Route::Messages { id: "1".into() }
        );
        assert_eq!(
            match_path("/api/v2/chat/get-new-messages/1/30"),
            Route::NewMessages {
                conversation_id: "1".into(),
                last_message_id: "30".into()
            }
        );
        assert_eq!(
            match_path("/api/v2/chat/insert-message"),
            Route::InsertMessage
        );
        assert_eq!(
            match_path("/api/v2/chat/create-conversation"),
            Route::CreateConversation
        );
        assert_eq!(match_path("/api/v2/chat/openapi.json"), Route::OpenApi);
    }

    #[test]
    fn fallback_and_outside() {
        assert_eq!(
            match_path("/api/v2/chat/get-new-messages/1"),
            Route::Fallback
        );
        assert_eq!(match_path("/api/v2/chat/nope"), Route::Fallback);
        assert_eq!(match_path("/api/v2/chat/messages/1%2F2"), Route::Fallback);
        assert_eq!(match_path("/api/v2/chat//messages/1"), Route::Fallback);
        assert_eq!(
            match_path("/api/V2/chat/conversations"),
            Route::Fallback,
            "case-sensitive"
        );
        assert_eq!(match_path("/foo/bar/"), Route::Outside);
        assert_eq!(match_path("/"), Route::Outside);
        assert_eq!(match_path("/api"), Route::Outside);
        assert_eq!(match_path("/health"), Route::Health);
    }

    #[test]
    fn invalid_utf8_parameters_are_replaced() {
        assert_eq!(
            match_path("/api/v2/chat/messages/%FF"),
            Route::Messages {
                id: "\u{fffd}".into()
            }
        );
    }

    #[test]
    fn methods() {
        assert_eq!(
            Route::InsertMessage.methods().allow_405(),
            "GET, HEAD, POST"
        );
        assert_eq!(Route::Fallback.methods().allow_options(), "GET,HEAD");
        assert!(Route::Messages { id: "1".into() }.is_chat());
        assert!(!Route::Fallback.is_chat());
    }
}

//! The five chat routes (COMPAT §5). One module per route; the SQL lives in
//! [`repo`], item formats in [`items`], input validation in [`validation`].

pub mod conversations;
pub mod create_conversation;
pub mod ctx;
pub mod insert_message;
pub mod items;
pub mod locks;
pub mod messages;
pub mod repo;
pub mod sql;
pub mod storage;
pub mod validation;
pub mod watch;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use crate::error::ApiError;
use crate::http::routing::Route;

pub use ctx::Ctx;

pub async fn dispatch(ctx: &Ctx<'_>, route: &Route) -> Result<HttpResponse, ApiError> {
    match route {
        Route::Conversations => conversations::handle(ctx).await,
        Route::Messages { id } => messages::handle(ctx, id, None).await,
        Route::NewMessages {
            conversation_id,
            last_message_id,
        } => messages::handle(ctx, conversation_id, Some(last_message_id)).await,
        // Shadow mode (§11.2): a write is only checked — validation and the
        // participant / product lookups — never executed, never mailed.
        Route::InsertMessage if !ctx.info.mode.writes() => {
            insert_message::check(ctx).await.map(|_| shadow_accepted())
        }
        Route::CreateConversation if !ctx.info.mode.writes() => create_conversation::check(ctx)
            .await
            .map(|_| shadow_accepted()),
        Route::InsertMessage => insert_message::handle(ctx).await,
        Route::CreateConversation => create_conversation::handle(ctx).await,
        other => Err(ApiError::Internal(format!(
            "route {other:?} reached the chat dispatcher"
        ))),
    }
}

/// The stand-in answer of a write that shadow mode would accept; only its
/// status class is ever compared.
fn shadow_accepted() -> HttpResponse {
    crate::http::response::json(StatusCode::OK, &serde_json::json!({"shadow": "accepted"}))
}

//! `GET /api/v2/chat/messages/{id}` (COMPAT §5.2) and
//! `GET /api/v2/chat/get-new-messages/{conversation_id}/{last_message_id}` (§5.4):
//! the same page of messages, newest first, the second only above a cursor.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use crate::chat::{items, repo, Ctx};
use crate::error::ApiError;
use crate::http::response;
use crate::laravel::paginate::{envelope, offset};

const PER_PAGE: i64 = 10;

/// `after` = the raw `last_message_id` segment for get-new-messages.
pub async fn handle(
    ctx: &Ctx<'_>,
    conversation: &str,
    after: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let state = ctx.state;
    // D1: participants only; unknown and malformed ids are 404 too.
    let (id, _) = repo::require_participant(
        &state.participants,
        &state.pool,
        conversation,
        ctx.user.user_id,
    )
    .await?;
    let page = ctx.input.page();
    let total = repo::count_messages(&state.pool, id, after).await?;
    let rows = match offset(page, PER_PAGE) {
        Some(off) if total > 0 => repo::list_messages(&state.pool, id, after, off).await?,
        _ => Vec::new(),
    };
    let data = rows.iter().map(items::message_item).collect();
    Ok(response::json(
        StatusCode::OK,
        &envelope(&ctx.info.path_url, page, PER_PAGE, total, data),
    ))
}

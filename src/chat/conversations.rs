//! `GET /api/v2/chat/conversations` (COMPAT §5.1): the conversations U
//! started, newest first, ten per page. Receivers never see theirs here (kept).

use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use crate::chat::{items, repo, Ctx};
use crate::error::ApiError;
use crate::http::response;
use crate::laravel::paginate::{envelope, offset};

const PER_PAGE: i64 = 10;

pub async fn handle(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let page = ctx.input.page();
    let pool = &ctx.state.pool;
    let total = repo::count_conversations(pool, ctx.user.user_id).await?;
    // The item query is skipped when there is nothing, or the page is beyond i64 (§4.1, §4.2).
    let rows = match offset(page, PER_PAGE) {
        Some(off) if total > 0 => repo::list_conversations(pool, ctx.user.user_id, off).await?,
        _ => Vec::new(),
    };
    let data = items::conversation_items(ctx, &rows).await?;
    Ok(response::json(
        StatusCode::OK,
        &envelope(&ctx.info.path_url, page, PER_PAGE, total, data),
    ))
}

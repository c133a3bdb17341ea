//! `GET /api/v2/chat/conversations` (COMPAT §5.1): the conversations U
//! started, newest first, ten per page. Receivers never see theirs here (kept).

use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use crate::chat::ctx::Ctx;
use crate::chat::{items, repo};
use crate::error::ApiError;
use crate::http::response;
use crate::laravel::paginate::{envelope, offset};

const PER_PAGE: i64 = 10;

pub async fn handle(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let page = ctx.input.page();
    let pool = &ctx.state.db();
    // A page beyond i64 has no offset: only the total is asked for (§4.1, §4.2).
    let (total, rows) = match offset(page, PER_PAGE) {
        Some(off) => repo::conversation_page(pool, ctx.user.user_id, off).await?,
        None => (
            repo::count_conversations(pool, ctx.user.user_id).await?,
            Vec::new(),
        ),
    };
    let data = items::conversation_items(ctx, &rows).await?;
    Ok(response::with_body(
        StatusCode::OK,
        response::JSON,
        envelope(&ctx.info.path_url, page, PER_PAGE, total, &data),
    ))
}

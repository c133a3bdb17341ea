//! `POST /api/v2/chat/insert-message` (COMPAT §5.3; D1, D2, D3, D5).

use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use crate::chat::ctx::Ctx;
use crate::chat::repo::{MessageRow, Parties, Seen};
use crate::chat::validation::NewMessage;
use crate::chat::{items, repo};
use crate::error::ApiError;
use crate::http::response;
use crate::laravel::paginate::envelope;

/// Steps 1–2 without any write: what the request would be accepted as.
/// Shadow mode stops here (§11.2).
pub async fn check(ctx: &Ctx<'_>) -> Result<(NewMessage, Parties), ApiError> {
    let state = ctx.state;
    // 1. Validation (D2).
    let input = NewMessage::parse(&ctx.input)?;
    let cid = &input.conversation;
    // 2. D1: only participants may post; nothing is written otherwise.
    let not_found = || ApiError::ConversationNotFound(cid.as_received.clone());
    let parties = state
        .participants
        .get(&state.db(), cid.value)
        .await?
        .ok_or_else(not_found)?;
    if !parties.includes(ctx.user.user_id) {
        return Err(not_found());
    }
    Ok((input, parties))
}

pub async fn handle(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let state = ctx.state;
    let (
        NewMessage {
            conversation: cid,
            message,
        },
        _,
    ) = check(ctx).await?;
    let not_found = || ApiError::ConversationNotFound(cid.as_received.clone());
    // 3. One transaction: the message and the D5 flags (D3). Its first statement claims the
    // conversation row under its lock: the shop may have deleted it (or, on MySQL 5.7, handed
    // its id to another pair) since the participants were cached (§11.1, 2026-12). Returning
    // early drops the transaction, which rolls it back: nothing is written.
    let now_s = ctx.now_s();
    let pool = state.db();
    let mut tx = pool.begin().await?;
    if !repo::claim_for_post(&mut tx, cid.value, ctx.user.user_id, &now_s).await? {
        drop(tx);
        // Rare: what the row is now corrects the cache, and long-polls held on a conversation
        // that is gone answer now (with the 404 it has become).
        let seen = state
            .participants
            .reread(&pool, cid.value)
            .await?
            .map_or(Seen::Gone, Seen::Row);
        state.participants.saw(cid.value, seen);
        if seen == Seen::Gone {
            state.watcher.conversation_gone(cid.value);
        }
        return Err(not_found());
    }
    let (id, stored) = state
        .storage
        .insert_message(&mut tx, cid.value, ctx.user.user_id, &message, &now_s)
        .await?;
    // The answer's row is what was just written, not re-read: the text as stored, the time
    // bound, the author's type as authenticated (§11.1 allows its staleness). One round trip
    // less inside the transaction, which holds a pooled connection (bench/apptraffic.sh: writes
    // were 55 % of the statements at 50,000 app users).
    let row = MessageRow {
        id,
        user_id: ctx.user.user_id,
        message: Some(stored.into_owned()),
        created_at: Some(now_s),
        user_type: Some(ctx.user.user_type.clone()),
    };
    // A commit whose answer was lost may have stored the message: then it is answered as
    // stored, and a retry by the app does not post it twice (security review L2).
    repo::commit(tx, &pool, id, cid.value)
        .await
        .map_err(|(e, _)| ApiError::from(e))?;
    state.watcher.message_stored(cid.value, id);
    // 4. A one-item page over the new row; page ≥ 2 shows none (K11).
    let page = ctx.input.page();
    let data = match page {
        1 => vec![items::message_item(&row)],
        _ => Vec::new(),
    };
    Ok(response::with_body(
        StatusCode::OK,
        response::JSON,
        envelope(&ctx.info.path_url, page, 1, 1, &data),
    ))
}

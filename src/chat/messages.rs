//! `GET /api/v2/chat/messages/{id}` (COMPAT §5.2) and
//! `GET /api/v2/chat/get-new-messages/{conversation_id}/{last_message_id}` (§5.4):
//! the same page of messages, newest first, the second only above a cursor,
//! optionally held open until something arrives (long-poll, `wait=N`).

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use crate::chat::ctx::Ctx;
use crate::chat::items;
use crate::chat::repo::{self, Seen};
use crate::chat::watch::Waited;
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
    // D1: participants only; unknown and malformed ids are 404 too. Admitted on the
    // participants cache (at most 60 s old); every statement below re-reads the row.
    let (id, _) = repo::require_participant(
        &state.participants,
        &state.db(),
        conversation,
        ctx.user.user_id,
    )
    .await?;
    let page = ctx.input.page();
    let Some(after) = after else {
        let (total, data) = page_of(ctx, conversation, id, None, page).await?;
        return Ok(answer(ctx, page, total, data));
    };

    let watcher = &state.watcher;
    // The fast path and the watcher speak plain ids; any other cursor text
    // goes to MySQL, whose coercion ("abc" → 0, "1e3" → 1000) is the contract.
    let cursor = plain_id(after);
    let max_wait = state.settings.long_poll.max_wait;
    let wait = ctx
        .input
        .positive_int("wait")
        // A process that is shutting down answers at once (graceful shutdown).
        .filter(|_| !max_wait.is_zero() && !state.ops.is_draining())
        .map(|w| Duration::from_secs(w as u64).min(max_wait));
    // A user (or the process) holding as many long-polls as allowed is answered at once.
    let held = wait.and_then(|w| Some((w, watcher.waiter(ctx.user.user_id)?)));
    let Some((wait, _held)) = held else {
        // "Nothing new" without a query (§11.1); a long-poll must wait instead.
        if cursor.is_some_and(|last| watcher.nothing_new(id, last)) {
            return Ok(answer(ctx, page, 0, Vec::new()));
        }
        let epoch = watcher.epoch();
        let (total, data) = page_of(ctx, conversation, id, Some(after), page).await?;
        if total == 0 {
            if let Some(last) = cursor {
                watcher.verified_nothing_new(id, last, epoch);
            }
        }
        return Ok(answer(ctx, page, total, data));
    };

    // Long-poll: hold the request until a message above the cursor is stored
    // or the wait is over, then answer exactly like a request without `wait`.
    // A conversation deleted meanwhile answers its 404 (each query re-reads its row).
    let deadline = tokio::time::Instant::now() + wait;
    // A client that closed its connection is not waited for (actix does not cancel the
    // request: the connection's clock tells).
    let client_gone = async {
        match &ctx.info.connection {
            Some(c) => c.gone().await,
            None => std::future::pending().await,
        }
    };
    let look = || async {
        let (total, data) = page_of(ctx, conversation, id, Some(after), page).await?;
        Ok::<_, ApiError>((total > 0, (total, data)))
    };
    let (total, data) = match watcher.wait_for(id, deadline, client_gone, look).await? {
        Waited::Looked(found) => found,
        // Shutting down: what the database has now.
        Waited::Released => page_of(ctx, conversation, id, Some(after), page).await?,
        Waited::ClientGone => {
            tracing::debug!(conversation = id, "long-poll client went away");
            (0, Vec::new())
        }
    };
    Ok(answer(ctx, page, total, data))
}

/// The total and the items of one page (a page beyond i64 has no offset:
/// only the total is asked for; §4.1, §4.2). Each statement also reads the
/// conversation's row: gone, or no longer the caller's, is the 404 of D1
/// (§11.1, 2026-12) — the messages of a deleted conversation whose id was
/// given to another pair are never shown to the old pair.
async fn page_of(
    ctx: &Ctx<'_>,
    segment: &str,
    id: i64,
    after: Option<&str>,
    page: i64,
) -> Result<(i64, Vec<String>), ApiError> {
    let pool = &ctx.state.db();
    let watcher = &ctx.state.watcher;
    let (seen, total, rows) = match (offset(page, PER_PAGE), after) {
        // A poll's first page: one statement, and no count unless more than a page is new.
        (Some(0), Some(cursor)) => match repo::poll_page(pool, id, cursor).await? {
            (seen, rows, true) => (seen, rows.len() as i64, rows),
            _ => repo::message_page(pool, id, after, 0).await?,
        },
        // A later page of a poll mostly finds nothing: the bare count is its cheapest answer.
        (Some(off), Some(_)) => match repo::count_messages(pool, id, after).await? {
            (seen, 0) => (seen, 0, Vec::new()),
            (Seen::Gone, _) => (Seen::Gone, 0, Vec::new()),
            _ => repo::message_page(pool, id, after, off).await?,
        },
        // The first page: the total from the watcher's count when it is fresh and the page's
        // newest message is the one it counted up to (§11.1); otherwise counted, and learned.
        (Some(0), None) => {
            let known = watcher.known_count(id);
            let from_knowledge = match known {
                Some((newest, count)) => match repo::message_rows(pool, id).await? {
                    (seen, rows) if rows.first().is_some_and(|r| r.id == newest) => {
                        Some((seen, count, rows))
                    }
                    _ => None,
                },
                None => None,
            };
            match from_knowledge {
                Some(answer) => answer,
                None => {
                    let epoch = watcher.epoch();
                    let (seen, total, rows) = repo::message_page(pool, id, None, 0).await?;
                    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
                    if ids.is_empty() && known.is_some() {
                        // Counted messages are gone: the shop deleted the conversation.
                        watcher.conversation_gone(id);
                    }
                    watcher.counted(id, total, &ids, epoch);
                    (seen, total, rows)
                }
            }
        }
        (Some(off), None) => repo::message_page(pool, id, after, off).await?,
        (None, _) => {
            let (seen, total) = repo::count_messages(pool, id, after).await?;
            (seen, total, Vec::new())
        }
    };
    if !ctx.state.participants.admits(id, seen, ctx.user.user_id) {
        if seen == Seen::Gone {
            ctx.state.watcher.conversation_gone(id);
        }
        return Err(ApiError::ConversationNotFound(segment.to_string()));
    }
    Ok((total, rows.iter().map(items::message_item).collect()))
}

fn answer(ctx: &Ctx<'_>, page: i64, total: i64, data: Vec<String>) -> HttpResponse {
    response::with_body(
        StatusCode::OK,
        response::JSON,
        envelope(&ctx.info.path_url, page, PER_PAGE, total, &data),
    )
}

/// A cursor made of digits only, within i64.
fn plain_id(segment: &str) -> Option<i64> {
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::plain_id;

    #[test]
    fn plain_cursors_only() {
        assert_eq!(plain_id("30"), Some(30));
        assert_eq!(plain_id("007"), Some(7));
        assert_eq!(plain_id("1e3"), None);
        assert_eq!(plain_id("abc"), None);
        assert_eq!(plain_id("-1"), None);
        assert_eq!(plain_id("99999999999999999999"), None);
    }
}

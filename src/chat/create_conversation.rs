//! `POST /api/v2/chat/create-conversation` (COMPAT §5.5; D2, D3, D4, D6, D7).
//!
//! Order: validate, find the product's owner, take a per-(sender, receiver)
//! named lock so concurrent taps from several shopchat processes serialise,
//! then one transaction that reuses or creates the conversation, inserts the
//! message and — for a new conversation, or a reused one its receiver had
//! read — stages the seller's e-mail before the commit. Nothing is written on
//! any error.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::json;
use sqlx::mysql::MySqlConnection;
use sqlx::Connection;

use crate::chat::ctx::Ctx;
use crate::chat::items;
use crate::chat::locks::NamedLock;
use crate::chat::repo::{self, CommitOutcome, UserBrief};
use crate::chat::validation::NewConversation;
use crate::error::ApiError;
use crate::http::response;
use crate::ids::UserId;
use crate::laravel::dates::{normalize, parse_wall};
use crate::mail::render::{link, render, Labels, Notification};
use crate::mail::Staged;

/// What steps 1–2 established.
pub struct Checked {
    pub message: String,
    pub title: Option<String>,
    pub owner_id: UserId,
    pub owner: UserBrief,
}

/// Steps 1–2 without any write (no lock, no mail): shadow mode stops here (§11.2).
pub async fn check(ctx: &Ctx<'_>) -> Result<Checked, ApiError> {
    let pool = &ctx.state.db();
    // 1. Validation (D2).
    let NewConversation {
        product,
        message,
        title,
    } = NewConversation::parse(&ctx.input)?;

    // 2. The product and its owner O; a missing owner is the same 404 (D4).
    let not_found = || ApiError::ProductNotFound(product.as_received.clone());
    let owner_id = repo::product_owner(pool, product.value)
        .await?
        .ok_or_else(not_found)?;
    let owner = repo::users(pool, &[owner_id])
        .await?
        .remove(&owner_id)
        .ok_or_else(not_found)?;
    Ok(Checked {
        message,
        title,
        owner_id,
        owner,
    })
}

pub async fn handle(ctx: &Ctx<'_>) -> Result<HttpResponse, ApiError> {
    let state = ctx.state;
    let pool = &state.db();
    let Checked {
        message,
        title,
        owner_id,
        owner,
    } = check(ctx).await?;

    // 3. Serialise per (U, O) across processes (D6). Requests of this
    // process for the same pair queue in memory first: a request waiting in
    // GET_LOCK holds a pooled connection, and a burst of taps for one pair
    // would otherwise take every connection. The transaction then runs on the
    // lock's own connection: a request never holds two pooled connections at
    // once, so creates for *different* pairs cannot exhaust the pool either
    // (with 10 connections, 10 lock holders each waiting for a second one
    // would wait until the acquire timeout: 503s, seen by bench/run.sh).
    // The e-mail labels are translated first: translate() may query (or
    // insert, §7.1) on a pooled connection of its own, which must not happen
    // while this request holds the lock's connection.
    let labels = match owner.email.as_deref() {
        Some(e) if !e.is_empty() => Some(mail_labels(ctx).await?),
        _ => None,
    };
    let lock_name = format!("shopchat:cc:{}:{}", ctx.user.user_id, owner_id);
    let timeout = state.settings.database.lock_timeout;
    let _queued = state.pair_locks.enter(&lock_name, timeout).await?;
    let mut lock = NamedLock::acquire(pool, &lock_name, timeout).await?;
    let outcome = match lock.connection() {
        Some(conn) => {
            create_or_reuse(
                ctx,
                conn,
                owner_id,
                &owner,
                labels.as_ref(),
                title.as_deref(),
                &message,
            )
            .await
        }
        None => Err(ApiError::Internal("named lock without connection".into())),
    };
    lock.release().await;
    let conversation_id = outcome?;

    // 6. The answer: the receiver's shop face and the translated message.
    let shop = if owner.user_type == "admin" {
        None
    } else {
        repo::first_shops(pool, &[owner_id])
            .await?
            .remove(&owner_id)
    };
    let face = items::shop_face(ctx, &owner, shop.as_ref()).await?;
    let done = ctx.t("Conversation created").await?;
    Ok(response::json(
        StatusCode::OK,
        &json!({
            "result": true,
            "conversation_id": conversation_id,
            "shop_name": face.name,
            "shop_logo": face.logo,
            "title": title,
            "message": done,
        }),
    ))
}

/// Step 4–5: one transaction; returns the conversation id.
async fn create_or_reuse(
    ctx: &Ctx<'_>,
    conn: &mut MySqlConnection,
    owner_id: UserId,
    owner: &UserBrief,
    labels: Option<&Labels>,
    title: Option<&str>,
    message: &str,
) -> Result<i64, ApiError> {
    let state = ctx.state;
    let user_id = ctx.user.user_id;
    let storage = &state.storage;
    // On a title column that stores some characters as `?`, what it stores for this title (§5.0).
    let stored_title = match title {
        Some(t) => storage.stored_title(conn, t).await?,
        None => None,
    };
    let now_s = ctx.now_s();
    let mut tx = conn.begin().await?;
    // D6: reuse the newest conversation of this pair with this exact title. Its row is re-read
    // under its lock (the shop may have deleted it a moment ago: then a new one is created).
    let found = match repo::reusable_conversation(
        &mut tx,
        user_id,
        owner_id,
        title,
        stored_title.as_deref(),
    )
    .await?
    {
        Some(id) => repo::lock_conversation(&mut tx, id)
            .await?
            .filter(|l| l.parties.sender_id == user_id && l.parties.receiver_id == owner_id)
            .map(|l| (id, l)),
        None => None,
    };
    let (id, message_id, notify) = match found {
        Some((id, locked)) => {
            let (message_id, _) = storage
                .insert_message(&mut tx, id, user_id, message, &now_s)
                .await?;
            // U is the sender: 1/0, and the conversation always rises to the top of the web
            // inboxes (§5.5 step 4, 2026-12).
            repo::apply_viewed_flags(&mut tx, id, locked.parties, user_id, &now_s).await?;
            // The receiver had read it: this question would reach them silently (§8.1).
            (id, message_id, locked.receiver_viewed)
        }
        None => {
            new_conversation_allowed(ctx, &mut tx, owner_id).await?;
            let id = storage
                .insert_conversation(&mut tx, user_id, owner_id, title, &now_s)
                .await?;
            let (message_id, _) = storage
                .insert_message(&mut tx, id, user_id, message, &now_s)
                .await?;
            (id, message_id, true)
        }
    };

    // §8.6 step 1: the e-mail is on disk before the commit, or nothing commits.
    let staged = match notification(ctx, owner, labels, id, message_id, message).filter(|_| notify)
    {
        Some(n) => Some(
            state
                .mailbox
                .stage(n)
                .await
                .map_err(|e| ApiError::Unavailable(format!("outbox staging failed: {e}")))?,
        ),
        None => None,
    };
    // A commit whose answer was lost may have committed: the mail then goes out (and the
    // request is answered as done); if the database cannot tell, the staged mail stays for
    // the recovery to judge (security review L2).
    if let Err((e, outcome)) = repo::commit(tx, &state.db(), message_id, id).await {
        match (staged, outcome) {
            (Some(staged), CommitOutcome::RolledBack) => {
                if let Err(io) = staged.discard().await {
                    tracing::error!(error = %io, "could not discard a staged e-mail after a failed commit");
                }
            }
            (Some(_), _) => {
                tracing::warn!(
                    "COMMIT outcome unknown: the staged e-mail is left to the outbox recovery"
                )
            }
            (None, _) => {}
        }
        return Err(e.into());
    }
    if let Some(staged) = staged {
        promote(staged).await;
    }
    state.watcher.message_stored(id, message_id);
    Ok(id)
}

/// Each new conversation mails its receiver: a sender may start at most
/// `SHOPCHAT_NEW_CONVERSATIONS_PER_HOUR` with one receiver per hour (security review M3: one free
/// account could otherwise send the shop's mail to any seller by the hundred). Runs under the
/// pair's lock, so concurrent taps cannot pass it together.
async fn new_conversation_allowed(
    ctx: &Ctx<'_>,
    tx: &mut sqlx::Transaction<'_, sqlx::MySql>,
    owner_id: UserId,
) -> Result<(), ApiError> {
    let cap = ctx.state.settings.mail.new_conversations_per_hour;
    if cap == 0 {
        return Ok(());
    }
    let Some(created) = repo::nth_newest_created(tx, ctx.user.user_id, owner_id, cap).await? else {
        return Ok(());
    };
    // Wall-clock times in APP_TIMEZONE on both sides, compared in code (§6.4).
    let Some(created) = parse_wall(&created).map(|w| normalize(&w)) else {
        return Ok(());
    };
    let hour = chrono::Duration::hours(1);
    let free_at = created + hour;
    if free_at <= ctx.info.now {
        return Ok(());
    }
    let wait = (free_at - ctx.info.now).num_seconds().max(1) as u64;
    Err(ApiError::TooManyConversations(wait))
}

/// Step 2 of §8.6. A failure here loses nothing: start-up recovery promotes
/// every staged mail whose conversation exists.
async fn promote(staged: Staged) {
    if let Err(e) = staged.promote().await {
        tracing::error!(error = %e, "staged e-mail not promoted; it will be recovered at the next start");
    }
}

/// The e-mail's labels in the request locale (§8.2).
async fn mail_labels(ctx: &Ctx<'_>) -> Result<Labels, ApiError> {
    Ok(Labels {
        message: ctx.t("Message").await?,
        sender: ctx.t("Sender").await?,
        see_details: ctx.t("See Details").await?,
        hi_you_recieved: ctx.t("Hi! You recieved a message from ").await?,
    })
}

/// The receiver's e-mail for `message` (§8.1–§8.3), or `None` when the receiver has no
/// address.
fn notification(
    ctx: &Ctx<'_>,
    owner: &UserBrief,
    labels: Option<&Labels>,
    conversation_id: i64,
    message_id: i64,
    message: &str,
) -> Option<Notification> {
    let to = owner.email.as_deref().filter(|e| !e.is_empty())?;
    let labels = labels?;
    let token = ctx.state.encrypter.encrypt_int(conversation_id as u64);
    // On APP_URL when the shop set it: a client-supplied host must never reach a seller's
    // mail (§8.3, security review M2).
    let root = ctx.state.settings.laravel.mail_root(ctx.root());
    let href = link(root, owner.user_type == "admin", &token);
    let mail = &ctx.state.settings.mail;
    let mut n = render(
        labels,
        &ctx.user.name,
        message,
        &href,
        to,
        &mail.from_address,
        &mail.from_name,
        conversation_id as u64,
    );
    n.message_id = Some(message_id as u64);
    Some(n)
}

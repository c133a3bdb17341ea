//! Reading `personal_access_tokens` (with the token's user) — and batching
//! those reads under load.
//!
//! Every request of an app user carries a token, and with tens of thousands
//! of users polling every few seconds the short token cache (§11.1, 1 s by
//! default) rarely hits: the token lookup is the one statement almost every
//! request needs. The [`TokenStore`] therefore coalesces concurrent lookups
//! by id into one `WHERE t.id IN (…)` statement: a lookup that finds the
//! batcher idle is sent at once (no added latency), lookups that arrive
//! while earlier statements run wait for the next one together.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use sqlx::MySqlPool;

use crate::db::{in_list, Batcher};
use crate::error::mysql_error_number;

/// Statements of a batch run at most this many at a time.
const PARALLEL: usize = 4;
/// Ids per statement at most.
const BATCH: usize = 256;

/// A token row with its user (LEFT JOIN: the user columns are NULL when the
/// user was deleted).
#[derive(sqlx::FromRow, Clone, Debug)]
pub struct TokenRow {
    pub id: u64,
    pub token: String,
    pub tokenable_type: String,
    pub tokenable_id: u64,
    pub created_at: Option<String>,
    pub expires_at: Option<String>,
    pub user_type: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub banned: Option<i64>,
}

#[derive(Clone, Copy)]
enum Filter<'a> {
    Ids(&'a [u64]),
    Hash(&'a str),
}

pub struct TokenStore {
    pool: MySqlPool,
    /// Older installs have no `expires_at` column (added in product 9.6).
    has_expires_at: AtomicBool,
    batcher: OnceLock<Batcher<u64, Option<TokenRow>>>,
}

impl TokenStore {
    pub fn new(pool: MySqlPool) -> Arc<TokenStore> {
        Arc::new(TokenStore {
            pool,
            has_expires_at: AtomicBool::new(true),
            batcher: OnceLock::new(),
        })
    }

    /// Starts batching lookups by id on the current runtime (done once at
    /// start-up; without it every lookup is its own statement).
    pub fn start_batching(self: &Arc<Self>) {
        let store = self.clone();
        let _ = self
            .batcher
            .set(Batcher::start(PARALLEL, BATCH, move |ids: Vec<u64>| {
                let store = store.clone();
                async move {
                    let mut unique = ids.clone();
                    unique.sort_unstable();
                    unique.dedup();
                    let rows = store.fetch_ids(&unique).await?;
                    Ok(ids.iter().map(|id| rows.get(id).cloned()).collect())
                }
            }));
    }

    /// The token with this id, and its user.
    pub async fn by_id(&self, id: u64) -> Result<Option<TokenRow>, sqlx::Error> {
        if let Some(batcher) = self.batcher.get() {
            if let Ok(result) = batcher.call(id).await {
                return result;
            }
        }
        Ok(self.fetch_ids(&[id]).await?.remove(&id))
    }

    /// The token whose hash is `hash` (a bearer value without `|`).
    pub async fn by_hash(&self, hash: &str) -> Result<Option<TokenRow>, sqlx::Error> {
        Ok(self.fetch(Filter::Hash(hash)).await?.into_iter().next())
    }

    async fn fetch_ids(&self, ids: &[u64]) -> Result<HashMap<u64, TokenRow>, sqlx::Error> {
        Ok(self
            .fetch(Filter::Ids(ids))
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect())
    }

    async fn fetch(&self, filter: Filter<'_>) -> Result<Vec<TokenRow>, sqlx::Error> {
        loop {
            let with_expiry = self.has_expires_at.load(Ordering::Relaxed);
            let expires = if with_expiry {
                "CAST(t.expires_at AS CHAR)"
            } else {
                "NULL"
            };
            let (condition, ids) = match filter {
                Filter::Ids(ids) => {
                    let (list, ids) = in_list(ids);
                    (format!("t.id IN ({list})"), ids)
                }
                Filter::Hash(_) => ("t.token = ? LIMIT 1".to_string(), Vec::new()),
            };
            let sql = format!(
                "SELECT t.id, t.token, t.tokenable_type, t.tokenable_id, \
                 CAST(t.created_at AS CHAR) AS created_at, {expires} AS expires_at, \
                 u.user_type, u.name, u.email, CAST(u.banned AS SIGNED) AS banned \
                 FROM personal_access_tokens t LEFT JOIN users u ON u.id = t.tokenable_id \
                 WHERE {condition}"
            );
            let mut query = sqlx::query_as::<_, TokenRow>(&sql);
            match filter {
                Filter::Ids(_) => {
                    for id in &ids {
                        query = query.bind(*id);
                    }
                }
                Filter::Hash(hash) => query = query.bind(hash),
            }
            match query.fetch_all(&self.pool).await {
                // ER_BAD_FIELD_ERROR: a pre-9.6 table without `expires_at`.
                Err(e) if with_expiry && mysql_error_number(&e) == Some(1054) => {
                    tracing::warn!("personal_access_tokens has no expires_at column; token expiry dates are not checked");
                    self.has_expires_at.store(false, Ordering::Relaxed);
                }
                other => return other,
            }
        }
    }
}

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

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::db::batch::{in_list, Batcher};
use crate::db::Pools;
use crate::error::mysql_error_number;
use crate::sync::LockUnpoisoned;

/// Statements of a batch run at most this many at a time.
const PARALLEL: usize = 4;
/// Ids per statement at most.
const BATCH: usize = 256;
/// Lookup statements start at least this far apart. Measured with bench/apptraffic.sh at
/// 10,000 app users (2026-12-05, general log): without it, a free slot sent nearly every
/// lookup alone (16,163 of 25,701 statements for one id, 63 % of all the run's statements),
/// since each is quick. Beyond waiting for a free statement slot, a lookup waits about this
/// long at most (one gap more when over [`BATCH`] pile up), and only when another went out
/// less than that ago.
pub const GATHER_GAP: Duration = Duration::from_millis(2);

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
    Hashes(&'a [&'a str]),
}

/// How long a table found without `expires_at` is believed to stay so before the column is
/// tried again (security review L6: a migration may add it while shopchat runs).
const RECHECK_EXPIRES_AT: Duration = Duration::from_secs(60);

pub struct TokenStore {
    by_id: Batcher<u64, Option<TokenRow>>,
    by_hash: Batcher<String, Option<TokenRow>>,
}

/// The statements on the table, shared by both batchers.
struct TokenTable {
    pools: Pools,
    /// Older installs have no `expires_at` column (added in product 9.6): since when the table
    /// is known to lack it, if it does.
    without_expires_at: Mutex<Option<Instant>>,
}

impl TokenStore {
    pub fn new(pools: Pools) -> Arc<TokenStore> {
        let table = Arc::new(TokenTable {
            pools,
            without_expires_at: Mutex::new(None),
        });
        let t = table.clone();
        let by_id = Batcher::new(PARALLEL, BATCH, move |ids: Vec<u64>| {
            let table = t.clone();
            async move {
                let mut unique = ids.clone();
                unique.sort_unstable();
                unique.dedup();
                let rows = table.fetch(Filter::Ids(&unique)).await?;
                Ok(ids
                    .iter()
                    .map(|id| rows.iter().find(|r| r.id == *id).cloned())
                    .collect())
            }
        })
        .with_gap(GATHER_GAP);
        // Plain (hash-only) tokens are batched the same way (security review M1).
        let t = table;
        let by_hash = Batcher::new(PARALLEL, BATCH, move |hashes: Vec<String>| {
            let table = t.clone();
            async move {
                let mut unique: Vec<&str> = hashes.iter().map(String::as_str).collect();
                unique.sort_unstable();
                unique.dedup();
                let rows = table.fetch(Filter::Hashes(&unique)).await?;
                Ok(hashes.iter().map(|h| first_with_hash(&rows, h)).collect())
            }
        })
        .with_gap(GATHER_GAP);
        Arc::new(TokenStore { by_id, by_hash })
    }

    /// Starts batching lookups on the current runtime (done once at start-up; without it
    /// every lookup is its own statement).
    pub fn start_batching(&self) {
        self.by_id.start();
        self.by_hash.start();
    }

    /// The token with this id, and its user.
    pub async fn by_id(&self, id: u64) -> Result<Option<TokenRow>, sqlx::Error> {
        self.by_id.call(id).await
    }

    /// The token whose hash is `hash` (a bearer value without `|`); the lowest id if several
    /// rows share it (Sanctum's column is unique).
    pub async fn by_hash(&self, hash: String) -> Result<Option<TokenRow>, sqlx::Error> {
        self.by_hash.call(hash).await
    }
}

impl TokenTable {
    /// Whether to ask for `expires_at` (after a failure without it, again once a minute).
    fn with_expires_at(&self) -> bool {
        let mut since = self.without_expires_at.lock_unpoisoned();
        match *since {
            Some(at) if at.elapsed() < RECHECK_EXPIRES_AT => false,
            Some(_) => {
                *since = None;
                true
            }
            None => true,
        }
    }

    async fn fetch(&self, filter: Filter<'_>) -> Result<Vec<TokenRow>, sqlx::Error> {
        loop {
            let with_expiry = self.with_expires_at();
            let expires = if with_expiry {
                "CAST(t.expires_at AS CHAR)"
            } else {
                "NULL"
            };
            let condition = match filter {
                Filter::Ids(ids) => format!("t.id IN ({})", in_list(ids).0),
                Filter::Hashes(hashes) => format!("t.token IN ({})", in_list(hashes).0),
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
                Filter::Ids(ids) => {
                    for id in in_list(ids).1 {
                        query = query.bind(id);
                    }
                }
                Filter::Hashes(hashes) => {
                    for hash in in_list(hashes).1 {
                        query = query.bind(hash);
                    }
                }
            }
            match query.fetch_all(&self.pools.current()).await {
                // ER_BAD_FIELD_ERROR on `expires_at`: a pre-9.6 table. Any other unknown
                // column is a real error, and expiry is never switched off for it.
                Err(e)
                    if with_expiry
                        && mysql_error_number(&e) == Some(1054)
                        && e.to_string().contains("expires_at") =>
                {
                    tracing::warn!("personal_access_tokens has no expires_at column; token expiry dates are not checked (tried again in a minute)");
                    *self.without_expires_at.lock_unpoisoned() = Some(Instant::now());
                }
                other => return other,
            }
        }
    }
}

fn first_with_hash(rows: &[TokenRow], hash: &str) -> Option<TokenRow> {
    rows.iter()
        .filter(|r| r.token == hash)
        .min_by_key(|r| r.id)
        .cloned()
}

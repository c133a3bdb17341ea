//! Laravel Sanctum personal access tokens, read straight from the shop's
//! `personal_access_tokens` table (COMPAT §2, K4, K15, D9).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use chrono_tz::Tz;
use sha2::{Digest, Sha256};
use sqlx::MySqlPool;
use subtle::ConstantTimeEq;

use crate::auth::bearer::{parse_authorization, BearerToken};
use crate::auth::tokens::TokenStore;
use crate::cache::TtlCache;
use crate::db::{in_list, Batcher};
use crate::laravel::dates::{format_wall, local_to_utc, normalize, parse_wall};

/// The authenticated user `U` and the current token.
#[derive(Clone, Debug)]
pub struct AuthUser {
    pub token_id: u64,
    pub user_id: u64,
    pub user_type: String,
    pub name: String,
    pub email: Option<String>,
    pub banned: bool,
}

/// What the token lookup found, kept so the time checks can be re-run on a
/// cached entry (§11.1).
#[derive(Clone, Debug)]
struct Resolved {
    user: AuthUser,
    created_at: Option<String>,
    expires_at: Option<String>,
}

pub struct Sanctum {
    pool: MySqlPool,
    tz: Tz,
    tokenable_type: String,
    expiration_minutes: Option<i64>,
    touch_interval: Duration,
    /// Bearer value → resolved token and user (`SHOPCHAT_AUTH_CACHE_MS`).
    cache: TtlCache<Vec<u8>, Resolved>,
    /// When this process last wrote `last_used_at` for a token (D9).
    touched: Mutex<HashMap<u64, Instant>>,
    /// The token table (lookups by id are batched under load).
    tokens: Arc<TokenStore>,
    /// `last_used_at` writes, batched under load like the lookups.
    touches: OnceLock<Batcher<Touch, ()>>,
}

/// A due `last_used_at` write of §2: the token, `:now` and the condition.
#[derive(Clone, Debug)]
struct Touch {
    token_id: u64,
    now: String,
    condition: TouchIf,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum TouchIf {
    /// `last_used_at IS NULL OR last_used_at < :now_minus_interval` (D9).
    OlderThan(String),
    /// `last_used_at IS NULL OR last_used_at <> :now` (interval 0: PHP's behaviour).
    Differs,
}

/// The touch statement of §2 for many tokens at once: one UPDATE per
/// distinct (`:now`, condition) — under load nearly always one — with the
/// token ids in an `IN` list instead of `id = ?`.
async fn write_touches(pool: &MySqlPool, touches: Vec<Touch>) -> Result<Vec<()>, sqlx::Error> {
    let mut groups: HashMap<(&str, &TouchIf), Vec<u64>> = HashMap::new();
    for t in &touches {
        groups
            .entry((t.now.as_str(), &t.condition))
            .or_default()
            .push(t.token_id);
    }
    for ((now, condition), ids) in groups {
        let (list, ids) = in_list(&ids);
        let (comparison, bound) = match condition {
            TouchIf::OlderThan(threshold) => ("<", threshold.as_str()),
            TouchIf::Differs => ("<>", now),
        };
        let sql = format!(
            "UPDATE personal_access_tokens SET last_used_at = ?, updated_at = ? \
             WHERE id IN ({list}) AND (last_used_at IS NULL OR last_used_at {comparison} ?)"
        );
        let mut q = sqlx::query(&sql).bind(now).bind(now);
        for id in ids {
            q = q.bind(id);
        }
        q.bind(bound).execute(pool).await?;
    }
    Ok(vec![(); touches.len()])
}

fn sha256_hex(secret: &[u8]) -> String {
    hex::encode(Sha256::digest(secret))
}

impl Sanctum {
    pub fn new(
        pool: MySqlPool,
        tz: Tz,
        tokenable_type: String,
        expiration_minutes: Option<i64>,
        touch_interval: Duration,
        cache_ttl: Duration,
    ) -> Self {
        Sanctum {
            tz,
            tokenable_type,
            expiration_minutes,
            touch_interval,
            cache: TtlCache::new(cache_ttl, 100_000),
            touched: Mutex::new(HashMap::new()),
            tokens: TokenStore::new(pool.clone()),
            touches: OnceLock::new(),
            pool,
        }
    }

    /// Forgets expired cache entries and touch times (called when the process is idle).
    pub fn purge_expired(&self) {
        self.cache.purge_expired();
        let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        touched.retain(|_, at| at.elapsed() < self.touch_interval);
        touched.shrink_to_fit();
    }

    /// Forgets every touch time: a token's next request sends its conditional UPDATE again,
    /// which changes nothing while `last_used_at` is recent (called when the process is idle).
    pub fn forget_touches(&self) {
        let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        *touched = HashMap::new();
    }

    /// Resolves the `Authorization` header to a user, without side effects.
    /// `Ok(None)` is an authentication failure; `Err` a database error.
    pub async fn resolve(
        &self,
        authorization: Option<&[u8]>,
        now: NaiveDateTime,
    ) -> Result<Option<AuthUser>, sqlx::Error> {
        let Some(token) = parse_authorization(authorization.unwrap_or(b"")) else {
            return Ok(None);
        };
        let cache_key = match &token {
            BearerToken::IdSecret { id, secret } => {
                [id.to_string().as_bytes(), b"|", secret].concat()
            }
            BearerToken::Plain(t) => t.clone(),
        };
        let resolved = match self.cache.get(&cache_key) {
            Some(r) => r,
            None => match self.lookup(&token).await? {
                Some(r) => {
                    self.cache.insert(cache_key, r.clone());
                    r
                }
                None => return Ok(None),
            },
        };
        Ok(self
            .still_valid(&resolved, now)
            .then(|| resolved.user.clone()))
    }

    async fn lookup(&self, token: &BearerToken) -> Result<Option<Resolved>, sqlx::Error> {
        let row = match token {
            BearerToken::IdSecret { id, secret } => {
                let Some(row) = self.tokens.by_id(*id).await? else {
                    return Ok(None);
                };
                let expected = sha256_hex(secret);
                // Constant-time comparison of the stored hash (§2).
                if !bool::from(row.token.as_bytes().ct_eq(expected.as_bytes())) {
                    return Ok(None);
                }
                row
            }
            BearerToken::Plain(t) => match self.tokens.by_hash(&sha256_hex(t)).await? {
                Some(row) => row,
                None => return Ok(None),
            },
        };
        // An unknown model class is a 500 in PHP; shopchat answers 401.
        if row.tokenable_type != self.tokenable_type {
            return Ok(None);
        }
        // A token of a deleted user: 401.
        let (Some(user_type), Some(name)) = (row.user_type, row.name) else {
            return Ok(None);
        };
        Ok(Some(Resolved {
            user: AuthUser {
                token_id: row.id,
                user_id: row.tokenable_id,
                user_type,
                name,
                email: row.email,
                banned: row.banned == Some(1),
            },
            created_at: row.created_at,
            expires_at: row.expires_at,
        }))
    }

    /// The time checks of §2, on naive values read in APP_TIMEZONE (§6.4).
    fn still_valid(&self, r: &Resolved, now: NaiveDateTime) -> bool {
        let now_utc = local_to_utc(now, self.tz);
        let as_utc = |s: &str| parse_wall(s).map(|w| local_to_utc(normalize(&w), self.tz));
        if let Some(minutes) = self.expiration_minutes {
            match r.created_at.as_deref().and_then(as_utc) {
                Some(created) if created > now_utc - chrono::Duration::minutes(minutes) => {}
                _ => return false,
            }
        }
        if let Some(expires) = r.expires_at.as_deref().and_then(as_utc) {
            if expires < now_utc {
                return false;
            }
        }
        true
    }

    /// Writes `last_used_at` at most once per interval (D9); with interval 0
    /// whenever it differs from `now` (PHP's behaviour).
    pub async fn touch(&self, token_id: u64, now: NaiveDateTime) -> Result<(), sqlx::Error> {
        if !self.touch_interval.is_zero() {
            let touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
            if touched
                .get(&token_id)
                .is_some_and(|at| at.elapsed() < self.touch_interval)
            {
                return Ok(());
            }
        }
        let now_s = format_wall(now);
        let condition = if self.touch_interval.is_zero() {
            TouchIf::Differs
        } else {
            TouchIf::OlderThan(format_wall(
                now - chrono::Duration::from_std(self.touch_interval).unwrap_or_default(),
            ))
        };
        let touch = Touch {
            token_id,
            now: now_s,
            condition,
        };
        let batched = match self.touches.get() {
            Some(batcher) => batcher.call(touch.clone()).await.ok(),
            None => None,
        };
        match batched {
            Some(result) => result?,
            None => write_touches(&self.pool, vec![touch]).await.map(drop)?,
        }
        if !self.touch_interval.is_zero() {
            let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
            if touched.len() > 100_000 {
                touched.retain(|_, at| at.elapsed() < self.touch_interval);
            }
            touched.insert(token_id, Instant::now());
        }
        Ok(())
    }

    /// K6: a banned user's current token is deleted (bound parameters only).
    pub async fn delete_token(&self, user: &AuthUser) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM personal_access_tokens WHERE id = ? AND tokenable_id = ? AND tokenable_type = ?")
            .bind(user.token_id)
            .bind(user.user_id)
            .bind(&self.tokenable_type)
            .execute(&self.pool)
            .await?;
        self.forget_token(user.token_id);
        Ok(())
    }

    /// Starts batching token lookups and touches on the current runtime (start-up).
    pub fn start_batching(&self) {
        self.tokens.start_batching();
        let pool = self.pool.clone();
        let _ = self.touches.set(Batcher::start(2, 256, move |touches| {
            let pool = pool.clone();
            async move { write_touches(&pool, touches).await }
        }));
    }

    /// Drops cached lookups of a token (after it was deleted).
    pub fn forget_token(&self, token_id: u64) {
        self.cache.retain(|_, r| r.user.token_id != token_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"e82dec50eb35333b411bdc59de6c1b222cbf49b6"),
            "b77aa08d8f83a6a3329ece3cfa18abb5a5c1a56fbbde235ab3ac50e8d12057c7"
        );
    }
}

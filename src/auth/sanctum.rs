//! Laravel Sanctum personal access tokens, read straight from the shop's
//! `personal_access_tokens` table (COMPAT §2, K4, K15, D9).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use chrono_tz::Tz;
use sha2::{Digest, Sha256};
use sqlx::MySqlPool;
use subtle::ConstantTimeEq;

use crate::auth::bearer::{parse_authorization, BearerToken};
use crate::auth::tokens::TokenStore;
use crate::cache::{Generations, TtlCache};
use crate::config::AuthSettings;
use crate::db::batch::{in_list, Batcher};
use crate::db::Pools;
use crate::ids::UserId;
use crate::laravel::dates::{format_wall, local_to_utc, normalize, parse_wall};
use crate::sync::LockUnpoisoned;

/// The authenticated user `U` and the current token.
#[derive(Clone, Debug)]
pub struct AuthUser {
    pub token_id: u64,
    pub user_id: UserId,
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

/// A bearer value as the caches know it: its SHA-256, so that no secret sits in memory
/// (security review L6).
type TokenKey = [u8; 32];

pub struct Sanctum {
    pools: Pools,
    tz: Tz,
    tokenable_type: String,
    /// `SHOPCHAT_SANCTUM_EXPIRATION`: a token's lifetime from `created_at`, when set.
    expiration: Option<Duration>,
    touch_interval: Duration,
    /// Bearer value → resolved token and user (`SHOPCHAT_AUTH_CACHE_MS`, §11.1).
    cache: TtlCache<TokenKey, Resolved>,
    /// Bearer values whose lookup failed, for the same time: repeating an unknown token costs
    /// no statement (§1.4 cost, 2026-12).
    failed: TtlCache<TokenKey, ()>,
    /// When this process last wrote `last_used_at` for a token (D9); entries older than the
    /// touch interval go with their generation, without a scan (security review L8).
    touched: Mutex<Generations<u64, Instant>>,
    /// The token table (lookups by id are batched under load).
    tokens: Arc<TokenStore>,
    /// `last_used_at` writes, batched under load like the lookups.
    touches: Batcher<Touch, ()>,
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

/// The caches' key of a bearer value: SHA-256 of `<id>|<secret>` (the id in decimal, so `007|x`
/// and `7|x` are one key, as they are one row) or of the plain token — which is exactly the hash
/// Sanctum stores for a plain token. The two forms cannot collide: a plain token has no `|`.
fn token_key(token: &BearerToken) -> TokenKey {
    let mut h = Sha256::new();
    match token {
        BearerToken::IdSecret { id, secret } => {
            h.update(id.to_string().as_bytes());
            h.update(b"|");
            h.update(secret);
        }
        BearerToken::Plain(t) => h.update(t),
    }
    h.finalize().into()
}

impl Sanctum {
    pub fn new(pools: Pools, settings: &AuthSettings, tz: Tz) -> Self {
        let touch_interval = settings.touch_interval;
        Sanctum {
            tz,
            tokenable_type: settings.tokenable_type.clone(),
            expiration: settings.expiration,
            touch_interval,
            cache: TtlCache::new(settings.cache, 100_000),
            failed: TtlCache::new(settings.cache, 100_000),
            touched: Mutex::new(Generations::new(touch_interval.max(Duration::from_secs(1)))),
            tokens: TokenStore::new(pools.clone()),
            touches: {
                let pools = pools.clone();
                // Gathered like the lookups: due touches come one per token per interval,
                // rarely concurrent enough to share a statement otherwise.
                Batcher::new(2, 256, move |touches| {
                    let pool = pools.current();
                    async move { write_touches(&pool, touches).await }
                })
                .with_gap(crate::auth::tokens::GATHER_GAP)
            },
            pools,
        }
    }

    /// Forgets expired cache entries and touch times (called when the process is idle).
    pub fn purge_expired(&self) {
        self.cache.purge_expired();
        self.failed.purge_expired();
        let interval = self.touch_interval;
        let mut touched = self.touched.lock_unpoisoned();
        touched.rotate(Instant::now());
        touched.retain(|at| at.elapsed() < interval);
    }

    /// Forgets every touch time: a token's next request sends its conditional UPDATE again,
    /// which changes nothing while `last_used_at` is recent (called when the process is idle).
    pub fn forget_touches(&self) {
        let mut touched = self.touched.lock_unpoisoned();
        *touched = Generations::new(self.touch_interval.max(Duration::from_secs(1)));
    }

    /// Entries of the token caches (positive, failed) and of the touch times, for `/metrics`.
    pub fn cache_sizes(&self) -> [(&'static str, usize); 3] {
        let touched = self.touched.lock_unpoisoned().len();
        [
            ("tokens", self.cache.len()),
            ("failed_tokens", self.failed.len()),
            ("token_touches", touched),
        ]
    }

    /// Whether the header carries a token this process resolved recently and that is still
    /// valid: such a request is never refused before its lookup (§1.4 cost).
    pub fn known_good(&self, authorization: Option<&[u8]>, now: NaiveDateTime) -> bool {
        let Some(token) = parse_authorization(authorization.unwrap_or(b"")) else {
            return false;
        };
        self.cache
            .get(&token_key(&token))
            .is_some_and(|r| self.still_valid(&r, now))
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
        let key = token_key(&token);
        let resolved = match self.cache.get(&key) {
            Some(r) => r,
            None if self.failed.get(&key).is_some() => return Ok(None),
            None => match self.lookup(&token, &key).await? {
                Some(r) => {
                    self.cache.insert(key, r.clone());
                    r
                }
                None => {
                    self.failed.insert(key, ());
                    return Ok(None);
                }
            },
        };
        Ok(self
            .still_valid(&resolved, now)
            .then(|| resolved.user.clone()))
    }

    async fn lookup(
        &self,
        token: &BearerToken,
        key: &TokenKey,
    ) -> Result<Option<Resolved>, sqlx::Error> {
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
            // A plain token's key is the hash Sanctum stores.
            BearerToken::Plain(_) => match self.tokens.by_hash(hex::encode(key)).await? {
                Some(row) => row,
                None => return Ok(None),
            },
        };
        // An unknown model class is a 500 in PHP; shopchat answers 401.
        if row.tokenable_type != self.tokenable_type {
            return Ok(None);
        }
        // A token of a deleted user: 401.
        let (Some(user_type), Some(name), Some(user_id)) = (
            row.user_type,
            row.name,
            UserId::from_tokenable(row.tokenable_id),
        ) else {
            return Ok(None);
        };
        Ok(Some(Resolved {
            user: AuthUser {
                token_id: row.id,
                user_id,
                user_type,
                name,
                email: row.email,
                banned: row.banned == Some(1),
            },
            created_at: row.created_at,
            expires_at: row.expires_at,
        }))
    }

    /// The time checks of §2, on naive values read in APP_TIMEZONE (§6.4). A value that
    /// cannot be read as a time fails closed: an unreadable `expires_at` is expired (security
    /// review L6). Fractional seconds (`TIMESTAMP(6)` columns) are ignored.
    fn still_valid(&self, r: &Resolved, now: NaiveDateTime) -> bool {
        let now_utc = local_to_utc(now, self.tz);
        let as_utc = |s: &str| {
            let whole = s.split_once('.').map_or(s, |(w, _)| w);
            parse_wall(whole).map(|w| local_to_utc(normalize(&w), self.tz))
        };
        if let Some(lifetime) = self.expiration {
            let lifetime = chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::MAX);
            match r.created_at.as_deref().and_then(as_utc) {
                Some(created) if created > now_utc - lifetime => {}
                _ => return false,
            }
        }
        if let Some(expires) = r.expires_at.as_deref() {
            match as_utc(expires) {
                Some(expires) if expires >= now_utc => {}
                _ => return false,
            }
        }
        true
    }

    /// Writes `last_used_at` at most once per interval (D9); with interval 0
    /// whenever it differs from `now` (PHP's behaviour).
    pub async fn touch(&self, token_id: u64, now: NaiveDateTime) -> Result<(), sqlx::Error> {
        if !self.touch_interval.is_zero() {
            let mut touched = self.touched.lock_unpoisoned();
            if touched
                .get_mut(&token_id, Instant::now())
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
        self.touches.call(touch).await?;
        if !self.touch_interval.is_zero() {
            let now = Instant::now();
            let mut touched = self.touched.lock_unpoisoned();
            touched.insert(token_id, now, now);
        }
        Ok(())
    }

    /// K6: a banned user's current token is deleted (bound parameters only).
    pub async fn delete_token(&self, user: &AuthUser) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM personal_access_tokens WHERE id = ? AND tokenable_id = ? AND tokenable_type = ?")
            .bind(user.token_id)
            .bind(user.user_id)
            .bind(&self.tokenable_type)
            .execute(&self.pools.current())
            .await?;
        self.forget_token(user.token_id);
        Ok(())
    }

    /// Starts batching token lookups and touches on the current runtime (start-up).
    pub fn start_batching(&self) {
        self.tokens.start_batching();
        self.touches.start();
    }

    /// Drops cached lookups of a token (after it was deleted).
    pub fn forget_token(&self, token_id: u64) {
        self.cache.retain(|_, r| r.user.token_id != token_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(expires_at: Option<&str>) -> Resolved {
        Resolved {
            user: AuthUser {
                token_id: 1,
                user_id: UserId(5),
                user_type: "customer".into(),
                name: "C".into(),
                email: None,
                banned: false,
            },
            created_at: Some("2024-01-01 00:00:00".into()),
            expires_at: expires_at.map(str::to_string),
        }
    }

    #[tokio::test]
    async fn unreadable_expiry_dates_fail_closed() {
        let pool = sqlx::mysql::MySqlPoolOptions::new()
            .connect_lazy("mysql://nobody@127.0.0.1:1/none")
            .unwrap();
        let settings = AuthSettings {
            touch_interval: Duration::from_secs(60),
            expiration: None,
            tokenable_type: "App\\Models\\User".into(),
            cache: Duration::from_secs(1),
        };
        let sanctum = Sanctum::new(Pools::single(pool), &settings, chrono_tz::UTC);
        let now = parse_wall("2026-06-01 12:00:00")
            .map(|w| normalize(&w))
            .unwrap();
        assert!(sanctum.still_valid(&resolved(None), now));
        assert!(sanctum.still_valid(&resolved(Some("2037-12-31 00:00:00")), now));
        assert!(!sanctum.still_valid(&resolved(Some("2024-01-01 00:00:00")), now));
        // TIMESTAMP(6) columns: the fraction is ignored.
        assert!(sanctum.still_valid(&resolved(Some("2037-12-31 00:00:00.250000")), now));
        assert!(!sanctum.still_valid(&resolved(Some("2024-01-01 00:00:00.5")), now));
        // Anything else unreadable is expired (it was valid before the security review, L6).
        assert!(!sanctum.still_valid(&resolved(Some("tomorrow")), now));
        assert!(!sanctum.still_valid(&resolved(Some("")), now));
    }

    #[test]
    fn cache_keys_hold_no_secret() {
        let a = token_key(&BearerToken::IdSecret {
            id: 7,
            secret: b"secret".to_vec(),
        });
        let b = token_key(&BearerToken::IdSecret {
            id: 7,
            secret: b"secret".to_vec(),
        });
        assert_eq!(a, b);
        assert!(!a.windows(6).any(|w| w == b"secret"));
        // A plain token's key is the hash Sanctum stores for it.
        let plain = token_key(&BearerToken::Plain(
            b"e82dec50eb35333b411bdc59de6c1b222cbf49b6".to_vec(),
        ));
        assert_eq!(
            hex::encode(plain),
            "b77aa08d8f83a6a3329ece3cfa18abb5a5c1a56fbbde235ab3ac50e8d12057c7"
        );
    }

    #[test]
    fn hash_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"e82dec50eb35333b411bdc59de6c1b222cbf49b6"),
            "b77aa08d8f83a6a3329ece3cfa18abb5a5c1a56fbbde235ab3ac50e8d12057c7"
        );
    }
}

//! The throttle's windows in Redis (`SHOPCHAT_RATE_LIMIT_STORE=redis`): the same fixed 60-second
//! window as COMPAT §1.4, counted by every shopchat instance of the shop together.
//!
//! One hit is one round trip: a Lua script (run with `EVALSHA`) reads the key's count, adds the
//! hit unless the window is spent, opens the window (its TTL) on the first hit, and returns the
//! outcome with the time the window has left. Redis runs a script atomically, so two instances
//! hitting one key at once never both take the last hit.
//!
//! Connections come from a small bb8 pool of multiplexed connections. A checkout does not ping
//! (that would be a second round trip); instead a connection whose command failed on the wire is
//! marked broken and the pool replaces it.
//!
//! Each thread has a pool of its own, made on its first hit (`crate::per_thread`): a pool shared
//! by the HTTP workers handed the others connections that had died with a drained one ("broken
//! pipe", the throttle counting in process through every rolling restart; `tests/api/ops.rs`).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script};

use crate::http::ratelimit::{Decision, RateKey, WINDOW};
use crate::per_thread::PerThread;

/// The script's answer: `{allowed (0/1), hits in the window, ms the window has left}`.
const HIT: &str = r"
local hits = tonumber(redis.call('GET', KEYS[1]) or '0')
local allowed = hits < tonumber(ARGV[1])
if allowed then hits = redis.call('INCR', KEYS[1]) end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  left = tonumber(ARGV[2])
end
return {allowed and 1 or 0, hits, left}
";

/// Why a hit could not be counted in Redis.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no connection to Redis: {0}")]
    Connect(String),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis: {0}")]
    Command(#[from] RedisError),
}

/// Windows shared through one Redis database.
pub struct RedisWindows {
    client: Client,
    pool_size: u32,
    pools: PerThread<bb8::Pool<Manager>>,
    script: Script,
    prefix: String,
    limit: u32,
    timeout: Duration,
}

impl RedisWindows {
    /// No connection is made here: a Redis that is down at start-up must not stop shopchat
    /// (the throttle counts in process until Redis answers, §1.4).
    pub fn new(
        url: &str,
        prefix: &str,
        limit: u32,
        pool_size: u32,
        timeout: Duration,
    ) -> Result<RedisWindows, RedisError> {
        Ok(RedisWindows {
            client: Client::open(url)?,
            pool_size,
            pools: PerThread::default(),
            script: Script::new(HIT),
            prefix: prefix.to_string(),
            limit,
            timeout,
        })
    }

    /// This thread's pool (module docs), made on the thread's first hit.
    fn pool(&self) -> bb8::Pool<Manager> {
        self.pools.get_or_make(|| {
            bb8::Pool::builder()
                .max_size(self.pool_size)
                .connection_timeout(self.timeout)
                // One round trip per hit: no PING at checkout; broken connections are found
                // by the command that fails on them.
                .test_on_check_out(false)
                // A connection lost while Redis is away must not be retried for the full
                // connection timeout of every request: fail fast, the caller falls back.
                .retry_connection(false)
                .build_unchecked(Manager {
                    client: self.client.clone(),
                    timeout: self.timeout,
                })
        })
    }

    /// The Redis key of a throttle key: `<prefix>u:<user id>` or `<prefix>ip:<address>`.
    pub fn key(&self, key: &RateKey) -> String {
        match key {
            RateKey::User(id) => format!("{}u:{}", self.prefix, id.0),
            RateKey::Ip(ip) => format!("{}ip:{ip}", self.prefix),
        }
    }

    /// Counts one hit of `key` across all instances.
    pub async fn hit(&self, key: &RateKey) -> Result<Decision, StoreError> {
        let redis_key = self.key(key);
        let pool = self.pool();
        let mut invocation = self.script.key(redis_key);
        invocation.arg(self.limit).arg(WINDOW.as_millis() as u64);
        let mut retried = false;
        loop {
            let mut conn = pool.get().await.map_err(|e| match e {
                bb8::RunError::User(e) => StoreError::Connect(e.to_string()),
                bb8::RunError::TimedOut => StoreError::Timeout(self.timeout),
            })?;
            let answer: Result<(u8, u64, i64), RedisError> =
                invocation.invoke_async(&mut conn.inner).await;
            match answer {
                Ok((allowed, hits, left_ms)) => {
                    return Ok(decision(self.limit, allowed == 1, hits, left_ms));
                }
                Err(e) => {
                    let dropped = e.is_io_error() || e.is_connection_dropped();
                    if dropped || e.is_timeout() {
                        conn.broken = true;
                    }
                    // A connection that died while it sat in this thread's pool (Redis
                    // restarted since) says nothing about Redis now: once more, on a new one
                    // (the broken one is dropped first). Should the lost answer have been
                    // counted, the key has one hit too many: a throttle may err that way.
                    if dropped && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(e.into());
                }
            }
        }
    }

    /// Connections open now, all threads' pools together (for tests and `/metrics`).
    pub fn connections(&self) -> u32 {
        self.pools.all().iter().map(|p| p.state().connections).sum()
    }
}

/// Connects to `url` and asks the server's version (`shopchat check`): `Ok("7.0.15")`.
pub async fn probe(url: &str, timeout: Duration) -> Result<String, StoreError> {
    let client = Client::open(url)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| StoreError::Connect(e.to_string()))?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown version")
        .trim()
        .to_string())
}

/// The §1.4 outcome of the script's answer.
fn decision(limit: u32, allowed: bool, hits: u64, left_ms: i64) -> Decision {
    if allowed {
        let hits = u32::try_from(hits).unwrap_or(u32::MAX);
        return Decision::Allowed {
            limit,
            remaining: limit.saturating_sub(hits),
        };
    }
    // Whole seconds, rounded up, never 0 while the window is open (like the in-process windows).
    let left_ms = u64::try_from(left_ms).unwrap_or(0);
    Decision::Limited {
        limit,
        retry_after: left_ms.div_ceil(1000).max(1),
    }
}

/// One pooled connection; `broken` once a command failed on the wire.
pub struct Conn {
    inner: MultiplexedConnection,
    broken: bool,
}

struct Manager {
    client: Client,
    timeout: Duration,
}

impl bb8::ManageConnection for Manager {
    type Connection = Conn;
    type Error = RedisError;

    async fn connect(&self) -> Result<Conn, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let inner = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(Conn {
            inner,
            broken: false,
        })
    }

    async fn is_valid(&self, conn: &mut Conn) -> Result<(), RedisError> {
        redis::cmd("PING").query_async(&mut conn.inner).await
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_become_the_headers_of_1_4() {
        assert_eq!(
            decision(600, true, 1, 60_000),
            Decision::Allowed {
                limit: 600,
                remaining: 599
            }
        );
        assert_eq!(
            decision(2, true, 2, 100),
            Decision::Allowed {
                limit: 2,
                remaining: 0
            }
        );
        assert_eq!(
            decision(2, false, 2, 59_001),
            Decision::Limited {
                limit: 2,
                retry_after: 60
            }
        );
        assert_eq!(
            decision(2, false, 2, 1),
            Decision::Limited {
                limit: 2,
                retry_after: 1
            }
        );
        assert_eq!(
            decision(2, false, 2, -2),
            Decision::Limited {
                limit: 2,
                retry_after: 1
            },
            "a key that expired meanwhile: retry at once"
        );
    }
}

//! Rate-limit counters shared by every replica: a fixed window per key.

use std::time::Duration;

use mamey_core::Error;

use super::{RedisClient, millis};

/// Counts a hit in the window of `KEYS[1]`, starting the window (`ARGV[1]`
/// ms) with the first hit; returns the hits so far and the milliseconds
/// left in the window. A counter without an expiry (it cannot happen unless
/// someone else wrote the key) gets one, so it never blocks forever.
pub(super) const HIT: &str = r"
local hits = redis.call('INCR', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {hits, left}
";

/// Fixed-window rate-limit counters in Redis, under `{prefix}rate:{key}`:
/// every replica of a service counts in the same place, so a limit holds
/// for the service as a whole. Take it from [`RedisClient::rate_limiter`].
///
/// Each [`hit`](RateLimiter::hit) is one atomic Lua script (`INCR`, and
/// `PEXPIRE` on the first hit of a window), timed by Redis's clock — the
/// replicas' clocks play no part. A window starts with its first hit and
/// lasts `window`; refused hits count too, so a client that keeps knocking
/// stays refused until the window ends.
///
/// Limits: a fixed window lets through up to twice the limit around a
/// window's end (`limit` at the end of one, `limit` at the start of the
/// next); pick the window accordingly. If Redis is unavailable, `hit`
/// fails: the caller decides whether to fail open or closed.
///
/// ```no_run
/// # async fn run(redis: mamey_persistence::redis::RedisClient) -> Result<(), mamey_core::Error> {
/// use std::time::Duration;
///
/// let decision = redis
///     .rate_limiter()
///     .hit("login:203.0.113.7", 5, Duration::from_secs(60))
///     .await?;
/// if let Some(retry_after) = decision.retry_after {
///     // 429 Too Many Requests, `Retry-After: retry_after.as_secs()`
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RateLimiter {
    client: RedisClient,
}

/// What a [`RateLimiter::hit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether this hit is within the limit.
    pub allowed: bool,
    /// The limit asked for.
    pub limit: u64,
    /// Hits still allowed in this window.
    pub remaining: u64,
    /// How long until the window ends and the count starts again.
    pub reset_after: Duration,
    /// When refused: how long to wait before trying again (the rest of the
    /// window). `None` when allowed.
    pub retry_after: Option<Duration>,
}

impl RateLimiter {
    pub(super) fn new(client: RedisClient) -> Self {
        Self { client }
    }

    /// Counts a hit on `key` and decides whether it is within `limit` hits
    /// per `window` (at least 1 ms).
    ///
    /// # Errors
    /// Redis is unavailable, or `window` is under 1 ms (invalid input).
    pub async fn hit(&self, key: &str, limit: u64, window: Duration) -> Result<Decision, Error> {
        let window = millis(window, "a rate limit's window")?;
        let mut call = self.client.inner.scripts.hit.prepare_invoke();
        call.key(self.client.key(&format!("rate:{key}")))
            .arg(window);
        let mut connection = self.client.connection();
        let (hits, left): (u64, u64) = self
            .client
            .within_deadline(call.invoke_async(&mut connection))
            .await?;
        let allowed = hits <= limit;
        let reset_after = Duration::from_millis(left);
        Ok(Decision {
            allowed,
            limit,
            remaining: limit.saturating_sub(hits),
            reset_after,
            retry_after: (!allowed).then_some(reset_after),
        })
    }
}

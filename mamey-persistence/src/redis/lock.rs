//! A lock on Redis: a lease with an expiry, a token and a fencing token.

use std::fmt;
use std::time::Duration;

use mamey_core::Error;

use super::{RedisClient, millis};

/// Takes the lock if free, with its expiry, and draws the next fencing
/// token. `KEYS`: the lock, the fencing counter; `ARGV`: the token, the
/// TTL in milliseconds. Returns the fencing token, or 0 when taken.
pub(super) const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
";

/// Deletes the lock if it holds `ARGV[1]`; returns 1 if it did.
pub(super) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Sets the lock's expiry to `ARGV[2]` ms if it holds `ARGV[1]`; returns 1
/// if it did.
pub(super) const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// A named lock shared by every process on the same Redis, under
/// `{prefix}lock:{name}`. Take it from [`RedisClient::lock`].
///
/// Acquiring gives a [`Lease`]: the lock is held until the lease is
/// released **or its TTL runs out**, whichever comes first. Release and
/// extension check the lease's random token, so a holder whose lease ran
/// out cannot release or extend the lock another holder has taken since.
///
/// # Limits: a lease, not mutual exclusion
///
/// A holder that pauses (garbage collection, a stopped VM, a slow network
/// call) past its TTL keeps running while another holder takes the lock:
/// two holders at once. Redis failing over to a replica that had not
/// received the lock, or losing it in a restart, frees it early. So the lock
/// is right for **efficiency** (avoid doing the same work twice) and wrong
/// as the only guard of **correctness**. Where correctness matters, use the
/// [fencing token](Lease::fencing_token): it grows with every acquisition
/// of the lock, and the resource the lock protects must reject a write that
/// carries a token lower than the highest it has seen, e.g.
/// `UPDATE stock SET …, fence = $token WHERE id = $id AND fence < $token`.
///
/// Dropping a [`Lease`] does not release the lock (that needs Redis): call
/// [`Lease::release`], or let the TTL free it.
///
/// ```no_run
/// # async fn run(redis: mamey_persistence::redis::RedisClient) -> Result<(), mamey_core::Error> {
/// use std::time::Duration;
///
/// if let Some(lease) = redis.lock("nightly-report").try_acquire(Duration::from_secs(30)).await? {
///     // … the work, extending the lease if it may take longer …
///     lease.release().await?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Lock {
    client: RedisClient,
    name: String,
    key: String,
    fence_key: String,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Lock {
    pub(super) fn new(client: RedisClient, name: &str) -> Self {
        let key = client.key(&format!("lock:{name}"));
        Self {
            fence_key: format!("{key}:fence"),
            name: name.to_owned(),
            key,
            client,
        }
    }

    /// The lock's name, without the prefix.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes the lock for `ttl` (at least 1 ms) if it is free; `None` when
    /// another holder has it.
    ///
    /// # Errors
    /// Redis is unavailable, or `ttl` is under 1 ms (invalid input).
    pub async fn try_acquire(&self, ttl: Duration) -> Result<Option<Lease>, Error> {
        let ttl = millis(ttl, "a lock's TTL")?;
        let token = mamey_core::new_id();
        let mut call = self.client.inner.scripts.acquire.prepare_invoke();
        call.key(&self.key)
            .key(&self.fence_key)
            .arg(&token)
            .arg(ttl);
        let mut connection = self.client.connection();
        let fence: u64 = self
            .client
            .within_deadline(call.invoke_async(&mut connection))
            .await?;
        Ok((fence > 0).then(|| Lease {
            client: self.client.clone(),
            key: self.key.clone(),
            token,
            fencing_token: fence,
        }))
    }

    /// Takes the lock for `ttl`, trying again for up to `wait` while another
    /// holder has it; `None` if it was not freed in time.
    ///
    /// # Errors
    /// As [`try_acquire`](Lock::try_acquire).
    pub async fn acquire(&self, ttl: Duration, wait: Duration) -> Result<Option<Lease>, Error> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut delay = Duration::from_millis(10);
        loop {
            if let Some(lease) = self.try_acquire(ttl).await? {
                return Ok(Some(lease));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(Duration::from_millis(250));
        }
    }
}

/// A held [`Lock`], until [released](Lease::release) or its TTL runs out.
#[must_use = "the lock stays taken until the lease is released or its TTL runs out"]
pub struct Lease {
    client: RedisClient,
    key: String,
    token: String,
    fencing_token: u64,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("fencing_token", &self.fencing_token)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// The fencing token: greater than that of every earlier lease of this
    /// lock (a counter under `{prefix}lock:{name}:fence`, kept without
    /// expiry). Pass it with every write the lock protects, and have the
    /// store reject tokens lower than the highest it has seen (see [`Lock`]).
    #[must_use]
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// Sets the lock to expire `ttl` from now, if this lease still holds it;
    /// `false` when it ran out (and perhaps another holder has the lock).
    ///
    /// # Errors
    /// Redis is unavailable, or `ttl` is under 1 ms (invalid input).
    pub async fn extend(&self, ttl: Duration) -> Result<bool, Error> {
        let ttl = millis(ttl, "a lock's TTL")?;
        let mut call = self.client.inner.scripts.extend.prepare_invoke();
        call.key(&self.key).arg(&self.token).arg(ttl);
        let mut connection = self.client.connection();
        let done: u64 = self
            .client
            .within_deadline(call.invoke_async(&mut connection))
            .await?;
        Ok(done == 1)
    }

    /// Frees the lock, if this lease still holds it; `false` when it had run
    /// out (another holder's lock is left alone).
    ///
    /// # Errors
    /// Redis is unavailable; the lock then frees itself when its TTL runs
    /// out.
    pub async fn release(self) -> Result<bool, Error> {
        let mut call = self.client.inner.scripts.release.prepare_invoke();
        call.key(&self.key).arg(&self.token);
        let mut connection = self.client.connection();
        let done: u64 = self
            .client
            .within_deadline(call.invoke_async(&mut connection))
            .await?;
        Ok(done == 1)
    }
}

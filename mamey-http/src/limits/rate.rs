//! Rate limiting per caller: a token bucket each, kept in a table bounded
//! in size.
//!
//! A bucket is stored as one number, its *theoretical arrival time* (the
//! generic cell rate algorithm, which is a token bucket counted in time
//! rather than tokens): the moment the bucket will be full again. A request
//! pushes it one interval later; it is refused when that would put it more
//! than `burst` intervals ahead of now. A bucket whose time has passed is
//! full, so forgetting it changes nothing: that is what the table evicts
//! first.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::caller::CallerKey;

/// A token bucket's parameters, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenBucket {
    /// Time to add one token.
    interval: u64,
    /// How far ahead of now a bucket's time may run: `burst` intervals.
    tolerance: u64,
}

impl TokenBucket {
    /// `per_second` tokens a second (finite, above zero), `burst` at most.
    pub(crate) fn new(per_second: f64, burst: u32) -> Self {
        // Float to integer casts saturate; at least one nanosecond.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let interval = ((1e9 / per_second).round() as u64).max(1);
        Self {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1))),
        }
    }

    /// Takes a token from the bucket whose time is `tat`, at `now`: `Ok`
    /// and the bucket's new time, or how long until a token is there.
    pub(crate) fn take(&self, tat: u64, now: u64) -> Result<u64, Duration> {
        let next = tat.max(now).saturating_add(self.interval);
        let ahead = next - now;
        if ahead > self.tolerance {
            Err(Duration::from_nanos(ahead - self.tolerance))
        } else {
            Ok(next)
        }
    }
}

/// The buckets of the callers seen lately, in shards so that callers
/// rarely wait for each other.
pub(crate) struct RateLimiter {
    bucket: TokenBucket,
    shards: Box<[Mutex<Shard>]>,
    /// Buckets one shard keeps at most.
    per_shard: usize,
    /// Keys callers by a hash seeded per process, so a caller cannot pick
    /// subjects or addresses that collide.
    keys: RandomState,
}

/// A shard: caller hash → the bucket's time. The keys are hashes already.
type Shard = HashMap<u64, u64, BuildHasherDefault<Prehashed>>;

const SHARDS: usize = 32;

impl RateLimiter {
    /// Buckets of `bucket`'s size for at most `max_callers` callers.
    pub(crate) fn new(bucket: TokenBucket, max_callers: usize) -> Self {
        let shards = SHARDS.min(max_callers.max(1));
        Self {
            bucket,
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: (max_callers / shards).max(1),
            keys: RandomState::new(),
        }
    }

    /// Takes a token from `caller`'s bucket at `now` (nanoseconds on the
    /// limiter's clock): `Ok`, or how long until one is there.
    pub(crate) fn check(&self, caller: &CallerKey<'_>, now: u64) -> Result<(), Duration> {
        let hash = self.keys.hash_one(caller);
        let index = usize::try_from(hash >> 40).unwrap_or_default() % self.shards.len();
        let mut shard = self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(tat) = shard.get_mut(&hash) {
            *tat = self.bucket.take(*tat, now)?;
            return Ok(());
        }
        let tat = self.bucket.take(0, now)?;
        if shard.len() >= self.per_shard {
            make_room(&mut shard, self.per_shard, now);
        }
        shard.insert(hash, tat);
        Ok(())
    }

    /// Callers tracked now.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("bucket", &self.bucket)
            .field("max_callers", &(self.per_shard * self.shards.len()))
            .finish_non_exhaustive()
    }
}

/// Frees a full shard: forgets the buckets that are full again (no loss),
/// else the fullest one (that caller starts afresh next time).
fn make_room(shard: &mut Shard, per_shard: usize, now: u64) {
    shard.retain(|_, tat| *tat > now);
    if shard.len() >= per_shard
        && let Some((&fullest, _)) = shard.iter().min_by_key(|(_, tat)| **tat)
    {
        shard.remove(&fullest);
    }
}

/// A hasher for keys that are hashes already.
#[derive(Default)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else all the same.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_bucket_allows_its_burst_then_one_token_per_interval() {
        let bucket = TokenBucket::new(2.0, 3);
        let mut tat = 0;
        let start = 10 * SECOND;
        for _ in 0..3 {
            tat = bucket.take(tat, start).expect("within the burst");
        }
        let wait = bucket.take(tat, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500), "one token every 500 ms");
        assert!(bucket.take(tat, start + SECOND / 2 - 1).is_err());
        tat = bucket
            .take(tat, start + SECOND / 2)
            .expect("a token came back");
        assert!(bucket.take(tat, start + SECOND / 2).is_err());
        // After a long pause the bucket is full again, not fuller.
        let later = start + 60 * SECOND;
        for _ in 0..3 {
            tat = bucket.take(tat, later).unwrap();
        }
        assert!(bucket.take(tat, later).is_err());
    }

    #[test]
    fn slow_rates_wait_whole_intervals() {
        let bucket = TokenBucket::new(0.1, 1);
        let tat = bucket.take(0, SECOND).unwrap();
        assert_eq!(bucket.take(tat, SECOND), Err(Duration::from_secs(10)));
        assert_eq!(
            bucket.take(tat, 4 * SECOND),
            Err(Duration::from_secs(7)),
            "less as time passes"
        );
    }

    #[test]
    fn callers_have_their_own_buckets() {
        let limiter = RateLimiter::new(TokenBucket::new(1.0, 1), 100);
        let (ada, bob) = (CallerKey::Subject("ada"), CallerKey::Subject("bob"));
        assert!(limiter.check(&ada, SECOND).is_ok());
        assert!(limiter.check(&ada, SECOND).is_err());
        assert!(limiter.check(&bob, SECOND).is_ok());
        // A subject and an address never share a bucket.
        let address = CallerKey::Address(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(limiter.check(&address, SECOND).is_ok());
    }

    #[test]
    fn the_table_stays_bounded_whatever_callers_do() {
        let limiter = RateLimiter::new(TokenBucket::new(1.0, 1), 64);
        let bound = limiter.per_shard * limiter.shards.len();
        assert!(bound <= 64);
        // A caller changing its address at every request.
        for i in 0..10_000u32 {
            let address = CallerKey::Address(IpAddr::V4(Ipv4Addr::from(i)));
            assert!(limiter.check(&address, SECOND).is_ok());
        }
        assert!(limiter.tracked() <= bound, "{}", limiter.tracked());
    }

    #[test]
    fn full_buckets_are_forgotten_first_then_the_fullest() {
        let mut shard = Shard::default();
        // Times in the past are full buckets; in the future, partly empty.
        shard.extend([(1, 5), (2, 50), (3, 8), (4, 70)]);
        make_room(&mut shard, 4, 10);
        let mut kept: Vec<u64> = shard.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!(kept, [2, 4], "only the full ones went");

        shard.insert(5, 60);
        make_room(&mut shard, 3, 10);
        let mut kept: Vec<u64> = shard.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!(kept, [4, 5], "none full: the fullest (earliest time) went");
    }
}

//! Tokens already verified (`jwt.cache_size`). A client presents the same
//! access token with every request until it expires, and each service on
//! the way (a gateway, the service behind it, the one that service calls)
//! checks it: verifying an ES256 or RS256 signature costs a few hundred
//! microseconds of CPU each time, a lookup here about one.
//!
//! Only what the signature proves is remembered — that these exact bytes
//! were signed by the key — never the verdict: the claims are checked on
//! every request (an expired token is refused at once), and a token whose
//! key came from a JWKS is refused once that key is gone from the set. A
//! token is remembered only after it was accepted, so filling the cache
//! takes validly signed tokens; it holds at most `cache_size` of them,
//! none longer than [`MAX_TOKEN`] bytes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use jsonwebtoken::Algorithm;
use serde_json::Value;

/// A token's claims, as its payload had them.
pub(super) type Claims = BTreeMap<String, Value>;

/// Longer tokens are verified every time rather than kept.
pub(super) const MAX_TOKEN: usize = 4096;

/// What a verified token's signature established.
#[derive(Debug, Clone)]
pub(super) struct Verified {
    /// Its claims.
    pub(super) claims: Arc<Claims>,
    /// Its `kid` and algorithm, for a key from a JWKS: on a later use the
    /// key must still be in the set.
    pub(super) key: Option<(Option<String>, Algorithm)>,
    /// Its `exp`, in seconds: past it (and the leeway) the token is of no
    /// use, and the first to go when the cache is full.
    pub(super) expires: u64,
}

/// The verified tokens, at most `capacity`.
#[derive(Debug)]
pub(super) struct VerifiedTokens {
    capacity: usize,
    tokens: Mutex<HashMap<Box<str>, Verified>>,
}

impl VerifiedTokens {
    /// A cache of at most `capacity` tokens; `0` keeps none.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// What `token` established when it was verified, if it is kept.
    pub(super) fn get(&self, token: &str) -> Option<Verified> {
        if self.capacity == 0 {
            return None;
        }
        self.locked().get(token).cloned()
    }

    /// Keeps `token`, verified and accepted at `now` (seconds). When the
    /// cache is full, tokens expired by `now - leeway` go first, then an
    /// arbitrary one.
    pub(super) fn insert(&self, token: &str, verified: Verified, now: u64, leeway: u64) {
        if self.capacity == 0 || token.len() > MAX_TOKEN {
            return;
        }
        let mut tokens = self.locked();
        if tokens.len() >= self.capacity && !tokens.contains_key(token) {
            let horizon = now.saturating_sub(leeway);
            tokens.retain(|_, kept| kept.expires >= horizon);
            if tokens.len() >= self.capacity
                && let Some(any) = tokens.keys().next().cloned()
            {
                tokens.remove(&any);
            }
        }
        tokens.insert(token.into(), verified);
    }

    /// How many tokens are kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.locked().len()
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Verified>> {
        // The map holds no invariant a panic could break half-way.
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(expires: u64) -> Verified {
        Verified {
            claims: Arc::new(Claims::new()),
            key: None,
            expires,
        }
    }

    #[test]
    fn it_keeps_at_most_its_capacity_expired_tokens_first() {
        let cache = VerifiedTokens::new(3);
        cache.insert("expired", verified(100), 1_000, 30);
        cache.insert("a", verified(5_000), 1_000, 30);
        cache.insert("b", verified(5_000), 1_000, 30);
        cache.insert("c", verified(5_000), 1_000, 30);
        assert_eq!(cache.len(), 3);
        assert!(
            cache.get("expired").is_none(),
            "the expired token went first"
        );
        for token in ["a", "b", "c"] {
            assert!(cache.get(token).is_some(), "{token}");
        }
        // Full of live tokens: one of them makes room.
        cache.insert("d", verified(5_000), 1_000, 30);
        assert_eq!(cache.len(), 3);
        assert!(cache.get("d").is_some());
        // Kept again: no eviction.
        cache.insert("d", verified(6_000), 1_000, 30);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("d").map(|v| v.expires), Some(6_000));
    }

    #[test]
    fn a_zero_size_keeps_nothing_and_long_tokens_are_not_kept() {
        let none = VerifiedTokens::new(0);
        none.insert("a", verified(5_000), 1_000, 30);
        assert!(none.get("a").is_none());
        let cache = VerifiedTokens::new(10);
        let long = "x".repeat(MAX_TOKEN + 1);
        cache.insert(&long, verified(5_000), 1_000, 30);
        assert!(cache.get(&long).is_none());
        assert_eq!(cache.len(), 0);
    }
}

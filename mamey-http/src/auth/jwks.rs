//! A JSON Web Key Set fetched over HTTP and cached, refetched when a token
//! names an unknown key, at most once a second.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};

/// Why the key set gave no key for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// No key with the token's `kid`.
    Unknown,
    /// The key set could not be fetched.
    Unavailable,
}

/// A JSON Web Key Set fetched over HTTP and cached.
pub(crate) struct Jwks {
    client: hyper_util::client::legacy::Client<
        crate::transport::Connector,
        http_body_util::Empty<bytes::Bytes>,
    >,
    uri: http::Uri,
    refresh: Duration,
    cache: RwLock<Option<Cached>>,
    /// Held while fetching; the time of the last attempt, failed or not.
    fetching: Mutex<Option<Instant>>,
}

struct Cached {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    fetched: Instant,
}

/// The least time between two fetches (after an unknown key id, or a failed
/// fetch), so tokens with made-up ids or a key server that is down cannot
/// make every request wait for a fetch.
const MIN_REFETCH: Duration = Duration::from_secs(1);

impl Jwks {
    pub(crate) fn new(
        uri: http::Uri,
        refresh: Duration,
        connector: crate::transport::Connector,
    ) -> Self {
        Self {
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build(connector),
            uri,
            refresh,
            cache: RwLock::new(None),
            fetching: Mutex::new(None),
        }
    }

    /// The key for `kid` (or the only key, when the token names none).
    pub(crate) async fn key(
        &self,
        kid: Option<&str>,
    ) -> Result<(DecodingKey, Algorithm), KeyError> {
        if let Some(found) = self.cached(kid, self.refresh).await {
            return Ok(found);
        }
        let mut last_attempt = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(found) = self.cached(kid, self.refresh).await {
            return Ok(found);
        }
        let recently = last_attempt.is_some_and(|at| at.elapsed() < MIN_REFETCH);
        if !recently {
            let fetched = self.fetch().await;
            // Stamped when the attempt ends: a fetch that hung until its
            // timeout does not let the next waiter start another at once.
            *last_attempt = Some(Instant::now());
            match fetched {
                Ok(keys) => {
                    *self.cache.write().await = Some(Cached {
                        keys,
                        fetched: Instant::now(),
                    });
                }
                Err(e) => {
                    tracing::warn!(url = %self.uri, error = %e, "fetching the JWKS failed");
                    // Stale keys are better than none while the key server is down.
                    if let Some(found) = self.cached(kid, Duration::MAX).await {
                        return Ok(found);
                    }
                    return Err(KeyError::Unavailable);
                }
            }
        }
        if self.cache.read().await.is_none() {
            return Err(KeyError::Unavailable);
        }
        self.cached(kid, Duration::MAX)
            .await
            .ok_or(KeyError::Unknown)
    }

    async fn cached(
        &self,
        kid: Option<&str>,
        max_age: Duration,
    ) -> Option<(DecodingKey, Algorithm)> {
        let cache = self.cache.read().await;
        let cached = cache.as_ref().filter(|c| c.fetched.elapsed() < max_age)?;
        match kid {
            Some(kid) => cached.keys.get(kid).cloned(),
            None if cached.keys.len() == 1 => cached.keys.values().next().cloned(),
            None => None,
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, (DecodingKey, Algorithm)>, String> {
        let body = crate::transport::get_bytes(
            &self.client,
            &self.uri,
            1024 * 1024,
            Duration::from_secs(10),
        )
        .await?;
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| format!("not a JWK set: {e}"))?;
        let mut keys = HashMap::new();
        for (index, jwk) in set.keys.iter().enumerate() {
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                // Symmetric and other keys have no place in a public key set.
                _ => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let kid = jwk
                .common
                .key_id
                .clone()
                .unwrap_or_else(|| format!("#{index}"));
            keys.insert(kid, (key, algorithm));
        }
        Ok(keys)
    }
}

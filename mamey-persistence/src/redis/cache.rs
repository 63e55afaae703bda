//! The typed cache, and the single flight behind [`Cache::get_or_load`].

use std::future::Future;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use mamey_core::{Error, ErrorKind, FieldError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::{RedisClient, millis};

/// A typed cache on Redis: values are JSON, each with a time to live, under
/// `{prefix}{key}`. Cheap to clone; take it from [`RedisClient::cache`].
///
/// [`get_or_load`](Cache::get_or_load) protects the source behind the cache
/// from a stampede **within this process**: concurrent callers of one key
/// share one load. Instances of a service each load a missing key once —
/// as many loads as replicas, not as requests; Redis itself is not locked
/// (wrap the loader in a [`Lock`](super::Lock) if even that is too many).
///
/// ```no_run
/// # async fn run(redis: mamey_persistence::redis::RedisClient) -> Result<(), mamey_core::Error> {
/// use std::time::Duration;
///
/// let cache = redis.cache();
/// cache.set("greeting", &"hello", Duration::from_secs(60)).await?;
/// let greeting: Option<String> = cache.get("greeting").await?;
/// assert_eq!(greeting.as_deref(), Some("hello"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Cache {
    client: RedisClient,
}

/// A load in progress, as the callers waiting for it see it: `None` until
/// the loading caller is done.
pub(super) type Flight = watch::Receiver<Option<Outcome>>;

/// How a load ended.
#[derive(Clone)]
pub(super) enum Outcome {
    /// The value, JSON-encoded.
    Value(Arc<[u8]>),
    /// The loader's error, for the waiting callers.
    Failed(Failure),
}

/// A copy of a [`mamey_core::Error`] (which does not clone): what the
/// waiting callers return. The source stays with the caller that loaded.
#[derive(Clone)]
pub(super) struct Failure {
    kind: ErrorKind,
    code: String,
    message: String,
    fields: Vec<FieldError>,
}

impl Failure {
    fn of(error: &Error) -> Self {
        Self {
            kind: error.kind(),
            code: error.code().to_owned(),
            message: error.message().to_owned(),
            fields: error.fields().to_vec(),
        }
    }

    fn to_error(&self) -> Error {
        self.fields.iter().fold(
            Error::new(self.kind, self.code.clone(), self.message.clone()),
            |error, f| error.with_field(&f.field, &f.code, &f.message),
        )
    }
}

impl Cache {
    pub(super) fn new(client: RedisClient) -> Self {
        Self { client }
    }

    /// The value under `key`, or `None` when there is none (never set,
    /// expired or deleted).
    ///
    /// # Errors
    /// Redis is unavailable, or the stored value is not a `T` (internal).
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        let key = self.client.key(key);
        let bytes: Option<Vec<u8>> = self.client.query(::redis::cmd("GET").arg(&key)).await?;
        bytes.map(|bytes| decode(&key, &bytes)).transpose()
    }

    /// Stores `value` under `key` for `ttl` (at least 1 ms), replacing what
    /// was there.
    ///
    /// # Errors
    /// Redis is unavailable, `ttl` is under 1 ms (invalid input), or `value`
    /// cannot be encoded as JSON (internal).
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), Error> {
        let ttl = millis(ttl, "a cache entry's TTL")?;
        let key = self.client.key(key);
        let bytes = encode(&key, value)?;
        self.store(&key, &bytes, ttl).await
    }

    /// Removes `key`; returns whether it was there.
    ///
    /// # Errors
    /// Redis is unavailable.
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        let removed: u64 = self
            .client
            .query(::redis::cmd("DEL").arg(self.client.key(key)))
            .await?;
        Ok(removed > 0)
    }

    /// The value under `key`; when there is none, runs `load`, stores its
    /// value for `ttl` and returns it.
    ///
    /// Concurrent calls for one key in this process run **one** load (and
    /// one `GET`): the first caller loads, the others wait and get its
    /// value, or a copy of its error (kind, code, message and fields; the
    /// source stays with the first). If the loading caller is cancelled,
    /// a waiting one takes over. Other processes are not coordinated (see
    /// [`Cache`]).
    ///
    /// Redis failing does not fail the call: a failed read counts as a miss
    /// and a failed write is skipped, both logged as warnings, so the
    /// service keeps answering from the source while Redis is down. A
    /// stored value that is not a `T` (say, from an older version of the
    /// type) is loaded again and overwritten.
    ///
    /// # Errors
    /// What `load` returns; invalid input when `ttl` is under 1 ms; internal
    /// when the value cannot be encoded as JSON, or another caller of the
    /// same key loaded a different type.
    pub async fn get_or_load<T, F, Fut>(
        &self,
        key: &str,
        ttl: Duration,
        load: F,
    ) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let ttl = millis(ttl, "a cache entry's TTL")?;
        let key = self.client.key(key);
        let leader = loop {
            match self.join_or_lead(&key) {
                Ok(leader) => break leader,
                Err(mut flight) => {
                    let outcome = flight
                        .wait_for(Option::is_some)
                        .await
                        .ok()
                        .and_then(|outcome| outcome.clone());
                    match outcome {
                        Some(Outcome::Value(bytes)) => return decode(&key, &bytes),
                        Some(Outcome::Failed(failure)) => return Err(failure.to_error()),
                        // The loading caller was cancelled: try again.
                        None => {}
                    }
                }
            }
        };
        match self
            .client
            .query::<Option<Vec<u8>>>(::redis::cmd("GET").arg(&key))
            .await
        {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(value) => {
                    leader.finish(Outcome::Value(bytes.into()));
                    return Ok(value);
                }
                Err(error) => {
                    tracing::warn!(%key, %error, "cached value cannot be decoded; loading it again");
                }
            },
            Ok(None) => {}
            Err(error) => tracing::warn!(%key, %error, "cache read failed; loading"),
        }
        let loaded = load()
            .await
            .and_then(|value| Ok((encode(&key, &value)?, value)));
        let (bytes, value) = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                leader.finish(Outcome::Failed(Failure::of(&error)));
                return Err(error);
            }
        };
        let bytes: Arc<[u8]> = bytes.into();
        leader.finish(Outcome::Value(Arc::clone(&bytes)));
        if let Err(error) = self.store(&key, &bytes, ttl).await {
            tracing::warn!(%key, %error, "cache write failed");
        }
        // The flight ends (`leader` drops) only now that the value is in
        // Redis: a caller arriving after it reads the value instead of
        // loading it a second time.
        drop(leader);
        Ok(value)
    }

    /// Joins the load of `key` in progress, or starts one.
    fn join_or_lead(&self, key: &str) -> Result<Leader, Flight> {
        let inner = &self.client.inner;
        let mut flights = inner.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = flights.get(key) {
            return Err(flight.clone());
        }
        let (outcome, flight) = watch::channel(None);
        flights.insert(key.to_owned(), flight);
        Ok(Leader {
            client: self.client.clone(),
            key: key.to_owned(),
            outcome,
        })
    }

    async fn store(&self, key: &str, bytes: &[u8], ttl: u64) -> Result<(), Error> {
        self.client
            .query(::redis::cmd("SET").arg(key).arg(bytes).arg("PX").arg(ttl))
            .await
    }
}

/// The caller that loads a key; ends the flight when dropped, also when
/// cancelled (the waiting callers then try again).
struct Leader {
    client: RedisClient,
    key: String,
    outcome: watch::Sender<Option<Outcome>>,
}

impl Leader {
    /// Hands the outcome to the waiting callers.
    fn finish(&self, outcome: Outcome) {
        self.outcome.send_replace(Some(outcome));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        // Only the leader removes its flight, and no other is added for the
        // key while it is there: the entry is this one.
        self.client
            .inner
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

fn encode<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|error| {
        Error::internal(format!(
            "cannot encode the value for `{key}` as JSON: {error}"
        ))
        .with_source(error)
    })
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|error| {
        Error::internal(format!(
            "the value under `{key}` is not a `{}`: {error}",
            std::any::type_name::<T>()
        ))
        .with_source(error)
    })
}

//! Redis (feature `redis`): the [`Redis`] plug-in and what a service builds
//! on it — a typed [`Cache`] with stampede protection, a [`Lock`] (a lease
//! with fencing tokens), pub/sub channels for a backplane and
//! [`RateLimiter`] counters shared by every replica.
//!
//! The plug-in connects at init (the service does not start without Redis)
//! through the `redis` crate's tokio `ConnectionManager`, provides a
//! [`RedisClient`] resource (cheap to clone: one multiplexed connection
//! shared by all clones) and registers a `redis` readiness check.
//!
//! ```toml
//! [redis]
//! url = "redis://127.0.0.1:6379"  # redis://[user[:password]@]host[:port][/db]
//! # username = "orders"           # over the URL's; a secret
//! # password = "…"                # over the URL's; a secret
//! # database = 0                  # over the URL's path; default: the URL's, else 0
//! key_prefix = "{app.name}:"      # before every key and channel
//! connect_timeout = "2s"          # each connection attempt
//! response_timeout = "1s"         # each command
//! reconnect_min_delay = "100ms"   # first delay between reconnection attempts
//! reconnect_max_delay = "2s"      # the delay doubles up to this
//! reconnect_attempts = 6          # attempts per reconnection, after the first
//! ```
//!
//! A handler takes the client as an argument:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use mamey_core::cqrs::{Query, Res};
//! use mamey_core::{Error, Service};
//! use mamey_persistence::redis::{Redis, RedisClient};
//!
//! struct GetPrice { sku: String }
//! impl Query for GetPrice { type Output = u64; }
//!
//! async fn get_price(query: GetPrice, Res(redis): Res<RedisClient>) -> Result<u64, Error> {
//!     let key = format!("price:{}", query.sku); // stored as `orders:price:…`
//!     redis
//!         .cache()
//!         .get_or_load(&key, Duration::from_secs(60), || async {
//!             Ok(1999) // the database query; once per key at a time in this process
//!         })
//!         .await
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! Service::builder("orders").plugin(Redis::new()).build().await?.run().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Keys
//!
//! Every key and channel goes through the prefix (`redis.key_prefix`,
//! default `"{app.name}:"`, so services sharing a Redis do not collide):
//! [`Cache`] keys are `{prefix}{key}`, [`Lock`]s `{prefix}lock:{name}` (and
//! `{prefix}lock:{name}:fence` for the fencing counter), [`RateLimiter`]
//! counters `{prefix}rate:{key}`, channels `{prefix}{channel}`. For other
//! commands, [`RedisClient::connection`] gives the raw connection and
//! [`RedisClient::key`] the prefixed key.
//!
//! # Failure behaviour
//!
//! - **At start**: the plug-in tries `1 + reconnect_attempts` times with
//!   backoff; then the service fails to start, naming the address.
//! - **While running**: a lost connection is re-established in the
//!   background (the same backoff); calls made meanwhile fail fast as
//!   [`ErrorKind::Unavailable`](mamey_core::ErrorKind::Unavailable) (retried
//!   by the transports) after at most `connect_timeout + response_timeout`.
//!   Once the attempts are used up, the next call starts a new round, and
//!   the readiness check calls `PING` on every probe: the service recovers
//!   by itself, without a restart, when Redis comes back.
//! - **Readiness**: the `redis` check is unhealthy while `PING` gets no
//!   answer within `response_timeout`, healthy again as soon as it does.
//! - **Data**: Redis keeps data in memory; a restart without persistence
//!   empties the cache, frees every lock and resets the rate counters. Treat
//!   all of it as state that may disappear.
//! - **Pub/sub**: see [`ChannelSubscription`] — a subscription survives
//!   restarts and says when messages may have been lost.
//!
//! TLS: a `rediss://` URL connects over TLS with feature `tls` (rustls,
//! ring as the process's provider — the `redis` crate's rustls support
//! picks none), trusting the system's and Mozilla's roots, or only the
//! certificates in `redis.ca_file`. Without the feature, a `rediss://` URL
//! fails at start, naming `redis.url`.

mod cache;
mod lock;
mod pubsub;
mod rate;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{
    Client, ConnectionAddr, ConnectionInfo, FromRedisValue, IntoConnectionInfo, RedisError,
    RedisResult, RetryMethod, Script,
};
use mamey_core::config::{ConfigSection, Secret};
use mamey_core::health::{HealthStatus, Probe};
use mamey_core::{BoxError, Error, InitContext, Plugin};
use serde::{Deserialize, Serialize};

pub use cache::Cache;
pub use lock::{Lease, Lock};
pub use pubsub::{ChannelMessage, ChannelSubscription, MessagesLost};
pub use rate::{Decision, RateLimiter};

/// The `redis` section.
///
/// ```toml
/// [redis]
/// url = "redis://127.0.0.1:6379"
/// key_prefix = "{app.name}:"
/// connect_timeout = "2s"
/// response_timeout = "1s"
/// reconnect_min_delay = "100ms"
/// reconnect_max_delay = "2s"
/// reconnect_attempts = 6
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Connection URL, `redis://[user[:password]@]host[:port][/db]` (or
    /// `redis+unix:///path?db=N`); it may hold a password, so it never
    /// prints. Default: `redis://127.0.0.1:6379`.
    pub url: Secret<String>,
    /// User name (Redis 6 ACLs), over the URL's. Default: the URL's, else none.
    pub username: Option<Secret<String>>,
    /// Password, over the URL's. Default: the URL's, else none.
    pub password: Option<Secret<String>>,
    /// Database index, over the URL's path. Default: the URL's, else `0`.
    pub database: Option<u32>,
    /// Put before every key and channel; `{app.name}` is replaced by the
    /// service's name, and `""` means no prefix. Default: `"{app.name}:"`.
    pub key_prefix: String,
    /// How long one connection attempt may take. Default: `2s`.
    #[serde(with = "mamey_core::config::duration")]
    pub connect_timeout: Duration,
    /// How long a command may wait for its answer before it fails as
    /// unavailable; also the readiness check's limit. Default: `1s`.
    #[serde(with = "mamey_core::config::duration")]
    pub response_timeout: Duration,
    /// The first delay between reconnection attempts; it doubles (with
    /// jitter) up to `reconnect_max_delay`. Default: `100ms`.
    #[serde(with = "mamey_core::config::duration")]
    pub reconnect_min_delay: Duration,
    /// The longest delay between reconnection attempts. Default: `2s`.
    #[serde(with = "mamey_core::config::duration")]
    pub reconnect_max_delay: Duration,
    /// Attempts after the first before a connection (at start) or a
    /// reconnection (later; the next command starts a new round) gives up.
    /// Default: `6`.
    pub reconnect_attempts: usize,
    /// A PEM file of the certificates to trust for a `rediss://` URL,
    /// instead of the system's and Mozilla's roots (feature `tls`).
    /// Default: none.
    pub ca_file: Option<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("redis://127.0.0.1:6379".into()),
            username: None,
            password: None,
            database: None,
            key_prefix: "{app.name}:".into(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(1),
            reconnect_min_delay: Duration::from_millis(100),
            reconnect_max_delay: Duration::from_secs(2),
            reconnect_attempts: 6,
            ca_file: None,
        }
    }
}

impl ConfigSection for RedisConfig {
    const KEY: &'static str = "redis";
}

/// The Redis plug-in (section `redis`). Provides a [`RedisClient`] and a
/// `redis` readiness check.
#[derive(Debug, Default)]
pub struct Redis {
    _private: (),
}

impl Redis {
    /// The plug-in.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl Plugin for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let config = ctx.section::<RedisConfig>()?;
        let info = connection_info(&config).map_err(|(key, e)| ctx.config().invalid(key, e))?;
        let ca = trusted(&config).map_err(|(key, e)| ctx.config().invalid(key, e))?;
        for (key, value) in [
            ("redis.connect_timeout", config.connect_timeout),
            ("redis.response_timeout", config.response_timeout),
            ("redis.reconnect_min_delay", config.reconnect_min_delay),
        ] {
            if value.is_zero() {
                return Err(ctx.config().invalid(key, "expected more than 0s").into());
            }
        }
        if config.reconnect_max_delay < config.reconnect_min_delay {
            return Err(ctx
                .config()
                .invalid(
                    "redis.reconnect_max_delay",
                    "expected at least `redis.reconnect_min_delay`",
                )
                .into());
        }
        let prefix = config.key_prefix.replace("{app.name}", &ctx.app().name);
        let target = describe(&info);
        let client = RedisClient::connect(info, ca, prefix, &config)
            .await
            .map_err(|e| {
                format!(
                    "cannot connect to Redis at {target}: {e} (after {} attempts: \
                     redis.reconnect_attempts, redis.connect_timeout)",
                    config.reconnect_attempts + 1
                )
            })?;
        let check = client.clone();
        let limit = config.response_timeout;
        ctx.health().register("redis", &[Probe::Ready], move || {
            let client = check.clone();
            async move {
                // The manager reconnects on the error this PING meets, so a
                // failing probe is also what brings the connection back.
                let mut connection = client.connection();
                let ping = ::redis::cmd("PING");
                match tokio::time::timeout(limit, ping.query_async::<String>(&mut connection)).await
                {
                    Ok(Ok(_)) => HealthStatus::healthy(),
                    Ok(Err(error)) => HealthStatus::unhealthy(format!("redis: {error}")),
                    Err(_) => HealthStatus::unhealthy(format!(
                        "redis: no answer to PING within {} (redis.response_timeout)",
                        mamey_core::config::duration::format(limit)
                    )),
                }
            }
        });
        ctx.provide(client)?;
        Ok(())
    }
}

/// The connection settings: the URL, with the configured user, password and
/// database over it. Errors name the config key.
fn connection_info(config: &RedisConfig) -> Result<ConnectionInfo, (&'static str, String)> {
    let url = config.url.expose();
    if cfg!(not(feature = "tls")) && (url.starts_with("rediss://") || url.starts_with("valkeys://"))
    {
        return Err((
            "redis.url",
            "TLS (rediss://) needs the `tls` feature of mamey-persistence".into(),
        ));
    }
    let info = url.as_str().into_connection_info().map_err(|e| {
        (
            "redis.url",
            format!("expected a URL like redis://host:6379/0 ({e})"),
        )
    })?;
    let mut settings = info.redis_settings().clone();
    if let Some(username) = &config.username {
        settings = settings.set_username(username.expose());
    }
    if let Some(password) = &config.password {
        settings = settings.set_password(password.expose());
    }
    if let Some(database) = config.database {
        settings = settings.set_db(i64::from(database));
    }
    Ok(info.set_redis_settings(settings))
}

/// The trusted certificates of `redis.ca_file`, when set.
fn trusted(config: &RedisConfig) -> Result<Option<Arc<[u8]>>, (&'static str, String)> {
    let Some(path) = &config.ca_file else {
        return Ok(None);
    };
    std::fs::read(path)
        .map(|pem| Some(pem.into()))
        .map_err(|e| ("redis.ca_file", format!("cannot read `{path}`: {e}")))
}

/// A client for `info`; over TLS with `ca` as the only roots when given.
fn open(info: ConnectionInfo, ca: Option<&[u8]>) -> Result<Client, RedisError> {
    #[cfg(feature = "tls")]
    if matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
        // The redis crate's rustls support picks no provider; ring is the
        // workspace's. Installing it a second time changes nothing.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let Some(ca) = ca {
            let certificates = ::redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.to_vec()),
            };
            return Client::build_with_tls(info, certificates);
        }
    }
    let _ = ca;
    Client::open(info)
}

/// Where the connection goes, for errors: no user, no password.
fn describe(info: &ConnectionInfo) -> String {
    let db = info.redis_settings().db();
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}/{db}")
        }
        ConnectionAddr::Unix(path) => format!("{} (db {db})", path.display()),
        other => format!("{other:?}"),
    }
}

/// The connection to Redis and the key prefix: the resource the [`Redis`]
/// plug-in provides. Cheap to clone; clones share one multiplexed
/// connection, which reconnects by itself.
///
/// Hands out the [`Cache`], [`Lock`]s, [`RateLimiter`] and pub/sub
/// ([`publish`](RedisClient::publish), [`subscribe`](RedisClient::subscribe));
/// errors are mamey [`Error`]s: unavailable when Redis cannot be reached in
/// time, internal otherwise.
#[derive(Clone)]
pub struct RedisClient {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// `redis.ca_file`'s certificates, for the pub/sub connections too.
    ca: Option<Arc<[u8]>>,
    manager: ConnectionManager,
    /// What pub/sub connections are made with: the manager's settings.
    config: ConnectionManagerConfig,
    prefix: String,
    /// The longest a command may take, reconnection included.
    deadline: Duration,
    reconnect_min_delay: Duration,
    reconnect_max_delay: Duration,
    /// The loads in progress of [`Cache::get_or_load`], by full key.
    flights: Mutex<HashMap<String, cache::Flight>>,
    scripts: Scripts,
}

/// The Lua scripts; each runs atomically in Redis.
struct Scripts {
    acquire: Script,
    release: Script,
    extend: Script,
    hit: Script,
}

impl fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisClient")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisClient {
    /// Connects, trying `1 + reconnect_attempts` times.
    async fn connect(
        info: ConnectionInfo,
        ca: Option<Arc<[u8]>>,
        prefix: String,
        config: &RedisConfig,
    ) -> Result<Self, RedisError> {
        let client = open(info, ca.as_deref())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_min_delay(config.reconnect_min_delay)
            .set_max_delay(config.reconnect_max_delay)
            .set_number_of_retries(config.reconnect_attempts);
        let manager = client
            .get_connection_manager_with_config(manager_config.clone())
            .await?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                ca,
                manager,
                config: manager_config,
                prefix,
                deadline: config.connect_timeout + config.response_timeout,
                reconnect_min_delay: config.reconnect_min_delay,
                reconnect_max_delay: config.reconnect_max_delay,
                flights: Mutex::new(HashMap::new()),
                scripts: Scripts {
                    acquire: Script::new(lock::ACQUIRE),
                    release: Script::new(lock::RELEASE),
                    extend: Script::new(lock::EXTEND),
                    hit: Script::new(rate::HIT),
                },
            }),
        })
    }

    /// The key prefix, e.g. `orders:`.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// `key` with the prefix, as stored in Redis: for commands sent on
    /// [`connection`](RedisClient::connection).
    #[must_use]
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    /// The raw connection, for commands this module does not wrap. Keys are
    /// not prefixed for you: use [`key`](RedisClient::key). Cheap to clone.
    #[must_use]
    pub fn connection(&self) -> ConnectionManager {
        self.inner.manager.clone()
    }

    /// Sends `PING`.
    ///
    /// # Errors
    /// Redis did not answer in time (unavailable), or refused.
    pub async fn ping(&self) -> Result<(), Error> {
        self.query::<String>(&::redis::cmd("PING")).await.map(drop)
    }

    /// The typed cache.
    #[must_use]
    pub fn cache(&self) -> Cache {
        Cache::new(self.clone())
    }

    /// The lock called `name` (key `{prefix}lock:{name}`).
    #[must_use]
    pub fn lock(&self, name: &str) -> Lock {
        Lock::new(self.clone(), name)
    }

    /// The rate-limit counters.
    #[must_use]
    pub fn rate_limiter(&self) -> RateLimiter {
        RateLimiter::new(self.clone())
    }

    /// Runs `cmd`, within the deadline.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &::redis::Cmd) -> Result<T, Error> {
        let mut connection = self.connection();
        self.within_deadline(cmd.query_async(&mut connection)).await
    }

    /// Runs `call`, failing as unavailable after `connect_timeout +
    /// response_timeout`: while the manager reconnects, commands wait for
    /// the new connection with no limit of their own.
    pub(crate) async fn within_deadline<T>(
        &self,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.inner.deadline, call).await {
            Ok(result) => result.map_err(error),
            Err(_) => Err(Error::unavailable(
                "redis.unavailable",
                format!(
                    "Redis did not answer within {}",
                    mamey_core::config::duration::format(self.inner.deadline)
                ),
            )),
        }
    }
}

/// Maps a `redis` error onto mamey's error model, for code that uses
/// [`RedisClient::connection`]: a lost or refused connection, a timeout, or
/// a server that is loading or failing over is unavailable (retried);
/// anything else internal. The driver's text stays in the source, for logs.
///
/// ```
/// use mamey_core::ErrorKind;
/// use mamey_persistence::redis::error;
///
/// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// assert_eq!(error(refused.into()).kind(), ErrorKind::Unavailable);
/// ```
#[must_use]
pub fn error(error: RedisError) -> Error {
    let transient = error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || !matches!(error.retry_method(), RetryMethod::NoRetry);
    if transient {
        Error::unavailable("redis.unavailable", "Redis is unavailable").with_source(error)
    } else {
        Error::internal(format!("Redis error: {error}")).with_source(error)
    }
}

/// A duration in whole milliseconds, at least 1, as `PX` and `PEXPIRE` take
/// it; `what` names it in the error when it is zero.
pub(crate) fn millis(duration: Duration, what: &str) -> Result<u64, Error> {
    // Redis takes up to a signed 64-bit number.
    let millis = u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .min(i64::MAX.unsigned_abs());
    if millis == 0 {
        return Err(Error::invalid_input(
            "redis.invalid_duration",
            format!("{what} must be at least 1ms"),
        ));
    }
    Ok(millis)
}

//! [`Registry`]: what a discovery backend does.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use mamey_core::Error;
use mamey_core::discovery::Endpoint;

use crate::instance::Instance;

/// A service registry: Consul, etcd, a fixed list, or your own.
///
/// The [`Discovery`](crate::Discovery) plug-in drives it: it registers the
/// service's instance when the service is ready, calls
/// [`heartbeat`](Registry::heartbeat) every
/// [`heartbeat_interval`](Registry::heartbeat_interval) (registering again
/// when the registry lost the instance), deregisters first on shutdown, and
/// keeps one [`watch`](Registry::watch) open per service name looked up.
/// Retries, backoff and serving stale endpoints are the plug-in's work, not
/// the backend's.
pub trait Registry: Send + Sync + 'static {
    /// The backend's name in logs and health reports, e.g. `"etcd"`.
    fn name(&self) -> &'static str;

    /// Registers `instance`, replacing an earlier registration of its id.
    ///
    /// # Errors
    /// When the registry cannot be reached or refuses.
    fn register<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<(), Error>>;

    /// Keeps `instance`'s registration alive (renews its lease, passes its
    /// TTL check) and says whether the registry still has it.
    ///
    /// # Errors
    /// When the registry cannot be reached.
    fn heartbeat<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<Presence, Error>>;

    /// How often [`heartbeat`](Registry::heartbeat) is called.
    fn heartbeat_interval(&self) -> Duration;

    /// Removes `instance`; removing one that is not registered succeeds.
    ///
    /// # Errors
    /// When the registry cannot be reached or refuses.
    fn deregister<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<(), Error>>;

    /// The healthy endpoints of `service`: the first item as soon as they
    /// are known, then one after each change. An `Err` item ends the watch;
    /// the plug-in opens another after a backoff, serving the last known
    /// endpoints meanwhile.
    fn watch(&self, service: &str) -> BoxStream<'static, Result<Vec<Endpoint>, Error>>;
}

/// Whether the registry still has an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Registered and kept alive.
    Registered,
    /// Gone (lease expired, agent restarted): register it again.
    Lost,
}

/// The error of a registry that could not be reached.
#[cfg(any(feature = "etcd", feature = "consul"))]
pub(crate) fn unreachable(registry: &str, message: impl std::fmt::Display) -> Error {
    Error::new(
        mamey_core::ErrorKind::Unavailable,
        "discovery.unreachable",
        format!("the {registry} registry: {message}"),
    )
}

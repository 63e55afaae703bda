//! The static backend: fixed endpoints from configuration.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt};
use mamey_core::Error;
use mamey_core::discovery::{Endpoint, Resolver, StaticResolver};

use crate::instance::Instance;
use crate::registry::{Presence, Registry};

/// Fixed endpoints by service name (`discovery.static.services`): the
/// embedded default. Registering with it does nothing: there is no one to
/// tell.
///
/// ```
/// use mamey_discovery::StaticRegistry;
///
/// let registry = StaticRegistry::new().service("pricing", ["http://127.0.0.1:8081"]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct StaticRegistry {
    services: StaticResolver,
}

impl StaticRegistry {
    /// No services.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `service` at `urls`.
    #[must_use]
    pub fn service<I, S>(mut self, service: impl Into<String>, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.services = self.services.service(service, urls);
        self
    }
}

impl Registry for StaticRegistry {
    fn name(&self) -> &'static str {
        "static"
    }

    fn register<'a>(&'a self, _instance: &'a Instance) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    fn heartbeat<'a>(&'a self, _instance: &'a Instance) -> BoxFuture<'a, Result<Presence, Error>> {
        Box::pin(async { Ok(Presence::Registered) })
    }

    fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(3600)
    }

    fn deregister<'a>(&'a self, _instance: &'a Instance) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    fn watch(&self, service: &str) -> BoxStream<'static, Result<Vec<Endpoint>, Error>> {
        let (services, service) = (self.services.clone(), service.to_owned());
        // One answer, then never a change.
        stream::once(async move { services.resolve(&service).await })
            .chain(stream::pending())
            .boxed()
    }
}

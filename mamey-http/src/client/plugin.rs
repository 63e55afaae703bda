//! The `http-client` plug-in: reads `http_client`, resolves names through
//! discovery with the configured services pinned, and provides the
//! [`ServiceClient`] resource.

use futures_util::future::BoxFuture;
use mamey_core::discovery::{Endpoint, Resolver, ServiceResolver, StaticResolver};
use mamey_core::{BoxError, Error, InitContext, Plugin};

use super::ServiceClient;
use super::config::ClientConfig;

/// The client plug-in: reads `http_client` and provides the
/// [`ServiceClient`] resource.
///
/// Names are resolved with the [`ServiceResolver`] resource when a
/// discovery plug-in added before it (or the application, with
/// `ServiceBuilder::resource`) provides one, else with the static
/// `http_client.services`. With both, the names listed in
/// `http_client.services` (with at least one URL) keep their configured
/// URLs, and every other name goes to discovery.
#[derive(Debug, Default)]
pub struct ServiceClientPlugin;

impl ServiceClientPlugin {
    /// The plug-in.
    #[must_use]
    pub fn new() -> Self {
        Self
    }
}

impl Plugin for ServiceClientPlugin {
    fn name(&self) -> &'static str {
        "http-client"
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let config: ClientConfig = ctx.section()?;
        let mut pinned = StaticResolver::new();
        for (service, urls) in &config.services {
            pinned = pinned.service(service.clone(), urls.iter().cloned());
        }
        let resolver = match ctx.resource::<ServiceResolver>() {
            Ok(discovered) => ServiceResolver::new(PinnedResolver { pinned, discovered }),
            Err(_) => ServiceResolver::new(pinned),
        };
        ctx.provide(ServiceClient::new(config, resolver)?)?;
        Ok(())
    }
}

/// The names of `http_client.services` pinned to their configured URLs,
/// every other name resolved by discovery.
#[derive(Debug)]
struct PinnedResolver {
    pinned: StaticResolver,
    discovered: ServiceResolver,
}

impl Resolver for PinnedResolver {
    fn resolve<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Vec<Endpoint>, Error>> {
        Box::pin(async move {
            // A static resolver answers at once, and with nothing for a name
            // it does not list.
            let pinned = self.pinned.resolve(service).await?;
            if pinned.is_empty() {
                self.discovered.resolve(service).await
            } else {
                Ok(pinned)
            }
        })
    }
}

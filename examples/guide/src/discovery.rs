//! The chapter "Discovery" (`docs/src/discovery.md`).

use mamey_http::axum::Router;
use mamey_http::axum::routing::get;

/// The service's routes.
pub fn routes() -> Router {
    Router::new().route("/orders", get(|| async { "[]" }))
}

// ANCHOR: service
use mamey_core::Service;
use mamey_discovery::Discovery;
use mamey_http::{ServiceClientPlugin, WebApi};

/// The program.
#[tokio::main]
pub async fn main() -> Result<(), mamey_core::ServiceError> {
    Service::builder("orders")
        .version(env!("CARGO_PKG_VERSION"))
        .plugin(Discovery::new()) // provides ServiceResolver
        .plugin(ServiceClientPlugin::new()) // resolves names through it
        .plugin(WebApi::new().router(routes()))
        .build()
        .await?
        .run()
        .await
}
// ANCHOR_END: service

// ANCHOR: memory
use mamey_discovery::MemoryRegistry;

/// Two services of one process that find each other.
pub fn in_one_process() -> (Discovery, Discovery) {
    let registry = MemoryRegistry::new();
    let boards = Discovery::with_registry(registry.clone());
    let gateway = Discovery::with_registry(registry);
    (boards, gateway)
}
// ANCHOR_END: memory

// ANCHOR: registry
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use mamey_core::Error;
use mamey_core::discovery::Endpoint;
use mamey_discovery::{Instance, Presence, Registry};

/// A registry that logs each registration and passes it on to another.
#[derive(Debug)]
pub struct Logged<R>(pub R);

impl<R: Registry> Registry for Logged<R> {
    fn name(&self) -> &'static str {
        self.0.name() // in logs and health details
    }

    fn register<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<(), Error>> {
        tracing::info!(service = instance.service, id = instance.id, "registering");
        self.0.register(instance)
    }

    fn heartbeat<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<Presence, Error>> {
        self.0.heartbeat(instance)
    }

    fn heartbeat_interval(&self) -> Duration {
        self.0.heartbeat_interval()
    }

    fn deregister<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<(), Error>> {
        tracing::info!(
            service = instance.service,
            id = instance.id,
            "deregistering"
        );
        self.0.deregister(instance)
    }

    fn watch(&self, service: &str) -> BoxStream<'static, Result<Vec<Endpoint>, Error>> {
        self.0.watch(service)
    }
}
// ANCHOR_END: registry

/// Discovery through the logged in-memory registry.
pub fn logged() -> Discovery {
    Discovery::with_registry(Logged(MemoryRegistry::new()))
}

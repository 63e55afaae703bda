//! The chapter "Operations" (`docs/src/operations.md`).

use mamey_core::ServiceBuilder;
use mamey_http::Endpoints;

/// The web API's endpoints.
pub fn endpoints() -> Endpoints {
    Endpoints::new()
}

// ANCHOR: order
use mamey_core::Service;
use mamey_discovery::Discovery;
use mamey_http::{ServiceClientPlugin, WebApi};
use mamey_messaging::Messaging;
use mamey_observability::Observability;
use mamey_persistence::postgres::{PgOutbox, Postgres};
use mamey_secrets::Secrets;

/// Every plug-in, in the order that meets each chapter's rule.
pub fn orders() -> ServiceBuilder {
    Service::builder("orders")
        .plugin(Observability::new()) // logs from every init on; flushes last
        .plugin(Secrets::new()) // overlay, CredentialSources for Postgres
        .plugin(Discovery::new()) // ServiceResolver for the client
        .plugin(Postgres::new().outbox().inbox())
        .plugin(Messaging::rabbitmq().outbox::<PgOutbox>())
        .plugin(ServiceClientPlugin::new())
        .plugin(WebApi::new().endpoints(endpoints())) // stops taking requests first
}
// ANCHOR_END: order

//! {{project-name}}'s gateway: the one public entry. `/api/{service}/…`
//! goes to the service of that name (one of [`SERVICES`]), found through
//! discovery (`[discovery]`) by the `ServiceClient`: balanced across its
//! instances, retried when that is safe, its circuit broken when it keeps
//! failing; the caller's correlation id and trace go along.

mod proxy;

use mamey_core::{Service, ServiceBuilder};
use mamey_discovery::Discovery;
use mamey_http::axum::Router;
use mamey_http::axum::routing::any;
use mamey_http::{ServiceClientPlugin, WebApi};
use mamey_observability::Observability;

/// The services behind the gateway: `/api/{name}/…` reaches these only,
/// so a caller cannot make it look up names of its choosing.
pub const SERVICES: &[&str] = &["{{service}}"];

/// The gateway, ready to build. Discovery comes before the client, which
/// resolves names through it.
pub fn service() -> ServiceBuilder {
    Service::builder("gateway")
        .version(env!("CARGO_PKG_VERSION"))
        .plugin(Observability::new())
        .plugin(Discovery::new())
        .plugin(ServiceClientPlugin::new())
        .plugin(WebApi::new().router(router()))
}

fn router() -> Router {
    Router::new().route("/api/{service}/{*rest}", any(proxy::forward))
}

//! The gateway: teamhub's one public HTTP entry (`config/gateway.toml`:
//! `127.0.0.1:8080`). No database, no broker: it checks tokens, limits
//! callers, and passes requests on to the services by name.
//!
//! | Route | |
//! |---|---|
//! | `/api/{service}/{rest}` (any method) | to `{service}` (`identity`, `boards`, `chat`, `notifications`) at `/{rest}`, query kept (`proxy.rs`) |
//! | `GET /api/live` | WebSocket to notifications' `/live` (`live.rs`) |
//! | `GET /api/openapi.json` | the services' documents, merged (`openapi.rs`) |
//!
//! (The gateway's own `/openapi.json` and `/docs` are off: its routes are
//! plain axum routes, which mamey does not document.)
//!
//! Every route needs a valid token (`401` problem otherwise) except
//! `POST /api/identity/sign-up`, `/sign-in` and `/refresh`,
//! `GET /api/identity/.well-known/jwks.json`, and the services' probes
//! `GET /api/{service}/health/live|ready` (`routing.rs`). A path naming no
//! service is `404`.
//!
//! What the web API's pipeline does on the way in, configured in
//! `config/gateway.toml`: CORS for the dev SPA, the request's context
//! (correlation id, trace — the service client sends them on), bearer-token
//! validation with the key every service has (`http.jwt`; a WebSocket
//! upgrade such as `/api/live`'s may carry its token as `?access_token=`),
//! the body limit (1 MiB), and a rate limit per caller (the token's
//! subject, else the client's address).

mod live;
mod merge;
mod openapi;
mod proxy;
mod routing;

use axum::Router;
use axum::routing::{any, get};
use mamey_core::ServiceBuilder;
use mamey_http::{Auth, WebApi, require};

use crate::deploy::Deployment;

/// The service's name: in discovery, logs, metrics, config file names.
pub const NAME: &str = "gateway";

/// The service, ready to `.build()`.
#[must_use]
pub fn service(deploy: &Deployment) -> ServiceBuilder {
    deploy
        .service(NAME)
        .resource(openapi::MergedDocument::default())
        .plugin(WebApi::new().router(router()))
}

fn router() -> Router {
    Router::new()
        .route("/api/live", get(live::live))
        .route(
            "/api/openapi.json",
            get(openapi::merged).route_layer(require(Auth::Authenticated)),
        )
        .route("/api/{service}/{*rest}", any(proxy::forward))
}

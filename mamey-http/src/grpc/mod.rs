//! gRPC (feature `grpc`): tonic services on a port of their own, with the
//! standard `grpc.health.v1` service fed by the service's health checks,
//! reflection, and the same per-call work as the web API — context
//! extraction, a server span, RED metrics, bearer authentication — plus
//! channels to other services over the resolver.
//!
//! gRPC is served on `grpc.address`, not multiplexed with the web API: the
//! web API answers errors with problem+json and gRPC with `grpc-status`
//! trailers, and a port each keeps both right (and lets a mesh or load
//! balancer treat them apart).
//!
//! ```no_run
//! use mamey_core::Service;
//! use mamey_http::grpc::GrpcServer;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Any tonic service: a generated `GreeterServer::new(MyGreeter)`, or here
//! // the reflection service.
//! let service = tonic_reflection::server::Builder::configure().build_v1()?;
//! Service::builder("greeter")
//!     .plugin(GrpcServer::new().service(service))
//!     .build()
//!     .await?
//!     .run()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! A hosted call's path: `serve` (the connection) → the call layer
//! (`call.rs`: context and authentication as in the web API, authorization,
//! the server span, the deadline) → the tonic service → the metered body
//! (`metered.rs`: the call's metrics and span status when it ends). An
//! outgoing call's: a [`GrpcChannel`] (`channel.rs`) → the service client's
//! resilience runner (resolve, pick, breaker, timeout) → tonic's channel to
//! the endpoint.

mod call;
mod channel;
mod health;
mod metered;
mod server;
mod status;

pub use channel::GrpcChannel;
pub use mamey_core::discovery::GrpcAddress;
pub use server::{GrpcConfig, GrpcServer};
pub use status::{error, status};

/// The health service, always hosted and open to callers without a token.
const HEALTH_NAME: &str = "grpc.health.v1.Health";

/// The reflection service, open to callers without a token.
const REFLECTION_NAME: &str = "grpc.reflection.v1.ServerReflection";

//! Web API on axum for mamey services: an endpoint DSL that maps routes to
//! commands and queries, RFC 9457 problem+json errors, JWT authentication
//! with roles and policies, OpenAPI, health and metrics endpoints, and a
//! resilient service client.
//!
//! How work goes through the crate:
//!
//! - **A web request**: `serve` (connections, limits, TLS) → CORS → the
//!   pipeline (`pipeline.rs`: the body checks, context and authentication,
//!   the server span, the timeout, panic recovery, metrics) → overload
//!   protection (`limits/`: rate limit per caller, adaptive shedding,
//!   concurrency per route and in all) → the route: an axum handler, or an
//!   [`Endpoints`] operation binding the request to a command or query for
//!   the core dispatcher.
//! - **A gRPC call** (feature `grpc`): `serve` → the call layer
//!   (`grpc/call.rs`: the same context and authentication step as the web
//!   pipeline, then authorization, span, deadline) → the same overload
//!   protection → the tonic service.
//! - **An outgoing call**: a [`Call`] of the [`ServiceClient`], or a
//!   `GrpcChannel`, → one resilience runner (`client/resilience.rs`:
//!   resolve, pick under the breaker, time out, classify, retry under the
//!   budget) → the transport's own attempt.
#![forbid(unsafe_code)]

mod auth;
mod bind;
mod client;
mod config;
mod endpoints;
mod extractors;
#[cfg(feature = "grpc")]
pub mod grpc;
mod health;
mod limits;
mod openapi;
mod pipeline;
mod problem;
mod serve;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;
mod transport;
mod url_path;
#[cfg(feature = "garde")]
mod validate;
mod webapi;

pub use auth::{Auth, Caller, JwtIssuer, Require, RequireLayer, require};
pub use client::{
    BreakerConfig, Call, ClientConfig, LoadBalancer, Response, RetryConfig, ServiceClient,
    ServiceClientPlugin,
};
pub use config::{CorsConfig, HttpConfig, JwtConfig, OperationalEndpoints, ServerTlsConfig};
pub use endpoints::{Endpoints, Operation};
pub use extractors::{Json, Path, QueryParams};
pub use limits::{LimitsConfig, RateLimitConfig, RouteLimits, SheddingConfig};
pub use problem::{ApiError, PROBLEM_JSON, Problem, ProblemField};
pub use url_path::url_path;
#[cfg(feature = "garde")]
pub use validate::validate;
pub use webapi::{HttpAddress, Resource, WebApi};

/// The repository README's quickstart, compiled as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeQuickstart;

/// Re-exported so that services name one axum version.
pub use axum;
/// The OpenAPI crate whose `ToSchema` the DSL's messages implement. The
/// derive macro refers to `utoipa` by name: depend on `utoipa = "5"` and
/// `#[derive(utoipa::ToSchema)]`.
pub use utoipa;

//! Contracts and runtime for mamey services.
//!
//! A service is a value assembled from plug-ins and handlers:
//!
//! ```no_run
//! use mamey_core::cqrs::{Command, DispatcherBuilder, Res};
//! use mamey_core::{BoxError, Error, InitContext, MessageContext, Plugin, Service};
//!
//! struct SayHello { name: String }
//! impl Command for SayHello {}
//!
//! /// What a plug-in provides: a database pool, a broker connection, …
//! #[derive(Clone)]
//! struct Greeting(&'static str);
//!
//! struct Greeter;
//!
//! impl Plugin for Greeter {
//!     async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
//!         ctx.provide(Greeting("hello"))?;
//!         Ok(())
//!     }
//! }
//!
//! /// A handler names what it needs after the message.
//! async fn say_hello(cmd: SayHello, Res(greeting): Res<Greeting>, ctx: MessageContext) -> Result<(), Error> {
//!     tracing::info!(correlation_id = %ctx.correlation_id, "{}, {}", greeting.0, cmd.name);
//!     Ok(())
//! }
//!
//! fn handlers(d: &mut DispatcherBuilder) {
//!     d.command(say_hello);
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), BoxError> {
//!     let service = Service::builder("hello")
//!         .version(env!("CARGO_PKG_VERSION"))
//!         .plugin(Greeter)
//!         .handlers(handlers)
//!         .build()
//!         .await?;
//!     service.dispatcher().send(SayHello { name: "mamey".into() }).await?;
//!     service.run().await?; // until Ctrl-C or SIGTERM
//!     Ok(())
//! }
//! ```
//!
//! What lives here:
//!
//! - [`Service`], [`ServiceBuilder`], the [`Plugin`] contract and the
//!   lifecycle (init in order, start in order, stop in reverse within
//!   `shutdown.timeout`); [`ServiceGroup`] runs several services of one
//!   process as one (start in order, stop in reverse, one signal handler);
//!   [`ServiceScope`] tells their logs and metrics apart;
//! - [`config`]: layered, typed configuration with errors that name key,
//!   source and expected shape;
//! - [`Resources`]: the typed registry plug-ins fill and handlers read;
//! - [`MessageContext`]: ids, caller, trace and headers of the current work;
//! - [`cqrs`]: commands, queries, events, handlers that take extractors,
//!   and the dispatcher, with tower middleware;
//! - [`Error`]: the one error model, with its HTTP, gRPC and retry mappings;
//! - [`health`]: health checks with per-check timeouts and aggregation.
//! - [`credentials`]: credentials that rotate (a vault's database leases),
//!   issued by one plug-in and followed by the pools that use them;
//! - [`discovery`]: the resolver contract that turns service names into
//!   endpoints, and a static resolver.
//!
//! Nothing here is global: several services can run in one process.

#![forbid(unsafe_code)]

pub mod config;
mod context;
pub mod correlation;
pub mod cqrs;
pub mod credentials;
pub mod discovery;
mod error;
pub mod health;
mod resources;
mod service;

pub use context::{Identity, MessageContext, TraceContext, new_id};
pub use error::{BoxError, Error, ErrorKind, FieldError};
pub use resources::{MissingResource, Requirement, Resources};
pub use service::{
    HealthConfig, InService, InServiceScope, InitContext, Plugin, ResourceConflict, RunningGroup,
    RunningService, Service, ServiceBuilder, ServiceError, ServiceGroup, ServiceScope,
    ShutdownConfig, ShutdownHandle, StartContext, StopFailure,
};

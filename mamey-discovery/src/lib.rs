//! Service registration and lookup for mamey services.
//!
//! The [`Discovery`] plug-in provides mamey-core's
//! [`ServiceResolver`](mamey_core::discovery::ServiceResolver) resource, so
//! that `http://pricing/...` in mamey-http's service client (and gRPC
//! channels) reaches the healthy instances of `pricing` now. Lookups answer
//! from memory: the first lookup of a name opens a watch on the registry
//! (a Consul blocking query, an etcd watch) that keeps the answer fresh.
//! While the registry is unreachable, the last known instances are served
//! and the `discovery` health check reports degraded.
//!
//! It also registers this instance once the service is ready, keeps the
//! registration alive (etcd lease, Consul check), registers again when the
//! registry lost it, and deregisters **first** on shutdown, before any
//! listener closes.
//!
//! Backends, chosen by `discovery.backend`:
//! - `static` (always built, the default): fixed endpoints from
//!   `discovery.static.services`;
//! - `consul` (feature `consul`): Consul's agent and health HTTP API;
//! - `etcd` (feature `etcd`): etcd v3 keys under a prefix, bound to a lease.
//!
//! Implement [`Registry`] for another registry and pass it to
//! [`Discovery::with_registry`].
#![forbid(unsafe_code)]

mod backoff;
pub mod config;
#[cfg(feature = "consul")]
mod consul;
#[cfg(feature = "etcd")]
mod etcd;
mod fixed;
mod instance;
mod memory;
mod plugin;
mod registration;
mod registry;
mod resolver;

pub use config::DiscoveryConfig;
#[cfg(feature = "consul")]
pub use consul::ConsulRegistry;
#[cfg(feature = "etcd")]
pub use etcd::EtcdRegistry;
pub use fixed::StaticRegistry;
pub use instance::Instance;
pub use memory::MemoryRegistry;
pub use plugin::Discovery;
pub use registry::{Presence, Registry};

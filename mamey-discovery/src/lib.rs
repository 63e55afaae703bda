//! Service registration and lookup: Consul over its HTTP API and a static registry, feeding the core resolver with load-balanced endpoints.
//!
//! This crate is a placeholder in the mamey workspace: its contracts live in
//! [`mamey-core`](https://docs.rs/mamey-core) and its implementation lands in
//! a later release. See `docs/` in the repository for the plan.
#![forbid(unsafe_code)]

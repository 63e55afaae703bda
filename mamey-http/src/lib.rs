//! Web API on axum, endpoint DSL mapping routes to commands and queries, problem+json errors, JWT auth, OpenAPI, a resilient service client and (feature `grpc`) tonic services.
//!
//! This crate is a placeholder in the mamey workspace: its contracts live in
//! [`mamey-core`](https://docs.rs/mamey-core) and its implementation lands in
//! a later release. See `docs/` in the repository for the plan.
#![forbid(unsafe_code)]

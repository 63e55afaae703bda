//! Logging, OpenTelemetry traces over OTLP, Prometheus metrics and W3C trace-context propagation, set up by one plug-in.
//!
//! This crate is a placeholder in the mamey workspace: its contracts live in
//! [`mamey-core`](https://docs.rs/mamey-core) and its implementation lands in
//! a later release. See `docs/` in the repository for the plan.
#![forbid(unsafe_code)]

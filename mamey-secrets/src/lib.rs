//! Secrets into configuration and at runtime: the Vault API (tested against OpenBao), plus file and environment providers.
//!
//! This crate is a placeholder in the mamey workspace: its contracts live in
//! [`mamey-core`](https://docs.rs/mamey-core) and its implementation lands in
//! a later release. See `docs/` in the repository for the plan.
#![forbid(unsafe_code)]

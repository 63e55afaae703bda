//! Pools, migrations, health checks and repositories for Postgres and SQLite (sqlx), MongoDB and Redis, with the transactional outbox and inbox stores.
//!
//! This crate is a placeholder in the mamey workspace: its contracts live in
//! [`mamey-core`](https://docs.rs/mamey-core) and its implementation lands in
//! a later release. See `docs/` in the repository for the plan.
#![forbid(unsafe_code)]

//! The chapter "mamey-core" (`docs/src/core.md`).

pub mod config;
pub mod context;
pub mod cqrs;
pub mod errors;
pub mod extractors;
pub mod health;
pub mod lifecycle;
pub mod middleware;
pub mod resources;
#[cfg(test)]
mod signals_test;

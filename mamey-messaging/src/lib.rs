//! Broker-neutral publish/subscribe for commands and events: RabbitMQ (feature `rabbitmq`), an in-process broker, retries, dead-letters, and the outbox/inbox relay.
//!
//! This crate is a placeholder in the mamey workspace: its contracts live in
//! [`mamey-core`](https://docs.rs/mamey-core) and its implementation lands in
//! a later release. See `docs/` in the repository for the plan.
#![forbid(unsafe_code)]

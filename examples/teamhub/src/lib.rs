//! teamhub: the mamey example system. Six services — a gateway, identity,
//! boards, automations, chat and notifications — built with
//! `Service::builder`, run either all in one process over embedded parts
//! (`cargo run -p teamhub`) or each in its own process over real servers
//! (`cargo run -p teamhub -- run-local`). See `examples/teamhub/README.md`.

#![forbid(unsafe_code)]

pub mod contracts;
pub mod deploy;
pub mod ids;
pub mod request;
pub mod sql;

pub mod automations;
pub mod boards;
pub mod chat;
pub mod gateway;
pub mod identity;
pub mod notifications;

pub mod client;
pub mod loadtest;
pub mod local;
pub mod system;

pub use deploy::{Deployment, Mode};

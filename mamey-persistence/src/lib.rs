//! Databases for mamey services.
//!
//! - [`postgres`] (feature `postgres`): the [`Postgres`](postgres::Postgres)
//!   plug-in — a sqlx pool as a resource, a readiness check, and on request
//!   the transactional outbox ([`PgOutbox`](postgres::PgOutbox)) and inbox
//!   ([`PgInbox`](postgres::PgInbox)) of mamey-messaging, woken by
//!   `LISTEN`/`NOTIFY`.
//!
//! ```toml
//! [postgres]
//! url = "postgres://postgres@127.0.0.1:5432/orders"
//! max_connections = 10
//! ```
#![forbid(unsafe_code)]

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "postgres")]
mod sql;
#[cfg(feature = "postgres")]
pub use sql::error;

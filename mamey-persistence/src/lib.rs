//! Databases for mamey services.
//!
//! - `postgres` (feature `postgres`): the `Postgres` plug-in — a sqlx pool
//!   as a resource, migrations, a readiness check, and on request the
//!   transactional outbox (`PgOutbox`) and inbox (`PgInbox`) of
//!   mamey-messaging, woken by `LISTEN`/`NOTIFY`.
//! - `sqlite` (feature `sqlite`): the `Sqlite` plug-in, the embedded
//!   default — a database in a file, no server — with the same outbox
//!   (`SqliteOutbox`) and inbox (`SqliteInbox`).
//! - `error`: sqlx errors as mamey errors, for handlers.
//!
//! ```toml
//! [postgres]
//! url = "postgres://postgres@127.0.0.1:5432/orders"
//! max_connections = 10
//! ```
#![forbid(unsafe_code)]

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use sql::error;

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
//! The outbox and inbox stores are behind the `outbox` feature, on by
//! default; it is the only one that brings in mamey-messaging. A service
//! that needs only a pool turns it off:
//! `mamey-persistence = { …, default-features = false, features = ["postgres"] }`.
//! The stores settle each claimed message under its claim's token, so a
//! relay whose lease ran out cannot mark a row another relay claimed since.
//!
//! ```toml
//! [postgres]
//! url = "postgres://postgres@127.0.0.1:5432/orders"
//! max_connections = 10
//! ```
#![forbid(unsafe_code)]

#[cfg(feature = "mongo")]
pub mod mongo;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(all(any(feature = "postgres", feature = "sqlite"), feature = "outbox"))]
pub mod unit_of_work;
pub mod writers;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use sql::error;
#[cfg(all(any(feature = "postgres", feature = "sqlite"), feature = "outbox"))]
pub use unit_of_work::Tx;

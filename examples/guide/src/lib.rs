//! The code of the user guide (`docs/`): every Rust block of a chapter is
//! included from here (or from another example) with mdBook's
//! `{{#include file:anchor}}`, between `// ANCHOR: name` and
//! `// ANCHOR_END: name` comments, so every block compiles. One module per
//! chapter. Nothing here is meant to run: most functions need servers; the
//! few tests check the snippets that are pure logic.
#![forbid(unsafe_code)]

pub mod core;
pub mod discovery;
pub mod getting_started;
pub mod grpc;
pub mod http;
pub mod messaging;
pub mod observability;
pub mod operations;
pub mod persistence;
pub mod secrets;

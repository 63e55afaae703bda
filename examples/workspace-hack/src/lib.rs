//! Nothing to call: this crate only unifies the features of the crates the
//! examples share (see its `Cargo.toml`), so that `cargo run -p http-api`
//! after `cargo run -p hello-core` builds no dependency twice.
//!
//! To see which crates still differ between examples:
//!
//! ```text
//! for p in hello-core http-api orders-outbox; do
//!   cargo tree -p $p -e normal -f '{p} [{f}]' --prefix none | sort -u > /tmp/$p.txt
//! done
//! ```
//!
//! and compare the lines of one crate across the files.

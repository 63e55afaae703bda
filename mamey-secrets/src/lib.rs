//! Secrets for mamey services: laid over the configuration when the
//! service builds, read at runtime, and — with Vault — leased credentials
//! and certificates kept alive while it runs.
//!
//! Backends:
//!
//! - **env** (the default): `MAMEY_SECRET__ORDERS__DB__PASSWORD` is key
//!   `password` of the secret `orders/db`;
//! - **file**: a TOML or JSON file, `[orders.db]`;
//! - **vault** (feature `vault`): HashiCorp Vault or OpenBao, with token,
//!   AppRole or Kubernetes login, KV v1/v2, dynamic database credentials,
//!   [`vault::Transit`] and PKI certificates.
//!
//! Add the [`Secrets`] plug-in first. With
//!
//! ```toml
//! [secrets]
//! backend = "vault"
//! overlay = [{ path = "orders/db", into = "postgres" }]
//! vault.auth = { method = "approle", role_id = "…", secret_id_file = "/run/secrets/secret-id" }
//! ```
//!
//! the keys of the KV secret `orders/db` (say `url`) become
//! `postgres.url`, above files and environment variables, so
//! `config/default.toml` never holds a password. Values stay wrapped in
//! [`Secret`](mamey_core::config::Secret): they never show in `Debug`
//! output, logs, errors or the printed configuration.
//!
//! A quick check without any server:
//!
//! ```
//! use mamey_core::Service;
//! use mamey_secrets::{SecretStore, Secrets};
//!
//! #[derive(serde::Deserialize, serde::Serialize, Default)]
//! #[serde(default)]
//! struct Mail {
//!     password: mamey_core::config::Secret<String>,
//! }
//! impl mamey_core::config::ConfigSection for Mail {
//!     const KEY: &'static str = "mail";
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir()?;
//! std::fs::write(
//!     dir.path().join("default.toml"),
//!     "[secrets]\noverlay = [{ path = \"mail\", into = \"mail\" }]\n",
//! )?;
//! let service = Service::builder("mailer")
//!     .config_dir(dir.path())
//!     .plugin(Secrets::new().env_vars([("MAMEY_SECRET__MAIL__PASSWORD", "hunter2")]))
//!     .build()
//!     .await?;
//! let mail: Mail = service.config().section()?;
//! assert_eq!(mail.password.expose(), "hunter2");
//! assert!(!service.effective_config().contains("hunter2"));
//! let store = service.resources().get::<SecretStore>().unwrap();
//! assert_eq!(store.backend(), "env");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![forbid(unsafe_code)]

mod backend;
pub mod config;
mod env;
mod error;
mod file;
mod overlay;
mod plugin;
mod store;
#[cfg(feature = "vault")]
pub mod vault;

pub use backend::{SecretBackend, SecretData, SecretRef};
pub use env::EnvBackend;
pub use error::SecretError;
pub use file::FileBackend;
pub use plugin::Secrets;
pub use store::{SecretStore, SecretWatch};

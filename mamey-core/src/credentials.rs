//! Credentials that rotate: one plug-in issues them (a vault's dynamic
//! database credentials), another uses the current ones and follows each
//! rotation (a database pool opening new connections with them).
//!
//! The issuer provides a [`CredentialSources`] resource, one named source
//! per lease; a user asks it for a source by the name its configuration
//! gives, reads the current [`Credentials`] and awaits changes:
//!
//! ```
//! use mamey_core::config::Secret;
//! use mamey_core::credentials::{CredentialSources, Credentials};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let (issue, source) = tokio::sync::watch::channel(Credentials::new("v-orders-1", "pw-1"));
//! let sources = CredentialSources::new().with_source("orders-db", source);
//!
//! let mut orders = sources.get("orders-db").expect("configured");
//! assert_eq!(orders.borrow().username, "v-orders-1");
//!
//! issue.send_replace(Credentials::new("v-orders-2", "pw-2")); // the issuer rotates
//! orders.changed().await.expect("issuer alive");
//! assert_eq!(orders.borrow_and_update().username, "v-orders-2");
//! assert_eq!(format!("{:?}", orders.borrow().password), "[redacted]");
//! # });
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Secret;

/// A user name and its password. The password never prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user (role) name.
    pub username: String,
    /// The password.
    pub password: Secret<String>,
}

impl Credentials {
    /// Credentials from a user name and a password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: Secret::new(password.into()),
        }
    }
}

/// Named sources of rotating [`Credentials`]: a resource the issuing
/// plug-in provides at init, with every source already holding its first
/// credentials.
#[derive(Debug, Clone, Default)]
pub struct CredentialSources {
    sources: Arc<BTreeMap<String, watch::Receiver<Credentials>>>,
}

impl CredentialSources {
    /// No sources.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// These sources and one more, called `name`.
    #[must_use]
    pub fn with_source(
        mut self,
        name: impl Into<String>,
        source: watch::Receiver<Credentials>,
    ) -> Self {
        Arc::make_mut(&mut self.sources).insert(name.into(), source);
        self
    }

    /// The source called `name`: its current credentials, and a change
    /// notification on every rotation.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<watch::Receiver<Credentials>> {
        self.sources.get(name).cloned()
    }

    /// The names of the sources, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }
}

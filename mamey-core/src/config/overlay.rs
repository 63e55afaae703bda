//! [`ConfigOverlay`]: configuration fetched at build time from a store such
//! as Vault KV or Consul KV, layered above files and environment.

use std::future::Future;

use figment::value::{Dict, Map};
use figment::{Metadata, Profile, Provider};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::Config;
use crate::BoxError;

/// A layer of configuration fetched when the service builds, above files and
/// environment variables.
///
/// `fetch` gets the configuration as loaded so far, so the overlay's own
/// settings (an address, a token) can come from files or the environment.
/// Keys it returns are nested tables, e.g. `{"database": {"password": "…"}}`;
/// errors about them name the overlay as their source.
///
/// ```
/// use mamey_core::config::{Config, ConfigOverlay, figment::value::{Dict, Value}};
/// use mamey_core::BoxError;
///
/// /// Pretends to read a secret store.
/// struct StaticSecrets;
///
/// impl ConfigOverlay for StaticSecrets {
///     fn name(&self) -> &str {
///         "static-secrets"
///     }
///
///     async fn fetch(&mut self, _base: &Config) -> Result<Dict, BoxError> {
///         let mut database = Dict::new();
///         database.insert("password".into(), Value::from("s3cret"));
///         Ok(Dict::from([("database".to_owned(), Value::from(database))]))
///     }
/// }
/// ```
pub trait ConfigOverlay: Send + 'static {
    /// Names the overlay in logs and in configuration errors.
    fn name(&self) -> &str;

    /// Fetches the overlay's keys.
    fn fetch(&mut self, base: &Config) -> impl Future<Output = Result<Dict, BoxError>> + Send;
}

/// Object-safe view of a [`ConfigOverlay`].
pub(crate) trait DynOverlay: Send {
    fn name(&self) -> &str;
    fn fetch<'a>(&'a mut self, base: &'a Config) -> BoxFuture<'a, Result<Dict, BoxError>>;
}

impl<O: ConfigOverlay> DynOverlay for O {
    fn name(&self) -> &str {
        ConfigOverlay::name(self)
    }
    fn fetch<'a>(&'a mut self, base: &'a Config) -> BoxFuture<'a, Result<Dict, BoxError>> {
        ConfigOverlay::fetch(self, base).boxed()
    }
}

/// The data an overlay fetched, as a figment provider that carries its name.
pub(crate) struct OverlayData {
    pub(crate) name: String,
    pub(crate) data: Dict,
}

impl Provider for OverlayData {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("overlay `{}`", self.name))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.data.clone()))
    }
}

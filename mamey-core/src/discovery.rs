//! Finding the instances of a service by name: the [`Resolver`] contract
//! that discovery back ends implement and clients use, and the
//! [`StaticResolver`] over a fixed list.
//!
//! ```
//! use mamey_core::discovery::{Endpoint, ServiceResolver, StaticResolver};
//!
//! # async fn demo() -> Result<(), mamey_core::Error> {
//! let resolver = ServiceResolver::new(
//!     StaticResolver::new().service("orders", ["http://127.0.0.1:8081", "http://127.0.0.1:8082"]),
//! );
//! let endpoints = resolver.resolve("orders").await?;
//! assert_eq!(endpoints[0], Endpoint::new("http://127.0.0.1:8081"));
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::{Error, ErrorKind};

/// Where this instance's web API listens, as a resource: mamey-http's web
/// API provides it when it binds (so port `0` works), and discovery
/// advertises it unless configured otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpAddress(pub SocketAddr);

/// Where this instance's gRPC server listens, as a resource: mamey-http's
/// gRPC server provides it when it binds. Discovery advertises it when the
/// service has no web API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcAddress(pub SocketAddr);

/// One instance of a service: its base URL, e.g. `http://10.0.0.7:8080`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Endpoint {
    /// The base URL, without a trailing slash.
    pub url: String,
}

impl Endpoint {
    /// The endpoint at `url` (a trailing `/` is dropped).
    pub fn new(url: impl Into<String>) -> Self {
        let mut url = url.into();
        while url.ends_with('/') {
            url.pop();
        }
        Self { url }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// Resolves a service name to the endpoints that serve it now.
///
/// Implementations cache and watch as they see fit (the Consul resolver
/// keeps a blocking query open); `resolve` is called for every outgoing call
/// and should answer from memory.
pub trait Resolver: Send + Sync + 'static {
    /// The endpoints of `service`; empty when none is healthy.
    ///
    /// # Errors
    /// When the names cannot be looked up at all (e.g. the registry is down
    /// and nothing is cached).
    fn resolve<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Vec<Endpoint>, Error>>;
}

/// The service's resolver, as a resource: a discovery plug-in provides it;
/// clients use it, or their own static list when there is none. Cheap to
/// clone.
#[derive(Clone)]
pub struct ServiceResolver(Arc<dyn Resolver>);

impl fmt::Debug for ServiceResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ServiceResolver").finish_non_exhaustive()
    }
}

impl ServiceResolver {
    /// Wraps `resolver`.
    pub fn new(resolver: impl Resolver) -> Self {
        Self(Arc::new(resolver))
    }

    /// The endpoints of `service`.
    ///
    /// # Errors
    /// `unavailable` with code `discovery.no_endpoints` when there are none,
    /// or the resolver's error.
    pub async fn resolve(&self, service: &str) -> Result<Vec<Endpoint>, Error> {
        let endpoints = self.0.resolve(service).await?;
        if endpoints.is_empty() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "discovery.no_endpoints",
                format!("no endpoint of service `{service}` is known"),
            ));
        }
        Ok(endpoints)
    }
}

/// A fixed map of service names to endpoints (from configuration).
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    services: HashMap<String, Vec<Endpoint>>,
}

impl StaticResolver {
    /// No services.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `service` at `urls`.
    #[must_use]
    pub fn service<I, S>(mut self, service: impl Into<String>, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.services
            .entry(service.into())
            .or_default()
            .extend(urls.into_iter().map(Endpoint::new));
        self
    }
}

impl Resolver for StaticResolver {
    fn resolve<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Vec<Endpoint>, Error>> {
        let endpoints = self.services.get(service).cloned().unwrap_or_default();
        Box::pin(std::future::ready(Ok(endpoints)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_services_are_unavailable() {
        let resolver = ServiceResolver::new(StaticResolver::new().service("orders", ["http://a/"]));
        assert_eq!(
            resolver.resolve("orders").await.unwrap(),
            [Endpoint::new("http://a")]
        );
        let error = resolver.resolve("billing").await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert_eq!(error.code(), "discovery.no_endpoints");
    }
}

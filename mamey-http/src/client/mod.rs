//! The service client: calls other services by name, with load balancing,
//! retries under a budget, outlier ejection per endpoint (a circuit breaker
//! with exponential ejection periods), and the caller's context propagated.
//!
//! A call's path through the client:
//!
//! ```text
//! ServiceClient::get(..) ─► Call (call.rs) ─► Resilience::run (resilience.rs)
//!                                               ├─ resolve the name
//!                                               ├─ pick an endpoint (balance.rs, breaker.rs)
//!                                               ├─ HttpAttempt::send, under the timeout
//!                                               ├─ classify → the endpoint's breaker
//!                                               └─ retry under the budget, with backoff
//! ```
//!
//! `Call::exchange` returns the last attempt's answer whatever its status;
//! `Call::send` is `exchange` with an answer outside `2xx` made an error
//! (error.rs).
//!
//! gRPC channels (`crate::grpc`, feature `grpc`) go through the same runner
//! with an attempt of their own, sharing the breakers and the budget.
//!
//! Built on hyper's pooled client; the budget is tower's `TpsBudget`. The
//! rest is mamey's own: tower's retry middleware needs cloneable requests
//! and its balancer a discovery stream, more machinery than a call by name
//! needs.

mod balance;
mod breaker;
mod call;
mod config;
pub(crate) mod error;
mod plugin;
pub(crate) mod resilience;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mamey_core::discovery::ServiceResolver;
use mamey_core::{Error, ErrorKind};
use serde::de::DeserializeOwned;

pub use call::Call;
pub use config::{BreakerConfig, ClientConfig, LoadBalancer, RetryConfig};
pub use plugin::ServiceClientPlugin;

use self::resilience::Resilience;
use crate::transport::{Connector, connector};

/// Calls other services by name. Cheap to clone; clones share connections,
/// breakers and the retry budget. [`ServiceClientPlugin`] provides one as a
/// resource; handlers take it as `Res<ServiceClient>`.
///
/// ```no_run
/// # async fn demo(client: mamey_http::ServiceClient) -> Result<(), mamey_core::Error> {
/// #[derive(serde::Deserialize)]
/// struct Price { cents: u64 }
///
/// let price: Price = client.get("pricing", "/prices/42").send().await?.json()?;
/// let same: Price = client.request(http::Method::GET, "http://pricing/prices/42")?.send().await?.json()?;
/// // Any status as an answer, for a proxy:
/// let answer = client.get("pricing", "/prices/43").exchange().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServiceClient {
    resilience: Arc<Resilience>,
    http: Client<Connector, Full<Bytes>>,
}

impl fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceClient")
            .field("config", self.resilience.config())
            .finish_non_exhaustive()
    }
}

impl ServiceClient {
    /// A client with `config`, resolving names with `resolver`.
    ///
    /// # Errors
    /// When `config` is inconsistent (e.g. `retry.max_attempts` is 0).
    pub fn new(config: ClientConfig, resolver: ServiceResolver) -> Result<Self, Error> {
        let resilience = Resilience::new(config, resolver)?;
        let config = resilience.config();
        let connector =
            connector(config.connect_timeout, config.ca_file.as_deref()).map_err(|e| {
                Error::invalid_input("config.invalid", format!("http_client.ca_file: {e}"))
            })?;
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Self {
            resilience: Arc::new(resilience),
            http,
        })
    }

    /// A call of `method` on `path` of `service`.
    pub fn call(&self, service: &str, method: Method, path: &str) -> Call {
        Call::new(self.clone(), service, method, path)
    }

    /// A call to `http://{service}/{path}` by URL: the host names the service.
    ///
    /// # Errors
    /// `invalid_input` when `url` has no host.
    pub fn request(&self, method: Method, url: &str) -> Result<Call, Error> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| Error::new(ErrorKind::Internal, "client.url", format!("`{url}`: {e}")))?;
        let service = uri.host().ok_or_else(|| {
            Error::new(
                ErrorKind::Internal,
                "client.url",
                format!("`{url}` names no service"),
            )
        })?;
        let path = uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        Ok(self.call(service, method, path))
    }

    /// `GET path` of `service`.
    pub fn get(&self, service: &str, path: &str) -> Call {
        self.call(service, Method::GET, path)
    }

    /// `POST path` of `service`.
    pub fn post(&self, service: &str, path: &str) -> Call {
        self.call(service, Method::POST, path)
    }

    /// `PUT path` of `service`.
    pub fn put(&self, service: &str, path: &str) -> Call {
        self.call(service, Method::PUT, path)
    }

    /// `DELETE path` of `service`.
    pub fn delete(&self, service: &str, path: &str) -> Call {
        self.call(service, Method::DELETE, path)
    }

    /// The runner, configuration, breakers and budget every call of this
    /// client shares, its gRPC channels' included.
    pub(crate) fn resilience(&self) -> &Arc<Resilience> {
        &self.resilience
    }

    fn http(&self) -> &Client<Connector, Full<Bytes>> {
        &self.http
    }
}

/// Writes the current context's trace and ids, and the caller's token when
/// asked, into `headers`: for HTTP calls and gRPC channels alike.
pub(crate) fn propagate(headers: &mut HeaderMap, forward_authorization: bool) {
    mamey_observability::propagation::inject(headers);
    if forward_authorization
        && !headers.contains_key(header::AUTHORIZATION)
        && let Some(token) = crate::auth::caller_token()
        && let Ok(mut value) = HeaderValue::try_from(format!("Bearer {token}"))
    {
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }
}

/// An answer, read whole (up to `http_client.max_response_bytes`): a
/// `2xx` one from [`Call::send`], any status from [`Call::exchange`].
#[derive(Debug, Clone)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The headers, as the callee sent them (hop-by-hop ones included).
    pub headers: HeaderMap,
    /// The body, as the callee sent it.
    pub body: Bytes,
}

impl Response {
    /// The body as JSON.
    ///
    /// # Errors
    /// `internal` with code `client.invalid_response` when it does not fit `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                "client.invalid_response",
                format!("the answer does not fit the expected type: {e}"),
            )
        })
    }
}

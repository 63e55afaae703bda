//! The service client: calls other services by name, with load balancing,
//! retries under a budget, outlier ejection per endpoint (a circuit breaker
//! with exponential ejection periods), and the caller's context propagated.
//!
//! Built on hyper's pooled client and a small retry / breaker / balancer of
//! mamey's own (tower's retry needs cloneable requests and its balancer a
//! discovery stream; both are more machinery than a call by name needs).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mamey_core::config::ConfigSection;
use mamey_core::discovery::{Endpoint, Resolver, ServiceResolver, StaticResolver};
use mamey_core::{BoxError, Error, ErrorKind, InitContext, Plugin};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::problem::Problem;
use crate::transport::{Connector, connector};

/// The `http_client` section.
///
/// ```toml
/// [http_client]
/// timeout = "10s"
/// load_balancer = "p2c"
/// services = { orders = ["http://127.0.0.1:8081", "http://127.0.0.1:8082"] }
/// retry = { max_attempts = 3, initial_backoff = "100ms", max_backoff = "2s", budget_ratio = 0.2, budget_min_per_second = 10.0 }
/// breaker = { failure_threshold = 5, open_for = "10s", max_open_for = "5m" }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Longest one attempt may take (connect, send, read the whole
    /// response). Default: `10s`.
    #[serde(with = "mamey_core::config::duration")]
    pub timeout: Duration,
    /// Longest a connection may take to open. Default: `2s`.
    #[serde(with = "mamey_core::config::duration")]
    pub connect_timeout: Duration,
    /// Largest response body read, in bytes. Default: `10485760` (10 MiB).
    pub max_response_bytes: usize,
    /// `"p2c"` (power of two choices by requests in flight) or
    /// `"round_robin"`. Default: `"p2c"`.
    pub load_balancer: LoadBalancer,
    /// Send the caller's bearer token on to the services called. Default:
    /// `false`.
    pub forward_authorization: bool,
    /// A PEM file of certificates to trust for `https://` endpoints besides
    /// Mozilla's roots (feature `tls`). Default: none.
    pub ca_file: Option<String>,
    /// Endpoints by service name. Without a discovery plug-in these are the
    /// only names known; with one (a [`ServiceResolver`] resource), a name
    /// listed here with at least one URL is pinned to those URLs and every
    /// other name is resolved by discovery. Default: none.
    pub services: HashMap<String, Vec<String>>,
    /// Retries.
    pub retry: RetryConfig,
    /// Outlier ejection: the circuit breaker of each endpoint.
    pub breaker: BreakerConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            max_response_bytes: 10 * 1024 * 1024,
            load_balancer: LoadBalancer::P2c,
            forward_authorization: false,
            ca_file: None,
            services: HashMap::new(),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
        }
    }
}

impl ConfigSection for ClientConfig {
    const KEY: &'static str = "http_client";
}

/// How a call picks among a service's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancer {
    /// Two endpoints at random, the one with fewer requests in flight.
    P2c,
    /// Each endpoint in turn.
    RoundRobin,
}

/// `http_client.retry`: which failures are tried again, how often, and how
/// much extra load retries may add.
///
/// Only idempotent methods (`GET`, `HEAD`, `PUT`, `DELETE`, `OPTIONS`) are
/// retried unless a call says otherwise, and only after a connection error,
/// a timeout, `429`, `502`, `503` or `504`. Retries draw from a budget:
/// every call adds `budget_ratio` tokens, the budget also fills at
/// `budget_min_per_second`, and a retry takes one token — so when a
/// dependency is down, retries add at most that share of load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per call, the first included; `1` turns retries off.
    /// Default: `3`.
    pub max_attempts: u32,
    /// Backoff before the first retry, doubling after each, with full
    /// jitter. Default: `100ms`.
    #[serde(with = "mamey_core::config::duration")]
    pub initial_backoff: Duration,
    /// The longest backoff. Default: `2s`.
    #[serde(with = "mamey_core::config::duration")]
    pub max_backoff: Duration,
    /// Retry tokens each call adds. Default: `0.2`.
    pub budget_ratio: f64,
    /// Retry tokens added per second regardless of traffic. Default: `10`.
    pub budget_min_per_second: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            budget_ratio: 0.2,
            budget_min_per_second: 10.0,
        }
    }
}

/// `http_client.breaker`: outlier ejection, when an endpoint is taken out of
/// rotation and for how long.
///
/// After `failure_threshold` failures in a row (connection errors,
/// timeouts, `5xx`) the endpoint is ejected (its circuit opens): calls skip
/// it, or fail at once with `client.circuit_open` when every endpoint is
/// ejected. After the ejection period, `open_for` at first, one call is let
/// through (half-open). Its failure ejects the endpoint again for twice the
/// previous period, up to `max_open_for`; its success, or any success,
/// returns the endpoint to rotation and resets the period to `open_for`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Failures in a row that eject the endpoint. Default: `5`.
    pub failure_threshold: u32,
    /// How long the first ejection lasts before a probe. Default: `10s`.
    #[serde(with = "mamey_core::config::duration")]
    pub open_for: Duration,
    /// The longest ejection: each failed probe doubles the period up to
    /// this (or up to `open_for`, if that is longer). Default: `5m`.
    #[serde(with = "mamey_core::config::duration")]
    pub max_open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(300),
        }
    }
}

/// The client plug-in: reads `http_client` and provides the
/// [`ServiceClient`] resource.
///
/// Names are resolved with the [`ServiceResolver`] resource when a
/// discovery plug-in added before it (or the application, with
/// `ServiceBuilder::resource`) provides one, else with the static
/// `http_client.services`. With both, the names listed in
/// `http_client.services` (with at least one URL) keep their configured
/// URLs, and every other name goes to discovery.
#[derive(Debug, Default)]
pub struct ServiceClientPlugin;

impl ServiceClientPlugin {
    /// The plug-in.
    #[must_use]
    pub fn new() -> Self {
        Self
    }
}

impl Plugin for ServiceClientPlugin {
    fn name(&self) -> &'static str {
        "http-client"
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let config: ClientConfig = ctx.section()?;
        let mut pinned = StaticResolver::new();
        for (service, urls) in &config.services {
            pinned = pinned.service(service.clone(), urls.iter().cloned());
        }
        let resolver = match ctx.resource::<ServiceResolver>() {
            Ok(discovered) => ServiceResolver::new(PinnedResolver { pinned, discovered }),
            Err(_) => ServiceResolver::new(pinned),
        };
        ctx.provide(ServiceClient::new(config, resolver)?)?;
        Ok(())
    }
}

/// The names of `http_client.services` pinned to their configured URLs,
/// every other name resolved by discovery.
#[derive(Debug)]
struct PinnedResolver {
    pinned: StaticResolver,
    discovered: ServiceResolver,
}

impl Resolver for PinnedResolver {
    fn resolve<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Vec<Endpoint>, Error>> {
        Box::pin(async move {
            // A static resolver answers at once, and with nothing for a name
            // it does not list.
            let pinned = self.pinned.resolve(service).await?;
            if pinned.is_empty() {
                self.discovered.resolve(service).await
            } else {
                Ok(pinned)
            }
        })
    }
}

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
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServiceClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: ClientConfig,
    resolver: ServiceResolver,
    http: Client<Connector, Full<Bytes>>,
    endpoints: RwLock<HashMap<Endpoint, Arc<EndpointState>>>,
    budget: RetryBudget,
    turn: AtomicUsize,
}

impl ServiceClient {
    /// A client with `config`, resolving names with `resolver`.
    ///
    /// # Errors
    /// When `config` is inconsistent (e.g. `retry.max_attempts` is 0).
    pub fn new(config: ClientConfig, resolver: ServiceResolver) -> Result<Self, Error> {
        if config.retry.max_attempts == 0 {
            return Err(Error::invalid_input(
                "config.invalid",
                "http_client.retry.max_attempts: expected at least 1",
            ));
        }
        let connector =
            connector(config.connect_timeout, config.ca_file.as_deref()).map_err(|e| {
                Error::invalid_input("config.invalid", format!("http_client.ca_file: {e}"))
            })?;
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let budget = RetryBudget::new(
            config.retry.budget_ratio,
            config.retry.budget_min_per_second,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                resolver,
                http,
                endpoints: RwLock::new(HashMap::new()),
                budget,
                turn: AtomicUsize::new(0),
            }),
        })
    }

    /// A call of `method` on `path` of `service`.
    pub fn call(&self, service: &str, method: Method, path: &str) -> Call {
        Call {
            client: self.clone(),
            service: service.to_owned(),
            method,
            path: path.to_owned(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            body_error: None,
            retry: None,
            timeout: None,
        }
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

    #[cfg(feature = "grpc")]
    pub(crate) fn resolver(&self) -> &ServiceResolver {
        &self.inner.resolver
    }

    #[cfg(feature = "grpc")]
    pub(crate) fn timeout(&self) -> Duration {
        self.inner.config.timeout
    }

    #[cfg(feature = "grpc")]
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.inner.config.connect_timeout
    }

    #[cfg(feature = "grpc")]
    pub(crate) fn forwards_authorization(&self) -> bool {
        self.inner.config.forward_authorization
    }

    #[cfg(feature = "grpc")]
    pub(crate) fn breaker(&self) -> &BreakerConfig {
        &self.inner.config.breaker
    }

    /// Runs `attempt` again while `retryable` says so and the retry config
    /// and budget allow, with backoff between attempts.
    #[cfg(feature = "grpc")]
    pub(crate) async fn with_retries<T, E, F, Fut>(
        &self,
        mut attempt: F,
        retryable: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let config = &self.inner.config.retry;
        self.inner.budget.deposit();
        let mut tries = 1;
        loop {
            match attempt().await {
                Err(e)
                    if retryable(&e)
                        && tries < config.max_attempts
                        && self.inner.budget.withdraw() =>
                {
                    tokio::time::sleep(backoff(config, tries)).await;
                    tries += 1;
                }
                outcome => return outcome,
            }
        }
    }

    fn state(&self, endpoint: &Endpoint) -> Arc<EndpointState> {
        if let Ok(states) = self.inner.endpoints.read()
            && let Some(state) = states.get(endpoint)
        {
            return Arc::clone(state);
        }
        let mut states = self
            .inner
            .endpoints
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Endpoints come and go with discovery: forget the ones no call has
        // used for a while, keeping the map about as large as the fleet.
        if states.len() >= FORGET_ABOVE {
            states.retain(|_, state| {
                Arc::strong_count(state) > 1 || state.used.lock().elapsed() < FORGET_AFTER
            });
        }
        Arc::clone(
            states
                .entry(endpoint.clone())
                .or_insert_with(|| Arc::new(EndpointState::new(endpoint.clone()))),
        )
    }

    /// Picks an endpoint that is not ejected (or is due a probe), and
    /// whether the call is its half-open probe.
    pub(crate) fn pick(
        &self,
        endpoints: &[Endpoint],
    ) -> Option<(Endpoint, Arc<EndpointState>, bool)> {
        let mut states: Vec<(usize, Arc<EndpointState>)> = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (i, self.state(e)))
            .filter(|(_, s)| s.allows())
            .collect();
        loop {
            let chosen = match (states.len(), self.inner.config.load_balancer) {
                (0, _) => return None,
                (1, _) => 0,
                (n, LoadBalancer::RoundRobin) => {
                    self.inner.turn.fetch_add(1, Ordering::Relaxed) % n
                }
                (n, LoadBalancer::P2c) => {
                    let a = fastrand::usize(..n);
                    let mut b = fastrand::usize(..n - 1);
                    if b >= a {
                        b += 1;
                    }
                    if states[a].1.in_flight() <= states[b].1.in_flight() {
                        a
                    } else {
                        b
                    }
                }
            };
            let (index, state) = states.swap_remove(chosen);
            // Another call may have taken the probe since `allows`: then
            // pick among the others.
            if let Some(probe) = state.admit() {
                return Some((endpoints[index].clone(), state, probe));
            }
        }
    }
}

/// One call being prepared; [`send`](Call::send) it.
#[derive(Debug)]
#[must_use]
pub struct Call {
    client: ServiceClient,
    service: String,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    /// Why the body set with [`json`](Call::json) could not be made: the
    /// call fails with it instead of sending a body other than the one given.
    body_error: Option<Error>,
    retry: Option<bool>,
    timeout: Option<Duration>,
}

impl Call {
    /// Sets a header; an invalid name or value is not sent, and logged.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(name), Ok(mut value)) => {
                // Kept out of `Debug` output.
                value.set_sensitive(name == header::AUTHORIZATION);
                self.headers.insert(name, value);
            }
            _ => tracing::warn!(header = name, "invalid header not sent"),
        }
        self
    }

    /// Sends `body` as JSON.
    ///
    /// A body that does not serialize fails the call:
    /// [`send`](Call::send) returns an `internal` error with code
    /// `client.invalid_body` and makes no request.
    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Self {
        match serde_json::to_vec(body) {
            Ok(bytes) => {
                self.body = Bytes::from(bytes);
                self.body_error = None;
                self.headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            Err(e) => {
                self.body = Bytes::new();
                self.body_error = Some(Error::new(
                    ErrorKind::Internal,
                    "client.invalid_body",
                    format!(
                        "the request body for `{}` does not serialize as JSON: {e}",
                        self.service
                    ),
                ));
            }
        }
        self
    }

    /// Retries this call on retryable failures even if its method is not
    /// idempotent (e.g. a `POST` with an idempotency key), or never.
    pub fn retry(mut self, retry: bool) -> Self {
        self.retry = Some(retry);
        self
    }

    /// The timeout of each attempt, instead of `http_client.timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the call: resolves the service, picks an endpoint, retries as
    /// configured.
    ///
    /// # Errors
    /// A `4xx`/`5xx` answer as the [`Error`] its problem document describes
    /// (kind from the status, code and fields from the body);
    /// `unavailable` for connection errors (`client.unreachable`), timeouts
    /// (`client.timeout`), open circuits (`client.circuit_open`) and unknown
    /// services (`discovery.no_endpoints`); `internal` with code
    /// `client.invalid_body`, before any request, when the body given to
    /// [`json`](Call::json) did not serialize.
    pub async fn send(mut self) -> Result<Response, Error> {
        if let Some(error) = self.body_error.take() {
            return Err(error);
        }
        // `@host/…` after the endpoint's URL would name another host. A
        // path is the service's own making (see `url_path`), so a bad one is
        // the service's fault, not its caller's: internal, and its text stays
        // in the logs.
        if !self.path.starts_with('/') {
            return Err(Error::new(
                ErrorKind::Internal,
                "client.url",
                format!("the path `{}` does not start with `/`", self.path),
            ));
        }
        let inner = Arc::clone(&self.client.inner);
        let config = &inner.config;
        let started = Instant::now();
        let idempotent = matches!(
            self.method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        let retryable_call = self.retry.unwrap_or(idempotent);
        inner.budget.deposit();
        let mut headers = self.headers.clone();
        propagate(&mut headers, config.forward_authorization);
        let mut attempt = 1;
        let result = loop {
            let outcome = self.attempt(&headers).await;
            let retry = match &outcome {
                Ok(_) => false,
                Err(failure) => failure.retryable,
            };
            if !retry
                || !retryable_call
                || attempt >= config.retry.max_attempts
                || !inner.budget.withdraw()
            {
                break outcome;
            }
            let backoff = backoff(&config.retry, attempt);
            tracing::debug!(service = %self.service, attempt, ?backoff, "retrying");
            tokio::time::sleep(backoff).await;
            attempt += 1;
        };
        let status = match &result {
            Ok(response) => Some(response.status.as_u16()),
            Err(failure) => failure.status,
        };
        mamey_observability::metrics::record_http_client(
            &self.service,
            self.method.as_str(),
            status,
            started.elapsed(),
        );
        result.map_err(|failure| failure.error)
    }

    async fn attempt(&self, headers: &HeaderMap) -> Result<Response, Failure> {
        let inner = &self.client.inner;
        let endpoints = inner
            .resolver
            .resolve(&self.service)
            .await
            .map_err(Failure::fatal)?;
        let Some((endpoint, state, probe)) = self.client.pick(&endpoints) else {
            return Err(Failure::fatal(Error::new(
                ErrorKind::Unavailable,
                "client.circuit_open",
                format!(
                    "every endpoint of `{}` is failing; not calling",
                    self.service
                ),
            )));
        };
        // From here the call is in flight: an early return still releases a
        // half-open probe.
        let in_flight = state.start(probe);
        let url = format!("{}{}", endpoint.url, self.path);
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(&url)
            .body(Full::new(self.body.clone()))
            .map_err(|e| {
                // Named by service and path: the endpoint's address is
                // internal.
                Failure::fatal(Error::new(
                    ErrorKind::Internal,
                    "client.url",
                    format!(
                        "the path `{}` of a call to `{}` is not a valid URI ({e}); build paths with `url_path`",
                        self.path, self.service
                    ),
                ))
            })?;
        *request.headers_mut() = headers.clone();
        let timeout = self.timeout.unwrap_or(inner.config.timeout);
        let limit = inner.config.max_response_bytes;
        let exchange = async {
            let response = inner.http.request(request).await.map_err(|e| {
                unavailable(
                    "client.unreachable",
                    format!("calling `{}` at {endpoint}: {e}", self.service),
                )
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, limit).collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    // The same answer would come again: neither retried nor
                    // the endpoint's fault.
                    Failure::fatal(Error::internal(format!(
                        "the answer of `{}` is larger than `http_client.max_response_bytes` ({limit})",
                        self.service
                    )))
                } else {
                    unavailable(
                        "client.unreachable",
                        format!("reading the answer of `{}`: {e}", self.service),
                    )
                }
            })?;
            Ok::<_, Failure>(Response {
                status: parts.status,
                headers: parts.headers,
                body: body.to_bytes(),
            })
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(unavailable(
                "client.timeout",
                format!(
                    "`{}` did not answer within {} ms",
                    self.service,
                    timeout.as_millis()
                ),
            )),
        };
        in_flight.settled();
        let service = Some(self.service.as_str());
        let breaker = &inner.config.breaker;
        let response = match result {
            Ok(response) if response.status.is_success() => {
                state.record_success(service);
                return Ok(response);
            }
            Ok(response) => response,
            Err(failure) if failure.retryable => {
                state.record_failure(breaker, service);
                return Err(failure);
            }
            // The endpoint answered (too much, say): not its failure.
            Err(failure) => {
                state.record_success(service);
                return Err(failure);
            }
        };
        if response.status.is_server_error() {
            state.record_failure(breaker, service);
        } else {
            state.record_success(service);
        }
        Err(Failure {
            retryable: matches!(response.status.as_u16(), 429 | 502 | 503 | 504),
            status: Some(response.status.as_u16()),
            error: error_of(&self.service, &response),
        })
    }
}

/// A failed attempt.
struct Failure {
    error: Error,
    retryable: bool,
    status: Option<u16>,
}

impl Failure {
    fn fatal(error: Error) -> Self {
        Self {
            error,
            retryable: false,
            status: None,
        }
    }
}

fn unavailable(code: &'static str, message: String) -> Failure {
    Failure {
        error: Error::new(ErrorKind::Unavailable, code, message),
        retryable: true,
        status: None,
    }
}

/// The error an answer describes: its problem document's code and fields,
/// its status's kind.
fn error_of(service: &str, response: &Response) -> Error {
    let kind = ErrorKind::from_http_status(response.status.as_u16());
    match serde_json::from_slice::<Problem>(&response.body) {
        Ok(problem) => {
            let mut error = Error::new(
                kind,
                problem.code,
                format!(
                    "`{service}` answered {}: {}",
                    response.status, problem.detail
                ),
            );
            for field in problem.errors {
                error = error.with_field(field.field, field.code, field.message);
            }
            error
        }
        Err(_) => Error::new(
            kind,
            "client.status",
            format!("`{service}` answered {}", response.status),
        ),
    }
}

/// Full jitter over an exponential backoff.
fn backoff(config: &RetryConfig, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    let ceiling = config
        .initial_backoff
        .saturating_mul(1 << exponent)
        .min(config.max_backoff);
    ceiling.mul_f64(fastrand::f64())
}

/// Writes the current context's trace and ids, and the caller's token when
/// asked, into `headers`.
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

/// An answer with a `2xx` status, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
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

/// Outlier ejection and load of one endpoint.
#[derive(Debug)]
pub(crate) struct EndpointState {
    /// The endpoint, named in the logs of its ejections (never in errors:
    /// its address is internal).
    endpoint: Endpoint,
    in_flight: AtomicUsize,
    breaker: Mutex<Breaker>,
    /// When a call last went to the endpoint.
    used: LastUsed,
}

/// Endpoints known before unused ones are forgotten.
const FORGET_ABOVE: usize = 256;

/// How long an endpoint is remembered after its last call.
const FORGET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct LastUsed(Mutex<Instant>);

impl Default for LastUsed {
    fn default() -> Self {
        Self(Mutex::new(Instant::now()))
    }
}

impl LastUsed {
    fn lock(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The circuit of one endpoint: closed, ejected for a period, or half-open
/// with its one probe out. The time is passed in, so the logic does not
/// depend on a clock.
#[derive(Debug, Default)]
struct Breaker {
    /// Failures in a row.
    failures: u32,
    /// The current ejection, while the endpoint is out of rotation.
    ejection: Option<Ejection>,
    /// Whether the half-open probe is out.
    probing: bool,
}

/// One ejection: since when, and for how long before a probe.
#[derive(Debug, Clone, Copy)]
struct Ejection {
    since: Instant,
    period: Duration,
}

impl Breaker {
    /// Closed, or ejected long enough for one probe that is not yet out.
    fn allows(&self, now: Instant) -> bool {
        match self.ejection {
            None => true,
            Some(ejection) => {
                !self.probing && now.saturating_duration_since(ejection.since) >= ejection.period
            }
        }
    }

    /// Lets a call through: `Some(false)` when closed, `Some(true)` when it
    /// is the half-open probe (now marked as out), `None` when ejected or a
    /// probe is already out.
    fn admit(&mut self, now: Instant) -> Option<bool> {
        if self.ejection.is_none() {
            Some(false)
        } else if self.allows(now) {
            self.probing = true;
            Some(true)
        } else {
            None
        }
    }

    /// A success closes the circuit and resets the period to `open_for`.
    /// Returns whether the endpoint was ejected.
    fn succeed(&mut self) -> bool {
        let was_ejected = self.ejection.is_some();
        *self = Self::default();
        was_ejected
    }

    /// A failure: at the threshold it ejects the endpoint for `open_for`; a
    /// failed probe ejects it again for twice the last period, up to
    /// `max_open_for`. Returns the period of the ejection it starts.
    fn fail(&mut self, config: &BreakerConfig, now: Instant) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        let period = match self.ejection {
            // While a probe is out, any failure counts as the probe's: a
            // call sent before the ejection that fails this late is as bad
            // a sign.
            Some(ejection) if self.probing => ejection
                .period
                .saturating_mul(2)
                .min(config.max_open_for.max(config.open_for)),
            // A call sent before the ejection: the ejection stands as it is.
            Some(_) => return None,
            None if self.failures >= config.failure_threshold => config.open_for,
            None => return None,
        };
        self.ejection = Some(Ejection { since: now, period });
        self.probing = false;
        Some(period)
    }
}

impl EndpointState {
    fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            in_flight: AtomicUsize::new(0),
            breaker: Mutex::new(Breaker::default()),
            used: LastUsed::default(),
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Closed, or ejected long enough for one probe that is not yet out.
    fn allows(&self) -> bool {
        self.lock().allows(Instant::now())
    }

    /// Lets a call through: `Some(false)` when closed, `Some(true)` when it
    /// is the half-open probe (marked as out), `None` when ejected or a
    /// probe is already out. Checked and marked under one lock.
    fn admit(&self) -> Option<bool> {
        self.lock().admit(Instant::now())
    }

    /// A call (to `service`, when known) succeeded: the endpoint returns to
    /// rotation if it was ejected.
    fn record_success(&self, service: Option<&str>) {
        if self.lock().succeed() {
            tracing::info!(endpoint = %self.endpoint, service, "endpoint returned to rotation");
        }
    }

    /// A call (to `service`, when known) failed: the endpoint may be ejected.
    fn record_failure(&self, config: &BreakerConfig, service: Option<&str>) {
        let (ejected_for, failures) = {
            let mut breaker = self.lock();
            (breaker.fail(config, Instant::now()), breaker.failures)
        };
        if let Some(ejected_for) = ejected_for {
            tracing::warn!(
                endpoint = %self.endpoint,
                service,
                failures,
                ?ejected_for,
                "endpoint ejected"
            );
        }
    }

    /// A call of a gRPC channel succeeded.
    #[cfg(feature = "grpc")]
    pub(crate) fn succeeded(&self) {
        self.record_success(None);
    }

    /// A call of a gRPC channel failed.
    #[cfg(feature = "grpc")]
    pub(crate) fn failed(&self, config: &BreakerConfig) {
        self.record_failure(config, None);
    }

    pub(crate) fn start(&self, probe: bool) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        *self.used.lock() = Instant::now();
        InFlight {
            state: self,
            probe,
            settled: false,
        }
    }
}

/// One call in flight to an endpoint. Dropped unsettled (the caller gave up
/// on the call), a half-open probe is released so that another may go.
pub(crate) struct InFlight<'a> {
    state: &'a EndpointState,
    probe: bool,
    settled: bool,
}

impl InFlight<'_> {
    pub(crate) fn settled(mut self) {
        self.settled = true;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.probe && !self.settled {
            self.state.lock().probing = false;
        }
    }
}

/// Tokens for retries: calls add `ratio` each, time adds `per_second`, a
/// retry takes one.
struct RetryBudget {
    ratio: f64,
    per_second: f64,
    cap: f64,
    state: Mutex<(f64, Instant)>,
}

impl RetryBudget {
    fn new(ratio: f64, per_second: f64) -> Self {
        let ratio = ratio.max(0.0);
        let per_second = per_second.max(0.0);
        Self {
            ratio,
            per_second,
            // Enough for a burst, not enough to store up a storm.
            cap: (10.0 * per_second).max(100.0 * ratio).max(1.0),
            state: Mutex::new((per_second, Instant::now())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (f64, Instant)> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn deposit(&self) {
        let mut state = self.lock();
        state.0 = (state.0 + self.ratio).min(self.cap);
    }

    fn withdraw(&self) -> bool {
        let mut state = self.lock();
        let now = Instant::now();
        let refill = now.duration_since(state.1).as_secs_f64() * self.per_second;
        *state = ((state.0 + refill).min(self.cap), now);
        if state.0 >= 1.0 {
            state.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.ratio)
            .field("per_second", &self.per_second)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_one_retry_per_five_calls_by_ratio() {
        let budget = RetryBudget::new(0.2, 0.0);
        let mut retries = 0;
        for _ in 0..50 {
            budget.deposit();
            if budget.withdraw() {
                retries += 1;
            }
        }
        assert_eq!(retries, 10);
    }

    #[test]
    fn backoff_grows_to_its_ceiling() {
        let config = RetryConfig::default();
        for attempt in 1..10 {
            let ceiling = config
                .initial_backoff
                .saturating_mul(1 << (attempt - 1))
                .min(config.max_backoff);
            assert!(backoff(&config, attempt) <= ceiling);
        }
    }

    fn breaker(failure_threshold: u32, open_for: u64, max_open_for: u64) -> BreakerConfig {
        BreakerConfig {
            failure_threshold,
            open_for: Duration::from_secs(open_for),
            max_open_for: Duration::from_secs(max_open_for),
        }
    }

    #[test]
    fn the_breaker_ejects_after_the_threshold_and_lets_one_probe_through() {
        let config = breaker(2, 10, 300);
        let t0 = Instant::now();
        let mut circuit = Breaker::default();
        assert_eq!(circuit.fail(&config, t0), None);
        assert_eq!(circuit.admit(t0), Some(false), "closed below the threshold");
        assert_eq!(circuit.fail(&config, t0), Some(Duration::from_secs(10)));
        assert_eq!(circuit.admit(t0 + Duration::from_secs(9)), None, "ejected");
        let due = t0 + Duration::from_secs(10);
        assert!(circuit.allows(due), "the period elapsed: a probe may go");
        assert_eq!(circuit.admit(due), Some(true));
        assert!(!circuit.allows(due), "only one probe at a time");
        assert_eq!(circuit.admit(due), None);
        assert!(
            circuit.succeed(),
            "the probe's success returns the endpoint"
        );
        assert_eq!(circuit.admit(due), Some(false));
        assert!(!circuit.succeed(), "already in rotation");
    }

    #[test]
    fn a_failed_probe_doubles_the_ejection() {
        let config = breaker(1, 10, 60);
        let mut now = Instant::now();
        let mut periods = Vec::new();
        let mut circuit = Breaker::default();
        let mut period = circuit.fail(&config, now);
        while let Some(ejected_for) = period {
            periods.push(ejected_for.as_secs());
            if periods.len() == 6 {
                break;
            }
            assert_eq!(
                circuit.admit(now + ejected_for - Duration::from_millis(1)),
                None,
                "no probe before the period ends"
            );
            now += ejected_for;
            assert_eq!(circuit.admit(now), Some(true), "the probe goes");
            period = circuit.fail(&config, now);
        }
        assert_eq!(periods, [10, 20, 40, 60, 60, 60], "doubling, capped");

        // A late failure of a call sent before the ejection changes nothing.
        assert_eq!(circuit.fail(&config, now), None);
        assert_eq!(circuit.admit(now + Duration::from_secs(60)), Some(true));

        // A success returns the endpoint and resets the period.
        assert!(circuit.succeed());
        assert_eq!(circuit.fail(&config, now), Some(Duration::from_secs(10)));
    }

    #[test]
    fn max_open_for_below_open_for_keeps_open_for() {
        let config = breaker(1, 10, 5);
        let now = Instant::now();
        let mut circuit = Breaker::default();
        assert_eq!(circuit.fail(&config, now), Some(Duration::from_secs(10)));
        let due = now + Duration::from_secs(10);
        assert_eq!(circuit.admit(due), Some(true));
        assert_eq!(circuit.fail(&config, due), Some(Duration::from_secs(10)));
    }

    #[test]
    fn an_abandoned_probe_is_released() {
        let config = BreakerConfig {
            failure_threshold: 1,
            open_for: Duration::ZERO,
            ..BreakerConfig::default()
        };
        let state = EndpointState::new(Endpoint::new("http://127.0.0.1:1"));
        state.record_failure(&config, Some("orders"));
        assert_eq!(state.admit(), Some(true));
        assert_eq!(state.admit(), None, "only one probe at a time");
        drop(state.start(true));
        assert_eq!(state.admit(), Some(true), "an abandoned probe is released");
        state.record_success(Some("orders"));
        assert_eq!(state.admit(), Some(false));
    }
}

//! gRPC (feature `grpc`): tonic services on a port of their own, with the
//! standard `grpc.health.v1` service fed by the service's health checks,
//! reflection, and the same per-call work as the web API — context
//! extraction, a server span, RED metrics, bearer authentication — plus
//! channels to other services over the resolver.
//!
//! gRPC is served on `grpc.address`, not multiplexed with the web API: the
//! web API answers errors with problem+json and gRPC with `grpc-status`
//! trailers, and a port each keeps both right (and lets a mesh or load
//! balancer treat them apart).
//!
//! ```no_run
//! use mamey_core::Service;
//! use mamey_http::grpc::GrpcServer;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Any tonic service: a generated `GreeterServer::new(MyGreeter)`, or here
//! // the reflection service.
//! let service = tonic_reflection::server::Builder::configure().build_v1()?;
//! Service::builder("greeter")
//!     .plugin(GrpcServer::new().service(service))
//!     .build()
//!     .await?
//!     .run()
//!     .await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::IntoResponse;
use bytes::Bytes;

use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use mamey_core::config::{ConfigError, ConfigSection};
use mamey_core::discovery::Endpoint;
use mamey_core::health::Probe;
use mamey_core::{BoxError, Error, ErrorKind, InitContext, Plugin, StartContext};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument;

use crate::auth::{Auth, Authenticator, Policies};
use crate::client::ServiceClient;
use crate::config::{JwtConfig, ServerTlsConfig};
use crate::health::SharedHealth;
use crate::tls::Alpn;

/// The `grpc` section.
///
/// ```toml
/// [grpc]
/// address = "0.0.0.0:9090"
/// request_timeout = "30s"
/// reflection = true
/// jwt = { issuer = "identity", jwks_url = "http://identity/.well-known/jwks.json" }
/// tls = { cert_file = "/etc/orders/tls.crt", key_file = "/etc/orders/tls.key" }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Where to listen, `host:port`; port `0` picks a free one (the
    /// [`GrpcAddress`] resource). Default: `"0.0.0.0:9090"`.
    pub address: String,
    /// Longest a call may take before it ends with `DEADLINE_EXCEEDED`.
    /// Default: `30s`.
    #[serde(with = "mamey_core::config::duration")]
    pub request_timeout: Duration,
    /// Serve `grpc.reflection.v1` for the registered descriptor sets.
    /// Default: `true`.
    pub reflection: bool,
    /// How often a `Watch` on the health service re-checks. Default: `1s`.
    #[serde(with = "mamey_core::config::duration")]
    pub health_interval: Duration,
    /// Bearer-token validation, as `http.jwt`; off unless a key is set.
    pub jwt: JwtConfig,
    /// Serving TLS, as `http.tls` (feature `tls`; ALPN offers `h2` only);
    /// off unless a certificate and its key are set.
    pub tls: ServerTlsConfig,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            address: "0.0.0.0:9090".to_owned(),
            request_timeout: Duration::from_secs(30),
            reflection: true,
            health_interval: Duration::from_secs(1),
            jwt: JwtConfig::default(),
            tls: ServerTlsConfig::default(),
        }
    }
}

impl ConfigSection for GrpcConfig {
    const KEY: &'static str = "grpc";
}

pub use mamey_core::discovery::GrpcAddress;

/// The gRPC plug-in: hosts tonic services with mamey's per-call work.
pub struct GrpcServer {
    routes: Routes,
    names: Vec<&'static str>,
    descriptors: Vec<&'static [u8]>,
    auth: Auth,
    policies: Policies,
    listener: Option<TcpListener>,
    app: Option<axum::Router>,
    tls: Option<crate::tls::ServerTls>,
    stopping: CancellationToken,
}

impl fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcServer")
            .field("services", &self.names)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Default for GrpcServer {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcServer {
    /// No services yet (the health service is always added).
    #[must_use]
    pub fn new() -> Self {
        Self {
            routes: Routes::default(),
            names: Vec::new(),
            descriptors: Vec::new(),
            auth: Auth::Anonymous,
            policies: Policies::default(),
            listener: None,
            app: None,
            tls: None,
            stopping: CancellationToken::new(),
        }
    }

    /// Hosts a tonic service (a generated `…Server`).
    #[must_use]
    pub fn service<S>(mut self, service: S) -> Self
    where
        S: Service<Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes = self.routes.add_service(service);
        self
    }

    /// Registers an encoded `FileDescriptorSet` (from `tonic-prost-build`'s
    /// `file_descriptor_set_path`) for reflection.
    #[must_use]
    pub fn file_descriptor_set(mut self, encoded: &'static [u8]) -> Self {
        self.descriptors.push(encoded);
        self
    }

    /// Who may call the hosted services (not the health and reflection
    /// services, which stay open). Default: [`Auth::Anonymous`].
    #[must_use]
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Registers a named policy for [`Auth::Policy`].
    #[must_use]
    pub fn policy<F>(mut self, name: impl Into<String>, rule: F) -> Self
    where
        F: Fn(&mamey_core::Identity) -> bool + Send + Sync + 'static,
    {
        self.policies.insert(name.into(), Arc::new(rule));
        self
    }
}

impl Plugin for GrpcServer {
    fn name(&self) -> &'static str {
        "grpc"
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let config: GrpcConfig = ctx.section()?;
        let mut seen = std::collections::HashSet::new();
        for name in &self.names {
            if *name == HEALTH_NAME {
                return Err(format!("`{HEALTH_NAME}` is served by mamey from the service's health checks; do not add your own").into());
            }
            if !seen.insert(*name) {
                return Err(format!("gRPC service `{name}` is added twice").into());
            }
        }
        if let Auth::Policy(name) = &self.auth
            && !self.policies.contains(name)
        {
            return Err(format!("gRPC requires policy `{name}`, which is not registered").into());
        }
        let authenticator = Authenticator::from_config(&config.jwt, "grpc.jwt")?.map(Arc::new);
        let tls = crate::tls::server_tls(ctx.config(), &config.tls, "grpc.tls", Alpn::Grpc)?;
        let listener = TcpListener::bind(config.address.as_str())
            .await
            .map_err(|e| {
                ConfigError::new(
                    "grpc.address",
                    format!("cannot listen on `{}`: {e}", config.address),
                )
            })?;
        let bound = listener.local_addr()?;
        ctx.provide(GrpcAddress(bound))?;

        let health = HealthService {
            // Watches re-check every `health_interval`; reports are reused
            // as long, so many watchers cost one run per interval.
            health: SharedHealth::new(ctx.health().clone(), config.health_interval),
            names: Arc::new(self.names.clone()),
            interval: config.health_interval,
            stopping: self.stopping.clone(),
        };
        let mut routes = std::mem::take(&mut self.routes).add_service(HealthServer::new(health));
        if config.reflection && !self.names.contains(&REFLECTION_NAME) {
            let mut builder = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
            for set in &self.descriptors {
                builder = builder.register_encoded_file_descriptor_set(set);
            }
            routes = routes.add_service(builder.build_v1()?);
        }
        let calls = Arc::new(Calls {
            hosted: self.names.iter().map(|n| (*n).to_owned()).collect(),
            authenticator,
            auth: std::mem::take(&mut self.auth),
            policies: std::mem::take(&mut self.policies),
            timeout: config.request_timeout,
        });
        self.app = Some(routes.into_axum_router().layer(CallLayer(calls)));
        self.listener = Some(listener);
        tracing::info!(address = %bound, services = ?self.names, tls = tls.is_some(), "gRPC bound");
        self.tls = tls;
        Ok(())
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let (Some(listener), Some(app)) = (self.listener.take(), self.app.take()) else {
            return Err("gRPC started before it was initialised".into());
        };
        let (shutdown, stopping, tls) =
            (ctx.shutdown_token(), self.stopping.clone(), self.tls.take());
        crate::tls::watch_certificate(ctx, tls.as_ref());
        ctx.spawn("serve", async move {
            // Stops accepting, ends health watches, and drains the calls in
            // flight; streams of your own should end on shutdown too, or
            // they hold the stop until `shutdown.timeout`.
            let stop = CancellationToken::new();
            let serving = crate::serve::serve(listener, app, GRPC_LIMITS, tls, stop.clone());
            let mut serving = std::pin::pin!(serving);
            tokio::select! {
                () = serving.as_mut() => {}
                () = shutdown.cancelled() => {
                    stopping.cancel();
                    stop.cancel();
                    serving.await;
                }
            }
            Ok(())
        });
        Ok(())
    }
}

/// `grpc.health.v1.Health` answered from the service's readiness: `""` and
/// each hosted service are `SERVING` while the service is ready.
#[derive(Clone)]
struct HealthService {
    health: SharedHealth,
    names: Arc<Vec<&'static str>>,
    interval: Duration,
    /// Cancelled when the server stops, ending open watches so that the
    /// graceful shutdown does not wait for them.
    stopping: CancellationToken,
}

impl HealthService {
    async fn status(&self, service: &str) -> Result<ServingStatus, Status> {
        if !service.is_empty() && !self.names.contains(&service) && service != HEALTH_NAME {
            return Err(Status::not_found(format!("unknown service `{service}`")));
        }
        let report = self.health.check(Probe::Ready).await;
        Ok(if report.is_serving() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })
    }
}

const HEALTH_NAME: &str = "grpc.health.v1.Health";

/// gRPC clients keep few, long-lived HTTP/2 connections.
const GRPC_LIMITS: crate::serve::Limits = crate::serve::Limits {
    max_connections: 10_000,
    header_read_timeout: Duration::from_secs(10),
};
const REFLECTION_NAME: &str = "grpc.reflection.v1.ServerReflection";

type WatchStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for HealthService {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
        let status = self.status(&request.get_ref().service).await?;
        Ok(tonic::Response::new(HealthCheckResponse {
            status: status.into(),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<WatchStream>, Status> {
        let service = request.into_inner().service;
        let this = self.clone();
        let stream = futures_util::stream::unfold(None, move |last: Option<i32>| {
            let (this, service) = (this.clone(), service.clone());
            async move {
                loop {
                    if last.is_some() {
                        tokio::select! {
                            () = this.stopping.cancelled() => return None,
                            () = tokio::time::sleep(this.interval) => {}
                        }
                    }
                    let status = this
                        .status(&service)
                        .await
                        .unwrap_or(ServingStatus::ServiceUnknown)
                        as i32;
                    if last != Some(status) {
                        return Some((Ok(HealthCheckResponse { status }), Some(status)));
                    }
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

/// What every call goes through.
struct Calls {
    hosted: Vec<String>,
    authenticator: Option<Arc<Authenticator>>,
    auth: Auth,
    policies: Policies,
    timeout: Duration,
}

#[derive(Clone)]
struct CallLayer(Arc<Calls>);

impl<S> Layer<S> for CallLayer {
    type Service = CallService<S>;

    fn layer(&self, inner: S) -> CallService<S> {
        CallService {
            calls: Arc::clone(&self.0),
            inner,
        }
    }
}

#[derive(Clone)]
struct CallService<S> {
    calls: Arc<Calls>,
    inner: S,
}

impl<S> Service<Request<Body>> for CallService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let calls = Arc::clone(&self.calls);
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(async move {
            let started = Instant::now();
            let (service, method) = split_path(request.uri().path());
            let extracted = mamey_observability::propagation::extract(request.headers());
            let mut context = extracted.context;
            let open = service == HEALTH_NAME || service == REFLECTION_NAME;
            // Labels come from a bounded set: the hosted services' names.
            let (service, method) = if open || calls.hosted.contains(&service) {
                (service, method)
            } else {
                ("unmatched".to_owned(), "unmatched".to_owned())
            };
            let (authentication, token) = crate::auth::establish(
                calls.authenticator.as_deref(),
                request.headers(),
                "grpc",
                &mut context,
            )
            .await;
            // The caller's deadline (`grpc-timeout`), when shorter than ours.
            let timeout = grpc_timeout(request.headers())
                .map_or(calls.timeout, |caller| caller.min(calls.timeout));
            if !open
                && let Err(denied) = calls.policies.authorize(&calls.auth, Some(&authentication))
            {
                let status = match denied {
                    crate::auth::Denied::Unauthenticated(reason) => Status::unauthenticated(reason),
                    crate::auth::Denied::Forbidden(reason) => Status::permission_denied(reason),
                };
                let code = status.code() as i32;
                // The method of a refused call is the caller's word only.
                mamey_observability::metrics::record_grpc_server(
                    &service,
                    "unmatched",
                    code,
                    started.elapsed(),
                );
                return Ok(status.into_http());
            }
            request.extensions_mut().insert(authentication);
            let otel = extracted.otel;
            context
                .scope(async move {
                    let span = tracing::info_span!(
                        "rpc",
                        otel.kind = "server",
                        rpc.system = "grpc",
                        rpc.service = %service,
                        rpc.method = %method,
                        rpc.grpc.status_code = tracing::field::Empty,
                        otel.status_code = tracing::field::Empty,
                    );
                    mamey_observability::propagation::continue_trace(&span, &otel);
                    // A panicking handler ends its call with INTERNAL.
                    let handled = crate::pipeline::catching_panics(|| inner.call(request));
                    let call = tokio::time::timeout(timeout, handled).instrument(span.clone());
                    // The caller's token, for the service client to forward.
                    let outcome = match token {
                        Some(token) => crate::auth::with_caller_token(token, call).await,
                        None => call.await,
                    };
                    let response = match outcome {
                        Ok(Some(Ok(response))) => response,
                        Ok(Some(Err(never))) => match never {},
                        Ok(None) => {
                            tracing::error!("a gRPC handler panicked");
                            Status::internal("an internal error occurred").into_http()
                        }
                        Err(_) => Status::deadline_exceeded(format!(
                            "the call took longer than {} ms (the caller's `grpc-timeout` or `grpc.request_timeout`)",
                            timeout.as_millis()
                        ))
                        .into_http(),
                    };
                    let (parts, body) = response.into_parts();
                    // Errors come as trailers-only responses; success in the
                    // trailers at the end of the body.
                    let early = grpc_status(&parts.headers);
                    let metered = Metered {
                        inner: body,
                        service,
                        method,
                        started,
                        span,
                        early,
                        done: false,
                    };
                    Ok(Response::from_parts(parts, Body::new(metered)))
                })
                .await
        })
    }
}

/// The caller's deadline from `grpc-timeout`: up to 8 digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`).
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// `/pkg.Service/Method` → (`pkg.Service`, `Method`).
fn split_path(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or("").to_owned();
    let method = parts.next().unwrap_or("").to_owned();
    (service, method)
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A response body that records the call's code, duration and span status
/// when it ends (or `CANCELLED` when the client goes away first).
struct Metered {
    inner: Body,
    service: String,
    method: String,
    started: Instant,
    span: tracing::Span,
    early: Option<i32>,
    done: bool,
}

impl Metered {
    fn finish(&mut self, code: i32) {
        if self.done {
            return;
        }
        self.done = true;
        self.span.record("rpc.grpc.status_code", code);
        // Server-side faults mark the span, the caller's mistakes do not.
        let fault = matches!(
            Code::from(code),
            Code::Unknown
                | Code::DeadlineExceeded
                | Code::Unimplemented
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss
        );
        if fault {
            self.span.record("otel.status_code", "ERROR");
        }
        // A method the service does not have is the caller's word only.
        let method = if code == Code::Unimplemented as i32 {
            "unmatched"
        } else {
            self.method.as_str()
        };
        mamey_observability::metrics::record_grpc_server(
            &self.service,
            method,
            code,
            self.started.elapsed(),
        );
    }
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = grpc_status(trailers).unwrap_or(Code::Unknown as i32);
                    this.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(Code::Internal as i32),
            Poll::Ready(None) => {
                let code = this.early.unwrap_or(Code::Ok as i32);
                this.finish(code);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        let code = self.early.unwrap_or(Code::Cancelled as i32);
        self.finish(code);
    }
}

/// The gRPC status for a mamey error: the kind's code and the public
/// message (internal and unavailable details stay in the logs).
#[must_use]
pub fn status(error: &Error) -> Status {
    let message = match error.kind() {
        ErrorKind::Internal => "an internal error occurred".to_owned(),
        ErrorKind::Unavailable => "a dependency is unavailable; try again later".to_owned(),
        _ => error.public_message().to_owned(),
    };
    if matches!(error.kind(), ErrorKind::Internal | ErrorKind::Unavailable) {
        tracing::error!(error = %error, code = error.code(), "call failed");
    }
    let mut status = Status::new(Code::from(error.kind().grpc_code()), message);
    if let Ok(value) = error.code().parse() {
        status.metadata_mut().insert("mamey-code", value);
    }
    status
}

/// The mamey error for a gRPC status from another service.
#[must_use]
pub fn error(status: &Status) -> Error {
    let kind = ErrorKind::from_grpc_code(status.code() as i32);
    let code = status
        .metadata()
        .get("mamey-code")
        .and_then(|v| v.to_str().ok())
        .map_or_else(
            || format!("grpc.{}", code_name(status.code())),
            str::to_owned,
        );
    Error::new(kind, code, status.message().to_owned())
}

/// `DEADLINE_EXCEEDED` → `deadline_exceeded`.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// A channel to a service by name, for tonic's generated clients: each call
/// is sent to an endpoint the resolver names, picked by the client's load
/// balancer among those whose circuit is closed, with the caller's context
/// in the metadata and `http_client.timeout` per call.
///
/// Calls are not retried by the channel: a gRPC request body is a stream
/// that cannot be sent twice in general. Retry calls that are safe to repeat
/// with [`GrpcChannel::retry`].
///
/// Make one channel per service and clone it: clones share connections,
/// while each `grpc()` call starts with none.
///
/// ```no_run
/// # async fn demo(client: mamey_http::ServiceClient) {
/// let channel = client.grpc("orders");
/// let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
/// # }
/// ```
#[derive(Clone)]
pub struct GrpcChannel {
    client: ServiceClient,
    service: Arc<str>,
    channels: Arc<RwLock<HashMap<Endpoint, tonic::transport::Channel>>>,
}

impl fmt::Debug for GrpcChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcChannel")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl ServiceClient {
    /// A channel to `service` for tonic clients (feature `grpc`).
    #[must_use]
    pub fn grpc(&self, service: &str) -> GrpcChannel {
        GrpcChannel {
            client: self.clone(),
            service: Arc::from(service),
            channels: Arc::default(),
        }
    }
}

impl GrpcChannel {
    /// Runs `call` again after `UNAVAILABLE` or `RESOURCE_EXHAUSTED`, as
    /// `http_client.retry` allows: attempts, backoff with jitter, and the
    /// retry budget shared with the HTTP calls. Only for calls that are safe
    /// to repeat; `call` builds a fresh request each time.
    ///
    /// ```no_run
    /// # async fn demo(client: mamey_http::ServiceClient) -> Result<(), tonic::Status> {
    /// use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    ///
    /// let channel = client.grpc("orders");
    /// let health = HealthClient::new(channel.clone());
    /// let answer = channel
    ///     .retry(|| {
    ///         let mut health = health.clone();
    ///         async move { health.check(HealthCheckRequest::default()).await }
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The last attempt's status.
    pub async fn retry<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        self.client
            .with_retries(call, |status: &Status| {
                matches!(status.code(), Code::Unavailable | Code::ResourceExhausted)
            })
            .await
    }

    fn channel(&self, endpoint: &Endpoint) -> Result<tonic::transport::Channel, Status> {
        if let Ok(channels) = self.channels.read()
            && let Some(channel) = channels.get(endpoint)
        {
            return Ok(channel.clone());
        }
        let channel = tonic::transport::Endpoint::from_shared(endpoint.url.clone())
            .map_err(|e| Status::invalid_argument(format!("endpoint `{endpoint}`: {e}")))?
            .connect_timeout(self.client.connect_timeout())
            .connect_lazy();
        if let Ok(mut channels) = self.channels.write() {
            channels.insert(endpoint.clone(), channel.clone());
        }
        Ok(channel)
    }
}

impl Service<Request<tonic::body::Body>> for GrpcChannel {
    type Response = Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<tonic::body::Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let started = Instant::now();
            let endpoints = this
                .client
                .resolver()
                .resolve(&this.service)
                .await
                .map_err(|e| Box::new(status_of(&e)) as BoxError)?;
            let Some((endpoint, state, probe)) = this.client.pick(&endpoints) else {
                return Err(Box::new(Status::unavailable(format!(
                    "every endpoint of `{}` is failing; not calling",
                    this.service
                ))) as BoxError);
            };
            crate::client::propagate(request.headers_mut(), this.client.forwards_authorization());
            let in_flight = state.start(probe);
            let channel = this.channel(&endpoint)?;
            let timeout = this.client.timeout();
            let outcome = tokio::time::timeout(timeout, channel.oneshot(request)).await;
            in_flight.settled();
            let breaker = this.client.breaker();
            let result = match outcome {
                Ok(Ok(response)) => {
                    let code = grpc_status(response.headers());
                    if code == Some(Code::Unavailable as i32) {
                        state.failed(breaker);
                    } else {
                        state.succeeded();
                    }
                    Ok(response)
                }
                // The caller's own deadline (`Request::set_timeout`) ran
                // out: not the endpoint's failure.
                Ok(Err(e)) if caused_by_timeout(&e) => {
                    state.succeeded();
                    Err(Box::new(Status::deadline_exceeded(format!(
                        "`{}` did not answer within the call's deadline",
                        this.service
                    ))) as BoxError)
                }
                Ok(Err(e)) => {
                    state.failed(breaker);
                    Err(Box::new(Status::unavailable(format!(
                        "calling `{}` at {endpoint}: {e}",
                        this.service
                    ))) as BoxError)
                }
                Err(_) => {
                    state.failed(breaker);
                    Err(Box::new(Status::deadline_exceeded(format!(
                        "`{}` did not answer within {} ms",
                        this.service,
                        timeout.as_millis()
                    ))) as BoxError)
                }
            };
            let status = result.as_ref().ok().map(|r| r.status().as_u16());
            mamey_observability::metrics::record_http_client(
                &this.service,
                "GRPC",
                status,
                started.elapsed(),
            );
            result
        })
    }
}

/// Whether tonic gave up because the request's `grpc-timeout` expired.
fn caused_by_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        current = error.source();
    }
    false
}

fn status_of(error: &Error) -> Status {
    Status::new(
        Code::from(error.kind().grpc_code()),
        error.message().to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_statuses_map_both_ways() {
        for kind in [
            ErrorKind::InvalidInput,
            ErrorKind::Unauthorized,
            ErrorKind::Forbidden,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::Unavailable,
            ErrorKind::Internal,
        ] {
            let original = Error::new(kind, "order.x", "detail");
            let back = error(&status(&original));
            assert_eq!(back.kind(), kind);
            assert_eq!(back.code(), "order.x");
        }
        let internal = status(&Error::internal("db at 10.0.0.3 refused"));
        assert!(!internal.message().contains("10.0.0.3"));
    }

    #[test]
    fn caller_deadlines_are_read_from_grpc_timeout() {
        let deadline = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", value.parse().unwrap());
            grpc_timeout(&headers)
        };
        assert_eq!(deadline("100m"), Some(Duration::from_millis(100)));
        assert_eq!(deadline("2S"), Some(Duration::from_secs(2)));
        assert_eq!(deadline("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(deadline("5x"), None);
        assert_eq!(deadline("123456789m"), None, "more than 8 digits");
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/orders.v1.Orders/Get"),
            ("orders.v1.Orders".to_owned(), "Get".to_owned())
        );
    }
}

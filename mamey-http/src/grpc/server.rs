//! The `grpc` plug-in: hosts tonic services on `grpc.address`, beside the
//! health and reflection services, behind the per-call layer.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use http::Request;
use mamey_core::config::{ConfigError, ConfigSection};
use mamey_core::{BoxError, InitContext, Plugin, StartContext};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic_health::pb::health_server::HealthServer;
use tower::Service;

use super::call::{CallLayer, Calls};
use super::health::HealthService;
use super::{GrpcAddress, HEALTH_NAME, REFLECTION_NAME};
use crate::auth::{Auth, Authenticator, Policies};
use crate::config::{JwtConfig, ServerTlsConfig};
use crate::health::SharedHealth;
use crate::limits::{GrpcLimits, Limits, LimitsConfig, LimitsLayer};
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
/// limits = { max_concurrency = 512, rate = { requests_per_second = 50 } }
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
    /// Overload protection, as `http.limits`, for calls (routes are method
    /// paths, `"/orders.v1.Orders/Get"`; the health service is exempt).
    /// Default: off, `max_concurrency` included.
    pub limits: LimitsConfig,
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
            limits: LimitsConfig::default(),
        }
    }
}

impl ConfigSection for GrpcConfig {
    const KEY: &'static str = "grpc";
}

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
        let limits = Limits::from_config(&config.limits, "grpc", None, ctx.config())?;
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

        let health = HealthService::new(
            // Watches re-check every `health_interval`; reports are reused
            // as long, so many watchers cost one run per interval.
            SharedHealth::new(ctx.health().clone(), config.health_interval),
            self.names.clone(),
            config.health_interval,
            self.stopping.clone(),
        );
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
        let mut app = routes.into_axum_router();
        if limits.is_active() {
            let mut known: Vec<String> = self.names.iter().map(|n| (*n).to_owned()).collect();
            known.push(REFLECTION_NAME.to_owned());
            let protocol = GrpcLimits::new(&[HEALTH_NAME], known);
            // Inside the call layer: a valid token's subject is known.
            app = app.layer(LimitsLayer::new(Arc::new(limits), protocol));
        }
        self.app = Some(app.layer(CallLayer(calls)));
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

/// gRPC clients keep few, long-lived HTTP/2 connections.
const GRPC_LIMITS: crate::serve::Limits = crate::serve::Limits {
    max_connections: 10_000,
    header_read_timeout: Duration::from_secs(10),
};

//! The [`Discovery`] plug-in.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mamey_core::discovery::{GrpcAddress, HttpAddress, ServiceResolver};
use mamey_core::health::{HealthStatus, Probe, Status};
use mamey_core::{BoxError, InitContext, Plugin, StartContext};
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::config::{Backend, DiscoveryConfig};
use crate::fixed::StaticRegistry;
use crate::instance::Instance;
use crate::registration::{Registration, State};
use crate::registry::Registry;
use crate::resolver::WatchedResolver;

/// The discovery plug-in: provides the [`ServiceResolver`] resource that
/// mamey-http's service client and gRPC channels use, and registers this
/// instance while the service runs.
///
/// Add it **before** the plug-ins that call other services (so they find
/// the resolver) — its registration still waits until every plug-in has
/// started, and it deregisters before any of them stops.
///
/// ```no_run
/// use mamey_core::Service;
/// use mamey_discovery::Discovery;
///
/// # async fn demo() -> Result<(), mamey_core::ServiceError> {
/// Service::builder("orders")
///     .plugin(Discovery::new()) // `discovery.backend` picks the registry
///     .build()
///     .await?
///     .run()
///     .await
/// # }
/// ```
///
/// Health: one `discovery` check on the readiness probe, degraded (still
/// serving) while the registry is unreachable — lookups then answer with
/// the last endpoints it reported — or the instance is not registered.
#[derive(Default)]
pub struct Discovery {
    custom: Option<Arc<dyn Registry>>,
    running: Option<Running>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("registry", &self.custom.as_ref().map(|r| r.name()))
            .finish_non_exhaustive()
    }
}

/// What `init` set up.
struct Running {
    config: DiscoveryConfig,
    registry: Arc<dyn Registry>,
    resolver: WatchedResolver,
    /// The web API's registration, and the gRPC server's beside it.
    registrations: Vec<Registration>,
    registration_state: Arc<OnceLock<Vec<watch::Receiver<State>>>>,
}

impl Discovery {
    /// The registry `discovery.backend` names.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `registry` instead of the one `discovery.backend` names: your
    /// own backend, or one built in code.
    #[must_use]
    pub fn with_registry(registry: impl Registry) -> Self {
        Self {
            custom: Some(Arc::new(registry)),
            running: None,
        }
    }
}

impl Plugin for Discovery {
    fn name(&self) -> &'static str {
        "discovery"
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let config: DiscoveryConfig = ctx.section()?;
        let registry = match &self.custom {
            Some(registry) => Arc::clone(registry),
            None => build_registry(&config, ctx).await?,
        };
        let backoff = Backoff::new(config.retry_backoff, config.max_retry_backoff);
        let resolver = WatchedResolver::new(Arc::clone(&registry), config.lookup_timeout, backoff);
        ctx.provide(ServiceResolver::new(resolver.clone()))?;
        let registration_state: Arc<OnceLock<Vec<watch::Receiver<State>>>> = Arc::default();
        let check_resolver = resolver.clone();
        let check_registration = Arc::clone(&registration_state);
        ctx.health()
            .register("discovery", &[Probe::Ready], move || {
                let lookups = check_resolver.health();
                let registration = check_registration
                    .get()
                    .into_iter()
                    .flatten()
                    .map(Registration::health)
                    .fold(HealthStatus::healthy(), worst);
                async move { worst(lookups, registration) }
            });
        tracing::debug!(registry = registry.name(), "discovery ready");
        self.running = Some(Running {
            config,
            registry,
            resolver,
            registrations: Vec::new(),
            registration_state,
        });
        Ok(())
    }

    async fn ready(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let Some(running) = self.running.as_mut() else {
            return Ok(());
        };
        // The static backend has no one to tell.
        let fixed = self.custom.is_none() && running.config.backend == Backend::Static;
        if !running.config.register || fixed {
            return Ok(());
        }
        let http = ctx.resource::<HttpAddress>().map(|HttpAddress(a)| a).ok();
        let grpc = ctx.resource::<GrpcAddress>().map(|GrpcAddress(a)| a).ok();
        if http.is_none() && grpc.is_none() && running.config.instance.port.is_none() {
            tracing::info!(
                "not registering: the service has no web API or gRPC server to advertise \
                 (set `discovery.instance.port` to register anyway)"
            );
            return Ok(());
        }
        let mut instances = vec![Instance::advertised(
            &running.config.instance,
            ctx.app(),
            http.or(grpc),
        )?];
        // With both servers, the gRPC one is registered beside the web API
        // as `{service}-grpc`, for `ServiceClient::grpc("{service}-grpc")`.
        if let (Some(_), Some(grpc)) = (http, grpc) {
            let web = &instances[0];
            let mut beside = web.clone();
            beside.service = format!("{}-grpc", web.service);
            beside.id = format!("{}-grpc", web.id);
            beside.port = grpc.port();
            instances.push(beside);
        }
        let backoff = Backoff::new(
            running.config.retry_backoff,
            running.config.max_retry_backoff,
        );
        let registrations: Vec<Registration> = instances
            .into_iter()
            .map(|instance| {
                Registration::start(Arc::clone(&running.registry), instance, backoff.clone())
            })
            .collect();
        let _ = running
            .registration_state
            .set(registrations.iter().map(Registration::state).collect());
        running.registrations = registrations;
        Ok(())
    }

    async fn drain(&mut self) -> Result<(), BoxError> {
        let Some(running) = self.running.as_mut() else {
            return Ok(());
        };
        if running.registrations.is_empty() {
            return Ok(());
        }
        let timeout = request_timeout(&running.config, self.custom.is_some());
        let mut failed = Vec::new();
        for registration in std::mem::take(&mut running.registrations) {
            let id = registration.instance().id.clone();
            if let Err(why) = registration.deregister(timeout).await {
                failed.push(format!("deregistering `{id}`: {why}"));
            }
        }
        if !running.config.drain_delay.is_zero() {
            tracing::info!(
                delay_ms = running.config.drain_delay.as_millis(),
                "deregistered; serving on while callers notice"
            );
            tokio::time::sleep(running.config.drain_delay).await;
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; ").into())
        }
    }

    async fn stop(&mut self) -> Result<(), BoxError> {
        if let Some(running) = self.running.take() {
            running.resolver.stop().await;
        }
        Ok(())
    }
}

/// The worse of two statuses, with its detail.
fn worst(a: HealthStatus, b: HealthStatus) -> HealthStatus {
    match (a.status, b.status) {
        (Status::Healthy, _) => b,
        (_, Status::Healthy) => a,
        _ if b.status > a.status => b,
        _ => HealthStatus {
            status: a.status,
            detail: Some(format!(
                "{}; {}",
                a.detail.unwrap_or_default(),
                b.detail.unwrap_or_default()
            )),
        },
    }
}

/// How long deregistering may take: the backend's request timeout, 5 s
/// for a registry given in code.
fn request_timeout(config: &DiscoveryConfig, custom: bool) -> Duration {
    match config.backend {
        _ if custom => Duration::from_secs(5),
        Backend::Static => Duration::from_secs(1),
        Backend::Consul => config.consul.timeout,
        Backend::Etcd => config.etcd.timeout,
    }
}

async fn build_registry(
    config: &DiscoveryConfig,
    ctx: &InitContext<'_>,
) -> Result<Arc<dyn Registry>, BoxError> {
    match config.backend {
        Backend::Static => {
            let mut registry = StaticRegistry::new();
            for (service, urls) in &config.fixed.services {
                registry = registry.service(service.clone(), urls.iter().cloned());
            }
            Ok(Arc::new(registry))
        }
        #[cfg(feature = "consul")]
        Backend::Consul => Ok(Arc::new(
            crate::consul::ConsulRegistry::new(&config.consul).map_err(|e| {
                ctx.config().invalid("discovery.consul.address", e.message())
            })?,
        )),
        #[cfg(feature = "etcd")]
        Backend::Etcd => Ok(Arc::new(
            crate::etcd::EtcdRegistry::connect(&config.etcd)
                .await
                .map_err(|e| ctx.config().invalid("discovery.etcd.endpoints", e.message()))?,
        )),
        #[allow(unreachable_patterns)]
        backend => Err(ctx
            .config()
            .invalid(
                "discovery.backend",
                format!(
                    "`{}` needs the `{}` feature of mamey-discovery (cargo add mamey-discovery --features {})",
                    backend.as_str(),
                    backend.as_str(),
                    backend.as_str()
                ),
            )
            .into()),
    }
}

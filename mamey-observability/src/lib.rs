//! Logs, traces and metrics for mamey services, set up by one plug-in.
//!
//! ```no_run
//! use mamey_core::Service;
//! use mamey_observability::Observability;
//!
//! # async fn demo() -> Result<(), mamey_core::BoxError> {
//! Service::builder("orders")
//!     .plugin(Observability::new()) // first, so every later plug-in is observed
//!     .build()
//!     .await?
//!     .run()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! - **Logs** (`[logging]`): human lines for the `dev` profile, JSON lines
//!   otherwise, each carrying service name, instance id, version, trace id and
//!   correlation id; a `RUST_LOG`-style filter that [`LogLevel`] changes at
//!   runtime.
//! - **Traces** (`[tracing]`, `OTEL_*`): `tracing` spans exported over
//!   OTLP/gRPC or OTLP/HTTP in batches; export failures are counted and
//!   logged at a throttled rate, never raised into the service; flushed on
//!   stop. Off unless an endpoint is configured — and then it costs nothing.
//! - **Metrics** (`[metrics]`): the `metrics` facade rendered as Prometheus
//!   text by [`Prometheus`], process metrics, and RED helpers in [`metrics`]
//!   for every transport; every dispatch of the core dispatcher is recorded.
//! - **Propagation**: [`propagation`] carries W3C trace context and
//!   correlation ids through HTTP headers, gRPC metadata and AMQP tables.
//!
//! The subscriber and the metrics recorder are process-wide: the first
//! service in a process installs them, later ones share them. Each service
//! keeps its own name in both: a log line names the service whose
//! [`ServiceScope`](mamey_core::ServiceScope) is current where it is
//! written, and every metric recorded there carries that name as the label
//! `service_name`.

#![forbid(unsafe_code)]

pub mod config;
mod logging;
pub mod metrics;
pub mod propagation;
mod sampling;
pub use sampling::HeadSampler;
mod traces;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use mamey_core::health::{HealthStatus, Probe};
use mamey_core::{BoxError, InitContext, Plugin, StartContext};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Dispatch;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

pub use config::{LogFormat, LoggingConfig, MetricsConfig, Protocol, SamplerKind, TracingConfig};
pub use logging::{Base, BoxedLayer, LogLevel, LogLevelError};
#[cfg(feature = "prometheus")]
pub use metrics::prometheus::{CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE, Prometheus};
pub use traces::{ExportStats, TraceSettings, TraceSettingsError};

use logging::{Lines, ServiceFields};

/// The subscriber this process installed, shared by every service in it.
struct Installed {
    owner: String,
    dispatch: Dispatch,
    level: Option<LogLevel>,
    /// Set when a second service shares it (see `ServiceFields::shared`).
    shared: Arc<AtomicBool>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// What the plug-in set up, as a resource: the subscriber's dispatch and the
/// exporter's statistics.
#[derive(Clone, Debug)]
pub struct Telemetry {
    dispatch: Dispatch,
    export: ExportStats,
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// The subscriber spans and logs of this service go to. With
    /// [`Observability::without_global_subscriber`], make it current yourself
    /// (`tracing::dispatcher::set_default`).
    #[must_use]
    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }

    /// Counts of exported spans and failed exports.
    #[must_use]
    pub fn export_stats(&self) -> &ExportStats {
        &self.export
    }

    /// Whether this service's spans are exported.
    #[must_use]
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans buffered so far, waiting for the collector.
    ///
    /// # Errors
    /// The export failed or timed out; the failure is also counted in
    /// [`Telemetry::export_stats`].
    pub async fn flush(&self) -> Result<(), BoxError> {
        let Some(provider) = self.provider.clone() else {
            return Ok(());
        };
        // The SDK flushes synchronously and its exporter I/O needs this
        // runtime, so wait off the runtime's threads.
        tokio::task::spawn_blocking(move || provider.force_flush())
            .await
            .map_err(|e| format!("flushing spans panicked: {e}"))?
            .map_err(|e| format!("flushing spans failed: {e}").into())
    }
}

/// The observability plug-in. Add it first, so that the plug-ins after it
/// log and trace through it, and so that it stops last, flushing telemetry.
pub struct Observability {
    layers: Vec<BoxedLayer>,
    global: bool,
    writer: Option<BoxMakeWriter>,
    env: Option<BTreeMap<String, String>>,
    provider: Option<SdkTracerProvider>,
    export_timeout: std::time::Duration,
    #[cfg(feature = "prometheus")]
    prometheus: Option<Prometheus>,
    #[cfg(feature = "prometheus")]
    metrics_listener: Option<std::net::TcpListener>,
}

/// The address the stand-alone `/metrics` listener (`metrics.listen`) is
/// bound to — useful with port 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddress(pub std::net::SocketAddr);

impl std::fmt::Debug for Observability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observability")
            .field("layers", &self.layers.len())
            .field("global", &self.global)
            .field("exporting", &self.provider.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Observability {
    fn default() -> Self {
        Self::new()
    }
}

impl Observability {
    /// Logs to stdout, traces and metrics as configured, installing the
    /// process's global subscriber if none is installed yet.
    #[must_use]
    pub fn new() -> Self {
        Self {
            layers: Vec::new(),
            global: true,
            writer: None,
            env: None,
            provider: None,
            export_timeout: std::time::Duration::from_secs(10),
            #[cfg(feature = "prometheus")]
            prometheus: None,
            #[cfg(feature = "prometheus")]
            metrics_listener: None,
        }
    }

    /// Adds a `tracing-subscriber` layer of the application's own.
    #[must_use]
    pub fn with_layer<L>(mut self, layer: L) -> Self
    where
        L: tracing_subscriber::Layer<Base> + Send + Sync + 'static,
    {
        self.layers.push(Box::new(layer));
        self
    }

    /// Builds the subscriber without installing it globally; take it from
    /// the [`Telemetry`] resource. For tests and for embedding several
    /// independently observed services in one process.
    #[must_use]
    pub fn without_global_subscriber(mut self) -> Self {
        self.global = false;
        self
    }

    /// Writes log lines to `writer` instead of stdout (colours off).
    #[must_use]
    pub fn with_writer<W>(mut self, writer: W) -> Self
    where
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        self.writer = Some(BoxMakeWriter::new(writer));
        self
    }

    /// Reads `RUST_LOG`, `NO_COLOR` and `OTEL_*` from these variables instead
    /// of the process environment.
    #[must_use]
    pub fn with_env_vars<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// A variable from the injected set or the process; empty counts as unset.
    fn env(&self, name: &str) -> Option<String> {
        match &self.env {
            Some(vars) => vars.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
        .filter(|v| !v.trim().is_empty())
    }
}

impl Plugin for Observability {
    fn name(&self) -> &'static str {
        "observability"
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let logging = ctx.section::<LoggingConfig>()?;
        let tracing_config = ctx.section::<TracingConfig>()?;
        let metrics_config = ctx.section::<MetricsConfig>()?;
        let app = ctx.app().clone();

        let filter = match self.env("RUST_LOG") {
            Some(directive) => logging::parse_filter(&directive)
                .map_err(|e| format!("environment variable `RUST_LOG`: {e}"))?,
            None => {
                logging::parse_filter(&logging.level)
                    .map_err(|e| ctx.config().invalid("logging.level", e.to_string()))?;
                logging::parse_filter(&logging.directive())
                    .map_err(|e| ctx.config().invalid("logging.targets", e.to_string()))?
            }
        };

        let settings = TraceSettings::resolve(&tracing_config, |name| self.env(name))?;
        let export = ExportStats::default();
        self.export_timeout = tracing_config.timeout;
        if settings.enabled {
            self.provider = Some(build_provider(
                &settings,
                &tracing_config,
                &app,
                export.clone(),
            )?);
        }

        let lines = match (logging.enabled, logging.format) {
            (false, _) => Lines::Off,
            (true, LogFormat::Json) => Lines::Json,
            (true, LogFormat::Human) => Lines::Human {
                ansi: self.ansi(&logging),
            },
            (true, LogFormat::Auto) if app.profile == "dev" => Lines::Human {
                ansi: self.ansi(&logging),
            },
            (true, LogFormat::Auto) => Lines::Json,
        };
        let shared = Arc::new(AtomicBool::new(false));
        let fields = ServiceFields {
            service: app.name.clone(),
            instance_id: app.instance_id.clone(),
            version: app.version.clone(),
            shared: Arc::clone(&shared),
        };
        let sampler = sampling::HeadSampler {
            kind: settings.sampler,
            ratio: settings.ratio,
        };
        let tracer = self.provider.as_ref().map(|p| (p.tracer("mamey"), sampler));
        let code_location = tracing_config.code_location;
        let writer = self
            .writer
            .take()
            .unwrap_or_else(|| BoxMakeWriter::new(std::io::stdout));
        let layers = std::mem::take(&mut self.layers);
        let build = move || {
            let (subscriber, level) = logging::build_subscriber(
                filter,
                tracer,
                code_location,
                lines,
                fields,
                writer,
                layers,
            );
            (Dispatch::new(subscriber), level)
        };

        let (dispatch, level) = if self.global {
            let mut built_here = false;
            let installed = INSTALLED.get_or_init(|| {
                built_here = true;
                let (dispatch, level) = build();
                match tracing::dispatcher::set_global_default(dispatch.clone()) {
                    Ok(()) => Installed {
                        owner: app.name.clone(),
                        dispatch,
                        level: Some(level),
                        shared,
                    },
                    Err(_) => Installed {
                        owner: "the application".into(),
                        dispatch: tracing::dispatcher::get_default(Clone::clone),
                        level: None,
                        shared,
                    },
                }
            });
            if installed.level.is_none() {
                tracing::warn!(
                    "a global tracing subscriber was already set; mamey logs and spans go through it, and spans are not exported by mamey"
                );
            } else if !built_here {
                // Lines name their service from here on: the current
                // `ServiceScope`'s, so each keeps its own.
                installed.shared.store(true, Ordering::Relaxed);
                tracing::info!(owner = %installed.owner, "sharing the process's subscriber");
            }
            let ours = built_here && installed.level.is_some();
            if !ours && self.provider.is_some() {
                tracing::warn!(owner = %installed.owner, "span export is configured but this process's subscriber was installed by `{}`; spans go where it sends them", installed.owner);
                if let Some(provider) = self.provider.take() {
                    let _ = provider.shutdown();
                }
            }
            (installed.dispatch.clone(), installed.level.clone())
        } else {
            let (dispatch, level) = build();
            (dispatch, Some(level))
        };
        let exporting = self.provider.is_some();

        if let Some(level) = level {
            ctx.provide(level)?;
        }
        ctx.provide(Telemetry {
            dispatch,
            export: export.clone(),
            provider: self.provider.clone(),
        })?;
        if self.provider.is_some() {
            ctx.health()
                .register("span-export", &[Probe::Ready], move || {
                    let (failed, failures) = (export.last_export_failed(), export.failed_exports());
                    async move {
                        if failed {
                            HealthStatus::degraded(format!(
                                "exporting spans to the collector fails ({failures} failed exports)"
                            ))
                        } else {
                            HealthStatus::healthy()
                        }
                    }
                });
        }

        if metrics_config.enabled {
            #[cfg(feature = "prometheus")]
            {
                let prometheus = metrics::prometheus::install(&metrics_config)
                    .map_err(|e| ctx.config().invalid("metrics", e))?;
                ctx.provide(prometheus.clone())?;
                self.prometheus = Some(prometheus);
            }
            #[cfg(feature = "prometheus")]
            if let Some(listen) = &metrics_config.listen {
                let address: std::net::SocketAddr = listen.parse().map_err(|_| {
                    ctx.config()
                        .invalid("metrics.listen", "expected host:port, e.g. 127.0.0.1:9464")
                })?;
                // Bound now, so a taken port fails the build, not a later task.
                let listener = std::net::TcpListener::bind(address)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|e| {
                        ctx.config()
                            .invalid("metrics.listen", format!("cannot bind {address}: {e}"))
                    })?;
                ctx.provide(MetricsAddress(listener.local_addr()?))?;
                self.metrics_listener = Some(listener);
            }
            ctx.dispatcher().metrics(metrics::DispatcherMetrics);
        }
        tracing::info!(
            logs = ?lines,
            traces = if exporting { settings.endpoint.as_str() } else { "off" },
            metrics = metrics_config.enabled,
            "observability ready"
        );
        Ok(())
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        #[cfg(feature = "prometheus")]
        if let Some(prometheus) = self.prometheus.clone() {
            let stop = ctx.shutdown_token();
            let upkeep = prometheus.clone();
            ctx.spawn("metrics-upkeep", async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return Ok(()),
                        _ = every.tick() => upkeep.run_upkeep(),
                    }
                }
            });
            if let Some(listener) = self.metrics_listener.take() {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                tracing::info!(address = %listener.local_addr()?, "serving GET /metrics");
                ctx.spawn(
                    "metrics-listener",
                    listener::serve(listener, prometheus, ctx.shutdown_token()),
                );
            }
        }
        #[cfg(not(feature = "prometheus"))]
        let _ = ctx;
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), BoxError> {
        let Some(provider) = self.provider.take() else {
            return Ok(());
        };
        // The SDK flushes synchronously; its exporter I/O needs this runtime,
        // so wait off the runtime's threads.
        let flushing = tokio::task::spawn_blocking(move || {
            let flushed = provider.force_flush();
            let _ = provider.shutdown();
            flushed
        });
        // Telemetry that cannot be delivered is reported, but does not make
        // an otherwise clean shutdown fail: the service did its work.
        match tokio::time::timeout(self.export_timeout, flushing).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                tracing::warn!(%error, "spans buffered at shutdown were not exported");
            }
            Ok(Err(error)) => tracing::warn!(%error, "flushing spans panicked"),
            Err(_) => tracing::warn!("flushing spans at shutdown timed out"),
        }
        Ok(())
    }
}

impl Observability {
    /// Colours only on a terminal, never into a file, pipe or custom writer.
    fn ansi(&self, logging: &LoggingConfig) -> bool {
        use std::io::IsTerminal;
        logging.ansi
            && self.writer.is_none()
            && self.env("NO_COLOR").is_none()
            && std::io::stdout().is_terminal()
    }
}

#[cfg(feature = "otlp")]
fn build_provider(
    settings: &TraceSettings,
    config: &TracingConfig,
    app: &mamey_core::config::AppConfig,
    stats: ExportStats,
) -> Result<SdkTracerProvider, BoxError> {
    let exporter = traces::exporter(settings, config.timeout)
        .map_err(|e| format!("tracing.endpoint `{}`: {e}", settings.endpoint))?;
    Ok(traces::provider(settings, config, app, exporter, stats))
}

#[cfg(not(feature = "otlp"))]
fn build_provider(
    _settings: &TraceSettings,
    _config: &TracingConfig,
    _app: &mamey_core::config::AppConfig,
    _stats: ExportStats,
) -> Result<SdkTracerProvider, BoxError> {
    Err("span export needs the `otlp` feature of mamey-observability".into())
}

#[cfg(feature = "prometheus")]
mod listener {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Method, Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use mamey_core::InServiceScope;
    use tokio_util::sync::CancellationToken;

    use crate::Prometheus;

    /// Serves `GET /metrics` until `stop`; anything else is 404 or 405.
    pub(crate) async fn serve(
        listener: tokio::net::TcpListener,
        prometheus: Prometheus,
        stop: CancellationToken,
    ) -> Result<(), mamey_core::BoxError> {
        loop {
            let (stream, _) = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "metrics listener: accept failed");
                        continue;
                    }
                },
            };
            let prometheus = prometheus.clone();
            tokio::spawn(
                async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let prometheus = prometheus.clone();
                        async move { Ok::<_, Infallible>(respond(&request, &prometheus)) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
                .in_current_service(),
            );
        }
    }

    fn respond<B>(request: &Request<B>, prometheus: &Prometheus) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match (request.method(), request.uri().path()) {
            (&Method::GET, "/metrics") => (
                StatusCode::OK,
                crate::PROMETHEUS_CONTENT_TYPE,
                prometheus.render(),
            ),
            (_, "/metrics") => (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "use GET\n".to_owned(),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found\n".to_owned(),
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = http::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, value);
        }
        response
    }
}

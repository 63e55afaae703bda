//! Metrics: the `metrics` facade, Prometheus text exposition, process
//! metrics, and RED helpers (rate, errors, duration) for every transport.
//!
//! Why the `metrics` facade with `metrics-exporter-prometheus` rather than
//! OpenTelemetry metrics: recording is a lock-free atomic update behind a
//! macro any library can call without depending on mamey, and the exporter
//! renders Prometheus text directly, with per-metric histogram buckets.
//!
//! Label values must come from bounded sets: routes by template
//! (`/orders/{id}`), never by raw path; message and handler names by type.
//!
//! The recorder is process-wide. Every series recorded while a service's
//! [`ServiceScope`] is current carries that service's name as the label
//! [`SERVICE_NAME_LABEL`] (`service_name`), so services sharing a process
//! keep their own series ([`ServiceNameRecorder`]); process metrics carry
//! none.

use std::sync::Arc;
use std::time::Duration;

use mamey_core::ServiceScope;
use mamey_core::cqrs::middleware::{HandlerMetrics, HandlerOutcome};
use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
    counter, gauge, histogram,
};

/// The label naming the service that recorded a series: OpenTelemetry's
/// `service.name` as Prometheus spells it. (`service` on the client and
/// gRPC families is another thing: the service called.)
pub const SERVICE_NAME_LABEL: &str = "service_name";

/// A [`Recorder`] that adds [`SERVICE_NAME_LABEL`] — the name of the
/// current [`ServiceScope`] — to each series it registers, then hands it to
/// `R`. A series registered with no scope current, or that names the label
/// itself, is passed on as it is.
///
/// The plug-in installs the Prometheus recorder inside one; wrap your own
/// recorder in it when you install one yourself.
///
/// ```
/// # #[cfg(feature = "prometheus")] {
/// use mamey_core::ServiceScope;
/// use mamey_observability::metrics::ServiceNameRecorder;
/// use metrics_exporter_prometheus::PrometheusBuilder;
///
/// let prometheus = PrometheusBuilder::new().build_recorder();
/// let handle = prometheus.handle();
/// let recorder = ServiceNameRecorder::new(prometheus);
/// metrics::with_local_recorder(&recorder, || {
///     ServiceScope::new("orders", "orders-1", "1.0.0")
///         .sync_scope(|| metrics::counter!("orders_placed_total").increment(1));
///     metrics::counter!("process_wide_total").increment(1);
/// });
/// let text = handle.render();
/// assert!(text.contains(r#"orders_placed_total{service_name="orders"} 1"#), "{text}");
/// assert!(text.contains("process_wide_total 1"), "{text}");
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ServiceNameRecorder<R> {
    inner: R,
}

impl<R> ServiceNameRecorder<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self { inner }
    }

    /// The wrapped recorder.
    pub fn inner(&self) -> &R {
        &self.inner
    }
}

/// `key` with the current service's name, when there is one to add.
fn with_service_name(key: &Key) -> Option<Key> {
    let name: Arc<str> = ServiceScope::with_current(|s| s.map(|s| Arc::clone(s.name_shared())))?;
    if key.labels().any(|label| label.key() == SERVICE_NAME_LABEL) {
        return None;
    }
    Some(key.with_extra_labels(vec![Label::new(SERVICE_NAME_LABEL, name)]))
}

impl<R: Recorder> Recorder for ServiceNameRecorder<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        match with_service_name(key) {
            Some(key) => self.inner.register_counter(&key, metadata),
            None => self.inner.register_counter(key, metadata),
        }
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        match with_service_name(key) {
            Some(key) => self.inner.register_gauge(&key, metadata),
            None => self.inner.register_gauge(key, metadata),
        }
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        match with_service_name(key) {
            Some(key) => self.inner.register_histogram(&key, metadata),
            None => self.inner.register_histogram(key, metadata),
        }
    }
}

/// `http_server_requests_total` and `http_server_request_duration_seconds`,
/// labelled `method`, `route` (the template) and `status`.
///
/// For a server's hot path, [`HttpServerMetrics`] records the same series
/// without building labels on every request.
pub fn record_http_server(method: &str, route: &str, status: u16, duration: Duration) {
    let (counter, histogram) = http_server_series(method, route, status);
    counter.increment(1);
    histogram.record(duration.as_secs_f64());
}

/// The handles of one (method, route, status) series of the web server.
fn http_server_series(method: &str, route: &str, status: u16) -> (Counter, Histogram) {
    let labels = [
        ("method", method.to_owned()),
        ("route", route.to_owned()),
        ("status", status.to_string()),
    ];
    (
        counter!("http_server_requests_total", &labels),
        histogram!("http_server_request_duration_seconds", &labels),
    )
}

/// [`record_http_server`] with the handles of each (route, method, status)
/// series kept after their first use, so a request costs a read lock and two
/// atomic updates instead of three label allocations and a registry lookup.
/// Cheap to clone; clones share the handles.
///
/// The handles belong to the recorder installed when a series is first
/// used: create it after the metrics recorder is installed.
#[derive(Clone, Default)]
pub struct HttpServerMetrics {
    series: std::sync::Arc<std::sync::RwLock<HttpSeries>>,
}

/// Route → (method, status, counter, histogram).
type HttpSeries = std::collections::HashMap<String, Vec<(String, u16, Counter, Histogram)>>;

impl std::fmt::Debug for HttpServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServerMetrics").finish_non_exhaustive()
    }
}

impl HttpServerMetrics {
    /// No series yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one request.
    pub fn record(&self, method: &str, route: &str, status: u16, duration: Duration) {
        let seconds = duration.as_secs_f64();
        if let Ok(series) = self.series.read()
            && let Some((_, _, counter, histogram)) = series
                .get(route)
                .and_then(|s| s.iter().find(|(m, st, _, _)| *st == status && m == method))
        {
            counter.increment(1);
            histogram.record(seconds);
            return;
        }
        let (counter, histogram) = http_server_series(method, route, status);
        counter.increment(1);
        histogram.record(seconds);
        if let Ok(mut series) = self.series.write() {
            let known = series.entry(route.to_owned()).or_default();
            if !known
                .iter()
                .any(|(m, st, _, _)| *st == status && m == method)
            {
                known.push((method.to_owned(), status, counter, histogram));
            }
        }
    }
}

/// `http_client_requests_total` and `http_client_request_duration_seconds`,
/// labelled `service` (the logical name called), `method` and `status`
/// (`"error"` when no response arrived).
pub fn record_http_client(service: &str, method: &str, status: Option<u16>, duration: Duration) {
    let labels = [
        ("service", service.to_owned()),
        ("method", method.to_owned()),
        (
            "status",
            status.map_or_else(|| "error".to_owned(), |s| s.to_string()),
        ),
    ];
    counter!("http_client_requests_total", &labels).increment(1);
    histogram!("http_client_request_duration_seconds", &labels).record(duration.as_secs_f64());
}

/// `grpc_server_requests_total` and `grpc_server_request_duration_seconds`,
/// labelled `service`, `method` and `code` (numeric gRPC status).
pub fn record_grpc_server(service: &str, method: &str, code: i32, duration: Duration) {
    let labels = [
        ("service", service.to_owned()),
        ("method", method.to_owned()),
        ("code", code.to_string()),
    ];
    counter!("grpc_server_requests_total", &labels).increment(1);
    histogram!("grpc_server_request_duration_seconds", &labels).record(duration.as_secs_f64());
}

/// How handling a consumed message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageOutcome {
    /// Handled and acknowledged.
    Handled,
    /// Failed; scheduled for another attempt.
    Retried,
    /// Moved to the dead-letter queue.
    DeadLettered,
}

impl MessageOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Handled => "handled",
            Self::Retried => "retried",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

/// `messages_consumed_total` and `message_handling_duration_seconds`,
/// labelled `message` and `outcome`.
///
/// `message` is a `&'static str`, a `String` or an `Arc<str>`; only a
/// `String` costs an allocation per call.
pub fn record_message_consumed(
    message: impl Into<SharedString>,
    outcome: MessageOutcome,
    duration: Duration,
) {
    let labels = [
        ("message", message.into()),
        ("outcome", SharedString::const_str(outcome.as_str())),
    ];
    counter!("messages_consumed_total", &labels).increment(1);
    histogram!("message_handling_duration_seconds", &labels).record(duration.as_secs_f64());
}

/// `messages_published_total`, labelled `message` and `outcome`
/// (`"confirmed"`, `"returned"`, `"failed"`).
///
/// `message` is a `&'static str`, a `String` or an `Arc<str>`; only a
/// `String` costs an allocation per call.
pub fn record_message_published(message: impl Into<SharedString>, outcome: &'static str) {
    counter!(
        "messages_published_total",
        "message" => message.into(),
        "outcome" => outcome,
    )
    .increment(1);
}

/// `outbox_messages_total`, labelled `outcome`: `"sent"` (confirmed by the
/// broker), `"failed"` (to be retried later), `"released"` (claimed, not
/// tried, due again at once) or `"lost"` (another relay's claim took them
/// over before this one settled them), counted per relay round.
pub fn record_outbox_round(sent: usize, failed: usize, released: usize, lost: usize) {
    for (outcome, count) in [
        ("sent", sent),
        ("failed", failed),
        ("released", released),
        ("lost", lost),
    ] {
        if count > 0 {
            counter!("outbox_messages_total", "outcome" => outcome)
                .increment(u64::try_from(count).unwrap_or(u64::MAX));
        }
    }
}

/// Records every dispatch of the core dispatcher as
/// `handler_dispatches_total` and `handler_duration_seconds`, labelled
/// `kind`, `name` and `outcome` (`ok` or the error kind). The plug-in adds it
/// to the service's dispatcher with
/// [`DispatcherBuilder::metrics`](mamey_core::cqrs::DispatcherBuilder::metrics).
#[derive(Debug, Clone, Copy, Default)]
pub struct DispatcherMetrics;

impl HandlerMetrics for DispatcherMetrics {
    fn record(&self, outcome: &HandlerOutcome<'_>) {
        let labels = [
            ("kind", outcome.kind.as_str().to_owned()),
            ("name", outcome.name.to_owned()),
            (
                "outcome",
                outcome.error.map_or("ok", |k| k.as_str()).to_owned(),
            ),
        ];
        counter!("handler_dispatches_total", &labels).increment(1);
        histogram!("handler_duration_seconds", &labels).record(outcome.duration.as_secs_f64());
    }
}

/// Updates the standard process gauges: `process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_open_fds`,
/// `process_start_time_seconds` and `process_uptime_seconds` (since
/// `started`). Linux reads `/proc/self`; elsewhere only the times are
/// reported. [`Prometheus::render`](crate::Prometheus::render) calls it.
pub fn record_process(started: std::time::Instant, start_time_unix: f64) {
    // The real process start where the OS tells it, else the time given.
    #[cfg(target_os = "linux")]
    let start = linux::start_time_unix().unwrap_or(start_time_unix);
    #[cfg(not(target_os = "linux"))]
    let start = start_time_unix;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let uptime = if now >= start {
        now - start
    } else {
        started.elapsed().as_secs_f64()
    };
    gauge!("process_start_time_seconds").set(start);
    gauge!("process_uptime_seconds").set(uptime);
    #[cfg(target_os = "linux")]
    {
        if let Some(cpu) = linux::cpu_seconds() {
            gauge!("process_cpu_seconds_total").set(cpu);
        }
        if let Some(rss) = linux::resident_bytes() {
            gauge!("process_resident_memory_bytes").set(rss);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            #[allow(clippy::cast_precision_loss)] // fd counts are far below 2^52
            gauge!("process_open_fds").set(fds.count() as f64);
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    /// Kernel clock ticks per second for `/proc` times; 100 on every
    /// mainstream Linux architecture (reading `sysconf` would need `unsafe`).
    const TICKS_PER_SECOND: f64 = 100.0;

    pub(super) fn cpu_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the parenthesised command name; utime and stime are
        // fields 14 and 15 of the whole line, 12 and 13 after it.
        let rest = stat.rsplit_once(')')?.1;
        let mut fields = rest.split_whitespace().skip(11);
        let utime: f64 = fields.next()?.parse().ok()?;
        let stime: f64 = fields.next()?.parse().ok()?;
        Some((utime + stime) / TICKS_PER_SECOND)
    }

    /// When the process started: its start tick (field 22 of
    /// `/proc/self/stat`) after the boot time in `/proc/stat`.
    pub(super) fn start_time_unix() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let ticks: f64 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(19)?
            .parse()
            .ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let btime: f64 = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Some(btime + ticks / TICKS_PER_SECOND)
    }

    pub(super) fn resident_bytes() -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024.0)
    }
}

#[cfg(feature = "prometheus")]
pub(crate) mod prometheus {
    use std::sync::OnceLock;
    use std::time::Instant;

    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

    use crate::config::MetricsConfig;

    /// The process's recorder: one per process, shared by every service in it.
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

    /// Renders Prometheus text for `GET /metrics`. Cheap to clone.
    #[derive(Clone)]
    pub struct Prometheus {
        pub(crate) handle: PrometheusHandle,
        pub(crate) started: Instant,
        pub(crate) start_time_unix: f64,
    }

    impl std::fmt::Debug for Prometheus {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Prometheus").finish_non_exhaustive()
        }
    }

    impl Prometheus {
        /// The current metrics in Prometheus text format (version 0.0.4),
        /// process metrics refreshed first.
        #[must_use]
        pub fn render(&self) -> String {
            // The process's, not the scraped service's: no `service_name`.
            mamey_core::ServiceScope::unscoped(|| {
                super::record_process(self.started, self.start_time_unix);
            });
            self.handle.render()
        }

        /// Drains histogram buffers; the plug-in calls it periodically.
        pub fn run_upkeep(&self) {
            self.handle.run_upkeep();
        }
    }

    /// The content type of [`Prometheus::render`]'s output.
    pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

    /// Installs the process's recorder on first use; later calls (another
    /// service in the process) share it and their settings are ignored.
    pub(crate) fn install(config: &MetricsConfig) -> Result<Prometheus, String> {
        let handle = HANDLE
            .get_or_init(|| {
                let mut builder = PrometheusBuilder::new()
                    .set_buckets_for_metric(
                        Matcher::Suffix("_seconds".into()),
                        &config.duration_buckets,
                    )
                    .map_err(|e| format!("metrics.duration_buckets: {e}"))?;
                for (k, v) in &config.global_labels {
                    builder = builder.add_global_label(k, v);
                }
                let recorder = builder.build_recorder();
                let handle = recorder.handle();
                // A `service_name` set for the whole process wins over the
                // one of each service (a series cannot carry a label twice).
                let installed = if config.global_labels.contains_key(super::SERVICE_NAME_LABEL) {
                    metrics::set_global_recorder(recorder).map_err(drop)
                } else {
                    metrics::set_global_recorder(super::ServiceNameRecorder::new(recorder))
                        .map_err(drop)
                };
                installed.map_err(|()| {
                    "another metrics recorder is already installed in this process".to_owned()
                })?;
                Ok(handle)
            })
            .clone()?;
        let start_time_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Ok(Prometheus {
            handle,
            started: Instant::now(),
            start_time_unix,
        })
    }
}

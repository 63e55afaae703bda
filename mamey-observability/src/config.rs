//! The `logging`, `tracing` and `metrics` sections.

use std::collections::BTreeMap;
use std::time::Duration;

use mamey_core::config::{ConfigSection, Secret};
use serde::{Deserialize, Serialize};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `json` for every profile but `dev`, where it is `human`.
    Auto,
    /// One line per event for people, with colours on a terminal.
    Human,
    /// One JSON object per line for machines.
    Json,
}

/// The `logging` section.
///
/// ```toml
/// [logging]
/// level = "info"                     # RUST_LOG syntax; RUST_LOG itself wins when set
/// format = "auto"                    # auto | human | json
/// targets = { "sqlx" = "warn" }      # per-target overrides
/// ```
///
/// mamey adds `lapin::returned_messages=error` to the filter — built from
/// `level` and `targets`, from `RUST_LOG`, or set at runtime with
/// [`LogLevel`](crate::LogLevel) — unless it names that target (or one
/// under it). Under that target lapin, the RabbitMQ client, logs every
/// message the broker returns (an unroutable publish) whole at WARN: each
/// header, and the body as decimal bytes — a 1 MB body makes a 5 MB line,
/// and the payload ends up in the logs. mamey-messaging logs the return
/// itself without the payload (exchange, routing key, message id, size).
/// To see lapin's record anyway, name the target:
/// `targets = { "lapin::returned_messages" = "warn" }`. `lapin=debug` alone
/// does not: the more specific directive wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// Whether the plug-in installs logging at all. Default: `true`.
    pub enabled: bool,
    /// Default level or a full filter (`"info,my_crate=debug"`). Default:
    /// `"info"` (with `lapin::returned_messages=error` added; see above).
    pub level: String,
    /// Per-target levels added to `level`. Default: none.
    pub targets: BTreeMap<String, String>,
    /// Line format. Default: `auto`.
    pub format: LogFormat,
    /// Colours in human format when stdout is a terminal. Default: `true`
    /// (off when `NO_COLOR` is set).
    pub ansi: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            level: "info".into(),
            targets: BTreeMap::new(),
            format: LogFormat::Auto,
            ansi: true,
        }
    }
}

impl ConfigSection for LoggingConfig {
    const KEY: &'static str = "logging";
}

impl LoggingConfig {
    /// The filter directive: `level` followed by each `targets` entry.
    #[must_use]
    pub fn directive(&self) -> String {
        let mut parts = vec![self.level.clone()];
        parts.extend(self.targets.iter().map(|(t, l)| format!("{t}={l}")));
        parts.join(",")
    }
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// OTLP/gRPC, usually port 4317.
    Grpc,
    /// OTLP/HTTP with protobuf bodies, usually port 4318, path `/v1/traces`.
    HttpProtobuf,
}

/// Which spans are recorded and exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// Every span.
    Always,
    /// No span (instrumentation stays, nothing is exported).
    Never,
    /// A `ratio` of traces, drawn when the first span of the work starts.
    Ratio,
    /// Follow the caller's decision when there is one, else `ratio`.
    ParentRatio,
}

/// The `tracing` section.
///
/// ```toml
/// [tracing]
/// enabled = true
/// endpoint = "http://127.0.0.1:4317"
/// protocol = "grpc"          # grpc | http_protobuf
/// sampler = "parent_ratio"   # always | never | ratio | parent_ratio
/// ratio = 0.1
/// headers = { "x-api-key" = "…" }
/// ```
///
/// Unset keys fall back to the standard `OTEL_*` variables
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
/// `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_HEADERS`,
/// `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`, `OTEL_SDK_DISABLED`,
/// `OTEL_RESOURCE_ATTRIBUTES`), then to the defaults below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// Whether spans are exported. Default: `false` — no exporter, no cost —
    /// unless an OTLP endpoint is set here or in `OTEL_EXPORTER_OTLP_*`.
    pub enabled: Option<bool>,
    /// Collector URL. Default: `http://127.0.0.1:4317` for gRPC,
    /// `http://127.0.0.1:4318/v1/traces` for HTTP.
    pub endpoint: Option<String>,
    /// Transport. Default: `grpc`.
    pub protocol: Option<Protocol>,
    /// Sampler. Default: `parent_ratio`.
    pub sampler: Option<SamplerKind>,
    /// Share of traces kept by `ratio` and `parent_ratio`, 0.0–1.0. Default: `1.0`.
    pub ratio: Option<f64>,
    /// Headers sent with every export (e.g. an API key).
    pub headers: BTreeMap<String, Secret<String>>,
    /// Time limit of one export. Default: `10s`.
    #[serde(with = "mamey_core::config::duration")]
    pub timeout: Duration,
    /// Spans buffered before new ones are dropped. Default: `2048`.
    pub max_queue_size: usize,
    /// Spans per export. Default: `512`.
    pub max_export_batch_size: usize,
    /// Delay between exports. Default: `5s`.
    #[serde(with = "mamey_core::config::duration")]
    pub scheduled_delay: Duration,
    /// Extra resource attributes (`deployment.environment` defaults to the profile).
    pub resource: BTreeMap<String, String>,
    /// Record `code.file.path`, `code.module.name` and `code.line.number` on
    /// every span (three attributes per span). Default: `false`.
    pub code_location: bool,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            endpoint: None,
            protocol: None,
            sampler: None,
            ratio: None,
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            max_queue_size: 2048,
            max_export_batch_size: 512,
            scheduled_delay: Duration::from_secs(5),
            resource: BTreeMap::new(),
            code_location: false,
        }
    }
}

impl ConfigSection for TracingConfig {
    const KEY: &'static str = "tracing";
}

/// The `metrics` section.
///
/// ```toml
/// [metrics]
/// enabled = true
/// listen = "127.0.0.1:9464"   # optional stand-alone /metrics listener
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether the Prometheus recorder is installed. Default: `true`.
    pub enabled: bool,
    /// Serve `GET /metrics` on this address from the plug-in itself. Default:
    /// none (the web API serves `/metrics`).
    pub listen: Option<String>,
    /// Histogram buckets for durations, in seconds. Default: from 100 µs to
    /// 10 s, dense below 10 ms for sub-millisecond services.
    pub duration_buckets: Vec<f64>,
    /// Labels added to every series (e.g. `region`).
    pub global_labels: BTreeMap<String, String>,
}

/// Default duration buckets, seconds.
pub const DEFAULT_DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
            duration_buckets: DEFAULT_DURATION_BUCKETS.to_vec(),
            global_labels: BTreeMap::new(),
        }
    }
}

impl ConfigSection for MetricsConfig {
    const KEY: &'static str = "metrics";
}

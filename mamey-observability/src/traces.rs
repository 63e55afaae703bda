//! OpenTelemetry traces: settings (config over `OTEL_*`), the tracer provider
//! with a batch exporter over OTLP, and export statistics.

// Without `otlp` there is no exporter to wrap; the settings still resolve.
#![cfg_attr(not(feature = "otlp"), allow(dead_code))]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mamey_core::config::AppConfig;
use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
};

use crate::config::{Protocol, SamplerKind, TracingConfig};

/// The tracing settings after `OTEL_*` variables filled what the `tracing`
/// section left unset.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// Whether spans are exported.
    pub enabled: bool,
    /// Collector URL.
    pub endpoint: String,
    /// Transport.
    pub protocol: Protocol,
    /// Sampler.
    pub sampler: SamplerKind,
    /// Ratio for the ratio samplers.
    pub ratio: f64,
    /// Export headers.
    pub headers: BTreeMap<String, String>,
    /// Extra resource attributes.
    pub resource: BTreeMap<String, String>,
}

/// An `OTEL_*` variable or `tracing` key with a value mamey cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name} = `{value}`: expected {expected}")]
pub struct TraceSettingsError {
    /// The variable or key.
    pub source_name: String,
    /// Its value.
    pub value: String,
    /// What would have been accepted.
    pub expected: &'static str,
}

impl TraceSettings {
    /// Resolves `config` over the `OTEL_*` variables `env` returns.
    ///
    /// # Errors
    /// A variable or key with an unusable value, named.
    pub fn resolve(
        config: &TracingConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, TraceSettingsError> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let bad = |name: &str, value: &str, expected| TraceSettingsError {
            source_name: name.to_owned(),
            value: value.to_owned(),
            expected,
        };

        let protocol = match config.protocol {
            Some(p) => p,
            None => match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", v))
                .or_else(|| {
                    env("OTEL_EXPORTER_OTLP_PROTOCOL").map(|v| ("OTEL_EXPORTER_OTLP_PROTOCOL", v))
                }) {
                None => Protocol::Grpc,
                Some((_, v)) if v == "grpc" => Protocol::Grpc,
                Some((_, v)) if v == "http/protobuf" => Protocol::HttpProtobuf,
                Some((name, v)) => return Err(bad(name, &v, "`grpc` or `http/protobuf`")),
            },
        };
        let env_endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .map(|e| ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", e))
            .or_else(|| {
                env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| {
                    let endpoint = match protocol {
                        Protocol::Grpc => base,
                        Protocol::HttpProtobuf => {
                            format!("{}/v1/traces", base.trim_end_matches('/'))
                        }
                    };
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
                })
            });
        let (endpoint_source, explicit_endpoint) = match (&config.endpoint, env_endpoint) {
            (Some(e), _) => ("tracing.endpoint", Some(e.clone())),
            (None, Some((name, e))) => (name, Some(e)),
            (None, None) => ("tracing.endpoint", None),
        };
        let enabled = match (config.enabled, env("OTEL_SDK_DISABLED")) {
            (Some(enabled), _) => enabled,
            (None, Some(v)) if v.eq_ignore_ascii_case("true") => false,
            (None, _) => explicit_endpoint.is_some(),
        };
        let endpoint = explicit_endpoint.unwrap_or_else(|| match protocol {
            Protocol::Grpc => "http://127.0.0.1:4317".to_owned(),
            Protocol::HttpProtobuf => "http://127.0.0.1:4318/v1/traces".to_owned(),
        });
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(bad(
                endpoint_source,
                &endpoint,
                "an http:// or https:// URL",
            ));
        }

        let env_arg = env("OTEL_TRACES_SAMPLER_ARG");
        let (sampler, env_ratio) = match config.sampler {
            Some(s) => (s, None),
            None => match env("OTEL_TRACES_SAMPLER").as_deref() {
                None | Some("parentbased_traceidratio") => (SamplerKind::ParentRatio, env_arg),
                Some("always_on") => (SamplerKind::Always, None),
                Some("always_off") => (SamplerKind::Never, None),
                Some("traceidratio") => (SamplerKind::Ratio, env_arg),
                Some("parentbased_always_on") => (SamplerKind::ParentRatio, Some("1".into())),
                Some("parentbased_always_off") => (SamplerKind::ParentRatio, Some("0".into())),
                Some(other) => {
                    return Err(bad(
                        "OTEL_TRACES_SAMPLER",
                        other,
                        "always_on, always_off, traceidratio or a parentbased_ variant",
                    ));
                }
            },
        };
        let (ratio_source, ratio) = match (config.ratio, env_ratio) {
            (Some(r), _) => ("tracing.ratio", r),
            (None, Some(v)) => (
                "OTEL_TRACES_SAMPLER_ARG",
                v.parse::<f64>()
                    .map_err(|_| bad("OTEL_TRACES_SAMPLER_ARG", &v, "a number from 0 to 1"))?,
            ),
            (None, None) => ("tracing.ratio", 1.0),
        };
        if !(0.0..=1.0).contains(&ratio) {
            return Err(bad(
                ratio_source,
                &ratio.to_string(),
                "a number from 0 to 1",
            ));
        }

        let mut headers = env("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
            .or_else(|| env("OTEL_EXPORTER_OTLP_HEADERS"))
            .map(|v| parse_pairs(&v))
            .unwrap_or_default();
        headers.extend(
            config
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().clone())),
        );
        let mut resource = env("OTEL_RESOURCE_ATTRIBUTES")
            .map(|v| parse_pairs(&v))
            .unwrap_or_default();
        resource.extend(config.resource.clone());

        Ok(Self {
            enabled,
            endpoint,
            protocol,
            sampler,
            ratio,
            headers,
            resource,
        })
    }

    /// The OpenTelemetry sampler these settings describe. The plug-in itself
    /// samples at the head (before span data is built) and gives the SDK
    /// `AlwaysOn`; this is for providers built outside it.
    #[must_use]
    pub fn sampler(&self) -> Sampler {
        match self.sampler {
            SamplerKind::Always => Sampler::AlwaysOn,
            SamplerKind::Never => Sampler::AlwaysOff,
            SamplerKind::Ratio => Sampler::TraceIdRatioBased(self.ratio),
            SamplerKind::ParentRatio => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(self.ratio)))
            }
        }
    }
}

/// `k1=v1,k2=v2` with percent-decoding, as the `OTEL_*` list variables use.
fn parse_pairs(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k.trim()), percent_decode(v.trim())))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The resource every span carries.
pub(crate) fn resource(app: &AppConfig, extra: &BTreeMap<String, String>) -> Resource {
    let mut attributes: Vec<KeyValue> = extra
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    if !extra.contains_key("deployment.environment") {
        attributes.push(KeyValue::new("deployment.environment", app.profile.clone()));
    }
    attributes.extend([
        KeyValue::new("service.name", app.name.clone()),
        KeyValue::new("service.version", app.version.clone()),
        KeyValue::new("service.instance.id", app.instance_id.clone()),
    ]);
    Resource::builder_empty()
        .with_attributes(attributes)
        .build()
}

/// Counts of what the exporter did, shared with the health check and tests.
#[derive(Debug, Clone, Default)]
pub struct ExportStats {
    inner: Arc<StatsInner>,
}

#[derive(Debug, Default)]
struct StatsInner {
    exported_spans: AtomicU64,
    failed_exports: AtomicU64,
    last_failed: std::sync::atomic::AtomicBool,
    last_logged: std::sync::Mutex<Option<Instant>>,
}

impl ExportStats {
    /// Spans the collector accepted.
    #[must_use]
    pub fn exported_spans(&self) -> u64 {
        self.inner.exported_spans.load(Ordering::Relaxed)
    }

    /// Export calls that failed (collector down, timeout, rejected).
    #[must_use]
    pub fn failed_exports(&self) -> u64 {
        self.inner.failed_exports.load(Ordering::Relaxed)
    }

    /// Whether the most recent export failed.
    #[must_use]
    pub fn last_export_failed(&self) -> bool {
        self.inner.last_failed.load(Ordering::Relaxed)
    }
}

/// How often a failing exporter may log.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// Wraps an exporter to count results and log failures at a throttled rate.
/// Failures never propagate into the service: the batch processor drops the
/// batch and carries on.
#[derive(Debug)]
pub(crate) struct CountingExporter<E> {
    pub(crate) inner: E,
    pub(crate) stats: ExportStats,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        let stats = &self.stats.inner;
        match &result {
            Ok(()) => {
                stats.exported_spans.fetch_add(spans, Ordering::Relaxed);
                stats.last_failed.store(false, Ordering::Relaxed);
            }
            Err(error) => {
                let failures = stats.failed_exports.fetch_add(1, Ordering::Relaxed) + 1;
                stats.last_failed.store(true, Ordering::Relaxed);
                if let Ok(mut last) = stats.last_logged.lock()
                    && last.is_none_or(|t| t.elapsed() >= LOG_EVERY)
                {
                    *last = Some(Instant::now());
                    tracing::warn!(
                        target: "mamey_observability::export",
                        %error, failures, spans,
                        "span export failed; spans dropped (logged at most every 30s)"
                    );
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Builds a tracer provider exporting through `exporter` in batches.
pub(crate) fn provider<E: SpanExporter + 'static>(
    settings: &TraceSettings,
    config: &TracingConfig,
    app: &AppConfig,
    exporter: E,
    stats: ExportStats,
) -> SdkTracerProvider {
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(config.max_queue_size)
        .with_max_export_batch_size(config.max_export_batch_size)
        .with_scheduled_delay(config.scheduled_delay)
        .build();
    let processor = BatchSpanProcessor::builder(CountingExporter {
        inner: exporter,
        stats,
    })
    .with_batch_config(batch)
    .build();
    SdkTracerProvider::builder()
        // The head sampler in front of the layer has decided already.
        .with_sampler(Sampler::AlwaysOn)
        .with_resource(resource(app, &settings.resource))
        .with_span_processor(processor)
        .build()
}

#[cfg(feature = "otlp")]
pub(crate) use otlp::exporter;

#[cfg(feature = "otlp")]
mod otlp {
    use std::fmt;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, Limited};
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    use opentelemetry_http::{HttpClient, HttpError, Request, Response};
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};

    use super::TraceSettings;
    use crate::config::Protocol;

    /// The OTLP exporter for `settings`. Call inside a Tokio runtime: the
    /// exporter's I/O runs on it, while the batch processor's own thread
    /// waits for the result.
    pub(crate) fn exporter(
        settings: &TraceSettings,
        timeout: Duration,
    ) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
        match settings.protocol {
            Protocol::Grpc => {
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (key, value) in &settings.headers {
                    if let (Ok(k), Ok(v)) = (
                        key.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(),
                        value.parse(),
                    ) {
                        metadata.insert(k, v);
                    }
                }
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(settings.endpoint.clone())
                    .with_timeout(timeout)
                    .with_metadata(metadata)
                    .build()
            }
            Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(settings.endpoint.clone())
                .with_timeout(timeout)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_headers(settings.headers.clone().into_iter().collect())
                .with_http_client(RuntimeHttpClient::new(timeout))
                .build(),
        }
    }

    /// An HTTP/1.1 client whose requests run on the Tokio runtime it was
    /// created in, so the SDK's batch thread can await them.
    struct RuntimeHttpClient {
        client: Client<HttpConnector, Full<Bytes>>,
        runtime: tokio::runtime::Handle,
        timeout: Duration,
    }

    impl fmt::Debug for RuntimeHttpClient {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RuntimeHttpClient")
                .field("timeout", &self.timeout)
                .finish_non_exhaustive()
        }
    }

    impl RuntimeHttpClient {
        fn new(timeout: Duration) -> Self {
            Self {
                client: Client::builder(TokioExecutor::new()).build_http(),
                runtime: tokio::runtime::Handle::current(),
                timeout,
            }
        }
    }

    /// Largest collector response read (OTLP responses are tiny).
    const MAX_RESPONSE: usize = 4 * 1024 * 1024;

    #[async_trait::async_trait]
    impl HttpClient for RuntimeHttpClient {
        async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
            let client = self.client.clone();
            let timeout = self.timeout;
            let call = async move {
                let request = request.map(Full::new);
                let response = tokio::time::timeout(timeout, client.request(request))
                    .await
                    .map_err(|_| format!("collector did not answer within {timeout:?}"))??;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, MAX_RESPONSE)
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            };
            self.runtime.spawn(call).await?
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(config: &TracingConfig, vars: &[(&str, &str)]) -> TraceSettings {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TraceSettings::resolve(config, |name| vars.get(name).cloned()).unwrap()
    }

    #[test]
    fn disabled_without_an_endpoint() {
        let s = resolve(&TracingConfig::default(), &[]);
        assert!(!s.enabled);
        assert_eq!(s.endpoint, "http://127.0.0.1:4317");
        assert_eq!(s.sampler, SamplerKind::ParentRatio);
    }

    #[test]
    fn otel_variables_fill_unset_keys() {
        let s = resolve(
            &TracingConfig::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=a%3Db,tenant=acme"),
                ("OTEL_RESOURCE_ATTRIBUTES", "region=eu"),
            ],
        );
        assert!(s.enabled);
        assert_eq!(s.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.sampler, SamplerKind::Ratio);
        assert!((s.ratio - 0.25).abs() < f64::EPSILON);
        assert_eq!(s.headers["x-api-key"], "a=b");
        assert_eq!(s.resource["region"], "eu");
    }

    #[test]
    fn config_keys_win_over_otel_variables() {
        let config = TracingConfig {
            enabled: Some(false),
            endpoint: Some("http://mine:4317".into()),
            sampler: Some(SamplerKind::Always),
            ..TracingConfig::default()
        };
        let s = resolve(
            &config,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://theirs:4317"),
                ("OTEL_TRACES_SAMPLER", "always_off"),
            ],
        );
        assert!(!s.enabled);
        assert_eq!(s.endpoint, "http://mine:4317");
        assert_eq!(s.sampler, SamplerKind::Always);
    }

    #[test]
    fn bad_values_name_their_source() {
        let err = TraceSettings::resolve(&TracingConfig::default(), |name| {
            (name == "OTEL_TRACES_SAMPLER").then(|| "sometimes".to_owned())
        })
        .unwrap_err();
        assert_eq!(err.source_name, "OTEL_TRACES_SAMPLER");
        let config = TracingConfig {
            ratio: Some(1.5),
            ..TracingConfig::default()
        };
        let err = TraceSettings::resolve(&config, |_| None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tracing.ratio = `1.5`: expected a number from 0 to 1"
        );
    }
}

//! In-process OTLP receivers (gRPC and HTTP/protobuf) and a log buffer.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

/// One received span with its resource attributes.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    /// OTLP status message.
    pub status_message: String,
    /// String attributes of the span.
    pub attributes: BTreeMap<String, String>,
    pub resource: BTreeMap<String, String>,
}

/// Everything a receiver got.
#[derive(Debug, Default, Clone)]
pub struct Collected {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

impl Collected {
    fn add(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.resource_spans {
            let resource = strings(
                resource_spans
                    .resource
                    .map(|r| r.attributes)
                    .unwrap_or_default(),
            );
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(ReceivedSpan {
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        status_code: span.status.as_ref().map_or(0, |s| s.code),
                        status_message: span.status.map(|s| s.message).unwrap_or_default(),
                        attributes: strings(span.attributes),
                        resource: resource.clone(),
                    });
                }
            }
        }
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// Polls until a span named `name` arrived, or panics after 20 s.
    pub async fn wait_for(&self, name: &str) -> ReceivedSpan {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(span) = self.spans().into_iter().find(|s| s.name == name) {
                return span;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "span {name:?} never arrived; got {:?}",
                self.spans()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn strings(
    attributes: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
) -> BTreeMap<String, String> {
    attributes
        .into_iter()
        .filter_map(|kv| match kv.value.and_then(|v| v.value) {
            Some(Value::StringValue(s)) => Some((kv.key, s)),
            _ => None,
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Receiver(Collected);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// An OTLP/gRPC receiver on a random loopback port: `(endpoint, collected)`.
pub async fn grpc_receiver() -> (String, Collected) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let collected = Collected::default();
    let service = TraceServiceServer::new(Receiver(collected.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (endpoint, collected)
}

/// An OTLP/HTTP (protobuf) receiver on a random loopback port:
/// `(endpoint of /v1/traces, collected)`.
pub async fn http_receiver() -> (String, Collected) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let collected = Collected::default();
    let sink = collected.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let sink = sink.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            assert_eq!(req.uri().path(), "/v1/traces");
                            assert_eq!(
                                req.headers()["content-type"].to_str().unwrap(),
                                "application/x-protobuf"
                            );
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            sink.add(ExportTraceServiceRequest::decode(body).unwrap());
                            let reply = ExportTraceServiceResponse {
                                partial_success: None,
                            };
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(
                                    reply.encode_to_vec(),
                                )),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (endpoint, collected)
}

/// A service builder with no config files and only `vars` as environment,
/// observed by the plug-in writing logs to `writer`, without a global
/// subscriber (tests make its dispatch current themselves).
pub fn observed<W>(name: &str, vars: &[(&str, &str)], writer: W) -> mamey_core::ServiceBuilder
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    mamey_core::Service::builder(name)
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars(vars.iter().copied())
        .plugin(
            mamey_observability::Observability::new()
                .without_global_subscriber()
                .with_writer(writer)
                .with_env_vars(Vec::<(String, String)>::new()),
        )
}

/// Log lines written by the subscriber, for assertions.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

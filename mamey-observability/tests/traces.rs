//! Spans exported over OTLP to a real in-process receiver, sampling, export
//! failures, and trace context across process boundaries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use mamey_core::cqrs::Command;
use mamey_core::health::{Probe, Status};
use mamey_core::{Error, MessageContext, Service};
use mamey_observability::Telemetry;
use mamey_observability::propagation::{extract, inject};
use support::{Collected, LogBuffer, grpc_receiver, http_receiver};

async fn service(vars: &[(&str, &str)]) -> (Service, Telemetry) {
    let service = support::observed("checkout", vars, LogBuffer::default())
        .version("1.4.2")
        .build()
        .await
        .unwrap();
    let telemetry = service.resources().get::<Telemetry>().unwrap();
    (service, telemetry)
}

async fn exporting_to(endpoint: &str, protocol: &str) -> (Service, Telemetry) {
    service(&[
        ("MAMEY_PROFILE", "staging"),
        ("MAMEY__TRACING__ENDPOINT", endpoint),
        ("MAMEY__TRACING__PROTOCOL", protocol),
        ("MAMEY__TRACING__SAMPLER", "always"),
        ("MAMEY__TRACING__TIMEOUT", "3s"),
    ])
    .await
}

async fn assert_exported_with_resource(service: &Service, telemetry: &Telemetry, got: &Collected) {
    {
        let _guard = tracing::dispatcher::set_default(telemetry.dispatch());
        tracing::info_span!("checkout.pay").in_scope(|| tracing::info!("paying"));
    }
    telemetry.flush().await.unwrap();
    let span = got.wait_for("checkout.pay").await;
    assert_eq!(span.resource["service.name"], "checkout");
    assert_eq!(span.resource["service.version"], "1.4.2");
    assert_eq!(
        span.resource["service.instance.id"],
        service.app().instance_id
    );
    assert_eq!(span.resource["deployment.environment"], "staging");
    assert_eq!(span.trace_id.len(), 32);
    assert!(telemetry.export_stats().exported_spans() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_over_otlp_grpc_with_resource_attributes() {
    let (endpoint, got) = grpc_receiver().await;
    let (service, telemetry) = exporting_to(&endpoint, "grpc").await;
    assert!(telemetry.is_exporting());
    assert_exported_with_resource(&service, &telemetry, &got).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_over_otlp_http_protobuf_with_resource_attributes() {
    let (endpoint, got) = http_receiver().await;
    let (service, telemetry) = exporting_to(&endpoint, "http_protobuf").await;
    assert_exported_with_resource(&service, &telemetry, &got).await;
}

struct Pay;
impl Command for Pay {}

struct Refund;
impl Command for Refund {}

struct Cancel;
impl Command for Cancel {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatched_commands_become_spans() {
    let (endpoint, got) = grpc_receiver().await;
    let (service, telemetry) = exporting_to(&endpoint, "grpc").await;
    drop(service);
    let dispatcher = mamey_core::cqrs::Dispatcher::builder()
        .command(|_: Pay| async { Ok(()) })
        .command(|_: Refund| async { Err(Error::unavailable("bank.down", "bank is down")) })
        .command(|_: Cancel| async { Err(Error::not_found("order.missing", "no such order")) })
        .build()
        .unwrap();
    {
        let _guard = tracing::dispatcher::set_default(telemetry.dispatch());
        dispatcher.send(Pay).await.unwrap();
        dispatcher.send(Refund).await.unwrap_err();
        dispatcher.send(Cancel).await.unwrap_err();
    }
    telemetry.flush().await.unwrap();
    got.wait_for("handle").await;
    let status = |message: &str| {
        let spans = got.spans();
        let span = spans
            .iter()
            .find(|s| s.attributes.get("message.name").map(String::as_str) == Some(message))
            .unwrap_or_else(|| panic!("no span for {message}"));
        span.status_code
    };
    assert_eq!(status("Pay"), 0, "success leaves the status unset");
    assert_eq!(
        status("Refund"),
        2,
        "a service-side failure marks the span as error"
    );
    assert_eq!(
        status("Cancel"),
        0,
        "a caller's mistake is not a span error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampler_never_exports_nothing() {
    let (endpoint, got) = grpc_receiver().await;
    let (_service, telemetry) = service(&[
        ("MAMEY__TRACING__ENDPOINT", endpoint.as_str()),
        ("MAMEY__TRACING__SAMPLER", "never"),
    ])
    .await;
    {
        let _guard = tracing::dispatcher::set_default(telemetry.dispatch());
        for _ in 0..10 {
            tracing::info_span!("unsampled").in_scope(|| tracing::info!("work"));
        }
    }
    // A flush waits for everything buffered; nothing was recorded.
    telemetry.flush().await.unwrap();
    assert!(got.spans().is_empty(), "{:?}", got.spans());
    assert_eq!(telemetry.export_stats().exported_spans(), 0);
    assert_eq!(telemetry.export_stats().failed_exports(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_collector_is_counted_not_raised() {
    // Port 1 on loopback: nothing listens, connections are refused.
    let (service, telemetry) = service(&[
        ("MAMEY__TRACING__ENDPOINT", "http://127.0.0.1:1"),
        ("MAMEY__TRACING__SAMPLER", "always"),
        ("MAMEY__TRACING__TIMEOUT", "2s"),
    ])
    .await;
    let dispatcher = service.dispatcher().clone();
    let served = {
        let _guard = tracing::dispatcher::set_default(telemetry.dispatch());
        let mut served = 0;
        for _ in 0..20 {
            let span = tracing::info_span!("request");
            let _entered = span.enter();
            if dispatcher.send(Pay).await.is_err() {
                // No handler: the dispatch itself fails fast, the service is fine.
                served += 1;
            }
        }
        served
    };
    assert_eq!(served, 20, "every request was answered");
    assert!(telemetry.flush().await.is_err());
    assert!(telemetry.export_stats().failed_exports() >= 1);
    assert!(telemetry.export_stats().last_export_failed());
    let ready = service.health().check(Probe::Ready).await;
    let export = ready
        .checks
        .iter()
        .find(|c| c.name == "span-export")
        .expect("the plug-in registers an export health check");
    assert_eq!(export.result.status, Status::Degraded);
}

/// Emits a client span that injects into `carrier`, then a server span that
/// extracts from it; returns the received (client, server) spans.
async fn round_trip<C: mamey_observability::propagation::Carrier + Default>(
    telemetry: &Telemetry,
    got: &Collected,
    client_name: &'static str,
    server_name: &'static str,
) -> (support::ReceivedSpan, support::ReceivedSpan, MessageContext) {
    let mut carrier = C::default();
    let sent = MessageContext::new().with_correlation_id(format!("corr-{client_name}"));
    let received = {
        let _guard = tracing::dispatcher::set_default(telemetry.dispatch());
        let client = tracing::info_span!("client", otel.name = client_name);
        sent.clone()
            .scope(async {
                let _entered = client.enter();
                inject(&mut carrier);
            })
            .await;
        let extracted = extract(&carrier);
        let server = tracing::info_span!("server", otel.name = server_name);
        extracted.set_parent(&server);
        server.in_scope(|| tracing::info!("handled"));
        extracted.context
    };
    telemetry.flush().await.unwrap();
    let client = got.wait_for(client_name).await;
    let server = got.wait_for(server_name).await;
    assert_eq!(received.correlation_id, sent.correlation_id);
    assert_eq!(
        received.causation_id.as_deref(),
        Some(sent.message_id.as_str())
    );
    (client, server, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_and_correlation_survive_http_headers() {
    let (endpoint, got) = grpc_receiver().await;
    let (_service, telemetry) = exporting_to(&endpoint, "grpc").await;
    let (client, server, _) =
        round_trip::<http::HeaderMap>(&telemetry, &got, "http.client", "http.server").await;
    assert_eq!(server.trace_id, client.trace_id);
    assert_eq!(server.parent_span_id, client.span_id);
}

#[cfg(feature = "amqp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_and_correlation_survive_an_amqp_field_table() {
    let (endpoint, got) = grpc_receiver().await;
    let (_service, telemetry) = exporting_to(&endpoint, "grpc").await;
    let (client, server, _) = round_trip::<amq_protocol_types::FieldTable>(
        &telemetry,
        &got,
        "amqp.publish",
        "amqp.consume",
    )
    .await;
    assert_eq!(server.trace_id, client.trace_id);
    assert_eq!(server.parent_span_id, client.span_id);
}

#[cfg(feature = "grpc")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_and_correlation_survive_grpc_metadata() {
    let (endpoint, got) = grpc_receiver().await;
    let (_service, telemetry) = exporting_to(&endpoint, "grpc").await;
    let (client, server, _) =
        round_trip::<tonic::metadata::MetadataMap>(&telemetry, &got, "grpc.client", "grpc.server")
            .await;
    assert_eq!(server.trace_id, client.trace_id);
    assert_eq!(server.parent_span_id, client.span_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_sampling_follows_the_callers_decision_and_drops_the_rest() {
    let (endpoint, got) = grpc_receiver().await;
    let (_service, telemetry) = service(&[
        ("MAMEY__TRACING__ENDPOINT", endpoint.as_str()),
        ("MAMEY__TRACING__SAMPLER", "parent_ratio"),
        ("MAMEY__TRACING__RATIO", "0"),
    ])
    .await;
    let caller = |flags: &str| {
        MessageContext::new().with_trace(mamey_core::TraceContext {
            traceparent: format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}"),
            tracestate: None,
        })
    };
    {
        let _guard = tracing::dispatcher::set_default(telemetry.dispatch());
        // The caller sampled: recorded, with its child, despite ratio 0.
        caller("01")
            .scope(async {
                tracing::info_span!("sampled.root")
                    .in_scope(|| tracing::info_span!("sampled.child").in_scope(|| {}));
            })
            .await;
        // The caller did not sample, and no caller at all with ratio 0.
        caller("00")
            .scope(async { tracing::info_span!("unsampled.remote").in_scope(|| {}) })
            .await;
        tracing::info_span!("unsampled.root").in_scope(|| {});
    }
    telemetry.flush().await.unwrap();
    let root = got.wait_for("sampled.root").await;
    let child = got.wait_for("sampled.child").await;
    assert_eq!(child.parent_span_id, root.span_id);
    let names: Vec<String> = got.spans().into_iter().map(|s| s.name).collect();
    assert!(
        !names.iter().any(|n| n.starts_with("unsampled")),
        "{names:?}"
    );
}

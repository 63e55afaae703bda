//! Prometheus exposition: RED families with their labels, process metrics,
//! the stand-alone `/metrics` listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use mamey_core::cqrs::Command;
use mamey_core::{Error, Service};
use mamey_observability::metrics::{
    MessageOutcome, record_grpc_server, record_http_client, record_http_server,
    record_message_consumed, record_message_published,
};
use mamey_observability::{MetricsAddress, Prometheus};
use prom_text_format_parser::{Metric, Scrape, Type, ValueType};
use support::LogBuffer;

struct Refund {
    amount: i64,
}

impl Command for Refund {
    fn validate(&self) -> Result<(), Error> {
        if self.amount > 0 {
            Ok(())
        } else {
            Err(Error::invalid_input(
                "refund.invalid",
                "amount must be positive",
            ))
        }
    }
}

async fn service(vars: &[(&str, &str)]) -> Service {
    support::observed("billing", vars, LogBuffer::default())
        .handlers(|d| {
            d.command(|_: Refund| async { Ok(()) });
        })
        .build()
        .await
        .unwrap()
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text).unwrap_or_else(|e| panic!("invalid Prometheus text: {e:?}\n{text}"))
}

fn family<'a>(scrape: &'a Scrape, name: &str, kind: Type) -> &'a Metric {
    let metric = scrape
        .metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no family {name}"));
    assert_eq!(metric.kind, kind, "{name}");
    metric
}

fn has_labels(labels: &prom_text_format_parser::Labels, wanted: &[(&str, &str)]) -> bool {
    wanted
        .iter()
        .all(|(k, v)| labels.iter().any(|l| l.key == *k && l.value == *v))
}

fn counter(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    family(scrape, name, Type::Counter)
        .samples
        .iter()
        .find(|s| has_labels(&s.labels, labels))
        .map_or_else(
            || panic!("{name} {labels:?} missing"),
            |s| s.value.value.as_f64(),
        )
}

fn gauge(scrape: &Scrape, name: &str) -> f64 {
    family(scrape, name, Type::Gauge).samples[0]
        .value
        .value
        .as_f64()
}

/// The observation count of a histogram series, checking it has
/// sub-millisecond buckets.
fn histogram_count(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let samples: Vec<_> = family(scrape, name, Type::Histogram)
        .samples
        .iter()
        .filter(|s| has_labels(&s.labels, labels))
        .collect();
    assert!(
        samples.iter().any(|s| s
            .labels
            .iter()
            .any(|l| l.key == "le" && l.value == "0.0001")),
        "{name} has a 100 µs bucket"
    );
    samples
        .iter()
        .find(|s| s.value.value_type == ValueType::Count)
        .map_or_else(
            || panic!("{name} {labels:?} has no count"),
            |s| s.value.value.as_f64(),
        )
}

#[tokio::test]
async fn red_metrics_render_as_parseable_prometheus_text() {
    let service = service(&[]).await;
    let dispatcher = service.dispatcher().clone();
    dispatcher.send(Refund { amount: 5 }).await.unwrap();
    dispatcher.send(Refund { amount: -1 }).await.unwrap_err();
    record_http_server("GET", "/refunds/{id}", 200, Duration::from_micros(180));
    record_http_server("GET", "/refunds/{id}", 404, Duration::from_micros(90));
    record_http_client("payments", "POST", None, Duration::from_millis(3));
    record_grpc_server("billing.Refunds", "Create", 0, Duration::from_micros(400));
    record_message_consumed(
        "refund_requested",
        MessageOutcome::DeadLettered,
        Duration::from_millis(1),
    );
    record_message_published("refund_issued", "confirmed");

    let prometheus = service.resources().get::<Prometheus>().unwrap();
    let scrape = parse(&prometheus.render());

    let ok = [("kind", "command"), ("name", "Refund"), ("outcome", "ok")];
    let rejected = [
        ("kind", "command"),
        ("name", "Refund"),
        ("outcome", "invalid_input"),
    ];
    assert!(counter(&scrape, "handler_dispatches_total", &ok) >= 1.0);
    assert!(counter(&scrape, "handler_dispatches_total", &rejected) >= 1.0);
    assert!(histogram_count(&scrape, "handler_duration_seconds", &ok) >= 1.0);

    let found = [
        ("method", "GET"),
        ("route", "/refunds/{id}"),
        ("status", "404"),
    ];
    assert!(counter(&scrape, "http_server_requests_total", &found) >= 1.0);
    assert!(histogram_count(&scrape, "http_server_request_duration_seconds", &found) >= 1.0);
    let failed = [
        ("service", "payments"),
        ("method", "POST"),
        ("status", "error"),
    ];
    assert!(counter(&scrape, "http_client_requests_total", &failed) >= 1.0);
    let grpc = [
        ("service", "billing.Refunds"),
        ("method", "Create"),
        ("code", "0"),
    ];
    assert!(counter(&scrape, "grpc_server_requests_total", &grpc) >= 1.0);
    let dead = [
        ("message", "refund_requested"),
        ("outcome", "dead_lettered"),
    ];
    assert!(counter(&scrape, "messages_consumed_total", &dead) >= 1.0);
    let published = [("message", "refund_issued"), ("outcome", "confirmed")];
    assert!(counter(&scrape, "messages_published_total", &published) >= 1.0);
}

#[tokio::test]
async fn process_metrics_are_reported() {
    let service = service(&[]).await;
    let prometheus = service.resources().get::<Prometheus>().unwrap();
    let scrape = parse(&prometheus.render());
    assert!(gauge(&scrape, "process_uptime_seconds") >= 0.0);
    assert!(gauge(&scrape, "process_start_time_seconds") > 1.6e9);
    #[cfg(target_os = "linux")]
    {
        assert!(gauge(&scrape, "process_resident_memory_bytes") > 1e6);
        assert!(gauge(&scrape, "process_open_fds") >= 3.0);
        assert!(gauge(&scrape, "process_cpu_seconds_total") >= 0.0);
    }
}

fn get(address: std::net::SocketAddr, request: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_serves_get_metrics_only() {
    let service = service(&[("MAMEY__METRICS__LISTEN", "127.0.0.1:0")]).await;
    let MetricsAddress(address) = service.resources().get::<MetricsAddress>().unwrap();
    let stop = service.shutdown_handle();
    let running = tokio::spawn(service.run());

    let response = tokio::task::spawn_blocking(move || {
        let ok = get(
            address,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        let wrong = get(
            address,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let missing = get(
            address,
            "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        (ok, wrong, missing)
    })
    .await
    .unwrap();
    let (ok, wrong, missing) = response;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(
        ok.contains("content-type: text/plain; version=0.0.4"),
        "{ok}"
    );
    let body = ok.split_once("\r\n\r\n").unwrap().1;
    parse(body);
    assert!(body.contains("process_uptime_seconds"), "{body}");
    assert!(wrong.starts_with("HTTP/1.1 405"), "{wrong}");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    stop.shutdown();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_bad_listen_address_names_the_key() {
    let error = support::observed(
        "billing",
        &[("MAMEY__METRICS__LISTEN", "everywhere")],
        LogBuffer::default(),
    )
    .build()
    .await
    .unwrap_err();
    assert!(
        error.to_string().ends_with(
            "config key `metrics.listen` (from environment variable `MAMEY__METRICS__LISTEN`): \
             expected host:port, e.g. 127.0.0.1:9464"
        ),
        "{error}"
    );
}

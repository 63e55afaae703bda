//! Two web APIs in one process (its own test binary: the observability
//! plug-in installs the process's subscriber and metrics recorder): each
//! request, over HTTP/1.1 or HTTP/2, logs and counts as its own service's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use mamey_http::WebApi;
use mamey_observability::Observability;
use support::{Served, serve, service};

/// Log output, kept.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;
    fn make_writer(&'a self) -> Lines {
        self.clone()
    }
}

/// A web API whose `GET /ping` logs from a plain axum handler (no
/// dispatcher, which would enter its service's scope by itself).
async fn api(name: &str, lines: &Lines) -> Served {
    serve(
        service(
            name,
            &[("logging.format", "json"), ("logging.level", "info")],
        )
        .plugin(Observability::new().with_writer(lines.clone())),
        WebApi::new().router(Router::new().route(
            "/ping",
            get(|| async {
                tracing::info!("pinged");
                "pong"
            }),
        )),
    )
    .await
}

/// GETs `/ping`, over HTTP/2 (prior knowledge) or HTTP/1.1.
async fn ping(api: &Served, http2: bool) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(http2)
        .build_http::<Full<Bytes>>();
    let response = client.get(api.url("/ping").parse().unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let version = if http2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    assert_eq!(response.version(), version);
    response.into_body().collect().await.unwrap();
}

/// The value of the `http_server_requests_total` series of `/ping` for
/// `service`.
fn requests(text: &str, service: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with("http_server_requests_total{"))
        .find(|l| {
            l.contains("route=\"/ping\"") && l.contains(&format!("service_name=\"{service}\""))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_web_api_logs_and_counts_its_requests_as_its_own() {
    let lines = Lines::default();
    let orders = api("orders", &lines).await;
    let pricing = api("pricing", &Lines::default()).await;
    // HTTP/2 first: its streams run in tasks hyper spawns.
    for http2 in [true, false] {
        ping(&orders, http2).await;
        ping(&pricing, http2).await;
    }

    let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let mut services: Vec<String> = logged
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["message"] == "pinged")
        .map(|l| l["service"].as_str().unwrap().to_owned())
        .collect();
    services.sort();
    assert_eq!(
        services,
        ["orders", "orders", "pricing", "pricing"],
        "{logged}"
    );

    let metrics = support::get(&orders.url("/metrics")).await;
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert_eq!(requests(&text, "orders"), Some(2.0), "{text}");
    assert_eq!(requests(&text, "pricing"), Some(2.0), "{text}");
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("http_server_requests_total{") && !l.contains("service_name=")),
        "every request was counted in a service's scope: {text}"
    );

    orders.service.stop().await.unwrap();
    pricing.service.stop().await.unwrap();
}

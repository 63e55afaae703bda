//! The web API with the observability plug-in (its own test binary: the
//! plug-in installs the process's subscriber and metrics recorder): a
//! server span per request, RED metrics by route template on `/metrics`,
//! the protected log-level endpoint, and garde validation.
#![cfg(feature = "garde")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, StatusCode};
use mamey_core::cqrs::{Command, Query};
use mamey_core::{Error, Identity};
use mamey_http::utoipa::ToSchema;
use mamey_http::{Endpoints, JwtIssuer, WebApi};
use mamey_observability::Observability;
use serde::Deserialize;
use serde_json::json;
use support::{send, serve, service};
use tracing::Subscriber;
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

const SECRET: &str = "telemetry-test-secret-of-32-bytes!";

/// A span's name and fields, as recorded.
type Recorded = (String, BTreeMap<String, String>);

/// Every span, in creation order.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Recorded>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut spans = self.0.lock().unwrap();
        spans.push((attrs.metadata().name().to_owned(), fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(spans.len() - 1);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some(index) = span.extensions().get::<usize>().copied() else {
            return;
        };
        let mut spans = self.0.lock().unwrap();
        values.record(&mut Fields(&mut spans[index].1));
    }
}

#[derive(Debug, Deserialize, ToSchema)]
struct GetOrder {
    id: u64,
}
impl Query for GetOrder {
    type Output = Option<String>;
}

#[derive(Debug, Deserialize, ToSchema, garde::Validate)]
struct PlaceOrder {
    #[garde(length(min = 1))]
    customer: String,
    #[garde(range(min = 1, max = 100))]
    quantity: u32,
}
impl Command for PlaceOrder {
    fn validate(&self) -> Result<(), Error> {
        mamey_http::validate(self)
    }
}

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

#[tokio::test]
async fn spans_metrics_log_level_and_validation() {
    let spans = Spans::default();
    let lines = Lines::default();
    let api = serve(
        service(
            "telemetry",
            &[
                ("http.jwt.secret", SECRET),
                ("logging.level", "info,mamey_http=debug"),
            ],
        )
        .plugin(
            Observability::new()
                .with_writer(lines.clone())
                .with_layer(spans.clone()),
        )
        .handlers(|d| {
            d.query(|q: GetOrder| async move { Ok((q.id == 1).then(|| "ada".to_owned())) })
                .command(|_: PlaceOrder| async { Ok(()) });
        }),
        WebApi::new().endpoints(
            Endpoints::new()
                .get::<GetOrder>("/orders/{id}")
                .post::<PlaceOrder>("/orders"),
        ),
    )
    .await;

    // A server span per request, named by the route template.
    assert_eq!(
        send(Method::GET, &api.url("/orders/1"), &[], Bytes::new())
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(Method::GET, &api.url("/orders/2"), &[], Bytes::new())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let request_spans: Vec<BTreeMap<String, String>> = spans
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, _)| name == "request")
        .map(|(_, fields)| fields.clone())
        .collect();
    assert!(request_spans.len() >= 2, "{request_spans:?}");
    assert_eq!(request_spans[0]["http.route"], "/orders/{id}");
    assert_eq!(request_spans[0]["http.request.method"], "GET");
    assert_eq!(request_spans[0]["http.response.status_code"], "200");
    assert_eq!(request_spans[1]["http.response.status_code"], "404");
    assert!(
        spans
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|(name, f)| name == "handle"
                && f.get("message.name").is_some_and(|n| n == "GetOrder")),
        "the dispatcher's span runs inside the request"
    );

    // Request headers are logged at debug level, sensitive ones redacted.
    send(
        Method::GET,
        &api.url("/orders/1"),
        &[
            ("authorization", "Bearer secret-token-value"),
            ("cookie", "session=s3cr3t"),
            ("x-trace-me", "visible"),
        ],
        Bytes::new(),
    )
    .await;
    let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let request_line = logged
        .lines()
        .find(|l| l.contains("x-trace-me: visible"))
        .unwrap_or_else(|| panic!("no request line in {logged}"));
    assert!(
        request_line.contains(&format!("authorization: {}", mamey_core::config::REDACTED)),
        "{request_line}"
    );
    assert!(
        !logged.contains("secret-token-value") && !logged.contains("s3cr3t"),
        "{logged}"
    );

    // A made-up method is counted, not named.
    let odd = send(
        Method::from_bytes(b"AAA1").unwrap(),
        &api.url("/orders/1"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(odd.status, StatusCode::METHOD_NOT_ALLOWED);

    // RED metrics by route template, never by raw path.
    let metrics = send(Method::GET, &api.url("/metrics"), &[], Bytes::new()).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_server_requests_total{"))
        .collect();
    assert!(
        series
            .iter()
            .any(|l| l.contains("route=\"/orders/{id}\"") && l.contains("status=\"200\"")),
        "{series:?}"
    );
    assert!(
        series
            .iter()
            .any(|l| l.contains("route=\"/orders/{id}\"") && l.contains("status=\"404\"")),
        "{series:?}"
    );
    assert!(!text.contains("/orders/1\""), "no raw paths as labels");
    assert!(
        !text.contains("AAA1") && text.contains("method=\"_OTHER\""),
        "{series:?}"
    );

    // garde rules → 422 with each field.
    let invalid = send(
        Method::POST,
        &api.url("/orders"),
        &[("content-type", "application/json")],
        serde_json::to_vec(&json!({ "customer": "", "quantity": 0 })).unwrap(),
    )
    .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    let problem = invalid.problem();
    let mut fields: Vec<&str> = problem.errors.iter().map(|f| f.field.as_str()).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["customer", "quantity"]);

    // The log level: admins only.
    let issuer = JwtIssuer::hs256(SECRET);
    let admin = format!(
        "Bearer {}",
        issuer
            .issue(&Identity::new("root").with_role("admin"))
            .unwrap()
    );
    let clerk = format!(
        "Bearer {}",
        issuer
            .issue(&Identity::new("bob").with_role("clerk"))
            .unwrap()
    );
    let url = api.url("/log-level");
    assert_eq!(
        send(Method::GET, &url, &[], Bytes::new()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(
            Method::GET,
            &url,
            &[("authorization", &clerk)],
            Bytes::new()
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    let changed = send(
        Method::PUT,
        &url,
        &[
            ("authorization", &admin),
            ("content-type", "application/json"),
        ],
        r#"{ "filter": "warn,telemetry=debug" }"#,
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    let current = send(
        Method::GET,
        &url,
        &[("authorization", &admin)],
        Bytes::new(),
    )
    .await;
    assert!(
        current.json()["filter"]
            .as_str()
            .unwrap()
            .contains("telemetry=debug")
    );
    let bad = send(
        Method::PUT,
        &url,
        &[
            ("authorization", &admin),
            ("content-type", "application/json"),
        ],
        r#"{ "filter": "=[" }"#,
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    bad.problem();

    api.service.stop().await.unwrap();
}

//! The service client against real HTTP servers: context propagation
//! through a second service, retries under the budget, the circuit breaker
//! and outlier ejection, load balancing, configured names pinned over
//! discovery, errors mapped back to mamey kinds, answers of any status
//! (`exchange`), raw bodies, and requests that never left retried whatever
//! their method.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::routing::get;
use bytes::Bytes;
use http::{Method, StatusCode};
use mamey_core::discovery::{ServiceResolver, StaticResolver};
use mamey_core::{ErrorKind, Identity, MessageContext};
use mamey_http::{
    ApiError, BreakerConfig, ClientConfig, JwtIssuer, LoadBalancer, Problem, Resource, RetryConfig,
    ServiceClient, ServiceClientPlugin, WebApi,
};
use support::{send, serve, service};

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes";

/// A server answering every request with the status in `status` (after
/// `failures_left` answers of `502`), counting requests.
struct Upstream {
    address: SocketAddr,
    hits: Arc<AtomicUsize>,
    status: Arc<AtomicU16>,
    failures_left: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start(status: StatusCode) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let status = Arc::new(AtomicU16::new(status.as_u16()));
        let failures_left = Arc::new(AtomicUsize::new(0));
        let (h, s, f) = (
            Arc::clone(&hits),
            Arc::clone(&status),
            Arc::clone(&failures_left),
        );
        let app = axum::Router::new().fallback(move || {
            let (h, s, f) = (Arc::clone(&h), Arc::clone(&s), Arc::clone(&f));
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                let failing = f
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let status = if failing {
                    StatusCode::BAD_GATEWAY
                } else {
                    StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap()
                };
                if status.is_success() {
                    axum::response::IntoResponse::into_response((status, "{\"ok\":true}"))
                } else {
                    axum::response::IntoResponse::into_response(Problem::new(
                        status,
                        "upstream.failed",
                        "failing on purpose",
                    ))
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            address,
            hits,
            status,
            failures_left,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn client(config: ClientConfig, upstreams: &[&Upstream]) -> ServiceClient {
    let resolver = StaticResolver::new().service("up", upstreams.iter().map(|u| u.url()));
    ServiceClient::new(config, ServiceResolver::new(resolver)).unwrap()
}

fn no_backoff(max_attempts: u32, budget_ratio: f64) -> RetryConfig {
    RetryConfig {
        max_attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        budget_ratio,
        budget_min_per_second: 0.0,
    }
}

#[tokio::test]
async fn context_and_token_flow_through_the_client_into_a_second_service() {
    // Service B answers with the message context its handler runs in.
    let b = serve(
        service("b", &[("http.jwt.secret", SECRET)]),
        WebApi::new().router(axum::Router::new().route(
            "/context",
            get(|| async { axum::Json(MessageContext::current()) }),
        )),
    )
    .await;
    // Service A relays to B by name.
    let b_url = format!("[\"{}\"]", b.url(""));
    let a = serve(
        service(
            "a",
            &[
                ("http.jwt.secret", SECRET),
                ("http_client.services.b", &b_url),
                ("http_client.forward_authorization", "true"),
            ],
        )
        .plugin(ServiceClientPlugin::new()),
        WebApi::new().router(axum::Router::new().route(
            "/relay",
            get(|Resource(client): Resource<ServiceClient>| async move {
                let reply = client.get("b", "/context").send().await?;
                Ok::<_, ApiError>(reply.body)
            }),
        )),
    )
    .await;

    let token = JwtIssuer::hs256(SECRET)
        .issue(&Identity::new("ada"))
        .unwrap();
    let bearer = format!("Bearer {token}");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reply = send(
        Method::GET,
        &a.url("/relay"),
        &[
            ("x-request-id", "req-1"),
            ("traceparent", traceparent),
            ("authorization", &bearer),
        ],
        Bytes::new(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let seen: MessageContext = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        seen.correlation_id, "req-1",
        "the correlation id is A's request id"
    );
    assert_eq!(
        seen.causation_id.as_deref(),
        Some("req-1"),
        "B's work was caused by A's request"
    );
    assert_ne!(seen.message_id, "req-1", "B's request has its own id");
    let trace = seen.trace.expect("the trace context arrived").traceparent;
    assert_eq!(
        &trace[3..35],
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "same trace: {trace}"
    );
    assert_eq!(
        seen.identity.expect("the token was forwarded").subject,
        "ada"
    );

    a.service.stop().await.unwrap();
    b.service.stop().await.unwrap();
}

#[tokio::test]
async fn retries_stop_at_the_budget() {
    let upstream = Upstream::start(StatusCode::SERVICE_UNAVAILABLE).await;
    let config = ClientConfig {
        retry: no_backoff(5, 0.5),
        breaker: BreakerConfig {
            failure_threshold: 1000,
            ..BreakerConfig::default()
        },
        ..ClientConfig::default()
    };
    let client = client(config, &[&upstream]);
    for _ in 0..10 {
        let error = client.get("up", "/").send().await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert_eq!(error.code(), "upstream.failed");
    }
    // Each call adds half a token and a retry takes one: 10 calls, 5 retries,
    // although each call would have made 4.
    assert_eq!(upstream.hits(), 15);

    // A POST is not idempotent: never retried unless the call says so.
    let before = upstream.hits();
    for _ in 0..4 {
        client.post("up", "/").send().await.unwrap_err();
    }
    assert_eq!(upstream.hits() - before, 4);
}

#[tokio::test]
async fn retries_recover_from_a_transient_failure() {
    let upstream = Upstream::start(StatusCode::OK).await;
    let client = client(
        ClientConfig {
            retry: RetryConfig {
                budget_min_per_second: 100.0,
                ..no_backoff(3, 0.2)
            },
            ..ClientConfig::default()
        },
        &[&upstream],
    );
    upstream.failures_left.store(2, Ordering::SeqCst);
    let reply = client.get("up", "/").send().await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json::<serde_json::Value>().unwrap()["ok"], true);
    assert_eq!(upstream.hits(), 3, "two failures, one success");
}

#[tokio::test]
async fn the_breaker_opens_then_half_opens() {
    let upstream = Upstream::start(StatusCode::INTERNAL_SERVER_ERROR).await;
    let client = client(
        ClientConfig {
            retry: no_backoff(1, 0.0),
            breaker: BreakerConfig {
                failure_threshold: 3,
                open_for: Duration::from_millis(300),
                // No doubling: the second probe comes as soon as the first.
                max_open_for: Duration::from_millis(300),
            },
            ..ClientConfig::default()
        },
        &[&upstream],
    );
    for _ in 0..3 {
        let error = client.get("up", "/").send().await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Internal);
    }
    let fast = client.get("up", "/").send().await.unwrap_err();
    assert_eq!(fast.code(), "client.circuit_open");
    assert_eq!(fast.kind(), ErrorKind::Unavailable);
    assert_eq!(upstream.hits(), 3, "an open circuit sends nothing");

    // Still failing when the probe goes: open again, still nothing sent after.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while upstream.hits() == 3 {
        let _ = client.get("up", "/").send().await;
        assert!(tokio::time::Instant::now() < deadline, "no probe was sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream.hits(), 4, "exactly one probe");
    assert_eq!(
        client.get("up", "/").send().await.unwrap_err().code(),
        "client.circuit_open"
    );

    // Healthy again: the next probe closes the circuit.
    upstream.status.store(200, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if client.get("up", "/").send().await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the circuit never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        client.get("up", "/").send().await.unwrap();
    }
}

#[tokio::test]
async fn an_outlier_is_ejected_and_probed_back() {
    let healthy = Upstream::start(StatusCode::OK).await;
    let sick = Upstream::start(StatusCode::INTERNAL_SERVER_ERROR).await;
    let open_for = Duration::from_millis(200);
    let client = client(
        ClientConfig {
            load_balancer: LoadBalancer::RoundRobin,
            retry: no_backoff(1, 0.0),
            breaker: BreakerConfig {
                failure_threshold: 2,
                open_for,
                ..BreakerConfig::default()
            },
            ..ClientConfig::default()
        },
        &[&healthy, &sick],
    );

    // Round robin sends every other call to the sick endpoint until its
    // second failure in a row ejects it.
    let mut ejecting_call_sent = None;
    for _ in 0..10 {
        let sent = Instant::now();
        let _ = client.get("up", "/").send().await;
        if sick.hits() == 2 {
            ejecting_call_sent = Some(sent);
            break;
        }
    }
    let ejecting_call_sent = ejecting_call_sent.expect("the sick endpoint was called twice");
    // The ejection began after that call was sent, so it lasts at least
    // until `ejected_until`.
    let ejected_until = ejecting_call_sent + open_for;

    // Meanwhile every call goes to the healthy endpoint and succeeds. (On a
    // slow machine fewer calls fit in the period; none is held to a deadline.)
    for _ in 0..10 {
        if Instant::now() >= ejected_until {
            break;
        }
        client.get("up", "/").send().await.unwrap();
        assert_eq!(sick.hits(), 2, "an ejected endpoint gets no call");
    }

    // Recovered: after the period a probe reaches it, succeeds, and the
    // endpoint is back in rotation.
    sick.status.store(200, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    while sick.hits() == 2 {
        client.get("up", "/").send().await.unwrap();
        assert!(Instant::now() < deadline, "no probe was sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        Instant::now() >= ejected_until,
        "the probe came only after the ejection period"
    );
    let (healthy_before, sick_before) = (healthy.hits(), sick.hits());
    for _ in 0..10 {
        client.get("up", "/").send().await.unwrap();
    }
    assert_eq!(
        (healthy.hits() - healthy_before, sick.hits() - sick_before),
        (5, 5),
        "both endpoints in rotation again"
    );
}

#[tokio::test]
async fn services_in_config_pin_names_over_discovery() {
    let a = Upstream::start(StatusCode::OK).await;
    let b = Upstream::start(StatusCode::OK).await;
    let b_by_discovery = Upstream::start(StatusCode::OK).await;
    // Discovery knows `a`, and `b` elsewhere; the configuration pins `b`.
    let discovery = StaticResolver::new()
        .service("a", [a.url()])
        .service("b", [b_by_discovery.url()]);
    let pinned = format!("[\"{}\"]", b.url());
    let service = service("caller", &[("http_client.services.b", &pinned)])
        .resource(ServiceResolver::new(discovery))
        .plugin(ServiceClientPlugin::new())
        .build()
        .await
        .unwrap();
    let client = service.resources().get::<ServiceClient>().unwrap();

    client.get("a", "/").send().await.unwrap();
    client.get("b", "/").send().await.unwrap();
    assert_eq!(a.hits(), 1, "`a` resolved by discovery");
    assert_eq!(b.hits(), 1, "`b` pinned by `http_client.services`");
    assert_eq!(b_by_discovery.hits(), 0, "the pinned URLs take precedence");

    let unknown = client.get("c", "/").send().await.unwrap_err();
    assert_eq!(unknown.code(), "discovery.no_endpoints");
}

#[tokio::test]
async fn load_is_balanced_across_endpoints() {
    let (one, two) = (
        Upstream::start(StatusCode::OK).await,
        Upstream::start(StatusCode::OK).await,
    );
    let round_robin = client(
        ClientConfig {
            load_balancer: LoadBalancer::RoundRobin,
            ..ClientConfig::default()
        },
        &[&one, &two],
    );
    for _ in 0..10 {
        round_robin.get("up", "/").send().await.unwrap();
    }
    assert_eq!((one.hits(), two.hits()), (5, 5));

    let p2c = client(ClientConfig::default(), &[&one, &two]);
    for _ in 0..40 {
        p2c.get("up", "/").send().await.unwrap();
    }
    assert!(
        one.hits() > 5 && two.hits() > 5,
        "{} {}",
        one.hits(),
        two.hits()
    );
    assert_eq!(one.hits() + two.hits(), 50);

    // A failing endpoint is taken out of rotation by its breaker.
    two.status.store(503, Ordering::SeqCst);
    let breaking = client(
        ClientConfig {
            load_balancer: LoadBalancer::RoundRobin,
            breaker: BreakerConfig {
                failure_threshold: 1,
                open_for: Duration::from_secs(60),
                ..BreakerConfig::default()
            },
            ..ClientConfig::default()
        },
        &[&one, &two],
    );
    for _ in 0..10 {
        breaking.get("up", "/").send().await.unwrap();
    }
}

#[tokio::test]
async fn failures_map_to_mamey_errors() {
    let upstream = Upstream::start(StatusCode::NOT_FOUND).await;
    let client = client(ClientConfig::default(), &[&upstream]);
    let error = client.get("up", "/orders/1").send().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound);
    assert_eq!(error.code(), "upstream.failed");

    // An answer over the size limit is the same on every attempt: not retried.
    let small = self::client(
        ClientConfig {
            max_response_bytes: 4,
            ..ClientConfig::default()
        },
        &[&upstream],
    );
    upstream.status.store(200, Ordering::SeqCst);
    let before = upstream.hits();
    let too_large = small.get("up", "/").send().await.unwrap_err();
    assert_eq!(too_large.kind(), ErrorKind::Internal, "{too_large}");
    assert_eq!(upstream.hits() - before, 1);

    // A path must start with `/`: `@host` after the endpoint would name
    // another host.
    let before = upstream.hits();
    let elsewhere = client
        .get("up", "@evil.example/x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(elsewhere.code(), "client.url");
    assert_eq!(elsewhere.kind(), ErrorKind::Internal);
    assert_eq!(upstream.hits(), before, "nothing sent");

    // A raw space makes no valid URI: a fault of the calling code, so
    // internal (its text stays in the logs), and the message names the
    // service and path, never the endpoint's address.
    let raw = client.get("up", "/prices/A B").send().await.unwrap_err();
    assert_eq!(
        (raw.kind(), raw.code()),
        (ErrorKind::Internal, "client.url")
    );
    assert!(!raw.message().contains("127.0.0.1"), "{raw}");
    assert_eq!(raw.public_message(), "an internal error occurred");
    assert_eq!(upstream.hits(), before, "nothing sent");

    let unknown = client.get("nobody", "/").send().await.unwrap_err();
    assert_eq!(unknown.code(), "discovery.no_endpoints");

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let client = ServiceClient::new(
        ClientConfig {
            retry: no_backoff(1, 0.0),
            ..ClientConfig::default()
        },
        ServiceResolver::new(StaticResolver::new().service("dead", [dead])),
    )
    .unwrap();
    let unreachable = client.get("dead", "/").send().await.unwrap_err();
    assert_eq!(unreachable.kind(), ErrorKind::Unavailable);
    assert_eq!(unreachable.code(), "client.connect_failed");

    let by_url = client
        .request(Method::GET, "http://dead/x")
        .unwrap()
        .send()
        .await
        .unwrap_err();
    assert_eq!(by_url.code(), "client.connect_failed");
}

/// A body whose serialization fails, as a map with a non-string key or a
/// custom `Serialize` can.
struct Unserializable;

impl serde::Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("the amount is not a number"))
    }
}

#[tokio::test]
async fn a_body_that_does_not_serialize_fails_the_call_without_a_request() {
    let upstream = Upstream::start(StatusCode::OK).await;
    let client = client(ClientConfig::default(), &[&upstream]);
    let error = client
        .post("up", "/orders")
        .json(&Unserializable)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Internal, "{error}");
    assert_eq!(error.code(), "client.invalid_body");
    assert!(
        error.message().contains("the amount is not a number"),
        "the message names the cause: {error}"
    );
    assert_eq!(upstream.hits(), 0, "no request was made");

    // The body set last is the one sent: a good body after a bad one goes.
    let reply = client
        .post("up", "/orders")
        .json(&Unserializable)
        .json(&serde_json::json!({ "id": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(upstream.hits(), 1);
}

/// A server answering every request with `status`, a `retry-after` and an
/// `x-upstream` header, and a body naming the request's method, content
/// type and body; counting requests.
async fn answering(status: StatusCode) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let counted = Arc::clone(&counted);
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            let method = request.method().to_string();
            let content_type = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body = axum::body::to_bytes(request.into_body(), 1024)
                .await
                .unwrap();
            let echo = serde_json::json!({
                "method": method,
                "content_type": content_type,
                "body": String::from_utf8_lossy(&body),
            });
            (
                status,
                [
                    (http::header::RETRY_AFTER, "7"),
                    (http::header::CONTENT_TYPE, "application/vnd.echo+json"),
                    (http::header::HeaderName::from_static("x-upstream"), "yes"),
                ],
                echo.to_string(),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits)
}

/// The URL of a port nothing listens on: connecting is refused.
async fn refusing() -> String {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    url
}

/// A server that reads each request and closes the connection without an
/// answer; counting connections.
async fn hanging_up() -> (String, Arc<AtomicUsize>) {
    use tokio::io::AsyncReadExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // The whole head: the request reached the server.
                let mut head = Vec::new();
                let mut buffer = [0; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
            });
        }
    });
    (url, connections)
}

fn client_of(config: ClientConfig, urls: &[&str]) -> ServiceClient {
    let resolver = StaticResolver::new().service("up", urls.iter().map(|u| (*u).to_owned()));
    ServiceClient::new(config, ServiceResolver::new(resolver)).unwrap()
}

#[tokio::test]
async fn exchange_returns_the_answer_whatever_its_status() {
    let (url, hits) = answering(StatusCode::CONFLICT).await;
    let client = client_of(ClientConfig::default(), &[&url]);

    let answer = client.get("up", "/orders/7").exchange().await.unwrap();
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(answer.headers["retry-after"], "7");
    assert_eq!(answer.headers["x-upstream"], "yes");
    assert_eq!(answer.headers["content-type"], "application/vnd.echo+json");
    assert_eq!(answer.json::<serde_json::Value>().unwrap()["method"], "GET");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "a 409 is not retried");

    // `send` is the same call with the answer made an error.
    let error = client.get("up", "/orders/7").send().await.unwrap_err();
    assert_eq!(
        (error.kind(), error.code()),
        (ErrorKind::Conflict, "client.status")
    );
}

#[tokio::test]
async fn exchange_retries_and_counts_as_send_does() {
    let (url, hits) = answering(StatusCode::SERVICE_UNAVAILABLE).await;
    let client = client_of(
        ClientConfig {
            retry: RetryConfig {
                budget_min_per_second: 100.0,
                ..no_backoff(3, 0.0)
            },
            breaker: BreakerConfig {
                failure_threshold: 4,
                ..BreakerConfig::default()
            },
            ..ClientConfig::default()
        },
        &[&url],
    );

    // An idempotent call is retried on 503; the last answer is returned.
    let answer = client.get("up", "/").exchange().await.unwrap();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers["retry-after"], "7");
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    // A POST reached the endpoint: not sent again.
    let answer = client.post("up", "/").exchange().await.unwrap();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(hits.load(Ordering::SeqCst), 4);

    // Four 5xx in a row: the breaker opened, and that is an error.
    let error = client.get("up", "/").exchange().await.unwrap_err();
    assert_eq!(error.code(), "client.circuit_open");
    assert_eq!(hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_raw_body_is_sent_as_it_is_with_its_content_type() {
    let (url, hits) = answering(StatusCode::OK).await;
    let client = client_of(ClientConfig::default(), &[&url]);

    let answer = client
        .post("up", "/imports")
        .body(
            "text/csv; charset=utf-8",
            Bytes::from_static(b"sku,count\n42,3\n"),
        )
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = answer.json().unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["content_type"], "text/csv; charset=utf-8");
    assert_eq!(echo["body"], "sku,count\n42,3\n");

    // The body set last is the one sent, with its own content type.
    let echo: serde_json::Value = client
        .put("up", "/x")
        .body("text/plain", "first")
        .json(&serde_json::json!({ "id": 1 }))
        .send()
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(echo["content_type"], "application/json");
    assert_eq!(echo["body"], "{\"id\":1}");

    // A content type that is no header value fails the call unsent.
    let before = hits.load(Ordering::SeqCst);
    let error = client
        .post("up", "/imports")
        .body("text/csv\r\nx-injected: 1", "a,b")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (error.kind(), error.code()),
        (ErrorKind::Internal, "client.invalid_body")
    );
    assert_eq!(hits.load(Ordering::SeqCst), before, "nothing sent");
}

#[tokio::test]
async fn a_request_that_never_left_is_sent_to_another_endpoint_whatever_its_method() {
    let dead = refusing().await;
    let (live, hits) = answering(StatusCode::CREATED).await;
    let config = || ClientConfig {
        // The dead endpoint first, then the other.
        load_balancer: LoadBalancer::RoundRobin,
        retry: RetryConfig {
            budget_min_per_second: 100.0,
            ..no_backoff(3, 0.0)
        },
        ..ClientConfig::default()
    };

    // A POST is not idempotent, but its connection was refused: nothing
    // was sent, so the retry (to the other endpoint) is safe.
    let client = client_of(config(), &[&dead, &live]);
    let answer = client
        .post("up", "/orders")
        .json(&serde_json::json!({ "items": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // With only dead endpoints the call ends with its own code.
    let client = client_of(config(), &[&dead]);
    let error = client.post("up", "/orders").send().await.unwrap_err();
    assert_eq!(
        (error.kind(), error.code()),
        (ErrorKind::Unavailable, "client.connect_failed")
    );

    // `retry(false)` means never, even for a request that never left.
    let client = client_of(config(), &[&dead, &live]);
    let error = client
        .post("up", "/orders")
        .retry(false)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.code(), "client.connect_failed");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_request_that_may_have_arrived_is_retried_only_when_idempotent() {
    let (url, connections) = hanging_up().await;
    let client = client_of(
        ClientConfig {
            retry: RetryConfig {
                budget_min_per_second: 100.0,
                ..no_backoff(3, 0.0)
            },
            breaker: BreakerConfig {
                failure_threshold: 100,
                ..BreakerConfig::default()
            },
            ..ClientConfig::default()
        },
        &[&url],
    );

    let error = client.post("up", "/orders").send().await.unwrap_err();
    assert_eq!(
        (error.kind(), error.code()),
        (ErrorKind::Unavailable, "client.unreachable")
    );
    assert_eq!(connections.load(Ordering::SeqCst), 1, "a POST is sent once");

    let error = client.get("up", "/orders").send().await.unwrap_err();
    assert_eq!(error.code(), "client.unreachable");
    assert_eq!(connections.load(Ordering::SeqCst), 4, "a GET is retried");
}

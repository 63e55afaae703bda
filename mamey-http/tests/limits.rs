//! Overload protection over real HTTP and gRPC (`http.limits`,
//! `grpc.limits`): rate limits per caller, concurrency per route and in
//! all, adaptive shedding, the exempt health and metrics endpoints, and the
//! rejection metric.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Method, StatusCode};
use mamey_core::{Identity, Service, ServiceBuilder};
use mamey_http::{JwtIssuer, WebApi};
use mamey_observability::Observability;
use support::{Reply, Served, get as http_get, send, serve, service};
use tokio::sync::{Semaphore, mpsc};

const SECRET: &str = "limits-test-secret-of-at-least-32-bytes";

/// The observability plug-in, for `/metrics`, its logs dropped.
fn observability() -> Observability {
    Observability::new().with_writer(std::io::sink)
}

/// A builder like [`service`], reading `toml` as `config/default.toml` too
/// (route templates do not fit in environment variable names). The
/// directory must outlive the build.
fn service_with_file(name: &str, toml: &str) -> (tempfile::TempDir, ServiceBuilder) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("default.toml"), toml).unwrap();
    let builder = Service::builder(name)
        .handle_signals(false)
        .config_dir(dir.path())
        .env_vars([("MAMEY__HTTP__ADDRESS", "127.0.0.1:0")]);
    (dir, builder)
}

/// A handler that says when it has started and waits to be let go.
#[derive(Clone)]
struct Held {
    entered: mpsc::UnboundedSender<()>,
    release: Arc<Semaphore>,
}

impl Held {
    fn new() -> (Self, mpsc::UnboundedReceiver<()>) {
        let (entered, started) = mpsc::unbounded_channel();
        let release = Arc::new(Semaphore::new(0));
        (Self { entered, release }, started)
    }

    fn route(&self) -> axum::routing::MethodRouter {
        let held = self.clone();
        get(move || {
            let held = held.clone();
            async move {
                let _ = held.entered.send(());
                held.release.acquire().await.unwrap().forget();
                "done"
            }
        })
    }
}

/// Waits until a held handler has started.
async fn started(entered: &mut mpsc::UnboundedReceiver<()>) {
    tokio::time::timeout(Duration::from_secs(10), entered.recv())
        .await
        .expect("the handler started")
        .unwrap();
}

/// Sends a GET in the background.
fn spawn_get(url: String) -> tokio::task::JoinHandle<Reply> {
    tokio::spawn(async move { http_get(&url).await })
}

/// The value of the series of `name` with all of `labels`, or 0.
fn counted(metrics: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

async fn metrics(api: &Served) -> String {
    let reply = http_get(&api.url("/metrics")).await;
    assert_eq!(reply.status, StatusCode::OK);
    String::from_utf8(reply.body.to_vec()).unwrap()
}

async fn get_with(api: &Served, path: &str, headers: &[(&str, &str)]) -> Reply {
    send(Method::GET, &api.url(path), headers, Bytes::new()).await
}

/// The reply is the given refusal, with a problem body and `retry-after`.
fn assert_refused(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    let retry_after: u64 = reply
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let problem = reply.problem();
    assert_eq!(problem.status, status.as_u16());
    assert_eq!(problem.code, code);
    assert!(problem.type_uri.starts_with("https://mamey.dev/problems/"));
    assert!(!problem.title.is_empty() && !problem.detail.is_empty());
    assert!(
        !problem.detail.contains("limits") && !problem.detail.contains("127.0.0.1"),
        "no internals: {}",
        problem.detail
    );
}

#[tokio::test]
async fn callers_over_their_rate_get_429_each_in_their_own_bucket() {
    let api = serve(
        service(
            "rated",
            &[
                ("http.jwt.secret", SECRET),
                // One token every 10 s: none comes back during the test.
                ("http.limits.rate.requests_per_second", "0.1"),
                ("http.limits.rate.burst", "2"),
            ],
        )
        .plugin(observability()),
        WebApi::new().router(Router::new().route("/rated", get(|| async { "ok" }))),
    )
    .await;
    let issuer = JwtIssuer::hs256(SECRET);
    let ada = format!("Bearer {}", issuer.issue(&Identity::new("ada")).unwrap());
    let bob = format!("Bearer {}", issuer.issue(&Identity::new("bob")).unwrap());

    for _ in 0..2 {
        assert_eq!(get_with(&api, "/rated", &[]).await.status, StatusCode::OK);
    }
    let refused = get_with(&api, "/rated", &[]).await;
    assert_refused(
        &refused,
        StatusCode::TOO_MANY_REQUESTS,
        "request.rate_limited",
    );
    let problem = refused.problem();
    assert_eq!(problem.type_uri, "https://mamey.dev/problems/rate_limited");
    assert_eq!(problem.title, "Too Many Requests");
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    // No proxy header is trusted: a made-up one is the same caller.
    let spoofed = get_with(&api, "/rated", &[("x-forwarded-for", "203.0.113.99")]).await;
    assert_eq!(spoofed.status, StatusCode::TOO_MANY_REQUESTS);

    // Callers with valid tokens each have their own bucket.
    for _ in 0..2 {
        let reply = get_with(&api, "/rated", &[("authorization", &ada)]).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let ada_again = get_with(&api, "/rated", &[("authorization", &ada)]).await;
    assert_eq!(ada_again.status, StatusCode::TOO_MANY_REQUESTS);
    for _ in 0..2 {
        let reply = get_with(&api, "/rated", &[("authorization", &bob)]).await;
        assert_eq!(reply.status, StatusCode::OK, "bob's bucket is his own");
    }

    // Probes and scrapes are never limited.
    for _ in 0..5 {
        assert_eq!(
            http_get(&api.url("/health/live")).await.status,
            StatusCode::OK
        );
    }
    let text = metrics(&api).await;
    let rate = [("route", "/rated"), ("reason", "rate")];
    assert_eq!(
        counted(&text, "http_server_rejections_total", &rate),
        3,
        "{text}"
    );
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn a_trusted_proxy_header_tells_forwarded_callers_apart() {
    let api = serve(
        service(
            "forwarded",
            &[
                ("http.limits.rate.requests_per_second", "0.1"),
                ("http.limits.rate.burst", "1"),
                ("http.limits.rate.trusted_proxy_header", "x-forwarded-for"),
            ],
        ),
        WebApi::new().router(Router::new().route("/forwarded", get(|| async { "ok" }))),
    )
    .await;
    let from = |address: &'static str| [("x-forwarded-for", address)];

    let first = get_with(&api, "/forwarded", &from("203.0.113.7")).await;
    assert_eq!(first.status, StatusCode::OK);
    let again = get_with(&api, "/forwarded", &from("203.0.113.7")).await;
    assert_eq!(again.status, StatusCode::TOO_MANY_REQUESTS);
    // The proxy appends the address it saw: what a caller writes before it
    // does not change who the caller is.
    let prefixed = get_with(&api, "/forwarded", &from("198.51.100.1, 203.0.113.7")).await;
    assert_eq!(prefixed.status, StatusCode::TOO_MANY_REQUESTS);
    let other = get_with(&api, "/forwarded", &from("198.51.100.9")).await;
    assert_eq!(
        other.status,
        StatusCode::OK,
        "another client, another bucket"
    );
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn a_route_at_its_concurrency_limit_refuses_while_others_answer() {
    let (held, mut entered) = Held::new();
    let (_dir, builder) = service_with_file(
        "route-limited",
        "[http.limits.routes.\"/held/{id}\"]\nmax_concurrency = 1\n",
    );
    let api = serve(
        builder.plugin(observability()),
        WebApi::new().router(
            Router::new()
                .route("/held/{id}", held.route())
                .route("/free", get(|| async { "free" })),
        ),
    )
    .await;

    let first = spawn_get(api.url("/held/1"));
    started(&mut entered).await;
    let refused = http_get(&api.url("/held/2")).await;
    assert_refused(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "request.overloaded",
    );
    assert_eq!(http_get(&api.url("/free")).await.status, StatusCode::OK);
    assert_eq!(
        http_get(&api.url("/health/ready")).await.status,
        StatusCode::OK
    );

    held.release.add_permits(1);
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    // The slot came back.
    held.release.add_permits(1);
    assert_eq!(http_get(&api.url("/held/3")).await.status, StatusCode::OK);

    let text = metrics(&api).await;
    let concurrency = [("route", "/held/{id}"), ("reason", "concurrency")];
    assert_eq!(
        counted(&text, "http_server_rejections_total", &concurrency),
        1,
        "{text}"
    );
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn the_concurrency_limit_spares_health_and_metrics() {
    let (held, mut entered) = Held::new();
    let api = serve(
        // The older key, still honoured.
        service("server-limited", &[("http.concurrency_limit", "1")]).plugin(observability()),
        WebApi::new().router(
            Router::new()
                .route("/busy", held.route())
                .route("/idle", get(|| async { "idle" })),
        ),
    )
    .await;

    let busy = spawn_get(api.url("/busy"));
    started(&mut entered).await;
    let refused = http_get(&api.url("/idle")).await;
    assert_refused(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "request.overloaded",
    );
    for probe in ["/health/live", "/health/ready", "/health/startup"] {
        assert_eq!(
            http_get(&api.url(probe)).await.status,
            StatusCode::OK,
            "{probe}"
        );
    }
    let text = metrics(&api).await;
    let concurrency = [("route", "/idle"), ("reason", "concurrency")];
    assert_eq!(
        counted(&text, "http_server_rejections_total", &concurrency),
        1
    );

    held.release.add_permits(1);
    assert_eq!(busy.await.unwrap().status, StatusCode::OK);
    assert_eq!(http_get(&api.url("/idle")).await.status, StatusCode::OK);
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn a_saturated_service_sheds_while_health_answers() {
    let (held, mut entered) = Held::new();
    let api = serve(
        service(
            "shedding",
            &[
                ("http.limits.shedding.enabled", "true"),
                ("http.limits.shedding.target_latency", "50ms"),
                ("http.limits.shedding.window", "1s"),
                ("http.limits.shedding.buckets", "10"),
                ("http.limits.shedding.min_in_flight", "2"),
            ],
        )
        .plugin(observability()),
        WebApi::new().router(
            Router::new()
                .route("/work/held", held.route())
                .route("/work/fast", get(|| async { "fast" })),
        ),
    )
    .await;

    // The shedder learns what the service does: fast requests through more
    // than two of its 100 ms buckets.
    let learning = Instant::now();
    while learning.elapsed() < Duration::from_millis(300) {
        assert_eq!(
            http_get(&api.url("/work/fast")).await.status,
            StatusCode::OK
        );
    }

    // Handlers that do not finish, until one request more is shed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut in_flight = Vec::new();
    let shed = loop {
        assert!(Instant::now() < deadline, "nothing was shed");
        let mut probe = spawn_get(api.url("/work/held"));
        let answered = tokio::select! {
            Some(()) = entered.recv() => None,
            reply = &mut probe => Some(reply.unwrap()),
        };
        match answered {
            Some(reply) => break reply,
            None => in_flight.push(probe),
        }
    };
    assert_refused(&shed, StatusCode::SERVICE_UNAVAILABLE, "request.shed");
    assert!(in_flight.len() >= 3, "{} held", in_flight.len());
    assert_eq!(
        http_get(&api.url("/health/ready")).await.status,
        StatusCode::OK
    );
    let text = metrics(&api).await;
    let shed_here = [("route", "/work/held"), ("reason", "shed")];
    assert!(counted(&text, "http_server_rejections_total", &shed_here) >= 1);

    held.release.add_permits(in_flight.len());
    for request in in_flight {
        assert_eq!(request.await.unwrap().status, StatusCode::OK);
    }
    api.service.stop().await.unwrap();
}

#[cfg(feature = "grpc")]
mod grpc {
    use std::convert::Infallible;

    use futures_util::future::BoxFuture;
    use mamey_core::discovery::{ServiceResolver, StaticResolver};
    use mamey_http::grpc::{GrpcAddress, GrpcServer};
    use mamey_http::{ClientConfig, ServiceClient};
    use mamey_observability::Prometheus;
    use tonic::server::NamedService;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

    use super::*;

    /// `test.Limited/Ask`: answers every call.
    #[derive(Clone)]
    struct Limited;

    impl NamedService for Limited {
        const NAME: &'static str = "test.Limited";
    }

    struct Ask;

    impl tonic::server::UnaryService<HealthCheckRequest> for Ask {
        type Response = HealthCheckResponse;
        type Future =
            BoxFuture<'static, Result<tonic::Response<HealthCheckResponse>, tonic::Status>>;

        fn call(&mut self, _request: tonic::Request<HealthCheckRequest>) -> Self::Future {
            Box::pin(async { Ok(tonic::Response::new(HealthCheckResponse { status: 1 })) })
        }
    }

    impl tower::Service<http::Request<tonic::body::Body>> for Limited {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

        fn poll_ready(
            &mut self,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(Ask, request).await)
            })
        }
    }

    #[tokio::test]
    async fn a_method_over_its_rate_is_resource_exhausted_while_health_serves() {
        let service = service(
            "grpc-rated",
            &[
                ("grpc.address", "127.0.0.1:0"),
                ("grpc.limits.rate.requests_per_second", "0.1"),
                ("grpc.limits.rate.burst", "2"),
            ],
        )
        .plugin(observability())
        .plugin(GrpcServer::new().service(Limited))
        .build()
        .await
        .unwrap();
        let GrpcAddress(address) = service.resources().get::<GrpcAddress>().unwrap();
        let prometheus = service.resources().get::<Prometheus>().unwrap();
        let service = service.start().await.unwrap();
        let resolver = StaticResolver::new().service("limited", [format!("http://{address}")]);
        let channel = ServiceClient::new(ClientConfig::default(), ServiceResolver::new(resolver))
            .unwrap()
            .grpc("limited");
        let mut client = tonic::client::Grpc::new(channel.clone());
        let path = http::uri::PathAndQuery::from_static("/test.Limited/Ask");
        let ask = || tonic::Request::new(HealthCheckRequest::default());

        for _ in 0..2 {
            client.ready().await.unwrap();
            client
                .unary::<_, HealthCheckResponse, _>(
                    ask(),
                    path.clone(),
                    tonic_prost::ProstCodec::default(),
                )
                .await
                .unwrap();
        }
        client.ready().await.unwrap();
        let refused = client
            .unary::<_, HealthCheckResponse, _>(ask(), path, tonic_prost::ProstCodec::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
        let retry_after = refused.metadata().get("retry-after").unwrap();
        assert!(retry_after.to_str().unwrap().parse::<u64>().unwrap() >= 1);
        assert_eq!(
            mamey_http::grpc::error(&refused).code(),
            "request.rate_limited"
        );

        // The health service is never limited.
        let mut health = HealthClient::new(channel);
        for _ in 0..5 {
            let answer = health.check(HealthCheckRequest::default()).await.unwrap();
            assert_eq!(answer.into_inner().status, 1, "SERVING");
        }
        let text = prometheus.render();
        let rate = [("service", "test.Limited"), ("reason", "rate")];
        assert_eq!(
            counted(&text, "grpc_server_rejections_total", &rate),
            1,
            "{text}"
        );
        service.stop().await.unwrap();
    }
}

/// The status of a GET of `path` sent from the local address `from`.
async fn status_from(api: &Served, from: std::net::IpAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(from, 0)).unwrap();
    let mut stream = socket.connect(api.address).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn anonymous_callers_are_told_apart_by_their_address() {
    let api = serve(
        service(
            "rated-by-address",
            &[
                ("http.limits.rate.requests_per_second", "0.1"),
                ("http.limits.rate.burst", "1"),
            ],
        ),
        WebApi::new().router(Router::new().route("/by-address", get(|| async { "ok" }))),
    )
    .await;
    let first: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let second: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    assert_eq!(status_from(&api, first, "/by-address").await, 200);
    assert_eq!(status_from(&api, first, "/by-address").await, 429);
    // Another client (all of 127/8 is loopback) has its own bucket.
    assert_eq!(status_from(&api, second, "/by-address").await, 200);
    assert_eq!(status_from(&api, second, "/by-address").await, 429);
    api.service.stop().await.unwrap();
}

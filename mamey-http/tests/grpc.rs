//! gRPC over real HTTP/2: health from the service's readiness, per-call
//! context and authentication, error mapping, and channels by name.
#![cfg(feature = "grpc")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use mamey_core::discovery::{ServiceResolver, StaticResolver};
use mamey_core::health::{HealthStatus, Probe};
use mamey_core::{BoxError, Error, ErrorKind, Identity, InitContext, MessageContext, Plugin};
use mamey_http::grpc::{GrpcAddress, GrpcServer};
use mamey_http::{Auth, ClientConfig, JwtIssuer, ServiceClient};
use tonic::server::NamedService;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

const SECRET: &str = "grpc-test-secret-of-at-least-32-bytes";

/// A readiness check the test flips.
struct Gate(Arc<AtomicBool>);

impl Plugin for Gate {
    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let open = Arc::clone(&self.0);
        ctx.health().register("gate", &[Probe::Ready], move || {
            let open = open.load(Ordering::SeqCst);
            async move {
                if open {
                    HealthStatus::healthy()
                } else {
                    HealthStatus::unhealthy("gate closed")
                }
            }
        });
        Ok(())
    }
}

/// `test.Whoami/Ask`, written as tonic's generated code would be: answers
/// `SERVING` when the call ran as `ada` with the caller's trace, fails with
/// a mamey `not_found` when asked for service `"missing"`.
#[derive(Clone)]
struct Whoami;

impl NamedService for Whoami {
    const NAME: &'static str = "test.Whoami";
}

struct Ask;

impl tonic::server::UnaryService<HealthCheckRequest> for Ask {
    type Response = HealthCheckResponse;
    type Future = BoxFuture<'static, Result<tonic::Response<HealthCheckResponse>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<HealthCheckRequest>) -> Self::Future {
        Box::pin(async move {
            if request.get_ref().service == "slow" {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            if request.get_ref().service == "missing" {
                return Err(mamey_http::grpc::status(&Error::not_found(
                    "order.not_found",
                    "no such order",
                )));
            }
            let context = MessageContext::current().unwrap();
            let ada = context
                .identity
                .as_ref()
                .is_some_and(|i| i.subject == "ada");
            let traced = context
                .trace
                .as_ref()
                .is_some_and(|t| t.traceparent.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
            let status = if ada && traced {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            Ok(tonic::Response::new(HealthCheckResponse {
                status: status.into(),
            }))
        })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Whoami {
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

struct Served {
    address: std::net::SocketAddr,
    service: mamey_core::RunningService,
}

async fn start(gate: &Arc<AtomicBool>, auth: Auth) -> Served {
    let service = support::service(
        "orders",
        &[
            ("grpc.address", "127.0.0.1:0"),
            ("grpc.jwt.secret", SECRET),
            ("grpc.health_interval", "20ms"),
        ],
    )
    .plugin(Gate(Arc::clone(gate)))
    .plugin(GrpcServer::new().service(Whoami).auth(auth))
    .build()
    .await
    .unwrap();
    let GrpcAddress(address) = service.resources().get::<GrpcAddress>().unwrap();
    let service = service.start().await.unwrap();
    Served { address, service }
}

fn channel_to(address: std::net::SocketAddr) -> mamey_http::grpc::GrpcChannel {
    let resolver = StaticResolver::new().service("orders", [format!("http://{address}")]);
    ServiceClient::new(ClientConfig::default(), ServiceResolver::new(resolver))
        .unwrap()
        .grpc("orders")
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

#[tokio::test]
async fn health_reports_not_serving_while_the_service_is_not_ready() {
    let gate = Arc::new(AtomicBool::new(true));
    let api = start(&gate, Auth::Anonymous).await;
    let mut health = HealthClient::new(channel_to(api.address));

    let serving = health.check(check("")).await.unwrap().into_inner();
    assert_eq!(serving.status, ServingStatus::Serving as i32);
    let hosted = health
        .check(check("test.Whoami"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hosted.status, ServingStatus::Serving as i32);
    let unknown = health.check(check("nobody.Nothing")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut watch = health.watch(check("")).await.unwrap().into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    gate.store(false, Ordering::SeqCst);
    let changed = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the watch saw the change")
        .unwrap()
        .unwrap();
    assert_eq!(changed.status, ServingStatus::NotServing as i32);
    let not_serving = health.check(check("")).await.unwrap().into_inner();
    assert_eq!(not_serving.status, ServingStatus::NotServing as i32);

    // Stopping ends the open watch instead of waiting for it.
    let stopped = tokio::time::timeout(Duration::from_secs(5), api.service.stop()).await;
    stopped.expect("stopped promptly").unwrap();
    assert!(
        watch.next().await.is_none_or(|m| m.is_err()),
        "the watch ended"
    );
}

#[tokio::test]
async fn calls_carry_context_and_are_authenticated() {
    let gate = Arc::new(AtomicBool::new(true));
    let api = start(&gate, Auth::Authenticated).await;
    let mut client = tonic::client::Grpc::new(channel_to(api.address));
    let path = http::uri::PathAndQuery::from_static("/test.Whoami/Ask");

    let ask = |service: &str, token: Option<&str>| {
        let mut request = tonic::Request::new(check(service));
        request.metadata_mut().insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        request
    };

    client.ready().await.unwrap();
    let anonymous = client
        .unary::<_, HealthCheckResponse, _>(
            ask("", None),
            path.clone(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);

    let token = JwtIssuer::hs256(SECRET)
        .issue(&Identity::new("ada"))
        .unwrap();
    client.ready().await.unwrap();
    let answer = client
        .unary::<_, HealthCheckResponse, _>(
            ask("", Some(&token)),
            path.clone(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.status,
        ServingStatus::Serving as i32,
        "ran as ada, in the caller's trace"
    );

    client.ready().await.unwrap();
    let missing = client
        .unary::<_, HealthCheckResponse, _>(
            ask("missing", Some(&token)),
            path.clone(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let error = mamey_http::grpc::error(&missing);
    assert_eq!(error.kind(), ErrorKind::NotFound);
    assert_eq!(error.code(), "order.not_found");
    let plain = mamey_http::grpc::error(&tonic::Status::deadline_exceeded("slow"));
    assert_eq!(plain.code(), "grpc.deadline_exceeded");
    assert_eq!(plain.kind(), ErrorKind::Unavailable);

    // The caller's deadline ends a slow call (the server's own is 30 s).
    let mut slow = ask("slow", Some(&token));
    slow.set_timeout(Duration::from_millis(100));
    client.ready().await.unwrap();
    let late = client
        .unary::<_, HealthCheckResponse, _>(slow, path, tonic_prost::ProstCodec::default())
        .await
        .unwrap_err();
    assert_eq!(late.code(), tonic::Code::DeadlineExceeded, "{late}");

    // Health stays open to probes without a token.
    let mut health = HealthClient::new(channel_to(api.address));
    assert!(health.check(check("")).await.is_ok());
    api.service.stop().await.unwrap();
}

#[tokio::test]
async fn a_channel_to_a_dead_endpoint_is_unavailable_and_retried_on_request() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    let channel = channel_to(address);
    let mut health = HealthClient::new(channel.clone());
    let status = health.check(check("")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");

    // `retry` tries again (3 attempts by default); NOT_FOUND is not retried.
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let status = channel
        .retry(|| {
            attempts.fetch_add(1, Ordering::SeqCst);
            let mut health = health.clone();
            async move { health.check(check("")).await }
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    let once = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let status = channel
        .retry(|| {
            once.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(tonic::Status::not_found("no")) }
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(once.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_retried_call_moves_off_a_dead_endpoint() {
    // One replica answers, the other has crashed (still registered, as
    // until its lease lapses). Each retried call must reach the live one,
    // whichever endpoint the balancer tries first.
    let served = start(&Arc::new(AtomicBool::new(true)), Auth::Anonymous).await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let resolver = StaticResolver::new().service(
        "orders",
        [
            format!("http://{dead}"),
            format!("http://{}", served.address),
        ],
    );
    // Two attempts a call and a breaker that never opens: only avoiding the
    // endpoint that failed the call's first attempt keeps every call good.
    let mut config = ClientConfig::default();
    config.retry.max_attempts = 2;
    config.retry.initial_backoff = Duration::from_millis(1);
    config.retry.max_backoff = Duration::from_millis(1);
    config.breaker.failure_threshold = u32::MAX;
    let channel = ServiceClient::new(config, ServiceResolver::new(resolver))
        .unwrap()
        .grpc("orders");
    let health = HealthClient::new(channel.clone());
    for _ in 0..40 {
        let answer = channel
            .retry(|| {
                let mut health = health.clone();
                async move { health.check(check("")).await }
            })
            .await;
        assert!(answer.is_ok(), "{answer:?}");
    }
    served.service.stop().await.unwrap();
}

#[tokio::test]
async fn reflection_lists_the_hosted_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let gate = Arc::new(AtomicBool::new(true));
    let api = start(&gate, Auth::Authenticated).await;
    let mut reflection = ServerReflectionClient::new(channel_to(api.address));
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .expect("reflection is open without a token")
        .into_inner();
    let answer = answers.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
    drop(answers);
    api.service.stop().await.unwrap();
}

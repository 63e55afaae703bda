//! The shared resilience suite (`resilience_suite/`) against both transports
//! of the service client: HTTP calls, and (feature `grpc`) gRPC channels.
//! Both go through one runner, so both must show the same breaker, budget
//! and timeout behaviour against real servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod resilience_suite;
mod support;

use axum::response::IntoResponse;
use http::StatusCode;
use mamey_core::{ErrorKind, RunningService};
use mamey_http::{Problem, ServiceClient, WebApi};
use resilience_suite::{Behaviour, Ended, SERVICE, SLOW, Shared, Transport};

/// HTTP calls: `GET /` of a web API, retried as an idempotent call is.
struct Http;

impl Transport for Http {
    type Client = ServiceClient;

    async fn serve(&self, shared: Shared) -> (String, RunningService) {
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                let shared = shared.clone();
                async move {
                    let failed =
                        |status, code| Problem::new(status, code, "on purpose").into_response();
                    match shared.arrive() {
                        Behaviour::Healthy => "{\"ok\":true}".into_response(),
                        Behaviour::Failing => {
                            failed(StatusCode::SERVICE_UNAVAILABLE, "upstream.down")
                        }
                        Behaviour::NotFound => failed(StatusCode::NOT_FOUND, "upstream.not_found"),
                        Behaviour::Slow => {
                            tokio::time::sleep(SLOW).await;
                            "{\"ok\":true}".into_response()
                        }
                    }
                }
            }),
        );
        let served =
            support::serve(support::service("upstream", &[]), WebApi::new().router(app)).await;
        (served.url(""), served.service)
    }

    fn client(&self, client: ServiceClient) -> ServiceClient {
        client
    }

    async fn call(&self, client: &ServiceClient) -> Ended {
        match client.get(SERVICE, "/").send().await {
            Ok(_) => Ended::Ok,
            Err(error) => match (error.kind(), error.code()) {
                (_, "client.timeout") => Ended::TimedOut,
                (_, "client.circuit_open") => Ended::CircuitOpen,
                (ErrorKind::Unavailable, "upstream.down") => Ended::Unavailable,
                (ErrorKind::NotFound, _) => Ended::NotFound,
                _ => Ended::Other(error.to_string()),
            },
        }
    }
}

#[cfg(feature = "grpc")]
mod grpc_upstream {
    //! A gRPC service whose one method answers as the test says, hosted by
    //! `GrpcServer`; written as tonic's generated code would be.

    use std::convert::Infallible;

    use futures_util::future::BoxFuture;
    use tonic::server::NamedService;
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

    use super::resilience_suite::{Behaviour, SLOW, Shared};

    pub(super) const PATH: &str = "/test.Upstream/Call";

    #[derive(Clone)]
    pub(super) struct Upstream(pub(super) Shared);

    impl NamedService for Upstream {
        const NAME: &'static str = "test.Upstream";
    }

    struct Call(Shared);

    impl tonic::server::UnaryService<HealthCheckRequest> for Call {
        type Response = HealthCheckResponse;
        type Future =
            BoxFuture<'static, Result<tonic::Response<HealthCheckResponse>, tonic::Status>>;

        fn call(&mut self, _request: tonic::Request<HealthCheckRequest>) -> Self::Future {
            let behaviour = self.0.arrive();
            Box::pin(async move {
                match behaviour {
                    Behaviour::Healthy => {}
                    Behaviour::Failing => return Err(tonic::Status::unavailable("on purpose")),
                    Behaviour::NotFound => return Err(tonic::Status::not_found("on purpose")),
                    Behaviour::Slow => tokio::time::sleep(SLOW).await,
                }
                Ok(tonic::Response::new(HealthCheckResponse::default()))
            })
        }
    }

    impl tower::Service<http::Request<tonic::body::Body>> for Upstream {
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
            let call = Call(self.0.clone());
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(call, request).await)
            })
        }
    }
}

/// gRPC channels: a unary call through `GrpcChannel::retry`, retried after
/// `UNAVAILABLE` as a call that is safe to repeat.
#[cfg(feature = "grpc")]
struct Grpc;

#[cfg(feature = "grpc")]
impl Transport for Grpc {
    type Client = mamey_http::grpc::GrpcChannel;

    async fn serve(&self, shared: Shared) -> (String, RunningService) {
        use mamey_http::grpc::{GrpcAddress, GrpcServer};

        let service = support::service("upstream", &[("grpc.address", "127.0.0.1:0")])
            .plugin(GrpcServer::new().service(grpc_upstream::Upstream(shared)))
            .build()
            .await
            .unwrap();
        let GrpcAddress(address) = service.resources().get::<GrpcAddress>().unwrap();
        (format!("http://{address}"), service.start().await.unwrap())
    }

    fn client(&self, client: ServiceClient) -> Self::Client {
        client.grpc(SERVICE)
    }

    async fn call(&self, channel: &Self::Client) -> Ended {
        use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

        let grpc = tonic::client::Grpc::new(channel.clone());
        let answer = channel
            .retry(|| {
                let mut grpc = grpc.clone();
                async move {
                    grpc.ready()
                        .await
                        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
                    grpc.unary::<_, HealthCheckResponse, _>(
                        tonic::Request::new(HealthCheckRequest::default()),
                        http::uri::PathAndQuery::from_static(grpc_upstream::PATH),
                        tonic_prost::ProstCodec::default(),
                    )
                    .await
                }
            })
            .await;
        match answer {
            Ok(_) => Ended::Ok,
            Err(status) => match status.code() {
                tonic::Code::DeadlineExceeded => Ended::TimedOut,
                tonic::Code::Unavailable if status.message().ends_with("not calling") => {
                    Ended::CircuitOpen
                }
                tonic::Code::Unavailable => Ended::Unavailable,
                tonic::Code::NotFound => Ended::NotFound,
                _ => Ended::Other(status.to_string()),
            },
        }
    }
}

/// One test per case of the suite, for `$transport`.
macro_rules! suite {
    ($transport:expr) => {
        use super::resilience_suite as suite;

        #[tokio::test]
        async fn a_failing_endpoint_is_ejected_and_calls_go_to_the_healthy_one() {
            suite::a_failing_endpoint_is_ejected_and_calls_go_to_the_healthy_one(&$transport).await;
        }

        #[tokio::test]
        async fn calls_fail_at_once_when_every_endpoint_is_ejected() {
            suite::calls_fail_at_once_when_every_endpoint_is_ejected(&$transport).await;
        }

        #[tokio::test]
        async fn retries_stop_when_the_budget_is_spent() {
            suite::retries_stop_when_the_budget_is_spent(&$transport).await;
        }

        #[tokio::test]
        async fn a_non_retryable_failure_is_not_retried() {
            suite::a_non_retryable_failure_is_not_retried(&$transport).await;
        }

        #[tokio::test]
        async fn timeouts_count_as_failures() {
            suite::timeouts_count_as_failures(&$transport).await;
        }
    };
}

mod http_calls {
    suite!(super::Http);
}

#[cfg(feature = "grpc")]
mod grpc_channels {
    suite!(super::Grpc);
}

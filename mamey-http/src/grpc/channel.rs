//! Channels to other services by name, for tonic's generated clients: each
//! call goes through the service client's resilience runner with a gRPC
//! attempt of its own, sharing the client's breakers and retry budget.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::BoxFuture;
use http::{Request, Response};
use mamey_core::BoxError;
use mamey_core::discovery::Endpoint;
use tonic::{Code, Status};
use tower::{Service, ServiceExt};

use super::status::{grpc_status, status_of};
use crate::client::error::circuit_open;
use crate::client::resilience::{Attempt, Health, Outcome, Refusal, Resilience, Verdict};
use crate::client::{ServiceClient, propagate};

/// A channel to a service by name, for tonic's generated clients: each call
/// is sent to an endpoint the resolver names, picked by the client's load
/// balancer among those whose circuit is closed, with the caller's context
/// in the metadata and `http_client.timeout` per call.
///
/// Calls are not retried by the channel: a gRPC request body is a stream
/// that cannot be sent twice in general. Retry calls that are safe to repeat
/// with [`GrpcChannel::retry`].
///
/// Make one channel per service and clone it: clones share connections,
/// while each `grpc()` call starts with none.
///
/// ```no_run
/// # async fn demo(client: mamey_http::ServiceClient) {
/// let channel = client.grpc("orders");
/// let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
/// # }
/// ```
#[derive(Clone)]
pub struct GrpcChannel {
    resilience: Arc<Resilience>,
    service: Arc<str>,
    channels: Arc<RwLock<HashMap<Endpoint, tonic::transport::Channel>>>,
}

impl fmt::Debug for GrpcChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcChannel")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl ServiceClient {
    /// A channel to `service` for tonic clients (feature `grpc`).
    #[must_use]
    pub fn grpc(&self, service: &str) -> GrpcChannel {
        GrpcChannel {
            resilience: Arc::clone(self.resilience()),
            service: Arc::from(service),
            channels: Arc::default(),
        }
    }
}

impl GrpcChannel {
    /// Runs `call` again after `UNAVAILABLE` or `RESOURCE_EXHAUSTED`, as
    /// `http_client.retry` allows: attempts, backoff with jitter, and the
    /// retry budget shared with the HTTP calls. Only for calls that are safe
    /// to repeat; `call` builds a fresh request each time.
    ///
    /// ```no_run
    /// # async fn demo(client: mamey_http::ServiceClient) -> Result<(), tonic::Status> {
    /// use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    ///
    /// let channel = client.grpc("orders");
    /// let health = HealthClient::new(channel.clone());
    /// let answer = channel
    ///     .retry(|| {
    ///         let mut health = health.clone();
    ///         async move { health.check(HealthCheckRequest::default()).await }
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The last attempt's status.
    pub async fn retry<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.resilience
            .retry(&self.service, call, |status: &Status| {
                matches!(status.code(), Code::Unavailable | Code::ResourceExhausted)
            })
            .await
    }

    /// The endpoint's channel, connected on first use.
    fn channel(&self, endpoint: &Endpoint) -> Result<tonic::transport::Channel, Status> {
        if let Ok(channels) = self.channels.read()
            && let Some(channel) = channels.get(endpoint)
        {
            return Ok(channel.clone());
        }
        let channel = tonic::transport::Endpoint::from_shared(endpoint.url.clone())
            .map_err(|e| Status::invalid_argument(format!("endpoint `{endpoint}`: {e}")))?
            .connect_timeout(self.resilience.config().connect_timeout)
            .connect_lazy();
        if let Ok(mut channels) = self.channels.write() {
            channels.insert(endpoint.clone(), channel.clone());
        }
        Ok(channel)
    }
}

impl Service<Request<tonic::body::Body>> for GrpcChannel {
    type Response = Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<tonic::body::Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let started = Instant::now();
            let config = this.resilience.config();
            propagate(request.headers_mut(), config.forward_authorization);
            let mut attempt = GrpcAttempt {
                channel: &this,
                request: Some(request),
            };
            // One attempt: the request's body cannot be sent twice.
            let (result, _) = this
                .resilience
                .attempt(&this.service, config.timeout, &mut attempt)
                .await;
            let status = match &result {
                Ok(response) => Some(Some(response.status().as_u16())),
                Err(failure) if failure.cause.sent() => Some(None),
                // Nothing went out: not counted.
                Err(_) => None,
            };
            if let Some(status) = status {
                mamey_observability::metrics::record_http_client(
                    &this.service,
                    "GRPC",
                    status,
                    started.elapsed(),
                );
            }
            result.map_err(|failure| Box::new(failure.status) as BoxError)
        })
    }
}

/// One call of a channel, sent to the endpoint the runner picks.
struct GrpcAttempt<'a> {
    channel: &'a GrpcChannel,
    /// Taken by the one attempt.
    request: Option<Request<tonic::body::Body>>,
}

/// A call that got no answer: why, and the status for the caller.
struct Failed {
    cause: Cause,
    status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// Never sent: the name did not resolve, or every circuit is open.
    Refused,
    /// An endpoint URL tonic cannot use, or a request already sent.
    Unsendable,
    /// A connection error.
    Unreachable,
    /// No answer within `http_client.timeout`.
    TimedOut,
    /// The request's own deadline (`grpc-timeout`) expired first.
    CallerDeadline,
}

impl Cause {
    /// Whether the request went out (and so is counted in the metrics).
    fn sent(self) -> bool {
        matches!(
            self,
            Self::Unreachable | Self::TimedOut | Self::CallerDeadline
        )
    }
}

impl Failed {
    fn new(cause: Cause, status: Status) -> Self {
        Self { cause, status }
    }
}

impl Attempt for GrpcAttempt<'_> {
    type Output = Response<tonic::body::Body>;
    type Error = Failed;

    fn send(
        &mut self,
        endpoint: &Endpoint,
    ) -> impl Future<Output = Result<Self::Output, Failed>> + Send {
        let channel = self.channel.channel(endpoint);
        let request = self.request.take();
        let service = &*self.channel.service;
        async move {
            let channel = channel.map_err(|status| Failed::new(Cause::Unsendable, status))?;
            let Some(request) = request else {
                return Err(Failed::new(
                    Cause::Unsendable,
                    Status::internal("a gRPC request is sent once"),
                ));
            };
            channel.oneshot(request).await.map_err(|e| {
                if caused_by_timeout(&e) {
                    Failed::new(
                        Cause::CallerDeadline,
                        Status::deadline_exceeded(format!(
                            "`{service}` did not answer within the call's deadline"
                        )),
                    )
                } else {
                    Failed::new(
                        Cause::Unreachable,
                        Status::unavailable(format!("calling `{service}` at {endpoint}: {e}")),
                    )
                }
            })
        }
    }

    fn classify(&self, result: &Result<Self::Output, Failed>) -> Verdict {
        match result {
            // Only a trailers-only answer's status is seen here; one sent
            // after a body is not.
            Ok(response) if grpc_status(response.headers()) == Some(Code::Unavailable as i32) => {
                Verdict::new(Outcome::Retryable, Health::Down)
            }
            Ok(_) => Verdict::new(Outcome::Success, Health::Up),
            Err(failed) => match failed.cause {
                Cause::Unreachable | Cause::TimedOut => {
                    Verdict::new(Outcome::Retryable, Health::Down)
                }
                // The caller's own deadline: not the endpoint's failure.
                Cause::CallerDeadline => Verdict::new(Outcome::Final, Health::Up),
                Cause::Refused | Cause::Unsendable => {
                    Verdict::new(Outcome::Final, Health::Unjudged)
                }
            },
        }
    }

    fn refused(&self, refusal: Refusal) -> Failed {
        let service = &*self.channel.service;
        match refusal {
            Refusal::Unresolved(error) => Failed::new(Cause::Refused, status_of(&error)),
            Refusal::CircuitOpen => {
                Failed::new(Cause::Refused, Status::unavailable(circuit_open(service)))
            }
            Refusal::TimedOut(timeout) => Failed::new(
                Cause::TimedOut,
                Status::deadline_exceeded(format!(
                    "`{service}` did not answer within {} ms",
                    timeout.as_millis()
                )),
            ),
        }
    }
}

/// Whether tonic gave up because the request's `grpc-timeout` expired.
fn caused_by_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        current = error.source();
    }
    false
}

//! The tower layer running the limits before the routes, the same for the
//! web API and gRPC; the transport's part is a [`Protocol`].

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use futures_util::future::{BoxFuture, Either};
use http::Request;
use tower::{Layer, Service};

use super::{Admission, Check, Limits, Protocol};

/// The layer of [`LimitsService`].
#[derive(Debug, Clone)]
pub(crate) struct LimitsLayer<P> {
    limits: Arc<Limits>,
    protocol: P,
}

impl<P> LimitsLayer<P> {
    pub(crate) fn new(limits: Arc<Limits>, protocol: P) -> Self {
        Self { limits, protocol }
    }
}

impl<S, P: Clone> Layer<S> for LimitsLayer<P> {
    type Service = LimitsService<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        LimitsService {
            limits: Arc::clone(&self.limits),
            protocol: self.protocol.clone(),
            inner,
        }
    }
}

/// Runs the limits before the routes.
#[derive(Debug, Clone)]
pub(crate) struct LimitsService<S, P> {
    limits: Arc<Limits>,
    protocol: P,
    inner: S,
}

type Answer = Result<Response, Infallible>;

impl<S, P> Service<Request<Body>> for LimitsService<S, P>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    // Routes' futures are (axum's `RouteFuture`): admitted requests cost
    // no allocation.
    S::Future: Unpin + Send + 'static,
    P: Protocol,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Admitted<S::Future>, Either<Ready<Answer>, BoxFuture<'static, Answer>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Routes are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let Some(template) = self.protocol.target(&request) else {
            return Either::Left(Admitted {
                response: self.inner.call(request),
                admission: None,
            });
        };
        let route = template.and_then(|t| self.limits.concurrency.route(t));
        match self.limits.check(&request, route) {
            Check::Admitted(admission) => Either::Left(Admitted {
                response: self.inner.call(request),
                admission: Some(admission),
            }),
            Check::Rejected(rejection) => Either::Right(Either::Left(ready(Ok(self
                .protocol
                .reject(&request, rejection))))),
            Check::Queued(route, shed) => {
                let ready = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, ready);
                let (limits, protocol) = (Arc::clone(&self.limits), self.protocol.clone());
                Either::Right(Either::Right(Box::pin(async move {
                    match limits.wait(route, shed).await {
                        Ok(admission) => {
                            let response = inner.call(request).await;
                            drop(admission);
                            response
                        }
                        Err(rejection) => Ok(protocol.reject(&request, rejection)),
                    }
                })))
            }
        }
    }
}

/// The routes' response future, holding the request's admission (none for
/// an exempt request) until the response is made or the request dropped.
#[derive(Debug)]
pub(crate) struct Admitted<F> {
    response: F,
    admission: Option<Admission>,
}

impl<F: Future + Unpin> Future for Admitted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let output = std::task::ready!(Pin::new(&mut self.response).poll(cx));
        self.admission = None;
        Poll::Ready(output)
    }
}

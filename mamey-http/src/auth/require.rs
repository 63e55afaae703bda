//! Authorization for plain axum routes and handlers: the [`require`]
//! route layer and the [`Caller`] extractor.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use mamey_core::Identity;

use super::authorize::{Policies, unauthorized};
use super::{Auth, Authentication};

/// An [`Auth`] requirement for plain axum routes, as a route layer: `401`
/// or `403` problem before the handler runs, as for DSL endpoints.
///
/// ```
/// use axum::Router;
/// use axum::routing::get;
/// use mamey_http::{Auth, require};
///
/// let admin: Router = Router::new()
///     .route("/admin/stats", get(|| async { "…" }))
///     .route_layer(require(Auth::roles(["admin"])));
/// ```
#[must_use]
pub fn require(auth: Auth) -> RequireLayer {
    RequireLayer {
        auth: Arc::new(auth),
    }
}

/// The layer [`require`] makes.
#[derive(Debug, Clone)]
pub struct RequireLayer {
    auth: Arc<Auth>,
}

impl<S> tower::Layer<S> for RequireLayer {
    type Service = Require<S>;

    fn layer(&self, inner: S) -> Require<S> {
        Require {
            auth: Arc::clone(&self.auth),
            inner,
        }
    }
}

/// The service [`RequireLayer`] makes.
#[derive(Debug, Clone)]
pub struct Require<S> {
    auth: Arc<Auth>,
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for Require<S>
where
    S: tower::Service<http::Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future =
        futures_util::future::Either<std::future::Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The named policies come with the request (the pipeline adds them
        // when bearer tokens are validated); without them no identity
        // exists and every requirement but `Anonymous` is unmet.
        let empty = Policies::default();
        let policies = request
            .extensions()
            .get::<Arc<Policies>>()
            .map_or(&empty, |p| p.as_ref());
        match policies.authorize(&self.auth, request.extensions().get::<Authentication>()) {
            Ok(()) => futures_util::future::Either::Right(self.inner.call(request)),
            Err(denied) => {
                futures_util::future::Either::Left(std::future::ready(Ok(denied.into_response())))
            }
        }
    }
}

/// The authenticated caller, as an extractor for plain axum handlers:
/// rejects with `401` when the request has no valid bearer token.
///
/// ```
/// use mamey_http::Caller;
///
/// async fn me(Caller(identity): Caller) -> String {
///     identity.subject
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        match parts.extensions.get::<Authentication>() {
            Some(Authentication::Valid(identity)) => Ok(Self(identity.clone())),
            Some(Authentication::Invalid(reason)) => Err(unauthorized(reason)),
            _ => Err(unauthorized("a bearer token is required")),
        }
    }
}

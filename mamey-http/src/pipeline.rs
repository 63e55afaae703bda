//! mamey's request pipeline: one tower layer doing, per request, load
//! shedding, the body-size check, context extraction, authentication, the
//! server span, the timeout, the `x-request-id` response header and the RED
//! metrics — in one future, so the default stack costs one allocation.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::MatchedPath;
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use std::panic::AssertUnwindSafe;

use std::future::Future;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Either};
use http::{HeaderName, HeaderValue, Request, StatusCode, header};
use tower::{Layer, Service};
use tower_http::compression::{Compression, CompressionLayer};
use tracing::Instrument;

use crate::auth::{Authentication, Authenticator, as_caller, inbound};
use crate::problem::{Problem, too_large};
use mamey_observability::metrics::HttpServerMetrics;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The settings the pipeline runs with.
pub(crate) struct Pipeline {
    pub(crate) timeout: Duration,
    pub(crate) body_limit: usize,
    pub(crate) authenticator: Option<Arc<Authenticator>>,
    /// The named policies, for [`require`](crate::require) on plain routes.
    pub(crate) policies: Arc<crate::auth::Policies>,
    pub(crate) sensitive_headers: Vec<HeaderName>,
    pub(crate) metrics: HttpServerMetrics,
    /// Gzip answers for clients that accept it (`http.compression`).
    pub(crate) compression: bool,
    /// The service's resources, set when the web API starts.
    pub(crate) resources: OnceLock<Arc<mamey_core::Resources>>,
}

#[derive(Clone)]
pub(crate) struct PipelineLayer(pub(crate) Arc<Pipeline>);

impl<S: Clone> Layer<S> for PipelineLayer {
    type Service = PipelineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PipelineService {
            pipeline: Arc::clone(&self.0),
            compressed: self
                .0
                .compression
                .then(|| CompressionLayer::new().layer(inner.clone())),
            inner,
        }
    }
}

/// The pipeline around the routes, and the routes behind compression for
/// the requests that accept it (so the others' bodies are not wrapped).
#[derive(Clone)]
pub(crate) struct PipelineService<S> {
    pipeline: Arc<Pipeline>,
    inner: S,
    compressed: Option<Compression<S>>,
}

impl<S> Service<Request<Body>> for PipelineService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Routes are always ready; readiness is taken in `call` (the clone's).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let pipeline = Arc::clone(&self.pipeline);
        // The clone is ready (axum routes always are); keep the original.
        let accepts_encoding = request.headers().contains_key(header::ACCEPT_ENCODING);
        let handler = match &self.compressed {
            Some(compressed) if accepts_encoding => Either::Right(compressed.clone()),
            _ => Either::Left(self.inner.clone()),
        };
        Box::pin(async move {
            let started = Instant::now();
            let route = request.extensions().get::<MatchedPath>().cloned();
            let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
            // Any token is a valid method: labels only from the standard set.
            let method = method_label(request.method());

            // Context and caller: the same step as gRPC's.
            let inbound = inbound(pipeline.authenticator.as_deref(), &request, "http").await;
            let (context, otel, authentication, token) = inbound.into_parts();
            // Nothing to record when no token was sent and none could be.
            if pipeline.authenticator.is_some() {
                request
                    .extensions_mut()
                    .insert(Arc::clone(&pipeline.policies));
            }
            if !matches!(authentication, Authentication::Missing) {
                request.extensions_mut().insert(authentication);
            }
            if let Some(resources) = pipeline.resources.get() {
                request.extensions_mut().insert(Arc::clone(resources));
            }
            let request_id = HeaderValue::from_str(&context.message_id).ok();

            let mut response = context
                .scope(async {
                    // Created inside the context: the head sampler reads the
                    // caller's sampling decision from it.
                    let span = tracing::info_span!(
                        "request",
                        otel.kind = "server",
                        http.request.method = method,
                        http.route = route,
                        http.response.status_code = tracing::field::Empty,
                        otel.status_code = tracing::field::Empty,
                    );
                    mamey_observability::propagation::continue_trace(&span, &otel);
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        let _entered = span.enter();
                        log_request(&request, &pipeline.sensitive_headers);
                    }
                    let response = if content_length(&request) > Some(pipeline.body_limit) {
                        too_large().into_response()
                    } else if let Some(coding) = content_coding(&request) {
                        unsupported_encoding(&coding)
                    } else {
                        // Whether the handler is waiting for the body when
                        // the time is up: the caller's delay (408), not the
                        // handler's (504).
                        let (request, waiting) = watch_body(request);
                        // A panic in the handler is a 500, never a dropped
                        // connection.
                        let handled = catching_panics(|| handle(handler, request));
                        let call = tokio::time::timeout(pipeline.timeout, handled)
                            .instrument(span.clone());
                        let outcome = as_caller(token, call).await;
                        match outcome {
                            Ok(Some(Ok(response))) => response,
                            Ok(Some(Err(never))) => match never {},
                            Ok(None) => panicked(),
                            Err(_) if waiting.is_some_and(|w| w.load(Ordering::Relaxed)) => {
                                body_timed_out(pipeline.timeout)
                            }
                            Err(_) => timed_out(pipeline.timeout),
                        }
                    };
                    let status = response.status();
                    span.record("http.response.status_code", status.as_u16());
                    if status.is_server_error() {
                        span.record("otel.status_code", "ERROR");
                    }
                    response
                })
                .await;
            if let Some(id) = request_id {
                response.headers_mut().insert(REQUEST_ID, id);
            }
            pipeline
                .metrics
                .record(method, route, response.status().as_u16(), started.elapsed());
            Ok(response)
        })
    }
}

/// Calls the routes, compressed or not; one response body type either way.
fn handle<S>(
    handler: Either<S, Compression<S>>,
    request: Request<Body>,
) -> impl Future<Output = Result<Response, Infallible>> + Send + 'static
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    match handler {
        Either::Left(mut plain) => Either::Left(plain.call(request)),
        Either::Right(mut compressed) => Either::Right(
            compressed
                .call(request)
                .map(|result| result.map(|response| response.map(Body::new))),
        ),
    }
}

/// The method as a metric label: one of the standard methods, else
/// `_OTHER`.
fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

/// Calls `call` and awaits the future it makes: `None` when either panics,
/// in the synchronous part or while polled.
pub(crate) fn catching_panics<F: Future>(
    call: impl FnOnce() -> F,
) -> impl Future<Output = Option<F::Output>> {
    let started = std::panic::catch_unwind(AssertUnwindSafe(call));
    async move {
        match started {
            Ok(future) => AssertUnwindSafe(future).catch_unwind().await.ok(),
            Err(_) => None,
        }
    }
}

fn content_length<B>(request: &Request<B>) -> Option<usize> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The request's `content-encoding` when it is anything but `identity`:
/// the server decodes no content coding, so reading such a body as JSON
/// (or passing it to a handler as if plain) would be wrong.
fn content_coding<B>(request: &Request<B>) -> Option<String> {
    let codings: Vec<String> = request
        .headers()
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|value| {
            String::from_utf8_lossy(value.as_bytes())
                .split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty() && c != "identity")
                .collect::<Vec<_>>()
        })
        .collect();
    (!codings.is_empty()).then(|| codings.join(", "))
}

fn unsupported_encoding(coding: &str) -> Response {
    // The coding is the caller's text: bounded, and only printable ASCII.
    let coding: String = coding
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(64)
        .collect();
    let mut response = Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "request.unsupported_encoding",
        format!(
            "the request's `content-encoding: {coding}` is not supported; send it uncompressed"
        ),
    )
    .into_response();
    // RFC 9110 15.5.16: say which codings would have been accepted.
    response.headers_mut().insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    response
}

/// Wraps a request's body (when it has one) so that the pipeline can tell
/// whether the handler was waiting for more of it.
fn watch_body(request: Request<Body>) -> (Request<Body>, Option<Arc<AtomicBool>>) {
    if request.body().is_end_stream() {
        return (request, None);
    }
    let waiting = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&waiting);
    let request = request.map(|inner| {
        Body::new(WatchedBody {
            inner,
            waiting: flag,
        })
    });
    (request, Some(waiting))
}

/// A body that records whether its last poll was left waiting for the
/// client.
struct WatchedBody {
    inner: Body,
    waiting: Arc<AtomicBool>,
}

impl http_body::Body for WatchedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        self.waiting.store(polled.is_pending(), Ordering::Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn body_timed_out(timeout: Duration) -> Response {
    let mut response = Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        "request.timeout",
        format!(
            "the request body did not arrive within {} ms (`http.request_timeout`)",
            timeout.as_millis()
        ),
    )
    .into_response();
    // The rest of the body may still be on its way: the connection cannot
    // carry another request.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn panicked() -> Response {
    tracing::error!("a request handler panicked");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "an internal error occurred",
    )
    .into_response()
}

fn timed_out(timeout: Duration) -> Response {
    Problem::new(
        StatusCode::GATEWAY_TIMEOUT,
        "request.timeout",
        format!(
            "the request took longer than {} ms (`http.request_timeout`)",
            timeout.as_millis()
        ),
    )
    .into_response()
}

/// Logs the request line and headers at debug level, with sensitive header
/// values replaced.
fn log_request<B>(request: &Request<B>, sensitive: &[HeaderName]) {
    let headers: Vec<String> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            if sensitive.contains(name) {
                format!("{name}: {}", mamey_core::config::REDACTED)
            } else {
                format!("{name}: {}", value.to_str().unwrap_or("<binary>"))
            }
        })
        .collect();
    // The path only: query strings carry tokens too often.
    tracing::debug!(
        method = %request.method(),
        path = request.uri().path(),
        headers = %headers.join(", "),
        "request"
    );
}

//! The layer every hosted call goes through, the same work as the web
//! API's pipeline: context extraction and authentication (one step shared
//! with the web API), authorization, a server span, the deadline, panic
//! recovery, and the metered response body.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use tonic::Status;
use tower::{Layer, Service};
use tracing::Instrument;

use super::metered::Metered;
use super::status::grpc_status;
use super::{HEALTH_NAME, REFLECTION_NAME};
use crate::auth::authorize::Denied;
use crate::auth::{Auth, Authenticator, Policies, as_caller, inbound};
use crate::pipeline::catching_panics;

/// What every call goes through.
pub(crate) struct Calls {
    /// The hosted services' names: the metric labels a call may have.
    pub(crate) hosted: Vec<String>,
    pub(crate) authenticator: Option<Arc<Authenticator>>,
    /// Who may call the hosted services.
    pub(crate) auth: Auth,
    pub(crate) policies: Policies,
    /// `grpc.request_timeout`.
    pub(crate) timeout: Duration,
}

#[derive(Clone)]
pub(crate) struct CallLayer(pub(crate) Arc<Calls>);

impl<S> Layer<S> for CallLayer {
    type Service = CallService<S>;

    fn layer(&self, inner: S) -> CallService<S> {
        CallService {
            calls: Arc::clone(&self.0),
            inner,
        }
    }
}

#[derive(Clone)]
pub(crate) struct CallService<S> {
    calls: Arc<Calls>,
    inner: S,
}

impl<S> Service<Request<Body>> for CallService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let calls = Arc::clone(&self.calls);
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(async move {
            let started = Instant::now();
            let (service, method) = split_path(request.uri().path());
            let open = service == HEALTH_NAME || service == REFLECTION_NAME;
            // Labels come from a bounded set: the hosted services' names.
            let (service, method) = if open || calls.hosted.contains(&service) {
                (service, method)
            } else {
                ("unmatched".to_owned(), "unmatched".to_owned())
            };
            let inbound = inbound(calls.authenticator.as_deref(), &request, "grpc").await;
            // The caller's deadline (`grpc-timeout`), when shorter than ours.
            let timeout = grpc_timeout(request.headers())
                .map_or(calls.timeout, |caller| caller.min(calls.timeout));
            if !open
                && let Err(denied) = calls
                    .policies
                    .authorize(&calls.auth, Some(&inbound.authentication))
            {
                let status = match denied {
                    Denied::Unauthenticated(reason) => Status::unauthenticated(reason),
                    Denied::Forbidden(reason) => Status::permission_denied(reason),
                };
                let code = status.code() as i32;
                // The method of a refused call is the caller's word only.
                mamey_observability::metrics::record_grpc_server(
                    &service,
                    "unmatched",
                    code,
                    started.elapsed(),
                );
                return Ok(status.into_http());
            }
            let (context, otel, authentication, token) = inbound.into_parts();
            request.extensions_mut().insert(authentication);
            context
                .scope(async move {
                    let span = tracing::info_span!(
                        "rpc",
                        otel.kind = "server",
                        rpc.system = "grpc",
                        rpc.service = %service,
                        rpc.method = %method,
                        rpc.grpc.status_code = tracing::field::Empty,
                        otel.status_code = tracing::field::Empty,
                    );
                    mamey_observability::propagation::continue_trace(&span, &otel);
                    // A panicking handler ends its call with INTERNAL.
                    let handled = catching_panics(|| inner.call(request));
                    let call = tokio::time::timeout(timeout, handled).instrument(span.clone());
                    let outcome = as_caller(token, call).await;
                    let response = match outcome {
                        Ok(Some(Ok(response))) => response,
                        Ok(Some(Err(never))) => match never {},
                        Ok(None) => {
                            tracing::error!("a gRPC handler panicked");
                            Status::internal("an internal error occurred").into_http()
                        }
                        Err(_) => Status::deadline_exceeded(format!(
                            "the call took longer than {} ms (the caller's `grpc-timeout` or `grpc.request_timeout`)",
                            timeout.as_millis()
                        ))
                        .into_http(),
                    };
                    let (parts, body) = response.into_parts();
                    // Errors come as trailers-only responses; success in the
                    // trailers at the end of the body.
                    let early = grpc_status(&parts.headers);
                    let metered = Metered::new(body, service, method, started, span, early);
                    Ok(Response::from_parts(parts, Body::new(metered)))
                })
                .await
        })
    }
}

/// The caller's deadline from `grpc-timeout`: up to 8 digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`).
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// `/pkg.Service/Method` → (`pkg.Service`, `Method`).
fn split_path(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or("").to_owned();
    let method = parts.next().unwrap_or("").to_owned();
    (service, method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_deadlines_are_read_from_grpc_timeout() {
        let deadline = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", value.parse().unwrap());
            grpc_timeout(&headers)
        };
        assert_eq!(deadline("100m"), Some(Duration::from_millis(100)));
        assert_eq!(deadline("2S"), Some(Duration::from_secs(2)));
        assert_eq!(deadline("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(deadline("5x"), None);
        assert_eq!(deadline("123456789m"), None, "more than 8 digits");
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/orders.v1.Orders/Get"),
            ("orders.v1.Orders".to_owned(), "Get".to_owned())
        );
    }
}

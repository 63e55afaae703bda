//! The proxy: `/api/{service}/{rest}` becomes `/{rest}` of `service`,
//! called through the `ServiceClient` by name. Kept minimal, for JSON APIs:
//!
//! - passed on: the method, the path and query as sent, the body with its
//!   `content-type`, and the `accept` and `authorization` headers;
//! - passed back: the service's status and body with its `content-type`,
//!   and its `location` under `/api/{service}`;
//! - no answer at all: `502`, `503` or `504` (problem+json), never the
//!   service's address.
//!
//! Request bodies are bounded by the gateway's `http.body_limit`. Only
//! idempotent methods are retried once they reached the service (see
//! `[http_client.retry]`).

use mamey_core::Error;
use mamey_http::axum::body::{Body, Bytes};
use mamey_http::axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use mamey_http::axum::response::{IntoResponse, Response};
use mamey_http::{Problem, Resource, ServiceClient};

use crate::SERVICES;

/// Request headers passed on, besides `content-type` (sent with the body).
const PASSED_ON: [header::HeaderName; 2] = [header::ACCEPT, header::AUTHORIZATION];

/// Any method on `/api/{service}/{*rest}`.
pub(crate) async fn forward(
    Resource(client): Resource<ServiceClient>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((service, path)) = split(&uri).filter(|(s, _)| SERVICES.contains(s)) else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "gateway.no_service",
            format!(
                "no service is reached at this path; the services are under /api/{}/",
                SERVICES.join("/, /api/")
            ),
        )
        .into_response();
    };
    let mut call = client.call(service, method, path);
    for name in PASSED_ON {
        if let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) {
            call = call.header(name.as_str(), value);
        }
    }
    if !body.is_empty() {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        call = call.body(content_type, body);
    }
    match call.exchange().await {
        Ok(answer) => relay(service, answer),
        Err(error) => failed(service, &error),
    }
}

/// `/api/{service}{path}` as sent, still percent-encoded: the service and
/// the path (with the query) to call it with.
fn split(uri: &Uri) -> Option<(&str, &str)> {
    let rest = uri.path_and_query()?.as_str().strip_prefix("/api/")?;
    let slash = rest.find('/')?;
    Some(rest.split_at(slash))
}

/// The service's answer: its status, its body with its `content-type`, and
/// its `location` under the gateway's prefix.
fn relay(service: &str, answer: mamey_http::Response) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    if let Some(content_type) = answer.headers.get(header::CONTENT_TYPE) {
        headers.insert(header::CONTENT_TYPE, content_type.clone());
    }
    let location = answer
        .headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .filter(|location| location.starts_with('/'))
        .and_then(|location| HeaderValue::try_from(format!("/api/{service}{location}")).ok());
    if let Some(location) = location {
        headers.insert(header::LOCATION, location);
    }
    response
}

/// No answer came: `504` for a timeout, `503` when no instance is known or
/// every one is failing, else `502`. The cause stays in the log.
fn failed(service: &str, error: &Error) -> Response {
    tracing::warn!(service, code = error.code(), error = %error.message(), "a call through the gateway failed");
    let (status, code) = match error.code() {
        "client.timeout" => (StatusCode::GATEWAY_TIMEOUT, "gateway.timeout"),
        "client.circuit_open" | "discovery.no_endpoints" => {
            (StatusCode::SERVICE_UNAVAILABLE, "gateway.unavailable")
        }
        _ => (StatusCode::BAD_GATEWAY, "gateway.bad_gateway"),
    };
    Problem::new(status, code, format!("`{service}` did not answer")).into_response()
}

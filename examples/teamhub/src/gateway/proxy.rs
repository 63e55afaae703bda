//! The HTTP proxy: `/api/{service}/{rest}` to the service, through the
//! [`ServiceClient`] — resolved by discovery, balanced across replicas,
//! ejected when failing, and retried as the client retries: any request
//! whose connection could not be opened (it never left, so sending it to
//! another replica is safe whatever its method), and, for `GET`, `HEAD`,
//! `PUT` and `DELETE`, one that met a timeout, a broken connection or a
//! `429`/`502`/`503`/`504`. A `POST` or `PATCH` that reached a replica is
//! never sent twice. The handler runs inside the request's context, so the
//! client sends the caller's correlation id and trace on.
//!
//! Passed on: the method, the path and query as sent, the body as it came
//! with its `content-type`, and the `authorization` and `accept` headers.
//! Back: the service's answer as it came — status, body and headers —
//! without the hop-by-hop headers, and with `location` under
//! `/api/{service}`. When no answer came, `502`, `503` or `504` without the
//! service's address.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use mamey_core::Error;
use mamey_http::{Caller, Problem, Resource, ServiceClient};

use super::routing::{self, Route};

/// Request headers passed to the service, besides `content-type` (sent
/// with the body).
const REQUEST_HEADERS: [HeaderName; 2] = [header::AUTHORIZATION, header::ACCEPT];

/// Headers that describe one connection, not the answer (RFC 9110 §7.6.1):
/// never passed back, nor any header `connection` names.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The methods passed on; others are `405`.
const METHODS: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// Any method on `/api/{service}/{*rest}`.
pub(super) async fn forward(
    caller: Result<Caller, Response>,
    Resource(client): Resource<ServiceClient>,
    request: Request,
) -> Response {
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let Some(route) = routing::route(path_and_query) else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "gateway.no_service",
            "no service is reached at this path; the services are under /api/identity, /api/boards, /api/chat and /api/notifications",
        )
        .into_response();
    };
    let method = request.method().clone();
    if !route.is_public(&method)
        && let Err(refusal) = caller
    {
        return refusal;
    }
    if !METHODS.contains(&method) {
        return Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "request.method_not_allowed",
            "the gateway passes on GET, HEAD, POST, PUT, PATCH and DELETE",
        )
        .into_response();
    }
    let headers = request.headers().clone();
    let body = match Bytes::from_request(request, &()).await {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request.too_large",
                "the request body is larger than the gateway accepts (`http.body_limit`)",
            )
            .into_response();
        }
        Err(_) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "request.body",
                "the request body could not be read",
            )
            .into_response();
        }
    };
    send(&client, &route, method, &headers, body).await
}

/// Calls the service and passes its answer back.
async fn send(
    client: &ServiceClient,
    route: &Route,
    method: Method,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let mut call = client.call(route.service, method, &route.path);
    for name in REQUEST_HEADERS {
        if let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) {
            call = call.header(name.as_str(), value);
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !body.is_empty() || content_type.is_some() {
        // What a recipient may assume of a body without one (RFC 9110 §8.3).
        let content_type = content_type.unwrap_or("application/octet-stream");
        call = call.body(content_type, body);
    }
    match call.exchange().await {
        Ok(answer) => relay(route.service, answer),
        Err(error) => failed(route.service, &error),
    }
}

/// The answer of `service`, for the client: as it came, without the
/// hop-by-hop headers, with `location` under the service's prefix.
fn relay(service: &str, answer: mamey_http::Response) -> Response {
    let mut headers = answer.headers;
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
    if let Some(location) = headers.remove(header::LOCATION) {
        // One that is not text is dropped: it might name the service's
        // address.
        let public = location
            .to_str()
            .ok()
            .map(|location| routing::public_location(service, location))
            .and_then(|location| HeaderValue::try_from(location).ok());
        if let Some(public) = public {
            headers.insert(header::LOCATION, public);
        }
    }
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = headers;
    response
}

/// A call that got no answer: `502`, `503` or `504`, without the service's
/// address (which stays in the log).
fn failed(service: &str, error: &Error) -> Response {
    tracing::warn!(service, code = error.code(), error = %error.message(), "a call through the gateway failed");
    let (status, code, detail) = match error.code() {
        "client.timeout" => (
            StatusCode::GATEWAY_TIMEOUT,
            "gateway.timeout",
            format!("`{service}` did not answer in time"),
        ),
        "client.circuit_open" | "discovery.no_endpoints" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "gateway.unavailable",
            format!("`{service}` is unavailable; try again later"),
        ),
        _ => (
            StatusCode::BAD_GATEWAY,
            "gateway.bad_gateway",
            format!("`{service}` could not be reached, or its answer could not be read"),
        ),
    };
    let mut response = Problem::new(status, code, detail).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn an_unreachable_service_is_a_bad_gateway_without_its_address() {
        for (code, expected) in [
            ("client.connect_failed", StatusCode::BAD_GATEWAY),
            ("client.unreachable", StatusCode::BAD_GATEWAY),
            ("client.timeout", StatusCode::GATEWAY_TIMEOUT),
            ("client.circuit_open", StatusCode::SERVICE_UNAVAILABLE),
            ("discovery.no_endpoints", StatusCode::SERVICE_UNAVAILABLE),
        ] {
            let error =
                Error::unavailable(code, "calling `boards` at http://10.1.2.3:4567: refused");
            let response = failed("boards", &error);
            assert_eq!(response.status(), expected, "{code}");
            if expected == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(response.headers()[header::RETRY_AFTER], "1");
            }
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                mamey_http::PROBLEM_JSON
            );
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8_lossy(&body);
            assert!(!body.contains("10.1.2.3"), "{body}");
        }
    }

    #[tokio::test]
    async fn an_answer_passes_as_it_came_but_for_hop_by_hop_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, HeaderValue::from_static("/cards/7"));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(header::ETAG, HeaderValue::from_static("\"v2\""));
        headers.insert(header::CONNECTION, HeaderValue::from_static("close, x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let answer = mamey_http::Response {
            status: StatusCode::CONFLICT,
            headers,
            body: Bytes::from_static(b"{\"code\":\"card.conflict\"}"),
        };
        let response = relay("boards", answer);
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let headers = response.headers();
        assert_eq!(headers[header::LOCATION], "/api/boards/cards/7");
        assert_eq!(headers[header::RETRY_AFTER], "3");
        assert_eq!(
            headers[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(headers[header::ETAG], "\"v2\"");
        for hop in ["connection", "x-hop", "keep-alive", "transfer-encoding"] {
            assert!(!headers.contains_key(hop), "{hop}");
        }
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "{\"code\":\"card.conflict\"}");
    }

    #[test]
    fn an_absolute_location_keeps_only_its_path() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LOCATION,
            HeaderValue::from_static("http://10.0.0.4:8081/messages/9"),
        );
        let answer = mamey_http::Response {
            status: StatusCode::CREATED,
            headers,
            body: Bytes::new(),
        };
        let response = relay("chat", answer);
        assert_eq!(response.headers()[header::LOCATION], "/api/chat/messages/9");
    }
}

//! The HTTP proxy: `/api/{service}/{rest}` to the service, through the
//! [`ServiceClient`] — resolved by discovery, balanced across replicas,
//! ejected when failing, and retried for idempotent methods only: the
//! client retries `GET`, `HEAD`, `PUT`, `DELETE` and `OPTIONS` (unless a
//! call says otherwise, and these do not), while a `POST` or `PATCH` that
//! reached a replica is never sent twice. One that reached none — its
//! connection was refused — is sent again ([`never_sent`]). The handler
//! runs inside the request's context, so the client sends the caller's
//! correlation id and trace on.
//!
//! Passed on: the method, the path and query as sent, the JSON body, and
//! the `authorization`, `accept` and `content-type` headers; back: the
//! status, the body, and `content-type`, `location` (under `/api/{service}`)
//! and `retry-after`. Nothing else crosses, hop-by-hop headers included.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use mamey_core::Error;
use mamey_http::{Caller, Problem, ProblemField, Resource, ServiceClient};

use super::routing::{self, Route};

/// Request headers passed to the service.
const REQUEST_HEADERS: [HeaderName; 3] =
    [header::AUTHORIZATION, header::ACCEPT, header::CONTENT_TYPE];

/// How often a request that never reached a replica is sent again.
const RESENDS: usize = 3;

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
    send(&client, &route, method, &headers, &body).await
}

/// Calls the service and makes the client's answer of its answer.
async fn send(
    client: &ServiceClient,
    route: &Route,
    method: Method,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let json = if body.is_empty() {
        None
    } else {
        match json_body(headers, body) {
            Ok(json) => Some(json),
            Err(refusal) => return refusal.into_response(),
        }
    };
    let mut resent = 0;
    loop {
        let mut call = client.call(route.service, method.clone(), &route.path);
        if let Some(json) = &json {
            call = call.json(json);
        }
        for name in REQUEST_HEADERS {
            if let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) {
                call = call.header(name.as_str(), value);
            }
        }
        match call.send().await {
            Ok(answer) => return relay(route.service, answer),
            Err(error) if never_sent(&error) && resent < RESENDS => resent += 1,
            Err(error) => return failed(route.service, &error),
        }
    }
}

/// Whether a call failed before its request left: no connection to the
/// replica could be opened (it crashed, and discovery still lists it).
/// Sending again is then safe whatever the method, and the client picks
/// again (and, after a few, ejects the replica).
///
/// The client retries idempotent methods itself, but reports a refused
/// connection and one broken after sending alike (`client.unreachable`),
/// so it never retries a `POST`; the difference is only in its message,
/// which ends with hyper's `client error (Connect)`.
fn never_sent(error: &Error) -> bool {
    error.code() == "client.unreachable" && error.message().ends_with("client error (Connect)")
}

/// Why a request body is not passed on.
#[derive(Debug)]
enum BodyRefusal {
    /// Not labelled JSON: `415`.
    NotLabelledJson,
    /// Not JSON: `400`, with the parser's line and column.
    NotJson(serde_json::Error),
}

impl IntoResponse for BodyRefusal {
    fn into_response(self) -> Response {
        match self {
            Self::NotLabelledJson => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "request.content_type",
                "send the body as `content-type: application/json`",
            ),
            Self::NotJson(error) => Problem::new(
                StatusCode::BAD_REQUEST,
                "request.invalid_json",
                format!("the body is not JSON: {error}"),
            ),
        }
        .into_response()
    }
}

/// The body as JSON, the only kind the services take.
fn json_body(headers: &HeaderMap, body: &Bytes) -> Result<serde_json::Value, BodyRefusal> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !is_json(content_type) {
        return Err(BodyRefusal::NotLabelledJson);
    }
    serde_json::from_slice(body).map_err(BodyRefusal::NotJson)
}

/// `application/json` or `application/*+json`, with any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A `2xx` answer of `service`, for the client.
fn relay(service: &str, answer: mamey_http::Response) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
        if let Some(value) = answer.headers.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    let location = answer
        .headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|location| routing::public_location(service, location))
        .and_then(|location| HeaderValue::try_from(location).ok());
    if let Some(location) = location {
        headers.insert(header::LOCATION, location);
    }
    response
}

/// A call that did not end in `2xx`: the service's own answer as a
/// problem with its status, code and field errors; or, when the service
/// could not be reached or answered in time, `502`, `503` or `504` without
/// its address (which stays in the log).
fn failed(service: &str, error: &Error) -> Response {
    if let Some((status, detail)) = answered(service, error.message()) {
        return relayed_problem(status, detail, error);
    }
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
    with_retry_after(Problem::new(status, code, detail).into_response())
}

/// The status and detail of an answer outside `2xx`, read back from the
/// message the service client makes of it: `` `{service}` answered
/// {status} {reason}: {detail} `` (mamey-http's documented form; a body
/// that is no problem document has no `: {detail}`).
fn answered<'a>(service: &str, message: &'a str) -> Option<(StatusCode, Option<&'a str>)> {
    let rest = message
        .strip_prefix('`')?
        .strip_prefix(service)?
        .strip_prefix("` answered ")?;
    let status = StatusCode::from_bytes(rest.get(..3)?.as_bytes()).ok()?;
    Some((status, rest.split_once(": ").map(|(_, detail)| detail)))
}

/// The problem the service answered, as far as the client error keeps it.
/// A `5xx` detail is not repeated: the services withhold theirs anyway.
fn relayed_problem(status: StatusCode, detail: Option<&str>, error: &Error) -> Response {
    let detail = match (status.is_server_error(), detail) {
        (false, Some(detail)) => detail.to_owned(),
        (true, _) if status == StatusCode::SERVICE_UNAVAILABLE => {
            "a dependency is unavailable; try again later".to_owned()
        }
        (true, _) => "an internal error occurred".to_owned(),
        (false, None) => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    let mut problem = Problem::new(status, error.code(), detail);
    problem.errors = error
        .fields()
        .iter()
        .map(|field| ProblemField {
            field: field.field.clone(),
            code: field.code.clone(),
            message: field.message.clone(),
        })
        .collect();
    let mut response = problem.into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    with_retry_after(response)
}

/// Adds `retry-after: 1` to a `429` or `503` (the service's own value is
/// not kept by the client).
fn with_retry_after(mut response: Response) -> Response {
    if matches!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
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

    async fn problem(response: Response) -> (StatusCode, serde_json::Value) {
        let status = response.status();
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            mamey_http::PROBLEM_JSON
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[test]
    fn json_bodies_only() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
        let mut headers = HeaderMap::new();
        let body = Bytes::from_static(b"{\"a\": 1}");
        assert!(json_body(&headers, &body).is_err(), "no content type");
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert_eq!(json_body(&headers, &body).unwrap()["a"], 1);
        let cut = Bytes::from_static(b"{\"email\": ");
        let refusal = json_body(&headers, &cut).unwrap_err().into_response();
        assert_eq!(refusal.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_status_is_read_back_from_the_clients_message() {
        assert_eq!(
            answered(
                "boards",
                "`boards` answered 409 Conflict: already a member: yes"
            ),
            Some((StatusCode::CONFLICT, Some("already a member: yes")))
        );
        assert_eq!(
            answered("chat", "`chat` answered 413 Payload Too Large"),
            Some((StatusCode::PAYLOAD_TOO_LARGE, None))
        );
        assert_eq!(answered("chat", "`boards` answered 409 Conflict: x"), None);
        assert_eq!(
            answered("chat", "calling `chat` at http://10.0.0.1:80: refused"),
            None
        );
    }

    #[tokio::test]
    async fn a_services_refusal_keeps_its_status_code_and_fields() {
        let error = Error::invalid_input(
            "request.invalid",
            "`identity` answered 422 Unprocessable Entity: the input breaks its rules",
        )
        .with_field("email", "invalid", "expected an e-mail address");
        let (status, body) = problem(failed("identity", &error)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["code"], "request.invalid");
        assert_eq!(body["detail"], "the input breaks its rules");
        assert_eq!(body["errors"][0]["field"], "email");

        let error = Error::unauthorized(
            "auth.unauthorized",
            "`boards` answered 401 Unauthorized: no token",
        );
        let response = failed("boards", &error);
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(problem(response).await.0, StatusCode::UNAUTHORIZED);

        let error =
            Error::internal("`chat` answered 500 Internal Server Error: secret stack trace");
        let (status, body) = problem(failed("chat", &error)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!body.to_string().contains("secret"));
    }

    #[test]
    fn only_a_refused_connection_is_never_sent() {
        let refused = Error::unavailable(
            "client.unreachable",
            "calling `boards` at http://127.0.0.1:1: client error (Connect)",
        );
        assert!(never_sent(&refused));
        let broken = Error::unavailable(
            "client.unreachable",
            "reading the answer of `boards`: connection reset",
        );
        assert!(!never_sent(&broken));
        let timed_out =
            Error::unavailable("client.timeout", "`boards` did not answer within 10000 ms");
        assert!(!never_sent(&timed_out));
    }

    #[tokio::test]
    async fn an_unreachable_service_is_a_bad_gateway_without_its_address() {
        for (code, expected) in [
            ("client.unreachable", StatusCode::BAD_GATEWAY),
            ("client.timeout", StatusCode::GATEWAY_TIMEOUT),
            ("client.circuit_open", StatusCode::SERVICE_UNAVAILABLE),
            ("discovery.no_endpoints", StatusCode::SERVICE_UNAVAILABLE),
        ] {
            let error =
                Error::unavailable(code, "calling `boards` at http://10.1.2.3:4567: refused");
            let response = failed("boards", &error);
            if expected == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(response.headers()[header::RETRY_AFTER], "1");
            }
            let (status, body) = problem(response).await;
            assert_eq!(status, expected, "{code}");
            assert!(!body.to_string().contains("10.1.2.3"), "{body}");
        }
    }

    #[tokio::test]
    async fn a_success_keeps_its_headers_with_the_public_location() {
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, HeaderValue::from_static("/cards/7"));
        headers.insert(header::SET_COOKIE, HeaderValue::from_static("internal=1"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        let answer = mamey_http::Response {
            status: StatusCode::CREATED,
            headers,
            body: Bytes::new(),
        };
        let response = relay("boards", answer);
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()[header::LOCATION], "/api/boards/cards/7");
        assert!(!response.headers().contains_key(header::SET_COOKIE));
        assert!(!response.headers().contains_key(header::CONNECTION));
    }
}

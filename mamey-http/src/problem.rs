//! Errors as RFC 9457 `application/problem+json` responses, and extractors
//! whose rejections are problems too.

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use mamey_core::{Error, ErrorKind, MessageContext};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document, as mamey writes it and clients read it.
///
/// ```json
/// {
///   "type": "https://mamey.dev/problems/invalid_input",
///   "title": "Invalid input",
///   "status": 422,
///   "detail": "the order has no items",
///   "code": "order.empty",
///   "errors": [{ "field": "items", "code": "length", "message": "at least one" }],
///   "correlation_id": "5b0c…"
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time; never internals for a server error.
    pub detail: String,
    /// The stable machine-readable code (`"order.not_found"`).
    pub code: String,
    /// Invalid fields, for invalid input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemField>,
    /// The correlation id of the request, to find its logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// One invalid field in a [`Problem`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemField {
    /// The field's path, e.g. `"items[0].quantity"`.
    pub field: String,
    /// A machine-readable code, e.g. `"range"`.
    pub code: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem with `status`, `code` and `detail`; title and type follow
    /// from the status.
    pub fn new(status: StatusCode, code: impl Into<String>, detail: impl Into<String>) -> Self {
        let code = code.into();
        Self {
            type_uri: format!("https://mamey.dev/problems/{}", type_slug(status)),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code,
            errors: Vec::new(),
            correlation_id: MessageContext::with_current(|c| c.map(|c| c.correlation_id.clone())),
        }
    }

    /// The problem for a mamey error: its kind's status, its code, its
    /// public message, and its field errors. Invalid input with field errors
    /// is `422 Unprocessable Content`, without them `400 Bad Request`.
    #[must_use]
    pub fn from_error(error: &Error) -> Self {
        let status = match error.kind() {
            ErrorKind::InvalidInput if !error.fields().is_empty() => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            kind => StatusCode::from_u16(kind.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        };
        // A dependency's failure may name hosts and ports: keep it in logs.
        let detail = match error.kind() {
            ErrorKind::Unavailable => "a dependency is unavailable; try again later",
            _ => error.public_message(),
        };
        let mut problem = Self::new(status, error.code(), detail);
        problem.errors = error
            .fields()
            .iter()
            .map(|f| ProblemField {
                field: f.field.clone(),
                code: f.code.clone(),
                message: f.message.clone(),
            })
            .collect();
        problem
    }
}

fn type_slug(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "invalid_input",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        408 | 504 => "timeout",
        413 => "content_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        431 => "headers_too_large",
        503 => "unavailable",
        _ => "internal",
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

/// A mamey error as an HTTP response: return it from axum handlers
/// (`Result<_, ApiError>`), and `?` converts [`mamey_core::Error`]s.
///
/// Server errors (internal, unavailable) are logged with their details and
/// answered without them.
///
/// ```
/// use mamey_http::{ApiError, Json};
///
/// async fn order(id: String) -> Result<Json<String>, ApiError> {
///     if id.is_empty() {
///         return Err(mamey_core::Error::invalid_input("order.id", "the id is empty").into());
///     }
///     Ok(Json(id))
/// }
/// ```
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.0;
        if matches!(error.kind(), ErrorKind::Internal | ErrorKind::Unavailable) {
            tracing::error!(error = %error, code = error.code(), "request failed");
        }
        Problem::from_error(&error).into_response()
    }
}

/// JSON request and response body. As an extractor it rejects with a
/// problem: `415 request.content_type` without a JSON content type, `400
/// request.invalid_json` for a body that is not JSON, `422
/// request.invalid_body` when the JSON does not fit the type (the field path
/// in `errors`), `413 request.too_large` when the body is over
/// `http.body_limit` — the same answers as the endpoint DSL's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(crate::endpoints::is_json);
        if !json {
            return Err(crate::endpoints::not_json());
        }
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| bytes_rejection(&rejection))?;
        crate::bind::parse_json(&body)
            .map(Self)
            .map_err(crate::bind::BindError::problem)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn bytes_rejection(rejection: &BytesRejection) -> Problem {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        Problem::new(rejection.status(), "request.body", rejection.body_text())
    }
}

pub(crate) fn too_large() -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request.too_large",
        "the body is larger than the limit (`http.body_limit`)",
    )
}

/// Route values, deserialized; rejects with `400 request.invalid_parameter`
/// naming the value in `errors`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => {
                let mut problem = path_rejection(&rejection);
                // A single value (`Path<u64>`) fails without its name: the
                // route has it.
                if problem.status == 400 && problem.errors.is_empty() {
                    let names: Vec<String> =
                        axum::extract::RawPathParams::from_request_parts(parts, state)
                            .await
                            .map(|params| params.iter().map(|(k, _)| k.to_owned()).collect())
                            .unwrap_or_default();
                    if let [name] = names.as_slice() {
                        problem.errors.push(ProblemField {
                            field: name.clone(),
                            code: "invalid".to_owned(),
                            message: problem.detail.clone(),
                        });
                        problem.detail =
                            format!("the parameter `{name}` is not valid: {}", problem.detail);
                    }
                }
                Err(problem)
            }
        }
    }
}

fn path_rejection(rejection: &PathRejection) -> Problem {
    use axum::extract::path::ErrorKind;
    match rejection {
        PathRejection::FailedToDeserializePathParams(e) => {
            let name = match e.kind() {
                ErrorKind::ParseErrorAtKey { key, .. }
                | ErrorKind::InvalidUtf8InPathParam { key }
                | ErrorKind::DeserializeError { key, .. } => Some(key.clone()),
                _ => None,
            };
            let mut problem = Problem::new(
                StatusCode::BAD_REQUEST,
                "request.invalid_parameter",
                e.body_text(),
            );
            if let Some(name) = name {
                problem.errors.push(ProblemField {
                    field: name,
                    code: "invalid".to_owned(),
                    message: e.body_text(),
                });
            }
            problem
        }
        other => Problem::new(other.status(), "request.route", other.body_text()),
    }
}

/// The query string, deserialized, for axum handlers; rejects with `400
/// request.invalid_parameter` naming the parameter in `errors`. (A CQRS query is
/// [`mamey_core::cqrs::Query`]; this is only the URL's `?…` part.)
///
/// ```
/// use mamey_http::QueryParams;
///
/// #[derive(serde::Deserialize)]
/// struct Page { limit: Option<u32> }
///
/// async fn list(QueryParams(page): QueryParams<Page>) -> String {
///     format!("up to {}", page.limit.unwrap_or(20))
/// }
///
/// let router: mamey_http::axum::Router = mamey_http::axum::Router::new()
///     .route("/orders", mamey_http::axum::routing::get(list));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryParams<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        crate::bind::parse_parameters(parts.uri.query().unwrap_or_default())
            .map(Self)
            .map_err(crate::bind::BindError::problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_keep_their_details_private() {
        let error = Error::internal("connection to 10.0.0.3 refused");
        let problem = Problem::from_error(&error);
        assert_eq!(problem.status, 500);
        assert!(!problem.detail.contains("10.0.0.3"), "{}", problem.detail);
    }

    #[test]
    fn unavailable_dependencies_are_not_named() {
        let error = mamey_core::Error::new(
            ErrorKind::Unavailable,
            "client.unreachable",
            "calling `pricing` at http://10.0.0.3:8080: connection refused",
        );
        let problem = Problem::from_error(&error);
        assert_eq!(problem.status, 503);
        assert_eq!(problem.code, "client.unreachable");
        assert!(!problem.detail.contains("10.0.0.3"), "{}", problem.detail);
    }

    #[test]
    fn field_errors_make_unprocessable_content() {
        let error = Error::invalid_input("order.invalid", "the order is invalid").with_field(
            "items",
            "length",
            "at least one item",
        );
        let problem = Problem::from_error(&error);
        assert_eq!(problem.status, 422);
        assert_eq!(problem.errors[0].field, "items");
        assert_eq!(problem.code, "order.invalid");
    }

    #[test]
    fn each_kind_has_its_status() {
        for (kind, status) in [
            (ErrorKind::InvalidInput, 400),
            (ErrorKind::Unauthorized, 401),
            (ErrorKind::Forbidden, 403),
            (ErrorKind::NotFound, 404),
            (ErrorKind::Conflict, 409),
            (ErrorKind::Unavailable, 503),
            (ErrorKind::Internal, 500),
        ] {
            let problem = Problem::from_error(&Error::new(kind, "x", "y"));
            assert_eq!(problem.status, status, "{kind}");
        }
    }
}

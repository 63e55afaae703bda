//! Errors as RFC 9457 `application/problem+json` responses.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use mamey_core::{Error, ErrorKind, MessageContext};
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

pub(crate) fn too_large() -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request.too_large",
        "the body is larger than the limit (`http.body_limit`)",
    )
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

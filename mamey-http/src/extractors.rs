//! The extractors for axum routes of one's own — [`Json`], [`Path`],
//! [`QueryParams`] — answering bad input with the same problems as the
//! endpoint DSL (the rules are in [`bind`](crate::bind)).

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::request::Parts;
use http::{StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bind::{is_json, not_json};
use crate::problem::{Problem, ProblemField, too_large};

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
            .is_some_and(is_json);
        if !json {
            return Err(not_json());
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

//! One HTTP call: built with [`Call`]'s methods, sent through the
//! resilience runner, with HTTP's own attempt (send, read the answer within
//! `max_response_bytes`) and verdicts (which statuses are retried, which
//! count against the endpoint).

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use mamey_core::discovery::Endpoint;
use mamey_core::{Error, ErrorKind};
use serde::Serialize;

use super::error::{Cause, Failure, circuit_open, error_of};
use super::resilience::{Attempt, Health, Outcome, Refusal, Verdict};
use super::{Response, ServiceClient, propagate};
use crate::transport::Connector;

/// One call being prepared; [`send`](Call::send) it.
#[derive(Debug)]
#[must_use]
pub struct Call {
    client: ServiceClient,
    service: String,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    /// Why the body set with [`json`](Call::json) could not be made: the
    /// call fails with it instead of sending a body other than the one given.
    body_error: Option<Error>,
    retry: Option<bool>,
    timeout: Option<Duration>,
}

impl Call {
    pub(crate) fn new(client: ServiceClient, service: &str, method: Method, path: &str) -> Self {
        Self {
            client,
            service: service.to_owned(),
            method,
            path: path.to_owned(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            body_error: None,
            retry: None,
            timeout: None,
        }
    }

    /// Sets a header; an invalid name or value is not sent, and logged.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(name), Ok(mut value)) => {
                // Kept out of `Debug` output.
                value.set_sensitive(name == header::AUTHORIZATION);
                self.headers.insert(name, value);
            }
            _ => tracing::warn!(header = name, "invalid header not sent"),
        }
        self
    }

    /// Sends `body` as JSON.
    ///
    /// A body that does not serialize fails the call:
    /// [`send`](Call::send) returns an `internal` error with code
    /// `client.invalid_body` and makes no request.
    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Self {
        match serde_json::to_vec(body) {
            Ok(bytes) => {
                self.body = Bytes::from(bytes);
                self.body_error = None;
                self.headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            Err(e) => {
                self.body = Bytes::new();
                self.body_error = Some(Error::new(
                    ErrorKind::Internal,
                    "client.invalid_body",
                    format!(
                        "the request body for `{}` does not serialize as JSON: {e}",
                        self.service
                    ),
                ));
            }
        }
        self
    }

    /// Retries this call on retryable failures even if its method is not
    /// idempotent (e.g. a `POST` with an idempotency key), or never.
    pub fn retry(mut self, retry: bool) -> Self {
        self.retry = Some(retry);
        self
    }

    /// The timeout of each attempt, instead of `http_client.timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the call: resolves the service, picks an endpoint, retries as
    /// configured.
    ///
    /// # Errors
    /// A `4xx`/`5xx` answer as the [`Error`] its problem document describes
    /// (kind from the status, code and fields from the body);
    /// `unavailable` for connection errors (`client.unreachable`), timeouts
    /// (`client.timeout`), open circuits (`client.circuit_open`) and unknown
    /// services (`discovery.no_endpoints`); `internal` with code
    /// `client.invalid_body`, before any request, when the body given to
    /// [`json`](Call::json) did not serialize.
    pub async fn send(mut self) -> Result<Response, Error> {
        if let Some(error) = self.body_error.take() {
            return Err(error);
        }
        // `@host/…` after the endpoint's URL would name another host. A
        // path is the service's own making (see `url_path`), so a bad one is
        // the service's fault, not its caller's: internal, and its text stays
        // in the logs.
        if !self.path.starts_with('/') {
            return Err(Error::new(
                ErrorKind::Internal,
                "client.url",
                format!("the path `{}` does not start with `/`", self.path),
            ));
        }
        let resilience = self.client.resilience();
        let config = resilience.config();
        let started = Instant::now();
        let idempotent = matches!(
            self.method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        let retryable = self.retry.unwrap_or(idempotent);
        let timeout = self.timeout.unwrap_or(config.timeout);
        let mut headers = self.headers;
        propagate(&mut headers, config.forward_authorization);
        let mut attempt = HttpAttempt {
            http: self.client.http(),
            service: &self.service,
            method: &self.method,
            path: &self.path,
            headers: &headers,
            body: &self.body,
            limit: config.max_response_bytes,
        };
        let result = resilience
            .run(&self.service, retryable, timeout, &mut attempt)
            .await;
        let status = result
            .as_ref()
            .ok()
            .map(|response| response.status.as_u16());
        mamey_observability::metrics::record_http_client(
            &self.service,
            self.method.as_str(),
            status,
            started.elapsed(),
        );
        match result {
            Ok(response) if response.status.is_success() => Ok(response),
            Ok(response) => Err(error_of(&self.service, &response)),
            Err(failure) => Err(failure.error),
        }
    }
}

/// One HTTP request of a call, sent to each endpoint the runner picks.
struct HttpAttempt<'a> {
    http: &'a Client<Connector, Full<Bytes>>,
    service: &'a str,
    method: &'a Method,
    path: &'a str,
    headers: &'a HeaderMap,
    body: &'a Bytes,
    /// `max_response_bytes`.
    limit: usize,
}

impl Attempt for HttpAttempt<'_> {
    /// The answer read whole, whatever its status.
    type Output = Response;
    type Error = Failure;

    fn send(
        &mut self,
        endpoint: &Endpoint,
    ) -> impl Future<Output = Result<Response, Failure>> + Send {
        let url = format!("{}{}", endpoint.url, self.path);
        let request = Request::builder()
            .method(self.method.clone())
            .uri(&url)
            .body(Full::new(self.body.clone()));
        let (http, service, limit) = (self.http, self.service, self.limit);
        let path = self.path;
        let headers = self.headers;
        async move {
            let mut request = request.map_err(|e| {
                // Named by service and path: the endpoint's address is
                // internal.
                let message = format!(
                    "the path `{path}` of a call to `{service}` is not a valid URI ({e}); build paths with `url_path`"
                );
                Failure::new(
                    Cause::InvalidUrl,
                    Error::new(ErrorKind::Internal, "client.url", message),
                )
            })?;
            *request.headers_mut() = headers.clone();
            let response = http.request(request).await.map_err(|e| {
                Failure::unavailable(
                    Cause::Unreachable,
                    "client.unreachable",
                    format!("calling `{service}` at {endpoint}: {e}"),
                )
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, limit).collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    let message = format!(
                        "the answer of `{service}` is larger than `http_client.max_response_bytes` ({limit})"
                    );
                    Failure::new(Cause::TooLarge, Error::internal(message))
                } else {
                    Failure::unavailable(
                        Cause::Unreachable,
                        "client.unreachable",
                        format!("reading the answer of `{service}`: {e}"),
                    )
                }
            })?;
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body: body.to_bytes(),
            })
        }
    }

    fn classify(&self, result: &Result<Response, Failure>) -> Verdict {
        match result {
            Ok(response) if response.status.is_success() => {
                Verdict::new(Outcome::Success, Health::Up)
            }
            Ok(response) => {
                let outcome = if matches!(response.status.as_u16(), 429 | 502 | 503 | 504) {
                    Outcome::Retryable
                } else {
                    Outcome::Final
                };
                // Any answer below 500 is the endpoint working as it should.
                let health = if response.status.is_server_error() {
                    Health::Down
                } else {
                    Health::Up
                };
                Verdict::new(outcome, health)
            }
            Err(failure) => match failure.cause {
                Cause::Unreachable | Cause::TimedOut => {
                    Verdict::new(Outcome::Retryable, Health::Down)
                }
                // The endpoint answered (too much): not its failure.
                Cause::TooLarge => Verdict::new(Outcome::Final, Health::Up),
                Cause::InvalidUrl | Cause::Refused => {
                    Verdict::new(Outcome::Final, Health::Unjudged)
                }
            },
        }
    }

    fn refused(&self, refusal: Refusal) -> Failure {
        match refusal {
            Refusal::Unresolved(error) => Failure::new(Cause::Refused, error),
            Refusal::CircuitOpen => Failure::unavailable(
                Cause::Refused,
                "client.circuit_open",
                circuit_open(self.service),
            ),
            Refusal::TimedOut(timeout) => Failure::unavailable(
                Cause::TimedOut,
                "client.timeout",
                format!(
                    "`{}` did not answer within {} ms",
                    self.service,
                    timeout.as_millis()
                ),
            ),
        }
    }
}

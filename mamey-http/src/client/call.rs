//! One HTTP call: built with [`Call`]'s methods, sent through the
//! resilience runner, with HTTP's own attempt (send, read the answer within
//! `max_response_bytes`) and verdicts (which statuses are retried, which
//! count against the endpoint, which failures happened before anything was
//! sent).

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
use super::resilience::{Attempt, Health, Outcome, Refusal, Repeat, Verdict};
use super::{Response, ServiceClient, propagate};
use crate::transport::Connector;

/// One call being prepared; [`send`](Call::send) it for a `2xx` answer, or
/// [`exchange`](Call::exchange) it for the answer whatever its status.
#[derive(Debug)]
#[must_use]
pub struct Call {
    client: ServiceClient,
    service: String,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    /// Why the body set with [`json`](Call::json) or [`body`](Call::body)
    /// could not be made: the call fails with it instead of sending a body
    /// other than the one given.
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

    /// Sends `body` as JSON, with `content-type: application/json`.
    ///
    /// A body that does not serialize fails the call:
    /// [`send`](Call::send) returns an `internal` error with code
    /// `client.invalid_body` and makes no request.
    pub fn json<T: Serialize + ?Sized>(self, body: &T) -> Self {
        match serde_json::to_vec(body) {
            Ok(bytes) => self.with_body(HeaderValue::from_static("application/json"), bytes.into()),
            Err(e) => {
                let message = format!(
                    "the request body for `{}` does not serialize as JSON: {e}",
                    self.service
                );
                self.without_body(message)
            }
        }
    }

    /// Sends `body` as it is, labelled `content_type`: for bodies that are
    /// not JSON, or that are passed on unread (a proxy's).
    ///
    /// Like a [`json`](Call::json) body, it is sent whole from memory (with
    /// its `content-length`), and sent again as it is by a retry: bound
    /// what you read into it (a web API's request bodies are bounded by
    /// `http.body_limit`).
    ///
    /// A `content_type` that is no valid header value fails the call:
    /// [`send`](Call::send) returns an `internal` error with code
    /// `client.invalid_body` and makes no request.
    ///
    /// ```no_run
    /// # async fn demo(client: mamey_http::ServiceClient) -> Result<(), mamey_core::Error> {
    /// let csv = bytes::Bytes::from_static(b"sku,count\n42,3\n");
    /// client.post("stock", "/imports").body("text/csv", csv).send().await?;
    /// # Ok(()) }
    /// ```
    pub fn body(self, content_type: &str, body: impl Into<Bytes>) -> Self {
        match HeaderValue::try_from(content_type) {
            Ok(content_type) => self.with_body(content_type, body.into()),
            Err(_) => {
                // The value may be anyone's text: its length only.
                let message = format!(
                    "the content type of the request body for `{}` is not a valid header value ({} bytes)",
                    self.service,
                    content_type.len()
                );
                self.without_body(message)
            }
        }
    }

    /// The body set last, and its content type.
    fn with_body(mut self, content_type: HeaderValue, body: Bytes) -> Self {
        self.body = body;
        self.body_error = None;
        self.headers.insert(header::CONTENT_TYPE, content_type);
        self
    }

    /// No body, and the call fails with `message` instead of being sent.
    fn without_body(mut self, message: String) -> Self {
        self.body = Bytes::new();
        self.headers.remove(header::CONTENT_TYPE);
        self.body_error = Some(Error::new(
            ErrorKind::Internal,
            "client.invalid_body",
            message,
        ));
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
    /// configured; returns a `2xx` answer.
    ///
    /// The same as [`exchange`](Call::exchange) (same attempts, retries,
    /// breakers and metrics), with an answer outside `2xx` made an error.
    ///
    /// # Errors
    /// A `4xx`/`5xx` answer as the [`Error`] its problem document describes
    /// (kind from the status, code and fields from the body); and every
    /// error of [`exchange`](Call::exchange).
    pub async fn send(self) -> Result<Response, Error> {
        let service = self.service.clone();
        let response = self.exchange().await?;
        if response.status.is_success() {
            Ok(response)
        } else {
            Err(error_of(&service, &response))
        }
    }

    /// Sends the call as [`send`](Call::send) does, and returns the answer
    /// whatever its status: a proxy's way to pass on the callee's `404`,
    /// `409` or `503` with its headers and body.
    ///
    /// Attempts, retries (of `429`, `502`, `503` and `504` too), breakers
    /// and metrics are those of `send`; the answer returned is the last
    /// attempt's.
    ///
    /// ```no_run
    /// # async fn demo(client: mamey_http::ServiceClient) -> Result<(), mamey_core::Error> {
    /// let answer = client.get("orders", "/orders/7").exchange().await?;
    /// if answer.status == http::StatusCode::NOT_FOUND {
    ///     // the callee's own problem document is in `answer.body`
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Only when no answer came: `unavailable` when no connection could be
    /// opened (`client.connect_failed`), for other connection errors
    /// (`client.unreachable`), timeouts (`client.timeout`), open circuits
    /// (`client.circuit_open`) and unknown services
    /// (`discovery.no_endpoints`); `internal` for an answer over
    /// `http_client.max_response_bytes` (code `internal`), a path that
    /// makes no URL (`client.url`), and, before any request, a body given
    /// to [`json`](Call::json) or [`body`](Call::body) that could not be
    /// made (`client.invalid_body`).
    pub async fn exchange(mut self) -> Result<Response, Error> {
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
        let repeat = match self.retry {
            Some(true) => Repeat::Failures,
            Some(false) => Repeat::Never,
            None if idempotent => Repeat::Failures,
            // A request that never left is safe to send again.
            None => Repeat::Unsent,
        };
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
            .run(&self.service, repeat, timeout, &mut attempt)
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
        result.map_err(|failure| failure.error)
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
                // hyper-util says `Connect` only when the connector failed:
                // no connection, so none of the request was written.
                if e.is_connect() {
                    Failure::unavailable(
                        Cause::ConnectFailed,
                        "client.connect_failed",
                        format!("connecting to `{service}` at {endpoint}: {}", causes(&e)),
                    )
                } else {
                    Failure::unavailable(
                        Cause::Unreachable,
                        "client.unreachable",
                        format!("calling `{service}` at {endpoint}: {}", causes(&e)),
                    )
                }
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
                Cause::ConnectFailed => Verdict::new(Outcome::Unsent, Health::Down),
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

/// `error` and its sources, for the log: hyper-util's own text is only
/// `client error (Connect)`.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

//! How an HTTP call fails: an attempt that got no usable answer, and the
//! mamey [`Error`] an answer outside `2xx` describes (for
//! [`Call::send`](super::Call::send)).

use mamey_core::{Error, ErrorKind};

use super::Response;
use crate::problem::Problem;

/// An attempt that got no answer to return: why, and the error for the
/// caller.
pub(crate) struct Failure {
    pub(crate) cause: Cause,
    pub(crate) error: Error,
}

/// Why an attempt got no answer; what it means for retries and the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// No connection could be opened (refused, name not resolved, TLS
    /// handshake failed, connect timeout): nothing of the request left, so
    /// it is retried whatever its method, and the endpoint's failure.
    ConnectFailed,
    /// The connection broke after the request may have left, or before the
    /// answer was read: retried when the call may be repeated, and the
    /// endpoint's failure.
    Unreachable,
    /// No answer within the attempt's timeout: retried, and the endpoint's
    /// failure.
    TimedOut,
    /// An answer larger than `max_response_bytes`: the same would come
    /// again, and the endpoint did answer.
    TooLarge,
    /// The request could not be made (a path that makes no valid URI).
    InvalidUrl,
    /// Never sent: the name did not resolve, or every circuit is open.
    Refused,
}

impl Failure {
    pub(crate) fn new(cause: Cause, error: Error) -> Self {
        Self { cause, error }
    }

    /// An `unavailable` failure with `code`.
    pub(crate) fn unavailable(cause: Cause, code: &'static str, message: String) -> Self {
        Self::new(cause, Error::new(ErrorKind::Unavailable, code, message))
    }
}

/// Why a call to `service` went nowhere when every endpoint's circuit is
/// open, for HTTP calls and gRPC channels alike. It names no endpoint:
/// their addresses are internal.
pub(crate) fn circuit_open(service: &str) -> String {
    format!("every endpoint of `{service}` is failing; not calling")
}

/// The error an answer describes: its problem document's code and fields,
/// its status's kind.
pub(crate) fn error_of(service: &str, response: &Response) -> Error {
    let kind = ErrorKind::from_http_status(response.status.as_u16());
    match serde_json::from_slice::<Problem>(&response.body) {
        Ok(problem) => {
            let mut error = Error::new(
                kind,
                problem.code,
                format!(
                    "`{service}` answered {}: {}",
                    response.status, problem.detail
                ),
            );
            for field in problem.errors {
                error = error.with_field(field.field, field.code, field.message);
            }
            error
        }
        Err(_) => Error::new(
            kind,
            "client.status",
            format!("`{service}` answered {}", response.status),
        ),
    }
}

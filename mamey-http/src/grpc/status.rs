//! Mapping between mamey errors and gRPC statuses, both ways.

use http::HeaderMap;
use mamey_core::{Error, ErrorKind};
use tonic::{Code, Status};

/// The gRPC status for a mamey error: the kind's code and the public
/// message (internal and unavailable details stay in the logs).
#[must_use]
pub fn status(error: &Error) -> Status {
    let message = match error.kind() {
        ErrorKind::Internal => "an internal error occurred".to_owned(),
        ErrorKind::Unavailable => "a dependency is unavailable; try again later".to_owned(),
        _ => error.public_message().to_owned(),
    };
    if matches!(error.kind(), ErrorKind::Internal | ErrorKind::Unavailable) {
        tracing::error!(error = %error, code = error.code(), "call failed");
    }
    let mut status = Status::new(Code::from(error.kind().grpc_code()), message);
    if let Ok(value) = error.code().parse() {
        status.metadata_mut().insert("mamey-code", value);
    }
    status
}

/// The mamey error for a gRPC status from another service.
#[must_use]
pub fn error(status: &Status) -> Error {
    let kind = ErrorKind::from_grpc_code(status.code() as i32);
    let code = status
        .metadata()
        .get("mamey-code")
        .and_then(|v| v.to_str().ok())
        .map_or_else(
            || format!("grpc.{}", code_name(status.code())),
            str::to_owned,
        );
    Error::new(kind, code, status.message().to_owned())
}

/// `DEADLINE_EXCEEDED` → `deadline_exceeded`.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The `grpc-status` of a header (or trailer) map.
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The status for an error of the client's own (a resolver's, say): its
/// kind's code and its message as is, since the caller is this service.
pub(crate) fn status_of(error: &Error) -> Status {
    Status::new(
        Code::from(error.kind().grpc_code()),
        error.message().to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_statuses_map_both_ways() {
        for kind in [
            ErrorKind::InvalidInput,
            ErrorKind::Unauthorized,
            ErrorKind::Forbidden,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::Unavailable,
            ErrorKind::Internal,
        ] {
            let original = Error::new(kind, "order.x", "detail");
            let back = error(&status(&original));
            assert_eq!(back.kind(), kind);
            assert_eq!(back.code(), "order.x");
        }
        let internal = status(&Error::internal("db at 10.0.0.3 refused"));
        assert!(!internal.message().contains("10.0.0.3"));
    }
}

//! The one error model every mamey crate speaks.
//!
//! An [`Error`] has a [`ErrorKind`] (what went wrong, in terms a caller can act
//! on), a stable machine-readable `code`, a human message, optional field
//! errors for invalid input, and an optional source that is logged but never
//! sent to a caller. Transports map the kind: HTTP to a status code and
//! RFC 9457 problem+json, gRPC to a status code, messaging to a retry or
//! dead-letter decision. The mapping tables live here so they are the same
//! everywhere: [`ErrorKind::http_status`], [`ErrorKind::grpc_code`] and
//! [`ErrorKind::is_retryable`], and the reverse ones for answers from other
//! services, [`ErrorKind::from_http_status`] and [`ErrorKind::from_grpc_code`].

use std::borrow::Cow;
use std::fmt;

/// A type-erased error from a dependency, kept as an [`Error`]'s source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of failure an [`Error`] is.
///
/// The kinds are deliberately few: each one maps to one HTTP status, one gRPC
/// code and one retry decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request or message is malformed or fails validation.
    InvalidInput,
    /// The caller is not authenticated.
    Unauthorized,
    /// The caller is authenticated but not allowed to do this.
    Forbidden,
    /// The thing asked for does not exist.
    NotFound,
    /// The request conflicts with the current state (duplicate, stale version).
    Conflict,
    /// A dependency is unavailable or overloaded; trying again later may work.
    Unavailable,
    /// A bug or an unexpected failure; details are logged, not returned.
    Internal,
}

impl ErrorKind {
    /// The HTTP status code for this kind.
    ///
    /// ```
    /// use mamey_core::ErrorKind;
    /// assert_eq!(ErrorKind::NotFound.http_status(), 404);
    /// ```
    #[must_use]
    pub const fn http_status(self) -> u16 {
        match self {
            Self::InvalidInput => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }

    /// The gRPC status code (the numeric value of `google.rpc.Code`).
    ///
    /// ```
    /// use mamey_core::ErrorKind;
    /// assert_eq!(ErrorKind::Unavailable.grpc_code(), 14);
    /// ```
    #[must_use]
    pub const fn grpc_code(self) -> i32 {
        match self {
            Self::InvalidInput => 3,  // INVALID_ARGUMENT
            Self::NotFound => 5,      // NOT_FOUND
            Self::Conflict => 6,      // ALREADY_EXISTS
            Self::Forbidden => 7,     // PERMISSION_DENIED
            Self::Unavailable => 14,  // UNAVAILABLE
            Self::Unauthorized => 16, // UNAUTHENTICATED
            Self::Internal => 13,     // INTERNAL
        }
    }

    /// The kind an HTTP error status from another service stands for: the
    /// reverse of [`http_status`](Self::http_status), widened to the
    /// statuses that mean the same thing (422 is invalid input, 429 and the
    /// gateway errors are unavailable). Anything else is internal.
    ///
    /// ```
    /// use mamey_core::ErrorKind;
    /// assert_eq!(ErrorKind::from_http_status(429), ErrorKind::Unavailable);
    /// assert_eq!(ErrorKind::from_http_status(ErrorKind::Conflict.http_status()), ErrorKind::Conflict);
    /// ```
    #[must_use]
    pub const fn from_http_status(status: u16) -> Self {
        match status {
            400 | 405 | 413 | 415 | 422 => Self::InvalidInput,
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            409 | 412 => Self::Conflict,
            429 | 502 | 503 | 504 => Self::Unavailable,
            _ => Self::Internal,
        }
    }

    /// The kind a gRPC status code from another service stands for: the
    /// reverse of [`grpc_code`](Self::grpc_code), widened to the codes that
    /// mean the same thing (`OUT_OF_RANGE` is invalid input, `ABORTED` a
    /// conflict, `DEADLINE_EXCEEDED` unavailable). Anything else is internal.
    ///
    /// ```
    /// use mamey_core::ErrorKind;
    /// assert_eq!(ErrorKind::from_grpc_code(4), ErrorKind::Unavailable); // DEADLINE_EXCEEDED
    /// ```
    #[must_use]
    pub const fn from_grpc_code(code: i32) -> Self {
        match code {
            3 | 9 | 11 => Self::InvalidInput, // INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
            16 => Self::Unauthorized,         // UNAUTHENTICATED
            7 => Self::Forbidden,             // PERMISSION_DENIED
            5 => Self::NotFound,              // NOT_FOUND
            6 | 10 => Self::Conflict,         // ALREADY_EXISTS, ABORTED
            1 | 4 | 8 | 14 => Self::Unavailable, // CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNAVAILABLE
            _ => Self::Internal,
        }
    }

    /// Whether handling the same message again may succeed.
    ///
    /// Messaging retries retryable failures with backoff and dead-letters the
    /// rest at once: a message that is invalid or forbidden now will be so on
    /// every attempt.
    #[must_use]
    pub const fn is_retryable(self) -> bool {
        matches!(self, Self::Unavailable | Self::Internal | Self::Conflict)
    }

    /// The default stable code for this kind, e.g. `"not_found"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid_input",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One invalid field of an input, reported with [`ErrorKind::InvalidInput`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    /// The field's path as the caller sent it, e.g. `"items[0].quantity"`.
    pub field: String,
    /// A stable code for the rule that failed, e.g. `"range"`.
    pub code: String,
    /// What is wrong, for a human.
    pub message: String,
}

/// An error a handler, plug-in or transport returns.
///
/// Build one with the constructor named after its kind and add detail with
/// the `with_*` methods:
///
/// ```
/// use mamey_core::{Error, ErrorKind};
///
/// let error = Error::invalid_input("order.invalid", "the order is not valid")
///     .with_field("quantity", "range", "must be between 1 and 100");
/// assert_eq!(error.kind(), ErrorKind::InvalidInput);
/// assert_eq!(error.code(), "order.invalid");
/// assert_eq!(error.fields()[0].field, "quantity");
/// ```
pub struct Error {
    kind: ErrorKind,
    code: Cow<'static, str>,
    message: String,
    fields: Vec<FieldError>,
    source: Option<BoxError>,
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $name:ident => $kind:ident;)*) => {$(
        $(#[$doc])*
        pub fn $name(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
            Self::new(ErrorKind::$kind, code, message)
        }
    )*};
}

impl Error {
    /// An error of any kind with a stable code and a message.
    pub fn new(
        kind: ErrorKind,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            code: code.into(),
            message: message.into(),
            fields: Vec::new(),
            source: None,
        }
    }

    constructors! {
        /// The input is malformed or fails validation (400, `INVALID_ARGUMENT`, dead-letter).
        invalid_input => InvalidInput;
        /// The caller is not authenticated (401, `UNAUTHENTICATED`).
        unauthorized => Unauthorized;
        /// The caller may not do this (403, `PERMISSION_DENIED`).
        forbidden => Forbidden;
        /// The thing asked for does not exist (404, `NOT_FOUND`).
        not_found => NotFound;
        /// The request conflicts with current state (409, `ALREADY_EXISTS`, retried).
        conflict => Conflict;
        /// A dependency is down or overloaded (503, `UNAVAILABLE`, retried).
        unavailable => Unavailable;
    }

    /// An unexpected failure (500, `INTERNAL`, retried).
    ///
    /// The message is for logs: transports show callers a generic text (see
    /// [`Error::public_message`]).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, "internal", message)
    }

    /// Wraps any error as [`ErrorKind::Internal`], keeping it as the source.
    pub fn from_source(source: impl Into<BoxError>) -> Self {
        let source = source.into();
        Self::internal(source.to_string()).with_source(source)
    }

    /// Adds a field error (used with [`ErrorKind::InvalidInput`]).
    #[must_use]
    pub fn with_field(
        mut self,
        field: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        self.fields.push(FieldError {
            field: field.into(),
            code: code.into(),
            message: message.into(),
        });
        self
    }

    /// Keeps the underlying error for logs and `Error::source`.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The kind.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The stable machine-readable code, e.g. `"order.not_found"`.
    #[must_use]
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The message, as written by whoever raised the error.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message that may be shown to a caller outside the service:
    /// the real message, except for [`ErrorKind::Internal`], whose details
    /// stay in the logs.
    #[must_use]
    pub fn public_message(&self) -> &str {
        match self.kind {
            ErrorKind::Internal => "an internal error occurred",
            _ => &self.message,
        }
    }

    /// The field errors, empty unless the input was invalid.
    #[must_use]
    pub fn fields(&self) -> &[FieldError] {
        &self.fields
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Error");
        s.field("kind", &self.kind)
            .field("code", &self.code)
            .field("message", &self.message);
        if !self.fields.is_empty() {
            s.field("fields", &self.fields);
        }
        if let Some(source) = &self.source {
            s.field("source", source);
        }
        s.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.kind, self.code, self.message)?;
        for field in &self.fields {
            write!(f, "; {}: {}", field.field, field.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_are_not_public() {
        let error = Error::internal("connection to 10.0.0.7 refused");
        assert_eq!(error.public_message(), "an internal error occurred");
        assert!(error.to_string().contains("10.0.0.7"));
    }

    #[test]
    fn kinds_map_to_transports() {
        let all = [
            (ErrorKind::InvalidInput, 400, 3, false),
            (ErrorKind::Unauthorized, 401, 16, false),
            (ErrorKind::Forbidden, 403, 7, false),
            (ErrorKind::NotFound, 404, 5, false),
            (ErrorKind::Conflict, 409, 6, true),
            (ErrorKind::Unavailable, 503, 14, true),
            (ErrorKind::Internal, 500, 13, true),
        ];
        for (kind, http, grpc, retry) in all {
            assert_eq!(kind.http_status(), http, "{kind}");
            assert_eq!(kind.grpc_code(), grpc, "{kind}");
            assert_eq!(kind.is_retryable(), retry, "{kind}");
            assert_eq!(ErrorKind::from_http_status(http), kind, "{kind} round trip");
            assert_eq!(ErrorKind::from_grpc_code(grpc), kind, "{kind} round trip");
        }
        assert_eq!(ErrorKind::from_http_status(418), ErrorKind::Internal);
        assert_eq!(ErrorKind::from_grpc_code(2), ErrorKind::Internal); // UNKNOWN
    }

    #[test]
    fn source_is_kept() {
        let io = std::io::Error::other("disk full");
        let error = Error::from_source(io);
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("disk full"));
        assert_eq!(error.kind(), ErrorKind::Internal);
    }
}

//! The response body of a hosted call, metered: it records the call's
//! code, duration and span status when it ends.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use http_body::Frame;
use tonic::Code;

use super::status::grpc_status;

/// A response body that records the call's code, duration and span status
/// when it ends (or `CANCELLED` when the client goes away first).
pub(crate) struct Metered {
    inner: Body,
    service: String,
    method: String,
    started: Instant,
    span: tracing::Span,
    early: Option<i32>,
    done: bool,
}

impl Metered {
    /// Meters `inner`, the body of a call to `service`'s `method` (labels
    /// from the hosted set) started at `started`; `early` is a status sent
    /// in the headers (a trailers-only answer).
    pub(crate) fn new(
        inner: Body,
        service: String,
        method: String,
        started: Instant,
        span: tracing::Span,
        early: Option<i32>,
    ) -> Self {
        Self {
            inner,
            service,
            method,
            started,
            span,
            early,
            done: false,
        }
    }

    fn finish(&mut self, code: i32) {
        if self.done {
            return;
        }
        self.done = true;
        self.span.record("rpc.grpc.status_code", code);
        // Server-side faults mark the span, the caller's mistakes do not.
        let fault = matches!(
            Code::from(code),
            Code::Unknown
                | Code::DeadlineExceeded
                | Code::Unimplemented
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss
        );
        if fault {
            self.span.record("otel.status_code", "ERROR");
        }
        // A method the service does not have is the caller's word only.
        let method = if code == Code::Unimplemented as i32 {
            "unmatched"
        } else {
            self.method.as_str()
        };
        mamey_observability::metrics::record_grpc_server(
            &self.service,
            method,
            code,
            self.started.elapsed(),
        );
    }
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = grpc_status(trailers).unwrap_or(Code::Unknown as i32);
                    this.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(Code::Internal as i32),
            Poll::Ready(None) => {
                let code = this.early.unwrap_or(Code::Ok as i32);
                this.finish(code);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        let code = self.early.unwrap_or(Code::Cancelled as i32);
        self.finish(code);
    }
}

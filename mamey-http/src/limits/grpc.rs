//! The limits on gRPC calls: methods by their path, the health service
//! exempt, refusals as statuses (`RESOURCE_EXHAUSTED` for the rate limit,
//! `UNAVAILABLE` for the others) with `retry-after` metadata.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http::Request;
use tonic::Status;
use tonic::metadata::MetadataValue;

use super::{Protocol, Reason, Rejection};

/// The gRPC server's side of the limits.
#[derive(Debug, Clone)]
pub(crate) struct GrpcLimits {
    /// Services no limit applies to.
    exempt: Arc<[&'static str]>,
    /// The service names a refusal may be counted under; others are
    /// `unmatched`.
    known: Arc<[String]>,
}

impl GrpcLimits {
    /// Limits calls to any service but `exempt`, counting refusals under the
    /// `known` services' names.
    pub(crate) fn new(exempt: &[&'static str], known: Vec<String>) -> Self {
        Self {
            exempt: exempt.into(),
            known: known.into(),
        }
    }
}

/// `/pkg.Service/Method` → `pkg.Service`.
fn service(path: &str) -> &str {
    path.trim_start_matches('/')
        .split_once('/')
        .map_or("", |(service, _)| service)
}

impl Protocol for GrpcLimits {
    fn target<'r>(&self, request: &'r Request<Body>) -> Option<Option<&'r str>> {
        let path = request.uri().path();
        if self.exempt.contains(&service(path)) {
            return None;
        }
        Some(Some(path))
    }

    fn reject(&self, request: &Request<Body>, rejection: Rejection) -> Response {
        let service = service(request.uri().path());
        let service = if self.known.iter().any(|known| known == service) {
            service
        } else {
            "unmatched"
        };
        let reason = rejection.reason.as_str();
        metrics::counter!(
            "grpc_server_rejections_total",
            "service" => service.to_owned(),
            "reason" => reason,
        )
        .increment(1);
        tracing::debug!(
            rpc.service = service,
            reason,
            retry_after = rejection.retry_after,
            "call refused"
        );
        let (mut status, code) = match rejection.reason {
            Reason::Rate => (
                Status::resource_exhausted(format!(
                    "too many calls from this caller; try again in {} s",
                    rejection.retry_after
                )),
                "request.rate_limited",
            ),
            Reason::Concurrency => (
                Status::unavailable("too many calls in progress; try again shortly"),
                "request.overloaded",
            ),
            Reason::Shed => (
                Status::unavailable("the service is overloaded; try again shortly"),
                "request.shed",
            ),
        };
        let metadata = status.metadata_mut();
        metadata.insert("retry-after", MetadataValue::from(rejection.retry_after));
        metadata.insert("mamey-code", MetadataValue::from_static(code));
        status.into_http()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_service_is_exempt_and_labels_stay_bounded() {
        let limits = GrpcLimits::new(&["grpc.health.v1.Health"], vec!["orders.v1.Orders".into()]);
        let call = |path: &str| Request::builder().uri(path).body(Body::empty()).unwrap();
        let health = call("/grpc.health.v1.Health/Check");
        assert_eq!(limits.target(&health), None);
        let get = call("/orders.v1.Orders/Get");
        assert_eq!(limits.target(&get), Some(Some("/orders.v1.Orders/Get")));
        let refused = limits.reject(
            &call("/made.up.Service/X"),
            Rejection {
                reason: Reason::Rate,
                retry_after: 3,
            },
        );
        assert_eq!(refused.headers()["grpc-status"], "8");
        assert_eq!(refused.headers()["retry-after"], "3");
    }
}

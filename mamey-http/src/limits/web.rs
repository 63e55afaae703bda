//! The limits on the web API: routes by their matched template, the
//! operational endpoints exempt, refusals as problem+json.

use axum::body::Body;
use axum::extract::MatchedPath;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Request, StatusCode, header};

use super::{Protocol, Reason, Rejection};
use crate::problem::Problem;

/// The routes no limit applies to: probes and scrapes must answer however
/// loaded the service is.
const EXEMPT: [&str; 4] = [
    "/health/live",
    "/health/ready",
    "/health/startup",
    "/metrics",
];

/// The web API's side of the limits.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HttpLimits;

impl Protocol for HttpLimits {
    fn target<'r>(&self, request: &'r Request<Body>) -> Option<Option<&'r str>> {
        match request.extensions().get::<MatchedPath>() {
            Some(path) if EXEMPT.contains(&path.as_str()) => None,
            Some(path) => Some(Some(path.as_str())),
            None => Some(None),
        }
    }

    fn reject(&self, request: &Request<Body>, rejection: Rejection) -> Response {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str);
        let reason = rejection.reason.as_str();
        metrics::counter!(
            "http_server_rejections_total",
            "route" => route.to_owned(),
            "reason" => reason,
        )
        .increment(1);
        tracing::debug!(
            route,
            reason,
            retry_after = rejection.retry_after,
            "request refused"
        );
        let mut response = problem(rejection).into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(rejection.retry_after),
        );
        response
    }
}

/// The answer to a refusal; nothing in it says which limit's values.
fn problem(rejection: Rejection) -> Problem {
    match rejection.reason {
        Reason::Rate => {
            let mut problem = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "request.rate_limited",
                format!(
                    "too many requests from this caller; try again in {} s",
                    rejection.retry_after
                ),
            );
            problem.type_uri = "https://mamey.dev/problems/rate_limited".to_owned();
            problem
        }
        Reason::Concurrency => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request.overloaded",
            "too many requests in progress; try again shortly",
        ),
        Reason::Shed => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request.shed",
            "the service is overloaded; try again shortly",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_problems_with_retry_after() {
        let rate = Rejection {
            reason: Reason::Rate,
            retry_after: 7,
        };
        let response = HttpLimits.reject(&Request::new(Body::empty()), rate);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            crate::problem::PROBLEM_JSON
        );
        let shed = problem(Rejection {
            reason: Reason::Shed,
            retry_after: 1,
        });
        assert_eq!((shed.status, shed.code.as_str()), (503, "request.shed"));
    }
}

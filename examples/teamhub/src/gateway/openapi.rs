//! `GET /api/openapi.json`: the public API in one document, made of each
//! routed service's `/openapi.json` (see [`super::merge`]), fetched through
//! the service client and kept for a minute. A service that cannot be
//! reached is left out (noted under `x-missing`), and a document missing
//! one is kept for 5 s only, so that it fills in once the service is back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header;
use mamey_http::{Resource, ServiceClient};
use tokio::sync::Mutex;

use super::merge::{Fetched, merge};
use super::routing::ROUTED;

/// How long a complete document is kept.
const KEEP: Duration = Duration::from_secs(60);
/// How long a document missing a service is kept.
const KEEP_PARTIAL: Duration = Duration::from_secs(5);
/// How long one service may take to answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The merged document, while fresh; a resource. Requests wait for one
/// another while it is made, so the services are asked once.
#[derive(Clone, Debug, Default)]
pub(super) struct MergedDocument(Arc<Mutex<Option<(Instant, Bytes)>>>);

impl MergedDocument {
    /// The document: the one kept, or a new one.
    async fn get(&self, client: &ServiceClient) -> Bytes {
        let mut kept = self.0.lock().await;
        if let Some((until, document)) = kept.as_ref()
            && Instant::now() < *until
        {
            return document.clone();
        }
        let fetched =
            futures_util::future::join_all(ROUTED.map(|service| fetch(client, service))).await;
        let complete = fetched.iter().all(|(_, document)| document.is_ok());
        let document = Bytes::from(
            serde_json::to_vec_pretty(&merge(env!("CARGO_PKG_VERSION"), fetched))
                .unwrap_or_default(),
        );
        let keep = if complete { KEEP } else { KEEP_PARTIAL };
        *kept = Some((Instant::now() + keep, document.clone()));
        document
    }
}

/// `service`'s document, or why there is none (said without internals).
async fn fetch(client: &ServiceClient, service: &'static str) -> Fetched {
    let answer = client
        .get(service, "/openapi.json")
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .and_then(|answer| answer.json::<serde_json::Value>());
    let document = answer.map_err(|error| {
        tracing::warn!(service, error = %error.message(), "no OpenAPI document from the service");
        format!(
            "`{service}` did not give its document ({}); it is left out",
            error.code()
        )
    });
    (service, document)
}

/// The merged document.
pub(super) async fn merged(
    Resource(document): Resource<MergedDocument>,
    Resource(client): Resource<ServiceClient>,
) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.get(&client).await,
    )
        .into_response()
}

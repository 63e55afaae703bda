//! The service client.

use std::time::Duration;

use bytes::Bytes;
use mamey_core::Error;
use mamey_http::ServiceClient;
use mamey_http::axum::http::StatusCode;
use serde::Serialize;

/// The body of `POST /orders`.
#[derive(Debug, Serialize)]
pub struct NewOrder {
    /// How many items.
    pub items: u32,
}

// ANCHOR: client
use mamey_http::axum::http::Method;
use mamey_http::url_path;
use serde::Deserialize;

/// A price.
#[derive(Debug, Deserialize)]
pub struct Price {
    cents: u64,
}

/// Prices, orders, and a proxied call.
pub async fn calls(
    client: &ServiceClient,
    sku: &str,
    key: &str,
    (method, path_and_query): (Method, &str),
    (content_type, body): (&str, Bytes),
) -> Result<StatusCode, Error> {
    let price: Price = client.get("pricing", "/prices/42").send().await?.json()?;
    let same: Price = client
        .request(Method::GET, "http://pricing/prices/42")?
        .send()
        .await?
        .json()?;
    // A value from outside goes into the path with `url_path`, which
    // percent-encodes each segment: `?`, `#`, `/` or `%` in `sku` stay data.
    let priced: Price = client
        .get("pricing", &url_path(["prices", sku]))
        .send()
        .await?
        .json()?;
    tracing::info!(price.cents, same.cents, priced.cents, "prices");

    let placed = client
        .post("orders", "/orders")
        .header("idempotency-key", key) // a header the callee de-duplicates on
        .json(&NewOrder { items: 2 })
        .retry(true) // retry this POST despite its method
        .timeout(Duration::from_secs(2)) // per attempt
        .send()
        .await?;
    tracing::info!(status = %placed.status, "placed");

    // A proxy: the body passed on as it came, the answer whatever its status.
    let answer = client
        .call("orders", method, path_and_query)
        .body(content_type, body) // bytes::Bytes, sent as they are
        .exchange()
        .await?; // Err only when no answer came
    let status = answer.status; // 201, 404, 409, 503, … with headers and body
    Ok(status)
}
// ANCHOR_END: client

//! The chapter "Observability" (`docs/src/observability.md`).

use mamey_core::{InitContext, Plugin};

/// The orders service's own plug-in.
#[derive(Debug)]
pub struct Orders;

impl Plugin for Orders {
    async fn init(&mut self, _ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        Ok(())
    }
}

// ANCHOR: service
use mamey_core::{BoxError, Service};
use mamey_observability::Observability;

/// The program.
#[tokio::main]
pub async fn main() -> Result<(), BoxError> {
    Service::builder("orders")
        .version(env!("CARGO_PKG_VERSION"))
        .plugin(Observability::new()) // first
        .plugin(Orders)
        .build()
        .await?
        .run()
        .await?;
    Ok(())
}
// ANCHOR_END: service

// ANCHOR: log_level
/// Turns on debug logs for one module, at runtime.
pub fn debug_orders(service: &Service) -> Result<(), BoxError> {
    let level = service.resources().get::<mamey_observability::LogLevel>()?;
    level.set("info,my_crate::orders=debug")?; // an invalid directive keeps the old filter
    println!("{}", level.current());
    Ok(())
}
// ANCHOR_END: log_level

// ANCHOR: carrier
use std::borrow::Cow;

use mamey_observability::propagation::Carrier;

/// The headers of a protocol of our own: a list of pairs.
#[derive(Debug, Default)]
pub struct Headers(pub Vec<(String, String)>);

impl Carrier for Headers {
    // `key` is lower-case.
    fn get(&self, key: &str) -> Option<Cow<'_, str>> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| Cow::Borrowed(value.as_str()))
    }

    // Replaces.
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(name, _)| !name.eq_ignore_ascii_case(key));
        self.0.push((key.to_owned(), value));
    }
}
// ANCHOR_END: carrier

/// What a request is answered with.
pub type Reply = http::Response<String>;

// ANCHOR: propagation
use mamey_observability::propagation::{extract, inject};
use tracing::Instrument;

/// Receiving: continue the caller's trace and ids.
pub async fn serve(request: http::Request<String>) -> Reply {
    let extracted = extract(request.headers());
    let span = tracing::info_span!("http.server", otel.name = "POST /orders");
    extracted.set_parent(&span);
    extracted
        .context
        .scope(handle(request).instrument(span))
        .await
}

async fn handle(request: http::Request<String>) -> Reply {
    // Sending, from inside that work:
    let mut headers = http::HeaderMap::new();
    inject(&mut headers);
    // ... call the next service with `headers` ...
    http::Response::new(request.into_body())
}
// ANCHOR_END: propagation

// ANCHOR: metrics_address
/// Where the metrics listener listens (`metrics.listen` with port 0).
pub fn metrics_address(service: &Service) -> Result<std::net::SocketAddr, BoxError> {
    let mamey_observability::MetricsAddress(address) = service.resources().get()?;
    Ok(address)
}
// ANCHOR_END: metrics_address

// ANCHOR: private_subscriber
use tracing::instrument::WithSubscriber;

/// Runs a service built with `Observability::new().without_global_subscriber()`
/// under its own subscriber.
pub async fn run_observed(service: Service) -> Result<(), BoxError> {
    let telemetry = service
        .resources()
        .get::<mamey_observability::Telemetry>()?;
    let _guard = tracing::dispatcher::set_default(telemetry.dispatch()); // this thread
    let run = service.run().with_subscriber(telemetry.dispatch().clone()); // a future, on any thread
    run.await?;
    Ok(())
}
// ANCHOR_END: private_subscriber

#[cfg(test)]
mod tests {
    use mamey_core::MessageContext;
    use mamey_observability::propagation::{extract, inject};

    use super::Headers;

    #[tokio::test]
    async fn ids_travel_through_the_carrier() {
        let sent = MessageContext::new();
        let correlation_id = sent.correlation_id.clone();
        let headers = sent
            .scope(async {
                let mut headers = Headers::default();
                inject(&mut headers);
                headers
            })
            .await;
        assert_eq!(extract(&headers).context.correlation_id, correlation_id);
    }
}

//! The publisher's trace continues in the consumer: the handler runs in a
//! span of the same trace, child of the `consume` span.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mamey_core::Service;
use mamey_core::cqrs::Event;
use mamey_core::health::{Probe, Status};
use mamey_messaging::{MemoryBroker, Message, Messaging, Publisher};
use mamey_observability::propagation::OtelContext;
use mamey_observability::{Observability, Telemetry};
use opentelemetry::trace::TraceContextExt;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct Ping;

impl Message for Ping {
    const NAMESPACE: &'static str = "ping";
}

impl Event for Ping {}

fn trace_id() -> String {
    OtelContext::current()
        .span()
        .span_context()
        .trace_id()
        .to_string()
}

#[tokio::test]
async fn the_handler_span_continues_the_publishers_trace() {
    let seen = Arc::new(Mutex::new(None));
    let sink = Arc::clone(&seen);
    let service = Service::builder("tracing-test")
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars([
            // Spans are recorded and sampled; where they are sent does not
            // matter here (nothing listens on port 1).
            ("MAMEY__TRACING__ENDPOINT", "http://127.0.0.1:1"),
            ("MAMEY__TRACING__SAMPLER", "always"),
        ])
        .plugin(
            Observability::new()
                .without_global_subscriber()
                .with_writer(std::io::sink)
                .with_env_vars(Vec::<(String, String)>::new()),
        )
        .plugin(Messaging::new(MemoryBroker::new()).subscribe_event::<Ping>())
        .handlers(move |dispatcher, _| {
            dispatcher.add_event(move |_: Ping| {
                let sink = Arc::clone(&sink);
                async move {
                    *sink.lock().unwrap() = Some(trace_id());
                    Ok(())
                }
            });
            Ok(())
        })
        .build()
        .await
        .unwrap();
    let telemetry = service.resources().get::<Telemetry>().unwrap();
    let _guard = tracing::dispatcher::set_default(telemetry.dispatch());
    let publisher = service.resources().get::<Publisher>().unwrap();
    let (health, stop) = (service.health().clone(), service.shutdown_handle());
    let running = tokio::spawn(service.run());
    while health.check(Probe::Startup).await.status != Status::Healthy {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let publish_span = tracing::info_span!("checkout");
    let published_trace = {
        let _entered = publish_span.enter();
        let id = trace_id();
        publisher.publish(&Ping).await.unwrap();
        id
    };
    assert_ne!(published_trace, "0".repeat(32), "the publisher is traced");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the handler never ran"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        seen.lock().unwrap().as_deref(),
        Some(published_trace.as_str())
    );
    stop.shutdown();
    running.await.unwrap().unwrap();
}

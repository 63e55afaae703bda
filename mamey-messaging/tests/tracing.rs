//! The publisher's trace continues in the consumer, over each backend: the
//! handler runs in a span of the publisher's trace (the `consume` span's
//! child). Each case runs on a current-thread runtime, where the tracing
//! dispatch set for the test reaches the consumer's tasks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "rabbitmq")]
mod rabbitmq_common;
mod suite;

use std::time::Duration;

use mamey_messaging::MemoryBroker;
use mamey_observability::propagation::OtelContext;
use mamey_observability::{Observability, Telemetry};
use opentelemetry::trace::TraceContextExt;
use suite::{Backend, OrderPlaced, Seen, eventually, service};

/// The in-process backend.
struct Memory(MemoryBroker);

impl Backend for Memory {
    fn messaging(&self) -> mamey_messaging::Messaging {
        mamey_messaging::Messaging::new(self.0.clone())
    }

    fn vars(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    fn service_name(&self) -> String {
        "tracing-test".to_owned()
    }

    async fn publish_garbage(&self) {}

    async fn dead_letters(&self) -> Vec<(String, u32)> {
        Vec::new()
    }
}

async fn the_handler_span_continues_the_publishers_trace<B: Backend>(backend: &B) {
    let seen = Seen::default();
    let mut vars = suite::vars(backend);
    vars.extend([
        // Spans are recorded and sampled; where they are sent does not
        // matter here (nothing listens on port 1).
        (
            "MAMEY__TRACING__ENDPOINT".to_owned(),
            "http://127.0.0.1:1".to_owned(),
        ),
        ("MAMEY__TRACING__SAMPLER".to_owned(), "always".to_owned()),
    ]);
    let service = service(backend, &seen, Some(0), Duration::ZERO)
        .env_vars(vars)
        .plugin(
            Observability::new()
                .without_global_subscriber()
                .with_writer(std::io::sink)
                .with_env_vars(Vec::<(String, String)>::new()),
        )
        .build()
        .await
        .unwrap();
    let telemetry = service.resources().get::<Telemetry>().unwrap();
    let _guard = tracing::dispatcher::set_default(telemetry.dispatch());
    let running = suite::Running {
        publisher: service.resources().get().unwrap(),
        health: service.health().clone(),
        service: service.start().await.unwrap(),
    };

    let publish_span = tracing::info_span!("checkout");
    let published_trace = {
        let _entered = publish_span.enter();
        let id = OtelContext::current()
            .span()
            .span_context()
            .trace_id()
            .to_string();
        running
            .publisher
            .publish(&OrderPlaced { id: 1 })
            .await
            .unwrap();
        id
    };
    assert_ne!(published_trace, "0".repeat(32), "the publisher is traced");
    eventually("the handler", || {
        let seen = seen.clone();
        async move { seen.handled() == 1 }
    })
    .await;
    assert_eq!(*seen.trace_ids.lock().unwrap(), [published_trace]);
    running.stop().await;
}

#[tokio::test]
async fn memory() {
    the_handler_span_continues_the_publishers_trace(&Memory(MemoryBroker::new())).await;
}

#[cfg(feature = "rabbitmq")]
#[tokio::test]
async fn rabbitmq() {
    let Some(rabbit) = rabbitmq_common::Rabbit::new().await else {
        return;
    };
    the_handler_span_continues_the_publishers_trace(&rabbit).await;
    rabbit.clean().await;
}

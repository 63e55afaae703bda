//! The process-wide subscriber: installed once by the first service, shared
//! by the next (no panic), and composed with a layer of the application's.
//! Its own test binary: it installs the global subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mamey_core::Service;
use mamey_observability::{LogLevel, Observability};
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

/// Counts the events it sees.
struct Counting(Arc<AtomicUsize>);

impl<S: Subscriber> Layer<S> for Counting {
    fn on_event(&self, _event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn builder(name: &str) -> mamey_core::ServiceBuilder {
    Service::builder(name)
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars([("MAMEY__LOGGING__LEVEL", "info")])
}

#[tokio::test]
async fn the_first_service_installs_the_subscriber_and_the_next_shares_it() {
    let seen = Arc::new(AtomicUsize::new(0));
    let first = builder("first")
        .plugin(
            Observability::new()
                .with_writer(std::io::sink)
                .with_env_vars(Vec::<(String, String)>::new())
                .with_layer(Counting(Arc::clone(&seen))),
        )
        .build()
        .await
        .unwrap();
    let second = builder("second")
        .plugin(
            Observability::new()
                .with_writer(std::io::sink)
                .with_env_vars(Vec::<(String, String)>::new()),
        )
        .build()
        .await
        .expect("a second service reuses the subscriber instead of failing");

    let before = seen.load(Ordering::SeqCst);
    tracing::info!("through the global subscriber");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        before + 1,
        "the user's layer sees events"
    );

    // Both services hold the one filter: a change through either applies.
    let level = second.resources().get::<LogLevel>().unwrap();
    level.set("warn").unwrap();
    assert_eq!(
        first.resources().get::<LogLevel>().unwrap().current(),
        "warn"
    );
    let before = seen.load(Ordering::SeqCst);
    tracing::info!("filtered out now");
    assert_eq!(seen.load(Ordering::SeqCst), before);
}

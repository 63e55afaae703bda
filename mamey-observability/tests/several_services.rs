//! Several services in one process share the subscriber and the recorder,
//! and each keeps its own name in log lines and metrics.
//! Its own test binary: it installs the global subscriber and recorder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use mamey_core::cqrs::Command;
use mamey_core::{BoxError, Error, InitContext, Plugin, Service, ServiceGroup, StartContext};
use mamey_observability::{Observability, Prometheus};
use serde_json::Value;
use support::LogBuffer;

/// Logs and counts from a task it spawns at start, and when it stops.
struct Ticker;

impl Plugin for Ticker {
    async fn init(&mut self, _ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        tracing::info!("ticker initialised");
        Ok(())
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let stop = ctx.shutdown_token();
        ctx.spawn("tick", async move {
            tracing::info!("tick");
            metrics::counter!("test_ticks_total").increment(1);
            stop.cancelled().await;
            Ok(())
        });
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), BoxError> {
        tracing::info!("ticker stopped");
        Ok(())
    }
}

struct Greet;
impl Command for Greet {}

async fn service(name: &str, logs: &LogBuffer) -> Service {
    Service::builder(name)
        .version("3.0.1")
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars([
            ("MAMEY__LOGGING__FORMAT", "json"),
            ("MAMEY__LOGGING__LEVEL", "info"),
        ])
        .plugin(
            Observability::new()
                .with_writer(logs.clone())
                .with_env_vars(Vec::<(String, String)>::new()),
        )
        .plugin(Ticker)
        .handlers(|d| {
            d.command(|_: Greet| async {
                tracing::info!("greeted");
                Ok::<(), Error>(())
            });
        })
        .build()
        .await
        .unwrap()
}

fn json_lines(logs: &LogBuffer) -> Vec<Value> {
    logs.lines()
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The `service` of each line whose message is `message`, sorted.
fn services_of(lines: &[Value], message: &str) -> Vec<String> {
    let mut services: Vec<String> = lines
        .iter()
        .filter(|l| l["message"] == message)
        .map(|l| l["service"].as_str().unwrap().to_owned())
        .collect();
    services.sort();
    services
}

/// The value of the sample `series` (name and labels, as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_keeps_its_name_in_logs_and_metrics() {
    // Only the first service's writer is used: the second shares its
    // subscriber.
    let logs = LogBuffer::default();
    let alpha = service("alpha", &logs).await;
    let beta = service("beta", &LogBuffer::default()).await;
    let instances = [
        ("alpha", alpha.app().instance_id.clone()),
        ("beta", beta.app().instance_id.clone()),
    ];
    let prometheus = alpha.resources().get::<Prometheus>().unwrap();
    let (greet_alpha, greet_beta) = (alpha.dispatcher().clone(), beta.dispatcher().clone());

    let running = ServiceGroup::new()
        .handle_signals(false)
        .service(alpha)
        .service(beta)
        .start()
        .await
        .unwrap();
    // Dispatched from outside both services: each handler runs in its own.
    greet_alpha.send(Greet).await.unwrap();
    greet_beta.send(Greet).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while services_of(&json_lines(&logs), "tick").len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:#?}",
            logs.lines()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = prometheus.render();
    running.stop().await.unwrap();

    let lines = json_lines(&logs);
    let both = ["alpha", "beta"];
    for message in ["ticker initialised", "tick", "greeted", "ticker stopped"] {
        assert_eq!(services_of(&lines, message), both, "{message}: {lines:#?}");
    }
    for line in lines.iter().filter(|l| l["message"] == "tick") {
        let (_, instance) = instances
            .iter()
            .find(|(name, _)| line["service"] == *name)
            .unwrap();
        assert_eq!(line["instance_id"], instance.as_str(), "{line}");
        assert_eq!(line["version"], "3.0.1", "{line}");
    }

    assert_eq!(
        sample(&text, "test_ticks_total{service_name=\"alpha\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "test_ticks_total{service_name=\"beta\"}"),
        Some(1.0),
        "{text}"
    );
    for service in both {
        let ok = format!(
            "handler_dispatches_total{{kind=\"command\",name=\"Greet\",outcome=\"ok\",service_name=\"{service}\"}}"
        );
        assert_eq!(sample(&text, &ok), Some(1.0), "{text}");
    }
    // Process metrics belong to no service, even scraped from inside one.
    let scraped = mamey_core::ServiceScope::new("alpha", "alpha-1", "3.0.1")
        .sync_scope(|| prometheus.render());
    assert!(
        scraped.contains("\nprocess_uptime_seconds ")
            && !scraped.contains("process_uptime_seconds{"),
        "{scraped}"
    );
}

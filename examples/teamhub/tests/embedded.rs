//! The embedded system — all six services in this process over SQLite, the
//! in-process broker and registry, file secrets — driven through the
//! gateway with real HTTP and WebSocket clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod scenario;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use mamey_core::{BoxError, MessageContext, Service, ServiceScope};
use mamey_messaging::Publisher;
use serde_json::json;
use teamhub::contracts::{AssignCard, CardCreated, CardSnapshot};
use teamhub::{Deployment, system};
use tracing::span;
use tracing_subscriber::layer::{Context, Layer};

/// What the services traced: every span opened in the process (the service
/// it was opened in and the correlation id current then), and every warning
/// (the service and its message).
#[derive(Clone, Default)]
struct Traced {
    spans: Arc<Mutex<Vec<(String, String)>>>,
    warnings: Arc<Mutex<Vec<(String, String)>>>,
}

impl Traced {
    /// The services that opened a span with `correlation_id`.
    fn services_of(&self, correlation_id: &str) -> std::collections::BTreeSet<String> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, id)| id == correlation_id)
            .map(|(service, _)| service.clone())
            .collect()
    }

    /// Whether `service` warned with a message containing `text`.
    fn warned(&self, service: &str, text: &str) -> bool {
        self.warnings
            .lock()
            .unwrap()
            .iter()
            .any(|(s, message)| s == service && message.contains(text))
    }
}

/// An event's `message` field.
#[derive(Default)]
struct MessageField(String);

impl tracing::field::Visit for MessageField {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.0);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Traced {
    fn on_new_span(&self, _: &span::Attributes<'_>, _: &span::Id, _: Context<'_, S>) {
        let service = ServiceScope::with_current(|s| s.map(|s| s.name().to_owned()));
        let correlation = MessageContext::with_current(|mc| mc.map(|mc| mc.correlation_id.clone()));
        if let (Some(service), Some(correlation)) = (service, correlation) {
            self.spans.lock().unwrap().push((service, correlation));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() != tracing::Level::WARN {
            return;
        }
        let Some(service) = ServiceScope::with_current(|s| s.map(|s| s.name().to_owned())) else {
            return;
        };
        let mut message = MessageField::default();
        event.record(&mut message);
        self.warnings.lock().unwrap().push((service, message.0));
    }
}

/// A fresh data directory, removed when dropped.
struct DataDir(std::path::PathBuf);

impl DataDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("teamhub-test-{}", scenario::run_id()));
        Self(dir)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Messages about a card deleted since reach its consumers, as they would
/// when delayed: boards' `card_created` again (on its own queue, it can
/// come after `card_deleted`) and an automation's `AssignCard`. Neither
/// brings the card back nor stops a consumer: automations and boards each
/// skip theirs with a warning, and the next card is assigned as usual.
async fn late_messages_about_a_deleted_card_are_skipped(
    deploy: &Deployment,
    world: &mut scenario::World,
    deleted: &serde_json::Value,
    traced: &Traced,
) -> Result<(), BoxError> {
    let card: CardSnapshot = serde_json::from_value(deleted.clone())?;
    let created = world
        .a_live
        .received()
        .iter()
        .find(|n| scenario::is_about(n, "card_created", card.id))
        .ok_or("no card_created for the deleted card")?;
    let created: CardCreated = serde_json::from_value(created["data"].clone())?;

    // A service of its own on the embedded broker, publishing as boards and
    // automations do.
    let probe = Service::builder("probe")
        .plugin(deploy.messaging())
        .build()
        .await?;
    let publisher = probe.resources().get::<Publisher>()?;
    publisher.publish(&created).await?;
    publisher
        .publish(&AssignCard {
            card_id: card.id,
            assignee: Some(world.b.user_id),
            reason: "late".to_owned(),
        })
        .await?;
    scenario::eventually("automations and boards skip them", || async {
        Ok((traced.warned("automations", "deleted since; skipped")
            && traced.warned("boards", "card that does not exist; dropped"))
        .then_some(()))
    })
    .await?;
    let gone = world
        .as_a()
        .call(Method::GET, &format!("/api/boards/cards/{}", card.id), None)
        .await?;
    assert_eq!(gone.status, http::StatusCode::NOT_FOUND, "{}", gone.body);
    scenario::a_new_card_is_assigned(world).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_embedded_system_works_end_to_end() -> Result<(), BoxError> {
    let data = DataDir::new();
    let trace = Traced::default();
    let layer = trace.clone();
    let deploy = Deployment::embedded(&data.0)
        .service_env(
            teamhub::gateway::NAME,
            "MAMEY__HTTP__ADDRESS",
            "127.0.0.1:0",
        )
        .tracing_layer(move || Box::new(layer.clone()));
    let started = std::time::Instant::now();
    let built = system::embedded(&deploy).await?;
    let running = built.group.start().await?;
    let ready_in = started.elapsed();
    let base = format!("http://{}", built.gateway);

    let outcome = async {
        // The dev signing key was made on first run, readable by its owner
        // only.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(system::secrets_file(&data.0))?
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the secrets file is private: {mode:o}");
        }
        let mut world = scenario::set_up(&base).await?;
        scenario::strangers_are_kept_out(&world).await?;
        scenario::a_new_card_is_assigned(&mut world).await?;
        scenario::children_drive_their_parent(&world).await?;
        let deleted = scenario::deleting_a_card_settles_its_parent(&mut world).await?;
        late_messages_about_a_deleted_card_are_skipped(&deploy, &mut world, &deleted, &trace)
            .await?;
        scenario::chat_is_live_and_pages(&mut world).await?;
        scenario::the_feed_lists_it(&world).await?;

        // The correlation id a client sends reaches every service the
        // request touches: over HTTP, the broker and gRPC.
        let correlation = format!("corr-{}", world.run);
        let traced = world.as_a().with_correlation_id(&correlation);
        let card = traced
            .create(
                &format!("/api/boards/boards/{}/cards", world.board),
                &json!({ "title": "traced" }),
            )
            .await?;
        world
            .b_live
            .until(scenario::WAIT, |n| {
                scenario::is_about(n, "card_assigned", card)
            })
            .await?;
        let expected = ["gateway", "boards", "automations", "notifications"];
        scenario::eventually("spans of every service with the correlation id", || async {
            let seen = trace.services_of(&correlation);
            Ok(expected.iter().all(|s| seen.contains(*s)).then_some(()))
        })
        .await
        .map_err(|e| format!("{e}; seen: {:?}", trace.services_of(&correlation)))?;
        // The merged OpenAPI document has every public service's paths.
        let openapi = world.as_a().get("/api/openapi.json").await?;
        let paths = openapi["paths"].as_object().cloned().unwrap_or_default();
        for prefix in [
            "/api/identity/",
            "/api/boards/",
            "/api/chat/",
            "/api/notifications/",
        ] {
            assert!(
                paths.keys().any(|p| p.starts_with(prefix)),
                "no {prefix} path in the merged OpenAPI"
            );
        }
        let answer = world.api.call(Method::GET, "/api/nowhere/x", None).await?;
        assert_eq!(answer.status, http::StatusCode::NOT_FOUND);

        // Last, since it spends this address's budget: an anonymous caller
        // over the gateway's per-caller rate gets 429 with Retry-After.
        let mut limited = None;
        for _ in 0..5_000 {
            let answer = world
                .api
                .call(Method::GET, "/api/identity/.well-known/jwks.json", None)
                .await?;
            if answer.status == http::StatusCode::TOO_MANY_REQUESTS {
                limited = Some(answer);
                break;
            }
            assert_eq!(answer.status, http::StatusCode::OK, "{}", answer.body);
        }
        let limited = limited.ok_or("no 429 within 5000 requests")?;
        scenario::assert_problem(&limited.body);
        let retry_after: u64 = limited
            .retry_after
            .as_deref()
            .ok_or("429 without retry-after")?
            .parse()?;
        assert!(retry_after >= 1, "retry-after {retry_after}");
        Ok::<_, BoxError>(())
    }
    .await;
    let stopped = tokio::time::timeout(Duration::from_secs(30), running.stop()).await;
    outcome?;
    stopped.map_err(|_| "the system did not stop within 30 s")??;
    eprintln!("embedded system ready in {ready_in:?}");
    Ok(())
}

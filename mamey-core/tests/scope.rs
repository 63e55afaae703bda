//! Each service's scope is current in its plug-ins, tasks and handlers, so
//! several services in one process tell their work apart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use mamey_core::cqrs::Command;
use mamey_core::{
    BoxError, Error, InitContext, Plugin, Service, ServiceGroup, ServiceScope, StartContext,
};

type Seen = Arc<Mutex<Vec<String>>>;

/// Where each step ran: `"{step} in {current service}"`.
fn note(seen: &Seen, step: &str) {
    let service = ServiceScope::current().map_or_else(|| "none".to_owned(), |s| s.name().into());
    seen.lock().unwrap().push(format!("{step} in {service}"));
}

struct Witness(Seen);

impl Plugin for Witness {
    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        assert_eq!(ctx.scope().name(), ctx.app().name);
        note(&self.0, "init");
        Ok(())
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        note(&self.0, "start");
        let (seen, stop) = (Arc::clone(&self.0), ctx.shutdown_token());
        ctx.spawn("task", async move {
            note(&seen, "task");
            stop.cancelled().await;
            Ok(())
        });
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), BoxError> {
        note(&self.0, "stop");
        Ok(())
    }
}

struct Ping;
impl Command for Ping {}

async fn service(name: &str, seen: &Seen) -> Service {
    let handled = Arc::clone(seen);
    Service::builder(name)
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars(Vec::<(String, String)>::new())
        .plugin(Witness(Arc::clone(seen)))
        .handlers(move |d| {
            d.command(move |_: Ping| {
                let handled = Arc::clone(&handled);
                async move {
                    note(&handled, "handler");
                    Ok::<(), Error>(())
                }
            });
        })
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_runs_its_work_in_its_own_scope() {
    let (seen_a, seen_b) = (Seen::default(), Seen::default());
    let a = service("a", &seen_a).await;
    let b = service("b", &seen_b).await;
    assert_eq!(a.scope().name(), "a");
    let dispatch_b = b.dispatcher().clone();
    let running = ServiceGroup::new()
        .handle_signals(false)
        .service(a)
        .service(b)
        .start()
        .await
        .unwrap();
    // Service b's handler, called from a's scope, still runs in b's.
    ServiceScope::new("a", "a-1", "0.0.0")
        .scope(dispatch_b.send(Ping))
        .await
        .unwrap();
    // Spawned tasks may not have run yet.
    for _ in 0..200 {
        if seen_a.lock().unwrap().len() >= 3 && seen_b.lock().unwrap().len() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    running.stop().await.unwrap();

    let a: Vec<String> = seen_a.lock().unwrap().clone();
    let b: Vec<String> = seen_b.lock().unwrap().clone();
    for step in ["init", "start", "task", "stop"] {
        assert!(a.contains(&format!("{step} in a")), "{a:?}");
        assert!(b.contains(&format!("{step} in b")), "{b:?}");
    }
    assert!(b.contains(&"handler in b".to_owned()), "{b:?}");
    assert!(
        a.iter().chain(&b).all(|s| !s.ends_with(" in none")),
        "{a:?} {b:?}"
    );
}

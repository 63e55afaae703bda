//! Discovery in action: two instances of `pricing` register themselves,
//! `checkout` calls `http://pricing/...` by name, the load spreads over
//! both, and when one stops the calls move to the other without failing.
//!
//! The registry is the etcd at 127.0.0.1:2379 (`scripts/services.sh up
//! etcd`), or the Consul agent at `CONSUL_HTTP_ADDR` when that is set.
//!
//! `cargo run -p discovery-example` prints the spread before and after the
//! stop, and exits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use mamey_core::{BoxError, RunningService, Service, ServiceBuilder};
use mamey_discovery::Discovery;
use mamey_http::{ServiceClient, ServiceClientPlugin, WebApi};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let a = pricing("a").await?;
    let b = pricing("b").await?;
    let checkout = service("checkout")
        .plugin(Discovery::new())
        .plugin(ServiceClientPlugin::new())
        .build()
        .await?;
    let client = checkout.resources().get::<ServiceClient>()?;
    let checkout = checkout.start().await?;

    // Registration runs once each service is ready; wait until both are seen.
    let deadline = Instant::now() + Duration::from_secs(15);
    while spread(&client, 20).await.len() < 2 {
        if Instant::now() > deadline {
            return Err("both pricing instances did not appear within 15 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "spread over 100 calls: {}",
        show(&spread(&client, 100).await)
    );

    let stopping = Instant::now();
    a.stop().await?;
    println!(
        "stopped `a` in {} ms (deregistered first, then drained)",
        stopping.elapsed().as_millis()
    );
    println!(
        "spread over 100 calls: {}",
        show(&spread(&client, 100).await)
    );

    checkout.stop().await?;
    b.stop().await?;
    Ok(())
}

/// One instance of `pricing`, answering `/whoami` with `name`.
async fn pricing(name: &'static str) -> Result<RunningService, BoxError> {
    let api =
        WebApi::new().router(Router::new().route("/whoami", get(move || async move { name })));
    Ok(service("pricing")
        .plugin(Discovery::new())
        .plugin(api)
        .build()
        .await?
        .start()
        .await?)
}

/// A service of the example: its config directory, and the Consul backend
/// when `CONSUL_HTTP_ADDR` is set.
fn service(name: &str) -> ServiceBuilder {
    let config = std::env::var_os("MAMEY_CONFIG_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config"),
        PathBuf::from,
    );
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    if let Ok(consul) = std::env::var("CONSUL_HTTP_ADDR") {
        env.push(("MAMEY__DISCOVERY__BACKEND".into(), "consul".into()));
        env.push(("MAMEY__DISCOVERY__CONSUL__ADDRESS".into(), consul));
    }
    Service::builder(name)
        .handle_signals(false)
        .config_dir(config)
        .env_vars(env)
}

/// Which instance answered each of `calls` calls (failures counted too).
async fn spread(client: &ServiceClient, calls: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..calls {
        let who = match client.get("pricing", "/whoami").send().await {
            Ok(answer) => String::from_utf8_lossy(&answer.body).into_owned(),
            Err(error) => format!("failed ({})", error.code()),
        };
        *seen.entry(who).or_insert(0) += 1;
    }
    seen
}

fn show(spread: &BTreeMap<String, usize>) -> String {
    let parts: Vec<String> = spread.iter().map(|(who, n)| format!("{who}={n}")).collect();
    parts.join(" ")
}

//! The system in this process: {{service}} and the gateway, each on a free
//! port, the gateway finding {{service}} by name through static discovery.
//! Every call goes through the gateway.

use mamey_core::{RunningService, ServiceBuilder};
use mamey_http::HttpAddress;
use serde_json::{Value, json};

/// Where the gateway serves {{service}}.
const PREFIX: &str = "/api/{{service}}";

/// The workspace's `config/` (tests run in `gateway/`).
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");

/// Starts `builder` on a free port with `vars` over the environment's;
/// returns it and its base URL.
async fn start(builder: ServiceBuilder, vars: Vec<(String, String)>) -> (RunningService, String) {
    let vars = std::env::vars()
        .chain([
            ("MAMEY__HTTP__ADDRESS".into(), "127.0.0.1:0".into()),
            ("MAMEY__LOGGING__LEVEL".into(), "warn".into()),
        ])
        .chain(vars);
    let service = builder
        .config_dir(CONFIG)
        .env_vars(vars)
        .handle_signals(false)
        .build()
        .await
        .unwrap();
    let HttpAddress(address) = service.resources().get().unwrap();
    (service.start().await.unwrap(), format!("http://{address}"))
}

#[tokio::test]
async fn calls_reach_the_service_through_the_gateway() {
    let builder = {{service | replace: "-", "_"}}::service();
    let (service, address) = start(builder, Vec::new()).await;
    // Where static discovery finds it: config/gateway.toml, here its port.
    let (gateway, base) = start(
        gateway::service(),
        vec![(
            "MAMEY__DISCOVERY__STATIC__SERVICES__{{service | upcase}}".into(),
            format!("[\"{address}\"]"),
        )],
    )
    .await;
    let items = format!("{base}{PREFIX}/items");
    let client = reqwest::Client::new();

    let created = client
        .post(&items)
        .json(&json!({ "id": 7, "name": "first" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let location = format!("{PREFIX}/items/7");
    assert_eq!(created.headers()["location"], location.as_str());
    let item: Value = client
        .get(format!("{items}/7"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(item, json!({ "id": 7, "name": "first" }));

    // The service's own answers pass as they came.
    let taken = client
        .post(&items)
        .json(&json!({ "id": 7, "name": "again" }))
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), 409);
    assert_eq!(taken.headers()["content-type"], "application/problem+json");
    let invalid = client
        .post(&items)
        .json(&json!({ "id": 0, "name": "" }))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 422);
    let missing = client.get(format!("{items}/8")).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    // A path no service is behind is the gateway's own 404.
    let nowhere = client
        .get(format!("{base}/api/elsewhere/items/7"))
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), 404);
    let problem: Value = nowhere.json().await.unwrap();
    assert_eq!(problem["code"], "gateway.no_service", "{problem}");

    // Callers first, as a shutdown of the whole system would.
    gateway.stop().await.unwrap();
    service.stop().await.unwrap();
}

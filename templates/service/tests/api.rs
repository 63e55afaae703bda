{%- capture servers %}{% if persistence == "postgres" %} "127.0.0.1:5432"{% endif %}{% if persistence == "redis" %} "127.0.0.1:6379"{% endif %}{% if messaging == "rabbitmq" %} "127.0.0.1:5672"{% endif %}{% if secrets == "vault" %} "127.0.0.1:8200"{% endif %}{% if discovery == "etcd" %} "127.0.0.1:2379"{% endif %}{% endcapture %}
{%- assign servers = servers | strip %}
{%- assign needs_servers = false %}{% if servers != "" %}{% assign needs_servers = true %}{% endif %}
{%- assign opt_in = false %}{% if persistence == "mongo" or discovery == "consul" %}{% assign opt_in = true %}{% endif %}
{%- assign may_skip = false %}{% if needs_servers or opt_in %}{% assign may_skip = true %}{% endif %}
{%- assign fresh_ids = false %}{% if persistence == "postgres" or persistence == "redis" or persistence == "mongo" %}{% assign fresh_ids = true %}{% endif %}
{%- assign keeps_resources = false %}{% if grpc or discovery != "none" or persistence == "redis" %}{% assign keeps_resources = true %}{% endif %}
{%- capture example_var %}{% if persistence == "postgres" %}MAMEY__POSTGRES__URL{% elsif persistence == "redis" %}MAMEY__REDIS__URL{% elsif messaging == "rabbitmq" %}MAMEY__RABBITMQ__URL{% elsif discovery == "etcd" %}MAMEY__DISCOVERY__ETCD__ENDPOINTS{% else %}MAMEY__SECRETS__VAULT__ADDRESS{% endif %}{% endcapture -%}
//! Request tests: each test starts the service in this process on a free
//! port{% if persistence == "sqlite" %}, with a fresh SQLite file{% endif %}, and calls it over HTTP{% if grpc %} (and gRPC){% endif %}.
{%- if needs_servers %}
//!
//! They need the servers of `config/dev.toml` on this machine. A test
//! whose server is not there prints `SKIPPED` and passes, or fails when
//! `MAMEY_REQUIRE_SERVICES=1` (set it in CI). `MAMEY__…` variables in the
//! environment apply, e.g. `{{ example_var }}`.
{%- endif %}
{%- if persistence == "mongo" %}
//!
//! MongoDB: the tests run against the server `MONGODB_URI` names (e.g.
//! `mongodb://127.0.0.1:27017/?directConnection=true`), in the database
//! `{{crate_name}}_test`. Without it they print `SKIPPED` and pass, even
//! with `MAMEY_REQUIRE_SERVICES=1`.
{%- endif %}
{%- if discovery == "consul" %}
//!
//! Consul: the tests run against the agent `CONSUL_HTTP_ADDR` names (e.g.
//! `127.0.0.1:8500`). Without it they print `SKIPPED` and pass, even with
//! `MAMEY_REQUIRE_SERVICES=1`.
{%- endif %}

{% if keeps_resources %}use std::sync::Arc;
{% endif %}use std::time::Duration;

{% if discovery != "none" %}use mamey_core::discovery::{Endpoint, ServiceResolver};
{% endif %}{% if keeps_resources %}use mamey_core::{Resources, RunningService};{% else %}use mamey_core::RunningService;{% endif %}
use mamey_http::HttpAddress;
{%- if discovery != "none" %}
use mamey_http::ServiceClient;
{%- endif %}
{%- if grpc %}
use mamey_http::grpc::GrpcAddress;
{%- endif %}
{%- if persistence == "redis" %}
use mamey_persistence::redis::RedisClient;
{%- endif %}
use serde_json::{Value, json};
{%- if messaging == "rabbitmq" %}
use tokio::sync::{Mutex, MutexGuard};
{%- endif %}
{%- if grpc %}

use {{crate_name}}::proto::GetItemRequest;
use {{crate_name}}::proto::items_client::ItemsClient;
{%- endif %}
{%- if discovery != "none" %}

/// The service's name, as discovery knows it.
const NAME: &str = "{{project-name}}";
{%- endif %}
{%- if persistence == "mongo" %}

/// The tests' database, beside the service's own.
const DATABASE: &str = "{{crate_name}}_test";
{%- endif %}
{%- if needs_servers %}

/// Where config/dev.toml expects the servers the service needs.
{%- assign server_list = servers | split: " " %}
{%- if server_list.size > 3 %}
const SERVERS: &[&str] = &[
{%- for server in server_list %}
    {{ server }},
{%- endfor %}
];
{%- else %}
const SERVERS: &[&str] = &[{{ server_list | join: ", " }}];
{%- endif %}
{%- endif %}
{%- if messaging == "rabbitmq" %}

/// The tests' services consume the same queue, so one runs at a time:
/// otherwise one test's service could take another's event.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());
{%- endif %}

/// The running service{% if keeps_resources %}, its resources{% endif %} and its base URL.
struct TestService {
    running: RunningService,
{%- if keeps_resources %}
    resources: Arc<Resources>,
{%- endif %}
    base: String,
{%- if persistence == "sqlite" %}
    _data: tempfile::TempDir,
{%- endif %}
{%- if messaging == "rabbitmq" %}
    _turn: MutexGuard<'static, ()>,
{%- endif %}
}

impl TestService {
{%- if may_skip %}
    /// The service on a free port, or `None` when a server it needs is not
    /// there (see the top of this file).
    async fn start() -> Option<Self> {
        Self::start_with(Vec::new()).await
    }

    /// [`start`](Self::start) with these variables over the test's own.
    async fn start_with(extra: Vec<(String, String)>) -> Option<Self> {
{%- if needs_servers %}
        for server in SERVERS {
            if tokio::net::TcpStream::connect(server).await.is_err() {
                let required = std::env::var("MAMEY_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
                assert!(!required, "nothing listens on {server}");
                eprintln!("SKIPPED: nothing listens on {server}");
                return None;
            }
        }
{%- endif %}
{%- if persistence == "mongo" %}
        // Not required by MAMEY_REQUIRE_SERVICES: CI has no MongoDB.
        let Ok(mongo_uri) = std::env::var("MONGODB_URI") else {
            eprintln!(
                "SKIPPED: no MongoDB to test against; set MONGODB_URI, e.g. mongodb://127.0.0.1:27017/?directConnection=true"
            );
            return None;
        };
{%- endif %}
{%- if discovery == "consul" %}
        // Not required by MAMEY_REQUIRE_SERVICES: CI has no Consul.
        let Ok(consul) = std::env::var("CONSUL_HTTP_ADDR") else {
            eprintln!(
                "SKIPPED: no Consul agent to test against; set CONSUL_HTTP_ADDR, e.g. 127.0.0.1:8500"
            );
            return None;
        };
        let consul = if consul.contains("://") {
            consul
        } else {
            format!("http://{consul}")
        };
{%- endif %}
{%- else %}
    /// The service on a free port{% if persistence == "sqlite" %}, with a database of its own{% endif %}.
    async fn start() -> Self {
        Self::start_with(Vec::new()).await
    }

    /// [`start`](Self::start) with these variables over the test's own.
    async fn start_with(extra: Vec<(String, String)>) -> Self {
{%- endif %}
{%- if messaging == "rabbitmq" %}
        let turn = ONE_AT_A_TIME.lock().await;
{%- endif %}
{%- if persistence == "sqlite" %}
        // A database of its own, deleted with `data`.
        let data = tempfile::tempdir().unwrap();
        let database = format!("sqlite://{}", data.path().join("test.db").display());
{%- endif %}
        // The environment's `MAMEY__…` variables, then the test's own.
        let vars = std::env::vars()
            .chain([
                ("MAMEY__HTTP__ADDRESS".into(), "127.0.0.1:0".into()),
                ("MAMEY__LOGGING__LEVEL".into(), "warn".into()),
{%- if grpc %}
                ("MAMEY__GRPC__ADDRESS".into(), "127.0.0.1:0".into()),
{%- endif %}
{%- if persistence == "sqlite" %}
                ("MAMEY__SQLITE__URL".into(), database),
{%- elsif persistence == "mongo" %}
                ("MAMEY__MONGO__URL".into(), mongo_uri),
                ("MAMEY__MONGO__DATABASE".into(), DATABASE.into()),
{%- endif %}
{%- if discovery == "etcd" %}
                // Keys of their own: the tests' instances do not meet.
                (
                    "MAMEY__DISCOVERY__ETCD__PREFIX".into(),
                    format!("/{NAME}-test/{}", unique()),
                ),
{%- elsif discovery == "consul" %}
                ("MAMEY__DISCOVERY__CONSUL__ADDRESS".into(), consul),
{%- endif %}
            ])
            .chain(extra);
        let service = {{crate_name}}::service()
            .env_vars(vars)
            .handle_signals(false)
            .build()
            .await
            .unwrap();
{%- if keeps_resources %}
        let resources = service.resources().clone();
        let HttpAddress(address) = resources.get().unwrap();
{%- else %}
        let HttpAddress(address) = service.resources().get().unwrap();
{%- endif %}
{%- if may_skip %}
        Some(Self {
{%- else %}
        Self {
{%- endif %}
            running: service.start().await.unwrap(),
{%- if keeps_resources %}
            resources,
{%- endif %}
            base: format!("http://{address}"),
{%- if persistence == "sqlite" %}
            _data: data,
{%- endif %}
{%- if messaging == "rabbitmq" %}
            _turn: turn,
{%- endif %}
{%- if may_skip %}
        })
{%- else %}
        }
{%- endif %}
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the service as a signal would, and checks it stopped cleanly.
    async fn stop(self) {
        self.running.stop().await.unwrap();
    }
}
{%- if fresh_ids or discovery == "etcd" %}

/// A number no earlier run used: {% if fresh_ids %}the database outlives the test{% else %}etcd outlives the test{% endif %}.
fn unique() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(now.as_micros()).unwrap()
}
{%- endif %}
{%- if may_skip %}{% assign start = "let Some(app) = TestService::start().await else {
        return;
    };" %}{% else %}{% assign start = "let app = TestService::start().await;" %}{% endif %}

#[tokio::test]
async fn creates_an_item_and_reads_it_back() {
    {{ start }}
    let client = reqwest::Client::new();
{%- if fresh_ids %}
    let id = unique();
{%- else %}
    let id = 7;
{%- endif %}

    let created = client
        .post(app.url("/items"))
        .json(&json!({ "id": id, "name": "first" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let location = format!("/items/{id}");
    assert_eq!(created.headers()["location"], location.as_str());

    // `confirm_item` handles `ItemCreated`{% if messaging == "none" %} before `POST` is answered{% else %} after `POST` is answered{% endif %}.
    let item = wait_for_status(&app, id, "confirmed").await;
    let expected = json!({ "id": id, "name": "first", "status": "confirmed" });
    assert_eq!(item, expected);

    let again = client
        .post(app.url("/items"))
        .json(&json!({ "id": id, "name": "second" }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
{%- if persistence == "redis" %}
    // Redis keeps what the test wrote: remove it.
    let redis: RedisClient = app.resources.get().unwrap();
    redis.cache().delete(&format!("items:{id}")).await.unwrap();
{%- endif %}
    app.stop().await;
}

#[tokio::test]
async fn refuses_an_invalid_item_naming_each_field() {
    {{ start }}
    let response = reqwest::Client::new()
        .post(app.url("/items"))
        .json(&json!({ "id": 0, "name": "" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    let mut fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|error| error["field"].as_str())
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["id", "name"], "{problem}");
    app.stop().await;
}

#[tokio::test]
async fn answers_404_for_an_unknown_item_and_reports_ready() {
    {{ start }}
    let missing = reqwest::get(app.url("/items/999999")).await.unwrap();
    assert_eq!(missing.status(), 404);
    let ready = reqwest::get(app.url("/health/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
    app.stop().await;
}
{%- if grpc %}

#[tokio::test]
async fn answers_get_item_over_grpc() {
    {{ start }}
{%- if fresh_ids %}
    let id = unique();
{%- else %}
    let id = 8;
{%- endif %}
    let created = reqwest::Client::new()
        .post(app.url("/items"))
        .json(&json!({ "id": id, "name": "over grpc" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    // A real HTTP/2 channel to the gRPC port.
    let GrpcAddress(address) = app.resources.get().unwrap();
    let mut client = ItemsClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let item = client
        .get_item(GetItemRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((item.id, item.name.as_str()), (id, "over grpc"));
    let missing = client
        .get_item(GetItemRequest { id: 999_999 })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
{%- if persistence == "redis" %}
    let redis: RedisClient = app.resources.get().unwrap();
    redis.cache().delete(&format!("items:{id}")).await.unwrap();
{%- endif %}
    app.stop().await;
}
{%- endif %}
{%- if discovery == "static" %}

#[tokio::test]
async fn calls_a_service_by_name() {
    // `discovery.static.services` names this service at its own address,
    // so the port is chosen before the service starts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    {% if may_skip %}let Some(app) = TestService::start_with(vec![
        ("MAMEY__HTTP__ADDRESS".into(), format!("127.0.0.1:{port}")),
        (
            format!("MAMEY__DISCOVERY__STATIC__SERVICES__{NAME}"),
            format!("[\"{url}\"]"),
        ),
    ])
    .await
    else {
        return;
    };{% else %}let app = TestService::start_with(vec![
        ("MAMEY__HTTP__ADDRESS".into(), format!("127.0.0.1:{port}")),
        (
            format!("MAMEY__DISCOVERY__STATIC__SERVICES__{NAME}"),
            format!("[\"{url}\"]"),
        ),
    ])
    .await;{% endif %}
    let resolver: ServiceResolver = app.resources.get().unwrap();
    assert_eq!(resolver.resolve(NAME).await.unwrap(), [Endpoint::new(url)]);
    let client: ServiceClient = app.resources.get().unwrap();
    let ready = client.get(NAME, "/health/ready").send().await.unwrap();
    assert_eq!(ready.status, 200);
    app.stop().await;
}
{%- elsif discovery != "none" %}

#[tokio::test]
async fn registers_itself_and_is_called_by_name() {
    {{ start }}
    // Registration runs in the background once the service is ready.
    let resolver: ServiceResolver = app.resources.get().unwrap();
    let endpoint = Endpoint::new(app.base.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match resolver.resolve(NAME).await {
            Ok(endpoints) if endpoints.contains(&endpoint) => break,
            found => assert!(
                tokio::time::Instant::now() < deadline,
                "{NAME} is not registered at {endpoint:?}: {found:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client: ServiceClient = app.resources.get().unwrap();
    let ready = client.get(NAME, "/health/ready").send().await.unwrap();
    assert_eq!(ready.status, 200);
    app.stop().await;
}
{%- endif %}

/// `GET /items/{id}` until the item has `status`, for at most 10 s.
async fn wait_for_status(app: &TestService, id: i64, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = reqwest::get(app.url(&format!("/items/{id}")))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let item: Value = response.json().await.unwrap();
        if item["status"] == status || tokio::time::Instant::now() > deadline {
            return item;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! Request tests: each test starts the service in this process on a free
//! port{% if persistence == "sqlite" %}, with a fresh SQLite file{% endif %}, and calls it over HTTP.
{%- assign needs_servers = false %}
{%- if persistence == "postgres" or messaging == "rabbitmq" or secrets == "vault" %}{% assign needs_servers = true %}
//!
//! They need the servers of `config/dev.toml` on this machine. A test
//! whose server is not there prints `SKIPPED` and passes, or fails when
//! `MAMEY_REQUIRE_SERVICES=1` (set it in CI). `MAMEY__…` variables in the
//! environment apply, e.g. `MAMEY__POSTGRES__URL`.
{%- endif %}

use std::time::Duration;

use mamey_core::RunningService;
use mamey_http::HttpAddress;
use serde_json::{Value, json};
{%- if messaging == "rabbitmq" %}
use tokio::sync::{Mutex, MutexGuard};
{%- endif %}
{%- if needs_servers %}
{%- capture servers %}{% if persistence == "postgres" %} "127.0.0.1:5432"{% endif %}{% if messaging == "rabbitmq" %} "127.0.0.1:5672"{% endif %}{% if secrets == "vault" %} "127.0.0.1:8200"{% endif %}{% endcapture %}

/// Where config/dev.toml expects the servers the service needs.
const SERVERS: &[&str] = &[{{ servers | strip | split: " " | join: ", " }}];
{%- endif %}
{%- if messaging == "rabbitmq" %}

/// The tests' services consume the same queue, so one runs at a time:
/// otherwise one test's service could take another's event.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());
{%- endif %}

/// The running service and its base URL.
struct TestService {
    running: RunningService,
    base: String,
{%- if persistence == "sqlite" %}
    _data: tempfile::TempDir,
{%- endif %}
{%- if messaging == "rabbitmq" %}
    _turn: MutexGuard<'static, ()>,
{%- endif %}
}

impl TestService {
{%- if needs_servers %}
    /// The service on a free port, or `None` when a server it needs is not
    /// listening (see the top of this file).
    async fn start() -> Option<Self> {
        for server in SERVERS {
            if tokio::net::TcpStream::connect(server).await.is_err() {
                let required = std::env::var("MAMEY_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
                assert!(!required, "nothing listens on {server}");
                eprintln!("SKIPPED: nothing listens on {server}");
                return None;
            }
        }
{%- else %}
    /// The service on a free port{% if persistence == "sqlite" %}, with a database of its own{% endif %}.
    async fn start() -> Self {
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
        let vars = std::env::vars().chain([
            ("MAMEY__HTTP__ADDRESS".into(), "127.0.0.1:0".into()),
            ("MAMEY__LOGGING__LEVEL".into(), "warn".into()),
{%- if persistence == "sqlite" %}
            ("MAMEY__SQLITE__URL".into(), database),
{%- endif %}
        ]);
        let service = {{crate_name}}::service()
            .env_vars(vars)
            .handle_signals(false)
            .build()
            .await
            .unwrap();
        let HttpAddress(address) = service.resources().get().unwrap();
{%- if needs_servers %}
        Some(Self {
{%- else %}
        Self {
{%- endif %}
            running: service.start().await.unwrap(),
            base: format!("http://{address}"),
{%- if persistence == "sqlite" %}
            _data: data,
{%- endif %}
{%- if messaging == "rabbitmq" %}
            _turn: turn,
{%- endif %}
{%- if needs_servers %}
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
{%- if persistence == "postgres" %}

/// An id no earlier run used: the database outlives the test.
fn fresh_id() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(now.as_micros()).unwrap()
}
{%- endif %}
{%- if needs_servers %}{% assign start = "let Some(app) = TestService::start().await else {
        return;
    };" %}{% else %}{% assign start = "let app = TestService::start().await;" %}{% endif %}

#[tokio::test]
async fn creates_an_item_and_reads_it_back() {
    {{ start }}
    let client = reqwest::Client::new();
{%- if persistence == "postgres" %}
    let id = fresh_id();
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

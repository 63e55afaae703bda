//! The Consul backend against a fake agent that answers as Consul's HTTP
//! API documentation shows (`tests/fixtures/consul/`, see its README) and
//! records every request; and, when `CONSUL_HTTP_ADDR` is set, against a
//! real agent.
#![cfg(feature = "consul")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mamey_core::Service;
use mamey_core::config::Secret;
use mamey_core::discovery::{Endpoint, HttpAddress};
use mamey_discovery::config::{CheckKind, ConsulConfig};
use mamey_discovery::{ConsulRegistry, Discovery, Instance, Presence, Registry};
use mamey_http::WebApi;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const HEALTH_PASSING: &str = include_str!("fixtures/consul/health_service_passing.json");
const AGENT_SERVICE: &str = include_str!("fixtures/consul/agent_service.json");
const REGISTER_HTTP: &str = include_str!("fixtures/consul/register_http.json");
const REGISTER_TTL: &str = include_str!("fixtures/consul/register_ttl.json");
const TOKEN: &str = "b1gs3cr3t-acl-token";

// ---------------------------------------------------------------------------
// The fake agent
// ---------------------------------------------------------------------------

/// One request the fake agent received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    /// The path as sent, still percent-encoded.
    path: String,
    /// The query pairs as sent, in order, not decoded.
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A scripted answer to `GET /v1/health/service/:service`.
struct HealthAnswer {
    status: StatusCode,
    index: Option<u64>,
    body: String,
}

impl HealthAnswer {
    fn ok(index: u64, body: impl Into<String>) -> Self {
        Self {
            status: StatusCode::OK,
            index: Some(index),
            body: body.into(),
        }
    }
}

#[derive(Default)]
struct AgentState {
    seen: Vec<Seen>,
    /// The agent's local services: registration bodies by id.
    services: HashMap<String, Value>,
    /// Answers to health queries, in order; none left: the query blocks.
    health: VecDeque<HealthAnswer>,
    /// At each deregistration: the id, and whether the instance still
    /// accepted TCP connections then.
    probes: Vec<(String, bool)>,
}

/// An HTTP server on 127.0.0.1 that plays a Consul agent.
#[derive(Clone)]
struct FakeAgent {
    address: SocketAddr,
    state: Arc<Mutex<AgentState>>,
}

impl FakeAgent {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(AgentState::default()));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(answer(state, request).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { address, state }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A configuration for this agent, with an ACL token.
    fn config(&self) -> ConsulConfig {
        ConsulConfig {
            address: self.url(),
            token: Some(Secret::new(TOKEN.to_owned())),
            ..ConsulConfig::default()
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn requests(&self, method: &Method, path: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|seen| seen.method == method && seen.path == path)
            .collect()
    }

    fn answer_health(&self, answers: impl IntoIterator<Item = HealthAnswer>) {
        self.state.lock().unwrap().health.extend(answers);
    }

    /// Drops a service, as an agent restarted without its state would.
    fn forget(&self, id: &str) {
        self.state.lock().unwrap().services.remove(id);
    }

    fn probes(&self) -> Vec<(String, bool)> {
        self.state.lock().unwrap().probes.clone()
    }
}

async fn answer(
    state: Arc<Mutex<AgentState>>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let query = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key.to_owned(), value.to_owned())
        })
        .collect();
    let seen = Seen {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query,
        headers: parts.headers,
        body,
    };
    state.lock().unwrap().seen.push(seen.clone());
    let path = seen.path.as_str();

    if seen.method == Method::PUT && path == "/v1/agent/service/register" {
        let registration = seen.json();
        let id = registration["ID"].as_str().unwrap().to_owned();
        state.lock().unwrap().services.insert(id, registration);
        return reply(StatusCode::OK, "", None);
    }
    if let Some(id) = path.strip_prefix("/v1/agent/service/deregister/") {
        let removed = state.lock().unwrap().services.remove(id);
        let Some(registration) = removed else {
            return reply(
                StatusCode::NOT_FOUND,
                format!("Unknown service ID {id:?}"),
                None,
            );
        };
        // Is the instance still serving while it leaves the registry?
        let target = format!(
            "{}:{}",
            registration["Address"].as_str().unwrap(),
            registration["Port"]
        );
        let connected = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(target))
            .await
            .is_ok_and(|connected| connected.is_ok());
        state
            .lock()
            .unwrap()
            .probes
            .push((id.to_owned(), connected));
        return reply(StatusCode::OK, "", None);
    }
    if let Some(id) = path.strip_prefix("/v1/agent/service/") {
        if state.lock().unwrap().services.contains_key(id) {
            return reply(StatusCode::OK, AGENT_SERVICE, None);
        }
        return reply(
            StatusCode::NOT_FOUND,
            format!(
                "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
            ),
            None,
        );
    }
    if let Some(check) = path.strip_prefix("/v1/agent/check/pass/") {
        let has_ttl = check.strip_prefix("service:").is_some_and(|id| {
            state
                .lock()
                .unwrap()
                .services
                .get(id)
                .is_some_and(|r| r["Check"]["TTL"].is_string())
        });
        if has_ttl {
            return reply(StatusCode::OK, "", None);
        }
        return reply(
            StatusCode::NOT_FOUND,
            format!(
                "Unknown check ID {check:?}. Ensure that the check ID is passed, not the check name."
            ),
            None,
        );
    }
    if path.starts_with("/v1/health/service/") {
        let next = state.lock().unwrap().health.pop_front();
        let Some(answer) = next else {
            // Nothing changes: block until the client gives up.
            return std::future::pending().await;
        };
        return reply(answer.status, answer.body, answer.index);
    }
    reply(
        StatusCode::NOT_FOUND,
        "no such endpoint in the fake agent",
        None,
    )
}

fn reply(status: StatusCode, body: impl Into<Bytes>, index: Option<u64>) -> Response<Full<Bytes>> {
    let mut response = Response::builder()
        .status(status)
        .header("Content-Type", "application/json");
    if let Some(index) = index {
        response = response
            .header("X-Consul-Index", index.to_string())
            .header("X-Consul-Knownleader", "true")
            .header("X-Consul-Lastcontact", "0");
    }
    response.body(Full::new(body.into())).unwrap()
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The instance the fixtures describe.
fn instance() -> Instance {
    let mut instance = Instance::new("orders", "orders-1", "10.0.0.7", 8080);
    instance.tags = vec!["blue".into(), "v1".into()];
    instance.meta = BTreeMap::from([("version".into(), "1.2.3".into())]);
    instance
}

/// A health answer listing `redis` at each `(address, port)`, each entry
/// the documented sample with its service's address and port replaced.
fn health_body(instances: &[(&str, u16)]) -> String {
    let sample: Vec<Value> = serde_json::from_str(HEALTH_PASSING).unwrap();
    let entries: Vec<Value> = instances
        .iter()
        .map(|(address, port)| {
            let mut entry = sample[0].clone();
            entry["Service"]["ID"] = json!(format!("redis-{port}"));
            entry["Service"]["Address"] = json!(address);
            entry["Service"]["Port"] = json!(port);
            entry
        })
        .collect();
    serde_json::to_string(&entries).unwrap()
}

fn urls(endpoints: &[Endpoint]) -> Vec<&str> {
    endpoints.iter().map(|e| e.url.as_str()).collect()
}

/// Polls `probe` until it returns something, for at most 10 seconds.
async fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next item of a watch, within 10 seconds.
async fn next<S>(watch: &mut S) -> Option<Result<Vec<Endpoint>, mamey_core::Error>>
where
    S: futures_util::Stream<Item = Result<Vec<Endpoint>, mamey_core::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the watch answers within 10 s")
}

// ---------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------

#[tokio::test]
async fn registration_bodies_follow_the_documented_schema() {
    let agent = FakeAgent::start().await;
    let http = ConsulRegistry::new(&agent.config()).unwrap();
    let ttl = ConsulRegistry::new(&ConsulConfig {
        check: CheckKind::Ttl,
        ..agent.config()
    })
    .unwrap();

    http.register(&instance()).await.unwrap();
    ttl.register(&instance()).await.unwrap();

    let seen = agent.seen();
    assert_eq!(seen.len(), 2);
    for (request, fixture) in seen.iter().zip([REGISTER_HTTP, REGISTER_TTL]) {
        assert_eq!(request.method, Method::PUT);
        assert_eq!(request.path, "/v1/agent/service/register");
        assert_eq!(
            request.query,
            [("replace-existing-checks".to_owned(), "true".to_owned())]
        );
        assert_eq!(request.headers["x-consul-token"], TOKEN);
        assert_eq!(request.headers["content-type"], "application/json");
        let expected: Value = serde_json::from_str(fixture).unwrap();
        assert_eq!(request.json(), expected);
    }
}

#[tokio::test]
async fn agent_endpoints_take_the_namespace_and_the_health_query_also_the_datacenter() {
    let agent = FakeAgent::start().await;
    agent.answer_health([HealthAnswer::ok(3, "[]")]);
    let registry = ConsulRegistry::new(&ConsulConfig {
        datacenter: Some("dc2".into()),
        namespace: Some("team-a".into()),
        ..agent.config()
    })
    .unwrap();

    registry.register(&instance()).await.unwrap();
    registry.heartbeat(&instance()).await.unwrap();
    registry.deregister(&instance()).await.unwrap();
    let mut watch = registry.watch("redis");
    next(&mut watch).await.unwrap().unwrap();

    let queries: Vec<(String, Vec<(String, String)>)> = agent
        .seen()
        .into_iter()
        .map(|seen| (seen.path, seen.query))
        .collect();
    let pairs = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(
        queries,
        [
            (
                "/v1/agent/service/register".to_owned(),
                pairs(&[("replace-existing-checks", "true"), ("ns", "team-a")])
            ),
            (
                "/v1/agent/service/orders-1".to_owned(),
                pairs(&[("ns", "team-a")])
            ),
            (
                "/v1/agent/service/deregister/orders-1".to_owned(),
                pairs(&[("ns", "team-a")])
            ),
            (
                "/v1/health/service/redis".to_owned(),
                pairs(&[
                    ("passing", "true"),
                    ("wait", "1m"),
                    ("dc", "dc2"),
                    ("ns", "team-a")
                ])
            ),
        ]
    );
}

// ---------------------------------------------------------------------------
// Lookups
// ---------------------------------------------------------------------------

#[tokio::test]
async fn passing_lookups_read_the_documented_health_answer() {
    let agent = FakeAgent::start().await;
    agent.answer_health([HealthAnswer::ok(7, HEALTH_PASSING)]);
    let registry = ConsulRegistry::new(&agent.config()).unwrap();

    let mut watch = registry.watch("redis");
    let endpoints = next(&mut watch).await.unwrap().unwrap();

    // The sample's own `Service.Address`; the second entry has none, so its
    // node's address, and the scheme from its `Meta`.
    assert_eq!(
        urls(&endpoints),
        ["http://10.1.10.12:8000", "https://10.1.10.13:8443"]
    );
    let request = &agent.seen()[0];
    assert_eq!(request.method, Method::GET);
    assert_eq!(request.path, "/v1/health/service/redis");
    assert_eq!(request.param("passing"), Some("true"));
    assert_eq!(request.param("index"), None);
    assert_eq!(request.param("wait"), Some("1m"));
    assert_eq!(request.param("dc"), None);
    assert_eq!(request.headers["x-consul-token"], TOKEN);
}

#[tokio::test]
async fn service_names_are_escaped_in_the_path() {
    let agent = FakeAgent::start().await;
    agent.answer_health([HealthAnswer::ok(1, "[]")]);
    let registry = ConsulRegistry::new(&agent.config()).unwrap();

    let mut watch = registry.watch("web api/v2");
    assert_eq!(next(&mut watch).await.unwrap().unwrap(), []);

    assert_eq!(agent.seen()[0].path, "/v1/health/service/web%20api%2Fv2");
}

#[tokio::test]
async fn blocking_queries_follow_the_index_and_restart_when_it_goes_backwards() {
    let agent = FakeAgent::start().await;
    let a = health_body(&[("10.0.0.1", 8000)]);
    let b = health_body(&[("10.0.0.1", 8000), ("10.0.0.2", 8000)]);
    let c = health_body(&[("10.0.0.3", 8000)]);
    agent.answer_health([
        HealthAnswer::ok(10, a),
        HealthAnswer::ok(12, b.clone()),
        // Went backwards (a snapshot restored): same instances, so nothing
        // to tell, but the next query starts over without an index.
        HealthAnswer::ok(5, b),
        HealthAnswer::ok(5, c),
        // Then no answer: the fifth query blocks on index 5.
    ]);
    let registry = ConsulRegistry::new(&ConsulConfig {
        wait: Duration::from_secs(30),
        ..agent.config()
    })
    .unwrap();

    let mut watch = registry.watch("redis");
    let first = next(&mut watch).await.unwrap().unwrap();
    let second = next(&mut watch).await.unwrap().unwrap();
    let third = next(&mut watch).await.unwrap().unwrap();

    assert_eq!(urls(&first), ["http://10.0.0.1:8000"]);
    assert_eq!(
        urls(&second),
        ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
    );
    assert_eq!(urls(&third), ["http://10.0.0.3:8000"]);
    // The fifth query goes out when the watch is asked for more.
    let blocked = tokio::spawn(async move { watch.next().await });
    let seen = eventually("the fifth query", || {
        let seen = agent.seen();
        (seen.len() == 5).then_some(seen)
    })
    .await;
    let indexes: Vec<Option<&str>> = seen.iter().map(|s| s.param("index")).collect();
    assert_eq!(
        indexes,
        [None, Some("10"), Some("12"), None, Some("5")],
        "no index first, then the last X-Consul-Index; after it went backwards, no index again"
    );
    assert!(!blocked.is_finished(), "blocked on index 5");
    blocked.abort();
    for request in &seen {
        assert_eq!(request.param("wait"), Some("30s"));
        assert_eq!(request.param("passing"), Some("true"));
    }
}

#[tokio::test]
async fn a_failing_agent_ends_the_watch_with_an_unreachable_error() {
    let agent = FakeAgent::start().await;
    let registry = ConsulRegistry::new(&agent.config()).unwrap();
    let failures = [
        (
            HealthAnswer {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                index: None,
                body: "No cluster leader".into(),
            },
            "No cluster leader",
        ),
        (
            HealthAnswer {
                status: StatusCode::OK,
                index: None,
                body: "[]".into(),
            },
            "X-Consul-Index",
        ),
        (
            HealthAnswer::ok(4, "<html>proxy error</html>"),
            "unexpected answer",
        ),
    ];
    for (failure, expected) in failures {
        agent.answer_health([failure]);
        let mut watch = registry.watch("redis");
        let error = next(&mut watch).await.unwrap().unwrap_err();
        assert_eq!(error.code(), "discovery.unreachable");
        assert!(error.message().contains(expected), "{error}");
        assert!(next(&mut watch).await.is_none(), "an error ends the watch");
    }

    // No agent at all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    let registry = ConsulRegistry::new(&ConsulConfig {
        address: format!("http://{address}"),
        ..ConsulConfig::default()
    })
    .unwrap();
    let error = registry.register(&instance()).await.unwrap_err();
    assert_eq!(error.code(), "discovery.unreachable");
    let mut watch = registry.watch("redis");
    assert!(next(&mut watch).await.unwrap().is_err());
}

// ---------------------------------------------------------------------------
// Heartbeats and deregistration
// ---------------------------------------------------------------------------

#[tokio::test]
async fn heartbeats_tell_when_the_agent_lost_the_instance() {
    let agent = FakeAgent::start().await;
    let http = ConsulRegistry::new(&agent.config()).unwrap();
    let ttl = ConsulRegistry::new(&ConsulConfig {
        check: CheckKind::Ttl,
        ..agent.config()
    })
    .unwrap();

    // HTTP check: the instance is confirmed with the agent.
    assert_eq!(http.heartbeat(&instance()).await.unwrap(), Presence::Lost);
    http.register(&instance()).await.unwrap();
    assert_eq!(
        http.heartbeat(&instance()).await.unwrap(),
        Presence::Registered
    );
    let confirmations = agent.requests(&Method::GET, "/v1/agent/service/orders-1");
    assert_eq!(confirmations.len(), 2);

    // TTL check: passing it is the heartbeat.
    agent.forget("orders-1");
    assert_eq!(ttl.heartbeat(&instance()).await.unwrap(), Presence::Lost);
    ttl.register(&instance()).await.unwrap();
    assert_eq!(
        ttl.heartbeat(&instance()).await.unwrap(),
        Presence::Registered
    );
    let passes = agent.requests(&Method::PUT, "/v1/agent/check/pass/service:orders-1");
    assert_eq!(passes.len(), 2);
    assert!(passes.iter().all(|p| p.headers["x-consul-token"] == TOKEN));
}

#[tokio::test]
async fn deregistering_succeeds_whether_or_not_the_agent_has_the_instance() {
    let agent = FakeAgent::start().await;
    let registry = ConsulRegistry::new(&agent.config()).unwrap();

    registry.deregister(&instance()).await.unwrap();
    registry.register(&instance()).await.unwrap();
    registry.deregister(&instance()).await.unwrap();

    let deregistrations = agent.requests(&Method::PUT, "/v1/agent/service/deregister/orders-1");
    assert_eq!(deregistrations.len(), 2);
}

// ---------------------------------------------------------------------------
// Through the plug-in
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_registers_registers_again_and_deregisters_before_the_listener_closes() {
    let agent = FakeAgent::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.toml"),
        format!(
            r#"
[http]
address = "127.0.0.1:0"

[discovery]
backend = "consul"
retry_backoff = "50ms"

[discovery.consul]
address = "{}"
token = "{TOKEN}"
confirm_interval = "100ms"
"#,
            agent.url()
        ),
    )
    .unwrap();
    let service = Service::builder("orders")
        .handle_signals(false)
        .config_dir(dir.path())
        .env_vars(Vec::<(String, String)>::new())
        .plugin(Discovery::new())
        .plugin(WebApi::new())
        .build()
        .await
        .unwrap();
    let instance_id = service.app().instance_id.clone();
    let HttpAddress(bound) = service.resources().get::<HttpAddress>().unwrap();
    let running = service.start().await.unwrap();

    // Registered once the service is up, as `orders-{instance}`.
    let register = "/v1/agent/service/register";
    let registration = eventually("the registration", || {
        agent.requests(&Method::PUT, register).first().cloned()
    })
    .await;
    assert!(instance_id.starts_with("orders-"), "{instance_id}");
    let body = registration.json();
    assert_eq!(body["ID"], instance_id.as_str());
    assert_eq!(body["Name"], "orders");
    assert_eq!(body["Address"], bound.ip().to_string());
    assert_eq!(body["Port"], bound.port());
    assert_eq!(
        body["Check"]["HTTP"],
        format!("http://{bound}/health/ready")
    );
    assert_eq!(registration.headers["x-consul-token"], TOKEN);

    // The agent loses it (restarted without its state): the next
    // confirmation finds it gone, and it is registered again.
    let confirm = format!("/v1/agent/service/{instance_id}");
    eventually("a confirmation", || {
        (!agent.requests(&Method::GET, &confirm).is_empty()).then_some(())
    })
    .await;
    agent.forget(&instance_id);
    eventually("the registration again", || {
        (agent.requests(&Method::PUT, register).len() >= 2).then_some(())
    })
    .await;

    running.stop().await.unwrap();

    // Deregistered while the web API still accepted connections...
    assert_eq!(agent.probes(), [(instance_id.clone(), true)]);
    // ...which it no longer does.
    assert!(TcpStream::connect(bound).await.is_err());
}

// ---------------------------------------------------------------------------
// A real agent
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_real_agent_registers_finds_and_deregisters() {
    let Ok(address) = std::env::var("CONSUL_HTTP_ADDR") else {
        eprintln!(
            "SKIPPED: a_real_agent_registers_finds_and_deregisters needs a Consul agent; \
             set CONSUL_HTTP_ADDR (e.g. http://127.0.0.1:8500) to run it"
        );
        return;
    };
    // Consul's own tools accept `host:port` too.
    let address = if address.contains("://") {
        address
    } else {
        format!("http://{address}")
    };
    let registry = ConsulRegistry::new(&ConsulConfig {
        address,
        token: std::env::var("CONSUL_HTTP_TOKEN").ok().map(Secret::new),
        // The agent cannot call this test back; the test passes a TTL check.
        check: CheckKind::Ttl,
        wait: Duration::from_secs(5),
        ..ConsulConfig::default()
    })
    .unwrap();
    let service = format!("mamey-test-{:08x}", fastrand::u32(..));
    let instance = Instance::new(&service, format!("{service}-1"), "127.0.0.1", 18080);

    registry.register(&instance).await.unwrap();
    // A TTL check starts critical; passing it makes the instance passing.
    assert_eq!(
        registry.heartbeat(&instance).await.unwrap(),
        Presence::Registered
    );
    let mut watch = registry.watch(&service);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "the instance never showed as passing"
        );
        let endpoints = tokio::time::timeout_at(deadline, watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if endpoints == [instance.endpoint()] {
            break;
        }
    }

    registry.deregister(&instance).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the instance never left");
        let endpoints = tokio::time::timeout_at(deadline, watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if endpoints.is_empty() {
            break;
        }
    }
    assert_eq!(registry.heartbeat(&instance).await.unwrap(), Presence::Lost);
}

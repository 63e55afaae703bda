//! The Consul backend, over the local agent's HTTP API.
//!
//! Five endpoints are used:
//! - `PUT /v1/agent/service/register?replace-existing-checks=true`
//!   registers the instance with one check the agent runs: an HTTP check
//!   on `check_path`, or a TTL check the instance passes;
//! - `PUT /v1/agent/check/pass/service:{id}` passes the TTL check;
//! - `GET /v1/agent/service/{id}` confirms an HTTP-checked registration;
//! - `PUT /v1/agent/service/deregister/{id}` removes it;
//! - `GET /v1/health/service/{name}?passing=true` as a blocking query
//!   watches a service's passing instances.
//!
//! The agent, not the catalog, is registered with: it runs the checks and
//! keeps the catalog in sync by anti-entropy, and Consul removes an
//! instance whose check stays critical for `deregister_critical_after`.
//!
//! Why not the `rs-consul` crate: its 0.15 covers catalog registration but
//! not the agent service API whose agent-run HTTP/TTL checks and
//! anti-entropy this backend needs, it turns connection pooling off, and it
//! pulls in `ureq` 3, `slog-scope` and `bon`. The five calls are small and
//! typed here over the hyper client the workspace already builds.

mod agent;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use http::{Method, StatusCode};
use mamey_core::Error;
use mamey_core::discovery::Endpoint;
use serde_json::{Value, json};

use self::agent::{Agent, escape, query};
use self::watch::HealthWatch;
use crate::config::{CheckKind, ConsulConfig};
use crate::instance::Instance;
use crate::registry::{Presence, Registry};

/// The Consul registry (feature `consul`), talking to the local agent over
/// plain HTTP.
///
/// The instance is registered with the agent under its id, with a check
/// (`discovery.consul.check`): `http`, the agent calls
/// `{scheme}://{address}:{port}{check_path}` every `check_interval`; or
/// `ttl`, the instance reports passing every `ttl / 2`. Its scheme is kept
/// in the service's `Meta.scheme`. Lookups are blocking queries for the
/// service's passing instances, so a change reaches callers at once.
///
/// ```
/// use mamey_discovery::ConsulRegistry;
/// use mamey_discovery::config::ConsulConfig;
///
/// let registry = ConsulRegistry::new(&ConsulConfig::default())?;
/// # Ok::<(), mamey_core::Error>(())
/// ```
pub struct ConsulRegistry {
    agent: Arc<Agent>,
    config: ConsulConfig,
}

impl std::fmt::Debug for ConsulRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulRegistry")
            .field("address", &self.config.address)
            .field("check", &self.config.check)
            .finish_non_exhaustive()
    }
}

impl ConsulRegistry {
    /// A registry on the agent `config.address` names. Nothing is sent
    /// yet: an agent that is down now is not an error here.
    ///
    /// # Errors
    /// `invalid_input` when the address is not an `http://host:port` URL
    /// (TLS to the agent is not supported yet), or the token cannot be sent
    /// as a header.
    pub fn new(config: &ConsulConfig) -> Result<Self, Error> {
        let agent = Agent::new(&config.address, config.token.as_ref(), config.timeout)
            .map_err(|why| Error::invalid_input("discovery.config", why))?;
        Ok(Self {
            agent: Arc::new(agent),
            config: config.clone(),
        })
    }

    /// `?{name}=...&ns=...` for an agent endpoint (agent endpoints take a
    /// namespace, never a datacenter: the agent's is the one).
    fn agent_query(&self, params: &[(&str, Option<&str>)]) -> String {
        let mut params = params.to_vec();
        params.push(("ns", self.config.namespace.as_deref()));
        query(&params)
    }
}

impl Registry for ConsulRegistry {
    fn name(&self) -> &'static str {
        "consul"
    }

    fn register<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let path = format!(
                "/v1/agent/service/register{}",
                self.agent_query(&[("replace-existing-checks", Some("true"))])
            );
            let body = serde_json::to_vec(&registration(&self.config, instance))
                .map_err(Error::from_source)?;
            let reply = self
                .agent
                .call(Method::PUT, &path, Some(body), None)
                .await?;
            if reply.status.is_success() {
                Ok(())
            } else {
                Err(reply.unexpected(&Method::PUT, &path))
            }
        })
    }

    fn heartbeat<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<Presence, Error>> {
        Box::pin(async move {
            let id = escape(&instance.id);
            let (method, path) = match self.config.check {
                CheckKind::Ttl => (
                    Method::PUT,
                    format!("/v1/agent/check/pass/service:{id}{}", self.agent_query(&[])),
                ),
                CheckKind::Http => (
                    Method::GET,
                    format!("/v1/agent/service/{id}{}", self.agent_query(&[])),
                ),
            };
            let reply = self.agent.call(method.clone(), &path, None, None).await?;
            presence(reply.status, &reply.text()).ok_or_else(|| reply.unexpected(&method, &path))
        })
    }

    fn heartbeat_interval(&self) -> Duration {
        let interval = match self.config.check {
            CheckKind::Ttl => self.config.ttl / 2,
            CheckKind::Http => self.config.confirm_interval,
        };
        // A zero in configuration must not become a busy loop.
        interval.max(Duration::from_millis(10))
    }

    fn deregister<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let path = format!(
                "/v1/agent/service/deregister/{}{}",
                escape(&instance.id),
                self.agent_query(&[])
            );
            let reply = self.agent.call(Method::PUT, &path, None, None).await?;
            // 404: the agent does not know it; gone already.
            if reply.status.is_success() || reply.status == StatusCode::NOT_FOUND {
                Ok(())
            } else {
                Err(reply.unexpected(&Method::PUT, &path))
            }
        })
    }

    fn watch(&self, service: &str) -> BoxStream<'static, Result<Vec<Endpoint>, Error>> {
        // Consul caps `wait` at 10 minutes; under a second it barely blocks.
        let wait = self
            .config
            .wait
            .clamp(Duration::from_secs(1), Duration::from_secs(600));
        HealthWatch::new(
            Arc::clone(&self.agent),
            service,
            self.config.datacenter.clone(),
            self.config.namespace.clone(),
            wait,
        )
        .into_stream()
    }
}

/// What an answer to a heartbeat says: `200`, still registered; `404`, or
/// the `500` older agents answer for a check they do not know ("does not
/// have associated TTL", "unknown check"), lost. `None`: something else.
fn presence(status: StatusCode, body: &str) -> Option<Presence> {
    let body = body.to_ascii_lowercase();
    match status {
        s if s.is_success() => Some(Presence::Registered),
        StatusCode::NOT_FOUND => Some(Presence::Lost),
        StatusCode::INTERNAL_SERVER_ERROR
            if body.contains("does not have associated ttl") || body.contains("unknown check") =>
        {
            Some(Presence::Lost)
        }
        _ => None,
    }
}

/// The body of `PUT /v1/agent/service/register` for `instance`: `ID`,
/// `Name`, `Address`, `Port`, `Tags`, `Meta` (with `scheme`) and one
/// `Check`, whose id is Consul's default for a service's single check. The
/// check starts `passing` (Consul's default is `critical`): the instance is
/// registered only once the service is ready, so callers find it at once,
/// and the agent's first check or missed TTL corrects a wrong start.
fn registration(config: &ConsulConfig, instance: &Instance) -> Value {
    let check_id = format!("service:{}", instance.id);
    let check = match config.check {
        CheckKind::Http => {
            let path = &config.check_path;
            let slash = if path.starts_with('/') { "" } else { "/" };
            json!({
                "CheckID": check_id,
                "Status": "passing",
                "HTTP": format!("{}{slash}{path}", instance.endpoint().url),
                "Interval": go_duration(config.check_interval),
                "Timeout": go_duration(config.check_timeout),
                "DeregisterCriticalServiceAfter": go_duration(config.deregister_critical_after),
            })
        }
        CheckKind::Ttl => json!({
            "CheckID": check_id,
            "Status": "passing",
            "TTL": go_duration(config.ttl),
            "DeregisterCriticalServiceAfter": go_duration(config.deregister_critical_after),
        }),
    };
    let mut meta = instance.meta.clone();
    meta.insert("scheme".to_owned(), instance.scheme.clone());
    json!({
        "ID": instance.id,
        "Name": instance.service,
        "Address": instance.address,
        "Port": instance.port,
        "Tags": instance.tags,
        "Meta": meta,
        "Check": check,
    })
}

/// `duration` in Go's duration syntax, which Consul parses: the largest
/// unit that expresses it exactly, e.g. `10s`, `1500ms`, `1m`, `0s`.
fn go_duration(duration: Duration) -> String {
    const UNITS: [(u128, &str); 6] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    let (size, unit) = UNITS
        .iter()
        .find(|(size, _)| nanos.is_multiple_of(*size))
        .copied()
        .unwrap_or((1, "ns"));
    format!("{}{unit}", nanos / size)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn instance() -> Instance {
        let mut instance = Instance::new("orders", "orders-1", "10.0.0.7", 8080);
        instance.tags = vec!["blue".into()];
        instance.meta = BTreeMap::from([("version".into(), "1.2.3".into())]);
        instance
    }

    #[test]
    fn durations_use_the_largest_exact_go_unit() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_micros(250), "250us"),
            (Duration::from_nanos(7), "7ns"),
        ];
        for (duration, expected) in cases {
            assert_eq!(go_duration(duration), expected, "{duration:?}");
        }
    }

    #[test]
    fn an_http_check_calls_the_instance_at_its_check_path() {
        let body = registration(&ConsulConfig::default(), &instance());
        assert_eq!(
            body,
            json!({
                "ID": "orders-1",
                "Name": "orders",
                "Address": "10.0.0.7",
                "Port": 8080,
                "Tags": ["blue"],
                "Meta": {"version": "1.2.3", "scheme": "http"},
                "Check": {
                    "CheckID": "service:orders-1",
                    "Status": "passing",
                    "HTTP": "http://10.0.0.7:8080/health/ready",
                    "Interval": "10s",
                    "Timeout": "5s",
                    "DeregisterCriticalServiceAfter": "1m"
                }
            })
        );
    }

    #[test]
    fn a_ttl_check_has_only_its_ttl_and_the_critical_timeout() {
        let config = ConsulConfig {
            check: CheckKind::Ttl,
            ..ConsulConfig::default()
        };
        let body = registration(&config, &instance());
        assert_eq!(
            body["Check"],
            json!({
                "CheckID": "service:orders-1",
                "Status": "passing",
                "TTL": "15s",
                "DeregisterCriticalServiceAfter": "1m"
            })
        );
    }

    #[test]
    fn the_scheme_is_kept_in_meta_and_ipv6_checks_are_bracketed() {
        let mut instance = Instance::new("orders", "orders-1", "::1", 8443);
        instance.scheme = "https".into();
        let config = ConsulConfig {
            check_path: "ready".into(),
            ..ConsulConfig::default()
        };
        let body = registration(&config, &instance);
        assert_eq!(body["Meta"]["scheme"], "https");
        assert_eq!(body["Check"]["HTTP"], "https://[::1]:8443/ready");
    }

    #[test]
    fn heartbeat_answers_map_to_presence() {
        assert_eq!(presence(StatusCode::OK, ""), Some(Presence::Registered));
        assert_eq!(
            presence(StatusCode::NOT_FOUND, "Unknown service ID"),
            Some(Presence::Lost)
        );
        assert_eq!(
            presence(
                StatusCode::INTERNAL_SERVER_ERROR,
                "CheckID \"service:orders-1\" does not have associated TTL"
            ),
            Some(Presence::Lost)
        );
        assert_eq!(
            presence(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Unknown check ID \"service:x\""
            ),
            Some(Presence::Lost)
        );
        assert_eq!(
            presence(StatusCode::INTERNAL_SERVER_ERROR, "rpc error"),
            None
        );
        assert_eq!(presence(StatusCode::FORBIDDEN, "Permission denied"), None);
    }

    #[test]
    fn heartbeats_follow_the_check_kind() {
        let http = ConsulRegistry::new(&ConsulConfig {
            confirm_interval: Duration::from_secs(3),
            ..ConsulConfig::default()
        })
        .unwrap();
        assert_eq!(http.heartbeat_interval(), Duration::from_secs(3));
        let ttl = ConsulRegistry::new(&ConsulConfig {
            check: CheckKind::Ttl,
            ttl: Duration::from_secs(15),
            ..ConsulConfig::default()
        })
        .unwrap();
        assert_eq!(ttl.heartbeat_interval(), Duration::from_millis(7500));
    }

    #[test]
    fn a_tls_address_is_refused_with_what_to_do() {
        let error = ConsulRegistry::new(&ConsulConfig {
            address: "https://consul.internal:8501".into(),
            ..ConsulConfig::default()
        })
        .unwrap_err();
        assert!(error.message().contains("TLS"), "{error}");
        assert!(error.message().contains("http://127.0.0.1:8500"), "{error}");
    }
}

//! Watching a service's passing instances with Consul blocking queries on
//! `GET /v1/health/service/:service?passing=true`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, BoxStream, StreamExt};
use http::Method;
use mamey_core::Error;
use mamey_core::discovery::Endpoint;
use serde::Deserialize;

use super::agent::{Agent, escape, query};
use super::go_duration;
use crate::instance::Instance;
use crate::registry::unreachable;

/// A blocking query that answers this fast without a new index did not
/// block: something is wrong (an old Consul answering index 0, a proxy).
const QUICK: Duration = Duration::from_millis(100);
/// The pause after such an answer, so a broken agent is polled, not spun on.
const SPIN_PAUSE: Duration = Duration::from_secs(1);

/// One open watch of a service.
pub(super) struct HealthWatch {
    agent: Arc<Agent>,
    service: String,
    datacenter: Option<String>,
    namespace: Option<String>,
    wait: Duration,
    /// The index to block on next; `0`: ask without one (the first query,
    /// or after the index went backwards).
    index: u64,
    /// The endpoints last yielded; `None` before the first answer.
    last: Option<Vec<Endpoint>>,
}

impl HealthWatch {
    pub(super) fn new(
        agent: Arc<Agent>,
        service: &str,
        datacenter: Option<String>,
        namespace: Option<String>,
        wait: Duration,
    ) -> Self {
        Self {
            agent,
            service: service.to_owned(),
            datacenter,
            namespace,
            wait,
            index: 0,
            last: None,
        }
    }

    /// The endpoints now, then after each change; the first error ends it.
    pub(super) fn into_stream(self) -> BoxStream<'static, Result<Vec<Endpoint>, Error>> {
        stream::unfold(Some(self), |watch| async move {
            let mut watch = watch?;
            match watch.next().await {
                Ok(endpoints) => Some((Ok(endpoints), Some(watch))),
                // The error ends this watch; the resolver opens another.
                Err(error) => Some((Err(error), None)),
            }
        })
        .boxed()
    }

    /// The request for the next blocking query: `passing=true`, `index`
    /// unless it is 0 (as Consul's own Go client does), `wait`, `dc`, `ns`.
    fn path(&self) -> String {
        let index = (self.index > 0).then(|| self.index.to_string());
        let wait = go_duration(self.wait);
        format!(
            "/v1/health/service/{}{}",
            escape(&self.service),
            query(&[
                ("passing", Some("true")),
                ("index", index.as_deref()),
                ("wait", Some(&wait)),
                ("dc", self.datacenter.as_deref()),
                ("ns", self.namespace.as_deref()),
            ])
        )
    }

    /// Runs blocking queries until the first answer, or until the index
    /// moved and the endpoints differ from the last ones yielded.
    async fn next(&mut self) -> Result<Vec<Endpoint>, Error> {
        loop {
            let path = self.path();
            let started = Instant::now();
            let reply = self
                .agent
                .call(Method::GET, &path, None, Some(blocking_timeout(self.wait)))
                .await?;
            if !reply.status.is_success() {
                return Err(reply.unexpected(&Method::GET, &path));
            }
            let returned = reply
                .headers
                .get("X-Consul-Index")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    unreachable(
                        "consul",
                        format!("GET {path}: the answer has no valid X-Consul-Index header"),
                    )
                })?;
            let endpoints = parse(&reply.body).map_err(|e| {
                unreachable("consul", format!("GET {path}: unexpected answer: {e}"))
            })?;
            let sent = self.index;
            self.index = next_index(sent, returned);
            if self.index == 0 {
                tracing::debug!(
                    service = %self.service,
                    from = sent,
                    to = returned,
                    "X-Consul-Index went backwards; restarting the blocking query"
                );
            }
            let moved = self.index != sent;
            if self.last.is_none() || (moved && self.last.as_ref() != Some(&endpoints)) {
                self.last = Some(endpoints.clone());
                return Ok(endpoints);
            }
            if !moved && started.elapsed() < QUICK {
                tokio::time::sleep(SPIN_PAUSE).await;
            }
        }
    }
}

/// The index to block on after a query sent with `sent` answered
/// `returned`, as Consul's blocking-query docs ask: an index is at least 1
/// ("sanity check index is greater than zero"), and one lower than the
/// last restarts the loop from 0 ("reset the index if it goes backwards").
pub(super) fn next_index(sent: u64, returned: u64) -> u64 {
    let returned = returned.max(1);
    if returned < sent { 0 } else { returned }
}

/// How long one blocking query may take: the agent answers within `wait`
/// plus a jitter of up to `wait / 16`; the rest is for the network.
pub(super) fn blocking_timeout(wait: Duration) -> Duration {
    wait + wait / 16 + Duration::from_secs(5)
}

/// One element of the `/v1/health/service/:service` answer; only the
/// fields used are read.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthEntry {
    node: Node,
    service: Service,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Node {
    #[serde(default)]
    address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Service {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    port: u16,
    /// `null` when the service has none.
    #[serde(default)]
    meta: Option<HashMap<String, String>>,
}

/// The endpoints of a health answer, sorted: `Service.Address`, or the
/// node's address when it is empty (as Consul's catalog docs say);
/// `Service.Meta.scheme`, else `http`. Instances without an address or a
/// port cannot be called and are left out.
pub(super) fn parse(body: &[u8]) -> Result<Vec<Endpoint>, serde_json::Error> {
    let entries: Vec<HealthEntry> = serde_json::from_slice(body)?;
    let mut endpoints: Vec<Endpoint> = entries
        .into_iter()
        .filter_map(|entry| {
            let service = entry.service;
            let address = if service.address.is_empty() {
                entry.node.address
            } else {
                service.address
            };
            if address.is_empty() || service.port == 0 {
                return None;
            }
            let mut instance = Instance::new(service.service, service.id, address, service.port);
            if let Some(scheme) = service
                .meta
                .and_then(|mut meta| meta.remove("scheme"))
                .filter(|scheme| !scheme.is_empty())
            {
                instance.scheme = scheme;
            }
            Some(instance.endpoint())
        })
        .collect();
    endpoints.sort();
    endpoints.dedup();
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_moves_forward_resets_when_it_goes_backwards_and_is_never_zero() {
        assert_eq!(next_index(0, 10), 10);
        assert_eq!(next_index(10, 12), 12);
        assert_eq!(next_index(12, 12), 12);
        assert_eq!(next_index(12, 5), 0);
        assert_eq!(next_index(0, 0), 1);
        // An agent stuck at 0 is blocked on with 1, and that is no change.
        assert_eq!(next_index(1, 0), 1);
    }

    #[test]
    fn a_blocking_query_may_take_wait_plus_its_jitter() {
        assert_eq!(
            blocking_timeout(Duration::from_secs(64)),
            Duration::from_secs(64 + 4 + 5)
        );
    }

    #[test]
    fn the_service_address_wins_and_the_node_address_fills_in() {
        let body = br#"[
            {"Node": {"Address": "10.0.0.1"},
             "Service": {"ID": "a", "Service": "s", "Address": "10.0.0.9", "Port": 80, "Meta": null},
             "Checks": []},
            {"Node": {"Address": "10.0.0.2"},
             "Service": {"ID": "b", "Service": "s", "Address": "", "Port": 8443,
                         "Meta": {"scheme": "https"}},
             "Checks": []},
            {"Node": {"Address": "::1"},
             "Service": {"ID": "c", "Service": "s", "Address": "", "Port": 81},
             "Checks": []},
            {"Node": {"Address": "10.0.0.3"},
             "Service": {"ID": "d", "Service": "s", "Address": "", "Port": 0},
             "Checks": []}
        ]"#;
        let urls: Vec<String> = parse(body).unwrap().into_iter().map(|e| e.url).collect();
        assert_eq!(
            urls,
            [
                "http://10.0.0.9:80",
                "http://[::1]:81",
                "https://10.0.0.2:8443"
            ]
        );
    }

    #[test]
    fn no_instances_is_an_empty_list_and_garbage_is_an_error() {
        assert_eq!(parse(b"[]").unwrap(), Vec::<Endpoint>::new());
        assert!(parse(b"{\"error\": 1}").is_err());
        assert!(parse(b"<html>").is_err());
    }

    #[test]
    fn the_first_query_has_no_index_and_later_ones_block_on_it() {
        let agent = Agent::new("http://127.0.0.1:8500", None, Duration::from_secs(1)).unwrap();
        let mut watch = HealthWatch::new(
            Arc::new(agent),
            "web api",
            Some("dc2".into()),
            None,
            Duration::from_secs(60),
        );
        assert_eq!(
            watch.path(),
            "/v1/health/service/web%20api?passing=true&wait=1m&dc=dc2"
        );
        watch.index = 42;
        assert_eq!(
            watch.path(),
            "/v1/health/service/web%20api?passing=true&index=42&wait=1m&dc=dc2"
        );
    }
}

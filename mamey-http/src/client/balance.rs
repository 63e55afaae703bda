//! Load balancing among a service's endpoints: the endpoints' states,
//! remembered while they are in use, and the pick among those whose circuit
//! lets a call through.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mamey_core::discovery::Endpoint;

use super::breaker::EndpointState;
use super::config::LoadBalancer;

/// Endpoints known before unused ones are forgotten.
const FORGET_ABOVE: usize = 256;

/// How long an endpoint is remembered after its last call.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// The state of every endpoint called, and the pick among them.
#[derive(Debug)]
pub(crate) struct Balancer {
    kind: LoadBalancer,
    endpoints: RwLock<HashMap<Endpoint, Arc<EndpointState>>>,
    /// The round-robin counter, shared by every service.
    turn: AtomicUsize,
}

/// The endpoint a call goes to.
pub(crate) struct Picked {
    pub(crate) endpoint: Endpoint,
    pub(crate) state: Arc<EndpointState>,
    /// Whether the call is the endpoint's half-open probe.
    pub(crate) probe: bool,
}

impl Balancer {
    pub(crate) fn new(kind: LoadBalancer) -> Self {
        Self {
            kind,
            endpoints: RwLock::new(HashMap::new()),
            turn: AtomicUsize::new(0),
        }
    }

    fn state(&self, endpoint: &Endpoint) -> Arc<EndpointState> {
        if let Ok(states) = self.endpoints.read()
            && let Some(state) = states.get(endpoint)
        {
            return Arc::clone(state);
        }
        let mut states = self
            .endpoints
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Endpoints come and go with discovery: forget the ones no call has
        // used for a while, keeping the map about as large as the fleet.
        if states.len() >= FORGET_ABOVE {
            states
                .retain(|_, state| Arc::strong_count(state) > 1 || state.idle_for() < FORGET_AFTER);
        }
        Arc::clone(
            states
                .entry(endpoint.clone())
                .or_insert_with(|| Arc::new(EndpointState::new(endpoint.clone()))),
        )
    }

    /// Picks an endpoint that is not ejected (or is due a probe),
    /// preferring those outside `avoid` (the ones that failed the call
    /// already); `None` when every one is ejected.
    pub(crate) fn pick(&self, endpoints: &[Endpoint], avoid: &[Endpoint]) -> Option<Picked> {
        let (preferred, avoided): (Vec<_>, Vec<_>) = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (i, self.state(e)))
            .filter(|(_, s)| s.allows())
            .partition(|(i, _)| !avoid.contains(&endpoints[*i]));
        self.choose(endpoints, preferred)
            .or_else(|| self.choose(endpoints, avoided))
    }

    /// The balancer's choice among `states` (indices into `endpoints`).
    fn choose(
        &self,
        endpoints: &[Endpoint],
        mut states: Vec<(usize, Arc<EndpointState>)>,
    ) -> Option<Picked> {
        loop {
            let chosen = match (states.len(), self.kind) {
                (0, _) => return None,
                (1, _) => 0,
                (n, LoadBalancer::RoundRobin) => self.turn.fetch_add(1, Ordering::Relaxed) % n,
                (n, LoadBalancer::P2c) => {
                    let a = fastrand::usize(..n);
                    let mut b = fastrand::usize(..n - 1);
                    if b >= a {
                        b += 1;
                    }
                    if states[a].1.in_flight() <= states[b].1.in_flight() {
                        a
                    } else {
                        b
                    }
                }
            };
            let (index, state) = states.swap_remove(chosen);
            // Another call may have taken the probe since `allows`: then
            // pick among the others.
            if let Some(probe) = state.admit() {
                return Some(Picked {
                    endpoint: endpoints[index].clone(),
                    state,
                    probe,
                });
            }
        }
    }
}

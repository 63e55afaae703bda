//! Convey/Mamey naming conventions, so mamey and .NET Convey services can
//! exchange messages: a topic exchange per namespace, routing key = the
//! `snake_case` message name, queue `{service}/{exchange}.{routing_key}`.

use std::any::TypeId;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::message::{Message, Route};

/// The `messaging.conventions` part of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConventionsConfig {
    /// Publish every message to this exchange instead of its namespace's.
    /// Default: none.
    pub exchange: Option<String>,
    /// Queue name template with `{service}`, `{exchange}` and
    /// `{routing_key}`. Default: `{service}/{exchange}.{routing_key}`.
    pub queue: String,
    /// Also write the correlation and causation ids as `x-correlation-id`
    /// and `x-causation-id` headers. They travel in the `message_context`
    /// header and the `correlation_id` property anyway; turn this off for
    /// systems that only talk Convey, and every message gets smaller.
    /// Default: `true`.
    pub id_headers: bool,
}

impl Default for ConventionsConfig {
    fn default() -> Self {
        Self {
            exchange: None,
            queue: "{service}/{exchange}.{routing_key}".into(),
            id_headers: true,
        }
    }
}

/// Names exchanges, routing keys and queues for message types.
///
/// ```
/// use mamey_messaging::{Conventions, Message};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct DeliveryStarted;
/// impl Message for DeliveryStarted { const NAMESPACE: &'static str = "deliveries"; }
///
/// let conventions = Conventions::new("conveyor.services.orders");
/// let route = conventions.route::<DeliveryStarted>();
/// assert_eq!(route.exchange, "deliveries");
/// assert_eq!(route.routing_key, "delivery_started");
/// assert_eq!(
///     conventions.queue::<DeliveryStarted>(),
///     "conveyor.services.orders/deliveries.delivery_started"
/// );
/// ```
#[derive(Debug, Clone)]
pub struct Conventions {
    service: String,
    config: ConventionsConfig,
    routes: HashMap<TypeId, Route>,
    queues: HashMap<TypeId, String>,
    /// Routes derived from the names, computed once per type (publishing
    /// asks for every message).
    derived: std::sync::Arc<std::sync::RwLock<HashMap<TypeId, Route>>>,
}

impl Conventions {
    /// Default conventions for the service called `service`.
    pub fn new(service: impl Into<String>) -> Self {
        Self::with_config(service, ConventionsConfig::default())
    }

    /// Conventions with global overrides from configuration.
    pub fn with_config(service: impl Into<String>, config: ConventionsConfig) -> Self {
        Self {
            service: service.into(),
            config,
            routes: HashMap::new(),
            queues: HashMap::new(),
            derived: std::sync::Arc::default(),
        }
    }

    /// Routes `M` to `exchange`/`routing_key` instead of the convention.
    #[must_use]
    pub fn route_override<M: Message>(
        mut self,
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
    ) -> Self {
        self.routes.insert(
            TypeId::of::<M>(),
            Route {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
            },
        );
        self
    }

    /// Consumes `M` from `queue` instead of the convention's name.
    #[must_use]
    pub fn queue_override<M: Message>(mut self, queue: impl Into<String>) -> Self {
        self.queues.insert(TypeId::of::<M>(), queue.into());
        self
    }

    /// The service name used in queue names.
    #[must_use]
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Whether messages carry `x-correlation-id` and `x-causation-id`
    /// headers besides the `message_context` (`id_headers`).
    #[must_use]
    pub fn id_headers(&self) -> bool {
        self.config.id_headers
    }

    /// Where `M` is published.
    #[must_use]
    pub fn route<M: Message>(&self) -> Route {
        let id = TypeId::of::<M>();
        if let Some(route) = self.routes.get(&id) {
            return route.clone();
        }
        if let Ok(derived) = self.derived.read()
            && let Some(route) = derived.get(&id)
        {
            return route.clone();
        }
        let route = Route {
            exchange: self
                .config
                .exchange
                .clone()
                .unwrap_or_else(|| M::NAMESPACE.to_owned()),
            routing_key: snake_case(M::name()),
        };
        if let Ok(mut derived) = self.derived.write() {
            derived.insert(id, route.clone());
        }
        route
    }

    /// The queue this service consumes `M` from.
    #[must_use]
    pub fn queue<M: Message>(&self) -> String {
        if let Some(queue) = self.queues.get(&TypeId::of::<M>()) {
            return queue.clone();
        }
        let route = self.route::<M>();
        self.config
            .queue
            .replace("{service}", &self.service)
            .replace("{exchange}", &route.exchange)
            .replace("{routing_key}", &route.routing_key)
    }
}

/// `OrderCreated` → `order_created`, `HTTPRequestFailed` →
/// `http_request_failed`, `Step2Done` → `step2_done`.
#[must_use]
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1);
            let boundary = match prev {
                None => false,
                Some('_') => false,
                Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                Some(p) => p.is_uppercase() && next.is_some_and(|n| n.is_lowercase()),
            };
            if boundary {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_handles_acronyms_and_digits() {
        for (input, expected) in [
            ("OrderCreated", "order_created"),
            ("HTTPRequestFailed", "http_request_failed"),
            ("Step2Done", "step2_done"),
            ("already_snake", "already_snake"),
            ("A", "a"),
            ("ParcelAddedToOrder", "parcel_added_to_order"),
        ] {
            assert_eq!(snake_case(input), expected, "{input}");
        }
    }
}

//! The [`Messaging`] plug-in: a broker, a [`Publisher`] resource, and typed
//! subscriptions that hand messages to the core dispatcher.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use mamey_core::config::ConfigSection;
use mamey_core::cqrs::{Command, Dispatcher, Event};
use mamey_core::health::{HealthStatus, Probe};
use mamey_core::{BoxError, InitContext, Plugin, StartContext};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::broker::{Broker, DeliveryHandler, Failure, RetryPolicy, Subscription};
use crate::conventions::{Conventions, ConventionsConfig};
use crate::message::{Delivery, Message};
use crate::publisher::{Codec, Json, Publisher, context_of};
use crate::unit_of_work::{Consumed, consuming};

/// The `messaging` section.
///
/// ```toml
/// [messaging]
/// concurrency = 16
/// handler_timeout = "30s"
/// retry = { max_retries = 3, initial_delay = "1s", multiplier = 2.0, max_delay = "60s" }
/// conventions = { queue = "{service}/{exchange}.{routing_key}" }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessagingConfig {
    /// Deliveries each subscription handles at once. Default: `16`.
    pub concurrency: usize,
    /// Longest one handler may run; then the attempt counts as failed and is
    /// retried. Default: `30s`.
    #[serde(with = "mamey_core::config::duration")]
    pub handler_timeout: Duration,
    /// Retries and dead-lettering.
    pub retry: RetryPolicy,
    /// Naming overrides.
    pub conventions: ConventionsConfig,
    /// The outbox relay, when one is added with [`Messaging::outbox`].
    pub outbox: crate::outbox::RelayConfig,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            handler_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            conventions: ConventionsConfig::default(),
            outbox: crate::outbox::RelayConfig::default(),
        }
    }
}

impl ConfigSection for MessagingConfig {
    const KEY: &'static str = "messaging";
}

/// Takes the outbox store from the resources and makes the relay over the
/// service's broker, running until the service stops.
type RelayStarter = Box<
    dyn FnOnce(
            &StartContext,
            Arc<dyn Broker>,
            crate::outbox::RelayConfig,
        ) -> Result<futures_util::future::BoxFuture<'static, ()>, BoxError>
        + Send
        + Sync,
>;

/// Where the broker comes from.
enum Backend {
    Ready(Arc<dyn Broker>),
    #[cfg(feature = "rabbitmq")]
    RabbitMq,
}

/// Builds the subscription of one subscribed type, given the dispatcher.
type Binder = Box<dyn Fn(&Conventions, Dispatcher, &MessagingConfig) -> Subscription + Send + Sync>;

/// Messaging for a service: publish with the [`Publisher`] resource, and
/// receive commands and events in the handlers registered on the
/// dispatcher.
///
/// A handler's [`MessageContext`](mamey_core::MessageContext) argument is
/// the consumed message's context (its message id, correlation id, caller);
/// handlers publish with a `Res<Publisher>` argument.
///
/// ```no_run
/// use mamey_core::cqrs::DispatcherBuilder;
/// use mamey_core::{Error, MessageContext};
/// use mamey_messaging::{MemoryBroker, Messaging, message};
///
/// #[message(namespace = "orders", event)]
/// #[derive(Clone)]
/// struct OrderCreated { id: u64 }
///
/// async fn ship(event: OrderCreated, ctx: MessageContext) -> Result<(), Error> {
///     println!("ship order {} (correlation {})", event.id, ctx.correlation_id);
///     Ok(())
/// }
///
/// fn handlers(d: &mut DispatcherBuilder) {
///     d.event(ship);
/// }
///
/// # async fn demo() -> Result<(), mamey_core::BoxError> {
/// let service = mamey_core::Service::builder("shipping")
///     .plugin(Messaging::new(MemoryBroker::new()).subscribe_event::<OrderCreated>())
///     .handlers(handlers)
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
pub struct Messaging {
    backend: Backend,
    broker: Option<Arc<dyn Broker>>,
    binders: Vec<Binder>,
    /// The outbox store the relay needs, and what starts the relay.
    relay: Option<(mamey_core::Requirement, RelayStarter)>,
    config: MessagingConfig,
    conventions: Option<Arc<Conventions>>,
}

impl std::fmt::Debug for Messaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messaging")
            .field("subscriptions", &self.binders.len())
            .finish_non_exhaustive()
    }
}

impl Messaging {
    /// Messaging over `broker` (e.g. a [`MemoryBroker`](crate::MemoryBroker)).
    pub fn new(broker: impl Broker) -> Self {
        Self::with_backend(Backend::Ready(Arc::new(broker)))
    }

    /// Messaging over RabbitMQ, connecting during `init` with the
    /// `[rabbitmq]` section ([`RabbitMqConfig`](crate::rabbitmq::RabbitMqConfig)).
    #[cfg(feature = "rabbitmq")]
    #[must_use]
    pub fn rabbitmq() -> Self {
        Self::with_backend(Backend::RabbitMq)
    }

    fn with_backend(backend: Backend) -> Self {
        Self {
            backend,
            broker: None,
            binders: Vec::new(),
            relay: None,
            config: MessagingConfig::default(),
            conventions: None,
        }
    }

    /// Runs an [`OutboxRelay`](crate::OutboxRelay) while the service runs
    /// (settings in `messaging.outbox`), from the store `S` an earlier
    /// plug-in provides as a resource — e.g. mamey-persistence's `PgOutbox`
    /// from `Postgres::new().outbox()`, or a
    /// [`MemoryOutbox`](crate::MemoryOutbox) added with
    /// [`ServiceBuilder::resource`](mamey_core::ServiceBuilder::resource).
    /// Handlers stage messages in the store inside their transaction; the
    /// relay publishes them after commit, woken by the store's
    /// [`staged`](crate::OutboxStore::staged) notification and on its
    /// interval.
    #[must_use]
    pub fn outbox<S: crate::OutboxStore + Clone>(mut self) -> Self {
        // Declared as a requirement, so a missing store fails the build
        // before any plug-in starts, with this hint.
        let store = mamey_core::Requirement::of::<S>().hint(
            "the outbox store: add the plug-in that provides it (e.g. `Postgres::new().outbox()`), \
             or `ServiceBuilder::resource` for a `MemoryOutbox`, before `messaging`",
        );
        let start: RelayStarter = Box::new(|ctx: &StartContext, broker, config| {
            let store = Arc::new(ctx.resource::<S>()?);
            Ok(crate::OutboxRelay::new(store, broker, config)
                .run(ctx.shutdown_token())
                .boxed())
        });
        self.relay = Some((store, start));
        self
    }

    /// Consumes event `E` from this service's queue for it and publishes
    /// each one to the dispatcher's handlers of `E`.
    #[must_use]
    pub fn subscribe_event<E: Message + Event>(mut self) -> Self {
        self.binders
            .push(Box::new(|conventions, dispatcher, config| {
                let service = conventions.service().to_owned();
                let handler: DeliveryHandler = Arc::new(move |delivery| {
                    let dispatcher = dispatcher.clone();
                    handle::<E, _, _>(service.clone(), delivery, move |event| async move {
                        dispatcher.publish(event).await
                    })
                    .boxed()
                });
                subscription::<E>(conventions, handler, config)
            }));
        self
    }

    /// Consumes command `C` from this service's queue for it and sends each
    /// one to the dispatcher's handler of `C`.
    #[must_use]
    pub fn subscribe_command<C: Message + Command>(mut self) -> Self {
        self.binders
            .push(Box::new(|conventions, dispatcher, config| {
                let service = conventions.service().to_owned();
                let handler: DeliveryHandler = Arc::new(move |delivery| {
                    let dispatcher = dispatcher.clone();
                    handle::<C, _, _>(service.clone(), delivery, move |command| async move {
                        dispatcher.send(command).await
                    })
                    .boxed()
                });
                subscription::<C>(conventions, handler, config)
            }));
        self
    }
}

/// The subscription of `M` on this service's queue for it.
fn subscription<M: Message>(
    conventions: &Conventions,
    handler: DeliveryHandler,
    config: &MessagingConfig,
) -> Subscription {
    Subscription {
        queue: conventions.queue::<M>(),
        binding: conventions.route::<M>(),
        message: M::name(),
        handler,
        retry: config.retry.clone(),
        concurrency: config.concurrency,
        handler_timeout: config.handler_timeout,
    }
}

/// Decodes a delivery and runs `dispatch` in the delivery's message context,
/// inside a `consume` span continuing the publisher's trace.
async fn handle<M, F, Fut>(service: String, delivery: Delivery, dispatch: F) -> Result<(), Failure>
where
    M: Message,
    F: FnOnce(M) -> Fut,
    Fut: Future<Output = Result<(), mamey_core::Error>>,
{
    let message: M = Json.decode(&delivery.body).map_err(Failure::Decode)?;
    let mamey_observability::propagation::Extracted { context, otel } = context_of(&delivery);
    let message_id = context.message_id.clone();
    let consumed = Consumed {
        service,
        message_id: message_id.clone(),
    };
    let attempt = delivery.attempt;
    // The span is created inside the context, where the head sampler sees
    // the publisher's sampling decision.
    context
        .scope(async move {
            let span = tracing::info_span!(
                "consume",
                message.name = M::name(),
                message.id = %message_id,
                attempt,
            );
            mamey_observability::propagation::continue_trace(&span, &otel);
            consuming(consumed, dispatch(message).instrument(span)).await
        })
        .await
        .map_err(Failure::Handler)
}

impl Plugin for Messaging {
    fn name(&self) -> &'static str {
        "messaging"
    }

    fn requires(&self) -> Vec<mamey_core::Requirement> {
        self.relay.iter().map(|(store, _)| store.clone()).collect()
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        self.config = ctx.section::<MessagingConfig>()?;
        let outbox = &self.config.outbox;
        for (key, invalid) in [
            ("messaging.outbox.batch", outbox.batch == 0),
            ("messaging.outbox.concurrency", outbox.concurrency == 0),
            ("messaging.outbox.interval", outbox.interval.is_zero()),
            ("messaging.outbox.lease", outbox.lease.is_zero()),
        ] {
            if invalid {
                return Err(ctx.config().invalid(key, "expected more than zero").into());
            }
        }
        if self.config.concurrency == 0 {
            return Err(ctx
                .config()
                .invalid("messaging.concurrency", "expected at least 1")
                .into());
        }
        let conventions = Arc::new(Conventions::with_config(
            ctx.app().name.clone(),
            self.config.conventions.clone(),
        ));
        let broker: Arc<dyn Broker> = match &self.backend {
            Backend::Ready(broker) => Arc::clone(broker),
            #[cfg(feature = "rabbitmq")]
            Backend::RabbitMq => {
                let config = ctx.section::<crate::rabbitmq::RabbitMqConfig>()?;
                let name = format!("{} ({})", ctx.app().name, ctx.app().instance_id);
                Arc::new(crate::rabbitmq::RabbitMqBroker::connect(config, &name).await?)
            }
        };
        self.broker = Some(Arc::clone(&broker));
        ctx.provide(Publisher::new(
            Arc::clone(&broker),
            Arc::clone(&conventions),
        ))?;
        ctx.health()
            .register("messaging", &[Probe::Ready], move || {
                let connected = broker.is_connected();
                async move {
                    if connected {
                        HealthStatus::healthy()
                    } else {
                        HealthStatus::unhealthy("not connected to the broker")
                    }
                }
            });
        self.conventions = Some(conventions);
        Ok(())
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let (Some(conventions), Some(broker)) = (self.conventions.clone(), self.broker.clone())
        else {
            return Err("messaging started before it was initialised".into());
        };
        for binder in &self.binders {
            let subscription = binder(&conventions, ctx.dispatcher().clone(), &self.config);
            tracing::info!(
                queue = %subscription.queue,
                exchange = %subscription.binding.exchange,
                routing_key = %subscription.binding.routing_key,
                "consuming"
            );
            broker.subscribe(subscription).await?;
        }
        // After the subscriptions: what it relays may be for this service.
        if let Some((_, start_relay)) = self.relay.take() {
            let relay = start_relay(ctx, Arc::clone(&broker), self.config.outbox.clone())?;
            ctx.spawn("outbox-relay", async move {
                relay.await;
                Ok(())
            });
        }
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), BoxError> {
        // Stops consuming and waits for in-flight handlers; the core's
        // shutdown deadline bounds the wait.
        if let Some(broker) = &self.broker {
            broker.close().await;
        }
        Ok(())
    }
}

//! [`MemoryBroker`]: the in-process broker, for single-process systems and
//! tests — same routing, retries and dead-lettering as RabbitMQ, no server.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use mamey_core::InServiceScope;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{
    Broker, Disposition, PublishError, SubscribeError, Subscription, handle_delivery, topic_matches,
};
use crate::message::{DeadLetter, Delivery, OutgoingMessage, Route};

/// An in-process broker with the semantics that matter of a RabbitMQ topic
/// exchange: messages are routed by exchange and topic pattern to every
/// bound queue (at-least-once to each), consumers of one queue compete, a
/// failing handler's message is redelivered after the retry delay, and a
/// message that cannot succeed lands in the dead-letter list with the reason.
///
/// It lives as long as the process: messages are not persisted. Clones share
/// queues, bindings and dead letters, so several services in one process
/// talk through one broker; each clone has its own consumers, so closing one
/// (a service stopping) leaves the others running.
#[derive(Default)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
    handle: Arc<Handle>,
}

impl Clone for MemoryBroker {
    /// Shares the broker, with a lifecycle of its own.
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            handle: Arc::default(),
        }
    }
}

#[derive(Default)]
struct Inner {
    queues: Mutex<HashMap<String, Queue>>,
    bindings: Mutex<Vec<(Route, String)>>,
    dead_letters: Mutex<Vec<DeadLetter>>,
    /// When false, publishing to a route with no queue is not an error.
    lenient: bool,
}

/// The lifecycle of one clone: its consumers and retry timers.
#[derive(Default)]
struct Handle {
    /// Consumers take no new message once cancelled.
    stop: CancellationToken,
    /// Set when `close` is done; publishing fails from then on.
    closed: std::sync::atomic::AtomicBool,
    tasks: TaskTracker,
}

struct Queue {
    sender: mpsc::UnboundedSender<Delivery>,
    receiver: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Delivery>>>,
}

impl fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let queues: Vec<String> = self
            .inner
            .queues
            .lock()
            .map(|q| q.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("MemoryBroker")
            .field("queues", &queues)
            .finish_non_exhaustive()
    }
}

impl MemoryBroker {
    /// A broker whose publishes fail with [`PublishError::Unroutable`] when
    /// no queue is bound (RabbitMQ's `mandatory` flag).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A broker that accepts messages no queue is bound to (and drops them),
    /// like a non-mandatory publish.
    #[must_use]
    pub fn lenient() -> Self {
        Self {
            inner: Arc::new(Inner {
                lenient: true,
                ..Inner::default()
            }),
            handle: Arc::default(),
        }
    }

    /// This clone, consumers and all (unlike `Clone`, which starts a new
    /// lifecycle).
    fn same_handle(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            handle: Arc::clone(&self.handle),
        }
    }

    /// The messages dead-lettered so far, oldest first.
    #[must_use]
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.inner
            .dead_letters
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    fn queue(
        &self,
        name: &str,
    ) -> (
        mpsc::UnboundedSender<Delivery>,
        Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Delivery>>>,
    ) {
        let mut queues = match self.inner.queues.lock() {
            Ok(queues) => queues,
            Err(poisoned) => poisoned.into_inner(),
        };
        let queue = queues.entry(name.to_owned()).or_insert_with(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            Queue {
                sender,
                receiver: Arc::new(tokio::sync::Mutex::new(receiver)),
            }
        });
        (queue.sender.clone(), Arc::clone(&queue.receiver))
    }

    fn bound_queues(&self, route: &Route) -> Vec<mpsc::UnboundedSender<Delivery>> {
        let names: Vec<String> = self
            .inner
            .bindings
            .lock()
            .map(|b| {
                b.iter()
                    .filter(|(binding, _)| {
                        binding.exchange == route.exchange
                            && topic_matches(&binding.routing_key, &route.routing_key)
                    })
                    .map(|(_, queue)| queue.clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        names
            .into_iter()
            .filter(|n| seen.insert(n.clone()))
            .map(|n| self.queue(&n).0)
            .collect()
    }

    fn dead_letter(&self, delivery: Delivery, queue: &str, reason: String) {
        tracing::warn!(queue, message_id = %delivery.properties.message_id, %reason, "message dead-lettered");
        if let Ok(mut dead) = self.inner.dead_letters.lock() {
            dead.push(DeadLetter {
                delivery,
                queue: queue.to_owned(),
                reason,
            });
        }
    }

    /// One consumer of `subscription.queue`: takes a delivery, handles it,
    /// and acts on the [`Disposition`].
    async fn consume(
        self,
        subscription: Subscription,
        sender: mpsc::UnboundedSender<Delivery>,
        receiver: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Delivery>>>,
    ) {
        loop {
            let next = tokio::select! {
                () = self.handle.stop.cancelled() => return,
                next = async { receiver.lock().await.recv().await } => next,
            };
            let Some(delivery) = next else { return };
            let attempt = delivery.attempt;
            let (result, disposition) = handle_delivery(&subscription, delivery.clone()).await;
            match disposition {
                Disposition::Ack => {}
                Disposition::Retry(delay) => {
                    if let Err(failure) = &result {
                        tracing::info!(queue = %subscription.queue, attempt, ?delay, %failure, "retrying message");
                    }
                    let sender = sender.clone();
                    let stop = self.handle.stop.clone();
                    let redelivery = Delivery {
                        attempt: attempt + 1,
                        ..delivery
                    };
                    // The message waits outside the queue, so other messages
                    // keep flowing; a retry pending at shutdown is lost with
                    // the process, as everything in this broker is.
                    self.handle.tasks.spawn(
                        async move {
                            tokio::select! {
                                () = stop.cancelled() => {}
                                () = tokio::time::sleep(delay) => { let _ = sender.send(redelivery); }
                            }
                        }
                        .in_current_service(),
                    );
                }
                Disposition::DeadLetter(reason) => {
                    self.dead_letter(delivery, &subscription.queue, reason);
                }
            }
        }
    }
}

impl Broker for MemoryBroker {
    fn publish(&self, message: OutgoingMessage) -> BoxFuture<'_, Result<(), PublishError>> {
        async move {
            // Handlers still finishing during close may publish.
            if self
                .handle
                .closed
                .load(std::sync::atomic::Ordering::Acquire)
            {
                return Err(PublishError::Closed);
            }
            let queues = self.bound_queues(&message.route);
            if queues.is_empty() && !self.inner.lenient {
                return Err(PublishError::Unroutable(message.route));
            }
            for queue in queues {
                let delivery = Delivery {
                    route: message.route.clone(),
                    properties: message.properties.clone(),
                    body: message.body.clone(),
                    attempt: 1,
                };
                queue.send(delivery).map_err(|_| PublishError::Closed)?;
            }
            Ok(())
        }
        .boxed()
    }

    fn subscribe(&self, subscription: Subscription) -> BoxFuture<'_, Result<(), SubscribeError>> {
        async move {
            if self.handle.stop.is_cancelled() {
                return Err(SubscribeError {
                    queue: subscription.queue,
                    reason: "the broker is closed".into(),
                });
            }
            let (sender, receiver) = self.queue(&subscription.queue);
            if let Ok(mut bindings) = self.inner.bindings.lock() {
                let binding = (subscription.binding.clone(), subscription.queue.clone());
                if !bindings.contains(&binding) {
                    bindings.push(binding);
                }
            }
            // The consumers belong to the subscribing service, whichever
            // service of the process publishes: they run in its scope.
            for _ in 0..subscription.concurrency.max(1) {
                let consumer = self.same_handle().consume(
                    subscription.clone(),
                    sender.clone(),
                    Arc::clone(&receiver),
                );
                self.handle.tasks.spawn(consumer.in_current_service());
            }
            Ok(())
        }
        .boxed()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        async move {
            self.handle.stop.cancel();
            self.handle.tasks.close();
            self.handle.tasks.wait().await;
            self.handle
                .closed
                .store(true, std::sync::atomic::Ordering::Release);
        }
        .boxed()
    }
}

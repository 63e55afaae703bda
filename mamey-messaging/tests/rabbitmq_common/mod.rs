//! Shared helpers of the RabbitMQ test binaries.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Channel, Connection, ConnectionProperties};
use mamey_core::cqrs::Event;
use mamey_core::health::{Probe, Status};
use mamey_core::{Error, MessageContext, Service, ServiceError, ShutdownHandle};
use mamey_messaging::rabbitmq::{dead_letter_queue, retry_queue};
use mamey_messaging::{Message, Messaging, Publisher};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub id: u64,
}

impl Message for OrderPlaced {
    const NAMESPACE: &'static str = "orders";
}

impl Event for OrderPlaced {}

pub const MAX_RETRIES: u32 = 2;

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A raw connection for setup and inspection, or `None` (test skipped) when
/// RabbitMQ is down and `MAMEY_REQUIRE_SERVICES` is not set.
pub async fn raw() -> Option<(Connection, Channel)> {
    match Connection::connect(&amqp_url(), ConnectionProperties::default()).await {
        Ok(connection) => {
            let channel = connection.create_channel().await.unwrap();
            Some((connection, channel))
        }
        Err(error) if std::env::var("MAMEY_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!(
                "RabbitMQ is required (MAMEY_REQUIRE_SERVICES=1) but unreachable at {}: {error}",
                amqp_url()
            )
        }
        Err(error) => {
            eprintln!("SKIPPED: RabbitMQ unreachable at {}: {error}", amqp_url());
            None
        }
    }
}

/// Names unique to one test.
pub struct Names {
    pub service: String,
    pub exchange: String,
}

impl Names {
    pub fn new() -> Self {
        let id = &mamey_core::new_id()[..8];
        Self {
            service: format!("it-{id}"),
            exchange: format!("it-{id}.orders"),
        }
    }

    pub fn queue(&self) -> String {
        format!("{}/{}.order_placed", self.service, self.exchange)
    }

    pub async fn clean(&self, channel: &Channel) {
        let queue = self.queue();
        let mut queues = vec![
            queue.clone(),
            dead_letter_queue(&queue),
            format!("{queue}.raw"),
        ];
        queues.extend((1..=MAX_RETRIES).map(|n| retry_queue(&queue, n)));
        for queue in queues {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
    }
}

#[derive(Clone, Default)]
pub struct Seen {
    pub calls: Arc<AtomicUsize>,
    pub ids: Arc<Mutex<Vec<u64>>>,
    pub contexts: Arc<Mutex<Vec<MessageContext>>>,
}

pub struct Running {
    pub publisher: Publisher,
    pub shutdown: ShutdownHandle,
    pub task: tokio::task::JoinHandle<Result<(), ServiceError>>,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.shutdown();
        self.task.await.unwrap().unwrap();
    }
}

pub fn service(
    names: &Names,
    seen: &Seen,
    fail_first: Option<usize>,
    delay: Duration,
) -> mamey_core::ServiceBuilder {
    let seen = seen.clone();
    Service::builder(names.service.clone())
        .handle_signals(false)
        .config_dir("/nonexistent-mamey-config")
        .env_vars([
            ("MAMEY__RABBITMQ__URL".to_owned(), amqp_url()),
            (
                "MAMEY__RABBITMQ__PUBLISH_TIMEOUT".to_owned(),
                "20s".to_owned(),
            ),
            (
                "MAMEY__MESSAGING__CONVENTIONS__EXCHANGE".to_owned(),
                names.exchange.clone(),
            ),
            (
                "MAMEY__MESSAGING__RETRY__INITIAL_DELAY".to_owned(),
                "50ms".to_owned(),
            ),
            (
                "MAMEY__MESSAGING__RETRY__MAX_RETRIES".to_owned(),
                MAX_RETRIES.to_string(),
            ),
            ("MAMEY__MESSAGING__CONCURRENCY".to_owned(), "4".to_owned()),
        ])
        .plugin(Messaging::rabbitmq().subscribe_event::<OrderPlaced>())
        .handlers(move |dispatcher, _| {
            dispatcher.add_event(move |event: OrderPlaced| {
                let seen = seen.clone();
                async move {
                    let call = seen.calls.fetch_add(1, Ordering::SeqCst);
                    if let Some(context) = MessageContext::current() {
                        seen.contexts.lock().unwrap().push(context);
                    }
                    tokio::time::sleep(delay).await;
                    match fail_first {
                        Some(n) if call < n => {
                            Err(Error::unavailable("db.down", "database is down"))
                        }
                        None => Err(Error::unavailable("db.down", "database is down")),
                        _ => {
                            seen.ids.lock().unwrap().push(event.id);
                            Ok(())
                        }
                    }
                }
            });
            Ok(())
        })
}

pub async fn start(builder: mamey_core::ServiceBuilder) -> Running {
    let service = builder.build().await.unwrap();
    let publisher = service.resources().get::<Publisher>().unwrap();
    let shutdown = service.shutdown_handle();
    let health = service.health().clone();
    let task = tokio::spawn(service.run());
    eventually("the service to start", || {
        let health = health.clone();
        async move { health.check(Probe::Startup).await.status == Status::Healthy }
    })
    .await;
    Running {
        publisher,
        shutdown,
        task,
    }
}

pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn get(channel: &Channel, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
}

//! The RabbitMQ backend of the shared suite, for the RabbitMQ test binaries.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use mamey_messaging::Messaging;
use mamey_messaging::rabbitmq::{
    ATTEMPTS_HEADER, DEATH_REASON_HEADER, dead_letter_queue, header_text, retry_queue,
};

use crate::suite::{Backend, MAX_RETRIES};

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
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
}

/// One test's RabbitMQ: its names, and a raw connection for setup and
/// inspection. `Rabbit::new` returns `None` (the test skips) when RabbitMQ is
/// down and `MAMEY_REQUIRE_SERVICES` is not set.
pub struct Rabbit {
    pub names: Names,
    pub connection: Connection,
    pub channel: Channel,
    dead: Mutex<Vec<(String, u32)>>,
}

impl Rabbit {
    pub async fn new() -> Option<Self> {
        match Connection::connect(&amqp_url(), ConnectionProperties::default()).await {
            Ok(connection) => {
                let channel = connection.create_channel().await.unwrap();
                Some(Self {
                    names: Names::new(),
                    connection,
                    channel,
                    dead: Mutex::new(Vec::new()),
                })
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

    /// Deletes the queues and exchange the test declared (over a fresh
    /// channel: a test may have had its connections closed).
    pub async fn clean(&self) {
        let Ok(connection) =
            Connection::connect(&amqp_url(), ConnectionProperties::default()).await
        else {
            return;
        };
        let channel = connection.create_channel().await.unwrap();
        let queue = self.names.queue();
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
                self.names.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
        let _ = connection.close(200, "clean".into()).await;
    }
}

impl Backend for Rabbit {
    fn messaging(&self) -> Messaging {
        Messaging::rabbitmq()
    }

    fn vars(&self) -> Vec<(String, String)> {
        vec![
            ("MAMEY__RABBITMQ__URL".to_owned(), amqp_url()),
            (
                "MAMEY__RABBITMQ__PUBLISH_TIMEOUT".to_owned(),
                "20s".to_owned(),
            ),
            (
                "MAMEY__MESSAGING__CONVENTIONS__EXCHANGE".to_owned(),
                self.names.exchange.clone(),
            ),
        ]
    }

    fn service_name(&self) -> String {
        self.names.service.clone()
    }

    async fn publish_garbage(&self) {
        self.channel
            .basic_publish(
                self.names.exchange.as_str().into(),
                "order_placed".into(),
                BasicPublishOptions::default(),
                b"{not json",
                BasicProperties::default().with_message_id("bad-1".into()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    async fn dead_letters(&self) -> Vec<(String, u32)> {
        let dlq = dead_letter_queue(&self.names.queue());
        while let Some(message) = get(&self.channel, &dlq).await {
            let headers = message
                .delivery
                .properties
                .headers()
                .clone()
                .unwrap_or_default();
            let reason = header_text(&headers, DEATH_REASON_HEADER).unwrap_or_default();
            let attempts = match headers.inner().get(ATTEMPTS_HEADER) {
                Some(lapin::types::AMQPValue::LongUInt(n)) => *n,
                _ => 0,
            };
            self.dead.lock().unwrap().push((reason, attempts));
        }
        self.dead.lock().unwrap().clone()
    }
}

/// Takes one message from `queue`, if any (or if the queue does not exist).
pub async fn get(channel: &Channel, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .ok()
        .flatten()
}

//! What the example's tests share: the broker's address, and removing the
//! queues and exchange a run named `id` declared.

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};

pub(crate) fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A connection to the broker, or `None` (the test skips) when it is down
/// and `MAMEY_REQUIRE_SERVICES` is not `1`.
pub(crate) async fn broker() -> Option<Connection> {
    match Connection::connect(&amqp_url(), ConnectionProperties::default()).await {
        Ok(connection) => Some(connection),
        Err(error) => {
            assert!(
                std::env::var("MAMEY_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "RabbitMQ is required: {error}"
            );
            eprintln!("SKIPPED: RabbitMQ unreachable");
            None
        }
    }
}

/// Deletes the queues (with their retry and dead-letter queues) and the
/// exchange of run `id`.
pub(crate) async fn delete_run(broker: &Connection, id: &str) {
    let exchange = format!("orders-outbox-{id}");
    let channel = broker.create_channel().await.unwrap();
    for queue in [
        format!("billing/{exchange}.order_placed"),
        format!("orders/{exchange}.order_charged"),
    ] {
        let mut queues = vec![format!("{queue}.dlq")];
        queues.extend((1..=3).map(|n| format!("{queue}.retry.{n}")));
        queues.push(queue);
        for queue in queues {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    let _ = channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
}

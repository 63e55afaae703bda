//! Runs the example's demo against the real Postgres and RabbitMQ, checks
//! each answer, and deletes the queues and exchange the run declared (the
//! demo drops its own schemas).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[tokio::test]
async fn orders_are_charged_once_each_even_when_an_event_is_redelivered() {
    let Ok(broker) = Connection::connect(&amqp_url(), ConnectionProperties::default()).await else {
        assert!(
            std::env::var("MAMEY_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "RabbitMQ is required"
        );
        eprintln!("SKIPPED: RabbitMQ unreachable");
        return;
    };
    let id = mamey_core::new_id()[..8].to_owned();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_orders-outbox"))
        .arg("--demo")
        .env("DEMO_ID", &id)
        .env("MAMEY__RABBITMQ__URL", amqp_url())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();

    // Clean up the broker before judging the run.
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
    let _ = broker.close(200, "done".into()).await;

    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in {stdout}"))
            .to_owned()
    };
    for order in 1..=3 {
        assert_eq!(
            line(&format!("place order {order}:")),
            format!("place order {order}: 201")
        );
        assert!(
            line(&format!("order {order}:")).contains("\"status\":\"charged\""),
            "billing's OrderCharged came back to orders: {stdout}"
        );
    }
    let again = line("place order 1 again:");
    assert!(
        again.contains("409") && again.contains("db.conflict"),
        "{again}"
    );
    assert_eq!(
        line("OrderPlaced deliveries in billing:"),
        "OrderPlaced deliveries in billing: 4"
    );
    assert_eq!(
        line("charges in billing:"),
        "charges in billing: 3",
        "the redelivery was skipped"
    );
    assert_eq!(
        line(&format!("unsent in orders_{id}.outbox:")),
        format!("unsent in orders_{id}.outbox: 0")
    );
    assert_eq!(
        line(&format!("unsent in billing_{id}.outbox:")),
        format!("unsent in billing_{id}.outbox: 0")
    );
}

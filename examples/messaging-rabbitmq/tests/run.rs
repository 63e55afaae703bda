//! Runs the consumer and the publisher against the real broker: 10 orders,
//! 8 handled (some after retries), 2 in the dead-letter queue.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions, QueuePurgeOptions};
use lapin::{Connection, ConnectionProperties};

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Messages in `queue`, or `None` if it does not exist. A passive declare
/// of a missing queue closes its channel, so each probe uses a fresh one.
async fn messages_in(connection: &Connection, queue: &str) -> Option<u32> {
    let channel = connection.create_channel().await.ok()?;
    let state = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .ok()?;
    let _ = channel.close(200, "probe".into()).await;
    Some(state.message_count())
}

fn url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[tokio::test]
async fn eight_orders_handled_and_two_dead_lettered() {
    let Ok(connection) = Connection::connect(&url(), ConnectionProperties::default()).await else {
        assert!(
            std::env::var("MAMEY_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "RabbitMQ is required"
        );
        eprintln!("SKIPPED: RabbitMQ unreachable");
        return;
    };
    let exchange = format!("example-{}", &mamey_core::new_id()[..8]);
    let queue = format!("consumer/{exchange}.order_placed");
    let env = [
        ("MAMEY__RABBITMQ__URL", url()),
        ("MAMEY__MESSAGING__CONVENTIONS__EXCHANGE", exchange.clone()),
        ("MAMEY__MESSAGING__RETRY__INITIAL_DELAY", "100ms".to_owned()),
        ("MAMEY_CONFIG_DIR", "/nonexistent-mamey-config".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ];

    let mut consumer = Command::new(env!("CARGO_BIN_EXE_consumer"));
    consumer.envs(env.iter().cloned()).stdout(Stdio::piped());
    let mut consumer = KillOnDrop(consumer.spawn().unwrap());
    // The publisher's mandatory publishes need the consumer's queue bound.
    let deadline = Instant::now() + Duration::from_secs(30);
    while messages_in(&connection, &queue).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the consumer never declared its queue"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let published = Command::new(env!("CARGO_BIN_EXE_publisher"))
        .args(["--orders", "10"])
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    assert!(published.status.success(), "{published:?}");
    assert!(String::from_utf8_lossy(&published.stdout).contains("published 10 orders"));

    // Two invalid orders reach the dead-letter queue; the valid ones are
    // handled, some after retries.
    let dlq = format!("{queue}.dlq");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dead = messages_in(&connection, &dlq).await.unwrap_or(0);
        let mut pending = messages_in(&connection, &queue).await.unwrap_or(0);
        for n in 1..=3 {
            pending += messages_in(&connection, &format!("{queue}.retry.{n}"))
                .await
                .unwrap_or(0);
        }
        if dead == 2 && pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dead letters {dead}, pending {pending}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Command::new("kill")
        .args(["-TERM", &consumer.0.id().to_string()])
        .status()
        .unwrap();
    let output = std::mem::replace(&mut consumer.0, Command::new("true").spawn().unwrap())
        .wait_with_output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("handled 8 orders"), "{stdout}");

    let channel = connection.create_channel().await.unwrap();
    let _ = channel
        .queue_purge(dlq.as_str().into(), QueuePurgeOptions::default())
        .await;
    for q in [
        queue.clone(),
        dlq,
        format!("{queue}.retry.1"),
        format!("{queue}.retry.2"),
        format!("{queue}.retry.3"),
    ] {
        if let Err(error) = channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
        {
            eprintln!("cleanup: deleting {q}: {error}");
        }
    }
    let _ = channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
}

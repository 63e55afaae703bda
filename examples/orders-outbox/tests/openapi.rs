//! Fuzzes the `/openapi.json` of `orders` with mamey-http's seeded fuzzer,
//! against the real Postgres and RabbitMQ: every answer must be one the
//! document lists, errors problem+json, and orders that fit the document
//! must not be refused as bad input. The run has its own schemas (dropped
//! when the example stops) and exchange (deleted here).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mamey_http::testing::OpenApiFuzz;

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_answers_as_its_document_says() {
    let Some(broker) = support::broker().await else {
        return;
    };
    let id = mamey_core::new_id()[..8].to_owned();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_orders-outbox"))
            .env("RUN_ID", &id)
            .env("ORDERS_ADDRESS", "127.0.0.1:0")
            .env("MAMEY__RABBITMQ__URL", support::amqp_url())
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("it started");
    let orders = first
        .strip_prefix("orders on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();

    let report = OpenApiFuzz::new(orders).seed(42).rounds(60).run().await;

    // Stop it (it drops its schemas on the way out), then clean the broker,
    // then judge.
    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let sent = Instant::now();
    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(30),
            "still running 30 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    support::delete_run(&broker, &id).await;
    let _ = broker.close(200, "done".into()).await;

    let report = report.unwrap_or_else(|e| panic!("orders: {e}"));
    println!("orders: {report}");
    // Both operations were exercised.
    assert_eq!(report.statuses.len(), 2, "{report}");
    assert!(exit.success(), "{exit:?}");
}

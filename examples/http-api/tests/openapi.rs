//! Fuzzes the `/openapi.json` of both services the example serves (orders
//! and pricing) with mamey-http's seeded fuzzer: every answer must be one
//! the document lists, errors problem+json, and requests that fit the
//! document must not be refused as bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use mamey_http::testing::OpenApiFuzz;

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn both_services_answer_as_their_documents_say() {
    let pricing = format!("127.0.0.1:{}", free_port());
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_http-api"))
            .env("ORDERS_ADDRESS", "127.0.0.1:0")
            .env("PRICING_ADDRESS", &pricing)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // It prints where orders serves, then a clerk's and a manager's token.
    let stdout = child.0.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || lines.recv_timeout(Duration::from_secs(30)).expect("a line");
    let first = next();
    let orders = first
        .strip_prefix("orders on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let clerk = next().rsplit(' ').next().unwrap().to_owned();
    let manager = next().rsplit(' ').next().unwrap().to_owned();

    let report = OpenApiFuzz::new(orders)
        .seed(42)
        .rounds(60)
        .token(clerk)
        .token(manager)
        .run()
        .await
        .unwrap_or_else(|e| panic!("orders: {e}"));
    println!("orders: {report}");
    assert!(report.statuses.len() >= 4, "{report}");

    let report = OpenApiFuzz::new(format!("http://{pricing}"))
        .seed(42)
        .rounds(60)
        .run()
        .await
        .unwrap_or_else(|e| panic!("pricing: {e}"));
    println!("pricing: {report}");
    assert!(!report.statuses.is_empty(), "{report}");
    drop(child);
}

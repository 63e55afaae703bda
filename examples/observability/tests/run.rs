//! Runs the example: it serves metrics with its handler's RED series and
//! exits 0 on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct KillOnDrop(Child);

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

fn scrape(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[test]
#[cfg(unix)]
fn serves_red_metrics_and_stops_on_sigterm() {
    let port = free_port();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_observability-example"))
            .env("MAMEY_PROFILE", "prod")
            .env("MAMEY__METRICS__LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });

    // Poll until the handler's series show both outcomes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        if let Some(body) = scrape(port)
            && body.contains(r#"outcome="conflict""#)
            && body.contains(r#"outcome="ok""#)
        {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed both outcomes"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        metrics
            .contains(r#"handler_dispatches_total{kind="command",name="PlaceOrder",outcome="ok",service_name="shop"}"#)
    );
    assert!(metrics.contains(r#"orders_total{status="placed",service_name="shop"}"#));
    assert!(metrics.contains("process_resident_memory_bytes"));

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let sent = Instant::now();
    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(exit.success(), "{exit:?}");

    // The prod profile logs JSON lines with the service fields.
    let lines = lines.join().unwrap();
    let placed = lines
        .iter()
        .find(|l| l.contains("order placed"))
        .expect("an order was logged");
    assert!(
        placed.starts_with('{') && placed.contains(r#""service":"shop""#),
        "{placed}"
    );
    assert!(placed.contains(r#""correlation_id":"#), "{placed}");
}

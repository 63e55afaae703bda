//! Runs the example against the etcd at 127.0.0.1:2379 and checks what it
//! prints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;

#[test]
fn the_load_spreads_and_moves_off_the_stopped_instance() {
    if TcpStream::connect("127.0.0.1:2379").is_err() {
        assert!(
            std::env::var("MAMEY_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "etcd is required (MAMEY_REQUIRE_SERVICES=1) but 127.0.0.1:2379 is closed"
        );
        eprintln!("SKIPPED: no etcd on 127.0.0.1:2379 (scripts/services.sh up etcd)");
        return;
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_discovery-example"))
        .env("RUST_LOG", "warn")
        .env_remove("CONSUL_HTTP_ADDR")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let spreads: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("spread over 100 calls:"))
        .collect();
    assert_eq!(spreads.len(), 2, "{stdout}");
    let counts = |line: &str| -> Vec<(String, usize)> {
        line["spread over 100 calls:".len()..]
            .split_whitespace()
            .map(|part| {
                let (who, n) = part.split_once('=').unwrap();
                (who.to_owned(), n.parse().unwrap())
            })
            .collect()
    };
    let before = counts(spreads[0]);
    assert_eq!(
        before.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>(),
        ["a", "b"],
        "{stdout}"
    );
    assert!(before.iter().all(|(_, n)| *n >= 20), "uneven: {stdout}");
    assert_eq!(counts(spreads[1]), [("b".to_owned(), 100)], "{stdout}");
}

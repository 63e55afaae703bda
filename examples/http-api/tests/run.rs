//! Runs the example's demo and checks each answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn the_demo_walks_through_auth_validation_and_the_dsl() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_http-api"))
        .arg("--demo")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in {stdout}"))
            .to_owned()
    };
    assert!(
        line("place without a token:").contains("-> 401"),
        "{stdout}"
    );
    let placed = line("place as clerk:");
    assert!(placed.contains("-> 201 (Location: /orders/1)"), "{stdout}");
    assert!(line("place it again:").contains("-> 409"), "{stdout}");
    let invalid = line("place an invalid order:");
    assert!(invalid.contains("-> 422"), "{stdout}");
    assert!(
        invalid.contains("\"field\":\"customer\"") && invalid.contains("\"field\":\"quantity\""),
        "{invalid}"
    );
    let got = line("get it:");
    assert!(got.contains("-> 200"), "{stdout}");
    assert!(
        got.contains("\"placed_by\":\"carol\""),
        "the caller's identity reached the handler: {got}"
    );
    assert!(
        got.contains("\"total_cents\":"),
        "priced by the pricing service: {got}"
    );
    assert!(line("list ada's:").contains("-> 200 [{"), "{stdout}");
    assert!(line("cancel as clerk:").contains("-> 403"), "{stdout}");
    assert!(line("cancel as manager:").contains("-> 204"), "{stdout}");
    assert!(line("get it again:").contains("-> 404"), "{stdout}");
    // The SKU travels to pricing as one percent-encoded path segment: priced
    // as `A?x=1#f/B`, not as `A` (query), nor at another route (`/B`).
    assert!(line("place an odd sku:").contains("-> 201"), "{stdout}");
    let expected = 100 + "A?x=1#f/B".bytes().map(u64::from).sum::<u64>() % 900;
    let odd = line("get the odd one:");
    assert!(
        odd.contains(&format!("\"total_cents\":{expected}")),
        "expected {expected}: {odd}"
    );
    let openapi = line("openapi:");
    for operation in [
        "GET /orders/{id}",
        "GET /orders",
        "POST /orders",
        "DELETE /orders/{id}",
    ] {
        assert!(openapi.contains(operation), "{openapi}");
    }
}

/// Serves until SIGTERM, then both services stop and the process exits 0.
#[test]
#[cfg(unix)]
fn serves_until_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_http-api"))
            .env("ORDERS_ADDRESS", "127.0.0.1:0")
            .env("PRICING_ADDRESS", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The first line says where it serves; it is printed once both run.
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
        .recv_timeout(Duration::from_secs(30))
        .expect("it started");
    assert!(first.starts_with("orders on http://127.0.0.1:"), "{first}");

    let sent = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(exit.success(), "{exit:?}");
}

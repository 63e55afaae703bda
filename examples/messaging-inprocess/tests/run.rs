//! Runs the example to completion and checks its report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn ten_orders_ship_or_dead_letter() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_messaging-inprocess"))
        .args(["--orders", "10"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("placed 10, shipped 8, dead-lettered 2"),
        "{stdout}"
    );
    let dead: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("dead letter "))
        .collect();
    assert_eq!(dead.len(), 2, "{stdout}");
    assert!(
        dead.iter()
            .all(|l| l.ends_with("quantity must be positive")),
        "{stdout}"
    );
}

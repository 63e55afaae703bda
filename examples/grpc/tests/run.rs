//! Runs the example's demo and checks each answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn the_demo_places_and_reads_orders_over_grpc() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_grpc-example"))
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
    assert_eq!(
        line("health:"),
        "health: ok HealthCheckResponse { status: Serving }"
    );
    assert!(
        line("place without a token:").contains("Unauthenticated"),
        "{stdout}"
    );
    assert!(
        line("place as ada:").contains("ok PlaceOrderReply { id: 7 }"),
        "{stdout}"
    );
    assert!(
        line("place it again:").contains("AlreadyExists (order.exists)"),
        "{stdout}"
    );
    assert!(
        line("place an invalid order:").contains("InvalidArgument (order.quantity)"),
        "{stdout}"
    );
    let got = line("get it:");
    assert!(
        got.contains("placed_by: \"ada\""),
        "the caller's identity reached the handler: {got}"
    );
    assert!(
        line("get another:").contains("NotFound (order.not_found)"),
        "{stdout}"
    );
}

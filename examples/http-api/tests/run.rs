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
    assert!(placed.contains("-> 201"), "{stdout}");
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

//! Runs the example's demo against the real Postgres and RabbitMQ, checks
//! each answer, and deletes the queues and exchange the run declared (the
//! demo drops its own schemas).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[tokio::test]
async fn orders_are_charged_once_each_even_when_an_event_is_redelivered() {
    let Some(broker) = support::broker().await else {
        return;
    };
    let id = mamey_core::new_id()[..8].to_owned();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_orders-outbox"))
        .arg("--demo")
        .env("RUN_ID", &id)
        .env("MAMEY__RABBITMQ__URL", support::amqp_url())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();

    // Clean up the broker before judging the run.
    support::delete_run(&broker, &id).await;
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
    // Messages carry Convey's camelCase field names; the HTTP body keeps
    // its own (`total_cents`).
    assert_eq!(
        line("staged OrderPlaced:"),
        r#"staged OrderPlaced: {"id":1,"customer":"ada","totalCents":1250}"#
    );
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

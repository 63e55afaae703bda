//! Log lines: JSON and human formats, context fields, runtime level changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use mamey_core::{MessageContext, Service, ServiceError};
use mamey_observability::{LogLevel, Telemetry};
use serde_json::Value;
use support::{LogBuffer, grpc_receiver};

async fn service(vars: &[(&str, &str)], logs: &LogBuffer) -> Result<Service, ServiceError> {
    support::observed("checkout", vars, logs.clone())
        .version("1.4.2")
        .build()
        .await
}

fn json_lines(logs: &LogBuffer) -> Vec<Value> {
    logs.lines()
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_service_trace_and_correlation_fields() {
    let (endpoint, _got) = grpc_receiver().await;
    let logs = LogBuffer::default();
    let service = service(
        &[
            ("MAMEY__LOGGING__FORMAT", "json"),
            ("MAMEY__TRACING__ENDPOINT", endpoint.as_str()),
            ("MAMEY__TRACING__SAMPLER", "always"),
        ],
        &logs,
    )
    .await
    .unwrap();
    let telemetry = service.resources().get::<Telemetry>().unwrap();
    let ctx = MessageContext::new().with_correlation_id("corr-77");
    {
        let _guard = tracing::dispatcher::set_default(telemetry.dispatch());
        ctx.clone()
            .scope(async {
                let span = tracing::info_span!("checkout.pay", order_id = 7);
                let _entered = span.enter();
                tracing::info!(amount = 12.5, paid = true, "payment taken");
            })
            .await;
    }
    let lines = json_lines(&logs);
    let line = lines
        .iter()
        .find(|l| l["message"] == "payment taken")
        .expect("the event was logged as JSON");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["amount"], 12.5);
    assert_eq!(line["paid"], true);
    assert_eq!(line["span"], "checkout.pay");
    assert_eq!(line["spans"]["order_id"], 7);
    assert_eq!(line["service"], "checkout");
    assert_eq!(line["version"], "1.4.2");
    assert_eq!(line["instance_id"], service.app().instance_id.as_str());
    assert_eq!(line["correlation_id"], "corr-77");
    assert_eq!(line["message_id"], ctx.message_id.as_str());
    let trace_id = line["trace_id"].as_str().expect("a trace id");
    assert_eq!(trace_id.len(), 32);
    assert_ne!(trace_id, "0".repeat(32));
    assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn dev_profile_logs_human_lines_with_correlation() {
    let logs = LogBuffer::default();
    let service = service(&[], &logs).await.unwrap();
    let telemetry = service.resources().get::<Telemetry>().unwrap();
    {
        let _guard = tracing::dispatcher::set_default(telemetry.dispatch());
        MessageContext::new()
            .with_correlation_id("corr-h")
            .scope(async { tracing::warn!(attempt = 2, "retrying") })
            .await;
    }
    let line = logs
        .lines()
        .into_iter()
        .find(|l| l.contains("retrying"))
        .unwrap();
    assert!(line.contains(" WARN "), "{line}");
    assert!(line.contains("attempt=2"), "{line}");
    assert!(line.contains("correlation_id=corr-h"), "{line}");
    assert!(!line.contains('\x1b'), "no colours into a buffer: {line}");
    assert!(serde_json::from_str::<Value>(&line).is_err(), "not JSON");
}

#[tokio::test]
async fn the_level_changes_at_runtime() {
    let logs = LogBuffer::default();
    let service = service(
        &[
            ("MAMEY__LOGGING__FORMAT", "json"),
            ("MAMEY__LOGGING__LEVEL", "info"),
            ("MAMEY__LOGGING__TARGETS__NOISY", "error"),
        ],
        &logs,
    )
    .await
    .unwrap();
    let telemetry = service.resources().get::<Telemetry>().unwrap();
    let level = service.resources().get::<LogLevel>().unwrap();
    assert_eq!(level.current(), "noisy=error,info");
    let _guard = tracing::dispatcher::set_default(telemetry.dispatch());

    tracing::info!(
        note = "a \"quoted\"\nline\twith \u{1} control",
        "escaped {}",
        '\\'
    );
    tracing::debug!("hidden at info");
    tracing::warn!(target: "noisy", "hidden below error");
    level.set("debug").unwrap();
    tracing::debug!("shown at debug");
    let error = level.set("info,[broken").unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("invalid log filter `info,[broken`"),
        "{error}"
    );
    assert_eq!(
        level.current(),
        "debug",
        "a bad directive keeps the old filter"
    );

    let messages: Vec<String> = json_lines(&logs)
        .iter()
        .filter_map(|l| l["message"].as_str().map(str::to_owned))
        .collect();
    assert!(
        !messages.iter().any(|m| m.starts_with("hidden")),
        "{messages:?}"
    );
    assert!(
        messages.contains(&"shown at debug".to_owned()),
        "{messages:?}"
    );
}

#[tokio::test]
async fn a_bad_level_in_config_names_the_key() {
    let logs = LogBuffer::default();
    let error = service(&[("MAMEY__LOGGING__LEVEL", "info,[oops")], &logs)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with(
            "plug-in `observability` failed to initialise: config key `logging.level` \
             (from environment variable `MAMEY__LOGGING__LEVEL`): invalid log filter"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn an_unknown_logging_key_is_rejected() {
    let logs = LogBuffer::default();
    let error = service(&[("MAMEY__LOGGING__LEVLE", "debug")], &logs)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("config key `logging.levle` (from environment variable `MAMEY__LOGGING__LEVLE`): unknown key"),
        "{error}"
    );
}

/// Text a caller sent, as an attacker writes it: a fake second line, a NUL
/// and a terminal escape.
const FORGED: &str = "A\n2026-12-03T23:59:00.000000Z ERROR pwn: forged\0\x1b[2J";

fn log_forged_values(telemetry: &Telemetry) {
    let _guard = tracing::dispatcher::set_default(telemetry.dispatch());
    let span = tracing::info_span!("request", path = FORGED);
    let _entered = span.enter();
    let error = std::io::Error::other(FORGED);
    tracing::warn!(sku = %FORGED, raw = FORGED, debug = ?FORGED, error = &error as &dyn std::error::Error, "bad sku {FORGED}");
}

#[tokio::test]
async fn human_lines_escape_control_characters_in_every_value() {
    let logs = LogBuffer::default();
    let service = service(&[], &logs).await.unwrap();
    let telemetry = service.resources().get::<Telemetry>().unwrap();
    MessageContext::new()
        .with_correlation_id(FORGED)
        .scope(async { log_forged_values(&telemetry) })
        .await;
    let lines = logs.lines();
    let ours: Vec<&String> = lines.iter().filter(|l| l.contains("bad sku")).collect();
    assert_eq!(ours.len(), 1, "one event, one line: {lines:#?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("2026-12-03T23:59")),
        "no forged line: {lines:#?}"
    );
    let line = ours[0];
    assert!(!line.contains('\0') && !line.contains('\x1b'), "{line:?}");
    // Message, `%`, plain, `?` and error values, the span field and the
    // correlation id: each escaped where it appears.
    assert!(
        line.matches("\\n2026-12-03T23:59:00.000000Z ERROR pwn")
            .count()
            >= 7,
        "{line}"
    );
    assert!(line.contains("\\u{0}\\u{1b}[2J"), "{line}");
}

#[tokio::test]
async fn json_lines_escape_control_characters_and_keep_the_text() {
    let logs = LogBuffer::default();
    let service = service(&[("MAMEY__LOGGING__FORMAT", "json")], &logs)
        .await
        .unwrap();
    let telemetry = service.resources().get::<Telemetry>().unwrap();
    MessageContext::new()
        .with_correlation_id(FORGED)
        .scope(async { log_forged_values(&telemetry) })
        .await;
    let raw = logs.lines();
    assert!(!raw.iter().any(|l| l.contains('\0') || l.contains('\x1b')));
    let line = json_lines(&logs)
        .into_iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("bad sku"))
        })
        .expect("the event's line");
    assert_eq!(line["sku"], FORGED);
    assert_eq!(line["raw"], FORGED);
    assert_eq!(line["correlation_id"], FORGED);
    assert_eq!(line["spans"]["path"], FORGED);
}

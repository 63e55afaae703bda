//! Runs the example in both modes against OpenBao and PostgreSQL and
//! checks what it prints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::process::Command;

fn servers_up() -> bool {
    let up = TcpStream::connect("127.0.0.1:8200").is_ok()
        && TcpStream::connect("127.0.0.1:5432").is_ok();
    if !up {
        assert!(
            std::env::var("MAMEY_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "OpenBao and PostgreSQL are required (MAMEY_REQUIRE_SERVICES=1)"
        );
        eprintln!("SKIPPED: OpenBao (scripts/services.sh up openbao) or PostgreSQL is not running");
    }
    up
}

fn run(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_secrets-vault"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("MAMEY_CONFIG_DIR")
        .env_remove("VAULT_ADDR")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn the_password_comes_from_vault_kv_and_never_prints() {
    if !servers_up() {
        return;
    }
    let stdout = run(&[]);
    assert!(
        stdout.contains("connected to Postgres as `postgres`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("printed configuration: password = \"[redacted]\""),
        "{stdout}"
    );
    assert!(!stdout.contains("example-password"), "{stdout}");
}

#[test]
fn dynamic_credentials_rotate_while_it_serves_with_no_failed_query() {
    if !servers_up() {
        return;
    }
    let stdout = run(&["--dynamic", "--seconds", "14"]);
    assert!(stdout.contains("rotation 1: new credentials"), "{stdout}");
    assert!(stdout.contains(", 0 failed, served as "), "{stdout}");
    let roles: usize = stdout
        .lines()
        .find_map(|l| l.split("served as ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(roles >= 2, "{stdout}");
}

//! Runs the real binary: it starts, logs where its configuration came from,
//! greets, and exits 0 promptly on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[test]
#[cfg(unix)]
fn starts_greets_and_exits_cleanly_on_sigterm() {
    let config_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_hello-core"))
            .env("MAMEY_CONFIG_DIR", config_dir)
            .env("MAMEY__GREETER__INTERVAL", "50ms")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the example binary runs"),
    );
    let child = &mut child.0;

    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut output = Vec::new();
    let mut wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    output.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => {
                    panic!("never saw {needle:?}; output:\n{}", output.join("\n"));
                }
            }
        }
    };
    wait_for("configuration loaded");
    wait_for("service started");
    wait_for("Hello, mamey!");

    let sent = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    eprintln!("exited {:?} after SIGTERM", sent.elapsed());
    assert!(exit.success(), "exit status {exit:?}");
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        output.push(line);
    }
    let output = output.join("\n");
    assert!(
        output.contains(&format!("{config_dir}/default.toml")),
        "the config source is logged:\n{output}"
    );
    assert!(output.contains("SIGTERM"), "{output}");
    assert!(output.contains("greeter stopping"), "{output}");
    assert!(output.contains("service stopped"), "{output}");
}

/// Kills the child if the test fails before it exits.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn print_config_shows_the_effective_configuration() {
    let output = Command::new(env!("CARGO_BIN_EXE_hello-core"))
        .arg("--print-config")
        .env(
            "MAMEY_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .env("MAMEY__GREETER__GREETING", "Hi")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(output.status.success());
    let effective: toml::Table = String::from_utf8(output.stdout).unwrap().parse().unwrap();
    assert_eq!(effective["greeter"]["greeting"].as_str(), Some("Hi"));
    assert_eq!(effective["greeter"]["interval"].as_str(), Some("500ms"));
    assert_eq!(effective["shutdown"]["timeout"].as_str(), Some("5s"));
    assert_eq!(effective["app"]["name"].as_str(), Some("hello-core"));
}

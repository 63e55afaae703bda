//! Connection loss: the broker force-closes every connection mid-stream and
//! no message is lost. Its own test binary, because closing every connection
//! would disturb tests running beside it.
#![cfg(feature = "rabbitmq")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rabbitmq_common;
mod suite;

use std::collections::HashSet;
use std::time::Duration;

use mamey_core::health::{Probe, Status};
use rabbitmq_common::Rabbit;
use suite::{OrderPlaced, Seen, eventually, service, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_is_lost_when_the_broker_closes_the_connection() {
    let Some(rabbit) = Rabbit::new().await else {
        return;
    };
    let seen = Seen::default();
    let running = start(service(&rabbit, &seen, Some(0), Duration::ZERO)).await;
    // Readiness, sampled every millisecond from before the connections close
    // until the end: it must drop while the connection is down.
    let ready = running.health.clone();
    let sampling = tokio::spawn(async move {
        let mut seen_not_ready = false;
        loop {
            let healthy = ready.check(Probe::Ready).await.status == Status::Healthy;
            seen_not_ready |= !healthy;
            if seen_not_ready && healthy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let total = 300_u64;
    for id in 0..total {
        if id == 100 {
            let status = tokio::process::Command::new("rabbitmqctl")
                .args(["close_all_connections", "test: forced close"])
                .status()
                .await
                .expect("rabbitmqctl runs");
            assert!(status.success());
        }
        running
            .publisher
            .publish(&OrderPlaced { id })
            .await
            .unwrap_or_else(|e| panic!("publish {id} failed: {e}"));
    }
    eventually("every message", || {
        let seen = seen.clone();
        async move {
            let unique: HashSet<u64> = seen.ids.lock().unwrap().iter().copied().collect();
            unique.len() == usize::try_from(total).unwrap()
        }
    })
    .await;
    // Not ready while disconnected, ready again once recovered.
    tokio::time::timeout(Duration::from_secs(30), sampling)
        .await
        .expect("readiness drops while disconnected and comes back")
        .unwrap();
    running.stop().await;
    rabbit.clean().await;
}

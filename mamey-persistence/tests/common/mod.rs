//! What the store tests share: the message they stage, a subscriber that
//! records deliveries, a publisher, polling with a deadline, and the
//! databases of one test (`pg`: a Postgres pool and statements run at the
//! end; `sqlite`: a database file of its own).
#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[cfg(feature = "postgres")]
pub mod pg;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::time::Duration;

#[cfg(feature = "outbox")]
pub use messages::{Paid, publish_a_redelivery, publisher, record_deliveries};
#[cfg(all(feature = "outbox", any(feature = "postgres", feature = "sqlite")))]
pub use transactions::{record_in, stage, stage_in};

/// Polls `check` every 10 ms until it holds; fails the test after 15 s.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The message the stores stage, and where it goes.
#[cfg(feature = "outbox")]
mod messages {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures_util::FutureExt;
    use mamey_core::cqrs::Event;
    use mamey_messaging::{
        Broker, Delivery, MemoryBroker, Message, PublishOptions, Publisher, RetryPolicy, Route,
        Subscription,
    };
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Paid {
        pub invoice: u32,
    }

    impl Message for Paid {
        const NAMESPACE: &'static str = "payments";
    }

    impl Event for Paid {}

    /// Records the ids of `Paid` messages published on `broker`.
    pub async fn record_deliveries(broker: &MemoryBroker) -> Arc<Mutex<Vec<String>>> {
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        broker
            .subscribe(Subscription {
                queue: "recorder/payments.paid".into(),
                binding: Route {
                    exchange: "payments".into(),
                    routing_key: "paid".into(),
                },
                message: "Paid",
                handler: Arc::new(move |delivery: Delivery| {
                    let sink = Arc::clone(&sink);
                    async move {
                        sink.lock().unwrap().push(delivery.properties.message_id);
                        Ok(())
                    }
                    .boxed()
                }),
                retry: RetryPolicy::default(),
                concurrency: 4,
                handler_timeout: Duration::from_secs(5),
            })
            .await
            .unwrap();
        received
    }

    /// Publishes `Paid { invoice: 9 }` twice with one message id (a
    /// publisher's retry, a broker's redelivery), then `Paid { invoice: 10 }`:
    /// three deliveries, two messages.
    pub async fn publish_a_redelivery(publisher: &Publisher) {
        let options = PublishOptions {
            message_id: Some(mamey_core::new_id()),
            ..PublishOptions::default()
        };
        for _ in 0..2 {
            publisher
                .publish_with(&Paid { invoice: 9 }, options.clone())
                .await
                .unwrap();
        }
        publisher.publish(&Paid { invoice: 10 }).await.unwrap();
    }

    pub fn publisher(broker: &MemoryBroker) -> Publisher {
        Publisher::new(
            Arc::new(broker.clone()),
            Arc::new(mamey_messaging::Conventions::new("billing")),
        )
    }
}

/// Staging and recording in a transaction of a sqlx pool, the same on
/// Postgres and SQLite.
#[cfg(all(feature = "outbox", any(feature = "postgres", feature = "sqlite")))]
mod transactions {
    use mamey_messaging::{
        InboxStore, OutboxStore, OutgoingMessage, PublishOptions, Publisher, StoreError,
    };

    use super::Paid;

    /// Stages `messages` with `outbox` in one transaction of `pool`,
    /// committed if `commit`, else rolled back.
    pub async fn stage_in<DB, O>(
        pool: &sqlx::Pool<DB>,
        outbox: &O,
        messages: Vec<OutgoingMessage>,
        commit: bool,
    ) -> Result<(), StoreError>
    where
        DB: sqlx::Database,
        O: for<'t> OutboxStore<Transaction<'t> = DB::Connection>,
    {
        let mut tx = pool.begin().await.unwrap();
        for message in messages {
            outbox.stage(&mut *tx, message).await?;
        }
        if commit {
            tx.commit().await.unwrap();
        }
        Ok(())
    }

    /// Records `message_id` for `consumer` in a transaction of `pool`,
    /// committed if `commit`, else rolled back.
    pub async fn record_in<DB, I>(
        pool: &sqlx::Pool<DB>,
        inbox: &I,
        consumer: &str,
        message_id: &str,
        commit: bool,
    ) -> Result<bool, StoreError>
    where
        DB: sqlx::Database,
        I: for<'t> InboxStore<Transaction<'t> = DB::Connection>,
    {
        let mut tx = pool.begin().await.unwrap();
        let first = inbox.record(&mut *tx, consumer, message_id).await?;
        if commit {
            tx.commit().await.unwrap();
        }
        Ok(first)
    }

    /// Stages `count` `Paid` messages prepared by `publisher` in one
    /// committed transaction; returns their ids.
    pub async fn stage<DB, O>(
        pool: &sqlx::Pool<DB>,
        outbox: &O,
        publisher: &Publisher,
        count: u32,
    ) -> Vec<String>
    where
        DB: sqlx::Database,
        O: for<'t> OutboxStore<Transaction<'t> = DB::Connection>,
    {
        let messages: Vec<OutgoingMessage> = (0..count)
            .map(|invoice| {
                publisher
                    .prepare(&Paid { invoice }, PublishOptions::default())
                    .unwrap()
            })
            .collect();
        let ids = messages
            .iter()
            .map(|m| m.properties.message_id.clone())
            .collect();
        stage_in(pool, outbox, messages, true).await.unwrap();
        ids
    }
}

//! The outbox and inbox behaviour suite (`store_suite/`) on every store:
//! mamey-messaging's in-memory stores (the reference), Postgres (a schema of
//! the test's own, dropped at the end; skipped when the server is away
//! unless `MAMEY_REQUIRE_SERVICES=1`) and SQLite (a file of the test's own
//! in a temporary directory).
#![cfg(feature = "outbox")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod store_suite;

mod memory {
    use mamey_messaging::{
        InboxStore, MemoryInbox, MemoryOutbox, OutboxStore, OutgoingMessage, StoreError,
    };

    use crate::store_suite::{Fixture, store_suite};

    /// The in-memory stores: clones share the messages.
    struct Memory {
        outbox: MemoryOutbox,
        inbox: MemoryInbox,
    }

    impl Fixture for Memory {
        type Outbox = MemoryOutbox;
        type Inbox = MemoryInbox;
        const TRANSACTIONAL: bool = false;

        async fn fresh() -> Option<Self> {
            Some(Self {
                outbox: MemoryOutbox::new(),
                inbox: MemoryInbox::new(),
            })
        }

        async fn outbox(&self) -> MemoryOutbox {
            self.outbox.clone()
        }

        fn inbox(&self) -> MemoryInbox {
            self.inbox.clone()
        }

        async fn stage(
            &self,
            outbox: &MemoryOutbox,
            messages: Vec<OutgoingMessage>,
            _commit: bool,
        ) -> Result<(), StoreError> {
            for message in messages {
                outbox.stage(&mut (), message).await?;
            }
            Ok(())
        }

        async fn record(
            &self,
            inbox: &MemoryInbox,
            consumer: &str,
            message_id: &str,
            _commit: bool,
        ) -> Result<bool, StoreError> {
            inbox.record(&mut (), consumer, message_id).await
        }

        async fn pending(&self) -> u64 {
            self.outbox.pending() as u64
        }
    }

    store_suite!(Memory);
}

#[cfg(feature = "postgres")]
mod postgres {
    use mamey_messaging::{OutgoingMessage, StoreError};
    use mamey_persistence::postgres::{PgInbox, PgOutbox, PgPool};

    use crate::common::pg::{Schema, pool};
    use crate::common::{record_in, stage_in};
    use crate::store_suite::{Fixture, store_suite};

    /// Tables in a schema of the test's own, dropped with it.
    struct Postgres {
        pool: PgPool,
        schema: Schema,
    }

    impl Postgres {
        fn outbox_table(&self) -> String {
            self.schema.table("outbox")
        }
    }

    impl Fixture for Postgres {
        type Outbox = PgOutbox;
        type Inbox = PgInbox;
        const TRANSACTIONAL: bool = true;

        async fn fresh() -> Option<Self> {
            let pool = pool().await?;
            let schema = Schema::new(&pool).await;
            let store = Self { pool, schema };
            store.outbox().await.create_table().await.unwrap();
            store.inbox().create_table().await.unwrap();
            Some(store)
        }

        async fn outbox(&self) -> PgOutbox {
            PgOutbox::new(self.pool.clone(), &self.outbox_table())
        }

        fn inbox(&self) -> PgInbox {
            PgInbox::new(self.pool.clone(), &self.schema.table("inbox"))
        }

        async fn stage(
            &self,
            outbox: &PgOutbox,
            messages: Vec<OutgoingMessage>,
            commit: bool,
        ) -> Result<(), StoreError> {
            stage_in(&self.pool, outbox, messages, commit).await
        }

        async fn record(
            &self,
            inbox: &PgInbox,
            consumer: &str,
            message_id: &str,
            commit: bool,
        ) -> Result<bool, StoreError> {
            record_in(&self.pool, inbox, consumer, message_id, commit).await
        }

        async fn pending(&self) -> u64 {
            self.outbox().await.pending().await.unwrap()
        }
    }

    store_suite!(Postgres);
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use mamey_messaging::{OutgoingMessage, StoreError};
    use mamey_persistence::sqlite::{SqliteInbox, SqliteOutbox, SqlitePool};

    use crate::common::sqlite::Db;
    use crate::common::{record_in, stage_in};
    use crate::store_suite::{Fixture, store_suite};

    /// A database file of the test's own; each outbox has a pool of its
    /// own on it, as each process would.
    struct Sqlite {
        db: Db,
        pool: SqlitePool,
    }

    impl Fixture for Sqlite {
        type Outbox = SqliteOutbox;
        type Inbox = SqliteInbox;
        const TRANSACTIONAL: bool = true;

        async fn fresh() -> Option<Self> {
            let db = Db::new();
            let pool = db.pool().await;
            let store = Self { db, pool };
            store.outbox().await.create_table().await.unwrap();
            store.inbox().create_table().await.unwrap();
            Some(store)
        }

        async fn outbox(&self) -> SqliteOutbox {
            SqliteOutbox::new(self.db.pool().await, "outbox")
        }

        fn inbox(&self) -> SqliteInbox {
            SqliteInbox::new(self.pool.clone(), "inbox")
        }

        async fn stage(
            &self,
            outbox: &SqliteOutbox,
            messages: Vec<OutgoingMessage>,
            commit: bool,
        ) -> Result<(), StoreError> {
            stage_in(&self.pool, outbox, messages, commit).await
        }

        async fn record(
            &self,
            inbox: &SqliteInbox,
            consumer: &str,
            message_id: &str,
            commit: bool,
        ) -> Result<bool, StoreError> {
            record_in(&self.pool, inbox, consumer, message_id, commit).await
        }

        async fn pending(&self) -> u64 {
            SqliteOutbox::new(self.pool.clone(), "outbox")
                .pending()
                .await
                .unwrap()
        }
    }

    store_suite!(Sqlite);
}

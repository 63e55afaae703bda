//! The outbox and inbox traits, implemented by a store that wraps the
//! in-memory ones and counts what passes through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mamey_messaging::{MemoryInbox, MemoryOutbox, OutboxEntry, OutgoingMessage};

// ANCHOR: stores
use std::time::{Duration, SystemTime};

use mamey_messaging::{InboxStore, OutboxStore, StoreError};
use tokio::sync::Notify;

/// An outbox that counts the messages staged in it.
#[derive(Debug, Clone, Default)]
pub struct CountingOutbox {
    inner: MemoryOutbox,
    staged: Arc<AtomicU64>,
}

impl OutboxStore for CountingOutbox {
    type Transaction<'t> = (); // e.g. a connection in a sqlx::Transaction

    async fn stage(
        &self,
        tx: &mut Self::Transaction<'_>,
        message: OutgoingMessage,
    ) -> Result<(), StoreError> {
        self.staged.fetch_add(1, Ordering::Relaxed);
        self.inner.stage(tx, message).await
    }

    async fn claim(&self, batch: usize, lease: Duration) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.claim(batch, lease).await
    }

    // Settling acts under the claim's token (`OutboxEntry::claim`); the ids
    // returned (or `false`) are those another claim took over meanwhile.
    async fn mark_sent(
        &self,
        claim: &str,
        message_ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        self.inner.mark_sent(claim, message_ids).await
    }

    async fn release(
        &self,
        claim: &str,
        message_ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        self.inner.release(claim, message_ids).await
    }

    async fn retry_later(
        &self,
        claim: &str,
        message_id: &str,
        error: &str,
        not_before: SystemTime,
    ) -> Result<bool, StoreError> {
        self.inner
            .retry_later(claim, message_id, error, not_before)
            .await
    }

    async fn purge_sent(&self, before: SystemTime) -> Result<u64, StoreError> {
        self.inner.purge_sent(before).await
    }

    // Notified when messages may have been staged.
    fn staged(&self) -> Arc<Notify> {
        self.inner.staged()
    }
}

/// An inbox that counts the messages it has seen twice.
#[derive(Debug, Clone, Default)]
pub struct CountingInbox {
    inner: MemoryInbox,
    repeats: Arc<AtomicU64>,
}

impl InboxStore for CountingInbox {
    type Transaction<'t> = ();

    // false when `consumer` has already recorded `message_id`: skip the message.
    async fn record(
        &self,
        tx: &mut Self::Transaction<'_>,
        consumer: &str,
        message_id: &str,
    ) -> Result<bool, StoreError> {
        let first = self.inner.record(tx, consumer, message_id).await?;
        if !first {
            self.repeats.fetch_add(1, Ordering::Relaxed);
        }
        Ok(first)
    }
}
// ANCHOR_END: stores

impl CountingOutbox {
    /// How many messages were staged.
    pub fn count(&self) -> u64 {
        self.staged.load(Ordering::Relaxed)
    }
}

impl CountingInbox {
    /// How many messages were recorded a second time.
    pub fn repeats(&self) -> u64 {
        self.repeats.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use mamey_messaging::InboxStore;

    use super::CountingInbox;

    #[tokio::test]
    async fn a_second_record_is_a_repeat() -> Result<(), mamey_messaging::StoreError> {
        let inbox = CountingInbox::default();
        assert!(inbox.record(&mut (), "billing", "m-1").await?);
        assert!(!inbox.record(&mut (), "billing", "m-1").await?);
        assert_eq!(inbox.repeats(), 1);
        Ok(())
    }
}

//! What a unit of work (mamey-persistence's `Tx`) needs from messaging: the
//! messages the handler publishes, to stage them in the outbox of its
//! transaction, and the delivery being handled, to record it in the inbox
//! in that same transaction.
//!
//! A unit of work calls [`collect_published`] when it begins: from then on,
//! [`Publisher::publish`](crate::Publisher::publish) in the same handler
//! call prepares each message and keeps it instead of sending it, and
//! [`take_published`] hands them over when the unit of work commits. A
//! handler that fails, or panics, publishes nothing.

use std::future::Future;

use mamey_core::cqrs::call;

use crate::message::OutgoingMessage;

/// The messages published in the current unit of work.
#[derive(Debug, Default)]
struct Published(Vec<OutgoingMessage>);

/// From now until the current handler call ends, keeps the messages
/// published in it for [`take_published`]. Returns `false` outside a
/// handler call.
pub fn collect_published() -> bool {
    call::insert(Published::default())
}

/// The messages published since [`collect_published`], in order.
#[must_use]
pub fn take_published() -> Vec<OutgoingMessage> {
    call::take::<Published>()
        .map(|published| published.0)
        .unwrap_or_default()
}

/// Keeps `message` for the unit of work, or gives it back when there is
/// none to send it now.
pub(crate) fn keep(message: OutgoingMessage) -> Option<OutgoingMessage> {
    let mut message = Some(message);
    call::with::<Published, _>(|published| {
        if let Some(message) = message.take() {
            published.0.push(message);
        }
    });
    message
}

/// The broker delivery a handler is called for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    /// The consuming service (`app.name`).
    pub service: String,
    /// The delivery's message id.
    pub message_id: String,
}

tokio::task_local! {
    static CONSUMED: Consumed;
}

/// The delivery being handled, when the current task is handling one.
#[must_use]
pub fn consumed() -> Option<Consumed> {
    CONSUMED.try_with(Clone::clone).ok()
}

/// Runs `handling` as the handling of `consumed`.
pub(crate) async fn consuming<F: Future>(consumed: Consumed, handling: F) -> F::Output {
    CONSUMED.scope(consumed, handling).await
}

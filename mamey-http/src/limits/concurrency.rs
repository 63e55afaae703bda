//! Requests in progress at once: per route and across all routes, each a
//! counter of slots that is tried (or waited on for at most
//! `queue_timeout`), never queued on without bound.
//!
//! A counter rather than a tokio `Semaphore`: giving a permit back always
//! locks the semaphore's waiter list, and this runs on every request; a
//! counter locks nothing unless requests are waiting.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The concurrency limits of one server.
#[derive(Debug)]
pub(crate) struct Concurrency {
    global: Option<Limit>,
    /// Route template → index into `limits`.
    routes: HashMap<Box<str>, usize>,
    limits: Box<[Limit]>,
    pub(crate) queue_timeout: Duration,
}

/// The slots a request holds, given back with [`Concurrency::release`].
#[derive(Debug)]
pub(crate) struct Slots {
    route: Option<usize>,
    global: bool,
}

impl Concurrency {
    /// `global` requests at most across routes, and each route's own.
    pub(crate) fn new(
        global: Option<usize>,
        routes: impl IntoIterator<Item = (String, usize)>,
        queue_timeout: Duration,
    ) -> Self {
        let (mut index, mut limits) = (HashMap::new(), Vec::new());
        for (template, max) in routes {
            index.insert(template.into_boxed_str(), limits.len());
            limits.push(Limit::new(max));
        }
        Self {
            global: global.map(Limit::new),
            routes: index,
            limits: limits.into_boxed_slice(),
            queue_timeout,
        }
    }

    /// The limit of the route with this template, if it has one.
    pub(crate) fn route(&self, template: &str) -> Option<usize> {
        if self.routes.is_empty() {
            return None;
        }
        self.routes.get(template).copied()
    }

    /// Whether any limit is set.
    #[cfg(any(feature = "grpc", test))]
    pub(crate) fn is_limited(&self) -> bool {
        self.global.is_some() || !self.limits.is_empty()
    }

    /// The route's slot and a global one, if both are free now.
    pub(crate) fn try_take(&self, route: Option<usize>) -> Option<Slots> {
        let own = route.map(|index| &self.limits[index]);
        if let Some(own) = own
            && !own.try_take()
        {
            return None;
        }
        if let Some(global) = &self.global
            && !global.try_take()
        {
            if let Some(own) = own {
                own.release();
            }
            return None;
        }
        Some(self.slots(route))
    }

    /// The route's slot and then a global one, waiting for each until
    /// `queue_timeout` has passed since the call.
    pub(crate) async fn take(&self, route: Option<usize>) -> Option<Slots> {
        let deadline = tokio::time::Instant::now() + self.queue_timeout;
        // Held as guards until both are taken: a request dropped while
        // waiting gives back what it took.
        let own = match route {
            Some(index) => Some(self.limits[index].take(deadline).await?),
            None => None,
        };
        let global = match &self.global {
            Some(global) => Some(global.take(deadline).await?),
            None => None,
        };
        for taken in [own, global].into_iter().flatten() {
            std::mem::forget(taken);
        }
        Some(self.slots(route))
    }

    fn slots(&self, route: Option<usize>) -> Slots {
        Slots {
            route,
            global: self.global.is_some(),
        }
    }

    /// Gives `slots` back.
    pub(crate) fn release(&self, slots: &Slots) {
        if let Some(index) = slots.route {
            self.limits[index].release();
        }
        if slots.global
            && let Some(global) = &self.global
        {
            global.release();
        }
    }
}

/// At most `max` slots taken at once.
#[derive(Debug)]
struct Limit {
    max: usize,
    taken: AtomicUsize,
    /// Requests waiting for a slot; only then are releases announced.
    waiting: AtomicUsize,
    released: Notify,
}

impl Limit {
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            taken: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            released: Notify::new(),
        }
    }

    fn try_take(&self) -> bool {
        self.taken
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |taken| {
                (taken < self.max).then_some(taken + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        // All SeqCst, as the waiter's steps: either it sees the slot free,
        // or this sees it waiting.
        self.taken.fetch_sub(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.released.notify_one();
        }
    }

    /// A slot, waiting for one until `deadline`.
    async fn take(&self, deadline: tokio::time::Instant) -> Option<Taken<'_>> {
        if self.try_take() {
            return Some(Taken(self));
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(self);
        loop {
            let mut released = pin!(self.released.notified());
            // Registered before looking, so a release in between wakes it.
            released.as_mut().enable();
            if self.try_take() {
                return Some(Taken(self));
            }
            tokio::time::timeout_at(deadline, released).await.ok()?;
        }
    }
}

/// A slot taken while waiting, given back if the request goes away first.
struct Taken<'a>(&'a Limit);

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// One request waiting for a slot of the limit.
struct Waiting<'a>(&'a Limit);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn routes_and_the_whole_server_are_limited_and_slots_come_back() {
        let limits = Concurrency::new(
            Some(2),
            [("/slow".to_owned(), 1)],
            Duration::from_millis(20),
        );
        let slow = limits.route("/slow");
        assert!(slow.is_some() && limits.route("/other").is_none());

        let first = limits.try_take(slow).unwrap();
        assert!(limits.try_take(slow).is_none(), "the route is full");
        assert!(
            limits.take(slow).await.is_none(),
            "and stays so past the wait"
        );
        let other = limits.try_take(None).unwrap();
        assert!(limits.try_take(None).is_none(), "the server is full");

        limits.release(&first);
        let _third = limits.try_take(None).unwrap();
        assert!(limits.try_take(slow).is_none(), "the server is full again");
        limits.release(&other);
        assert!(
            limits.try_take(slow).is_some(),
            "the route's slot was not kept by the refused request"
        );
    }

    #[tokio::test]
    async fn a_waiting_request_gets_the_slot_given_back() {
        let limits = Arc::new(Concurrency::new(Some(1), [], Duration::from_secs(30)));
        let first = limits.try_take(None).unwrap();
        let waiter = tokio::spawn({
            let limits = Arc::clone(&limits);
            async move { limits.take(None).await.is_some() }
        });
        // Released once the waiter waits (or before: it then takes it at
        // once); either way it gets the slot.
        let global = limits.global.as_ref().unwrap();
        let waits = async {
            while global.waiting.load(Ordering::SeqCst) == 0 && !waiter.is_finished() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), waits)
            .await
            .unwrap();
        limits.release(&first);
        assert!(waiter.await.unwrap());
        assert!(limits.try_take(None).is_none(), "the waiter holds it");
    }
}

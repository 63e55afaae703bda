//! The scope of one handler call: values that a handler's extractors share
//! with the code the handler calls, and work that finishes the call once the
//! handler has returned — how a unit of work commits its transaction when
//! the handler returns `Ok` and rolls it back otherwise.
//!
//! A handler call runs in a scope of its own when one of its arguments asks
//! for it ([`HandlerArg::CALL_SCOPE`](super::HandlerArg::CALL_SCOPE), or
//! [`FromMessageContext::CALL_SCOPE`](super::FromMessageContext::CALL_SCOPE)
//! for an extractor of your own); the scope ends with the call. Scopes cost
//! a little on every call, so other handlers run without one. Code outside
//! a scope sees none: these functions return `None` or `false`.
//!
//! An extractor that finishes its work when the handler has returned:
//!
//! ```
//! use mamey_core::cqrs::{Command, Dispatcher, FromMessageContext, call};
//! use mamey_core::{Error, MessageContext};
//! use std::sync::Mutex;
//!
//! static LOG: Mutex<Vec<&str>> = Mutex::new(Vec::new());
//!
//! /// Begins work per call; ends it by the handler's outcome.
//! struct Work;
//!
//! impl FromMessageContext for Work {
//!     const CALL_SCOPE: bool = true;
//!
//!     async fn from_message_context(_: &MessageContext) -> Result<Self, Error> {
//!         call::on_completion(|ok| async move {
//!             LOG.lock().unwrap().push(if ok { "commit" } else { "rollback" });
//!             Ok(())
//!         });
//!         Ok(Work)
//!     }
//! }
//!
//! struct Save { fail: bool }
//! impl Command for Save {}
//!
//! async fn save(cmd: Save, _: Work) -> Result<(), Error> {
//!     if cmd.fail { Err(Error::invalid_input("save.refused", "no")) } else { Ok(()) }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let dispatcher = Dispatcher::builder().command(save).build()?;
//! dispatcher.send(Save { fail: false }).await?;
//! assert!(dispatcher.send(Save { fail: true }).await.is_err());
//! assert_eq!(*LOG.lock().unwrap(), ["commit", "rollback"]);
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```

use std::any::{Any, TypeId};
use std::future::Future;
use std::sync::Mutex;

use futures_util::future::BoxFuture;

use crate::Error;

tokio::task_local! {
    static CALL: CallScope;
}

/// The code of [`already_handled`].
pub const ALREADY_HANDLED: &str = "call.already_handled";

/// The error an extractor returns when the message was handled before (an
/// inbox has its id): the handler does not run, and the dispatcher answers
/// `Ok` for the command or event — the delivery is acknowledged, not
/// retried.
#[must_use]
pub fn already_handled(detail: impl Into<String>) -> Error {
    Error::new(crate::ErrorKind::Conflict, ALREADY_HANDLED, detail)
}

/// Whether `error` is [`already_handled`].
#[must_use]
pub fn is_already_handled(error: &Error) -> bool {
    error.code() == ALREADY_HANDLED
}

/// `Ok` for [`already_handled`], the error otherwise.
pub(crate) fn handled_before(error: Error) -> Result<(), Error> {
    if is_already_handled(&error) {
        tracing::debug!(detail = error.message(), "handled before; skipped");
        Ok(())
    } else {
        Err(error)
    }
}

/// Work that finishes a call, told whether the handler succeeded.
type Completion = Box<dyn FnOnce(bool) -> BoxFuture<'static, Result<(), Error>> + Send>;

/// What one call holds: shared values by type, and its completions.
#[derive(Default)]
struct CallScope {
    handler: &'static str,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    values: Vec<(TypeId, Box<dyn Any + Send>)>,
    completions: Vec<Completion>,
}

impl CallScope {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Runs `call` in a scope of its own, then its completions, in the order
/// they were registered, each told whether `call` returned `Ok`. A failing
/// completion turns an `Ok` into its error; the others still run.
pub(crate) async fn scoped<O>(
    handler: &'static str,
    call: impl Future<Output = Result<O, Error>>,
) -> Result<O, Error> {
    let scope = CallScope {
        handler,
        inner: Mutex::default(),
    };
    CALL.scope(scope, async {
        let mut result = call.await;
        let completions = CALL.with(|scope| std::mem::take(&mut scope.lock().completions));
        for completion in completions {
            let finished = completion(result.is_ok()).await;
            if let (Ok(_), Err(error)) = (&result, finished) {
                result = Err(error);
            }
        }
        result
    })
    .await
}

/// Registers work to run when the current handler call has returned, told
/// whether it returned `Ok` (and before the call's result is given back).
/// Its error fails a call that had succeeded. Returns `false`, running
/// nothing, outside a handler call.
pub fn on_completion<F, Fut>(completion: F) -> bool
where
    F: FnOnce(bool) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    CALL.try_with(|scope| {
        scope
            .lock()
            .completions
            .push(Box::new(move |ok| Box::pin(completion(ok))));
    })
    .is_ok()
}

/// The name of the handler being called (its function's name), e.g. to
/// key an inbox by handler.
#[must_use]
pub fn handler() -> Option<&'static str> {
    CALL.try_with(|scope| scope.handler).ok()
}

/// Puts `value` into the current call's scope, replacing one of its type.
/// Returns `false` outside a handler call.
pub fn insert<T: Send + 'static>(value: T) -> bool {
    CALL.try_with(|scope| {
        let mut inner = scope.lock();
        let id = TypeId::of::<T>();
        inner.values.retain(|(other, _)| *other != id);
        inner.values.push((id, Box::new(value)));
    })
    .is_ok()
}

/// Calls `f` with the current call's value of type `T`; `None` when there
/// is no call or no such value.
pub fn with<T: Send + 'static, R>(f: impl FnOnce(&mut T) -> R) -> Option<R> {
    CALL.try_with(|scope| {
        let mut inner = scope.lock();
        let id = TypeId::of::<T>();
        inner
            .values
            .iter_mut()
            .find(|(other, _)| *other == id)
            .and_then(|(_, value)| value.downcast_mut::<T>())
            .map(f)
    })
    .ok()
    .flatten()
}

/// Takes the current call's value of type `T` out of its scope.
pub fn take<T: Send + 'static>() -> Option<T> {
    CALL.try_with(|scope| {
        let mut inner = scope.lock();
        let id = TypeId::of::<T>();
        let index = inner.values.iter().position(|(other, _)| *other == id)?;
        inner
            .values
            .swap_remove(index)
            .1
            .downcast::<T>()
            .ok()
            .map(|value| *value)
    })
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn completions_see_the_outcome_and_can_fail_a_success() {
        let ok: Result<(), Error> = scoped("save", async {
            assert_eq!(handler(), Some("save"));
            assert!(on_completion(|ok| async move {
                assert!(ok);
                Err(Error::unavailable("db.commit", "commit failed"))
            }));
            Ok(())
        })
        .await;
        assert_eq!(ok.unwrap_err().code(), "db.commit");

        let failed: Result<(), Error> = scoped("save", async {
            on_completion(|ok| async move {
                assert!(!ok);
                Ok(())
            });
            Err(Error::invalid_input("order.invalid", "no"))
        })
        .await;
        assert_eq!(failed.unwrap_err().code(), "order.invalid");
    }

    #[tokio::test]
    async fn values_are_per_call() {
        assert!(!insert(1_u32));
        let seen = scoped("outer", async {
            insert(7_u32);
            with::<u32, _>(|n| *n += 1);
            let inner = scoped("inner", async { Ok(with::<u32, _>(|n| *n)) }).await;
            Ok((take::<u32>(), inner.unwrap()))
        })
        .await
        .unwrap();
        assert_eq!(seen, (Some(8), None));
    }
}

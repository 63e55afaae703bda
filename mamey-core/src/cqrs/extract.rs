//! What a handler takes besides its message: extractors.
//!
//! A handler is an async function whose first argument is the message and
//! whose further arguments say what else it needs. Each argument type is
//! resolved in one of two ways:
//!
//! - [`FromResources`]: **once**, when the dispatcher is built, from the
//!   service's [`Resources`] (a pool, a publisher, a repository built from a
//!   pool). A missing resource fails the build, naming the message, the
//!   handler and the resource. Each call gets a clone, so these are cheap
//!   handles.
//! - [`FromMessageContext`]: **per call**, from the [`MessageContext`] of
//!   the work being handled (ids, caller, trace).
//!
//! ```
//! use mamey_core::cqrs::{Command, Dispatcher, FromResources, Res};
//! use mamey_core::{Error, MessageContext, MissingResource, Resources};
//! use std::sync::{Arc, Mutex};
//!
//! struct Rename { name: String }
//! impl Command for Rename {}
//!
//! /// A repository built from a resource: the application's own extractor.
//! #[derive(Clone)]
//! struct Names(Arc<Mutex<Vec<String>>>);
//!
//! impl FromResources for Names {
//!     fn from_resources(resources: &Resources) -> Result<Self, MissingResource> {
//!         resources.get::<Arc<Mutex<Vec<String>>>>().map(Names)
//!     }
//! }
//!
//! async fn rename(cmd: Rename, names: Names, ctx: MessageContext) -> Result<(), Error> {
//!     names.0.lock().unwrap().push(format!("{} ({})", cmd.name, ctx.correlation_id));
//!     Ok(())
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let mut resources = Resources::new();
//! resources.insert(Arc::new(Mutex::new(Vec::<String>::new())));
//! let dispatcher = Dispatcher::builder().command(rename).build_with(&resources)?;
//! dispatcher.send(Rename { name: "ada".into() }).await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use std::any::type_name;
use std::future::Future;
use std::ops::{Deref, DerefMut};

use crate::{Error, MessageContext, MissingResource, Resources};

/// A handler argument resolved once, from the service's [`Resources`], when
/// the dispatcher is built; every call gets a clone.
///
/// Implement it for the application's own dependencies (a repository built
/// from a pool); take a plain resource with [`Res`].
pub trait FromResources: Clone + Send + Sync + Sized + 'static {
    /// Builds the value from the resources.
    ///
    /// # Errors
    /// [`MissingResource`] naming the type that is not registered; the
    /// dispatcher adds the message and handler that needed it.
    fn from_resources(resources: &Resources) -> Result<Self, MissingResource>;
}

/// A handler argument extracted for each call from the current
/// [`MessageContext`]. Extraction may wait (look the caller up, begin a
/// transaction), so it is `async`:
///
/// ```
/// use mamey_core::cqrs::FromMessageContext;
/// use mamey_core::{Error, Identity, MessageContext};
///
/// /// The caller, or 401 without running the handler.
/// struct CurrentUser(Identity);
///
/// impl FromMessageContext for CurrentUser {
///     async fn from_message_context(context: &MessageContext) -> Result<Self, Error> {
///         context
///             .identity
///             .clone()
///             .map(CurrentUser)
///             .ok_or_else(|| Error::unauthorized("auth.required", "sign in first"))
///     }
/// }
/// ```
pub trait FromMessageContext: Send + Sized + 'static {
    /// Whether handlers taking this extractor run in a
    /// [call scope](super::call), e.g. to finish their work with
    /// [`call::on_completion`](super::call::on_completion). Default: `false`.
    const CALL_SCOPE: bool = false;

    /// Extracts the value.
    ///
    /// # Errors
    /// An [`Error`] that fails the dispatch without calling the handler, e.g.
    /// [`Error::unauthorized`] for an extractor that needs a caller.
    fn from_message_context(
        context: &MessageContext,
    ) -> impl Future<Output = Result<Self, Error>> + Send;
}

/// A resource of type `T`, taken as a handler argument:
/// `Res(pool): Res<PgPool>`.
///
/// Resolved once when the dispatcher is built; the build fails if no
/// plug-in (or [`ServiceBuilder::resource`](crate::ServiceBuilder::resource))
/// provided a `T`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Res<T>(pub T);

impl<T: Clone + Send + Sync + 'static> FromResources for Res<T> {
    fn from_resources(resources: &Resources) -> Result<Self, MissingResource> {
        resources.get::<T>().map(Res)
    }
}

impl<T> Deref for Res<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Res<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// An optional dependency: `None` when it is not registered.
impl<T: FromResources> FromResources for Option<T> {
    fn from_resources(resources: &Resources) -> Result<Self, MissingResource> {
        Ok(T::from_resources(resources).ok())
    }
}

/// The context of the work being handled, as the caller sent it.
impl FromMessageContext for MessageContext {
    async fn from_message_context(context: &MessageContext) -> Result<Self, Error> {
        Ok(context.clone())
    }
}

/// Marks arguments resolved through [`FromResources`].
#[derive(Debug)]
pub enum ViaResources {}

/// Marks arguments extracted through [`FromMessageContext`].
#[derive(Debug)]
pub enum ViaMessageContext {}

/// A handler argument: implemented for every [`FromResources`] and every
/// [`FromMessageContext`] type. Implement one of those, not this; `Via`
/// tells the two apart.
pub trait HandlerArg<Via>: Send + Sized + 'static {
    /// What is resolved once and kept with the handler.
    type State: Send + Sync + 'static;

    /// Whether a call of a handler taking this argument runs in a
    /// [call scope](super::call) (values for the call, completions once the
    /// handler has returned). Scopes cost a little on every call, so only
    /// arguments that use one ask for it. Default: `false`.
    const CALL_SCOPE: bool = false;

    /// Resolves the state when the dispatcher is built.
    ///
    /// # Errors
    /// [`MissingResource`] when a needed resource is not registered.
    fn resolve(resources: &Resources) -> Result<Self::State, MissingResource>;

    /// The argument for one call.
    ///
    /// # Errors
    /// An [`Error`] that fails the dispatch without calling the handler.
    fn extract(state: &Self::State) -> impl Future<Output = Result<Self, Error>> + Send;
}

/// `mamey_core::cqrs::extract::Res<`, as `type_name` spells it.
const RES_PREFIX: &str = "mamey_core::cqrs::extract::Res<";

impl<T: FromResources> HandlerArg<ViaResources> for T {
    type State = T;

    fn resolve(resources: &Resources) -> Result<T, MissingResource> {
        T::from_resources(resources).map_err(|mut missing| {
            // An extractor of the application's own names itself; `Res<X>`
            // missing its `X` needs no note.
            let extractor = type_name::<T>();
            let plain_res = extractor.starts_with(RES_PREFIX)
                && extractor[RES_PREFIX.len()..].starts_with(missing.type_name);
            if missing.type_name != extractor && !plain_res && missing.hint.is_none() {
                missing.hint = Some(format!("needed to build `{extractor}`"));
            }
            missing
        })
    }

    fn extract(state: &T) -> impl Future<Output = Result<T, Error>> + Send {
        std::future::ready(Ok(state.clone()))
    }
}

impl<T: FromMessageContext> HandlerArg<ViaMessageContext> for T {
    type State = ();
    const CALL_SCOPE: bool = T::CALL_SCOPE;

    fn resolve(_: &Resources) -> Result<(), MissingResource> {
        Ok(())
    }

    async fn extract((): &()) -> Result<T, Error> {
        match MessageContext::current_shared() {
            Some(context) => T::from_message_context(&context).await,
            // The dispatcher runs every call in a context; this is a handler
            // called some other way.
            None => T::from_message_context(&MessageContext::new()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Pool;

    #[test]
    fn the_res_prefix_is_how_type_name_spells_res() {
        assert!(type_name::<Res<Pool>>().starts_with(RES_PREFIX));
    }

    #[test]
    fn a_missing_res_needs_no_note_an_extractor_of_its_own_names_itself() {
        let missing = <Res<Pool> as HandlerArg<ViaResources>>::resolve(&Resources::new())
            .err()
            .map(|m| (m.type_name, m.hint));
        assert_eq!(missing, Some((type_name::<Pool>(), None)));

        #[derive(Clone)]
        struct Repository;
        impl FromResources for Repository {
            fn from_resources(resources: &Resources) -> Result<Self, MissingResource> {
                resources.get::<Pool>().map(|_| Repository)
            }
        }
        let hint = <Repository as HandlerArg<ViaResources>>::resolve(&Resources::new())
            .err()
            .and_then(|m| m.hint);
        assert_eq!(
            hint,
            Some(format!("needed to build `{}`", type_name::<Repository>()))
        );
    }
}

//! [`Resources`]: the typed registry plug-ins put things into and handlers
//! read from.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::fmt;

/// A typed registry of shared values: connection pools, clients, publishers,
/// the dispatcher.
///
/// There is at most one value per type. Values are cloned out, so store
/// cheaply cloneable handles (`Arc<T>`, a pool, a client).
///
/// ```
/// use mamey_core::Resources;
///
/// #[derive(Clone)]
/// struct Greeter(&'static str);
///
/// let mut resources = Resources::new();
/// resources.insert(Greeter("hello"));
/// assert_eq!(resources.get::<Greeter>()?.0, "hello");
/// assert!(resources.get::<String>().is_err());
/// # Ok::<(), mamey_core::MissingResource>(())
/// ```
#[derive(Default)]
pub struct Resources {
    values: HashMap<TypeId, Entry>,
}

struct Entry {
    value: Box<dyn Any + Send + Sync>,
    type_name: &'static str,
    provider: Option<&'static str>,
}

/// A resource was asked for that no plug-in provided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "resource `{type_name}` is not registered{}",
    hint.as_ref().map(|h| format!("; {h}")).unwrap_or_default()
)]
pub struct MissingResource {
    /// The type asked for.
    pub type_name: &'static str,
    /// What to add to provide it, if the asker said.
    pub hint: Option<String>,
}

impl Resources {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value`, replacing and returning a previous value of its type.
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) -> Option<T> {
        self.insert_from(None, value)
    }

    pub(crate) fn insert_from<T: Clone + Send + Sync + 'static>(
        &mut self,
        provider: Option<&'static str>,
        value: T,
    ) -> Option<T> {
        let entry = Entry {
            value: Box::new(value),
            type_name: type_name::<T>(),
            provider,
        };
        self.values
            .insert(TypeId::of::<T>(), entry)
            .and_then(|old| old.value.downcast::<T>().ok())
            .map(|old| *old)
    }

    /// A clone of the value of type `T`.
    ///
    /// # Errors
    /// [`MissingResource`] naming the type when none was inserted.
    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Result<T, MissingResource> {
        self.get_ref::<T>().cloned().ok_or(MissingResource {
            type_name: type_name::<T>(),
            hint: None,
        })
    }

    /// A reference to the value of type `T`, if any.
    #[must_use]
    pub fn get_ref<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|entry| entry.value.downcast_ref::<T>())
    }

    /// Whether a value of type `T` is stored.
    #[must_use]
    pub fn contains<T: 'static>(&self) -> bool {
        self.values.contains_key(&TypeId::of::<T>())
    }

    pub(crate) fn contains_id(&self, id: TypeId) -> bool {
        self.values.contains_key(&id)
    }

    pub(crate) fn provider_of(&self, id: TypeId) -> Option<&'static str> {
        self.values.get(&id).and_then(|e| e.provider)
    }
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.values.values().map(|e| e.type_name).collect();
        names.sort_unstable();
        f.debug_struct("Resources").field("types", &names).finish()
    }
}

/// A resource a plug-in needs from the plug-ins before it, declared with
/// [`Plugin::requires`](crate::Plugin::requires).
///
/// ```
/// use mamey_core::Requirement;
///
/// #[derive(Clone)]
/// struct PgPool;
///
/// let needs = Requirement::of::<PgPool>().hint("add `PostgresPlugin` before this one");
/// assert!(needs.type_name().ends_with("PgPool"));
/// ```
#[derive(Debug, Clone)]
pub struct Requirement {
    pub(crate) id: TypeId,
    pub(crate) type_name: &'static str,
    pub(crate) hint: Option<String>,
}

impl Requirement {
    /// Requires a resource of type `T`.
    #[must_use]
    pub fn of<T: Send + Sync + 'static>() -> Self {
        Self {
            id: TypeId::of::<T>(),
            type_name: type_name::<T>(),
            hint: None,
        }
    }

    /// Says what to add when the resource is missing, e.g. the plug-in that
    /// provides it.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The required type's name.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_and_returns_previous() {
        let mut resources = Resources::new();
        assert_eq!(resources.insert(1_u32), None);
        assert_eq!(resources.insert(2_u32), Some(1));
        assert_eq!(resources.get::<u32>(), Ok(2));
    }

    #[test]
    fn missing_names_the_type() {
        let resources = Resources::new();
        let err = resources.get::<std::sync::Arc<String>>().unwrap_err();
        assert!(
            err.to_string()
                .contains("alloc::sync::Arc<alloc::string::String>")
        );
    }
}

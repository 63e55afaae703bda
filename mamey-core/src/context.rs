//! The context every unit of work carries: ids, caller, trace, headers.
//!
//! A transport (HTTP request, gRPC call, consumed message) builds a
//! [`MessageContext`] from what arrived and runs the work inside
//! [`MessageContext::scope`]. Everything that runs in that scope, handlers,
//! middleware, outbound clients and publishers, reads it with
//! [`MessageContext::current`] — no parameter threads through user code.
//!
//! The context is task-local: a task spawned from a handler does not inherit
//! it. Capture it first and re-enter the scope in the new task:
//!
//! ```
//! use mamey_core::MessageContext;
//!
//! # async fn demo() {
//! let ctx = MessageContext::current().unwrap_or_default();
//! tokio::spawn(ctx.scope(async {
//!     assert!(MessageContext::current().is_some());
//! }));
//! # }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

tokio::task_local! {
    static CURRENT: Arc<MessageContext>;
}

/// Who is calling: filled from a validated token or a trusted header.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// The subject (`sub` claim): a user or service id.
    pub subject: String,
    /// Roles granted to the subject.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Other claims, as they arrived.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, serde_json::Value>,
}

impl Identity {
    /// An identity with a subject and no roles or claims.
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            ..Self::default()
        }
    }

    /// Adds a role.
    #[must_use]
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.roles.push(role.into());
        self
    }

    /// Adds a claim.
    #[must_use]
    pub fn with_claim(
        mut self,
        name: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.claims.insert(name.into(), value.into());
        self
    }

    /// Whether the identity has `role`.
    #[must_use]
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// The W3C trace context of the work, as carried in `traceparent` and
/// `tracestate` headers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// The `traceparent` header value.
    pub traceparent: String,
    /// The `tracestate` header value, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// Ids, caller, trace and headers of one unit of work.
///
/// `message_id` names this unit of work; `correlation_id` stays the same
/// across everything one original request causes; `causation_id` is the
/// message id of the work that caused this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageContext {
    /// Unique id of this message or request.
    pub message_id: String,
    /// Id shared by all work that one original request caused.
    pub correlation_id: String,
    /// The message id of the work that caused this one, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// The authenticated caller, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// The distributed-trace context, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
    /// Headers selected for propagation (lower-case names).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Fields of an incoming correlation context that mamey does not map
    /// (a Convey service's `resourceId`, `connectionId`, a saga's state),
    /// written again into the context of the messages published while
    /// handling it. See [`correlation`](crate::correlation).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub passthrough: BTreeMap<String, serde_json::Value>,
}

impl Default for MessageContext {
    /// A new root context: fresh message id, correlation id equal to it.
    fn default() -> Self {
        let id = new_id();
        Self {
            correlation_id: id.clone(),
            message_id: id,
            causation_id: None,
            identity: None,
            trace: None,
            headers: BTreeMap::new(),
            passthrough: BTreeMap::new(),
        }
    }
}

impl MessageContext {
    /// A new root context (same as [`Default`]).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The context of the current task, if the task runs inside
    /// [`MessageContext::scope`].
    #[must_use]
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|ctx| Self::clone(ctx)).ok()
    }

    /// The current context, shared (no copy of its contents).
    pub(crate) fn current_shared() -> Option<Arc<Self>> {
        CURRENT.try_with(Arc::clone).ok()
    }

    /// Calls `f` with the current context without cloning its contents.
    pub fn with_current<R>(f: impl FnOnce(Option<&Self>) -> R) -> R {
        match CURRENT.try_with(Arc::clone) {
            Ok(ctx) => f(Some(&ctx)),
            Err(_) => f(None),
        }
    }

    /// The context for work caused by this one: a new message id, the same
    /// correlation id, identity, trace, headers and passed-through fields,
    /// and this message id as
    /// the causation id.
    ///
    /// ```
    /// use mamey_core::MessageContext;
    ///
    /// let parent = MessageContext::new();
    /// let child = parent.child();
    /// assert_eq!(child.correlation_id, parent.correlation_id);
    /// assert_eq!(child.causation_id.as_deref(), Some(parent.message_id.as_str()));
    /// assert_ne!(child.message_id, parent.message_id);
    /// ```
    #[must_use]
    pub fn child(&self) -> Self {
        Self {
            message_id: new_id(),
            correlation_id: self.correlation_id.clone(),
            causation_id: Some(self.message_id.clone()),
            identity: self.identity.clone(),
            trace: self.trace.clone(),
            headers: self.headers.clone(),
            passthrough: self.passthrough.clone(),
        }
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = id.into();
        self
    }

    /// Sets the caller identity.
    #[must_use]
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Sets the trace context.
    #[must_use]
    pub fn with_trace(mut self, trace: TraceContext) -> Self {
        self.trace = Some(trace);
        self
    }

    /// Adds a propagated header (the name is lower-cased).
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers
            .insert(name.into().to_ascii_lowercase(), value.into());
        self
    }

    /// Runs `future` with this context as the current one.
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(Arc::new(self), future)
    }
}

/// A new random id (UUID v4, hyphenated), as used for message ids.
#[must_use]
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn current_is_visible_inside_scope_only() {
        assert!(MessageContext::current().is_none());
        let ctx = MessageContext::new().with_correlation_id("corr-1");
        let seen = ctx
            .scope(async { MessageContext::current().map(|c| c.correlation_id) })
            .await;
        assert_eq!(seen.as_deref(), Some("corr-1"));
        assert!(MessageContext::current().is_none());
    }

    #[tokio::test]
    async fn with_current_borrows() {
        let ctx = MessageContext::new().with_header("X-Tenant", "acme");
        let tenant = ctx
            .scope(async {
                MessageContext::with_current(|c| c.and_then(|c| c.headers.get("x-tenant").cloned()))
            })
            .await;
        assert_eq!(tenant.as_deref(), Some("acme"));
        assert!(MessageContext::with_current(|c| c.is_none()));
    }

    #[test]
    fn root_context_correlates_to_itself() {
        let ctx = MessageContext::new();
        assert_eq!(ctx.message_id, ctx.correlation_id);
        assert!(ctx.causation_id.is_none());
    }
}

//! Publishing typed messages, and the context headers every message carries.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use mamey_core::MessageContext;
use serde::Serialize;
use serde::de::DeserializeOwned;

use mamey_observability::propagation::{CAUSATION_ID, CORRELATION_ID};

use crate::broker::{Broker, PublishError};
use crate::conventions::Conventions;
use crate::message::{
    Delivery, MESSAGE_CONTEXT_HEADER, Message, OutgoingMessage, Properties, Route,
};

/// Encodes and decodes message bodies.
pub trait Codec: Send + Sync + 'static {
    /// The `content_type` property, e.g. `application/json`.
    fn content_type(&self) -> &'static str;
    /// Encodes a message body.
    ///
    /// # Errors
    /// A value the format cannot represent.
    fn encode<M: Serialize>(&self, message: &M) -> Result<Bytes, String>;
    /// Decodes a message body.
    ///
    /// # Errors
    /// A body that is not a valid `M`.
    fn decode<M: DeserializeOwned>(&self, body: &[u8]) -> Result<M, String>;
}

thread_local! {
    static ENCODE_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The largest encode buffer a thread keeps between messages.
const MAX_KEPT_BUFFER: usize = 256 * 1024;

/// JSON bodies (`application/json`), the default and Convey's format.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl Codec for Json {
    fn content_type(&self) -> &'static str {
        "application/json"
    }
    fn encode<M: Serialize>(&self, message: &M) -> Result<Bytes, String> {
        // Into a buffer kept per thread, then one exact-size copy: a growing
        // `Vec` would reallocate and copy several times for a 1 KiB body.
        ENCODE_BUFFER.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut buffer) => {
                buffer.clear();
                serde_json::to_writer(&mut *buffer, message).map_err(|e| e.to_string())?;
                let body = Bytes::copy_from_slice(&buffer);
                if buffer.capacity() > MAX_KEPT_BUFFER {
                    *buffer = Vec::new();
                }
                Ok(body)
            }
            // A `Serialize` that publishes while being encoded.
            Err(_) => serde_json::to_vec(message)
                .map(Bytes::from)
                .map_err(|e| e.to_string()),
        })
    }
    fn decode<M: DeserializeOwned>(&self, body: &[u8]) -> Result<M, String> {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    }
}

/// Per-publish choices; everything defaults from the type and the current
/// [`MessageContext`].
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Message id. Default: a new UUID.
    pub message_id: Option<String>,
    /// Correlation id. Default: the current context's, else the message id.
    pub correlation_id: Option<String>,
    /// Route. Default: the conventions' route for the type.
    pub route: Option<Route>,
    /// Extra headers.
    pub headers: BTreeMap<String, String>,
}

/// Publishes typed messages through the service's broker. Cheap to clone;
/// a resource of the messaging plug-in.
///
/// Each message gets a new message id, the current context's correlation id,
/// the current message as its causation, the `message_context` header
/// (JSON) and the W3C `traceparent` of the current span.
#[derive(Clone)]
pub struct Publisher {
    broker: Arc<dyn Broker>,
    conventions: Arc<Conventions>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("service", &self.conventions.service())
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher over `broker` naming routes by `conventions`.
    pub fn new(broker: Arc<dyn Broker>, conventions: Arc<Conventions>) -> Self {
        Self {
            broker,
            conventions,
        }
    }

    /// Publishes `message` and waits for the broker to take it — or, inside
    /// a handler that takes a unit of work (mamey-persistence's `Tx`),
    /// keeps it to be staged in the transaction's outbox when the handler
    /// returns `Ok` (see [`unit_of_work`](crate::unit_of_work)).
    ///
    /// # Errors
    /// [`PublishError`]: unroutable, unencodable, or the broker unavailable.
    pub async fn publish<M: Message>(&self, message: &M) -> Result<(), PublishError> {
        self.publish_with(message, PublishOptions::default()).await
    }

    /// Publishes `message` with explicit ids, route or headers.
    ///
    /// # Errors
    /// As [`Publisher::publish`].
    pub async fn publish_with<M: Message>(
        &self,
        message: &M,
        options: PublishOptions,
    ) -> Result<(), PublishError> {
        let outgoing = self.prepare(message, options)?;
        // In a unit of work, the message is staged in its transaction's
        // outbox when it commits.
        let Some(outgoing) = crate::unit_of_work::keep(outgoing) else {
            mamey_observability::metrics::record_message_published(M::name(), "staged");
            return Ok(());
        };
        let result = self.broker.publish(outgoing).await;
        let outcome = match &result {
            Ok(()) => "confirmed",
            Err(PublishError::Unroutable(_)) => "returned",
            Err(_) => "failed",
        };
        mamey_observability::metrics::record_message_published(M::name(), outcome);
        result
    }

    /// The message as it would go on the wire (used by the outbox, which
    /// stores it to publish later).
    ///
    /// # Errors
    /// [`PublishError::Encode`].
    pub fn prepare<M: Message>(
        &self,
        message: &M,
        options: PublishOptions,
    ) -> Result<OutgoingMessage, PublishError> {
        let body = Json
            .encode(message)
            .map_err(|reason| PublishError::Encode {
                message: M::name().to_owned(),
                reason,
            })?;
        let current = MessageContext::current();
        let message_id = options.message_id.unwrap_or_else(mamey_core::new_id);
        let correlation_id = options
            .correlation_id
            .or_else(|| current.as_ref().map(|c| c.correlation_id.clone()))
            .unwrap_or_else(|| message_id.clone());
        // The outgoing message's context: the current one's caller, trace
        // and headers, with this message's ids.
        let context = match current {
            Some(current) => MessageContext {
                causation_id: Some(current.message_id),
                message_id: message_id.clone(),
                correlation_id: correlation_id.clone(),
                ..current
            },
            None => MessageContext {
                message_id: message_id.clone(),
                correlation_id: correlation_id.clone(),
                ..MessageContext::new()
            },
        };

        let mut headers = options.headers;
        // Trace headers (from the active span, or passed on), then the ids of
        // this message: it is caused by the current message, if any.
        mamey_observability::propagation::inject_context(
            &context,
            &opentelemetry_context(),
            &mut headers,
        );
        match &context.causation_id {
            Some(causation) if self.conventions.id_headers() => {
                headers.insert(CAUSATION_ID.to_owned(), causation.clone());
            }
            _ => {
                headers.remove(CAUSATION_ID);
            }
        }
        if !self.conventions.id_headers() {
            headers.remove(CORRELATION_ID);
        }
        let timestamp = SystemTime::now();
        // The correlation context as Convey writes it, in one header.
        headers.insert(
            MESSAGE_CONTEXT_HEADER.to_owned(),
            mamey_core::correlation::write(&context, M::name(), timestamp),
        );
        Ok(OutgoingMessage {
            route: options
                .route
                .unwrap_or_else(|| self.conventions.route::<M>()),
            properties: Properties {
                message_id,
                correlation_id,
                message_type: M::name().to_owned(),
                timestamp,
                content_type: Json.content_type().to_owned(),
                persistent: true,
                headers,
            },
            body,
        })
    }
}

/// The active OpenTelemetry context (the current span, when tracing).
fn opentelemetry_context() -> mamey_observability::propagation::OtelContext {
    mamey_observability::propagation::OtelContext::current()
}

/// The context for handling `delivery`, read in one pass over its headers:
/// the [`MessageContext`] from the `message_context` header when it is
/// valid JSON, else from the properties and `x-*` headers; the message id is
/// always the delivery's; the trace context only from a well-formed W3C
/// `traceparent` header. `otel` continues the publisher's trace.
#[must_use]
pub fn context_of(delivery: &Delivery) -> mamey_observability::propagation::Extracted {
    let headers = &delivery.properties.headers;
    let from_json = headers
        .get(MESSAGE_CONTEXT_HEADER)
        .and_then(|json| mamey_core::correlation::read(json).ok());
    let mut extracted = match from_json {
        Some(mut context) => {
            let (trace, otel, _) = mamey_observability::propagation::extract_trace(headers);
            context.trace = trace;
            // A context without `correlationId`: the property's, if any.
            if context.correlation_id.is_empty() {
                context
                    .correlation_id
                    .clone_from(&delivery.properties.correlation_id);
            }
            mamey_observability::propagation::Extracted { context, otel }
        }
        None => {
            // Not mamey's JSON (e.g. Convey's): ids from the headers, else
            // from the AMQP properties.
            let mut extracted = mamey_observability::propagation::extract(headers);
            // A usable x-correlation-id was taken by `extract`; otherwise
            // (absent, or rejected as malformed) the AMQP property counts.
            let header_used = headers
                .get(CORRELATION_ID)
                .is_some_and(|id| extracted.context.correlation_id == *id);
            if !header_used && !delivery.properties.correlation_id.is_empty() {
                extracted
                    .context
                    .correlation_id
                    .clone_from(&delivery.properties.correlation_id);
            }
            extracted
        }
    };
    // The delivery's own id wins; a message without one keeps a fresh id,
    // so that id-less messages are not all taken for one by an inbox.
    if !delivery.properties.message_id.is_empty() {
        extracted
            .context
            .message_id
            .clone_from(&delivery.properties.message_id);
    }
    if extracted.context.correlation_id.is_empty() {
        extracted
            .context
            .correlation_id
            .clone_from(&extracted.context.message_id);
    }
    extracted
}

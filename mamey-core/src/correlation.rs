//! The correlation context on the wire, as Convey services write it: the
//! JSON of the `message_context` message header and of the
//! `Correlation-Context` HTTP header.
//!
//! Convey applications (the Pacco services, say) serialize their context
//! with camelCase names: `correlationId`, `user` (`id`, `isAuthenticated`,
//! `role`, `claims`), `name`, `traceId`, `createdAt`, and fields of their
//! own (`resourceId`, `connectionId`, `spanContext`, `retries`, ...). mamey
//! writes the same shape, adds its own ids (`messageId`, `causationId`,
//! `headers`, and every role in `user.roles`), and reads any of it back.
//! Fields it does not map are kept in [`MessageContext::passthrough`] and
//! written again on the messages published while handling it, so a reply
//! carries them.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use mamey_core::{Identity, MessageContext, correlation};
//!
//! let convey = r#"{"correlationId":"c-1","resourceId":"r-9",
//!   "user":{"id":"u-1","isAuthenticated":true,"role":"admin","claims":{"tenant":"t"}}}"#;
//! let context = correlation::read(convey)?;
//! assert_eq!(context.correlation_id, "c-1");
//! assert_eq!(context.identity, Some(Identity::new("u-1").with_role("admin").with_claim("tenant", "t")));
//!
//! let written = correlation::write(&context.child(), "OrderPlaced", SystemTime::UNIX_EPOCH + Duration::from_secs(86_400));
//! let json: serde_json::Value = serde_json::from_str(&written)?;
//! assert_eq!(json["correlationId"], "c-1");
//! assert_eq!(json["resourceId"], "r-9");
//! assert_eq!(json["user"]["isAuthenticated"], true);
//! assert_eq!(json["createdAt"], "1970-01-02T00:00:00Z");
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::{Identity, MessageContext};

/// The JSON of `context` in Convey's shape, for the message `name` created
/// at `created_at`.
#[must_use]
pub fn write(context: &MessageContext, name: &str, created_at: SystemTime) -> String {
    let user = context.identity.as_ref().map(|identity| User {
        id: identity.subject.clone(),
        is_authenticated: true,
        role: identity.roles.first().cloned().unwrap_or_default(),
        roles: identity.roles.clone(),
        // Convey's claims are strings.
        claims: identity
            .claims
            .iter()
            .map(|(key, value)| {
                let text = match value {
                    Value::String(text) => Value::String(text.clone()),
                    other => Value::String(other.to_string()),
                };
                (key.clone(), text)
            })
            .collect(),
    });
    let trace_id = context
        .trace
        .as_ref()
        .and_then(|trace| trace.traceparent.split('-').nth(1))
        .map(str::to_owned);
    let wire = Wire {
        correlation_id: context.correlation_id.clone(),
        message_id: Some(context.message_id.clone()),
        causation_id: context.causation_id.clone(),
        user,
        trace_id,
        name: Some(name.to_owned()),
        created_at: Some(rfc3339(created_at)),
        headers: context.headers.clone(),
        rest: context.passthrough.clone(),
    };
    // Only strings, maps and numbers: serializing cannot fail.
    serde_json::to_string(&wire).unwrap_or_default()
}

/// The context a Convey-shaped (or mamey-written) JSON describes. The
/// message id is the JSON's `messageId` when present, else a new one (a
/// broker's `message_id` property should then be set over it); `name`,
/// `createdAt` and `traceId` describe the message it came with and are not
/// kept; the trace itself travels in `traceparent`.
///
/// # Errors
/// When `json` is not a JSON object of this shape.
pub fn read(json: &str) -> Result<MessageContext, serde_json::Error> {
    let wire: Wire = serde_json::from_str(json)?;
    let identity = wire
        .user
        .filter(|user| user.is_authenticated && !user.id.is_empty())
        .map(|user| {
            let roles = if user.roles.is_empty() && !user.role.is_empty() {
                vec![user.role]
            } else {
                user.roles
            };
            Identity {
                subject: user.id,
                roles,
                claims: user.claims,
            }
        });
    let mut context = MessageContext::new();
    if let Some(id) = wire.message_id.filter(|id| !id.is_empty()) {
        context.message_id = id;
    }
    context.correlation_id = wire.correlation_id;
    context.causation_id = wire.causation_id;
    context.identity = identity;
    context.headers = wire.headers;
    context.passthrough = wire.rest;
    Ok(context)
}

/// The header's fields; everything else is passed through.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(default, alias = "correlation_id")]
    correlation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "message_id")]
    message_id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "causation_id"
    )]
    causation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<User>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

/// Convey's `user`: `role` is one role; mamey adds all of them in `roles`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct User {
    #[serde(default)]
    id: String,
    #[serde(default)]
    is_authenticated: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    role: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
    #[serde(default)]
    claims: BTreeMap<String, Value>,
}

/// `time` as RFC 3339 in UTC, whole seconds: `2026-12-04T10:00:00Z`.
fn rfc3339(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::context::TraceContext;

    #[test]
    fn dates_are_rfc3339_in_utc() {
        let at = |secs| rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_382_245), "2026-12-04T11:04:05Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn a_pacco_context_is_read_whole() {
        let pacco = r#"{
            "correlationId": "5c9c7a7fd8a6462ab5e3f4e6c1a4b8d2",
            "spanContext": "abc:def:0:1",
            "retries": 0,
            "user": {"id": "f2f5d0b4", "isAuthenticated": true, "role": "user", "claims": {"permissions": "orders"}},
            "resourceId": "a3e6c3b2",
            "traceId": "0HM5",
            "connectionId": "c-1",
            "name": "create_order",
            "createdAt": "2026-12-04T10:00:00Z"
        }"#;
        let context = read(pacco).unwrap();
        assert_eq!(context.correlation_id, "5c9c7a7fd8a6462ab5e3f4e6c1a4b8d2");
        let identity = context.identity.unwrap();
        assert_eq!(identity.subject, "f2f5d0b4");
        assert_eq!(identity.roles, ["user"]);
        assert_eq!(identity.claims["permissions"], "orders");
        assert_eq!(
            context.passthrough.keys().collect::<Vec<_>>(),
            ["connectionId", "resourceId", "retries", "spanContext"]
        );
    }

    #[test]
    fn an_anonymous_user_is_no_identity() {
        let context =
            read(r#"{"correlationId":"c","user":{"id":"","isAuthenticated":false}}"#).unwrap();
        assert_eq!(context.identity, None);
    }

    #[test]
    fn what_is_written_reads_back() {
        let context = MessageContext::new()
            .with_identity(
                Identity::new("u-1")
                    .with_role("admin")
                    .with_role("clerk")
                    .with_claim("level", 3),
            )
            .with_trace(TraceContext {
                traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                tracestate: None,
            })
            .with_header("x-tenant", "t-1");
        let json = write(&context, "OrderPlaced", UNIX_EPOCH);
        let value: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["user"]["role"], "admin");
        assert_eq!(value["user"]["claims"]["level"], "3");
        assert_eq!(value["traceId"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(value["name"], "OrderPlaced");
        let back = read(&json).unwrap();
        assert_eq!(back.message_id, context.message_id);
        assert_eq!(back.correlation_id, context.correlation_id);
        assert_eq!(back.identity.as_ref().unwrap().roles, ["admin", "clerk"]);
        assert_eq!(back.headers, context.headers);
        assert!(back.passthrough.is_empty(), "{:?}", back.passthrough);
    }

    #[test]
    fn not_an_object_is_an_error() {
        assert!(read("[1]").is_err());
        assert!(read("{not json").is_err());
    }
}

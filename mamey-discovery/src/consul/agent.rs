//! The HTTP transport to the Consul agent: one pooled hyper client, the
//! ACL token header, and a bound on every answer's size and time.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use mamey_core::Error;
use mamey_core::config::Secret;

use crate::registry::unreachable;

/// The largest answer read from the agent. A health answer for a few
/// hundred instances is well under 1 MiB; anything bigger is a mistake.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// A client of one Consul agent's HTTP API.
pub(super) struct Agent {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `http://host:port`, without a trailing slash.
    base: String,
    /// `X-Consul-Token`, marked sensitive so it never shows in debug output.
    token: Option<HeaderValue>,
    /// How long a call that does not block may take.
    timeout: Duration,
}

/// One answer of the agent, read whole.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Agent {
    /// A client of the agent at `address` (`http://host:port`).
    ///
    /// # Errors
    /// A message naming what is wrong with `address` or the token.
    pub(super) fn new(
        address: &str,
        token: Option<&Secret<String>>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let base = base_url(address)?;
        let token = token
            .map(|token| {
                let mut value = HeaderValue::from_str(token.expose())
                    .map_err(|_| "the ACL token holds characters a header cannot carry")?;
                value.set_sensitive(true);
                Ok::<_, String>(value)
            })
            .transpose()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            client,
            base,
            token,
            timeout,
        })
    }

    /// Sends `method path` (path and query, already escaped) with an
    /// optional JSON body and reads the answer within `timeout`, or the
    /// agent timeout when `None`.
    ///
    /// # Errors
    /// `discovery.unreachable` when the agent cannot be reached, does not
    /// answer in time, or answers with more than 4 MiB.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Option<Duration>,
    ) -> Result<Reply, Error> {
        let timeout = timeout.unwrap_or(self.timeout);
        let failed = |why: String| unreachable("consul", format!("{method} {path}: {why}"));
        let uri = Uri::try_from(format!("{}{path}", self.base))
            .map_err(|e| failed(format!("not a valid request URI: {e}")))?;
        let mut request = Request::builder().method(method.clone()).uri(uri);
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token.clone());
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| failed(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| with_sources(&e))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok::<_, String>(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(why)) => Err(failed(why)),
            Err(_) => Err(failed(format!(
                "no answer within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

impl Reply {
    /// The error for an answer the caller did not expect: its status and
    /// the start of its body (Consul explains itself in plain text).
    pub(super) fn unexpected(&self, method: &Method, path: &str) -> Error {
        let text = String::from_utf8_lossy(&self.body);
        let text: String = text.trim().chars().take(200).collect();
        unreachable(
            "consul",
            format!(
                "{method} {path}: the agent answered {}: {text}",
                self.status
            ),
        )
    }

    /// The body as text, for matching Consul's error messages.
    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The agent's base URL from `discovery.consul.address`.
fn base_url(address: &str) -> Result<String, String> {
    let trimmed = address.trim().trim_end_matches('/');
    let uri: Uri = trimmed
        .parse()
        .map_err(|e| format!("`{address}` is not a URL ({e}); e.g. `http://127.0.0.1:8500`"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "`{address}`: TLS to the Consul agent is not supported yet; \
                 talk to the local agent over http, e.g. `http://127.0.0.1:8500`"
            ));
        }
        _ => {
            return Err(format!(
                "`{address}` is not an http:// URL; e.g. `http://127.0.0.1:8500`"
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) || uri.query().is_some() {
        return Err(format!(
            "`{address}` must be `http://host:port`, e.g. `http://127.0.0.1:8500`"
        ));
    }
    Ok(trimmed.to_owned())
}

/// `value` percent-encoded for a URL path segment or query value: every
/// byte outside RFC 3986's unreserved characters is escaped.
pub(super) fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            escaped.push(char::from(byte));
        } else {
            let _ = write!(escaped, "%{byte:02X}");
        }
    }
    escaped
}

/// `?name=value&...` of the parameters that have a value (escaped), or
/// nothing when none has.
pub(super) fn query(params: &[(&str, Option<&str>)]) -> String {
    let mut query = String::new();
    for (name, value) in params {
        if let Some(value) = value {
            let separator = if query.is_empty() { '?' } else { '&' };
            let _ = write!(query, "{separator}{name}={}", escape(value));
        }
    }
    query
}

/// An error with its chain of causes: hyper's own message ("client error
/// (Connect)") says little without them.
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(message, ": {cause}");
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_outside_unreserved_characters() {
        assert_eq!(escape("orders-1.v2_x~"), "orders-1.v2_x~");
        assert_eq!(escape("my service/x?y"), "my%20service%2Fx%3Fy");
        assert_eq!(escape("é"), "%C3%A9");
    }

    #[test]
    fn query_skips_missing_values() {
        assert_eq!(query(&[("dc", None), ("ns", None)]), "");
        assert_eq!(
            query(&[("dc", Some("dc 1")), ("ns", None), ("x", Some("y"))]),
            "?dc=dc%201&x=y"
        );
    }

    #[test]
    fn only_plain_http_agent_addresses_are_accepted() {
        assert_eq!(
            base_url("http://127.0.0.1:8500/").unwrap(),
            "http://127.0.0.1:8500"
        );
        let tls = base_url("https://consul:8501").unwrap_err();
        assert!(tls.contains("TLS") && tls.contains("http://"), "{tls}");
        assert!(base_url("127.0.0.1:8500").is_err());
        assert!(base_url("http://127.0.0.1:8500?x=1").is_err());
        assert!(base_url("not a url").is_err());
    }
}

//! A client of teamhub's public API, through the gateway: what the system
//! tests and the load tool drive it with. Plain HTTP/1.1 and WebSocket, as
//! any outside caller would.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mamey_core::BoxError;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// An answer: status, `Location`, body (JSON, or `null` when empty or not
/// JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The `Location` header.
    pub location: Option<String>,
    /// The `Retry-After` header.
    pub retry_after: Option<String>,
    /// The body as JSON.
    pub body: Value,
}

impl Answer {
    /// The id at the end of `Location` (`/api/boards/cards/123` → 123).
    ///
    /// # Errors
    /// No `Location`, or it does not end with an id.
    pub fn created_id(&self) -> Result<i64, BoxError> {
        let location = self
            .location
            .as_deref()
            .ok_or_else(|| format!("no Location in a {} answer: {}", self.status, self.body))?;
        location
            .rsplit('/')
            .next()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| format!("Location `{location}` does not end with an id").into())
    }

    /// Fails unless the status is `expected`.
    ///
    /// # Errors
    /// Another status; the message has the body.
    pub fn expect(self, expected: StatusCode) -> Result<Self, BoxError> {
        if self.status == expected {
            Ok(self)
        } else {
            Err(format!("expected {expected}, got {}: {}", self.status, self.body).into())
        }
    }
}

/// A signed-in user's tokens.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user.
    pub user_id: i64,
    /// The bearer token.
    pub access_token: String,
    /// The refresh token.
    pub refresh_token: String,
}

/// The API at one gateway, as one caller (anonymous until
/// [`with_token`](Self::with_token)).
#[derive(Clone, Debug)]
pub struct Api {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
    token: Option<String>,
    correlation_id: Option<String>,
}

impl Api {
    /// The API at `base` (`http://127.0.0.1:8080`).
    #[must_use]
    pub fn new(base: impl Into<String>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            http: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(64)
                .build(connector),
            token: None,
            correlation_id: None,
        }
    }

    /// The same API as the holder of `token`.
    #[must_use]
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// The same API, sending `x-correlation-id: id` with each request.
    #[must_use]
    pub fn with_correlation_id(&self, id: &str) -> Self {
        Self {
            correlation_id: Some(id.to_owned()),
            ..self.clone()
        }
    }

    /// The gateway's base URL.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `method path` with a JSON body.
    ///
    /// # Errors
    /// The request could not be sent or its answer read (not a 4xx/5xx:
    /// those are answers).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, BoxError> {
        let bytes = match body {
            Some(json) => Bytes::from(serde_json::to_vec(json)?),
            None => Bytes::new(),
        };
        self.send(
            method,
            path,
            Some("application/json").filter(|_| body.is_some()),
            bytes,
        )
        .await
    }

    /// `method path` with a raw body of `content_type`.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Answer, BoxError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(id) = &self.correlation_id {
            request = request.header("x-correlation-id", id);
        }
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = tokio::time::timeout(
            Duration::from_secs(30),
            self.http.request(request.body(Full::new(body))?),
        )
        .await
        .map_err(|_| "no answer within 30 s")??;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (location, retry_after) = (header("location"), header("retry-after"));
        let body = response.into_body().collect().await?.to_bytes();
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            location,
            retry_after,
            body,
        })
    }

    /// Signs up; the new user's id.
    ///
    /// # Errors
    /// Not 201.
    pub async fn sign_up(&self, email: &str, name: &str, password: &str) -> Result<i64, BoxError> {
        let body = json!({ "email": email, "name": name, "password": password });
        self.call(Method::POST, "/api/identity/sign-up", Some(&body))
            .await?
            .expect(StatusCode::CREATED)?
            .created_id()
    }

    /// Signs in.
    ///
    /// # Errors
    /// Not 200, or no tokens in the answer.
    pub async fn sign_in(&self, email: &str, password: &str) -> Result<Session, BoxError> {
        let body = json!({ "email": email, "password": password });
        let answer = self
            .call(Method::POST, "/api/identity/sign-in", Some(&body))
            .await?
            .expect(StatusCode::OK)?;
        let field = |name: &str| {
            answer.body[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("no `{name}` in {}", answer.body))
        };
        Ok(Session {
            user_id: answer.body["userId"]
                .as_i64()
                .ok_or_else(|| format!("no `userId` in {}", answer.body))?,
            access_token: field("accessToken")?,
            refresh_token: field("refreshToken")?,
        })
    }

    /// `POST path` expecting 201; the created id.
    ///
    /// # Errors
    /// Not 201.
    pub async fn create(&self, path: &str, body: &Value) -> Result<i64, BoxError> {
        self.call(Method::POST, path, Some(body))
            .await?
            .expect(StatusCode::CREATED)?
            .created_id()
    }

    /// `GET path` expecting 200; the body.
    ///
    /// # Errors
    /// Not 200.
    pub async fn get(&self, path: &str) -> Result<Value, BoxError> {
        Ok(self
            .call(Method::GET, path, None)
            .await?
            .expect(StatusCode::OK)?
            .body)
    }

    /// Opens the live notification socket (`/api/live`), passing the token
    /// as browsers do, in the query.
    ///
    /// # Errors
    /// No token, or the upgrade failed.
    pub async fn live(&self) -> Result<Live, BoxError> {
        let token = self.token.as_deref().ok_or("live needs a token")?;
        let base = self
            .base
            .strip_prefix("http://")
            .ok_or("live needs an http:// base URL")?;
        let url = format!("ws://{base}/api/live?access_token={token}");
        let (socket, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .map_err(|_| "the live socket did not open within 10 s")??;
        Ok(Live {
            socket,
            received: Vec::new(),
            keep: true,
        })
    }
}

/// A live notification socket.
#[derive(Debug)]
pub struct Live {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    received: Vec<Value>,
    keep: bool,
}

impl Live {
    /// The next notification, or `None` when none arrived within `wait`.
    ///
    /// # Errors
    /// The socket closed or failed, or a frame was not JSON.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<Value>, BoxError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Err("the live socket closed".into()),
                Ok(Some(frame)) => frame?,
            };
            match frame {
                Message::Text(text) => {
                    let item: Value = serde_json::from_str(&text)?;
                    if self.keep {
                        self.received.push(item.clone());
                    }
                    return Ok(Some(item));
                }
                Message::Close(why) => {
                    return Err(format!("the live socket closed: {why:?}").into());
                }
                // Pings are answered by the library; nothing else is sent.
                _ => {}
            }
        }
    }

    /// Reads notifications until `wanted` returns true for one, within
    /// `wait`; returns it and every one read before it.
    ///
    /// # Errors
    /// Timed out (the message lists what arrived), or the socket failed.
    pub async fn until(
        &mut self,
        wait: Duration,
        mut wanted: impl FnMut(&Value) -> bool,
    ) -> Result<Vec<Value>, BoxError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Some(item) => {
                    let done = wanted(&item);
                    seen.push(item);
                    if done {
                        return Ok(seen);
                    }
                }
                None => {
                    let kinds: Vec<String> = seen
                        .iter()
                        .map(|n| n["kind"].as_str().unwrap_or("?").to_owned())
                        .collect();
                    return Err(format!(
                        "the awaited notification did not arrive within {wait:?}; got {kinds:?}"
                    )
                    .into());
                }
            }
        }
    }

    /// Stops keeping what arrives (a long load run).
    #[must_use]
    pub fn without_history(mut self) -> Self {
        self.keep = false;
        self.received = Vec::new();
        self
    }

    /// Every notification received so far, in order (unless
    /// [`without_history`](Self::without_history)).
    #[must_use]
    pub fn received(&self) -> &[Value] {
        &self.received
    }

    /// Closes the socket.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

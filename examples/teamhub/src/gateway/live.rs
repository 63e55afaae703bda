//! `GET /api/live`: the live notification socket, proxied to a replica of
//! notifications' `/live`.
//!
//! The token comes as `Authorization: Bearer …` or, since browsers cannot
//! set headers on a WebSocket, as `?access_token=…`: the web API's
//! pipeline validates either (the query only on a WebSocket upgrade
//! without an `Authorization` header), so a request gets here with a valid
//! caller or is answered `401`. The gateway then opens notifications'
//! socket with the token in the handshake's `Authorization` — before
//! accepting the client's, so that an unreachable service is a `502`
//! rather than a socket that closes at once.
//!
//! Then frames go both ways until either side closes: text and binary
//! frames as they are, close frames with their code; pings are answered by
//! each hop (the libraries do) and not passed on. The gateway pings the
//! client every 30 s so that a vanished client frees its socket. Messages
//! are bounded: 64 KiB from the client (it has nothing to say), 1 MiB from
//! the service.

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use mamey_core::discovery::{Endpoint, ServiceResolver};
use mamey_core::{InServiceScope, ServiceScope};
use mamey_http::{Caller, Problem, QueryParams, Resource};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::notifications;

/// The largest message a client may send.
const MAX_FROM_CLIENT: usize = 64 * 1024;
/// The largest message the service may send.
const MAX_FROM_SERVICE: usize = 1024 * 1024;
/// How often the client is pinged.
const PING_EVERY: Duration = Duration::from_secs(30);
/// How long one frame may take to send before its socket counts as dead.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the handshake with one replica may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Replicas tried before giving up.
const ATTEMPTS: usize = 3;

/// The socket to the service.
type Upstream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `?access_token=`, for browsers.
#[derive(Debug, Deserialize)]
pub(super) struct LiveQuery {
    /// The bearer token.
    access_token: Option<String>,
}

/// Opens the service's socket as the (validated) caller, then upgrades.
pub(super) async fn live(
    caller: Result<Caller, Response>,
    QueryParams(query): QueryParams<LiveQuery>,
    headers: HeaderMap,
    Resource(resolver): Resource<ServiceResolver>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(refusal) = caller {
        return refusal;
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "live.not_a_websocket",
                format!("`/api/live` is a WebSocket: {rejection}"),
            )
            .into_response();
        }
    };
    // The token the pipeline validated: the header's when there is one,
    // else (this being an upgrade) the query's.
    let Some(token) = bearer(&headers).or(query.access_token) else {
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "auth.unauthorized",
            "a bearer token is required",
        )
        .into_response();
    };
    let upstream = match connect(&resolver, &token).await {
        Ok(upstream) => upstream,
        Err(refusal) => return refusal,
    };
    // The socket is served on a task of its own: keep the service's scope
    // for its logs.
    let scope = ServiceScope::current();
    upgrade
        .max_message_size(MAX_FROM_CLIENT)
        .on_upgrade(move |client| pump(client, upstream).in_service(scope))
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_owned())
}

fn bad_gateway() -> Response {
    Problem::new(
        StatusCode::BAD_GATEWAY,
        "gateway.bad_gateway",
        "the live service could not be reached; try again later",
    )
    .into_response()
}

/// Opens notifications' `/live` as the token's holder, on one of its
/// replicas (up to three, in random order), with the request's
/// correlation id and trace.
async fn connect(resolver: &ServiceResolver, token: &str) -> Result<Upstream, Response> {
    let mut endpoints = resolver
        .resolve(notifications::NAME)
        .await
        .map_err(|error| {
            tracing::warn!(error = %error, "no live service to connect to");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "gateway.unavailable",
                "the live service is unavailable; try again later",
            )
            .into_response()
        })?;
    fastrand::shuffle(&mut endpoints);
    let config = WebSocketConfig::default().max_message_size(Some(MAX_FROM_SERVICE));
    for endpoint in endpoints.iter().take(ATTEMPTS) {
        let request = handshake(endpoint, token).map_err(|error| {
            tracing::warn!(%endpoint, error = %error, "cannot make the live handshake");
            bad_gateway()
        })?;
        let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok((upstream, _))) => return Ok(upstream),
            Ok(Err(tungstenite::Error::Http(answer))) => {
                // The token passed at the edge: a refusal is the
                // service's, not the caller's.
                tracing::warn!(%endpoint, status = %answer.status(), "the live service refused the socket");
                return Err(bad_gateway());
            }
            Ok(Err(error)) => {
                tracing::warn!(%endpoint, error = %error, "cannot open the live socket");
            }
            Err(_) => tracing::warn!(%endpoint, "the live socket did not open in time"),
        }
    }
    Err(bad_gateway())
}

/// The handshake request to `endpoint`'s `/live`.
fn handshake(
    endpoint: &Endpoint,
    token: &str,
) -> Result<tungstenite::handshake::client::Request, tungstenite::Error> {
    let url = match endpoint.url.split_once("://") {
        Some(("https", rest)) => format!("wss://{rest}/live"),
        Some((_, rest)) => format!("ws://{rest}/live"),
        None => format!("ws://{}/live", endpoint.url),
    };
    let mut request = url.into_client_request()?;
    let mut authorization = HeaderValue::try_from(format!("Bearer {token}"))?;
    authorization.set_sensitive(true);
    request
        .headers_mut()
        .insert(header::AUTHORIZATION, authorization);
    mamey_observability::propagation::inject(request.headers_mut());
    Ok(request)
}

/// Passes frames both ways until either side closes or fails.
async fn pump(mut client: WebSocket, mut upstream: Upstream) {
    let mut pings = tokio::time::interval(PING_EVERY);
    pings.tick().await;
    loop {
        tokio::select! {
            from_service = upstream.next() => {
                let Some(Ok(message)) = from_service else {
                    // The service's socket broke: tell the client to come back.
                    let frame = ws::CloseFrame { code: ws::close_code::AWAY, reason: "the live service went away".into() };
                    let _ = send(&mut client, ws::Message::Close(Some(frame))).await;
                    break;
                };
                let Some(message) = to_client(message) else { continue };
                let closing = matches!(message, ws::Message::Close(_));
                if send(&mut client, message).await.is_err() || closing {
                    let _ = upstream.close(None).await;
                    break;
                }
            }
            from_client = client.recv() => {
                let Some(Ok(message)) = from_client else {
                    let _ = upstream.close(None).await;
                    break;
                };
                let Some(message) = to_service(message) else { continue };
                let closing = matches!(message, Message::Close(_));
                let sent = tokio::time::timeout(SEND_TIMEOUT, upstream.send(message)).await;
                if !matches!(sent, Ok(Ok(()))) || closing {
                    break;
                }
            }
            _ = pings.tick() => {
                if send(&mut client, ws::Message::Ping(bytes::Bytes::new())).await.is_err() {
                    let _ = upstream.close(None).await;
                    break;
                }
            }
        }
    }
}

/// Sends `message` to the client within the send timeout.
async fn send(client: &mut WebSocket, message: ws::Message) -> Result<(), ()> {
    match tokio::time::timeout(SEND_TIMEOUT, client.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(()),
    }
}

/// A service frame for the client; `None` for what each hop answers
/// itself (pings, pongs, raw frames).
fn to_client(message: Message) -> Option<ws::Message> {
    match message {
        Message::Text(text) => Some(ws::Message::Text(text.as_str().into())),
        Message::Binary(bytes) => Some(ws::Message::Binary(bytes)),
        Message::Close(frame) => Some(ws::Message::Close(frame.map(|frame| ws::CloseFrame {
            code: frame.code.into(),
            reason: frame.reason.as_str().into(),
        }))),
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
    }
}

/// A client frame for the service; `None` for pings and pongs.
fn to_service(message: ws::Message) -> Option<Message> {
    match message {
        ws::Message::Text(text) => Some(Message::Text(text.as_str().into())),
        ws::Message::Binary(bytes) => Some(Message::Binary(bytes)),
        ws::Message::Close(frame) => Some(Message::Close(frame.map(|frame| CloseFrame {
            code: frame.code.into(),
            reason: frame.reason.as_str().into(),
        }))),
        ws::Message::Ping(_) | ws::Message::Pong(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_carries_the_token_to_the_live_route() {
        let request = handshake(&Endpoint::new("http://127.0.0.1:4000/"), "t0k3n").unwrap();
        assert_eq!(request.uri(), "ws://127.0.0.1:4000/live");
        assert_eq!(request.headers()[header::AUTHORIZATION], "Bearer t0k3n");
        let secure = handshake(&Endpoint::new("https://live.internal"), "t").unwrap();
        assert_eq!(secure.uri(), "wss://live.internal/live");
        assert!(handshake(&Endpoint::new("http://h"), "bad\ntoken").is_err());
    }

    #[test]
    fn only_bearer_headers_give_a_token() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc "),
        );
        assert_eq!(bearer(&headers).as_deref(), Some("abc"));
    }

    #[test]
    fn frames_cross_with_their_close_codes() {
        let text = to_client(Message::Text("{\"id\":1}".into()));
        assert!(matches!(text, Some(ws::Message::Text(t)) if t.as_str() == "{\"id\":1}"));
        assert!(to_client(Message::Ping(bytes::Bytes::new())).is_none());
        let close = to_client(Message::Close(Some(CloseFrame {
            code: 1013.into(),
            reason: "too slow".into(),
        })));
        assert!(
            matches!(close, Some(ws::Message::Close(Some(f))) if f.code == 1013 && f.reason.as_str() == "too slow")
        );
        let back = to_service(ws::Message::Close(Some(ws::CloseFrame {
            code: 1000,
            reason: "bye".into(),
        })));
        assert!(matches!(back, Some(Message::Close(Some(f))) if u16::from(f.code) == 1000));
        assert!(to_service(ws::Message::Pong(bytes::Bytes::new())).is_none());
    }
}

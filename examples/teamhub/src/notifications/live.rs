//! `GET /live`: the WebSocket of a signed-in user. The server sends one
//! text frame per notification of theirs (the feed item's JSON), answers
//! pings, pings the client every 30 s, and closes the socket with
//! "going away" (1001) when the service stops, or "try again later" (1013)
//! when the client read too slowly to keep up (see [`super::hub`]).
//!
//! The caller's identity comes from the bearer token in `Authorization`,
//! validated by the web API's pipeline ([`Caller`]); the gateway passes the
//! header on.

use std::time::Duration;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use axum::routing::get;
use mamey_core::Error;
use mamey_http::{ApiError, Caller, Resource};

use super::hub::{Connection, Hub};
use super::presence::Presence;

/// The largest frame a client may send (it has nothing to say).
const MAX_INCOMING: usize = 16 * 1024;
/// How often the client is pinged, so dead peers are noticed.
const PING_EVERY: Duration = Duration::from_secs(30);
/// How long one frame may take to send before the socket counts as dead.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The route.
pub(crate) fn router() -> Router {
    Router::new().route("/live", get(live))
}

async fn live(
    Caller(identity): Caller,
    Resource(hub): Resource<Hub>,
    Resource(presence): Resource<Presence>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let user = identity
        .subject
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            Error::unauthorized("auth.unauthorized", "a user's bearer token is required")
        })?;
    let upgrade = upgrade.map_err(|rejection| {
        Error::invalid_input(
            "live.not_a_websocket",
            format!("`/live` is a WebSocket: {rejection}"),
        )
    })?;
    let connection = hub.connect(user).ok_or_else(|| {
        Error::unavailable("live.stopping", "the service is stopping; connect again")
    })?;
    Ok(upgrade
        .max_message_size(MAX_INCOMING)
        .on_upgrade(move |socket| serve(socket, connection, presence)))
}

/// Why the server ends a socket.
enum End {
    /// The client closed it, or it broke: nothing more to send.
    Gone,
    /// The server closes it with this frame.
    Close(u16, &'static str),
}

async fn serve(mut socket: WebSocket, mut connection: Connection, presence: Presence) {
    let user = connection.user();
    presence.arrived(user).await;
    let closing = connection.closing();
    tokio::pin!(closing);
    let mut pings = tokio::time::interval(PING_EVERY);
    pings.tick().await;
    let end = loop {
        let outgoing = tokio::select! {
            frame = connection.frame() => match frame {
                Some(text) => Message::Text(text),
                None => break End::Close(close_code::AGAIN, "too slow; read /feed and reconnect"),
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Ping(payload))) => Message::Pong(payload),
                // Text, binary, pongs: the client has nothing to say.
                Some(Ok(Message::Text(_) | Message::Binary(_) | Message::Pong(_))) => continue,
                // Closed by the client (the library answers its close), or broken.
                Some(Ok(Message::Close(_)) | Err(_)) | None => break End::Gone,
            },
            () = &mut closing => break End::Close(close_code::AWAY, "the service is stopping"),
            _ = pings.tick() => Message::Ping(bytes::Bytes::new()),
        };
        match tokio::time::timeout(SEND_TIMEOUT, socket.send(outgoing)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => break End::Gone,
        }
    };
    if let End::Close(code, reason) = end {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
    }
    drop(connection);
    presence.left(user).await;
}

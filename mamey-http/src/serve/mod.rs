//! Serving a router on a listener: HTTP/1.1 and HTTP/2 (prior knowledge,
//! or by ALPN over TLS) on one port, a cap on open connections, deadlines
//! that every connection must meet, and a graceful stop bounded by a drain
//! timeout.
//!
//! Every connection must make progress. Each is watched from the outside
//! (its socket reads, and the requests it hands to the router), and closed
//! when, with no request in flight, it misses its deadline:
//!
//! - from connecting until the first request head is complete (HTTP/1.1),
//!   or until the HTTP/2 preface and the client's SETTINGS frame have
//!   arrived: `header_read_timeout`. This covers the TLS handshake, when
//!   the listener has TLS, and telling the protocols apart, which
//!   hyper-util leaves without a deadline;
//! - between requests: `idle_timeout`, and on HTTP/1.1, once the next
//!   head's first byte has arrived, `header_read_timeout` for the rest;
//! - an HTTP/2 connection told to close (a GOAWAY, when idle too long or
//!   when the server stops) gets `http2_ping_timeout` to finish closing.
//!
//! HTTP/2 connections are also pinged (`http2_ping_interval`), so a peer
//! that has gone away is noticed even while a request is in flight.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use mamey_core::{InServiceScope, ServiceScope};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HttpConfig;
use crate::problem::Problem;
use crate::tls::ServerTls;

mod progress;

use progress::{Tracked, Watch, Watched};

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections open at once; further ones wait in the accept backlog.
    pub(crate) max_connections: usize,
    /// Longest a client may take from connecting to a complete first
    /// request head (HTTP/1.1) or to the HTTP/2 preface and SETTINGS, and
    /// to finish a later request head from its first byte (HTTP/1.1); then
    /// the connection is closed. Stops slow and silent clients from
    /// holding connections.
    pub(crate) header_read_timeout: Duration,
}

/// Everything [`serve`] needs to know: the limits, the other connection
/// deadlines and the drain timeout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Connections at once and the head deadline.
    pub(crate) limits: Limits,
    /// Longest a connection may stay open with no request in flight.
    pub(crate) idle_timeout: Duration,
    /// How often an HTTP/2 connection is pinged; `None` for never.
    pub(crate) http2_ping_interval: Option<Duration>,
    /// How long a ping (or a GOAWAY) may go unacknowledged before the
    /// connection is closed.
    pub(crate) http2_ping_timeout: Duration,
    /// How long a stop waits for connections to finish their requests
    /// before cutting them.
    pub(crate) drain_timeout: Duration,
    /// Longest request URI answered; longer ones get a 414 problem.
    pub(crate) max_uri_length: usize,
    /// Largest total of header names and values; more gets a 431 problem.
    pub(crate) max_header_bytes: usize,
}

impl Settings {
    /// How much of a request head hyper itself buffers: room for the
    /// longest URI and headers mamey answers with a problem, and more, so
    /// that hyper's own bare 414/431 (which has no body) is left for heads
    /// far beyond both limits.
    fn head_buffer(&self) -> usize {
        self.max_uri_length
            .saturating_add(self.max_header_bytes)
            .saturating_add(16 * 1024)
            .max(8 * 1024)
    }

    /// The problem for a request head over the limits, if it is.
    fn oversized(&self, request: &Request<Incoming>) -> Option<Problem> {
        let uri = request
            .uri()
            .path_and_query()
            .map_or(0, |p| p.as_str().len());
        if uri > self.max_uri_length {
            return Some(Problem::new(
                StatusCode::URI_TOO_LONG,
                "request.uri_too_long",
                format!(
                    "the request URI is longer than `http.max_uri_length` ({} bytes)",
                    self.max_uri_length
                ),
            ));
        }
        let headers: usize = request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        (headers > self.max_header_bytes).then(|| {
            Problem::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request.headers_too_large",
                format!(
                    "the request headers are larger than `http.max_header_bytes` ({} bytes)",
                    self.max_header_bytes
                ),
            )
        })
    }
}

impl Settings {
    /// The settings from the `http` section.
    pub(crate) fn from_config(config: &HttpConfig) -> Self {
        Self {
            limits: Limits {
                max_connections: config.max_connections,
                header_read_timeout: config.header_read_timeout,
            },
            idle_timeout: config.idle_timeout,
            http2_ping_interval: (!config.http2_ping_interval.is_zero())
                .then_some(config.http2_ping_interval),
            http2_ping_timeout: config.http2_ping_timeout,
            drain_timeout: config.drain_timeout,
            max_uri_length: config.max_uri_length,
            max_header_bytes: config.max_header_bytes,
        }
    }
}

impl From<Limits> for Settings {
    /// `limits`, and the `http` section's defaults for the rest.
    fn from(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::from_config(&HttpConfig::default())
        }
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `stop`
/// is cancelled, then stops accepting, lets each connection finish the
/// requests it has started (HTTP/2 connections get a GOAWAY), and returns
/// when all have closed, or once the drain timeout has passed, cutting the
/// connections still open.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    settings: impl Into<Settings>,
    tls: Option<ServerTls>,
    stop: CancellationToken,
) {
    let settings: Settings = settings.into();
    let slots = Arc::new(Semaphore::new(settings.limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let cut = CancellationToken::new();
    let mut builder = Builder::new(ScopedExecutor {
        scope: ServiceScope::current(),
    });
    builder
        .http1()
        .timer(TokioTimer::new())
        // The watch below enforces the head deadlines; hyper's own timer
        // (which runs from the end of one response to the end of the next
        // head) stays as a backstop a little beyond the longest wait the
        // watch allows.
        .header_read_timeout(
            settings
                .idle_timeout
                .saturating_add(settings.limits.header_read_timeout),
        )
        // hyper's default cap of 100 header fields stays: setting any cap
        // makes hyper fill a header table that size on every request (a
        // cap of 1024 cost ~10 k instructions a request, a sixth of the
        // pipeline). Over 100 fields, hyper answers 431 itself, without a
        // problem body; within it, `max_header_bytes` answers with one.
        .max_buf_size(settings.head_buffer());
    builder
        .http2()
        .max_header_list_size(u32::try_from(settings.head_buffer()).unwrap_or(u32::MAX))
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.http2_ping_interval)
        .keep_alive_timeout(settings.http2_ping_timeout);
    let builder = Arc::new(builder);
    loop {
        let slot = tokio::select! {
            () = stop.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: back off, keep serving.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (builder, app, tls) = (Arc::clone(&builder), app.clone(), tls.clone());
        let (stop, cut) = (stop.clone(), cut.clone());
        // Each connection, and each HTTP/2 stream (`ScopedExecutor`), in
        // the service's scope: its requests log and count as its own.
        connections.spawn(
            async move {
                let _slot = slot;
                let opened = Instant::now();
                let connection = Connection {
                    peer,
                    opened,
                    builder,
                    app,
                    settings,
                    stop,
                    cut,
                };
                let Some(tls) = tls else {
                    return connection.serve(stream).await;
                };
                // The handshake is part of getting going: it shares the first
                // head's deadline, counted from connecting.
                let deadline = opened + settings.limits.header_read_timeout;
                let handshake = tokio::select! {
                    stream = tls.handshake(stream, peer, deadline) => stream,
                    () = connection.stop.cancelled() => None,
                    () = connection.cut.cancelled() => None,
                };
                if let Some(stream) = handshake {
                    connection.serve(stream).await;
                }
            }
            .in_current_service(),
        );
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(settings.drain_timeout, connections.wait())
        .await
        .is_err()
    {
        let open = connections.len();
        cut.cancel();
        tracing::warn!(
            cut = open,
            drain_timeout = %mamey_core::config::duration::format(settings.drain_timeout),
            "cut {open} connection(s) still open when the drain timeout ran out"
        );
        connections.wait().await;
    }
}

/// Spawns the tasks hyper asks for (one per HTTP/2 stream) on tokio, in the
/// service scope current where the listener started: task locals do not
/// cross a spawn by themselves.
#[derive(Clone, Debug)]
struct ScopedExecutor {
    scope: Option<ServiceScope>,
}

impl<F> hyper::rt::Executor<F> for ScopedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future.in_service(self.scope.clone()));
    }
}

/// One accepted connection, and what serving it needs.
struct Connection {
    peer: SocketAddr,
    /// When it was accepted: the first deadline counts from here.
    opened: Instant,
    builder: Arc<Builder<ScopedExecutor>>,
    app: Router,
    settings: Settings,
    /// The server is stopping: finish the requests in flight.
    stop: CancellationToken,
    /// The drain timeout ran out: close now.
    cut: CancellationToken,
}

impl Connection {
    /// Serves HTTP on `stream` (a socket, or a TLS stream over one) until
    /// the peer closes it, it misses a deadline, or the server cuts it.
    async fn serve<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (peer, settings, stop, cut) = (self.peer, self.settings, self.stop, self.cut);
        let watch = Arc::new(Watch::new(self.opened));
        let io = Watched {
            stream,
            watch: Arc::clone(&watch),
        };
        let service = Tracked {
            app: self.app,
            peer,
            watch: Arc::clone(&watch),
            settings,
        };
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        let mut connection = std::pin::pin!(connection);
        let mut stopping = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    return;
                }
                () = watch.stalled(&settings) => {
                    if watch.close_gracefully() {
                        // An idle HTTP/2 connection: a GOAWAY first.
                        connection.as_mut().graceful_shutdown();
                    } else {
                        tracing::debug!(%peer, "connection closed: no progress within its deadline");
                        return;
                    }
                }
                () = stop.cancelled(), if !stopping => {
                    stopping = true;
                    watch.close_gracefully();
                    connection.as_mut().graceful_shutdown();
                }
                () = cut.cancelled() => return,
            }
        }
    }
}

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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HttpConfig;
use crate::problem::Problem;
use crate::tls::ServerTls;

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
    let mut builder = Builder::new(TokioExecutor::new());
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
        connections.spawn(async move {
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
        });
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

/// One accepted connection, and what serving it needs.
struct Connection {
    peer: SocketAddr,
    /// When it was accepted: the first deadline counts from here.
    opened: Instant,
    builder: Arc<Builder<TokioExecutor>>,
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

/// The first bytes of an HTTP/2 connection with prior knowledge.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The preface and the header of the frame after it (the client's SETTINGS).
const H2_START: usize = H2_PREFACE.len() + 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Unknown,
    Http1,
    Http2,
}

/// What is known of one connection's progress.
struct Progress {
    protocol: Protocol,
    opened: Instant,
    /// Bytes read so far, counted until the handshake is done.
    read: usize,
    /// The first bytes read, to tell the protocols apart and to find the
    /// length of the client's first HTTP/2 frame.
    start: [u8; H2_START],
    /// HTTP/1.1: a first request head has arrived. HTTP/2: the preface and
    /// the client's SETTINGS have.
    handshake_done: bool,
    /// Requests handed to the router and not finished (response body sent
    /// or dropped).
    in_flight: usize,
    /// When the last request finished (or the handshake, for HTTP/2).
    idle_since: Instant,
    /// HTTP/1.1: when the first byte after the last request came.
    head_started: Option<Instant>,
    /// When the connection was told to close.
    closing: Option<Instant>,
}

impl Progress {
    /// When the connection has stalled, if it has no request in flight.
    fn deadline(&self, settings: &Settings) -> Option<Instant> {
        if self.in_flight > 0 {
            return None;
        }
        if !self.handshake_done {
            return Some(self.opened + settings.limits.header_read_timeout);
        }
        Some(match (self.protocol, self.closing) {
            (Protocol::Http2, Some(closing)) => {
                closing.max(self.idle_since) + settings.http2_ping_timeout
            }
            (Protocol::Http2, None) => self.idle_since + settings.idle_timeout,
            (Protocol::Http1 | Protocol::Unknown, _) => match self.head_started {
                Some(started) => started + settings.limits.header_read_timeout,
                None => self.idle_since + settings.idle_timeout,
            },
        })
    }

    /// Notes bytes read from the socket; `true` when the deadline may have
    /// moved closer.
    fn on_read(&mut self, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return false;
        }
        if self.protocol == Protocol::Http1 {
            if self.handshake_done && self.in_flight == 0 && self.head_started.is_none() {
                self.head_started = Some(Instant::now());
                return true;
            }
            return false;
        }
        if self.handshake_done {
            return false;
        }
        let known = self.read.min(H2_START);
        let take = (H2_START - known).min(bytes.len());
        self.start[known..known + take].copy_from_slice(&bytes[..take]);
        self.read = self.read.saturating_add(bytes.len());
        let seen = &self.start[..self.read.min(H2_PREFACE.len())];
        if seen != &H2_PREFACE[..seen.len()] {
            self.protocol = Protocol::Http1;
            return false;
        }
        if self.read >= H2_PREFACE.len() {
            self.protocol = Protocol::Http2;
        }
        if self.read >= H2_START {
            let [a, b, c] = [self.start[24], self.start[25], self.start[26]];
            let length = (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c);
            if self.read >= H2_START + length {
                self.handshake_done = true;
                self.idle_since = Instant::now();
                // From the header deadline to the idle one, maybe sooner.
                return true;
            }
        }
        false
    }
}

/// One connection's progress, shared by its socket, its requests and the
/// task serving it.
struct Watch {
    progress: Mutex<Progress>,
    /// Woken whenever the deadline may have moved closer (or appeared, as
    /// the last request finished). A deadline that moves later needs no
    /// wake-up: the old one passing makes the watch look again.
    changed: Notify,
}

impl Watch {
    fn new(opened: Instant) -> Self {
        Self {
            progress: Mutex::new(Progress {
                protocol: Protocol::Unknown,
                opened,
                read: 0,
                start: [0; H2_START],
                handshake_done: false,
                in_flight: 0,
                idle_since: opened,
                head_started: None,
                closing: None,
            }),
            changed: Notify::new(),
        }
    }

    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves once the connection has had no request in flight past its
    /// deadline.
    async fn stalled(&self, settings: &Settings) {
        loop {
            let deadline = self.progress().deadline(settings);
            match deadline {
                Some(deadline) if Instant::now() >= deadline => return,
                Some(deadline) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }

    /// Marks the connection as closing; `true` when it is worth closing
    /// gracefully (an HTTP/2 connection past its handshake, not closing
    /// already), `false` when it should just be dropped.
    fn close_gracefully(&self) -> bool {
        let mut progress = self.progress();
        if progress.closing.is_some() {
            return false;
        }
        progress.closing = Some(Instant::now());
        progress.protocol == Protocol::Http2 && progress.handshake_done
    }

    /// A request has reached the router.
    fn begin(self: &Arc<Self>) -> InFlight {
        let mut progress = self.progress();
        progress.in_flight += 1;
        progress.handshake_done = true;
        progress.head_started = None;
        InFlight(Arc::clone(self))
    }
}

/// A request in flight on a connection, until dropped.
struct InFlight(Arc<Watch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut progress = self.0.progress();
        progress.in_flight = progress.in_flight.saturating_sub(1);
        if progress.in_flight == 0 {
            progress.idle_since = Instant::now();
            progress.head_started = None;
            drop(progress);
            self.0.changed.notify_one();
        }
    }
}

/// The socket (or the TLS stream over it), reporting what it reads to the
/// watch.
struct Watched<S> {
    stream: S,
    watch: Arc<Watch>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() > before
            && self.watch.progress().on_read(&buf.filled()[before..])
        {
            self.watch.changed.notify_one();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The router, counting the requests in flight on one connection, behind
/// the check of the head's size.
#[derive(Clone)]
struct Tracked {
    app: Router,
    watch: Arc<Watch>,
    settings: Settings,
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.watch.begin();
        if let Some(problem) = self.settings.oversized(&request) {
            let response = axum::response::IntoResponse::into_response(problem);
            return Box::pin(std::future::ready(Ok(response.map(|body| TrackedBody {
                body,
                in_flight: Some(in_flight),
            }))));
        }
        let response = tower::ServiceExt::oneshot(self.app.clone(), request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody {
                body,
                in_flight: Some(in_flight),
            }))
        })
    }
}

/// A response body; its request is in flight until it ends or is dropped.
struct TrackedBody {
    body: axum::body::Body,
    in_flight: Option<InFlight>,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = polled {
            self.in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

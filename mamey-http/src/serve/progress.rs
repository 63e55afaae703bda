//! Watching one connection's progress: the socket's reads, the requests in
//! flight, and the deadline that follows from them.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use axum::Router;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Settings;

/// The first bytes of an HTTP/2 connection with prior knowledge.
pub(super) const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The preface and the header of the frame after it (the client's SETTINGS).
pub(super) const H2_START: usize = H2_PREFACE.len() + 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Unknown,
    Http1,
    Http2,
}

/// What is known of one connection's progress.
pub(super) struct Progress {
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
    pub(super) fn deadline(&self, settings: &Settings) -> Option<Instant> {
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
    pub(super) fn on_read(&mut self, bytes: &[u8]) -> bool {
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
pub(super) struct Watch {
    progress: Mutex<Progress>,
    /// Woken whenever the deadline may have moved closer (or appeared, as
    /// the last request finished). A deadline that moves later needs no
    /// wake-up: the old one passing makes the watch look again.
    changed: Notify,
}

impl Watch {
    pub(super) fn new(opened: Instant) -> Self {
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

    pub(super) fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves once the connection has had no request in flight past its
    /// deadline.
    pub(super) async fn stalled(&self, settings: &Settings) {
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
    pub(super) fn close_gracefully(&self) -> bool {
        let mut progress = self.progress();
        if progress.closing.is_some() {
            return false;
        }
        progress.closing = Some(Instant::now());
        progress.protocol == Protocol::Http2 && progress.handshake_done
    }

    /// A request has reached the router.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        let mut progress = self.progress();
        progress.in_flight += 1;
        progress.handshake_done = true;
        progress.head_started = None;
        InFlight(Arc::clone(self))
    }
}

/// A request in flight on a connection, until dropped.
pub(super) struct InFlight(Arc<Watch>);

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
pub(super) struct Watched<S> {
    pub(super) stream: S,
    pub(super) watch: Arc<Watch>,
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
pub(super) struct Tracked {
    pub(super) app: Router,
    /// The client's address, for handlers (`ConnectInfo`) and the limits.
    pub(super) peer: std::net::SocketAddr,
    pub(super) watch: Arc<Watch>,
    pub(super) settings: Settings,
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let in_flight = self.watch.begin();
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
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
pub(super) struct TrackedBody {
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

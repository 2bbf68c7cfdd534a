//! The webhook port's connections: accepting them (TCP_NODELAY, `limits.maxConnections`),
//! the TLS handshake, the header-read and idle timeouts, serving HTTP/1.1 and HTTP/2 with
//! hyper-util, `Connection: close` once the server is unready, and the graceful drain.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Version, header};
use axum_server::tls_rustls::RustlsConfig;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::server::AppState;

/// Prepares an accepted socket: small AdmissionReview answers must not wait for Nagle's
/// algorithm to coalesce them with data that never comes.
pub fn prepare(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}

/// Accepts connections until `stop` turns true, each holding one of `limit`'s permits: at the
/// limit nothing is accepted, so new connections wait in the kernel's listen backlog (as Go's
/// `netutil.LimitListener` does) instead of being refused. Returns the drain handle of every
/// connection it started; the listener is closed when this returns.
pub async fn accept(
    listener: TcpListener,
    tls: RustlsConfig,
    router: Router,
    state: Arc<AppState>,
    limit: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                // Usually out of file descriptors: pause rather than spin on the error.
                tracing::warn!(error = %err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(err) = prepare(&stream) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        tokio::spawn(connection(
            stream,
            tls.get_inner(),
            router.clone(),
            state.clone(),
            permit,
            graceful.watcher(),
        ));
    }
    graceful
}

/// Counts an open connection for its lifetime.
struct Open(Arc<AppState>);

impl Open {
    fn new(state: Arc<AppState>) -> Self {
        state.metrics.open_connections.inc();
        Self(state)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.metrics.open_connections.dec();
    }
}

async fn connection(
    stream: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    state: Arc<AppState>,
    permit: OwnedSemaphorePermit,
    watcher: Watcher,
) {
    let _permit = permit;
    let _open = Open::new(state.clone());
    let accepted = Instant::now();
    let limits = state.engine().config().limits.clone();
    let timeouts = Timeouts {
        header: limits.header_read_timeout_millis,
        idle: limits.idle_timeout_seconds,
    };
    // The handshake is part of the first request's head: a client that connects and sends
    // nothing (or handshakes byte by byte) is cut off by the same timeout.
    let handshake = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
    let stream = match tokio::time::timeout_at(accepted + timeouts.header, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "TLS handshake failed");
            return;
        }
        Err(_elapsed) => {
            state.metrics.record_closed_connection("handshake-timeout");
            tracing::debug!("TLS handshake not completed within the header-read timeout");
            return;
        }
    };
    // HTTP/2 multiplexes frames that are not request heads (pings, window updates), so only
    // HTTP/1 connections restart the header clock on each new request's first byte.
    let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let clock = Arc::new(Clock::new(accepted, timeouts, !http2));
    let io = TokioIo::new(Timed::new(stream, clock.clone(), state.clone()));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let busy = Busy::begin(clock.clone());
        let (router, state) = (router.clone(), state.clone());
        async move {
            let http1 = request.version() < Version::HTTP_2;
            let response = router.oneshot(request.map(Body::new)).await;
            drop(busy);
            let mut response = match response {
                Ok(response) => response,
                Err(never) => match never {},
            };
            // Once unready (SIGTERM, shutdown delay), every HTTP/1 answer asks the client to
            // close: it then opens its next connection through the Service, to a ready
            // replica, and no request is ever lost on a connection closed under it.
            if http1 && !state.is_ready() {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response)
        }
    });
    // No hyper timer: hyper's own header_read_timeout also runs while a keep-alive
    // connection is idle, closing it under a client that may be sending on it (see Clock).
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(err) = watcher.watch(builder.serve_connection(io, service)).await {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    idle: Duration,
}

/// Where a connection is in its request cycle, and so which timeout applies.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// A request head is arriving (or, on a new connection, expected) since then: the
    /// header-read timeout applies.
    Head(Instant),
    /// This many requests are being answered; their bodies and reviews have their own
    /// deadline (the API server's `?timeout=`).
    Busy(u32),
    /// Nothing outstanding since then: the idle timeout applies.
    Idle(Instant),
}

/// The header-read and idle timeouts of one connection. hyper's `header_read_timeout` starts
/// when hyper begins waiting for a head, that is also as soon as a keep-alive connection goes
/// idle, so it would close idle pooled connections after a few seconds, racing with the API
/// server's next request on them (a POST it does not retry). Here the header clock starts with
/// a head's first byte, and idle connections get the separate, longer idle timeout.
#[derive(Debug)]
struct Clock {
    phase: Mutex<Phase>,
    timeouts: Timeouts,
    heads_restart: bool,
}

impl Clock {
    fn new(accepted: Instant, timeouts: Timeouts, heads_restart: bool) -> Self {
        Self {
            phase: Mutex::new(Phase::Head(accepted)),
            timeouts,
            heads_restart,
        }
    }

    fn update(&self, change: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        *phase = change(*phase);
    }

    fn bytes_arrived(&self) {
        if self.heads_restart {
            self.update(|phase| match phase {
                Phase::Idle(_) => Phase::Head(Instant::now()),
                other => other,
            });
        }
    }

    /// When the connection must be closed unless something happens, and why.
    fn deadline(&self) -> Option<(Instant, &'static str)> {
        match *self.phase.lock().unwrap_or_else(PoisonError::into_inner) {
            Phase::Head(since) => Some((since + self.timeouts.header, "header-timeout")),
            Phase::Idle(since) => Some((since + self.timeouts.idle, "idle-timeout")),
            Phase::Busy(_) => None,
        }
    }
}

/// One request being answered on a connection, from its complete head to its response.
struct Busy(Arc<Clock>);

impl Busy {
    fn begin(clock: Arc<Clock>) -> Self {
        clock.update(|phase| match phase {
            Phase::Busy(n) => Phase::Busy(n.saturating_add(1)),
            Phase::Head(_) | Phase::Idle(_) => Phase::Busy(1),
        });
        Self(clock)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.update(|phase| match phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        });
    }
}

/// The connection's stream with its clock: a read that waits past the current deadline fails
/// with `TimedOut`, which makes hyper close the connection.
struct Timed<S> {
    inner: S,
    clock: Arc<Clock>,
    sleep: Pin<Box<Sleep>>,
    state: Arc<AppState>,
}

impl<S> Timed<S> {
    fn new(inner: S, clock: Arc<Clock>, state: Arc<AppState>) -> Self {
        Self {
            inner,
            clock,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            state,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.clock.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                let Some((deadline, reason)) = this.clock.deadline() else {
                    return Poll::Pending;
                };
                this.sleep.as_mut().reset(deadline);
                if this.sleep.as_mut().poll(cx).is_ready() {
                    this.state.metrics.record_closed_connection(reason);
                    tracing::debug!(reason, "closing a connection");
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, reason)));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_have_tcp_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.ok();
        let addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let (Some(listener), Some(addr)) = (listener, addr) else {
            unreachable!("cannot bind a loopback listener")
        };
        let client = tokio::spawn(TcpStream::connect(addr));
        let accepted = listener.accept().await.ok();
        let Some((stream, _)) = accepted else {
            unreachable!("nothing accepted")
        };
        assert_eq!(stream.nodelay().ok(), Some(false), "the kernel default");
        assert!(prepare(&stream).is_ok());
        assert_eq!(stream.nodelay().ok(), Some(true));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn the_header_clock_runs_from_a_head_not_while_idle() {
        let timeouts = Timeouts {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(120),
        };
        let accepted = Instant::now();
        let clock = Arc::new(Clock::new(accepted, timeouts, true));
        assert_eq!(
            clock.deadline(),
            Some((accepted + timeouts.header, "header-timeout"))
        );
        let busy = Busy::begin(clock.clone());
        assert_eq!(
            clock.deadline(),
            None,
            "a request in progress has its own deadline"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(busy);
        let idle_since = Instant::now();
        assert_eq!(
            clock.deadline(),
            Some((idle_since + timeouts.idle, "idle-timeout"))
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        clock.bytes_arrived();
        assert_eq!(
            clock.deadline(),
            Some((Instant::now() + timeouts.header, "header-timeout"))
        );
        // HTTP/2: frames between requests do not start a header clock.
        let h2 = Arc::new(Clock::new(accepted, timeouts, false));
        drop(Busy::begin(h2.clone()));
        let idle_since = Instant::now();
        h2.bytes_arrived();
        assert_eq!(
            h2.deadline(),
            Some((idle_since + timeouts.idle, "idle-timeout"))
        );
    }
}

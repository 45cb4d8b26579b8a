//! The listening socket: accepts connections and serves the router over HTTP/1.1 with
//! the limits a socket open to a network needs.
//!
//! - At most `max_connections` connections are open at once; one more is answered
//!   `503` with `Retry-After` and closed at once, so a flood of idle sockets cannot
//!   starve the process of file descriptors or memory.
//! - A client that has started a request must send its whole head within
//!   `header_read_timeout`; one that trickles header lines is disconnected.
//! - A keep-alive connection that carries no request for `idle_timeout` is closed.
//! - The request body and the handler are bounded by the router's request timeout.
//!
//! HTTP/2 is not served: lockbridge sits behind a TLS-terminating proxy, which speaks
//! HTTP/1.1 to it; the smaller protocol is the smaller attack surface.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The socket-level limits (the `[server]` settings).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// How long requests in flight may take to finish at shutdown.
    pub drain_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the requests in
/// flight finish (within `drain_timeout`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("lockbridge_http_connections_refused_total").increment(1);
            tokio::spawn(refuse(stream));
            continue;
        };
        let app = app.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            metrics::gauge!("lockbridge_http_connections_open").increment(1.0);
            serve_connection(stream, peer, app, limits, stop).await;
            metrics::gauge!("lockbridge_http_connections_open").decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    stop.cancel();
    connections.close();
    if tokio::time::timeout(limits.drain_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in flight after {} s at shutdown were cut off",
            limits.drain_timeout.as_secs()
        );
    }
    Ok(())
}

/// The answer to a connection over `max_connections`: a complete HTTP response, so the
/// client learns what happened, then the socket is closed.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = concat!(
        r#"{"code":"too_many_connections","#,
        r#""detail":"lockbridge has as many open connections as server.max_connections allows","#,
        r#""hint":"retry after the number of seconds in Retry-After; reuse keep-alive connections instead of opening many"}"#
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// What a connection is doing, for its watchdog.
const IDLE: u8 = 0;
const READING_HEAD: u8 = 1;
const BUSY: u8 = 2;

/// Shared by a connection's socket wrapper, its service and its watchdog.
struct Activity {
    phase: AtomicU8,
    /// When the phase began, in milliseconds after `origin`.
    since_ms: AtomicU64,
    origin: Instant,
    changed: Notify,
}

impl Activity {
    /// A new connection must start with a request head: a client that connects and
    /// sends nothing is held to the header limit, not the idle one.
    fn new() -> Self {
        Self {
            phase: AtomicU8::new(READING_HEAD),
            since_ms: AtomicU64::new(0),
            origin: Instant::now(),
            changed: Notify::new(),
        }
    }

    fn enter(&self, phase: u8) {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.since_ms.store(now, Ordering::Release);
        self.phase.store(phase, Ordering::Release);
        self.changed.notify_one();
    }

    /// Bytes arrived: on an idle connection they start a request head.
    fn bytes_read(&self) {
        if self
            .phase
            .compare_exchange(IDLE, READING_HEAD, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.since_ms.store(now, Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// When the connection must be closed if nothing changes, and why.
    fn deadline(&self, limits: &ServerLimits) -> Option<(Instant, &'static str)> {
        let since = self.origin + Duration::from_millis(self.since_ms.load(Ordering::Acquire));
        match self.phase.load(Ordering::Acquire) {
            IDLE => Some((since + limits.idle_timeout, "idle")),
            READING_HEAD => Some((since + limits.header_read_timeout, "header_read")),
            _ => None,
        }
    }
}

/// A socket that tells its [`Activity`] when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ServerLimits,
    stop: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service_activity = activity.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        service_activity.enter(BUSY);
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        let activity = service_activity.clone();
        async move {
            let response = app.oneshot(req.map(axum::body::Body::new)).await;
            activity.enter(IDLE);
            response.map_err(|never: Infallible| match never {})
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper's own header timer also runs while a keep-alive connection waits for its
    // next request, which would cut idle connections at the header limit: the
    // watchdog below keeps the two limits apart instead.
    builder.timer(TokioTimer::new()).header_read_timeout(None);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let deadline = activity.deadline(&limits);
        let sleep = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = sleep => {
                // Re-read: the phase may have changed just before the timer fired.
                if let Some((at, reason)) = activity.deadline(&limits)
                    && at <= Instant::now()
                {
                    metrics::counter!("lockbridge_http_connections_timed_out_total", "reason" => reason)
                        .increment(1);
                    tracing::debug!(reason, "closing a connection that sent nothing in time");
                    return;
                }
            }
            () = activity.changed.notified() => {}
            () = stop.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

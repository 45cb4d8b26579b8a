//! A TCP proxy on 127.0.0.1 in front of one target address, with controls a test calls
//! to make the link misbehave mid-operation: [`Proxy::cut`] (close every open
//! connection, both directions), [`Proxy::refuse`] (close new connections at once),
//! [`Proxy::delay`] (latency added to every chunk), [`Proxy::pause`] /
//! [`Proxy::resume`] (stall forwarding without closing), and counts of connections
//! and bytes.
//!
//! It forwards bytes and nothing else, so TLS (LDAPS) and PostgreSQL's protocol pass
//! through unchanged: point the daemon's `url` or `port` at [`Proxy::port`]. Plain
//! threads, no async runtime: a test's runtime may be the one being starved.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a stalled pump looks whether it was resumed or cut.
const POLL: Duration = Duration::from_millis(5);

#[derive(Default)]
struct Shared {
    refuse: AtomicBool,
    paused: AtomicBool,
    stopping: AtomicBool,
    delay_us: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    cuts: AtomicU64,
    to_target: AtomicU64,
    to_client: AtomicU64,
    /// Open connections: the client's and the target's socket, and a flag the pumps
    /// read so that a cut also ends a pump stalled by `pause`.
    open: Mutex<Vec<Link>>,
}

struct Link {
    client: TcpStream,
    target: TcpStream,
    closed: Arc<AtomicBool>,
}

impl Link {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.target.shutdown(Shutdown::Both);
    }
}

/// Counters since the proxy started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted and forwarded.
    pub accepted: u64,
    /// Connections closed at once because of [`Proxy::refuse`] (or an unreachable target).
    pub refused: u64,
    /// Connections open now.
    pub open: u64,
    /// Connections closed by [`Proxy::cut`].
    pub cut: u64,
    /// Bytes forwarded from clients to the target.
    pub bytes_to_target: u64,
    /// Bytes forwarded from the target to clients.
    pub bytes_to_client: u64,
}

/// A running proxy. Stops (closing every connection) on drop.
pub struct Proxy {
    /// The port on 127.0.0.1 clients connect to.
    pub port: u16,
    /// Where connections are forwarded.
    pub target: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("port", &self.port)
            .field("target", &self.target)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Proxy {
    /// Starts a proxy on a kernel-chosen port of 127.0.0.1 in front of `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("proxy-{port}"))
                .spawn(move || accept_loop(listener, target, shared))
                .expect("start the proxy thread")
        };
        Proxy {
            port,
            target,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// In front of `127.0.0.1:port`.
    pub fn to_port(port: u16) -> Proxy {
        Proxy::start(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Closes every open connection now, in both directions. New connections are
    /// forwarded as before (unless refused).
    pub fn cut(&self) {
        let links: Vec<Link> = std::mem::take(&mut *self.lock());
        for link in &links {
            link.close();
        }
        self.shared
            .cuts
            .fetch_add(links.len() as u64, Ordering::SeqCst);
    }

    /// While `true`, new connections are accepted and closed at once (as a firewall
    /// resetting them would); open ones are left alone.
    pub fn refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
    }

    /// Cuts every connection and refuses new ones: the link is down.
    pub fn down(&self) {
        self.refuse(true);
        self.cut();
    }

    /// Undoes [`Proxy::down`], [`Proxy::pause`] and [`Proxy::delay`].
    pub fn up(&self) {
        self.delay(Duration::ZERO);
        self.refuse(false);
        self.resume();
    }

    /// Adds `latency` before every chunk forwarded, in either direction.
    pub fn delay(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.shared.delay_us.store(us, Ordering::SeqCst);
    }

    /// Stops forwarding (connections stay open, bytes wait) until [`Proxy::resume`].
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
    }

    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            accepted: s.accepted.load(Ordering::SeqCst),
            refused: s.refused.load(Ordering::SeqCst),
            open: self.lock().len() as u64,
            cut: s.cuts.load(Ordering::SeqCst),
            bytes_to_target: s.to_target.load(Ordering::SeqCst),
            bytes_to_client: s.to_client.load(Ordering::SeqCst),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Link>> {
        self.shared.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        self.cut();
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if shared.refuse.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let closed = Arc::new(AtomicBool::new(false));
        let clones = (
            client.try_clone(),
            upstream.try_clone(),
            client.try_clone(),
            upstream.try_clone(),
        );
        let (Ok(c_read), Ok(t_write), Ok(c_write), Ok(t_read)) = clones else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        shared
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Link {
                client,
                target: upstream,
                closed: closed.clone(),
            });
        for (from, to, up) in [(c_read, t_write, true), (t_read, c_write, false)] {
            let shared = shared.clone();
            let closed = closed.clone();
            let _ = std::thread::Builder::new()
                .name("proxy-pump".into())
                .spawn(move || pump(from, to, up, &shared, &closed));
        }
    }
}

/// Copies `from` to `to` until either end closes or the link is cut; then closes the
/// whole link, so that one side going away is seen by the other.
fn pump(mut from: TcpStream, mut to: TcpStream, up: bool, shared: &Shared, closed: &AtomicBool) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        while shared.paused.load(Ordering::SeqCst) && !closed.load(Ordering::SeqCst) {
            std::thread::sleep(POLL);
        }
        let delay = shared.delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay));
        }
        if closed.load(Ordering::SeqCst) {
            break;
        }
        // Counted before the write, so that once the peer has the bytes, so do the counts.
        let counter = if up {
            &shared.to_target
        } else {
            &shared.to_client
        };
        counter.fetch_add(n as u64, Ordering::SeqCst);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    closed.store(true, Ordering::SeqCst);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    // Forget the link (a cut may have taken it already).
    let mut open = shared.open.lock().unwrap_or_else(|e| e.into_inner());
    open.retain(|l| !l.closed.load(Ordering::SeqCst));
}

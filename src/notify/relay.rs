//! Connections to the SMTP relay: opened here, kept in a small pool, reused.
//!
//! Why not lettre's own pool: lettre writes a message's end (`CRLF.CRLF`) in a write of
//! its own after the body, and on a socket with Nagle's algorithm on (lettre leaves it
//! on) that small write waits for the relay's delayed acknowledgement of the body,
//! about 40 ms: some 22 messages a second per connection, whatever the relay's speed.
//! Opening the socket here lets lockbridge set `TCP_NODELAY`; lettre still speaks SMTP
//! over it (EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA). TLS from the first byte (port
//! 465) is done here with rustls, verified like STARTTLS: the system's trust store
//! plus `mail.ca_file`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::NotifyError;

/// An idle connection is closed after this long.
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// An idle connection older than this is checked with NOOP before it is used again;
/// a younger one is trusted (relays keep idle sessions for minutes: Postfix 300 s).
const TRUST_IDLE: Duration = Duration::from_secs(5);

/// How the connection is protected once open.
#[derive(Clone)]
pub(super) enum Protection {
    None,
    /// STARTTLS after the first EHLO; refused when the relay does not offer it.
    StartTls(TlsParameters),
    /// TLS from the first byte.
    Wrapper(tokio_rustls::TlsConnector, ServerName<'static>),
}

/// Where and how to connect.
pub(super) struct RelayTarget {
    pub host: String,
    pub port: u16,
    pub protection: Protection,
    pub credentials: Option<Credentials>,
    /// Time allowed for connecting and for each step of a delivery.
    pub timeout: Duration,
}

/// At most `size` connections, each used by one delivery at a time.
pub(super) struct RelayPool {
    target: RelayTarget,
    hello: ClientId,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    slots: Semaphore,
}

impl RelayPool {
    pub(super) fn new(target: RelayTarget, size: usize) -> RelayPool {
        RelayPool {
            target,
            hello: ClientId::default(),
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(size.max(1)),
        }
    }

    /// Hands `message` to the relay over a pooled connection (a new one when none is
    /// idle). A connection that failed is closed, never reused.
    pub(super) async fn send(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<(), NotifyError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| NotifyError::RelayNotResponding)?;
        let mut conn = match self.reusable().await {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        match tokio::time::timeout(self.target.timeout * 4, conn.send(envelope, message)).await {
            Ok(Ok(_)) => {
                self.put_back(conn);
                Ok(())
            }
            Ok(Err(e)) => {
                conn.abort().await;
                Err(NotifyError::from_smtp(e))
            }
            Err(_) => {
                conn.abort().await;
                Err(NotifyError::Timeout(self.target.timeout * 4))
            }
        }
    }

    /// Opens a connection (TLS and authentication included) and closes it politely,
    /// for `check-config`.
    pub(super) async fn test_connection(&self) -> Result<(), NotifyError> {
        let mut conn = self.connect().await?;
        let answered = conn.test_connected().await;
        let _ = tokio::time::timeout(self.target.timeout, conn.quit()).await;
        if answered {
            Ok(())
        } else {
            Err(NotifyError::RelayNotResponding)
        }
    }

    /// The most recently used idle connection that is still fit for use.
    async fn reusable(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let (mut conn, since) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
            let idle = since.elapsed();
            if idle >= IDLE_LIMIT || conn.has_broken() {
                conn.abort().await;
                continue;
            }
            if idle < TRUST_IDLE {
                return Some(conn);
            }
            match tokio::time::timeout(self.target.timeout, conn.test_connected()).await {
                Ok(true) => return Some(conn),
                _ => conn.abort().await,
            }
        }
    }

    fn put_back(&self, conn: AsyncSmtpConnection) {
        if !conn.has_broken() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((conn, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, NotifyError> {
        let t = &self.target;
        let timeout = t.timeout;
        let within = |what: &'static str| {
            move |_| {
                NotifyError::Connect(format!(
                    "{what} did not finish within {} s",
                    timeout.as_secs()
                ))
            }
        };
        let tcp = tokio::time::timeout(timeout, TcpStream::connect((t.host.as_str(), t.port)))
            .await
            .map_err(within("connecting to the relay"))?
            .map_err(|e| {
                NotifyError::Connect(format!("cannot connect to {}:{}: {e}", t.host, t.port))
            })?;
        // The point of this module: see the top.
        tcp.set_nodelay(true)
            .map_err(|e| NotifyError::Connect(format!("cannot set TCP_NODELAY: {e}")))?;
        let stream: Box<dyn AsyncTokioStream> = match &t.protection {
            Protection::Wrapper(connector, name) => Box::new(TlsWrapped(
                tokio::time::timeout(timeout, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(within("the TLS handshake with the relay"))?
                    .map_err(|e| {
                        NotifyError::Connect(format!("TLS with {}:{} failed: {e}", t.host, t.port))
                    })?,
            )),
            _ => Box::new(tcp),
        };
        let setup = async {
            let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello).await?;
            if let Protection::StartTls(parameters) = &t.protection {
                conn.starttls(parameters.clone(), &self.hello).await?;
            }
            if let Some(credentials) = &t.credentials {
                conn.auth(DEFAULT_MECHANISMS, credentials).await?;
            }
            Ok::<_, lettre::transport::smtp::Error>(conn)
        };
        tokio::time::timeout(timeout * 4, setup)
            .await
            .map_err(within("greeting the relay"))?
            .map_err(NotifyError::from_smtp)
    }
}

/// A rustls client stream, in the shape lettre takes an already-open stream.
#[derive(Debug)]
struct TlsWrapped(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for TlsWrapped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsWrapped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsWrapped {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

/// The rustls connector for TLS from the first byte: the system's trust store plus the
/// PEM certificates in `ca_pem` (already checked by the caller).
pub(super) fn wrapper_connector(
    ca_pem: Option<&[u8]>,
) -> Result<tokio_rustls::TlsConnector, String> {
    let roots = trust_roots(ca_pem)?;
    if roots.is_empty() {
        return Err(
            "the system trust store has no usable CA certificate: set mail.ca_file to the CA \
             that signed the relay's certificate"
                .into(),
        );
    }
    Ok(tokio_rustls::TlsConnector::from(Arc::new(client_config(
        roots,
    )?)))
}

/// The system's trust store plus the PEM certificates in `ca_pem`.
pub(super) fn trust_roots(ca_pem: Option<&[u8]>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(pem) = ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("not valid PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("a certificate cannot be used as a trust anchor: {e}"))?;
        }
    }
    Ok(roots)
}

/// A verifying rustls client configuration on the aws-lc-rs provider, the one TLS
/// stack of the crate (named explicitly: test builds also link ring, and rustls refuses
/// to guess between two providers).
pub(super) fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

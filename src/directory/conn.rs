//! Connections to the directory: URL and TLS settings, opening one connection, and the
//! bb8 manager that keeps a pool of connections bound as the service account.
//!
//! User binds never happen here on pooled connections: bind state belongs to a connection,
//! so `Directory::check_user_password` opens its own with [`open`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::error::{DirectoryError, Failure, OpKind, map_failure};
use crate::types::Secret;

/// Where and how to connect; built once from the settings by [`Endpoint::new`].
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub url: String,
    /// `host:port` (or the socket path), for messages.
    pub display: String,
    pub starttls: bool,
    pub tls: Tls,
    pub connect_timeout: Duration,
}

#[derive(Clone)]
pub(crate) enum Tls {
    /// ldap:// without StartTLS, or ldapi://.
    None,
    /// Verified against these roots.
    Verified(Arc<rustls::ClientConfig>),
    /// `tls_insecure_skip_verify`: ldap3's own no-verification config.
    Insecure,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Ldap,
    Ldaps,
    Ldapi,
}

/// Split `url` into scheme and a display form of its address, rejecting anything that is
/// not a plain `ldap://host[:port]`, `ldaps://host[:port]` or `ldapi://path` URL.
pub(crate) fn parse_url(url: &str) -> Result<(Scheme, String), DirectoryError> {
    let bad = |why: &str| {
        DirectoryError::Config(format!(
            "url {url:?} is not usable: {why} (expected ldaps://host:636, ldap://host:389 or \
             ldapi://%2Fpath%2Fto%2Fsocket)"
        ))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "ldap" => Scheme::Ldap,
        "ldaps" => Scheme::Ldaps,
        "ldapi" => Scheme::Ldapi,
        _ => return Err(bad("the scheme must be ldap, ldaps or ldapi")),
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let tail = &rest[authority.len()..];
    if !(tail.is_empty() || tail == "/") {
        return Err(bad(
            "a DN, attributes or filter in the url are not supported",
        ));
    }
    if authority.contains('@') {
        return Err(bad("credentials do not belong in the url"));
    }
    if scheme == Scheme::Ldapi {
        if authority.is_empty() {
            return Err(bad("ldapi needs the percent-encoded socket path"));
        }
        return Ok((scheme, authority.replace("%2F", "/").replace("%2f", "/")));
    }
    let default_port = if scheme == Scheme::Ldaps { 636 } else { 389 };
    // [v6]:port, host:port or host
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| bad("the port is not a number"))?,
        None => default_port,
    };
    Ok((scheme, format!("{host}:{port}")))
}

/// Install aws-lc-rs as the process-wide rustls provider unless one is installed already
/// (ldap3's own TLS config, used in insecure mode, asks for the process default).
pub(crate) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

/// Trust roots: the certificates in `ca_file`, or the system store.
pub(crate) fn load_roots(
    ca_file: Option<&std::path::Path>,
) -> Result<RootCertStore, DirectoryError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                DirectoryError::Config(format!("ca_file {} cannot be read: {e}", path.display()))
            })?;
            let mut found = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    DirectoryError::Config(format!(
                        "ca_file {} is not valid PEM: {e}",
                        path.display()
                    ))
                })?;
                roots.add(cert).map_err(|e| {
                    DirectoryError::Config(format!(
                        "ca_file {} holds a certificate that cannot be used as a trust anchor: {e}",
                        path.display()
                    ))
                })?;
                found += 1;
            }
            if found == 0 {
                return Err(DirectoryError::Config(format!(
                    "ca_file {} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
                    path.display()
                )));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::warn!(error = %e, "could not read part of the system trust store");
            }
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(DirectoryError::Config(
                    "the system trust store has no usable CA certificate: set ca_file to the CA \
                     that signed the directory's certificate"
                        .into(),
                ));
            }
        }
    }
    Ok(roots)
}

pub(crate) fn verified_config(
    roots: RootCertStore,
) -> Result<Arc<rustls::ClientConfig>, DirectoryError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DirectoryError::Config(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Endpoint {
    fn conn_settings(&self) -> LdapConnSettings {
        let s = LdapConnSettings::new()
            .set_conn_timeout(self.connect_timeout)
            .set_starttls(self.starttls);
        match &self.tls {
            Tls::None => s,
            Tls::Verified(config) => s.set_config(config.clone()),
            Tls::Insecure => s.set_no_tls_verify(true),
        }
    }

    /// Open one connection (TCP/Unix socket, then TLS or StartTLS) and start its driver task.
    /// Bounded by `connect_timeout`; no bind.
    pub(crate) async fn open(&self) -> Result<Ldap, DirectoryError> {
        let connecting = LdapConnAsync::with_settings(self.conn_settings(), &self.url);
        let (conn, ldap) = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(ldap3::LdapError::Timeout { .. })) | Err(_) => {
                return Err(DirectoryError::Unavailable(format!(
                    "no connection to {} within {:?}",
                    self.display, self.connect_timeout
                )));
            }
            Ok(Err(e)) => {
                return Err(match map_failure(OpKind::Read, &Failure::from(e)) {
                    DirectoryError::Unavailable(cause) => {
                        DirectoryError::Unavailable(format!("{cause} ({})", self.display))
                    }
                    DirectoryError::Config(cause) => {
                        DirectoryError::Config(format!("{cause} ({})", self.display))
                    }
                    DirectoryError::Protocol(cause) => {
                        DirectoryError::Unavailable(format!("{cause} ({})", self.display))
                    }
                    other => other,
                });
            }
        };
        let server = self.display.clone();
        tokio::spawn(async move {
            // Ends when the last `Ldap` handle is dropped or the server closes the socket.
            if let Err(e) = conn.drive().await {
                tracing::debug!(ldap.server = %server, error = %e, "directory connection ended");
            }
        });
        Ok(ldap)
    }
}

/// A pooled connection, bound as the service account.
pub(crate) struct ServiceConn {
    pub ldap: Ldap,
    /// Set when an operation showed the connection must not be reused.
    pub broken: bool,
}

/// bb8 manager: connect → bind as the service account → hand out.
pub(crate) struct ServiceManager {
    pub endpoint: Endpoint,
    pub bind_dn: String,
    pub bind_password: Secret,
    pub operation_timeout: Duration,
    /// Why the last connection attempt failed (cleared on success): bb8 only says "timed
    /// out", this tells the caller what actually happened.
    pub last_error: Arc<Mutex<Option<(Instant, DirectoryError)>>>,
    /// Woken on every failed connection attempt, so that callers waiting for a connection
    /// can fail at once instead of waiting out bb8's `connection_timeout`.
    pub failed: Arc<tokio::sync::Notify>,
}

impl ServiceManager {
    async fn connect_and_bind(&self) -> Result<ServiceConn, DirectoryError> {
        let mut ldap = self.endpoint.open().await?;
        let bind = ldap
            .with_timeout(self.operation_timeout.min(self.endpoint.connect_timeout))
            .simple_bind(&self.bind_dn, self.bind_password.expose())
            .await;
        match bind {
            Ok(res) if res.rc == 0 => Ok(ServiceConn {
                ldap,
                broken: false,
            }),
            Ok(res) if res.rc == 49 => Err(DirectoryError::Config(format!(
                "the directory refused the service account's credentials (bind_dn {}): check \
                 bind_dn and bind_password",
                self.bind_dn
            ))),
            Ok(res) => Err(
                match map_failure(OpKind::Bind, &Failure::from_result(&res)) {
                    DirectoryError::Protocol(cause) => DirectoryError::Config(format!(
                        "the directory refused the service account's bind (bind_dn {}): {cause}",
                        self.bind_dn
                    )),
                    other => other,
                },
            ),
            Err(ldap3::LdapError::Timeout { .. }) => Err(DirectoryError::Unavailable(format!(
                "the directory at {} did not answer the service account's bind in time",
                self.endpoint.display
            ))),
            Err(e) => Err(match map_failure(OpKind::Bind, &Failure::from(e)) {
                DirectoryError::Unavailable(cause) => DirectoryError::Unavailable(format!(
                    "{cause} while binding ({})",
                    self.endpoint.display
                )),
                other => other,
            }),
        }
    }
}

impl bb8::ManageConnection for ServiceManager {
    type Connection = ServiceConn;
    type Error = DirectoryError;

    async fn connect(&self) -> Result<ServiceConn, DirectoryError> {
        let result = self.connect_and_bind().await;
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(_) => {
                if last.take().is_some() {
                    tracing::info!(ldap.server = %self.endpoint.display, "directory connection restored");
                }
            }
            Err(e) => {
                if last.is_none() {
                    tracing::warn!(ldap.server = %self.endpoint.display, error = %e, "cannot connect to the directory");
                } else {
                    tracing::debug!(ldap.server = %self.endpoint.display, error = %e, "cannot connect to the directory");
                }
                *last = Some((Instant::now(), e.clone()));
                self.failed.notify_waiters();
            }
        }
        result
    }

    /// Cheap: only whether the driver task is still alive. A connection the server closed
    /// (restart, idle timeout) is noticed by the driver as soon as the FIN arrives.
    async fn is_valid(&self, conn: &mut ServiceConn) -> Result<(), DirectoryError> {
        if conn.broken || conn.ldap.is_closed() {
            Err(DirectoryError::Unavailable(
                "pooled connection was closed".into(),
            ))
        } else {
            Ok(())
        }
    }

    fn has_broken(&self, conn: &mut ServiceConn) -> bool {
        conn.broken || conn.ldap.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("ldaps://ldap.example.org:636").unwrap(),
            (Scheme::Ldaps, "ldap.example.org:636".into())
        );
        assert_eq!(
            parse_url("ldaps://ldap.example.org/").unwrap(),
            (Scheme::Ldaps, "ldap.example.org:636".into())
        );
        assert_eq!(
            parse_url("LDAP://10.0.0.1").unwrap(),
            (Scheme::Ldap, "10.0.0.1:389".into())
        );
        assert_eq!(
            parse_url("ldap://[::1]:1389").unwrap(),
            (Scheme::Ldap, "::1:1389".into())
        );
        assert_eq!(
            parse_url("ldapi://%2Fvar%2Frun%2Fslapd%2Fldapi").unwrap(),
            (Scheme::Ldapi, "/var/run/slapd/ldapi".into())
        );
        for bad in [
            "ldap.example.org",
            "http://ldap.example.org",
            "ldaps://",
            "ldaps://:636",
            "ldaps://host:port",
            "ldaps://host:99999",
            "ldaps://user:pw@host",
            "ldap://host/dc=example,dc=org?uid",
            "ldapi://",
        ] {
            assert!(
                matches!(parse_url(bad), Err(DirectoryError::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn ca_file_checks() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(
            matches!(load_roots(Some(&missing)), Err(DirectoryError::Config(t)) if t.contains("cannot be read"))
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "just text\n").unwrap();
        assert!(
            matches!(load_roots(Some(&empty)), Err(DirectoryError::Config(t)) if t.contains("no PEM certificate"))
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(matches!(
            load_roots(Some(&garbage)),
            Err(DirectoryError::Config(_))
        ));
    }
}

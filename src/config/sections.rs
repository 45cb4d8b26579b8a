//! One struct per configuration section, with the defaults documented in
//! `config/lockbridge.example.toml`. Unknown keys are refused so a typo cannot
//! silently fall back to a default.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use crate::types::Secret;

fn key_err(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::key(key, problem)
}

/// The file as written, before secrets and paths are resolved.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub security: SecurityConfig,
    pub directory: DirectoryConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub mail: MailConfig,
    #[serde(default)]
    pub outbox: OutboxConfig,
    #[serde(default)]
    pub sms: SmsConfig,
    #[serde(default)]
    pub password_policy: PasswordPolicyConfig,
    #[serde(default)]
    pub expiry: ExpiryConfig,
    #[serde(default)]
    pub sweep: SweepConfig,
    #[serde(default)]
    pub scim: ScimConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub roles: RolesConfig,
    #[serde(default)]
    pub selfservice: SelfServiceConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    pub public_url: String,
    pub state_dir: PathBuf,
    pub request_timeout_secs: u64,
    pub log_format: LogFormat,
    pub log_level: String,
    /// Admin API requests per second allowed to one token (after authentication).
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    /// Failed authentications (no, unknown or revoked token) allowed per client address
    /// and minute, plus a burst; beyond them such requests get 429. Valid tokens are
    /// never held back by this limit.
    pub auth_failures_per_minute: u32,
    pub auth_failure_burst: u32,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// Time a client has to send a request's whole head once it has started one.
    pub header_read_timeout_secs: u64,
    /// An idle keep-alive connection is closed after this long.
    pub idle_timeout_secs: u64,
    /// Open client connections at most; a connection beyond it gets 503 and is closed.
    pub max_connections: u32,
    /// Threads serving requests; 0 = as many as the CPUs lockbridge may run on, and at
    /// least 2.
    pub worker_threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            state_dir: PathBuf::from("/var/lib/lockbridge"),
            request_timeout_secs: 30,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            rate_limit_per_second: 20,
            rate_limit_burst: 40,
            auth_failures_per_minute: 30,
            auth_failure_burst: 10,
            trusted_proxies: Vec::new(),
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 512,
            worker_threads: 0,
        }
    }
}

/// More worker threads than this is a typo, not a tuning.
pub const MAX_WORKER_THREADS: usize = 1024;

impl ServerConfig {
    /// How many threads serve requests: `worker_threads`, or when it is 0 the CPUs this
    /// process may run on (its affinity, e.g. `taskset` or a cgroup cpuset), at least 2.
    ///
    /// Two at least, because some requests hold their thread for a while (a zxcvbn
    /// strength check, a 1,000-entry SCIM page turned into JSON): with one thread,
    /// every other connection would wait behind them. Measured on one CPU shared with a
    /// load generator (bench/README.md), two workers also served about 40% more SCIM
    /// reads per second than one.
    pub fn worker_threads(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        std::thread::available_parallelism()
            .map(std::num::NonZeroUsize::get)
            .unwrap_or(1)
            .max(2)
    }

    /// `trusted_proxies` as networks (a bare address is a /32 or /128).
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.trusted_proxies
            .iter()
            .map(|p| {
                let p = p.trim();
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        key_err(
                            "server.trusted_proxies",
                            format!(
                                "`{p}` is not an IP address or CIDR block such as 10.0.0.5 or 10.0.0.0/24"
                            ),
                        )
                    })
            })
            .collect()
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            key_err(
                "server.listen",
                format!(
                    "`{}` is not an address:port such as 127.0.0.1:8080",
                    self.listen
                ),
            )
        })
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            return Err(key_err(
                "server.public_url",
                "must start with http:// or https://",
            ));
        }
        if self.rate_limit_per_second > 0 && self.rate_limit_burst == 0 {
            return Err(key_err(
                "server.rate_limit_burst",
                "must be at least 1 when rate_limit_per_second is set",
            ));
        }
        if self.request_timeout_secs == 0 {
            return Err(key_err("server.request_timeout_secs", "must be at least 1"));
        }
        if self.auth_failures_per_minute > 0 && self.auth_failure_burst == 0 {
            return Err(key_err(
                "server.auth_failure_burst",
                "must be at least 1 when auth_failures_per_minute is set",
            ));
        }
        self.trusted_proxy_nets()?;
        if !(1..=300).contains(&self.header_read_timeout_secs) {
            return Err(key_err(
                "server.header_read_timeout_secs",
                "must be between 1 and 300 seconds",
            ));
        }
        if !(1..=3600).contains(&self.idle_timeout_secs) {
            return Err(key_err(
                "server.idle_timeout_secs",
                "must be between 1 and 3600 seconds",
            ));
        }
        if !(1..=100_000).contains(&self.max_connections) {
            return Err(key_err(
                "server.max_connections",
                "must be between 1 and 100000",
            ));
        }
        if self.worker_threads > MAX_WORKER_THREADS {
            return Err(key_err(
                "server.worker_threads",
                format!(
                    "{} is more than {MAX_WORKER_THREADS}; use 0 for one per CPU (at least 2)",
                    self.worker_threads
                ),
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(key_err(
                "server.log_level",
                format!(
                    "`{}` is not a log filter; use e.g. \"info\" or \"lockbridge=debug,info\"",
                    self.log_level
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    pub master_key: Option<Secret>,
    pub master_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum DirectoryKindConfig {
    /// OpenLDAP with the ppolicy overlay.
    #[serde(rename = "openldap")]
    Openldap,
    /// 389 Directory Server (Red Hat Directory Server).
    #[serde(rename = "389ds")]
    Ds389,
    /// Active Directory (Windows Server, Samba).
    #[serde(rename = "active-directory")]
    ActiveDirectory,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    #[serde(default = "defaults::directory_kind")]
    pub kind: DirectoryKindConfig,
    pub url: String,
    #[serde(default)]
    pub starttls: bool,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_insecure_skip_verify: bool,
    #[serde(default)]
    pub allow_plaintext: bool,
    /// The server hashes a `userPassword` written in clear text (OpenLDAP:
    /// `ppolicy_hash_cleartext`). Then a reset that requires a change is ONE modify
    /// (the password and `pwdReset` together, atomically) instead of Password Modify
    /// plus a second write. lockbridge checks the first such write and falls back for
    /// good if the stored value is not hashed.
    #[serde(default)]
    pub server_hashes_cleartext: bool,
    pub bind_dn: String,
    #[serde(default)]
    pub bind_password: Option<Secret>,
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    pub users_base: String,
    /// Subtree that holds group entries (SCIM Groups and membership); empty = SCIM
    /// serves no groups.
    #[serde(default)]
    pub groups_base: String,
    #[serde(default = "defaults::user_filter")]
    pub user_filter: String,
    #[serde(default = "defaults::user_name_attribute")]
    pub user_name_attribute: String,
    #[serde(default = "defaults::mail_attribute")]
    pub mail_attribute: String,
    #[serde(default = "defaults::display_name_attribute")]
    pub display_name_attribute: String,
    #[serde(default = "defaults::alternate_mail_attribute")]
    pub alternate_mail_attribute: String,
    #[serde(default = "defaults::mobile_attribute")]
    pub mobile_attribute: String,
    #[serde(default)]
    pub admin_group_dns: Vec<String>,
    /// The site has no administrator group: nobody is protected as an administrator.
    /// Required (true) when `admin_group_dns` is empty, so that an empty list is a
    /// decision and never an oversight.
    #[serde(default)]
    pub no_admin_groups: bool,
    #[serde(default = "defaults::pool_size")]
    pub pool_size: u32,
    #[serde(default = "defaults::connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    #[serde(default = "defaults::operation_timeout_secs")]
    pub operation_timeout_secs: u64,
    #[serde(default = "defaults::retry_after_secs")]
    pub retry_after_secs: u64,
}

impl DirectoryConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let url = self.url.to_ascii_lowercase();
        if !(url.starts_with("ldap://")
            || url.starts_with("ldaps://")
            || url.starts_with("ldapi://"))
        {
            return Err(key_err(
                "directory.url",
                "must start with ldaps://, ldap:// (with starttls = true) or ldapi://",
            ));
        }
        if url.starts_with("ldaps://") && self.starttls {
            return Err(key_err(
                "directory.starttls",
                "cannot be used with an ldaps:// URL (already TLS); remove it or use ldap://",
            ));
        }
        if url.starts_with("ldap://") && !self.starttls && !self.allow_plaintext {
            return Err(key_err(
                "directory.url",
                "is plain ldap:// without StartTLS, so passwords would cross the network unencrypted; \
                 set starttls = true, use ldaps://, or (test directories only) allow_plaintext = true",
            ));
        }
        if let Some(ca) = &self.ca_file
            && !ca.is_file()
        {
            return Err(key_err(
                "directory.ca_file",
                format!("{} does not exist or is not a file", ca.display()),
            ));
        }
        for (key, value) in [
            ("directory.bind_dn", &self.bind_dn),
            ("directory.users_base", &self.users_base),
            ("directory.user_name_attribute", &self.user_name_attribute),
            ("directory.mail_attribute", &self.mail_attribute),
        ] {
            if value.trim().is_empty() {
                return Err(key_err(key, "must not be empty"));
            }
        }
        if !(self.user_filter.starts_with('(') && self.user_filter.ends_with(')')) {
            return Err(key_err(
                "directory.user_filter",
                "must be an LDAP filter in parentheses, e.g. (objectClass=inetOrgPerson)",
            ));
        }
        if self.pool_size < 2 || self.pool_size > 256 {
            return Err(key_err(
                "directory.pool_size",
                "must be between 2 and 256 (the expiry sweep streams on one connection while using another)",
            ));
        }
        if self.connect_timeout_secs == 0 || self.operation_timeout_secs == 0 {
            return Err(key_err(
                "directory.connect_timeout_secs",
                "timeouts must be at least 1 second",
            ));
        }
        if self.admin_group_dns.iter().all(|g| g.trim().is_empty()) && !self.no_admin_groups {
            return Err(key_err(
                "directory.admin_group_dns",
                "is empty, so no account would be protected as an administrator (a password-admin \
                 or a SCIM token could reset every account); list the DNs of the groups whose \
                 members administer this directory, or set no_admin_groups = true if the site \
                 really has none",
            ));
        }
        if self.no_admin_groups && self.admin_group_dns.iter().any(|g| !g.trim().is_empty()) {
            return Err(key_err(
                "directory.no_admin_groups",
                "is true but admin_group_dns lists groups; remove one of the two",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

/// How the connection to a PostgreSQL store is protected.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StoreTlsConfig {
    /// TLS, the certificate checked against the trusted roots and the host name.
    #[default]
    VerifyFull,
    /// No TLS: only for a server on this host (loopback or a Unix socket).
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// SQLite: the database file (relative to server.state_dir). `None`: the default,
    /// `lockbridge.db`. Refused for PostgreSQL.
    pub path: Option<PathBuf>,
    /// PostgreSQL: `postgres://USER@HOST:PORT/DATABASE`, without a password.
    pub url: Option<String>,
    /// PostgreSQL: a file holding the role's password (read at start).
    pub password_file: Option<PathBuf>,
    /// PostgreSQL: a CA certificate (PEM) trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    pub tls: StoreTlsConfig,
    pub max_connections: u32,
    pub connect_timeout_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Sqlite,
            path: None,
            url: None,
            password_file: None,
            ca_file: None,
            tls: StoreTlsConfig::VerifyFull,
            max_connections: 16,
            connect_timeout_secs: 5,
        }
    }
}

/// The SQLite file when `store.path` is not given.
pub const DEFAULT_STORE_PATH: &str = "lockbridge.db";

impl StoreConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match self.kind {
            StoreKind::Sqlite => {
                if self.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                    return Err(key_err("store.path", "must not be empty"));
                }
                for (key, set) in [
                    ("store.url", self.url.is_some()),
                    ("store.password_file", self.password_file.is_some()),
                    ("store.ca_file", self.ca_file.is_some()),
                ] {
                    if set {
                        return Err(key_err(
                            key,
                            "is for kind = \"postgres\"; remove it, or set store.kind = \"postgres\"",
                        ));
                    }
                }
                Ok(())
            }
            StoreKind::Postgres => self.validate_postgres(),
        }
    }

    fn validate_postgres(&self) -> Result<(), ConfigError> {
        if self.path.is_some() {
            return Err(key_err(
                "store.path",
                "is the SQLite file and means nothing with kind = \"postgres\"; remove it \
                 (the database is named by store.url)",
            ));
        }
        let Some(text) = self.url.as_deref().filter(|u| !u.trim().is_empty()) else {
            return Err(key_err(
                "store.url",
                "is required with kind = \"postgres\": \
                 url = \"postgres://lockbridge@db.example.org:5432/lockbridge\"",
            ));
        };
        let url = url::Url::parse(text).map_err(|e| {
            key_err(
                "store.url",
                format!("is not a URL ({e}); write postgres://USER@HOST:PORT/DATABASE"),
            )
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(key_err(
                "store.url",
                format!("must start with postgres:// (not {}://)", url.scheme()),
            ));
        }
        if url.password().is_some() {
            return Err(key_err(
                "store.url",
                "must not hold a password (the URL shows up in logs and error messages); \
                 remove it from the URL and put it in a file named by store.password_file \
                 (mode 600)",
            ));
        }
        for (name, _) in url.query_pairs() {
            let hint = match name.as_ref() {
                "password" => "put the password in a file named by store.password_file",
                "sslmode" | "sslrootcert" | "sslcert" | "sslkey" => {
                    "set TLS with store.tls and store.ca_file"
                }
                _ => continue,
            };
            return Err(key_err(
                "store.url",
                format!("must not set `{name}`; {hint}"),
            ));
        }
        let socket = postgres_socket(&url);
        let host = url.host_str().unwrap_or_default();
        if socket && self.tls == StoreTlsConfig::VerifyFull {
            return Err(key_err(
                "store.tls",
                "is \"verify-full\" but store.url names a Unix socket, which carries no TLS; \
                 set tls = \"off\"",
            ));
        }
        if !socket && host.is_empty() {
            return Err(key_err(
                "store.url",
                "names no host; write postgres://USER@HOST:PORT/DATABASE",
            ));
        }
        if self.tls == StoreTlsConfig::Off && !socket && !is_loopback(host) {
            return Err(key_err(
                "store.tls",
                format!(
                    "is \"off\" but the server {host} is not on this host: the password and \
                     every record would cross the network in clear. Use tls = \"verify-full\" \
                     (with ca_file for a private CA); \"off\" is allowed only for 127.0.0.0/8, \
                     ::1, localhost or a Unix socket"
                ),
            ));
        }
        if self.tls == StoreTlsConfig::Off && self.ca_file.is_some() {
            return Err(key_err(
                "store.ca_file",
                "is set but store.tls is \"off\"; remove one of the two",
            ));
        }
        if !(2..=1000).contains(&self.max_connections) {
            return Err(key_err(
                "store.max_connections",
                format!("must be between 2 and 1000 (got {})", self.max_connections),
            ));
        }
        if !(1..=300).contains(&self.connect_timeout_secs) {
            return Err(key_err(
                "store.connect_timeout_secs",
                format!(
                    "must be between 1 and 300 seconds (got {})",
                    self.connect_timeout_secs
                ),
            ));
        }
        Ok(())
    }
}

/// True when a PostgreSQL URL names a Unix socket folder (`host=/run/postgresql` in the
/// query, or a percent-encoded path as the host), as libpq and sqlx read it.
fn postgres_socket(url: &url::Url) -> bool {
    let in_query = url
        .query_pairs()
        .any(|(k, v)| k == "host" && v.starts_with('/'));
    let in_host = url
        .host_str()
        .is_some_and(|h| percent_decoded(h).starts_with('/'));
    in_query || in_host
}

fn percent_decoded(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// 127.0.0.0/8, ::1 or `localhost`.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurityConfig {
    Starttls,
    Tls,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    pub relay: String,
    pub port: u16,
    pub security: SmtpSecurityConfig,
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    pub from: String,
    pub timeout_secs: u64,
    pub templates_dir: Option<PathBuf>,
    /// Allow `security = "none"` with a relay that is not on this host. Temporary
    /// passwords would cross the network unencrypted.
    pub allow_plaintext_relay: bool,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            relay: "localhost".into(),
            port: 25,
            security: SmtpSecurityConfig::Starttls,
            ca_file: None,
            username: None,
            password: None,
            password_file: None,
            from: "lockbridge <no-reply@example.org>".into(),
            timeout_secs: 10,
            templates_dir: None,
            allow_plaintext_relay: false,
        }
    }
}

/// Whether `host` names this machine: `localhost` (or a name below it) or a loopback
/// address. Only such a relay may be spoken to without TLS by default.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

impl MailConfig {
    pub(super) fn validate(&self, has_password: bool) -> Result<(), ConfigError> {
        if self.relay.trim().is_empty() {
            return Err(key_err("mail.relay", "must not be empty"));
        }
        if self.port == 0 {
            return Err(key_err("mail.port", "must be a TCP port (1-65535)"));
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(key_err(
                "mail.from",
                format!(
                    "`{}` is not a mail address such as \"lockbridge <no-reply@example.org>\"",
                    self.from
                ),
            ));
        }
        if self.username.is_some() != has_password {
            return Err(key_err(
                "mail.username",
                "SMTP AUTH needs both username and password (or password_file); give both or neither",
            ));
        }
        if self.security == SmtpSecurityConfig::None
            && !is_loopback_host(&self.relay)
            && !self.allow_plaintext_relay
        {
            return Err(key_err(
                "mail.security",
                format!(
                    "is \"none\" for relay `{}`, which is not on this host: temporary passwords would \
                     cross the network unencrypted. Use starttls or tls, or (a relay on a trusted \
                     link only) set mail.allow_plaintext_relay = true",
                    self.relay
                ),
            ));
        }
        if has_password && self.security == SmtpSecurityConfig::None {
            return Err(key_err(
                "mail.security",
                "is \"none\" but SMTP credentials are set; they would be sent unencrypted. Use starttls or tls",
            ));
        }
        if let Some(ca) = &self.ca_file
            && !ca.is_file()
        {
            return Err(key_err(
                "mail.ca_file",
                format!("{} does not exist or is not a file", ca.display()),
            ));
        }
        if let Some(dir) = &self.templates_dir
            && !dir.is_dir()
        {
            return Err(key_err(
                "mail.templates_dir",
                format!("{} does not exist or is not a folder", dir.display()),
            ));
        }
        if self.timeout_secs == 0 {
            return Err(key_err("mail.timeout_secs", "must be at least 1"));
        }
        Ok(())
    }
}

/// Which SMS gateway sends self-service codes.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmsKindConfig {
    /// No SMS: self-service offers only the email methods.
    #[default]
    None,
    Webhook,
    Twilio,
}

/// `[sms]`: one flat section for every kind, so each key can be overridden from the
/// environment. After loading, `auth_value` and `auth_token` hold the secret however
/// it was given (inline or `*_file`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    pub kind: SmsKindConfig,
    pub connect_timeout_secs: u64,
    pub timeout_secs: u64,
    // kind = "webhook"
    pub url: Option<String>,
    pub auth_header: Option<String>,
    pub auth_value: Option<Secret>,
    pub auth_value_file: Option<PathBuf>,
    pub body_template: Option<String>,
    pub content_type: Option<String>,
    // kind = "twilio"
    pub base_url: Option<String>,
    pub account_sid: Option<String>,
    pub auth_token: Option<Secret>,
    pub auth_token_file: Option<PathBuf>,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            kind: SmsKindConfig::None,
            connect_timeout_secs: 5,
            timeout_secs: 10,
            url: None,
            auth_header: None,
            auth_value: None,
            auth_value_file: None,
            body_template: None,
            content_type: None,
            base_url: None,
            account_sid: None,
            auth_token: None,
            auth_token_file: None,
            from: None,
            messaging_service_sid: None,
        }
    }
}

/// An SMS gateway URL: https, or plain http to this machine only (codes would cross
/// the network in clear otherwise).
fn check_gateway_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let url = url.trim();
    if url.starts_with("https://") {
        return Ok(());
    }
    let host = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split(['/', '?', '#']).next())
        .map(|authority| authority.rsplit_once('@').map_or(authority, |(_, h)| h))
        .map(|host_port| match host_port.rsplit_once(':') {
            // `[::1]:8080` and `127.0.0.1:8080`, but not the colons inside `[::1]`.
            Some((host, port)) if !port.contains(']') => host,
            _ => host_port,
        });
    match host {
        Some(host) if is_loopback_host(host) => Ok(()),
        Some(_) => Err(key_err(
            key,
            "must start with https:// (plain http only to 127.0.0.1 or localhost)",
        )),
        None => Err(key_err(key, format!("`{url}` is not an https:// URL"))),
    }
}

impl SmsConfig {
    /// Call after the secrets are resolved into `auth_value` and `auth_token`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let kind = self.kind;
        let name = match kind {
            SmsKindConfig::None => "none",
            SmsKindConfig::Webhook => "webhook",
            SmsKindConfig::Twilio => "twilio",
        };
        // A key of another kind is most likely a forgotten or mistyped `kind`.
        let webhook_keys = [
            ("sms.url", self.url.is_some()),
            ("sms.auth_header", self.auth_header.is_some()),
            ("sms.auth_value", self.auth_value.is_some()),
            ("sms.body_template", self.body_template.is_some()),
            ("sms.content_type", self.content_type.is_some()),
        ];
        let twilio_keys = [
            ("sms.base_url", self.base_url.is_some()),
            ("sms.account_sid", self.account_sid.is_some()),
            ("sms.auth_token", self.auth_token.is_some()),
            ("sms.from", self.from.is_some()),
            (
                "sms.messaging_service_sid",
                self.messaging_service_sid.is_some(),
            ),
        ];
        for (keys, owner) in [(&webhook_keys, "webhook"), (&twilio_keys, "twilio")] {
            if owner == name {
                continue;
            }
            if let Some((key, _)) = keys.iter().find(|(_, set)| *set) {
                return Err(key_err(
                    key,
                    format!("belongs to sms.kind = \"{owner}\" but sms.kind is \"{name}\""),
                ));
            }
        }
        if kind == SmsKindConfig::None {
            return Ok(());
        }
        if !(1..=120).contains(&self.timeout_secs) {
            return Err(key_err(
                "sms.timeout_secs",
                "must be between 1 and 120 seconds",
            ));
        }
        if !(1..=self.timeout_secs).contains(&self.connect_timeout_secs) {
            return Err(key_err(
                "sms.connect_timeout_secs",
                "must be at least 1 and at most sms.timeout_secs",
            ));
        }
        match kind {
            SmsKindConfig::None => Ok(()),
            SmsKindConfig::Webhook => {
                let url = self.url.as_deref().ok_or_else(|| {
                    key_err(
                        "sms.url",
                        "is required with kind = \"webhook\": the gateway's https:// URL",
                    )
                })?;
                check_gateway_url("sms.url", url)?;
                if self.auth_header.is_some() != self.auth_value.is_some() {
                    return Err(key_err(
                        "sms.auth_header",
                        "and sms.auth_value (or auth_value_file) go together; give both or neither",
                    ));
                }
                if let Some(header) = &self.auth_header
                    && http::HeaderName::from_bytes(header.trim().as_bytes()).is_err()
                {
                    return Err(key_err(
                        "sms.auth_header",
                        format!("`{header}` is not an HTTP header name such as Authorization"),
                    ));
                }
                if let Some(value) = &self.auth_value
                    && http::HeaderValue::from_str(value.expose()).is_err()
                {
                    return Err(key_err(
                        "sms.auth_value",
                        "holds characters an HTTP header cannot carry (a line break?)",
                    ));
                }
                if let Some(content_type) = &self.content_type {
                    let essence = content_type
                        .split(';')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_ascii_lowercase();
                    if !(essence == "application/json"
                        || essence.ends_with("+json")
                        || essence == "application/x-www-form-urlencoded")
                    {
                        return Err(key_err(
                            "sms.content_type",
                            format!(
                                "`{content_type}` is not supported: use application/json (or another \
                                 …+json type) or application/x-www-form-urlencoded"
                            ),
                        ));
                    }
                }
                if self
                    .body_template
                    .as_deref()
                    .is_some_and(|t| t.trim().is_empty())
                {
                    return Err(key_err(
                        "sms.body_template",
                        "is empty; remove it for the default JSON body",
                    ));
                }
                Ok(())
            }
            SmsKindConfig::Twilio => {
                if let Some(base) = &self.base_url {
                    check_gateway_url("sms.base_url", base)?;
                }
                match &self.account_sid {
                    Some(sid)
                        if !sid.trim().is_empty()
                            && sid.trim().chars().all(|c| c.is_ascii_alphanumeric()) => {}
                    Some(_) => {
                        return Err(key_err(
                            "sms.account_sid",
                            "must be the account SID (letters and digits, e.g. AC…)",
                        ));
                    }
                    None => {
                        return Err(key_err(
                            "sms.account_sid",
                            "is required with kind = \"twilio\" (the account SID, AC…)",
                        ));
                    }
                }
                if self.auth_token.is_none() {
                    return Err(key_err(
                        "sms.auth_token",
                        "is required with kind = \"twilio\": set auth_token_file (preferred) or auth_token",
                    ));
                }
                match (&self.from, &self.messaging_service_sid) {
                    (Some(_), Some(_)) => Err(key_err(
                        "sms.from",
                        "and sms.messaging_service_sid are both set; keep only one",
                    )),
                    (None, None) => Err(key_err(
                        "sms.from",
                        "is required with kind = \"twilio\" (the sending number), unless \
                         sms.messaging_service_sid is set",
                    )),
                    (Some(from), None) if from.trim().is_empty() => {
                        Err(key_err("sms.from", "must not be empty"))
                    }
                    (None, Some(sid)) if sid.trim().is_empty() => {
                        Err(key_err("sms.messaging_service_sid", "must not be empty"))
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    pub poll_interval_ms: u64,
    pub initial_backoff_secs: u64,
    pub max_backoff_secs: u64,
    /// Failed attempts after which a message is given up; 0 = no limit (the retry
    /// window decides).
    pub max_attempts: u32,
    /// A message that keeps failing is retried for this long after it was queued, then
    /// given up (dead-lettered, its secret erased).
    pub retry_window_hours: u32,
    pub max_bulk_per_minute: u32,
    pub max_bulk_per_day: u32,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: 1000,
            initial_backoff_secs: 5,
            max_backoff_secs: 900,
            max_attempts: 0,
            retry_window_hours: 72,
            max_bulk_per_minute: 120,
            max_bulk_per_day: 5000,
        }
    }
}

impl OutboxConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.poll_interval_ms < 10 {
            return Err(key_err("outbox.poll_interval_ms", "must be at least 10"));
        }
        if self.initial_backoff_secs == 0 || self.max_backoff_secs < self.initial_backoff_secs {
            return Err(key_err(
                "outbox.max_backoff_secs",
                "must be at least initial_backoff_secs, which must be at least 1",
            ));
        }
        if !(1..=720).contains(&self.retry_window_hours) {
            return Err(key_err(
                "outbox.retry_window_hours",
                "must be between 1 and 720 (30 days)",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordPolicyConfig {
    pub min_length: usize,
    pub max_length: usize,
    pub min_character_classes: usize,
    pub min_strength_score: u8,
    pub banned_words: Vec<String>,
    pub banned_words_file: Option<PathBuf>,
    pub generated_length: usize,
    pub exclude_lookalikes: bool,
    /// A list of SHA-1 hashes of breached passwords (Have I Been Pwned's format); chosen
    /// passwords found in it are refused. None = no such check.
    pub breached_passwords_file: Option<PathBuf>,
    /// Where the index of that list is kept. After loading: always set when the list
    /// is (default `server.state_dir`/breached-passwords.index).
    pub breached_index_file: Option<PathBuf>,
}

impl Default for PasswordPolicyConfig {
    /// The policy module's defaults are the single source of these values.
    fn default() -> Self {
        let rules = crate::policy::PasswordRules::default();
        Self {
            min_length: rules.min_length,
            max_length: rules.max_length,
            min_character_classes: rules.min_character_classes,
            min_strength_score: rules.min_strength_score,
            banned_words: rules.banned_words,
            banned_words_file: None,
            generated_length: rules.generated_length,
            exclude_lookalikes: rules.exclude_lookalikes,
            breached_passwords_file: None,
            breached_index_file: None,
        }
    }
}

/// File name of the breached-password index in `server.state_dir`, unless
/// `password_policy.breached_index_file` says otherwise.
pub const DEFAULT_BREACHED_INDEX_NAME: &str = "breached-passwords.index";

impl PasswordPolicyConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.to_rules()
            .validate()
            .map_err(|problem| key_err("password_policy", problem))
    }

    /// The policy module's view of this section.
    pub fn to_rules(&self) -> crate::policy::PasswordRules {
        crate::policy::PasswordRules {
            min_length: self.min_length,
            max_length: self.max_length,
            min_character_classes: self.min_character_classes,
            min_strength_score: self.min_strength_score,
            banned_words: self.banned_words.clone(),
            generated_length: self.generated_length,
            exclude_lookalikes: self.exclude_lookalikes,
        }
    }
}

/// Where a password's maximum age comes from.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExpirySource {
    /// The directory's own policy (OpenLDAP ppolicy `pwdMaxAge`, per-user `pwdPolicySubentry`).
    Directory,
    /// lockbridge's `max_age_days`, applied to the directory's last-changed timestamp.
    Lockbridge,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ExpiryActionConfig {
    Nothing,
    RequireChange,
    Lock,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpiryConfig {
    pub source: ExpirySource,
    /// With source = "lockbridge": days before a password expires; 0 = never.
    pub max_age_days: u32,
    pub notify_days: Vec<u32>,
    pub on_expiry: ExpiryActionConfig,
    /// The organisation's default policy entry (read, and written when an admin changes
    /// the maximum age, with source = "directory").
    pub default_policy_dn: Option<String>,
    /// A policy entry without expiry; "password never expires" points users at it.
    pub never_expires_policy_dn: Option<String>,
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        Self {
            source: ExpirySource::Directory,
            max_age_days: 0,
            notify_days: vec![14, 7, 3, 1],
            on_expiry: ExpiryActionConfig::Nothing,
            default_policy_dn: None,
            never_expires_policy_dn: None,
        }
    }
}

impl ExpiryConfig {
    pub(super) fn validate(&self, sweep_enabled: bool) -> Result<(), ConfigError> {
        if sweep_enabled
            && self.source == ExpirySource::Directory
            && self.default_policy_dn.is_none()
        {
            return Err(key_err(
                "expiry.default_policy_dn",
                "is required for the sweep with source = \"directory\": the DN of the ppolicy \
                 default policy entry (ppolicy_default in slapd.conf)",
            ));
        }
        let mut days = self.notify_days.clone();
        days.sort_unstable();
        days.dedup();
        if days.len() != self.notify_days.len() || days.iter().any(|d| *d == 0 || *d > 365) {
            return Err(key_err(
                "expiry.notify_days",
                "must be distinct numbers of days from 1 to 365, e.g. [14, 7, 3, 1]",
            ));
        }
        if self.max_age_days > 3650 {
            return Err(key_err(
                "expiry.max_age_days",
                "must be at most 3650 (ten years); use 0 for never",
            ));
        }
        if self.max_age_days > 0
            && days
                .last()
                .is_some_and(|longest| *longest >= self.max_age_days)
        {
            return Err(key_err(
                "expiry.notify_days",
                "every notification day must be shorter than max_age_days",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweepConfig {
    /// Run the sweep on `schedule`. It can always be run by hand.
    pub enabled: bool,
    /// Five-field crontab expression, e.g. "0 6 * * *" for 06:00 every day.
    pub schedule: String,
    /// IANA time zone of the schedule and of dates in messages.
    pub time_zone: String,
    /// Who receives the digest after each sweep.
    pub admin_recipients: Vec<String>,
    /// Link in notifications where users change their password.
    pub change_password_url: String,
    /// Entries per page when streaming the directory.
    pub page_size: u32,
    /// How long a sweeping instance's lease lasts without renewal; after a crash, another
    /// instance (or the restarted one) resumes the sweep once it has lapsed.
    pub lease_secs: u64,
    /// Passwords that expired longer ago than this get no notice and no expiry action
    /// (`expiry.on_expiry`): on a first sweep over years of dormant accounts, only
    /// the recently expired are touched.
    pub expired_within_days: u32,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            schedule: "0 6 * * *".into(),
            time_zone: "UTC".into(),
            admin_recipients: Vec::new(),
            change_password_url: String::new(),
            page_size: 500,
            lease_secs: 120,
            expired_within_days: 30,
        }
    }
}

impl SweepConfig {
    pub(super) fn validate(&self, public_url: &str) -> Result<(), ConfigError> {
        for address in &self.admin_recipients {
            if address.parse::<lettre::Address>().is_err() {
                return Err(key_err(
                    "sweep.admin_recipients",
                    format!("`{address}` is not a mail address such as admin@example.org"),
                ));
            }
        }
        let url = if self.change_password_url.is_empty() {
            public_url
        } else {
            &self.change_password_url
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(key_err(
                "sweep.change_password_url",
                "must start with https:// or http://",
            ));
        }
        if !(2..=3600).contains(&self.lease_secs) {
            return Err(key_err("sweep.lease_secs", "must be between 2 and 3600"));
        }
        if !(10..=5000).contains(&self.page_size) {
            return Err(key_err("sweep.page_size", "must be between 10 and 5000"));
        }
        if !(1..=3650).contains(&self.expired_within_days) {
            return Err(key_err(
                "sweep.expired_within_days",
                "must be between 1 and 3650 (days since a password expired; 3650 reaches \
                 every expired password of the last ten years)",
            ));
        }
        Ok(())
    }
}

/// What SCIM `DELETE /Users/{id}` does.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScimDeleteMode {
    /// Remove the entry (and its group memberships).
    #[default]
    Delete,
    /// Keep the entry, lock it and remove its group memberships (the user still shows up
    /// in GET with `active: false`).
    Deactivate,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScimConfig {
    /// Serve the SCIM 2.0 API under /scim/v2.
    pub enabled: bool,
    /// Where new users are created; empty = directory.users_base.
    pub users_container: String,
    /// Object classes of new user entries.
    pub user_object_classes: Vec<String>,
    /// LDAP attribute that stores the client's `externalId`; empty = not stored.
    pub external_id_attribute: String,
    /// Where new groups are created; empty = directory.groups_base.
    pub groups_container: String,
    /// Object classes of new group entries.
    pub group_object_classes: Vec<String>,
    /// LDAP attribute that stores a group's `externalId`; empty = not stored.
    pub group_external_id_attribute: String,
    /// What DELETE does to a user.
    pub delete: ScimDeleteMode,
    /// Largest page a client may ask for (`count`), also announced as filter.maxResults.
    pub max_results: u32,
    /// Also check pushed passwords against `[password_policy]` (the directory's own
    /// policy always applies).
    pub check_password_rules: bool,
    /// Keep a copy of what a password push reads about its user, updated by the
    /// directory as entries change (RFC 4533 content synchronisation: OpenLDAP's
    /// syncprov overlay), so that a push is one directory operation instead of a search
    /// and a write. Used only when the directory offers it; off: every push searches.
    pub follow_directory: bool,
    /// With `follow_directory`: the copy also holds every SCIM attribute of every user and
    /// every group's members, so that reads by `userName` are answered from it (about
    /// 1.7 KiB per user). Off: only what a push reads (about 0.7 KiB per user); reads search.
    pub follow_reads: bool,
    /// Requests per second per token on /scim/v2 (0, the default: no rate limit);
    /// identity providers send bursts, so this is separate from
    /// server.rate_limit_per_second.
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    /// Requests of one token under way at once in one instance (0 = no cap). What keeps
    /// a runaway or stolen token from taking every connection and directory slot.
    pub max_requests_in_flight_per_token: u32,
    /// Entries SCIM never writes, besides the administrators and the service account.
    pub protected_dns: Vec<String>,
    /// Let SCIM write members of `directory.admin_group_dns` (reset, lock, rename,
    /// delete). Off: an identity provider's token is never a way into the accounts that
    /// run lockbridge.
    pub allow_writes_to_administrators: bool,
    /// SCIM attribute → LDAP attribute, replacing the default mapping for that attribute,
    /// e.g. "name.givenName" = "givenName", "phoneNumbers.mobile" = "mobile".
    pub attributes: std::collections::BTreeMap<String, String>,
}

impl Default for ScimConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            users_container: String::new(),
            user_object_classes: vec!["inetOrgPerson".into()],
            external_id_attribute: String::new(),
            groups_container: String::new(),
            group_object_classes: vec!["groupOfNames".into()],
            group_external_id_attribute: String::new(),
            delete: ScimDeleteMode::Delete,
            max_results: 1000,
            check_password_rules: false,
            follow_directory: true,
            follow_reads: true,
            rate_limit_per_second: 0,
            rate_limit_burst: 1000,
            max_requests_in_flight_per_token: 128,
            protected_dns: Vec::new(),
            allow_writes_to_administrators: false,
            attributes: Default::default(),
        }
    }
}

impl ScimConfig {
    pub(super) fn validate(&self, directory: &DirectoryConfig) -> Result<(), ConfigError> {
        if self.rate_limit_per_second > 0 && self.rate_limit_burst == 0 {
            return Err(key_err(
                "scim.rate_limit_burst",
                "must be at least 1 when rate_limit_per_second is set",
            ));
        }
        if let Some(bad) = self
            .protected_dns
            .iter()
            .find(|dn| !dn.contains('=') || dn.trim().is_empty())
        {
            return Err(key_err(
                "scim.protected_dns",
                format!("`{bad}` is not a DN such as uid=break-glass,ou=people,dc=example,dc=org"),
            ));
        }
        if !(1..=10_000).contains(&self.max_results) {
            return Err(key_err("scim.max_results", "must be between 1 and 10000"));
        }
        if self.user_object_classes.is_empty() {
            return Err(key_err(
                "scim.user_object_classes",
                "must name at least one object class, e.g. [\"inetOrgPerson\"]",
            ));
        }
        if self.group_object_classes.is_empty() {
            return Err(key_err(
                "scim.group_object_classes",
                "must name at least one object class, e.g. [\"groupOfNames\"]",
            ));
        }
        let users = if self.users_container.is_empty() {
            &directory.users_base
        } else {
            &self.users_container
        };
        if !users
            .to_ascii_lowercase()
            .replace(' ', "")
            .ends_with(&directory.users_base.to_ascii_lowercase().replace(' ', ""))
        {
            return Err(key_err(
                "scim.users_container",
                "must be directory.users_base or an entry below it",
            ));
        }
        if !self.groups_container.is_empty()
            && (directory.groups_base.is_empty()
                || !self
                    .groups_container
                    .to_ascii_lowercase()
                    .replace(' ', "")
                    .ends_with(&directory.groups_base.to_ascii_lowercase().replace(' ', "")))
        {
            return Err(key_err(
                "scim.groups_container",
                "must be directory.groups_base or an entry below it (set directory.groups_base)",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// How often the head of the audit chain is signed (when records were added since).
    pub seal_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            seal_interval_secs: 300,
        }
    }
}

impl AuditConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=86_400).contains(&self.seal_interval_secs) {
            return Err(key_err(
                "audit.seal_interval_secs",
                "must be between 1 and 86400 (a day)",
            ));
        }
        Ok(())
    }
}

/// `[selfservice]`: the pages users reset and change their own password with
/// (`/reset`, `/change`), and "contact an administrator".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfServiceConfig {
    pub enabled: bool,
    /// Verification methods a user without an administrator role must pass (1 or 2);
    /// administrators always pass both.
    pub methods_required: u8,
    /// Digits of a security code (6 to 8).
    pub code_digits: u8,
    /// How long a code and the whole verification stay valid.
    pub code_valid_minutes: u32,
    /// Wrong codes before the verification starts over.
    pub max_code_attempts: u32,
    /// Verifications started per client address per hour, and per account per hour.
    pub starts_per_address_per_hour: u32,
    pub starts_per_account_per_hour: u32,
    /// Where "contact an administrator" requests go; empty: `sweep.admin_recipients`.
    pub request_recipients: Vec<String>,
    /// Page templates and translations replacing the built-in ones, file by file.
    pub templates_dir: Option<std::path::PathBuf>,
    /// The name in the pages' header and in text messages; empty: `public_url`'s host.
    pub organization: String,
    /// Mail a single-use link to choose a first password to accounts SCIM creates
    /// without one (Entra ID never sends passwords).
    pub welcome_links: bool,
    /// How long such a link works.
    pub welcome_link_hours: u32,
    /// Show, before the first code is passed, where codes go (`a•••@example.net`) and
    /// let the user choose a method, as Microsoft does. That tells anyone which names
    /// have security info (and, by the number of steps, which are administrators): off
    /// by default, every name then gets the same code page.
    pub reveal_security_info: bool,
}

impl Default for SelfServiceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            methods_required: 1,
            code_digits: 8,
            code_valid_minutes: 10,
            max_code_attempts: 5,
            starts_per_address_per_hour: 30,
            starts_per_account_per_hour: 5,
            request_recipients: Vec::new(),
            templates_dir: None,
            organization: String::new(),
            welcome_links: false,
            welcome_link_hours: 24,
            reveal_security_info: false,
        }
    }
}

impl SelfServiceConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=2).contains(&self.methods_required) {
            return Err(key_err(
                "selfservice.methods_required",
                "must be 1 or 2 (administrators always need both)",
            ));
        }
        if !(6..=8).contains(&self.code_digits) {
            return Err(key_err("selfservice.code_digits", "must be 6, 7 or 8"));
        }
        if !(1..=60).contains(&self.code_valid_minutes) {
            return Err(key_err(
                "selfservice.code_valid_minutes",
                "must be between 1 and 60",
            ));
        }
        if !(1..=10).contains(&self.max_code_attempts) {
            return Err(key_err(
                "selfservice.max_code_attempts",
                "must be between 1 and 10",
            ));
        }
        if self.starts_per_address_per_hour == 0 || self.starts_per_account_per_hour == 0 {
            return Err(key_err(
                "selfservice.starts_per_address_per_hour",
                "rate limits must be at least 1 (set selfservice.enabled = false to turn the pages off)",
            ));
        }
        if !(1..=24 * 14).contains(&self.welcome_link_hours) {
            return Err(key_err(
                "selfservice.welcome_link_hours",
                "must be between 1 and 336 (two weeks)",
            ));
        }
        for address in &self.request_recipients {
            if address.parse::<lettre::Address>().is_err() {
                return Err(key_err(
                    "selfservice.request_recipients",
                    format!("`{address}` is not an email address"),
                ));
            }
        }
        Ok(())
    }
}

/// `[roles]`: which directory groups make their members administrators, by role
/// (`docs/roles.md`). Members of these groups are administrators as targets too: ranked
/// by their most powerful role, and out of provisioning's reach.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolesConfig {
    /// Empty: `directory.admin_group_dns`.
    pub global_admin: Vec<String>,
    pub privileged_authentication_admin: Vec<String>,
    pub user_admin: Vec<String>,
    pub helpdesk_admin: Vec<String>,
    pub password_admin: Vec<String>,
    pub auditor: Vec<String>,
    /// Roles held over part of the directory only (Entra's administrative units).
    pub scoped: Vec<ScopedRoleConfig>,
    /// How long a session of an administrator who signed in lasts (minutes).
    pub session_minutes: u32,
}

/// `[[roles.scoped]]`: the members of `groups` hold `role`, but only over the users
/// below `over_subtree` or in `over_group` (exactly one of the two).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScopedRoleConfig {
    /// `user-admin`, `helpdesk-admin` or `password-admin`.
    pub role: String,
    /// Group DNs whose direct members hold the role.
    pub groups: Vec<String>,
    /// The users at or below this DN.
    #[serde(default)]
    pub over_subtree: Option<String>,
    /// The direct members of this group.
    #[serde(default)]
    pub over_group: Option<String>,
}

/// The roles that may be held over part of the directory: those that manage users, not
/// the organisation (as with Entra's administrative units).
pub const SCOPABLE_ROLES: [&str; 3] = ["user-admin", "helpdesk-admin", "password-admin"];

impl Default for RolesConfig {
    fn default() -> Self {
        Self {
            global_admin: Vec::new(),
            privileged_authentication_admin: Vec::new(),
            user_admin: Vec::new(),
            helpdesk_admin: Vec::new(),
            password_admin: Vec::new(),
            auditor: Vec::new(),
            scoped: Vec::new(),
            session_minutes: defaults::session_minutes(),
        }
    }
}

impl RolesConfig {
    /// (config key, role name, group DNs) for every role people hold.
    pub fn groups(&self) -> [(&'static str, &'static str, &[String]); 6] {
        [
            ("roles.global_admin", "global-admin", &self.global_admin),
            (
                "roles.privileged_authentication_admin",
                "privileged-authentication-admin",
                &self.privileged_authentication_admin,
            ),
            ("roles.user_admin", "user-admin", &self.user_admin),
            (
                "roles.helpdesk_admin",
                "helpdesk-admin",
                &self.helpdesk_admin,
            ),
            (
                "roles.password_admin",
                "password-admin",
                &self.password_admin,
            ),
            ("roles.auditor", "auditor", &self.auditor),
        ]
    }

    pub(super) fn resolve(&mut self, directory: &DirectoryConfig) -> Result<(), ConfigError> {
        if self.global_admin.is_empty() {
            self.global_admin = directory.admin_group_dns.clone();
        }
        for (key, _, groups) in self.groups() {
            if let Some(bad) = groups
                .iter()
                .find(|g| g.trim().is_empty() || !g.contains('='))
            {
                return Err(key_err(
                    key,
                    format!(
                        "holds {bad:?}, which is not a group DN such as cn=helpdesk,ou=groups,dc=example,dc=org"
                    ),
                ));
            }
        }
        for (n, scoped) in self.scoped.iter().enumerate() {
            let key = format!("roles.scoped[{n}]");
            if !SCOPABLE_ROLES.contains(&scoped.role.as_str()) {
                return Err(key_err(
                    &format!("{key}.role"),
                    format!(
                        "is {:?}; only these roles can be held over part of the directory: {}",
                        scoped.role,
                        SCOPABLE_ROLES.join(", ")
                    ),
                ));
            }
            if scoped.groups.is_empty() {
                return Err(key_err(
                    &format!("{key}.groups"),
                    "is empty; list the group DNs whose members hold the role",
                ));
            }
            let dns = scoped
                .groups
                .iter()
                .chain(&scoped.over_subtree)
                .chain(&scoped.over_group);
            if let Some(bad) = dns
                .into_iter()
                .find(|g| g.trim().is_empty() || !g.contains('='))
            {
                return Err(key_err(
                    &key,
                    format!(
                        "holds {bad:?}, which is not a DN such as ou=paris,ou=people,dc=example,dc=org"
                    ),
                ));
            }
            if scoped.over_subtree.is_some() == scoped.over_group.is_some() {
                return Err(key_err(
                    &key,
                    "needs exactly one of over_subtree (a DN: the users below it) or \
                     over_group (a group DN: its members)",
                ));
            }
        }
        if self.session_minutes == 0 || self.session_minutes > 24 * 60 {
            return Err(key_err(
                "roles.session_minutes",
                "must be between 1 and 1440 (a day)",
            ));
        }
        Ok(())
    }

    /// Every group whose members are administrators (of any role).
    pub fn all_groups(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        let scoped = self.scoped.iter().map(|s| s.groups.as_slice());
        for groups in self.groups().into_iter().map(|(_, _, g)| g).chain(scoped) {
            for g in groups {
                if !all.iter().any(|a| a.eq_ignore_ascii_case(g)) {
                    all.push(g.clone());
                }
            }
        }
        all
    }
}

mod defaults {
    use super::DirectoryKindConfig;

    pub fn session_minutes() -> u32 {
        60
    }

    pub fn directory_kind() -> DirectoryKindConfig {
        DirectoryKindConfig::Openldap
    }
    pub fn user_filter() -> String {
        "(objectClass=inetOrgPerson)".into()
    }
    pub fn user_name_attribute() -> String {
        "uid".into()
    }
    pub fn mail_attribute() -> String {
        "mail".into()
    }
    pub fn display_name_attribute() -> String {
        "cn".into()
    }
    pub fn alternate_mail_attribute() -> String {
        "otherMailbox".into()
    }
    pub fn mobile_attribute() -> String {
        "mobile".into()
    }
    pub fn pool_size() -> u32 {
        8
    }
    pub fn connect_timeout_secs() -> u64 {
        5
    }
    pub fn operation_timeout_secs() -> u64 {
        10
    }
    pub fn retry_after_secs() -> u64 {
        10
    }
}

//! The real `lockbridge` binary, started with a temporary configuration against a
//! sandbox slapd and mail sink, and talked to over HTTP.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::slapd::Slapd;
use super::smtp::MailSink;

pub const BIN: &str = env!("CARGO_BIN_EXE_lockbridge");

pub struct Daemon {
    child: Option<Child>,
    env: Vec<(String, String)>,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    /// A global-admin token.
    pub admin_token: String,
    /// A password-admin token.
    pub password_admin_token: String,
}

/// A port free now, chosen below Linux's ephemeral range (32768 and up): a port
/// the kernel handed out for `bind(0)` can be taken again, before the daemon binds
/// it, as the local end of any outgoing connection (a test's own LDAP or HTTP
/// client), which is how a daemon once failed to start with "Address already in
/// use". Ports here are only ever taken by someone binding them on purpose.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    const FIRST: u16 = 20_000;
    const COUNT: u16 = 12_000;
    for _ in 0..200 {
        // RandomState is seeded per process and per call: enough spread between the
        // test processes that start daemons at the same moment.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(Instant::now().elapsed().as_nanos());
        let port = FIRST + (h.finish() % u64::from(COUNT)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + COUNT)
}

/// A configuration for the sandbox services; `extra` is appended (later keys win
/// only for sections not already present, so pass whole extra sections).
pub fn write_config(
    dir: &Path,
    slapd: &Slapd,
    mail_port: u16,
    http_port: u16,
    extra: &str,
) -> PathBuf {
    write_config_with(dir, slapd, &slapd.ldaps_url, mail_port, http_port, extra)
}

/// As [`write_config`], with the directory reached at `ldap_url` (a proxy in front of
/// the sandbox, say: `ldaps://127.0.0.1:PROXY_PORT`; the certificate names 127.0.0.1).
pub fn write_config_with(
    dir: &Path,
    slapd: &Slapd,
    ldap_url: &str,
    mail_port: u16,
    http_port: u16,
    extra: &str,
) -> PathBuf {
    let key_path = dir.join("master-key");
    std::fs::write(&key_path, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").expect("write key");
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{http_port}"
public_url = "http://127.0.0.1:{http_port}"
state_dir = "{state}"
log_level = "debug,hyper=info,h2=info,sqlx=info"

[security]
master_key_file = "{key}"

[directory]
kind = "{kind}"
url = "{ldaps}"
ca_file = "{ca}"
bind_dn = "{svc_dn}"
bind_password_file = "{svc_pw}"
users_base = "{users}"
groups_base = "{groups}"
admin_group_dns = ["{admins}"]
{kind_settings}connect_timeout_secs = 2
operation_timeout_secs = 5
retry_after_secs = 7

[mail]
relay = "127.0.0.1"
port = {mail_port}
security = "none"
from = "lockbridge <no-reply@example.org>"
timeout_secs = 3

[outbox]
poll_interval_ms = 200
initial_backoff_secs = 1
max_backoff_secs = 2
{extra}
"#,
        state = dir.join("state").display(),
        key = key_path.display(),
        kind = slapd.kind.config_name(),
        kind_settings = slapd.directory_settings(),
        ldaps = ldap_url,
        ca = slapd.ca_file.display(),
        svc_dn = slapd.service_dn,
        svc_pw = slapd.service_password_file.display(),
        users = slapd.users_base,
        groups = slapd.groups_base,
        admins = slapd.admin_group_dn,
    );
    let path = dir.join("lockbridge.toml");
    let mut f = std::fs::File::create(&path).expect("config file");
    f.write_all(config.as_bytes()).expect("write config");
    path
}

/// Runs `lockbridge ARGS --config CONFIG` to completion: (exit code, stdout, stderr).
pub fn run_cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run lockbridge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Daemon {
    pub fn start(slapd: &Slapd, mail: &MailSink) -> Daemon {
        Self::start_with(slapd, mail.port, "")
    }

    pub fn start_with(slapd: &Slapd, mail_port: u16, extra: &str) -> Daemon {
        Self::start_with_env(slapd, mail_port, extra, &[])
    }

    /// As `start_with`, with `LOCKBRIDGE__...` environment overrides for the daemon.
    pub fn start_with_env(
        slapd: &Slapd,
        mail_port: u16,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |port| write_config(dir.path(), slapd, mail_port, port, extra);
        let config_path = write(free_port());
        let admin_token = create_token(&config_path, "test-global-admin", "global-admin");
        let password_admin_token =
            create_token(&config_path, "test-password-admin", "password-admin");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let log_path = dir.path().join("lockbridge.log");
        let (child, url) = start_on_a_free_port(&config_path, &log_path, &env, write);
        Daemon {
            env,
            child: Some(child),
            url,
            dir,
            config_path,
            log_path,
            admin_token,
            password_admin_token,
        }
    }

    /// A daemon with `options` (its directory URL, its configuration's extra
    /// sections and environment, tokens already in a shared store).
    pub fn start_opts(slapd: &Slapd, mail_port: u16, options: Options) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let ldap_url = options.ldap_url.as_deref().unwrap_or(&slapd.ldaps_url);
        let write =
            |port| write_config_with(dir.path(), slapd, ldap_url, mail_port, port, &options.extra);
        let config_path = write(free_port());
        // A second instance on a shared store uses the first one's tokens.
        let (admin_token, password_admin_token) = options.tokens.clone().unwrap_or_else(|| {
            (
                create_token(&config_path, "test-global-admin", "global-admin"),
                create_token(&config_path, "test-password-admin", "password-admin"),
            )
        });
        let log_path = dir.path().join("lockbridge.log");
        let (child, url) = start_on_a_free_port(&config_path, &log_path, &options.env, write);
        Daemon {
            env: options.env,
            child: Some(child),
            url,
            dir,
            config_path,
            log_path,
            admin_token,
            password_admin_token,
        }
    }

    /// The running process's id; `None` after [`Daemon::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn wait_until_listening(&mut self) {
        let child = self.child.as_mut().expect("a running daemon");
        if let Err(log) = wait_for_health(&self.url, child, &self.log_path) {
            panic!("lockbridge did not start; log:\n{log}");
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn client(&self) -> Api {
        Api {
            base: self.url.clone(),
            http: reqwest::Client::new(),
        }
    }

    /// A client for the SCIM API (`/scim/v2`).
    pub fn scim(&self, token: &str) -> Scim {
        Scim {
            base: format!("{}/scim/v2", self.url),
            token: token.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// Kills the daemon with SIGKILL (no chance to clean up), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again on the same configuration, state and port.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn_serve(&self.config_path, &self.log_path, &self.env));
        self.wait_until_listening();
    }

    /// Sends SIGTERM and waits; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        None
    }

    /// Asserts that none of `secrets` appears in the daemon's log, the audit log or
    /// the store file.
    pub async fn assert_no_secrets(&self, secrets: &[&str]) {
        let log = self.log();
        let audit = self
            .client()
            .get(&self.admin_token, "/api/v1/audit?limit=500")
            .await
            .1
            .to_string();
        let mut store = Vec::new();
        // No state folder when the store is PostgreSQL and nothing else was kept.
        for entry in std::fs::read_dir(self.dir.path().join("state"))
            .into_iter()
            .flatten()
            .flatten()
        {
            store.extend(std::fs::read(entry.path()).unwrap_or_default());
        }
        let store = String::from_utf8_lossy(&store);
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            assert!(!log.contains(secret), "a secret appears in the daemon log");
            assert!(!audit.contains(secret), "a secret appears in the audit log");
            assert!(
                !store.contains(secret),
                "a secret appears in the store file"
            );
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How [`Daemon::start_opts`] starts a daemon.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The directory's URL; the sandbox's LDAPS URL when `None`.
    pub ldap_url: Option<String>,
    /// Whole sections appended to the configuration (`[store]`, `[sweep]`, ...).
    pub extra: String,
    /// `LOCKBRIDGE__...` environment overrides.
    pub env: Vec<(String, String)>,
    /// (global-admin, password-admin) tokens to use instead of creating them: another
    /// instance's, on the same store.
    pub tokens: Option<(String, String)>,
}

/// Starts `lockbridge serve` on the configuration at `config_path` and waits until it
/// answers: (the process, its base URL). When another process took the configured
/// port first, `write_config(port)` rewrites the configuration with a new one and the
/// daemon starts again.
fn start_on_a_free_port(
    config_path: &Path,
    log_path: &Path,
    env: &[(String, String)],
    write_config: impl Fn(u16) -> PathBuf,
) -> (Child, String) {
    let mut attempt = 1;
    loop {
        let port = configured_port(config_path);
        let url = format!("http://127.0.0.1:{port}");
        let mut child = spawn_serve(config_path, log_path, env);
        match wait_for_health(&url, &mut child, log_path) {
            Ok(()) => return (child, url),
            Err(log) if attempt < 5 && log.contains("Address already in use") => {
                let _ = child.kill();
                let _ = child.wait();
                attempt += 1;
                // The next attempt's log starts clean, so only its own failure counts.
                let _ = std::fs::remove_file(log_path);
                write_config(free_port());
            }
            Err(log) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("lockbridge did not start; log:\n{log}");
            }
        }
    }
}

/// The port in a harness configuration's `listen = "127.0.0.1:PORT"`.
fn configured_port(config_path: &Path) -> u16 {
    let config = std::fs::read_to_string(config_path).expect("read the configuration");
    config
        .lines()
        .find_map(|line| line.trim().strip_prefix("listen = \"127.0.0.1:"))
        .and_then(|rest| rest.trim_end_matches('"').parse().ok())
        .expect("a listen line in the harness configuration")
}

/// Waits up to 20 s for `url/healthz` to answer 200; the log so far when it does not,
/// or as soon as the process has exited.
fn wait_for_health(url: &str, child: &mut Child, log_path: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = format!("{url}/healthz");
    let log = || std::fs::read_to_string(log_path).unwrap_or_default();
    while Instant::now() < deadline {
        if let Ok(200) = http_status(&health) {
            return Ok(());
        }
        if let Ok(Some(_)) = child.try_wait() {
            return Err(log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(log())
}

/// `lockbridge serve`, its output appended to `log_path`.
fn spawn_serve(config_path: &Path, log_path: &Path, env: &[(String, String)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("log file");
    Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config_path)
        .env_remove("RUST_LOG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::from(log.try_clone().expect("log clone")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn lockbridge")
}

pub fn create_token(config: &Path, name: &str, role: &str) -> String {
    let (code, stdout, stderr) =
        run_cli(config, &["token", "create", "--name", name, "--role", role]);
    assert_eq!(code, 0, "token create failed: {stderr}");
    stdout.trim().to_string()
}

/// A tiny blocking GET returning the status code, for readiness polling.
fn http_status(url: &str) -> std::io::Result<u16> {
    use std::io::Read;
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))
}

/// A small JSON client for the admin API.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

pub type Reply = (u16, serde_json::Value, reqwest::header::HeaderMap);

impl Api {
    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let r = req.send().await.expect("request sent");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, body, headers)
    }

    pub async fn get(&self, token: &str, path: &str) -> (u16, serde_json::Value) {
        let (s, b, _) = self.get_full(token, path).await;
        (s, b)
    }

    pub async fn get_full(&self, token: &str, path: &str) -> Reply {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        self.send(req).await
    }

    pub async fn post(&self, token: &str, path: &str, body: serde_json::Value) -> Reply {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        self.send(req).await
    }

    pub async fn put(&self, token: &str, path: &str, body: serde_json::Value) -> Reply {
        let req = self
            .http
            .put(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body);
        self.send(req).await
    }

    pub async fn delete(&self, token: &str, path: &str) -> Reply {
        let req = self
            .http
            .delete(format!("{}{path}", self.base))
            .bearer_auth(token);
        self.send(req).await
    }

    pub async fn post_raw(&self, token: &str, path: &str, body: &str) -> Reply {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string());
        self.send(req).await
    }
}

/// A SCIM client: every request carries the token and `application/scim+json`.
pub struct Scim {
    pub base: String,
    pub token: String,
    http: reqwest::Client,
}

impl Scim {
    /// Sends `method path` with an optional JSON body and extra headers.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/scim+json")
                .body(b.to_string());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("request sent");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, body, headers)
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> Reply {
        self.call("POST", path, Some(body), &[]).await
    }

    pub async fn put(&self, path: &str, body: serde_json::Value) -> Reply {
        self.call("PUT", path, Some(body), &[]).await
    }

    pub async fn patch(&self, path: &str, body: serde_json::Value) -> Reply {
        self.call("PATCH", path, Some(body), &[]).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call("DELETE", path, None, &[]).await
    }
}

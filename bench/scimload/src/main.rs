//! scimload: the load generator of `bench/scim.sh`.
//!
//! One mode per run, `--clients` concurrent clients, each with its own connection: an LDAP
//! connection bound as the service account (raw modes), or one keep-alive HTTP connection
//! from a shared pool of `--clients` (SCIM modes). Each client loops until the end of the
//! run; the first `--warmup` seconds are not counted. An operation counts when it succeeded
//! and completed inside the measured window; its latency is recorded. Any error fails the
//! run (exit 1), after the result line. Setup failures exit 2.
//!
//! Modes:
//! - `ldap-search`: `(&(objectClass=inetOrgPerson)(uid=userNNNNNN))` under the users base,
//!   random users, asking for `--attrs`; exactly one entry expected.
//! - `ldap-passmod`: RFC 3062 Password Modify (with the ppolicy request control, as
//!   lockbridge sends it) on the client's own users, in random order, fresh passwords.
//! - `scim-get`: `GET BASE/Users?filter=userName eq "userNNNNNN"`; 200 and totalResults 1.
//! - `scim-patch-password`: `PATCH BASE/Users/{id}` replacing `password`; 200 or 204. The
//!   ids of `--id-pool` users of each client's own range are fetched first with filter GETs.
//! - `admin-get`: `GET BASE/users/userNNNNNN` on the admin API (`--api-url`); 200.
//! - `admin-reset`: `POST BASE/users/{user}/password-reset`, a generated password in the
//!   answer, no mail, no change required; the client's own users in random order; 200.
//!
//! `--scim-url` (or `--api-url`) may be given several times: client i sends to URL i mod N
//! (several instances, no load balancer). `--keep-going` counts errors instead of stopping
//! the run at the first (a soak).
//!
//! Each client of the write modes owns a disjoint range of users, so no two clients ever
//! write the same user. The result is one line on stdout:
//! `mode=... clients=N ops=... secs=... ops_per_sec=... p50_ms=... p99_ms=... errors=0`,
//! followed, with `--cpu NAME=PID`, by `cpu_ms_per_op.NAME=...` for each watched process and
//! for the load generator itself (`cpu_ms_per_op.self`), over the measured window.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use ldap3::controls::RawControl;
use ldap3::exop::PasswordModify;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// What a SCIM read of a user needs from the directory (lockbridge's default mapping).
const DEFAULT_ATTRS: &str = "uid,cn,sn,givenName,displayName,mail,mobile,otherMailbox,\
    entryUUID,createTimestamp,modifyTimestamp,pwdAccountLockedTime,pwdChangedTime,pwdReset,\
    pwdPolicySubentry";

/// The ppolicy request control (draft-behera-ldap-password-policy), no value.
const PPOLICY_OID: &str = "1.3.6.1.4.1.42.2.27.8.5.1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    LdapSearch,
    LdapPassmod,
    ScimGet,
    ScimPatchPassword,
    AdminGet,
    AdminReset,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::LdapSearch => "ldap-search",
            Mode::LdapPassmod => "ldap-passmod",
            Mode::ScimGet => "scim-get",
            Mode::ScimPatchPassword => "scim-patch-password",
            Mode::AdminGet => "admin-get",
            Mode::AdminReset => "admin-reset",
        }
    }
    fn writes(self) -> bool {
        matches!(
            self,
            Mode::LdapPassmod | Mode::ScimPatchPassword | Mode::AdminReset
        )
    }
    fn admin(self) -> bool {
        matches!(self, Mode::AdminGet | Mode::AdminReset)
    }
}

/// Load generator for lockbridge's SCIM benchmark (raw LDAP vs SCIM).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Measured seconds, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// The directory holds the generated users user000001 ... userN (slapd-sandbox --users N).
    #[arg(long, default_value_t = 100_000)]
    users: u32,
    /// Runtime worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,

    /// LDAP URL of the directory (ldaps://, or ldap:// for no TLS).
    #[arg(long, env = "LDAPS_URL")]
    ldap_url: Option<String>,
    /// CA certificate (PEM) of the directory's TLS certificate.
    #[arg(long, env = "LDAP_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Service account DN.
    #[arg(long, env = "LDAP_SERVICE_DN")]
    bind_dn: Option<String>,
    /// File holding the service account's password.
    #[arg(long, env = "LDAP_SERVICE_PASSWORD_FILE")]
    bind_password_file: Option<PathBuf>,
    /// Base of the user entries.
    #[arg(long, env = "LDAP_USERS_BASE")]
    users_base: Option<String>,
    /// Attributes requested by ldap-search (comma-separated).
    #[arg(long, default_value = DEFAULT_ATTRS)]
    attrs: String,

    /// SCIM base URL, e.g. http://127.0.0.1:8080/scim/v2 (admin modes: the admin API's,
    /// http://127.0.0.1:8080/api/v1, also spelt --api-url). Repeatable: with several
    /// (instances, no load balancer), client i uses URL i mod N.
    #[arg(long, alias = "api-url")]
    scim_url: Vec<String>,
    /// Count errors and go on instead of stopping the run at the first (a soak).
    #[arg(long)]
    keep_going: bool,
    /// File holding the bearer token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) for an https SCIM URL.
    #[arg(long)]
    scim_ca_file: Option<PathBuf>,
    /// scim-patch-password: users per client whose ids are fetched first (cycled through).
    #[arg(long, default_value_t = 1000)]
    id_pool: usize,
    /// NAME=PID[,PID...] (repeatable): also report the CPU time those processes spent in
    /// the measured window per counted operation, summed, as `cpu_ms_per_op.NAME=...`
    /// (this process: `self`). `PID+` counts the process and its child processes (a
    /// PostgreSQL server's backends).
    #[arg(long = "cpu", value_parser = parse_cpu_watch)]
    cpu: Vec<(String, Vec<Watched>)>,
}

/// A watched process, and whether its children count too.
#[derive(Clone, Copy, Debug)]
struct Watched {
    pid: u32,
    children: bool,
}

fn parse_cpu_watch(s: &str) -> Result<(String, Vec<Watched>), String> {
    let (name, pids) = s.split_once('=').ok_or("expected NAME=PID[,PID...]")?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err("NAME must be letters, digits, '-' or '_'".into());
    }
    let mut watched = Vec::new();
    for pid in pids.split(',') {
        let (pid, children) = match pid.strip_suffix('+') {
            Some(p) => (p, true),
            None => (pid, false),
        };
        let pid = pid.parse().map_err(|_| "PID must be a number")?;
        watched.push(Watched { pid, children });
    }
    Ok((name.to_owned(), watched))
}

/// CPU seconds of the watched processes so far (children included where asked), summed;
/// `None` when one of them is gone.
fn cpu_secs_of(watched: &[Watched]) -> Option<f64> {
    let mut total = 0.0;
    for w in watched {
        total += cpu_secs(Some(w.pid))?;
        if w.children {
            total += children_of(w.pid)
                .into_iter()
                .filter_map(|c| cpu_secs(Some(c)))
                .sum::<f64>();
        }
    }
    Some(total)
}

/// The processes whose parent is `pid`, from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.get(stat.rfind(')')? + 2..)?.to_owned();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// User + system CPU seconds of a process so far, from /proc (USER_HZ = 100 on Linux).
fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (u64, u64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    Some((utime + stime) as f64 / 100.0)
}

/// Settings shared by the clients.
struct Shared {
    users: u32,
    users_base: String,
    attrs: Vec<String>,
    scim_urls: Vec<String>,
    token: String,
}

impl Shared {
    /// The SCIM base URL client `i` uses.
    fn scim_url(&self, i: usize) -> &str {
        &self.scim_urls[i % self.scim_urls.len()]
    }
}

/// When counting starts and when the run ends.
#[derive(Clone)]
struct Window {
    start: Instant,
    end: Instant,
    /// Set by the first error: the run has failed, every client stops.
    failed: Arc<AtomicBool>,
    /// Errors are counted and the run goes on (`--keep-going`).
    keep_going: bool,
}

impl Window {
    fn running(&self) -> bool {
        Instant::now() < self.end && (self.keep_going || !self.failed.load(Ordering::Relaxed))
    }
}

#[derive(Default)]
struct Stats {
    ops: u64,
    lat_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

impl Stats {
    fn record(&mut self, t0: Instant, result: Result<(), String>, w: &Window) {
        let t1 = Instant::now();
        match result {
            Ok(()) => {
                if t1 >= w.start && t1 <= w.end {
                    self.ops += 1;
                    let us = t1.duration_since(t0).as_micros();
                    self.lat_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            Err(e) => {
                w.failed.store(true, Ordering::Relaxed);
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e);
                }
            }
        }
    }
}

/// What one client holds once set up.
enum Client {
    Ldap {
        ldap: Ldap,
        users: Vec<u32>,
    },
    Http {
        http: reqwest::Client,
        /// The SCIM base URL this client sends to.
        base: String,
        ids: Vec<String>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if args.threads > 0 {
        rt.worker_threads(args.threads);
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("scimload: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("scimload: {e}");
            ExitCode::from(2)
        }
    }
}

fn need<T: Clone>(v: &Option<T>, what: &str) -> Result<T, String> {
    v.clone()
        .ok_or_else(|| format!("{what} is required for this mode"))
}

async fn run(args: Args) -> Result<bool, String> {
    if args.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    if args.mode.writes() && (args.users as usize) < args.clients {
        return Err("--users must be at least --clients (each client owns its own users)".into());
    }
    let valid = |s: f64| s.is_finite() && s >= 0.0;
    if !valid(args.duration) || args.duration == 0.0 || !valid(args.warmup) {
        return Err("--duration must be > 0 and --warmup >= 0".into());
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let is_ldap = matches!(args.mode, Mode::LdapSearch | Mode::LdapPassmod);
    let shared = Arc::new(Shared {
        users: args.users,
        users_base: if is_ldap {
            need(&args.users_base, "--users-base")?
        } else {
            String::new()
        },
        attrs: args
            .attrs
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        scim_urls: if is_ldap {
            Vec::new()
        } else if args.scim_url.is_empty() {
            return Err("--scim-url is required for this mode".into());
        } else {
            args.scim_url
                .iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect()
        },
        token: if is_ldap {
            String::new()
        } else {
            let f = need(&args.token_file, "--token-file")?;
            let t = std::fs::read_to_string(&f)
                .map_err(|e| format!("cannot read the token file {}: {e}", f.display()))?;
            let t = t.trim().to_owned();
            if t.is_empty() {
                return Err(format!("the token file {} is empty", f.display()));
            }
            t
        },
    });

    // Setup: connections (and, for PATCH, the ids), all clients at once, not measured.
    let clients = if is_ldap {
        setup_ldap(&args, &shared).await?
    } else {
        setup_http(&args, &shared).await?
    };

    let now = Instant::now();
    let start = now + Duration::from_secs_f64(args.warmup);
    let w = Window {
        start,
        end: start + Duration::from_secs_f64(args.duration),
        failed: Arc::new(AtomicBool::new(false)),
        keep_going: args.keep_going,
    };
    // CPU of the watched processes over the measured window only.
    // `None`: this process.
    let mut watched: Vec<(String, Option<Vec<Watched>>)> = args
        .cpu
        .iter()
        .map(|(n, p)| (n.clone(), Some(p.clone())))
        .collect();
    if !watched.is_empty() {
        watched.push(("self".to_owned(), None));
    }
    let sampler = tokio::spawn({
        let watched = watched.clone();
        let (start, end) = (w.start, w.end);
        async move {
            let sample = || {
                watched
                    .iter()
                    .map(|(_, p)| match p {
                        Some(p) => cpu_secs_of(p),
                        None => cpu_secs(None),
                    })
                    .collect::<Vec<_>>()
            };
            tokio::time::sleep_until(start.into()).await;
            let before = sample();
            tokio::time::sleep_until(end.into()).await;
            let after = sample();
            before
                .into_iter()
                .zip(after)
                .map(|(b, a)| Some(a? - b?))
                .collect::<Vec<Option<f64>>>()
        }
    });
    let mut tasks = Vec::with_capacity(clients.len());
    for (i, client) in clients.into_iter().enumerate() {
        let shared = shared.clone();
        let seed = rand::thread_rng().r#gen::<u64>() ^ i as u64;
        let mode = args.mode;
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed);
            match (mode, client) {
                (Mode::LdapSearch, Client::Ldap { ldap, .. }) => {
                    ldap_search(ldap, &shared, w, &mut rng).await
                }
                (Mode::LdapPassmod, Client::Ldap { ldap, users }) => {
                    ldap_passmod(ldap, users, &shared, w, &mut rng).await
                }
                (Mode::ScimGet, Client::Http { http, base, .. }) => {
                    scim_get(http, &base, &shared, w, &mut rng).await
                }
                (Mode::ScimPatchPassword, Client::Http { http, base, ids }) => {
                    scim_patch(http, &base, ids, &shared, w, &mut rng).await
                }
                (Mode::AdminGet, Client::Http { http, base, .. }) => {
                    let mut stats = Stats::default();
                    while w.running() {
                        let n = rng.gen_range(1..=shared.users);
                        let t0 = Instant::now();
                        stats.record(t0, admin_get(&http, &base, &shared, n).await, &w);
                    }
                    stats
                }
                (Mode::AdminReset, Client::Http { http, base, ids }) => {
                    admin_reset(http, &base, ids, &shared, w, &mut rng).await
                }
                _ => unreachable!("the setup matches the mode"),
            }
        }));
    }
    let mut total = Stats::default();
    for t in tasks {
        let s = t.await.map_err(|e| format!("a client panicked: {e}"))?;
        total.ops += s.ops;
        total.errors += s.errors;
        total.lat_us.extend(s.lat_us);
        if total.first_error.is_none() {
            total.first_error = s.first_error;
        }
    }

    total.lat_us.sort_unstable();
    let secs = args.duration;
    let pct = |p: f64| -> f64 {
        let v = &total.lat_us;
        if v.is_empty() {
            return 0.0;
        }
        let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        f64::from(v[rank - 1]) / 1000.0
    };
    let cpu = if w.failed.load(Ordering::Relaxed) {
        sampler.abort();
        vec![None; watched.len()]
    } else {
        sampler
            .await
            .map_err(|e| format!("the CPU sampler panicked: {e}"))?
    };
    let mut cpu_fields = String::new();
    for ((name, _), spent) in watched.iter().zip(cpu) {
        match spent {
            Some(secs) if total.ops > 0 => {
                let per_op = secs * 1000.0 / total.ops as f64;
                cpu_fields.push_str(&format!(" cpu_ms_per_op.{name}={per_op:.4}"));
            }
            _ => cpu_fields.push_str(&format!(" cpu_ms_per_op.{name}=NA")),
        }
    }
    println!(
        "mode={} clients={} ops={} secs={:.3} ops_per_sec={:.1} p50_ms={:.3} p99_ms={:.3} errors={}{}",
        args.mode.name(),
        args.clients,
        total.ops,
        secs,
        total.ops as f64 / secs,
        pct(0.50),
        pct(0.99),
        total.errors,
        cpu_fields
    );
    if total.errors > 0 {
        eprintln!(
            "scimload: {} errors; the first: {}",
            total.errors,
            total.first_error.as_deref().unwrap_or("?")
        );
        return Ok(false);
    }
    if total.ops == 0 {
        eprintln!("scimload: no operation completed in the measured window");
        return Ok(false);
    }
    Ok(true)
}

/// The users client `i` of `n` owns: a contiguous, disjoint slice of 1..=users.
fn own_range(users: u32, i: usize, n: usize) -> std::ops::Range<u32> {
    let (u, i, n) = (u64::from(users), i as u64, n as u64);
    let lo = 1 + i * u / n;
    let hi = 1 + (i + 1) * u / n;
    lo as u32..hi as u32
}

fn uid(n: u32) -> String {
    format!("user{n:06}")
}

fn load_roots(path: &std::path::Path) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(roots)
}

async fn setup_ldap(args: &Args, shared: &Shared) -> Result<Vec<Client>, String> {
    let url = need(&args.ldap_url, "--ldap-url")?;
    let bind_dn = need(&args.bind_dn, "--bind-dn")?;
    let pw_file = need(&args.bind_password_file, "--bind-password-file")?;
    let password = std::fs::read_to_string(&pw_file)
        .map_err(|e| format!("cannot read {}: {e}", pw_file.display()))?
        .trim_end_matches(['\n', '\r'])
        .to_owned();
    let mut settings = LdapConnSettings::new().set_conn_timeout(Duration::from_secs(10));
    if let Some(ca) = &args.ca_file {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_root_certificates(load_roots(ca)?)
            .with_no_client_auth();
        settings = settings.set_config(Arc::new(config));
    }
    let mut handles = Vec::new();
    for i in 0..args.clients {
        let (settings, url, bind_dn, password) = (
            settings.clone(),
            url.clone(),
            bind_dn.clone(),
            password.clone(),
        );
        let users: Vec<u32> = if args.mode.writes() {
            own_range(shared.users, i, args.clients).collect()
        } else {
            Vec::new()
        };
        handles.push(tokio::spawn(async move {
            let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &url)
                .await
                .map_err(|e| format!("cannot connect to {url}: {e}"))?;
            ldap3::drive!(conn);
            ldap.simple_bind(&bind_dn, &password)
                .await
                .and_then(|r| r.success())
                .map_err(|e| format!("bind as {bind_dn} failed: {e}"))?;
            Ok::<_, String>(Client::Ldap { ldap, users })
        }));
    }
    let mut clients = Vec::new();
    for h in handles {
        clients.push(h.await.map_err(|e| e.to_string())??);
    }
    Ok(clients)
}

async fn setup_http(args: &Args, shared: &Arc<Shared>) -> Result<Vec<Client>, String> {
    let mut builder = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .http1_only();
    if let Some(ca) = &args.scim_ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| format!("{}: not a PEM certificate: {e}", ca.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    let http = builder
        .build()
        .map_err(|e| format!("HTTP client setup failed: {e}"))?;

    // One request first, for a clear message when the URL or the token is wrong.
    for base in &shared.scim_urls {
        if args.mode.admin() {
            admin_get(&http, base, shared, 1).await
        } else {
            get_user(&http, base, shared, 1).await.map(|_| ())
        }
        .map_err(|e| format!("{base}: {e}"))?;
    }

    let mut handles = Vec::new();
    for i in 0..args.clients {
        let (http, shared) = (http.clone(), shared.clone());
        let base = shared.scim_url(i).to_owned();
        let mode = args.mode;
        let (range, pool) = (
            own_range(shared.users, i, args.clients),
            args.id_pool.max(1),
        );
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            if mode == Mode::AdminReset {
                ids = range.map(uid).collect();
            } else if mode == Mode::ScimPatchPassword {
                let mut users: Vec<u32> = range.collect();
                users.shuffle(&mut SmallRng::from_entropy());
                users.truncate(pool);
                for n in users {
                    let body = get_user(&http, &base, &shared, n).await?;
                    let id = body["Resources"][0]["id"]
                        .as_str()
                        .ok_or_else(|| format!("{}: the answer has no Resources[0].id", uid(n)))?;
                    ids.push(id.to_owned());
                }
            }
            Ok::<_, String>(Client::Http { http, base, ids })
        }));
    }
    let mut clients = Vec::new();
    for h in handles {
        clients.push(h.await.map_err(|e| e.to_string())??);
    }
    Ok(clients)
}

fn truncate(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

/// `GET /Users?filter=userName eq "userNNNNNN"`: 200 with exactly one resource.
async fn get_user(
    http: &reqwest::Client,
    base: &str,
    shared: &Shared,
    n: u32,
) -> Result<serde_json::Value, String> {
    let filter = format!("userName eq \"{}\"", uid(n));
    let url = format!(
        "{base}/Users?filter={}",
        utf8_percent_encode(&filter, NON_ALPHANUMERIC)
    );
    let resp = http
        .get(&url)
        .bearer_auth(&shared.token)
        .send()
        .await
        .map_err(|e| format!("GET {filter}: {e}"))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("GET {filter}: reading the body: {e}"))?;
    if status != reqwest::StatusCode::OK {
        return Err(format!(
            "GET {filter}: {status}: {}",
            truncate(&String::from_utf8_lossy(&bytes))
        ));
    }
    let body: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("GET {filter}: not JSON: {e}"))?;
    match body["totalResults"].as_u64() {
        Some(1) => Ok(body),
        Some(n) => Err(format!("GET {filter}: totalResults {n}, expected 1")),
        None => Err(format!(
            "GET {filter}: no totalResults in {}",
            truncate(&body.to_string())
        )),
    }
}

async fn ldap_search(mut ldap: Ldap, shared: &Shared, w: Window, rng: &mut SmallRng) -> Stats {
    let mut stats = Stats::default();
    while w.running() {
        let filter = format!(
            "(&(objectClass=inetOrgPerson)(uid={}))",
            uid(rng.gen_range(1..=shared.users))
        );
        let t0 = Instant::now();
        let result = match ldap
            .search(&shared.users_base, Scope::Subtree, &filter, &shared.attrs)
            .await
            .and_then(|r| r.success())
        {
            Ok((entries, _)) if entries.len() == 1 => Ok(()),
            Ok((entries, _)) => Err(format!("{filter}: {} entries, expected 1", entries.len())),
            Err(e) => Err(format!("{filter}: {e}")),
        };
        stats.record(t0, result, &w);
    }
    let _ = ldap.unbind().await;
    stats
}

/// 20 characters with every class (lower, upper, digit, symbol), from the CSPRNG-seeded rng.
fn new_password(rng: &mut SmallRng) -> String {
    const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
    const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
    const DIGIT: &[u8] = b"23456789";
    const SYMBOL: &[u8] = b"!#%+-.:=?@_~";
    let all: Vec<u8> = [LOWER, UPPER, DIGIT, SYMBOL].concat();
    let mut pw: Vec<u8> = [LOWER, UPPER, DIGIT, SYMBOL]
        .iter()
        .map(|class| class[rng.gen_range(0..class.len())])
        .collect();
    while pw.len() < 20 {
        pw.push(all[rng.gen_range(0..all.len())]);
    }
    pw.shuffle(rng);
    String::from_utf8(pw).expect("ASCII")
}

async fn ldap_passmod(
    mut ldap: Ldap,
    mut users: Vec<u32>,
    shared: &Shared,
    w: Window,
    rng: &mut SmallRng,
) -> Stats {
    let mut stats = Stats::default();
    let mut next = users.len();
    while w.running() {
        // Each user of the client's own range once, in random order, then again.
        if next == users.len() {
            users.shuffle(rng);
            next = 0;
        }
        let dn = format!("uid={},{}", uid(users[next]), shared.users_base);
        next += 1;
        let password = new_password(rng);
        let control = RawControl {
            ctype: PPOLICY_OID.to_owned(),
            crit: false,
            val: None,
        };
        let t0 = Instant::now();
        let result = ldap
            .with_controls(control)
            .extended(PasswordModify {
                user_id: Some(&dn),
                old_pass: None,
                new_pass: Some(&password),
            })
            .await
            .and_then(|r| r.success())
            .map(|_| ())
            .map_err(|e| format!("password modify {dn}: {e}"));
        stats.record(t0, result, &w);
    }
    let _ = ldap.unbind().await;
    stats
}

async fn scim_get(
    http: reqwest::Client,
    base: &str,
    shared: &Shared,
    w: Window,
    rng: &mut SmallRng,
) -> Stats {
    let mut stats = Stats::default();
    while w.running() {
        let n = rng.gen_range(1..=shared.users);
        let t0 = Instant::now();
        let result = get_user(&http, base, shared, n).await.map(|_| ());
        stats.record(t0, result, &w);
    }
    stats
}

async fn scim_patch(
    http: reqwest::Client,
    base: &str,
    mut ids: Vec<String>,
    shared: &Shared,
    w: Window,
    rng: &mut SmallRng,
) -> Stats {
    let mut stats = Stats::default();
    let mut next = ids.len();
    while w.running() {
        if next == ids.len() {
            ids.shuffle(rng);
            next = 0;
        }
        let url = format!(
            "{base}/Users/{}",
            utf8_percent_encode(&ids[next], NON_ALPHANUMERIC)
        );
        next += 1;
        let body = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "password", "value": new_password(rng)}],
        });
        let t0 = Instant::now();
        let request = http
            .patch(&url)
            .header("content-type", "application/scim+json")
            .body(body.to_string());
        let result = answered(request, &shared.token, &format!("PATCH {url}"), &[200, 204]).await;
        stats.record(t0, result, &w);
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_disjoint_and_cover_everything() {
        for (users, n) in [(100_000u32, 8usize), (10, 3), (5, 5), (100_000, 32)] {
            let mut all = Vec::new();
            for i in 0..n {
                let r = own_range(users, i, n);
                assert!(!r.is_empty());
                all.extend(r);
            }
            assert_eq!(all, (1..=users).collect::<Vec<_>>());
        }
    }

    #[test]
    fn passwords_have_every_class() {
        let mut rng = SmallRng::seed_from_u64(7);
        for _ in 0..1000 {
            let pw = new_password(&mut rng);
            assert_eq!(pw.len(), 20);
            assert!(pw.bytes().any(|b| b.is_ascii_lowercase()));
            assert!(pw.bytes().any(|b| b.is_ascii_uppercase()));
            assert!(pw.bytes().any(|b| b.is_ascii_digit()));
            assert!(pw.bytes().any(|b| !b.is_ascii_alphanumeric()));
        }
    }
}

/// `GET BASE/users/userNNNNNN` (admin API): 200.
async fn admin_get(
    http: &reqwest::Client,
    base: &str,
    shared: &Shared,
    n: u32,
) -> Result<(), String> {
    let url = format!("{base}/users/{}", uid(n));
    answered(http.get(&url), &shared.token, &format!("GET {url}"), &[200]).await
}

/// `POST BASE/users/{user}/password-reset` (admin API), a generated password shown in
/// the answer, no mail: the client's own users in random order.
async fn admin_reset(
    http: reqwest::Client,
    base: &str,
    mut users: Vec<String>,
    shared: &Shared,
    w: Window,
    rng: &mut SmallRng,
) -> Stats {
    let mut stats = Stats::default();
    let mut next = users.len();
    // The generated password comes back in the answer (and is dropped): lockbridge
    // refuses a generated password that would reach nobody.
    let body = serde_json::json!({"mode": "auto", "requireChangeAtNextSignIn": false, "showPassword": true})
        .to_string();
    while w.running() {
        if next == users.len() {
            users.shuffle(rng);
            next = 0;
        }
        let url = format!("{base}/users/{}/password-reset", users[next]);
        next += 1;
        let t0 = Instant::now();
        let request = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone());
        let result = answered(request, &shared.token, &format!("POST {url}"), &[200]).await;
        stats.record(t0, result, &w);
    }
    stats
}

/// Sends `request` with the bearer token; Ok when the status is one of `ok`, else an
/// error naming `what`, the status and the start of the body.
async fn answered(
    request: reqwest::RequestBuilder,
    token: &str,
    what: &str,
    ok: &[u16],
) -> Result<(), String> {
    let resp = request
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("{what}: reading the body: {e}"))?;
    if ok.contains(&status.as_u16()) {
        Ok(())
    } else {
        Err(format!(
            "{what}: {status}: {}",
            truncate(&String::from_utf8_lossy(&bytes))
        ))
    }
}

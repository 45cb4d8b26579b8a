//! A throwaway PostgreSQL server on 127.0.0.1, driven through
//! `scripts/lib/postgres-sandbox` (Debian's `postgresql` binaries): a database and a role
//! made for the test (password authentication, scram-sha-256; the role may create more
//! databases), commits synced to disk as in production, stopped and removed on drop.
//!
//! Run as root, the server belongs to the system user `lockbridge-test` (PostgreSQL
//! refuses to run as root); the temporary folder lets it through (mode 711) to the
//! sandbox folder it owns.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

use super::{repo_root, temp_dir};

/// A running throwaway PostgreSQL server. Stopped and removed on drop.
pub struct Postgres {
    /// The sandbox folder (`data/`, `postgres.log`, `sandbox.env`).
    pub dir: PathBuf,
    /// `postgres://USER:PASSWORD@127.0.0.1:PORT/DATABASE`, the test role on its database.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: String,
    pub superuser: String,
    pub superuser_password: String,
    /// The Debian PostgreSQL's `bin` folder (`psql`, `pg_ctl`, ...).
    pub bin_dir: PathBuf,
    /// The server's log.
    pub log_file: PathBuf,
    running: bool,
    temp: Option<TempDir>,
}

impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL holds the password.
        f.debug_struct("Postgres")
            .field("dir", &self.dir)
            .field("port", &self.port)
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

impl Postgres {
    /// Starts a server with the test role and its database; returns once they accept
    /// connections.
    pub fn start() -> Postgres {
        let temp = temp_dir("lb-postgres-");
        // The server's system user (under root) must get through to its own folder.
        std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o711))
            .expect("let the server's user through the temporary folder");
        let dir = temp.path().join("pg");
        let out = run(Command::new(script())
            .arg("start")
            .arg(&dir)
            .arg("--watch-pid")
            .arg(std::process::id().to_string()));
        if !out.status.success() {
            panic!(
                "postgres-sandbox start failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut pg = Postgres::from_env_file(&dir);
        pg.temp = Some(temp);
        pg
    }

    /// The server a test run shares, when `scripts/test` started one: the sandbox
    /// folder named by `LOCKBRIDGE_TEST_POSTGRES_DIR` (nextest runs every test in a
    /// process of its own, and a server per process costs seconds). Otherwise a server of
    /// this test's own, as [`Postgres::start`]. A shared server is left running on drop.
    pub fn shared_or_start() -> Postgres {
        let Some(dir) = std::env::var_os(SHARED_DIR_VAR).filter(|d| !d.is_empty()) else {
            return Postgres::start();
        };
        let dir = PathBuf::from(dir);
        let mut pg = Postgres::from_env_file(&dir);
        // Not ours to stop.
        pg.running = false;
        pg
    }

    fn from_env_file(dir: &Path) -> Postgres {
        let env = read_env(&dir.join("sandbox.env"));
        let get = |key: &str| -> String {
            env.get(key)
                .unwrap_or_else(|| panic!("sandbox.env lacks {key}"))
                .clone()
        };
        Postgres {
            url: get("POSTGRES_URL"),
            host: get("POSTGRES_HOST"),
            port: get("POSTGRES_PORT")
                .parse()
                .expect("POSTGRES_PORT is a port"),
            database: get("POSTGRES_DATABASE"),
            user: get("POSTGRES_USER"),
            password: get("POSTGRES_PASSWORD"),
            superuser: get("POSTGRES_SUPERUSER"),
            superuser_password: get("POSTGRES_SUPERUSER_PASSWORD"),
            bin_dir: PathBuf::from(get("POSTGRES_BIN_DIR")),
            log_file: PathBuf::from(get("POSTGRES_LOG_FILE")),
            dir: dir.to_path_buf(),
            running: true,
            temp: None,
        }
    }

    /// A fresh, empty database with a unique name, owned by the test role; returns its
    /// name and URL (which holds the test role's password).
    pub fn create_fresh_database(&self) -> (String, String) {
        let name = format!("lb_{}", uuid::Uuid::new_v4().simple());
        let url = self.create_database(&name);
        (name, url)
    }

    /// A lockbridge `[store]` section for `database` as the test role: its password
    /// written to `password_file` (mode 600), no TLS (the server is on 127.0.0.1).
    pub fn store_section(&self, database: &str, password_file: &Path) -> String {
        std::fs::write(password_file, format!("{}\n", self.password))
            .expect("write the store password file");
        std::fs::set_permissions(password_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod the store password file");
        format!(
            "\n[store]\nkind = \"postgres\"\nurl = \"postgres://{}@{}:{}/{database}\"\n\
             password_file = \"{}\"\ntls = \"off\"\nmax_connections = 4\n",
            self.user,
            self.host,
            self.port,
            password_file.display()
        )
    }

    /// The URL of another database on this server, as the test role.
    pub fn url_of(&self, database: &str) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{database}",
            self.user, self.password, self.host, self.port
        )
    }

    /// Creates an empty database owned by the test role (one per test, say) and returns
    /// its URL. `name` must be a plain SQL identifier.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "a plain database name: {name:?}"
        );
        let out = self.psql(&format!("CREATE DATABASE {name}"));
        assert!(
            out.status.success(),
            "CREATE DATABASE {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url_of(name)
    }

    /// Runs SQL with `psql` as the test role on its database (unaligned, tuples only,
    /// stopping at the first error). The password goes through the environment.
    pub fn psql(&self, sql: &str) -> Output {
        run(Command::new(self.bin_dir.join("psql"))
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "5")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", &self.host])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", &self.user, "-d", &self.database, "-c", sql]))
    }

    /// Whether the server runs (`postgres-sandbox status`).
    pub fn is_running(&self) -> bool {
        run(Command::new(script()).arg("status").arg(&self.dir))
            .status
            .success()
    }

    /// Stops the server cleanly (waits until it is gone). The data stays.
    pub fn stop(&mut self) {
        self.sandbox("stop", &[]);
        self.running = false;
    }

    /// Stops the server at once, without a clean shutdown, as a crash would; the next
    /// start recovers from the write-ahead log.
    pub fn crash(&mut self) {
        self.sandbox("stop", &["--now"]);
        self.running = false;
    }

    /// Starts the server again on the same port with the same data.
    pub fn start_again(&mut self) {
        self.sandbox("restart", &[]);
        self.running = true;
    }

    /// The server's log, handy in assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn sandbox(&self, command: &str, options: &[&str]) {
        let out = run(Command::new(script())
            .arg(command)
            .arg(&self.dir)
            .args(options));
        if !out.status.success() {
            panic!(
                "postgres-sandbox {command} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            // The data goes with the folder: no clean shutdown to wait for.
            let _ = run(Command::new(script())
                .arg("stop")
                .arg(&self.dir)
                .arg("--now"));
        }
        drop(self.temp.take());
    }
}

/// The environment variable naming a running sandbox's folder (see
/// [`Postgres::shared_or_start`]).
pub const SHARED_DIR_VAR: &str = "LOCKBRIDGE_TEST_POSTGRES_DIR";

fn script() -> PathBuf {
    repo_root().join("scripts/lib/postgres-sandbox")
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

fn read_env(path: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .collect()
}

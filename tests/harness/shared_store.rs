//! One store for several `lockbridge` instances: a SQLite file they all open, or a
//! PostgreSQL sandbox reached through a [`Proxy`] (so that a test can cut the store's
//! link). [`StoreUnderTest::section`] is the `[store]` section each instance's
//! configuration gets.

use std::path::PathBuf;

use super::postgres::Postgres;
use super::proxy::Proxy;
use super::temp_dir;

/// Which store the instances share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedStore {
    /// One SQLite file (leases, the notice ledger and atomic mail claims make several
    /// processes on one file safe).
    SqliteFile,
    /// One PostgreSQL database, behind a proxy.
    Postgres,
}

impl SharedStore {
    /// `LOCKBRIDGE_TEST_STORE=postgres|sqlite` when set, else `default`.
    pub fn from_env_or(default: SharedStore) -> SharedStore {
        match std::env::var("LOCKBRIDGE_TEST_STORE").as_deref() {
            Ok("postgres") => SharedStore::Postgres,
            Ok("sqlite") => SharedStore::SqliteFile,
            Ok(other) => panic!("LOCKBRIDGE_TEST_STORE={other}: use `sqlite` or `postgres`"),
            Err(_) => default,
        }
    }
}

/// A running shared store (removed on drop).
pub struct StoreUnderTest {
    pub kind: SharedStore,
    /// The PostgreSQL sandbox (only for [`SharedStore::Postgres`]).
    pub postgres: Option<Postgres>,
    /// The link between the instances and PostgreSQL (only for [`SharedStore::Postgres`]).
    pub proxy: Option<Proxy>,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl StoreUnderTest {
    pub fn start(kind: SharedStore) -> StoreUnderTest {
        let dir = temp_dir("lb-shared-store-");
        let (postgres, proxy) = match kind {
            SharedStore::SqliteFile => (None, None),
            SharedStore::Postgres => {
                let pg = Postgres::start();
                let proxy = Proxy::to_port(pg.port);
                (Some(pg), Some(proxy))
            }
        };
        let path = match kind {
            SharedStore::SqliteFile => dir.path().join("lockbridge.db"),
            SharedStore::Postgres => dir.path().join("postgres-password"),
        };
        if let Some(pg) = &postgres {
            std::fs::write(&path, format!("{}\n", pg.password)).expect("write the password file");
        }
        StoreUnderTest {
            kind,
            postgres,
            proxy,
            path,
            _dir: dir,
        }
    }

    /// Asserts that none of `secrets` appears in the store's files (SQLite: the database
    /// and its journal; PostgreSQL: a dump of the database).
    pub fn assert_no_secrets(&self, secrets: &[&str]) {
        let mut bytes = Vec::new();
        match &self.postgres {
            None => {
                for entry in std::fs::read_dir(self._dir.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    bytes.extend(std::fs::read(entry.path()).unwrap_or_default());
                }
            }
            Some(pg) => {
                let out = std::process::Command::new(pg.bin_dir.join("pg_dump"))
                    .env("PGPASSWORD", &pg.password)
                    .args(["-h", &pg.host, "-p", &pg.port.to_string(), "-U", &pg.user])
                    .arg(&pg.database)
                    .output()
                    .expect("run pg_dump");
                assert!(
                    out.status.success(),
                    "pg_dump: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                bytes = out.stdout;
            }
        }
        assert!(!bytes.is_empty(), "the store holds something");
        let text = String::from_utf8_lossy(&bytes);
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            assert!(
                !text.contains(secret),
                "a secret appears in the shared store"
            );
        }
    }

    /// The `[store]` section for every instance's configuration.
    pub fn section(&self) -> String {
        match (&self.postgres, &self.proxy) {
            (Some(pg), Some(proxy)) => format!(
                "\n[store]\nkind = \"postgres\"\nurl = \"postgres://{}@127.0.0.1:{}/{}\"\n\
                 password_file = \"{}\"\ntls = \"off\"\n",
                pg.user,
                proxy.port,
                pg.database,
                self.path.display()
            ),
            _ => format!(
                "\n[store]\nkind = \"sqlite\"\npath = \"{}\"\n",
                self.path.display()
            ),
        }
    }
}

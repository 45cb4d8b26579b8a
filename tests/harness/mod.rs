//! Real components for integration tests: a throwaway OpenLDAP slapd, a throwaway
//! PostgreSQL server (`postgres`), an SMTP sink, a stand-in SMS gateway, headless
//! Chromium (`browser`), and a TCP proxy a test can cut, delay or stall (`proxy`).
//!
//! Use from a file in `tests/` with `mod harness;`. Everything listens on 127.0.0.1 only,
//! on ports chosen by the kernel, with state in unique temporary folders, so tests can
//! run in parallel. Both components are stopped and cleaned up on `Drop`.
//!
//! Set `HARNESS_KEEP_DIRS=1` to keep the temporary folders (logs, LDIF, messages) after
//! a test for inspection; their paths are printed to stderr.
//!
//! `slapd`, `postgres` and `smtp` do not depend on the lockbridge crate; `daemon` runs the
//! built `lockbridge` binary against them.
#![allow(dead_code, unused_imports)]

pub mod browser;
pub mod daemon;
pub mod postgres;
pub mod proxy;
pub mod shared_store;
pub mod slapd;
pub mod sms;
pub mod smtp;

use std::path::PathBuf;

pub use browser::{Browser, Page};
pub use postgres::Postgres;
pub use proxy::Proxy;
pub use shared_store::{SharedStore, StoreUnderTest};
pub use slapd::{BindOutcome, Kind, Slapd, UserState};
pub use sms::{SmsGateway, SmsRecord};
pub use smtp::{MailSink, SinkMessage};

/// The root of the repository (the crate's manifest directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A unique temporary folder; it is left on disk when `HARNESS_KEEP_DIRS` is set.
pub(crate) fn temp_dir(prefix: &str) -> tempfile::TempDir {
    let mut dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temporary folder");
    if std::env::var_os("HARNESS_KEEP_DIRS").is_some() {
        eprintln!("harness: keeping {}", dir.path().display());
        dir.disable_cleanup(true);
    }
    dir
}

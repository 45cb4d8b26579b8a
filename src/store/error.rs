//! [`StoreError`]: what went wrong in the store, in the store's own terms.
//!
//! Backends map their driver errors here in one place (`classify`), so callers can
//! tell "try again later" ([`StoreError::Unavailable`]) from "you asked for something
//! that clashes" ([`StoreError::Conflict`]) without knowing which database is behind.

/// An error from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record asked for does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken; the text names what must be unique ("token name").
    #[error("already exists: {0}")]
    Conflict(&'static str),
    /// The database cannot be reached or used right now (busy, locked, disk or I/O
    /// trouble, pool exhausted). Worth retrying later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The schema could not be brought up to date when the store was opened.
    #[error("store migration failed: {0}")]
    Migration(String),
    /// Anything else the driver reported.
    #[error(transparent)]
    Other(#[from] sqlx::Error),
}

// SQLite primary result codes (the low byte of an extended code).
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_NOMEM: i32 = 7;
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;
const SQLITE_PROTOCOL: i32 = 15;
const SQLITE_NOTADB: i32 = 26;

impl StoreError {
    /// True when retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// Maps a driver error. `unique` names the rule a UNIQUE violation breaks for the
    /// statement at hand.
    pub(crate) fn classify(e: sqlx::Error, unique: &'static str) -> StoreError {
        match &e {
            sqlx::Error::Database(db) => {
                if db.kind() == sqlx::error::ErrorKind::UniqueViolation {
                    return StoreError::Conflict(unique);
                }
                let primary = db
                    .code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .map(|c| c & 0xff);
                match primary {
                    Some(
                        SQLITE_BUSY | SQLITE_LOCKED | SQLITE_NOMEM | SQLITE_READONLY | SQLITE_IOERR
                        | SQLITE_CORRUPT | SQLITE_FULL | SQLITE_CANTOPEN | SQLITE_PROTOCOL
                        | SQLITE_NOTADB,
                    ) => StoreError::Unavailable(db.message().to_string()),
                    _ => StoreError::Other(e),
                }
            }
            sqlx::Error::Io(io) => StoreError::Unavailable(io.to_string()),
            sqlx::Error::PoolTimedOut => {
                StoreError::Unavailable("timed out waiting for a database connection".into())
            }
            sqlx::Error::PoolClosed => StoreError::Unavailable("the store is closed".into()),
            sqlx::Error::WorkerCrashed => {
                StoreError::Unavailable("the database worker thread stopped".into())
            }
            _ => StoreError::Other(e),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migration(e.to_string())
    }
}

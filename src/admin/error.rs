use crate::account::AccountError;
use crate::store::StoreError;

/// Everything an admin API handler can fail with (authentication failures are
/// rejected earlier by the `Require` extractor).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Account(#[from] AccountError),
    /// The request itself is malformed (JSON syntax, unknown field, bad query).
    #[error("{0}")]
    BadRequest(String),
    #[error("the store is unavailable: {0}")]
    Store(#[from] StoreError),
}

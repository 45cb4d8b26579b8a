//! The admin REST API under `/api/v1`: look up users, reset passwords, read the audit log.
//!
//! Handlers are thin: they parse the request, state the permission they need in their
//! signature (`Require<...>`), and call [`crate::account`] for anything that changes a
//! password. Rendering errors as HTTP is done once, in `http::error`.

mod error;
pub mod routes;

pub use error::AdminError;
pub use routes::{AdminState, routes};

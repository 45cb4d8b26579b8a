//! Self-service pages, server-rendered: `/reset` (forgotten password: user name →
//! verification codes to the alternate email and the mobile phone → new password, or
//! "contact an administrator"), `/change` (with the current password, also when it has
//! expired or must be changed).
//!
//! Owns the verification flow (codes, tries, the browser binding), the pages, their
//! languages and their protections (CSRF, rate limits, security headers). Every change
//! to a password or a request goes through `account`; nothing here writes to the
//! directory.

pub mod flow;
pub mod pages;
mod routes;

pub use pages::{Pages, PagesError};
pub use routes::{ClientIp, SelfServiceSettings, SelfServiceState, routes};

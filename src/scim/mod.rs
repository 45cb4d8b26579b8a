//! SCIM 2.0 (RFC 7643 core schema, RFC 7644 protocol) over LDAP entries: the pure parts.
//!
//! lockbridge is becoming a SCIM service provider whose resources (`User`, `Group`) are
//! LDAP entries. This module holds what can be written and tested without I/O:
//!
//! - [`filter`]: the `filter` query parameter (RFC 7644 §3.4.2.2) and PATCH `path`
//!   (RFC 7644 §3.5.2): syntax tree, parser, canonical printing, and translation into one
//!   RFC 4515 LDAP filter the directory evaluates.
//!
//! Nothing here opens a connection or reads configuration; the only code it uses from the
//! rest of the crate is the RFC 4515 escaping in [`crate::directory::escape`] (a pure
//! function in a lower layer), so the LDAP filters it builds are escaped exactly like
//! every other filter lockbridge sends.

pub mod filter;

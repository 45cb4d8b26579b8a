//! SCIM 2.0 (RFC 7643 core schema, RFC 7644 protocol) over LDAP entries.
//!
//! lockbridge is a SCIM service provider whose resources (`User`, `Group`) are LDAP
//! entries. [`routes`] is the HTTP surface, [`service`] the operations on the
//! directory, and [`provider`] builds the service once the directory's schema is known.
//! The rest is pure, written and tested without I/O:
//!
//! - [`filter`]: the `filter` query parameter (RFC 7644 §3.4.2.2) and PATCH `path`
//!   (RFC 7644 §3.5.2): syntax tree, parser, canonical printing, evaluation against JSON,
//!   and translation into one RFC 4515 LDAP filter the directory evaluates.
//! - [`error`]: the SCIM error vocabulary (RFC 7644 §3.12), with status and `scimType`.
//! - [`schema`]: the discovery documents (`/ServiceProviderConfig`, `/ResourceTypes`,
//!   `/Schemas`, compiled in from the crate's `scim/` folder) and the [`schema::ResourceSchema`]
//!   view (mutability, `returned`, case sensitivity) the other modules work from.
//! - [`model`]: protocol messages (list response, PATCH and search requests), list query
//!   parameters, and the projection of a resource onto `attributes` /
//!   `excludedAttributes`.
//! - [`resource`]: the mapping between LDAP entries and SCIM resources, configurable by
//!   settings: entry → resource, request body → write, write → LDAP changes, and the
//!   filter mapping and sort keys that agree with it.
//! - [`patch`]: PATCH (RFC 7644 §3.5.2) applied to a User resource's JSON, and read into
//!   member changes for a Group.
//! - [`checked`]: what lockbridge checks and orders itself when the directory cannot (a
//!   filter that only narrows the search, `sortBy` on values kept as JSON).
//!
//! The pure parts open no connection and read no configuration; they use the `directory`
//! layer's plain data types ([`crate::directory::Entry`], [`crate::directory::Change`],
//! [`crate::directory::SortKey`]) and its RFC 4515 escaping (a pure function), so the
//! LDAP filters it builds are escaped exactly like every other filter lockbridge sends.

pub mod bulk;
pub mod checked;
pub mod error;
pub mod filter;
pub mod model;
pub mod patch;
pub mod provider;
pub mod resource;
pub mod routes;
pub mod schema;
pub mod service;
pub mod user_groups;

//! lockbridge: Microsoft-365-style password management over an existing LDAP directory.
//!
//! Layers, top to bottom. A module may only use modules in rows below its own, and
//! modules in one row never use each other (`tests/architecture.rs` enforces this):
//!
//! | layer       | modules                                             |
//! |-------------|-----------------------------------------------------|
//! | entry       | `cli`, then `app` (the composition root)            |
//! | edge        | `http` (router, middleware, error → response)       |
//! | features    | `admin`, `bulk`, `scim`, `sweep`                    |
//! | domain      | `account` (the one place passwords change)          |
//! | services    | `auth`, `audit`, `notify`                           |
//! | adapters    | `directory` (LDAP), `store` (SQLite)                |
//! | foundation  | `config`, then `policy` (pure rules), then `types`  |

pub mod account;
pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod bulk;
pub mod cli;
pub mod config;
pub mod directory;
pub mod http;
pub mod notify;
pub mod policy;
pub mod scim;
pub mod selfservice;
pub mod store;
pub mod sweep;
pub mod types;

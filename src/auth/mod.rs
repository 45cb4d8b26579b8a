//! Who is calling and what they may do: API tokens, administrators' sessions, roles and
//! the request extractors
//! that enforce them. The permission check lives here and only here: a handler states
//! the permission it needs in its signature (`Require<ResetPasswords>`) and cannot
//! forget to check it.

mod principal;
mod roles;
mod sessions;
mod tokens;

pub use principal::{
    AuthError, Authenticator, Principal, REVOCATION_POLL, Require, TOKEN_CACHE_TTL,
};
pub use roles::{
    AccountAction, BlockSignIn, ManageExpiry, Permission, PermissionMarker, Provision, ReadAudit,
    ReadUsers, ResetPasswords, Role, RunSweeps, SetNeverExpires, Target,
};
pub use sessions::{IssuedSession, SESSION_PREFIX, SessionService};
pub use tokens::{IssuedToken, TokenKey, TokenService};

//! What differs between directory kinds: how a password is set, where "must change at
//! next sign-in" lives, and how a user's password state is read.
//!
//! The facade (`Directory`) owns connections, retries, timeouts and error mapping; a
//! dialect only issues the kind-specific operations on the connection it is given and
//! reports failures as raw [`Failure`]s for the one mapping function.

mod openldap;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ldap3::Ldap;

pub(crate) use self::openldap::OpenLdap;
use super::error::Failure;
use crate::types::Secret;

/// The directory products lockbridge knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectoryKind {
    /// OpenLDAP with the ppolicy overlay.
    OpenLdap,
}

/// A user's password state as the directory keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PasswordState {
    pub must_change: bool,
    pub changed_at: Option<DateTime<Utc>>,
    pub locked: bool,
}

/// An entry's attributes, looked up case-insensitively (servers may answer `CN` for `cn`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Attrs(HashMap<String, Vec<String>>);

impl Attrs {
    pub fn new(attrs: HashMap<String, Vec<String>>) -> Self {
        let mut map: HashMap<String, Vec<String>> = HashMap::with_capacity(attrs.len());
        for (k, v) in attrs {
            map.entry(k.to_ascii_lowercase()).or_default().extend(v);
        }
        Attrs(map)
    }

    pub fn all(&self, name: &str) -> &[String] {
        self.0
            .get(&name.to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn first(&self, name: &str) -> Option<&str> {
        self.all(name).first().map(String::as_str)
    }
}

#[async_trait::async_trait]
pub(crate) trait Dialect: Send + Sync + 'static {
    fn kind(&self) -> DirectoryKind;

    /// Operational attributes to request with every user read.
    fn state_attributes(&self) -> &'static [&'static str];

    /// Read the password state from an entry fetched with [`Self::state_attributes`].
    fn password_state(&self, dn: &str, attrs: &Attrs) -> PasswordState;

    /// Set `dn`'s password as the (already bound) service account. Must never include the
    /// password in what it returns.
    async fn set_password(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        password: &Secret,
        timeout: Duration,
    ) -> Result<(), Failure>;

    /// Set or clear "must change at next sign-in". Idempotent.
    async fn set_must_change(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        must_change: bool,
        timeout: Duration,
    ) -> Result<(), Failure>;
}

/// The dialect for `kind`.
pub(crate) fn for_kind(kind: DirectoryKind) -> Box<dyn Dialect> {
    match kind {
        DirectoryKind::OpenLdap => Box::new(OpenLdap),
    }
}

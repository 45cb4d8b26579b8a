//! The LDAP adapter: the only code that talks to the directory.
//!
//! [`Directory`] is the facade the rest of lockbridge uses. It owns a pool of connections
//! bound as the service account (`conn`), wraps every operation in `operation_timeout`,
//! maps every failure through one function (`error::map_failure`) and records metrics.
//! What differs between directory products lives in `dialect`.
//!
//! Rules kept here:
//! - Filters are built from escaped values only (`escape`), never by `format!` on input.
//! - Passwords never appear in errors or logs; a user's password is checked on a fresh
//!   connection of its own, never on a pooled service connection.
//! - The directory may be down when lockbridge starts: [`Directory::new`] does no I/O,
//!   and operations fail with [`DirectoryError::Unavailable`] within about
//!   `connect_timeout` until it is back, then work again without a restart.
//!
//! Retries (one, on a fresh connection) happen only when the pooled connection turned
//! out to be closed: for reads and for the idempotent must-change flag whenever the
//! connection died, for a password write only when the request provably never left
//! (the connection was already closed before sending). A password write whose outcome is
//! unknown is never repeated: with password history a blind repeat would be rejected as
//! "in history" and hide what really happened. The expiry writes (policy max age, a
//! user's policy, must-change, lock, unlock) are replaces or tolerant deletes, so they
//! count as idempotent too.
//!
//! Every write to a user refuses DNs outside `users_base` (and the service account);
//! the generic entry writes (`entries`, for SCIM) refuse DNs that are not strictly below
//! `users_base` or `groups_base`. DNs are checked for RFC 4514 syntax before anything is
//! sent.

mod conn;
mod controls;
mod dialect;
pub mod dn;
mod entries;
mod error;
pub mod escape;
#[doc(hidden)]
pub mod fuzzing;
mod gentime;
mod marks;
mod ppolicy;
mod synced;
mod synced_groups;
mod userpassword;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::Stream;
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::exop::WhoAmI;
use ldap3::result::ExopResult;
use ldap3::{Ldap, Scope, SearchEntry, SearchOptions, SearchResult};

use self::conn::{Endpoint, Scheme, ServiceManager, Tls};
use self::dialect::{Attrs, Dialect};
use self::error::{ConnFate, Failure, OpKind, map_failure};
use self::ppolicy::{PolicyError, PolicyWarning};
use crate::types::Secret;

pub use self::dialect::{
    DirectoryKind, EntryVocabulary, Lockout, PasswordState, SignInVocabulary, StateTest,
};
pub use self::dn::{dn_key, is_at_or_below, key_is_below, rdn_of, same_dn};
pub use self::entries::{Change, Entry, SearchScope, SortKey, Window, WindowQuery, renamed_dn};
pub use self::error::{DirectoryError, PolicyRejection};
pub use self::gentime::parse as parse_generalized_time;
pub use self::synced::SyncedUsers;
pub use self::synced_groups::FollowedGroups;
pub use self::userpassword::StoredPassword;

/// Page size for the Paged Results control in [`Directory::search_users`], and in
/// [`Directory::stream_password_states`] when it is given 0.
const PAGE_SIZE: i32 = 500;
/// RFC 4511 result codes an optional extended operation may be refused with.
const PROTOCOL_ERROR: u32 = 2;
const UNAVAILABLE_CRITICAL_EXTENSION: u32 = 12;

/// Entries [`Directory::stream_password_states`] reads ahead of its consumer.
const STREAM_BUFFER: usize = 32;

/// How long the members of the administrator groups, once read, answer
/// [`Directory::is_admin`].
pub const ADMIN_MEMBERS_TTL: Duration = Duration::from_secs(1);

/// A group's direct members, as [`dn_key`]s.
type Members = HashSet<String>;

/// Each administrator group's direct members, both as [`dn_key`]s.
type GroupMembers = std::collections::HashMap<String, std::collections::HashSet<String>>;

/// Everything the directory adapter needs; the config module maps the `[directory]`
/// section onto this.
#[derive(Clone, Debug)]
pub struct DirectorySettings {
    pub kind: DirectoryKind,
    /// The server hashes a clear-text `userPassword` (OpenLDAP `ppolicy_hash_cleartext`):
    /// a reset with must-change is one atomic modify.
    pub server_hashes_cleartext: bool,
    pub url: String,
    pub starttls: bool,
    pub ca_file: Option<PathBuf>,
    pub tls_insecure_skip_verify: bool,
    pub allow_plaintext: bool,
    pub bind_dn: String,
    pub bind_password: Secret,
    pub users_base: String,
    /// Subtree of the group entries that entry writes may touch (SCIM Groups); empty =
    /// none.
    pub groups_base: String,
    pub user_filter: String,
    pub user_name_attribute: String,
    pub mail_attribute: String,
    pub display_name_attribute: String,
    pub alternate_mail_attribute: String,
    pub mobile_attribute: String,
    pub admin_group_dns: Vec<String>,
    pub pool_size: u32,
    pub connect_timeout: Duration,
    pub operation_timeout: Duration,
}

/// A user entry as lockbridge sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserEntry {
    pub dn: String,
    /// The sign-in name (`user_name_attribute`).
    pub user_name: String,
    pub display_name: Option<String>,
    pub mail: Option<String>,
    pub alternate_mail: Option<String>,
    pub mobile: Option<String>,
    /// Must change the password at next sign-in (OpenLDAP: `pwdReset: TRUE`).
    pub must_change: bool,
    /// When the password was last changed (OpenLDAP: `pwdChangedTime`).
    pub password_changed_at: Option<DateTime<Utc>>,
    /// Locked: blocked, or locked out after failed sign-ins (OpenLDAP:
    /// `pwdAccountLockedTime` present).
    pub locked: bool,
    /// Sign-in blocked by an administrator (OpenLDAP: `pwdAccountLockedTime:
    /// 000001010000Z`); implies `locked`.
    pub blocked: bool,
    /// The password policy that applies instead of the directory's default one
    /// (OpenLDAP: `pwdPolicySubentry`); `None` = the default policy.
    pub policy_dn: Option<String>,
    /// The account says its password never expires (Active Directory's flag).
    pub never_expires: bool,
}

/// One user's password facts, as [`Directory::stream_password_states`] reads them for the
/// expiry sweep. Facts only: what they mean (expiry date, which policy's age applies, what
/// to do without a change time) is the caller's decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PasswordStateEntry {
    pub dn: String,
    /// A stable identifier that survives renames (OpenLDAP: `entryUUID`).
    pub entry_uuid: Option<String>,
    /// The sign-in name (`user_name_attribute`; the first value if there are several).
    pub user_name: String,
    pub display_name: Option<String>,
    pub mail: Option<String>,
    /// When the password was last changed (OpenLDAP: `pwdChangedTime`); `None` when the
    /// directory has no record (e.g. entries loaded without ppolicy).
    pub changed_at: Option<DateTime<Utc>>,
    /// The policy that applies instead of the default one (OpenLDAP: `pwdPolicySubentry`).
    pub policy_dn: Option<String>,
    /// Must change the password at next sign-in (OpenLDAP: `pwdReset: TRUE`).
    pub must_change: bool,
    /// Locked (OpenLDAP: `pwdAccountLockedTime` present).
    pub locked: bool,
    /// Sign-in blocked by an administrator (implies `locked`).
    pub blocked: bool,
    /// When the entry was created (OpenLDAP: `createTimestamp`): a possible stand-in for
    /// `changed_at`, reported, not applied.
    pub created_at: Option<DateTime<Utc>>,
    /// The account says its password never expires (Active Directory's flag).
    pub never_expires: bool,
}

/// A user as the sweep read it: what a write through the account gate needs (the
/// addresses the sweep does not read are left empty).
impl From<&PasswordStateEntry> for UserEntry {
    fn from(e: &PasswordStateEntry) -> Self {
        UserEntry {
            dn: e.dn.clone(),
            user_name: e.user_name.clone(),
            display_name: e.display_name.clone(),
            mail: e.mail.clone(),
            alternate_mail: None,
            mobile: None,
            must_change: e.must_change,
            password_changed_at: e.changed_at,
            locked: e.locked,
            blocked: e.blocked,
            policy_dn: e.policy_dn.clone(),
            never_expires: e.never_expires,
        }
    }
}

/// Result of [`Directory::search_users`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserSearch {
    /// Sorted by user name, case-insensitively.
    pub users: Vec<UserEntry>,
    /// More entries matched than were returned (`max`, or the directory's own size limit).
    pub truncated: bool,
}

/// Result of [`Directory::ping`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingInfo {
    /// The service account's identity as the directory sees it (WhoAmI, without `dn:`).
    pub bound_as: String,
    /// Vendor and version from the root DSE, when it says.
    pub vendor: Option<String>,
    /// Whether the root DSE lists the Password Policy control (`None`: root DSE unreadable).
    pub ppolicy_supported: Option<bool>,
    /// The kind of server the root DSE names, when lockbridge recognises it.
    pub server_kind: Option<DirectoryKind>,
    /// Time for the round trip.
    pub round_trip: Duration,
}

/// Result of [`Directory::check_user_password`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BindCheck {
    /// The bind succeeded.
    pub ok: bool,
    /// The bind succeeded but the password must be changed now (ppolicy changeAfterReset).
    pub must_change: bool,
    /// The password has expired (bind refused, or accepted as a grace login).
    pub expired: bool,
    /// Grace logins left, when the directory said.
    pub grace: Option<u32>,
    /// The account is locked (only reported by directories that say so, e.g. OpenLDAP with
    /// `ppolicy_use_lockout`).
    pub locked: bool,
    /// The connection is now bound as the user. False when the directory refused the bind
    /// even though the password was right (Active Directory's "must change" and
    /// "expired": `ok` is then true, `bound` false).
    pub bound: bool,
}

/// A piece of a user's security info.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contact {
    AlternateMail,
    Mobile,
}

/// What a user's own password change did ([`Directory::change_own_password`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnChange {
    Changed,
    /// The bind as the user did not succeed (wrong password, locked, or expired with no
    /// grace login left): nothing was changed.
    NotSignedIn(BindCheck),
}

/// The directory, reached through a pool of service-account connections. Cheap to clone.
#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

struct Inner {
    pool: bb8::Pool<ServiceManager>,
    /// Shared with the pool's manager: why connecting failed most recently.
    connect_errors: Arc<Mutex<Option<(Instant, DirectoryError)>>>,
    /// Shared with the pool's manager: woken when a connection attempt fails.
    connect_failed: Arc<tokio::sync::Notify>,
    endpoint: Endpoint,
    dialect: Arc<dyn Dialect>,
    users_base: String,
    /// `users_base` and `bind_dn` in [`dn_key`] form, for the guards on writes.
    users_base_key: String,
    bind_dn_key: String,
    /// The service account's DN as configured (what a ping reports when the server has
    /// no Who-am-I).
    bind_dn: String,
    /// `groups_base` in [`dn_key`] form; `None` when not configured.
    groups_base_key: Option<String>,
    /// Whether the root DSE lists Server Side Sort and Virtual List View, once known.
    sorting_supported: std::sync::OnceLock<bool>,
    /// The followed copy of the users ([`Directory::follow_users`]), which this adapter's
    /// own writes must keep honest.
    followed: std::sync::OnceLock<std::sync::Weak<synced::Shared>>,
    /// The followed groups ([`Directory::follow_groups`]), told of writes alike.
    followed_groups: std::sync::OnceLock<std::sync::Weak<synced_groups::GroupsShared>>,
    /// The members of the administrator groups ([`dn_key`] form) and when they were read
    /// ([`ADMIN_MEMBERS_TTL`]); the lock makes concurrent callers share one read.
    admin_members: tokio::sync::Mutex<Option<(Instant, Arc<GroupMembers>)>>,
    /// Other groups that decide who may act on whom (a scoped role's group), read like
    /// the administrator groups: group [`dn_key`] → (when read, its members).
    watched_groups: tokio::sync::Mutex<HashMap<String, (Instant, Arc<Members>)>>,
    /// Parenthesised.
    user_filter: String,
    user_name_attribute: String,
    mail_attribute: String,
    display_name_attribute: String,
    alternate_mail_attribute: String,
    mobile_attribute: String,
    admin_group_dns: Vec<String>,
    /// `server_hashes_cleartext`, until a write shows otherwise.
    one_write_resets: std::sync::atomic::AtomicBool,
    /// The first one-write reset was checked (the stored value is hashed).
    one_write_checked: std::sync::atomic::AtomicBool,
    /// Attributes requested for every user read.
    user_attributes: Vec<String>,
    /// Attributes requested by [`Directory::stream_password_states`].
    sweep_attributes: Vec<String>,
    pool_size: u32,
    operation_timeout: Duration,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("url", &self.inner.endpoint.url)
            .field("kind", &self.inner.dialect.kind())
            .finish_non_exhaustive()
    }
}

/// What [`Directory::run_with`] does with the connection after the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterUse {
    /// Back to the pool (unless the operation showed it is broken).
    Keep,
    /// Unbind and drop it: the operation left state on the server that only closing the
    /// connection clears.
    Close,
}

/// How many times a password write that clashed with another write to the same entry
/// is sent in all (see [`Failure::is_write_clash`]).
const WRITE_CLASH_TRIES: u32 = 4;

/// A short, random pause before sending a clashing write again, growing with each try,
/// so two writers that clashed do not meet again at once.
fn write_clash_pause(tries: u32) -> Duration {
    use rand::Rng;
    let ceiling_ms = 5u64 << tries.min(4);
    Duration::from_millis(rand::thread_rng().gen_range(1..=ceiling_ms))
}

/// Whether an operation may be repeated on a fresh connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// Reads and idempotent writes: retry when the connection died.
    Idempotent,
    /// Retry only when the request provably was not sent.
    IfNotSent,
}

fn config(msg: impl Into<String>) -> DirectoryError {
    DirectoryError::Config(msg.into())
}

impl Directory {
    /// Validate `settings` and set up the pool, without contacting the directory (so the
    /// daemon starts, and reports not ready, while the directory is down).
    ///
    /// Checks: url scheme (ldap, ldaps, ldapi) and form; no unencrypted ldap:// unless
    /// `allow_plaintext`; ca_file readable with at least one certificate (or a usable
    /// system trust store); user_filter parses; attribute names are names; non-empty DNs,
    /// password, pool size and timeouts. Must be called inside a Tokio runtime.
    pub fn new(settings: DirectorySettings) -> Result<Directory, DirectoryError> {
        let s = settings;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(config(
                "the directory connection pool must be created inside the Tokio runtime",
            ));
        }
        let (scheme, display) = conn::parse_url(&s.url)?;
        if s.starttls && scheme != Scheme::Ldap {
            return Err(config(format!(
                "starttls = true only applies to an ldap:// url, but url is {}: use \
                 ldap://host:389 with starttls, or {} without it",
                s.url, s.url
            )));
        }
        let uses_tls = scheme == Scheme::Ldaps || s.starttls;
        if scheme == Scheme::Ldap && !s.starttls {
            if !s.allow_plaintext {
                return Err(config(format!(
                    "url {} is unencrypted: use ldaps://, or set starttls = true, or (only for \
                     a loopback test directory) allow_plaintext = true",
                    s.url
                )));
            }
            tracing::warn!(url = %s.url, "directory connection is NOT encrypted (allow_plaintext = true): passwords cross the network in clear text");
        }
        conn::install_crypto_provider();
        let tls = if !uses_tls {
            if s.ca_file.is_some() || s.tls_insecure_skip_verify {
                tracing::warn!(url = %s.url, "ca_file and tls_insecure_skip_verify are ignored: the directory url does not use TLS");
            }
            Tls::None
        } else if s.tls_insecure_skip_verify {
            tracing::warn!(
                url = %s.url,
                "TLS CERTIFICATE VERIFICATION IS OFF for the directory (tls_insecure_skip_verify = true): \
                 anyone on the network path can impersonate it and read every password lockbridge sets. \
                 Never use this in production."
            );
            if s.ca_file.is_some() {
                tracing::warn!("ca_file is ignored because tls_insecure_skip_verify = true");
            }
            Tls::Insecure
        } else {
            Tls::Verified(conn::verified_config(conn::load_roots(
                s.ca_file.as_deref(),
            )?)?)
        };

        if s.bind_dn.trim().is_empty() || !s.bind_dn.contains('=') {
            return Err(config(format!(
                "bind_dn {:?} is not a DN (expected e.g. cn=lockbridge,ou=services,dc=example,dc=org)",
                s.bind_dn
            )));
        }
        if s.bind_password.expose().is_empty() {
            return Err(config(
                "bind_password is empty: the directory would treat that as an anonymous bind",
            ));
        }
        if s.users_base.trim().is_empty() || !s.users_base.contains('=') {
            return Err(config(format!(
                "users_base {:?} is not a DN (expected e.g. ou=people,dc=example,dc=org)",
                s.users_base
            )));
        }
        if !s.groups_base.trim().is_empty()
            && (!s.groups_base.contains('=') || !escape::is_valid_dn(s.groups_base.trim()))
        {
            return Err(config(format!(
                "groups_base {:?} is not a DN (expected e.g. ou=groups,dc=example,dc=org, or \
                 empty for no groups)",
                s.groups_base
            )));
        }
        let trimmed = s.user_filter.trim();
        let user_filter = if trimmed.starts_with('(') {
            trimmed.to_owned()
        } else {
            format!("({trimmed})")
        };
        if trimmed.is_empty() || !escape::is_valid_filter(&user_filter) {
            return Err(config(format!(
                "user_filter {:?} is not a valid LDAP filter (RFC 4515), e.g. (objectClass=inetOrgPerson)",
                s.user_filter
            )));
        }
        for (name, value) in [
            ("user_name_attribute", &s.user_name_attribute),
            ("mail_attribute", &s.mail_attribute),
            ("display_name_attribute", &s.display_name_attribute),
            ("alternate_mail_attribute", &s.alternate_mail_attribute),
            ("mobile_attribute", &s.mobile_attribute),
        ] {
            if !escape::is_attribute_description(value) {
                return Err(config(format!(
                    "{name} {value:?} is not an LDAP attribute name"
                )));
            }
        }
        if let Some(bad) = s
            .admin_group_dns
            .iter()
            .find(|g| g.trim().is_empty() || !g.contains('='))
        {
            return Err(config(format!(
                "admin_group_dns holds {bad:?}, which is not a DN"
            )));
        }
        if s.pool_size == 0 {
            return Err(config("pool_size must be at least 1"));
        }
        if s.connect_timeout.is_zero() || s.operation_timeout.is_zero() {
            return Err(config(
                "connect_timeout and operation_timeout must be longer than zero",
            ));
        }

        let dialect = dialect::for_kind(s.kind);
        let mut user_attributes: Vec<String> = Vec::new();
        for a in [
            s.user_name_attribute.as_str(),
            &s.mail_attribute,
            &s.display_name_attribute,
            &s.alternate_mail_attribute,
            &s.mobile_attribute,
        ]
        .into_iter()
        .chain(dialect.state_attributes().iter().copied())
        {
            if !user_attributes.iter().any(|x| x.eq_ignore_ascii_case(a)) {
                user_attributes.push(a.to_owned());
            }
        }

        let mut sweep_attributes: Vec<String> = Vec::new();
        for a in [
            s.user_name_attribute.as_str(),
            &s.mail_attribute,
            &s.display_name_attribute,
        ]
        .into_iter()
        .chain(dialect.state_attributes().iter().copied())
        .chain(dialect.entry_attributes().iter().copied())
        {
            if !sweep_attributes.iter().any(|x| x.eq_ignore_ascii_case(a)) {
                sweep_attributes.push(a.to_owned());
            }
        }

        let endpoint = Endpoint {
            url: s.url.clone(),
            display,
            starttls: s.starttls,
            tls,
            connect_timeout: s.connect_timeout,
        };
        let connect_errors = Arc::new(Mutex::new(None));
        let connect_failed = Arc::new(tokio::sync::Notify::new());
        let manager = ServiceManager {
            endpoint: endpoint.clone(),
            bind_dn: s.bind_dn.clone(),
            bind_password: s.bind_password.clone(),
            operation_timeout: s.operation_timeout,
            last_error: connect_errors.clone(),
            failed: connect_failed.clone(),
        };
        let pool = bb8::Pool::builder()
            .max_size(s.pool_size)
            .min_idle(None)
            .connection_timeout(s.connect_timeout)
            .test_on_check_out(true)
            .idle_timeout(Some(Duration::from_secs(300)))
            .max_lifetime(Some(Duration::from_secs(3600)))
            .queue_strategy(bb8::QueueStrategy::Lifo)
            .build_unchecked(manager);

        Ok(Directory {
            inner: Arc::new(Inner {
                pool,
                connect_errors,
                connect_failed,
                endpoint,
                dialect,
                users_base_key: dn_key(&s.users_base),
                bind_dn_key: dn_key(&s.bind_dn),
                bind_dn: s.bind_dn.clone(),
                groups_base_key: Some(dn_key(&s.groups_base)).filter(|g| !g.is_empty()),
                sorting_supported: std::sync::OnceLock::new(),
                followed: std::sync::OnceLock::new(),
                followed_groups: std::sync::OnceLock::new(),
                admin_members: tokio::sync::Mutex::new(None),
                watched_groups: tokio::sync::Mutex::new(HashMap::new()),
                users_base: s.users_base,
                user_filter,
                user_name_attribute: s.user_name_attribute,
                mail_attribute: s.mail_attribute,
                display_name_attribute: s.display_name_attribute,
                alternate_mail_attribute: s.alternate_mail_attribute,
                mobile_attribute: s.mobile_attribute,
                admin_group_dns: s.admin_group_dns,
                one_write_resets: std::sync::atomic::AtomicBool::new(s.server_hashes_cleartext),
                one_write_checked: std::sync::atomic::AtomicBool::new(false),
                user_attributes,
                sweep_attributes,
                pool_size: s.pool_size,
                operation_timeout: s.operation_timeout,
            }),
        })
    }

    /// One round trip on a pooled connection (WhoAmI, a base-scope read of `users_base`
    /// and of the root DSE, sent together): for `/readyz` and `check-config`.
    ///
    /// A missing or invisible `users_base` is a `Config` error; so are refused service
    /// credentials and an untrusted certificate.
    pub async fn ping(&self) -> Result<PingInfo, DirectoryError> {
        let inner = &*self.inner;
        let t = inner.operation_timeout;
        self.run("ping", OpKind::Read, Retry::Idempotent, |ldap| async move {
            let started = Instant::now();
            let (mut who, mut base, mut dse) = (ldap.clone(), ldap.clone(), ldap);
            let (who, base, dse) = tokio::join!(
                who.with_timeout(t).extended(WhoAmI),
                base.with_timeout(t).search(
                    &inner.users_base,
                    Scope::Base,
                    "(objectClass=*)",
                    vec!["1.1"]
                ),
                dse.with_timeout(t).search(
                    "",
                    Scope::Base,
                    "(objectClass=*)",
                    vec![
                        "vendorName",
                        "vendorVersion",
                        "supportedControl",
                        "objectClass",
                        "forestFunctionality",
                        "isGlobalCatalogReady",
                    ]
                ),
            );
            let round_trip = started.elapsed();
            let ExopResult(exop, res) = who?;
            // Who-am-I is optional (Active Directory answers "not supported", rc 2): the
            // connection's bind succeeded, so the service account is who it is.
            let exop = match res.rc {
                0 => exop,
                PROTOCOL_ERROR | UNAVAILABLE_CRITICAL_EXTENSION => ldap3::exop::Exop {
                    name: None,
                    val: Some(format!("dn:{}", inner.bind_dn).into_bytes()),
                },
                _ => return Err(Failure::from_result(&res)),
            };
            let authzid = exop
                .val
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default();
            let bound_as = authzid
                .strip_prefix("dn:")
                .unwrap_or(&authzid)
                .trim()
                .to_owned();
            let SearchResult(entries, res) = base?;
            match res.rc {
                0 if entries.iter().any(|e| !e.is_ref()) => {}
                0 | 32 => {
                    return Err(Failure::Mapped(config(format!(
                        "users_base {} does not exist or the service account cannot read it",
                        inner.users_base
                    ))));
                }
                _ => return Err(Failure::from_result(&res)),
            }
            let server_kind = vendor_kind(&dse);
            let (vendor, ppolicy_supported) = match dse {
                Ok(SearchResult(entries, res)) if res.rc == 0 => {
                    match entries.into_iter().find(|e| !e.is_ref()) {
                        Some(e) => root_dse_facts(&Attrs::new(SearchEntry::construct(e).attrs)),
                        None => (None, None),
                    }
                }
                _ => (None, None),
            };
            Ok(PingInfo {
                bound_as,
                vendor,
                ppolicy_supported,
                server_kind,
                round_trip,
            })
        })
        .await
    }

    /// Find a user by sign-in name: `(&(user_filter)(user_name_attribute=<escaped>))` under
    /// `users_base`, subtree. Exactly one match, or `NoSuchUser`; more than one is
    /// `Ambiguous` (the directory's data must be fixed).
    pub async fn find_user(&self, user_name: &str) -> Result<UserEntry, DirectoryError> {
        let inner = &*self.inner;
        if user_name.is_empty() {
            return Err(DirectoryError::NoSuchUser);
        }
        let filter = escape::and([
            inner.user_filter.clone(),
            escape::equals(&inner.user_name_attribute, user_name),
        ]);
        // Two at most: a second match is what we ask to learn.
        let entries = self.user_entries("find_user", &filter, Some(2)).await?;
        match entries.len() {
            0 => Err(DirectoryError::NoSuchUser),
            1 => {
                let entry = entries.into_iter().next().expect("one entry");
                self.user_entry(entry, Some(user_name))
                    .ok_or(DirectoryError::NoSuchUser)
            }
            _ => {
                tracing::warn!(
                    attribute = %inner.user_name_attribute,
                    "more than one directory entry has the same sign-in name"
                );
                Err(DirectoryError::Ambiguous(format!(
                    "more than one entry under {} has this {} value; sign-in names must be unique",
                    inner.users_base, inner.user_name_attribute
                )))
            }
        }
    }

    /// The user entries under `users_base` matching `filter` (with the user attributes),
    /// at most `size_limit` of them when given (hitting it is not an error).
    async fn user_entries(
        &self,
        op: &'static str,
        filter: &str,
        size_limit: Option<i32>,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let inner = &*self.inner;
        self.run(op, OpKind::Read, Retry::Idempotent, |mut ldap| async move {
            if let Some(limit) = size_limit {
                ldap.with_search_options(SearchOptions::new().sizelimit(limit));
            }
            let SearchResult(entries, res) = ldap
                .with_timeout(inner.operation_timeout)
                .search(
                    &inner.users_base,
                    Scope::Subtree,
                    filter,
                    inner.user_attributes.as_slice(),
                )
                .await?;
            // 4 = sizeLimitExceeded: the limit asked for was reached.
            match res.rc {
                0 | 4 => {}
                32 => return Err(Failure::Mapped(self.missing_users_base())),
                _ => return Err(Failure::from_result(&res)),
            }
            Ok(entries
                .into_iter()
                .filter(|e| !e.is_ref() && !e.is_intermediate())
                .map(SearchEntry::construct)
                .collect::<Vec<_>>())
        })
        .await
    }

    /// Several users by sign-in name in one search (`(|(uid=a)(uid=b)...)`), for a bulk
    /// job's batch. A name that matches no entry, or more than one, is left out (the
    /// caller looks it up alone to get the reason).
    pub async fn find_users(
        &self,
        user_names: &[&str],
    ) -> Result<std::collections::HashMap<String, UserEntry>, DirectoryError> {
        let inner = &*self.inner;
        let names: Vec<&str> = user_names
            .iter()
            .copied()
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let filter = escape::and([
            inner.user_filter.clone(),
            escape::or(
                names
                    .iter()
                    .map(|n| escape::equals(&inner.user_name_attribute, n)),
            ),
        ]);
        let entries = self.user_entries("find_users", &filter, None).await?;
        let mut found: std::collections::HashMap<String, UserEntry> =
            std::collections::HashMap::new();
        let mut ambiguous = std::collections::HashSet::new();
        for entry in entries {
            // The name asked for that this entry carries (case as asked).
            let attrs = &entry.attrs;
            let Some(asked) = names.iter().find(|n| {
                attrs.iter().any(|(a, values)| {
                    a.eq_ignore_ascii_case(&inner.user_name_attribute)
                        && values.iter().any(|v| v.eq_ignore_ascii_case(n))
                })
            }) else {
                continue;
            };
            let asked = (*asked).to_owned();
            let Some(user) = self.user_entry(entry, Some(&asked)) else {
                continue;
            };
            if found.insert(asked.to_lowercase(), user).is_some() {
                ambiguous.insert(asked.to_lowercase());
            }
        }
        for name in ambiguous {
            found.remove(&name);
        }
        Ok(found)
    }

    /// Users whose user name, mail or display name contains `term` (escaped substring
    /// match; empty term = every user), read with the Paged Results control and cut off
    /// after `max` entries (`truncated`). Sorted by user name, case-insensitively; when
    /// truncated, the sorted entries are the first `max` the directory returned, not the
    /// alphabetically first.
    pub async fn search_users(&self, term: &str, max: usize) -> Result<UserSearch, DirectoryError> {
        let inner = &*self.inner;
        let user_name = inner.user_name_attribute.as_str();
        let matching = if term.is_empty() {
            escape::present(user_name)
        } else {
            escape::or([
                escape::contains(user_name, term),
                escape::contains(&inner.mail_attribute, term),
                escape::contains(&inner.display_name_attribute, term),
            ])
        };
        let filter = escape::and([
            inner.user_filter.clone(),
            escape::present(user_name),
            matching,
        ]);
        let filter = filter.as_str();
        let (entries, truncated) = self
            .run("search_users", OpKind::Read, Retry::Idempotent, |mut ldap| async move {
                let adapters: Vec<Box<dyn Adapter<'_, String, Vec<String>>>> = vec![
                    Box::new(EntriesOnly::new()),
                    Box::new(PagedResults::new(PAGE_SIZE)),
                ];
                let mut stream = ldap
                    .with_timeout(inner.operation_timeout)
                    .streaming_search_with(
                        adapters,
                        &inner.users_base,
                        Scope::Subtree,
                        filter,
                        inner.user_attributes.clone(),
                    )
                    .await?;
                let mut entries = Vec::new();
                let mut truncated = false;
                loop {
                    match stream.next().await {
                        Ok(Some(e)) if entries.len() >= max => {
                            drop(e);
                            truncated = true;
                            break;
                        }
                        Ok(Some(e)) => entries.push(SearchEntry::construct(e)),
                        Ok(None) => break,
                        Err(e) => {
                            let _ = stream.finish().await;
                            return Err(Failure::from(e));
                        }
                    }
                }
                if truncated {
                    // Stop the server's work on this search; the connection stays usable.
                    let _ = stream.finish().await;
                    let msgid = stream.ldap_handle().last_id();
                    ldap.abandon(msgid).await?;
                } else {
                    let res = stream.finish().await;
                    match res.rc {
                        0 => {}
                        4 => {
                            tracing::warn!(
                                returned = entries.len(),
                                "the directory's size limit cut the user listing short; raise the \
                                 service account's limits (OpenLDAP: limits dn.exact=<bind_dn> \
                                 size=unlimited) to list every user"
                            );
                            truncated = true;
                        }
                        32 => return Err(Failure::Mapped(self.missing_users_base())),
                        _ => return Err(Failure::from_result(&res)),
                    }
                }
                Ok((entries, truncated))
            })
            .await?;
        let mut users: Vec<UserEntry> = entries
            .into_iter()
            .filter_map(|e| self.user_entry(e, None))
            .collect();
        users.sort_by_cached_key(|u| (u.user_name.to_lowercase(), u.dn.clone()));
        Ok(UserSearch { users, truncated })
    }

    /// Set a user's password as the service account (dialect: OpenLDAP = Password Modify
    /// with the ppolicy control), then the must-change flag.
    ///
    /// If the password was set but the flag could not be written (after one immediate
    /// retry) the result is [`DirectoryError::FlagNotApplied`]. Both steps run in a task of
    /// their own, so a caller that stops waiting (request timeout, client gone) cannot leave
    /// a half-done change behind.
    pub async fn set_password(
        &self,
        user_dn: &str,
        new_password: &Secret,
        must_change: bool,
    ) -> Result<(), DirectoryError> {
        self.check_new_password(user_dn, new_password)?;
        let this = self.clone();
        let dn = user_dn.to_owned();
        let password = new_password.clone();
        let task =
            tokio::spawn(
                async move { this.set_password_to_end(&dn, &password, must_change).await },
            );
        match task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(DirectoryError::Unavailable(
                "the password change was cancelled by shutdown".into(),
            )),
        }
    }

    /// Set a password the user already knows (an identity provider's push), leaving no
    /// change required: on OpenLDAP one write (ppolicy clears `pwdReset` when a writer
    /// without `manage`, as lockbridge's service account must be, changes a password);
    /// the dialect adds what its server needs.
    pub async fn set_known_password(
        &self,
        user_dn: &str,
        new_password: &Secret,
    ) -> Result<(), DirectoryError> {
        self.check_new_password(user_dn, new_password)?;
        let inner = &*self.inner;
        let t = inner.operation_timeout;
        self.run(
            "set_known_password",
            OpKind::PasswordWrite,
            Retry::IfNotSent,
            |mut ldap| async move {
                inner
                    .dialect
                    .set_known_password(&mut ldap, user_dn, new_password, t)
                    .await
            },
        )
        .await
        .map_err(|e| redact(e, new_password.expose()))
    }

    fn check_new_password(&self, user_dn: &str, password: &Secret) -> Result<(), DirectoryError> {
        let _writing = self.check_user_dn(user_dn, "set a password for")?;
        if password.expose().is_empty() {
            return Err(DirectoryError::PasswordRejected(PolicyRejection::Other(
                "the new password is empty".into(),
            )));
        }
        Ok(())
    }

    /// The Password Modify itself (the dialect's way, with the ppolicy control); the
    /// password is redacted from any error.
    async fn write_password(&self, dn: &str, password: &Secret) -> Result<(), DirectoryError> {
        let inner = &*self.inner;
        let t = inner.operation_timeout;
        self.run(
            "set_password",
            OpKind::PasswordWrite,
            Retry::IfNotSent,
            |mut ldap| async move { inner.dialect.set_password(&mut ldap, dn, password, t).await },
        )
        .await
        .map_err(|e| redact(e, password.expose()))
    }

    async fn set_password_to_end(
        &self,
        dn: &str,
        password: &Secret,
        must_change: bool,
    ) -> Result<(), DirectoryError> {
        use std::sync::atomic::Ordering;
        let inner = &*self.inner;
        if must_change && inner.one_write_resets.load(Ordering::Relaxed) {
            let t = inner.operation_timeout;
            self.run(
                "set_password_and_must_change",
                OpKind::PasswordWrite,
                Retry::IfNotSent,
                |mut ldap| async move {
                    inner
                        .dialect
                        .set_password_and_must_change(&mut ldap, dn, password, t)
                        .await
                },
            )
            .await
            .map_err(|e| redact(e, password.expose()))?;
            if !inner.one_write_checked.load(Ordering::Relaxed) {
                self.check_one_write(dn, password).await?;
            }
            return Ok(());
        }
        self.write_password(dn, password).await?;
        let inner = &*self.inner;
        let t = inner.operation_timeout;
        let set_flag = || {
            self.run(
                "set_must_change",
                OpKind::Write,
                Retry::Idempotent,
                |mut ldap| async move {
                    inner
                        .dialect
                        .set_must_change(&mut ldap, dn, must_change, t)
                        .await
                },
            )
        };
        match set_flag().await {
            Ok(()) => Ok(()),
            Err(first) => {
                tracing::warn!(user.dn = dn, must_change, error = %first, "writing the must-change flag failed; retrying once");
                match set_flag().await {
                    Ok(()) => Ok(()),
                    Err(second) => {
                        tracing::error!(
                            user.dn = dn,
                            must_change,
                            error = %second,
                            "the password was set but the must-change flag could not be written"
                        );
                        Err(DirectoryError::FlagNotApplied {
                            directory_unavailable: second.is_unavailable(),
                        })
                    }
                }
            }
        }
    }

    /// After the first one-write reset: is the stored value hashed? If the server kept
    /// it in clear text, the password is written again the standard way (Password
    /// Modify hashes it), and one-write resets stop for this process, loudly.
    async fn check_one_write(&self, dn: &str, password: &Secret) -> Result<(), DirectoryError> {
        use std::sync::atomic::Ordering;
        let inner = &*self.inner;
        let t = inner.operation_timeout;
        let stored = self
            .run(
                "check_one_write",
                OpKind::Read,
                Retry::Idempotent,
                |mut ldap| async move {
                    inner
                        .dialect
                        .stored_password_is_hashed(&mut ldap, dn, t)
                        .await
                },
            )
            .await?;
        match stored {
            Some(true) => {
                inner.one_write_checked.store(true, Ordering::Relaxed);
                Ok(())
            }
            Some(false) => {
                inner.one_write_resets.store(false, Ordering::Relaxed);
                tracing::error!(
                    user.dn = dn,
                    "directory.server_hashes_cleartext is set but the directory stored a \
                     password in clear text; rewriting it hashed, and no longer writing \
                     passwords that way: turn on ppolicy_hash_cleartext or unset the option"
                );
                self.write_password(dn, password).await?;
                self.run(
                    "set_must_change",
                    OpKind::Write,
                    Retry::Idempotent,
                    |mut ldap| async move {
                        inner.dialect.set_must_change(&mut ldap, dn, true, t).await
                    },
                )
                .await
                .map_err(|e| DirectoryError::FlagNotApplied {
                    directory_unavailable: e.is_unavailable(),
                })
            }
            None => {
                // Not readable by the service account: the operator's word stands.
                inner.one_write_checked.store(true, Ordering::Relaxed);
                tracing::warn!(
                    "cannot read userPassword to check directory.server_hashes_cleartext; trusting the setting"
                );
                Ok(())
            }
        }
    }

    /// Whether `user_dn` is a direct `member` of any of `admin_group_dns`. The groups'
    /// members are read (one base search of each group) at most once per
    /// [`ADMIN_MEMBERS_TTL`] and compared in [`dn_key`] form (case, spaces around
    /// separators and escapes written one way), so a write that must check its target
    /// costs no directory round trip of its own. A membership change is seen within
    /// that time. An administrator group that does not exist is a configuration error.
    pub async fn is_admin(&self, user_dn: &str) -> Result<bool, DirectoryError> {
        Ok(!self.admin_groups_of(user_dn).await?.is_empty())
    }

    /// Which of `admin_group_dns` list `user_dn` as a direct `member`, as [`dn_key`]s
    /// (compare with `dn_key` of a configured group DN); read as for [`Self::is_admin`].
    pub async fn admin_groups_of(&self, user_dn: &str) -> Result<Vec<String>, DirectoryError> {
        if self.inner.admin_group_dns.is_empty() || user_dn.is_empty() {
            return Ok(Vec::new());
        }
        let member = dn_key(user_dn);
        Ok(self
            .admin_members()
            .await?
            .iter()
            .filter(|(_, members)| members.contains(&member))
            .map(|(group, _)| group.clone())
            .collect())
    }

    /// Whether `user_dn` is a direct member of `group_dn`, from a reading of the group at
    /// most [`ADMIN_MEMBERS_TTL`] old: such a group is asked about for every account a
    /// scoped administrator acts on. A group that does not exist is a configuration error.
    pub async fn watched_group_has_member(
        &self,
        group_dn: &str,
        user_dn: &str,
    ) -> Result<bool, DirectoryError> {
        let key = dn_key(group_dn);
        let mut cached = self.inner.watched_groups.lock().await;
        let members =
            match cached.get(&key) {
                Some((at, members)) if at.elapsed() < ADMIN_MEMBERS_TTL => members.clone(),
                _ => {
                    let entry = self.read_entry(group_dn, &["member"]).await?.ok_or_else(|| {
                    config(format!(
                        "group {group_dn} ([[roles.scoped]] over_group) does not exist in the \
                         directory, or the service account cannot read it"
                    ))
                })?;
                    let members: Arc<Members> = Arc::new(
                        entry
                            .all("member")
                            .iter()
                            .filter(|v| !v.is_empty())
                            .map(|v| dn_key(v))
                            .collect(),
                    );
                    cached.insert(key, (Instant::now(), members.clone()));
                    members
                }
            };
        Ok(members.contains(&dn_key(user_dn)))
    }

    async fn admin_members(&self) -> Result<Arc<GroupMembers>, DirectoryError> {
        let mut cached = self.inner.admin_members.lock().await;
        if let Some((at, members)) = cached.as_ref()
            && at.elapsed() < ADMIN_MEMBERS_TTL
        {
            return Ok(members.clone());
        }
        let inner = &*self.inner;
        let members = self
            .run(
                "admin_members",
                OpKind::Read,
                Retry::Idempotent,
                |mut ldap| async move {
                    let mut groups = GroupMembers::new();
                    for group in &inner.admin_group_dns {
                        let SearchResult(entries, res) = ldap
                            .with_timeout(inner.operation_timeout)
                            .search(group, Scope::Base, "(objectClass=*)", vec!["member"])
                            .await?;
                        match res.rc {
                            0 => {}
                            32 => {
                                return Err(Failure::Mapped(config(format!(
                                    "administrator group {group} (directory.admin_group_dns or [roles]) does not exist in the directory"
                                ))));
                            }
                            _ => return Err(Failure::from_result(&res)),
                        }
                        let members = groups.entry(dn_key(group)).or_default();
                        for e in entries.into_iter().filter(|e| !e.is_ref()) {
                            let e = SearchEntry::construct(e);
                            for (name, values) in e.attrs {
                                if name.eq_ignore_ascii_case("member") {
                                    members.extend(
                                        values.iter().filter(|v| !v.is_empty()).map(|v| dn_key(v)),
                                    );
                                }
                            }
                        }
                    }
                    Ok(groups)
                },
            )
            .await?;
        let members = Arc::new(members);
        *cached = Some((Instant::now(), members.clone()));
        Ok(members)
    }

    /// Check a user's password by binding as the user, with the ppolicy control, on a fresh
    /// connection of its own (never a pooled one). A wrong password is `Ok` with
    /// `ok: false`; an empty password is refused without asking (an empty simple bind
    /// would "succeed" anonymously).
    pub async fn check_user_password(
        &self,
        user_dn: &str,
        password: &Secret,
    ) -> Result<BindCheck, DirectoryError> {
        if user_dn.is_empty() || password.expose().is_empty() {
            return Ok(BindCheck::default());
        }
        let inner = &*self.inner;
        let started = Instant::now();
        let result = async {
            let mut ldap = inner.endpoint.open().await?;
            let check = self.bind_user(&mut ldap, user_dn, password).await;
            // Best effort; dropping the handle closes the connection anyway.
            let _ = ldap.unbind().await;
            check
        }
        .await
        .map_err(|f: Failure| redact(map_failure(OpKind::Bind, &f), password.expose()));
        record("check_user_password", started, result.as_ref().err());
        result
    }

    /// A user changes their own password: a fresh connection bound as the user (with the
    /// ppolicy control), then the dialect's own-change operation on it, so the directory
    /// applies its policy as to any user (history, minimum age, quality) and records the
    /// change as the user's. A refused bind changes nothing and comes back as
    /// [`OwnChange::NotSignedIn`] with what the directory said.
    pub async fn change_own_password(
        &self,
        user_dn: &str,
        old_password: &Secret,
        new_password: &Secret,
    ) -> Result<OwnChange, DirectoryError> {
        self.check_new_password(user_dn, new_password)?;
        if old_password.expose().is_empty() {
            return Ok(OwnChange::NotSignedIn(BindCheck::default()));
        }
        let inner = &*self.inner;
        let started = Instant::now();
        let result = async {
            let mut ldap = inner.endpoint.open().await?;
            let check = self.bind_user(&mut ldap, user_dn, old_password).await;
            let outcome = match check {
                // Bound as the user (a grace login included): the user's own operation.
                Ok(check) if check.bound => inner
                    .dialect
                    .change_own_password(
                        &mut ldap,
                        user_dn,
                        old_password,
                        new_password,
                        inner.operation_timeout,
                    )
                    .await
                    .map(|()| OwnChange::Changed),
                Ok(check) => Ok(OwnChange::NotSignedIn(check)),
                Err(f) => Err(f),
            };
            let _ = ldap.unbind().await;
            outcome
        }
        .await
        .map_err(|f: Failure| {
            let e = redact(
                map_failure(OpKind::PasswordWrite, &f),
                old_password.expose(),
            );
            redact(e, new_password.expose())
        });
        record("change_own_password", started, result.as_ref().err());
        match result {
            // The directory proved the password right but will not bind until it is
            // changed (Active Directory: must change, expired). The change is made on the
            // service account's connection, where the old password still proves the user
            // and the directory still applies the user's policy (history included).
            Ok(OwnChange::NotSignedIn(check)) if check.ok && !check.bound && !check.locked => {
                let t = inner.operation_timeout;
                self.run(
                    "change_own_password",
                    OpKind::PasswordWrite,
                    Retry::IfNotSent,
                    |mut ldap| async move {
                        inner
                            .dialect
                            .change_own_password(&mut ldap, user_dn, old_password, new_password, t)
                            .await
                    },
                )
                .await
                .map(|()| OwnChange::Changed)
                .map_err(|e| redact(redact(e, old_password.expose()), new_password.expose()))
            }
            other => other,
        }
    }

    /// Binds `ldap` as the user with the ppolicy control and says what the directory
    /// answered. A wrong password is `Ok` with `ok: false`.
    async fn bind_user(
        &self,
        ldap: &mut Ldap,
        user_dn: &str,
        password: &Secret,
    ) -> Result<BindCheck, Failure> {
        let inner = &*self.inner;
        let res = ldap
            .with_controls(ppolicy::request())
            .with_timeout(inner.operation_timeout)
            .simple_bind(user_dn, password.expose())
            .await
            .map_err(Failure::from)?;
        let policy = match ppolicy::find(&res.ctrls) {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "ignoring an undecodable password policy control");
                Default::default()
            }
            None => Default::default(),
        };
        let grace = match policy.warning {
            Some(PolicyWarning::GraceAuthNsRemaining(n)) => Some(n),
            _ => None,
        };
        let expired = policy.error == Some(PolicyError::PasswordExpired);
        if let Some(refusal) = inner.dialect.bind_refusal(res.rc, &res.text) {
            use self::dialect::BindRefusal as R;
            // The password was right unless the server says it was wrong; the
            // session code then tells "change it first" from "wrong password".
            return Ok(BindCheck {
                ok: matches!(refusal, R::MustChange | R::Expired),
                must_change: refusal == R::MustChange,
                expired: refusal == R::Expired,
                grace: None,
                locked: matches!(refusal, R::Locked | R::Disabled),
                bound: false,
            });
        }
        match res.rc {
            0 => Ok(BindCheck {
                ok: true,
                must_change: policy.error == Some(PolicyError::ChangeAfterReset),
                expired,
                grace,
                locked: false,
                bound: true,
            }),
            49 => Ok(BindCheck {
                ok: false,
                must_change: false,
                expired,
                grace,
                locked: policy.error == Some(PolicyError::AccountLocked),
                bound: false,
            }),
            _ => Err(Failure::from_result(&res)),
        }
    }

    /// Every user under `users_base` that matches `user_filter` (and has a user name), with
    /// the facts the expiry sweep needs, as a stream, read with the Paged Results control
    /// (`page_size` entries per page; 0 = 500).
    ///
    /// Nothing happens until the stream is first polled; then one task holds ONE pooled
    /// connection until the listing ends or the stream is dropped. Memory stays bounded
    /// whatever the directory's size: the server sends one page at a time and the next page
    /// is asked for only after the consumer has taken the previous one (at most about one
    /// page plus 32 entries are held). Each page must arrive within `operation_timeout`;
    /// time spent by the consumer does not count.
    ///
    /// The stream ends with an `Err` item (after which nothing follows) when the listing
    /// could not be completed: the directory failed, the directory's size limit cut it short
    /// (a `Config` error: an incomplete sweep must not pass for a complete one), or the
    /// runtime shut down. A failure before the first entry is retried once on a fresh
    /// connection, as for every read; after that, never (entries would come twice).
    /// Dropping the stream abandons the search and returns the connection to the pool.
    pub fn stream_password_states(
        &self,
        page_size: u32,
    ) -> impl Stream<Item = Result<PasswordStateEntry, DirectoryError>> + Send + 'static {
        self.stream_password_states_matching(page_size, None)
    }

    /// [`Self::stream_password_states`] of the users that also match `narrow` (an RFC
    /// 4515 filter the caller checked with [`escape::is_valid_filter`], ANDed with the
    /// configured user filter).
    pub fn stream_password_states_matching(
        &self,
        page_size: u32,
        narrow: Option<String>,
    ) -> impl Stream<Item = Result<PasswordStateEntry, DirectoryError>> + Send + 'static {
        let page_size = match page_size {
            0 => PAGE_SIZE,
            n => i32::try_from(n).unwrap_or(i32::MAX),
        };
        let this = self.clone();
        let start = move || {
            let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
            let this = this.clone();
            let narrow = narrow.clone();
            tokio::spawn(async move {
                let last = match this
                    .list_password_states(&tx, page_size, narrow.as_deref())
                    .await
                {
                    Ok(()) => SweepItem::Done,
                    Err(e) => SweepItem::Failed(e),
                };
                // Nobody listening any more is fine.
                let _ = tx.send(last).await;
            });
            rx
        };
        sweep_stream(start)
    }

    /// The body of [`Self::stream_password_states`]: list, and send each entry to `tx`.
    async fn list_password_states(
        &self,
        tx: &tokio::sync::mpsc::Sender<SweepItem>,
        page_size: i32,
        narrow: Option<&str>,
    ) -> Result<(), DirectoryError> {
        let inner = &*self.inner;
        let filter = escape::and(
            [
                inner.user_filter.clone(),
                escape::present(&inner.user_name_attribute),
            ]
            .into_iter()
            .chain(narrow.map(str::to_owned)),
        );
        let filter = filter.as_str();
        let sent = AtomicUsize::new(0);
        let sent = &sent;
        self.run(
            "stream_password_states",
            OpKind::Read,
            Retry::Idempotent,
            |mut ldap| async move {
                // Once entries went out, a failure must not be retried: wrap it so that
                // `run` sees it as already mapped (never retried; the connection is still
                // dropped when the failure was the connection's).
                let once_started = |f: Failure| {
                    if sent.load(Ordering::Relaxed) > 0 {
                        Failure::Mapped(map_failure(OpKind::Read, &f))
                    } else {
                        f
                    }
                };
                let adapters: Vec<Box<dyn Adapter<'_, String, Vec<String>>>> = vec![
                    Box::new(EntriesOnly::new()),
                    Box::new(PagedResults::new(page_size)),
                ];
                let mut stream = ldap
                    .with_timeout(inner.operation_timeout)
                    .streaming_search_with(
                        adapters,
                        &inner.users_base,
                        Scope::Subtree,
                        filter,
                        inner.sweep_attributes.clone(),
                    )
                    .await
                    .map_err(|e| once_started(e.into()))?;
                loop {
                    match stream.next().await {
                        Ok(Some(e)) => {
                            let Some(entry) = self.password_state_entry(SearchEntry::construct(e))
                            else {
                                continue;
                            };
                            if tx.send(SweepItem::Entry(entry)).await.is_err() {
                                // The consumer is gone: stop the server's work on this search.
                                let _ = stream.finish().await;
                                let msgid = stream.ldap_handle().last_id();
                                let _ = ldap.abandon(msgid).await;
                                return Ok(());
                            }
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = stream.finish().await;
                            return Err(once_started(e.into()));
                        }
                    }
                }
                let res = stream.finish().await;
                match res.rc {
                    0 => Ok(()),
                    4 => Err(Failure::Mapped(config(format!(
                        "the directory's size limit cut the user listing short after {} entries; \
                         raise the service account's limits (OpenLDAP: limits \
                         dn.exact=<bind_dn> size=unlimited) so every user can be checked",
                        sent.load(Ordering::Relaxed)
                    )))),
                    32 => Err(Failure::Mapped(self.missing_users_base())),
                    _ => Err(once_started(Failure::from_result(&res))),
                }
            },
        )
        .await
    }

    /// The maximum password age of the password policy entry `policy_dn` in seconds;
    /// `None` when its passwords never expire (OpenLDAP: `pwdMaxAge` 0 or absent).
    ///
    /// A policy that does not exist (or that the service account cannot read) is
    /// [`DirectoryError::NoSuchEntry`] naming the DN; an entry that is not a password
    /// policy, or a DN that is not one, is a `Config` error.
    pub async fn policy_max_age(&self, policy_dn: &str) -> Result<Option<u64>, DirectoryError> {
        check_dn_syntax(policy_dn, "password policy")?;
        let inner = &*self.inner;
        let t = inner.operation_timeout;
        self.run(
            "policy_max_age",
            OpKind::Read,
            Retry::Idempotent,
            |mut ldap| async move {
                inner
                    .dialect
                    .policy_max_age(&mut ldap, policy_dn, t)
                    .await
                    .map_err(|f| f.naming_missing_entry(policy_dn))
            },
        )
        .await
    }

    /// Replace the maximum password age of the password policy entry `policy_dn` (`None`
    /// or `Some(0)`: never expires). Values the directory cannot hold (OpenLDAP: more than
    /// 2^31 - 1 seconds, about 68 years) are refused as `Config` before anything is sent.
    /// Errors as for [`Self::policy_max_age`]; `InsufficientAccess` when the service
    /// account may not write the policy.
    pub async fn set_policy_max_age(
        &self,
        policy_dn: &str,
        max_age_secs: Option<u64>,
    ) -> Result<(), DirectoryError> {
        check_dn_syntax(policy_dn, "password policy")?;
        let inner = &*self.inner;
        let limit = inner.dialect.max_policy_age_limit();
        if let Some(secs) = max_age_secs.filter(|s| *s > limit) {
            return Err(config(format!(
                "a maximum password age of {secs} seconds is more than the directory can \
                 hold (at most {limit})"
            )));
        }
        let t = inner.operation_timeout;
        self.run(
            "set_policy_max_age",
            OpKind::Write,
            Retry::Idempotent,
            |mut ldap| async move {
                inner
                    .dialect
                    .set_policy_max_age(&mut ldap, policy_dn, max_age_secs, t)
                    .await
                    .map_err(|f| f.naming_missing_entry(policy_dn))
            },
        )
        .await?;
        tracing::info!(
            policy.dn = policy_dn,
            max_age_secs,
            "password policy maximum age changed"
        );
        Ok(())
    }

    /// Whether "password never expires" is a flag on the account (Active Directory)
    /// rather than a policy the user is pointed at ([`Self::set_user_policy`]).
    pub fn never_expires_is_a_flag(&self) -> bool {
        self.inner.dialect.never_expires_is_a_flag()
    }

    /// Set or clear the account's "password never expires" flag (where
    /// [`Self::never_expires_is_a_flag`]).
    pub async fn set_never_expires_flag(
        &self,
        user_dn: &str,
        never: bool,
    ) -> Result<(), DirectoryError> {
        let _writing = self.check_user_dn(user_dn, "change the password expiry of")?;
        let inner = &*self.inner;
        let t = inner.operation_timeout;
        self.run(
            "set_never_expires_flag",
            OpKind::Write,
            Retry::Idempotent,
            |mut ldap| async move {
                inner
                    .dialect
                    .set_never_expires_flag(&mut ldap, user_dn, never, t)
                    .await
            },
        )
        .await
    }

    /// Make the password policy `policy_dn` apply to the user instead of the default one
    /// (OpenLDAP: `pwdPolicySubentry`), or go back to the default (`None`; fine when the
    /// user already has it).
    ///
    /// `policy_dn` is read first and must be a password policy ([`DirectoryError::NoSuchEntry`]
    /// or `Config` otherwise, as for [`Self::policy_max_age`]): the directory itself does not
    /// check, and OpenLDAP's ppolicy applies *no* policy at all (no expiry, no lockout, no
    /// quality checks) to a user whose policy entry is missing.
    pub async fn set_user_policy(
        &self,
        user_dn: &str,
        policy_dn: Option<&str>,
    ) -> Result<(), DirectoryError> {
        let _writing = self.check_user_dn(user_dn, "change the password policy of")?;
        if let Some(p) = policy_dn {
            check_dn_syntax(p, "password policy")?;
        }
        let inner = &*self.inner;
        let t = inner.operation_timeout;
        self.run(
            "set_user_policy",
            OpKind::Write,
            Retry::Idempotent,
            |mut ldap| async move {
                if let Some(p) = policy_dn {
                    inner
                        .dialect
                        .policy_max_age(&mut ldap, p, t)
                        .await
                        .map_err(|f| f.naming_missing_entry(p))?;
                }
                inner
                    .dialect
                    .set_user_policy(&mut ldap, user_dn, policy_dn, t)
                    .await
            },
        )
        .await
    }

    /// Replace a user's security info: the alternate email address
    /// (`alternate_mail_attribute`) or the mobile number (`mobile_attribute`). Idempotent.
    pub async fn set_contact(
        &self,
        user_dn: &str,
        contact: Contact,
        value: &str,
    ) -> Result<(), DirectoryError> {
        let _writing = self.check_user_dn(user_dn, "change the security info of")?;
        let inner = &*self.inner;
        let attribute = match contact {
            Contact::AlternateMail => inner.alternate_mail_attribute.as_str(),
            Contact::Mobile => inner.mobile_attribute.as_str(),
        };
        let t = inner.operation_timeout;
        self.run(
            "set_contact",
            OpKind::Write,
            Retry::Idempotent,
            |mut ldap| async move {
                let change = ldap3::Mod::Replace(
                    attribute.as_bytes().to_vec(),
                    std::collections::HashSet::from([value.as_bytes().to_vec()]),
                );
                let result = ldap.with_timeout(t).modify(user_dn, vec![change]).await?;
                if result.rc != 0 {
                    return Err(Failure::from_result(&result));
                }
                Ok(())
            },
        )
        .await
    }

    /// Require a password change at the next sign-in, or stop requiring it (OpenLDAP:
    /// `pwdReset: TRUE`, or deleted). Idempotent.
    pub async fn set_must_change(
        &self,
        user_dn: &str,
        required: bool,
    ) -> Result<(), DirectoryError> {
        let _writing = self.check_user_dn(user_dn, "require a password change of")?;
        let inner = &*self.inner;
        let t = inner.operation_timeout;
        self.run(
            "set_must_change",
            OpKind::Write,
            Retry::Idempotent,
            |mut ldap| async move {
                inner
                    .dialect
                    .set_must_change(&mut ldap, user_dn, required, t)
                    .await
            },
        )
        .await
    }

    /// Block sign-in until an administrator unblocks it (OpenLDAP: `pwdAccountLockedTime:
    /// 000001010000Z`; binds then fail, with "account locked" in the ppolicy control).
    /// Idempotent.
    pub async fn block_sign_in(&self, user_dn: &str) -> Result<(), DirectoryError> {
        self.set_blocked("block_sign_in", user_dn, true).await
    }

    /// Lift an administrator's block; a lockout after failed sign-ins stays (that is
    /// [`Self::clear_lockout`]). Idempotent.
    pub async fn unblock_sign_in(&self, user_dn: &str) -> Result<(), DirectoryError> {
        self.set_blocked("unblock_sign_in", user_dn, false).await
    }

    async fn set_blocked(
        &self,
        op: &'static str,
        user_dn: &str,
        blocked: bool,
    ) -> Result<(), DirectoryError> {
        let _writing = self.check_user_dn(user_dn, if blocked { "block" } else { "unblock" })?;
        let inner = &*self.inner;
        let t = inner.operation_timeout;
        self.run(
            op,
            OpKind::Write,
            Retry::Idempotent,
            |mut ldap| async move {
                inner
                    .dialect
                    .set_blocked(&mut ldap, user_dn, blocked, t)
                    .await
            },
        )
        .await
    }

    /// End a lockout after failed sign-ins (and forget the failures that led to it);
    /// an administrator's block stays. Says what it found.
    pub async fn clear_lockout(&self, user_dn: &str) -> Result<Lockout, DirectoryError> {
        let _writing = self.check_user_dn(user_dn, "unlock")?;
        let inner = &*self.inner;
        let t = inner.operation_timeout;
        self.run(
            "clear_lockout",
            OpKind::Write,
            Retry::Idempotent,
            |mut ldap| async move { inner.dialect.clear_lockout(&mut ldap, user_dn, t).await },
        )
        .await
    }

    /// Defence in depth for writes to users: only entries under `users_base`, never the
    /// service account itself (it may write its own `userPassword` and ppolicy state), and
    /// only well-formed DNs. Anything else is `NoSuchUser`, before any I/O.
    fn check_user_dn(&self, user_dn: &str, action: &str) -> Result<Writing, DirectoryError> {
        if !self.is_user_dn(user_dn) {
            tracing::warn!(
                user.dn = user_dn,
                "refusing to {action} an entry outside users_base"
            );
            return Err(DirectoryError::NoSuchUser);
        }
        Ok(self.written(user_dn, false))
    }

    /// Defence in depth for generic entry writes (add, modify, rename, delete): only
    /// well-formed DNs strictly below `users_base` or `groups_base`, never the service
    /// account. Anything else is [`DirectoryError::NoSuchEntry`] naming the DN, before any
    /// I/O.
    fn check_entry_dn(&self, dn: &str, action: &str) -> Result<Writing, DirectoryError> {
        let inner = &*self.inner;
        let key = dn_key(dn);
        let below = |base: &str| key_is_below(&key, base);
        if !escape::is_valid_dn(dn)
            || key == inner.bind_dn_key
            || !(below(&inner.users_base_key)
                || inner.groups_base_key.as_deref().is_some_and(below))
        {
            tracing::warn!(
                entry.dn = dn,
                "refusing to {action} an entry outside users_base and groups_base"
            );
            return Err(DirectoryError::NoSuchEntry(dn.to_owned()));
        }
        Ok(self.written(dn, action == "add"))
    }

    /// Whether `dn` is strictly below `users_base` and not the service account (a
    /// well-formed DN).
    fn is_user_dn(&self, dn: &str) -> bool {
        self.is_user_key(dn, &dn_key(dn))
    }

    /// [`Self::is_user_dn`] for a DN whose [`dn_key`] is `key`.
    fn is_user_key(&self, dn: &str, key: &str) -> bool {
        escape::is_valid_dn(dn)
            && key != self.inner.bind_dn_key
            && key_is_below(key, &self.inner.users_base_key)
    }

    /// Run `op` on a pooled connection, with the retry rule, metrics and error mapping.
    async fn run<T, F, Fut>(
        &self,
        op: &'static str,
        kind: OpKind,
        retry: Retry,
        attempt: F,
    ) -> Result<T, DirectoryError>
    where
        F: FnMut(Ldap) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.run_with(op, kind, retry, AfterUse::Keep, attempt)
            .await
    }

    /// [`Self::run`], choosing what happens to the connection after the attempt:
    /// [`AfterUse::Close`] unbinds and drops it instead of returning it to the pool (for
    /// operations that leave per-connection state on the server, such as a sorted VLV
    /// search in OpenLDAP's sssvlv overlay).
    async fn run_with<T, F, Fut>(
        &self,
        op: &'static str,
        kind: OpKind,
        retry: Retry,
        after_use: AfterUse,
        mut attempt: F,
    ) -> Result<T, DirectoryError>
    where
        F: FnMut(Ldap) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let started = Instant::now();
        let mut tries = 0;
        let result = loop {
            tries += 1;
            let mut conn = match self.checkout().await {
                Ok(c) => c,
                Err(e) => break Err(e),
            };
            let ldap = conn.ldap.clone();
            let outcome = attempt(ldap).await;
            if after_use == AfterUse::Close {
                // The server frees what it keeps for the connection when it closes.
                conn.broken = true;
                if outcome.is_ok() && !conn.ldap.is_closed() {
                    let t = self.inner.operation_timeout;
                    let _ = conn.ldap.with_timeout(t).unbind().await;
                }
            }
            match outcome {
                Ok(v) => break Ok(v),
                Err(failure) => {
                    let fate = failure.connection_fate();
                    if fate != ConnFate::Healthy {
                        // Dropped by the pool instead of being handed out again.
                        conn.broken = true;
                    }
                    drop(conn);
                    let err = map_failure(kind, &failure);
                    if failure.is_write_clash(kind) {
                        if tries < WRITE_CLASH_TRIES {
                            tracing::debug!(op, error = %err, tries, "a password write clashed with another write to the entry; sending it again");
                            tokio::time::sleep(write_clash_pause(tries)).await;
                            continue;
                        }
                        // Still clashing: a busy entry, not a fault; the caller may retry.
                        break Err(DirectoryError::Busy(format!("{err}; nothing was changed")));
                    }
                    let again = tries == 1
                        && match fate {
                            ConnFate::DeadBeforeSend => true,
                            ConnFate::DeadAfterSend => retry == Retry::Idempotent,
                            ConnFate::Healthy | ConnFate::Suspect => false,
                        };
                    if again {
                        tracing::debug!(op, error = %err, "directory connection was closed; retrying once on a fresh one");
                        continue;
                    }
                    // A write that may have reached the server must not be reported as
                    // "nothing happened".
                    if retry == Retry::IfNotSent
                        && matches!(fate, ConnFate::DeadAfterSend | ConnFate::Suspect)
                        && err.is_unavailable()
                    {
                        break Err(DirectoryError::WriteOutcomeUnknown(err.to_string()));
                    }
                    break Err(err);
                }
            }
        };
        record(op, started, result.as_ref().err());
        result
    }

    /// A pooled connection. Fails as soon as a connection attempt made while waiting
    /// fails (directory down, credentials refused, certificate rejected), or after
    /// `connect_timeout` (bb8's `connection_timeout`) when nothing answers at all.
    async fn checkout(&self) -> Result<bb8::PooledConnection<'_, ServiceManager>, DirectoryError> {
        let inner = &*self.inner;
        let failed = inner.connect_failed.notified();
        tokio::pin!(failed);
        // Register before asking the pool, so a failure of the attempt it starts is seen.
        failed.as_mut().enable();
        let got = tokio::select! {
            biased;
            got = inner.pool.get() => got,
            () = &mut failed => {
                if let Some(e) = self.last_connect_error() {
                    return Err(e);
                }
                inner.pool.get().await
            }
        };
        match got {
            Ok(conn) => Ok(conn),
            Err(bb8::RunError::User(e)) => Err(e),
            Err(bb8::RunError::TimedOut) => {
                // bb8 only says it gave up; the manager noted why connecting failed.
                let window = inner.endpoint.connect_timeout * 2;
                let recent = inner
                    .connect_errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .filter(|(at, _)| at.elapsed() <= window)
                    .map(|(_, e)| e.clone());
                Err(recent.unwrap_or_else(|| {
                    let state = inner.pool.state();
                    if state.connections >= inner.pool_size {
                        DirectoryError::Unavailable(format!(
                            "all {} directory connections stayed busy for {:?}",
                            inner.pool_size, inner.endpoint.connect_timeout
                        ))
                    } else {
                        DirectoryError::Unavailable(format!(
                            "no connection to {} within {:?}",
                            inner.endpoint.display, inner.endpoint.connect_timeout
                        ))
                    }
                }))
            }
        }
    }

    fn missing_users_base(&self) -> DirectoryError {
        config(format!(
            "users_base {} does not exist or the service account cannot read it",
            self.inner.users_base
        ))
    }

    /// Build a `UserEntry`; `None` when the entry has no user name.
    fn user_entry(&self, entry: SearchEntry, wanted: Option<&str>) -> Option<UserEntry> {
        let inner = &*self.inner;
        let dn = entry.dn.clone();
        let attrs = Attrs::of(entry);
        let names = attrs.all(&inner.user_name_attribute);
        let user_name = wanted
            .and_then(|w| names.iter().find(|n| n.eq_ignore_ascii_case(w)))
            .or_else(|| names.first())?
            .clone();
        let state = inner.dialect.password_state(&dn, &attrs);
        let get = |a: &str| attrs.first(a).map(str::to_owned);
        Some(UserEntry {
            user_name,
            display_name: get(&inner.display_name_attribute),
            mail: get(&inner.mail_attribute),
            alternate_mail: get(&inner.alternate_mail_attribute),
            mobile: get(&inner.mobile_attribute),
            must_change: state.must_change,
            password_changed_at: state.changed_at,
            locked: state.locked,
            blocked: state.blocked,
            policy_dn: state.policy_dn,
            never_expires: state.never_expires,
            dn,
        })
    }

    /// Build a `PasswordStateEntry`; `None` when the entry has no user name.
    fn password_state_entry(&self, entry: SearchEntry) -> Option<PasswordStateEntry> {
        let inner = &*self.inner;
        let dn = entry.dn.clone();
        let attrs = Attrs::of(entry);
        let user_name = attrs.first(&inner.user_name_attribute)?.to_owned();
        let state = inner.dialect.password_state(&dn, &attrs);
        let facts = inner.dialect.entry_facts(&dn, &attrs);
        let get = |a: &str| attrs.first(a).map(str::to_owned);
        Some(PasswordStateEntry {
            entry_uuid: facts.uuid,
            user_name,
            display_name: get(&inner.display_name_attribute),
            mail: get(&inner.mail_attribute),
            changed_at: state.changed_at,
            policy_dn: state.policy_dn,
            must_change: state.must_change,
            locked: state.locked,
            blocked: state.blocked,
            created_at: facts.created_at,
            never_expires: state.never_expires,
            dn,
        })
    }

    /// How this directory kind keeps sign-in state, for features that read entries.
    pub fn sign_in_vocabulary(&self) -> SignInVocabulary {
        SignInVocabulary::of(self.inner.dialect.clone())
    }

    /// The service account's DN (`bind_dn`), as an operator names it in limits and ACLs.
    pub fn bind_dn(&self) -> &str {
        &self.inner.bind_dn
    }

    /// Where users live (`users_base`).
    pub fn users_base(&self) -> &str {
        &self.inner.users_base
    }

    /// The filter every user matches (`user_filter`, parenthesised).
    pub fn user_filter(&self) -> &str {
        &self.inner.user_filter
    }

    /// The kind of server this adapter speaks to.
    pub fn kind(&self) -> DirectoryKind {
        self.inner.dialect.kind()
    }

    /// Before a write to `dn` (every write to an entry passes [`Self::check_user_dn`] or
    /// [`Self::check_entry_dn`], which call this): the followed copies must not go on
    /// serving the entry as it was, nor take a report of an earlier change for this
    /// one's. They serve it again once the directory reports it after its answer, which
    /// the returned guard tells them of when dropped: keep it until the write is answered.
    /// `adding`: the entry is new (it may be a group the groups' copy does not hold yet).
    fn written(&self, dn: &str, adding: bool) -> Writing {
        let key = dn_key(dn);
        let users = self.inner.followed.get().and_then(std::sync::Weak::upgrade);
        if let Some(copy) = &users {
            copy.begin_write(&key);
        }
        let groups = self
            .inner
            .groups_base_key
            .as_deref()
            .filter(|base| key_is_below(&key, base))
            .and_then(|_| self.inner.followed_groups.get())
            .and_then(std::sync::Weak::upgrade);
        if let Some(copy) = &groups {
            copy.begin_write(&key, adding);
        }
        Writing { key, users, groups }
    }

    /// A service-account connection outside the pool, for a long-running operation (the
    /// pool's connections must stay free for requests).
    pub(crate) async fn dedicated_connection(&self) -> Result<conn::ServiceConn, DirectoryError> {
        self.inner.pool.dedicated_connection().await
    }

    /// Why connecting failed most recently, if it did (for diagnostics).
    pub fn last_connect_error(&self) -> Option<DirectoryError> {
        self.inner
            .connect_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, e)| e.clone())
    }
}

/// `Config` unless `dn` is a well-formed DN; `what` names it in the message.
fn check_dn_syntax(dn: &str, what: &str) -> Result<(), DirectoryError> {
    if escape::is_valid_dn(dn) {
        Ok(())
    } else {
        Err(config(format!(
            "{what} {dn:?} is not a valid DN (expected e.g. cn=default,ou=policies,dc=example,dc=org)"
        )))
    }
}

/// What the listing task of [`Directory::stream_password_states`] sends.
enum SweepItem {
    Entry(PasswordStateEntry),
    /// The listing failed; nothing follows.
    Failed(DirectoryError),
    /// The listing is complete.
    Done,
}

/// The consumer's side of [`Directory::stream_password_states`]: `start` is called on the
/// first poll. A channel that closes without `Done` or `Failed` (the task was cancelled by
/// a runtime shutdown, or panicked) ends the stream with an error, so an interrupted
/// listing never looks complete.
fn sweep_stream<F>(
    start: F,
) -> impl Stream<Item = Result<PasswordStateEntry, DirectoryError>> + Send + 'static
where
    F: FnOnce() -> tokio::sync::mpsc::Receiver<SweepItem> + Send + 'static,
{
    enum State<F> {
        NotStarted(F),
        Running(tokio::sync::mpsc::Receiver<SweepItem>),
        Finished,
    }
    futures::stream::unfold(State::NotStarted(start), |state| async move {
        let mut rx = match state {
            State::NotStarted(start) => start(),
            State::Running(rx) => rx,
            State::Finished => return None,
        };
        match rx.recv().await {
            Some(SweepItem::Entry(e)) => Some((Ok(e), State::Running(rx))),
            Some(SweepItem::Failed(e)) => Some((Err(e), State::Finished)),
            Some(SweepItem::Done) => None,
            None => Some((
                Err(DirectoryError::Unavailable(
                    "the user listing was interrupted (lockbridge is shutting down)".into(),
                )),
                State::Finished,
            )),
        }
    })
}

/// The directory kind the root DSE names: 389-ds (and Red Hat Directory Server) by its
/// `vendorName`, OpenLDAP by its root DSE's object class.
fn vendor_kind(dse: &Result<SearchResult, ldap3::LdapError>) -> Option<DirectoryKind> {
    let Ok(SearchResult(entries, res)) = dse else {
        return None;
    };
    if res.rc != 0 {
        return None;
    }
    let entry = entries.iter().find(|e| !e.is_ref())?;
    let attrs = Attrs::new(SearchEntry::construct(entry.clone()).attrs);
    let vendor = attrs
        .first("vendorName")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let version = attrs
        .first("vendorVersion")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if vendor.contains("389 project")
        || version.contains("389-directory")
        || version.contains("red hat-directory")
    {
        return Some(DirectoryKind::Ds389);
    }
    // Windows names no vendor; its root DSE (and Samba's) has these.
    if vendor.starts_with("samba")
        || attrs.first("forestFunctionality").is_some()
        || attrs.first("isGlobalCatalogReady").is_some()
    {
        return Some(DirectoryKind::ActiveDirectory);
    }
    attrs
        .all("objectClass")
        .iter()
        .any(|c| c.eq_ignore_ascii_case("OpenLDAProotDSE"))
        .then_some(DirectoryKind::OpenLdap)
}

/// Vendor and ppolicy support from root DSE attributes.
fn root_dse_facts(attrs: &Attrs) -> (Option<String>, Option<bool>) {
    let vendor = match (attrs.first("vendorName"), attrs.first("vendorVersion")) {
        (Some(n), Some(v)) => Some(format!("{n} {v}")),
        (Some(n), None) => Some(n.to_owned()),
        _ if attrs
            .all("objectClass")
            .iter()
            .any(|c| c.eq_ignore_ascii_case("OpenLDAProotDSE")) =>
        {
            Some("OpenLDAP".to_owned())
        }
        _ => None,
    };
    let ppolicy = Some(
        attrs
            .all("supportedControl")
            .iter()
            .any(|c| c == ppolicy::PPOLICY_OID),
    );
    (vendor, ppolicy)
}

/// Metrics for one operation.
fn record(op: &'static str, started: Instant, error: Option<&DirectoryError>) {
    metrics::histogram!("lockbridge_ldap_operation_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    if let Some(e) = error {
        metrics::counter!("lockbridge_ldap_errors_total", "kind" => e.kind()).increment(1);
    }
}

/// Belt and braces: no server text we pass on may contain the password.
fn redact(e: DirectoryError, password: &str) -> DirectoryError {
    if password.is_empty() {
        return e;
    }
    let clean = |t: String| {
        if t.contains(password) {
            t.replace(password, "[redacted]")
        } else {
            t
        }
    };
    match e {
        DirectoryError::PasswordRejected(PolicyRejection::Other(t)) => {
            DirectoryError::PasswordRejected(PolicyRejection::Other(clean(t)))
        }
        DirectoryError::Protocol(t) => DirectoryError::Protocol(clean(t)),
        DirectoryError::Unavailable(t) => DirectoryError::Unavailable(clean(t)),
        DirectoryError::Config(t) => DirectoryError::Config(clean(t)),
        DirectoryError::Ambiguous(t) => DirectoryError::Ambiguous(clean(t)),
        DirectoryError::Rejected { rc, message } => DirectoryError::Rejected {
            rc,
            message: clean(message),
        },
        DirectoryError::Unsupported(t) => DirectoryError::Unsupported(clean(t)),
        DirectoryError::WriteOutcomeUnknown(t) => DirectoryError::WriteOutcomeUnknown(clean(t)),
        other => other,
    }
}

/// A write under way, for the followed copies ([`Directory::written`]): dropped once the
/// directory has answered it, successfully or not.
pub(crate) struct Writing {
    key: String,
    users: Option<std::sync::Arc<synced::Shared>>,
    groups: Option<std::sync::Arc<synced_groups::GroupsShared>>,
}

impl Drop for Writing {
    fn drop(&mut self) {
        if let Some(copy) = &self.users {
            copy.end_write(&self.key);
        }
        if let Some(copy) = &self.groups {
            copy.end_write(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DirectorySettings {
        DirectorySettings {
            server_hashes_cleartext: false,
            kind: DirectoryKind::OpenLdap,
            url: "ldap://127.0.0.1:1".into(),
            starttls: false,
            ca_file: None,
            tls_insecure_skip_verify: false,
            allow_plaintext: true,
            bind_dn: "cn=svc,dc=example,dc=org".into(),
            bind_password: Secret::new("pw"),
            users_base: "ou=people,dc=example,dc=org".into(),
            groups_base: "ou=groups,dc=example,dc=org".into(),
            user_filter: "(objectClass=inetOrgPerson)".into(),
            user_name_attribute: "uid".into(),
            mail_attribute: "mail".into(),
            display_name_attribute: "cn".into(),
            alternate_mail_attribute: "otherMailbox".into(),
            mobile_attribute: "mobile".into(),
            admin_group_dns: vec![],
            pool_size: 2,
            connect_timeout: Duration::from_millis(500),
            operation_timeout: Duration::from_secs(1),
        }
    }

    fn config_error(s: DirectorySettings) -> String {
        match Directory::new(s) {
            Err(DirectoryError::Config(t)) => t,
            Err(other) => panic!("expected Config, got {other:?}"),
            Ok(_) => panic!("expected Config, got Ok"),
        }
    }

    #[tokio::test]
    async fn settings_are_validated() {
        assert!(Directory::new(settings()).is_ok());
        let t = config_error(DirectorySettings {
            allow_plaintext: false,
            ..settings()
        });
        assert!(t.contains("unencrypted"), "{t}");
        let t = config_error(DirectorySettings {
            url: "http://x".into(),
            ..settings()
        });
        assert!(t.contains("scheme"), "{t}");
        let t = config_error(DirectorySettings {
            url: "ldaps://x".into(),
            starttls: true,
            ..settings()
        });
        assert!(t.contains("starttls"), "{t}");
        let t = config_error(DirectorySettings {
            user_filter: "(objectClass=person".into(),
            ..settings()
        });
        assert!(t.contains("user_filter"), "{t}");
        let t = config_error(DirectorySettings {
            mail_attribute: "mail)(x".into(),
            ..settings()
        });
        assert!(t.contains("mail_attribute"), "{t}");
        let t = config_error(DirectorySettings {
            bind_password: Secret::new(""),
            ..settings()
        });
        assert!(t.contains("anonymous"), "{t}");
        let t = config_error(DirectorySettings {
            pool_size: 0,
            ..settings()
        });
        assert!(t.contains("pool_size"), "{t}");
        let t = config_error(DirectorySettings {
            url: "ldaps://x".into(),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..settings()
        });
        assert!(t.contains("ca_file"), "{t}");
        let t = config_error(DirectorySettings {
            admin_group_dns: vec!["admins".into()],
            ..settings()
        });
        assert!(t.contains("admin_group_dns"), "{t}");
        for bad in ["groups", "ou=groups,,dc=x"] {
            let t = config_error(DirectorySettings {
                groups_base: bad.into(),
                ..settings()
            });
            assert!(t.contains("groups_base"), "{t}");
        }
        assert!(
            Directory::new(DirectorySettings {
                groups_base: String::new(),
                ..settings()
            })
            .is_ok()
        );
        // ldapi needs neither TLS nor allow_plaintext; a bare filter gets its parentheses.
        let d = Directory::new(DirectorySettings {
            url: "ldapi://%2Ftmp%2Fnothing".into(),
            allow_plaintext: false,
            user_filter: "objectClass=inetOrgPerson".into(),
            ..settings()
        })
        .unwrap();
        assert_eq!(d.inner.user_filter, "(objectClass=inetOrgPerson)");
    }

    #[test]
    fn new_outside_a_runtime_is_a_clear_error() {
        let t = config_error(settings());
        assert!(t.contains("Tokio"), "{t}");
    }

    #[tokio::test]
    async fn unreachable_directory_is_unavailable_within_connect_timeout() {
        // Port 1 on loopback: connection refused.
        let d = Directory::new(settings()).unwrap();
        let started = Instant::now();
        let e = d.find_user("alice").await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(e.is_unavailable(), "{e:?}");
        assert!(e.to_string().contains("connection refused"), "{e}");
        let e = d
            .check_user_password("uid=a,dc=x", &Secret::new("x"))
            .await
            .unwrap_err();
        assert!(e.is_unavailable(), "{e:?}");
        // Empty password: refused without a round trip (it would be an anonymous bind).
        let c = d
            .check_user_password("uid=a,dc=x", &Secret::new(""))
            .await
            .unwrap();
        assert!(!c.ok);
    }

    /// Handlers hold a `Directory` in shared state and await its futures on any thread.
    #[allow(dead_code)]
    fn directory_and_its_futures_are_send(d: &Directory, s: &Secret) {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        send_sync(d);
        send(d.ping());
        send(d.find_user(""));
        send(d.search_users("", 1));
        send(d.set_password("", s, false));
        send(d.is_admin(""));
        send(d.check_user_password("", s));
        send(d.stream_password_states(1));
        send(d.policy_max_age(""));
        send(d.set_policy_max_age("", None));
        send(d.set_user_policy("", None));
        send(d.set_must_change("", true));
        send(d.block_sign_in(""));
        send(d.unblock_sign_in(""));
        send(d.clear_lockout(""));
        send(d.search_entries("", SearchScope::Subtree, "", &[], 1));
        send(d.read_entry("", &[]));
        send(d.search_window(&WindowQuery {
            base: String::new(),
            filter: String::new(),
            attrs: Vec::new().into(),
            sort: None,
            offset: 1,
            count: 1,
            scan_limit: None,
        }));
        send(d.add_entry("", &[]));
        send(d.modify_entry("", &[], None));
        send(d.rename_entry("", "", None));
        send(d.delete_entry("", None));
        send(d.password_matches("", s));
        send(d.supports_sorting());
    }

    #[tokio::test]
    async fn entry_writes_refuse_dns_outside_the_bases_before_any_io() {
        // The directory is unreachable: a refusal is NoSuchEntry, anything that got
        // through would be Unavailable.
        let d = Directory::new(settings()).unwrap();
        let change = [Change::Replace("description".into(), vec!["x".into()])];
        for dn in [
            "",
            "cn=svc,dc=example,dc=org",
            "CN=Svc, DC=Example,dc=org",
            "ou=people,dc=example,dc=org",
            "ou=groups,dc=example,dc=org",
            "uid=x,ou=other,dc=example,dc=org",
            "uid=x,ou=people,dc=example,dc=org,dc=evil",
            "uid=x<y,ou=people,dc=example,dc=org",
            "uid=x;ou=people,dc=example,dc=org",
            "uid=x,ou=people2,dc=example,dc=org",
            "uid=x,xou=people,dc=example,dc=org",
            // One RDN holding an escaped comma, next to ou=people, not below it.
            r"uid=x\,ou=people,dc=example,dc=org",
            r"uid=x\2cou=groups,dc=example,dc=org",
        ] {
            for result in [
                d.add_entry(dn, &[("cn".into(), vec!["x".into()])]).await,
                d.modify_entry(dn, &change, None).await,
                d.rename_entry(dn, "uid=y", None).await.map(|_| ()),
                d.delete_entry(dn, None).await,
                d.password_matches(dn, &Secret::new("x")).await.map(|_| ()),
            ] {
                assert!(
                    matches!(&result, Err(DirectoryError::NoSuchEntry(d)) if d == dn),
                    "{dn}: {result:?}"
                );
            }
        }
        // Below either base (any case and spacing): sent, so Unavailable here.
        for dn in [
            "uid=x,ou=people,dc=example,dc=org",
            "UID=x, OU=People,DC=example,dc=org",
            "cn=g,ou=groups,dc=example,dc=org",
            "uid=x,ou=sub,ou=people,dc=example,dc=org",
        ] {
            let e = d.delete_entry(dn, None).await.unwrap_err();
            assert!(e.is_unavailable(), "{dn}: {e:?}");
        }
        // Groups are writable only when groups_base is set; passwords are checked for
        // users only.
        let no_groups = Directory::new(DirectorySettings {
            groups_base: String::new(),
            ..settings()
        })
        .unwrap();
        let group = "cn=g,ou=groups,dc=example,dc=org";
        assert!(matches!(
            no_groups.delete_entry(group, None).await,
            Err(DirectoryError::NoSuchEntry(_))
        ));
        assert!(matches!(
            d.password_matches(group, &Secret::new("x")).await,
            Err(DirectoryError::NoSuchEntry(_))
        ));
        // Nothing to change: Ok without I/O; a bad assertion: refused without I/O.
        let user = "uid=x,ou=people,dc=example,dc=org";
        d.modify_entry(user, &[], None).await.unwrap();
        assert!(matches!(
            d.modify_entry(user, &change, Some("(broken")).await,
            Err(DirectoryError::Protocol(_))
        ));
        // A new RDN that is not one RDN.
        assert!(matches!(
            d.rename_entry(user, "uid=y,ou=groups", None).await,
            Err(DirectoryError::Rejected { rc: 34, .. })
        ));
    }

    #[tokio::test]
    async fn user_writes_refuse_dns_outside_users_base() {
        let d = Directory::new(settings()).unwrap();
        let never = "cn=never-expires,ou=policies,dc=example,dc=org";
        for dn in [
            "",
            "cn=svc,dc=example,dc=org",
            "uid=x,ou=other,dc=example,dc=org",
            "ou=people,dc=example,dc=org",
            "uid=x,ou=people,dc=example,dc=org,dc=evil",
            "uid=x<y,ou=people,dc=example,dc=org",
            "uid=x;ou=people,dc=example,dc=org",
        ] {
            // The directory is unreachable: each of these is refused before any I/O.
            for result in [
                d.set_user_policy(dn, Some(never)).await,
                d.set_user_policy(dn, None).await,
                d.set_must_change(dn, true).await,
                d.block_sign_in(dn).await,
                d.unblock_sign_in(dn).await,
                d.clear_lockout(dn).await.map(|_| ()),
            ] {
                assert!(
                    matches!(result, Err(DirectoryError::NoSuchUser)),
                    "{dn}: {result:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn malformed_policy_dns_and_ages_are_refused_before_any_io() {
        let d = Directory::new(settings()).unwrap();
        let user = "uid=bob,ou=people,dc=example,dc=org";
        for bad in ["", "never-expires", "cn=a,,dc=x", "cn=a\\zz,dc=x"] {
            let e = d.policy_max_age(bad).await.unwrap_err();
            assert!(
                matches!(&e, DirectoryError::Config(t) if t.contains("not a valid DN")),
                "{bad:?}: {e:?}"
            );
            let e = d.set_policy_max_age(bad, Some(60)).await.unwrap_err();
            assert!(matches!(e, DirectoryError::Config(_)), "{bad:?}: {e:?}");
            let e = d.set_user_policy(user, Some(bad)).await.unwrap_err();
            assert!(matches!(e, DirectoryError::Config(_)), "{bad:?}: {e:?}");
        }
        let policy = "cn=default,ou=policies,dc=example,dc=org";
        let e = d
            .set_policy_max_age(policy, Some(1 << 31))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, DirectoryError::Config(t) if t.contains("2147483647")),
            "{e:?}"
        );
        // Well-formed: these do try the (unreachable) directory.
        assert!(d.policy_max_age(policy).await.unwrap_err().is_unavailable());
        assert!(
            d.set_policy_max_age(policy, Some(i32::MAX as u64))
                .await
                .unwrap_err()
                .is_unavailable()
        );
    }

    #[tokio::test]
    async fn stream_of_an_unreachable_directory_is_one_error() {
        use futures::StreamExt;
        let d = Directory::new(settings()).unwrap();
        let items: Vec<_> = d.stream_password_states(10).collect().await;
        assert_eq!(items.len(), 1, "{items:?}");
        assert!(items[0].as_ref().unwrap_err().is_unavailable(), "{items:?}");
    }

    fn state_entry(name: &str) -> PasswordStateEntry {
        PasswordStateEntry {
            dn: format!("uid={name},ou=people,dc=example,dc=org"),
            entry_uuid: None,
            user_name: name.into(),
            display_name: None,
            mail: None,
            changed_at: None,
            policy_dn: None,
            must_change: false,
            locked: false,
            blocked: false,
            created_at: None,
            never_expires: false,
        }
    }

    #[tokio::test]
    async fn sweep_stream_ends_cleanly_only_on_done() {
        use futures::StreamExt;
        // Done: the entries, then the end.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(SweepItem::Entry(state_entry("a"))).await.unwrap();
        tx.send(SweepItem::Done).await.unwrap();
        drop(tx);
        let items: Vec<_> = sweep_stream(move || rx).collect().await;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].as_ref().unwrap().user_name, "a");

        // Failed: the entries, the error, nothing after it.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(SweepItem::Entry(state_entry("a"))).await.unwrap();
        tx.send(SweepItem::Failed(DirectoryError::Timeout))
            .await
            .unwrap();
        tx.send(SweepItem::Entry(state_entry("b"))).await.unwrap();
        drop(tx);
        let items: Vec<_> = sweep_stream(move || rx).collect().await;
        assert_eq!(items.len(), 2, "{items:?}");
        assert!(matches!(items[1], Err(DirectoryError::Timeout)));

        // The task vanished without saying "done": an error, not a silent short listing.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(SweepItem::Entry(state_entry("a"))).await.unwrap();
        drop(tx);
        let items: Vec<_> = sweep_stream(move || rx).collect().await;
        assert_eq!(items.len(), 2, "{items:?}");
        assert!(
            matches!(&items[1], Err(DirectoryError::Unavailable(t)) if t.contains("interrupted")),
            "{items:?}"
        );
    }

    #[test]
    fn sweep_stream_starts_on_first_poll() {
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = started.clone();
        let stream = sweep_stream(move || {
            flag.store(true, Ordering::SeqCst);
            let (_tx, rx) = tokio::sync::mpsc::channel(1);
            rx
        });
        assert!(!started.load(Ordering::SeqCst));
        drop(stream);
        assert!(!started.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn set_password_refuses_dns_outside_users_base() {
        let d = Directory::new(settings()).unwrap();
        let pw = Secret::new("Long-enough-1");
        for dn in [
            "cn=svc,dc=example,dc=org",
            "uid=x,ou=other,dc=example,dc=org",
            "ou=people,dc=example,dc=org",
            "uid=x,ou=people,dc=example,dc=org,dc=evil",
            // One RDN holding an escaped comma, next to ou=people, not below it.
            r"uid=x\,ou=people,dc=example,dc=org",
            r"uid=x\2Cou=people,dc=example,dc=org",
        ] {
            assert!(
                matches!(
                    d.set_password(dn, &pw, false).await,
                    Err(DirectoryError::NoSuchUser)
                ),
                "{dn}"
            );
        }
    }

    #[test]
    fn redaction() {
        let e = redact(
            DirectoryError::PasswordRejected(PolicyRejection::Other(
                "value hunter22 rejected".into(),
            )),
            "hunter22",
        );
        assert_eq!(
            e.to_string(),
            "the directory rejected the password: value [redacted] rejected"
        );
    }

    #[test]
    fn root_dse() {
        use std::collections::HashMap;
        let mut m = HashMap::new();
        m.insert(
            "objectClass".to_string(),
            vec!["top".into(), "OpenLDAProotDSE".into()],
        );
        m.insert(
            "supportedControl".to_string(),
            vec![ppolicy::PPOLICY_OID.into(), "1.2.840.113556.1.4.319".into()],
        );
        assert_eq!(
            root_dse_facts(&Attrs::new(m)),
            (Some("OpenLDAP".into()), Some(true))
        );
    }
}

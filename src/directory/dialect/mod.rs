//! What differs between directory kinds: how a password is set, where "must change at
//! next sign-in" lives, how a user's password state is read, and where password policies
//! (maximum age, the policy that applies to a user) and administrative locks live.
//!
//! The facade (`Directory`) owns connections, retries, timeouts and error mapping; a
//! dialect only issues the kind-specific operations on the connection it is given and
//! reports failures as raw [`Failure`]s for the one mapping function.

pub(super) mod active_directory;
mod ds389;
mod openldap;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ldap3::Ldap;

pub(crate) use self::active_directory::ActiveDirectory;
pub(crate) use self::ds389::Ds389;
pub(crate) use self::openldap::OpenLdap;
use super::error::Failure;
use crate::types::Secret;

/// The directory products lockbridge knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectoryKind {
    /// OpenLDAP with the ppolicy overlay.
    OpenLdap,
    /// 389 Directory Server (and Red Hat Directory Server, its product build).
    Ds389,
    /// Active Directory (Windows Server, Samba's AD domain controller).
    ActiveDirectory,
}

/// A user's password and sign-in state as the directory keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PasswordState {
    pub must_change: bool,
    pub changed_at: Option<DateTime<Utc>>,
    pub locked: bool,
    /// Blocked by an administrator (implies `locked`).
    pub blocked: bool,
    /// The password policy that applies to this user instead of the directory's default
    /// (OpenLDAP: `pwdPolicySubentry`).
    pub policy_dn: Option<String>,
    /// The account itself says the password never expires (Active Directory's
    /// DONT_EXPIRE_PASSWORD); on the ppolicy kinds this is a policy (`policy_dn`).
    pub never_expires: bool,
}

/// Why a user's simple bind with the right password still failed, or that the
/// password was wrong ([`Dialect::bind_refusal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindRefusal {
    WrongPassword,
    MustChange,
    Expired,
    Locked,
    Disabled,
}

/// What [`Dialect::clear_lockout`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lockout {
    /// Not locked out: nothing to do.
    None,
    /// Locked out after failed sign-ins: cleared.
    Cleared,
    /// Blocked by an administrator: left alone (unblocking is a separate action).
    Blocked,
}

/// Identity and age of an entry, for reports (not password facts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct EntryFacts {
    /// A stable identifier that survives renames (OpenLDAP: `entryUUID`).
    pub uuid: Option<String>,
    /// When the entry was created (OpenLDAP: `createTimestamp`).
    pub created_at: Option<DateTime<Utc>>,
}

/// A sign-in state a search can select users by ([`Dialect::state_filter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateTest {
    /// Sign-in blocked by an administrator (`true`), or not (`false`; a lockout after
    /// failed sign-ins is not a block).
    Blocked(bool),
    /// Must change the password at the next sign-in, or not.
    MustChange(bool),
}

/// Attribute values looked up by name, whatever holds them (a raw search entry's
/// [`Attrs`], or an [`crate::directory::Entry`] a feature read).
pub(crate) trait AttrLookup {
    /// The first value of `name` (any case).
    fn first_value(&self, name: &str) -> Option<&str>;
}

impl AttrLookup for crate::directory::Entry {
    fn first_value(&self, name: &str) -> Option<&str> {
        self.first(name)
    }
}

impl AttrLookup for Attrs {
    fn first_value(&self, name: &str) -> Option<&str> {
        self.first(name)
    }
}

/// A search entry's text attributes, plus Active Directory's binary `objectGUID` in its
/// usual text form (8-4-4-4-12 hex digits, the first three groups little-endian), so
/// that it serves as an entry's stable id as `entryUUID` does. Other binary values are
/// left out.
pub(crate) fn text_attributes(
    mut attrs: HashMap<String, Vec<String>>,
    binary: HashMap<String, Vec<Vec<u8>>>,
) -> HashMap<String, Vec<String>> {
    for (name, values) in binary {
        if name.eq_ignore_ascii_case("objectGUID") {
            let guids = values
                .iter()
                .filter_map(|v| <[u8; 16]>::try_from(v.as_slice()).ok())
                .map(|b| uuid::Uuid::from_bytes_le(b).hyphenated().to_string())
                .collect();
            attrs.insert(name, guids);
        }
    }
    attrs
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

    /// A search entry's attributes, with the binary ones lockbridge reads in text form
    /// ([`text_attributes`]).
    pub fn of(entry: ldap3::SearchEntry) -> Self {
        Attrs::new(text_attributes(entry.attrs, entry.bin_attrs))
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
    fn password_state(&self, dn: &str, attrs: &dyn AttrLookup) -> PasswordState;

    /// An LDAP filter (parenthesised) selecting the users in that state.
    fn state_filter(&self, test: StateTest) -> String;

    /// The attribute holding when the password was last changed.
    fn changed_at_attribute(&self) -> &'static str;

    /// Whether [`Self::changed_at_attribute`] is in GeneralizedTime syntax (so filters
    /// and sorting can use it); Active Directory's `pwdLastSet` is a FILETIME.
    fn changed_at_is_generalized_time(&self) -> bool {
        true
    }

    /// The attribute new users are named by when it is not the sign-in name's (Active
    /// Directory names users by `cn`); `None`: by `user_name_attribute`.
    fn user_naming_attribute(&self) -> Option<&'static str> {
        None
    }

    /// Refuses a sign-in name the server would refuse or silently change when it is
    /// stored in `attribute`, saying why and what to do instead.
    fn check_user_name(&self, _attribute: &str, _value: &str) -> Result<(), String> {
        Ok(())
    }

    /// Whether a group may have no members (`groupOfNames` may not: an empty DN stands
    /// in for the last member removed).
    fn groups_may_be_empty(&self) -> bool {
        false
    }

    /// The sign-in state of a user entry just added without one (Active Directory
    /// creates users disabled).
    fn new_entry_state(&self) -> PasswordState {
        PasswordState::default()
    }

    /// The attribute holding an entry's own DN, for searching entries by DN in one
    /// filter (`entryDN`; Active Directory: `distinguishedName`).
    fn dn_attribute(&self) -> &'static str {
        "entryDN"
    }

    /// The operational attribute that identifies an entry for good (SCIM's `id`):
    /// `entryUUID`, or Active Directory's binary `objectGUID` (read as text, see
    /// [`text_attributes`]; searched for as its bytes).
    fn id_attribute(&self) -> &'static str {
        "entryUUID"
    }

    /// The operational attribute whose value changes with every write to an entry and
    /// that an assertion (RFC 4528) can test: SCIM's `meta.version` and `If-Match`.
    fn version_attribute(&self) -> &'static str;

    /// Whether the server honours the Assertion control (RFC 4528) on writes; without
    /// it, the facade tests the assertion with a search right before the write.
    fn supports_assertions(&self) -> bool {
        true
    }

    /// Operational attributes that identify an entry and say when it was created.
    fn entry_attributes(&self) -> &'static [&'static str];

    /// Read them from an entry fetched with [`Self::entry_attributes`].
    fn entry_facts(&self, dn: &str, attrs: &Attrs) -> EntryFacts;

    /// The largest maximum password age (seconds) the directory can store and honour.
    fn max_policy_age_limit(&self) -> u64;

    /// The maximum password age of the policy entry `policy_dn` in seconds; `None` when it
    /// never expires. A missing entry is "no such object" (rc 32, as the server says it,
    /// or [`Failure::no_such_object`] when the search came back empty).
    async fn policy_max_age(
        &self,
        ldap: &mut Ldap,
        policy_dn: &str,
        timeout: Duration,
    ) -> Result<Option<u64>, Failure>;

    /// Replace the maximum password age of the policy entry (`None`: never expires).
    /// Callers keep the value within [`Self::max_policy_age_limit`].
    async fn set_policy_max_age(
        &self,
        ldap: &mut Ldap,
        policy_dn: &str,
        max_age_secs: Option<u64>,
        timeout: Duration,
    ) -> Result<(), Failure>;

    /// What a refused simple bind as a user means, when the server says it in the
    /// result's text rather than in the Password Policy control (Active Directory's
    /// `data 773`); `None`: read the control as usual.
    fn bind_refusal(&self, _rc: u32, _text: &str) -> Option<BindRefusal> {
        None
    }

    /// Whether "password never expires" is a flag on the account (Active Directory)
    /// rather than a policy the user is pointed at ([`Self::set_user_policy`]).
    fn never_expires_is_a_flag(&self) -> bool {
        false
    }

    /// Set or clear the account's "password never expires" flag, where
    /// [`Self::never_expires_is_a_flag`]. Idempotent.
    async fn set_never_expires_flag(
        &self,
        _ldap: &mut Ldap,
        _dn: &str,
        _never: bool,
        _timeout: Duration,
    ) -> Result<(), Failure> {
        Err(Failure::Mapped(super::error::DirectoryError::Unsupported(
            "this directory kind keeps \"never expires\" in a password policy".into(),
        )))
    }

    /// Point the user at a password policy, or back at the default one (`None`).
    /// Idempotent.
    async fn set_user_policy(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        policy_dn: Option<&str>,
        timeout: Duration,
    ) -> Result<(), Failure>;

    /// Block sign-in until an administrator unblocks it, or lift that block (and only
    /// that: a lockout after failed sign-ins stays). Idempotent.
    async fn set_blocked(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        blocked: bool,
        timeout: Duration,
    ) -> Result<(), Failure>;

    /// End a lockout after failed sign-ins and forget the failures; an administrator's
    /// block stays (reported as [`Lockout::Blocked`], nothing changed).
    async fn clear_lockout(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        timeout: Duration,
    ) -> Result<Lockout, Failure>;

    /// Set `dn`'s password as the (already bound) service account. Must never include the
    /// password in what it returns.
    async fn set_password(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        password: &Secret,
        timeout: Duration,
    ) -> Result<(), Failure>;

    /// Set a password its owner already knows (an identity provider's push): no change
    /// is required of them afterwards. OpenLDAP's ppolicy deletes `pwdReset` itself when
    /// a writer without `manage` changes a password, so by default this is
    /// [`Self::set_password`].
    async fn set_known_password(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        password: &Secret,
        timeout: Duration,
    ) -> Result<(), Failure> {
        self.set_password(ldap, dn, password, timeout).await
    }

    /// The user's own change, on `ldap` already bound as the user: RFC 3062 Password
    /// Modify with the old password, as the user, with the ppolicy control (the server
    /// clears its own "must change" state when the owner changes the password).
    async fn change_own_password(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        old_password: &Secret,
        new_password: &Secret,
        timeout: Duration,
    ) -> Result<(), Failure> {
        password_modify(ldap, dn, Some(old_password), new_password, timeout).await
    }

    /// Set the password (in clear text, for a server that hashes it) and "must change at
    /// next sign-in" in ONE write, with the password policy applied.
    async fn set_password_and_must_change(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        password: &Secret,
        timeout: Duration,
    ) -> Result<(), Failure>;

    /// Whether the stored password value is hashed (`{SCHEME}...`); `None` when the
    /// service account cannot read it.
    async fn stored_password_is_hashed(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        timeout: Duration,
    ) -> Result<Option<bool>, Failure>;

    /// Set or clear "must change at next sign-in". Idempotent.
    async fn set_must_change(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        must_change: bool,
        timeout: Duration,
    ) -> Result<(), Failure>;
}

/// RFC 3062 Password Modify of `dn` as the (bound) service account, with the ppolicy
/// request control, so that quality, length and history rejections come back as ppolicy
/// errors. `newPasswd` is always sent, so the response value is never parsed (ldap3's
/// parser panics when the server generated nothing).
pub(super) async fn password_modify(
    ldap: &mut Ldap,
    dn: &str,
    old_password: Option<&Secret>,
    password: &Secret,
    timeout: Duration,
) -> Result<(), Failure> {
    let ldap3::result::ExopResult(_value, result) = ldap
        .with_controls(super::ppolicy::request())
        .with_timeout(timeout)
        .extended(ldap3::exop::PasswordModify {
            user_id: Some(dn),
            old_pass: old_password.map(Secret::expose),
            new_pass: Some(password.expose()),
        })
        .await?;
    if result.rc != 0 {
        return Err(Failure::from_result(&result));
    }
    Ok(())
}

/// The attributes `names` of the entry `dn` (a base search); a missing entry is
/// [`Failure::no_such_object`].
pub(super) async fn read_base(
    ldap: &mut Ldap,
    dn: &str,
    names: &[&str],
    timeout: Duration,
) -> Result<Attrs, Failure> {
    let ldap3::SearchResult(entries, result) = ldap
        .with_timeout(timeout)
        .search(dn, ldap3::Scope::Base, "(objectClass=*)", names.to_vec())
        .await?;
    if result.rc != 0 {
        return Err(Failure::from_result(&result));
    }
    let Some(entry) = entries
        .into_iter()
        .find(|e| !e.is_ref() && !e.is_intermediate())
    else {
        return Err(Failure::no_such_object());
    };
    Ok(Attrs::new(ldap3::SearchEntry::construct(entry).attrs))
}

/// Whether every stored `userPassword` value of `dn` is hashed (`{SCHEME}...`); `None`
/// when the service account cannot read it.
pub(super) async fn stored_password_is_hashed(
    ldap: &mut Ldap,
    dn: &str,
    timeout: Duration,
) -> Result<Option<bool>, Failure> {
    const USER_PASSWORD: &str = "userPassword";
    let ldap3::SearchResult(entries, result) = ldap
        .with_timeout(timeout)
        .search(
            dn,
            ldap3::Scope::Base,
            "(objectClass=*)",
            vec![USER_PASSWORD],
        )
        .await?;
    if result.rc != 0 {
        return Err(Failure::from_result(&result));
    }
    let Some(entry) = entries.into_iter().find(|e| !e.is_ref()) else {
        return Err(Failure::no_such_object());
    };
    let entry = ldap3::SearchEntry::construct(entry);
    // userPassword is binary-flavoured: servers may send it as bin_attrs.
    let values: Vec<Vec<u8>> = entry
        .attrs
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(USER_PASSWORD))
        .flat_map(|(_, v)| v.iter().map(|s| s.as_bytes().to_vec()))
        .chain(
            entry
                .bin_attrs
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case(USER_PASSWORD))
                .flat_map(|(_, v)| v.iter().cloned()),
        )
        .collect();
    if values.is_empty() {
        return Ok(None);
    }
    Ok(Some(values.iter().all(|v| {
        v.first() == Some(&b'{') && v.iter().position(|b| *b == b'}').is_some_and(|i| i > 1)
    })))
}

/// The dialect for `kind`.
pub(crate) fn for_kind(kind: DirectoryKind) -> Arc<dyn Dialect> {
    match kind {
        DirectoryKind::OpenLdap => Arc::new(OpenLdap),
        DirectoryKind::Ds389 => Arc::new(Ds389),
        DirectoryKind::ActiveDirectory => Arc::new(ActiveDirectory),
    }
}

/// How a directory kind keeps users' sign-in state, for a feature that reads entries
/// itself (SCIM): which attributes to ask for, what they say, and how to search by them.
/// Writing that state is [`crate::account`]'s, never the feature's.
#[derive(Clone)]
pub struct SignInVocabulary {
    dialect: Arc<dyn Dialect>,
}

impl SignInVocabulary {
    pub fn for_kind(kind: DirectoryKind) -> Self {
        Self {
            dialect: for_kind(kind),
        }
    }

    pub(crate) fn of(dialect: Arc<dyn Dialect>) -> Self {
        Self { dialect }
    }

    /// The (operational) attributes a read must request for [`Self::read`].
    pub fn attributes(&self) -> &'static [&'static str] {
        self.dialect.state_attributes()
    }

    /// The state of an entry read with [`Self::attributes`].
    pub fn read(&self, entry: &crate::directory::Entry) -> PasswordState {
        self.dialect.password_state(&entry.dn, entry)
    }

    /// A parenthesised LDAP filter selecting the users in that state.
    pub fn filter(&self, test: StateTest) -> String {
        self.dialect.state_filter(test)
    }

    /// The attribute holding when the password last changed, when it is in
    /// GeneralizedTime syntax (filters and sorting can use it); `None` where it is not
    /// (Active Directory's FILETIME `pwdLastSet`).
    pub fn changed_at_attribute(&self) -> Option<&'static str> {
        self.dialect
            .changed_at_is_generalized_time()
            .then(|| self.dialect.changed_at_attribute())
    }

    /// The sign-in state of a user entry just added (Active Directory: disabled).
    pub fn new_entry_state(&self) -> PasswordState {
        self.dialect.new_entry_state()
    }
}

/// How a directory kind identifies and versions its entries, for a feature that reads
/// entries itself (SCIM's ids, ETags and `If-Match`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryVocabulary {
    kind: DirectoryKind,
    id: &'static str,
    version: &'static str,
    dn: &'static str,
    naming: Option<&'static str>,
    empty_groups: bool,
}

impl EntryVocabulary {
    pub fn for_kind(kind: DirectoryKind) -> Self {
        let dialect = for_kind(kind);
        Self {
            kind,
            id: dialect.id_attribute(),
            version: dialect.version_attribute(),
            dn: dialect.dn_attribute(),
            naming: dialect.user_naming_attribute(),
            empty_groups: dialect.groups_may_be_empty(),
        }
    }

    /// The attribute new users are named by when it is not the sign-in name's (`cn` in
    /// Active Directory).
    pub fn user_naming_attribute(&self) -> Option<&'static str> {
        self.naming
    }

    /// Refuses a sign-in name this kind of server would refuse or change in `attribute`.
    pub fn check_user_name(&self, attribute: &str, value: &str) -> Result<(), String> {
        for_kind(self.kind).check_user_name(attribute, value)
    }

    /// Whether a group may have no members.
    pub fn groups_may_be_empty(&self) -> bool {
        self.empty_groups
    }

    /// The attribute holding an entry's own DN (`entryDN`, `distinguishedName`).
    pub fn dn_attribute(&self) -> &'static str {
        self.dn
    }

    /// The attribute that identifies an entry for good (`entryUUID`, `objectGUID`).
    pub fn id_attribute(&self) -> &'static str {
        self.id
    }

    /// The entry's id, read with [`Self::id_attribute`] requested (in its text form).
    pub fn id<'e>(&self, entry: &'e crate::directory::Entry) -> Option<&'e str> {
        entry.first(self.id)
    }

    /// A parenthesised filter item matching the entry with this id: `(entryUUID=<id>)`,
    /// or for Active Directory `(objectGUID=\04\03...)`, the GUID's bytes as AD stores
    /// them (the first three groups little-endian).
    pub fn id_filter(&self, id: &uuid::Uuid) -> String {
        if self.id.eq_ignore_ascii_case("objectGUID") {
            let bytes: String = id
                .to_bytes_le()
                .iter()
                .map(|b| format!("\\{b:02x}"))
                .collect();
            format!("({}={bytes})", self.id)
        } else {
            format!("({}={})", self.id, id.hyphenated())
        }
    }

    /// The operational attribute that changes with every write (OpenLDAP: `entryCSN`).
    pub fn version_attribute(&self) -> &'static str {
        self.version
    }

    /// The entry's version, read with [`Self::version_attribute`] requested.
    pub fn version<'e>(&self, entry: &'e crate::directory::Entry) -> Option<&'e str> {
        entry.first(self.version)
    }
}

impl Default for EntryVocabulary {
    /// OpenLDAP's, the default directory kind.
    fn default() -> Self {
        Self::for_kind(DirectoryKind::OpenLdap)
    }
}

impl Default for SignInVocabulary {
    /// OpenLDAP's, the default directory kind.
    fn default() -> Self {
        Self::for_kind(DirectoryKind::OpenLdap)
    }
}

impl std::fmt::Debug for SignInVocabulary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SignInVocabulary")
            .field(&self.dialect.kind())
            .finish()
    }
}

impl PartialEq for SignInVocabulary {
    fn eq(&self, other: &Self) -> bool {
        self.dialect.kind() == other.dialect.kind()
    }
}

impl Eq for SignInVocabulary {}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Attributes from name-value pairs (a name may come several times).
    pub(crate) fn attrs(pairs: &[(&str, &str)]) -> Attrs {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in pairs {
            m.entry(k.to_string()).or_default().push(v.to_string());
        }
        Attrs::new(m)
    }

    #[test]
    fn object_guids_are_read_as_text() {
        let binary = HashMap::from([(
            "objectGUID".to_owned(),
            vec![vec![
                0x04, 0x03, 0x02, 0x01, 0x06, 0x05, 0x08, 0x07, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
                0x0f, 0x10,
            ]],
        )]);
        let attrs = Attrs::new(text_attributes(HashMap::new(), binary));
        assert_eq!(
            attrs.first("objectguid"),
            Some("01020304-0506-0708-090a-0b0c0d0e0f10")
        );
        // Other binary values (and a malformed GUID) stay out.
        let binary = HashMap::from([
            ("jpegPhoto".to_owned(), vec![vec![0xff, 0xd8]]),
            ("objectGUID".to_owned(), vec![vec![1, 2, 3]]),
        ]);
        let attrs = Attrs::new(text_attributes(HashMap::new(), binary));
        assert!(attrs.all("jpegPhoto").is_empty() && attrs.all("objectGUID").is_empty());
    }
}

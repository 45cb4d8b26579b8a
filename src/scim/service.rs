//! The SCIM service: RFC 7644 operations on Users and Groups carried out on the LDAP
//! entries themselves. Nothing is copied into lockbridge's store; the store only gets
//! the audit record of every write.
//!
//! Every write follows the same order: parse and check the whole request → look up
//! everything it refers to (uniqueness, manager, members) → check the audit log can be
//! written → one LDAP modify (plus a rename when the naming attribute changes) → the
//! password, through the account layer → read the entry back. A password the directory
//! refuses undoes the attribute change, so a request is applied whole or not at all.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::checked;
use super::error::ScimError;
use super::filter::{
    AttrPath, CORE_USER, CompValue, CompareOp, Filter, FilterMapping, PASSWORD_EXTENSION,
    Reference, Translation, WithReferences, references, translate,
};
use super::model::{ListQuery, ListResponse, PatchRequest, get_ci, project};
use super::patch::{apply_user_patch, parse_group_patch};
use super::resource::{
    GroupMapping, GroupRef, MemberKind, MemberRef, UserExtras, UserMapping, UserWrite,
    escape_rdn_value,
};
use super::schema::Discovery;
use super::user_groups::{GroupsLocation, MEMBER_OF, UserGroups};
use crate::account::expiry::{ExpiryService, PasswordExpiry};
use crate::account::{AccountError, AccountService, Actor, Authority, ProvisionedState};
use crate::audit::{Action, AuditEvent, AuditLog, Detail, Outcome};
use crate::directory::escape::equals;
use crate::directory::{
    Change, Directory, DirectoryError, Entry, FollowedGroups, SearchScope, SortKey, StoredPassword,
    SyncedUsers, Window, WindowQuery, dn_key, renamed_dn, same_dn,
};
use crate::types::Secret;

/// Ids looked up in one directory search when resolving references.
const RESOLVE_BATCH: usize = 50;
/// What a client is told when its user vanished between finding it and writing to it.
const USER_GONE: &str =
    "the user was deleted or moved while this request ran; search for it again with a filter";

/// The most entries an unsorted list walks for one request (skipped entries included).
/// A larger result is paged in sorted order instead, a window at a time, so no request
/// costs a walk through the whole directory.
pub const UNSORTED_SCAN_LIMIT: u64 = 2000;

/// What DELETE does to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    Delete,
    Deactivate,
}

/// Where resources live and how the service behaves; mapped from `[scim]` and
/// `[directory]` by the composition root.
#[derive(Debug, Clone)]
pub struct ScimSettings {
    /// Absolute base URL of the SCIM API, e.g. `https://idm.example.org/scim/v2`.
    pub base_url: String,
    /// Subtree searched for users.
    pub users_base: String,
    /// Filter every user matches, with parentheses.
    pub user_filter: String,
    /// Where new users are created.
    pub users_container: String,
    /// Subtree searched for groups; `None`: groups are not served.
    pub groups_base: Option<String>,
    /// Where new groups are created.
    pub groups_container: String,
    pub delete_mode: DeleteMode,
    /// Largest page a client gets.
    pub max_results: u32,
    /// Check pushed passwords against lockbridge's own rules too.
    pub check_password_rules: bool,
    /// Read password pushes' users from a copy the directory keeps current, where it can
    /// ([`Directory::follow_users`]).
    pub follow_directory: bool,
    /// With `follow_directory`, reads by `userName` from the copy too (it then holds every
    /// SCIM attribute, and the groups are followed).
    pub follow_reads: bool,
}

/// Who is calling: the token's name (for the audit log) and the request id.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub request_id: Option<String>,
}

impl Caller {
    /// The caller as the account gate sees it.
    fn actor(&self) -> Actor {
        Actor {
            name: self.name.clone(),
            dn: None,
            authority: Authority::Provisioning,
            request_id: self.request_id.clone(),
        }
    }
}

/// A resource as returned to the client, with its version for the ETag header.
#[derive(Debug, Clone)]
pub struct Served {
    pub resource: Value,
    pub version: Option<String>,
    pub location: String,
}

/// Which kind of resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Group,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }
}

/// How the client wants the resources shaped (`attributes`, `excludedAttributes`).
#[derive(Debug, Clone, Default)]
pub struct Shape {
    pub attributes: Vec<AttrPath>,
    pub excluded: Vec<AttrPath>,
}

impl Shape {
    /// Will the resource hold `name`, an attribute returned by default: asked for, or
    /// (without `attributes`) not excluded?
    fn wants_default(&self, name: &str) -> bool {
        if self.attributes.is_empty() {
            !self.excludes(name)
        } else {
            self.wants(name)
        }
    }

    /// Does the client ask for `name` (so that it is worth computing)?
    fn wants(&self, name: &str) -> bool {
        self.attributes
            .iter()
            .any(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// Does the client ask for the password extension's computed facts?
    fn wants_password_facts(&self) -> bool {
        self.attributes.iter().any(|a| {
            let urn = a.urn.as_deref().unwrap_or("");
            urn.eq_ignore_ascii_case(PASSWORD_EXTENSION)
                || a.full_urn().eq_ignore_ascii_case(PASSWORD_EXTENSION)
                || ["passwordExpiresAt", "neverExpires", "passwordLastChanged"]
                    .iter()
                    .any(|n| a.name.eq_ignore_ascii_case(n))
        })
    }

    fn excludes(&self, name: &str) -> bool {
        self.excluded
            .iter()
            .any(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// Everything returned by default but a group's members: for an answer whose body
    /// nobody reads (a Bulk operation's), where resolving a large group's members to ids
    /// would be the most expensive part of the write.
    pub fn without_members() -> Self {
        Shape {
            attributes: Vec::new(),
            excluded: vec![AttrPath::new("members")],
        }
    }
}

/// What a password push did, with the user's name. `Current`: the password is the one
/// the entry read holds, so nothing was written (from the followed copy, to be confirmed
/// on a fresh read).
enum Pushed {
    Set(String),
    Current(String),
}

/// Why a password push failed. `Refused`: the directory refused a password checked
/// against the followed copy, which a fresh read may explain.
enum PushFailure {
    Refused(ScimError),
    Other(ScimError),
}

impl From<ScimError> for PushFailure {
    fn from(e: ScimError) -> Self {
        PushFailure::Other(e)
    }
}

pub struct ScimService {
    directory: Directory,
    account: Arc<AccountService>,
    expiry: Arc<ExpiryService>,
    audit: AuditLog,
    users: UserMapping,
    groups: GroupMapping,
    discovery: Discovery,
    settings: ScimSettings,
    /// How users' groups are found (from `memberOf`, or by searching the groups).
    user_groups: UserGroups,
    /// What password pushes and reads by `userName` read, kept current by the directory
    /// (`None`: they search).
    followed: Option<SyncedUsers>,
    /// The groups' members, kept current alike: the `groups` of a user read from
    /// `followed` (`None`: such reads search).
    followed_groups: Option<FollowedGroups>,
}

impl ScimService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        account: Arc<AccountService>,
        expiry: Arc<ExpiryService>,
        audit: AuditLog,
        users: UserMapping,
        groups: GroupMapping,
        discovery: Discovery,
        settings: ScimSettings,
        followed: Option<SyncedUsers>,
        followed_groups: Option<FollowedGroups>,
    ) -> Arc<Self> {
        Arc::new(Self {
            followed,
            followed_groups,
            directory: account.directory().clone(),
            account,
            expiry,
            audit,
            users,
            groups,
            discovery,
            settings,
            user_groups: UserGroups::new(),
        })
    }

    pub fn settings(&self) -> &ScimSettings {
        &self.settings
    }

    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// Shapes a resource as served by `attributes` / `excludedAttributes`.
    pub fn project(&self, kind: Kind, resource: &mut Value, shape: &Shape) {
        let schema = match kind {
            Kind::User => self.discovery.user_schema(),
            Kind::Group => self.discovery.group_schema(),
        };
        project(resource, &shape.attributes, &shape.excluded, schema);
    }

    /// The SCIM attributes this service has no home for (lockbridge's LDAP schema is not
    /// in the directory): `externalId` of Users and Groups when not stored, then the
    /// User attributes (`name.middleName`, `nickName`, …).
    pub fn homeless_attributes(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.users.stores_external_id() {
            out.push("User externalId".to_owned());
        }
        if !self.groups.stores_external_id() {
            out.push("Group externalId".to_owned());
        }
        out.extend(self.users.homeless_names().into_iter().map(str::to_owned));
        out
    }

    fn groups_base(&self) -> Result<&str, ScimError> {
        self.settings.groups_base.as_deref().ok_or_else(|| {
            ScimError::NotFound(
                "this service provider serves no groups (directory.groups_base is not set)".into(),
            )
        })
    }

    fn location(&self, kind: Kind, id: &str) -> String {
        let collection = match kind {
            Kind::User => "Users",
            Kind::Group => "Groups",
        };
        format!("{}/{collection}/{id}", self.settings.base_url)
    }

    // ----- errors -----------------------------------------------------------------------

    fn directory_failure(&self, e: DirectoryError) -> ScimError {
        match e {
            DirectoryError::AlreadyExists(_) => ScimError::Uniqueness(
                "an entry with this name already exists in the directory".into(),
            ),
            DirectoryError::AssertionFailed => ScimError::PreconditionFailed(
                "the resource changed since the version given in If-Match; read it again and retry with the new ETag".into(),
            ),
            DirectoryError::Rejected { message, .. } => {
                ScimError::InvalidValue(format!("the directory refused the change: {message}"))
            }
            DirectoryError::SizeLimit(n) => {
                ScimError::TooMany(format!("more than {n} entries match; narrow the filter"))
            }
            DirectoryError::Unsupported(what) => ScimError::NotImplemented(what),
            DirectoryError::NoSuchEntry(_) | DirectoryError::NoSuchUser => {
                ScimError::NotFound(
                    "the resource was deleted or moved while this request ran; search for it again with a filter".into(),
                )
            }
            other => from_account(self.account.directory_error(other)),
        }
    }

    // ----- reads ------------------------------------------------------------------------

    /// The user entry with SCIM id `id`.
    async fn user_entry(&self, id: &str) -> Result<Entry, ScimError> {
        Ok(self.user_entry_for_write(id, false).await?.0)
    }

    /// [`Self::user_entry`]; with `password`, also the stored password, read in the same
    /// search (for a write carrying a password to compare with it).
    async fn user_entry_for_write(
        &self,
        id: &str,
        password: bool,
    ) -> Result<(Entry, Option<StoredPassword>), ScimError> {
        self.user_entry_with(id, password, &self.users.read_attributes())
            .await
    }

    /// The user with `id`, read with `attrs` only (and the stored password when
    /// `password`).
    async fn user_entry_with(
        &self,
        id: &str,
        password: bool,
        attrs: &[String],
    ) -> Result<(Entry, Option<StoredPassword>), ScimError> {
        let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
        let filter = self.user_id_filter(id)?;
        let (base, scope) = (&self.settings.users_base, SearchScope::Subtree);
        if password {
            let found = self
                .directory
                .search_entries_for_write(base, scope, &filter, &attrs, 2)
                .await
                .map_err(|e| self.directory_failure(e))?;
            let (entry, stored) = Self::only_user(id, found)?;
            Ok((entry, Some(stored)))
        } else {
            let found = self
                .directory
                .search_entries(base, scope, &filter, &attrs, 2)
                .await
                .map_err(|e| self.directory_failure(e))?;
            Ok((Self::only_user(id, found)?, None))
        }
    }

    fn user_id_filter(&self, id: &str) -> Result<String, ScimError> {
        let uuid = uuid::Uuid::parse_str(id).map_err(|_| user_not_found(id))?;
        Ok(format!(
            "(&{}{})",
            self.settings.user_filter,
            self.users.entries().id_filter(&uuid)
        ))
    }

    /// The one user a search by id found.
    fn only_user<T>(id: &str, mut found: Vec<T>) -> Result<T, ScimError> {
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(user_not_found(id)),
            _ => Err(ScimError::Internal(format!("two users have the id {id}"))),
        }
    }

    async fn user_by_dn(&self, dn: &str) -> Result<Entry, ScimError> {
        let attrs = self.users.read_attributes();
        let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
        self.directory
            .read_entry(dn, &attrs)
            .await
            .map_err(|e| self.directory_failure(e))?
            .ok_or_else(|| ScimError::NotFound(USER_GONE.into()))
    }

    async fn group_entry(&self, id: &str) -> Result<Entry, ScimError> {
        let base = self.groups_base()?;
        let not_found = || {
            ScimError::NotFound(format!(
                "no Group has the id \"{}\"; check the id, or find the group with a filter on displayName",
                clip(id)
            ))
        };
        let uuid = uuid::Uuid::parse_str(id).map_err(|_| not_found())?;
        let filter = format!(
            "(&{}{})",
            self.groups.object_filter(),
            self.users.entries().id_filter(&uuid)
        );
        let attrs = self.groups.read_attributes();
        let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
        let mut found = self
            .directory
            .search_entries(base, SearchScope::Subtree, &filter, &attrs, 2)
            .await
            .map_err(|e| self.directory_failure(e))?;
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(not_found()),
            _ => Err(ScimError::Internal(format!("two groups have the id {id}"))),
        }
    }

    /// Refuses changes to the groups that make administrators (and to other protected
    /// entries), so a provisioning token cannot make anyone an administrator.
    async fn check_writable_group(&self, group: &Entry) -> Result<(), ScimError> {
        let name = group.first("cn").unwrap_or(&group.dn);
        self.account
            .check_provisioning_target(name, &group.dn)
            .await
            .map_err(from_account)
    }

    /// Refuses writes to the accounts that run lockbridge: administrators (unless the
    /// operator opted in), the service account, `scim.protected_dns`.
    async fn check_writable_user(&self, user: &Entry) -> Result<(), ScimError> {
        let name = user
            .first(self.users.user_name_attribute())
            .unwrap_or(&user.dn);
        self.account
            .check_provisioning_target(name, &user.dn)
            .await
            .map_err(from_account)
    }

    /// Refuses to create an entry at `dn`, or rename one to it, when `dn` is protected
    /// or an administrator group still lists it.
    async fn check_new_dn(&self, name: &str, dn: &str) -> Result<(), ScimError> {
        self.account
            .check_provisioning_new_dn(name, dn)
            .await
            .map_err(from_account)
    }

    async fn group_by_dn(&self, dn: &str) -> Result<Entry, ScimError> {
        let attrs = self.groups.read_attributes();
        let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
        self.directory
            .read_entry(dn, &attrs)
            .await
            .map_err(|e| self.directory_failure(e))?
            .ok_or_else(|| ScimError::NotFound(
                "the group was deleted or moved while this request ran; search for it again with a filter".into(),
            ))
    }

    /// Id (and kind) of each DN, looked up in batches and keyed by [`dn_key`] (a member
    /// value may be spelled unlike the entry's own DN); DNs that are not users or groups
    /// under the configured bases are left out.
    async fn ids_of(
        &self,
        dns: &[String],
    ) -> Result<HashMap<String, (String, Kind, Option<String>)>, ScimError> {
        let mut out = HashMap::new();
        // One search term per entry, however often or however spelled it is named.
        let wanted: BTreeMap<String, &String> = dns
            .iter()
            .filter(|d| !d.is_empty())
            .map(|d| (dn_key(d), d))
            .collect();
        let wanted: Vec<&String> = wanted.into_values().collect();
        let entries = self.users.entries();
        for chunk in wanted.chunks(RESOLVE_BATCH) {
            let any = chunk
                .iter()
                .map(|dn| equals(entries.dn_attribute(), dn))
                .collect::<String>();
            let filter = format!("(|{any})");
            let mut bases = vec![(self.settings.users_base.as_str(), Kind::User)];
            if let Some(g) = self.settings.groups_base.as_deref() {
                bases.push((g, Kind::Group));
            }
            for (base, kind) in bases {
                let found = self
                    .directory
                    .search_entries(
                        base,
                        SearchScope::Subtree,
                        &filter,
                        &[entries.id_attribute(), "displayName", "cn"],
                        chunk.len() * 2,
                    )
                    .await
                    .map_err(|e| self.directory_failure(e))?;
                for e in found {
                    if let Some(id) = entries.id(&e) {
                        let display = e
                            .first("displayName")
                            .or_else(|| e.first("cn"))
                            .map(str::to_owned);
                        out.entry(dn_key(&e.dn))
                            .or_insert((id.to_owned(), kind, display));
                    }
                }
            }
        }
        Ok(out)
    }

    /// DN (and kind) of each id; ids that name nothing are left out.
    async fn dns_of(
        &self,
        ids: &[String],
        allow_groups: bool,
    ) -> Result<HashMap<String, (String, Kind)>, ScimError> {
        let mut out = HashMap::new();
        let wanted: BTreeSet<uuid::Uuid> = ids
            .iter()
            .filter_map(|id| uuid::Uuid::parse_str(id).ok())
            .collect();
        let wanted: Vec<uuid::Uuid> = wanted.into_iter().collect();
        let entries = self.users.entries();
        for chunk in wanted.chunks(RESOLVE_BATCH) {
            let any = chunk
                .iter()
                .map(|id| entries.id_filter(id))
                .collect::<String>();
            let mut bases = vec![(
                self.settings.users_base.as_str(),
                Kind::User,
                self.settings.user_filter.clone(),
            )];
            if allow_groups && let Some(g) = self.settings.groups_base.as_deref() {
                bases.push((g, Kind::Group, self.groups.object_filter()));
            }
            for (base, kind, class) in bases {
                let filter = format!("(&{class}(|{any}))");
                let found = self
                    .directory
                    .search_entries(
                        base,
                        SearchScope::Subtree,
                        &filter,
                        &[entries.id_attribute()],
                        chunk.len() * 2,
                    )
                    .await
                    .map_err(|e| self.directory_failure(e))?;
                for e in found {
                    if let Some(id) = entries.id(&e) {
                        out.entry(id.to_ascii_lowercase())
                            .or_insert((e.dn.clone(), kind));
                    }
                }
            }
        }
        Ok(out)
    }

    /// What each of `entries` needs besides its own attributes, looked up for all of
    /// them at once: one search per [`RESOLVE_BATCH`] managers, and (unless `groups` is
    /// left out) the groups, from `memberOf` or one search per [`RESOLVE_BATCH`] users
    /// (see [`super::user_groups`]), never one per entry.
    async fn users_extras(
        &self,
        entries: &[Entry],
        shape: &Shape,
    ) -> Result<Vec<UserExtras>, ScimError> {
        let managers: Vec<String> = entries
            .iter()
            .filter_map(|e| e.first("manager").map(str::to_owned))
            .collect();
        let managers = if managers.is_empty() {
            HashMap::new()
        } else {
            self.ids_of(&managers).await?
        };
        let mut groups = if shape.wants_default("groups") {
            Some(self.user_groups_of(entries).await?)
        } else {
            None
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let (manager_id, manager_display) = entry
                .first("manager")
                .and_then(|dn| managers.get(&dn_key(dn)))
                .map(|(id, _, display)| (Some(id.clone()), display.clone()))
                .unwrap_or((None, None));
            // passwordExpiresAt and neverExpires are `returned: request`: computed only then.
            let expiry = if shape.wants_password_facts() {
                let state = self.users.sign_in_state(entry);
                self.expiry
                    .password_expiry(
                        state.changed_at,
                        state.policy_dn.as_deref(),
                        state.never_expires,
                    )
                    .await
                    .map_err(from_account)?
            } else {
                PasswordExpiry {
                    expires_at: None,
                    never_expires: false,
                }
            };
            out.push(UserExtras {
                base_url: self.settings.base_url.clone(),
                manager_id,
                manager_display,
                groups: groups
                    .as_mut()
                    .map(|g| g.remove(&dn_key(&entry.dn)).unwrap_or_default()),
                password_expires_at: expiry.expires_at,
                never_expires: expiry.never_expires,
            });
        }
        Ok(out)
    }

    /// The groups of each of `users`, by [`dn_key`] of the user: from their
    /// `memberOf` where the directory keeps it, else [`Self::groups_of`].
    async fn user_groups_of(
        &self,
        users: &[Entry],
    ) -> Result<HashMap<String, Vec<GroupRef>>, ScimError> {
        let Some(base) = self.settings.groups_base.as_deref() else {
            return Ok(HashMap::new());
        };
        let location = GroupsLocation {
            base: base.to_owned(),
            object_filter: self.groups.object_filter(),
            entries: self.users.entries(),
        };
        if self
            .user_groups
            .use_member_of(&self.directory, &location)
            .await
        {
            return self
                .user_groups
                .from_member_of(&self.directory, &location, users)
                .await
                .map_err(|e| self.directory_failure(e));
        }
        self.groups_of(users).await
    }

    /// The groups that list each of `users` as a direct member, by [`dn_key`] of the
    /// user: one search per [`RESOLVE_BATCH`] users, which asks the directory for only
    /// the `member` values that name those users (Matched Values), so a large group costs
    /// no more than a small one.
    async fn groups_of(
        &self,
        users: &[Entry],
    ) -> Result<HashMap<String, Vec<GroupRef>>, ScimError> {
        let mut out: HashMap<String, Vec<GroupRef>> = HashMap::new();
        let Some(base) = self.settings.groups_base.as_deref() else {
            return Ok(out);
        };
        let entries = self.users.entries();
        let id_attribute = entries.id_attribute();
        for chunk in users.chunks(RESOLVE_BATCH) {
            let items: String = chunk.iter().map(|u| equals("member", &u.dn)).collect();
            let filter = format!("(&{}(|{items}))", self.groups.object_filter());
            let found = self
                .directory
                .search_entries_matching_values(
                    base,
                    SearchScope::Subtree,
                    &filter,
                    &[id_attribute, "cn", "member"],
                    10_000,
                    // Values of attributes the filter does not name are not returned
                    // at all: the presence items keep the id and cn whole.
                    &format!("({items}({id_attribute}=*)(cn=*))"),
                )
                .await
                .map_err(|e| self.directory_failure(e))?;
            let wanted: HashSet<String> = chunk.iter().map(|u| dn_key(&u.dn)).collect();
            for group in found {
                let Some(id) = entries.id(&group) else {
                    continue;
                };
                for member in group.all("member") {
                    let key = dn_key(member);
                    if wanted.contains(&key) {
                        out.entry(key).or_default().push(GroupRef {
                            id: id.to_owned(),
                            display: group.first("cn").map(str::to_owned),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    async fn serve_user(&self, entry: &Entry, shape: &Shape) -> Result<Served, ScimError> {
        let extras = self
            .users_extras(std::slice::from_ref(entry), shape)
            .await?
            .pop()
            .unwrap_or_default();
        Ok(self.served_user(entry, &extras, shape))
    }

    /// A user as served, from its entry and the extras looked up for it.
    fn served_user(&self, entry: &Entry, extras: &UserExtras, shape: &Shape) -> Served {
        let mut resource = self.users.to_resource(entry, extras);
        project(
            &mut resource,
            &shape.attributes,
            &shape.excluded,
            self.discovery.user_schema(),
        );
        let id = self
            .users
            .entries()
            .id(entry)
            .unwrap_or_default()
            .to_owned();
        Served {
            resource,
            version: self.users.version(entry),
            location: self.location(Kind::User, &id),
        }
    }

    /// The members of each of `groups` as references, resolved for all of them at once
    /// (one search per [`RESOLVE_BATCH`] distinct members); empty lists when the client
    /// does not want members.
    async fn members_of(
        &self,
        groups: &[Entry],
        shape: &Shape,
    ) -> Result<Vec<Vec<MemberRef>>, ScimError> {
        if shape.excludes("members") || (!shape.attributes.is_empty() && !shape.wants("members")) {
            return Ok(vec![Vec::new(); groups.len()]);
        }
        let dns: Vec<String> = groups
            .iter()
            .flat_map(|g| g.all("member"))
            .filter(|d| !d.is_empty())
            .cloned()
            .collect();
        let ids = self.ids_of(&dns).await?;
        Ok(groups
            .iter()
            .map(|g| {
                g.all("member")
                    .iter()
                    .filter_map(|dn| {
                        let (id, kind, display) = ids.get(&dn_key(dn))?.clone();
                        Some(MemberRef {
                            kind: match kind {
                                Kind::User => MemberKind::User,
                                Kind::Group => MemberKind::Group,
                            },
                            display,
                            id,
                        })
                    })
                    .collect()
            })
            .collect())
    }

    async fn serve_group(&self, entry: &Entry, shape: &Shape) -> Result<Served, ScimError> {
        let members = self
            .members_of(std::slice::from_ref(entry), shape)
            .await?
            .pop()
            .unwrap_or_default();
        Ok(self.served_group(entry, &members, shape))
    }

    /// A group as served, from its entry and its resolved members.
    fn served_group(&self, entry: &Entry, members: &[MemberRef], shape: &Shape) -> Served {
        let mut resource = self
            .groups
            .to_resource(entry, members, &self.settings.base_url);
        project(
            &mut resource,
            &shape.attributes,
            &shape.excluded,
            self.discovery.group_schema(),
        );
        let id = self
            .users
            .entries()
            .id(entry)
            .unwrap_or_default()
            .to_owned();
        Served {
            resource,
            version: self.groups.version(entry),
            location: self.location(Kind::Group, &id),
        }
    }

    pub async fn get(&self, kind: Kind, id: &str, shape: &Shape) -> Result<Served, ScimError> {
        match kind {
            Kind::User => {
                let entry = self.user_entry(id).await?;
                self.serve_user(&entry, shape).await
            }
            Kind::Group => {
                let entry = self.group_entry(id).await?;
                self.serve_group(&entry, shape).await
            }
        }
    }

    /// `GET /Users`, `GET /Groups` and their `/.search` (RFC 7644 §3.4.2, §3.4.3).
    pub async fn list(&self, kind: Kind, query: &ListQuery) -> Result<Value, ScimError> {
        let start = query.start_index.max(1);
        let count = query.count.min(u64::from(self.settings.max_results));
        let (total, resources) = self.list_page(kind, query, start, count).await?;
        Ok(ListResponse::new(total, start, resources).to_value())
    }

    /// The total and the resources `start .. start + count` of a list.
    async fn list_page(
        &self,
        kind: Kind,
        query: &ListQuery,
        start: u64,
        count: u64,
    ) -> Result<(u64, Vec<Value>), ScimError> {
        let (base, class): (&str, String) = match kind {
            Kind::User => (
                self.settings.users_base.as_str(),
                self.settings.user_filter.clone(),
            ),
            Kind::Group => (self.groups_base()?, self.groups.object_filter()),
        };
        let (ldap, exact) = match &query.filter {
            Some(filter) => {
                let t = self.translate(filter, kind).await?;
                (t.ldap, t.exact)
            }
            None => ("(objectClass=*)".to_owned(), true),
        };
        let sort = match &query.sort_by {
            Some(path) => {
                let key = match kind {
                    Kind::User => match self.users.sort_key(path) {
                        Ok(key) => Some(key),
                        // Not sortable by the directory, but an attribute users have:
                        // lockbridge orders them.
                        Err(_) if checked::sortable(path, self.discovery.user_schema()) => None,
                        Err(e) => return Err(e),
                    },
                    Kind::Group => Some(self.groups.sort_key(path)?),
                };
                match key {
                    Some(mut key) => {
                        key.reverse = query.descending();
                        Some(key)
                    }
                    None => return self.list_checked(&ldap, exact, query, start, count).await,
                }
            }
            None => None,
        };
        if !exact {
            if kind == Kind::Group {
                return Err(ScimError::Internal(
                    "a group filter translated to a search that only narrows".into(),
                ));
            }
            return self.list_checked(&ldap, exact, query, start, count).await;
        }
        let shape = Shape {
            attributes: query.attributes.clone(),
            excluded: query.excluded_attributes.clone(),
        };
        let copied = match kind {
            Kind::User => self.user_window_from_copy(query, &shape, start, count),
            Kind::Group => None,
        };
        let window = match copied {
            Some(window) => window,
            None => {
                self.search_page(kind, base, &class, &ldap, sort, start, count)
                    .await?
            }
        };
        // Everything the page refers to is looked up for the page at once.
        let resources = match kind {
            Kind::User => {
                let extras = self.users_extras(&window.entries, &shape).await?;
                window
                    .entries
                    .iter()
                    .zip(&extras)
                    .map(|(entry, extras)| self.served_user(entry, extras, &shape).resource)
                    .collect()
            }
            Kind::Group => {
                let members = self.members_of(&window.entries, &shape).await?;
                window
                    .entries
                    .iter()
                    .zip(&members)
                    .map(|(entry, members)| self.served_group(entry, members, &shape).resource)
                    .collect()
            }
        };
        Ok((window.total, resources))
    }

    /// One page of a list the directory answers exactly: the window `start .. start +
    /// count` of `(&{class}{ldap})` below `base`, in `sort` order or the directory's.
    #[allow(clippy::too_many_arguments)]
    async fn search_page(
        &self,
        kind: Kind,
        base: &str,
        class: &str,
        ldap: &str,
        sort: Option<SortKey>,
        start: u64,
        count: u64,
    ) -> Result<Window, ScimError> {
        let attrs = match kind {
            Kind::User => self.users.read_attributes(),
            Kind::Group => self.groups.read_attributes(),
        };
        let mut window_query = WindowQuery {
            base: base.to_owned(),
            filter: format!("(&{class}{ldap})"),
            attrs,
            sort,
            offset: start,
            count,
            scan_limit: Some(UNSORTED_SCAN_LIMIT),
        };
        let window = match self.directory.search_window(&window_query).await {
            // Too many to page through in the directory's order (each page would walk
            // every entry before it): page them sorted by the naming attribute instead,
            // which the directory answers a window at a time. The order is the same for
            // every page of this query, since the choice depends on its size alone.
            Err(DirectoryError::ScanLimit(limit)) => {
                window_query.sort = Some(self.default_sort_key(kind)?);
                let only_count = window_query.count == 0;
                window_query.count = window_query.count.max(1);
                match self.directory.search_window(&window_query).await {
                    Ok(mut w) => {
                        if only_count {
                            w.entries.clear();
                        }
                        w
                    }
                    Err(DirectoryError::Unsupported(why)) => {
                        return Err(ScimError::TooMany(format!(
                            "more than {limit} resources match and the directory cannot sort \
                             them ({why}), so they cannot be paged; narrow the filter \
                             (operators: enable server-side sorting, e.g. OpenLDAP's sssvlv \
                             overlay)"
                        )));
                    }
                    Err(e) => return Err(self.directory_failure(e)),
                }
            }
            other => other.map_err(|e| self.directory_failure(e))?,
        };
        Ok(window)
    }

    /// A list whose filter is `userName eq "…"` answered from the followed copies,
    /// without a search: the directory reported the user and its groups' members, and
    /// lockbridge is not writing either. `None` when they cannot answer for it (not
    /// followed, not live, a write awaiting its report, or a name the copy does not
    /// hold, such as a user created a moment ago): the caller searches.
    fn user_window_from_copy(
        &self,
        query: &ListQuery,
        shape: &Shape,
        start: u64,
        count: u64,
    ) -> Option<Window> {
        let copy = self.followed.as_ref()?;
        let Some(Filter::Compare {
            path,
            op: CompareOp::Eq,
            value: CompValue::String(name),
        }) = &query.filter
        else {
            return None;
        };
        let core = path
            .urn
            .as_deref()
            .is_none_or(|urn| urn.eq_ignore_ascii_case(CORE_USER));
        if !core || path.sub_attr.is_some() || !path.name.eq_ignore_ascii_case("userName") {
            return None;
        }
        let found = copy.find(name).and_then(|mut entry| {
            if shape.wants_default("groups") && self.settings.groups_base.is_some() {
                // As the directory's memberOf would list them (the memberof overlay keeps
                // it from the same `member` values).
                let groups = self.followed_groups.as_ref()?.groups_of(&entry.dn)?;
                entry.attrs.insert(MEMBER_OF.to_ascii_lowercase(), groups);
            }
            Some(entry)
        });
        let from = if found.is_some() { "copy" } else { "directory" };
        metrics::counter!("lockbridge_scim_user_name_reads_total", "from" => from).increment(1);
        let entry = found?;
        let entries = if start <= 1 && count > 0 {
            vec![entry]
        } else {
            Vec::new()
        };
        Some(Window { entries, total: 1 })
    }

    /// A page of users the directory cannot give alone: `ldap` only narrows the search
    /// (`exact` false: each candidate is checked against the SCIM filter), or the order
    /// is one lockbridge sorts by itself. At most [`UNSORTED_SCAN_LIMIT`] candidates are
    /// read; more is refused with a request to narrow the filter.
    async fn list_checked(
        &self,
        ldap: &str,
        exact: bool,
        query: &ListQuery,
        start: u64,
        count: u64,
    ) -> Result<(u64, Vec<Value>), ScimError> {
        let window_query = WindowQuery {
            base: self.settings.users_base.clone(),
            filter: format!("(&{}{ldap})", self.settings.user_filter),
            attrs: self.users.read_attributes(),
            sort: None,
            offset: 1,
            count: UNSORTED_SCAN_LIMIT,
            scan_limit: Some(UNSORTED_SCAN_LIMIT),
        };
        let window = match self.directory.search_window(&window_query).await {
            Err(DirectoryError::ScanLimit(limit)) => {
                let why = if exact {
                    "lockbridge sorts by this attribute itself (the directory cannot)"
                } else {
                    "lockbridge checks each candidate itself (the filter compares part of a \
                     value kept as JSON)"
                };
                return Err(ScimError::TooMany(format!(
                    "more than {limit} users could match and {why}; narrow the filter"
                )));
            }
            other => other.map_err(|e| self.directory_failure(e))?,
        };
        let schema = self.discovery.user_schema();
        let filter = match (&query.filter, exact) {
            (Some(f), false) => Some(checked::qualified(f, schema)),
            _ => None,
        };
        let everything = Shape::default();
        let extras = self.users_extras(&window.entries, &everything).await?;
        let mut kept: Vec<(Entry, UserExtras, Option<checked::SortValue>)> = Vec::new();
        for (entry, extras) in window.entries.into_iter().zip(extras) {
            let resource = self.users.to_resource(&entry, &extras);
            if filter
                .as_ref()
                .is_some_and(|f| !checked::matches(f, &resource, schema))
            {
                continue;
            }
            let key = query.sort_by.as_ref().and_then(|path| {
                let case_exact = schema
                    .resolve(path)
                    .is_some_and(|r| r.sub.unwrap_or(r.attr).case_exact);
                checked::sort_value(&resource, path, case_exact)
            });
            kept.push((entry, extras, key));
        }
        if query.sort_by.is_some() {
            kept.sort_by(|a, b| checked::compare(&a.2, &b.2));
            if query.descending() {
                kept.reverse();
            }
        }
        let total = kept.len() as u64;
        let shape = Shape {
            attributes: query.attributes.clone(),
            excluded: query.excluded_attributes.clone(),
        };
        let skip = usize::try_from(start.saturating_sub(1)).unwrap_or(usize::MAX);
        let take = usize::try_from(count).unwrap_or(usize::MAX);
        let resources = kept
            .iter()
            .skip(skip)
            .take(take)
            .map(|(entry, extras, _)| self.served_user(entry, extras, &shape).resource)
            .collect();
        Ok((total, resources))
    }

    /// The order of a large list the client did not sort: by `userName` (users) or
    /// `displayName` (groups), the naming attributes.
    fn default_sort_key(&self, kind: Kind) -> Result<SortKey, ScimError> {
        match kind {
            Kind::User => self.users.sort_key(&AttrPath::new("userName")),
            Kind::Group => self.groups.sort_key(&AttrPath::new("displayName")),
        }
    }

    /// `POST /.search` at the root (RFC 7644 §3.4.3): Users, then Groups, paged as one
    /// list. A filter that only makes sense for one resource type selects nothing of the
    /// other.
    pub async fn list_all(&self, query: &ListQuery) -> Result<Value, ScimError> {
        let start = query.start_index.max(1);
        let mut users_query = query.clone();
        users_query.count = 0;
        let users_total = match self.list_page(Kind::User, &users_query, 1, 0).await {
            Ok((total, _)) => total,
            Err(ScimError::InvalidFilter(_)) if self.settings.groups_base.is_some() => 0,
            Err(e) => return Err(e),
        };
        let count = query.count.min(u64::from(self.settings.max_results));
        let mut resources = Vec::new();
        if start <= users_total && count > 0 {
            let (_, page) = self.list_page(Kind::User, query, start, count).await?;
            resources = page;
        }
        let mut groups_total = 0;
        if self.settings.groups_base.is_some() {
            let left = count.saturating_sub(resources.len() as u64);
            let group_start = start.saturating_sub(users_total).max(1);
            match self.list_page(Kind::Group, query, group_start, left).await {
                Ok((total, page)) => {
                    groups_total = total;
                    resources.extend(page);
                }
                Err(ScimError::InvalidFilter(_)) if users_total > 0 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ListResponse::new(users_total + groups_total, start, resources).to_value())
    }

    /// Translates a filter, first looking up the ids it compares with references.
    async fn translate(&self, filter: &Filter, kind: Kind) -> Result<Translation, ScimError> {
        let refs = references(filter, self.mapping(kind));
        if refs.is_empty() {
            return Ok(translate(filter, self.mapping(kind))?);
        }
        let ids: Vec<String> = refs.iter().map(|(_, id)| id.clone()).collect();
        let found = self.dns_of(&ids, true).await?;
        let resolved = refs
            .into_iter()
            .map(|(_, id)| {
                let r = uuid::Uuid::parse_str(&id)
                    .ok()
                    .and_then(|u| found.get(&u.hyphenated().to_string()))
                    .map_or(Reference::NotFound, |(dn, _)| Reference::Dn(dn.clone()));
                (id, r)
            })
            .collect();
        Ok(translate(
            filter,
            &WithReferences::new(self.mapping(kind), resolved),
        )?)
    }

    fn mapping(&self, kind: Kind) -> &dyn FilterMapping {
        match kind {
            Kind::User => self.users.filter_mapping(),
            Kind::Group => self.groups.filter_mapping(),
        }
    }

    // ----- user writes ------------------------------------------------------------------

    /// Refuses a userName the directory would refuse or change (Active Directory's
    /// sAMAccountName), before anything is written.
    fn check_user_name(&self, user_name: &str) -> Result<(), ScimError> {
        self.users
            .entries()
            .check_user_name(self.users.user_name_attribute(), user_name)
            .map_err(ScimError::InvalidValue)
    }

    async fn user_name_taken(
        &self,
        user_name: &str,
        except_dn: Option<&str>,
    ) -> Result<bool, ScimError> {
        let filter = format!(
            "(&{}{})",
            self.settings.user_filter,
            equals(self.users.user_name_attribute(), user_name)
        );
        let found = self
            .directory
            .search_entries(
                &self.settings.users_base,
                SearchScope::Subtree,
                &filter,
                &["1.1"],
                10,
            )
            .await
            .map_err(|e| self.directory_failure(e))?;
        Ok(found
            .iter()
            .any(|e| except_dn.is_none_or(|dn| !same_dn(dn, &e.dn))))
    }

    /// Puts the manager's DN into `w` (an id that names no user is refused).
    async fn resolve_manager(&self, w: &mut UserWrite) -> Result<(), ScimError> {
        if let Some(id) = w.manager_id.clone().filter(|s| !s.is_empty()) {
            let found = self.dns_of(std::slice::from_ref(&id), false).await?;
            let key = uuid::Uuid::parse_str(&id)
                .map(|u| u.hyphenated().to_string())
                .unwrap_or_default();
            match found.get(&key) {
                Some((dn, _)) => {
                    w.attrs.insert("manager".into(), vec![dn.clone()]);
                }
                None => {
                    return Err(ScimError::InvalidValue(format!(
                        "manager \"{}\" is not the id of a User; give the manager's id as returned by GET /Users",
                        clip(&id)
                    )));
                }
            }
        }
        Ok(())
    }

    fn check_password(&self, password: &Secret, user_name: &str) -> Result<(), ScimError> {
        if self.settings.check_password_rules {
            self.account
                .check_rules(password, &[user_name])
                .map_err(from_account)?;
        }
        Ok(())
    }

    async fn audit_ready(&self) -> Result<(), ScimError> {
        self.audit
            .ping()
            .await
            .map_err(|e| from_account(AccountError::AuditUnavailable(e)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        caller: &Caller,
        action: Action,
        kind: Kind,
        target: &str,
        id: Option<String>,
        attributes: Vec<String>,
        password: &'static str,
        active: Option<bool>,
        result: &Result<(), &ScimError>,
    ) {
        let outcome = match result {
            Ok(()) => Outcome::Success,
            Err(e) if e.status() >= 500 => Outcome::Failed(e.code()),
            Err(e) => Outcome::Refused(e.code()),
        };
        let _ = self
            .audit
            .record(AuditEvent {
                actor: caller.name.clone(),
                action,
                target: Some(target.to_owned()),
                outcome,
                detail: Some(Detail::Scim {
                    resource_type: kind.as_str(),
                    id,
                    attributes,
                    password,
                    active,
                }),
                request_id: caller.request_id.clone(),
            })
            .await;
    }

    /// The audit record of a Group write (no attributes or password to report).
    async fn record_group<T>(
        &self,
        caller: &Caller,
        action: Action,
        target: &str,
        id: Option<String>,
        result: &Result<T, ScimError>,
    ) {
        self.record(
            caller,
            action,
            Kind::Group,
            target,
            id,
            Vec::new(),
            "none",
            None,
            &result.as_ref().map(|_| ()),
        )
        .await;
    }

    /// `POST /Users`.
    pub async fn create_user(&self, caller: &Caller, body: &Value) -> Result<Served, ScimError> {
        let mut w = self.users.parse(body)?;
        let user_name = w.user_name.clone();
        let active = w.active;
        let has_password = w.password.is_some();
        let announced = self.audit.announce();
        let result = self.try_create_user(caller, &mut w).await;
        let attrs: Vec<String> = w.attrs.keys().cloned().collect();
        let (id, password) = match &result {
            Ok(s) => (
                s.resource
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                if has_password { "set" } else { "none" },
            ),
            Err(_) => (None, if has_password { "refused" } else { "none" }),
        };
        drop(announced);
        self.record(
            caller,
            Action::ScimCreate,
            Kind::User,
            &user_name,
            id,
            attrs,
            password,
            active,
            &result.as_ref().map(|_| ()),
        )
        .await;
        result
    }

    async fn try_create_user(
        &self,
        caller: &Caller,
        w: &mut UserWrite,
    ) -> Result<Served, ScimError> {
        self.check_user_name(&w.user_name)?;
        if self.user_name_taken(&w.user_name, None).await? {
            return Err(ScimError::Uniqueness(format!(
                "userName \"{}\" is already taken (filter=userName eq \"{}\" finds that user)",
                clip(&w.user_name),
                clip(&w.user_name)
            )));
        }
        self.resolve_manager(w).await?;
        if let Some(p) = &w.password {
            self.check_password(p, &w.user_name)?;
        }
        let (dn, attrs) = self.users.new_entry(w, &self.settings.users_container);
        self.check_new_dn(&w.user_name, &dn).await?;
        self.audit_ready().await?;
        self.directory
            .add_entry(&dn, &attrs)
            .await
            .map_err(|e| self.directory_failure(e))?;
        if let Some(password) = &w.password
            && let Err(e) = self
                .account
                .push_password(&dn, password, w.must_change.unwrap_or(false), false)
                .await
        {
            // The entry is new: take it away again rather than leave a user without the
            // password the client believes it set.
            self.remove_new_user(&dn).await;
            return Err(from_account(e));
        }
        // A password pushed with `mustChange` already carries it.
        let mut state = self.users.state_edit(None, w);
        if w.password.is_some() {
            state.must_change = None;
        }
        if !state.is_empty()
            && let Err(e) = self
                .account
                .set_provisioned_state(
                    &caller.actor(),
                    &w.user_name,
                    &dn,
                    &self.users.new_entry_state(),
                    state,
                )
                .await
        {
            self.remove_new_user(&dn).await;
            return Err(from_account(e));
        }
        if w.password.is_none() && w.active != Some(false) {
            // Best effort: the account exists either way, and the link can be sent
            // again by resetting the password.
            match self.account.send_welcome_link(&w.user_name, &dn).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(user.dn = %dn, error = %e, "could not send a first-password link")
                }
            }
        }
        let entry = self.user_by_dn(&dn).await?;
        self.serve_user(&entry, &Shape::default()).await
    }

    /// Takes away an entry this request added, because the rest of it failed.
    async fn remove_new_user(&self, dn: &str) {
        if let Err(undo) = self.directory.delete_entry(dn, None).await {
            tracing::error!(user.dn = %dn, error = %undo, "could not remove a new user after the rest of its creation failed");
        }
    }

    /// `PUT /Users/{id}`: replaces every attribute the mapping manages; the password only
    /// when one is sent.
    pub async fn replace_user(
        &self,
        caller: &Caller,
        id: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> Result<Served, ScimError> {
        let announced = self.audit.announce();
        let result = async {
            let carries_password = body
                .as_object()
                .is_some_and(|o| get_ci(o, "password").is_some());
            let (current, stored) = self.user_entry_for_write(id, carries_password).await?;
            check_version(self.users.version(&current), if_match)?;
            let w = self.users.parse(body)?;
            self.update_user(caller, current, stored, w, if_match.is_some())
                .await
        }
        .await;
        drop(announced);
        self.record_update(caller, Action::ScimReplace, id, &result)
            .await;
        result.map(|(served, _)| served)
    }

    /// `PATCH /Users/{id}` (RFC 7644 §3.5.2), applied to the resource as it is now and
    /// written as one change. `minimal`: the client asked for nothing back (no
    /// `attributes` or `excludedAttributes`); a PATCH that only sets the password (an
    /// identity provider's push) is then answered without reading the entry back
    /// (`Ok(None)`, a 204), and costs one search and the password change.
    pub async fn patch_user(
        &self,
        caller: &Caller,
        id: &str,
        patch: &PatchRequest,
        if_match: Option<&str>,
        minimal: bool,
    ) -> Result<Option<Served>, ScimError> {
        // Identity providers push passwords from many connections at once: the records
        // of concurrent pushes share one synced commit.
        let announced = self.audit.announce();
        if minimal && let Some(password) = patch.password_only() {
            let result = self.push_password(id, password, if_match).await;
            let (password, target) = match &result {
                Ok((note, name)) => (*note, name.clone()),
                Err(_) => ("none", id.to_owned()),
            };
            drop(announced);
            self.record(
                caller,
                Action::ScimPatch,
                Kind::User,
                &target,
                Some(id.to_owned()),
                Vec::new(),
                password,
                None,
                &result.as_ref().map(|_| ()),
            )
            .await;
            return result.map(|_| None);
        }
        let result = async {
            let (current, stored) = self
                .user_entry_for_write(id, mentions(patch, "password"))
                .await?;
            check_version(self.users.version(&current), if_match)?;
            let extras = self
                .users_extras(std::slice::from_ref(&current), &Shape::default())
                .await?
                .pop()
                .unwrap_or_default();
            let mut resource = self.users.to_resource(&current, &extras);
            let outcome = apply_user_patch(&mut resource, patch, self.discovery.user_schema())?;
            let mut w = self.users.parse(&resource)?;
            w.password = outcome.password;
            // A manager DN that names no user lockbridge serves is not in the resource;
            // a PATCH that does not touch the manager must not clear it.
            if extras.manager_id.is_none() && current.has("manager") && !mentions(patch, "manager")
            {
                w.attrs
                    .insert("manager".into(), current.all("manager").to_vec());
            }
            self.update_user(caller, current, stored, w, if_match.is_some())
                .await
        }
        .await;
        drop(announced);
        self.record_update(caller, Action::ScimPatch, id, &result)
            .await;
        result.map(|(served, _)| Some(served))
    }

    /// A PATCH that only sets the password: the entry (with its stored password) in one
    /// search, the checks every write gets, then the password unless it is the current
    /// one. Returns what happened to the password and the user's name, for the audit.
    async fn push_password(
        &self,
        id: &str,
        password: Secret,
        if_match: Option<&str>,
    ) -> Result<(&'static str, String), ScimError> {
        // An If-Match compares versions, which the directory alone knows for certain.
        let copy = self.followed.as_ref().filter(|_| if_match.is_none());
        if let Some(copy) = copy
            && let Ok(uuid) = uuid::Uuid::parse_str(id)
            && let Some((entry, stored)) = copy.get(&uuid)
        {
            metrics::counter!("lockbridge_password_push_reads_total", "from" => "copy")
                .increment(1);
            match self
                .push_password_to(id, entry, Some(stored), &password, None, true)
                .await
            {
                // The copy may lag a change made outside lockbridge by a moment: an
                // unchanged password, or one the directory refused (a history check
                // against a password the copy has not seen yet), is decided again on
                // what the directory holds now.
                Ok(Pushed::Current(_)) | Err(PushFailure::Refused(_)) => {}
                Ok(Pushed::Set(name)) => return Ok(("set", name)),
                Err(PushFailure::Other(e)) => return Err(e),
            }
        }
        metrics::counter!("lockbridge_password_push_reads_total", "from" => "directory")
            .increment(1);
        let (current, stored) = self
            .user_entry_with(id, true, &self.users.password_push_attributes())
            .await?;
        match self
            .push_password_to(id, current, stored, &password, if_match, false)
            .await
        {
            Ok(Pushed::Set(name)) => Ok(("set", name)),
            Ok(Pushed::Current(name)) => Ok(("unchanged", name)),
            Err(PushFailure::Refused(e) | PushFailure::Other(e)) => Err(e),
        }
    }

    /// The checks every write gets, then the password unless it is the current one.
    /// `from_copy`: the entry came from the followed copy, so a refusal by the directory
    /// is [`PushFailure::Refused`] (a fresh read may explain it).
    async fn push_password_to(
        &self,
        id: &str,
        current: Entry,
        stored: Option<StoredPassword>,
        password: &Secret,
        if_match: Option<&str>,
        from_copy: bool,
    ) -> Result<Pushed, PushFailure> {
        let name = current
            .first(self.users.user_name_attribute())
            .unwrap_or(id)
            .to_owned();
        check_version(self.users.version(&current), if_match)?;
        self.check_writable_user(&current).await?;
        self.check_password(password, &name)?;
        let is_current = match &stored {
            Some(stored) => stored
                .matches(password)
                .await
                .map_err(|e| self.directory_failure(e))?,
            None => None,
        };
        if is_current == Some(true) {
            // Okta pushes the current password at every sign-in: change nothing.
            return Ok(Pushed::Current(name));
        }
        self.audit_ready().await?;
        // The followed copy must not serve this user until the directory reports the write.
        let followed = self.followed.as_ref().zip(uuid::Uuid::parse_str(id).ok());
        if let Some((copy, uuid)) = &followed {
            copy.expect(uuid);
        }
        let written = self
            .account
            .set_pushed_password(
                &current.dn,
                password,
                false,
                self.users.sign_in_state(&current).blocked,
            )
            .await;
        if let Some((copy, uuid)) = &followed {
            match &written {
                Ok(()) => copy.answered(uuid),
                Err(_) => copy.cancel(uuid),
            }
        }
        match written {
            Ok(()) => Ok(Pushed::Set(name)),
            Err(e @ AccountError::DirectoryRefused(_)) if from_copy => {
                Err(PushFailure::Refused(from_account(e)))
            }
            Err(e) => Err(PushFailure::Other(from_account(e))),
        }
    }

    async fn record_update(
        &self,
        caller: &Caller,
        action: Action,
        id: &str,
        result: &Result<(Served, UpdateSummary), ScimError>,
    ) {
        let (attrs, password, active, target) = match result {
            Ok((served, s)) => (
                s.attributes.clone(),
                s.password,
                s.active,
                served
                    .resource
                    .get("userName")
                    .and_then(Value::as_str)
                    .unwrap_or(id)
                    .to_owned(),
            ),
            Err(_) => (Vec::new(), "none", None, id.to_owned()),
        };
        self.record(
            caller,
            action,
            Kind::User,
            &target,
            Some(id.to_owned()),
            attrs,
            password,
            active,
            &result.as_ref().map(|_| ()),
        )
        .await;
    }

    /// `stored`: the current password, when read with `current` (a password in `w` is
    /// compared with it; without it, the directory is asked).
    async fn update_user(
        &self,
        caller: &Caller,
        current: Entry,
        stored: Option<StoredPassword>,
        mut w: UserWrite,
        asserted: bool,
    ) -> Result<(Served, UpdateSummary), ScimError> {
        self.check_writable_user(&current).await?;
        let new_rdn = self.users.rdn_change(&current, &w);
        if let Some(rdn) = &new_rdn {
            self.check_user_name(&w.user_name)?;
            if self
                .user_name_taken(&w.user_name, Some(&current.dn))
                .await?
            {
                return Err(ScimError::Uniqueness(format!(
                    "userName \"{}\" is already taken by another user",
                    clip(&w.user_name)
                )));
            }
            self.check_new_dn(&w.user_name, &renamed_dn(&current.dn, rdn))
                .await?;
        }
        self.resolve_manager(&mut w).await?;
        let mut password = w.password.take();
        let mut password_note = "none";
        if let Some(p) = &password {
            self.check_password(p, &w.user_name)?;
            let is_current = match &stored {
                Some(stored) => stored
                    .matches(p)
                    .await
                    .map_err(|e| self.directory_failure(e))?,
                None => self
                    .account
                    .is_current_password(&current.dn, p)
                    .await
                    .map_err(from_account)?,
            };
            if is_current == Some(true) {
                // Okta pushes the current password at every sign-in: change nothing.
                password = None;
                password_note = "unchanged";
            }
        }
        let changes = self.users.changes(&current, &w);
        let mut state = self.users.state_edit(Some(&current), &w);
        if password.is_some() {
            // The password is written with `mustChange` (or without it, which clears it).
            state.must_change = None;
        }
        let summary = UpdateSummary {
            attributes: changed_names(&changes),
            password: password_note,
            active: w.active,
        };
        if changes.is_empty() && new_rdn.is_none() && password.is_none() && state.is_empty() {
            let served = self.serve_user(&current, &Shape::default()).await?;
            return Ok((served, summary));
        }
        self.audit_ready().await?;
        let dn = self
            .rename_and_modify(&current, new_rdn.as_deref(), &changes, asserted)
            .await?;
        // Whatever follows fails: the attributes and the name go back as they were.
        let undo_attributes = async |dn: &str| {
            let undo = inverse(&changes, &current);
            if !undo.is_empty()
                && let Err(u) = self.directory.modify_entry(dn, &undo, None).await
            {
                tracing::error!(user.dn = %dn, error = %u, "could not undo the attribute change after the rest of the request failed");
            }
            self.undo_rename(&current, dn, new_rdn.is_some()).await;
        };
        let actor = caller.actor();
        // Whether sign-in is blocked once this request is done: a password written after
        // the block must not lift it.
        let blocked_after = w
            .active
            .map(|active| !active)
            .unwrap_or_else(|| self.users.sign_in_state(&current).blocked);
        let state_done = if state.is_empty() {
            ProvisionedState::default()
        } else {
            let now = self.users.sign_in_state(&current);
            match self
                .account
                .set_provisioned_state(&actor, &w.user_name, &dn, &now, state)
                .await
            {
                Ok(done) => done,
                Err(e) => {
                    undo_attributes(&dn).await;
                    return Err(from_account(e));
                }
            }
        };
        let mut summary = summary;
        if let Some(p) = &password {
            match self
                .account
                .set_pushed_password(&dn, p, w.must_change.unwrap_or(false), blocked_after)
                .await
            {
                Ok(()) => summary.password = "set",
                Err(e) => {
                    self.account
                        .undo_provisioned_state(&actor, &w.user_name, &dn, state_done)
                        .await;
                    undo_attributes(&dn).await;
                    return Err(from_account(e));
                }
            }
        }
        if new_rdn.is_some() {
            // Without the refint overlay, groups would keep pointing at the old DN.
            self.rewrite_memberships(&current.dn, Some(&dn)).await?;
        }
        let entry = self.user_by_dn(&dn).await?;
        let served = self.serve_user(&entry, &Shape::default()).await?;
        Ok((served, summary))
    }

    /// Renames `current` to `new_rdn` (when given), then applies `changes`, and returns
    /// the entry's DN after both. With `asserted` (If-Match), the first write carries the
    /// assertion on the entry's version (`entryCSN`); a failed modify undoes the rename.
    async fn rename_and_modify(
        &self,
        current: &Entry,
        new_rdn: Option<&str>,
        changes: &[Change],
        asserted: bool,
    ) -> Result<String, ScimError> {
        let version = self.users.entries();
        let assertion = asserted
            .then(|| {
                version
                    .version(current)
                    .map(|v| equals(version.version_attribute(), v))
            })
            .flatten();
        let mut dn = current.dn.clone();
        if let Some(rdn) = new_rdn {
            // A renamed group is known by its new DN (users' memberOf follows it).
            self.user_groups.forget_groups();
            dn = self
                .directory
                .rename_entry(&current.dn, rdn, assertion.as_deref())
                .await
                .map_err(|e| self.directory_failure(e))?;
        }
        // After a rename the entry's CSN has moved on: the rename carried the assertion.
        let modify_assertion = if new_rdn.is_some() {
            None
        } else {
            assertion.as_deref()
        };
        if changes.is_empty() {
            return Ok(dn);
        }
        if let Err(e) = self
            .directory
            .modify_entry(&dn, changes, modify_assertion)
            .await
        {
            self.undo_rename(current, &dn, new_rdn.is_some()).await;
            return Err(self.directory_failure(e));
        }
        Ok(dn)
    }

    async fn undo_rename(&self, current: &Entry, dn: &str, renamed: bool) {
        if !renamed {
            return;
        }
        let Some(old_rdn) = current.dn.split(',').next() else {
            return;
        };
        if let Err(e) = self.directory.rename_entry(dn, old_rdn, None).await {
            tracing::error!(entry.dn = %dn, error = %e, "could not undo a rename after a failed change");
        }
    }

    /// `DELETE /Users/{id}`: removes the user from every group, then deletes the entry
    /// (or, configured so, only locks it).
    pub async fn delete_user(
        &self,
        caller: &Caller,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(), ScimError> {
        let mut target = id.to_owned();
        let result = async {
            let current = self.user_entry(id).await?;
            if let Some(name) = current.first(self.users.user_name_attribute()) {
                target = name.to_owned();
            }
            self.check_writable_user(&current).await?;
            check_version(self.users.version(&current), if_match)?;
            self.audit_ready().await?;
            self.rewrite_memberships(&current.dn, None).await?;
            match self.settings.delete_mode {
                DeleteMode::Delete => self
                    .directory
                    .delete_entry(&current.dn, None)
                    .await
                    .map_err(|e| self.directory_failure(e)),
                DeleteMode::Deactivate => self
                    .account
                    .deactivate_provisioned(&caller.actor(), &target, &current.dn)
                    .await
                    .map_err(from_account),
            }
        }
        .await;
        self.record(
            caller,
            Action::ScimDelete,
            Kind::User,
            &target,
            Some(id.to_owned()),
            Vec::new(),
            "none",
            None,
            &result.as_ref().map(|_| ()),
        )
        .await;
        result
    }

    /// Every group that lists `dn` as a member: it is replaced by `new_dn` (a renamed
    /// user), or removed (`None`: a deleted user).
    async fn rewrite_memberships(&self, dn: &str, new_dn: Option<&str>) -> Result<(), ScimError> {
        let Some(base) = self.settings.groups_base.as_deref() else {
            return Ok(());
        };
        let filter = format!("(&{}{})", self.groups.object_filter(), equals("member", dn));
        let attrs = self.groups.read_attributes();
        let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
        let groups = self
            .directory
            .search_entries(base, SearchScope::Subtree, &filter, &attrs, 10_000)
            .await
            .map_err(|e| self.directory_failure(e))?;
        let add: Vec<String> = new_dn.into_iter().map(str::to_owned).collect();
        for g in groups {
            if self.account.is_protected_group(&g.dn) {
                // Only reachable with scim.allow_writes_to_administrators: an
                // administrator group is never edited over SCIM, even then.
                tracing::warn!(
                    group.dn = %g.dn,
                    user.dn = %dn,
                    "left a protected group's membership alone; update it in the directory"
                );
                continue;
            }
            let changes = self.groups.member_changes(&g, &add, &[dn.to_owned()], None);
            self.directory
                .modify_entry(&g.dn, &changes, None)
                .await
                .map_err(|e| self.directory_failure(e))?;
        }
        Ok(())
    }

    // ----- group writes -----------------------------------------------------------------

    /// Member ids → DNs; an id that names no user or group is refused when adding.
    async fn member_dns(&self, ids: &[String], strict: bool) -> Result<Vec<String>, ScimError> {
        let found = self.dns_of(ids, true).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let key = uuid::Uuid::parse_str(id)
                .map(|u| u.hyphenated().to_string())
                .unwrap_or_default();
            match found.get(&key) {
                Some((dn, _)) => out.push(dn.clone()),
                None if strict => {
                    return Err(ScimError::InvalidValue(format!(
                        "member \"{}\" is not the id of a User or Group",
                        clip(id)
                    )));
                }
                None => {}
            }
        }
        Ok(out)
    }

    async fn group_name_taken(
        &self,
        name: &str,
        except_dn: Option<&str>,
    ) -> Result<bool, ScimError> {
        let base = self.groups_base()?;
        let filter = format!("(&{}{})", self.groups.object_filter(), equals("cn", name));
        let found = self
            .directory
            .search_entries(base, SearchScope::Subtree, &filter, &["1.1"], 10)
            .await
            .map_err(|e| self.directory_failure(e))?;
        Ok(found
            .iter()
            .any(|e| except_dn.is_none_or(|dn| !same_dn(dn, &e.dn))))
    }

    /// `POST /Groups`.
    /// `POST /Groups`; the answer shaped by `shape` (members are resolved to ids only when
    /// it wants them).
    pub async fn create_group(
        &self,
        caller: &Caller,
        body: &Value,
        shape: &Shape,
    ) -> Result<Served, ScimError> {
        let result = async {
            self.groups_base()?;
            let w = self.groups.parse(body)?;
            if self.group_name_taken(&w.display_name, None).await? {
                return Err(ScimError::Uniqueness(format!(
                    "a group named \"{}\" already exists",
                    clip(&w.display_name)
                )));
            }
            let members = self.member_dns(&w.member_ids, true).await?;
            let (dn, attrs) = self
                .groups
                .new_entry(&w, &members, &self.settings.groups_container);
            self.check_new_dn(&w.display_name, &dn).await?;
            self.audit_ready().await?;
            self.directory
                .add_entry(&dn, &attrs)
                .await
                .map_err(|e| self.directory_failure(e))?;
            // The DN may have been a group before, or remembered as none.
            self.user_groups.forget_groups();
            let entry = self.group_by_dn(&dn).await?;
            self.serve_group(&entry, shape).await
        }
        .await;
        let name = body
            .get("displayName")
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned();
        let id = result.as_ref().ok().and_then(|s| {
            s.resource
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        self.record_group(caller, Action::ScimCreate, &name, id, &result)
            .await;
        result
    }

    /// `PUT /Groups/{id}`; the answer shaped by `shape`.
    pub async fn replace_group(
        &self,
        caller: &Caller,
        id: &str,
        body: &Value,
        if_match: Option<&str>,
        shape: &Shape,
    ) -> Result<Served, ScimError> {
        let result = async {
            let current = self.group_entry(id).await?;
            self.check_writable_group(&current).await?;
            check_version(self.groups.version(&current), if_match)?;
            let w = self.groups.parse(body)?;
            let members = self.member_dns(&w.member_ids, true).await?;
            let mut changes = self.groups.changes(&current, &w);
            changes.extend(
                self.groups
                    .member_changes(&current, &[], &[], Some(&members)),
            );
            let dn = self
                .write_group(current, Some(w.display_name), changes, if_match.is_some())
                .await?;
            let entry = self.group_by_dn(&dn).await?;
            self.serve_group(&entry, shape).await
        }
        .await;
        self.record_group(
            caller,
            Action::ScimReplace,
            id,
            Some(id.to_owned()),
            &result,
        )
        .await;
        result
    }

    /// `PATCH /Groups/{id}`: membership changes become value adds and deletes in one modify.
    /// A PATCH that changes only members and asks for nothing back (`minimal`) is answered
    /// without reading the group back (`None`: 204): on a large group, resolving every
    /// member to an id for an answer the client ignores would cost more than the write.
    /// Otherwise the group is read back and shaped by `shape`.
    pub async fn patch_group(
        &self,
        caller: &Caller,
        id: &str,
        patch: &PatchRequest,
        if_match: Option<&str>,
        shape: &Shape,
        minimal: bool,
    ) -> Result<Option<Served>, ScimError> {
        let result = async {
            let current = self.group_entry(id).await?;
            self.check_writable_group(&current).await?;
            check_version(self.groups.version(&current), if_match)?;
            // Member operations are read from the request alone: resolving every member
            // to an id (one search per 50) would be wasted on a large group.
            let resource = self
                .groups
                .to_resource(&current, &[], &self.settings.base_url);
            let p = parse_group_patch(patch, &resource, self.discovery.group_schema())?;
            let members_only = p.display_name.is_none() && p.external_id.is_none();
            let add = self.member_dns(&p.add_members, true).await?;
            let remove = self.member_dns(&p.remove_members, false).await?;
            let replace = match &p.replace_members {
                Some(ids) => Some(self.member_dns(ids, true).await?),
                None => None,
            };
            let mut changes = self.groups.patch_changes(&current, &p);
            changes.extend(
                self.groups
                    .member_changes(&current, &add, &remove, replace.as_deref()),
            );
            let dn = self
                .write_group(current, p.display_name.clone(), changes, if_match.is_some())
                .await?;
            if minimal && members_only {
                return Ok(None);
            }
            let entry = self.group_by_dn(&dn).await?;
            self.serve_group(&entry, shape).await.map(Some)
        }
        .await;
        self.record_group(caller, Action::ScimPatch, id, Some(id.to_owned()), &result)
            .await;
        result
    }

    /// Writes a group's changes (renaming it when `display_name` changes its RDN) and
    /// returns its DN after the write.
    async fn write_group(
        &self,
        current: Entry,
        display_name: Option<String>,
        changes: Vec<Change>,
        asserted: bool,
    ) -> Result<String, ScimError> {
        let new_rdn = display_name
            .filter(|n| current.first("cn").is_none_or(|cn| cn != n))
            .map(|n| format!("cn={}", escape_rdn_value(&n)));
        if let Some(rdn) = &new_rdn {
            let name = rdn.trim_start_matches("cn=");
            if self.group_name_taken(name, Some(&current.dn)).await? {
                return Err(ScimError::Uniqueness(
                    "a group with this displayName already exists".into(),
                ));
            }
            self.check_new_dn(name, &renamed_dn(&current.dn, rdn))
                .await?;
        }
        self.audit_ready().await?;
        // cn changes with the rename; the modify must not repeat it.
        let changes: Vec<Change> = if new_rdn.is_some() {
            changes
                .into_iter()
                .filter(|c| !change_attr(c).eq_ignore_ascii_case("cn"))
                .collect()
        } else {
            changes
        };
        self.rename_and_modify(&current, new_rdn.as_deref(), &changes, asserted)
            .await
    }

    /// `DELETE /Groups/{id}`.
    pub async fn delete_group(
        &self,
        caller: &Caller,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(), ScimError> {
        let result = async {
            let current = self.group_entry(id).await?;
            self.check_writable_group(&current).await?;
            check_version(self.groups.version(&current), if_match)?;
            self.audit_ready().await?;
            self.user_groups.forget_groups();
            self.directory
                .delete_entry(&current.dn, None)
                .await
                .map_err(|e| self.directory_failure(e))
        }
        .await;
        self.record_group(caller, Action::ScimDelete, id, Some(id.to_owned()), &result)
            .await;
        result
    }
}

fn user_not_found(id: &str) -> ScimError {
    ScimError::NotFound(format!(
        "no User has the id \"{}\"; check the id, or find the user with a filter on userName",
        clip(id)
    ))
}

/// Whether any operation of `patch` names `attribute` in its path or its value's keys.
fn mentions(patch: &PatchRequest, attribute: &str) -> bool {
    let needle = attribute.to_ascii_lowercase();
    patch.operations.iter().any(|op| {
        op.path
            .as_deref()
            .is_some_and(|p| p.to_ascii_lowercase().contains(&needle))
            || op.value.as_ref().is_some_and(|v| match v {
                Value::Object(o) => o.iter().any(|(k, v)| {
                    k.to_ascii_lowercase().contains(&needle)
                        || v.as_object().is_some_and(|inner| {
                            inner
                                .keys()
                                .any(|k| k.to_ascii_lowercase().contains(&needle))
                        })
                }),
                _ => false,
            })
    })
}

/// What an update did, for the audit record.
#[derive(Debug, Clone)]
struct UpdateSummary {
    attributes: Vec<String>,
    password: &'static str,
    active: Option<bool>,
}

fn change_attr(c: &Change) -> &str {
    match c {
        Change::Add(a, _) | Change::Delete(a, _) | Change::Replace(a, _) => a,
    }
}

fn changed_names(changes: &[Change]) -> Vec<String> {
    let mut names: Vec<String> = changes.iter().map(|c| change_attr(c).to_owned()).collect();
    names.sort();
    names.dedup();
    names
}

/// The changes that put back what `current` held for every attribute `changes` touched.
fn inverse(changes: &[Change], current: &Entry) -> Vec<Change> {
    changed_names(changes)
        .into_iter()
        .map(|a| {
            let values = current.all(&a).to_vec();
            Change::Replace(a, values)
        })
        .collect()
}

/// RFC 7232 If-Match against the entry's version: `*` matches any existing resource.
fn check_version(current: Option<String>, if_match: Option<&str>) -> Result<(), ScimError> {
    let Some(wanted) = if_match else {
        return Ok(());
    };
    let matches = wanted.split(',').map(str::trim).any(|tag| {
        tag == "*"
            || current
                .as_deref()
                .is_some_and(|c| strip_weak(tag) == strip_weak(c))
    });
    if matches {
        Ok(())
    } else {
        Err(ScimError::PreconditionFailed(
            "the resource has changed since the version in If-Match; GET it again and retry with the new ETag".into(),
        ))
    }
}

fn strip_weak(tag: &str) -> &str {
    tag.trim_start_matches("W/").trim_matches('"')
}

/// Whether an `If-None-Match` header names the current version (RFC 7232 §3.2).
pub fn none_match(current: Option<&str>, if_none_match: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || current.is_some_and(|c| strip_weak(tag) == strip_weak(c)))
}

fn from_account(e: AccountError) -> ScimError {
    match e {
        AccountError::UnknownUser(_) => ScimError::NotFound(USER_GONE.into()),
        AccountError::InvalidRequest(text) => ScimError::InvalidValue(text),
        AccountError::PolicyViolation(violations) => ScimError::InvalidValue(format!(
            "the password does not meet the password rules: {}",
            violations
                .iter()
                .map(|v| format!("the password {v}"))
                .collect::<Vec<_>>()
                .join("; ")
        )),
        AccountError::DirectoryRefused(r) => ScimError::InvalidValue(format!(
            "the directory's password policy refused the password ({}): {r}; nothing was changed",
            crate::account::rejection_code(&r)
        )),
        AccountError::DirectoryUnavailable {
            cause,
            retry_after_secs,
            busy,
        } => {
            tracing::warn!(cause = %cause, busy, "directory unavailable");
            ScimError::Unavailable {
                detail: crate::account::unavailable_detail(busy).into(),
                retry_after_secs,
            }
        }
        AccountError::OutcomeUnknown { cause, retry_after_secs } => {
            tracing::error!(cause = %cause, "directory write outcome unknown");
            ScimError::OutcomeUnknown {
                detail: "the directory stopped answering after a change was sent; read the resource to see whether it was applied".into(),
                retry_after_secs,
            }
        }
        AccountError::AuditUnavailable(cause) => {
            tracing::error!(cause = %cause, "audit log unavailable");
            ScimError::Unavailable {
                detail: "lockbridge's audit log cannot be written, so nothing was changed".into(),
                retry_after_secs: 5,
            }
        }
        AccountError::DirectoryAccessDenied => ScimError::Internal(
            "the directory denied lockbridge's service account the right to do this; operators: check the directory's ACLs".into(),
        ),
        AccountError::AccountLocked => ScimError::InvalidValue("the user's account is locked in the directory".into()),
        e @ AccountError::ProtectedTarget { .. } => {
            ScimError::Protected(format!("{e}; nothing was changed"))
        }
        other => ScimError::Internal(other.to_string()),
    }
}

/// At most 64 characters of client input, for messages.
fn clip(s: &str) -> String {
    let clipped: String = s.chars().take(64).collect();
    clipped.replace(|c: char| c.is_control(), "?")
}

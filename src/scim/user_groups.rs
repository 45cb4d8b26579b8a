//! The groups a user is a direct member of: the User's `groups`, returned by default
//! (RFC 7643 §4.1.2), so every read of users needs them. Two ways, chosen by looking at
//! the directory:
//!
//! - where the directory keeps `memberOf` on members (OpenLDAP's memberof overlay,
//!   389-ds's MemberOf plugin, Active Directory), the user's own entry names its groups;
//!   their ids and names come from a short-lived cache of groups by DN, and one batched
//!   search for the DNs it does not hold. A page of users then costs no search of its own
//!   once the cache is warm;
//! - otherwise, one search per page of users asks which groups list them (the service's
//!   `groups_of`).
//!
//! Detection reads one group that has a member, then that member's `memberOf`: the group
//! must be there. With no such group yet the answer is unknown; the search is used and
//! the question asked again after [`RETRY_DETECTION`].

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::resource::GroupRef;
use crate::directory::escape::equals;
use crate::directory::{Directory, DirectoryError, Entry, SearchScope, dn_key};

/// The attribute the directory keeps on members.
pub const MEMBER_OF: &str = "memberOf";

/// How long a group's id and name are trusted without asking the directory again: a
/// group deleted and re-created under the same DN elsewhere than through lockbridge may
/// show its old id for this long. lockbridge's own group changes clear the cache.
const GROUP_TTL: Duration = Duration::from_secs(30);

/// While the directory cannot tell (no group has a member yet), how often to look again.
pub const RETRY_DETECTION: Duration = Duration::from_secs(60);

/// Groups whose first member detection looks at.
const DETECTION_SAMPLE: usize = 5;

/// Groups looked up by DN in one search.
const BATCH: usize = 50;

/// At most this many groups are remembered; past it the cache starts over.
const MAX_CACHED: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detection {
    /// Not known; the instant of the last look, if any.
    Unknown(Option<Instant>),
    /// The directory keeps `memberOf`.
    MemberOf,
    /// It does not: search the groups.
    Search,
}

/// Where groups are and what they look like.
#[derive(Debug, Clone)]
pub struct GroupsLocation {
    /// The subtree holding the groups served.
    pub base: String,
    /// The LDAP filter of a group entry (`(objectClass=groupOfNames)`).
    pub object_filter: String,
    /// How the directory names and identifies entries.
    pub entries: crate::directory::EntryVocabulary,
}

/// See the module documentation.
pub struct UserGroups {
    detection: Mutex<Detection>,
    /// [`dn_key`] of a group → when it was read, and the group (`None`: the DN is not a
    /// group under the base, e.g. a role group elsewhere).
    cache: Mutex<HashMap<String, (Instant, Option<GroupRef>)>>,
}

impl Default for UserGroups {
    fn default() -> Self {
        Self::new()
    }
}

impl UserGroups {
    pub fn new() -> Self {
        Self {
            detection: Mutex::new(Detection::Unknown(None)),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether users' `memberOf` can be used: asks the directory the first time, and again
    /// every [`RETRY_DETECTION`] while it cannot tell. A failure to ask counts as "no" for
    /// this call.
    pub async fn use_member_of(&self, directory: &Directory, groups: &GroupsLocation) -> bool {
        let state = *lock(&self.detection);
        match state {
            Detection::MemberOf => return true,
            Detection::Search => return false,
            Detection::Unknown(Some(at)) if at.elapsed() < RETRY_DETECTION => return false,
            Detection::Unknown(_) => {}
        }
        let found = detect(directory, groups).await;
        let next = match found {
            Ok(Some(true)) => Detection::MemberOf,
            Ok(Some(false)) => Detection::Search,
            Ok(None) => Detection::Unknown(Some(Instant::now())),
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell whether the directory keeps memberOf");
                Detection::Unknown(Some(Instant::now()))
            }
        };
        if next != state {
            match next {
                Detection::MemberOf => tracing::info!(
                    "SCIM: the directory keeps memberOf; a user's groups are read from it"
                ),
                Detection::Search => tracing::info!(
                    "SCIM: the directory does not keep memberOf; a user's groups are found by \
                     one search of the groups per page of users"
                ),
                Detection::Unknown(_) => {}
            }
        }
        *lock(&self.detection) = next;
        next == Detection::MemberOf
    }

    /// The groups of each of `users` from their `memberOf`, by [`dn_key`] of the user;
    /// DNs that are not groups under the base are left out.
    pub async fn from_member_of(
        &self,
        directory: &Directory,
        groups: &GroupsLocation,
        users: &[Entry],
    ) -> Result<HashMap<String, Vec<GroupRef>>, DirectoryError> {
        let base_key = dn_key(&groups.base);
        let under_base = |key: &str| key == base_key || key.ends_with(&format!(",{base_key}"));
        let mut missing: HashMap<String, String> = HashMap::new();
        {
            let cache = lock(&self.cache);
            for dn in users.iter().flat_map(|u| u.all(MEMBER_OF)) {
                let key = dn_key(dn);
                let fresh = cache
                    .get(&key)
                    .is_some_and(|(at, _)| at.elapsed() < GROUP_TTL);
                if !fresh && under_base(&key) {
                    missing.entry(key).or_insert_with(|| dn.clone());
                }
            }
        }
        if !missing.is_empty() {
            let found = self.read_groups(directory, groups, &missing).await?;
            let now = Instant::now();
            let mut cache = lock(&self.cache);
            if cache.len() + missing.len() > MAX_CACHED {
                cache.clear();
            }
            for key in missing.into_keys() {
                let group = found.get(&key).cloned();
                cache.insert(key, (now, group));
            }
        }
        let cache = lock(&self.cache);
        let mut out = HashMap::new();
        for user in users {
            let mut seen = HashSet::new();
            let list: Vec<GroupRef> = user
                .all(MEMBER_OF)
                .iter()
                .filter_map(|dn| cache.get(&dn_key(dn)).and_then(|(_, g)| g.clone()))
                .filter(|g| seen.insert(g.id.clone()))
                .collect();
            if !list.is_empty() {
                out.insert(dn_key(&user.dn), list);
            }
        }
        Ok(out)
    }

    /// Forget every group: after lockbridge renamed or deleted one.
    pub fn forget_groups(&self) {
        lock(&self.cache).clear();
    }

    /// The groups among `wanted` ([`dn_key`] → DN as written), by key.
    async fn read_groups(
        &self,
        directory: &Directory,
        groups: &GroupsLocation,
        wanted: &HashMap<String, String>,
    ) -> Result<HashMap<String, GroupRef>, DirectoryError> {
        let dns: Vec<&String> = wanted.values().collect();
        let mut out = HashMap::new();
        for chunk in dns.chunks(BATCH) {
            let any: String = chunk
                .iter()
                .map(|dn| equals(groups.entries.dn_attribute(), dn))
                .collect();
            let filter = format!("(&{}(|{any}))", groups.object_filter);
            let found = directory
                .search_entries(
                    &groups.base,
                    SearchScope::Subtree,
                    &filter,
                    &[groups.entries.id_attribute(), "cn"],
                    chunk.len() * 2,
                )
                .await?;
            for g in found {
                if let Some(id) = groups.entries.id(&g) {
                    out.insert(
                        dn_key(&g.dn),
                        GroupRef {
                            id: id.to_owned(),
                            display: g.first("cn").map(str::to_owned),
                        },
                    );
                }
            }
        }
        Ok(out)
    }
}

/// Looks at the first real member of a few groups: `Some(true)` when each lists its group
/// in `memberOf` (a directory where the overlay was enabled after the groups were made,
/// without filling `memberOf` in, fails this), `Some(false)` when one does not, `None`
/// when no group under the base has a member to look at.
async fn detect(
    directory: &Directory,
    groups: &GroupsLocation,
) -> Result<Option<bool>, DirectoryError> {
    let filter = format!("(&{}(member=*))", groups.object_filter);
    let sample = directory
        .search_some_entries(
            &groups.base,
            SearchScope::Subtree,
            &filter,
            &["member"],
            DETECTION_SAMPLE,
        )
        .await?;
    let mut seen = None;
    for group in sample {
        let group_key = dn_key(&group.dn);
        // The empty DN an empty groupOfNames holds is nobody.
        for member in group.all("member").iter().filter(|m| !m.trim().is_empty()) {
            let Some(entry) = directory.read_entry(member, &[MEMBER_OF]).await? else {
                continue;
            };
            if !entry.all(MEMBER_OF).iter().any(|g| dn_key(g) == group_key) {
                return Ok(Some(false));
            }
            seen = Some(true);
            break;
        }
    }
    Ok(seen)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data, still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

//! Who is a member of which group, kept current by the directory as the users' copy is
//! ([`super::synced`]): a user read from that copy gets its groups from here, without a
//! search.
//!
//! Why not copy the users' `memberOf`: OpenLDAP's memberof overlay changes it without
//! telling followers (its changes are not replicated, by design), so a copy of it would
//! go stale at the first membership change. The groups' `member` values are reported
//! like any other change.
//!
//! When it does not answer (see [`FollowedGroups::groups_of`]) the caller reads the
//! directory, as it would without a copy.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use ldap3::SearchEntry;
use tokio::sync::watch;

use super::controls::SyncChange;
use super::marks::Marks;
use super::synced::{Control, Sink, follow, spawn_follower};
use super::{Directory, dn_key};

/// The attribute of a group that lists its members.
const MEMBER: &str = "member";

struct Group {
    dn: Box<str>,
    /// The members' DNs, [`dn_key`] form.
    members: Box<[Box<str>]>,
}

impl Group {
    fn new(dn: &str, members: Box<[Box<str>]>) -> Self {
        Group {
            dn: dn.into(),
            members,
        }
    }
}

#[derive(Default)]
struct State {
    /// The first refresh is complete and the stream is open.
    live: bool,
    /// By `entryUUID`.
    groups: HashMap<[u8; 16], Group>,
    /// The groups listing a member, by the member's [`dn_key`].
    by_member: HashMap<Box<str>, Vec<[u8; 16]>>,
    /// The groups by their own DN's [`dn_key`].
    by_key: HashMap<String, [u8; 16]>,
    /// Groups lockbridge is writing or wrote whose report has not arrived.
    marks: Marks,
}

impl State {
    fn insert(&mut self, uuid: [u8; 16], group: Group) {
        self.remove(&uuid);
        for member in group.members.iter() {
            self.by_member.entry(member.clone()).or_default().push(uuid);
        }
        self.by_key.insert(dn_key(&group.dn), uuid);
        self.groups.insert(uuid, group);
    }

    fn remove(&mut self, uuid: &[u8; 16]) -> Option<Group> {
        let old = self.groups.remove(uuid)?;
        self.by_key.remove(&dn_key(&old.dn));
        for member in old.members.iter() {
            if let Some(groups) = self.by_member.get_mut(member) {
                groups.retain(|g| g != uuid);
                if groups.is_empty() {
                    self.by_member.remove(member);
                }
            }
        }
        Some(old)
    }
}

pub(crate) struct GroupsShared {
    state: RwLock<State>,
    control: Control,
}

impl GroupsShared {
    fn state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Before lockbridge writes the entry whose [`dn_key`] is `key` below the groups
    /// base: memberships are not answered until the directory has reported it. Only a
    /// group the copy holds, or a new entry (`adding`: it may be a new group), is
    /// marked: where users and groups share a subtree, a user's modification is not
    /// a group's.
    pub(crate) fn begin_write(&self, key: &str, adding: bool) {
        let mut state = self.state();
        if state.live && (adding || state.by_key.contains_key(key)) {
            state.marks.begin(key);
        }
    }

    /// The directory answered the write begun with [`Self::begin_write`].
    pub(crate) fn end_write(&self, key: &str) {
        self.state().marks.end(key, Instant::now());
    }
}

impl Sink for GroupsShared {
    fn what(&self) -> &'static str {
        "groups"
    }

    fn control(&self) -> &Control {
        &self.control
    }

    fn reset(&self) -> bool {
        let mut state = self.state();
        let live = state.live;
        *state = State::default();
        metrics::gauge!("lockbridge_directory_followed_groups").set(0.0);
        live
    }

    fn go_live(&self) {
        let mut state = self.state();
        if !state.live {
            state.live = true;
            tracing::info!(
                groups = state.groups.len(),
                "following the directory's changes to groups: users read from the copy get their groups from it"
            );
        }
    }

    fn report(&self, _: &Directory, uuid: [u8; 16], change: SyncChange, entry: SearchEntry) {
        let mut state = self.state();
        let old = state.remove(&uuid);
        if let Some(old) = &old
            && !state.marks.is_empty()
        {
            let key = dn_key(&old.dn);
            state.marks.reported(&key);
        }
        if change == SyncChange::Delete {
            metrics::gauge!("lockbridge_directory_followed_groups").set(state.groups.len() as f64);
            return;
        }
        let key = dn_key(&entry.dn);
        state.marks.reported(&key);
        let members = entry
            .attrs
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(MEMBER))
            .flat_map(|(_, values)| values)
            // An empty group holds one empty-DN member where the schema needs one.
            .filter(|dn| !dn.trim().is_empty())
            .map(|dn| dn_key(dn).into_boxed_str())
            .collect();
        state.insert(uuid, Group::new(&entry.dn, members));
        metrics::gauge!("lockbridge_directory_followed_groups").set(state.groups.len() as f64);
    }
}

/// The followed groups; cheap to clone. The follower stops when the last clone is dropped.
#[derive(Clone)]
pub struct FollowedGroups {
    shared: Arc<GroupsShared>,
    _alive: Arc<watch::Sender<()>>,
}

impl std::fmt::Debug for FollowedGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowedGroups").finish_non_exhaustive()
    }
}

impl FollowedGroups {
    /// The DNs of the groups that list `member_dn` as a member, as the directory last
    /// reported them; `None` when the copy cannot answer: not live, or lockbridge is
    /// writing a group, or wrote one and has not heard of it from the directory yet.
    pub fn groups_of(&self, member_dn: &str) -> Option<Vec<String>> {
        let now = Instant::now();
        {
            let state = self.shared.state.read().unwrap_or_else(|p| p.into_inner());
            if !state.live {
                return None;
            }
            if state.marks.is_empty() {
                return Some(Self::listing(&state, member_dn));
            }
            if state.marks.any_holds(now) {
                return None;
            }
        }
        // Every mark has settled: drop them. A write to a group the copy holds that no
        // report ever answered means the stream stopped delivering: follow again from a
        // full refresh. (A new entry never reported may not be a group at all.)
        let mut state = self.shared.state();
        let expired = state.marks.expire(now);
        if expired
            .unreported
            .iter()
            .any(|key| state.by_key.contains_key(key.as_str()))
        {
            tracing::warn!(
                "the directory did not report a group write lockbridge made: following its changes to groups again from a full refresh"
            );
            *state = State::default();
            self.shared.control.restart.notify_one();
            return None;
        }
        Some(Self::listing(&state, member_dn))
    }

    fn listing(state: &State, member_dn: &str) -> Vec<String> {
        state
            .by_member
            .get(dn_key(member_dn).as_str())
            .map(|uuids| {
                uuids
                    .iter()
                    .filter_map(|uuid| state.groups.get(uuid))
                    .map(|g| g.dn.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the copy is live (the first refresh complete, the stream open).
    pub fn is_live(&self) -> bool {
        self.shared
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .live
    }
}

impl Directory {
    /// Starts following the groups below `base` matching `filter` (their `member`
    /// values). Call only once [`Directory::follow_users`] has found the directory able to
    /// follow.
    pub fn follow_groups(&self, base: &str, filter: &str) -> FollowedGroups {
        let shared = Arc::new(GroupsShared {
            state: RwLock::new(State::default()),
            control: Control::default(),
        });
        let (alive, stopped) = watch::channel(());
        let _ = self.inner.followed_groups.set(Arc::downgrade(&shared));
        spawn_follower(
            "groups",
            follow(
                self.clone(),
                shared.clone(),
                base.to_owned(),
                filter.to_owned(),
                vec![MEMBER.to_owned()],
                stopped,
            ),
        );
        FollowedGroups {
            shared,
            _alive: Arc::new(alive),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(groups: &[([u8; 16], &str, &[&str])]) -> FollowedGroups {
        let mut state = State {
            live: true,
            ..State::default()
        };
        for (uuid, dn, members) in groups {
            state.insert(
                *uuid,
                Group::new(
                    dn,
                    members.iter().map(|m| dn_key(m).into_boxed_str()).collect(),
                ),
            );
        }
        let (alive, _) = watch::channel(());
        FollowedGroups {
            shared: Arc::new(GroupsShared {
                state: RwLock::new(state),
                control: Control::default(),
            }),
            _alive: Arc::new(alive),
        }
    }

    const ANN: &str = "uid=ann,ou=people,dc=example,dc=org";
    const BEN: &str = "uid=ben,ou=people,dc=example,dc=org";
    const STAFF: &str = "cn=staff,ou=groups,dc=example,dc=org";
    const PILOTS: &str = "cn=pilots,ou=groups,dc=example,dc=org";

    #[test]
    fn a_member_gets_every_group_listing_it_whatever_the_dn_spelling() {
        let groups = live(&[
            ([1; 16], STAFF, &[ANN, BEN]),
            ([2; 16], PILOTS, &["UID=Ann, OU=People,dc=example,dc=org"]),
        ]);
        let mut of_ann = groups.groups_of(ANN).expect("answered");
        of_ann.sort();
        assert_eq!(of_ann, [PILOTS, STAFF]);
        assert_eq!(groups.groups_of(BEN).expect("answered"), [STAFF]);
        assert!(
            groups
                .groups_of("uid=cy,ou=people,dc=example,dc=org")
                .expect("answered")
                .is_empty()
        );
        // A change replaces the group's members; a removal forgets them.
        groups.shared.state().insert(
            [1; 16],
            Group::new(STAFF, vec![dn_key(BEN).into_boxed_str()].into_boxed_slice()),
        );
        assert_eq!(groups.groups_of(ANN).expect("answered"), [PILOTS]);
        groups.shared.state().remove(&[2; 16]);
        assert!(groups.groups_of(ANN).expect("answered").is_empty());
        assert!(
            !groups
                .shared
                .state()
                .by_member
                .contains_key(dn_key(ANN).as_str())
        );
    }

    #[test]
    fn nothing_is_answered_while_a_group_write_awaits_its_report() {
        let groups = live(&[([1; 16], STAFF, &[ANN])]);
        let key = dn_key(STAFF);
        groups.shared.begin_write(&key, false);
        assert!(groups.groups_of(ANN).is_none(), "under way");
        groups.shared.end_write(&key);
        assert!(groups.groups_of(ANN).is_none(), "answered, not reported");
        groups.shared.state().marks.reported(&key);
        assert_eq!(groups.groups_of(ANN).expect("reported"), [STAFF]);
        // A modification of an entry that is not a group (users and groups in one
        // subtree) holds nothing; a new entry may be a group, and does.
        groups.shared.begin_write(&dn_key(ANN), false);
        assert!(groups.groups_of(ANN).is_some());
        groups.shared.begin_write(&dn_key(PILOTS), true);
        assert!(groups.groups_of(ANN).is_none());
    }

    #[test]
    fn a_copy_that_is_not_live_answers_nothing() {
        let groups = live(&[([1; 16], STAFF, &[ANN])]);
        groups.shared.state().live = false;
        assert!(groups.groups_of(ANN).is_none());
        assert!(!groups.is_live());
    }
}

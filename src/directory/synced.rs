//! A copy of the user entries a password push reads, kept current by the directory
//! itself: RFC 4533 content synchronisation in refreshAndPersist mode (OpenLDAP's
//! `syncprov` overlay), on one connection of its own.
//!
//! Why: an identity provider's password push must know the user's DN, whether lockbridge
//! may write it, its sign-in state and its stored password. Reading that with a search
//! doubles the directory operations of every push; the directory already tells a
//! follower every change, as it does its replicas.
//!
//! Why it can be trusted: an entry here changes when the directory says it changed, not
//! after some age. Two gaps remain and both are closed:
//! - an entry lockbridge itself writes is not served from just before the write until the
//!   directory's report of that write (its echo) has arrived ([`SyncedUsers::expect`]);
//! - a stream that stops delivering would go unnoticed, so an echo that has not come
//!   within [`ECHO_WAIT`] of the directory's answer to the write ends the copy: it is
//!   dropped and rebuilt from a new refresh. The wait starts at the answer, not before
//!   the write: a directory slow to write (a loaded disk) is not a stalled stream, and
//!   rebuilding the copy then would only add a refresh to its load.
//!
//! Until the first refresh is complete, and whenever the stream is down, every lookup
//! misses and callers search as they would without a copy.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ldap3::{Scope, SearchEntry};
use tokio::sync::{Notify, watch};

use super::controls::{self, SyncChange, SyncInfo};
use super::marks::Marks;
use super::userpassword::StoredPassword;
use super::{Directory, Entry, dn_key};

/// How long the directory may take to report a write lockbridge made before the copy is
/// declared stuck and rebuilt.
pub const ECHO_WAIT: Duration = Duration::from_secs(5);
/// First and longest wait before following again after the stream ended.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MOST: Duration = Duration::from_secs(60);
/// The wait after the directory ended a refresh with a limit (size, time, admin): the
/// next refresh would most likely meet it again, and costs the directory the entries up
/// to it, so it is tried seldom until an operator lifts the limit.
const RETRY_AFTER_LIMIT: Duration = Duration::from_secs(600);

/// A lower-case attribute name and its values, as in [`Entry::attrs`].
type PackedAttribute = (Box<str>, Box<[Box<str>]>);

/// An entry as a password push reads it, packed: an [`Entry`] keeps its attributes in a
/// map whose smallest node is larger than everything a push reads, which at 100,000
/// users is most of the copy's memory.
struct Synced {
    dn: Box<str>,
    attrs: Box<[PackedAttribute]>,
    stored: StoredPassword,
}

impl Synced {
    fn new(entry: Entry, stored: StoredPassword) -> Self {
        let attrs = entry
            .attrs
            .into_iter()
            .map(|(name, values)| {
                let values: Box<[Box<str>]> =
                    values.into_iter().map(String::into_boxed_str).collect();
                (name.into_boxed_str(), values)
            })
            .collect();
        Synced {
            dn: entry.dn.into_boxed_str(),
            attrs,
            stored,
        }
    }

    /// The values of the lower-case attribute `name`.
    fn values(&self, name: &str) -> &[Box<str>] {
        self.attrs
            .iter()
            .find(|(n, _)| &**n == name)
            .map_or(&[], |(_, values)| values)
    }

    /// The entry with only the lower-case attributes `names` (all when empty).
    fn entry_of(&self, names: &[Box<str>]) -> Entry {
        if names.is_empty() {
            return self.entry();
        }
        Entry {
            dn: self.dn.to_string(),
            attrs: self
                .attrs
                .iter()
                .filter(|(name, _)| names.contains(name))
                .map(|(name, values)| {
                    (
                        name.to_string(),
                        values.iter().map(|v| v.to_string()).collect(),
                    )
                })
                .collect(),
        }
    }

    fn entry(&self) -> Entry {
        Entry {
            dn: self.dn.to_string(),
            attrs: self
                .attrs
                .iter()
                .map(|(name, values)| {
                    (
                        name.to_string(),
                        values.iter().map(|v| v.to_string()).collect(),
                    )
                })
                .collect(),
        }
    }
}

/// A user lockbridge is writing, or wrote and has not heard of from the directory yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Awaited {
    /// Writes announced ([`SyncedUsers::expect`]) and not answered yet.
    under_way: u32,
    /// When the echo of the last answered write is due.
    due: Option<Instant>,
}

#[derive(Default)]
struct State {
    /// The first refresh is complete and the stream is open.
    live: bool,
    /// By `entryUUID`.
    entries: HashMap<[u8; 16], Arc<Synced>>,
    /// `entryUUID` by DN ([`dn_key`] form), for writes that know only the DN.
    by_dn: HashMap<String, [u8; 16]>,
    /// The lower-case attribute whose values name a user (`userName`), or empty.
    name_attribute: Box<str>,
    /// `entryUUID` by lower-cased value of `name_attribute`; `None` when two users hold
    /// the value (a lookup then asks the directory).
    by_name: HashMap<Box<str>, Option<[u8; 16]>>,
    /// Entries lockbridge is writing or wrote whose echo has not arrived.
    awaiting: HashMap<[u8; 16], Awaited>,
    /// The same, oldest first (an entry may be listed again after a newer write).
    due: VecDeque<([u8; 16], Instant)>,
    /// Entries lockbridge is writing by any route, for reads ([`SyncedUsers::find`]).
    marks: Marks,
}

impl State {
    fn reset(&mut self) {
        let name_attribute = std::mem::take(&mut self.name_attribute);
        *self = State {
            name_attribute,
            ..State::default()
        };
    }

    #[cfg(test)]
    fn insert(&mut self, uuid: [u8; 16], synced: Synced) {
        let key = dn_key(&synced.dn);
        self.insert_keyed(uuid, synced, key);
    }

    /// Inserts `synced`, whose DN's [`dn_key`] is `key`.
    fn insert_keyed(&mut self, uuid: [u8; 16], synced: Synced, key: String) {
        let dn = synced.dn.clone();
        let synced = Arc::new(synced);
        let old = self.entries.insert(uuid, synced.clone());
        match &old {
            // Most reports are of a change that kept the DN: its key is already there.
            Some(old) if old.dn == dn => {}
            Some(old) => {
                self.by_dn.remove(&dn_key(&old.dn));
                self.by_dn.insert(key, uuid);
            }
            None => {
                self.by_dn.insert(key, uuid);
            }
        }
        if self.name_attribute.is_empty() {
            return;
        }
        let names = |s: &Synced| -> Vec<Box<str>> {
            s.values(&self.name_attribute)
                .iter()
                .map(|v| v.to_lowercase().into_boxed_str())
                .collect()
        };
        let new_names = names(&synced);
        if let Some(old) = &old {
            for name in names(old) {
                if !new_names.contains(&name) && self.by_name.get(&name) == Some(&Some(uuid)) {
                    self.by_name.remove(&name);
                }
            }
        }
        for name in new_names {
            self.by_name
                .entry(name)
                .and_modify(|held| {
                    if *held != Some(uuid) {
                        *held = None;
                    }
                })
                .or_insert(Some(uuid));
        }
    }

    fn remove(&mut self, uuid: &[u8; 16]) {
        if let Some(old) = self.entries.get(uuid) {
            let key = dn_key(&old.dn);
            self.remove_keyed(uuid, &key);
        }
    }

    /// Removes the entry `uuid`, whose DN's [`dn_key`] is `key`.
    fn remove_keyed(&mut self, uuid: &[u8; 16], key: &str) {
        if let Some(old) = self.entries.remove(uuid) {
            self.by_dn.remove(key);
            if !self.name_attribute.is_empty() {
                for value in old.values(&self.name_attribute) {
                    let name = value.to_lowercase();
                    if self.by_name.get(name.as_str()) == Some(&Some(*uuid)) {
                        self.by_name.remove(name.as_str());
                    }
                }
            }
        }
    }

    /// Is an echo overdue? Drops the front entries whose echo arrived.
    fn overdue(&mut self, now: Instant) -> bool {
        while let Some((uuid, due)) = self.due.front().copied() {
            if self.awaiting.get(&uuid).and_then(|a| a.due) != Some(due) {
                self.due.pop_front();
            } else {
                return due <= now;
            }
        }
        false
    }
}

pub(crate) struct Shared {
    state: RwLock<State>,
    control: Control,
    /// The lower-case attributes a push reads ([`SyncedUsers::get`]); empty: all.
    push_attributes: Box<[Box<str>]>,
}

impl Shared {
    fn state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the entry at `dn` (lockbridge changed it some other way than a push): it is
    /// served again once the directory reports it. A change that changed nothing may
    /// never be reported; the user's pushes then search first, as without a copy.
    #[cfg(test)]
    pub(crate) fn forget(&self, dn: &str) {
        self.begin_write(&dn_key(dn));
    }

    /// Before lockbridge writes the entry whose [`dn_key`] is `key`, by any route: the
    /// entry is dropped (pushes search for it until the directory reports it again) and
    /// marked, so that reads do not take a report of an earlier change for the write's.
    pub(crate) fn begin_write(&self, key: &str) {
        let mut state = self.state();
        if let Some(uuid) = state.by_dn.get(key).copied() {
            state.remove_keyed(&uuid, key);
        }
        if state.live {
            state.marks.expire(Instant::now());
            state.marks.begin(key);
        }
    }

    /// The directory answered the write begun with [`Self::begin_write`].
    pub(crate) fn end_write(&self, key: &str) {
        self.state().marks.end(key, Instant::now());
    }
}

impl Sink for Shared {
    fn what(&self) -> &'static str {
        "users"
    }

    fn control(&self) -> &Control {
        &self.control
    }

    fn reset(&self) -> bool {
        let mut state = self.state();
        let live = state.live;
        state.reset();
        metrics::gauge!("lockbridge_directory_followed_users").set(0.0);
        live
    }

    fn go_live(&self) {
        let mut state = self.state();
        if !state.live {
            state.live = true;
            tracing::info!(
                users = state.entries.len(),
                "following the directory's changes to users: password pushes and reads by userName use this copy"
            );
        }
    }

    fn report(
        &self,
        directory: &Directory,
        uuid: [u8; 16],
        change: SyncChange,
        entry: SearchEntry,
    ) {
        let mut state = self.state();
        let known = state.entries.len();
        // The report lifts marks on the entry's DN, and on its DN before (a rename, a
        // deletion).
        let old_dn = (!state.marks.is_empty())
            .then(|| state.entries.get(&uuid).map(|old| old.dn.clone()))
            .flatten();
        let new_dn = match change {
            SyncChange::Delete => {
                state.remove(&uuid);
                None
            }
            SyncChange::Add | SyncChange::Modify | SyncChange::Present => {
                let (entry, stored, key) = directory.write_view_keyed(entry);
                let dn = entry.dn.clone();
                if !state.marks.is_empty() {
                    state.marks.reported(&key);
                }
                state.insert_keyed(uuid, Synced::new(entry, stored), key);
                Some(dn)
            }
        };
        if let Some(old) = old_dn
            && new_dn.as_deref() != Some(&*old)
        {
            state.marks.reported(&dn_key(&old));
        }
        state.awaiting.remove(&uuid);
        // Most reports are changes to a known entry: the gauge's lookup is spared them.
        if state.entries.len() != known {
            metrics::gauge!("lockbridge_directory_followed_users").set(state.entries.len() as f64);
        }
    }
}

/// The followed copy; cheap to clone. The follower stops when the last clone is dropped.
#[derive(Clone)]
pub struct SyncedUsers {
    shared: Arc<Shared>,
    _alive: Arc<watch::Sender<()>>,
}

impl std::fmt::Debug for SyncedUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncedUsers").finish_non_exhaustive()
    }
}

impl SyncedUsers {
    /// The user with `entryUUID` `uuid` and its stored password, as the directory last
    /// reported them; `None` when the copy cannot answer for it (not live yet, stream
    /// down, an echo of lockbridge's own write pending, or not in the copy: a user
    /// created a moment ago may not have been reported yet).
    pub fn get(&self, uuid: &uuid::Uuid) -> Option<(Entry, StoredPassword)> {
        let key = *uuid.as_bytes();
        let now = Instant::now();
        let found = {
            let state = self.shared.state.read().unwrap_or_else(|p| p.into_inner());
            if !state.live {
                return None;
            }
            let echo_due = state.due.front().is_some_and(|(_, due)| *due <= now);
            if echo_due || state.awaiting.contains_key(&key) {
                None
            } else {
                state.entries.get(&key).cloned()
            }
        };
        if found.is_none() {
            let overdue = self.shared.state().overdue(now);
            if overdue {
                self.stuck();
            }
        }
        let synced = found?;
        Some((
            synced.entry_of(&self.shared.push_attributes),
            synced.stored.clone(),
        ))
    }

    /// The user whose `userName` attribute holds `name` (compared without case), as the
    /// directory last reported it, without its stored password; `None` when the copy
    /// cannot answer: not live, several users hold the name, lockbridge is writing the
    /// user or has not heard of its write yet, or no user holds it as far as the copy
    /// knows (one created a moment ago may not have been reported yet: the caller asks
    /// the directory).
    pub fn find(&self, name: &str) -> Option<Entry> {
        let now = Instant::now();
        let found = {
            let state = self.shared.state.read().unwrap_or_else(|p| p.into_inner());
            if !state.live || state.name_attribute.is_empty() {
                return None;
            }
            let echo_due = state.due.front().is_some_and(|(_, due)| *due <= now);
            let uuid = state
                .by_name
                .get(name.to_lowercase().as_str())
                .copied()
                .flatten();
            match uuid {
                Some(uuid) if !echo_due && !state.awaiting.contains_key(&uuid) => state
                    .entries
                    .get(&uuid)
                    .filter(|synced| {
                        state.marks.is_empty() || !state.marks.holds(&dn_key(&synced.dn), now)
                    })
                    .cloned(),
                _ => None,
            }
        };
        if found.is_none() {
            let overdue = self.shared.state().overdue(now);
            if overdue {
                self.stuck();
            }
        }
        found.map(|synced| synced.entry())
    }

    /// Before lockbridge writes the user `uuid`: the copy will not answer for it until
    /// the directory reports a change of it. Called before the write, because the report
    /// may arrive before the writer hears its own answer. Then exactly one of
    /// [`Self::answered`] (the wait for the report starts) or [`Self::cancel`] (the
    /// write failed: no report will come).
    pub fn expect(&self, uuid: &uuid::Uuid) {
        let key = *uuid.as_bytes();
        let now = Instant::now();
        let mut state = self.shared.state();
        if !state.live {
            return;
        }
        // Also drops the echoes that arrived from the front of the queue.
        if state.overdue(now) {
            drop(state);
            self.stuck();
            return;
        }
        state.awaiting.entry(key).or_default().under_way += 1;
    }

    /// The directory answered the write announced with [`Self::expect`]: its report is
    /// due within [`ECHO_WAIT`] from now. Nothing to wait for when it came first.
    pub fn answered(&self, uuid: &uuid::Uuid) {
        let key = *uuid.as_bytes();
        let mut state = self.shared.state();
        let Some(awaited) = state.awaiting.get_mut(&key) else {
            return;
        };
        let due = Instant::now() + ECHO_WAIT;
        awaited.under_way = awaited.under_way.saturating_sub(1);
        awaited.due = Some(due);
        state.due.push_back((key, due));
    }

    /// The write announced with [`Self::expect`] failed: no report is coming for it.
    /// An earlier write's report still awaited is still awaited.
    pub fn cancel(&self, uuid: &uuid::Uuid) {
        let key = *uuid.as_bytes();
        let mut state = self.shared.state();
        if let Some(awaited) = state.awaiting.get_mut(&key) {
            awaited.under_way = awaited.under_way.saturating_sub(1);
            if awaited.under_way == 0 && awaited.due.is_none() {
                state.awaiting.remove(&key);
            }
        }
    }

    /// An echo is overdue: drop the copy and have the follower start again.
    fn stuck(&self) {
        tracing::warn!(
            wait = ?ECHO_WAIT,
            "the directory did not report a password write in time: following its changes again from a full refresh"
        );
        self.shared.state().reset();
        self.shared.control.restart.notify_one();
    }

    /// Why the follower last stopped following, if it ever did (for status and tests).
    pub fn stopped_because(&self) -> Option<String> {
        self.shared.control.ended()
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
    /// For `check-config`: whether password pushes will read a followed copy, tried as
    /// the follower would (the Sync Request control offered, then a refresh with no
    /// attributes that the directory must complete without a limit ending it). `Ok`
    /// either way, since pushes are correct without the copy; what keeps it from being
    /// used is a warning that names the setting to change.
    pub async fn check_following(&self) -> Result<String, String> {
        if self.kind() != super::DirectoryKind::OpenLdap {
            return Ok(
                "each password push reads its user with a search (following changes is \
                 built for OpenLDAP's syncprov)"
                    .to_owned(),
            );
        }
        match self.supports_control(controls::SYNC_REQUEST_OID).await {
            Ok(true) => {}
            Ok(false) => {
                return Ok(
                    "WARNING: the directory does not offer content synchronisation \
                     (OpenLDAP's syncprov overlay), so each password push searches first; \
                     docs/directories/openldap.md, Content synchronisation, says how to load it"
                        .to_owned(),
                );
            }
            Err(e) => return Err(e.to_string()),
        }
        let started = Instant::now();
        let mut conn = self
            .dedicated_connection()
            .await
            .map_err(|e| e.to_string())?;
        // Counted as they come, not collected: the check holds one entry at a time
        // whatever the directory's size.
        let counted = async {
            let mut stream = conn
                .ldap
                .with_controls(controls::sync_request_refresh_only())
                .streaming_search(
                    self.users_base(),
                    Scope::Subtree,
                    self.user_filter(),
                    vec!["1.1"],
                )
                .await?;
            let mut users = 0usize;
            while let Some(entry) = stream.next().await? {
                if !entry.is_ref() && !entry.is_intermediate() {
                    users += 1;
                }
            }
            Ok::<_, ldap3::LdapError>((users, stream.finish().await))
        }
        .await;
        let _ = conn.ldap.unbind().await;
        let (users, result) =
            counted.map_err(|e| format!("the synchronisation search failed: {e}"))?;
        if result.rc != 0 {
            let ended = ended_by_directory(result.rc, &result.text, self.bind_dn());
            return Ok(format!(
                "WARNING: password pushes would search first: {}",
                ended.reason
            ));
        }
        Ok(format!(
            "password pushes will read a copy the directory keeps current ({users} users, \
             refreshed in {} ms)",
            started.elapsed().as_millis()
        ))
    }

    /// Starts following the users (`users_base`, `user_filter`) with `attrs` and their
    /// stored password, indexed by the values of `name_attribute` (a user's `userName`),
    /// when the directory is OpenLDAP and offers content synchronisation; `None`
    /// otherwise (every push then searches first). [`SyncedUsers::get`] (a push) gives
    /// only `push_attributes` (all when empty), [`SyncedUsers::find`] (a read) all.
    pub async fn follow_users(
        &self,
        attrs: &[String],
        name_attribute: &str,
        push_attributes: &[String],
    ) -> Option<SyncedUsers> {
        if self.kind() != super::DirectoryKind::OpenLdap {
            return None;
        }
        match self.supports_control(controls::SYNC_REQUEST_OID).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(
                    "the directory does not offer content synchronisation (OpenLDAP's syncprov \
                     overlay): every password push reads the user with a search first"
                );
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell whether the directory offers content synchronisation; password pushes search first");
                return None;
            }
        }
        let shared = Arc::new(Shared {
            state: RwLock::new(State {
                name_attribute: name_attribute.to_ascii_lowercase().into_boxed_str(),
                ..State::default()
            }),
            control: Control::default(),
            push_attributes: push_attributes
                .iter()
                .map(|a| a.to_ascii_lowercase().into_boxed_str())
                .collect(),
        });
        let (alive, stopped) = watch::channel(());
        let mut wanted: Vec<String> = attrs.to_vec();
        if !wanted
            .iter()
            .any(|a| a.eq_ignore_ascii_case(super::entries::USER_PASSWORD))
        {
            wanted.push(super::entries::USER_PASSWORD.to_owned());
        }
        // The directory's own writes drop entries from the copy (a weak link: the copy
        // stops with its last handle, not with the directory).
        let _ = self.inner.followed.set(Arc::downgrade(&shared));
        spawn_follower(
            "users",
            follow(
                self.clone(),
                shared.clone(),
                self.users_base().to_owned(),
                self.user_filter().to_owned(),
                wanted,
                stopped,
            ),
        );
        Some(SyncedUsers {
            shared,
            _alive: Arc::new(alive),
        })
    }
}

/// How a copy and its follower talk besides the reports: a wake-up to follow again from
/// a full refresh, and why the last stream ended.
#[derive(Default)]
pub(crate) struct Control {
    /// Notified to end the stream and follow again from a full refresh.
    pub(crate) restart: Notify,
    ended: std::sync::Mutex<Option<String>>,
}

impl Control {
    /// Why the last stream ended, if one did.
    pub(crate) fn ended(&self) -> Option<String> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_ended(&self, reason: String) {
        *self.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }
}

/// What a followed stream feeds: the users' copy, or the groups' ([`super::synced_groups`]).
pub(crate) trait Sink: Send + Sync + 'static {
    /// What is followed, for logs ("users", "groups").
    fn what(&self) -> &'static str;
    fn control(&self) -> &Control;
    /// The stream ended: forget everything. Returns whether the copy was live.
    fn reset(&self) -> bool;
    /// The refresh is complete; changes follow as they come.
    fn go_live(&self);
    /// The directory reports `uuid`: present, added, modified (with `entry`) or deleted.
    fn report(&self, directory: &Directory, uuid: [u8; 16], change: SyncChange, entry: SearchEntry);
}

/// How long the followers' thread lets reports pile up before it wakes again, once they
/// come faster than one per this: a copy is at most this much later than the directory
/// while writes stream in, and not at all otherwise.
const GATHER: Duration = Duration::from_millis(5);

/// Runs `follower` on the followers' thread: one thread of the process with a runtime of
/// its own, which every copy's stream runs on.
///
/// Why: every write anywhere below a followed base reaches every instance as a report,
/// and OpenLDAP sends every other stream of the instance a new cookie for it. On the
/// daemon's runtime each of those woke a worker thread for the connection's driver and
/// again for the follower, about two wake-ups per write per stream, dearer than reading
/// the report. Here the driver and the followers share one thread, and while reports
/// stream in it wakes at most once per [`GATHER`] and takes in all that came meanwhile
/// (bench/README.md, "What following costs"). Falls back to the daemon's runtime if the
/// thread cannot be started.
pub(crate) fn spawn_follower<F>(what: &'static str, follower: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    match followers_runtime() {
        Some(runtime) => {
            // Unconstrained: tokio's budget would have the follower take only 128 reports
            // per turn while the connection's driver decodes far more per turn, so a
            // refresh of 100,000 entries piled up in between (peak memory 391–443 MiB
            // against 246–262 on the daemon's runtime). The follower now empties what has
            // come each turn, and yields once it waits for more.
            runtime.spawn(tokio::task::unconstrained(follower));
        }
        None => {
            tracing::warn!(
                followed = what,
                "no thread of its own for following the directory; the follower shares the daemon's"
            );
            tokio::spawn(follower);
        }
    }
}

/// The followers' runtime, started on first use.
fn followers_runtime() -> Option<&'static tokio::runtime::Handle> {
    static RUNTIME: std::sync::OnceLock<Option<tokio::runtime::Handle>> =
        std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let pace = Pace::new(Instant::now());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(move || {
                    // Blocking is the point: while this thread waits, the reports stay
                    // in the sockets and are all read at the next wake-up.
                    let wait = pace.wait_before_sleep(Instant::now());
                    if !wait.is_zero() {
                        std::thread::sleep(wait);
                    }
                    pace.sleeps(Instant::now());
                })
                .build()
                .map_err(|e| tracing::error!(error = %e, "cannot build the followers' runtime"))
                .ok()?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("lockbridge-follow".to_owned())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .map_err(|e| tracing::error!(error = %e, "cannot start the followers' thread"))
                .ok()?;
            Some(handle)
        })
        .as_ref()
}

/// When the followers' thread may go to sleep until the next report: at once when it
/// last did so [`GATHER`] ago or more (reports are rare), otherwise once `GATHER` has
/// passed since then (they stream in, and the wait lets them gather).
struct Pace {
    started: Instant,
    /// When the thread last went to sleep, in nanoseconds since `started`.
    last_sleep: std::sync::atomic::AtomicU64,
}

impl Pace {
    fn new(started: Instant) -> Self {
        Pace {
            started,
            last_sleep: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How long the thread should stay awake (taking nothing in) before it sleeps at `now`.
    fn wait_before_sleep(&self, now: Instant) -> Duration {
        let last = Duration::from_nanos(self.last_sleep.load(std::sync::atomic::Ordering::Relaxed));
        let since = now
            .saturating_duration_since(self.started)
            .saturating_sub(last);
        // The first sleep, `last` still 0: as rare reports are.
        if last.is_zero() {
            return Duration::ZERO;
        }
        GATHER.saturating_sub(since)
    }

    /// The thread goes to sleep at `now`.
    fn sleeps(&self, now: Instant) {
        let nanos = now.saturating_duration_since(self.started).as_nanos();
        self.last_sleep.store(
            u64::try_from(nanos).unwrap_or(u64::MAX).max(1),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// Follows `base` / `filter` with `attrs` into `sink` until `stopped` fires (its sender
/// dropped), starting again (with a growing pause) whenever the stream ends.
pub(crate) async fn follow<S: Sink>(
    directory: Directory,
    sink: Arc<S>,
    base: String,
    filter: String,
    attrs: Vec<String>,
    mut stopped: watch::Receiver<()>,
) {
    let mut pause = RETRY_FIRST;
    loop {
        let started = Instant::now();
        let ended = tokio::select! {
            ended = follow_once(&directory, &*sink, &base, &filter, &attrs) => ended,
            _ = stopped.changed() => return,
        };
        let was_live = sink.reset();
        if started.elapsed() > RETRY_MOST {
            pause = RETRY_FIRST;
        }
        // A limit that ended the refresh will end the next one too; one that ended a live
        // stream (a time limit, after that long) costs a refresh per period, as any end.
        let wait = if ended.limited && !was_live {
            pause.max(RETRY_AFTER_LIMIT)
        } else {
            pause
        };
        tracing::warn!(followed = sink.what(), reason = %ended.reason, retry_in = ?wait, "stopped following the directory's changes; requests read the directory meanwhile");
        sink.control().set_ended(ended.reason);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped.changed() => return,
        }
        pause = (pause * 2).min(RETRY_MOST);
    }
}

/// Why a stream ended.
struct Ended {
    reason: String,
    /// The directory ended it with a size, time or administrative limit.
    limited: bool,
}

impl From<String> for Ended {
    fn from(reason: String) -> Self {
        Ended {
            reason,
            limited: false,
        }
    }
}

/// The reason for a stream the directory ended with result `rc`: for a limit, what the
/// operator should change (the limit applies to the service account `bind_dn`).
fn ended_by_directory(rc: u32, text: &str, bind_dn: &str) -> Ended {
    let limit = match rc {
        3 => Some("time limit (timeLimitExceeded, 3)"),
        4 => Some("size limit (sizeLimitExceeded, 4)"),
        11 => Some("administrative limit (adminLimitExceeded, 11)"),
        _ => None,
    };
    match limit {
        Some(limit) => Ended {
            reason: format!(
                "the directory ended the synchronisation search with its {limit}: give the \
                 service account `limits dn.exact=\"{bind_dn}\" size=unlimited time=unlimited` \
                 (docs/directories/openldap.md, Content synchronisation)"
            ),
            limited: true,
        },
        None if rc == 0 => "the directory ended the synchronisation".to_owned().into(),
        None => {
            let text = text.trim();
            let detail = if text.is_empty() {
                String::new()
            } else {
                format!(": {text}")
            };
            format!("the directory ended the synchronisation search with result {rc}{detail}")
                .into()
        }
    }
}

/// One stream: the refresh, then changes as they come. Returns why it ended.
async fn follow_once<S: Sink>(
    directory: &Directory,
    sink: &S,
    base: &str,
    filter: &str,
    attrs: &[String],
) -> Ended {
    let mut conn = match directory.dedicated_connection().await {
        Ok(conn) => conn,
        Err(e) => return e.to_string().into(),
    };
    let stream = conn
        .ldap
        .with_controls(controls::sync_request_refresh_and_persist())
        .streaming_search(base, Scope::Subtree, filter, attrs.to_vec())
        .await;
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(e) => return format!("the synchronisation search failed: {e}").into(),
    };
    let ended = loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = sink.control().restart.notified() => break Some("an echo was overdue".to_owned()),
        };
        let message = match next {
            Ok(Some(message)) => message,
            // The result says why (a limit, say): read below, with `finish`.
            Ok(None) => break None,
            Err(e) => break Some(format!("the stream failed: {e}")),
        };
        if message.is_ref() {
            continue;
        }
        if message.is_intermediate() {
            match controls::find_sync_info(&message.0) {
                Some(Ok(SyncInfo::RefreshPhase { done: true })) => sink.go_live(),
                Some(Ok(SyncInfo::RefreshPhase { done: false } | SyncInfo::NewCookie)) | None => {}
                // Only sent to a client that resumes from a cookie, which this one never
                // does: something is off, so start again from a full refresh.
                Some(Ok(SyncInfo::IdSet { .. })) => {
                    break Some(
                        "the directory sent a syncIdSet to a follower without a cookie".to_owned(),
                    );
                }
                Some(Err(e)) => break Some(e.to_string()),
            }
            continue;
        }
        let sync_state = match controls::find_sync_state(&message.1) {
            Some(Ok(s)) => s,
            Some(Err(e)) => break Some(e.to_string()),
            None => break Some("an entry came without its Sync State control".to_owned()),
        };
        sink.report(
            directory,
            sync_state.uuid,
            sync_state.change,
            SearchEntry::construct(message),
        );
    };
    let msgid = stream.ldap_handle().last_id();
    let result = stream.finish().await;
    let _ = conn.ldap.abandon(msgid).await;
    let _ = conn.ldap.unbind().await;
    match ended {
        Some(reason) => reason.into(),
        None => ended_by_directory(result.rc, &result.text, directory.bind_dn()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_ended_by_a_limit_names_it_and_the_line_that_lifts_it() {
        let dn = "cn=lockbridge,ou=services,dc=example,dc=org";
        for (rc, limit) in [(3, "time limit"), (4, "size limit"), (11, "administrative")] {
            let ended = ended_by_directory(rc, "", dn);
            assert!(ended.limited, "{rc}");
            assert!(ended.reason.contains(limit), "{}", ended.reason);
            assert!(
                ended.reason.contains(&format!("limits dn.exact=\"{dn}\"")),
                "{}",
                ended.reason
            );
        }
        let other = ended_by_directory(50, " no read access ", dn);
        assert!(!other.limited);
        assert_eq!(
            other.reason,
            "the directory ended the synchronisation search with result 50: no read access"
        );
        assert!(!ended_by_directory(0, "", dn).limited);
    }

    #[test]
    fn the_followers_thread_sleeps_at_once_unless_reports_stream_in() {
        let t0 = Instant::now();
        let pace = Pace::new(t0);
        let ms = Duration::from_millis;
        assert_eq!(
            pace.wait_before_sleep(t0 + ms(1)),
            Duration::ZERO,
            "the first sleep"
        );
        pace.sleeps(t0 + ms(1));
        // Woken 1 ms later: reports stream in, so it gathers for the rest of GATHER.
        assert_eq!(pace.wait_before_sleep(t0 + ms(2)), GATHER - ms(1));
        pace.sleeps(t0 + ms(1) + GATHER);
        // Woken long after: a lone report, taken in with no wait.
        let later = t0 + ms(1) + GATHER + GATHER + ms(1);
        assert_eq!(pace.wait_before_sleep(later), Duration::ZERO);
        pace.sleeps(later);
        assert_eq!(pace.wait_before_sleep(later), GATHER);
    }

    fn live_copy(uuids: &[[u8; 16]]) -> SyncedUsers {
        let mut state = State {
            live: true,
            ..State::default()
        };
        for uuid in uuids {
            state.insert(
                *uuid,
                Synced::new(
                    Entry::new(
                        format!("uid={},ou=people,dc=example,dc=org", uuid[0]),
                        [("entryCSN".to_owned(), vec![format!("csn-{}", uuid[0])])],
                    ),
                    StoredPassword::new(Vec::new()),
                ),
            );
        }
        let (alive, _) = watch::channel(());
        SyncedUsers {
            shared: Arc::new(Shared {
                state: RwLock::new(state),
                control: Control::default(),
                push_attributes: Box::default(),
            }),
            _alive: Arc::new(alive),
        }
    }

    #[test]
    fn an_entry_lockbridge_wrote_is_not_served_until_its_echo_arrives() {
        let copy = live_copy(&[[1; 16], [2; 16]]);
        let one = uuid::Uuid::from_bytes([1; 16]);
        let two = uuid::Uuid::from_bytes([2; 16]);
        let (entry, _) = copy.get(&one).expect("served");
        assert_eq!(entry.dn, "uid=1,ou=people,dc=example,dc=org");
        assert_eq!(
            entry.first("entryCSN"),
            Some("csn-1"),
            "attributes come back as read"
        );
        copy.expect(&one);
        assert!(copy.get(&one).is_none(), "written, echo pending");
        assert!(copy.get(&two).is_some(), "the others are still served");
        // The echo: the follower replaces the entry and clears the wait.
        copy.shared.state().awaiting.remove(&[1; 16]);
        assert!(copy.get(&one).is_some());
        assert!(!copy.shared.state().overdue(Instant::now() + ECHO_WAIT * 2));
        // A write that failed expects no echo.
        copy.expect(&two);
        copy.cancel(&two);
        assert!(copy.get(&two).is_some());
        assert!(!copy.shared.state().overdue(Instant::now() + ECHO_WAIT * 2));
    }

    #[test]
    fn the_wait_for_an_echo_starts_when_the_directory_answers_the_write() {
        let copy = live_copy(&[[1; 16], [2; 16]]);
        let one = uuid::Uuid::from_bytes([1; 16]);
        let later = || Instant::now() + ECHO_WAIT * 2;
        // A write the directory takes longer than ECHO_WAIT to answer is not overdue.
        copy.expect(&one);
        assert!(!copy.shared.state().overdue(later()), "still being written");
        assert!(copy.get(&one).is_none());
        copy.answered(&one);
        assert!(copy.get(&one).is_none(), "answered, echo pending");
        assert!(copy.shared.state().overdue(later()), "due from the answer");
        // The echo came before the answer (the follower heard first): nothing is awaited.
        copy.shared.state().awaiting.remove(&[1; 16]);
        copy.expect(&one);
        copy.shared.state().awaiting.remove(&[1; 16]);
        copy.answered(&one);
        assert!(copy.get(&one).is_some());
        assert!(!copy.shared.state().overdue(later()));
        // A second write that fails leaves the first one's echo awaited.
        copy.expect(&one);
        copy.answered(&one);
        copy.expect(&one);
        copy.cancel(&one);
        assert!(
            copy.get(&one).is_none(),
            "the first write's echo is still due"
        );
        assert!(copy.shared.state().overdue(later()));
    }

    #[test]
    fn an_overdue_echo_ends_the_copy_and_asks_for_a_new_refresh() {
        let copy = live_copy(&[[1; 16], [2; 16]]);
        copy.expect(&uuid::Uuid::from_bytes([1; 16]));
        // Make the echo overdue.
        {
            let mut state = copy.shared.state();
            let past = Instant::now() - Duration::from_millis(1);
            state.awaiting.insert(
                [1; 16],
                Awaited {
                    under_way: 0,
                    due: Some(past),
                },
            );
            state.due.clear();
            state.due.push_back(([1; 16], past));
        }
        assert!(
            copy.get(&uuid::Uuid::from_bytes([2; 16])).is_none(),
            "nothing is served once an echo is overdue"
        );
        assert!(!copy.is_live());
        assert!(copy.shared.state().entries.is_empty());
    }

    #[test]
    fn another_write_by_lockbridge_drops_the_entry_until_the_directory_reports_it() {
        let copy = live_copy(&[[1; 16], [2; 16]]);
        copy.shared.forget("UID=1, ou=People,dc=example,dc=org");
        assert!(copy.get(&uuid::Uuid::from_bytes([1; 16])).is_none());
        assert!(copy.get(&uuid::Uuid::from_bytes([2; 16])).is_some());
        // A rename reported by the directory moves the DN index along.
        copy.shared.state().insert(
            [2; 16],
            Synced::new(
                Entry::new("uid=two,ou=people,dc=example,dc=org", []),
                StoredPassword::new(Vec::new()),
            ),
        );
        copy.shared.forget("uid=2,ou=people,dc=example,dc=org");
        assert!(
            copy.get(&uuid::Uuid::from_bytes([2; 16])).is_some(),
            "the old DN is gone"
        );
        copy.shared.forget("uid=two,ou=people,dc=example,dc=org");
        assert!(copy.get(&uuid::Uuid::from_bytes([2; 16])).is_none());
        assert!(copy.shared.state().by_dn.is_empty());
    }

    #[test]
    fn a_copy_that_is_not_live_answers_nothing_and_notes_no_writes() {
        let copy = live_copy(&[[1; 16]]);
        copy.shared.state().live = false;
        let one = uuid::Uuid::from_bytes([1; 16]);
        assert!(copy.get(&one).is_none());
        copy.expect(&one);
        assert!(copy.shared.state().awaiting.is_empty());
    }
}

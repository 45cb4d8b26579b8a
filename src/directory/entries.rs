//! Generic entry operations for features that work on whole entries (SCIM): search,
//! sorted windows, read, add, modify, rename, delete, and checking a pushed password
//! against the stored one without binding.
//!
//! Writes are confined to entries below `users_base` or `groups_base`, and never to the
//! service account itself; they are sent once (retried only when the request provably
//! never left), and one whose answer never came is
//! [`DirectoryError::WriteOutcomeUnknown`]. A write that touches `userPassword` carries
//! the ppolicy request control, so the directory's password policy refusals come back
//! as [`DirectoryError::PasswordRejected`].
//!
//! Sorted windows use Server Side Sort + Virtual List View. OpenLDAP's sssvlv overlay
//! keeps the sorted list of every VLV search for as long as the connection stays open
//! (one slot of `sssvlv-maxperconn` per search, and of `sssvlv-max` for the whole
//! server; a new VLV search on a connection whose slots are used up fails with "busy").
//! A client cannot release a list except by closing the connection, and re-using its
//! context ID would serve the old list for a new query. So a sorted window runs on a
//! pooled connection that is then unbound and dropped instead of going back to the pool
//! (`AfterUse::Close`): the server frees the list at once and the next request gets a
//! fresh connection. That costs one connect and bind per sorted window, and keeps the
//! number of connections within `pool_size`; the directory's `sssvlv-max` must allow as
//! many concurrent sorts as lockbridge may run (`pool_size`, plus connections the server
//! has not finished closing).

use std::collections::BTreeMap;
use std::collections::HashSet;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::controls::RawControl;
use ldap3::{Mod, Scope, SearchEntry, SearchOptions, SearchResult};
use zeroize::Zeroizing;

use super::controls::{self, MAX_INT};
use super::error::{DirectoryError, Failure, OpKind, describe};
use super::userpassword::StoredPassword;
use super::{AfterUse, Directory, PAGE_SIZE, Retry, escape, ppolicy, redact};
use crate::types::Secret;

/// The attribute whose writes carry the ppolicy control and whose values are redacted
/// from errors.
pub(crate) const USER_PASSWORD: &str = "userPassword";

/// An entry as read from the directory. Attribute names are kept in lower case so that
/// lookups ignore the case the server answered with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub dn: String,
    /// Lower-case attribute name → values, in the order the server sent them.
    pub attrs: BTreeMap<String, Vec<String>>,
}

impl Entry {
    /// An entry from a DN and attributes of any case.
    pub fn new(
        dn: impl Into<String>,
        attrs: impl IntoIterator<Item = (String, Vec<String>)>,
    ) -> Self {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (mut k, v) in attrs {
            // In place: the name is the server's own string, no copy needed.
            k.make_ascii_lowercase();
            match map.entry(k) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(v);
                }
                std::collections::btree_map::Entry::Occupied(mut slot) => {
                    slot.get_mut().extend(v);
                }
            }
        }
        Self {
            dn: dn.into(),
            attrs: map,
        }
    }

    /// Every value of `name` (any case); empty when absent.
    pub fn all(&self, name: &str) -> &[String] {
        // Every read of a resource looks up dozens of names: lower-cased on the stack
        // when they fit, which they always do in practice.
        let mut buf = [0u8; 64];
        let lowered = match buf.get_mut(..name.len()) {
            Some(slot) => {
                slot.copy_from_slice(name.as_bytes());
                slot.make_ascii_lowercase();
                // ASCII lower-casing keeps UTF-8 valid.
                std::str::from_utf8(slot).ok()
            }
            None => None,
        };
        let found = match lowered {
            Some(key) => self.attrs.get(key),
            None => self.attrs.get(&name.to_ascii_lowercase()),
        };
        found.map(Vec::as_slice).unwrap_or(&[])
    }

    /// The first value of `name` (any case).
    pub fn first(&self, name: &str) -> Option<&str> {
        self.all(name).first().map(String::as_str)
    }

    /// Whether `name` has at least one value.
    pub fn has(&self, name: &str) -> bool {
        !self.all(name).is_empty()
    }
}

/// One change of an LDAP modify (RFC 4511 §4.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add these values (the attribute is created if absent).
    Add(String, Vec<String>),
    /// Delete these values; an empty list deletes the whole attribute.
    Delete(String, Vec<String>),
    /// Replace every value with these; an empty list deletes the attribute if present.
    Replace(String, Vec<String>),
}

/// Search scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchScope {
    Base,
    OneLevel,
    Subtree,
}

/// A server-side sort key (RFC 2891).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortKey {
    pub attribute: String,
    /// An ordering matching rule, e.g. `caseIgnoreOrderingMatch` for `uid`, which has
    /// no ORDERING rule of its own in OpenLDAP's schema.
    pub ordering_rule: Option<String>,
    pub reverse: bool,
}

/// A window of a search result: entries `offset .. offset + count` (1-based, as SCIM's
/// `startIndex`) in a stable order. The search is subtree-scoped below `base`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowQuery {
    pub base: String,
    /// A complete RFC 4515 filter, already escaped.
    pub filter: String,
    /// Shared: the same list serves every read of a kind.
    pub attrs: std::sync::Arc<[String]>,
    /// `Some`: sorted by the server (Server Side Sort + Virtual List View controls).
    /// `None`: the directory's own order, which is stable for an unchanged directory.
    pub sort: Option<SortKey>,
    /// 1-based position of the first entry wanted (0 counts as 1).
    pub offset: u64,
    /// How many entries at most; 0 = only count them.
    pub count: u64,
    /// Unsorted only: the most entries one request may walk (skipped ones included).
    /// When more match, the search stops there and the answer is
    /// [`DirectoryError::ScanLimit`]; `None`: no limit.
    pub scan_limit: Option<u64>,
}

/// What [`WindowQuery`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub entries: Vec<Entry>,
    /// How many entries match the filter in all.
    pub total: u64,
}

impl From<SearchScope> for Scope {
    fn from(s: SearchScope) -> Scope {
        match s {
            SearchScope::Base => Scope::Base,
            SearchScope::OneLevel => Scope::OneLevel,
            SearchScope::Subtree => Scope::Subtree,
        }
    }
}

impl Entry {
    /// From ldap3's entry; values that are not UTF-8 (`bin_attrs`) are left out, except
    /// those lockbridge reads as text (`objectGUID`).
    fn from_search(e: SearchEntry) -> Self {
        Entry::new(e.dn, super::dialect::text_attributes(e.attrs, e.bin_attrs))
    }
}

/// Splits the `userPassword` values (text or binary) out of a search entry.
fn split_password(mut e: SearchEntry) -> (Entry, StoredPassword) {
    let text = take_user_password(&mut e.attrs)
        .into_iter()
        .map(|v| Zeroizing::new(v.into_bytes()));
    let binary = take_user_password(&mut e.bin_attrs)
        .into_iter()
        .map(Zeroizing::new);
    let values = text.chain(binary).collect();
    (Entry::from_search(e), StoredPassword::new(values))
}

/// Removes `userPassword`, under any case of its name, and returns its values.
fn take_user_password<V>(attrs: &mut std::collections::HashMap<String, Vec<V>>) -> Vec<V> {
    let names: Vec<String> = attrs
        .keys()
        .filter(|k| k.eq_ignore_ascii_case(USER_PASSWORD))
        .cloned()
        .collect();
    names
        .iter()
        .filter_map(|name| attrs.remove(name))
        .flatten()
        .collect()
}

/// How many entries a search may bring.
enum Limit {
    /// All of them, at most this many: more is [`DirectoryError::SizeLimit`].
    All(usize),
    /// The first this many; more are not asked for.
    First(usize),
}

impl From<usize> for Limit {
    fn from(n: usize) -> Self {
        Limit::All(n)
    }
}

impl Directory {
    /// Plain search; more than `limit` entries → [`DirectoryError::SizeLimit`]`(limit)`
    /// (the server is asked for at most `limit + 1`). When the directory's own size limit
    /// cuts the search short first, `SizeLimit` holds the number it let through. Entries
    /// come with lower-cased attribute names. A missing `base` is
    /// [`DirectoryError::NoSuchEntry`].
    pub async fn search_entries(
        &self,
        base: &str,
        scope: SearchScope,
        filter: &str,
        attrs: &[&str],
        limit: usize,
    ) -> Result<Vec<Entry>, DirectoryError> {
        self.search_with(
            "search_entries",
            base,
            scope,
            filter,
            attrs,
            limit,
            None,
            |e| Entry::from_search(SearchEntry::construct(e)),
        )
        .await
    }

    /// [`Self::search_entries`] that returns only the attribute values the items of
    /// `values_filter` match (the Matched Values control, RFC 3876), e.g.
    /// `((member=uid=a,…)(member=uid=b,…)(cn=*))` to learn which of a page's users each
    /// group lists without reading every member of every group. An attribute no item
    /// names is not returned at all (OpenLDAP): name every attribute wanted whole with a
    /// presence item such as `(cn=*)`. A
    /// server without the control ignores it (the control is not critical) and sends
    /// every value, which costs more but gives the same answer to a caller that looks
    /// for the values it asked about.
    ///
    /// `values_filter` must be built from [`escape::equals`] items.
    pub async fn search_entries_matching_values(
        &self,
        base: &str,
        scope: SearchScope,
        filter: &str,
        attrs: &[&str],
        limit: usize,
        values_filter: &str,
    ) -> Result<Vec<Entry>, DirectoryError> {
        let control = ldap3::controls::MatchedValues::new(values_filter);
        self.search_with(
            "search_entries_matching_values",
            base,
            scope,
            filter,
            attrs,
            limit,
            Some(control),
            |e| Entry::from_search(SearchEntry::construct(e)),
        )
        .await
    }

    /// At most `limit` of the entries `filter` matches, in the server's order, for a
    /// look at a sample (a size limit, the caller's or the server's, is not an error).
    pub async fn search_some_entries(
        &self,
        base: &str,
        scope: SearchScope,
        filter: &str,
        attrs: &[&str],
        limit: usize,
    ) -> Result<Vec<Entry>, DirectoryError> {
        self.search_with(
            "search_some_entries",
            base,
            scope,
            filter,
            attrs,
            Limit::First(limit),
            None,
            |e| Entry::from_search(SearchEntry::construct(e)),
        )
        .await
    }

    /// A plain search (see [`Self::search_entries`]) whose entries `make` turns into `T`.
    #[allow(clippy::too_many_arguments)]
    async fn search_with<T: Send>(
        &self,
        op: &'static str,
        base: &str,
        scope: SearchScope,
        filter: &str,
        attrs: &[&str],
        limit: impl Into<Limit>,
        control: Option<RawControl>,
        make: impl Fn(ldap3::ResultEntry) -> T + Sync,
    ) -> Result<Vec<T>, DirectoryError> {
        let t = self.inner.operation_timeout;
        let (limit, first) = match limit.into() {
            Limit::All(n) => (n, false),
            Limit::First(n) => (n, true),
        };
        let sizelimit = if first {
            i32::try_from(limit).unwrap_or(i32::MAX)
        } else {
            i32::try_from(limit.saturating_add(1)).unwrap_or(i32::MAX)
        };
        let make = &make;
        let control = &control;
        self.run(op, OpKind::Read, Retry::Idempotent, |mut ldap| async move {
            if let Some(c) = control {
                ldap.with_controls(vec![c.clone()]);
            }
            let SearchResult(found, res) = ldap
                .with_search_options(SearchOptions::new().sizelimit(sizelimit))
                .with_timeout(t)
                .search(base, scope.into(), filter, attrs)
                .await?;
            let mut entries: Vec<T> = found
                .into_iter()
                .filter(|e| !e.is_ref() && !e.is_intermediate())
                .map(make)
                .collect();
            match res.rc {
                0 | 4 if first => {
                    entries.truncate(limit);
                    Ok(entries)
                }
                0 if entries.len() <= limit => Ok(entries),
                0 | 4 => Err(Failure::Mapped(size_limit(limit, entries.len() as u64))),
                _ => Err(Failure::from_result(&res).naming_missing_entry(base)),
            }
        })
        .await
    }

    /// Base-scope read of `dn`; `Ok(None)` when the entry does not exist (rc 32), is not
    /// visible to the service account, or `dn` is not a DN (locally, or for the server:
    /// rc 34).
    pub async fn read_entry(
        &self,
        dn: &str,
        attrs: &[&str],
    ) -> Result<Option<Entry>, DirectoryError> {
        if !escape::is_valid_dn(dn) {
            return Ok(None);
        }
        let t = self.inner.operation_timeout;
        self.run(
            "read_entry",
            OpKind::Read,
            Retry::Idempotent,
            |mut ldap| async move {
                let SearchResult(found, res) = ldap
                    .with_timeout(t)
                    .search(dn, Scope::Base, "(objectClass=*)", attrs)
                    .await?;
                match res.rc {
                    0 => Ok(found
                        .into_iter()
                        .find(|e| !e.is_ref() && !e.is_intermediate())
                        .map(|e| Entry::from_search(SearchEntry::construct(e)))),
                    // noSuchObject; invalidDNSyntax (e.g. an unknown attribute type in
                    // the DN) names no entry either.
                    32 | 34 => Ok(None),
                    _ => Err(Failure::from_result(&res)),
                }
            },
        )
        .await
    }

    /// A window of a search (see [`WindowQuery`]), always subtree-scoped.
    ///
    /// Sorted (`sort: Some`): one search with the Server Side Sort and Virtual List View
    /// controls (by offset: beforeCount 0, afterCount `count - 1`, contentCount 0); the
    /// total is the VLV response's contentCount; an offset beyond it gives no entries and
    /// the right total. A directory that cannot sort (no sssvlv, no ordering rule for the
    /// attribute) is [`DirectoryError::Unsupported`]. See the module documentation for
    /// why the connection is closed afterwards.
    ///
    /// Unsorted: a search streamed in the directory's order: the first `offset - 1`
    /// entries are skipped, the next `count` kept, the rest only counted, so memory stays
    /// within `count` entries plus what is in flight. It is a plain search first (one round
    /// trip for the small results most filters have); when the server's size limit cuts it
    /// short, it is repeated with the Paged Results control.
    ///
    /// `count == 0`: only the total (unsorted count, attributes `1.1`).
    pub async fn search_window(&self, q: &WindowQuery) -> Result<Window, DirectoryError> {
        match &q.sort {
            Some(key) if q.count > 0 => match u32::try_from(q.offset.max(1)) {
                Ok(offset) if offset <= MAX_INT => self.sorted_window(q, key, offset).await,
                // Beyond what VLV can address: beyond the end of any list, too.
                _ => Ok(Window {
                    entries: Vec::new(),
                    total: self.paged_window(q).await?.total,
                }),
            },
            _ => self.paged_window(q).await,
        }
    }

    async fn sorted_window(
        &self,
        q: &WindowQuery,
        key: &SortKey,
        offset: u32,
    ) -> Result<Window, DirectoryError> {
        let t = self.inner.operation_timeout;
        let after = u32::try_from(q.count - 1).unwrap_or(MAX_INT);
        let request: Vec<RawControl> = vec![
            controls::sort_request(std::slice::from_ref(key)),
            controls::vlv_request(0, after, offset, 0),
        ];
        let request = &request;
        self.run_with(
            "search_window_sorted",
            OpKind::Read,
            Retry::Idempotent,
            AfterUse::Close,
            |mut ldap| async move {
                let SearchResult(found, res) = ldap
                    .with_controls(request.clone())
                    .with_timeout(t)
                    .search(&q.base, Scope::Subtree, &q.filter, &q.attrs[..])
                    .await?;
                let cannot_sort = |why: String| {
                    Failure::Mapped(DirectoryError::Unsupported(format!(
                        "the directory cannot sort by {}: {why}",
                        key.attribute
                    )))
                };
                match controls::find_sort_result(&res.ctrls) {
                    Some(Ok(s)) if s.code != 0 => {
                        return Err(cannot_sort(describe(s.code, &res.text)));
                    }
                    Some(Err(e)) => {
                        return Err(Failure::Mapped(DirectoryError::Protocol(e.to_string())));
                    }
                    _ => {}
                }
                let vlv = match controls::find_vlv_response(&res.ctrls) {
                    Some(Ok(v)) => Some(v),
                    Some(Err(e)) => {
                        return Err(Failure::Mapped(DirectoryError::Protocol(e.to_string())));
                    }
                    None => None,
                };
                let past_the_end = |total: u32| {
                    Ok(Window {
                        entries: Vec::new(),
                        total: u64::from(total),
                    })
                };
                match (res.rc, &vlv) {
                    (0, _) => {}
                    (_, Some(v)) if controls::is_offset_range_error(v.result) => {
                        return past_the_end(v.content_count);
                    }
                    // unavailableCriticalExtension, noSuchAttribute (unknown sort
                    // attribute), inappropriateMatching (no ordering rule),
                    // virtualListViewError (e.g. sort control missing)
                    (12 | 16 | 18 | 76, _) => return Err(cannot_sort(describe(res.rc, &res.text))),
                    (32, _) => {
                        return Err(Failure::Mapped(DirectoryError::NoSuchEntry(q.base.clone())));
                    }
                    (4, _) => {
                        return Err(Failure::Mapped(size_limit(usize::MAX, found.len() as u64)));
                    }
                    _ => return Err(Failure::from_result(&res)),
                }
                let Some(vlv) = vlv else {
                    return Err(Failure::Mapped(DirectoryError::Protocol(
                        "the directory answered a sorted window without a virtual list view \
                         response control"
                            .into(),
                    )));
                };
                if vlv.result != 0 {
                    if controls::is_offset_range_error(vlv.result) {
                        return past_the_end(vlv.content_count);
                    }
                    return Err(cannot_sort(format!(
                        "virtual list view result {} ({})",
                        vlv.result,
                        controls::vlv_result_name(vlv.result)
                    )));
                }
                if offset > vlv.content_count {
                    // Some servers position on the last entry instead of refusing.
                    return past_the_end(vlv.content_count);
                }
                let entries = found
                    .into_iter()
                    .filter(|e| !e.is_ref() && !e.is_intermediate())
                    .take(usize::try_from(q.count).unwrap_or(usize::MAX))
                    .map(|e| Entry::from_search(SearchEntry::construct(e)))
                    .collect();
                Ok(Window {
                    entries,
                    total: u64::from(vlv.content_count),
                })
            },
        )
        .await
    }

    /// The unsorted window (and the count-only one), streamed with Paged Results.
    async fn paged_window(&self, q: &WindowQuery) -> Result<Window, DirectoryError> {
        let attrs: std::sync::Arc<[String]> = if q.count == 0 {
            std::sync::Arc::from(["1.1".to_owned()])
        } else {
            q.attrs.clone()
        };
        let attrs = &attrs;
        // Most SCIM lists are filters that match a handful of entries: a plain search
        // answers them in one round trip, and costs the server less than one with the
        // Paged Results control. Only when the server's size limit cuts a plain search
        // short is the listing repeated page by page. Either way entries stream through
        // and only the window is kept.
        match self.window_search(q, attrs, false).await {
            Err(DirectoryError::SizeLimit(_)) => self.window_search(q, attrs, true).await,
            other => other,
        }
    }

    /// One streamed search for [`Self::paged_window`]: skips `offset - 1` entries, keeps
    /// `count`, counts the rest, and stops with [`DirectoryError::ScanLimit`] past
    /// `scan_limit` entries (a plain search asks the server for one more than the limit,
    /// so it stops the search itself; a paged one is abandoned).
    async fn window_search(
        &self,
        q: &WindowQuery,
        attrs: &[String],
        paged: bool,
    ) -> Result<Window, DirectoryError> {
        let t = self.inner.operation_timeout;
        let skip = q.offset.max(1) - 1;
        let keep = q.count;
        let cap = q.scan_limit;
        self.run(
            "search_window",
            OpKind::Read,
            Retry::Idempotent,
            |mut ldap| async move {
                let mut adapters: Vec<Box<dyn Adapter<'_, &str, Vec<&str>>>> =
                    vec![Box::new(EntriesOnly::new())];
                if paged {
                    adapters.push(Box::new(PagedResults::new(PAGE_SIZE)));
                } else if let Some(cap) = cap {
                    let sizelimit = i32::try_from(cap.saturating_add(1)).unwrap_or(i32::MAX);
                    ldap.with_search_options(SearchOptions::new().sizelimit(sizelimit));
                }
                let mut stream = ldap
                    .with_timeout(t)
                    .streaming_search_with(
                        adapters,
                        &q.base,
                        Scope::Subtree,
                        &q.filter,
                        attrs.iter().map(String::as_str).collect(),
                    )
                    .await?;
                let mut seen: u64 = 0;
                let mut entries = Vec::new();
                loop {
                    match stream.next().await {
                        Ok(Some(e)) => {
                            seen += 1;
                            if let Some(cap) = cap
                                && seen > cap
                            {
                                let msgid = stream.ldap_handle().last_id();
                                let _ = stream.finish().await;
                                let _ = ldap.abandon(msgid).await;
                                return Err(Failure::Mapped(DirectoryError::ScanLimit(cap)));
                            }
                            if seen > skip && seen - skip <= keep {
                                entries.push(Entry::from_search(SearchEntry::construct(e)));
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = stream.finish().await;
                            return Err(Failure::from(e));
                        }
                    }
                }
                let res = stream.finish().await;
                match res.rc {
                    0 => Ok(Window {
                        entries,
                        total: seen,
                    }),
                    4 => Err(Failure::Mapped(size_limit(usize::MAX, seen))),
                    _ => Err(Failure::from_result(&res).naming_missing_entry(&q.base)),
                }
            },
        )
        .await
    }

    /// Add an entry. Attributes without values are left out (an attribute with no values
    /// does not exist). An existing entry is [`DirectoryError::AlreadyExists`], a missing
    /// parent [`DirectoryError::NoSuchEntry`] naming the parent.
    pub async fn add_entry(
        &self,
        dn: &str,
        attrs: &[(String, Vec<String>)],
    ) -> Result<(), DirectoryError> {
        let _writing = self.check_entry_dn(dn, "add")?;
        let parent = split_rdn(dn).map(|(_, p)| p).unwrap_or_default();
        let password = attrs
            .iter()
            .any(|(a, v)| a.eq_ignore_ascii_case(USER_PASSWORD) && !v.is_empty());
        let t = self.inner.operation_timeout;
        let kind = if password {
            OpKind::PasswordWrite
        } else {
            OpKind::Write
        };
        let result = self
            .run("add_entry", kind, Retry::IfNotSent, |mut ldap| async move {
                let list: Vec<(&str, HashSet<&str>)> = attrs
                    .iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(a, v)| (a.as_str(), v.iter().map(String::as_str).collect()))
                    .collect();
                if password {
                    ldap.with_controls(ppolicy::request());
                }
                let res = ldap.with_timeout(t).add(dn, list).await?;
                match res.rc {
                    0 => Ok(()),
                    _ => Err(Failure::from_result(&res).naming_entry(parent, dn)),
                }
            })
            .await;
        result.map_err(|e| redact_values(e, password_values(attrs.iter().map(|(a, v)| (a, v)))))
    }

    /// Apply every change in ONE modify request, so the server applies all of them or
    /// none. `assertion` (an RFC 4515 filter such as `(entryCSN=…)`) is sent with the
    /// critical Assertion control: if the entry no longer matches it, nothing is written
    /// and the result is [`DirectoryError::AssertionFailed`]. No changes (adds without
    /// values count as none): `Ok` without contacting the directory.
    pub async fn modify_entry(
        &self,
        dn: &str,
        changes: &[Change],
        assertion: Option<&str>,
    ) -> Result<(), DirectoryError> {
        let _writing = self.check_entry_dn(dn, "modify")?;
        let changes: Vec<&Change> = changes
            .iter()
            .filter(|c| !matches!(c, Change::Add(_, v) if v.is_empty()))
            .collect();
        if changes.is_empty() {
            return Ok(());
        }
        let assertion = self.assertion_for(dn, assertion).await?;
        let password = changes
            .iter()
            .any(|c| change_attr(c).eq_ignore_ascii_case(USER_PASSWORD));
        let kind = if password {
            OpKind::PasswordWrite
        } else {
            OpKind::Write
        };
        let t = self.inner.operation_timeout;
        let (changes, assertion) = (&changes, &assertion);
        let result = self
            .run(
                "modify_entry",
                kind,
                Retry::IfNotSent,
                |mut ldap| async move {
                    let mods: Vec<Mod<&str>> = changes
                        .iter()
                        .map(|c| match c {
                            Change::Add(a, v) => Mod::Add(a.as_str(), values(v)),
                            Change::Delete(a, v) => Mod::Delete(a.as_str(), values(v)),
                            Change::Replace(a, v) => Mod::Replace(a.as_str(), values(v)),
                        })
                        .collect();
                    let mut ctrls: Vec<RawControl> = assertion.iter().cloned().collect();
                    if password {
                        ctrls.push(ppolicy::request());
                    }
                    if !ctrls.is_empty() {
                        ldap.with_controls(ctrls);
                    }
                    let res = ldap.with_timeout(t).modify(dn, mods).await?;
                    match res.rc {
                        0 => Ok(()),
                        _ => Err(Failure::from_result(&res).naming_entry(dn, dn)),
                    }
                },
            )
            .await;
        result.map_err(|e| {
            redact_values(
                e,
                password_values(changes.iter().map(|c| match c {
                    Change::Add(a, v) | Change::Delete(a, v) | Change::Replace(a, v) => (a, v),
                })),
            )
        })
    }

    /// Rename within the same parent (ModifyDN with deleteoldrdn): `new_rdn` is one RDN
    /// such as `uid=newname`, its value escaped (RFC 4514). Returns the new DN. An entry
    /// that already has that name is [`DirectoryError::AlreadyExists`] naming the new DN.
    /// `assertion` as for [`Self::modify_entry`].
    pub async fn rename_entry(
        &self,
        dn: &str,
        new_rdn: &str,
        assertion: Option<&str>,
    ) -> Result<String, DirectoryError> {
        let _writing = self.check_entry_dn(dn, "rename")?;
        let new_rdn = new_rdn.trim();
        let Some((_, parent)) = split_rdn(dn) else {
            return Err(DirectoryError::NoSuchEntry(dn.to_owned()));
        };
        if !escape::is_valid_dn(new_rdn) || split_rdn(new_rdn).is_some() {
            return Err(DirectoryError::Rejected {
                rc: 34,
                message: format!("the new name {new_rdn:?} is not one RDN (e.g. uid=newname)"),
            });
        }
        let new_dn = format!("{new_rdn},{parent}");
        let _writing_new = self.check_entry_dn(&new_dn, "rename")?;
        let assertion = self.assertion_for(dn, assertion).await?;
        let t = self.inner.operation_timeout;
        let (assertion, new_dn_ref) = (&assertion, new_dn.as_str());
        self.run(
            "rename_entry",
            OpKind::Write,
            Retry::IfNotSent,
            |mut ldap| async move {
                if let Some(a) = assertion {
                    ldap.with_controls(a.clone());
                }
                let res = ldap
                    .with_timeout(t)
                    .modifydn(dn, new_rdn, true, None)
                    .await?;
                match res.rc {
                    0 => Ok(()),
                    _ => Err(Failure::from_result(&res).naming_entry(dn, new_dn_ref)),
                }
            },
        )
        .await?;
        Ok(new_dn)
    }

    /// Delete a leaf entry (one with children is [`DirectoryError::Rejected`], rc 66). A
    /// missing entry is [`DirectoryError::NoSuchEntry`]. `assertion` as for
    /// [`Self::modify_entry`].
    pub async fn delete_entry(
        &self,
        dn: &str,
        assertion: Option<&str>,
    ) -> Result<(), DirectoryError> {
        let _writing = self.check_entry_dn(dn, "delete")?;
        let assertion = self.assertion_for(dn, assertion).await?;
        let assertion = &assertion;
        let t = self.inner.operation_timeout;
        self.run(
            "delete_entry",
            OpKind::Write,
            Retry::IfNotSent,
            |mut ldap| async move {
                if let Some(a) = assertion {
                    ldap.with_controls(a.clone());
                }
                let res = ldap.with_timeout(t).delete(dn).await?;
                match res.rc {
                    0 => Ok(()),
                    _ => Err(Failure::from_result(&res).naming_entry(dn, dn)),
                }
            },
        )
        .await
    }

    /// Whether `candidate` is the user's current password, checked locally against the
    /// `userPassword` values read as the service account (see `userpassword`): no bind and
    /// no compare, so nothing in the directory changes (no failure count, no last-success
    /// time, no lockout, no history). `Some(true)`/`Some(false)` when that can be told;
    /// `None` when no stored value uses a scheme lockbridge can check (`{CRYPT}`,
    /// `{SASL}`, …) or the service account cannot read the attribute.
    ///
    /// Only users (entries strictly below `users_base`, not the service account): anything
    /// else is [`DirectoryError::NoSuchEntry`], as is a user that does not exist.
    pub async fn password_matches(
        &self,
        dn: &str,
        candidate: &Secret,
    ) -> Result<Option<bool>, DirectoryError> {
        if !self.is_user_dn(dn) {
            tracing::warn!(
                entry.dn = dn,
                "refusing to check the password of an entry outside users_base"
            );
            return Err(DirectoryError::NoSuchEntry(dn.to_owned()));
        }
        let t = self.inner.operation_timeout;
        let stored = self
            .run(
                "password_matches",
                OpKind::Read,
                Retry::Idempotent,
                |mut ldap| async move {
                    let SearchResult(found, res) = ldap
                        .with_timeout(t)
                        .search(dn, Scope::Base, "(objectClass=*)", vec![USER_PASSWORD])
                        .await?;
                    if res.rc != 0 {
                        return Err(Failure::from_result(&res).naming_missing_entry(dn));
                    }
                    let Some(entry) = found
                        .into_iter()
                        .find(|e| !e.is_ref() && !e.is_intermediate())
                    else {
                        return Err(Failure::Mapped(DirectoryError::NoSuchEntry(dn.to_owned())));
                    };
                    Ok(split_password(SearchEntry::construct(entry)).1)
                },
            )
            .await?;
        stored.matches(candidate).await
    }

    /// [`Self::search_entries`] for an entry about to be written: each user entry comes
    /// with its stored `userPassword` values, read in the same search, so that a pushed
    /// password can be compared with the current one
    /// ([`StoredPassword::matches`]) without another round trip. The values never appear
    /// in the [`Entry`]; entries that are not users (see [`Self::password_matches`]) get
    /// none.
    pub async fn search_entries_for_write(
        &self,
        base: &str,
        scope: SearchScope,
        filter: &str,
        attrs: &[&str],
        limit: usize,
    ) -> Result<Vec<(Entry, StoredPassword)>, DirectoryError> {
        let mut wanted: Vec<&str> = attrs.to_vec();
        if !wanted.iter().any(|a| a.eq_ignore_ascii_case(USER_PASSWORD)) {
            wanted.push(USER_PASSWORD);
        }
        self.search_with(
            "search_entries_for_write",
            base,
            scope,
            filter,
            &wanted,
            limit,
            None,
            |e| self.write_view(SearchEntry::construct(e)),
        )
        .await
    }

    /// Whether the root DSE lists both the Server Side Sort and the Virtual List View
    /// request controls. The first successful answer is kept for the life of this
    /// `Directory`; a root DSE the service account cannot read counts as "no".
    pub async fn supports_sorting(&self) -> Result<bool, DirectoryError> {
        if let Some(known) = self.inner.sorting_supported.get() {
            return Ok(*known);
        }
        let listed = self.supported_controls().await?;
        let listed = |oid: &str| listed.iter().any(|c| c == oid);
        let supported = listed(controls::SORT_REQUEST_OID) && listed(controls::VLV_REQUEST_OID);
        let _ = self.inner.sorting_supported.set(supported);
        Ok(supported)
    }
}

impl Directory {
    /// Whether the root DSE lists the request control `oid`; a root DSE the service
    /// account cannot read counts as "no".
    pub async fn supports_control(&self, oid: &str) -> Result<bool, DirectoryError> {
        Ok(self.supported_controls().await?.iter().any(|c| c == oid))
    }

    /// The root DSE's `supportedControl` values (empty when it cannot be read).
    async fn supported_controls(&self) -> Result<Vec<String>, DirectoryError> {
        let t = self.inner.operation_timeout;
        self.run(
            "supported_controls",
            OpKind::Read,
            Retry::Idempotent,
            |mut ldap| async move {
                let SearchResult(found, res) = ldap
                    .with_timeout(t)
                    .search("", Scope::Base, "(objectClass=*)", vec!["supportedControl"])
                    .await?;
                match res.rc {
                    0 | 32 | 50 => {}
                    _ => return Err(Failure::from_result(&res)),
                }
                let Some(dse) = found
                    .into_iter()
                    .find(|e| !e.is_ref() && !e.is_intermediate())
                else {
                    return Ok(Vec::new());
                };
                let dse = Entry::from_search(SearchEntry::construct(dse));
                Ok(dse.all("supportedControl").to_vec())
            },
        )
        .await
    }

    /// An entry as a write reads it: the entry, and its stored password when it is a
    /// user's (see [`Self::search_entries_for_write`]).
    pub(crate) fn write_view(&self, e: SearchEntry) -> (Entry, StoredPassword) {
        let (entry, stored, _) = self.write_view_keyed(e);
        (entry, stored)
    }

    /// [`Self::write_view`] with the entry's [`super::dn_key`], worked out once for both
    /// (the followed copy files every report under it).
    pub(crate) fn write_view_keyed(&self, e: SearchEntry) -> (Entry, StoredPassword, String) {
        let (entry, stored) = split_password(e);
        let key = super::dn_key(&entry.dn);
        if self.is_user_key(&entry.dn, &key) {
            (entry, stored, key)
        } else {
            (entry, StoredPassword::new(Vec::new()), key)
        }
    }
}

impl Directory {
    /// Which of the object classes `names` the directory's schema defines (read from the
    /// subschema subentry the root DSE names, RFC 4512 §4.2), in the order asked. A
    /// schema the service account cannot read counts as defining none.
    pub async fn defines_object_classes(
        &self,
        names: &[&str],
    ) -> Result<Vec<bool>, DirectoryError> {
        let t = self.inner.operation_timeout;
        self.run(
            "defines_object_classes",
            OpKind::Read,
            Retry::Idempotent,
            |mut ldap| async move {
                let SearchResult(found, res) = ldap
                    .with_timeout(t)
                    .search(
                        "",
                        Scope::Base,
                        "(objectClass=*)",
                        vec!["subschemaSubentry"],
                    )
                    .await?;
                match res.rc {
                    0 | 32 | 50 => {}
                    _ => return Err(Failure::from_result(&res)),
                }
                let subschema = found
                    .into_iter()
                    .find(|e| !e.is_ref() && !e.is_intermediate())
                    .map(|e| Entry::from_search(SearchEntry::construct(e)))
                    .and_then(|dse| dse.first("subschemaSubentry").map(str::to_owned));
                let Some(subschema) = subschema else {
                    return Ok(vec![false; names.len()]);
                };
                let SearchResult(found, res) = ldap
                    .with_timeout(t)
                    .search(
                        &subschema,
                        Scope::Base,
                        "(objectClass=subschema)",
                        vec!["objectClasses"],
                    )
                    .await?;
                match res.rc {
                    0 | 32 | 50 => {}
                    _ => return Err(Failure::from_result(&res)),
                }
                let definitions: Vec<String> = found
                    .into_iter()
                    .filter(|e| !e.is_ref() && !e.is_intermediate())
                    .flat_map(|e| {
                        Entry::from_search(SearchEntry::construct(e))
                            .all("objectClasses")
                            .to_vec()
                    })
                    .collect();
                Ok(names
                    .iter()
                    .map(|n| definitions.iter().any(|d| defines_name(d, n)))
                    .collect())
            },
        )
        .await
    }
}

/// Whether a schema definition (RFC 4512 §4.1, `( OID NAME 'a' ... )` or
/// `NAME ( 'a' 'b' )`) has the name `name` (any case).
fn defines_name(definition: &str, name: &str) -> bool {
    let Some(start) = definition.find(" NAME ") else {
        return false;
    };
    let rest = definition[start + 6..].trim_start();
    let names = if let Some(list) = rest.strip_prefix('(') {
        list.split(')').next().unwrap_or("")
    } else {
        rest.split_whitespace().next().unwrap_or("")
    };
    names
        .split_whitespace()
        .map(|n| n.trim_matches('\''))
        .any(|n| n.eq_ignore_ascii_case(name))
}

/// `SizeLimit`: our own `limit` when more than that many matched, otherwise (the
/// directory's own limit cut the search short) the number it let through.
fn size_limit(limit: usize, returned: u64) -> DirectoryError {
    let returned = usize::try_from(returned).unwrap_or(usize::MAX);
    if returned > limit {
        DirectoryError::SizeLimit(limit)
    } else {
        tracing::warn!(
            returned,
            "the directory's size limit cut a search short; raise the service account's \
             limits (OpenLDAP: limits dn.exact=<bind_dn> size=unlimited)"
        );
        DirectoryError::SizeLimit(returned)
    }
}

impl Directory {
    /// The Assertion control for `filter` on `dn`, for a write that must only happen
    /// while the entry still matches it. A directory without the control (389-ds) gets
    /// the test as a base search right before the write instead: a mismatch is
    /// [`DirectoryError::AssertionFailed`] as the control's would be, and the write goes
    /// without a control (a write by someone else between the two is not caught).
    async fn assertion_for(
        &self,
        dn: &str,
        filter: Option<&str>,
    ) -> Result<Option<RawControl>, DirectoryError> {
        let control = assertion_control(filter)?;
        let Some(filter) = filter.filter(|_| !self.inner.dialect.supports_assertions()) else {
            return Ok(control);
        };
        let t = self.inner.operation_timeout;
        let matches = self
            .run(
                "assert_entry",
                OpKind::Read,
                Retry::Idempotent,
                |mut ldap| async move {
                    let SearchResult(entries, res) = ldap
                        .with_timeout(t)
                        .search(dn, Scope::Base, filter, vec!["1.1"])
                        .await?;
                    match res.rc {
                        0 => Ok(entries.iter().any(|e| !e.is_ref())),
                        _ => Err(Failure::from_result(&res).naming_entry(dn, dn)),
                    }
                },
            )
            .await?;
        if matches {
            Ok(None)
        } else {
            Err(DirectoryError::AssertionFailed)
        }
    }
}

/// The Assertion control for `filter`, checked before anything is sent.
fn assertion_control(filter: Option<&str>) -> Result<Option<RawControl>, DirectoryError> {
    match filter {
        None => Ok(None),
        Some(f) => controls::assertion(f).map(Some).ok_or_else(|| {
            DirectoryError::Protocol(format!(
                "the assertion {f:?} is not a valid LDAP filter (RFC 4515)"
            ))
        }),
    }
}

fn change_attr(c: &Change) -> &str {
    match c {
        Change::Add(a, _) | Change::Delete(a, _) | Change::Replace(a, _) => a,
    }
}

fn values(v: &[String]) -> HashSet<&str> {
    v.iter().map(String::as_str).collect()
}

/// The values of `userPassword` among `attrs`, for redaction.
fn password_values<'a>(attrs: impl Iterator<Item = (&'a String, &'a Vec<String>)>) -> Vec<&'a str> {
    attrs
        .filter(|(a, _)| a.eq_ignore_ascii_case(USER_PASSWORD))
        .flat_map(|(_, v)| v.iter().map(String::as_str))
        .collect()
}

fn redact_values(mut e: DirectoryError, secrets: Vec<&str>) -> DirectoryError {
    for s in secrets {
        e = redact(e, s);
    }
    e
}

/// The DN an entry at `dn` gets when renamed to `new_rdn` (same parent).
pub fn renamed_dn(dn: &str, new_rdn: &str) -> String {
    match split_rdn(dn) {
        Some((_, parent)) => format!("{new_rdn},{parent}"),
        None => new_rdn.to_owned(),
    }
}

/// Split a DN into its first RDN and the rest (the parent), at the first comma that is
/// not escaped; `None` for a DN of one RDN.
pub(super) fn split_rdn(dn: &str) -> Option<(&str, &str)> {
    let mut escaped = false;
    for (i, c) in dn.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => return Some((dn[..i].trim(), dn[i + 1..].trim())),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_read_from_definitions() {
        let d = "( 2.25.1.1.2 NAME 'lockbridgeScimUser' DESC 'x' SUP top AUXILIARY )";
        assert!(defines_name(d, "lockbridgeScimUser"));
        assert!(defines_name(d, "LOCKBRIDGESCIMUSER"));
        assert!(!defines_name(d, "lockbridgeScim"));
        assert!(!defines_name(d, "x"), "a DESC is not a name");
        let both = "( 2.5.6.6 NAME ( 'person' 'human' ) SUP top STRUCTURAL )";
        assert!(defines_name(both, "human") && defines_name(both, "person"));
        assert!(!defines_name("( 1.2.3 DESC 'no name' )", "no"));
    }

    #[test]
    fn renamed_keeps_the_parent() {
        assert_eq!(
            renamed_dn("uid=bob,ou=people,dc=example,dc=org", "uid=rob"),
            "uid=rob,ou=people,dc=example,dc=org"
        );
        assert_eq!(renamed_dn("uid=a\\,b,ou=p", "uid=c"), "uid=c,ou=p");
    }

    #[test]
    fn rdn_split() {
        assert_eq!(
            split_rdn("uid=bob,ou=people,dc=example,dc=org"),
            Some(("uid=bob", "ou=people,dc=example,dc=org"))
        );
        assert_eq!(
            split_rdn("cn=Smith\\, John , ou=people,dc=x"),
            Some(("cn=Smith\\, John", "ou=people,dc=x"))
        );
        assert_eq!(split_rdn("cn=a\\\\,dc=x"), Some(("cn=a\\\\", "dc=x")));
        assert_eq!(split_rdn("cn=a\\2Cb,dc=x"), Some(("cn=a\\2Cb", "dc=x")));
        assert_eq!(split_rdn("uid=bob"), None);
        assert_eq!(split_rdn("cn=a\\,b"), None);
    }

    #[test]
    fn entries_ignore_the_case_of_attribute_names() {
        let e = Entry::new(
            "uid=a,dc=x",
            [
                ("CN".to_string(), vec!["A".to_string()]),
                ("cn".to_string(), vec!["B".to_string()]),
            ],
        );
        assert_eq!(e.all("Cn"), ["A", "B"]);
        assert_eq!(e.first("CN"), Some("A"));
        assert!(e.has("cn") && !e.has("sn"));
    }

    #[test]
    fn password_values_are_found_for_redaction() {
        let attrs = [
            ("cn".to_string(), vec!["x".to_string()]),
            ("UserPassword".to_string(), vec!["s3cret".to_string()]),
        ];
        let found = password_values(attrs.iter().map(|(a, v)| (a, v)));
        assert_eq!(found, ["s3cret"]);
        let e = redact_values(
            DirectoryError::Rejected {
                rc: 21,
                message: "value s3cret invalid".into(),
            },
            found,
        );
        assert_eq!(
            e.to_string(),
            "the directory refused the change (invalidAttributeSyntax): value [redacted] invalid"
        );
    }

    #[test]
    fn assertion_filters_are_checked_before_sending() {
        assert!(assertion_control(None).unwrap().is_none());
        assert!(assertion_control(Some("(entryCSN=x)")).unwrap().is_some());
        assert!(matches!(
            assertion_control(Some("entryCSN=x")),
            Err(DirectoryError::Protocol(_))
        ));
    }
}

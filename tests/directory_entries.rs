//! The generic entry operations of `lockbridge::directory` (search, windows, read, add,
//! modify, rename, delete, local password checks) against a real OpenLDAP slapd with
//! ppolicy and sssvlv (`tests/harness/slapd.rs`), over verified TLS.
//!
//! Each test starts its own sandbox, so writes in one test do not disturb another.

mod harness;

use std::collections::HashSet;
use std::time::Duration;

use harness::slapd::Slapd;
use lockbridge::directory::{
    Change, Directory, DirectoryError, DirectoryKind, DirectorySettings, Entry, PolicyRejection,
    SearchScope, SortKey, WindowQuery,
};
use lockbridge::types::Secret;

fn settings(slapd: &Slapd) -> DirectorySettings {
    DirectorySettings {
        server_hashes_cleartext: false,
        kind: DirectoryKind::OpenLdap,
        url: slapd.ldaps_url.clone(),
        starttls: false,
        ca_file: Some(slapd.ca_file.clone()),
        tls_insecure_skip_verify: false,
        allow_plaintext: false,
        bind_dn: slapd.service_dn.clone(),
        bind_password: Secret::new(slapd.service_password.clone()),
        users_base: slapd.users_base.clone(),
        groups_base: slapd.groups_base.clone(),
        user_filter: "(objectClass=inetOrgPerson)".into(),
        user_name_attribute: "uid".into(),
        mail_attribute: "mail".into(),
        display_name_attribute: "cn".into(),
        alternate_mail_attribute: "otherMailbox".into(),
        mobile_attribute: "mobile".into(),
        admin_group_dns: vec![slapd.admin_group_dn.clone()],
        pool_size: 4,
        connect_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(10),
    }
}

fn directory(slapd: &Slapd) -> Directory {
    Directory::new(settings(slapd)).expect("valid settings")
}

fn attrs(pairs: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    pairs
        .iter()
        .map(|(a, v)| (a.to_string(), v.iter().map(|s| s.to_string()).collect()))
        .collect()
}

fn person(uid: &str) -> Vec<(String, Vec<String>)> {
    attrs(&[
        ("objectClass", &["inetOrgPerson"]),
        ("uid", &[uid]),
        ("cn", &["New Person"]),
        ("sn", &["Person"]),
        ("mail", &["new@example.org"]),
    ])
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn csn(dir: &Directory, dn: &str) -> String {
    dir.read_entry(dn, &["entryCSN"])
        .await
        .expect("read")
        .expect("exists")
        .first("entryCSN")
        .expect("entryCSN")
        .to_owned()
}

// --------------------------------------------------------------------------------------
// Writes

#[tokio::test]
async fn add_read_modify_rename_delete() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let dn = slapd.user_dn("newbie");

    dir.add_entry(&dn, &person("newbie")).await.expect("add");
    let e = dir
        .read_entry(&dn, &["uid", "CN", "mail", "entryUUID"])
        .await
        .unwrap()
        .expect("added entry");
    assert_eq!(e.dn.to_lowercase(), dn.to_lowercase());
    assert_eq!(e.first("uid"), Some("newbie"));
    // Attribute names come back lower-cased, whatever case was asked for.
    assert!(e.attrs.contains_key("cn"), "{e:?}");
    assert!(e.attrs.keys().all(|k| *k == k.to_lowercase()), "{e:?}");
    let uuid = e.first("entryUUID").expect("entryUUID").to_owned();

    dir.modify_entry(
        &dn,
        &[
            Change::Replace("mail".into(), strings(&["renamed@example.org"])),
            Change::Add(
                "telephoneNumber".into(),
                strings(&["+1 555 0100", "+1 555 0101"]),
            ),
            Change::Replace("displayName".into(), strings(&["Newbie"])),
            // Nothing to add: left out.
            Change::Add("description".into(), vec![]),
        ],
        None,
    )
    .await
    .expect("modify");
    let e = dir.read_entry(&dn, &["*"]).await.unwrap().unwrap();
    assert_eq!(e.all("mail"), ["renamed@example.org"]);
    assert_eq!(e.all("telephonenumber").len(), 2);
    assert_eq!(e.first("displayName"), Some("Newbie"));
    assert!(!e.has("description"));

    dir.modify_entry(
        &dn,
        &[
            Change::Delete("telephoneNumber".into(), strings(&["+1 555 0100"])),
            Change::Delete("displayName".into(), vec![]),
            // Replace with nothing deletes (and is fine when absent).
            Change::Replace("description".into(), vec![]),
        ],
        None,
    )
    .await
    .expect("modify (deletes)");
    let e = dir.read_entry(&dn, &["*"]).await.unwrap().unwrap();
    assert_eq!(e.all("telephoneNumber"), ["+1 555 0101"]);
    assert!(!e.has("displayName"));

    // No changes: fine, and nothing is sent (the directory could be down).
    dir.modify_entry(&dn, &[], None).await.expect("no changes");
    dir.modify_entry(&dn, &[Change::Add("description".into(), vec![])], None)
        .await
        .expect("only empty adds");

    let new_dn = dir
        .rename_entry(&dn, "uid=veteran", None)
        .await
        .expect("rename");
    assert_eq!(new_dn, slapd.user_dn("veteran"));
    assert!(dir.read_entry(&dn, &["uid"]).await.unwrap().is_none());
    let e = dir
        .read_entry(&new_dn, &["uid", "entryUUID"])
        .await
        .unwrap()
        .expect("renamed entry");
    // deleteoldrdn: the old name is gone from the entry too; the entry is the same one.
    assert_eq!(e.all("uid"), ["veteran"]);
    assert_eq!(e.first("entryUUID"), Some(uuid.as_str()));

    dir.delete_entry(&new_dn, None).await.expect("delete");
    assert!(dir.read_entry(&new_dn, &["uid"]).await.unwrap().is_none());
    let e = dir.delete_entry(&new_dn, None).await.unwrap_err();
    assert!(
        matches!(&e, DirectoryError::NoSuchEntry(d) if *d == new_dn),
        "{e:?}"
    );
    let e = dir
        .modify_entry(
            &new_dn,
            &[Change::Replace("sn".into(), strings(&["x"]))],
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, DirectoryError::NoSuchEntry(d) if *d == new_dn),
        "{e:?}"
    );
}

#[tokio::test]
async fn groups_and_their_members() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let group = format!("cn=scim-team,{}", slapd.groups_base);
    let alice = slapd.user_dn("alice");
    let bob = slapd.user_dn("bob");
    dir.add_entry(
        &group,
        &attrs(&[
            ("objectClass", &["groupOfNames"]),
            ("cn", &["scim-team"]),
            ("member", &[alice.as_str()]),
        ]),
    )
    .await
    .expect("add group");
    dir.modify_entry(
        &group,
        &[Change::Add("member".into(), vec![bob.clone()])],
        None,
    )
    .await
    .expect("add member");
    let g = dir.read_entry(&group, &["member"]).await.unwrap().unwrap();
    assert_eq!(g.all("member").len(), 2, "{g:?}");
    // A member that is already there: attributeOrValueExists, refused as data.
    let e = dir
        .modify_entry(
            &group,
            &[Change::Add("member".into(), vec![bob.clone()])],
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, DirectoryError::Rejected { rc: 20, .. }),
        "{e:?}"
    );
    dir.modify_entry(
        &group,
        &[Change::Delete("member".into(), vec![alice])],
        None,
    )
    .await
    .expect("remove member");
    let g = dir.read_entry(&group, &["member"]).await.unwrap().unwrap();
    assert_eq!(g.all("member"), [bob.as_str()]);
    dir.delete_entry(&group, None).await.expect("delete group");
}

#[tokio::test]
async fn a_modify_with_one_bad_change_applies_nothing() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let dn = slapd.user_dn("carol");
    let before = dir.read_entry(&dn, &["*"]).await.unwrap().unwrap();
    let e = dir
        .modify_entry(
            &dn,
            &[
                Change::Replace("mail".into(), strings(&["changed@example.org"])),
                Change::Replace("displayName".into(), strings(&["Changed"])),
                // Not in carol's object classes: objectClassViolation.
                Change::Add("gidNumber".into(), strings(&["100"])),
            ],
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, DirectoryError::Rejected { rc: 65, message } if !message.is_empty()),
        "{e:?}"
    );
    let after = dir.read_entry(&dn, &["*"]).await.unwrap().unwrap();
    assert_eq!(before, after, "a refused modify must change nothing");

    // Deleting a value that is not there: noSuchAttribute, nothing applied either.
    let e = dir
        .modify_entry(
            &dn,
            &[
                Change::Replace("mail".into(), strings(&["changed@example.org"])),
                Change::Delete("telephoneNumber".into(), strings(&["+1 000"])),
            ],
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, DirectoryError::Rejected { rc: 16, .. }),
        "{e:?}"
    );
    assert_eq!(before, dir.read_entry(&dn, &["*"]).await.unwrap().unwrap());

    // Schema problems on add are refused as data too (no sn: objectClassViolation).
    let e = dir
        .add_entry(
            &slapd.user_dn("nosn"),
            &attrs(&[
                ("objectClass", &["inetOrgPerson"]),
                ("uid", &["nosn"]),
                ("cn", &["No Sn"]),
            ]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, DirectoryError::Rejected { rc: 65, .. }),
        "{e:?}"
    );
    // Deleting an entry with children: notAllowedOnNonLeaf (the service account may not
    // delete the base anyway, so use a subtree of our own).
    let ou = format!("ou=sub,{}", slapd.users_base);
    dir.add_entry(
        &ou,
        &attrs(&[("objectClass", &["organizationalUnit"]), ("ou", &["sub"])]),
    )
    .await
    .expect("add ou");
    dir.add_entry(&format!("uid=leaf,{ou}"), &person("leaf"))
        .await
        .expect("add leaf");
    let e = dir.delete_entry(&ou, None).await.unwrap_err();
    assert!(
        matches!(e, DirectoryError::Rejected { rc: 66, .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn existing_names_are_already_exists() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let bob = slapd.user_dn("bob");
    let e = dir.add_entry(&bob, &person("bob")).await.unwrap_err();
    assert!(
        matches!(&e, DirectoryError::AlreadyExists(d) if *d == bob),
        "{e:?}"
    );
    assert_eq!(e.kind(), "already_exists");
    // Renaming onto an existing name names the new DN.
    let e = dir
        .rename_entry(&slapd.user_dn("carol"), "uid=bob", None)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, DirectoryError::AlreadyExists(d) if *d == bob),
        "{e:?}"
    );
    // A missing parent names the parent.
    let e = dir
        .add_entry(
            &format!("uid=x,ou=nowhere,{}", slapd.users_base),
            &person("x"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, DirectoryError::NoSuchEntry(d) if d.starts_with("ou=nowhere,")),
        "{e:?}"
    );
    // A new RDN that is not one RDN is refused before anything is sent.
    for bad in ["uid=a,ou=other", "noequals", ""] {
        let e = dir
            .rename_entry(&slapd.user_dn("carol"), bad, None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, DirectoryError::Rejected { rc: 34, .. }),
            "{bad:?}: {e:?}"
        );
    }
}

#[tokio::test]
async fn assertions_make_writes_conditional() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let dn = slapd.user_dn("dave");
    let first = csn(&dir, &dn).await;
    let if_match = |csn: &str| {
        format!(
            "(entryCSN={})",
            lockbridge::directory::escape::filter_value(csn)
        )
    };

    // Matches: applied, and the CSN moves on.
    let change = [Change::Replace("description".into(), strings(&["one"]))];
    dir.modify_entry(&dn, &change, Some(&if_match(&first)))
        .await
        .expect("assertion holds");
    let second = csn(&dir, &dn).await;
    assert_ne!(first, second);

    // Stale: nothing applied.
    let change = [Change::Replace("description".into(), strings(&["two"]))];
    let e = dir
        .modify_entry(&dn, &change, Some(&if_match(&first)))
        .await
        .unwrap_err();
    assert!(matches!(e, DirectoryError::AssertionFailed), "{e:?}");
    assert_eq!(e.kind(), "assertion_failed");
    let e = dir
        .read_entry(&dn, &["description"])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.all("description"), ["one"]);
    assert_eq!(csn(&dir, &dn).await, second);

    // Rename and delete honour it too.
    let e = dir
        .rename_entry(&dn, "uid=david", Some(&if_match(&first)))
        .await
        .unwrap_err();
    assert!(matches!(e, DirectoryError::AssertionFailed), "{e:?}");
    let e = dir
        .delete_entry(&dn, Some(&if_match(&first)))
        .await
        .unwrap_err();
    assert!(matches!(e, DirectoryError::AssertionFailed), "{e:?}");
    assert!(dir.read_entry(&dn, &["1.1"]).await.unwrap().is_some());
    let renamed = dir
        .rename_entry(&dn, "uid=david", Some(&if_match(&second)))
        .await
        .expect("rename with a fresh assertion");
    let third = csn(&dir, &renamed).await;
    dir.delete_entry(&renamed, Some(&if_match(&third)))
        .await
        .expect("delete with a fresh assertion");
    assert!(dir.read_entry(&renamed, &["1.1"]).await.unwrap().is_none());

    // A filter that does not parse is refused before anything is sent.
    let e = dir
        .modify_entry(&slapd.user_dn("erin"), &change, Some("entryCSN=x"))
        .await
        .unwrap_err();
    assert!(matches!(e, DirectoryError::Protocol(_)), "{e:?}");
}

#[tokio::test]
async fn writes_outside_the_bases_are_refused() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let change = [Change::Replace("description".into(), strings(&["x"]))];
    let outside = [
        slapd.service_dn.clone(),
        slapd.users_base.clone(),
        slapd.groups_base.clone(),
        format!("cn=default,ou=policies,{}", slapd.base_dn),
        format!("cn=x,ou=services,{}", slapd.base_dn),
        slapd.base_dn.clone(),
        format!("uid=x,{},dc=evil", slapd.users_base),
        "uid=x<y,ou=people,dc=example,dc=org".into(),
        String::new(),
    ];
    for dn in &outside {
        let results = [
            dir.add_entry(dn, &person("x")).await,
            dir.modify_entry(dn, &change, None).await,
            dir.modify_entry(dn, &[], None).await,
            dir.rename_entry(dn, "cn=y", None).await.map(|_| ()),
            dir.delete_entry(dn, None).await,
        ];
        for r in results {
            assert!(
                matches!(&r, Err(DirectoryError::NoSuchEntry(d)) if d == dn),
                "{dn}: {r:?}"
            );
        }
    }
    // Nothing changed.
    assert!(
        slapd
            .ldapsearch_attr(&slapd.service_dn, "description")
            .iter()
            .all(|d| d != "x")
    );
    // Without groups_base, group entries are outside too.
    let no_groups = Directory::new(DirectorySettings {
        groups_base: String::new(),
        ..settings(&slapd)
    })
    .unwrap();
    let staff = format!("cn=staff,{}", slapd.groups_base);
    let e = no_groups
        .modify_entry(&staff, &change, None)
        .await
        .unwrap_err();
    assert!(matches!(e, DirectoryError::NoSuchEntry(_)), "{e:?}");
    dir.modify_entry(&staff, &change, None)
        .await
        .expect("with groups_base, groups may be written");
    // And a malformed groups_base is a configuration error.
    let e = Directory::new(DirectorySettings {
        groups_base: "groups".into(),
        ..settings(&slapd)
    })
    .unwrap_err();
    assert!(
        matches!(&e, DirectoryError::Config(t) if t.contains("groups_base")),
        "{e:?}"
    );
}

fn signal_slapd(slapd: &Slapd, sig: &str) {
    let pid = std::fs::read_to_string(slapd.dir.join("slapd.pid")).expect("slapd.pid");
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.trim())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} failed");
}

#[tokio::test]
async fn an_entry_write_without_an_answer_is_outcome_unknown() {
    let slapd = Slapd::start();
    let dir = Directory::new(DirectorySettings {
        pool_size: 1,
        operation_timeout: Duration::from_secs(1),
        ..settings(&slapd)
    })
    .unwrap();
    let bob = slapd.user_dn("bob");
    // A connection in the pool first, so the write is what meets the frozen server.
    assert!(dir.read_entry(&bob, &["1.1"]).await.unwrap().is_some());
    signal_slapd(&slapd, "STOP");
    let change = [Change::Replace("description".into(), strings(&["frozen"]))];
    let result = dir.modify_entry(&bob, &change, None).await;
    signal_slapd(&slapd, "CONT");
    let e = result.unwrap_err();
    assert!(matches!(e, DirectoryError::WriteOutcomeUnknown(_)), "{e:?}");
    assert!(e.is_unavailable());
    // The directory answers again, on a fresh connection (whether the write was applied
    // is exactly what the caller cannot know).
    assert!(
        dir.read_entry(&bob, &["description"])
            .await
            .unwrap()
            .is_some()
    );
}

// --------------------------------------------------------------------------------------
// Reads

#[tokio::test]
async fn search_entries_honours_the_limit() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let people = slapd.users_base.as_str();
    let all = dir
        .search_entries(
            people,
            SearchScope::Subtree,
            "(objectClass=inetOrgPerson)",
            &["uid"],
            5,
        )
        .await
        .expect("exactly the limit is fine");
    assert_eq!(all.len(), 5);
    let e = dir
        .search_entries(
            people,
            SearchScope::Subtree,
            "(objectClass=inetOrgPerson)",
            &["uid"],
            4,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DirectoryError::SizeLimit(4)), "{e:?}");
    let none = dir
        .search_entries(people, SearchScope::OneLevel, "(uid=nobody)", &["uid"], 0)
        .await
        .unwrap();
    assert!(none.is_empty());
    let base = dir
        .search_entries(
            &slapd.user_dn("bob"),
            SearchScope::Base,
            "(objectClass=*)",
            &["MAIL"],
            1,
        )
        .await
        .unwrap();
    assert_eq!(base.len(), 1);
    assert_eq!(base[0].first("mail"), Some("bob@example.org"));
    assert!(base[0].attrs.contains_key("mail"));
    let e = dir
        .search_entries(
            &format!("ou=nowhere,{}", slapd.base_dn),
            SearchScope::Subtree,
            "(objectClass=*)",
            &["1.1"],
            10,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DirectoryError::NoSuchEntry(_)), "{e:?}");
    // Missing and malformed DNs read as absent.
    assert!(
        dir.read_entry(&slapd.user_dn("nobody"), &["uid"])
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        dir.read_entry("not a dn", &["uid"])
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        dir.read_entry(&format!("noSuchType=x,{}", slapd.users_base), &["uid"])
            .await
            .unwrap()
            .is_none()
    );
    // Attributes the entry lacks are simply absent.
    let e: Entry = dir
        .read_entry(&slapd.user_dn("alice"), &["uid", "memberOf"])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.first("uid"), Some("alice"));
}

fn uid_order(reverse: bool) -> SortKey {
    SortKey {
        attribute: "uid".into(),
        ordering_rule: Some("caseIgnoreOrderingMatch".into()),
        reverse,
    }
}

fn window(slapd: &Slapd, sort: Option<SortKey>, offset: u64, count: u64) -> WindowQuery {
    WindowQuery {
        base: slapd.users_base.clone(),
        filter: "(objectClass=inetOrgPerson)".into(),
        attrs: vec!["uid".to_owned()].into(),
        sort,
        offset,
        count,
        scan_limit: None,
    }
}

/// Pages of `count` from offset 1 until an empty page: every uid in the order served.
async fn page_through(
    dir: &Directory,
    slapd: &Slapd,
    sort: Option<SortKey>,
    total: u64,
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut offset = 1;
    loop {
        let w = dir
            .search_window(&window(slapd, sort.clone(), offset, 37))
            .await
            .unwrap_or_else(|e| panic!("window at {offset}: {e:?}"));
        assert_eq!(w.total, total, "total at offset {offset}");
        if w.entries.is_empty() {
            break;
        }
        assert!(w.entries.len() <= 37);
        if offset + 37 <= total + 1 {
            assert_eq!(w.entries.len(), 37, "full page at {offset}");
        }
        seen.extend(
            w.entries
                .iter()
                .map(|e| e.first("uid").expect("uid").to_owned()),
        );
        offset += 37;
    }
    seen
}

fn expected_uids(generated: usize) -> Vec<String> {
    let mut all: Vec<String> = ["alice", "bob", "carol", "dave", "erin"]
        .iter()
        .map(|s| s.to_string())
        .chain((1..=generated).map(|i| format!("user{i:06}")))
        .collect();
    all.sort_by_key(|u| u.to_lowercase());
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sorted_windows_page_through_every_user_once_in_uid_order() {
    let slapd = Slapd::start_with(1000, &[]);
    let dir = directory(&slapd);
    assert!(dir.supports_sorting().await.unwrap());
    let expected = expected_uids(1000);

    let seen = page_through(&dir, &slapd, Some(uid_order(false)), 1005).await;
    assert_eq!(seen, expected);

    let seen = page_through(&dir, &slapd, Some(uid_order(true)), 1005).await;
    let mut reversed = expected.clone();
    reversed.reverse();
    assert_eq!(seen, reversed);

    // Beyond the end: nothing, with the right total.
    for offset in [1006, 5000, u64::from(u32::MAX), u64::MAX] {
        let w = dir
            .search_window(&window(&slapd, Some(uid_order(false)), offset, 10))
            .await
            .unwrap_or_else(|e| panic!("{offset}: {e:?}"));
        assert!(w.entries.is_empty(), "{offset}");
        assert_eq!(w.total, 1005, "{offset}");
    }
    // The last entry alone; offset 0 reads as 1.
    let w = dir
        .search_window(&window(&slapd, Some(uid_order(false)), 1005, 10))
        .await
        .unwrap();
    assert_eq!(w.entries.len(), 1);
    assert_eq!(
        w.entries[0].first("uid"),
        expected.last().map(String::as_str)
    );
    let w = dir
        .search_window(&window(&slapd, Some(uid_order(false)), 0, 2))
        .await
        .unwrap();
    assert_eq!(w.entries[0].first("uid"), Some("alice"));

    // A filter that matches a few, and one that matches none.
    let mut q = window(&slapd, Some(uid_order(true)), 1, 100);
    q.filter = "(&(objectClass=inetOrgPerson)(uid=user00000*))".into();
    let w = dir.search_window(&q).await.unwrap();
    assert_eq!(w.total, 9);
    assert_eq!(w.entries[0].first("uid"), Some("user000009"));
    q.filter = "(uid=nobody)".into();
    let w = dir.search_window(&q).await.unwrap();
    assert_eq!((w.entries.len(), w.total), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsorted_windows_return_every_user_once_and_count_zero_gives_the_total() {
    let slapd = Slapd::start_with(1000, &[]);
    let dir = directory(&slapd);
    let seen = page_through(&dir, &slapd, None, 1005).await;
    assert_eq!(seen.len(), 1005);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 1005, "every user exactly once");
    let mut sorted = seen.clone();
    sorted.sort_by_key(|u| u.to_lowercase());
    assert_eq!(sorted, expected_uids(1000));

    for sort in [None, Some(uid_order(false))] {
        let w = dir
            .search_window(&window(&slapd, sort.clone(), 1, 0))
            .await
            .unwrap();
        assert!(w.entries.is_empty());
        assert_eq!(w.total, 1005, "{sort:?}");
        let w = dir
            .search_window(&window(&slapd, sort.clone(), 2000, 0))
            .await
            .unwrap();
        assert_eq!(w.total, 1005, "{sort:?}");
    }
    let w = dir
        .search_window(&window(&slapd, None, 1004, 10))
        .await
        .unwrap();
    assert_eq!((w.entries.len(), w.total), (2, 1005));
    let w = dir
        .search_window(&window(&slapd, None, 1006, 10))
        .await
        .unwrap();
    assert_eq!((w.entries.len(), w.total), (0, 1005));
    // A missing base.
    let mut q = window(&slapd, None, 1, 10);
    q.base = format!("ou=nowhere,{}", slapd.base_dn);
    assert!(matches!(
        dir.search_window(&q).await,
        Err(DirectoryError::NoSuchEntry(_))
    ));

    // The scan limit bounds what one unsorted window may walk, whether the window is at
    // the start, deep in the list or only counts.
    for (offset, count) in [(1, 10), (990, 10), (1, 0)] {
        let mut q = window(&slapd, None, offset, count);
        q.scan_limit = Some(700);
        assert!(
            matches!(
                dir.search_window(&q).await,
                Err(DirectoryError::ScanLimit(700))
            ),
            "offset {offset}, count {count}"
        );
    }
    let mut q = window(&slapd, None, 1000, 10);
    q.scan_limit = Some(1005);
    let w = dir.search_window(&q).await.unwrap();
    assert_eq!(
        (w.entries.len(), w.total),
        (6, 1005),
        "exactly at the limit"
    );
    // The connection that stopped early is still good for the next search.
    let w = dir
        .search_window(&window(&slapd, None, 1, 3))
        .await
        .unwrap();
    assert_eq!(w.entries.len(), 3);
}

#[tokio::test]
async fn sorted_windows_keep_working_on_a_single_pooled_connection() {
    // More sorted windows than sssvlv keeps per connection (sssvlv-maxperconn 8), all
    // through a pool of one.
    let slapd = Slapd::start_with(50, &[]);
    let dir = Directory::new(DirectorySettings {
        pool_size: 1,
        ..settings(&slapd)
    })
    .unwrap();
    for i in 0..20u64 {
        let w = dir
            .search_window(&window(&slapd, Some(uid_order(i % 2 == 1)), 1 + i, 3))
            .await
            .unwrap_or_else(|e| panic!("window {i}: {e:?}"));
        assert_eq!(w.total, 55);
        assert_eq!(w.entries.len(), 3);
        // Plain operations in between use the same pool.
        dir.find_user("bob")
            .await
            .expect("find_user between windows");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn thirty_two_concurrent_sorted_windows() {
    let slapd = Slapd::start_with(200, &[]);
    let dir = Directory::new(DirectorySettings {
        pool_size: 32,
        connect_timeout: Duration::from_secs(10),
        ..settings(&slapd)
    })
    .unwrap();
    for round in 0..3 {
        let tasks: Vec<_> = (0..32u64)
            .map(|i| {
                let dir = dir.clone();
                let q = window(&slapd, Some(uid_order(i % 2 == 0)), 1 + i * 5, 5);
                tokio::spawn(async move { dir.search_window(&q).await })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            let w = t
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}, window {i}: {e:?}"));
            assert_eq!(w.total, 205);
            assert_eq!(w.entries.len(), 5);
        }
    }
}

#[tokio::test]
async fn sorting_needs_an_ordering_rule() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    // uid has no ORDERING rule in OpenLDAP's schema.
    let q = window(
        &slapd,
        Some(SortKey {
            attribute: "uid".into(),
            ordering_rule: None,
            reverse: false,
        }),
        1,
        3,
    );
    let e = dir.search_window(&q).await.unwrap_err();
    assert!(
        matches!(&e, DirectoryError::Unsupported(t) if t.contains("uid")),
        "{e:?}"
    );
    let q = window(
        &slapd,
        Some(SortKey {
            attribute: "noSuchAttributeType".into(),
            ordering_rule: Some("caseIgnoreOrderingMatch".into()),
            reverse: false,
        }),
        1,
        3,
    );
    let e = dir.search_window(&q).await.unwrap_err();
    assert!(matches!(e, DirectoryError::Unsupported(_)), "{e:?}");
    // Neither has sn (it inherits from name): with the rule named, it sorts.
    let q = window(
        &slapd,
        Some(SortKey {
            attribute: "sn".into(),
            ordering_rule: Some("caseIgnoreOrderingMatch".into()),
            reverse: false,
        }),
        1,
        5,
    );
    let w = dir.search_window(&q).await.unwrap();
    assert_eq!(w.total, 5);
    assert_eq!(w.entries[0].first("uid"), Some("alice"));
}

// --------------------------------------------------------------------------------------
// What slapd itself does with VLV state (the reason sorted windows close their
// connection)

/// Sort by uid + VLV (before 0, after 0, offset 1, contentCount 0), no context ID.
fn raw_sorted_controls() -> Vec<ldap3::controls::RawControl> {
    let mut sort = vec![
        0x30, 0x20, 0x30, 0x1e, 0x04, 0x03, b'u', b'i', b'd', 0x80, 0x17,
    ];
    sort.extend_from_slice(b"caseIgnoreOrderingMatch");
    vec![
        ldap3::controls::RawControl {
            ctype: "1.2.840.113556.1.4.473".into(),
            crit: true,
            val: Some(sort),
        },
        ldap3::controls::RawControl {
            ctype: "2.16.840.1.113730.3.4.9".into(),
            crit: true,
            val: Some(vec![
                0x30, 0x0e, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0xa0, 0x06, 0x02, 0x01, 0x01, 0x02,
                0x01, 0x00,
            ]),
        },
    ]
}

#[tokio::test]
async fn slapd_keeps_each_vlv_list_until_the_connection_closes() {
    let slapd = Slapd::start();
    let (conn, mut ldap) = ldap3::LdapConnAsync::new(&slapd.ldap_url).await.unwrap();
    ldap3::drive!(conn);
    ldap.simple_bind(&slapd.service_dn, &slapd.service_password)
        .await
        .unwrap()
        .success()
        .unwrap();
    let mut codes = Vec::new();
    for _ in 0..10 {
        let ldap3::SearchResult(_, res) = ldap
            .with_controls(raw_sorted_controls())
            .search(
                &slapd.users_base,
                ldap3::Scope::Subtree,
                "(uid=*)",
                vec!["uid"],
            )
            .await
            .unwrap();
        codes.push(res.rc);
    }
    let _ = ldap.unbind().await;
    // sssvlv-maxperconn 8: the ninth new VLV search on one connection is refused as busy.
    assert_eq!(
        codes,
        [0, 0, 0, 0, 0, 0, 0, 0, 51, 51],
        "{}",
        slapd.log_tail(20)
    );
}

// --------------------------------------------------------------------------------------
// Passwords

/// The ppolicy state that a bind (or a compare) would change, read as the root DN.
fn password_state(slapd: &Slapd, dn: &str) -> Vec<(String, Vec<String>)> {
    [
        "pwdFailureTime",
        "pwdChangedTime",
        "pwdHistory",
        "pwdAccountLockedTime",
        "pwdLastSuccess",
        "pwdGraceUseTime",
        "modifyTimestamp",
        "entryCSN",
    ]
    .iter()
    .map(|a| (a.to_string(), slapd.ldapsearch_attr(dn, a)))
    .collect()
}

#[tokio::test]
async fn password_matches_checks_locally_and_changes_nothing() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let bob = slapd.user_dn("bob");
    let sample = Secret::new(slapd.sample_password.clone());
    let wrong = Secret::new("Not-the-password-1");

    assert_eq!(
        dir.password_matches(&bob, &sample).await.unwrap(),
        Some(true)
    );
    assert_eq!(
        dir.password_matches(&bob, &wrong).await.unwrap(),
        Some(false)
    );
    for user in ["alice", "carol", "dave", "erin"] {
        assert_eq!(
            dir.password_matches(&slapd.user_dn(user), &sample)
                .await
                .unwrap(),
            Some(true),
            "{user}"
        );
    }

    // After a Password Modify (so pwdHistory and pwdChangedTime are set).
    let new = Secret::new("Lb-entries-7xQ2mZ9v");
    dir.set_password(&bob, &new, false)
        .await
        .expect("set_password");
    assert_eq!(dir.password_matches(&bob, &new).await.unwrap(), Some(true));
    assert_eq!(
        dir.password_matches(&bob, &sample).await.unwrap(),
        Some(false)
    );
    let before = password_state(&slapd, &bob);
    assert!(
        before
            .iter()
            .any(|(a, v)| a == "pwdHistory" && !v.is_empty()),
        "{before:?}"
    );
    assert!(
        before
            .iter()
            .any(|(a, v)| a == "pwdChangedTime" && !v.is_empty()),
        "{before:?}"
    );
    // More wrong candidates than pwdMaxFailure (5): binds would lock the account.
    for _ in 0..7 {
        assert_eq!(
            dir.password_matches(&bob, &wrong).await.unwrap(),
            Some(false)
        );
    }
    assert_eq!(
        dir.password_matches(&bob, &sample).await.unwrap(),
        Some(false)
    );
    assert_eq!(dir.password_matches(&bob, &new).await.unwrap(), Some(true));
    assert_eq!(
        password_state(&slapd, &bob),
        before,
        "password_matches changed the entry"
    );
    let bind = slapd.bind_as(&bob, new.expose());
    assert!(bind.success && !bind.locked, "{}", bind.output);

    // A userPassword written by a modify is hashed by the server and checked the same way.
    dir.modify_entry(
        &bob,
        &[Change::Replace(
            "userPassword".into(),
            strings(&["Lb-modified-4kW8pQ3z"]),
        )],
        None,
    )
    .await
    .expect("modify userPassword");
    let stored = slapd.ldapsearch_attr(&bob, "userPassword");
    assert!(stored.iter().all(|v| v.starts_with("{SSHA}")), "{stored:?}");
    assert_eq!(
        dir.password_matches(&bob, &Secret::new("Lb-modified-4kW8pQ3z"))
            .await
            .unwrap(),
        Some(true)
    );

    // Values we cannot check: None, unless another value matches.
    slapd.ldapmodify_as_root(&format!(
        "dn: {}\nchangetype: modify\nreplace: userPassword\nuserPassword: {{CRYPT}}$6$abc$def\n",
        slapd.user_dn("carol")
    ));
    assert_eq!(
        dir.password_matches(&slapd.user_dn("carol"), &sample)
            .await
            .unwrap(),
        None
    );
    // An entry without userPassword: None.
    slapd.ldapmodify_as_root(&format!(
        "dn: {}\nchangetype: modify\ndelete: userPassword\n",
        slapd.user_dn("dave")
    ));
    assert_eq!(
        dir.password_matches(&slapd.user_dn("dave"), &sample)
            .await
            .unwrap(),
        None
    );

    // Only users; and a user that does not exist.
    for dn in [
        slapd.service_dn.clone(),
        format!("cn=admins,{}", slapd.groups_base),
        slapd.users_base.clone(),
        slapd.user_dn("nobody"),
    ] {
        let e = dir.password_matches(&dn, &sample).await.unwrap_err();
        assert!(
            matches!(&e, DirectoryError::NoSuchEntry(d) if *d == dn),
            "{dn}: {e:?}"
        );
    }
}

#[tokio::test]
async fn search_for_write_brings_the_stored_password_but_never_in_the_entry() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let sample = Secret::new(slapd.sample_password.clone());
    let wrong = Secret::new("Not-the-password-1");
    let before = password_state(&slapd, &slapd.user_dn("bob"));

    // Users below users_base, and the service account's own entry, whose password must
    // never be read for a comparison.
    let found = dir
        .search_entries_for_write(
            &slapd.base_dn,
            SearchScope::Subtree,
            &format!(
                "(|(uid=bob)(uid=alice)({}))",
                slapd.service_dn.split(',').next().unwrap()
            ),
            &["uid", "cn", "entryCSN"],
            10,
        )
        .await
        .expect("search_entries_for_write");
    assert_eq!(found.len(), 3, "{found:?}");
    for (entry, stored) in &found {
        assert!(
            !entry.has("userPassword"),
            "the entry carries the password: {}",
            entry.dn
        );
        assert!(entry.has("entryCSN"), "{}", entry.dn);
        let printed = format!("{stored:?}");
        assert!(
            !printed.contains("SSHA") && !printed.contains('{'),
            "{printed}"
        );
        if entry.dn == slapd.service_dn {
            assert!(
                stored.is_empty(),
                "the service account's password was returned"
            );
            assert_eq!(stored.matches(&sample).await.unwrap(), None);
        } else {
            assert_eq!(
                stored.matches(&sample).await.unwrap(),
                Some(true),
                "{}",
                entry.dn
            );
            assert_eq!(
                stored.matches(&wrong).await.unwrap(),
                Some(false),
                "{}",
                entry.dn
            );
        }
    }
    // Asking for userPassword explicitly does not put it in the entry either.
    let found = dir
        .search_entries_for_write(
            &slapd.users_base,
            SearchScope::Subtree,
            "(uid=bob)",
            &["uid", "userPassword"],
            1,
        )
        .await
        .expect("search_entries_for_write");
    assert_eq!(found.len(), 1);
    assert!(!found[0].0.has("userPassword"));
    assert_eq!(found[0].1.matches(&sample).await.unwrap(), Some(true));
    // More matches than the limit: SizeLimit, as for search_entries.
    let e = dir
        .search_entries_for_write(
            &slapd.users_base,
            SearchScope::Subtree,
            "(objectClass=inetOrgPerson)",
            &["uid"],
            1,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DirectoryError::SizeLimit(1)), "{e:?}");
    assert_eq!(
        password_state(&slapd, &slapd.user_dn("bob")),
        before,
        "reading the stored password changed the entry"
    );
}

#[tokio::test]
async fn password_writes_meet_the_directory_policy() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let erin = slapd.user_dn("erin");
    let e = dir
        .modify_entry(
            &erin,
            &[Change::Replace("userPassword".into(), strings(&["Ab1!"]))],
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            DirectoryError::PasswordRejected(PolicyRejection::TooShort)
        ),
        "{e:?}"
    );
    assert!(!format!("{e:?}").contains("Ab1!"));
    // A new user with a password that is too short is refused too, and not created.
    let mut new_user = person("shorty");
    new_user.push(("userPassword".into(), strings(&["Ab1!"])));
    let e = dir
        .add_entry(&slapd.user_dn("shorty"), &new_user)
        .await
        .unwrap_err();
    assert!(matches!(e, DirectoryError::PasswordRejected(_)), "{e:?}");
    assert!(
        dir.read_entry(&slapd.user_dn("shorty"), &["1.1"])
            .await
            .unwrap()
            .is_none()
    );
    // With a good password, other problems of the entry are refused as data.
    let e = dir
        .add_entry(
            &slapd.user_dn("nosn"),
            &attrs(&[
                ("objectClass", &["inetOrgPerson"]),
                ("uid", &["nosn"]),
                ("cn", &["No Sn"]),
                ("userPassword", &["Lb-new-user-9pQ2xW4k"]),
            ]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, DirectoryError::Rejected { rc: 65, .. }),
        "{e:?}"
    );
    // A good one works, and can sign in.
    let mut new_user = person("longer");
    new_user.push(("userPassword".into(), strings(&["Lb-new-user-9pQ2xW4k"])));
    dir.add_entry(&slapd.user_dn("longer"), &new_user)
        .await
        .expect("add with password");
    assert!(
        slapd
            .bind_as(&slapd.user_dn("longer"), "Lb-new-user-9pQ2xW4k")
            .success
    );
}

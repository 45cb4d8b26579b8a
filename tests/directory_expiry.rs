//! The password-expiry side of `lockbridge::directory` against a real OpenLDAP slapd with
//! the ppolicy overlay (`tests/harness/slapd.rs`): streaming every user's password facts
//! with the Paged Results control, reading and writing policy maximum ages, pointing users
//! at a policy, and the expiry actions (require a change, lock, unlock).
//!
//! Each test starts its own sandbox, so tests that change policies or lock accounts do not
//! disturb each other.

mod harness;

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use harness::Slapd;
use lockbridge::directory::{
    Directory, DirectoryError, DirectoryKind, DirectorySettings, Lockout, PasswordStateEntry,
    PolicyRejection, same_dn,
};
use lockbridge::types::Secret;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_POLICY: &str = "cn=default,ou=policies,dc=example,dc=org";
const NEVER_EXPIRES: &str = "cn=never-expires,ou=policies,dc=example,dc=org";
/// pwdMaxAge of the sandbox's default policy (90 days).
const DEFAULT_MAX_AGE: u64 = 7_776_000;

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
        connect_timeout: CONNECT_TIMEOUT,
        operation_timeout: Duration::from_secs(5),
    }
}

fn directory(slapd: &Slapd) -> Directory {
    Directory::new(settings(slapd)).expect("valid settings")
}

async fn collect_all(dir: &Directory, page_size: u32) -> Vec<PasswordStateEntry> {
    let mut stream = pin!(dir.stream_password_states(page_size));
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        out.push(item.expect("stream item"));
    }
    out
}

fn days_ago(t: chrono::DateTime<Utc>) -> i64 {
    (Utc::now() - t).num_days()
}

/// Users preloaded with slapadd: backdated, never-expiring, without a change time,
/// flagged and locked.
const EXPIRY_LDIF: &str = "\
dn: uid=old80,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: old80
cn: Old Eighty
sn: Eighty
mail: old80@example.org
userPassword: @SAMPLE_PASSWORD_HASH@
pwdChangedTime: @DAYS_AGO:80@

dn: uid=forever,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: forever
cn: Forever Young
sn: Young
mail: forever@example.org
userPassword: @SAMPLE_PASSWORD_HASH@
pwdChangedTime: @DAYS_AGO:400@
pwdPolicySubentry: cn=never-expires,ou=policies,dc=example,dc=org

dn: uid=notime,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: notime
cn: No Time
sn: Time
userPassword: @SAMPLE_PASSWORD_HASH@

dn: uid=flagged,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: flagged
cn: Flagged User
sn: User
mail: flagged@example.org
userPassword: @SAMPLE_PASSWORD_HASH@
pwdChangedTime: @DAYS_AGO:95@
pwdReset: TRUE
pwdAccountLockedTime: 000001010000Z
";

// --------------------------------------------------------------------------------------
// Streaming

#[tokio::test]
async fn stream_lists_every_user_exactly_once_across_many_pages() {
    let slapd = Slapd::start_with(2500, &[]);
    let dir = directory(&slapd);
    let started = Instant::now();
    let all = collect_all(&dir, 200).await;
    let elapsed = started.elapsed();

    // 2500 generated users and the 5 samples; not the service account, groups or policies.
    assert_eq!(all.len(), 2505, "took {elapsed:?}");
    let dns: HashSet<String> = all.iter().map(|e| e.dn.to_lowercase()).collect();
    assert_eq!(dns.len(), all.len(), "a DN came twice");
    let names: HashSet<&str> = all.iter().map(|e| e.user_name.as_str()).collect();
    assert_eq!(names.len(), all.len(), "a user name came twice");
    for name in ["alice", "erin", "user000001", "user001250", "user002500"] {
        assert!(names.contains(name), "{name} missing");
    }
    let uuids: HashSet<&str> = all.iter().filter_map(|e| e.entry_uuid.as_deref()).collect();
    assert_eq!(uuids.len(), all.len(), "every entry has its own entryUUID");
    for e in &all {
        let changed = e.changed_at.unwrap_or_else(|| panic!("{e:?}"));
        assert!(days_ago(changed).abs() <= 1, "{e:?}");
        assert!(e.created_at.is_some(), "{e:?}");
        assert!(e.mail.is_some() && e.display_name.is_some(), "{e:?}");
        assert!(
            !e.must_change && !e.locked && e.policy_dn.is_none(),
            "{e:?}"
        );
    }

    // Really paged: the server answered pages of 200 (slapd's stats log counts entries
    // per SEARCH RESULT).
    let log = std::fs::read_to_string(slapd.dir.join("slapd.log")).unwrap_or_default();
    let full_pages = log
        .lines()
        .filter(|l| l.contains("SEARCH RESULT") && l.contains("nentries=200 "))
        .count();
    assert!(
        full_pages >= 12,
        "expected at least 12 full pages, saw {full_pages}"
    );
}

#[tokio::test]
async fn dropping_the_stream_early_gives_its_connection_back() {
    let slapd = Slapd::start_with(300, &[]);
    let dir = Directory::new(DirectorySettings {
        pool_size: 1,
        ..settings(&slapd)
    })
    .unwrap();
    {
        let mut stream = pin!(dir.stream_password_states(10));
        for _ in 0..3 {
            stream.next().await.expect("an entry").expect("no error");
        }
    }
    // With one connection in the pool, this waits for the stream's connection, which must
    // come back once the listing task sees nobody is listening.
    let started = Instant::now();
    let alice = dir
        .find_user("alice")
        .await
        .expect("find_user after the drop");
    assert_eq!(alice.user_name, "alice");
    assert!(
        started.elapsed() < CONNECT_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
    // And a full listing still works on that connection.
    assert_eq!(collect_all(&dir, 50).await.len(), 305);
}

#[tokio::test]
async fn stream_and_find_user_read_the_preloaded_password_facts() {
    let slapd = Slapd::start_with(0, &[EXPIRY_LDIF]);
    let dir = directory(&slapd);
    let all: HashMap<String, PasswordStateEntry> = collect_all(&dir, 3)
        .await
        .into_iter()
        .map(|e| (e.user_name.clone(), e))
        .collect();
    assert_eq!(all.len(), 9, "{:?}", all.keys());

    let old80 = &all["old80"];
    assert_eq!(days_ago(old80.changed_at.unwrap()), 80, "{old80:?}");
    assert_eq!(old80.policy_dn, None);
    assert_eq!(old80.mail.as_deref(), Some("old80@example.org"));
    assert_eq!(old80.display_name.as_deref(), Some("Old Eighty"));
    assert!(!old80.must_change && !old80.locked);

    let forever = &all["forever"];
    assert_eq!(days_ago(forever.changed_at.unwrap()), 400, "{forever:?}");
    assert!(
        forever
            .policy_dn
            .as_deref()
            .is_some_and(|p| same_dn(p, NEVER_EXPIRES)),
        "{forever:?}"
    );

    let notime = &all["notime"];
    assert_eq!(notime.changed_at, None, "{notime:?}");
    assert_eq!(notime.mail, None);
    // The creation time is there as a possible stand-in (slapadd sets it to now).
    assert!(days_ago(notime.created_at.expect("createTimestamp")).abs() <= 1);

    let flagged = &all["flagged"];
    assert!(flagged.must_change && flagged.locked, "{flagged:?}");
    assert_eq!(days_ago(flagged.changed_at.unwrap()), 95);

    // find_user reads the policy too.
    let u = dir.find_user("forever").await.unwrap();
    assert!(
        u.policy_dn
            .as_deref()
            .is_some_and(|p| same_dn(p, NEVER_EXPIRES))
    );
    assert_eq!(dir.find_user("old80").await.unwrap().policy_dn, None);
    assert_eq!(
        dir.find_user("notime").await.unwrap().password_changed_at,
        None
    );
}

// --------------------------------------------------------------------------------------
// Policies

#[tokio::test]
async fn policy_max_age_reads_and_writes_pwd_max_age() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    assert_eq!(
        dir.policy_max_age(DEFAULT_POLICY).await.unwrap(),
        Some(DEFAULT_MAX_AGE)
    );
    assert_eq!(dir.policy_max_age(NEVER_EXPIRES).await.unwrap(), None);
    // DNs compare like the directory compares them.
    assert_eq!(
        dir.policy_max_age("CN=Default, OU=Policies, DC=example, DC=org")
            .await
            .unwrap(),
        Some(DEFAULT_MAX_AGE)
    );

    dir.set_policy_max_age(DEFAULT_POLICY, Some(3600))
        .await
        .unwrap();
    assert_eq!(
        dir.policy_max_age(DEFAULT_POLICY).await.unwrap(),
        Some(3600)
    );
    assert_eq!(
        slapd.ldapsearch_attr(DEFAULT_POLICY, "pwdMaxAge"),
        vec!["3600"]
    );
    dir.set_policy_max_age(DEFAULT_POLICY, None).await.unwrap();
    assert_eq!(dir.policy_max_age(DEFAULT_POLICY).await.unwrap(), None);
    assert_eq!(
        slapd.ldapsearch_attr(DEFAULT_POLICY, "pwdMaxAge"),
        vec!["0"]
    );
    dir.set_policy_max_age(DEFAULT_POLICY, Some(DEFAULT_MAX_AGE))
        .await
        .unwrap();
    assert_eq!(
        dir.policy_max_age(DEFAULT_POLICY).await.unwrap(),
        Some(DEFAULT_MAX_AGE)
    );
    // The other policy was not touched.
    assert_eq!(dir.policy_max_age(NEVER_EXPIRES).await.unwrap(), None);
}

#[tokio::test]
async fn unknown_or_wrong_policy_entries_are_clear_errors() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let missing = "cn=nope,ou=policies,dc=example,dc=org";
    for e in [
        dir.policy_max_age(missing).await.unwrap_err(),
        dir.set_policy_max_age(missing, Some(60)).await.unwrap_err(),
    ] {
        assert!(
            matches!(&e, DirectoryError::NoSuchEntry(dn) if dn == missing),
            "{e:?}"
        );
        assert!(e.to_string().contains(missing), "{e}");
    }
    // A missing parent too.
    let e = dir
        .policy_max_age("cn=x,ou=nowhere,dc=example,dc=org")
        .await
        .unwrap_err();
    assert!(matches!(e, DirectoryError::NoSuchEntry(_)), "{e:?}");
    // A user is not a policy.
    let e = dir.policy_max_age(&slapd.user_dn("bob")).await.unwrap_err();
    assert!(
        matches!(&e, DirectoryError::Config(t) if t.contains("not a password policy")),
        "{e:?}"
    );
    // The service account may write pwdMaxAge of policies only.
    let e = dir
        .set_policy_max_age(&slapd.user_dn("bob"), Some(60))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            DirectoryError::InsufficientAccess | DirectoryError::Protocol(_)
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn the_directory_enforces_the_ages_lockbridge_writes() {
    let slapd = Slapd::start_with(0, &[EXPIRY_LDIF]);
    let dir = directory(&slapd);
    let pw = Secret::new(slapd.sample_password.clone());
    let old80 = slapd.user_dn("old80");
    let forever = slapd.user_dn("forever");
    let check = |dn: String| {
        let dir = dir.clone();
        let pw = pw.clone();
        async move { dir.check_user_password(&dn, &pw).await.unwrap() }
    };
    // 80 days old under a 90-day policy: fine; 400 days under "never expires": fine.
    assert!(check(old80.clone()).await.ok);
    assert!(check(forever.clone()).await.ok);

    // The org shortens the maximum age to 30 days: old80 has expired (no grace logins).
    dir.set_policy_max_age(DEFAULT_POLICY, Some(30 * 86_400))
        .await
        .unwrap();
    let c = check(old80.clone()).await;
    assert!(!c.ok && c.expired, "{c:?}");
    assert!(check(forever.clone()).await.ok);

    // "Never expires" for old80.
    dir.set_user_policy(&old80, Some(NEVER_EXPIRES))
        .await
        .unwrap();
    assert!(check(old80.clone()).await.ok);
    // Back to the default policy: expired again.
    dir.set_user_policy(&old80, None).await.unwrap();
    assert!(check(old80).await.expired);
}

#[tokio::test]
async fn set_user_policy_points_at_a_policy_and_back() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let bob = slapd.user_dn("bob");
    dir.set_user_policy(&bob, Some(NEVER_EXPIRES))
        .await
        .unwrap();
    let u = dir.find_user("bob").await.unwrap();
    assert!(
        u.policy_dn
            .as_deref()
            .is_some_and(|p| same_dn(p, NEVER_EXPIRES)),
        "{u:?}"
    );
    assert_eq!(
        slapd.ldapsearch_attr(&bob, "pwdPolicySubentry").len(),
        1,
        "single-valued"
    );
    // Replacing is idempotent.
    dir.set_user_policy(&bob, Some(NEVER_EXPIRES))
        .await
        .unwrap();
    dir.set_user_policy(&bob, None).await.unwrap();
    assert_eq!(dir.find_user("bob").await.unwrap().policy_dn, None);
    assert!(slapd.ldapsearch_attr(&bob, "pwdPolicySubentry").is_empty());
    // Removing what is not there is fine.
    dir.set_user_policy(&bob, None).await.unwrap();
    // A user that does not exist.
    let e = dir
        .set_user_policy(&slapd.user_dn("ghost"), Some(NEVER_EXPIRES))
        .await
        .unwrap_err();
    assert!(matches!(e, DirectoryError::NoSuchUser), "{e:?}");
    // A policy that does not exist, or an entry that is not one, is refused before the
    // user is touched (ppolicy would apply no policy at all to a dangling pointer).
    let missing = "cn=nope,ou=policies,dc=example,dc=org";
    let e = dir.set_user_policy(&bob, Some(missing)).await.unwrap_err();
    assert!(
        matches!(&e, DirectoryError::NoSuchEntry(dn) if dn == missing),
        "{e:?}"
    );
    let e = dir
        .set_user_policy(&bob, Some(&slapd.user_dn("alice")))
        .await
        .unwrap_err();
    assert!(matches!(e, DirectoryError::Config(_)), "{e:?}");
    assert!(slapd.ldapsearch_attr(&bob, "pwdPolicySubentry").is_empty());
}

// --------------------------------------------------------------------------------------
// Expiry actions

#[tokio::test]
async fn require_password_change_makes_the_next_sign_in_must_change() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let carol = slapd.user_dn("carol");
    let pw = Secret::new(slapd.sample_password.clone());
    let before = dir.check_user_password(&carol, &pw).await.unwrap();
    assert!(before.ok && !before.must_change, "{before:?}");

    dir.set_must_change(&carol, true).await.unwrap();
    dir.set_must_change(&carol, true).await.unwrap();
    assert!(dir.find_user("carol").await.unwrap().must_change);
    let after = dir.check_user_password(&carol, &pw).await.unwrap();
    assert!(after.ok && after.must_change, "{after:?}");
    assert!(slapd.bind_as(&carol, &slapd.sample_password).must_change);

    // And its undo.
    dir.set_must_change(&carol, false).await.unwrap();
    dir.set_must_change(&carol, false).await.unwrap();
    assert!(!dir.find_user("carol").await.unwrap().must_change);
    assert!(!slapd.bind_as(&carol, &slapd.sample_password).must_change);

    let e = dir
        .set_must_change(&slapd.user_dn("ghost"), true)
        .await
        .unwrap_err();
    assert!(matches!(e, DirectoryError::NoSuchUser), "{e:?}");
}

#[tokio::test]
async fn a_block_holds_until_unblocked_and_unlocking_leaves_it() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let dave = slapd.user_dn("dave");
    let pw = Secret::new(slapd.sample_password.clone());

    dir.block_sign_in(&dave).await.unwrap();
    assert_eq!(
        slapd.ldapsearch_attr(&dave, "pwdAccountLockedTime"),
        vec!["000001010000Z"]
    );
    let user = dir.find_user("dave").await.unwrap();
    assert!(user.locked && user.blocked, "{user:?}");
    let c = dir.check_user_password(&dave, &pw).await.unwrap();
    assert!(!c.ok && c.locked, "{c:?}");
    let b = slapd.bind_as(&dave, &slapd.sample_password);
    assert!(!b.success && b.locked, "{}", b.output);
    // Blocking again changes nothing.
    dir.block_sign_in(&dave).await.unwrap();

    // Clearing a lockout is not unblocking.
    assert_eq!(dir.clear_lockout(&dave).await.unwrap(), Lockout::Blocked);
    assert!(dir.find_user("dave").await.unwrap().blocked);

    dir.unblock_sign_in(&dave).await.unwrap();
    let user = dir.find_user("dave").await.unwrap();
    assert!(!user.locked && !user.blocked, "{user:?}");
    assert!(
        slapd
            .ldapsearch_attr(&dave, "pwdAccountLockedTime")
            .is_empty()
    );
    let c = dir.check_user_password(&dave, &pw).await.unwrap();
    assert!(c.ok && !c.locked, "{c:?}");
    // Unblocking an unblocked account is fine; so is clearing a lockout there is none of.
    dir.unblock_sign_in(&dave).await.unwrap();
    assert_eq!(dir.clear_lockout(&dave).await.unwrap(), Lockout::None);

    for e in [
        dir.block_sign_in(&slapd.user_dn("ghost"))
            .await
            .unwrap_err(),
        dir.unblock_sign_in(&slapd.user_dn("ghost"))
            .await
            .unwrap_err(),
        dir.clear_lockout(&slapd.user_dn("ghost"))
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(e, DirectoryError::NoSuchUser), "{e:?}");
    }
}

#[tokio::test]
async fn clearing_a_lockout_ends_it_and_unblocking_does_not() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let erin = slapd.user_dn("erin");
    let pw = Secret::new(slapd.sample_password.clone());
    // pwdMaxFailure 5 in the sandbox policy.
    for _ in 0..5 {
        let c = dir
            .check_user_password(&erin, &Secret::new("wrong-password-1"))
            .await
            .unwrap();
        assert!(!c.ok);
    }
    let c = dir.check_user_password(&erin, &pw).await.unwrap();
    assert!(!c.ok && c.locked, "{c:?}");
    let user = dir.find_user("erin").await.unwrap();
    assert!(user.locked && !user.blocked, "{user:?}");

    // Unblocking is not unlocking: the lockout stays.
    dir.unblock_sign_in(&erin).await.unwrap();
    assert!(dir.find_user("erin").await.unwrap().locked);

    assert_eq!(dir.clear_lockout(&erin).await.unwrap(), Lockout::Cleared);
    // ppolicy forgets the failures with the lock.
    assert!(slapd.ldapsearch_attr(&erin, "pwdFailureTime").is_empty());
    let c = dir.check_user_password(&erin, &pw).await.unwrap();
    assert!(c.ok, "{c:?}");
}

#[tokio::test]
async fn writes_outside_users_base_are_refused() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    for dn in [slapd.service_dn.clone(), slapd.admin_group_dn.clone()] {
        for e in [
            dir.block_sign_in(&dn).await.unwrap_err(),
            dir.set_user_policy(&dn, None).await.unwrap_err(),
            dir.set_must_change(&dn, true).await.unwrap_err(),
        ] {
            assert!(matches!(e, DirectoryError::NoSuchUser), "{dn}: {e:?}");
        }
    }
    assert!(
        slapd
            .ldapsearch_attr(&slapd.service_dn, "pwdAccountLockedTime")
            .is_empty()
    );
}

/// With `server_hashes_cleartext` (the sandbox runs `ppolicy_hash_cleartext`), a reset
/// that requires a change is one modify: the password stored hashed, history kept, the
/// flag set, and the directory's policy still applied (a password from the history is
/// refused, nothing changes).
#[tokio::test]
async fn one_write_resets_store_a_hash_and_set_the_flag_together() {
    let slapd = Slapd::start();
    let dir = Directory::new(DirectorySettings {
        server_hashes_cleartext: true,
        ..settings(&slapd)
    })
    .unwrap();
    let bob = slapd.user_dn("bob");
    let new = Secret::new("Amber-Falcon-Meadow-41");
    dir.set_password(&bob, &new, true).await.unwrap();
    let stored = slapd.ldapsearch_attr(&bob, "userPassword");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(
        stored[0].starts_with("{SSHA}"),
        "hashed by the server: {stored:?}"
    );
    assert_eq!(slapd.ldapsearch_attr(&bob, "pwdHistory").len(), 1);
    let bind = slapd.bind_as(&bob, new.expose());
    assert!(bind.success && bind.must_change, "{}", bind.output);

    // The policy still applies: the previous password is in the history.
    let e = dir
        .set_password(&bob, &Secret::new(slapd.sample_password.clone()), true)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            DirectoryError::PasswordRejected(PolicyRejection::InHistory)
        ),
        "{e:?}"
    );
    assert!(slapd.bind_as(&bob, new.expose()).success, "unchanged");
}

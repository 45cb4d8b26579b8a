//! `lockbridge::directory` against a real OpenLDAP slapd with the ppolicy overlay
//! (`tests/harness/slapd.rs`), over verified TLS with the sandbox's own CA.
//!
//! Each test starts its own sandbox (well under a second), so tests that change
//! passwords, lock accounts or stop the server do not disturb each other.

mod harness;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::Slapd;
use ldap3::exop::PasswordModify;
use ldap3::{LdapConnAsync, LdapConnSettings};
use lockbridge::directory::{
    Directory, DirectoryError, DirectoryKind, DirectorySettings, PolicyRejection,
};
use lockbridge::types::Secret;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

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
        operation_timeout: Duration::from_secs(3),
    }
}

fn directory(slapd: &Slapd) -> Directory {
    Directory::new(settings(slapd)).expect("valid settings")
}

/// A password the sandbox policy accepts (length ≥ 8), unique per call site.
fn good_password(tag: &str) -> Secret {
    Secret::new(format!("Lb-{tag}-7xQ2mZ9v"))
}

fn slapd_pid(slapd: &Slapd) -> String {
    std::fs::read_to_string(slapd.dir.join("slapd.pid"))
        .expect("slapd.pid")
        .trim()
        .to_owned()
}

fn signal(slapd: &Slapd, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(slapd_pid(slapd))
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} failed");
    if sig == "STOP" {
        // A stopped process shows state T; a test that goes on before that measures a
        // directory that still answers (seen once in CI, cause unknown: this says so).
        let pid = slapd_pid(slapd);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
            if state == Some("T") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "slapd {pid} is not stopped 5 s after SIGSTOP: {stat}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

// --------------------------------------------------------------------------------------
// Reads

#[tokio::test]
async fn ping_reports_the_service_account_and_ppolicy_support() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let info = dir.ping().await.expect("ping");
    assert_eq!(
        info.bound_as.to_lowercase(),
        slapd.service_dn.to_lowercase()
    );
    assert_eq!(info.ppolicy_supported, Some(true), "{info:?}");
    assert_eq!(info.vendor.as_deref(), Some("OpenLDAP"), "{info:?}");
}

#[tokio::test]
async fn find_user_returns_the_entry_with_password_state() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let alice = dir.find_user("alice").await.expect("alice");
    assert_eq!(
        alice.dn.to_lowercase(),
        slapd.user_dn("alice").to_lowercase()
    );
    assert_eq!(alice.user_name, "alice");
    assert!(alice.display_name.is_some(), "{alice:?}");
    assert!(
        alice.mail.as_deref().is_some_and(|m| m.contains('@')),
        "{alice:?}"
    );
    assert!(alice.alternate_mail.is_some(), "{alice:?}");
    assert!(alice.mobile.is_some(), "{alice:?}");
    assert!(!alice.must_change && !alice.locked, "{alice:?}");
    let changed = alice
        .password_changed_at
        .expect("pwdChangedTime is set by the sandbox");
    assert!(
        (chrono::Utc::now() - changed).num_days().abs() <= 1,
        "{changed}"
    );
    // Sign-in names match case-insensitively (uid is caseIgnoreMatch); the stored
    // spelling comes back.
    assert_eq!(
        dir.find_user("ALICE").await.expect("ALICE").user_name,
        "alice"
    );
}

#[tokio::test]
async fn find_user_unknown_and_injection_attempts_are_no_such_user() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    for name in [
        "nobody",
        "",
        "*",
        "*)(uid=*",
        "alice)(uid=*",
        "al*",
        "*)(|(uid=*",
        "alice\0",
        "\\2a",
        "ålice",
    ] {
        match dir.find_user(name).await {
            Err(DirectoryError::NoSuchUser) => {}
            other => panic!("find_user({name:?}) = {other:?}"),
        }
    }
}

#[tokio::test]
async fn find_user_with_two_matching_entries_is_ambiguous() {
    let slapd = Slapd::start();
    slapd.ldapmodify_as_root(&format!(
        "dn: ou=elsewhere,{base}\nchangetype: add\nobjectClass: organizationalUnit\nou: elsewhere\n\n\
         dn: uid=bob,ou=elsewhere,{base}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: bob\ncn: Bob Two\nsn: Two\n",
        base = slapd.users_base
    ));
    let dir = directory(&slapd);
    match dir.find_user("bob").await {
        Err(DirectoryError::Ambiguous(text)) => assert!(text.contains("uid"), "{text}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn search_users_matches_substrings_sorts_and_truncates() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);

    let all = dir.search_users("", 100).await.expect("all");
    let names: Vec<&str> = all.users.iter().map(|u| u.user_name.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "carol", "dave", "erin"]);
    assert!(!all.truncated);

    // By user name, case-insensitively.
    let r = dir.search_users("CAR", 100).await.unwrap();
    assert_eq!(r.users.len(), 1);
    assert_eq!(r.users[0].user_name, "carol");

    // By mail and by display name.
    let alice = &all.users[0];
    let mail = alice.mail.clone().unwrap();
    let r = dir.search_users(&mail, 100).await.unwrap();
    assert_eq!(
        r.users.iter().map(|u| &u.user_name).collect::<Vec<_>>(),
        ["alice"]
    );
    let cn = alice.display_name.clone().unwrap();
    let r = dir.search_users(&cn, 100).await.unwrap();
    assert!(r.users.iter().any(|u| u.user_name == "alice"), "{r:?}");

    // Special characters are literals, not wildcards or filter syntax.
    for term in ["*", "a*e", ")(uid=*", "\\"] {
        let r = dir.search_users(term, 100).await.unwrap();
        assert!(r.users.is_empty(), "{term:?} matched {r:?}");
    }

    // Cut off after max, flagged.
    let r = dir.search_users("", 2).await.unwrap();
    assert_eq!(r.users.len(), 2);
    assert!(r.truncated);
    // max equal to the number of matches is not truncation.
    let r = dir.search_users("", 5).await.unwrap();
    assert_eq!(r.users.len(), 5);
    assert!(!r.truncated);
    // The connection used for the abandoned search is still fine.
    dir.find_user("erin")
        .await
        .expect("after a truncated search");
}

#[tokio::test]
async fn search_users_pages_through_more_than_one_page() {
    let slapd = Slapd::start_with(1_234, &[]);
    let dir = directory(&slapd);
    let r = dir.search_users("", 10_000).await.expect("search");
    assert_eq!(r.users.len(), 1_234 + 5);
    assert!(!r.truncated);
    let names: Vec<String> = r.users.iter().map(|u| u.user_name.to_lowercase()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let distinct: HashSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), names.len());
    let r = dir.search_users("", 700).await.expect("truncated search");
    assert_eq!(r.users.len(), 700);
    assert!(r.truncated);
}

#[tokio::test]
async fn is_admin_asks_the_group() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    assert!(dir.is_admin(&slapd.user_dn("alice")).await.unwrap());
    assert!(!dir.is_admin(&slapd.user_dn("bob")).await.unwrap());
    // The server compares DNs by its own rules (case, spacing).
    let shouty = slapd.user_dn("alice").to_uppercase().replace(',', ", ");
    assert!(dir.is_admin(&shouty).await.unwrap());
    // Injection through the DN does not widen the match.
    assert!(!dir.is_admin("*").await.unwrap());
    assert!(!dir.is_admin("*)(member=*").await.unwrap());

    let missing = Directory::new(DirectorySettings {
        admin_group_dns: vec![format!("cn=nope,{}", slapd.groups_base)],
        ..settings(&slapd)
    })
    .unwrap();
    match missing.is_admin(&slapd.user_dn("alice")).await {
        Err(DirectoryError::Config(t)) => assert!(t.contains("cn=nope"), "{t}"),
        other => panic!("{other:?}"),
    }
}

// --------------------------------------------------------------------------------------
// Passwords

#[tokio::test]
async fn set_password_with_must_change_sets_pwd_reset() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let dn = slapd.user_dn("bob");
    let new = good_password("mc");
    dir.set_password(&dn, &new, true).await.expect("set");

    assert_eq!(slapd.ldapsearch_attr(&dn, "pwdReset"), ["TRUE"]);
    assert!(dir.find_user("bob").await.unwrap().must_change);
    let check = dir.check_user_password(&dn, &new).await.unwrap();
    assert!(check.ok && check.must_change, "{check:?}");
    assert!(slapd.bind_as(&dn, new.expose()).must_change);
    // The old password is gone.
    let old = dir
        .check_user_password(&dn, &Secret::new(slapd.sample_password.clone()))
        .await
        .unwrap();
    assert!(!old.ok, "{old:?}");
}

#[tokio::test]
async fn set_password_without_must_change_clears_pwd_reset() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let dn = slapd.user_dn("carol");
    // First leave a pwdReset behind; a change without must-change must not keep it
    // (whether ppolicy drops it itself, as for a non-manage writer, or we delete it).
    dir.set_password(&dn, &good_password("one"), true)
        .await
        .unwrap();
    assert_eq!(slapd.ldapsearch_attr(&dn, "pwdReset"), ["TRUE"]);
    let new = good_password("two");
    dir.set_password(&dn, &new, false).await.expect("set");
    assert!(slapd.ldapsearch_attr(&dn, "pwdReset").is_empty());
    let user = dir.find_user("carol").await.unwrap();
    assert!(!user.must_change, "{user:?}");
    assert!(user.password_changed_at.is_some());
    let check = dir.check_user_password(&dn, &new).await.unwrap();
    assert!(
        check.ok && !check.must_change && !check.expired,
        "{check:?}"
    );
    let outcome = slapd.bind_as(&dn, new.expose());
    assert!(
        outcome.success && !outcome.must_change,
        "{}",
        outcome.output
    );
}

#[tokio::test]
async fn too_short_password_is_rejected_and_the_old_one_still_works() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let dn = slapd.user_dn("dave");
    match dir.set_password(&dn, &Secret::new("Ab1!"), false).await {
        Err(DirectoryError::PasswordRejected(PolicyRejection::TooShort)) => {}
        other => panic!("{other:?}"),
    }
    let old = Secret::new(slapd.sample_password.clone());
    let check = dir.check_user_password(&dn, &old).await.unwrap();
    assert!(check.ok && !check.must_change, "{check:?}");
    assert!(slapd.ldapsearch_attr(&dn, "pwdReset").is_empty());
}

#[tokio::test]
async fn reused_password_is_rejected_as_in_history() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let dn = slapd.user_dn("erin");
    let a = good_password("A");
    let b = good_password("B");
    dir.set_password(&dn, &a, false).await.expect("A");
    dir.set_password(&dn, &b, false).await.expect("B");
    match dir.set_password(&dn, &a, false).await {
        Err(DirectoryError::PasswordRejected(PolicyRejection::InHistory)) => {}
        other => panic!("{other:?}"),
    }
    // The current password is history too.
    match dir.set_password(&dn, &b, false).await {
        Err(DirectoryError::PasswordRejected(PolicyRejection::InHistory)) => {}
        other => panic!("{other:?}"),
    }
    assert!(dir.check_user_password(&dn, &b).await.unwrap().ok);
}

#[tokio::test]
async fn set_password_for_a_missing_entry_is_no_such_user() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let dn = slapd.user_dn("nobody");
    match dir.set_password(&dn, &good_password("x"), false).await {
        Err(DirectoryError::NoSuchUser) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn check_user_password_reports_wrong_passwords_and_lockout() {
    let slapd = Slapd::start();
    let dir = directory(&slapd);
    let dn = slapd.user_dn("bob");
    let right = Secret::new(slapd.sample_password.clone());
    let c = dir.check_user_password(&dn, &right).await.unwrap();
    assert!(c.ok && !c.must_change && !c.locked, "{c:?}");
    // Unknown entries look like wrong passwords.
    let c = dir
        .check_user_password(&slapd.user_dn("nobody"), &right)
        .await
        .unwrap();
    assert!(!c.ok, "{c:?}");
    // The sandbox locks after 5 failures (ppolicy_use_lockout reports it).
    for _ in 0..5 {
        let c = dir
            .check_user_password(&dn, &Secret::new("wrong-password"))
            .await
            .unwrap();
        assert!(!c.ok, "{c:?}");
    }
    let c = dir.check_user_password(&dn, &right).await.unwrap();
    assert!(!c.ok && c.locked, "{c:?}");
    assert!(dir.find_user("bob").await.unwrap().locked);
}

// --------------------------------------------------------------------------------------
// TLS and connection settings

#[tokio::test]
async fn starttls_on_the_ldap_url_works() {
    let slapd = Slapd::start();
    let dir = Directory::new(DirectorySettings {
        url: slapd.ldap_url.clone(),
        starttls: true,
        ..settings(&slapd)
    })
    .unwrap();
    dir.ping().await.expect("ping over StartTLS");
    dir.find_user("alice").await.expect("find over StartTLS");
    let c = dir
        .check_user_password(
            &slapd.user_dn("alice"),
            &Secret::new(slapd.sample_password.clone()),
        )
        .await
        .unwrap();
    assert!(c.ok);
}

/// A CA that did not sign the server's certificate.
fn other_ca(dir: &Path) -> PathBuf {
    let key = dir.join("other-ca.key");
    let cert = dir.join("other-ca.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Not The Sandbox CA",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cert
}

#[tokio::test]
async fn a_wrong_ca_fails_clearly_on_ldaps_and_starttls() {
    let slapd = Slapd::start();
    let temp = tempfile::tempdir().unwrap();
    let wrong = other_ca(temp.path());
    for (url, starttls) in [(&slapd.ldaps_url, false), (&slapd.ldap_url, true)] {
        let dir = Directory::new(DirectorySettings {
            url: url.clone(),
            starttls,
            ca_file: Some(wrong.clone()),
            ..settings(&slapd)
        })
        .unwrap();
        let started = Instant::now();
        match dir.ping().await {
            Err(DirectoryError::Config(t)) => {
                assert!(t.contains("certificate") && t.contains("ca_file"), "{t}")
            }
            other => panic!("{url}: {other:?}"),
        }
        assert!(
            started.elapsed() < CONNECT_TIMEOUT * 2,
            "{:?}",
            started.elapsed()
        );
        match dir
            .check_user_password(&slapd.user_dn("alice"), &Secret::new("x"))
            .await
        {
            Err(DirectoryError::Config(_)) => {}
            other => panic!("{url}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn ldapi_needs_neither_tls_nor_allow_plaintext() {
    let slapd = Slapd::start();
    let dir = Directory::new(DirectorySettings {
        url: slapd.ldapi_url.clone(),
        ca_file: None,
        ..settings(&slapd)
    })
    .unwrap();
    dir.find_user("alice").await.expect("find over ldapi");
}

#[tokio::test]
async fn insecure_skip_verify_connects_without_the_ca() {
    let slapd = Slapd::start();
    let dir = Directory::new(DirectorySettings {
        ca_file: None,
        tls_insecure_skip_verify: true,
        ..settings(&slapd)
    })
    .unwrap();
    dir.ping().await.expect("ping without verification");
}

#[tokio::test]
async fn wrong_service_password_is_a_config_error_naming_the_bind_dn() {
    let slapd = Slapd::start();
    let dir = Directory::new(DirectorySettings {
        bind_password: Secret::new("not-the-password"),
        ..settings(&slapd)
    })
    .unwrap();
    let started = Instant::now();
    match dir.ping().await {
        Err(DirectoryError::Config(t)) => {
            assert!(
                t.contains(&slapd.service_dn) && t.contains("bind_password"),
                "{t}"
            );
            assert!(!t.contains("not-the-password"), "{t}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < CONNECT_TIMEOUT * 2,
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn missing_users_base_is_a_config_error() {
    let slapd = Slapd::start();
    let dir = Directory::new(DirectorySettings {
        users_base: format!("ou=nope,{}", slapd.base_dn),
        ..settings(&slapd)
    })
    .unwrap();
    match dir.ping().await {
        Err(DirectoryError::Config(t)) => assert!(t.contains("ou=nope"), "{t}"),
        other => panic!("{other:?}"),
    }
    match dir.find_user("alice").await {
        Err(DirectoryError::Config(t)) => assert!(t.contains("ou=nope"), "{t}"),
        other => panic!("{other:?}"),
    }
}

// --------------------------------------------------------------------------------------
// Availability

#[tokio::test]
async fn a_stopped_directory_is_unavailable_quickly_and_recovers_without_restart() {
    let mut slapd = Slapd::start();
    let dir = directory(&slapd);
    dir.find_user("alice").await.expect("before the stop");

    slapd.stop();
    for _ in 0..2 {
        let started = Instant::now();
        let e = dir.find_user("alice").await.unwrap_err();
        let took = started.elapsed();
        assert!(e.is_unavailable(), "{e:?}");
        assert!(e.to_string().contains("connection refused"), "{e}");
        // A refused connection fails the request at once, not after connect_timeout.
        assert!(took < CONNECT_TIMEOUT, "{took:?}");
    }
    let e = dir.ping().await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    let e = dir
        .set_password(&slapd.user_dn("bob"), &good_password("down"), false)
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    let e = dir
        .check_user_password(&slapd.user_dn("bob"), &Secret::new("x"))
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");

    slapd.start_again();
    let alice = dir.find_user("alice").await.expect("after the restart");
    assert_eq!(alice.user_name, "alice");
    dir.ping().await.expect("ping after the restart");
    dir.set_password(&slapd.user_dn("bob"), &good_password("up"), false)
        .await
        .expect("write after the restart");
}

#[tokio::test]
async fn a_restart_between_requests_is_invisible_to_callers() {
    let mut slapd = Slapd::start();
    let dir = directory(&slapd);
    // Fill the pool with several connections.
    let names = ["alice", "bob", "carol", "dave", "erin"];
    let found = futures::future::join_all(names.iter().map(|n| dir.find_user(n))).await;
    assert!(found.iter().all(Result::is_ok));
    slapd.start_again();
    // Every pooled connection is now dead; each request still succeeds.
    for n in names {
        dir.find_user(n)
            .await
            .unwrap_or_else(|e| panic!("{n}: {e:?}"));
    }
}

/// slapd's default size limit (500) ends a follower's refresh on any larger directory:
/// the follower must say which limit and what to change, and pushes keep searching.
#[tokio::test]
async fn a_follower_ended_by_a_size_limit_says_which_limit_to_lift() {
    let slapd = Slapd::start_with_service_limits("size=2");
    let dir = directory(&slapd);
    let followed = dir
        .follow_users(&["uid".to_owned()], "uid", &[])
        .await
        .expect("the sandbox offers content synchronisation");
    let deadline = Instant::now() + Duration::from_secs(10);
    let reason = loop {
        if let Some(reason) = followed.stopped_because() {
            break reason;
        }
        assert!(Instant::now() < deadline, "the follower never stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!followed.is_live());
    assert!(reason.contains("size limit"), "{reason}");
    assert!(
        reason.contains(&format!("limits dn.exact=\"{}\"", slapd.service_dn)),
        "{reason}"
    );
    // Reads that stay within the limit still work.
    dir.find_user("alice")
        .await
        .expect("a search within the limit");
}

#[tokio::test]
async fn a_frozen_directory_times_out_and_recovers() {
    let slapd = Slapd::start();
    let dir = Directory::new(DirectorySettings {
        operation_timeout: Duration::from_secs(1),
        ..settings(&slapd)
    })
    .unwrap();
    dir.find_user("alice").await.unwrap();
    signal(&slapd, "STOP");
    let started = Instant::now();
    let outcome = dir.find_user("alice").await;
    let took = started.elapsed();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", slapd_pid(&slapd)));
    signal(&slapd, "CONT");
    let e = outcome.expect_err(&format!(
        "a frozen directory answered after {took:?}; slapd's /proc stat now: {stat:?}"
    ));
    assert!(e.is_unavailable(), "{e:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    dir.find_user("alice").await.expect("after SIGCONT");
}

#[tokio::test]
async fn a_password_write_without_an_answer_is_reported_as_outcome_unknown() {
    let slapd = Slapd::start();
    let dir = Directory::new(DirectorySettings {
        operation_timeout: Duration::from_secs(1),
        ..settings(&slapd)
    })
    .unwrap();
    let bob = dir.find_user("bob").await.unwrap();
    signal(&slapd, "STOP");
    let e = dir
        .set_password(&bob.dn, &good_password("frozen"), false)
        .await
        .unwrap_err();
    signal(&slapd, "CONT");
    assert!(
        matches!(e, DirectoryError::WriteOutcomeUnknown(_)),
        "a sent write without an answer must not look like 'nothing happened': {e:?}"
    );
    assert!(e.is_unavailable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_requests_share_a_small_pool() {
    let slapd = Slapd::start();
    let dir = Directory::new(DirectorySettings {
        pool_size: 2,
        ..settings(&slapd)
    })
    .unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let dir = dir.clone();
            let name = ["alice", "bob", "carol", "dave", "erin"][i % 5];
            tokio::spawn(async move { dir.find_user(name).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("find_user");
    }
}

// --------------------------------------------------------------------------------------
// What slapd itself answers (the facts the error mapping relies on)

/// Password Modify as the service account with the ppolicy control, straight through
/// ldap3: the raw result code, text and control value.
async fn raw_password_modify(slapd: &Slapd, dn: &str, new: &str) -> (u32, String, Option<Vec<u8>>) {
    let roots = {
        let mut store = rustls::RootCertStore::empty();
        let pem = std::fs::read(&slapd.ca_file).unwrap();
        use rustls_pki_types::pem::PemObject;
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
            store.add(c.unwrap()).unwrap();
        }
        store
    };
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let (conn, mut ldap) = LdapConnAsync::with_settings(
        LdapConnSettings::new().set_config(std::sync::Arc::new(config)),
        &slapd.ldaps_url,
    )
    .await
    .unwrap();
    ldap3::drive!(conn);
    ldap.simple_bind(&slapd.service_dn, &slapd.service_password)
        .await
        .unwrap()
        .success()
        .unwrap();
    let ldap3::result::ExopResult(_, res) = ldap
        .with_controls(ldap3::controls::RawControl {
            ctype: "1.3.6.1.4.1.42.2.27.8.5.1".into(),
            crit: false,
            val: None,
        })
        .extended(PasswordModify {
            user_id: Some(dn),
            old_pass: None,
            new_pass: Some(new),
        })
        .await
        .unwrap();
    let ctrl = res
        .ctrls
        .iter()
        .find(|c| c.1.ctype == "1.3.6.1.4.1.42.2.27.8.5.1")
        .map(|c| c.1.val.clone().unwrap_or_default());
    let _ = ldap.unbind().await;
    (res.rc, res.text, ctrl)
}

#[tokio::test]
async fn slapd_answers_rejections_with_rc_19_and_a_ppolicy_error() {
    let slapd = Slapd::start();
    let dn = slapd.user_dn("bob");
    // Too short: rc 19, error passwordTooShort (6).
    let (rc, text, ctrl) = raw_password_modify(&slapd, &dn, "Ab1!").await;
    eprintln!("too short: rc={rc} text={text:?} ctrl={ctrl:02x?}");
    assert_eq!(rc, 19, "{text}");
    assert_eq!(ctrl.as_deref(), Some(&[0x30, 0x03, 0x81, 0x01, 0x06][..]));
    // Accepted: rc 0, no control. ppolicy sets pwdReset by itself only when the writer has
    // `manage` on userPassword (ITS#7084); a change by a writer without it, like our
    // service account, *deletes* pwdReset. So "must change" has to be written afterwards.
    slapd.ldapmodify_as_root(&format!(
        "dn: {dn}\nchangetype: modify\nreplace: pwdReset\npwdReset: TRUE\n"
    ));
    let (rc, text, ctrl) = raw_password_modify(&slapd, &dn, "Lb-raw-A-7xQ2mZ9v").await;
    eprintln!("accepted: rc={rc} text={text:?} ctrl={ctrl:02x?}");
    assert_eq!(rc, 0, "{text}");
    assert!(ctrl.is_none(), "{ctrl:02x?}");
    assert!(slapd.ldapsearch_attr(&dn, "pwdReset").is_empty());
    // The current password again: rc 19, error passwordInHistory (8).
    let (rc, text, ctrl) = raw_password_modify(&slapd, &dn, "Lb-raw-A-7xQ2mZ9v").await;
    eprintln!("same as current: rc={rc} text={text:?} ctrl={ctrl:02x?}");
    assert_eq!(rc, 19, "{text}");
    assert_eq!(ctrl.as_deref(), Some(&[0x30, 0x03, 0x81, 0x01, 0x08][..]));
    // An older one (A, B, then A): rc 19, error passwordInHistory (8).
    let (rc, text, _) = raw_password_modify(&slapd, &dn, "Lb-raw-B-7xQ2mZ9v").await;
    assert_eq!(rc, 0, "{text}");
    let (rc, text, ctrl) = raw_password_modify(&slapd, &dn, "Lb-raw-A-7xQ2mZ9v").await;
    eprintln!("in history: rc={rc} text={text:?} ctrl={ctrl:02x?}");
    assert_eq!(rc, 19, "{text}");
    assert_eq!(ctrl.as_deref(), Some(&[0x30, 0x03, 0x81, 0x01, 0x08][..]));
    // No such entry: rc 32, no control.
    let (rc, text, ctrl) =
        raw_password_modify(&slapd, &slapd.user_dn("nobody"), "Lb-raw-C-7xQ2mZ9v").await;
    eprintln!("no such entry: rc={rc} text={text:?} ctrl={ctrl:02x?}");
    assert_eq!(rc, 32, "{text}");
}

//! Bulk jobs against a real directory of each kind (OpenLDAP, 389-ds, Active Directory),
//! configured as `scripts/demo` configures it: resetting everyone but yourself, killed
//! mid-way with SIGKILL and resumed without resetting anyone twice; forced change for a
//! group and its undo; the per-request cap for interactive callers.

mod harness;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use harness::daemon::{Api, Daemon};
use harness::slapd::{Kind, Slapd};
use harness::smtp::MailSink;
use rstest::rstest;
use serde_json::{Value, json};

async fn sign_in(api: &Api, user: &str, password: &str) -> String {
    let (status, body, _) = api
        .post(
            "",
            "/api/v1/sessions",
            json!({"userName": user, "password": password}),
        )
        .await;
    assert_eq!(status, 201, "{user} signs in: {body}");
    body["token"].as_str().expect("token").to_owned()
}

async fn wait_for(api: &Api, token: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (status, job) = api.get(token, &format!("/api/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "{job}");
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "job did not get there: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A daemon for `dir` with the demo's configuration for its kind.
fn daemon(dir: &Slapd, mail: &MailSink) -> Daemon {
    Daemon::start_with(dir, mail.port, &dir.demo_settings())
}

/// The attribute users are named by in a filter: `uid`, or Active Directory's
/// `sAMAccountName`.
fn name_attribute(kind: Kind) -> &'static str {
    match kind {
        Kind::ActiveDirectory => "sAMAccountName",
        _ => "uid",
    }
}

#[rstest]
#[tokio::test]
async fn resetting_everyone_survives_a_kill_and_resets_nobody_twice(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    // 389-ds (PBKDF2) and Samba (Kerberos keys, one process) take ten times as long per
    // password as OpenLDAP: fewer users there, all in one batch, so the kill falls inside
    // it and the resumed run must find by a bind which passwords are in force.
    let generated = if kind == Kind::OpenLdap { 1000 } else { 150 };
    let others = generated as u64 + 4;
    let slapd = Slapd::start_kind(kind, generated, &[]);
    let mail = MailSink::start();
    // The OpenLDAP sandbox hashes clear-text passwords (as the demo says): each reset is
    // one write, the path a kill must not leave half-done. Elsewhere a reset that asks
    // for a change is the password, then the flag: the other path. Sixteen resets at a
    // time queue up for the pool's connections and in Samba's single process: the
    // default timeouts (the demo's), not the harness's shorter ones, or a wait for a
    // busy connection counts as the directory being unavailable and pauses the job.
    let env: &[(&str, &str)] = if kind == Kind::OpenLdap {
        &[("LOCKBRIDGE__DIRECTORY__SERVER_HASHES_CLEARTEXT", "true")]
    } else {
        &[
            ("LOCKBRIDGE__DIRECTORY__OPERATION_TIMEOUT_SECS", "10"),
            ("LOCKBRIDGE__DIRECTORY__CONNECT_TIMEOUT_SECS", "5"),
        ]
    };
    let before = slapd.users_state();
    assert_eq!(before.len() as u64, others + 1, "the users and alice");
    let mut daemon = Daemon::start_with_env(&slapd, mail.port, &slapd.demo_settings(), env);
    let api = daemon.client();
    // alice is in the sandbox's admin group: a global admin, acting as herself.
    let alice = sign_in(&api, "alice", &slapd.sample_password).await;

    let (status, body, _) = api
        .post(
            &alice,
            "/api/v1/password-resets",
            json!({"all": true, "mode": "auto", "requireChangeAtNextSignIn": true, "report": true}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    assert_eq!(body["total"], others, "everyone but alice: {body}");

    // Killed (SIGKILL) part-way, once the directory holds a new password for three in
    // ten (the job's counters move a batch at a time), then started again: the job
    // carries on.
    let written = |states: &HashMap<String, harness::UserState>| {
        states
            .iter()
            .filter(|(uid, s)| {
                before
                    .get(*uid)
                    .is_some_and(|b| s.password_writes > b.password_writes)
            })
            .count() as u64
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while written(&slapd.users_state()) < others * 3 / 10 {
        assert!(Instant::now() < deadline, "the job did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.kill();
    let at_kill = written(&slapd.users_state());
    assert!(at_kill < others, "killed before the end: {at_kill} written");
    daemon.restart();
    // A new client: the old one's kept-alive connection died with the process.
    let api = daemon.client();
    let job = wait_for(&api, &alice, &id, |j| j["status"] != "running").await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(
        (
            job["done"].clone(),
            job["refused"].clone(),
            job["failed"].clone()
        ),
        (json!(others), json!(0), json!(0)),
        "{job}"
    );
    assert_eq!(job["reportAvailable"], true);

    // Nobody twice: each password was written once (the history grew by one, or Active
    // Directory's unicodePwd version did), and each must change.
    let after = slapd.users_state();
    let writes = |states: &HashMap<String, harness::UserState>, uid: &str| {
        states.get(uid).map_or(0, |s| s.password_writes)
    };
    for n in 1..=generated {
        let uid = format!("user{n:06}");
        assert_eq!(
            writes(&after, &uid),
            writes(&before, &uid) + 1,
            "{uid}: {:?} then {:?}",
            before.get(&uid),
            after.get(&uid)
        );
        assert!(after[&uid].must_change, "{uid} must change");
    }
    // The caller untouched.
    assert_eq!(
        writes(&after, "alice"),
        writes(&before, "alice"),
        "alice was reset"
    );
    assert!(
        slapd
            .bind_as(&slapd.user_dn("alice"), &slapd.sample_password)
            .success
    );

    // The report: every account, its new password (which binds, asking for a change),
    // given out once.
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/jobs/{id}/report", daemon.url))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("report");
    assert_eq!(response.status().as_u16(), 200);
    let csv = response.text().await.expect("csv");
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(
        rows.len(),
        others as usize,
        "{}",
        &csv[..csv.len().min(300)]
    );
    let mut resumed = 0;
    for row in &rows {
        assert_eq!(row[1], "done", "{row:?}");
        assert!(row[3].len() >= 12, "a password for {}", row[0]);
        resumed += usize::from(row[2] == "resumed");
    }
    for row in rows.iter().step_by(97) {
        let bind = slapd.bind_as(&slapd.user_dn(row[0]), row[3]);
        assert!(
            bind.success && bind.must_change,
            "{}: {}",
            row[0],
            bind.output
        );
    }
    tracing_free_note(resumed);
    let (status, body, _) = api
        .get_full(&alice, &format!("/api/v1/jobs/{id}/report"))
        .await;
    assert_eq!(status, 410, "given out once: {body}");

    // Every reset is in the audit log, recorded in batches: at least once each (a reset
    // the resumed run found done is recorded again, marked so, if the stopped run had
    // recorded it already).
    let mut recorded: HashMap<String, usize> = HashMap::new();
    let mut found_after_restart = 0;
    let mut before: Option<i64> = None;
    loop {
        let page = match before {
            Some(id) => {
                format!("/api/v1/audit?actor=alice&action=password.reset&limit=500&before={id}")
            }
            None => "/api/v1/audit?actor=alice&action=password.reset&limit=500".to_owned(),
        };
        let (status, body) = api.get(&alice, &page).await;
        assert_eq!(status, 200, "{body}");
        let records = body["records"].as_array().cloned().unwrap_or_default();
        for r in &records {
            assert_eq!(r["outcome"], "success", "{r}");
            *recorded
                .entry(r["target"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
            found_after_restart += usize::from(r["detail"]["foundAfterRestart"] == true);
        }
        match body["next"].as_i64() {
            Some(next) if !records.is_empty() => before = Some(next),
            _ => break,
        }
    }
    assert_eq!(recorded.len(), others as usize, "every account recorded");
    let twice = recorded.values().filter(|n| **n > 1).count();
    assert!(
        twice <= found_after_restart,
        "{twice} recorded twice, {found_after_restart} marked"
    );

    let passwords: Vec<&str> = rows.iter().step_by(50).map(|r| r[3]).collect();
    daemon.assert_no_secrets(&passwords).await;
}

/// How many items a resumed run found already done (by a bind) rather than redid: zero
/// is possible when the kill fell between batches, so it is printed, not asserted.
fn tracing_free_note(resumed: usize) {
    eprintln!("items found in force after the restart: {resumed}");
}

#[rstest]
#[tokio::test]
async fn forcing_a_change_for_a_group_and_undoing_it(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    let slapd = Slapd::start_kind(kind, 0, &[]);
    let mail = MailSink::start();
    let daemon = daemon(&slapd, &mail);
    let api = daemon.client();
    let alice = sign_in(&api, "alice", &slapd.sample_password).await;
    let staff = format!("cn=staff,{}", slapd.groups_base);

    for required in [true, false] {
        let (status, body, _) = api
            .post(
                &alice,
                "/api/v1/password-change-requirements",
                json!({"group": staff, "required": required}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["total"], 4, "bob, carol, dave, erin: {body}");
        let id = body["id"].as_str().expect("id").to_owned();
        let job = wait_for(&api, &alice, &id, |j| j["status"] != "running").await;
        assert_eq!(job["done"], 4, "{job}");
        for uid in ["bob", "carol", "dave", "erin"] {
            let dn = slapd.user_dn(uid);
            let bind = slapd.bind_as(&dn, &slapd.sample_password);
            assert!(bind.success, "{uid}: {}", bind.output);
            assert_eq!(bind.must_change, required, "{uid}: {}", bind.output);
            assert_eq!(slapd.must_change(&dn), required, "{uid}");
        }
        let (_, page) = api
            .get(&alice, &format!("/api/v1/jobs/{id}/outcomes?limit=10"))
            .await;
        let outcomes = page["outcomes"].as_array().expect("outcomes");
        assert_eq!(outcomes.len(), 4, "{page}");
        assert!(
            outcomes
                .iter()
                .all(|o| o["status"] == "done" && o["changed"] == true),
            "{page}"
        );
    }
    // Not in the group, not touched.
    assert!(
        !slapd
            .bind_as(&slapd.user_dn("alice"), &slapd.sample_password)
            .must_change
    );
}

#[rstest]
#[tokio::test]
async fn a_filter_selects_users_and_a_bad_one_is_refused_with_an_example(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    let slapd = Slapd::start_kind(kind, 12, &[]);
    let mail = MailSink::start();
    let daemon = daemon(&slapd, &mail);
    let api = daemon.client();
    let alice = sign_in(&api, "alice", &slapd.sample_password).await;

    // user000001 .. user000009 match, user000010 .. user000012 do not; nor does alice.
    let (status, body, _) = api
        .post(
            &alice,
            "/api/v1/password-change-requirements",
            json!({"filter": format!("(|({name}=user00000*)({name}=alice))", name = name_attribute(kind)),
                   "required": true}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["total"], 9, "never the caller: {body}");
    let id = body["id"].as_str().expect("id").to_owned();
    let job = wait_for(&api, &alice, &id, |j| j["status"] != "running").await;
    assert_eq!(job["done"], 9, "{job}");
    for (uid, expected) in [
        ("user000001", true),
        ("user000009", true),
        ("user000010", false),
    ] {
        let bind = slapd.bind_as(&slapd.user_dn(uid), &slapd.sample_password);
        assert!(bind.success, "{uid}: {}", bind.output);
        assert_eq!(bind.must_change, expected, "{uid}: {}", bind.output);
    }
    assert!(
        !slapd
            .bind_as(&slapd.user_dn("alice"), &slapd.sample_password)
            .must_change
    );

    for bad in ["uid=user1", "(uid=user1", "(&(uid=a)"] {
        let (status, body, _) = api
            .post(
                &alice,
                "/api/v1/password-change-requirements",
                json!({"filter": bad, "required": true}),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("RFC 4515") && detail.contains("e.g."),
            "{bad}: {body}"
        );
    }
    let (status, body, _) = api
        .post(
            &alice,
            "/api/v1/password-change-requirements",
            json!({"filter": "(uid=user1*)", "all": true, "required": true}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

#[rstest]
#[tokio::test]
async fn interactive_callers_name_at_most_forty_and_refusals_are_per_account(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    let slapd = Slapd::start_kind(kind, 50, &[]);
    let mail = MailSink::start();
    let daemon = daemon(&slapd, &mail);
    let api = daemon.client();
    let users: Vec<String> = (1..=41).map(|n| format!("user{n:06}")).collect();

    let (status, body, _) = api
        .post(
            &daemon.password_admin_token,
            "/api/v1/password-change-requirements",
            json!({"users": users, "required": true}),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("at most 40"),
        "{body}"
    );

    // Forty is fine; an administrator among them is refused, alone, and audited.
    let mut forty: Vec<String> = users[..39].to_vec();
    forty.push("alice".into());
    let (status, body, _) = api
        .post(
            &daemon.password_admin_token,
            "/api/v1/password-change-requirements",
            json!({"users": forty, "required": true}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    let job = wait_for(&api, &daemon.password_admin_token, &id, |j| {
        j["status"] != "running"
    })
    .await;
    assert_eq!(
        (job["done"].clone(), job["refused"].clone()),
        (json!(39), json!(1)),
        "{job}"
    );
    let (_, page) = api
        .get(
            &daemon.password_admin_token,
            &format!("/api/v1/jobs/{id}/outcomes?after=38"),
        )
        .await;
    assert_eq!(page["outcomes"][0]["userName"], "alice", "{page}");
    assert_eq!(page["outcomes"][0]["code"], "forbidden_target", "{page}");
    assert!(
        !slapd
            .bind_as(&slapd.user_dn("alice"), &slapd.sample_password)
            .must_change
    );

    // Without a way to hand the passwords over, a reset job is refused up front.
    let (status, body, _) = api
        .post(
            &daemon.admin_token,
            "/api/v1/password-resets",
            json!({"users": ["bob"], "mode": "auto"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // An auditor may not start one at all.
    let auditor = harness::daemon::create_token(&daemon.config_path, "bulk-auditor", "auditor");
    let (status, body, _) = api
        .post(
            &auditor,
            "/api/v1/password-resets",
            json!({"users": ["bob"], "mode": "auto", "report": true}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
}

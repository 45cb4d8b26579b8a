//! Administrators as people, against a real directory of each kind (OpenLDAP, 389-ds,
//! Active Directory) configured as `scripts/demo` configures it: they sign in as
//! themselves, hold roles through directory groups, and every role × every kind of target
//! × every action is allowed or refused exactly as `docs/roles.md` says. A refusal
//! changes nothing in the directory and is audited.

mod harness;

use harness::daemon::Daemon;
use harness::slapd::{Kind, Slapd};
use harness::smtp::MailSink;
use rstest::rstest;
use serde_json::json;

/// (role, config key, group cn). Each role has an acting person `act-<cn>` and a target
/// person `tgt-<cn>`, both members of the role's group.
const ROLES: &[(&str, &str, &str)] = &[
    ("global-admin", "global_admin", "global"),
    (
        "privileged-authentication-admin",
        "privileged_authentication_admin",
        "privauth",
    ),
    ("user-admin", "user_admin", "useradmins"),
    ("helpdesk-admin", "helpdesk_admin", "helpdesk"),
    ("password-admin", "password_admin", "passwordadmins"),
    ("auditor", "auditor", "auditors"),
];

const ACTIONS: &[&str] = &[
    "ResetPassword",
    "RequireChange",
    "Unlock",
    "BlockSignIn",
    "SetNeverExpires",
];

fn person(kind: Kind, uid: &str) -> String {
    kind.person_ldif(uid, &kind.people())
}

fn person_dn(kind: Kind, uid: &str) -> String {
    kind.person_dn(uid, &kind.people())
}

fn group_dn(kind: Kind, cn: &str) -> String {
    match kind {
        Kind::ActiveDirectory => format!("CN={cn},{}", kind.groups()),
        _ => format!("cn={cn},{}", kind.groups()),
    }
}

fn ldif(kind: Kind) -> String {
    let mut out = Vec::new();
    for (_, _, cn) in ROLES {
        let (act, tgt) = (format!("act-{cn}"), format!("tgt-{cn}"));
        out.push(person(kind, &act));
        out.push(person(kind, &tgt));
        out.push(kind.group_ldif(cn, &[person_dn(kind, &act), person_dn(kind, &tgt)]));
    }
    out.join("\n")
}

/// The role groups, and the demo's settings for the kind (where the policies are).
fn config(dir: &Slapd) -> String {
    let mut roles = String::from("\n[roles]\n");
    for (_, key, cn) in ROLES {
        roles.push_str(&format!("{key} = [\"{}\"]\n", group_dn(dir.kind, cn)));
    }
    roles.push_str(&dir.demo_settings());
    roles
}

/// A directory of `kind` with the role holders and `users` generated users, and the
/// daemon configured for it.
fn start(kind: Kind, users: usize) -> (Slapd, MailSink, Daemon) {
    let dir = Slapd::start_kind(kind, users, &[&ldif(kind)]);
    let mail = MailSink::start();
    let daemon = Daemon::start_with(&dir, mail.port, &config(&dir));
    (dir, mail, daemon)
}

/// The documented answer: docs/roles.md's whole table, read as (action, target) → the
/// roles that may.
fn documented() -> std::collections::HashMap<(String, String), Vec<String>> {
    let doc =
        std::fs::read_to_string(harness::repo_root().join("docs/roles.md")).expect("roles.md");
    let (_, table) = doc
        .split_once("## The whole table")
        .expect("the whole table");
    let mut header: Vec<String> = Vec::new();
    let mut out = std::collections::HashMap::new();
    for line in table.lines() {
        let cells: Vec<String> = line.split('|').map(|c| c.trim().to_owned()).collect();
        if cells.len() < 4 {
            continue;
        }
        if cells[1] == "action" {
            header = cells[3..cells.len() - 1].to_vec();
            continue;
        }
        if !cells[1].starts_with('`') {
            continue;
        }
        let allowed = header
            .iter()
            .zip(&cells[3..])
            .filter(|(_, c)| *c == "yes")
            .map(|(r, _)| r.clone())
            .collect();
        out.insert(
            (cells[1].trim_matches('`').to_owned(), cells[2].clone()),
            allowed,
        );
    }
    out
}

/// What an allowed step leaves in the directory.
#[derive(Debug, Clone, Copy)]
enum Effect {
    MustChange(bool),
    Blocked(bool),
    Locked(bool),
    NeverExpires(bool),
}

/// The requests of `action`: (POST or PUT, path below the user, body, effect).
fn steps(action: &str) -> Vec<(&'static str, &'static str, serde_json::Value, Effect)> {
    match action {
        "ResetPassword" => vec![(
            "POST",
            "password-reset",
            json!({"mode": "auto", "requireChangeAtNextSignIn": true, "showPassword": true}),
            Effect::MustChange(true),
        )],
        "RequireChange" => vec![
            (
                "PUT",
                "require-password-change",
                json!({"required": true}),
                Effect::MustChange(true),
            ),
            (
                "PUT",
                "require-password-change",
                json!({"required": false}),
                Effect::MustChange(false),
            ),
        ],
        "Unlock" => vec![("POST", "unlock", json!({}), Effect::Locked(false))],
        "BlockSignIn" => vec![
            ("POST", "block", json!({}), Effect::Blocked(true)),
            ("POST", "unblock", json!({}), Effect::Blocked(false)),
        ],
        "SetNeverExpires" => vec![
            (
                "PUT",
                "password-never-expires",
                json!({"neverExpires": true}),
                Effect::NeverExpires(true),
            ),
            (
                "PUT",
                "password-never-expires",
                json!({"neverExpires": false}),
                Effect::NeverExpires(false),
            ),
        ],
        other => panic!("unknown action {other}"),
    }
}

/// Does `action` to `target` as `token`; the HTTP statuses of its requests. With
/// `check`, each step that succeeds is read back from the directory (the entry `dn`).
async fn act(
    api: &harness::daemon::Api,
    token: &str,
    action: &str,
    target: &str,
    check: Option<(&Slapd, &str)>,
) -> Vec<u16> {
    let mut statuses = Vec::new();
    for (method, suffix, body, effect) in steps(action) {
        let path = format!("/api/v1/users/{target}/{suffix}");
        let status = match method {
            "POST" => api.post(token, &path, body).await.0,
            _ => api.put(token, &path, body).await.0,
        };
        statuses.push(status);
        if let (Some((dir, dn)), 200) = (check, status) {
            let holds = match effect {
                Effect::MustChange(v) => dir.must_change(dn) == v,
                Effect::Blocked(v) => dir.is_blocked(dn) == v,
                Effect::Locked(v) => dir.is_locked(dn) == v,
                Effect::NeverExpires(v) => dir.never_expires(dn) == v,
            };
            assert!(
                holds,
                "{action} ({suffix}) on {dn}: the directory does not show {effect:?}: {}",
                dir.sign_in_state(dn)
            );
        }
    }
    statuses
}

#[rstest]
#[tokio::test]
async fn every_role_on_every_kind_of_target_does_what_the_table_says(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    let (slapd, _mail, daemon) = start(kind, 0);
    let api = daemon.client();
    let table = documented();
    assert_eq!(
        table.len(),
        5 * 9,
        "the table has every action for every target kind"
    );

    // Each person signs in as themselves and gets their roles from the groups.
    let mut sessions = Vec::new();
    for (role, _, cn) in ROLES {
        let (status, body, headers) = api
            .post(
                "",
                "/api/v1/sessions",
                json!({"userName": format!("act-{cn}"), "password": slapd.sample_password}),
            )
            .await;
        assert_eq!(status, 201, "act-{cn} signs in: {body}");
        assert_eq!(body["roles"], json!([role]), "{body}");
        assert_eq!(
            headers.get("cache-control").map(|v| v.to_str().unwrap()),
            Some("no-store")
        );
        let token = body["token"].as_str().expect("token").to_owned();
        assert!(token.starts_with("lbs_"));
        sessions.push((role.to_string(), format!("act-{cn}"), token));
    }
    let scim = harness::daemon::create_token(&daemon.config_path, "matrix-scim", "scim");

    // Targets: a plain user, a holder of each role, the caller themselves, the service
    // account (outside users_base here: not even found).
    let mut targets: Vec<(String, String)> = vec![("user".into(), "bob".into())];
    for (role, _, cn) in ROLES {
        targets.push((role.to_string(), format!("tgt-{cn}")));
    }
    let service_name = slapd
        .service_dn
        .split(',')
        .next()
        .and_then(|rdn| rdn.split_once('='))
        .map(|(_, v)| v.to_owned())
        .expect("service rdn");

    let mut callers: Vec<(String, Option<String>, String)> = sessions
        .iter()
        .map(|(role, uid, token)| (role.clone(), Some(uid.clone()), token.clone()))
        .collect();
    callers.push(("scim".into(), None, scim.clone()));

    // Each person's DN once (Active Directory's is looked up by account name).
    let mut dns: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut checked = 0;
    for action in ACTIONS {
        for (role, own_uid, token) in &callers {
            let mut cases: Vec<(String, String)> = targets.clone();
            if let Some(uid) = own_uid {
                cases.push(("self".into(), uid.clone()));
            }
            cases.push(("service account".into(), service_name.clone()));
            for (kind, uid) in cases {
                let allowed = table[&(action.to_string(), kind.clone())].contains(role);
                let dn = if kind == "service account" {
                    slapd.service_dn.clone()
                } else {
                    dns.entry(uid.clone())
                        .or_insert_with(|| slapd.user_dn(&uid))
                        .clone()
                };
                // Only a refusal is checked against the entry as it was.
                let before = (!allowed).then(|| slapd.sign_in_state(&dn));
                // What an allowed action does is read back on the plain user.
                let check = (allowed && kind == "user").then_some((&slapd, dn.as_str()));
                let statuses = act(&api, token, action, &uid, check).await;
                if allowed {
                    assert!(
                        statuses.iter().all(|s| *s == 200),
                        "{role} may {action} on {kind} ({uid}): {statuses:?}"
                    );
                } else {
                    assert!(
                        statuses.iter().all(|s| [403, 404].contains(s)),
                        "{role} may not {action} on {kind} ({uid}): {statuses:?}"
                    );
                    if kind != "service account" {
                        assert!(
                            statuses.iter().all(|s| *s == 403),
                            "{role}, {action} on {kind}: refused, not missing: {statuses:?}"
                        );
                    }
                    assert_eq!(
                        Some(slapd.sign_in_state(&dn)),
                        before,
                        "{role} refused {action} on {kind}, yet {uid} changed"
                    );
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 5 * (6 * 9 + 8));

    // Refusals are audited with the person as actor (the ones made by people: the
    // scim token is refused before any account is looked at).
    let (status, audit) = api
        .get(
            &daemon.admin_token,
            "/api/v1/audit?actor=act-passwordadmins&action=sign_in.blocked&limit=500",
        )
        .await;
    assert_eq!(status, 200, "{audit}");
    let records = audit["records"].as_array().expect("records");
    assert!(!records.is_empty(), "{audit}");
    for r in records {
        assert!(
            r["outcome"].as_str().unwrap_or("").starts_with("refused"),
            "{r}"
        );
    }
    let (_, audit) = api
        .get(
            &daemon.admin_token,
            "/api/v1/audit?actor=act-helpdesk&action=password.reset&limit=500",
        )
        .await;
    let outcomes: Vec<&str> = audit["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["outcome"].as_str())
        .collect();
    assert!(
        outcomes.iter().any(|o| o.starts_with("success")),
        "{outcomes:?}"
    );
    assert!(
        outcomes.iter().any(|o| o.starts_with("refused")),
        "{outcomes:?}"
    );
    daemon.assert_no_secrets(&[&slapd.sample_password]).await;
}

#[rstest]
#[tokio::test]
async fn signing_in_says_one_thing_for_every_failure_and_a_session_ends_on_sign_out(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    let (slapd, _mail, daemon) = start(kind, 0);
    let api = daemon.client();

    // Unknown name, wrong password, a user without a role: the same 401 and message.
    let mut answers = Vec::new();
    for (user, password) in [
        ("nobody-here", slapd.sample_password.as_str()),
        ("act-helpdesk", "Wrong-Password-123"),
        ("bob", slapd.sample_password.as_str()),
    ] {
        let (status, body, _) = api
            .post(
                "",
                "/api/v1/sessions",
                json!({"userName": user, "password": password}),
            )
            .await;
        assert_eq!(status, 401, "{user}: {body}");
        answers.push(body["detail"].clone());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");

    let (status, body, _) = api
        .post(
            "",
            "/api/v1/sessions",
            json!({"userName": "act-useradmins", "password": slapd.sample_password}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().expect("token").to_owned();
    let (status, _) = api.get(&token, "/api/v1/users/bob").await;
    assert_eq!(status, 200);
    // A user admin may not read the audit log.
    let (status, body) = api.get(&token, "/api/v1/audit").await;
    assert_eq!(status, 403, "{body}");

    // Its own account is out of reach, with a message that says so.
    let (status, body, _) = api
        .post(&token, "/api/v1/users/act-useradmins/block", json!({}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("your own account"),
        "{body}"
    );

    // An API token has no session to end.
    let (status, body, _) = api
        .delete(&daemon.admin_token, "/api/v1/sessions/current")
        .await;
    assert_eq!(status, 400, "{body}");

    let (status, _, _) = api.delete(&token, "/api/v1/sessions/current").await;
    assert_eq!(status, 204);
    let (status, body) = api.get(&token, "/api/v1/users/bob").await;
    assert_eq!(status, 401, "the session ended: {body}");

    // The audit log names the person.
    let (_, audit) = api
        .get(
            &daemon.admin_token,
            "/api/v1/audit?actor=act-useradmins&limit=50",
        )
        .await;
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for expected in ["session.signed_in", "sign_in.blocked", "session.signed_out"] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }
    daemon
        .assert_no_secrets(&[&slapd.sample_password, "Wrong-Password-123", &token])
        .await;
}

#[rstest]
#[tokio::test]
async fn unlock_ends_a_lockout_but_not_a_block_and_unblock_the_reverse(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    let (slapd, _mail, daemon) = start(kind, 0);
    let api = daemon.client();
    let erin = slapd.user_dn("erin");

    // Five failures in the sandboxes' policies.
    slapd.lock_out(&erin);
    assert!(!slapd.bind_as(&erin, &slapd.sample_password).success);
    assert!(!slapd.is_blocked(&erin));
    let (status, user) = api.get(&daemon.admin_token, "/api/v1/users/erin").await;
    assert_eq!(status, 200);
    assert_eq!(
        (user["locked"].clone(), user["signInBlocked"].clone()),
        (json!(true), json!(false))
    );

    // Unblocking a locked-out account changes nothing.
    let (status, body, _) = api
        .post(&daemon.admin_token, "/api/v1/users/erin/unblock", json!({}))
        .await;
    assert_eq!(
        (status, body["changed"].clone()),
        (200, json!(false)),
        "{body}"
    );
    assert!(!slapd.bind_as(&erin, &slapd.sample_password).success);
    assert!(slapd.is_locked(&erin));
    assert!(!slapd.is_blocked(&erin));

    let (status, body, _) = api
        .post(&daemon.admin_token, "/api/v1/users/erin/unlock", json!({}))
        .await;
    assert_eq!(
        (status, body["changed"].clone()),
        (200, json!(true)),
        "{body}"
    );
    assert!(!slapd.is_locked(&erin));
    assert!(slapd.bind_as(&erin, &slapd.sample_password).success);

    // Blocked: unlock refuses and says to unblock; unblock lifts it.
    let (status, _, _) = api
        .post(&daemon.admin_token, "/api/v1/users/erin/block", json!({}))
        .await;
    assert_eq!(status, 200);
    assert!(slapd.is_blocked(&erin));
    assert!(!slapd.bind_as(&erin, &slapd.sample_password).success);
    let (status, body, _) = api
        .post(&daemon.admin_token, "/api/v1/users/erin/unlock", json!({}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("unblock"),
        "{body}"
    );
    let (status, body, _) = api
        .post(&daemon.admin_token, "/api/v1/users/erin/unblock", json!({}))
        .await;
    assert_eq!(
        (status, body["changed"].clone()),
        (200, json!(true)),
        "{body}"
    );
    assert!(!slapd.is_blocked(&erin));
    assert!(slapd.bind_as(&erin, &slapd.sample_password).success);
}

/// Roles held over part of the directory (`[[roles.scoped]]`, Entra's administrative
/// units): a subtree, or a group's members. Outside it the role does nothing, and the
/// refusal says why.
#[rstest]
#[tokio::test]
async fn a_scoped_role_reaches_only_its_subtree_or_group(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    let paris = paris(kind);
    let ldif = [
        kind.ou_ldif("paris", &kind.people()),
        kind.person_ldif("pierre", &paris),
        person(kind, "act-paris"),
        person(kind, "act-staffpw"),
        kind.group_ldif("paris-helpdesk", &[person_dn(kind, "act-paris")]),
        kind.group_ldif("staff-passwords", &[person_dn(kind, "act-staffpw")]),
    ]
    .join("\n");
    let slapd = Slapd::start_kind(kind, 2, &[&ldif]);
    let config = format!(
        "\n[[roles.scoped]]\nrole = \"helpdesk-admin\"\n\
         groups = [\"{}\"]\n\
         over_subtree = \"{paris}\"\n\
         \n[[roles.scoped]]\nrole = \"password-admin\"\n\
         groups = [\"{}\"]\n\
         over_group = \"{}\"\n{}",
        group_dn(kind, "paris-helpdesk"),
        group_dn(kind, "staff-passwords"),
        group_dn(kind, "staff"),
        slapd.demo_settings(),
    );
    let mail = MailSink::start();
    let daemon = Daemon::start_with(&slapd, mail.port, &config);
    let api = daemon.client();
    let sign_in = async |uid: &str| {
        let (status, body, _) = api
            .post(
                "",
                "/api/v1/sessions",
                json!({"userName": uid, "password": slapd.sample_password}),
            )
            .await;
        assert_eq!(status, 201, "{uid} signs in: {body}");
        body["token"].as_str().expect("token").to_owned()
    };
    let paris = sign_in("act-paris").await;
    let staff = sign_in("act-staffpw").await;

    // (who, target, allowed): the subtree, and the group (bob is in cn=staff).
    for (token, who, target, allowed) in [
        (&paris, "act-paris", "pierre", true),
        (&paris, "act-paris", "bob", false),
        (&paris, "act-paris", "user000001", false),
        (&staff, "act-staffpw", "bob", true),
        (&staff, "act-staffpw", "pierre", false),
        (&staff, "act-staffpw", "user000002", false),
    ] {
        let before = slapd.sign_in_state(&user_dn(&slapd, target));
        let (status, body, _) = api
            .post(
                token,
                &format!("/api/v1/users/{target}/password-reset"),
                json!({"mode": "auto", "requireChangeAtNextSignIn": true, "showPassword": true}),
            )
            .await;
        if allowed {
            assert_eq!(status, 200, "{who} resets {target}: {body}");
        } else {
            assert_eq!(status, 403, "{who} resets {target}: {body}");
            let detail = body["detail"].as_str().unwrap_or_default();
            assert!(
                detail.contains("outside the part of the directory"),
                "{body}"
            );
            assert_eq!(
                slapd.sign_in_state(&user_dn(&slapd, target)),
                before,
                "{who} left {target} unchanged"
            );
        }
    }
    // The refusal is audited under the person.
    let (status, body) = api
        .get(
            &daemon.admin_token,
            "/api/v1/audit?actor=act-paris&action=password.reset&limit=10",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let outcomes: Vec<String> = body["records"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| format!("{} {}", r["target"], r["outcome"]))
        .collect();
    assert!(
        outcomes
            .iter()
            .any(|o| o.contains("bob") && o.contains("refused")),
        "{outcomes:?}"
    );
}

/// The organizational unit of the Paris office, below the people.
fn paris(kind: Kind) -> String {
    let ou = if kind == Kind::ActiveDirectory {
        "OU"
    } else {
        "ou"
    };
    format!("{ou}=paris,{}", kind.people())
}

fn user_dn(slapd: &Slapd, uid: &str) -> String {
    if uid == "pierre" {
        slapd.kind.person_dn("pierre", &paris(slapd.kind))
    } else {
        slapd.user_dn(uid)
    }
}

/// A session keeps the roles it started with, but every action checks the person's
/// groups again (at most a second old): someone removed from a role group loses the
/// role at once, with a refusal that says why.
#[rstest]
#[tokio::test]
async fn a_person_removed_from_a_role_group_loses_the_role_within_a_second(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    let (slapd, _mail, daemon) = start(kind, 1);
    let api = daemon.client();
    let (status, body, _) = api
        .post(
            "",
            "/api/v1/sessions",
            json!({"userName": "act-helpdesk", "password": slapd.sample_password}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().expect("token").to_owned();
    let reset = async || {
        api.post(
            &token,
            "/api/v1/users/user000001/password-reset",
            json!({"mode": "auto", "requireChangeAtNextSignIn": true, "showPassword": true}),
        )
        .await
    };
    let (status, body, _) = reset().await;
    assert_eq!(status, 200, "{body}");

    slapd.ldapmodify_as_root(&format!(
        "dn: {}\nchangetype: modify\ndelete: member\nmember: {}\n",
        group_dn(kind, "helpdesk"),
        person_dn(kind, "act-helpdesk")
    ));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (status, body, _) = reset().await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no longer hold")),
        "{body}"
    );
}

//! The admin password-reset API end to end: the real daemon over HTTP, a real directory
//! of each kind lockbridge supports (OpenLDAP with ppolicy, 389 Directory Server, a Samba
//! Active Directory domain controller) configured as `scripts/demo` configures it, and a
//! real SMTP server.

mod harness;

use std::time::Duration;

use harness::daemon::Daemon;
use harness::slapd::{Kind, Slapd};
use harness::smtp::MailSink;
use rstest::rstest;
use serde_json::{Value, json};

struct Env {
    slapd: Slapd,
    mail: MailSink,
    daemon: Daemon,
}

fn env(kind: Kind) -> Env {
    let slapd = Slapd::start_kind(kind, 0, &[]);
    let mail = MailSink::start();
    let daemon = Daemon::start_with(&slapd, mail.port, &slapd.demo_settings());
    Env {
        slapd,
        mail,
        daemon,
    }
}

impl Env {
    fn dn(&self, uid: &str) -> String {
        self.slapd.user_dn(uid)
    }
}

const STRONG_1: &str = "Quiet-Harbor-Lantern-72";
const STRONG_2: &str = "Velvet-Orchard-Compass-39";

#[rstest]
#[tokio::test]
async fn auto_reset_requires_change_and_emails_the_password(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    let e = env(kind);
    let api = e.daemon.client();
    let (status, body, headers) = api
        .post(
            &e.daemon.admin_token,
            "/api/v1/users/bob/password-reset",
            json!({"mode": "auto", "requireChangeAtNextSignIn": true,
                   "sendTo": ["helpdesk@example.org"], "showPassword": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.contains_key("x-request-id"));
    let password = body["password"]
        .as_str()
        .expect("password shown")
        .to_string();
    assert!(password.len() >= 16);
    assert_eq!(body["sentTo"], json!(["helpdesk@example.org"]));

    // The new password works in a real bind, and the directory says it must be changed
    // (the Password Policy control, or Active Directory's `data 773`).
    let bind = e.slapd.bind_as(&e.dn("bob"), &password);
    assert!(
        bind.success,
        "bind with the new password failed: {}",
        bind.output
    );
    assert!(
        bind.must_change,
        "the directory did not ask for a change: {}",
        bind.output
    );
    assert!(e.slapd.must_change(&e.dn("bob")));
    let old = e.slapd.bind_as(&e.dn("bob"), &e.slapd.sample_password);
    assert!(!old.success, "the old password still works");

    // The user view shows the state.
    let (status, user) = api.get(&e.daemon.admin_token, "/api/v1/users/bob").await;
    assert_eq!(status, 200);
    assert_eq!(user["mustChangePassword"], true);
    if kind == Kind::ActiveDirectory {
        // "Must change" is pwdLastSet 0 there, the same attribute as the change time:
        // Active Directory keeps no time for a password that must change.
        assert!(user["passwordLastChanged"].is_null(), "{user}");
    } else {
        assert!(user["passwordLastChanged"].is_string(), "{user}");
    }

    // The email arrives, once, at the address asked for, with the password.
    let messages = e.mail.wait_for_count(1, Duration::from_secs(15));
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.envelope_to, vec!["helpdesk@example.org".to_string()]);
    assert!(
        m.text.contains(&password),
        "password missing from the text part"
    );
    assert!(
        m.html.contains(&password),
        "password missing from the HTML part"
    );

    // The audit log records it, without the password.
    let (status, audit) = api
        .get(&e.daemon.admin_token, "/api/v1/audit?target=bob")
        .await;
    assert_eq!(status, 200);
    let record = &audit["records"][0];
    assert_eq!(record["action"], "password.reset");
    assert_eq!(record["actor"], "test-global-admin");
    assert_eq!(record["outcome"], "success");
    assert_eq!(record["detail"]["mode"], "auto");
    assert!(record["requestId"].is_string());
    e.daemon
        .assert_no_secrets(&[
            &password,
            &e.daemon.admin_token,
            &e.daemon.password_admin_token,
        ])
        .await;
}

#[rstest]
#[tokio::test]
async fn manual_reset_without_required_change(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    let e = env(kind);
    let api = e.daemon.client();
    let (status, body, _) = api
        .post(
            &e.daemon.admin_token,
            "/api/v1/users/carol/password-reset",
            json!({"mode": "manual", "password": STRONG_1, "requireChangeAtNextSignIn": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.get("password").is_none(),
        "password shown without showPassword"
    );
    let bind = e.slapd.bind_as(&e.dn("carol"), STRONG_1);
    assert!(bind.success, "{}", bind.output);
    assert!(
        !bind.must_change,
        "must-change set although not asked: {}",
        bind.output
    );
    assert!(!e.slapd.must_change(&e.dn("carol")));
    let (_, user) = api.get(&e.daemon.admin_token, "/api/v1/users/carol").await;
    assert_eq!(user["mustChangePassword"], false);

    // And with require-change on, the directory keeps "must change" (ppolicy's pwdReset,
    // 389-ds's expiry of 1970, Active Directory's pwdLastSet of 0), and the bind says so.
    let (status, body, _) = api
        .post(
            &e.daemon.admin_token,
            "/api/v1/users/carol/password-reset",
            json!({"mode": "manual", "password": STRONG_2, "requireChangeAtNextSignIn": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(e.slapd.must_change(&e.dn("carol")));
    let bind = e.slapd.bind_as(&e.dn("carol"), STRONG_2);
    assert!(bind.success && bind.must_change, "{}", bind.output);
    assert!(e.mail.messages().is_empty(), "no sendTo, no mail");
    e.daemon.assert_no_secrets(&[STRONG_1, STRONG_2]).await;
}

#[rstest]
#[tokio::test]
async fn too_short_password_is_refused_naming_the_rule(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    let e = env(kind);
    let (status, body, _) = e
        .daemon
        .client()
        .post(
            &e.daemon.admin_token,
            "/api/v1/users/dave/password-reset",
            json!({"mode": "manual", "password": "Ab1!x"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "password_policy");
    let codes: Vec<&str> = body["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .filter_map(|v| v["code"].as_str())
        .collect();
    assert!(codes.contains(&"too_short"), "{body}");
    let message = body["violations"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("12"),
        "the rule's figure is named: {message}"
    );
    assert!(
        !body.to_string().contains("Ab1!x"),
        "the password is echoed"
    );
    assert!(
        e.slapd
            .bind_as(&e.dn("dave"), &e.slapd.sample_password)
            .success,
        "old password broken"
    );
    let (_, audit) = e
        .daemon
        .client()
        .get(&e.daemon.admin_token, "/api/v1/audit?target=dave")
        .await;
    assert_eq!(audit["records"][0]["outcome"], "refused");
    assert_eq!(audit["records"][0]["detail"]["code"], "password_policy");
    e.daemon.assert_no_secrets(&["Ab1!x"]).await;
}

#[rstest]
#[tokio::test]
async fn password_from_history_is_refused_by_the_directory(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    let e = env(kind);
    let api = e.daemon.client();
    for pw in [STRONG_1, STRONG_2] {
        let (status, body, _) = api
            .post(
                &e.daemon.admin_token,
                "/api/v1/users/erin/password-reset",
                json!({"mode": "manual", "password": pw, "requireChangeAtNextSignIn": false}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body, _) = api
        .post(
            &e.daemon.admin_token,
            "/api/v1/users/erin/password-reset",
            json!({"mode": "manual", "password": STRONG_1, "requireChangeAtNextSignIn": false}),
        )
        .await;
    if kind == Kind::ActiveDirectory {
        // Active Directory checks the history on a user's own change only, never on an
        // administrator's reset (docs/directories/active-directory.md): the reset takes.
        assert_eq!(status, 200, "{body}");
        assert!(e.slapd.bind_as(&e.dn("erin"), STRONG_1).success);
        assert!(!e.slapd.bind_as(&e.dn("erin"), STRONG_2).success);
        return;
    }
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "password_in_history");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("used recently")
    );
    assert!(
        e.slapd.bind_as(&e.dn("erin"), STRONG_2).success,
        "the current password must still work"
    );
    e.daemon.assert_no_secrets(&[STRONG_1, STRONG_2]).await;
}

#[rstest]
#[tokio::test]
async fn unknown_user_is_404_and_injection_finds_nobody(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    let e = env(kind);
    let api = e.daemon.client();
    for name in ["nobody", "*", "*)(uid=*", "bob)(|(uid=*"] {
        let path = format!("/api/v1/users/{}", urlencode(name));
        let (status, body) = api.get(&e.daemon.admin_token, &path).await;
        assert_eq!(status, 404, "{name}: {body}");
        assert_eq!(body["code"], "user_not_found");
        let (status, _, _) = api
            .post(
                &e.daemon.admin_token,
                &format!("{path}/password-reset"),
                json!({"mode": "auto", "showPassword": true}),
            )
            .await;
        assert_eq!(status, 404, "{name}");
    }
}

#[rstest]
#[tokio::test]
async fn tokens_and_roles_are_enforced(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    let e = env(kind);
    let api = e.daemon.client();
    let (status, body, headers) = api.get_full("", "/api/v1/users/bob").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "unauthenticated");
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (status, body) = api.get("lbt_not-a-real-token", "/api/v1/users/bob").await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "invalid_token");
    let (status, _) = api.get("garbage", "/api/v1/users/bob").await;
    assert_eq!(status, 401);

    // A password admin may look users up and reset ordinary users...
    let pa = &e.daemon.password_admin_token;
    let (status, _) = api.get(pa, "/api/v1/users/bob").await;
    assert_eq!(status, 200);
    let (status, body, _) = api
        .post(
            pa,
            "/api/v1/users/bob/password-reset",
            json!({"mode": "auto", "showPassword": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // ...but not read the audit log, nor reset an administrator (alice is in cn=admins).
    let (status, body) = api.get(pa, "/api/v1/audit").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "forbidden");
    let (status, body, _) = api
        .post(
            pa,
            "/api/v1/users/alice/password-reset",
            json!({"mode": "auto", "showPassword": true}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "forbidden_target");
    assert!(
        e.slapd
            .bind_as(&e.dn("alice"), &e.slapd.sample_password)
            .success
    );
    // A global admin may.
    let (status, body, _) = api
        .post(
            &e.daemon.admin_token,
            "/api/v1/users/alice/password-reset",
            json!({"mode": "auto", "showPassword": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[rstest]
#[tokio::test]
async fn bad_requests_are_explained_and_change_nothing(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    let e = env(kind);
    let api = e.daemon.client();
    let t = &e.daemon.admin_token;
    let cases = [
        (
            r#"{"mode": "auto", "password": "Whatever-Long-Pass-1"}"#,
            "remove `password`",
        ),
        (r#"{"mode": "manual"}"#, "needs the new password"),
        (r#"{"mode": "sideways"}"#, "mode"),
        (
            r#"{"mode": "auto", "showPassword": false}"#,
            "would be lost",
        ),
        (
            r#"{"mode": "auto", "showPassword": true, "sendTo": ["not an address"]}"#,
            "not an email address",
        ),
        (r#"{"mode": "auto", "surprise": 1}"#, "surprise"),
        (r#"{"mode": "#, "not valid JSON"),
        // A password of the wrong type is named, never echoed.
        (
            r#"{"mode": "manual", "password": 73914682}"#,
            "password: invalid type: integer, expected",
        ),
    ];
    for (body, expect) in cases {
        let (status, reply, _) = api
            .post_raw(t, "/api/v1/users/bob/password-reset", body)
            .await;
        assert_eq!(status, 400, "{body}: {reply}");
        assert_eq!(reply["code"], "invalid_request", "{body}");
        let detail = reply["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(expect),
            "{body}: detail `{detail}` lacks `{expect}`"
        );
        assert!(
            !detail.contains("73914682") && !detail.contains("Failed to"),
            "{body}: detail `{detail}` echoes the value or the framework's wording"
        );
        assert!(!reply["hint"].as_str().unwrap_or_default().is_empty());
    }
    // A method the endpoint does not take is explained too, not an empty 405.
    let (status, reply, headers) = api.delete(t, "/api/v1/users/bob/password-reset").await;
    assert_eq!(status, 405, "{reply}");
    assert_eq!(reply["code"], "method_not_allowed", "{reply}");
    assert!(headers.contains_key("allow"), "{headers:?}");
    for (method, path) in [("PUT", "/reset"), ("DELETE", "/healthz")] {
        let reply = reqwest::Client::new()
            .request(
                method.parse().expect("method"),
                format!("{}{path}", e.daemon.url),
            )
            .send()
            .await
            .expect("request");
        assert_eq!(reply.status(), 405, "{method} {path}");
        let body: Value = reply.json().await.unwrap_or_default();
        assert_eq!(
            body["code"], "method_not_allowed",
            "{method} {path}: {body}"
        );
    }
    assert!(
        e.slapd
            .bind_as(&e.dn("bob"), &e.slapd.sample_password)
            .success
    );
    assert!(!e.slapd.must_change(&e.dn("bob")));
}

/// On OpenLDAP only: what is tested is the outbox against a relay that is down for a
/// while (two fixed waits of 3 s); the directory's part, a reset, is the same as in
/// `auto_reset_requires_change_and_emails_the_password`, which runs on every kind.
#[tokio::test]
async fn mail_is_delivered_once_after_an_smtp_outage() {
    let mut e = env(Kind::OpenLdap);
    e.mail.stop();
    let (status, body, _) = e
        .daemon
        .client()
        .post(
            &e.daemon.admin_token,
            "/api/v1/users/bob/password-reset",
            json!({"mode": "auto", "sendTo": ["bob.manager@example.org"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("password").is_none());
    // Let the worker fail a few times against the dead relay.
    tokio::time::sleep(Duration::from_secs(3)).await;
    e.mail.start_again();
    let messages = e.mail.wait_for_count(1, Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(e.mail.messages().len(), 1, "delivered more than once");
    assert_eq!(
        messages[0].envelope_to,
        vec!["bob.manager@example.org".to_string()]
    );
    // The password in the mail is the one in force.
    let password = extract_password(&messages[0].text);
    assert!(e.slapd.bind_as(&e.dn("bob"), &password).success);
    e.daemon.assert_no_secrets(&[&password]).await;
}

#[rstest]
#[tokio::test]
async fn directory_outage_gives_503_and_recovers_without_restart(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    let mut e = env(kind);
    let api = e.daemon.client();
    let (status, _) = api.get(&e.daemon.admin_token, "/api/v1/users/bob").await;
    assert_eq!(status, 200);
    e.slapd.stop();
    let (status, body, headers) = api
        .get_full(&e.daemon.admin_token, "/api/v1/users/bob")
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "directory_unavailable");
    assert_eq!(headers["retry-after"], "7");
    let (status, body, _) = api
        .post(
            &e.daemon.admin_token,
            "/api/v1/users/bob/password-reset",
            json!({"mode": "auto", "showPassword": true}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    let (status, _, _) = api.get_full("", "/readyz").await;
    assert_eq!(status, 503);

    e.slapd.start_again();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = api.get(&e.daemon.admin_token, "/api/v1/users/bob").await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery after the directory restarted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body, _) = api
        .post(
            &e.daemon.admin_token,
            "/api/v1/users/bob/password-reset",
            json!({"mode": "auto", "showPassword": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let password = body["password"].as_str().unwrap_or_default().to_string();
    assert!(e.slapd.bind_as(&e.dn("bob"), &password).success);
    let (status, _, _) = api.get_full("", "/readyz").await;
    assert_eq!(status, 200);
}

#[rstest]
#[tokio::test]
async fn search_pages_and_operations_endpoints(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    let e = env(kind);
    let api = e.daemon.client();
    let t = &e.daemon.admin_token;
    let (status, page) = api.get(t, "/api/v1/users?search=&limit=2").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 5);
    let names: Vec<&str> = page["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["userName"].as_str())
        .collect();
    assert_eq!(names, vec!["alice", "bob"]);
    let (_, page) = api.get(t, "/api/v1/users?limit=2&offset=4").await;
    assert_eq!(page["users"][0]["userName"], "erin");
    let (_, page) = api.get(t, "/api/v1/users?search=carol%40example").await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["users"][0]["mail"], "carol@example.org");
    let (status, body) = api.get(t, "/api/v1/users?limit=1000").await;
    assert_eq!(status, 400, "{body}");

    let (status, _, _) = api.get_full("", "/healthz").await;
    assert_eq!(status, 200);
    let (status, ready, _) = api.get_full("", "/readyz").await;
    assert_eq!(status, 200, "{ready}");
    let (status, doc, _) = api.get_full("", "/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        doc["paths"]["/api/v1/users/{userName}/password-reset"]["post"].is_object(),
        "{doc}"
    );
    let (status, metrics, _) = api.get_full("", "/metrics").await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap_or_default();
    assert!(text.contains("lockbridge_http_requests_total"), "{text}");
    // Latencies are histograms with fixed buckets (constant memory; several instances'
    // can be summed), not summaries.
    for wanted in [
        "lockbridge_http_request_seconds_bucket{",
        "le=\"0.005\"",
        "lockbridge_ldap_operation_seconds_bucket{",
        "lockbridge_http_request_seconds_count{",
    ] {
        assert!(text.contains(wanted), "{wanted} missing:\n{text}");
    }
    assert!(!text.contains("quantile="), "{text}");
}

#[rstest]
#[tokio::test]
async fn sigterm_shuts_down_cleanly(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    let mut e = env(kind);
    let (status, _) = e
        .daemon
        .client()
        .get(&e.daemon.admin_token, "/api/v1/users/bob")
        .await;
    assert_eq!(status, 200);
    assert_eq!(e.daemon.terminate(), Some(0), "log:\n{}", e.daemon.log());
    assert!(e.daemon.log().contains("shutting down"));
}

#[rstest]
#[tokio::test]
async fn api_requests_are_rate_limited_per_client(
    #[values(Kind::OpenLdap, Kind::Ds389, Kind::ActiveDirectory)] kind: Kind,
) {
    let slapd = Slapd::start_kind(kind, 0, &[]);
    let mail = MailSink::start();
    let daemon = Daemon::start_with_env(
        &slapd,
        mail.port,
        &slapd.demo_settings(),
        &[
            ("LOCKBRIDGE__SERVER__RATE_LIMIT_PER_SECOND", "1"),
            ("LOCKBRIDGE__SERVER__RATE_LIMIT_BURST", "3"),
        ],
    );
    let api = daemon.client();
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..8 {
        let (status, body, headers) = api.get_full(&daemon.admin_token, "/api/v1/users/bob").await;
        statuses.push(status);
        if status == 429 {
            limited = Some((body, headers));
        }
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    let (body, headers) = limited.expect("some requests are limited");
    assert_eq!(body["code"], "rate_limited");
    assert!(headers.contains_key("retry-after"));
    // Health checks are not limited.
    let (status, _, _) = api.get_full("", "/healthz").await;
    assert_eq!(status, 200);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The temporary password from the plain-text mail: the line after "password:".
fn extract_password(text: &str) -> String {
    text.lines()
        .find_map(|l| {
            let l = l.trim();
            l.to_ascii_lowercase()
                .find("password:")
                .map(|i| l[i + "password:".len()..].trim().to_string())
                .filter(|p| !p.is_empty())
        })
        .expect("a `password: ...` line in the mail")
}

/// A strong-looking password that the breached list names: the rules alone let it through.
const BREACHED_STRONG: &str = "Marmalade-Tractor-Sunset-41";

/// A small list in Have I Been Pwned's format (sorted `HASH:COUNT`, CRLF): a few
/// thousand filler hashes and some passwords known to be breached.
fn write_breached_list(path: &std::path::Path) {
    use sha1::{Digest, Sha1};
    let mut hashes: Vec<String> = (0..3000)
        .map(|i| format!("filler password {i}"))
        .chain(["Password1!", "Summer2024!", BREACHED_STRONG].map(String::from))
        .map(|p| hex::encode_upper(Sha1::digest(p.as_bytes())))
        .collect();
    hashes.sort();
    let text: String = hashes
        .iter()
        .enumerate()
        .map(|(i, h)| format!("{h}:{}\r\n", i + 1))
        .collect();
    std::fs::write(path, text).expect("write list");
}

#[tokio::test]
async fn manual_reset_to_a_breached_password_is_refused_saying_why() {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let lists = tempfile::tempdir().expect("tempdir");
    let list = lists.path().join("pwned-passwords.txt");
    write_breached_list(&list);
    // No index yet: a list this small is indexed when the daemon starts.
    let daemon = Daemon::start_with(
        &slapd,
        mail.port,
        &format!(
            "[password_policy]\nbreached_passwords_file = \"{}\"\n",
            list.display()
        ),
    );
    let e = Env {
        slapd,
        mail,
        daemon,
    };
    let api = e.daemon.client();

    for (password, also_weak) in [(BREACHED_STRONG, false), ("Summer2024!", true)] {
        let (status, body, _) = api
            .post(
                &e.daemon.admin_token,
                "/api/v1/users/carol/password-reset",
                json!({"mode": "manual", "password": password, "requireChangeAtNextSignIn": false}),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["code"], "password_policy", "{body}");
        let codes: Vec<&str> = body["violations"]
            .as_array()
            .expect("violations")
            .iter()
            .filter_map(|v| v["code"].as_str())
            .collect();
        assert!(codes.contains(&"password_breached"), "{body}");
        assert_eq!(codes.len() > 1, also_weak, "{body}");
        let text = body.to_string();
        assert!(
            text.contains("appears in a list of passwords exposed in data breaches"),
            "{text}"
        );
        assert!(
            !text.contains(password),
            "the refusal repeats the password: {text}"
        );
        let old = e.slapd.bind_as(&e.dn("carol"), &e.slapd.sample_password);
        assert!(
            old.success,
            "the old password no longer binds: {}",
            old.output
        );
    }
    let (status, body, _) = api
        .post(
            &e.daemon.admin_token,
            "/api/v1/users/carol/password-reset",
            json!({"mode": "manual", "password": BREACHED_STRONG}),
        )
        .await;
    assert_eq!(
        body["detail"],
        "the password appears in a list of passwords exposed in data breaches; choose another (attackers try these first, however strong they look)",
        "{status} {body}"
    );

    // A password the list does not name is set.
    let (status, body, _) = api
        .post(
            &e.daemon.admin_token,
            "/api/v1/users/carol/password-reset",
            json!({"mode": "manual", "password": STRONG_1, "requireChangeAtNextSignIn": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(e.slapd.bind_as(&e.dn("carol"), STRONG_1).success);
    e.daemon
        .assert_no_secrets(&[BREACHED_STRONG, "Summer2024!", STRONG_1])
        .await;
}

//! The security review's findings, each proven against the real daemon binary, a real
//! slapd with ppolicy and a real SMTP server: what an attacker holding each kind of
//! token (or none) could do, and what lockbridge now refuses.

mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use harness::daemon::{Daemon, create_token};
use harness::slapd::Slapd;
use harness::smtp::MailSink;
use serde_json::{Value, json};

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const STRONG: &str = "Quiet-Harbor-Lantern-72";

fn patch(ops: Value) -> Value {
    json!({ "schemas": [PATCH_OP], "Operations": ops })
}

/// The SCIM id of `uid`, found by a filter.
async fn scim_id(scim: &harness::daemon::Scim, uid: &str) -> String {
    let (status, body, _) = scim
        .get(&format!("/Users?filter=userName%20eq%20%22{uid}%22"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["Resources"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no user {uid}: {body}"))
        .to_owned()
}

async fn audit(daemon: &Daemon, query: &str) -> Vec<Value> {
    let (status, body) = daemon
        .client()
        .get(&daemon.admin_token, &format!("/api/v1/audit?{query}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["records"].as_array().cloned().unwrap_or_default()
}

fn assert_protected(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 403, "{what}: {body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("administrator") || detail.contains("protected_dns"),
        "{what}: the refusal says why: {body}"
    );
    assert!(detail.contains("nothing was changed"), "{what}: {body}");
}

// ----- 1. a SCIM token cannot take over the accounts that run lockbridge --------------------

#[tokio::test]
async fn a_scim_token_cannot_write_administrators_or_protected_entries() {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let bob_dn = slapd.user_dn("bob");
    let daemon = Daemon::start_with(
        &slapd,
        mail.port,
        &format!("[scim]\nprotected_dns = [\"{bob_dn}\"]\n"),
    );
    let token = create_token(&daemon.config_path, "entra", "scim");
    let scim = daemon.scim(&token);
    let alice = scim_id(&scim, "alice").await;
    let bob = scim_id(&scim, "bob").await;
    let alice_dn = slapd.user_dn("alice");
    let before = slapd.ldapsearch_attr(&alice_dn, "userPassword");

    // The password push that used to answer 200 and then bind.
    for (who, id) in [("alice", &alice), ("bob", &bob)] {
        let (status, body, _) = scim
            .patch(
                &format!("/Users/{id}"),
                patch(json!([{"op": "replace", "value": {"password": STRONG}}])),
            )
            .await;
        assert_protected(status, &body, &format!("password push to {who}"));
    }
    assert!(
        !slapd.bind_as(&alice_dn, STRONG).success,
        "the push did not land"
    );
    assert!(slapd.bind_as(&alice_dn, &slapd.sample_password).success);
    assert_eq!(slapd.ldapsearch_attr(&alice_dn, "userPassword"), before);

    // Lock, rename, replace and delete are refused the same way.
    let (status, body, _) = scim
        .patch(
            &format!("/Users/{alice}"),
            patch(json!([{"op": "replace", "path": "active", "value": false}])),
        )
        .await;
    assert_protected(status, &body, "deactivate");
    let (status, body, _) = scim
        .patch(
            &format!("/Users/{alice}"),
            patch(json!([{"op": "replace", "path": "userName", "value": "mallory"}])),
        )
        .await;
    assert_protected(status, &body, "rename");
    let (status, body, _) = scim
        .put(
            &format!("/Users/{alice}"),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "alice",
                "name": {"familyName": "A"},
                "displayName": "Alice",
                "password": STRONG,
            }),
        )
        .await;
    assert_protected(status, &body, "replace");
    let (status, body, _) = scim.delete(&format!("/Users/{alice}")).await;
    assert_protected(status, &body, "delete");
    assert!(
        slapd
            .ldapsearch_attr(&alice_dn, "pwdAccountLockedTime")
            .is_empty()
    );
    assert_eq!(slapd.ldapsearch_attr(&alice_dn, "uid"), vec!["alice"]);
    assert!(
        slapd
            .ldapsearch_attr(&slapd.admin_group_dn, "member")
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&alice_dn)),
        "the admin group is untouched"
    );

    // Every refusal is audited with its reason, and carries no password.
    let records = audit(&daemon, "actor=entra&limit=50").await;
    let refused: Vec<&Value> = records
        .iter()
        .filter(|r| r["outcome"] == "refused" && r["detail"]["code"] == "protectedTarget")
        .collect();
    assert_eq!(refused.len(), 6, "{records:#?}");
    daemon.assert_no_secrets(&[STRONG]).await;

    // An ordinary user is still provisioned normally.
    let carol = scim_id(&scim, "carol").await;
    let (status, body, _) = scim
        .patch(
            &format!("/Users/{carol}"),
            patch(json!([{"op": "replace", "value": {"password": STRONG}}])),
        )
        .await;
    assert_eq!(status, 204, "a password-only push answers 204: {body}");
    assert!(slapd.bind_as(&slapd.user_dn("carol"), STRONG).success);
}

#[tokio::test]
async fn even_with_the_opt_in_scim_never_edits_an_admin_group_or_revives_an_admin_dn() {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let daemon = Daemon::start_with(
        &slapd,
        mail.port,
        "[scim]\nallow_writes_to_administrators = true\n",
    );
    let token = create_token(&daemon.config_path, "okta", "scim");
    let scim = daemon.scim(&token);
    let alice = scim_id(&scim, "alice").await;
    let alice_dn = slapd.user_dn("alice");

    // Opted in: an administrator's password can be pushed.
    let (status, body, _) = scim
        .patch(
            &format!("/Users/{alice}"),
            patch(json!([{"op": "replace", "value": {"password": STRONG}}])),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    assert!(slapd.bind_as(&alice_dn, STRONG).success);

    // Deleting her leaves the administrator group alone (no SCIM write to it)...
    let (status, body, _) = scim.delete(&format!("/Users/{alice}")).await;
    assert_eq!(status, 204, "{body}");
    let members = slapd.ldapsearch_attr(&slapd.admin_group_dn, "member");
    assert!(
        members.iter().any(|m| m.eq_ignore_ascii_case(&alice_dn)),
        "{members:?}"
    );
    // ...and the DN the group still lists cannot be taken by a new account.
    let (status, body, _) = scim
        .post(
            "/Users",
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "alice",
                "name": {"familyName": "Imposter"},
                "displayName": "Not Alice",
            }),
        )
        .await;
    assert_protected(status, &body, "re-create an administrator's DN");

    // The group itself is out of reach.
    let (status, body, _) = scim
        .get("/Groups?filter=displayName%20eq%20%22admins%22")
        .await;
    assert_eq!(status, 200, "{body}");
    let admins = body["Resources"][0]["id"]
        .as_str()
        .expect("admins")
        .to_owned();
    let carol = scim_id(&scim, "carol").await;
    let (status, body, _) = scim
        .patch(
            &format!("/Groups/{admins}"),
            patch(json!([{"op": "add", "path": "members", "value": [{"value": carol}]}])),
        )
        .await;
    assert_protected(status, &body, "add a member to the admin group");
}

// ----- 2. metrics labels come from a closed set -------------------------------------------

#[tokio::test]
async fn made_up_methods_and_paths_add_no_metric_series() {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let daemon = Daemon::start(&slapd, &mail);
    let http = reqwest::Client::new();
    let series = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("lockbridge_http_requests_total{"))
            .count()
    };
    let metrics = |http: reqwest::Client, url: String| async move {
        http.get(format!("{url}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };
    // Warm up the series a normal client creates.
    for _ in 0..2 {
        let _ = http.get(format!("{}/nowhere", daemon.url)).send().await;
        let _ = metrics(http.clone(), daemon.url.clone()).await;
    }
    let before = series(&metrics(http.clone(), daemon.url.clone()).await);
    for i in 0..150 {
        let method = reqwest::Method::from_bytes(format!("M{i}").as_bytes()).expect("method");
        let _ = http
            .request(method, format!("{}/x/{i}/user-{i}", daemon.url))
            .send()
            .await;
    }
    let text = metrics(http.clone(), daemon.url.clone()).await;
    assert!(
        !text.contains("method=\"M1\""),
        "raw methods are not labels"
    );
    assert!(!text.contains("user-1"), "raw paths are not labels");
    assert!(text.contains("method=\"other\""));
    assert!(
        series(&text) <= before + 1,
        "150 made-up requests added {} series",
        series(&text) - before
    );
}

// ----- 3. slow clients do not hold connections ----------------------------------------------

fn connect(daemon: &Daemon) -> TcpStream {
    let addr = daemon.url.trim_start_matches("http://");
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s
}

/// Waits until the server closes `s`; returns how long that took.
fn time_until_closed(s: &mut TcpStream) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return start.elapsed(),
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_disconnected_and_connections_are_capped() {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    // The limits are set through the environment so [server] stays the harness's.
    let daemon = Daemon::start_with_env(
        &slapd,
        mail.port,
        "",
        &[
            ("LOCKBRIDGE__SERVER__HEADER_READ_TIMEOUT_SECS", "2"),
            ("LOCKBRIDGE__SERVER__IDLE_TIMEOUT_SECS", "3"),
            ("LOCKBRIDGE__SERVER__MAX_CONNECTIONS", "4"),
        ],
    );

    // A client that trickles one header line per 500 ms is cut off at the header limit.
    let mut slow = connect(&daemon);
    let writer = slow.try_clone().expect("clone");
    let trickle = std::thread::spawn(move || {
        let mut w = writer;
        let _ = w.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
        for i in 0..60 {
            std::thread::sleep(Duration::from_millis(500));
            if w.write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
                .is_err()
            {
                return;
            }
        }
    });
    let took = time_until_closed(&mut slow);
    assert!(
        took < Duration::from_secs(6),
        "a trickling client stayed {took:?}"
    );
    let _ = trickle.join();

    // A keep-alive connection that goes quiet after a request is closed at the idle limit.
    let mut idle = connect(&daemon);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).expect("response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let took = time_until_closed(&mut idle);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "idle connection closed after {took:?} (idle limit 3 s)"
    );

    // Four connections are allowed; the fifth is told why it is refused.
    let mut open: Vec<TcpStream> = (0..4).map(|_| connect(&daemon)).collect();
    for s in &mut open {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("request");
        let n = s.read(&mut buf).expect("response");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    let mut fifth = connect(&daemon);
    let mut answer = String::new();
    let _ = fifth.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too_many_connections"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after"),
        "{answer}"
    );
    drop(open);
    // Once they are gone, new clients are served again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = daemon.client().get("", "/healthz").await;
    assert_eq!(status, 200);
}

// ----- 4. /readyz tells the public nothing but ready or not ----------------------------------

#[tokio::test]
async fn readyz_is_status_only_and_details_need_an_admin() {
    let mut slapd = Slapd::start();
    let mail = MailSink::start();
    let daemon = Daemon::start(&slapd, &mail);
    let api = daemon.client();
    let (status, body) = api.get("", "/readyz").await;
    assert_eq!((status, body.clone()), (200, json!({"status": "ready"})));

    slapd.stop();
    // Wait out the cached answer.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body) = api.get("", "/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(body, json!({"status": "not ready"}), "no DN, host or path");
    let text = body.to_string();
    assert!(!text.contains("dc=example") && !text.contains("127.0.0.1"));

    // The reasons are for administrators, and in the log.
    let (status, body) = api.get("", "/api/v1/readiness").await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = api
        .get(&daemon.password_admin_token, "/api/v1/readiness")
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = api.get(&daemon.admin_token, "/api/v1/readiness").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["store"], "ok");
    assert_ne!(body["directory"], "ok", "{body}");
    assert!(daemon.log().contains("not ready"), "logged");

    // One check serves every caller for about a second.
    slapd.start_again();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, first) = api.get(&daemon.admin_token, "/api/v1/readiness").await;
    let (_, second) = api.get(&daemon.admin_token, "/api/v1/readiness").await;
    assert_eq!(first["checkedAt"], second["checkedAt"], "cached");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, third) = api.get(&daemon.admin_token, "/api/v1/readiness").await;
    assert_eq!(status, 200, "{third}");
    assert_ne!(first["checkedAt"], third["checkedAt"], "checked again");
}

// ----- 5. rate limits: per token after authentication, failures per address ---------------------

#[tokio::test]
async fn junk_requests_never_lock_out_a_valid_token() {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let daemon = Daemon::start_with_env(
        &slapd,
        mail.port,
        "",
        &[
            ("LOCKBRIDGE__SERVER__AUTH_FAILURES_PER_MINUTE", "6"),
            ("LOCKBRIDGE__SERVER__AUTH_FAILURE_BURST", "5"),
            ("LOCKBRIDGE__SERVER__RATE_LIMIT_PER_SECOND", "1"),
            ("LOCKBRIDGE__SERVER__RATE_LIMIT_BURST", "30"),
        ],
    );
    let api = daemon.client();
    let junk = "lbt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(api.get(junk, "/api/v1/users/bob").await.0);
    }
    assert!(statuses[..5].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    let (status, _, headers) = api.get_full("", "/api/v1/users/bob").await;
    assert_eq!(status, 429, "no token counts as a failure too");
    assert!(headers.contains_key("retry-after"));

    // The administrators, on the same address, are served.
    let (status, body) = api.get(&daemon.admin_token, "/api/v1/users/bob").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api
        .get(&daemon.password_admin_token, "/api/v1/users/bob")
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn each_token_has_its_own_bucket() {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let daemon = Daemon::start_with_env(
        &slapd,
        mail.port,
        "",
        &[
            ("LOCKBRIDGE__SERVER__RATE_LIMIT_PER_SECOND", "1"),
            ("LOCKBRIDGE__SERVER__RATE_LIMIT_BURST", "3"),
        ],
    );
    let api = daemon.client();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(api.get(&daemon.admin_token, "/api/v1/users/bob").await.0);
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    // Another token is not slowed down by the first one's burst.
    let (status, body) = api
        .get(&daemon.password_admin_token, "/api/v1/users/bob")
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let limits = [
        ("LOCKBRIDGE__SERVER__AUTH_FAILURES_PER_MINUTE", "6"),
        ("LOCKBRIDGE__SERVER__AUTH_FAILURE_BURST", "3"),
    ];
    let http = reqwest::Client::new();
    let junk_from = |url: String, client: &'static str| {
        let http = http.clone();
        async move {
            http.get(format!("{url}/api/v1/users/bob"))
                .bearer_auth("lbt_nope")
                .header("x-forwarded-for", client)
                .send()
                .await
                .expect("sent")
                .status()
                .as_u16()
        }
    };

    // Behind a trusted proxy, each forwarded client has its own failure bucket.
    let mut env = limits.to_vec();
    env.push(("LOCKBRIDGE__SERVER__TRUSTED_PROXIES", "127.0.0.1"));
    let daemon = Daemon::start_with_env(&slapd, mail.port, "", &env);
    for _ in 0..6 {
        junk_from(daemon.url.clone(), "203.0.113.1").await;
    }
    assert_eq!(junk_from(daemon.url.clone(), "203.0.113.1").await, 429);
    assert_eq!(junk_from(daemon.url.clone(), "203.0.113.2").await, 401);
    drop(daemon);

    // From an untrusted peer the header is ignored: one bucket for the peer.
    let daemon = Daemon::start_with_env(&slapd, mail.port, "", &limits);
    for _ in 0..6 {
        junk_from(daemon.url.clone(), "203.0.113.1").await;
    }
    assert_eq!(junk_from(daemon.url.clone(), "203.0.113.2").await, 429);
}

// ----- 6. a password that may be in force is never lost -------------------------------------------

/// A user whose must-change flag the service account may not write (the sandbox's ACL
/// for `uid=flagless`), as in a half-configured directory.
const FLAGLESS: &str = "\
dn: uid=flagless,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: flagless
cn: Flag Less
sn: Less
mail: flagless@example.org
userPassword: @SAMPLE_PASSWORD_HASH@
";

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

#[tokio::test]
async fn a_half_applied_reset_still_hands_over_the_password() {
    let slapd = Slapd::start_with(0, &[FLAGLESS]);
    let mail = MailSink::start();
    let daemon = Daemon::start(&slapd, &mail);
    let api = daemon.client();
    let dn = slapd.user_dn("flagless");

    // Mailed: the error says the flag is missing, and where the password went.
    let (status, body, _) = api
        .post(
            &daemon.admin_token,
            "/api/v1/users/flagless/password-reset",
            json!({"mode": "auto", "sendTo": ["helpdesk@example.org"]}),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["code"], "must_change_flag_not_applied");
    assert_eq!(body["sentTo"], json!(["helpdesk@example.org"]));
    assert!(body.get("password").is_none(), "not asked to show it");
    assert!(
        body["hint"].as_str().unwrap_or_default().contains("sentTo"),
        "{body}"
    );
    let messages = mail.wait_for_count(1, Duration::from_secs(20));
    let mailed = extract_password(&messages[0].text);
    assert!(
        slapd.bind_as(&dn, &mailed).success,
        "the mailed password is in force"
    );

    // Shown: asked for, so it is in the error body.
    let (status, body, _) = api
        .post(
            &daemon.admin_token,
            "/api/v1/users/flagless/password-reset",
            json!({"mode": "auto", "showPassword": true}),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    let shown = body["password"]
        .as_str()
        .expect("password shown")
        .to_owned();
    assert!(
        slapd.bind_as(&dn, &shown).success,
        "the shown password is in force"
    );

    // The audit records say the password is in force and where it went.
    let records = audit(&daemon, "target=flagless&limit=10").await;
    assert_eq!(records.len(), 2, "{records:#?}");
    for r in &records {
        assert_eq!(r["outcome"], "failed");
        assert_eq!(r["detail"]["passwordInForce"], "yes", "{r}");
    }
    assert_eq!(records[0]["detail"]["passwordShown"], true);
    assert_eq!(
        records[1]["detail"]["sentTo"],
        json!(["helpdesk@example.org"])
    );
    daemon.assert_no_secrets(&[&mailed, &shown]).await;
}

// ----- 9. request ids are short and plain, or replaced -----------------------------------------------

#[tokio::test]
async fn client_request_ids_are_checked_before_they_reach_the_audit_log() {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let daemon = Daemon::start(&slapd, &mail);
    let http = reqwest::Client::new();
    let reset = |id: String| {
        let http = http.clone();
        let url = format!("{}/api/v1/users/bob/password-reset", daemon.url);
        let token = daemon.admin_token.clone();
        async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .header("x-request-id", id)
                .json(&json!({"mode": "auto", "showPassword": true}))
                .send()
                .await
                .expect("sent");
            assert_eq!(r.status(), 200);
            r.headers()["x-request-id"]
                .to_str()
                .expect("ascii")
                .to_owned()
        }
    };
    let kept = reset("ticket-4711.a_b".into()).await;
    assert_eq!(kept, "ticket-4711.a_b");
    let long = "x".repeat(5000);
    let replaced = reset(long.clone()).await;
    assert_ne!(replaced, long);
    assert!(uuid::Uuid::parse_str(&replaced).is_ok(), "{replaced}");
    let injected = reset("abc\",\"actor\":\"root".into()).await;
    assert!(uuid::Uuid::parse_str(&injected).is_ok(), "{injected}");

    let records = audit(&daemon, "target=bob&limit=10").await;
    let ids: Vec<&str> = records
        .iter()
        .filter_map(|r| r["requestId"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec![injected.as_str(), replaced.as_str(), "ticket-4711.a_b"]
    );
}

// ----- 12. one request's work is bounded -----------------------------------------------------------

/// SRCH operations slapd logged below `base` so far, but the one that follows the groups'
/// changes (started once, with the SCIM service, and never repeated per request).
fn searches_below(slapd: &Slapd, base: &str) -> usize {
    let log = std::fs::read_to_string(slapd.dir.join("slapd.log")).unwrap_or_default();
    let needle = format!("SRCH base=\"{base}\"");
    log.lines()
        .filter(|l| l.contains(&needle) && !l.ends_with("filter=\"(objectClass=groupOfNames)\""))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_pages_look_up_groups_once_and_never_walk_the_whole_directory() {
    let slapd = Slapd::start_with(2500, &[]);
    let mail = MailSink::start();
    let daemon = Daemon::start(&slapd, &mail);
    let token = create_token(&daemon.config_path, "okta", "scim");
    let scim = daemon.scim(&token);

    // A page of 100 users with their groups: the group memberships of the whole page
    // take one search per 50 users, not one per user.
    let before = searches_below(&slapd, &slapd.groups_base);
    let (status, body, _) = scim
        .get("/Users?startIndex=1&count=100&attributes=userName,groups")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Resources"].as_array().map(Vec::len), Some(100));
    let group_searches = searches_below(&slapd, &slapd.groups_base) - before;
    assert!(
        group_searches <= 2,
        "{group_searches} group searches for one page"
    );
    // alice's membership of the admin group is still reported.
    let (_, body, _) = scim
        .get("/Users?filter=userName%20eq%20%22alice%22&attributes=groups")
        .await;
    assert_eq!(
        body["Resources"][0]["groups"][0]["display"], "admins",
        "{body}"
    );

    // Paging without sortBy through more users than one request may walk: every page is
    // served, each user exactly once, in one order.
    let mut seen = std::collections::HashSet::new();
    let mut start = 1;
    let mut total = 0;
    while start <= 2505 {
        let (status, body, _) = scim
            .get(&format!(
                "/Users?startIndex={start}&count=500&attributes=userName"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        total = body["totalResults"].as_u64().expect("total");
        let page = body["Resources"].as_array().cloned().unwrap_or_default();
        assert!(!page.is_empty(), "page at {start}");
        for r in page {
            assert!(seen.insert(r["userName"].as_str().expect("name").to_owned()));
        }
        start += 500;
    }
    assert_eq!(total, 2505);
    assert_eq!(seen.len(), 2505, "every user exactly once");
}

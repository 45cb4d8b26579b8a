//! The SCIM 2.0 API end to end: the real daemon binary over HTTP, a real slapd with
//! ppolicy, and the habits of the two clients that matter (Microsoft Entra ID, Okta).

mod harness;

use harness::daemon::{Daemon, Scim, create_token};
use harness::slapd::Slapd;
use harness::smtp::MailSink;
use serde_json::{Value, json};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PASSWORD_EXT: &str = "urn:lockbridge:params:scim:schemas:extension:password:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

const SCIM_CONFIG: &str = r#"
[scim]
user_object_classes = ["inetOrgPerson", "lockbridgeContact"]
external_id_attribute = "lockbridgeExternalId"
"#;

struct Env {
    slapd: Slapd,
    _mail: MailSink,
    daemon: Daemon,
    scim: Scim,
    token: String,
}

fn start_with(users: usize, extra: &str) -> Env {
    start_with_scim(users, "", extra)
}

/// `scim_lines` are added to the `[scim]` section.
fn start_with_scim(users: usize, scim_lines: &str, extra: &str) -> Env {
    let slapd = Slapd::start_with(users, &[]);
    let mail = MailSink::start();
    let expiry = format!(
        "\n[expiry]\nsource = \"directory\"\ndefault_policy_dn = \"cn=default,ou=policies,{base}\"\nnever_expires_policy_dn = \"cn=never-expires,ou=policies,{base}\"\n",
        base = slapd.base_dn
    );
    let daemon = Daemon::start_with(
        &slapd,
        mail.port,
        &format!("{SCIM_CONFIG}{scim_lines}\n{expiry}{extra}"),
    );
    let token = create_token(&daemon.config_path, "entra-provisioning", "scim");
    let scim = daemon.scim(&token);
    Env {
        slapd,
        _mail: mail,
        daemon,
        scim,
        token,
    }
}

fn start() -> Env {
    start_with(0, "")
}

fn patch(ops: Value) -> Value {
    json!({ "schemas": [PATCH_OP], "Operations": ops })
}

fn new_user(name: &str, password: Option<&str>) -> Value {
    let mut u = json!({
        "schemas": [USER],
        "userName": name,
        "name": { "givenName": "Test", "familyName": name },
        "displayName": format!("Test {name}"),
        "emails": [{ "value": format!("{name}@example.org"), "type": "work", "primary": true }],
        "active": true,
    });
    if let Some(p) = password {
        u["password"] = json!(p);
    }
    u
}

impl Env {
    fn dn(&self, uid: &str) -> String {
        self.slapd.user_dn(uid)
    }

    async fn create(&self, name: &str, password: Option<&str>) -> Value {
        let (status, body, _) = self.scim.post("/Users", new_user(name, password)).await;
        assert_eq!(status, 201, "create {name}: {body}");
        body
    }

    fn binds(&self, uid: &str, password: &str) -> bool {
        self.slapd.bind_as(&self.dn(uid), password).success
    }

    fn attr(&self, uid: &str, attr: &str) -> Vec<String> {
        self.slapd.ldapsearch_attr(&self.dn(uid), attr)
    }

    async fn find(&self, filter: &str) -> Value {
        let q = urlencode(filter);
        let (status, body, _) = self.scim.get(&format!("/Users?filter={q}")).await;
        assert_eq!(status, 200, "filter {filter}: {body}");
        body
    }

    async fn user_names(&self, filter: &str) -> Vec<String> {
        let body = self.find(filter).await;
        let mut names: Vec<String> = body["Resources"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["userName"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn assert_scim_error(body: &Value, status: u16, scim_type: Option<&str>) {
    assert_eq!(body["schemas"], json!([ERROR]), "{body}");
    assert_eq!(
        body["status"],
        json!(status.to_string()),
        "status is a string: {body}"
    );
    if let Some(t) = scim_type {
        assert_eq!(body["scimType"], json!(t), "{body}");
    }
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(!detail.is_empty(), "{body}");
    // A detail says each thing once: a site's own hint and the error kind's hint must
    // not both be appended (three words in a row, said twice, give that away).
    let words: Vec<String> = detail
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect();
    let mut seen = std::collections::HashSet::new();
    for run in words.windows(3) {
        assert!(
            seen.insert(run.join(" ")),
            "\"{}\" twice in: {detail}",
            run.join(" ")
        );
    }
}

// ----- protocol --------------------------------------------------------------------------

#[tokio::test]
async fn discovery_documents_media_type_and_unsupported_endpoints() {
    let env = start();
    let (status, body, headers) = env.scim.get("/ServiceProviderConfig").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("application/scim+json")
    );
    assert_eq!(body["patch"]["supported"], json!(true));
    assert_eq!(body["bulk"]["supported"], json!(true));
    assert_eq!(body["filter"]["maxResults"], json!(1000));

    let (status, body, _) = env.scim.get("/ResourceTypes").await;
    assert_eq!(status, 200, "{body}");
    let text = body.to_string();
    assert!(
        text.contains("\"User\"") && text.contains("\"Group\""),
        "{text}"
    );
    let (status, body, _) = env.scim.get("/Schemas").await;
    assert_eq!(status, 200);
    let text = body.to_string();
    for urn in [USER, GROUP, ENTERPRISE, PASSWORD_EXT] {
        assert!(text.contains(urn), "Schemas lists {urn}");
    }
    let (status, body, _) = env.scim.get(&format!("/Schemas/{USER}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], json!(USER));

    let (status, body, _) = env.scim.post("/Me", json!({})).await;
    assert_eq!(status, 501, "{body}");
    assert_scim_error(&body, 501, None);
    // Bulk is served: a body that is not a BulkRequest is invalidSyntax.
    let (status, body, _) = env.scim.post("/Bulk", json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert_scim_error(&body, 400, Some("invalidSyntax"));
    let (status, body, _) = env.scim.get("/Nope").await;
    assert_eq!(status, 404);
    assert_scim_error(&body, 404, None);
    assert!(
        !body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("was not found"),
        "{body}"
    );

    // Malformed JSON is a SCIM invalidSyntax, not a framework message.
    let (status, body, _) = env
        .scim
        .call(
            "POST",
            "/Users",
            None,
            &[("content-type", "application/scim+json")],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_scim_error(&body, 400, Some("invalidSyntax"));
}

#[tokio::test]
async fn scim_needs_a_scim_token_and_admin_tokens_are_refused() {
    let env = start();
    let anonymous = env.daemon.scim("");
    let (status, body, _) = anonymous.get("/Users").await;
    assert_eq!(status, 401, "{body}");
    assert_scim_error(&body, 401, None);
    let admin = env.daemon.scim(&env.daemon.admin_token);
    let (status, body, _) = admin.get("/Users").await;
    assert_eq!(status, 403, "{body}");
    assert_scim_error(&body, 403, None);
    // And the SCIM token cannot use the admin API.
    let (status, _) = env
        .daemon
        .client()
        .get(&env.token, "/api/v1/users?search=a")
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn create_read_etag_and_uniqueness() {
    let env = start();
    let created = env.create("maria", Some("Initial-Passw0rd-1")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(uuid_like(&id), "id is the entryUUID: {id}");
    assert_eq!(created["userName"], json!("maria"));
    assert_eq!(created["active"], json!(true));
    assert!(
        created.get("password").is_none(),
        "password is never returned"
    );
    assert_eq!(created["meta"]["resourceType"], json!("User"));
    assert!(
        created["meta"]["location"]
            .as_str()
            .is_some_and(|l| l.ends_with(&format!("/scim/v2/Users/{id}")))
    );
    // the entry is really in the directory, with the mapped attributes
    assert_eq!(env.attr("maria", "mail"), vec!["maria@example.org"]);
    assert_eq!(env.attr("maria", "entryUUID"), vec![id.clone()]);

    let (status, body, headers) = env.scim.get(&format!("/Users/{id}")).await;
    assert_eq!(status, 200, "{body}");
    let etag = headers["etag"].to_str().expect("etag").to_owned();
    assert_eq!(body["meta"]["version"], json!(etag));
    // asked for, the password is still not returned
    let (_, body, _) = env
        .scim
        .get(&format!("/Users/{id}?attributes=password,userName"))
        .await;
    assert!(body.get("password").is_none(), "{body}");

    let (status, _, _) = env
        .scim
        .call(
            "GET",
            &format!("/Users/{id}"),
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(status, 304);

    let mut replacement = new_user("maria", None);
    replacement["displayName"] = json!("Maria Changed");
    let (status, body, _) = env
        .scim
        .call(
            "PUT",
            &format!("/Users/{id}"),
            Some(replacement.clone()),
            &[("if-match", "W/\"stale\"")],
        )
        .await;
    assert_eq!(status, 412, "{body}");
    assert_scim_error(&body, 412, None);
    let (status, body, headers) = env
        .scim
        .call(
            "PUT",
            &format!("/Users/{id}"),
            Some(replacement),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(
        headers["etag"].to_str().unwrap_or(""),
        etag,
        "the version changed"
    );
    assert_eq!(env.attr("maria", "displayName"), vec!["Maria Changed"]);

    let (status, body, _) = env.scim.post("/Users", new_user("MARIA", None)).await;
    assert_eq!(status, 409, "{body}");
    assert_scim_error(&body, 409, Some("uniqueness"));
    assert_eq!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .matches("choose another")
            .count(),
        1,
        "{body}"
    );
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

// ----- passwords -------------------------------------------------------------------------

#[tokio::test]
async fn passwords_pushed_by_post_put_and_patch_work_in_a_bind() {
    let env = start();
    let created = env.create("pat", Some("Created-Passw0rd-1")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(env.binds("pat", "Created-Passw0rd-1"));

    let mut body = new_user("pat", Some("Put-Passw0rd-2"));
    body["id"] = json!(id);
    let (status, reply, _) = env.scim.put(&format!("/Users/{id}"), body).await;
    assert_eq!(status, 200, "{reply}");
    assert!(env.binds("pat", "Put-Passw0rd-2"));
    assert!(!env.binds("pat", "Created-Passw0rd-1"));

    // A PATCH that only sets the password and asks for nothing back: 204, no read-back.
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Users/{id}"),
            patch(json!([{ "op": "replace", "path": "password", "value": "Patch-Passw0rd-3" }])),
        )
        .await;
    assert_eq!(status, 204, "{reply}");
    assert_eq!(reply, json!(""), "no body");
    assert!(env.binds("pat", "Patch-Passw0rd-3"));

    // Okta: path-less replace with the password in the value object.
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Users/{id}"),
            patch(json!([{ "op": "replace", "value": { "password": "Okta-Passw0rd-4" } }])),
        )
        .await;
    assert_eq!(status, 204, "{reply}");
    assert!(env.binds("pat", "Okta-Passw0rd-4"));

    // The push reads little of the user, but enough for If-Match: a stale version is
    // refused and changes nothing, the current one is taken.
    let push =
        |value: &str| patch(json!([{ "op": "replace", "path": "password", "value": value }]));
    let (status, body, _) = env
        .scim
        .call(
            "PATCH",
            &format!("/Users/{id}"),
            Some(push("Stale-Passw0rd-9")),
            &[("if-match", "W/\"stale\"")],
        )
        .await;
    assert_eq!(status, 412, "{body}");
    assert!(env.binds("pat", "Okta-Passw0rd-4"));
    let (_, _, headers) = env.scim.get(&format!("/Users/{id}")).await;
    let etag = headers["etag"].to_str().expect("etag").to_owned();
    let (status, body, _) = env
        .scim
        .call(
            "PATCH",
            &format!("/Users/{id}"),
            Some(push("Current-Passw0rd-8")),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(status, 204, "{body}");
    assert!(env.binds("pat", "Current-Passw0rd-8"));

    // Asking for attributes gets the resource back, shaped, and never the password.
    let (status, reply, headers) = env
        .scim
        .patch(
            &format!("/Users/{id}?attributes=userName"),
            patch(json!([{ "op": "replace", "path": "password", "value": "Shaped-Passw0rd-5" }])),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["userName"], "pat");
    assert!(reply.get("displayName").is_none(), "shaped: {reply}");
    assert!(reply.get("password").is_none());
    assert!(headers.contains_key("etag"));
    assert!(env.binds("pat", "Shaped-Passw0rd-5"));
    env.daemon
        .assert_no_secrets(&[
            "Created-Passw0rd-1",
            "Put-Passw0rd-2",
            "Patch-Passw0rd-3",
            "Okta-Passw0rd-4",
            "Stale-Passw0rd-9",
            "Current-Passw0rd-8",
            "Shaped-Passw0rd-5",
            &env.token,
        ])
        .await;
}

#[tokio::test]
async fn put_or_patch_without_a_password_leaves_the_old_one_working() {
    let env = start();
    let created = env.create("quinn", Some("Keep-This-Passw0rd")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let mut body = new_user("quinn", None);
    body["displayName"] = json!("Quinn Renamed");
    let (status, reply, _) = env
        .scim
        .put(&format!("/Users/{id}?attributes=displayName"), body)
        .await;
    assert_eq!(status, 200, "{reply}");
    // PUT honours `attributes` (RFC 7644 §3.9): the id always, then what was asked for.
    assert_eq!(reply["id"], json!(id), "{reply}");
    assert_eq!(reply["displayName"], json!("Quinn Renamed"), "{reply}");
    assert!(reply.get("userName").is_none(), "{reply}");
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Users/{id}"),
            patch(json!([{ "op": "replace", "path": "title", "value": "Engineer" }])),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(env.attr("quinn", "title"), vec!["Engineer"]);
    assert!(env.binds("quinn", "Keep-This-Passw0rd"));
}

#[tokio::test]
async fn a_policy_violating_password_is_invalid_value_and_changes_nothing() {
    let env = start();
    let created = env.create("rita", Some("Good-Passw0rd-Rita")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Users/{id}"),
            patch(json!([
                { "op": "replace", "path": "displayName", "value": "Should Not Stick" },
                { "op": "replace", "path": "password", "value": "short" },
            ])),
        )
        .await;
    assert_eq!(status, 400, "{reply}");
    assert_scim_error(&reply, 400, Some("invalidValue"));
    let detail = reply["detail"].as_str().unwrap_or("");
    assert!(detail.contains("short"), "the rule is named: {detail}");
    assert!(
        !detail.contains("\"short\""),
        "the password is not echoed: {detail}"
    );
    assert_eq!(
        env.attr("rita", "displayName"),
        vec!["Test rita"],
        "nothing changed"
    );
    assert!(env.binds("rita", "Good-Passw0rd-Rita"));

    // A create with a refused password leaves no user behind.
    let (status, reply, _) = env
        .scim
        .post("/Users", new_user("sam", Some("short")))
        .await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(
        env.user_names("userName eq \"sam\"").await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn pushing_the_current_password_again_changes_nothing() {
    let env = start();
    let created = env.create("okta1", Some("Same-Passw0rd-Okta")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    // A second, different password, so that there is a history entry to compare.
    let (status, _, _) = env
        .scim
        .patch(
            &format!("/Users/{id}"),
            patch(json!([{ "op": "replace", "value": { "password": "Other-Passw0rd-Okta" } }])),
        )
        .await;
    assert_eq!(status, 204);
    // Backdate the change so that a rewrite would be visible in pwdChangedTime.
    let backdated = (chrono::Utc::now() - chrono::TimeDelta::days(10))
        .format("%Y%m%d%H%M%SZ")
        .to_string();
    env.slapd.ldapmodify_as_root_relax(&format!(
        "dn: {}\nchangetype: modify\nreplace: pwdChangedTime\npwdChangedTime: {backdated}\n",
        env.dn("okta1")
    ));
    // A wrong bind, so there is a failure counter that must not be touched either.
    assert!(!env.binds("okta1", "Wrong-Passw0rd-Okta"));
    let before: Vec<Vec<String>> = [
        "pwdChangedTime",
        "pwdHistory",
        "pwdFailureTime",
        "userPassword",
    ]
    .iter()
    .map(|a| env.attr("okta1", a))
    .collect();
    assert_eq!(before[0], vec![backdated]);

    // Okta's sign-in push (path-less PATCH), and a PUT carrying the same password.
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Users/{id}"),
            patch(json!([{ "op": "replace", "value": { "password": "Other-Passw0rd-Okta" } }])),
        )
        .await;
    assert_eq!(status, 204, "{reply}");
    let (status, reply, _) = env
        .scim
        .put(
            &format!("/Users/{id}"),
            new_user("okta1", Some("Other-Passw0rd-Okta")),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let after: Vec<Vec<String>> = [
        "pwdChangedTime",
        "pwdHistory",
        "pwdFailureTime",
        "userPassword",
    ]
    .iter()
    .map(|a| env.attr("okta1", a))
    .collect();
    assert_eq!(
        before, after,
        "age, history, failure counter and hash untouched"
    );
    assert!(env.binds("okta1", "Other-Passw0rd-Okta"));
}

/// The value of the metric line starting with `prefix` on /metrics (0 when absent).
async fn metric(env: &Env, prefix: &str) -> f64 {
    let (status, text, _) = env.daemon.client().get_full("", "/metrics").await;
    assert_eq!(status, 200);
    text.as_str()
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Password pushes read their user from the copy the directory keeps current (OpenLDAP's
/// syncprov, which the sandbox loads), and still see what changed outside lockbridge: a
/// block set straight in the directory stays, and a password changed there and then
/// pushed is recognised as the current one.
#[tokio::test]
async fn password_pushes_read_the_followed_copy_and_see_changes_made_elsewhere() {
    let env = start_with(3, "");
    let created = env.create("follow1", Some("Follow-Passw0rd-0")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let push = |n: usize| {
        let scim = &env.scim;
        let path = format!("/Users/{id}");
        async move {
            let body = patch(
                json!([{ "op": "replace", "path": "password", "value": format!("Follow-Passw0rd-{n}") }]),
            );
            let (status, reply, _) = scim.patch(&path, body).await;
            assert_eq!(status, 204, "push {n}: {reply}");
        }
    };
    // The first push after the copy went live, and after the echo of the write before it,
    // is served from the copy.
    let copy_reads = "lockbridge_password_push_reads_total{from=\"copy\"}";
    let mut n = 0;
    while metric(&env, copy_reads).await < 1.0 {
        n += 1;
        assert!(n < 100, "no push was served from the followed copy");
        push(n).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(metric(&env, "lockbridge_directory_followed_users").await >= 4.0);
    assert!(env.binds("follow1", &format!("Follow-Passw0rd-{n}")));

    // Blocked in the directory, not through lockbridge: the push keeps the block.
    let dn = env.dn("follow1");
    env.slapd.ldapmodify_as_root_relax(&format!(
        "dn: {dn}\nchangetype: modify\nreplace: pwdAccountLockedTime\npwdAccountLockedTime: 000001010000Z\n"
    ));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let before = metric(&env, copy_reads).await;
    push(n + 1).await;
    assert!(
        metric(&env, copy_reads).await > before,
        "read from the copy"
    );
    assert!(
        env.slapd.is_blocked(&dn),
        "the block set in the directory stays"
    );
    env.slapd.ldapmodify_as_root_relax(&format!(
        "dn: {dn}\nchangetype: modify\ndelete: pwdAccountLockedTime\n"
    ));

    // Changed in the directory, then pushed at once (Okta's sign-in push): whatever the
    // copy held, the answer is "unchanged" and the directory is not written again.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    env.slapd.ldapmodify_as_root(&format!(
        "dn: {dn}\nchangetype: modify\nreplace: userPassword\nuserPassword: Follow-Elsewhere-9\n"
    ));
    let changed = env.attr("follow1", "pwdChangedTime");
    let hash = env.attr("follow1", "userPassword");
    let body = patch(json!([{ "op": "replace", "value": { "password": "Follow-Elsewhere-9" } }]));
    let (status, reply, _) = env.scim.patch(&format!("/Users/{id}"), body).await;
    assert_eq!(status, 204, "{reply}");
    assert_eq!(env.attr("follow1", "pwdChangedTime"), changed);
    assert_eq!(env.attr("follow1", "userPassword"), hash);
    assert!(env.binds("follow1", "Follow-Elsewhere-9"));
}

/// `scim.follow_reads = false`: the copy holds only what a push reads (for a directory too
/// large to hold every user's attributes), so pushes still read it while every read by
/// userName asks the directory, and the groups are not followed.
#[tokio::test]
async fn a_copy_for_pushes_only_leaves_reads_to_the_directory() {
    let env = start_with_scim(3, "follow_reads = false\n", "");
    let created = env.create("pushonly", Some("Push-Only-Passw0rd-0")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let push_copy = "lockbridge_password_push_reads_total{from=\"copy\"}";
    let mut n = 0;
    while metric(&env, push_copy).await < 1.0 {
        n += 1;
        assert!(n < 100, "no push was served from the followed copy");
        let body = patch(
            json!([{ "op": "replace", "path": "password", "value": format!("Push-Only-Passw0rd-{n}") }]),
        );
        let (status, reply, _) = env.scim.patch(&format!("/Users/{id}"), body).await;
        assert_eq!(status, 204, "push {n}: {reply}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(env.binds("pushonly", &format!("Push-Only-Passw0rd-{n}")));
    // Long after every write was reported: still the directory's to answer.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let by_name = format!("/Users?filter={}", urlencode(r#"userName eq "pushonly""#));
    for _ in 0..3 {
        let (status, body, _) = env.scim.get(&by_name).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["Resources"][0]["id"], json!(id), "{body}");
    }
    let from_copy = "lockbridge_scim_user_name_reads_total{from=\"copy\"}";
    let from_directory = "lockbridge_scim_user_name_reads_total{from=\"directory\"}";
    assert_eq!(metric(&env, from_copy).await, 0.0);
    assert!(metric(&env, from_directory).await >= 3.0);
    assert_eq!(
        metric(&env, "lockbridge_directory_followed_groups").await,
        0.0
    );
    assert!(metric(&env, "lockbridge_directory_followed_users").await >= 4.0);
}

/// Reads by userName (an identity provider's every lookup) are answered from the copies
/// the directory keeps current, users and groups, once they are live: the same resource
/// the directory gives, every write by lockbridge shown at once, and changes made
/// elsewhere once the directory reports them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_by_user_name_come_from_the_followed_copy_and_show_every_write() {
    let env = start_with(3, "");
    let mut body = new_user("copied", None);
    body["nickName"] = json!("Cop");
    body["title"] = json!("Reader");
    body["emails"] = json!([
        { "value": "copied@example.org", "type": "work", "primary": true },
        { "value": "copied@home.example", "type": "home" }
    ]);
    body["phoneNumbers"] = json!([{ "value": "+1 555 0100", "type": "mobile" }]);
    body[ENTERPRISE] = json!({ "employeeNumber": "42", "department": "Reading" });
    let (status, created, _) = env.scim.post("/Users", body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let (status, group, _) = env
        .scim
        .post(
            "/Groups",
            json!({ "schemas": [GROUP], "displayName": "Copiers", "members": [{ "value": id }] }),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let gid = group["id"].as_str().expect("id").to_owned();
    let by_name = format!("/Users?filter={}", urlencode(r#"userName eq "copied""#));
    let read = || async {
        let (status, body, _) = env.scim.get(&by_name).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["totalResults"], json!(1), "{body}");
        body["Resources"][0].clone()
    };
    let groups_of = |user: &Value| -> Vec<String> {
        user["groups"]
            .as_array()
            .map(|g| {
                g.iter()
                    .filter_map(|x| x["value"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let copy_reads = "lockbridge_scim_user_name_reads_total{from=\"copy\"}";
    let served_from_copy = || async {
        let before = metric(&env, copy_reads).await;
        let user = read().await;
        (metric(&env, copy_reads).await > before, user)
    };
    // Served from the copy once its writes are reported (the copies go live at the first
    // request, and hold a user lockbridge wrote until the directory reports the write).
    let mut tries = 0;
    let user = loop {
        let (copied, user) = served_from_copy().await;
        if copied {
            break user;
        }
        tries += 1;
        assert!(tries < 100, "no read by userName was served from the copy");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // The same resource as the directory gives.
    let (status, direct, _) = env.scim.get(&format!("/Users/{id}")).await;
    assert_eq!(status, 200, "{direct}");
    assert_eq!(user, direct, "the copy serves what the directory does");
    assert_eq!(groups_of(&user), std::slice::from_ref(&gid));
    assert_eq!(user["emails"].as_array().map_or(0, Vec::len), 2, "{user}");

    // Every write by lockbridge shows in the next read, however fast it follows.
    for round in 0..15 {
        let title = format!("Reader {round}");
        let (status, reply, _) = env
            .scim
            .patch(
                &format!("/Users/{id}"),
                patch(json!([{ "op": "replace", "path": "title", "value": title }])),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(read().await["title"], json!(title), "round {round}");
        for (op, expected) in [("remove", Vec::new()), ("add", vec![gid.clone()])] {
            let (status, reply, _) = env
                .scim
                .patch(
                    &format!("/Groups/{gid}"),
                    patch(json!([{ "op": op, "path": "members", "value": [{ "value": id }] }])),
                )
                .await;
            assert_eq!(status, 204, "{reply}");
            assert_eq!(groups_of(&read().await), expected, "round {round}, {op}");
        }
    }

    // Changes made elsewhere show once the directory has reported them.
    let dn = env.dn("copied");
    env.slapd.ldapmodify_as_root(&format!(
        "dn: {dn}\nchangetype: modify\nreplace: title\ntitle: Changed Elsewhere\n"
    ));
    let (status, others, _) = env
        .scim
        .post(
            "/Groups",
            json!({ "schemas": [GROUP], "displayName": "Others", "members": [] }),
        )
        .await;
    assert_eq!(status, 201, "{others}");
    let mut both = vec![gid.clone(), others["id"].as_str().expect("id").to_owned()];
    both.sort();
    let group_dn = format!("cn=Others,{}", env.slapd.groups_base);
    env.slapd.ldapmodify_as_root(&format!(
        "dn: {group_dn}\nchangetype: modify\nadd: member\nmember: {dn}\n"
    ));
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let mut tries = 0;
    loop {
        let user = read().await;
        if user["title"] == json!("Changed Elsewhere") && sorted(groups_of(&user)) == both {
            break;
        }
        tries += 1;
        assert!(
            tries < 50,
            "the changes made elsewhere never showed: {user}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // And, lockbridge's own writes reported, from the copy again.
    let mut tries = 0;
    loop {
        let (copied, user) = served_from_copy().await;
        if copied {
            assert_eq!(user["title"], json!("Changed Elsewhere"));
            assert_eq!(sorted(groups_of(&user)), both, "{user}");
            let (_, direct, _) = env.scim.get(&format!("/Users/{id}")).await;
            assert_eq!(user, direct);
            break;
        }
        tries += 1;
        assert!(tries < 100, "reads never came back to the copy");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A name nobody holds is looked for in the directory, and not found.
    let (status, body, _) = env
        .scim
        .get(&format!(
            "/Users?filter={}",
            urlencode(r#"userName eq "nobody""#)
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["totalResults"], json!(0), "{body}");
}

// ----- status ----------------------------------------------------------------------------

/// An identity provider's push and an administrator's reset landing on one user at the
/// same moment: both writes are whole, so each must succeed (slapd's password policy
/// updates the entry's history for each, and may report the other's update as a clash),
/// and the user ends with one of the passwords, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_password_writes_on_one_user_all_succeed() {
    let env = start();
    let created = env.create("racer", Some("Created-Passw0rd-1")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let admin = env.daemon.client();
    let token = env.daemon.admin_token.clone();
    for round in 0..40 {
        let push = |n: u32| {
            let value = format!("Pushed-{round}-{n}-Passw0rd");
            let scim = &env.scim;
            let path = format!("/Users/{id}");
            async move {
                let ops = json!([{ "op": "replace", "path": "password", "value": value }]);
                scim.patch(&path, patch(ops)).await
            }
        };
        let reset = admin.post(
            &token,
            "/api/v1/users/racer/password-reset",
            json!({"mode": "auto", "showPassword": true, "requireChangeAtNextSignIn": false}),
        );
        let (a, b, r) = tokio::join!(push(1), push(2), reset);
        assert_eq!(a.0, 204, "round {round}, first push: {}", a.1);
        assert_eq!(b.0, 204, "round {round}, second push: {}", b.1);
        assert_eq!(r.0, 200, "round {round}, reset: {}", r.1);
    }
}

#[tokio::test]
async fn active_false_locks_a_real_bind_and_true_unlocks_it() {
    let env = start();
    let created = env.create("lena", Some("Lena-Passw0rd-123")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    // Okta: path-less replace of active.
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Users/{id}"),
            patch(json!([{ "op": "replace", "value": { "active": false } }])),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["active"], json!(false));
    let bind = env.slapd.bind_as(&env.dn("lena"), "Lena-Passw0rd-123");
    assert!(!bind.success, "locked: {}", bind.output);
    // still returned by GET and by filters
    let (status, body, _) = env.scim.get(&format!("/Users/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["active"], json!(false));
    assert_eq!(env.user_names("active eq false").await, vec!["lena"]);
    // Entra: op name capitalised, boolean as a string.
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Users/{id}"),
            patch(json!([{ "op": "Replace", "path": "active", "value": "True" }])),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["active"], json!(true));
    assert!(env.binds("lena", "Lena-Passw0rd-123"));
    // Both went through the account gate, which audits them as the provisioning token's.
    let (status, body) = env
        .daemon
        .client()
        .get(
            &env.daemon.admin_token,
            "/api/v1/audit?actor=entra-provisioning&limit=50",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let actions: Vec<&str> = body["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["target"] == json!("lena"))
        .filter_map(|r| r["action"].as_str())
        .collect();
    for expected in ["sign_in.blocked", "sign_in.unblocked", "scim.patch"] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }
}

#[tokio::test]
async fn a_user_created_inactive_and_must_change_is_so_in_the_directory() {
    let env = start();
    let mut body = new_user("nora", Some("Nora-Passw0rd-123"));
    body["active"] = json!(false);
    body[PASSWORD_EXT] = json!({ "mustChange": true });
    let (status, created, _) = env.scim.post("/Users", body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["active"], json!(false));
    assert_eq!(created[PASSWORD_EXT]["mustChange"], json!(true));
    assert!(!env.binds("nora", "Nora-Passw0rd-123"), "blocked");
    let id = created["id"].as_str().expect("id").to_owned();
    // Without a password in the request, mustChange alone is written (and cleared).
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Users/{id}"),
            patch(json!([
                { "op": "replace", "path": "active", "value": true },
                { "op": "replace", "path": format!("{PASSWORD_EXT}:mustChange"), "value": false }
            ])),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["active"], json!(true));
    assert_eq!(reply[PASSWORD_EXT]["mustChange"], json!(false));
    assert!(env.binds("nora", "Nora-Passw0rd-123"));
    let (_, again, _) = env.scim.get(&format!("/Users/{id}")).await;
    assert_eq!(again[PASSWORD_EXT]["mustChange"], json!(false), "{again}");
}

#[tokio::test]
async fn password_extension_reports_state_and_must_change_is_writable() {
    let env = start();
    let created = env.create("mona", Some("Mona-Passw0rd-123")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    // By default only mustChange; the computed facts are returned when asked for.
    assert_eq!(
        created[PASSWORD_EXT],
        json!({ "mustChange": false }),
        "{created}"
    );
    let (status, body, _) = env
        .scim
        .get(&format!(
            "/Users/{id}?attributes={}",
            urlencode(PASSWORD_EXT)
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let ext = &body[PASSWORD_EXT];
    assert!(ext["passwordLastChanged"].is_string(), "{body}");
    assert!(ext["passwordExpiresAt"].is_string(), "{body}");
    assert_eq!(ext["mustChange"], json!(false));
    assert_eq!(ext["neverExpires"], json!(false));
    // the never-expires policy shows up as neverExpires
    env.slapd.ldapmodify_as_root(&format!(
        "dn: {}\nchangetype: modify\nreplace: pwdPolicySubentry\npwdPolicySubentry: cn=never-expires,ou=policies,{}\n",
        env.dn("mona"),
        env.slapd.base_dn
    ));
    let (_, body, _) = env
        .scim
        .get(&format!(
            "/Users/{id}?attributes={}:neverExpires",
            urlencode(PASSWORD_EXT)
        ))
        .await;
    assert_eq!(body[PASSWORD_EXT]["neverExpires"], json!(true), "{body}");
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Users/{id}"),
            patch(json!([{ "op": "replace", "path": format!("{PASSWORD_EXT}:mustChange"), "value": true }])),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(env.attr("mona", "pwdReset"), vec!["TRUE"]);
    assert!(
        env.slapd
            .bind_as(&env.dn("mona"), "Mona-Passw0rd-123")
            .must_change
    );
    // A password pushed without mustChange is final: the flag goes.
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Users/{id}"),
            patch(json!([{ "op": "replace", "value": { "password": "Mona-Passw0rd-456", format!("{PASSWORD_EXT}:mustChange"): false } }])),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(env.attr("mona", "pwdReset").is_empty());
    let bind = env.slapd.bind_as(&env.dn("mona"), "Mona-Passw0rd-456");
    assert!(bind.success && !bind.must_change, "{}", bind.output);
}

// ----- filters ---------------------------------------------------------------------------

#[tokio::test]
async fn filters_with_every_operator_and_injection_attempts() {
    let env = start();
    for name in ["alpha", "alpine", "beta", "gamma"] {
        env.create(&format!("f-{name}"), None).await;
    }
    let cases: &[(&str, &[&str])] = &[
        (r#"userName eq "f-alpha""#, &["f-alpha"]),
        (r#"USERNAME EQ "F-ALPHA""#, &["f-alpha"]),
        (r#"userName sw "f-alp""#, &["f-alpha", "f-alpine"]),
        (r#"userName ew "ta""#, &["f-beta"]),
        (r#"userName co "mm""#, &["f-gamma"]),
        (
            r#"userName sw "f-" and not (userName co "alp")"#,
            &["f-beta", "f-gamma"],
        ),
        (
            r#"userName eq "f-beta" or userName eq "f-gamma""#,
            &["f-beta", "f-gamma"],
        ),
        (
            r#"userName sw "f-" and (userName ew "ha" or userName ew "ma")"#,
            &["f-alpha", "f-gamma"],
        ),
        (
            r#"emails[type eq "work"].value eq "f-beta@example.org""#,
            &["f-beta"],
        ),
        (
            r#"emails[type eq "work" and value co "gamma"]"#,
            &["f-gamma"],
        ),
        (
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "f-alpine""#,
            &["f-alpine"],
        ),
        (r#"userName sw "f-" and title pr"#, &[]),
        (
            r#"userName sw "f-" and userName ne "f-alpha" and userName ne "f-beta""#,
            &["f-alpine", "f-gamma"],
        ),
        (
            r#"userName sw "f-" and meta.created gt "2000-01-01T00:00:00Z""#,
            &["f-alpha", "f-alpine", "f-beta", "f-gamma"],
        ),
        (
            r#"userName sw "f-" and meta.created lt "2000-01-01T00:00:00Z""#,
            &[],
        ),
        (
            r#"userName sw "f-" and meta.lastModified ge "2000-01-01T00:00:00Z""#,
            &["f-alpha", "f-alpine", "f-beta", "f-gamma"],
        ),
        (
            r#"userName sw "f-" and meta.lastModified le "2999-01-01T00:00:00Z""#,
            &["f-alpha", "f-alpine", "f-beta", "f-gamma"],
        ),
        // injection attempts match literally, never widen
        (r#"userName eq "*""#, &[]),
        (r#"userName eq "f-alpha)(uid=*""#, &[]),
        (r#"userName eq "*)(objectClass=*))(|(uid=*""#, &[]),
        (r#"userName co "\\""#, &[]),
    ];
    for (filter, expected) in cases {
        let got = env.user_names(filter).await;
        assert_eq!(&got, expected, "filter {filter}");
    }
    for bad in [
        r#"userName eq"#,
        r#"nosuchattr eq "x""#,
        r#"userName gt "a""#,
    ] {
        let q = urlencode(bad);
        let (status, body, _) = env.scim.get(&format!("/Users?filter={q}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_scim_error(&body, 400, Some("invalidFilter"));
    }
    // A password in a URL would be logged: refused as sensitive (RFC 7644 §7.5.2).
    let q = urlencode(r#"password eq "x""#);
    let (status, body, _) = env.scim.get(&format!("/Users?filter={q}")).await;
    assert_eq!(status, 403, "{body}");
    assert_scim_error(&body, 403, Some("sensitive"));
    // POST /.search takes the same filter in the body
    let (status, body, _) = env
        .scim
        .post(
            "/Users/.search",
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "filter": "userName sw \"f-b\"",
                "attributes": ["userName"],
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["totalResults"], json!(1));
    assert!(
        body["Resources"][0].get("emails").is_none(),
        "attributes honoured: {body}"
    );
}

#[tokio::test]
async fn paging_through_1000_users_returns_each_exactly_once_in_a_stable_order() {
    let env = start_with(1000, "");
    for sorted in [false, true] {
        let mut seen: Vec<String> = Vec::new();
        let mut start = 1;
        loop {
            let sort = if sorted {
                "&sortBy=userName&sortOrder=descending"
            } else {
                ""
            };
            let filter = urlencode(r#"userName sw "user""#);
            let (status, body, _) = env
                .scim
                .get(&format!(
                    "/Users?filter={filter}&startIndex={start}&count=97&attributes=userName{sort}"
                ))
                .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["totalResults"], json!(1000));
            assert_eq!(body["startIndex"], json!(start));
            let page: Vec<String> = body["Resources"]
                .as_array()
                .expect("Resources")
                .iter()
                .map(|r| r["userName"].as_str().expect("userName").to_owned())
                .collect();
            assert_eq!(body["itemsPerPage"], json!(page.len()));
            if page.is_empty() {
                break;
            }
            start += page.len();
            seen.extend(page);
        }
        assert_eq!(seen.len(), 1000, "sorted={sorted}");
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 1000, "each exactly once (sorted={sorted})");
        if sorted {
            let mut expected = unique.clone();
            expected.reverse();
            assert_eq!(seen, expected, "descending userName order");
        }
    }
    // count above the maximum is capped; count=0 only counts
    let (_, body, _) = env.scim.get("/Users?count=0").await;
    assert!(body["totalResults"].as_u64().is_some_and(|n| n >= 1000));
    assert_eq!(body["Resources"].as_array().map_or(0, Vec::len), 0);
}

// ----- Entra ID habits -------------------------------------------------------------------

#[tokio::test]
async fn entra_patch_without_path_keyed_by_attribute_paths_and_manager_as_plain_id() {
    let env = start();
    let boss = env.create("boss", None).await;
    let boss_id = boss["id"].as_str().expect("id").to_owned();
    let created = env.create("worker", None).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Users/{id}"),
            patch(json!([
                { "op": "Add", "value": {
                    "displayName": "Worker Bee",
                    "name.givenName": "Worker",
                    "name.familyName": "Bee",
                    "externalId": "0a1b2c",
                    format!("{ENTERPRISE}:department"): "Hive",
                    format!("{ENTERPRISE}:employeeNumber"): "E-42",
                }},
                { "op": "Replace", "path": "emails[type eq \"work\"].value", "value": "worker.bee@example.org" },
                { "op": "Add", "path": format!("{ENTERPRISE}:manager"), "value": boss_id },
                { "op": "Replace", "path": "active", "value": "False" },
            ])),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(env.attr("worker", "displayName"), vec!["Worker Bee"]);
    assert_eq!(env.attr("worker", "givenName"), vec!["Worker"]);
    assert_eq!(env.attr("worker", "sn"), vec!["Bee"]);
    assert_eq!(env.attr("worker", "departmentNumber"), vec!["Hive"]);
    assert_eq!(env.attr("worker", "employeeNumber"), vec!["E-42"]);
    assert_eq!(env.attr("worker", "mail"), vec!["worker.bee@example.org"]);
    assert_eq!(env.attr("worker", "lockbridgeExternalId"), vec!["0a1b2c"]);
    assert_eq!(env.attr("worker", "manager"), vec![env.dn("boss")]);
    assert_eq!(reply[ENTERPRISE]["manager"]["value"], json!(boss_id));
    assert_eq!(reply["active"], json!(false));
    assert_eq!(reply["externalId"], json!("0a1b2c"));

    // Entra's existence check before creating.
    assert_eq!(
        env.user_names(r#"externalId eq "0a1b2c""#).await,
        vec!["worker"]
    );
    assert_eq!(
        env.user_names(r#"emails[type eq "work"].value eq "worker.bee@example.org""#)
            .await,
        vec!["worker"]
    );

    // Removing the manager.
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Users/{id}"),
            patch(json!([{ "op": "Remove", "path": format!("{ENTERPRISE}:manager") }])),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(env.attr("worker", "manager").is_empty());
}

#[tokio::test]
async fn put_bodies_with_read_only_id_meta_and_groups_are_accepted() {
    let env = start();
    let created = env.create("putter", None).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let mut body = created.clone();
    body["displayName"] = json!("Putter Two");
    body["groups"] = json!([{ "value": "00000000-0000-0000-0000-000000000000", "display": "x" }]);
    let (status, reply, _) = env.scim.put(&format!("/Users/{id}"), body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["id"], json!(id));
    assert_eq!(env.attr("putter", "displayName"), vec!["Putter Two"]);
}

#[tokio::test]
async fn renaming_a_user_moves_the_entry_and_keeps_the_id() {
    let env = start();
    let created = env.create("oldname", Some("Rename-Passw0rd-1")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let (status, group, _) = env
        .scim
        .post(
            "/Groups",
            json!({ "schemas": [GROUP], "displayName": "Renamers", "members": [{ "value": id }] }),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Users/{id}"),
            patch(json!([{ "op": "replace", "path": "userName", "value": "newname" }])),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["userName"], json!("newname"));
    assert_eq!(reply["id"], json!(id));
    assert!(env.binds("newname", "Rename-Passw0rd-1"));
    // the membership follows the entry to its new DN
    let gid = group["id"].as_str().expect("id");
    let members = env
        .slapd
        .ldapsearch_attr(&format!("cn=Renamers,{}", env.slapd.groups_base), "member");
    assert_eq!(members, vec![env.dn("newname")]);
    let (_, body, _) = env.scim.get(&format!("/Groups/{gid}")).await;
    assert_eq!(body["members"][0]["value"], json!(id), "{body}");
}

// ----- groups ----------------------------------------------------------------------------

#[tokio::test]
async fn groups_membership_checks_removal_by_value_list_and_non_members() {
    let env = start();
    let a = env.create("ga", None).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let b = env.create("gb", None).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let c = env.create("gc", None).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // Entra creates the group empty, then adds members.
    let (status, group, _) = env
        .scim
        .post(
            "/Groups",
            json!({ "schemas": [GROUP], "displayName": "Pilots", "members": [] }),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    let gid = group["id"].as_str().expect("id").to_owned();
    assert_eq!(
        group["members"].as_array().map_or(0, Vec::len),
        0,
        "{group}"
    );
    // A PATCH that only changes members and asks for nothing back is answered 204,
    // without reading the group (and resolving its members) back.
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Groups/{gid}"),
            patch(json!([{ "op": "Add", "path": "members", "value": [{ "value": a }] }])),
        )
        .await;
    assert_eq!(status, 204, "{reply}");
    assert_eq!(reply, json!(""), "204 has no body");
    // Asked for something back, it is answered 200 with the group so shaped.
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Groups/{gid}?excludedAttributes=members"),
            patch(json!([{ "op": "Add", "path": "members", "value": [{ "value": b }] }])),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["id"], json!(gid), "{reply}");
    assert_eq!(reply["displayName"], json!("Pilots"), "{reply}");
    assert!(
        reply.get("members").is_none(),
        "excludedAttributes: {reply}"
    );
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Groups/{gid}?attributes=members"),
            patch(json!([{ "op": "Add", "path": "members", "value": [{ "value": a }] }])),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let mut values: Vec<&str> = reply["members"]
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["value"].as_str()).collect())
        .unwrap_or_default();
    values.sort_unstable();
    let mut expected = vec![a.as_str(), b.as_str()];
    expected.sort_unstable();
    assert_eq!(
        values, expected,
        "adding a member again changes nothing: {reply}"
    );
    assert!(reply.get("displayName").is_none(), "attributes: {reply}");
    // Entra's membership check
    let check = |user: &str| format!(r#"id eq "{gid}" and members eq "{user}""#);
    for (user, expected) in [(&a, 1), (&c, 0)] {
        let q = urlencode(&check(user));
        let (status, body, _) = env
            .scim
            .get(&format!("/Groups?filter={q}&excludedAttributes=members"))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["totalResults"], json!(expected), "{body}");
        if expected == 1 {
            assert!(
                body["Resources"][0].get("members").is_none(),
                "excludedAttributes: {body}"
            );
        }
    }
    // user.groups when asked for
    let (_, body, _) = env.scim.get(&format!("/Users/{a}?attributes=groups")).await;
    assert_eq!(body["groups"][0]["value"], json!(gid), "{body}");
    // Removal by a value list, including a non-member (c), succeeds.
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Groups/{gid}"),
            patch(json!([{ "op": "Remove", "path": "members", "value": [{ "value": a }, { "value": c }] }])),
        )
        .await;
    assert_eq!(status, 204, "{reply}");
    // Okta's form: remove with a value filter in the path.
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Groups/{gid}"),
            patch(json!([{ "op": "remove", "path": format!("members[value eq \"{b}\"]") }])),
        )
        .await;
    assert_eq!(status, 204, "{reply}");
    let (_, body, _) = env.scim.get(&format!("/Groups/{gid}")).await;
    assert_eq!(body["members"].as_array().map_or(0, Vec::len), 0, "{body}");
    // Rename, then delete.
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Groups/{gid}"),
            patch(json!([{ "op": "replace", "value": { "displayName": "Crew" } }])),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["displayName"], json!("Crew"));
    let (status, _, _) = env.scim.delete(&format!("/Groups/{gid}")).await;
    assert_eq!(status, 204);
    let (status, _, _) = env.scim.get(&format!("/Groups/{gid}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn deleting_a_user_removes_the_entry_and_its_memberships() {
    let env = start();
    let u = env.create("leaver", None).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let stay = env.create("stayer", None).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, group, _) = env
        .scim
        .post(
            "/Groups?excludedAttributes=members",
            json!({ "schemas": [GROUP], "displayName": "Team", "members": [{ "value": u }, { "value": stay }] }),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    assert!(
        group.get("members").is_none(),
        "POST honours excludedAttributes: {group}"
    );
    assert_eq!(group["displayName"], json!("Team"), "{group}");
    let (status, _, _) = env.scim.delete(&format!("/Users/{u}")).await;
    assert_eq!(status, 204);
    let (status, body, _) = env.scim.get(&format!("/Users/{u}")).await;
    assert_eq!(status, 404);
    assert_scim_error(&body, 404, None);
    assert_eq!(
        body["detail"],
        json!(format!(
            "no User has the id \"{u}\"; check the id, or find the user with a filter on userName"
        )),
        "a 404 says what is missing and where to look, in one sentence"
    );
    let gid = group["id"].as_str().expect("id");
    let (_, body, _) = env.scim.get(&format!("/Groups/{gid}")).await;
    let members: Vec<&str> = body["members"]
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["value"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(members, vec![stay.as_str()]);
}

#[tokio::test]
async fn writes_are_audited_with_the_token_name() {
    let env = start();
    let created = env.create("audited", Some("Audit-Passw0rd-1")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let _ = env
        .scim
        .patch(
            &format!("/Users/{id}"),
            patch(json!([{ "op": "replace", "path": "title", "value": "X" }])),
        )
        .await;
    let (status, body) = env
        .daemon
        .client()
        .get(&env.daemon.admin_token, "/api/v1/audit?limit=50")
        .await;
    assert_eq!(status, 200, "{body}");
    let text = body.to_string();
    assert!(
        text.contains("scim.create") && text.contains("scim.patch"),
        "{text}"
    );
    assert!(text.contains("entra-provisioning"), "{text}");
    assert!(!text.contains("Audit-Passw0rd-1"));
}

#[tokio::test]
async fn lockbridge_admin_groups_cannot_be_changed_over_scim() {
    let env = start();
    let user = env.create("climber", None).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let q = urlencode(r#"displayName eq "admins""#);
    let (status, body, _) = env.scim.get(&format!("/Groups?filter={q}")).await;
    assert_eq!(status, 200, "{body}");
    let gid = body["Resources"][0]["id"]
        .as_str()
        .expect("admin group is visible")
        .to_owned();
    let (status, body, _) = env
        .scim
        .patch(
            &format!("/Groups/{gid}"),
            patch(json!([{ "op": "add", "path": "members", "value": [{ "value": user }] }])),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_scim_error(&body, 403, None);
    let (status, _, _) = env.scim.delete(&format!("/Groups/{gid}")).await;
    assert_eq!(status, 403);
    let members = env
        .slapd
        .ldapsearch_attr(&env.slapd.admin_group_dn, "member");
    assert!(
        !members.iter().any(|m| m.contains("climber")),
        "{members:?}"
    );
}

#[tokio::test]
async fn delete_can_be_configured_to_only_deactivate() {
    let env = start_with_scim(0, "delete = \"deactivate\"", "");
    let id = env.create("dormant", Some("Dormant-Passw0rd-1")).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, _, _) = env.scim.delete(&format!("/Users/{id}")).await;
    assert_eq!(status, 204);
    let (status, body, _) = env.scim.get(&format!("/Users/{id}")).await;
    assert_eq!(status, 200, "still there: {body}");
    assert_eq!(body["active"], json!(false));
    assert!(!env.binds("dormant", "Dormant-Passw0rd-1"), "locked");
}

#[tokio::test]
async fn oversized_and_non_json_bodies_are_scim_errors() {
    let env = start();
    let huge = json!({ "schemas": [USER], "userName": "x".repeat(2 * 1024 * 1024) });
    let (status, body, _) = env.scim.post("/Users", huge).await;
    assert_eq!(status, 413, "{body}");
    assert_scim_error(&body, 413, None);
    let (status, body, _) = env
        .scim
        .call("POST", "/Users", None, &[("content-type", "text/plain")])
        .await;
    assert_eq!(status, 400, "{body}");
    assert_scim_error(&body, 400, Some("invalidSyntax"));
    let (status, body, _) = env.scim.call("POST", "/Users/some-id", None, &[]).await;
    assert_eq!(status, 405, "{body}");
    assert_scim_error(&body, 405, None);
}

/// `primary` round-trips for values in inetOrgPerson attributes (marked in
/// lockbridgePrimary) and in JSON values alike, a newly primary value takes it from the
/// former one (RFC 7644 §3.5.2), and two primaries are refused (RFC 7643 §2.4).
#[tokio::test]
async fn primary_values_are_kept_and_moved() {
    let env = start();
    let mut body = new_user("prim", None);
    body["emails"] = json!([
        {"value": "prim@example.org", "type": "work", "primary": true},
        {"value": "prim@home.example", "type": "home"}
    ]);
    body["phoneNumbers"] = json!([{"value": "+1 555 0142", "type": "mobile", "primary": true}]);
    let (status, created, _) = env.scim.post("/Users", body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let (_, got, _) = env.scim.get(&format!("/Users/{id}")).await;
    let primary_emails = |r: &Value| -> Vec<String> {
        r["emails"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["primary"] == json!(true))
            .filter_map(|e| e["value"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(primary_emails(&got), ["prim@example.org"], "{got}");
    assert_eq!(got["phoneNumbers"][0]["primary"], json!(true), "{got}");
    let marks = env.attr("prim", "lockbridgePrimary");
    assert!(
        marks.contains(
            &r#"{"attribute":"emails","primary":true,"type":"work","value":"prim@example.org"}"#
                .to_owned()
        ),
        "{marks:?}"
    );

    // The home address made primary through a value path: the work one is no longer.
    let (status, patched, _) = env
        .scim
        .patch(
            &format!("/Users/{id}?attributes=emails"),
            patch(json!([{ "op": "replace",
                "path": "emails[type eq \"home\"].primary", "value": true }])),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(primary_emails(&patched), ["prim@home.example"], "{patched}");
    assert_eq!(
        patched["emails"][0]["primary"],
        json!(false),
        "the work email says so: {patched}"
    );
    // Filters see it: in the JSON value, and on the work email's mark.
    for (filter, found) in [
        (r#"emails[type eq "home" and primary eq true]"#, true),
        (r#"emails[type eq "work" and primary eq true]"#, false),
        (r#"emails[type eq "work" and primary eq false]"#, true),
        (
            r#"phoneNumbers[type eq "mobile" and primary eq true]"#,
            true,
        ),
    ] {
        let names = env.user_names(filter).await;
        assert_eq!(
            names.contains(&"prim".to_owned()),
            found,
            "{filter}: {names:?}"
        );
    }

    let mut two = new_user("prim2", None);
    two["emails"] = json!([
        {"value": "a@example.org", "type": "work", "primary": true},
        {"value": "b@example.org", "type": "home", "primary": true}
    ]);
    let (status, body, _) = env.scim.post("/Users", two).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["scimType"], "invalidValue", "{body}");
}

/// OpenLDAP's ppolicy lifts a lock when a password changes; lockbridge keeps an
/// administrator's block through every password write: a PATCH that blocks and sets a
/// password, a password-only push to a blocked user, and an administrator's reset.
#[tokio::test]
async fn a_password_written_to_a_blocked_account_leaves_it_blocked() {
    let env = start();
    let created = env.create("olga", Some("Olga-Passw0rd-123")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Users/{id}"),
            patch(json!([
                { "op": "replace", "path": "active", "value": false },
                { "op": "replace", "path": "password", "value": "Olga-Passw0rd-456" }
            ])),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["active"], json!(false), "{reply}");
    assert!(
        !env.binds("olga", "Olga-Passw0rd-456"),
        "blocked after block + password"
    );

    // A password-only push (an identity provider's sync), answered without the resource.
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Users/{id}?excludedAttributes=groups"),
            patch(json!([{ "op": "replace", "path": "password", "value": "Olga-Passw0rd-789" }])),
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {reply}");
    assert!(
        !env.binds("olga", "Olga-Passw0rd-789"),
        "blocked after a push"
    );
    let (_, got, _) = env.scim.get(&format!("/Users/{id}")).await;
    assert_eq!(got["active"], json!(false), "{got}");

    // An administrator's reset keeps the block too (Microsoft 365: a reset does not
    // unblock sign-in).
    let (status, body, _) = env
        .daemon
        .client()
        .post(
            &env.daemon.admin_token,
            "/api/v1/users/olga/password-reset",
            json!({"mode": "manual", "password": "Kestrel-Passw0rd-4bc", "requireChangeAtNextSignIn": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !env.binds("olga", "Kestrel-Passw0rd-4bc"),
        "blocked after a reset"
    );
    // Lifting the block lets the last password in.
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Users/{id}"),
            patch(json!([{ "op": "replace", "path": "active", "value": true }])),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(env.binds("olga", "Kestrel-Passw0rd-4bc"));
}

#[tokio::test]
async fn with_the_rules_checked_a_breached_password_is_invalid_value() {
    use sha1::{Digest, Sha1};
    const BREACHED: &str = "Marmalade-Tractor-Sunset-41";
    let lists = tempfile::tempdir().expect("tempdir");
    let list = lists.path().join("pwned.txt");
    let mut hashes: Vec<String> = ["Password1!", "Summer2024!", BREACHED]
        .iter()
        .map(|p| format!("{}:7\n", hex::encode_upper(Sha1::digest(p.as_bytes()))))
        .collect();
    hashes.sort();
    std::fs::write(&list, hashes.concat()).expect("list");
    let env = start_with_scim(
        0,
        "check_password_rules = true",
        &format!(
            "[password_policy]\nbreached_passwords_file = \"{}\"\n",
            list.display()
        ),
    );
    let created = env.create("rita", Some("Quiet-Harbor-Lantern-72")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let (status, reply, _) = env
        .scim
        .patch(
            &format!("/Users/{id}"),
            patch(json!([{ "op": "replace", "path": "password", "value": BREACHED }])),
        )
        .await;
    assert_eq!(status, 400, "{reply}");
    assert_scim_error(&reply, 400, Some("invalidValue"));
    let detail = reply["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("appears in a list of passwords exposed in data breaches"),
        "{detail}"
    );
    assert!(
        !detail.contains(BREACHED),
        "the password is not echoed: {detail}"
    );
    assert!(env.binds("rita", "Quiet-Harbor-Lantern-72"));
}

//! One scenario suite for every directory kind: the same administrator, SCIM, sweep and
//! bulk scenarios, through the real daemon, against each server lockbridge supports
//! (OpenLDAP with ppolicy, 389 Directory Server), each started by its own sandbox script.
//!
//! One sandbox per kind serves every scenario (a 389-ds instance takes seconds to create),
//! each scenario on users of its own; every scenario runs even when one before it failed,
//! and the test reports all failures at once.

mod harness;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::{Duration, Instant};

use harness::daemon::{Api, Daemon, Scim, create_token};
use harness::slapd::{Kind, Slapd};
use harness::smtp::MailSink;
use serde_json::{Value, json};

/// What differs between kinds for the scenarios: where the policies are, and what the
/// server does not do.
struct Profile {
    default_policy_dn: String,
    /// `None`: "never expires" is a flag on the account (Active Directory).
    never_expires_policy_dn: Option<String>,
    /// An administrator's reset is checked against the password history (Active
    /// Directory skips the history for resets: only a user's own change is checked).
    resets_check_history: bool,
    /// The `[scim]` section this kind needs (Active Directory's classes, and an
    /// attribute of its own schema for `externalId`).
    scim: &'static str,
}

impl Profile {
    fn of(dir: &Slapd) -> Profile {
        let never_expires = Some(format!("cn=never-expires,ou=policies,{}", dir.base_dn));
        match dir.kind {
            Kind::OpenLdap => Profile {
                default_policy_dn: format!("cn=default,ou=policies,{}", dir.base_dn),
                never_expires_policy_dn: never_expires,
                resets_check_history: true,
                scim: "",
            },
            Kind::Ds389 => Profile {
                default_policy_dn: "cn=config".into(),
                never_expires_policy_dn: never_expires,
                resets_check_history: true,
                scim: "",
            },
            // The domain object holds the default policy (maxPwdAge).
            Kind::ActiveDirectory => Profile {
                default_policy_dn: dir.base_dn.clone(),
                never_expires_policy_dn: None,
                resets_check_history: false,
                scim: "\n[scim]\nuser_object_classes = [\"user\"]\ngroup_object_classes = [\"group\"]\n\
                       external_id_attribute = \"adminDescription\"\n\
                       group_external_id_attribute = \"adminDescription\"\n",
            },
        }
    }
}

struct Env {
    profile: Profile,
    dir: Slapd,
    mail: MailSink,
    daemon: Daemon,
    scim_token: String,
}

/// Generated users the scenarios share out (`user000001` ...): each scenario owns some.
const USERS: usize = 20;
/// A password lockbridge's own rules accept (the scenarios lower them to their floor, 8
/// characters), which a directory asking for 10 refuses.
const NINE: &str = "Ab1-xyzw9";

impl Env {
    fn start(kind: Kind) -> Env {
        let dir = Slapd::start_kind(kind, USERS, &[]);
        let mail = MailSink::start();
        let profile = Profile::of(&dir);
        let config = format!(
            "\n[password_policy]\nmin_length = 8\nmin_character_classes = 1\nmin_strength_score = 0\n\
             \n[expiry]\nsource = \"directory\"\nnotify_days = [14, 7, 3, 1]\n\
             default_policy_dn = \"{}\"\n{}{}",
            profile.default_policy_dn,
            profile
                .never_expires_policy_dn
                .as_ref()
                .map(|dn| format!("never_expires_policy_dn = \"{dn}\"\n"))
                .unwrap_or_default(),
            profile.scim,
        );
        let daemon = Daemon::start_with(&dir, mail.port, &config);
        let scim_token = create_token(&daemon.config_path, "scenario-idp", "scim");
        Env {
            profile,
            dir,
            mail,
            daemon,
            scim_token,
        }
    }

    fn api(&self) -> Api {
        self.daemon.client()
    }

    fn scim(&self) -> Scim {
        self.daemon.scim(&self.scim_token)
    }

    fn admin(&self) -> &str {
        &self.daemon.admin_token
    }

    fn dn(&self, user: &str) -> String {
        self.dir.user_dn(user)
    }

    fn binds(&self, user: &str, password: &str) -> bool {
        self.dir.bind_as(&self.dn(user), password).success
    }

    async fn reset(&self, user: &str, body: Value) -> (u16, Value) {
        let (status, body, _) = self
            .api()
            .post(
                self.admin(),
                &format!("/api/v1/users/{user}/password-reset"),
                body,
            )
            .await;
        (status, body)
    }

    async fn user(&self, user: &str) -> Value {
        let (status, body) = self
            .api()
            .get(self.admin(), &format!("/api/v1/users/{user}"))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

type Scenario = for<'a> fn(&'a Env) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), |e| Box::pin($name(e)))),*]
    };
}

const SCENARIOS: &[(&str, Scenario)] = scenarios![
    admin_reset_generated_requires_a_change_on_the_next_bind,
    admin_reset_chosen_non_ascii_passwords_bind,
    directory_policy_refusals_keep_the_old_password,
    require_change_is_seen_on_the_next_bind,
    never_expires_round_trip,
    block_unblock_and_unlock,
    scim_create_patch_push_deactivate_delete,
    expiry_sweep_queues_the_due_notice_once,
    bulk_reset_of_a_group,
    administrators_sign_in_as_the_directory_says,
    users_change_their_own_password_on_the_page,
    user_names_the_directory_cannot_hold_are_refused_first,
    a_self_service_reset_ends_a_lockout,
];

async fn run_all(kind: Kind) {
    let env = Env::start(kind);
    let mut failures = Vec::new();
    for (name, scenario) in SCENARIOS {
        let started = Instant::now();
        let outcome = futures_catch(scenario(&env)).await;
        eprintln!(
            "{:?} / {name}: {} in {:?}",
            kind,
            if outcome.is_ok() { "ok" } else { "FAILED" },
            started.elapsed()
        );
        if let Err(why) = outcome {
            failures.push(format!("{name}: {why}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed on {kind:?}:\n\n{}\n\ndirectory log:\n{}\n\nlockbridge log (tail):\n{}",
        failures.len(),
        SCENARIOS.len(),
        failures.join("\n\n"),
        env.dir.log_tail(60),
        tail(&env.daemon.log(), 60),
    );
}

/// Runs a scenario, turning its panic into the panic's message.
async fn futures_catch(f: Pin<Box<dyn Future<Output = ()> + '_>>) -> Result<(), String> {
    struct Catch<'a>(Pin<Box<dyn Future<Output = ()> + 'a>>);
    impl Future for Catch<'_> {
        type Output = Result<(), String>;
        fn poll(
            mut self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Self::Output> {
            let inner = &mut self.0;
            match std::panic::catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
                Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
                Ok(std::task::Poll::Ready(())) => std::task::Poll::Ready(Ok(())),
                Err(panic) => std::task::Poll::Ready(Err(panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into()))),
            }
        }
    }
    Catch(f).await
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_on_openldap() {
    run_all(Kind::OpenLdap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_on_389ds() {
    run_all(Kind::Ds389).await;
}

/// Samba's AD domain controller (its sandbox needs root for the fixed LDAP ports).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_on_active_directory() {
    run_all(Kind::ActiveDirectory).await;
}

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

async fn admin_reset_generated_requires_a_change_on_the_next_bind(e: &Env) {
    let (status, body) = e
        .reset(
            "user000001",
            json!({"mode": "auto", "requireChangeAtNextSignIn": true, "showPassword": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let password = body["password"].as_str().expect("password shown");
    let bind = e.dir.bind_as(&e.dn("user000001"), password);
    assert!(bind.success, "the new password binds: {}", bind.output);
    assert!(
        bind.must_change,
        "the bind says the password must change: {}",
        bind.output
    );
    assert!(
        !e.binds("user000001", &e.dir.sample_password),
        "the old password no longer binds"
    );
    assert_eq!(e.user("user000001").await["mustChangePassword"], true);
}

async fn admin_reset_chosen_non_ascii_passwords_bind(e: &Env) {
    for password in [
        "Grüße-aus-Köln-42",
        "Déjà-vu-ßtraße-7",
        "Schlüssel-🔑-Mond-9",
    ] {
        let (status, body) = e
            .reset(
                "user000002",
                json!({"mode": "manual", "password": password, "requireChangeAtNextSignIn": false}),
            )
            .await;
        assert_eq!(status, 200, "{password:?}: {body}");
        let bind = e.dir.bind_as(&e.dn("user000002"), password);
        assert!(bind.success, "{password:?} binds: {}", bind.output);
        assert!(!bind.must_change, "no change asked: {}", bind.output);
    }
    assert_eq!(e.user("user000002").await["mustChangePassword"], false);
}

async fn directory_policy_refusals_keep_the_old_password(e: &Env) {
    let user = "user000003";
    // Shorter than the directory's minimum, within lockbridge's own rules.
    e.dir.set_min_password_length(10);
    let (status, body) = e
        .reset(user, json!({"mode": "manual", "password": NINE}))
        .await;
    e.dir.set_min_password_length(8);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "password_too_short", "{body}");
    assert!(
        e.binds(user, &e.dir.sample_password),
        "the old password still binds"
    );
    assert!(!body.to_string().contains(NINE), "echoed: {body}");

    // History: the directory keeps the last 5.
    for password in ["History-One-111", "History-Two-222"] {
        let (status, body) = e
            .reset(
                user,
                json!({"mode": "manual", "password": password, "requireChangeAtNextSignIn": false}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = e
        .reset(
            user,
            json!({"mode": "manual", "password": "History-One-111", "requireChangeAtNextSignIn": false}),
        )
        .await;
    if !e.profile.resets_check_history {
        // Active Directory checks the history on a user's own change only.
        assert_eq!(status, 200, "{body}");
        assert!(e.binds(user, "History-One-111"), "the reset took");
        return;
    }
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "password_in_history", "{body}");
    assert!(
        e.binds(user, "History-Two-222"),
        "the password before the refusal still binds"
    );
}

async fn require_change_is_seen_on_the_next_bind(e: &Env) {
    let user = "user000004";
    let path = format!("/api/v1/users/{user}/require-password-change");
    let (status, body, _) = e
        .api()
        .put(e.admin(), &path, json!({"required": true}))
        .await;
    assert_eq!(status, 200, "{body}");
    let bind = e.dir.bind_as(&e.dn(user), &e.dir.sample_password);
    assert!(
        bind.must_change,
        "the bind says the password must change: {}",
        bind.output
    );
    assert_eq!(e.user(user).await["mustChangePassword"], true);
    let (status, body, _) = e
        .api()
        .put(e.admin(), &path, json!({"required": false}))
        .await;
    assert_eq!(status, 200, "{body}");
    let bind = e.dir.bind_as(&e.dn(user), &e.dir.sample_password);
    assert!(
        bind.success && !bind.must_change,
        "cleared: {}",
        bind.output
    );
    assert_eq!(e.user(user).await["mustChangePassword"], false);
}

async fn never_expires_round_trip(e: &Env) {
    let user = "user000005";
    let path = format!("/api/v1/users/{user}/password-never-expires");
    assert_eq!(e.user(user).await["passwordNeverExpires"], false);
    let (status, body, _) = e
        .api()
        .put(e.admin(), &path, json!({"neverExpires": true}))
        .await;
    assert_eq!(status, 200, "{body}");
    let view = e.user(user).await;
    assert_eq!(view["passwordNeverExpires"], true, "{view}");
    let (status, body, _) = e
        .api()
        .put(e.admin(), &path, json!({"neverExpires": false}))
        .await;
    assert_eq!(status, 200, "{body}");
    let view = e.user(user).await;
    assert_eq!(view["passwordNeverExpires"], false, "{view}");
}

async fn block_unblock_and_unlock(e: &Env) {
    let user = "user000006";
    let dn = e.dn(user);
    let api = e.api();
    // Five failures lock the account (the sandboxes' policy).
    for _ in 0..5 {
        assert!(!e.dir.bind_as(&dn, "Wrong-password-1").success);
    }
    let locked = e.dir.bind_as(&dn, &e.dir.sample_password);
    assert!(!locked.success, "locked out: {}", locked.output);
    let view = e.user(user).await;
    assert_eq!(
        (view["locked"].clone(), view["signInBlocked"].clone()),
        (json!(true), json!(false)),
        "{view}"
    );
    let (status, body, _) = api
        .post(
            e.admin(),
            &format!("/api/v1/users/{user}/unlock"),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body["changed"].clone()),
        (200, json!(true)),
        "{body}"
    );
    assert!(e.binds(user, &e.dir.sample_password), "unlocked");

    let (status, body, _) = api
        .post(e.admin(), &format!("/api/v1/users/{user}/block"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(!e.binds(user, &e.dir.sample_password), "blocked");
    assert_eq!(e.user(user).await["signInBlocked"], true);
    let (status, body, _) = api
        .post(
            e.admin(),
            &format!("/api/v1/users/{user}/unlock"),
            json!({}),
        )
        .await;
    assert_eq!(status, 400, "unlock does not lift a block: {body}");
    let (status, body, _) = api
        .post(
            e.admin(),
            &format!("/api/v1/users/{user}/unblock"),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body["changed"].clone()),
        (200, json!(true)),
        "{body}"
    );
    assert!(e.binds(user, &e.dir.sample_password), "unblocked");
    assert_eq!(e.user(user).await["signInBlocked"], false);
}

async fn scim_create_patch_push_deactivate_delete(e: &Env) {
    let scim = e.scim();
    let first = "Provisioned-Ünïcode-31";
    let (status, created, _) = scim
        .post(
            "/Users",
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "scenario.scim",
                "externalId": "idp-4711",
                "name": {"givenName": "Sam", "familyName": "Scenario"},
                "displayName": "Sam Scenario",
                "emails": [{"value": "sam@example.org", "type": "work", "primary": true}],
                "password": first,
                "active": true
            }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["externalId"], "idp-4711", "{created}");
    let dn = e.dn("scenario.scim");
    assert!(
        e.dir.bind_as(&dn, first).success,
        "the pushed password binds"
    );

    let (status, found, _) = scim
        .get("/Users?filter=userName%20eq%20%22scenario.scim%22")
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["totalResults"], 1, "{found}");
    assert_eq!(found["Resources"][0]["id"], id.as_str());

    let (status, patched, _) = scim
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "replace", "path": "displayName", "value": "Samantha Scenario"}]}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["displayName"], "Samantha Scenario");

    let second = "Pushed-again-€uro-55";
    let (status, body, _) = scim
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "replace", "path": "password", "value": second}]}),
        )
        .await;
    assert!(status == 200 || status == 204, "{status}: {body}");
    assert!(
        e.dir.bind_as(&dn, second).success,
        "the pushed password binds"
    );
    assert!(
        !e.dir.bind_as(&dn, first).success,
        "the first one no longer"
    );

    for (active, binds) in [(false, false), (true, true)] {
        let (status, body, _) = scim
            .patch(
                &format!("/Users/{id}"),
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                       "Operations": [{"op": "replace", "path": "active", "value": active}]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["active"], active, "{body}");
        assert_eq!(
            e.dir.bind_as(&dn, second).success,
            binds,
            "active {active}: the bind agrees"
        );
    }

    let (status, body, _) = scim.delete(&format!("/Users/{id}")).await;
    assert_eq!(status, 204, "{body}");
    let (status, body, _) = scim.get(&format!("/Users/{id}")).await;
    assert_eq!(status, 404, "{body}");
}

async fn expiry_sweep_queues_the_due_notice_once(e: &Env) {
    let user = "user000007";
    // 85 days old under a 90-day policy: the 7-day notice is due.
    e.dir.backdate_password(&e.dn(user), 85);
    let api = e.api();
    let mut notified = Vec::new();
    for _ in 0..2 {
        let (status, started, _) = api
            .post(e.admin(), "/api/v1/sweeps", json!({"dryRun": false}))
            .await;
        assert_eq!(status, 202, "{started}");
        let id = started["id"].as_str().expect("id").to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        let run = loop {
            let (status, run) = api.get(e.admin(), &format!("/api/v1/sweeps/{id}")).await;
            if status == 200 && run["status"] != "running" {
                break run;
            }
            assert!(Instant::now() < deadline, "the sweep did not finish: {run}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(run["status"], "completed", "{run}");
        notified.push(run["notified"].clone());
    }
    assert_eq!(
        notified,
        vec![json!(1), json!(0)],
        "one notice, to {user} only, and never twice"
    );
    let to = format!("{user}@example.org");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mails: Vec<_> = e
            .mail
            .messages()
            .into_iter()
            .filter(|m| m.envelope_to.iter().any(|t| t.eq_ignore_ascii_case(&to)))
            .collect();
        if !mails.is_empty() {
            assert_eq!(mails.len(), 1, "{mails:?}");
            assert!(mails[0].text.contains('7'), "{}", mails[0].text);
            break;
        }
        assert!(Instant::now() < deadline, "no notice reached {to}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn bulk_reset_of_a_group(e: &Env) {
    let api = e.api();
    let staff = format!("cn=staff,{}", e.dir.groups_base);
    let (status, started, _) = api
        .post(
            e.admin(),
            "/api/v1/password-resets",
            json!({"group": staff, "mode": "auto", "requireChangeAtNextSignIn": true, "report": true}),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().expect("id").to_owned();
    assert_eq!(started["total"], 4, "bob, carol, dave, erin: {started}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let (status, job) = api.get(e.admin(), &format!("/api/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "{job}");
        if job["status"] == "completed" {
            break job;
        }
        assert!(Instant::now() < deadline, "the job did not finish: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job["done"], 4, "{job}");
    for user in ["bob", "carol", "dave", "erin"] {
        assert!(
            !e.binds(user, &e.dir.sample_password),
            "{user}'s old password no longer binds"
        );
        let view = e.user(user).await;
        assert_eq!(
            view["mustChangePassword"],
            true,
            "{user}: {view}\n{}",
            e.dir.ldapsearch_attrs(&e.dn(user), &["*", "+"])
        );
    }
    assert!(
        e.binds("alice", &e.dir.sample_password),
        "alice is not in staff"
    );
}

/// An administrator's session starts with a bind as that person: the directory's answer
/// (the Password Policy control, or Active Directory's `data 773`) decides.
async fn administrators_sign_in_as_the_directory_says(e: &Env) {
    let api = e.api();
    let sign_in = |password: &str| {
        let api = api.clone();
        let password = password.to_owned();
        async move {
            let (status, body, _) = api
                .post(
                    "",
                    "/api/v1/sessions",
                    json!({"userName": "alice", "password": password}),
                )
                .await;
            (status, body)
        }
    };
    let (status, body) = sign_in(&e.dir.sample_password).await;
    assert_eq!(status, 201, "alice signs in: {body}");
    assert!(body["token"].is_string(), "{body}");
    let (status, body) = sign_in("Wrong-password-1").await;
    assert_eq!(
        (status, body["code"].clone()),
        (401, json!("sign_in_refused")),
        "{body}"
    );
    // Must change: the right password is not enough for a session.
    let path = "/api/v1/users/alice/require-password-change";
    let (status, body, _) = api.put(e.admin(), path, json!({"required": true})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = sign_in(&e.dir.sample_password).await;
    let (cleared, _, _) = api.put(e.admin(), path, json!({"required": false})).await;
    assert_eq!(
        (status, body["code"].clone()),
        (403, json!("password_change_required")),
        "{body}"
    );
    assert_eq!(cleared, 200);
    let (status, body) = sign_in(&e.dir.sample_password).await;
    assert_eq!(status, 201, "alice signs in again: {body}");
}

/// `/change`: the user's own change, bound as the user (AD: delete + add `unicodePwd`),
/// clears a required change, takes non-ASCII passwords, and refuses a wrong current one.
async fn users_change_their_own_password_on_the_page(e: &Env) {
    let user = "user000004";
    let (status, body) = e
        .reset(
            user,
            json!({"mode": "manual", "password": "Grüße-aus-Köln-42", "requireChangeAtNextSignIn": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (browser, csrf) = page_browser(e, "/change").await;
    let change = |current: &'static str, new: &'static str| {
        let browser = browser.clone();
        let csrf = csrf.clone();
        let url = format!("{}/change", e.daemon.url);
        async move {
            let r = browser
                .post(url)
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("user_name", user),
                    ("current", current),
                    ("password", new),
                    ("confirm", new),
                ])
                .send()
                .await
                .expect("POST /change");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    let (status, page) = change("Not-The-Password-1", "Schlüssel-🔑-Mond-9").await;
    assert_eq!(status, 401, "{}", tail(&page, 20));
    assert!(e.binds(user, "Grüße-aus-Köln-42"));

    let (status, page) = change("Grüße-aus-Köln-42", "Schlüssel-🔑-Mond-9").await;
    assert_eq!(status, 200, "{}", tail(&page, 20));
    let bind = e.dir.bind_as(&e.dn(user), "Schlüssel-🔑-Mond-9");
    assert!(bind.success, "{}", bind.output);
    assert!(
        !bind.must_change,
        "the user's own change ends the required change: {}",
        bind.output
    );
    assert!(!e.binds(user, "Grüße-aus-Köln-42"));
    assert_eq!(e.user(user).await["mustChangePassword"], false);
}

/// A userName with a character Active Directory's sAMAccountName may not hold is refused
/// there before anything is written, saying which; the other servers take it.
async fn user_names_the_directory_cannot_hold_are_refused_first(e: &Env) {
    let name = "ada[lovelace]";
    let (status, body, _) = e
        .scim()
        .post(
            "/Users",
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": name,
                "name": {"givenName": "Ada", "familyName": "Lovelace"},
                "active": true
            }),
        )
        .await;
    if e.dir.kind == Kind::ActiveDirectory {
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["scimType"], "invalidValue", "{body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("may not contain `[`"), "{body}");
        let (_, found, _) = e
            .scim()
            .get("/Users?filter=userName%20eq%20%22ada%5Blovelace%5D%22")
            .await;
        assert_eq!(found["totalResults"], 0, "nothing was written: {found}");
    } else {
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().expect("id");
        let (status, _, _) = e.scim().delete(&format!("/Users/{id}")).await;
        assert_eq!(status, 204);
    }
}

/// A verified self-service reset also ends a lockout after failed sign-ins, on every
/// kind (Active Directory keeps `lockoutTime` after a password change unless told).
async fn a_self_service_reset_ends_a_lockout(e: &Env) {
    let user = "user000005";
    let dn = e.dn(user);
    e.dir.lock_out(&dn);
    assert!(e.dir.is_locked(&dn), "locked out before the reset");
    let (browser, csrf) = page_browser(e, "/reset").await;
    let post = |path: &'static str, form: Vec<(&'static str, String)>| {
        let browser = browser.clone();
        let url = format!("{}{path}", e.daemon.url);
        async move {
            let r = browser.post(url).form(&form).send().await.expect("POST");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    let (status, page) = post(
        "/reset",
        vec![("csrf", csrf.clone()), ("user_name", user.to_owned())],
    )
    .await;
    assert_eq!(status, 200, "{}", tail(&page, 20));
    let to = format!("{user}.personal@example.net");
    let code = e.mail.wait_for_code(&to, 1);
    let (status, page) = post("/reset/code", vec![("csrf", csrf.clone()), ("code", code)]).await;
    assert_eq!(status, 200, "{}", tail(&page, 20));
    let password = "Lantern-Ünder-Harbor-58";
    let (status, page) = post(
        "/reset/password",
        vec![
            ("csrf", csrf.clone()),
            ("password", password.to_owned()),
            ("confirm", password.to_owned()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{}", tail(&page, 20));
    assert!(!e.dir.is_locked(&dn), "the reset ended the lockout");
    assert!(e.binds(user, password));
}

/// A browser for the self-service pages: a cookie jar, and the CSRF token the page at
/// `path` gave it.
async fn page_browser(e: &Env, path: &str) -> (reqwest::Client, String) {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    let page = browser
        .get(format!("{}{path}", e.daemon.url))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("page");
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("CSRF field") + marker.len();
    let csrf = page[start..start + 43].to_owned();
    (browser, csrf)
}

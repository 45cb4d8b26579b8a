//! The self-service pages end to end over HTTP (a browser's cookies, forms and CSRF
//! tokens), against a real slapd with ppolicy and a real SMTP sink: forgotten password
//! with an emailed code, wrong and expired codes, a code replayed from another browser,
//! "contact an administrator" closed by a reset, changing a known (also expired)
//! password, rate limits, languages and security headers.

mod harness;

use std::time::Duration;

use harness::daemon::Daemon;
use harness::slapd::Slapd;
use harness::smtp::MailSink;
use serde_json::json;

const NEW_PASSWORD: &str = "Quiet-Harbor-Lantern-72";
const SECOND_PASSWORD: &str = "Velvet-Orchard-Compass-39";

struct Env {
    slapd: Slapd,
    mail: MailSink,
    daemon: Daemon,
}

fn env_with(extra: &str) -> Env {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let config = format!(
        "\n[selfservice]\nrequest_recipients = [\"helpdesk@example.org\"]\norganization = \"Example Corp\"\n{extra}\n"
    );
    let daemon = Daemon::start_with(&slapd, mail.port, &config);
    Env {
        slapd,
        mail,
        daemon,
    }
}

fn env() -> Env {
    env_with("")
}

/// One browser: its own cookie jar.
struct Browser {
    http: reqwest::Client,
    base: String,
    lang: &'static str,
}

struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    html: String,
}

impl Page {
    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self
            .html
            .find(marker)
            .unwrap_or_else(|| panic!("no CSRF field ({}): {}", self.status, self.html))
            + marker.len();
        let end = self.html[start..].find('"').expect("end of the CSRF value") + start;
        self.html[start..end].to_owned()
    }

    fn has(&self, text: &str) -> bool {
        self.html.contains(text)
    }
}

impl Browser {
    fn new(e: &Env) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .build()
                .expect("client"),
            base: e.daemon.url.clone(),
            lang: "en",
        }
    }

    async fn get(&self, path: &str) -> Page {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("accept-language", self.lang)
            .send()
            .await
            .expect("GET");
        Page {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            html: r.text().await.expect("body"),
        }
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("accept-language", self.lang)
            .form(form)
            .send()
            .await
            .expect("POST");
        Page {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            html: r.text().await.expect("body"),
        }
    }

    /// Opens /reset and submits `user`: the page that follows.
    async fn start_reset(&self, user: &str) -> (Page, String) {
        let start = self.get("/reset").await;
        assert_eq!(start.status, 200, "{}", start.html);
        let csrf = start.csrf();
        let page = self
            .post("/reset", &[("csrf", &csrf), ("user_name", user)])
            .await;
        (page, csrf)
    }
}

fn code_mailed_to(mail: &MailSink, to: &str, nth: usize) -> String {
    mail.wait_for_code(to, nth)
}

#[tokio::test]
async fn a_forgotten_password_is_reset_with_a_code_from_the_alternate_email() {
    let e = env();
    let b = Browser::new(&e);
    let (page, csrf) = b.start_reset("bob").await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.has("If bob has security info"), "{}", page.html);
    assert!(!page.has("example.net"), "{}", page.html);
    assert!(page.has("name=\"code\""));
    let code = code_mailed_to(&e.mail, "bob.personal@example.net", 1);
    assert_eq!(code.len(), 8);

    let page = b
        .post("/reset/code", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.has("Choose a new password"), "{}", page.html);

    // Both fields must match; the rules are checked before the directory is asked.
    let page = b
        .post(
            "/reset/password",
            &[
                ("csrf", &csrf),
                ("password", NEW_PASSWORD),
                ("confirm", "other"),
            ],
        )
        .await;
    assert_eq!(page.status, 422);
    assert!(page.has("different"), "{}", page.html);
    let page = b
        .post(
            "/reset/password",
            &[("csrf", &csrf), ("password", "short"), ("confirm", "short")],
        )
        .await;
    assert_eq!(page.status, 422);
    assert!(page.has("too short"), "{}", page.html);

    let page = b
        .post(
            "/reset/password",
            &[
                ("csrf", &csrf),
                ("password", NEW_PASSWORD),
                ("confirm", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.has("Your password was reset"), "{}", page.html);

    let dn = e.slapd.user_dn("bob");
    assert!(e.slapd.bind_as(&dn, NEW_PASSWORD).success);
    assert!(!e.slapd.bind_as(&dn, &e.slapd.sample_password).success);
    assert!(
        !e.slapd.bind_as(&dn, NEW_PASSWORD).must_change,
        "a self-service reset leaves nothing to change"
    );

    // The user is told at both addresses.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let notices: Vec<_> = e
            .mail
            .messages()
            .into_iter()
            .filter(|m| m.subject.contains("password was changed"))
            .flat_map(|m| m.to)
            .collect();
        if notices.len() >= 2 {
            assert!(notices.contains(&"bob@example.org".to_string()));
            assert!(notices.contains(&"bob.personal@example.net".to_string()));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no notice: {notices:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Audited with the method, never the code or the password.
    let (status, audit) = e
        .daemon
        .client()
        .get(
            &e.daemon.admin_token,
            "/api/v1/audit?action=password.self_service.reset",
        )
        .await;
    assert_eq!(status, 200);
    let record = &audit["records"][0];
    assert_eq!(record["target"], "bob");
    assert_eq!(record["outcome"], "success");
    assert_eq!(record["detail"]["verifiedWith"], json!(["email"]));
    e.daemon.assert_no_secrets(&[NEW_PASSWORD, &code]).await;

    // The flow is over: the code cannot be used again.
    let page = b
        .post("/reset/code", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(page.status, 400, "{}", page.html);
}

#[tokio::test]
async fn five_wrong_codes_end_the_verification() {
    let e = env();
    let b = Browser::new(&e);
    let (_, csrf) = b.start_reset("carol").await;
    let code = code_mailed_to(&e.mail, "carol.personal@example.net", 1);
    let wrong = if code == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    for left in (1..5).rev() {
        let page = b
            .post("/reset/code", &[("csrf", &csrf), ("code", wrong)])
            .await;
        assert_eq!(page.status, 422);
        assert!(page.has(&format!("({left} tries left)")), "{}", page.html);
    }
    let page = b
        .post("/reset/code", &[("csrf", &csrf), ("code", wrong)])
        .await;
    assert_eq!(page.status, 403);
    assert!(page.has("Too many wrong codes"), "{}", page.html);
    // Even the right code no longer works: the verification starts over.
    let page = b
        .post("/reset/code", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(page.status, 400);
    assert!(page.has("Start again"));
}

#[tokio::test]
async fn a_code_is_bound_to_the_browser_that_asked_for_it() {
    let e = env();
    let first = Browser::new(&e);
    let (_, _) = first.start_reset("dave").await;
    let code = code_mailed_to(&e.mail, "dave.personal@example.net", 1);
    let second = Browser::new(&e);
    let start = second.get("/reset").await;
    let page = second
        .post("/reset/code", &[("csrf", &start.csrf()), ("code", &code)])
        .await;
    assert_eq!(page.status, 400, "{}", page.html);
    assert!(page.has("Start again"));
    // A form without the page's CSRF token is refused outright.
    let page = second
        .post("/reset/code", &[("csrf", "forged"), ("code", &code)])
        .await;
    assert_eq!(page.status, 403);
}

#[tokio::test]
async fn an_expired_code_is_refused_and_a_new_one_works() {
    let e = env();
    let b = Browser::new(&e);
    let (_, csrf) = b.start_reset("erin").await;
    let code = code_mailed_to(&e.mail, "erin.personal@example.net", 1);
    // Ten minutes pass: move the code's end into the past, as the clock would.
    let db = e.daemon.dir.path().join("state").join("lockbridge.db");
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(
            "UPDATE selfservice_flows SET state = json_set(state, '$.pending.expires_at', \
             '2000-01-01T00:00:00Z')",
        )
        .output()
        .expect("sqlite3");
    assert!(out.status.success(), "{out:?}");
    let page = b
        .post("/reset/code", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(page.status, 410, "{}", page.html);
    assert!(page.has("has expired"), "{}", page.html);
    let page = b
        .post("/reset/send", &[("csrf", &csrf), ("method", "email")])
        .await;
    assert_eq!(page.status, 200, "{}", page.html);
    let fresh = code_mailed_to(&e.mail, "erin.personal@example.net", 2);
    let page = b
        .post("/reset/code", &[("csrf", &csrf), ("code", &fresh)])
        .await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.has("Choose a new password"));
}

#[tokio::test]
async fn unknown_users_and_users_without_methods_see_the_same_page_and_a_request_closes_on_reset() {
    let e = env();
    // dave loses his alternate address: nothing to verify him with.
    e.slapd.ldapmodify_as_root(&format!(
        "dn: {}\nchangetype: modify\ndelete: otherMailbox\n",
        e.slapd.user_dn("dave")
    ));
    let b = Browser::new(&e);
    let (unknown, _) = b.start_reset("nobody-here").await;
    let (dave, csrf) = b.start_reset("dave").await;
    assert_eq!(unknown.status, dave.status);
    assert_eq!(
        unknown.html.replace("nobody-here", "X"),
        dave.html
            .replace("dave", "X")
            .replace(&csrf, &unknown.csrf()),
        "the two pages must not differ but for the name"
    );
    assert!(dave.has("Contact an administrator"));

    // The unknown name's request goes nowhere, with the same answer.
    let page = b.post("/reset/contact-admin", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, 200);
    assert!(page.has("Your request was sent"));
    let request_mail = e.mail.wait_for_count(1, Duration::from_secs(15));
    assert_eq!(request_mail.len(), 1, "{request_mail:?}");
    assert_eq!(request_mail[0].to, vec!["helpdesk@example.org".to_string()]);
    assert!(request_mail[0].subject.contains("dave"));

    let api = e.daemon.client();
    let (status, open) = api
        .get(&e.daemon.admin_token, "/api/v1/reset-requests?status=open")
        .await;
    assert_eq!(status, 200, "{open}");
    assert_eq!(open["requests"].as_array().map(Vec::len), Some(1), "{open}");
    assert_eq!(open["requests"][0]["userName"], "dave");

    // Asking again while one is open mails nobody.
    let (_, csrf) = b.start_reset("dave").await;
    b.post("/reset/contact-admin", &[("csrf", &csrf)]).await;

    let (status, body, _) = api
        .post(
            &e.daemon.admin_token,
            "/api/v1/users/dave/password-reset",
            json!({"mode": "auto", "showPassword": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, open) = api
        .get(&e.daemon.admin_token, "/api/v1/reset-requests?status=open")
        .await;
    assert_eq!(open["requests"], json!([]));
    let (_, closed) = api
        .get(
            &e.daemon.admin_token,
            "/api/v1/reset-requests?status=closed",
        )
        .await;
    assert_eq!(closed["requests"][0]["closedBy"], "test-global-admin");
    assert_eq!(
        e.mail
            .messages()
            .iter()
            .filter(|m| m.subject.contains("reset requested"))
            .count(),
        1
    );
}

#[tokio::test]
async fn a_request_can_be_dismissed_with_a_reason() {
    let e = env();
    e.slapd.ldapmodify_as_root(&format!(
        "dn: {}\nchangetype: modify\ndelete: otherMailbox\n",
        e.slapd.user_dn("erin")
    ));
    let b = Browser::new(&e);
    let (_, csrf) = b.start_reset("erin").await;
    b.post("/reset/contact-admin", &[("csrf", &csrf)]).await;
    let api = e.daemon.client();
    let (_, open) = api
        .get(&e.daemon.admin_token, "/api/v1/reset-requests?status=open")
        .await;
    let id = open["requests"][0]["id"].as_str().expect("id").to_owned();
    let (status, body, _) = api
        .post(
            &e.daemon.admin_token,
            &format!("/api/v1/reset-requests/{id}/dismiss"),
            json!({"reason": ""}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body, _) = api
        .post(
            &e.daemon.admin_token,
            &format!("/api/v1/reset-requests/{id}/dismiss"),
            json!({"reason": "called erin: she found it"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "dismissed");
    assert_eq!(body["reason"], "called erin: she found it");
    let (status, _, _) = api
        .post(
            &e.daemon.admin_token,
            &format!("/api/v1/reset-requests/{id}/dismiss"),
            json!({"reason": "again"}),
        )
        .await;
    assert_eq!(status, 400, "only open requests can be dismissed");
}

#[tokio::test]
async fn an_administrator_with_one_method_cannot_reset_alone() {
    // No SMS gateway here: alice (an administrator) has only her alternate email, and
    // administrators must pass both methods.
    let e = env();
    let b = Browser::new(&e);
    let (page, _) = b.start_reset("alice").await;
    assert_eq!(page.status, 200);
    assert!(page.has("Contact an administrator"), "{}", page.html);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !e.mail
            .messages()
            .iter()
            .any(|m| m.subject.contains("security code")),
        "no code is sent to an administrator who cannot pass both methods"
    );
}

#[tokio::test]
async fn a_known_password_is_changed_also_when_it_has_expired() {
    let e = env();
    let b = Browser::new(&e);
    let form = b.get("/change").await;
    assert_eq!(form.status, 200);
    let csrf = form.csrf();
    let sample = e.slapd.sample_password.clone();

    let page = b
        .post(
            "/change",
            &[
                ("csrf", &csrf),
                ("user_name", "bob"),
                ("current", "wrong-password"),
                ("password", NEW_PASSWORD),
                ("confirm", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(page.status, 401, "{}", page.html);
    assert!(page.has("current password is wrong"), "{}", page.html);
    let page = b
        .post(
            "/change",
            &[
                ("csrf", &csrf),
                ("user_name", "nobody-here"),
                ("current", "wrong-password"),
                ("password", NEW_PASSWORD),
                ("confirm", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(page.status, 401, "an unknown user gets the same answer");

    let page = b
        .post(
            "/change",
            &[
                ("csrf", &csrf),
                ("user_name", "bob"),
                ("current", &sample),
                ("password", NEW_PASSWORD),
                ("confirm", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.has("Your password was changed"));
    assert!(
        e.slapd
            .bind_as(&e.slapd.user_dn("bob"), NEW_PASSWORD)
            .success
    );

    // carol's password expired 100 days ago (the policy allows 90, no grace login):
    // she cannot bind, and can still change it with the expired one.
    let carol = e.slapd.user_dn("carol");
    e.slapd.backdate_password(&carol, 100);
    assert!(!e.slapd.bind_as(&carol, &sample).success);
    let page = b
        .post(
            "/change",
            &[
                ("csrf", &csrf),
                ("user_name", "carol"),
                ("current", &sample),
                ("password", NEW_PASSWORD),
                ("confirm", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.html);
    let after = e.slapd.bind_as(&carol, NEW_PASSWORD);
    assert!(after.success && !after.must_change, "{}", after.output);

    // The directory's history still applies to a user's own change.
    let change = |current: &'static str, new: &'static str| {
        let b = &b;
        let csrf = csrf.clone();
        async move {
            b.post(
                "/change",
                &[
                    ("csrf", csrf.as_str()),
                    ("user_name", "bob"),
                    ("current", current),
                    ("password", new),
                    ("confirm", new),
                ],
            )
            .await
        }
    };
    let page = change(NEW_PASSWORD, SECOND_PASSWORD).await;
    assert_eq!(page.status, 200, "{}", page.html);
    let page = change(SECOND_PASSWORD, NEW_PASSWORD).await;
    assert_eq!(page.status, 422, "{}", page.html);
    assert!(page.has("used this password recently"), "{}", page.html);
    assert!(
        e.slapd
            .bind_as(&e.slapd.user_dn("bob"), SECOND_PASSWORD)
            .success
    );

    let (_, audit) = e
        .daemon
        .client()
        .get(
            &e.daemon.admin_token,
            "/api/v1/audit?action=password.changed",
        )
        .await;
    let outcomes: Vec<&str> = audit["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["outcome"].as_str())
        .collect();
    assert!(
        outcomes.contains(&"success") && outcomes.contains(&"refused"),
        "{audit}"
    );
}

#[tokio::test]
async fn attempts_are_rate_limited_per_account() {
    let e = env_with("starts_per_account_per_hour = 2");
    let b = Browser::new(&e);
    for _ in 0..2 {
        let (page, _) = b.start_reset("nobody-here").await;
        assert_eq!(page.status, 200);
    }
    let (page, _) = b.start_reset("Nobody-Here").await;
    assert_eq!(page.status, 429, "{}", page.html);
    let wait: u64 = page
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=3600).contains(&wait));
    // Another account is not affected.
    let (page, _) = b.start_reset("bob").await;
    assert_eq!(page.status, 200);
}

#[tokio::test]
async fn pages_speak_the_browser_language_and_send_strict_headers() {
    let e = env();
    let mut b = Browser::new(&e);
    b.lang = "fr-FR,fr;q=0.9,en;q=0.5";
    let page = b.get("/reset").await;
    assert!(page.has("<html lang=\"fr\">"));
    assert!(page.has("Récupérer votre compte"), "{}", page.html);
    let csp = page.headers["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert_eq!(page.headers["cache-control"], "no-store");
    let cookie = page.headers["set-cookie"].to_str().expect("cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let (page, _) = b.start_reset("bob").await;
    assert!(
        page.has("Si bob a des informations de sécurité"),
        "{}",
        page.html
    );
    b.lang = "de";
    assert!(b.get("/reset").await.has("Get back into your account"));
}

#[tokio::test]
async fn a_breached_password_is_refused_in_the_page_language() {
    use sha1::Digest;
    const BREACHED: &str = "Autumn-Garden-Lantern-58";
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("pwned.txt");
    let mut lines: Vec<String> = (0..500)
        .map(|i| hex::encode_upper(sha1::Sha1::digest(format!("filler-{i}"))) + ":3")
        .collect();
    lines.push(hex::encode_upper(sha1::Sha1::digest(BREACHED)) + ":42");
    lines.sort();
    std::fs::write(&list, lines.join("\r\n")).expect("list");
    let e = env_with(&format!(
        "\n[password_policy]\nbreached_passwords_file = \"{}\"\n",
        list.display()
    ));
    let mut b = Browser::new(&e);
    b.lang = "fr";
    let csrf = b.get("/change").await.csrf();
    let sample = e.slapd.sample_password.clone();
    let page = b
        .post(
            "/change",
            &[
                ("csrf", &csrf),
                ("user_name", "bob"),
                ("current", &sample),
                ("password", BREACHED),
                ("confirm", BREACHED),
            ],
        )
        .await;
    assert_eq!(page.status, 422, "{}", page.html);
    assert!(page.has("fuites de données"), "{}", page.html);
    assert!(e.slapd.bind_as(&e.slapd.user_dn("bob"), &sample).success);
}

fn sms_config(gateway: &harness::SmsGateway) -> String {
    format!(
        "\n[sms]\nkind = \"webhook\"\nurl = \"{}\"\nauth_header = \"{}\"\nauth_value = \"{}\"\n",
        gateway.webhook_url(),
        harness::sms::WEBHOOK_AUTH_HEADER,
        harness::sms::WEBHOOK_AUTH_VALUE
    )
}

#[tokio::test]
async fn an_administrator_passes_both_the_email_and_the_text_message_codes() {
    let gateway = harness::SmsGateway::start().await;
    let e = env_with(&sms_config(&gateway));
    let b = Browser::new(&e);
    let (page, csrf) = b.start_reset("alice").await;
    assert_eq!(page.status, 200, "{}", page.html);
    // The first step does not say that two are needed: that would tell who is an
    // administrator.
    assert!(!page.has("step 1 of 2"), "{}", page.html);
    let code = code_mailed_to(&e.mail, "alice.personal@example.net", 1);
    let page = b
        .post("/reset/code", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(
        page.has("step 2 of 2") && page.has("•••• 01"),
        "{}",
        page.html
    );
    // The first code is spent; the text message's code is the one asked for now.
    let page = b
        .post("/reset/code", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(page.status, 422, "{}", page.html);
    let texted = gateway.next_code_to("+15550101").await;
    let page = b
        .post("/reset/code", &[("csrf", &csrf), ("code", &texted)])
        .await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.has("Choose a new password"), "{}", page.html);
    let page = b
        .post(
            "/reset/password",
            &[
                ("csrf", &csrf),
                ("password", NEW_PASSWORD),
                ("confirm", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(
        e.slapd
            .bind_as(&e.slapd.user_dn("alice"), NEW_PASSWORD)
            .success
    );
    let (_, audit) = e
        .daemon
        .client()
        .get(
            &e.daemon.admin_token,
            "/api/v1/audit?action=password.self_service.reset",
        )
        .await;
    assert_eq!(
        audit["records"][0]["detail"]["verifiedWith"],
        json!(["email", "sms"])
    );
    e.daemon
        .assert_no_secrets(&[&code, &texted, NEW_PASSWORD])
        .await;
}

#[tokio::test]
async fn a_user_with_two_methods_chooses_one_where_security_info_is_revealed() {
    let gateway = harness::SmsGateway::start().await;
    let e = env_with(&format!(
        "reveal_security_info = true\n{}",
        sms_config(&gateway)
    ));
    let b = Browser::new(&e);
    let (page, csrf) = b.start_reset("bob").await;
    assert!(
        page.has("Where should we send a security code?"),
        "{}",
        page.html
    );
    let page = b
        .post("/reset/send", &[("csrf", &csrf), ("method", "sms")])
        .await;
    assert_eq!(page.status, 200, "{}", page.html);
    let texted = gateway.next_code_to("+15550102").await;
    let page = b
        .post("/reset/code", &[("csrf", &csrf), ("code", &texted)])
        .await;
    assert!(page.has("Choose a new password"), "{}", page.html);
    // A gateway that refuses is said plainly, and nothing is half done.
    let other = Browser::new(&e);
    gateway.fail_with(Some(500));
    let (_, csrf) = other.start_reset("carol").await;
    let page = other
        .post("/reset/send", &[("csrf", &csrf), ("method", "sms")])
        .await;
    assert_eq!(page.status, 503, "{}", page.html);
}

#[tokio::test]
async fn security_info_changes_only_after_the_new_address_proves_itself() {
    let gateway = harness::SmsGateway::start().await;
    let e = env_with(&sms_config(&gateway));
    let b = Browser::new(&e);
    let page = b.get("/security-info").await;
    let csrf = page.csrf();
    let sample = e.slapd.sample_password.clone();
    let page = b
        .post(
            "/security-info/sign-in",
            &[
                ("csrf", &csrf),
                ("user_name", "bob"),
                ("password", "wrong-password"),
            ],
        )
        .await;
    assert_eq!(page.status, 401, "{}", page.html);
    let page = b
        .post(
            "/security-info/sign-in",
            &[("csrf", &csrf), ("user_name", "bob"), ("password", &sample)],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.has("bob.personal@example.net"), "{}", page.html);

    let page = b
        .post(
            "/security-info/change",
            &[
                ("csrf", &csrf),
                ("kind", "email"),
                ("value", "not an address"),
            ],
        )
        .await;
    assert_eq!(page.status, 422);
    let page = b
        .post(
            "/security-info/change",
            &[
                ("csrf", &csrf),
                ("kind", "email"),
                ("value", "bob.new@example.net"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.html);
    let code = code_mailed_to(&e.mail, "bob.new@example.net", 1);
    let dn = e.slapd.user_dn("bob");
    assert_eq!(
        e.slapd.ldapsearch_attr(&dn, "otherMailbox"),
        vec!["bob.personal@example.net".to_string()],
        "nothing changes before the code comes back"
    );
    let page = b
        .post(
            "/security-info/verify",
            &[("csrf", &csrf), ("code", "00000000")],
        )
        .await;
    if code != "00000000" {
        assert_eq!(page.status, 422);
    }
    let page = b
        .post("/security-info/verify", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.has("was saved"), "{}", page.html);
    assert_eq!(
        e.slapd.ldapsearch_attr(&dn, "otherMailbox"),
        vec!["bob.new@example.net".to_string()]
    );

    // The mobile number, by text message to the new number.
    b.post(
        "/security-info/change",
        &[
            ("csrf", &csrf),
            ("kind", "mobile"),
            ("value", "+44 7700 900123"),
        ],
    )
    .await;
    let texted = gateway.next_code_to("+447700900123").await;
    let page = b
        .post(
            "/security-info/verify",
            &[("csrf", &csrf), ("code", &texted)],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert_eq!(
        e.slapd.ldapsearch_attr(&dn, "mobile"),
        vec!["+447700900123".to_string()]
    );

    let (_, audit) = e
        .daemon
        .client()
        .get(
            &e.daemon.admin_token,
            "/api/v1/audit?action=security_info.changed",
        )
        .await;
    assert_eq!(
        audit["records"].as_array().map(Vec::len),
        Some(2),
        "{audit}"
    );
    e.daemon.assert_no_secrets(&[&code, &texted, &sample]).await;
}

#[tokio::test]
async fn a_welcome_link_sets_the_first_password_once() {
    let e = env_with("welcome_links = true");
    let token = harness::daemon::create_token(&e.daemon.config_path, "idp", "scim");
    let scim = e.daemon.scim(&token);
    let (status, body, _) = scim
        .post(
            "/Users",
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "frank",
                "name": {"givenName": "Frank", "familyName": "Fisher"},
                "emails": [{"value": "frank@example.org", "type": "work", "primary": true}],
                "active": true
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let link = e
        .mail
        .wait_for_subject("Choose the password")
        .text
        .lines()
        .find(|l| l.contains("/welcome/"))
        .expect("the link")
        .trim()
        .to_owned();
    let path = &link[link.find("/welcome/").expect("path")..];
    let b = Browser::new(&e);
    let page = b.get(path).await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.has("frank"));
    let csrf = page.csrf();
    let page = b
        .post(
            path,
            &[
                ("csrf", &csrf),
                ("password", NEW_PASSWORD),
                ("confirm", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.html);
    let dn = format!("uid=frank,{}", e.slapd.users_base);
    assert!(e.slapd.bind_as(&dn, NEW_PASSWORD).success);
    // Twice: refused, and the password stays.
    let page = b
        .post(
            path,
            &[
                ("csrf", &csrf),
                ("password", SECOND_PASSWORD),
                ("confirm", SECOND_PASSWORD),
            ],
        )
        .await;
    assert_eq!(page.status, 410, "{}", page.html);
    assert_eq!(b.get(path).await.status, 410);
    assert!(e.slapd.bind_as(&dn, NEW_PASSWORD).success);
    assert!(
        !e.daemon.log().contains(&path["/welcome/".len()..]),
        "the link's token was logged"
    );
}

#[tokio::test]
async fn the_address_in_every_message_leads_to_the_pages() {
    let e = env();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = client
        .get(format!("{}/", e.daemon.url))
        .send()
        .await
        .expect("GET /");
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/reset");
}

/// The first page, its wrong-code answer and its resend answer, for one name, with the
/// name, the CSRF token and the tries counter left out.
async fn first_steps(e: &Env, name: &str) -> Vec<(u16, String)> {
    let b = Browser::new(e);
    let (page, csrf) = b.start_reset(name).await;
    let mut seen = vec![page];
    seen.push(
        b.post("/reset/code", &[("csrf", &csrf), ("code", "00000000")])
            .await,
    );
    seen.push(
        b.post("/reset/send", &[("csrf", &csrf), ("method", "same")])
            .await,
    );
    seen.push(
        b.post("/reset/send", &[("csrf", &csrf), ("method", "other")])
            .await,
    );
    seen.into_iter()
        .map(|p| {
            let html = p.html.replace(name, "NAME").replace(&csrf, "CSRF");
            (p.status, html)
        })
        .collect()
}

#[tokio::test]
async fn by_default_no_name_can_be_told_from_another_by_its_pages() {
    let gateway = harness::SmsGateway::start().await;
    let e = env_with(&sms_config(&gateway));
    // dave has no usable method left; alice is an administrator (two steps); erin is
    // blocked by an administrator; bob has two methods; nobody-here does not exist.
    e.slapd.ldapmodify_as_root(&format!(
        "dn: {}\nchangetype: modify\ndelete: otherMailbox\n-\ndelete: mobile\n",
        e.slapd.user_dn("dave")
    ));
    let api = e.daemon.client();
    let (status, body, _) = api
        .post(&e.daemon.admin_token, "/api/v1/users/erin/block", json!({}))
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let reference = first_steps(&e, "nobody-here").await;
    assert!(
        reference[0].1.contains("If NAME has security info"),
        "{}",
        reference[0].1
    );
    assert!(reference[1].1.contains("tries left"), "{}", reference[1].1);
    for name in ["bob", "dave", "alice", "erin"] {
        let seen = first_steps(&e, name).await;
        for (step, (theirs, ours)) in seen.iter().zip(&reference).enumerate() {
            assert_eq!(
                theirs, ours,
                "{name}, page {step}: differs from an unknown name's"
            );
        }
    }
    // Codes did go out to those who can use them: bob's first code by mail, his
    // "another way" by text message; none to dave, erin or the unknown name.
    code_mailed_to(&e.mail, "bob.personal@example.net", 1);
    gateway.next_code_to("+15550102").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for m in e.mail.messages() {
        if m.subject.contains("security code") {
            assert!(
                m.to.iter()
                    .all(|t| t.starts_with("bob.") || t.starts_with("alice.")),
                "{m:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_decoy_ends_after_as_many_wrong_codes_as_a_real_verification() {
    let e = env();
    for name in ["bob", "nobody-here"] {
        let b = Browser::new(&e);
        let (_, csrf) = b.start_reset(name).await;
        for left in (1..5).rev() {
            let page = b
                .post("/reset/code", &[("csrf", &csrf), ("code", "00000000")])
                .await;
            assert_eq!(page.status, 422, "{name}: {}", page.html);
            assert!(
                page.has(&format!("{left} tries left")),
                "{name}: {}",
                page.html
            );
        }
        // The real flow writes this last wrong code to the audit log and the decoy does
        // not: both answer no sooner than the floor.
        let asked = std::time::Instant::now();
        let page = b
            .post("/reset/code", &[("csrf", &csrf), ("code", "00000000")])
            .await;
        assert!(
            asked.elapsed() >= std::time::Duration::from_millis(400),
            "{name}: answered in {:?}",
            asked.elapsed()
        );
        assert_eq!(page.status, 403, "{name}: {}", page.html);
        assert!(page.has("Too many wrong codes"), "{name}: {}", page.html);
        // The decoy cannot reach the password step either.
        let page = b
            .post(
                "/reset/password",
                &[
                    ("csrf", &csrf),
                    ("password", NEW_PASSWORD),
                    ("confirm", NEW_PASSWORD),
                ],
            )
            .await;
        assert!(
            !page.has("Your password was reset"),
            "{name}: {}",
            page.html
        );
    }
}

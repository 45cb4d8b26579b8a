//! The self-service pages in headless Chromium (Debian's chromium + chromedriver, over
//! WebDriver): the walks a person makes, with every page saved as a screenshot at
//! 1280×800 and 390×844 in `target/screenshots/`. Codes come from the real SMTP sink and
//! from a local stand-in for the SMS gateway; passwords are checked with real binds.

mod harness;

use std::time::Duration;

use harness::browser::{Browser, Page};
use harness::daemon::Daemon;
use harness::slapd::Slapd;
use harness::sms::{SmsGateway, WEBHOOK_AUTH_HEADER, WEBHOOK_AUTH_VALUE};
use harness::smtp::MailSink;
use serde_json::json;

const NEW_PASSWORD: &str = "Quiet-Harbor-Lantern-72";
const SECOND_PASSWORD: &str = "Velvet-Orchard-Compass-39";

struct Env {
    slapd: Slapd,
    mail: MailSink,
    gateway: SmsGateway,
    daemon: Daemon,
}

async fn env() -> Env {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let gateway = SmsGateway::start().await;
    let config = format!(
        "\n[selfservice]\nrequest_recipients = [\"helpdesk@example.org\"]\norganization = \"Example Corp\"\n\
         welcome_links = true\n\n[sms]\nkind = \"webhook\"\nurl = \"{}\"\nauth_header = \"{}\"\nauth_value = \"{}\"\n",
        gateway.webhook_url(),
        WEBHOOK_AUTH_HEADER,
        WEBHOOK_AUTH_VALUE
    );
    let daemon = Daemon::start_with(&slapd, mail.port, &config);
    Env {
        slapd,
        mail,
        gateway,
        daemon,
    }
}

async fn open(browser: &Browser, e: &Env, path: &str) -> Page {
    let page = browser.new_context().await;
    page.goto(&format!("{}{path}", e.daemon.url)).await;
    page
}

#[tokio::test]
async fn an_administrator_resets_a_forgotten_password_with_both_codes() {
    let e = env().await;
    let browser = Browser::start().await;
    let page = open(&browser, &e, "/reset").await;
    assert!(page.text().await.contains("Get back into your account"));
    page.screenshot("reset-1-user-name").await;
    page.fill("User name", "alice").await;
    page.click_button("Next").await;
    // Until the first code is passed the page names no destination and no step count
    // (it is the page every name gets); the second step shows both.
    let text = page.text().await;
    assert!(
        text.contains("If alice has security info") && !text.contains("example.net"),
        "{text}"
    );
    page.screenshot("reset-2-email-code").await;

    // A wrong code first: the page says so and how many tries are left.
    page.fill("Security code", "1").await;
    page.click_button("Verify").await;
    assert!(page.text().await.contains("4 tries left"));
    page.screenshot("reset-2b-wrong-code").await;

    let code = e.mail.wait_for_code("alice.personal@example.net", 1);
    page.fill("Security code", &code).await;
    page.click_button("Verify").await;
    let text = page.text().await;
    assert!(
        text.contains("step 2 of 2") && text.contains("•••• 01"),
        "{text}"
    );
    page.screenshot("reset-3-sms-code").await;

    // The text message's code, replayed from another browser, is refused there.
    let texted = e.gateway.next_code_to("+15550101").await;
    let other = open(&browser, &e, "/reset").await;
    let csrf: String = other
        .client()
        .find(fantoccini::Locator::Css("input[name=csrf]"))
        .await
        .expect("csrf field")
        .attr("value")
        .await
        .expect("attribute")
        .expect("value");
    other
        .client()
        .execute(
            "const f = document.createElement('form'); f.method = 'post'; f.action = '/reset/code';\
             for (const [k, v] of [['csrf', arguments[0]], ['code', arguments[1]]]) {\
               const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i); }\
             document.body.appendChild(f); f.submit();",
            vec![json!(csrf), json!(texted)],
        )
        .await
        .expect("submit");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(other.text().await.contains("Your verification has ended"));
    other.screenshot("reset-3b-replayed-elsewhere").await;

    page.fill("Security code", &texted).await;
    page.click_button("Verify").await;
    assert!(page.text().await.contains("Choose a new password"));
    // The rules light up as the password is typed.
    page.fill("New password", NEW_PASSWORD).await;
    page.fill("Confirm the new password", NEW_PASSWORD).await;
    let met = page
        .client()
        .find_all(fantoccini::Locator::Css("#rules li.met"))
        .await
        .expect("rules");
    assert!(met.len() >= 3, "rules met as typed: {}", met.len());
    page.screenshot("reset-4-new-password").await;
    page.click_button("Save the password").await;
    assert!(page.text().await.contains("Your password was reset"));
    page.screenshot("reset-5-done").await;

    let dn = e.slapd.user_dn("alice");
    assert!(e.slapd.bind_as(&dn, NEW_PASSWORD).success);
    assert!(!e.slapd.bind_as(&dn, &e.slapd.sample_password).success);
}

#[tokio::test]
async fn unknown_users_are_told_to_contact_an_administrator_like_users_without_methods() {
    let e = env().await;
    e.slapd.ldapmodify_as_root(&format!(
        "dn: {}\nchangetype: modify\ndelete: otherMailbox\n-\ndelete: mobile\n",
        e.slapd.user_dn("dave")
    ));
    let browser = Browser::start().await;
    let unknown = open(&browser, &e, "/reset").await;
    unknown.fill("User name", "nobody-here").await;
    unknown.click_button("Next").await;
    let dave = open(&browser, &e, "/reset").await;
    dave.fill("User name", "dave").await;
    dave.click_button("Next").await;
    assert_eq!(
        unknown.text().await.replace("nobody-here", "X"),
        dave.text().await.replace("dave", "X")
    );
    dave.screenshot("contact-1-cannot-verify").await;
    dave.click_button("Contact an administrator").await;
    assert!(dave.text().await.contains("Your request was sent"));
    dave.screenshot("contact-2-sent").await;
    let mail = e.mail.wait_for_count(1, Duration::from_secs(15));
    assert!(mail[0].subject.contains("dave"));

    let api = e.daemon.client();
    let (_, body, _) = api
        .post(
            &e.daemon.admin_token,
            "/api/v1/users/dave/password-reset",
            json!({"mode": "auto", "showPassword": true}),
        )
        .await;
    assert!(body["password"].is_string(), "{body}");
    let (_, open_requests) = api
        .get(&e.daemon.admin_token, "/api/v1/reset-requests?status=open")
        .await;
    assert_eq!(open_requests["requests"], json!([]));

    // An expired code: ten minutes pass (the stored end of the code moves back, as the
    // clock would), the page says so, and a new code works.
    let page = open(&browser, &e, "/reset").await;
    page.fill("User name", "bob").await;
    page.click_button("Next").await;
    let code = e.mail.wait_for_code("bob.personal@example.net", 1);
    let db = e.daemon.dir.path().join("state").join("lockbridge.db");
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(
            "UPDATE selfservice_flows SET state = json_set(state, '$.pending.expires_at', \
             '2000-01-01T00:00:00Z') WHERE json_extract(state, '$.user_name') = 'bob'",
        )
        .output()
        .expect("sqlite3");
    assert!(out.status.success(), "{out:?}");
    page.fill("Security code", &code).await;
    page.click_button("Verify").await;
    assert!(page.text().await.contains("The security code has expired"));
    page.screenshot("reset-code-expired").await;
    page.click_button("Send a new code").await;
    let fresh = e.mail.wait_for_code("bob.personal@example.net", 2);
    page.fill("Security code", &fresh).await;
    page.click_button("Verify").await;
    assert!(page.text().await.contains("Choose a new password"));

    // Five wrong codes end a verification.
    let page = open(&browser, &e, "/reset").await;
    page.fill("User name", "erin").await;
    page.click_button("Next").await;
    // No choice of method before the first code (it would show where codes go): the
    // first goes to the alternate email, "Send the code another way" to the phone.
    page.screenshot("reset-first-code").await;
    for _ in 0..5 {
        page.fill("Security code", "1").await;
        page.click_button("Verify").await;
    }
    assert!(page.text().await.contains("Too many wrong codes"));
    page.screenshot("reset-too-many-codes").await;
}

#[tokio::test]
async fn expired_passwords_security_info_and_welcome_links() {
    let e = env().await;
    let browser = Browser::start().await;
    let carol = e.slapd.user_dn("carol");
    e.slapd.backdate_password(&carol, 100);
    let page = open(&browser, &e, "/change").await;
    page.screenshot("change-1-form").await;
    page.fill("User name", "carol").await;
    page.fill("Current password", &e.slapd.sample_password)
        .await;
    page.fill("New password", NEW_PASSWORD).await;
    page.fill("Confirm the new password", NEW_PASSWORD).await;
    page.click_button("Save the password").await;
    assert!(page.text().await.contains("Your password was changed"));
    page.screenshot("change-2-done").await;
    assert!(e.slapd.bind_as(&carol, NEW_PASSWORD).success);

    // Security info: a new mobile number, saved once its code comes back.
    let info = browser.new_context().await;
    info.goto(&format!("{}/security-info", e.daemon.url)).await;
    info.screenshot("info-1-sign-in").await;
    info.fill("User name", "bob").await;
    info.fill("Current password", &e.slapd.sample_password)
        .await;
    info.click_button("Sign in").await;
    info.screenshot("info-2-on-file").await;
    info.fill("Mobile phone", "+44 7700 900123").await;
    info.click_button("Send a code to this number").await;
    info.screenshot("info-3-code").await;
    let texted = e.gateway.next_code_to("+447700900123").await;
    info.fill("Security code", &texted).await;
    info.click_button("Verify").await;
    assert!(info.text().await.contains("was saved"));
    info.screenshot("info-4-saved").await;
    assert_eq!(
        e.slapd.ldapsearch_attr(&e.slapd.user_dn("bob"), "mobile"),
        vec!["+447700900123".to_string()]
    );

    // A welcome link, used twice.
    let token = harness::daemon::create_token(&e.daemon.config_path, "idp", "scim");
    let (status, body, _) = e
        .daemon
        .scim(&token)
        .post(
            "/Users",
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "frank",
                "name": {"givenName": "Frank", "familyName": "Fisher"},
                "emails": [{"value": "frank@example.org", "type": "work", "primary": true}]
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
    let welcome = browser.new_context().await;
    welcome.goto(&link).await;
    welcome.screenshot("welcome-1-choose").await;
    welcome.fill("New password", SECOND_PASSWORD).await;
    welcome
        .fill("Confirm the new password", SECOND_PASSWORD)
        .await;
    welcome.click_button("Save the password").await;
    assert!(welcome.text().await.contains("Your password was reset"));
    welcome.goto(&link).await;
    assert!(welcome.text().await.contains("This link can't be used"));
    welcome.screenshot("welcome-2-used").await;
    let frank = format!("uid=frank,{}", e.slapd.users_base);
    assert!(e.slapd.bind_as(&frank, SECOND_PASSWORD).success);
}

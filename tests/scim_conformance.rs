//! The SCIM conformance tester (PyPI `scim2-cli` → `scim2-tester`, pinned in
//! `scripts/lib/ensure-scim-tester`) against the real daemon backed by a real slapd.
//! It must report no failure: every check SUCCESS, nothing skipped.

mod harness;

use std::process::Command;

use harness::daemon::{Daemon, create_token};
use harness::repo_root;
use harness::slapd::Slapd;
use harness::smtp::MailSink;

#[tokio::test]
async fn scim2_tester_reports_no_failure() {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    // externalId must be stored for Users and Groups: the tester checks it round-trips.
    let daemon = Daemon::start_with(
        &slapd,
        mail.port,
        r#"
[scim]
user_object_classes = ["inetOrgPerson", "lockbridgeContact"]
external_id_attribute = "lockbridgeExternalId"
group_object_classes = ["groupOfNames", "lockbridgeContact"]
group_external_id_attribute = "lockbridgeExternalId"
"#,
    );
    let token = create_token(&daemon.config_path, "scim2-tester", "scim");
    let out = Command::new(repo_root().join("scripts/lib/scim-conformance"))
        .arg("--verbose")
        .arg(format!("{}/scim/v2", daemon.url))
        .env("LOCKBRIDGE_SCIM_TOKEN", &token)
        .output()
        .expect("run scripts/lib/scim-conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    let failed: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.starts_with("ERROR")
                || l.starts_with("CRITICAL")
                || l.starts_with("SKIPPED")
                || l.starts_with("DEVIATION")
        })
        .collect();
    assert!(
        out.status.success() && failed.is_empty(),
        "scim2-tester reported failures ({}):\n{}\n--- daemon log tail ---\n{}",
        failed.len(),
        failed.join("\n"),
        daemon
            .log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let successes = stdout.lines().filter(|l| l.starts_with("SUCCESS")).count();
    // 95 checks with the schema lockbridge publishes (fewer attributes than the RFC's).
    assert!(
        successes >= 90,
        "the tester ran its checks ({successes} successes)"
    );
    daemon.assert_no_secrets(&[&token]).await;
}

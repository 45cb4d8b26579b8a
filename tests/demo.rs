//! The README's first command, end to end: `scripts/demo` starts everything, and the
//! `curl` reset it prints makes bob's new password work in a real `ldapwhoami`, with
//! the ppolicy control saying the password must be changed. The SCIM conformance
//! tester then runs against the demo's own configuration, as an identity provider
//! would meet it.

mod harness;

use std::process::Command;

/// Runs `script` in bash with the demo's environment file loaded.
fn bash_with_env(env_file: &std::path::Path, script: &str) -> (bool, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -a; source '{}'; set +a; {script}",
            env_file.display()
        ))
        .output()
        .expect("bash runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The printed command starting with the line that contains `marker`, joining
/// backslash-continued lines.
fn printed_command(output: &str, marker: &str) -> String {
    let mut lines = output.lines().skip_while(|l| !l.contains(marker));
    let mut command = String::new();
    for line in lines.by_ref() {
        let line = line.trim();
        match line.strip_suffix('\\') {
            Some(head) => {
                command.push_str(head);
                command.push(' ');
            }
            None => {
                command.push_str(line);
                break;
            }
        }
    }
    assert!(
        !command.is_empty(),
        "`{marker}` not printed by the demo:\n{output}"
    );
    command
}

#[test]
fn demo_prints_a_reset_that_works_in_a_real_bind() {
    demo_on(&[], true);
}

/// `scripts/demo --directory 389ds`: the same printed commands work on 389-ds, and
/// scim2-tester passes against that demo's configuration.
#[test]
fn demo_on_389ds_prints_a_reset_that_works_in_a_real_bind() {
    demo_on(&["--directory", "389ds"], true);
}

/// `scripts/demo --directory active-directory`: a Samba AD domain controller (root
/// only), where users are named by cn and a bind is checked with a search.
#[test]
fn demo_on_active_directory_prints_a_reset_that_works_in_a_real_bind() {
    demo_on(&["--directory", "active-directory"], true);
}

fn demo_on(directory: &[&str], scim: bool) {
    let active_directory = directory.contains(&"active-directory");
    let dir = harness::temp_dir("lockbridge-demo-");
    let demo_dir = dir.path().join("demo");
    let root = harness::repo_root();
    let out = Command::new(root.join("scripts/demo"))
        .arg("--background")
        .args(directory)
        .env("LOCKBRIDGE_BIN", harness::daemon::BIN)
        .env("LOCKBRIDGE_DEMO_DIR", &demo_dir)
        .env(
            "LOCKBRIDGE_DEMO_PORT",
            harness::daemon::free_port().to_string(),
        )
        .current_dir(&root)
        .output()
        .expect("scripts/demo runs");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let stop = || {
        let _ = Command::new(root.join("scripts/demo"))
            .arg("stop")
            .env("LOCKBRIDGE_DEMO_DIR", &demo_dir)
            .output();
    };
    if !out.status.success() {
        stop();
        panic!(
            "scripts/demo failed:\n{printed}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let env_file = demo_dir.join("demo.env");
    let env_text = std::fs::read_to_string(&env_file).expect("demo.env written");
    for key in [
        "LOCKBRIDGE_URL=",
        "ADMIN_TOKEN=",
        "LDAP_URL=",
        "LDAP_CA_FILE=",
        "MAIL_DIR=",
    ] {
        assert!(env_text.contains(key), "{key} missing from demo.env");
    }

    let reset = printed_command(&printed, "curl -s -X POST");
    let (ok, reply) = bash_with_env(&env_file, &reset);
    let password = serde_json::from_str::<serde_json::Value>(reply.trim())
        .ok()
        .and_then(|v| v["password"].as_str().map(str::to_string));
    let Some(password) = password.filter(|_| ok) else {
        stop();
        panic!("the printed reset did not return a password: {reply}");
    };

    let bind_command =
        printed_command(&printed, "PASTE-PASSWORD").replace("PASTE-PASSWORD", &password);
    let (ok, bind) = bash_with_env(&env_file, &bind_command);
    // The printed sweep plan: 80 days on, every sample user is due for the 14-day notice.
    let sweep = printed_command(&printed, "sweep --config");
    let (sweep_ok, plan) = bash_with_env(&env_file, &sweep);
    let scim_outcome = scim.then(|| {
        // The printed SCIM provisioning, then the printed filter finds the new user.
        let created = bash_with_env(
            &env_file,
            &printed_command(&printed, "application/scim+json"),
        );
        let found = bash_with_env(&env_file, &printed_command(&printed, "--data-urlencode"));
        let frank_binds = bash_with_env(
            &env_file,
            if active_directory {
                "LDAPTLS_CACERT=$LDAP_CA_FILE ldapsearch -H $LDAP_URL -x -D CN=frank,$LDAP_USERS_BASE -w 'Fr4nk-Demo-Passw0rd' -s base -b '' 1.1"
            } else {
                "LDAPTLS_CACERT=$LDAP_CA_FILE ldapwhoami -H $LDAP_URL -x -D uid=frank,$LDAP_USERS_BASE -w 'Fr4nk-Demo-Passw0rd'"
            },
        );
        // scim2-tester against the demo's configuration (not the tests' own): externalId,
        // the whole User schema and Groups must round-trip with what the demo ships.
        let conformance = bash_with_env(
            &env_file,
            &format!(
                "LOCKBRIDGE_SCIM_TOKEN=$SCIM_TOKEN '{}' --verbose \"$LOCKBRIDGE_URL/scim/v2\"",
                root.join("scripts/lib/scim-conformance").display()
            ),
        );
        (created, found, frank_binds, conformance)
    });
    let mail_count = std::fs::read_dir(demo_dir.join("mail/messages"))
        .map(|d| d.count())
        .unwrap_or(0);
    stop();
    if let Some(((scim_ok, created), (found_ok, found), frank_binds, conformance)) = scim_outcome {
        let (conformance_ok, conformance) = conformance;
        let failures: Vec<&str> = conformance
            .lines()
            .filter(|l| {
                ["ERROR", "CRITICAL", "SKIPPED", "DEVIATION"]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .collect();
        assert!(
            conformance_ok && failures.is_empty(),
            "scim2-tester against the demo reported failures ({}):\n{}",
            failures.len(),
            failures.join("\n")
        );
        assert!(
            conformance
                .lines()
                .filter(|l| l.starts_with("SUCCESS"))
                .count()
                >= 90,
            "the tester ran its checks:\n{conformance}"
        );
        assert!(
            scim_ok && created.contains("\"userName\":\"frank\""),
            "{created}"
        );
        assert!(found_ok && found.contains("\"totalResults\":1"), "{found}");
        assert!(
            frank_binds.0,
            "the pushed password works: {}",
            frank_binds.1
        );
    } else {
        assert!(
            !printed.contains("application/scim+json"),
            "no SCIM commands where SCIM is off:\n{printed}"
        );
    }
    // 389-ds accepts the bind, then refuses the Who-am-I until the password is changed;
    // Active Directory refuses the bind itself, saying why (data 773).
    assert!(
        ok || bind.contains("ldap_bind: Success (0)") || bind.contains("data 773"),
        "the bind with the new password failed: {bind}"
    );
    assert!(
        bind.contains("Password must be changed") || bind.contains("data 773"),
        "the directory did not say the password must change: {bind}"
    );
    assert!(mail_count <= 1, "at most the one message to the helpdesk");
    assert!(sweep_ok, "the printed sweep failed: {plan}");
    assert!(
        plan.lines()
            .any(|l| l.starts_with("carol") && l.contains("t14") && l.contains("would-queue")),
        "{plan}"
    );
    // The demo is gone after `scripts/demo stop`.
    let (_, health) = bash_with_env(
        &env_file,
        "curl -s -o /dev/null -w '%{http_code}' --max-time 2 \"$LOCKBRIDGE_URL/healthz\"",
    );
    assert_ne!(health.trim(), "200", "the daemon still answers after stop");
}

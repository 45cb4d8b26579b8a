//! The command line as an operator meets it: check-config, tokens, exit codes.

mod harness;

use harness::daemon::{run_cli, write_config};
use harness::slapd::{Kind, Slapd};
use harness::smtp::MailSink;

#[test]
fn check_config_reports_each_component() {
    let mut slapd = Slapd::start();
    let mut mail = MailSink::start();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("state")).expect("state");
    let config = write_config(dir.path(), &slapd, mail.port, 1, "");
    let (code, out, err) = run_cli(&config, &["check-config"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    for component in [
        "configuration",
        "directory: ok",
        "mail: ok",
        "templates: ok",
        "store: ok",
        // The sandbox loads lockbridge's LDAP schema.
        "scim: ok: every attribute of the served SCIM schema has a home",
        // ... and syncprov, with no limit on the service account.
        "password pushes: ok: password pushes will read a copy the directory keeps current (5 users",
    ] {
        assert!(out.contains(component), "`{component}` missing:\n{out}");
    }

    // With the directory and the relay down, it says which is failing and exits 69.
    slapd.stop();
    mail.stop();
    let (code, out, _) = run_cli(&config, &["check-config"]);
    assert_eq!(code, 69, "{out}");
    assert!(out.contains("directory: FAILED"), "{out}");
    assert!(out.contains("mail: FAILED"), "{out}");
}

/// A service account that slapd limits (its default size limit is 500 entries) would
/// have its follower's refresh ended: check-config says so, and which line lifts it.
#[test]
fn check_config_warns_when_a_limit_would_end_the_follower() {
    let slapd = Slapd::start_with_service_limits("size=2");
    let mail = MailSink::start();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("state")).expect("state");
    let config = write_config(dir.path(), &slapd, mail.port, 1, "");
    let (code, out, err) = run_cli(&config, &["check-config"]);
    // Pushes still work (each searches first): a warning, not a failure.
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("password pushes: "))
        .unwrap_or_else(|| panic!("no password pushes line:\n{out}"));
    assert!(line.contains("ok: WARNING"), "{line}");
    assert!(line.contains("size limit"), "{line}");
    assert!(
        line.contains(&format!("limits dn.exact=\"{}\"", slapd.service_dn)),
        "{line}"
    );
}

/// A directory of another kind than `directory.kind` says: check-config names the
/// server and the setting to use, and is content once it is set.
#[test]
fn check_config_names_the_directory_kind_the_server_is() {
    let ds = Slapd::start_kind(Kind::Ds389, 0, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("state")).expect("state");
    let config = write_config(dir.path(), &ds, 25, 1, "");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("kind = \"389ds\"", "kind = \"openldap\""),
    )
    .expect("rewrite config");
    let (code, out, _) = run_cli(&config, &["check-config"]);
    assert_eq!(code, 69, "{out}");
    assert!(
        out.contains("directory: FAILED")
            && out.contains("389 Project")
            && out.contains("set kind = \"389ds\""),
        "{out}"
    );
    std::fs::write(&config, text).expect("restore config");
    let (_, out, _) = run_cli(&config, &["check-config"]);
    assert!(out.contains("directory: ok"), "{out}");
}

/// Active Directory (a Samba domain controller, which has no Who-am-I): check-config
/// binds, recognises it, and says which kind to set when the configuration says another.
#[test]
fn check_config_recognises_active_directory() {
    let ad = Slapd::start_kind(Kind::ActiveDirectory, 0, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("state")).expect("state");
    let config = write_config(dir.path(), &ad, 25, 1, "\n[scim]\nenabled = false\n");
    let (_, out, _) = run_cli(&config, &["check-config"]);
    assert!(out.contains("directory: ok"), "{out}");
    assert!(
        out.contains("bound as CN=lockbridge,OU=services"),
        "the bind DN stands in for Who-am-I: {out}"
    );
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("kind = \"active-directory\"", "kind = \"openldap\""),
    )
    .expect("rewrite config");
    let (code, out, _) = run_cli(&config, &["check-config"]);
    assert_eq!(code, 69, "{out}");
    assert!(
        out.contains("directory: FAILED") && out.contains("set kind = \"active-directory\""),
        "{out}"
    );
}

#[test]
fn wrong_service_password_is_named_by_check_config() {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &slapd, mail.port, 1, "");
    std::fs::write(&slapd.service_password_file, "wrong-password").expect("overwrite");
    let (code, out, _) = run_cli(&config, &["check-config"]);
    assert_eq!(code, 69, "{out}");
    assert!(out.contains("directory: FAILED"), "{out}");
    assert!(
        out.contains("bind_password") || out.contains("credentials"),
        "{out}"
    );
    assert!(!out.contains("wrong-password"));
}

#[test]
fn bad_configuration_is_one_clear_line_and_exit_78() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "[directory]\nurl = \"ldaps://x\"\nbind_dn = \"cn=x\"\nbind_password = \"p\"\nusers_base = \"dc=x\"\npool_size = 0\n[security]\nmaster_key = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n",
            "directory.pool_size",
        ),
        (
            "[directory]\nurl = \"http://x\"\nbind_dn = \"cn=x\"\nbind_password = \"p\"\nusers_base = \"dc=x\"\n[security]\nmaster_key = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n",
            "directory.url",
        ),
        (
            "[directory]\nurl = \"ldaps://x\"\nbind_dn = \"cn=x\"\nbind_password = \"p\"\nusers_base = \"dc=x\"\n",
            "security.master_key",
        ),
        ("[server]\nlisten = \"nowhere\"\n", "directory"),
        (
            // No administrator group and no decision that there is none: nobody would
            // be protected from a password admin or a SCIM token.
            "[directory]\nurl = \"ldaps://x\"\nbind_dn = \"cn=x\"\nbind_password = \"p\"\nusers_base = \"dc=x\"\n[security]\nmaster_key = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n",
            "directory.admin_group_dns",
        ),
        (
            // Temporary passwords in clear text to another host.
            "[directory]\nurl = \"ldaps://x\"\nbind_dn = \"cn=x\"\nbind_password = \"p\"\nusers_base = \"dc=x\"\nadmin_group_dns = [\"cn=admins,dc=x\"]\n[mail]\nrelay = \"mail.example.org\"\nsecurity = \"none\"\n[security]\nmaster_key = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n",
            "mail.security",
        ),
    ];
    for (text, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).expect("write");
        for cmd in ["check-config", "serve"] {
            let (code, _, err) = run_cli(&path, &[cmd]);
            assert_eq!(code, 78, "{cmd} with {key}: {err}");
            assert!(err.contains(key), "{cmd}: `{key}` not named in: {err}");
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
            assert!(!err.contains("p\""), "{err}");
        }
    }
    let (code, _, err) = run_cli(std::path::Path::new("/nonexistent.toml"), &["serve"]);
    assert_eq!(code, 78);
    assert!(err.contains("/nonexistent.toml"), "{err}");
}

#[test]
fn tokens_are_shown_once_and_listed_without_secrets() {
    let slapd = Slapd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &slapd, 25, 1, "");
    let (code, token, err) = run_cli(
        &config,
        &["token", "create", "--name", "ops", "--role", "global-admin"],
    );
    assert_eq!(code, 0, "{err}");
    let token = token.trim();
    assert!(token.starts_with("lbt_") && token.len() > 40, "{token}");
    assert!(!err.contains(token), "the token goes to stdout only");

    let (code, _, err) = run_cli(
        &config,
        &["token", "create", "--name", "ops", "--role", "global-admin"],
    );
    assert_eq!(code, 64);
    assert!(err.contains("exists already"), "{err}");
    let (code, _, err) = run_cli(
        &config,
        &["token", "create", "--name", "x", "--role", "root"],
    );
    assert_eq!(code, 64);
    assert!(err.contains("global-admin"), "known roles listed: {err}");

    let (code, list, _) = run_cli(&config, &["token", "list"]);
    assert_eq!(code, 0);
    assert!(list.contains("ops") && list.contains("global-admin"));
    assert!(!list.contains(token));
    let (code, _, _) = run_cli(&config, &["token", "revoke", "--name", "ops"]);
    assert_eq!(code, 0);
    let (code, _, err) = run_cli(&config, &["token", "revoke", "--name", "ops"]);
    assert_eq!(code, 64, "{err}");
    // The store never holds the token itself.
    let db = std::fs::read(dir.path().join("state").join("lockbridge.db")).expect("db");
    assert!(!String::from_utf8_lossy(&db).contains(token));
}

/// `reset`, `bulk-reset` and `force-change` as an operator runs them: passwords printed
/// or written once to a private file, a summary, refusals listed, usage mistakes named.
#[test]
fn reset_bulk_reset_and_force_change_from_the_command_line() {
    use std::os::unix::fs::PermissionsExt;
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &slapd, mail.port, 1, "");

    let (code, out, err) = run_cli(&config, &["reset", "bob"]);
    assert_eq!(code, 0, "{err}");
    let password = out.trim();
    assert!(password.len() >= 12, "printed once: {out:?}");
    let bind = slapd.bind_as(&slapd.user_dn("bob"), password);
    assert!(bind.success && bind.must_change, "{}", bind.output);
    let (code, _, err) = run_cli(&config, &["reset", "nobody-here"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("nobody-here"), "{err}");

    let report = dir.path().join("staff.csv");
    let staff = format!("cn=staff,{}", slapd.groups_base);
    let (code, out, err) = run_cli(
        &config,
        &[
            "bulk-reset",
            "--group",
            &staff,
            "--report",
            report.to_str().expect("path"),
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("done") && out.contains("4"), "{out}");
    let mode = std::fs::metadata(&report)
        .expect("report")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let csv = std::fs::read_to_string(&report).expect("csv");
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 4, "{csv}");
    for row in &rows {
        let bind = slapd.bind_as(&slapd.user_dn(row[0]), row[3]);
        assert!(
            bind.success && bind.must_change,
            "{}: {}",
            row[0],
            bind.output
        );
    }
    // The report is never overwritten, and passwords are never lost silently.
    let (code, _, err) = run_cli(
        &config,
        &[
            "bulk-reset",
            "--group",
            &staff,
            "--report",
            report.to_str().expect("path"),
        ],
    );
    assert_eq!(code, 64, "{err}");
    let (code, _, err) = run_cli(&config, &["bulk-reset", "--all"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--report"), "{err}");

    let (code, out, err) = run_cli(
        &config,
        &["force-change", "--users", "carol,dave", "--undo"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let carol = rows.iter().find(|r| r[0] == "carol").expect("carol");
    assert!(!slapd.bind_as(&slapd.user_dn("carol"), carol[3]).must_change);
    let (code, _, err) = run_cli(&config, &["force-change", "--all", "--group", &staff]);
    assert_eq!(code, 64, "{err}");
}

/// The breached-password index: check-config says when it is missing, `breached-index
/// build` names a malformed line, builds it, and check-config is then content.
#[test]
fn breached_index_is_built_from_the_command_line_and_reported() {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("state")).expect("state");
    let list = dir.path().join("pwned.txt");
    std::fs::write(
        &list,
        "000000005AD76BD555C1D6D771DE417A4B87E4B4:10\r\nnot a hash\r\n",
    )
    .expect("list");
    let config = write_config(
        dir.path(),
        &slapd,
        mail.port,
        1,
        &format!(
            "[password_policy]\nbreached_passwords_file = \"{}\"\n",
            list.display()
        ),
    );
    let (_, out, _) = run_cli(&config, &["check-config"]);
    assert!(
        out.contains("breached passwords: ok: ")
            && out.contains("has no index yet; it is small enough to be indexed at start"),
        "{out}"
    );

    let (code, out, err) = run_cli(&config, &["breached-index", "build"]);
    assert_eq!(code, 65, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("line 2 is not a SHA-1 hash"), "{err}");
    assert!(!dir.path().join("state/breached-passwords.index").exists());

    std::fs::write(
        &list,
        "000000005AD76BD555C1D6D771DE417A4B87E4B4:10\r\n\
         7C4A8D09CA3762AF61E59520943DC26494F8941B:24230577\r\n",
    )
    .expect("list");
    let (code, out, err) = run_cli(&config, &["breached-index", "build"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("2 hashes from 2 lines indexed"), "{out}");
    let (code, out, _) = run_cli(&config, &["check-config"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("breached passwords: ok: ") && out.contains("2 hashes indexed"),
        "{out}"
    );

    // A changed list makes the index stale.
    std::fs::write(&list, "7C4A8D09CA3762AF61E59520943DC26494F8941B\n").expect("list");
    let (_, out, _) = run_cli(&config, &["check-config"]);
    assert!(out.contains("changed since its index was built"), "{out}");
}

use std::io::Write;

use super::*;

const KEY_B64: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(text.as_bytes()).expect("write");
    path
}

fn minimal(dir: &Path, extra: &str) -> PathBuf {
    write(dir, "bind-password", "s3rvice\n");
    write(
        dir,
        "lockbridge.toml",
        &format!(
            r#"
[server]
state_dir = "state"
[security]
master_key = "{KEY_B64}"
[directory]
url = "ldaps://ldap.example.org"
bind_dn = "cn=lockbridge,dc=example,dc=org"
bind_password_file = "bind-password"
users_base = "ou=people,dc=example,dc=org"
admin_group_dns = ["cn=admins,ou=groups,dc=example,dc=org"]
{extra}
"#
        ),
    )
}

fn load_with(path: &Path, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    load(
        path,
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

#[test]
fn minimal_file_gets_documented_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = load_with(&minimal(dir.path(), ""), &[]).expect("loads");
    assert_eq!(cfg.directory.user_name_attribute, "uid");
    assert_eq!(cfg.directory.pool_size, 8);
    assert_eq!(cfg.password_policy.min_length, 12);
    assert_eq!(cfg.directory_bind_password.expose(), "s3rvice");
    assert_eq!(
        cfg.store_path,
        dir.path().join("state").join("lockbridge.db")
    );
    assert_eq!(cfg.master_key.expose(), b"0123456789abcdef0123456789abcdef");
    assert_eq!(cfg.server.header_read_timeout_secs, 10);
    assert_eq!(cfg.server.idle_timeout_secs, 60);
    assert_eq!(cfg.server.max_connections, 512);
    assert_eq!(cfg.outbox.retry_window_hours, 72);
    assert_eq!(cfg.outbox.max_attempts, 0);
    assert!(!cfg.scim.allow_writes_to_administrators);
}

#[test]
fn debug_output_never_shows_the_master_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = load_with(&minimal(dir.path(), ""), &[]).expect("loads");
    let shown = format!("{cfg:?}");
    // The key is the ASCII text 0123456789abcdef twice: its bytes start 48, 49, 50.
    assert!(!shown.contains("48, 49, 50"), "{shown}");
    assert!(!shown.contains(KEY_B64));
    assert!(!shown.contains("0123456789abcdef"));
    assert!(!shown.contains("s3rvice"), "nor the bind password");
}

#[test]
fn an_empty_admin_group_list_must_be_a_decision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = minimal(dir.path(), "");
    let text = std::fs::read_to_string(&path).expect("read");
    let without = text.replace(
        "admin_group_dns = [\"cn=admins,ou=groups,dc=example,dc=org\"]",
        "",
    );
    std::fs::write(&path, &without).expect("write");
    let err = load_with(&path, &[]).expect_err("refused").to_string();
    assert!(err.contains("directory.admin_group_dns"), "{err}");
    assert!(
        err.contains("no_admin_groups = true"),
        "says what to do: {err}"
    );
    let cfg = load_with(&path, &[("LOCKBRIDGE__DIRECTORY__NO_ADMIN_GROUPS", "true")])
        .expect("an explicit decision is accepted");
    assert!(cfg.directory.admin_group_dns.is_empty());
    // Both at once is a contradiction.
    let both = minimal(dir.path(), "no_admin_groups = true");
    let err = load_with(&both, &[]).expect_err("refused").to_string();
    assert!(err.contains("directory.no_admin_groups"), "{err}");
}

#[rstest::rstest]
#[case::remote("relay = \"mail.example.org\"\nsecurity = \"none\"", false)]
#[case::remote_ip("relay = \"192.0.2.25\"\nsecurity = \"none\"", false)]
#[case::localhost("relay = \"localhost\"\nsecurity = \"none\"", true)]
#[case::loopback_v4("relay = \"127.0.0.1\"\nsecurity = \"none\"", true)]
#[case::loopback_v6("relay = \"::1\"\nsecurity = \"none\"", true)]
#[case::opted_in(
    "relay = \"mail.example.org\"\nsecurity = \"none\"\nallow_plaintext_relay = true",
    true
)]
#[case::tls("relay = \"mail.example.org\"\nsecurity = \"starttls\"", true)]
fn plaintext_mail_only_to_this_host(#[case] mail: &str, #[case] accepted: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = minimal(dir.path(), &format!("[mail]\n{mail}"));
    match load_with(&path, &[]) {
        Ok(_) => assert!(accepted, "{mail} should be refused"),
        Err(e) => {
            assert!(!accepted, "{mail} should be accepted: {e}");
            let e = e.to_string();
            assert!(e.contains("mail.security"), "{e}");
            assert!(
                e.contains("allow_plaintext_relay"),
                "says how to opt in: {e}"
            );
        }
    }
}

#[test]
fn trusted_proxies_are_addresses_or_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = minimal(dir.path(), "");
    let cfg = load_with(
        &path,
        &[(
            "LOCKBRIDGE__SERVER__TRUSTED_PROXIES",
            "10.0.0.5,10.1.0.0/16,::1",
        )],
    )
    .expect("loads");
    assert_eq!(cfg.server.trusted_proxy_nets().expect("nets").len(), 3);
    let err = load_with(
        &path,
        &[("LOCKBRIDGE__SERVER__TRUSTED_PROXIES", "proxy.example.org")],
    )
    .expect_err("refused")
    .to_string();
    assert!(err.contains("server.trusted_proxies"), "{err}");
    assert!(err.contains("proxy.example.org"), "{err}");
}

#[test]
fn environment_overrides_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = load_with(
        &minimal(dir.path(), ""),
        &[
            (
                "LOCKBRIDGE__DIRECTORY__URL",
                "ldaps://other.example.org:1636",
            ),
            ("LOCKBRIDGE__DIRECTORY__POOL_SIZE", "3"),
            ("LOCKBRIDGE__DIRECTORY__ADMIN_GROUP_DNS", "cn=a,dc=x,cn=b"),
            ("UNRELATED", "x"),
        ],
    )
    .expect("loads");
    assert_eq!(cfg.directory.url, "ldaps://other.example.org:1636");
    assert_eq!(cfg.directory.pool_size, 3);
    // Commas inside DNs make list parsing ambiguous; this documents the behaviour.
    assert_eq!(cfg.directory.admin_group_dns.len(), 3);
}

#[test]
fn example_config_is_complete_and_valid_apart_from_secrets() {
    // The shipped reference must parse: every key in it exists.
    let dir = tempfile::tempdir().expect("tempdir");
    let example = include_str!("../../config/lockbridge.example.toml");
    write(dir.path(), "pw", "x");
    let text = example.replace(
        "# bind_password_file = \"/run/credentials/lockbridge.service/ldap-bind-password\"",
        "bind_password_file = \"pw\"",
    );
    let text = text.replace(
        "# master_key = \"\"",
        &format!("master_key = \"{KEY_B64}\""),
    );
    let path = write(dir.path(), "example.toml", &text);
    let cfg = load_with(&path, &[]).expect("example loads");
    assert_eq!(cfg.server.listen, "127.0.0.1:8080");
}

#[rstest::rstest]
#[case::unknown_key("typo_key = 1", "typo_key")]
#[case::plaintext("starttls = false\nallow_plaintext = false", "")]
#[case::bad_pool("pool_size = 0", "directory.pool_size")]
#[case::bad_filter("user_filter = \"objectClass=person\"", "directory.user_filter")]
#[case::missing_ca("ca_file = \"nope.pem\"", "directory.ca_file")]
fn bad_directory_keys_are_named(#[case] extra: &str, #[case] expect: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = minimal(dir.path(), extra);
    let text = if expect.is_empty() {
        // Rewrite the URL to plain ldap:// to trigger the plaintext refusal.
        let t = std::fs::read_to_string(&path).expect("read");
        std::fs::write(&path, t.replace("ldaps://", "ldap://")).expect("write");
        "directory.url"
    } else {
        expect
    };
    let err = load_with(&path, &[]).expect_err("must fail").to_string();
    assert!(err.contains(text), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}

#[test]
fn secret_given_twice_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = minimal(dir.path(), "bind_password = \"Zq-unique-secret\"");
    let err = load_with(&path, &[]).expect_err("must fail").to_string();
    assert!(err.contains("directory.bind_password"), "{err}");
    assert!(err.contains("both"), "{err}");
    assert!(
        !err.contains("Zq-unique-secret"),
        "no secret in the message: {err}"
    );
}

#[test]
fn short_master_key_is_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = minimal(dir.path(), "");
    let err = load_with(&path, &[("LOCKBRIDGE__SECURITY__MASTER_KEY", "c2hvcnQ=")])
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("security.master_key"), "{err}");
    assert!(err.contains("32"), "{err}");
}

#[test]
fn wrong_type_names_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = minimal(dir.path(), "");
    let err = load_with(&path, &[("LOCKBRIDGE__MAIL__PORT", "abc")])
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("mail.port") || err.contains("port"), "{err}");
}

#[test]
fn missing_file_is_explained() {
    let err = load_with(Path::new("/nonexistent/lockbridge.toml"), &[])
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("/nonexistent/lockbridge.toml"), "{err}");
}

#[test]
fn worker_threads_default_to_the_cpus_and_at_least_two() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = load_with(&minimal(dir.path(), ""), &[]).expect("loads");
    assert_eq!(cfg.server.worker_threads, 0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(cfg.server.worker_threads(), cpus.max(2));

    let cfg = load_with(
        &minimal(dir.path(), ""),
        &[("LOCKBRIDGE__SERVER__WORKER_THREADS", "1")],
    )
    .expect("loads");
    assert_eq!(cfg.server.worker_threads(), 1, "an explicit 1 is kept");

    let cfg = load_with(
        &minimal(dir.path(), ""),
        &[("LOCKBRIDGE__SERVER__WORKER_THREADS", "100000")],
    );
    let err = cfg.expect_err("must fail").to_string();
    assert!(err.contains("server.worker_threads"), "{err}");
    assert!(err.contains("use 0"), "{err}");
}

#[test]
fn roles_map_groups_and_default_the_global_admins_to_the_admin_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = load_with(&minimal(dir.path(), ""), &[]).expect("loads");
    assert_eq!(
        cfg.roles.global_admin,
        ["cn=admins,ou=groups,dc=example,dc=org"],
        "global admins default to directory.admin_group_dns"
    );
    assert_eq!(cfg.roles.session_minutes, 60);

    let path = minimal(
        dir.path(),
        "[roles]\nhelpdesk_admin = [\"cn=helpdesk,ou=groups,dc=example,dc=org\"]\n",
    );
    let cfg = load_with(&path, &[]).expect("loads");
    assert_eq!(
        cfg.roles.helpdesk_admin,
        ["cn=helpdesk,ou=groups,dc=example,dc=org"]
    );
    assert_eq!(
        cfg.roles.all_groups().len(),
        2,
        "{:?}",
        cfg.roles.all_groups()
    );
    // Group DNs hold commas: the environment cannot carry them as a list.
    let err = load_with(
        &path,
        &[(
            "LOCKBRIDGE__ROLES__AUDITOR",
            "cn=audit,ou=groups,dc=example,dc=org",
        )],
    )
    .expect_err("refused")
    .to_string();
    assert!(
        err.contains("roles.auditor") || err.contains("auditor"),
        "{err}"
    );

    let bad = minimal(dir.path(), "[roles]\nuser_admin = [\"helpdesk\"]\n");
    let err = load_with(&bad, &[]).expect_err("refused").to_string();
    assert!(
        err.contains("roles.user_admin") && err.contains("not a group DN"),
        "{err}"
    );
    let bad = minimal(dir.path(), "[roles]\nsession_minutes = 0\n");
    let err = load_with(&bad, &[]).expect_err("refused").to_string();
    assert!(err.contains("roles.session_minutes"), "{err}");
}

#[test]
fn scoped_roles_name_a_scopable_role_groups_and_exactly_one_scope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scoped = |body: &str| format!("[[roles.scoped]]\n{body}");
    let good = minimal(
        dir.path(),
        &scoped(
            "role = \"helpdesk-admin\"\ngroups = [\"cn=paris-helpdesk,ou=groups,dc=example,dc=org\"]\n\
             over_subtree = \"ou=paris,ou=people,dc=example,dc=org\"\n",
        ),
    );
    let cfg = load_with(&good, &[]).expect("loads");
    assert_eq!(cfg.roles.scoped.len(), 1);
    assert!(
        cfg.roles
            .all_groups()
            .contains(&"cn=paris-helpdesk,ou=groups,dc=example,dc=org".to_owned()),
        "a scoped role's holders are administrators too"
    );
    for (body, expected) in [
        (
            "role = \"global-admin\"\ngroups = [\"cn=g,dc=x\"]\nover_group = \"cn=s,dc=x\"\n",
            "only these roles",
        ),
        (
            "role = \"user-admin\"\ngroups = []\nover_group = \"cn=s,dc=x\"\n",
            "is empty",
        ),
        (
            "role = \"user-admin\"\ngroups = [\"cn=g,dc=x\"]\n",
            "exactly one of",
        ),
        (
            "role = \"user-admin\"\ngroups = [\"cn=g,dc=x\"]\nover_group = \"cn=s,dc=x\"\n\
             over_subtree = \"ou=p,dc=x\"\n",
            "exactly one of",
        ),
        (
            "role = \"user-admin\"\ngroups = [\"paris\"]\nover_group = \"cn=s,dc=x\"\n",
            "not a DN",
        ),
    ] {
        let bad = minimal(dir.path(), &scoped(body));
        let err = load_with(&bad, &[]).expect_err(body).to_string();
        assert!(
            err.contains("roles.scoped[0]") && err.contains(expected),
            "{body}: {err}"
        );
    }
}

#[test]
fn directory_kinds_are_named_as_documented() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (kind, expected) in [
        ("openldap", DirectoryKindConfig::Openldap),
        ("389ds", DirectoryKindConfig::Ds389),
        ("active-directory", DirectoryKindConfig::ActiveDirectory),
    ] {
        let cfg = load_with(
            &minimal(dir.path(), ""),
            &[("LOCKBRIDGE__DIRECTORY__KIND", kind)],
        )
        .expect("loads");
        assert_eq!(cfg.directory.kind, expected, "{kind}");
    }
    let err = load_with(
        &minimal(dir.path(), ""),
        &[("LOCKBRIDGE__DIRECTORY__KIND", "novell")],
    )
    .expect_err("an unknown kind")
    .to_string();
    assert!(err.contains("novell") || err.contains("kind"), "{err}");
}

#[test]
fn the_breached_password_index_defaults_to_the_state_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "pwned.txt", "");
    let path = minimal(
        dir.path(),
        "[password_policy]\nbreached_passwords_file = \"pwned.txt\"",
    );
    let cfg = load_with(&path, &[]).expect("loads");
    assert_eq!(
        cfg.password_policy.breached_passwords_file,
        Some(dir.path().join("pwned.txt"))
    );
    assert_eq!(
        cfg.password_policy.breached_index_file,
        Some(dir.path().join("state").join("breached-passwords.index"))
    );

    let path = minimal(
        dir.path(),
        "[password_policy]\nbreached_passwords_file = \"pwned.txt\"\nbreached_index_file = \"idx/pwned.index\"",
    );
    let cfg = load_with(&path, &[]).expect("loads");
    assert_eq!(
        cfg.password_policy.breached_index_file,
        Some(dir.path().join("idx").join("pwned.index"))
    );
}

#[rstest::rstest]
#[case::missing_list(
    "breached_passwords_file = \"nowhere.txt\"",
    "configuration key `password_policy.breached_passwords_file`: "
)]
#[case::index_without_list(
    "breached_index_file = \"pwned.index\"",
    "configuration key `password_policy.breached_index_file`: is set but breached_passwords_file is not"
)]
fn breached_password_keys_are_checked_in_one_line(#[case] keys: &str, #[case] expected: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = minimal(dir.path(), &format!("[password_policy]\n{keys}"));
    let err = load_with(&path, &[]).expect_err("refused").to_string();
    assert!(err.starts_with(expected), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn sms_is_off_by_default_and_secrets_may_be_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = load_with(&minimal(dir.path(), ""), &[]).expect("loads");
    assert_eq!(cfg.sms.kind, SmsKindConfig::None);

    write(dir.path(), "twilio-token", "tok3n\n");
    let path = minimal(
        dir.path(),
        "[sms]\nkind = \"twilio\"\naccount_sid = \"AC0123\"\nauth_token_file = \"twilio-token\"\nfrom = \"+15550100\"",
    );
    let cfg = load_with(&path, &[]).expect("loads");
    assert_eq!(
        cfg.sms.auth_token.as_ref().map(Secret::expose),
        Some("tok3n")
    );
    assert!(cfg.sms.auth_token_file.is_none());
    assert!(!format!("{cfg:?}").contains("tok3n"));
}

#[rstest::rstest]
#[case::remote_http("kind = \"webhook\"\nurl = \"http://sms.example.org/send\"", "sms.url")]
#[case::no_url("kind = \"webhook\"", "sms.url")]
#[case::header_without_value(
    "kind = \"webhook\"\nurl = \"https://sms.example.org\"\nauth_header = \"Authorization\"",
    "sms.auth_header"
)]
#[case::content_type(
    "kind = \"webhook\"\nurl = \"https://sms.example.org\"\ncontent_type = \"text/plain\"",
    "sms.content_type"
)]
#[case::other_kinds_key(
    "kind = \"webhook\"\nurl = \"https://sms.example.org\"\naccount_sid = \"AC1\"",
    "sms.account_sid"
)]
#[case::forgotten_kind("url = \"https://sms.example.org\"", "sms.url")]
#[case::twilio_no_token(
    "kind = \"twilio\"\naccount_sid = \"AC1\"\nfrom = \"+15550100\"",
    "sms.auth_token"
)]
#[case::twilio_no_sender(
    "kind = \"twilio\"\naccount_sid = \"AC1\"\nauth_token = \"t\"",
    "sms.from"
)]
#[case::twilio_two_senders(
    "kind = \"twilio\"\naccount_sid = \"AC1\"\nauth_token = \"t\"\nfrom = \"+1555\"\nmessaging_service_sid = \"MG1\"",
    "sms.from"
)]
#[case::twilio_bad_sid(
    "kind = \"twilio\"\naccount_sid = \"AC/../x\"\nauth_token = \"t\"\nfrom = \"+1555\"",
    "sms.account_sid"
)]
#[case::timeouts(
    "kind = \"webhook\"\nurl = \"https://sms.example.org\"\nconnect_timeout_secs = 30\ntimeout_secs = 10",
    "sms.connect_timeout_secs"
)]
fn bad_sms_keys_are_named(#[case] sms: &str, #[case] expect: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = minimal(dir.path(), &format!("[sms]\n{sms}"));
    let err = load_with(&path, &[]).expect_err("must fail").to_string();
    assert!(err.contains(expect), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}

#[rstest::rstest]
#[case::loopback("http://127.0.0.1:8099/sms")]
#[case::loopback_v6("http://[::1]:8099/sms")]
#[case::localhost("http://localhost/sms")]
#[case::tls("https://sms.example.org/send?key=x")]
fn sms_webhook_urls_accepted(#[case] url: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = minimal(
        dir.path(),
        &format!("[sms]\nkind = \"webhook\"\nurl = \"{url}\""),
    );
    load_with(&path, &[]).expect("accepted");
}

#[rstest::rstest]
#[case::remote_verified("url = \"postgres://lockbridge@db.example.org:5432/lockbridge\"", "")]
#[case::loopback_off(
    "url = \"postgres://lockbridge@127.0.0.1:5432/lockbridge\"\ntls = \"off\"",
    ""
)]
#[case::localhost_off(
    "url = \"postgres://lockbridge@localhost/lockbridge\"\ntls = \"off\"",
    ""
)]
#[case::v6_loopback_off("url = \"postgres://lockbridge@[::1]/lockbridge\"\ntls = \"off\"", "")]
#[case::socket_off(
    "url = \"postgres://lockbridge@%2Frun%2Fpostgresql/lockbridge\"\ntls = \"off\"",
    ""
)]
#[case::password_in_url(
    "url = \"postgres://lockbridge:hunter2@db.example.org/lockbridge\"",
    "store.password_file"
)]
#[case::remote_off(
    "url = \"postgres://lockbridge@db.example.org/lockbridge\"\ntls = \"off\"",
    "store.tls"
)]
#[case::no_url("", "store.url")]
#[case::sslmode_in_url(
    "url = \"postgres://lockbridge@db.example.org/lockbridge?sslmode=disable\"",
    "store.tls"
)]
#[case::sqlite_path(
    "url = \"postgres://lockbridge@db.example.org/lockbridge\"\npath = \"x.db\"",
    "store.path"
)]
#[case::socket_with_tls(
    "url = \"postgres://lockbridge@%2Frun%2Fpostgresql/lockbridge\"",
    "store.tls"
)]
#[case::one_connection(
    "url = \"postgres://lockbridge@db.example.org/lockbridge\"\nmax_connections = 1",
    "store.max_connections"
)]
fn postgres_store_settings_are_checked(#[case] store: &str, #[case] refused_key: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = minimal(
        dir.path(),
        &format!("[store]\nkind = \"postgres\"\n{store}"),
    );
    match load_with(&path, &[]) {
        Ok(cfg) => {
            assert!(refused_key.is_empty(), "{store} should be refused");
            assert_eq!(cfg.store.kind, StoreKind::Postgres);
        }
        Err(e) => {
            let e = e.to_string();
            assert!(!refused_key.is_empty(), "{store} should be accepted: {e}");
            assert!(e.contains(refused_key), "{e}");
            assert!(!e.contains("hunter2"), "never repeats the password: {e}");
        }
    }
}

#[test]
fn the_postgres_password_is_read_from_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "store-password", "pg-s3cret\n");
    let path = minimal(
        dir.path(),
        "[store]\nkind = \"postgres\"\nurl = \"postgres://lockbridge@db.example.org/lockbridge\"\n\
         password_file = \"store-password\"\nca_file = \"db-ca.pem\"",
    );
    let cfg = load_with(&path, &[]).expect("loads");
    assert_eq!(
        cfg.store_password.as_ref().map(|p| p.expose()),
        Some("pg-s3cret")
    );
    assert_eq!(cfg.store.ca_file, Some(dir.path().join("db-ca.pem")));
    assert!(!format!("{cfg:?}").contains("pg-s3cret"));
}

#[test]
fn postgres_keys_are_refused_for_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = minimal(
        dir.path(),
        "[store]\nurl = \"postgres://lockbridge@db.example.org/lockbridge\"",
    );
    let e = load_with(&path, &[]).expect_err("refused").to_string();
    assert!(e.contains("store.url") && e.contains("postgres"), "{e}");
}

#[test]
fn the_followed_copy_serves_reads_unless_told_to_hold_only_what_pushes_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = load_with(&minimal(dir.path(), ""), &[]).expect("loads");
    assert!(cfg.scim.follow_directory && cfg.scim.follow_reads);
    let cfg =
        load_with(&minimal(dir.path(), "[scim]\nfollow_reads = false\n"), &[]).expect("loads");
    assert!(cfg.scim.follow_directory && !cfg.scim.follow_reads);
    let err = load_with(
        &minimal(dir.path(), "[scim]\nfollow_reads = \"pushes\"\n"),
        &[],
    )
    .expect_err("a string is not a switch")
    .to_string();
    assert!(err.contains("follow_reads"), "{err}");
}

//! What only the PostgreSQL store has to show, beyond the backend-independent contract
//! (tests/store_conformance.rs): several instances (separate pools, as on separate hosts)
//! on one database racing for mail and appending to one audit chain, migrations started
//! by two instances at once, connection trouble reported as "unavailable", refused
//! settings, and the daemon itself running on PostgreSQL.

mod harness;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use harness::Postgres;
use harness::daemon::{Daemon, run_cli};
use harness::slapd::Slapd;
use harness::smtp::MailSink;
use lockbridge::audit::chain::{SealKey, seal, verify};
use lockbridge::store::{
    MailClass, NewAuditRecord, NewOutboxMessage, PostgresOptions, PostgresStore, PostgresTls,
    Store, StoreError,
};
use serde_json::json;

fn options(pg: &Postgres, database: &str) -> PostgresOptions {
    PostgresOptions {
        url: format!("postgres://{}@{}:{}/{database}", pg.user, pg.host, pg.port),
        password: Some(pg.password.clone()),
        ca_file: None,
        tls: PostgresTls::Off,
        max_connections: 4,
        connect_timeout: Duration::from_secs(5),
    }
}

/// The shared sandbox server (or one of this test's own) and a fresh database on it.
async fn fresh() -> (Postgres, String) {
    let pg = tokio::task::spawn_blocking(Postgres::shared_or_start)
        .await
        .expect("start PostgreSQL");
    let (database, _) = pg.create_fresh_database();
    (pg, database)
}

async fn instance(pg: &Postgres, database: &str) -> Arc<dyn Store> {
    Arc::new(
        PostgresStore::connect(&options(pg, database))
            .await
            .expect("connect"),
    )
}

/// A pool of this test's own on `database`, for SQL lockbridge would not send.
async fn raw_pool(pg: &Postgres, database: &str) -> sqlx::PgPool {
    sqlx::PgPool::connect(&pg.url_of(database))
        .await
        .expect("connect")
}

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0)
        .single()
        .expect("a valid time")
}

/// Four workers on two instances claim until nothing is left: every message is claimed
/// exactly once (SKIP LOCKED passes over rows another claim holds, never shares them).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_on_two_instances_never_claim_one_message_twice() {
    let (pg, database) = fresh().await;
    let a = instance(&pg, &database).await;
    let b = instance(&pg, &database).await;
    const MESSAGES: usize = 300;
    for n in 0..MESSAGES {
        let class = if n % 3 == 0 {
            MailClass::Transactional
        } else {
            MailClass::Bulk
        };
        a.enqueue_mail(&NewOutboxMessage::new(
            "notice",
            format!("user{n}@example.org"),
            json!({ "n": n }),
            class,
            t0(),
        ))
        .await
        .expect("enqueue");
    }
    let worker = |store: Arc<dyn Store>| {
        tokio::spawn(async move {
            let mut claimed = Vec::new();
            loop {
                let batch = store
                    .claim_due_mail(t0(), 7, Duration::from_secs(600))
                    .await
                    .expect("claim");
                if batch.is_empty() {
                    return claimed;
                }
                claimed.extend(batch.into_iter().map(|m| m.id));
            }
        })
    };
    let workers = [
        worker(a.clone()),
        worker(b.clone()),
        worker(a.clone()),
        worker(b.clone()),
    ];
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "a message was claimed twice");
    assert_eq!(all.len(), MESSAGES, "every message was claimed");
}

fn record(n: usize, actor: &str) -> NewAuditRecord {
    NewAuditRecord {
        // Nanoseconds too: the store keeps microseconds, and the hash must cover what
        // is kept.
        at: t0() + chrono::Duration::nanoseconds(n as i64 * 1_000_001),
        request_id: Some(format!("req-{actor}-{n}")),
        actor: actor.into(),
        action: "password.reset".into(),
        target: Some(format!("user{n}")),
        outcome: "success".into(),
        detail: Some(json!({ "n": n, "by": actor }).to_string()),
    }
}

/// Appends from two instances at once, single and batched, make ONE chain that the
/// audit verifier accepts from end to end (hashes, links, no id skipped), and a seal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_appends_from_two_instances_form_one_verified_chain() {
    let (pg, database) = fresh().await;
    let a = instance(&pg, &database).await;
    let b = instance(&pg, &database).await;
    let mut tasks = Vec::new();
    for (i, store) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        let actor = format!("writer{i}");
        tasks.push(tokio::spawn(async move {
            for n in 0..15 {
                store
                    .append_audit(&record(n, &actor))
                    .await
                    .expect("append");
            }
            store
                .append_audit_many((15..35).map(|n| record(n, &actor)).collect())
                .await
                .expect("append many");
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let key = SealKey::new([7; 32]);
    seal(a.as_ref(), &key).await.expect("seal");
    for store in [&a, &b] {
        let v = verify(store.as_ref(), &key).await.expect("verify");
        assert_eq!(v.problem, None, "{v:?}");
        assert_eq!(v.records, 4 * 35);
        assert_eq!(v.last_id, Some(4 * 35), "ids run 1..=N without a gap");
        assert_eq!(v.seals, 1);
    }
    // A batch keeps its order within the chain.
    let page = a.audit_chain_page(0, None, 1000).await.expect("page");
    for actor in ["writer0", "writer1", "writer2", "writer3"] {
        let ns: Vec<String> = page
            .iter()
            .filter(|r| r.record.actor == actor)
            .map(|r| r.record.target.clone().unwrap_or_default())
            .collect();
        let expected: Vec<String> = (0..35).map(|n| format!("user{n}")).collect();
        assert_eq!(ns, expected, "{actor}'s records in the order written");
    }
}

/// A log written before the chain's head kept the last hash (migration 0003): the
/// upgrade takes the hash from the log, and appends after it extend the one chain the
/// verifier accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_before_the_head_kept_its_hash_carries_on_after_the_upgrade() {
    let (pg, database) = fresh().await;
    let store = instance(&pg, &database).await;
    for n in 0..5 {
        store
            .append_audit(&record(n, "before"))
            .await
            .expect("append");
    }
    drop(store);
    // Back to the schema as it was before 0003.
    let raw = raw_pool(&pg, &database).await;
    sqlx::raw_sql(
        "DROP FUNCTION lockbridge_audit_append_encoded; \
         DROP FUNCTION lockbridge_audit_append; DROP FUNCTION lockbridge_audit_field; \
         ALTER TABLE audit_chain_head DROP COLUMN last_hash; \
         DELETE FROM _sqlx_migrations WHERE version IN (3, 4, 6);",
    )
    .execute(&raw)
    .await
    .expect("downgrade");
    raw.close().await;

    let store = instance(&pg, &database).await;
    store
        .append_audit_many((5..9).map(|n| record(n, "after")).collect())
        .await
        .expect("append after the upgrade");
    store
        .append_audit(&record(9, "after"))
        .await
        .expect("append");
    let key = SealKey::new([7; 32]);
    let v = verify(store.as_ref(), &key).await.expect("verify");
    assert_eq!(v.problem, None, "{v:?}");
    assert_eq!((v.records, v.last_id), (10, Some(10)));
}

/// PostgreSQL computes the chain's hashes (migration 0006); the verifier computes them
/// in Rust. Text that a naive encoding would get wrong hashes the same in both: absent
/// and empty fields, non-ASCII letters, backslashes, quotes, a long detail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_hashes_made_by_postgres_are_the_ones_the_verifier_computes() {
    let (pg, database) = fresh().await;
    let store = instance(&pg, &database).await;
    let long = "x".repeat(70_000);
    let tricky = [
        (None, "", None, Some("")),
        (Some(""), "Zoë 山田 🙂", Some("cn=Ünïcödé,ou=people"), None),
        (
            Some("r\\x00"),
            "o'brien \"q\"",
            Some("\\"),
            Some(long.as_str()),
        ),
    ];
    for (i, (request_id, actor, target, detail)) in tricky.into_iter().enumerate() {
        let mut r = record(i, actor);
        r.request_id = request_id.map(str::to_string);
        r.target = target.map(str::to_string);
        r.detail = detail.map(str::to_string);
        store.append_audit(&r).await.expect("append");
    }
    let v = verify(store.as_ref(), &SealKey::new([7; 32]))
        .await
        .expect("verify");
    assert_eq!(v.problem, None, "{v:?}");
    assert_eq!((v.records, v.last_id), (3, Some(3)));
}

/// A rolling upgrade: an instance of the older version still appends with migration
/// 0004's function (it encodes the fields in SQL) while this one uses 0006's (it sends
/// them encoded). Interleaved, their records make one chain the verifier accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_of_the_older_and_newer_function_make_one_chain() {
    let (pg, database) = fresh().await;
    let store = instance(&pg, &database).await;
    let raw = raw_pool(&pg, &database).await;
    for n in 0..4 {
        store
            .append_audit(&record(n, "newer"))
            .await
            .expect("append");
        // What an older instance sends: the time, and its text as hashed.
        sqlx::query(
            "SELECT lockbridge_audit_append(ARRAY[$1::timestamptz], ARRAY[$2], ARRAY[$3], \
                    ARRAY['older'], ARRAY['password.reset'], ARRAY[NULL::text], \
                    ARRAY['success'], ARRAY[$4])",
        )
        .bind(t0())
        .bind(t0().to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .bind(format!("req-older-{n}"))
        .bind(format!("{{\"n\":{n}}}"))
        .execute(&raw)
        .await
        .expect("an older instance's append");
    }
    store
        .append_audit_many((4..7).map(|n| record(n, "newer")).collect())
        .await
        .expect("append many");
    raw.close().await;
    let v = verify(store.as_ref(), &SealKey::new([7; 32]))
        .await
        .expect("verify");
    assert_eq!(v.problem, None, "{v:?}");
    assert_eq!((v.records, v.last_id), (11, Some(11)));
}

/// The audit writer keeps a connection of its own, outside the pool. When the server
/// ends it (a restart, an administrator's `pg_terminate_backend`), appends go on without
/// a restart: after a quiet spell the dead link is found by a ping before the append;
/// right after use, at most the one append that meets it fails, clearly. The chain stays
/// whole either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_writer_reconnects_when_its_connection_is_ended() {
    let (pg, database) = fresh().await;
    let store = instance(&pg, &database).await;
    let raw = raw_pool(&pg, &database).await;
    let end_lockbridge_connections = || async {
        let ended: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
              WHERE datname = current_database() AND application_name = 'lockbridge' \
                AND pid <> pg_backend_pid()",
        )
        .fetch_one(&raw)
        .await
        .expect("terminate");
        assert!(ended >= 1, "the writer's connection was open");
    };
    let mut appended = 0;
    store
        .append_audit(&record(0, "writer"))
        .await
        .expect("append");
    appended += 1;

    // Ended while quiet: found by the ping, the append goes through.
    end_lockbridge_connections().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    store
        .append_audit(&record(1, "writer"))
        .await
        .expect("an append after the connection was ended while quiet");
    appended += 1;

    // Ended right after use: the append that meets it may fail, and says so; the next
    // one opens a new connection.
    store
        .append_audit(&record(2, "writer"))
        .await
        .expect("append");
    appended += 1;
    end_lockbridge_connections().await;
    match store.append_audit(&record(3, "writer")).await {
        Ok(_) => appended += 1,
        Err(StoreError::Unavailable(message)) => {
            assert!(!message.contains("postgres://"), "{message}");
        }
        Err(other) => panic!("not a clear 'unavailable': {other:?}"),
    }
    store
        .append_audit(&record(4, "writer"))
        .await
        .expect("the next append reconnects");
    appended += 1;
    raw.close().await;
    let v = verify(store.as_ref(), &SealKey::new([7; 32]))
        .await
        .expect("verify");
    assert_eq!(v.problem, None, "{v:?}");
    assert_eq!((v.records, v.last_id), (appended, Some(appended as i64)));
}

/// Two instances starting together on an empty database: both come up, the schema is
/// made once (sqlx migrates under an advisory lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_starting_at_once_migrate_once() {
    let (pg, database) = fresh().await;
    let o = options(&pg, &database);
    let (a, b, c) = tokio::join!(
        PostgresStore::connect(&o),
        PostgresStore::connect(&o),
        PostgresStore::connect(&o),
    );
    for store in [a, b, c] {
        store.expect("connect").ping().await.expect("ping");
    }
    let pool = sqlx::PgPool::connect(&pg.url_of(&database))
        .await
        .expect("inspect");
    let (applied, versions): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT version) FROM _sqlx_migrations WHERE success",
    )
    .fetch_one(&pool)
    .await
    .expect("migrations table");
    let files = std::fs::read_dir(harness::repo_root().join("src/store/migrations/postgres"))
        .expect("migrations folder")
        .count() as i64;
    assert_eq!((applied, versions), (files, files));
}

/// A wrong password and a server that went away are "unavailable" (retry later), with
/// a message that names the server and never the password; the pool reconnects once
/// the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_trouble_is_unavailable_and_passes() {
    // A server of its own: this test stops it.
    let mut pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("start PostgreSQL");
    let database = pg.database.clone();

    let mut wrong = options(&pg, &database);
    wrong.password = Some("not-the-password".into());
    match PostgresStore::connect(&wrong).await {
        Err(StoreError::Unavailable(message)) => {
            assert!(
                message.contains(&format!("{}:{}", pg.host, pg.port)),
                "{message}"
            );
            assert!(!message.contains("not-the-password"), "{message}");
        }
        other => panic!("a wrong password: {:?}", other.map(|_| ())),
    }

    let mut tls = options(&pg, &database);
    tls.tls = PostgresTls::VerifyFull;
    match PostgresStore::connect(&tls).await {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.to_lowercase().contains("tls"), "{message}")
        }
        other => panic!("TLS to a server without it: {:?}", other.map(|_| ())),
    }

    let store = PostgresStore::connect(&options(&pg, &database))
        .await
        .expect("connect");
    store.ping().await.expect("ping");
    pg.stop();
    let down = store.ping().await;
    assert!(
        matches!(&down, Err(e) if e.is_unavailable()),
        "a stopped server: {down:?}"
    );
    let down = store.append_audit(&record(0, "x")).await;
    assert!(
        matches!(&down, Err(e) if e.is_unavailable()),
        "an audit append with the server stopped: {down:?}"
    );
    pg.start_again();
    store.ping().await.expect("ping once the server is back");
    store
        .append_audit(&record(1, "x"))
        .await
        .expect("append once the server is back");
}

fn minimal_config(dir: &std::path::Path, store: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("bind-password"), "s3rvice\n").expect("write");
    let path = dir.join("lockbridge.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
state_dir = "state"
[security]
master_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
[directory]
url = "ldaps://ldap.example.org"
bind_dn = "cn=lockbridge,dc=example,dc=org"
bind_password_file = "bind-password"
users_base = "ou=people,dc=example,dc=org"
admin_group_dns = ["cn=admins,ou=groups,dc=example,dc=org"]
[store]
kind = "postgres"
{store}
"#
        ),
    )
    .expect("write config");
    path
}

/// `check-config` refuses a password in the URL and clear text to a remote server,
/// naming the key and what to do, before connecting to anything.
#[test]
fn unsafe_store_settings_are_refused_by_check_config() {
    for (store, key, hint) in [
        (
            r#"url = "postgres://lockbridge:hunter2@db.example.org/lockbridge""#,
            "store.url",
            "password_file",
        ),
        (
            "url = \"postgres://lockbridge@db.example.org/lockbridge\"\ntls = \"off\"",
            "store.tls",
            "verify-full",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (code, stdout, stderr) = run_cli(&minimal_config(dir.path(), store), &["check-config"]);
        let output = format!("{stdout}{stderr}");
        assert_eq!(code, 78, "{output}");
        assert!(
            output.contains(key) && output.contains(hint),
            "{key}: {output}"
        );
        assert!(!output.contains("hunter2"), "{output}");
    }
}

const SCIM_CONFIG: &str = r#"
[scim]
user_object_classes = ["inetOrgPerson", "lockbridgeContact"]
external_id_attribute = "lockbridgeExternalId"
"#;

/// The daemon on PostgreSQL: tokens (made by the CLI), an admin reset and a SCIM
/// create, and both in the audit log read back through the API and from the database,
/// where the chain holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_on_postgres() {
    let (pg, database) = fresh().await;
    let slapd = Slapd::start_with(0, &[]);
    let mail = MailSink::start();
    let secrets = tempfile::tempdir().expect("tempdir");
    let store = pg.store_section(&database, &secrets.path().join("store-password"));
    let expiry = format!(
        "\n[expiry]\nsource = \"directory\"\ndefault_policy_dn = \"cn=default,ou=policies,{base}\"\n",
        base = slapd.base_dn
    );
    let daemon = Daemon::start_with(&slapd, mail.port, &format!("{SCIM_CONFIG}{expiry}{store}"));
    let scim_token =
        harness::daemon::create_token(&daemon.config_path, "entra-provisioning", "scim");
    let api = daemon.client();

    let (status, body, _) = api
        .post(
            &daemon.admin_token,
            "/api/v1/users/bob/password-reset",
            json!({"mode": "auto", "requireChangeAtNextSignIn": true, "showPassword": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let password = body["password"].as_str().expect("password").to_string();

    let (status, body, _) = daemon
        .scim(&scim_token)
        .post(
            "/Users",
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "pgrace",
                "name": { "givenName": "Grace", "familyName": "Hopper" },
                "emails": [{ "value": "pgrace@example.org", "type": "work", "primary": true }],
                "active": true,
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let (status, audit) = api.get(&daemon.admin_token, "/api/v1/audit?limit=50").await;
    assert_eq!(status, 200, "{audit}");
    let actions: Vec<(&str, &str)> = audit["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default(),
                r["target"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert!(actions.contains(&("password.reset", "bob")), "{actions:?}");
    assert!(
        actions
            .iter()
            .any(|(a, t)| *a == "scim.create" && t.contains("pgrace")),
        "{actions:?}"
    );

    // The records are in PostgreSQL (no SQLite file was made), and `audit verify`
    // finds the chain and the daemon's seal intact.
    let reader = instance(&pg, &database).await;
    let page = reader.audit_chain_page(0, None, 100).await.expect("chain");
    assert!(page.len() >= 4, "tokens, reset, create: {}", page.len());
    assert!(
        !daemon.dir.path().join("state/lockbridge.db").exists(),
        "no SQLite store beside"
    );
    let (code, stdout, stderr) = run_cli(&daemon.config_path, &["audit", "verify"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("chain intact"), "{stdout}");
    let (code, stdout, stderr) = run_cli(&daemon.config_path, &["check-config"]);
    let store_line = stdout
        .lines()
        .chain(stderr.lines())
        .find(|l| l.contains("store"))
        .unwrap_or_default()
        .to_string();
    assert!(
        store_line.contains("PostgreSQL") && store_line.contains(&database),
        "check-config: {code}\n{stdout}{stderr}"
    );
    daemon
        .assert_no_secrets(&[&password, &daemon.admin_token, &pg.password])
        .await;
}

/// Makes a throwaway CA and a certificate for `localhost` and 127.0.0.1 in `dir` with
/// the openssl tool; returns the CA's PEM file.
fn make_certs(dir: &std::path::Path) -> std::path::PathBuf {
    let script = r#"set -e
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
  -keyout ca.key -out ca.pem -days 30 -subj "/CN=lockbridge test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
  -keyout server.key -out server.csr -subj "/CN=localhost"
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
  -out server.pem -days 30 -extfile server.ext
"#;
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("ca.pem")
}

/// `tls = "verify-full"` against a server with a certificate: accepted with the CA in
/// `ca_file`, refused without it (the system's roots do not know a private CA).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_trusts_ca_file_and_refuses_an_unknown_ca() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("start PostgreSQL");
    let certs = tempfile::tempdir().expect("tempdir");
    let ca = make_certs(certs.path());
    // The key and certificate go in the data folder, owned by the server's user.
    let data = pg.dir.join("data");
    let owner = std::fs::metadata(&data).expect("data folder");
    for (name, mode) in [("server.pem", 0o644), ("server.key", 0o600)] {
        let to = data.join(name);
        std::fs::copy(certs.path().join(name), &to).expect("copy");
        std::os::unix::fs::chown(&to, Some(owner.uid()), Some(owner.gid())).expect("chown");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let out = std::process::Command::new(pg.bin_dir.join("psql"))
        .env("PGPASSWORD", &pg.superuser_password)
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-h", &pg.host])
        .arg("-p")
        .arg(pg.port.to_string())
        .args(["-U", &pg.superuser, "-d", "postgres"])
        .args([
            "-c",
            "ALTER SYSTEM SET ssl_cert_file = 'server.pem'",
            "-c",
            "ALTER SYSTEM SET ssl_key_file = 'server.key'",
            "-c",
            "ALTER SYSTEM SET ssl = on",
            "-c",
            "SELECT pg_reload_conf()",
        ])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut verified = options(&pg, &pg.database);
    verified.tls = PostgresTls::VerifyFull;
    verified.ca_file = Some(ca);
    // The reload is asynchronous: the first connections may still find TLS off.
    let mut store = None;
    for _ in 0..50 {
        match PostgresStore::connect(&verified).await {
            Ok(s) => {
                store = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let store = store.expect("verify-full with the CA in ca_file connects");
    store.ping().await.expect("ping over TLS");
    let pool = sqlx::PgPool::connect(&format!("{}?sslmode=require", pg.url))
        .await
        .expect("inspect");
    let tls_in_use: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_ssl WHERE ssl AND pid <> pg_backend_pid()",
    )
    .fetch_one(&pool)
    .await
    .expect("pg_stat_ssl");
    assert!(tls_in_use >= 1, "the store's connections use TLS");

    let mut unknown = verified.clone();
    unknown.ca_file = None;
    match PostgresStore::connect(&unknown).await {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("127.0.0.1"), "{message}")
        }
        other => panic!("an unknown CA: {:?}", other.map(|_| ())),
    }
}

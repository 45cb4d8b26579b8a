//! `lockbridge store copy`: a SQLite store filled through the real `Store` API is copied
//! into an empty PostgreSQL store (a real server), where the same state reads back
//! through the `Store` trait (tokens authenticate, known notices stay known, pending mail
//! keeps its secret, the audit chain and its seal verify with the same ids), and where
//! ids and the chain carry on. A target holding data is refused and left as it was, and
//! so is any table the copy does not know about (schema drift).

mod harness;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use harness::Postgres;
use harness::daemon::run_cli;
use lockbridge::audit::chain::{seal, verify};
use lockbridge::auth::Role;
use lockbridge::config::Config;
use lockbridge::notify::{Sealer, derive_key};
use lockbridge::store::copy::{COPIED, NOT_COPIED};
use lockbridge::store::{
    ChainedAuditRecord, FlowRecord, JobItem, JobItemOutcome, JobRecord, MailClass, NewAuditRecord,
    NewFlow, NewJob, NewOutboxMessage, NewResetRequest, NewSession, NewWelcomeLink, OutboxCounts,
    OutboxMessage, RateQuota, ResetRequestRecord, SessionRecord, SqliteStore, Store,
    StoredAuditSeal, SweepReportLine, SweepRun, TokenRecord, WelcomeLinkRecord,
};
use lockbridge::types::Secret;
use serde_json::json;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const OTHER_KEY: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
const EXIT_CANTCREAT: i32 = 73;

/// A configuration in `dir` with `store` as its `[store]` section (empty: SQLite in
/// `dir/state`). Nothing in it is contacted by `store copy` but the store.
fn write_config(dir: &Path, name: &str, key: &str, store: &str) -> PathBuf {
    std::fs::write(dir.join("bind-password"), "s3rvice\n").expect("write");
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            r#"
[server]
state_dir = "state"
[security]
master_key = "{key}"
[directory]
url = "ldaps://ldap.example.org"
bind_dn = "cn=lockbridge,dc=example,dc=org"
bind_password_file = "bind-password"
users_base = "ou=people,dc=example,dc=org"
admin_group_dns = ["cn=admins,ou=groups,dc=example,dc=org"]
{store}
"#
        ),
    )
    .expect("write config");
    path
}

fn load(path: &Path) -> Config {
    lockbridge::config::load(path, std::iter::empty::<(String, String)>()).expect("load config")
}

/// The shared sandbox server (or one of this test's own) and a fresh database on it.
async fn fresh() -> (Postgres, String) {
    let pg = tokio::task::spawn_blocking(Postgres::shared_or_start)
        .await
        .expect("start PostgreSQL");
    let (database, _) = pg.create_fresh_database();
    (pg, database)
}

/// A source configuration (SQLite) and a target one (the fresh database), same key.
fn configs(pg: &Postgres, database: &str, dir: &Path) -> (PathBuf, PathBuf) {
    let source = write_config(dir, "sqlite.toml", KEY, "");
    let store = pg.store_section(database, &dir.join("store-password"));
    let target = write_config(dir, "postgres.toml", KEY, &store);
    (source, target)
}

/// A target configuration that is never contacted (the copy refuses before).
/// What the copy tests start from: a fresh PostgreSQL database, an empty SQLite store,
/// and the two configurations naming them (one master key).
struct Move {
    pg: Postgres,
    database: String,
    /// Holds the configurations and the SQLite file.
    _dir: tempfile::TempDir,
    source_path: PathBuf,
    target_path: PathBuf,
    source_config: Config,
    sqlite: SqliteStore,
}

async fn a_move() -> Move {
    let (pg, database) = fresh().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (source_path, target_path) = configs(&pg, &database, dir.path());
    let source_config = load(&source_path);
    let sqlite = SqliteStore::open(&source_config.store_path)
        .await
        .expect("open SQLite");
    Move {
        pg,
        database,
        _dir: dir,
        source_path,
        target_path,
        source_config,
        sqlite,
    }
}

/// Runs `lockbridge store copy` from the configuration `source` into `target`.
fn copy(source: &Path, target: &Path) -> (i32, String, String) {
    let target = target.display().to_string();
    run_cli(source, &["store", "copy", "--to-config", target.as_str()])
}

/// Runs `sql` on the SQLite store of `config` directly, as someone working around
/// lockbridge would.
async fn write_around_lockbridge(config: &Config, sql: &str) {
    let raw = sqlx::SqlitePool::connect(&format!("sqlite://{}", config.store_path.display()))
        .await
        .expect("open SQLite raw");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&raw)
        .await
        .expect("write around lockbridge");
    raw.close().await;
}

fn unreachable_target(dir: &Path, key: &str) -> PathBuf {
    std::fs::write(dir.join("store-password"), "unused\n").expect("write");
    let store = format!(
        "[store]\nkind = \"postgres\"\nurl = \"postgres://lockbridge@127.0.0.1:1/lockbridge\"\n\
         password_file = \"{}\"\ntls = \"off\"\n",
        dir.join("store-password").display()
    );
    write_config(dir, "postgres.toml", key, &store)
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0)
        .single()
        .expect("a valid time")
}

fn record(n: i64) -> NewAuditRecord {
    NewAuditRecord {
        // Nanoseconds too: the stores keep microseconds, and the hash covers what is kept.
        at: t0() + chrono::Duration::nanoseconds(n * 1_000_001),
        request_id: (n % 2 == 0).then(|| format!("req-{n}")),
        actor: "cli:alice".into(),
        action: "password.reset".into(),
        target: (n % 3 != 0).then(|| format!("user{n}")),
        outcome: "success".into(),
        // Text as written (spacing and key order kept: the hash covers it).
        detail: Some(format!("{{\"z\": {n},  \"a\":\"x\"}}")),
    }
}

/// What the test knows about the state it wrote.
struct Written {
    token: String,
    mail_ids: Vec<i64>,
    /// The cleartext sealed into the pending message.
    mail_secret: String,
    notice_keys: Vec<String>,
    sweep_id: String,
    job_id: String,
    session_hash: Vec<u8>,
    flow_hash: Vec<u8>,
    welcome_hash: Vec<u8>,
    now: DateTime<Utc>,
}

/// Fills a store through the `Store` API (and the token service, the sealer and the
/// audit sealer, with the configuration's keys), leaving no lease or claim in force.
async fn fill(store: Arc<dyn Store>, config: &Config) -> Written {
    let now = Utc::now();
    let tokens = lockbridge::app::token_service(config, store.clone());
    let token = tokens
        .create("entra-provisioning", Role::Scim)
        .await
        .expect("token");
    tokens
        .create("old-helpdesk", Role::HelpdeskAdmin)
        .await
        .expect("token");
    assert!(tokens.revoke("old-helpdesk").await.expect("revoke"));

    for n in 0..5 {
        store.append_audit(&record(n)).await.expect("append");
    }
    let key = lockbridge::app::seal_key(config);
    seal(store.as_ref(), &key)
        .await
        .expect("seal")
        .expect("a seal");
    store
        .append_audit_many((5..8).map(record).collect())
        .await
        .expect("append many");

    let sealer = Sealer::new(derive_key(config.master_key.expose(), "outbox-secrets"));
    let mail_secret = "Temp-Pass-4711".to_string();
    let mut pending = NewOutboxMessage::new(
        "password-reset",
        "bob@example.org",
        json!({ "user": "bob" }),
        MailClass::Transactional,
        now,
    );
    pending.sealed_secret = Some(sealer.seal(&Secret::new(mail_secret.clone())));
    let pending_id = store.enqueue_mail(&pending).await.expect("enqueue");
    let sent_id = store
        .enqueue_mail(&NewOutboxMessage::new(
            "digest",
            "admins@example.org",
            json!({ "n": 1 }),
            MailClass::Bulk,
            now,
        ))
        .await
        .expect("enqueue");
    store.mark_mail_sent(sent_id, now).await.expect("sent");
    let dead_id = store
        .enqueue_mail(&NewOutboxMessage::new(
            "digest",
            "nobody@example.org",
            json!({ "n": 2 }),
            MailClass::Bulk,
            now,
        ))
        .await
        .expect("enqueue");
    store
        .mark_mail_dead(dead_id, "550 no such user")
        .await
        .expect("dead");

    let sweep_id = uuid::Uuid::new_v4().to_string();
    let mut run = SweepRun {
        id: sweep_id.clone(),
        started_at: now,
        finished_at: None,
        status: "running".into(),
        dry_run: false,
        trigger: "schedule".into(),
        at: now,
        scanned: 0,
        notified: 0,
        already_notified: 0,
        no_mail: 0,
        expired: 0,
        failed: 0,
        error: None,
        summary: None,
    };
    store.insert_sweep_run(&run).await.expect("sweep run");
    let notice_keys: Vec<String> = ["carol|2029-12-01|t14", "dave|2029-12-02|t7"]
        .map(String::from)
        .to_vec();
    for key in &notice_keys {
        let message = NewOutboxMessage::new(
            "expiry-notice",
            "someone@example.org",
            json!({ "days": 14 }),
            MailClass::Bulk,
            now,
        );
        assert!(
            store
                .record_notice(key, Some(&sweep_id), &message)
                .await
                .expect("notice")
        );
    }
    let line = |seq: u64, user: &str| SweepReportLine {
        seq,
        user_name: user.into(),
        display_name: Some(format!("{user} Example")),
        mail: Some(format!("{user}@example.org")),
        notice: "t14".into(),
        expires_at: now,
        expires_at_local: "1 January 2030".into(),
        days_left: 14,
        status: "queued".into(),
        reason: None,
    };
    store
        .append_sweep_report(&sweep_id, &[line(0, "carol"), line(1, "dave")])
        .await
        .expect("report");
    run.status = "completed".into();
    run.finished_at = Some(now);
    run.scanned = 40;
    run.notified = 2;
    run.dry_run = true;
    run.summary = Some(json!({ "thresholds": [14, 7], "ok": true }));
    store.update_sweep_run(&run).await.expect("update run");

    let job_id = uuid::Uuid::new_v4().to_string();
    store
        .insert_job(
            &NewJob {
                id: job_id.clone(),
                kind: "password-reset".into(),
                actor: "cli".into(),
                actor_dn: None,
                roles: vec!["password-admin".into()],
                params: json!({ "requireChange": true }),
                sealed_secret: Some(vec![9; 40]),
                created_at: now,
            },
            &["alice".into(), "bob".into(), "carol".into()],
        )
        .await
        .expect("job");
    let items = store
        .job_items_page(&job_id, None, 10)
        .await
        .expect("items");
    store
        .mark_job_items_writing(&job_id, &[(items[0].seq, vec![1; 48])])
        .await
        .expect("writing");
    store
        .finish_job_items(
            &job_id,
            &[
                JobItemOutcome {
                    seq: items[0].seq,
                    status: "done",
                    code: None,
                    changed: true,
                    sealed_password: Some(vec![1; 48]),
                },
                JobItemOutcome {
                    seq: items[1].seq,
                    status: "refused",
                    code: Some("protected-account".into()),
                    changed: false,
                    sealed_password: None,
                },
            ],
        )
        .await
        .expect("finish items");

    store
        .put_setting(
            "expiry.policy",
            &json!({ "maxAgeDays": 90, "warn": [14, 7] }),
        )
        .await
        .expect("setting");
    let session_hash = vec![7; 32];
    store
        .insert_session(&NewSession {
            id: "session-1".into(),
            hash: session_hash.clone(),
            user_dn: "uid=admin,ou=people,dc=example,dc=org".into(),
            user_name: "admin".into(),
            roles: vec!["global-admin".into(), "auditor".into()],
            created_at: now,
            expires_at: now + chrono::Duration::hours(1),
        })
        .await
        .expect("session");
    let flow_hash = vec![8; 32];
    store
        .insert_flow(
            &NewFlow {
                id: "flow-1".into(),
                hash: flow_hash.clone(),
                purpose: "reset".into(),
                state: json!({ "stage": "code-sent", "tries": 1 }),
                created_at: now,
                expires_at: now + chrono::Duration::minutes(15),
            },
            now,
        )
        .await
        .expect("flow");
    store
        .open_reset_request(&NewResetRequest {
            id: "request-1".into(),
            user_dn: "uid=erin,ou=people,dc=example,dc=org".into(),
            user_name: "erin".into(),
            created_at: now,
        })
        .await
        .expect("reset request");
    let welcome_hash = vec![6; 32];
    store
        .insert_welcome_link(&NewWelcomeLink {
            hash: welcome_hash.clone(),
            user_dn: "uid=frank,ou=people,dc=example,dc=org".into(),
            user_name: "frank".into(),
            created_at: now,
            expires_at: now + chrono::Duration::days(1),
        })
        .await
        .expect("welcome link");
    // A lease that ran out long ago (a finished sweep's), and a rate bucket used up.
    let past = Utc
        .with_ymd_and_hms(2020, 1, 1, 0, 0, 0)
        .single()
        .expect("time");
    assert!(
        store
            .acquire_lease(
                "expiry-sweep",
                "host-a",
                past,
                past + chrono::Duration::minutes(5)
            )
            .await
            .expect("lease")
    );
    let quota = RateQuota::new(Duration::from_secs(60), 3).expect("quota");
    let taken = store
        .take_rate("reset:erin", quota, 3, t0())
        .await
        .expect("rate");
    assert_eq!(taken.granted, 3);

    Written {
        token: token.token.expose().to_string(),
        mail_ids: vec![pending_id, sent_id, dead_id],
        mail_secret,
        notice_keys,
        sweep_id,
        job_id,
        session_hash,
        flow_hash,
        welcome_hash,
        now,
    }
}

/// Everything the test wrote, as the `Store` trait reads it back.
#[derive(Debug, PartialEq)]
struct Snapshot {
    tokens: Vec<TokenRecord>,
    chain: Vec<ChainedAuditRecord>,
    seals: Vec<StoredAuditSeal>,
    mail: Vec<Option<OutboxMessage>>,
    outbox: OutboxCounts,
    dead: Vec<OutboxMessage>,
    notices: Vec<bool>,
    runs: Vec<SweepRun>,
    report: Vec<SweepReportLine>,
    job: Option<JobRecord>,
    items: Vec<JobItem>,
    setting: Option<serde_json::Value>,
    session: Option<SessionRecord>,
    flow: Option<FlowRecord>,
    requests: Vec<ResetRequestRecord>,
    welcome: Option<WelcomeLinkRecord>,
    revocations: i64,
}

async fn snapshot(store: &dyn Store, w: &Written) -> Snapshot {
    let mut mail = Vec::new();
    for id in &w.mail_ids {
        mail.push(store.get_mail(*id).await.expect("mail"));
    }
    Snapshot {
        tokens: store.list_tokens().await.expect("tokens"),
        chain: store.audit_chain_page(0, None, 1000).await.expect("chain"),
        seals: store.audit_seals_page(0, 1000).await.expect("seals"),
        mail,
        outbox: store.outbox_counts().await.expect("counts"),
        dead: store.list_dead_mail(None, 100).await.expect("dead"),
        notices: store
            .notices_recorded(&w.notice_keys)
            .await
            .expect("notices"),
        runs: store.list_sweep_runs(100).await.expect("runs"),
        report: store
            .sweep_report_page(&w.sweep_id, None, 100)
            .await
            .expect("report"),
        job: store.get_job(&w.job_id).await.expect("job"),
        items: store
            .job_items_page(&w.job_id, None, 100)
            .await
            .expect("items"),
        setting: store.get_setting("expiry.policy").await.expect("setting"),
        session: store
            .find_session_by_hash(&w.session_hash, w.now)
            .await
            .expect("session"),
        flow: store.find_flow(&w.flow_hash, w.now).await.expect("flow"),
        requests: store
            .list_reset_requests(None, None, 100)
            .await
            .expect("requests"),
        welcome: store
            .find_welcome_link(&w.welcome_hash, w.now)
            .await
            .expect("welcome"),
        revocations: store.revocation_mark().await.expect("revocations"),
    }
}

/// The whole move: copy, the same state through the trait, a second copy refused, and
/// the copied store carrying on (ids, chain, ledger, mail secret, rate bucket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filled_sqlite_store_arrives_whole_and_carries_on_in_postgres() {
    let Move {
        pg,
        database: _,
        _dir,
        source_path,
        target_path,
        source_config,
        sqlite,
    } = a_move().await;
    let target_config = load(&target_path);
    let written = fill(Arc::new(sqlite.clone()), &source_config).await;
    let before = snapshot(&sqlite, &written).await;
    sqlite.close().await;
    assert_eq!(before.chain.len(), 8);
    assert_eq!(before.seals.len(), 1);
    assert_eq!(before.notices, vec![true, true]);

    let (code, stdout, stderr) = copy(&source_path, &target_path);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for expected in [
        "audit_log",
        "notice_ledger",
        "chain intact",
        "1 seals checked",
        "next:",
    ] {
        assert!(stdout.contains(expected), "{expected}: {stdout}");
    }
    let outbox_line = stdout
        .lines()
        .find(|l| l.starts_with("outbox "))
        .unwrap_or_default();
    assert!(outbox_line.trim_end().ends_with(" 5"), "{stdout}");
    let output = format!("{stdout}{stderr}");
    for secret in [&written.token, &pg.password, &written.mail_secret] {
        assert!(!output.contains(secret.as_str()), "a secret in the output");
    }
    let first_hash = hex::encode(before.chain[0].hash.clone().unwrap_or_default());
    assert!(!output.contains(&first_hash), "a hash in the output");

    let store = lockbridge::app::open_store(&target_config)
        .await
        .expect("open PostgreSQL");
    let after = snapshot(store.as_ref(), &written).await;
    assert_eq!(after, before, "the same state through the Store trait");

    // A second copy into the same target is refused and changes nothing.
    let (code, stdout, stderr) = copy(&source_path, &target_path);
    assert_eq!(code, EXIT_CANTCREAT, "{stdout}{stderr}");
    assert!(
        stderr.contains("already holds lockbridge data") && stderr.contains("api_tokens: 2 rows"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was copied"), "{stderr}");
    assert_eq!(snapshot(store.as_ref(), &written).await, before);

    // The token authenticates with the new configuration's key.
    let tokens = lockbridge::app::token_service(&target_config, store.clone());
    let found = store
        .find_token_by_hash(&tokens.key().hash(&written.token))
        .await
        .expect("find token")
        .expect("the token is in force");
    assert_eq!(found.name, "entra-provisioning");
    // Notices already queued stay queued once: the sweep does not send them again.
    let again = NewOutboxMessage::new(
        "expiry-notice",
        "someone@example.org",
        json!({}),
        MailClass::Bulk,
        written.now,
    );
    for key in &written.notice_keys {
        assert!(
            !store
                .record_notice(key, None, &again)
                .await
                .expect("record notice"),
            "{key} was known"
        );
    }
    // The pending message is claimed with its secret, which opens with the new key.
    let claimed = store
        .claim_due_mail(
            written.now + chrono::Duration::hours(1),
            10,
            Duration::from_secs(60),
        )
        .await
        .expect("claim");
    let pending = claimed
        .iter()
        .find(|m| m.id == written.mail_ids[0])
        .expect("the pending message is claimable");
    let sealer = Sealer::new(derive_key(
        target_config.master_key.expose(),
        "outbox-secrets",
    ));
    let opened = sealer
        .open(pending.sealed_secret.as_deref().expect("sealed secret"))
        .expect("opens");
    assert_eq!(opened.expose(), written.mail_secret);
    // New ids go past the copied ones: outbox, audit log, seals.
    let next_mail = store
        .enqueue_mail(&NewOutboxMessage::new(
            "digest",
            "admins@example.org",
            json!({}),
            MailClass::Bulk,
            written.now,
        ))
        .await
        .expect("enqueue after the copy");
    // Three messages and two notices were copied.
    assert_eq!(next_mail, 6);
    assert_eq!(store.append_audit(&record(8)).await.expect("append"), 9);
    let key = lockbridge::app::seal_key(&target_config);
    seal(store.as_ref(), &key)
        .await
        .expect("seal")
        .expect("a new seal");
    let v = verify(store.as_ref(), &key).await.expect("verify");
    assert_eq!(v.problem, None, "{v:?}");
    assert_eq!((v.records, v.last_id, v.seals), (9, Some(9), 2));
    // The rate bucket was used up at t0 on SQLite; it still is.
    let quota = RateQuota::new(Duration::from_secs(60), 3).expect("quota");
    let taken = store
        .take_rate("reset:erin", quota, 1, t0())
        .await
        .expect("rate");
    assert_eq!(taken.granted, 0);

    let (code, stdout, stderr) = run_cli(&target_path, &["audit", "verify"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("9 records") && stdout.contains("chain intact"),
        "{stdout}"
    );
}

/// A target some instance already wrote to is refused, named, and left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_holding_data_is_refused_and_left_alone() {
    let Move {
        pg: _pg,
        database: _,
        _dir,
        source_path,
        target_path,
        source_config,
        sqlite,
    } = a_move().await;
    let target_config = load(&target_path);
    lockbridge::app::token_service(&source_config, Arc::new(sqlite.clone()))
        .create("from-sqlite", Role::Auditor)
        .await
        .expect("token");
    sqlite.close().await;

    let target = lockbridge::app::open_store(&target_config)
        .await
        .expect("open PostgreSQL");
    lockbridge::app::token_service(&target_config, target.clone())
        .create("already-here", Role::GlobalAdmin)
        .await
        .expect("token");

    let (code, stdout, stderr) = copy(&source_path, &target_path);
    assert_eq!(code, EXIT_CANTCREAT, "{stdout}{stderr}");
    assert!(stderr.contains("api_tokens: 1 rows"), "{stderr}");
    assert!(
        stderr.contains("new, empty database") || stderr.contains("empty store"),
        "{stderr}"
    );
    let names: Vec<String> = target
        .list_tokens()
        .await
        .expect("tokens")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["already-here".to_string()]);
    assert!(
        target
            .audit_chain_page(0, None, 10)
            .await
            .expect("chain")
            .is_empty()
    );
}

/// A table the copy does not know stops it before anything is written: the target
/// does not even get the schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_table_stops_the_copy_before_anything_is_written() {
    let Move {
        pg,
        database,
        _dir,
        source_path,
        target_path,
        source_config,
        sqlite,
    } = a_move().await;
    sqlite.close().await;
    write_around_lockbridge(&source_config, "CREATE TABLE surprise (x TEXT)").await;

    let (code, stdout, stderr) = copy(&source_path, &target_path);
    assert_eq!(code, 70, "{stdout}{stderr}");
    assert!(stderr.contains("`surprise` (only in SQLite)"), "{stderr}");

    let target = sqlx::PgPool::connect(&pg.url_of(&database))
        .await
        .expect("connect");
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_one(&target)
    .await
    .expect("count tables");
    assert_eq!(tables, 0, "the schema was rolled back with the rest");
}

/// An audit record whose time is not in lockbridge's fixed format (written around
/// lockbridge) cannot keep the text its hash covers: refused, naming it, nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_time_postgres_cannot_give_back_is_refused() {
    let Move {
        pg,
        database,
        _dir,
        source_path,
        target_path,
        source_config,
        sqlite,
    } = a_move().await;
    sqlite.append_audit(&record(0)).await.expect("append");
    sqlite.close().await;
    write_around_lockbridge(
        &source_config,
        "INSERT INTO audit_log (at, actor, action, outcome) \
         VALUES ('2030-01-01T13:00:00+00:00', 'someone', 'poke', 'success')",
    )
    .await;

    let (code, stdout, stderr) = copy(&source_path, &target_path);
    assert_eq!(code, 65, "{stdout}{stderr}");
    assert!(
        stderr.contains("audit_log, row 2") && stderr.contains("2030-01-01T13:00:00+00:00"),
        "{stderr}"
    );
    let target = sqlx::PgPool::connect(&pg.url_of(&database))
        .await
        .expect("connect");
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_one(&target)
    .await
    .expect("count tables");
    assert_eq!(tables, 0, "nothing was written");
}

/// Every table either migration set creates is copied or listed as not copied (with a
/// reason), and every copied table is in both: a new migration must say how its table
/// moves.
#[test]
fn every_table_of_both_schemas_is_accounted_for() {
    let tables = |dialect: &str| -> BTreeSet<String> {
        let dir = harness::repo_root()
            .join("src/store/migrations")
            .join(dialect);
        let mut names = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).expect("migrations") {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
            for line in text.lines() {
                let Some(rest) = line.trim().strip_prefix("CREATE TABLE ") else {
                    continue;
                };
                let rest = rest.strip_prefix("IF NOT EXISTS ").unwrap_or(rest);
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                names.insert(name);
            }
        }
        names
    };
    let sqlite = tables("sqlite");
    let postgres = tables("postgres");
    let not_copied: BTreeSet<String> = NOT_COPIED
        .iter()
        .map(|(t, reason)| {
            assert!(!reason.is_empty(), "{t} needs a reason");
            t.to_string()
        })
        .collect();
    for table in sqlite.union(&postgres) {
        assert!(
            COPIED.contains(&table.as_str()) || not_copied.contains(table),
            "table `{table}` is neither copied nor listed as not copied (src/store/copy.rs)"
        );
    }
    for table in COPIED {
        assert!(
            sqlite.contains(*table) && postgres.contains(*table),
            "`{table}` is copied but not in both schemas"
        );
    }
}

/// Different master keys would make the copy useless (keyed hashes, sealed secrets,
/// signed seals): refused before anything is opened.
#[test]
fn different_master_keys_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = write_config(dir.path(), "sqlite.toml", KEY, "");
    let target = unreachable_target(dir.path(), OTHER_KEY);
    let (code, stdout, stderr) = copy(&source, &target);
    assert_eq!(code, 78, "{stdout}{stderr}");
    assert!(stderr.contains("different master keys"), "{stderr}");
    assert!(
        !stderr.contains(KEY) && !stderr.contains(OTHER_KEY),
        "{stderr}"
    );
}

/// A lease in force on the source means an instance is at work: refused, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_in_use_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = write_config(dir.path(), "sqlite.toml", KEY, "");
    let target = unreachable_target(dir.path(), KEY);
    let config = load(&source);
    let sqlite = SqliteStore::open(&config.store_path)
        .await
        .expect("open SQLite");
    let now = Utc::now();
    assert!(
        sqlite
            .acquire_lease(
                "expiry-sweep",
                "host-a",
                now,
                now + chrono::Duration::minutes(5)
            )
            .await
            .expect("lease")
    );
    sqlite.close().await;
    let (code, stdout, stderr) = copy(&source, &target);
    assert_eq!(code, 69, "{stdout}{stderr}");
    assert!(
        stderr.contains("in use") && stderr.contains("expiry-sweep"),
        "{stderr}"
    );
}

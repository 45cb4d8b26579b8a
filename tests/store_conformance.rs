//! The [`Store`] contract, written once and run against every backend.
//!
//! Each test speaks to the store only through `Arc<dyn Store>` (no SQL, nothing of one
//! backend), so what passes here is what every backend promises. The tests are grouped
//! by the trait's method groups; each says why its contract matters, most often because
//! several lockbridge instances share one database and must not step on each other.
//!
//! # Adding a backend
//!
//! A backend is one more variant of [`Database`] (how to get a fresh, empty database for
//! one test, and how to open another instance on it) and one more line in the
//! `backends!` macro, which turns every test below into one test per backend:
//! `tokens::a_revoked_token_is_never_found::sqlite`, `...::postgres`, and so on. Run one
//! backend with `cargo nextest run --test store_conformance -E 'test(/::sqlite$/)'`.

mod harness;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use lockbridge::store::chain::{GENESIS, record_hash};
use lockbridge::store::{
    AuditQuery, AuditSeal, JobItemOutcome, MailClass, NewAuditRecord, NewFlow, NewJob,
    NewOutboxMessage, NewResetRequest, NewSession, NewToken, NewWelcomeLink, OutboxStatus,
    PostgresOptions, PostgresStore, PostgresTls, SqliteStore, Store, StoreError, SweepReportLine,
    SweepRun, sweep_status,
};
use serde_json::json;
use tempfile::TempDir;

/// One test's database, empty at the start. Every [`Database::instance`] is a separate
/// store on it, as a separate lockbridge instance would open it.
enum Database {
    /// A SQLite file in a temporary folder.
    Sqlite { dir: TempDir },
    /// A fresh database created for the test on the sandbox server (the one
    /// `scripts/test` shares, else one of the test's own); `instance` connects to it.
    Postgres {
        server: Box<harness::Postgres>,
        database: String,
    },
}

impl Database {
    async fn sqlite() -> Database {
        Database::Sqlite {
            dir: tempfile::tempdir().expect("temporary folder"),
        }
    }

    async fn postgres() -> Database {
        // Starting a server (when none is shared) waits on a child process.
        let server = tokio::task::spawn_blocking(harness::Postgres::shared_or_start)
            .await
            .expect("start PostgreSQL");
        let (database, _) = server.create_fresh_database();
        Database::Postgres {
            server: Box::new(server),
            database,
        }
    }

    /// Another instance on this database (opening it brings the schema up to date).
    async fn instance(&self) -> Arc<dyn Store> {
        match self {
            Database::Sqlite { dir } => Arc::new(
                SqliteStore::open(&dir.path().join("lockbridge.db"))
                    .await
                    .expect("open the SQLite store"),
            ),
            Database::Postgres { server, database } => Arc::new(
                PostgresStore::connect(&postgres_options(server, database))
                    .await
                    .expect("connect the PostgreSQL store"),
            ),
        }
    }
}

/// How lockbridge would be configured for `database` on the sandbox server (on
/// 127.0.0.1, so without TLS; the password apart from the URL).
fn postgres_options(server: &harness::Postgres, database: &str) -> PostgresOptions {
    PostgresOptions {
        url: format!(
            "postgres://{}@{}:{}/{database}",
            server.user, server.host, server.port
        ),
        password: Some(server.password.clone()),
        ca_file: None,
        tls: PostgresTls::Off,
        max_connections: 4,
        connect_timeout: Duration::from_secs(5),
    }
}

/// Runs each named test on every backend: `backends!(name, ...)` beside `async fn
/// name(db: &Database)` makes the module `name` with one test per backend, each on a
/// fresh [`Database`]. A test function left out of the list is dead code, which the
/// lints refuse, so none is forgotten.
macro_rules! backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(&super::Database::sqlite().await).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(&super::Database::postgres().await).await;
                }
            }
        )*
    };
}

/// A fixed instant, so that expiry is decided by the times the tests pass, not the clock.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0)
        .single()
        .expect("a valid time")
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

const LEASE: Duration = Duration::from_secs(60);

fn mail(n: usize, class: MailClass, created_at: DateTime<Utc>) -> NewOutboxMessage {
    NewOutboxMessage::new(
        "notice",
        format!("user{n}@example.org"),
        json!({ "n": n }),
        class,
        created_at,
    )
}

fn with_secret(mut m: NewOutboxMessage) -> NewOutboxMessage {
    m.sealed_secret = Some(b"sealed secret".to_vec());
    m
}

mod ping {
    use super::*;

    backends!(a_fresh_store_answers);

    /// Readiness checks ask the store whether the database answers.
    async fn a_fresh_store_answers(db: &Database) {
        db.instance().await.ping().await.expect("ping");
    }
}

/// API tokens: an administrator names them; the name identifies the token to revoke.
mod tokens {
    use super::*;

    backends!(
        a_token_is_found_by_its_hash,
        names_are_unique_among_tokens_in_force,
        a_revoked_token_is_never_found,
        the_list_holds_revoked_tokens_too_oldest_first
    );

    fn token(name: &str, hash: &[u8], at: DateTime<Utc>) -> NewToken {
        NewToken {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.into(),
            role: "admin".into(),
            hash: hash.to_vec(),
            created_at: at,
        }
    }

    /// A request authenticates by the token's keyed hash alone.
    async fn a_token_is_found_by_its_hash(db: &Database) {
        let store = db.instance().await;
        let t = token("ci", b"hash-ci", t0());
        store.insert_token(&t).await.expect("insert");
        let found = store.find_token_by_hash(b"hash-ci").await.expect("find");
        let found = found.expect("the token is found");
        assert_eq!(
            (found.id.as_str(), found.name.as_str()),
            (t.id.as_str(), "ci")
        );
        assert_eq!(found.role, "admin");
        assert_eq!(found.created_at, t0());
        assert_eq!(found.revoked_at, None);
        assert_eq!(
            store.find_token_by_hash(b"other").await.expect("find"),
            None
        );
    }

    /// "Revoke the token named ci" must name one token: two in force may not share a
    /// name, but a revoked token's name can be given again.
    async fn names_are_unique_among_tokens_in_force(db: &Database) {
        let store = db.instance().await;
        store
            .insert_token(&token("ci", b"h1", t0()))
            .await
            .expect("insert");
        let clash = store.insert_token(&token("ci", b"h2", t0())).await;
        assert!(
            matches!(clash, Err(StoreError::Conflict("token name"))),
            "{clash:?}"
        );
        assert!(store.revoke_token("ci").await.expect("revoke"));
        store
            .insert_token(&token("ci", b"h2", t0() + secs(1)))
            .await
            .expect("the name is free again once revoked");
    }

    /// A revoked token must stop working at once, on every instance.
    async fn a_revoked_token_is_never_found(db: &Database) {
        let a = db.instance().await;
        let b = db.instance().await;
        a.insert_token(&token("ci", b"h1", t0()))
            .await
            .expect("insert");
        assert!(b.find_token_by_hash(b"h1").await.expect("find").is_some());
        assert!(a.revoke_token("ci").await.expect("revoke"));
        assert_eq!(b.find_token_by_hash(b"h1").await.expect("find"), None);
        assert!(
            !a.revoke_token("ci").await.expect("revoke again"),
            "already revoked"
        );
        assert!(!a.revoke_token("nobody").await.expect("revoke unknown"));
    }

    /// The token list is the administrator's record of what was ever issued.
    async fn the_list_holds_revoked_tokens_too_oldest_first(db: &Database) {
        let store = db.instance().await;
        store
            .insert_token(&token("b-second", b"h2", t0() + secs(1)))
            .await
            .expect("insert");
        store
            .insert_token(&token("a-first", b"h1", t0()))
            .await
            .expect("insert");
        store.revoke_token("a-first").await.expect("revoke");
        let list = store.list_tokens().await.expect("list");
        let names: Vec<&str> = list.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a-first", "b-second"]);
        assert!(list[0].revoked_at.is_some());
        assert_eq!(list[1].revoked_at, None);
    }
}

/// Administrators' sessions: a cookie's keyed hash, good until it expires or is revoked.
mod sessions {
    use super::*;

    backends!(
        a_session_holds_until_it_expires,
        a_revoked_session_is_never_found,
        an_expired_session_cannot_be_revoked,
        a_second_session_with_the_same_hash_is_refused
    );

    fn session(id: &str, hash: &[u8], expires_at: DateTime<Utc>) -> NewSession {
        NewSession {
            id: id.into(),
            hash: hash.to_vec(),
            user_dn: "uid=alice,ou=people,dc=example,dc=org".into(),
            user_name: "alice".into(),
            roles: vec!["helpdesk".into(), "auditor".into()],
            created_at: t0(),
            expires_at,
        }
    }

    /// A session signed in on one instance must work on the others, until it expires.
    async fn a_session_holds_until_it_expires(db: &Database) {
        let a = db.instance().await;
        let b = db.instance().await;
        a.insert_session(&session("s1", b"h1", t0() + secs(3600)))
            .await
            .expect("insert");
        let found = b
            .find_session_by_hash(b"h1", t0() + secs(3599))
            .await
            .expect("find")
            .expect("in force");
        assert_eq!(found.id, "s1");
        assert_eq!(found.user_name, "alice");
        assert_eq!(found.user_dn, "uid=alice,ou=people,dc=example,dc=org");
        assert_eq!(found.roles, ["helpdesk", "auditor"]);
        assert_eq!(found.expires_at, t0() + secs(3600));
        for at in [t0() + secs(3600), t0() + secs(7200)] {
            assert_eq!(b.find_session_by_hash(b"h1", at).await.expect("find"), None);
        }
        assert_eq!(
            b.find_session_by_hash(b"other", t0()).await.expect("find"),
            None
        );
    }

    /// Signing out must end the session everywhere; ending it twice says so.
    async fn a_revoked_session_is_never_found(db: &Database) {
        let a = db.instance().await;
        let b = db.instance().await;
        a.insert_session(&session("s1", b"h1", t0() + secs(3600)))
            .await
            .expect("insert");
        assert!(
            b.revoke_session("s1", t0() + secs(10))
                .await
                .expect("revoke")
        );
        assert_eq!(
            a.find_session_by_hash(b"h1", t0() + secs(11))
                .await
                .expect("find"),
            None
        );
        assert!(
            !a.revoke_session("s1", t0() + secs(12))
                .await
                .expect("revoke again")
        );
        assert!(
            !a.revoke_session("unknown", t0())
                .await
                .expect("revoke unknown")
        );
    }

    /// An expired session has already ended: revoking it reports nothing ended.
    async fn an_expired_session_cannot_be_revoked(db: &Database) {
        let store = db.instance().await;
        store
            .insert_session(&session("s1", b"h1", t0() + secs(60)))
            .await
            .expect("insert");
        assert!(
            !store
                .revoke_session("s1", t0() + secs(60))
                .await
                .expect("revoke")
        );
    }

    /// Session ids and hashes identify one session each.
    async fn a_second_session_with_the_same_hash_is_refused(db: &Database) {
        let store = db.instance().await;
        store
            .insert_session(&session("s1", b"h1", t0() + secs(60)))
            .await
            .expect("insert");
        let clash = store
            .insert_session(&session("s2", b"h1", t0() + secs(60)))
            .await;
        assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
    }
}

/// Bulk jobs: a job and its items survive a stop, so any instance can resume it, and
/// the chosen passwords are given out once.
mod jobs {
    use super::*;

    backends!(
        a_new_job_is_running_with_every_item_pending,
        open_items_are_paged_in_order,
        only_pending_items_are_marked_writing,
        unanswered_writes_are_counted_on_open_items_only,
        finished_items_are_counted_by_outcome,
        the_report_is_taken_once_and_erases_the_passwords,
        concurrent_report_takers_get_it_once
    );

    fn job(id: &str, created_at: DateTime<Utc>) -> NewJob {
        NewJob {
            id: id.into(),
            kind: "password-reset".into(),
            actor: "alice".into(),
            actor_dn: Some("uid=alice,ou=people,dc=example,dc=org".into()),
            roles: vec!["helpdesk".into()],
            params: json!({ "notify": true }),
            sealed_secret: Some(b"sealed chosen password".to_vec()),
            created_at,
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("user{i:03}")).collect()
    }

    fn outcome(seq: u64, status: &'static str, sealed: Option<&[u8]>) -> JobItemOutcome {
        JobItemOutcome {
            seq,
            status,
            code: (status != "done").then(|| format!("code-{seq}")),
            changed: status == "done",
            sealed_password: sealed.map(<[u8]>::to_vec),
        }
    }

    /// A job is saved with all its accounts or not at all, and is seen as running (to
    /// be resumed) by every instance.
    async fn a_new_job_is_running_with_every_item_pending(db: &Database) {
        let a = db.instance().await;
        let b = db.instance().await;
        a.insert_job(&job("j2", t0() + secs(1)), &names(3))
            .await
            .expect("insert");
        a.insert_job(&job("j1", t0()), &names(2))
            .await
            .expect("insert");
        let j = b.get_job("j2").await.expect("get").expect("the job exists");
        assert_eq!(j.kind, "password-reset");
        assert_eq!(j.actor, "alice");
        assert_eq!(j.roles, ["helpdesk"]);
        assert_eq!(j.params, json!({ "notify": true }));
        assert_eq!(
            j.sealed_secret.as_deref(),
            Some(&b"sealed chosen password"[..])
        );
        assert_eq!(j.status, "running");
        assert_eq!(
            (j.total, j.open, j.done, j.refused, j.failed),
            (3, 3, 0, 0, 0)
        );
        assert!(!j.report_taken);
        assert_eq!(j.finished_at, None);
        let running: Vec<String> = b
            .running_jobs()
            .await
            .expect("running")
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(running, ["j1", "j2"], "oldest first");
        let items = b.job_items_page("j2", None, 10).await.expect("items");
        let users: Vec<&str> = items.iter().map(|i| i.user_name.as_str()).collect();
        assert_eq!(users, ["user000", "user001", "user002"]);
        assert!(items.iter().all(|i| i.status == "pending"));
        assert_eq!(b.get_job("nope").await.expect("get"), None);
        let again = a.insert_job(&job("j1", t0()), &names(1)).await;
        assert!(again.is_err(), "a job id is used once: {again:?}");
    }

    /// A resumed job walks its open items page by page, in order, and sees items
    /// marked `writing` (a write may have happened before the stop).
    async fn open_items_are_paged_in_order(db: &Database) {
        let store = db.instance().await;
        store
            .insert_job(&job("j", t0()), &names(7))
            .await
            .expect("insert");
        store
            .mark_job_items_writing("j", &[(1, b"p1".to_vec())])
            .await
            .expect("writing");
        store
            .finish_job_items("j", &[outcome(2, "done", None)])
            .await
            .expect("finish");
        let first = store.open_job_items("j", None, 3).await.expect("page");
        let seqs: Vec<u64> = first.iter().map(|i| i.seq).collect();
        assert_eq!(seqs, [0, 1, 3]);
        assert_eq!(first[1].status, "writing");
        assert_eq!(first[1].sealed_password.as_deref(), Some(&b"p1"[..]));
        let rest = store.open_job_items("j", Some(3), 10).await.expect("page");
        let seqs: Vec<u64> = rest.iter().map(|i| i.seq).collect();
        assert_eq!(seqs, [4, 5, 6]);
        assert!(
            store
                .open_job_items("j", Some(6), 10)
                .await
                .expect("page")
                .is_empty()
        );
        let page = store.job_items_page("j", Some(4), 2).await.expect("page");
        let seqs: Vec<u64> = page.iter().map(|i| i.seq).collect();
        assert_eq!(seqs, [5, 6]);
    }

    /// Only a pending item becomes `writing`: an item already finished keeps its
    /// outcome, so a resumed job never writes an account twice.
    async fn only_pending_items_are_marked_writing(db: &Database) {
        let store = db.instance().await;
        store
            .insert_job(&job("j", t0()), &names(2))
            .await
            .expect("insert");
        store
            .finish_job_items("j", &[outcome(0, "refused", None)])
            .await
            .expect("finish");
        store
            .mark_job_items_writing("j", &[(0, b"p0".to_vec()), (1, b"p1".to_vec())])
            .await
            .expect("writing");
        let items = store.job_items_page("j", None, 10).await.expect("items");
        assert_eq!(items[0].status, "refused");
        assert_eq!(items[1].status, "writing");
        store
            .mark_job_items_writing("j", &[])
            .await
            .expect("nothing to mark");
    }

    /// Each run that left an item open after its write went unanswered counts once, on
    /// that item only, and never on a settled one; a resumed run reads the count.
    async fn unanswered_writes_are_counted_on_open_items_only(db: &Database) {
        let a = db.instance().await;
        let b = db.instance().await;
        a.insert_job(&job("j", t0()), &names(3))
            .await
            .expect("insert");
        a.mark_job_items_writing("j", &[(1, b"p1".to_vec())])
            .await
            .expect("writing");
        a.finish_job_items("j", &[outcome(2, "done", None)])
            .await
            .expect("finish");
        for _ in 0..2 {
            a.count_unanswered_job_items("j", &[1, 2])
                .await
                .expect("count");
        }
        a.count_unanswered_job_items("j", &[])
            .await
            .expect("nothing to count");
        let open = b.open_job_items("j", None, 10).await.expect("open");
        let counts: Vec<(u64, u32)> = open.iter().map(|i| (i.seq, i.unanswered)).collect();
        assert_eq!(
            counts,
            [(0, 0), (1, 2)],
            "the settled item 2 is not counted"
        );
        let page = b.job_items_page("j", None, 10).await.expect("items");
        assert_eq!(page[2].unanswered, 0);
    }

    /// Progress is counted by outcome, so the job's page shows it without reading items.
    async fn finished_items_are_counted_by_outcome(db: &Database) {
        let store = db.instance().await;
        store
            .insert_job(&job("j", t0()), &names(5))
            .await
            .expect("insert");
        store
            .finish_job_items(
                "j",
                &[
                    outcome(0, "done", Some(b"p0")),
                    outcome(1, "done", Some(b"p1")),
                    outcome(2, "refused", None),
                    outcome(3, "failed", None),
                ],
            )
            .await
            .expect("finish");
        let j = store.get_job("j").await.expect("get").expect("job");
        assert_eq!(
            (j.total, j.done, j.refused, j.failed, j.open),
            (5, 2, 1, 1, 1)
        );
        let items = store.job_items_page("j", None, 10).await.expect("items");
        assert_eq!(items[2].code.as_deref(), Some("code-2"));
        assert!(items[0].changed && !items[2].changed);
        let open: Vec<u64> = store
            .open_job_items("j", None, 10)
            .await
            .expect("open")
            .iter()
            .map(|i| i.seq)
            .collect();
        assert_eq!(open, [4]);
    }

    /// The chosen passwords are secrets: the job's own one is erased when it ends, the
    /// accounts' ones are handed out in one report, once, and erased as they are.
    async fn the_report_is_taken_once_and_erases_the_passwords(db: &Database) {
        let store = db.instance().await;
        store
            .insert_job(&job("j", t0()), &names(2))
            .await
            .expect("insert");
        store
            .finish_job_items(
                "j",
                &[outcome(0, "done", Some(b"p0")), outcome(1, "failed", None)],
            )
            .await
            .expect("finish");
        assert_eq!(
            store.take_job_report("j", t0()).await.expect("take"),
            None,
            "no report while the job runs"
        );
        store
            .finish_job("j", "completed", None, t0() + secs(5))
            .await
            .expect("finish job");
        let j = store.get_job("j").await.expect("get").expect("job");
        assert_eq!(j.status, "completed");
        assert_eq!(j.finished_at, Some(t0() + secs(5)));
        assert_eq!(j.sealed_secret, None, "the job's chosen password is erased");
        assert!(store.running_jobs().await.expect("running").is_empty());
        let report = store
            .take_job_report("j", t0() + secs(6))
            .await
            .expect("take")
            .expect("the first take gets the report");
        assert_eq!(report.len(), 2);
        assert_eq!(report[0].sealed_password.as_deref(), Some(&b"p0"[..]));
        assert_eq!(report[1].status, "failed");
        assert_eq!(
            store
                .take_job_report("j", t0() + secs(7))
                .await
                .expect("take"),
            None
        );
        assert!(
            store
                .get_job("j")
                .await
                .expect("get")
                .expect("job")
                .report_taken
        );
        let items = store.job_items_page("j", None, 10).await.expect("items");
        assert!(items.iter().all(|i| i.sealed_password.is_none()));
        assert!(
            store
                .open_job_items("j", None, 10)
                .await
                .expect("open")
                .iter()
                .all(|i| i.sealed_password.is_none())
        );
    }

    /// Two instances asked for the same report at once: one gets it, the other none.
    async fn concurrent_report_takers_get_it_once(db: &Database) {
        let a = db.instance().await;
        let b = db.instance().await;
        a.insert_job(&job("j", t0()), &names(3))
            .await
            .expect("insert");
        a.finish_job("j", "failed", Some("directory down"), t0())
            .await
            .expect("finish");
        let (ra, rb) = tokio::join!(a.take_job_report("j", t0()), b.take_job_report("j", t0()));
        let taken = [ra.expect("take"), rb.expect("take")];
        assert_eq!(taken.iter().filter(|r| r.is_some()).count(), 1, "{taken:?}");
        let j = a.get_job("j").await.expect("get").expect("job");
        assert_eq!(j.error.as_deref(), Some("directory down"));
    }
}

/// The audit log: append-only, hash-chained, sealed; the evidence of who did what.
mod audit {
    use super::*;

    backends!(
        records_are_listed_newest_first_with_filters_and_paging,
        appends_form_one_hash_chain,
        concurrent_instances_append_to_one_chain,
        announced_records_are_gathered_and_a_stalled_one_holds_no_one,
        the_chain_is_read_forward_after_an_id_or_from_a_time,
        seals_are_appended_and_read_in_order
    );

    fn record(n: usize, actor: &str, action: &str, target: &str) -> NewAuditRecord {
        NewAuditRecord {
            at: t0() + secs(n as i64),
            request_id: Some(format!("req-{n}")),
            actor: actor.into(),
            action: action.into(),
            target: Some(target.into()),
            outcome: "success".into(),
            detail: Some(json!({ "n": n }).to_string()),
        }
    }

    /// Every record links to the one before it and its hash covers its fields.
    async fn assert_one_chain(store: &dyn Store) -> usize {
        let page = store
            .audit_chain_page(0, None, 1000)
            .await
            .expect("chain page");
        let mut prev = GENESIS.to_vec();
        for r in &page {
            assert_eq!(
                r.prev_hash.as_deref(),
                Some(prev.as_slice()),
                "record {}",
                r.record.id
            );
            let hash = record_hash(&prev, &r.chain_fields());
            assert_eq!(
                r.hash.as_deref(),
                Some(hash.as_slice()),
                "record {}",
                r.record.id
            );
            prev = hash;
        }
        let head = store.audit_head().await.expect("head");
        assert_eq!(head, page.last().map(|r| (r.record.id, prev.clone())));
        page.len()
    }

    /// Records come back as written, newest first, filtered by actor, target and
    /// action together, a page at a time.
    async fn records_are_listed_newest_first_with_filters_and_paging(db: &Database) {
        let store = db.instance().await;
        let mut ids = Vec::new();
        for (n, (actor, action, target)) in [
            ("alice", "password.reset", "bob"),
            ("alice", "account.unlock", "bob"),
            ("carol", "password.reset", "bob"),
            ("alice", "password.reset", "dave"),
            ("alice", "password.reset", "bob"),
        ]
        .into_iter()
        .enumerate()
        {
            ids.push(
                store
                    .append_audit(&record(n, actor, action, target))
                    .await
                    .expect("append"),
            );
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
        let all = store
            .list_audit(&AuditQuery {
                limit: 100,
                ..AuditQuery::default()
            })
            .await
            .expect("list");
        let listed: Vec<i64> = all.iter().map(|r| r.id).collect();
        let mut newest_first = ids.clone();
        newest_first.reverse();
        assert_eq!(listed, newest_first);
        let last = &all[0];
        assert_eq!(last.at, t0() + secs(4));
        assert_eq!(last.request_id.as_deref(), Some("req-4"));
        assert_eq!(last.outcome, "success");
        assert_eq!(last.detail.as_deref(), Some(r#"{"n":4}"#));

        let q = AuditQuery {
            actor: Some("alice".into()),
            action: Some("password.reset".into()),
            target: Some("bob".into()),
            limit: 100,
            ..AuditQuery::default()
        };
        let found: Vec<i64> = store
            .list_audit(&q)
            .await
            .expect("list")
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(found, [ids[4], ids[0]]);

        let page1 = store
            .list_audit(&AuditQuery {
                actor: Some("alice".into()),
                limit: 2,
                ..AuditQuery::default()
            })
            .await
            .expect("page");
        let page2 = store
            .list_audit(&AuditQuery {
                actor: Some("alice".into()),
                before_id: page1.last().map(|r| r.id),
                limit: 2,
                ..AuditQuery::default()
            })
            .await
            .expect("page");
        let paged: Vec<i64> = page1.iter().chain(&page2).map(|r| r.id).collect();
        assert_eq!(paged, [ids[4], ids[3], ids[1], ids[0]]);
        let empty = store
            .list_audit(&AuditQuery {
                limit: 0,
                ..AuditQuery::default()
            })
            .await
            .expect("list");
        assert!(empty.is_empty(), "a page of 0 is empty");
    }

    /// The chain is what makes a removed or altered record visible: each record's
    /// `prev_hash` is the hash of the one before, from the genesis hash on.
    async fn appends_form_one_hash_chain(db: &Database) {
        let store = db.instance().await;
        assert_eq!(store.audit_head().await.expect("head"), None);
        store
            .append_audit(&record(0, "alice", "a", "x"))
            .await
            .expect("append");
        store
            .append_audit_many((1..5).map(|n| record(n, "bob", "b", "y")).collect())
            .await
            .expect("append many");
        store
            .append_audit_many(Vec::new())
            .await
            .expect("append nothing");
        assert_eq!(assert_one_chain(store.as_ref()).await, 5);
        let page = store.audit_chain_page(0, None, 10).await.expect("page");
        let actors: Vec<&str> = page.iter().map(|r| r.record.actor.as_str()).collect();
        assert_eq!(
            actors,
            ["alice", "bob", "bob", "bob", "bob"],
            "a batch keeps its order"
        );
    }

    /// Instances sharing a database append to one chain, never two forks.
    async fn concurrent_instances_append_to_one_chain(db: &Database) {
        let a = db.instance().await;
        let b = db.instance().await;
        let write = |store: Arc<dyn Store>, actor: &'static str| async move {
            for n in 0..10 {
                store
                    .append_audit(&record(n, actor, "x", "y"))
                    .await
                    .expect("append");
            }
        };
        tokio::join!(write(a.clone(), "a"), write(b.clone(), "b"));
        assert_eq!(assert_one_chain(a.as_ref()).await, 20);
        assert_eq!(assert_one_chain(b.as_ref()).await, 20);
    }

    /// Requests announce the writes whose record will follow, so that the writer can
    /// gather concurrent records into one synced commit. A write announced and never
    /// recorded (its directory hung) must not hold anyone's record for long, and records
    /// gathered that way are chained like any other.
    async fn announced_records_are_gathered_and_a_stalled_one_holds_no_one(db: &Database) {
        let store = db.instance().await;
        let stalled = store.pending_audit().announce();
        let started = std::time::Instant::now();
        for n in 0..20 {
            store
                .append_audit(&record(n, "alone", "x", "y"))
                .await
                .expect("append beside a stalled write");
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "20 appends beside a stalled write took {:?}",
            started.elapsed()
        );
        drop(stalled);
        let writers = (0..8).map(|w| {
            let store = store.clone();
            async move {
                for n in 0..10 {
                    let announced = store.pending_audit().announce();
                    tokio::time::sleep(Duration::from_millis(1 + ((w + n) % 3) as u64)).await;
                    drop(announced);
                    store
                        .append_audit(&record(n, &format!("w{w}"), "x", "y"))
                        .await
                        .expect("append");
                }
            }
        });
        futures::future::join_all(writers).await;
        assert_eq!(assert_one_chain(store.as_ref()).await, 100);
    }

    /// The verifier reads the chain forward, from where it stopped or from a date.
    async fn the_chain_is_read_forward_after_an_id_or_from_a_time(db: &Database) {
        let store = db.instance().await;
        store
            .append_audit_many((0..6).map(|n| record(n, "alice", "a", "x")).collect())
            .await
            .expect("append");
        let all = store.audit_chain_page(0, None, 100).await.expect("page");
        let ids: Vec<i64> = all.iter().map(|r| r.record.id).collect();
        let after: Vec<i64> = store
            .audit_chain_page(ids[1], None, 3)
            .await
            .expect("page")
            .iter()
            .map(|r| r.record.id)
            .collect();
        assert_eq!(after, ids[2..5]);
        let since: Vec<i64> = store
            .audit_chain_page(0, Some(t0() + secs(4)), 100)
            .await
            .expect("page")
            .iter()
            .map(|r| r.record.id)
            .collect();
        assert_eq!(since, ids[4..]);
        assert!(
            store
                .audit_chain_page(0, None, 0)
                .await
                .expect("page")
                .is_empty()
        );
        assert!(
            store
                .audit_chain_page(ids[5], None, 10)
                .await
                .expect("page")
                .is_empty()
        );
    }

    /// Seals (signed chain heads) are kept in order; the newest is what a verifier
    /// checks the head against.
    async fn seals_are_appended_and_read_in_order(db: &Database) {
        let store = db.instance().await;
        assert_eq!(store.last_audit_seal().await.expect("last"), None);
        let seal = |n: i64| AuditSeal {
            at: t0() + secs(n),
            record_id: n,
            head_hash: vec![n as u8; 32],
            mac: vec![0xa0 + n as u8; 32],
        };
        let mut ids = Vec::new();
        for n in 1..=4 {
            ids.push(store.append_audit_seal(&seal(n)).await.expect("seal"));
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        let page = store.audit_seals_page(ids[0], 2).await.expect("page");
        assert_eq!(page.len(), 2);
        assert_eq!((page[0].id, &page[0].seal), (ids[1], &seal(2)));
        assert_eq!((page[1].id, &page[1].seal), (ids[2], &seal(3)));
        let last = store
            .last_audit_seal()
            .await
            .expect("last")
            .expect("a seal");
        assert_eq!((last.id, last.seal), (ids[3], seal(4)));
        assert!(
            store
                .audit_seals_page(ids[3], 10)
                .await
                .expect("page")
                .is_empty()
        );
    }
}

/// The mail outbox: every instance's worker claims due messages under a lease, so a
/// message goes to one worker at a time, and secrets do not outlive delivery.
mod outbox {
    use super::*;

    backends!(
        a_queued_message_is_pending_and_due_at_once,
        a_claimed_message_is_not_claimed_again_until_its_lease_ends,
        a_worker_still_sending_extends_its_leases_but_not_a_lapsed_one,
        concurrent_claimers_never_share_a_message,
        transactional_mail_goes_first_then_oldest_due,
        claiming_by_class_takes_only_that_class,
        a_sent_message_loses_its_secret_and_is_not_claimed_again,
        a_failed_attempt_releases_the_lease_and_reschedules,
        dead_messages_lose_their_secret_and_are_listed_newest_first,
        marking_an_unknown_message_is_not_found,
        counts_by_status_class_and_retry,
        sent_mail_is_counted_by_class_since_a_time,
        held_mail_is_noted_once,
        stale_mail_is_dead_lettered_unless_leased
    );

    /// A queued message is due at once and has a Message-ID of its own, kept for
    /// every retry (a resend after a crash is recognisably the same message).
    async fn a_queued_message_is_pending_and_due_at_once(db: &Database) {
        let store = db.instance().await;
        let mut m = with_secret(mail(1, MailClass::Transactional, t0()));
        m.stale_after = Some(t0() + secs(3600));
        let id = store.enqueue_mail(&m).await.expect("enqueue");
        let other = store
            .enqueue_mail(&mail(2, MailClass::Bulk, t0()))
            .await
            .expect("enqueue");
        assert_ne!(id, other);
        let got = store.get_mail(id).await.expect("get").expect("the message");
        assert_eq!(got.status, OutboxStatus::Pending);
        assert_eq!(got.attempts, 0);
        assert_eq!(got.next_attempt_at, t0());
        assert_eq!(
            (got.template.as_str(), got.recipient.as_str()),
            ("notice", "user1@example.org")
        );
        assert_eq!(got.context, json!({ "n": 1 }));
        assert_eq!(got.sealed_secret.as_deref(), Some(&b"sealed secret"[..]));
        assert_eq!(got.class, MailClass::Transactional);
        assert_eq!(got.stale_after, Some(t0() + secs(3600)));
        assert!(got.message_id.starts_with('<') && got.message_id.ends_with("@lockbridge>"));
        let second = store
            .get_mail(other)
            .await
            .expect("get")
            .expect("the message");
        assert_ne!(got.message_id, second.message_id);
        assert_eq!(store.get_mail(other + 1000).await.expect("get"), None);
    }

    /// A worker extends the leases of the messages it is still sending; a lease that ran
    /// out, or a message already sent, is left alone.
    async fn a_worker_still_sending_extends_its_leases_but_not_a_lapsed_one(db: &Database) {
        let store = db.instance().await;
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(
                store
                    .enqueue_mail(&mail(n, MailClass::Transactional, t0()))
                    .await
                    .expect("enqueue"),
            );
        }
        let claimed = store.claim_due_mail(t0(), 10, LEASE).await.expect("claim");
        assert_eq!(claimed.len(), 3);
        store
            .mark_mail_sent(ids[2], t0() + secs(1))
            .await
            .expect("sent");
        let extended = store
            .extend_mail_leases(&ids, t0() + secs(30), t0() + secs(90))
            .await
            .expect("extend");
        assert_eq!(extended, 2, "the two still pending");
        assert!(
            store
                .claim_due_mail(t0() + secs(80), 10, LEASE)
                .await
                .expect("claim")
                .is_empty(),
            "held past the first lease's end"
        );
        // The worker stalls past the lease: the message is another's to take.
        let late = store
            .extend_mail_leases(&ids, t0() + secs(91), t0() + secs(150))
            .await
            .expect("extend");
        assert_eq!(late, 0, "a lapsed lease is not taken back");
        let retaken = store
            .claim_due_mail(t0() + secs(91), 10, LEASE)
            .await
            .expect("claim");
        assert_eq!(retaken.len(), 2);
        assert_eq!(
            store
                .extend_mail_leases(&[], t0(), t0() + secs(60))
                .await
                .expect("extend nothing"),
            0
        );
    }

    /// A claimed message belongs to its worker until the lease ends; then another
    /// may take it (the first worker died). Messages not yet due are left alone.
    async fn a_claimed_message_is_not_claimed_again_until_its_lease_ends(db: &Database) {
        let store = db.instance().await;
        let id = store
            .enqueue_mail(&mail(1, MailClass::Transactional, t0()))
            .await
            .expect("enqueue");
        store
            .enqueue_mail(&mail(2, MailClass::Transactional, t0() + secs(30)))
            .await
            .expect("enqueue a later one");
        let first = store.claim_due_mail(t0(), 10, LEASE).await.expect("claim");
        let ids: Vec<i64> = first.iter().map(|m| m.id).collect();
        assert_eq!(ids, [id], "only the due message");
        let during = store
            .claim_due_mail(t0() + secs(59), 10, LEASE)
            .await
            .expect("claim");
        assert!(during.iter().all(|m| m.id != id), "leased until t0 + 60 s");
        let after = store
            .claim_due_mail(t0() + secs(60), 10, LEASE)
            .await
            .expect("claim");
        assert!(after.iter().any(|m| m.id == id), "the lease ran out");
        assert!(
            store
                .claim_due_mail(t0(), 0, LEASE)
                .await
                .expect("claim")
                .is_empty()
        );
    }

    /// Two instances' workers never send the same message.
    async fn concurrent_claimers_never_share_a_message(db: &Database) {
        let a = db.instance().await;
        let b = db.instance().await;
        for n in 0..40 {
            a.enqueue_mail(&mail(n, MailClass::Bulk, t0()))
                .await
                .expect("enqueue");
        }
        let claim = |store: Arc<dyn Store>| async move {
            let mut got = Vec::new();
            for _ in 0..10 {
                got.extend(
                    store
                        .claim_due_mail(t0(), 3, LEASE)
                        .await
                        .expect("claim")
                        .into_iter()
                        .map(|m| m.id),
                );
            }
            got
        };
        let (ga, gb) = tokio::join!(claim(a.clone()), claim(b.clone()));
        let mut all: Vec<i64> = ga.into_iter().chain(gb).collect();
        let claimed = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), claimed, "no message claimed twice");
        assert_eq!(claimed, 40, "every message claimed once");
    }

    /// A user waiting for a temporary password goes before a batch of notices.
    async fn transactional_mail_goes_first_then_oldest_due(db: &Database) {
        let store = db.instance().await;
        let bulk_old = store
            .enqueue_mail(&mail(1, MailClass::Bulk, t0()))
            .await
            .expect("enqueue");
        let tx_new = store
            .enqueue_mail(&mail(2, MailClass::Transactional, t0() + secs(2)))
            .await
            .expect("enqueue");
        let tx_old = store
            .enqueue_mail(&mail(3, MailClass::Transactional, t0() + secs(1)))
            .await
            .expect("enqueue");
        let bulk_new = store
            .enqueue_mail(&mail(4, MailClass::Bulk, t0() + secs(1)))
            .await
            .expect("enqueue");
        let now = t0() + secs(10);
        let first: Vec<i64> = store
            .claim_due_mail(now, 3, LEASE)
            .await
            .expect("claim")
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(first, [tx_old, tx_new, bulk_old]);
        let rest: Vec<i64> = store
            .claim_due_mail(now, 3, LEASE)
            .await
            .expect("claim")
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(rest, [bulk_new]);
    }

    /// The bulk limits pace one class without holding up the other.
    async fn claiming_by_class_takes_only_that_class(db: &Database) {
        let store = db.instance().await;
        let bulk = store
            .enqueue_mail(&mail(1, MailClass::Bulk, t0()))
            .await
            .expect("enqueue");
        let tx = store
            .enqueue_mail(&mail(2, MailClass::Transactional, t0()))
            .await
            .expect("enqueue");
        let got: Vec<i64> = store
            .claim_due_mail_of_class(MailClass::Bulk, t0(), 10, LEASE)
            .await
            .expect("claim")
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(got, [bulk]);
        let again = store
            .claim_due_mail_of_class(MailClass::Bulk, t0(), 10, LEASE)
            .await
            .expect("claim");
        assert!(again.is_empty(), "leased");
        let got: Vec<i64> = store
            .claim_due_mail_of_class(MailClass::Transactional, t0(), 10, LEASE)
            .await
            .expect("claim")
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(got, [tx]);
    }

    /// Delivered: the sealed secret (a temporary password) is erased and the message
    /// is never sent again.
    async fn a_sent_message_loses_its_secret_and_is_not_claimed_again(db: &Database) {
        let store = db.instance().await;
        let id = store
            .enqueue_mail(&with_secret(mail(1, MailClass::Transactional, t0())))
            .await
            .expect("enqueue");
        store.claim_due_mail(t0(), 10, LEASE).await.expect("claim");
        store
            .mark_mail_sent(id, t0() + secs(1))
            .await
            .expect("sent");
        let m = store.get_mail(id).await.expect("get").expect("message");
        assert_eq!(m.status, OutboxStatus::Sent);
        assert_eq!(m.sealed_secret, None);
        assert_eq!(m.sent_at, Some(t0() + secs(1)));
        assert_eq!(m.attempts, 1);
        assert!(
            store
                .claim_due_mail(t0() + secs(3600), 10, LEASE)
                .await
                .expect("claim")
                .is_empty()
        );
    }

    /// A failed attempt is counted and retried at the time the worker chose, even if
    /// that is before the lease would have ended.
    async fn a_failed_attempt_releases_the_lease_and_reschedules(db: &Database) {
        let store = db.instance().await;
        let id = store
            .enqueue_mail(&with_secret(mail(1, MailClass::Transactional, t0())))
            .await
            .expect("enqueue");
        store.claim_due_mail(t0(), 10, LEASE).await.expect("claim");
        store
            .mark_mail_failed(id, "421 try later", t0() + secs(10))
            .await
            .expect("failed");
        let m = store.get_mail(id).await.expect("get").expect("message");
        assert_eq!(m.status, OutboxStatus::Pending);
        assert_eq!(m.attempts, 1);
        assert_eq!(m.last_error.as_deref(), Some("421 try later"));
        assert_eq!(m.next_attempt_at, t0() + secs(10));
        assert_eq!(
            m.sealed_secret.as_deref(),
            Some(&b"sealed secret"[..]),
            "kept for the retry"
        );
        assert!(
            store
                .claim_due_mail(t0() + secs(9), 10, LEASE)
                .await
                .expect("claim")
                .is_empty()
        );
        let retry = store
            .claim_due_mail(t0() + secs(10), 10, LEASE)
            .await
            .expect("claim");
        assert_eq!(retry.iter().map(|m| m.id).collect::<Vec<_>>(), [id]);
    }

    /// Given up on: kept for inspection (newest first, in pages), without its secret.
    async fn dead_messages_lose_their_secret_and_are_listed_newest_first(db: &Database) {
        let store = db.instance().await;
        let mut dead = Vec::new();
        for n in 0..5 {
            let id = store
                .enqueue_mail(&with_secret(mail(n, MailClass::Bulk, t0())))
                .await
                .expect("enqueue");
            if n != 2 {
                store
                    .mark_mail_dead(id, "550 no such user")
                    .await
                    .expect("dead");
                dead.push(id);
            }
        }
        let m = store
            .get_mail(dead[0])
            .await
            .expect("get")
            .expect("message");
        assert_eq!(m.status, OutboxStatus::Dead);
        assert_eq!(m.sealed_secret, None);
        assert_eq!(m.attempts, 1);
        assert_eq!(m.last_error.as_deref(), Some("550 no such user"));
        let page1 = store.list_dead_mail(None, 2).await.expect("page");
        let page2 = store
            .list_dead_mail(page1.last().map(|m| m.id), 10)
            .await
            .expect("page");
        let listed: Vec<i64> = page1.iter().chain(&page2).map(|m| m.id).collect();
        dead.reverse();
        assert_eq!(listed, dead);
        assert!(
            page1
                .iter()
                .chain(&page2)
                .all(|m| m.sealed_secret.is_none())
        );
        assert!(
            store
                .list_dead_mail(None, 0)
                .await
                .expect("page")
                .is_empty()
        );
        assert!(
            store
                .claim_due_mail(t0() + secs(3600), 10, LEASE)
                .await
                .expect("claim")
                .len()
                == 1
        );
    }

    /// Marking an unknown message is a caller's mistake, not a silent success.
    async fn marking_an_unknown_message_is_not_found(db: &Database) {
        let store = db.instance().await;
        assert!(matches!(
            store.mark_mail_sent(42, t0()).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.mark_mail_failed(42, "x", t0()).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.mark_mail_dead(42, "x").await,
            Err(StoreError::NotFound)
        ));
    }

    /// The health page and metrics show the queue by status, class and retries.
    async fn counts_by_status_class_and_retry(db: &Database) {
        let store = db.instance().await;
        assert_eq!(
            store.outbox_counts().await.expect("counts"),
            Default::default()
        );
        let tx_retrying = store
            .enqueue_mail(&mail(0, MailClass::Transactional, t0()))
            .await
            .expect("enqueue");
        store
            .enqueue_mail(&mail(1, MailClass::Transactional, t0()))
            .await
            .expect("enqueue");
        let bulk_retrying = store
            .enqueue_mail(&mail(2, MailClass::Bulk, t0()))
            .await
            .expect("enqueue");
        store
            .enqueue_mail(&mail(3, MailClass::Bulk, t0()))
            .await
            .expect("enqueue");
        let sent = store
            .enqueue_mail(&mail(4, MailClass::Bulk, t0()))
            .await
            .expect("enqueue");
        let dead = store
            .enqueue_mail(&mail(5, MailClass::Transactional, t0()))
            .await
            .expect("enqueue");
        store
            .mark_mail_failed(tx_retrying, "421", t0() + secs(5))
            .await
            .expect("failed");
        store
            .mark_mail_failed(bulk_retrying, "421", t0() + secs(5))
            .await
            .expect("failed");
        store.mark_mail_sent(sent, t0()).await.expect("sent");
        store.mark_mail_dead(dead, "550").await.expect("dead");
        let c = store.outbox_counts().await.expect("counts");
        assert_eq!((c.pending, c.sent, c.dead), (4, 1, 1));
        assert_eq!(c.pending_bulk, 2);
        assert_eq!((c.retrying_transactional, c.retrying_bulk), (1, 1));
    }

    /// The bulk limits count what was sent per class in a window.
    async fn sent_mail_is_counted_by_class_since_a_time(db: &Database) {
        let store = db.instance().await;
        for (n, class, at) in [
            (0, MailClass::Bulk, t0()),
            (1, MailClass::Bulk, t0() + secs(10)),
            (2, MailClass::Bulk, t0() + secs(20)),
            (3, MailClass::Transactional, t0() + secs(20)),
        ] {
            let id = store
                .enqueue_mail(&mail(n, class, t0()))
                .await
                .expect("enqueue");
            store.mark_mail_sent(id, at).await.expect("sent");
        }
        store
            .enqueue_mail(&mail(9, MailClass::Bulk, t0()))
            .await
            .expect("a pending one");
        let since = t0() + secs(10);
        assert_eq!(
            store
                .count_sent_since(MailClass::Bulk, since)
                .await
                .expect("count"),
            2
        );
        assert_eq!(
            store
                .count_sent_since(MailClass::Transactional, since)
                .await
                .expect("count"),
            1
        );
        assert_eq!(
            store
                .count_sent_since(MailClass::Bulk, t0() + secs(21))
                .await
                .expect("count"),
            0
        );
    }

    /// Held-back mail is counted once per message however often the limit holds it,
    /// and mail that is leased or not yet due is not "held".
    async fn held_mail_is_noted_once(db: &Database) {
        let store = db.instance().await;
        for n in 0..3 {
            store
                .enqueue_mail(&mail(n, MailClass::Bulk, t0()))
                .await
                .expect("enqueue");
        }
        store
            .enqueue_mail(&mail(3, MailClass::Bulk, t0() + secs(100)))
            .await
            .expect("not due");
        store
            .enqueue_mail(&mail(4, MailClass::Transactional, t0()))
            .await
            .expect("other class");
        store
            .claim_due_mail_of_class(MailClass::Bulk, t0(), 1, LEASE)
            .await
            .expect("lease one");
        let now = t0() + secs(1);
        assert_eq!(
            store
                .mark_due_mail_held(MailClass::Bulk, now)
                .await
                .expect("held"),
            2
        );
        assert_eq!(
            store
                .mark_due_mail_held(MailClass::Bulk, now + secs(1))
                .await
                .expect("held"),
            0
        );
        assert_eq!(
            store
                .mark_due_mail_held(MailClass::Bulk, t0() + secs(100))
                .await
                .expect("held"),
            2,
            "the lease ran out and the later message fell due"
        );
    }

    /// A notice that would arrive out of date is dropped unsent, secret erased; one a
    /// worker is sending right now is left to that worker.
    async fn stale_mail_is_dead_lettered_unless_leased(db: &Database) {
        let store = db.instance().await;
        let stale = |n: usize, at: DateTime<Utc>| {
            let mut m = with_secret(mail(n, MailClass::Bulk, t0()));
            m.stale_after = Some(at);
            m
        };
        // Both due at t0 and stale at t0 + 10 s; the first (smaller id) is claimed
        // below and leased until t0 + 65 s.
        let leased = store
            .enqueue_mail(&stale(0, t0() + secs(10)))
            .await
            .expect("enqueue");
        let unleased = store
            .enqueue_mail(&stale(1, t0() + secs(10)))
            .await
            .expect("enqueue");
        let fresh = store
            .enqueue_mail(&stale(2, t0() + secs(11)))
            .await
            .expect("enqueue");
        let timeless = store
            .enqueue_mail(&mail(3, MailClass::Bulk, t0()))
            .await
            .expect("enqueue");
        let claimed = store
            .claim_due_mail(t0() + secs(5), 1, LEASE)
            .await
            .expect("claim");
        assert_eq!(claimed.iter().map(|m| m.id).collect::<Vec<_>>(), [leased]);
        assert_eq!(
            store
                .dead_letter_stale_mail(t0() + secs(10))
                .await
                .expect("dead-letter"),
            1
        );
        let m = store.get_mail(leased).await.expect("get").expect("m");
        assert_eq!(
            m.status,
            OutboxStatus::Pending,
            "the leased one is left to its worker"
        );
        let m = store.get_mail(unleased).await.expect("get").expect("m");
        assert_eq!(m.status, OutboxStatus::Dead);
        assert_eq!(m.sealed_secret, None);
        assert!(m.last_error.is_some(), "says why it was dropped");
        for id in [fresh, timeless] {
            assert_eq!(
                store.get_mail(id).await.expect("get").expect("m").status,
                OutboxStatus::Pending
            );
        }
        assert_eq!(
            store
                .dead_letter_stale_mail(t0() + secs(65))
                .await
                .expect("dead-letter"),
            2
        );
    }
}

/// The notice ledger: a sweep's expiry notice goes out once per user and stage, whatever
/// reruns, crashes or concurrent sweeps there are.
mod ledger {
    use super::*;

    backends!(
        a_notice_is_recorded_and_queued_once,
        a_batch_queues_each_new_key_once,
        concurrent_instances_queue_each_notice_once
    );

    fn key(n: usize) -> String {
        format!("uid=user{n}|t7|2030-01-08")
    }

    /// A ledger key records and queues once, never twice.
    async fn a_notice_is_recorded_and_queued_once(db: &Database) {
        let store = db.instance().await;
        let mut m = with_secret(mail(1, MailClass::Bulk, t0()));
        m.stale_after = Some(t0() + secs(86_400));
        assert!(!store.notice_recorded(&key(1)).await.expect("recorded?"));
        assert!(
            store
                .record_notice(&key(1), Some("sweep-1"), &m)
                .await
                .expect("record")
        );
        assert!(
            !store
                .record_notice(&key(1), Some("sweep-2"), &m)
                .await
                .expect("record again")
        );
        assert!(store.notice_recorded(&key(1)).await.expect("recorded?"));
        let queued = store.claim_due_mail(t0(), 10, LEASE).await.expect("claim");
        assert_eq!(queued.len(), 1, "queued once");
        let q = &queued[0];
        assert_eq!(
            (q.template.as_str(), q.recipient.as_str()),
            ("notice", "user1@example.org")
        );
        assert_eq!(q.class, MailClass::Bulk);
        assert_eq!(q.sealed_secret.as_deref(), Some(&b"sealed secret"[..]));
        assert_eq!(q.stale_after, Some(t0() + secs(86_400)));
        assert_eq!(q.next_attempt_at, t0(), "due at once");
    }

    /// A sweep's batch: each new key queues its message, keys already in the ledger
    /// and repeats within the batch do not; the look-up answers in the keys' order.
    async fn a_batch_queues_each_new_key_once(db: &Database) {
        let store = db.instance().await;
        assert!(
            store
                .record_notice(&key(1), None, &mail(1, MailClass::Bulk, t0()))
                .await
                .expect("record")
        );
        let batch: Vec<(String, NewOutboxMessage)> = [0, 1, 2, 0, 3]
            .into_iter()
            .map(|n| (key(n), mail(n, MailClass::Bulk, t0())))
            .collect();
        let queued = store
            .record_notices(Some("sweep-1"), &batch)
            .await
            .expect("record batch");
        assert_eq!(queued, [true, false, true, false, true]);
        assert_eq!(store.outbox_counts().await.expect("counts").pending, 4);
        let recorded = store
            .notices_recorded(&[key(3), key(9), key(0), key(1)])
            .await
            .expect("look up");
        assert_eq!(recorded, [true, false, true, true]);
        assert!(
            store
                .notices_recorded(&[])
                .await
                .expect("look up nothing")
                .is_empty()
        );
        assert!(
            store
                .record_notices(None, &[])
                .await
                .expect("record nothing")
                .is_empty()
        );
        let again = store
            .record_notices(Some("sweep-2"), &batch)
            .await
            .expect("rerun");
        assert_eq!(again, [false; 5], "a rerun queues nothing");
        assert_eq!(store.outbox_counts().await.expect("counts").pending, 4);
    }

    /// Two instances sweeping at once must never both send the same notice.
    async fn concurrent_instances_queue_each_notice_once(db: &Database) {
        let a = db.instance().await;
        let b = db.instance().await;
        let batch: Vec<(String, NewOutboxMessage)> = (0..30)
            .map(|n| (key(n), mail(n, MailClass::Bulk, t0())))
            .collect();
        let one_by_one = |store: Arc<dyn Store>| {
            let batch = batch.clone();
            async move {
                let mut queued = Vec::new();
                for (k, m) in batch.iter().rev() {
                    queued.push(
                        store
                            .record_notice(k, Some("one"), m)
                            .await
                            .expect("record"),
                    );
                }
                queued.into_iter().filter(|q| *q).count()
            }
        };
        let (na, nb) = tokio::join!(one_by_one(a.clone()), async {
            b.record_notices(Some("batch"), &batch)
                .await
                .expect("record batch")
                .into_iter()
                .filter(|q| *q)
                .count()
        });
        assert_eq!(na + nb, 30, "each notice queued by exactly one instance");
        assert_eq!(a.outbox_counts().await.expect("counts").pending, 30);
    }
}

/// Leases: one instance at a time runs the sweep (or any other singleton job).
mod leases {
    use super::*;

    backends!(
        one_holder_at_a_time_and_renewal_moves_the_end,
        an_expired_lease_can_be_taken_by_another,
        release_frees_the_lease_only_for_its_holder,
        one_of_many_concurrent_takers_wins
    );

    /// One holder at a time; the holder renews by taking it again.
    async fn one_holder_at_a_time_and_renewal_moves_the_end(db: &Database) {
        let store = db.instance().await;
        let until = t0() + secs(60);
        assert!(
            store
                .acquire_lease("sweep", "a", t0(), until)
                .await
                .expect("take")
        );
        assert!(
            !store
                .acquire_lease("sweep", "b", t0() + secs(1), until)
                .await
                .expect("take")
        );
        assert!(
            store
                .acquire_lease("sweep", "a", t0() + secs(30), t0() + secs(120))
                .await
                .expect("renew")
        );
        assert!(
            !store
                .acquire_lease("sweep", "b", t0() + secs(90), t0() + secs(150))
                .await
                .expect("take"),
            "the renewal moved the end to t0 + 120 s"
        );
        assert!(
            store
                .acquire_lease("digest", "b", t0(), until)
                .await
                .expect("another lease")
        );
    }

    /// A holder that died gives way when its lease runs out.
    async fn an_expired_lease_can_be_taken_by_another(db: &Database) {
        let store = db.instance().await;
        assert!(
            store
                .acquire_lease("sweep", "a", t0(), t0() + secs(60))
                .await
                .expect("take")
        );
        assert!(
            store
                .acquire_lease("sweep", "b", t0() + secs(60), t0() + secs(120))
                .await
                .expect("take")
        );
        assert!(
            !store
                .acquire_lease("sweep", "a", t0() + secs(61), t0() + secs(180))
                .await
                .expect("take")
        );
    }

    /// Only the holder can give the lease up; another's release changes nothing.
    async fn release_frees_the_lease_only_for_its_holder(db: &Database) {
        let store = db.instance().await;
        assert!(
            store
                .acquire_lease("sweep", "a", t0(), t0() + secs(60))
                .await
                .expect("take")
        );
        store
            .release_lease("sweep", "b")
            .await
            .expect("release by another");
        assert!(
            !store
                .acquire_lease("sweep", "b", t0(), t0() + secs(60))
                .await
                .expect("take")
        );
        store.release_lease("sweep", "a").await.expect("release");
        assert!(
            store
                .acquire_lease("sweep", "b", t0(), t0() + secs(60))
                .await
                .expect("take")
        );
        store
            .release_lease("nothing", "a")
            .await
            .expect("release of a lease never taken");
    }

    /// Instances racing for the lease: exactly one wins.
    async fn one_of_many_concurrent_takers_wins(db: &Database) {
        let mut tasks = Vec::new();
        for n in 0..6 {
            let store = db.instance().await;
            tasks.push(tokio::spawn(async move {
                store
                    .acquire_lease("sweep", &format!("instance-{n}"), t0(), t0() + secs(60))
                    .await
                    .expect("take")
            }));
        }
        let mut winners = 0;
        for task in tasks {
            if task.await.expect("task") {
                winners += 1;
            }
        }
        assert_eq!(winners, 1);
    }
}

/// Sweep runs and their reports: the history an administrator reads, and how an instance
/// that takes over the sweep learns that another one stopped mid-way.
mod sweeps {
    use super::*;

    backends!(
        runs_round_trip_and_are_overwritten,
        an_unknown_status_is_refused,
        runs_are_listed_newest_first,
        runs_left_running_are_interrupted_except_ones_own,
        reports_are_paged_in_order_and_old_ones_pruned
    );

    fn run(id: &str, started_at: DateTime<Utc>) -> SweepRun {
        SweepRun {
            id: id.into(),
            started_at,
            finished_at: None,
            status: sweep_status::RUNNING.into(),
            dry_run: false,
            trigger: "schedule".into(),
            at: started_at,
            scanned: 0,
            notified: 0,
            already_notified: 0,
            no_mail: 0,
            expired: 0,
            failed: 0,
            error: None,
            summary: None,
        }
    }

    fn line(seq: u64) -> SweepReportLine {
        SweepReportLine {
            seq,
            user_name: format!("user{seq}"),
            display_name: Some(format!("User {seq}")),
            mail: seq
                .is_multiple_of(2)
                .then(|| format!("user{seq}@example.org")),
            notice: "t7".into(),
            expires_at: t0() + secs(7 * 86_400),
            expires_at_local: "Tuesday 8 January 2030, 13:00 CET".into(),
            days_left: 7,
            status: if seq.is_multiple_of(2) {
                "queued"
            } else {
                "no-mail"
            }
            .into(),
            reason: (seq % 2 == 1).then(|| "no mail address".to_string()),
        }
    }

    /// A run is saved whole and overwritten as it progresses.
    async fn runs_round_trip_and_are_overwritten(db: &Database) {
        let store = db.instance().await;
        let mut r = run("r1", t0());
        store.insert_sweep_run(&r).await.expect("insert");
        assert_eq!(
            store.get_sweep_run("r1").await.expect("get"),
            Some(r.clone())
        );
        let clash = store.insert_sweep_run(&r).await;
        assert!(
            matches!(clash, Err(StoreError::Conflict("sweep run id"))),
            "{clash:?}"
        );
        r.status = sweep_status::COMPLETED.into();
        r.finished_at = Some(t0() + secs(30));
        r.dry_run = true;
        (
            r.scanned,
            r.notified,
            r.already_notified,
            r.no_mail,
            r.expired,
            r.failed,
        ) = (100, 10, 5, 3, 2, 1);
        r.summary = Some(json!({ "stages": { "t7": 10 } }));
        store.update_sweep_run(&r).await.expect("update");
        assert_eq!(store.get_sweep_run("r1").await.expect("get"), Some(r));
        let unknown = store.update_sweep_run(&run("nope", t0())).await;
        assert!(matches!(unknown, Err(StoreError::NotFound)), "{unknown:?}");
        assert_eq!(store.get_sweep_run("nope").await.expect("get"), None);
    }

    /// The status is one of the sweep's words; anything else is refused.
    async fn an_unknown_status_is_refused(db: &Database) {
        let store = db.instance().await;
        let mut r = run("r1", t0());
        r.status = "paused".into();
        assert!(store.insert_sweep_run(&r).await.is_err());
    }

    /// The history page shows the latest runs first.
    async fn runs_are_listed_newest_first(db: &Database) {
        let store = db.instance().await;
        for (id, at) in [("b", 1), ("c", 2), ("a", 0)] {
            store
                .insert_sweep_run(&run(id, t0() + secs(at)))
                .await
                .expect("insert");
        }
        let ids = |runs: Vec<SweepRun>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.list_sweep_runs(10).await.expect("list")),
            ["c", "b", "a"]
        );
        assert_eq!(
            ids(store.list_sweep_runs(2).await.expect("list")),
            ["c", "b"]
        );
        assert!(store.list_sweep_runs(0).await.expect("list").is_empty());
    }

    /// The new lease holder marks runs left `running` by a stopped instance as
    /// interrupted, but not its own.
    async fn runs_left_running_are_interrupted_except_ones_own(db: &Database) {
        let store = db.instance().await;
        let mut done = run("done", t0());
        done.status = sweep_status::COMPLETED.into();
        store.insert_sweep_run(&done).await.expect("insert");
        store
            .insert_sweep_run(&run("orphan", t0() + secs(1)))
            .await
            .expect("insert");
        store
            .insert_sweep_run(&run("mine", t0() + secs(2)))
            .await
            .expect("insert");
        let n = store
            .interrupt_sweep_runs(Some("mine"), t0() + secs(3), "the instance stopped")
            .await
            .expect("interrupt");
        assert_eq!(n, 1);
        let orphan = store
            .get_sweep_run("orphan")
            .await
            .expect("get")
            .expect("run");
        assert_eq!(orphan.status, sweep_status::INTERRUPTED);
        assert_eq!(orphan.finished_at, Some(t0() + secs(3)));
        assert_eq!(orphan.error.as_deref(), Some("the instance stopped"));
        let status = |id: &'static str| {
            let store = store.clone();
            async move {
                store
                    .get_sweep_run(id)
                    .await
                    .expect("get")
                    .expect("run")
                    .status
            }
        };
        assert_eq!(status("mine").await, sweep_status::RUNNING);
        assert_eq!(status("done").await, sweep_status::COMPLETED);
        assert_eq!(
            store
                .interrupt_sweep_runs(None, t0() + secs(4), "stop")
                .await
                .expect("interrupt"),
            1
        );
        assert_eq!(status("mine").await, sweep_status::INTERRUPTED);
    }

    /// The digest and the CLI read a report in order, a page at a time; old reports
    /// go, the history of runs stays.
    async fn reports_are_paged_in_order_and_old_ones_pruned(db: &Database) {
        let store = db.instance().await;
        store
            .insert_sweep_run(&run("old", t0()))
            .await
            .expect("insert");
        store
            .insert_sweep_run(&run("new", t0() + secs(86_400)))
            .await
            .expect("insert");
        let lines: Vec<SweepReportLine> = (0..25).map(line).collect();
        store
            .append_sweep_report("old", &lines[..10])
            .await
            .expect("append");
        store
            .append_sweep_report("old", &lines[10..])
            .await
            .expect("append");
        store
            .append_sweep_report("new", &lines[..3])
            .await
            .expect("append");
        store
            .append_sweep_report("new", &[])
            .await
            .expect("append nothing");
        let mut read = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .sweep_report_page("old", after, 7)
                .await
                .expect("page");
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 7);
            after = page.last().map(|l| l.seq);
            read.extend(page);
        }
        assert_eq!(read, lines);
        assert!(
            store
                .sweep_report_page("old", None, 0)
                .await
                .expect("page")
                .is_empty()
        );
        let removed = store
            .prune_sweep_reports(t0() + secs(1))
            .await
            .expect("prune");
        assert_eq!(removed, 25);
        assert!(
            store
                .sweep_report_page("old", None, 100)
                .await
                .expect("page")
                .is_empty()
        );
        assert_eq!(
            store
                .sweep_report_page("new", None, 100)
                .await
                .expect("page")
                .len(),
            3
        );
        assert!(
            store.get_sweep_run("old").await.expect("get").is_some(),
            "the run stays"
        );
    }
}

/// Run-time settings an administrator changes (shared by every instance).
mod settings {
    use super::*;

    backends!(a_setting_is_created_replaced_and_read_everywhere);

    /// A setting changed on one instance is what every instance reads.
    async fn a_setting_is_created_replaced_and_read_everywhere(db: &Database) {
        let a = db.instance().await;
        let b = db.instance().await;
        assert_eq!(a.get_setting("sweep.schedule").await.expect("get"), None);
        let value = json!({ "hour": 6, "stages": [14, 7, 1], "enabled": true, "note": null });
        a.put_setting("sweep.schedule", &value).await.expect("put");
        assert_eq!(
            b.get_setting("sweep.schedule").await.expect("get"),
            Some(value)
        );
        b.put_setting("sweep.schedule", &json!("off"))
            .await
            .expect("replace");
        assert_eq!(
            a.get_setting("sweep.schedule").await.expect("get"),
            Some(json!("off"))
        );
        assert_eq!(a.get_setting("other").await.expect("get"), None);
    }
}

/// Self-service: flows in progress (a user resetting their password), requests to an
/// administrator, first-password links.
mod selfservice {
    use super::*;

    backends!(
        a_flow_is_found_until_it_expires,
        an_update_with_a_stale_version_loses,
        concurrent_updates_of_one_version_have_one_winner,
        a_deleted_flow_is_gone,
        one_open_request_per_user,
        closing_answers_the_open_request,
        only_an_open_request_is_dismissed,
        requests_are_listed_by_status_newest_first_in_pages,
        list_pages_never_exceed_the_limit,
        a_welcome_link_is_found_only_unused_and_unexpired,
        a_welcome_link_is_used_once
    );

    fn flow(id: &str, hash: &[u8], expires_at: DateTime<Utc>) -> NewFlow {
        NewFlow {
            id: id.into(),
            hash: hash.to_vec(),
            purpose: "reset".into(),
            state: json!({ "step": "code-sent" }),
            created_at: t0(),
            expires_at,
        }
    }

    fn request(id: &str, user: &str, created_at: DateTime<Utc>) -> NewResetRequest {
        NewResetRequest {
            id: id.into(),
            user_dn: format!("uid={user},ou=people,dc=example,dc=org"),
            user_name: user.into(),
            created_at,
        }
    }

    fn link(hash: &[u8], expires_at: DateTime<Utc>) -> NewWelcomeLink {
        NewWelcomeLink {
            hash: hash.to_vec(),
            user_dn: "uid=erin,ou=people,dc=example,dc=org".into(),
            user_name: "erin".into(),
            created_at: t0(),
            expires_at,
        }
    }

    /// A flow is found by its cookie's hash until it expires.
    async fn a_flow_is_found_until_it_expires(db: &Database) {
        let store = db.instance().await;
        store
            .insert_flow(&flow("f1", b"h1", t0() + secs(600)), t0())
            .await
            .expect("insert");
        let f = store
            .find_flow(b"h1", t0() + secs(599))
            .await
            .expect("find")
            .expect("the flow");
        assert_eq!((f.id.as_str(), f.purpose.as_str()), ("f1", "reset"));
        assert_eq!(f.state, json!({ "step": "code-sent" }));
        assert_eq!((f.created_at, f.expires_at), (t0(), t0() + secs(600)));
        assert_eq!(
            store
                .find_flow(b"h1", t0() + secs(600))
                .await
                .expect("find"),
            None
        );
        assert_eq!(store.find_flow(b"other", t0()).await.expect("find"), None);
        let clash = store
            .insert_flow(&flow("f1", b"h2", t0() + secs(600)), t0())
            .await;
        assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
    }

    /// Two requests of one flow (two tabs, two instances) each read a version; only
    /// the first to write wins, the stale one loses and must start over.
    async fn an_update_with_a_stale_version_loses(db: &Database) {
        let a = db.instance().await;
        let b = db.instance().await;
        a.insert_flow(&flow("f1", b"h1", t0() + secs(600)), t0())
            .await
            .expect("insert");
        let v = a
            .find_flow(b"h1", t0())
            .await
            .expect("find")
            .expect("flow")
            .version;
        let later = t0() + secs(900);
        assert!(
            a.update_flow("f1", v, &json!({ "step": "verified" }), later)
                .await
                .expect("update")
        );
        assert!(
            !b.update_flow("f1", v, &json!({ "step": "other" }), later)
                .await
                .expect("stale update")
        );
        let f = b
            .find_flow(b"h1", t0() + secs(700))
            .await
            .expect("find")
            .expect("extended flow");
        assert_eq!(f.version, v + 1);
        assert_eq!(f.state, json!({ "step": "verified" }));
        assert_eq!(f.expires_at, later);
    }

    /// Concurrent writers of the same version: exactly one wins.
    async fn concurrent_updates_of_one_version_have_one_winner(db: &Database) {
        let a = db.instance().await;
        let b = db.instance().await;
        a.insert_flow(&flow("f1", b"h1", t0() + secs(600)), t0())
            .await
            .expect("insert");
        let v = a
            .find_flow(b"h1", t0())
            .await
            .expect("find")
            .expect("flow")
            .version;
        let end = t0() + secs(600);
        let (state_a, state_b) = (json!("a"), json!("b"));
        let (ra, rb) = tokio::join!(
            a.update_flow("f1", v, &state_a, end),
            b.update_flow("f1", v, &state_b, end)
        );
        assert_ne!(
            ra.expect("update"),
            rb.expect("update"),
            "one wins, one loses"
        );
    }

    /// An ended flow stays ended: it is not found, cannot be updated or ended again.
    async fn a_deleted_flow_is_gone(db: &Database) {
        let store = db.instance().await;
        store
            .insert_flow(&flow("f1", b"h1", t0() + secs(600)), t0())
            .await
            .expect("insert");
        let v = store
            .find_flow(b"h1", t0())
            .await
            .expect("find")
            .expect("flow")
            .version;
        assert!(store.delete_flow("f1").await.expect("delete"));
        assert!(!store.delete_flow("f1").await.expect("delete again"));
        assert_eq!(store.find_flow(b"h1", t0()).await.expect("find"), None);
        assert!(
            !store
                .update_flow("f1", v, &json!({}), t0() + secs(600))
                .await
                .expect("update")
        );
    }

    /// A user who asks twice has one open request, not two in the administrators' list.
    async fn one_open_request_per_user(db: &Database) {
        let a = db.instance().await;
        let b = db.instance().await;
        let (first, created) = a
            .open_reset_request(&request("r1", "bob", t0()))
            .await
            .expect("open");
        assert!(created);
        assert_eq!((first.id.as_str(), first.status.as_str()), ("r1", "open"));
        assert_eq!(first.user_name, "bob");
        assert_eq!(first.created_at, t0());
        let (again, created) = b
            .open_reset_request(&request("r2", "bob", t0() + secs(5)))
            .await
            .expect("open again");
        assert!(!created);
        assert_eq!(again, first, "the open one is returned");
        let (other, created) = b
            .open_reset_request(&request("r3", "carol", t0() + secs(6)))
            .await
            .expect("open");
        assert!(created && other.id == "r3");
        assert_eq!(a.get_reset_request("r2").await.expect("get"), None);
        assert_eq!(a.get_reset_request("r1").await.expect("get"), Some(first));
    }

    /// An administrator's reset answers the user's request; a later request is new.
    async fn closing_answers_the_open_request(db: &Database) {
        let store = db.instance().await;
        store
            .open_reset_request(&request("r1", "bob", t0()))
            .await
            .expect("open");
        let dn = "uid=bob,ou=people,dc=example,dc=org";
        assert_eq!(
            store
                .close_reset_requests(dn, "alice", t0() + secs(60))
                .await
                .expect("close"),
            1
        );
        assert_eq!(
            store
                .close_reset_requests(dn, "alice", t0() + secs(61))
                .await
                .expect("close"),
            0
        );
        let r = store
            .get_reset_request("r1")
            .await
            .expect("get")
            .expect("request");
        assert_eq!(r.status, "closed");
        assert_eq!(r.closed_at, Some(t0() + secs(60)));
        assert_eq!(r.closed_by.as_deref(), Some("alice"));
        let (next, created) = store
            .open_reset_request(&request("r2", "bob", t0() + secs(120)))
            .await
            .expect("open");
        assert!(created && next.id == "r2");
    }

    /// Dismissing answers only an open request: a closed or dismissed one keeps its
    /// answer.
    async fn only_an_open_request_is_dismissed(db: &Database) {
        let store = db.instance().await;
        store
            .open_reset_request(&request("r1", "bob", t0()))
            .await
            .expect("open");
        store
            .open_reset_request(&request("r2", "carol", t0()))
            .await
            .expect("open");
        assert!(
            store
                .dismiss_reset_request("r1", "alice", "spam", t0() + secs(1))
                .await
                .expect("dismiss")
        );
        assert!(
            !store
                .dismiss_reset_request("r1", "dave", "again", t0() + secs(2))
                .await
                .expect("dismiss")
        );
        let r = store
            .get_reset_request("r1")
            .await
            .expect("get")
            .expect("request");
        assert_eq!(r.status, "dismissed");
        assert_eq!(
            (r.closed_by.as_deref(), r.reason.as_deref()),
            (Some("alice"), Some("spam"))
        );
        assert_eq!(r.closed_at, Some(t0() + secs(1)));
        store
            .close_reset_requests("uid=carol,ou=people,dc=example,dc=org", "alice", t0())
            .await
            .expect("close");
        assert!(
            !store
                .dismiss_reset_request("r2", "alice", "late", t0())
                .await
                .expect("dismiss")
        );
        assert!(
            !store
                .dismiss_reset_request("nope", "alice", "x", t0())
                .await
                .expect("dismiss")
        );
    }

    /// The administrators' list: newest first, by status or all, a page at a time.
    async fn requests_are_listed_by_status_newest_first_in_pages(db: &Database) {
        let store = db.instance().await;
        for (n, user) in ["u0", "u1", "u2", "u3", "u4"].into_iter().enumerate() {
            store
                .open_reset_request(&request(&format!("r{n}"), user, t0() + secs(n as i64)))
                .await
                .expect("open");
        }
        store
            .dismiss_reset_request("r1", "alice", "x", t0())
            .await
            .expect("dismiss");
        store
            .close_reset_requests("uid=u3,ou=people,dc=example,dc=org", "alice", t0())
            .await
            .expect("close");
        let ids = |rs: Vec<lockbridge::store::ResetRequestRecord>| {
            rs.into_iter().map(|r| r.id).collect::<Vec<_>>()
        };
        assert_eq!(
            ids(store
                .list_reset_requests(None, None, 10)
                .await
                .expect("list")),
            ["r4", "r3", "r2", "r1", "r0"]
        );
        assert_eq!(
            ids(store
                .list_reset_requests(Some("open"), None, 10)
                .await
                .expect("list")),
            ["r4", "r2", "r0"]
        );
        assert_eq!(
            ids(store
                .list_reset_requests(Some("closed"), None, 10)
                .await
                .expect("list")),
            ["r3"]
        );
        assert_eq!(
            ids(store
                .list_reset_requests(Some("dismissed"), None, 10)
                .await
                .expect("list")),
            ["r1"]
        );
        let page1 = ids(store
            .list_reset_requests(Some("open"), None, 2)
            .await
            .expect("list"));
        assert_eq!(page1, ["r4", "r2"]);
        let page2 = ids(store
            .list_reset_requests(Some("open"), Some("r2"), 2)
            .await
            .expect("list"));
        assert_eq!(page2, ["r0"]);
        let all_after = ids(store
            .list_reset_requests(None, Some("r3"), 10)
            .await
            .expect("list"));
        assert_eq!(all_after, ["r2", "r1", "r0"]);
    }

    /// A page size is an upper bound: asking for none gets none.
    async fn list_pages_never_exceed_the_limit(db: &Database) {
        let store = db.instance().await;
        store
            .open_reset_request(&request("r1", "bob", t0()))
            .await
            .expect("open");
        assert!(
            store
                .list_reset_requests(None, None, 0)
                .await
                .expect("list")
                .is_empty()
        );
        store
            .insert_job(
                &NewJob {
                    id: "j".into(),
                    kind: "require-change".into(),
                    actor: "alice".into(),
                    actor_dn: None,
                    roles: vec![],
                    params: json!({}),
                    sealed_secret: None,
                    created_at: t0(),
                },
                &["bob".to_string()],
            )
            .await
            .expect("insert job");
        assert!(
            store
                .job_items_page("j", None, 0)
                .await
                .expect("items")
                .is_empty()
        );
    }

    /// A first-password link works while unused and unexpired.
    async fn a_welcome_link_is_found_only_unused_and_unexpired(db: &Database) {
        let store = db.instance().await;
        store
            .insert_welcome_link(&link(b"w1", t0() + secs(3600)))
            .await
            .expect("insert");
        let w = store
            .find_welcome_link(b"w1", t0() + secs(3599))
            .await
            .expect("find")
            .expect("link");
        assert_eq!(
            (w.user_name.as_str(), w.user_dn.as_str()),
            ("erin", "uid=erin,ou=people,dc=example,dc=org")
        );
        assert_eq!(w.expires_at, t0() + secs(3600));
        assert_eq!(
            store
                .find_welcome_link(b"w1", t0() + secs(3600))
                .await
                .expect("find"),
            None
        );
        assert_eq!(
            store.find_welcome_link(b"nope", t0()).await.expect("find"),
            None
        );
        assert!(
            !store
                .use_welcome_link(b"w1", t0() + secs(3600))
                .await
                .expect("use expired")
        );
    }

    /// A first password is set once: the link is used once, even by two instances at once.
    async fn a_welcome_link_is_used_once(db: &Database) {
        let a = db.instance().await;
        let b = db.instance().await;
        a.insert_welcome_link(&link(b"w1", t0() + secs(3600)))
            .await
            .expect("insert");
        let at = t0() + secs(10);
        let (ra, rb) = tokio::join!(a.use_welcome_link(b"w1", at), b.use_welcome_link(b"w1", at));
        assert_ne!(
            ra.expect("use"),
            rb.expect("use"),
            "exactly one use succeeds"
        );
        assert!(!a.use_welcome_link(b"w1", at).await.expect("use again"));
        assert_eq!(b.find_welcome_link(b"w1", at).await.expect("find"), None);
        assert!(
            !a.use_welcome_link(b"unknown", at)
                .await
                .expect("use unknown")
        );
    }
}

/// Shared state of several instances: rate-limit buckets (GCRA, one per key) and the
/// revocation mark every instance polls.
mod shared_limits {
    use super::*;
    use lockbridge::store::RateQuota;
    use lockbridge::store::rate::gcra;

    backends!(
        a_bucket_gives_its_burst_then_says_how_long_to_wait,
        takes_follow_the_rule_on_every_instance,
        concurrent_takes_from_two_instances_share_one_bucket,
        keys_are_separate_and_a_refilled_bucket_is_full,
        a_revocation_raises_the_mark_seen_by_every_instance
    );

    fn ms(n: i64) -> chrono::Duration {
        chrono::Duration::milliseconds(n)
    }

    fn quota(interval_ms: u64, burst: u32) -> RateQuota {
        RateQuota::new(Duration::from_millis(interval_ms), burst).expect("quota")
    }

    /// Failed sign-ins and self-service starts are counted here: the burst, then one
    /// per interval, and a refusal that says when to come back.
    async fn a_bucket_gives_its_burst_then_says_how_long_to_wait(db: &Database) {
        let store = db.instance().await;
        let q = quota(1000, 3);
        for i in 0..3 {
            let d = store.take_rate("k", q, 1, t0()).await.expect("take");
            assert_eq!(d.granted, 1, "take {i} of the burst");
        }
        let d = store.take_rate("k", q, 1, t0()).await.expect("take");
        assert_eq!(d.granted, 0, "the burst is spent");
        assert!(!d.allowed());
        assert_eq!(d.retry_after, Duration::from_secs(1));
        let d = store
            .take_rate("k", q, 1, t0() + ms(400))
            .await
            .expect("take");
        assert_eq!(d.granted, 0);
        assert_eq!(d.retry_after, Duration::from_millis(600));
        let d = store
            .take_rate("k", q, 5, t0() + ms(1000))
            .await
            .expect("take");
        assert_eq!(
            d.granted, 1,
            "one interval gives one unit, whatever was asked"
        );
        // Asking for more than is left gives what is left (a lease of a chunk).
        let d = store
            .take_rate("k", q, 5, t0() + ms(3500))
            .await
            .expect("take");
        assert_eq!(d.granted, 2);
        assert_eq!(d.retry_after, Duration::from_millis(500));
    }

    /// Every backend implements the one rule (`store::rate::gcra`): a long pseudo-random
    /// sequence of takes through two instances, compared take by take.
    async fn takes_follow_the_rule_on_every_instance(db: &Database) {
        let instances = [db.instance().await, db.instance().await];
        let q = quota(7, 13);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let mut tat = None;
        let mut now = t0();
        for step in 0..300 {
            now += chrono::Duration::microseconds(i64::try_from(next(20_000)).expect("small"));
            let want = u32::try_from(next(8)).expect("small");
            let store = &instances[usize::try_from(next(2)).expect("small")];
            let (model_tat, model_granted) = gcra(tat, now.timestamp_micros(), q, want);
            let d = store.take_rate("seq", q, want, now).await.expect("take");
            assert_eq!(d.granted, model_granted, "step {step}: want {want}");
            let wait = (model_tat - now.timestamp_micros() - (q.window_micros() - 7_000)).max(0);
            assert_eq!(
                d.retry_after,
                Duration::from_micros(u64::try_from(wait).expect("non-negative")),
                "step {step}"
            );
            tat = Some(model_tat);
        }
    }

    /// Two instances taking at once never hand out more than the bucket holds: the
    /// take is one atomic statement, not a read and a write.
    async fn concurrent_takes_from_two_instances_share_one_bucket(db: &Database) {
        let a = db.instance().await;
        let b = db.instance().await;
        let q = quota(60_000, 10);
        let mut tasks = Vec::new();
        for i in 0..40 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                store
                    .take_rate("shared", q, 1, t0())
                    .await
                    .expect("take")
                    .granted
            }));
        }
        let mut granted = 0;
        for task in tasks {
            granted += task.await.expect("task");
        }
        assert_eq!(granted, 10, "exactly the burst across both instances");
    }

    /// One client's bucket never empties another's, and a bucket that has refilled
    /// (and may have been pruned meanwhile) gives its whole burst again.
    async fn keys_are_separate_and_a_refilled_bucket_is_full(db: &Database) {
        let store = db.instance().await;
        let q = quota(1000, 2);
        assert_eq!(
            store
                .take_rate("a", q, 5, t0())
                .await
                .expect("take")
                .granted,
            2
        );
        assert_eq!(
            store
                .take_rate("a", q, 1, t0())
                .await
                .expect("take")
                .granted,
            0
        );
        assert_eq!(
            store
                .take_rate("b", q, 5, t0())
                .await
                .expect("take")
                .granted,
            2
        );
        // Much later another key's take prunes full buckets; "a" is full either way.
        let later = t0() + secs(60);
        assert_eq!(
            store
                .take_rate("c", q, 1, later)
                .await
                .expect("take")
                .granted,
            1
        );
        let d = store.take_rate("a", q, 5, later).await.expect("take");
        assert_eq!((d.granted, d.retry_after), (2, Duration::from_secs(1)));
    }

    /// Instances cache valid tokens; the mark tells them, within a poll, that a token
    /// was revoked or a session ended anywhere. A revocation that changed nothing need
    /// not raise it.
    async fn a_revocation_raises_the_mark_seen_by_every_instance(db: &Database) {
        let a = db.instance().await;
        let b = db.instance().await;
        let start = b.revocation_mark().await.expect("mark");
        a.insert_token(&NewToken {
            id: "t1".into(),
            name: "ci".into(),
            role: "scim".into(),
            hash: b"h1".to_vec(),
            created_at: t0(),
        })
        .await
        .expect("insert");
        assert_eq!(b.revocation_mark().await.expect("mark"), start);
        assert!(a.revoke_token("ci").await.expect("revoke"));
        let after_token = b.revocation_mark().await.expect("mark");
        assert!(after_token > start, "{after_token} > {start}");
        assert!(!a.revoke_token("ci").await.expect("revoke again"));
        a.insert_session(&NewSession {
            id: "s1".into(),
            hash: b"sh1".to_vec(),
            user_dn: "uid=alice,ou=people,dc=example,dc=org".into(),
            user_name: "alice".into(),
            roles: vec!["admin".into()],
            created_at: t0(),
            expires_at: t0() + secs(3600),
        })
        .await
        .expect("session");
        assert!(a.revoke_session("s1", t0()).await.expect("end"));
        let after_session = b.revocation_mark().await.expect("mark");
        assert!(
            after_session > after_token,
            "{after_session} > {after_token}"
        );
        assert!(!a.revoke_session("s1", t0()).await.expect("end again"));
    }
}

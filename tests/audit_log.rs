//! The audit log nobody can quietly edit: records are chained by hash and the chain's
//! head is sealed with a key the database does not hold. These tests tamper with the
//! SQLite file directly, as someone with access to the state folder would, and check
//! that `lockbridge audit verify` names the first bad record.

mod harness;

use std::path::{Path, PathBuf};

use harness::daemon::{Daemon, run_cli, write_config};
use harness::slapd::Slapd;
use harness::smtp::MailSink;
use lockbridge::store::chain::{ChainFields, record_hash};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

/// A configuration with `n` audit records (one `token create` each).
fn log_with(slapd: &Slapd, dir: &Path, n: usize) -> PathBuf {
    let config = write_config(dir, slapd, 25, 1, "");
    for i in 0..n {
        let (code, _, err) = run_cli(
            &config,
            &[
                "token",
                "create",
                "--name",
                &format!("t{i}"),
                "--role",
                "scim",
            ],
        );
        assert_eq!(code, 0, "{err}");
    }
    config
}

async fn db(dir: &Path) -> SqlitePool {
    let options = SqliteConnectOptions::new().filename(dir.join("state").join("lockbridge.db"));
    SqlitePool::connect_with(options)
        .await
        .expect("open the store")
}

/// Runs SQL on the store as an attacker would: the triggers that keep the log
/// append-only are dropped first.
async fn tamper(dir: &Path, sql: &[&'static str]) {
    let pool = db(dir).await;
    for s in [
        "DROP TRIGGER IF EXISTS audit_log_no_update",
        "DROP TRIGGER IF EXISTS audit_log_no_delete",
    ]
    .iter()
    .chain(sql)
    {
        sqlx::query(sqlx::AssertSqlSafe(*s))
            .execute(&pool)
            .await
            .expect(s);
    }
    pool.close().await;
}

fn verify(config: &Path) -> (i32, String) {
    let (code, out, err) = run_cli(config, &["audit", "verify"]);
    (code, format!("{out}{err}"))
}

#[tokio::test]
async fn verify_names_the_first_changed_removed_or_reordered_record() {
    let slapd = Slapd::start();

    // Untouched: intact.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = log_with(&slapd, dir.path(), 6);
    let (code, out) = verify(&config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("6 records") && out.contains("chain intact"),
        "{out}"
    );

    // Edited.
    tamper(
        dir.path(),
        &["UPDATE audit_log SET actor = 'cli:nobody' WHERE id = 3"],
    )
    .await;
    let (code, out) = verify(&config);
    assert_eq!(code, 65, "{out}");
    assert!(out.contains("record 3 was changed"), "{out}");
    assert!(out.contains("2 records before it are intact"), "{out}");

    // Removed.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = log_with(&slapd, dir.path(), 6);
    tamper(dir.path(), &["DELETE FROM audit_log WHERE id = 4"]).await;
    let (code, out) = verify(&config);
    assert_eq!(code, 65, "{out}");
    assert!(out.contains("record 4 was removed"), "{out}");

    // Reordered: records 2 and 3 swap places.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = log_with(&slapd, dir.path(), 6);
    tamper(
        dir.path(),
        &[
            "UPDATE audit_log SET id = -1 WHERE id = 2",
            "UPDATE audit_log SET id = 2 WHERE id = 3",
            "UPDATE audit_log SET id = 3 WHERE id = -1",
        ],
    )
    .await;
    let (code, out) = verify(&config);
    assert_eq!(code, 65, "{out}");
    assert!(
        out.contains("record 2 "),
        "the first bad record is named: {out}"
    );

    // An inserted record (made to look like one of lockbridge's).
    let dir = tempfile::tempdir().expect("tempdir");
    let config = log_with(&slapd, dir.path(), 3);
    tamper(
        dir.path(),
        &["INSERT INTO audit_log (id, at, actor, action, outcome) \
           VALUES (4, '2026-01-01T00:00:00.000000Z', 'cli:root', 'token.created', 'success')"],
    )
    .await;
    let (code, out) = verify(&config);
    assert_eq!(code, 65, "{out}");
    assert!(out.contains("record 4 has no chain hash"), "{out}");
}

/// Someone who knows the (public) chain format edits a record and recomputes every
/// hash after it: the chain is consistent again, but the seals made before do not match.
#[tokio::test]
async fn seals_catch_a_recomputed_chain_and_removed_newest_records() {
    let slapd = Slapd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = log_with(&slapd, dir.path(), 6);
    let (code, out, err) = run_cli(&config, &["audit", "seal"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("record 6"), "{out}");

    // Rewrite record 3 and recompute the chain from there on.
    tamper(
        dir.path(),
        &["UPDATE audit_log SET actor = 'cli:nobody' WHERE id = 3"],
    )
    .await;
    let pool = db(dir.path()).await;
    let rows = sqlx::query(
        "SELECT id, at, request_id, actor, action, target, outcome, detail, prev_hash \
         FROM audit_log ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("rows");
    let mut prev: Vec<u8> = rows[0].get("prev_hash");
    for row in rows {
        let id: i64 = row.get("id");
        let at: String = row.get("at");
        let request_id: Option<String> = row.get("request_id");
        let actor: String = row.get("actor");
        let action: String = row.get("action");
        let target: Option<String> = row.get("target");
        let outcome: String = row.get("outcome");
        let detail: Option<String> = row.get("detail");
        let hash = record_hash(
            &prev,
            &ChainFields {
                id,
                at: &at,
                request_id: request_id.as_deref(),
                actor: &actor,
                action: &action,
                target: target.as_deref(),
                outcome: &outcome,
                detail: detail.as_deref(),
            },
        );
        sqlx::query("UPDATE audit_log SET prev_hash = ?1, hash = ?2 WHERE id = ?3")
            .bind(&prev)
            .bind(&hash)
            .bind(id)
            .execute(&pool)
            .await
            .expect("rehash");
        prev = hash;
    }
    pool.close().await;
    let (code, out) = verify(&config);
    assert_eq!(code, 65, "{out}");
    assert!(
        out.contains("record 6 no longer matches the seal") && out.contains("records 1 to 6"),
        "{out}"
    );

    // Removing the newest records after a seal is caught by the seal.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = log_with(&slapd, dir.path(), 6);
    assert_eq!(run_cli(&config, &["audit", "seal"]).0, 0);
    tamper(dir.path(), &["DELETE FROM audit_log WHERE id >= 5"]).await;
    let (code, out) = verify(&config);
    assert_eq!(code, 65, "{out}");
    assert!(out.contains("records 5 to 6 were removed"), "{out}");

    // A seal made with another key (or after the master key changed) is named.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = log_with(&slapd, dir.path(), 2);
    assert_eq!(run_cli(&config, &["audit", "seal"]).0, 0);
    let pool = db(dir.path()).await;
    sqlx::query(
        "INSERT INTO audit_seals (at, record_id, head_hash, mac) \
         SELECT at, record_id, head_hash, zeroblob(32) FROM audit_seals",
    )
    .execute(&pool)
    .await
    .expect("forge");
    pool.close().await;
    let (code, out) = verify(&config);
    assert_eq!(code, 65, "{out}");
    assert!(
        out.contains("seal 2") && out.contains("not made with"),
        "{out}"
    );
}

#[tokio::test]
async fn the_daemon_seals_at_shutdown_and_export_writes_json_lines() {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let mut daemon = Daemon::start(&slapd, &mail);
    let (status, body, _) = daemon
        .client()
        .post(
            &daemon.admin_token,
            "/api/v1/users/bob/password-reset",
            serde_json::json!({"mode": "auto", "showPassword": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(daemon.terminate(), Some(0));
    let (code, out) = verify(&daemon.config_path);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 records"), "two tokens and a reset: {out}");
    assert!(
        out.contains("the newest covers record 3"),
        "sealed at shutdown: {out}"
    );
    assert!(!out.contains("covered by the chain only"), "{out}");

    let export = daemon.dir.path().join("audit.jsonl");
    let (code, _, err) = run_cli(
        &daemon.config_path,
        &[
            "audit",
            "export",
            "--since",
            "2020-01-01T00:00:00Z",
            "--output",
            export.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&export)
        .expect("export file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["action"], "password.reset");
    assert_eq!(lines[2]["target"], "bob");
    assert_eq!(lines[2]["prevHash"], lines[1]["hash"]);
    let secret = body["password"].as_str().expect("password");
    assert!(
        !std::fs::read_to_string(&export)
            .expect("read")
            .contains(secret)
    );

    let (code, _, err) = run_cli(
        &daemon.config_path,
        &["audit", "export", "--since", "yesterday"],
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("RFC 3339"), "{err}");
}

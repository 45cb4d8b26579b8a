//! Password-expiry sweeps against a real slapd whose users' pwdChangedTime is spread
//! over the past, with the daemon delivering through a real SMTP server.

mod harness;

use std::time::Duration;

use harness::daemon::{Daemon, run_cli};
use harness::slapd::Slapd;
use harness::smtp::MailSink;
use serde_json::json;

/// Users whose passwords were set N days ago; the default policy's pwdMaxAge is 90 days.
fn user(uid: &str, days_ago: i64, mail: bool, never_expires: bool) -> String {
    let mut ldif = format!(
        "dn: uid={uid},ou=people,dc=example,dc=org\n\
         objectClass: inetOrgPerson\n\
         uid: {uid}\ncn: User {uid}\nsn: {uid}\n\
         userPassword: @SAMPLE_PASSWORD_HASH@\n\
         pwdChangedTime: @DAYS_AGO:{days_ago}@\n"
    );
    if mail {
        ldif.push_str(&format!("mail: {uid}@example.org\n"));
    }
    if never_expires {
        ldif.push_str("pwdPolicySubentry: cn=never-expires,ou=policies,dc=example,dc=org\n");
    }
    ldif.push('\n');
    ldif
}

const SWEEP_CONFIG: &str = r#"
[expiry]
source = "directory"
notify_days = [14, 7, 3, 1]
default_policy_dn = "cn=default,ou=policies,dc=example,dc=org"
never_expires_policy_dn = "cn=never-expires,ou=policies,dc=example,dc=org"

[sweep]
time_zone = "Europe/Berlin"
admin_recipients = ["admins@example.org"]
change_password_url = "https://password.example.org/change"
"#;

fn sweep_cli(daemon: &Daemon, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["sweep"];
    args.extend_from_slice(extra);
    run_cli(&daemon.config_path, &args)
}

fn recipients(mail: &MailSink) -> Vec<String> {
    let mut to: Vec<String> = mail
        .messages()
        .iter()
        .flat_map(|m| m.envelope_to.clone())
        .collect();
    to.sort();
    to
}

#[tokio::test]
async fn sweep_mails_each_threshold_once_and_again_after_a_change() {
    let ldif = [
        user("due14", 80, true, false),   // 10 days left: the 14-day notice
        user("due7", 85, true, false),    // 5 days left: the 7-day notice only
        user("due3", 88, true, false),    // 2 days left: the 3-day notice only
        user("expired", 95, true, false), // expired 5 days ago
        user("nomail", 85, false, false), // due, but cannot be mailed
        user("forever", 89, true, true),  // never expires: nothing
        user("fresh", 30, true, false),   // 60 days left: nothing
    ]
    .concat();
    let slapd = Slapd::start_with(0, &[&ldif]);
    let mail = MailSink::start();
    let daemon = Daemon::start_with(&slapd, mail.port, SWEEP_CONFIG);

    // A dry run reports the plan and sends nothing.
    let (code, plan, err) = sweep_cli(&daemon, &["--dry-run"]);
    assert_eq!(code, 0, "{plan}\n{err}");
    assert!(plan.contains("dry run"), "{plan}");
    for (uid, notice) in [
        ("due14", "t14"),
        ("due7", "t7"),
        ("due3", "t3"),
        ("expired", "expired"),
    ] {
        let line = plan
            .lines()
            .find(|l| l.split_whitespace().next() == Some(uid) && l.contains("would-queue"))
            .unwrap_or_default();
        assert!(line.contains(notice), "{uid}: {plan}");
    }
    assert!(
        plan.lines()
            .any(|l| l.starts_with("nomail") && l.contains("no-mail")),
        "{plan}"
    );
    assert!(
        !plan.contains("forever") && !plan.contains("fresh"),
        "{plan}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(mail.messages().is_empty(), "a dry run sent mail");

    // The real sweep queues exactly those notices and the digest; the daemon sends them.
    let (code, out, err) = sweep_cli(&daemon, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let messages = mail.wait_for_count(5, Duration::from_secs(20));
    assert_eq!(
        recipients(&mail),
        vec![
            "admins@example.org",
            "due14@example.org",
            "due3@example.org",
            "due7@example.org",
            "expired@example.org"
        ],
    );
    let due7 = messages
        .iter()
        .find(|m| m.envelope_to == ["due7@example.org"])
        .expect("due7 mailed");
    assert!(due7.text.contains("5 days"), "{}", due7.text);
    assert!(due7.text.contains("https://password.example.org/change"));
    let digest = messages
        .iter()
        .find(|m| m.envelope_to == ["admins@example.org"])
        .expect("digest");
    for uid in ["due14", "due7", "due3", "expired", "nomail"] {
        assert!(
            digest.text.contains(uid),
            "digest lacks {uid}: {}",
            digest.text
        );
    }
    assert!(!digest.text.contains("forever"));
    assert!(digest.raw.contains("text/csv"), "no CSV attachment");

    // A second sweep sends nothing new.
    let (code, out, _) = sweep_cli(&daemon, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("notices queued") && l.trim_end().ends_with(" 0")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("already notified earlier") && l.trim_end().ends_with(" 4")),
        "{out}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let users_mailed = recipients(&mail)
        .into_iter()
        .filter(|r| r != "admins@example.org")
        .count();
    assert_eq!(users_mailed, 4, "a user was mailed twice");

    // due7 changes the password (as an admin reset does), and it ages again to 5 days
    // left: the 7-day notice for the new password goes out.
    let (status, body, _) = daemon
        .client()
        .post(
            &daemon.admin_token,
            "/api/v1/users/due7/password-reset",
            json!({"mode": "auto", "showPassword": true, "requireChangeAtNextSignIn": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let aged = (chrono::Utc::now() - chrono::Duration::days(85)).format("%Y%m%d%H%M%SZ");
    slapd.ldapmodify_as_root_relax(&format!(
        "dn: uid=due7,ou=people,dc=example,dc=org\nchangetype: modify\nreplace: pwdChangedTime\npwdChangedTime: {aged}\n"
    ));
    let before = mail.messages().len();
    let (code, out, _) = sweep_cli(&daemon, &[]);
    assert_eq!(code, 0, "{out}");
    let after = mail.wait_for_count(before + 2, Duration::from_secs(20));
    let new_to: Vec<_> = after[before..]
        .iter()
        .flat_map(|m| m.envelope_to.clone())
        .collect();
    assert!(
        new_to.contains(&"due7@example.org".to_string()),
        "{new_to:?}"
    );

    // The history shows the runs.
    let (status, runs) = daemon
        .client()
        .get(&daemon.admin_token, "/api/v1/sweeps")
        .await;
    assert_eq!(status, 200, "{runs}");
    assert!(runs.as_array().map_or(0, |r| r.len()) >= 4, "{runs}");
}

#[tokio::test]
async fn sweep_api_job_and_policy_endpoints() {
    let ldif = [user("soon", 85, true, false)].concat();
    let slapd = Slapd::start_with(0, &[&ldif]);
    let mail = MailSink::start();
    let daemon = Daemon::start_with(&slapd, mail.port, SWEEP_CONFIG);
    let api = daemon.client();
    let t = &daemon.admin_token;

    let (status, policy) = api.get(t, "/api/v1/policy/expiration").await;
    assert_eq!(status, 200, "{policy}");
    assert_eq!(policy["maxAgeDays"], 90);
    assert_eq!(policy["source"], "directory");
    assert_eq!(policy["notifyDays"], json!([14, 7, 3, 1]));

    // Changing the maximum age writes pwdMaxAge on the default policy entry.
    let (status, body, _) = api.post_raw(t, "/api/v1/policy/expiration", "").await;
    assert_eq!(status, 405, "{body}");
    let reply = reqwest::Client::new()
        .put(format!("{}/api/v1/policy/expiration", daemon.url))
        .bearer_auth(t)
        .json(&json!({"maxAgeDays": 120, "notifyDays": [10, 2], "onExpiry": "require-change"}))
        .send()
        .await
        .expect("put");
    assert_eq!(reply.status(), 200);
    assert_eq!(
        slapd.ldapsearch_attr("cn=default,ou=policies,dc=example,dc=org", "pwdMaxAge"),
        vec![(120 * 86_400).to_string()]
    );
    let reply = reqwest::Client::new()
        .put(format!("{}/api/v1/policy/expiration", daemon.url))
        .bearer_auth(&daemon.password_admin_token)
        .json(&json!({"maxAgeDays": 1, "notifyDays": [], "onExpiry": "nothing"}))
        .send()
        .await
        .expect("put");
    assert_eq!(
        reply.status(),
        403,
        "a password admin may not change the policy"
    );
    let reply = reqwest::Client::new()
        .put(format!("{}/api/v1/policy/expiration", daemon.url))
        .bearer_auth(t)
        .json(&json!({"maxAgeDays": 5, "notifyDays": [7], "onExpiry": "nothing"}))
        .send()
        .await
        .expect("put");
    assert_eq!(
        reply.status(),
        400,
        "a notice day beyond the maximum age is refused"
    );

    // Never expires, the directory's way.
    let reply = reqwest::Client::new()
        .put(format!(
            "{}/api/v1/users/soon/password-never-expires",
            daemon.url
        ))
        .bearer_auth(t)
        .json(&json!({"neverExpires": true}))
        .send()
        .await
        .expect("put");
    assert_eq!(reply.status(), 200);
    assert_eq!(
        slapd.ldapsearch_attr("uid=soon,ou=people,dc=example,dc=org", "pwdPolicySubentry"),
        vec!["cn=never-expires,ou=policies,dc=example,dc=org".to_string()]
    );
    let (_, user) = api.get(t, "/api/v1/users/soon").await;
    assert_eq!(user["passwordNeverExpires"], true, "{user}");

    // A sweep started over the API runs as a job and reports its outcome.
    let (status, started, _) = api.post(t, "/api/v1/sweeps", json!({"dryRun": true})).await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().expect("id").to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let run = loop {
        let (status, run) = api.get(t, &format!("/api/v1/sweeps/{id}")).await;
        if status == 200 && run["status"] != "running" {
            break run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sweep job did not finish: {run}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(
        run["notified"], 0,
        "never-expiring users are not due: {run}"
    );
    let (status, _) = api
        .get(&daemon.password_admin_token, "/api/v1/sweeps")
        .await;
    assert_eq!(status, 403);
    let (status, body) = api.get(t, "/api/v1/sweeps/nonexistent").await;
    assert_eq!(status, 404, "{body}");
}

#[test]
fn invalid_schedule_stops_the_daemon_with_a_clear_error() {
    let slapd = Slapd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = harness::daemon::write_config(
        dir.path(),
        &slapd,
        25,
        1,
        "[sweep]\nschedule = \"0 6 * *\"\n",
    );
    let (code, _, err) = run_cli(&config, &["serve"]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("0 6 * *") && err.contains("five fields"),
        "{err}"
    );
    let config = harness::daemon::write_config(
        dir.path(),
        &slapd,
        25,
        1,
        "[sweep]\ntime_zone = \"Europe/Berln\"\n",
    );
    let (code, _, err) = run_cli(&config, &["sweep", "--dry-run"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("Europe/Berln"), "{err}");
}

/// The next spring-forward change in Europe/Berlin at least `after` from now: the UTC
/// midnight of that local day.
fn next_spring_forward(after: chrono::Duration) -> chrono::NaiveDate {
    use chrono::{Offset, TimeZone};
    let tz = chrono_tz::Europe::Berlin;
    let mut day = (chrono::Utc::now() + after).date_naive();
    loop {
        let noon = |d: chrono::NaiveDate| {
            tz.from_utc_datetime(&d.and_hms_opt(12, 0, 0).expect("noon"))
                .offset()
                .fix()
                .local_minus_utc()
        };
        let next = day.succ_opt().expect("a next day");
        if noon(day) == 3600 && noon(next) == 7200 {
            return next;
        }
        day = next;
    }
}

/// Expiry three days after a spring-forward change in Europe/Berlin: each notice goes
/// out on the right local day, and only once.
#[tokio::test]
async fn scheduled_days_are_counted_in_local_dates_across_daylight_saving() {
    let change = next_spring_forward(chrono::Duration::days(20));
    let day = |offset: i64, hour_utc: u32| {
        (change + chrono::Duration::days(offset))
            .and_hms_opt(hour_utc, 0, 0)
            .expect("time")
            .and_utc()
    };
    // Expires at 07:00 CEST (05:00Z) three days after the change; set 90 days before.
    let expires = day(3, 5);
    let changed = expires - chrono::Duration::days(90);
    let ldif = format!(
        "dn: uid=dst,ou=people,dc=example,dc=org\n\
         objectClass: inetOrgPerson\nuid: dst\ncn: DST\nsn: dst\nmail: dst@example.org\n\
         userPassword: @SAMPLE_PASSWORD_HASH@\npwdChangedTime: {}\n\n",
        changed.format("%Y%m%d%H%M%SZ")
    );
    let slapd = Slapd::start_with(0, &[&ldif]);
    let mail = MailSink::start();
    let daemon = Daemon::start_with(&slapd, mail.port, SWEEP_CONFIG);
    let plan = |at: chrono::DateTime<chrono::Utc>| {
        let at = at.to_rfc3339();
        let (code, out, err) = sweep_cli(&daemon, &["--dry-run", "--at", &at]);
        assert_eq!(code, 0, "{out}\n{err}");
        out.lines()
            .find(|l| l.starts_with("dst "))
            .map(|l| l.split_whitespace().nth(1).unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    // 06:00 local each morning: 06:00 CET is 05:00Z before the change, 06:00 CEST 04:00Z after.
    assert_eq!(plan(day(-5, 5)), "t14", "8 days before");
    assert_eq!(plan(day(-4, 5)), "t7", "7 days before");
    assert_eq!(
        plan(day(0, 4)),
        "t3",
        "the day of the change: 3 days before"
    );
    assert_eq!(plan(day(2, 4)), "t1");
    assert_eq!(
        plan(day(3, 4)),
        "t1",
        "06:00 CEST on the day: not expired yet"
    );
    assert_eq!(plan(day(3, 5)), "expired");

    // Real sweeps on those mornings (some twice) send 14, 7 and 3 once each.
    for at in [day(-5, 5), day(-5, 6), day(-4, 5), day(0, 4), day(0, 4)] {
        let (code, out, err) = sweep_cli(&daemon, &["--at", &at.to_rfc3339()]);
        assert_eq!(code, 0, "{out}\n{err}");
    }
    // Each real sweep also mails the admins' digest, once per sweep time (the second
    // sweep at day(0, 4) sends none): 4 digests, 3 notices, and the expired notices of
    // the 5 sample users (their passwords are 0 days old now: expired by then).
    mail.wait_for_count(12, Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let notices: Vec<String> = mail
        .messages()
        .into_iter()
        .filter(|m| m.envelope_to == ["dst@example.org"])
        .map(|m| m.text)
        .collect();
    assert_eq!(notices.len(), 3, "one mail per threshold, none twice");
    let digests = mail
        .messages()
        .iter()
        .filter(|m| m.envelope_to == ["admins@example.org"])
        .count();
    assert_eq!(digests, 4, "one digest per sweep time");
    for (notice, days) in notices.iter().zip(["8 days", "7 days", "3 days"]) {
        assert!(notice.contains(days), "expected `{days}` in: {notice}");
    }
}

#[tokio::test]
async fn notices_queued_while_the_relay_is_down_arrive_once() {
    let ldif = [user("a1", 85, true, false), user("a2", 88, true, false)].concat();
    let slapd = Slapd::start_with(0, &[&ldif]);
    let mut mail = MailSink::start();
    let daemon = Daemon::start_with(&slapd, mail.port, SWEEP_CONFIG);
    mail.stop();
    let (code, out, err) = sweep_cli(&daemon, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    mail.start_again();
    mail.wait_for_count(3, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        recipients(&mail),
        vec!["a1@example.org", "a2@example.org", "admins@example.org"],
        "each notice once"
    );
}

/// The daemon is killed (SIGKILL) in the middle of a sweep; after the restart the sweep
/// is finished by itself and nobody is mailed twice.
#[tokio::test]
async fn a_sweep_killed_midway_is_finished_after_restart_without_duplicates() {
    let users: Vec<String> = (0..40)
        .map(|i| user(&format!("k{i:02}"), 85, true, false))
        .collect();
    let slapd = Slapd::start_with(0, &[&users.concat()]);
    let mail = MailSink::start();
    let config = format!("{SWEEP_CONFIG}lease_secs = 3\n");
    let mut daemon = Daemon::start_with_env(
        &slapd,
        mail.port,
        &config,
        &[("LOCKBRIDGE__OUTBOX__MAX_BULK_PER_MINUTE", "0")],
    );
    let api = daemon.client();
    // Freeze the directory so the sweep is caught midway, then start it and kill the daemon.
    let pid = std::fs::read_to_string(slapd.dir.join("slapd.pid")).expect("slapd pid");
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.trim())
            .status()
            .expect("kill");
    };
    signal("STOP");
    let (status, started, _) = api
        .post(&daemon.admin_token, "/api/v1/sweeps", json!({}))
        .await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().expect("id").to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, run) = api
            .get(&daemon.admin_token, &format!("/api/v1/sweeps/{id}"))
            .await;
        if status == 200 && run["status"] == "running" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.kill();
    signal("CONT");
    daemon.restart();

    // The restarted daemon resumes once the dead instance's lease lapses.
    let messages = mail.wait_for_count(41, Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut to: Vec<String> = mail
        .messages()
        .iter()
        .flat_map(|m| m.envelope_to.clone())
        .collect();
    let total = to.len();
    to.sort();
    to.dedup();
    assert_eq!(total, to.len(), "someone was mailed twice");
    assert_eq!(messages.len(), 41, "40 notices and one digest");
    let (_, runs) = api.get(&daemon.admin_token, "/api/v1/sweeps").await;
    let statuses: Vec<&str> = runs
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["status"].as_str())
        .collect();
    assert!(statuses.contains(&"interrupted"), "{runs}");
    assert!(statuses.contains(&"completed"), "{runs}");
}

/// The count a line of `lockbridge sweep` prints, e.g. `notices queued        2`.
fn printed_count(out: &str, label: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{out}"))
}

/// Passwords that expired longer ago than `sweep.expired_within_days` (30 by default)
/// get no notice and no expiry action; a dry run counts exactly what the real run then
/// queues.
#[tokio::test]
async fn long_expired_accounts_are_left_alone_and_the_dry_run_counts_what_the_run_queues() {
    let users = [
        user("h_due", 85, true, false),     // expires in 5 days
        user("h_recent", 100, true, false), // expired 10 days ago
        user("h_old", 200, true, false),    // expired 110 days ago
        user("h_older", 900, true, false),  // expired years ago
    ];
    let slapd = Slapd::start_with(0, &[&users.concat()]);
    let mail = MailSink::start();
    // In the file, not the daemon's environment: the CLI sweep reads them too.
    let config = format!(
        "max_bulk_per_minute = 0\nmax_bulk_per_day = 1\n{}",
        SWEEP_CONFIG.replace("[expiry]\n", "[expiry]\non_expiry = \"lock\"\n")
    );
    let daemon = Daemon::start_with(&slapd, mail.port, &config);
    let (code, dry, err) = sweep_cli(&daemon, &["--dry-run"]);
    assert_eq!(code, 0, "{dry}\n{err}");
    assert_eq!(printed_count(&dry, "notices due"), 2, "{dry}");
    assert_eq!(printed_count(&dry, "long expired, left alone"), 2, "{dry}");
    assert_eq!(printed_count(&dry, "expired"), 1, "{dry}");

    let (code, out, err) = sweep_cli(&daemon, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        printed_count(&out, "notices queued"),
        printed_count(&dry, "notices due"),
        "the dry run said what the run does:\n{dry}\n{out}"
    );
    assert_eq!(printed_count(&out, "long expired, left alone"), 2, "{out}");
    // Two notices and the digest wait; the cap of one a day keeps two of them back.
    assert!(
        out.contains("wait for the following days"),
        "the daily cap is reported:\n{out}"
    );

    let dn = |uid: &str| format!("uid={uid},ou=people,dc=example,dc=org");
    assert!(
        !slapd
            .ldapsearch_attr(&dn("h_recent"), "pwdAccountLockedTime")
            .is_empty(),
        "recently expired: locked"
    );
    for old in ["h_old", "h_older"] {
        assert!(
            slapd
                .ldapsearch_attr(&dn(old), "pwdAccountLockedTime")
                .is_empty(),
            "{old} expired long ago: left alone"
        );
    }
    mail.wait_for_count(1, Duration::from_secs(15));
    let (code, again, err) = sweep_cli(&daemon, &["--dry-run"]);
    assert_eq!(code, 0, "{again}\n{err}");
    assert_eq!(printed_count(&again, "notices due"), 0, "{again}");
    assert_eq!(
        printed_count(&again, "already notified earlier"),
        2,
        "{again}"
    );
}

/// How many notices the ledger of the daemon's store holds (read-only, beside the
/// processes writing it).
async fn ledger_count(daemon: &Daemon) -> i64 {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(daemon.dir.path().join("state").join("lockbridge.db"))
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("open the store read-only");
    let count =
        sqlx::query_scalar("SELECT COUNT(*) FROM notice_ledger WHERE key NOT LIKE 'digest|%'")
            .fetch_one(&pool)
            .await
            .expect("count the ledger");
    pool.close().await;
    count
}

/// A sweep over a directory whose passwords were changed evenly over 120 days, killed
/// with SIGKILL after its first ledger batch and before its last, then run again, queues
/// every notice exactly once: as many as the dry run said, one per user, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_even_spread_sweep_killed_between_ledger_batches_queues_each_notice_once() {
    // Oldest first: the due users come early in the stream, so after the first batch
    // there are many pages left (and a second, smaller batch) to kill the sweep in.
    let users: String = (0..3_600)
        .map(|i| user(&format!("sp{i:04}"), (3_599 - i) * 120 / 3_600, true, false))
        .collect();
    let slapd = Slapd::start_with(0, &[&users]);
    let mail = MailSink::start();
    // Small pages stretch the sweep over many directory round trips, so the kill lands
    // between two ledger batches (of 1,000 notices) rather than after the last one.
    let config = format!(
        "max_bulk_per_minute = 0\nmax_bulk_per_day = 0\n{SWEEP_CONFIG}page_size = 10\nlease_secs = 2\n"
    );
    let daemon = Daemon::start_with(&slapd, mail.port, &config);

    let (code, dry, err) = sweep_cli(&daemon, &["--dry-run"]);
    assert_eq!(code, 0, "{dry}\n{err}");
    let due = printed_count(&dry, "notices due");
    assert!(due > 1_000, "more than one ledger batch is due: {dry}");

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lockbridge"))
        .args(["sweep", "--config"])
        .arg(&daemon.config_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the sweep");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let recorded = ledger_count(&daemon).await;
        if recorded > 0 {
            child.kill().expect("SIGKILL");
            break;
        }
        assert!(
            child.try_wait().expect("poll the sweep").is_none(),
            "the sweep finished before a batch was seen"
        );
        assert!(std::time::Instant::now() < deadline, "no batch recorded");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.wait().expect("reap the sweep");
    let at_kill = u64::try_from(ledger_count(&daemon).await).expect("count");
    assert!(
        at_kill > 0 && at_kill < due,
        "killed between batches: {at_kill} of {due} recorded"
    );

    // Run again once the dead sweep's lease has lapsed.
    let out = loop {
        let (code, out, err) = sweep_cli(&daemon, &[]);
        if code == 0 {
            break out;
        }
        assert!(err.contains("another sweep is running"), "{out}\n{err}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        printed_count(&out, "notices queued"),
        due - at_kill,
        "{out}"
    );
    assert_eq!(
        printed_count(&out, "already notified earlier"),
        at_kill,
        "{out}"
    );
    assert_eq!(
        u64::try_from(ledger_count(&daemon).await).expect("count"),
        due
    );
    let listed = |out: &str| out.lines().filter(|l| l.starts_with("sp")).count();
    assert_eq!(listed(&out), 100, "the first 100 accounts:\n{out}");
    assert!(out.contains("--all lists every one"), "{out}");
    let (code, every, err) = sweep_cli(&daemon, &["--dry-run", "--all"]);
    assert_eq!(code, 0, "{every}\n{err}");
    assert_eq!(listed(&every) as u64, due, "--all lists every account");
    assert!(!every.contains("--all lists every one"));

    // One digest (the killed run queued none) and one notice per due user.
    let expected = usize::try_from(due).expect("count") + 1;
    mail.wait_for_count(expected, Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let to = recipients(&mail);
    let mut unique = to.clone();
    unique.dedup();
    assert_eq!(to.len(), expected, "every notice once, and the digest");
    assert_eq!(unique.len(), to.len(), "someone was mailed twice");
}

/// Turning expiry on for a directory full of old passwords stays within the daily cap;
/// a temporary password is not held back by it.
#[tokio::test]
async fn first_enablement_stays_within_the_daily_cap() {
    let users: Vec<String> = (0..6)
        .map(|i| user(&format!("c{i}"), 85, true, false))
        .collect();
    let slapd = Slapd::start_with(0, &[&users.concat()]);
    let mail = MailSink::start();
    let daemon = Daemon::start_with_env(
        &slapd,
        mail.port,
        SWEEP_CONFIG,
        &[
            ("LOCKBRIDGE__OUTBOX__MAX_BULK_PER_DAY", "3"),
            ("LOCKBRIDGE__OUTBOX__MAX_BULK_PER_MINUTE", "0"),
        ],
    );
    let (code, out, err) = sweep_cli(&daemon, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("notices queued") && l.trim_end().ends_with(" 6")),
        "{out}"
    );
    mail.wait_for_count(3, Duration::from_secs(15));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        mail.messages().len(),
        3,
        "more bulk mail than the daily cap"
    );

    let (status, body, _) = daemon
        .client()
        .post(
            &daemon.admin_token,
            "/api/v1/users/bob/password-reset",
            json!({"mode": "auto", "sendTo": ["bob@example.org"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let messages = mail.wait_for_count(4, Duration::from_secs(15));
    assert!(
        messages
            .iter()
            .any(|m| m.envelope_to == ["bob@example.org"]),
        "the temporary password waited"
    );
}

/// A notice that can no longer be true ("5 days left" for a password that has expired
/// since) is not sent but dead-lettered, and the API shows it.
#[tokio::test]
async fn stale_notices_are_dead_lettered_and_listed() {
    let slapd = Slapd::start_with(0, &[&user("late", 95, true, false)]);
    let mail = MailSink::start();
    let daemon = Daemon::start_with(&slapd, mail.port, SWEEP_CONFIG);
    let ten_days_ago = (chrono::Utc::now() - chrono::Duration::days(10)).to_rfc3339();
    let (code, out, err) = sweep_cli(&daemon, &["--at", &ten_days_ago]);
    assert_eq!(code, 0, "{out}\n{err}");
    let api = daemon.client();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let dead = loop {
        let (status, page) = api
            .get(&daemon.admin_token, "/api/v1/mail/dead-letters")
            .await;
        assert_eq!(status, 200, "{page}");
        if page["messages"].as_array().is_some_and(|m| !m.is_empty()) {
            break page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing dead-lettered: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        dead["messages"][0]["template"], "password-expiring",
        "{dead}"
    );
    assert_eq!(dead["messages"][0]["recipient"], "late@example.org");
    assert!(
        mail.messages()
            .iter()
            .all(|m| m.envelope_to != ["late@example.org"])
    );
    let (status, _) = api
        .get(&daemon.password_admin_token, "/api/v1/mail/dead-letters")
        .await;
    assert_eq!(status, 403);
}

/// With lockbridge as the source of truth, its own maximum age applies to the
/// directory's pwdChangedTime (the directory's pwdMaxAge of 90 days is ignored).
#[tokio::test]
async fn lockbridge_policy_applies_its_own_maximum_age() {
    let ldif = [
        user("month", 25, true, false),
        user("fresh2", 5, true, false),
    ]
    .concat();
    let slapd = Slapd::start_with(0, &[&ldif]);
    let mail = MailSink::start();
    let daemon = Daemon::start_with(
        &slapd,
        mail.port,
        "[expiry]\nsource = \"lockbridge\"\nmax_age_days = 30\nnotify_days = [7, 1]\n",
    );
    let (code, plan, err) = sweep_cli(&daemon, &["--dry-run"]);
    assert_eq!(code, 0, "{plan}\n{err}");
    let month = plan
        .lines()
        .find(|l| l.starts_with("month "))
        .unwrap_or_default();
    assert!(
        month.contains("t7") && month.contains("would-queue"),
        "5 days left of 30: {plan}"
    );
    assert!(
        !plan.lines().any(|l| l.starts_with("fresh2 ")),
        "25 days left: not due: {plan}"
    );
    let (status, policy) = daemon
        .client()
        .get(&daemon.admin_token, "/api/v1/policy/expiration")
        .await;
    assert_eq!(status, 200, "{policy}");
    assert_eq!(policy["source"], "lockbridge");
    assert_eq!(policy["maxAgeDays"], 30);
}

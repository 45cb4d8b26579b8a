//! Fault tolerance with two `lockbridge` instances on one store, the directory and the
//! SMTP relay each behind a TCP proxy the test controls (`harness::proxy`): sweeps at
//! scale, kill -9 of either instance at seeded random points mid-sweep, mid-outbox-batch
//! and mid-bulk-job, and links cut or slowed mid-operation. What must hold: nothing
//! lost, nothing sent or reset twice, every request answered with a clear error or a
//! success, recovery without restarts.
//!
//! `FAULT_SEED=N` replays a run's random choices (each test prints its seed);
//! `LOCKBRIDGE_TEST_STORE=postgres` runs the instances on PostgreSQL instead of the
//! default below.
//!
//! "Sent twice" means two messages for one notice (two Message-IDs): the ledger must
//! make that impossible. Delivery itself is at-least-once by design: a kill or a cut
//! between the relay's "250 OK" and the store's "sent" makes the same message (the same
//! Message-ID, so the receiving side folds it) go out again. Those redeliveries are
//! counted, printed and bounded by the faults that can cause them.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use harness::daemon::{Api, Daemon, Options};
use harness::proxy::Proxy;
use harness::shared_store::{SharedStore, StoreUnderTest};
use harness::slapd::Slapd;
use harness::smtp::{MailSink, SinkMessage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// The store the two instances share (`LOCKBRIDGE_TEST_STORE=sqlite` for one SQLite file).
const STORE: SharedStore = SharedStore::Postgres;

const ADMINS: &str = "admins@example.org";
/// Connections the outbox opens to the relay (`notify::mailer::RELAY_CONNECTIONS`): the
/// most messages one instance has in flight, each one redelivery at most if killed.
const RELAY_CONNECTIONS: usize = 4;

/// How old a password is, for user number `i` of a population: most are fresh, one in
/// eight falls at one of the thresholds (14, 7, 3, 1 days left), has expired recently,
/// or expired long ago (left alone). Ages stay clear of the thresholds' edges, so what
/// is due does not depend on the time of day the test runs at.
fn age_of(i: usize) -> (i64, bool) {
    match i % 48 {
        0 => (78, true),               // 12 days left: the 14-day notice
        1 => (85, true),               // 5 days left: the 7-day notice
        2 => (88, true),               // 2 days left: the 3-day notice
        3 => (89, true),               // a day left: the 1-day notice
        4 | 5 => (95, true),           // expired 5 days ago: the expired notice
        6 => (200, false),             // expired long ago: left alone
        n => ((n as i64) % 70, false), // fresh
    }
}

/// LDIF for `count` users `PREFIX000000...` with passwords aged by [`age_of`]; the
/// names of those due a notice.
fn population(prefix: &str, count: usize, for_ldapadd: bool) -> (String, BTreeSet<String>) {
    let mut ldif = String::with_capacity(count * 260);
    let mut due = BTreeSet::new();
    let now = chrono::Utc::now();
    for i in 0..count {
        let uid = format!("{prefix}{i:06}");
        let (days, is_due) = age_of(i);
        // Absolute times, so that the same text works for slapadd and for ldapadd.
        let changed = (now - chrono::Duration::days(days)).format("%Y%m%d%H%M%SZ");
        ldif.push_str(&format!("dn: uid={uid},ou=people,dc=example,dc=org\n"));
        if for_ldapadd {
            ldif.push_str("changetype: add\n");
        }
        ldif.push_str(&format!(
            "objectClass: inetOrgPerson\n\
             uid: {uid}\ncn: User {uid}\nsn: {uid}\nmail: {uid}@example.org\n\
             pwdChangedTime: {changed}\n"
        ));
        if !for_ldapadd {
            ldif.push_str("userPassword: @SAMPLE_PASSWORD_HASH@\n");
        }
        ldif.push('\n');
        if is_due {
            due.insert(format!("{uid}@example.org"));
        }
    }
    (ldif, due)
}

/// The seed of this test's random choices: `FAULT_SEED`, else one drawn now (printed
/// either way, so a failure can be replayed).
fn seed(test: &str) -> u64 {
    let seed = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{test}: FAULT_SEED={seed}");
    seed
}

/// Two instances on one store, the directory and the relay behind proxies.
struct Pair {
    slapd: Slapd,
    ldap: Proxy,
    mail: MailSink,
    smtp: Proxy,
    store: StoreUnderTest,
    daemons: [Daemon; 2],
}

impl Pair {
    /// `outbox` is appended to the `[outbox]` section, `extra` after it.
    fn start(slapd: Slapd, outbox: &str, extra: &str, env: &[(&str, &str)]) -> Pair {
        let mail = MailSink::start();
        let smtp = Proxy::to_port(mail.port);
        let ldap = Proxy::to_port(port_of(&slapd.ldaps_url));
        let store = StoreUnderTest::start(harness::SharedStore::from_env_or(STORE));
        let mut options = Options {
            ldap_url: Some(format!("ldaps://127.0.0.1:{}", ldap.port)),
            extra: format!(
                "{outbox}\n{}\n[sweep]\nadmin_recipients = [\"{ADMINS}\"]\nlease_secs = 2\n{extra}\n{}",
                slapd.demo_settings(),
                store.section()
            ),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tokens: None,
        };
        let first = Daemon::start_opts(&slapd, smtp.port, options.clone());
        options.tokens = Some((
            first.admin_token.clone(),
            first.password_admin_token.clone(),
        ));
        let second = Daemon::start_opts(&slapd, smtp.port, options);
        Pair {
            slapd,
            ldap,
            mail,
            smtp,
            store,
            daemons: [first, second],
        }
    }

    fn api(&self, i: usize) -> Api {
        self.daemons[i].client()
    }

    fn token(&self) -> String {
        self.daemons[0].admin_token.clone()
    }

    fn logs(&self) -> String {
        format!(
            "--- instance 0 ---\n{}\n--- instance 1 ---\n{}",
            tail(&self.daemons[0].log(), 60),
            tail(&self.daemons[1].log(), 60)
        )
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// How many messages the sink holds, without parsing them.
fn mail_count(mail: &MailSink) -> usize {
    std::fs::read_dir(mail.messages_dir())
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
                .count()
        })
        .unwrap_or(0)
}

/// Waits until the sink holds at least `n` messages.
async fn wait_for_mail(pair: &Pair, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while mail_count(&pair.mail) < n {
        assert!(
            Instant::now() < deadline,
            "expected {n} messages within {timeout:?}, got {}\n{}",
            mail_count(&pair.mail),
            pair.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every one of `users` and `digests` digests has arrived at least once
/// (counted by Message-ID: a redelivered copy does not stand in for a message still
/// waiting, say one claimed by a killed instance until its claim lapses).
async fn wait_for_each(pair: &Pair, users: &BTreeSet<String>, digests: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if mail_count(&pair.mail) >= users.len() + digests {
            let tally = Tally::of(&pair.mail.messages());
            if tally.users(ADMINS).is_superset(users) && tally.distinct_to(ADMINS) >= digests {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "after {timeout:?}: {} of {} users, {} of {digests} digests\n{}",
                tally.users(ADMINS).intersection(users).count(),
                users.len(),
                tally.distinct_to(ADMINS),
                pair.logs()
            );
        }
        assert!(
            Instant::now() < deadline,
            "after {timeout:?}: {} messages\n{}",
            mail_count(&pair.mail),
            pair.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until the sink's count has not moved for `quiet`, and returns it.
async fn wait_for_quiet(mail: &MailSink, quiet: Duration) -> usize {
    let mut last = mail_count(mail);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = mail_count(mail);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= quiet {
            return now;
        }
    }
}

/// What the sink received: per recipient, each Message-ID and how often it came.
#[derive(Debug, Default)]
struct Tally {
    by_recipient: BTreeMap<String, BTreeMap<String, usize>>,
    redeliveries: usize,
}

impl Tally {
    fn of(messages: &[SinkMessage]) -> Tally {
        let mut tally = Tally::default();
        for m in messages {
            let id = m
                .header("Message-ID")
                .unwrap_or_else(|| panic!("a message without a Message-ID: {m:?}"));
            for to in &m.envelope_to {
                let copies = tally
                    .by_recipient
                    .entry(to.clone())
                    .or_default()
                    .entry(id.clone())
                    .or_default();
                *copies += 1;
                if *copies > 1 {
                    tally.redeliveries += 1;
                }
            }
        }
        tally
    }

    /// Recipients with more than one distinct message, other than `except`.
    fn doubled(&self, except: &str) -> Vec<(&String, usize)> {
        self.by_recipient
            .iter()
            .filter(|(to, ids)| to.as_str() != except && ids.len() > 1)
            .map(|(to, ids)| (to, ids.len()))
            .collect()
    }

    fn users(&self, except: &str) -> BTreeSet<String> {
        self.by_recipient
            .keys()
            .filter(|to| to.as_str() != except)
            .cloned()
            .collect()
    }

    fn distinct_to(&self, to: &str) -> usize {
        self.by_recipient.get(to).map_or(0, BTreeMap::len)
    }
}

/// Starts a sweep as of `at` on instance `i`; `None` when the API says one is running
/// (409, with a clear error).
async fn start_sweep(pair: &Pair, i: usize, at: &str) -> Option<String> {
    let (status, body, _) = pair
        .api(i)
        .post(&pair.token(), "/api/v1/sweeps", json!({"at": at}))
        .await;
    match status {
        202 => Some(body["id"].as_str().expect("a sweep id").to_owned()),
        409 => {
            let text = body.to_string();
            assert!(text.contains("running"), "a clear conflict: {text}");
            None
        }
        _ => panic!("POST /api/v1/sweeps on instance {i}: {status} {body}"),
    }
}

/// The runs in the history (newest first), from instance `i`.
async fn sweep_runs(pair: &Pair, i: usize) -> Vec<Value> {
    let (status, runs) = pair
        .api(i)
        .get(&pair.token(), "/api/v1/sweeps?limit=100")
        .await;
    assert_eq!(status, 200, "{runs}");
    runs.as_array().cloned().unwrap_or_default()
}

/// Waits until no sweep is running (asking instance `i`).
async fn wait_no_sweep_running(pair: &Pair, i: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let runs = sweep_runs(pair, i).await;
        if !runs.iter().any(|r| r["status"] == "running") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a sweep still runs after {timeout:?}: {runs:?}\n{}",
            pair.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until sweep `id` has ended (asking instance `i`) and returns its run. Its
/// instance may need a moment to record it after answering 202.
async fn wait_sweep(pair: &Pair, i: usize, id: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, run) = pair
            .api(i)
            .get(&pair.token(), &format!("/api/v1/sweeps/{id}"))
            .await;
        if status == 200 && run["status"] != "running" {
            return run;
        }
        assert!(
            status == 200 || status == 404,
            "GET /api/v1/sweeps/{id}: {status} {run}"
        );
        assert!(
            Instant::now() < deadline,
            "sweep {id} not ended after {timeout:?}: {status} {run}\n{}",
            pair.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Distinct sweep times (`at`) of completed, real runs: one digest each is due.
fn completed_sweep_times(runs: &[Value]) -> BTreeSet<String> {
    runs.iter()
        .filter(|r| r["status"] == "completed" && r["dryRun"] == false)
        .filter_map(|r| r["at"].as_str().map(str::to_owned))
        .collect()
}

/// 10,000 users, both instances asked to sweep as of the same time at once (as their
/// schedules do), and again once the first sweep has finished: exactly one notice per
/// due user, one digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sweeping_ten_thousand_users_mail_each_notice_and_the_digest_once() {
    let started = Instant::now();
    let (ldif, due) = population("s", 10_000, false);
    let slapd = Slapd::start_with(0, &[&ldif]);
    let pair = Pair::start(
        slapd,
        "max_bulk_per_minute = 0\nmax_bulk_per_day = 0",
        "page_size = 500",
        &[],
    );
    eprintln!("setup: {:?}", started.elapsed());
    let at = chrono::Utc::now().to_rfc3339();

    let (first, second) = tokio::join!(start_sweep(&pair, 0, &at), start_sweep(&pair, 1, &at));
    let ids: Vec<String> = [first, second].into_iter().flatten().collect();
    assert_eq!(
        ids.len(),
        1,
        "one of the two started a sweep, the other was told no"
    );
    let run = wait_sweep(&pair, 0, &ids[0], Duration::from_secs(120)).await;
    assert_eq!(run["status"], "completed", "{run}");
    eprintln!("first sweep done: {:?}", started.elapsed());
    // The other instance's turn for the same time, after the first has finished, finds
    // everything done: no notice and no digest again.
    for i in [1, 0] {
        let id = start_sweep(&pair, i, &at).await.expect("no sweep runs now");
        let run = wait_sweep(&pair, i, &id, Duration::from_secs(120)).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["notified"], 0, "{run}");
    }
    let runs = sweep_runs(&pair, 1).await;
    for r in &runs {
        eprintln!(
            "run {} {} at {} notified {} already {}",
            r["id"], r["status"], r["at"], r["notified"], r["alreadyNotified"]
        );
    }
    let completed: Vec<&Value> = runs.iter().filter(|r| r["status"] == "completed").collect();
    assert!(!completed.is_empty(), "{runs:?}");
    let notified: u64 = completed
        .iter()
        .filter_map(|r| r["notified"].as_u64())
        .sum();
    assert_eq!(notified as usize, due.len(), "queued once in all: {runs:?}");
    for r in &runs {
        // A run that lost the race says so; none failed otherwise.
        assert_ne!(r["status"], "failed", "{r}");
    }

    wait_for_mail(&pair, due.len() + 1, Duration::from_secs(180)).await;
    wait_for_quiet(&pair.mail, Duration::from_secs(3)).await;
    eprintln!("mail delivered: {:?}", started.elapsed());
    let tally = Tally::of(&pair.mail.messages());
    assert_eq!(tally.doubled(ADMINS), vec![], "someone got two notices");
    assert_eq!(tally.users(ADMINS), due, "every due user, nobody else");
    assert_eq!(tally.distinct_to(ADMINS), 1, "one digest");
    assert_eq!(tally.redeliveries, 0, "no fault, no redelivery");
    eprintln!(
        "{} notices to {} users, {} scanned per run; wall {:?}",
        due.len(),
        tally.users(ADMINS).len(),
        completed[0]["scanned"],
        started.elapsed()
    );
}

/// Where a round's kill falls.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// This long after the sweep was started.
    MidSweep(Duration),
    /// Once this many of the round's messages have reached the relay.
    MidOutbox(usize),
}

/// Kills instance `victim` with SIGKILL and starts it again on the same configuration
/// and store.
fn kill_and_restart(pair: &mut Pair, victim: usize) {
    pair.daemons[victim].kill();
    pair.daemons[victim].restart();
}

/// A sweep over 10,000 users, then ten rounds: new users fall due, a sweep is started on
/// one instance, and one instance (chosen at random) is killed with SIGKILL at a random
/// point mid-sweep or mid-outbox-batch, then started again. At the end every due user
/// has exactly one notice, each sweep time one digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_either_instance_mid_sweep_or_mid_outbox_loses_and_doubles_nothing() {
    let started = Instant::now();
    let seed = seed("kill_9_sweep_rounds");
    let mut rng = StdRng::seed_from_u64(seed);
    let (ldif, mut expected) = population("k", 10_000, false);
    let slapd = Slapd::start_with(0, &[&ldif]);
    // Small pages stretch a sweep over many directory round trips; a slower relay
    // stretches each outbox batch, so that random kills land inside them.
    let mut pair = Pair::start(
        slapd,
        "max_bulk_per_minute = 0\nmax_bulk_per_day = 0",
        "page_size = 50",
        &[],
    );
    pair.smtp.delay(Duration::from_millis(2));

    // A clean sweep first: everything due now is queued and sent, and it says how long
    // a sweep takes here.
    let id = start_sweep(&pair, 0, &chrono::Utc::now().to_rfc3339())
        .await
        .expect("nothing runs yet");
    let run = wait_sweep(&pair, 0, &id, Duration::from_secs(120)).await;
    let took = |run: &Value| {
        let t = |k: &str| {
            run[k]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .expect("a time")
        };
        (t("finishedAt") - t("startedAt"))
            .to_std()
            .unwrap_or_default()
    };
    let sweep_time = took(&run).max(Duration::from_millis(50));
    wait_for_mail(&pair, expected.len() + 1, Duration::from_secs(120)).await;
    eprintln!(
        "clean sweep: {} due, sweep {:?}, {:?} so far",
        expected.len(),
        sweep_time,
        started.elapsed()
    );

    let mut kills = Vec::new();
    for round in 0..10 {
        let (ldif, due) = population(&format!("r{round}x"), 240, true);
        pair.slapd.ldapmodify_as_root_relax(&ldif);
        let fresh = due.len();
        expected.extend(due);
        let starter = rng.gen_range(0..2);
        let victim = rng.gen_range(0..2);
        // A fraction of the measured sweep time: the same draws for a seed whatever
        // the machine's speed.
        let point = if rng.gen_bool(0.5) {
            KillPoint::MidSweep(sweep_time.mul_f64(rng.r#gen::<f64>()))
        } else {
            KillPoint::MidOutbox(rng.gen_range(1..fresh))
        };
        let before = mail_count(&pair.mail);
        let at = chrono::Utc::now().to_rfc3339();
        let deadline = Instant::now() + Duration::from_secs(60);
        while start_sweep(&pair, starter, &at).await.is_none() {
            assert!(
                Instant::now() < deadline,
                "no sweep could start\n{}",
                pair.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        match point {
            KillPoint::MidSweep(after) => tokio::time::sleep(after).await,
            KillPoint::MidOutbox(n) => {
                let deadline = Instant::now() + Duration::from_secs(60);
                while mail_count(&pair.mail) < before + n {
                    assert!(
                        Instant::now() < deadline,
                        "round {round}: no mail\n{}",
                        pair.logs()
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        let in_sink = mail_count(&pair.mail) - before;
        kill_and_restart(&mut pair, victim);
        eprintln!(
            "round {round}: sweep on {starter}, killed {victim} at {point:?} ({in_sink} of {fresh} mailed), {:?}",
            started.elapsed()
        );
        kills.push((starter, victim, point));
        // Settled: the sweep (or its resumption by the restarted instance) has ended.
        wait_no_sweep_running(&pair, 1 - victim, Duration::from_secs(90)).await;
        eprintln!("round {round}: settled, {:?}", started.elapsed());
    }

    // Everything queued is delivered: one notice per due user, one digest per time.
    let times = completed_sweep_times(&sweep_runs(&pair, 0).await);
    // A message claimed by a killed instance waits for its claim to lapse (a minute:
    // lockbridge::notify::MAIL_LEASE; a live instance renews its claims).
    wait_for_each(&pair, &expected, times.len(), Duration::from_secs(180)).await;
    wait_for_quiet(&pair.mail, Duration::from_secs(4)).await;
    let tally = Tally::of(&pair.mail.messages());
    assert_eq!(
        tally.doubled(ADMINS),
        vec![],
        "seed {seed}: a user got two notices"
    );
    let mailed = tally.users(ADMINS);
    let missing: Vec<&String> = expected.difference(&mailed).collect();
    assert_eq!(missing, Vec::<&String>::new(), "seed {seed}: notices lost");
    assert_eq!(tally.users(ADMINS), expected, "seed {seed}: nobody else");
    assert_eq!(
        tally.distinct_to(ADMINS),
        times.len(),
        "seed {seed}: one digest per sweep time ({times:?})"
    );
    // At-least-once: a message in flight when its instance died may go out again,
    // under the same Message-ID; at most the batch an instance had claimed.
    assert!(
        tally.redeliveries <= kills.len() * 2 * RELAY_CONNECTIONS,
        "seed {seed}: {} redeliveries for {} kills",
        tally.redeliveries,
        kills.len()
    );
    eprintln!(
        "seed {seed}: {} users notified once each, {} digests, {} redeliveries of one Message-ID, wall {:?}",
        expected.len(),
        times.len(),
        tally.redeliveries,
        started.elapsed()
    );
}

async fn sign_in(api: &Api, user: &str, password: &str) -> String {
    let (status, body, _) = api
        .post(
            "",
            "/api/v1/sessions",
            json!({"userName": user, "password": password}),
        )
        .await;
    assert_eq!(status, 201, "{user} signs in: {body}");
    body["token"].as_str().expect("token").to_owned()
}

async fn job(pair: &Pair, i: usize, token: &str, id: &str) -> Value {
    let (status, job) = pair.api(i).get(token, &format!("/api/v1/jobs/{id}")).await;
    assert_eq!(status, 200, "{job}");
    job
}

/// A CSV field as written (RFC 4180 quotes undone).
fn unquote(field: &str) -> String {
    match field.strip_prefix('"').and_then(|f| f.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => field.to_owned(),
    }
}

/// The temporary password in a mail: the `Temporary password: ...` line.
fn password_in(mail: &SinkMessage) -> Option<String> {
    mail.text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Temporary password:")
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
    })
}

/// Resetting 4,000 users (new passwords mailed to each one's alternate address, and a
/// report), with either instance killed with SIGKILL at random moments, ten times:
/// the job is carried on by whichever instance gets its lease, and every user is reset
/// exactly once: one password write each, one mail each holding the password the report
/// gives, which binds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_reset_survives_ten_kills_of_either_instance_resetting_each_user_once() {
    // Progress is recorded every 256 users: 4,000 give sixteen stretches for ten kills.
    const USERS: usize = 4_000;
    let started = Instant::now();
    let seed = seed("kill_9_bulk_rounds");
    let mut rng = StdRng::seed_from_u64(seed);
    let slapd = Slapd::start_with(USERS, &[]);
    // One write per reset (the password with its must-change flag): the path a kill
    // must not leave half done.
    let mut pair = Pair::start(
        slapd,
        "",
        "",
        &[("LOCKBRIDGE__DIRECTORY__SERVER_HASHES_CLEARTEXT", "true")],
    );
    let before = pair.slapd.users_state();
    let alice = sign_in(&pair.api(0), "alice", &pair.slapd.sample_password).await;
    let starter = rng.gen_range(0..2);
    let (status, body, _) = pair
        .api(starter)
        .post(
            &alice,
            "/api/v1/password-resets",
            json!({"all": true, "mode": "auto", "requireChangeAtNextSignIn": true,
                   "report": true, "deliverToAlternateEmail": true}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    let total = body["total"].as_u64().expect("total") as usize;
    assert_eq!(total, USERS + 4, "everyone but alice: {body}");

    // Kills follow the job's progress, not the clock, so a faster machine (or a faster
    // lockbridge) cannot finish the job before the kills are spent: each round waits
    // for the job to record progress since the last kill, then kills at a random
    // moment inside the next stretch of work.
    let mut kills = 0;
    let mut killed_at = 0;
    'rounds: for round in 0..10 {
        let victim = rng.gen_range(0..2);
        let jitter = Duration::from_millis(rng.gen_range(0..400));
        loop {
            let state = job(&pair, 1 - victim, &alice, &id).await;
            if state["status"] != "running" {
                eprintln!("round {round}: the job had ended: {state}");
                break 'rounds;
            }
            let done = state["done"].as_u64().unwrap_or(0) as usize;
            if done > killed_at {
                killed_at = done;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(jitter).await;
        kill_and_restart(&mut pair, victim);
        kills += 1;
        eprintln!(
            "round {round}: killed {victim} {jitter:?} after {killed_at} of {total} were done"
        );
    }
    assert!(
        kills == 10,
        "seed {seed}: the job ended after {kills} kills; give it more users"
    );

    let deadline = Instant::now() + Duration::from_secs(240);
    let done = loop {
        let state = job(&pair, 0, &alice, &id).await;
        if state["status"] != "running" {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not finish: {state}\n{}",
            pair.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        (
            done["done"].as_u64(),
            done["refused"].as_u64(),
            done["failed"].as_u64()
        ),
        (Some(total as u64), Some(0), Some(0)),
        "{done}"
    );
    eprintln!("job completed after {kills} kills: {:?}", started.elapsed());

    // One password write per user, and each must change it.
    let after = pair.slapd.users_state();
    let writes = |states: &std::collections::HashMap<String, harness::UserState>, uid: &str| {
        states.get(uid).map_or(0, |s| s.password_writes)
    };
    let mut twice = Vec::new();
    for uid in after.keys().filter(|u| u.as_str() != "alice") {
        if writes(&after, uid) != writes(&before, uid) + 1 {
            twice.push((uid.clone(), writes(&before, uid), writes(&after, uid)));
        }
        assert!(after[uid].must_change, "{uid} must change");
    }
    assert_eq!(twice, vec![], "seed {seed}: (user, writes before, after)");

    // The report: each user's password, which binds (a sample) and is the one mailed.
    let csv = reqwest::Client::new()
        .get(format!("{}/api/v1/jobs/{id}/report", pair.daemons[1].url))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("report")
        .text()
        .await
        .expect("csv");
    let reported: BTreeMap<String, String> = csv
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(4, ',').collect();
            (f.len() == 4).then(|| (f[0].to_owned(), unquote(f[3])))
        })
        .collect();
    assert_eq!(reported.len(), total, "{}", &csv[..csv.len().min(300)]);
    for (uid, password) in reported.iter().step_by(101) {
        let bind = pair.slapd.bind_as(&pair.slapd.user_dn(uid), password);
        assert!(bind.success && bind.must_change, "{uid}: {}", bind.output);
    }
    // Transactional mail goes out at once: wait for one per user with an alternate
    // address (the generated users and the four samples).
    let alternates: BTreeSet<String> = reported
        .keys()
        .map(|uid| format!("{uid}.personal@example.net"))
        .collect();
    wait_for_each(&pair, &alternates, 0, Duration::from_secs(180)).await;
    wait_for_quiet(&pair.mail, Duration::from_secs(3)).await;
    let messages = pair.mail.messages();
    let tally = Tally::of(&messages);
    assert_eq!(
        tally.doubled(""),
        vec![],
        "seed {seed}: two different mails to one user"
    );
    assert_eq!(tally.by_recipient.len(), total, "one mail per user");
    for m in &messages {
        let to = &m.envelope_to[0];
        let uid = to.split('.').next().unwrap_or_default();
        let mailed = password_in(m).unwrap_or_else(|| panic!("no password in: {}", m.text));
        assert_eq!(
            reported.get(uid),
            Some(&mailed),
            "seed {seed}: {uid} was mailed another password than the report's"
        );
    }
    assert!(
        tally.redeliveries <= kills * 2 * RELAY_CONNECTIONS,
        "{} redeliveries",
        tally.redeliveries
    );

    // The audit log: every user's reset, twice only where a resumed run found it done
    // and said so.
    let mut recorded: BTreeMap<String, usize> = BTreeMap::new();
    let mut found_after_restart = 0;
    let mut page_before: Option<i64> = None;
    loop {
        let mut page = "/api/v1/audit?actor=alice&action=password.reset&limit=500".to_owned();
        if let Some(b) = page_before {
            page.push_str(&format!("&before={b}"));
        }
        let (status, body) = pair.api(0).get(&alice, &page).await;
        assert_eq!(status, 200, "{body}");
        let records = body["records"].as_array().cloned().unwrap_or_default();
        for r in &records {
            assert_eq!(r["outcome"], "success", "{r}");
            *recorded
                .entry(r["target"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
            found_after_restart += usize::from(r["detail"]["foundAfterRestart"] == true);
        }
        match body["next"].as_i64() {
            Some(next) if !records.is_empty() => page_before = Some(next),
            _ => break,
        }
    }
    assert_eq!(recorded.len(), total, "every reset recorded");
    let recorded_twice = recorded.values().filter(|n| **n > 1).count();
    assert!(
        recorded_twice <= found_after_restart,
        "seed {seed}: {recorded_twice} recorded twice, {found_after_restart} marked"
    );
    let sample: Vec<&str> = reported.values().step_by(97).map(String::as_str).collect();
    pair.daemons[0].assert_no_secrets(&sample).await;
    pair.daemons[1].assert_no_secrets(&sample).await;
    pair.store.assert_no_secrets(&sample);
    eprintln!(
        "seed {seed}: {total} users reset once each across {kills} kills, {} redeliveries, wall {:?}",
        tally.redeliveries,
        started.elapsed()
    );
}

/// Asserts a request made while a dependency is down got a clear 503: a code, a detail,
/// a hint, `Retry-After`, and nothing of the internals.
fn assert_clear_503(what: &str, reply: &(u16, Value, reqwest::header::HeaderMap)) {
    let (status, body, headers) = reply;
    assert_eq!(*status, 503, "{what}: {body}");
    assert!(
        headers.contains_key("retry-after"),
        "{what}: no Retry-After"
    );
    let text = body.to_string();
    for internal in ["sqlx", "ldap3", "panicked", "os error", "postgres://"] {
        assert!(!text.contains(internal), "{what} shows internals: {text}");
    }
    assert!(
        text.len() > 20,
        "{what}: a body that says what is wrong: {text}"
    );
}

/// The directory's link is cut mid-sweep and mid-bulk-job: the sweep ends `failed`
/// with an error naming the directory, the job pauses, requests meanwhile get a clear
/// 503; once the link is back, without a restart, readiness returns, the job carries
/// on and finishes (nobody reset twice), and the next sweep mails every notice once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_directory_link_fails_clearly_and_recovers_without_restart() {
    let started = Instant::now();
    let seed = seed("directory_cut");
    let mut rng = StdRng::seed_from_u64(seed);
    let (ldif, due) = population("d", 3_000, false);
    let slapd = Slapd::start_with(400, &[&ldif]);
    let pair = Pair::start(
        slapd,
        "max_bulk_per_minute = 0\nmax_bulk_per_day = 0",
        "page_size = 50",
        &[("LOCKBRIDGE__DIRECTORY__SERVER_HASHES_CLEARTEXT", "true")],
    );
    let token = pair.token();
    let scim = harness::daemon::create_token(&pair.daemons[0].config_path, "fault-idp", "scim");

    // Mid-sweep: a slow link stretches the sweep over seconds, then it is cut.
    pair.ldap.delay(Duration::from_millis(10));
    let id = start_sweep(&pair, 0, &chrono::Utc::now().to_rfc3339())
        .await
        .expect("a sweep starts");
    tokio::time::sleep(Duration::from_millis(rng.gen_range(50..400))).await;
    pair.ldap.down();
    let run = wait_sweep(&pair, 0, &id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        error.contains("directory"),
        "the error names the directory: {run}"
    );
    for i in 0..2 {
        let reply = pair
            .api(i)
            .get_full(&token, "/api/v1/users/user000001")
            .await;
        assert_clear_503("an admin read while the directory is cut", &reply);
        let reply = pair.daemons[i]
            .scim(&scim)
            .get("/Users?filter=userName%20eq%20%22user000001%22")
            .await;
        assert_eq!(reply.0, 503, "SCIM while the directory is cut: {}", reply.1);
    }
    pair.ldap.up();
    wait_ready(&pair, Duration::from_secs(30)).await;

    // Mid-job: a reset of the 400 generated users.
    let before = pair.slapd.users_state();
    let (status, body, _) = pair
        .api(1)
        .post(
            &token,
            "/api/v1/password-resets",
            json!({"filter": "(uid=user*)", "mode": "auto", "report": true}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let job_id = body["id"].as_str().expect("id").to_owned();
    assert_eq!(body["total"], 400, "{body}");
    pair.ldap.delay(Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(rng.gen_range(100..600))).await;
    pair.ldap.down();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let paused = job(&pair, 0, &token, &job_id).await;
    assert_eq!(paused["status"], "running", "paused, not lost: {paused}");
    let reply = pair
        .api(1)
        .post(
            &token,
            "/api/v1/users/bob/password-reset",
            json!({"mode": "auto", "showPassword": true}),
        )
        .await;
    assert_clear_503("a reset while the directory is cut", &reply);
    pair.ldap.up();
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let state = job(&pair, 0, &token, &job_id).await;
        if state["status"] != "running" {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not carry on: {state}\n{}",
            pair.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (
            done["status"].as_str(),
            done["done"].as_u64(),
            done["failed"].as_u64()
        ),
        (Some("completed"), Some(400), Some(0)),
        "{done}"
    );
    let after = pair.slapd.users_state();
    for n in 1..=400 {
        let uid = format!("user{n:06}");
        let (b, a) = (before[&uid].password_writes, after[&uid].password_writes);
        assert_eq!(a, b + 1, "seed {seed}: {uid} written {} times", a - b);
    }

    // The next sweep, on the other instance, mails every notice once.
    let id = start_sweep(&pair, 1, &chrono::Utc::now().to_rfc3339())
        .await
        .expect("a sweep starts");
    let run = wait_sweep(&pair, 1, &id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "completed", "{run}");
    wait_for_mail(&pair, due.len() + 1, Duration::from_secs(120)).await;
    wait_for_quiet(&pair.mail, Duration::from_secs(3)).await;
    let tally = Tally::of(&pair.mail.messages());
    assert_eq!(tally.doubled(ADMINS), vec![]);
    assert_eq!(tally.users(ADMINS), due);
    assert_eq!(
        tally.distinct_to(ADMINS),
        1,
        "the failed sweep sent no digest"
    );
    assert!(pair.ldap.stats().cut > 0, "the link was cut while in use");
    eprintln!(
        "seed {seed}: directory cut twice, recovered; wall {:?}",
        started.elapsed()
    );
}

/// Waits until both instances report ready.
async fn wait_ready(pair: &Pair, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for i in 0..2 {
        loop {
            let (status, _) = pair.api(i).get("", "/readyz").await;
            if status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "instance {i} not ready again\n{}",
                pair.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The relay's link slowed and cut again and again while both instances deliver a
/// sweep's notices, and down for a while: every notice arrives, none as two messages;
/// the same message again only where a cut fell between the relay's acceptance and
/// its sender hearing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_and_cut_relay_link_loses_no_notice_and_sends_none_twice() {
    let started = Instant::now();
    let seed = seed("relay_cut");
    let mut rng = StdRng::seed_from_u64(seed);
    let (ldif, due) = population("m", 3_000, false);
    let slapd = Slapd::start_with(0, &[&ldif]);
    let pair = Pair::start(
        slapd,
        "max_bulk_per_minute = 0\nmax_bulk_per_day = 0",
        "",
        &[],
    );
    pair.smtp.delay(Duration::from_millis(rng.gen_range(5..20)));
    let id = start_sweep(&pair, rng.gen_range(0..2), &chrono::Utc::now().to_rfc3339())
        .await
        .expect("a sweep starts");

    let mut marks: Vec<usize> = (0..6).map(|_| rng.gen_range(1..due.len())).collect();
    marks.sort_unstable();
    let outage_at = rng.gen_range(0..marks.len());
    let mut cuts = 0;
    for (n, mark) in marks.into_iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(120);
        while mail_count(&pair.mail) < mark {
            assert!(
                Instant::now() < deadline,
                "no progress to {mark}\n{}",
                pair.logs()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if n == outage_at {
            pair.smtp.down();
            tokio::time::sleep(Duration::from_secs(2)).await;
            pair.smtp.refuse(false);
        } else {
            pair.smtp.cut();
        }
        cuts += 1;
    }
    let run = wait_sweep(&pair, 0, &id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "completed", "{run}");
    pair.smtp.delay(Duration::ZERO);
    wait_for_each(&pair, &due, 1, Duration::from_secs(120)).await;
    wait_for_quiet(&pair.mail, Duration::from_secs(4)).await;
    let tally = Tally::of(&pair.mail.messages());
    assert_eq!(
        tally.doubled(ADMINS),
        vec![],
        "seed {seed}: two notices for one user"
    );
    assert_eq!(tally.users(ADMINS), due, "seed {seed}: a notice lost");
    assert_eq!(tally.distinct_to(ADMINS), 1);
    let stats = pair.smtp.stats();
    assert!(
        stats.cut > 0,
        "the cuts fell on open connections: {stats:?}"
    );
    // Each cut can catch at most one acceptance in flight per open connection (four
    // per instance).
    assert!(
        tally.redeliveries <= stats.cut as usize,
        "seed {seed}: {} redeliveries for {} connections cut",
        tally.redeliveries,
        stats.cut
    );
    eprintln!(
        "seed {seed}: {cuts} cuts ({} connections), {} notices once each, {} redeliveries; wall {:?}",
        stats.cut,
        due.len(),
        tally.redeliveries,
        started.elapsed()
    );
}

/// PostgreSQL only: the store's link cut mid-request. Admin and SCIM requests get a
/// clear 503 (not a hang, not a 500 with internals) and work again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_store_link_gets_clear_503s_and_recovers_without_restart() {
    if SharedStore::from_env_or(STORE) != SharedStore::Postgres {
        eprintln!("the store link is cut on PostgreSQL only (SQLite is a local file): skipped");
        return;
    }
    let slapd = Slapd::start_with(20, &[]);
    let pair = Pair::start(slapd, "", "", &[]);
    let token = pair.token();
    let scim = harness::daemon::create_token(&pair.daemons[0].config_path, "fault-idp", "scim");
    let store = pair
        .store
        .proxy
        .as_ref()
        .expect("PostgreSQL behind a proxy");
    // Requests that need the store: the audit log's read, and a SCIM create (audited).
    let get_user = |i: usize| {
        let api = pair.api(i);
        let token = token.clone();
        async move { api.get_full(&token, "/api/v1/audit?limit=1").await }
    };
    let create = |i: usize, name: &'static str| {
        let scim = pair.daemons[i].scim(&scim);
        async move {
            scim.post(
                "/Users",
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                       "userName": name, "displayName": "Fault User",
                       "name": {"givenName": "Fault", "familyName": "User"}}),
            )
            .await
        }
    };
    assert_eq!(get_user(0).await.0, 200);

    // Stalled mid-request, then cut: the request in flight is answered.
    store.pause();
    let (reply, ()) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(60), get_user(0)),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            store.down();
            store.resume();
        }
    );
    let reply = reply.expect("answered, not hung");
    assert_clear_503("an admin read with the store cut mid-request", &reply);
    for i in 0..2 {
        let reply = tokio::time::timeout(Duration::from_secs(60), get_user(i))
            .await
            .expect("answered");
        assert_clear_503("an admin read with the store down", &reply);
        let name = ["faultuser0", "faultuser1"][i];
        let reply = tokio::time::timeout(Duration::from_secs(60), create(i, name))
            .await
            .expect("answered");
        assert_eq!(reply.0, 503, "SCIM with the store down: {}", reply.1);
        assert!(!reply.1.to_string().contains("sqlx"), "{}", reply.1);
        assert!(
            !pair.slapd.users_state().contains_key(name),
            "nothing half-applied: {name} was created"
        );
    }
    store.up();
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..2 {
        while get_user(i).await.0 != 200 {
            assert!(
                Instant::now() < deadline,
                "instance {i} did not recover\n{}",
                pair.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let reply = create(i, ["faultuser0", "faultuser1"][i]).await;
        assert_eq!(reply.0, 201, "{}", reply.1);
    }
}

/// One daemon whose directory link runs through a proxy the test controls, with `env`.
/// The proxy and the mail sink must outlive the daemon's use of them.
fn daemon_behind_proxy(slapd: &Slapd, mail: &MailSink, env: &[(&str, &str)]) -> (Proxy, Daemon) {
    let ldap = Proxy::to_port(port_of(&slapd.ldaps_url));
    let daemon = Daemon::start_opts(
        slapd,
        mail.port,
        Options {
            ldap_url: Some(format!("ldaps://127.0.0.1:{}", ldap.port)),
            extra: String::new(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            tokens: None,
        },
    );
    (ldap, daemon)
}

/// A request still running at `server.request_timeout_secs` (here: the directory's link
/// stalls, and the directory's own operation timeout is longer) is answered with a 503
/// that says what happened, in the edge's own format, not with an empty body.
#[tokio::test]
async fn a_request_that_outlives_its_time_limit_is_answered_clearly() {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let (ldap, daemon) = daemon_behind_proxy(
        &slapd,
        &mail,
        &[
            ("LOCKBRIDGE__SERVER__REQUEST_TIMEOUT_SECS", "3"),
            ("LOCKBRIDGE__DIRECTORY__OPERATION_TIMEOUT_SECS", "20"),
        ],
    );
    let scim_token = harness::daemon::create_token(&daemon.config_path, "timeout-idp", "scim");
    // Both edges answer once first: SCIM reads the directory's schema on its first
    // request, and a stalled link then would be "schema cannot be read yet", not a
    // request at its time limit.
    let (status, body, _) = daemon
        .scim(&scim_token)
        .get("/Users?filter=userName%20eq%20%22bob%22")
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = daemon
        .client()
        .get(&daemon.admin_token, "/api/v1/users/bob")
        .await;
    assert_eq!(status, 200, "{body}");
    ldap.pause();
    let started = Instant::now();
    let reply = daemon
        .client()
        .get_full(&daemon.admin_token, "/api/v1/users/bob")
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered at the limit"
    );
    assert_clear_503("an admin read past the time limit", &reply);
    assert_eq!(reply.1["code"], "timeout", "{}", reply.1);
    let (status, body, headers) = daemon
        .scim(&scim_token)
        .get("/Users?filter=userName%20eq%20%22bob%22")
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(
        body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:Error"]),
        "{body}"
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("request_timeout_secs"),
        "{body}"
    );
    ldap.up();
}

/// One SCIM token may have `scim.max_requests_in_flight_per_token` requests under way at
/// once: the next one is refused at once with a 429 that says so (not queued behind a
/// stalled directory), another token is not refused, and answered requests free their
/// places.
#[tokio::test]
async fn a_scim_token_at_its_cap_of_requests_under_way_is_refused_and_others_are_not() {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let (ldap, daemon) = daemon_behind_proxy(
        &slapd,
        &mail,
        &[("LOCKBRIDGE__SCIM__MAX_REQUESTS_IN_FLIGHT_PER_TOKEN", "3")],
    );
    let busy = harness::daemon::create_token(&daemon.config_path, "busy-idp", "scim");
    let other = harness::daemon::create_token(&daemon.config_path, "other-idp", "scim");
    const BOB: &str = "/Users?filter=userName%20eq%20%22bob%22";
    // Both tokens answer once first (and SCIM reads the directory's schema).
    for token in [&busy, &other] {
        let (status, body, _) = daemon.scim(token).get(BOB).await;
        assert_eq!(status, 200, "{body}");
    }
    ldap.pause();
    let stalled: Vec<_> = (0..3)
        .map(|_| {
            let scim = daemon.scim(&busy);
            tokio::spawn(async move { scim.get(BOB).await })
        })
        .collect();
    let other_stalled = {
        let scim = daemon.scim(&other);
        tokio::spawn(async move { scim.get(BOB).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let (status, body, headers) = daemon.scim(&busy).get(BOB).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once"
    );
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["status"], "429", "{body}");
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1"),
        "{headers:?}"
    );
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("under way at once (at most 3)"),
        "says which limit and its value: {detail}"
    );
    ldap.resume();
    for request in stalled {
        let (status, body, _) = request.await.expect("request task");
        assert_eq!(status, 200, "a request under way is served: {body}");
    }
    let (status, body, _) = other_stalled.await.expect("request task");
    assert_eq!(status, 200, "another token is not refused: {body}");
    // The answered requests gave their places back.
    for _ in 0..4 {
        let (status, body, _) = daemon.scim(&busy).get(BOB).await;
        assert_eq!(status, 200, "{body}");
    }
    let metrics = reqwest::get(format!("{}/metrics", daemon.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("lockbridge_rate_limited_total{limit=\"token_in_flight\"} 1")),
        "counted: {metrics}"
    );
}

/// A directory slow to answer a password write (here: every chunk on its link held for
/// 3 s, so a write takes about 6 s, past the 5 s the followed copy gives the directory
/// to report a write) is not a stuck change stream: the wait for the report starts at
/// the directory's answer, so the copy is not thrown away and rebuilt, which would only
/// add a full refresh to a loaded directory's work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_slow_to_write_does_not_end_the_followed_copy() {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let (ldap, daemon) = daemon_behind_proxy(
        &slapd,
        &mail,
        &[("LOCKBRIDGE__DIRECTORY__OPERATION_TIMEOUT_SECS", "20")],
    );
    let token = harness::daemon::create_token(&daemon.config_path, "slow-idp", "scim");
    let scim = daemon.scim(&token);
    let mut ids = Vec::new();
    for name in ["slow1", "slow2", "slow3"] {
        let (status, body, _) = scim
            .post(
                "/Users",
                json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": name,
                    "name": { "familyName": name },
                    "password": "Slow-Passw0rd-0",
                }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["id"].as_str().expect("id").to_owned());
    }
    let push = |id: String, n: usize| {
        let scim = daemon.scim(&token);
        async move {
            let body = json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{ "op": "replace", "path": "password", "value": format!("Slow-Passw0rd-{n}") }],
            });
            let (status, reply, _) = scim.patch(&format!("/Users/{id}"), body).await;
            assert_eq!(status, 204, "push {n}: {reply}");
        }
    };
    let copy_reads = "lockbridge_password_push_reads_total{from=\"copy\"}";
    let metric = |prefix: &'static str| {
        let url = daemon.url.clone();
        async move {
            let text = reqwest::get(format!("{url}/metrics"))
                .await
                .expect("metrics")
                .text()
                .await
                .expect("metrics body");
            text.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };
    // Wait until pushes are served from the copy (it is live, the creations reported).
    let mut n = 0;
    while metric(copy_reads).await < 1.0 {
        n += 1;
        assert!(n < 100, "no push was served from the followed copy");
        push(ids[0].clone(), n).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ldap.delay(Duration::from_secs(3));
    let started = Instant::now();
    let slow = tokio::spawn(push(ids[1].clone(), 100));
    // Past the first write's 5 s, before its answer: another push looks at the copy.
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let before = metric(copy_reads).await;
    push(ids[2].clone(), 101).await;
    slow.await.expect("slow push");
    assert!(
        started.elapsed() > Duration::from_secs(6),
        "the directory really was slow to write"
    );
    assert!(
        metric(copy_reads).await > before,
        "the second push was served from the copy"
    );
    ldap.delay(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = metric(copy_reads).await;
    push(ids[0].clone(), 102).await;
    assert!(metric(copy_reads).await > before, "the copy still serves");
    let log = daemon.log();
    assert!(
        !log.contains("did not report a password write in time"),
        "the copy was rebuilt: {log}"
    );
}

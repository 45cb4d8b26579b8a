//! The outbox against a real SMTP server (aiosmtpd): queue → worker → relay, with
//! retries while the relay is down, dead-lettering on a permanent refusal, and the
//! secret gone from the store once a message is finished; bulk mail paced by the daily
//! cap, notices queued once across instances, a digest with its CSV attachment, and
//! SMTP connections reused.

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{MailSink, SinkMessage};
use lockbridge::notify::{
    EXPIRY_DIGEST, MailSettings, Mailer, Notifier, OutboxSettings, OutboxWorker, PASSWORD_EXPIRING,
    Sealer, SmtpSecurity, TEMPORARY_PASSWORD, Templates, derive_key,
};
use lockbridge::store::{MailClass, OutboxMessage, OutboxStatus, SqliteStore, Store};
use lockbridge::types::Secret;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// A store in a temp folder, a notifier, and a running worker aimed at `port`.
struct Rig {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    notifier: Notifier,
    sealer: Arc<Sealer>,
    port: u16,
    stop: CancellationToken,
    worker: Option<JoinHandle<()>>,
}

/// Fast retries, no bulk limits.
fn settings(max_attempts: u32, poll_interval: Duration) -> OutboxSettings {
    OutboxSettings {
        poll_interval,
        initial_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
        max_attempts,
        retry_window: Duration::from_secs(3600),
        max_bulk_per_minute: 0,
        max_bulk_per_day: 0,
    }
}

impl Rig {
    async fn start(port: u16, max_attempts: u32, poll_interval: Duration) -> Rig {
        Rig::start_with(port, settings(max_attempts, poll_interval)).await
    }

    async fn start_with(port: u16, settings: OutboxSettings) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("lockbridge.db"))
                .await
                .expect("open store"),
        );
        let sealer = Arc::new(Sealer::new(derive_key(&[42; 32], "outbox-secrets")));
        let notifier = Notifier::new(store.clone(), sealer.clone());
        let mut rig = Rig {
            dir,
            store,
            notifier,
            sealer,
            port,
            stop: CancellationToken::new(),
            worker: None,
        };
        rig.start_worker(settings);
        rig
    }

    /// Starts a worker (after [`Rig::shutdown`], a new one with other settings).
    fn start_worker(&mut self, settings: OutboxSettings) {
        self.start_worker_leasing(settings, None);
    }

    /// [`Rig::start_worker`], with claims lasting `lease` when given.
    fn start_worker_leasing(&mut self, settings: OutboxSettings, lease: Option<Duration>) {
        let mailer = Mailer::new(&MailSettings {
            relay: "127.0.0.1".into(),
            port: self.port,
            security: SmtpSecurity::None,
            ca_file: None,
            username: None,
            password: None,
            from: "lockbridge <no-reply@example.org>".into(),
            timeout: Duration::from_secs(5),
        })
        .expect("mailer");
        let mut worker = OutboxWorker::new(
            self.store.clone(),
            self.sealer.clone(),
            mailer,
            Templates::new(None).expect("templates"),
            settings,
            self.notifier.waker(),
        );
        if let Some(lease) = lease {
            worker = worker.with_claim_lease(lease);
        }
        self.stop = CancellationToken::new();
        self.worker = Some(tokio::spawn(worker.run(self.stop.clone())));
    }

    async fn enqueue(&self, to: &str, password: &str) -> i64 {
        self.notifier
            .enqueue(
                TEMPORARY_PASSWORD,
                to,
                json!({
                    "display_name": "Ada Lovelace",
                    "user_name": "ada",
                    "require_change": true,
                    "reset_by": "helpdesk",
                    "public_url": "https://pw.example.org",
                    "organization": "Contoso",
                }),
                Some(&Secret::new(password)),
            )
            .await
            .expect("enqueue")
    }

    /// Polls the row until `done` holds.
    async fn wait_for(
        &self,
        id: i64,
        what: &str,
        done: impl Fn(&OutboxMessage) -> bool,
    ) -> OutboxMessage {
        let deadline = Instant::now() + WAIT;
        loop {
            let row = self
                .store
                .get_mail(id)
                .await
                .expect("get")
                .expect("row exists");
            if done(&row) {
                return row;
            }
            assert!(
                Instant::now() < deadline,
                "outbox {id} never became {what}: {row:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn shutdown(&mut self) {
        self.stop.cancel();
        if let Some(worker) = self.worker.take() {
            tokio::time::timeout(Duration::from_secs(10), worker)
                .await
                .expect("worker stops")
                .expect("worker did not panic");
        }
    }

    /// Asserts `needle` appears in no file of the store (database, WAL, shared memory).
    fn assert_not_in_store_files(&self, needle: &str) {
        let files = files_in(self.dir.path());
        assert!(!files.is_empty());
        for path in files {
            let bytes = std::fs::read(&path).expect("read store file");
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} contains the password",
                path.display()
            );
        }
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect()
}

fn unbracket(id: &str) -> &str {
    id.trim().trim_start_matches('<').trim_end_matches('>')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_mail_is_delivered_once_with_the_password() {
    let sink = MailSink::start();
    let mut rig = Rig::start(sink.port, 5, Duration::from_millis(100)).await;
    let password = "Tmp&<Pw>-8817-Zq";
    let id = rig.enqueue("ada.lovelace@example.org", password).await;

    let messages = tokio::task::block_in_place(|| sink.wait_for_count(1, WAIT));
    let row = rig
        .wait_for(id, "sent", |m| m.status == OutboxStatus::Sent)
        .await;

    let mail = &messages[0];
    assert_eq!(
        mail.envelope_to,
        vec!["ada.lovelace@example.org".to_string()]
    );
    assert_eq!(mail.to, vec!["ada.lovelace@example.org".to_string()]);
    assert_eq!(mail.from, vec!["no-reply@example.org".to_string()]);
    assert_eq!(mail.subject, "Your Contoso password has been reset");
    assert!(
        mail.text
            .contains(&format!("Temporary password: {password}")),
        "{}",
        mail.text
    );
    assert!(mail.text.contains("Hello Ada Lovelace"));
    assert!(
        mail.html.contains("Tmp&amp;&lt;Pw&gt;-8817-Zq"),
        "HTML part escapes the password"
    );
    assert!(!mail.html.contains(password));
    let message_id = mail.header("Message-ID").expect("Message-ID header");
    assert_eq!(unbracket(&message_id), unbracket(&row.message_id));
    assert_eq!(
        mail.header("Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    assert_eq!(
        mail.header("X-Auto-Response-Suppress").as_deref(),
        Some("All")
    );

    assert_eq!(row.attempts, 1);
    assert!(row.sent_at.is_some());
    assert!(row.sealed_secret.is_none(), "secret erased after delivery");

    // Nothing is sent twice.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(sink.messages().len(), 1);

    rig.assert_not_in_store_files(password);
    rig.shutdown().await;
    rig.assert_not_in_store_files(password);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_queued_while_the_relay_is_down_goes_out_once_it_is_back() {
    let mut sink = MailSink::start();
    let port = sink.port;
    tokio::task::block_in_place(|| sink.stop());

    let mut rig = Rig::start(port, 50, Duration::from_millis(100)).await;
    let password = "Down-Then-Up-5531";
    let id = rig.enqueue("grace@example.org", password).await;

    let failed = rig
        .wait_for(id, "retried", |m| {
            m.attempts >= 2 && m.status == OutboxStatus::Pending
        })
        .await;
    assert!(failed.sealed_secret.is_some(), "secret kept while retrying");
    assert!(failed.last_error.is_some());
    assert!(sink.messages().is_empty());

    tokio::task::block_in_place(|| sink.start_again());
    assert_eq!(sink.port, port, "sink restarted on the same port");
    let messages = tokio::task::block_in_place(|| sink.wait_for_count(1, WAIT));
    let row = rig
        .wait_for(id, "sent", |m| m.status == OutboxStatus::Sent)
        .await;
    assert!(messages[0].text.contains(password));
    assert_eq!(messages[0].to, vec!["grace@example.org".to_string()]);
    assert!(
        row.attempts >= 3,
        "failed at least twice, then sent: {row:?}"
    );
    assert!(row.sealed_secret.is_none());

    // Longer than the largest backoff: a duplicate would have shown up by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.messages().len(), 1, "delivered exactly once");
    let counts = rig.store.outbox_counts().await.expect("counts");
    assert_eq!((counts.pending, counts.sent, counts.dead), (0, 1, 0));

    rig.shutdown().await;
    rig.assert_not_in_store_files(password);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_wakes_the_worker_before_the_next_poll() {
    let sink = MailSink::start();
    // With a one-minute poll, only the wake-up can deliver within the wait below.
    let mut rig = Rig::start(sink.port, 5, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let id = rig.enqueue("wake@example.org", "Wake-Up-Pass-1").await;
    rig.wait_for(id, "sent", |m| m.status == OutboxStatus::Sent)
        .await;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        tokio::task::block_in_place(|| sink.wait_for_count(1, WAIT)).len(),
        1
    );
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_dead_letters_at_once_and_erases_the_secret() {
    let relay = ScriptRelay::start(REJECTING_RELAY, &[]);
    let mut rig = Rig::start(relay.port, 10, Duration::from_millis(100)).await;
    let password = "Never-Delivered-9";
    let id = rig.enqueue("nobody@example.org", password).await;

    let row = rig
        .wait_for(id, "dead", |m| m.status == OutboxStatus::Dead)
        .await;
    assert_eq!(row.attempts, 1, "a 5xx is not retried");
    assert!(
        row.sealed_secret.is_none(),
        "secret erased when dead-lettered"
    );
    let error = row.last_error.expect("error kept");
    assert!(error.contains("550"), "{error}");
    let counts = rig.store.outbox_counts().await.expect("counts");
    assert_eq!((counts.pending, counts.sent, counts.dead), (0, 0, 1));

    rig.shutdown().await;
    rig.assert_not_in_store_files(password);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_relay_is_verified_against_the_configured_ca() {
    let pki = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = make_ca_and_server_cert(pki.path());
    let relay = ScriptRelay::start(STARTTLS_RELAY, &[cert.as_path(), key.as_path()]);
    let settings = tls_relay_settings(relay.port, SmtpSecurity::StartTls, ca);
    let mail = Templates::new(None)
        .expect("templates")
        .render(
            TEMPORARY_PASSWORD,
            &json!({
                "display_name": "Ada",
                "user_name": "ada",
                "password": "Tls-Pass-1",
                "require_change": true,
                "reset_by": "helpdesk",
                "public_url": "https://pw.example.org",
            }),
        )
        .expect("render");

    let trusted = Mailer::new(&settings).expect("mailer with CA");
    trusted.test_connection().await.expect("verified STARTTLS");
    trusted
        .send("ada@example.org", "<tls-1@lockbridge>", &mail)
        .await
        .expect("sent over verified STARTTLS");
    assert!(relay.dir.path().join("received").exists());

    assert_untrusted_without_the_ca(settings, &mail).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_relay_is_verified_against_the_configured_ca() {
    let pki = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = make_ca_and_server_cert(pki.path());
    let relay = ScriptRelay::start(IMPLICIT_TLS_RELAY, &[cert.as_path(), key.as_path()]);
    let settings = tls_relay_settings(relay.port, SmtpSecurity::Tls, ca);
    let mail = Templates::new(None)
        .expect("templates")
        .render(PASSWORD_EXPIRING, &expiring_context(1))
        .expect("render");

    let trusted = Mailer::new(&settings).expect("mailer with CA");
    trusted.test_connection().await.expect("verified TLS");
    for n in 0..2 {
        trusted
            .send("ada@example.org", &format!("<tls-{n}@lockbridge>"), &mail)
            .await
            .expect("sent over verified TLS");
    }
    let received = std::fs::read_to_string(relay.dir.path().join("received")).unwrap_or_default();
    assert_eq!(received.lines().count(), 2);

    let err = assert_untrusted_without_the_ca(settings, &mail).await;
    assert!(err.to_string().contains("TLS"), "{err}");
}

/// Mail settings for the relay on `port` on this host, trusting the CA in `ca`.
fn tls_relay_settings(port: u16, security: SmtpSecurity, ca: PathBuf) -> MailSettings {
    MailSettings {
        relay: "127.0.0.1".into(),
        port,
        security,
        ca_file: Some(ca),
        username: None,
        password: None,
        from: "lockbridge <no-reply@example.org>".into(),
        timeout: Duration::from_secs(5),
    }
}

/// Without the CA the relay's certificate is not trusted: a retryable failure (the
/// operator can fix the setting), never a silent plaintext fallback. Returns the error.
async fn assert_untrusted_without_the_ca(
    settings: MailSettings,
    mail: &lockbridge::notify::RenderedMail,
) -> lockbridge::notify::NotifyError {
    let untrusted = Mailer::new(&MailSettings {
        ca_file: None,
        ..settings
    })
    .expect("mailer without CA");
    let err = untrusted
        .send("ada@example.org", "<untrusted@lockbridge>", mail)
        .await
        .expect_err("unknown CA");
    assert!(!err.is_permanent(), "{err}");
    assert!(untrusted.test_connection().await.is_err());
    err
}

/// A backlog goes to a slow relay several messages at a time (each on its own
/// connection), not one after the other, and never more than the pool holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_delivered_side_by_side() {
    let relay = ScriptRelay::start(SLOW_RELAY, &[]);
    let mut rig = Rig::start(relay.port, 5, Duration::from_millis(100)).await;
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(
            rig.enqueue(&format!("slow{n}@example.org"), "Slow-Pass-1")
                .await,
        );
    }
    for id in ids {
        rig.wait_for(id, "sent", |m| m.status == OutboxStatus::Sent)
            .await;
    }
    let most: usize = std::fs::read_to_string(relay.dir.path().join("most_at_once"))
        .expect("the relay noted its load")
        .trim()
        .parse()
        .expect("a number");
    assert!(
        (2..=lockbridge::notify::RELAY_CONNECTIONS).contains(&most),
        "{most} messages at once"
    );
    rig.shutdown().await;
}

/// A relay slower than a claim lasts: the worker renews its claim while it waits, so
/// another instance cannot take the message meanwhile and send it a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waiting_on_a_slow_relay_keeps_its_claim() {
    let relay = ScriptRelay::start(LINGERING_RELAY, &[]);
    let mut rig = Rig::start(relay.port, 5, Duration::from_millis(100)).await;
    rig.shutdown().await;
    rig.start_worker_leasing(
        settings(5, Duration::from_millis(100)),
        Some(Duration::from_millis(1500)),
    );
    let id = rig.enqueue("slow@example.org", "Slow-Pass-1").await;
    // Another instance: its own handle on the same database.
    let other: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&rig.dir.path().join("lockbridge.db"))
            .await
            .expect("second store"),
    );
    // Twice the lease into a 4-second delivery.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mail = other
        .get_mail(id)
        .await
        .expect("read")
        .expect("the message");
    assert_eq!(mail.status, OutboxStatus::Pending, "still being sent");
    let taken = other
        .claim_due_mail(chrono::Utc::now(), 10, Duration::from_secs(60))
        .await
        .expect("claim");
    assert!(taken.is_empty(), "the claim was renewed: {taken:?}");
    rig.wait_for(id, "sent", |m| m.status == OutboxStatus::Sent)
        .await;
    let received = std::fs::read_to_string(relay.dir.path().join("received")).unwrap_or_default();
    assert_eq!(received.lines().count(), 1, "sent once");
    rig.shutdown().await;
}

fn expiring_context(n: usize) -> serde_json::Value {
    json!({
        "display_name": format!("User {n}"),
        "user_name": format!("user{n}"),
        "expires_at_local": "Monday 3 March 2025, 14:00 CET",
        "days_left": 7,
        "change_password_url": "https://pw.example.org/change",
    })
}

/// Records the expiry notice `key` for `user{n}@example.org` through `notifier`.
async fn record(notifier: &Notifier, key: &str, n: usize) -> bool {
    let message = notifier
        .prepare(
            PASSWORD_EXPIRING,
            &format!("user{n}@example.org"),
            expiring_context(n),
            MailClass::Bulk,
        )
        .expect("prepare");
    notifier
        .record_notice(key, Some("sweep-1"), &message)
        .await
        .expect("record")
}

fn recipients(messages: &[SinkMessage]) -> Vec<String> {
    messages.iter().flat_map(|m| m.to.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_arrives_with_a_csv_attachment_that_parses() {
    let sink = MailSink::start();
    let mut rig = Rig::start(sink.port, 5, Duration::from_millis(100)).await;
    let hostile_name = "=HYPERLINK(\"http://evil.example\",\"Zoë, click\")";
    let context = json!({
        "sweep_at_local": "Monday 3 March 2025, 06:00 CET",
        "organization": "Contoso",
        "counts": {"scanned": 3, "notified": 2, "expiring": 2, "expired": 1, "not_notified": 1},
        "expiring": [
            {"user_name": "ada", "display_name": "Ada Lovelace", "mail": "ada@example.org",
             "expires_at_local": "Monday 10 March 2025, 14:00 CET", "days_left": 7},
            {"user_name": "+mallory", "display_name": hostile_name, "mail": "m@example.org",
             "expires_at_local": "Tuesday 4 March 2025, 09:00 CET", "days_left": 1},
        ],
        "expired": [
            {"user_name": "alan", "display_name": "Alan Turing", "mail": null,
             "expired_at_local": "Sunday 2 March 2025, 09:00 CET"},
        ],
        "not_notified": [{"user_name": "alan", "reason": "no mail address\nin the directory"}],
        "attachment_name": "password-expiry-2025-03-03.csv",
    });
    let id = rig
        .notifier
        .enqueue_bulk(EXPIRY_DIGEST, "it-admins@example.org", context)
        .await
        .expect("enqueue digest");

    let messages = tokio::task::block_in_place(|| sink.wait_for_count(1, WAIT));
    let row = rig
        .wait_for(id, "sent", |m| m.status == OutboxStatus::Sent)
        .await;
    assert_eq!(row.class, MailClass::Bulk);
    let mail = &messages[0];
    assert_eq!(mail.to, vec!["it-admins@example.org".to_string()]);
    assert_eq!(
        mail.subject,
        "Password expiry report for Contoso: 2 expiring soon, 1 expired, 1 not notified"
    );
    assert!(
        mail.text
            .contains("Sweep of Monday 3 March 2025, 06:00 CET"),
        "{}",
        mail.text
    );
    assert!(mail.html.contains("Password expiry report"));

    let parsed = mail_parser::MessageParser::default()
        .parse(mail.raw.as_bytes())
        .expect("parse message");
    use mail_parser::MimeHeaders;
    assert!(
        parsed.is_content_type("multipart", "mixed"),
        "{:?}",
        parsed.content_type()
    );
    assert_eq!(parsed.attachment_count(), 1);
    let file = parsed.attachment(0).expect("attachment");
    assert_eq!(
        file.attachment_name(),
        Some("password-expiry-2025-03-03.csv")
    );
    assert!(file.is_content_type("text", "csv"));
    assert_eq!(
        file.content_type().and_then(|c| c.attribute("charset")),
        Some("utf-8")
    );
    let bytes = file.contents();
    assert!(
        bytes.starts_with("\u{feff}".as_bytes()),
        "UTF-8 byte-order mark"
    );

    // Python's csv module reads it back (RFC 4180, CRLF, quoted line breaks).
    let rows = parse_csv(bytes);
    let expected: Vec<Vec<&str>> = vec![
        vec![
            "status",
            "user_name",
            "display_name",
            "mail",
            "expires_at",
            "days_left",
            "reason",
        ],
        vec![
            "expiring",
            "ada",
            "Ada Lovelace",
            "ada@example.org",
            "Monday 10 March 2025, 14:00 CET",
            "7",
            "",
        ],
        vec![
            "expiring",
            "'+mallory",
            "'=HYPERLINK(\"http://evil.example\",\"Zoë, click\")",
            "m@example.org",
            "Tuesday 4 March 2025, 09:00 CET",
            "1",
            "",
        ],
        vec![
            "expired",
            "alan",
            "Alan Turing",
            "",
            "Sunday 2 March 2025, 09:00 CET",
            "",
            "",
        ],
        vec![
            "not_notified",
            "alan",
            "",
            "",
            "",
            "",
            "no mail address\r\nin the directory",
        ],
    ];
    assert_eq!(rows, expected);
    rig.shutdown().await;
}

/// Rows of a CSV file as read by Python's csv module (an independent RFC 4180 reader).
fn parse_csv(bytes: &[u8]) -> Vec<Vec<String>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("digest.csv");
    std::fs::write(&path, bytes).expect("write csv");
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import csv, json, sys\n\
             with open(sys.argv[1], newline='', encoding='utf-8-sig') as f:\n\
             \x20   print(json.dumps(list(csv.reader(f, strict=True))))",
        )
        .arg(&path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("rows as JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_mail_beyond_the_daily_cap_waits_and_then_goes_out_in_order() {
    let sink = MailSink::start();
    let mut rig = Rig::start_with(
        sink.port,
        OutboxSettings {
            max_bulk_per_day: 3,
            ..settings(5, Duration::from_millis(100))
        },
    )
    .await;
    for n in 0..5 {
        assert!(record(&rig.notifier, &format!("expiry:user{n}:1:7"), n).await);
    }
    let id = rig.enqueue("urgent@example.org", "Tmp-Pass-Cap-1").await;

    let messages = tokio::task::block_in_place(|| sink.wait_for_count(4, WAIT));
    rig.wait_for(id, "sent", |m| m.status == OutboxStatus::Sent)
        .await;
    // Several polls later, still only what the cap allows.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let messages_now = sink.messages();
    assert_eq!(messages_now.len(), 4, "{:?}", recipients(&messages_now));
    // The oldest three go out under the cap. They travel over several relay connections
    // at once, so they may arrive in any order.
    let mut bulk: Vec<String> = recipients(&messages)
        .into_iter()
        .filter(|r| r != "urgent@example.org")
        .collect();
    bulk.sort();
    assert_eq!(
        bulk,
        [
            "user0@example.org",
            "user1@example.org",
            "user2@example.org"
        ]
    );
    assert!(recipients(&messages).contains(&"urgent@example.org".to_string()));
    assert!(
        messages
            .iter()
            .any(|m| m.subject == "Your account password expires in 7 days")
    );
    let counts = rig.store.outbox_counts().await.expect("counts");
    assert_eq!(
        (counts.pending, counts.pending_bulk, counts.sent),
        (2, 2, 4)
    );

    // A day later (here: a worker with a higher cap), the rest goes out, in order.
    rig.shutdown().await;
    rig.start_worker(OutboxSettings {
        max_bulk_per_day: 10,
        ..settings(5, Duration::from_millis(100))
    });
    let messages = tokio::task::block_in_place(|| sink.wait_for_count(6, WAIT));
    let mut rest = recipients(&messages[4..]);
    rest.sort();
    assert_eq!(rest, ["user3@example.org", "user4@example.org"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.messages().len(), 6);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_recording_the_same_notices_send_each_once() {
    let sink = MailSink::start();
    let mut rig = Rig::start(sink.port, 5, Duration::from_millis(100)).await;
    // A second instance: its own store handle on the same database file.
    let other_store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&rig.dir.path().join("lockbridge.db"))
            .await
            .expect("second store"),
    );
    let other = Notifier::new(other_store, rig.sealer.clone());
    let sweep = |notifier: Notifier| async move {
        let mut queued = 0;
        for n in 0..20 {
            queued += usize::from(record(&notifier, &format!("expiry:user{n}:1:7"), n).await);
        }
        queued
    };
    let (a, b) = tokio::join!(
        tokio::spawn(sweep(rig.notifier.clone())),
        tokio::spawn(sweep(other))
    );
    assert_eq!(a.expect("a") + b.expect("b"), 20, "each notice queued once");
    // A rerun queues nothing.
    assert_eq!(sweep(rig.notifier.clone()).await, 0);

    let messages = tokio::task::block_in_place(|| sink.wait_for_count(20, WAIT));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(sink.messages().len(), 20);
    let mut to = recipients(&messages);
    to.sort();
    to.dedup();
    assert_eq!(to.len(), 20, "one message per user");
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_connections_are_reused() {
    let relay = ScriptRelay::start(COUNTING_RELAY, &[]);
    let mut rig = Rig::start(relay.port, 5, Duration::from_millis(100)).await;
    let count = |file: &str| {
        std::fs::read_to_string(relay.dir.path().join(file))
            .unwrap_or_default()
            .lines()
            .count()
    };
    // One after the other: every message goes over the same pooled connection.
    for n in 0..3 {
        let id = rig
            .enqueue(&format!("user{n}@example.org"), "Pool-Pass-1")
            .await;
        rig.wait_for(id, "sent", |m| m.status == OutboxStatus::Sent)
            .await;
    }
    assert_eq!(count("received"), 3);
    assert_eq!(
        count("connections"),
        1,
        "one pooled connection for three messages"
    );

    // A backlog: delivered side by side over at most four connections (the pool's
    // size), never one per message.
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(
            rig.enqueue(&format!("backlog{n}@example.org"), "Pool-Pass-2")
                .await,
        );
    }
    for id in ids {
        rig.wait_for(id, "sent", |m| m.status == OutboxStatus::Sent)
            .await;
    }
    assert_eq!(count("received"), 15);
    assert!(
        count("connections") <= 4,
        "{} connections for 15 messages",
        count("connections")
    );
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_bulk_mail_is_listed_as_a_dead_letter() {
    let relay = ScriptRelay::start(REJECTING_RELAY, &[]);
    let mut rig = Rig::start(relay.port, 10, Duration::from_millis(100)).await;
    assert!(record(&rig.notifier, "expiry:gone:1:7", 7).await);
    let dead = {
        let deadline = Instant::now() + WAIT;
        loop {
            let dead = rig.store.list_dead_mail(None, 10).await.expect("list");
            if !dead.is_empty() {
                break dead;
            }
            assert!(Instant::now() < deadline, "never dead-lettered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].class, MailClass::Bulk);
    assert_eq!(dead[0].recipient, "user7@example.org");
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("550"))
    );
    let counts = rig.store.outbox_counts().await.expect("counts");
    assert_eq!((counts.pending, counts.dead), (0, 1));
    rig.shutdown().await;
}

/// A throwaway CA and a certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key).
fn make_ca_and_server_cert(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=lockbridge test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write extensions");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// Answers every RCPT TO with 550.
const REJECTING_RELAY: &str = r#"
class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address

def make_smtp(args):
    return SMTP(Handler(), hostname="reject.localhost")
"#;

/// Requires STARTTLS with the certificate and key given as arguments; notes each
/// accepted message in `received`.
const STARTTLS_RELAY: &str = r#"
def make_smtp(args):
    return SMTP(ReceivedHandler(), hostname="tls.localhost", require_starttls=True,
                tls_context=tls_context(args))
"#;

/// TLS from the first byte with the certificate and key given as arguments; notes each
/// accepted message in `received`.
const IMPLICIT_TLS_RELAY: &str = r#"
server_ssl = tls_context

def make_smtp(args):
    return SMTP(ReceivedHandler(), hostname="tls.localhost")
"#;

/// Takes a while over each message and writes, after each, the most messages it was
/// receiving at the same time (`most_at_once`).
const SLOW_RELAY: &str = r#"
import asyncio

state = {"now": 0, "most": 0}

class Handler:
    async def handle_DATA(self, server, session, envelope):
        state["now"] += 1
        state["most"] = max(state["most"], state["now"])
        await asyncio.sleep(0.2)
        state["now"] -= 1
        with open(os.path.join(DIR, "most_at_once.tmp"), "w") as f:
            f.write(str(state["most"]))
        os.rename(os.path.join(DIR, "most_at_once.tmp"), os.path.join(DIR, "most_at_once"))
        with open(os.path.join(DIR, "received"), "a") as f:
            f.write("1\n")
        return "250 OK"

def make_smtp(args):
    return SMTP(Handler(), hostname="slow.localhost")
"#;

/// Takes four seconds over each message, then accepts it (noted in `received`).
const LINGERING_RELAY: &str = r#"
import asyncio

class Handler:
    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(4)
        with open(os.path.join(DIR, "received"), "a") as f:
            f.write("1\n")
        return "250 OK"

def make_smtp(args):
    return SMTP(Handler(), hostname="lingering.localhost")
"#;

/// Accepts everything; notes each TCP connection in `connections` and each message in
/// `received`.
const COUNTING_RELAY: &str = r#"
class CountingSMTP(SMTP):
    def connection_made(self, transport):
        with open(os.path.join(DIR, "connections"), "a") as f:
            f.write("1\n")
        super().connection_made(transport)

def make_smtp(args):
    return CountingSMTP(ReceivedHandler(), hostname="count.localhost")
"#;

/// Starts the handler, writes the chosen port to DIR/port, and serves until killed. Relay
/// scripts may use `ReceivedHandler` (notes each message in DIR/received) and
/// `tls_context(args)` (certificate and key from the arguments), defined here.
const RELAY_MAIN: &str = r#"
import asyncio, os, ssl, sys
from aiosmtpd.smtp import SMTP
DIR = sys.argv[1]

class ReceivedHandler:
    """Accepts every message and notes it in DIR/received."""
    async def handle_DATA(self, server, session, envelope):
        with open(os.path.join(DIR, "received"), "a") as f:
            f.write("1\n")
        return "250 OK"

def tls_context(args):
    """A server TLS context from the certificate and key given as arguments."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args[0], args[1])
    return ctx

exec(sys.argv[2])

async def main():
    loop = asyncio.get_running_loop()
    args = sys.argv[3:]
    ssl = server_ssl(args) if "server_ssl" in globals() else None
    server = await loop.create_server(lambda: make_smtp(args), host="127.0.0.1", port=0, ssl=ssl)
    with open(os.path.join(DIR, "port.tmp"), "w") as f:
        f.write(str(server.sockets[0].getsockname()[1]))
    os.rename(os.path.join(DIR, "port.tmp"), os.path.join(DIR, "port"))
    await asyncio.Event().wait()

asyncio.run(main())
"#;

/// A small aiosmtpd server with a handler written for one test (Debian's python3-aiosmtpd).
struct ScriptRelay {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl ScriptRelay {
    fn start(handler: &str, args: &[&Path]) -> ScriptRelay {
        let dir = tempfile::tempdir().expect("tempdir");
        let port_file = dir.path().join("port");
        let mut child = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(RELAY_MAIN)
            .arg(dir.path())
            .arg(handler)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("relay.log")).expect("relay log"))
            .spawn()
            .expect("start /usr/bin/python3 (needs python3-aiosmtpd)");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return ScriptRelay { port, dir, child };
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.path().join("relay.log")).unwrap_or_default();
                panic!("test relay exited during startup ({status}):\n{log}");
            }
            assert!(Instant::now() < deadline, "test relay did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ScriptRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The outbox against a real SMTP server (aiosmtpd): queue → worker → relay, with
//! retries while the relay is down, dead-lettering on a permanent refusal, and the
//! secret gone from the store once a message is finished.

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::MailSink;
use lockbridge::notify::{
    MailSettings, Mailer, Notifier, OutboxSettings, OutboxWorker, Sealer, SmtpSecurity,
    TEMPORARY_PASSWORD, Templates, derive_key,
};
use lockbridge::store::{OutboxMessage, OutboxStatus, SqliteStore, Store};
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
    stop: CancellationToken,
    worker: Option<JoinHandle<()>>,
}

impl Rig {
    async fn start(port: u16, max_attempts: u32, poll_interval: Duration) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("lockbridge.db"))
                .await
                .expect("open store"),
        );
        let sealer = Arc::new(Sealer::new(derive_key(&[42; 32], "outbox-secrets")));
        let notifier = Notifier::new(store.clone(), sealer.clone());
        let mailer = Mailer::new(&MailSettings {
            relay: "127.0.0.1".into(),
            port,
            security: SmtpSecurity::None,
            ca_file: None,
            username: None,
            password: None,
            from: "lockbridge <no-reply@example.org>".into(),
            timeout: Duration::from_secs(5),
        })
        .expect("mailer");
        let worker = OutboxWorker::new(
            store.clone(),
            sealer,
            mailer,
            Templates::new(None).expect("templates"),
            OutboxSettings {
                poll_interval,
                initial_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(1),
                max_attempts,
            },
            notifier.waker(),
        );
        let stop = CancellationToken::new();
        let worker = Some(tokio::spawn(worker.run(stop.clone())));
        Rig {
            dir,
            store,
            notifier,
            stop,
            worker,
        }
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
    let settings = MailSettings {
        relay: "127.0.0.1".into(),
        port: relay.port,
        security: SmtpSecurity::StartTls,
        ca_file: Some(ca),
        username: None,
        password: None,
        from: "lockbridge <no-reply@example.org>".into(),
        timeout: Duration::from_secs(5),
    };
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

    // Without the CA the relay's certificate is not trusted: a retryable failure
    // (the operator can fix the setting), never a silent plaintext fallback.
    let untrusted = Mailer::new(&MailSettings {
        ca_file: None,
        ..settings
    })
    .expect("mailer without CA");
    let err = untrusted
        .send("ada@example.org", "<tls-2@lockbridge>", &mail)
        .await
        .expect_err("unknown CA");
    assert!(!err.is_permanent(), "{err}");
    assert!(untrusted.test_connection().await.is_err());
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
import ssl

class Handler:
    async def handle_DATA(self, server, session, envelope):
        with open(os.path.join(DIR, "received"), "a") as f:
            f.write("1\n")
        return "250 OK"

def make_smtp(args):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args[0], args[1])
    return SMTP(Handler(), hostname="tls.localhost", require_starttls=True, tls_context=ctx)
"#;

/// Starts the handler, writes the chosen port to DIR/port, and serves until killed.
const RELAY_MAIN: &str = r#"
import asyncio, os, sys
from aiosmtpd.smtp import SMTP
DIR = sys.argv[1]
exec(sys.argv[2])

async def main():
    loop = asyncio.get_running_loop()
    args = sys.argv[3:]
    server = await loop.create_server(lambda: make_smtp(args), host="127.0.0.1", port=0)
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

//! A real SMTP server (`scripts/lib/mail-sink.py`, aiosmtpd) that stores every message
//! it receives, so tests can assert on what lockbridge sent.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{repo_root, temp_dir};

/// Debian's interpreter: python3-aiosmtpd is installed for it, not for other builds.
const PYTHON: &str = "/usr/bin/python3";
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running SMTP sink on 127.0.0.1. Killed on drop (the temp folder goes with it).
pub struct MailSink {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The sink's folder: `port`, `sink.log`, `messages/*.eml`.
    pub dir: PathBuf,
    child: Option<Child>,
    temp: Option<TempDir>,
}

impl fmt::Debug for MailSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailSink")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .field("running", &self.child.is_some())
            .finish()
    }
}

/// One stored message.
#[derive(Clone)]
pub struct SinkMessage {
    /// Sequence number given by the sink (1, 2, ... in arrival order).
    pub seq: u64,
    /// The file under `messages/`.
    pub path: PathBuf,
    /// SMTP envelope sender (`MAIL FROM`), empty for a null sender.
    pub envelope_from: String,
    /// SMTP envelope recipients (`RCPT TO`).
    pub envelope_to: Vec<String>,
    /// Addresses in the `From:` header.
    pub from: Vec<String>,
    /// Addresses in the `To:` header.
    pub to: Vec<String>,
    /// Decoded `Subject:` header.
    pub subject: String,
    /// The first text/plain body part; empty when there is none (never derived from HTML).
    pub text: String,
    /// The first text/html body part; empty when there is none.
    pub html: String,
    /// The message as received, with the sink's two `X-Sink-*` headers in front.
    pub raw: String,
}

impl fmt::Debug for SinkMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkMessage")
            .field("seq", &self.seq)
            .field("envelope_from", &self.envelope_from)
            .field("envelope_to", &self.envelope_to)
            .field("to", &self.to)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl SinkMessage {
    /// The value of the first header called `name` (case-insensitive): decoded text for
    /// unstructured headers, the raw (unfolded, trimmed) text otherwise.
    pub fn header(&self, name: &str) -> Option<String> {
        let bytes = self.raw.as_bytes();
        let msg = mail_parser::MessageParser::default().parse(bytes)?;
        let h = msg
            .headers()
            .iter()
            .find(|h| h.name().eq_ignore_ascii_case(name))?;
        if let Some(text) = h.value().as_text() {
            return Some(text.to_string());
        }
        let raw = bytes.get(h.offset_start as usize..h.offset_end as usize)?;
        let raw = String::from_utf8_lossy(raw);
        Some(raw.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    fn parse(seq: u64, path: PathBuf) -> SinkMessage {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let raw = String::from_utf8_lossy(&bytes).into_owned();
        let envelope = |name: &str| -> String {
            raw.lines()
                .take(2)
                .find_map(|line| line.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let envelope_from = envelope("X-Sink-Mail-From:");
        let envelope_to = envelope("X-Sink-Rcpt-To:")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let msg = mail_parser::MessageParser::default()
            .parse(&bytes)
            .unwrap_or_else(|| panic!("{} is not a parseable message", path.display()));
        let addresses = |addr: Option<&mail_parser::Address<'_>>| -> Vec<String> {
            addr.map(|a| {
                a.iter()
                    .filter_map(|x| x.address().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
        };
        let text = msg
            .text_part(0)
            .and_then(|p| match &p.body {
                mail_parser::PartType::Text(t) => Some(t.to_string()),
                _ => None,
            })
            .unwrap_or_default();
        let html = msg
            .html_part(0)
            .and_then(|p| match &p.body {
                mail_parser::PartType::Html(h) => Some(h.to_string()),
                _ => None,
            })
            .unwrap_or_default();
        SinkMessage {
            seq,
            envelope_from,
            envelope_to,
            from: addresses(msg.from()),
            to: addresses(msg.to()),
            subject: msg.subject().unwrap_or_default().to_string(),
            text,
            html,
            raw,
            path,
        }
    }
}

impl MailSink {
    /// Starts a sink on a kernel-chosen port and waits until it listens.
    pub fn start() -> MailSink {
        let temp = temp_dir("lb-mail-");
        let dir = temp.path().to_path_buf();
        let mut sink = MailSink {
            port: 0,
            dir,
            child: None,
            temp: Some(temp),
        };
        sink.spawn(0);
        sink
    }

    /// `127.0.0.1:PORT`, handy for a relay setting.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The folder holding the `.eml` files.
    pub fn messages_dir(&self) -> PathBuf {
        self.dir.join("messages")
    }

    /// All messages received so far, in arrival order.
    pub fn messages(&self) -> Vec<SinkMessage> {
        let mut files: Vec<(u64, PathBuf)> = match std::fs::read_dir(self.messages_dir()) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    if !name.ends_with(".eml") {
                        return None;
                    }
                    let seq = name.split('-').next()?.parse().ok()?;
                    Some((seq, e.path()))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        files
            .into_iter()
            .map(|(seq, path)| SinkMessage::parse(seq, path))
            .collect()
    }

    /// The first message whose subject contains `part`, waiting up to 15 s for it.
    pub fn wait_for_subject(&self, part: &str) -> SinkMessage {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(m) = self
                .messages()
                .into_iter()
                .find(|m| m.subject.contains(part))
            {
                return m;
            }
            assert!(Instant::now() < deadline, "no message about {part:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The security code in the `nth` (1-based) "security code" message to `to`,
    /// waiting up to 15 s for it.
    pub fn wait_for_code(&self, to: &str, nth: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let codes: Vec<SinkMessage> = self
                .messages()
                .into_iter()
                .filter(|m| m.to.iter().any(|a| a == to) && m.subject.contains("security code"))
                .collect();
            if let Some(message) = codes.get(nth - 1) {
                let line = message
                    .text
                    .lines()
                    .find(|l| l.starts_with("Your security code is:"))
                    .expect("the code line");
                return line.rsplit(' ').next().expect("code").trim().to_owned();
            }
            assert!(Instant::now() < deadline, "no security code mailed to {to}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (polling every 100 ms) until at least `n` messages have arrived and returns
    /// them all. Panics on timeout, listing what did arrive.
    pub fn wait_for_count(&self, n: usize, timeout: Duration) -> Vec<SinkMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            if Instant::now() >= deadline {
                panic!(
                    "mail sink: expected {n} message(s) within {timeout:?}, got {}: {:#?}\nsink log:\n{}",
                    messages.len(),
                    messages,
                    self.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The sink's own log (connections and stored messages, never contents).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("sink.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s). Messages stay on disk.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the server again on the same port, keeping the stored messages.
    pub fn start_again(&mut self) {
        self.stop();
        let port = self.port;
        self.spawn(port);
    }

    fn spawn(&mut self, port: u16) {
        let port_file = self.dir.join("port");
        let _ = std::fs::remove_file(&port_file);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("sink.log"))
            .expect("open sink.log");
        let mut child = Command::new(PYTHON)
            .arg(repo_root().join("scripts/lib/mail-sink.py"))
            .arg("--dir")
            .arg(&self.dir)
            .arg("--port")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PYTHON} (mail sink): {e}"));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(p) = read_port(&port_file) {
                self.port = p;
                self.child = Some(child);
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "mail sink exited during startup ({status}); is python3-aiosmtpd installed? log:\n{}",
                    self.log_tail(30)
                );
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mail sink did not listen within {START_TIMEOUT:?}; log:\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for MailSink {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(self.temp.take());
    }
}

fn read_port(path: &Path) -> Option<u16> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

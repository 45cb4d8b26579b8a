//! Checks that the test harness itself works: a real slapd with ppolicy enforcing the
//! rules lockbridge relies on, and a real SMTP sink.

mod harness;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use harness::{MailSink, Slapd};

/// `ldappasswd` as the service account (no manage right); the new password goes via a file.
fn ldappasswd_as_service(slapd: &Slapd, user_dn: &str, new_password: &str) -> Output {
    let pw_file = slapd.dir.join(".new-password");
    std::fs::write(&pw_file, new_password).unwrap();
    let out = Command::new("/usr/bin/ldappasswd")
        .env("LDAPTLS_CACERT", &slapd.ca_file)
        .args(["-H", &slapd.ldaps_url, "-x", "-D", &slapd.service_dn, "-y"])
        .arg(&slapd.service_password_file)
        .arg("-T")
        .arg(&pw_file)
        .args(["-e", "ppolicy", user_dn])
        .stdin(Stdio::null())
        .output()
        .expect("run ldappasswd");
    std::fs::remove_file(&pw_file).unwrap();
    out
}

fn ldapmodify_as_service(slapd: &Slapd, ldif: &str) -> Output {
    let mut child = Command::new("/usr/bin/ldapmodify")
        .env("LDAPTLS_CACERT", &slapd.ca_file)
        .args(["-H", &slapd.ldaps_url, "-x", "-D", &slapd.service_dn, "-y"])
        .arg(&slapd.service_password_file)
        .args(["-e", "ppolicy"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ldapmodify");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ldif.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn slapd_starts_and_sample_users_bind() {
    let slapd = Slapd::start();
    assert!(slapd.ldaps_url.starts_with("ldaps://127.0.0.1:"));
    assert!(slapd.ca_file.exists());
    assert_eq!(
        std::fs::read_to_string(&slapd.service_password_file).unwrap(),
        slapd.service_password
    );

    let bob = slapd.user_dn("bob");
    let ok = slapd.bind_as(&bob, &slapd.sample_password);
    assert!(ok.success && !ok.must_change, "{}", ok.output);
    let bad = slapd.bind_as(&bob, "not-the-password");
    assert!(!bad.success, "{}", bad.output);
    let service = slapd.bind_as(&slapd.service_dn, &slapd.service_password);
    assert!(service.success, "{}", service.output);

    assert_eq!(slapd.ldapsearch_attr(&bob, "mail"), ["bob@example.org"]);
    assert_eq!(
        slapd.ldapsearch_attr(&bob, "otherMailbox"),
        ["bob.personal@example.net"]
    );
    assert_eq!(slapd.ldapsearch_attr(&bob, "pwdChangedTime").len(), 1);
    assert!(slapd.ldapsearch_attr(&bob, "pwdReset").is_empty());
    assert_eq!(
        slapd.ldapsearch_attr(&slapd.admin_group_dn, "member"),
        [slapd.user_dn("alice")]
    );
}

#[test]
fn ppolicy_holds_the_service_account_to_quality_and_history() {
    let mut slapd = Slapd::start();
    let carol = slapd.user_dn("carol");

    let short = ldappasswd_as_service(&slapd, &carol, "abc");
    assert!(!short.status.success(), "3-char password was accepted");
    let msg = text(&short);
    assert!(
        msg.contains("Constraint violation") && msg.contains("too short"),
        "{msg}"
    );

    for i in 1..=5 {
        let out = ldappasswd_as_service(&slapd, &carol, &format!("Valid-Passw0rd-{i}"));
        assert!(out.status.success(), "{}", text(&out));
    }
    // The initial password is now the 5th previous one.
    let sample = slapd.sample_password.clone();
    let reused = ldappasswd_as_service(&slapd, &carol, &sample);
    assert!(!reused.status.success(), "password from history accepted");
    assert!(text(&reused).contains("in history"), "{}", text(&reused));

    // An admin-style reset as the service account: new password plus pwdReset in one
    // modify (ppolicy does not set pwdReset itself for a non-manage writer).
    let out = ldapmodify_as_service(
        &slapd,
        &format!(
            "dn: {carol}\nchangetype: modify\nreplace: userPassword\nuserPassword: Reset-Passw0rd-6\n-\nreplace: pwdReset\npwdReset: TRUE\n"
        ),
    );
    assert!(out.status.success(), "{}", text(&out));
    let reset = slapd.bind_as(&carol, "Reset-Passw0rd-6");
    assert!(reset.success && reset.must_change, "{}", reset.output);

    // Survives a restart on the same ports with the same data.
    let url = slapd.ldaps_url.clone();
    slapd.stop();
    assert!(!slapd.bind_as(&carol, "Reset-Passw0rd-6").success);
    slapd.start_again();
    assert_eq!(slapd.ldaps_url, url);
    assert_eq!(slapd.ldapsearch_attr(&carol, "pwdReset"), ["TRUE"]);
    assert!(slapd.bind_as(&carol, "Reset-Passw0rd-6").must_change);
}

#[test]
fn generated_users_and_backdated_passwords() {
    let ldif = "dn: uid=old,ou=people,dc=example,dc=org\n\
                objectClass: inetOrgPerson\n\
                uid: old\ncn: Old Timer\nsn: Timer\n\
                userPassword: @SAMPLE_PASSWORD_HASH@\n\
                pwdChangedTime: @DAYS_AGO:100@\n";
    let slapd = Slapd::start_with(20, &[ldif]);
    let user = slapd.bind_as(&slapd.user_dn("user000020"), &slapd.sample_password);
    assert!(user.success, "{}", user.output);
    let old = slapd.bind_as(&slapd.user_dn("old"), &slapd.sample_password);
    assert!(!old.success && old.must_change, "{}", old.output);
    assert!(old.output.contains("Password expired"), "{}", old.output);
}

/// A plain SMTP conversation, as a relay with `security = "none"` would see it.
fn send_raw_smtp(port: u16, from: &str, to: &[&str], data: &str) {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to sink");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut expect = |code: &str| loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read SMTP reply");
        assert!(line.starts_with(code), "expected {code}, got {line:?}");
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    };
    expect("220");
    let mut send = |cmd: String, code: &str| {
        writer.write_all(cmd.as_bytes()).unwrap();
        expect(code);
    };
    send("EHLO selftest.localhost\r\n".into(), "250");
    send(format!("MAIL FROM:<{from}>\r\n"), "250");
    for rcpt in to {
        send(format!("RCPT TO:<{rcpt}>\r\n"), "250");
    }
    send("DATA\r\n".into(), "354");
    let body = data.replace('\n', "\r\n");
    send(format!("{body}\r\n.\r\n"), "250");
    send("QUIT\r\n".into(), "221");
}

#[test]
fn mail_sink_stores_messages_and_survives_restart() {
    let mut sink = MailSink::start();
    assert!(sink.port > 0);
    let message = "From: lockbridge <no-reply@example.org>\n\
                   To: Helpdesk <helpdesk@example.org>\n\
                   Subject: Password reset for bob\n\
                   Content-Type: text/plain; charset=utf-8\n\
                   \n\
                   Hello helpdesk,\n\
                   the new password is in the portal.\n";
    send_raw_smtp(
        sink.port,
        "bounce@example.org",
        &["helpdesk@example.org", "audit@example.org"],
        message,
    );
    let got = sink.wait_for_count(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.seq, 1);
    assert_eq!(m.envelope_from, "bounce@example.org");
    assert_eq!(m.envelope_to, ["helpdesk@example.org", "audit@example.org"]);
    assert_eq!(m.to, ["helpdesk@example.org"]);
    assert_eq!(m.from, ["no-reply@example.org"]);
    assert_eq!(m.subject, "Password reset for bob");
    assert!(m.text.contains("new password"));
    assert!(m.html.is_empty());
    assert_eq!(
        m.header("x-sink-rcpt-to").as_deref(),
        Some("helpdesk@example.org, audit@example.org")
    );

    let port = sink.port;
    sink.stop();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert_eq!(sink.messages().len(), 1, "messages are kept after stop");
    sink.start_again();
    assert_eq!(sink.port, port);
    send_raw_smtp(port, "", &["bob@example.org"], "Subject: second\n\nbody\n");
    let got = sink.wait_for_count(2, Duration::from_secs(10));
    assert_eq!(got[1].seq, 2);
    assert_eq!(got[1].envelope_from, "");
    assert_eq!(got[1].subject, "second");
}

/// An echo server on 127.0.0.1 (one thread per connection), for the proxy's self-test.
fn echo_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind echo");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut read = conn.try_clone().expect("clone");
                let mut write = conn;
                let _ = std::io::copy(&mut read, &mut write);
            });
        }
    });
    port
}

/// Sends `text` and reads it back within `wait`; `None` when nothing came (or EOF).
fn echo_once(conn: &mut TcpStream, text: &str, wait: Duration) -> Option<String> {
    use std::io::Read;
    conn.write_all(text.as_bytes()).ok()?;
    conn.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = vec![0u8; text.len()];
    let mut got = 0;
    while got < buf.len() {
        match conn.read(&mut buf[got..]) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got += n,
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[test]
fn proxy_forwards_and_cuts_refuses_delays_and_pauses_on_command() {
    let proxy = harness::Proxy::to_port(echo_server());
    let connect = || TcpStream::connect(proxy.addr()).expect("connect through the proxy");
    let long = Duration::from_secs(5);

    let mut a = connect();
    assert_eq!(echo_once(&mut a, "hello", long).as_deref(), Some("hello"));
    let stats = proxy.stats();
    assert_eq!((stats.accepted, stats.open), (1, 1), "{stats:?}");
    assert_eq!((stats.bytes_to_target, stats.bytes_to_client), (5, 5));

    // Paused: the bytes wait, the connection stays open; resumed: they arrive.
    proxy.pause();
    assert_eq!(echo_once(&mut a, "stall", Duration::from_millis(300)), None);
    proxy.resume();
    let mut rest = String::new();
    {
        use std::io::Read;
        let mut buf = [0u8; 5];
        a.set_read_timeout(Some(long)).expect("timeout");
        a.read_exact(&mut buf).expect("the stalled bytes arrive");
        rest.push_str(&String::from_utf8_lossy(&buf));
    }
    assert_eq!(rest, "stall");

    // Delayed: every chunk waits at least the delay (each way).
    proxy.delay(Duration::from_millis(150));
    let started = std::time::Instant::now();
    assert_eq!(echo_once(&mut a, "slow", long).as_deref(), Some("slow"));
    assert!(started.elapsed() >= Duration::from_millis(300));
    proxy.delay(Duration::ZERO);

    // Cut: the open connection is closed (the client reads EOF), a new one works.
    proxy.cut();
    assert_eq!(echo_once(&mut a, "gone", long), None, "cut closes the link");
    assert_eq!(proxy.stats().cut, 1);
    let mut b = connect();
    assert_eq!(echo_once(&mut b, "again", long).as_deref(), Some("again"));

    // Refused: new connections are closed at once, open ones carry on.
    proxy.refuse(true);
    let mut c = connect();
    assert_eq!(echo_once(&mut c, "no", long), None, "refused");
    assert_eq!(echo_once(&mut b, "still", long).as_deref(), Some("still"));
    assert_eq!(proxy.stats().refused, 1);

    // Down cuts and refuses; up undoes it.
    proxy.down();
    assert_eq!(echo_once(&mut b, "x", long), None);
    proxy.up();
    let mut d = connect();
    assert_eq!(echo_once(&mut d, "back", long).as_deref(), Some("back"));
    assert_eq!(proxy.stats().accepted, 3, "{:?}", proxy.stats());
}

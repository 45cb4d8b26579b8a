//! Checks that the PostgreSQL sandbox the store tests run against works: it starts, takes
//! the test role's password (and no other) over 127.0.0.1, keeps a committed row through
//! a crash, and stops cleanly.

mod harness;

use std::net::TcpStream;
use std::time::Duration;

use harness::Postgres;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_sandbox_server_answers_and_stops_cleanly() {
    let mut pg = Postgres::start();
    assert!(
        pg.url.starts_with(&format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            pg.user, pg.password, pg.port, pg.database
        )),
        "the URL names the test role and database on 127.0.0.1"
    );
    let out = pg.psql("SELECT 1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), "1");

    let settings = pg.psql(
        "SELECT current_user, current_setting('fsync'), current_setting('synchronous_commit'), \
                current_setting('listen_addresses'), current_setting('password_encryption')",
    );
    assert_eq!(
        stdout(&settings),
        format!("{}|on|on|127.0.0.1|scram-sha-256", pg.user)
    );

    let mut wrong = pg.url_of(&pg.database);
    wrong = wrong.replacen(&pg.password, "not-the-password", 1);
    let refused = std::process::Command::new(pg.bin_dir.join("psql"))
        .args(["-X", "-c", "SELECT 1", &wrong])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run psql");
    assert!(!refused.status.success(), "a wrong password is refused");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let other = pg.create_database("conformance_1");
    assert!(other.ends_with("/conformance_1"));

    pg.stop();
    assert!(!pg.is_running());
    assert!(
        TcpStream::connect_timeout(
            &format!("127.0.0.1:{}", pg.port)
                .parse()
                .expect("an address"),
            Duration::from_secs(2)
        )
        .is_err(),
        "nothing listens once stopped"
    );
    assert!(
        pg.log_tail(5).contains("database system is shut down"),
        "{}",
        pg.log_tail(20)
    );
}

#[test]
fn a_committed_row_survives_a_crash() {
    let mut pg = Postgres::start();
    let out = pg.psql("CREATE TABLE t (n int); INSERT INTO t VALUES (42)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pg.crash();
    assert!(!pg.is_running());
    pg.start_again();
    let out = pg.psql("SELECT n FROM t");
    assert_eq!(stdout(&out), "42", "{}", pg.log_tail(20));
}

//! Two lockbridge processes on one store file, as two instances behind a load balancer
//! (issue 16): a token revoked or a session ended through one stops working on the
//! other within a second; failed authentications, self-service starts and per-token
//! requests spread over both are limited at the configured totals, not twice them.
//! Real slapd, real SMTP sink, the real binary twice.

mod harness;

use std::time::{Duration, Instant};

use harness::daemon::{Api, Daemon, create_token, run_cli};
use harness::slapd::Slapd;
use harness::smtp::MailSink;
use serde_json::json;

struct Pair {
    slapd: Slapd,
    _mail: MailSink,
    a: Daemon,
    b: Daemon,
}

/// Instance A with its own store, and instance B on A's store file. Both get `extra`
/// and `env`; tokens are created through A (B's own store file is never used).
fn pair(extra: &str, env: &[(&str, &str)]) -> Pair {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let a = Daemon::start_with_env(&slapd, mail.port, extra, env);
    let db = a.dir.path().join("state").join("lockbridge.db");
    assert!(db.exists(), "A's store is at {}", db.display());
    let db = db.to_str().expect("a UTF-8 path").to_owned();
    let mut env_b = env.to_vec();
    env_b.push(("LOCKBRIDGE__STORE__PATH", &db));
    let b = Daemon::start_with_env(&slapd, mail.port, extra, &env_b);
    Pair {
        slapd,
        _mail: mail,
        a,
        b,
    }
}

/// Polls `api` with `token` until it answers 401; how long that took after `since`.
/// Gives up after 1.5 s: a cache kept for its 10 s TTL fails here.
async fn refused_within(api: &Api, token: &str, since: Instant) -> Duration {
    loop {
        let (status, body) = api.get(token, "/api/v1/users/bob").await;
        if status == 401 {
            return since.elapsed();
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            since.elapsed() < Duration::from_millis(1500),
            "still accepted {:?} after the revocation",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_or_a_session_ended_through_one_instance_stops_on_the_other_within_a_second()
 {
    let p = pair("", &[]);
    let (a, b) = (p.a.client(), p.b.client());

    // A token, valid on both (and now cached on both).
    let token = create_token(&p.a.config_path, "idp", "global-admin");
    for api in [&a, &b] {
        let (status, body) = api.get(&token, "/api/v1/users/bob").await;
        assert_eq!(status, 200, "{body}");
    }
    let (code, _, err) = run_cli(&p.a.config_path, &["token", "revoke", "--name", "idp"]);
    assert_eq!(code, 0, "{err}");
    let revoked = Instant::now();
    let on_b = refused_within(&b, &token, revoked).await;
    let on_a = refused_within(&a, &token, revoked).await;
    eprintln!("revoked token refused by B after {on_b:?}, by A after {on_a:?}");

    // A session signed in on B, used there, and ended through A.
    let (status, body, _) = b
        .post(
            "",
            "/api/v1/sessions",
            json!({"userName": "alice", "password": p.slapd.sample_password}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let session = body["token"].as_str().expect("session token").to_owned();
    let (status, body) = b.get(&session, "/api/v1/users/bob").await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = a.delete(&session, "/api/v1/sessions/current").await;
    assert_eq!(status, 204, "{body}");
    let ended = Instant::now();
    let on_b = refused_within(&b, &session, ended).await;
    eprintln!("ended session refused by B after {on_b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_over_both_instances_meet_one_limit() {
    // One a minute after a burst of 6: nothing refills while the test runs.
    let p = pair(
        "",
        &[
            ("LOCKBRIDGE__SERVER__AUTH_FAILURES_PER_MINUTE", "1"),
            ("LOCKBRIDGE__SERVER__AUTH_FAILURE_BURST", "6"),
        ],
    );
    let apis = [p.a.client(), p.b.client()];
    let junk = "lbt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let mut statuses = Vec::new();
    for i in 0..20 {
        statuses.push(apis[i % 2].get(junk, "/api/v1/users/bob").await.0);
    }
    let unauthorized = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(unauthorized + limited, 20, "{statuses:?}");
    // Each instance alone would allow 6: 12 in all.
    assert!(
        (6..=7).contains(&unauthorized),
        "the burst of 6 is shared, not per instance: {statuses:?}"
    );
    assert!(statuses[8..].iter().all(|s| *s == 429), "{statuses:?}");
    // A valid token is still served on both.
    for api in &apis {
        let (status, body) = api.get(&p.a.admin_token, "/api/v1/users/bob").await;
        assert_eq!(status, 200, "{body}");
    }
}

/// One browser per instance (its own cookies and CSRF token).
async fn start_reset(http: &reqwest::Client, base: &str, user: &str) -> u16 {
    let page = http
        .get(format!("{base}/reset"))
        .send()
        .await
        .expect("GET /reset")
        .text()
        .await
        .expect("page");
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("a CSRF field") + marker.len();
    let csrf = &page[start..start + page[start..].find('"').expect("end of the value")];
    http.post(format!("{base}/reset"))
        .form(&[("csrf", csrf), ("user_name", user)])
        .send()
        .await
        .expect("POST /reset")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_service_starts_for_one_account_over_both_instances_meet_one_limit() {
    let p = pair(
        "\n[selfservice]\nrequest_recipients = [\"helpdesk@example.org\"]\n\
         organization = \"Example Corp\"\nstarts_per_account_per_hour = 3\n",
        &[],
    );
    let browser = || {
        reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .expect("client")
    };
    let (on_a, on_b) = (browser(), browser());
    let mut statuses = Vec::new();
    for i in 0..6 {
        let (http, base) = if i % 2 == 0 {
            (&on_a, &p.a.url)
        } else {
            (&on_b, &p.b.url)
        };
        statuses.push(start_reset(http, base, "nobody-here").await);
    }
    // Each instance alone would allow 3: all six.
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    // Another account is not affected, on either instance.
    assert_eq!(start_reset(&on_a, &p.a.url, "bob").await, 200);
    assert_eq!(start_reset(&on_b, &p.b.url, "carol").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tokens_requests_over_both_instances_stay_within_the_burst_plus_a_chunk_each() {
    // Burst 40 at 1/s: each instance leases chunks of 4 (burst / 10).
    let (burst, chunk, instances) = (40usize, 4usize, 2usize);
    let p = pair(
        "",
        &[
            ("LOCKBRIDGE__SERVER__RATE_LIMIT_PER_SECOND", "1"),
            ("LOCKBRIDGE__SERVER__RATE_LIMIT_BURST", "40"),
        ],
    );
    let apis = [p.a.client(), p.b.client()];
    let started = Instant::now();
    let mut served = 0;
    for i in 0..120 {
        let (status, body) = apis[i % 2].get(&p.a.admin_token, "/api/v1/users/bob").await;
        match status {
            200 => served += 1,
            429 => {}
            _ => panic!("{status}: {body}"),
        }
    }
    // What refilled while the loop ran (one a second), rounded up.
    let refilled = started.elapsed().as_secs() as usize + 1;
    eprintln!(
        "{served} of 120 served in {:?} (burst {burst}, bound {})",
        started.elapsed(),
        burst + instances * chunk + refilled
    );
    assert!(served >= burst, "the burst is served: {served}");
    // Each instance alone would serve its own burst: 80.
    assert!(
        served <= burst + instances * chunk + refilled,
        "served {served}: more than the burst, a chunk per instance and the refill"
    );
}

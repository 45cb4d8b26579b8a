//! The bulk engine's resume, step by step against a real slapd: a job whose items were
//! left `writing` (their new passwords sealed, the directory maybe asked) by a process
//! that died. The item whose password is in force is not reset again; the one whose is
//! not is reset with the very password that was sealed; a pending one is reset.

mod harness;

use harness::slapd::Slapd;
use harness::smtp::MailSink;
use lockbridge::account::{Actor, PasswordChoice, ResetRequest};
use lockbridge::bulk::{JobKind, run_job};
use lockbridge::store::NewJob;

#[tokio::test]
async fn a_resumed_job_resets_nobody_twice_and_uses_the_sealed_passwords() {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = harness::daemon::write_config(
        dir.path(),
        &slapd,
        mail.port,
        harness::daemon::free_port(),
        "",
    );
    let config = lockbridge::config::load(&path, std::iter::empty()).expect("config");
    let services = lockbridge::app::build(&config).await.expect("services");
    let (bulk, account, store) = (services.bulk, services.account, services.store);

    let kind = JobKind::PasswordReset {
        generated: true,
        require_change: true,
        deliver_to_alternate: false,
        report: true,
    };
    let job = NewJob {
        id: "resume-1".into(),
        kind: kind.name().into(),
        actor: "tester".into(),
        actor_dn: None,
        roles: vec!["global-admin".into()],
        params: serde_json::to_value(kind).expect("params"),
        sealed_secret: None,
        created_at: chrono::Utc::now(),
    };
    let names: Vec<String> = ["bob", "carol", "dave"].map(String::from).to_vec();
    store.insert_job(&job, &names).await.expect("job");

    // bob: the dead process had set his new password but died before the must-change
    // flag; carol: it had not got that far.
    let bob_password = account.generate_password();
    let carol_password = account.generate_password();
    account
        .reset_password(
            &Actor::system("the-dead-run"),
            "bob",
            ResetRequest {
                choice: PasswordChoice::Generated(bob_password.clone()),
                require_change: false,
                send_to: Vec::new(),
                send_to_alternate: false,
                show_password: true,
                mail_key: None,
            },
        )
        .await
        .expect("bob's first reset");
    assert!(
        !slapd
            .bind_as(&slapd.user_dn("bob"), bob_password.expose())
            .must_change
    );
    store
        .mark_job_items_writing(
            "resume-1",
            &[
                (0, bulk.sealer.seal(&bob_password)),
                (1, bulk.sealer.seal(&carol_password)),
            ],
        )
        .await
        .expect("writing");

    let done = run_job(&bulk, "resume-1").await.expect("run").expect("ran");
    assert_eq!(
        (done.status.as_str(), done.done),
        ("completed", 3),
        "{done:?}"
    );

    let items = store
        .job_items_page("resume-1", None, 10)
        .await
        .expect("items");
    assert_eq!(items[0].code.as_deref(), Some("resumed"), "{items:?}");
    assert_eq!(items[1].code, None, "{items:?}");
    for uid in ["bob", "carol", "dave"] {
        assert_eq!(
            slapd
                .ldapsearch_attr(&slapd.user_dn(uid), "pwdHistory")
                .len(),
            1,
            "{uid} was reset exactly once"
        );
    }
    let bob = slapd.bind_as(&slapd.user_dn("bob"), bob_password.expose());
    assert!(
        bob.success && bob.must_change,
        "the flag completed: {}",
        bob.output
    );
    let carol = slapd.bind_as(&slapd.user_dn("carol"), carol_password.expose());
    assert!(
        carol.success && carol.must_change,
        "the sealed password: {}",
        carol.output
    );

    // The report holds each of them.
    let report = store
        .take_job_report("resume-1", chrono::Utc::now())
        .await
        .expect("report")
        .expect("once");
    let opened: Vec<String> = report
        .iter()
        .map(|i| {
            bulk.sealer
                .open(i.sealed_password.as_deref().expect("a password"))
                .expect("opens")
                .expose()
                .to_owned()
        })
        .collect();
    assert_eq!(opened[0], bob_password.expose());
    assert_eq!(opened[1], carol_password.expose());
    let dave = slapd.bind_as(&slapd.user_dn("dave"), &opened[2]);
    assert!(dave.success && dave.must_change, "{}", dave.output);
}

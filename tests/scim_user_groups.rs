//! A User's `groups` is returned by default (RFC 7643 §4.1.2), from `memberOf` where the
//! directory keeps it (the sandbox's memberof overlay) and by one search of the groups per
//! page of users where it does not; renames and deletions through lockbridge show at
//! once; `excludedAttributes` and `attributes` leave it out.

mod harness;

use harness::daemon::{Daemon, Scim, create_token};
use harness::slapd::Slapd;
use harness::smtp::MailSink;
use serde_json::{Value, json};

const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

async fn user(scim: &Scim, name: &str) -> String {
    let (status, body, _) = scim.post("/Users", json!({ "userName": name })).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().expect("id").to_owned()
}

async fn group(scim: &Scim, name: &str, members: &[&str]) -> String {
    let members: Vec<Value> = members.iter().map(|m| json!({ "value": m })).collect();
    let (status, body, _) = scim
        .post(
            "/Groups",
            json!({ "schemas": [GROUP], "displayName": name, "members": members }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().expect("id").to_owned()
}

/// The (id, display) pairs of a resource's `groups`, sorted.
fn groups_of(resource: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = resource["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            assert_eq!(g["type"], "direct", "{g}");
            assert!(
                g["$ref"].as_str().is_some_and(
                    |r| r.ends_with(&format!("/Groups/{}", g["value"].as_str().unwrap_or("?")))
                ),
                "{g}"
            );
            (
                g["value"].as_str().unwrap_or_default().to_owned(),
                g["display"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn get_user(scim: &Scim, id: &str, query: &str) -> Value {
    let (status, body, _) = scim.get(&format!("/Users/{id}{query}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Searches below the groups base slapd has logged so far.
fn group_searches(slapd: &Slapd) -> usize {
    let text = std::fs::read_to_string(slapd.dir.join("slapd.log")).unwrap_or_default();
    let needle = format!("SRCH base=\"{}\"", slapd.groups_base);
    text.lines().filter(|l| l.contains(&needle)).count()
}

/// Group searches made by `f`, once slapd has written its log.
async fn searches_during<F: std::future::Future<Output = ()>>(slapd: &Slapd, f: F) -> usize {
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = group_searches(slapd);
    f.await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    group_searches(slapd) - before
}

/// What both ways must do alike.
async fn groups_are_returned_by_default(slapd: &Slapd, scim: &Scim) {
    let ann = user(scim, "ug-ann").await;
    let ben = user(scim, "ug-ben").await;
    let lonely = user(scim, "ug-lonely").await;
    let readers = group(scim, "ug-readers", &[&ann, &ben]).await;
    let writers = group(scim, "ug-writers", &[&ann]).await;

    let a = get_user(scim, &ann, "").await;
    assert_eq!(
        groups_of(&a),
        {
            let mut v = vec![
                (readers.clone(), "ug-readers".to_owned()),
                (writers.clone(), "ug-writers".to_owned()),
            ];
            v.sort();
            v
        },
        "{a}"
    );
    assert_eq!(
        groups_of(&get_user(scim, &ben, "").await),
        [(readers.clone(), "ug-readers".to_owned())]
    );
    assert!(get_user(scim, &lonely, "").await.get("groups").is_none());
    // Left out when excluded, or when not among the attributes asked for.
    assert!(
        get_user(scim, &ann, "?excludedAttributes=groups")
            .await
            .get("groups")
            .is_none()
    );
    assert!(
        get_user(scim, &ann, "?attributes=userName")
            .await
            .get("groups")
            .is_none()
    );
    assert_eq!(
        groups_of(&get_user(scim, &ann, "?attributes=groups").await).len(),
        2
    );

    // In a list, every user of the page has its own.
    let (status, page, _) = scim
        .get("/Users?filter=userName%20sw%20%22ug-%22&sortBy=userName")
        .await;
    assert_eq!(status, 200, "{page}");
    let resources = page["Resources"].as_array().expect("resources");
    let names: Vec<&str> = resources
        .iter()
        .filter_map(|r| r["userName"].as_str())
        .collect();
    assert_eq!(names, ["ug-ann", "ug-ben", "ug-lonely"]);
    assert_eq!(groups_of(&resources[0]).len(), 2);
    assert_eq!(groups_of(&resources[1]).len(), 1);
    assert!(resources[2].get("groups").is_none());

    // A rename and a deletion through lockbridge show at once.
    let (status, body, _) = scim
        .patch(
            &format!("/Groups/{readers}"),
            json!({ "schemas": [PATCH_OP], "Operations": [
                { "op": "replace", "path": "displayName", "value": "ug-library" }
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        groups_of(&get_user(scim, &ben, "").await),
        [(readers.clone(), "ug-library".to_owned())]
    );
    let (status, _, _) = scim.delete(&format!("/Groups/{writers}")).await;
    assert_eq!(status, 204);
    assert_eq!(
        groups_of(&get_user(scim, &ann, "").await),
        [(readers.clone(), "ug-library".to_owned())]
    );
    // Removing a member shows too.
    let (status, body, _) = scim
        .patch(
            &format!("/Groups/{readers}"),
            json!({ "schemas": [PATCH_OP], "Operations": [
                { "op": "remove", "path": format!("members[value eq \"{ben}\"]") }
            ]}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    assert!(get_user(scim, &ben, "").await.get("groups").is_none());
    let _ = slapd;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_member_of_where_the_directory_keeps_it() {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let daemon = Daemon::start(&slapd, &mail);
    let token = create_token(&daemon.config_path, "entra", "scim");
    let scim = daemon.scim(&token);
    groups_are_returned_by_default(&slapd, &scim).await;

    // Once a user's groups are known, reading it again searches no group.
    let id = user(&scim, "ug-again").await;
    group(&scim, "ug-again-group", &[&id]).await;
    let first = get_user(&scim, &id, "").await;
    assert_eq!(groups_of(&first).len(), 1, "{first}");
    let searches = searches_during(&slapd, async {
        for _ in 0..5 {
            let again = get_user(&scim, &id, "").await;
            assert_eq!(groups_of(&again), groups_of(&first));
        }
    })
    .await;
    assert_eq!(searches, 0, "{}", slapd.log_tail(40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_searching_the_groups_where_it_does_not() {
    let slapd = Slapd::start_without_memberof();
    let mail = MailSink::start();
    let daemon = Daemon::start(&slapd, &mail);
    let token = create_token(&daemon.config_path, "entra", "scim");
    let scim = daemon.scim(&token);
    groups_are_returned_by_default(&slapd, &scim).await;

    // One search of the groups per page, however many users it holds.
    let ids = [
        user(&scim, "ug-page-1").await,
        user(&scim, "ug-page-2").await,
        user(&scim, "ug-page-3").await,
    ];
    group(&scim, "ug-page-group", &[&ids[0], &ids[1], &ids[2]]).await;
    let searches = searches_during(&slapd, async {
        let (status, page, _) = scim
            .get("/Users?filter=userName%20sw%20%22ug-page-%22")
            .await;
        assert_eq!(status, 200, "{page}");
        let resources = page["Resources"].as_array().expect("resources");
        assert_eq!(resources.len(), 3);
        for r in resources {
            assert_eq!(groups_of(r).len(), 1, "{r}");
        }
    })
    .await;
    assert_eq!(searches, 1, "{}", slapd.log_tail(40));
}

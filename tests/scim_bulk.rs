//! `POST /scim/v2/Bulk` (RFC 7644 §3.7) against the real daemon and slapd: references
//! between operations by `bulkId`, `failOnErrors`, the announced limits, and each
//! operation audited as if it had been sent alone.

mod harness;

use harness::daemon::{Daemon, Scim, create_token};
use harness::slapd::Slapd;
use harness::smtp::MailSink;
use serde_json::{Value, json};

const BULK: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

struct Env {
    slapd: Slapd,
    _mail: MailSink,
    daemon: Daemon,
    scim: Scim,
}

fn start() -> Env {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let daemon = Daemon::start(&slapd, &mail);
    let token = create_token(&daemon.config_path, "okta-bulk", "scim");
    let scim = daemon.scim(&token);
    Env {
        slapd,
        _mail: mail,
        daemon,
        scim,
    }
}

fn user(name: &str) -> Value {
    json!({ "schemas": [USER], "userName": name, "name": { "familyName": name } })
}

async fn bulk(env: &Env, body: Value) -> (u16, Value) {
    let (status, reply, _) = env.scim.post("/Bulk", body).await;
    (status, reply)
}

#[tokio::test]
async fn a_later_operation_refers_to_an_earlier_one_by_bulk_id() {
    let env = start();
    let (status, reply) = bulk(
        &env,
        json!({
            "schemas": [BULK],
            "Operations": [
                // The group comes first but waits for the user it refers to.
                {"method": "POST", "path": "/Groups", "bulkId": "g1",
                 "data": {"schemas": [GROUP], "displayName": "Bulk Crew",
                          "members": [{"value": "bulkId:u1", "type": "User"}]}},
                {"method": "POST", "path": "/Users", "bulkId": "u1",
                 "data": user("bulk-ann")},
                {"method": "PATCH", "path": "/Users/bulkId:u1",
                 "data": {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                          "Operations": [{"op": "replace", "path": "displayName", "value": "Ann Bulk"}]}}
            ]
        }),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:BulkResponse"])
    );
    let ops = reply["Operations"].as_array().expect("operations");
    assert_eq!(ops.len(), 3, "{reply}");
    assert_eq!(ops[0]["status"], "201", "{reply}");
    assert_eq!(ops[1]["status"], "201", "{reply}");
    assert_eq!(ops[2]["status"], "200", "{reply}");
    let user_location = ops[1]["location"].as_str().expect("location");
    let user_id = user_location.rsplit('/').next().expect("id");
    assert!(
        ops[1]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("W/"))
    );
    // In the directory: the user is a member of the group, with the patched name.
    let members = env
        .slapd
        .ldapsearch_attr("cn=Bulk Crew,ou=groups,dc=example,dc=org", "member");
    assert_eq!(members, vec![env.slapd.user_dn("bulk-ann")]);
    let (_, got, _) = env.scim.get(&format!("/Users/{user_id}")).await;
    assert_eq!(got["displayName"], "Ann Bulk");
    // Each operation is audited as if sent alone.
    let (_, audit) = env
        .daemon
        .client()
        .get(
            &env.daemon.admin_token,
            "/api/v1/audit?actor=okta-bulk&limit=10",
        )
        .await;
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    // Newest first: the group (run last, once its member existed), the patch, the user.
    assert_eq!(actions, vec!["scim.create", "scim.patch", "scim.create"]);
}

#[tokio::test]
async fn fail_on_errors_stops_the_run() {
    let env = start();
    let (status, reply) = bulk(
        &env,
        json!({
            "schemas": [BULK],
            "failOnErrors": 1,
            "Operations": [
                {"method": "POST", "path": "/Users", "bulkId": "a", "data": user("bulk-bob")},
                // Taken already: 409, the first error.
                {"method": "POST", "path": "/Users", "bulkId": "b", "data": user("bulk-bob")},
                {"method": "POST", "path": "/Users", "bulkId": "c", "data": user("bulk-cid")}
            ]
        }),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let ops = reply["Operations"].as_array().expect("operations");
    assert_eq!(ops.len(), 2, "the third is not run: {reply}");
    assert_eq!(ops[0]["status"], "201");
    assert_eq!(ops[1]["status"], "409");
    assert_eq!(ops[1]["response"]["scimType"], "uniqueness");
    let (_, found, _) = env
        .scim
        .get("/Users?filter=userName%20eq%20%22bulk-cid%22")
        .await;
    assert_eq!(found["totalResults"], 0, "not created");

    // Without failOnErrors every operation runs; a reference to a failed one is 409.
    let (_, reply) = bulk(
        &env,
        json!({
            "schemas": [BULK],
            "Operations": [
                {"method": "POST", "path": "/Users", "bulkId": "x", "data": user("bulk-bob")},
                {"method": "POST", "path": "/Groups", "bulkId": "y",
                 "data": {"schemas": [GROUP], "displayName": "Needs X",
                          "members": [{"value": "bulkId:x"}]}},
                {"method": "POST", "path": "/Users", "bulkId": "z", "data": user("bulk-zed")},
                {"method": "DELETE", "path": "/Users/bulkId:nowhere"}
            ]
        }),
    )
    .await;
    let statuses: Vec<&str> = reply["Operations"]
        .as_array()
        .expect("operations")
        .iter()
        .filter_map(|o| o["status"].as_str())
        .collect();
    assert_eq!(statuses, vec!["409", "409", "201", "409"], "{reply}");
}

#[tokio::test]
async fn limits_are_announced_and_enforced() {
    let env = start();
    let (_, config, _) = env.scim.get("/ServiceProviderConfig").await;
    assert_eq!(config["bulk"]["supported"], true);
    let max = config["bulk"]["maxOperations"]
        .as_u64()
        .expect("maxOperations");
    assert!(
        config["bulk"]["maxPayloadSize"]
            .as_u64()
            .expect("maxPayloadSize")
            > 0
    );
    let ops: Vec<Value> = (0..=max)
        .map(|i| json!({"method": "DELETE", "path": format!("/Users/{i}")}))
        .collect();
    let (status, reply) = bulk(&env, json!({"schemas": [BULK], "Operations": ops})).await;
    assert_eq!(status, 413, "{reply}");
    assert!(
        reply["detail"].as_str().is_some_and(|d| d.contains("1000")),
        "{reply}"
    );
    // A protected account stays protected inside a Bulk request.
    let (_, alice, _) = env
        .scim
        .get("/Users?filter=userName%20eq%20%22alice%22")
        .await;
    let alice = alice["Resources"][0]["id"]
        .as_str()
        .expect("alice")
        .to_owned();
    let (_, reply) = bulk(
        &env,
        json!({"schemas": [BULK], "Operations": [{"method": "DELETE", "path": format!("/Users/{alice}")}]}),
    )
    .await;
    assert_eq!(reply["Operations"][0]["status"], "403", "{reply}");
    assert_eq!(
        env.slapd
            .ldapsearch_attr(&env.slapd.user_dn("alice"), "uid"),
        vec!["alice"]
    );
}

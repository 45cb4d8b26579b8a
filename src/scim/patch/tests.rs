use super::*;
use crate::directory::Entry;
use crate::scim::filter::{ENTERPRISE_USER, PASSWORD_EXTENSION};
use crate::scim::model::PATCH_OP;
use crate::scim::resource::{UserExtras, UserMapping, UserMappingSettings};
use proptest::prelude::*;
use rstest::rstest;
use serde_json::json;

fn schema() -> &'static ResourceSchema {
    ResourceSchema::user()
}

/// The test user as [`UserMapping::to_resource`] builds it.
fn user() -> Value {
    json!({
        "schemas": [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            ENTERPRISE_USER,
            PASSWORD_EXTENSION
        ],
        "id": "2819c223-7f76-453a-919d-413861904646",
        "externalId": "bjensen-ext",
        "userName": "bjensen",
        "name": {"formatted": "Barbara Jensen", "familyName": "Jensen", "givenName": "Barbara"},
        "displayName": "Babs Jensen",
        "active": true,
        "emails": [
            {"value": "bjensen@example.com", "type": "work"},
            {"value": "babs@example.com", "type": "work"}
        ],
        "phoneNumbers": [{"value": "555-1234", "type": "work"}],
        ENTERPRISE_USER: {
            "department": "Tour Operations",
            "manager": {"value": "m1", "$ref": "https://x/Users/m1"}
        },
        PASSWORD_EXTENSION: {
            "passwordLastChanged": "2024-01-01T12:00:00Z",
            "mustChange": false,
            "neverExpires": false
        },
        "meta": {"resourceType": "User", "version": "W/\"1\"", "location": "https://x/Users/2819c223-7f76-453a-919d-413861904646"}
    })
}

fn request(ops: Value) -> PatchRequest {
    PatchRequest::from_json(&json!({"schemas": [PATCH_OP], "Operations": ops})).expect("valid")
}

fn patched(ops: Value) -> Result<(Value, PatchOutcome), ScimError> {
    let mut r = user();
    let outcome = apply_user_patch(&mut r, &request(ops), schema())?;
    Ok((r, outcome))
}

fn ok(ops: Value) -> Value {
    match patched(ops) {
        Ok((r, _)) => r,
        Err(e) => panic!("refused: {e}"),
    }
}

fn err(ops: Value) -> ScimError {
    match patched(ops) {
        Ok((r, _)) => panic!("accepted: {r}"),
        Err(e) => e,
    }
}

// -- simple paths -------------------------------------------------------------------------

#[rstest]
#[case("replace")]
#[case("Replace")]
#[case("REPLACE")]
#[case("add")]
#[case("Add")]
fn set_a_simple_attribute_in_any_op_case(#[case] op: &str) {
    let r = ok(json!([{"op": op, "path": "displayName", "value": "Barbara"}]));
    assert_eq!(r["displayName"], "Barbara");
}

#[test]
fn replace_a_sub_attribute() {
    let r = ok(json!([{"op": "replace", "path": "name.familyName", "value": "Jensen-Smith"}]));
    assert_eq!(
        r["name"],
        json!({"formatted": "Barbara Jensen", "familyName": "Jensen-Smith", "givenName": "Barbara"})
    );
}

#[test]
fn attribute_names_in_paths_ignore_case_and_may_be_qualified() {
    let r = ok(json!([
        {"op": "replace", "path": "DISPLAYNAME", "value": "A"},
        {"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:title", "value": "T"},
        {"op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", "value": "701984"},
        {"op": "add", "path": "organization", "value": "Universal"}
    ]));
    assert_eq!(r["displayName"], "A");
    assert_eq!(r["title"], "T");
    assert_eq!(r[ENTERPRISE_USER]["employeeNumber"], "701984");
    assert_eq!(r[ENTERPRISE_USER]["organization"], "Universal");
}

#[test]
fn replace_a_complex_attribute_merges_its_sub_attributes() {
    let r = ok(
        json!([{"op": "replace", "path": "name", "value": {"givenName": "Babs", "Formatted": null}}]),
    );
    assert_eq!(
        r["name"],
        json!({"familyName": "Jensen", "givenName": "Babs"})
    );
}

#[test]
fn remove_attributes_and_sub_attributes() {
    let r = ok(json!([
        {"op": "remove", "path": "displayName"},
        {"op": "remove", "path": "name.givenName"},
        {"op": "remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"}
    ]));
    assert!(r.get("displayName").is_none());
    assert_eq!(
        r["name"],
        json!({"formatted": "Barbara Jensen", "familyName": "Jensen"})
    );
    assert!(r[ENTERPRISE_USER].get("department").is_none());
}

#[test]
fn removing_the_last_extension_attribute_removes_the_extension() {
    let r = ok(json!([
        {"op": "remove", "path": "department"},
        {"op": "remove", "path": "manager"}
    ]));
    assert!(r.get(ENTERPRISE_USER).is_none());
    assert!(
        !r["schemas"]
            .as_array()
            .is_some_and(|s| s.iter().any(|u| u == ENTERPRISE_USER))
    );
}

#[test]
fn remove_of_something_absent_succeeds_without_change() {
    let (r, outcome) = patched(json!([
        {"op": "remove", "path": "title"},
        {"op": "remove", "path": "name.middleName"},
        {"op": "remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:organization"},
        {"op": "remove", "path": "emails[type eq \"home\"]"}
    ]))
    .expect("valid");
    assert_eq!(r, user());
    assert!(!outcome.changed);
}

#[test]
fn replace_without_value_removes() {
    let r = ok(json!([{"op": "replace", "path": "displayName"}]));
    assert!(r.get("displayName").is_none());
}

// -- multi-valued -----------------------------------------------------------------------

#[test]
fn add_appends_without_duplicates() {
    let r = ok(json!([{"op": "add", "path": "emails", "value": [
        {"value": "BABS@example.com", "type": "work"},
        {"value": "new@example.com", "type": "work"}
    ]}]));
    assert_eq!(
        r["emails"],
        json!([
            {"value": "bjensen@example.com", "type": "work"},
            {"value": "BABS@example.com", "type": "work"},
            {"value": "new@example.com", "type": "work"}
        ])
    );
}

/// A user whose first work email is primary.
fn with_primary_email() -> Value {
    let mut r = user();
    r["emails"][0]["primary"] = json!(true);
    r
}

fn primaries(r: &Value) -> Vec<String> {
    r["emails"]
        .as_array()
        .expect("emails")
        .iter()
        .filter(|e| e["primary"] == json!(true))
        .map(|e| e["value"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// RFC 7644 §3.5.2: a value added as primary takes `primary` from the one that had it.
#[test]
fn a_value_added_as_primary_demotes_the_former_primary() {
    let mut r = with_primary_email();
    let ops = json!([{"op": "add", "path": "emails", "value": {"value": "p@example.com", "type": "home", "primary": true}}]);
    apply_user_patch(&mut r, &request(ops), schema()).expect("applied");
    assert_eq!(primaries(&r), ["p@example.com"], "{r}");
    assert_eq!(r["emails"].as_array().map(Vec::len), Some(3));
}

/// The same when an existing value is made primary through a value path.
#[test]
fn a_value_made_primary_by_a_value_path_demotes_the_former_primary() {
    let mut r = with_primary_email();
    let ops = json!([{"op": "replace", "path": "emails[value eq \"babs@example.com\"].primary", "value": true}]);
    apply_user_patch(&mut r, &request(ops), schema()).expect("applied");
    assert_eq!(primaries(&r), ["babs@example.com"], "{r}");
    // ... and a value path can find the primary value now that it is kept.
    let ops = json!([{"op": "replace", "path": "emails[primary eq true].value", "value": "b2@example.com"}]);
    apply_user_patch(&mut r, &request(ops), schema()).expect("applied");
    assert_eq!(primaries(&r), ["b2@example.com"], "{r}");
}

/// Of two values given as primary in one operation, the last one is (each value added
/// as primary takes it from the others).
#[test]
fn of_two_values_given_as_primary_the_last_is() {
    let mut r = with_primary_email();
    let ops = json!([{"op": "replace", "path": "emails", "value": [
        {"value": "a@example.com", "type": "work", "primary": true},
        {"value": "b@example.com", "type": "home", "primary": true}
    ]}]);
    apply_user_patch(&mut r, &request(ops), schema()).expect("applied");
    assert_eq!(primaries(&r), ["b@example.com"], "{r}");
}

#[test]
fn replace_a_multi_valued_attribute_replaces_all_values() {
    let r = ok(
        json!([{"op": "replace", "path": "emails", "value": [{"value": "only@example.com", "type": "work", "primary": true}]}]),
    );
    assert_eq!(
        r["emails"],
        json!([{"value": "only@example.com", "type": "work", "primary": true}])
    );
}

/// `replace emails[type eq "work" and value eq …].value` updates the matching address
/// only (Entra ID sends `emails[type eq "work"].value`; all of lockbridge's are work)…
#[test]
fn replace_value_path_sub_attribute_updates_matching_values() {
    let r = ok(
        json!([{"op": "Replace", "path": "emails[type eq \"work\" and value eq \"BJensen@example.com\"].value", "value": "updatedEmail@microsoft.com"}]),
    );
    assert_eq!(r["emails"][0]["value"], "updatedEmail@microsoft.com");
    assert_eq!(r["emails"][1]["value"], "babs@example.com");
}

/// …and creates it when there is none.
#[rstest]
#[case("Replace")]
#[case("Add")]
fn value_path_with_eq_filter_creates_the_value(#[case] op: &str) {
    let r = ok(
        json!([{"op": op, "path": "phoneNumbers[type eq \"mobile\"].value", "value": "555-9876"}]),
    );
    assert_eq!(
        r["phoneNumbers"],
        json!([{"value": "555-1234", "type": "work"}, {"value": "555-9876", "type": "mobile"}])
    );
}

#[test]
fn value_path_without_an_eq_filter_that_matches_nothing_has_no_target() {
    let e = err(
        json!([{"op": "replace", "path": "emails[value co \"nobody\"].value", "value": "x@y"}]),
    );
    assert_eq!(e.scim_type(), Some("noTarget"), "{e}");
}

#[test]
fn replace_a_selected_value_keeps_what_the_filter_fixes() {
    let r = ok(
        json!([{"op": "replace", "path": "phoneNumbers[type eq \"work\"]", "value": {"value": "555-0000"}}]),
    );
    assert_eq!(
        r["phoneNumbers"],
        json!([{"type": "work", "value": "555-0000"}])
    );
}

#[test]
fn remove_selected_values() {
    let r = ok(json!([{"op": "remove", "path": "emails[value eq \"BABS@example.com\"]"}]));
    assert_eq!(
        r["emails"],
        json!([{"value": "bjensen@example.com", "type": "work"}])
    );
    let r = ok(json!([{"op": "remove", "path": "phoneNumbers[type eq \"work\"].value"}]));
    assert!(
        r.get("phoneNumbers").is_none(),
        "a value without value is gone"
    );
    let r = ok(json!([{"op": "remove", "path": "emails[type eq \"work\"]"}]));
    assert!(r.get("emails").is_none());
}

#[test]
fn remove_with_a_value_list_removes_those_values() {
    let r = ok(
        json!([{"op": "remove", "path": "emails", "value": [{"value": "babs@example.com"}, {"value": "not@there"}]}]),
    );
    assert_eq!(
        r["emails"],
        json!([{"value": "bjensen@example.com", "type": "work"}])
    );
}

#[test]
fn sub_attribute_of_a_multi_valued_attribute_without_filter_applies_to_all() {
    let r = ok(json!([{"op": "replace", "path": "emails.type", "value": "work"}]));
    assert_eq!(r["emails"][1]["type"], "work");
}

// -- manager (Entra ID) -----------------------------------------------------------------

#[rstest]
// Entra ID, SCIM provisioning documentation
#[case(json!({"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": [{"$ref": null, "value": "2819c223"}]}))]
// Entra ID with aadOptscim062020 / flattened
#[case(json!({"op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": "2819c223"}))]
#[case(json!({"op": "replace", "path": "manager", "value": {"value": "2819c223"}}))]
#[case(json!({"op": "replace", "path": "manager.value", "value": "2819c223"}))]
#[case(json!({"op": "replace", "value": {"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager": "2819c223"}}))]
fn manager_in_every_form(#[case] op: Value) {
    let r = ok(json!([op]));
    // A $ref left from the previous manager is harmless: the id in value wins.
    assert_eq!(r[ENTERPRISE_USER]["manager"]["value"], json!("2819c223"));
    let m = UserMapping::new(UserMappingSettings::default()).expect("valid");
    let w = m.parse(&r).expect("valid");
    assert_eq!(w.manager_id.as_deref(), Some("2819c223"));
}

#[test]
fn remove_manager_with_its_old_value() {
    // Entra ID (before aadOptscim062020) sends the old value with a remove
    let r = ok(
        json!([{"op": "Remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": [{"value": "m1"}]}]),
    );
    assert!(r[ENTERPRISE_USER].get("manager").is_none());
}

// -- without path -------------------------------------------------------------------------

/// Entra ID (aadOptscim062020): one replace with a map of attribute paths.
#[test]
fn entra_id_replace_without_path() {
    let r = ok(json!([{
        "op": "replace",
        "value": {
            "displayName": "Pvlo",
            "emails[type eq \"work\"].value": "TestBcwqnm@test.microsoft.com",
            "name.givenName": "Gtfd",
            "name.familyName": "Pkqf",
            "externalId": "Eqpj",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "Eqpj"
        }
    }]));
    assert_eq!(r["displayName"], "Pvlo");
    assert_eq!(r["emails"][0]["value"], "TestBcwqnm@test.microsoft.com");
    assert_eq!(r["emails"][1]["value"], "TestBcwqnm@test.microsoft.com");
    assert_eq!(r["name"]["givenName"], "Gtfd");
    assert_eq!(r["name"]["familyName"], "Pkqf");
    assert_eq!(r["externalId"], "Eqpj");
    assert_eq!(r[ENTERPRISE_USER]["employeeNumber"], "Eqpj");
}

/// Okta: deactivate a user.
#[test]
fn okta_deactivate_user() {
    let (r, outcome) =
        patched(json!([{"op": "replace", "value": {"active": false}}])).expect("valid");
    assert_eq!(r["active"], false);
    assert!(outcome.changed);
}

/// Entra ID (before aadOptscim062020): `"active": "False"` as a string.
#[test]
fn entra_id_disable_user_with_a_string_boolean() {
    let r = ok(json!([{"op": "Replace", "path": "active", "value": "False"}]));
    assert_eq!(r["active"], false);
}

/// Okta: change a password.
#[test]
fn okta_password_change_is_taken_out_of_the_json() {
    let (r, outcome) =
        patched(json!([{"op": "replace", "value": {"password": "t1meMa$heen"}}])).expect("valid");
    assert_eq!(
        outcome.password.as_ref().map(Secret::expose),
        Some("t1meMa$heen")
    );
    assert!(outcome.changed);
    assert_eq!(r, user());
    assert!(!r.to_string().contains("t1meMa$heen"));
}

#[rstest]
#[case(json!([{"op": "replace", "path": "password", "value": ""}]), "invalidValue")]
#[case(json!([{"op": "replace", "path": "password", "value": 5}]), "invalidValue")]
#[case(json!([{"op": "remove", "path": "password"}]), "mutability")]
fn password_operations_need_a_non_empty_string(#[case] ops: Value, #[case] scim_type: &str) {
    let e = err(ops);
    assert_eq!(e.scim_type(), Some(scim_type), "{e}");
}

#[test]
fn extension_object_without_path_or_as_path() {
    let r = ok(json!([
        {"op": "replace", "value": {ENTERPRISE_USER: {"department": "Ops", "Organization": "U"}}},
        {"op": "add", "path": PASSWORD_EXTENSION, "value": {"mustChange": "true"}}
    ]));
    assert_eq!(r[ENTERPRISE_USER]["department"], "Ops");
    assert_eq!(r[ENTERPRISE_USER]["organization"], "U");
    assert_eq!(r[PASSWORD_EXTENSION]["mustChange"], true);
    let r = ok(json!([{"op": "remove", "path": ENTERPRISE_USER}]));
    assert!(r.get(ENTERPRISE_USER).is_none());
    // removing the password extension removes what may be removed, nothing read-only
    let r = ok(json!([{"op": "remove", "path": PASSWORD_EXTENSION}]));
    assert_eq!(r[PASSWORD_EXTENSION]["neverExpires"], false);
    assert!(r[PASSWORD_EXTENSION].get("mustChange").is_none());
}

#[test]
fn remove_without_path_has_no_target() {
    let e = err(json!([{"op": "remove", "value": {"displayName": "x"}}]));
    assert_eq!(e.scim_type(), Some("noTarget"));
}

#[rstest]
#[case(json!([{"op": "replace", "value": "x"}]), "invalidSyntax")]
#[case(json!([{"op": "add", "path": "displayName"}]), "invalidSyntax")]
#[case(json!([{"op": "add", "path": "emails[type eq"}]), "invalidPath")]
#[case(json!([{"op": "replace", "value": {"emails[": "x"}}]), "invalidPath")]
#[case(json!([{"op": "replace", "path": "name[givenName eq \"x\"].familyName", "value": "x"}]), "invalidPath")]
#[case(json!([{"op": "replace", "path": "name", "value": "x"}]), "invalidValue")]
fn malformed_operations(#[case] ops: Value, #[case] scim_type: &str) {
    let e = err(ops);
    assert_eq!(e.scim_type(), Some(scim_type), "{e}");
}

#[test]
fn unknown_attributes_are_ignored() {
    let (r, outcome) = patched(json!([
        {"op": "Add", "path": "pets[type eq \"dog\"].value", "value": "Rex"},
        {"op": "Add", "path": "favoriteColor", "value": "green"},
        {"op": "replace", "path": "name.suffix", "value": "J"},
        {"op": "replace", "value": {"roles": [], "urn:example:ext:1.0:User:x": 1}}
    ]))
    .expect("valid");
    assert_eq!(r, user());
    assert!(!outcome.changed);
}

// -- mutability ---------------------------------------------------------------------------

#[rstest]
#[case(json!([{"op": "replace", "path": "id", "value": "other"}]))]
#[case(json!([{"op": "remove", "path": "id"}]))]
#[case(json!([{"op": "replace", "path": "meta.version", "value": "W/\"2\""}]))]
#[case(json!([{"op": "replace", "value": {"meta": {"resourceType": "Group"}}}]))]
#[case(json!([{"op": "add", "path": "groups", "value": [{"value": "g1"}]}]))]
#[case(json!([{"op": "replace", "path": "passwordLastChanged", "value": "2020-01-01T00:00:00Z"}]))]
#[case(json!([{"op": "replace", "path": "neverExpires", "value": true}]))]
#[case(json!([{"op": "replace", "path": "meta.created", "value": "2020-01-01T00:00:00Z"}]))]
fn read_only_attributes_cannot_change(#[case] ops: Value) {
    let e = err(ops);
    assert_eq!(e.scim_type(), Some("mutability"), "{e}");
    assert!(e.to_string().contains("read-only"), "{e}");
}

/// Okta sends the id along with what changes; the id is its current value.
#[test]
fn read_only_attributes_may_be_sent_with_their_current_value() {
    let (r, _) = patched(json!([{"op": "replace", "value": {
        "id": "2819c223-7f76-453a-919d-413861904646",
        "meta": {"resourceType": "User"},
        "displayName": "B"
    }}]))
    .expect("valid");
    assert_eq!(r["displayName"], "B");
    let (_, outcome) = patched(json!([
        {"op": "replace", "path": "groups", "value": []},
        {"op": "replace", "path": "neverExpires", "value": "false"}
    ]))
    .expect("valid");
    assert!(!outcome.changed);
}

#[test]
fn manager_keeps_its_ref_and_drops_sub_attributes_not_in_the_schema() {
    let r = ok(
        json!([{"op": "replace", "path": "manager", "value": {"value": "m2", "$ref": "https://evil/Users/x", "displayName": "X"}}]),
    );
    // $ref is writable (a client may name the manager by its URI); displayName is not
    // published, so it is dropped.
    assert_eq!(
        r[ENTERPRISE_USER]["manager"],
        json!({"value": "m2", "$ref": "https://evil/Users/x"})
    );
}

#[test]
fn an_empty_request_changes_nothing() {
    let (r, outcome) = patched(json!([])).expect("valid");
    assert_eq!(r, user());
    assert_eq!(outcome, PatchOutcome::default());
}

// -- the whole flow -----------------------------------------------------------------------

#[test]
fn patch_then_parse_then_changes_touches_only_the_patched_attributes() {
    let m = UserMapping::new(UserMappingSettings::default()).expect("valid");
    let e = Entry::new(
        "uid=bjensen,ou=people,dc=example,dc=org",
        [
            ("uid".to_owned(), vec!["bjensen".to_owned()]),
            ("cn".to_owned(), vec!["Barbara Jensen".to_owned()]),
            ("sn".to_owned(), vec!["Jensen".to_owned()]),
            ("mail".to_owned(), vec!["bjensen@example.com".to_owned()]),
            (
                "pwdAccountLockedTime".to_owned(),
                vec!["20240101000000Z".to_owned()],
            ),
        ],
    );
    let mut r = m.to_resource(&e, &UserExtras::default());
    let req = request(json!([
        {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "barbara@example.com"},
        {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "555-1"},
        {"op": "replace", "value": {"active": "False"}}
    ]));
    let outcome = apply_user_patch(&mut r, &req, m.schema()).expect("valid");
    assert!(outcome.changed);
    let w = m.parse(&r).expect("valid");
    assert_eq!(
        m.changes(&e, &w),
        [
            crate::directory::Change::Replace("mail".into(), vec!["barbara@example.com".into()]),
            crate::directory::Change::Replace("mobile".into(), vec!["555-1".into()]),
        ]
    );
    // A lockout after failed sign-ins is no block: `active: false` asks the gate for one.
    assert_eq!(
        m.state_edit(Some(&e), &w),
        crate::account::ProvisionedState {
            blocked: Some(true),
            must_change: None
        }
    );
}

// -- groups -------------------------------------------------------------------------------

fn group() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "id": "e9e30dba-f08f-4109-8486-d5c6a331660a",
        "displayName": "Tour Guides",
        "externalId": "g-ext",
        "meta": {"resourceType": "Group"}
    })
}

fn group_patch(ops: Value) -> Result<GroupPatch, ScimError> {
    parse_group_patch(&request(ops), &group(), ResourceSchema::group())
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// Entra ID: add and remove members with a value list.
#[test]
fn entra_id_members() {
    let p = group_patch(json!([
        {"op": "Add", "path": "members", "value": [{"$ref": null, "value": "f648f8d5ea4e4cd38e9c"}]}
    ]))
    .expect("valid");
    assert_eq!(
        p,
        GroupPatch {
            add_members: ids(&["f648f8d5ea4e4cd38e9c"]),
            ..GroupPatch::default()
        }
    );
    let p = group_patch(json!([
        {"op": "Remove", "path": "members", "value": [{"$ref": null, "value": "f648f8d5ea4e4cd38e9c"}]}
    ]))
    .expect("valid");
    assert_eq!(p.remove_members, ids(&["f648f8d5ea4e4cd38e9c"]));
    assert!(p.add_members.is_empty() && p.replace_members.is_none());
}

/// Okta: remove a member by value filter, add one with its display name.
#[test]
fn okta_members() {
    let p = group_patch(json!([
        {"op": "remove", "path": "members[value eq \"00u2y5o2bm9kSQWf00h8\"]"},
        {"op": "add", "path": "members", "value": [{"value": "00u1ab", "display": "test.user@okta.local"}]}
    ]))
    .expect("valid");
    assert_eq!(p.remove_members, ids(&["00u2y5o2bm9kSQWf00h8"]));
    assert_eq!(p.add_members, ids(&["00u1ab"]));
}

/// Okta: rename a group, sending its id along.
#[test]
fn okta_rename_group() {
    let p = group_patch(json!([{"op": "replace", "value": {
        "id": "e9e30dba-f08f-4109-8486-d5c6a331660a",
        "displayName": "Test SCIMv2"
    }}]))
    .expect("valid");
    assert_eq!(
        p,
        GroupPatch {
            display_name: Some("Test SCIMv2".into()),
            ..GroupPatch::default()
        }
    );
}

#[test]
fn group_patch_sequences_of_member_operations() {
    let p = group_patch(json!([
        {"op": "add", "path": "members", "value": [{"value": "a"}, {"value": "b"}]},
        {"op": "remove", "path": "members[value eq \"a\" or value eq \"c\"]"},
        {"op": "add", "path": "members", "value": [{"value": "B"}]}
    ]))
    .expect("valid");
    assert_eq!(p.add_members, ids(&["b"]));
    assert_eq!(p.remove_members, ids(&["a", "c"]));
    let p = group_patch(json!([
        {"op": "replace", "path": "members", "value": [{"value": "a"}]},
        {"op": "add", "path": "members", "value": [{"value": "b"}]},
        {"op": "remove", "path": "members", "value": [{"value": "a"}]}
    ]))
    .expect("valid");
    assert_eq!(p.replace_members, Some(ids(&["b"])));
    assert!(p.add_members.is_empty() && p.remove_members.is_empty());
    let p = group_patch(json!([{"op": "remove", "path": "members"}])).expect("valid");
    assert_eq!(p.replace_members, Some(vec![]));
    let p = group_patch(
        json!([{"op": "replace", "value": {"members": [{"value": "x"}], "displayName": "New"}}]),
    )
    .expect("valid");
    assert_eq!(p.replace_members, Some(ids(&["x"])));
    assert_eq!(p.display_name.as_deref(), Some("New"));
}

#[test]
fn group_external_id_set_and_cleared() {
    let p = group_patch(json!([{"op": "replace", "path": "externalId", "value": "new"}]))
        .expect("valid");
    assert_eq!(p.external_id, Some(Some("new".into())));
    let p = group_patch(json!([{"op": "remove", "path": "externalId"}])).expect("valid");
    assert_eq!(p.external_id, Some(None));
    let p = group_patch(json!([{"op": "replace", "path": "displayName", "value": "Tour Guides"}]))
        .expect("valid");
    assert!(p.is_empty());
}

#[rstest]
#[case(json!([{"op": "remove", "path": "displayName"}]), "invalidValue")]
#[case(json!([{"op": "remove", "path": "members[display eq \"x\"]"}]), "invalidPath")]
#[case(json!([{"op": "replace", "path": "members[value eq \"x\"]", "value": {"value": "y"}}]), "invalidPath")]
#[case(json!([{"op": "remove", "path": "members.value"}]), "invalidPath")]
#[case(json!([{"op": "add", "path": "members", "value": [{"display": "no id"}]}]), "invalidValue")]
#[case(json!([{"op": "replace", "path": "id", "value": "other"}]), "mutability")]
fn group_patch_refusals(#[case] ops: Value, #[case] scim_type: &str) {
    let e = group_patch(ops).expect_err("invalid");
    assert_eq!(e.scim_type(), Some(scim_type), "{e}");
}

// -- properties ---------------------------------------------------------------------------

/// Top-level paths of the test user, and whether they are writable.
const PATHS: &[&str] = &[
    "userName",
    "name",
    "name.givenName",
    "displayName",
    "active",
    "emails",
    "phoneNumbers",
    "externalId",
    "id",
    "meta",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
    "urn:lockbridge:params:scim:schemas:extension:password:2.0:User:mustChange",
    "urn:lockbridge:params:scim:schemas:extension:password:2.0:User:neverExpires",
];

fn current(path: &str) -> Value {
    let r = user();
    let p = parse_path(path).expect(path).attr;
    let container = match &p.urn {
        Some(u) if u.contains("extension") => r[u.as_str()].clone(),
        _ => r,
    };
    match &p.sub_attr {
        Some(s) => container[p.name.as_str()][s.as_str()].clone(),
        None => container[p.name.as_str()].clone(),
    }
}

proptest! {
    /// Replacing (or adding) any attribute with its current value changes nothing, even a
    /// read-only one.
    #[test]
    fn setting_the_current_value_changes_nothing(
        path in prop::sample::select(PATHS),
        op in prop::sample::select(&["replace", "Replace", "add"][..]),
        with_path in any::<bool>(),
    ) {
        let value = current(path);
        let ops = if with_path {
            json!([{"op": op, "path": path, "value": value}])
        } else {
            json!([{"op": op, "value": {path: value}}])
        };
        let (r, outcome) = patched(ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(r, user());
        prop_assert!(!outcome.changed);
    }

    /// Any list of operations either applies or fails with a SCIM error; nothing panics,
    /// and the password never lands in the JSON.
    #[test]
    fn arbitrary_operations_never_panic(
        ops in prop::collection::vec(
            (
                prop::sample::select(&["add", "remove", "replace", "Replace", "move"][..]),
                prop::option::of(prop::sample::select(&[
                    "userName", "name.givenName", "emails", "emails[type eq \"work\"].value",
                    "emails[value co \"x\"]", "phoneNumbers[type eq \"mobile\"]", "password",
                    "manager", "manager.value", "members", "members[value eq \"a\"]", "id",
                    "meta.version", ENTERPRISE_USER, PASSWORD_EXTENSION, "x[", "groups",
                ][..])),
                crate::scim::resource::tests::arb_json(),
            ),
            0..4,
        ),
    ) {
        let ops: Vec<Value> = ops
            .into_iter()
            .map(|(op, path, value)| match path {
                Some(p) => json!({"op": op, "path": p, "value": value}),
                None => json!({"op": op, "value": value}),
            })
            .collect();
        let body = json!({"schemas": [PATCH_OP], "Operations": ops});
        if let Ok(req) = PatchRequest::from_json(&body) {
            let mut r = user();
            if apply_user_patch(&mut r, &req, schema()).is_ok() {
                let text = r.to_string();
                prop_assert!(!text.contains("\"password\""), "{}", text);
            }
            let _ = parse_group_patch(&req, &group(), ResourceSchema::group());
        }
    }
}

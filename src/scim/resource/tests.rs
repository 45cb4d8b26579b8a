use super::*;
use crate::scim::filter::{Reference, WithReferences, parse_filter, references, to_ldap};
use chrono::TimeZone;
use proptest::prelude::*;
use rstest::rstest;
use serde_json::json;

const PEOPLE: &str = "ou=people,dc=example,dc=org";
/// The entries here are OpenLDAP's (the default directory kind): ppolicy's
/// `pwdAccountLockedTime` value for "blocked by an administrator".
const LOCKED_BY_ADMIN: &str = "000001010000Z";
const BASE: &str = "https://idm.example.org/scim/v2";

fn settings() -> UserMappingSettings {
    UserMappingSettings {
        external_id_attribute: Some("scimExternalId".into()),
        ..UserMappingSettings::default()
    }
}

fn mapping() -> UserMapping {
    UserMapping::new(settings()).expect("valid settings")
}

fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> Entry {
    Entry::new(
        dn,
        attrs.iter().map(|(k, v)| {
            (
                (*k).to_owned(),
                v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            )
        }),
    )
}

fn bjensen() -> Entry {
    entry(
        &format!("uid=bjensen,{PEOPLE}"),
        &[
            ("objectClass", &["inetOrgPerson"]),
            ("uid", &["bjensen"]),
            ("cn", &["Barbara Jensen"]),
            ("sn", &["Jensen"]),
            ("givenName", &["Barbara"]),
            ("displayName", &["Babs Jensen"]),
            ("title", &["Tour Guide"]),
            ("preferredLanguage", &["en-US"]),
            ("mail", &["bjensen@example.com", "babs@example.com"]),
            ("telephoneNumber", &["+1 555 555 5555"]),
            ("mobile", &["+1 555 555 4444"]),
            ("employeeNumber", &["701984"]),
            ("departmentNumber", &["Tour Operations"]),
            ("o", &["Universal Studios"]),
            ("manager", &["uid=jsmith,ou=people,dc=example,dc=org"]),
            ("scimExternalId", &["bjensen-ext"]),
            ("entryUUID", &["2819c223-7f76-453a-919d-413861904646"]),
            ("entryCSN", &["20240102030405.123456Z#000000#000#000000"]),
            ("createTimestamp", &["20110501184320Z"]),
            ("modifyTimestamp", &["20240102030405Z"]),
            ("pwdChangedTime", &["20240101120000Z"]),
        ],
    )
}

fn extras() -> UserExtras {
    UserExtras {
        base_url: BASE.into(),
        manager_id: Some("26118915-6090-4610-87e4-49d8ca9f808d".into()),
        manager_display: Some("John Smith".into()),
        ..UserExtras::default()
    }
}

// -- settings ---------------------------------------------------------------------------

#[rstest]
#[case(UserMappingSettings { user_name_attribute: "uid)(x".into(), ..settings() }, "user_name_attribute")]
#[case(UserMappingSettings { object_classes: vec![], ..settings() }, "object_classes is empty")]
#[case(UserMappingSettings { object_classes: vec!["inet OrgPerson".into()], ..settings() }, "object class")]
#[case(UserMappingSettings { external_id_attribute: Some("".into()), ..settings() }, "external_id_attribute")]
#[case(
    UserMappingSettings { overrides: BTreeMap::from([("favoriteColor".into(), "x".into())]), ..settings() },
    "not a mapped SCIM attribute"
)]
#[case(
    UserMappingSettings { overrides: BTreeMap::from([("title".into(), "a b".into())]), ..settings() },
    "overrides.\"title\""
)]
#[case(
    UserMappingSettings { overrides: BTreeMap::from([("displayName".into(), "CN".into())]), ..settings() },
    "both mapped to \"CN\""
)]
#[case(
    UserMappingSettings { user_name_attribute: "mail".into(), ..settings() },
    "both mapped to \"mail\""
)]
#[case(
    UserMappingSettings { overrides: BTreeMap::from([("title".into(), "pwdReset".into())]), ..settings() },
    "manages itself"
)]
fn settings_are_validated(#[case] s: UserMappingSettings, #[case] reason: &str) {
    match UserMapping::new(s) {
        Ok(m) => panic!("accepted: {m:?}"),
        Err(e) => assert!(e.contains(reason), "{e}"),
    }
}

#[test]
fn override_keys_accept_documented_spellings() {
    for key in [
        "phoneNumbers.mobile",
        "PHONENUMBERS.MOBILE",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
        "department",
        "emails",
        "emails.value",
        "name.givenName",
    ] {
        let s = UserMappingSettings {
            overrides: BTreeMap::from([(key.to_owned(), "x-custom".to_owned())]),
            ..settings()
        };
        assert!(UserMapping::new(s).is_ok(), "{key}");
    }
}

#[test]
fn read_attributes_include_mapped_and_operational_attributes() {
    let attrs = mapping().read_attributes();
    for a in [
        "uid",
        "cn",
        "sn",
        "givenName",
        "mail",
        "telephoneNumber",
        "mobile",
        "departmentNumber",
        "manager",
        "scimExternalId",
        "entryUUID",
        "entryCSN",
        "createTimestamp",
        "modifyTimestamp",
        "pwdChangedTime",
        "pwdReset",
        "pwdAccountLockedTime",
        "pwdPolicySubentry",
    ] {
        assert!(attrs.iter().any(|x| x == a), "{a} missing from {attrs:?}");
    }
}

#[test]
fn schema_view_omits_external_id_when_not_stored() {
    let m = UserMapping::new(UserMappingSettings::default()).expect("valid");
    assert!(m.schema().resolve(&AttrPath::new("externalId")).is_none());
    assert!(
        mapping()
            .schema()
            .resolve(&AttrPath::new("externalId"))
            .is_some()
    );
}

// -- entry → resource -------------------------------------------------------------------

#[test]
fn full_entry_becomes_full_resource() {
    let r = mapping().to_resource(&bjensen(), &extras());
    assert_eq!(
        r,
        json!({
            "schemas": [CORE_USER, ENTERPRISE_USER, PASSWORD_EXTENSION],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "bjensen-ext",
            "userName": "bjensen",
            "name": {"formatted": "Barbara Jensen", "familyName": "Jensen", "givenName": "Barbara"},
            "displayName": "Babs Jensen",
            "title": "Tour Guide",
            "preferredLanguage": "en-US",
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work"},
                {"value": "babs@example.com", "type": "work"}
            ],
            "phoneNumbers": [
                {"value": "+1 555 555 5555", "type": "work"},
                {"value": "+1 555 555 4444", "type": "mobile"}
            ],
            ENTERPRISE_USER: {
                "employeeNumber": "701984",
                "department": "Tour Operations",
                "organization": "Universal Studios",
                "manager": {
                    "value": "26118915-6090-4610-87e4-49d8ca9f808d",
                    "$ref": format!("{BASE}/Users/26118915-6090-4610-87e4-49d8ca9f808d")
                }
            },
            PASSWORD_EXTENSION: {
                "passwordLastChanged": "2024-01-01T12:00:00Z",
                "mustChange": false,
                "neverExpires": false
            },
            "meta": {
                "resourceType": "User",
                "created": "2011-05-01T18:43:20Z",
                "lastModified": "2024-01-02T03:04:05Z",
                "location": format!("{BASE}/Users/2819c223-7f76-453a-919d-413861904646"),
                "version": "W/\"20240102030405.123456Z#000000#000#000000\""
            }
        })
    );
}

#[test]
fn minimal_entry_lists_only_extensions_with_values() {
    let e = entry(
        &format!("uid=min,{PEOPLE}"),
        &[
            ("uid", &["min"]),
            ("cn", &["min"]),
            ("sn", &["min"]),
            ("entryUUID", &["6c5bb468-14b2-4183-baf2-06d523e03bd3"]),
        ],
    );
    let r = mapping().to_resource(&e, &UserExtras::default());
    assert_eq!(r["schemas"], json!([CORE_USER, PASSWORD_EXTENSION]));
    assert!(r.get(ENTERPRISE_USER).is_none());
    assert!(r.get("emails").is_none());
    assert!(r.get("groups").is_none());
    assert_eq!(r["active"], true);
    assert!(r["meta"].get("version").is_none());
}

#[rstest]
#[case(None, true)]
#[case(Some("000001010000Z"), false)]
#[case(Some("20240101120000Z"), true)]
fn active_is_false_only_when_locked_by_an_administrator(
    #[case] locked: Option<&str>,
    #[case] active: bool,
) {
    let mut e = bjensen();
    if let Some(t) = locked {
        e.attrs
            .insert("pwdaccountlockedtime".into(), vec![t.into()]);
    }
    assert_eq!(mapping().to_resource(&e, &extras())["active"], active);
}

#[test]
fn password_facts_come_from_the_entry_and_the_extras() {
    let mut e = bjensen();
    e.attrs.insert("pwdreset".into(), vec!["TRUE".into()]);
    let x = UserExtras {
        password_expires_at: Utc.with_ymd_and_hms(2024, 3, 31, 12, 0, 0).single(),
        never_expires: true,
        ..extras()
    };
    let r = mapping().to_resource(&e, &x);
    assert_eq!(
        r[PASSWORD_EXTENSION],
        json!({
            "passwordLastChanged": "2024-01-01T12:00:00Z",
            "passwordExpiresAt": "2024-03-31T12:00:00Z",
            "mustChange": true,
            "neverExpires": true
        })
    );
}

#[test]
fn groups_are_listed_only_when_the_service_resolved_them() {
    let m = mapping();
    assert!(m.to_resource(&bjensen(), &extras()).get("groups").is_none());
    let x = UserExtras {
        groups: Some(vec![GroupRef {
            id: "g1".into(),
            display: Some("Tour Guides".into()),
        }]),
        ..extras()
    };
    assert_eq!(
        m.to_resource(&bjensen(), &x)["groups"],
        json!([{"value": "g1", "$ref": format!("{BASE}/Groups/g1"), "display": "Tour Guides", "type": "direct"}])
    );
}

// -- body → write -----------------------------------------------------------------------

fn parse(body: Value) -> Result<UserWrite, ScimError> {
    mapping().parse(&body)
}

fn attr<'a>(w: &'a UserWrite, name: &str) -> Option<&'a [String]> {
    w.attrs.get(name).map(Vec::as_slice)
}

/// Microsoft Entra ID's "Create User" request (SCIM provisioning documentation).
#[test]
fn entra_id_create_user() {
    let w = parse(json!({
        "schemas": [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
        ],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1",
        "active": true,
        "emails": [{
            "primary": true,
            "type": "work",
            "value": "Test_User_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com"
        }],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
        "roles": []
    }))
    .expect("valid");
    assert_eq!(
        w.user_name,
        "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1"
    );
    assert_eq!(
        w.external_id.as_deref(),
        Some("0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef")
    );
    assert_eq!(w.active, Some(true));
    assert_eq!(
        attr(&w, "mail"),
        Some(&["Test_User_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com".to_owned()][..])
    );
    assert_eq!(
        attr(&w, "cn"),
        Some(&["givenName familyName".to_owned()][..])
    );
    assert_eq!(attr(&w, "sn"), Some(&["familyName".to_owned()][..]));
    assert_eq!(attr(&w, "givenname"), Some(&["givenName".to_owned()][..]));
    assert!(w.password.is_none());
}

/// Okta's "Create the User" request (SCIM 2.0 reference), with a password.
#[test]
fn okta_create_user_with_password() {
    let w = parse(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "test.user@okta.local",
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"primary": true, "value": "test.user@okta.local", "type": "work"}],
        "displayName": "Test User",
        "locale": "en-US",
        "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [],
        "password": "1mz050nq",
        "active": true
    }))
    .expect("valid");
    assert_eq!(w.user_name, "test.user@okta.local");
    assert_eq!(w.password.as_ref().map(Secret::expose), Some("1mz050nq"));
    assert_eq!(attr(&w, "displayname"), Some(&["Test User".to_owned()][..]));
    assert!(format!("{w:?}").contains("[redacted]"));
    assert!(!format!("{w:?}").contains("1mz050nq"));
}

/// Entra ID with the enterprise extension, its manager forms, and booleans as strings.
#[rstest]
#[case(json!("26118915"))]
#[case(json!({"value": "26118915"}))]
#[case(json!([{"$ref": null, "value": "26118915"}]))]
#[case(json!({"Value": " 26118915 ", "displayName": "John Smith"}))]
fn manager_in_every_form_entra_id_sends(#[case] manager: Value) {
    let w = parse(json!({
        "userName": "u",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
            "department": "Tour Operations",
            "manager": manager
        }
    }))
    .expect("valid");
    assert_eq!(w.manager_id.as_deref(), Some("26118915"));
    assert_eq!(
        attr(&w, "departmentnumber"),
        Some(&["Tour Operations".to_owned()][..])
    );
}

#[rstest]
#[case(json!(""))]
#[case(json!(null))]
#[case(json!({}))]
#[case(json!([]))]
fn empty_manager_is_no_manager(#[case] manager: Value) {
    let w = parse(json!({"userName": "u", ENTERPRISE_USER: {"manager": manager}})).expect("valid");
    assert_eq!(w.manager_id, None);
}

#[test]
fn flattened_and_qualified_names_in_any_case() {
    let w = parse(json!({
        "urn:ietf:params:scim:schemas:core:2.0:User:userName": "u",
        "NAME.GIVENNAME": "Barbara",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": 701984,
        "Urn:Ietf:Params:Scim:Schemas:Extension:Enterprise:2.0:User": {"ORGANIZATION": "Universal"},
        "DisplayName": "Babs",
        "organization": "ignored: the nested value wins"
    }))
    .expect("valid");
    assert_eq!(w.user_name, "u");
    assert_eq!(attr(&w, "givenname"), Some(&["Barbara".to_owned()][..]));
    assert_eq!(attr(&w, "employeenumber"), Some(&["701984".to_owned()][..]));
    assert_eq!(attr(&w, "o"), Some(&["Universal".to_owned()][..]));
    assert_eq!(attr(&w, "displayname"), Some(&["Babs".to_owned()][..]));
}

#[rstest]
#[case(json!("True"), Some(true))]
#[case(json!("false"), Some(false))]
#[case(json!("FALSE"), Some(false))]
#[case(json!(true), Some(true))]
#[case(json!(null), None)]
fn booleans_as_strings(#[case] v: Value, #[case] expected: Option<bool>) {
    let w = parse(json!({
        "userName": "u",
        "active": v.clone(),
        PASSWORD_EXTENSION: {"mustChange": v.clone()},
        "emails": [{"value": "a@x", "primary": "false"}, {"value": "b@x", "primary": "True"}]
    }))
    .expect("valid");
    assert_eq!(w.active, expected);
    assert_eq!(w.must_change, expected);
    // the primary address goes first
    assert_eq!(
        attr(&w, "mail"),
        Some(&["b@x".to_owned(), "a@x".to_owned()][..])
    );
}

#[rstest]
#[case(json!({"userName": "u", "active": "yes"}), "active must be true or false")]
#[case(json!({"userName": "u", "displayName": {"x": 1}}), "displayName must be a string")]
#[case(json!({"userName": "u", "emails": [5]}), "emails must be an array of objects")]
#[case(json!({"userName": "u", "emails": [{"value": "a@x", "primary": 2}]}), "emails.primary")]
#[case(json!({"userName": "u", ENTERPRISE_USER: {"manager": 5}}), "manager must be")]
#[case(json!({"displayName": "x"}), "userName is required")]
#[case(json!({"userName": ""}), "userName is required")]
#[case(json!({"userName": "  "}), "userName is required")]
#[case(json!({"userName": true}), "userName must be a string")]
fn invalid_values_are_refused(#[case] body: Value, #[case] reason: &str) {
    let e = parse(body).expect_err("invalid");
    assert_eq!(e.scim_type(), Some("invalidValue"), "{e}");
    assert!(e.to_string().contains(reason), "{e}");
}

#[rstest]
#[case(json!(""))]
#[case(json!(12345678))]
#[case(json!(["hunter2"]))]
#[case(json!({"value": "hunter2"}))]
fn password_must_be_a_non_empty_string_and_is_never_echoed(#[case] pw: Value) {
    let e = parse(json!({"userName": "u", "password": pw})).expect_err("invalid");
    assert_eq!(e.scim_type(), Some("invalidValue"));
    let text = e.to_string();
    assert!(
        text.contains("password must be a non-empty string"),
        "{text}"
    );
    assert!(
        !text.contains("hunter2") && !text.contains("12345678"),
        "{text}"
    );
}

#[test]
fn read_only_and_unknown_attributes_are_ignored() {
    let w = parse(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": "not-the-id",
        "meta": {"resourceType": "User", "version": "W/\"x\""},
        "groups": [{"value": "g1"}],
        "userName": "u",
        "nickName": "Babs",
        "addresses": [{"type": "home", "streetAddress": "100 Universal City Plaza"}],
        "roles": [],
        "x509Certificates": [{"value": "MIIDQzCCA"}],
        PASSWORD_EXTENSION: {"passwordLastChanged": "2024-01-01T00:00:00Z", "neverExpires": true},
        "urn:example:custom": {"x": 1}
    }))
    .expect("valid");
    assert_eq!(
        w,
        UserWrite {
            user_name: "u".into(),
            ..UserWrite::default()
        }
    );
}

#[test]
fn work_address_and_every_phone_type_are_kept() {
    let m = mapping();
    let w = m
        .parse(&json!({
            "userName": "u",
            "addresses": [
                {"type": "home", "streetAddress": "1 Home Rd"},
                {"type": "work", "streetAddress": "100 Universal City Plaza",
                 "locality": "Hollywood", "region": "CA", "postalCode": "91608",
                 "formatted": "100 Universal City Plaza\nHollywood, CA 91608 $1\\x"}
            ],
            "phoneNumbers": [
                {"type": "fax", "value": "+1 555 0100"},
                {"type": "home", "value": "+1 555 0101"},
                {"type": "pager", "value": "+1 555 0102"},
                {"type": "other", "value": "+1 555 0103"}
            ]
        }))
        .expect("valid");
    for (attr, value) in [
        ("street", "100 Universal City Plaza"),
        ("l", "Hollywood"),
        ("st", "CA"),
        ("postalcode", "91608"),
        ("facsimiletelephonenumber", "+1 555 0100"),
        ("homephone", "+1 555 0101"),
        ("pager", "+1 555 0102"),
    ] {
        assert_eq!(attr_of(&w, attr), Some(&[value.to_owned()][..]), "{attr}");
    }
    assert_eq!(
        attr_of(&w, "postaladdress"),
        Some(&["100 Universal City Plaza$Hollywood, CA 91608 \\241\\5Cx".to_owned()][..]),
        "lines become $, and $ and \\ are escaped"
    );
    // Read back exactly as written (the home address and the "other" number are not kept).
    let (_, attrs) = m.new_entry(&w, PEOPLE);
    let e = Entry::new(format!("uid=u,{PEOPLE}"), attrs);
    let r = m.to_resource(&e, &UserExtras::default());
    assert_eq!(
        r["addresses"],
        json!([{"type": "work", "streetAddress": "100 Universal City Plaza",
                "locality": "Hollywood", "region": "CA", "postalCode": "91608",
                "formatted": "100 Universal City Plaza\nHollywood, CA 91608 $1\\x"}])
    );
    assert!(
        r["phoneNumbers"]
            .as_array()
            .is_some_and(|p| p.contains(&json!({"type": "pager", "value": "+1 555 0102"}))),
        "{r}"
    );
}

fn attr_of<'a>(w: &'a UserWrite, name: &str) -> Option<&'a [String]> {
    w.attrs.get(name).map(Vec::as_slice)
}

#[test]
fn email_and_phone_types_lockbridge_does_not_store_are_ignored() {
    let w = parse(json!({
        "userName": "u",
        "emails": [
            {"value": "home@x", "type": "home"},
            {"value": "work@x", "type": "Work"},
            {"value": "WORK@x"},
            {"value": "untyped@x"},
            {"type": "work"}
        ],
        "phoneNumbers": [
            {"value": "1", "type": "work"},
            {"value": "2", "type": "MOBILE"},
            {"value": "3", "type": "fax"},
            {"value": "4"}
        ]
    }))
    .expect("valid");
    assert_eq!(
        attr(&w, "mail"),
        Some(&["work@x".to_owned(), "untyped@x".to_owned()][..])
    );
    assert_eq!(
        attr(&w, "telephonenumber"),
        Some(&["1".to_owned(), "4".to_owned()][..])
    );
    assert_eq!(attr(&w, "mobile"), Some(&["2".to_owned()][..]));
}

#[test]
fn not_an_object_is_invalid_syntax() {
    let e = parse(json!(["userName"])).expect_err("invalid");
    assert_eq!(e.scim_type(), Some("invalidSyntax"));
}

#[test]
fn external_id_is_ignored_when_not_stored() {
    let m = UserMapping::new(UserMappingSettings::default()).expect("valid");
    let w = m
        .parse(&json!({"userName": "u", "externalId": "x"}))
        .expect("valid");
    assert_eq!(w.external_id, None);
}

// -- write → new entry ------------------------------------------------------------------

fn write(body: Value) -> UserWrite {
    parse(body).expect("valid")
}

fn new_attr(attrs: &[(String, Vec<String>)], name: &str) -> Option<Vec<String>> {
    attrs
        .iter()
        .find(|(a, _)| a.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

#[rstest]
#[case(json!({"userName": "u", "name": {"formatted": "F", "familyName": "Fam", "givenName": "G"}, "displayName": "D"}), "F", "Fam")]
#[case(json!({"userName": "u", "displayName": "D"}), "D", "u")]
#[case(json!({"userName": "u", "name": {"givenName": "G", "familyName": "Fam"}}), "G Fam", "Fam")]
#[case(json!({"userName": "u", "name": {"givenName": "G"}}), "G", "u")]
#[case(json!({"userName": "u"}), "u", "u")]
fn new_entry_derives_cn_and_sn(#[case] body: Value, #[case] cn: &str, #[case] sn: &str) {
    let (_, attrs) = mapping().new_entry(&write(body), PEOPLE);
    assert_eq!(new_attr(&attrs, "cn"), Some(vec![cn.to_owned()]));
    assert_eq!(new_attr(&attrs, "sn"), Some(vec![sn.to_owned()]));
}

#[test]
fn new_entry_has_escaped_rdn_object_classes_and_state() {
    let m = UserMapping::new(UserMappingSettings {
        object_classes: vec!["inetOrgPerson".into(), "lockbridgeContact".into()],
        ..settings()
    })
    .expect("valid");
    let w = write(json!({
        "userName": " a,b+c#",
        "active": false,
        "externalId": "x1",
        "emails": [{"value": "a@x"}],
        PASSWORD_EXTENSION: {"mustChange": true},
        "password": "secret value"
    }));
    let (dn, attrs) = m.new_entry(&w, PEOPLE);
    assert_eq!(dn, format!("uid=\\ a\\,b\\+c#,{PEOPLE}"));
    assert_eq!(rdn_of(&dn), Some(("uid".into(), " a,b+c#".into())));
    assert_eq!(
        attrs[0],
        (
            "objectClass".to_owned(),
            vec!["inetOrgPerson".to_owned(), "lockbridgeContact".to_owned()]
        )
    );
    assert_eq!(new_attr(&attrs, "uid"), Some(vec![" a,b+c#".to_owned()]));
    assert_eq!(new_attr(&attrs, "mail"), Some(vec!["a@x".to_owned()]));
    assert_eq!(
        new_attr(&attrs, "scimExternalId"),
        Some(vec!["x1".to_owned()])
    );
    // Sign-in state is the account gate's to write, after the add.
    let state_attributes = SignInVocabulary::default().attributes();
    assert!(
        attrs
            .iter()
            .all(|(a, _)| !state_attributes.iter().any(|s| s.eq_ignore_ascii_case(a))),
        "{attrs:?}"
    );
    assert_eq!(
        m.state_edit(None, &w),
        ProvisionedState {
            blocked: Some(true),
            must_change: Some(true)
        }
    );
    assert!(!format!("{attrs:?}").contains("secret value"));
}

// -- write → changes --------------------------------------------------------------------

/// The resource of `e` as a client would PUT it back, changed by `edit`.
fn put(e: &Entry, edit: impl FnOnce(&mut Value)) -> UserWrite {
    let m = mapping();
    let mut r = m.to_resource(e, &extras());
    edit(&mut r);
    let mut w = m.parse(&r).expect("valid");
    // the service resolves the manager id
    if w.manager_id.as_deref() == Some("26118915-6090-4610-87e4-49d8ca9f808d") {
        w.attrs.insert(
            "manager".into(),
            vec!["uid=jsmith,ou=people,dc=example,dc=org".into()],
        );
    }
    w
}

fn replace(attr: &str, values: &[&str]) -> Change {
    Change::Replace(
        attr.into(),
        values.iter().map(|s| (*s).to_owned()).collect(),
    )
}

#[test]
fn unchanged_resource_means_no_changes() {
    let e = bjensen();
    let w = put(&e, |_| {});
    assert_eq!(mapping().changes(&e, &w), []);
    assert_eq!(mapping().rdn_change(&e, &w), None);
}

#[test]
fn only_what_differs_is_replaced() {
    let e = bjensen();
    let w = put(&e, |r| {
        r["displayName"] = json!("Barbara");
        r["emails"] = json!([{"value": "babs@example.com", "primary": true}, {"value": "bjensen@example.com"}]);
    });
    assert_eq!(
        mapping().changes(&e, &w),
        [
            replace("displayName", &["Barbara"]),
            replace("mail", &["babs@example.com", "bjensen@example.com"]),
        ]
    );
}

#[test]
fn absent_attributes_are_cleared_with_an_empty_replace() {
    let e = bjensen();
    let w = put(&e, |r| {
        let o = r.as_object_mut().expect("object");
        o.remove("title");
        o.remove("phoneNumbers");
        o.remove(ENTERPRISE_USER);
    });
    assert_eq!(
        mapping().changes(&e, &w),
        [
            replace("title", &[]),
            replace("telephoneNumber", &[]),
            replace("mobile", &[]),
            replace("employeeNumber", &[]),
            replace("departmentNumber", &[]),
            replace("o", &[]),
            replace("manager", &[]),
        ]
    );
}

#[test]
fn attributes_absent_from_entry_and_write_give_no_change() {
    let e = entry(
        &format!("uid=u,{PEOPLE}"),
        &[("uid", &["u"]), ("cn", &["u"]), ("sn", &["u"])],
    );
    let w = write(json!({"userName": "u"}));
    assert_eq!(mapping().changes(&e, &w), []);
}

#[test]
fn must_attributes_are_re_derived_when_cleared() {
    let e = bjensen();
    let w = put(&e, |r| {
        r.as_object_mut().map(|o| o.remove("name"));
    });
    assert_eq!(
        mapping().changes(&e, &w),
        [
            replace("givenName", &[]),
            replace("sn", &["bjensen"]),
            replace("cn", &["Babs Jensen"]),
        ]
    );
}

#[test]
fn extra_values_of_single_valued_attributes_are_kept() {
    let mut e = bjensen();
    e.attrs
        .insert("cn".into(), vec!["Barbara Jensen".into(), "Babs".into()]);
    let w = put(&e, |_| {});
    assert_eq!(mapping().changes(&e, &w), []);
    // but a new value replaces them all
    let w = put(&e, |r| r["name"]["formatted"] = json!("B. Jensen"));
    assert_eq!(mapping().changes(&e, &w), [replace("cn", &["B. Jensen"])]);
}

#[test]
fn values_compare_case_sensitively() {
    let e = bjensen();
    let w = put(&e, |r| r["title"] = json!("tour guide"));
    assert_eq!(
        mapping().changes(&e, &w),
        [replace("title", &["tour guide"])]
    );
}

#[rstest]
#[case(None, Some(false), Some(true))]
#[case(Some(LOCKED_BY_ADMIN), Some(false), None)]
#[case(Some(LOCKED_BY_ADMIN), Some(true), Some(false))]
#[case(Some("20240101120000Z"), Some(true), None)]
#[case(Some("20240101120000Z"), Some(false), Some(true))]
#[case(None, Some(true), None)]
#[case(Some(LOCKED_BY_ADMIN), None, None)]
fn active_blocks_and_unblocks(
    #[case] locked: Option<&str>,
    #[case] active: Option<bool>,
    #[case] blocked: Option<bool>,
) {
    let mut e = bjensen();
    if let Some(t) = locked {
        e.attrs
            .insert("pwdaccountlockedtime".into(), vec![t.into()]);
    }
    let mut w = put(&e, |_| {});
    w.active = active;
    assert_eq!(mapping().changes(&e, &w), []);
    assert_eq!(
        mapping().state_edit(Some(&e), &w),
        ProvisionedState {
            blocked,
            must_change: None
        }
    );
}

#[rstest]
#[case(None, Some(true), Some(true))]
#[case(Some("TRUE"), Some(true), None)]
#[case(Some("TRUE"), Some(false), Some(false))]
#[case(Some("FALSE"), Some(false), None)]
#[case(None, Some(false), None)]
#[case(Some("TRUE"), None, None)]
fn must_change_is_asked_of_the_gate_when_it_differs(
    #[case] reset: Option<&str>,
    #[case] must_change: Option<bool>,
    #[case] expected: Option<bool>,
) {
    let mut e = bjensen();
    if let Some(v) = reset {
        e.attrs.insert("pwdreset".into(), vec![v.into()]);
    }
    let mut w = put(&e, |_| {});
    w.must_change = must_change;
    assert_eq!(mapping().changes(&e, &w), []);
    assert_eq!(
        mapping().state_edit(Some(&e), &w),
        ProvisionedState {
            blocked: None,
            must_change: expected
        }
    );
}

#[test]
fn manager_changes_follow_what_the_service_resolved() {
    let e = bjensen();
    let m = mapping();
    // resolved to a new DN
    let mut w = put(&e, |_| {});
    w.attrs.insert(
        "manager".into(),
        vec!["uid=boss,ou=people,dc=example,dc=org".into()],
    );
    assert_eq!(
        m.changes(&e, &w),
        [replace(
            "manager",
            &["uid=boss,ou=people,dc=example,dc=org"]
        )]
    );
    // an id the service did not resolve: untouched
    let mut w = put(&e, |_| {});
    w.attrs.remove("manager");
    assert_eq!(m.changes(&e, &w), []);
    // no manager: cleared
    let w = put(&e, |r| {
        r[ENTERPRISE_USER]
            .as_object_mut()
            .map(|o| o.remove("manager"));
    });
    assert_eq!(m.changes(&e, &w), [replace("manager", &[])]);
}

#[test]
fn user_name_change_is_a_rename() {
    let e = bjensen();
    let w = put(&e, |r| r["userName"] = json!("barbara,j"));
    let m = mapping();
    assert_eq!(m.rdn_change(&e, &w).as_deref(), Some("uid=barbara\\,j"));
    assert_eq!(m.changes(&e, &w), []);
    // a case-only change is a change too
    let w = put(&e, |r| r["userName"] = json!("BJensen"));
    assert_eq!(m.rdn_change(&e, &w).as_deref(), Some("uid=BJensen"));
}

#[test]
fn entries_named_by_another_attribute_keep_their_rdn_value() {
    let mut e = bjensen();
    e.dn = format!("cn=Barbara Jensen,{PEOPLE}");
    let m = mapping();
    let w = put(&e, |r| {
        r["userName"] = json!("babs");
        r["name"]["formatted"] = json!("Babs J");
    });
    assert_eq!(m.rdn_change(&e, &w), None);
    assert_eq!(
        m.changes(&e, &w),
        [
            replace("cn", &["Babs J", "Barbara Jensen"]),
            replace("uid", &["babs"]),
        ]
    );
}

// -- configuration agrees everywhere ------------------------------------------------------

fn custom() -> UserMapping {
    UserMapping::new(UserMappingSettings {
        user_name_attribute: "loginName".into(),
        object_classes: vec!["inetOrgPerson".into()],
        external_id_attribute: None,
        overrides: BTreeMap::from([
            ("phoneNumbers.mobile".to_owned(), "pager".to_owned()),
            // pager's own home is given away above: it has none.
            ("phoneNumbers.pager".to_owned(), String::new()),
            (
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department".to_owned(),
                "ou".to_owned(),
            ),
        ]),
        lockbridge_schema: false,
        sign_in: SignInVocabulary::default(),
        entries: Default::default(),
    })
    .expect("valid")
}

#[test]
fn overrides_apply_to_reading_writing_filtering_and_sorting() {
    let m = custom();
    let e = entry(
        &format!("loginName=bob,{PEOPLE}"),
        &[
            ("loginName", &["bob"]),
            ("cn", &["Bob"]),
            ("sn", &["B"]),
            ("pager", &["123"]),
            ("ou", &["Ops"]),
            ("mobile", &["not mapped any more"]),
        ],
    );
    let r = m.to_resource(&e, &UserExtras::default());
    assert_eq!(r["userName"], "bob");
    assert_eq!(
        r["phoneNumbers"],
        json!([{"value": "123", "type": "mobile"}])
    );
    assert_eq!(r[ENTERPRISE_USER]["department"], "Ops");
    let w = m.parse(&r).expect("valid");
    assert_eq!(w.attrs.get("pager"), Some(&vec!["123".to_owned()]));
    assert_eq!(m.changes(&e, &w), []);
    let (dn, _) = m.new_entry(&w, PEOPLE);
    assert!(dn.starts_with("loginName=bob,"), "{dn}");
    let ldap = |f: &str| to_ldap(&parse_filter(f).expect(f), m.filter_mapping());
    assert_eq!(
        ldap(r#"userName eq "bob""#).as_deref(),
        Ok("(loginName=bob)")
    );
    assert_eq!(
        ldap(r#"phoneNumbers[type eq "mobile" and value eq "1"]"#).as_deref(),
        Ok("(pager=1)")
    );
    assert_eq!(ldap(r#"department eq "Ops""#).as_deref(), Ok("(ou=Ops)"));
    let key = m.sort_key(&AttrPath::new("userName")).expect("sortable");
    assert_eq!(key.attribute, "loginName");
}

#[rstest]
#[case("active eq false", "(pwdAccountLockedTime=000001010000Z)")]
#[case("active eq true", "(!(pwdAccountLockedTime=000001010000Z))")]
#[case(
    r#"urn:lockbridge:params:scim:schemas:extension:password:2.0:User:passwordLastChanged lt "2024-01-01T00:00:00Z""#,
    "(&(pwdChangedTime<=20240101000000Z)(!(pwdChangedTime=20240101000000Z)))"
)]
#[case("mustChange eq true", "(pwdReset=TRUE)")]
#[case(r#"externalId eq "x""#, "(scimExternalId=x)")]
#[case(r#"emails[type eq "work"].value eq "a@x""#, "(mail=a@x)")]
fn filter_mapping_agrees_with_the_resource(#[case] filter: &str, #[case] ldap: &str) {
    let f = parse_filter(filter).expect(filter);
    assert_eq!(to_ldap(&f, mapping().filter_mapping()).as_deref(), Ok(ldap));
}

#[test]
fn manager_filters_resolve_ids_like_members() {
    let m = mapping();
    let f = parse_filter(&format!(r#"{ENTERPRISE_USER}:manager.value eq "m1""#)).expect("valid");
    let ids = references(&f, m.filter_mapping());
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].1, "m1");
    let resolved = HashMap::from([(
        "m1".to_owned(),
        Reference::Dn("uid=jsmith,ou=people,dc=example,dc=org".to_owned()),
    )]);
    assert_eq!(
        to_ldap(&f, &WithReferences::new(m.filter_mapping(), resolved)).as_deref(),
        Ok("(manager=uid=jsmith,ou=people,dc=example,dc=org)")
    );
    let f = parse_filter(r#"passwordExpiresAt gt "2024-01-01T00:00:00Z""#).expect("valid");
    assert!(
        to_ldap(&f, m.filter_mapping()).is_err_and(|e| e.to_string().contains("expiration policy"))
    );
}

#[rstest]
#[case("userName", "uid", "caseIgnoreOrderingMatch")]
#[case("USERNAME", "uid", "caseIgnoreOrderingMatch")]
#[case("name.familyName", "sn", "caseIgnoreOrderingMatch")]
#[case("displayName", "displayName", "caseIgnoreOrderingMatch")]
#[case("emails", "mail", "caseIgnoreOrderingMatch")]
#[case("emails.value", "mail", "caseIgnoreOrderingMatch")]
#[case("meta.lastModified", "modifyTimestamp", "generalizedTimeOrderingMatch")]
#[case("meta.created", "createTimestamp", "generalizedTimeOrderingMatch")]
#[case("id", "entryUUID", "UUIDOrderingMatch")]
#[case("externalId", "scimExternalId", "caseExactOrderingMatch")]
#[case(
    "passwordLastChanged",
    "pwdChangedTime",
    "generalizedTimeOrderingMatch"
)]
fn sort_keys(#[case] path: &str, #[case] attribute: &str, #[case] rule: &str) {
    let p = crate::scim::filter::parse_path(path).expect(path).attr;
    let key = mapping().sort_key(&p).expect("sortable");
    assert_eq!(
        key,
        SortKey {
            attribute: attribute.into(),
            ordering_rule: Some(rule.into()),
            reverse: false,
        }
    );
}

#[rstest]
#[case("phoneNumbers")]
#[case("active")]
#[case("manager")]
#[case("emails.type")]
#[case("nickName")]
#[case("password")]
#[case("groups")]
fn unsortable_attributes_are_invalid_values(#[case] path: &str) {
    let p = crate::scim::filter::parse_path(path).expect(path).attr;
    let e = mapping().sort_key(&p).expect_err("unsortable");
    assert_eq!(e.scim_type(), Some("invalidValue"), "{path}: {e}");
    assert!(e.to_string().contains("sortBy"), "{e}");
}

// -- groups -----------------------------------------------------------------------------

const GROUPS: &str = "ou=groups,dc=example,dc=org";

fn groups() -> GroupMapping {
    GroupMapping::new(GroupMappingSettings {
        external_id_attribute: Some("scimExternalId".into()),
        ..GroupMappingSettings::default()
    })
    .expect("valid")
}

fn group(members: &[&str]) -> Entry {
    entry(
        &format!("cn=Tour Guides,{GROUPS}"),
        &[
            ("objectClass", &["groupOfNames"]),
            ("cn", &["Tour Guides", "guides"]),
            ("member", members),
            ("entryUUID", &["e9e30dba-f08f-4109-8486-d5c6a331660a"]),
            ("entryCSN", &["20240102030405.000000Z#000000#000#000000"]),
            ("createTimestamp", &["20110501184320Z"]),
            ("modifyTimestamp", &["20240102030405Z"]),
        ],
    )
}

const ALICE: &str = "uid=alice,ou=people,dc=example,dc=org";
const BOB: &str = "uid=bob,ou=people,dc=example,dc=org";

#[test]
fn group_settings_are_validated() {
    for (s, reason) in [
        (
            GroupMappingSettings {
                object_classes: vec![],
                external_id_attribute: None,
                lockbridge_schema: false,
                entries: Default::default(),
            },
            "object_classes",
        ),
        (
            GroupMappingSettings {
                external_id_attribute: Some("member".into()),
                ..GroupMappingSettings::default()
            },
            "choose another",
        ),
    ] {
        let e = GroupMapping::new(s).expect_err("invalid");
        assert!(e.contains(reason), "{e}");
    }
    assert!(
        groups()
            .read_attributes()
            .iter()
            .any(|a| a == "scimExternalId")
    );
}

#[test]
fn group_resource_never_shows_the_placeholder() {
    let g = groups();
    let e = group(&["", ALICE]);
    assert_eq!(g.member_dns(&e), [ALICE]);
    let r = g.to_resource(
        &e,
        &[MemberRef {
            id: "a1".into(),
            kind: MemberKind::User,
            display: Some("Alice".into()),
        }],
        BASE,
    );
    assert_eq!(
        r,
        json!({
            "schemas": [CORE_GROUP],
            "id": "e9e30dba-f08f-4109-8486-d5c6a331660a",
            "displayName": "Tour Guides",
            "members": [{"value": "a1", "$ref": format!("{BASE}/Users/a1"), "type": "User"}],
            "meta": {
                "resourceType": "Group",
                "created": "2011-05-01T18:43:20Z",
                "lastModified": "2024-01-02T03:04:05Z",
                "location": format!("{BASE}/Groups/e9e30dba-f08f-4109-8486-d5c6a331660a"),
                "version": "W/\"20240102030405.000000Z#000000#000#000000\""
            }
        })
    );
    let empty = g.to_resource(&group(&[""]), &[], BASE);
    assert!(empty.get("members").is_none());
    assert!(g.member_dns(&group(&[""])).is_empty());
}

/// Microsoft Entra ID's "Create Group" request.
#[test]
fn entra_id_create_group() {
    let w = groups()
        .parse(&json!({
            "schemas": [
                "urn:ietf:params:scim:schemas:core:2.0:Group",
                "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
            ],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "displayName",
            "meta": {"resourceType": "Group"}
        }))
        .expect("valid");
    assert_eq!(
        w,
        GroupWrite {
            display_name: "displayName".into(),
            external_id: Some("8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159".into()),
            member_ids: vec![],
        }
    );
}

/// Okta's "Update a specific Group name" PUT, with members (value and display).
#[test]
fn okta_put_group_with_members() {
    let w = groups()
        .parse(&json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": "abf4dd94-a4c0-4f67-89c9-76b03340cb9b",
            "displayName": "Test SCIMv2",
            "members": [
                {"value": "b1c794f24f4c49f4b5d503a4cb2686ea", "display": "SCIM 2 Group A"},
                {"value": "B1C794F24F4C49F4B5D503A4CB2686EA"},
                {"$ref": "https://x/scim/v2/Users/u2"},
                "u3"
            ]
        }))
        .expect("valid");
    assert_eq!(w.display_name, "Test SCIMv2");
    assert_eq!(
        w.member_ids,
        ["b1c794f24f4c49f4b5d503a4cb2686ea", "u2", "u3"]
    );
}

#[rstest]
#[case(json!({"members": []}), "displayName is required")]
#[case(json!({"displayName": ""}), "displayName is required")]
#[case(json!({"displayName": "g", "members": [{"display": "x"}]}), "each member")]
#[case(json!({"displayName": "g", "members": [7]}), "each member")]
fn invalid_groups_are_refused(#[case] body: Value, #[case] reason: &str) {
    let e = groups().parse(&body).expect_err("invalid");
    assert_eq!(e.scim_type(), Some("invalidValue"));
    assert!(e.to_string().contains(reason), "{e}");
}

#[test]
fn new_group_holds_the_placeholder_or_its_members() {
    let g = groups();
    let w = GroupWrite {
        display_name: "Admins, EU".into(),
        external_id: Some("x".into()),
        member_ids: vec![],
    };
    let (dn, attrs) = g.new_entry(&w, &[], GROUPS);
    assert_eq!(dn, format!("cn=Admins\\, EU,{GROUPS}"));
    assert_eq!(new_attr(&attrs, "member"), Some(vec![String::new()]));
    assert_eq!(
        new_attr(&attrs, "scimExternalId"),
        Some(vec!["x".to_owned()])
    );
    let (_, attrs) = g.new_entry(
        &w,
        &[
            ALICE.into(),
            "UID=Alice, ou=People,dc=example,dc=org".into(),
            BOB.into(),
        ],
        GROUPS,
    );
    assert_eq!(
        new_attr(&attrs, "member"),
        Some(vec![ALICE.to_owned(), BOB.to_owned()])
    );
}

fn add(values: &[&str]) -> Change {
    Change::Add(
        "member".into(),
        values.iter().map(|s| (*s).to_owned()).collect(),
    )
}

fn delete(values: &[&str]) -> Change {
    Change::Delete(
        "member".into(),
        values.iter().map(|s| (*s).to_owned()).collect(),
    )
}

fn dns(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[rstest]
// the first member replaces the placeholder
#[case(&[""], &[ALICE], &[], None, vec![add(&[ALICE]), delete(&[""])])]
// the last member leaving brings the placeholder back
#[case(&[ALICE], &[], &[ALICE], None, vec![add(&[""]), delete(&[ALICE])])]
// removing a non-member, adding a member: nothing (DNs compare loosely)
#[case(&[ALICE], &[], &[BOB], None, vec![])]
#[case(&[ALICE], &["UID=Alice , OU=People,dc=Example,dc=org"], &[], None, vec![])]
#[case(&[ALICE, BOB], &[], &["uid=BOB,ou=people,dc=example,dc=org"], None, vec![delete(&[BOB])])]
#[case(&[ALICE], &[BOB, BOB], &[], None, vec![add(&[BOB])])]
// replace
#[case(&[ALICE], &[], &[], Some(&[BOB][..]), vec![add(&[BOB]), delete(&[ALICE])])]
#[case(&[ALICE, BOB], &[], &[], Some(&[][..]), vec![add(&[""]), delete(&[ALICE, BOB])])]
#[case(&[""], &[], &[], Some(&[][..]), vec![])]
#[case(&[""], &[], &[], Some(&[ALICE][..]), vec![add(&[ALICE]), delete(&[""])])]
#[case(&[ALICE], &[], &[], Some(&["uid=alice,ou=people,dc=example,dc=org"][..]), vec![])]
// a group read without any member value (not written by lockbridge)
#[case(&[], &[], &[ALICE], None, vec![add(&[""])])]
fn member_changes(
    #[case] stored: &[&str],
    #[case] add_dns: &[&str],
    #[case] remove_dns: &[&str],
    #[case] replace: Option<&[&str]>,
    #[case] expected: Vec<Change>,
) {
    let replace = replace.map(dns);
    let changes = groups().member_changes(
        &group(stored),
        &dns(add_dns),
        &dns(remove_dns),
        replace.as_deref(),
    );
    assert_eq!(changes, expected);
}

#[test]
fn group_rename_and_external_id() {
    let g = groups();
    let e = group(&[ALICE]);
    assert_eq!(g.rdn_change(&e, "Tour Guides"), None);
    assert_eq!(
        g.rdn_change(&e, "Guides+Co").as_deref(),
        Some("cn=Guides\\+Co")
    );
    let w = GroupWrite {
        display_name: "Tour Guides".into(),
        external_id: Some("x".into()),
        member_ids: vec![],
    };
    assert_eq!(
        g.changes(&e, &w),
        [Change::Replace("scimExternalId".into(), vec!["x".into()])]
    );
    let p = GroupPatch {
        external_id: Some(None),
        ..GroupPatch::default()
    };
    assert_eq!(g.patch_changes(&e, &p), []);
    let mut e2 = e.clone();
    e2.attrs.insert("scimexternalid".into(), vec!["x".into()]);
    assert_eq!(
        g.patch_changes(&e2, &p),
        [Change::Replace("scimExternalId".into(), vec![])]
    );
    // a group not named by cn: displayName is a replace of cn
    let mut e3 = e.clone();
    e3.dn = format!("ou=guides,{GROUPS}");
    assert_eq!(
        g.patch_changes(
            &e3,
            &GroupPatch {
                display_name: Some("Guides".into()),
                ..GroupPatch::default()
            }
        ),
        [Change::Replace("cn".into(), vec!["Guides".into()])]
    );
}

#[test]
fn object_filter_and_version() {
    assert_eq!(groups().object_filter(), "(objectClass=groupOfNames)");
    let g = GroupMapping::new(GroupMappingSettings {
        object_classes: vec!["groupOfNames".into(), "lockbridgeGroup".into()],
        external_id_attribute: None,
        lockbridge_schema: false,
        entries: Default::default(),
    })
    .expect("valid");
    assert_eq!(
        g.object_filter(),
        "(&(objectClass=groupOfNames)(objectClass=lockbridgeGroup))"
    );
    assert_eq!(
        g.version(&group(&[])).as_deref(),
        Some("W/\"20240102030405.000000Z#000000#000#000000\"")
    );
    assert_eq!(
        mapping().version(&bjensen()).as_deref(),
        Some("W/\"20240102030405.123456Z#000000#000#000000\"")
    );
    assert_eq!(mapping().version(&Entry::default()), None);
}

#[test]
fn group_sort_keys() {
    let key = groups()
        .sort_key(&AttrPath::new("displayName"))
        .expect("sortable");
    assert_eq!(key.attribute, "cn");
    assert!(!key.reverse);
    assert!(groups().sort_key(&AttrPath::new("members")).is_err());
}

// -- DNs and times ------------------------------------------------------------------------

#[rstest]
#[case("simple", "simple")]
#[case("a,b", "a\\,b")]
#[case("#x", "\\#x")]
#[case("x#", "x#")]
#[case(" x ", "\\ x\\ ")]
#[case("a+b=c;d<e>f\"g\\h", "a\\+b\\=c\\;d\\<e\\>f\\\"g\\\\h")]
#[case("nul\0", "nul\\00")]
#[case("Jürgen 李", "Jürgen 李")]
fn rdn_values_are_escaped(#[case] value: &str, #[case] escaped: &str) {
    assert_eq!(escape_rdn_value(value), escaped);
    let dn = format!("uid={escaped},{PEOPLE}");
    assert!(crate::directory::escape::is_valid_dn(&dn), "{dn}");
    assert_eq!(rdn_of(&dn), Some(("uid".to_owned(), value.to_owned())));
}

#[rstest]
#[case("uid=bjensen,ou=people", Some(("uid", "bjensen")))]
#[case(" UID = Bob Smith , ou=people", Some(("UID", "Bob Smith")))]
#[case("cn=Smith\\2C John,dc=x", Some(("cn", "Smith, John")))]
#[case("cn=a\\ ,dc=x", Some(("cn", "a ")))]
#[case("cn=a+sn=b,dc=x", None)]
#[case("novalue", None)]
#[case("cn=dangling\\", None)]
#[case("", None)]
fn rdns_are_read(#[case] dn: &str, #[case] expected: Option<(&str, &str)>) {
    assert_eq!(
        rdn_of(dn),
        expected.map(|(a, v)| (a.to_owned(), v.to_owned()))
    );
}

#[test]
fn dn_keys_ignore_case_and_spaces_around_separators() {
    assert_eq!(
        dn_key(" UID=Bob , OU=People,dc=Example, dc=org "),
        "uid=bob,ou=people,dc=example,dc=org"
    );
    assert_eq!(
        dn_key("cn=Smith\\2C John,dc=x"),
        dn_key("CN=smith\\, john,DC=x")
    );
    assert_ne!(dn_key("cn=a\\,b,dc=x"), dn_key("cn=a,b,dc=x"));
}

#[rstest]
#[case("20240101120000Z", Some("2024-01-01T12:00:00Z"))]
#[case("20240101120000.5Z", Some("2024-01-01T12:00:00.500Z"))]
#[case("20240101120000.123456Z", Some("2024-01-01T12:00:00.123456Z"))]
#[case("20240101140000+0200", Some("2024-01-01T12:00:00Z"))]
#[case("202401011200Z", Some("2024-01-01T12:00:00Z"))]
#[case("2024010112Z", Some("2024-01-01T12:00:00Z"))]
#[case("20240230120000Z", None)]
#[case("20240101120000", None)]
#[case("2024-01-01T12:00:00Z", None)]
#[case("", None)]
fn generalized_times_become_rfc3339(#[case] gt: &str, #[case] expected: Option<&str>) {
    assert_eq!(rfc3339(gt).as_deref(), expected);
}

// -- properties ---------------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9 ,.'+=#\"\\\\é李-]{0,10}"
}

fn unique_ci(s: impl Strategy<Value = String>, max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(s, 0..max).prop_map(|v| {
        let mut out: Vec<String> = Vec::new();
        for x in v {
            if !out.iter().any(|o| o.to_lowercase() == x.to_lowercase()) {
                out.push(x);
            }
        }
        out
    })
}

prop_compose! {
    fn arb_entry()(
        uid in "[A-Za-z0-9 ,+#=._\\\\-]{1,12}".prop_filter("not blank", |s| !s.trim().is_empty()),
        cn in prop::collection::vec(text(), 1..3),
        sn in prop::collection::vec(text(), 1..2),
        given in prop::option::of(text()),
        display in prop::option::of(text()),
        title in prop::option::of(text()),
        lang in prop::option::of("[a-z]{2}(-[A-Z]{2})?"),
        mail in unique_ci("[a-z]{1,6}@[a-z]{1,6}\\.(org|com)", 4),
        phone in unique_ci("[+0-9 ]{1,12}".prop_filter("digits", |s| !s.trim().is_empty()), 3),
        mobile in unique_ci("[0-9]{3,10}", 2),
        employee in prop::option::of("[0-9]{1,8}"),
        department in prop::option::of(text()),
        org in prop::option::of(text()),
        manager in prop::option::of(Just("uid=boss,ou=people,dc=example,dc=org".to_owned())),
        external in prop::option::of("[A-Za-z0-9-]{1,20}"),
        reset in prop::option::of(prop::sample::select(&["TRUE", "FALSE"][..])),
        locked in prop::option::of(prop::sample::select(&[LOCKED_BY_ADMIN, "20240101120000Z"][..])),
        changed in prop::option::of(Just("20240101120000Z")),
    ) -> Entry {
        let mut attrs: Vec<(String, Vec<String>)> = vec![
            ("uid".into(), vec![uid.clone()]),
            ("cn".into(), cn),
            ("sn".into(), sn),
            ("entryUUID".into(), vec!["2819c223-7f76-453a-919d-413861904646".into()]),
        ];
        let mut opt = |name: &str, v: Option<String>| {
            if let Some(v) = v {
                attrs.push((name.to_owned(), vec![v]));
            }
        };
        opt("givenName", given);
        opt("displayName", display);
        opt("title", title);
        opt("preferredLanguage", lang);
        opt("employeeNumber", employee);
        opt("departmentNumber", department);
        opt("o", org);
        opt("manager", manager);
        opt("scimExternalId", external);
        opt("pwdReset", reset.map(str::to_owned));
        opt("pwdAccountLockedTime", locked.map(str::to_owned));
        opt("pwdChangedTime", changed.map(str::to_owned));
        for (name, values) in [("mail", mail), ("telephoneNumber", phone), ("mobile", mobile)] {
            if !values.is_empty() {
                attrs.push((name.to_owned(), values));
            }
        }
        Entry::new(format!("uid={},{PEOPLE}", escape_rdn_value(&uid)), attrs)
    }
}

/// Arbitrary JSON, with the attribute names of a User or Group among the keys so that
/// the parser's deeper paths are reached.
pub(crate) fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::String),
        prop::sample::select(&["", "True", "false", "work", "mobile", "x@y"][..])
            .prop_map(|s| Value::String(s.to_owned())),
    ];
    let key = prop_oneof![
        prop::sample::select(
            &[
                "userName",
                "name",
                "givenName",
                "familyName",
                "formatted",
                "emails",
                "value",
                "type",
                "primary",
                "phoneNumbers",
                "active",
                "password",
                "displayName",
                "members",
                "$ref",
                "display",
                "externalId",
                "manager",
                "mustChange",
                "id",
                "meta",
                "schemas",
                "title",
                "name.givenName",
                ENTERPRISE_USER,
                PASSWORD_EXTENSION,
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
            ][..]
        )
        .prop_map(str::to_owned),
        any::<String>(),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A resource read from an entry and written back unchanged changes nothing.
    #[test]
    fn to_resource_then_parse_then_changes_is_empty(e in arb_entry()) {
        let m = mapping();
        let x = UserExtras {
            base_url: BASE.into(),
            manager_id: e.first("manager").map(|_| "boss-id".to_owned()),
            ..UserExtras::default()
        };
        let r = m.to_resource(&e, &x);
        let mut w = m.parse(&r).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Some(dn) = e.first("manager") {
            prop_assert_eq!(w.manager_id.as_deref(), Some("boss-id"));
            w.attrs.insert("manager".into(), vec![dn.to_owned()]);
        }
        prop_assert_eq!(m.changes(&e, &w), vec![], "{}", r);
        prop_assert_eq!(m.rdn_change(&e, &w), None);
    }

    /// Parsing never panics, whatever the JSON.
    #[test]
    fn parse_never_panics(v in arb_json()) {
        let _ = mapping().parse(&v);
        let _ = groups().parse(&v);
        if let Value::Object(mut o) = v {
            o.insert("userName".into(), json!("u"));
            let _ = mapping().parse(&Value::Object(o));
        }
    }

    /// Any value survives the RDN escaping.
    #[test]
    fn rdn_escaping_round_trips(v in any::<String>().prop_filter("non-empty", |s| !s.is_empty())) {
        let dn = format!("uid={},{PEOPLE}", escape_rdn_value(&v));
        prop_assert_eq!(rdn_of(&dn), Some(("uid".to_owned(), v)));
    }
}

// -- lockbridge's LDAP schema -------------------------------------------------------------

fn with_schema() -> UserMapping {
    UserMapping::new(UserMappingSettings {
        lockbridge_schema: true,
        ..UserMappingSettings::default()
    })
    .expect("valid")
}

fn rich_user() -> Value {
    json!({
        "schemas": [CORE_USER, ENTERPRISE_USER],
        "userName": "bjensen",
        "externalId": "00u1esetp0cX1V3XY0h7",
        "name": {
            "givenName": "Barbara", "familyName": "Jensen", "middleName": "Jane",
            "honorificPrefix": "Ms.", "honorificSuffix": "III"
        },
        "nickName": "Babs",
        "profileUrl": "https://login.example.com/bjensen",
        "userType": "Employee",
        "locale": "en-US",
        "timezone": "America/Los_Angeles",
        ENTERPRISE_USER: {"costCenter": "4130", "division": "Theme Park"}
    })
}

#[test]
fn with_lockbridges_schema_every_attribute_has_a_home() {
    let m = with_schema();
    assert!(m.homeless_names().is_empty());
    assert!(m.stores_external_id());
    let w = m.parse(&rich_user()).expect("valid");
    let (_, attrs) = m.new_entry(&w, PEOPLE);
    for (attr, value) in [
        ("lockbridgeExternalId", "00u1esetp0cX1V3XY0h7"),
        ("lockbridgeMiddleName", "Jane"),
        ("lockbridgeHonorificPrefix", "Ms."),
        ("lockbridgeHonorificSuffix", "III"),
        ("lockbridgeNickName", "Babs"),
        ("lockbridgeProfileUrl", "https://login.example.com/bjensen"),
        ("lockbridgeUserType", "Employee"),
        ("lockbridgeLocale", "en-US"),
        ("lockbridgeTimezone", "America/Los_Angeles"),
        ("lockbridgeCostCenter", "4130"),
        ("lockbridgeDivision", "Theme Park"),
    ] {
        assert_eq!(
            new_attr(&attrs, attr),
            Some(vec![value.to_owned()]),
            "{attr}"
        );
    }
    assert_eq!(
        new_attr(&attrs, "objectClass"),
        Some(vec!["inetOrgPerson".to_owned(), SCIM_USER_CLASS.to_owned()]),
        "the auxiliary class comes with the first such value"
    );
    // Read back: every value as sent.
    let mut stored = Entry::new(
        format!("uid=bjensen,{PEOPLE}"),
        attrs.clone().into_iter().chain([(
            "entryUUID".to_owned(),
            vec!["2819c223-7f76-453a-919d-413861904646".to_owned()],
        )]),
    );
    stored.dn = format!("uid=bjensen,{PEOPLE}");
    let r = m.to_resource(&stored, &UserExtras::default());
    let sent = rich_user();
    assert_eq!(r["externalId"], sent["externalId"]);
    for key in ["nickName", "profileUrl", "userType", "locale", "timezone"] {
        assert_eq!(r[key], sent[key], "{key}");
    }
    for key in [
        "middleName",
        "honorificPrefix",
        "honorificSuffix",
        "givenName",
    ] {
        assert_eq!(r["name"][key], sent["name"][key], "{key}");
    }
    assert_eq!(r[ENTERPRISE_USER]["costCenter"], "4130");
    assert_eq!(r[ENTERPRISE_USER]["division"], "Theme Park");

    // An entry made elsewhere gains the class with its first value, and only then.
    let plain = bjensen();
    let mut w = m.parse(&m.to_resource(&plain, &extras())).expect("valid");
    assert!(
        m.changes(&plain, &w)
            .iter()
            .all(|c| !matches!(c, Change::Add(a, _) if a == "objectClass"))
    );
    w.attrs
        .insert("lockbridgenickname".into(), vec!["Babs".into()]);
    let changes = m.changes(&plain, &w);
    assert_eq!(
        changes[0],
        Change::Add("objectClass".into(), vec![SCIM_USER_CLASS.into()])
    );
    assert!(changes.contains(&replace("lockbridgeNickName", &["Babs"])));
}

#[test]
fn without_lockbridges_schema_those_attributes_have_no_home() {
    let m = UserMapping::new(UserMappingSettings::default()).expect("valid");
    assert!(!m.stores_external_id());
    let homeless = m.homeless_names();
    for name in [
        "name.middleName",
        "nickName",
        "profileUrl",
        "userType",
        "locale",
        "timezone",
        "costCenter",
        "division",
    ] {
        assert!(homeless.contains(&name), "{name}: {homeless:?}");
    }
    assert!(m.schema().resolve(&AttrPath::new("nickName")).is_none());
    // Writes of them are ignored; nothing asks for a class the directory lacks.
    let w = m.parse(&rich_user()).expect("valid");
    let (_, attrs) = m.new_entry(&w, PEOPLE);
    assert!(
        attrs.iter().all(|(a, _)| !a.starts_with("lockbridge")),
        "{attrs:?}"
    );
    assert_eq!(
        new_attr(&attrs, "objectClass"),
        Some(vec!["inetOrgPerson".to_owned()])
    );
    // Filtering on them says why it cannot.
    let err = to_ldap(
        &parse_filter(r#"nickName eq "Babs""#).expect("filter"),
        m.filter_mapping(),
    )
    .expect_err("not stored");
    assert!(
        err.to_string().contains("lockbridge's LDAP schema"),
        "{err}"
    );
    // An override gives an attribute a home without lockbridge's schema.
    let m = UserMapping::new(UserMappingSettings {
        overrides: BTreeMap::from([("nickName".into(), "description".into())]),
        ..UserMappingSettings::default()
    })
    .expect("valid");
    assert!(!m.homeless_names().contains(&"nickName"));
    let w = m.parse(&rich_user()).expect("valid");
    let (_, attrs) = m.new_entry(&w, PEOPLE);
    assert_eq!(new_attr(&attrs, "description"), Some(vec!["Babs".into()]));
}

#[test]
fn groups_keep_external_id_in_lockbridges_schema() {
    let g = GroupMapping::new(GroupMappingSettings {
        lockbridge_schema: true,
        ..GroupMappingSettings::default()
    })
    .expect("valid");
    assert!(g.stores_external_id());
    let w = g
        .parse(&json!({"displayName": "Tour Guides", "externalId": "grp-1"}))
        .expect("valid");
    let (_, attrs) = g.new_entry(&w, &[], "ou=groups,dc=example,dc=org");
    assert_eq!(
        new_attr(&attrs, EXTERNAL_ID_ATTRIBUTE),
        Some(vec!["grp-1".into()])
    );
    assert!(
        new_attr(&attrs, "objectClass")
            .unwrap_or_default()
            .contains(&SCIM_GROUP_CLASS.to_owned())
    );
    let without = GroupMapping::new(GroupMappingSettings::default()).expect("valid");
    assert!(!without.stores_external_id());
}

/// A user with a value of every multi-valued attribute kept as JSON.
fn multi_valued_user() -> Value {
    json!({
        "userName": "bjensen",
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": true},
            {"value": "babs@jensen.org", "type": "Home"},
            {"value": "babs@jensen.ORG", "type": "home"},
            {"value": "b\"j\\@x", "type": "other"},
            {"value": "ignored@x", "type": "pigeon"}
        ],
        "phoneNumbers": [
            {"value": "555-1234", "type": "work"},
            {"value": "555-9999", "type": "other"}
        ],
        "ims": [{"value": "babs@xmpp.example.com", "type": "xmpp", "primary": true}],
        "photos": [
            {"value": "https://photos.example.com/bjensen.jpg", "type": "photo"},
            {"value": "https://photos.example.com/bjensen-t.jpg", "type": "thumbnail", "display": "small"}
        ],
        "entitlements": [{"value": "vpn"}, {"value": "Wiki", "display": "Wiki editor", "type": "app"}],
        "roles": [{"value": "Tour guide", "type": "staff"}],
        "x509Certificates": [{"value": "MIIDQzCCAqygAwIBAgICEAAwDQYJKoZIhvcNAQEFBQAw"}]
    })
}

#[test]
fn multi_valued_attributes_inet_org_person_cannot_hold_are_kept_as_json() {
    let m = with_schema();
    let w = m.parse(&multi_valued_user()).expect("valid");
    let (_, attrs) = m.new_entry(&w, PEOPLE);
    let got = |a: &str| new_attr(&attrs, a).unwrap_or_default();
    assert_eq!(got("mail"), ["bjensen@example.com"]);
    // canonical type spelling, keys in order, duplicates (as the directory compares) once
    assert_eq!(
        got("lockbridgeEmail"),
        [
            r#"{"type":"home","value":"babs@jensen.org"}"#,
            r#"{"type":"other","value":"b\"j\\@x"}"#
        ]
    );
    assert_eq!(got("telephoneNumber"), ["555-1234"]);
    assert_eq!(
        got("lockbridgePhoneNumber"),
        [r#"{"type":"other","value":"555-9999"}"#]
    );
    assert_eq!(
        got("lockbridgeIm"),
        [r#"{"primary":true,"type":"xmpp","value":"babs@xmpp.example.com"}"#]
    );
    // The primary work email lives in `mail`: lockbridgePrimary says which it is.
    assert_eq!(
        got("lockbridgePrimary"),
        [r#"{"attribute":"emails","primary":true,"type":"work","value":"bjensen@example.com"}"#]
    );
    assert_eq!(
        got("lockbridgePhoto")[1],
        r#"{"display":"small","type":"thumbnail","value":"https://photos.example.com/bjensen-t.jpg"}"#
    );
    assert_eq!(
        got("lockbridgeEntitlement"),
        [
            r#"{"value":"vpn"}"#,
            r#"{"display":"Wiki editor","type":"app","value":"Wiki"}"#
        ]
    );
    assert_eq!(got("lockbridgeRole").len(), 1);
    assert_eq!(got("lockbridgeX509Certificate").len(), 1);
    assert!(got("objectClass").contains(&SCIM_USER_CLASS.to_owned()));
    assert!(
        m.read_attributes()
            .iter()
            .any(|a| a == "lockbridgeX509Certificate")
    );

    // Read back: what was kept, as sent.
    let stored = Entry::new(
        format!("uid=bjensen,{PEOPLE}"),
        attrs.clone().into_iter().chain([(
            "entryUUID".to_owned(),
            vec!["2819c223-7f76-453a-919d-413861904646".to_owned()],
        )]),
    );
    let r = m.to_resource(&stored, &UserExtras::default());
    assert_eq!(
        r["emails"],
        json!([
            {"value": "bjensen@example.com", "type": "work", "primary": true},
            {"value": "babs@jensen.org", "type": "home"},
            {"value": "b\"j\\@x", "type": "other"}
        ])
    );
    assert_eq!(
        r["phoneNumbers"][1],
        json!({"value": "555-9999", "type": "other"})
    );
    assert_eq!(
        r["ims"],
        json!([{"value": "babs@xmpp.example.com", "type": "xmpp", "primary": true}])
    );
    assert_eq!(
        r["entitlements"],
        json!([{"value": "vpn"}, {"value": "Wiki", "display": "Wiki editor", "type": "app"}])
    );
    assert_eq!(
        r["roles"],
        json!([{"value": "Tour guide", "type": "staff"}])
    );
    // A value written by something else (not such a JSON object) is left out.
    let mut odd = stored.clone();
    odd.attrs
        .insert("lockbridgerole".into(), vec!["admin".into()]);
    assert!(
        m.to_resource(&odd, &UserExtras::default())
            .get("roles")
            .is_none()
    );

    // Writing back what was read changes nothing; dropping a value replaces the set.
    let again = m.parse(&r).expect("valid");
    assert_eq!(m.changes(&stored, &again), []);
    let mut fewer = r.clone();
    fewer["ims"] = json!([]);
    fewer["emails"].as_array_mut().expect("emails").truncate(2);
    let changes = m.changes(&stored, &m.parse(&fewer).expect("valid"));
    assert_eq!(
        changes,
        [
            replace(
                "lockbridgeEmail",
                &[r#"{"type":"home","value":"babs@jensen.org"}"#]
            ),
            replace("lockbridgeIm", &[]),
        ]
    );
}

#[rstest]
#[case(json!([{"value": "not base64!"}]))]
#[case(json!([{"value": "MIID%"}]))]
fn certificates_must_be_base64(#[case] certificates: Value) {
    let e = with_schema()
        .parse(&json!({"userName": "u", "x509Certificates": certificates}))
        .expect_err("refused");
    assert!(e.to_string().contains("base64"), "{e}");
}

#[rstest]
#[case(
    r#"emails[type eq "home" and value eq "a@x"]"#,
    r#"(lockbridgeEmail=*"type":"home","value":"a@x"})"#
)]
#[case(
    r#"emails[type eq "work" or type eq "other"]"#,
    r#"(|(mail=*)(lockbridgeEmail=*"type":"other","value":"*))"#
)]
#[case(
    r#"emails.value co "jensen""#,
    r#"(|(mail=*jensen*)(lockbridgeEmail=*"type":"home","value":"*jensen*"})(lockbridgeEmail=*"type":"other","value":"*jensen*"}))"#
)]
#[case(
    r#"phoneNumbers[type eq "other" and value sw "555"]"#,
    r#"(lockbridgePhoneNumber=*"type":"other","value":"555*"})"#
)]
#[case(
    r#"photos.value ew ".png""#,
    r#"(|(lockbridgePhoto=*"type":"photo","value":"*.png"})(lockbridgePhoto=*"type":"thumbnail","value":"*.png"})(lockbridgePhoto=*"value":"*.png"}))"#
)]
// a canonical type has its own element, so type and value combine exactly
#[case(
    r#"ims[type eq "xmpp" and value eq "a@x"]"#,
    r#"(lockbridgeIm=*"type":"xmpp","value":"a@x"})"#
)]
// any other type can be asked for on its own
#[case(
    r#"entitlements[type eq "app"]"#,
    r#"(lockbridgeEntitlement=*"type":"app","value":"*)"#
)]
#[case(r#"roles pr"#, r#"(lockbridgeRole=*"value":"*)"#)]
// the value is matched as JSON writes it, LDAP-escaped: no way out of the value
#[case(
    r#"entitlements.value eq "a\"}*(x)""#,
    r#"(lockbridgeEntitlement=*"value":"a\5c"}\2a\28x\29"})"#
)]
fn json_kept_values_are_filtered_one_value_at_a_time(#[case] filter: &str, #[case] ldap: &str) {
    let m = with_schema();
    let f = parse_filter(filter).expect(filter);
    assert_eq!(to_ldap(&f, m.filter_mapping()).as_deref(), Ok(ldap));
}

#[rstest]
#[case(
    r#"entitlements[type eq "app" and value eq "x"]"#,
    "cannot be expressed in LDAP"
)]
#[case(r#"ims[type gt "x"]"#, "it would have to hold for one value")]
#[case(r#"roles.display eq "x""#, "roles.display cannot be filtered")]
#[case(r#"entitlements.value gt "x""#, "cannot be expressed in LDAP")]
fn json_kept_values_say_what_cannot_be_filtered(#[case] filter: &str, #[case] reason: &str) {
    let f = parse_filter(filter).expect(filter);
    let e = to_ldap(&f, with_schema().filter_mapping()).expect_err("refused");
    assert!(e.to_string().contains(reason), "{e}");
}

#[test]
fn without_lockbridges_schema_json_kept_values_have_no_home() {
    let m = UserMapping::new(UserMappingSettings::default()).expect("valid");
    let homeless = m.homeless_names();
    for name in [
        "emails of type home and other",
        "phoneNumbers of type other",
        "addresses of type home and other",
        "primary of work emails, phone numbers and the work address",
        "ims",
        "photos",
        "entitlements",
        "roles",
        "x509Certificates",
    ] {
        assert!(homeless.contains(&name), "{name}: {homeless:?}");
    }
    let s = m.schema();
    assert!(s.resolve(&AttrPath::new("ims")).is_none());
    let email_type = s
        .resolve(&AttrPath::new("emails").with_sub_attr("type"))
        .expect("emails.type");
    assert_eq!(email_type.target().canonical_values, ["work"]);
    let w = m.parse(&multi_valued_user()).expect("valid");
    let (_, attrs) = m.new_entry(&w, PEOPLE);
    assert!(
        attrs.iter().all(|(a, _)| !a.starts_with("lockbridge")),
        "{attrs:?}"
    );
    assert_eq!(
        new_attr(&attrs, "mail"),
        Some(vec!["bjensen@example.com".into()])
    );
    assert!(
        to_ldap(&parse_filter("ims pr").expect("filter"), m.filter_mapping()).is_err(),
        "no such attribute"
    );
    assert_eq!(
        to_ldap(
            &parse_filter(r#"emails[type eq "home"]"#).expect("filter"),
            m.filter_mapping()
        )
        .as_deref(),
        Ok("(!(objectClass=*))"),
        "nobody has one"
    );
}

/// `bench/scim.sh` asks the directory, on its raw side, for what lockbridge asks for when
/// it reads a user (the demo's mapping), so the two sides of its ratio make one request.
#[test]
fn the_benchmark_reads_what_a_user_read_reads() {
    let script = include_str!("../../../bench/scim.sh");
    let listed: Vec<&str> = script
        .lines()
        .find_map(|l| l.strip_prefix("ATTRS=${ATTRS:-"))
        .and_then(|l| l.strip_suffix('}'))
        .expect("ATTRS in bench/scim.sh")
        .split(',')
        .collect();
    assert_eq!(listed, *with_schema().read_attributes());
}

/// Which phone number and address is primary is kept for values in inetOrgPerson's
/// attributes too (lockbridgePrimary), read back, and dropped with the value.
#[test]
fn primary_phone_and_address_round_trip_through_lockbridge_primary() {
    let m = with_schema();
    let body = json!({
        "userName": "bjensen",
        "phoneNumbers": [
            {"value": "+1 555 0100", "type": "work"},
            {"value": "+1 555 0199", "type": "Mobile", "primary": true},
            {"value": "+1 555 0111", "type": "pager", "primary": false}
        ],
        "addresses": [{"type": "work", "locality": "Chicago", "primary": "true"}]
    });
    let w = m.parse(&body).expect("valid");
    let (_, attrs) = m.new_entry(&w, PEOPLE);
    assert_eq!(
        new_attr(&attrs, "lockbridgePrimary").unwrap_or_default(),
        [
            r#"{"attribute":"phoneNumbers","primary":true,"type":"mobile","value":"+1 555 0199"}"#,
            r#"{"attribute":"phoneNumbers","primary":false,"type":"pager","value":"+1 555 0111"}"#,
            r#"{"attribute":"addresses","primary":true,"type":"work"}"#
        ]
    );
    assert!(
        new_attr(&attrs, "objectClass")
            .unwrap_or_default()
            .contains(&SCIM_USER_CLASS.to_owned())
    );
    let stored = Entry::new(format!("uid=bjensen,{PEOPLE}"), attrs.clone());
    let r = m.to_resource(&stored, &UserExtras::default());
    assert_eq!(
        r["phoneNumbers"],
        json!([
            {"value": "+1 555 0100", "type": "work"},
            {"value": "+1 555 0199", "type": "mobile", "primary": true},
            {"value": "+1 555 0111", "type": "pager", "primary": false}
        ])
    );
    assert_eq!(r["addresses"][0]["primary"], json!(true), "{r}");
    assert_eq!(m.changes(&stored, &m.parse(&r).expect("valid")), []);

    // The primary number removed: so is its mark.
    let mut fewer = r.clone();
    fewer["phoneNumbers"] = json!([{"value": "+1 555 0100", "type": "work"}]);
    let changes = m.changes(&stored, &m.parse(&fewer).expect("valid"));
    assert!(
        changes.contains(&Change::Replace(
            "lockbridgePrimary".into(),
            vec![r#"{"attribute":"addresses","primary":true,"type":"work"}"#.into()]
        )),
        "{changes:?}"
    );
}

/// RFC 7643 §2.4: at most one value of an attribute is primary.
#[rstest]
#[case::emails(json!({"emails": [
    {"value": "a@example.org", "type": "work", "primary": true},
    {"value": "b@example.org", "type": "home", "primary": true}]}), "emails")]
#[case::addresses(json!({"addresses": [
    {"type": "work", "locality": "A", "primary": true},
    {"type": "home", "locality": "B", "primary": true}]}), "addresses")]
fn two_primary_values_are_refused(#[case] mut body: Value, #[case] what: &str) {
    body["userName"] = json!("bjensen");
    let e = with_schema().parse(&body).expect_err("refused");
    let text = e.to_string();
    assert!(
        matches!(e, ScimError::InvalidValue(_)) && text.contains(what) && text.contains("primary"),
        "{text}"
    );
}

/// Without lockbridge's schema, `primary` has no home outside JSON values: it is not in
/// the schema view and nothing is written for it.
#[test]
fn without_the_schema_primary_is_not_kept() {
    let m = UserMapping::new(UserMappingSettings::default()).expect("valid");
    for attr in ["emails", "phoneNumbers", "addresses"] {
        assert!(
            m.schema()
                .resolve(&AttrPath::new(attr).with_sub_attr("primary"))
                .is_none(),
            "{attr}.primary"
        );
    }
    let w = m
        .parse(&json!({"userName": "b", "emails": [{"value": "a@example.org", "primary": true}]}))
        .expect("valid");
    assert!(!w.attrs.contains_key("lockbridgeprimary"));
    assert!(!m.read_attributes().iter().any(|a| a == "lockbridgePrimary"));
}

/// Addresses of types home and other are kept as JSON in lockbridgeAddress, next to the
/// work address in inetOrgPerson's attributes; other types are not kept.
#[test]
fn home_and_other_addresses_are_kept_as_json() {
    let m = with_schema();
    let body = json!({
        "userName": "bjensen",
        "addresses": [
            {"type": "work", "locality": "Chicago"},
            {"type": "Home", "streetAddress": "1 \"Elm\" St", "locality": "Oak Park",
             "postalCode": "60301", "country": "US", "primary": true},
            {"type": "other", "formatted": "PO Box 7\nChicago"},
            {"type": "vacation", "locality": "Nice"},
            {"type": "home"}
        ]
    });
    let w = m.parse(&body).expect("valid");
    let (_, attrs) = m.new_entry(&w, PEOPLE);
    assert_eq!(
        new_attr(&attrs, "lockbridgeAddress").unwrap_or_default(),
        [
            r#"{"country":"US","locality":"Oak Park","postalCode":"60301","streetAddress":"1 \"Elm\" St","primary":true,"type":"home"}"#,
            r#"{"formatted":"PO Box 7\nChicago","type":"other"}"#
        ]
    );
    assert_eq!(new_attr(&attrs, "l").unwrap_or_default(), ["Chicago"]);
    let stored = Entry::new(format!("uid=bjensen,{PEOPLE}"), attrs.clone());
    let r = m.to_resource(&stored, &UserExtras::default());
    assert_eq!(
        r["addresses"],
        json!([
            {"type": "work", "locality": "Chicago"},
            {"type": "home", "streetAddress": "1 \"Elm\" St", "locality": "Oak Park",
             "postalCode": "60301", "country": "US", "primary": true},
            {"type": "other", "formatted": "PO Box 7\nChicago"}
        ])
    );
    assert_eq!(m.changes(&stored, &m.parse(&r).expect("valid")), []);

    let ldap = |f: &str| to_ldap(&parse_filter(f).expect(f), m.filter_mapping());
    // One assertion holds the part and the type: one address, of that type.
    assert_eq!(
        ldap(r#"addresses[type eq "home" and locality eq "Oak Park"]"#).as_deref(),
        Ok(r#"(lockbridgeAddress=*"locality":"Oak Park"*"type":"home"})"#)
    );
    assert_eq!(
        ldap(r#"addresses[type eq "other" and streetAddress sw "1 \"E"]"#).as_deref(),
        Ok(r#"(lockbridgeAddress=*"streetAddress":"1 \5c"E*"type":"other"})"#)
    );
    // Any address: the work address's attribute or either kind of JSON address.
    assert_eq!(
        ldap(r#"addresses.postalCode eq "60301""#).as_deref(),
        Ok(
            r#"(|(postalCode=60301)(lockbridgeAddress=*"postalCode":"60301"*"type":"home"})(lockbridgeAddress=*"postalCode":"60301"*"type":"other"}))"#
        )
    );
    // `co` and `ew` cannot be kept to one part of the JSON: they narrow the search to the
    // addresses holding the text after the part's key, and each candidate is checked.
    let narrowed = |f: &str| {
        crate::scim::filter::translate(&parse_filter(f).expect(f), m.filter_mapping()).expect(f)
    };
    let co = narrowed(r#"addresses.locality co "Park""#);
    assert!(!co.exact);
    assert_eq!(
        co.ldap,
        r#"(|(l=*Park*)(lockbridgeAddress=*"locality":"*Park*"type":"home"})(lockbridgeAddress=*"locality":"*Park*"type":"other"}))"#
    );
    let ew = narrowed(r#"addresses[type eq "home" and locality ew "Park"]"#);
    assert!(!ew.exact);
    assert_eq!(
        ew.ldap,
        r#"(lockbridgeAddress=*"locality":"*Park"*"type":"home"})"#
    );
    // Negated, a narrowing filter narrows nothing: every user is a candidate.
    let not = narrowed(r#"not (addresses[type eq "home" and locality co "Park"])"#);
    assert_eq!((not.ldap.as_str(), not.exact), ("(objectClass=*)", false));
    // `to_ldap` (exact only) refuses them, saying why.
    let refused = ldap(r#"addresses.locality co "Park""#)
        .expect_err("refused")
        .to_string();
    assert!(refused.contains("only narrow"), "{refused}");
    // An exact part of the filter stays exact.
    assert!(narrowed(r#"addresses.locality eq "Park""#).exact);
}

/// Without lockbridge's schema, only the work address has a home.
#[test]
fn without_the_schema_only_the_work_address_is_kept() {
    let m = UserMapping::new(UserMappingSettings::default()).expect("valid");
    let w = m
        .parse(&json!({"userName": "b", "addresses": [{"type": "home", "locality": "X"}]}))
        .expect("valid");
    assert!(!w.attrs.contains_key("lockbridgeaddress"));
    let kind = m
        .schema()
        .resolve(&AttrPath::new("addresses").with_sub_attr("type"))
        .expect("addresses.type");
    assert_eq!(kind.target().canonical_values, ["work"]);
}

/// `primary` can be filtered: in a JSON value, with its type in the same assertion; for
/// values in inetOrgPerson attributes, on their mark.
#[rstest]
#[case(
    r#"emails[type eq "home" and primary eq true]"#,
    r#"(lockbridgeEmail=*"primary":true,"type":"home","value":"*)"#
)]
#[case(
    r#"emails[type eq "work" and primary eq true]"#,
    r#"(lockbridgePrimary={"attribute":"emails","primary":true,"type":"work"*)"#
)]
#[case(
    r#"phoneNumbers[type eq "mobile" and primary pr]"#,
    r#"(lockbridgePrimary={"attribute":"phoneNumbers","primary":*,"type":"mobile"*)"#
)]
#[case(
    r#"addresses[type eq "home" and primary eq false]"#,
    r#"(lockbridgeAddress=*"primary":false,"type":"home"}*)"#
)]
#[case(
    r#"ims[primary eq true]"#,
    r#"(|(lockbridgeIm=*"primary":true,"type":"aim","value":"*)(lockbridgeIm=*"primary":true,"type":"gtalk","value":"*)(lockbridgeIm=*"primary":true,"type":"icq","value":"*)(lockbridgeIm=*"primary":true,"type":"xmpp","value":"*)(lockbridgeIm=*"primary":true,"type":"msn","value":"*)(lockbridgeIm=*"primary":true,"type":"skype","value":"*)(lockbridgeIm=*"primary":true,"type":"qq","value":"*)(lockbridgeIm=*"primary":true,"type":"yahoo","value":"*)(lockbridgeIm=*"primary":true,*))"#
)]
fn primary_filters(#[case] filter: &str, #[case] ldap: &str) {
    let m = with_schema();
    let f = parse_filter(filter).expect(filter);
    assert_eq!(to_ldap(&f, m.filter_mapping()).as_deref(), Ok(ldap));
}

#[test]
fn primary_compares_with_booleans_only() {
    let m = with_schema();
    let f = parse_filter(r#"emails[type eq "home" and primary eq "yes"]"#).expect("parses");
    let e = to_ldap(&f, m.filter_mapping()).expect_err("refused");
    assert!(e.to_string().contains("eq true"), "{e}");
}

#[test]
fn member_changes_of_a_large_group_keep_one_change_per_entry() {
    // 20,000 members replaced by a list that keeps half, repeats some in another
    // spelling and brings 5,000 new ones (a whole-group PUT from an identity provider).
    let member = |i: usize| format!("uid=user{i:05},ou=people,dc=example,dc=org");
    let stored: Vec<String> = (0..20_000).map(member).collect();
    let stored_refs: Vec<&str> = stored.iter().map(String::as_str).collect();
    let mut target: Vec<String> = (10_000..25_000).map(member).collect();
    target.extend((10_000..10_100).map(|i| member(i).to_uppercase().replace(',', ", ")));
    let changes = groups().member_changes(&group(&stored_refs), &[], &[], Some(&target));
    let (mut added, mut removed) = (0, 0);
    for change in &changes {
        match change {
            Change::Add(a, v) if a == "member" => added += v.len(),
            Change::Delete(a, v) if a == "member" => removed += v.len(),
            other => panic!("unexpected change {other:?}"),
        }
    }
    assert_eq!((added, removed), (5_000, 10_000));

    // Adding 5,000 (some twice, some already members, some also removed) to the same group.
    let mut add: Vec<String> = (19_000..24_000).map(member).collect();
    add.extend((23_000..24_000).map(member));
    let remove: Vec<String> = (23_500..24_000).chain(0..10).map(member).collect();
    let changes = groups().member_changes(&group(&stored_refs), &add, &remove, None);
    assert_eq!(
        changes,
        vec![
            Change::Add("member".into(), (20_000..23_500).map(member).collect()),
            Change::Delete("member".into(), (0..10).map(member).collect()),
        ]
    );
}

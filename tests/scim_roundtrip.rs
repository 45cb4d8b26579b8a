//! Every attribute the service announces in `/Schemas` round-trips, with the demo's
//! default configuration on a directory that has lockbridge's LDAP schema: written by
//! POST it reads back by GET; PATCH add, replace and remove change exactly that value;
//! a filter on it finds the user. The test reads the attribute list from the running
//! service, so an attribute added to the schema is covered without touching the test.

mod harness;

use harness::daemon::{Daemon, Scim, create_token};
use harness::slapd::{Kind, Slapd};
use harness::smtp::MailSink;
use serde_json::{Value, json};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// One writable attribute as announced: where it lives and how to fill it.
#[derive(Debug, Clone)]
struct Announced {
    /// Schema URN (core or an extension).
    urn: String,
    /// Top-level attribute name.
    name: String,
    /// Sub-attribute of a single-valued complex attribute (`name.middleName`).
    sub: Option<String>,
    kind: String,
    multi: bool,
    /// For a multi-valued complex attribute: its `type` canonical values, if any.
    types: Vec<String>,
    /// For a multi-valued complex attribute: the type of its `value` (`string`,
    /// `reference`, `binary`).
    value_kind: String,
}

impl Announced {
    fn path(&self) -> String {
        let local = match &self.sub {
            Some(s) => format!("{}.{s}", self.name),
            None => self.name.clone(),
        };
        if self.urn == USER {
            local
        } else {
            format!("{}:{local}", self.urn)
        }
    }
}

/// Writable attributes of the User resource type, from `/Schemas`.
async fn announced(scim: &Scim) -> Vec<Announced> {
    let (status, body, _) = scim.get("/Schemas").await;
    assert_eq!(status, 200, "{body}");
    let mut out = Vec::new();
    for schema in body["Resources"].as_array().expect("schemas") {
        let urn = schema["id"].as_str().expect("id").to_owned();
        if urn != USER && urn != ENTERPRISE {
            continue;
        }
        for a in schema["attributes"].as_array().expect("attributes") {
            let writable = |a: &Value| a["mutability"] == "readWrite";
            let name = a["name"].as_str().expect("name").to_owned();
            if !writable(a) {
                continue;
            }
            let kind = a["type"].as_str().unwrap_or("string").to_owned();
            let multi = a["multiValued"].as_bool().unwrap_or(false);
            let has_value = a["subAttributes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["name"] == "value");
            // `name` is written part by part; `manager` (a value and a $ref) whole.
            if kind == "complex" && !multi && !has_value {
                for sub in a["subAttributes"].as_array().into_iter().flatten() {
                    if writable(sub) {
                        out.push(Announced {
                            urn: urn.clone(),
                            name: name.clone(),
                            sub: sub["name"].as_str().map(str::to_owned),
                            kind: sub["type"].as_str().unwrap_or("string").to_owned(),
                            multi: false,
                            types: Vec::new(),
                            value_kind: String::new(),
                        });
                    }
                }
                continue;
            }
            let types = a["subAttributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["name"] == "type")
                .and_then(|t| t["canonicalValues"].as_array())
                .map(|v| {
                    v.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let value_kind = a["subAttributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["name"] == "value")
                .and_then(|v| v["type"].as_str())
                .unwrap_or("string")
                .to_owned();
            out.push(Announced {
                urn: urn.clone(),
                name,
                sub: None,
                kind,
                multi,
                types,
                value_kind,
            });
        }
    }
    out
}

/// The JSON a client writes for `a` with value number `n`, and the string a filter
/// compares with.
fn sample(a: &Announced, n: u32, manager_id: &str) -> (Value, String) {
    let text = format!("{}-{n}", a.path().rsplit(':').next().unwrap_or("v"));
    if a.name == "manager" {
        return (json!({ "value": manager_id }), manager_id.to_owned());
    }
    if a.name == "addresses" {
        let street = format!("{n} {text} Street");
        // The work address (inetOrgPerson's attributes) and a home one (JSON).
        return (
            json!([{ "type": "work", "streetAddress": street, "locality": format!("City {n}"),
                     "region": "CA", "postalCode": format!("9{n}000"), "country": "US",
                     "formatted": format!("{n} {text} Street\nCity {n}, CA 9{n}000\nUS") },
                   { "type": "home", "streetAddress": format!("{n} {text} Lane"),
                     "locality": format!("Home City {n}"), "country": "CA", "primary": true }]),
            street,
        );
    }
    if a.multi {
        // One value of each canonical type (every home of the attribute), or one
        // without a type.
        let kinds: Vec<Option<&str>> = if a.types.is_empty() {
            vec![None]
        } else {
            a.types.iter().map(|t| Some(t.as_str())).collect()
        };
        let values: Vec<(Option<&str>, String)> = kinds
            .into_iter()
            .map(|kind| {
                (
                    kind,
                    typed_value(a, &format!("{text}-{}", kind.unwrap_or("x"))),
                )
            })
            .collect();
        let first = values[0].1.clone();
        let items = values
            .into_iter()
            .map(|(kind, value)| match kind {
                Some(k) => json!({ "value": value, "type": k }),
                None => json!({ "value": value }),
            })
            .collect();
        return (Value::Array(items), first);
    }
    match a.kind.as_str() {
        "reference" => {
            let v = format!("https://example.org/{text}");
            (json!(v), v)
        }
        _ => (json!(text), text),
    }
}

/// A value of a multi-valued attribute's `value`, as its type wants it.
fn typed_value(a: &Announced, text: &str) -> String {
    use base64::Engine as _;
    match a.value_kind.as_str() {
        "binary" => base64::engine::general_purpose::STANDARD.encode(text),
        "reference" => format!("https://example.org/{text}"),
        _ if a.name == "emails" => format!("{text}@example.org"),
        _ => text.to_owned(),
    }
}

/// `value` written at `a`'s place in a User body.
fn put_into(body: &mut Value, a: &Announced, value: Value) {
    let container = if a.urn == USER {
        body
    } else {
        body.as_object_mut()
            .expect("object")
            .entry(a.urn.clone())
            .or_insert_with(|| json!({}))
    };
    match &a.sub {
        Some(sub) => {
            let parent = container
                .as_object_mut()
                .expect("object")
                .entry(a.name.clone())
                .or_insert_with(|| json!({}));
            parent[sub.as_str()] = value;
        }
        None => container[a.name.as_str()] = value,
    }
}

/// `a`'s value in a resource as served.
fn read_from<'r>(resource: &'r Value, a: &Announced) -> &'r Value {
    let container = if a.urn == USER {
        resource
    } else {
        &resource[a.urn.as_str()]
    };
    match &a.sub {
        Some(sub) => &container[a.name.as_str()][sub.as_str()],
        None => &container[a.name.as_str()],
    }
}

/// The comparable form of a value: a multi-valued attribute's values in any order (RFC
/// 7643 §2.4: they are unordered, and the directory may return them in its own order), a
/// manager's id.
fn comparable(v: &Value) -> Value {
    match v {
        Value::Array(items) => {
            let mut items: Vec<Value> = items
                .iter()
                .map(|i| match i.get("value") {
                    Some(value) => json!({ "value": value, "type": i["type"] }),
                    None => i.clone(),
                })
                .collect();
            items.sort_by_key(Value::to_string);
            Value::Array(items)
        }
        Value::Object(o) if o.contains_key("value") => o["value"].clone(),
        other => other.clone(),
    }
}

fn base_user(name: &str) -> Value {
    json!({ "schemas": [USER, ENTERPRISE], "userName": name })
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn names_found(scim: &Scim, filter: &str) -> Vec<String> {
    names_listed(scim, filter, "").await
}

/// The userNames of the page `filter` and the other query parameters (`&sortBy=…`) give.
async fn names_listed(scim: &Scim, filter: &str, query: &str) -> Vec<String> {
    let (status, body, _) = scim
        .get(&format!(
            "/Users?filter={}&attributes=userName{query}",
            urlencode(filter)
        ))
        .await;
    assert_eq!(status, 200, "{filter} {query}: {body}");
    body["Resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["userName"].as_str().map(str::to_owned))
        .collect()
}

/// Kinds of value the directory stores but cannot compare: OpenLDAP's core schema gives
/// `facsimileTelephoneNumber` no matching rule.
fn uncomparable(a: &Announced, kind: &str) -> bool {
    a.name == "phoneNumbers" && kind == "fax"
}

/// A filter that can only be answered by comparing such values is refused, saying why.
async fn refused_as_uncomparable(scim: &Scim, filter: &str) {
    let (status, body, _) = scim
        .get(&format!("/Users?filter={}", urlencode(filter)))
        .await;
    assert_eq!(status, 400, "{filter}: {body}");
    assert_eq!(body["scimType"], "invalidFilter", "{filter}: {body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no matching rule")),
        "{filter}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_announced_attribute_round_trips() {
    round_trip_on(Slapd::start()).await;
}

/// The same on 389 Directory Server (lockbridge's schema in its form, `entryusn` as the
/// version, no Assertion control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_announced_attribute_round_trips_on_389ds() {
    round_trip_on(Slapd::start_kind(Kind::Ds389, 0, &[])).await;
}

async fn round_trip_on(slapd: Slapd) {
    let mail = MailSink::start();
    // The harness's configuration sets nothing about SCIM's attributes: the defaults,
    // as the demo runs them.
    let daemon = Daemon::start(&slapd, &mail);
    let token = create_token(&daemon.config_path, "entra", "scim");
    let scim = daemon.scim(&token);
    let attributes = announced(&scim).await;
    let paths: Vec<String> = attributes.iter().map(Announced::path).collect();
    for expected in [
        "addresses",
        "externalId",
        "name.middleName",
        "nickName",
        "profileUrl",
        "userType",
        "locale",
        "timezone",
        "emails",
        &format!("{ENTERPRISE}:costCenter"),
        &format!("{ENTERPRISE}:division"),
    ] {
        assert!(
            paths.iter().any(|p| p == expected) || expected == "externalId",
            "{expected} is announced: {paths:?}"
        );
    }
    let (status, manager, _) = scim.post("/Users", base_user("rt-manager")).await;
    assert_eq!(status, 201, "{manager}");
    let manager_id = manager["id"].as_str().expect("id").to_owned();

    // externalId is a common attribute (RFC 7643 §3.1): not in /Schemas, but it must
    // round-trip too.
    let mut all = attributes.clone();
    all.push(Announced {
        urn: USER.into(),
        name: "externalId".into(),
        sub: None,
        kind: "string".into(),
        multi: false,
        types: Vec::new(),
        value_kind: String::new(),
    });
    let mut checked = Vec::new();
    for (i, a) in all.iter().enumerate() {
        // userName names the entry (renames are tested in scim_api), active and the
        // password extension's mustChange are booleans with their own tests.
        if a.name == "userName" || a.kind == "boolean" {
            continue;
        }
        let path = a.path();
        let user = format!("rt-{i}");
        let (first, first_text) = sample(a, 1, &manager_id);
        let mut body = base_user(&user);
        put_into(&mut body, a, first.clone());
        let (status, created, _) = scim.post("/Users", body).await;
        assert_eq!(status, 201, "{path}: {created}");
        let id = created["id"].as_str().expect("id").to_owned();
        let (status, got, _) = scim.get(&format!("/Users/{id}")).await;
        assert_eq!(status, 200, "{path}: {got}");
        assert_eq!(
            comparable(read_from(&got, a)),
            comparable(&first),
            "{path}: POST then GET"
        );

        // A filter on it finds the user (and only users holding the value).
        let filter = if a.name == "addresses" {
            format!("addresses[type eq \"work\" and streetAddress eq \"{first_text}\"]")
        } else if a.multi {
            format!("{}.value eq \"{first_text}\"", a.name)
        } else if a.name == "manager" {
            format!("{ENTERPRISE}:manager.value eq \"{first_text}\"")
        } else {
            format!("{path} eq \"{first_text}\"")
        };
        assert_eq!(
            names_found(&scim, &filter).await,
            vec![user.clone()],
            "{filter}"
        );
        if a.name == "addresses" {
            for (filter, found) in [
                (
                    "addresses[type eq \"home\" and locality eq \"Home City 1\"]",
                    true,
                ),
                (
                    "addresses[type eq \"other\" and locality eq \"Home City 1\"]",
                    false,
                ),
                (
                    "addresses[type eq \"work\" and locality eq \"Home City 1\"]",
                    false,
                ),
                ("addresses.locality sw \"Home City\"", true),
                // `co` and `ew` narrow the search, then each candidate is checked: "Lane"
                // follows the home locality in its JSON (in streetAddress) but is not in it.
                ("addresses.locality co \"me Cit\"", true),
                ("addresses.locality co \"Lane\"", false),
                (
                    "addresses[type eq \"home\" and locality ew \"City 1\"]",
                    true,
                ),
                ("addresses.locality ew \"Lane\"", false),
                ("not (addresses.locality co \"Lane\")", true),
            ] {
                let names = names_found(&scim, filter).await;
                assert_eq!(names.contains(&user), found, "{filter}: {names:?}");
            }
        }
        // ... and each type of value is found as that type, and only as that type.
        if a.multi && a.name != "addresses" {
            let values = first.as_array().expect("values");
            for (v, other) in values.iter().zip(values.iter().cycle().skip(1)) {
                let (Some(kind), Some(value)) = (v["type"].as_str(), v["value"].as_str()) else {
                    continue;
                };
                let typed =
                    |kind: &str| format!("{}[type eq \"{kind}\" and value eq \"{value}\"]", a.name);
                if uncomparable(a, kind) {
                    refused_as_uncomparable(&scim, &typed(kind)).await;
                    continue;
                }
                let filter = typed(kind);
                assert_eq!(
                    names_found(&scim, &filter).await,
                    vec![user.clone()],
                    "{filter}"
                );
                if other != v
                    && let Some(other_kind) = other["type"].as_str()
                    && !uncomparable(a, other_kind)
                {
                    let filter = typed(other_kind);
                    assert!(names_found(&scim, &filter).await.is_empty(), "{filter}");
                }
            }
        }

        // replace: exactly that value changes.
        let (second, _) = sample(a, 2, &manager_id);
        let patch = |ops: Value| json!({ "schemas": [PATCH_OP], "Operations": ops });
        let (status, replaced, _) = scim
            .patch(
                &format!("/Users/{id}"),
                patch(json!([{ "op": "replace", "path": path, "value": second }])),
            )
            .await;
        assert_eq!(status, 200, "{path}: {replaced}");
        assert_eq!(
            comparable(read_from(&replaced, a)),
            comparable(&second),
            "{path}: replace"
        );
        let mut before = got.clone();
        let mut after = replaced.clone();
        for r in [&mut before, &mut after] {
            r.as_object_mut().expect("object").remove("meta");
            put_into(r, a, Value::Null);
        }
        assert_eq!(before, after, "{path}: replace changed nothing else");

        // remove, then add.
        if a.name != "name" {
            let (status, removed, _) = scim
                .patch(
                    &format!("/Users/{id}"),
                    patch(json!([{ "op": "remove", "path": path }])),
                )
                .await;
            assert_eq!(status, 200, "{path}: {removed}");
            assert!(
                read_from(&removed, a).is_null(),
                "{path}: remove: {removed}"
            );
            let (status, added, _) = scim
                .patch(
                    &format!("/Users/{id}"),
                    patch(json!([{ "op": "add", "path": path, "value": first }])),
                )
                .await;
            assert_eq!(status, 200, "{path}: {added}");
            assert_eq!(
                comparable(read_from(&added, a)),
                comparable(&first),
                "{path}: add"
            );
        }
        let (status, _, _) = scim.delete(&format!("/Users/{id}")).await;
        assert_eq!(status, 204, "{path}");
        checked.push(path);
    }
    assert!(checked.len() >= 20, "{checked:?}");

    // Entra ID's default mappings write the work address and a fax number part by part.
    let (status, created, _) = scim.post("/Users", base_user("rt-entra")).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let ops = json!([
        {"op": "Add", "path": "addresses[type eq \"work\"].streetAddress", "value": "1 Lakeshore Dr"},
        {"op": "Add", "path": "addresses[type eq \"work\"].locality", "value": "Chicago"},
        {"op": "Add", "path": "addresses[type eq \"work\"].postalCode", "value": "60601"},
        {"op": "Add", "path": "phoneNumbers[type eq \"fax\"].value", "value": "+1 312 555 0100"}
    ]);
    let (status, patched, _) = scim
        .patch(
            &format!("/Users/{id}"),
            json!({ "schemas": [PATCH_OP], "Operations": ops }),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        patched["addresses"],
        json!([{"type": "work", "streetAddress": "1 Lakeshore Dr", "locality": "Chicago", "postalCode": "60601"}])
    );
    assert!(
        patched["phoneNumbers"]
            .as_array()
            .is_some_and(|p| p.contains(&json!({"type": "fax", "value": "+1 312 555 0100"}))),
        "{patched}"
    );
    assert_eq!(
        slapd.ldapsearch_attr(&slapd.user_dn("rt-entra"), "l"),
        vec!["Chicago"]
    );
}

/// `sortBy` on values kept as JSON (the directory cannot sort by them): lockbridge orders
/// the users by the primary value, else the first (RFC 7644 §3.4.2.3), users without one
/// last, and pages the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_sort_by_values_kept_as_json() {
    let slapd = Slapd::start();
    let mail = MailSink::start();
    let daemon = Daemon::start(&slapd, &mail);
    let token = create_token(&daemon.config_path, "entra", "scim");
    let scim = daemon.scim(&token);
    for (name, emails, locality) in [
        (
            "sort-a",
            json!([{"value": "zz@work.example", "type": "work"},
                   {"value": "bb@home.example", "type": "home", "primary": true}]),
            Some("Bergen"),
        ),
        (
            "sort-b",
            json!([{"value": "aa@home.example", "type": "home"}]),
            Some("Aachen"),
        ),
        ("sort-c", json!([]), None),
    ] {
        let mut body = base_user(name);
        body["emails"] = emails;
        if let Some(l) = locality {
            body["addresses"] = json!([{"type": "home", "locality": l}]);
        }
        let (status, created, _) = scim.post("/Users", body).await;
        assert_eq!(status, 201, "{created}");
    }
    let page = async |query: &str| {
        names_listed(&scim, "userName sw \"sort-\"", &format!("&{query}")).await
    };
    assert_eq!(page("sortBy=emails").await, ["sort-b", "sort-a", "sort-c"]);
    assert_eq!(
        page("sortBy=emails&sortOrder=descending").await,
        ["sort-c", "sort-a", "sort-b"]
    );
    assert_eq!(
        page("sortBy=emails.value&startIndex=2&count=1").await,
        ["sort-a"]
    );
    assert_eq!(
        page("sortBy=addresses.locality").await,
        ["sort-b", "sort-a", "sort-c"]
    );
    let (status, body, _) = scim.get("/Users?sortBy=password").await;
    assert_eq!(status, 400, "{body}");
}

//! `POST /Bulk` (RFC 7644 §3.7): many operations in one request.
//!
//! Each operation is carried out by the same code as the request it stands for (and
//! audited as that request would be): POST, PUT and PATCH and DELETE of Users and
//! Groups. An operation may refer to a resource created by another one of the same
//! request as `bulkId:<id>`, in its `path` or anywhere in its `data` (a group's member,
//! a user's manager); operations run in order, except that one referring to a `bulkId`
//! waits for the operation that creates it. A reference that cannot be resolved (no such
//! `bulkId`, its operation failed, or a cycle) fails that operation with 409. With
//! `failOnErrors: n`, processing stops after the `n`th failure; the operations not run
//! are left out of the response. Limits are [`MAX_OPERATIONS`] operations and the SCIM
//! body limit ([`MAX_PAYLOAD_BYTES`]), both announced in `/ServiceProviderConfig`.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::error::ScimError;
use super::model::{PatchRequest, get_ci, scrub_secrets};
use super::service::{Caller, Kind, ScimService, Shape};

/// The Bulk request and response message URNs (RFC 7644 §8.2).
pub const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
pub const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";

/// Most operations in one Bulk request.
pub const MAX_OPERATIONS: usize = 1000;
/// Largest Bulk request body (the SCIM body limit).
pub const MAX_PAYLOAD_BYTES: usize = super::routes::SCIM_BODY_LIMIT_BYTES;

/// One operation of a Bulk request, as sent.
#[derive(Debug)]
struct Operation {
    method: String,
    bulk_id: Option<String>,
    version: Option<String>,
    path: String,
    data: Option<Value>,
}

impl Drop for Operation {
    /// An operation's data may hold a password: overwrite it.
    fn drop(&mut self) {
        if let Some(d) = self.data.as_mut() {
            scrub_secrets(d);
        }
    }
}

/// A Bulk request, checked: the operations and `failOnErrors`.
#[derive(Debug)]
pub struct BulkRequest {
    operations: Vec<Operation>,
    fail_on_errors: Option<usize>,
}

impl BulkRequest {
    /// Reads a Bulk request body: `schemas` must name the BulkRequest URN; each
    /// operation needs a `method` and a `path`, `data` for POST, PUT and PATCH, and a
    /// `bulkId` for POST (RFC 7644 §3.7); at most [`MAX_OPERATIONS`] operations.
    pub fn from_json(body: &Value) -> Result<Self, ScimError> {
        let Value::Object(map) = body else {
            return Err(ScimError::InvalidSyntax(
                "a Bulk request must be a JSON object with \"schemas\" and \"Operations\"".into(),
            ));
        };
        let has_schema = get_ci(map, "schemas")
            .and_then(Value::as_array)
            .is_some_and(|s| {
                s.iter()
                    .filter_map(Value::as_str)
                    .any(|u| u.eq_ignore_ascii_case(BULK_REQUEST))
            });
        if !has_schema {
            return Err(ScimError::InvalidSyntax(format!(
                "\"schemas\" must contain \"{BULK_REQUEST}\""
            )));
        }
        let fail_on_errors = match get_ci(map, "failOnErrors") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .filter(|n| *n >= 1)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        ScimError::InvalidValue(
                            "failOnErrors must be a whole number of at least 1".into(),
                        )
                    })?,
            ),
        };
        let Some(Value::Array(ops)) = get_ci(map, "Operations") else {
            return Err(ScimError::InvalidSyntax(
                "\"Operations\" must be an array of operations".into(),
            ));
        };
        if ops.len() > MAX_OPERATIONS {
            return Err(ScimError::PayloadTooLarge);
        }
        let mut operations = Vec::with_capacity(ops.len());
        let mut bulk_ids: Vec<String> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let n = i + 1;
            let Value::Object(o) = op else {
                return Err(ScimError::InvalidSyntax(format!(
                    "operation {n} is not a JSON object"
                )));
            };
            let text = |key: &str| -> Result<Option<String>, ScimError> {
                match get_ci(o, key) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => Err(ScimError::InvalidSyntax(format!(
                        "operation {n}: \"{key}\" must be a string"
                    ))),
                }
            };
            let method = text("method")?
                .map(|m| m.to_ascii_uppercase())
                .filter(|m| ["POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()))
                .ok_or_else(|| {
                    ScimError::InvalidSyntax(format!(
                        "operation {n}: \"method\" must be POST, PUT, PATCH or DELETE"
                    ))
                })?;
            let path = text("path")?.ok_or_else(|| {
                ScimError::InvalidSyntax(format!("operation {n}: \"path\" is missing"))
            })?;
            let bulk_id = text("bulkId")?;
            if method == "POST" && bulk_id.is_none() {
                return Err(ScimError::InvalidSyntax(format!(
                    "operation {n}: a POST needs a \"bulkId\" (RFC 7644 section 3.7)"
                )));
            }
            if let Some(b) = &bulk_id {
                if b.is_empty() || bulk_ids.contains(b) {
                    return Err(ScimError::InvalidValue(format!(
                        "operation {n}: bulkId \"{}\" is empty or used twice",
                        super::model::truncate(b)
                    )));
                }
                bulk_ids.push(b.clone());
            }
            let data = get_ci(o, "data").filter(|d| !d.is_null()).cloned();
            if method != "DELETE" && data.is_none() {
                return Err(ScimError::InvalidSyntax(format!(
                    "operation {n}: a {method} needs \"data\""
                )));
            }
            operations.push(Operation {
                method,
                bulk_id,
                version: text("version")?,
                path,
                data,
            });
        }
        Ok(Self {
            operations,
            fail_on_errors,
        })
    }
}

/// What one operation did, for the response.
struct Outcome {
    location: Option<String>,
    version: Option<String>,
    status: u16,
    error: Option<ScimError>,
    /// The id of a created resource (for `bulkId` references).
    created_id: Option<String>,
}

impl Outcome {
    fn failed(e: ScimError) -> Self {
        Self {
            location: None,
            version: None,
            status: e.status(),
            error: Some(e),
            created_id: None,
        }
    }
}

/// Every `bulkId:<id>` a value refers to, in its strings.
fn references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            if let Some(id) = s.strip_prefix("bulkId:") {
                out.push(id.to_owned());
            }
        }
        Value::Array(items) => items.iter().for_each(|i| references(i, out)),
        Value::Object(map) => map.values().for_each(|i| references(i, out)),
        _ => {}
    }
}

/// The `bulkId` a path refers to (`/Users/bulkId:u1`).
fn path_reference(path: &str) -> Option<String> {
    path.rsplit('/')
        .next()
        .and_then(|last| last.strip_prefix("bulkId:"))
        .map(str::to_owned)
}

/// `path` with its `bulkId:<id>` segment replaced by the resource id it stands for.
fn resolve_path(path: &str, ids: &HashMap<String, String>) -> String {
    match (path.rsplit_once('/'), path_reference(path)) {
        (Some((head, _)), Some(b)) => match ids.get(&b) {
            Some(id) => format!("{head}/{id}"),
            None => path.to_owned(),
        },
        _ => path.to_owned(),
    }
}

/// `v` with every `bulkId:<id>` replaced by the resource id it stands for.
fn resolve(v: &mut Value, ids: &HashMap<String, String>) {
    match v {
        Value::String(s) => {
            if let Some(id) = s.strip_prefix("bulkId:").and_then(|b| ids.get(b)) {
                *s = id.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| resolve(i, ids)),
        Value::Object(map) => map.values_mut().for_each(|i| resolve(i, ids)),
        _ => {}
    }
}

/// `/Users` or `/Groups`, optionally with an id: (kind, id).
fn target(path: &str) -> Result<(Kind, Option<String>), ScimError> {
    let trimmed = path.trim().trim_start_matches('/');
    let (collection, id) = match trimmed.split_once('/') {
        Some((c, id)) => (c, Some(id.to_owned())),
        None => (trimmed, None),
    };
    let kind = if collection.eq_ignore_ascii_case("Users") {
        Kind::User
    } else if collection.eq_ignore_ascii_case("Groups") {
        Kind::Group
    } else {
        return Err(ScimError::InvalidPath(format!(
            "\"{}\" is not /Users, /Groups or one of their resources",
            super::model::truncate(path)
        )));
    };
    Ok((kind, id.filter(|i| !i.is_empty())))
}

/// Runs the request and returns the BulkResponse.
pub async fn run(service: &ScimService, caller: &Caller, request: BulkRequest) -> Value {
    let n = request.operations.len();
    let mut outcomes: Vec<Option<Outcome>> = (0..n).map(|_| None).collect();
    let mut created: HashMap<String, String> = HashMap::new();
    let mut failed_bulk_ids: Vec<String> = Vec::new();
    let mut errors = 0usize;
    let refs: Vec<Vec<String>> = request
        .operations
        .iter()
        .map(|op| {
            let mut r: Vec<String> = path_reference(&op.path).into_iter().collect();
            if let Some(d) = &op.data {
                references(d, &mut r);
            }
            r
        })
        .collect();
    let limit_reached = |errors: usize| request.fail_on_errors.is_some_and(|limit| errors >= limit);
    'passes: loop {
        let mut progressed = false;
        for i in 0..n {
            if outcomes[i].is_some() {
                continue;
            }
            if limit_reached(errors) {
                break 'passes;
            }
            let op = &request.operations[i];
            let unresolved: Vec<&String> = refs[i]
                .iter()
                .filter(|r| !created.contains_key(*r))
                .collect();
            if let Some(bad) = unresolved.iter().find(|r| {
                failed_bulk_ids.contains(r)
                    || !request
                        .operations
                        .iter()
                        .any(|o| o.bulk_id.as_deref() == Some(r.as_str()))
            }) {
                outcomes[i] = Some(Outcome::failed(ScimError::UnresolvedBulkId(format!(
                    "bulkId \"{}\" names no operation of this request that succeeded",
                    super::model::truncate(bad)
                ))));
                errors += 1;
                if let Some(b) = &op.bulk_id {
                    failed_bulk_ids.push(b.clone());
                }
                progressed = true;
                continue;
            }
            if !unresolved.is_empty() {
                continue;
            }
            let outcome = run_one(service, caller, op, &created).await;
            if outcome.error.is_some() {
                errors += 1;
                if let Some(b) = &op.bulk_id {
                    failed_bulk_ids.push(b.clone());
                }
            } else if let (Some(b), Some(id)) = (&op.bulk_id, &outcome.created_id) {
                created.insert(b.clone(), id.clone());
            }
            outcomes[i] = Some(outcome);
            progressed = true;
        }
        if !progressed {
            break;
        }
    }
    // What is left waits on a cycle of references (unless failOnErrors stopped the run).
    if !limit_reached(errors) {
        for o in outcomes.iter_mut().filter(|o| o.is_none()) {
            *o = Some(Outcome::failed(ScimError::UnresolvedBulkId(
                "the bulkId references of this operation form a cycle".into(),
            )));
        }
    }
    let operations: Vec<Value> = request
        .operations
        .iter()
        .zip(outcomes)
        .filter_map(|(op, outcome)| {
            let outcome = outcome?;
            let mut o = Map::new();
            o.insert("method".into(), op.method.clone().into());
            if let Some(b) = &op.bulk_id {
                o.insert("bulkId".into(), b.clone().into());
            }
            if let Some(l) = outcome.location {
                o.insert("location".into(), l.into());
            }
            if let Some(v) = outcome.version {
                o.insert("version".into(), v.into());
            }
            o.insert("status".into(), outcome.status.to_string().into());
            if let Some(e) = outcome.error {
                o.insert("response".into(), e.body());
            }
            Some(Value::Object(o))
        })
        .collect();
    json!({ "schemas": [BULK_RESPONSE], "Operations": operations })
}

async fn run_one(
    service: &ScimService,
    caller: &Caller,
    op: &Operation,
    created: &HashMap<String, String>,
) -> Outcome {
    let path = resolve_path(&op.path, created);
    let mut data = op.data.clone().unwrap_or(Value::Null);
    resolve(&mut data, created);
    let result = async {
        let (kind, id) = target(&path)?;
        let if_match = op.version.as_deref();
        let need_id = || {
            id.clone().ok_or_else(|| {
                ScimError::InvalidPath(format!(
                    "a {} needs a resource path such as /Users/<id>",
                    op.method
                ))
            })
        };
        match op.method.as_str() {
            "POST" => {
                if id.is_some() {
                    return Err(ScimError::InvalidPath(
                        "a POST goes to /Users or /Groups".into(),
                    ));
                }
                let served = match kind {
                    Kind::User => service.create_user(caller, &data).await?,
                    Kind::Group => {
                        service
                            .create_group(caller, &data, &Shape::without_members())
                            .await?
                    }
                };
                Ok((201, Some(served)))
            }
            "PUT" => {
                let id = need_id()?;
                let served = match kind {
                    Kind::User => service.replace_user(caller, &id, &data, if_match).await?,
                    Kind::Group => {
                        service
                            .replace_group(caller, &id, &data, if_match, &Shape::without_members())
                            .await?
                    }
                };
                Ok((200, Some(served)))
            }
            "PATCH" => {
                let id = need_id()?;
                let patch = PatchRequest::from_json(&data)?;
                let served = match kind {
                    Kind::User => {
                        service
                            .patch_user(caller, &id, &patch, if_match, false)
                            .await?
                    }
                    Kind::Group => {
                        service
                            .patch_group(
                                caller,
                                &id,
                                &patch,
                                if_match,
                                &Shape::without_members(),
                                false,
                            )
                            .await?
                    }
                };
                Ok((200, served))
            }
            _ => {
                let id = need_id()?;
                match kind {
                    Kind::User => service.delete_user(caller, &id, if_match).await?,
                    Kind::Group => service.delete_group(caller, &id, if_match).await?,
                }
                Ok((204, None))
            }
        }
    }
    .await;
    scrub_secrets(&mut data);
    // PATCH runs with `minimal` off: a resource (location, version) always comes back.
    match result {
        Ok((status, served)) => Outcome {
            location: served.as_ref().map(|s| s.location.clone()).or_else(|| {
                (status == 204).then(|| {
                    format!(
                        "{}/{}",
                        service.settings().base_url,
                        path.trim_start_matches('/')
                    )
                })
            }),
            version: served.as_ref().and_then(|s| s.version.clone()),
            created_id: (status == 201)
                .then(|| {
                    served
                        .as_ref()
                        .and_then(|s| s.resource.get("id"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .flatten(),
            status,
            error: None,
        },
        Err(e) => Outcome::failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ops: Value) -> Result<BulkRequest, ScimError> {
        BulkRequest::from_json(&json!({"schemas": [BULK_REQUEST], "Operations": ops}))
    }

    #[test]
    fn requests_are_checked_before_anything_runs() {
        assert!(
            req(json!([{"method": "POST", "path": "/Users", "bulkId": "a", "data": {}}])).is_ok()
        );
        for (ops, why) in [
            (
                json!([{"method": "POST", "path": "/Users", "data": {}}]),
                "bulkId",
            ),
            (json!([{"method": "GET", "path": "/Users/x"}]), "method"),
            (json!([{"method": "PATCH", "path": "/Users/x"}]), "data"),
            (json!([{"method": "DELETE"}]), "path"),
            (
                json!([
                    {"method": "POST", "path": "/Users", "bulkId": "a", "data": {}},
                    {"method": "POST", "path": "/Groups", "bulkId": "a", "data": {}}
                ]),
                "used twice",
            ),
        ] {
            let e = req(ops).expect_err(why);
            assert!(e.to_string().contains(why), "{why}: {e}");
        }
        let too_many: Vec<Value> = (0..=MAX_OPERATIONS)
            .map(|i| json!({"method": "DELETE", "path": format!("/Users/{i}")}))
            .collect();
        assert_eq!(
            req(Value::Array(too_many)).expect_err("limit").status(),
            413
        );
        let e = BulkRequest::from_json(&json!({"Operations": []})).expect_err("schemas");
        assert_eq!(e.scim_type(), Some("invalidSyntax"));
    }

    #[test]
    fn bulk_ids_are_found_and_replaced_anywhere() {
        let data = json!({"members": [{"value": "bulkId:u1"}, {"value": "x"}], "manager": {"value": "bulkId:u2"}});
        let mut found = Vec::new();
        references(&data, &mut found);
        found.sort();
        assert_eq!(found, vec!["u1".to_owned(), "u2".to_owned()]);
        assert_eq!(path_reference("/Users/bulkId:u3").as_deref(), Some("u3"));
        assert_eq!(
            resolve_path(
                "/Users/bulkId:u1",
                &HashMap::from([("u1".into(), "id-1".into())])
            ),
            "/Users/id-1"
        );
        let mut data = data;
        resolve(&mut data, &HashMap::from([("u1".into(), "id-1".into())]));
        assert_eq!(data["members"][0]["value"], "id-1");
        assert_eq!(data["manager"]["value"], "bulkId:u2", "unknown ones stay");
        assert_eq!(target("/Users/abc").expect("ok").1.as_deref(), Some("abc"));
        assert!(matches!(
            target("/Groups").expect("ok"),
            (Kind::Group, None)
        ));
        assert!(target("/Schemas").is_err());
    }
}

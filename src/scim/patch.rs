//! PATCH (RFC 7644 §3.5.2).
//!
//! Users: the service reads the entry, builds the resource
//! ([`super::resource::UserMapping::to_resource`]), applies the operations to that JSON
//! with [`apply_user_patch`], reads the result back
//! ([`super::resource::UserMapping::parse`] in replace mode) and writes only the
//! differences in one LDAP modify. A password in the operations comes back in
//! [`PatchOutcome::password`], never in the JSON.
//!
//! Groups: members can be many, so [`parse_group_patch`] turns the operations into
//! member ids to add, remove or set ([`GroupPatch`]) without the group's member list; the
//! service resolves the ids and calls
//! [`super::resource::GroupMapping::member_changes`].
//!
//! What real clients send, and what happens:
//!
//! - `op` in any case (`Add`, `Replace`: Entra ID); paths with a URN
//!   (`urn:…:enterprise:2.0:User:manager`), a sub-attribute, or a value filter
//!   (`emails[type eq "work"].value`, `members[value eq "id"]`);
//! - no `path`, with an object of attribute paths as `value` (Entra ID:
//!   `{"name.givenName": "x", "urn:…:enterprise:2.0:User:department": "y"}`; Okta:
//!   `{"active": false}`, `{"password": "…"}`, `{"id": "…", "displayName": "…"}`);
//! - the manager as an id string, an object, or a one-element array;
//! - booleans as `"True"`/`"False"`;
//! - `replace` of `emails[type eq "work"].value` when there is no work address: the
//!   address is added (the value filter's `eq` conditions become its sub-attributes);
//! - `remove` of something absent, of a non-member, or with a value filter that selects
//!   nothing: success, as clients expect;
//! - attributes the resource type does not have (Entra ID's `addresses`, fax numbers):
//!   ignored like in a POST body, so provisioning of everything else goes on;
//! - read-only attributes (`id`, `meta`, `groups`, computed password facts) may be
//!   "changed" to their current value; any other change is a `mutability` error.
//!   Read-only sub-attributes a client echoes (`manager.$ref`, `members.display`) are
//!   ignored.

use serde_json::{Map, Value};

use super::error::ScimError;
use super::filter::{AttrPath, CompValue, CompareOp, Filter, PatchPath, evaluate, parse_path};
use super::model::{PatchOpKind, PatchRequest, get_ci, key_ci, truncate};
use super::resource::member_ids;
use super::schema::{AttrType, Attribute, Mutability, ResourceSchema};
use crate::types::Secret;

/// What a PATCH did to a resource's JSON.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatchOutcome {
    /// A new password from a `password` operation (never stored in the JSON).
    pub password: Option<Secret>,
    /// Whether the JSON changed (or a password was given).
    pub changed: bool,
}

/// One operation with its path parsed; operations without a path are expanded into one
/// per attribute first.
struct Op {
    kind: PatchOpKind,
    path: PatchPath,
    value: Option<Value>,
    /// 1-based index of the operation in the request, for messages.
    n: usize,
}

/// Apply a PATCH request to a User resource (`resource` as
/// [`super::resource::UserMapping::to_resource`] builds it). Operations apply in order;
/// on error the resource may be partly changed (the service discards it).
pub fn apply_user_patch(
    resource: &mut Value,
    req: &PatchRequest,
    schema: &ResourceSchema,
) -> Result<PatchOutcome, ScimError> {
    apply_patch(resource, req, schema)
}

/// Apply a PATCH request to any resource's JSON (see [`apply_user_patch`]).
pub fn apply_patch(
    resource: &mut Value,
    req: &PatchRequest,
    schema: &ResourceSchema,
) -> Result<PatchOutcome, ScimError> {
    let ops = expand(req, schema)?;
    apply_ops(resource, &ops, schema)
}

fn apply_ops(
    resource: &mut Value,
    ops: &[Op],
    schema: &ResourceSchema,
) -> Result<PatchOutcome, ScimError> {
    let Value::Object(map) = resource else {
        return Err(ScimError::Internal(
            "the resource to patch is not a JSON object".into(),
        ));
    };
    let before = map.clone();
    let mut outcome = PatchOutcome::default();
    for op in ops {
        let prior = map.clone();
        apply_one(map, op, schema, &mut outcome)?;
        demote_former_primaries(&prior, map);
    }
    outcome.changed = outcome.password.is_some() || norm_map(&before) != norm_map(map);
    Ok(outcome)
}

/// RFC 7644 §3.5.2: "If a value is set to primary, the service provider SHALL
/// automatically set 'primary' to false for any other values": where an operation left
/// two values of an attribute marked primary, the one that was primary before it is no
/// longer. (Values added whole are handled as they are added, in `add_element`; this
/// covers a value path setting `primary` on a value already there.)
fn demote_former_primaries(prior: &Map<String, Value>, map: &mut Map<String, Value>) {
    let is_primary = |v: &Value| v.get("primary") == Some(&Value::Bool(true));
    let without_primary = |v: &Value| {
        let mut v = v.clone();
        if let Value::Object(o) = &mut v {
            o.remove("primary");
        }
        v
    };
    for (name, value) in map.iter_mut() {
        let Value::Array(items) = value else {
            continue;
        };
        if items.iter().filter(|v| is_primary(v)).count() < 2 {
            continue;
        }
        let former: Vec<Value> = match prior.get(name) {
            Some(Value::Array(old)) => old
                .iter()
                .filter(|v| is_primary(v))
                .map(without_primary)
                .collect(),
            _ => continue,
        };
        for item in items.iter_mut() {
            if is_primary(item)
                && former.contains(&without_primary(item))
                && let Value::Object(o) = item
            {
                o.insert("primary".into(), false.into());
            }
        }
    }
}

/// The operations, each with a parsed path: an operation without a path becomes one per
/// member of its value object (an extension URN member holding an object becomes one per
/// attribute of the extension).
fn expand(req: &PatchRequest, schema: &ResourceSchema) -> Result<Vec<Op>, ScimError> {
    let mut out = Vec::new();
    for (i, op) in req.operations.iter().enumerate() {
        let n = i + 1;
        match &op.path {
            Some(p) => {
                let path = parse_path(p).map_err(|e| {
                    ScimError::InvalidPath(format!("operation {n}: \"{}\": {e}", truncate(p)))
                })?;
                out.push(Op {
                    kind: op.op,
                    path,
                    value: op.value.clone(),
                    n,
                });
            }
            None => {
                if op.op == PatchOpKind::Remove {
                    return Err(ScimError::NoTarget(format!(
                        "operation {n} is a remove without a path; give the path of what to remove"
                    )));
                }
                let Some(Value::Object(members)) = &op.value else {
                    return Err(ScimError::InvalidSyntax(format!(
                        "operation {n} has no path, so its value must be an object of \
                         attribute paths and values"
                    )));
                };
                for (key, value) in members {
                    if key.eq_ignore_ascii_case("schemas") {
                        continue;
                    }
                    let ext = schema.extension_urn(key);
                    if let (Some(ext), Value::Object(inner)) = (ext, value) {
                        for (k, v) in inner {
                            let mut path = key_path(n, k)?;
                            path.attr.urn = Some(ext.to_owned());
                            out.push(Op {
                                kind: op.op,
                                path,
                                value: Some(v.clone()),
                                n,
                            });
                        }
                        continue;
                    }
                    out.push(Op {
                        kind: op.op,
                        path: key_path(n, key)?,
                        value: Some(value.clone()),
                        n,
                    });
                }
            }
        }
    }
    Ok(out)
}

fn key_path(n: usize, key: &str) -> Result<PatchPath, ScimError> {
    parse_path(key).map_err(|e| {
        ScimError::InvalidPath(format!(
            "operation {n}: the value member \"{}\" is not an attribute path: {e}",
            truncate(key)
        ))
    })
}

/// A JSON value with "no value" (null, "", [], {}) made `Null`, recursively, for
/// comparisons.
fn norm(v: Option<&Value>) -> Value {
    match v {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) if s.is_empty() => Value::Null,
        Some(Value::Array(a)) => {
            let items: Vec<Value> = a
                .iter()
                .map(|i| norm(Some(i)))
                .filter(|i| !i.is_null())
                .collect();
            if items.is_empty() {
                Value::Null
            } else {
                Value::Array(items)
            }
        }
        Some(Value::Object(o)) => {
            let m = norm_map(o);
            if m.is_empty() {
                Value::Null
            } else {
                Value::Object(m)
            }
        }
        Some(other) => other.clone(),
    }
}

fn norm_map(o: &Map<String, Value>) -> Map<String, Value> {
    o.iter()
        .map(|(k, v)| (k.clone(), norm(Some(v))))
        .filter(|(_, v)| !v.is_null())
        .collect()
}

/// The attribute's container in the resource: the resource itself, or its extension
/// object (created when `create`).
fn container<'a>(
    map: &'a mut Map<String, Value>,
    ext: Option<&str>,
    create: bool,
) -> Option<&'a mut Map<String, Value>> {
    let Some(ext) = ext else {
        return Some(map);
    };
    let key = match key_ci(map, ext) {
        Some(k) => k,
        None if create => {
            if let Some(Value::Array(schemas)) = map.get_mut("schemas")
                && !schemas.iter().any(|s| s.as_str() == Some(ext))
            {
                schemas.push(ext.into());
            }
            map.insert(ext.to_owned(), Value::Object(Map::new()));
            ext.to_owned()
        }
        None => return None,
    };
    if !map.get(&key).is_some_and(Value::is_object) {
        if !create {
            return None;
        }
        map.insert(key.clone(), Value::Object(Map::new()));
    }
    map.get_mut(&key).and_then(Value::as_object_mut)
}

/// Remove an extension object left empty (and its URN from `schemas`).
fn drop_empty_extension(map: &mut Map<String, Value>, ext: Option<&str>) {
    let Some(ext) = ext else { return };
    let Some(key) = key_ci(map, ext) else { return };
    if map
        .get(&key)
        .is_some_and(|v| v.as_object().is_some_and(Map::is_empty))
    {
        map.remove(&key);
        if let Some(Value::Array(schemas)) = map.get_mut("schemas") {
            schemas.retain(|s| !s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(ext)));
        }
    }
}

fn apply_one(
    map: &mut Map<String, Value>,
    op: &Op,
    schema: &ResourceSchema,
    outcome: &mut PatchOutcome,
) -> Result<(), ScimError> {
    let n = op.n;
    // A whole extension as the path: its attributes one by one.
    if op.path.filter.is_none()
        && let Some(ext) = schema.path_as_extension(&op.path.attr)
    {
        return apply_extension(map, op, ext, schema, outcome);
    }
    let Some(resolved) = schema.resolve(&op.path.attr) else {
        // Not an attribute of this resource type: ignored, like in a POST body.
        return Ok(());
    };
    let attr = resolved.attr;
    let ext = resolved.extension;
    let sub_def = resolved.sub;
    if op.path.filter.is_some() && (sub_def.is_some() || !attr.multi_valued) {
        return Err(ScimError::InvalidPath(format!(
            "operation {n}: \"{}\" is not a multi-valued attribute, so it cannot have a value \
             filter",
            op.path.attr
        )));
    }
    let filter_sub = match &op.path.sub_attr {
        None => None,
        Some(s) => match attr.sub(s) {
            Some(d) => Some(d),
            // An unknown sub-attribute of a known attribute: ignored.
            None => return Ok(()),
        },
    };
    if attr.mutability == Mutability::WriteOnly {
        return write_only(op, attr, outcome);
    }
    let before = container(map, ext, false).map(|c| norm(get_ci(c, &attr.name)));
    let sub_before = sub_def.map(|_| sub_value(map, ext, attr, sub_def));
    let value = match (&op.value, op.kind) {
        (None, PatchOpKind::Add) => {
            return Err(ScimError::InvalidSyntax(format!(
                "operation {n} is an add without a value; give the value to add"
            )));
        }
        (v, _) => v.clone(),
    };
    // A replace without a value removes.
    let kind = match (op.kind, &value) {
        (PatchOpKind::Replace, None) => PatchOpKind::Remove,
        (k, _) => k,
    };
    let target = target_def(attr, sub_def, filter_sub);
    let as_multi = op.path.filter.is_none() && sub_def.is_none() && attr.multi_valued;
    let value = value
        .map(|v| normalize(&v, target, as_multi))
        .transpose()
        .map_err(|e| match e {
            ScimError::InvalidValue(d) => ScimError::InvalidValue(format!("operation {n}: {d}")),
            other => other,
        })?;
    match (&op.path.filter, sub_def) {
        (None, None) => whole(map, ext, attr, kind, value, n)?,
        (None, Some(sub)) => sub_attribute(map, ext, attr, sub, kind, value),
        (Some(filter), None) => filtered(map, ext, attr, filter, filter_sub, kind, value, n)?,
        (Some(_), Some(_)) => unreachable_combination(n)?,
    }
    drop_empty_extension(map, ext);
    // Read-only and immutable attributes may only be "changed" to what they are.
    let after = container(map, ext, false).map(|c| norm(get_ci(c, &attr.name)));
    let unchanged = before.clone().unwrap_or(Value::Null) == after.unwrap_or(Value::Null);
    let refused = match attr.mutability {
        Mutability::ReadOnly => !unchanged,
        Mutability::Immutable => !unchanged && before.is_some_and(|b| !b.is_null()),
        _ => false,
    };
    if refused {
        return Err(ScimError::Mutability(format!(
            "operation {n}: {} is read-only",
            qualified(ext, &attr.name)
        )));
    }
    if let Some(sub) = sub_def
        && sub.mutability == Mutability::ReadOnly
        && sub_before != Some(sub_value(map, ext, attr, sub_def))
    {
        return Err(ScimError::Mutability(format!(
            "operation {n}: {}.{} is read-only",
            qualified(ext, &attr.name),
            sub.name
        )));
    }
    Ok(())
}

fn unreachable_combination(n: usize) -> Result<(), ScimError> {
    Err(ScimError::InvalidPath(format!(
        "operation {n}: a sub-attribute path cannot have a value filter"
    )))
}

fn qualified(ext: Option<&str>, name: &str) -> String {
    match ext {
        Some(e) => format!("{e}:{name}"),
        None => name.to_owned(),
    }
}

fn sub_value(
    map: &mut Map<String, Value>,
    ext: Option<&str>,
    attr: &Attribute,
    sub: Option<&Attribute>,
) -> Value {
    let Some(sub) = sub else { return Value::Null };
    let Some(c) = container(map, ext, false) else {
        return Value::Null;
    };
    match get_ci(c, &attr.name) {
        Some(Value::Object(o)) => norm(get_ci(o, &sub.name)),
        _ => Value::Null,
    }
}

/// The definition the operation's value is for.
fn target_def<'a>(
    attr: &'a Attribute,
    sub: Option<&'a Attribute>,
    filter_sub: Option<&'a Attribute>,
) -> &'a Attribute {
    sub.or(filter_sub).unwrap_or(attr)
}

/// `password` (the only writeOnly attribute): taken out of the JSON.
fn write_only(op: &Op, attr: &Attribute, outcome: &mut PatchOutcome) -> Result<(), ScimError> {
    match (op.kind, &op.value) {
        (PatchOpKind::Remove, _) | (PatchOpKind::Replace, None) => {
            Err(ScimError::Mutability(format!(
                "operation {}: {} cannot be removed; replace it with a new one",
                op.n, attr.name
            )))
        }
        (_, Some(Value::String(s))) if !s.is_empty() => {
            outcome.password = Some(Secret::new(s.as_str()));
            Ok(())
        }
        _ => Err(ScimError::InvalidValue(format!(
            "operation {}: {} must be a non-empty string",
            op.n, attr.name
        ))),
    }
}

/// An operation on a whole extension (`urn:…:enterprise:2.0:User`).
fn apply_extension(
    map: &mut Map<String, Value>,
    op: &Op,
    ext: &str,
    schema: &ResourceSchema,
    outcome: &mut PatchOutcome,
) -> Result<(), ScimError> {
    let Some(def) = schema.extensions.iter().find(|e| e.id == ext) else {
        return Ok(());
    };
    let names: Vec<(String, Option<Value>)> = match (op.kind, &op.value) {
        (PatchOpKind::Remove, _) | (PatchOpKind::Replace, None) => def
            .attributes
            .iter()
            .filter(|a| a.is_writable())
            .map(|a| (a.name.clone(), None))
            .collect(),
        (_, Some(Value::Object(members))) => members
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect(),
        _ => {
            return Err(ScimError::InvalidValue(format!(
                "operation {}: the value of the extension {ext} must be an object of its \
                 attributes",
                op.n
            )));
        }
    };
    for (name, value) in names {
        let mut path = key_path(op.n, &name)?;
        path.attr.urn = Some(ext.to_owned());
        let kind = if value.is_none() {
            PatchOpKind::Remove
        } else {
            op.kind
        };
        let one = Op {
            kind,
            path,
            value,
            n: op.n,
        };
        apply_one(map, &one, schema, outcome)?;
    }
    Ok(())
}

/// The value written for an attribute (or sub-attribute) definition: booleans from
/// `"True"`/`"false"`; a complex value's members under their canonical names, unknown
/// ones left out, and read-only ones too unless the attribute itself is read-only; a single-valued complex value given as a string
/// (Entra ID's manager id) becomes `{"value": …}`, and one given as a one-element array
/// its element; a multi-valued attribute given one value becomes an array.
fn normalize(v: &Value, def: &Attribute, as_multi: bool) -> Result<Value, ScimError> {
    if as_multi {
        let items = match v {
            Value::Array(a) => a
                .iter()
                .map(|i| normalize(i, def, false))
                .collect::<Result<_, _>>()?,
            Value::Null => Vec::new(),
            other => vec![normalize(other, def, false)?],
        };
        return Ok(Value::Array(items));
    }
    let wrong = |expected: &str| {
        Err(ScimError::InvalidValue(format!(
            "{} must be {expected}",
            def.name
        )))
    };
    match (def.kind, v) {
        (_, Value::Null) => Ok(Value::Null),
        // A one-element array for a single value (as some clients send the manager).
        (_, Value::Array(a)) if a.len() == 1 => normalize(&a[0], def, false),
        (AttrType::Boolean, Value::Bool(_)) => Ok(v.clone()),
        (AttrType::Boolean, Value::String(s)) if s.trim().eq_ignore_ascii_case("true") => {
            Ok(Value::Bool(true))
        }
        (AttrType::Boolean, Value::String(s)) if s.trim().eq_ignore_ascii_case("false") => {
            Ok(Value::Bool(false))
        }
        (AttrType::Boolean, _) => wrong("true or false"),
        (AttrType::Integer | AttrType::Decimal, Value::Number(_)) => Ok(v.clone()),
        (AttrType::Integer | AttrType::Decimal, _) => wrong("a number"),
        (AttrType::Complex, Value::Object(o)) => {
            let mut out = Map::new();
            for (k, x) in o {
                // Read-only sub-attributes of a writable attribute are echoes
                // (`manager.$ref`); of a read-only one (`meta`), they are checked.
                if let Some(sub) = def.sub(k)
                    && (sub.mutability != Mutability::ReadOnly
                        || def.mutability == Mutability::ReadOnly)
                {
                    out.insert(sub.name.clone(), normalize(x, sub, false)?);
                }
            }
            Ok(Value::Object(out))
        }
        (AttrType::Complex, Value::String(_) | Value::Number(_) | Value::Bool(_))
            if def.sub("value").is_some() =>
        {
            let mut out = Map::new();
            out.insert("value".into(), v.clone());
            Ok(Value::Object(out))
        }
        (AttrType::Complex, _) => wrong("an object of sub-attributes"),
        (_, Value::String(_) | Value::Number(_)) => Ok(v.clone()),
        (_, _) => wrong("a string"),
    }
}

/// The `key` under which `attr` is stored in `c` (existing spelling, else canonical).
fn attr_key(c: &Map<String, Value>, attr: &Attribute) -> String {
    key_ci(c, &attr.name).unwrap_or_else(|| attr.name.clone())
}

/// An operation on a whole attribute.
fn whole(
    map: &mut Map<String, Value>,
    ext: Option<&str>,
    attr: &Attribute,
    kind: PatchOpKind,
    value: Option<Value>,
    n: usize,
) -> Result<(), ScimError> {
    let create = kind != PatchOpKind::Remove;
    let Some(c) = container(map, ext, create) else {
        return Ok(());
    };
    let key = attr_key(c, attr);
    match kind {
        PatchOpKind::Remove => {
            match (&value, attr.multi_valued, c.get_mut(&key)) {
                // remove with a list of values: those values only (Entra ID members,
                // emails); values that are not there are no error.
                (Some(v), true, Some(Value::Array(items))) => {
                    let gone: Vec<Value> = match v {
                        Value::Array(a) => a.clone(),
                        other => vec![other.clone()],
                    };
                    items.retain(|i| !gone.iter().any(|g| same_element(attr, i, g)));
                    if items.is_empty() {
                        c.remove(&key);
                    }
                }
                _ => {
                    c.remove(&key);
                }
            }
        }
        PatchOpKind::Add if attr.multi_valued => {
            let Some(Value::Array(new)) = value else {
                return Ok(());
            };
            let entry = c.entry(key).or_insert_with(|| Value::Array(Vec::new()));
            if !entry.is_array() {
                *entry = Value::Array(Vec::new());
            }
            if let Value::Array(items) = entry {
                for v in new {
                    add_element(attr, items, v);
                }
            }
        }
        PatchOpKind::Add | PatchOpKind::Replace => {
            let Some(v) = value else { return Ok(()) };
            if attr.kind == AttrType::Complex && !attr.multi_valued {
                let Value::Object(members) = v else {
                    return Err(ScimError::InvalidValue(format!(
                        "operation {n}: {} is complex; its value must be an object of \
                         sub-attributes",
                        attr.name
                    )));
                };
                let entry = c
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(o) = entry {
                    merge(attr, o, members);
                    if o.is_empty() {
                        c.remove(&key);
                    }
                }
            } else if norm(Some(&v)).is_null() {
                c.remove(&key);
            } else {
                if let Value::Array(items) = &v
                    && attr.multi_valued
                {
                    let mut deduped = Vec::new();
                    for i in items.clone() {
                        add_element(attr, &mut deduped, i);
                    }
                    c.insert(key, Value::Array(deduped));
                    return Ok(());
                }
                c.insert(key, v);
            }
        }
    }
    Ok(())
}

/// Merge sub-attributes into a complex value (`null` removes one); a new `value` drops
/// the read-only sub-attributes that described the old one (`$ref`, `displayName`).
fn merge(attr: &Attribute, o: &mut Map<String, Value>, members: Map<String, Value>) {
    let old_value = o.get("value").cloned();
    for (k, v) in members {
        let key = key_ci(o, &k).unwrap_or(k);
        if norm(Some(&v)).is_null() {
            o.remove(&key);
        } else {
            o.insert(key, v);
        }
    }
    if o.get("value") != old_value.as_ref() {
        o.retain(|k, _| {
            attr.sub(k)
                .is_none_or(|s| s.mutability != Mutability::ReadOnly)
        });
    }
}

/// Whether two values of a multi-valued attribute are the same value: same `value`
/// (ignoring case unless caseExact) and, when both say, the same `type`.
fn same_element(attr: &Attribute, a: &Value, b: &Value) -> bool {
    let exact = attr.sub("value").is_some_and(|s| s.case_exact);
    let field = |v: &Value, name: &str| -> Option<String> {
        match v {
            Value::Object(o) => get_ci(o, name).and_then(scalar_text),
            other if name == "value" => scalar_text(other),
            _ => None,
        }
    };
    let eq = |x: &str, y: &str| {
        if exact {
            x == y
        } else {
            x.to_lowercase() == y.to_lowercase()
        }
    };
    match (field(a, "value"), field(b, "value")) {
        (Some(x), Some(y)) if eq(&x, &y) => match (field(a, "type"), field(b, "type")) {
            (Some(s), Some(t)) => s.eq_ignore_ascii_case(&t),
            _ => true,
        },
        _ => false,
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Add one value to a multi-valued attribute: merged into an equal one, else appended;
/// a new primary value makes the others not primary.
fn add_element(attr: &Attribute, items: &mut Vec<Value>, v: Value) {
    if norm(Some(&v)).is_null() {
        return;
    }
    let primary = v.get("primary") == Some(&Value::Bool(true));
    if primary {
        for i in items.iter_mut() {
            if let Value::Object(o) = i {
                o.remove("primary");
            }
        }
    }
    if let Some(existing) = items.iter_mut().find(|i| same_element(attr, i, &v)) {
        if let (Value::Object(e), Value::Object(new)) = (existing, v) {
            for (k, x) in new {
                e.insert(k, x);
            }
        }
        return;
    }
    items.push(v);
}

/// An operation on a sub-attribute without a value filter (`name.givenName`,
/// `manager.value`, or `emails.value` for every email).
fn sub_attribute(
    map: &mut Map<String, Value>,
    ext: Option<&str>,
    attr: &Attribute,
    sub: &Attribute,
    kind: PatchOpKind,
    value: Option<Value>,
) {
    let create = kind != PatchOpKind::Remove;
    let Some(c) = container(map, ext, create) else {
        return;
    };
    let key = attr_key(c, attr);
    let set = |o: &mut Map<String, Value>, value: &Option<Value>| {
        let k = key_ci(o, &sub.name).unwrap_or_else(|| sub.name.clone());
        match value {
            Some(v) if kind != PatchOpKind::Remove && !norm(Some(v)).is_null() => {
                let old = o.get("value").cloned();
                o.insert(k, v.clone());
                if sub.name == "value" && o.get("value") != old.as_ref() {
                    o.retain(|k, _| {
                        attr.sub(k)
                            .is_none_or(|s| s.mutability != Mutability::ReadOnly)
                    });
                }
            }
            _ => {
                o.remove(&k);
            }
        }
    };
    if attr.multi_valued {
        match c.get_mut(&key) {
            Some(Value::Array(items)) if !items.is_empty() => {
                for i in items.iter_mut() {
                    if let Value::Object(o) = i {
                        set(o, &value);
                    }
                }
            }
            _ if create => {
                let mut o = Map::new();
                set(&mut o, &value);
                if !o.is_empty() {
                    c.insert(key.clone(), Value::Array(vec![Value::Object(o)]));
                }
            }
            _ => {}
        }
        prune_elements(c, &key, attr);
        return;
    }
    let entry = match c.get_mut(&key) {
        Some(v @ Value::Object(_)) => v,
        _ if create => {
            c.insert(key.clone(), Value::Object(Map::new()));
            match c.get_mut(&key) {
                Some(v) => v,
                None => return,
            }
        }
        _ => return,
    };
    if let Value::Object(o) = entry {
        set(o, &value);
        if o.is_empty() {
            c.remove(&key);
        }
    }
}

/// Drop values of a multi-valued attribute that have no `value` left, and the
/// attribute when none is left.
fn prune_elements(c: &mut Map<String, Value>, key: &str, attr: &Attribute) {
    if let Some(Value::Array(items)) = c.get_mut(key) {
        if attr.sub("value").is_some() {
            items.retain(|i| match i {
                Value::Object(o) => get_ci(o, "value").is_some_and(|v| !norm(Some(v)).is_null()),
                other => !norm(Some(other)).is_null(),
            });
        }
        if items.is_empty() {
            c.remove(key);
        }
    }
}

/// The sub-attribute values a value filter fixes with `eq` (`type eq "work" and primary
/// eq true`): what a value it creates holds. `None` when the filter says anything else.
fn implied(filter: &Filter, attr: &Attribute) -> Option<Map<String, Value>> {
    let mut out = Map::new();
    fn walk(f: &Filter, attr: &Attribute, out: &mut Map<String, Value>) -> bool {
        match f {
            Filter::And(a, b) => walk(a, attr, out) && walk(b, attr, out),
            Filter::Compare {
                path,
                op: CompareOp::Eq,
                value,
            } if path.urn.is_none() && path.sub_attr.is_none() => {
                let Some(sub) = attr.sub(&path.name) else {
                    return false;
                };
                let v = match value {
                    CompValue::String(s) => Value::String(s.clone()),
                    CompValue::Bool(b) => Value::Bool(*b),
                    _ => return false,
                };
                out.insert(sub.name.clone(), v);
                true
            }
            _ => false,
        }
    }
    walk(filter, attr, &mut out).then_some(out)
}

/// An operation with a value filter (`emails[type eq "work"].value`,
/// `emails[type eq "work"]`).
#[allow(clippy::too_many_arguments)]
fn filtered(
    map: &mut Map<String, Value>,
    ext: Option<&str>,
    attr: &Attribute,
    filter: &Filter,
    filter_sub: Option<&Attribute>,
    kind: PatchOpKind,
    value: Option<Value>,
    n: usize,
) -> Result<(), ScimError> {
    let create = kind != PatchOpKind::Remove;
    let Some(c) = container(map, ext, create) else {
        return Ok(());
    };
    let key = attr_key(c, attr);
    let case_exact = |p: &AttrPath| attr.sub(&p.name).is_some_and(|s| s.case_exact);
    let mut items = match c.remove(&key) {
        Some(Value::Array(items)) => items,
        Some(other) => vec![other],
        None => Vec::new(),
    };
    let matched: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, i)| evaluate(filter, i, &case_exact))
        .map(|(i, _)| i)
        .collect();
    match kind {
        PatchOpKind::Remove => match filter_sub {
            Some(sub) => {
                for &i in &matched {
                    if let Some(Value::Object(o)) = items.get_mut(i)
                        && let Some(k) = key_ci(o, &sub.name)
                    {
                        o.remove(&k);
                    }
                }
            }
            None => {
                let mut i = 0;
                items.retain(|_| {
                    let keep = !matched.contains(&i);
                    i += 1;
                    keep
                });
            }
        },
        PatchOpKind::Add | PatchOpKind::Replace => {
            let Some(v) = value else { return Ok(()) };
            if matched.is_empty() {
                let Some(mut element) = implied(filter, attr) else {
                    c.insert(key, Value::Array(items));
                    return Err(ScimError::NoTarget(format!(
                        "operation {n}: no value of {} matches the filter [{filter}]; use a \
                         filter of eq conditions (e.g. [type eq \"work\"]) to add one",
                        attr.name
                    )));
                };
                match (filter_sub, v) {
                    (Some(sub), v) => {
                        element.insert(sub.name.clone(), v);
                    }
                    (None, Value::Object(members)) => {
                        for (k, x) in members {
                            element.insert(k, x);
                        }
                    }
                    (None, _) => {
                        c.insert(key, Value::Array(items));
                        return Err(ScimError::InvalidValue(format!(
                            "operation {n}: a value of {} must be an object",
                            attr.name
                        )));
                    }
                }
                add_element(attr, &mut items, Value::Object(element));
            } else {
                for &i in &matched {
                    let Some(Value::Object(o)) = items.get_mut(i) else {
                        continue;
                    };
                    match (filter_sub, &v) {
                        (Some(sub), v) => {
                            let k = key_ci(o, &sub.name).unwrap_or_else(|| sub.name.clone());
                            if norm(Some(v)).is_null() {
                                o.remove(&k);
                            } else {
                                o.insert(k, v.clone());
                            }
                        }
                        (None, Value::Object(members)) => {
                            if kind == PatchOpKind::Replace {
                                // the element becomes the value, keeping what the filter fixes
                                let mut element = implied(filter, attr).unwrap_or_default();
                                for (k, x) in members {
                                    element.insert(k.clone(), x.clone());
                                }
                                *o = element;
                            } else {
                                for (k, x) in members {
                                    o.insert(k.clone(), x.clone());
                                }
                            }
                        }
                        (None, _) => {
                            return Err(ScimError::InvalidValue(format!(
                                "operation {n}: a value of {} must be an object",
                                attr.name
                            )));
                        }
                    }
                }
            }
        }
    }
    if !items.is_empty() {
        c.insert(key.clone(), Value::Array(items));
    }
    prune_elements(c, &key, attr);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------

/// What a PATCH asks of a group, with members as ids (the service resolves them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupPatch {
    /// The new `displayName`, when it changes.
    pub display_name: Option<String>,
    /// `Some(None)`: clear `externalId`; `Some(Some(x))`: set it; `None`: unchanged.
    pub external_id: Option<Option<String>>,
    /// Ids to add (after `replace_members`, if both).
    pub add_members: Vec<String>,
    /// Ids to remove; ids that are not members are no error.
    pub remove_members: Vec<String>,
    /// The complete new member list, when an operation replaces (or removes) all.
    pub replace_members: Option<Vec<String>>,
}

impl GroupPatch {
    /// Whether the patch asks for nothing.
    pub fn is_empty(&self) -> bool {
        *self == GroupPatch::default()
    }

    fn add(&mut self, id: String) {
        match &mut self.replace_members {
            Some(all) => {
                if !all.iter().any(|m| m.eq_ignore_ascii_case(&id)) {
                    all.push(id);
                }
            }
            None => {
                self.remove_members.retain(|m| !m.eq_ignore_ascii_case(&id));
                if !self.add_members.iter().any(|m| m.eq_ignore_ascii_case(&id)) {
                    self.add_members.push(id);
                }
            }
        }
    }

    fn remove(&mut self, id: String) {
        match &mut self.replace_members {
            Some(all) => all.retain(|m| !m.eq_ignore_ascii_case(&id)),
            None => {
                self.add_members.retain(|m| !m.eq_ignore_ascii_case(&id));
                if !self
                    .remove_members
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(&id))
                {
                    self.remove_members.push(id);
                }
            }
        }
    }

    fn replace(&mut self, ids: Vec<String>) {
        self.add_members.clear();
        self.remove_members.clear();
        self.replace_members = Some(ids);
    }
}

/// Read a PATCH request on a group. `current` is the group's resource (its `members`
/// are not needed); operations on `members` become ids to add, remove or set, in order;
/// the others are applied to `current` to find the new `displayName` and `externalId`
/// (with the same rules as [`apply_user_patch`]).
pub fn parse_group_patch(
    req: &PatchRequest,
    current: &Value,
    schema: &ResourceSchema,
) -> Result<GroupPatch, ScimError> {
    let ops = expand(req, schema)?;
    let mut patch = GroupPatch::default();
    let mut resource = current.clone();
    if let Value::Object(map) = &mut resource
        && let Some(k) = key_ci(map, "members")
    {
        map.remove(&k);
    }
    let mut others = Vec::new();
    for op in ops {
        if op.path.attr.name_is("members") && op.path.attr.in_schema(&schema.core.id) {
            member_op(&mut patch, &op)?;
        } else {
            others.push(op);
        }
    }
    let outcome = apply_ops(&mut resource, &others, schema)?;
    if outcome.changed {
        let field = |v: &Value, name: &str| -> Option<String> {
            v.as_object()
                .and_then(|o| get_ci(o, name))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let display_name = field(&resource, "displayName");
        if display_name != field(current, "displayName") {
            patch.display_name = Some(display_name.ok_or_else(|| {
                ScimError::InvalidValue(
                    "displayName is required: it cannot be removed, only replaced".into(),
                )
            })?);
        }
        let external_id = field(&resource, "externalId");
        if external_id != field(current, "externalId") {
            patch.external_id = Some(external_id);
        }
    }
    Ok(patch)
}

/// One operation on `members`.
fn member_op(patch: &mut GroupPatch, op: &Op) -> Result<(), ScimError> {
    let n = op.n;
    if op.path.attr.sub_attr.is_some() || op.path.sub_attr.is_some() {
        return Err(ScimError::InvalidPath(format!(
            "operation {n}: members are added and removed whole; use the path \"members\" or \
             members[value eq \"<id>\"]"
        )));
    }
    match (&op.path.filter, op.kind) {
        (Some(filter), PatchOpKind::Remove) => {
            let ids = filter_ids(filter).ok_or_else(|| {
                ScimError::InvalidPath(format!(
                    "operation {n}: members can be selected by id only, as in \
                     members[value eq \"<id>\"] (or several joined with or)"
                ))
            })?;
            for id in ids {
                patch.remove(id);
            }
        }
        (Some(_), _) => {
            return Err(ScimError::InvalidPath(format!(
                "operation {n}: a value filter on members is for remove; to add members use \
                 add with the path \"members\""
            )));
        }
        (None, PatchOpKind::Add) => {
            let v = op.value.as_ref().ok_or_else(|| {
                ScimError::InvalidSyntax(format!(
                    "operation {n} is an add without a value; give the members to add"
                ))
            })?;
            for id in member_ids(v)? {
                patch.add(id);
            }
        }
        (None, PatchOpKind::Replace) => {
            let ids = match &op.value {
                Some(v) => member_ids(v)?,
                None => Vec::new(),
            };
            patch.replace(ids);
        }
        (None, PatchOpKind::Remove) => match &op.value {
            Some(v) => {
                for id in member_ids(v)? {
                    patch.remove(id);
                }
            }
            None => patch.replace(Vec::new()),
        },
    }
    Ok(())
}

/// The ids of `value eq "id"` conditions joined by `or`; `None` for any other filter.
fn filter_ids(f: &Filter) -> Option<Vec<String>> {
    match f {
        Filter::Or(a, b) => {
            let mut ids = filter_ids(a)?;
            ids.extend(filter_ids(b)?);
            Some(ids)
        }
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value: CompValue::String(id),
        } if path.name_is("value") && path.sub_attr.is_none() && path.urn.is_none() => {
            Some(vec![id.clone()])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;

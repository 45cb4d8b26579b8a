//! SCIM protocol messages (RFC 7644 §3): list responses, PATCH and search requests, the
//! query parameters of a list, and the projection of a resource onto the attributes a
//! client asked for (RFC 7644 §3.4.2.5, RFC 7643 §7 `returned`).
//!
//! Requests are read leniently where real clients differ from the RFC and the meaning is
//! still clear: member names in any case (`operations`, `OP`), PATCH `op` in any case
//! (Entra ID sends `Replace`), numbers sent as strings in a search body. What cannot be
//! understood is refused with the SCIM error that says why.

use serde::Serialize;
use serde_json::{Map, Value};

use super::error::ScimError;
use super::filter::{AttrPath, Filter, parse_filter, parse_path};
use super::schema::{Attribute, ResourceSchema, Returned};
use crate::types::Secret;

/// `ListResponse` message URN (RFC 7644 §3.4.2).
pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// `PatchOp` message URN (RFC 7644 §3.5.2).
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// `SearchRequest` message URN (RFC 7644 §3.4.3).
pub const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
/// `Error` message URN (RFC 7644 §3.12).
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The value of `key` in `map`, matching the key ignoring ASCII case (an exact match
/// wins).
pub(crate) fn get_ci<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The key of `map` equal to `key` ignoring ASCII case, as spelled in the map.
pub(crate) fn key_ci(map: &Map<String, Value>, key: &str) -> Option<String> {
    if map.contains_key(key) {
        return Some(key.to_owned());
    }
    map.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned()
}

/// A page of resources (RFC 7644 §3.4.2).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse {
    pub schemas: Vec<String>,
    /// How many resources match in all.
    pub total_results: u64,
    /// 1-based index of the first resource of this page.
    pub start_index: u64,
    /// How many resources this page holds.
    pub items_per_page: u64,
    #[serde(rename = "Resources")]
    pub resources: Vec<Value>,
}

impl ListResponse {
    /// A page of `resources`, the `start_index`-th and following of `total_results`.
    pub fn new(total_results: u64, start_index: u64, resources: Vec<Value>) -> Self {
        Self {
            schemas: vec![LIST_RESPONSE.to_owned()],
            total_results,
            start_index,
            items_per_page: resources.len() as u64,
            resources,
        }
    }

    /// As JSON.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "schemas".into(),
            Value::Array(
                self.schemas
                    .iter()
                    .map(|s| Value::from(s.as_str()))
                    .collect(),
            ),
        );
        m.insert("totalResults".into(), self.total_results.into());
        m.insert("startIndex".into(), self.start_index.into());
        m.insert("itemsPerPage".into(), self.items_per_page.into());
        m.insert("Resources".into(), Value::Array(self.resources.clone()));
        Value::Object(m)
    }
}

/// A PATCH operation's `op` (RFC 7644 §3.5.2), read in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOpKind {
    Add,
    Remove,
    Replace,
}

impl PatchOpKind {
    /// `add`, `remove`, `replace` in any case.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Add, Self::Remove, Self::Replace]
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }

    /// The canonical (lower-case) keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Remove => "remove",
            Self::Replace => "replace",
        }
    }
}

/// One PATCH operation. `path` is kept as sent (parsed by the PATCH code, which reports
/// `invalidPath`); an empty path counts as absent; a `null` value as absent.
///
/// A password in it is overwritten when the operation is dropped, and `Debug` never
/// shows one.
#[derive(Clone, PartialEq)]
pub struct PatchOperation {
    pub op: PatchOpKind,
    pub path: Option<String>,
    pub value: Option<Value>,
}

impl PatchOperation {
    /// Whether the operation's path names the password.
    fn targets_password(&self) -> bool {
        self.path
            .as_deref()
            .is_some_and(|p| p.to_ascii_lowercase().contains("password"))
    }

    fn carries_secret(&self) -> bool {
        self.targets_password() || self.value.as_ref().is_some_and(holds_secret)
    }
}

impl std::fmt::Debug for PatchOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("PatchOperation");
        d.field("op", &self.op).field("path", &self.path);
        if self.carries_secret() {
            d.field("value", &"[redacted]");
        } else {
            d.field("value", &self.value);
        }
        d.finish()
    }
}

impl Drop for PatchOperation {
    fn drop(&mut self) {
        if let Some(value) = self.value.as_mut() {
            if self
                .path
                .as_deref()
                .is_some_and(|p| p.to_ascii_lowercase().contains("password"))
            {
                zeroize_strings(value);
            } else {
                scrub_secrets(value);
            }
        }
    }
}

/// `password`, alone or qualified with the core User schema's URN (any case).
fn is_password_path(path: &str) -> bool {
    let path = path.trim();
    let Some(split) = path.len().checked_sub(":password".len()) else {
        return path.eq_ignore_ascii_case("password");
    };
    path.eq_ignore_ascii_case("password")
        || path.is_char_boundary(split)
            && path[split..].eq_ignore_ascii_case(":password")
            && path[..split].eq_ignore_ascii_case(super::filter::CORE_USER)
}

/// Whether `value` holds a string under a `password` key (any case, any depth).
pub fn holds_secret(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| (k.eq_ignore_ascii_case("password") && !v.is_null()) || holds_secret(v)),
        Value::Array(items) => items.iter().any(holds_secret),
        _ => false,
    }
}

/// Overwrites (zeroes, then empties) every string held under a `password` key, at any
/// depth, so a request's cleartext password does not linger in freed memory.
pub fn scrub_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k.eq_ignore_ascii_case("password") {
                    zeroize_strings(v);
                } else {
                    scrub_secrets(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub_secrets),
        _ => {}
    }
}

/// Overwrites every string in `value`.
fn zeroize_strings(value: &mut Value) {
    match value {
        Value::String(s) => zeroize::Zeroize::zeroize(s),
        Value::Object(map) => map.values_mut().for_each(zeroize_strings),
        Value::Array(items) => items.iter_mut().for_each(zeroize_strings),
        _ => {}
    }
}

/// A SCIM request body as parsed JSON: a password in it is overwritten on drop, and
/// `Debug` does not show the body.
pub struct RequestBody(pub Value);

impl std::ops::Deref for RequestBody {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0
    }
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestBody([not shown])")
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        scrub_secrets(&mut self.0);
    }
}

/// A PATCH request body (RFC 7644 §3.5.2).
#[derive(Debug, Clone, PartialEq)]
pub struct PatchRequest {
    pub operations: Vec<PatchOperation>,
}

impl PatchRequest {
    /// The new password, when every operation only sets the password (`replace`/`add`
    /// with path `password`, or without a path and a value of `{"password": …}` alone),
    /// as identity providers push it; `None` for anything else.
    pub fn password_only(&self) -> Option<Secret> {
        let mut password = None;
        for op in &self.operations {
            if !matches!(op.op, PatchOpKind::Add | PatchOpKind::Replace) {
                return None;
            }
            let value = match op.path.as_deref() {
                Some(p) if is_password_path(p) => op.value.as_ref()?,
                Some(_) => return None,
                None => match op.value.as_ref()? {
                    Value::Object(o) if o.len() == 1 => {
                        let (k, v) = o.iter().next()?;
                        if !is_password_path(k) {
                            return None;
                        }
                        v
                    }
                    _ => return None,
                },
            };
            password = Some(Secret::new(value.as_str().filter(|p| !p.is_empty())?));
        }
        password
    }

    /// [`PatchRequest::from_json`] of a request body.
    pub fn from_body(body: &RequestBody) -> Result<Self, ScimError> {
        Self::from_json(body)
    }

    /// Read a PATCH body: `schemas` must contain the PatchOp URN, `Operations` (any
    /// case) must be an array of objects with a known `op`.
    pub fn from_json(body: &Value) -> Result<Self, ScimError> {
        let Value::Object(map) = body else {
            return Err(ScimError::InvalidSyntax(
                "a PATCH body must be a JSON object with \"schemas\" and \"Operations\"".into(),
            ));
        };
        let has_schema = get_ci(map, "schemas")
            .and_then(Value::as_array)
            .is_some_and(|s| {
                s.iter()
                    .filter_map(Value::as_str)
                    .any(|u| u.eq_ignore_ascii_case(PATCH_OP))
            });
        if !has_schema {
            return Err(ScimError::InvalidSyntax(format!(
                "\"schemas\" must contain \"{PATCH_OP}\""
            )));
        }
        let ops = match get_ci(map, "Operations") {
            Some(Value::Array(ops)) => ops,
            _ => {
                return Err(ScimError::InvalidSyntax(
                    "\"Operations\" must be an array of operations".into(),
                ));
            }
        };
        let operations = ops
            .iter()
            .enumerate()
            .map(|(i, op)| operation(i, op))
            .collect::<Result<_, _>>()?;
        Ok(Self { operations })
    }
}

fn operation(i: usize, op: &Value) -> Result<PatchOperation, ScimError> {
    let n = i + 1;
    let Value::Object(map) = op else {
        return Err(ScimError::InvalidSyntax(format!(
            "operation {n} must be an object with \"op\", \"path\" and \"value\""
        )));
    };
    let kind = match get_ci(map, "op") {
        Some(Value::String(s)) => PatchOpKind::parse(s).ok_or_else(|| {
            ScimError::InvalidSyntax(format!(
                "operation {n}: \"op\" is \"{}\", but must be add, remove or replace",
                truncate(s)
            ))
        })?,
        _ => {
            return Err(ScimError::InvalidSyntax(format!(
                "operation {n}: \"op\" must be \"add\", \"remove\" or \"replace\""
            )));
        }
    };
    let path = match get_ci(map, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ScimError::InvalidPath(format!(
                "operation {n}: \"path\" must be a string"
            )));
        }
    };
    let value = match get_ci(map, "value") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.clone()),
    };
    Ok(PatchOperation {
        op: kind,
        path,
        value,
    })
}

/// At most 64 characters of client input, for messages.
pub(crate) fn truncate(s: &str) -> String {
    if s.chars().count() <= 64 {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(61).collect();
        t.push_str("...");
        t
    }
}

impl<'de> serde::Deserialize<'de> for PatchRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Self::from_json(&v).map_err(serde::de::Error::custom)
    }
}

/// Sort direction (RFC 7644 §3.4.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    #[default]
    Ascending,
    Descending,
}

impl SortOrder {
    /// `ascending` / `descending`, any case.
    pub fn parse(s: &str) -> Result<Self, ScimError> {
        if s.eq_ignore_ascii_case("ascending") {
            Ok(Self::Ascending)
        } else if s.eq_ignore_ascii_case("descending") {
            Ok(Self::Descending)
        } else {
            Err(ScimError::InvalidValue(format!(
                "sortOrder is \"{}\"; use \"ascending\" or \"descending\"",
                truncate(s)
            )))
        }
    }
}

/// A `POST /.search` body (RFC 7644 §3.4.3), read leniently: member names in any case,
/// `attributes` as an array or a comma-separated string, numbers as numbers or strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchRequest {
    pub attributes: Vec<String>,
    pub excluded_attributes: Vec<String>,
    pub filter: Option<String>,
    pub sort_by: Option<String>,
    pub sort_order: Option<String>,
    pub start_index: Option<String>,
    pub count: Option<String>,
}

impl SearchRequest {
    /// Read a search body.
    pub fn from_json(body: &Value) -> Result<Self, ScimError> {
        let Value::Object(map) = body else {
            return Err(ScimError::InvalidSyntax(
                "a search body must be a JSON object (RFC 7644 §3.4.3)".into(),
            ));
        };
        let text = |name: &str| -> Result<Option<String>, ScimError> {
            match get_ci(map, name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(_) => Err(ScimError::InvalidValue(format!(
                    "\"{name}\" must be a string or a number"
                ))),
            }
        };
        let list = |name: &str| -> Result<Vec<String>, ScimError> {
            match get_ci(map, name) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::String(s)) => Ok(vec![s.clone()]),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| {
                        i.as_str().map(str::to_owned).ok_or_else(|| {
                            ScimError::InvalidValue(format!(
                                "\"{name}\" must be an array of attribute names"
                            ))
                        })
                    })
                    .collect(),
                Some(_) => Err(ScimError::InvalidValue(format!(
                    "\"{name}\" must be an array of attribute names"
                ))),
            }
        };
        Ok(Self {
            attributes: list("attributes")?,
            excluded_attributes: list("excludedAttributes")?,
            filter: text("filter")?,
            sort_by: text("sortBy")?,
            sort_order: text("sortOrder")?,
            start_index: text("startIndex")?,
            count: text("count")?,
        })
    }

    /// The validated query; `max_count` caps `count`. A filter in a body may name any
    /// attribute (no `sensitive` check: the body is not logged like a URL).
    pub fn into_query(self, max_count: impl Into<u64>) -> Result<ListQuery, ScimError> {
        let max_count = max_count.into();
        ListQuery::build(
            RawQuery {
                attributes: self.attributes,
                excluded_attributes: self.excluded_attributes,
                filter: self.filter,
                sort_by: self.sort_by,
                sort_order: self.sort_order,
                start_index: self.start_index,
                count: self.count,
            },
            max_count,
        )
    }
}

impl<'de> serde::Deserialize<'de> for SearchRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Self::from_json(&v).map_err(serde::de::Error::custom)
    }
}

/// The parameters of a list or search, validated (RFC 7644 §3.4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub filter: Option<Filter>,
    pub sort_by: Option<AttrPath>,
    pub sort_order: SortOrder,
    /// 1-based; at least 1.
    pub start_index: u64,
    /// At most the caller's maximum; 0 asks only for `totalResults`.
    pub count: u64,
    pub attributes: Vec<AttrPath>,
    pub excluded_attributes: Vec<AttrPath>,
}

#[derive(Default)]
struct RawQuery {
    attributes: Vec<String>,
    excluded_attributes: Vec<String>,
    filter: Option<String>,
    sort_by: Option<String>,
    sort_order: Option<String>,
    start_index: Option<String>,
    count: Option<String>,
}

impl ListQuery {
    /// From decoded query parameters (`GET /Users?filter=…`). Parameter names are matched
    /// ignoring case; unknown ones are ignored; one given twice is refused. `startIndex`
    /// below 1 counts as 1, `count` below 0 as 0, `count` above `max_count` (or absent)
    /// as `max_count`. A filter that names `password` is refused as `sensitive`: it would
    /// put a password in a URL.
    pub fn from_query<K: AsRef<str>, V: AsRef<str>>(
        params: impl IntoIterator<Item = (K, V)>,
        max_count: impl Into<u64>,
    ) -> Result<Self, ScimError> {
        let max_count = max_count.into();
        let mut raw = RawQuery::default();
        let mut seen: Vec<String> = Vec::new();
        for (k, v) in params {
            let (k, v) = (k.as_ref(), v.as_ref().to_owned());
            let known = [
                "attributes",
                "excludedAttributes",
                "filter",
                "sortBy",
                "sortOrder",
                "startIndex",
                "count",
            ];
            let Some(name) = known.into_iter().find(|n| n.eq_ignore_ascii_case(k)) else {
                continue;
            };
            if seen.iter().any(|s| s == name) {
                return Err(ScimError::InvalidValue(format!(
                    "the query parameter \"{name}\" is given more than once; give it once"
                )));
            }
            seen.push(name.to_owned());
            let v = Some(v).filter(|v| !v.trim().is_empty());
            match name {
                "attributes" => raw.attributes = v.into_iter().collect(),
                "excludedAttributes" => raw.excluded_attributes = v.into_iter().collect(),
                "filter" => raw.filter = v,
                "sortBy" => raw.sort_by = v,
                "sortOrder" => raw.sort_order = v,
                "startIndex" => raw.start_index = v,
                _ => raw.count = v,
            }
        }
        let query = Self::build(raw, max_count)?;
        if let Some(f) = &query.filter
            && names_password(f)
        {
            return Err(ScimError::Sensitive(
                "the filter names the password attribute in the URL, where it would be logged; \
                 passwords cannot be searched"
                    .into(),
            ));
        }
        Ok(query)
    }

    /// From a raw query string (`filter=userName%20eq%20%22x%22&count=10`, without the
    /// `?`), decoded as `application/x-www-form-urlencoded`; then as
    /// [`ListQuery::from_query`].
    pub fn parse(raw: &str, max_count: impl Into<u64>) -> Result<Self, ScimError> {
        let mut pairs = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            pairs.push((form_decode(k)?, form_decode(v)?));
        }
        Self::from_query(pairs, max_count)
    }

    /// Whether the order is descending (for [`crate::directory::SortKey::reverse`]).
    pub fn descending(&self) -> bool {
        self.sort_order == SortOrder::Descending
    }

    fn build(raw: RawQuery, max_count: u64) -> Result<Self, ScimError> {
        let filter = raw.filter.as_deref().map(parse_filter).transpose()?;
        let sort_by = raw
            .sort_by
            .as_deref()
            .map(|s| attr_path("sortBy", s))
            .transpose()?;
        let sort_order = raw
            .sort_order
            .as_deref()
            .map(SortOrder::parse)
            .transpose()?
            .unwrap_or_default();
        let start_index = match raw.start_index.as_deref() {
            None => 1,
            Some(s) => integer("startIndex", s)?.max(1) as u64,
        };
        let count = match raw.count.as_deref() {
            None => max_count,
            Some(s) => (integer("count", s)?.max(0) as u64).min(max_count),
        };
        Ok(Self {
            filter,
            sort_by,
            sort_order,
            start_index,
            count,
            attributes: attribute_list("attributes", &raw.attributes)?,
            excluded_attributes: attribute_list("excludedAttributes", &raw.excluded_attributes)?,
        })
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; the
/// result must be UTF-8.
fn form_decode(s: &str) -> Result<String, ScimError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let byte = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        ScimError::InvalidValue(format!(
                            "the query string has a malformed %-escape in \"{}\"; encode \"%\" as %25",
                            truncate(s)
                        ))
                    })?;
                out.push(byte);
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| {
        ScimError::InvalidValue(
            "the query string is not UTF-8 once decoded; encode text as UTF-8".into(),
        )
    })
}

/// Whether any attribute path of `f` names `password`.
fn names_password(f: &Filter) -> bool {
    match f {
        Filter::Compare { path, .. } | Filter::Present(path) => {
            path.name_is("password") || path.sub_attr_is(Some("password"))
        }
        Filter::And(a, b) | Filter::Or(a, b) => names_password(a) || names_password(b),
        Filter::Not(a) => names_password(a),
        Filter::ValuePath { path, filter } => path.name_is("password") || names_password(filter),
    }
}

/// An integer query parameter; digits beyond `i64` saturate.
fn integer(name: &str, s: &str) -> Result<i64, ScimError> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i64>() {
        return Ok(n);
    }
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(if t.starts_with('-') {
            i64::MIN
        } else {
            i64::MAX
        });
    }
    Err(ScimError::InvalidValue(format!(
        "{name} is \"{}\"; it must be an integer",
        truncate(s)
    )))
}

fn attr_path(param: &str, s: &str) -> Result<AttrPath, ScimError> {
    match parse_path(s.trim()) {
        Ok(p) if p.filter.is_none() => Ok(p.attr),
        Ok(_) => Err(ScimError::InvalidValue(format!(
            "{param}: \"{}\" has a value filter; name attributes only, e.g. emails.value",
            truncate(s)
        ))),
        Err(e) => Err(ScimError::InvalidValue(format!(
            "{param}: \"{}\" is not an attribute path ({e})",
            truncate(s)
        ))),
    }
}

/// Comma-separated attribute paths (RFC 7644 §3.4.2.5), from one or more strings.
fn attribute_list(param: &str, values: &[String]) -> Result<Vec<AttrPath>, ScimError> {
    let mut out = Vec::new();
    for v in values {
        for part in v.split(',') {
            if part.trim().is_empty() {
                continue;
            }
            out.push(attr_path(param, part)?);
        }
    }
    Ok(out)
}

/// An attribute selection (`attributes` or `excludedAttributes`), resolved against the
/// schema: whole schemas, whole attributes, and sub-attributes.
struct Selection {
    /// Whether any path was given (even ones that select nothing).
    given: bool,
    /// Extension URNs or the core URN, canonical spelling.
    schemas: Vec<String>,
    /// (extension URN or `None`, attribute name, sub-attribute name), canonical spelling.
    attrs: Vec<(Option<String>, String, Option<String>)>,
}

impl Selection {
    fn new(paths: &[AttrPath], schema: &ResourceSchema) -> Self {
        let mut sel = Selection {
            given: !paths.is_empty(),
            schemas: Vec::new(),
            attrs: Vec::new(),
        };
        for p in paths {
            if let Some(ext) = schema.path_as_extension(p) {
                sel.schemas.push(ext.to_owned());
            } else if p.sub_attr.is_none() && schema.is_core_urn(&p.full_urn()) {
                sel.schemas.push(schema.core.id.clone());
            } else if let Some(r) = schema.resolve(p) {
                sel.attrs.push((
                    r.extension.map(str::to_owned),
                    r.attr.name.clone(),
                    r.sub.map(|s| s.name.clone()),
                ));
            }
            // Attributes this resource type does not have select nothing.
        }
        sel
    }

    fn is_empty(&self) -> bool {
        !self.given
    }

    fn has_schema(&self, ext: Option<&str>, schema: &ResourceSchema) -> bool {
        let urn = ext.unwrap_or(&schema.core.id);
        self.schemas.iter().any(|s| s == urn)
    }

    fn whole(&self, ext: Option<&str>, attr: &str) -> bool {
        self.attrs
            .iter()
            .any(|(e, a, s)| e.as_deref() == ext && a == attr && s.is_none())
    }

    fn subs(&self, ext: Option<&str>, attr: &str) -> Vec<&str> {
        self.attrs
            .iter()
            .filter(|(e, a, _)| e.as_deref() == ext && a == attr)
            .filter_map(|(_, _, s)| s.as_deref())
            .collect()
    }
}

/// Keep only what a client should see of `resource` (RFC 7644 §3.4.2.5, RFC 7643 §7):
///
/// - `returned: never` (the password) is never returned, whatever was asked;
/// - `always` (`id`, `schemas`) is always returned, and cannot be excluded;
/// - with `attributes`: only the listed attributes (whole, or the listed sub-attributes;
///   a schema URN lists every attribute of that schema), plus the `always` ones;
/// - without: every `default` attribute; `request` ones (User `groups`) are left out;
/// - `excluded` then removes attributes or sub-attributes (never `always` ones).
///
/// Names match ignoring case, qualified with their schema URN or not. Extension objects
/// left empty are removed, and `schemas` lists only what remains.
pub fn project(
    resource: &mut Value,
    attributes: &[AttrPath],
    excluded: &[AttrPath],
    schema: &ResourceSchema,
) {
    let Value::Object(map) = resource else {
        return;
    };
    let include = Selection::new(attributes, schema);
    let exclude = Selection::new(excluded, schema);
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        if key.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if let Some(ext) = schema.extension_urn(&key).map(str::to_owned) {
            let mut keep = false;
            if let Some(Value::Object(inner)) = map.get_mut(&key) {
                let inner_keys: Vec<String> = inner.keys().cloned().collect();
                for k in inner_keys {
                    match schema.top(Some(&ext), &k) {
                        Some((_, attr)) => project_attribute(
                            inner,
                            &k,
                            Some(&ext),
                            attr,
                            &include,
                            &exclude,
                            schema,
                        ),
                        None => {
                            inner.remove(&k);
                        }
                    }
                }
                keep = !inner.is_empty();
            }
            if !keep {
                map.remove(&key);
            }
            continue;
        }
        match schema.core.attribute(&key) {
            Some(attr) => project_attribute(map, &key, None, attr, &include, &exclude, schema),
            None => {
                if !include.is_empty() {
                    map.remove(&key);
                }
            }
        }
    }
    let present: Vec<String> = map.keys().cloned().collect();
    if let Some(Value::Array(urns)) = map.get_mut("schemas") {
        urns.retain(|u| {
            u.as_str().is_none_or(|u| {
                schema.is_core_urn(u)
                    || schema.extension_urn(u).is_none()
                    || present.iter().any(|k| k.eq_ignore_ascii_case(u))
            })
        });
    }
}

fn project_attribute(
    map: &mut Map<String, Value>,
    key: &str,
    ext: Option<&str>,
    attr: &Attribute,
    include: &Selection,
    exclude: &Selection,
    schema: &ResourceSchema,
) {
    let name = attr.name.as_str();
    // Which sub-attributes to keep: None = all of them.
    let mut only: Option<Vec<&str>> = None;
    match attr.returned {
        Returned::Never => {
            map.remove(key);
            return;
        }
        Returned::Always => {}
        Returned::Default | Returned::Request => {
            if !include.is_empty() {
                if include.has_schema(ext, schema) || include.whole(ext, name) {
                    // the whole attribute
                } else {
                    let subs = include.subs(ext, name);
                    if subs.is_empty() {
                        map.remove(key);
                        return;
                    }
                    only = Some(subs);
                }
            } else if attr.returned == Returned::Request {
                map.remove(key);
                return;
            }
            if exclude.whole(ext, name) || exclude.has_schema(ext, schema) {
                map.remove(key);
                return;
            }
        }
    }
    let excluded_subs = if attr.returned == Returned::Always {
        Vec::new()
    } else {
        exclude.subs(ext, name)
    };
    if attr.sub_attributes.is_empty() {
        return;
    }
    let keep_sub = |k: &str| -> bool {
        let Some(sub) = attr.sub(k) else {
            return only.is_none();
        };
        match sub.returned {
            Returned::Never => false,
            Returned::Always => true,
            _ => {
                only.as_ref()
                    .is_none_or(|o| o.iter().any(|s| s.eq_ignore_ascii_case(&sub.name)))
                    && !excluded_subs
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(&sub.name))
            }
        }
    };
    let Some(value) = map.get_mut(key) else {
        return;
    };
    let empty = match value {
        Value::Object(o) => {
            o.retain(|k, _| keep_sub(k));
            o.is_empty()
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                if let Value::Object(o) = item {
                    o.retain(|k, _| keep_sub(k));
                }
            }
            items.retain(|i| !matches!(i, Value::Object(o) if o.is_empty()));
            items.is_empty()
        }
        _ => false,
    };
    if empty {
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn password_only_patches_are_recognised() {
        let req = |ops: Value| {
            PatchRequest::from_json(&json!({"schemas": [PATCH_OP], "Operations": ops}))
                .expect("valid patch")
        };
        let pw = |r: &PatchRequest| r.password_only().map(|s| s.expose().to_owned());
        assert_eq!(
            pw(&req(
                json!([{"op": "replace", "path": "password", "value": "A-1"}])
            )),
            Some("A-1".into())
        );
        assert_eq!(
            pw(&req(
                json!([{"op": "Replace", "value": {"Password": "B-2"}}])
            )),
            Some("B-2".into()),
            "Okta's path-less form"
        );
        assert_eq!(
            pw(&req(
                json!([{"op": "add", "path": format!("{}:password", crate::scim::filter::CORE_USER), "value": "C-3"}])
            )),
            Some("C-3".into())
        );
        for not_only in [
            json!([{"op": "replace", "value": {"password": "x", "active": true}}]),
            json!([{"op": "replace", "path": "password", "value": "x"}, {"op": "replace", "path": "displayName", "value": "y"}]),
            json!([{"op": "remove", "path": "password"}]),
            json!([{"op": "replace", "path": "password", "value": 7}]),
            json!([{"op": "replace", "path": "password", "value": ""}]),
            json!([{"op": "replace", "path": "urn:example:password", "value": "x"}]),
        ] {
            assert_eq!(pw(&req(not_only.clone())), None, "{not_only}");
        }
    }

    #[test]
    fn secrets_in_bodies_are_overwritten_and_never_shown() {
        let mut body = json!({
            "userName": "bob",
            "Password": "Zq-1-secret",
            "nested": [{"password": "Zq-2-secret"}],
        });
        assert!(holds_secret(&body));
        scrub_secrets(&mut body);
        let text = body.to_string();
        assert!(!text.contains("Zq-"), "{text}");
        assert_eq!(body["userName"], "bob", "other values are kept");

        let op = PatchOperation {
            op: PatchOpKind::Replace,
            path: Some("password".into()),
            value: Some(json!("Zq-3-secret")),
        };
        assert!(!format!("{op:?}").contains("Zq-3"));
        let op = PatchOperation {
            op: PatchOpKind::Replace,
            path: None,
            value: Some(json!({"password": "Zq-4-secret", "active": true})),
        };
        assert!(!format!("{op:?}").contains("Zq-4"));
        let plain = PatchOperation {
            op: PatchOpKind::Replace,
            path: Some("displayName".into()),
            value: Some(json!("Bob")),
        };
        assert!(
            format!("{plain:?}").contains("Bob"),
            "ordinary values stay visible"
        );

        let request = RequestBody(json!({"password": "Zq-5-secret"}));
        assert!(!format!("{request:?}").contains("Zq-5"));
    }

    use super::*;
    use crate::scim::filter::{ENTERPRISE_USER, PASSWORD_EXTENSION};
    use proptest::prelude::*;
    use rstest::rstest;
    use serde_json::json;

    #[test]
    fn list_response_serializes_with_rfc_member_names() {
        let r = ListResponse::new(10, 3, vec![json!({"id": "1"})]);
        assert_eq!(r.to_value(), serde_json::to_value(&r).expect("serializes"));
        assert_eq!(
            r.to_value(),
            json!({
                "schemas": [LIST_RESPONSE],
                "totalResults": 10,
                "startIndex": 3,
                "itemsPerPage": 1,
                "Resources": [{"id": "1"}]
            })
        );
    }

    #[rstest]
    #[case("add", PatchOpKind::Add)]
    #[case("Add", PatchOpKind::Add)]
    #[case("REPLACE", PatchOpKind::Replace)]
    #[case("Replace", PatchOpKind::Replace)]
    #[case("remove", PatchOpKind::Remove)]
    #[case("Remove", PatchOpKind::Remove)]
    fn patch_op_is_read_in_any_case(#[case] op: &str, #[case] kind: PatchOpKind) {
        let body = json!({"schemas": [PATCH_OP], "Operations": [{"op": op, "path": "title", "value": "x"}]});
        let req = PatchRequest::from_json(&body).expect("valid");
        assert_eq!(req.operations[0].op, kind);
    }

    #[test]
    fn patch_request_reads_entra_id_example() {
        // Microsoft Entra ID: "Update user [Multi-valued properties]"
        let body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@microsoft.com"},
                {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"}
            ]
        });
        let req: PatchRequest = serde_json::from_value(body).expect("valid");
        assert_eq!(req.operations.len(), 2);
        assert_eq!(
            req.operations[0].path.as_deref(),
            Some("emails[type eq \"work\"].value")
        );
        assert_eq!(req.operations[1].value, Some(json!("updatedFamilyName")));
    }

    #[test]
    fn patch_request_member_names_in_any_case_and_empty_path_is_absent() {
        let body = json!({"SCHEMAS": [PATCH_OP.to_uppercase()], "operations": [{"OP": "remove", "Path": " ", "Value": null}]});
        let req = PatchRequest::from_json(&body).expect("valid");
        assert_eq!(
            req.operations,
            [PatchOperation {
                op: PatchOpKind::Remove,
                path: None,
                value: None
            }]
        );
    }

    #[rstest]
    #[case(json!([]), "JSON object")]
    #[case(json!({"Operations": []}), "must contain")]
    #[case(json!({"schemas": ["urn:x"], "Operations": []}), "must contain")]
    #[case(json!({"schemas": [PATCH_OP]}), "\"Operations\" must be an array")]
    #[case(json!({"schemas": [PATCH_OP], "Operations": [1]}), "operation 1 must be an object")]
    #[case(json!({"schemas": [PATCH_OP], "Operations": [{"op": "move"}]}), "\"move\", but must be add")]
    #[case(json!({"schemas": [PATCH_OP], "Operations": [{"path": "x"}]}), "\"op\" must be")]
    fn patch_request_refuses_malformed_bodies(#[case] body: Value, #[case] reason: &str) {
        let e = PatchRequest::from_json(&body).expect_err("invalid");
        assert_eq!(e.scim_type(), Some("invalidSyntax"), "{e}");
        assert!(e.to_string().contains(reason), "{e}");
    }

    #[test]
    fn patch_path_of_the_wrong_type_is_invalid_path() {
        let body = json!({"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": 5}]});
        let e = PatchRequest::from_json(&body).expect_err("invalid");
        assert_eq!(e.scim_type(), Some("invalidPath"));
    }

    fn q(params: &[(&str, &str)]) -> Result<ListQuery, ScimError> {
        ListQuery::from_query(params.iter().copied(), 100u64)
    }

    #[test]
    fn raw_query_strings_are_decoded() {
        let query = ListQuery::parse(
            "filter=userName%20eq%20%22bjensen%22&sortOrder=descending&count=5&attributes=userName,name.givenName&x",
            100u32,
        )
        .expect("valid");
        assert_eq!(
            query.filter.as_ref().map(|f| f.to_string()).as_deref(),
            Some("userName eq \"bjensen\"")
        );
        assert!(query.descending());
        assert_eq!(query.count, 5);
        assert_eq!(query.attributes.len(), 2);
        let query = ListQuery::parse("filter=displayName+sw+%22J%C3%BCr%22", 10u64).expect("valid");
        assert_eq!(
            query.filter.as_ref().map(|f| f.to_string()).as_deref(),
            Some("displayName sw \"Jür\"")
        );
        for bad in ["filter=%zz", "filter=%e9", "count=%"] {
            let e = ListQuery::parse(bad, 10u64).expect_err(bad);
            assert_eq!(e.scim_type(), Some("invalidValue"), "{bad}: {e}");
        }
        assert_eq!(ListQuery::parse("", 7u64).expect("valid").count, 7);
    }

    #[test]
    fn list_query_defaults() {
        let query = q(&[]).expect("valid");
        assert_eq!(query.start_index, 1);
        assert_eq!(query.count, 100);
        assert_eq!(query.sort_order, SortOrder::Ascending);
        assert!(query.filter.is_none() && query.sort_by.is_none());
        assert!(query.attributes.is_empty() && query.excluded_attributes.is_empty());
    }

    #[rstest]
    #[case("0", 1)]
    #[case("-5", 1)]
    #[case("1", 1)]
    #[case("42", 42)]
    #[case("99999999999999999999999", i64::MAX as u64)]
    fn start_index_below_one_is_one(#[case] given: &str, #[case] expected: u64) {
        assert_eq!(
            q(&[("startIndex", given)]).expect("valid").start_index,
            expected
        );
    }

    #[rstest]
    #[case("-1", 0)]
    #[case("0", 0)]
    #[case("10", 10)]
    #[case("1000", 100)]
    #[case("-99999999999999999999999", 0)]
    fn count_is_clamped_to_zero_and_the_maximum(#[case] given: &str, #[case] expected: u64) {
        assert_eq!(q(&[("count", given)]).expect("valid").count, expected);
    }

    #[rstest]
    #[case("ascending", SortOrder::Ascending)]
    #[case("DESCENDING", SortOrder::Descending)]
    #[case("Descending", SortOrder::Descending)]
    fn sort_order_in_any_case(#[case] given: &str, #[case] expected: SortOrder) {
        let query = q(&[("sortBy", "userName"), ("sortOrder", given)]).expect("valid");
        assert_eq!(query.sort_order, expected);
        assert_eq!(query.sort_by, Some(AttrPath::new("userName")));
    }

    #[rstest]
    #[case(&[("sortOrder", "up")], "invalidValue", "ascending")]
    #[case(&[("count", "ten")], "invalidValue", "must be an integer")]
    #[case(&[("startIndex", "1.5")], "invalidValue", "must be an integer")]
    #[case(&[("filter", "userName equals \"x\"")], "invalidFilter", "at character 9")]
    #[case(&[("filter", "password eq \"hunter2\"")], "sensitive", "password")]
    #[case(&[("filter", "userName eq \"a\" or PASSWORD pr")], "sensitive", "password")]
    #[case(&[("attributes", "emails[type eq \"work\"]")], "invalidValue", "value filter")]
    #[case(&[("sortBy", "name..x")], "invalidValue", "not an attribute path")]
    #[case(&[("count", "1"), ("COUNT", "2")], "invalidValue", "more than once")]
    fn list_query_refusals(
        #[case] params: &[(&str, &str)],
        #[case] scim_type: &str,
        #[case] reason: &str,
    ) {
        let e = q(params).expect_err("invalid");
        assert_eq!(e.scim_type(), Some(scim_type), "{e}");
        assert!(e.to_string().contains(reason), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn list_query_parameter_names_ignore_case_and_unknown_ones_are_ignored() {
        let query = q(&[
            ("FILTER", "userName eq \"bjensen\""),
            ("Attributes", "userName, name.givenName,,emails"),
            ("excludedattributes", "meta"),
            ("aadOptscim062020", "true"),
            ("startIndex", ""),
        ])
        .expect("valid");
        assert!(query.filter.is_some());
        assert_eq!(
            query.attributes,
            [
                AttrPath::new("userName"),
                AttrPath::new("name").with_sub_attr("givenName"),
                AttrPath::new("emails")
            ]
        );
        assert_eq!(query.excluded_attributes, [AttrPath::new("meta")]);
        assert_eq!(query.start_index, 1);
    }

    #[test]
    fn search_request_body_is_read_leniently() {
        let body = json!({
            "schemas": [SEARCH_REQUEST],
            "attributes": ["displayName", "userName"],
            "excludedAttributes": "meta",
            "filter": "displayName sw \"smith\"",
            "sortBy": "userName",
            "SortOrder": "descending",
            "startIndex": 1,
            "count": "10"
        });
        let query = SearchRequest::from_json(&body)
            .and_then(|s| s.into_query(50u64))
            .expect("valid");
        assert_eq!(query.attributes.len(), 2);
        assert_eq!(query.excluded_attributes, [AttrPath::new("meta")]);
        assert_eq!(query.sort_order, SortOrder::Descending);
        assert_eq!(query.count, 10);
        // a password filter in a body is not `sensitive` (translation refuses it later)
        let body = json!({"filter": "password eq \"x\""});
        assert!(
            SearchRequest::from_json(&body)
                .and_then(|s| s.into_query(50u64))
                .is_ok()
        );
        let e = SearchRequest::from_json(&json!({"count": true})).expect_err("invalid");
        assert_eq!(e.scim_type(), Some("invalidValue"));
        let e = SearchRequest::from_json(&json!({"attributes": [1]})).expect_err("invalid");
        assert_eq!(e.scim_type(), Some("invalidValue"));
    }

    fn user() -> Value {
        json!({
            "schemas": [
                "urn:ietf:params:scim:schemas:core:2.0:User",
                ENTERPRISE_USER,
                PASSWORD_EXTENSION
            ],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "bjensen",
            "userName": "bjensen",
            "name": {"formatted": "Barbara Jensen", "familyName": "Jensen", "givenName": "Barbara"},
            "displayName": "Babs",
            "active": true,
            "password": "must never leave",
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@example.com", "type": "work"}
            ],
            "groups": [{"value": "g1", "display": "Admins"}],
            ENTERPRISE_USER: {"department": "Tour Operations", "manager": {"value": "m1", "$ref": "https://x/Users/m1"}},
            PASSWORD_EXTENSION: {"mustChange": false, "neverExpires": false},
            "meta": {"resourceType": "User", "version": "W/\"1\""}
        })
    }

    fn paths(list: &[&str]) -> Vec<AttrPath> {
        list.iter().map(|s| parse_path(s).expect(s).attr).collect()
    }

    fn projected(attributes: &[&str], excluded: &[&str]) -> Value {
        let mut u = user();
        project(
            &mut u,
            &paths(attributes),
            &paths(excluded),
            ResourceSchema::user(),
        );
        u
    }

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    }

    #[test]
    fn default_projection_drops_never_and_request_attributes() {
        let u = projected(&[], &[]);
        assert!(u.get("password").is_none());
        assert!(
            u[PASSWORD_EXTENSION].get("neverExpires").is_none(),
            "neverExpires is returned on request only"
        );
        assert!(u.get("groups").is_some(), "groups is returned by default");
        assert_eq!(u["userName"], "bjensen");
        assert_eq!(u["meta"]["resourceType"], "User");
        assert_eq!(u[ENTERPRISE_USER]["department"], "Tour Operations");
    }

    #[test]
    fn attributes_selects_plus_always_returned() {
        // RFC 7644 §3.9: attributes=userName gives id, schemas and userName
        let u = projected(&["userName"], &[]);
        assert_eq!(keys(&u), ["id", "schemas", "userName"]);
        assert_eq!(
            u["schemas"],
            json!(["urn:ietf:params:scim:schemas:core:2.0:User"])
        );
    }

    #[test]
    fn attributes_are_case_insensitive_and_may_be_qualified() {
        let u = projected(
            &[
                "USERNAME",
                "urn:ietf:params:scim:schemas:core:2.0:User:displayName",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user:DEPARTMENT",
            ],
            &[],
        );
        assert_eq!(
            keys(&u),
            ["displayName", "id", "schemas", ENTERPRISE_USER, "userName"]
        );
        assert_eq!(keys(&u[ENTERPRISE_USER]), ["department"]);
        assert_eq!(
            u["schemas"],
            json!([
                "urn:ietf:params:scim:schemas:core:2.0:User",
                ENTERPRISE_USER
            ])
        );
    }

    #[test]
    fn sub_attributes_select_inside_complex_and_multi_valued_attributes() {
        let u = projected(&["name.givenName", "emails.value"], &[]);
        assert_eq!(u["name"], json!({"givenName": "Barbara"}));
        assert_eq!(
            u["emails"],
            json!([{"value": "bjensen@example.com"}, {"value": "babs@example.com"}])
        );
        // a sub-attribute nobody has: the attribute disappears
        let u = projected(&["name.formatted", "manager.displayName"], &[]);
        assert!(u.get(ENTERPRISE_USER).is_none());
    }

    #[test]
    fn a_whole_extension_urn_selects_every_attribute_of_it() {
        let u = projected(&[ENTERPRISE_USER], &[]);
        assert_eq!(keys(&u[ENTERPRISE_USER]), ["department", "manager"]);
        assert!(u.get("userName").is_none());
        let u = projected(&[], &[ENTERPRISE_USER]);
        assert!(u.get(ENTERPRISE_USER).is_none());
        assert!(
            !u["schemas"]
                .as_array()
                .is_some_and(|s| s.iter().any(|x| x == ENTERPRISE_USER))
        );
    }

    #[test]
    fn groups_are_returned_when_asked_for() {
        let u = projected(&["groups"], &[]);
        assert_eq!(u["groups"][0]["display"], "Admins");
        let u = projected(&["userName", "groups.value"], &[]);
        assert_eq!(u["groups"], json!([{"value": "g1"}]));
    }

    #[test]
    fn excluded_attributes_remove_default_but_never_always_ones() {
        let u = projected(&[], &["id", "schemas", "meta", "name.familyName", "EMAILS"]);
        assert_eq!(u["id"], "2819c223-7f76-453a-919d-413861904646");
        assert!(u.get("schemas").is_some());
        assert!(u.get("meta").is_none());
        assert!(u.get("emails").is_none());
        assert_eq!(keys(&u["name"]), ["formatted", "givenName"]);
    }

    #[test]
    fn password_is_never_returned_even_when_asked_for() {
        let u = projected(&["password", "userName"], &[]);
        assert!(u.get("password").is_none());
        let u = projected(&["urn:ietf:params:scim:schemas:core:2.0:User"], &[]);
        assert!(u.get("password").is_none());
        assert_eq!(u["userName"], "bjensen");
    }

    #[test]
    fn unknown_attribute_names_select_nothing() {
        let u = projected(&["nickName"], &[]);
        assert_eq!(keys(&u), ["id", "schemas"]);
        let u = projected(&[], &["nickName"]);
        assert_eq!(u["userName"], "bjensen");
    }

    fn contains_password(v: &Value) -> bool {
        match v {
            Value::Object(o) => o
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case("password") || contains_password(v)),
            Value::Array(a) => a.iter().any(contains_password),
            Value::String(s) => s.contains("must never leave"),
            _ => false,
        }
    }

    proptest! {
        /// Whatever is asked for or excluded, the password never comes back and `id`
        /// always does.
        #[test]
        fn projection_never_returns_password(
            attributes in prop::collection::vec(prop::sample::select(&[
                "password", "PASSWORD", "userName", "name", "name.givenName", "emails.value",
                "groups", "meta", "id", "urn:ietf:params:scim:schemas:core:2.0:User",
                "urn:ietf:params:scim:schemas:core:2.0:User:password",
                ENTERPRISE_USER, "manager", "mustChange", "nickName",
            ][..]), 0..5),
            excluded in prop::collection::vec(prop::sample::select(&[
                "password", "id", "emails", "name.formatted", "schemas", PASSWORD_EXTENSION,
            ][..]), 0..3),
        ) {
            let u = projected(&attributes, &excluded);
            prop_assert!(!contains_password(&u), "{}", u);
            prop_assert_eq!(&u["id"], "2819c223-7f76-453a-919d-413861904646");
        }
    }
}

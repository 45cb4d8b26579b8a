//! The discovery documents (RFC 7644 §4) and the schema view the rest of the SCIM code
//! works from.
//!
//! `scim/ServiceProviderConfig.json`, `scim/ResourceTypes.json` and `scim/Schemas.json`
//! (top-level folder of the crate) are compiled in and parsed once. They list only what
//! the LDAP mapping stores, with its true mutability and `returned`: a client (or a
//! conformance tester) that writes a listed, writable attribute gets the same value back.
//!
//! [`ResourceSchema`] is the same schemas as a lookup structure: for an attribute path
//! (any case, URN-qualified or not) its type, multiplicity, mutability, `returned`, case
//! sensitivity, uniqueness and sub-attributes. The common attributes (`id`, `externalId`,
//! `meta`; RFC 7643 §3.1), which no schema lists, are part of it.

use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::filter::{AttrPath, CORE_GROUP, CORE_USER, ENTERPRISE_USER, PASSWORD_EXTENSION};

const SERVICE_PROVIDER_CONFIG_JSON: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/scim/ServiceProviderConfig.json"
));
const RESOURCE_TYPES_JSON: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/scim/ResourceTypes.json"
));
const SCHEMAS_JSON: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/scim/Schemas.json"));

/// The schema URN of a schema representation (RFC 7643 §7).
pub const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// An attribute's data type (RFC 7643 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AttrType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Binary,
    Reference,
    Complex,
}

/// Whether and how an attribute may be written (RFC 7643 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

/// When an attribute is returned (RFC 7643 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

/// How unique a value must be (RFC 7643 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Uniqueness {
    None,
    Server,
    Global,
}

/// One attribute definition (RFC 7643 §7).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attribute {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: AttrType,
    #[serde(default)]
    pub multi_valued: bool,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    #[serde(default = "no_uniqueness")]
    pub uniqueness: Uniqueness,
    #[serde(default)]
    pub canonical_values: Vec<String>,
    #[serde(default)]
    pub sub_attributes: Vec<Attribute>,
}

fn no_uniqueness() -> Uniqueness {
    Uniqueness::None
}

impl Attribute {
    /// The sub-attribute `name` (any case).
    pub fn sub(&self, name: &str) -> Option<&Attribute> {
        self.sub_attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// Neither readOnly nor immutable: a client may change it.
    pub fn is_writable(&self) -> bool {
        matches!(
            self.mutability,
            Mutability::ReadWrite | Mutability::WriteOnly
        )
    }

    fn simple(name: &str, kind: AttrType, mutability: Mutability, returned: Returned) -> Self {
        Attribute {
            name: name.to_owned(),
            kind,
            multi_valued: false,
            required: false,
            case_exact: false,
            mutability,
            returned,
            uniqueness: Uniqueness::None,
            canonical_values: Vec::new(),
            sub_attributes: Vec::new(),
        }
    }
}

/// One schema (RFC 7643 §7): its URN and attributes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SchemaDef {
    pub id: String,
    pub name: String,
    pub attributes: Vec<Attribute>,
}

impl SchemaDef {
    /// The attribute `name` (any case).
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }
}

/// Where an attribute path leads in a [`ResourceSchema`].
#[derive(Debug, Clone, Copy)]
pub struct Resolved<'s> {
    /// The extension URN holding the attribute (canonical spelling); `None`: the core
    /// schema or a common attribute, at the top level of the resource.
    pub extension: Option<&'s str>,
    /// The (top-level) attribute.
    pub attr: &'s Attribute,
    /// The sub-attribute, when the path names one.
    pub sub: Option<&'s Attribute>,
}

impl Resolved<'_> {
    /// The attribute the path ends at: the sub-attribute if there is one.
    pub fn target(&self) -> &Attribute {
        self.sub.unwrap_or(self.attr)
    }
}

/// A resource type's schemas as a lookup structure: core schema, extensions and common
/// attributes. Lookups ignore case and accept URN-qualified and unqualified names (an
/// unqualified name is looked up in the core schema, then in the extensions, whose
/// attribute names are unique).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceSchema {
    /// `User` or `Group`.
    pub resource_type: String,
    /// The core schema, with the common attributes `id`, `externalId`, `meta` added.
    pub core: SchemaDef,
    /// The schema extensions, in the order the resource type lists them.
    pub extensions: Vec<SchemaDef>,
}

impl ResourceSchema {
    /// The User resource type: core User, enterprise User and the lockbridge password
    /// extension (with `externalId`; see [`ResourceSchema::without`]).
    pub fn user() -> &'static ResourceSchema {
        &DISCOVERY.user
    }

    /// The Group resource type.
    pub fn group() -> &'static ResourceSchema {
        &DISCOVERY.group
    }

    /// The same schema without the top-level attribute `name` (e.g. `externalId` when the
    /// mapping does not store it).
    pub fn without(&self, name: &str) -> ResourceSchema {
        let mut out = self.clone();
        out.core
            .attributes
            .retain(|a| !a.name.eq_ignore_ascii_case(name));
        out
    }

    /// The same schema without each attribute of `hidden` (attributes the directory has
    /// no home for: they are not offered, and writes of them are ignored).
    pub fn hiding(&self, hidden: &[Hidden]) -> ResourceSchema {
        let mut out = self.clone();
        for h in hidden {
            let defs = std::iter::once(&mut out.core).chain(out.extensions.iter_mut());
            for def in defs.filter(|d| d.id.eq_ignore_ascii_case(h.urn)) {
                h.remove_from(&mut def.attributes);
            }
        }
        out
    }

    /// The canonical URN of the extension `urn` (any case), if it is one of this
    /// resource type's extensions.
    pub fn extension_urn(&self, urn: &str) -> Option<&str> {
        self.extensions
            .iter()
            .find(|e| e.id.eq_ignore_ascii_case(urn))
            .map(|e| e.id.as_str())
    }

    /// The extension URN a whole path stands for: `urn:…:enterprise:2.0:User` parses as
    /// URN `urn:…:enterprise:2.0`, name `User`; this gives the extension back.
    pub fn path_as_extension(&self, path: &AttrPath) -> Option<&str> {
        if path.sub_attr.is_some() {
            return None;
        }
        self.extension_urn(&path.full_urn())
    }

    /// Whether `urn` (any case) names the core schema.
    pub fn is_core_urn(&self, urn: &str) -> bool {
        self.core.id.eq_ignore_ascii_case(urn)
    }

    /// A top-level attribute: in the core schema (`urn` `None` or the core URN), or in the
    /// extension `urn`; unqualified names not in the core schema are looked up in the
    /// extensions.
    pub fn top(&self, urn: Option<&str>, name: &str) -> Option<(Option<&str>, &Attribute)> {
        match urn {
            None => self.core.attribute(name).map(|a| (None, a)).or_else(|| {
                self.extensions
                    .iter()
                    .find_map(|e| e.attribute(name).map(|a| (Some(e.id.as_str()), a)))
            }),
            Some(u) if self.is_core_urn(u) => self.core.attribute(name).map(|a| (None, a)),
            Some(u) => self.extensions.iter().find_map(|e| {
                if e.id.eq_ignore_ascii_case(u) {
                    e.attribute(name).map(|a| (Some(e.id.as_str()), a))
                } else {
                    None
                }
            }),
        }
    }

    /// Where `path` leads; `None` for an attribute (or sub-attribute) this resource type
    /// does not have.
    pub fn resolve(&self, path: &AttrPath) -> Option<Resolved<'_>> {
        let (extension, attr) = self.top(path.urn.as_deref(), &path.name)?;
        let sub = match &path.sub_attr {
            None => None,
            Some(s) => Some(attr.sub(s)?),
        };
        Some(Resolved {
            extension,
            attr,
            sub,
        })
    }

    /// The schema URNs of this resource type: core first, then the extensions.
    pub fn urns(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.core.id.as_str()).chain(self.extensions.iter().map(|e| e.id.as_str()))
    }
}

/// An attribute left out of the schema view: `urn`'s attribute `name`, or its
/// sub-attribute `sub`, or (with `canonical`) only that canonical value of `sub` (a type
/// of value the directory has no home for, such as `emails.type` `home`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hidden {
    pub urn: &'static str,
    pub name: &'static str,
    pub sub: Option<&'static str>,
    pub canonical: Option<&'static str>,
}

impl Hidden {
    /// The attribute `name` of `urn`.
    pub fn attribute(urn: &'static str, name: &'static str) -> Self {
        Hidden {
            urn,
            name,
            sub: None,
            canonical: None,
        }
    }

    /// The sub-attribute `name.sub` of `urn`.
    pub fn sub_attribute(urn: &'static str, name: &'static str, sub: &'static str) -> Self {
        Hidden {
            sub: Some(sub),
            ..Self::attribute(urn, name)
        }
    }

    /// The canonical value `value` of `name.sub`.
    pub fn canonical_value(
        urn: &'static str,
        name: &'static str,
        sub: &'static str,
        value: &'static str,
    ) -> Self {
        Hidden {
            canonical: Some(value),
            ..Self::sub_attribute(urn, name, sub)
        }
    }

    fn remove_from(&self, attributes: &mut Vec<Attribute>) {
        match (self.sub, self.canonical) {
            (None, _) => attributes.retain(|a| !a.name.eq_ignore_ascii_case(self.name)),
            (Some(sub), None) => {
                for a in attributes
                    .iter_mut()
                    .filter(|a| a.name.eq_ignore_ascii_case(self.name))
                {
                    a.sub_attributes
                        .retain(|s| !s.name.eq_ignore_ascii_case(sub));
                }
            }
            (Some(sub), Some(value)) => {
                for s in attributes
                    .iter_mut()
                    .filter(|a| a.name.eq_ignore_ascii_case(self.name))
                    .flat_map(|a| a.sub_attributes.iter_mut())
                    .filter(|s| s.name.eq_ignore_ascii_case(sub))
                {
                    s.canonical_values
                        .retain(|c| !c.eq_ignore_ascii_case(value));
                }
            }
        }
    }

    /// Removes the attribute from a schema document (`/Schemas/{urn}`).
    fn remove_from_document(&self, doc: &mut Value) {
        if !id_is(doc, self.urn) {
            return;
        }
        let Some(Value::Array(attributes)) = doc.get_mut("attributes") else {
            return;
        };
        let named = |v: &Value, name: &str| {
            v.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        };
        let Some(sub) = self.sub else {
            attributes.retain(|a| !named(a, self.name));
            return;
        };
        for a in attributes.iter_mut().filter(|a| named(a, self.name)) {
            let Some(Value::Array(subs)) = a.get_mut("subAttributes") else {
                continue;
            };
            match self.canonical {
                None => subs.retain(|s| !named(s, sub)),
                Some(value) => {
                    for s in subs.iter_mut().filter(|s| named(s, sub)) {
                        if let Some(Value::Array(values)) = s.get_mut("canonicalValues") {
                            values.retain(|v| {
                                !v.as_str().is_some_and(|v| v.eq_ignore_ascii_case(value))
                            });
                        }
                    }
                }
            }
        }
    }
}

/// The common attributes (RFC 7643 §3.1) as attribute definitions.
fn common_attributes() -> Vec<Attribute> {
    use AttrType::{DateTime, Reference, String};
    use Mutability::ReadOnly;
    let mut id = Attribute::simple("id", String, ReadOnly, Returned::Always);
    id.case_exact = true;
    id.uniqueness = Uniqueness::Server;
    let mut external_id = Attribute::simple(
        "externalId",
        String,
        Mutability::ReadWrite,
        Returned::Default,
    );
    external_id.case_exact = true;
    let mut meta = Attribute::simple("meta", AttrType::Complex, ReadOnly, Returned::Default);
    meta.sub_attributes = vec![
        Attribute::simple("resourceType", String, ReadOnly, Returned::Default),
        Attribute::simple("created", DateTime, ReadOnly, Returned::Default),
        Attribute::simple("lastModified", DateTime, ReadOnly, Returned::Default),
        Attribute::simple("location", Reference, ReadOnly, Returned::Default),
        Attribute::simple("version", String, ReadOnly, Returned::Default),
    ];
    for sub in &mut meta.sub_attributes {
        sub.case_exact = true;
    }
    vec![id, external_id, meta]
}

/// Everything parsed from the compiled-in documents.
struct Documents {
    service_provider_config: Value,
    resource_types: Vec<Value>,
    schemas: Vec<Value>,
    user: ResourceSchema,
    group: ResourceSchema,
}

static DISCOVERY: LazyLock<Documents> = LazyLock::new(|| match load() {
    Ok(d) => d,
    // The documents are compiled in and checked by the tests: this is a build defect.
    Err(e) => panic!("the compiled-in SCIM discovery documents are invalid: {e}"),
});

fn load() -> Result<Documents, String> {
    let parse = |name: &str, text: &str| -> Result<Value, String> {
        serde_json::from_str(text).map_err(|e| format!("{name}: {e}"))
    };
    let service_provider_config =
        parse("ServiceProviderConfig.json", SERVICE_PROVIDER_CONFIG_JSON)?;
    let resource_types = match parse("ResourceTypes.json", RESOURCE_TYPES_JSON)? {
        Value::Array(a) => a,
        _ => return Err("ResourceTypes.json: not an array".into()),
    };
    let schemas = match parse("Schemas.json", SCHEMAS_JSON)? {
        Value::Array(a) => a,
        _ => return Err("Schemas.json: not an array".into()),
    };
    let defs = schemas
        .iter()
        .map(|s| SchemaDef::deserialize(s).map_err(|e| format!("Schemas.json: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let find = |urn: &str| -> Result<SchemaDef, String> {
        defs.iter()
            .find(|d| d.id == urn)
            .cloned()
            .ok_or_else(|| format!("Schemas.json: no schema {urn}"))
    };
    let resource_schema =
        |name: &str, core: &str, extensions: &[&str]| -> Result<ResourceSchema, String> {
            let mut core = find(core)?;
            let mut attributes = common_attributes();
            attributes.append(&mut core.attributes);
            core.attributes = attributes;
            Ok(ResourceSchema {
                resource_type: name.to_owned(),
                core,
                extensions: extensions
                    .iter()
                    .map(|u| find(u))
                    .collect::<Result<_, _>>()?,
            })
        };
    let user = resource_schema("User", CORE_USER, &[ENTERPRISE_USER, PASSWORD_EXTENSION])?;
    let group = resource_schema("Group", CORE_GROUP, &[])?;
    Ok(Documents {
        service_provider_config,
        resource_types,
        schemas,
        user,
        group,
    })
}

/// The discovery endpoints of one SCIM service: the documents with `meta.location`
/// under its base URL, `filter.maxResults` set to its page limit, and without the
/// attributes its directory has no home for.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    base_url: String,
    max_results: u64,
    hidden: Vec<Hidden>,
    user: ResourceSchema,
    group: ResourceSchema,
}

impl Discovery {
    /// For the service at `base_url` (e.g. `https://idm.example.org/scim/v2`) serving at
    /// most `max_results` resources per page.
    pub fn new(base_url: impl Into<String>, max_results: u64) -> Self {
        Self {
            base_url: base_url.into(),
            max_results,
            hidden: Vec::new(),
            user: ResourceSchema::user().clone(),
            group: ResourceSchema::group().clone(),
        }
    }

    /// The same, without the attributes in `hidden`.
    pub fn hiding(mut self, hidden: &[Hidden]) -> Self {
        self.user = self.user.hiding(hidden);
        self.group = self.group.hiding(hidden);
        self.hidden = hidden.to_vec();
        self
    }

    fn visible(&self, mut doc: Value) -> Value {
        for h in &self.hidden {
            h.remove_from_document(&mut doc);
        }
        doc
    }

    /// `GET /ServiceProviderConfig`.
    pub fn service_provider_config(&self) -> Value {
        service_provider_config(&self.base_url, self.max_results)
    }

    /// `GET /ResourceTypes`: a ListResponse (RFC 7644 §4).
    pub fn resource_types_list(&self) -> Value {
        list(resource_types(&self.base_url))
    }

    /// `GET /ResourceTypes/{name}`.
    pub fn resource_type(&self, name: &str) -> Option<Value> {
        resource_type(&self.base_url, name)
    }

    /// `GET /Schemas`: a ListResponse (RFC 7644 §4).
    pub fn schemas_list(&self) -> Value {
        list(
            schemas(&self.base_url)
                .into_iter()
                .map(|d| self.visible(d))
                .collect(),
        )
    }

    /// `GET /Schemas/{urn}`.
    pub fn schema(&self, urn: &str) -> Option<Value> {
        schema(&self.base_url, urn).map(|d| self.visible(d))
    }

    /// The User schema view (with `externalId`; the mapping's own view,
    /// [`super::resource::UserMapping::schema`], leaves it out when it is not stored).
    pub fn user_schema(&self) -> &ResourceSchema {
        &self.user
    }

    /// The Group schema view.
    pub fn group_schema(&self) -> &ResourceSchema {
        &self.group
    }
}

fn list(resources: Vec<Value>) -> Value {
    let total = resources.len() as u64;
    super::model::ListResponse::new(total, 1, resources).to_value()
}

fn trim_base(base_url: &str) -> &str {
    base_url.trim_end_matches('/')
}

fn set_meta(doc: &mut Value, resource_type: &str, location: String) {
    if let Value::Object(map) = doc {
        let mut meta = Map::new();
        meta.insert("resourceType".into(), Value::String(resource_type.into()));
        meta.insert("location".into(), Value::String(location));
        map.insert("meta".into(), Value::Object(meta));
    }
}

/// `GET /ServiceProviderConfig`: the document with `filter.maxResults` set to
/// `max_results` and `meta.location` under `base_url` (e.g. `https://idm.example.org/scim/v2`).
pub fn service_provider_config(base_url: &str, max_results: u64) -> Value {
    let mut doc = DISCOVERY.service_provider_config.clone();
    if let Some(filter) = doc.get_mut("filter").and_then(Value::as_object_mut) {
        filter.insert("maxResults".into(), Value::from(max_results));
    }
    set_meta(
        &mut doc,
        "ServiceProviderConfig",
        format!("{}/ServiceProviderConfig", trim_base(base_url)),
    );
    doc
}

/// `GET /ResourceTypes`: every resource type, each with its `meta`.
pub fn resource_types(base_url: &str) -> Vec<Value> {
    DISCOVERY
        .resource_types
        .iter()
        .map(|rt| with_location(rt, "ResourceType", "ResourceTypes", base_url))
        .collect()
}

/// `GET /ResourceTypes/{name}` (`User`, `Group`; any case).
pub fn resource_type(base_url: &str, name: &str) -> Option<Value> {
    DISCOVERY
        .resource_types
        .iter()
        .find(|rt| id_is(rt, name))
        .map(|rt| with_location(rt, "ResourceType", "ResourceTypes", base_url))
}

/// `GET /Schemas`: every schema, each with its `meta`.
pub fn schemas(base_url: &str) -> Vec<Value> {
    DISCOVERY
        .schemas
        .iter()
        .map(|s| with_location(s, "Schema", "Schemas", base_url))
        .collect()
}

/// `GET /Schemas/{urn}` (any case).
pub fn schema(base_url: &str, urn: &str) -> Option<Value> {
    DISCOVERY
        .schemas
        .iter()
        .find(|s| id_is(s, urn))
        .map(|s| with_location(s, "Schema", "Schemas", base_url))
}

fn id_is(doc: &Value, id: &str) -> bool {
    doc.get("id")
        .and_then(Value::as_str)
        .is_some_and(|i| i.eq_ignore_ascii_case(id))
}

fn with_location(doc: &Value, resource_type: &str, endpoint: &str, base_url: &str) -> Value {
    let mut doc = doc.clone();
    let id = doc
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    set_meta(
        &mut doc,
        resource_type,
        format!("{}/{endpoint}/{id}", trim_base(base_url)),
    );
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::filter::parse_path;

    fn path(s: &str) -> AttrPath {
        parse_path(s).expect(s).attr
    }

    #[test]
    fn discovery_lists_are_list_responses() {
        let d = Discovery::new("https://x/v2", 100);
        let l = d.schemas_list();
        assert_eq!(l["totalResults"], 4);
        assert_eq!(l["Resources"].as_array().map(Vec::len), Some(4));
        assert_eq!(d.resource_types_list()["itemsPerPage"], 2);
        assert_eq!(d.service_provider_config()["filter"]["maxResults"], 100);
        assert!(d.schema(CORE_USER).is_some());
        assert!(d.resource_type("Group").is_some());
    }

    #[test]
    fn compiled_in_documents_parse() {
        assert!(load().is_ok(), "{:?}", load().err());
        assert_eq!(schemas("https://x/scim/v2").len(), 4);
        assert_eq!(resource_types("https://x/scim/v2").len(), 2);
    }

    #[test]
    fn service_provider_config_says_what_is_supported() {
        let doc = service_provider_config("https://idm.example.org/scim/v2/", 250);
        assert_eq!(doc["filter"]["maxResults"], 250);
        assert_eq!(doc["filter"]["supported"], true);
        assert_eq!(doc["patch"]["supported"], true);
        assert_eq!(doc["bulk"]["supported"], true);
        assert_eq!(
            doc["bulk"]["maxOperations"],
            crate::scim::bulk::MAX_OPERATIONS as u64
        );
        assert_eq!(
            doc["bulk"]["maxPayloadSize"],
            crate::scim::bulk::MAX_PAYLOAD_BYTES as u64
        );
        assert_eq!(doc["changePassword"]["supported"], true);
        assert_eq!(doc["sort"]["supported"], true);
        assert_eq!(doc["etag"]["supported"], true);
        assert_eq!(doc["authenticationSchemes"][0]["type"], "oauthbearertoken");
        assert_eq!(doc["authenticationSchemes"][0]["primary"], true);
        assert_eq!(
            doc["meta"]["location"],
            "https://idm.example.org/scim/v2/ServiceProviderConfig"
        );
        assert!(doc.get("documentationUri").is_none());
    }

    #[test]
    fn resource_types_require_the_password_extension_only() {
        let user = resource_type("https://x/v2", "user").expect("User");
        assert_eq!(user["endpoint"], "/Users");
        assert_eq!(user["meta"]["location"], "https://x/v2/ResourceTypes/User");
        assert_eq!(user["meta"]["resourceType"], "ResourceType");
        let ext = user["schemaExtensions"].as_array().expect("array");
        let urns: Vec<_> = ext.iter().map(|e| e["schema"].as_str()).collect();
        assert_eq!(urns, [Some(ENTERPRISE_USER), Some(PASSWORD_EXTENSION)]);
        assert_eq!(ext[0]["required"], false, "enterprise");
        assert_eq!(ext[1]["required"], true, "password");
        let group = resource_type("https://x/v2", "Group").expect("Group");
        assert_eq!(group["schema"], CORE_GROUP);
        assert!(resource_type("https://x/v2", "Device").is_none());
    }

    #[test]
    fn schemas_are_served_with_their_location() {
        let s = schema("https://x/v2", &ENTERPRISE_USER.to_uppercase()).expect("found");
        assert_eq!(s["id"], ENTERPRISE_USER);
        assert_eq!(
            s["meta"]["location"],
            format!("https://x/v2/Schemas/{ENTERPRISE_USER}")
        );
        assert_eq!(s["schemas"][0], SCHEMA_SCHEMA);
        assert!(schema("https://x/v2", "urn:nope").is_none());
    }

    /// Every attribute definition has the fields RFC 7643 §7 requires, and every
    /// `reference` lists its reference types.
    #[test]
    fn schema_documents_are_complete() {
        fn check(a: &Value, at: &str) {
            for key in [
                "name",
                "type",
                "multiValued",
                "description",
                "required",
                "mutability",
                "returned",
                "uniqueness",
            ] {
                assert!(a.get(key).is_some(), "{at}: missing {key}");
            }
            if a["type"] == "string" || a["type"] == "reference" {
                assert!(a.get("caseExact").is_some(), "{at}: missing caseExact");
            }
            if a["type"] == "reference" {
                assert!(a.get("referenceTypes").is_some(), "{at}");
            }
            for sub in a["subAttributes"].as_array().into_iter().flatten() {
                check(sub, &format!("{at}.{}", sub["name"]));
            }
        }
        for s in schemas("https://x") {
            for a in s["attributes"].as_array().expect("attributes") {
                check(a, &format!("{}:{}", s["id"], a["name"]));
            }
        }
    }

    #[test]
    fn user_schema_facts() {
        let s = ResourceSchema::user();
        let r = |p: &str| s.resolve(&path(p)).unwrap_or_else(|| panic!("{p}"));
        let id = r("id");
        assert_eq!(id.attr.mutability, Mutability::ReadOnly);
        assert_eq!(id.attr.returned, Returned::Always);
        let user_name = r("USERNAME");
        assert!(user_name.attr.required);
        assert!(r("active").attr.required);
        assert!(r("name").attr.required);
        assert!(!r("name.givenName").target().required);
        assert!(!r("displayName").attr.required);
        assert!(!user_name.attr.case_exact);
        assert_eq!(user_name.attr.uniqueness, Uniqueness::Server);
        let pw = r("password");
        assert_eq!(pw.attr.mutability, Mutability::WriteOnly);
        assert_eq!(pw.attr.returned, Returned::Never);
        let groups = r("groups");
        assert_eq!(groups.attr.mutability, Mutability::ReadOnly);
        assert_eq!(groups.attr.returned, Returned::Default);
        assert!(groups.attr.multi_valued);
        let given = r("name.givenName");
        assert_eq!(given.target().name, "givenName");
        assert_eq!(given.extension, None);
        let email_type = r("emails.type");
        assert_eq!(
            email_type.target().canonical_values,
            ["work", "home", "other"]
        );
        assert_eq!(
            r("phoneNumbers.type").target().canonical_values,
            ["work", "mobile", "fax", "home", "pager", "other"]
        );
        // which value is primary is kept (lockbridge's schema); a boolean
        let primary = r("emails.primary");
        assert_eq!(primary.target().kind, AttrType::Boolean);
        // qualified, unqualified, any case
        let dept = r("urn:ietf:params:scim:schemas:extension:enterprise:2.0:user:Department");
        assert_eq!(dept.extension, Some(ENTERPRISE_USER));
        assert_eq!(r("department").extension, Some(ENTERPRISE_USER));
        let manager = r(&format!("{ENTERPRISE_USER}:manager.$ref"));
        assert_eq!(manager.target().mutability, Mutability::ReadWrite);
        assert!(
            s.resolve(&path(&format!("{ENTERPRISE_USER}:manager.displayName")))
                .is_none()
        );
        assert_eq!(
            r(&format!("{ENTERPRISE_USER}:manager.value"))
                .target()
                .mutability,
            Mutability::ReadWrite
        );
        let must = r("mustChange");
        assert_eq!(must.extension, Some(PASSWORD_EXTENSION));
        assert_eq!(must.attr.kind, AttrType::Boolean);
        assert_eq!(must.attr.mutability, Mutability::ReadWrite);
        assert!(must.attr.required);
        assert_eq!(must.attr.returned, Returned::Default);
        for ro in ["passwordLastChanged", "passwordExpiresAt", "neverExpires"] {
            assert_eq!(r(ro).attr.mutability, Mutability::ReadOnly, "{ro}");
            assert_eq!(r(ro).attr.returned, Returned::Request, "{ro}");
            assert!(!r(ro).attr.required, "{ro}");
        }
        assert_eq!(r("passwordLastChanged").attr.kind, AttrType::DateTime);
        // the core URN qualifies core attributes only
        assert!(
            s.resolve(&path(&format!("{CORE_USER}:department")))
                .is_none()
        );
        assert!(s.resolve(&path("nickName")).is_some());
        assert!(s.resolve(&path("name.middleName")).is_some());
        assert!(s.resolve(&path("favoriteColor")).is_none());
        assert_eq!(
            s.path_as_extension(&path(&ENTERPRISE_USER.to_lowercase())),
            Some(ENTERPRISE_USER)
        );
        assert_eq!(s.path_as_extension(&path("userName")), None);
    }

    #[test]
    fn hidden_attributes_leave_the_view_and_the_documents() {
        let hidden = [
            Hidden::attribute(CORE_USER, "nickName"),
            Hidden::sub_attribute(CORE_USER, "name", "middleName"),
            Hidden::attribute(ENTERPRISE_USER, "costCenter"),
            Hidden::canonical_value(CORE_USER, "emails", "type", "home"),
        ];
        let d = Discovery::new("https://x/v2", 100).hiding(&hidden);
        let s = d.user_schema();
        assert!(s.resolve(&path("nickName")).is_none());
        assert!(s.resolve(&path("name.middleName")).is_none());
        assert!(s.resolve(&path("name.givenName")).is_some());
        assert!(s.resolve(&path("costCenter")).is_none());
        assert!(s.resolve(&path("division")).is_some());
        let email_type = s.resolve(&path("emails.type")).expect("emails.type");
        assert_eq!(email_type.target().canonical_values, ["work", "other"]);
        let core = d.schema(CORE_USER).expect("core").to_string();
        assert!(core.contains(r#"["work","other"]"#), "{core}");
        let text = d.schemas_list().to_string();
        assert!(!text.contains("\"nickName\""), "not announced");
        assert!(!text.contains("\"middleName\""));
        assert!(!text.contains("\"costCenter\""));
        assert!(text.contains("\"division\"") && text.contains("\"givenName\""));
        let enterprise = d.schema(ENTERPRISE_USER).expect("enterprise").to_string();
        assert!(!enterprise.contains("costCenter"));
        // Without hiding, all of them are announced.
        let text = Discovery::new("https://x/v2", 100)
            .schemas_list()
            .to_string();
        assert!(text.contains("\"nickName\"") && text.contains("\"costCenter\""));
    }

    #[test]
    fn without_external_id_reports_it_absent() {
        let s = ResourceSchema::user();
        assert!(s.resolve(&path("externalId")).is_some());
        let s = s.without("externalId");
        assert!(s.resolve(&path("externalId")).is_none());
        assert!(s.resolve(&path("userName")).is_some());
    }

    #[test]
    fn group_schema_facts() {
        let s = ResourceSchema::group();
        let members = s.resolve(&path("members")).expect("members");
        assert!(members.attr.multi_valued);
        assert_eq!(
            members.attr.sub("value").map(|a| a.mutability),
            Some(Mutability::Immutable)
        );
        assert_eq!(
            members.attr.sub("type").map(|a| a.mutability),
            Some(Mutability::Immutable)
        );
        assert!(members.attr.sub("display").is_none());
        let name = s.resolve(&path("displayName")).expect("displayName");
        assert!(name.attr.required);
        assert!(s.resolve(&path("userName")).is_none());
        assert!(s.extensions.is_empty());
    }
}

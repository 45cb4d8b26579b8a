//! The mapping between LDAP entries and SCIM resources: `inetOrgPerson` users and
//! `groupOfNames` groups (OpenLDAP), configurable by [`UserMappingSettings`] and
//! [`GroupMappingSettings`].
//!
//! The service's flows, which this module makes pure functions of:
//!
//! - read: entry → [`UserMapping::to_resource`] (with facts the service looked up:
//!   [`UserExtras`]) → [`super::model::project`];
//! - create: body → [`UserMapping::parse`] → [`UserMapping::new_entry`] → LDAP add;
//! - replace (PUT, and PATCH after [`super::patch::apply_user_patch`]): body →
//!   [`UserMapping::parse`] → [`UserMapping::rdn_change`] (rename) and
//!   [`UserMapping::changes`] → one LDAP modify holding only what differs.
//!
//! Sign-in state (`active`, `mustChange`) is read here but never written as attributes:
//! [`UserMapping::state_edit`] says what should change, and the service asks the
//! account gate to change it.
//!
//! # Default user mapping
//!
//! | SCIM | LDAP |
//! |---|---|
//! | `id` | `entryUUID` |
//! | `externalId` | `external_id_attribute`, if configured (otherwise not stored, not in the schema view) |
//! | `userName` | `user_name_attribute` (`uid`), also the RDN of new entries; a change renames the entry |
//! | `name.givenName` / `name.familyName` / `name.formatted` | `givenName` / `sn` / `cn` |
//! | `displayName`, `title`, `preferredLanguage` | the same names |
//! | `emails` (type `work`; the first is `primary`) | `mail` |
//! | `phoneNumbers` type `work` / `mobile` / `fax` / `home` / `pager` | `telephoneNumber` / `mobile` / `facsimileTelephoneNumber` / `homePhone` / `pager` |
//! | `emails` `home`/`other`, `phoneNumbers` `other`, `ims`, `photos`, `entitlements`, `roles`, `x509Certificates` | JSON in lockbridge's schema (`JSON_HOMES`) |
//! | `active` | `false` exactly when an administrator blocked sign-in (where the directory kind keeps that: [`SignInVocabulary`]); a temporary lockout after failed binds is still active |
//! | enterprise `employeeNumber` / `department` / `organization` | `employeeNumber` / `departmentNumber` / `o` |
//! | enterprise `manager` | `manager` (a DN; the service resolves it to and from an id) |
//! | `meta.created` / `meta.lastModified` / `meta.version` | `createTimestamp` / `modifyTimestamp` / `W/"<entryCSN>"` |
//! | password `passwordLastChanged` / `mustChange` | where the directory kind keeps them ([`SignInVocabulary`]) |
//! | password `passwordExpiresAt` / `neverExpires` | computed by the service ([`UserExtras`]) |
//!
//! `overrides` changes the LDAP attribute of any row from `name.givenName` to `manager`
//! (keys: `name.givenName`, `name.familyName`, `name.formatted`, `displayName`, `title`,
//! `preferredLanguage`, `emails`, `phoneNumbers.work`, `phoneNumbers.mobile`, and the
//! enterprise attributes with or without their URN).
//!
//! `cn` and `sn` are required by `inetOrgPerson` (via `person`): when the write does not
//! give them, `cn` is derived from `name.formatted`, `displayName`, the given and family
//! names, or `userName`, and `sn` from `name.familyName` or `userName`.
//!
//! # Groups
//!
//! `displayName` is `cn` (and the RDN), `members` are the DNs in `member`. `groupOfNames`
//! requires at least one `member`, so an empty group holds one empty DN (`member: `),
//! which is never shown as a member, is removed when real members are added, and comes
//! back when the last one leaves ([`GroupMapping::member_changes`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use super::error::ScimError;
use super::filter::{
    AttrPath, CORE_GROUP, CORE_USER, CompValue, DefaultGroupMapping, DefaultUserMapping,
    ENTERPRISE_USER, Element, FilterMapping, PASSWORD_EXTENSION, Syntax, Target,
    json_address_element, json_open_element, json_primary_filter, json_typed_element,
};
use super::model::{get_ci, truncate};
use super::patch::GroupPatch;
use super::schema::{Hidden, ResourceSchema};
use crate::account::ProvisionedState;
use crate::directory::escape::is_attribute_description;
use crate::directory::{Change, Entry, EntryVocabulary, SignInVocabulary, SortKey, dn_key, rdn_of};
use crate::types::Secret;

/// Operational attributes every user read requests (and the id's, the version's and the
/// sign-in state's, which the directory kind names: [`EntryVocabulary`],
/// [`SignInVocabulary::attributes`]).
const USER_OPERATIONAL: [&str; 3] = [
    // The groups, where the directory keeps it (see `super::user_groups`).
    "memberOf",
    "createTimestamp",
    "modifyTimestamp",
];

/// Operational attributes every group read requests (and the id's and the version's).
const GROUP_OPERATIONAL: [&str; 2] = ["createTimestamp", "modifyTimestamp"];

// ---------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------

/// How users are stored; the `[scim]` configuration section is mapped onto this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserMappingSettings {
    /// The LDAP attribute holding `userName` (`uid`), also the RDN attribute of new entries.
    pub user_name_attribute: String,
    /// Object classes of new entries (`["inetOrgPerson"]`, plus e.g. an auxiliary class).
    pub object_classes: Vec<String>,
    /// The LDAP attribute holding `externalId`; `None`: not stored.
    pub external_id_attribute: Option<String>,
    /// SCIM attribute (`name.givenName`, `phoneNumbers.mobile`,
    /// `urn:…:enterprise:2.0:User:department`, …) → LDAP attribute, replacing the default.
    pub overrides: BTreeMap<String, String>,
    /// The directory has lockbridge's LDAP schema (`scim/lockbridge.schema`): the SCIM
    /// attributes inetOrgPerson has no home for (and `externalId`, unless
    /// `external_id_attribute` names another) are kept there, and [`SCIM_USER_CLASS`] is
    /// added to an entry the first time one of them is written. Without it those
    /// attributes have no home: they are left out of the schema and ignored in writes.
    pub lockbridge_schema: bool,
    /// How the directory keeps sign-in state (`active`, `mustChange`, when the password
    /// last changed).
    pub sign_in: SignInVocabulary,
    /// How the directory versions entries (`meta.version`).
    pub entries: EntryVocabulary,
}

impl Default for UserMappingSettings {
    fn default() -> Self {
        Self {
            user_name_attribute: "uid".into(),
            object_classes: vec!["inetOrgPerson".into()],
            external_id_attribute: None,
            overrides: BTreeMap::new(),
            lockbridge_schema: false,
            sign_in: SignInVocabulary::default(),
            entries: EntryVocabulary::default(),
        }
    }
}

/// An auxiliary object class an entry gains the first time one of its attributes gets a
/// value (lockbridge's LDAP schema), so that entries created elsewhere need no change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AuxClass {
    name: &'static str,
    /// Lower-case LDAP attributes that need the class.
    attributes: Vec<String>,
}

impl AuxClass {
    fn needed_by(&self, attr: &str) -> bool {
        self.attributes.iter().any(|a| a.eq_ignore_ascii_case(attr))
    }

    fn held_by(&self, entry: &Entry) -> bool {
        entry
            .all("objectClass")
            .iter()
            .any(|c| c.eq_ignore_ascii_case(self.name))
    }

    /// Adds the class to a modify of `current` that gives one of its attributes a value
    /// while the entry lacks the class.
    fn complete(&self, current: &Entry, changes: &mut Vec<Change>) {
        let writes_value = changes.iter().any(|c| match c {
            Change::Add(a, v) | Change::Replace(a, v) => !v.is_empty() && self.needed_by(a),
            Change::Delete(..) => false,
        });
        if writes_value && !self.held_by(current) {
            changes.insert(0, Change::Add("objectClass".into(), vec![self.name.into()]));
        }
    }

    /// Adds the class to a new entry's object classes when one of its attributes is set.
    fn complete_new(&self, attrs: &mut [(String, Vec<String>)]) {
        let needed = attrs
            .iter()
            .any(|(a, v)| !v.is_empty() && self.needed_by(a));
        if !needed {
            return;
        }
        if let Some((_, classes)) = attrs
            .iter_mut()
            .find(|(a, _)| a.eq_ignore_ascii_case("objectClass"))
            && !classes.iter().any(|c| c.eq_ignore_ascii_case(self.name))
        {
            classes.push(self.name.into());
        }
    }
}

/// The SCIM attributes stored in one LDAP attribute each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    GivenName,
    FamilyName,
    Formatted,
    MiddleName,
    HonorificPrefix,
    HonorificSuffix,
    DisplayName,
    NickName,
    ProfileUrl,
    Title,
    UserType,
    PreferredLanguage,
    Locale,
    Timezone,
    WorkEmail,
    WorkPhone,
    MobilePhone,
    FaxPhone,
    HomePhone,
    PagerPhone,
    WorkFormatted,
    WorkStreet,
    WorkLocality,
    WorkRegion,
    WorkPostalCode,
    WorkCountry,
    EmployeeNumber,
    CostCenter,
    Department,
    Organization,
    Division,
    Manager,
}

/// The single-valued string attributes of the core User schema, in schema order: JSON
/// name and field.
const CORE_STRINGS: [(&str, Field); 8] = [
    ("displayName", Field::DisplayName),
    ("nickName", Field::NickName),
    ("profileUrl", Field::ProfileUrl),
    ("title", Field::Title),
    ("userType", Field::UserType),
    ("preferredLanguage", Field::PreferredLanguage),
    ("locale", Field::Locale),
    ("timezone", Field::Timezone),
];

/// The sub-attributes of `name`: JSON name and field.
const NAME_PARTS: [(&str, Field); 6] = [
    ("formatted", Field::Formatted),
    ("familyName", Field::FamilyName),
    ("givenName", Field::GivenName),
    ("middleName", Field::MiddleName),
    ("honorificPrefix", Field::HonorificPrefix),
    ("honorificSuffix", Field::HonorificSuffix),
];

/// The single-valued string attributes of the enterprise extension.
const ENTERPRISE_STRINGS: [(&str, Field); 5] = [
    ("employeeNumber", Field::EmployeeNumber),
    ("costCenter", Field::CostCenter),
    ("organization", Field::Organization),
    ("division", Field::Division),
    ("department", Field::Department),
];

/// The auxiliary object class of lockbridge's LDAP schema (`scim/lockbridge.schema`) that
/// holds the User attributes inetOrgPerson has no home for.
pub const SCIM_USER_CLASS: &str = "lockbridgeScimUser";
/// The auxiliary object class of lockbridge's LDAP schema that holds a group's
/// `externalId`.
pub const SCIM_GROUP_CLASS: &str = "lockbridgeScimGroup";
/// Where lockbridge's LDAP schema marks which value kept in an inetOrgPerson attribute
/// (a work email, a phone number, the work address) is `primary`: one LDAP value per
/// SCIM attribute, `<attribute> <type> <value>` (`emails work ann@example.org`,
/// `addresses work`). Values kept as JSON carry `"primary":true` themselves.
pub const PRIMARY_ATTRIBUTE: &str = "lockbridgePrimary";

/// Where lockbridge's LDAP schema keeps addresses of the types other than work (the work
/// address lives in inetOrgPerson's attributes), one JSON object per address, keys in
/// alphabetical order: `{"locality":"Chicago","primary":false,"type":"home"}`.
pub const ADDRESS_ATTRIBUTE: &str = "lockbridgeAddress";

/// The canonical address types kept in [`ADDRESS_ATTRIBUTE`]; other types are not kept.
const OTHER_ADDRESS_KINDS: [&str; 2] = ["home", "other"];

/// The parts of an address kept as JSON, in alphabetical order (their order in it).
const ADDRESS_PARTS: [&str; 6] = [
    "country",
    "formatted",
    "locality",
    "postalCode",
    "region",
    "streetAddress",
];

/// The multi-valued attributes with a `primary` sub-attribute (RFC 7643 §4.1.2, §8.7.1).
const PRIMARY_HOLDERS: [&str; 8] = [
    "emails",
    "phoneNumbers",
    "ims",
    "photos",
    "addresses",
    "entitlements",
    "roles",
    "x509Certificates",
];

/// The [`PRIMARY_ATTRIBUTE`] value saying whether value `value` (none for an address)
/// of type `kind` of `attr` is primary: a JSON object, keys in alphabetical order.
/// Both answers are kept, so that a value reads back as it was written (`false` too).
fn primary_mark(attr: &str, kind: &str, value: Option<&str>, primary: bool) -> String {
    let text = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let value = value
        .map(|v| format!(",\"value\":{}", text(v)))
        .unwrap_or_default();
    format!(
        "{{\"attribute\":{},\"primary\":{primary},\"type\":{}{value}}}",
        text(attr),
        text(kind)
    )
}

/// `primary` of the values of type `kind` of `attr` kept in inetOrgPerson attributes:
/// their marks in `ldap` (see [`primary_mark`]), `{"attribute":…,"primary":…,"type":…`
/// in one assertion.
fn primary_mark_target(ldap: &'static str, attr: &str, kind: &str) -> Target {
    let text = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let (head, path) = (
        format!("{{\"attribute\":{},", text(attr)),
        format!("{attr}.primary"),
    );
    let after = format!(",\"type\":{}", text(kind));
    Target::custom(move |test| {
        let filter = json_primary_filter(ldap, &after, &path, test)?;
        // Anchored at the mark's start, so that the attribute is part of the assertion:
        // `(ldap=*"primary":…` becomes `(ldap={"attribute":"emails","primary":…`.
        let head = crate::directory::escape::filter_value(&head);
        Ok(filter.replacen(&format!("({ldap}=*"), &format!("({ldap}={head}"), 1))
    })
}

/// What the [`PRIMARY_ATTRIBUTE`] values `marks` say of value `value` of type `kind` of
/// `attr` (values compare ignoring case, as the directory compares them).
fn primary_of(marks: &[String], attr: &str, kind: &str, value: Option<&str>) -> Option<bool> {
    marks.iter().find_map(|m| {
        let Ok(Value::Object(o)) = serde_json::from_str::<Value>(m) else {
            return None;
        };
        let same = |key: &str, want: Option<&str>| match (o.get(key), want) {
            (Some(Value::String(have)), Some(want)) => have.eq_ignore_ascii_case(want),
            (None, None) => true,
            _ => false,
        };
        (same("attribute", Some(attr)) && same("type", Some(kind)) && same("value", value))
            .then(|| o.get("primary").and_then(Value::as_bool))
            .flatten()
    })
}

/// Where lockbridge's LDAP schema keeps `externalId`.
pub const EXTERNAL_ID_ATTRIBUTE: &str = "lockbridgeExternalId";

/// The phone numbers kept in inetOrgPerson's attributes: field and `type`.
const PHONES: [(Field, &str); 5] = [
    (Field::WorkPhone, "work"),
    (Field::MobilePhone, "mobile"),
    (Field::FaxPhone, "fax"),
    (Field::HomePhone, "home"),
    (Field::PagerPhone, "pager"),
];

/// The sub-attributes of the work address (`addresses[type eq "work"]`).
const WORK_ADDRESS: [(&str, Field); 6] = [
    ("formatted", Field::WorkFormatted),
    ("streetAddress", Field::WorkStreet),
    ("locality", Field::WorkLocality),
    ("region", Field::WorkRegion),
    ("postalCode", Field::WorkPostalCode),
    ("country", Field::WorkCountry),
];

/// A multi-valued attribute, or some types of one, kept in lockbridge's LDAP schema as one
/// JSON object per LDAP value, because inetOrgPerson has no home for it. The object holds
/// `display` (where kept), `type` and `value`, in that (alphabetical) order, without
/// spaces: `{"type":"home","value":"ann@example.org"}`. `type` and `value` being the last
/// two keys is what lets one LDAP substring assertion test a value
/// ([`super::filter::json_value_filter`]).
#[derive(Debug, PartialEq, Eq)]
struct JsonHome {
    /// The SCIM attribute.
    scim: &'static str,
    /// The LDAP attribute (in [`SCIM_USER_CLASS`]).
    ldap: &'static str,
    /// The canonical types kept here: each is a filter element of its own, so `type`
    /// and `value` conditions combine exactly.
    kinds: &'static [&'static str],
    /// Values of any other type, or none, are kept here too (the whole attribute is
    /// here); otherwise they belong to inetOrgPerson's attributes or are not kept.
    open: bool,
    /// Whether `display` is kept (it is not listed for emails and phone numbers, whose
    /// other values cannot keep it).
    display: bool,
    /// Values compare exactly (the LDAP attribute's equality is caseExactMatch).
    case_exact: bool,
}

const JSON_HOMES: [JsonHome; 7] = [
    JsonHome {
        scim: "emails",
        ldap: "lockbridgeEmail",
        kinds: &["home", "other"],
        open: false,
        display: false,
        case_exact: false,
    },
    JsonHome {
        scim: "phoneNumbers",
        ldap: "lockbridgePhoneNumber",
        kinds: &["other"],
        open: false,
        display: false,
        case_exact: false,
    },
    JsonHome {
        scim: "ims",
        ldap: "lockbridgeIm",
        kinds: &["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"],
        open: true,
        display: true,
        case_exact: false,
    },
    JsonHome {
        scim: "photos",
        ldap: "lockbridgePhoto",
        kinds: &["photo", "thumbnail"],
        open: true,
        display: true,
        case_exact: false,
    },
    JsonHome {
        scim: "entitlements",
        ldap: "lockbridgeEntitlement",
        kinds: &[],
        open: true,
        display: true,
        case_exact: false,
    },
    JsonHome {
        scim: "roles",
        ldap: "lockbridgeRole",
        kinds: &[],
        open: true,
        display: true,
        case_exact: false,
    },
    JsonHome {
        scim: "x509Certificates",
        ldap: "lockbridgeX509Certificate",
        kinds: &[],
        open: true,
        display: true,
        case_exact: true,
    },
];

impl JsonHome {
    /// Whether a value of type `kind` is kept here.
    fn keeps(&self, kind: Option<&str>) -> bool {
        self.open || kind.is_some_and(|k| self.kinds.iter().any(|c| c.eq_ignore_ascii_case(k)))
    }

    /// The LDAP value for `v`: a kept type in its canonical spelling, `display` only where
    /// kept.
    fn encode(&self, v: &MultiValue) -> String {
        let text = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let mut parts = Vec::with_capacity(3);
        if self.display
            && let Some(d) = &v.display
        {
            parts.push(format!("\"display\":{}", text(d)));
        }
        if let Some(p) = v.primary {
            parts.push(format!("\"primary\":{p}"));
        }
        if let Some(k) = &v.kind {
            let k = self
                .kinds
                .iter()
                .find(|c| c.eq_ignore_ascii_case(k))
                .map_or(k.as_str(), |c| c);
            parts.push(format!("\"type\":{}", text(k)));
        }
        parts.push(format!("\"value\":{}", text(&v.value)));
        format!("{{{}}}", parts.join(","))
    }

    /// The SCIM value an LDAP value stands for; `None` for a value that is not such a
    /// JSON object (written by something else), which is left out.
    fn decode(&self, ldap_value: &str) -> Option<Value> {
        let Ok(Value::Object(o)) = serde_json::from_str::<Value>(ldap_value) else {
            return None;
        };
        let mut out = Map::new();
        out.insert("value".into(), o.get("value")?.as_str()?.into());
        for key in ["type", "display"] {
            if let Some(Value::String(s)) = o.get(key) {
                out.insert(key.into(), s.as_str().into());
            }
        }
        if let Some(Value::Bool(p)) = o.get("primary") {
            out.insert("primary".into(), (*p).into());
        }
        Some(Value::Object(out))
    }

    /// The LDAP values for `values`, without duplicates (as the LDAP attribute compares
    /// them), in the order given.
    fn encode_all<'a>(&self, values: impl IntoIterator<Item = &'a MultiValue>) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        values
            .into_iter()
            .map(|v| self.encode(v))
            .filter(|e| {
                seen.insert(if self.case_exact {
                    e.clone()
                } else {
                    e.to_lowercase()
                })
            })
            .collect()
    }

    /// The filter elements: one per canonical type, and one for the other values.
    fn elements(&self) -> Vec<Element> {
        let mut out: Vec<Element> = self
            .kinds
            .iter()
            .map(|k| json_typed_element(self.ldap, k, self.scim))
            .collect();
        if self.open {
            out.push(json_open_element(self.ldap, self.kinds, self.scim));
        }
        out
    }

    /// What leaving it out of the schema view takes: its types, or the whole attribute.
    fn hidden(&self) -> Vec<Hidden> {
        if self.open {
            return vec![Hidden::attribute(CORE_USER, self.scim)];
        }
        self.kinds
            .iter()
            .map(|k| Hidden::canonical_value(CORE_USER, self.scim, "type", k))
            .collect()
    }

    /// How operators read it in the list of attributes without a home.
    fn name(&self) -> &'static str {
        match self.scim {
            "emails" => "emails of type home and other",
            "phoneNumbers" => "phoneNumbers of type other",
            other => other,
        }
    }
}

impl Field {
    const ALL: [Field; 32] = [
        Field::GivenName,
        Field::FamilyName,
        Field::Formatted,
        Field::MiddleName,
        Field::HonorificPrefix,
        Field::HonorificSuffix,
        Field::DisplayName,
        Field::NickName,
        Field::ProfileUrl,
        Field::Title,
        Field::UserType,
        Field::PreferredLanguage,
        Field::Locale,
        Field::Timezone,
        Field::WorkEmail,
        Field::WorkPhone,
        Field::MobilePhone,
        Field::FaxPhone,
        Field::HomePhone,
        Field::PagerPhone,
        Field::WorkFormatted,
        Field::WorkStreet,
        Field::WorkLocality,
        Field::WorkRegion,
        Field::WorkPostalCode,
        Field::WorkCountry,
        Field::EmployeeNumber,
        Field::CostCenter,
        Field::Department,
        Field::Organization,
        Field::Division,
        Field::Manager,
    ];

    /// The override key (as documented).
    fn key(self) -> &'static str {
        match self {
            Field::GivenName => "name.givenName",
            Field::FamilyName => "name.familyName",
            Field::Formatted => "name.formatted",
            Field::MiddleName => "name.middleName",
            Field::HonorificPrefix => "name.honorificPrefix",
            Field::HonorificSuffix => "name.honorificSuffix",
            Field::DisplayName => "displayName",
            Field::NickName => "nickName",
            Field::ProfileUrl => "profileUrl",
            Field::Title => "title",
            Field::UserType => "userType",
            Field::PreferredLanguage => "preferredLanguage",
            Field::Locale => "locale",
            Field::Timezone => "timezone",
            Field::WorkEmail => "emails",
            Field::WorkPhone => "phoneNumbers.work",
            Field::MobilePhone => "phoneNumbers.mobile",
            Field::FaxPhone => "phoneNumbers.fax",
            Field::HomePhone => "phoneNumbers.home",
            Field::PagerPhone => "phoneNumbers.pager",
            Field::WorkFormatted => "addresses.formatted",
            Field::WorkStreet => "addresses.streetAddress",
            Field::WorkLocality => "addresses.locality",
            Field::WorkRegion => "addresses.region",
            Field::WorkPostalCode => "addresses.postalCode",
            Field::WorkCountry => "addresses.country",
            Field::EmployeeNumber => "employeeNumber",
            Field::CostCenter => "costCenter",
            Field::Department => "department",
            Field::Organization => "organization",
            Field::Division => "division",
            Field::Manager => "manager",
        }
    }

    /// The field's LDAP attribute when not configured otherwise: inetOrgPerson's, or
    /// one of lockbridge's LDAP schema ([`Field::in_lockbridge_schema`]).
    fn default_ldap(self) -> &'static str {
        match self {
            Field::GivenName => "givenName",
            Field::FamilyName => "sn",
            Field::Formatted => "cn",
            Field::MiddleName => "lockbridgeMiddleName",
            Field::HonorificPrefix => "lockbridgeHonorificPrefix",
            Field::HonorificSuffix => "lockbridgeHonorificSuffix",
            Field::DisplayName => "displayName",
            Field::NickName => "lockbridgeNickName",
            Field::ProfileUrl => "lockbridgeProfileUrl",
            Field::Title => "title",
            Field::UserType => "lockbridgeUserType",
            Field::PreferredLanguage => "preferredLanguage",
            Field::Locale => "lockbridgeLocale",
            Field::Timezone => "lockbridgeTimezone",
            Field::WorkEmail => "mail",
            Field::WorkPhone => "telephoneNumber",
            Field::MobilePhone => "mobile",
            Field::FaxPhone => "facsimileTelephoneNumber",
            Field::HomePhone => "homePhone",
            Field::PagerPhone => "pager",
            Field::WorkFormatted => "postalAddress",
            Field::WorkStreet => "street",
            Field::WorkLocality => "l",
            Field::WorkRegion => "st",
            Field::WorkPostalCode => "postalCode",
            Field::WorkCountry => "lockbridgeCountry",
            Field::EmployeeNumber => "employeeNumber",
            Field::CostCenter => "lockbridgeCostCenter",
            Field::Department => "departmentNumber",
            Field::Organization => "o",
            Field::Division => "lockbridgeDivision",
            Field::Manager => "manager",
        }
    }

    /// Whether the default home is in lockbridge's LDAP schema ([`SCIM_USER_CLASS`]):
    /// without that schema (and without an override) the field has no home.
    fn in_lockbridge_schema(self) -> bool {
        self.default_ldap().starts_with("lockbridge")
    }

    /// The schema entry of the field, for leaving it out of the schema view.
    fn hidden(self) -> Hidden {
        let (urn, key) = if self.is_enterprise() {
            (ENTERPRISE_USER, self.key())
        } else {
            (CORE_USER, self.key())
        };
        match key.split_once('.') {
            Some((name, sub)) => Hidden::sub_attribute(urn, name, sub),
            None => Hidden::attribute(urn, key),
        }
    }

    fn is_enterprise(self) -> bool {
        matches!(
            self,
            Field::EmployeeNumber
                | Field::CostCenter
                | Field::Department
                | Field::Organization
                | Field::Division
                | Field::Manager
        )
    }

    /// Whether the SCIM attribute is multi-valued (its LDAP values are kept in order).
    fn is_multi(self) -> bool {
        matches!(
            self,
            Field::WorkEmail
                | Field::WorkPhone
                | Field::MobilePhone
                | Field::FaxPhone
                | Field::HomePhone
                | Field::PagerPhone
        )
    }

    /// The field an override key names: the documented key, any case; enterprise
    /// attributes also with their URN; `emails.work` / `emails.value` for `emails`.
    fn from_key(key: &str) -> Option<Field> {
        let key = key.trim();
        let unqualified = match key.get(..ENTERPRISE_USER.len() + 1) {
            Some(prefix) if prefix.eq_ignore_ascii_case(&format!("{ENTERPRISE_USER}:")) => {
                let rest = &key[ENTERPRISE_USER.len() + 1..];
                return Field::ALL
                    .into_iter()
                    .find(|f| f.is_enterprise() && f.key().eq_ignore_ascii_case(rest));
            }
            _ => key,
        };
        if unqualified.eq_ignore_ascii_case("emails.work")
            || unqualified.eq_ignore_ascii_case("emails.value")
        {
            return Some(Field::WorkEmail);
        }
        Field::ALL
            .into_iter()
            .find(|f| f.key().eq_ignore_ascii_case(unqualified))
    }
}

/// A group the user is a direct member of, as the service resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    pub id: String,
    pub display: Option<String>,
}

/// Facts about a user that are not in its entry; the service looks them up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserExtras {
    /// The SCIM base URL, e.g. `https://idm.example.org/scim/v2` (for `meta.location`
    /// and `$ref`s).
    pub base_url: String,
    /// The id of the entry `manager` names; `None` when there is none or it could not be
    /// resolved (then `manager` is left out, and a write based on this resource clears it).
    pub manager_id: Option<String>,
    /// The manager's `displayName` (or user name), for `manager.displayName`.
    pub manager_display: Option<String>,
    /// The groups, when `groups` was asked for (`returned: request`); `None`: left out.
    pub groups: Option<Vec<GroupRef>>,
    /// When the password expires, under the organisation's policy.
    pub password_expires_at: Option<DateTime<Utc>>,
    /// The password is exempt from expiry.
    pub never_expires: bool,
}

/// A user as a client wants it stored (from a POST or PUT body, or a patched resource).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UserWrite {
    pub user_name: String,
    /// Lower-case LDAP attribute → values, for every mapped attribute that has a value.
    /// `manager` is not set by [`UserMapping::parse`]: the service resolves
    /// [`UserWrite::manager_id`] to a DN and inserts it.
    pub attrs: BTreeMap<String, Vec<String>>,
    /// A new password (never stored in JSON or in `attrs`).
    pub password: Option<Secret>,
    /// `None`: not given, leave as is.
    pub active: Option<bool>,
    /// `None`: not given, leave as is.
    pub must_change: Option<bool>,
    /// The manager's id; `None`: no manager.
    pub manager_id: Option<String>,
    /// `None`: none (or not stored).
    pub external_id: Option<String>,
}

/// The user mapping, built once from settings.
pub struct UserMapping {
    user_name: String,
    /// The attribute new entries are named by: `user_name`, or the directory's own
    /// (`cn` in Active Directory), which then holds the userName too.
    naming: String,
    object_classes: Vec<String>,
    external_id: Option<String>,
    /// LDAP attribute per field, as configured (spelling kept); a field without a home
    /// (lockbridge's schema absent, no override) is not in it.
    ldap: BTreeMap<Field, String>,
    /// [`SCIM_USER_CLASS`], with the attributes that need it, when the directory has
    /// lockbridge's schema.
    aux: Option<AuxClass>,
    /// The fields without a home.
    homeless: Vec<Field>,
    /// The multi-valued attributes kept as JSON: all of [`JSON_HOMES`] when the directory
    /// has lockbridge's schema, else none.
    json: Vec<&'static JsonHome>,
    /// What the schema view leaves out (fields and JSON homes without a home).
    schema_hidden: Vec<Hidden>,
    /// [`PRIMARY_ATTRIBUTE`] when the directory has lockbridge's schema: without it,
    /// which value is primary is not kept (and `primary` is not in the schema view).
    primary: Option<&'static str>,
    /// [`ADDRESS_ATTRIBUTE`] when the directory has lockbridge's schema: without it,
    /// only the work address is kept.
    addresses: Option<&'static str>,
    /// Whether the object classes include `person` (so `cn` and `sn` are required).
    person: bool,
    schema: ResourceSchema,
    filter: UserFilterMapping,
    sign_in: SignInVocabulary,
    entries: EntryVocabulary,
    /// [`Self::read_attributes`], worked out once: every read asks for them.
    read_attrs: std::sync::Arc<[String]>,
}

impl std::fmt::Debug for UserMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserMapping")
            .field("user_name", &self.user_name)
            .field("object_classes", &self.object_classes)
            .field("external_id", &self.external_id)
            .field("ldap", &self.ldap)
            .finish_non_exhaustive()
    }
}

fn check_attribute(what: &str, name: &str) -> Result<(), String> {
    if is_attribute_description(name) && !name.contains(';') {
        Ok(())
    } else {
        Err(format!(
            "{what} is \"{name}\", which is not an LDAP attribute name (letters, digits and \"-\", \
             starting with a letter)"
        ))
    }
}

fn check_object_classes(classes: &[String]) -> Result<(), String> {
    if classes.is_empty() {
        return Err(
            "object_classes is empty: give at least the structural class, e.g. \
                    [\"inetOrgPerson\"]"
                .into(),
        );
    }
    for c in classes {
        check_attribute("an object class", c)?;
    }
    Ok(())
}

/// Whether lockbridge reads `name` itself (the operational attributes, and `state`: the
/// sign-in state's), so no SCIM attribute may be mapped to it.
fn is_operational(name: &str, state: &[&str]) -> bool {
    USER_OPERATIONAL
        .iter()
        .chain(state)
        .any(|o| o.eq_ignore_ascii_case(name))
        || name.eq_ignore_ascii_case("objectClass")
}

impl UserMapping {
    /// Validate `s`: attribute names are LDAP names, override keys are known SCIM
    /// attributes, and no two SCIM attributes share an LDAP attribute.
    pub fn new(s: UserMappingSettings) -> Result<Self, String> {
        check_attribute("user_name_attribute", &s.user_name_attribute)?;
        check_object_classes(&s.object_classes)?;
        let mut ldap: BTreeMap<Field, String> = Field::ALL
            .into_iter()
            .filter(|f| s.lockbridge_schema || !f.in_lockbridge_schema())
            .map(|f| (f, f.default_ldap().to_owned()))
            .collect();
        for (key, attr) in &s.overrides {
            let field = Field::from_key(key).ok_or_else(|| {
                format!(
                    "overrides has \"{key}\", which is not a mapped SCIM attribute; use one of: {}",
                    Field::ALL.map(Field::key).join(", ")
                )
            })?;
            // An empty value: the attribute has no home (not offered, writes ignored).
            if attr.trim().is_empty() {
                ldap.remove(&field);
                continue;
            }
            check_attribute(&format!("overrides.\"{key}\""), attr)?;
            ldap.insert(field, attr.clone());
        }
        // Where entries are named by another attribute than the user name (cn in Active
        // Directory), that attribute holds the user name: no field keeps its own value
        // there unless the operator maps one to it on purpose.
        let naming = s
            .entries
            .user_naming_attribute()
            .filter(|n| !n.eq_ignore_ascii_case(&s.user_name_attribute))
            .map(str::to_owned);
        if let Some(n) = &naming {
            ldap.retain(|field, attr| {
                !attr.eq_ignore_ascii_case(n) || s.overrides.contains_key(field.key())
            });
        }
        let naming = naming.unwrap_or_else(|| s.user_name_attribute.clone());
        if let Some(x) = &s.external_id_attribute {
            check_attribute("external_id_attribute", x)?;
        }
        let external_id = s.external_id_attribute.clone().or_else(|| {
            s.lockbridge_schema
                .then(|| EXTERNAL_ID_ATTRIBUTE.to_owned())
        });
        // One LDAP attribute per SCIM attribute, and none of the operational ones.
        let mut owners: Vec<(String, String)> = vec![(
            s.user_name_attribute.clone(),
            "userName (user_name_attribute)".to_owned(),
        )];
        if let Some(x) = &external_id {
            owners.push((x.clone(), "externalId (external_id_attribute)".to_owned()));
        }
        owners.extend(ldap.iter().map(|(f, a)| (a.clone(), f.key().to_owned())));
        for (i, (attr, owner)) in owners.iter().enumerate() {
            if is_operational(attr, s.sign_in.attributes())
                || attr.eq_ignore_ascii_case(s.entries.version_attribute())
                || attr.eq_ignore_ascii_case(s.entries.id_attribute())
            {
                return Err(format!(
                    "{owner} is mapped to \"{attr}\", which lockbridge manages itself; choose \
                     another attribute"
                ));
            }
            if let Some((_, other)) = owners[..i]
                .iter()
                .find(|(a, _)| a.eq_ignore_ascii_case(attr))
            {
                return Err(format!(
                    "{other} and {owner} are both mapped to \"{attr}\"; map each SCIM attribute \
                     to its own LDAP attribute (see overrides), or leave one out with an empty \
                     value (\"{owner}\" = \"\")"
                ));
            }
        }
        let person = s.object_classes.iter().any(|c| {
            ["person", "organizationalPerson", "inetOrgPerson"]
                .iter()
                .any(|p| p.eq_ignore_ascii_case(c))
        });
        let homeless: Vec<Field> = Field::ALL
            .into_iter()
            .filter(|f| !ldap.contains_key(f))
            .collect();
        let json: Vec<&'static JsonHome> = if s.lockbridge_schema {
            JSON_HOMES.iter().collect()
        } else {
            Vec::new()
        };
        let primary = s.lockbridge_schema.then_some(PRIMARY_ATTRIBUTE);
        let addresses = s.lockbridge_schema.then_some(ADDRESS_ATTRIBUTE);
        let hidden: Vec<Hidden> = homeless
            .iter()
            .map(|f| f.hidden())
            .chain(
                JSON_HOMES
                    .iter()
                    .filter(|j| !json.contains(j))
                    .flat_map(JsonHome::hidden),
            )
            .chain(
                PRIMARY_HOLDERS
                    .iter()
                    .filter(|_| primary.is_none())
                    .map(|a| Hidden::sub_attribute(CORE_USER, a, "primary")),
            )
            .chain(
                OTHER_ADDRESS_KINDS
                    .iter()
                    .filter(|_| addresses.is_none())
                    .map(|k| Hidden::canonical_value(CORE_USER, "addresses", "type", k)),
            )
            .collect();
        let schema = match &external_id {
            Some(_) => ResourceSchema::user().hiding(&hidden),
            None => ResourceSchema::user().without("externalId").hiding(&hidden),
        };
        let mut renames: HashMap<String, String> = ldap
            .iter()
            .map(|(f, a)| (f.default_ldap().to_ascii_lowercase(), a.clone()))
            .collect();
        renames.insert("uid".into(), s.user_name_attribute.clone());
        // The attributes in lockbridge's schema that this mapping writes there (an
        // override elsewhere needs no class of ours).
        let aux = s.lockbridge_schema.then(|| AuxClass {
            name: SCIM_USER_CLASS,
            attributes: ldap
                .iter()
                .filter(|(f, a)| f.in_lockbridge_schema() && a.as_str() == f.default_ldap())
                .map(|(_, a)| a.to_ascii_lowercase())
                .chain(
                    external_id
                        .iter()
                        .filter(|x| x.eq_ignore_ascii_case(EXTERNAL_ID_ATTRIBUTE))
                        .map(|x| x.to_ascii_lowercase()),
                )
                .chain(json.iter().map(|j| j.ldap.to_ascii_lowercase()))
                .chain(primary.iter().map(|p| p.to_ascii_lowercase()))
                .chain(addresses.iter().map(|a| a.to_ascii_lowercase()))
                .collect(),
        });
        let filter = UserFilterMapping {
            base: DefaultUserMapping {
                external_id: external_id.clone(),
                sign_in: s.sign_in.clone(),
                entries: s.entries,
            },
            renames,
            homeless: homeless
                .iter()
                .map(|f| f.default_ldap().to_ascii_lowercase())
                .collect(),
            manager: ldap[&Field::Manager].clone(),
            json: json.clone(),
            addresses,
            primary,
        };
        let mut mapping = Self {
            user_name: s.user_name_attribute,
            naming,
            object_classes: s.object_classes,
            external_id,
            ldap,
            aux,
            homeless,
            json,
            schema_hidden: hidden,
            primary,
            addresses,
            person,
            schema,
            filter,
            sign_in: s.sign_in,
            entries: s.entries,
            read_attrs: std::sync::Arc::from([]),
        };
        mapping.read_attrs = mapping.list_read_attributes().into();
        Ok(mapping)
    }

    /// The field's LDAP attribute; `None` when it has no home.
    fn attr(&self, f: Field) -> Option<&str> {
        self.ldap.get(&f).map(String::as_str)
    }

    /// Where the values of `scim` kept as JSON live, if the directory has that home.
    fn json_home(&self, scim: &str) -> Option<&'static JsonHome> {
        self.json.iter().copied().find(|j| j.scim == scim)
    }

    /// The values of `scim` kept as JSON in `entry`.
    fn json_values(&self, entry: &Entry, scim: &str) -> Vec<Value> {
        self.json_home(scim)
            .map(|j| {
                entry
                    .all(j.ldap)
                    .iter()
                    .filter_map(|v| j.decode(v))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Puts the `values` of `scim` that its JSON home takes (the types it keeps) in
    /// `attrs` (lower-case LDAP attribute → values); the others are the caller's.
    fn set_json(
        &self,
        attrs: &mut BTreeMap<String, Vec<String>>,
        scim: &str,
        values: &[MultiValue],
    ) {
        let Some(j) = self.json_home(scim) else {
            return;
        };
        let kept = j.encode_all(values.iter().filter(|v| j.keeps(v.kind.as_deref())));
        if !kept.is_empty() {
            attrs.insert(j.ldap.to_ascii_lowercase(), kept);
        }
    }

    /// The SCIM attributes this mapping has no home for (lockbridge's LDAP schema is not
    /// loaded and no override gives one): left out of the schema view, ignored in writes.
    pub fn homeless(&self) -> Vec<Hidden> {
        self.schema_hidden.clone()
    }

    /// The same, as attribute paths for operators (`name.middleName`, `costCenter`, …).
    pub fn homeless_names(&self) -> Vec<&'static str> {
        self.homeless
            .iter()
            .map(|f| f.key())
            .chain(
                JSON_HOMES
                    .iter()
                    .filter(|j| !self.json.contains(j))
                    .map(JsonHome::name),
            )
            .chain(
                self.addresses
                    .is_none()
                    .then_some("addresses of type home and other"),
            )
            .chain(
                self.primary
                    .is_none()
                    .then_some("primary of work emails, phone numbers and the work address"),
            )
            .collect()
    }

    /// Whether `externalId` is stored.
    pub fn stores_external_id(&self) -> bool {
        self.external_id.is_some()
    }

    /// The schema view for this mapping (`externalId` absent when not stored).
    pub fn schema(&self) -> &ResourceSchema {
        &self.schema
    }

    /// The LDAP attribute holding `userName`.
    pub fn user_name_attribute(&self) -> &str {
        &self.user_name
    }

    /// Every LDAP attribute to request when reading a user, operational ones included.
    pub fn read_attributes(&self) -> std::sync::Arc<[String]> {
        self.read_attrs.clone()
    }

    fn list_read_attributes(&self) -> Vec<String> {
        let mut out = vec!["objectClass".to_owned(), self.user_name.clone()];
        out.extend(self.ldap.values().cloned());
        out.extend(self.json.iter().map(|j| j.ldap.to_owned()));
        out.extend(self.primary.iter().map(|p| (*p).to_owned()));
        out.extend(self.addresses.iter().map(|a| (*a).to_owned()));
        out.extend(self.external_id.iter().cloned());
        // The id and the version after memberOf (the order the benchmark's raw search
        // pins).
        let (groups, times) = USER_OPERATIONAL.split_at(1);
        out.extend(
            groups
                .iter()
                .chain([
                    &self.entries.id_attribute(),
                    &self.entries.version_attribute(),
                ])
                .chain(times)
                .chain(self.sign_in.attributes())
                .map(|s| (*s).to_owned()),
        );
        if self.person {
            for must in ["cn", "sn"] {
                if !out.iter().any(|a| a.eq_ignore_ascii_case(must)) {
                    out.push(must.to_owned());
                }
            }
        }
        out
    }

    /// What a password-only PATCH reads of the user (next to the stored password): the
    /// name (for the password rules and the audit) and the version (for `If-Match`).
    /// A push is the most frequent write; the full read costs the directory as much
    /// as a GET, for attributes the push never looks at.
    pub fn password_push_attributes(&self) -> Vec<String> {
        // The sign-in state too: a blocked account stays blocked after the push.
        [self.user_name.as_str(), self.entries.version_attribute()]
            .into_iter()
            .chain(self.sign_in.attributes().iter().copied())
            .map(str::to_owned)
            .collect()
    }

    /// The filter mapping that agrees with this mapping (`manager` is a reference: the
    /// service resolves its ids with [`super::filter::references`]).
    pub fn filter_mapping(&self) -> &dyn FilterMapping {
        &self.filter
    }

    /// The server-side sort key for `sortBy` (RFC 7644 §3.4.2.3), ascending (set
    /// `reverse` for `sortOrder=descending`, [`super::model::ListQuery::descending`]).
    pub fn sort_key(&self, path: &AttrPath) -> Result<SortKey, ScimError> {
        sort_key(&self.filter, path)
    }

    /// The resource's version (`meta.version`, the ETag): `W/"<entryCSN>"`.
    pub fn version(&self, entry: &Entry) -> Option<String> {
        version(&self.entries, entry)
    }

    /// How the directory versions entries.
    pub fn entries(&self) -> EntryVocabulary {
        self.entries
    }

    /// The full resource for `entry` (every attribute with a value; `groups` only when
    /// `extras.groups` is given). `schemas` lists the extensions that have a value.
    pub fn to_resource(&self, entry: &Entry, extras: &UserExtras) -> Value {
        let base = extras.base_url.trim_end_matches('/');
        let id = self.entries.id(entry).unwrap_or_default().to_owned();
        let mut r = Map::new();
        r.insert("id".into(), id.clone().into());
        if let Some(x) = self.external_id.as_deref().and_then(|a| entry.first(a)) {
            r.insert("externalId".into(), x.into());
        }
        if let Some(u) = entry.first(&self.user_name) {
            r.insert("userName".into(), u.into());
        }
        let value = |f: Field| self.attr(f).and_then(|a| entry.first(a));
        let mut name = Map::new();
        for (key, f) in NAME_PARTS {
            if let Some(v) = value(f) {
                name.insert(key.into(), v.into());
            }
        }
        if !name.is_empty() {
            r.insert("name".into(), Value::Object(name));
        }
        for (key, f) in CORE_STRINGS {
            if let Some(v) = value(f) {
                r.insert(key.into(), v.into());
            }
        }
        let state = self.sign_in.read(entry);
        r.insert("active".into(), Value::Bool(!state.blocked));
        let all = |f: Field| self.attr(f).map(|a| entry.all(a)).unwrap_or(&[]);
        // Which value kept in an inetOrgPerson attribute is primary (values kept as JSON
        // say so themselves). Without lockbridge's schema nothing is: a value that read
        // back differently from what was written would mislead clients that compare.
        let marks = self.primary.map(|p| entry.all(p)).unwrap_or(&[]);
        let marked =
            |attr: &str, kind: &str, value: Option<&str>| primary_of(marks, attr, kind, value);
        let emails: Vec<Value> = all(Field::WorkEmail)
            .iter()
            .map(|m| {
                let mut e = Map::new();
                e.insert("value".into(), m.as_str().into());
                e.insert("type".into(), "work".into());
                if let Some(p) = marked("emails", "work", Some(m)) {
                    e.insert("primary".into(), p.into());
                }
                Value::Object(e)
            })
            .chain(self.json_values(entry, "emails"))
            .collect();
        if !emails.is_empty() {
            r.insert("emails".into(), Value::Array(emails));
        }
        let phones: Vec<Value> = PHONES
            .into_iter()
            .flat_map(|(f, kind)| {
                all(f).iter().map(move |v| {
                    let mut p = Map::new();
                    p.insert("value".into(), v.as_str().into());
                    p.insert("type".into(), kind.into());
                    if let Some(primary) = marked("phoneNumbers", kind, Some(v)) {
                        p.insert("primary".into(), primary.into());
                    }
                    Value::Object(p)
                })
            })
            .chain(self.json_values(entry, "phoneNumbers"))
            .collect();
        if !phones.is_empty() {
            r.insert("phoneNumbers".into(), Value::Array(phones));
        }
        let mut address = Map::new();
        for (key, f) in WORK_ADDRESS {
            if let Some(v) = value(f) {
                let v = if f == Field::WorkFormatted {
                    from_postal_address(v)
                } else {
                    v.to_owned()
                };
                address.insert(key.into(), v.into());
            }
        }
        let mut addresses = Vec::new();
        if !address.is_empty() {
            address.insert("type".into(), "work".into());
            if let Some(p) = marked("addresses", "work", None) {
                address.insert("primary".into(), p.into());
            }
            addresses.push(Value::Object(address));
        }
        if let Some(a) = self.addresses {
            addresses.extend(entry.all(a).iter().filter_map(|v| decode_address(v)));
        }
        if !addresses.is_empty() {
            r.insert("addresses".into(), Value::Array(addresses));
        }
        for j in self.json.iter().filter(|j| j.open) {
            let values = self.json_values(entry, j.scim);
            if !values.is_empty() {
                r.insert(j.scim.into(), Value::Array(values));
            }
        }
        if let Some(groups) = extras.groups.as_ref().filter(|g| !g.is_empty()) {
            let groups = groups
                .iter()
                .map(|g| {
                    let mut o = Map::new();
                    o.insert("value".into(), g.id.as_str().into());
                    o.insert("$ref".into(), format!("{base}/Groups/{}", g.id).into());
                    if let Some(d) = &g.display {
                        o.insert("display".into(), d.as_str().into());
                    }
                    o.insert("type".into(), "direct".into());
                    Value::Object(o)
                })
                .collect();
            r.insert("groups".into(), Value::Array(groups));
        }
        let mut enterprise = Map::new();
        for (key, f) in ENTERPRISE_STRINGS {
            if let Some(v) = value(f) {
                enterprise.insert(key.into(), v.into());
            }
        }
        if let Some(m) = &extras.manager_id {
            let mut o = Map::new();
            o.insert("value".into(), m.as_str().into());
            o.insert("$ref".into(), format!("{base}/Users/{m}").into());
            // No displayName: a client that set value and $ref gets back exactly that.
            enterprise.insert("manager".into(), Value::Object(o));
        }
        let mut password = Map::new();
        if let Some(t) = state.changed_at {
            password.insert(
                "passwordLastChanged".into(),
                t.to_rfc3339_opts(SecondsFormat::AutoSi, true).into(),
            );
        }
        if let Some(t) = extras.password_expires_at {
            password.insert(
                "passwordExpiresAt".into(),
                t.to_rfc3339_opts(SecondsFormat::AutoSi, true).into(),
            );
        }
        password.insert("mustChange".into(), state.must_change.into());
        password.insert("neverExpires".into(), extras.never_expires.into());
        let mut schemas = vec![Value::from(CORE_USER)];
        if !enterprise.is_empty() {
            schemas.push(ENTERPRISE_USER.into());
            r.insert(ENTERPRISE_USER.into(), Value::Object(enterprise));
        }
        schemas.push(PASSWORD_EXTENSION.into());
        r.insert(PASSWORD_EXTENSION.into(), Value::Object(password));
        r.insert(
            "meta".into(),
            meta(&self.entries, entry, "User", format!("{base}/Users/{id}")),
        );
        r.insert("schemas".into(), Value::Array(schemas));
        Value::Object(r)
    }

    /// Read a User body (POST, PUT, or a patched resource). Lenient where clients differ:
    /// names in any case, URN-qualified or flattened (`urn:…:User:department`,
    /// `name.givenName`), booleans as `"True"`/`"false"`, the manager as an id string,
    /// an object or a one-element array; read-only (`id`, `meta`, `groups`, …) and unknown
    /// attributes are ignored; emails and phone numbers of types lockbridge does not store
    /// are ignored like unknown attributes. `userName` is required; `password`, when
    /// given, must be a non-empty string.
    pub fn parse(&self, body: &Value) -> Result<UserWrite, ScimError> {
        let Value::Object(map) = body else {
            return Err(ScimError::InvalidSyntax(
                "a User must be a JSON object".into(),
            ));
        };
        let b = Body {
            map,
            schema: &self.schema,
        };
        let user_name = b.required_string("userName")?;
        let mut w = UserWrite {
            user_name,
            ..UserWrite::default()
        };
        // Values kept as JSON, added to `w.attrs` at the end.
        let mut json = BTreeMap::new();
        // The primary values kept in inetOrgPerson attributes (`PRIMARY_ATTRIBUTE`).
        let mut marks: Vec<String> = Vec::new();
        // A field without a home is ignored like an unknown attribute.
        let mut set = |f: Field, values: Vec<String>| {
            if let Some(a) = self.attr(f)
                && !values.is_empty()
            {
                w.attrs.insert(a.to_ascii_lowercase(), values);
            }
        };
        for (sub, f) in NAME_PARTS {
            if let Some(v) = b.get_sub(None, "name", sub) {
                set(f, string(v, &format!("name.{sub}"))?.into_iter().collect());
            }
        }
        for (name, f) in CORE_STRINGS {
            if let Some(v) = b.get(None, name) {
                set(f, string(v, name)?.into_iter().collect());
            }
        }
        for (name, f) in ENTERPRISE_STRINGS {
            if let Some(v) = b.get(Some(ENTERPRISE_USER), name) {
                set(f, string(v, name)?.into_iter().collect());
            }
        }
        if let Some(v) = b.get(None, "emails") {
            let values = multi(v, "emails")?;
            self.set_json(&mut json, "emails", &values);
            let mut mails = Vec::new();
            for e in values {
                let kind = e.kind.as_deref().unwrap_or("work");
                if kind.eq_ignore_ascii_case("work") {
                    if let Some(p) = e.primary {
                        marks.push(primary_mark("emails", "work", Some(&e.value), p));
                    }
                    mails.push((e.primary == Some(true), e.value));
                }
            }
            // The primary address first: the first is what lockbridge reports as primary.
            mails.sort_by_key(|(primary, _)| !primary);
            set(Field::WorkEmail, dedup(mails.into_iter().map(|(_, v)| v)));
        }
        if let Some(v) = b.get(None, "phoneNumbers") {
            let mut by_kind: Vec<Vec<(bool, String)>> = vec![Vec::new(); PHONES.len()];
            let values = multi(v, "phoneNumbers")?;
            self.set_json(&mut json, "phoneNumbers", &values);
            for p in values {
                let kind = p.kind.as_deref().unwrap_or("work");
                if let Some(i) = PHONES
                    .iter()
                    .position(|(_, k)| k.eq_ignore_ascii_case(kind))
                {
                    if let Some(primary) = p.primary {
                        marks.push(primary_mark(
                            "phoneNumbers",
                            PHONES[i].1,
                            Some(&p.value),
                            primary,
                        ));
                    }
                    by_kind[i].push((p.primary == Some(true), p.value));
                }
            }
            for ((f, _), mut numbers) in PHONES.into_iter().zip(by_kind) {
                numbers.sort_by_key(|(primary, _)| !primary);
                set(f, dedup(numbers.into_iter().map(|(_, v)| v)));
            }
        }
        let addresses = b.get(None, "addresses").map(address_items).transpose()?;
        let addresses = addresses.as_deref().unwrap_or_default();
        if let Some(a) = self.addresses {
            let others = other_addresses(addresses)?;
            if !others.is_empty() {
                json.insert(a.to_ascii_lowercase(), others);
            }
        }
        if let Some(work) = work_address(addresses) {
            if let Some(p) = work.primary {
                marks.push(primary_mark("addresses", "work", None, p));
            }
            for (key, f) in WORK_ADDRESS {
                if let Some(v) = non_null(get_ci(work.object, key)) {
                    let text = string(v, &format!("addresses.{key}"))?;
                    let text = if f == Field::WorkFormatted {
                        text.map(|t| to_postal_address(&t))
                    } else {
                        text
                    };
                    set(f, text.into_iter().collect());
                }
            }
        }
        for j in self.json.iter().filter(|j| j.open) {
            if let Some(v) = b.get(None, j.scim) {
                let values = multi(v, j.scim)?;
                if j.ldap == "lockbridgeX509Certificate" {
                    check_base64(&values, j.scim)?;
                }
                self.set_json(&mut json, j.scim, &values);
            }
        }
        w.attrs.extend(json);
        if let Some(p) = self.primary
            && !marks.is_empty()
        {
            w.attrs.insert(p.to_ascii_lowercase(), marks);
        }
        if let Some(v) = b.get(Some(ENTERPRISE_USER), "manager") {
            w.manager_id = manager_id(v)?;
        }
        if self.external_id.is_some()
            && let Some(v) = b.get(None, "externalId")
        {
            w.external_id = string(v, "externalId")?;
        }
        if let Some(v) = b.get(None, "active") {
            w.active = boolean(v, "active")?;
        }
        if let Some(v) = b.get(Some(PASSWORD_EXTENSION), "mustChange") {
            w.must_change = boolean(v, "mustChange")?;
        }
        if let Some(v) = b.get(None, "password") {
            w.password = Some(password(v)?);
        }
        Ok(w)
    }

    /// `cn` and `sn` for `w` when the object classes require them and `w` does not give
    /// them (lower-case name, value).
    fn derived(&self, w: &UserWrite) -> Vec<(&'static str, String)> {
        if !self.person {
            return Vec::new();
        }
        let value = |f: Field| -> Option<&str> {
            w.attrs
                .get(&self.attr(f)?.to_ascii_lowercase())
                .and_then(|v| v.first())
                .map(String::as_str)
        };
        let mut out = Vec::new();
        for must in ["cn", "sn"] {
            if self.user_name.eq_ignore_ascii_case(must)
                || self.naming.eq_ignore_ascii_case(must)
                || w.attrs.contains_key(must)
            {
                continue;
            }
            let v = if must == "cn" {
                let given_family = [value(Field::GivenName), value(Field::FamilyName)]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                value(Field::Formatted)
                    .or(value(Field::DisplayName))
                    .map(str::to_owned)
                    .or(Some(given_family).filter(|g| !g.trim().is_empty()))
            } else {
                value(Field::FamilyName).map(str::to_owned)
            };
            out.push((must, v.unwrap_or_else(|| w.user_name.clone())));
        }
        out
    }

    /// The DN and attributes of a new entry for `w` under `container_dn`: the RDN is
    /// `user_name_attribute=<userName>`; `cn`/`sn` are derived when missing. Neither the
    /// password nor the sign-in state is among them: the service sets them after the add
    /// ([`UserMapping::state_edit`]).
    pub fn new_entry(
        &self,
        w: &UserWrite,
        container_dn: &str,
    ) -> (String, Vec<(String, Vec<String>)>) {
        let dn = format!(
            "{}={},{}",
            self.naming,
            escape_rdn_value(&w.user_name),
            container_dn
        );
        let mut attrs = vec![
            ("objectClass".to_owned(), self.object_classes.clone()),
            (self.user_name.clone(), vec![w.user_name.clone()]),
        ];
        if !self.naming.eq_ignore_ascii_case(&self.user_name) {
            attrs.push((self.naming.clone(), vec![w.user_name.clone()]));
        }
        for (must, v) in self.derived(w) {
            attrs.push((must.to_owned(), vec![v]));
        }
        let stored = self
            .ldap
            .values()
            .map(String::as_str)
            .chain(self.json.iter().map(|j| j.ldap))
            .chain(self.primary)
            .chain(self.addresses);
        for ldap in stored {
            if let Some(v) = w.attrs.get(&ldap.to_ascii_lowercase())
                && !v.is_empty()
            {
                attrs.push((ldap.to_owned(), v.clone()));
            }
        }
        if let (Some(a), Some(x)) = (&self.external_id, &w.external_id) {
            attrs.push((a.clone(), vec![x.clone()]));
        }
        if let Some(aux) = &self.aux {
            aux.complete_new(&mut attrs);
        }
        (dn, attrs)
    }

    /// The sign-in state of an entry read with [`UserMapping::read_attributes`].
    pub fn sign_in_state(&self, entry: &Entry) -> crate::directory::PasswordState {
        self.sign_in.read(entry)
    }

    /// The sign-in state `w` asks for that `current` (`None`: a new entry) does not
    /// have: `active: false` blocks sign-in, `active: true` lifts only an
    /// administrator's block; `mustChange` as given. Unset attributes change nothing.
    pub fn state_edit(&self, current: Option<&Entry>, w: &UserWrite) -> ProvisionedState {
        let now = match current {
            Some(e) => self.sign_in.read(e),
            None => self.new_entry_state(),
        };
        // A new entry the directory creates blocked (Active Directory) is enabled unless
        // the client says `active: false`, as on every other directory.
        let active = w.active.or(current.is_none().then_some(true));
        ProvisionedState {
            blocked: active.map(|a| !a).filter(|b| *b != now.blocked),
            must_change: w.must_change.filter(|m| *m != now.must_change),
        }
    }

    /// The new RDN (`uid=<new userName>`, escaped) when `userName` changes and the entry
    /// is named by `user_name_attribute`; the service renames the entry (modrdn, old RDN
    /// value deleted). `None` when nothing changes, or when the entry is named by another
    /// attribute (then [`UserMapping::changes`] replaces the attribute instead).
    pub fn rdn_change(&self, current: &Entry, w: &UserWrite) -> Option<String> {
        let (attr, value) = rdn_of(&current.dn)?;
        (attr.eq_ignore_ascii_case(&self.naming) && value != w.user_name)
            .then(|| format!("{}={}", self.naming, escape_rdn_value(&w.user_name)))
    }

    /// The sign-in state of an entry just added ([`UserMapping::new_entry`]): none, or
    /// Active Directory's disabled account.
    pub fn new_entry_state(&self) -> crate::directory::PasswordState {
        self.sign_in.new_entry_state()
    }

    /// The LDAP changes that make `current` hold `w`, and nothing else: replace semantics
    /// for every mapped attribute (absent in `w` = cleared; `cn`/`sn` re-derived), only
    /// for attributes whose values differ (values compared exactly; for single-valued SCIM
    /// attributes, other LDAP values after the first are kept). `active` and `mustChange`
    /// change only when given. The RDN value of an entry named by a mapped attribute is
    /// kept. A `userName` change is a rename ([`UserMapping::rdn_change`]) unless the entry
    /// is named by another attribute. Sign-in state is not among them
    /// ([`UserMapping::state_edit`]). `manager`: `attrs["manager"]` if the service resolved
    /// it; cleared if `manager_id` is `None`; untouched if `manager_id` is set but not
    /// resolved.
    pub fn changes(&self, current: &Entry, w: &UserWrite) -> Vec<Change> {
        let rdn = rdn_of(&current.dn);
        let mut out = Vec::new();
        let derived = self.derived(w);
        for (&f, ldap) in &self.ldap {
            let ldap = ldap.as_str();
            let key = ldap.to_ascii_lowercase();
            if f == Field::Manager && w.manager_id.is_some() && !w.attrs.contains_key(&key) {
                continue;
            }
            let new = match w.attrs.get(&key) {
                Some(v) => v.clone(),
                None => derived
                    .iter()
                    .filter(|(m, _)| m.eq_ignore_ascii_case(ldap))
                    .map(|(_, v)| v.clone())
                    .collect(),
            };
            push_change(&mut out, current, ldap, new, f.is_multi(), rdn.as_ref());
        }
        for ldap in self
            .json
            .iter()
            .map(|j| j.ldap)
            .chain(self.primary)
            .chain(self.addresses)
        {
            let new = w
                .attrs
                .get(&ldap.to_ascii_lowercase())
                .cloned()
                .unwrap_or_default();
            push_change(&mut out, current, ldap, new, true, rdn.as_ref());
        }
        for (must, v) in &derived {
            if !self.ldap.values().any(|a| a.eq_ignore_ascii_case(must)) {
                push_change(
                    &mut out,
                    current,
                    must,
                    vec![v.clone()],
                    false,
                    rdn.as_ref(),
                );
            }
        }
        if let Some(a) = &self.external_id {
            let new = w.external_id.iter().cloned().collect();
            push_change(&mut out, current, a, new, false, rdn.as_ref());
        }
        let named_by_user_name = rdn
            .as_ref()
            .is_some_and(|(a, _)| a.eq_ignore_ascii_case(&self.user_name));
        if !named_by_user_name {
            push_change(
                &mut out,
                current,
                &self.user_name,
                vec![w.user_name.clone()],
                false,
                rdn.as_ref(),
            );
        }
        if let Some(aux) = &self.aux {
            aux.complete(current, &mut out);
        }
        out
    }
}

/// Append `Replace(ldap, new)` unless `current` already holds `new`.
fn push_change(
    out: &mut Vec<Change>,
    current: &Entry,
    ldap: &str,
    mut new: Vec<String>,
    multi: bool,
    rdn: Option<&(String, String)>,
) {
    let cur = current.all(ldap);
    if !multi && new.len() == 1 && cur.first() == new.first() {
        return;
    }
    // Never remove the value the entry is named by.
    if let Some((a, v)) = rdn
        && a.eq_ignore_ascii_case(ldap)
        && !new.iter().any(|n| n.eq_ignore_ascii_case(v))
        && let Some(kept) = cur.iter().find(|c| c.eq_ignore_ascii_case(v))
    {
        new.push(kept.clone());
    }
    if cur == new.as_slice() {
        return;
    }
    out.push(Change::Replace(ldap.to_owned(), new));
}

fn meta(entries: &EntryVocabulary, entry: &Entry, resource_type: &str, location: String) -> Value {
    let mut m = Map::new();
    m.insert("resourceType".into(), resource_type.into());
    if let Some(t) = entry.first("createTimestamp").and_then(rfc3339) {
        m.insert("created".into(), t.into());
    }
    if let Some(t) = entry.first("modifyTimestamp").and_then(rfc3339) {
        m.insert("lastModified".into(), t.into());
    }
    m.insert("location".into(), location.into());
    if let Some(v) = version(entries, entry) {
        m.insert("version".into(), v.into());
    }
    Value::Object(m)
}

/// `W/"<entryCSN>"` (or the kind's version attribute): a weak ETag, since the
/// representation also depends on the `attributes` asked for.
fn version(entries: &EntryVocabulary, entry: &Entry) -> Option<String> {
    entries.version(entry).map(|csn| format!("W/\"{csn}\""))
}

/// The user filter mapping: [`DefaultUserMapping`] with the configured LDAP names,
/// `manager` as a reference, and the password extension's dateTime.
struct UserFilterMapping {
    base: DefaultUserMapping,
    /// Lower-case default LDAP name → configured name.
    renames: HashMap<String, String>,
    /// Lower-case default LDAP names of the fields without a home.
    homeless: Vec<String>,
    manager: String,
    /// The multi-valued attributes (or types of them) kept as JSON.
    json: Vec<&'static JsonHome>,
    /// Where addresses other than the work one are kept, if anywhere.
    addresses: Option<&'static str>,
    /// Where `primary` of values in inetOrgPerson attributes is marked, if anywhere.
    primary: Option<&'static str>,
}

impl UserFilterMapping {
    fn rename(&self, t: Target) -> Target {
        match t {
            Target::Attribute { ldap, .. }
                if self.homeless.contains(&ldap.to_ascii_lowercase()) =>
            {
                Target::unsupported(if ldap.starts_with("lockbridge") {
                    "this attribute is not stored (the directory lacks lockbridge's LDAP schema, \
                     scim/lockbridge.schema), so it cannot be filtered"
                } else {
                    "this attribute is not stored (scim.attributes leaves it out), so it cannot \
                     be filtered"
                })
            }
            Target::Attribute { ldap, syntax } => Target::Attribute {
                ldap: self
                    .renames
                    .get(&ldap.to_ascii_lowercase())
                    .cloned()
                    .unwrap_or(ldap),
                syntax,
            },
            other => other,
        }
    }
}

impl FilterMapping for UserFilterMapping {
    fn attribute(&self, path: &AttrPath) -> Option<Target> {
        let in_enterprise = path
            .urn
            .as_deref()
            .is_none_or(|u| u.eq_ignore_ascii_case(ENTERPRISE_USER));
        if in_enterprise && path.name_is("manager") {
            return Some(match path.sub_attr.as_deref() {
                None => Target::Reference {
                    ldap: self.manager.clone(),
                },
                Some(s) if s.eq_ignore_ascii_case("value") => Target::Reference {
                    ldap: self.manager.clone(),
                },
                Some(_) => {
                    Target::unsupported("only manager.value (the manager's id) can be filtered")
                }
            });
        }
        let in_password = path
            .urn
            .as_deref()
            .is_none_or(|u| u.eq_ignore_ascii_case(PASSWORD_EXTENSION));
        if in_password && path.sub_attr.is_none() {
            if path.name_is("passwordLastChanged") {
                return Some(match self.base.sign_in.changed_at_attribute() {
                    Some(attribute) => Target::attribute(attribute, Syntax::GeneralizedTime),
                    None => Target::unsupported(
                        "passwordLastChanged cannot be filtered on this directory (it keeps \
                         the time as a number of ticks)",
                    ),
                });
            }
            if path.name_is("passwordExpiresAt") || path.name_is("neverExpires") {
                return Some(Target::unsupported(format!(
                    "{} is computed from the expiration policy, so it cannot be filtered",
                    path.name
                )));
            }
        }
        self.base.attribute(path).map(|t| self.rename(t))
    }

    fn elements(&self, path: &AttrPath) -> Option<Vec<Element>> {
        let json: Vec<Element> = if path.in_schema(CORE_USER) && path.sub_attr.is_none() {
            self.json
                .iter()
                .filter(|j| path.name_is(j.scim))
                .flat_map(|j| j.elements())
                .collect()
        } else {
            Vec::new()
        };
        let mut json = json;
        if path.in_schema(CORE_USER)
            && path.sub_attr.is_none()
            && path.name_is("addresses")
            && let Some(a) = self.addresses
        {
            // Every part but `formatted` (lines; not filterable for the work address either).
            let parts: Vec<&str> = ADDRESS_PARTS
                .into_iter()
                .filter(|p| *p != "formatted")
                .collect();
            json.extend(
                OTHER_ADDRESS_KINDS
                    .iter()
                    .map(|k| json_address_element(a, k, &parts)),
            );
        }
        let base = self.base.elements(path);
        if base.is_none() && json.is_empty() {
            return None;
        }
        let attr = path.name.clone();
        let mut out: Vec<Element> = base
            .unwrap_or_default()
            .into_iter()
            // A kind of value without a home is not held by anyone.
            .filter(|k| {
                !k.sub_attrs.iter().any(|(n, t)| {
                    n.eq_ignore_ascii_case("value")
                        && matches!(t, Target::Attribute { ldap, .. }
                            if self.homeless.contains(&ldap.to_ascii_lowercase()))
                })
            })
            .map(|k| {
                let kind = k.sub_attrs.iter().find_map(|(n, t)| match t {
                    Target::Fixed(CompValue::String(kind)) if n.eq_ignore_ascii_case("type") => {
                        Some(kind.clone())
                    }
                    _ => None,
                });
                Element {
                    sub_attrs: k
                        .sub_attrs
                        .into_iter()
                        .map(|(n, t)| match (&kind, self.primary) {
                            (Some(kind), Some(marks)) if n.eq_ignore_ascii_case("primary") => {
                                let target = primary_mark_target(marks, &attr, kind);
                                (n, target)
                            }
                            _ => (n, self.rename(t)),
                        })
                        .collect(),
                }
            })
            .collect();
        out.extend(json);
        Some(out)
    }
}

/// `sortBy` → LDAP sort key, through the filter mapping: only attributes stored in one
/// LDAP attribute with an ordering can be sorted.
fn sort_key(map: &dyn FilterMapping, path: &AttrPath) -> Result<SortKey, ScimError> {
    let refuse = |why: &str| {
        Err(ScimError::InvalidValue(format!(
            "sortBy \"{}\": {why}",
            truncate(&path.to_string())
        )))
    };
    let target = match map.elements(&path.parent()) {
        Some(mut kinds) => {
            let sub = path.sub_attr.as_deref().unwrap_or("value");
            if kinds.len() != 1 || !sub.eq_ignore_ascii_case("value") {
                return refuse("this multi-valued attribute cannot be sorted by");
            }
            let kind = kinds.remove(0);
            kind.sub_attrs
                .into_iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("value"))
                .map(|(_, t)| t)
        }
        None => map.attribute(path),
    };
    let (ldap, syntax) = match target {
        Some(Target::Attribute { ldap, syntax }) => (ldap, syntax),
        Some(_) => return refuse("this attribute cannot be sorted by"),
        None => return refuse("no such attribute; sort by an attribute listed at /Schemas"),
    };
    let rule = match syntax {
        Syntax::CaseIgnoreString => "caseIgnoreOrderingMatch",
        Syntax::CaseExactString => "caseExactOrderingMatch",
        Syntax::GeneralizedTime => "generalizedTimeOrderingMatch",
        Syntax::Integer => "integerOrderingMatch",
        Syntax::Uuid => "UUIDOrderingMatch",
        Syntax::Boolean | Syntax::Dn | Syntax::PresenceOnly => {
            return refuse("this attribute has no order");
        }
    };
    Ok(SortKey {
        attribute: ldap,
        ordering_rule: Some(rule.to_owned()),
        reverse: false,
    })
}

// ---------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------

/// How groups are stored; the `[scim]` configuration section is mapped onto this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMappingSettings {
    /// Object classes of new entries (`["groupOfNames"]`).
    pub object_classes: Vec<String>,
    /// The LDAP attribute holding `externalId`; `None`: lockbridge's schema's
    /// [`EXTERNAL_ID_ATTRIBUTE`] when the directory has it, else not stored.
    pub external_id_attribute: Option<String>,
    /// The directory has lockbridge's LDAP schema ([`SCIM_GROUP_CLASS`]).
    pub lockbridge_schema: bool,
    /// How the directory versions entries (`meta.version`).
    pub entries: EntryVocabulary,
}

impl Default for GroupMappingSettings {
    fn default() -> Self {
        Self {
            object_classes: vec!["groupOfNames".into()],
            external_id_attribute: None,
            lockbridge_schema: false,
            entries: EntryVocabulary::default(),
        }
    }
}

/// What a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    User,
    Group,
}

impl MemberKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Group => "Group",
        }
    }

    fn endpoint(self) -> &'static str {
        match self {
            Self::User => "Users",
            Self::Group => "Groups",
        }
    }
}

/// A member as the service resolved it from its DN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRef {
    pub id: String,
    pub kind: MemberKind,
    pub display: Option<String>,
}

/// A group as a client wants it stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupWrite {
    pub display_name: String,
    pub external_id: Option<String>,
    /// Member ids, without duplicates; the service resolves them to DNs.
    pub member_ids: Vec<String>,
}

/// The group mapping, built once from settings.
#[derive(Debug)]
pub struct GroupMapping {
    object_classes: Vec<String>,
    external_id: Option<String>,
    /// [`SCIM_GROUP_CLASS`] for an automatic `externalId` home.
    aux: Option<AuxClass>,
    schema: ResourceSchema,
    filter: DefaultGroupMapping,
    entries: EntryVocabulary,
}

/// The member value of an empty `groupOfNames`: the empty DN.
const EMPTY_MEMBER: &str = "";

impl GroupMapping {
    /// Validate `s`.
    pub fn new(s: GroupMappingSettings) -> Result<Self, String> {
        check_object_classes(&s.object_classes)?;
        if let Some(x) = &s.external_id_attribute {
            check_attribute("external_id_attribute", x)?;
            if ["cn", "member"].iter().any(|a| a.eq_ignore_ascii_case(x))
                || is_operational(x, &[])
                || x.eq_ignore_ascii_case(s.entries.version_attribute())
                || x.eq_ignore_ascii_case(s.entries.id_attribute())
            {
                return Err(format!(
                    "external_id_attribute is \"{x}\", which holds the group's name, members or \
                     state; choose another attribute"
                ));
            }
        }
        let automatic = s.external_id_attribute.is_none() && s.lockbridge_schema;
        let external_id = s
            .external_id_attribute
            .or_else(|| automatic.then(|| EXTERNAL_ID_ATTRIBUTE.to_owned()));
        let schema = match &external_id {
            Some(_) => ResourceSchema::group().clone(),
            None => ResourceSchema::group().without("externalId"),
        };
        Ok(Self {
            entries: s.entries,
            filter: DefaultGroupMapping {
                external_id: external_id.clone(),
                entries: s.entries,
            },
            object_classes: s.object_classes,
            aux: automatic.then(|| AuxClass {
                name: SCIM_GROUP_CLASS,
                attributes: vec![EXTERNAL_ID_ATTRIBUTE.to_ascii_lowercase()],
            }),
            external_id,
            schema,
        })
    }

    /// The schema view for this mapping.
    pub fn schema(&self) -> &ResourceSchema {
        &self.schema
    }

    /// Whether `externalId` is stored.
    pub fn stores_external_id(&self) -> bool {
        self.external_id.is_some()
    }

    /// Every LDAP attribute to request when reading a group.
    pub fn read_attributes(&self) -> std::sync::Arc<[String]> {
        let mut out = vec![
            "objectClass".to_owned(),
            "cn".to_owned(),
            "member".to_owned(),
        ];
        out.extend(self.external_id.iter().cloned());
        out.push(self.entries.id_attribute().to_owned());
        out.extend(GROUP_OPERATIONAL.iter().map(|s| (*s).to_owned()));
        out.push(self.entries.version_attribute().to_owned());
        out.into()
    }

    /// The filter mapping that agrees with this mapping.
    pub fn filter_mapping(&self) -> &dyn FilterMapping {
        &self.filter
    }

    /// The server-side sort key for `sortBy`, ascending.
    pub fn sort_key(&self, path: &AttrPath) -> Result<SortKey, ScimError> {
        sort_key(&self.filter, path)
    }

    /// The resource's version (`meta.version`, the ETag): `W/"<entryCSN>"`.
    pub fn version(&self, entry: &Entry) -> Option<String> {
        version(&self.entries, entry)
    }

    /// The LDAP filter every group matches: its object classes, e.g.
    /// `(objectClass=groupOfNames)`.
    pub fn object_filter(&self) -> String {
        let parts: Vec<String> = self
            .object_classes
            .iter()
            .map(|c| format!("(objectClass={c})"))
            .collect();
        match parts.as_slice() {
            [one] => one.clone(),
            _ => format!("(&{})", parts.concat()),
        }
    }

    /// The member DNs of `entry`, without the empty-group placeholder: what the service
    /// resolves into [`MemberRef`]s.
    pub fn member_dns(&self, entry: &Entry) -> Vec<String> {
        entry
            .all("member")
            .iter()
            .filter(|m| !m.trim().is_empty())
            .cloned()
            .collect()
    }

    fn display_name(entry: &Entry) -> Option<String> {
        match rdn_of(&entry.dn) {
            Some((a, v)) if a.eq_ignore_ascii_case("cn") => Some(v),
            _ => entry.first("cn").map(str::to_owned),
        }
    }

    /// The full resource for `entry`, with `members` as the service resolved them (empty:
    /// no `members` attribute).
    pub fn to_resource(&self, entry: &Entry, members: &[MemberRef], base_url: &str) -> Value {
        let base = base_url.trim_end_matches('/');
        let id = self.entries.id(entry).unwrap_or_default().to_owned();
        let mut r = Map::new();
        r.insert("schemas".into(), Value::Array(vec![CORE_GROUP.into()]));
        r.insert("id".into(), id.clone().into());
        if let Some(x) = self.external_id.as_deref().and_then(|a| entry.first(a)) {
            r.insert("externalId".into(), x.into());
        }
        if let Some(d) = Self::display_name(entry) {
            r.insert("displayName".into(), d.into());
        }
        if !members.is_empty() {
            let members = members
                .iter()
                .map(|m| {
                    let mut o = Map::new();
                    o.insert("value".into(), m.id.as_str().into());
                    o.insert(
                        "$ref".into(),
                        format!("{base}/{}/{}", m.kind.endpoint(), m.id).into(),
                    );
                    // value, $ref and type, as a client writes them (no display: the
                    // schema does not publish it, so a member reads back as written).
                    o.insert("type".into(), m.kind.as_str().into());
                    Value::Object(o)
                })
                .collect();
            r.insert("members".into(), Value::Array(members));
        }
        r.insert(
            "meta".into(),
            meta(&self.entries, entry, "Group", format!("{base}/Groups/{id}")),
        );
        Value::Object(r)
    }

    /// Read a Group body (POST or PUT): `displayName` required; `members` as objects
    /// with `value` (or only a `$ref`, whose last segment is the id) or as id strings;
    /// read-only and unknown attributes ignored.
    pub fn parse(&self, body: &Value) -> Result<GroupWrite, ScimError> {
        let Value::Object(map) = body else {
            return Err(ScimError::InvalidSyntax(
                "a Group must be a JSON object".into(),
            ));
        };
        let b = Body {
            map,
            schema: &self.schema,
        };
        let display_name = b.required_string("displayName")?;
        let mut w = GroupWrite {
            display_name,
            ..GroupWrite::default()
        };
        if self.external_id.is_some()
            && let Some(v) = b.get(None, "externalId")
        {
            w.external_id = string(v, "externalId")?;
        }
        if let Some(v) = b.get(None, "members") {
            w.member_ids = member_ids(v)?;
        }
        Ok(w)
    }

    /// The DN and attributes of a new group named `displayName` under `container_dn`,
    /// with `member_dns` (the service resolved the ids), or the empty-DN placeholder.
    pub fn new_entry(
        &self,
        w: &GroupWrite,
        member_dns: &[String],
        container_dn: &str,
    ) -> (String, Vec<(String, Vec<String>)>) {
        let dn = format!("cn={},{container_dn}", escape_rdn_value(&w.display_name));
        let mut members = dedup_dns(member_dns.iter().filter(|m| !m.trim().is_empty()));
        if members.is_empty() && !self.entries.groups_may_be_empty() {
            members.push(EMPTY_MEMBER.to_owned());
        }
        let mut attrs = vec![
            ("objectClass".to_owned(), self.object_classes.clone()),
            ("cn".to_owned(), vec![w.display_name.clone()]),
        ];
        if !members.is_empty() {
            attrs.push(("member".to_owned(), members));
        }
        if let (Some(a), Some(x)) = (&self.external_id, &w.external_id) {
            attrs.push((a.clone(), vec![x.clone()]));
        }
        if let Some(aux) = &self.aux {
            aux.complete_new(&mut attrs);
        }
        (dn, attrs)
    }

    /// The new RDN (`cn=<displayName>`) when the group is named by `cn` and
    /// `display_name` differs; the service renames the entry.
    pub fn rdn_change(&self, current: &Entry, display_name: &str) -> Option<String> {
        let (attr, value) = rdn_of(&current.dn)?;
        (attr.eq_ignore_ascii_case("cn") && value != display_name)
            .then(|| format!("cn={}", escape_rdn_value(display_name)))
    }

    /// The changes (other than members and the rename) that make `current` hold `w`:
    /// `externalId` (cleared when absent), and `cn` when the entry is not named by it.
    /// Members: [`GroupMapping::member_changes`] with `replace`.
    pub fn changes(&self, current: &Entry, w: &GroupWrite) -> Vec<Change> {
        self.attribute_changes(
            current,
            Some(&w.display_name),
            Some(w.external_id.as_deref()),
        )
    }

    /// The changes (other than members and the rename) a [`GroupPatch`] asks for.
    pub fn patch_changes(&self, current: &Entry, p: &GroupPatch) -> Vec<Change> {
        self.attribute_changes(
            current,
            p.display_name.as_deref(),
            p.external_id.as_ref().map(Option::as_deref),
        )
    }

    fn attribute_changes(
        &self,
        current: &Entry,
        display_name: Option<&str>,
        external_id: Option<Option<&str>>,
    ) -> Vec<Change> {
        let rdn = rdn_of(&current.dn);
        let mut out = Vec::new();
        let named_by_cn = rdn
            .as_ref()
            .is_some_and(|(a, _)| a.eq_ignore_ascii_case("cn"));
        if let Some(d) = display_name
            && !named_by_cn
        {
            push_change(
                &mut out,
                current,
                "cn",
                vec![d.to_owned()],
                false,
                rdn.as_ref(),
            );
        }
        if let (Some(a), Some(x)) = (&self.external_id, external_id) {
            let new = x.iter().map(|s| (*s).to_owned()).collect();
            push_change(&mut out, current, a, new, false, rdn.as_ref());
        }
        if let Some(aux) = &self.aux {
            aux.complete(current, &mut out);
        }
        out
    }

    /// Member changes: add `add_dns`, remove `remove_dns`, or (when `replace` is given)
    /// make the members exactly `replace`. Removing a non-member and adding a member are
    /// no-ops (Entra ID and Okta do both and expect success); DNs compare ignoring case
    /// and spaces around separators. The empty-DN placeholder is removed when the first
    /// real member comes and added when the last one goes (in the same modify, so the
    /// entry always satisfies `groupOfNames`).
    pub fn member_changes(
        &self,
        current: &Entry,
        add_dns: &[String],
        remove_dns: &[String],
        replace: Option<&[String]>,
    ) -> Vec<Change> {
        let stored = current.all("member");
        let placeholder = stored.iter().any(|m| m.trim().is_empty());
        let real: Vec<&String> = stored.iter().filter(|m| !m.trim().is_empty()).collect();
        // Keys computed once: a group of 10,000 members replaced whole must not compare
        // every DN with every other.
        let real_keys: HashSet<String> = real.iter().map(|r| dn_key(r)).collect();
        let (to_add, to_remove): (Vec<String>, Vec<String>) = match replace {
            Some(target) => {
                let target = dedup_dns(target.iter().filter(|m| !m.trim().is_empty()));
                let target_keys: HashSet<String> = target.iter().map(|t| dn_key(t)).collect();
                let add = target
                    .into_iter()
                    .filter(|t| !real_keys.contains(&dn_key(t)))
                    .collect();
                let remove = real
                    .iter()
                    .filter(|r| !target_keys.contains(&dn_key(r)))
                    .map(|r| (*r).clone())
                    .collect();
                (add, remove)
            }
            None => {
                let remove_keys: HashSet<String> = remove_dns.iter().map(|r| dn_key(r)).collect();
                let add = dedup_dns(add_dns.iter().filter(|a| {
                    let key = dn_key(a);
                    !a.trim().is_empty() && !real_keys.contains(&key) && !remove_keys.contains(&key)
                }));
                let remove = real
                    .iter()
                    .filter(|r| remove_keys.contains(&dn_key(r)))
                    .map(|r| (*r).clone())
                    .collect();
                (add, remove)
            }
        };
        let remaining = real.len() - to_remove.len() + to_add.len();
        let mut out = Vec::new();
        if remaining == 0 && !placeholder && !self.entries.groups_may_be_empty() {
            out.push(Change::Add("member".into(), vec![EMPTY_MEMBER.into()]));
        }
        if !to_add.is_empty() {
            out.push(Change::Add("member".into(), to_add));
        }
        if !to_remove.is_empty() {
            out.push(Change::Delete("member".into(), to_remove));
        }
        if remaining > 0 && placeholder {
            let empties: Vec<String> = stored
                .iter()
                .filter(|m| m.trim().is_empty())
                .cloned()
                .collect();
            out.push(Change::Delete("member".into(), empties));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Reading bodies
// ---------------------------------------------------------------------------------------

/// A request body, looked up the lenient way: any case, nested or flattened URN-qualified
/// names, flattened sub-attributes (`"name.givenName": "x"`).
struct Body<'a> {
    map: &'a Map<String, Value>,
    schema: &'a ResourceSchema,
}

fn non_null(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

impl Body<'_> {
    /// The value of attribute `name` of extension `ext` (`None`: core).
    fn get(&self, ext: Option<&str>, name: &str) -> Option<&Value> {
        match ext {
            None => non_null(get_ci(self.map, name))
                .or_else(|| non_null(get_ci(self.map, &format!("{}:{name}", self.schema.core.id)))),
            Some(urn) => {
                let nested = get_ci(self.map, urn)
                    .and_then(Value::as_object)
                    .and_then(|o| non_null(get_ci(o, name)));
                nested
                    .or_else(|| non_null(get_ci(self.map, &format!("{urn}:{name}"))))
                    .or_else(|| {
                        // Unqualified, when the core schema has no such attribute.
                        if self.schema.core.attribute(name).is_none() {
                            non_null(get_ci(self.map, name))
                        } else {
                            None
                        }
                    })
            }
        }
    }

    /// The value of sub-attribute `sub` of the complex attribute `name`.
    fn get_sub(&self, ext: Option<&str>, name: &str, sub: &str) -> Option<&Value> {
        if let Some(Value::Object(o)) = self.get(ext, name)
            && let Some(v) = non_null(get_ci(o, sub))
        {
            return Some(v);
        }
        let flat = format!("{name}.{sub}");
        match ext {
            None => non_null(get_ci(self.map, &flat))
                .or_else(|| non_null(get_ci(self.map, &format!("{}:{flat}", self.schema.core.id)))),
            Some(urn) => non_null(get_ci(self.map, &format!("{urn}:{flat}"))),
        }
    }

    /// The core attribute `name`, which must be a string that is not blank.
    fn required_string(&self, name: &str) -> Result<String, ScimError> {
        match self.get(None, name) {
            Some(v) => string(v, name)?,
            None => None,
        }
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| {
            ScimError::InvalidValue(format!("{name} is required and must be a non-empty string"))
        })
    }
}

/// A string attribute: `""` is no value; numbers are taken as their text; a one-element
/// array is its element.
fn string(v: &Value, what: &str) -> Result<Option<String>, ScimError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Array(a) if a.len() <= 1 => match a.first() {
            Some(x) if !x.is_array() => string(x, what),
            None => Ok(None),
            Some(_) => Err(not_a_string(what)),
        },
        _ => Err(not_a_string(what)),
    }
}

fn not_a_string(what: &str) -> ScimError {
    ScimError::InvalidValue(format!("{what} must be a string"))
}

/// A boolean attribute: `true`/`false`, or the strings `"True"`/`"false"` in any case.
fn boolean(v: &Value, what: &str) -> Result<Option<bool>, ScimError> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(Some(true)),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(Some(false)),
        _ => Err(ScimError::InvalidValue(format!(
            "{what} must be true or false"
        ))),
    }
}

/// The password: a non-empty string. The message never repeats the value.
fn password(v: &Value) -> Result<Secret, ScimError> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(Secret::new(s.as_str())),
        _ => Err(ScimError::InvalidValue(
            "password must be a non-empty string".into(),
        )),
    }
}

/// One value of a multi-valued attribute (`emails`, `phoneNumbers`, `ims`, …).
struct MultiValue {
    value: String,
    kind: Option<String>,
    /// As given: `None` when the client did not say.
    primary: Option<bool>,
    display: Option<String>,
}

/// One value of `addresses`, read: the object, its type and `primary` as given.
struct AddressItem<'a> {
    object: &'a Map<String, Value>,
    kind: Option<String>,
    primary: Option<bool>,
}

/// The values of an `addresses` value (an array of objects, or one object), checked: each
/// an object, `type` a string, `primary` a boolean, at most one primary.
fn address_items(v: &Value) -> Result<Vec<AddressItem<'_>>, ScimError> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(object) = item else {
            return Err(ScimError::InvalidValue(
                "addresses must be an array of objects".into(),
            ));
        };
        let kind = non_null(get_ci(object, "type"))
            .map(|v| string(v, "addresses.type"))
            .transpose()?
            .flatten();
        let primary = non_null(get_ci(object, "primary"))
            .map(|v| boolean(v, "addresses.primary"))
            .transpose()?
            .flatten();
        out.push(AddressItem {
            object,
            kind,
            primary,
        });
    }
    at_most_one_primary(
        out.iter().filter(|a| a.primary == Some(true)).count(),
        "addresses",
    )?;
    Ok(out)
}

/// The work address among `items`: the value of type `work` (or without a type), the
/// primary one first; home and other are [`other_addresses`]'.
fn work_address<'i, 'a>(items: &'i [AddressItem<'a>]) -> Option<&'i AddressItem<'a>> {
    let mut work: Vec<&AddressItem<'a>> = items
        .iter()
        .filter(|a| {
            a.kind
                .as_deref()
                .is_none_or(|k| k.eq_ignore_ascii_case("work"))
        })
        .collect();
    work.sort_by_key(|a| a.primary != Some(true));
    work.first().copied()
}

/// The addresses of types home and other among `items`, as their LDAP values (see
/// [`ADDRESS_ATTRIBUTE`]): canonical type spelling, the parts that have a value, `primary`
/// as given; without duplicates (as the directory compares them), in order.
fn other_addresses(items: &[AddressItem<'_>]) -> Result<Vec<String>, ScimError> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let Some(kind) = item.kind.as_deref().and_then(|k| {
            OTHER_ADDRESS_KINDS
                .iter()
                .find(|c| c.eq_ignore_ascii_case(k))
        }) else {
            continue;
        };
        let text = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let mut parts = Vec::new();
        for part in ADDRESS_PARTS {
            if let Some(v) = non_null(get_ci(item.object, part))
                && let Some(value) = string(v, &format!("addresses.{part}"))?
            {
                parts.push(format!("{}:{}", text(part), text(&value)));
            }
        }
        if parts.is_empty() {
            continue;
        }
        if let Some(p) = item.primary {
            parts.push(format!("\"primary\":{p}"));
        }
        parts.push(format!("\"type\":{}", text(kind)));
        let encoded = format!("{{{}}}", parts.join(","));
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&encoded)) {
            out.push(encoded);
        }
    }
    Ok(out)
}

/// The SCIM address an [`ADDRESS_ATTRIBUTE`] value stands for; `None` for a value that
/// is not such a JSON object (written by something else), which is left out.
fn decode_address(ldap_value: &str) -> Option<Value> {
    let Ok(Value::Object(o)) = serde_json::from_str::<Value>(ldap_value) else {
        return None;
    };
    let mut out = Map::new();
    for part in ADDRESS_PARTS.iter().chain(&["type"]) {
        if let Some(Value::String(s)) = o.get(*part) {
            out.insert((*part).into(), s.as_str().into());
        }
    }
    if let Some(Value::Bool(p)) = o.get("primary") {
        out.insert("primary".into(), (*p).into());
    }
    out.contains_key("type").then_some(Value::Object(out))
}

/// A formatted address (lines separated by newlines) in LDAP's Postal Address syntax
/// (RFC 4517 §3.3.28): lines separated by `$`, with `\` and `$` escaped.
fn to_postal_address(text: &str) -> String {
    text.replace('\r', "")
        .split('\n')
        .map(|line| line.replace('\\', "\\5C").replace('$', "\\24"))
        .collect::<Vec<_>>()
        .join("$")
}

/// The other way round.
fn from_postal_address(value: &str) -> String {
    value
        .split('$')
        .map(|line| {
            line.replace("\\24", "$")
                .replace("\\5C", "\\")
                .replace("\\5c", "\\")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Refuses a binary value (`x509Certificates.value`) that is not base64 (RFC 7643 §2.3.6).
fn check_base64(values: &[MultiValue], what: &str) -> Result<(), ScimError> {
    use base64::Engine as _;
    for v in values {
        let compact: String = v.value.split_ascii_whitespace().collect();
        if base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .is_err()
        {
            return Err(ScimError::InvalidValue(format!(
                "{what}.value must be base64 (RFC 7643 §2.3.6): the certificate's DER, \
                 base64-encoded"
            )));
        }
    }
    Ok(())
}

/// The values of a multi-valued attribute: an array of objects (or a single object, or
/// plain strings); values without `value` are skipped.
fn multi(v: &Value, what: &str) -> Result<Vec<MultiValue>, ScimError> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            Value::Object(o) => {
                let Some(value) = non_null(get_ci(o, "value"))
                    .map(|v| string(v, &format!("{what}.value")))
                    .transpose()?
                    .flatten()
                else {
                    continue;
                };
                let kind = non_null(get_ci(o, "type"))
                    .map(|v| string(v, &format!("{what}.type")))
                    .transpose()?
                    .flatten();
                let primary = non_null(get_ci(o, "primary"))
                    .map(|v| boolean(v, &format!("{what}.primary")))
                    .transpose()?
                    .flatten();
                let display = non_null(get_ci(o, "display"))
                    .map(|v| string(v, &format!("{what}.display")))
                    .transpose()?
                    .flatten();
                out.push(MultiValue {
                    value,
                    kind,
                    primary,
                    display,
                });
            }
            Value::String(s) if !s.is_empty() => out.push(MultiValue {
                value: s.clone(),
                kind: None,
                primary: None,
                display: None,
            }),
            Value::Null => {}
            _ => {
                return Err(ScimError::InvalidValue(format!(
                    "{what} must be an array of objects with a \"value\""
                )));
            }
        }
    }
    at_most_one_primary(out.iter().filter(|v| v.primary == Some(true)).count(), what)?;
    Ok(out)
}

/// RFC 7643 §2.4: "The primary attribute value \"true\" MUST appear no more than once."
fn at_most_one_primary(count: usize, what: &str) -> Result<(), ScimError> {
    if count > 1 {
        return Err(ScimError::InvalidValue(format!(
            "{count} values of {what} are marked primary; at most one may be (RFC 7643 \
             §2.4): set \"primary\": true on one value only"
        )));
    }
    Ok(())
}

/// Values without duplicates (ignoring case, as the directory compares them), in order.
fn dedup(values: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        if !out.iter().any(|o| o.to_lowercase() == v.to_lowercase()) {
            out.push(v);
        }
    }
    out
}

/// The manager's id: `"id"`, `{"value": "id"}`, or `[{"value": "id"}]` (Entra ID);
/// empty means none.
fn manager_id(v: &Value) -> Result<Option<String>, ScimError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
        Value::Object(o) => match non_null(get_ci(o, "value")) {
            Some(v) => manager_id(v),
            // A client may name the manager by its URI alone.
            None => Ok(non_null(get_ci(o, "$ref"))
                .and_then(Value::as_str)
                .and_then(|r| r.trim_end_matches('/').rsplit('/').next())
                .map(|id| id.trim().to_owned())
                .filter(|id| !id.is_empty())),
        },
        Value::Array(a) if a.len() <= 1 => match a.first() {
            Some(x) => manager_id(x),
            None => Ok(None),
        },
        _ => Err(ScimError::InvalidValue(
            "manager must be the manager's id, or an object with the id as \"value\"".into(),
        )),
    }
}

/// Member ids from a `members` value: objects with `value` (or `$ref`), or strings.
pub(crate) fn member_ids(v: &Value) -> Result<Vec<String>, ScimError> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    };
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let id = match item {
            Value::String(s) => Some(s.trim().to_owned()),
            Value::Object(o) => match non_null(get_ci(o, "value")) {
                Some(Value::String(s)) => Some(s.trim().to_owned()),
                Some(_) => None,
                None => non_null(get_ci(o, "$ref"))
                    .and_then(Value::as_str)
                    .and_then(|r| r.trim_end_matches('/').rsplit('/').next())
                    .map(str::to_owned),
            },
            _ => None,
        };
        match id.filter(|i| !i.is_empty()) {
            Some(id) => {
                if !out.iter().any(|o| o.eq_ignore_ascii_case(&id)) {
                    out.push(id);
                }
            }
            None => {
                return Err(ScimError::InvalidValue(
                    "each member must be an object with the member's id as \"value\"".into(),
                ));
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// DNs and times
// ---------------------------------------------------------------------------------------

/// Escape an attribute value for use in an RDN (RFC 4514 §2.4).
pub fn escape_rdn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// `dns` in order, each entry once (the first spelling kept).
fn dedup_dns<'a>(dns: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut seen = HashSet::new();
    dns.into_iter()
        .filter(|dn| seen.insert(dn_key(dn)))
        .cloned()
        .collect()
}

/// GeneralizedTime (`YYYYMMDDHH[MM[SS]][.fraction](Z|±HHMM)`) as an RFC 3339 dateTime
/// in UTC; `None` when malformed.
pub fn rfc3339(generalized: &str) -> Option<String> {
    crate::directory::parse_generalized_time(generalized)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

#[cfg(test)]
pub(crate) mod tests;

//! Translating a SCIM filter (RFC 7644 §3.4.2.2) into one LDAP search filter (RFC 4515)
//! that the directory evaluates.
//!
//! # The rule: never widen
//!
//! The LDAP filter selects exactly the resources the SCIM filter selects, or the
//! translation fails with a [`TranslateError`] (for the service: `400 invalidFilter`
//! with the error's text as `detail`). A filter is never made wider to "make it work":
//! a SCIM client filtering for whom to delete or deprovision must not get more than it
//! asked for.
//!
//! # Operators
//!
//! For an attribute stored in LDAP attribute `a` (value `v` converted by the attribute's
//! [`Syntax`] and escaped by RFC 4515 §3 rules, [`crate::directory::escape::filter_value`]):
//!
//! | SCIM | LDAP |
//! |---|---|
//! | `eq v` | `(a=v)` |
//! | `ne v` | `(!(a=v))` (also true where `a` is absent) |
//! | `co v` / `sw v` / `ew v` | `(a=*v*)` / `(a=v*)` / `(a=*v)`; with `""`: `(a=*)` |
//! | `pr` | `(a=*)` |
//! | `gt v` / `lt v` | `(&(a>=v)(!(a=v)))` / `(&(a<=v)(!(a=v)))` |
//! | `ge v` / `le v` | `(a>=v)` / `(a<=v)` |
//! | `eq null` / `ne null` | `(!(a=*))` / `(a=*)`; any other operator with `null` fails |
//! | `and` / `or` / `not` | `(&…)` / `(\|…)` / `(!…)` (chains flattened) |
//!
//! Booleans are `TRUE`/`FALSE`; SCIM dateTimes (RFC 3339) become GeneralizedTime in UTC
//! (`2011-05-13T04:42:34Z` → `20110513044234Z`, fractions kept); substring operators work
//! on string syntaxes only, ordering operators on [`Syntax::GeneralizedTime`] and
//! [`Syntax::Integer`] only (OpenLDAP's inetOrgPerson string attributes have no ORDERING
//! rule, so `(uid>=m)` would silently match nothing), and a value of the wrong JSON type
//! fails.
//!
//! A comparison whose outcome is known without asking the directory ([`Target::Fixed`],
//! e.g. every `emails` value lockbridge serves is of `type` `work`) folds to a constant;
//! constants disappear from `and`/`or`. A whole filter that is constant becomes
//! `(objectClass=*)` (true) or `(!(objectClass=*))` (false): the service ANDs the result
//! with its own `(objectClass=…)` base filter either way.
//!
//! # Multi-valued attributes
//!
//! `emails[type eq "work" and value co "x"]` means "one email value satisfies both". A
//! [`FilterMapping`] describes a multi-valued attribute as kinds of [`Element`] (for
//! `phoneNumbers`: values of `telephoneNumber` are of type `work`, values of `mobile` are
//! of type `mobile`). The value filter is translated once per kind and the results are
//! OR-ed. Within one kind LDAP can only say "some value of `a` matches", so the value
//! filter may combine with `and` at most one condition on stored values (others must be
//! fixed), may use `not` only around fixed conditions, and may not use `ne`, `gt`, `lt`
//! or `eq null` on stored values: `emails[value co "a" and value co "b"]` would otherwise
//! become `(&(mail=*a*)(mail=*b*))`, which also matches a user with two different
//! addresses. Those fail. `emails.value co "x"` and `emails co "x"` (the `value`
//! sub-attribute is implied) follow the same rules; at the top level, `and`, `or` and
//! `not` of whole comparisons are exact.
//!
//! # References (group `members`)
//!
//! Member values are resource ids (`entryUUID`), while the directory stores member DNs.
//! A [`Target::Reference`] is translated through [`FilterMapping::resolve_reference`],
//! which the SCIM service answers from ids it looked up before translating:
//!
//! 1. `let ids = references(&filter, &mapping);` lists every `(attribute, id)` the
//!    filter compares with a reference;
//! 2. the service searches the directory for those ids (one search:
//!    `(|(entryUUID=…)(entryUUID=…))`) and records each as [`Reference::Dn`] or
//!    [`Reference::NotFound`];
//! 3. `to_ldap(&filter, &WithReferences::new(&mapping, resolved))` then produces
//!    `(member=uid=bob,ou=people,dc=example,dc=org)` (escaped), or a constant false
//!    for an id that does not exist.
//!
//! Without step 2, a reference fails with [`TranslateError::UnresolvedReference`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Timelike, Utc};

use super::ast::{AttrPath, CompValue, CompareOp, Filter};
use crate::directory::escape::{filter_value, is_attribute_description, is_valid_filter};
use crate::directory::{EntryVocabulary, SignInVocabulary, StateTest};

/// The core User schema URN (RFC 7643 §8.7.1).
pub const CORE_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The core Group schema URN (RFC 7643 §8.7.1).
pub const CORE_GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// The enterprise User extension URN (RFC 7643 §4.3).
pub const ENTERPRISE_USER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// lockbridge's own User extension (`mustChange`: the password must be changed at next
/// sign-in, kept where the directory kind keeps it).
pub const PASSWORD_EXTENSION: &str =
    "urn:lockbridge:params:scim:schemas:extension:password:2.0:User";

/// The LDAP filter for "true": every entry has an object class.
const TRUE_FILTER: &str = "(objectClass=*)";
/// The LDAP filter for "false".
const FALSE_FILTER: &str = "(!(objectClass=*))";

/// Why a filter cannot be translated. Every variant but [`TranslateError::InvalidMapping`]
/// is the client's (`400 invalidFilter`, RFC 7644 §3.12); the text is meant for `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The resource type has no such attribute (or sub-attribute).
    #[error("unknown attribute \"{0}\"")]
    UnknownAttribute(String),
    /// The attribute exists but cannot be filtered on this way.
    #[error("{reason}")]
    Unsupported {
        /// The attribute path as the client wrote it.
        attribute: String,
        /// A sentence saying why.
        reason: String,
    },
    /// The attribute is stored, but the directory has no matching rule to compare its
    /// values with ([`Syntax::PresenceOnly`]). Inside a multi-valued attribute, the kind
    /// of value is left out of a filter that other kinds can answer
    /// (`phoneNumbers.value eq "x"` looks at every phone number but fax ones), and the
    /// error is the answer only when no other kind could match.
    #[error("{reason}")]
    Uncomparable {
        /// The attribute path as the client wrote it.
        attribute: String,
        /// A sentence saying why.
        reason: String,
    },
    /// The value does not fit the attribute (a number for a string, a bad dateTime).
    #[error("invalid value for \"{attribute}\": {reason}")]
    InvalidValue {
        /// The attribute path as the client wrote it.
        attribute: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// A reference (e.g. a group member id) was not resolved before translation; see the
    /// module documentation.
    #[error("\"{attribute}\" compares with id \"{id}\", which needs id resolution first")]
    UnresolvedReference {
        /// The attribute path.
        attribute: String,
        /// The id.
        id: String,
    },
    /// The mapping is broken (an LDAP attribute name that is not one, a custom
    /// translation that is not a filter): a server error, not the client's.
    #[error("filter mapping error: {0}")]
    InvalidMapping(String),
}

impl TranslateError {
    fn unsupported(attribute: impl fmt::Display, reason: impl Into<String>) -> Self {
        Self::Unsupported {
            attribute: attribute.to_string(),
            reason: reason.into(),
        }
    }

    fn invalid_value(attribute: impl fmt::Display, reason: impl Into<String>) -> Self {
        Self::InvalidValue {
            attribute: attribute.to_string(),
            reason: reason.into(),
        }
    }
}

/// How the directory compares an LDAP attribute's values, which decides how SCIM values
/// are written into the filter and which operators are faithful.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// A string compared ignoring case (caseIgnoreMatch, caseIgnoreIA5Match, with their
    /// substring rules): `eq ne co sw ew pr`.
    CaseIgnoreString,
    /// A string compared exactly (caseExactMatch and substrings): `eq ne co sw ew pr`.
    CaseExactString,
    /// A Boolean (`TRUE`/`FALSE`): `eq ne pr`.
    Boolean,
    /// A GeneralizedTime; SCIM values are RFC 3339 dateTimes: `eq ne gt lt ge le pr`.
    GeneralizedTime,
    /// A DN (distinguishedNameMatch): `eq ne pr`.
    Dn,
    /// An INTEGER (integerMatch, integerOrderingMatch); SCIM values are JSON integers:
    /// `eq ne gt lt ge le pr`.
    Integer,
    /// A UUID (UUIDMatch, e.g. `entryUUID`): `eq ne pr`. A value that is not a UUID
    /// matches nothing (no resource has such an id).
    Uuid,
    /// An attribute the directory has no matching rule for (OpenLDAP's
    /// `facsimileTelephoneNumber`): only `pr`, and `eq null` / `ne null`; see
    /// [`TranslateError::Uncomparable`].
    PresenceOnly,
}

impl Syntax {
    fn is_string(self) -> bool {
        matches!(self, Self::CaseIgnoreString | Self::CaseExactString)
    }

    fn has_ordering(self) -> bool {
        matches!(self, Self::GeneralizedTime | Self::Integer)
    }
}

/// What a [`Target::Custom`] translation is asked: `pr`, or a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test<'a> {
    /// `pr`.
    Present,
    /// `op value`.
    Compare(CompareOp, &'a CompValue),
}

/// A custom translation: returns one LDAP filter (with its parentheses, values escaped).
pub type CustomFn = Box<dyn Fn(Test<'_>) -> Result<String, TranslateError> + Send + Sync>;

/// What a [`Target::Candidates`] translation gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidates {
    /// Exactly the entries the test selects.
    Exact(String),
    /// Every entry the test selects and maybe others: the directory narrows, and the
    /// caller checks each candidate ([`Translation::exact`] is false).
    Superset(String),
}

/// A translation that may only narrow the search ([`Candidates`]).
pub type CandidatesFn = Box<dyn Fn(Test<'_>) -> Result<Candidates, TranslateError> + Send + Sync>;

/// How a SCIM attribute is expressed in LDAP; what a [`FilterMapping`] answers.
pub enum Target {
    /// Stored in one LDAP attribute.
    Attribute {
        /// The LDAP attribute description, e.g. `uid`.
        ldap: String,
        /// How the directory compares its values.
        syntax: Syntax,
    },
    /// Always this value, whatever the entry (`emails.type` is `"work"` when the
    /// directory only holds work mail; `meta.resourceType` is `"User"`): comparisons
    /// fold to true or false without asking the directory. Strings compare ignoring case
    /// (these are canonical values such as `type`); `Fixed(CompValue::Null)` is an
    /// attribute that is never set.
    Fixed(CompValue),
    /// Values are ids of other resources, stored as DNs in this LDAP attribute (group
    /// `members` → `member`); see [`FilterMapping::resolve_reference`]. `eq ne pr`.
    Reference {
        /// The LDAP attribute holding DNs.
        ldap: String,
    },
    /// Translated by code, e.g. `active eq true` → the directory's "not blocked" filter.
    Custom(CustomFn),
    /// Translated by code, exactly or (for some tests) as a superset: `co` on a part of
    /// an address kept as JSON can only be narrowed to the entries whose JSON holds the
    /// text after that part's key.
    Candidates(CandidatesFn),
    /// Part of the schema but not filterable; the reason is a sentence for the client.
    Unsupported(String),
}

impl Target {
    /// `Target::Attribute { ldap, syntax }`.
    pub fn attribute(ldap: impl Into<String>, syntax: Syntax) -> Self {
        Self::Attribute {
            ldap: ldap.into(),
            syntax,
        }
    }

    /// `Target::Fixed(CompValue::String(value))`.
    pub fn fixed_string(value: impl Into<String>) -> Self {
        Self::Fixed(CompValue::String(value.into()))
    }

    /// `Target::Custom(Box::new(f))`.
    pub fn custom(
        f: impl Fn(Test<'_>) -> Result<String, TranslateError> + Send + Sync + 'static,
    ) -> Self {
        Self::Custom(Box::new(f))
    }

    /// `Target::Unsupported(reason)`.
    pub fn unsupported(reason: impl Into<String>) -> Self {
        Self::Unsupported(reason.into())
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Attribute { ldap, syntax } => f
                .debug_struct("Attribute")
                .field("ldap", ldap)
                .field("syntax", syntax)
                .finish(),
            Self::Fixed(v) => f.debug_tuple("Fixed").field(v).finish(),
            Self::Reference { ldap } => f.debug_struct("Reference").field("ldap", ldap).finish(),
            Self::Custom(_) => f.write_str("Custom(..)"),
            Self::Candidates(_) => f.write_str("Candidates(..)"),
            Self::Unsupported(r) => f.debug_tuple("Unsupported").field(r).finish(),
        }
    }
}

/// One kind of value of a multi-valued complex attribute, as the directory stores it:
/// its sub-attributes and how each is expressed. For `emails` on inetOrgPerson, one kind:
/// `value` → `mail`, `type` → fixed `"work"`.
///
/// A kind's values exist where its `value` sub-attribute (an [`Target::Attribute`] or
/// [`Target::Reference`]) is present; a value filter that tests only fixed
/// sub-attributes (`emails[type eq "work"]`) becomes that presence test.
#[derive(Debug, Default)]
pub struct Element {
    /// Sub-attribute names (matched ignoring case) and their targets.
    pub sub_attrs: Vec<(String, Target)>,
}

impl Element {
    /// An element with these sub-attributes.
    pub fn new<S: Into<String>>(sub_attrs: impl IntoIterator<Item = (S, Target)>) -> Self {
        Self {
            sub_attrs: sub_attrs
                .into_iter()
                .map(|(name, target)| (name.into(), target))
                .collect(),
        }
    }

    fn get(&self, name: &str) -> Option<&Target> {
        self.sub_attrs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, t)| t)
    }

    /// The LDAP filter for "this kind has a value": its `value` is present, or, for a
    /// kind without one (an address), any of its stored sub-attributes.
    fn presence(&self) -> Option<String> {
        if let Some(value) = self.get("value") {
            return match value {
                Target::Attribute { ldap, .. } | Target::Reference { ldap } => {
                    Some(format!("({ldap}=*)"))
                }
                Target::Custom(f) => f(Test::Present).ok(),
                Target::Candidates(f) => match f(Test::Present) {
                    Ok(Candidates::Exact(out)) => Some(out),
                    _ => None,
                },
                _ => None,
            };
        }
        let any: Vec<String> = self
            .sub_attrs
            .iter()
            .filter_map(|(_, t)| match t {
                Target::Attribute { ldap, .. } => Some(format!("({ldap}=*)")),
                _ => None,
            })
            .collect();
        match any.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            _ => Some(format!("(|{})", any.concat())),
        }
    }
}

/// What a reference id stands for in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// The entry with this id has this DN.
    Dn(String),
    /// No entry has this id: comparisons with it are false.
    NotFound,
}

/// A resource type's attributes as the directory stores them. Implement it once per
/// resource type (see [`DefaultUserMapping`], [`DefaultGroupMapping`]); names are
/// case-insensitive, so compare with [`AttrPath::name_is`] and friends.
pub trait FilterMapping {
    /// How a single-valued attribute, or a sub-attribute of a single-valued complex one,
    /// is expressed: `userName`, `name.familyName`, `meta.lastModified`, `active`,
    /// `urn:…:enterprise:2.0:User:employeeNumber`. `None`: no such attribute.
    fn attribute(&self, path: &AttrPath) -> Option<Target>;

    /// For a multi-valued complex attribute (`emails`, `phoneNumbers`, `members`; `path`
    /// has no sub-attribute), the kinds of value the directory holds. `None` (the
    /// default): not multi-valued, and [`FilterMapping::attribute`] is asked instead.
    fn elements(&self, path: &AttrPath) -> Option<Vec<Element>> {
        let _ = path;
        None
    }

    /// What the resource id `id`, compared with reference attribute `attr`, stands for;
    /// `None` (the default): not resolved, and the translation fails. The SCIM service
    /// answers it after looking ids up ([`WithReferences`]).
    fn resolve_reference(&self, attr: &AttrPath, id: &str) -> Option<Reference> {
        let _ = (attr, id);
        None
    }
}

/// A mapping whose references are resolved from a table the service filled (by id,
/// exactly as the client wrote it); everything else is asked of `inner`.
pub struct WithReferences<'m> {
    inner: &'m dyn FilterMapping,
    resolved: HashMap<String, Reference>,
}

impl<'m> WithReferences<'m> {
    /// `inner`, with `resolved` answering [`FilterMapping::resolve_reference`].
    pub fn new(inner: &'m dyn FilterMapping, resolved: HashMap<String, Reference>) -> Self {
        Self { inner, resolved }
    }
}

impl FilterMapping for WithReferences<'_> {
    fn attribute(&self, path: &AttrPath) -> Option<Target> {
        self.inner.attribute(path)
    }

    fn elements(&self, path: &AttrPath) -> Option<Vec<Element>> {
        self.inner.elements(path)
    }

    fn resolve_reference(&self, _attr: &AttrPath, id: &str) -> Option<Reference> {
        self.resolved.get(id).cloned()
    }
}

/// Every `(attribute, id)` that translating `filter` with `map` would ask
/// [`FilterMapping::resolve_reference`] about, without duplicates, in order. The service
/// looks these ids up, then translates with [`WithReferences`].
pub fn references(filter: &Filter, map: &dyn FilterMapping) -> Vec<(AttrPath, String)> {
    struct Collect<'m> {
        inner: &'m dyn FilterMapping,
        seen: RefCell<Vec<(AttrPath, String)>>,
    }
    impl FilterMapping for Collect<'_> {
        fn attribute(&self, path: &AttrPath) -> Option<Target> {
            self.inner.attribute(path)
        }
        fn elements(&self, path: &AttrPath) -> Option<Vec<Element>> {
            self.inner.elements(path)
        }
        fn resolve_reference(&self, attr: &AttrPath, id: &str) -> Option<Reference> {
            let mut seen = self.seen.borrow_mut();
            if !seen.iter().any(|(a, i)| a == attr && i == id) {
                seen.push((attr.clone(), id.to_owned()));
            }
            Some(Reference::NotFound)
        }
    }
    let collect = Collect {
        inner: map,
        seen: RefCell::new(Vec::new()),
    };
    let _ = to_ldap(filter, &collect);
    collect.seen.into_inner()
}

/// Translate `filter` into one RFC 4515 LDAP filter, e.g. `userName eq "bjensen"` →
/// `(uid=bjensen)`. See the module documentation for the rules; anything that cannot be
/// expressed exactly is an error, never a wider filter.
pub fn to_ldap(filter: &Filter, map: &dyn FilterMapping) -> Result<String, TranslateError> {
    let t = translate(filter, map)?;
    if !t.exact {
        return Err(TranslateError::unsupported(
            filter.to_string(),
            "this filter can only narrow the search; each candidate must be checked",
        ));
    }
    Ok(t.ldap)
}

/// A translated filter: `ldap` selects exactly the entries the SCIM filter does, or
/// (`exact` false) a superset of them, which the caller checks one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    pub ldap: String,
    pub exact: bool,
}

/// [`to_ldap`], allowing a filter that only narrows the search ([`Candidates::Superset`]).
pub fn translate(filter: &Filter, map: &dyn FilterMapping) -> Result<Translation, TranslateError> {
    let expr = Translator { map }.filter(filter)?;
    let mut out = String::new();
    expr.render(&mut out);
    if !is_valid_filter(&out) {
        return Err(TranslateError::InvalidMapping(format!(
            "the translation is not a valid LDAP filter: {out}"
        )));
    }
    Ok(Translation {
        exact: expr.is_exact(),
        ldap: out,
    })
}

/// A translated filter, with constants folded away as it is built.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    Const(bool),
    /// One complete LDAP filter, parentheses included.
    Atom(String),
    /// One complete LDAP filter that matches every entry it should, and maybe others.
    Superset(String),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
}

impl Expr {
    fn and(a: Expr, b: Expr) -> Expr {
        match (a, b) {
            (Expr::Const(false), _) | (_, Expr::Const(false)) => Expr::Const(false),
            (Expr::Const(true), x) | (x, Expr::Const(true)) => x,
            (Expr::And(mut xs), Expr::And(ys)) => {
                xs.extend(ys);
                Expr::And(xs)
            }
            (Expr::And(mut xs), y) => {
                xs.push(y);
                Expr::And(xs)
            }
            (x, Expr::And(mut ys)) => {
                ys.insert(0, x);
                Expr::And(ys)
            }
            (x, y) => Expr::And(vec![x, y]),
        }
    }

    fn or(a: Expr, b: Expr) -> Expr {
        match (a, b) {
            (Expr::Const(true), _) | (_, Expr::Const(true)) => Expr::Const(true),
            (Expr::Const(false), x) | (x, Expr::Const(false)) => x,
            (Expr::Or(mut xs), Expr::Or(ys)) => {
                xs.extend(ys);
                Expr::Or(xs)
            }
            (Expr::Or(mut xs), y) => {
                xs.push(y);
                Expr::Or(xs)
            }
            (x, Expr::Or(mut ys)) => {
                ys.insert(0, x);
                Expr::Or(ys)
            }
            (x, y) => Expr::Or(vec![x, y]),
        }
    }

    fn not(a: Expr) -> Expr {
        match a {
            Expr::Const(b) => Expr::Const(!b),
            // The negation of a superset is a subset: only "everyone" is sure to hold
            // every entry the negation selects.
            x if !x.is_exact() => Expr::Superset(TRUE_FILTER.to_owned()),
            Expr::Not(inner) => *inner,
            x => Expr::Not(Box::new(x)),
        }
    }

    /// Whether the filter selects exactly, with no [`Expr::Superset`] in it.
    fn is_exact(&self) -> bool {
        match self {
            Expr::Superset(_) => false,
            Expr::And(xs) | Expr::Or(xs) => xs.iter().all(Expr::is_exact),
            Expr::Not(x) => x.is_exact(),
            Expr::Const(_) | Expr::Atom(_) => true,
        }
    }

    fn is_const(&self) -> bool {
        matches!(self, Expr::Const(_))
    }

    fn render(&self, out: &mut String) {
        match self {
            Expr::Const(true) => out.push_str(TRUE_FILTER),
            Expr::Const(false) => out.push_str(FALSE_FILTER),
            Expr::Atom(s) | Expr::Superset(s) => out.push_str(s),
            Expr::And(xs) | Expr::Or(xs) => {
                out.push_str(if matches!(self, Expr::And(_)) {
                    "(&"
                } else {
                    "(|"
                });
                for x in xs {
                    x.render(out);
                }
                out.push(')');
            }
            Expr::Not(x) => {
                out.push_str("(!");
                x.render(out);
                out.push(')');
            }
        }
    }
}

/// Where a comparison is evaluated: on the whole entry, or on one value of a
/// multi-valued attribute (where only "some value matches" can be said).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Entry,
    Element,
}

struct Translator<'m> {
    map: &'m dyn FilterMapping,
}

impl Translator<'_> {
    /// A filter on the whole entry.
    fn filter(&self, f: &Filter) -> Result<Expr, TranslateError> {
        match f {
            Filter::And(a, b) => Ok(Expr::and(self.filter(a)?, self.filter(b)?)),
            Filter::Or(a, b) => Ok(Expr::or(self.filter(a)?, self.filter(b)?)),
            Filter::Not(a) => Ok(Expr::not(self.filter(a)?)),
            Filter::Compare { path, op, value } => self.entry_test(path, Test::Compare(*op, value)),
            Filter::Present(path) => self.entry_test(path, Test::Present),
            Filter::ValuePath { path, filter } => self.value_path(path, filter),
        }
    }

    /// `path test` at the top level: a multi-valued attribute (`emails`, `emails.value`)
    /// goes through its elements, anything else through `attribute`.
    fn entry_test(&self, path: &AttrPath, test: Test<'_>) -> Result<Expr, TranslateError> {
        let parent = path.parent();
        if let Some(kinds) = self.map.elements(&parent) {
            let sub = path.sub_attr.as_deref().unwrap_or("value");
            let inner = AttrPath::new(sub);
            return self.over_elements(path, &kinds, |t, kind| {
                t.element_test(path, &inner, test, kind)
            });
        }
        match self.map.attribute(path) {
            Some(target) => self.test(path, &target, test, Scope::Entry),
            None => Err(TranslateError::UnknownAttribute(path.to_string())),
        }
    }

    /// `path[filter]`.
    fn value_path(&self, path: &AttrPath, filter: &Filter) -> Result<Expr, TranslateError> {
        if path.sub_attr.is_some() {
            return Err(TranslateError::unsupported(
                path,
                format!(
                    "\"{path}\" is not a multi-valued attribute, so it cannot have a value filter"
                ),
            ));
        }
        if let Some(kinds) = self.map.elements(path) {
            return self
                .over_elements(path, &kinds, |t, kind| t.element_filter(path, filter, kind));
        }
        // A single-valued complex attribute: `name[givenName eq "x"]` is
        // `name.givenName eq "x"`, and `and` is exact because there is one value.
        self.single_valued(path, filter)
    }

    fn single_valued(&self, parent: &AttrPath, f: &Filter) -> Result<Expr, TranslateError> {
        match f {
            Filter::And(a, b) => Ok(Expr::and(
                self.single_valued(parent, a)?,
                self.single_valued(parent, b)?,
            )),
            Filter::Or(a, b) => Ok(Expr::or(
                self.single_valued(parent, a)?,
                self.single_valued(parent, b)?,
            )),
            Filter::Not(a) => Ok(Expr::not(self.single_valued(parent, a)?)),
            Filter::Compare { path, op, value } => {
                let full = sub_path(parent, path)?;
                self.entry_test(&full, Test::Compare(*op, value))
            }
            Filter::Present(path) => {
                let full = sub_path(parent, path)?;
                self.entry_test(&full, Test::Present)
            }
            Filter::ValuePath { path, .. } => Err(nested_value_path(parent, path)),
        }
    }

    /// OR over the kinds of value of `path`, each translated by `one`; a kind whose
    /// filter is constantly true becomes "this kind has a value".
    fn over_elements(
        &self,
        path: &AttrPath,
        kinds: &[Element],
        one: impl Fn(&Self, &Element) -> Result<Expr, TranslateError>,
    ) -> Result<Expr, TranslateError> {
        let mut out = Expr::Const(false);
        let mut uncomparable = None;
        let mut answered = false;
        for kind in kinds {
            let expr = match one(self, kind) {
                Err(e @ TranslateError::Uncomparable { .. }) => {
                    uncomparable.get_or_insert(e);
                    continue;
                }
                other => other?,
            };
            answered |= expr != Expr::Const(false);
            let expr = match expr {
                Expr::Const(true) => match kind.presence() {
                    Some(present) => Expr::Atom(present),
                    None => {
                        return Err(TranslateError::unsupported(
                            path,
                            format!("whether \"{path}\" has a value cannot be filtered"),
                        ));
                    }
                },
                other => other,
            };
            out = Expr::or(out, expr);
        }
        // Only kinds that cannot be compared could have matched: say so rather than
        // answer "nobody".
        match uncomparable {
            Some(e) if !answered => Err(e),
            _ => Ok(out),
        }
    }

    /// A value filter on one kind of value.
    fn element_filter(
        &self,
        parent: &AttrPath,
        f: &Filter,
        kind: &Element,
    ) -> Result<Expr, TranslateError> {
        match f {
            // A side that settles the answer for this kind (a `type` that is or is not
            // this kind's) makes the other side's error irrelevant.
            Filter::Or(a, b) => {
                let (a, b) = (
                    self.element_filter(parent, a, kind),
                    self.element_filter(parent, b, kind),
                );
                if [&a, &b].iter().any(|x| matches!(x, Ok(Expr::Const(true)))) {
                    return Ok(Expr::Const(true));
                }
                Ok(Expr::or(a?, b?))
            }
            Filter::And(a, b) => {
                let (a, b) = (
                    self.element_filter(parent, a, kind),
                    self.element_filter(parent, b, kind),
                );
                if [&a, &b].iter().any(|x| matches!(x, Ok(Expr::Const(false)))) {
                    return Ok(Expr::Const(false));
                }
                let (a, b) = (a?, b?);
                if !a.is_const() && !b.is_const() {
                    return Err(TranslateError::unsupported(
                        parent,
                        format!(
                            "\"and\" of two conditions on the same value of \"{parent}\" \
                             cannot be expressed in LDAP"
                        ),
                    ));
                }
                Ok(Expr::and(a, b))
            }
            Filter::Not(a) => {
                let a = self.element_filter(parent, a, kind)?;
                if !a.is_const() {
                    return Err(TranslateError::unsupported(
                        parent,
                        format!(
                            "\"not\" inside a value filter of \"{parent}\" cannot be expressed in LDAP"
                        ),
                    ));
                }
                Ok(Expr::not(a))
            }
            Filter::Compare { path, op, value } => {
                self.element_test(parent, path, Test::Compare(*op, value), kind)
            }
            Filter::Present(path) => self.element_test(parent, path, Test::Present, kind),
            Filter::ValuePath { path, .. } => Err(nested_value_path(parent, path)),
        }
    }

    /// `sub test` on one kind of value of `parent`.
    fn element_test(
        &self,
        parent: &AttrPath,
        sub: &AttrPath,
        test: Test<'_>,
        kind: &Element,
    ) -> Result<Expr, TranslateError> {
        if sub.urn.is_some() || sub.sub_attr.is_some() {
            return Err(TranslateError::UnknownAttribute(format!(
                "{}.{sub}",
                parent.parent()
            )));
        }
        let full = parent.parent().with_sub_attr(sub.name.clone());
        match kind.get(&sub.name) {
            Some(target) => self.test(&full, target, test, Scope::Element),
            None => Err(TranslateError::UnknownAttribute(full.to_string())),
        }
    }

    /// One test on one target.
    fn test(
        &self,
        attr: &AttrPath,
        target: &Target,
        test: Test<'_>,
        scope: Scope,
    ) -> Result<Expr, TranslateError> {
        if let (Scope::Element, Test::Compare(op, value)) = (scope, test) {
            let stored = !matches!(target, Target::Fixed(_) | Target::Unsupported(_));
            let negative = matches!(op, CompareOp::Ne | CompareOp::Gt | CompareOp::Lt)
                || (op == CompareOp::Eq && *value == CompValue::Null);
            if stored && negative {
                return Err(TranslateError::unsupported(
                    attr,
                    format!(
                        "\"{attr} {op} {value}\" inside a multi-valued attribute cannot be \
                         expressed in LDAP (it would have to hold for one value, not all)"
                    ),
                ));
            }
        }
        match target {
            Target::Unsupported(reason) => Err(TranslateError::unsupported(attr, reason.clone())),
            Target::Fixed(fixed) => fixed_test(attr, fixed, test).map(Expr::Const),
            Target::Custom(f) => {
                let out = f(test)?;
                if !is_valid_filter(&out) {
                    return Err(TranslateError::InvalidMapping(format!(
                        "custom translation of \"{attr}\" is not an LDAP filter: {out}"
                    )));
                }
                // "Never" folds like a fixed value, so that `and` with it stays exact.
                if out == FALSE_FILTER {
                    return Ok(Expr::Const(false));
                }
                Ok(Expr::Atom(out))
            }
            Target::Candidates(f) => {
                let (out, exact) = match f(test)? {
                    Candidates::Exact(out) => (out, true),
                    Candidates::Superset(out) => (out, false),
                };
                if !is_valid_filter(&out) {
                    return Err(TranslateError::InvalidMapping(format!(
                        "custom translation of \"{attr}\" is not an LDAP filter: {out}"
                    )));
                }
                Ok(if exact {
                    Expr::Atom(out)
                } else {
                    Expr::Superset(out)
                })
            }
            Target::Attribute { ldap, syntax } => {
                check_ldap_attribute(ldap)?;
                attribute_test(attr, ldap, *syntax, test)
            }
            Target::Reference { ldap } => {
                check_ldap_attribute(ldap)?;
                self.reference_test(attr, ldap, test)
            }
        }
    }

    fn reference_test(
        &self,
        attr: &AttrPath,
        ldap: &str,
        test: Test<'_>,
    ) -> Result<Expr, TranslateError> {
        let (op, value) = match test {
            Test::Present => return Ok(present(ldap)),
            Test::Compare(op, value) => (op, value),
        };
        let id = match (op, value) {
            (CompareOp::Eq, CompValue::Null) => return Ok(Expr::not(present(ldap))),
            (CompareOp::Ne, CompValue::Null) => return Ok(present(ldap)),
            (CompareOp::Eq | CompareOp::Ne, CompValue::String(id)) => id,
            (CompareOp::Eq | CompareOp::Ne, other) => {
                return Err(TranslateError::invalid_value(
                    attr,
                    format!("an id is a string, not {}", other.kind()),
                ));
            }
            _ => {
                return Err(TranslateError::unsupported(
                    attr,
                    format!("\"{attr}\" holds references and supports only eq, ne and pr"),
                ));
            }
        };
        let eq = match self.map.resolve_reference(attr, id) {
            Some(Reference::Dn(dn)) => Expr::Atom(format!("({ldap}={})", filter_value(&dn))),
            Some(Reference::NotFound) => Expr::Const(false),
            None => {
                return Err(TranslateError::UnresolvedReference {
                    attribute: attr.to_string(),
                    id: id.clone(),
                });
            }
        };
        Ok(if op == CompareOp::Ne {
            Expr::not(eq)
        } else {
            eq
        })
    }
}

/// `parent.sub` for a path inside a single-valued complex attribute's brackets.
fn sub_path(parent: &AttrPath, inner: &AttrPath) -> Result<AttrPath, TranslateError> {
    if inner.urn.is_some() || inner.sub_attr.is_some() {
        return Err(TranslateError::UnknownAttribute(format!(
            "{parent}.{inner}"
        )));
    }
    Ok(parent.clone().with_sub_attr(inner.name.clone()))
}

fn nested_value_path(parent: &AttrPath, inner: &AttrPath) -> TranslateError {
    TranslateError::unsupported(
        format!("{parent}.{inner}"),
        format!("a value filter of \"{parent}\" cannot contain another value path"),
    )
}

fn check_ldap_attribute(ldap: &str) -> Result<(), TranslateError> {
    if is_attribute_description(ldap) {
        Ok(())
    } else {
        Err(TranslateError::InvalidMapping(format!(
            "\"{ldap}\" is not an LDAP attribute description"
        )))
    }
}

fn present(ldap: &str) -> Expr {
    Expr::Atom(format!("({ldap}=*)"))
}

/// A test on an attribute stored in LDAP attribute `ldap`.
fn attribute_test(
    attr: &(impl fmt::Display + ?Sized),
    ldap: &str,
    syntax: Syntax,
    test: Test<'_>,
) -> Result<Expr, TranslateError> {
    let (op, value) = match test {
        Test::Present => return Ok(present(ldap)),
        Test::Compare(op, value) => (op, value),
    };
    if *value == CompValue::Null {
        return match op {
            CompareOp::Eq => Ok(Expr::not(present(ldap))),
            CompareOp::Ne => Ok(present(ldap)),
            _ => Err(TranslateError::invalid_value(
                attr,
                format!("only eq and ne can compare with null, not {op}"),
            )),
        };
    }
    if syntax == Syntax::PresenceOnly {
        return Err(TranslateError::Uncomparable {
            attribute: attr.to_string(),
            reason: format!(
                "\"{attr}\" cannot be compared: the directory has no matching rule for \
                 {ldap}; only \"pr\" can be used on it"
            ),
        });
    }
    if op.is_substring() && !syntax.is_string() {
        return Err(TranslateError::unsupported(
            attr,
            format!("\"{op}\" needs a string attribute, and \"{attr}\" is not one"),
        ));
    }
    if op.is_ordering() && !syntax.has_ordering() {
        let what = match syntax {
            Syntax::Boolean => "booleans have no order".to_owned(),
            _ => format!("the directory has no ordering for \"{attr}\""),
        };
        return Err(TranslateError::unsupported(
            attr,
            format!("\"{op}\" cannot be used on \"{attr}\": {what}"),
        ));
    }
    let assertion = match assertion_value(attr, syntax, value)? {
        Some(a) => a,
        // A value no entry can have (a malformed UUID).
        None => return Ok(Expr::Const(op == CompareOp::Ne)),
    };
    let v = filter_value(&assertion);
    let eq = || Expr::Atom(format!("({ldap}={v})"));
    Ok(match op {
        CompareOp::Eq => eq(),
        CompareOp::Ne => Expr::not(eq()),
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew if v.is_empty() => present(ldap),
        CompareOp::Co => Expr::Atom(format!("({ldap}=*{v}*)")),
        CompareOp::Sw => Expr::Atom(format!("({ldap}={v}*)")),
        CompareOp::Ew => Expr::Atom(format!("({ldap}=*{v})")),
        CompareOp::Ge => Expr::Atom(format!("({ldap}>={v})")),
        CompareOp::Le => Expr::Atom(format!("({ldap}<={v})")),
        CompareOp::Gt => Expr::and(Expr::Atom(format!("({ldap}>={v})")), Expr::not(eq())),
        CompareOp::Lt => Expr::and(Expr::Atom(format!("({ldap}<={v})")), Expr::not(eq())),
    })
}

/// The SCIM value as an (unescaped) LDAP assertion value for `syntax`; `None` for a
/// value no entry can hold.
fn assertion_value(
    attr: &(impl fmt::Display + ?Sized),
    syntax: Syntax,
    value: &CompValue,
) -> Result<Option<String>, TranslateError> {
    let wrong = |expected: &str| {
        TranslateError::invalid_value(attr, format!("expected {expected}, found {}", value.kind()))
    };
    match (syntax, value) {
        (Syntax::CaseIgnoreString | Syntax::CaseExactString | Syntax::Dn, CompValue::String(s)) => {
            Ok(Some(s.clone()))
        }
        (Syntax::CaseIgnoreString | Syntax::CaseExactString | Syntax::Dn, _) => {
            Err(wrong("a string"))
        }
        // Refused before an assertion is built (attribute_test); never compared.
        (Syntax::PresenceOnly, _) => Ok(None),
        (Syntax::Boolean, CompValue::Bool(b)) => {
            Ok(Some(if *b { "TRUE" } else { "FALSE" }.to_owned()))
        }
        (Syntax::Boolean, _) => Err(wrong("true or false")),
        (Syntax::Integer, CompValue::Number(n)) => match n.as_i64() {
            Some(i) => Ok(Some(i.to_string())),
            None => Err(TranslateError::invalid_value(
                attr,
                format!("expected an integer, found {n}"),
            )),
        },
        (Syntax::Integer, _) => Err(wrong("an integer")),
        (Syntax::GeneralizedTime, CompValue::String(s)) => {
            generalized_time(s).map(Some).ok_or_else(|| {
                TranslateError::invalid_value(
                    attr,
                    format!("\"{s}\" is not a dateTime like 2011-05-13T04:42:34Z"),
                )
            })
        }
        (Syntax::GeneralizedTime, _) => Err(wrong("a dateTime string")),
        (Syntax::Uuid, CompValue::String(s)) => Ok(uuid::Uuid::try_parse(s)
            .ok()
            .map(|u| u.hyphenated().to_string())),
        (Syntax::Uuid, _) => Err(wrong("a string")),
    }
}

/// An RFC 3339 dateTime as a GeneralizedTime in UTC (RFC 4517 §3.3.13):
/// `2011-05-13T06:42:34.5+02:00` → `20110513044234.5Z`.
fn generalized_time(s: &str) -> Option<String> {
    let t = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
    let mut out = t.format("%Y%m%d%H%M%S").to_string();
    let nanos = t.nanosecond() % 1_000_000_000;
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    Some(out)
}

/// Evaluate `test` against a value known in advance ([`Target::Fixed`]).
fn fixed_test(
    attr: &(impl fmt::Display + ?Sized),
    fixed: &CompValue,
    test: Test<'_>,
) -> Result<bool, TranslateError> {
    let (op, value) = match test {
        Test::Present => return Ok(*fixed != CompValue::Null),
        Test::Compare(op, value) => (op, value),
    };
    use std::cmp::Ordering;
    let ordering: Option<Ordering> = match (fixed, value) {
        (_, CompValue::Null) | (CompValue::Null, _) => {
            return match op {
                CompareOp::Eq => Ok(fixed == value),
                CompareOp::Ne => Ok(fixed != value),
                _ if *value == CompValue::Null => Err(TranslateError::invalid_value(
                    attr,
                    format!("only eq and ne can compare with null, not {op}"),
                )),
                // An attribute without a value satisfies no other comparison.
                _ => Ok(false),
            };
        }
        (CompValue::String(a), CompValue::String(b)) => {
            let (a, b) = (a.to_lowercase(), b.to_lowercase());
            return Ok(match op {
                CompareOp::Eq => a == b,
                CompareOp::Ne => a != b,
                CompareOp::Co => a.contains(&b),
                CompareOp::Sw => a.starts_with(&b),
                CompareOp::Ew => a.ends_with(&b),
                CompareOp::Gt => a > b,
                CompareOp::Lt => a < b,
                CompareOp::Ge => a >= b,
                CompareOp::Le => a <= b,
            });
        }
        (CompValue::Bool(a), CompValue::Bool(b)) => match op {
            CompareOp::Eq => return Ok(a == b),
            CompareOp::Ne => return Ok(a != b),
            _ => None,
        },
        (CompValue::Number(a), CompValue::Number(b)) => a.as_f64().partial_cmp(&b.as_f64()),
        _ => {
            return Err(TranslateError::invalid_value(
                attr,
                format!("expected {}, found {}", fixed.kind(), value.kind()),
            ));
        }
    };
    if op.is_substring() {
        return Err(TranslateError::unsupported(
            attr,
            format!("\"{op}\" needs a string attribute, and \"{attr}\" is not one"),
        ));
    }
    let Some(ord) = ordering else {
        return Err(TranslateError::unsupported(
            attr,
            format!("\"{op}\" cannot be used on \"{attr}\": booleans have no order"),
        ));
    };
    Ok(op.holds_for(ord))
}

/// `inetOrgPerson` users on OpenLDAP with the ppolicy overlay, as lockbridge serves them.
///
/// | SCIM | LDAP |
/// |---|---|
/// | `id` | `entryUUID` (UUID) |
/// | `externalId` | [`DefaultUserMapping::external_id`], if set |
/// | `userName` | `uid` |
/// | `name.givenName` / `name.familyName` / `name.formatted` | `givenName` / `sn` / `cn` |
/// | `name.middleName` / `honorificPrefix` / `honorificSuffix` | `lockbridgeMiddleName` / `lockbridgeHonorificPrefix` / `lockbridgeHonorificSuffix` (lockbridge's LDAP schema) |
/// | `displayName`, `title`, `preferredLanguage` | the same names |
/// | `nickName`, `profileUrl`, `userType`, `locale`, `timezone` | `lockbridgeNickName`, `lockbridgeProfileUrl` (case-exact), `lockbridgeUserType`, `lockbridgeLocale`, `lockbridgeTimezone` |
/// | `emails` (`.value`) | `mail`, every value of `type` `work` |
/// | `phoneNumbers` | `telephoneNumber` (`type` `work`), `mobile` (`mobile`), `facsimileTelephoneNumber` (`fax`), `homePhone` (`home`), `pager` (`pager`) |
/// | `addresses` (`type` `work`) | `street`, `l`, `st`, `postalCode`, `lockbridgeCountry`; `formatted` is `postalAddress` (not filterable) |
/// | `active` | the directory kind's filter for "sign-in not blocked by an administrator" ([`DefaultUserMapping::sign_in`]; a temporary lockout after failed binds is still active) |
/// | `meta.created` / `meta.lastModified` | `createTimestamp` / `modifyTimestamp` |
/// | `meta.resourceType` | fixed `User` |
/// | enterprise `employeeNumber` / `department` / `organization` | `employeeNumber` / `departmentNumber` / `o` |
/// | enterprise `costCenter` / `division` | `lockbridgeCostCenter` / `lockbridgeDivision` |
/// | enterprise `manager` | unsupported for now |
/// | lockbridge `mustChange` | the directory kind's filter for "must change at next sign-in" |
///
/// Core attributes may be written with or without the core User URN; extension
/// attributes with their URN or, since their names are unique, without.
#[derive(Debug, Clone, Default)]
pub struct DefaultUserMapping {
    /// The LDAP attribute holding `externalId` (set by the provisioning client); `None`:
    /// lockbridge does not store it and filtering on it fails.
    pub external_id: Option<String>,
    /// How the directory keeps sign-in state (`active`, `mustChange`).
    pub sign_in: SignInVocabulary,
    /// How the directory identifies entries (`id`).
    pub entries: EntryVocabulary,
}

impl DefaultUserMapping {
    /// A boolean told by the sign-in state `when_true` (and its opposite).
    fn state(&self, attr: &'static str, when_true: StateTest, when_false: StateTest) -> Target {
        let yes = self.sign_in.filter(when_true);
        let no = self.sign_in.filter(when_false);
        Target::custom(move |test| boolean_custom(attr, test, &yes, &no))
    }

    fn core(&self, path: &AttrPath) -> Option<Target> {
        use Syntax::{CaseExactString, CaseIgnoreString, GeneralizedTime};
        let sub = path.sub_attr.as_deref().map(str::to_ascii_lowercase);
        let name = path.name.to_ascii_lowercase();
        let string = |ldap: &str| Some(Target::attribute(ldap, CaseIgnoreString));
        match (name.as_str(), sub.as_deref()) {
            ("id", None) => Some(id_target(self.entries)),
            ("externalid", None) => Some(match &self.external_id {
                Some(ldap) => Target::attribute(ldap.clone(), CaseExactString),
                None => Target::unsupported("externalId is not stored, so it cannot be filtered"),
            }),
            ("username", None) => string("uid"),
            ("name", Some("givenname")) => string("givenName"),
            ("name", Some("familyname")) => string("sn"),
            ("name", Some("formatted")) => string("cn"),
            ("name", Some("middlename")) => string("lockbridgeMiddleName"),
            ("name", Some("honorificprefix")) => string("lockbridgeHonorificPrefix"),
            ("name", Some("honorificsuffix")) => string("lockbridgeHonorificSuffix"),
            ("displayname", None) => string("displayName"),
            ("nickname", None) => string("lockbridgeNickName"),
            ("profileurl", None) => {
                Some(Target::attribute("lockbridgeProfileUrl", CaseExactString))
            }
            ("title", None) => string("title"),
            ("usertype", None) => string("lockbridgeUserType"),
            ("preferredlanguage", None) => string("preferredLanguage"),
            ("locale", None) => string("lockbridgeLocale"),
            ("timezone", None) => string("lockbridgeTimezone"),
            ("active", None) => Some(self.state(
                "active",
                StateTest::Blocked(false),
                StateTest::Blocked(true),
            )),
            ("meta", Some("created")) => {
                Some(Target::attribute("createTimestamp", GeneralizedTime))
            }
            ("meta", Some("lastmodified")) => {
                Some(Target::attribute("modifyTimestamp", GeneralizedTime))
            }
            ("meta", Some("resourcetype")) => Some(Target::fixed_string("User")),
            ("password", _) => Some(Target::unsupported("password cannot be filtered")),
            ("groups", _) => Some(Target::unsupported("filtering on groups is not supported")),
            _ => None,
        }
    }

    fn enterprise(path: &AttrPath) -> Option<Target> {
        let string = |ldap: &str| Some(Target::attribute(ldap, Syntax::CaseIgnoreString));
        match (path.name.to_ascii_lowercase().as_str(), &path.sub_attr) {
            ("employeenumber", None) => string("employeeNumber"),
            ("costcenter", None) => string("lockbridgeCostCenter"),
            ("department", None) => string("departmentNumber"),
            ("organization", None) => string("o"),
            ("division", None) => string("lockbridgeDivision"),
            ("manager", _) => Some(Target::unsupported("filtering on manager is not supported")),
            _ => None,
        }
    }

    fn password(&self, path: &AttrPath) -> Option<Target> {
        (path.name_is("mustChange") && path.sub_attr.is_none()).then(|| {
            self.state(
                "mustChange",
                StateTest::MustChange(true),
                StateTest::MustChange(false),
            )
        })
    }
}

impl FilterMapping for DefaultUserMapping {
    fn attribute(&self, path: &AttrPath) -> Option<Target> {
        match path.urn.as_deref() {
            None => self
                .core(path)
                .or_else(|| Self::enterprise(path))
                .or_else(|| self.password(path)),
            Some(u) if u.eq_ignore_ascii_case(CORE_USER) => self.core(path),
            Some(u) if u.eq_ignore_ascii_case(ENTERPRISE_USER) => Self::enterprise(path),
            Some(u) if u.eq_ignore_ascii_case(PASSWORD_EXTENSION) => self.password(path),
            Some(_) => None,
        }
    }

    fn elements(&self, path: &AttrPath) -> Option<Vec<Element>> {
        if !path.in_schema(CORE_USER) || path.sub_attr.is_some() {
            return None;
        }
        let string = |ldap: &str| Target::attribute(ldap, Syntax::CaseIgnoreString);
        if path.name_is("emails") {
            return Some(vec![Element::new([
                ("value", string("mail")),
                ("type", Target::fixed_string("work")),
                (
                    "primary",
                    Target::unsupported("emails.primary cannot be filtered"),
                ),
                (
                    "display",
                    Target::unsupported("emails.display cannot be filtered"),
                ),
            ])]);
        }
        if path.name_is("phoneNumbers") {
            let kind = |value: Target, kind: &str| {
                Element::new([
                    ("value", value),
                    ("type", Target::fixed_string(kind)),
                    (
                        "primary",
                        Target::unsupported("phoneNumbers.primary cannot be filtered"),
                    ),
                    (
                        "display",
                        Target::unsupported("phoneNumbers.display cannot be filtered"),
                    ),
                ])
            };
            return Some(vec![
                kind(string("telephoneNumber"), "work"),
                kind(string("mobile"), "mobile"),
                // No matching rule in OpenLDAP's core schema: only `pr`.
                kind(
                    Target::attribute("facsimileTelephoneNumber", Syntax::PresenceOnly),
                    "fax",
                ),
                kind(string("homePhone"), "home"),
                kind(string("pager"), "pager"),
            ]);
        }
        if path.name_is("addresses") {
            return Some(vec![Element::new([
                (
                    "formatted",
                    Target::unsupported(
                        "addresses.formatted cannot be filtered (it is stored as lines); \
                         filter on streetAddress, locality, region, postalCode or country",
                    ),
                ),
                ("streetAddress", string("street")),
                ("locality", string("l")),
                ("region", string("st")),
                ("postalCode", string("postalCode")),
                ("country", string("lockbridgeCountry")),
                ("type", Target::fixed_string("work")),
                (
                    "primary",
                    Target::unsupported("addresses.primary cannot be filtered"),
                ),
            ])]);
        }
        None
    }
}

/// A filter on the `value` of values kept as JSON objects in `ldap`, one per LDAP value,
/// keys in alphabetical order and no spaces (`{"primary":true,"type":"home","value":"x"}`;
/// see `scim/lockbridge.schema`). `prefix` is the JSON text just before the value's
/// string: `"type":"home","value":"` for a kind with a fixed type (type and value are the
/// last two keys, so they are adjacent), or `"value":"`. One substring assertion then
/// tests one value: `eq "x"` is `*<prefix>x"}`, `co` `*<prefix>*x*"}`, `sw`
/// `*<prefix>x*"}`, `ew` `*<prefix>*x"}`, `pr` `*<prefix>*`. The string is written as JSON
/// writes it, so quotes and backslashes in it match what is stored.
pub fn json_value_filter(
    ldap: &str,
    prefix: &str,
    test: Test<'_>,
) -> Result<String, TranslateError> {
    let e = |s: &str| filter_value(s).into_owned();
    let (op, value) = match test {
        Test::Present => return Ok(format!("({ldap}=*{}*)", e(prefix))),
        Test::Compare(op, value) => (op, value),
    };
    let CompValue::String(text) = value else {
        return Err(TranslateError::invalid_value(
            ldap,
            format!("expected a string, found {}", value.kind()),
        ));
    };
    let json = serde_json::to_string(text).unwrap_or_default();
    let json = json
        .strip_prefix('"')
        .and_then(|j| j.strip_suffix('"'))
        .unwrap_or_default();
    let (p, j, end) = (e(prefix), e(json), e("\"}"));
    match op {
        CompareOp::Eq => Ok(format!("({ldap}=*{p}{j}{end})")),
        _ if json.is_empty() && op.is_substring() => Ok(format!("({ldap}=*{p}*)")),
        CompareOp::Co => Ok(format!("({ldap}=*{p}*{j}*{end})")),
        CompareOp::Sw => Ok(format!("({ldap}=*{p}{j}*{end})")),
        CompareOp::Ew => Ok(format!("({ldap}=*{p}*{j}{end})")),
        _ => Err(TranslateError::unsupported(
            ldap,
            format!("\"{op}\" cannot be used here; use eq, co, sw, ew or pr"),
        )),
    }
}

/// The kind of value of type `kind` of a multi-valued attribute kept as JSON in `ldap`
/// (see [`json_value_filter`]): its `type` is fixed, so `type` and `value` conditions on
/// one value combine exactly.
pub fn json_typed_element(ldap: &str, kind: &str, attr: &str) -> Element {
    let prefix = format!(
        "\"type\":{},\"value\":\"",
        serde_json::to_string(kind).unwrap_or_default()
    );
    let after = format!(
        ",\"type\":{},\"value\":\"",
        serde_json::to_string(kind).unwrap_or_default()
    );
    json_element(ldap, prefix, Target::fixed_string(kind), attr, after)
}

/// The values of a multi-valued attribute kept as JSON in `ldap` whose type is none of
/// `typed` (those have their own [`json_typed_element`]), or who have none. `type eq`
/// works on its own (`type` and `value` are adjacent in the JSON); combined with a
/// condition on `value` it cannot be expressed in one LDAP assertion and is refused.
pub fn json_open_element(ldap: &str, typed: &[&str], attr: &str) -> Element {
    let typed: Vec<String> = typed.iter().map(|t| t.to_ascii_lowercase()).collect();
    let (at, name) = (ldap.to_owned(), format!("{attr}.type"));
    let kind = Target::custom(move |test| match test {
        Test::Present => Ok(format!("({at}=*{}*)", filter_value("\"type\":"))),
        Test::Compare(CompareOp::Eq, CompValue::String(k))
            if typed.contains(&k.to_ascii_lowercase()) =>
        {
            // Values of that type are another element's.
            Ok(FALSE_FILTER.to_owned())
        }
        Test::Compare(CompareOp::Eq, CompValue::String(k)) => {
            let json = serde_json::to_string(k).unwrap_or_default();
            let adjacent = format!("\"type\":{json},\"value\":\"");
            Ok(format!("({at}=*{}*)", filter_value(&adjacent)))
        }
        Test::Compare(op, value) => Err(TranslateError::unsupported(
            &name,
            format!("{name} can be compared with eq and a string, not \"{op} {value}\""),
        )),
    });
    json_element(ldap, "\"value\":\"".to_owned(), kind, attr, ",".to_owned())
}

/// Addresses of type `kind` kept as JSON objects in `ldap` (keys in alphabetical order,
/// so `type` is the last: `{"locality":"Chicago","type":"home"}`). Each part is tested
/// with the type in the same assertion, on one value: `eq "x"` is
/// `*"<part>":"x"*"type":"<kind>"}`, `sw` `*"<part>":"x*"type":"<kind>"}`, `pr`
/// `*"<part>":*"type":"<kind>"}`. `co` and `ew` cannot be kept to one part (the text
/// after a part's value holds the next parts), so they narrow the search to the
/// addresses holding the text somewhere after the part's key (`co`:
/// `*"<part>":"*x*"type":"<kind>"}`, `ew`: `*"<part>":"*x"*"type":"<kind>"}`), a
/// [`Candidates::Superset`] whose candidates the caller checks.
pub fn json_address_element(ldap: &str, kind: &str, parts: &[&str]) -> Element {
    let kind_json = serde_json::to_string(kind).unwrap_or_default();
    let mut sub_attrs: Vec<(String, Target)> = parts
        .iter()
        .map(|name| {
            let (ldap, part) = (ldap.to_owned(), (*name).to_owned());
            let tail = format!("\"type\":{kind_json}}}");
            let target = Target::Candidates(Box::new(move |test| {
                let path = format!("addresses.{part}");
                let key = format!("\"{part}\":");
                let (e_key, e_tail) = (filter_value(&key), filter_value(&tail));
                let (op, value) = match test {
                    Test::Present => {
                        return Ok(Candidates::Exact(format!("({ldap}=*{e_key}*{e_tail})")));
                    }
                    Test::Compare(op, value) => (op, value),
                };
                let CompValue::String(text) = value else {
                    return Err(TranslateError::invalid_value(
                        &path,
                        format!("expected a string, found {}", value.kind()),
                    ));
                };
                let json = serde_json::to_string(text).unwrap_or_default();
                let open = json.strip_suffix('"').unwrap_or_default();
                let inner = open.strip_prefix('"').unwrap_or_default();
                let e = |s: &str| filter_value(s).into_owned();
                match op {
                    CompareOp::Eq => Ok(Candidates::Exact(format!(
                        "({ldap}=*{e_key}{}*{e_tail})",
                        e(&json)
                    ))),
                    CompareOp::Sw => Ok(Candidates::Exact(format!(
                        "({ldap}=*{e_key}{}*{e_tail})",
                        e(open)
                    ))),
                    // An empty `co` is "has this part", as for any string.
                    CompareOp::Co if inner.is_empty() => {
                        Ok(Candidates::Exact(format!("({ldap}=*{e_key}*{e_tail})")))
                    }
                    CompareOp::Co => Ok(Candidates::Superset(format!(
                        "({ldap}=*{e_key}\"*{}*{e_tail})",
                        e(inner)
                    ))),
                    CompareOp::Ew => Ok(Candidates::Superset(format!(
                        "({ldap}=*{e_key}\"*{}\"*{e_tail})",
                        e(inner)
                    ))),
                    _ => Err(TranslateError::unsupported(
                        &path,
                        format!("\"{op}\" cannot be used here; use eq, co, sw, ew or pr"),
                    )),
                }
            }));
            ((*name).to_owned(), target)
        })
        .collect();
    sub_attrs.push(("type".to_owned(), Target::fixed_string(kind)));
    sub_attrs.push((
        "formatted".to_owned(),
        Target::unsupported(
            "addresses.formatted cannot be filtered; filter on streetAddress, locality, \
             region, postalCode or country",
        ),
    ));
    let (at, after) = (ldap.to_owned(), format!(",\"type\":{kind_json}}}"));
    sub_attrs.push((
        "primary".to_owned(),
        Target::custom(move |test| json_primary_filter(&at, &after, "addresses.primary", test)),
    ));
    Element { sub_attrs }
}

/// `primary` of JSON-kept values: `"primary":<b>` followed by `after` (the text that
/// follows it in such a value: `,"type":"home","value":"` for a fixed type), in one
/// assertion. `eq true`, `eq false` and `pr`; a value without `primary` matches neither.
pub fn json_primary_filter(
    ldap: &str,
    after: &str,
    path: &str,
    test: Test<'_>,
) -> Result<String, TranslateError> {
    let after = filter_value(after);
    match test {
        Test::Present => Ok(format!("({ldap}=*\"primary\":*{after}*)")),
        Test::Compare(CompareOp::Eq, CompValue::Bool(b)) => {
            Ok(format!("({ldap}=*\"primary\":{b}{after}*)"))
        }
        Test::Compare(op, value) => Err(TranslateError::unsupported(
            path,
            format!(
                "{path} can be tested with \"eq true\", \"eq false\" or \"pr\", not \"{op} {value}\""
            ),
        )),
    }
}

fn json_element(ldap: &str, prefix: String, kind: Target, attr: &str, after: String) -> Element {
    let (at, path) = (ldap.to_owned(), format!("{attr}.primary"));
    let primary = Target::custom(move |test| json_primary_filter(&at, &after, &path, test));
    let ldap = ldap.to_owned();
    let value = Target::custom(move |test| json_value_filter(&ldap, &prefix, test));
    Element::new([
        ("value".to_owned(), value),
        ("type".to_owned(), kind),
        ("primary".to_owned(), primary),
        (
            "display".to_owned(),
            Target::unsupported(format!("{attr}.display cannot be filtered")),
        ),
    ])
}

/// A boolean that every resource has, true where `when_true` matches.
/// The filter target of `id`: `entryUUID` compared as a UUID, or Active Directory's
/// binary `objectGUID`, whose assertion values are the GUID's bytes
/// ([`EntryVocabulary::id_filter`]). Only `eq`, `ne` and `pr`: ids have no order.
fn id_target(entries: EntryVocabulary) -> Target {
    let attribute = entries.id_attribute();
    if !attribute.eq_ignore_ascii_case("objectGUID") {
        return Target::attribute(attribute, Syntax::Uuid);
    }
    Target::custom(move |test| {
        let (op, value) = match test {
            Test::Present => return Ok(format!("({attribute}=*)")),
            Test::Compare(op, value) => (op, value),
        };
        // A value that is not an id matches nothing (as for entryUUID).
        let item = match value {
            CompValue::String(s) => uuid::Uuid::try_parse(s)
                .map(|id| entries.id_filter(&id))
                .unwrap_or_else(|_| FALSE_FILTER.to_owned()),
            CompValue::Null => FALSE_FILTER.to_owned(),
            other => {
                return Err(TranslateError::invalid_value(
                    "id",
                    format!("expected a string, found {}", other.kind()),
                ));
            }
        };
        match op {
            CompareOp::Eq => Ok(item),
            CompareOp::Ne => Ok(format!("(!{item})")),
            _ => Err(TranslateError::unsupported(
                "id",
                format!("\"{op}\" cannot be used on \"id\": ids have no order"),
            )),
        }
    })
}

fn boolean_custom(
    attr: &str,
    test: Test<'_>,
    when_true: &str,
    when_false: &str,
) -> Result<String, TranslateError> {
    let (op, value) = match test {
        Test::Present => return Ok(TRUE_FILTER.to_owned()),
        Test::Compare(op, value) => (op, value),
    };
    let out = match (op, value) {
        (CompareOp::Eq, CompValue::Bool(b)) | (CompareOp::Ne, CompValue::Bool(b)) => {
            if *b == (op == CompareOp::Eq) {
                when_true
            } else {
                when_false
            }
        }
        (CompareOp::Eq, CompValue::Null) => FALSE_FILTER,
        (CompareOp::Ne, CompValue::Null) => TRUE_FILTER,
        (_, CompValue::Bool(_)) => {
            return Err(TranslateError::unsupported(
                attr,
                format!("\"{op}\" cannot be used on \"{attr}\": booleans have no order"),
            ));
        }
        (_, other) => {
            return Err(TranslateError::invalid_value(
                attr,
                format!("expected true or false, found {}", other.kind()),
            ));
        }
    };
    Ok(out.to_owned())
}

/// `groupOfNames` groups on OpenLDAP.
///
/// | SCIM | LDAP |
/// |---|---|
/// | `id` | `entryUUID` (UUID) |
/// | `externalId` | [`DefaultGroupMapping::external_id`], if set |
/// | `displayName` | `cn` |
/// | `members` (`.value`) | `member`, a [`Target::Reference`]: ids resolve to DNs |
/// | `meta.created` / `meta.lastModified` | `createTimestamp` / `modifyTimestamp` |
/// | `meta.resourceType` | fixed `Group` |
///
/// `members eq "<id>"` needs the id resolved to a DN first: see the module
/// documentation ([`references`], [`WithReferences`]); without it the translation fails
/// with [`TranslateError::UnresolvedReference`].
#[derive(Debug, Clone, Default)]
pub struct DefaultGroupMapping {
    /// The LDAP attribute holding `externalId`; `None`: not stored.
    pub external_id: Option<String>,
    /// How the directory identifies entries (`id`).
    pub entries: EntryVocabulary,
}

impl FilterMapping for DefaultGroupMapping {
    fn attribute(&self, path: &AttrPath) -> Option<Target> {
        if !path.in_schema(CORE_GROUP) {
            return None;
        }
        let sub = path.sub_attr.as_deref().map(str::to_ascii_lowercase);
        match (path.name.to_ascii_lowercase().as_str(), sub.as_deref()) {
            ("id", None) => Some(id_target(self.entries)),
            ("externalid", None) => Some(match &self.external_id {
                Some(ldap) => Target::attribute(ldap.clone(), Syntax::CaseExactString),
                None => Target::unsupported("externalId is not stored, so it cannot be filtered"),
            }),
            ("displayname", None) => Some(Target::attribute("cn", Syntax::CaseIgnoreString)),
            ("meta", Some("created")) => Some(Target::attribute(
                "createTimestamp",
                Syntax::GeneralizedTime,
            )),
            ("meta", Some("lastmodified")) => Some(Target::attribute(
                "modifyTimestamp",
                Syntax::GeneralizedTime,
            )),
            ("meta", Some("resourcetype")) => Some(Target::fixed_string("Group")),
            _ => None,
        }
    }

    fn elements(&self, path: &AttrPath) -> Option<Vec<Element>> {
        if !path.in_schema(CORE_GROUP) || path.sub_attr.is_some() || !path.name_is("members") {
            return None;
        }
        Some(vec![Element::new([
            (
                "value",
                Target::Reference {
                    ldap: "member".to_owned(),
                },
            ),
            (
                "type",
                Target::unsupported("members.type cannot be filtered"),
            ),
            (
                "display",
                Target::unsupported("members.display cannot be filtered"),
            ),
            (
                "$ref",
                Target::unsupported("members.$ref cannot be filtered; use members.value"),
            ),
        ])])
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_filter;
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    fn user() -> DefaultUserMapping {
        DefaultUserMapping {
            external_id: Some("employeeID".to_owned()),
            sign_in: SignInVocabulary::default(),
            entries: EntryVocabulary::default(),
        }
    }

    /// `expected` with the directory's sign-in state filters in place of `{blocked}`,
    /// `{not blocked}`, `{must change}` and `{no must change}`.
    fn with_state_filters(expected: &str) -> String {
        let v = SignInVocabulary::default();
        expected
            .replace("{not blocked}", &v.filter(StateTest::Blocked(false)))
            .replace("{blocked}", &v.filter(StateTest::Blocked(true)))
            .replace("{no must change}", &v.filter(StateTest::MustChange(false)))
            .replace("{must change}", &v.filter(StateTest::MustChange(true)))
    }

    fn user_ldap(filter: &str) -> Result<String, TranslateError> {
        let f = parse_filter(filter).expect(filter);
        to_ldap(&f, &user())
    }

    #[rstest]
    // each operator
    #[case(r#"userName eq "bjensen""#, "(uid=bjensen)")]
    #[case(r#"userName ne "bjensen""#, "(!(uid=bjensen))")]
    #[case(r#"userName co "jen""#, "(uid=*jen*)")]
    #[case(r#"userName sw "J""#, "(uid=J*)")]
    #[case(r#"userName ew "sen""#, "(uid=*sen)")]
    #[case(r#"userName co """#, "(uid=*)")]
    #[case("userName pr", "(uid=*)")]
    #[case("userName eq null", "(!(uid=*))")]
    #[case("userName ne null", "(uid=*)")]
    #[case(
        r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
        "(&(modifyTimestamp>=20110513044234Z)(!(modifyTimestamp=20110513044234Z)))"
    )]
    #[case(
        r#"meta.lastModified lt "2011-05-13T04:42:34Z""#,
        "(&(modifyTimestamp<=20110513044234Z)(!(modifyTimestamp=20110513044234Z)))"
    )]
    #[case(
        r#"meta.lastModified ge "2011-05-13T04:42:34Z""#,
        "(modifyTimestamp>=20110513044234Z)"
    )]
    #[case(
        r#"meta.created le "2011-05-13T06:42:34.250+02:00""#,
        "(createTimestamp<=20110513044234.25Z)"
    )]
    #[case(
        r#"meta.created eq "2025-01-01t12:00:00z""#,
        "(createTimestamp=20250101120000Z)"
    )]
    // names, URNs, case
    #[case(r#"USERNAME EQ "x""#, "(uid=x)")]
    #[case(
        r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#,
        "(uid=J*)"
    )]
    #[case(r#"name.familyName co "O'Malley""#, "(sn=*O'Malley*)")]
    #[case(r#"name.givenName eq "Barbara""#, "(givenName=Barbara)")]
    #[case(
        r#"name.formatted eq "Ms. Barbara J Jensen, III""#,
        "(cn=Ms. Barbara J Jensen, III)"
    )]
    #[case(r#"displayName eq "Babs""#, "(displayName=Babs)")]
    #[case(r#"externalId eq "x""#, "(employeeID=x)")]
    #[case(
        r#"id eq "2819C223-7F76-453A-919D-413861904646""#,
        "(entryUUID=2819c223-7f76-453a-919d-413861904646)"
    )]
    #[case(r#"id eq "not-a-uuid""#, "(!(objectClass=*))")]
    #[case(r#"id ne "not-a-uuid""#, "(objectClass=*)")]
    #[case(
        r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#,
        "(employeeNumber=701984)"
    )]
    #[case(r#"employeeNumber sw "70""#, "(employeeNumber=70*)")]
    #[case(
        r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "Tour Operations""#,
        "(departmentNumber=Tour Operations)"
    )]
    // custom
    #[case("active eq true", "{not blocked}")]
    #[case("active eq false", "{blocked}")]
    #[case("active ne true", "{blocked}")]
    #[case("active pr", "(objectClass=*)")]
    #[case(
        "urn:lockbridge:params:scim:schemas:extension:password:2.0:User:mustChange eq true",
        "{must change}"
    )]
    #[case("mustChange eq false", "{no must change}")]
    // combinations
    #[case(r#"title pr and userName eq "x""#, "(&(title=*)(uid=x))")]
    #[case(
        r#"userName eq "a" or userName eq "b" or userName eq "c""#,
        "(|(uid=a)(uid=b)(uid=c))"
    )]
    #[case(
        r#"userName eq "a" and (displayName eq "b" or title eq "c") and active eq true"#,
        "(&(uid=a)(|(displayName=b)(title=c)){not blocked})"
    )]
    #[case(r#"not (userName eq "a")"#, "(!(uid=a))")]
    #[case(r#"not (not (userName eq "a"))"#, "(uid=a)")]
    #[case(r#"not (userName eq "a" or title pr)"#, "(!(|(uid=a)(title=*)))")]
    // multi-valued: emails (one kind: work mail)
    #[case(
        r#"emails[type eq "work"].value eq "user@contoso.com""#,
        "(mail=user@contoso.com)"
    )]
    #[case(
        r#"emails[type eq "work" and value co "@example.com"]"#,
        "(mail=*@example.com*)"
    )]
    #[case(r#"emails[type eq "WORK"]"#, "(mail=*)")]
    #[case(r#"emails[type eq "home"]"#, "(!(objectClass=*))")]
    #[case(r#"emails[type eq "home"].value eq "x""#, "(!(objectClass=*))")]
    #[case(r#"emails[type ne "home"]"#, "(mail=*)")]
    #[case(r#"emails[not (type eq "home")]"#, "(mail=*)")]
    #[case(r#"emails[type eq "work" or value co "x"]"#, "(mail=*)")]
    #[case(r#"emails[value co "a" or value co "b"]"#, "(|(mail=*a*)(mail=*b*))")]
    #[case(r#"emails co "example.com""#, "(mail=*example.com*)")]
    #[case(r#"emails.value co "example.org""#, "(mail=*example.org*)")]
    #[case(r#"emails.type eq "work""#, "(mail=*)")]
    #[case("emails pr", "(mail=*)")]
    #[case(r#"not (emails co "example.com")"#, "(!(mail=*example.com*))")]
    // multi-valued: phoneNumbers (two kinds)
    #[case(r#"phoneNumbers[type eq "mobile" and value eq "123"]"#, "(mobile=123)")]
    #[case(
        r#"phoneNumbers[type eq "work"].value sw "+49""#,
        "(telephoneNumber=+49*)"
    )]
    #[case(
        r#"phoneNumbers[value eq "1"]"#,
        "(|(telephoneNumber=1)(mobile=1)(homePhone=1)(pager=1))"
    )]
    #[case(r#"phoneNumbers[type eq "fax"]"#, "(facsimileTelephoneNumber=*)")]
    // fax numbers cannot be compared (no matching rule): left out where other kinds answer
    #[case(
        r#"phoneNumbers[type eq "fax" or value eq "1"]"#,
        "(|(telephoneNumber=1)(mobile=1)(facsimileTelephoneNumber=*)(homePhone=1)(pager=1))"
    )]
    #[case(
        r#"phoneNumbers[type eq "work" and value eq "1"]"#,
        "(telephoneNumber=1)"
    )]
    #[case(r#"phoneNumbers[type eq "other"]"#, "(!(objectClass=*))")]
    #[case(
        r#"addresses[type eq "work" and locality eq "Chicago"]"#,
        "(l=Chicago)"
    )]
    #[case(
        r#"addresses[type eq "work"]"#,
        "(|(street=*)(l=*)(st=*)(postalCode=*)(lockbridgeCountry=*))"
    )]
    #[case(r#"addresses[type eq "home"]"#, "(!(objectClass=*))")]
    #[case(r#"phoneNumbers[type eq "mobile"]"#, "(mobile=*)")]
    #[case(
        "phoneNumbers pr",
        "(|(telephoneNumber=*)(mobile=*)(facsimileTelephoneNumber=*)(homePhone=*)(pager=*))"
    )]
    // fixed
    #[case(r#"meta.resourceType eq "User""#, "(objectClass=*)")]
    #[case(r#"meta.resourceType eq "Group" or userName eq "x""#, "(uid=x)")]
    #[case(r#"meta.resourceType eq "User" and userName eq "x""#, "(uid=x)")]
    // lockbridge's LDAP schema
    #[case(r#"userType eq "Employee""#, "(lockbridgeUserType=Employee)")]
    #[case(r#"name.middleName sw "Ja""#, "(lockbridgeMiddleName=Ja*)")]
    #[case(r#"profileUrl co "example""#, "(lockbridgeProfileUrl=*example*)")]
    #[case(
        r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter eq "4130""#,
        "(lockbridgeCostCenter=4130)"
    )]
    #[case(r#"division pr"#, "(lockbridgeDivision=*)")]
    fn translates(#[case] filter: &str, #[case] ldap: &str) {
        let ldap = with_state_filters(ldap);
        let out = user_ldap(filter);
        assert_eq!(out.as_deref(), Ok(ldap.as_str()), "{filter}");
        assert!(is_valid_filter(&ldap), "{ldap}");
    }

    #[rstest]
    #[case(r#"favoriteColor eq "green""#, TranslateError::UnknownAttribute("favoriteColor".into()))]
    #[case(r#"name.nickName eq "x""#, TranslateError::UnknownAttribute("name.nickName".into()))]
    #[case(r#"urn:example:User:userName eq "x""#, TranslateError::UnknownAttribute("urn:example:User:userName".into()))]
    #[case(r#"emails[kind eq "x"]"#, TranslateError::UnknownAttribute("emails.kind".into()))]
    #[case(
        r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915""#,
        TranslateError::Unsupported {
            attribute: "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value".into(),
            reason: "filtering on manager is not supported".into(),
        }
    )]
    fn refuses_with(#[case] filter: &str, #[case] expected: TranslateError) {
        assert_eq!(user_ldap(filter), Err(expected), "{filter}");
    }

    /// Untranslatable filters fail, with a reason; none becomes a wider filter.
    #[rstest]
    #[case(r#"userName gt "m""#, "the directory has no ordering for \"userName\"")]
    #[case(r#"displayName le "m""#, "no ordering")]
    #[case("active gt true", "booleans have no order")]
    #[case("mustChange lt false", "booleans have no order")]
    #[case(r#"active eq "yes""#, "expected true or false, found a string")]
    #[case("userName eq 42", "expected a string, found a number")]
    #[case("userName eq true", "expected a string, found a boolean")]
    #[case("userName gt null", "only eq and ne can compare with null")]
    #[case(r#"meta.lastModified eq "yesterday""#, "is not a dateTime")]
    #[case(r#"meta.lastModified gt "2011-13-13T04:42:34Z""#, "is not a dateTime")]
    #[case(r#"meta.lastModified co "2011""#, "needs a string attribute")]
    #[case("meta.lastModified eq 5", "expected a dateTime string, found a number")]
    #[case(r#"id co "2819""#, "needs a string attribute")]
    #[case(r#"id gt "2819""#, "no ordering")]
    #[case(r#"externalId eq 7"#, "expected a string")]
    #[case(r#"emails[type gt 5]"#, "expected a string, found a number")]
    #[case(r#"emails[type eq true]"#, "expected a string, found a boolean")]
    #[case(
        r#"emails[value co "a" and value co "b"]"#,
        "cannot be expressed in LDAP"
    )]
    #[case(r#"emails[not (value eq "a")]"#, "cannot be expressed in LDAP")]
    #[case(r#"emails[value ne "a"]"#, "it would have to hold for one value")]
    #[case(r#"emails.value ne "a""#, "it would have to hold for one value")]
    #[case(r#"emails ne "a""#, "it would have to hold for one value")]
    #[case(r#"emails[value gt "a"]"#, "it would have to hold for one value")]
    #[case(r#"emails[value eq null]"#, "it would have to hold for one value")]
    #[case(r#"emails[primary eq true]"#, "emails.primary cannot be filtered")]
    #[case(
        r#"emails[type eq "work" and primary eq true]"#,
        "emails.primary cannot be filtered"
    )]
    #[case(
        r#"phoneNumbers[value sw "1" and value ew "2"]"#,
        "cannot be expressed in LDAP"
    )]
    #[case(
        r#"phoneNumbers[type eq "fax" and value eq "1"]"#,
        "no matching rule for facsimileTelephoneNumber"
    )]
    #[case(
        r#"phoneNumbers[type eq "fax" and value co "1"]"#,
        "only \"pr\" can be used"
    )]
    #[case(r#"emails.value[type eq "work"]"#, "not a multi-valued attribute")]
    #[case(r#"manager eq "x""#, "filtering on manager is not supported")]
    #[case(r#"password eq "secret""#, "password cannot be filtered")]
    #[case(r#"groups[value eq "x"]"#, "filtering on groups is not supported")]
    #[case(r#"meta.resourceType co 5"#, "expected a string, found a number")]
    fn refuses(#[case] filter: &str, #[case] reason: &str) {
        match user_ldap(filter) {
            Ok(out) => panic!("{filter} translated to {out}"),
            Err(e) => assert!(e.to_string().contains(reason), "{filter}: {e}"),
        }
    }

    #[test]
    fn external_id_needs_a_configured_attribute() {
        let f = parse_filter(r#"externalId eq "x""#).expect("valid");
        assert_eq!(
            to_ldap(&f, &DefaultUserMapping::default()).map_err(|e| e.to_string()),
            Err("externalId is not stored, so it cannot be filtered".to_owned())
        );
    }

    #[test]
    fn single_valued_complex_value_path_is_its_sub_attributes() {
        assert_eq!(
            user_ldap(r#"name[givenName eq "Barbara" and familyName eq "Jensen"]"#),
            Ok("(&(givenName=Barbara)(sn=Jensen))".to_owned())
        );
        assert_eq!(
            user_ldap(r#"name[not (givenName eq "B")]"#),
            Ok("(!(givenName=B))".to_owned())
        );
        assert!(user_ldap(r#"name[nickName eq "x"]"#).is_err());
    }

    /// Values from the client never change the filter's structure.
    #[rstest]
    #[case("*)(uid=*", r"(uid=\2a\29\28uid=\2a)")]
    #[case(")(|(objectClass=*", r"(uid=\29\28|\28objectClass=\2a)")]
    #[case("back\\slash", r"(uid=back\5cslash)")]
    #[case("nul\u{0}byte", r"(uid=nul\00byte)")]
    #[case("\\2a", r"(uid=\5c2a)")]
    #[case("*", r"(uid=\2a)")]
    #[case("Jürgen 李", "(uid=Jürgen 李)")]
    fn values_are_escaped(#[case] value: &str, #[case] ldap: &str) {
        let f = Filter::compare(
            AttrPath::new("userName"),
            CompareOp::Eq,
            CompValue::string(value),
        );
        let out = to_ldap(&f, &user()).expect("translates");
        assert_eq!(out, ldap);
        assert!(is_valid_filter(&out));
        // and through the parser, with JSON escapes
        let text = f.to_string();
        assert_eq!(
            to_ldap(&parse_filter(&text).expect("reparses"), &user()),
            Ok(out)
        );
    }

    #[test]
    fn injection_in_substrings_and_value_paths_stays_escaped() {
        for (filter, ldap) in [
            (r#"userName co "*)(uid=*""#, r"(uid=*\2a\29\28uid=\2a*)"),
            (r#"userName sw ")(|(a=*""#, r"(uid=\29\28|\28a=\2a*)"),
            (
                r#"emails[type eq "work"].value eq "x)(mail=*""#,
                r"(mail=x\29\28mail=\2a)",
            ),
            (
                r#"phoneNumbers[value ew "\\"]"#,
                r"(|(telephoneNumber=*\5c)(mobile=*\5c)(homePhone=*\5c)(pager=*\5c))",
            ),
        ] {
            let out = user_ldap(filter).expect(filter);
            assert_eq!(out, ldap, "{filter}");
            assert!(is_valid_filter(&out), "{out}");
        }
    }

    /// A mapping with bad LDAP names or bad custom output is a server error, never sent.
    #[test]
    fn broken_mappings_are_caught() {
        struct Broken;
        impl FilterMapping for Broken {
            fn attribute(&self, path: &AttrPath) -> Option<Target> {
                if path.name_is("a") {
                    Some(Target::attribute("uid)(x=*", Syntax::CaseIgnoreString))
                } else {
                    Some(Target::custom(|_| Ok("uid=*".to_owned())))
                }
            }
        }
        for f in ["a pr", "b pr"] {
            let f = parse_filter(f).expect("valid");
            assert!(matches!(
                to_ldap(&f, &Broken),
                Err(TranslateError::InvalidMapping(_))
            ));
        }
    }

    #[test]
    fn integer_and_dn_syntaxes() {
        struct M;
        impl FilterMapping for M {
            fn attribute(&self, path: &AttrPath) -> Option<Target> {
                if path.name_is("n") {
                    Some(Target::attribute("uidNumber", Syntax::Integer))
                } else if path.name_is("flag") {
                    Some(Target::attribute("x-flag", Syntax::Boolean))
                } else {
                    Some(Target::attribute("seeAlso", Syntax::Dn))
                }
            }
        }
        let t = |s: &str| to_ldap(&parse_filter(s).expect(s), &M).map_err(|e| e.to_string());
        assert_eq!(
            t("n gt 1000"),
            Ok("(&(uidNumber>=1000)(!(uidNumber=1000)))".into())
        );
        assert_eq!(t("n le -5"), Ok("(uidNumber<=-5)".into()));
        assert!(t("n eq 1.5").is_err_and(|e| e.contains("expected an integer")));
        assert!(t(r#"n eq "1""#).is_err_and(|e| e.contains("expected an integer")));
        assert!(t(r#"n co "1""#).is_err());
        assert_eq!(t("flag eq true"), Ok("(x-flag=TRUE)".into()));
        assert_eq!(t("flag ne false"), Ok("(!(x-flag=FALSE))".into()));
        assert!(t("flag ge false").is_err_and(|e| e.contains("booleans have no order")));
        assert_eq!(
            t(r#"d eq "cn=a\\,b,dc=x""#),
            Ok(r"(seeAlso=cn=a\5c,b,dc=x)".into())
        );
        assert!(t(r#"d sw "cn=""#).is_err());
    }

    #[rstest]
    #[case(r#"displayName eq "Group""#, "(cn=Group)")]
    #[case(r#"displayName sw "Adm""#, "(cn=Adm*)")]
    #[case(r#"meta.resourceType eq "Group""#, "(objectClass=*)")]
    #[case(r#"members pr"#, "(member=*)")]
    #[case(
        r#"urn:ietf:params:scim:schemas:core:2.0:Group:displayName eq "x""#,
        "(cn=x)"
    )]
    fn translates_groups(#[case] filter: &str, #[case] ldap: &str) {
        let f = parse_filter(filter).expect(filter);
        assert_eq!(
            to_ldap(&f, &DefaultGroupMapping::default()),
            Ok(ldap.to_owned())
        );
    }

    #[test]
    fn members_need_id_resolution() {
        let groups = DefaultGroupMapping::default();
        let f = parse_filter(r#"id eq "6c5bb468-14b2-4183-baf2-06d523e03bd3" and members eq "u1""#)
            .expect("valid");
        assert_eq!(
            to_ldap(&f, &groups),
            Err(TranslateError::UnresolvedReference {
                attribute: "members.value".into(),
                id: "u1".into()
            })
        );
        assert!(to_ldap(&f, &groups).is_err_and(|e| e.to_string().contains("needs id resolution")));

        let f = parse_filter(
            r#"members eq "u1" or members[value eq "u2"] or members.value eq "u1" or not (members eq "u3")"#,
        )
        .expect("valid");
        // the ids the service must look up, once each
        let ids = references(&f, &groups);
        assert_eq!(
            ids.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>(),
            ["u1", "u2", "u3"]
        );
        assert!(to_ldap(&f, &groups).is_err());
        // `ne` on a member is refused (it would have to hold for one value) before any
        // id is asked for
        let f = parse_filter(r#"members ne "u3""#).expect("valid");
        assert!(references(&f, &groups).is_empty());
        assert!(to_ldap(&f, &groups).is_err_and(|e| e.to_string().contains("one value")));

        let f =
            parse_filter(r#"members eq "u1" or members[value eq "u2"] or members.value eq "u3""#)
                .expect("valid");
        let resolved = HashMap::from([
            (
                "u1".to_owned(),
                Reference::Dn("uid=bob,ou=people,dc=example,dc=org".to_owned()),
            ),
            ("u2".to_owned(), Reference::NotFound),
            (
                "u3".to_owned(),
                Reference::Dn("cn=x*)(y,dc=example".to_owned()),
            ),
        ]);
        assert_eq!(
            to_ldap(&f, &WithReferences::new(&groups, resolved)),
            Ok(r"(|(member=uid=bob,ou=people,dc=example,dc=org)(member=cn=x\2a\29\28y,dc=example))".to_owned())
        );
        let only_missing = HashMap::from([("u2".to_owned(), Reference::NotFound)]);
        let f = parse_filter(r#"members eq "u2""#).expect("valid");
        assert_eq!(
            to_ldap(&f, &WithReferences::new(&groups, only_missing)),
            Ok("(!(objectClass=*))".to_owned())
        );
        assert!(user_ldap(r#"members co "u""#).is_err());
        let f = parse_filter(r#"members co "u""#).expect("valid");
        assert!(to_ldap(&f, &groups).is_err_and(|e| e.to_string().contains("only eq, ne and pr")));
    }

    #[test]
    fn generalized_time_conversion() {
        assert_eq!(
            generalized_time("2025-01-01T12:00:00Z").as_deref(),
            Some("20250101120000Z")
        );
        assert_eq!(
            generalized_time("2025-01-01T00:30:00.000+01:00").as_deref(),
            Some("20241231233000Z")
        );
        assert_eq!(
            generalized_time("2025-01-01T12:00:00.123456789Z").as_deref(),
            Some("20250101120000.123456789Z")
        );
        for bad in [
            "2025-01-01",
            "2025-01-01T12:00:00",
            "2025-02-30T12:00:00Z",
            "",
            "x",
        ] {
            assert_eq!(generalized_time(bad), None, "{bad}");
        }
    }

    /// Any parsed filter, with any values, either fails or yields one valid LDAP filter;
    /// the translation never panics.
    mod properties {
        use super::super::super::display::tests as strategies;
        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn translation_is_a_valid_filter_or_an_error(f in strategies::filter()) {
                let outs = [to_ldap(&f, &user()), to_ldap(&f, &DefaultGroupMapping::default())];
                for ldap in outs.into_iter().flatten() {
                    prop_assert!(is_valid_filter(&ldap), "{} → {}", f, ldap);
                }
            }

            #[test]
            fn any_value_stays_one_assertion(v in any::<String>()) {
                let f = Filter::compare(AttrPath::new("userName"), CompareOp::Eq, CompValue::String(v));
                let out = to_ldap(&f, &user());
                prop_assert!(out.is_ok());
                let out = out.unwrap_or_default();
                prop_assert!(is_valid_filter(&out));
                let inner = &out[1..out.len() - 1];
                prop_assert!(!inner.contains(['(', ')', '*', '\0']), "{}", out);
            }
        }
    }
}

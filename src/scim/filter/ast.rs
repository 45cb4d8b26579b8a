//! The filter syntax tree (RFC 7644 §3.4.2.2) and attribute paths (RFC 7644 §3.10,
//! RFC 7643 §2.1).
//!
//! Attribute names, sub-attribute names and schema URNs are case-insensitive in SCIM
//! (RFC 7643 §2.1, RFC 7644 §3.4.2.2 "Attribute names and attribute operators used in
//! filters are case insensitive"). The tree keeps the spelling the client sent, so that
//! printing a parsed filter gives back what was meant; comparisons that must ignore case
//! go through [`AttrPath::eq_ignore_case`], [`AttrPath::normalized`] and
//! [`Filter::normalized`]. Operators and the literals `true`, `false`, `null` have no
//! spelling to keep: they are enum variants.

use std::fmt;

/// A SCIM filter (RFC 7644 §3.4.2.2).
///
/// `And` and `Or` are binary; the parser builds chains left-associatively
/// (`a and b and c` is `And(And(a, b), c)`), and [`Display`](fmt::Display) prints
/// parentheses wherever they are needed to get the same tree back.
///
/// Inside [`Filter::ValuePath`] the attribute paths of the inner filter are relative to
/// the multi-valued attribute: in `emails[type eq "work"]` the inner path is `type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `attrPath compareOp compValue`, e.g. `userName eq "bjensen"`.
    Compare {
        /// The attribute compared.
        path: AttrPath,
        /// The operator.
        op: CompareOp,
        /// The value compared with.
        value: CompValue,
    },
    /// `attrPath pr`: the attribute has a non-empty value.
    Present(AttrPath),
    /// `left and right`.
    And(Box<Filter>, Box<Filter>),
    /// `left or right`.
    Or(Box<Filter>, Box<Filter>),
    /// `not (filter)`.
    Not(Box<Filter>),
    /// `attrPath[valFilter]`: some value of a multi-valued (complex) attribute matches
    /// the inner filter, e.g. `emails[type eq "work" and value co "@example.com"]`.
    ValuePath {
        /// The multi-valued attribute, e.g. `emails`.
        path: AttrPath,
        /// The filter each value is tested with; its paths are sub-attribute names.
        filter: Box<Filter>,
    },
}

impl Filter {
    /// `path op value`.
    pub fn compare(path: AttrPath, op: CompareOp, value: CompValue) -> Self {
        Self::Compare { path, op, value }
    }

    /// `path pr`.
    pub fn present(path: AttrPath) -> Self {
        Self::Present(path)
    }

    /// `left and right`.
    pub fn and(left: Filter, right: Filter) -> Self {
        Self::And(Box::new(left), Box::new(right))
    }

    /// `left or right`.
    pub fn or(left: Filter, right: Filter) -> Self {
        Self::Or(Box::new(left), Box::new(right))
    }

    /// `not (inner)`.
    pub fn negate(inner: Filter) -> Self {
        Self::Not(Box::new(inner))
    }

    /// `path[inner]`.
    pub fn value_path(path: AttrPath, inner: Filter) -> Self {
        Self::ValuePath {
            path,
            filter: Box::new(inner),
        }
    }

    /// Parse a filter (see [`super::parse_filter`]).
    pub fn parse(input: &str) -> Result<Self, super::ParseError> {
        super::parse_filter(input)
    }

    /// The same filter with every attribute name, sub-attribute name and URN in ASCII
    /// lower case, for lookups and comparisons that must ignore case. Values are kept.
    pub fn normalized(&self) -> Filter {
        match self {
            Self::Compare { path, op, value } => Self::Compare {
                path: path.normalized(),
                op: *op,
                value: value.clone(),
            },
            Self::Present(path) => Self::Present(path.normalized()),
            Self::And(l, r) => Self::and(l.normalized(), r.normalized()),
            Self::Or(l, r) => Self::or(l.normalized(), r.normalized()),
            Self::Not(f) => Self::negate(f.normalized()),
            Self::ValuePath { path, filter } => {
                Self::value_path(path.normalized(), filter.normalized())
            }
        }
    }

    /// Structural equality that ignores the case of attribute names and URNs (values are
    /// compared exactly).
    pub fn eq_ignore_case(&self, other: &Filter) -> bool {
        match (self, other) {
            (
                Self::Compare { path, op, value },
                Self::Compare {
                    path: p2,
                    op: o2,
                    value: v2,
                },
            ) => path.eq_ignore_case(p2) && op == o2 && value == v2,
            (Self::Present(a), Self::Present(b)) => a.eq_ignore_case(b),
            (Self::And(a, b), Self::And(c, d)) | (Self::Or(a, b), Self::Or(c, d)) => {
                a.eq_ignore_case(c) && b.eq_ignore_case(d)
            }
            (Self::Not(a), Self::Not(b)) => a.eq_ignore_case(b),
            (
                Self::ValuePath { path, filter },
                Self::ValuePath {
                    path: p2,
                    filter: f2,
                },
            ) => path.eq_ignore_case(p2) && filter.eq_ignore_case(f2),
            _ => false,
        }
    }
}

impl std::str::FromStr for Filter {
    type Err = super::ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        super::parse_filter(s)
    }
}

/// An attribute path (RFC 7644 §3.10): `[URI ":"] ATTRNAME ["." subAttr]`, e.g.
/// `userName`, `name.familyName`,
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber`.
///
/// The URN is everything before the last colon, the name what follows it. A path that
/// is only a schema URN (`urn:…:enterprise:2.0:User`) therefore reads as URN
/// `urn:…:enterprise:2.0` with name `User`; [`AttrPath::full_urn`] gives the whole
/// string back for such a check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrPath {
    /// The schema URN, without the trailing colon, e.g.
    /// `urn:ietf:params:scim:schemas:core:2.0:User`.
    pub urn: Option<String>,
    /// The attribute name, e.g. `name` or `userName`.
    pub name: String,
    /// The sub-attribute name, e.g. `familyName` in `name.familyName`.
    pub sub_attr: Option<String>,
}

impl AttrPath {
    /// An unqualified attribute, e.g. `userName`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            urn: None,
            name: name.into(),
            sub_attr: None,
        }
    }

    /// A URN-qualified attribute, e.g. `(ENTERPRISE_USER, "employeeNumber")`.
    pub fn with_urn(urn: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            urn: Some(urn.into()),
            name: name.into(),
            sub_attr: None,
        }
    }

    /// This path with a sub-attribute, e.g. `AttrPath::new("name").with_sub_attr("familyName")`.
    pub fn with_sub_attr(mut self, sub_attr: impl Into<String>) -> Self {
        self.sub_attr = Some(sub_attr.into());
        self
    }

    /// The path without its sub-attribute (`name.familyName` → `name`).
    pub fn parent(&self) -> AttrPath {
        Self {
            urn: self.urn.clone(),
            name: self.name.clone(),
            sub_attr: None,
        }
    }

    /// Equality ignoring ASCII case in the URN, the name and the sub-attribute.
    pub fn eq_ignore_case(&self, other: &AttrPath) -> bool {
        opt_eq_ignore_case(self.urn.as_deref(), other.urn.as_deref())
            && self.name.eq_ignore_ascii_case(&other.name)
            && opt_eq_ignore_case(self.sub_attr.as_deref(), other.sub_attr.as_deref())
    }

    /// The same path in ASCII lower case: the normalised form to use as a map key.
    pub fn normalized(&self) -> AttrPath {
        Self {
            urn: self.urn.as_ref().map(|u| u.to_ascii_lowercase()),
            name: self.name.to_ascii_lowercase(),
            sub_attr: self.sub_attr.as_ref().map(|s| s.to_ascii_lowercase()),
        }
    }

    /// Whether the name is `name` (ignoring case), whatever the URN and sub-attribute.
    pub fn name_is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// Whether the sub-attribute is `sub` (ignoring case); `None` matches no
    /// sub-attribute.
    pub fn sub_attr_is(&self, sub: Option<&str>) -> bool {
        opt_eq_ignore_case(self.sub_attr.as_deref(), sub)
    }

    /// Whether the URN is absent or equal to `urn` (ignoring case): the test for "this
    /// attribute belongs to schema `urn`" when unqualified names default to it.
    pub fn in_schema(&self, urn: &str) -> bool {
        self.urn
            .as_deref()
            .is_none_or(|u| u.eq_ignore_ascii_case(urn))
    }

    /// The whole path up to the name, as written: `urn:…:User:userName` or `userName`
    /// (no sub-attribute).
    pub fn full_urn(&self) -> String {
        match &self.urn {
            Some(u) => format!("{u}:{}", self.name),
            None => self.name.clone(),
        }
    }
}

fn opt_eq_ignore_case(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => false,
    }
}

/// A comparison operator (RFC 7644 §3.4.2.2, table 3). `pr` is not one of them: it has
/// no value and is [`Filter::Present`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// `eq`: equal.
    Eq,
    /// `ne`: not equal.
    Ne,
    /// `co`: contains.
    Co,
    /// `sw`: starts with.
    Sw,
    /// `ew`: ends with.
    Ew,
    /// `gt`: greater than.
    Gt,
    /// `lt`: less than.
    Lt,
    /// `ge`: greater than or equal to.
    Ge,
    /// `le`: less than or equal to.
    Le,
}

impl CompareOp {
    /// Whether `a op b` holds when comparing `a` with `b` gave `ord`; the substring
    /// operators (`co`, `sw`, `ew`) never hold on an ordering.
    pub fn holds_for(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match self {
            Self::Eq => ord == Equal,
            Self::Ne => ord != Equal,
            Self::Gt => ord == Greater,
            Self::Lt => ord == Less,
            Self::Ge => ord != Less,
            Self::Le => ord != Greater,
            Self::Co | Self::Sw | Self::Ew => false,
        }
    }

    /// Every operator, in the RFC's order.
    pub const ALL: [CompareOp; 9] = [
        Self::Eq,
        Self::Ne,
        Self::Co,
        Self::Sw,
        Self::Ew,
        Self::Gt,
        Self::Lt,
        Self::Ge,
        Self::Le,
    ];

    /// The keyword in canonical (lower) case.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Ne => "ne",
            Self::Co => "co",
            Self::Sw => "sw",
            Self::Ew => "ew",
            Self::Gt => "gt",
            Self::Lt => "lt",
            Self::Ge => "ge",
            Self::Le => "le",
        }
    }

    /// The operator for a keyword, ignoring ASCII case (`EQ`, `Eq` and `eq` are `Eq`).
    pub fn from_keyword(word: &str) -> Option<CompareOp> {
        Self::ALL
            .into_iter()
            .find(|op| op.as_str().eq_ignore_ascii_case(word))
    }

    /// `co`, `sw`, `ew`: defined for strings only.
    pub fn is_substring(self) -> bool {
        matches!(self, Self::Co | Self::Sw | Self::Ew)
    }

    /// `gt`, `lt`, `ge`, `le`: need an ordering.
    pub fn is_ordering(self) -> bool {
        matches!(self, Self::Gt | Self::Lt | Self::Ge | Self::Le)
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A comparison value (RFC 7644 §3.4.2.2 `compValue`): a JSON literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CompValue {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A JSON number, kept as written.
    Number(JsonNumber),
    /// A JSON string, unescaped.
    String(String),
}

impl CompValue {
    /// A string value.
    pub fn string(s: impl Into<String>) -> Self {
        Self::String(s.into())
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// What kind of value this is, for error messages: `a string`, `a number`, ….
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Number(_) => "a number",
            Self::String(_) => "a string",
        }
    }
}

/// A JSON number (RFC 8259 §6) kept exactly as written, so `1.10` and
/// `12345678901234567890` survive a round trip that a `f64` would change.
///
/// Two numbers are equal when they are written the same; compare them numerically with
/// [`JsonNumber::as_i64`] / [`JsonNumber::as_f64`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JsonNumber(String);

impl JsonNumber {
    /// `text` if it is a JSON number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    pub fn new(text: &str) -> Option<JsonNumber> {
        is_json_number(text).then(|| JsonNumber(text.to_owned()))
    }

    /// The number as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value, if it is written as an integer (no fraction, no exponent) that fits.
    pub fn as_i64(&self) -> Option<i64> {
        if self.0.contains(['.', 'e', 'E']) {
            return None;
        }
        self.0.parse().ok()
    }

    /// The value as a float (may round; infinite for huge exponents).
    pub fn as_f64(&self) -> f64 {
        self.0.parse().unwrap_or(f64::NAN)
    }
}

impl From<i64> for JsonNumber {
    fn from(n: i64) -> Self {
        JsonNumber(n.to_string())
    }
}

impl fmt::Display for JsonNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The JSON number grammar, on the whole of `s`.
pub(super) fn is_json_number(s: &str) -> bool {
    json_number_len(s) == Some(s.len())
}

/// The length of the longest JSON number at the start of `s`, if there is one.
pub(super) fn json_number_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        _ => return None,
    }
    if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if b.get(j).is_some_and(u8::is_ascii_digit) {
            while b.get(j).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
            i = j;
        }
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_paths_compare_ignoring_case() {
        let a = AttrPath::with_urn("urn:ietf:params:scim:schemas:core:2.0:User", "userName");
        let b = AttrPath::with_urn("URN:IETF:params:scim:schemas:core:2.0:user", "USERNAME");
        assert!(a.eq_ignore_case(&b));
        assert_ne!(a, b);
        assert_eq!(a.normalized(), b.normalized());
        assert!(!a.eq_ignore_case(&AttrPath::new("userName")));
        assert!(
            AttrPath::new("Name")
                .with_sub_attr("FamilyName")
                .sub_attr_is(Some("familyname"))
        );
        assert!(!AttrPath::new("name").sub_attr_is(Some("familyName")));
        assert!(AttrPath::new("x").in_schema("urn:a"));
        assert!(!AttrPath::with_urn("urn:b", "x").in_schema("urn:a"));
        assert_eq!(
            a.full_urn(),
            "urn:ietf:params:scim:schemas:core:2.0:User:userName"
        );
    }

    #[test]
    fn operators_ignore_case() {
        assert_eq!(CompareOp::from_keyword("EQ"), Some(CompareOp::Eq));
        assert_eq!(CompareOp::from_keyword("gE"), Some(CompareOp::Ge));
        assert_eq!(CompareOp::from_keyword("pr"), None);
        assert_eq!(CompareOp::from_keyword("equals"), None);
    }

    #[test]
    fn json_numbers() {
        for ok in [
            "0", "-0", "1", "-12", "1.5", "1e5", "1E+5", "-0.25e-3", "10",
        ] {
            assert!(JsonNumber::new(ok).is_some(), "{ok}");
        }
        for bad in [
            "", "-", "01", "1.", ".5", "1e", "+1", "1.5.3", "0x1", "NaN", "1 ",
        ] {
            assert!(JsonNumber::new(bad).is_none(), "{bad}");
        }
        assert_eq!(JsonNumber::new("42").and_then(|n| n.as_i64()), Some(42));
        assert_eq!(JsonNumber::new("4.2").and_then(|n| n.as_i64()), None);
        assert_eq!(json_number_len("12and"), Some(2));
        assert_eq!(json_number_len("1.x"), Some(1));
    }

    #[test]
    fn normalized_filter_lowercases_names_not_values() {
        let f = Filter::and(
            Filter::compare(
                AttrPath::new("UserName"),
                CompareOp::Eq,
                CompValue::string("Bob"),
            ),
            Filter::value_path(
                AttrPath::new("Emails"),
                Filter::present(AttrPath::new("Value")),
            ),
        );
        let n = f.normalized();
        assert_eq!(
            n,
            Filter::and(
                Filter::compare(
                    AttrPath::new("username"),
                    CompareOp::Eq,
                    CompValue::string("Bob")
                ),
                Filter::value_path(
                    AttrPath::new("emails"),
                    Filter::present(AttrPath::new("value"))
                ),
            )
        );
        assert!(f.eq_ignore_case(&n));
        assert!(!f.eq_ignore_case(&Filter::present(AttrPath::new("userName"))));
    }
}

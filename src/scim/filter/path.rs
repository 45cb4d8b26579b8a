//! PATCH operation paths (RFC 7644 §3.5.2):
//!
//! ```text
//! PATH = attrPath / valuePath [subAttr]
//! ```
//!
//! e.g. `name.familyName`, `members[value eq "2819c223-7f76-453a-919d-413861904646"]`,
//! `emails[type eq "work"].value`,
//! `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager`. The attribute path
//! and the value filter use the filter grammar's rules ([`super::parser`]), so the same
//! case rules, whitespace tolerance and limits apply, and no input panics.

use std::fmt;

use super::ast::{AttrPath, Filter};
use super::parser::{self, Input, PResult, ParseError};

/// A PATCH `path` (RFC 7644 §3.5.2).
///
/// - `name.familyName` is `attr = name.familyName`, no filter, no `sub_attr`.
/// - `emails[type eq "work"].value` is `attr = emails`, `filter = type eq "work"`,
///   `sub_attr = value`.
///
/// `sub_attr` is only ever set together with `filter` by the parser (without a filter
/// the sub-attribute belongs in `attr`); the other combination prints as if it were in
/// `attr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchPath {
    /// The attribute (possibly URN-qualified, possibly with a sub-attribute when there is
    /// no filter).
    pub attr: AttrPath,
    /// The value filter in brackets, selecting values of a multi-valued attribute.
    pub filter: Option<Filter>,
    /// The sub-attribute after the brackets.
    pub sub_attr: Option<String>,
}

impl PatchPath {
    /// Parse a PATCH path (see [`parse_path`]).
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        parse_path(input)
    }
}

impl std::str::FromStr for PatchPath {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_path(s)
    }
}

impl fmt::Display for PatchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.attr)?;
        if let Some(filter) = &self.filter {
            write!(f, "[{filter}]")?;
        }
        if let Some(sub) = &self.sub_attr {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// Parse a PATCH operation's `path` (RFC 7644 §3.5.2). Surrounding whitespace is allowed.
/// Errors use the same [`ParseError`] as filters (a SCIM `invalidPath` error).
pub fn parse_path(input: &str) -> Result<PatchPath, ParseError> {
    parser::run(input, path)
}

/// `PATH = attrPath / valuePath [subAttr]`.
fn path(i: &mut Input<'_>) -> PResult<PatchPath> {
    parser::ws(i)?;
    let attr = parser::attr_path(i)?;
    let filter = if i.input.starts_with('[') {
        Some(parser::bracketed(i)?)
    } else {
        None
    };
    let sub_attr = if filter.is_some() && i.input.starts_with('.') {
        Some(parser::sub_attr(i)?.to_owned())
    } else {
        None
    };
    parser::ws(i)?;
    let expected = match (&filter, &sub_attr) {
        (None, _) => "\"[\" or the end of the path",
        (Some(_), None) => "a sub-attribute (\".name\") or the end of the path",
        (Some(_), Some(_)) => "the end of the path",
    };
    parser::end(i, expected)?;
    Ok(PatchPath {
        attr,
        filter,
        sub_attr,
    })
}

#[cfg(test)]
mod tests {
    use super::super::ast::{CompValue, CompareOp};
    use super::super::display::tests as strategies;
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    fn eq(name: &str, value: &str) -> Filter {
        Filter::compare(AttrPath::new(name), CompareOp::Eq, CompValue::string(value))
    }

    #[rstest]
    #[case("userName", AttrPath::new("userName"), None, None)]
    #[case("name.familyName", AttrPath::new("name").with_sub_attr("familyName"), None, None)]
    #[case(
        r#"members[value eq "2819c223-7f76-453a-919d-413861904646"]"#,
        AttrPath::new("members"),
        Some(eq("value", "2819c223-7f76-453a-919d-413861904646")),
        None
    )]
    #[case(
        r#"emails[type eq "work"].value"#,
        AttrPath::new("emails"),
        Some(eq("type", "work")),
        Some("value")
    )]
    #[case(
        r#"addresses[type eq "work" and primary eq true].streetAddress"#,
        AttrPath::new("addresses"),
        Some(Filter::and(
            eq("type", "work"),
            Filter::compare(AttrPath::new("primary"), CompareOp::Eq, CompValue::Bool(true))
        )),
        Some("streetAddress")
    )]
    #[case(
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
        AttrPath::with_urn(ENTERPRISE, "manager"),
        None,
        None
    )]
    #[case(
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        AttrPath::with_urn(ENTERPRISE, "manager").with_sub_attr("value"),
        None,
        None
    )]
    #[case(
        "urn:lockbridge:params:scim:schemas:extension:password:2.0:User:mustChange",
        AttrPath::with_urn(
            "urn:lockbridge:params:scim:schemas:extension:password:2.0:User",
            "mustChange"
        ),
        None,
        None
    )]
    #[case(
        " EMAILS[TYPE EQ \"work\"].VALUE ",
        AttrPath::new("EMAILS"),
        Some(eq("TYPE", "work")),
        Some("VALUE")
    )]
    #[case("members.$ref", AttrPath::new("members").with_sub_attr("$ref"), None, None)]
    fn parses(
        #[case] input: &str,
        #[case] attr: AttrPath,
        #[case] filter: Option<Filter>,
        #[case] sub_attr: Option<&str>,
    ) {
        let expected = PatchPath {
            attr,
            filter,
            sub_attr: sub_attr.map(str::to_owned),
        };
        assert_eq!(parse_path(input), Ok(expected.clone()), "{input}");
        assert_eq!(parse_path(&expected.to_string()), Ok(expected));
    }

    #[rstest]
    #[case(
        "",
        0,
        "an attribute name (a letter, then letters, digits, \"-\" or \"_\")",
        "end of input"
    )]
    #[case("emails[", 7, "an attribute path, \"(\" or \"not (\"", "end of input")]
    #[case(
        r#"emails[type eq "work""#,
        21,
        "\"and\", \"or\" or \"]\"",
        "end of input"
    )]
    #[case(
        r#"emails[type eq "work"]."#,
        23,
        "an attribute name (a letter, then letters, digits, \"-\" or \"_\")",
        "end of input"
    )]
    #[case(
        r#"emails[type eq "work"].value.x"#,
        28,
        "the end of the path",
        "\".x\""
    )]
    #[case(
        r#"emails[type eq "work"]x"#,
        22,
        "a sub-attribute (\".name\") or the end of the path",
        "\"x\""
    )]
    #[case("userName eq \"x\"", 9, "\"[\" or the end of the path", "\"eq\"")]
    #[case(
        "name.a.b",
        6,
        "at most one sub-attribute in an attribute path",
        "\".b\""
    )]
    #[case(
        "emails[value[x pr]]",
        12,
        "a comparison operator (a value filter cannot contain another value path)",
        "\"[\""
    )]
    fn refuses(
        #[case] input: &str,
        #[case] position: usize,
        #[case] expected: &str,
        #[case] found: &str,
    ) {
        let err = parse_path(input).expect_err(input);
        assert_eq!(
            (err.position, err.expected.as_str(), err.found.as_str()),
            (position, expected, found),
            "{input}: {err}"
        );
    }

    fn patch_path() -> impl Strategy<Value = PatchPath> {
        prop_oneof![
            strategies::attr_path().prop_map(|attr| PatchPath {
                attr,
                filter: None,
                sub_attr: None
            }),
            (
                strategies::attr_path(),
                strategies::val_filter(),
                prop::option::of(prop::sample::select(
                    &["value", "display", "$ref", "x-Y_1"][..]
                ))
            )
                .prop_map(|(attr, filter, sub)| PatchPath {
                    attr,
                    filter: Some(filter),
                    sub_attr: sub.map(str::to_owned),
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn display_then_parse_is_identity(p in patch_path()) {
            let printed = p.to_string();
            prop_assert_eq!(parse_path(&printed), Ok(p), "{}", printed);
        }

        #[test]
        fn never_panics_on_strings(s in any::<String>()) {
            let _ = parse_path(&s);
        }

        #[test]
        fn never_panics_on_bytes(b in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_path(&String::from_utf8_lossy(&b));
        }

        #[test]
        fn never_panics_on_path_like_text(s in "[a-zA-Z:.$\\[\\]() \"\\\\0-9_-]{0,64}") {
            if let Ok(p) = parse_path(&s) {
                prop_assert_eq!(parse_path(&p.to_string()), Ok(p));
            }
        }
    }
}

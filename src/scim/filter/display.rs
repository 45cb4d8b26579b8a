//! Printing filters back in canonical RFC 7644 §3.4.2.2 syntax.
//!
//! Canonical means: operators and literals in lower case, one space around operators and
//! keywords, strings as JSON strings (RFC 8259 §7: `"` `\` and control characters
//! escaped, everything else as is), `not (…)` always with its parentheses, and other
//! parentheses only where precedence (`not` > `and` > `or`) or the left-associativity of
//! chains needs them. Attribute names keep their spelling.
//!
//! For every tree the parser can produce, `parse_filter(&f.to_string()) == Ok(f)`: the
//! property tests check it on random trees. A hand-built tree prints back to the same tree
//! when its names are valid `ATTRNAME`s other than `and`, `or`, `not`, its URNs are made of
//! URN characters and start with a letter, it has no value path inside a value path, and
//! it is within the parser's nesting and length limits.

use std::fmt;

use super::ast::{AttrPath, CompValue, Filter};

/// How tightly a node binds: `or` < `and` < everything else.
fn precedence(f: &Filter) -> u8 {
    match f {
        Filter::Or(..) => 1,
        Filter::And(..) => 2,
        _ => 3,
    }
}

/// Print `child` as an operand of a binary node of precedence `parent`, in parentheses
/// when needed: a left operand binding less tightly than the node, or a right operand
/// binding no more tightly (chains are left-associative).
fn operand(f: &mut fmt::Formatter<'_>, child: &Filter, parent: u8, right: bool) -> fmt::Result {
    let p = precedence(child);
    if p < parent || (right && p == parent) {
        write!(f, "({child})")
    } else {
        write!(f, "{child}")
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::Compare { path, op, value } => write!(f, "{path} {op} {value}"),
            Filter::Present(path) => write!(f, "{path} pr"),
            Filter::And(l, r) => {
                operand(f, l, 2, false)?;
                f.write_str(" and ")?;
                operand(f, r, 2, true)
            }
            Filter::Or(l, r) => {
                operand(f, l, 1, false)?;
                f.write_str(" or ")?;
                operand(f, r, 1, true)
            }
            Filter::Not(inner) => write!(f, "not ({inner})"),
            Filter::ValuePath { path, filter } => write!(f, "{path}[{filter}]"),
        }
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        f.write_str(&self.name)?;
        if let Some(sub) = &self.sub_attr {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

impl fmt::Display for CompValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompValue::Null => f.write_str("null"),
            CompValue::Bool(b) => write!(f, "{b}"),
            CompValue::Number(n) => write!(f, "{n}"),
            CompValue::String(s) => write_json_string(f, s),
        }
    }
}

/// `s` as a JSON string literal.
pub(super) fn write_json_string(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            '\u{8}' => out.write_str("\\b")?,
            '\u{c}' => out.write_str("\\f")?,
            c if c < ' ' => write!(out, "\\u{:04x}", u32::from(c))?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::ast::{CompareOp, JsonNumber};
    use super::super::parse_filter;
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    #[rstest]
    #[case(r#"userName eq "bjensen""#, r#"userName eq "bjensen""#)]
    #[case(r#"USERNAME EQ "x""#, r#"USERNAME eq "x""#)]
    #[case("  title   PR ", "title pr")]
    #[case("a pr and b pr and c pr", "a pr and b pr and c pr")]
    #[case("a pr and (b pr and c pr)", "a pr and (b pr and c pr)")]
    #[case("(a pr or b pr) and c pr", "(a pr or b pr) and c pr")]
    #[case("a pr or (b pr and c pr)", "a pr or b pr and c pr")]
    #[case("a pr or (b pr or c pr)", "a pr or (b pr or c pr)")]
    #[case("not(a pr or b pr)", "not (a pr or b pr)")]
    #[case("x eq TRUE", "x eq true")]
    #[case("x eq Null", "x eq null")]
    #[case("x eq -1.50E+3", "x eq -1.50E+3")]
    #[case(r#"x eq "\u0041\/\u0001\t""#, r#"x eq "A/\u0001\t""#)]
    #[case(
        r#"emails[type eq "work"].value eq "user@contoso.com""#,
        r#"emails[type eq "work" and value eq "user@contoso.com"]"#
    )]
    #[case(
        "urn:ietf:params:scim:schemas:core:2.0:User:name.familyName pr",
        "urn:ietf:params:scim:schemas:core:2.0:User:name.familyName pr"
    )]
    fn prints_canonically(#[case] input: &str, #[case] printed: &str) {
        let f = parse_filter(input).expect(input);
        assert_eq!(f.to_string(), printed);
        assert_eq!(parse_filter(printed), Ok(f));
    }

    const NAMES: &[&str] = &[
        "userName",
        "emails",
        "name",
        "X-custom_1",
        "notes",
        "$ref",
        "active",
        "ORDER",
    ];
    const URNS: &[&str] = &[
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        "urn:lockbridge:params:scim:schemas:extension:password:2.0:User",
        "URN:x",
    ];

    fn name() -> impl Strategy<Value = String> {
        prop::sample::select(NAMES).prop_map(str::to_owned)
    }

    pub(in crate::scim::filter) fn attr_path() -> impl Strategy<Value = AttrPath> {
        (
            prop::option::weighted(0.2, prop::sample::select(URNS).prop_map(str::to_owned)),
            prop::sample::select(&NAMES[..5]).prop_map(str::to_owned),
            prop::option::weighted(0.3, name()),
        )
            .prop_map(|(urn, name, sub_attr)| AttrPath {
                urn,
                name,
                sub_attr,
            })
    }

    fn comp_value() -> impl Strategy<Value = CompValue> {
        prop_oneof![
            Just(CompValue::Null),
            any::<bool>().prop_map(CompValue::Bool),
            any::<i64>().prop_map(|n| CompValue::Number(JsonNumber::from(n))),
            any::<f64>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_filter_map("a JSON number", |x| JsonNumber::new(&format!("{x:e}")))
                .prop_map(CompValue::Number),
            "[\"\\\\/a-zA-Z0-9 \u{0}-\u{1f}\u{7f}é€李😀\u{2028}]{0,12}".prop_map(CompValue::String),
            any::<String>().prop_map(CompValue::String),
        ]
    }

    fn atom() -> impl Strategy<Value = Filter> {
        prop_oneof![
            4 => (attr_path(), prop::sample::select(&CompareOp::ALL[..]), comp_value())
                .prop_map(|(path, op, value)| Filter::Compare { path, op, value }),
            1 => attr_path().prop_map(Filter::Present),
        ]
    }

    /// Filters without value paths (what may appear inside brackets).
    pub(in crate::scim::filter) fn val_filter() -> impl Strategy<Value = Filter> {
        atom().prop_recursive(5, 24, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::and(a, b)),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::or(a, b)),
                inner.prop_map(Filter::negate),
            ]
        })
    }

    pub(in crate::scim::filter) fn filter() -> impl Strategy<Value = Filter> {
        let leaf = prop_oneof![
            3 => atom(),
            1 => (attr_path(), val_filter()).prop_map(|(p, f)| Filter::value_path(p, f)),
        ];
        leaf.prop_recursive(5, 32, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::and(a, b)),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::or(a, b)),
                inner.prop_map(Filter::negate),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn display_then_parse_is_identity(f in filter()) {
            let printed = f.to_string();
            prop_assert_eq!(parse_filter(&printed), Ok(f), "{}", printed);
        }
    }
}

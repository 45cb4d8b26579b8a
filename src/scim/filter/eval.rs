//! Evaluating a [`Filter`] against JSON, for PATCH value paths (RFC 7644 §3.5.2):
//! `emails[type eq "work"]` selects the `emails` values whose `type` is `work`.
//!
//! The element is one value of a multi-valued attribute: an object for a complex
//! attribute (`{"value": "…", "type": "work"}`), or the value itself for a simple one
//! (then the path `value` refers to it). Names are matched ignoring case; strings are
//! compared ignoring case unless the caller says the attribute is `caseExact`. Two strings
//! that are both RFC 3339 dateTimes compare as instants. A comparison between values of
//! different JSON types is false (so `ne` is true), never an error: a value path that
//! selects nothing is the caller's business.

use chrono::{DateTime, FixedOffset};
use serde_json::Value;

use super::ast::{AttrPath, CompValue, CompareOp, Filter};

/// Whether `element` satisfies `filter`. `case_exact` says, for a path as written in the
/// filter, whether its strings compare exactly (RFC 7643 `caseExact`).
pub fn evaluate(filter: &Filter, element: &Value, case_exact: &dyn Fn(&AttrPath) -> bool) -> bool {
    match filter {
        Filter::And(a, b) => evaluate(a, element, case_exact) && evaluate(b, element, case_exact),
        Filter::Or(a, b) => evaluate(a, element, case_exact) || evaluate(b, element, case_exact),
        Filter::Not(a) => !evaluate(a, element, case_exact),
        Filter::Present(path) => lookup(element, path).is_some_and(|v| is_present(&v)),
        Filter::Compare { path, op, value } => {
            let found = lookup(element, path);
            compare(found.as_ref(), *op, value, case_exact(path))
        }
        Filter::ValuePath { path, filter } => match lookup(element, path) {
            Some(Value::Array(items)) => items.iter().any(|i| evaluate(filter, i, case_exact)),
            Some(v @ Value::Object(_)) => evaluate(filter, &v, case_exact),
            _ => false,
        },
    }
}

/// The value at `path` in `element` (any case); for a multi-valued attribute with a
/// sub-attribute, the array of its values' sub-attributes.
fn lookup(element: &Value, path: &AttrPath) -> Option<Value> {
    let Value::Object(map) = element else {
        // A simple multi-valued attribute's value: `value` is the element itself.
        return (path.urn.is_none() && path.sub_attr.is_none() && path.name_is("value"))
            .then(|| element.clone());
    };
    let container = match &path.urn {
        Some(urn) => get_ci(map, urn)?,
        None => element,
    };
    let Value::Object(container) = container else {
        return None;
    };
    let v = get_ci(container, &path.name)?;
    match &path.sub_attr {
        None => Some(v.clone()),
        Some(sub) => match v {
            Value::Object(o) => get_ci(o, sub).cloned(),
            Value::Array(items) => Some(Value::Array(
                items
                    .iter()
                    .filter_map(|i| i.as_object().and_then(|o| get_ci(o, sub)).cloned())
                    .collect(),
            )),
            _ => None,
        },
    }
}

fn get_ci<'a>(map: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// RFC 7644 §3.4.2.2 `pr`: "has a non-empty value, or … contains a non-empty node".
fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => a.iter().any(is_present),
        Value::Object(o) => o.values().any(is_present),
        _ => true,
    }
}

fn compare(found: Option<&Value>, op: CompareOp, value: &CompValue, exact: bool) -> bool {
    if op == CompareOp::Ne {
        return !compare(found, CompareOp::Eq, value, exact);
    }
    let found = match found {
        None | Some(Value::Null) => return op == CompareOp::Eq && *value == CompValue::Null,
        Some(v) => v,
    };
    if *value == CompValue::Null {
        return op == CompareOp::Eq && !is_present(found);
    }
    match found {
        Value::Array(items) => items.iter().any(|i| scalar(i, op, value, exact)),
        other => scalar(other, op, value, exact),
    }
}

/// One JSON value against one comparison value; a complex value compares by its `value`.
fn scalar(found: &Value, op: CompareOp, value: &CompValue, exact: bool) -> bool {
    match (found, value) {
        (Value::Object(o), _) => get_ci(o, "value").is_some_and(|v| scalar(v, op, value, exact)),
        (Value::String(a), CompValue::String(b)) => strings(a, op, b, exact),
        (Value::Bool(a), CompValue::Bool(b)) => op == CompareOp::Eq && a == b,
        // Lenient: "True" / "false" as sent by some clients.
        (Value::String(a), CompValue::Bool(b)) => {
            op == CompareOp::Eq && a.eq_ignore_ascii_case(if *b { "true" } else { "false" })
        }
        (Value::Number(a), CompValue::Number(b)) => {
            let (Some(a), b) = (a.as_f64(), b.as_f64()) else {
                return false;
            };
            a.partial_cmp(&b).is_some_and(|ord| op.holds_for(ord))
        }
        _ => false,
    }
}

fn strings(a: &str, op: CompareOp, b: &str, exact: bool) -> bool {
    if !op.is_substring()
        && let (Some(x), Some(y)) = (date_time(a), date_time(b))
    {
        return op.holds_for(x.cmp(&y));
    }
    let (a, b) = if exact {
        (a.to_owned(), b.to_owned())
    } else {
        (a.to_lowercase(), b.to_lowercase())
    };
    match op {
        CompareOp::Co => a.contains(&b),
        CompareOp::Sw => a.starts_with(&b),
        CompareOp::Ew => a.ends_with(&b),
        _ => op.holds_for(a.cmp(&b)),
    }
}

fn date_time(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(s).ok()
}

#[cfg(test)]
mod tests {
    use super::super::parse_filter;
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;
    use serde_json::json;

    fn ignore_case(_: &AttrPath) -> bool {
        false
    }

    fn eval(filter: &str, element: &Value) -> bool {
        let f = parse_filter(filter).expect(filter);
        evaluate(&f, element, &ignore_case)
    }

    #[rstest]
    #[case(r#"type eq "work""#, true)]
    #[case(r#"TYPE EQ "WORK""#, true)]
    #[case(r#"type eq "home""#, false)]
    #[case(r#"type ne "home""#, true)]
    #[case(r#"value co "@EXAMPLE""#, true)]
    #[case(r#"value sw "bjensen@""#, true)]
    #[case(r#"value ew ".com""#, true)]
    #[case(r#"value ew ".org""#, false)]
    #[case("primary eq true", true)]
    #[case("primary eq false", false)]
    #[case("primary ne false", true)]
    #[case("display pr", false)]
    #[case("value pr", true)]
    #[case("display eq null", true)]
    #[case("value eq null", false)]
    #[case("value ne null", true)]
    #[case(r#"type eq "work" and primary eq true"#, true)]
    #[case(r#"type eq "home" or primary eq true"#, true)]
    #[case(r#"not (type eq "work")"#, false)]
    #[case(r#"value gt "a""#, true)]
    #[case(r#"value lt "a""#, false)]
    #[case("type eq 5", false)]
    #[case("type ne 5", true)]
    fn evaluates_on_a_complex_value(#[case] filter: &str, #[case] expected: bool) {
        let email = json!({"value": "bjensen@example.com", "type": "work", "primary": true});
        assert_eq!(eval(filter, &email), expected, "{filter}");
    }

    #[test]
    fn case_exact_attributes_compare_exactly() {
        let member = json!({"value": "ABC-1"});
        let f = parse_filter(r#"value eq "abc-1""#).expect("valid");
        assert!(evaluate(&f, &member, &|_| false));
        assert!(!evaluate(&f, &member, &|p: &AttrPath| p.name_is("value")));
    }

    #[test]
    fn simple_values_are_their_own_value() {
        assert!(eval(r#"value eq "x""#, &json!("x")));
        assert!(!eval(r#"type eq "x""#, &json!("x")));
    }

    #[test]
    fn booleans_sent_as_strings_compare_as_booleans() {
        assert!(eval("primary eq true", &json!({"primary": "True"})));
        assert!(!eval("primary eq true", &json!({"primary": "False"})));
    }

    #[test]
    fn date_times_compare_as_instants() {
        let v = json!({"created": "2024-01-01T12:00:00+02:00"});
        assert!(eval(r#"created eq "2024-01-01T10:00:00Z""#, &v));
        assert!(eval(r#"created gt "2024-01-01T09:59:59Z""#, &v));
        assert!(!eval(r#"created lt "2024-01-01T09:59:59Z""#, &v));
    }

    #[test]
    fn numbers_compare_numerically() {
        let v = json!({"n": 10});
        assert!(eval("n gt 9.5", &v));
        assert!(eval("n eq 10", &v));
        assert!(!eval("n lt 10", &v));
    }

    #[test]
    fn nested_and_qualified_paths() {
        let resource = json!({
            "name": {"givenName": "Barbara"},
            "emails": [{"value": "a@x", "type": "home"}, {"value": "b@x", "type": "work"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Tour"}
        });
        assert!(eval(r#"name.givenName eq "barbara""#, &resource));
        assert!(eval(
            r#"emails[type eq "work" and value eq "b@x"]"#,
            &resource
        ));
        assert!(!eval(
            r#"emails[type eq "home" and value eq "b@x"]"#,
            &resource
        ));
        assert!(eval(r#"emails.value eq "a@x""#, &resource));
        assert!(eval(r#"emails eq "b@x""#, &resource));
        assert!(eval(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "tour""#,
            &resource
        ));
        assert!(eval("emails pr", &resource));
        assert!(!eval("phoneNumbers pr", &resource));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-zA-Z0-9@. ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(&["value", "type", "primary", "display", "Value"][..])
                        .prop_map(str::to_owned),
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any filter on any JSON evaluates without panicking, and `not` negates.
        #[test]
        fn never_panics_and_not_negates(
            f in super::super::display::tests::filter(),
            v in json_value(),
        ) {
            let direct = evaluate(&f, &v, &ignore_case);
            let negated = evaluate(&Filter::negate(f), &v, &ignore_case);
            prop_assert_eq!(direct, !negated);
        }
    }
}

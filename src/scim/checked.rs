//! Lists the directory cannot answer alone, checked and ordered by lockbridge: a filter
//! whose LDAP translation only narrows the search (`co` / `ew` on a part of an address
//! kept as JSON, [`super::filter::Candidates::Superset`]), and `sortBy` on an attribute
//! the directory cannot sort by (values kept as JSON; multi-valued attributes, sorted by
//! their primary or first value as RFC 7644 §3.4.2.3 says). The service reads at most
//! a bounded number of candidates for these; the functions here are pure.

use std::cmp::Ordering;

use serde_json::Value;

use super::filter::{AttrPath, Filter, evaluate};
use super::model::get_ci;
use super::schema::{Resolved, ResourceSchema, Returned};

/// `filter` with every top-level attribute path written as [`evaluate`] finds it in a
/// resource: an extension attribute under its extension's URN (clients may leave it
/// out: `employeeNumber`), a core attribute without the core URN.
pub fn qualified(filter: &Filter, schema: &ResourceSchema) -> Filter {
    let path = |p: &AttrPath| {
        let mut p = p.clone();
        if let Some(Resolved { extension, .. }) = schema.resolve(&p) {
            p.urn = extension.map(str::to_owned);
        }
        p
    };
    match filter {
        Filter::And(a, b) => Filter::And(
            Box::new(qualified(a, schema)),
            Box::new(qualified(b, schema)),
        ),
        Filter::Or(a, b) => Filter::Or(
            Box::new(qualified(a, schema)),
            Box::new(qualified(b, schema)),
        ),
        Filter::Not(a) => Filter::Not(Box::new(qualified(a, schema))),
        Filter::Compare { path: p, op, value } => Filter::Compare {
            path: path(p),
            op: *op,
            value: value.clone(),
        },
        Filter::Present(p) => Filter::Present(path(p)),
        // The inner filter's paths are relative to each value: left as written.
        Filter::ValuePath { path: p, filter } => Filter::ValuePath {
            path: path(p),
            filter: filter.clone(),
        },
    }
}

/// Whether `resource` satisfies `filter` ([`qualified`] first), comparing strings as the
/// schema says (`caseExact`).
pub fn matches(filter: &Filter, resource: &Value, schema: &ResourceSchema) -> bool {
    let case_exact = |p: &AttrPath| {
        schema
            .resolve(p)
            .map(|r| r.sub.unwrap_or(r.attr).case_exact)
            .unwrap_or(false)
    };
    evaluate(filter, resource, &case_exact)
}

/// Whether `path` can order resources here: an attribute of the schema that is
/// returned (a password, never shown, orders nothing).
pub fn sortable(path: &AttrPath, schema: &ResourceSchema) -> bool {
    schema
        .resolve(path)
        .is_some_and(|r| r.sub.unwrap_or(r.attr).returned != Returned::Never)
}

/// The value `resource` is sorted by for `path` (RFC 7644 §3.4.2.3): the attribute, or
/// its sub-attribute; of a multi-valued attribute, the primary value's, else the first
/// value's (`value` unless a sub-attribute is named). Strings are lower-cased unless
/// `case_exact`.
pub fn sort_value(resource: &Value, path: &AttrPath, case_exact: bool) -> Option<SortValue> {
    let Value::Object(map) = resource else {
        return None;
    };
    let container = match &path.urn {
        Some(urn) => get_ci(map, urn)?.as_object()?,
        None => map,
    };
    let mut v = get_ci(container, &path.name)?;
    if let Value::Array(items) = v {
        v = items
            .iter()
            .find(|i| i.get("primary") == Some(&Value::Bool(true)))
            .or_else(|| items.first())?;
        if let Value::Object(o) = v {
            v = get_ci(o, path.sub_attr.as_deref().unwrap_or("value"))?;
        }
    } else if let Some(sub) = &path.sub_attr {
        v = get_ci(v.as_object()?, sub)?;
    }
    match v {
        Value::String(s) if case_exact => Some(SortValue::Text(s.clone())),
        Value::String(s) => Some(SortValue::Text(s.to_lowercase())),
        Value::Number(n) => n.as_f64().map(SortValue::Number),
        Value::Bool(b) => Some(SortValue::Bool(*b)),
        _ => None,
    }
}

/// A value resources are ordered by.
#[derive(Debug, Clone, PartialEq)]
pub enum SortValue {
    Bool(bool),
    Number(f64),
    Text(String),
}

/// Ascending order, resources without a value last (in descending order the caller
/// reverses the whole list, so they come first, as the directory's sort does).
pub fn compare(a: &Option<SortValue>, b: &Option<SortValue>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => match (x, y) {
            (SortValue::Text(x), SortValue::Text(y)) => x.cmp(y),
            (SortValue::Number(x), SortValue::Number(y)) => x.total_cmp(y),
            (SortValue::Bool(x), SortValue::Bool(y)) => x.cmp(y),
            // Values of different types (not within one attribute): a fixed order.
            (SortValue::Bool(_), _) => Ordering::Less,
            (_, SortValue::Bool(_)) => Ordering::Greater,
            (SortValue::Number(_), _) => Ordering::Less,
            (_, SortValue::Number(_)) => Ordering::Greater,
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::scim::filter::parse_filter;

    fn path(p: &str) -> AttrPath {
        match parse_filter(&format!("{p} pr")) {
            Ok(Filter::Present(p)) => p,
            other => panic!("{p}: {other:?}"),
        }
    }

    fn user() -> Value {
        json!({
            "userName": "Bjensen",
            "emails": [
                {"value": "b@work.example", "type": "work"},
                {"value": "A@home.example", "type": "home", "primary": true}
            ],
            "addresses": [
                {"type": "home", "locality": "Chicago", "postalCode": "60601"}
            ],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "employeeNumber": "701984"
            }
        })
    }

    #[test]
    fn multi_valued_attributes_sort_by_the_primary_or_first_value() {
        let u = user();
        assert_eq!(
            sort_value(&u, &path("emails"), false),
            Some(SortValue::Text("a@home.example".into()))
        );
        assert_eq!(
            sort_value(&u, &path("emails.type"), false),
            Some(SortValue::Text("home".into()))
        );
        assert_eq!(
            sort_value(&u, &path("addresses.locality"), true),
            Some(SortValue::Text("Chicago".into()))
        );
        assert_eq!(sort_value(&u, &path("phoneNumbers"), false), None);
        assert_eq!(
            sort_value(
                &u,
                &path("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"),
                false
            ),
            Some(SortValue::Text("701984".into()))
        );
        let mut values = [
            None,
            Some(SortValue::Text("b".into())),
            Some(SortValue::Text("a".into())),
        ];
        values.sort_by(compare);
        assert_eq!(
            values,
            [
                Some(SortValue::Text("a".into())),
                Some(SortValue::Text("b".into())),
                None
            ]
        );
    }

    #[test]
    fn a_filter_is_checked_with_extension_attributes_found_unqualified() {
        let schema = ResourceSchema::user();
        let u = user();
        for (filter, expected) in [
            (r#"addresses.locality co "icag""#, true),
            (r#"addresses.locality co "60601""#, false),
            (r#"addresses[type eq "home" and locality ew "GO"]"#, true),
            (
                r#"addresses.postalCode ew "01" and employeeNumber eq "701984""#,
                true,
            ),
            (r#"employeeNumber sw "9""#, false),
            (r#"not (addresses.locality co "x")"#, true),
            (
                r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "bjensen""#,
                true,
            ),
        ] {
            let f = qualified(&parse_filter(filter).expect(filter), schema);
            assert_eq!(matches(&f, &u, schema), expected, "{filter}");
        }
        assert!(sortable(&path("emails"), schema));
        assert!(!sortable(&path("password"), schema));
        assert!(!sortable(&path("nosuch"), schema));
    }
}

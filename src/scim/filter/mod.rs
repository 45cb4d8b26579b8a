//! SCIM filters (RFC 7644 §3.4.2.2) and PATCH paths (RFC 7644 §3.5.2).
//!
//! - [`parse_filter`] turns the `filter` query parameter (or the `filter` member of a
//!   `POST /.search` body, RFC 7644 §3.4.3) into a [`Filter`] tree; [`parse_path`] turns a
//!   PATCH operation's `path` into a [`PatchPath`]. Both refuse, with a [`ParseError`]
//!   saying where and what was expected, anything that is not in the grammar, input
//!   longer than [`MAX_FILTER_LEN`] and nesting deeper than [`MAX_NESTING`]; neither
//!   panics on any input (property tests and the `fuzz/` targets check it).
//! - `Display` on [`Filter`], [`AttrPath`] and [`PatchPath`] prints canonical syntax that
//!   parses back to the same tree.
//! - [`evaluate`] tests a [`Filter`] against JSON (one value of a multi-valued attribute),
//!   for PATCH value paths such as `emails[type eq "work"].value`.
//! - [`to_ldap`] translates a [`Filter`] into one RFC 4515 LDAP filter through a
//!   [`FilterMapping`] that says how each SCIM attribute is stored
//!   ([`DefaultUserMapping`], [`DefaultGroupMapping`]), failing with a [`TranslateError`]
//!   rather than ever widening the filter.
//!
//! ```
//! use lockbridge::scim::filter::{DefaultUserMapping, parse_filter, to_ldap};
//!
//! let f = parse_filter(r#"emails[type eq "work"].value eq "bjensen@example.com""#).unwrap();
//! assert_eq!(f.to_string(), r#"emails[type eq "work" and value eq "bjensen@example.com"]"#);
//! assert_eq!(to_ldap(&f, &DefaultUserMapping::default()).unwrap(), "(mail=bjensen@example.com)");
//! ```
//!
//! The module does no I/O: resolving group member ids to DNs, which a filter on `members`
//! needs, is the SCIM service's job (see [`references`] and [`WithReferences`]).

mod ast;
mod display;
mod eval;
mod parser;
mod path;
mod to_ldap;

pub use ast::{AttrPath, CompValue, CompareOp, Filter, JsonNumber};
pub use eval::evaluate;
pub use parser::{MAX_FILTER_LEN, MAX_NESTING, ParseError, parse_filter};
pub use path::{PatchPath, parse_path};
pub use to_ldap::{
    CORE_GROUP, CORE_USER, Candidates, CandidatesFn, CustomFn, DefaultGroupMapping,
    DefaultUserMapping, ENTERPRISE_USER, Element, FilterMapping, PASSWORD_EXTENSION, Reference,
    Syntax, Target, Test, TranslateError, Translation, WithReferences, json_address_element,
    json_open_element, json_primary_filter, json_typed_element, json_value_filter, references,
    to_ldap, translate,
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Arbitrary text never panics the parser; whatever parses prints back to itself.
        #[test]
        fn parser_never_panics_on_strings(s in any::<String>()) {
            if let Ok(f) = parse_filter(&s) {
                prop_assert_eq!(parse_filter(&f.to_string()), Ok(f));
            }
        }

        #[test]
        fn parser_never_panics_on_bytes(b in prop::collection::vec(any::<u8>(), 0..512)) {
            let s = String::from_utf8_lossy(&b);
            if let Ok(f) = parse_filter(&s) {
                prop_assert_eq!(parse_filter(&f.to_string()), Ok(f));
            }
        }

        /// Text made of the grammar's own pieces reaches much deeper into the parser than
        /// random characters do.
        #[test]
        fn parser_never_panics_on_filter_like_text(
            parts in prop::collection::vec(prop::sample::select(&[
                "userName", "emails", "name.familyName", "urn:a:b:c", "urn:ietf:params:scim:schemas:core:2.0:User:",
                " eq ", " EQ ", " pr", " gt ", " and ", " or ", "not ", "(", ")", "[", "]", ".", "value",
                "\"x\"", "\"\\u00e9\"", "\"\\uD83D\\uDE00\"", "\"\\", "\"", "true", "null", "-1.5e3", "0",
                " ", "\t", "$ref", "\\u", "é", "\u{0}",
            ][..]), 0..24)
        ) {
            let s: String = parts.concat();
            if let Ok(f) = parse_filter(&s) {
                prop_assert_eq!(parse_filter(&f.to_string()), Ok(f.clone()));
                let _ = to_ldap(&f, &DefaultUserMapping::default());
            }
            let _ = parse_path(&s);
        }
    }
}

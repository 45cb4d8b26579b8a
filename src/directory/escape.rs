//! Building LDAP search filters from untrusted input (RFC 4515).
//!
//! Every value that comes from a request goes through [`filter_value`] before it is put
//! into a filter; attribute names come from configuration and are checked once by
//! [`is_attribute_description`]. Nothing in `directory` builds a filter with `format!`
//! on raw input.

use std::borrow::Cow;

/// Escape an assertion value (RFC 4515 §3): `*`, `(`, `)`, `\` and NUL become `\2a`, `\28`,
/// `\29`, `\5c`, `\00`. Other bytes, including non-ASCII UTF-8, are legal as they are.
pub fn filter_value(value: &str) -> Cow<'_, str> {
    ldap3::ldap_escape(value)
}

/// `(attr=value)` with `value` escaped.
pub fn equals(attr: &str, value: &str) -> String {
    format!("({attr}={})", filter_value(value))
}

/// `(attr=*value*)` with `value` escaped, so a `*` in the input matches a literal `*`.
pub fn contains(attr: &str, value: &str) -> String {
    format!("({attr}=*{}*)", filter_value(value))
}

/// `(attr=*)`.
pub fn present(attr: &str) -> String {
    format!("({attr}=*)")
}

/// `(&a b ...)` of already-built filters.
pub fn and<I: IntoIterator<Item = S>, S: AsRef<str>>(parts: I) -> String {
    let mut s = String::from("(&");
    for p in parts {
        s.push_str(p.as_ref());
    }
    s.push(')');
    s
}

/// `(|a b ...)` of already-built filters.
pub fn or<I: IntoIterator<Item = S>, S: AsRef<str>>(parts: I) -> String {
    let mut s = String::from("(|");
    for p in parts {
        s.push_str(p.as_ref());
    }
    s.push(')');
    s
}

/// Whether `s` is an RFC 4512 attribute description without options we would need to
/// escape: a descriptor (`ALPHA *(ALPHA / DIGIT / "-")`) or a numeric OID, optionally
/// followed by `;option`s.
pub fn is_attribute_description(s: &str) -> bool {
    let mut parts = s.split(';');
    let Some(attr) = parts.next() else {
        return false;
    };
    let descr = attr.starts_with(|c: char| c.is_ascii_alphabetic())
        && attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let oid = !attr.is_empty()
        && attr.split('.').all(|n| {
            !n.is_empty()
                && n.chars().all(|c| c.is_ascii_digit())
                && (n == "0" || !n.starts_with('0'))
        });
    (descr || oid)
        && parts.all(|o| !o.is_empty() && o.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

/// Whether `filter` parses as an RFC 4515 filter (with the same parser that encodes it).
pub fn is_valid_filter(filter: &str) -> bool {
    filter.starts_with('(') && ldap3::parse_filter(filter).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_five_specials() {
        assert_eq!(filter_value("a*b"), "a\\2ab");
        assert_eq!(filter_value("(x)"), "\\28x\\29");
        assert_eq!(filter_value("back\\slash"), "back\\5cslash");
        assert_eq!(filter_value("nul\0byte"), "nul\\00byte");
        assert_eq!(filter_value("plain.name-1"), "plain.name-1");
    }

    #[test]
    fn injection_attempts_stay_one_assertion() {
        for evil in [
            "*)(uid=*",
            "*)(|(uid=*",
            "alice)(objectClass=*",
            "*",
            "\\2a",
            "x\0)(uid=*",
            ")(&",
        ] {
            let f = equals("uid", evil);
            // The whole thing still parses as exactly one equality filter...
            assert!(is_valid_filter(&f), "{f}");
            // ...whose only unescaped parentheses are the outer pair and which has no
            // wildcard left.
            let inner = &f[1..f.len() - 1];
            assert!(!inner.contains('(') && !inner.contains(')'), "{f}");
            assert!(!inner.contains('*'), "{f}");
            assert!(!inner.contains('\0'), "{f}");
        }
        assert_eq!(equals("uid", "*)(uid=*"), "(uid=\\2a\\29\\28uid=\\2a)");
        // An already-escaped-looking input is escaped again (the backslash itself).
        assert_eq!(equals("uid", "\\2a"), "(uid=\\5c2a)");
    }

    #[test]
    fn non_ascii_passes_through_and_parses() {
        assert_eq!(filter_value("Jürgen Ω 李"), "Jürgen Ω 李");
        assert!(is_valid_filter(&equals("cn", "Jürgen Ω 李")));
        assert!(is_valid_filter(&contains("cn", "ü*")));
        assert_eq!(contains("cn", "ü*"), "(cn=*ü\\2a*)");
    }

    #[test]
    fn builders_compose() {
        let f = and([
            "(objectClass=inetOrgPerson)".to_string(),
            equals("uid", "bob"),
        ]);
        assert_eq!(f, "(&(objectClass=inetOrgPerson)(uid=bob))");
        assert!(is_valid_filter(&f));
        let f = or([contains("uid", "a"), contains("mail", "a"), present("cn")]);
        assert_eq!(f, "(|(uid=*a*)(mail=*a*)(cn=*))");
        assert!(is_valid_filter(&f));
    }

    #[test]
    fn attribute_descriptions() {
        for ok in [
            "uid",
            "mail",
            "otherMailbox",
            "x-custom-1",
            "2.5.4.3",
            "cn;lang-de",
        ] {
            assert!(is_attribute_description(ok), "{ok}");
        }
        for bad in [
            "", "1uid", "uid=", "u id", "(uid)", "2.5..3", "01.2", "cn;", "ui*d",
        ] {
            assert!(!is_attribute_description(bad), "{bad}");
        }
    }

    #[test]
    fn filter_validation() {
        assert!(is_valid_filter("(objectClass=inetOrgPerson)"));
        assert!(is_valid_filter(
            "(&(objectClass=person)(!(pwdAccountLockedTime=*)))"
        ));
        assert!(!is_valid_filter("objectClass=person"));
        assert!(!is_valid_filter("(objectClass=person"));
        assert!(!is_valid_filter("(&(a=b)"));
        assert!(!is_valid_filter("(a=b))"));
        assert!(!is_valid_filter(""));
    }
}

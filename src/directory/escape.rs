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

/// One unit of a DN string: a character as written, or an escaped one (`\,`, `\2C`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum DnToken {
    Raw(char),
    Escaped,
}

/// Whether `dn` is a non-empty RFC 4514 distinguished name: `type=value` pairs joined by
/// `+` into RDNs, RDNs joined by `,`; types are descriptors or numeric OIDs; values are
/// non-empty, with `"` `;` `<` `>` escaped and every `\` followed by a special character
/// or two hex digits, or `#` and hex pairs. Spaces around separators are tolerated (as
/// servers do); control characters are not.
///
/// A syntax check only (DNs written into the directory are passed as they are, so a
/// typo fails here, with a clear message, instead of as a server error); whether the
/// entry exists is the directory's business.
pub fn is_valid_dn(dn: &str) -> bool {
    let mut tokens = Vec::with_capacity(dn.len());
    let mut chars = dn.chars();
    while let Some(c) = chars.next() {
        if c.is_control() {
            return false;
        }
        if c != '\\' {
            tokens.push(DnToken::Raw(c));
            continue;
        }
        match chars.next() {
            Some(e) if " \"#+,;<=>\\".contains(e) => {}
            Some(h) if h.is_ascii_hexdigit() => {
                if !chars.next().is_some_and(|l| l.is_ascii_hexdigit()) {
                    return false;
                }
            }
            _ => return false,
        }
        tokens.push(DnToken::Escaped);
    }
    !tokens.is_empty()
        && tokens
            .split(|t| *t == DnToken::Raw(','))
            .all(|rdn| rdn.split(|t| *t == DnToken::Raw('+')).all(is_valid_ava))
}

/// `type=value` of [`is_valid_dn`].
fn is_valid_ava(ava: &[DnToken]) -> bool {
    let Some(eq) = ava.iter().position(|t| *t == DnToken::Raw('=')) else {
        return false;
    };
    let Some(attr) = ava[..eq]
        .iter()
        .map(|t| match t {
            DnToken::Raw(c) => Some(*c),
            DnToken::Escaped => None,
        })
        .collect::<Option<String>>()
    else {
        return false;
    };
    let attr = attr.trim_matches(' ');
    if attr.contains(';') || !is_attribute_description(attr) {
        return false;
    }
    let space = |t: &DnToken| *t == DnToken::Raw(' ');
    let mut value = &ava[eq + 1..];
    while value.first().is_some_and(space) {
        value = &value[1..];
    }
    while value.last().is_some_and(space) {
        value = &value[..value.len() - 1];
    }
    match value.split_first() {
        None => false,
        Some((DnToken::Raw('#'), hex)) => {
            !hex.is_empty()
                && hex.len() % 2 == 0
                && hex
                    .iter()
                    .all(|t| matches!(t, DnToken::Raw(c) if c.is_ascii_hexdigit()))
        }
        Some(_) => !value
            .iter()
            .any(|t| matches!(t, DnToken::Raw('"' | ';' | '<' | '>'))),
    }
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

    #[test]
    fn dn_syntax() {
        for ok in [
            "uid=bob,ou=people,dc=example,dc=org",
            "cn=never-expires,ou=policies,dc=example,dc=org",
            " UID=Bob , OU=People,dc=Example, dc=org ",
            "cn=Smith\\, John,dc=x",
            "cn=a\\2Cb,dc=x",
            "cn=a\\ ,dc=x",
            "cn=\\#1,dc=x",
            "cn=a+sn=b,dc=x",
            "2.5.4.3=x,dc=y",
            "cn=#04024869,dc=x",
            "cn=Jürgen Ω 李,dc=x",
            "cn=a=b,dc=x",
        ] {
            assert!(is_valid_dn(ok), "{ok}");
        }
        for bad in [
            "",
            " ",
            "admins",
            "cn=,dc=x",
            "cn=a,,dc=x",
            "cn=a,dc=x,",
            ",cn=a",
            "cn=a+,dc=x",
            "=a,dc=x",
            "c n=a,dc=x",
            "cn;lang-de=a,dc=x",
            "cn=a\\,dc=x\\",
            "cn=a\\x1,dc=x",
            "cn=a\\4,dc=x",
            "cn=a\"b,dc=x",
            "cn=a;dc=x",
            "cn=<a>,dc=x",
            "cn=#0,dc=x",
            "cn=#zz,dc=x",
            "cn=a\nb,dc=x",
            "cn=a\0,dc=x",
            "cn\\3d=a,dc=x",
        ] {
            assert!(!is_valid_dn(bad), "{bad:?}");
        }
    }
}

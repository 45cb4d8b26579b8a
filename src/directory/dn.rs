//! Distinguished names as text (RFC 4514): comparing two spellings of one DN, and
//! reading the first RDN. One place for it, so every module compares DNs alike.

/// The bytes of a DN string, each marked escaped or not (`\,` and `\2C` are both an
/// escaped `,`); `None` for a dangling escape.
pub(crate) fn dn_tokens(dn: &str) -> Option<Vec<(u8, bool)>> {
    let mut out = Vec::with_capacity(dn.len());
    let mut chars = dn.chars();
    let mut buf = [0u8; 4];
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.extend(c.encode_utf8(&mut buf).bytes().map(|b| (b, false)));
            continue;
        }
        let n = chars.next()?;
        if n.is_ascii_hexdigit() {
            let l = chars.next()?;
            let byte = u8::from_str_radix(&format!("{n}{l}"), 16).ok()?;
            out.push((byte, true));
        } else {
            out.extend(n.encode_utf8(&mut buf).bytes().map(|b| (b, true)));
        }
    }
    Some(out)
}

/// `tokens` without unescaped spaces at either end.
fn trim_tokens(mut tokens: &[(u8, bool)]) -> &[(u8, bool)] {
    while let [(b' ', false), rest @ ..] = tokens {
        tokens = rest;
    }
    while let [rest @ .., (b' ', false)] = tokens {
        tokens = rest;
    }
    tokens
}

/// The attribute and (unescaped) value of the first RDN of `dn`; `None` for a
/// multi-valued RDN or a malformed DN.
pub fn rdn_of(dn: &str) -> Option<(String, String)> {
    let tokens = dn_tokens(dn)?;
    let end = tokens
        .iter()
        .position(|t| matches!(t, (b',' | b';', false)))
        .unwrap_or(tokens.len());
    let rdn = &tokens[..end];
    if rdn.contains(&(b'+', false)) {
        return None;
    }
    let eq = rdn.iter().position(|t| *t == (b'=', false))?;
    let text = |t: &[(u8, bool)]| String::from_utf8(t.iter().map(|(b, _)| *b).collect()).ok();
    let attr = text(trim_tokens(&rdn[..eq]))?;
    if attr.is_empty() || rdn[..eq].iter().any(|(_, escaped)| *escaped) {
        return None;
    }
    let value = text(trim_tokens(&rdn[eq + 1..]))?;
    Some((attr, value))
}

/// Whether `dn` is `base` or an entry below it (compared as [`dn_key`]s).
pub fn is_at_or_below(dn: &str, base: &str) -> bool {
    let (dn, base) = (dn_key(dn), dn_key(base));
    dn == base || key_is_below(&dn, &base)
}

/// Whether the DN whose [`dn_key`] is `dn` names an entry strictly below the one whose
/// key is `base`: `base` must be a whole trailing run of RDNs, so `uid=a\,ou=people,…`
/// (one RDN with an escaped comma, next to `ou=people`) is not below `ou=people,…`.
pub fn key_is_below(dn: &str, base: &str) -> bool {
    let Some(head) = dn.strip_suffix(base).and_then(|h| h.strip_suffix(',')) else {
        return false;
    };
    // An escaped comma (`\,`, after an odd number of backslashes) separates nothing.
    let backslashes = head.chars().rev().take_while(|c| *c == '\\').count();
    !head.is_empty() && !base.is_empty() && backslashes % 2 == 0
}

/// Whether two DNs name the same entry: equal [`dn_key`]s.
pub fn same_dn(a: &str, b: &str) -> bool {
    dn_key(a) == dn_key(b)
}

/// A DN in a form to compare: types and values in lower case, unescaped spaces around
/// `,` `=` `+` removed, `;` written `,`, escapes written one way (`\2C` and `\,` both
/// become `\,`; an escaped character that needs no escape is written plain). A DN with a
/// dangling escape is only lower-cased: it matches nothing the directory returns.
pub fn dn_key(dn: &str) -> String {
    let Some(tokens) = dn_tokens(dn) else {
        return dn.to_lowercase();
    };
    let mut out = String::with_capacity(dn.len());
    let mut part: Vec<(u8, bool)> = Vec::with_capacity(dn.len());
    let mut bytes = Vec::with_capacity(dn.len());
    let mut flush = |part: &mut Vec<(u8, bool)>, out: &mut String| {
        bytes.clear();
        for (b, escaped) in trim_tokens(part) {
            if *escaped && b.is_ascii_punctuation() {
                bytes.push(b'\\');
            }
            bytes.push(*b);
        }
        out.push_str(&String::from_utf8_lossy(&bytes).to_lowercase());
        part.clear();
    };
    for token in tokens {
        match token {
            (b',' | b';', false) => {
                flush(&mut part, &mut out);
                out.push(',');
            }
            (sep @ (b'+' | b'='), false) => {
                flush(&mut part, &mut out);
                out.push(char::from(sep));
            }
            t => part.push(t),
        }
    }
    flush(&mut part, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_or_below_compares_whole_rdns() {
        let base = "ou=Paris, ou=people,dc=example,dc=org";
        assert!(is_at_or_below(
            "uid=ann,ou=paris,ou=people,dc=example,dc=org",
            base
        ));
        assert!(is_at_or_below("OU=PARIS,ou=people,dc=example,dc=org", base));
        assert!(is_at_or_below(
            "uid=a,ou=x,ou=paris,ou=people,dc=example,dc=org",
            base
        ));
        assert!(!is_at_or_below("uid=ann,ou=people,dc=example,dc=org", base));
        assert!(!is_at_or_below(
            "uid=ann,ou=notparis,ou=people,dc=example,dc=org",
            base
        ));
        assert!(!is_at_or_below("ou=people,dc=example,dc=org", base));
        // One RDN whose value holds an escaped comma, directly under ou=people.
        assert!(!is_at_or_below(
            r"uid=a\,ou=paris,ou=people,dc=example,dc=org",
            "ou=paris,ou=people,dc=example,dc=org"
        ));
    }

    #[test]
    fn keys_ignore_case_spaces_and_the_spelling_of_escapes() {
        assert_eq!(
            dn_key(" UID=Bob , OU=People,dc=Example; dc=org "),
            "uid=bob,ou=people,dc=example,dc=org"
        );
        assert_eq!(dn_key(r"cn=Smith\, John,dc=x"), r"cn=smith\, john,dc=x");
        assert_eq!(dn_key(r"cn=Smith\2C John,dc=x"), r"cn=smith\, john,dc=x");
        // An escaped trailing space is part of the value; unescaped ones are not.
        assert_eq!(dn_key(r"cn=a\ ,dc=x"), "cn=a ,dc=x");
        assert_eq!(dn_key(r"cn=a  ,dc=x"), "cn=a,dc=x");
        assert_eq!(dn_key(r"cn=\41nn + sn=B,dc=x"), "cn=ann+sn=b,dc=x");
        assert_eq!(dn_key("cn=Ünïcode,dc=x"), "cn=ünïcode,dc=x");
        // A dangling escape: lower-cased only.
        assert_eq!(dn_key(r"cn=A\,dc=X\"), r"cn=a\,dc=x\");
        assert!(same_dn(
            "cn=Never-Expires, ou=Policies,dc=example,dc=org",
            "CN=never-expires,ou=policies,DC=example,DC=org"
        ));
        assert!(!same_dn(
            "cn=never-expires,ou=policies,dc=example,dc=org",
            "cn=default,ou=policies,dc=example,dc=org"
        ));
    }

    #[test]
    fn below_means_strictly_below_a_whole_base() {
        let base = dn_key("ou=people,dc=example,dc=org");
        assert!(key_is_below(
            &dn_key("uid=a,ou=people,dc=example,dc=org"),
            &base
        ));
        assert!(!key_is_below(&dn_key("ou=people,dc=example,dc=org"), &base));
        assert!(!key_is_below(
            &dn_key(r"uid=a\,ou=people,dc=example,dc=org"),
            &base
        ));
        assert!(key_is_below(
            &dn_key(r"uid=a\\,ou=people,dc=example,dc=org"),
            &base
        ));
        assert!(!key_is_below(
            &dn_key("uid=a,xou=people,dc=example,dc=org"),
            &base
        ));
        assert!(!key_is_below(&dn_key("uid=a,dc=example,dc=org"), &base));
        assert!(!key_is_below("uid=a,", ""));
    }
}

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
    if dn == base {
        return true;
    }
    let Some(head) = dn
        .strip_suffix(base.as_str())
        .and_then(|h| h.strip_suffix(','))
    else {
        return false;
    };
    // An escaped comma (`\,`, after an odd number of backslashes) separates nothing.
    let backslashes = head.chars().rev().take_while(|c| *c == '\\').count();
    !head.is_empty() && backslashes % 2 == 0
}

/// A DN in a form to compare: types and values in lower case, unescaped spaces around
/// `,` `=` `+` removed, escapes written one way.
pub fn dn_key(dn: &str) -> String {
    let Some(tokens) = dn_tokens(dn) else {
        return dn.to_lowercase();
    };
    let mut out = String::with_capacity(dn.len());
    for (i, part) in tokens
        .split(|t| matches!(t, (b',' | b'+' | b'=' | b';', false)))
        .enumerate()
    {
        if i > 0 {
            // The separator itself: find it again by position.
            let sep_index = tokens
                .iter()
                .enumerate()
                .filter(|(_, t)| matches!(t, (b',' | b'+' | b'=' | b';', false)))
                .nth(i - 1)
                .map(|(j, _)| tokens[j].0);
            out.push(match sep_index {
                Some(b';') => ',',
                Some(b) => char::from(b),
                None => ',',
            });
        }
        let part = trim_tokens(part);
        let mut bytes = Vec::with_capacity(part.len());
        for (b, escaped) in part {
            if *escaped && b.is_ascii_punctuation() {
                bytes.push(b'\\');
            }
            bytes.push(*b);
        }
        out.push_str(&String::from_utf8_lossy(&bytes).to_lowercase());
    }
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
}

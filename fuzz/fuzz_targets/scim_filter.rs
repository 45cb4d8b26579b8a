//! SCIM filter parser (RFC 7644 §3.4.2.2): never panics; whatever parses prints back to
//! the same tree; whatever translates is one valid LDAP filter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockbridge::directory::escape::is_valid_filter;
use lockbridge::directory::{DirectoryKind, EntryVocabulary, SignInVocabulary};
use lockbridge::scim::filter::{
    DefaultGroupMapping, DefaultUserMapping, MAX_FILTER_LEN, parse_filter, to_ldap,
};

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let Ok(filter) = parse_filter(&input) else {
        return;
    };
    let printed = filter.to_string();
    // Canonical printing may add a space (`a eq"x"` → `a eq "x"`), so a filter at the
    // length limit can print longer than the limit; everything else must round-trip.
    if printed.len() <= MAX_FILTER_LEN {
        assert_eq!(parse_filter(&printed), Ok(filter.clone()), "{printed}");
    }
    // Every directory kind: each has its own sign-in state and id attributes.
    for kind in [
        DirectoryKind::OpenLdap,
        DirectoryKind::Ds389,
        DirectoryKind::ActiveDirectory,
    ] {
        let users = DefaultUserMapping {
            external_id: Some("employeeID".to_owned()),
            sign_in: SignInVocabulary::for_kind(kind),
            entries: EntryVocabulary::for_kind(kind),
        };
        let groups = DefaultGroupMapping {
            external_id: None,
            entries: EntryVocabulary::for_kind(kind),
        };
        for ldap in [to_ldap(&filter, &users), to_ldap(&filter, &groups)]
            .into_iter()
            .flatten()
        {
            assert!(is_valid_filter(&ldap), "{filter} → {ldap}");
        }
    }
});

//! SCIM PATCH path parser (RFC 7644 §3.5.2): never panics; whatever parses prints back
//! to the same path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockbridge::scim::filter::{MAX_FILTER_LEN, parse_path};

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let Ok(path) = parse_path(&input) else {
        return;
    };
    let printed = path.to_string();
    if printed.len() <= MAX_FILTER_LEN {
        assert_eq!(parse_path(&printed), Ok(path.clone()), "{printed}");
    }
});

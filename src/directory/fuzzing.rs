//! The adapter's parsers of what a directory server sends, lent to the cargo-fuzz targets
//! in `fuzz/` (a crate of its own, so it can only reach `pub` items). Hidden from the
//! docs and not lockbridge's API: nothing else may use it, and it may change at any time.

use super::dialect::{ActiveDirectory, Dialect};

pub use super::controls::{
    DecodeError as ControlDecodeError, SortResult, VlvResponse, decode_sort_result,
    decode_vlv_response,
};
pub use super::dialect::BindRefusal;
pub use super::error::{DirectoryError, PolicyRejection};
pub use super::ppolicy::{
    DecodeError as PolicyDecodeError, PolicyError, PolicyResponse, PolicyWarning,
    decode as decode_policy_response,
};

/// What Active Directory's answer to a simple bind (`rc`, diagnostic text) says beyond a
/// wrong password (`data 773`: must change, `532`: expired, `775`: locked, ...).
pub fn active_directory_bind_refusal(rc: u32, text: &str) -> Option<BindRefusal> {
    ActiveDirectory.bind_refusal(rc, text)
}

/// What Active Directory's refusal of a `unicodePwd` write says (`00000056`: wrong old
/// password, `0000052D`: the password's rules).
pub fn active_directory_modify_refusal(text: &str) -> Option<DirectoryError> {
    super::dialect::active_directory::modify_refusal(text)
}

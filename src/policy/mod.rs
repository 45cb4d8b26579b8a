//! Password policy: the organisation's rules for passwords that lockbridge
//! sets, the check of an administrator-chosen password against them, and
//! the generation of temporary passwords.
//!
//! This module owns [`PasswordRules`] (with its sanity check
//! [`PasswordRules::validate`], used at configuration load),
//! [`PasswordRules::check`], which reports every [`Violation`] at once with
//! a message that never repeats any part of the password, and
//! [`PasswordRules::generate`], which draws temporary passwords from the
//! operating system's CSPRNG.
//!
//! It also owns the breached-password index ([`BreachedIndex`], built by
//! [`build_index`]): the list of hashes is read and the index written
//! through the reader and writer the caller gives, and looked up in bytes
//! the caller maps.
//!
//! It is pure: no I/O of its own, no configuration access, no logging, no
//! global state. The caller supplies the rules, the user's words, the list
//! and the index's bytes; the only thing read from outside is the OS random
//! number generator. It uses nothing in the crate but [`crate::types`].
//!
//! # Characters
//!
//! Lengths are counted in Unicode scalar values (`char`s), not bytes. Each
//! character falls into one [`CharClass`]: lower-case and upper-case
//! letters of any script (`char::is_lowercase` / `is_uppercase`), digits
//! (`char::is_numeric`), and symbols: everything else that is allowed,
//! including spaces (so `Correct horse battery staple` uses three classes)
//! and letters without case, such as CJK. Control characters (NUL, tab,
//! line breaks...) and invisible formatting characters are refused.
//!
//! # Generation alphabets
//!
//! | class     | `exclude_lookalikes = true` (default) | `false`       |
//! |-----------|---------------------------------------|---------------|
//! | lower     | `abcdefghjkmnpqrtuvwxy` (21)          | `a`-`z` (26)  |
//! | upper     | `ACEFHJKMNPRTUVWXY` (17)              | `A`-`Z` (26)  |
//! | digit     | `34679` (5)                           | `0`-`9` (10)  |
//! | symbol    | `-` `.` `@` `_` (4)                   | the same (4)  |
//! | **total** | **47** (5.55 bits a character)        | **66** (6.04) |
//!
//! Left out as look-alikes: `0 O o D Q`, `1 l I i L`, `2 Z z`, `5 S s`,
//! `8 B` and `G` (like `6` and `C`). `6`, `9`, `b`, `g` and `q` stay: they
//! are distinct enough in the fonts of e-mails and printouts, and keep five
//! digits.
//!
//! The four symbols need no quoting or escaping anywhere in a word in POSIX
//! shells (zsh included), in JSON strings, in LDIF values, in URL paths and
//! query strings, and in CSV, and are on every keyboard layout. Quotes, the
//! backquote, backslash, `|`, `$`, `!`, `%`, `+`, `&`, `=`, `#`, `?`, `*`,
//! `~` and space are never generated. A generated password never starts or
//! ends with a symbol, so it is not taken for a command-line option nor
//! confused with the punctuation around it in an e-mail.

mod breached;
mod expiry;
mod generate;
mod rules;

pub use breached::{
    BreachedIndex, BreachedIndexError, BreachedListError, FINGERPRINT_BITS, INDEX_MAGIC,
    INDEX_VERSION, IndexSummary, ListStamp, SHARD_COUNT, build_index,
};
pub use expiry::{
    DEFAULT_THRESHOLDS_DAYS, Evaluation, ExpiryAction, ExpiryPolicy, MAX_MAX_AGE_DAYS,
    MAX_THRESHOLD_DAYS, MaxAge, Notice, PasswordFacts, evaluate, ledger_key,
};
pub use rules::{
    CharClass, MAX_ALLOWED_LENGTH, MIN_ALLOWED_LENGTH, MIN_BANNED_WORD_LENGTH,
    MIN_USER_INPUT_LENGTH, PasswordRules, Violation,
};

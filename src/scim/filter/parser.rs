//! The filter parser (RFC 7644 §3.4.2.2, figure 1), written with `winnow`: one function per
//! ABNF rule, named after it.
//!
//! ```text
//! FILTER    = attrExp / logExp / valuePath / *1"not" "(" FILTER ")"
//! valuePath = attrPath "[" valFilter "]"
//! valFilter = attrExp / logExp / *1"not" "(" valFilter ")"
//! attrExp   = (attrPath SP "pr") / (attrPath SP compareOp SP compValue)
//! logExp    = FILTER SP ("and" / "or") SP FILTER
//! compValue = false / null / true / number / string     ; JSON literals, RFC 8259
//! compareOp = "eq" / "ne" / "co" / "sw" / "ew" / "gt" / "lt" / "ge" / "le"
//! attrPath  = [URI ":"] ATTRNAME *1subAttr
//! ATTRNAME  = ALPHA *(nameChar)                          ; and "$ref", RFC 7643 §2.4
//! nameChar  = "-" / "_" / DIGIT / ALPHA
//! subAttr   = "." ATTRNAME
//! ```
//!
//! Beyond the ABNF, following the prose of §3.4.2.2 and what real clients send:
//!
//! - Precedence is `not` > `and` > `or`; parentheses group; `and`/`or` chains are
//!   left-associative. `not` must be followed by a parenthesised filter.
//! - Keywords (operators, `and`, `or`, `not`, `true`, `false`, `null`) and attribute names
//!   are case-insensitive; names keep the client's spelling in the tree.
//! - Whitespace is any run of spaces, tabs, CR or LF, and may be left out where nothing
//!   becomes ambiguous (`(a pr)and(b pr)`, `a eq"x"`). `and`, `or` and `not` are reserved:
//!   they cannot start an attribute expression.
//! - The attribute name of a URN-qualified path is what follows the last colon:
//!   `urn:ietf:params:scim:schemas:core:2.0:User:name.familyName` is URN
//!   `urn:ietf:params:scim:schemas:core:2.0:User`, name `name`, sub-attribute `familyName`.
//! - **Microsoft Entra ID** sends `emails[type eq "work"].value eq "user@contoso.com"`: a
//!   value path followed by `.subAttr op value`, which the ABNF does not allow. It means
//!   "some email is of type work and has this value", so it is parsed to the equivalent
//!   `emails[type eq "work" and value eq "user@contoso.com"]` (a [`Filter::ValuePath`] whose
//!   filter is `And(type eq "work", value eq "user@contoso.com")`). `pr` works too.
//! - Input longer than [`MAX_FILTER_LEN`] bytes, or nested (parentheses, `not (`, value
//!   path brackets) deeper than [`MAX_NESTING`] levels, is refused, so no input can make
//!   the parser, the printer or the translator run out of stack. No input panics.

use std::borrow::Cow;

use winnow::ascii::Caseless;
use winnow::error::{ErrMode, ParserError};
use winnow::prelude::*;
use winnow::stream::{Stateful, Stream};
use winnow::token::{literal, take, take_while};

use super::ast::{AttrPath, CompValue, CompareOp, Filter, JsonNumber, json_number_len};

/// The longest filter (or PATCH path) accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 8 * 1024;

/// The deepest nesting of parentheses and value-path brackets accepted.
pub const MAX_NESTING: usize = 64;

/// Why a filter or path did not parse.
///
/// `Display` gives one line for the `detail` of a SCIM `invalidFilter` / `invalidPath`
/// error: `at character 9: expected a comparison operator (eq, ne, co, sw, ew, gt, lt, ge,
/// le, pr), found "equals"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at character {position}: expected {expected}, found {found}")]
pub struct ParseError {
    /// Where the problem starts, counted in characters (Unicode scalar values) from the
    /// start of the input, starting at 0: the number of characters before it.
    pub position: usize,
    /// What the parser expected there, in words.
    pub expected: String,
    /// What it found: a quoted token (`"equals"`), or `end of input`.
    pub found: String,
}

pub(super) const EXPECTED_OPERATOR: &str =
    "a comparison operator (eq, ne, co, sw, ew, gt, lt, ge, le, pr)";
const EXPECTED_VALUE: &str = "a value (a JSON string, number, true, false or null)";
const EXPECTED_TERM: &str = "an attribute path, \"(\" or \"not (\"";
const EXPECTED_NAME: &str = "an attribute name (a letter, then letters, digits, \"-\" or \"_\")";

/// Parser state carried in the stream: how deep the parser is nested right now.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct State {
    depth: usize,
}

/// The stream every rule reads: the rest of the input, plus [`State`].
pub(super) type Input<'i> = Stateful<&'i str, State>;

/// A rule's result.
pub(super) type PResult<O> = ModalResult<O, Fail>;

/// A parse failure while parsing: where (as the number of bytes left) and what was
/// expected. Turned into a [`ParseError`] once, at the top.
#[derive(Debug, Clone)]
pub(super) struct Fail {
    rest: usize,
    expected: Cow<'static, str>,
    found: Option<String>,
}

impl<'i> ParserError<Input<'i>> for Fail {
    type Inner = Self;

    fn from_input(input: &Input<'i>) -> Self {
        Fail {
            rest: input.input.len(),
            expected: Cow::Borrowed("a valid filter"),
            found: None,
        }
    }

    /// winnow's default panics in debug builds when a combinator's internal assertion
    /// fails; this parser never panics, so it becomes an ordinary error.
    fn assert(input: &Input<'i>, _message: &'static str) -> Self {
        Self::from_input(input)
    }

    /// Of two alternatives, report the one that got further.
    fn or(self, other: Self) -> Self {
        if other.rest < self.rest { other } else { self }
    }

    fn into_inner(self) -> Result<Self::Inner, Self> {
        Ok(self)
    }
}

/// A committed error at the current position.
fn cut<O>(i: &Input<'_>, expected: impl Into<Cow<'static, str>>) -> PResult<O> {
    Err(ErrMode::Cut(Fail {
        rest: i.input.len(),
        expected: expected.into(),
        found: None,
    }))
}

/// A committed error at the current position, saying what was found.
fn cut_found<O>(
    i: &Input<'_>,
    expected: impl Into<Cow<'static, str>>,
    found: String,
) -> PResult<O> {
    Err(ErrMode::Cut(Fail {
        rest: i.input.len(),
        expected: expected.into(),
        found: Some(found),
    }))
}

/// "Not this rule": lets the caller try something else.
fn backtrack<O>(i: &Input<'_>) -> PResult<O> {
    Err(ErrMode::Backtrack(Fail::from_input(i)))
}

/// Run `rule` on the whole of `input`, turning a failure into a [`ParseError`].
pub(super) fn run<O>(
    input: &str,
    rule: impl FnOnce(&mut Input<'_>) -> PResult<O>,
) -> Result<O, ParseError> {
    if input.len() > MAX_FILTER_LEN {
        return Err(ParseError {
            position: 0,
            expected: format!("at most {MAX_FILTER_LEN} bytes"),
            found: format!("{} bytes", input.len()),
        });
    }
    let mut stream = Input {
        input,
        state: State::default(),
    };
    let fail = match rule(&mut stream) {
        Ok(out) => return Ok(out),
        Err(ErrMode::Backtrack(f) | ErrMode::Cut(f)) => f,
        Err(ErrMode::Incomplete(_)) => Fail {
            rest: 0,
            expected: Cow::Borrowed("more input"),
            found: None,
        },
    };
    let offset = input.len().saturating_sub(fail.rest);
    let before = input.get(..offset).unwrap_or(input);
    let rest = input.get(offset..).unwrap_or("");
    Err(ParseError {
        position: before.chars().count(),
        expected: fail.expected.into_owned(),
        found: fail.found.unwrap_or_else(|| describe(rest)),
    })
}

/// The token at the start of `rest`, for "found …": a word, one other character, or
/// `end of input`.
fn describe(rest: &str) -> String {
    let Some(first) = rest.chars().next() else {
        return "end of input".to_owned();
    };
    let is_word = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '$' | '.' | ':');
    let token = if is_word(first) {
        let end = rest.find(|c: char| !is_word(c)).unwrap_or(rest.len());
        &rest[..end]
    } else {
        &rest[..first.len_utf8()]
    };
    quote(token)
}

/// `"token"`, escaped, cut at 32 characters.
fn quote(token: &str) -> String {
    let shown: String = token.chars().take(32).collect();
    let more = if token.chars().nth(32).is_some() {
        "…"
    } else {
        ""
    };
    let mut out = String::from("\"");
    for c in shown.chars() {
        if c == '\'' {
            out.push(c);
        } else {
            out.extend(c.escape_debug());
        }
    }
    out.push_str(more);
    out.push('"');
    out
}

/// Parse a SCIM filter (RFC 7644 §3.4.2.2), e.g. the `filter` query parameter after URL
/// decoding. Leading and trailing whitespace is allowed.
pub fn parse_filter(input: &str) -> Result<Filter, ParseError> {
    run(input, |i| {
        let f = filter(i)?;
        ws(i)?;
        end(i, "\"and\", \"or\" or the end of the filter")?;
        Ok(f)
    })
}

/// Succeeds only at the end of the input.
pub(super) fn end(i: &mut Input<'_>, expected: &'static str) -> PResult<()> {
    if i.input.is_empty() {
        Ok(())
    } else {
        cut(i, expected)
    }
}

/// Optional whitespace: spaces, tabs, CR, LF.
pub(super) fn ws(i: &mut Input<'_>) -> PResult<()> {
    take_while(0.., (' ', '\t', '\r', '\n'))
        .void()
        .parse_next(i)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// `word`, ignoring ASCII case, when not followed by a name character.
fn keyword(i: &mut Input<'_>, word: &'static str) -> PResult<()> {
    let start = i.checkpoint();
    let matched = literal::<_, _, ErrMode<Fail>>(Caseless(word)).parse_next(i);
    if matched.is_err() || i.input.starts_with(is_name_char) {
        i.reset(&start);
        return backtrack(i);
    }
    Ok(())
}

/// Run `rule` one nesting level deeper, refusing more than [`MAX_NESTING`] levels.
fn nested<'i, O>(i: &mut Input<'i>, rule: impl FnOnce(&mut Input<'i>) -> PResult<O>) -> PResult<O> {
    if i.state.depth >= MAX_NESTING {
        return cut_found(
            i,
            format!("at most {MAX_NESTING} nested parentheses or brackets"),
            "a filter nested too deeply".to_owned(),
        );
    }
    i.state.depth += 1;
    let out = rule(i);
    i.state.depth -= 1;
    out
}

/// `FILTER = attrExp / logExp / valuePath / *1"not" "(" FILTER ")"`.
pub(super) fn filter(i: &mut Input<'_>) -> PResult<Filter> {
    log_exp(i, false)
}

/// `valFilter = attrExp / logExp / *1"not" "(" valFilter ")"`: a filter inside a value
/// path's brackets, which cannot contain another value path.
pub(super) fn val_filter(i: &mut Input<'_>) -> PResult<Filter> {
    log_exp(i, true)
}

/// `logExp = FILTER SP ("and" / "or") SP FILTER`, with `and` binding tighter than `or`:
/// an `or`-chain of `and`-chains of terms, each chain left-associative.
pub(super) fn log_exp(i: &mut Input<'_>, in_value: bool) -> PResult<Filter> {
    let mut left = and_chain(i, in_value)?;
    loop {
        let before = i.checkpoint();
        ws(i)?;
        if keyword(i, "or").is_err() {
            i.reset(&before);
            return Ok(left);
        }
        let right = and_chain(i, in_value)?;
        left = Filter::or(left, right);
    }
}

/// Terms joined by `and`.
fn and_chain(i: &mut Input<'_>, in_value: bool) -> PResult<Filter> {
    let mut left = term(i, in_value)?;
    loop {
        let before = i.checkpoint();
        ws(i)?;
        if keyword(i, "and").is_err() {
            i.reset(&before);
            return Ok(left);
        }
        let right = term(i, in_value)?;
        left = Filter::and(left, right);
    }
}

/// One operand of `and`/`or`: `not (F)`, `(F)`, a value path or an attribute expression.
fn term(i: &mut Input<'_>, in_value: bool) -> PResult<Filter> {
    ws(i)?;
    if i.input.starts_with('(') {
        return group(i, in_value);
    }
    if keyword(i, "not").is_ok() {
        ws(i)?;
        if i.input.starts_with('(') {
            return group(i, in_value).map(Filter::negate);
        }
        return cut(i, "\"(\" after \"not\"");
    }
    let start = i.checkpoint();
    if keyword(i, "and").is_ok() || keyword(i, "or").is_ok() {
        i.reset(&start);
        return cut(i, EXPECTED_TERM);
    }
    if !i
        .input
        .starts_with(|c: char| c.is_ascii_alphabetic() || c == '$')
    {
        return cut(i, EXPECTED_TERM);
    }
    if in_value {
        return attr_exp(i);
    }
    match value_path(i) {
        Err(ErrMode::Backtrack(_)) => {
            i.reset(&start);
            attr_exp(i)
        }
        other => other,
    }
}

/// `"(" FILTER ")"` (or `valFilter` inside brackets).
fn group(i: &mut Input<'_>, in_value: bool) -> PResult<Filter> {
    nested(i, |i| {
        literal('(').void().parse_next(i)?;
        let f = log_exp(i, in_value)?;
        ws(i)?;
        if literal::<_, _, ErrMode<Fail>>(')').parse_next(i).is_err() {
            return cut(i, "\"and\", \"or\" or \")\"");
        }
        Ok(f)
    })
}

/// `valuePath = attrPath "[" valFilter "]"`, and Entra ID's
/// `attrPath "[" valFilter "]" subAttr SP compareOp SP compValue` (or `subAttr SP "pr"`),
/// which becomes `attrPath "[" valFilter and subAttrExp "]"`.
///
/// Backtracks when there is no `[` after the attribute path.
pub(super) fn value_path(i: &mut Input<'_>) -> PResult<Filter> {
    let path = attr_path(i)?;
    let after_path = i.checkpoint();
    ws(i)?;
    if !i.input.starts_with('[') {
        i.reset(&after_path);
        return backtrack(i);
    }
    let inner = bracketed(i)?;
    if i.input.starts_with('.') {
        let sub = sub_attr(i)?;
        let exp = attr_exp_rest(i, AttrPath::new(sub))?;
        return Ok(Filter::value_path(path, Filter::and(inner, exp)));
    }
    Ok(Filter::value_path(path, inner))
}

/// `"[" valFilter "]"`.
pub(super) fn bracketed(i: &mut Input<'_>) -> PResult<Filter> {
    nested(i, |i| {
        literal('[').void().parse_next(i)?;
        let f = val_filter(i)?;
        ws(i)?;
        if literal::<_, _, ErrMode<Fail>>(']').parse_next(i).is_err() {
            return cut(i, "\"and\", \"or\" or \"]\"");
        }
        Ok(f)
    })
}

/// `attrExp = (attrPath SP "pr") / (attrPath SP compareOp SP compValue)`.
pub(super) fn attr_exp(i: &mut Input<'_>) -> PResult<Filter> {
    let path = attr_path(i)?;
    let after_path = i.checkpoint();
    ws(i)?;
    if i.input.starts_with('[') {
        return cut(
            i,
            "a comparison operator (a value filter cannot contain another value path)",
        );
    }
    i.reset(&after_path);
    attr_exp_rest(i, path)
}

/// What follows the attribute path in an `attrExp`.
fn attr_exp_rest(i: &mut Input<'_>, path: AttrPath) -> PResult<Filter> {
    ws(i)?;
    match compare_op(i)? {
        None => Ok(Filter::Present(path)),
        Some(op) => {
            ws(i)?;
            let value = comp_value(i)?;
            Ok(Filter::Compare { path, op, value })
        }
    }
}

/// `compareOp = "eq" / "ne" / "co" / "sw" / "ew" / "gt" / "lt" / "ge" / "le"`, ignoring
/// case; also takes `pr` (returned as `None`), which the ABNF spells in `attrExp`.
pub(super) fn compare_op(i: &mut Input<'_>) -> PResult<Option<CompareOp>> {
    let start = i.checkpoint();
    let word = take_while(0.., is_name_char).parse_next(i)?;
    if word.eq_ignore_ascii_case("pr") {
        return Ok(None);
    }
    if let Some(op) = CompareOp::from_keyword(word) {
        return Ok(Some(op));
    }
    i.reset(&start);
    cut(i, EXPECTED_OPERATOR)
}

/// `compValue = false / null / true / number / string`.
pub(super) fn comp_value(i: &mut Input<'_>) -> PResult<CompValue> {
    match i.input.chars().next() {
        Some('"') => string(i).map(CompValue::String),
        Some(c) if c == '-' || c.is_ascii_digit() => number(i).map(CompValue::Number),
        Some(c) if c.is_ascii_alphabetic() => {
            let start = i.checkpoint();
            let word = take_while(1.., is_name_char).parse_next(i)?;
            match word.to_ascii_lowercase().as_str() {
                "true" => Ok(CompValue::Bool(true)),
                "false" => Ok(CompValue::Bool(false)),
                "null" => Ok(CompValue::Null),
                _ => {
                    i.reset(&start);
                    cut(i, EXPECTED_VALUE)
                }
            }
        }
        _ => cut(i, EXPECTED_VALUE),
    }
}

/// A JSON number (RFC 8259 §6).
fn number(i: &mut Input<'_>) -> PResult<JsonNumber> {
    let Some(len) = json_number_len(i.input) else {
        return cut(i, EXPECTED_VALUE);
    };
    let text = take(len).parse_next(i)?;
    match JsonNumber::new(text) {
        Some(n) => Ok(n),
        None => cut(i, EXPECTED_VALUE),
    }
}

/// A JSON string (RFC 8259 §7), unescaped: `\" \\ \/ \b \f \n \r \t \uXXXX`, with UTF-16
/// surrogate pairs joined. Unescaped control characters are refused, as in JSON.
fn string(i: &mut Input<'_>) -> PResult<String> {
    literal('"').void().parse_next(i)?;
    let mut out = String::new();
    loop {
        let chunk = take_while(0.., |c: char| c != '"' && c != '\\' && c >= ' ').parse_next(i)?;
        out.push_str(chunk);
        match i.input.chars().next() {
            Some('"') => {
                take(1usize).void().parse_next(i)?;
                return Ok(out);
            }
            Some('\\') => out.push(escape(i)?),
            Some(_) => {
                return cut(
                    i,
                    "a string character (control characters must be escaped, e.g. \\n)",
                );
            }
            None => return cut(i, "'\"' to close the string"),
        }
    }
}

const EXPECTED_ESCAPE: &str =
    "a JSON escape (\\\", \\\\, \\/, \\b, \\f, \\n, \\r, \\t or \\u and 4 hex digits)";

/// One escape sequence, at its backslash.
fn escape(i: &mut Input<'_>) -> PResult<char> {
    let start = i.checkpoint();
    let shown = quote(&i.input.chars().take(6).collect::<String>());
    let c = i.input.chars().nth(1);
    let simple = match c {
        Some('"') => Some('"'),
        Some('\\') => Some('\\'),
        Some('/') => Some('/'),
        Some('b') => Some('\u{8}'),
        Some('f') => Some('\u{c}'),
        Some('n') => Some('\n'),
        Some('r') => Some('\r'),
        Some('t') => Some('\t'),
        Some('u') => None,
        _ => return cut_found(i, EXPECTED_ESCAPE, shown),
    };
    take(2usize).void().parse_next(i)?;
    if let Some(c) = simple {
        return Ok(c);
    }
    let Some(unit) = hex4(i) else {
        i.reset(&start);
        return cut_found(i, EXPECTED_ESCAPE, shown);
    };
    match unit {
        0xD800..=0xDBFF => {
            let low_start = i.checkpoint();
            let low = if i.input.starts_with("\\u") {
                take(2usize).void().parse_next(i)?;
                hex4(i)
            } else {
                None
            };
            match low {
                Some(low @ 0xDC00..=0xDFFF) => {
                    let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                    match char::from_u32(code) {
                        Some(c) => Ok(c),
                        None => {
                            i.reset(&start);
                            cut_found(i, EXPECTED_ESCAPE, shown)
                        }
                    }
                }
                _ => {
                    i.reset(&low_start);
                    cut(
                        i,
                        "a low surrogate (\\uDC00 to \\uDFFF) after a high surrogate",
                    )
                }
            }
        }
        0xDC00..=0xDFFF => {
            i.reset(&start);
            cut_found(
                i,
                "a high surrogate (\\uD800 to \\uDBFF) before a low surrogate",
                shown,
            )
        }
        _ => match char::from_u32(unit) {
            Some(c) => Ok(c),
            None => {
                i.reset(&start);
                cut_found(i, EXPECTED_ESCAPE, shown)
            }
        },
    }
}

/// Four hex digits, as a number; consumes nothing when there are not four.
fn hex4(i: &mut Input<'_>) -> Option<u32> {
    let digits = i.input.get(..4)?;
    if !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let value = u32::from_str_radix(digits, 16).ok()?;
    take::<_, _, ErrMode<Fail>>(4usize).parse_next(i).ok()?;
    Some(value)
}

/// `attrPath = [URI ":"] ATTRNAME *1subAttr`.
pub(super) fn attr_path(i: &mut Input<'_>) -> PResult<AttrPath> {
    let urn = match uri(i) {
        Ok(u) => Some(u.to_owned()),
        Err(ErrMode::Backtrack(_)) => None,
        Err(e) => return Err(e),
    };
    let name = attr_name(i)?.to_owned();
    let sub_attr = match sub_attr(i) {
        Ok(s) => Some(s.to_owned()),
        Err(ErrMode::Backtrack(_)) => None,
        Err(e) => return Err(e),
    };
    if sub_attr.is_some() && i.input.starts_with('.') {
        return cut(i, "at most one sub-attribute in an attribute path");
    }
    Ok(AttrPath {
        urn,
        name,
        sub_attr,
    })
}

/// Characters of a schema URN as SCIM uses them (RFC 8141 NSS without the characters
/// that mean something in a filter), plus those of the name that follows it.
fn is_urn_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '-' | '_' | '$')
}

/// `URI` in `[URI ":"]`: everything up to the last colon of the run of URN characters,
/// consuming that colon too. Backtracks when the run has no colon.
pub(super) fn uri<'i>(i: &mut Input<'i>) -> PResult<&'i str> {
    let run_len = i.input.find(|c| !is_urn_char(c)).unwrap_or(i.input.len());
    let Some(colon) = i.input[..run_len].rfind(':') else {
        return backtrack(i);
    };
    if !i.input.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return cut(i, "a URI starting with a letter");
    }
    let with_colon = take(colon + 1).parse_next(i)?;
    Ok(&with_colon[..colon])
}

/// `ATTRNAME = ALPHA *(nameChar)`, or `$ref` (RFC 7643 §2.4), ignoring case.
pub(super) fn attr_name<'i>(i: &mut Input<'i>) -> PResult<&'i str> {
    if i.input.starts_with('$') {
        let start = i.checkpoint();
        let dollar_ref = literal::<_, _, ErrMode<Fail>>(Caseless("$ref")).parse_next(i);
        match dollar_ref {
            Ok(name) if !i.input.starts_with(is_name_char) => return Ok(name),
            _ => {
                i.reset(&start);
                return cut(i, EXPECTED_NAME);
            }
        }
    }
    if !i.input.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return cut(i, EXPECTED_NAME);
    }
    take_while(1.., is_name_char).parse_next(i)
}

/// `subAttr = "." ATTRNAME`. Backtracks when there is no `.`.
pub(super) fn sub_attr<'i>(i: &mut Input<'i>) -> PResult<&'i str> {
    if !i.input.starts_with('.') {
        return backtrack(i);
    }
    take(1usize).void().parse_next(i)?;
    attr_name(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const CORE: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    const PASSWORD: &str = "urn:lockbridge:params:scim:schemas:extension:password:2.0:User";

    fn p(name: &str) -> AttrPath {
        AttrPath::new(name)
    }
    fn ps(name: &str, sub: &str) -> AttrPath {
        AttrPath::new(name).with_sub_attr(sub)
    }
    fn s(v: &str) -> CompValue {
        CompValue::string(v)
    }
    fn num(v: &str) -> CompValue {
        CompValue::Number(JsonNumber::new(v).expect("a number"))
    }
    fn cmp(path: AttrPath, op: CompareOp, value: CompValue) -> Filter {
        Filter::compare(path, op, value)
    }
    fn and(a: Filter, b: Filter) -> Filter {
        Filter::and(a, b)
    }
    fn or(a: Filter, b: Filter) -> Filter {
        Filter::or(a, b)
    }
    fn pr(path: AttrPath) -> Filter {
        Filter::present(path)
    }
    fn vp(path: AttrPath, f: Filter) -> Filter {
        Filter::value_path(path, f)
    }
    use CompareOp::*;

    /// Every example of RFC 7644 §3.4.2.2, then the filters Entra ID and Okta document,
    /// then odd spellings.
    #[rstest]
    // RFC 7644 §3.4.2.2 examples
    #[case(r#"userName eq "bjensen""#, cmp(p("userName"), Eq, s("bjensen")))]
    #[case(
        r#"name.familyName co "O'Malley""#,
        cmp(ps("name", "familyName"), Co, s("O'Malley"))
    )]
    #[case(r#"userName sw "J""#, cmp(p("userName"), Sw, s("J")))]
    #[case(
        r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#,
        cmp(AttrPath::with_urn(CORE, "userName"), Sw, s("J"))
    )]
    #[case("title pr", pr(p("title")))]
    #[case(
        r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
        cmp(ps("meta", "lastModified"), Gt, s("2011-05-13T04:42:34Z"))
    )]
    #[case(
        r#"meta.lastModified ge "2011-05-13T04:42:34Z""#,
        cmp(ps("meta", "lastModified"), Ge, s("2011-05-13T04:42:34Z"))
    )]
    #[case(
        r#"meta.lastModified lt "2011-05-13T04:42:34Z""#,
        cmp(ps("meta", "lastModified"), Lt, s("2011-05-13T04:42:34Z"))
    )]
    #[case(
        r#"meta.lastModified le "2011-05-13T04:42:34Z""#,
        cmp(ps("meta", "lastModified"), Le, s("2011-05-13T04:42:34Z"))
    )]
    #[case(
        r#"title pr and userType eq "Employee""#,
        and(pr(p("title")), cmp(p("userType"), Eq, s("Employee")))
    )]
    #[case(
        r#"title pr or userType eq "Intern""#,
        or(pr(p("title")), cmp(p("userType"), Eq, s("Intern")))
    )]
    #[case(
        r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#,
        cmp(p("schemas"), Eq, s(ENTERPRISE))
    )]
    #[case(
        r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#,
        and(
            cmp(p("userType"), Eq, s("Employee")),
            or(
                cmp(p("emails"), Co, s("example.com")),
                cmp(ps("emails", "value"), Co, s("example.org"))
            )
        )
    )]
    #[case(
        r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#,
        and(
            cmp(p("userType"), Ne, s("Employee")),
            Filter::negate(or(
                cmp(p("emails"), Co, s("example.com")),
                cmp(ps("emails", "value"), Co, s("example.org"))
            ))
        )
    )]
    #[case(
        r#"userType eq "Employee" and (emails.type eq "work")"#,
        and(
            cmp(p("userType"), Eq, s("Employee")),
            cmp(ps("emails", "type"), Eq, s("work"))
        )
    )]
    #[case(
        r#"userType eq "Employee" and emails[type eq "work" and value co "@example.com"]"#,
        and(
            cmp(p("userType"), Eq, s("Employee")),
            vp(
                p("emails"),
                and(cmp(p("type"), Eq, s("work")), cmp(p("value"), Co, s("@example.com")))
            )
        )
    )]
    #[case(
        r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
        or(
            vp(p("emails"), and(cmp(p("type"), Eq, s("work")), cmp(p("value"), Co, s("@example.com")))),
            vp(p("ims"), and(cmp(p("type"), Eq, s("xmpp")), cmp(p("value"), Co, s("@foo.com"))))
        )
    )]
    // Entra ID and Okta
    #[case(r#"userName eq "x""#, cmp(p("userName"), Eq, s("x")))]
    #[case(r#"externalId eq "x""#, cmp(p("externalId"), Eq, s("x")))]
    #[case(
        r#"emails[type eq "work"].value eq "user@contoso.com""#,
        vp(
            p("emails"),
            and(
                cmp(p("type"), Eq, s("work")),
                cmp(p("value"), Eq, s("user@contoso.com"))
            )
        )
    )]
    #[case(
        r#"emails[type eq "work"].value pr"#,
        vp(p("emails"), and(cmp(p("type"), Eq, s("work")), pr(p("value"))))
    )]
    #[case(r#"displayName eq "Group""#, cmp(p("displayName"), Eq, s("Group")))]
    #[case(
        r#"id eq "g" and members eq "u""#,
        and(cmp(p("id"), Eq, s("g")), cmp(p("members"), Eq, s("u")))
    )]
    #[case(
        r#"id eq "g" and members[value eq "u"]"#,
        and(
            cmp(p("id"), Eq, s("g")),
            vp(p("members"), cmp(p("value"), Eq, s("u")))
        )
    )]
    // URN-qualified extension attributes
    #[case(
        r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#,
        cmp(AttrPath::with_urn(ENTERPRISE, "employeeNumber"), Eq, s("701984"))
    )]
    #[case(
        r#"urn:lockbridge:params:scim:schemas:extension:password:2.0:User:mustChange eq true"#,
        cmp(AttrPath::with_urn(PASSWORD, "mustChange"), Eq, CompValue::Bool(true))
    )]
    #[case(
        r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915""#,
        cmp(AttrPath::with_urn(ENTERPRISE, "manager").with_sub_attr("value"), Eq, s("26118915"))
    )]
    #[case(r#"members.$ref pr"#, pr(ps("members", "$ref")))]
    // odd case and values
    #[case(r#"USERNAME EQ "x""#, cmp(p("USERNAME"), Eq, s("x")))]
    #[case(r#"userName Eq "x""#, cmp(p("userName"), Eq, s("x")))]
    #[case("title PR", pr(p("title")))]
    #[case("a pr AND b pr OR c pr", or(and(pr(p("a")), pr(p("b"))), pr(p("c"))))]
    #[case("NOT (a pr)", Filter::negate(pr(p("a"))))]
    #[case("active eq TRUE", cmp(p("active"), Eq, CompValue::Bool(true)))]
    #[case("active eq False", cmp(p("active"), Eq, CompValue::Bool(false)))]
    #[case("manager eq NULL", cmp(p("manager"), Eq, CompValue::Null))]
    #[case("age gt 21", cmp(p("age"), Gt, num("21")))]
    #[case("x le -1.50e+3", cmp(p("x"), Le, num("-1.50e+3")))]
    #[case("x eq 0", cmp(p("x"), Eq, num("0")))]
    #[case(
        r#"x eq "a\"b\\c\/d\b\f\n\r\t""#,
        cmp(p("x"), Eq, s("a\"b\\c/d\u{8}\u{c}\n\r\t"))
    )]
    #[case(r#"x eq "\u00e9\u20AC \uD83D\uDE00""#, cmp(p("x"), Eq, s("é€ 😀")))]
    #[case(r#"x eq "Jürgen 李""#, cmp(p("x"), Eq, s("Jürgen 李")))]
    #[case(r#"x eq """#, cmp(p("x"), Eq, s("")))]
    // whitespace
    #[case("  title   pr  ", pr(p("title")))]
    #[case("title\tpr", pr(p("title")))]
    #[case("userName\teq\t\"x\"", cmp(p("userName"), Eq, s("x")))]
    #[case("userName  eq   \"x\"\r\n", cmp(p("userName"), Eq, s("x")))]
    #[case("userName eq\"x\"", cmp(p("userName"), Eq, s("x")))]
    #[case("(a pr)and(b pr)", and(pr(p("a")), pr(p("b"))))]
    #[case("( a pr )", pr(p("a")))]
    #[case("not(a pr)", Filter::negate(pr(p("a"))))]
    #[case(
        r#"emails [ type eq "work" ]"#,
        vp(p("emails"), cmp(p("type"), Eq, s("work")))
    )]
    // precedence and grouping
    #[case("a pr or b pr and c pr", or(pr(p("a")), and(pr(p("b")), pr(p("c")))))]
    #[case("(a pr or b pr) and c pr", and(or(pr(p("a")), pr(p("b"))), pr(p("c"))))]
    #[case("a pr and b pr and c pr", and(and(pr(p("a")), pr(p("b"))), pr(p("c"))))]
    #[case(
        "a pr and (b pr and c pr)",
        and(pr(p("a")), and(pr(p("b")), pr(p("c"))))
    )]
    #[case("((a pr))", pr(p("a")))]
    #[case("not (a pr) and b pr", and(Filter::negate(pr(p("a"))), pr(p("b"))))]
    #[case("not (not (a pr))", Filter::negate(Filter::negate(pr(p("a")))))]
    #[case(
        r#"emails[not (type eq "home")]"#,
        vp(p("emails"), Filter::negate(cmp(p("type"), Eq, s("home"))))
    )]
    // names that start like keywords are names
    #[case("notes pr", pr(p("notes")))]
    #[case("order pr", pr(p("order")))]
    #[case("android pr", pr(p("android")))]
    #[case("nullable eq null", cmp(p("nullable"), Eq, CompValue::Null))]
    fn parses(#[case] input: &str, #[case] expected: Filter) {
        assert_eq!(parse_filter(input), Ok(expected), "{input}");
    }

    #[rstest]
    #[case(r#"userName equals "x""#, 9, EXPECTED_OPERATOR, "\"equals\"")]
    #[case("userName eq", 11, EXPECTED_VALUE, "end of input")]
    #[case("userName", 8, EXPECTED_OPERATOR, "end of input")]
    #[case(r#"(userName eq "x""#, 16, "\"and\", \"or\" or \")\"", "end of input")]
    #[case(
        r#"userName eq "unterminated"#,
        25,
        "'\"' to close the string",
        "end of input"
    )]
    #[case(
        r#"emails[type eq "work""#,
        21,
        "\"and\", \"or\" or \"]\"",
        "end of input"
    )]
    #[case("and", 0, EXPECTED_TERM, "\"and\"")]
    #[case("", 0, EXPECTED_TERM, "end of input")]
    #[case("   ", 3, EXPECTED_TERM, "end of input")]
    #[case("a pr and", 8, EXPECTED_TERM, "end of input")]
    #[case("a pr or or b pr", 8, EXPECTED_TERM, "\"or\"")]
    #[case(
        r#"userName eq "x" userName eq "y""#,
        16,
        "\"and\", \"or\" or the end of the filter",
        "\"userName\""
    )]
    #[case(
        r#"userName eq "x")"#,
        15,
        "\"and\", \"or\" or the end of the filter",
        "\")\""
    )]
    #[case("userName eq bob", 12, EXPECTED_VALUE, "\"bob\"")]
    #[case("userName eq 'x'", 12, EXPECTED_VALUE, "\"'\"")]
    #[case("x eq 01", 6, "\"and\", \"or\" or the end of the filter", "\"1\"")]
    #[case("x eq -", 5, EXPECTED_VALUE, "\"-\"")]
    #[case(r#"x eq "\q""#, 6, EXPECTED_ESCAPE, "\"\\\\q\\\"\"")]
    #[case(r#"x eq "\u12""#, 6, EXPECTED_ESCAPE, "\"\\\\u12\\\"\"")]
    #[case(
        r#"x eq "\uD83D""#,
        12,
        "a low surrogate (\\uDC00 to \\uDFFF) after a high surrogate",
        "\"\\\"\""
    )]
    #[case(
        r#"x eq "\uDE00""#,
        6,
        "a high surrogate (\\uD800 to \\uDBFF) before a low surrogate",
        "\"\\\\uDE00\""
    )]
    #[case(
        "x eq \"a\tb\"",
        7,
        "a string character (control characters must be escaped, e.g. \\n)",
        "\"\\t\""
    )]
    #[case("not a pr", 4, "\"(\" after \"not\"", "\"a\"")]
    #[case("1abc pr", 0, EXPECTED_TERM, "\"1abc\"")]
    #[case(
        "a.b.c pr",
        3,
        "at most one sub-attribute in an attribute path",
        "\".c\""
    )]
    #[case("a. pr", 2, EXPECTED_NAME, "\" \"")]
    #[case(
        r#"emails[value[x eq 1]]"#,
        12,
        "a comparison operator (a value filter cannot contain another value path)",
        "\"[\""
    )]
    #[case("urn:x: pr", 6, EXPECTED_NAME, "\" \"")]
    #[case(
        r#"emails[type eq "work"].value equals "x""#,
        29,
        EXPECTED_OPERATOR,
        "\"equals\""
    )]
    #[case("ü eq 1", 0, EXPECTED_TERM, "\"ü\"")]
    #[case(
        r#"name eq "ü" x"#,
        12,
        "\"and\", \"or\" or the end of the filter",
        "\"x\""
    )]
    fn refuses(
        #[case] input: &str,
        #[case] position: usize,
        #[case] expected: &str,
        #[case] found: &str,
    ) {
        let err = parse_filter(input).expect_err(input);
        assert_eq!(
            (err.position, err.expected.as_str(), err.found.as_str()),
            (position, expected, found),
            "{input}: {err}"
        );
    }

    #[test]
    fn error_message_reads_as_one_line() {
        let err = parse_filter(r#"userName equals "x""#).expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "at character 9: expected a comparison operator (eq, ne, co, sw, ew, gt, lt, ge, \
             le, pr), found \"equals\""
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!("{}a pr{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert_eq!(parse_filter(&ok), Ok(pr(p("a"))));
        let deep = format!(
            "{}a pr{}",
            "(".repeat(MAX_NESTING + 1),
            ")".repeat(MAX_NESTING + 1)
        );
        let err = parse_filter(&deep).expect_err("too deep");
        assert_eq!(err.found, "a filter nested too deeply");
        assert_eq!(err.position, MAX_NESTING);
        let nots = format!("{}a pr{}", "not (".repeat(100), ")".repeat(100));
        assert!(parse_filter(&nots).is_err());
        // brackets count too
        let mixed = format!(
            "a[{}b pr{}]",
            "(".repeat(MAX_NESTING),
            ")".repeat(MAX_NESTING)
        );
        assert_eq!(
            parse_filter(&mixed).map_err(|e| e.found),
            Err("a filter nested too deeply".to_owned())
        );
        // a huge unbalanced prefix is an error, not a stack overflow
        assert!(parse_filter(&"(".repeat(MAX_FILTER_LEN)).is_err());
        assert!(parse_filter(&"not (".repeat(MAX_FILTER_LEN / 5)).is_err());
    }

    #[test]
    fn length_is_bounded() {
        let long = format!("x eq \"{}\"", "a".repeat(MAX_FILTER_LEN));
        let err = parse_filter(&long).expect_err("too long");
        assert_eq!(err.expected, format!("at most {MAX_FILTER_LEN} bytes"));
        // a long chain just under the limit parses (and left-nests without trouble)
        let mut chain = String::from("a pr");
        while chain.len() + 9 < MAX_FILTER_LEN {
            chain.push_str(" and a pr");
        }
        let f = parse_filter(&chain).expect("a long chain");
        assert!(matches!(f, Filter::And(..)));
        assert_eq!(parse_filter(&f.to_string()), Ok(f));
    }
}

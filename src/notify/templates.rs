//! Message templates: the built-in defaults, the operator's overrides, and rendering.
//!
//! Owns [`Templates`] (a minijinja environment) and [`RenderedMail`]. A message kind
//! `NAME` is three files: `NAME.subject.txt`, `NAME.txt` (plain text) and `NAME.html`
//! (HTML, auto-escaped), plus an optional `NAME.csv` rendered into a CSV attachment
//! (auto-escaped for CSV, see [`csv_field`]). The shipped defaults are the files in
//! `config/templates/`, embedded at compile time; a file with the same name in the
//! operator's template folder wins, and that folder may add files of its own (for
//! `{% include %}`). Undefined variables are errors, never silently empty text.
//!
//! It must not send, store or log anything, and must not keep rendered mail: a rendered
//! body can hold a password.

use std::fmt;
use std::path::Path;

use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};
use serde_json::json;

use super::NotifyError;

/// The "your password was reset" message (variables: `display_name`, `user_name`,
/// `password`, `require_change`, `reset_by`, `public_url`, optional `organization`).
pub const TEMPORARY_PASSWORD: &str = "temporary-password";

/// "Your password expires in N days" (variables: `display_name`, `user_name`,
/// `expires_at_local`, `days_left` (an integer), `change_password_url`, optional
/// `organization`).
pub const PASSWORD_EXPIRING: &str = "password-expiring";

/// "Your password has expired" (variables: `display_name`, `user_name`,
/// `expired_at_local`, `action` (`nothing`, `require-change` or `lock`),
/// `change_password_url`, optional `organization`).
pub const PASSWORD_EXPIRED: &str = "password-expired";

/// The administrators' report after a sweep, with a CSV attachment (variables:
/// `sweep_at_local`, `counts`, `expiring`, `expired`, `not_notified`, optional
/// `organization` and `attachment_name`; see `config/templates/README.md`).
pub const EXPIRY_DIGEST: &str = "expiry-digest";
/// A self-service security code (the code is the sealed secret, `password` in the
/// template).
pub const SECURITY_CODE: &str = "security-code";
/// "Your password was changed; if this wasn't you ...".
pub const PASSWORD_CHANGED: &str = "password-changed";
/// A user's "contact an administrator" request, to the administrators.
pub const RESET_REQUEST: &str = "reset-request";
/// A first-password link (the link's token is the sealed secret).
pub const WELCOME: &str = "welcome";

/// The template variable that names a message's attachment file.
pub const ATTACHMENT_NAME_VARIABLE: &str = "attachment_name";

/// Builds the sample variables for one message kind.
type SampleContext = fn() -> serde_json::Value;

/// Every message kind lockbridge sends, with a sample context used by
/// [`Templates::check`] to prove the templates render.
const KINDS: &[(&str, SampleContext)] = &[
    (TEMPORARY_PASSWORD, sample_temporary_password),
    (PASSWORD_EXPIRING, sample_password_expiring),
    (PASSWORD_EXPIRED, sample_password_expired),
    (EXPIRY_DIGEST, sample_expiry_digest),
    (SECURITY_CODE, sample_security_code),
    (PASSWORD_CHANGED, sample_password_changed),
    (RESET_REQUEST, sample_reset_request),
    (WELCOME, sample_welcome),
];

/// The auto-escape mode of `.csv` templates.
const CSV: AutoEscape = AutoEscape::Custom("csv");

/// The MIME type of a CSV attachment.
const CSV_CONTENT_TYPE: &str = "text/csv; charset=utf-8; header=present";

/// The shipped defaults (`config/templates/`), by file name.
const BUILTIN: &[(&str, &str)] = &[
    (
        "temporary-password.subject.txt",
        include_str!("../../config/templates/temporary-password.subject.txt"),
    ),
    (
        "temporary-password.txt",
        include_str!("../../config/templates/temporary-password.txt"),
    ),
    (
        "temporary-password.html",
        include_str!("../../config/templates/temporary-password.html"),
    ),
    (
        "password-expiring.subject.txt",
        include_str!("../../config/templates/password-expiring.subject.txt"),
    ),
    (
        "password-expiring.txt",
        include_str!("../../config/templates/password-expiring.txt"),
    ),
    (
        "password-expiring.html",
        include_str!("../../config/templates/password-expiring.html"),
    ),
    (
        "password-expired.subject.txt",
        include_str!("../../config/templates/password-expired.subject.txt"),
    ),
    (
        "password-expired.txt",
        include_str!("../../config/templates/password-expired.txt"),
    ),
    (
        "password-expired.html",
        include_str!("../../config/templates/password-expired.html"),
    ),
    (
        "expiry-digest.subject.txt",
        include_str!("../../config/templates/expiry-digest.subject.txt"),
    ),
    (
        "expiry-digest.txt",
        include_str!("../../config/templates/expiry-digest.txt"),
    ),
    (
        "expiry-digest.html",
        include_str!("../../config/templates/expiry-digest.html"),
    ),
    (
        "expiry-digest.csv",
        include_str!("../../config/templates/expiry-digest.csv"),
    ),
    (
        "security-code.subject.txt",
        include_str!("../../config/templates/security-code.subject.txt"),
    ),
    (
        "security-code.txt",
        include_str!("../../config/templates/security-code.txt"),
    ),
    (
        "security-code.html",
        include_str!("../../config/templates/security-code.html"),
    ),
    (
        "password-changed.subject.txt",
        include_str!("../../config/templates/password-changed.subject.txt"),
    ),
    (
        "password-changed.txt",
        include_str!("../../config/templates/password-changed.txt"),
    ),
    (
        "password-changed.html",
        include_str!("../../config/templates/password-changed.html"),
    ),
    (
        "reset-request.subject.txt",
        include_str!("../../config/templates/reset-request.subject.txt"),
    ),
    (
        "reset-request.txt",
        include_str!("../../config/templates/reset-request.txt"),
    ),
    (
        "reset-request.html",
        include_str!("../../config/templates/reset-request.html"),
    ),
    (
        "welcome.subject.txt",
        include_str!("../../config/templates/welcome.subject.txt"),
    ),
    (
        "welcome.txt",
        include_str!("../../config/templates/welcome.txt"),
    ),
    (
        "welcome.html",
        include_str!("../../config/templates/welcome.html"),
    ),
];

fn sample_temporary_password() -> serde_json::Value {
    json!({
        "display_name": "Ada Lovelace",
        "user_name": "ada",
        "password": "Sample-Temp-Pass-42",
        "require_change": true,
        "reset_by": "helpdesk",
        "public_url": "https://lockbridge.example.org",
    })
}

fn sample_security_code() -> serde_json::Value {
    json!({
        "display_name": "Ada Lovelace",
        "user_name": "ada",
        "password": "48213307",
        "valid_minutes": 10,
    })
}

fn sample_password_changed() -> serde_json::Value {
    json!({
        "display_name": "Ada Lovelace",
        "user_name": "ada",
        "changed_at": "Monday 3 March 2025, 14:00 UTC",
        "how": "reset with the self-service page after verification",
        "public_url": "https://lockbridge.example.org",
    })
}

fn sample_reset_request() -> serde_json::Value {
    json!({
        "display_name": "Ada Lovelace",
        "user_name": "ada",
        "requested_at": "Monday 3 March 2025, 14:00 UTC",
        "request_id": "0190b8a4-7c1e-7d7a-9d4e-3b2a1c0f9e8d",
    })
}

fn sample_welcome() -> serde_json::Value {
    json!({
        "display_name": "Ada Lovelace",
        "user_name": "ada",
        "password": "x7Qb1m9ZkLr2Vd4Ew8Ty",
        "expires_at": "Tuesday 4 March 2025, 14:00 UTC",
        "public_url": "https://lockbridge.example.org",
    })
}

fn sample_password_expiring() -> serde_json::Value {
    json!({
        "display_name": "Ada Lovelace",
        "user_name": "ada",
        "expires_at_local": "Monday 3 March 2025, 14:00 CET",
        "days_left": 7,
        "change_password_url": "https://lockbridge.example.org/password",
    })
}

fn sample_password_expired() -> serde_json::Value {
    json!({
        "display_name": "Ada Lovelace",
        "user_name": "ada",
        "expired_at_local": "Monday 3 March 2025, 14:00 CET",
        "action": "require-change",
        "change_password_url": "https://lockbridge.example.org/password",
    })
}

fn sample_expiry_digest() -> serde_json::Value {
    json!({
        "sweep_at_local": "Monday 24 February 2025, 06:00 CET",
        "counts": {"scanned": 1200, "notified": 1, "expiring": 1, "expired": 1, "not_notified": 1},
        "expiring": [{
            "user_name": "ada",
            "display_name": "Ada Lovelace",
            "mail": "ada@example.org",
            "expires_at_local": "Monday 3 March 2025, 14:00 CET",
            "days_left": 7,
        }],
        "expired": [{
            "user_name": "alan",
            "display_name": "Alan Turing",
            "mail": null,
            "expired_at_local": "Sunday 23 February 2025, 09:00 CET",
        }],
        "not_notified": [{"user_name": "alan", "reason": "no mail address"}],
        "attachment_name": "password-expiry-2025-02-24.csv",
    })
}

/// One rendered message. Its `Debug` shows only the subject and the attachment's name:
/// the bodies may hold a password.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedMail {
    /// One line, whitespace collapsed.
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The file rendered from `NAME.csv`, when the kind has one.
    pub attachment: Option<MailAttachment>,
}

impl fmt::Debug for RenderedMail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderedMail")
            .field("subject", &self.subject)
            .field("text", &format_args!("[{} bytes]", self.text.len()))
            .field("html", &format_args!("[{} bytes]", self.html.len()))
            .field("attachment", &self.attachment)
            .finish()
    }
}

/// A file sent with a message.
#[derive(Clone, PartialEq, Eq)]
pub struct MailAttachment {
    /// A safe file name (letters, digits, `.`, `_`, `-`), e.g. `password-expiry-2025-03-03.csv`.
    pub file_name: String,
    /// The MIME type, e.g. `text/csv; charset=utf-8; header=present`.
    pub content_type: String,
    pub content: String,
}

impl fmt::Debug for MailAttachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailAttachment")
            .field("file_name", &self.file_name)
            .field("content_type", &self.content_type)
            .field("content", &format_args!("[{} bytes]", self.content.len()))
            .finish()
    }
}

/// One CSV field (RFC 4180), safe to open in a spreadsheet.
///
/// - A value that starts with `=`, `+`, `-`, `@`, a tab or a carriage return (or the
///   full-width `＝ ＋ － ＠`) gets a leading `'`, so a spreadsheet shows it as text
///   instead of running it as a formula (CSV / formula injection, OWASP).
/// - A value holding a comma, a double quote or a line break is then put in double
///   quotes, with each `"` doubled.
///
/// Numbers are not strings and are written as they are (`-3` stays a number); see
/// [`Templates`] for how template values reach this function.
pub fn csv_field(value: &str) -> String {
    const FORMULA_START: &[char] = &['=', '+', '-', '@', '\t', '\r', '＝', '＋', '－', '＠'];
    let mut field = String::with_capacity(value.len() + 3);
    if value.starts_with(FORMULA_START) {
        field.push('\'');
    }
    field.push_str(value);
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

/// A template value as a CSV field: none and undefined are empty, numbers are written
/// as they are, booleans as `true` / `false`, anything else goes through [`csv_field`].
fn csv_value(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => String::new(),
        ValueKind::Number => value.to_string(),
        ValueKind::Bool => (if value.is_true() { "true" } else { "false" }).to_string(),
        _ => csv_field(&value.to_string()),
    }
}

/// The `csv` filter: a value as one CSV field, marked safe so it is not escaped again.
fn csv_filter(value: &Value) -> Value {
    Value::from_safe_string(csv_value(value))
}

/// A safe attachment file name: `requested` (from the `attachment_name` variable) with
/// every character other than letters, digits, `.`, `_` and `-` replaced by `-`, at
/// most 100 characters, ending in `.csv`; `KIND.csv` when none is given.
fn attachment_file_name(kind: &str, requested: Option<&str>) -> String {
    let mut name: String = requested
        .unwrap_or(kind)
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    name = name.trim_start_matches('.').to_string();
    if name.is_empty() {
        name = kind.to_string();
    }
    if !name.to_ascii_lowercase().ends_with(".csv") {
        name.push_str(".csv");
    }
    name
}

/// Line breaks as CRLF (RFC 4180), whatever the template file used.
fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// The compiled message templates.
pub struct Templates {
    env: Environment<'static>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Templates {
    /// Loads and compiles every built-in template, replacing each with the file of the
    /// same name in `override_dir` when there is one. Fails on a missing or unreadable
    /// folder and on any template that does not compile.
    pub fn new(override_dir: Option<&Path>) -> Result<Templates, NotifyError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Debug mode would copy template variables (the password) into error values.
        env.set_debug(false);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(true);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") || name.ends_with(".htm") {
                AutoEscape::Html
            } else if name.ends_with(".csv") {
                CSV
            } else {
                AutoEscape::None
            }
        });
        // Every `{{ value }}` in a .csv template is one CSV field ([`csv_field`]); values
        // marked safe (`|safe`, `|csv`) are written as they are. Other templates keep the
        // default behaviour. Strict undefined still applies (checked before this runs).
        env.set_formatter(|out, state, value| {
            if state.auto_escape() == CSV {
                if value.is_safe() {
                    write!(out, "{value}")?;
                } else {
                    out.write_str(&csv_value(value))?;
                }
                Ok(())
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        env.add_filter("csv", csv_filter);

        if let Some(dir) = override_dir {
            if !dir.is_dir() {
                return Err(NotifyError::Config(format!(
                    "mail.templates_dir: {} is not a folder; create it or remove the setting \
                     to use the built-in templates",
                    dir.display()
                )));
            }
            // Extra files (includes, layouts, new kinds) come from the folder on demand.
            env.set_loader(minijinja::path_loader(dir));
        }

        for (name, builtin) in BUILTIN {
            let source = match override_dir.map(|d| d.join(name)) {
                Some(path) if path.exists() => std::fs::read_to_string(&path).map_err(|e| {
                    NotifyError::Config(format!(
                        "mail.templates_dir: cannot read {}: {e}",
                        path.display()
                    ))
                })?,
                _ => (*builtin).to_string(),
            };
            env.add_template_owned(*name, source)
                .map_err(|source| NotifyError::Template {
                    name: (*name).to_string(),
                    source,
                })?;
        }
        Ok(Templates { env })
    }

    /// The message kinds lockbridge sends.
    pub fn kinds() -> impl Iterator<Item = &'static str> {
        KINDS.iter().map(|(name, _)| *name)
    }

    /// Proves every message kind renders (attachment included): each template compiles
    /// and uses no variable lockbridge does not provide. For `check-config` and startup.
    pub fn check(&self) -> Result<(), NotifyError> {
        for (name, sample) in KINDS {
            self.render(name, &sample())?;
        }
        Ok(())
    }

    /// Renders message kind `name` with the variables in `ctx` (a JSON object).
    pub fn render(&self, name: &str, ctx: &serde_json::Value) -> Result<RenderedMail, NotifyError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(NotifyError::UnknownTemplate(name.to_string()));
        }
        if !ctx.is_object() {
            return Err(NotifyError::InvalidContext(
                "template variables must be a JSON object".into(),
            ));
        }
        let requested_name = ctx
            .get(ATTACHMENT_NAME_VARIABLE)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string);
        let ctx = minijinja::Value::from_serialize(ctx);
        let subject = self.render_file(name, &format!("{name}.subject.txt"), &ctx)?;
        let text = self.render_file(name, &format!("{name}.txt"), &ctx)?;
        let html = self.render_file(name, &format!("{name}.html"), &ctx)?;
        let attachment = self
            .render_optional_file(&format!("{name}.csv"), &ctx)?
            .map(|csv| MailAttachment {
                file_name: attachment_file_name(name, requested_name.as_deref()),
                content_type: CSV_CONTENT_TYPE.to_string(),
                // A byte-order mark, so that Excel reads the file as UTF-8.
                content: format!("\u{feff}{}", crlf(&csv)),
            });
        Ok(RenderedMail {
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            text,
            html,
            attachment,
        })
    }

    /// Renders `file` when it exists (built in or in the override folder); `None` when
    /// it does not.
    fn render_optional_file(
        &self,
        file: &str,
        ctx: &minijinja::Value,
    ) -> Result<Option<String>, NotifyError> {
        let template = match self.env.get_template(file) {
            Ok(template) => template,
            Err(e) if e.kind() == ErrorKind::TemplateNotFound => return Ok(None),
            Err(source) => {
                return Err(NotifyError::Template {
                    name: file.to_string(),
                    source,
                });
            }
        };
        template
            .render(ctx)
            .map(Some)
            .map_err(|source| NotifyError::Template {
                name: file.to_string(),
                source,
            })
    }

    fn render_file(
        &self,
        kind: &str,
        file: &str,
        ctx: &minijinja::Value,
    ) -> Result<String, NotifyError> {
        let template = self.env.get_template(file).map_err(|e| {
            if e.kind() == ErrorKind::TemplateNotFound {
                NotifyError::UnknownTemplate(kind.to_string())
            } else {
                NotifyError::Template {
                    name: file.to_string(),
                    source: e,
                }
            }
        })?;
        template
            .render(ctx)
            .map_err(|source| NotifyError::Template {
                name: file.to_string(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> serde_json::Value {
        json!({
            "display_name": "Grace <Hopper>",
            "user_name": "grace",
            "password": "Tmp&<Pass>42",
            "require_change": true,
            "reset_by": "helpdesk",
            "public_url": "https://pw.example.org",
        })
    }

    #[test]
    fn builtin_temporary_password_renders() {
        let t = Templates::new(None).expect("templates");
        let mail = t.render(TEMPORARY_PASSWORD, &context()).expect("render");
        assert_eq!(mail.subject, "Your account password has been reset");
        assert!(
            mail.text.contains("Temporary password: Tmp&<Pass>42"),
            "{}",
            mail.text
        );
        assert!(mail.text.contains("Hello Grace <Hopper>,"));
        assert!(mail.text.contains("next time"));
        assert!(mail.text.contains("https://pw.example.org"));
        assert!(!mail.text.contains("{%"), "no template syntax left");
        // HTML is escaped; the raw password never appears unescaped.
        assert!(
            mail.html.contains("Tmp&amp;&lt;Pass&gt;42"),
            "{}",
            mail.html
        );
        assert!(!mail.html.contains("Tmp&<Pass>"));
        assert!(mail.html.contains("Grace &lt;Hopper&gt;"));
        // The Debug form shows no body.
        assert!(!format!("{mail:?}").contains("Pass"));
    }

    #[test]
    fn organization_and_require_change_are_used() {
        let t = Templates::new(None).expect("templates");
        let mut ctx = context();
        ctx["organization"] = json!("Contoso");
        ctx["require_change"] = json!(false);
        let mail = t.render(TEMPORARY_PASSWORD, &ctx).expect("render");
        assert_eq!(mail.subject, "Your Contoso password has been reset");
        assert!(mail.text.contains("Your Contoso password has been reset"));
        assert!(mail.text.contains("sign in with this password now"));
        assert!(!mail.text.contains("next time"));
        assert!(mail.html.contains("Contoso"));
    }

    #[test]
    fn undefined_variables_are_errors() {
        let t = Templates::new(None).expect("templates");
        let mut ctx = context();
        ctx.as_object_mut().expect("object").remove("password");
        let err = t.render(TEMPORARY_PASSWORD, &ctx).expect_err("must fail");
        assert!(matches!(err, NotifyError::Template { .. }), "{err:?}");
        assert!(err.is_permanent());
        assert!(err.to_string().contains("undefined"), "{err}");
    }

    #[test]
    fn errors_never_carry_variable_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("temporary-password.txt"),
            "{{ password }} {{ nope }}",
        )
        .expect("write");
        let t = Templates::new(Some(dir.path())).expect("templates");
        let err = t
            .render(TEMPORARY_PASSWORD, &context())
            .expect_err("undefined");
        assert!(!format!("{err} {err:?} {err:#}").contains("Tmp&<Pass>42"));
    }

    #[test]
    fn unknown_kinds_and_bad_contexts() {
        let t = Templates::new(None).expect("templates");
        assert!(matches!(
            t.render("no-such-kind", &context()),
            Err(NotifyError::UnknownTemplate(_))
        ));
        assert!(matches!(
            t.render("../etc/passwd", &context()),
            Err(NotifyError::UnknownTemplate(_))
        ));
        assert!(matches!(
            t.render(TEMPORARY_PASSWORD, &json!([1])),
            Err(NotifyError::InvalidContext(_))
        ));
    }

    #[test]
    fn overrides_win_and_can_add_kinds() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("temporary-password.subject.txt"),
            "New password for {{ user_name }}\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("footer.txt"), "-- Contoso IT").expect("write");
        std::fs::write(dir.path().join("welcome.subject.txt"), "Welcome").expect("write");
        std::fs::write(
            dir.path().join("welcome.txt"),
            "Hi {{ user_name }}\n{% include 'footer.txt' %}",
        )
        .expect("write");
        std::fs::write(dir.path().join("welcome.html"), "<p>Hi {{ user_name }}</p>")
            .expect("write");
        let t = Templates::new(Some(dir.path())).expect("templates");
        t.check().expect("still valid");

        let mail = t.render(TEMPORARY_PASSWORD, &context()).expect("render");
        assert_eq!(mail.subject, "New password for grace");
        // Files not overridden keep the built-in text.
        assert!(mail.text.contains("Temporary password:"));

        let welcome = t
            .render("welcome", &json!({"user_name": "<b>"}))
            .expect("render");
        assert_eq!(welcome.text, "Hi <b>\n-- Contoso IT");
        assert_eq!(welcome.html, "<p>Hi &lt;b&gt;</p>");
    }

    #[test]
    fn check_catches_broken_overrides() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("temporary-password.html"),
            "<p>{{ user_name }</p>",
        )
        .expect("write");
        let err = Templates::new(Some(dir.path())).expect_err("syntax error at load");
        assert!(err.to_string().contains("temporary-password.html"), "{err}");

        std::fs::write(
            dir.path().join("temporary-password.html"),
            "<p>{{ employee_id }}</p>",
        )
        .expect("write");
        let t = Templates::new(Some(dir.path())).expect("compiles");
        let err = t.check().expect_err("unknown variable");
        assert!(err.to_string().contains("temporary-password.html"), "{err}");
    }

    #[test]
    fn missing_override_folder_is_a_clear_error() {
        let err = Templates::new(Some(Path::new("/nonexistent/lockbridge-templates")))
            .expect_err("missing folder");
        assert!(err.to_string().contains("mail.templates_dir"), "{err}");
    }

    #[test]
    fn builtin_templates_pass_check() {
        Templates::new(None)
            .expect("templates")
            .check()
            .expect("check");
        assert_eq!(
            Templates::kinds().collect::<Vec<_>>(),
            vec![
                TEMPORARY_PASSWORD,
                PASSWORD_EXPIRING,
                PASSWORD_EXPIRED,
                EXPIRY_DIGEST,
                SECURITY_CODE,
                PASSWORD_CHANGED,
                RESET_REQUEST,
                WELCOME
            ]
        );
    }

    fn expiring(days_left: i64) -> serde_json::Value {
        json!({
            "display_name": "Grace <Hopper>",
            "user_name": "grace",
            "expires_at_local": "Monday 3 March 2025, 14:00 CET",
            "days_left": days_left,
            "change_password_url": "https://pw.example.org/change?a=1&b=2",
        })
    }

    #[test]
    fn password_expiring_renders() {
        let t = Templates::new(None).expect("templates");
        let mail = t.render(PASSWORD_EXPIRING, &expiring(7)).expect("render");
        assert_eq!(mail.subject, "Your account password expires in 7 days");
        assert!(mail.text.contains("Hello Grace <Hopper>,"), "{}", mail.text);
        assert!(mail.text.contains("expires in 7 days."), "{}", mail.text);
        assert!(mail.text.contains("User name:  grace"));
        assert!(
            mail.text
                .contains("Expires:    Monday 3 March 2025, 14:00 CET")
        );
        assert!(
            mail.text
                .contains("    https://pw.example.org/change?a=1&b=2")
        );
        assert!(!mail.text.contains("{%") && !mail.text.contains("{{"));
        assert!(mail.html.contains("Grace &lt;Hopper&gt;"), "{}", mail.html);
        assert!(mail.html.contains("Your password expires in 7 days"));
        assert!(
            mail.html
                .contains("href=\"https:&#x2f;&#x2f;pw.example.org&#x2f;change?a=1&amp;b=2\""),
            "{}",
            mail.html
        );
        assert!(mail.attachment.is_none());

        let one = t.render(PASSWORD_EXPIRING, &expiring(1)).expect("render");
        assert_eq!(one.subject, "Your account password expires in 1 day");
        assert!(one.text.contains("expires in 1 day."));
        let today = t.render(PASSWORD_EXPIRING, &expiring(0)).expect("render");
        assert_eq!(
            today.subject,
            "Your account password expires in less than a day"
        );
        assert!(today.html.contains("expires in less than a day"));

        let mut ctx = expiring(3);
        ctx["organization"] = json!("Contoso");
        let mail = t.render(PASSWORD_EXPIRING, &ctx).expect("render");
        assert_eq!(mail.subject, "Your Contoso password expires in 3 days");
        assert!(
            mail.text
                .contains("The password of your Contoso account expires in 3 days.")
        );
        assert!(mail.html.contains("Contoso"));
    }

    #[test]
    fn password_expired_renders_each_action() {
        let t = Templates::new(None).expect("templates");
        let ctx = |action: &str| {
            json!({
                "display_name": "Grace",
                "user_name": "grace",
                "expired_at_local": "Sunday 2 March 2025, 09:00 CET",
                "action": action,
                "change_password_url": "https://pw.example.org",
                "organization": "Contoso",
            })
        };
        let lock = t.render(PASSWORD_EXPIRED, &ctx("lock")).expect("render");
        assert_eq!(
            lock.subject,
            "Your Contoso password has expired and your account is locked"
        );
        assert!(
            lock.text.contains("your account has been locked"),
            "{}",
            lock.text
        );
        assert!(lock.html.contains("your account has been locked"));
        assert!(!lock.html.contains("Change password</a>"));

        let change = t
            .render(PASSWORD_EXPIRED, &ctx("require-change"))
            .expect("render");
        assert_eq!(change.subject, "Your Contoso password has expired");
        assert!(change.text.contains("the next time you sign in"));
        assert!(change.html.contains("the next time you sign in"));
        assert!(change.html.contains("Change password</a>"));

        let nothing = t.render(PASSWORD_EXPIRED, &ctx("nothing")).expect("render");
        assert!(nothing.text.contains("Change your password now"));
        assert!(!nothing.text.contains("locked"));
        assert!(
            nothing
                .text
                .contains("Expired:    Sunday 2 March 2025, 09:00 CET")
        );
        for mail in [&lock, &change, &nothing] {
            assert!(mail.text.contains("https://pw.example.org"));
            assert!(mail.attachment.is_none());
        }
    }

    fn digest(expiring: Vec<serde_json::Value>) -> serde_json::Value {
        json!({
            "sweep_at_local": "Monday 24 February 2025, 06:00 CET",
            "counts": {
                "scanned": 1200,
                "notified": expiring.len(),
                "expiring": expiring.len(),
                "expired": 1,
                "not_notified": 1,
            },
            "expiring": expiring,
            "expired": [{
                "user_name": "alan",
                "display_name": "Alan Turing",
                "mail": null,
                "expired_at_local": "Sunday 23 February 2025, 09:00 CET",
            }],
            "not_notified": [{"user_name": "alan", "reason": "no mail address, \"none\""}],
            "attachment_name": "password-expiry-2025-02-24.csv",
        })
    }

    fn user(n: usize) -> serde_json::Value {
        json!({
            "user_name": format!("user{n}"),
            "display_name": format!("User {n}"),
            "mail": format!("user{n}@example.org"),
            "expires_at_local": "Monday 3 March 2025, 14:00 CET",
            "days_left": 7,
        })
    }

    #[test]
    fn expiry_digest_renders_with_an_escaped_csv_attachment() {
        let t = Templates::new(None).expect("templates");
        let hostile = json!({
            "user_name": "+cmd|' /C calc'!A0",
            "display_name": "=HYPERLINK(\"http://evil.example\",\"click\")",
            "mail": "@SUM(1+1)@example.org",
            "expires_at_local": "Tuesday 4 March 2025, 08:00 CET",
            "days_left": 1,
        });
        let mail = t
            .render(EXPIRY_DIGEST, &digest(vec![user(1), hostile]))
            .expect("render");
        assert_eq!(
            mail.subject,
            "Password expiry report: 2 expiring soon, 1 expired, 1 not notified"
        );
        assert!(
            mail.text
                .contains("Sweep of Monday 24 February 2025, 06:00 CET")
        );
        assert!(mail.text.contains("Accounts checked:        1200"));
        assert!(
            mail.text.contains(
                "- user1 (User 1), user1@example.org: Monday 3 March 2025, 14:00 CET, in 7 days"
            ),
            "{}",
            mail.text
        );
        assert!(mail.text.contains("in 1 day\n"));
        assert!(
            mail.text
                .contains("- alan (Alan Turing), no mail address: expired")
        );
        assert!(mail.text.contains("- alan: no mail address"));
        assert!(mail.html.contains("=HYPERLINK(&quot;http:&#x2f;&#x2f;evil"));
        assert!(
            mail.html
                .contains("<td style=\"padding:4px 8px 4px 0;\">—</td>")
        );

        let file = mail.attachment.expect("a CSV attachment");
        assert_eq!(file.file_name, "password-expiry-2025-02-24.csv");
        assert_eq!(file.content_type, "text/csv; charset=utf-8; header=present");
        let body = file
            .content
            .strip_prefix('\u{feff}')
            .expect("starts with a BOM");
        assert_eq!(
            body,
            "status,user_name,display_name,mail,expires_at,days_left,reason\r\n\
             expiring,user1,User 1,user1@example.org,\"Monday 3 March 2025, 14:00 CET\",7,\r\n\
             expiring,'+cmd|' /C calc'!A0,\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"click\"\")\",\
             '@SUM(1+1)@example.org,\"Tuesday 4 March 2025, 08:00 CET\",1,\r\n\
             expired,alan,Alan Turing,,\"Sunday 23 February 2025, 09:00 CET\",,\r\n\
             not_notified,alan,,,,,\"no mail address, \"\"none\"\"\"\r\n"
        );
        // Debug shows the file's name and size, not its content.
        let debug = format!("{file:?}");
        assert!(debug.contains("password-expiry-2025-02-24.csv") && !debug.contains("alan"));
    }

    #[test]
    fn long_digests_list_the_first_fifty_in_the_body_and_all_in_the_file() {
        let t = Templates::new(None).expect("templates");
        let mail = t
            .render(EXPIRY_DIGEST, &digest((1..=60).map(user).collect()))
            .expect("render");
        assert!(mail.text.contains("- user50 (User 50)"));
        assert!(!mail.text.contains("- user51 "));
        assert!(mail.text.contains("... and 10 more in the attached file."));
        assert!(mail.html.contains("… and 10 more in the attached file."));
        assert!(!mail.html.contains("user51"));
        let csv = mail.attachment.expect("attachment").content;
        assert!(csv.contains("\r\nexpiring,user60,"));
        assert_eq!(csv.matches("\r\n").count(), 1 + 60 + 1 + 1);

        // Empty sections say so.
        let mut empty = digest(Vec::new());
        empty["expired"] = json!([]);
        empty["not_notified"] = json!([]);
        let mail = t.render(EXPIRY_DIGEST, &empty).expect("render");
        assert_eq!(mail.text.matches("\nNone.\n").count(), 3, "{}", mail.text);
        assert_eq!(
            mail.attachment.expect("attachment").content,
            "\u{feff}status,user_name,display_name,mail,expires_at,days_left,reason\r\n"
        );
    }

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        for (value, field) in [
            ("plain", "plain"),
            ("", ""),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            ("cr\rhere", "\"cr\rhere\""),
            ("=1+2", "'=1+2"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@cmd", "'@cmd"),
            ("\t=x", "'\t=x"),
            ("\r=x", "\"'\r=x\""),
            ("＝1+2", "'＝1+2"),
            ("=A1,B1", "\"'=A1,B1\""),
            ("a=b", "a=b"),
            ("Zoë Ångström", "Zoë Ångström"),
        ] {
            assert_eq!(csv_field(value), field, "{value:?}");
        }
    }

    #[test]
    fn csv_templates_escape_every_value_unless_marked_safe() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (file, text) in [
            ("report.subject.txt", "Report"),
            ("report.txt", "{{ v|csv }}"),
            ("report.html", "<p>{{ v }}</p>"),
            (
                "report.csv",
                "{{ v }},{{ n }},{{ none }},{{ flag }},{{ v|csv }},{{ \"x,y\"|safe }}\n",
            ),
        ] {
            std::fs::write(dir.path().join(file), text).expect("write");
        }
        let t = Templates::new(Some(dir.path())).expect("templates");
        let mail = t
            .render(
                "report",
                &json!({"v": "=a,\"b\"", "n": -3, "none": null, "flag": true,
                        "attachment_name": "../../etc/pass wd"}),
            )
            .expect("render");
        let file = mail.attachment.expect("attachment");
        assert_eq!(
            file.content,
            "\u{feff}\"'=a,\"\"b\"\"\",-3,,true,\"'=a,\"\"b\"\"\",x,y\r\n"
        );
        assert_eq!(file.file_name, "-..-etc-pass-wd.csv");
        // The csv filter works outside .csv templates too.
        assert_eq!(mail.text, "\"'=a,\"\"b\"\"\"");
        // HTML keeps HTML escaping.
        assert_eq!(mail.html, "<p>=a,&quot;b&quot;</p>");

        // Without attachment_name the file is named after the kind.
        let mail = t
            .render(
                "report",
                &json!({"v": "x", "n": 1, "none": null, "flag": false}),
            )
            .expect("render");
        assert_eq!(mail.attachment.expect("attachment").file_name, "report.csv");
    }

    #[test]
    fn attachment_names_are_safe() {
        assert_eq!(
            attachment_file_name("k", Some("password-expiry-2025-03-03.csv")),
            "password-expiry-2025-03-03.csv"
        );
        assert_eq!(
            attachment_file_name("k", Some("report 2025/03")),
            "report-2025-03.csv"
        );
        assert_eq!(attachment_file_name("k", Some("...")), "k.csv");
        assert_eq!(
            attachment_file_name("k", Some("a\"b\r\nc.CSV")),
            "a-b--c.CSV"
        );
        assert_eq!(attachment_file_name("k", None), "k.csv");
        let long = "x".repeat(300);
        assert_eq!(attachment_file_name("k", Some(&long)).len(), 104);
    }

    #[test]
    fn broken_csv_overrides_are_caught_by_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("expiry-digest.csv"),
            "{% for u in expiring %}{{ u.employee_id }}\n{% endfor %}",
        )
        .expect("write");
        let t = Templates::new(Some(dir.path())).expect("compiles");
        let err = t.check().expect_err("unknown variable");
        assert!(err.to_string().contains("expiry-digest.csv"), "{err}");
        assert!(err.is_permanent());
    }
}

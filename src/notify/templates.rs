//! Message templates: the built-in defaults, the operator's overrides, and rendering.
//!
//! Owns [`Templates`] (a minijinja environment) and [`RenderedMail`]. A message kind
//! `NAME` is three files: `NAME.subject.txt`, `NAME.txt` (plain text) and `NAME.html`
//! (HTML, auto-escaped). The shipped defaults are the files in `config/templates/`,
//! embedded at compile time; a file with the same name in the operator's template
//! folder wins, and that folder may add files of its own (for `{% include %}`).
//! Undefined variables are errors, never silently empty text.
//!
//! It must not send, store or log anything, and must not keep rendered mail: a rendered
//! body can hold a password.

use std::fmt;
use std::path::Path;

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde_json::json;

use super::NotifyError;

/// The "your password was reset" message (variables: `display_name`, `user_name`,
/// `password`, `require_change`, `reset_by`, `public_url`, optional `organization`).
pub const TEMPORARY_PASSWORD: &str = "temporary-password";

/// Builds the sample variables for one message kind.
type SampleContext = fn() -> serde_json::Value;

/// Every message kind lockbridge sends, with a sample context used by
/// [`Templates::check`] to prove the templates render.
const KINDS: &[(&str, SampleContext)] = &[(TEMPORARY_PASSWORD, sample_temporary_password)];

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

/// One rendered message. Its `Debug` shows only the subject: the bodies may hold a
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedMail {
    /// One line, whitespace collapsed.
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl fmt::Debug for RenderedMail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderedMail")
            .field("subject", &self.subject)
            .field("text", &format_args!("[{} bytes]", self.text.len()))
            .field("html", &format_args!("[{} bytes]", self.html.len()))
            .finish()
    }
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
            } else {
                AutoEscape::None
            }
        });

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

    /// Proves every message kind renders: each template compiles and uses no variable
    /// lockbridge does not provide. For `check-config` and startup.
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
        let ctx = minijinja::Value::from_serialize(ctx);
        let subject = self.render_file(name, &format!("{name}.subject.txt"), &ctx)?;
        Ok(RenderedMail {
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            text: self.render_file(name, &format!("{name}.txt"), &ctx)?,
            html: self.render_file(name, &format!("{name}.html"), &ctx)?,
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
            vec![TEMPORARY_PASSWORD]
        );
    }
}

//! The pages' templates (minijinja, HTML auto-escaped) and their texts in each language.
//! The built-in files are in `config/pages/`; an operator's `selfservice.templates_dir`
//! replaces any of them file by file, and may add languages (`i18n/<tag>.toml`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

/// Built-in page templates, by name.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "layout.html",
        include_str!("../../config/pages/layout.html"),
    ),
    (
        "reset-start.html",
        include_str!("../../config/pages/reset-start.html"),
    ),
    (
        "reset-choose.html",
        include_str!("../../config/pages/reset-choose.html"),
    ),
    (
        "reset-code.html",
        include_str!("../../config/pages/reset-code.html"),
    ),
    (
        "new-password.html",
        include_str!("../../config/pages/new-password.html"),
    ),
    (
        "message.html",
        include_str!("../../config/pages/message.html"),
    ),
    (
        "security-info.html",
        include_str!("../../config/pages/security-info.html"),
    ),
];

/// Built-in translations. English is complete; a key missing in another language
/// falls back to English, then to the key itself.
const LANGUAGES: &[(&str, &str)] = &[
    ("en", include_str!("../../config/pages/i18n/en.toml")),
    ("fr", include_str!("../../config/pages/i18n/fr.toml")),
];

/// Static files, served with long caching (they carry no personal data).
pub const STATIC_FILES: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../config/pages/static/style.css"),
    ),
    (
        "password.js",
        "text/javascript; charset=utf-8",
        include_str!("../../config/pages/static/password.js"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum PagesError {
    #[error("selfservice.templates_dir: {0}")]
    Config(String),
    #[error("page template `{name}`: {source}")]
    Template {
        name: String,
        #[source]
        source: minijinja::Error,
    },
}

/// The compiled pages and the texts of every language.
pub struct Pages {
    env: Environment<'static>,
    /// Language tag → key → text.
    texts: HashMap<String, Arc<HashMap<String, String>>>,
    /// Tags in preference order when the browser states none we have: English first.
    tags: Vec<String>,
}

impl std::fmt::Debug for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pages")
            .field("languages", &self.tags)
            .finish()
    }
}

impl Pages {
    pub fn new(override_dir: Option<&Path>) -> Result<Pages, PagesError> {
        if let Some(dir) = override_dir
            && !dir.is_dir()
        {
            return Err(PagesError::Config(format!(
                "{} is not a folder; create it or remove the setting",
                dir.display()
            )));
        }
        let read = |name: &str, builtin: &str| -> Result<String, PagesError> {
            match override_dir.map(|d| d.join(name)) {
                Some(path) if path.exists() => std::fs::read_to_string(&path).map_err(|e| {
                    PagesError::Config(format!("cannot read {}: {e}", path.display()))
                }),
                _ => Ok(builtin.to_owned()),
            }
        };
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_debug(false);
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        for (name, builtin) in TEMPLATES {
            env.add_template_owned(*name, read(name, builtin)?)
                .map_err(|source| PagesError::Template {
                    name: (*name).to_owned(),
                    source,
                })?;
        }

        let mut sources: Vec<(String, String)> = Vec::new();
        for (tag, builtin) in LANGUAGES {
            sources.push((
                (*tag).to_owned(),
                read(&format!("i18n/{tag}.toml"), builtin)?,
            ));
        }
        if let Some(dir) = override_dir.map(|d| d.join("i18n"))
            && dir.is_dir()
        {
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| PagesError::Config(format!("cannot read {}: {e}", dir.display())))?;
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(tag) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".toml"))
                else {
                    continue;
                };
                if !sources.iter().any(|(t, _)| t == tag) {
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        PagesError::Config(format!("cannot read {}: {e}", path.display()))
                    })?;
                    sources.push((tag.to_owned(), text));
                }
            }
        }
        let mut texts = HashMap::new();
        let mut tags = Vec::new();
        for (tag, source) in sources {
            let table: HashMap<String, String> = toml::from_str(&source).map_err(|e| {
                PagesError::Config(format!("i18n/{tag}.toml is not a table of texts: {e}"))
            })?;
            tags.push(tag.clone());
            texts.insert(tag, Arc::new(table));
        }
        Ok(Pages { env, texts, tags })
    }

    /// The language to answer in, from the browser's `Accept-Language`.
    pub fn language(&self, accept_language: Option<&str>) -> String {
        // In the browser's order of preference; `fr-CA` is served by `fr`.
        accept_language
            .map(accept_language::parse)
            .unwrap_or_default()
            .iter()
            .find_map(|wanted| {
                let primary = wanted.split('-').next().unwrap_or(wanted);
                self.tags
                    .iter()
                    .find(|tag| tag.eq_ignore_ascii_case(wanted))
                    .or_else(|| {
                        self.tags
                            .iter()
                            .find(|tag| tag.eq_ignore_ascii_case(primary))
                    })
                    .cloned()
            })
            .unwrap_or_else(|| "en".to_owned())
    }

    /// One text in `lang` (English when that language lacks it).
    pub fn text(&self, lang: &str, key: &str) -> String {
        [lang, "en"]
            .iter()
            .filter_map(|tag| self.texts.get(*tag))
            .find_map(|table| table.get(key).cloned())
            .unwrap_or_else(|| key.to_owned())
    }

    /// Renders `template` in `lang`; `t(key)` in the template gives that language's text.
    pub fn render(
        &self,
        template: &str,
        lang: &str,
        mut context: serde_json::Value,
    ) -> Result<String, PagesError> {
        let own = self.texts.get(lang).cloned();
        let english = self.texts.get("en").cloned();
        let t = Value::from_function(move |key: &str| -> String {
            own.as_ref()
                .and_then(|table| table.get(key))
                .or_else(|| english.as_ref().and_then(|table| table.get(key)))
                .cloned()
                .unwrap_or_else(|| key.to_owned())
        });
        if let Some(object) = context.as_object_mut() {
            object.insert("lang".into(), lang.into());
        }
        let page = self
            .env
            .get_template(template)
            .map_err(|source| PagesError::Template {
                name: template.to_owned(),
                source,
            })?;
        let mut values = Value::from_serialize(&context);
        values = minijinja::context! { t => t, ..values };
        page.render(values).map_err(|source| PagesError::Template {
            name: template.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_renders_in_every_language() {
        let pages = Pages::new(None).expect("built-in pages");
        for lang in ["en", "fr"] {
            for (name, _) in TEMPLATES.iter().filter(|(n, _)| *n != "layout.html") {
                let html = pages
                    .render(
                        name,
                        lang,
                        serde_json::json!({
                            "organization": "Example", "csrf": "c", "title_key": "change.title",
                            "text_keys": ["contact.text"], "rules": {"min_length": 12, "max_length": 256, "min_classes": 3},
                            "methods": [{"method": "email", "to": "a•••@example.net"}],
                            "method": "email", "to": "x", "step": 1, "total": 2, "minutes": 10, "digits": 8,
                        }),
                    )
                    .unwrap_or_else(|e| panic!("{name} in {lang}: {e}"));
                assert!(html.contains(&format!("<html lang=\"{lang}\">")), "{name}");
                assert!(
                    !html.contains("action."),
                    "{name} in {lang} shows a text key"
                );
            }
        }
    }

    #[test]
    fn the_security_info_page_renders_in_each_state() {
        let pages = Pages::new(None).expect("built-in pages");
        for context in [
            serde_json::json!({"signed_in": false, "sms": true, "minutes": 10, "csrf": "c", "organization": "x"}),
            serde_json::json!({"signed_in": true, "sms": true, "minutes": 10, "csrf": "c", "organization": "x",
                "user_name": "bob", "alternate_mail": "b@example.net", "mobile": null, "saved": true}),
            serde_json::json!({"signed_in": true, "pending": true, "pending_to": "b•••@x", "minutes": 10, "csrf": "c", "organization": "x"}),
        ] {
            let html = pages
                .render("security-info.html", "en", context)
                .unwrap_or_else(|e| panic!("{e:#}"));
            assert!(html.contains("name=\"csrf\""));
        }
    }

    #[test]
    fn the_browser_language_is_chosen_when_there_is_one() {
        let pages = Pages::new(None).expect("built-in pages");
        assert_eq!(pages.language(Some("fr-FR,fr;q=0.9,en;q=0.8")), "fr");
        assert_eq!(pages.language(Some("de-DE,de;q=0.9")), "en");
        assert_eq!(pages.language(None), "en");
        assert_eq!(pages.language(Some("fr-CA")), "fr");
    }

    #[test]
    fn every_french_text_exists_in_english() {
        let pages = Pages::new(None).expect("built-in pages");
        let en = &pages.texts["en"];
        for key in pages.texts["fr"].keys() {
            assert!(en.contains_key(key), "fr has {key}, en does not");
        }
        for key in en.keys() {
            assert!(pages.texts["fr"].contains_key(key), "fr lacks {key}");
        }
    }

    #[test]
    fn values_are_escaped() {
        let pages = Pages::new(None).expect("built-in pages");
        let html = pages
            .render(
                "reset-start.html",
                "en",
                serde_json::json!({"organization": "<script>x</script>", "csrf": "c"}),
            )
            .expect("renders");
        assert!(!html.contains("<script>x"));
    }
}

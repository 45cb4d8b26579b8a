//! Configuration: one TOML file plus `LOCKBRIDGE__SECTION__KEY` environment overrides.
//!
//! Loading is: built-in defaults (serde defaults on each section) → the file → the
//! environment → validation. Secrets may be given inline or as `*_file` paths (systemd
//! credentials); both forms of one secret is an error. Relative paths are taken
//! relative to the configuration file's folder. Every error is one line that names the
//! key and says what to do. This module reads files but talks to no service.

mod sections;

use std::path::{Path, PathBuf};

pub use sections::*;

use crate::types::{MasterKey, Secret};

/// The environment prefix: `LOCKBRIDGE__DIRECTORY__URL` overrides `[directory] url`.
pub const ENV_PREFIX: &str = "LOCKBRIDGE";

/// Keys whose environment values are comma-separated lists.
const LIST_KEYS: &[&str] = &[
    "directory.admin_group_dns",
    "password_policy.banned_words",
    "scim.user_object_classes",
    "scim.group_object_classes",
    "server.trusted_proxies",
    "sweep.admin_recipients",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("configuration key `{key}`: {problem}")]
    Key { key: String, problem: String },
}

impl ConfigError {
    fn key(key: &str, problem: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.to_string(),
            problem: problem.into(),
        }
    }
}

/// A loaded and validated configuration. Secrets are resolved (files read).
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub master_key: MasterKey,
    pub directory: DirectoryConfig,
    pub directory_bind_password: Secret,
    pub store: StoreConfig,
    /// The PostgreSQL role's password (`store.password_file`), read at start.
    pub store_password: Option<Secret>,
    pub mail: MailConfig,
    pub mail_password: Option<Secret>,
    pub outbox: OutboxConfig,
    /// Secrets resolved into `auth_value` and `auth_token`.
    pub sms: SmsConfig,
    pub password_policy: PasswordPolicyConfig,
    pub expiry: ExpiryConfig,
    pub sweep: SweepConfig,
    pub scim: ScimConfig,
    pub audit: AuditConfig,
    pub roles: RolesConfig,
    pub selfservice: SelfServiceConfig,
    /// Absolute path of the SQLite file (`store.kind = "sqlite"`).
    pub store_path: PathBuf,
}

/// Loads `path`, applies environment overrides from `env` (pass `std::env::vars()`),
/// and validates the result.
pub fn load(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let env_map: std::collections::HashMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .collect();

    let mut environment = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .list_separator(",")
        .source(Some(env_map));
    for key in LIST_KEYS {
        environment = environment.with_list_parse_key(key);
    }
    let raw = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .add_source(environment)
        .build()
        .map_err(|e| ConfigError::Invalid(describe(e)))?;
    let file: FileConfig = raw
        .try_deserialize()
        .map_err(|e| ConfigError::Invalid(describe(e)))?;
    file.resolve(&base_dir)
}

/// The `config` crate's messages already name the key; make them one line.
fn describe(e: config::ConfigError) -> String {
    e.to_string().replace('\n', " ")
}

impl FileConfig {
    fn resolve(self, base_dir: &Path) -> Result<Config, ConfigError> {
        let abs = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base_dir.join(p)
            }
        };

        let mut server = self.server;
        server.state_dir = abs(&server.state_dir);
        server.validate()?;

        let master_key_b64 = resolve_secret(
            "security.master_key",
            self.security.master_key,
            self.security.master_key_file.as_deref().map(abs).as_deref(),
        )?
        .ok_or_else(|| {
            ConfigError::key(
                "security.master_key",
                "is required: set master_key_file to a file holding 32 random bytes in base64 \
                 (head -c32 /dev/urandom | base64 > master-key)",
            )
        })?;
        let master_key = decode_master_key(&master_key_b64)?;

        let mut directory = self.directory;
        directory.ca_file = directory.ca_file.as_deref().map(abs);
        let directory_bind_password = resolve_secret(
            "directory.bind_password",
            directory.bind_password.take(),
            directory.bind_password_file.as_deref().map(abs).as_deref(),
        )?
        .ok_or_else(|| {
            ConfigError::key(
                "directory.bind_password",
                "is required: set bind_password_file (preferred) or bind_password for the service account",
            )
        })?;
        directory.validate()?;

        let mut store = self.store;
        store.validate()?;
        let path = store
            .path
            .clone()
            .unwrap_or_else(|| PathBuf::from(sections::DEFAULT_STORE_PATH));
        let store_path = if path.is_absolute() {
            path
        } else {
            server.state_dir.join(&path)
        };
        store.ca_file = store.ca_file.as_deref().map(abs);
        let store_password = resolve_secret(
            "store.password",
            None,
            store.password_file.as_deref().map(abs).as_deref(),
        )?;

        let mut mail = self.mail;
        mail.ca_file = mail.ca_file.as_deref().map(abs);
        mail.templates_dir = mail.templates_dir.as_deref().map(abs);
        let mail_password = resolve_secret(
            "mail.password",
            mail.password.take(),
            mail.password_file.as_deref().map(abs).as_deref(),
        )?;
        mail.validate(mail_password.is_some())?;

        let outbox = self.outbox;
        outbox.validate()?;

        let mut sms = self.sms;
        sms.auth_value = resolve_secret(
            "sms.auth_value",
            sms.auth_value.take(),
            sms.auth_value_file.take().as_deref().map(abs).as_deref(),
        )?;
        sms.auth_token = resolve_secret(
            "sms.auth_token",
            sms.auth_token.take(),
            sms.auth_token_file.take().as_deref().map(abs).as_deref(),
        )?;
        sms.validate()?;

        let mut password_policy = self.password_policy;
        if let Some(file) = password_policy.banned_words_file.as_deref().map(abs) {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                ConfigError::key(
                    "password_policy.banned_words_file",
                    format!("cannot read {}: {e}", file.display()),
                )
            })?;
            password_policy.banned_words.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        password_policy.breached_passwords_file =
            password_policy.breached_passwords_file.as_deref().map(abs);
        password_policy.breached_index_file = match (
            &password_policy.breached_passwords_file,
            &password_policy.breached_index_file,
        ) {
            (Some(list), index) => {
                // Only its existence is checked here: reading 35 GB is the index
                // build's business, not the configuration's.
                if !list.is_file() {
                    return Err(ConfigError::key(
                        "password_policy.breached_passwords_file",
                        format!(
                            "{} is not a readable file; download the list of SHA-1 \
                                 hashes (Have I Been Pwned's format) there or remove the key",
                            list.display()
                        ),
                    ));
                }
                Some(match index {
                    Some(index) => abs(index),
                    None => server.state_dir.join(DEFAULT_BREACHED_INDEX_NAME),
                })
            }
            (None, Some(_)) => {
                return Err(ConfigError::key(
                    "password_policy.breached_index_file",
                    "is set but breached_passwords_file is not; set the list too, or remove \
                         both",
                ));
            }
            (None, None) => None,
        };
        password_policy.validate()?;
        self.expiry.validate(self.sweep.enabled)?;
        self.sweep.validate(&server.public_url)?;
        self.scim.validate(&directory)?;
        self.audit.validate()?;
        self.selfservice.validate()?;
        let mut roles = self.roles;
        roles.resolve(&directory)?;

        Ok(Config {
            server,
            master_key,
            directory,
            directory_bind_password,
            store,
            store_password,
            mail,
            mail_password,
            outbox,
            sms,
            password_policy,
            expiry: self.expiry,
            sweep: self.sweep,
            scim: self.scim,
            audit: self.audit,
            roles,
            selfservice: self.selfservice,
            store_path,
        })
    }
}

/// Reads a secret given inline or as a file. A trailing newline in the file is dropped
/// (editors and `echo` add one).
fn resolve_secret(
    key: &str,
    inline: Option<Secret>,
    file: Option<&Path>,
) -> Result<Option<Secret>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::key(
            key,
            format!("is given both inline and as {key}_file; keep only one"),
        )),
        (Some(secret), None) if secret.expose().is_empty() => Err(ConfigError::key(
            key,
            "is empty; give the secret or remove the key",
        )),
        (Some(secret), None) => Ok(Some(secret)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::key(
                    &format!("{key}_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let value = text.strip_suffix('\n').unwrap_or(&text);
            let value = value.strip_suffix('\r').unwrap_or(value);
            if value.is_empty() {
                return Err(ConfigError::key(
                    &format!("{key}_file"),
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(Some(Secret::new(value)))
        }
        (None, None) => Ok(None),
    }
}

fn decode_master_key(b64: &Secret) -> Result<MasterKey, ConfigError> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.expose().trim())
        .map_err(|_| {
            ConfigError::key(
                "security.master_key",
                "is not valid base64; generate one with: head -c32 /dev/urandom | base64",
            )
        })?;
    let bytes = zeroize::Zeroizing::new(bytes);
    let mut key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        ConfigError::key(
            "security.master_key",
            format!(
                "decodes to {} bytes but must be exactly 32; generate one with: head -c32 /dev/urandom | base64",
                bytes.len()
            ),
        )
    })?;
    let master = MasterKey::new(key);
    zeroize::Zeroize::zeroize(&mut key);
    Ok(master)
}

#[cfg(test)]
mod tests;

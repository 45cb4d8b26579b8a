//! The composition root: builds every service from the configuration, runs the HTTP
//! server and the background workers, and shuts them down in order. Nothing imports
//! this module except the CLI.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::account::expiry::{ExpiryService, ExpirySettings, MaxAgeSource};
use crate::account::{AccountService, ProtectionSettings, RoleGroups, Scope, ScopedRole};
use crate::admin::AdminState;
use crate::audit::AuditLog;
use crate::audit::chain::SealKey;
use crate::auth::{Authenticator, Role, SessionService, TokenKey, TokenService};
use crate::bulk::BulkDeps;
use crate::bulk::routes::BulkState;
use crate::config::{
    Config, DirectoryKindConfig, ExpiryActionConfig, ExpirySource, PasswordPolicyConfig,
    ScimDeleteMode, SmsKindConfig, SmtpSecurityConfig, StoreKind, StoreTlsConfig,
};
use crate::directory::{
    Directory, DirectoryError, DirectoryKind, DirectorySettings, EntryVocabulary, PingInfo,
    SignInVocabulary,
};
use crate::http::{HealthState, RateLimit, RouterParts, ServerLimits, TrustedProxies, router};
use crate::notify::sms::{
    DEFAULT_CONTENT_TYPE, DEFAULT_WEBHOOK_BODY, SmsGateway, TWILIO_BASE_URL, TwilioSender,
    TwilioSettings, WebhookSettings,
};
use crate::notify::{
    MailSettings, Mailer, Notifier, NotifyError, OutboxSettings, OutboxWorker, Sealer, SmsSender,
    SmsSettings, SmtpSecurity, Templates, derive_key,
};
use crate::policy::{
    BreachedIndex, ExpiryAction, ExpiryPolicy, IndexSummary, ListStamp, build_index,
};
use crate::scim::provider::{ScimParts, ScimProvider, has_lockbridge_schema};
use crate::scim::resource::{GroupMapping, GroupMappingSettings, UserMapping, UserMappingSettings};
use crate::scim::routes::ScimState;
use crate::scim::service::{DeleteMode, ScimSettings};
use crate::selfservice::{Pages, SelfServiceSettings, SelfServiceState};
use crate::store::{PostgresOptions, PostgresStore, PostgresTls, SqliteStore, Store, StoreError};
use crate::sweep::engine::{SweepDeps, SweepSettings};
use crate::sweep::routes::SweepState;
use crate::sweep::schedule::{ScheduleError, SweepSchedule};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("directory: {0}")]
    Directory(#[from] DirectoryError),
    #[error("mail: {0}")]
    Notify(#[from] NotifyError),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Schedule(#[from] ScheduleError),
    #[error("scim: {0}")]
    Scim(String),
    #[error("self-service: {0}")]
    SelfService(#[from] crate::selfservice::PagesError),
    #[error("breached-password list: {0}")]
    Breached(String),
}

/// A breached-password list at most this large (about 1.5 million hashes) is indexed at
/// start when its index is missing or stale: a few seconds. A larger one (Have I Been
/// Pwned's full list is 35 GB) stops the start instead, saying what to run, so that a
/// restart never turns into an hour of silent work.
pub const BREACHED_INDEX_AT_START_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// The breached-password index in the state it was found.
pub enum BreachedIndexStatus {
    /// Built from the list as it is now, and mapped.
    Current(BreachedIndex),
    /// No index file yet.
    Missing,
    /// Built from another version of the list.
    Stale,
}

/// The size and modification time that tell one version of `list` from another.
pub fn list_stamp(list: &Path) -> Result<ListStamp, AppError> {
    let metadata = std::fs::metadata(list)
        .map_err(|e| AppError::Breached(format!("cannot read {}: {e}", list.display())))?;
    let modified = metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        });
    Ok(ListStamp {
        len: metadata.len(),
        modified_unix_nanos: modified,
    })
}

/// Maps `index` and tells whether it was built from `list` as it is now.
pub fn open_breached_index(list: &Path, index: &Path) -> Result<BreachedIndexStatus, AppError> {
    let stamp = list_stamp(list)?;
    let file = match std::fs::File::open(index) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(BreachedIndexStatus::Missing);
        }
        Err(e) => {
            return Err(AppError::Breached(format!(
                "cannot read {}: {e}",
                index.display()
            )));
        }
    };
    // SAFETY: the index is only ever replaced by renaming a new file over it
    // (`build_breached_index`), never written in place, so the mapped bytes do not
    // change under the lookups.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| AppError::Breached(format!("cannot map {}: {e}", index.display())))?;
    let opened = BreachedIndex::from_bytes(Box::new(map))
        .map_err(|e| AppError::Breached(format!("{}: {e}", index.display())))?;
    Ok(if opened.is_built_from(stamp) {
        BreachedIndexStatus::Current(opened)
    } else {
        BreachedIndexStatus::Stale
    })
}

/// Builds the index of `list` into `index`: written beside it under a temporary name,
/// then renamed over it, so a running daemon keeps its mapped index intact and a
/// crash leaves no half-written index.
pub fn build_breached_index(
    list: &Path,
    index: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<IndexSummary, AppError> {
    let stamp = list_stamp(list)?;
    let source = std::fs::File::open(list)
        .map_err(|e| AppError::Breached(format!("cannot read {}: {e}", list.display())))?;
    let mut partial = index.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let target = std::fs::File::create(&partial)
        .map_err(|e| AppError::Breached(format!("cannot create {}: {e}", partial.display())))?;
    let built = build_index(
        std::io::BufReader::with_capacity(1 << 20, source),
        stamp,
        std::io::BufWriter::with_capacity(1 << 20, &target),
        progress,
    )
    .map_err(|e| AppError::Breached(format!("{}: {e}", list.display())))
    .and_then(|summary| {
        target
            .sync_all()
            .and_then(|()| std::fs::rename(&partial, index))
            .map(|()| summary)
            .map_err(|e| AppError::Breached(format!("cannot write {}: {e}", index.display())))
    });
    if built.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    built
}

/// What to run to build the index, for messages.
fn breached_build_command() -> &'static str {
    "lockbridge breached-index build --config FILE"
}

/// The index the daemon checks chosen passwords against, if a list is configured: the
/// current one, or one built now for a small list; a missing or stale index of a large
/// list is an error that says what to run.
fn breached_index_at_start(
    policy: &PasswordPolicyConfig,
) -> Result<Option<Arc<BreachedIndex>>, AppError> {
    let (Some(list), Some(index)) = (&policy.breached_passwords_file, &policy.breached_index_file)
    else {
        return Ok(None);
    };
    let why = match open_breached_index(list, index)? {
        BreachedIndexStatus::Current(opened) => return Ok(Some(Arc::new(opened))),
        BreachedIndexStatus::Missing => "has no index yet",
        BreachedIndexStatus::Stale => "changed since its index was built",
    };
    let size = list_stamp(list)?.len;
    if size > BREACHED_INDEX_AT_START_MAX_BYTES {
        return Err(AppError::Breached(format!(
            "{} {why} ({}); build it first: {}",
            list.display(),
            index.display(),
            breached_build_command()
        )));
    }
    tracing::info!(list = %list.display(), index = %index.display(), "{why}: building the breached-password index");
    let summary = build_breached_index(list, index, &mut |_| {})?;
    tracing::info!(
        entries = summary.entries,
        bytes = summary.index_bytes,
        "breached-password index built"
    );
    match open_breached_index(list, index)? {
        BreachedIndexStatus::Current(opened) => Ok(Some(Arc::new(opened))),
        _ => Err(AppError::Breached(format!(
            "{} changed while it was being indexed; start again",
            list.display()
        ))),
    }
}

/// `check-config`'s line about the breached-password list.
fn check_breached(config: &Config) -> Option<Result<String, String>> {
    let policy = &config.password_policy;
    let (Some(list), Some(index)) = (&policy.breached_passwords_file, &policy.breached_index_file)
    else {
        return None;
    };
    let size = match list_stamp(list) {
        Ok(stamp) => stamp.len,
        Err(e) => return Some(Err(e.to_string())),
    };
    let why = match open_breached_index(list, index) {
        Ok(BreachedIndexStatus::Current(opened)) => {
            return Some(Ok(format!(
                "{}: {} hashes indexed in {}",
                list.display(),
                opened.entries(),
                index.display()
            )));
        }
        Ok(BreachedIndexStatus::Missing) => "has no index yet",
        Ok(BreachedIndexStatus::Stale) => "changed since its index was built",
        Err(e) => {
            return Some(Err(format!(
                "{e}; build the index again: {}",
                breached_build_command()
            )));
        }
    };
    Some(if size <= BREACHED_INDEX_AT_START_MAX_BYTES {
        Ok(format!(
            "{} {why}; it is small enough to be indexed at start ({})",
            list.display(),
            index.display()
        ))
    } else {
        Err(format!(
            "{} {why} ({}); the daemon will not start until it is built: {}",
            list.display(),
            index.display(),
            breached_build_command()
        ))
    })
}

/// The directory settings from the configuration.
pub fn directory_settings(config: &Config) -> DirectorySettings {
    let d = &config.directory;
    DirectorySettings {
        kind: match d.kind {
            DirectoryKindConfig::Openldap => DirectoryKind::OpenLdap,
            DirectoryKindConfig::Ds389 => DirectoryKind::Ds389,
            DirectoryKindConfig::ActiveDirectory => DirectoryKind::ActiveDirectory,
        },
        url: d.url.clone(),
        starttls: d.starttls,
        ca_file: d.ca_file.clone(),
        tls_insecure_skip_verify: d.tls_insecure_skip_verify,
        allow_plaintext: d.allow_plaintext,
        server_hashes_cleartext: d.server_hashes_cleartext,
        bind_dn: d.bind_dn.clone(),
        bind_password: config.directory_bind_password.clone(),
        users_base: d.users_base.clone(),
        groups_base: d.groups_base.clone(),
        user_filter: d.user_filter.clone(),
        user_name_attribute: d.user_name_attribute.clone(),
        mail_attribute: d.mail_attribute.clone(),
        display_name_attribute: d.display_name_attribute.clone(),
        alternate_mail_attribute: d.alternate_mail_attribute.clone(),
        mobile_attribute: d.mobile_attribute.clone(),
        admin_group_dns: administrator_groups(config),
        pool_size: d.pool_size,
        connect_timeout: Duration::from_secs(d.connect_timeout_secs),
        operation_timeout: Duration::from_secs(d.operation_timeout_secs),
    }
}

/// Every group whose members are administrators: `directory.admin_group_dns` and the
/// groups of every role in `[roles]`.
pub fn administrator_groups(config: &Config) -> Vec<String> {
    let mut all = config.directory.admin_group_dns.clone();
    for group in config.roles.all_groups() {
        if !all.iter().any(|g| crate::directory::same_dn(g, &group)) {
            all.push(group);
        }
    }
    all
}

/// The directory groups of each administrator role (`[roles]`).
pub fn role_groups(config: &Config) -> RoleGroups {
    RoleGroups {
        groups: config
            .roles
            .groups()
            .into_iter()
            .filter_map(|(_, name, groups)| Some((name.parse::<Role>().ok()?, groups.to_vec())))
            .collect(),
        scoped: config
            .roles
            .scoped
            .iter()
            .filter_map(|s| {
                let scope = match (&s.over_subtree, &s.over_group) {
                    (Some(base), _) => Scope::Subtree(base.clone()),
                    (None, Some(group)) => Scope::GroupMembers(group.clone()),
                    (None, None) => return None,
                };
                Some(ScopedRole {
                    role: s.role.parse::<Role>().ok()?,
                    groups: s.groups.clone(),
                    scope,
                })
            })
            .collect(),
    }
}

pub fn mail_settings(config: &Config) -> MailSettings {
    let m = &config.mail;
    MailSettings {
        relay: m.relay.clone(),
        port: m.port,
        security: match m.security {
            SmtpSecurityConfig::Starttls => SmtpSecurity::StartTls,
            SmtpSecurityConfig::Tls => SmtpSecurity::Tls,
            SmtpSecurityConfig::None => SmtpSecurity::None,
        },
        ca_file: m.ca_file.clone(),
        username: m.username.clone(),
        password: config.mail_password.clone(),
        from: m.from.clone(),
        timeout: Duration::from_secs(m.timeout_secs),
    }
}

/// The SMS gateway settings from `[sms]` (already validated: the keys each kind needs
/// are present).
pub fn sms_settings(config: &Config) -> SmsSettings {
    let s = &config.sms;
    let gateway = match s.kind {
        SmsKindConfig::None => SmsGateway::None,
        SmsKindConfig::Webhook => SmsGateway::Webhook(WebhookSettings {
            url: s.url.clone().unwrap_or_default(),
            auth_header: s.auth_header.clone().zip(s.auth_value.clone()),
            body_template: s
                .body_template
                .clone()
                .unwrap_or_else(|| DEFAULT_WEBHOOK_BODY.to_string()),
            content_type: s
                .content_type
                .clone()
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string()),
        }),
        SmsKindConfig::Twilio => SmsGateway::Twilio(TwilioSettings {
            base_url: s
                .base_url
                .clone()
                .unwrap_or_else(|| TWILIO_BASE_URL.to_string()),
            account_sid: s.account_sid.clone().unwrap_or_default(),
            auth_token: s
                .auth_token
                .clone()
                .unwrap_or_else(|| crate::types::Secret::new("")),
            sender: match (&s.from, &s.messaging_service_sid) {
                (_, Some(service)) => TwilioSender::MessagingService(service.clone()),
                (from, None) => TwilioSender::From(from.clone().unwrap_or_default()),
            },
        }),
    };
    SmsSettings {
        gateway,
        connect_timeout: Duration::from_secs(s.connect_timeout_secs),
        timeout: Duration::from_secs(s.timeout_secs),
    }
}

/// Opens the store `[store]` names, bringing its schema up to date: the one place the
/// backend is chosen.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, AppError> {
    match config.store.kind {
        StoreKind::Sqlite => {
            if let Some(parent) = config.store_path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    AppError::Io(format!(
                        "cannot create the state folder {}: {e} (server.state_dir)",
                        parent.display()
                    ))
                })?;
            }
            let store = SqliteStore::open(&config.store_path).await?;
            Ok(Arc::new(store))
        }
        StoreKind::Postgres => {
            let store = PostgresStore::connect(&postgres_options(config)).await?;
            Ok(Arc::new(store))
        }
    }
}

/// The PostgreSQL connection settings from `[store]` (validated at load).
pub fn postgres_options(config: &Config) -> PostgresOptions {
    let s = &config.store;
    PostgresOptions {
        url: s.url.clone().unwrap_or_default(),
        password: config
            .store_password
            .as_ref()
            .map(|p| p.expose().to_string()),
        ca_file: s.ca_file.clone(),
        tls: match s.tls {
            StoreTlsConfig::VerifyFull => PostgresTls::VerifyFull,
            StoreTlsConfig::Off => PostgresTls::Off,
        },
        max_connections: s.max_connections,
        connect_timeout: Duration::from_secs(s.connect_timeout_secs),
    }
}

pub fn token_service(config: &Config, store: Arc<dyn Store>) -> TokenService {
    TokenService::new(store, token_key(config))
}

fn token_key(config: &Config) -> TokenKey {
    TokenKey::new(derive_key(config.master_key.expose(), "api-token-hash"))
}

/// The key that signs the audit chain's head.
pub fn seal_key(config: &Config) -> SealKey {
    SealKey::new(config.master_key.derive(SealKey::PURPOSE))
}

/// How often the metrics recorder folds recorded histogram samples into its buckets.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Upper bounds of the latency histograms' buckets (`le`), in seconds: from a cached read
/// (about a millisecond) to a request at its time limit.
const LATENCY_BUCKETS_SECS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn install_metrics() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Latencies as histograms with fixed buckets, not summaries: a summary's
            // sketch grows with the range of values it has seen (a soak's live heap
            // was mostly those), and summaries of several instances cannot be added up
            // in Prometheus, histograms can.
            let builder = || {
                PrometheusBuilder::new()
                    .set_buckets(LATENCY_BUCKETS_SECS)
                    .unwrap_or_else(|_| PrometheusBuilder::new())
            };
            let handle = builder()
                .install_recorder()
                .unwrap_or_else(|_| builder().build_recorder().handle());
            // The recorder keeps every histogram sample until upkeep folds it in, and
            // `install_recorder` leaves upkeep to us: without it memory grew ~50 bytes
            // per request when nothing scraped /metrics. A thread, not a task: the
            // handle outlives any one runtime.
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(METRICS_UPKEEP);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the metrics upkeep thread; histograms will grow until /metrics is scraped");
            }
            handle
        })
        .clone()
}

/// Every long-lived service, built once from the configuration.
pub struct Services {
    /// `None` when `[scim] enabled = false`.
    pub scim: Option<Arc<ScimProvider>>,
    pub store: Arc<dyn Store>,
    pub directory: Directory,
    pub audit: AuditLog,
    pub account: Arc<AccountService>,
    pub expiry: Arc<ExpiryService>,
    pub sweep: SweepDeps,
    pub bulk: BulkDeps,
    pub schedule: SweepSchedule,
    pub worker: OutboxWorker,
    /// `None` when `[selfservice] enabled = false`.
    pub selfservice: Option<SelfServiceState>,
}

fn selfservice_settings(config: &Config) -> SelfServiceSettings {
    let s = &config.selfservice;
    let public = &config.server.public_url;
    let host = public
        .split_once("://")
        .map_or(public.as_str(), |(_, rest)| rest)
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    SelfServiceSettings {
        methods_required: usize::from(s.methods_required),
        code_digits: s.code_digits,
        code_valid: chrono::Duration::minutes(i64::from(s.code_valid_minutes)),
        max_code_attempts: s.max_code_attempts,
        starts_per_address_per_hour: s.starts_per_address_per_hour,
        starts_per_account_per_hour: s.starts_per_account_per_hour,
        organization: if s.organization.is_empty() {
            host.to_owned()
        } else {
            s.organization.clone()
        },
        secure: public.starts_with("https://"),
        reveal_security_info: s.reveal_security_info,
    }
}

fn expiry_settings(config: &Config) -> ExpirySettings {
    let e = &config.expiry;
    ExpirySettings {
        source: match (e.source, &e.default_policy_dn) {
            (ExpirySource::Directory, Some(dn)) => MaxAgeSource::Directory {
                default_policy_dn: dn.clone(),
            },
            _ => MaxAgeSource::Lockbridge,
        },
        never_expires_policy_dn: e.never_expires_policy_dn.clone(),
        defaults: ExpiryPolicy {
            max_age_days: (e.max_age_days > 0).then_some(e.max_age_days),
            thresholds_days: e.notify_days.clone(),
            on_expiry: match e.on_expiry {
                ExpiryActionConfig::Nothing => ExpiryAction::Nothing,
                ExpiryActionConfig::RequireChange => ExpiryAction::RequireChange,
                ExpiryActionConfig::Lock => ExpiryAction::Lock,
            },
        },
    }
}

/// The SCIM service from `[scim]` and `[directory]`, built on first use (it depends on
/// the directory's schema); a bad attribute mapping stops start-up with a message naming
/// the key.
fn scim_provider(
    config: &Config,
    directory: Directory,
    account: Arc<AccountService>,
    expiry: Arc<ExpiryService>,
    audit: AuditLog,
) -> Result<Arc<ScimProvider>, AppError> {
    ScimProvider::new(directory, scim_parts(config, account, expiry, audit)).map_err(AppError::Scim)
}

/// How SCIM users and groups are stored, from `[scim]` and `[directory]` (whether the
/// directory has lockbridge's LDAP schema is filled in later).
fn scim_mapping_settings(config: &Config) -> (UserMappingSettings, GroupMappingSettings) {
    let s = &config.scim;
    let optional = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_owned());
    let kind = directory_settings(config).kind;
    (
        UserMappingSettings {
            user_name_attribute: config.directory.user_name_attribute.clone(),
            object_classes: s.user_object_classes.clone(),
            external_id_attribute: optional(&s.external_id_attribute),
            overrides: s.attributes.clone(),
            lockbridge_schema: false,
            sign_in: SignInVocabulary::for_kind(kind),
            entries: EntryVocabulary::for_kind(kind),
        },
        GroupMappingSettings {
            object_classes: s.group_object_classes.clone(),
            external_id_attribute: optional(&s.group_external_id_attribute),
            lockbridge_schema: false,
            entries: EntryVocabulary::for_kind(kind),
        },
    )
}

/// The `check-config` line for SCIM: which SCIM attributes have no home in this
/// directory (when it lacks lockbridge's LDAP schema).
async fn check_scim(config: &Config, directory: &Directory) -> Result<String, String> {
    let present = has_lockbridge_schema(directory)
        .await
        .map_err(|e| e.to_string())?;
    let (users, groups) = scim_mapping_settings(config);
    let users = UserMapping::new(UserMappingSettings {
        lockbridge_schema: present,
        ..users
    })?;
    let groups = GroupMapping::new(GroupMappingSettings {
        lockbridge_schema: present,
        ..groups
    })?;
    let mut homeless: Vec<String> = Vec::new();
    if !users.stores_external_id() {
        homeless.push("User externalId".into());
    }
    if !groups.stores_external_id() {
        homeless.push("Group externalId".into());
    }
    homeless.extend(users.homeless_names().into_iter().map(str::to_owned));
    Ok(if homeless.is_empty() {
        "every attribute of the served SCIM schema has a home in the directory".to_owned()
    } else {
        format!(
            "WARNING: the directory lacks lockbridge's LDAP schema (scim/lockbridge.schema, see \
             docs/directories/openldap.md), so these SCIM attributes have no home: they are not \
             offered in /Schemas and writes of them are ignored: {}",
            homeless.join(", ")
        )
    })
}

/// The parts of the SCIM service, from `[scim]` and `[directory]`.
pub fn scim_parts(
    config: &Config,
    account: Arc<AccountService>,
    expiry: Arc<ExpiryService>,
    audit: AuditLog,
) -> ScimParts {
    let s = &config.scim;
    let d = &config.directory;
    let optional = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_owned());
    let base_url = format!("{}/scim/v2", config.server.public_url.trim_end_matches('/'));
    let groups_base = optional(&d.groups_base);
    let (users, groups) = scim_mapping_settings(config);
    ScimParts {
        account,
        expiry,
        audit,
        users,
        groups,
        max_results: u64::from(s.max_results),
        settings: ScimSettings {
            base_url,
            users_base: d.users_base.clone(),
            user_filter: d.user_filter.clone(),
            users_container: optional(&s.users_container).unwrap_or_else(|| d.users_base.clone()),
            groups_container: optional(&s.groups_container)
                .or_else(|| groups_base.clone())
                .unwrap_or_default(),
            groups_base,
            delete_mode: match s.delete {
                ScimDeleteMode::Delete => DeleteMode::Delete,
                ScimDeleteMode::Deactivate => DeleteMode::Deactivate,
            },
            max_results: s.max_results,
            check_password_rules: s.check_password_rules,
            follow_directory: s.follow_directory,
            follow_reads: s.follow_reads,
        },
    }
}

/// Builds every service. Talks to nothing yet: the directory and the relay may be down.
pub async fn build(config: &Config) -> Result<Services, AppError> {
    // Validated at start, so a typo in the schedule stops the daemon with a clear error.
    let schedule = SweepSchedule::parse(&config.sweep.schedule, &config.sweep.time_zone)?;
    let store = open_store(config).await?;
    let directory = Directory::new(directory_settings(config))?;
    let templates = Templates::new(config.mail.templates_dir.as_deref())?;
    templates.check()?;
    let mailer = Mailer::new(&mail_settings(config))?;
    let sealer = Arc::new(Sealer::new(derive_key(
        config.master_key.expose(),
        "outbox-secrets",
    )));
    let notifier = Notifier::new(store.clone(), sealer.clone());
    let bulk_sealer = sealer.clone();
    let worker = OutboxWorker::new(
        store.clone(),
        sealer,
        mailer,
        templates,
        OutboxSettings {
            poll_interval: Duration::from_millis(config.outbox.poll_interval_ms),
            initial_backoff: Duration::from_secs(config.outbox.initial_backoff_secs),
            max_backoff: Duration::from_secs(config.outbox.max_backoff_secs),
            max_attempts: config.outbox.max_attempts,
            retry_window: Duration::from_secs(u64::from(config.outbox.retry_window_hours) * 3600),
            max_bulk_per_minute: config.outbox.max_bulk_per_minute,
            max_bulk_per_day: config.outbox.max_bulk_per_day,
        },
        notifier.waker(),
    );
    let audit = AuditLog::new(store.clone());
    let policy = config.password_policy.clone();
    let breached = tokio::task::spawn_blocking(move || breached_index_at_start(&policy))
        .await
        .map_err(|e| AppError::Breached(e.to_string()))??;
    let account = AccountService::new(
        directory.clone(),
        ProtectionSettings {
            service_dn: config.directory.bind_dn.clone(),
            admin_group_dns: administrator_groups(config),
            provisioning_protected_dns: config.scim.protected_dns.clone(),
            provisioning_may_write_administrators: config.scim.allow_writes_to_administrators,
        },
        role_groups(config),
        config.password_policy.to_rules(),
        breached,
        notifier.clone(),
        audit.clone(),
        config.server.public_url.clone(),
        config.directory.retry_after_secs,
        config
            .selfservice
            .enabled
            .then(|| crate::account::SelfServiceAccounts {
                store: store.clone(),
                request_recipients: if config.selfservice.request_recipients.is_empty() {
                    config.sweep.admin_recipients.clone()
                } else {
                    config.selfservice.request_recipients.clone()
                },
                welcome: config.selfservice.welcome_links.then(|| {
                    crate::account::self_service::WelcomeLinks {
                        key: derive_key(config.master_key.expose(), "welcome-link"),
                        lifetime: chrono::Duration::hours(i64::from(
                            config.selfservice.welcome_link_hours,
                        )),
                    }
                }),
            }),
    );
    let expiry = ExpiryService::new(account.clone(), store.clone(), expiry_settings(config));
    // This process's name in the store's leases (sweeps, bulk jobs); `serve` gives a
    // serving instance a stable one.
    let instance = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4());
    let bulk = BulkDeps {
        account: account.clone(),
        store: store.clone(),
        sealer: bulk_sealer,
        running: Default::default(),
        instance: instance.clone(),
    };
    let sweep = SweepDeps {
        expiry: expiry.clone(),
        directory: directory.clone(),
        store: store.clone(),
        notifier,
        settings: SweepSettings {
            time_zone: schedule.time_zone(),
            admin_recipients: config.sweep.admin_recipients.clone(),
            change_password_url: if config.sweep.change_password_url.is_empty() {
                // The page where users change it, when lockbridge serves one.
                if config.selfservice.enabled {
                    format!("{}/change", config.server.public_url.trim_end_matches('/'))
                } else {
                    config.server.public_url.clone()
                }
            } else {
                config.sweep.change_password_url.clone()
            },
            page_size: config.sweep.page_size,
            instance: instance.clone(),
            lease: Duration::from_secs(config.sweep.lease_secs),
            expired_within: chrono::Duration::days(i64::from(config.sweep.expired_within_days)),
            max_bulk_per_day: config.outbox.max_bulk_per_day,
        },
    };
    let selfservice = if config.selfservice.enabled {
        Some(SelfServiceState::new(
            account.clone(),
            store.clone(),
            sweep.notifier.clone(),
            audit.clone(),
            crate::notify::SmsSender::new(&sms_settings(config))
                .map_err(|e| AppError::Io(format!("sms: {e}")))?,
            Pages::new(config.selfservice.templates_dir.as_deref())?,
            derive_key(config.master_key.expose(), "selfservice"),
            selfservice_settings(config),
        ))
    } else {
        None
    };
    let scim = if config.scim.enabled {
        Some(scim_provider(
            config,
            directory.clone(),
            account.clone(),
            expiry.clone(),
            audit.clone(),
        )?)
    } else {
        None
    };
    Ok(Services {
        selfservice,
        scim,
        store,
        directory,
        audit,
        account,
        expiry,
        sweep,
        bulk,
        schedule,
        worker,
    })
}

/// Runs the daemon on `listener` until `shutdown` completes.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    let metrics = install_metrics();
    let services = build(&config).await?;
    let Services {
        scim,
        store,
        directory,
        audit,
        account,
        expiry,
        mut sweep,
        mut bulk,
        schedule,
        worker,
        selfservice,
    } = services;
    // A serving instance's name in the store's leases is its host and listening address:
    // no two live processes on a host hold one address, and a restarted instance gets
    // its own name back, so it resumes what it was doing (a bulk job, a sweep) at once
    // instead of waiting for its old lease to lapse. Other instances still wait.
    if let Ok(addr) = listener.local_addr() {
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".into());
        let instance = format!("{host}@{addr}");
        bulk.instance = instance.clone();
        sweep.settings.instance = instance;
    }
    // One authenticator, so its cache of recently checked tokens is shared.
    let auth = Authenticator::new(store.clone(), token_key(&config));
    let auth_for_watch = auth.clone();
    let app = router(RouterParts {
        admin: AdminState {
            account,
            expiry,
            notifier: sweep.notifier.clone(),
            audit: audit.clone(),
            auth: auth.clone(),
            sessions: SessionService::new(
                store.clone(),
                token_key(&config),
                Duration::from_secs(u64::from(config.roles.session_minutes) * 60),
            ),
        },
        sweep: SweepState {
            deps: sweep.clone(),
            auth: auth.clone(),
        },
        bulk: BulkState {
            deps: bulk.clone(),
            auth: auth.clone(),
        },
        scim: scim.map(|provider| ScimState {
            provider,
            auth: auth.clone(),
        }),
        health: HealthState::new(directory, audit, auth.clone()),
        selfservice,
        auth,
        store: store.clone(),
        metrics,
        request_timeout: Duration::from_secs(config.server.request_timeout_secs),
        auth_failures: (
            config.server.auth_failures_per_minute,
            config.server.auth_failure_burst,
        ),
        // Validated when the configuration was loaded.
        trusted_proxies: TrustedProxies::new(
            config.server.trusted_proxy_nets().unwrap_or_default(),
        ),
        rate_limit: (config.server.rate_limit_per_second > 0).then_some(RateLimit {
            per_second: config.server.rate_limit_per_second,
            burst: config.server.rate_limit_burst,
        }),
        scim_rate_limit: (config.scim.rate_limit_per_second > 0).then_some(RateLimit {
            per_second: config.scim.rate_limit_per_second,
            burst: config.scim.rate_limit_burst,
        }),
        scim_in_flight: config.scim.max_requests_in_flight_per_token,
    });

    let stop = CancellationToken::new();
    // Other instances revoke tokens and end sessions too: drop the token cache when
    // they do (issue 16).
    let revocations_task =
        tokio::spawn(auth_for_watch.watch_revocations(crate::auth::REVOCATION_POLL, stop.clone()));
    let worker_task = tokio::spawn(worker.run(stop.clone()));
    let sealer_task = tokio::spawn(crate::audit::chain::seal_periodically(
        store.clone(),
        seal_key(&config),
        Duration::from_secs(config.audit.seal_interval_secs),
        stop.clone(),
    ));
    // A sweep cut short by a crash is finished first (the ledger skips what it queued).
    let resume_task = tokio::spawn(crate::sweep::resume_interrupted(
        sweep.clone(),
        stop.clone(),
    ));
    // Bulk jobs a stop cut short carry on where they stopped (nobody is reset twice);
    // a job paused by the directory is retried every minute.
    let jobs_task = tokio::spawn({
        let bulk = bulk.clone();
        let stop = stop.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => crate::bulk::resume_running(&bulk).await,
                }
            }
        }
    });
    let scheduler_task = config.sweep.enabled.then(|| {
        tracing::info!(schedule = %schedule, "expiry sweeps are scheduled");
        tokio::spawn(crate::sweep::run_scheduled(sweep, schedule, stop.clone()))
    });

    let address = listener
        .local_addr()
        .map_err(|e| AppError::Io(e.to_string()))?;
    tracing::info!(%address, "lockbridge is listening");
    // Readiness for systemd (Type=notify); a no-op outside systemd.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    let stop_server = stop.clone();
    let limits = ServerLimits {
        header_read_timeout: Duration::from_secs(config.server.header_read_timeout_secs),
        idle_timeout: Duration::from_secs(config.server.idle_timeout_secs),
        max_connections: usize::try_from(config.server.max_connections).unwrap_or(usize::MAX),
        drain_timeout: Duration::from_secs(config.server.request_timeout_secs + 5),
    };
    let served = crate::http::server::serve(listener, app, limits, async move {
        tokio::select! {
            () = shutdown => {},
            () = stop_server.cancelled() => {},
        }
        tracing::info!("shutting down: finishing requests in flight");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    })
    .await;
    stop.cancel();
    resume_task.abort();
    // A job stopped here resumes at the next start; its open items are in the store.
    jobs_task.abort();
    revocations_task.abort();
    if let Some(task) = scheduler_task {
        // A sweep cut short is marked interrupted and redone by the next one.
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    // The last records of this run are sealed before the process ends.
    if tokio::time::timeout(Duration::from_secs(5), sealer_task)
        .await
        .is_err()
    {
        tracing::warn!("the audit chain could not be sealed at shutdown within 5 s");
    }
    // Let the outbox finish the message in hand; a queued message is safe in the store.
    match tokio::time::timeout(Duration::from_secs(15), worker_task).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the outbox worker crashed"),
        Err(_) => tracing::warn!("the outbox worker did not stop within 15 s"),
    }
    served.map_err(|e| AppError::Io(format!("HTTP server: {e}")))
}

/// A kind as `directory.kind` spells it.
fn kind_name(kind: DirectoryKind) -> &'static str {
    match kind {
        DirectoryKind::OpenLdap => "openldap",
        DirectoryKind::Ds389 => "389ds",
        DirectoryKind::ActiveDirectory => "active-directory",
    }
}

/// What `check-config` reports, one line per component.
pub async fn check(config: &Config) -> Vec<(String, Result<String, String>)> {
    let mut report = Vec::new();
    let settings = directory_settings(config);
    let url = settings.url.clone();
    let configured = settings.kind;
    let handle = Directory::new(settings);
    let directory = match &handle {
        Ok(d) => match d.ping().await {
            Ok(PingInfo {
                server_kind: Some(kind),
                vendor,
                ..
            }) if kind != configured => Err(format!(
                "{url}: the server is {} but directory.kind = \"{}\"; set kind = \"{}\" \
                 (each kind keeps passwords and sign-in state in different attributes)",
                vendor.as_deref().unwrap_or("another kind of directory"),
                kind_name(configured),
                kind_name(kind),
            )),
            Ok(info) => Ok(format!(
                "{url}: bound as {} in {} ms{}{}",
                info.bound_as,
                info.round_trip.as_millis(),
                info.vendor
                    .map(|v| format!(", server: {v}"))
                    .unwrap_or_default(),
                match info.ppolicy_supported {
                    Some(false) =>
                        ", WARNING: the server does not list the Password Policy control",
                    _ => "",
                }
            )),
            Err(e) => Err(format!("{url}: {e}")),
        },
        Err(e) => Err(format!("{url}: {e}")),
    };
    let reachable = directory.is_ok();
    report.push(("directory".to_string(), directory));
    if config.scim.enabled
        && reachable
        && let Ok(d) = &handle
    {
        report.push(("scim".to_string(), check_scim(config, d).await));
        if config.scim.follow_directory {
            report.push(("password pushes".to_string(), d.check_following().await));
        }
    }

    let mail = mail_settings(config);
    let target = format!("{}:{}", mail.relay, mail.port);
    let mail_result = match Mailer::new(&mail) {
        Ok(m) => match m.test_connection().await {
            Ok(()) => Ok(format!("{target}: relay answered")),
            Err(e) => Err(format!("{target}: {e}")),
        },
        Err(e) => Err(format!("{target}: {e}")),
    };
    report.push(("mail".to_string(), mail_result));

    // Settings only: a test message would cost money and reach nobody.
    let sms = SmsSender::new(&sms_settings(config))
        .map(|sender| sender.describe())
        .map_err(|e| e.to_string());
    report.push(("sms".to_string(), sms));

    let templates = Templates::new(config.mail.templates_dir.as_deref())
        .and_then(|t| t.check())
        .map(|()| "all message templates compile".to_string())
        .map_err(|e| e.to_string());
    report.push(("templates".to_string(), templates));

    let store = match config.store.kind {
        StoreKind::Sqlite => check_store_location(&config.store_path),
        StoreKind::Postgres => PostgresStore::check(&postgres_options(config))
            .await
            .map_err(|e| e.to_string()),
    };
    report.push(("store".to_string(), store));
    if let Some(breached) = check_breached(config) {
        report.push(("breached passwords".to_string(), breached));
    }
    report
}

fn check_store_location(path: &Path) -> Result<String, String> {
    if path.is_file() {
        return Ok(format!("{} exists", path.display()));
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    if parent.is_dir() {
        Ok(format!("{} will be created at first start", path.display()))
    } else {
        Err(format!(
            "{} does not exist; create it (server.state_dir) and give the service user write access",
            parent.display()
        ))
    }
}

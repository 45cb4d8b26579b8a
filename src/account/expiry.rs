//! The organisation's password expiration policy and "password never expires" per user,
//! shared by the admin API and the expiry sweep.
//!
//! Two sources of truth for the maximum age, chosen in configuration: the directory's own
//! policy (OpenLDAP ppolicy `pwdMaxAge` on the default policy entry, and per user through
//! `pwdPolicySubentry`), or lockbridge's own setting applied to the directory's
//! last-changed time. Notification days and the action on expiry are always lockbridge's,
//! kept in the store once an admin changes them (the configuration gives the defaults).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{AccountError, AccountService, Actor};
use crate::audit::{Action, AuditEvent, Detail, Outcome};
use crate::auth::AccountAction;
use crate::directory::PasswordStateEntry;
use crate::policy::{ExpiryAction, ExpiryPolicy, MaxAge, PasswordFacts};
use crate::store::Store;

const SETTING_KEY: &str = "expiration_policy";

/// Where the maximum age comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaxAgeSource {
    /// ppolicy: the default policy entry's `pwdMaxAge`, per-user `pwdPolicySubentry`.
    Directory { default_policy_dn: String },
    /// lockbridge's own `max_age_days`.
    Lockbridge,
}

#[derive(Debug, Clone)]
pub struct ExpirySettings {
    pub source: MaxAgeSource,
    /// The policy entry "never expires" points users at.
    pub never_expires_policy_dn: Option<String>,
    /// The policy until an admin changes it.
    pub defaults: ExpiryPolicy,
}

/// The stored part of the policy (what the directory does not hold).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredPolicy {
    max_age_days: Option<u32>,
    thresholds_days: Vec<u32>,
    on_expiry: String,
}

pub fn action_name(action: ExpiryAction) -> &'static str {
    match action {
        ExpiryAction::Nothing => "nothing",
        ExpiryAction::RequireChange => "require-change",
        ExpiryAction::Lock => "lock",
    }
}

pub fn parse_action(name: &str) -> Option<ExpiryAction> {
    match name {
        "nothing" => Some(ExpiryAction::Nothing),
        "require-change" => Some(ExpiryAction::RequireChange),
        "lock" => Some(ExpiryAction::Lock),
        _ => None,
    }
}

pub struct ExpiryService {
    account: Arc<AccountService>,
    store: Arc<dyn Store>,
    settings: ExpirySettings,
    /// Recently read policy facts for [`ExpiryService::password_expiry`], so that serving a
    /// user (SCIM reads) costs no extra directory round trips.
    cache: std::sync::Mutex<ExpiryCache>,
}

/// How long [`ExpiryService::password_expiry`] trusts what it read: a policy change shows
/// in SCIM reads within this time.
const EXPIRY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Default)]
struct ExpiryCache {
    org: Option<(std::time::Instant, ExpiryPolicy)>,
    policy_ages: HashMap<String, (std::time::Instant, MaxAge)>,
}

/// What [`ExpiryService::password_expiry`] says of one password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordExpiry {
    /// When it expires (or expired); `None` when it never does or the change time is unknown.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The user is on the no-expiry policy.
    pub never_expires: bool,
}

impl ExpiryService {
    pub fn new(
        account: Arc<AccountService>,
        store: Arc<dyn Store>,
        settings: ExpirySettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            account,
            store,
            settings,
            cache: std::sync::Mutex::new(ExpiryCache::default()),
        })
    }

    /// When a password changed at `changed_at`, under the policy entry `policy_dn` (`None`:
    /// the default one), expires. Policy facts are cached for a minute.
    pub async fn password_expiry(
        &self,
        changed_at: Option<chrono::DateTime<chrono::Utc>>,
        policy_dn: Option<&str>,
        never_expires_flag: bool,
    ) -> Result<PasswordExpiry, AccountError> {
        let never_expires = self.is_never_expires(policy_dn, never_expires_flag);
        if never_expires {
            return Ok(PasswordExpiry {
                expires_at: None,
                never_expires,
            });
        }
        let now = std::time::Instant::now();
        let fresh = |at: std::time::Instant| now.duration_since(at) < EXPIRY_CACHE_TTL;
        let cached_org = self.lock_cache().org.clone().filter(|(at, _)| fresh(*at));
        let org = match cached_org {
            Some((_, policy)) => policy,
            None => {
                let policy = self.policy().await?;
                self.lock_cache().org = Some((now, policy.clone()));
                policy
            }
        };
        let max_age = match (&self.settings.source, policy_dn) {
            (MaxAgeSource::Directory { .. }, Some(dn)) => {
                let key = dn.to_ascii_lowercase();
                let cached = self
                    .lock_cache()
                    .policy_ages
                    .get(&key)
                    .copied()
                    .filter(|(at, _)| fresh(*at));
                match cached {
                    Some((_, age)) => age,
                    None => {
                        let seconds = self
                            .account
                            .directory()
                            .policy_max_age(dn)
                            .await
                            .map_err(|e| self.account.directory_error(e))?;
                        let age = seconds.map_or(MaxAge::Never, MaxAge::from_pwd_max_age);
                        self.lock_cache().policy_ages.insert(key, (now, age));
                        age
                    }
                }
            }
            _ => MaxAge::OrgPolicy,
        };
        let facts = PasswordFacts {
            changed_at,
            never_expires,
            max_age,
        };
        let evaluation = crate::policy::evaluate(chrono::Utc::now(), chrono_tz::UTC, &org, &facts);
        Ok(PasswordExpiry {
            expires_at: evaluation.expires_at(),
            never_expires: matches!(evaluation, crate::policy::Evaluation::NeverExpires),
        })
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, ExpiryCache> {
        // The cache holds plain values; a panic elsewhere cannot leave it inconsistent.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn settings(&self) -> &ExpirySettings {
        &self.settings
    }

    /// A directory failure in the account layer's vocabulary (the one shared mapping).
    /// The account gate, for features that hold the expiry service.
    pub fn account(&self) -> &Arc<AccountService> {
        &self.account
    }

    pub fn directory_error(&self, e: crate::directory::DirectoryError) -> AccountError {
        self.account.directory_error(e)
    }

    /// The organisation's policy now in force.
    pub async fn policy(&self) -> Result<ExpiryPolicy, AccountError> {
        let stored = self
            .store
            .get_setting(SETTING_KEY)
            .await
            .map_err(AccountError::AuditUnavailable)?
            .and_then(|v| serde_json::from_value::<StoredPolicy>(v).ok());
        let mut policy = match stored {
            Some(s) => ExpiryPolicy {
                max_age_days: s.max_age_days,
                thresholds_days: s.thresholds_days,
                on_expiry: parse_action(&s.on_expiry).unwrap_or_default(),
            },
            None => self.settings.defaults.clone(),
        };
        if let MaxAgeSource::Directory { default_policy_dn } = &self.settings.source {
            let seconds = self
                .account
                .directory()
                .policy_max_age(default_policy_dn)
                .await
                .map_err(|e| self.account.directory_error(e))?;
            policy.max_age_days = match seconds.map(MaxAge::from_pwd_max_age) {
                Some(MaxAge::Days(d)) => Some(d),
                _ => None,
            };
        }
        Ok(policy)
    }

    /// Replaces the organisation's policy; with the directory as source, the maximum age
    /// is written to the default policy entry.
    pub async fn set_policy(
        &self,
        actor: &Actor,
        policy: ExpiryPolicy,
    ) -> Result<ExpiryPolicy, AccountError> {
        policy.validate().map_err(AccountError::InvalidRequest)?;
        let result = self.apply_policy(&policy).await;
        let outcome = match &result {
            Ok(()) => Outcome::Success,
            Err(e) => Outcome::Failed(e.code()),
        };
        let _ = self
            .account
            .audit
            .record(AuditEvent {
                actor: actor.name.clone(),
                action: Action::ExpirationPolicyChanged,
                target: None,
                outcome,
                detail: Some(Detail::ExpirationPolicy {
                    max_age_days: policy.max_age_days,
                    notify_days: policy.thresholds_days.clone(),
                    on_expiry: action_name(policy.on_expiry),
                }),
                request_id: actor.request_id.clone(),
            })
            .await;
        result?;
        self.policy().await
    }

    async fn apply_policy(&self, policy: &ExpiryPolicy) -> Result<(), AccountError> {
        *self.lock_cache() = ExpiryCache::default();
        // The store first: if the directory write then fails, re-sending the same request
        // converges, and nothing the directory enforces changed.
        let stored = StoredPolicy {
            max_age_days: policy.max_age_days,
            thresholds_days: policy.thresholds_days.clone(),
            on_expiry: action_name(policy.on_expiry).to_string(),
        };
        let value = serde_json::to_value(&stored)
            .map_err(|e| AccountError::InvalidRequest(e.to_string()))?;
        self.store
            .put_setting(SETTING_KEY, &value)
            .await
            .map_err(AccountError::AuditUnavailable)?;
        if let MaxAgeSource::Directory { default_policy_dn } = &self.settings.source {
            let seconds = policy.max_age_days.map(|d| u64::from(d) * 86_400);
            self.account
                .directory()
                .set_policy_max_age(default_policy_dn, seconds)
                .await
                .map_err(|e| self.account.directory_error(e))?;
        }
        Ok(())
    }

    /// Marks one user's password as never expiring, or back to the organisation's policy.
    pub async fn set_never_expires(
        &self,
        actor: &Actor,
        user_name: &str,
        never: bool,
    ) -> Result<bool, AccountError> {
        let directory = self.account.directory();
        let flag = directory.never_expires_is_a_flag();
        let policy_dn = self.settings.never_expires_policy_dn.clone();
        if !flag && policy_dn.is_none() {
            return Err(AccountError::InvalidRequest(
                "\"password never expires\" needs a no-expiry policy entry: operators set \
                 expiry.never_expires_policy_dn"
                    .into(),
            ));
        }
        let result = async {
            self.account
                .authorize_action(actor, AccountAction::SetNeverExpires, user_name)?;
            let user = self.account.find_user(user_name).await?;
            self.account
                .authorize(actor, AccountAction::SetNeverExpires, user_name, &user)
                .await?;
            self.account
                .audit
                .ping()
                .await
                .map_err(AccountError::AuditUnavailable)?;
            let written = if flag {
                directory.set_never_expires_flag(&user.dn, never).await
            } else {
                directory
                    .set_user_policy(&user.dn, policy_dn.as_deref().filter(|_| never))
                    .await
            };
            written.map_err(|e| self.account.directory_error(e))
        }
        .await;
        let outcome = match &result {
            Ok(()) => Outcome::Success,
            Err(AccountError::AuditUnavailable(_)) => return result.map(|()| never),
            Err(e @ (AccountError::UnknownUser(_) | AccountError::NotPermitted { .. })) => {
                Outcome::Refused(e.code())
            }
            Err(e) => Outcome::Failed(e.code()),
        };
        let _ = self
            .account
            .audit
            .record(AuditEvent {
                actor: actor.name.clone(),
                action: Action::PasswordNeverExpiresSet,
                target: Some(user_name.to_string()),
                outcome,
                detail: Some(Detail::NeverExpires {
                    never_expires: never,
                }),
                request_id: actor.request_id.clone(),
            })
            .await;
        result.map(|()| never)
    }

    /// Does this user's password never expire: the account says so (`flag`, Active
    /// Directory), or the user's policy entry is the no-expiry one?
    pub fn is_never_expires(&self, policy_dn: Option<&str>, flag: bool) -> bool {
        flag || match (&self.settings.never_expires_policy_dn, policy_dn) {
            (Some(never), Some(dn)) => never.eq_ignore_ascii_case(dn),
            _ => false,
        }
    }
}

/// Turns directory entries into the facts `policy::evaluate` needs, looking each
/// distinct per-user policy entry up once.
pub struct FactsResolver<'a> {
    service: &'a ExpiryService,
    policy_ages: HashMap<String, MaxAge>,
}

impl<'a> FactsResolver<'a> {
    pub fn new(service: &'a ExpiryService) -> Self {
        Self {
            service,
            policy_ages: HashMap::new(),
        }
    }

    pub async fn facts(
        &mut self,
        entry: &PasswordStateEntry,
    ) -> Result<PasswordFacts, AccountError> {
        let never_expires = self
            .service
            .is_never_expires(entry.policy_dn.as_deref(), entry.never_expires);
        let max_age = match (&self.service.settings.source, &entry.policy_dn) {
            (MaxAgeSource::Directory { .. }, Some(dn)) if !never_expires => {
                let key = dn.to_ascii_lowercase();
                match self.policy_ages.get(&key) {
                    Some(age) => *age,
                    None => {
                        let seconds = self
                            .service
                            .account
                            .directory()
                            .policy_max_age(dn)
                            .await
                            .map_err(|e| self.service.account.directory_error(e))?;
                        let age = seconds.map_or(MaxAge::Never, MaxAge::from_pwd_max_age);
                        self.policy_ages.insert(key, age);
                        age
                    }
                }
            }
            _ => MaxAge::OrgPolicy,
        };
        Ok(PasswordFacts {
            changed_at: entry.changed_at,
            never_expires,
            max_age,
        })
    }
}

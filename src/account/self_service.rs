//! What users do to their own password, through the self-service pages: reset it after
//! proving who they are, change it with the current one, or ask an administrator to
//! reset it. The pages (`selfservice`) decide whether the user proved themselves; every
//! change still passes here: who may use self-service at all, the organisation's rules,
//! the directory write, the "your password was changed" notice and the audit record.

use std::sync::Arc;

use chrono::Utc;
use serde_json::json;

use super::{AccountError, AccountService, user_inputs};
use crate::audit::{Action, AuditEvent, Detail, Outcome};
use crate::directory::{Contact, DirectoryError, OwnChange, UserEntry, same_dn};
use crate::notify::{PASSWORD_CHANGED, RESET_REQUEST};
use crate::store::{NewResetRequest, ResetRequestRecord, Store};
use crate::types::Secret;

/// The self-service settings the account layer needs.
#[derive(Clone)]
pub struct SelfServiceAccounts {
    pub store: Arc<dyn Store>,
    /// Where "contact an administrator" requests are mailed.
    pub request_recipients: Vec<String>,
    /// `None`: no first-password links are mailed.
    pub welcome: Option<WelcomeLinks>,
}

/// First-password links (`/welcome/{token}`) for accounts created without a password.
#[derive(Clone)]
pub struct WelcomeLinks {
    /// Keys the stored hash of each link's token.
    pub key: [u8; 32],
    pub lifetime: chrono::Duration,
}

impl WelcomeLinks {
    fn hash(&self, token: &str) -> Vec<u8> {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes any key length");
        mac.update(b"welcome link\0");
        mac.update(token.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// A user who may use self-service, with what the pages need to verify them.
#[derive(Debug, Clone)]
pub struct SelfServiceUser {
    pub entry: UserEntry,
    /// Holds an administrator role or is in an administrator group: must pass every
    /// verification method.
    pub is_admin: bool,
}

/// How a password came to be changed, for the notice and the audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfServiceChange {
    /// Forgotten password, reset after verification codes.
    Reset,
    /// Changed with the current password.
    Change,
}

impl SelfServiceChange {
    fn action(self) -> Action {
        match self {
            SelfServiceChange::Reset => Action::SelfServiceReset,
            SelfServiceChange::Change => Action::PasswordChanged,
        }
    }

    fn described(self) -> &'static str {
        match self {
            SelfServiceChange::Reset => "reset with the self-service page after verification",
            SelfServiceChange::Change => "changed with the previous password",
        }
    }
}

impl AccountService {
    /// The account `user_name` names, if self-service may act on it: it exists, it is
    /// not the service account or a protected account, and an administrator has not
    /// blocked it. `None` otherwise (the pages answer every `None` the same way).
    pub async fn self_service_user(
        &self,
        user_name: &str,
    ) -> Result<Option<SelfServiceUser>, AccountError> {
        let user_name = user_name.trim();
        if user_name.is_empty() || user_name.len() > 256 {
            return Ok(None);
        }
        let entry = match self.directory.find_user(user_name).await {
            Ok(entry) => entry,
            Err(DirectoryError::NoSuchUser) => return Ok(None),
            Err(e) => return Err(self.directory_error(e)),
        };
        if same_dn(&entry.dn, &self.protection.service_dn) || entry.blocked {
            return Ok(None);
        }
        let is_admin = self
            .directory
            .is_admin(&entry.dn)
            .await
            .map_err(|e| self.directory_error(e))?
            || !self.roles_of(&entry.dn).await?.is_empty();
        Ok(Some(SelfServiceUser { entry, is_admin }))
    }

    /// Sets the password a verified user chose (forgotten password). The organisation's
    /// rules apply, then the directory's; no change is required afterwards. Audited, and
    /// the user is told at every address they have.
    pub async fn reset_own_password(
        &self,
        user: &UserEntry,
        new_password: &Secret,
        verified_with: Vec<&'static str>,
        request_id: Option<String>,
    ) -> Result<(), AccountError> {
        let result = self.try_reset_own(user, new_password).await;
        self.record_own_change(
            user,
            SelfServiceChange::Reset,
            verified_with,
            request_id,
            &result,
        )
        .await;
        result
    }

    async fn try_reset_own(
        &self,
        user: &UserEntry,
        new_password: &Secret,
    ) -> Result<(), AccountError> {
        self.check_chosen(new_password, &user_inputs(user))?;
        self.audit
            .ping()
            .await
            .map_err(AccountError::AuditUnavailable)?;
        self.directory
            .set_known_password(&user.dn, new_password)
            .await
            .map_err(|e| self.directory_error(e))?;
        // A verified reset also ends a lockout after failed sign-ins (Microsoft 365's
        // "reset and unlock"): OpenLDAP ends it with the change, Active Directory keeps
        // `lockoutTime` until told. An administrator's block is never lifted here.
        if user.locked
            && !user.blocked
            && let Err(e) = self.directory.clear_lockout(&user.dn).await
        {
            tracing::warn!(user.dn = %user.dn, error = %e, "the password was reset but the lockout could not be ended");
        }
        self.notify_changed(user, SelfServiceChange::Reset).await;
        Ok(())
    }

    /// A user changes their password with the current one: bound as the user, so the
    /// directory applies its policy to them (history, minimum age). An expired password
    /// with no grace login left cannot bind; the directory said the password was right,
    /// so the service account sets the new one instead. Wrong password, unknown user
    /// and locked account are one answer ([`AccountError::SignInRefused`]).
    pub async fn change_own_password(
        &self,
        user_name: &str,
        current: &Secret,
        new_password: &Secret,
        request_id: Option<String>,
    ) -> Result<UserEntry, AccountError> {
        let Some(user) = self.self_service_user(user_name).await? else {
            // Same work as for a real account, so timing does not tell them apart.
            let _ = self.check_chosen(new_password, &[user_name]);
            return Err(AccountError::SignInRefused);
        };
        let user = user.entry;
        let result = self.try_change_own(&user, current, new_password).await;
        self.record_own_change(
            &user,
            SelfServiceChange::Change,
            vec!["password"],
            request_id,
            &result,
        )
        .await;
        result.map(|()| user)
    }

    async fn try_change_own(
        &self,
        user: &UserEntry,
        current: &Secret,
        new_password: &Secret,
    ) -> Result<(), AccountError> {
        self.check_chosen(new_password, &user_inputs(user))?;
        if current.expose() == new_password.expose() {
            return Err(AccountError::InvalidRequest(
                "the new password must differ from the current one".into(),
            ));
        }
        self.audit
            .ping()
            .await
            .map_err(AccountError::AuditUnavailable)?;
        let outcome = self
            .directory
            .change_own_password(&user.dn, current, new_password)
            .await
            .map_err(|e| match e {
                DirectoryError::InvalidCredentials => AccountError::SignInRefused,
                e => self.directory_error(e),
            })?;
        match outcome {
            OwnChange::Changed => {}
            OwnChange::NotSignedIn(check) if check.expired && !check.locked => {
                self.directory
                    .set_known_password(&user.dn, new_password)
                    .await
                    .map_err(|e| self.directory_error(e))?;
            }
            OwnChange::NotSignedIn(_) => return Err(AccountError::SignInRefused),
        }
        self.notify_changed(user, SelfServiceChange::Change).await;
        Ok(())
    }

    async fn notify_changed(&self, user: &UserEntry, how: SelfServiceChange) {
        let context = json!({
            "display_name": user.display_name.clone().unwrap_or_else(|| user.user_name.clone()),
            "user_name": user.user_name,
            "changed_at": Utc::now().format("%A %-d %B %Y, %H:%M UTC").to_string(),
            "how": how.described(),
            "public_url": self.public_url,
        });
        let mut addresses: Vec<&str> = Vec::new();
        for address in [user.mail.as_deref(), user.alternate_mail.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
        {
            if !address.is_empty() && !addresses.iter().any(|a| a.eq_ignore_ascii_case(address)) {
                addresses.push(address);
            }
        }
        for address in addresses {
            if let Err(e) = self
                .notifier
                .enqueue(PASSWORD_CHANGED, address, context.clone(), None)
                .await
            {
                tracing::warn!(user.dn = %user.dn, error = %e, "could not queue the password-changed notice");
            }
        }
    }

    async fn record_own_change(
        &self,
        user: &UserEntry,
        how: SelfServiceChange,
        verified_with: Vec<&'static str>,
        request_id: Option<String>,
        result: &Result<(), AccountError>,
    ) {
        let outcome = match result {
            Ok(()) => Outcome::Success,
            Err(AccountError::AuditUnavailable(_)) => return,
            Err(
                e @ (AccountError::DirectoryUnavailable { .. }
                | AccountError::OutcomeUnknown { .. }
                | AccountError::Misconfigured(_)
                | AccountError::Directory(_)),
            ) => Outcome::Failed(e.code()),
            Err(e) => Outcome::Refused(e.code()),
        };
        let _ = self
            .audit
            .record(AuditEvent {
                actor: user.user_name.clone(),
                action: how.action(),
                target: Some(user.user_name.clone()),
                outcome,
                detail: Some(Detail::SelfService { verified_with }),
                request_id,
            })
            .await;
    }

    /// "Contact an administrator": opens a request (one open request per user; asking
    /// again while one is open changes nothing and mails nobody) and mails the
    /// configured administrators. Audited.
    pub async fn request_admin_reset(
        &self,
        user: &UserEntry,
        request_id: Option<String>,
    ) -> Result<(), AccountError> {
        let Some(requests) = &self.self_service else {
            return Err(AccountError::Misconfigured(
                "self-service is not configured".into(),
            ));
        };
        let now = Utc::now();
        let (record, created) = requests
            .store
            .open_reset_request(&NewResetRequest {
                id: uuid::Uuid::now_v7().to_string(),
                user_dn: user.dn.clone(),
                user_name: user.user_name.clone(),
                created_at: now,
            })
            .await
            .map_err(AccountError::AuditUnavailable)?;
        if created {
            let context = json!({
                "display_name": user.display_name.clone().unwrap_or_else(|| user.user_name.clone()),
                "user_name": user.user_name,
                "requested_at": now.format("%A %-d %B %Y, %H:%M UTC").to_string(),
                "request_id": record.id,
            });
            for address in &requests.request_recipients {
                if let Err(e) = self
                    .notifier
                    .enqueue(RESET_REQUEST, address, context.clone(), None)
                    .await
                {
                    tracing::error!(error = %e, "could not queue a reset request to the administrators");
                }
            }
            let _ = self
                .audit
                .record(AuditEvent {
                    actor: user.user_name.clone(),
                    action: Action::ResetRequested,
                    target: Some(user.user_name.clone()),
                    outcome: Outcome::Success,
                    detail: Some(Detail::ResetRequest { id: record.id }),
                    request_id,
                })
                .await;
        }
        Ok(())
    }

    /// Mails a single-use first-password link for an account just created without a
    /// password (Entra ID never sends one), to its alternate address, else its own.
    /// False when links are off or the account has no address; nothing is changed in
    /// the directory.
    pub async fn send_welcome_link(
        &self,
        user_name: &str,
        user_dn: &str,
    ) -> Result<bool, AccountError> {
        let Some((store, links)) = self
            .self_service
            .as_ref()
            .and_then(|s| s.welcome.as_ref().map(|w| (&s.store, w)))
        else {
            return Ok(false);
        };
        let user = self.find_user(user_name).await?;
        if !same_dn(&user.dn, user_dn) {
            return Ok(false);
        }
        let Some(to) = [user.alternate_mail.as_deref(), user.mail.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
            .find(|a| a.parse::<lettre::Address>().is_ok())
        else {
            return Ok(false);
        };
        let token = {
            use base64::Engine;
            use rand::RngCore;
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
        };
        let now = Utc::now();
        let expires_at = now + links.lifetime;
        store
            .insert_welcome_link(&crate::store::NewWelcomeLink {
                hash: links.hash(token.expose()),
                user_dn: user.dn.clone(),
                user_name: user.user_name.clone(),
                created_at: now,
                expires_at,
            })
            .await
            .map_err(AccountError::AuditUnavailable)?;
        let context = json!({
            "display_name": user.display_name.clone().unwrap_or_else(|| user.user_name.clone()),
            "user_name": user.user_name,
            "expires_at": expires_at.format("%A %-d %B %Y, %H:%M UTC").to_string(),
            "public_url": self.public_url,
        });
        self.notifier
            .enqueue_until(
                crate::notify::WELCOME,
                to,
                context,
                Some(&token),
                expires_at,
            )
            .await
            .map_err(|e| AccountError::Misconfigured(e.to_string()))?;
        Ok(true)
    }

    /// The account a first-password link is for, if the link is still usable.
    pub async fn welcome_user(&self, token: &str) -> Result<Option<UserEntry>, AccountError> {
        let Some((store, links)) = self
            .self_service
            .as_ref()
            .and_then(|s| s.welcome.as_ref().map(|w| (&s.store, w)))
        else {
            return Ok(None);
        };
        if token.is_empty() || token.len() > 100 {
            return Ok(None);
        }
        let Some(link) = store
            .find_welcome_link(&links.hash(token), Utc::now())
            .await
            .map_err(AccountError::AuditUnavailable)?
        else {
            return Ok(None);
        };
        match self.self_service_user(&link.user_name).await? {
            Some(user) if same_dn(&user.entry.dn, &link.user_dn) => Ok(Some(user.entry)),
            _ => Ok(None),
        }
    }

    /// Sets the first password chosen through a link, then spends the link (a second
    /// use is refused). Rules and the directory's policy apply as to any choice.
    pub async fn set_first_password(
        &self,
        token: &str,
        password: &Secret,
        request_id: Option<String>,
    ) -> Result<(), AccountError> {
        let Some(user) = self.welcome_user(token).await? else {
            return Err(AccountError::InvalidRequest(
                "this link has been used or has expired".into(),
            ));
        };
        let result = self.try_reset_own(&user, password).await;
        if result.is_ok()
            && let Some((store, links)) = self
                .self_service
                .as_ref()
                .and_then(|s| s.welcome.as_ref().map(|w| (&s.store, w)))
            && let Err(e) = store.use_welcome_link(&links.hash(token), Utc::now()).await
        {
            tracing::error!(user.dn = %user.dn, error = %e, "could not spend a welcome link");
        }
        self.record_own_change(
            &user,
            SelfServiceChange::Reset,
            vec!["welcome-link"],
            request_id,
            &result,
        )
        .await;
        result
    }

    /// Signs a user in to manage their own security info: their password, bound as
    /// them. A password that must be changed first is [`AccountError::PasswordChangeFirst`];
    /// every other failure is [`AccountError::SignInRefused`].
    pub async fn sign_in_self_service(
        &self,
        user_name: &str,
        password: &Secret,
    ) -> Result<UserEntry, AccountError> {
        let Some(user) = self.self_service_user(user_name).await? else {
            return Err(AccountError::SignInRefused);
        };
        let check = self
            .directory
            .check_user_password(&user.entry.dn, password)
            .await
            .map_err(|e| self.directory_error(e))?;
        if !check.ok || check.locked {
            return Err(AccountError::SignInRefused);
        }
        if check.must_change || check.expired {
            return Err(AccountError::PasswordChangeFirst);
        }
        Ok(user.entry)
    }

    /// Saves a verified piece of security info (the pages checked a code sent to the
    /// new address or number). Audited without the value.
    pub async fn update_security_info(
        &self,
        user: &UserEntry,
        contact: Contact,
        value: &str,
        request_id: Option<String>,
    ) -> Result<(), AccountError> {
        let result = async {
            self.audit
                .ping()
                .await
                .map_err(AccountError::AuditUnavailable)?;
            self.directory
                .set_contact(&user.dn, contact, value)
                .await
                .map_err(|e| self.directory_error(e))
        }
        .await;
        let outcome = match &result {
            Ok(()) => Outcome::Success,
            Err(AccountError::AuditUnavailable(_)) => return result,
            Err(e) => Outcome::Failed(e.code()),
        };
        let _ = self
            .audit
            .record(AuditEvent {
                actor: user.user_name.clone(),
                action: Action::SecurityInfoChanged,
                target: Some(user.user_name.clone()),
                outcome,
                detail: Some(Detail::SecurityInfo {
                    changed: match contact {
                        Contact::AlternateMail => "alternateEmail",
                        Contact::Mobile => "mobile",
                    },
                }),
                request_id,
            })
            .await;
        result
    }

    /// Requests newest first (see [`Store::list_reset_requests`]).
    pub async fn reset_requests(
        &self,
        status: Option<&str>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ResetRequestRecord>, AccountError> {
        let Some(requests) = &self.self_service else {
            return Ok(Vec::new());
        };
        requests
            .store
            .list_reset_requests(status, before, limit)
            .await
            .map_err(AccountError::AuditUnavailable)
    }

    /// An administrator dismisses an open request (the reason is kept with the request,
    /// not in the audit log, which holds no free text).
    pub async fn dismiss_reset_request(
        &self,
        actor: &super::Actor,
        id: &str,
        reason: &str,
    ) -> Result<ResetRequestRecord, AccountError> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(AccountError::InvalidRequest(
                "give a reason of 1 to 500 characters to dismiss a request".into(),
            ));
        }
        let Some(requests) = &self.self_service else {
            return Err(AccountError::InvalidRequest(format!(
                "no reset request `{id}`"
            )));
        };
        let store = &requests.store;
        let Some(record) = store
            .get_reset_request(id)
            .await
            .map_err(AccountError::AuditUnavailable)?
        else {
            return Err(AccountError::InvalidRequest(format!(
                "no reset request `{id}`; list them with GET /api/v1/reset-requests"
            )));
        };
        let user = self.find_user(&record.user_name).await?;
        self.authorize(
            actor,
            crate::auth::AccountAction::ResetPassword,
            &record.user_name,
            &user,
        )
        .await?;
        if !store
            .dismiss_reset_request(id, &actor.name, reason, Utc::now())
            .await
            .map_err(AccountError::AuditUnavailable)?
        {
            return Err(AccountError::InvalidRequest(format!(
                "reset request `{id}` is {} already; only open requests can be dismissed",
                record.status
            )));
        }
        let _ = self
            .audit
            .record(AuditEvent {
                actor: actor.name.clone(),
                action: Action::ResetRequestDismissed,
                target: Some(record.user_name.clone()),
                outcome: Outcome::Success,
                detail: Some(Detail::ResetRequest { id: id.to_owned() }),
                request_id: actor.request_id.clone(),
            })
            .await;
        store
            .get_reset_request(id)
            .await
            .map_err(AccountError::AuditUnavailable)?
            .ok_or_else(|| AccountError::InvalidRequest(format!("no reset request `{id}`")))
    }

    /// Closes the user's open request after an administrator reset their password.
    pub(super) async fn close_reset_request(&self, user_dn: &str, by: &str) {
        if let Some(requests) = &self.self_service
            && let Err(e) = requests
                .store
                .close_reset_requests(user_dn, by, Utc::now())
                .await
        {
            tracing::warn!(user.dn = %user_dn, error = %e, "could not close the user's reset request");
        }
    }
}

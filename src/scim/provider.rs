//! The SCIM service, built the first time it is needed, once the directory has said
//! whether it holds lockbridge's LDAP schema (`scim/lockbridge.schema`): that decides
//! where `externalId` and the attributes inetOrgPerson has no home for are kept, and
//! whether they are offered at all. The daemon starts while the directory is down, so
//! this cannot be known at start; until the directory answers, SCIM requests get 503.

use std::sync::Arc;

use tokio::sync::OnceCell;

use super::error::ScimError;
use super::resource::{
    GroupMapping, GroupMappingSettings, SCIM_GROUP_CLASS, SCIM_USER_CLASS, UserMapping,
    UserMappingSettings,
};
use super::schema::Discovery;
use super::service::{ScimService, ScimSettings};
use super::user_groups::MEMBER_OF;
use crate::account::AccountService;
use crate::account::expiry::ExpiryService;
use crate::audit::AuditLog;
use crate::directory::{Directory, FollowedGroups, SyncedUsers};

/// Everything the SCIM service is made of, except what the directory's schema decides.
pub struct ScimParts {
    pub account: Arc<AccountService>,
    pub expiry: Arc<ExpiryService>,
    pub audit: AuditLog,
    pub users: UserMappingSettings,
    pub groups: GroupMappingSettings,
    /// Largest page, announced as `filter.maxResults`.
    pub max_results: u64,
    pub settings: ScimSettings,
}

impl ScimParts {
    /// The mappings for a directory with (or without) lockbridge's schema.
    pub fn mappings(&self, lockbridge_schema: bool) -> Result<(UserMapping, GroupMapping), String> {
        let users = UserMapping::new(UserMappingSettings {
            lockbridge_schema,
            ..self.users.clone()
        })
        .map_err(|e| format!("scim.attributes / scim.external_id_attribute: {e}"))?;
        let groups = GroupMapping::new(GroupMappingSettings {
            lockbridge_schema,
            ..self.groups.clone()
        })
        .map_err(|e| {
            format!("scim.group_object_classes / scim.group_external_id_attribute: {e}")
        })?;
        Ok((users, groups))
    }

    fn build(
        &self,
        lockbridge_schema: bool,
        followed: Option<SyncedUsers>,
        followed_groups: Option<FollowedGroups>,
    ) -> Result<Arc<ScimService>, String> {
        let (users, groups) = self.mappings(lockbridge_schema)?;
        let discovery = Discovery::new(self.settings.base_url.clone(), self.max_results)
            .hiding(&users.homeless());
        Ok(ScimService::new(
            self.account.clone(),
            self.expiry.clone(),
            self.audit.clone(),
            users,
            groups,
            discovery,
            self.settings.clone(),
            followed,
            followed_groups,
        ))
    }
}

/// Whether the directory holds lockbridge's LDAP schema (both auxiliary classes).
pub async fn has_lockbridge_schema(directory: &Directory) -> Result<bool, ScimError> {
    let found = directory
        .defines_object_classes(&[SCIM_USER_CLASS, SCIM_GROUP_CLASS])
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot read the directory's schema");
            ScimError::Unavailable {
                detail: "the directory's schema cannot be read yet".into(),
                retry_after_secs: 5,
            }
        })?;
    Ok(found.iter().all(|f| *f))
}

/// Builds the SCIM service once, on first use.
pub struct ScimProvider {
    directory: Directory,
    parts: ScimParts,
    service: OnceCell<Arc<ScimService>>,
}

impl ScimProvider {
    /// Checks both possible mappings now, so a bad mapping stops the daemon at start
    /// with a message naming the key, whatever the directory turns out to hold.
    pub fn new(directory: Directory, parts: ScimParts) -> Result<Arc<Self>, String> {
        parts.mappings(false)?;
        parts.mappings(true)?;
        Ok(Arc::new(Self {
            directory,
            parts,
            service: OnceCell::new(),
        }))
    }

    /// The service; the first call asks the directory about its schema (a failure is not
    /// remembered: the next request asks again).
    pub async fn service(&self) -> Result<Arc<ScimService>, ScimError> {
        self.service
            .get_or_try_init(|| async {
                let lockbridge_schema = has_lockbridge_schema(&self.directory).await?;
                let (followed, followed_groups) = if self.parts.settings.follow_directory {
                    let (users, groups) = self
                        .parts
                        .mappings(lockbridge_schema)
                        .map_err(ScimError::Internal)?;
                    let reads = self.parts.settings.follow_reads;
                    // Everything a read or a push needs, but memberOf: the memberof overlay
                    // changes it without telling followers, so the groups are followed
                    // instead. Without reads, only what a push needs.
                    let pushed = users.password_push_attributes();
                    let mut attrs = pushed.clone();
                    for a in users.read_attributes().iter().filter(|_| reads) {
                        if !a.eq_ignore_ascii_case(MEMBER_OF)
                            && !attrs.iter().any(|have| have.eq_ignore_ascii_case(a))
                        {
                            attrs.push(a.clone());
                        }
                    }
                    // Reads by userName are answered from the copy only where its lookup
                    // (without case) matches the directory's: attributes compared without
                    // case (caseIgnoreMatch, caseIgnoreIA5Match).
                    let name = users.user_name_attribute();
                    let indexed = reads
                        && ["uid", "mail", "cn", "userPrincipalName", "sAMAccountName"]
                            .iter()
                            .any(|a| a.eq_ignore_ascii_case(name));
                    let followed = self
                        .directory
                        .follow_users(&attrs, if indexed { name } else { "" }, &pushed)
                        .await;
                    let followed_groups = match (&followed, &self.parts.settings.groups_base) {
                        (Some(_), Some(base)) if reads => Some(
                            self.directory
                                .follow_groups(base, &groups.object_filter()),
                        ),
                        _ => None,
                    };
                    (followed, followed_groups)
                } else {
                    (None, None)
                };
                let service = self
                    .parts
                    .build(lockbridge_schema, followed, followed_groups)
                    .map_err(ScimError::Internal)?;
                let homeless = service.homeless_attributes();
                if homeless.is_empty() {
                    tracing::info!("SCIM: every attribute of the served schema has a home");
                } else {
                    tracing::warn!(
                        attributes = %homeless.join(", "),
                        "SCIM: the directory lacks lockbridge's LDAP schema (scim/lockbridge.schema): \
                         these attributes are not offered and writes of them are ignored"
                    );
                }
                Ok(service)
            })
            .await
            .cloned()
    }
}

//! Administrators' sessions: a person signs in (the `account` layer checks the password
//! against the directory and reads their roles), and gets a short-lived, revocable
//! session token. Only a keyed hash of it is stored, as for API tokens.

use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;

use super::roles::Role;
use super::tokens::TokenKey;
use crate::store::{NewSession, Store, StoreError};
use crate::types::Secret;

/// Session tokens start with this, API tokens with `lbt_`.
pub const SESSION_PREFIX: &str = "lbs_";

/// A session just opened: the token is shown once, to the person who signed in.
#[derive(Debug)]
pub struct IssuedSession {
    pub id: String,
    pub token: Secret,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct SessionService {
    store: Arc<dyn Store>,
    key: TokenKey,
    lifetime: chrono::Duration,
}

impl SessionService {
    pub fn new(store: Arc<dyn Store>, key: TokenKey, lifetime: std::time::Duration) -> Self {
        Self {
            store,
            key,
            lifetime: chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(1)),
        }
    }

    /// Opens a session for the person at `user_dn` holding `roles`.
    pub async fn open(
        &self,
        user_dn: &str,
        user_name: &str,
        roles: &[Role],
    ) -> Result<IssuedSession, StoreError> {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = format!(
            "{SESSION_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let now = Utc::now();
        let session = NewSession {
            id: uuid::Uuid::new_v4().to_string(),
            hash: self.key.hash(&token),
            user_dn: user_dn.to_owned(),
            user_name: user_name.to_owned(),
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            created_at: now,
            expires_at: now + self.lifetime,
        };
        self.store.insert_session(&session).await?;
        Ok(IssuedSession {
            id: session.id,
            token: Secret::new(token),
            expires_at: session.expires_at,
        })
    }

    /// Ends a session; false when it had already ended.
    pub async fn end(&self, id: &str) -> Result<bool, StoreError> {
        self.store.revoke_session(id, Utc::now()).await
    }
}

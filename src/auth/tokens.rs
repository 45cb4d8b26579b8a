//! API tokens: 256 random bits, shown once, stored only as a keyed hash.
//!
//! Tokens have full entropy, so a slow password hash (argon2) would add cost per
//! request and no security; HMAC-SHA256 under a key derived from the master key
//! means a stolen database alone cannot be used to test guesses offline.

use std::sync::Arc;

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use super::roles::Role;
use crate::store::{NewToken, Store, StoreError, TokenRecord};
use crate::types::Secret;

/// Every token starts with this, so secret scanners and humans can recognise one.
pub const TOKEN_PREFIX: &str = "lbt_";

/// The key for token hashes.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    pub fn hash(&self, token: &str) -> Vec<u8> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key size");
        mac.update(token.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey([redacted])")
    }
}

/// A freshly created token: the only moment its cleartext exists.
#[derive(Debug)]
pub struct IssuedToken {
    pub name: String,
    pub role: Role,
    pub token: Secret,
}

/// Creates, lists and revokes tokens.
#[derive(Clone)]
pub struct TokenService {
    store: Arc<dyn Store>,
    key: TokenKey,
}

impl TokenService {
    pub fn new(store: Arc<dyn Store>, key: TokenKey) -> Self {
        Self { store, key }
    }

    pub fn key(&self) -> &TokenKey {
        &self.key
    }

    pub async fn create(&self, name: &str, role: Role) -> Result<IssuedToken, StoreError> {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        self.store
            .insert_token(&NewToken {
                id: uuid::Uuid::new_v4().to_string(),
                name: name.to_string(),
                role: role.as_str().to_string(),
                hash: self.key.hash(&token),
                created_at: chrono::Utc::now(),
            })
            .await?;
        Ok(IssuedToken {
            name: name.to_string(),
            role,
            token: Secret::new(token),
        })
    }

    pub async fn list(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.store.list_tokens().await
    }

    pub async fn revoke(&self, name: &str) -> Result<bool, StoreError> {
        self.store.revoke_token(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_keyed_and_deterministic() {
        let a = TokenKey::new([1; 32]);
        let b = TokenKey::new([2; 32]);
        assert_eq!(a.hash("lbt_x"), a.hash("lbt_x"));
        assert_ne!(a.hash("lbt_x"), a.hash("lbt_y"));
        assert_ne!(a.hash("lbt_x"), b.hash("lbt_x"));
        assert!(!format!("{a:?}").contains('1'));
    }
}

//! Request extractors: `Principal` (a valid token) and `Require<P>` (a valid token
//! whose role grants permission `P`). Both fail before the handler runs.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use http::request::Parts;
use tokio_util::sync::CancellationToken;

use super::roles::{Permission, PermissionMarker, Role};
use super::sessions::SESSION_PREFIX;
use super::tokens::{TOKEN_PREFIX, TokenKey};
use crate::store::{Store, StoreError};

/// The authenticated caller: an API token, or an administrator signed in as themselves.
#[derive(Debug, Clone)]
pub struct Principal {
    /// As shown in the audit log: the token's name, or the person's sign-in name.
    pub name: String,
    /// A token's one role, or every role a person holds.
    pub roles: Vec<Role>,
    /// The person's directory entry; `None` for an API token.
    pub dn: Option<String>,
    /// The session a person signed in with; `None` for an API token.
    pub session_id: Option<String>,
}

impl Principal {
    pub fn can(&self, permission: Permission) -> bool {
        self.roles.iter().any(|r| r.allows(permission))
    }

    /// The roles, as error messages name them.
    pub fn roles_text(&self) -> String {
        let names: Vec<&str> = self.roles.iter().map(|r| r.as_str()).collect();
        if names.is_empty() {
            "no role".into()
        } else {
            names.join(" and ")
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token in the Authorization header")]
    MissingToken,
    #[error("the bearer token is not valid (unknown, revoked or mistyped)")]
    InvalidToken,
    #[error("{roles} may not {permission}")]
    Forbidden {
        roles: String,
        permission: Permission,
    },
    #[error("cannot check the token: {0}")]
    Store(#[from] StoreError),
}

/// How long a token found valid is trusted without asking the store again.
/// Identity providers send thousands of requests a minute with one token; this keeps the
/// store out of every request's path. Revocations do not wait for it: see
/// [`REVOCATION_POLL`].
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);

/// How often each instance asks the store whether a token was revoked or a session
/// ended anywhere (`lockbridge token revoke`, a sign-out on another instance): one
/// one-row read. When the answer moved, or the store cannot answer, the whole cache is
/// dropped, so a revoked token stops working everywhere within about this time.
pub const REVOCATION_POLL: Duration = Duration::from_millis(500);

/// At most this many tokens are remembered (then the cache starts over).
const TOKEN_CACHE_MAX: usize = 4096;

/// A token found valid: when, in which cache epoch, and as whom.
struct Cached {
    at: Instant,
    epoch: u64,
    principal: Principal,
}

/// Tokens recently found valid, by keyed hash (never the token itself).
type TokenCache = Mutex<HashMap<Vec<u8>, Cached>>;

/// Checks bearer tokens against the store.
#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn Store>,
    key: TokenKey,
    cache: Arc<TokenCache>,
    /// Raised whenever a revocation may have happened. An entry counts only in the
    /// epoch it was looked up in, so a lookup that raced a revocation (read before it,
    /// remembered after the cache was dropped) is not trusted either.
    epoch: Arc<AtomicU64>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>, key: TokenKey) -> Self {
        Self {
            store,
            key,
            cache: Arc::new(Mutex::new(HashMap::new())),
            epoch: Arc::new(AtomicU64::new(0)),
        }
    }

    fn cached(&self, hash: &[u8]) -> Option<Principal> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(hash)
            .filter(|c| c.epoch == epoch && c.at.elapsed() < TOKEN_CACHE_TTL)
            .map(|c| c.principal.clone())
    }

    /// Remembers a principal looked up in cache epoch `epoch` (read before the lookup).
    fn remember(&self, hash: Vec<u8>, principal: &Principal, epoch: u64) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= TOKEN_CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            hash,
            Cached {
                at: Instant::now(),
                epoch,
                principal: principal.clone(),
            },
        );
    }

    /// Drops every cached token: the next request of each asks the store again.
    fn forget_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Polls the store's revocation mark every `every` until `stop`, and drops the
    /// cache whenever it moved (a token was revoked or a session ended on any
    /// instance) or could not be read (then nothing cached can be vouched for).
    pub async fn watch_revocations(self, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen: Option<i64> = None;
        let mut failing = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.store.revocation_mark().await {
                Ok(mark) => {
                    if failing {
                        tracing::info!("the revocation mark can be read again");
                        failing = false;
                    }
                    // The first reading drops too: a revocation may have come between
                    // a lookup at start-up and this first poll.
                    if seen != Some(mark) {
                        self.forget_all();
                        seen = Some(mark);
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot read the revocation mark; \
                            every request asks the store for its token until it can");
                        failing = true;
                    }
                    self.forget_all();
                    seen = None;
                }
            }
        }
    }

    /// Resolves an `Authorization` header value to a principal.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::MissingToken)?;
        let (scheme, token) = header
            .trim()
            .split_once(' ')
            .ok_or(AuthError::MissingToken)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::MissingToken);
        }
        let token = token.trim();
        // Cheap shape check first: no store round trip for obvious garbage.
        let session = token.starts_with(SESSION_PREFIX);
        if !(token.starts_with(TOKEN_PREFIX) || session) || token.len() > 128 {
            metrics::counter!("lockbridge_auth_failures_total").increment(1);
            return Err(AuthError::InvalidToken);
        }
        // The lookup is by keyed hash, so timing reveals nothing about stored tokens.
        let hash = self.key.hash(token);
        if let Some(principal) = self.cached(&hash) {
            return Ok(principal);
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        if session {
            return self.authenticate_session(hash, epoch).await;
        }
        let record = self.store.find_token_by_hash(&hash).await?.ok_or_else(|| {
            metrics::counter!("lockbridge_auth_failures_total").increment(1);
            AuthError::InvalidToken
        })?;
        let role = record
            .role
            .parse::<Role>()
            .map_err(|_| AuthError::InvalidToken)?;
        let principal = Principal {
            name: record.name,
            roles: vec![role],
            dn: None,
            session_id: None,
        };
        self.remember(hash, &principal, epoch);
        Ok(principal)
    }
}

impl Authenticator {
    /// Forgets a session that ended, so it stops working at once in this process.
    pub fn forget_session(&self, id: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, c| c.principal.session_id.as_deref() != Some(id));
    }

    async fn authenticate_session(
        &self,
        hash: Vec<u8>,
        epoch: u64,
    ) -> Result<Principal, AuthError> {
        let record = self
            .store
            .find_session_by_hash(&hash, chrono::Utc::now())
            .await?
            .ok_or_else(|| {
                metrics::counter!("lockbridge_auth_failures_total").increment(1);
                AuthError::InvalidToken
            })?;
        let roles = record
            .roles
            .iter()
            .map(|r| r.parse::<Role>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| AuthError::InvalidToken)?;
        let principal = Principal {
            name: record.user_name,
            roles,
            dn: Some(record.user_dn),
            session_id: Some(record.id),
        };
        // A session signed out ends at the next revocation poll, as a revoked token
        // does; one that expires is not cached past its end.
        if record.expires_at - chrono::Utc::now()
            > chrono::Duration::from_std(TOKEN_CACHE_TTL).unwrap_or_default()
        {
            self.remember(hash, &principal, epoch);
        }
        Ok(principal)
    }
}

impl<S> FromRequestParts<S> for Principal
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(p.clone());
        }
        let header = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let principal = Authenticator::from_ref(state).authenticate(header).await?;
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}

/// A principal that holds permission `P`; 401 without a valid token, 403 without the right.
#[derive(Debug)]
pub struct Require<P: PermissionMarker>(pub Principal, pub PhantomData<P>);

impl<S, P> FromRequestParts<S> for Require<P>
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
    P: PermissionMarker,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        if !principal.can(P::PERMISSION) {
            return Err(AuthError::Forbidden {
                roles: principal.roles_text(),
                permission: P::PERMISSION,
            });
        }
        Ok(Require(principal, PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::roles::Role;
    use crate::auth::tokens::TokenService;
    use crate::store::SqliteStore;

    /// Two authenticators on one database are two instances: a token revoked through
    /// one stops working on the other at its next poll, long before the cache's TTL.
    #[tokio::test]
    async fn a_revocation_elsewhere_drops_the_cached_token_at_the_next_poll() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_temporary().await.expect("store"));
        let key = TokenKey::new([7; 32]);
        let tokens = TokenService::new(store.clone(), key.clone());
        let issued = tokens.create("idp", Role::Scim).await.expect("token");
        let header = format!("Bearer {}", issued.token.expose());
        let b = Authenticator::new(store.clone(), key);
        let stop = CancellationToken::new();
        let watch = tokio::spawn(
            b.clone()
                .watch_revocations(Duration::from_millis(50), stop.clone()),
        );
        assert!(b.authenticate(Some(&header)).await.is_ok());
        tokens.revoke("idp").await.expect("revoke");
        let revoked_at = Instant::now();
        loop {
            match b.authenticate(Some(&header)).await {
                Err(AuthError::InvalidToken) => break,
                Ok(_) => assert!(
                    revoked_at.elapsed() < Duration::from_secs(1),
                    "still accepted a second after the revocation"
                ),
                Err(e) => panic!("unexpected {e}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        watch.await.expect("watcher");
    }
}

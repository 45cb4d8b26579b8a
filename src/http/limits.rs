//! Who may send how many requests to the authenticated APIs (`/api/v1`, `/scim/v2`).
//!
//! - The client's address is the peer's, or, when the peer is one of
//!   `server.trusted_proxies`, the nearest untrusted address in `X-Forwarded-For`.
//! - A request with a valid token is counted against that token's own bucket
//!   (`server.rate_limit_*` for the admin API, `scim.rate_limit_*` for SCIM), so one
//!   noisy client never slows another down, and nobody locks out an administrator by
//!   sending junk from the same address (behind a proxy every client shares one).
//! - A request that fails authentication is counted against its client address in a
//!   separate bucket (`server.auth_failures_per_minute`); once it is empty such requests
//!   get 429. A valid token is always checked and served, whatever its address did.
//!
//! Several instances behind one load balancer share these limits through the store
//! (issue 16), and each instance also keeps its own in-memory bucket with the same
//! quota, exactly as a lone instance always did:
//!
//! - Failed authentications are rare, so each one is one `take_rate` in the store: all
//!   instances together allow the configured number per address, not that many each.
//! - Token requests are the hot path (every SCIM request), so the store is not asked per
//!   request. An instance *leases* a chunk of the token's shared bucket,
//!   `max(1, burst / 10)` requests in one `take_rate`, and serves from it until it is
//!   spent. A request needs both a local unit and a leased one, so one instance alone is
//!   exactly as strict as before (leasing only charges the shared bucket earlier, never
//!   more). Across N instances the leases not yet used are the overshoot: at most
//!   N × chunk requests beyond what the shared bucket allows over any period.
//! - When the store cannot be asked, the local bucket alone decides (logged, and
//!   counted in `lockbridge_shared_limit_errors_total`): the limits loosen to one set
//!   per instance instead of refusing everyone.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;

use crate::auth::{AuthError, Authenticator, Principal};
use crate::store::{RateDecision, RateQuota, Store};

/// A sustained rate plus a burst.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// The client address a request is attributed to (after `trusted_proxies`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The address a request from `peer` is attributed to. Each proxy appends the
    /// address it received the request from to `X-Forwarded-For`, so the list is read
    /// from the right, past every trusted proxy; the first address that is not one is
    /// the client. A value that is not an address stops the walk (it was written by
    /// someone untrusted), and the last trusted hop is used.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return client;
        }
        let values: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        for hop in values.iter().rev().flat_map(|v| v.rsplit(',')) {
            let Some(ip) = parse_hop(hop) else {
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        client
    }
}

/// An IPv4 peer seen through an IPv6 socket is compared as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` element: an address, possibly `[v6]` or `v4:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = hop.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
        .map(canonical)
}

/// How an API renders the guard's refusals (admin JSON or SCIM error bodies).
#[derive(Clone, Copy)]
pub struct Refusals {
    pub unauthenticated: fn(AuthError) -> Response,
    /// `(seconds to wait, what was exceeded)`.
    pub rate_limited: fn(u64, Exceeded) -> Response,
}

/// Which limit a 429 is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// The token's own request rate.
    TokenRate,
    /// Too many failed authentications from the client's address.
    AuthFailures,
    /// Too many of the token's requests under way at once in this instance (the limit).
    TokenInFlight(u32),
}

type Limiter<K> = Arc<DefaultKeyedRateLimiter<K>>;

/// Where administrators sign in (`POST`), under the admin API's prefix.
const SIGN_IN_PATH: &str = "/sessions";

/// The limiter shared by both APIs (and every instance) for failed authentications,
/// per client address.
#[derive(Clone)]
pub struct FailureLimiter(Option<Arc<Failures>>);

struct Failures {
    local: Limiter<IpAddr>,
    store: Arc<dyn Store>,
    /// `None`: too large a window to keep in the store; each instance counts alone.
    quota: Option<RateQuota>,
}

impl FailureLimiter {
    /// `per_minute == 0`: failures are not limited. `burst == 0`: `per_minute`.
    pub fn new(store: Arc<dyn Store>, per_minute: u32, burst: u32) -> Self {
        let Some(rate) = NonZeroU32::new(per_minute) else {
            return Self(None);
        };
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        let local = forgetful(DefaultKeyedRateLimiter::keyed(
            Quota::per_minute(rate).allow_burst(burst),
        ));
        // The same quota as the local bucket.
        let quota = shared_quota(Duration::from_secs(60), rate, burst);
        Self(Some(Arc::new(Failures {
            local,
            store,
            quota,
        })))
    }

    /// Counts one failure; `Err(wait)` when the address has none left.
    async fn count(&self, client: Option<IpAddr>) -> Result<(), u64> {
        let (Some(f), Some(ip)) = (&self.0, client) else {
            return Ok(());
        };
        f.local.check_key(&ip).map_err(wait_secs)?;
        let Some(quota) = f.quota else { return Ok(()) };
        // An address is not a secret; the key says what it counts.
        let key = format!("auth-failures:{ip}");
        match f.store.take_rate(&key, quota, 1, chrono::Utc::now()).await {
            Ok(d) if d.allowed() => Ok(()),
            Ok(d) => Err(retry_secs(&d)),
            Err(e) => {
                shared_limit_unavailable(&e);
                Ok(())
            }
        }
    }
}

/// `rate` per `period` with `burst`, as the store keeps it; `None` (with a warning) for
/// a burst so large its bucket would span more than the store's ten years.
fn shared_quota(period: Duration, rate: NonZeroU32, burst: NonZeroU32) -> Option<RateQuota> {
    let quota = RateQuota::per(period, rate.get(), burst.get());
    if quota.is_none() {
        tracing::warn!(
            rate = rate.get(),
            burst = burst.get(),
            "a burst this large is not shared through the store; each instance applies it alone"
        );
    }
    quota
}

/// The store could not decide: the local bucket (already passed) stands in.
fn shared_limit_unavailable(e: &crate::store::StoreError) {
    metrics::counter!("lockbridge_shared_limit_errors_total").increment(1);
    tracing::warn!(error = %e, "shared rate limit unavailable; this instance's own limit applies");
}

/// Whole seconds for `Retry-After`, rounded up, at least 1.
fn retry_secs(d: &RateDecision) -> u64 {
    d.retry_after.as_secs_f64().ceil().max(1.0) as u64
}

/// Requests per token: a local bucket, and leases on the token's shared bucket.
struct TokenLimiter {
    local: Limiter<String>,
    store: Arc<dyn Store>,
    /// `None`: too large a window to keep in the store; each instance counts alone.
    quota: Option<RateQuota>,
    /// Requests taken from the shared bucket per store round trip.
    chunk: u32,
    /// `api` or `scim`: the two APIs' buckets are separate.
    scope: &'static str,
    leases: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Lease>>>>,
}

/// What this instance holds of one token's shared bucket.
struct Lease {
    /// Requests leased and not yet served.
    left: u32,
    /// The shared bucket was empty: no use asking again before this.
    refused_until: Option<(Instant, u64)>,
    used: Instant,
}

/// Leases are dropped (their requests unused, which is only stricter) for tokens idle
/// this long, once the table holds this many.
const LEASES_MAX: usize = 4096;
const LEASE_IDLE: Duration = Duration::from_secs(60);

impl TokenLimiter {
    fn new(store: Arc<dyn Store>, scope: &'static str, limit: RateLimit) -> Option<Self> {
        let rate = NonZeroU32::new(limit.per_second)?;
        let burst = NonZeroU32::new(limit.burst).unwrap_or(rate);
        let local = forgetful(DefaultKeyedRateLimiter::keyed(
            Quota::per_second(rate).allow_burst(burst),
        ));
        let quota = shared_quota(Duration::from_secs(1), rate, burst);
        Some(Self {
            local,
            store,
            quota,
            chunk: (burst.get() / 10).max(1),
            scope,
            leases: Mutex::new(HashMap::new()),
        })
    }

    fn lease(&self, key: &str) -> Arc<tokio::sync::Mutex<Lease>> {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lease) = leases.get(key) {
            return lease.clone();
        }
        if leases.len() >= LEASES_MAX {
            leases.retain(|_, l| l.try_lock().map_or(true, |l| l.used.elapsed() < LEASE_IDLE));
            if leases.len() >= LEASES_MAX {
                leases.clear();
            }
        }
        let lease = Arc::new(tokio::sync::Mutex::new(Lease {
            left: 0,
            refused_until: None,
            used: Instant::now(),
        }));
        leases.insert(key.to_owned(), lease.clone());
        lease
    }

    /// Counts one request; `Err(wait)` when the token has none left.
    async fn check(&self, key: &str) -> Result<(), u64> {
        self.local.check_key(&key.to_owned()).map_err(wait_secs)?;
        let Some(quota) = self.quota else {
            return Ok(());
        };
        let lease = self.lease(key);
        // Held across the round trip: concurrent requests of one token wait for one
        // lease instead of each taking a chunk.
        let mut lease = lease.lock().await;
        lease.used = Instant::now();
        if lease.left > 0 {
            lease.left -= 1;
            return Ok(());
        }
        if let Some((until, wait)) = lease.refused_until {
            if Instant::now() < until {
                return Err(wait);
            }
            lease.refused_until = None;
        }
        let shared_key = format!("{}:{key}", self.scope);
        match self
            .store
            .take_rate(&shared_key, quota, self.chunk, chrono::Utc::now())
            .await
        {
            Ok(d) if d.allowed() => {
                lease.left = d.granted - 1;
                Ok(())
            }
            Ok(d) => {
                let wait = retry_secs(&d);
                lease.refused_until = Some((Instant::now() + d.retry_after, wait));
                Err(wait)
            }
            Err(e) => {
                shared_limit_unavailable(&e);
                Ok(())
            }
        }
    }
}

/// Authenticates every request that carries a token, applies the per-token limit, and
/// counts failed authentications per address. Handlers still state the permission they
/// need (`Require<P>`); they find the principal this guard put in the request.
#[derive(Clone)]
pub struct ApiGuard {
    /// Shared: axum clones the guard for every request, and the authenticator holds a
    /// key that is wiped on drop.
    auth: Arc<Authenticator>,
    proxies: Arc<TrustedProxies>,
    per_token: Option<Arc<TokenLimiter>>,
    in_flight: Option<Arc<InFlight>>,
    failures: FailureLimiter,
    refusals: Refusals,
}

/// How many requests of each token this instance is serving, against a cap. A rate
/// limit caps what a client may send over time; this caps what it may have waiting on
/// the directory at once, so one identity provider cannot take every connection and
/// directory slot from the administrators and users, however fast the directory is.
struct InFlight {
    limit: u32,
    counts: Mutex<HashMap<String, u32>>,
}

/// One request counted in [`InFlight`] until it is answered.
struct InFlightEntry {
    owner: Arc<InFlight>,
    key: String,
}

impl InFlight {
    /// Counts a request of `key`, or `None` when it already has `limit` under way.
    fn enter(self: &Arc<Self>, key: String) -> Option<InFlightEntry> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        match counts.get_mut(&key) {
            Some(count) if *count >= self.limit => return None,
            Some(count) => *count += 1,
            None => {
                counts.insert(key.clone(), 1);
            }
        }
        Some(InFlightEntry {
            owner: self.clone(),
            key,
        })
    }
}

impl Drop for InFlightEntry {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            // Idle tokens leave the table, so it stays as small as the busy ones.
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

impl ApiGuard {
    /// `scope` names this API's token buckets in the store (`api`, `scim`);
    /// `in_flight` caps each token's requests under way at once (0 = no cap).
    pub fn new(
        auth: Authenticator,
        proxies: Arc<TrustedProxies>,
        store: Arc<dyn Store>,
        (scope, per_token, in_flight): (&'static str, Option<RateLimit>, u32),
        failures: FailureLimiter,
        refusals: Refusals,
    ) -> Self {
        let per_token = per_token
            .and_then(|limit| TokenLimiter::new(store, scope, limit))
            .map(Arc::new);
        let in_flight = (in_flight > 0).then(|| {
            Arc::new(InFlight {
                limit: in_flight,
                counts: Mutex::new(HashMap::new()),
            })
        });
        Self {
            auth: Arc::new(auth),
            proxies,
            per_token,
            in_flight,
            failures,
            refusals,
        }
    }
}

/// Builds a keyed limiter and forgets idle keys now and then, so the table stays as
/// small as the set of recent clients.
fn forgetful<K>(limiter: DefaultKeyedRateLimiter<K>) -> Limiter<K>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    let limiter = Arc::new(limiter);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let weak = Arc::downgrade(&limiter);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                let Some(limiter) = weak.upgrade() else { break };
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        });
    }
    limiter
}

fn wait_secs(not_until: governor::NotUntil<<DefaultClock as Clock>::Instant>) -> u64 {
    not_until
        .wait_time_from(DefaultClock::default().now())
        .as_secs()
        .max(1)
}

/// The middleware (`axum::middleware::from_fn_with_state(guard, api_guard)`).
pub async fn api_guard(State(guard): State<ApiGuard>, mut req: Request, next: Next) -> Response {
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| guard.proxies.client_address(c.0.ip(), req.headers()));
    if let Some(ip) = client {
        req.extensions_mut().insert(ClientAddress(ip));
    }
    let refused = |exceeded: Exceeded, wait: u64| {
        metrics::counter!(
            "lockbridge_rate_limited_total",
            "limit" => match exceeded {
                Exceeded::TokenRate => "token",
                Exceeded::AuthFailures => "auth_failures",
                Exceeded::TokenInFlight(_) => "token_in_flight",
            }
        )
        .increment(1);
        (guard.refusals.rate_limited)(wait, exceeded)
    };
    let Some(authorization) = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("").to_owned())
    else {
        // Signing in is a password guess each time: it counts before the directory is
        // asked, so a client out of attempts gets no answer about the password at all.
        if req.method() == http::Method::POST && req.uri().path().ends_with(SIGN_IN_PATH) {
            if let Err(wait) = guard.failures.count(client).await {
                return refused(Exceeded::AuthFailures, wait);
            }
            return next.run(req).await;
        }
        // No token: the route decides (a few are public); a 401 counts as a failure.
        let response = next.run(req).await;
        if response.status() == StatusCode::UNAUTHORIZED
            && let Err(wait) = guard.failures.count(client).await
        {
            return refused(Exceeded::AuthFailures, wait);
        }
        return response;
    };
    match guard.auth.authenticate(Some(&authorization)).await {
        Ok(principal) => {
            let key = (guard.per_token.is_some() || guard.in_flight.is_some())
                .then(|| token_key(&principal));
            if let (Some(limiter), Some(key)) = (&guard.per_token, &key)
                && let Err(wait) = limiter.check(key).await
            {
                return refused(Exceeded::TokenRate, wait);
            }
            // Held until the answer is built: the count is of requests under way.
            let _entry = match (&guard.in_flight, key) {
                (Some(in_flight), Some(key)) => match in_flight.enter(key) {
                    Some(entry) => Some(entry),
                    // Answers come back within milliseconds; a second is plenty.
                    None => return refused(Exceeded::TokenInFlight(in_flight.limit), 1),
                },
                _ => None,
            };
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e @ AuthError::Store(_)) => (guard.refusals.unauthenticated)(e),
        Err(e) => match guard.failures.count(client).await {
            Err(wait) => refused(Exceeded::AuthFailures, wait),
            Ok(()) => (guard.refusals.unauthenticated)(e),
        },
    }
}

fn token_key(principal: &Principal) -> String {
    // A person and a token may share a name; a person's entry tells them apart.
    match &principal.dn {
        Some(dn) => format!("person:{dn}"),
        None => format!("token:{}", principal.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn in_flight_counts_per_key_and_frees_places_as_requests_end() {
        let cap = Arc::new(InFlight {
            limit: 2,
            counts: Mutex::new(HashMap::new()),
        });
        let first = cap.enter("token:a".into()).expect("first");
        let second = cap.enter("token:a".into()).expect("second");
        assert!(cap.enter("token:a".into()).is_none(), "a third is refused");
        let other = cap
            .enter("token:b".into())
            .expect("another key has its own places");
        drop(first);
        let third = cap.enter("token:a".into()).expect("a place was freed");
        drop((second, third, other));
        assert!(
            cap.counts.lock().expect("lock").is_empty(),
            "idle keys leave the table"
        );
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies = TrustedProxies::new(vec!["10.0.0.0/24".parse().expect("net")]);
        let headers = xff(&["203.0.113.7, 10.0.0.9"]);
        // From a trusted proxy: the nearest untrusted hop.
        assert_eq!(
            proxies.client_address(ip("10.0.0.5"), &headers),
            ip("203.0.113.7")
        );
        // From anyone else: the header is ignored.
        assert_eq!(
            proxies.client_address(ip("198.51.100.1"), &headers),
            ip("198.51.100.1")
        );
        // A client cannot hide behind a forged leftmost entry.
        let forged = xff(&["1.2.3.4, 203.0.113.7"]);
        assert_eq!(
            proxies.client_address(ip("10.0.0.5"), &forged),
            ip("203.0.113.7")
        );
        // Several header lines are one list; ports and brackets are understood.
        let split = xff(&["1.2.3.4", "[2001:db8::1]"]);
        assert_eq!(
            proxies.client_address(ip("10.0.0.5"), &split),
            ip("2001:db8::1")
        );
        assert_eq!(
            proxies.client_address(ip("10.0.0.5"), &xff(&["192.0.2.1:4711"])),
            ip("192.0.2.1")
        );
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(
            proxies.client_address(ip("10.0.0.5"), &xff(&["junk"])),
            ip("10.0.0.5")
        );
        // No header: the proxy itself.
        assert_eq!(
            proxies.client_address(ip("10.0.0.5"), &HeaderMap::new()),
            ip("10.0.0.5")
        );
        // An IPv4 peer on an IPv6 socket.
        assert_eq!(
            proxies.client_address(ip("::ffff:10.0.0.5"), &headers),
            ip("203.0.113.7")
        );
    }

    async fn store() -> Arc<dyn Store> {
        Arc::new(
            crate::store::SqliteStore::open_temporary()
                .await
                .expect("store"),
        )
    }

    #[tokio::test]
    async fn failures_run_out_per_address() {
        let limiter = FailureLimiter::new(store().await, 60, 3);
        let a = Some(ip("192.0.2.1"));
        let b = Some(ip("192.0.2.2"));
        for _ in 0..3 {
            assert!(limiter.count(a).await.is_ok());
        }
        assert!(
            limiter.count(a).await.is_err(),
            "the fourth failure is refused"
        );
        assert!(
            limiter.count(b).await.is_ok(),
            "another address has its own bucket"
        );
        assert!(
            FailureLimiter::new(store().await, 0, 0)
                .count(a)
                .await
                .is_ok(),
            "0 = off"
        );
    }

    /// Two limiters on one store are two instances: together they allow the burst.
    #[tokio::test]
    async fn instances_share_the_failures_of_an_address() {
        let store = store().await;
        let one = FailureLimiter::new(store.clone(), 1, 4);
        let two = FailureLimiter::new(store, 1, 4);
        let a = Some(ip("192.0.2.1"));
        let mut allowed = 0;
        for i in 0..8 {
            let limiter = if i % 2 == 0 { &one } else { &two };
            allowed += usize::from(limiter.count(a).await.is_ok());
        }
        assert_eq!(allowed, 4);
    }

    /// One instance alone is exactly as strict as its local bucket; two instances
    /// leasing from one shared bucket let through at most the burst plus one chunk each.
    #[tokio::test]
    async fn token_leases_bound_the_overshoot_by_a_chunk_per_instance() {
        // 1/s so nothing refills during the test; burst 50 → chunks of 5.
        let limit = RateLimit {
            per_second: 1,
            burst: 50,
        };
        let alone = TokenLimiter::new(store().await, "scim", limit).expect("limiter");
        let mut served = 0;
        for _ in 0..80 {
            served += usize::from(alone.check("token:idp").await.is_ok());
        }
        assert!((50..=51).contains(&served), "alone: {served}");

        let shared = store().await;
        let a = TokenLimiter::new(shared.clone(), "scim", limit).expect("limiter");
        let b = TokenLimiter::new(shared, "scim", limit).expect("limiter");
        let mut served = 0;
        let mut refused_wait = 0;
        for i in 0..200 {
            let limiter = if i % 2 == 0 { &a } else { &b };
            match limiter.check("token:idp").await {
                Ok(()) => served += 1,
                Err(wait) => refused_wait = wait,
            }
        }
        assert!(served <= 50 + 2 * 5 + 1, "two instances: {served}");
        assert!(served >= 45, "two instances: {served}");
        assert!(refused_wait >= 1);
    }
}

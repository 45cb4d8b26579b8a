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

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;

use crate::auth::{AuthError, Authenticator, Principal};

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
}

type Limiter<K> = Arc<DefaultKeyedRateLimiter<K>>;

/// Where administrators sign in (`POST`), under the admin API's prefix.
const SIGN_IN_PATH: &str = "/sessions";

/// The limiter shared by both APIs for failed authentications, per client address.
#[derive(Clone)]
pub struct FailureLimiter(Option<Limiter<IpAddr>>);

impl FailureLimiter {
    /// `per_minute == 0`: failures are not limited.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let quota = NonZeroU32::new(per_minute).map(|rate| {
            Quota::per_minute(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate))
        });
        Self(quota.map(|q| forgetful(DefaultKeyedRateLimiter::keyed(q))))
    }

    /// Counts one failure; `Err(wait)` when the address has none left.
    fn count(&self, client: Option<IpAddr>) -> Result<(), u64> {
        match (&self.0, client) {
            (Some(limiter), Some(ip)) => limiter.check_key(&ip).map_err(wait_secs),
            _ => Ok(()),
        }
    }
}

/// Authenticates every request that carries a token, applies the per-token limit, and
/// counts failed authentications per address. Handlers still state the permission they
/// need (`Require<P>`); they find the principal this guard put in the request.
#[derive(Clone)]
pub struct ApiGuard {
    auth: Authenticator,
    proxies: Arc<TrustedProxies>,
    per_token: Option<Limiter<String>>,
    failures: FailureLimiter,
    refusals: Refusals,
}

impl ApiGuard {
    pub fn new(
        auth: Authenticator,
        proxies: Arc<TrustedProxies>,
        per_token: Option<RateLimit>,
        failures: FailureLimiter,
        refusals: Refusals,
    ) -> Self {
        let per_token = per_token.and_then(|limit| {
            let rate = NonZeroU32::new(limit.per_second)?;
            let burst = NonZeroU32::new(limit.burst).unwrap_or(rate);
            Some(forgetful(DefaultKeyedRateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            )))
        });
        Self {
            auth,
            proxies,
            per_token,
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
            if let Err(wait) = guard.failures.count(client) {
                return refused(Exceeded::AuthFailures, wait);
            }
            return next.run(req).await;
        }
        // No token: the route decides (a few are public); a 401 counts as a failure.
        let response = next.run(req).await;
        if response.status() == StatusCode::UNAUTHORIZED
            && let Err(wait) = guard.failures.count(client)
        {
            return refused(Exceeded::AuthFailures, wait);
        }
        return response;
    };
    match guard.auth.authenticate(Some(&authorization)).await {
        Ok(principal) => {
            if let Some(limiter) = &guard.per_token
                && let Err(not_until) = limiter.check_key(&token_key(&principal))
            {
                return refused(Exceeded::TokenRate, wait_secs(not_until));
            }
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e @ AuthError::Store(_)) => (guard.refusals.unauthenticated)(e),
        Err(e) => match guard.failures.count(client) {
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

    #[test]
    fn failures_run_out_per_address() {
        let limiter = FailureLimiter::new(60, 3);
        let a = Some(ip("192.0.2.1"));
        let b = Some(ip("192.0.2.2"));
        for _ in 0..3 {
            assert!(limiter.count(a).is_ok());
        }
        assert!(limiter.count(a).is_err(), "the fourth failure is refused");
        assert!(
            limiter.count(b).is_ok(),
            "another address has its own bucket"
        );
        assert!(FailureLimiter::new(0, 0).count(a).is_ok(), "0 = off");
    }
}

//! The self-service HTTP handlers. Each form carries a CSRF token equal to the
//! `lb_csrf` cookie; a verification in progress is bound to the browser by the
//! `lb_flow` cookie (only its keyed hash is stored). Both cookies are `HttpOnly`,
//! `SameSite=Strict`, and `Secure` when lockbridge is served over HTTPS.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use base64::Engine;
use chrono::Utc;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::flow::{CodeCheck, FlowState, Method, mask_email, mask_phone, new_code};
use super::pages::{Pages, STATIC_FILES};
use crate::account::{AccountError, AccountService, SelfServiceUser, rejection_code};
use crate::audit::{Action, AuditEvent, AuditLog, Outcome};
use crate::notify::{Notifier, SECURITY_CODE, SmsMessage, SmsSender, sms::e164};
use crate::policy::Violation;
use crate::store::{FlowRecord, NewFlow, RateQuota, Store};
use crate::types::Secret;

const CSRF_COOKIE: &str = "lb_csrf";
const FLOW_COOKIE: &str = "lb_flow";
const RESET_PURPOSE: &str = "reset";
const INFO_PURPOSE: &str = "security-info";
/// Codes sent per verification, all methods together (each send is a mail or a text).
const MAX_SENDS: u32 = 5;
/// Every answer to a submitted user name takes at least this long, so that unknown
/// accounts, accounts without methods and real ones cannot be told apart by timing.
const ANSWER_FLOOR: StdDuration = StdDuration::from_millis(400);

/// The client address of a request, after the trusted proxies (set by `http`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

#[derive(Debug, Clone)]
pub struct SelfServiceSettings {
    /// Methods users without an administrator role must pass (administrators: 2).
    pub methods_required: usize,
    pub code_digits: u8,
    pub code_valid: chrono::Duration,
    pub max_code_attempts: u32,
    pub starts_per_address_per_hour: u32,
    pub starts_per_account_per_hour: u32,
    /// Shown in the pages' header and in text messages.
    pub organization: String,
    /// Served over HTTPS: cookies get `Secure`, and HSTS is sent.
    pub secure: bool,
    /// Where codes go is shown, and a method chosen, before the first code is passed
    /// (`selfservice.reveal_security_info`). Off: every name typed at `/reset`, known or
    /// not, gets the same code page, and names that cannot be verified a decoy flow.
    pub reveal_security_info: bool,
}

#[derive(Clone)]
pub struct SelfServiceState(Arc<Inner>);

struct Inner {
    account: Arc<AccountService>,
    store: Arc<dyn Store>,
    notifier: Notifier,
    audit: AuditLog,
    sms: SmsSender,
    pages: Pages,
    key: [u8; 32],
    settings: SelfServiceSettings,
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    by_account: DefaultKeyedRateLimiter<String>,
    /// The same quotas in the store, shared by every instance.
    address_quota: Option<RateQuota>,
    account_quota: Option<RateQuota>,
}

impl SelfServiceState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        account: Arc<AccountService>,
        store: Arc<dyn Store>,
        notifier: Notifier,
        audit: AuditLog,
        sms: SmsSender,
        pages: Pages,
        key: [u8; 32],
        settings: SelfServiceSettings,
    ) -> Self {
        let hourly = |n: u32| {
            let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
            Quota::with_period(StdDuration::from_secs(3600) / n.get())
                .unwrap_or_else(|| Quota::per_hour(n))
                .allow_burst(n)
        };
        let by_address = RateLimiter::keyed(hourly(settings.starts_per_address_per_hour));
        let by_account = RateLimiter::keyed(hourly(settings.starts_per_account_per_hour));
        let shared = |n: u32| RateQuota::per(StdDuration::from_secs(3600), n.max(1), n.max(1));
        let address_quota = shared(settings.starts_per_address_per_hour);
        let account_quota = shared(settings.starts_per_account_per_hour);
        SelfServiceState(Arc::new(Inner {
            account,
            store,
            notifier,
            audit,
            sms,
            pages,
            key,
            settings,
            by_address,
            by_account,
            address_quota,
            account_quota,
        }))
    }
}

pub fn routes(state: SelfServiceState) -> Router {
    Router::new()
        // The address in every message ("Password help: <public_url>") leads here.
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/reset") }),
        )
        .route("/reset", get(reset_start).post(reset_submit))
        .route("/reset/send", post(reset_send))
        .route("/reset/code", post(reset_code))
        .route("/reset/password", post(reset_password))
        .route("/reset/contact-admin", post(contact_admin))
        .route("/change", get(change_form).post(change_submit))
        .route("/welcome/{token}", get(welcome_form).post(welcome_submit))
        .route("/security-info", get(info_page))
        .route("/security-info/sign-in", post(info_sign_in))
        .route("/security-info/change", post(info_change))
        .route("/security-info/verify", post(info_verify))
        .route("/selfservice/static/{file}", get(static_file))
        .with_state(state)
        .layer(axum::middleware::from_fn(security_headers))
}

/// Strict headers on every self-service answer: no framing, no inline script or style,
/// no referrer, nothing cached.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: &'static str, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "x-frame-options", "DENY");
    set(headers, "referrer-policy", "no-referrer");
    set(headers, "cross-origin-opener-policy", "same-origin");
    set(
        headers,
        "permissions-policy",
        "camera=(), microphone=(), geolocation=()",
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, "cache-control", "no-store");
    }
    response
}

async fn static_file(Path(file): Path<String>) -> Response {
    match STATIC_FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// What every page needs: the language, the CSRF token (and the cookie jar that holds
/// it), the request id for the audit log.
struct Visit {
    lang: String,
    csrf: String,
    jar: CookieJar,
    request_id: Option<String>,
    client: Option<IpAddr>,
}

impl SelfServiceState {
    fn visit(&self, headers: &HeaderMap, jar: CookieJar, client: Option<ClientIp>) -> Visit {
        let lang = self.0.pages.language(
            headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok()),
        );
        let (csrf, jar) = match jar.get(CSRF_COOKIE).map(|c| c.value().to_owned()) {
            Some(value) if value.len() == 43 => (value, jar),
            _ => {
                let value = random_token();
                let jar = jar.add(self.cookie(CSRF_COOKIE, value.clone()));
                (value, jar)
            }
        };
        Visit {
            lang,
            csrf,
            jar,
            request_id: headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            client: client.map(|c| c.0),
        }
    }

    fn cookie(&self, name: &'static str, value: String) -> Cookie<'static> {
        Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .secure(self.0.settings.secure)
            .same_site(SameSite::Strict)
            .build()
    }

    fn render(
        &self,
        visit: Visit,
        status: StatusCode,
        template: &str,
        mut context: Value,
    ) -> Response {
        if let Some(object) = context.as_object_mut() {
            object.insert("csrf".into(), visit.csrf.clone().into());
            object.insert(
                "organization".into(),
                self.0.settings.organization.clone().into(),
            );
        }
        match self.0.pages.render(template, &visit.lang, context) {
            Ok(html) => (
                status,
                visit.jar,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                html,
            )
                .into_response(),
            Err(e) => {
                tracing::error!(error = %e, "a self-service page did not render");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page could not be shown",
                )
                    .into_response()
            }
        }
    }

    /// A page of text: `title` and paragraphs, an optional "contact an administrator"
    /// button and a link onwards.
    #[allow(clippy::too_many_arguments)]
    fn message(
        &self,
        visit: Visit,
        status: StatusCode,
        title: &str,
        texts: &[&str],
        contact_form: bool,
        next: Option<(&str, &str)>,
        user_name: Option<&str>,
    ) -> Response {
        self.render(
            visit,
            status,
            "message.html",
            json!({
                "title_key": title,
                "text_keys": texts,
                "contact_form": contact_form,
                "next_url": next.map(|n| n.0),
                "next_key": next.map(|n| n.1),
                "minutes": self.0.settings.code_valid.num_minutes(),
                "user_name": user_name,
            }),
        )
    }

    fn csrf_refused(&self, visit: Visit) -> Response {
        self.message(
            visit,
            StatusCode::FORBIDDEN,
            "csrf.title",
            &["csrf.text"],
            false,
            Some(("/reset", "action.start_again")),
            None,
        )
    }

    fn rate_limited(&self, visit: Visit, wait: u64) -> Response {
        let mut response = self.message(
            visit,
            StatusCode::TOO_MANY_REQUESTS,
            "rate.title",
            &["rate.text"],
            false,
            None,
            None,
        );
        if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }

    fn flow_ended(&self, mut visit: Visit) -> Response {
        visit.jar = visit.jar.remove(Cookie::build(FLOW_COOKIE).path("/"));
        self.message(
            visit,
            StatusCode::BAD_REQUEST,
            "flow.expired.title",
            &["flow.expired.text"],
            false,
            Some(("/reset", "action.start_again")),
            None,
        )
    }

    fn unavailable(&self, visit: Visit) -> Response {
        self.message(
            visit,
            StatusCode::SERVICE_UNAVAILABLE,
            "app.title",
            &["error.unavailable"],
            false,
            None,
            None,
        )
    }

    /// Counts one attempt against the client address and the account's limits: in this
    /// instance's buckets (as a lone instance always did), then in the store's, which
    /// every instance shares, so that instances behind one load balancer together allow
    /// the configured numbers. If the store cannot answer, this instance's buckets
    /// decide alone.
    async fn admit(&self, client: Option<IpAddr>, user_name: &str) -> Result<(), u64> {
        let wait = |e: governor::NotUntil<<DefaultClock as Clock>::Instant>| {
            e.wait_time_from(DefaultClock::default().now())
                .as_secs()
                .max(1)
        };
        let account = user_name.trim().to_lowercase();
        if let Some(ip) = client {
            self.0.by_address.check_key(&ip).map_err(wait)?;
            self.take_shared(&format!("selfservice-address:{ip}"), self.0.address_quota)
                .await?;
        }
        self.0.by_account.check_key(&account).map_err(wait)?;
        // What someone typed as a user name may be a password typed in the wrong box:
        // the store gets a keyed hash of it, never the text.
        let key = format!(
            "selfservice-account:{}",
            hex::encode(self.keyed_hash(b"selfservice rate key\0", &account))
        );
        self.take_shared(&key, self.0.account_quota).await
    }

    async fn take_shared(&self, key: &str, quota: Option<RateQuota>) -> Result<(), u64> {
        let Some(quota) = quota else { return Ok(()) };
        match self.0.store.take_rate(key, quota, 1, Utc::now()).await {
            Ok(d) if d.allowed() => Ok(()),
            Ok(d) => Err((d.retry_after.as_secs_f64().ceil() as u64).max(1)),
            Err(e) => {
                metrics::counter!("lockbridge_shared_limit_errors_total").increment(1);
                tracing::warn!(error = %e, "shared self-service limit unavailable; this instance's own limit applies");
                Ok(())
            }
        }
    }

    fn flow_hash(&self, token: &str) -> Vec<u8> {
        self.keyed_hash(b"selfservice flow\0", token)
    }

    fn keyed_hash(&self, purpose: &[u8], text: &str) -> Vec<u8> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0.key).expect("HMAC takes any key length");
        mac.update(purpose);
        mac.update(text.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    async fn load_flow(&self, jar: &CookieJar) -> Result<Option<(FlowRecord, FlowState)>, ()> {
        self.load_flow_for(jar, RESET_PURPOSE).await
    }

    async fn load_flow_for(
        &self,
        jar: &CookieJar,
        purpose: &str,
    ) -> Result<Option<(FlowRecord, FlowState)>, ()> {
        let Some(token) = jar.get(FLOW_COOKIE).map(|c| c.value().to_owned()) else {
            return Ok(None);
        };
        let record = self
            .0
            .store
            .find_flow(&self.flow_hash(&token), Utc::now())
            .await
            .map_err(|e| tracing::error!(error = %e, "could not read a self-service flow"))?;
        Ok(record.and_then(|r| {
            let state = serde_json::from_value::<FlowState>(r.state.clone()).ok()?;
            (r.purpose == purpose).then_some((r, state))
        }))
    }

    /// Saves the flow if no other request changed it since it was read.
    async fn save_flow(&self, record: &FlowRecord, state: &FlowState) -> Result<bool, ()> {
        let value = serde_json::to_value(state)
            .map_err(|e| tracing::error!(error = %e, "could not encode a self-service flow"))?;
        self.0
            .store
            .update_flow(&record.id, record.version, &value, record.expires_at)
            .await
            .map_err(|e| tracing::error!(error = %e, "could not save a self-service flow"))
    }

    async fn end_flow(&self, record: &FlowRecord) {
        if let Err(e) = self.0.store.delete_flow(&record.id).await {
            tracing::warn!(error = %e, "could not end a self-service flow");
        }
    }

    /// The account behind a flow, read again (its methods may have changed); `None`
    /// when it is no longer the same account.
    async fn flow_user(&self, state: &FlowState) -> Result<Option<SelfServiceUser>, AccountError> {
        let Some(dn) = &state.user_dn else {
            return Ok(None);
        };
        Ok(self
            .0
            .account
            .self_service_user(&state.user_name)
            .await?
            .filter(|u| crate::directory::same_dn(&u.entry.dn, dn)))
    }

    fn methods_of(&self, user: &SelfServiceUser) -> Vec<Method> {
        let mut methods = Vec::new();
        if user
            .entry
            .alternate_mail
            .as_deref()
            .is_some_and(|a| a.trim().parse::<lettre::Address>().is_ok())
        {
            methods.push(Method::Email);
        }
        if self.0.sms.is_enabled() && user.entry.mobile.as_deref().and_then(e164).is_some() {
            methods.push(Method::Sms);
        }
        methods
    }

    fn destination(user: &SelfServiceUser, method: Method) -> String {
        match method {
            Method::Email => mask_email(user.entry.alternate_mail.as_deref().unwrap_or("")),
            Method::Sms => mask_phone(user.entry.mobile.as_deref().unwrap_or("")),
        }
    }

    /// Draws a code for `method`, records its hash in the flow, and sends it.
    async fn send_code(
        &self,
        record: &FlowRecord,
        state: &mut FlowState,
        user: &SelfServiceUser,
        method: Method,
    ) -> Result<(), SendFailure> {
        if state.sends >= MAX_SENDS {
            return Err(SendFailure::TooMany);
        }
        let now = Utc::now();
        let code = new_code(self.0.settings.code_digits);
        let valid = self.0.settings.code_valid;
        state.issue(&self.0.key, &record.id, method, &code, valid, now);
        state.sends += 1;
        match self.save_flow(record, state).await {
            Ok(true) => {}
            Ok(false) => return Err(SendFailure::Raced),
            Err(()) => return Err(SendFailure::Unavailable),
        }
        let entry = &user.entry;
        match method {
            Method::Email => {
                let to = entry.alternate_mail.as_deref().unwrap_or("").trim();
                let context = json!({
                    "display_name": entry.display_name.clone().unwrap_or_else(|| entry.user_name.clone()),
                    "user_name": entry.user_name,
                    "valid_minutes": valid.num_minutes(),
                });
                self.0
                    .notifier
                    .enqueue_until(SECURITY_CODE, to, context, Some(&code), now + valid)
                    .await
                    .map_err(|e| {
                        tracing::error!(user.dn = %entry.dn, error = %e, "could not queue a security code");
                        SendFailure::Unavailable
                    })?;
            }
            Method::Sms => {
                let Some(to) = entry.mobile.as_deref().and_then(e164) else {
                    return Err(SendFailure::Unavailable);
                };
                let text = Secret::new(format!(
                    "{} security code: {}. Valid {} minutes. Never share it.",
                    self.0.settings.organization,
                    code.expose(),
                    valid.num_minutes()
                ));
                let message = SmsMessage {
                    to,
                    text,
                    code: Some(code.clone()),
                };
                self.0.sms.send(&message).await.map_err(|e| {
                    tracing::error!(user.dn = %entry.dn, error = %e, "could not send a security code by text message");
                    SendFailure::Unavailable
                })?;
            }
        }
        Ok(())
    }

    /// What the code page shows. Before the first code is passed, and unless
    /// `reveal_security_info`, it is the same for every name (no destination, no step
    /// count, a way to another method and to an administrator): `user` is `None` for a
    /// decoy.
    fn code_context(
        &self,
        state: &FlowState,
        user: Option<&SelfServiceUser>,
        method: Method,
    ) -> Value {
        let shown = self.0.settings.reveal_security_info || !state.verified.is_empty();
        let to = user.filter(|_| shown).map(|u| Self::destination(u, method));
        json!({
            "method": method.as_str(),
            "neutral": to.is_none(),
            "to": to,
            "user_name": state.user_name,
            "step": state.verified.len() + 1,
            "total": state.required,
            "minutes": self.0.settings.code_valid.num_minutes(),
            "digits": self.0.settings.code_digits,
        })
    }

    /// A decoy's "send a code": counted like a real send (the same limit), nothing sent.
    async fn pretend_send(
        &self,
        record: &FlowRecord,
        state: &mut FlowState,
    ) -> Result<(), SendFailure> {
        if state.sends >= MAX_SENDS {
            return Err(SendFailure::TooMany);
        }
        state.sends += 1;
        match self.save_flow(record, state).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(SendFailure::Raced),
            Err(()) => Err(SendFailure::Unavailable),
        }
    }

    /// The page that asks for the code just sent (or, for a decoy, said to be sent).
    fn code_page(
        &self,
        visit: Visit,
        status: StatusCode,
        state: &FlowState,
        user: Option<&SelfServiceUser>,
        method: Method,
        error: Option<String>,
    ) -> Response {
        let mut context = self.code_context(state, user, method);
        context["error"] = error.into();
        self.render(visit, status, "reset-code.html", context)
    }

    fn choose_page(&self, visit: Visit, state: &FlowState, user: &SelfServiceUser) -> Response {
        let methods: Vec<Value> = state
            .remaining()
            .into_iter()
            .map(|m| json!({"method": m.as_str(), "to": Self::destination(user, m)}))
            .collect();
        self.render(
            visit,
            StatusCode::OK,
            "reset-choose.html",
            json!({
                "methods": methods,
                "step": state.verified.len() + 1,
                "total": state.required,
            }),
        )
    }

    fn password_page(
        &self,
        visit: Visit,
        status: StatusCode,
        template_context: Value,
        errors: Vec<String>,
    ) -> Response {
        let rules = self.0.account.password_rules();
        let mut context = template_context;
        if let Some(object) = context.as_object_mut() {
            object.insert(
                "rules".into(),
                json!({
                    "min_length": rules.min_length,
                    "max_length": rules.max_length,
                    "min_classes": rules.min_character_classes,
                }),
            );
            if !errors.is_empty() {
                object.insert("error".into(), errors.join(" ").into());
            }
        }
        self.render(visit, status, "new-password.html", context)
    }

    /// The texts that say why a password change was refused, in the page's language.
    fn refusal_texts(&self, lang: &str, e: &AccountError) -> (StatusCode, Vec<String>) {
        let text = |key: &str| self.0.pages.text(lang, key);
        match e {
            AccountError::PolicyViolation(violations) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                violations
                    .iter()
                    .map(|v| {
                        let t = text(&format!("violation.{}", v.code()));
                        match v {
                            Violation::TooShort { min, .. } => t.replace("{min}", &min.to_string()),
                            Violation::TooLong { max } => t.replace("{max}", &max.to_string()),
                            Violation::TooFewCharacterClasses { required, .. } => {
                                t.replace("{required}", &required.to_string())
                            }
                            _ => t,
                        }
                    })
                    .collect(),
            ),
            AccountError::DirectoryRefused(r) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                vec![text(&format!("error.{}", rejection_code(r)))],
            ),
            AccountError::SignInRefused | AccountError::AccountLocked => (
                StatusCode::UNAUTHORIZED,
                vec![text("error.sign_in_refused")],
            ),
            AccountError::InvalidRequest(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                vec![text("error.invalid_request")],
            ),
            _ => (
                StatusCode::SERVICE_UNAVAILABLE,
                vec![text("error.unavailable")],
            ),
        }
    }
}

impl SelfServiceState {
    /// The reset this browser has under way, its account read again (`None`: a decoy,
    /// see [`SelfServiceSettings::reveal_security_info`]); or the page that says why
    /// there is none (a form without the page's CSRF token, no verification in this
    /// browser, the store unavailable).
    async fn reset_in_progress(
        &self,
        visit: Visit,
        csrf: &str,
    ) -> Result<(Visit, FlowRecord, FlowState, Option<SelfServiceUser>), Response> {
        if !csrf_ok(&visit, csrf) {
            return Err(self.csrf_refused(visit));
        }
        let Ok(found) = self.load_flow(&visit.jar).await else {
            return Err(self.unavailable(visit));
        };
        let Some((record, state)) = found else {
            return Err(self.flow_ended(visit));
        };
        if state.is_decoy() && !self.0.settings.reveal_security_info {
            // The same directory read a real flow makes, so that the answer takes as long.
            return match self.0.account.self_service_user(&state.user_name).await {
                Ok(_) => Ok((visit, record, state, None)),
                Err(_) => Err(self.unavailable(visit)),
            };
        }
        match self.flow_user(&state).await {
            Ok(Some(user)) if state.can_verify() => Ok((visit, record, state, Some(user))),
            Ok(_) => Err(self.flow_ended(visit)),
            Err(_) => Err(self.unavailable(visit)),
        }
    }

    /// The page after a code was (or could not be) sent.
    fn sent_page(
        &self,
        visit: Visit,
        sent: Result<(), SendFailure>,
        state: &FlowState,
        user: Option<&SelfServiceUser>,
        method: Method,
    ) -> Response {
        match sent {
            Ok(()) => self.code_page(visit, StatusCode::OK, state, user, method, None),
            Err(SendFailure::TooMany) => self.rate_limited(visit, 600),
            Err(SendFailure::Raced) => self.flow_ended(visit),
            Err(SendFailure::Unavailable) => self.unavailable(visit),
        }
    }
}

enum SendFailure {
    TooMany,
    Raced,
    Unavailable,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn csrf_ok(visit: &Visit, submitted: &str) -> bool {
    !submitted.is_empty() && bool::from(visit.csrf.as_bytes().ct_eq(submitted.as_bytes()))
}

async fn floor(started: Instant) {
    tokio::time::sleep_until((started + ANSWER_FLOOR).into()).await;
}

async fn reset_start(
    State(s): State<SelfServiceState>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Response {
    let visit = s.visit(&headers, jar, None);
    s.render(visit, StatusCode::OK, "reset-start.html", json!({}))
}

#[derive(Deserialize)]
struct UserNameForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user_name: String,
}

async fn reset_submit(
    State(s): State<SelfServiceState>,
    headers: HeaderMap,
    client: Option<Extension<ClientIp>>,
    jar: CookieJar,
    Form(form): Form<UserNameForm>,
) -> Response {
    let started = Instant::now();
    let visit = s.visit(&headers, jar, client.map(|c| c.0));
    if !csrf_ok(&visit, &form.csrf) {
        return s.csrf_refused(visit);
    }
    let user_name = form.user_name.trim().to_owned();
    if user_name.is_empty() {
        return s.render(
            visit,
            StatusCode::UNPROCESSABLE_ENTITY,
            "reset-start.html",
            json!({"error": s.0.pages.text(&visit_lang(&headers, &s), "field.user_name")}),
        );
    }
    if let Err(wait) = s.admit(visit.client, &user_name).await {
        return s.rate_limited(visit, wait);
    }
    let user = match s.0.account.self_service_user(&user_name).await {
        Ok(user) => user,
        Err(e) => {
            tracing::error!(error = %e, "self-service could not look an account up");
            return s.unavailable(visit);
        }
    };
    let (dn, methods, required) = match &user {
        Some(u) => (
            Some(u.entry.dn.clone()),
            s.methods_of(u),
            if u.is_admin {
                2
            } else {
                s.0.settings.methods_required
            },
        ),
        None => (None, Vec::new(), s.0.settings.methods_required),
    };
    let mut state = FlowState::new(&user_name, dn, methods, required);
    let token = random_token();
    let now = Utc::now();
    let record = FlowRecord {
        id: uuid::Uuid::new_v4().to_string(),
        purpose: RESET_PURPOSE.into(),
        state: Value::Null,
        version: 0,
        created_at: now,
        expires_at: now + s.0.settings.code_valid,
    };
    let saved =
        s.0.store
            .insert_flow(
                &NewFlow {
                    id: record.id.clone(),
                    hash: s.flow_hash(&token),
                    purpose: RESET_PURPOSE.into(),
                    state: serde_json::to_value(&state).unwrap_or(Value::Null),
                    created_at: now,
                    expires_at: record.expires_at,
                },
                now,
            )
            .await;
    if let Err(e) = saved {
        tracing::error!(error = %e, "could not save a self-service flow");
        return s.unavailable(visit);
    }
    let mut visit = visit;
    visit.jar = visit.jar.add(s.cookie(FLOW_COOKIE, token));

    let reveal = s.0.settings.reveal_security_info;
    let response = match user.filter(|_| state.can_verify()) {
        None if reveal => s.message(
            visit,
            StatusCode::OK,
            "contact.title",
            &["contact.text", "contact.ask"],
            true,
            None,
            Some(&user_name),
        ),
        None => {
            let sent = s.pretend_send(&record, &mut state).await;
            s.sent_page(visit, sent, &state, None, Method::Email)
        }
        Some(user) if reveal && state.must_choose() => s.choose_page(visit, &state, &user),
        Some(user) => {
            let method = state.remaining()[0];
            let sent = s.send_code(&record, &mut state, &user, method).await;
            s.sent_page(visit, sent, &state, Some(&user), method)
        }
    };
    floor(started).await;
    response
}

fn visit_lang(headers: &HeaderMap, s: &SelfServiceState) -> String {
    s.0.pages.language(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

#[derive(Deserialize)]
struct SendForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    method: String,
}

async fn reset_send(
    State(s): State<SelfServiceState>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<SendForm>,
) -> Response {
    let started = Instant::now();
    let (visit, record, mut state, user) = match s
        .reset_in_progress(s.visit(&headers, jar, None), &form.csrf)
        .await
    {
        Ok(found) => found,
        Err(page) => return page,
    };
    let response = match user {
        None => {
            let sent = s.pretend_send(&record, &mut state).await;
            s.sent_page(visit, sent, &state, None, Method::Email)
        }
        Some(user) => {
            let remaining = state.remaining();
            let last = state.pending.as_ref().map(|p| p.method);
            let method = match form.method.as_str() {
                // "Try another way" on the neutral page: the next method, if there is one.
                "other" => remaining
                    .iter()
                    .copied()
                    .find(|m| Some(*m) != last)
                    .or(last.filter(|m| remaining.contains(m))),
                // "Send a new code" on the neutral page, which does not name the method.
                "same" => last
                    .filter(|m| remaining.contains(m))
                    .or(remaining.first().copied()),
                named => Method::parse(named).filter(|m| remaining.contains(m)),
            };
            match method {
                Some(method) => {
                    let sent = s.send_code(&record, &mut state, &user, method).await;
                    s.sent_page(visit, sent, &state, Some(&user), method)
                }
                None if s.0.settings.reveal_security_info || !state.verified.is_empty() => {
                    s.choose_page(visit, &state, &user)
                }
                None => {
                    let method = last.or(remaining.first().copied()).unwrap_or(Method::Email);
                    s.code_page(visit, StatusCode::OK, &state, Some(&user), method, None)
                }
            }
        }
    };
    // A decoy sends nothing: the answer must not come back sooner for it.
    floor(started).await;
    response
}

#[derive(Deserialize)]
struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

async fn reset_code(
    State(s): State<SelfServiceState>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<CodeForm>,
) -> Response {
    let started = Instant::now();
    let response = check_code(&s, &headers, jar, form).await;
    // A real flow's last wrong code is written to the audit log and a decoy's is not;
    // neither may answer sooner than the other.
    floor(started).await;
    response
}

/// `/reset/code` without its answer floor.
async fn check_code(
    s: &SelfServiceState,
    headers: &HeaderMap,
    jar: CookieJar,
    form: CodeForm,
) -> Response {
    let (visit, record, mut state, user) = match s
        .reset_in_progress(s.visit(headers, jar, None), &form.csrf)
        .await
    {
        Ok(found) => found,
        Err(page) => return page,
    };
    let pending_method = state.pending.as_ref().map(|p| p.method);
    let outcome = match &user {
        Some(_) => state.check(
            &s.0.key,
            &record.id,
            &Secret::new(form.code),
            s.0.settings.max_code_attempts,
            Utc::now(),
        ),
        None => state.miss(s.0.settings.max_code_attempts),
    };
    match s.save_flow(&record, &state).await {
        Ok(true) => {}
        // Another request of this browser spent or changed the code first.
        Ok(false) => return s.flow_ended(visit),
        Err(()) => return s.unavailable(visit),
    }
    let lang = visit.lang.clone();
    let user = user.as_ref();
    match (outcome, user) {
        (CodeCheck::Verified(_), Some(user)) if state.is_verified() => s.password_page(
            visit,
            StatusCode::OK,
            json!({
                "title_key": "reset.password.title",
                "action": "/reset/password",
                "user_name": user.entry.user_name,
            }),
            Vec::new(),
        ),
        (CodeCheck::Verified(_), Some(user)) if state.must_choose() => {
            s.choose_page(visit, &state, user)
        }
        (CodeCheck::Verified(_), Some(user)) => {
            let method = state.remaining()[0];
            let Ok(Some((record, mut state))) = s.load_flow(&visit.jar).await else {
                return s.flow_ended(visit);
            };
            let sent = s.send_code(&record, &mut state, user, method).await;
            s.sent_page(visit, sent, &state, Some(user), method)
        }
        // A decoy never verifies (see FlowState::miss).
        (CodeCheck::Verified(_), None) => s.flow_ended(visit),
        (CodeCheck::Wrong { left }, _) => {
            let method = pending_method.unwrap_or(Method::Email);
            let error =
                s.0.pages
                    .text(&lang, "code.wrong")
                    .replace("{left}", &left.to_string());
            s.code_page(
                visit,
                StatusCode::UNPROCESSABLE_ENTITY,
                &state,
                user,
                method,
                Some(error),
            )
        }
        (CodeCheck::NoneSent, _) => {
            let method = state.remaining().first().copied().unwrap_or(Method::Email);
            let error = s.0.pages.text(&lang, "code.missing");
            s.code_page(
                visit,
                StatusCode::UNPROCESSABLE_ENTITY,
                &state,
                user,
                method,
                Some(error),
            )
        }
        (CodeCheck::Expired, _) => {
            let method = pending_method.unwrap_or(Method::Email);
            let mut visit = visit;
            visit.lang = lang;
            let mut context = s.code_context(&state, user, method);
            let page_lang = visit_lang(headers, s);
            context["error"] = s.0.pages.text(&page_lang, "code.expired.title").into();
            context["hint"] =
                s.0.pages
                    .text(&page_lang, "code.expired.text")
                    .replace(
                        "{minutes}",
                        &s.0.settings.code_valid.num_minutes().to_string(),
                    )
                    .into();
            s.render(visit, StatusCode::GONE, "reset-code.html", context)
        }
        (CodeCheck::TooManyTries, _) => {
            s.end_flow(&record).await;
            if let Some(user) = user {
                let _ =
                    s.0.audit
                        .record(AuditEvent {
                            actor: user.entry.user_name.clone(),
                            action: Action::SelfServiceVerificationFailed,
                            target: Some(user.entry.user_name.clone()),
                            outcome: Outcome::Refused("too_many_wrong_codes"),
                            detail: None,
                            request_id: visit.request_id.clone(),
                        })
                        .await;
            }
            let mut visit = visit;
            visit.jar = visit.jar.remove(Cookie::build(FLOW_COOKIE).path("/"));
            s.message(
                visit,
                StatusCode::FORBIDDEN,
                "tries.title",
                &["tries.text"],
                false,
                Some(("/reset", "action.start_again")),
                None,
            )
        }
    }
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

async fn reset_password(
    State(s): State<SelfServiceState>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<PasswordForm>,
) -> Response {
    let (visit, record, state, user) = match s
        .reset_in_progress(s.visit(&headers, jar, None), &form.csrf)
        .await
    {
        Ok(found) => found,
        Err(page) => return page,
    };
    let Some(user) = user.filter(|_| state.is_verified()) else {
        return s.flow_ended(visit);
    };
    let page = json!({
        "title_key": "reset.password.title",
        "action": "/reset/password",
        "user_name": user.entry.user_name,
    });
    if form.password != form.confirm {
        let error = s.0.pages.text(&visit.lang, "error.mismatch");
        return s.password_page(visit, StatusCode::UNPROCESSABLE_ENTITY, page, vec![error]);
    }
    let verified_with = state.verified.iter().map(|m| m.as_str()).collect();
    match s
        .0
        .account
        .reset_own_password(
            &user.entry,
            &Secret::new(form.password),
            verified_with,
            visit.request_id.clone(),
        )
        .await
    {
        Ok(()) => {
            s.end_flow(&record).await;
            let mut visit = visit;
            visit.jar = visit.jar.remove(Cookie::build(FLOW_COOKIE).path("/"));
            s.message(
                visit,
                StatusCode::OK,
                "done.reset.title",
                &["done.reset.text"],
                false,
                None,
                None,
            )
        }
        Err(e) => {
            let (status, errors) = s.refusal_texts(&visit.lang, &e);
            s.password_page(visit, status, page, errors)
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn contact_admin(
    State(s): State<SelfServiceState>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<CsrfForm>,
) -> Response {
    let started = Instant::now();
    let visit = s.visit(&headers, jar, None);
    if !csrf_ok(&visit, &form.csrf) {
        return s.csrf_refused(visit);
    }
    let Ok(found) = s.load_flow(&visit.jar).await else {
        return s.unavailable(visit);
    };
    let Some((record, state)) = found else {
        return s.flow_ended(visit);
    };
    // An unknown account gets the same answer, and nothing is sent.
    if state.user_dn.is_some() {
        match s.flow_user(&state).await {
            Ok(Some(user)) => {
                if let Err(e) =
                    s.0.account
                        .request_admin_reset(&user.entry, visit.request_id.clone())
                        .await
                {
                    tracing::error!(error = %e, "could not record a reset request");
                    return s.unavailable(visit);
                }
            }
            Ok(None) => {}
            Err(_) => return s.unavailable(visit),
        }
    }
    s.end_flow(&record).await;
    let mut visit = visit;
    visit.jar = visit.jar.remove(Cookie::build(FLOW_COOKIE).path("/"));
    let response = s.message(
        visit,
        StatusCode::OK,
        "contact.sent.title",
        &["contact.sent.text"],
        false,
        None,
        None,
    );
    floor(started).await;
    response
}

async fn change_form(
    State(s): State<SelfServiceState>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Response {
    let visit = s.visit(&headers, jar, None);
    s.password_page(visit, StatusCode::OK, change_page(""), Vec::new())
}

fn change_page(user_name: &str) -> Value {
    json!({
        "title_key": "change.title",
        "action": "/change",
        "ask_user_name": true,
        "ask_current": true,
        "user_name_value": user_name,
    })
}

#[derive(Deserialize)]
struct ChangeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user_name: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

async fn change_submit(
    State(s): State<SelfServiceState>,
    headers: HeaderMap,
    client: Option<Extension<ClientIp>>,
    jar: CookieJar,
    Form(form): Form<ChangeForm>,
) -> Response {
    let started = Instant::now();
    let visit = s.visit(&headers, jar, client.map(|c| c.0));
    if !csrf_ok(&visit, &form.csrf) {
        return s.csrf_refused(visit);
    }
    let user_name = form.user_name.trim().to_owned();
    let page = change_page(&user_name);
    if form.password != form.confirm {
        let error = s.0.pages.text(&visit.lang, "error.mismatch");
        return s.password_page(visit, StatusCode::UNPROCESSABLE_ENTITY, page, vec![error]);
    }
    if let Err(wait) = s.admit(visit.client, &user_name).await {
        return s.rate_limited(visit, wait);
    }
    let result =
        s.0.account
            .change_own_password(
                &user_name,
                &Secret::new(form.current),
                &Secret::new(form.password),
                visit.request_id.clone(),
            )
            .await;
    let response = match result {
        Ok(_) => s.message(
            visit,
            StatusCode::OK,
            "done.change.title",
            &["done.change.text"],
            false,
            Some(("/change", "action.sign_in_again")),
            None,
        ),
        Err(e) => {
            let (status, errors) = s.refusal_texts(&visit.lang, &e);
            s.password_page(visit, status, page, errors)
        }
    };
    floor(started).await;
    response
}

fn welcome_page(token: &str, user_name: &str) -> Value {
    json!({
        "title_key": "welcome.password.title",
        "action": format!("/welcome/{token}"),
        "user_name": user_name,
    })
}

impl SelfServiceState {
    fn welcome_unusable(&self, visit: Visit) -> Response {
        self.message(
            visit,
            StatusCode::GONE,
            "welcome.used.title",
            &["welcome.used.text"],
            false,
            Some(("/reset", "nav.reset")),
            None,
        )
    }
}

async fn welcome_form(
    State(s): State<SelfServiceState>,
    headers: HeaderMap,
    jar: CookieJar,
    Path(token): Path<String>,
) -> Response {
    let visit = s.visit(&headers, jar, None);
    match s.0.account.welcome_user(&token).await {
        Ok(Some(user)) => s.password_page(
            visit,
            StatusCode::OK,
            welcome_page(&token, &user.user_name),
            Vec::new(),
        ),
        Ok(None) => s.welcome_unusable(visit),
        Err(_) => s.unavailable(visit),
    }
}

async fn welcome_submit(
    State(s): State<SelfServiceState>,
    headers: HeaderMap,
    jar: CookieJar,
    Path(token): Path<String>,
    Form(form): Form<PasswordForm>,
) -> Response {
    let visit = s.visit(&headers, jar, None);
    if !csrf_ok(&visit, &form.csrf) {
        return s.csrf_refused(visit);
    }
    let user = match s.0.account.welcome_user(&token).await {
        Ok(Some(user)) => user,
        Ok(None) => return s.welcome_unusable(visit),
        Err(_) => return s.unavailable(visit),
    };
    let page = welcome_page(&token, &user.user_name);
    if form.password != form.confirm {
        let error = s.0.pages.text(&visit.lang, "error.mismatch");
        return s.password_page(visit, StatusCode::UNPROCESSABLE_ENTITY, page, vec![error]);
    }
    match s
        .0
        .account
        .set_first_password(
            &token,
            &Secret::new(form.password),
            visit.request_id.clone(),
        )
        .await
    {
        Ok(()) => s.message(
            visit,
            StatusCode::OK,
            "done.reset.title",
            &["done.reset.text"],
            false,
            None,
            None,
        ),
        Err(AccountError::InvalidRequest(_)) => s.welcome_unusable(visit),
        Err(e) => {
            let (status, errors) = s.refusal_texts(&visit.lang, &e);
            s.password_page(visit, status, page, errors)
        }
    }
}

impl SelfServiceState {
    /// Starts a flow of `purpose` for this browser; the cookie goes into `visit`.
    async fn open_flow(
        &self,
        visit: &mut Visit,
        purpose: &str,
        state: &FlowState,
    ) -> Result<FlowRecord, ()> {
        let token = random_token();
        let now = Utc::now();
        let record = FlowRecord {
            id: uuid::Uuid::new_v4().to_string(),
            purpose: purpose.into(),
            state: Value::Null,
            version: 0,
            created_at: now,
            expires_at: now + self.0.settings.code_valid,
        };
        self.0
            .store
            .insert_flow(
                &NewFlow {
                    id: record.id.clone(),
                    hash: self.flow_hash(&token),
                    purpose: purpose.into(),
                    state: serde_json::to_value(state).map_err(|_| ())?,
                    created_at: now,
                    expires_at: record.expires_at,
                },
                now,
            )
            .await
            .map_err(|e| tracing::error!(error = %e, "could not save a self-service flow"))?;
        visit.jar = visit.jar.clone().add(self.cookie(FLOW_COOKIE, token));
        Ok(record)
    }

    fn info(&self, visit: Visit, status: StatusCode, context: Value) -> Response {
        let mut context = context;
        if let Some(object) = context.as_object_mut() {
            object.insert("sms".into(), self.0.sms.is_enabled().into());
            object.insert(
                "minutes".into(),
                self.0.settings.code_valid.num_minutes().into(),
            );
        }
        self.render(visit, status, "security-info.html", context)
    }

    /// The signed-in user's page: what is on file now.
    async fn info_signed_in(
        &self,
        visit: Visit,
        status: StatusCode,
        state: &FlowState,
        saved: bool,
        error: Option<String>,
    ) -> Response {
        match self.flow_user(state).await {
            Ok(Some(user)) => self.info(
                visit,
                status,
                json!({
                    "signed_in": true,
                    "saved": saved,
                    "error": error,
                    "user_name": user.entry.user_name,
                    "alternate_mail": user.entry.alternate_mail,
                    "mobile": user.entry.mobile,
                }),
            ),
            Ok(None) => self.flow_ended(visit),
            Err(_) => self.unavailable(visit),
        }
    }
}

async fn info_page(
    State(s): State<SelfServiceState>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Response {
    let visit = s.visit(&headers, jar, None);
    match s.load_flow_for(&visit.jar, INFO_PURPOSE).await {
        Ok(Some((_, state))) => {
            s.info_signed_in(visit, StatusCode::OK, &state, false, None)
                .await
        }
        Ok(None) => s.info(visit, StatusCode::OK, json!({"signed_in": false})),
        Err(()) => s.unavailable(visit),
    }
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user_name: String,
    #[serde(default)]
    password: String,
}

async fn info_sign_in(
    State(s): State<SelfServiceState>,
    headers: HeaderMap,
    client: Option<Extension<ClientIp>>,
    jar: CookieJar,
    Form(form): Form<SignInForm>,
) -> Response {
    let started = Instant::now();
    let mut visit = s.visit(&headers, jar, client.map(|c| c.0));
    if !csrf_ok(&visit, &form.csrf) {
        return s.csrf_refused(visit);
    }
    let user_name = form.user_name.trim().to_owned();
    if let Err(wait) = s.admit(visit.client, &user_name).await {
        return s.rate_limited(visit, wait);
    }
    let result =
        s.0.account
            .sign_in_self_service(&user_name, &Secret::new(form.password))
            .await;
    let response = match result {
        Ok(user) => {
            let state = FlowState::new(&user.user_name, Some(user.dn.clone()), Vec::new(), 0);
            match s.open_flow(&mut visit, INFO_PURPOSE, &state).await {
                Ok(_) => {
                    s.info_signed_in(visit, StatusCode::OK, &state, false, None)
                        .await
                }
                Err(()) => s.unavailable(visit),
            }
        }
        Err(AccountError::PasswordChangeFirst) => s.message(
            visit,
            StatusCode::FORBIDDEN,
            "info.title",
            &["info.change_first"],
            false,
            Some(("/change", "nav.change")),
            None,
        ),
        Err(e) => {
            let (status, errors) = s.refusal_texts(&visit.lang, &e);
            s.info(
                visit,
                status,
                json!({"signed_in": false, "user_name": user_name, "error": errors.join(" ")}),
            )
        }
    };
    floor(started).await;
    response
}

#[derive(Deserialize)]
struct InfoChangeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    value: String,
}

async fn info_change(
    State(s): State<SelfServiceState>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<InfoChangeForm>,
) -> Response {
    let visit = s.visit(&headers, jar, None);
    if !csrf_ok(&visit, &form.csrf) {
        return s.csrf_refused(visit);
    }
    let Ok(found) = s.load_flow_for(&visit.jar, INFO_PURPOSE).await else {
        return s.unavailable(visit);
    };
    let Some((record, mut state)) = found else {
        return s.flow_ended(visit);
    };
    let value = form.value.trim().to_owned();
    let (method, normalized) = match form.kind.as_str() {
        "email" => match value.parse::<lettre::Address>() {
            Ok(address) => (Method::Email, address.to_string()),
            Err(_) => {
                let error = s.0.pages.text(&visit.lang, "info.invalid_email");
                return s
                    .info_signed_in(
                        visit,
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &state,
                        false,
                        Some(error),
                    )
                    .await;
            }
        },
        "mobile" if s.0.sms.is_enabled() => match e164(&value) {
            Some(number) => (Method::Sms, number),
            None => {
                let error = s.0.pages.text(&visit.lang, "info.invalid_mobile");
                return s
                    .info_signed_in(
                        visit,
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &state,
                        false,
                        Some(error),
                    )
                    .await;
            }
        },
        _ => {
            return s
                .info_signed_in(visit, StatusCode::BAD_REQUEST, &state, false, None)
                .await;
        }
    };
    if state.sends >= MAX_SENDS {
        return s.rate_limited(visit, 600);
    }
    let now = Utc::now();
    let code = new_code(s.0.settings.code_digits);
    let valid = s.0.settings.code_valid;
    state.issue(&s.0.key, &record.id, method, &code, valid, now);
    state.sends += 1;
    state.proposed = Some(normalized.clone());
    match s.save_flow(&record, &state).await {
        Ok(true) => {}
        Ok(false) => return s.flow_ended(visit),
        Err(()) => return s.unavailable(visit),
    }
    let sent = match method {
        Method::Email => {
            s.0.notifier
                .enqueue_until(
                    SECURITY_CODE,
                    &normalized,
                    json!({
                        "display_name": state.user_name,
                        "user_name": state.user_name,
                        "valid_minutes": valid.num_minutes(),
                    }),
                    Some(&code),
                    now + valid,
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Method::Sms => {
            s.0.sms
                .send(&SmsMessage {
                    to: normalized.clone(),
                    text: Secret::new(format!(
                        "{} security code: {}. Valid {} minutes. Never share it.",
                        s.0.settings.organization,
                        code.expose(),
                        valid.num_minutes()
                    )),
                    code: Some(code.clone()),
                })
                .await
                .map_err(|e| e.to_string())
        }
    };
    if let Err(e) = sent {
        tracing::error!(error = %e, "could not send a security-info code");
        return s.unavailable(visit);
    }
    let to = match method {
        Method::Email => mask_email(&normalized),
        Method::Sms => mask_phone(&normalized),
    };
    s.info(
        visit,
        StatusCode::OK,
        json!({"signed_in": true, "pending": true, "pending_to": to}),
    )
}

async fn info_verify(
    State(s): State<SelfServiceState>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<CodeForm>,
) -> Response {
    let visit = s.visit(&headers, jar, None);
    if !csrf_ok(&visit, &form.csrf) {
        return s.csrf_refused(visit);
    }
    let Ok(found) = s.load_flow_for(&visit.jar, INFO_PURPOSE).await else {
        return s.unavailable(visit);
    };
    let Some((record, mut state)) = found else {
        return s.flow_ended(visit);
    };
    let outcome = state.check(
        &s.0.key,
        &record.id,
        &Secret::new(form.code),
        s.0.settings.max_code_attempts,
        Utc::now(),
    );
    // A verified code is for this one change only; a wrong one leaves it waiting.
    let proposed = match outcome {
        CodeCheck::Verified(_) => state.proposed.take(),
        _ => state.proposed.clone(),
    };
    state.verified.clear();
    match s.save_flow(&record, &state).await {
        Ok(true) => {}
        Ok(false) => return s.flow_ended(visit),
        Err(()) => return s.unavailable(visit),
    }
    let lang = visit.lang.clone();
    match (outcome, proposed) {
        (CodeCheck::Verified(method), Some(value)) => {
            let user = match s.flow_user(&state).await {
                Ok(Some(user)) => user,
                Ok(None) => return s.flow_ended(visit),
                Err(_) => return s.unavailable(visit),
            };
            let contact = match method {
                Method::Email => crate::directory::Contact::AlternateMail,
                Method::Sms => crate::directory::Contact::Mobile,
            };
            match s
                .0
                .account
                .update_security_info(&user.entry, contact, &value, visit.request_id.clone())
                .await
            {
                Ok(()) => {
                    s.info_signed_in(visit, StatusCode::OK, &state, true, None)
                        .await
                }
                Err(_) => s.unavailable(visit),
            }
        }
        (CodeCheck::TooManyTries, _) => {
            s.end_flow(&record).await;
            let mut visit = visit;
            visit.jar = visit.jar.remove(Cookie::build(FLOW_COOKIE).path("/"));
            s.message(
                visit,
                StatusCode::FORBIDDEN,
                "tries.title",
                &["tries.text"],
                false,
                Some(("/security-info", "action.start_again")),
                None,
            )
        }
        (CodeCheck::Wrong { left }, _) => {
            let error =
                s.0.pages
                    .text(&lang, "code.wrong")
                    .replace("{left}", &left.to_string());
            s.info_signed_in(
                visit,
                StatusCode::UNPROCESSABLE_ENTITY,
                &state,
                false,
                Some(error),
            )
            .await
        }
        (CodeCheck::Expired, _) => {
            let error = s.0.pages.text(&lang, "code.expired.title");
            s.info_signed_in(visit, StatusCode::GONE, &state, false, Some(error))
                .await
        }
        _ => {
            let error = s.0.pages.text(&lang, "code.missing");
            s.info_signed_in(
                visit,
                StatusCode::UNPROCESSABLE_ENTITY,
                &state,
                false,
                Some(error),
            )
            .await
        }
    }
}

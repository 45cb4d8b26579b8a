//! Text messages (SMS) through the operator's gateway: a generic JSON or form webhook,
//! or a Twilio-compatible API.
//!
//! Owns [`SmsSettings`], [`SmsSender`] and [`SmsError`]: one HTTPS request per message,
//! with connect and total timeouts, no redirects (a redirect could carry the message to
//! another host), and verified TLS on rustls with aws-lc-rs. Success is a 2xx reply;
//! anything else is an [`SmsError`] naming the status and the gateway's own short
//! explanation.
//!
//! Messages carry one-time codes, so the text and the code never reach a log, an error
//! or a `Debug` output: logs name only the last two digits of the number
//! ([`mask_number`]) and the outcome. It does not queue or retry (a code is worth
//! sending only while the user waits for it): the caller decides.

use std::sync::Arc;
use std::time::{Duration, Instant};

use minijinja::{AutoEscape, Environment, Value, context};
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};

use super::relay::{client_config, trust_roots};
use crate::types::Secret;

/// The webhook body when `sms.body_template` is not set.
pub const DEFAULT_WEBHOOK_BODY: &str = r#"{"to": {{ to }}, "text": {{ text }}}"#;
/// The webhook content type when `sms.content_type` is not set.
pub const DEFAULT_CONTENT_TYPE: &str = "application/json";
/// Twilio's API, the default `sms.base_url` for `kind = "twilio"`.
pub const TWILIO_BASE_URL: &str = "https://api.twilio.com";
/// The longest gateway explanation kept in an error.
const DETAIL_LIMIT: usize = 160;

/// Which gateway, and how to reach it.
#[derive(Debug, Clone)]
pub enum SmsGateway {
    /// No SMS: self-service offers only the email methods.
    None,
    Webhook(WebhookSettings),
    Twilio(TwilioSettings),
}

/// A generic HTTP gateway: one POST per message, its body rendered from a template.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: String,
    /// A header carrying the gateway's credential, e.g. `Authorization` and
    /// `Bearer …`.
    pub auth_header: Option<(String, Secret)>,
    /// A minijinja template with the variables `to`, `text` and `code` (null when
    /// the message has none). Values are escaped for the content type, so
    /// `{"to": {{ to }}}` gives `{"to": "+33612345678"}`: no quotes around them in a
    /// JSON template.
    pub body_template: String,
    /// `application/json` (or another `…json` type) or
    /// `application/x-www-form-urlencoded`.
    pub content_type: String,
}

/// Twilio's Messages API, or a provider speaking it.
#[derive(Debug, Clone)]
pub struct TwilioSettings {
    /// Without a trailing slash; `https://api.twilio.com` for Twilio itself.
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: Secret,
    pub sender: TwilioSender,
}

/// Where Twilio's messages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwilioSender {
    /// A number (E.164) or an alphanumeric sender id: the `From` field.
    From(String),
    /// A messaging service (`MG…`) that picks the number: `MessagingServiceSid`.
    MessagingService(String),
}

/// The `[sms]` settings the sender needs.
#[derive(Debug, Clone)]
pub struct SmsSettings {
    pub gateway: SmsGateway,
    /// Time allowed to open the connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time allowed for the whole request, reply included.
    pub timeout: Duration,
}

/// One text message. `Debug` shows only the masked number.
pub struct SmsMessage {
    /// The mobile number in E.164 form (`+` and digits); see [`e164`].
    pub to: String,
    pub text: Secret,
    /// The code inside `text`, for gateways whose template wants it apart.
    pub code: Option<Secret>,
}

impl std::fmt::Debug for SmsMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsMessage")
            .field("to", &mask_number(&self.to))
            .finish_non_exhaustive()
    }
}

/// Why a message was not sent. No variant holds the text, the code or the full
/// number.
#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    /// `sms.kind = "none"`.
    #[error("no SMS gateway is configured (sms.kind = \"none\")")]
    Disabled,
    /// Bad settings, written for the operator.
    #[error("{0}")]
    Config(String),
    /// The recipient is not a number in international form.
    #[error("the mobile number ending in {0} is not in international form (+ and 8 to 15 digits)")]
    InvalidNumber(String),
    /// The body template failed to render, or its result is not what the content type
    /// says.
    #[error("sms.body_template: {0}")]
    Template(String),
    /// The gateway could not be reached, the TLS handshake failed, or it answered too
    /// late.
    #[error("the SMS gateway could not be reached: {0}")]
    Unreachable(String),
    /// The gateway answered, but not with 2xx.
    #[error("the SMS gateway answered {status}{}", detail_suffix(.detail))]
    Rejected { status: u16, detail: String },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl SmsError {
    /// True when the same message may go through later (gateway down, overloaded,
    /// rate limited), false when retrying cannot help (bad number, bad credentials).
    pub fn is_transient(&self) -> bool {
        match self {
            SmsError::Unreachable(_) => true,
            SmsError::Rejected { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }
}

/// Sends text messages. Cheap to clone (the HTTP client's connections are shared).
#[derive(Clone)]
pub struct SmsSender {
    inner: Option<Arc<Gateway>>,
}

impl std::fmt::Debug for SmsSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsSender")
            .field("gateway", &self.describe())
            .finish()
    }
}

struct Gateway {
    http: reqwest::Client,
    kind: GatewayKind,
}

enum GatewayKind {
    Webhook {
        url: reqwest::Url,
        auth_header: Option<(HeaderName, HeaderValue)>,
        // Boxed: the environment is large and the other kind small.
        body: Box<Environment<'static>>,
        content_type: HeaderValue,
        escape: BodyEscape,
    },
    Twilio {
        messages_url: reqwest::Url,
        account_sid: String,
        auth_token: Secret,
        sender: TwilioSender,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEscape {
    Json,
    Form,
}

const BODY_TEMPLATE: &str = "body";
const FORM_ESCAPE: &str = "form";

impl SmsSender {
    /// A sender that sends nothing ([`SmsError::Disabled`]).
    pub fn disabled() -> SmsSender {
        SmsSender { inner: None }
    }

    /// Checks the settings (the body template is compiled and rendered once with
    /// sample values) and prepares the HTTP client. Connects to nothing yet.
    pub fn new(settings: &SmsSettings) -> Result<SmsSender, SmsError> {
        let kind = match &settings.gateway {
            SmsGateway::None => return Ok(SmsSender::disabled()),
            SmsGateway::Webhook(w) => webhook(w)?,
            SmsGateway::Twilio(t) => twilio(t)?,
        };
        let roots = trust_roots(None).map_err(SmsError::Config)?;
        let tls = client_config(roots).map_err(SmsError::Config)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lockbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SmsError::Config(format!("sms: cannot set up the HTTP client: {e}")))?;
        Ok(SmsSender {
            inner: Some(Arc::new(Gateway { http, kind })),
        })
    }

    /// Whether messages can be sent at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// One line for `check-config`: the kind and the gateway's host, never a path or
    /// query (they may hold a key).
    pub fn describe(&self) -> String {
        let Some(gateway) = &self.inner else {
            return "none (self-service offers email methods only)".into();
        };
        match &gateway.kind {
            GatewayKind::Webhook { url, .. } => format!("webhook to {}", origin(url)),
            GatewayKind::Twilio {
                messages_url,
                sender,
                ..
            } => format!(
                "twilio at {}{}",
                origin(messages_url),
                match sender {
                    TwilioSender::From(_) => ", with a From number",
                    TwilioSender::MessagingService(_) => ", through a messaging service",
                }
            ),
        }
    }

    /// Sends one message and waits for the gateway's answer.
    pub async fn send(&self, message: &SmsMessage) -> Result<(), SmsError> {
        let Some(gateway) = &self.inner else {
            return Err(SmsError::Disabled);
        };
        let masked = mask_number(&message.to);
        if e164(&message.to).as_deref() != Some(message.to.as_str()) {
            return Err(SmsError::InvalidNumber(masked));
        }
        let started = Instant::now();
        let result = gateway.send(message).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(()) => {
                metrics::counter!("lockbridge_sms_total", "outcome" => "sent").increment(1);
                tracing::info!(to = %masked, elapsed_ms, "SMS accepted by the gateway");
            }
            Err(e) => {
                metrics::counter!("lockbridge_sms_total", "outcome" => "failed").increment(1);
                tracing::warn!(to = %masked, elapsed_ms, error = %e, "SMS not sent");
            }
        }
        result
    }
}

impl Gateway {
    async fn send(&self, message: &SmsMessage) -> Result<(), SmsError> {
        let request = match &self.kind {
            GatewayKind::Webhook {
                url,
                auth_header,
                body,
                content_type,
                escape,
            } => {
                let rendered = render_body(body, *escape, message)?;
                let mut request = self
                    .http
                    .post(url.clone())
                    .header(CONTENT_TYPE, content_type.clone())
                    .body(rendered);
                if let Some((name, value)) = auth_header {
                    request = request.header(name.clone(), value.clone());
                }
                request
            }
            GatewayKind::Twilio {
                messages_url,
                account_sid,
                auth_token,
                sender,
            } => {
                let sender_field = match sender {
                    TwilioSender::From(from) => ("From", from.as_str()),
                    TwilioSender::MessagingService(sid) => ("MessagingServiceSid", sid.as_str()),
                };
                let form = [
                    ("To", message.to.as_str()),
                    sender_field,
                    ("Body", message.text.expose()),
                ];
                self.http
                    .post(messages_url.clone())
                    .basic_auth(account_sid, Some(auth_token.expose()))
                    .form(&form)
            }
        };
        // Errors from reqwest name the URL, which may hold a key: drop it.
        let response = request
            .send()
            .await
            .map_err(|e| SmsError::Unreachable(describe_transport(e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(SmsError::Rejected {
            status: status.as_u16(),
            detail: scrub(&gateway_detail(&body), message),
        })
    }
}

fn webhook(w: &WebhookSettings) -> Result<GatewayKind, SmsError> {
    let url = gateway_url("sms.url", &w.url)?;
    let auth_header = match &w.auth_header {
        None => None,
        Some((name, value)) => {
            let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                SmsError::Config(format!(
                    "sms.auth_header `{name}` is not an HTTP header name such as Authorization"
                ))
            })?;
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
                SmsError::Config(
                    "sms.auth_value holds characters an HTTP header cannot carry (a line break?)"
                        .into(),
                )
            })?;
            value.set_sensitive(true);
            Some((name, value))
        }
    };
    let content_type = w.content_type.trim();
    let escape = body_escape(content_type).ok_or_else(|| {
        SmsError::Config(format!(
            "sms.content_type `{content_type}` is not supported: use application/json (or \
             another …+json type) or application/x-www-form-urlencoded"
        ))
    })?;
    let content_type = HeaderValue::from_str(content_type).map_err(|_| {
        SmsError::Config(format!(
            "sms.content_type `{content_type}` is not a header value"
        ))
    })?;
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_auto_escape_callback(move |_| match escape {
        BodyEscape::Json => AutoEscape::Json,
        BodyEscape::Form => AutoEscape::Custom(FORM_ESCAPE),
    });
    env.set_formatter(|out, state, value| {
        if state.auto_escape() == AutoEscape::Custom(FORM_ESCAPE) && !value.is_safe() {
            let text = value.to_string();
            out.write_str(&form_encode(&text))?;
            Ok(())
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    env.add_template_owned(BODY_TEMPLATE, w.body_template.clone())
        .map_err(|e| SmsError::Template(template_error(&e)))?;
    // Render once now, so a broken template stops the start instead of the first code.
    let sample = SmsMessage {
        to: "+33612345678".into(),
        text: Secret::new("Your code is 123456 \"quoted\" & more"),
        code: Some(Secret::new("123456")),
    };
    render_body(&env, escape, &sample)?;
    Ok(GatewayKind::Webhook {
        url,
        auth_header,
        body: Box::new(env),
        content_type,
        escape,
    })
}

fn twilio(t: &TwilioSettings) -> Result<GatewayKind, SmsError> {
    let base = gateway_url("sms.base_url", &t.base_url)?;
    let sid = t.account_sid.trim();
    if sid.is_empty() || !sid.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(SmsError::Config(
            "sms.account_sid must be the account SID (letters and digits, e.g. AC…)".into(),
        ));
    }
    let path = format!(
        "{}/2010-04-01/Accounts/{sid}/Messages.json",
        base.path().trim_end_matches('/')
    );
    let mut messages_url = base.clone();
    messages_url.set_path(&path);
    Ok(GatewayKind::Twilio {
        messages_url,
        account_sid: sid.to_string(),
        auth_token: t.auth_token.clone(),
        sender: t.sender.clone(),
    })
}

/// An http(s) URL; plain http only to this machine (a test or a local relay).
fn gateway_url(key: &str, raw: &str) -> Result<reqwest::Url, SmsError> {
    let url = reqwest::Url::parse(raw.trim())
        .map_err(|e| SmsError::Config(format!("{key} is not a URL: {e}")))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        _ => Err(SmsError::Config(format!(
            "{key} must start with https:// (plain http only to 127.0.0.1 or localhost)"
        ))),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        None => false,
    }
}

fn body_escape(content_type: &str) -> Option<BodyEscape> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Some(BodyEscape::Json)
    } else if essence == "application/x-www-form-urlencoded" {
        Some(BodyEscape::Form)
    } else {
        None
    }
}

fn render_body(
    env: &Environment<'static>,
    escape: BodyEscape,
    message: &SmsMessage,
) -> Result<String, SmsError> {
    let template = env
        .get_template(BODY_TEMPLATE)
        .map_err(|e| SmsError::Template(template_error(&e)))?;
    let code = message.code.as_ref().map(|c| c.expose().to_string());
    let body = template
        .render(context! {
            to => &message.to,
            text => message.text.expose(),
            code => Value::from(code),
        })
        .map_err(|e| SmsError::Template(template_error(&e)))?;
    if escape == BodyEscape::Json && serde_json::from_str::<serde_json::Value>(&body).is_err() {
        return Err(SmsError::Template(
            "the rendered body is not valid JSON; write variables without quotes, as in \
             {\"to\": {{ to }}}, since they are inserted as JSON strings"
                .into(),
        ));
    }
    Ok(body)
}

/// A template error in one line, without the template's source or values.
fn template_error(e: &minijinja::Error) -> String {
    let mut text = format!("{}", e.kind());
    if let Some(detail) = e.detail() {
        text.push_str(": ");
        text.push_str(detail);
    }
    if let Some(line) = e.line() {
        text.push_str(&format!(" (line {line})"));
    }
    text
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// `https://host:port`, for messages.
fn origin(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

fn describe_transport(e: reqwest::Error) -> String {
    let e = e.without_url();
    // reqwest's own text is only "error sending request"; the cause is in the chain.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if e.is_timeout() {
        format!("no answer within the time allowed ({text})")
    } else {
        text
    }
}

/// The gateway's explanation: Twilio's `message` (with its `code`), a JSON `error`,
/// `message` or `detail`, or the start of a text body.
fn gateway_detail(body: &str) -> String {
    let body = body.trim();
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(body) {
        let text = ["message", "error_message", "error", "detail", "description"]
            .iter()
            .find_map(|key| match map.get(*key) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Object(inner)) => inner
                    .get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string),
                _ => None,
            });
        let code = map.get("code").and_then(|c| match c {
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::String(s) => Some(s.clone()),
            _ => None,
        });
        return match (code, text) {
            (Some(code), Some(text)) => truncate(&format!("{text} (code {code})")),
            (None, Some(text)) => truncate(&text),
            (Some(code), None) => format!("code {code}"),
            (None, None) => String::new(),
        };
    }
    if body.starts_with('<') {
        // An HTML error page says nothing useful in its first characters.
        return String::new();
    }
    truncate(body.lines().next().unwrap_or_default())
}

fn truncate(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.trim();
    if clean.chars().count() <= DETAIL_LIMIT {
        clean.to_string()
    } else {
        let cut: String = clean.chars().take(DETAIL_LIMIT).collect();
        format!("{cut}…")
    }
}

/// A gateway may quote the request back in its error: never let the text, the code
/// or the full number out that way.
fn scrub(detail: &str, message: &SmsMessage) -> String {
    let mut detail = detail.to_string();
    // The number first: a code may also be a run of the number's digits.
    if !message.to.is_empty() {
        detail = detail.replace(&message.to, &mask_number(&message.to));
    }
    let text = message.text.expose();
    if !text.is_empty() {
        detail = detail.replace(text, "[message]");
    }
    if let Some(code) = &message.code
        && !code.expose().is_empty()
    {
        detail = detail.replace(code.expose(), "[code]");
    }
    detail
}

/// A mobile number as it may appear in logs: its last two digits, `…78`.
pub fn mask_number(number: &str) -> String {
    let digits: Vec<char> = number.chars().filter(char::is_ascii_digit).collect();
    let tail: String = digits[digits.len().saturating_sub(2)..].iter().collect();
    format!("…{tail}")
}

/// A number as directories hold it (`+33 6 12-34.56 78`, `(+1) 555 0100 200`) in
/// E.164 form (`+33612345678`), or `None` when it is not in international form (a
/// leading `+`, or `00`, then 8 to 15 digits). National forms are refused rather than
/// guessed: the country is not known here.
pub fn e164(raw: &str) -> Option<String> {
    let mut digits = String::new();
    let mut plus = false;
    for c in raw.trim().chars() {
        match c {
            '+' if digits.is_empty() && !plus => plus = true,
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' | '\u{a0}' => {}
            _ => return None,
        }
    }
    if !plus {
        digits = digits.strip_prefix("00")?.to_string();
    }
    if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
        return None;
    }
    Some(format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook_settings(template: &str, content_type: &str) -> SmsSettings {
        SmsSettings {
            gateway: SmsGateway::Webhook(WebhookSettings {
                url: "https://sms.example.org/send".into(),
                auth_header: None,
                body_template: template.into(),
                content_type: content_type.into(),
            }),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }

    fn message(text: &str) -> SmsMessage {
        SmsMessage {
            to: "+33612345678".into(),
            text: Secret::new(text),
            code: Some(Secret::new("123456")),
        }
    }

    fn rendered(settings: &SmsSettings, msg: &SmsMessage) -> String {
        let kind = match &settings.gateway {
            SmsGateway::Webhook(w) => webhook(w).expect("webhook"),
            _ => unreachable!(),
        };
        match kind {
            GatewayKind::Webhook { body, escape, .. } => {
                render_body(&body, escape, msg).expect("render")
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn json_bodies_escape_every_value() {
        let settings = webhook_settings(
            r#"{"to": {{ to }}, "message": {{ text }}, "code": {{ code }}}"#,
            "application/json",
        );
        let hostile = "Code 123456\", \"to\": \"+1999\"}\n<script>";
        let body = rendered(&settings, &message(hostile));
        let value: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(value["message"], hostile);
        assert_eq!(value["to"], "+33612345678");
        assert_eq!(value["code"], "123456");
        assert_eq!(value.as_object().map(|o| o.len()), Some(3));
    }

    #[test]
    fn a_missing_code_is_null() {
        let settings = webhook_settings(r#"{"code": {{ code }}}"#, "application/json");
        let msg = SmsMessage {
            code: None,
            ..message("hello")
        };
        assert_eq!(
            rendered(&settings, &msg),
            r#"{"code": none}"#.replace("none", "null")
        );
    }

    #[test]
    fn form_bodies_are_percent_encoded() {
        let settings = webhook_settings(
            "to={{ to }}&msg={{ text }}",
            "application/x-www-form-urlencoded",
        );
        let body = rendered(&settings, &message("a&b=c d"));
        assert_eq!(body, "to=%2B33612345678&msg=a%26b%3Dc+d");
    }

    #[test]
    fn quoted_variables_are_refused_at_start() {
        let settings = webhook_settings(r#"{"to": "{{ to }}"}"#, "application/json");
        let SmsGateway::Webhook(w) = &settings.gateway else {
            unreachable!()
        };
        let err = webhook(w).err().expect("refused");
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }

    #[test]
    fn unknown_variables_and_content_types_are_refused() {
        let settings = webhook_settings(r#"{"to": {{ number }}}"#, "application/json");
        assert!(SmsSender::new(&settings).is_err());
        let settings = webhook_settings(DEFAULT_WEBHOOK_BODY, "text/plain");
        let err = SmsSender::new(&settings).expect_err("refused");
        assert!(err.to_string().contains("sms.content_type"), "{err}");
    }

    #[test]
    fn plain_http_only_to_this_machine() {
        assert!(gateway_url("sms.url", "http://127.0.0.1:8080/x").is_ok());
        assert!(gateway_url("sms.url", "http://localhost/x").is_ok());
        assert!(gateway_url("sms.url", "https://sms.example.org/x").is_ok());
        let err = gateway_url("sms.url", "http://sms.example.org/x").expect_err("refused");
        assert!(
            err.to_string()
                .starts_with("sms.url must start with https://")
        );
    }

    #[test]
    fn twilio_url_keeps_a_base_path() {
        let settings = TwilioSettings {
            base_url: "http://127.0.0.1:9000/compat/".into(),
            account_sid: "AC123".into(),
            auth_token: Secret::new("t"),
            sender: TwilioSender::From("+15550100".into()),
        };
        let GatewayKind::Twilio { messages_url, .. } = twilio(&settings).expect("twilio") else {
            unreachable!()
        };
        assert_eq!(
            messages_url.as_str(),
            "http://127.0.0.1:9000/compat/2010-04-01/Accounts/AC123/Messages.json"
        );
    }

    #[test]
    fn numbers_are_normalised_or_refused() {
        assert_eq!(e164("+33 6 12-34.56 78").as_deref(), Some("+33612345678"));
        assert_eq!(e164("0033612345678").as_deref(), Some("+33612345678"));
        assert_eq!(e164("(+1) 555 0100 200").as_deref(), Some("+15550100200"));
        assert_eq!(e164("06 12 34 56 78"), None);
        assert_eq!(e164("+33 6 12 34 56 78 ext 2"), None);
        assert_eq!(e164("+12"), None);
        assert_eq!(mask_number("+33612345678"), "…78");
        assert_eq!(mask_number("7"), "…7");
    }

    #[test]
    fn gateway_details_are_short_and_never_quote_the_message() {
        let twilio = r#"{"code": 21211, "message": "The 'To' number +33612345678 is not valid.", "status": 400}"#;
        let msg = message("Your code is 123456");
        assert_eq!(
            scrub(&gateway_detail(twilio), &msg),
            "The 'To' number …78 is not valid. (code 21211)"
        );
        let echo = r#"{"error": "rejected: Your code is 123456"}"#;
        assert_eq!(scrub(&gateway_detail(echo), &msg), "rejected: [message]");
        let code_only = "bad request: code=123456";
        assert_eq!(
            scrub(&gateway_detail(code_only), &msg),
            "bad request: code=[code]"
        );
        let long = "x".repeat(500);
        assert_eq!(gateway_detail(&long).chars().count(), DETAIL_LIMIT + 1);
        assert_eq!(gateway_detail("<html><body>502</body></html>"), "");
    }

    #[test]
    fn debug_output_hides_the_text_and_number() {
        let shown = format!("{:?}", message("Your code is 123456"));
        assert!(!shown.contains("123456"), "{shown}");
        assert!(!shown.contains("+336"), "{shown}");
    }
}

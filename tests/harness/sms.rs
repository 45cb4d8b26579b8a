//! A stand-in SMS gateway: an HTTP server on 127.0.0.1 that takes both a JSON webhook
//! (`POST /sms`, a JSON object with `to` and `text`) and Twilio's Messages API
//! (`POST /2010-04-01/Accounts/{sid}/Messages.json`, a form with `To`, `From` or
//! `MessagingServiceSid`, `Body`, HTTP Basic authentication), records each message, and
//! lets a test wait for the next one to a number.
//!
//! Credentials are fixed ([`WEBHOOK_AUTH_HEADER`], [`WEBHOOK_AUTH_VALUE`],
//! [`TWILIO_ACCOUNT_SID`], [`TWILIO_AUTH_TOKEN`]); a request without them gets 401 with a
//! Twilio-shaped error body. [`SmsGateway::fail_with`] makes it refuse everything.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;

pub const WEBHOOK_PATH: &str = "/sms";
pub const WEBHOOK_AUTH_HEADER: &str = "X-Api-Key";
pub const WEBHOOK_AUTH_VALUE: &str = "sms-gateway-test-key";
pub const TWILIO_ACCOUNT_SID: &str = "AC00000000000000000000000000000001";
pub const TWILIO_AUTH_TOKEN: &str = "twilio-test-token";
/// How long [`SmsGateway::next_message_to`] waits.
pub const WAIT: Duration = Duration::from_secs(10);

/// Which API a message came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsApi {
    Webhook,
    Twilio,
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct SmsRecord {
    pub api: SmsApi,
    pub to: String,
    pub text: String,
    /// Twilio's `From` or `MessagingServiceSid`; the webhook's `from` if any.
    pub from: Option<String>,
    /// The request body as received (to check escaping).
    pub raw_body: String,
    pub content_type: Option<String>,
}

#[derive(Default)]
struct Shared {
    received: Vec<SmsRecord>,
    /// How many messages to each number a test has already taken.
    taken: HashMap<String, usize>,
    fail_status: Option<u16>,
    /// Requests refused (auth, shape or `fail_with`).
    refused: usize,
}

struct Inner {
    shared: Mutex<Shared>,
    arrived: tokio::sync::Notify,
}

/// The running stand-in; stopped on drop.
pub struct SmsGateway {
    addr: SocketAddr,
    inner: Arc<Inner>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl SmsGateway {
    /// Starts on a free port of 127.0.0.1 (inside the test's tokio runtime).
    pub async fn start() -> SmsGateway {
        let inner = Arc::new(Inner {
            shared: Mutex::new(Shared::default()),
            arrived: tokio::sync::Notify::new(),
        });
        let app = Router::new()
            .route(WEBHOOK_PATH, post(webhook))
            .route(
                "/2010-04-01/Accounts/{sid}/Messages.json",
                post(twilio_message),
            )
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SMS gateway stand-in");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        SmsGateway {
            addr,
            inner,
            stop: Some(stop),
        }
    }

    /// `http://127.0.0.1:PORT/sms`, for `sms.url`.
    pub fn webhook_url(&self) -> String {
        format!("http://{}{WEBHOOK_PATH}", self.addr)
    }

    /// `http://127.0.0.1:PORT`, for `sms.base_url` with `kind = "twilio"`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, answer every message with `status` (e.g. 500) and a Twilio-shaped
    /// error body; `None` accepts again.
    pub fn fail_with(&self, status: Option<u16>) {
        self.lock().fail_status = status;
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<SmsRecord> {
        self.lock().received.clone()
    }

    /// Requests refused so far (bad credentials, bad shape, or told to fail).
    pub fn refused(&self) -> usize {
        self.lock().refused
    }

    /// The text of the oldest message to `number` not taken yet, waiting up to
    /// [`WAIT`] for it; panics when none comes.
    pub async fn next_message_to(&self, number: &str) -> String {
        self.next_record_to(number).await.text
    }

    /// Like [`SmsGateway::next_message_to`], with everything recorded about it.
    pub async fn next_record_to(&self, number: &str) -> SmsRecord {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let arrived = self.inner.arrived.notified();
            {
                let mut shared = self.lock();
                let taken = shared.taken.get(number).copied().unwrap_or(0);
                let found = shared
                    .received
                    .iter()
                    .filter(|m| m.to == number)
                    .nth(taken)
                    .cloned();
                if let Some(record) = found {
                    shared.taken.insert(number.to_string(), taken + 1);
                    return record;
                }
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "no SMS to {number} within {} s (received: {:?})",
                    WAIT.as_secs(),
                    self.messages()
                        .iter()
                        .map(|m| m.to.clone())
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    /// The code in the next message to `number` (see [`extract_code`]).
    pub async fn next_code_to(&self, number: &str) -> String {
        let text = self.next_message_to(number).await;
        extract_code(&text).unwrap_or_else(|| panic!("no 6 to 8 digit code in SMS `{text}`"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.inner.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for SmsGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The first run of 6 to 8 digits in `text` that is not part of a longer run (so a
/// phone number in the text is not taken for a code).
pub fn extract_code(text: &str) -> Option<String> {
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            if (6..=8).contains(&run.len()) {
                return Some(run);
            }
            run.clear();
        }
    }
    None
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = serde_json::json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, axum::Json(body)).into_response()
}

fn refuse(inner: &Inner, status: StatusCode, code: u32, message: &str) -> Response {
    inner
        .shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .refused += 1;
    twilio_error(status, code, message)
}

/// The configured failure, if any.
fn told_to_fail(inner: &Inner) -> Option<Response> {
    let status = inner
        .shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .fail_status?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Some(refuse(
        inner,
        status,
        20500,
        "An internal server error has occurred",
    ))
}

fn record(inner: &Inner, message: SmsRecord) {
    inner
        .shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .received
        .push(message);
    inner.arrived.notify_waiters();
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn webhook(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    if headers
        .get(WEBHOOK_AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        != Some(WEBHOOK_AUTH_VALUE)
    {
        return refuse(&inner, StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    if let Some(failure) = told_to_fail(&inner) {
        return failure;
    }
    let raw_body = String::from_utf8_lossy(&body).into_owned();
    let parsed: Option<(String, String, Option<String>)> =
        serde_json::from_str::<serde_json::Value>(&raw_body)
            .ok()
            .and_then(|v| {
                Some((
                    v.get("to")?.as_str()?.to_string(),
                    v.get("text")?.as_str()?.to_string(),
                    v.get("from").and_then(|f| f.as_str()).map(str::to_string),
                ))
            });
    let Some((to, text, from)) = parsed else {
        return refuse(
            &inner,
            StatusCode::BAD_REQUEST,
            21602,
            "expected a JSON object with string fields to and text",
        );
    };
    record(
        &inner,
        SmsRecord {
            api: SmsApi::Webhook,
            to,
            text,
            from,
            raw_body,
            content_type: content_type(&headers),
        },
    );
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"queued": true})),
    )
        .into_response()
}

async fn twilio_message(
    State(inner): State<Arc<Inner>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{TWILIO_ACCOUNT_SID}:{TWILIO_AUTH_TOKEN}"))
    );
    let authorized = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str());
    if !authorized || sid != TWILIO_ACCOUNT_SID {
        return refuse(&inner, StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    if let Some(failure) = told_to_fail(&inner) {
        return failure;
    }
    let raw_body = String::from_utf8_lossy(&body).into_owned();
    let fields: HashMap<String, String> = url::form_urlencoded::parse(raw_body.as_bytes())
        .into_owned()
        .collect();
    let from = fields
        .get("From")
        .or_else(|| fields.get("MessagingServiceSid"))
        .cloned();
    let (Some(to), Some(text), Some(_)) = (fields.get("To"), fields.get("Body"), &from) else {
        return refuse(
            &inner,
            StatusCode::BAD_REQUEST,
            21604,
            "A 'To', a 'Body' and a 'From' or 'MessagingServiceSid' are required",
        );
    };
    let message = SmsRecord {
        api: SmsApi::Twilio,
        to: to.clone(),
        text: text.clone(),
        from,
        raw_body,
        content_type: content_type(&headers),
    };
    let reply = serde_json::json!({
        "sid": "SM00000000000000000000000000000001",
        "status": "queued",
        "to": message.to,
    });
    record(&inner, message);
    (StatusCode::CREATED, axum::Json(reply)).into_response()
}

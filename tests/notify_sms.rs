//! The SMS sender against a stand-in gateway: both kinds, their credentials, and how a
//! refusal is reported (status and the gateway's explanation, never the code).

mod harness;

use std::time::Duration;

use harness::sms::{
    SmsApi, SmsGateway, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, WEBHOOK_AUTH_HEADER,
    WEBHOOK_AUTH_VALUE, extract_code,
};
use lockbridge::notify::sms::{
    DEFAULT_CONTENT_TYPE, DEFAULT_WEBHOOK_BODY, SmsGateway as Gateway, TwilioSender,
    TwilioSettings, WebhookSettings,
};
use lockbridge::notify::{SmsError, SmsMessage, SmsSender, SmsSettings};
use lockbridge::types::Secret;

const NUMBER: &str = "+33612345678";

fn settings(gateway: Gateway) -> SmsSettings {
    SmsSettings {
        gateway,
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
    }
}

fn webhook(gateway: &SmsGateway, key: &str) -> SmsSender {
    SmsSender::new(&settings(Gateway::Webhook(WebhookSettings {
        url: gateway.webhook_url(),
        auth_header: Some((WEBHOOK_AUTH_HEADER.into(), Secret::new(key))),
        body_template: DEFAULT_WEBHOOK_BODY.into(),
        content_type: DEFAULT_CONTENT_TYPE.into(),
    })))
    .expect("webhook sender")
}

fn twilio(gateway: &SmsGateway, token: &str, sender: TwilioSender) -> SmsSender {
    SmsSender::new(&settings(Gateway::Twilio(TwilioSettings {
        base_url: gateway.base_url(),
        account_sid: TWILIO_ACCOUNT_SID.into(),
        auth_token: Secret::new(token),
        sender,
    })))
    .expect("twilio sender")
}

fn message(code: &str) -> SmsMessage {
    SmsMessage {
        to: NUMBER.into(),
        text: Secret::new(format!(
            "Your Example code is {code}. It expires in 10 minutes."
        )),
        code: Some(Secret::new(code)),
    }
}

#[tokio::test]
async fn webhook_delivers_json_with_its_key() {
    let gateway = SmsGateway::start().await;
    let sender = webhook(&gateway, WEBHOOK_AUTH_VALUE);
    assert!(
        sender
            .describe()
            .starts_with("webhook to http://127.0.0.1:")
    );
    sender.send(&message("4821937")).await.expect("sent");
    let record = gateway.next_record_to(NUMBER).await;
    assert_eq!(record.api, SmsApi::Webhook);
    assert_eq!(extract_code(&record.text).as_deref(), Some("4821937"));
    assert_eq!(record.content_type.as_deref(), Some("application/json"));

    // A quote in the text stays inside its JSON string.
    let tricky = SmsMessage {
        to: NUMBER.into(),
        text: Secret::new("Code 111222 \"}, \"to\": \"+10000000000"),
        code: None,
    };
    sender.send(&tricky).await.expect("sent");
    assert_eq!(gateway.next_code_to(NUMBER).await, "111222");
    assert_eq!(gateway.messages().len(), 2);
}

#[tokio::test]
async fn webhook_with_a_wrong_key_is_refused_without_the_code() {
    let gateway = SmsGateway::start().await;
    let err = webhook(&gateway, "wrong")
        .send(&message("123987"))
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(
        matches!(err, SmsError::Rejected { status: 401, .. }),
        "{err:?}"
    );
    assert!(text.contains("Authenticate"), "{text}");
    assert!(!text.contains("123987") && !text.contains(NUMBER), "{text}");
    assert!(!err.is_transient());
    assert_eq!(gateway.refused(), 1);
    assert!(gateway.messages().is_empty());
}

#[tokio::test]
async fn twilio_form_post_with_basic_auth() {
    let gateway = SmsGateway::start().await;
    let sender = twilio(
        &gateway,
        TWILIO_AUTH_TOKEN,
        TwilioSender::From("+15550100200".into()),
    );
    sender.send(&message("90817263")).await.expect("sent");
    let record = gateway.next_record_to(NUMBER).await;
    assert_eq!(record.api, SmsApi::Twilio);
    assert_eq!(record.from.as_deref(), Some("+15550100200"));
    assert_eq!(extract_code(&record.text).as_deref(), Some("90817263"));
    assert_eq!(
        record.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );

    let service = twilio(
        &gateway,
        TWILIO_AUTH_TOKEN,
        TwilioSender::MessagingService("MG0001".into()),
    );
    service.send(&message("555111")).await.expect("sent");
    assert_eq!(
        gateway.next_record_to(NUMBER).await.from.as_deref(),
        Some("MG0001")
    );

    let err = twilio(
        &gateway,
        "bad-token",
        TwilioSender::From("+15550100200".into()),
    )
    .send(&message("555222"))
    .await
    .expect_err("refused");
    assert!(
        matches!(err, SmsError::Rejected { status: 401, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn gateway_failures_are_typed_and_transient() {
    let gateway = SmsGateway::start().await;
    gateway.fail_with(Some(500));
    let sender = twilio(
        &gateway,
        TWILIO_AUTH_TOKEN,
        TwilioSender::From("+15550100200".into()),
    );
    let err = sender
        .send(&message("246810"))
        .await
        .expect_err("gateway failing");
    match &err {
        SmsError::Rejected { status, detail } => {
            assert_eq!(*status, 500);
            assert!(detail.contains("internal server error"), "{detail}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(err.is_transient());
    assert!(!err.to_string().contains("246810"));

    gateway.fail_with(None);
    sender.send(&message("246811")).await.expect("sent again");
    assert_eq!(gateway.next_code_to(NUMBER).await, "246811");

    // Nobody listening: unreachable, transient.
    let base = gateway.base_url();
    drop(gateway);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let closed = SmsSender::new(&settings(Gateway::Twilio(TwilioSettings {
        base_url: base,
        account_sid: TWILIO_ACCOUNT_SID.into(),
        auth_token: Secret::new(TWILIO_AUTH_TOKEN),
        sender: TwilioSender::From("+15550100200".into()),
    })))
    .expect("sender");
    let err = closed
        .send(&message("1357911"))
        .await
        .expect_err("no gateway");
    assert!(matches!(err, SmsError::Unreachable(_)), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn disabled_and_bad_numbers_send_nothing() {
    let none = SmsSender::new(&settings(Gateway::None)).expect("none");
    assert!(!none.is_enabled());
    assert!(matches!(
        none.send(&message("123456")).await,
        Err(SmsError::Disabled)
    ));
    let gateway = SmsGateway::start().await;
    let sender = webhook(&gateway, WEBHOOK_AUTH_VALUE);
    let national = SmsMessage {
        to: "0612345678".into(),
        ..message("123456")
    };
    let err = sender.send(&national).await.expect_err("refused");
    assert!(matches!(err, SmsError::InvalidNumber(_)), "{err:?}");
    assert!(gateway.messages().is_empty());
}

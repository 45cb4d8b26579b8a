//! The browser harness on a page of its own: fields found by their labels, a form
//! submitted and read back, cookies kept apart between two contexts, screenshots at
//! desktop and phone sizes.

mod harness;

use std::time::Instant;

use axum::Router;
use axum::extract::Form;
use axum::http::header::SET_COOKIE;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use harness::browser::{Browser, DESKTOP, MOBILE, png_size};

#[derive(serde::Deserialize)]
struct Submitted {
    nickname: String,
}

const FORM: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Echo form</title></head>
<body><main>
<h1>Tell us your name</h1>
<form method="post" action="/">
  <label for="nick">Your nickname</label>
  <input id="nick" name="nickname" autocomplete="off">
  <label>Favourite "quote" it's <input name="quote"></label>
  <button type="submit">Send it</button>
</form>
</main></body></html>"#;

async fn form_page() -> impl IntoResponse {
    Html(FORM)
}

async fn echo(Form(submitted): Form<Submitted>) -> impl IntoResponse {
    let name = submitted
        .nickname
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    (
        [(SET_COOKIE, format!("seen={}; Path=/; HttpOnly", name.len()))],
        Html(format!(
            "<!doctype html><title>Echoed</title><p id=\"echo\">You are {name}</p>"
        )),
    )
}

async fn serve() -> String {
    let app = Router::new().route("/", get(form_page).post(echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_submits_keeps_contexts_apart_and_takes_screenshots() {
    let site = serve().await;
    let started = Instant::now();
    let browser = Browser::start().await;
    let driver_ready = started.elapsed();
    let first = browser.new_context().await;
    let first_ready = started.elapsed();
    eprintln!(
        "chromedriver ready after {} ms, first Chromium session after {} ms",
        driver_ready.as_millis(),
        first_ready.as_millis()
    );

    first.goto(&site).await;
    assert_eq!(first.title().await, "Echo form");
    first.fill("Your nickname", "Ada <Lovelace>").await;
    first.fill("Favourite \"quote\" it's", "anything").await;
    assert_eq!(first.value("nickname").await, "Ada <Lovelace>");
    assert_eq!(first.value("quote").await, "anything");

    let [desktop, mobile] = first.screenshot("browser-selftest-form").await;
    assert!(desktop.ends_with("browser-selftest-form-desktop.png"));
    assert_eq!(png_size(&desktop), DESKTOP);
    assert_eq!(png_size(&mobile), MOBILE);

    first.click_button("Send it").await;
    assert_eq!(first.title().await, "Echoed");
    assert!(first.text().await.contains("You are Ada <Lovelace>"));
    let cookies = first.cookies().await;
    assert!(
        cookies
            .iter()
            .any(|c| c.name() == "seen" && c.value() == "20"),
        "{cookies:?}"
    );

    let second_started = Instant::now();
    let second = browser.new_context().await;
    eprintln!(
        "second Chromium session after {} ms",
        second_started.elapsed().as_millis()
    );
    second.goto(&site).await;
    assert!(
        second.cookies().await.is_empty(),
        "a new context starts without the first one's cookies"
    );
    second.fill("nickname", "Grace").await;
    second.click_button("Send it").await;
    let second_cookies = second.cookies().await;
    assert!(
        second_cookies
            .iter()
            .any(|c| c.name() == "seen" && c.value() == "5")
    );
    assert!(
        first
            .cookies()
            .await
            .iter()
            .any(|c| c.name() == "seen" && c.value() == "20"),
        "the first context keeps its own cookie"
    );

    second.close().await;
    first.close().await;
}

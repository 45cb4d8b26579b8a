//! Headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`).
//!
//! [`Browser::start`] runs one `chromedriver` on a free port of 127.0.0.1;
//! [`Browser::new_context`] opens a WebDriver session, which is a Chromium process of its
//! own with a fresh profile: pages from two contexts share no cookies or storage, like
//! two people's browsers. [`Page`] has the few verbs the web page tests need, finding
//! fields by their `<label>` text first, since every input of lockbridge's pages is
//! labelled.
//!
//! Chromium runs with the flags this machine needs (`--no-sandbox` as root in a
//! container, no background networking: the closed network refuses those connections
//! by the dozen and slows every start). When the last `Browser` or `Page` is dropped,
//! chromedriver and every Chromium started under its profiles folder are killed, so an
//! aborted test leaves no process behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

pub use fantoccini::cookies::Cookie;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Screenshot sizes, CSS pixels at a device scale factor of 1.
pub const DESKTOP: (u32, u32) = (1280, 800);
pub const MOBILE: (u32, u32) = (390, 844);

/// How long [`Page::click_button`] waits for the next page.
pub const NAVIGATION_WAIT: Duration = Duration::from_secs(15);
/// A property set on a page's `window` to tell when another document replaced it.
const DOCUMENT_MARK: &str = "__harnessPreviousDocument";

const INSTALL_HINT: &str = "browser tests need Debian's chromium and chromium-driver \
     (/usr/bin/chromium, /usr/bin/chromedriver): run `scripts/lib/ensure-packages --browser` \
     or `apt-get install chromium chromium-driver`";

/// chromedriver, running until the last handle on it is dropped.
struct Driver {
    process: Child,
    port: u16,
    /// Chromium profiles (`profiles/N`) and chromedriver's log.
    dir: tempfile::TempDir,
    contexts: AtomicUsize,
}

/// A running chromedriver; open pages with [`Browser::new_context`].
#[derive(Clone)]
pub struct Browser {
    driver: Arc<Driver>,
}

/// One browser session (its own Chromium, its own cookies) on one page.
pub struct Page {
    client: Client,
    _driver: Arc<Driver>,
}

impl Browser {
    /// Starts chromedriver on a free port; panics saying what to install when Chromium
    /// or chromedriver is missing.
    pub async fn start() -> Browser {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(binary).is_file(),
                "{binary} not found: {INSTALL_HINT}"
            );
        }
        let dir = super::temp_dir("lockbridge-browser-");
        std::fs::create_dir_all(dir.path().join("profiles")).expect("create the profiles folder");
        // The port is chosen by the kernel, then released for chromedriver to take: another
        // process may take it first, so a driver that exits at once is started again.
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("find a free port")
                .port();
            let log = dir.path().join("chromedriver.log");
            let mut command = Command::new(CHROMEDRIVER);
            command
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            #[cfg(unix)]
            {
                use std::os::unix::process::CommandExt;
                // Its own process group, so the whole tree can be killed at once.
                command.process_group(0);
            }
            let process = command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {CHROMEDRIVER}: {e}; {INSTALL_HINT}"));
            let mut process = process;
            if wait_ready(&mut process, port, Duration::from_secs(20)).await {
                return Browser {
                    driver: Arc::new(Driver {
                        process,
                        port,
                        dir,
                        contexts: AtomicUsize::new(0),
                    }),
                };
            }
            kill_group(&mut process);
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!(
            "chromedriver did not start (its log ends with: {})",
            tail(&last_log)
        );
    }

    /// `http://127.0.0.1:PORT/`, chromedriver's address.
    pub fn webdriver_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.driver.port)
    }

    /// A new, independent browser: its own Chromium with an empty profile (no cookies,
    /// no storage), its window at [`DESKTOP`] size.
    pub async fn new_context(&self) -> Page {
        let n = self.driver.contexts.fetch_add(1, Ordering::SeqCst);
        let profile = self.driver.dir.path().join("profiles").join(n.to_string());
        std::fs::create_dir_all(&profile).expect("create a Chromium profile folder");
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-features=Translate,MediaRouter,OptimizationHints".into(),
            "--password-store=basic".into(),
            format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.webdriver_url())
            .await
            .unwrap_or_else(|e| {
                let log = std::fs::read_to_string(self.driver.dir.path().join("chromedriver.log"))
                    .unwrap_or_default();
                panic!(
                    "Chromium did not start: {e} (chromedriver's log ends with: {})",
                    tail(&log)
                )
            });
        Page {
            client,
            _driver: self.driver.clone(),
        }
    }
}

/// Whether chromedriver answers "ready" on `port` within `limit` (false when it exits,
/// e.g. because another process took the port).
async fn wait_ready(process: &mut Child, port: u16, limit: Duration) -> bool {
    let started = Instant::now();
    let status = format!("http://127.0.0.1:{port}/status");
    let http = reqwest::Client::new();
    while started.elapsed() < limit {
        if let Ok(Some(_)) = process.try_wait() {
            return false;
        }
        if let Ok(reply) = http.get(&status).send().await
            && let Ok(body) = reply.json::<Value>().await
            && body["value"]["ready"] == json!(true)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Kills `process` and its process group (it was started as the group's leader).
fn kill_group(process: &mut Child) {
    let group = format!("-{}", process.id());
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stderr(Stdio::null())
        .status();
    let _ = process.kill();
    let _ = process.wait();
}

impl Drop for Driver {
    fn drop(&mut self) {
        kill_group(&mut self.process);
        // A Chromium that left the group still names its profile, inside this folder.
        kill_processes_mentioning(self.dir.path());
    }
}

/// Kills every process whose command line mentions `path` (Linux /proc).
fn kill_processes_mentioning(path: &Path) {
    let needle = path.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

/// `text` as an XPath string literal (XPath 1.0 has no escapes: quotes are joined with
/// `concat`).
fn xpath_literal(text: &str) -> String {
    if !text.contains('\'') {
        format!("'{text}'")
    } else if !text.contains('"') {
        format!("\"{text}\"")
    } else {
        let parts: Vec<String> = text.split('\'').map(|p| format!("'{p}'")).collect();
        format!("concat({})", parts.join(", \"'\", "))
    }
}

impl Page {
    /// The WebDriver client, for what the verbs below do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The address of the current page.
    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("current URL")
            .to_string()
    }

    /// Replaces the value of the field labelled `label_or_name` (its `<label>` text,
    /// exact then contained, then `aria-label`, then its `name`) with `value`.
    pub async fn fill(&self, label_or_name: &str, value: &str) {
        let field = self.field(label_or_name).await;
        field
            .clear()
            .await
            .unwrap_or_else(|e| panic!("cannot clear the field `{label_or_name}`: {e}"));
        field
            .send_keys(value)
            .await
            .unwrap_or_else(|e| panic!("cannot type into the field `{label_or_name}`: {e}"));
    }

    /// The current value of the field found as [`Page::fill`] finds it.
    pub async fn value(&self, label_or_name: &str) -> String {
        self.field(label_or_name)
            .await
            .prop("value")
            .await
            .expect("field value")
            .unwrap_or_default()
    }

    async fn field(&self, label_or_name: &str) -> fantoccini::elements::Element {
        let lit = xpath_literal(label_or_name);
        for label_query in [
            format!("//label[normalize-space(string(.))={lit}]"),
            format!("//label[contains(normalize-space(string(.)), {lit})]"),
        ] {
            let labels = self
                .client
                .find_all(Locator::XPath(&label_query))
                .await
                .unwrap_or_default();
            let Some(label) = labels.into_iter().next() else {
                continue;
            };
            if let Ok(Some(id)) = label.attr("for").await
                && let Ok(field) = self.client.find(Locator::Id(&id)).await
            {
                return field;
            }
            if let Ok(field) = label
                .find(Locator::XPath(".//input | .//textarea | .//select"))
                .await
            {
                return field;
            }
        }
        let by_attribute = format!(
            "//*[self::input or self::textarea or self::select][@aria-label={lit} or @name={lit}]"
        );
        self.client
            .find(Locator::XPath(&by_attribute))
            .await
            .unwrap_or_else(|_| panic!("no field labelled or named `{label_or_name}` on this page"))
    }

    /// Clicks the button whose text (or `value`, for an input) is `text`, and waits for
    /// the page it leads to (a form post): panics when no new page has loaded within
    /// [`NAVIGATION_WAIT`]. For a button that stays on the page, use
    /// [`Page::click_button_in_place`].
    pub async fn click_button(&self, text: &str) {
        // A mark on the current document: it is gone once another document replaced it.
        // chromedriver waits after a click only for navigations it noticed in time.
        self.client
            .execute(
                &format!("window.{DOCUMENT_MARK} = true; return null;"),
                vec![],
            )
            .await
            .expect("mark the current page");
        self.click_button_in_place(text).await;
        let deadline = Instant::now() + NAVIGATION_WAIT;
        let probe =
            format!("return window.{DOCUMENT_MARK} === true ? 'same page' : document.readyState;");
        loop {
            match self.client.execute(&probe, vec![]).await {
                Ok(Value::String(state)) if state == "complete" => return,
                // Errors while the next page replaces this one are expected.
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(25)).await
                }
                other => panic!(
                    "the button `{text}` did not lead to a new page within {} s ({other:?})",
                    NAVIGATION_WAIT.as_secs()
                ),
            }
        }
    }

    /// Clicks the button whose text (or `value`, for an input) is `text`, without
    /// waiting for anything.
    pub async fn click_button_in_place(&self, text: &str) {
        let lit = xpath_literal(text);
        let query = format!(
            "//button[normalize-space(string(.))={lit}] \
             | //input[(@type='submit' or @type='button') and @value={lit}] \
             | //*[@role='button' and normalize-space(string(.))={lit}]"
        );
        let button = self
            .client
            .find(Locator::XPath(&query))
            .await
            .unwrap_or_else(|_| panic!("no button `{text}` on this page"));
        button
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click the button `{text}`: {e}"));
    }

    /// The visible text of the page.
    pub async fn text(&self) -> String {
        self.client
            .find(Locator::Css("body"))
            .await
            .expect("the page's body")
            .text()
            .await
            .expect("the page's text")
    }

    /// The HTML of the page as the browser has it now.
    pub async fn html(&self) -> String {
        self.client.source().await.expect("the page's source")
    }

    pub async fn title(&self) -> String {
        self.client.title().await.expect("the page's title")
    }

    /// The cookies this browser holds for the current page's site.
    pub async fn cookies(&self) -> Vec<Cookie<'static>> {
        self.client
            .get_all_cookies()
            .await
            .expect("the page's cookies")
    }

    /// Saves the whole page as `target/screenshots/{name}-desktop.png` (1280 wide) and
    /// `{name}-mobile.png` (390 wide, as a phone); each is at least the viewport's height
    /// (800 and 844), taller when the page is. Returns both paths.
    pub async fn screenshot(&self, name: &str) -> [PathBuf; 2] {
        let folder = screenshot_folder();
        std::fs::create_dir_all(&folder).expect("create target/screenshots");
        let mut saved = Vec::new();
        for (suffix, (width, height), mobile) in
            [("desktop", DESKTOP, false), ("mobile", MOBILE, true)]
        {
            self.cdp(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
            )
            .await;
            let content_height = self
                .client
                .execute(
                    "return Math.ceil(Math.max(document.documentElement.scrollHeight, \
                     document.body ? document.body.scrollHeight : 0));",
                    vec![],
                )
                .await
                .ok()
                .and_then(|v| v.as_u64())
                .unwrap_or(0) as u32;
            let shot = self
                .cdp(
                    "Page.captureScreenshot",
                    json!({
                        "format": "png",
                        "captureBeyondViewport": true,
                        "clip": {"x": 0, "y": 0, "width": width,
                                 "height": height.max(content_height), "scale": 1},
                    }),
                )
                .await;
            let data = shot["data"]
                .as_str()
                .unwrap_or_else(|| panic!("no image in Chromium's screenshot reply: {shot}"));
            let png = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data)
                .expect("screenshot is base64");
            let path = folder.join(format!("{name}-{suffix}.png"));
            std::fs::write(&path, png)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            saved.push(path);
        }
        self.cdp("Emulation.clearDeviceMetricsOverride", json!({}))
            .await;
        [saved.remove(0), saved.remove(0)]
    }

    /// Runs a Chrome DevTools Protocol command through chromedriver.
    pub async fn cdp(&self, command: &'static str, params: Value) -> Value {
        let reply = self
            .client
            .issue_cmd(CdpCommand { command, params })
            .await
            .unwrap_or_else(|e| panic!("DevTools command {command} failed: {e}"));
        match reply {
            Value::Object(mut map) if map.len() == 1 && map.contains_key("value") => {
                map.remove("value").unwrap_or_default()
            }
            other => other,
        }
    }

    /// Ends the session and its Chromium now (dropping the page does it too, later).
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// `target/screenshots`, under `CARGO_TARGET_DIR` when it is set.
pub fn screenshot_folder() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::repo_root().join("target"))
        .join("screenshots")
}

/// chromedriver's own endpoint for DevTools commands.
#[derive(Debug)]
struct CdpCommand {
    command: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for CdpCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({"cmd": self.command, "params": self.params});
        (http::Method::POST, Some(body.to_string()))
    }
}

/// Width and height of a PNG file, from its IHDR header.
pub fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR",
        "{} is not a PNG file",
        path.display()
    );
    let be =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    (be(16), be(20))
}

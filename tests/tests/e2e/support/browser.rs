//! A headless Chromium driven through chromedriver's WebDriver HTTP API (W3C), with reqwest:
//! just what the admin console's test needs (open a page, fill and submit forms, read text,
//! read a cookie, save a screenshot). Debian's `chromium` and `chromium-driver` packages,
//! installed by `tests/install.sh` (`make test` runs it); without them the test fails
//! rather than skips.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::support::processes::{free_port, Process};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The fixed window every screenshot is taken at.
const WINDOW: &str = "--window-size=1280,1000";

/// One browser session; chromedriver and Chromium are killed when this is dropped (call
/// [`Browser::quit`] first to end the browser cleanly).
pub struct Browser {
    http: reqwest::Client,
    session: String,
    profile: PathBuf,
    _driver: Process,
}

/// Where the screenshots of the admin console go (`.data` is git-ignored).
pub fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.data/artifacts/admin");
    std::fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir
}

impl Browser {
    pub async fn start() -> Self {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: run tests/install.sh (make test does)"
            );
        }
        let port = free_port();
        let mut command = Command::new(CHROMEDRIVER);
        command.arg(format!("--port={port}"));
        let driver = Process::spawn(command, "chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .ok()
                    .map(|v| v["value"]["ready"] == true),
                Err(_) => None,
            };
            if ready == Some(true) {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = std::env::temp_dir().join(format!("admin-browser-{}", uuid::Uuid::new_v4()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                // No sandbox: the tests run as root, where Chromium's sandbox refuses to start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", WINDOW,
                    format!("--user-data-dir={}", profile.display())],
            }
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("create a WebDriver session")
            .json()
            .await
            .expect("a session answer");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        Self {
            http,
            session: format!("{base}/session/{session}"),
            profile,
            _driver: driver,
        }
    }

    /// The whole WebDriver answer to a session command, errors included.
    async fn answer(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request
            .send()
            .await
            .expect("a WebDriver request")
            .json()
            .await
            .expect("a WebDriver answer")
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let answer = self.answer(method, path, body).await;
        if answer["value"]["error"].is_string() {
            panic!("WebDriver {path}: {answer}");
        }
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn url(&self) -> String {
        let url = self.call(reqwest::Method::GET, "/url", None).await;
        url.as_str().unwrap_or_default().to_owned()
    }

    /// The element `css` selects (the first), waiting up to 10 s for it to appear.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.elements(css).await;
            if let Some(element) = found.first().and_then(|e| e[ELEMENT].as_str()) {
                return element.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no element {css} on {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many elements `css` selects.
    pub async fn count(&self, css: &str) -> usize {
        self.elements(css).await.len()
    }

    /// The elements `css` selects now.
    async fn elements(&self, css: &str) -> Vec<Value> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found.as_array().cloned().unwrap_or_default()
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        let path = format!("/element/{element}/value");
        self.call(reqwest::Method::POST, &path, Some(json!({"text": text})))
            .await;
    }

    /// Clicks `css` (a form's button, a link) and waits, up to 15 s, until the page it leads to
    /// has replaced this one: WebDriver's click returns without waiting for a form's answer,
    /// and reading the page meanwhile would see the old one (or lose an element under it).
    pub async fn submit(&self, css: &str) {
        let page = self.find("html").await;
        self.click(css).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        let path = format!("/element/{page}/name");
        loop {
            let answer = self.answer(reqwest::Method::GET, &path, None).await;
            if answer["value"]["error"] == "stale element reference" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "clicking {css} led nowhere within 15 s (still at {})",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        let path = format!("/element/{element}/click");
        self.call(reqwest::Method::POST, &path, Some(json!({})))
            .await;
    }

    /// The rendered text of the element `css` selects.
    pub async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        let path = format!("/element/{element}/text");
        let text = self.call(reqwest::Method::GET, &path, None).await;
        text.as_str().unwrap_or_default().to_owned()
    }

    /// A DOM property (`value` of an input, say) of the element `css` selects.
    pub async fn property(&self, css: &str, name: &str) -> String {
        let element = self.find(css).await;
        let path = format!("/element/{element}/property/{name}");
        let value = self.call(reqwest::Method::GET, &path, None).await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// The cookie `name` of the current page, as WebDriver sees it (`HttpOnly` ones too).
    pub async fn cookie(&self, name: &str) -> Value {
        self.call(reqwest::Method::GET, &format!("/cookie/{name}"), None)
            .await
    }

    pub async fn delete_cookies(&self) {
        self.call(reqwest::Method::DELETE, "/cookie", None).await;
    }

    /// Saves a PNG of the window as `<artifacts>/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let shot = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = artifacts().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
    }

    /// Ends the browser session (the driver is killed on drop).
    pub async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
    }

    /// The profile directory only this session's Chromium uses.
    pub fn profile(&self) -> &Path {
        &self.profile
    }
}

impl Drop for Browser {
    /// A test that fails before [`Browser::quit`] must not leave its Chromium running:
    /// chromedriver dies with `_driver`, but the browser it started lives on in a process group
    /// of its own. Its processes are the ones whose command line names this session's profile
    /// directory (a fresh UUID), so nothing else is matched; each is killed by its pid.
    fn drop(&mut self) {
        let profile = self.profile.display().to_string();
        for pid in crate::support::processes::pids_naming(&profile) {
            if !crate::support::processes::kill_if_naming(pid, &profile) {
                eprintln!("Chromium process {pid} of {profile} could not be killed");
            }
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

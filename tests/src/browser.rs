//! Headless Chromium for real-browser tests, driven over WebDriver.
//!
//! The WebDriver client is thirtyfour (on reqwest, plain HTTP to a loopback
//! chromedriver). `Browser` keeps the small API the tests were written
//! against: typed calls where thirtyfour has them, and `cmd` for the rest of
//! WebDriver (frames, windows, async scripts) and ChromeDriver's CDP
//! passthrough.
//!
//! Everything is async, so a server running in the same tokio runtime keeps
//! serving while the browser waits for it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use thirtyfour::common::command::FormatRequestData;
use thirtyfour::{RequestData, SessionId, WebDriver, WebElement};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C key under which a web element reference travels.
pub const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The WebDriver key code for Enter.
pub const ENTER: &str = "\u{E007}";

/// The flags every test browser gets: headless, and nothing that reaches for
/// the internet (these machines have none), so a run is the same offline.
pub const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--window-size=1280,860",
];

/// One chromedriver process with one browser session and a fresh profile.
#[derive(Debug)]
pub struct Browser {
    driver: Option<Child>,
    /// The session; `None` once quit.
    web: Option<WebDriver>,
    profile: tempfile::TempDir,
}

/// Any WebDriver command on the session: `path` is what follows
/// `/session/{id}`.
#[derive(Debug)]
struct Raw {
    method: reqwest::Method,
    path: String,
    body: Option<Value>,
}

impl FormatRequestData for Raw {
    fn format_request(&self, session_id: &SessionId) -> RequestData {
        let req = RequestData::new(
            self.method.clone(),
            format!("session/{session_id}{}", self.path),
        );
        match &self.body {
            Some(b) => req.add_body(b.clone()),
            None => req,
        }
    }
}

/// The client thirtyfour talks to chromedriver with: loopback, so never
/// through a proxy from the environment.
fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(90))
        .build()?)
}

/// Whether a JSON value is what JavaScript would call truthy.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

impl Browser {
    /// Start chromedriver and a headless Chromium with a fresh profile.
    pub async fn start() -> anyhow::Result<Self> {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            anyhow::ensure!(
                Path::new(bin).exists(),
                "{bin} is missing: install Debian's chromium and chromium-driver \
                 (scripts/test-all does)"
            );
        }
        let profile = tempfile::tempdir()?;
        let port = crate::server::free_port();
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Ok(log) = std::env::var("HOLDFAST_CHROMEDRIVER_LOG") {
            cmd.arg(format!("--log-path={log}")).arg("--verbose");
        }
        let driver = cmd.spawn().context("starting chromedriver")?;
        let mut b = Self {
            driver: Some(driver),
            web: None,
            profile,
        };
        let url = format!("http://127.0.0.1:{port}");
        let client = http_client()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let status = client.get(format!("{url}/status")).send().await;
            if let Ok(r) = status
                && r.status() == 200
                && let Ok(body) = r.bytes().await
                && serde_json::from_slice::<Value>(&body)
                    .is_ok_and(|v| v["value"]["ready"] == json!(true))
            {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut args: Vec<String> = FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", b.profile.path().display()));
        let caps = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let Value::Object(caps) = caps else {
            unreachable!("capabilities are an object")
        };
        let web = WebDriver::builder(url, caps)
            .client(client)
            .request_timeout(Duration::from_secs(90))
            .connect()
            .await
            .context("cannot start a browser session")?;
        b.web = Some(web);
        Ok(b)
    }

    fn web(&self) -> anyhow::Result<&WebDriver> {
        self.web.as_ref().context("the browser session has ended")
    }

    /// One WebDriver command on this session (`path` after
    /// `/session/{id}`); returns its `value`.
    pub async fn cmd(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let body = match (method, body) {
            ("POST", None) => Some(json!({})),
            (_, b) => b,
        };
        let raw = Raw {
            method: method.parse()?,
            path: path.to_string(),
            body,
        };
        let r = self
            .web()?
            .cmd(raw)
            .await
            .with_context(|| format!("WebDriver {method} {path} failed"))?;
        Ok(r.value_json()?)
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        Ok(self.web()?.goto(url).await?)
    }

    pub async fn refresh(&self) -> anyhow::Result<()> {
        Ok(self.web()?.refresh().await?)
    }

    /// Run a function body in the page (`return …` to get a value); `args`
    /// is a JSON array of its `arguments`.
    pub async fn js(&self, script: &str, args: Value) -> anyhow::Result<Value> {
        let args = match args {
            Value::Array(a) => a,
            Value::Null => Vec::new(),
            one => vec![one],
        };
        let r = self.web()?.execute(script, args).await?;
        Ok(r.json().clone())
    }

    /// A Chrome DevTools Protocol command through ChromeDriver.
    pub async fn cdp(&self, cmd: &str, params: Value) -> anyhow::Result<Value> {
        Ok(self.web()?.cdp().send_raw(cmd, params).await?)
    }

    /// Emulate airplane mode (or end it).
    pub async fn set_offline(&self, offline: bool) -> anyhow::Result<()> {
        self.cdp("Network.enable", json!({})).await?;
        self.cdp(
            "Network.emulateNetworkConditions",
            json!({
                "offline": offline,
                "latency": 0,
                "downloadThroughput": -1,
                "uploadThroughput": -1,
            }),
        )
        .await
        .map(drop)
    }

    /// Run `source` in every new document before its own scripts.
    pub async fn on_new_document(&self, source: &str) -> anyhow::Result<String> {
        let v = self
            .cdp(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": source }),
            )
            .await?;
        Ok(v["identifier"].as_str().unwrap_or_default().to_string())
    }

    /// The PNG of the current viewport.
    pub async fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        Ok(self.web()?.screenshot_as_png().await?)
    }

    /// An element returned by `script` (which may reach into a shadow root):
    /// its WebDriver id.
    pub async fn element(&self, script: &str) -> anyhow::Result<String> {
        let v = self.js(script, json!([])).await?;
        v[ELEMENT]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("no element from {script}: {v}"))
    }

    fn web_element(&self, element: &str) -> anyhow::Result<WebElement> {
        Ok(WebElement::from_json(
            json!({ ELEMENT: element }),
            self.web()?.handle().clone(),
        )?)
    }

    pub async fn click(&self, element: &str) -> anyhow::Result<()> {
        Ok(self.web_element(element)?.click().await?)
    }

    /// Type into an element as a user would (real key events).
    pub async fn type_into(&self, element: &str, text: &str) -> anyhow::Result<()> {
        Ok(self.web_element(element)?.send_keys(text).await?)
    }

    /// The text of an open alert/confirm/prompt, if any.
    pub async fn alert_text(&self) -> Option<String> {
        self.web.as_ref()?.get_alert_text().await.ok()
    }

    /// The browser console since the last call (for failure messages).
    pub async fn console(&self) -> String {
        let log = match self.web() {
            Ok(web) => web.browser_log().await.map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        match log {
            Ok(entries) => entries
                .iter()
                .map(|e| format!("{:?} {:?}", e.level, e.message))
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => format!("(no console log: {e})"),
        }
    }

    /// Poll `expr` (a JavaScript expression) until it is truthy; returns its
    /// value. Script errors count as "not yet" (the page may be loading).
    pub async fn wait(&self, expr: &str, limit: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        let script = format!("return ({expr});");
        let mut last: String;
        loop {
            match self.js(&script, json!([])).await {
                Ok(v) if truthy(&v) => return Ok(v),
                Ok(v) => last = v.to_string(),
                Err(e) => last = e.to_string(),
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "timed out after {limit:?} waiting for `{expr}` (last: {last})\nbrowser console:\n{}",
                    self.console().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// End the session (closing Chromium) and stop chromedriver.
    pub async fn quit(mut self) {
        if let Some(web) = self.web.take() {
            let _ignored = web.quit().await;
        }
        self.stop_driver();
    }

    fn stop_driver(&mut self) {
        if let Some(mut d) = self.driver.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

impl Drop for Browser {
    /// A failed test still closes its browser: dropping the session makes
    /// thirtyfour end it with a blocking DELETE (on a thread of its own, so
    /// it works inside the test's runtime), then chromedriver goes.
    fn drop(&mut self) {
        drop(self.web.take());
        self.stop_driver();
    }
}

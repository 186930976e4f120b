//! Headless Chromium for real-browser tests, driven over WebDriver.
//!
//! A deliberately small client: chromedriver speaks JSON over HTTP/1.1 on
//! loopback, so one request per connection with `Connection: close` is all
//! the HTTP this needs, and the tests get every WebDriver command plus
//! ChromeDriver's CDP passthrough (`POST /session/{id}/goog/cdp/execute`)
//! without pulling a WebDriver crate and its HTTP stack into the build.
//!
//! Everything is async, so a server running in the same tokio runtime keeps
//! serving while the browser waits for it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    port: u16,
    session: String,
    profile: tempfile::TempDir,
}

/// One HTTP/1.1 exchange with chromedriver: (status, JSON body).
/// ChromeDriver keeps connections open whatever the request says, so the
/// body ends where Content-Length (or the last chunk) says, not at EOF.
async fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let exchange = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(done) = complete(&buf)? {
                return anyhow::Ok(done);
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                bail!("chromedriver closed the connection mid-response");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let (status, payload) = tokio::time::timeout(Duration::from_secs(90), exchange)
        .await
        .with_context(|| format!("chromedriver did not answer {method} {path}"))??;
    let v = if payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&payload).with_context(|| {
            format!(
                "bad JSON from chromedriver: {}",
                String::from_utf8_lossy(&payload)
            )
        })?
    };
    Ok((status, v))
}

/// The status and body once `buf` holds a whole response.
fn complete(buf: &[u8]) -> anyhow::Result<Option<(u16, Vec<u8>)>> {
    let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let rest = &buf[split + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("bad HTTP status line")?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        return Ok(dechunk(rest).map(|b| (status, b)));
    }
    let len: usize = header("content-length:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((rest.len() >= len).then(|| (status, rest[..len].to_vec())))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
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
            port,
            session: String::new(),
            profile,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, v)) = http(port, "GET", "/status", None).await
                && v["value"]["ready"] == json!(true)
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
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let (status, v) = http(port, "POST", "/session", Some(&caps)).await?;
        anyhow::ensure!(status == 200, "cannot start a browser session: {v}");
        b.session = v["value"]["sessionId"]
            .as_str()
            .context("no session id")?
            .to_string();
        Ok(b)
    }

    /// One WebDriver command on this session; returns its `value`.
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
        let url = format!("/session/{}{path}", self.session);
        let (status, v) = http(self.port, method, &url, body.as_ref()).await?;
        if status != 200 {
            bail!(
                "WebDriver {method} {path} failed ({status}): {}",
                v["value"]
            );
        }
        Ok(v["value"].clone())
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.cmd("POST", "/url", Some(json!({ "url": url })))
            .await
            .map(drop)
    }

    pub async fn refresh(&self) -> anyhow::Result<()> {
        self.cmd("POST", "/refresh", None).await.map(drop)
    }

    /// Run a function body in the page (`return …` to get a value).
    pub async fn js(&self, script: &str, args: Value) -> anyhow::Result<Value> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// A Chrome DevTools Protocol command through ChromeDriver.
    pub async fn cdp(&self, cmd: &str, params: Value) -> anyhow::Result<Value> {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
        .await
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
        let v = self.cmd("GET", "/screenshot", None).await?;
        let text = v.as_str().context("screenshot is not a string")?;
        Ok(base64::engine::general_purpose::STANDARD.decode(text)?)
    }

    /// An element returned by `script` (which may reach into a shadow root).
    pub async fn element(&self, script: &str) -> anyhow::Result<String> {
        let v = self.js(script, json!([])).await?;
        v[ELEMENT]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("no element from {script}: {v}"))
    }

    pub async fn click(&self, element: &str) -> anyhow::Result<()> {
        self.cmd("POST", &format!("/element/{element}/click"), None)
            .await
            .map(drop)
    }

    /// Type into an element as a user would (real key events).
    pub async fn type_into(&self, element: &str, text: &str) -> anyhow::Result<()> {
        self.cmd(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await
        .map(drop)
    }

    /// The text of an open alert/confirm/prompt, if any.
    pub async fn alert_text(&self) -> Option<String> {
        self.cmd("GET", "/alert/text", None)
            .await
            .ok()
            .map(|v| v.as_str().unwrap_or_default().to_string())
    }

    /// The browser console since the last call (for failure messages).
    pub async fn console(&self) -> String {
        match self
            .cmd("POST", "/se/log", Some(json!({ "type": "browser" })))
            .await
        {
            Ok(Value::Array(entries)) => entries
                .iter()
                .map(|e| format!("{} {}", e["level"], e["message"]))
                .collect::<Vec<_>>()
                .join("\n"),
            Ok(v) => v.to_string(),
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
        let _ignored = self.cmd("DELETE", "", None).await;
        self.session.clear();
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
    /// A failed test still closes its browser: a blocking DELETE (the server
    /// is not needed for that), then chromedriver goes.
    fn drop(&mut self) {
        if !self.session.is_empty() {
            use std::io::{Read as _, Write as _};
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    s,
                    "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.session
                );
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            }
        }
        self.stop_driver();
    }
}

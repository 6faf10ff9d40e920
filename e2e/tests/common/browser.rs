//! A real headless Chromium (Debian's `chromium`, installed by `scripts/install-deps.sh`) driven through the DevTools
//! protocol with chromiumoxide: what the dashboard's tests and benchmark look through.
#![allow(dead_code, unreachable_pub)] // the tests and the benchmark each use some of these

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chromiumoxide::Page;
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::page::ScreenshotParams;
use futures::StreamExt as _;

/// The browser process (killed when dropped) and its throwaway profile.
pub struct Chromium {
    pub browser: Browser,
    handler: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Starts a headless Chromium with a fresh profile. It trusts any certificate: the clusters under test make
    /// their own CA, which a person would install; the token is what the tests are about.
    pub async fn launch() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let config = BrowserConfig::builder()
            .chrome_executable("/usr/bin/chromium")
            .no_sandbox()
            .user_data_dir(profile.path())
            .window_size(1280, 900)
            .arg("--ignore-certificate-errors")
            .arg("--disable-gpu")
            .arg("--disable-dev-shm-usage")
            .launch_timeout(Duration::from_secs(60))
            .build()
            .expect("a browser configuration");
        let (browser, mut handler) =
            Browser::launch(config).await.expect("chromium starts (make deps installs it: apt-get install chromium)");
        let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
        Self { browser, handler, _profile: profile }
    }

    /// A new tab at `url`. The tab opens blank first: the certificate override applies to a tab once it exists.
    pub async fn open(&self, url: &str) -> Page {
        let page = self.browser.new_page("about:blank").await.unwrap_or_else(|e| panic!("a new tab: {e}"));
        page.goto(url).await.unwrap_or_else(|e| panic!("opening {url}: {e}"));
        page
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        self.handler.abort();
    }
}

/// The value of `expression` in the page.
pub async fn eval(page: &Page, expression: &str) -> serde_json::Value {
    try_eval(page, expression).await.unwrap_or_else(|e| panic!("evaluating {expression}: {e}"))
}

/// The value of `expression`, or why it could not be had (the page still loading, say).
pub async fn try_eval(page: &Page, expression: &str) -> Result<serde_json::Value, String> {
    let result = page.evaluate(expression).await.map_err(|e| e.to_string())?;
    Ok(result.into_value::<serde_json::Value>().unwrap_or(serde_json::Value::Null))
}

/// Polls `expression` in the page until it is truthy (not null, false, 0 or ""), and returns it; panics after
/// `within`, saying `what` and showing the page's text.
pub async fn wait_for(page: &Page, what: &str, expression: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        // An expression that fails (what it reads is not drawn yet) is "not yet".
        let value = try_eval(page, expression).await.unwrap_or(serde_json::Value::Null);
        let truthy = match &value {
            serde_json::Value::Null => false,
            serde_json::Value::Bool(b) => *b,
            serde_json::Value::Number(n) => n.as_f64() != Some(0.0),
            serde_json::Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return value;
        }
        if Instant::now() > deadline {
            let text = eval(page, "document.body.innerText").await;
            panic!("{what}: not within {within:?}; the page shows:\n{}", text.as_str().unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where screenshots go: `<target dir>/dashboard-screenshots` (CI keeps them as artifacts).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"), PathBuf::from);
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves the page as `<name>.png` in [`screenshot_dir`].
pub async fn screenshot(page: &Page, name: &str) -> PathBuf {
    let path = screenshot_dir().join(format!("{name}.png"));
    page.save_screenshot(ScreenshotParams::builder().full_page(true).build(), &path)
        .await
        .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
    path
}

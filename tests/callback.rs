//! The public OAuth 2.0 callback under attack and in a real browser: bogus requests cost the
//! apiserver no LIST, a client that never finishes its headers is cut off, the pages carry the
//! protective headers, and headless Chromium (Debian's `chromium`, installed by `.ci/run`)
//! following a Connection's authorization URL ends on the success page, with
//! `OAUTH2_CALLBACK_URL` given as the base URL or as the full callback URL.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::operator::{Operator, OperatorOptions};
use common::{Emulator, TestCluster};

fn seed() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/emulator/seed.yaml"),
    )
    .expect("read the examples' emulator seed")
}

fn examples_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .to_string_lossy()
        .into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Debian's `chromium` (or `$CHROMIUM`).
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        if let Some(path) = found.filter(|p| !p.is_empty()) {
            return PathBuf::from(path);
        }
    }
    panic!("no chromium found: apt-get install chromium (.ci/run does), or set CHROMIUM");
}

/// Opens `url` in headless Chromium and returns the DOM of the page it ends on, and what it
/// logged (console messages, CSP violations).
fn browse(url: &str) -> (String, String) {
    let profile = tempfile::tempdir().expect("a profile dir");
    let output = Command::new("timeout")
        .arg("90")
        .arg(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("running chromium");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

struct World {
    cluster: &'static TestCluster,
    namespace: String,
    emulator: Emulator,
    operator: Operator,
    /// `http://127.0.0.1:PORT`.
    callback: String,
}

impl World {
    /// An operator whose `OAUTH2_CALLBACK_URL` is the base URL, or the full callback URL.
    async fn start(prefix: &str, full_url: bool) -> World {
        let cluster = common::cluster().await;
        let namespace = cluster.namespace(prefix).await;
        let emulator = Emulator::start(&seed());
        let port = free_port();
        let callback = format!("http://127.0.0.1:{port}");
        let public = if full_url {
            format!("{callback}/oauth2/callback")
        } else {
            callback.clone()
        };
        let mut options = OperatorOptions::new(&namespace);
        options.env = vec![
            ("OAUTH2_CALLBACK_URL".into(), public),
            ("OAUTH2_CALLBACK_ADDR".into(), format!("127.0.0.1:{port}")),
        ];
        let operator = Operator::start(cluster, &emulator, &options);
        World {
            cluster,
            namespace,
            emulator,
            operator,
            callback,
        }
    }

    async fn wait_for(&self, what: &str, mut check: impl FnMut() -> Option<String>) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(found) = check() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.operator
                    .logs()
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn jsonpath(&self, kind: &str, name: &str, path: &str) -> Option<String> {
        let output = self.cluster.kubectl(&[
            "-n",
            &self.namespace,
            "get",
            kind,
            name,
            "-o",
            &format!("jsonpath={path}"),
        ]);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.success() && !text.is_empty()).then_some(text)
    }

    /// The Connection's authorization URL, once the operator has one.
    async fn authorization_url(&self) -> String {
        common::assert_success(&self.cluster.kubectl(&[
            "apply",
            "-n",
            &self.namespace,
            "-f",
            &examples_dir(),
        ]));
        common::assert_success(&self.cluster.kubectl_apply_stdin(
            "apiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: { name: shopify-store }\nspec:\n  projectSystemRef: { name: shopify }\n",
            &["-n", &self.namespace],
        ));
        self.wait_for("status.authorizationUrl", || {
            self.jsonpath("connection", "shopify-store", "{.status.authorizationUrl}")
        })
        .await
    }

    /// A person opens the authorization URL in a browser and ends on the success page.
    async fn authorize_in_chromium(&self) {
        let url = self.authorization_url().await;
        let (dom, log) = browse(&url);
        assert!(
            dom.contains("<title>Connection authorized · versori-operator</title>"),
            "the page the person ends on:\n{dom}\nchromium log:\n{log}"
        );
        assert!(
            dom.contains("is authorized and connected in Versori"),
            "{dom}"
        );
        assert!(
            !log.contains("Content Security Policy"),
            "the CSP blocked something on the page:\n{log}"
        );
        self.wait_for("the Connection to be Ready", || {
            self.jsonpath(
                "connection",
                "shopify-store",
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            )
            .filter(|s| s == "True")
        })
        .await;
        let state = self.emulator.state().await;
        let count = state["connections"]
            .as_array()
            .map(|c| c.iter().filter(|c| c["name"] == "shopify-store").count())
            .unwrap_or(0);
        assert_eq!(count, 1, "one Versori connection");
    }
}

/// LISTs of Connections the apiserver has served, from its own metrics.
fn connection_lists(cluster: &TestCluster) -> u64 {
    let metrics = common::assert_success(&cluster.kubectl(&["get", "--raw", "/metrics"]));
    metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| l.contains("resource=\"connections\"") && l.contains("verb=\"LIST\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[tokio::test]
async fn the_public_callback_withstands_abuse_and_a_browser_ends_on_the_success_page() {
    let world = World::start("callback-full", true).await;
    let logs = world
        .wait_for("the start-up line with the redirect URL", || {
            let logs = world.operator.logs();
            logs.contains("serving the OAuth 2.0 callback")
                .then_some(logs)
        })
        .await;
    let redirect = format!("{}/oauth2/callback", world.callback);
    assert!(
        logs.contains(&format!("register {redirect} as the redirect URL")),
        "the start-up log names the redirect URL"
    );
    assert!(!logs.contains("/oauth2/callback/oauth2/callback"));

    // Let the callback's cache list once, then count.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let http = reqwest::Client::new();
    let before = connection_lists(world.cluster);
    for i in 0..30 {
        let response = http
            .get(format!("{redirect}?code=c{i}&state=bogus-state-{i}"))
            .send()
            .await
            .expect("a bogus callback");
        assert_eq!(response.status(), 400);
        let headers = response.headers();
        for (name, expected) in [
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(
                headers.get(name).and_then(|v| v.to_str().ok()),
                Some(expected),
                "{name}"
            );
        }
        let csp = headers
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            csp.starts_with("default-src 'none'; style-src 'sha256-"),
            "{csp}"
        );
        let text = response.text().await.unwrap_or_default();
        assert!(
            text.contains("<title>Unknown or used authorization"),
            "{text}"
        );
    }
    let after = connection_lists(world.cluster);
    eprintln!(
        "Connection LISTs at the apiserver: {before} before 30 bogus callbacks, {after} after"
    );
    assert_eq!(
        after, before,
        "bogus callbacks made the apiserver LIST Connections"
    );

    // The provider's error text is not reflected, and internal errors are not shown.
    let refused = http
        .get(format!("{redirect}?error=%3Cb%3Einjected%3C%2Fb%3E"))
        .send()
        .await
        .expect("an error return");
    assert_eq!(refused.status(), 400);
    assert!(
        !refused
            .text()
            .await
            .unwrap_or_default()
            .contains("injected")
    );
    // A body over the limit is refused.
    let big = http
        .post(&redirect)
        .body(vec![b'x'; 64 * 1024])
        .send()
        .await
        .expect("a big body");
    assert!(
        [405, 413].contains(&big.status().as_u16()),
        "{}",
        big.status()
    );

    // Slowloris: a client that never finishes its headers is disconnected within 30 s.
    let addr = world.callback.trim_start_matches("http://").to_owned();
    let slow = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(45)))
            .expect("read timeout");
        stream
            .write_all(b"GET /oauth2/callback?code=a&state=b HTTP/1.1\r\nHost: x\r\n")
            .expect("partial headers");
        let started = Instant::now();
        let mut buffer = [0u8; 512];
        // Closed (0 bytes, or a 408 and then closed), or reset.
        loop {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        started.elapsed()
    })
    .await
    .expect("slow client");
    eprintln!("a client that never finished its headers was disconnected after {slow:?}");
    assert!(slow < Duration::from_secs(30), "{slow:?}");

    world.authorize_in_chromium().await;
    drop(world);

    // The same with the base URL.
    let world = World::start("callback-base", false).await;
    world.authorize_in_chromium().await;
}

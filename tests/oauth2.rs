//! Beyond the CLI: the OAuth 2.0 authorization code flow in the cluster (a person's browser,
//! played by an HTTP client, goes from `status.authorizationUrl` to the operator's callback), a
//! pre-authorized refresh token, and end users' dynamic connections. Real apiserver, emulator
//! and operator process.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::operator::{Operator, OperatorOptions};
use common::{Emulator, TestCluster};
use kube::Api;
use serde_json::Value;
use versori_operator::resources::Connection;

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

struct World {
    cluster: &'static TestCluster,
    client: kube::Client,
    namespace: String,
    emulator: Emulator,
    operator: Operator,
    callback: String,
}

impl World {
    async fn start(prefix: &str, ttl: &str) -> World {
        let cluster = common::cluster().await;
        let namespace = cluster.namespace(prefix).await;
        let emulator = Emulator::start(&seed());
        let port = free_port();
        let callback = format!("http://127.0.0.1:{port}");
        let mut options = OperatorOptions::new(&namespace);
        options.env = vec![
            ("OAUTH2_CALLBACK_URL".into(), callback.clone()),
            ("OAUTH2_CALLBACK_ADDR".into(), format!("127.0.0.1:{port}")),
            ("OAUTH2_AUTHORIZATION_TTL".into(), ttl.into()),
        ];
        let operator = Operator::start(cluster, &emulator, &options);
        World {
            cluster,
            client: cluster.client().await,
            namespace,
            emulator,
            operator,
            callback,
        }
    }

    fn apply(&self, yaml: &str) {
        common::assert_success(
            &self
                .cluster
                .kubectl_apply_stdin(yaml, &["-n", &self.namespace]),
        );
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        common::assert_success(&self.cluster.kubectl(&all))
    }

    async fn wait<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\noperator log tail:\n{}",
                self.operator
                    .logs()
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn connection(&self, name: &str) -> Option<Connection> {
        Api::<Connection>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(name)
            .await
            .ok()
            .flatten()
    }

    async fn reason(&self, name: &str) -> Option<(String, String, String)> {
        let c = self.connection(name).await?;
        let ready = c
            .status?
            .common
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        Some((ready.status, ready.reason, ready.message))
    }

    async fn wait_reason(&self, name: &str, reason: &str) -> String {
        self.wait(
            &format!("{name} to have reason {reason}"),
            Duration::from_secs(60),
            || async {
                self.reason(name)
                    .await
                    .filter(|(_, r, _)| r == reason)
                    .map(|(_, _, m)| m)
            },
        )
        .await
    }

    async fn wait_ready(&self, kind: &str, name: &str) {
        self.wait(
            &format!("{kind}/{name} Ready"),
            Duration::from_secs(60),
            || async {
                let out = self.cluster.kubectl(&[
                    "-n",
                    &self.namespace,
                    "get",
                    kind,
                    name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ]);
                (String::from_utf8_lossy(&out.stdout) == "True").then_some(())
            },
        )
        .await
    }

    async fn connections_named(&self, name: &str) -> Vec<Value> {
        let state = self.emulator.state().await;
        state["connections"]
            .as_array()
            .map(|c| c.iter().filter(|c| c["name"] == name).cloned().collect())
            .unwrap_or_default()
    }
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
}

/// Plays the person at the provider: opens the authorization URL and returns where the provider
/// sends the browser back (the operator's callback with code and state).
async fn authorize(url: &str) -> String {
    let response = browser()
        .get(url)
        .send()
        .await
        .expect("open the authorization URL");
    assert_eq!(response.status(), 302, "the provider redirects back");
    response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("a Location header")
        .to_owned()
}

const STORE: &str = "apiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: { name: shopify-store }\nspec:\n  projectSystemRef: { name: shopify }\n";

#[tokio::test]
async fn a_person_authorizes_in_a_browser_and_the_connection_becomes_ready() {
    let world = World::start("oauth-code", "10m").await;
    common::assert_success(&world.cluster.kubectl(&[
        "apply",
        "-n",
        &world.namespace,
        "-f",
        &examples_dir(),
    ]));
    world.wait_ready("projectsystem", "shopify").await;
    world.apply(STORE);
    let message = world
        .wait_reason("shopify-store", "AuthorizationRequired")
        .await;
    assert!(message.contains("status.authorizationUrl"), "{message}");
    let status = world
        .connection("shopify-store")
        .await
        .and_then(|c| c.status)
        .expect("status");
    let url = status
        .authorization_url
        .clone()
        .expect("status.authorizationUrl");
    assert!(
        url.starts_with(&world.emulator.base_url),
        "the provider's page: {url}"
    );
    assert!(status.authorization_state_hash.is_some() && status.authorization_expires_at.is_some());

    // `kubectl get connections` shows that it waits for a person, and where to go.
    let table = world.kubectl(&["get", "connections", "-o", "wide"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("shopify-store"))
        .expect("row");
    assert!(
        row.contains("AuthorizationRequired") && row.contains(&url),
        "{table}"
    );
    let events = world.kubectl(&["get", "events", "-o", "json"]);
    assert!(
        events.contains("a person must authorize this connection"),
        "an event says where to go"
    );

    // The browser goes to the provider and comes back to the callback.
    let back = authorize(&url).await;
    assert!(
        back.starts_with(&format!("{}/oauth2/callback?", world.callback)),
        "{back}"
    );

    // A wrong state is refused and changes nothing.
    let wrong = browser()
        .get(format!(
            "{}/oauth2/callback?code=stolen&state=not-the-state",
            world.callback
        ))
        .send()
        .await
        .expect("wrong state");
    assert_eq!(wrong.status(), 400);
    let text = wrong.text().await.unwrap_or_default();
    assert!(text.contains("not pending for any Connection"), "{text}");
    assert!(world.connections_named("shopify-store").await.is_empty());
    // The callback serves only its path.
    let other = browser()
        .get(format!("{}/metrics", world.callback))
        .send()
        .await
        .expect("other path");
    assert_eq!(other.status(), 404);

    let done = browser().get(&back).send().await.expect("the callback");
    assert_eq!(done.status(), 200);
    let text = done.text().await.unwrap_or_default();
    assert!(text.contains("is authorized"), "{text}");
    world.wait_ready("connection", "shopify-store").await;
    let [connection] = &world.connections_named("shopify-store").await[..] else {
        panic!("one connection")
    };
    let credential = &connection["credentials"][0]["credential"];
    assert_eq!(credential["type"], "oauth2-code");
    let code = url::Url::parse(&back)
        .expect("callback URL")
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code");
    assert_eq!(credential["data"]["oauth2Code"]["code"], code.as_str());
    assert_eq!(
        credential["data"]["oauth2Code"]["redirectUrl"],
        format!("{}/oauth2/callback", world.callback)
    );
    let status = world
        .connection("shopify-store")
        .await
        .and_then(|c| c.status)
        .expect("status");
    assert_eq!(status.id.as_deref(), connection["id"].as_str());
    assert!(status.authorization_url.is_none() && status.authorization_state_hash.is_none());

    // Replaying the same return is refused: the state was single-use.
    let replay = browser().get(&back).send().await.expect("replay");
    assert_eq!(replay.status(), 400);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        world.connections_named("shopify-store").await.len(),
        1,
        "no second connection"
    );
    // Nothing secret in status or logs: the code never leaves the Versori payload.
    let yaml = world.kubectl(&["get", "connection", "shopify-store", "-o", "yaml"]);
    assert!(!yaml.contains(&code) && !world.operator.logs().contains(&code));
}

#[tokio::test]
async fn an_expired_authorization_is_refused_and_replaced() {
    let world = World::start("oauth-expiry", "2s").await;
    common::assert_success(&world.cluster.kubectl(&[
        "apply",
        "-n",
        &world.namespace,
        "-f",
        &examples_dir(),
    ]));
    world.wait_ready("projectsystem", "shopify").await;
    world.apply(STORE);
    world
        .wait_reason("shopify-store", "AuthorizationRequired")
        .await;
    let first = world
        .connection("shopify-store")
        .await
        .and_then(|c| c.status)
        .and_then(|s| s.authorization_url)
        .expect("an authorization URL");
    let back = authorize(&first).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let late = browser().get(&back).send().await.expect("late callback");
    assert_eq!(late.status(), 400, "an expired authorization is refused");
    assert!(world.connections_named("shopify-store").await.is_empty());
    // The operator starts a new authorization after the old one expired.
    world
        .wait(
            "a new authorization URL",
            Duration::from_secs(30),
            || async {
                let url = world
                    .connection("shopify-store")
                    .await?
                    .status?
                    .authorization_url?;
                (url != first).then_some(())
            },
        )
        .await;
}

#[tokio::test]
async fn a_pre_authorized_refresh_token_and_dynamic_connections() {
    let world = World::start("oauth-token", "10m").await;
    common::assert_success(&world.cluster.kubectl(&[
        "apply",
        "-n",
        &world.namespace,
        "-f",
        &examples_dir(),
    ]));
    world.wait_ready("projectsystem", "shopify").await;
    world.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: { name: shopify-tokens }\nstringData: { refreshToken: refresh-123, accessToken: access-456 }\n---\napiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: { name: shopify-token }\nspec:\n  projectSystemRef: { name: shopify }\n  credentials:\n    oauth2Token: { secretRef: { name: shopify-tokens } }\n",
    );
    world.wait_ready("connection", "shopify-token").await;
    let [connection] = &world.connections_named("shopify-token").await[..] else {
        panic!("one connection")
    };
    let credential = &connection["credentials"][0]["credential"];
    assert_eq!(credential["type"], "oauth2-token");
    assert_eq!(
        credential["data"]["oauth2Token"]["refreshToken"],
        "refresh-123"
    );
    assert_eq!(
        credential["data"]["oauth2Token"]["accessToken"],
        "access-456"
    );
    assert_eq!(
        credential["data"]["oauth2Token"]["scopes"],
        serde_json::json!(["read_products"])
    );

    // Dynamic: an end user's connection on a dynamic ProjectSystem.
    world.apply(
        "apiVersion: versori.com/v1alpha1\nkind: ProjectSystem\nmetadata: { name: per-user }\nspec:\n  projectId: 01KKBR46SH7JES8AZ14EEAK0CX\n  environment: staging\n  systemRef: { name: example-oauth2 }\n  authSchemeConfigId: api-key\n  dynamic: true\n",
    );
    world.wait_ready("projectsystem", "per-user").await;
    world.apply(
        "apiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: { name: user-1 }\nspec:\n  projectSystemRef: { name: per-user }\n  externalId: end-user-1\n  credentials: { apiKey: { secretKeyRef: { name: demo-api-key, key: apiKey } } }\n---\napiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: { name: no-user }\nspec:\n  projectSystemRef: { name: per-user }\n  credentials: { apiKey: { secretKeyRef: { name: demo-api-key, key: apiKey } } }\n---\napiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: { name: static-with-user }\nspec:\n  projectSystemRef: { name: example-oauth2 }\n  externalId: end-user-2\n  credentials: { apiKey: { secretKeyRef: { name: demo-api-key, key: apiKey } } }\n",
    );
    world.wait_ready("connection", "user-1").await;
    let [connection] = &world.connections_named("user-1").await[..] else {
        panic!("one user-1 connection")
    };
    assert_eq!(connection["externalId"], "end-user-1");
    let message = world.wait_reason("no-user", "ExternalIdMismatch").await;
    assert!(
        message.contains("dynamic") && message.contains("spec.externalId"),
        "{message}"
    );
    let message = world
        .wait_reason("static-with-user", "ExternalIdMismatch")
        .await;
    assert!(message.contains("static"), "{message}");
    assert!(world.connections_named("no-user").await.is_empty());
    assert!(world.connections_named("static-with-user").await.is_empty());
}

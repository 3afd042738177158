//! The schemes and credentials the `versori` CLI stops short of, end to end: the operator, run as
//! a process against the real apiserver and the emulator, makes Connections with a certificate
//! from a `kubernetes.io/tls` Secret, an hmac secret, secret and jwt-bearer values, an OAuth 1.0
//! token and a binary value, and completes an OAuth 1.0 browser flow through its callback.
//! Versori's side is read from `/_emulator/state`. Secret values are canaries: they must never
//! appear in the operator's log, in status or in events.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::operator::{Operator, OperatorOptions};
use common::{Emulator, TestCluster};
use serde_json::{Value, json};

const PROJECT: &str = "01KKBR46SH7JES8AZ14EEAK0CX";

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBcanary-cert-0f1e\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\ncanary-tls-key-7c2d\n-----END PRIVATE KEY-----\n";
const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBcanary-ca-51aa\n-----END CERTIFICATE-----\n";
const HMAC: &str = "canary-hmac-secret-9e3b";
const SECRET_VALUE: &str = "canary-secret-value-44c1";
const JWT_KEY: &str = "canary-jwt-key-a07d";
const TOKEN: &str = "canary-oauth1-token-2b6f";
const TOKEN_SECRET: &str = "canary-oauth1-token-secret-e815";
const CONSUMER_SECRET: &str = "canary-consumer-secret-3d90";
/// Not UTF-8: a binary value must travel as its bytes.
const BINARY: &[u8] = &[
    0x30, 0x82, 0xff, 0x00, 0xfe, 0x63, 0x61, 0x6e, 0x61, 0x72, 0x79,
];

/// Every secret value above, as it could leak (PEM keys by their marker line).
const CANARIES: &[&str] = &[
    "canary-tls-key-7c2d",
    HMAC,
    SECRET_VALUE,
    JWT_KEY,
    TOKEN,
    TOKEN_SECRET,
    CONSUMER_SECRET,
];

fn seed() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/emulator/seed.yaml"),
    )
    .expect("read the examples' emulator seed")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

struct World {
    cluster: &'static TestCluster,
    namespace: String,
    emulator: Emulator,
    operator: Operator,
    callback: String,
}

impl World {
    async fn start(prefix: &str) -> World {
        let cluster = common::cluster().await;
        let namespace = cluster.namespace(prefix).await;
        let emulator = Emulator::start(&seed());
        let port = free_port();
        let callback = format!("http://127.0.0.1:{port}");
        let mut options = OperatorOptions::new(&namespace);
        options.env = vec![
            ("OAUTH2_CALLBACK_URL".into(), callback.clone()),
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

    fn apply(&self, yaml: &str) {
        common::assert_success(
            &self
                .cluster
                .kubectl_apply_stdin(yaml, &["-n", &self.namespace]),
        );
    }

    fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let output =
            self.cluster
                .kubectl(&["-n", &self.namespace, "get", kind, name, "-o", "json"]);
        if !output.status.success() {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }

    /// The Ready condition of `kind/name` as (status, reason, message).
    fn ready(&self, kind: &str, name: &str) -> Option<(String, String, String)> {
        let object = self.get(kind, name)?;
        let conditions = object["status"]["conditions"].as_array()?;
        let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
        Some((
            ready["status"].as_str()?.to_owned(),
            ready["reason"].as_str()?.to_owned(),
            ready["message"].as_str()?.to_owned(),
        ))
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
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The operator's last log lines, canaries masked (a failure message must not print them).
    fn log_tail(&self) -> String {
        let logs = self.operator.logs();
        let mut tail: Vec<&str> = logs.lines().rev().take(30).collect();
        tail.reverse();
        let mut text = tail.join("\n");
        for canary in CANARIES {
            text = text.replace(canary, "<canary>");
        }
        text
    }

    async fn wait_ready(&self, kind: &str, name: &str) {
        self.wait(
            &format!("{kind}/{name} to be Ready"),
            Duration::from_secs(60),
            || async {
                self.ready(kind, name)
                    .filter(|(status, _, _)| status == "True")
            },
        )
        .await;
    }

    /// Waits for Ready=False with `reason` and returns the message.
    async fn wait_reason(&self, kind: &str, name: &str, reason: &str) -> String {
        self.wait(
            &format!("{kind}/{name} to report {reason}"),
            Duration::from_secs(60),
            || async {
                self.ready(kind, name)
                    .filter(|(status, r, _)| status == "False" && r == reason)
                    .map(|(_, _, message)| message)
            },
        )
        .await
    }

    /// The first credential the emulator holds for the connection named `name`, in clear.
    async fn stored_credential(&self, name: &str) -> Value {
        let state = self.emulator.state().await;
        state["connections"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["name"] == name))
            .map(|c| c["credentials"][0]["credential"].clone())
            .unwrap_or_else(|| panic!("the emulator holds no connection {name:?}"))
    }

    /// Status, events and the operator's log hold none of the canaries.
    fn assert_no_canary(&self) {
        let mut seen = String::new();
        for args in [
            vec!["get", "systems,projectsystems,connections", "-o", "yaml"],
            vec!["get", "events", "-o", "yaml"],
        ] {
            let mut all = vec!["-n", self.namespace.as_str()];
            all.extend(args);
            seen.push_str(&common::assert_success(&self.cluster.kubectl(&all)));
        }
        let logs = self.operator.logs();
        for canary in CANARIES {
            assert!(
                !seen.contains(canary),
                "a secret value shows in status or events"
            );
            assert!(
                !logs.contains(canary),
                "a secret value shows in the operator's log"
            );
        }
    }
}

fn secrets() -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{ name: client-tls }}
type: kubernetes.io/tls
data:
  tls.crt: {cert}
  tls.key: {key}
---
apiVersion: v1
kind: Secret
metadata: {{ name: client-tls-with-ca }}
type: kubernetes.io/tls
data:
  tls.crt: {cert}
  tls.key: {key}
  ca.crt: {ca}
---
apiVersion: v1
kind: Secret
metadata: {{ name: signing }}
stringData:
  hmac: {HMAC}
  value: {SECRET_VALUE}
  jwt.key: {JWT_KEY}
---
apiVersion: v1
kind: Secret
metadata: {{ name: erp-token }}
stringData: {{ token: {TOKEN}, tokenSecret: {TOKEN_SECRET} }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: erp-consumer }}
stringData: {{ secret: {CONSUMER_SECRET} }}
---
apiVersion: v1
kind: Secret
metadata: {{ name: keystore }}
data: {{ keystore.p12: {binary} }}
"#,
        cert = b64(CERT.as_bytes()),
        key = b64(KEY.as_bytes()),
        ca = b64(CA.as_bytes()),
        binary = b64(BINARY),
    )
}

const SYSTEM: &str = r#"apiVersion: versori.com/v1alpha1
kind: System
metadata: { name: everything }
spec:
  domain: everything.example.com
  templateBaseUrl: https://api.everything.example.com/
  authSchemes:
    - { id: mtls, type: certificate, description: client certificate }
    - { id: webhooks, type: hmac, hmac: { name: X-Signature, in: header, algorithm: sha256, digestInputs: [body], encoding: hex } }
    - { id: vault, type: secret }
    - { id: assertion, type: jwt-bearer }
    - id: erp
      type: oauth1
      oauth1:
        consumerKey: erp-consumer-key
        consumerSecretRef: { name: erp-consumer, key: secret }
        signatureMethod: sha1
        tokenAuth: true
"#;

fn project_system(name: &str, scheme: &str) -> String {
    format!(
        "apiVersion: versori.com/v1alpha1\nkind: ProjectSystem\nmetadata: {{ name: {name} }}\nspec:\n  projectId: {PROJECT}\n  environment: production\n  systemRef: {{ name: everything }}\n  authSchemeConfigId: {scheme}\n"
    )
}

fn connection(name: &str, template: &str, credentials: &str) -> String {
    format!(
        "apiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: {{ name: {name} }}\nspec:\n  projectSystemRef: {{ name: {template} }}\n  credentials: {credentials}\n"
    )
}

#[tokio::test]
async fn every_credential_kind_becomes_ready_with_exactly_those_values() {
    let world = World::start("credentials").await;
    world.apply(&secrets());
    world.apply(SYSTEM);
    for (name, scheme) in [
        ("mtls", "mtls"),
        ("webhooks", "webhooks"),
        ("vault", "vault"),
        ("assertion", "assertion"),
        ("erp", "erp"),
    ] {
        world.apply(&project_system(name, scheme));
    }
    let connections = [
        (
            "tls",
            "mtls",
            "{ certificate: { secretRef: { name: client-tls } } }",
        ),
        (
            "tls-with-ca",
            "mtls",
            "{ certificate: { secretRef: { name: client-tls-with-ca } } }",
        ),
        (
            "keystore",
            "mtls",
            "{ binary: { secretKeyRef: { name: keystore, key: keystore.p12 } } }",
        ),
        (
            "webhooks",
            "webhooks",
            "{ hmac: { secretKeyRef: { name: signing, key: hmac } } }",
        ),
        (
            "vault",
            "vault",
            "{ hmac: { secretKeyRef: { name: signing, key: value } } }",
        ),
        (
            "assertion",
            "assertion",
            "{ hmac: { secretKeyRef: { name: signing, key: jwt.key } } }",
        ),
        (
            "erp",
            "erp",
            "{ oauth1Token: { secretRef: { name: erp-token } } }",
        ),
    ];
    for (name, template, credentials) in connections {
        world.apply(&connection(name, template, credentials));
    }
    world.wait_ready("system", "everything").await;
    for name in ["mtls", "webhooks", "vault", "assertion", "erp"] {
        world.wait_ready("projectsystem", name).await;
    }
    for (name, _, _) in connections {
        world.wait_ready("connection", name).await;
    }

    // Versori holds the nine-type system: the memberless schemes as their type alone.
    let state = world.emulator.state().await;
    let system = state["systems"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "everything"))
        .expect("the system")
        .clone();
    let types: Vec<&str> = system["authSchemeConfigs"]
        .as_array()
        .expect("configs")
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    // The create body names the schemes with a member; the memberless ones are PUT after it,
    // in spec order.
    assert_eq!(
        types,
        ["certificate", "hmac", "oauth1", "secret", "jwt-bearer"]
    );
    let oauth1 = &system["authSchemeConfigs"][2]["oauth1"];
    assert_eq!(oauth1["consumerSecret"], CONSUMER_SECRET);
    assert_eq!(oauth1["consumerKey"], "erp-consumer-key");
    assert_eq!(oauth1["signatureMethod"], "sha1");
    assert_eq!(oauth1["tokenAuth"], true);
    // Each template uses the scheme its ProjectSystem names, memberless ones included.
    let template_schemes = |name: &str| {
        state["connectionTemplates"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["name"] == name))
            .map(|t| t["authSchemeConfigIds"].clone())
            .unwrap_or_default()
    };
    assert_eq!(template_schemes("vault"), json!(["vault"]));
    assert_eq!(template_schemes("assertion"), json!(["assertion"]));
    let ps = world.get("projectsystem", "vault").expect("vault");
    assert_eq!(ps["status"]["authSchemeType"], "secret");

    // ...and exactly the values, in the contract's shapes.
    let expect = [
        (
            "tls",
            json!({"type": "certificate", "data": {"certificate": {"certificate": CERT, "key": KEY, "ca": ""}}}),
        ),
        (
            "tls-with-ca",
            json!({"type": "certificate", "data": {"certificate": {"certificate": CERT, "key": KEY, "ca": CA}}}),
        ),
        (
            "keystore",
            json!({"type": "binary", "data": {"binary": {"valueBase64": b64(BINARY)}}}),
        ),
        (
            "webhooks",
            json!({"type": "string", "data": {"string": {"value": HMAC}}}),
        ),
        (
            "vault",
            json!({"type": "string", "data": {"string": {"value": SECRET_VALUE}}}),
        ),
        (
            "assertion",
            json!({"type": "string", "data": {"string": {"value": JWT_KEY}}}),
        ),
        (
            "erp",
            json!({"type": "oauth1-token", "data": {"oauth1Token": {"token": TOKEN, "tokenSecret": TOKEN_SECRET}}}),
        ),
    ];
    for (name, want) in &expect {
        let stored = world.stored_credential(name).await;
        assert_eq!(stored["type"], want["type"], "{name}");
        assert!(
            stored["data"] == want["data"],
            "{name}: the stored data differ from the Secret's"
        );
        let connection = world.get("connection", name).expect("connection");
        assert_eq!(
            connection["status"]["credentialType"], want["type"],
            "{name}"
        );
    }

    // Steady state: with nothing changed, resyncs (every 3 s) write nothing to Versori, the
    // memberless schemes and templates included.
    let reset = reqwest::Client::new()
        .post(world.emulator.url("/_emulator/reset-counters"))
        .send()
        .await
        .expect("reset counters");
    assert!(reset.status().is_success());
    tokio::time::sleep(Duration::from_secs(8)).await;
    let counters = world.emulator.state().await;
    let by_method = &counters["requestsByMethod"];
    for method in ["POST", "PUT", "DELETE"] {
        assert!(
            by_method[method].as_u64().unwrap_or(0) == 0,
            "{method} calls in steady state: {}",
            counters["requests"]
        );
    }
    assert!(
        by_method["GET"].as_u64().unwrap_or(0) > 0,
        "the resyncs did read Versori"
    );

    // A rotated hmac secret is sent again.
    world.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: { name: signing }\nstringData: { hmac: canary-rotated-hmac-61f0, value: canary-secret-value-44c1, jwt.key: canary-jwt-key-a07d }\n",
    );
    world
        .wait(
            "the rotated hmac secret in Versori",
            Duration::from_secs(30),
            || async {
                let stored = world.stored_credential("webhooks").await;
                (stored["data"]["string"]["value"] == "canary-rotated-hmac-61f0").then_some(())
            },
        )
        .await;
    world.assert_no_canary();
}

#[tokio::test]
async fn missing_secrets_and_keys_are_named_with_the_key() {
    let world = World::start("credentials-missing").await;
    world.apply(SYSTEM);
    world.apply(&project_system("webhooks", "webhooks"));
    world.apply(&project_system("mtls", "mtls"));
    world.apply(&connection(
        "webhooks",
        "webhooks",
        "{ hmac: { secretKeyRef: { name: signing, key: hmac } } }",
    ));
    world.apply(&connection(
        "tls",
        "mtls",
        "{ certificate: { secretRef: { name: client-tls }, caKey: bundle.pem } }",
    ));
    world.apply(&connection(
        "wrong-kind",
        "webhooks",
        "{ oauth1Token: { secretRef: { name: erp-token } } }",
    ));
    // The System's own consumer Secret is missing too: it says which key it needs.
    let message = world
        .wait_reason("system", "everything", "SecretNotFound")
        .await;
    assert!(
        message.contains("\"erp-consumer\"") && message.contains("\"secret\""),
        "{message}"
    );
    world.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: { name: erp-consumer }\nstringData: { secret: canary-consumer-secret-3d90 }\n",
    );
    world.wait_ready("system", "everything").await;
    world.wait_ready("projectsystem", "webhooks").await;

    let message = world
        .wait_reason("connection", "webhooks", "SecretNotFound")
        .await;
    assert_eq!(
        message,
        "Secret \"signing\" was not found in this namespace: create it with key \"hmac\""
    );
    // A Secret without the key: the same reason, naming Secret and key.
    world.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: { name: signing }\nstringData: { other: x }\n",
    );
    let message = world
        .wait(
            "the missing key to be reported",
            Duration::from_secs(60),
            || async {
                world
                    .ready("connection", "webhooks")
                    .filter(|(_, r, m)| r == "SecretNotFound" && m.contains("has no key"))
                    .map(|(_, _, m)| m)
            },
        )
        .await;
    assert_eq!(
        message,
        "Secret \"signing\" has no key \"hmac\": create it in this namespace"
    );
    world.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: signing }}\nstringData: {{ hmac: {HMAC} }}\n"
    ));
    world.wait_ready("connection", "webhooks").await;

    // A CA key named in the spec must exist (only the default ca.crt is optional).
    world.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: client-tls }}\ntype: kubernetes.io/tls\ndata: {{ tls.crt: {}, tls.key: {} }}\n",
        b64(CERT.as_bytes()),
        b64(KEY.as_bytes())
    ));
    let message = world
        .wait(
            "the missing CA key to be reported",
            Duration::from_secs(60),
            || async {
                world
                    .ready("connection", "tls")
                    .filter(|(_, r, m)| r == "SecretNotFound" && m.contains("has no key"))
                    .map(|(_, _, m)| m)
            },
        )
        .await;
    assert_eq!(
        message,
        "Secret \"client-tls\" has no key \"bundle.pem\": create it in this namespace"
    );
    // A credential of another kind than the template's scheme says what the scheme needs.
    let message = world
        .wait_reason("connection", "wrong-kind", "MissingCredential")
        .await;
    assert_eq!(
        message,
        "a signing secret (credentials.hmac) is required for this connection template"
    );
    world.assert_no_canary();
}

#[tokio::test]
async fn an_oauth1_browser_flow_completes_through_the_callback() {
    let world = World::start("oauth1-flow").await;
    world.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: { name: erp-consumer }\nstringData: { secret: canary-consumer-secret-3d90 }\n",
    );
    world.apply(
        r#"apiVersion: versori.com/v1alpha1
kind: System
metadata: { name: erp }
spec:
  domain: erp.example.com
  templateBaseUrl: https://erp.example.com/api/
  authSchemes:
    - id: oauth1
      type: oauth1
      oauth1:
        consumerKey: erp-consumer-key
        consumerSecretRef: { name: erp-consumer, key: secret }
        signatureMethod: sha256
        tempCredentialEndpoint: { url: https://erp.example.com/oauth/request_token, parameterTransmission: AuthorizationHeader }
        resourceOwnerAuthorizationEndpoint: { url: https://erp.example.com/oauth/authorize }
        tokenEndpoint: { url: https://erp.example.com/oauth/access_token }
"#,
    );
    world.apply(&format!(
        "apiVersion: versori.com/v1alpha1\nkind: ProjectSystem\nmetadata: {{ name: erp }}\nspec:\n  projectId: {PROJECT}\n  environment: production\n  systemRef: {{ name: erp }}\n"
    ));
    world.apply(
        "apiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: { name: erp-user }\nspec:\n  projectSystemRef: { name: erp }\n",
    );
    world
        .wait_reason("connection", "erp-user", "AuthorizationRequired")
        .await;
    let url = world
        .wait("the authorization URL", Duration::from_secs(30), || async {
            world
                .get("connection", "erp-user")
                .and_then(|c| c["status"]["authorizationUrl"].as_str().map(str::to_owned))
        })
        .await;
    let parsed = url::Url::parse(&url).expect("authorization URL");
    let param = |u: &url::Url, k: &str| {
        u.query_pairs()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.into_owned())
    };
    let token = param(&parsed, "oauth_token").expect("oauth_token");
    let state = param(&parsed, "state").expect("state");
    let connection = world.get("connection", "erp-user").expect("connection");
    assert_ne!(
        connection["status"]["authorizationStateHash"].as_str(),
        Some(token.as_str()),
        "status keeps a hash, not the token"
    );

    // The person approves at the provider (the emulator), whose page sends the browser back
    // to the operator's callback with the token and a verifier.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("browser");
    let approved = browser.get(&url).send().await.expect("authorize page");
    assert_eq!(approved.status(), 302);
    let back = approved.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(
        back.starts_with(&format!("{}/oauth2/callback?", world.callback)),
        "{back}"
    );
    let verifier =
        param(&url::Url::parse(&back).expect("back"), "oauth_verifier").expect("oauth_verifier");
    let done = browser.get(&back).send().await.expect("the callback");
    let status = done.status();
    let text = done.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("is authorized"), "{text}");
    world.wait_ready("connection", "erp-user").await;

    // Versori holds the oauth1 credential the flow produced.
    let stored = world.stored_credential("erp-user").await;
    assert_eq!(
        stored,
        json!({
            "id": stored["id"],
            "organisationId": stored["organisationId"],
            "type": "oauth1",
            "data": {"oauth1": {"state": state, "oauthToken": token, "oauthVerifier": verifier}}
        })
    );
    let connection = world.get("connection", "erp-user").expect("connection");
    assert_eq!(connection["status"]["credentialType"], "oauth1");
    assert!(connection["status"].get("authorizationUrl").is_none());
    // The return is single use.
    let replay = browser.get(&back).send().await.expect("replay");
    assert_eq!(replay.status(), 400);
    let logs = world.operator.logs();
    assert!(!logs.contains(&verifier), "the verifier shows in the log");
    assert!(!logs.contains(CONSUMER_SECRET));
}

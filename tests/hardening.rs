//! Issue 13's hardening, end to end against the real apiserver and the emulator: the Versori
//! token (a wrong token trips one breaker; a rotated token file is used without a restart),
//! secret values (line breaks, refused Secret types, consent by label) and the keyed
//! credential hash.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::operator::{Operator, OperatorOptions};
use common::{Emulator, TestCluster};
use serde_json::Value;

fn seed() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/emulator/seed.yaml"),
    )
    .expect("read the examples' emulator seed")
}

struct World {
    cluster: &'static TestCluster,
    namespace: String,
    emulator: Emulator,
}

impl World {
    async fn new(prefix: &str) -> World {
        let cluster = common::cluster().await;
        let namespace = cluster.namespace(prefix).await;
        World {
            cluster,
            namespace,
            emulator: Emulator::start(&seed()),
        }
    }

    fn start(&self, configure: impl FnOnce(&mut OperatorOptions)) -> Operator {
        let mut options = OperatorOptions::new(&self.namespace);
        configure(&mut options);
        Operator::start(self.cluster, &self.emulator, &options)
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

    fn ready(&self, kind: &str, name: &str) -> Option<(String, String, String)> {
        let output =
            self.cluster
                .kubectl(&["-n", &self.namespace, "get", kind, name, "-o", "json"]);
        if !output.status.success() {
            return None;
        }
        let object: Value = serde_json::from_slice(&output.stdout).ok()?;
        let ready = object["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?
            .clone();
        Some((
            ready["status"].as_str()?.to_owned(),
            ready["reason"].as_str()?.to_owned(),
            ready["message"].as_str()?.to_owned(),
        ))
    }

    async fn wait_reason(
        &self,
        operator: &Operator,
        kind: &str,
        name: &str,
        reason: &str,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.ready(kind, name);
            if let Some((_, r, message)) = &found
                && r == reason
            {
                return message.clone();
            }
            if Instant::now() > deadline {
                let logs = operator.logs();
                let tail: Vec<&str> = logs.lines().rev().take(30).collect();
                panic!(
                    "{kind}/{name}: no reason {reason} after {timeout:?} (now {found:?})\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn wait_ready(&self, operator: &Operator, kind: &str, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.ready(kind, name);
            if found
                .as_ref()
                .is_some_and(|(status, _, _)| status == "True")
            {
                return;
            }
            if Instant::now() > deadline {
                let logs = operator.logs();
                let tail: Vec<&str> = logs.lines().rev().take(30).collect();
                panic!(
                    "{kind}/{name}: not Ready after {timeout:?} (now {found:?})\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn put_emulator_token(emulator: &Emulator, token: &str) {
    let response = reqwest::Client::new()
        .put(emulator.url("/_emulator/token"))
        .json(&serde_json::json!({ "token": token }))
        .send()
        .await
        .expect("PUT /_emulator/token");
    assert_eq!(response.status(), 204, "PUT /_emulator/token");
}

async fn http_get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Swaps a kubelet-style mounted Secret: `token -> ..data/token`, `..data -> ..<version>`; a
/// rotation writes a new version directory and renames a new `..data` link over the old one.
fn write_mounted_token(dir: &Path, version: u32, token: &str) {
    let versioned = dir.join(format!("..v{version}"));
    std::fs::create_dir_all(&versioned).expect("version dir");
    std::fs::write(versioned.join("token"), format!("{token}\n")).expect("token");
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..v{version}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    let link = dir.join("token");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/token", &link).expect("token link");
    }
}

#[tokio::test]
async fn a_wrong_token_pauses_all_calls_and_a_rotated_token_file_is_used_without_restart() {
    const SYSTEMS: usize = 30;
    let world = World::new("token").await;
    // The token the operator holds is revoked behind its back.
    let new_token = format!("rotated-{:016x}", rand::random::<u64>());
    put_emulator_token(&world.emulator, &new_token).await;

    let mount = tempfile::tempdir().expect("mount dir");
    write_mounted_token(mount.path(), 1, &world.emulator.token);
    let token_file = mount.path().join("token");
    let operator = world.start(|o| {
        o.env.push(("VERSORI_API_TOKEN".into(), String::new()));
        o.env.push((
            "VERSORI_API_TOKEN_FILE".into(),
            token_file.to_string_lossy().into_owned(),
        ));
    });

    let mut yaml = String::new();
    for i in 0..SYSTEMS {
        yaml.push_str(&format!(
            "---\napiVersion: versori.com/v1alpha1\nkind: System\nmetadata: {{ name: s{i} }}\nspec:\n  domain: s{i}.example.com\n  templateBaseUrl: https://s{i}.example.com/\n"
        ));
    }
    let started = Instant::now();
    world.apply(&yaml);

    // Every System says the token is refused.
    for i in 0..SYSTEMS {
        let message = world
            .wait_reason(
                &operator,
                "system",
                &format!("s{i}"),
                "VersoriUnauthorized",
                Duration::from_secs(50),
            )
            .await;
        assert!(message.contains("API token"), "s{i}: {message}");
        assert!(
            message.contains("VERSORI_API_TOKEN_FILE"),
            "s{i}: {message}"
        );
        assert!(
            !message.contains(&world.emulator.token),
            "token leaked: {message}"
        );
    }
    let (status, body) = http_get(&format!("http://{}/readyz", operator.metrics_addr)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("API token"), "{body}");
    let (_, metrics) = http_get(&format!("http://{}/metrics", operator.metrics_addr)).await;
    assert!(
        metrics.contains("versori_operator_api_token_refused 1"),
        "{metrics}"
    );

    // A minute of the wrong token: one breaker, not a storm.
    let minute = Duration::from_secs(60);
    if let Some(rest) = minute.checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let state = world.emulator.state().await;
    let requests = state["requestsTotal"].as_u64().unwrap_or(u64::MAX);
    eprintln!(
        "{SYSTEMS} Systems with a wrong token: {requests} Versori requests in the first minute"
    );
    assert!(requests <= 40, "{requests} requests in a minute");

    // Rotate the mounted token: used within a minute, no restart.
    let rotated = Instant::now();
    write_mounted_token(mount.path(), 2, &new_token);
    for i in 0..SYSTEMS {
        world
            .wait_ready(
                &operator,
                "system",
                &format!("s{i}"),
                Duration::from_secs(60),
            )
            .await;
    }
    let took = rotated.elapsed();
    eprintln!("all {SYSTEMS} Systems Ready {took:?} after the token file was rotated");
    assert!(took < Duration::from_secs(60), "{took:?}");
    let (status, _) = http_get(&format!("http://{}/readyz", operator.metrics_addr)).await;
    assert_eq!(status, 200);
    let logs = operator.logs();
    assert!(
        logs.contains("the Versori API token file changed"),
        "no rotation logged"
    );
    assert!(!logs.contains(&new_token) && !logs.contains(&world.emulator.token));
}

const SYSTEM_AND_TEMPLATE: &str = "---
apiVersion: versori.com/v1alpha1
kind: System
metadata: { name: keyed }
spec:
  domain: keyed.example.com
  templateBaseUrl: https://keyed.example.com/
  authSchemes:
    - { id: api-key, type: api-key, apiKey: { name: X-API-Key, in: header } }
---
apiVersion: versori.com/v1alpha1
kind: ProjectSystem
metadata: { name: keyed }
spec:
  projectId: 01KKBR46SH7JES8AZ14EEAK0CX
  environment: production
  systemRef: { name: keyed }
";

fn connection(name: &str, secret: &str) -> String {
    format!(
        "---\napiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: {{ name: {name} }}\nspec:\n  projectSystemRef: {{ name: keyed }}\n  credentials:\n    apiKey: {{ secretKeyRef: {{ name: {secret}, key: apiKey }} }}\n"
    )
}

fn connections_named(state: &Value, name: &str) -> usize {
    state["connections"]
        .as_array()
        .map(|a| a.iter().filter(|c| c["name"] == name).count())
        .unwrap_or(0)
}

#[tokio::test]
async fn secret_values_types_and_consent_are_checked_before_anything_is_sent() {
    const CANARY: &str = "canary-newline-4b1e9d";
    let world = World::new("secrets").await;
    let mut operator = world.start(|_| {});
    world.apply(SYSTEM_AND_TEMPLATE);
    // `echo key > file; kubectl create secret --from-file`: a trailing newline.
    let file = tempfile::NamedTempFile::new().expect("file");
    std::fs::write(file.path(), format!("{CANARY}\n")).expect("write");
    world.kubectl(&[
        "create",
        "secret",
        "generic",
        "newline",
        &format!("--from-file=apiKey={}", file.path().display()),
    ]);
    world.apply(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: sa-token\n  annotations: { kubernetes.io/service-account.name: default }\ntype: kubernetes.io/service-account-token\nstringData: { apiKey: x }\n",
    );
    world.kubectl(&[
        "create",
        "secret",
        "generic",
        "unlabelled",
        "--from-literal=apiKey=unlabelled-value",
    ]);
    world.apply(&connection("newline", "newline"));
    world.apply(&connection("sa-token", "sa-token"));
    world.apply(&connection("unlabelled", "unlabelled"));

    let message = world
        .wait_reason(
            &operator,
            "connection",
            "newline",
            "InvalidSecret",
            Duration::from_secs(60),
        )
        .await;
    assert!(message.contains("ends in a newline"), "{message}");
    assert!(
        message.contains("\"newline\"") && message.contains("\"apiKey\""),
        "{message}"
    );
    let message = world
        .wait_reason(
            &operator,
            "connection",
            "sa-token",
            "SecretTypeRefused",
            Duration::from_secs(60),
        )
        .await;
    assert!(
        message.contains("kubernetes.io/service-account-token"),
        "{message}"
    );
    // Without the opt-in, an ordinary Secret works.
    world
        .wait_ready(
            &operator,
            "connection",
            "unlabelled",
            Duration::from_secs(60),
        )
        .await;

    // The hash in status is keyed.
    let hash = world.kubectl(&[
        "get",
        "connection",
        "unlabelled",
        "-o",
        "jsonpath={.status.credentialHash}",
    ]);
    assert!(hash.starts_with("hmac-sha256:"), "{hash}");
    world.kubectl(&["get", "secret", "versori-operator-credential-hash-key"]);

    let state = world.emulator.state().await;
    assert_eq!(
        connections_named(&state, "newline"),
        0,
        "a newline value was sent"
    );
    assert_eq!(connections_named(&state, "sa-token"), 0);
    let dump = state.to_string();
    assert!(!dump.contains(CANARY), "the newline value reached Versori");
    for text in [
        world.kubectl(&["get", "connections", "-o", "yaml"]),
        world.kubectl(&["get", "events", "-o", "yaml"]),
        operator.logs(),
    ] {
        assert!(!text.contains(CANARY), "value leaked");
    }

    // Fixing the Secret recovers.
    world.kubectl(&["delete", "secret", "newline"]);
    world.kubectl(&[
        "create",
        "secret",
        "generic",
        "newline",
        "--from-literal=apiKey=fixed-value",
    ]);
    world
        .wait_ready(&operator, "connection", "newline", Duration::from_secs(60))
        .await;

    // A new hash key is a rotation: each credential is sent once more, then nothing.
    let puts = |state: &Value| -> u64 {
        state["requests"]
            .as_object()
            .map(|r| {
                r.iter()
                    .filter(|(k, _)| k.starts_with("PUT ") && k.contains("connections"))
                    .filter_map(|(_, v)| v.as_u64())
                    .sum()
            })
            .unwrap_or(0)
    };
    operator.terminate(Duration::from_secs(10));
    let before = puts(&world.emulator.state().await);
    world.kubectl(&["delete", "secret", "versori-operator-credential-hash-key"]);
    world.kubectl(&[
        "create",
        "secret",
        "generic",
        "versori-operator-credential-hash-key",
        &format!("--from-literal=key={}", "k".repeat(64)),
    ]);
    let operator = world.start(|o| {
        o.env
            .push(("REQUIRE_CREDENTIAL_LABEL".into(), "true".into()));
    });
    // With the opt-in, the unlabelled Secret is refused ...
    let message = world
        .wait_reason(
            &operator,
            "connection",
            "unlabelled",
            "SecretNotLabelled",
            Duration::from_secs(60),
        )
        .await;
    assert!(message.contains("versori.com/credential"), "{message}");
    // ... and the labelled one works, resent once under the new key.
    world.kubectl(&["label", "secret", "newline", "versori.com/credential=true"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let new_hash = world.kubectl(&[
            "get",
            "connection",
            "newline",
            "-o",
            "jsonpath={.status.credentialHash}",
        ]);
        if world
            .ready("connection", "newline")
            .is_some_and(|(s, _, _)| s == "True")
            && !new_hash.is_empty()
            && puts(&world.emulator.state().await) > before
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the labelled Connection did not recover"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Several resyncs (3 s) later, still exactly one resend.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = puts(&world.emulator.state().await);
    assert_eq!(
        after,
        before + 1,
        "a key change resends each credential exactly once"
    );
}

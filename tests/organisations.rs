//! Who manages what, against the real apiserver and two emulators (two organisations, two
//! tokens): a namespace's `default` VersoriConfig and a ClusterVersoriConfig send resources to
//! their own organisation and none to the operator's; a wrong token is a condition, and its
//! rotation takes effect without a restart; an observed System never writes; a paused System
//! holds its change; an object adopted by ID survives its resource; adopting a System deletes
//! none of its schemes; and rotating an oauth2 client secret keeps one Versori credential.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::operator::{Operator, OperatorOptions};
use common::{Emulator, TestCluster};
use serde_json::{Value, json};

const PROJECT: &str = "01KKBR46SH7JES8AZ14EEAK0CX";
const ORG_B: &str = "org-b";

fn seed() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/emulator/seed.yaml"),
    )
    .expect("read the examples' emulator seed")
}

/// One test's cluster namespaces, the operator's own organisation (`a`) and a second one (`b`).
struct World {
    cluster: &'static TestCluster,
    namespace: String,
    a: Emulator,
    b: Emulator,
    operator: Operator,
}

impl World {
    async fn start(prefix: &str) -> World {
        Self::start_watching(prefix, &[]).await
    }

    /// An operator watching the test's namespace and `more`.
    async fn start_watching(prefix: &str, more: &[&str]) -> World {
        let cluster = common::cluster().await;
        let namespace = cluster.namespace(prefix).await;
        let a = Emulator::start(&seed());
        let token_b = format!("token-b-{:016x}", rand::random::<u64>());
        let b = Emulator::start_with(ORG_B, &token_b, &seed());
        let mut options = OperatorOptions::new(&namespace);
        if !more.is_empty() {
            let mut all = vec![namespace.as_str()];
            all.extend_from_slice(more);
            options.env.push(("WATCH_NAMESPACES".into(), all.join(",")));
        }
        let operator = Operator::start(cluster, &a, &options);
        World {
            cluster,
            namespace,
            a,
            b,
            operator,
        }
    }

    fn apply_in(&self, namespace: &str, yaml: &str) {
        common::assert_success(&self.cluster.kubectl_apply_stdin(yaml, &["-n", namespace]));
    }

    fn apply(&self, yaml: &str) {
        self.apply_in(&self.namespace, yaml);
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        common::assert_success(&self.cluster.kubectl(&all))
    }

    fn object_in(&self, namespace: &str, kind: &str, name: &str) -> Option<Value> {
        let output = self
            .cluster
            .kubectl(&["-n", namespace, "get", kind, name, "-o", "json"]);
        if !output.status.success() {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }

    /// The condition `type_` of `kind/name` in `namespace` as (status, reason, message).
    fn condition_in(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
        type_: &str,
    ) -> Option<(String, String, String)> {
        let object = self.object_in(namespace, kind, name)?;
        let condition = object["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)?
            .clone();
        Some((
            condition["status"].as_str()?.to_owned(),
            condition["reason"].as_str()?.to_owned(),
            condition["message"].as_str()?.to_owned(),
        ))
    }

    fn condition(&self, kind: &str, name: &str, type_: &str) -> Option<(String, String, String)> {
        self.condition_in(&self.namespace, kind, name, type_)
    }

    async fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check() {
                return value;
            }
            if Instant::now() > deadline {
                let logs = self.operator.logs();
                let tail: Vec<&str> = logs.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what}\noperator log tail:\n{}",
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until `check` holds of an emulator's state.
    async fn wait_state(&self, emulator: &Emulator, what: &str, check: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = emulator.state().await;
            if check(&state) {
                return;
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
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn wait_ready_in(&self, namespace: &str, kind: &str, name: &str) {
        self.wait(
            &format!("{kind} {namespace}/{name} to be Ready"),
            Duration::from_secs(60),
            || {
                self.condition_in(namespace, kind, name, "Ready")
                    .filter(|(status, _, _)| status == "True")
            },
        )
        .await;
    }

    async fn wait_ready(&self, kind: &str, name: &str) {
        self.wait_ready_in(&self.namespace.clone(), kind, name)
            .await;
    }

    async fn wait_reason(&self, kind: &str, name: &str, type_: &str, reason: &str) -> String {
        self.wait(
            &format!("{kind}/{name} {type_} reason {reason}"),
            Duration::from_secs(60),
            || {
                self.condition(kind, name, type_)
                    .filter(|(_, r, _)| r == reason)
                    .map(|(_, _, message)| message)
            },
        )
        .await
    }

    async fn wait_gone(&self, kind: &str, name: &str) {
        self.wait(
            &format!("{kind}/{name} to be gone"),
            Duration::from_secs(60),
            || {
                let output = self
                    .cluster
                    .kubectl(&["-n", &self.namespace, "get", kind, name]);
                (!output.status.success()).then_some(())
            },
        )
        .await;
    }

    /// A Secret holding organisation B's token, and a VersoriConfig for it.
    fn config_for_b(&self, namespace: &str, name: &str, token: &str) {
        self.apply_in(
            namespace,
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name}-token }}\nstringData: {{ token: \"{token}\" }}\n---\napiVersion: versori.com/v1alpha1\nkind: VersoriConfig\nmetadata: {{ name: {name} }}\nspec:\n  apiUrl: {url}\n  organisationId: {ORG_B}\n  tokenSecretRef: {{ name: {name}-token, key: token }}\n",
                url = self.b.base_url
            ),
        );
    }

    fn status_id(&self, kind: &str, name: &str) -> Option<String> {
        self.object_in(&self.namespace, kind, name)?["status"]["id"]
            .as_str()
            .map(str::to_owned)
    }
}

/// The writes an emulator took (every request but GETs).
fn writes(state: &Value) -> u64 {
    state["requests"]
        .as_object()
        .map(|routes| {
            routes
                .iter()
                .filter(|(route, _)| !route.starts_with("GET "))
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0)
}

fn system(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: versori.com/v1alpha1\nkind: System\nmetadata: {{ name: {name} }}\nspec:\n  domain: {name}.example\n  templateBaseUrl: https://{name}.example/\n  authSchemes:\n    - {{ id: api-key, type: api-key, apiKey: {{ name: X-API-Key, in: header }} }}\n{extra}"
    )
}

/// A System created in organisation `emulator` directly, as a person would in the Versori UI.
async fn versori_system(emulator: &Emulator, name: &str, schemes: Value) -> String {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/o/{}/systems",
            emulator.base_url, emulator.organisation
        ))
        .bearer_auth(&emulator.token)
        .json(&json!({
            "name": name,
            "domain": format!("{name}.example"),
            "templateBaseUrl": format!("https://{name}.example/"),
            "authSchemeConfigs": schemes,
        }))
        .send()
        .await
        .expect("POST /systems");
    assert_eq!(response.status().as_u16(), 201, "create a system directly");
    let body: Value = response.json().await.expect("a system");
    body["id"].as_str().expect("an ID").to_owned()
}

async fn reset_counters(emulator: &Emulator) {
    let response = reqwest::Client::new()
        .post(emulator.url("/_emulator/reset-counters"))
        .send()
        .await
        .expect("POST /_emulator/reset-counters");
    assert!(
        response.status().is_success(),
        "reset the emulator's counters"
    );
}

fn state_system<'s>(state: &'s Value, id: &str) -> Option<&'s Value> {
    state["systems"]
        .as_array()?
        .iter()
        .find(|s| s["id"].as_str() == Some(id))
}

#[tokio::test]
async fn a_namespace_default_config_sends_its_resources_to_its_organisation_only() {
    let world = World::start("org-default").await;
    world.config_for_b(&world.namespace, "default", &world.b.token);
    world.wait_ready("versoriconfig", "default").await;
    let config = world
        .object_in(&world.namespace, "versoriconfig", "default")
        .expect("the config");
    assert_eq!(config["status"]["organisationId"], ORG_B);
    world.apply(&format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{ name: key }}\nstringData: {{ apiKey: k-1 }}\n---\napiVersion: versori.com/v1alpha1\nkind: ProjectSystem\nmetadata: {{ name: shop }}\nspec: {{ projectId: {PROJECT}, environment: production, systemRef: {{ name: shop }} }}\n---\napiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: {{ name: shop }}\nspec:\n  projectSystemRef: {{ name: shop }}\n  credentials: {{ apiKey: {{ secretKeyRef: {{ name: key, key: apiKey }} }} }}\n",
        system("shop", "")
    ));
    for kind in ["system", "projectsystem", "connection"] {
        world.wait_ready(kind, "shop").await;
    }
    let b = world.b.state().await;
    assert_eq!(b["systems"].as_array().map(Vec::len), Some(1), "{b}");
    assert_eq!(b["connectionTemplates"].as_array().map(Vec::len), Some(1));
    assert_eq!(b["connections"].as_array().map(Vec::len), Some(1));
    let a = world.a.state().await;
    assert_eq!(a["systems"].as_array().map(Vec::len), Some(0), "{a}");
    assert_eq!(
        writes(&a),
        0,
        "the operator's own organisation took writes: {a}"
    );
    let system = world
        .object_in(&world.namespace, "system", "shop")
        .expect("the System");
    assert_eq!(system["status"]["organisationId"], ORG_B);

    // A config pointing elsewhere now: the System is refused, not made again in organisation A.
    world.apply(&format!(
        "apiVersion: versori.com/v1alpha1\nkind: VersoriConfig\nmetadata: {{ name: default }}\nspec:\n  apiUrl: {}\n  organisationId: {}\n  tokenSecretRef: {{ name: default-token, key: token }}\n",
        world.a.base_url, world.a.organisation
    ));
    common::assert_success(&world.cluster.kubectl(&[
        "-n",
        &world.namespace,
        "create",
        "secret",
        "generic",
        "a-token",
        &format!("--from-literal=token={}", world.a.token),
    ]));
    world.kubectl(&[
        "patch",
        "versoriconfig",
        "default",
        "--type=merge",
        "-p",
        r#"{"spec":{"tokenSecretRef":{"name":"a-token","key":"token"}}}"#,
    ]);
    let message = world
        .wait_reason("system", "shop", "Ready", "OrganisationChanged")
        .await;
    assert!(message.contains(ORG_B), "{message}");
    let a = world.a.state().await;
    assert_eq!(
        writes(&a),
        0,
        "nothing was made again in organisation A: {a}"
    );
}

#[tokio::test]
async fn a_cluster_config_named_by_config_ref_serves_any_namespace() {
    let cluster = common::cluster().await;
    let other = cluster.namespace("org-cluster-other").await;
    let secrets = cluster.namespace("org-cluster-secrets").await;
    let world = World::start_watching("org-cluster", &[&other]).await;
    let config = common::unique_name("production");
    world.apply_in(
        &secrets,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{ name: b-token }}\nstringData: {{ token: \"{}\" }}\n",
            world.b.token
        ),
    );
    common::assert_success(&world.cluster.kubectl_apply_stdin(
        &format!(
            "apiVersion: versori.com/v1alpha1\nkind: ClusterVersoriConfig\nmetadata: {{ name: {config} }}\nspec:\n  apiUrl: {}\n  organisationId: {ORG_B}\n  tokenSecretRef: {{ namespace: {secrets}, name: b-token, key: token }}\n",
            world.b.base_url
        ),
        &[],
    ));
    let reference = format!("  configRef: {{ kind: ClusterVersoriConfig, name: {config} }}\n");
    world.apply(&system("here", &reference));
    world.apply_in(&other, &system("there", &reference));
    world.wait_ready("system", "here").await;
    world.wait_ready_in(&other, "system", "there").await;
    let b = world.b.state().await;
    let names: Vec<&str> = b["systems"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.contains(&"here") && names.contains(&"there"),
        "{names:?}"
    );
    assert_eq!(writes(&world.a.state().await), 0);

    // A ProjectSystem in the operator's own organisation cannot link a System in B.
    world.apply(&format!(
        "apiVersion: versori.com/v1alpha1\nkind: ProjectSystem\nmetadata: {{ name: mixed }}\nspec: {{ projectId: {PROJECT}, environment: production, systemRef: {{ name: here }} }}\n"
    ));
    let message = world
        .wait_reason(
            "projectsystem",
            "mixed",
            "Ready",
            "DependencyInOtherOrganisation",
        )
        .await;
    assert!(message.contains("configRef"), "{message}");

    // A configRef to a config that does not exist is a condition.
    world.apply(&system(
        "nowhere",
        "  configRef: { kind: ClusterVersoriConfig, name: no-such-config }\n",
    ));
    world
        .wait_reason("system", "nowhere", "Ready", "ConfigNotFound")
        .await;

    for (namespace, name) in [
        (world.namespace.as_str(), "here"),
        (other.as_str(), "there"),
    ] {
        common::assert_success(&world.cluster.kubectl(&[
            "-n",
            namespace,
            "delete",
            "system",
            name,
            "--wait=false",
        ]));
    }
    world.kubectl(&["delete", "projectsystem,system", "--all", "--wait=false"]);
    common::assert_success(&world.cluster.kubectl(&[
        "delete",
        "clusterversoriconfig",
        &config,
        "--wait=false",
    ]));
}

#[tokio::test]
async fn a_wrong_token_is_a_condition_and_its_rotation_needs_no_restart() {
    let mut world = World::start("org-token").await;
    world.config_for_b(&world.namespace, "default", "not-the-token");
    let message = world
        .wait_reason("versoriconfig", "default", "Ready", "VersoriUnauthorized")
        .await;
    assert!(!message.contains("not-the-token"), "{message}");
    assert!(
        message.contains("tokenSecretRef") && !message.contains("VERSORI_API_TOKEN"),
        "the config's message points at its own Secret, not the operator's token: {message}"
    );
    world.apply(&system("locked", ""));
    let message = world
        .wait_reason("system", "locked", "Ready", "VersoriUnauthorized")
        .await;
    assert!(
        message.contains("VersoriConfig") && !message.contains("VERSORI_API_TOKEN"),
        "the System's message names its config's token, not the operator's: {message}"
    );
    assert!(!message.contains("not-the-token"), "{message}");
    assert!(world.operator.is_running(), "the operator keeps running");
    assert!(!world.operator.logs().contains("not-the-token"));

    // The right token, in the same Secret: no restart.
    world.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: default-token }}\nstringData: {{ token: \"{}\" }}\n",
        world.b.token
    ));
    world.wait_ready("versoriconfig", "default").await;
    world.wait_ready("system", "locked").await;
    let b = world.b.state().await;
    assert_eq!(b["systems"].as_array().map(Vec::len), Some(1), "{b}");
    assert!(world.operator.is_running());
}

#[tokio::test]
async fn an_observed_system_reports_and_never_writes() {
    let world = World::start("org-observe").await;
    let id = versori_system(
        &world.a,
        "watched",
        json!([{"type": "api-key", "apiKey": {"id": "k", "description": "", "name": "X-Key", "in": "header"}}]),
    )
    .await;
    let by_name = versori_system(&world.a, "by-name", json!([])).await;
    reset_counters(&world.a).await;
    world.apply(&system(
        "watched",
        &format!("  managementPolicy: Observe\n  systemId: {id}\n"),
    ));
    world.apply(&system("by-name", "  managementPolicy: Observe\n"));
    world.apply(&system("absent", "  managementPolicy: Observe\n"));
    world.wait_ready("system", "watched").await;
    world.wait_ready("system", "by-name").await;
    assert_eq!(
        world.status_id("system", "watched").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        world.status_id("system", "by-name").as_deref(),
        Some(by_name.as_str())
    );
    world
        .wait_reason("system", "absent", "Ready", "ObservedNotFound")
        .await;
    let object = world
        .object_in(&world.namespace, "system", "watched")
        .expect("the System");
    assert!(
        object["metadata"]["finalizers"].is_null(),
        "an observed resource carries no finalizer: {object}"
    );

    // A ProjectSystem may link the observed System.
    world.apply(&format!(
        "apiVersion: versori.com/v1alpha1\nkind: ProjectSystem\nmetadata: {{ name: watched }}\nspec: {{ projectId: {PROJECT}, environment: production, systemRef: {{ name: watched }} }}\n"
    ));
    world.wait_ready("projectsystem", "watched").await;
    world.kubectl(&["delete", "projectsystem", "watched", "--wait=false"]);
    world.wait_gone("projectsystem", "watched").await;
    reset_counters(&world.a).await;

    // A spec change: nothing is written, the resource still reports what it observed.
    world.kubectl(&[
        "patch",
        "system",
        "watched",
        "--type=merge",
        "-p",
        r#"{"spec":{"domain":"changed.example"}}"#,
    ]);
    world
        .wait("the change to be observed", Duration::from_secs(30), || {
            let object = world.object_in(&world.namespace, "system", "watched")?;
            (object["status"]["observedGeneration"] == object["metadata"]["generation"])
                .then_some(())
        })
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await; // more than a resync
    let a = world.a.state().await;
    assert_eq!(writes(&a), 0, "an observed System wrote to Versori: {a}");
    let held = state_system(&a, &id).expect("the system is there");
    assert_eq!(held["domain"], "watched.example");

    world.kubectl(&["delete", "system", "watched", "by-name", "absent"]);
    let a = world.a.state().await;
    assert!(
        state_system(&a, &id).is_some(),
        "deleting the resource left it"
    );
    assert!(state_system(&a, &by_name).is_some());
    assert_eq!(writes(&a), 0);
}

#[tokio::test]
async fn a_paused_system_holds_its_change_until_the_annotation_goes() {
    let world = World::start("org-pause").await;
    world.apply(&system("held", ""));
    world.wait_ready("system", "held").await;
    let id = world.status_id("system", "held").expect("an ID");
    world.kubectl(&["annotate", "system", "held", "versori.com/paused=true"]);
    world
        .wait_reason("system", "held", "Synced", "Paused")
        .await;
    world.kubectl(&[
        "patch",
        "system",
        "held",
        "--type=merge",
        "-p",
        r#"{"spec":{"domain":"after-pause.example"}}"#,
    ]);
    tokio::time::sleep(Duration::from_secs(5)).await; // more than a resync
    let a = world.a.state().await;
    assert_eq!(
        state_system(&a, &id).map(|s| s["domain"].clone()),
        Some(json!("held.example")),
        "a paused System's change reached Versori"
    );
    let (ready, _, _) = world.condition("system", "held", "Ready").expect("Ready");
    assert_eq!(ready, "True", "Ready keeps what was last observed");

    world.kubectl(&["annotate", "system", "held", "versori.com/paused-"]);
    world
        .wait_state(&world.a, "the held change in Versori", |state| {
            state_system(state, &id).is_some_and(|s| s["domain"] == "after-pause.example")
        })
        .await;
    world
        .wait_reason("system", "held", "Synced", "ReconcileSuccess")
        .await;
}

#[tokio::test]
async fn an_object_adopted_by_id_survives_its_resource_unless_told_otherwise() {
    let world = World::start("org-adopt").await;
    let kept = versori_system(&world.a, "kept", json!([])).await;
    let deleted = versori_system(&world.a, "deleted", json!([])).await;
    world.apply(&format!(
        "{}  systemId: {kept}\n---\n{}  systemId: {deleted}\n  deletionPolicy: Delete\n",
        system("kept", ""),
        system("deleted", "")
    ));
    world.wait_ready("system", "kept").await;
    world.wait_ready("system", "deleted").await;
    world.kubectl(&["delete", "system", "kept", "deleted"]);
    let a = world.a.state().await;
    assert!(
        state_system(&a, &kept).is_some(),
        "adopted without deletionPolicy: kept"
    );
    assert!(
        state_system(&a, &deleted).is_none(),
        "deletionPolicy: Delete: deleted"
    );
    let events = world.kubectl(&["get", "events", "-o", "json"]);
    assert!(
        events.contains("adopted by spec.systemId and deletionPolicy is not set"),
        "the delete event says why the object stayed"
    );
}

fn oauth2_scheme(secret: Option<&str>, description: &str) -> Value {
    let mut grant = json!({"clientId": "cid"});
    if let Some(secret) = secret {
        grant["clientSecret"] = json!(secret);
    }
    json!({"type": "oauth2", "oauth2": {
        "id": "oauth", "description": description,
        "tokenUrl": "https://auth.example/token", "authorizeUrl": "https://auth.example/authorize",
        "scopes": [], "defaultScopes": [],
        "grant": {"type": "authorizationCode", "authorizationCode": grant},
    }})
}

fn credentials_of(state: &Value, system_id: &str, scheme: &str) -> Vec<Value> {
    state["credentials"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|c| c["systemId"] == system_id && c["authSchemeConfigId"] == scheme)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn adopting_deletes_no_scheme_and_rotations_keep_one_credential() {
    let world = World::start("org-schemes").await;
    // Made in the Versori UI: three schemes, the oauth2 client secret typed in there.
    let id = versori_system(
        &world.a,
        "adopted",
        json!([
            {"type": "api-key", "apiKey": {"id": "api-key", "description": "", "name": "X-API-Key", "in": "header"}},
            {"type": "basic-auth", "basicAuth": {"id": "basic", "description": ""}},
            oauth2_scheme(Some("typed-in-the-ui"), "UI"),
        ]),
    )
    .await;
    // The spec lists the api-key scheme and the oauth2 one without its secret, with a new
    // description (so it is sent).
    world.apply(&format!(
        "{}    - id: oauth\n      type: oauth2\n      description: from Git\n      oauth2:\n        tokenUrl: https://auth.example/token\n        authorizeUrl: https://auth.example/authorize\n        grant: {{ type: authorizationCode, clientId: cid }}\n  systemId: {id}\n",
        system("adopted", "")
    ));
    world.wait_ready("system", "adopted").await;
    let a = world.a.state().await;
    let held = state_system(&a, &id).expect("the system");
    let schemes: Vec<&str> = held["authSchemeConfigs"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|s| {
                    ["apiKey", "basicAuth", "oauth2"]
                        .iter()
                        .find_map(|m| s[*m]["id"].as_str())
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(schemes.len(), 3, "no scheme was deleted: {schemes:?}");
    let oauth = held["authSchemeConfigs"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["type"] == "oauth2"))
        .expect("the oauth2 scheme");
    assert_eq!(
        oauth["oauth2"]["description"], "from Git",
        "the spec was applied"
    );
    assert_eq!(
        oauth["oauth2"]["grant"]["authorizationCode"]["clientSecret"], "typed-in-the-ui",
        "the secret typed into the UI is kept"
    );
    assert_eq!(credentials_of(&a, &id, "oauth").len(), 1, "one credential");

    // A System the operator made, its client secret from a Secret, rotated ten times.
    let secret = |value: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{ name: client }}\nstringData: {{ secret: {value} }}\n"
        )
    };
    world.apply(&secret("rotation-0"));
    world.apply(&format!(
        "{}    - id: oauth\n      type: oauth2\n      oauth2:\n        tokenUrl: https://auth.example/token\n        authorizeUrl: https://auth.example/authorize\n        grant:\n          type: authorizationCode\n          clientId: cid\n          clientSecretRef: {{ name: client, key: secret }}\n",
        system("rotated", "")
    ));
    world.wait_ready("system", "rotated").await;
    let rotated = world.status_id("system", "rotated").expect("an ID");
    for n in 1..=10 {
        let value = format!("rotation-{n}");
        world.apply(&secret(&value));
        world
            .wait_state(&world.a, &format!("{value} in Versori"), |state| {
                credentials_of(state, &rotated, "oauth")
                    .iter()
                    .any(|c| c["data"]["clientSecret"] == value.as_str())
            })
            .await;
    }
    let a = world.a.state().await;
    let held = credentials_of(&a, &rotated, "oauth");
    assert_eq!(
        held.len(),
        1,
        "10 rotations left one credential, not 11: {held:?}"
    );
    assert_eq!(held[0]["data"]["clientSecret"], "rotation-10");
    world.kubectl(&["delete", "system", "adopted", "rotated", "--wait=false"]);
}

#[tokio::test]
async fn a_slow_organisation_does_not_slow_the_other() {
    let cluster = common::cluster().await;
    let team_b = cluster.namespace("org-slow-b").await;
    // Two calls in flight per organisation: were the cap shared, B's slow calls would hold
    // every slot.
    let world = {
        let namespace = cluster.namespace("org-slow").await;
        let a = Emulator::start(&seed());
        let b = Emulator::start_with(
            ORG_B,
            &format!("token-b-{:016x}", rand::random::<u64>()),
            &seed(),
        );
        let mut options = OperatorOptions::new(&namespace);
        options
            .env
            .push(("WATCH_NAMESPACES".into(), format!("{namespace},{team_b}")));
        options
            .env
            .push(("VERSORI_MAX_IN_FLIGHT".into(), "2".into()));
        let operator = Operator::start(cluster, &a, &options);
        World {
            cluster,
            namespace,
            a,
            b,
            operator,
        }
    };
    world.config_for_b(&team_b, "default", &world.b.token);
    world
        .wait_ready_in(&team_b, "versoriconfig", "default")
        .await;
    world
        .b
        .set_faults(json!({"latencyMs": 15000, "routes": ["POST /o/{org}/systems"]}))
        .await;
    for n in 0..4 {
        world.apply_in(&team_b, &system(&format!("slow-{n}"), ""));
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // B's slots are taken
    let started = Instant::now();
    for n in 0..3 {
        world.apply(&system(&format!("fast-{n}"), ""));
    }
    for n in 0..3 {
        world.wait_ready("system", &format!("fast-{n}")).await;
    }
    // Ordering, not a stopwatch: A's Systems are Ready while every one of B's creates is still
    // in flight (each takes 15 s); with one shared cap, A's calls would queue behind them.
    let took = started.elapsed();
    for n in 0..4 {
        let (ready, _, _) = world
            .condition_in(&team_b, "system", &format!("slow-{n}"), "Ready")
            .unwrap_or_default();
        assert_ne!(
            ready, "True",
            "slow-{n} in B finished before A's Systems ({took:?}): A waited for B's calls"
        );
    }
    world.b.clear_faults().await;
    for n in 0..4 {
        world
            .wait_ready_in(&team_b, "system", &format!("slow-{n}"))
            .await;
    }
}

//! The operator, run as a process against the real apiserver from `tests/cluster` and the
//! emulator, reconciles the three kinds end to end. Versori's side is read from
//! `/_emulator/state`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::operator::{Operator, OperatorOptions};
use common::{Emulator, TestCluster};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};
use versori_operator::resources::{Connection, ProjectSystem, System};

const PROJECT: &str = "01KKBR46SH7JES8AZ14EEAK0CX";
const PRODUCTION: &str = "01KKBR46SH7JES8AZ14EEAK0D0";

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

/// One test's world: a namespace, an emulator seeded with the examples' project, an operator.
struct World {
    cluster: &'static TestCluster,
    client: kube::Client,
    namespace: String,
    emulator: Emulator,
    operator: Operator,
}

impl World {
    async fn start(prefix: &str) -> World {
        Self::start_with(prefix, |_| {}).await
    }

    async fn start_with(prefix: &str, configure: impl FnOnce(&mut OperatorOptions)) -> World {
        let cluster = common::cluster().await;
        let namespace = cluster.namespace(prefix).await;
        let emulator = Emulator::start(&seed());
        let mut options = OperatorOptions::new(&namespace);
        configure(&mut options);
        let operator = Operator::start(cluster, &emulator, &options);
        World {
            cluster,
            client: cluster.client().await,
            namespace,
            emulator,
            operator,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn apply(&self, yaml: &str) {
        let output = self
            .cluster
            .kubectl_apply_stdin(yaml, &["-n", &self.namespace]);
        common::assert_success(&output);
    }

    fn apply_examples(&self) {
        common::assert_success(&self.cluster.kubectl(&[
            "apply",
            "-n",
            &self.namespace,
            "-f",
            &examples_dir(),
        ]));
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        common::assert_success(&self.cluster.kubectl(&all))
    }

    /// Polls `check` every 200 ms until it returns `Some`, or fails the test with the
    /// operator's log tail.
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
            if Instant::now() > deadline {
                let logs = self.operator.logs();
                let tail: Vec<&str> = logs.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what}\noperator log tail:\n{}",
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The Ready condition of `kind/name` as (status, reason, message).
    async fn ready_condition(&self, kind: &str, name: &str) -> Option<(String, String, String)> {
        let output =
            self.cluster
                .kubectl(&["-n", &self.namespace, "get", kind, name, "-o", "json"]);
        if !output.status.success() {
            return None;
        }
        let object: Value = serde_json::from_slice(&output.stdout).ok()?;
        let conditions = object["status"]["conditions"].as_array()?;
        let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
        Some((
            ready["status"].as_str()?.to_owned(),
            ready["reason"].as_str()?.to_owned(),
            ready["message"].as_str()?.to_owned(),
        ))
    }

    async fn wait_ready(&self, kind: &str, name: &str, timeout: Duration) {
        self.wait(&format!("{kind}/{name} to be Ready"), timeout, || async {
            self.ready_condition(kind, name)
                .await
                .filter(|(status, _, _)| status == "True")
                .map(|_| ())
        })
        .await
    }

    async fn wait_reason(&self, kind: &str, name: &str, reason: &str, timeout: Duration) -> String {
        self.wait(
            &format!("{kind}/{name} to have reason {reason}"),
            timeout,
            || async {
                self.ready_condition(kind, name)
                    .await
                    .filter(|(_, r, _)| r == reason)
                    .map(|(_, _, message)| message)
            },
        )
        .await
    }

    async fn wait_examples_ready(&self) {
        for (kind, name) in [
            ("system", "shopify"),
            ("system", "example-oauth2"),
            ("projectsystem", "shopify"),
            ("projectsystem", "example-oauth2"),
            ("connection", "demo-api-key"),
        ] {
            self.wait_ready(kind, name, Duration::from_secs(60)).await;
        }
    }

    async fn state(&self) -> Value {
        self.emulator.state().await
    }

    fn versori(&self) -> versori_operator::versori::VersoriClient {
        versori_operator::versori::VersoriClient::new(versori_operator::versori::ClientConfig::new(
            self.emulator.base_url.parse().expect("emulator URL"),
            self.emulator.organisation.clone(),
            self.emulator.token.clone().into(),
        ))
        .expect("a Versori client for the emulator")
    }
}

fn items<'a>(state: &'a Value, key: &str) -> &'a [Value] {
    state[key].as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn by_name<'a>(state: &'a Value, key: &str, name: &str) -> Vec<&'a Value> {
    items(state, key)
        .iter()
        .filter(|o| o["name"] == name)
        .collect()
}

fn writes(state: &Value) -> u64 {
    ["POST", "PUT", "DELETE", "PATCH"]
        .iter()
        .map(|m| state["requestsByMethod"][m].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test]
async fn the_seed_flow_as_resources() {
    let world = World::start("seed").await;
    world.apply_examples();
    world.wait_examples_ready().await;

    let state = world.state().await;
    let systems: Api<System> = world.api();
    let shopify = systems.get("shopify").await.expect("System shopify");
    let shopify_id = shopify
        .status
        .as_ref()
        .and_then(|s| s.id.clone())
        .expect("shopify has an ID in status");
    let example = systems
        .get("example-oauth2")
        .await
        .expect("System example-oauth2");
    let example_id = example
        .status
        .as_ref()
        .and_then(|s| s.id.clone())
        .expect("example-oauth2 has an ID");

    // Both systems, with their auth schemes, in Versori.
    let [versori_shopify] = by_name(&state, "systems", "shopify")[..] else {
        panic!("one shopify system")
    };
    assert_eq!(versori_shopify["id"], shopify_id.as_str());
    assert_eq!(versori_shopify["domain"], "shopify");
    assert_eq!(
        versori_shopify["templateBaseUrl"],
        "https://test.myshopify.com/"
    );
    let scheme = &versori_shopify["authSchemeConfigs"][0];
    assert_eq!(scheme["type"], "oauth2");
    assert_eq!(scheme["oauth2"]["id"], "oauth2-code");
    assert_eq!(scheme["oauth2"]["grant"]["type"], "authorizationCode");
    assert_eq!(
        scheme["oauth2"]["grant"]["authorizationCode"]["clientId"],
        "3wtaAbGizqC3BjmdKTPa0VyK5URuyUUO"
    );
    assert_eq!(
        scheme["oauth2"]["grant"]["authorizationCode"]["clientSecret"],
        "example-shopify-client-secret"
    );
    let [versori_example] = by_name(&state, "systems", "example-oauth2")[..] else {
        panic!("one example-oauth2 system")
    };
    let scheme_ids: Vec<&str> = versori_example["authSchemeConfigs"]
        .as_array()
        .expect("auth schemes")
        .iter()
        .map(|s| {
            s["oauth2"]["id"]
                .as_str()
                .or(s["apiKey"]["id"].as_str())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(scheme_ids, ["oauth2-client", "api-key"]);
    assert_eq!(
        example
            .status
            .as_ref()
            .map(|s| s.auth_scheme_ids.clone())
            .unwrap_or_default(),
        ["oauth2-client", "api-key"]
    );

    // Both linked to production, with template IDs in status.
    let project_systems: Api<ProjectSystem> = world.api();
    for (name, system_id, scheme) in [
        ("shopify", &shopify_id, "oauth2-code"),
        ("example-oauth2", &example_id, "api-key"),
    ] {
        let ps = project_systems.get(name).await.expect("ProjectSystem");
        let status = ps.status.expect("status");
        let template_id = status
            .connection_template_id
            .expect("template ID in status");
        let [template] = by_name(&state, "connectionTemplates", name)[..] else {
            panic!("one template {name}")
        };
        assert_eq!(template["id"], template_id.as_str());
        assert_eq!(template["systemId"], system_id.as_str());
        assert_eq!(template["environmentId"], PRODUCTION);
        assert_eq!(template["projectId"], PROJECT);
        assert_eq!(template["authSchemeConfigIds"], json!([scheme]));
        assert_eq!(status.environment_id.as_deref(), Some(PRODUCTION));
    }

    // `kubectl get projectsystems` shows the CLI's columns with the right values.
    let table = world.kubectl(&["get", "projectsystems"]);
    let header = table.lines().next().unwrap_or_default();
    for column in [
        "TEMPLATE NAME",
        "ID",
        "CONNECTIONTEMPLATEID",
        "TEMPLATEBASEURL",
        "DYNAMIC",
        "AUTHSCHEMECONFIGS.TYPE",
        "READY",
        "AGE",
    ] {
        assert!(
            header.contains(column),
            "column {column} missing from:\n{table}"
        );
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("example-oauth2"))
        .expect("example-oauth2 row");
    for value in [
        example_id.as_str(),
        "https://api.example.com/",
        "false",
        "api-key",
        "True",
    ] {
        assert!(row.contains(value), "{value} missing from row: {row}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("shopify"))
        .expect("shopify row");
    assert!(
        row.contains("oauth2") && row.contains(shopify_id.as_str()),
        "shopify row: {row}"
    );

    // demo-api-key: created with its key as a `string` credential, ID in status.
    let connections: Api<Connection> = world.api();
    let demo = connections
        .get("demo-api-key")
        .await
        .expect("Connection demo-api-key");
    let demo_id = demo
        .status
        .as_ref()
        .and_then(|s| s.id.clone())
        .expect("connection ID in status");
    let [connection] = by_name(&state, "connections", "demo-api-key")[..] else {
        panic!("one demo-api-key connection")
    };
    assert_eq!(connection["id"], demo_id.as_str());
    let credential = &connection["credentials"][0]["credential"];
    assert_eq!(credential["type"], "string");
    assert_eq!(
        credential["data"]["string"]["value"],
        "example-demo-api-key"
    );
    assert_eq!(
        connection["credentials"][0]["authSchemeConfig"]["type"],
        "api-key"
    );

    // A Connection without its key is not created and says what the CLI says.
    world.apply(
        "apiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: { name: no-key }\nspec:\n  projectSystemRef: { name: example-oauth2 }\n",
    );
    let message = world
        .wait_reason(
            "connection",
            "no-key",
            "MissingCredential",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(message, "api-key is required for this connection template");
    // And one for the authorization-code template waits for a person.
    world.apply(
        "apiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: { name: shopify-store }\nspec:\n  projectSystemRef: { name: shopify }\n",
    );
    let message = world
        .wait_reason(
            "connection",
            "shopify-store",
            "AuthorizationRequired",
            Duration::from_secs(30),
        )
        .await;
    assert!(message.contains("authorization code"), "{message}");
    let state = world.state().await;
    assert!(by_name(&state, "connections", "no-key").is_empty());
    assert!(by_name(&state, "connections", "shopify-store").is_empty());
    let events = world.kubectl(&["get", "events", "-o", "json"]);
    assert!(
        events.contains("api-key is required for this connection template"),
        "no event with the CLI's message"
    );
}

#[tokio::test]
async fn changing_auth_scheme_config_id_switches_the_template() {
    let world = World::start("scheme").await;
    world.apply_examples();
    world.wait_examples_ready().await;
    let project_systems: Api<ProjectSystem> = world.api();
    project_systems
        .patch(
            "example-oauth2",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "authSchemeConfigId": "oauth2-client" } })),
        )
        .await
        .expect("patch authSchemeConfigId");
    world
        .wait(
            "the template to use oauth2-client",
            Duration::from_secs(30),
            || async {
                let state = world.state().await;
                let template = by_name(&state, "connectionTemplates", "example-oauth2")
                    .first()
                    .copied()
                    .cloned()?;
                (template["authSchemeConfigIds"] == json!(["oauth2-client"])).then_some(())
            },
        )
        .await;
    world
        .wait(
            "status to show the oauth2 scheme",
            Duration::from_secs(30),
            || async {
                let ps = project_systems.get("example-oauth2").await.ok()?;
                let status = ps.status?;
                (status.auth_scheme_type.as_deref() == Some("oauth2")
                    && status.oauth2_grant_type.as_deref() == Some("clientCredentials"))
                .then_some(())
            },
        )
        .await;
    // The API-key connection no longer fits the template: it says what it needs now.
    let message = world
        .wait_reason(
            "connection",
            "demo-api-key",
            "MissingCredential",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(
        message,
        "client-id and client-secret are required for this connection template"
    );
}

#[tokio::test]
async fn rotating_a_secret_updates_the_connection_within_5_seconds() {
    let world = World::start("rotate").await;
    world.apply_examples();
    world.wait_examples_ready().await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = world.api();
    let started = Instant::now();
    secrets
        .patch(
            "demo-api-key",
            &PatchParams::default(),
            &Patch::Merge(json!({ "stringData": { "apiKey": "rotated-demo-api-key" } })),
        )
        .await
        .expect("rotate the Secret");
    world
        .wait("the new key in Versori", Duration::from_secs(5), || async {
            let state = world.state().await;
            let connection = by_name(&state, "connections", "demo-api-key")
                .first()
                .copied()
                .cloned()?;
            (connection["credentials"][0]["credential"]["data"]["string"]["value"]
                == "rotated-demo-api-key")
                .then_some(())
        })
        .await;
    eprintln!("rotation reached Versori after {:?}", started.elapsed());
}

#[tokio::test]
async fn drift_made_behind_the_operators_back_is_restored() {
    let world = World::start_with("drift", |o| o.resync = "2s".into()).await;
    world.apply_examples();
    world.wait_examples_ready().await;
    let state = world.state().await;
    let system_id = by_name(&state, "systems", "example-oauth2")[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let template_id = by_name(&state, "connectionTemplates", "example-oauth2")[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let connection_id = by_name(&state, "connections", "demo-api-key")[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let versori = world.versori();
    use versori_operator::versori::models as api;
    versori
        .update_system(
            &system_id,
            &api::UpdateSystem {
                domain: Some("tampered.example".into()),
                ..Default::default()
            },
        )
        .await
        .expect("tamper with the system");
    versori
        .delete_auth_scheme(&system_id, "oauth2-client")
        .await
        .expect("remove an auth scheme");
    versori
        .update_connection_template(
            PROJECT,
            &template_id,
            &api::UpdateConnectionTemplate {
                name: Some("tampered".into()),
                dynamic: Some(true),
                auth_scheme_config_ids: None,
            },
        )
        .await
        .expect("tamper with the template");
    let connection = versori
        .get_connection(&connection_id)
        .await
        .expect("connection");
    versori
        .update_connection(
            &connection_id,
            &api::ConnectionUpdate {
                name: "tampered-connection".into(),
                credentials: connection.credentials,
                base_url: "https://elsewhere.example/".into(),
            },
        )
        .await
        .expect("tamper with the connection");
    world
        .wait(
            "Versori to be restored",
            Duration::from_secs(30),
            || async {
                let state = world.state().await;
                let system = items(&state, "systems")
                    .iter()
                    .find(|s| s["id"] == system_id.as_str())?
                    .clone();
                let template = items(&state, "connectionTemplates")
                    .iter()
                    .find(|t| t["id"] == template_id.as_str())?
                    .clone();
                let connection = items(&state, "connections")
                    .iter()
                    .find(|c| c["id"] == connection_id.as_str())?
                    .clone();
                (system["domain"] == "example.com"
                    && system["authSchemeConfigs"].as_array().map(Vec::len) == Some(2)
                    && template["name"] == "example-oauth2"
                    && template["dynamic"] == false
                    && connection["name"] == "demo-api-key"
                    && connection["baseUrl"]
                        .as_str()
                        .unwrap_or_default()
                        .is_empty())
                .then_some(())
            },
        )
        .await;
    // Restored in place: still one of each.
    let state = world.state().await;
    assert_eq!(items(&state, "systems").len(), 2);
    assert_eq!(items(&state, "connectionTemplates").len(), 2);
    assert_eq!(items(&state, "connections").len(), 1);
}

#[tokio::test]
async fn deleting_everything_empties_versori_and_orphan_leaves_the_object() {
    let world = World::start("delete").await;
    world.apply_examples();
    world.apply(
        "apiVersion: versori.com/v1alpha1\nkind: System\nmetadata: { name: kept }\nspec:\n  domain: kept.example\n  templateBaseUrl: https://kept.example/\n  deletionPolicy: Orphan\n",
    );
    world.wait_examples_ready().await;
    world
        .wait_ready("system", "kept", Duration::from_secs(30))
        .await;
    let state = world.state().await;
    assert_eq!(items(&state, "systems").len(), 3);

    // Everything at once, as `kubectl delete -f` or an Argo CD prune does: the operator deletes in
    // dependency order (the API refuses any other).
    world.kubectl(&["delete", "-f", &examples_dir(), "--wait=false"]);
    world.kubectl(&["delete", "system", "kept", "--wait=false"]);
    world
        .wait(
            "Versori to be empty but for the orphan",
            Duration::from_secs(90),
            || async {
                let state = world.state().await;
                (items(&state, "connections").is_empty()
                    && items(&state, "connectionTemplates").is_empty()
                    && items(&state, "systems").len() == 1)
                    .then_some(state)
            },
        )
        .await;
    let state = world.state().await;
    assert_eq!(items(&state, "systems")[0]["name"], "kept");
    // The resources are gone too (their finalizers were removed).
    for kind in ["systems", "projectsystems", "connections"] {
        world
            .wait(
                &format!("no {kind} left"),
                Duration::from_secs(30),
                || async {
                    let out =
                        world
                            .cluster
                            .kubectl(&["-n", &world.namespace, "get", kind, "-o", "name"]);
                    (out.status.success() && out.stdout.is_empty()).then_some(())
                },
            )
            .await;
    }
    // The emulator refuses to delete a system that a template uses and a template that has
    // connections (409), so an empty Versori proves the dependency order; the refusals the
    // operator met on the way were retried, not fatal.
}

#[tokio::test]
async fn adoption_by_id_and_by_name_after_a_lost_response() {
    let world = World::start("adopt").await;
    use versori_operator::versori::models as api;
    // By ID: the System names an existing Versori system.
    let existing = world
        .versori()
        .create_system(&api::SystemCreate {
            name: "legacy".into(),
            domain: "legacy.example".into(),
            template_base_url: "https://legacy.example/".into(),
            auth_scheme_configs: vec![],
            labels: None,
        })
        .await
        .expect("a system made outside the cluster");
    world.apply(&format!(
        "apiVersion: versori.com/v1alpha1\nkind: System\nmetadata: {{ name: legacy }}\nspec:\n  domain: legacy.example\n  templateBaseUrl: https://legacy.example/\n  systemId: {}\n",
        existing.id
    ));
    world
        .wait_ready("system", "legacy", Duration::from_secs(30))
        .await;
    let systems: Api<System> = world.api();
    let legacy = systems.get("legacy").await.expect("legacy");
    assert_eq!(legacy.status.and_then(|s| s.id), Some(existing.id.clone()));

    // Without an ID or its own intent marker, a same-named object is not taken over.
    world
        .versori()
        .create_system(&api::SystemCreate {
            name: "someone-elses".into(),
            domain: "x.example".into(),
            template_base_url: "https://x.example/".into(),
            auth_scheme_configs: vec![],
            labels: None,
        })
        .await
        .expect("a same-named system");
    world.apply("apiVersion: versori.com/v1alpha1\nkind: System\nmetadata: { name: someone-elses }\nspec:\n  domain: x.example\n  templateBaseUrl: https://x.example/\n");
    let message = world
        .wait_reason(
            "system",
            "someone-elses",
            "AlreadyExists",
            Duration::from_secs(30),
        )
        .await;
    assert!(message.contains("set spec.systemId"), "{message}");

    // By name after a create whose response was lost: the write is committed, the answer dropped.
    world
        .emulator
        .set_faults(json!({ "commitThenDropNext": 1, "routes": ["POST /o/{org}/systems", "POST /o/{org}/connections", "POST /o/{org}/projects/{project_id}/connection-templates"] }))
        .await;
    world.apply_examples();
    world.wait_examples_ready().await;
    world
        .emulator
        .set_faults(json!({ "commitThenDropNext": 2, "routes": ["POST /o/{org}/connections", "POST /o/{org}/projects/{project_id}/connection-templates"] }))
        .await;
    world.apply(
        "apiVersion: versori.com/v1alpha1\nkind: ProjectSystem\nmetadata: { name: shopify-staging }\nspec:\n  projectId: 01KKBR46SH7JES8AZ14EEAK0CX\n  environment: staging\n  systemRef: { name: example-oauth2 }\n  authSchemeConfigId: api-key\n---\napiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: { name: staging-key }\nspec:\n  projectSystemRef: { name: shopify-staging }\n  credentials: { apiKey: { secretKeyRef: { name: demo-api-key, key: apiKey } } }\n",
    );
    world
        .wait_ready("projectsystem", "shopify-staging", Duration::from_secs(60))
        .await;
    world
        .wait_ready("connection", "staging-key", Duration::from_secs(60))
        .await;
    let state = world.state().await;
    for (key, name) in [
        ("systems", "shopify"),
        ("systems", "example-oauth2"),
        ("systems", "legacy"),
        ("connectionTemplates", "shopify-staging"),
        ("connections", "demo-api-key"),
        ("connections", "staging-key"),
    ] {
        assert_eq!(
            by_name(&state, key, name).len(),
            1,
            "exactly one {key} named {name}"
        );
    }
    assert_eq!(
        state["faults"]["commitThenDropNext"], 0,
        "the faults fired: {}",
        state["faults"]
    );
}

#[tokio::test]
async fn killed_mid_create_and_restarted_makes_no_duplicate() {
    let mut world = World::start("crash").await;
    world
        .emulator
        .set_faults(json!({ "latencyMs": 400, "routes": ["POST /o/{org}/systems"] }))
        .await;
    let mut manifests = String::new();
    for i in 0..12 {
        manifests.push_str(&format!(
            "---\napiVersion: versori.com/v1alpha1\nkind: System\nmetadata: {{ name: s{i} }}\nspec:\n  domain: s{i}.example\n  templateBaseUrl: https://s{i}.example/\n"
        ));
    }
    world.apply(&manifests);
    // Kill it while creates are in flight (requests arrived, answers not yet sent).
    world
        .wait("creates in flight", Duration::from_secs(30), || async {
            let state = world.state().await;
            (state["requests"]["POST /o/{org}/systems"]
                .as_u64()
                .unwrap_or(0)
                >= 2)
                .then_some(())
        })
        .await;
    world.operator.kill();
    world.emulator.clear_faults().await;
    let options = OperatorOptions::new(&world.namespace);
    world.operator = Operator::start(world.cluster, &world.emulator, &options);
    for i in 0..12 {
        world
            .wait_ready("system", &format!("s{i}"), Duration::from_secs(60))
            .await;
    }
    let state = world.state().await;
    for i in 0..12 {
        assert_eq!(
            by_name(&state, "systems", &format!("s{i}")).len(),
            1,
            "one system s{i}"
        );
    }
}

#[tokio::test]
async fn everything_becomes_ready_through_5xx_and_429() {
    let world = World::start("faults").await;
    world
        .emulator
        .set_faults(json!({ "errorRate": 0.3, "rateLimitRate": 0.2, "retryAfterSeconds": 1 }))
        .await;
    world.apply_examples();
    world.wait_examples_ready().await;
    let state = world.state().await;
    assert_eq!(items(&state, "systems").len(), 2);
    assert_eq!(items(&state, "connectionTemplates").len(), 2);
    assert_eq!(items(&state, "connections").len(), 1);
}

#[tokio::test]
async fn resyncs_with_nothing_changed_make_no_writes() {
    let world = World::start_with("steady", |o| o.resync = "1s".into()).await;
    world.apply_examples();
    world.wait_examples_ready().await;
    // Let the last status writes settle, then count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    reqwest::Client::new()
        .post(world.emulator.url("/_emulator/reset-counters"))
        .send()
        .await
        .expect("reset counters");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let state = world.state().await;
    assert_eq!(
        writes(&state),
        0,
        "writes with nothing changed: {}",
        state["requests"]
    );
    let reads = state["requestsByMethod"]["GET"].as_u64().unwrap_or(0);
    assert!(reads >= 5, "the resync read Versori ({reads} reads in 5 s)");
    eprintln!("steady state over 5 s: {reads} reads, 0 writes, for 5 objects");
}

#[tokio::test]
async fn canary_secret_values_never_leave_the_versori_payloads() {
    let world = World::start("canary").await;
    let canary_key = format!("CANARY-KEY-{:016x}", rand::random::<u64>());
    let canary_secret = format!("CANARY-SECRET-{:016x}", rand::random::<u64>());
    world.apply_examples();
    world.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: demo-api-key }}\nstringData: {{ apiKey: {canary_key} }}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{ name: shopify-oauth }}\nstringData: {{ clientSecret: {canary_secret} }}\n"
    ));
    // A failure too: a Connection whose Secret lacks the key.
    world.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: partial }}\nstringData: {{ other: {canary_key} }}\n---\napiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: {{ name: partial }}\nspec:\n  projectSystemRef: {{ name: example-oauth2 }}\n  credentials: {{ apiKey: {{ secretKeyRef: {{ name: partial, key: apiKey }} }} }}\n"
    ));
    world.wait_examples_ready().await;
    let message = world
        .wait_reason(
            "connection",
            "partial",
            "SecretNotFound",
            Duration::from_secs(30),
        )
        .await;
    assert!(
        message.contains("partial") && message.contains("apiKey"),
        "names the Secret and key: {message}"
    );
    world
        .wait(
            "the canaries to reach Versori",
            Duration::from_secs(30),
            || async {
                let state = world.state().await.to_string();
                (state.contains(&canary_key) && state.contains(&canary_secret)).then_some(())
            },
        )
        .await;
    let status = world.kubectl(&["get", "systems,projectsystems,connections", "-o", "yaml"]);
    let events = world.kubectl(&["get", "events", "-o", "yaml"]);
    let logs = world.operator.logs();
    for (what, text) in [
        ("status", &status),
        ("events", &events),
        ("operator logs", &logs),
    ] {
        assert!(!text.is_empty(), "{what} is empty");
        for canary in [&canary_key, &canary_secret] {
            assert!(
                !text.contains(canary.as_str()),
                "a canary secret value appears in the {what}"
            );
        }
    }
}

#[tokio::test]
async fn a_missing_secret_is_a_condition_and_recovers_when_it_appears() {
    let mut world = World::start("missing").await;
    // Everything but the Connection's Secret, which comes last.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let secrets_file = examples.join("00-secrets.yaml");
    world.kubectl(&["apply", "-f", &secrets_file.to_string_lossy()]);
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = world.api();
    secrets
        .delete("demo-api-key", &DeleteParams::default())
        .await
        .expect("delete the Secret");
    for file in [
        "10-system-shopify.yaml",
        "11-system-example-oauth2.yaml",
        "20-projectsystem-shopify.yaml",
        "21-projectsystem-example-oauth2.yaml",
        "30-connection-demo-api-key.yaml",
    ] {
        world.kubectl(&["apply", "-f", &examples.join(file).to_string_lossy()]);
    }
    let message = world
        .wait_reason(
            "connection",
            "demo-api-key",
            "SecretNotFound",
            Duration::from_secs(60),
        )
        .await;
    assert!(message.contains("demo-api-key"), "{message}");
    let state = world.state().await;
    assert!(by_name(&state, "connections", "demo-api-key").is_empty());
    world.apply("apiVersion: v1\nkind: Secret\nmetadata: { name: demo-api-key }\nstringData: { apiKey: late-key }\n");
    world
        .wait_ready("connection", "demo-api-key", Duration::from_secs(10))
        .await;
    assert!(world.operator.logs().contains("\"level\""), "logs are JSON");
    assert!(
        world.operator.is_running(),
        "the operator keeps running through a missing Secret"
    );
    let connections: Api<Connection> = world.api();
    let demo = connections.get("demo-api-key").await.expect("connection");
    assert!(
        demo.finalizers()
            .iter()
            .any(|f| f == "versori.com/finalizer")
    );
}

#[tokio::test]
async fn two_replicas_one_leads_and_the_other_takes_over() {
    let cluster = common::cluster().await;
    let namespace = cluster.namespace("leader").await;
    let emulator = Emulator::start(&seed());
    let replica = |identity: &str| {
        let mut options = OperatorOptions::new(&namespace);
        options.leader_election = true;
        options.identity = identity.to_owned();
        Operator::start(cluster, &emulator, &options)
    };
    let mut first = replica("replica-a");
    // Let the first one take the Lease before the second starts, so the test knows who leads.
    let holder = |cluster: &TestCluster| {
        let out = cluster.kubectl(&[
            "-n",
            &namespace,
            "get",
            "lease",
            "versori-operator",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while holder(cluster) != "replica-a" {
        assert!(
            Instant::now() < deadline,
            "replica-a never took the Lease:\n{}",
            first.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut second = replica("replica-b");
    common::assert_success(&cluster.kubectl(&["apply", "-n", &namespace, "-f", &examples_dir()]));
    let client = cluster.client().await;
    let systems: Api<System> = Api::namespaced(client.clone(), &namespace);
    let ready = |s: &System| {
        s.status.as_ref().is_some_and(|st| {
            st.common
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = systems
            .list(&Default::default())
            .await
            .expect("list systems");
        if list.items.len() == 2 && list.items.iter().all(ready) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "systems never became Ready:\n{}",
            first.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(holder(cluster), "replica-a");
    assert!(first.logs().contains("acquired leadership"));
    assert!(
        !second.logs().contains("acquired leadership"),
        "only one replica leads"
    );
    assert!(
        !second.logs().contains("\"kind\":\"System\""),
        "the standby reconciled nothing"
    );

    // The leader dies; the standby takes over within 20 s and reconciles.
    let killed = Instant::now();
    first.kill();
    let deadline = killed + Duration::from_secs(20);
    while holder(cluster) != "replica-b" {
        assert!(
            Instant::now() < deadline,
            "replica-b did not take over within 20 s:\n{}",
            second.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let takeover = killed.elapsed();
    eprintln!("replica-b took over {takeover:?} after replica-a was killed");
    common::assert_success(&cluster.kubectl_apply_stdin(
        "apiVersion: versori.com/v1alpha1\nkind: System\nmetadata: { name: after-failover }\nspec:\n  domain: after.example\n  templateBaseUrl: https://after.example/\n",
        &["-n", &namespace],
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if systems
            .get("after-failover")
            .await
            .ok()
            .as_ref()
            .is_some_and(ready)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new leader did not reconcile:\n{}",
            second.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(second.is_running());
    let state = emulator.state().await;
    assert_eq!(by_name(&state, "systems", "after-failover").len(), 1);
}

#[tokio::test]
async fn metrics_and_probes_answer_after_a_reconcile() {
    let world = World::start("metrics").await;
    world.apply_examples();
    world.wait_examples_ready().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", world.operator.metrics_addr);
    for probe in ["/healthz", "/readyz"] {
        let response = http
            .get(format!("{base}{probe}"))
            .send()
            .await
            .expect(probe);
        assert!(
            response.status().is_success(),
            "{probe}: {}",
            response.status()
        );
    }
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("/metrics body");
    for series in [
        "versori_operator_reconciliations_total{kind=\"System\"}",
        "versori_operator_reconciliations_total{kind=\"ProjectSystem\"}",
        "versori_operator_reconciliations_total{kind=\"Connection\"}",
        "versori_operator_reconcile_duration_seconds_count{kind=\"Connection\"}",
        "versori_operator_reconciles_in_flight{kind=\"Connection\"}",
        "versori_api_requests_total{operation=\"create_system\",method=\"POST\",status=\"201\"}",
        "versori_api_requests_total{operation=\"create_connection\",method=\"POST\",status=\"201\"}",
        "versori_api_request_duration_seconds_count{operation=\"list_systems\"}",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from /metrics:\n{metrics}"
        );
    }
    // A failure is counted with its reason.
    world.apply(
        "apiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: { name: no-key }\nspec:\n  projectSystemRef: { name: example-oauth2 }\n",
    );
    world
        .wait_reason(
            "connection",
            "no-key",
            "MissingCredential",
            Duration::from_secs(30),
        )
        .await;
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("body");
    assert!(
        metrics.contains("versori_operator_reconcile_errors_total{kind=\"Connection\",reason=\"MissingCredential\"}"),
        "the error is counted:\n{metrics}"
    );
}

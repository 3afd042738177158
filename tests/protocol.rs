//! The create protocol under persistent faults and two writers, against the real apiserver and
//! the emulator: a create that keeps failing backs off (and honours `Retry-After`), a passing
//! read failure shows in `Synced` while `Ready` holds, a stranger's object is never adopted,
//! and two operators without leader election make no duplicates.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::operator::{Operator, OperatorOptions};
use common::{Emulator, TestCluster};
use serde_json::{Value, json};

const PROJECT: &str = "01KKBR46SH7JES8AZ14EEAK0CX";

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
    operators: Vec<Operator>,
}

impl World {
    async fn start(prefix: &str) -> World {
        let cluster = common::cluster().await;
        let namespace = cluster.namespace(prefix).await;
        let emulator = Emulator::start(&seed());
        let operator = Operator::start(cluster, &emulator, &OperatorOptions::new(&namespace));
        World {
            cluster,
            namespace,
            emulator,
            operators: vec![operator],
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

    /// The condition `type_` of `kind/name` as (status, reason, message).
    fn condition(&self, kind: &str, name: &str, type_: &str) -> Option<(String, String, String)> {
        let output =
            self.cluster
                .kubectl(&["-n", &self.namespace, "get", kind, name, "-o", "json"]);
        if !output.status.success() {
            return None;
        }
        let object: Value = serde_json::from_slice(&output.stdout).ok()?;
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
                let logs: Vec<String> = self.operators.iter().map(Operator::logs).collect();
                let logs = logs.join("\n");
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

    async fn wait_ready(&self, kind: &str, name: &str, timeout: Duration) {
        self.wait(&format!("{kind}/{name} to be Ready"), timeout, || {
            self.condition(kind, name, "Ready")
                .filter(|(status, _, _)| status == "True")
        })
        .await;
    }

    async fn requests(&self, route: &str) -> u64 {
        self.emulator.state().await["requests"][route]
            .as_u64()
            .unwrap_or(0)
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

fn system(name: &str) -> String {
    format!(
        "---\napiVersion: versori.com/v1alpha1\nkind: System\nmetadata: {{ name: {name} }}\nspec:\n  domain: {name}.example\n  templateBaseUrl: https://{name}.example/\n"
    )
}

const POST_SYSTEMS: &str = "POST /o/{org}/systems";

#[tokio::test]
async fn a_create_answered_503_for_a_minute_backs_off_and_recovers() {
    let world = World::start("persistent-503").await;
    world
        .emulator
        .set_faults(json!({ "errorRate": 1.0, "routes": [POST_SYSTEMS] }))
        .await;
    world.apply(&system("down"));
    world
        .wait("the first POST", Duration::from_secs(20), || {
            world
                .condition("system", "down", "Synced")
                .filter(|(_, reason, _)| reason == "VersoriAPIError")
        })
        .await;
    let started = Instant::now();
    let at_start = world.requests(POST_SYSTEMS).await;
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(started.elapsed())).await;
    let posts = world.requests(POST_SYSTEMS).await;
    let ready = world.condition("system", "down", "Ready");
    eprintln!(
        "persistent 503: {posts} POSTs in the first minute ({at_start} at its start); Ready {ready:?}"
    );
    assert!(
        posts <= 8,
        "{posts} POSTs in a minute of 503s: the create does not back off"
    );
    assert!(
        posts >= 4,
        "{posts} POSTs in a minute: the create is not retried"
    );
    assert!(
        ready
            .as_ref()
            .is_some_and(|(s, r, _)| s == "False" && r == "Creating"),
        "Ready while the create fails: {ready:?}"
    );
    world.emulator.clear_faults().await;
    // The backoff has grown to about 32-64 s by now.
    world
        .wait_ready("system", "down", Duration::from_secs(90))
        .await;
    let state = world.emulator.state().await;
    let systems: Vec<&Value> = state["systems"]
        .as_array()
        .map(|a| a.iter().filter(|s| s["name"] == "down").collect())
        .unwrap_or_default();
    assert_eq!(systems.len(), 1, "one system after recovery");
}

#[tokio::test]
async fn a_create_answered_429_waits_for_retry_after() {
    let world = World::start("persistent-429").await;
    world
        .emulator
        .set_faults(
            json!({ "rateLimitRate": 1.0, "retryAfterSeconds": 20, "routes": [POST_SYSTEMS] }),
        )
        .await;
    let started = Instant::now();
    world.apply(&system("limited"));
    world
        .wait("the first POST", Duration::from_secs(20), || {
            world
                .condition("system", "limited", "Synced")
                .filter(|(_, reason, _)| reason == "VersoriRateLimited")
        })
        .await;
    tokio::time::sleep(Duration::from_secs(45).saturating_sub(started.elapsed())).await;
    let posts = world.requests(POST_SYSTEMS).await;
    eprintln!("persistent 429 with Retry-After 20: {posts} POSTs in 45 s");
    assert!(posts <= 3, "{posts} POSTs in 45 s with Retry-After: 20");
    assert!(
        posts >= 2,
        "{posts} POSTs in 45 s: the create is not retried"
    );
    world.emulator.clear_faults().await;
    world
        .wait_ready("system", "limited", Duration::from_secs(60))
        .await;
}

#[tokio::test]
async fn failing_reads_show_in_synced_while_ready_holds() {
    let world = World::start("failing-reads").await;
    world.apply(&system("steady"));
    world
        .wait_ready("system", "steady", Duration::from_secs(30))
        .await;
    world
        .emulator
        .set_faults(json!({ "errorRate": 1.0, "routes": ["GET /o/{org}/systems/{system_id}"] }))
        .await;
    let failing_since = Instant::now();
    world
        .wait("Synced=False", Duration::from_secs(15), || {
            world
                .condition("system", "steady", "Synced")
                .filter(|(status, _, _)| status == "False")
        })
        .await;
    while failing_since.elapsed() < Duration::from_secs(20) {
        let ready = world.condition("system", "steady", "Ready");
        assert!(
            ready
                .as_ref()
                .is_some_and(|(s, r, _)| s == "True" && r == "Available"),
            "Ready while reads fail: {ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let synced = world.condition("system", "steady", "Synced");
    assert!(
        synced
            .as_ref()
            .is_some_and(|(s, r, _)| s == "False" && r == "VersoriAPIError"),
        "Synced after 20 s of failing reads: {synced:?}"
    );
    world.emulator.clear_faults().await;
    world
        .wait("Synced=True again", Duration::from_secs(90), || {
            world
                .condition("system", "steady", "Synced")
                .filter(|(status, reason, _)| status == "True" && reason == "ReconcileSuccess")
        })
        .await;
    let ready = world.condition("system", "steady", "Ready");
    assert!(ready.is_some_and(|(s, _, _)| s == "True"));
}

#[tokio::test]
async fn a_stranger_taking_the_name_of_a_vanished_object_is_never_adopted() {
    let world = World::start("stranger").await;
    world.apply(&system("mine"));
    world
        .wait_ready("system", "mine", Duration::from_secs(30))
        .await;
    let id = world.kubectl(&["get", "system", "mine", "-o", "jsonpath={.status.id}"]);
    let versori = world.versori();
    // Deleted behind the operator's back; someone else creates a system of the same name.
    versori.delete_system(&id).await.expect("delete the system");
    let stranger = versori
        .create_system(&versori_operator::versori::models::SystemCreate {
            name: "mine".into(),
            domain: "stranger.example".into(),
            template_base_url: "https://stranger.example/".into(),
            auth_scheme_configs: Vec::new(),
            labels: Default::default(),
        })
        .await
        .expect("the stranger's system");
    let (_, _, message) = world
        .wait("AlreadyExists", Duration::from_secs(30), || {
            world
                .condition("system", "mine", "Ready")
                .filter(|(_, reason, _)| reason == "AlreadyExists")
        })
        .await;
    assert!(
        message.contains(&stranger.id),
        "the message names the stranger's ID: {message}"
    );
    // A few resyncs later, the stranger's object is as the stranger left it.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let seen = versori
        .get_system(&stranger.id)
        .await
        .expect("the stranger's system");
    assert_eq!(seen.domain, "stranger.example");
    assert_eq!(seen.template_base_url, "https://stranger.example/");
    // Deleting the resource leaves the stranger's system alone.
    world.kubectl(&["delete", "system", "mine", "--wait=true", "--timeout=30s"]);
    let seen = versori.get_system(&stranger.id).await;
    assert!(seen.is_ok(), "the stranger's system survives: {seen:?}");
    let state = world.emulator.state().await;
    let named: Vec<&Value> = state["systems"]
        .as_array()
        .map(|a| a.iter().filter(|s| s["name"] == "mine").collect())
        .unwrap_or_default();
    assert_eq!(named.len(), 1, "only the stranger's system is named mine");
}

#[tokio::test]
async fn two_operators_without_leader_election_make_no_duplicates() {
    let mut world = World::start("two-writers").await;
    let mut second = OperatorOptions::new(&world.namespace);
    second.identity = "second-operator".into();
    world.operators[0].terminate(Duration::from_secs(5));
    let mut first = OperatorOptions::new(&world.namespace);
    first.identity = "first-operator".into();
    world.operators = vec![
        Operator::start(world.cluster, &world.emulator, &first),
        Operator::start(world.cluster, &world.emulator, &second),
    ];
    // Slow creates widen the window in which both see an object with no ID.
    world
        .emulator
        .set_faults(json!({ "latencyMs": 150, "routes": [
            POST_SYSTEMS,
            "POST /o/{org}/projects/{project_id}/connection-templates",
            "POST /o/{org}/connections"
        ] }))
        .await;
    let mut manifests = String::new();
    for i in 0..20 {
        manifests.push_str(&system(&format!("sys{i}")));
        manifests.push_str(&format!(
            "---\napiVersion: versori.com/v1alpha1\nkind: ProjectSystem\nmetadata: {{ name: link{i} }}\nspec:\n  projectId: {PROJECT}\n  environment: production\n  systemRef: {{ name: sys{i} }}\n"
        ));
    }
    for i in 0..10 {
        manifests.push_str(&format!(
            "---\napiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: {{ name: conn{i} }}\nspec:\n  projectSystemRef: {{ name: link{i} }}\n  credentials: {{ bypass: true }}\n"
        ));
    }
    world.apply(&manifests);
    let started = Instant::now();
    for i in 0..20 {
        world
            .wait_ready("system", &format!("sys{i}"), Duration::from_secs(120))
            .await;
        world
            .wait_ready(
                "projectsystem",
                &format!("link{i}"),
                Duration::from_secs(120),
            )
            .await;
    }
    for i in 0..10 {
        world
            .wait_ready("connection", &format!("conn{i}"), Duration::from_secs(120))
            .await;
    }
    eprintln!("two operators: 50 objects Ready in {:?}", started.elapsed());
    let state = world.emulator.state().await;
    let count = |key: &str, name: &str| {
        state[key]
            .as_array()
            .map(|a| a.iter().filter(|o| o["name"] == name).count())
            .unwrap_or(0)
    };
    let mut duplicates = Vec::new();
    for i in 0..20 {
        for (key, name) in [
            ("systems", format!("sys{i}")),
            ("connectionTemplates", format!("link{i}")),
        ] {
            if count(key, &name) != 1 {
                duplicates.push(format!("{key}/{name}: {}", count(key, &name)));
            }
        }
    }
    for i in 0..10 {
        let name = format!("conn{i}");
        if count("connections", &name) != 1 {
            duplicates.push(format!(
                "connections/{name}: {}",
                count("connections", &name)
            ));
        }
    }
    assert!(
        duplicates.is_empty(),
        "not exactly one Versori object: {duplicates:?}"
    );
    for operator in &mut world.operators {
        assert!(operator.is_running(), "both operators keep running");
    }
}

#[tokio::test]
async fn two_operators_with_disjoint_label_selectors_split_the_objects() {
    let mut world = World::start("shards").await;
    world.operators[0].terminate(Duration::from_secs(5));
    let shard = |name: &str, selector: &str| {
        let mut options = OperatorOptions::new(&world.namespace);
        options.identity = format!("shard-{name}");
        options
            .env
            .push(("WATCH_LABEL_SELECTOR".into(), selector.into()));
        options
    };
    world.operators = vec![
        Operator::start(
            world.cluster,
            &world.emulator,
            &shard("a", "versori.com/shard=a"),
        ),
        Operator::start(
            world.cluster,
            &world.emulator,
            &shard("b", "versori.com/shard=b"),
        ),
    ];
    // 100 objects: 20 shards of System, ProjectSystem and three Connections, alternately a and b.
    let mut manifests = String::new();
    for i in 0..20 {
        let s = if i % 2 == 0 { "a" } else { "b" };
        let labels = format!("labels: {{ versori.com/shard: {s} }}");
        manifests.push_str(&format!(
            "---\napiVersion: versori.com/v1alpha1\nkind: System\nmetadata: {{ name: sys{i}, {labels} }}\nspec:\n  domain: sys{i}.example\n  templateBaseUrl: https://sys{i}.example/\n---\napiVersion: versori.com/v1alpha1\nkind: ProjectSystem\nmetadata: {{ name: link{i}, {labels} }}\nspec:\n  projectId: {PROJECT}\n  environment: production\n  systemRef: {{ name: sys{i} }}\n"
        ));
        for c in 0..3 {
            manifests.push_str(&format!(
                "---\napiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: {{ name: conn{i}-{c}, {labels} }}\nspec:\n  projectSystemRef: {{ name: link{i} }}\n  credentials: {{ bypass: true }}\n"
            ));
        }
    }
    // One Connection of shard b names a ProjectSystem of shard a: a condition says so.
    manifests.push_str(
        "---\napiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: { name: across, labels: { versori.com/shard: b } }\nspec:\n  projectSystemRef: { name: link0 }\n  credentials: { bypass: true }\n",
    );
    world.apply(&manifests);
    for i in 0..20 {
        world
            .wait_ready("system", &format!("sys{i}"), Duration::from_secs(120))
            .await;
        world
            .wait_ready(
                "projectsystem",
                &format!("link{i}"),
                Duration::from_secs(120),
            )
            .await;
        for c in 0..3 {
            world
                .wait_ready(
                    "connection",
                    &format!("conn{i}-{c}"),
                    Duration::from_secs(120),
                )
                .await;
        }
    }
    let (_, _, message) = world
        .wait(
            "the cross-shard Connection's condition",
            Duration::from_secs(30),
            || {
                world
                    .condition("connection", "across", "Ready")
                    .filter(|(_, reason, _)| reason == "DependencyOutsideShard")
            },
        )
        .await;
    assert!(
        message.contains("link0") && message.contains("versori.com/shard=b"),
        "{message}"
    );
    // Each object was created by its own shard's operator, and only by it: the create attempt
    // annotation names the instance (the operator's pod name) that claimed it, and it stays as
    // the record of the attempt once status holds the ID. And only its own operator ever
    // reconciled it: its Versori calls are logged in a span naming the object, in that
    // operator's log and never in the other's.
    let logs: Vec<String> = world.operators.iter().map(Operator::logs).collect();
    for i in 0..20 {
        let own = if i % 2 == 0 { "shard-a" } else { "shard-b" };
        let (own_log, other_log) = if i % 2 == 0 {
            (&logs[0], &logs[1])
        } else {
            (&logs[1], &logs[0])
        };
        for (kind, name) in [
            ("system".to_owned(), format!("sys{i}")),
            ("projectsystem".to_owned(), format!("link{i}")),
        ]
        .into_iter()
        .chain((0..3).map(|c| ("connection".to_owned(), format!("conn{i}-{c}"))))
        {
            let span_kind = match kind.as_str() {
                "system" => "System",
                "projectsystem" => "ProjectSystem",
                _ => "Connection",
            };
            let span = format!(
                r#""kind":"{span_kind}","namespace":"{}","object":"{name}""#,
                world.namespace
            );
            assert!(own_log.contains(&span), "{own} reconciled {kind} {name}");
            assert!(
                !other_log.contains(&span),
                "{kind} {name} was reconciled by the other shard's operator too"
            );
            let object: Value =
                serde_json::from_str(&world.kubectl(&["get", &kind, &name, "-o", "json"]))
                    .expect("the object as JSON");
            let attempt: Value = object["metadata"]["annotations"]["versori.com/create-attempt"]
                .as_str()
                .and_then(|a| serde_json::from_str(a).ok())
                .unwrap_or_default();
            assert_eq!(
                attempt["instance"], own,
                "{kind} {name} created by {own}: {attempt}"
            );
        }
    }
    // Each System's create came from its own shard's operator: one Versori object each.
    let state = world.emulator.state().await;
    for i in 0..20 {
        let count = state["systems"]
            .as_array()
            .map(|a| a.iter().filter(|o| o["name"] == format!("sys{i}")).count())
            .unwrap_or(0);
        assert_eq!(count, 1, "one system sys{i}");
    }
}

#[tokio::test]
async fn writes_never_land_on_a_same_named_resource_created_since() {
    use kube::api::{DeleteParams, PostParams};
    use versori_operator::controllers::Context;
    use versori_operator::controllers::reconciler::{KubeOps, Ops};
    use versori_operator::resources::System;

    let world = World::start("uid-preconditions").await;
    // No operator: the test plays a slow reconcile that still holds the old object.
    let mut operators = world.operators;
    for operator in &mut operators {
        operator.terminate(Duration::from_secs(5));
    }
    let client = world.cluster.client().await;
    let api: kube::Api<System> = kube::Api::namespaced(client.clone(), &world.namespace);
    let manifest: System = serde_yaml::from_str(
        "apiVersion: versori.com/v1alpha1\nkind: System\nmetadata: { name: reborn }\nspec:\n  domain: reborn.example\n  templateBaseUrl: https://reborn.example/\n",
    )
    .expect("a System");
    let old = api
        .create(&PostParams::default(), &manifest)
        .await
        .expect("create");
    api.delete("reborn", &DeleteParams::default())
        .await
        .expect("delete");
    let reborn = api
        .create(&PostParams::default(), &manifest)
        .await
        .expect("create again");
    assert_ne!(old.metadata.uid, reborn.metadata.uid);

    let versori = versori_operator::versori::VersoriClient::new(
        versori_operator::versori::ClientConfig::new(
            world.emulator.base_url.parse().expect("URL"),
            world.emulator.organisation.clone(),
            world.emulator.token.clone().into(),
        ),
    )
    .expect("client");
    let ctx = Context::new(
        client.clone(),
        versori,
        std::sync::Arc::new(versori_operator::metrics::Metrics::new()),
        Duration::from_secs(60),
        1,
        None,
    );
    let ops = KubeOps::<System>::new(&ctx, &world.namespace);
    let mut status = versori_operator::resources::SystemStatus {
        id: Some("01KKBR46SH7JES8AZ14EEAK0CX".into()),
        ..Default::default()
    };
    status.auth_scheme_ids = vec!["stale".into()];
    let refused = ops.write_status(&old, &status).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.is_write_conflict()),
        "a status write for the old UID is refused: {refused:?}"
    );
    let marker = ops
        .patch_metadata(
            &old,
            None,
            json!({ "annotations": { "versori.com/created": "x/y" } }),
        )
        .await;
    assert!(
        marker.as_ref().is_err_and(|e| e.is_write_conflict()),
        "a metadata patch for the old UID is refused: {marker:?}"
    );
    let now = api.get("reborn").await.expect("the new System");
    assert!(now.status.is_none(), "the new System's status is untouched");
    assert!(
        !now.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("versori.com/created"),
        "the new System's annotations are untouched"
    );
    // The same writes for the current UID go through.
    ops.write_status(&reborn, &status)
        .await
        .expect("status for the current UID");
    let now = api.get("reborn").await.expect("the new System");
    assert_eq!(now.status.and_then(|s| s.id), status.id);
}

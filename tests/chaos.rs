//! Failure tests: the operator, run as a process against the real apiserver from `tests/cluster`
//! and the emulator, is killed at random moments while it creates hundreds of objects, and runs
//! through every Versori fault at once. Both must end with everything Ready and exactly one
//! Versori object per resource.
//!
//! `make test` runs the short versions (a few tens of seconds each). `make chaos` runs them with
//! `CHAOS=long`: more objects, more kills, longer windows. `CHAOS_SEED=N` replays a run (the seed
//! drives the kill schedule and the names of the secret values; the emulator's own dice are not
//! seeded, so a replay is close, not identical).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::operator::{Operator, OperatorOptions};
use common::{Emulator, TestCluster};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use versori_operator::resources::{Connection, ProjectSystem, System};

const PROJECT: &str = "01KKBR46SH7JES8AZ14EEAK0CX";

/// `CHAOS=long`: the longer versions (`make chaos`).
fn long() -> bool {
    std::env::var("CHAOS").is_ok_and(|v| v == "long")
}

/// The run's seed: `CHAOS_SEED`, else a random one. Printed so a failure can be replayed.
fn chaos_seed(test: &str) -> u64 {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!(
        "{test}: chaos seed {seed} (replay with CHAOS_SEED={seed}), mode {}",
        if long() { "long" } else { "short" }
    );
    seed
}

fn seed_yaml() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/emulator/seed.yaml"),
    )
    .expect("read the examples' emulator seed")
}

/// The three kinds, as `kubectl` and the emulator's state name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    System,
    ProjectSystem,
    Connection,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::System, Kind::ProjectSystem, Kind::Connection];

    /// The key of this kind's objects in `/_emulator/state`.
    fn state_key(self) -> &'static str {
        match self {
            Kind::System => "systems",
            Kind::ProjectSystem => "connectionTemplates",
            Kind::Connection => "connections",
        }
    }
}

/// A generated set of resources: `systems` Systems with one api-key scheme, each linked to the
/// project's production environment `per_system` times, each template with `per_template`
/// Connections whose keys come from one Secret per Connection.
struct Fleet {
    systems: usize,
    per_system: usize,
    per_template: usize,
    /// Prefix of every secret value (a canary: it must never appear in logs).
    secret_prefix: String,
}

impl Fleet {
    fn system(i: usize) -> String {
        format!("sys-{i}")
    }

    fn project_system(i: usize, j: usize) -> String {
        format!("ps-{i}-{j}")
    }

    fn connection(i: usize, j: usize, k: usize) -> String {
        format!("conn-{i}-{j}-{k}")
    }

    fn secret_value(&self, connection: &str) -> String {
        format!("{}-{connection}", self.secret_prefix)
    }

    fn count(&self) -> usize {
        self.systems * (1 + self.per_system * (1 + self.per_template))
    }

    /// Every resource of the Systems in `systems`, as (kind, name).
    fn names(&self, systems: std::ops::Range<usize>) -> Vec<(Kind, String)> {
        let mut names = Vec::new();
        for i in systems {
            names.push((Kind::System, Self::system(i)));
            for j in 0..self.per_system {
                names.push((Kind::ProjectSystem, Self::project_system(i, j)));
                for k in 0..self.per_template {
                    names.push((Kind::Connection, Self::connection(i, j, k)));
                }
            }
        }
        names
    }

    fn all(&self) -> Vec<(Kind, String)> {
        self.names(0..self.systems)
    }

    /// The manifests of the Systems in `systems` and everything under them, Secrets first.
    fn manifests(&self, systems: std::ops::Range<usize>) -> String {
        let mut secrets = String::new();
        let mut resources = String::new();
        for (kind, name) in self.names(systems) {
            match kind {
                Kind::System => resources.push_str(&format!(
                    "---\napiVersion: versori.com/v1alpha1\nkind: System\nmetadata: {{ name: {name} }}\nspec:\n  domain: {name}.example\n  templateBaseUrl: https://{name}.example/\n  authSchemes:\n    - id: api-key\n      type: api-key\n      description: API key in a header\n      apiKey: {{ name: X-API-Key, in: header }}\n"
                )),
                Kind::ProjectSystem => {
                    let system = name
                        .strip_prefix("ps-")
                        .and_then(|rest| rest.split('-').next())
                        .expect("ps-I-J");
                    resources.push_str(&format!(
                        "---\napiVersion: versori.com/v1alpha1\nkind: ProjectSystem\nmetadata: {{ name: {name} }}\nspec:\n  projectId: {PROJECT}\n  environment: production\n  systemRef: {{ name: sys-{system} }}\n  authSchemeConfigId: api-key\n"
                    ));
                }
                Kind::Connection => {
                    let template = name
                        .strip_prefix("conn-")
                        .and_then(|rest| rest.rsplit_once('-'))
                        .map(|(template, _)| template)
                        .expect("conn-I-J-K");
                    secrets.push_str(&format!(
                        "---\napiVersion: v1\nkind: Secret\nmetadata: {{ name: {name} }}\nstringData: {{ apiKey: {} }}\n",
                        self.secret_value(&name)
                    ));
                    resources.push_str(&format!(
                        "---\napiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: {{ name: {name} }}\nspec:\n  projectSystemRef: {{ name: ps-{template} }}\n  credentials: {{ apiKey: {{ secretKeyRef: {{ name: {name}, key: apiKey }} }} }}\n"
                    ));
                }
            }
        }
        secrets + &resources
    }
}

/// What the apiserver says of one resource.
#[derive(Clone, Debug, PartialEq)]
struct Observed {
    ready: bool,
    reason: String,
    /// The Versori ID in status (the template ID for a ProjectSystem).
    id: Option<String>,
}

type Snapshot = BTreeMap<(Kind, String), Observed>;

fn observed(conditions: &[Condition], id: Option<String>) -> Observed {
    let ready = conditions.iter().find(|c| c.type_ == "Ready");
    Observed {
        ready: ready.is_some_and(|c| c.status == "True"),
        reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
        id,
    }
}

/// Every System, ProjectSystem and Connection in `namespace`, with its Ready condition and ID.
async fn snapshot(client: &kube::Client, namespace: &str) -> Result<Snapshot, kube::Error> {
    let mut out = Snapshot::new();
    let lp = ListParams::default();
    for s in Api::<System>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await?
    {
        let status = s.status.clone().unwrap_or_default();
        out.insert(
            (Kind::System, s.name_any()),
            observed(&status.common.conditions, status.id),
        );
    }
    for p in Api::<ProjectSystem>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await?
    {
        let status = p.status.clone().unwrap_or_default();
        out.insert(
            (Kind::ProjectSystem, p.name_any()),
            observed(&status.common.conditions, status.connection_template_id),
        );
    }
    for c in Api::<Connection>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await?
    {
        let status = c.status.clone().unwrap_or_default();
        out.insert(
            (Kind::Connection, c.name_any()),
            observed(&status.common.conditions, status.id),
        );
    }
    Ok(out)
}

/// How many of `expected` are Ready with an ID.
fn ready_count(snapshot: &Snapshot, expected: &[(Kind, String)]) -> usize {
    expected
        .iter()
        .filter(|key| {
            snapshot
                .get(*key)
                .is_some_and(|o| o.ready && o.id.is_some())
        })
        .count()
}

/// The reasons of the resources that are not Ready, counted, for progress and failure messages.
fn not_ready_reasons(snapshot: &Snapshot, expected: &[(Kind, String)]) -> BTreeMap<String, usize> {
    let mut reasons = BTreeMap::new();
    for key in expected {
        let reason = match snapshot.get(key) {
            None => "(missing)".to_owned(),
            Some(o) if o.ready && o.id.is_some() => continue,
            Some(o) if o.reason.is_empty() => "(no condition)".to_owned(),
            Some(o) => o.reason.clone(),
        };
        *reasons.entry(format!("{:?}/{reason}", key.0)).or_default() += 1;
    }
    reasons
}

fn items<'a>(state: &'a Value, key: &str) -> &'a [Value] {
    state[key].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Versori's objects of `kind`, counted by name.
fn versori_names(state: &Value, kind: Kind) -> BTreeMap<String, usize> {
    let mut names = BTreeMap::new();
    for item in items(state, kind.state_key()) {
        *names
            .entry(item["name"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    names
}

/// Versori's object counts, as `systems/templates/connections`.
fn versori_counts(state: &Value) -> String {
    Kind::ALL
        .iter()
        .map(|k| items(state, k.state_key()).len().to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// Exactly one Versori object per resource, no other, each with the ID the resource's status
/// holds. Returns the problems found (empty: all good).
fn duplicates_and_strays(
    state: &Value,
    snapshot: &Snapshot,
    expected: &[(Kind, String)],
) -> Vec<String> {
    let mut problems = Vec::new();
    for kind in Kind::ALL {
        let wanted: BTreeSet<&str> = expected
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n.as_str())
            .collect();
        let names = versori_names(state, kind);
        for (name, count) in &names {
            if *count > 1 {
                problems.push(format!("{count} Versori {kind:?} objects named {name}"));
            }
            if !wanted.contains(name.as_str()) {
                problems.push(format!(
                    "a Versori {kind:?} named {name} that no resource asked for"
                ));
            }
        }
        for name in &wanted {
            if !names.contains_key(*name) {
                problems.push(format!("no Versori {kind:?} named {name}"));
            }
        }
        let total = items(state, kind.state_key()).len();
        if total != wanted.len() {
            problems.push(format!(
                "{total} Versori {kind:?} objects for {} resources",
                wanted.len()
            ));
        }
        for item in items(state, kind.state_key()) {
            let name = item["name"].as_str().unwrap_or_default();
            let Some(observed) = snapshot.get(&(kind, name.to_owned())) else {
                continue;
            };
            if observed.id.as_deref() != item["id"].as_str() {
                problems.push(format!(
                    "{kind:?} {name}: status has ID {:?}, Versori's object has {}",
                    observed.id, item["id"]
                ));
            }
        }
    }
    problems
}

/// Server-side applies every document of `manifests` (each starting with `---`), 8 at a time,
/// as field manager `chaos-test`. Through the API rather than kubectl: on this 2-core machine
/// kubectl spends most of a minute of CPU time on a few hundred objects.
async fn apply_all(client: &kube::Client, namespace: &str, manifests: &str) {
    let documents: Vec<Value> = manifests
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).expect("a generated manifest is YAML"))
        .collect();
    let results: Vec<Result<(), String>> = futures::stream::iter(documents)
        .map(|document| async move {
            let resource = match document["kind"].as_str() {
                Some("Secret") => ApiResource::erase::<Secret>(&()),
                Some("System") => ApiResource::erase::<System>(&()),
                Some("ProjectSystem") => ApiResource::erase::<ProjectSystem>(&()),
                Some("Connection") => ApiResource::erase::<Connection>(&()),
                other => panic!("no kind {other:?} in the generated manifests"),
            };
            let name = document["metadata"]["name"].as_str().unwrap_or_default();
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &resource);
            api.patch(
                name,
                &PatchParams::apply("chaos-test").force(),
                &Patch::Apply(&document),
            )
            .await
            .map(|_| ())
            .map_err(|e| format!("{} {name}: {e}", resource.kind))
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(
        failures.is_empty(),
        "applying the manifests failed:\n{}",
        failures.join("\n")
    );
}

/// How many events with `reason` the namespace holds (each counted `count` times).
fn events_with_reason(cluster: &TestCluster, namespace: &str, reason: &str) -> u64 {
    let output =
        common::assert_success(&cluster.kubectl(&["-n", namespace, "get", "events", "-o", "json"]));
    let events: Value = serde_json::from_str(&output).expect("events JSON");
    items(&events, "items")
        .iter()
        .filter(|e| e["reason"] == reason)
        .map(|e| e["count"].as_u64().unwrap_or(1).max(1))
        .sum()
}

/// Sum of POST, PUT, PATCH and DELETE requests.
fn writes(state: &Value) -> u64 {
    ["POST", "PUT", "DELETE", "PATCH"]
        .iter()
        .map(|m| state["requestsByMethod"][m].as_u64().unwrap_or(0))
        .sum()
}

fn log_tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One test's world: a namespace, an emulator seeded with the examples' project, an operator.
struct World {
    cluster: &'static TestCluster,
    client: kube::Client,
    namespace: String,
    emulator: Emulator,
    options: OperatorOptions,
    operator: Operator,
}

impl World {
    async fn start(prefix: &str, configure: impl FnOnce(&mut OperatorOptions)) -> World {
        let cluster = common::cluster().await;
        let namespace = cluster.namespace(prefix).await;
        let emulator = Emulator::start(&seed_yaml());
        let mut options = OperatorOptions::new(&namespace);
        configure(&mut options);
        let operator = Operator::start(cluster, &emulator, &options);
        World {
            cluster,
            client: cluster.client().await,
            namespace,
            emulator,
            options,
            operator,
        }
    }

    fn restart_operator(&mut self) {
        self.operator.kill();
        self.operator = Operator::start(self.cluster, &self.emulator, &self.options);
    }

    async fn snapshot(&self) -> Snapshot {
        snapshot(&self.client, &self.namespace)
            .await
            .unwrap_or_else(|e| panic!("listing the resources in {}: {e}", self.namespace))
    }

    /// Polls Versori's state and the resources every 200 ms until `check` holds.
    async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value, &Snapshot) -> bool,
    ) {
        let started = Instant::now();
        loop {
            let state = self.emulator.state().await;
            let snapshot = self.snapshot().await;
            if check(&state, &snapshot) {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}\noperator log tail:\n{}",
                log_tail(&self.operator.logs(), 60)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every one of `expected` is Ready with an ID at the same moment; fails with
    /// what is not, Versori's counts and the operator's log tail.
    async fn wait_all_ready(&self, expected: &[(Kind, String)], timeout: Duration) -> Snapshot {
        let started = Instant::now();
        let mut last_report = Instant::now();
        loop {
            let snapshot = self.snapshot().await;
            let ready = ready_count(&snapshot, expected);
            if ready == expected.len() {
                eprintln!(
                    "all {} resources Ready after {:.1?}",
                    expected.len(),
                    started.elapsed()
                );
                return snapshot;
            }
            if started.elapsed() > timeout {
                let state = self.emulator.state().await;
                panic!(
                    "timed out after {timeout:?}: {ready}/{} Ready; not Ready: {:?}; Versori has {} \
                     (systems/templates/connections)\noperator log tail:\n{}",
                    expected.len(),
                    not_ready_reasons(&snapshot, expected),
                    versori_counts(&state),
                    log_tail(&self.operator.logs(), 60)
                );
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                last_report = Instant::now();
                eprintln!(
                    "  {ready}/{} Ready after {:.0?}; not Ready: {:?}",
                    expected.len(),
                    started.elapsed(),
                    not_ready_reasons(&snapshot, expected)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Fails the test unless Versori holds exactly one object per resource.
    async fn assert_no_duplicates(&self, expected: &[(Kind, String)], snapshot: &Snapshot) {
        let state = self.emulator.state().await;
        let problems = duplicates_and_strays(&state, snapshot, expected);
        assert!(
            problems.is_empty(),
            "Versori does not hold exactly one object per resource:\n  {}\nVersori has {} \
             (systems/templates/connections); requests: {}",
            problems.join("\n  "),
            versori_counts(&state),
            state["requests"]
        );
        eprintln!(
            "Versori holds exactly one object per resource: {} (systems/templates/connections)",
            versori_counts(&state)
        );
    }
}

/// SIGKILL at random moments while hundreds of objects are being created: every restart picks up
/// where the last one died, and no interrupted create leaves a duplicate.
#[tokio::test]
async fn sigkill_at_random_moments_while_creating_hundreds_of_objects() {
    let started = Instant::now();
    let seed = chaos_seed("sigkill");
    let mut rng = StdRng::seed_from_u64(seed);
    let (fleet, kills, delays_ms, latency_ms) = if long() {
        // 40 Systems, 120 ProjectSystems, 240 Connections (+240 Secrets); 12 kills, and slower
        // creates so that the kills spread over the whole creation (the release build is fast).
        (
            Fleet {
                systems: 40,
                per_system: 3,
                per_template: 2,
                secret_prefix: format!("key-{seed:x}"),
            },
            12,
            200..4000,
            400,
        )
    } else {
        // 20 Systems, 60 ProjectSystems, 120 Connections (+120 Secrets); 4 kills.
        (
            Fleet {
                systems: 20,
                per_system: 3,
                per_template: 2,
                secret_prefix: format!("key-{seed:x}"),
            },
            4,
            300..3000,
            150,
        )
    };
    // A long resync: drift is not the point here, and 200 objects resyncing every 3 s would only
    // add load.
    let mut world = World::start("sigkill", |o| o.resync = "30s".into()).await;
    // Latency on every create, so that kills land while creates are in flight.
    world
        .emulator
        .set_faults(json!({
            "latencyMs": latency_ms,
            "routes": [
                "POST /o/{org}/systems",
                "POST /o/{org}/projects/{project_id}/connection-templates",
                "POST /o/{org}/connections",
            ],
        }))
        .await;
    let expected = fleet.all();
    assert_eq!(expected.len(), fleet.count());
    eprintln!("creating {} resources", expected.len());

    // The resources are applied while the operator is being killed.
    let manifests = fleet.manifests(0..fleet.systems);
    let client = world.client.clone();
    let namespace = world.namespace.clone();
    let apply = tokio::spawn(async move {
        let started = Instant::now();
        apply_all(&client, &namespace, &manifests).await;
        started.elapsed()
    });
    // The kills start with the creates: the first POST reaching Versori.
    world
        .wait_for("the first create", Duration::from_secs(120), |state, _| {
            state["requestsByMethod"]["POST"].as_u64().unwrap_or(0) > 0
        })
        .await;

    for kill in 1..=kills {
        let delay = Duration::from_millis(rng.random_range(delays_ms.clone()));
        tokio::time::sleep(delay).await;
        world.operator.kill();
        let state = world.emulator.state().await;
        let snapshot = world.snapshot().await;
        eprintln!(
            "kill {kill}/{kills} {delay:?} after the start: {} resources applied, {} Ready; \
             Versori has {} (systems/templates/connections) after {} POSTs",
            snapshot.len(),
            ready_count(&snapshot, &expected),
            versori_counts(&state),
            state["requestsByMethod"]["POST"].as_u64().unwrap_or(0),
        );
        // Down for a moment, as a crash-looping pod is.
        let down = Duration::from_millis(rng.random_range(0..500));
        tokio::time::sleep(down).await;
        world.restart_operator();
    }
    let took = apply.await.expect("applying the resources failed");
    eprintln!("applying the resources took {took:.1?}");
    world.emulator.clear_faults().await;

    let timeout = Duration::from_secs(if long() { 900 } else { 240 });
    let snapshot = world.wait_all_ready(&expected, timeout).await;
    world.assert_no_duplicates(&expected, &snapshot).await;
    // Creates interrupted between the POST and the status write, found again by name.
    let adopted = events_with_reason(world.cluster, &world.namespace, "Adopted");
    eprintln!("{adopted} interrupted creates were adopted by a later operator");
    assert!(
        world.operator.is_running(),
        "the last operator is still running"
    );
    eprintln!(
        "sigkill: {} resources, {kills} kills, seed {seed}: passed in {:.1?}",
        expected.len(),
        started.elapsed()
    );
}

/// 10 % 503, 5 % 429 with Retry-After, 3 % dropped connections and 3 % writes committed then
/// dropped, all at once and for the whole run: everything converges, with no duplicate, without
/// hammering Versori; once converged, resources stay Ready through the faults and the request
/// rate stays near the resync rate; no Secret value reaches the operator's logs or events.
#[tokio::test]
async fn all_faults_at_once_converge_without_duplicates_or_a_hot_loop() {
    let started = Instant::now();
    let seed = chaos_seed("faults");
    let canary = format!("CANARY-{seed:016x}");
    let fleet = if long() {
        // 200 resources.
        Fleet {
            systems: 20,
            per_system: 3,
            per_template: 2,
            secret_prefix: canary.clone(),
        }
    } else {
        // 35 resources.
        Fleet {
            systems: 5,
            per_system: 2,
            per_template: 2,
            secret_prefix: canary.clone(),
        }
    };
    let resync = Duration::from_secs(4);
    let window = Duration::from_secs(if long() { 60 } else { 12 });
    let mut world = World::start("faults", |o| o.resync = format!("{}s", resync.as_secs())).await;
    let faults = json!({
        "errorRate": 0.10,
        "rateLimitRate": 0.05,
        "retryAfterSeconds": 1,
        "dropRate": 0.03,
        "commitThenDropRate": 0.03,
    });
    world.emulator.set_faults(faults.clone()).await;
    let expected = fleet.all();
    let objects = expected.len();
    let manifests = fleet.manifests(0..fleet.systems);
    apply_all(&world.client, &world.namespace, &manifests).await;

    // Convergence with the faults on: every resource has been seen Ready with its ID, and Versori
    // holds exactly one object per resource. (A resync that meets a fault may turn a resource
    // un-Ready for a moment, so "all Ready at the same instant" is checked once the faults stop.)
    let timeout = Duration::from_secs(if long() { 600 } else { 180 });
    let mut seen_ready: BTreeSet<(Kind, String)> = BTreeSet::new();
    let converged_after;
    let state = loop {
        let snapshot = world.snapshot().await;
        for key in &expected {
            if snapshot.get(key).is_some_and(|o| o.ready && o.id.is_some()) {
                seen_ready.insert(key.clone());
            }
        }
        let state = world.emulator.state().await;
        if seen_ready.len() == objects
            && duplicates_and_strays(&state, &Snapshot::new(), &expected).is_empty()
        {
            converged_after = started.elapsed();
            break state;
        }
        if started.elapsed() > timeout {
            panic!(
                "not converged after {timeout:?} with the faults on: {}/{objects} seen Ready; not \
                 Ready now: {:?}; Versori: {:?}\noperator log tail:\n{}",
                seen_ready.len(),
                not_ready_reasons(&snapshot, &expected),
                duplicates_and_strays(&state, &snapshot, &expected),
                log_tail(&world.operator.logs(), 60)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let total = state["requestsTotal"].as_u64().unwrap_or(0);
    let per_object = total as f64 / objects as f64;
    eprintln!(
        "converged with the faults on after {converged_after:.1?}: {total} Versori requests for \
         {objects} resources ({per_object:.1} per resource): {}",
        state["requests"]
    );
    // The budget. Creating one resource takes 3 requests on the happy path (System: list by
    // name, POST; ProjectSystem: list templates, POST, plus the environment lookup; Connection:
    // list by name, list templates, POST). About one request in five fails here, and a failed
    // reconcile is retried whole, so a create costs about 3 / 0.8^3 ~ 6 requests. On top, every
    // resource resyncs (1 read) every `resync`, and a status change of a System or ProjectSystem
    // wakes its dependants (1-2 reads each). 10 per resource plus 3 per resource per resync
    // period elapsed covers all of it with room; a hot loop (a retry without backoff, a
    // status-write ping-pong) costs hundreds per resource.
    let resyncs = converged_after.as_secs_f64() / resync.as_secs_f64();
    let budget = objects as f64 * (10.0 + 3.0 * resyncs);
    assert!(
        (total as f64) <= budget,
        "{total} Versori requests to converge {objects} resources in {converged_after:.1?} \
         ({per_object:.1} per resource); the budget is {budget:.0}: {}",
        state["requests"]
    );

    // Steady state with the faults still on: count requests over a window. Each resource resyncs
    // once per `resync` (±10 % jitter) with one read.
    reset_counters(&world.emulator).await;
    let window_started = Instant::now();
    let log_mark = world.operator.logs().len();
    let mut flips = 0usize;
    let mut not_ready_sightings = 0usize;
    let mut previous = world.snapshot().await;
    while window_started.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = world.snapshot().await;
        for key in &expected {
            let before = previous.get(key).is_some_and(|o| o.ready);
            let after = now.get(key).is_some_and(|o| o.ready);
            flips += usize::from(before != after);
            not_ready_sightings += usize::from(!after);
        }
        previous = now;
    }
    let state = world.emulator.state().await;
    let window = window_started.elapsed();
    let in_window = state["requestsTotal"].as_u64().unwrap_or(0);
    let resync_rate = objects as f64 / resync.as_secs_f64();
    let rate = in_window as f64 / window.as_secs_f64();
    eprintln!(
        "steady state with the faults on: {in_window} requests in {window:.1?} ({rate:.1}/s; \
         the resync alone makes {resync_rate:.1}/s), {} writes; Ready flips seen: {flips}, \
         un-Ready sightings: {not_ready_sightings} (polls every 500 ms): {}",
        writes(&state),
        state["requests"]
    );
    let window_writes = writes(&state);
    let window_requests = state["requests"].clone();
    let logs = world.operator.logs();
    let window_reasons = reason_counts(logs.get(log_mark..).unwrap_or_default());

    // The faults stop: everything is Ready at once, still one Versori object per resource.
    world.emulator.clear_faults().await;
    let snapshot = world
        .wait_all_ready(
            &expected,
            Duration::from_secs(if long() { 300 } else { 60 }),
        )
        .await;
    world.assert_no_duplicates(&expected, &snapshot).await;

    // The secret values reached Versori, and never the operator's logs or events.
    let state = world.emulator.state().await.to_string();
    let (_, first_connection) = expected
        .iter()
        .find(|(k, _)| *k == Kind::Connection)
        .expect("a Connection");
    assert!(
        state.contains(&fleet.secret_value(first_connection)),
        "the Secret values reached Versori"
    );
    let logs = world.operator.logs();
    assert!(!logs.is_empty(), "the operator logged");
    let events = common::assert_success(&world.cluster.kubectl(&[
        "-n",
        &world.namespace,
        "get",
        "events,systems,projectsystems,connections",
        "-o",
        "yaml",
    ]));
    for (what, text) in [("operator logs", &logs), ("events and status", &events)] {
        if let Some(at) = text.find(&canary) {
            let line = text[..at].lines().count();
            panic!("a Secret value (canary {canary}) appears in the {what}, line {line}");
        }
    }
    assert!(world.operator.is_running(), "the operator is still running");

    // Last, so that everything above is checked whatever the request rate.
    assert_eq!(
        window_writes, 0,
        "writes with nothing to change: {}",
        window_requests
    );
    // Quiet under transient errors: a resource that is Ready, its Versori object known, stays
    // Ready when a periodic resync read meets a 503, a 429 or a dropped connection (retried
    // within seconds), and its dependants are not affected. A flip is a status write (which
    // wakes the resource's own watch, defeating its backoff, and Argo CD), and it cascades:
    // the ProjectSystems of an un-Ready System turn WaitingForSystem, their Connections
    // WaitingForProjectSystem, and all of them reconcile and read Versori again.
    assert!(
        flips == 0 && not_ready_sightings == 0,
        "with the faults on and nothing changing, resources turned un-Ready: {flips} Ready \
         transitions and {not_ready_sightings} un-Ready sightings in {window:.1?} ({objects} \
         resources polled every 500 ms). Reasons the operator logged in the window: {window_reasons:?}; \
         Versori requests in the window: {window_requests} ({:.2}x the resync rate)",
        rate / resync_rate,
    );
    // The bound on the rate. A resync read fails with p = 1 - 0.97 * 0.95 * 0.90 ~ 0.17 (drop,
    // 429, 503) and is retried after its backoff (1-2 s) or Retry-After (1 s) until one
    // succeeds, so a resync costs 1 / (1 - p) ~ 1.2 reads: about 1.2x the resync rate. 2x
    // leaves room for the dice in a short window; a hot loop (a retry without backoff, a
    // status-write ping-pong) shows as 10x and more.
    assert!(
        rate <= 2.0 * resync_rate,
        "{rate:.1} Versori requests/s in steady state with the faults on, {:.2}x the resync \
         rate of {resync_rate:.1}/s (bound: 2x): {window_requests}",
        rate / resync_rate,
    );

    eprintln!(
        "faults: {objects} resources, seed {seed}: passed in {:.1?}",
        started.elapsed()
    );
}

/// How often each `"reason"` appears in the operator's (JSON) log.
fn reason_counts(logs: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in logs.lines() {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let Some(reason) = entry["reason"].as_str() {
            *counts.entry(reason.to_owned()).or_default() += 1;
        }
    }
    counts
}

async fn reset_counters(emulator: &Emulator) {
    let response = reqwest::Client::new()
        .post(emulator.url("/_emulator/reset-counters"))
        .send()
        .await
        .expect("POST /_emulator/reset-counters");
    assert!(
        response.status().is_success(),
        "POST /_emulator/reset-counters: {}",
        response.status()
    );
}

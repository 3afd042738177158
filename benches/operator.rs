//! `make bench` (`cargo bench --bench operator`): the operator against the Versori emulator with
//! 20 ms added to every Versori call, measured side by side and printed as one table.
//!
//! Phases, in one process, one control plane (tests/cluster), release binaries:
//!
//! 1. **Baseline**: a sequential client doing per object what the `versori` CLI does, with a new
//!    `VersoriClient` (new HTTP connection) per object, in its own project of the same emulator.
//! 2. **Convergence**: Systems, ProjectSystems and Connections (each Connection with its own
//!    api-key Secret) created at once with parallel kube API calls; time until every object is
//!    Ready (watched), and the Versori calls the operator made, by route.
//! 3. **Limit**: the operator's calls × 20 ms / `VERSORI_MAX_IN_FLIGHT`.
//! 4. **Steady state**: the operator restarted with a 10 s resync; after its first pass the
//!    counters are reset and three resyncs are watched: writes (must be 0) and reads per object.
//! 5. **Secret rotation**: 100 Secret updates, one at a time; each timed from the update to the
//!    operator's `PUT /connections/{id}` answered 200 (its `versori_api_requests_total` counter,
//!    polled every 5 ms), then every value checked in the emulator's state.
//! 6. **Memory**: a fresh operator, emulator and namespace holding 10,000 Connections (plus their
//!    Secrets, Systems and ProjectSystems): peak RSS (`VmHWM`) while converging and on a restart
//!    with all of them present.
//!
//! `SCALE=small` divides every count by ten. `BENCH_PHASES=baseline,convergence,steady,rotation,memory`
//! picks phases (steady and rotation need convergence). `VERSORI_OPERATOR_CONCURRENCY` and
//! `VERSORI_MAX_IN_FLIGHT`, when set, are passed to the operator.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Emulator;
use common::operator::{Operator, OperatorOptions};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};
use versori_operator::resources::{Connection, ProjectSystem, System};
use versori_operator::versori::models as api;
use versori_operator::versori::{ClientConfig, SecretValue, VersoriClient};

/// Added to every Versori call by the emulator.
/// Milliseconds added to every Versori call: `BENCH_LATENCY_MS`, 20 by default (an API in the
/// same region); `make bench LATENCY_MS=100` is a SaaS API seen from a cluster.
fn latency_ms() -> u64 {
    std::env::var("BENCH_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}
/// The operator's project (examples/emulator/seed.yaml) and the baseline's.
const PROJECT: &str = "01KKBR46SH7JES8AZ14EEAK0CX";
const BASELINE_PROJECT: &str = "01KKBR46SH7JES8AZ14EEAK0E0";
const ENVIRONMENT: &str = "production";
const STEADY_RESYNCS: u32 = 3;
const ROTATIONS: usize = 100;
/// Parallel kube API calls when creating the objects.
const APPLY_PARALLELISM: usize = 32;

fn seed() -> String {
    format!(
        "projects:\n\
         \x20 - id: {PROJECT}\n    name: demo\n    environments:\n\
         \x20     - {{ id: 01KKBR46SH7JES8AZ14EEAK0D0, name: production }}\n\
         \x20     - {{ id: 01KKBR46SH7JES8AZ14EEAK0D1, name: staging }}\n\
         \x20 - id: {BASELINE_PROJECT}\n    name: baseline\n    environments:\n\
         \x20     - {{ id: 01KKBR46SH7JES8AZ14EEAK0E1, name: production }}\n"
    )
}

#[derive(Clone, Copy)]
struct Scale {
    name: &'static str,
    systems: usize,
    project_systems: usize,
    connections: usize,
    memory_connections: usize,
    /// The resync of the steady-state phase (three are watched).
    resync: Duration,
}

impl Scale {
    fn from_env() -> Scale {
        match std::env::var("SCALE").as_deref() {
            Ok("small") => Scale {
                name: "small",
                systems: 5,
                project_systems: 20,
                connections: 100,
                memory_connections: 1_000,
                resync: Duration::from_secs(5),
            },
            Ok("full") | Ok("") | Err(_) => Scale {
                name: "full",
                systems: 50,
                project_systems: 200,
                connections: 1_000,
                memory_connections: 10_000,
                resync: Duration::from_secs(10),
            },
            Ok(other) => panic!("SCALE={other:?}: use small or full"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Report {
    rows: Vec<(String, String, String, String)>,
    notes: Vec<String>,
}

impl Report {
    fn row(&mut self, what: &str, figure: String, target: &str, met: Option<bool>) {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        self.rows
            .push((what.into(), figure, target.into(), met.into()));
    }

    fn note(&mut self, text: String) {
        eprintln!("[bench] {text}");
        self.notes.push(text);
    }

    fn render(&self) -> String {
        let w0 = self
            .rows
            .iter()
            .map(|r| r.0.len())
            .max()
            .unwrap_or(0)
            .max(7);
        let w1 = self
            .rows
            .iter()
            .map(|r| r.1.len())
            .max()
            .unwrap_or(0)
            .max(6);
        let w2 = self
            .rows
            .iter()
            .map(|r| r.2.len())
            .max()
            .unwrap_or(0)
            .max(6);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| {:w0$} | {:w1$} | {:w2$} | met |",
            "measure", "figure", "target"
        );
        let _ = writeln!(
            out,
            "|{}|{}|{}|-----|",
            "-".repeat(w0 + 2),
            "-".repeat(w1 + 2),
            "-".repeat(w2 + 2)
        );
        for (a, b, c, d) in &self.rows {
            let _ = writeln!(out, "| {a:w0$} | {b:w1$} | {c:w2$} | {d:3} |");
        }
        out
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// Emulator and operator helpers
// ---------------------------------------------------------------------------------------------

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

async fn reset_counters(emulator: &Emulator) {
    let response = http()
        .post(emulator.url("/_emulator/reset-counters"))
        .send()
        .await
        .expect("POST /_emulator/reset-counters");
    assert!(
        response.status().is_success(),
        "reset-counters: {response:?}"
    );
}

/// Requests by "METHOD route", reads and writes, from a state dump.
struct Calls {
    by_route: BTreeMap<String, u64>,
    total: u64,
    reads: u64,
    writes: u64,
}

fn count_calls(state: &Value) -> Calls {
    let by_route: BTreeMap<String, u64> = state["requests"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    let method = |m: &str| state["requestsByMethod"][m].as_u64().unwrap_or(0);
    Calls {
        total: by_route.values().sum(),
        reads: method("GET"),
        writes: method("POST") + method("PUT") + method("DELETE") + method("PATCH"),
        by_route,
    }
}

fn by_route_text(calls: &Calls) -> String {
    calls
        .by_route
        .iter()
        .map(|(route, n)| format!("{route}: {n}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn versori_client(emulator: &Emulator) -> VersoriClient {
    VersoriClient::new(ClientConfig::new(
        emulator.base_url.parse().expect("emulator URL"),
        emulator.organisation.clone(),
        SecretValue::new(emulator.token.clone()),
    ))
    .expect("a Versori client")
}

fn operator_options(namespace: &str, resync: Duration) -> OperatorOptions {
    let mut options = OperatorOptions::new(namespace);
    options.resync = format!("{}s", resync.as_secs());
    options.identity = format!("bench-{}", std::process::id());
    // The chart's default log level (the harness's debug level costs CPU a deployment does not pay).
    let log = std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "info".into());
    options.env.push(("RUST_LOG".into(), log));
    for name in ["VERSORI_OPERATOR_CONCURRENCY", "VERSORI_MAX_IN_FLIGHT"] {
        if let Ok(value) = std::env::var(name) {
            options.env.push((name.into(), value));
        }
    }
    options
}

fn max_in_flight() -> usize {
    std::env::var("VERSORI_MAX_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

fn concurrency() -> usize {
    std::env::var("VERSORI_OPERATOR_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

/// The operator process: the bench's child running the versori-operator binary (the harness
/// does not expose its PID).
fn operator_pid() -> Option<u32> {
    let me = std::process::id();
    let binary = env!("CARGO_BIN_EXE_versori-operator");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let ppid: Option<u32> = after.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if ppid != Some(me) {
            continue;
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if exe.is_some_and(|e| e == std::path::Path::new(binary)) {
            found.push(pid);
        }
    }
    assert!(
        found.len() <= 1,
        "more than one operator child process: {found:?}"
    );
    found.pop()
}

/// `VmHWM` and `VmRSS` of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Waits for the operator's `/readyz`.
async fn wait_operator_ready(operator: &mut Operator) {
    let client = http();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            operator.is_running(),
            "the operator exited:\n{}",
            tail(operator)
        );
        let url = format!("http://{}/readyz", operator.metrics_addr);
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "operator not ready:\n{}",
            tail(operator)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tail(operator: &Operator) -> String {
    let logs = operator.logs();
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The operator's `/metrics` text.
async fn metrics(client: &reqwest::Client, operator: &Operator) -> String {
    client
        .get(format!("http://{}/metrics", operator.metrics_addr))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("/metrics body")
}

/// The value of the series whose line starts with `prefix` (name and labels).
fn series(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// The apiserver's `apiserver_request_total`, summed by "VERB resource[/subresource] code".
fn kube_requests(cluster: &common::TestCluster) -> BTreeMap<String, u64> {
    let output = cluster.kubectl(&["get", "--raw", "/metrics"]);
    let text = String::from_utf8_lossy(&output.stdout);
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let label = |name: &str| {
            rest.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|v| v.split('"').next())
                .unwrap_or("")
        };
        let (verb, resource, sub, code) = (
            label("verb"),
            label("resource"),
            label("subresource"),
            label("code"),
        );
        if resource.is_empty() || verb == "WATCH" {
            continue;
        }
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let resource = if sub.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}/{sub}")
        };
        *out.entry(format!("{verb} {resource} {code}")).or_default() += value as u64;
    }
    out
}

/// What changed between two [`kube_requests`] readings, minus the bench's own `own` creates:
/// (total, "key: n" by size).
fn kube_delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> (u64, String) {
    let mut delta: Vec<(String, u64)> = after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(k, v)| {
            *v > 0
                && !k.starts_with("GET namespaces")
                && !k.contains("customresourcedefinitions")
                && !k.contains(" leases")
        })
        .collect();
    delta.sort_by_key(|(_, v)| std::cmp::Reverse(*v));
    let total = delta.iter().map(|(_, v)| v).sum();
    let text = delta
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("; ");
    (total, text)
}

/// The operator's kube requests per object of each kind during convergence: requests on the
/// kind's own resource (and its status) less the bench's creates, with the Secret reads counted
/// for Connections (the only kind reading Secrets per object; the bench's own Secret creates are
/// POSTs, not counted here) and events spread over all.
fn kube_by_kind(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    kinds: [(&str, &str, usize); 3],
) -> String {
    let delta = |filter: &dyn Fn(&str) -> bool| -> u64 {
        after
            .iter()
            .filter(|(k, _)| filter(k))
            .map(|(k, v)| v.saturating_sub(before.get(k).copied().unwrap_or(0)))
            .sum()
    };
    let objects: usize = kinds.iter().map(|(_, _, n)| n).sum();
    let events = delta(&|k: &str| k.contains(" events"));
    let secret_reads = delta(&|k: &str| k.starts_with("GET secrets"));
    let mut parts = Vec::new();
    for (kind, resource, n) in kinds {
        let own_creates = n as u64;
        let mut total = delta(&|k: &str| {
            let resource_of = k.split(' ').nth(1).unwrap_or("");
            resource_of == resource || resource_of.starts_with(&format!("{resource}/"))
        })
        .saturating_sub(own_creates);
        if kind == "Connection" {
            total += secret_reads;
        }
        parts.push(format!("{kind} {:.1}", total as f64 / n.max(1) as f64));
    }
    parts.push(format!(
        "events {:.1}",
        events as f64 / objects.max(1) as f64
    ));
    parts.join(", ")
}

/// Reconciles per kind with their mean duration, errors by reason, and the mean Versori call
/// duration per operation, from the operator's own metrics.
fn reconcile_profile(text: &str) -> String {
    let mut parts = Vec::new();
    for kind in ["System", "ProjectSystem", "Connection"] {
        let label = format!("{{kind=\"{kind}\"}}");
        let n = series(
            text,
            &format!("versori_operator_reconciliations_total{label}"),
        );
        let sum = series(
            text,
            &format!("versori_operator_reconcile_duration_seconds_sum{label}"),
        );
        let count = series(
            text,
            &format!("versori_operator_reconcile_duration_seconds_count{label}"),
        );
        let errors: Vec<String> = text
            .lines()
            .filter(|l| {
                l.starts_with(&format!(
                    "versori_operator_reconcile_errors_total{{kind=\"{kind}\""
                ))
            })
            .filter_map(|l| {
                let reason = l.split("reason=\"").nth(1)?.split('"').next()?;
                let value = l.rsplit(' ').next()?;
                Some(format!("{reason} {value}"))
            })
            .collect();
        parts.push(format!(
            "{kind}: {n} reconciles, mean {:.0} ms, errors [{}]",
            if count > 0.0 {
                sum / count * 1000.0
            } else {
                0.0
            },
            errors.join(", ")
        ));
    }
    let mut ops: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        for (suffix, index) in [("_sum{", 0), ("_count{", 1)] {
            let prefix = format!("versori_api_request_duration_seconds{suffix}operation=\"");
            if let Some(rest) = line.strip_prefix(&prefix)
                && let Some(op) = rest.split('"').next()
                && let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())
            {
                let entry = ops.entry(op.to_owned()).or_default();
                if index == 0 {
                    entry.0 += value
                } else {
                    entry.1 += value
                }
            }
        }
    }
    let ops: Vec<String> = ops
        .iter()
        .filter(|(_, (_, count))| *count > 0.0)
        .map(|(op, (sum, count))| format!("{op} {count} x {:.0} ms", sum / count * 1000.0))
        .collect();
    format!(
        "operator metrics: {}; Versori call time as the operator saw it (after the in-flight cap): {}",
        parts.join("; "),
        ops.join(", ")
    )
}

// ---------------------------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------------------------

fn system_name(prefix: &str, i: usize) -> String {
    format!("{prefix}-s-{i:03}")
}
fn ps_name(prefix: &str, j: usize) -> String {
    format!("{prefix}-ps-{j:04}")
}
fn connection_name(prefix: &str, k: usize) -> String {
    format!("{prefix}-c-{k:05}")
}
fn api_key(k: usize, version: usize) -> String {
    format!("key-{k:05}-v{version}-{:08x}", rand::random::<u32>())
}

/// The objects of one scenario: Secrets, then Systems, ProjectSystems, Connections.
struct World {
    secrets: Vec<Secret>,
    systems: Vec<Value>,
    project_systems: Vec<Value>,
    connections: Vec<Value>,
}

fn world(prefix: &str, n_systems: usize, n_project_systems: usize, n_connections: usize) -> World {
    let secrets = (0..n_connections)
        .map(|k| {
            serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": { "name": format!("{}-key", connection_name(prefix, k)) },
                "type": "Opaque",
                "stringData": { "apiKey": api_key(k, 0) },
            }))
            .expect("a Secret")
        })
        .collect();
    let systems = (0..n_systems)
        .map(|i| {
            let name = system_name(prefix, i);
            json!({
                "apiVersion": "versori.com/v1alpha1",
                "kind": "System",
                "metadata": { "name": name },
                "spec": {
                    "domain": format!("{name}.example.com"),
                    "templateBaseUrl": format!("https://{name}.example.com/"),
                    "authSchemes": [
                        { "id": "api-key", "type": "api-key", "description": "API key in a header",
                          "apiKey": { "name": "X-API-Key", "in": "header" } },
                        { "id": "basic", "type": "basic-auth", "description": "HTTP basic" },
                    ],
                },
            })
        })
        .collect();
    let project_systems = (0..n_project_systems)
        .map(|j| {
            json!({
                "apiVersion": "versori.com/v1alpha1",
                "kind": "ProjectSystem",
                "metadata": { "name": ps_name(prefix, j) },
                "spec": {
                    "projectId": PROJECT,
                    "environment": ENVIRONMENT,
                    "systemRef": { "name": system_name(prefix, j * n_systems / n_project_systems) },
                },
            })
        })
        .collect();
    let connections = (0..n_connections)
        .map(|k| {
            let name = connection_name(prefix, k);
            json!({
                "apiVersion": "versori.com/v1alpha1",
                "kind": "Connection",
                "metadata": { "name": name },
                "spec": {
                    "projectSystemRef": { "name": ps_name(prefix, k * n_project_systems / n_connections) },
                    "credentials": {
                        "apiKey": { "secretKeyRef": { "name": format!("{name}-key"), "key": "apiKey" } },
                    },
                },
            })
        })
        .collect();
    World {
        secrets,
        systems,
        project_systems,
        connections,
    }
}

fn resource<K: kube::Resource<DynamicType = ()>>() -> ApiResource {
    ApiResource::erase::<K>(&())
}

/// Creates every object with parallel kube API calls (Secrets first, then the three kinds in
/// dependency order, all in one stream). Returns how long it took.
async fn apply(client: &Client, namespace: &str, world: &World) -> Duration {
    enum Item<'a> {
        Secret(&'a Secret),
        Custom(&'a Value, ApiResource),
    }
    let mut items: Vec<Item<'_>> = world.secrets.iter().map(Item::Secret).collect();
    items.extend(
        world
            .systems
            .iter()
            .map(|o| Item::Custom(o, resource::<System>())),
    );
    items.extend(
        world
            .project_systems
            .iter()
            .map(|o| Item::Custom(o, resource::<ProjectSystem>())),
    );
    items.extend(
        world
            .connections
            .iter()
            .map(|o| Item::Custom(o, resource::<Connection>())),
    );
    let started = Instant::now();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    futures::stream::iter(items)
        .map(|item| {
            let secrets = secrets.clone();
            let client = client.clone();
            async move {
                let pp = PostParams::default();
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let result = match &item {
                        Item::Secret(s) => secrets.create(&pp, s).await.map(|_| ()),
                        Item::Custom(o, ar) => {
                            let api: Api<DynamicObject> =
                                Api::namespaced_with(client.clone(), namespace, ar);
                            let obj: DynamicObject =
                                serde_json::from_value((*o).clone()).expect("an object");
                            api.create(&pp, &obj).await.map(|_| ())
                        }
                    };
                    match result {
                        Ok(()) => return,
                        // Under load the apiserver may answer 429/5xx or time out: retry.
                        Err(e) if attempt < 5 => {
                            eprintln!("[bench] create retry {attempt}: {e}");
                            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                        }
                        Err(e) => panic!("creating an object: {e}"),
                    }
                }
            }
        })
        .buffer_unordered(APPLY_PARALLELISM)
        .collect::<()>()
        .await;
    started.elapsed()
}

// ---------------------------------------------------------------------------------------------
// Readiness, watched
// ---------------------------------------------------------------------------------------------

/// Ready (and the reason) by object name.
type ReadyByName = HashMap<String, (bool, String)>;

/// Every object's Ready status and reason, per kind, kept current by watches.
#[derive(Clone, Default)]
struct Readiness {
    inner: Arc<Mutex<HashMap<&'static str, ReadyByName>>>,
    /// Objects seen going from Ready to not Ready (or to no Ready condition), by kind and the
    /// reason they went to.
    flaps: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl Readiness {
    fn start(client: &Client, namespace: &str) -> (Readiness, Vec<tokio::task::JoinHandle<()>>) {
        let readiness = Readiness::default();
        let mut tasks = Vec::new();
        for (kind, ar) in [
            ("System", resource::<System>()),
            ("ProjectSystem", resource::<ProjectSystem>()),
            ("Connection", resource::<Connection>()),
        ] {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
            let readiness = readiness.clone();
            tasks.push(tokio::spawn(async move {
                let stream = watcher(api, watcher::Config::default().any_semantic())
                    .default_backoff()
                    .applied_objects();
                futures::pin_mut!(stream);
                while let Ok(Some(obj)) = stream.try_next().await {
                    let name = obj.metadata.name.clone().unwrap_or_default();
                    let ready = obj.data["status"]["conditions"]
                        .as_array()
                        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                        .map(|c| {
                            (
                                c["status"] == "True",
                                c["reason"].as_str().unwrap_or_default().to_owned(),
                            )
                        })
                        .unwrap_or((false, "NoCondition".into()));
                    let was_ready = !ready.0
                        && readiness
                            .inner
                            .lock()
                            .unwrap()
                            .get(kind)
                            .and_then(|m| m.get(&name))
                            .is_some_and(|(r, _)| *r);
                    if was_ready {
                        *readiness
                            .flaps
                            .lock()
                            .unwrap()
                            .entry(format!("{kind} to {}", ready.1))
                            .or_default() += 1;
                    }
                    readiness
                        .inner
                        .lock()
                        .unwrap()
                        .entry(kind)
                        .or_default()
                        .insert(name, ready);
                }
            }));
        }
        (readiness, tasks)
    }

    /// "n (kind to reason: n, ...)" of Ready objects that lost Ready.
    fn flaps(&self) -> String {
        let flaps = self.flaps.lock().unwrap();
        let total: usize = flaps.values().sum();
        if total == 0 {
            return "0".into();
        }
        let parts: Vec<String> = flaps.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        format!("{total} ({})", parts.join(", "))
    }

    /// (ready, seen) for a kind.
    fn count(&self, kind: &str) -> (usize, usize) {
        let inner = self.inner.lock().unwrap();
        inner.get(kind).map_or((0, 0), |m| {
            (m.values().filter(|(ready, _)| *ready).count(), m.len())
        })
    }

    /// "reason: n" for the objects of a kind that are not Ready.
    fn not_ready(&self, kind: &str) -> String {
        let inner = self.inner.lock().unwrap();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        if let Some(m) = inner.get(kind) {
            for (ready, reason) in m.values() {
                if !ready {
                    *reasons.entry(reason.clone()).or_default() += 1;
                }
            }
        }
        reasons
            .iter()
            .map(|(r, n)| format!("{r}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Waits until `expected` objects of each kind are Ready. Returns when each kind got there
    /// (measured from `since`), or `None` for the kinds that did not within `timeout`.
    async fn wait_all(
        &self,
        expected: [(&'static str, usize); 3],
        since: Instant,
        timeout: Duration,
    ) -> Vec<(&'static str, Option<Duration>)> {
        let mut done: Vec<(&'static str, Option<Duration>)> =
            expected.iter().map(|(k, _)| (*k, None)).collect();
        let mut last_progress = Instant::now();
        loop {
            for (i, (kind, n)) in expected.iter().enumerate() {
                if done[i].1.is_none() && self.count(kind).0 >= *n {
                    done[i].1 = Some(since.elapsed());
                }
            }
            if done.iter().all(|(_, d)| d.is_some()) || since.elapsed() > timeout {
                return done;
            }
            if last_progress.elapsed() > Duration::from_secs(10) {
                last_progress = Instant::now();
                let progress: Vec<String> = expected
                    .iter()
                    .map(|(k, n)| {
                        let (ready, seen) = self.count(k);
                        format!("{k} {ready}/{n} ready ({seen} seen)")
                    })
                    .collect();
                eprintln!(
                    "[bench]   {:.0} s: {}",
                    since.elapsed().as_secs_f64(),
                    progress.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Baseline: what the CLI does, object by object
// ---------------------------------------------------------------------------------------------

async fn baseline(emulator: &Emulator, scale: Scale) -> (Duration, Calls) {
    reset_counters(emulator).await;
    let prefix = "baseline";
    let started = Instant::now();
    let mut system_ids = Vec::new();
    for i in 0..scale.systems {
        // `versori systems create`, then `versori systems add-auth-scheme` per scheme.
        let client = versori_client(emulator);
        let name = system_name(prefix, i);
        let system = client
            .create_system(&api::SystemCreate {
                name: name.clone(),
                domain: format!("{name}.example.com"),
                template_base_url: format!("https://{name}.example.com/"),
                auth_scheme_configs: Vec::new(),
                labels: None,
            })
            .await
            .expect("baseline: create system");
        for scheme in [
            api::AuthSchemeConfig::api_key(
                "api-key",
                "API key in a header",
                "X-API-Key",
                api::ApiKeyLocation::Header,
            ),
            api::AuthSchemeConfig::basic_auth("basic", "HTTP basic"),
        ] {
            client
                .upsert_auth_scheme(&system.id, &scheme)
                .await
                .expect("baseline: add auth scheme");
        }
        system_ids.push(system.id);
    }
    let mut template_ids = Vec::new();
    for j in 0..scale.project_systems {
        // `versori projects systems add`: the project (environment name to ID), then the link.
        let client = versori_client(emulator);
        let project = client
            .get_project(BASELINE_PROJECT)
            .await
            .expect("baseline: get project");
        let environment = project
            .environment_by_name(ENVIRONMENT)
            .expect("baseline project has production")
            .id
            .clone();
        let template = client
            .link_system(
                BASELINE_PROJECT,
                &api::LinkSystem {
                    system_id: system_ids[j * scale.systems / scale.project_systems].clone(),
                    name: ps_name(prefix, j),
                    environment_id: environment,
                    dynamic: false,
                },
            )
            .await
            .expect("baseline: link system");
        template_ids.push(template.connection_template_id);
    }
    for k in 0..scale.connections {
        // `versori connections create --api-key`: the project, the environment's templates (to
        // read the template's first auth scheme), then the connection.
        let client = versori_client(emulator);
        let project = client
            .get_project(BASELINE_PROJECT)
            .await
            .expect("baseline: get project");
        let environment = project
            .environment_by_name(ENVIRONMENT)
            .expect("baseline project has production")
            .id
            .clone();
        let template_id = &template_ids[k * scale.project_systems / scale.connections];
        let templates = client
            .list_connection_templates(BASELINE_PROJECT, &environment)
            .await
            .expect("baseline: list templates");
        let template = templates
            .iter()
            .find(|t| &t.connection_template_id == template_id)
            .expect("baseline: the template is listed");
        let scheme = template
            .auth_scheme_configs
            .first()
            .cloned()
            .expect("baseline: the template has an auth scheme");
        client
            .create_connection(&api::EnvSystemConnectionCreate {
                connection_template_id: template_id.clone(),
                connection: api::ConnectionCreate {
                    name: connection_name(prefix, k),
                    credentials: vec![api::ConnectionCredential::new(
                        scheme,
                        api::Credential::api_key(
                            emulator.organisation.clone(),
                            SecretValue::new(api_key(k, 0)),
                        ),
                    )],
                    base_url: None,
                },
                external_id: None,
            })
            .await
            .expect("baseline: create connection");
    }
    let elapsed = started.elapsed();
    (elapsed, count_calls(&emulator.state().await))
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{nproc} CPUs ({cpu}), {:.1} GiB memory, load average at start {}",
        mem as f64 / 1024.0 / 1024.0,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn phases() -> HashSet<String> {
    std::env::var("BENCH_PHASES")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "baseline,convergence,steady,rotation,memory".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect()
}

fn main() {
    // The emulator logs every request at info; thousands of lines on stderr would cost CPU the
    // measurement should not pay. SAFETY: no other thread exists yet.
    unsafe { std::env::set_var("RUST_LOG", "warn") };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let scale = Scale::from_env();
    let phases = phases();
    let started = Instant::now();
    let mut report = Report::default();
    let machine = machine();
    eprintln!("[bench] scale {} on {machine}", scale.name);
    let cluster = common::cluster().await;
    let client = cluster.client().await;
    let limit_cap = max_in_flight();
    report.note(format!(
        "scale {}: {} Systems, {} ProjectSystems, {} Connections; memory phase {} Connections; \
         {} ms added per Versori call; operator VERSORI_OPERATOR_CONCURRENCY={} \
         VERSORI_MAX_IN_FLIGHT={limit_cap}",
        scale.name,
        scale.systems,
        scale.project_systems,
        scale.connections,
        scale.memory_connections,
        latency_ms(),
        concurrency(),
    ));

    let emulator = Emulator::start(&seed());
    emulator
        .set_faults(json!({ "latencyMs": latency_ms() }))
        .await;

    // 1. Baseline.
    let mut baseline_time = None;
    if phases.contains("baseline") {
        eprintln!("[bench] baseline: sequential CLI-like client, one new client per object");
        let (elapsed, calls) = baseline(&emulator, scale).await;
        report.note(format!(
            "baseline: {} in {}, {} Versori calls ({})",
            scale.systems + scale.project_systems + scale.connections,
            secs(elapsed),
            calls.total,
            by_route_text(&calls)
        ));
        report.row(
            "baseline (sequential CLI-like, new client per object)",
            format!("{} ({} calls)", secs(elapsed), calls.total),
            "",
            None,
        );
        baseline_time = Some(elapsed);
    }

    // 2. Convergence.
    let namespace = cluster.namespace("bench").await;
    let objects = scale.systems + scale.project_systems + scale.connections;
    if phases.contains("convergence") {
        // The floor: the same creates into a namespace no operator watches.
        let floor_namespace = cluster.namespace("bench-floor").await;
        let floor_world = world(
            "floor",
            scale.systems,
            scale.project_systems,
            scale.connections,
        );
        let floor = apply(&client, &floor_namespace, &floor_world).await;
        eprintln!("[bench]   apply floor (no operator): {}", secs(floor));
        report.row(
            "apply floor: the same creates, no operator running",
            secs(floor),
            "",
            None,
        );
        eprintln!("[bench] convergence: operator in namespace {namespace}");
        let mut op = Operator::start(
            cluster,
            &emulator,
            &operator_options(&namespace, Duration::from_secs(300)),
        );
        wait_operator_ready(&mut op).await;
        let (readiness, watches) = Readiness::start(&client, &namespace);
        let world = world(
            "bench",
            scale.systems,
            scale.project_systems,
            scale.connections,
        );
        reset_counters(&emulator).await;
        let kube_before = kube_requests(cluster);
        let since = Instant::now();
        let apply_time = apply(&client, &namespace, &world).await;
        eprintln!(
            "[bench]   applied {objects} objects and {} Secrets in {}",
            world.secrets.len(),
            secs(apply_time)
        );
        let done = readiness
            .wait_all(
                [
                    ("System", scale.systems),
                    ("ProjectSystem", scale.project_systems),
                    ("Connection", scale.connections),
                ],
                since,
                Duration::from_secs(900),
            )
            .await;
        let state = emulator.state().await;
        let kube_after = kube_requests(cluster);
        let pid = operator_pid().expect("the operator's PID");
        let (hwm, _) = memory_kib(pid);
        let converged = done.iter().map(|(_, d)| *d).collect::<Option<Vec<_>>>();
        let Some(times) = converged else {
            for kind in ["System", "ProjectSystem", "Connection"] {
                eprintln!("[bench] {kind} not ready: {}", readiness.not_ready(kind));
            }
            panic!("not everything became Ready: {:?}\n{}", done, tail(&op));
        };
        let total = *times.iter().max().expect("three kinds");
        let calls = count_calls(&state);
        report.note(format!(
            "convergence: applied in {} (parallel creates, {APPLY_PARALLELISM} at a time); all Systems Ready at {}, \
             ProjectSystems at {}, Connections at {} (from the first create); operator VmHWM {}; \
             Ready objects seen losing Ready on the way: {}",
            secs(apply_time),
            secs(times[0]),
            secs(times[1]),
            secs(times[2]),
            mib(hwm),
            readiness.flaps()
        ));
        report.note(format!(
            "convergence: {} Versori calls ({} reads, {} writes; {:.2} per object): {}",
            calls.total,
            calls.reads,
            calls.writes,
            calls.total as f64 / objects as f64,
            by_route_text(&calls)
        ));
        let (kube_total, kube_text) = kube_delta(&kube_before, &kube_after);
        let own = (objects + world.secrets.len()) as u64;
        report.note(format!(
            "convergence: {kube_total} kube API requests (watches not counted), of which {own} are the bench's creates: \
             {:.1} per object by the operator: {kube_text}",
            kube_total.saturating_sub(own) as f64 / objects as f64
        ));
        report.row(
            &format!("apply {objects} objects + {} Secrets", world.secrets.len()),
            secs(apply_time),
            "",
            None,
        );
        report.row(
            "convergence: first create to all Ready",
            secs(total),
            "",
            None,
        );
        report.row(
            "convergence: last create to all Ready",
            secs(total.saturating_sub(apply_time)),
            "",
            None,
        );
        report.row(
            "convergence: operator Versori calls",
            format!(
                "{} ({:.2}/object; {} writes)",
                calls.total,
                calls.total as f64 / objects as f64,
                calls.writes
            ),
            "",
            None,
        );
        report.row(
            "convergence: operator kube API requests per object, by kind",
            kube_by_kind(
                &kube_before,
                &kube_after,
                [
                    ("System", "systems", scale.systems),
                    ("ProjectSystem", "projectsystems", scale.project_systems),
                    ("Connection", "connections", scale.connections),
                ],
            ),
            "",
            None,
        );
        report.row(
            "convergence: Ready objects seen losing Ready",
            readiness.flaps(),
            "0",
            Some(readiness.flaps() == "0"),
        );
        report.row(
            "convergence: operator kube API requests per object",
            format!(
                "{:.1}",
                kube_total.saturating_sub(own) as f64 / objects as f64
            ),
            "",
            None,
        );
        if let Some(base) = baseline_time {
            let speedup = base.as_secs_f64() / total.as_secs_f64();
            report.row(
                "speed-up over baseline",
                format!("{speedup:.1}x"),
                ">= 10x",
                Some(speedup >= 10.0),
            );
        }
        // 3. The limit.
        let limit = Duration::from_secs_f64(
            calls.total as f64 * latency_ms() as f64 / 1000.0 / limit_cap as f64,
        );
        let ratio = total.as_secs_f64() / limit.as_secs_f64();
        report.row(
            &format!("limit: calls x {} ms / {limit_cap} in flight", latency_ms()),
            secs(limit),
            "",
            None,
        );
        report.row(
            "convergence / limit",
            format!("{ratio:.2}x"),
            "<= 2x",
            Some(ratio <= 2.0),
        );
        report.note(reconcile_profile(&metrics(&http(), &op).await));
        op.terminate(Duration::from_secs(10));
        drop(op);

        // 4. Steady state: restart with a short resync.
        if phases.contains("steady") || phases.contains("rotation") {
            eprintln!(
                "[bench] steady state: restart with a {}s resync",
                scale.resync.as_secs()
            );
            reset_counters(&emulator).await;
            let restart = Instant::now();
            let mut op = Operator::start(
                cluster,
                &emulator,
                &operator_options(&namespace, scale.resync),
            );
            wait_operator_ready(&mut op).await;
            let m = http();
            // The first pass: every object reconciled once.
            loop {
                let text = metrics(&m, &op).await;
                let done = [
                    ("System", scale.systems),
                    ("ProjectSystem", scale.project_systems),
                    ("Connection", scale.connections),
                ]
                .iter()
                .all(|(kind, n)| {
                    series(
                        &text,
                        &format!("versori_operator_reconciliations_total{{kind=\"{kind}\"}}"),
                    ) >= *n as f64
                        && series(
                            &text,
                            &format!("versori_operator_reconciles_in_flight{{kind=\"{kind}\"}}"),
                        ) == 0.0
                });
                if done {
                    break;
                }
                assert!(
                    restart.elapsed() < Duration::from_secs(600),
                    "restart pass did not finish"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let restart_time = restart.elapsed();
            let restart_calls = count_calls(&emulator.state().await);
            report.note(format!(
                "restart: first pass over {objects} objects in {} with {} Versori calls ({} writes): {}",
                secs(restart_time),
                restart_calls.total,
                restart_calls.writes,
                by_route_text(&restart_calls)
            ));
            report.row(
                "restart: first pass over all objects",
                format!(
                    "{} ({} calls, {} writes)",
                    secs(restart_time),
                    restart_calls.total,
                    restart_calls.writes
                ),
                "",
                None,
            );
            if phases.contains("steady") {
                reset_counters(&emulator).await;
                let kube_before = kube_requests(cluster);
                let window = scale.resync * STEADY_RESYNCS;
                tokio::time::sleep(window).await;
                let steady = count_calls(&emulator.state().await);
                let (kube_total, kube_text) = kube_delta(&kube_before, &kube_requests(cluster));
                report.note(format!(
                    "steady state: {kube_total} kube API requests ({:.2} per object per resync): {kube_text}",
                    kube_total as f64 / objects as f64 / STEADY_RESYNCS as f64
                ));
                // The state dump itself is not counted: hooks are not in the counters.
                let per_object = steady.reads as f64 / objects as f64 / STEADY_RESYNCS as f64;
                report.note(format!(
                    "steady state: {} s ({STEADY_RESYNCS} resyncs of {} s): {} writes, {} reads ({:.2} per object per resync): {}",
                    window.as_secs(),
                    scale.resync.as_secs(),
                    steady.writes,
                    steady.reads,
                    per_object,
                    by_route_text(&steady)
                ));
                report.row(
                    &format!("steady state: writes over {STEADY_RESYNCS} resyncs"),
                    steady.writes.to_string(),
                    "0",
                    Some(steady.writes == 0),
                );
                report.row(
                    "steady state: reads per object per resync",
                    format!("{per_object:.2} ({} reads)", steady.reads),
                    "",
                    None,
                );
            }

            // 5. Secret rotation.
            if phases.contains("rotation") {
                eprintln!("[bench] rotation: {ROTATIONS} Secret updates, one at a time");
                reset_counters(&emulator).await;
                let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
                let put_ok = "versori_api_requests_total{operation=\"update_connection\",method=\"PUT\",status=\"200\"}";
                let mut latencies = Vec::new();
                let mut last_value = HashMap::new();
                for r in 0..ROTATIONS {
                    let k = r % scale.connections;
                    let value = api_key(k, r + 1);
                    let before = series(&metrics(&m, &op).await, put_ok);
                    let name = format!("{}-key", connection_name("bench", k));
                    let patch = json!({ "stringData": { "apiKey": value } });
                    let t0 = Instant::now();
                    secrets
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .expect("rotating a Secret");
                    loop {
                        if series(&metrics(&m, &op).await, put_ok) > before {
                            break;
                        }
                        assert!(
                            t0.elapsed() < Duration::from_secs(60),
                            "rotation {r} not sent within 60 s:\n{}",
                            tail(&op)
                        );
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    latencies.push(t0.elapsed());
                    last_value.insert(connection_name("bench", k), value);
                    tokio::time::sleep(Duration::from_millis(rand::random_range(10..60))).await;
                }
                // Every new value reached Versori, with one PUT each.
                let state = emulator.state().await;
                let rotation_calls = count_calls(&state);
                let mut wrong = 0;
                for connection in state["connections"].as_array().into_iter().flatten() {
                    let Some(expected) =
                        connection["name"].as_str().and_then(|n| last_value.get(n))
                    else {
                        continue;
                    };
                    let stored =
                        connection["credentials"][0]["credential"]["data"]["string"]["value"]
                            .as_str();
                    if stored != Some(expected.as_str()) {
                        wrong += 1;
                    }
                }
                assert_eq!(
                    wrong, 0,
                    "{wrong} rotated connections do not hold their new value in Versori"
                );
                latencies.sort();
                let pct = |p: f64| {
                    latencies[((latencies.len() as f64 * p).ceil() as usize)
                        .clamp(1, latencies.len())
                        - 1]
                };
                let (p50, p99, max) = (pct(0.50), pct(0.99), *latencies.last().expect("rotations"));
                let puts = rotation_calls
                    .by_route
                    .get("PUT /o/{org}/connections/{connection_id}")
                    .copied()
                    .unwrap_or(0);
                report.note(format!(
                    "rotation: {ROTATIONS} rotations, p50 {} p99 {} max {}; {} PUT /connections/{{id}} in Versori; all {} values verified in the emulator state; calls in the phase (resyncs included): {}",
                    secs(p50),
                    secs(p99),
                    secs(max),
                    puts,
                    last_value.len(),
                    by_route_text(&rotation_calls)
                ));
                report.row(
                    "rotation: Secret update to credential in Versori, p50",
                    format!("{:.0} ms", p50.as_secs_f64() * 1000.0),
                    "",
                    None,
                );
                report.row(
                    "rotation: p99",
                    format!(
                        "{:.0} ms (max {:.0} ms)",
                        p99.as_secs_f64() * 1000.0,
                        max.as_secs_f64() * 1000.0
                    ),
                    "< 2 s",
                    Some(p99 < Duration::from_secs(2)),
                );
            }
            op.terminate(Duration::from_secs(10));
            drop(op);
        }
        report.note(format!(
            "Ready objects seen losing Ready from the first create to the end of the rotations: {}",
            readiness.flaps()
        ));
        report.row(
            "Ready objects seen losing Ready (convergence to end of rotations)",
            readiness
                .flaps()
                .split(' ')
                .next()
                .unwrap_or("0")
                .to_owned(),
            "0",
            Some(readiness.flaps() == "0"),
        );
        for watch in watches {
            watch.abort();
        }
    }
    drop(emulator);

    // 6. Memory.
    if phases.contains("memory") {
        let n = scale.memory_connections;
        let (systems, project_systems) = (scale.systems, scale.project_systems);
        let crs = n + systems + project_systems;
        eprintln!(
            "[bench] memory: {crs} custom resources and {n} Secrets in a fresh namespace, operator and emulator"
        );
        let emulator = Emulator::start(&seed());
        emulator
            .set_faults(json!({ "latencyMs": latency_ms() }))
            .await;
        let namespace = cluster.namespace("bench-mem").await;
        let mut op = Operator::start(
            cluster,
            &emulator,
            &operator_options(&namespace, Duration::from_secs(300)),
        );
        wait_operator_ready(&mut op).await;
        let pid = operator_pid().expect("the operator's PID");
        let (idle, _) = memory_kib(pid);
        let (readiness, watches) = Readiness::start(&client, &namespace);
        let world = world("mem", systems, project_systems, n);
        let kube_before = kube_requests(cluster);
        let since = Instant::now();
        let apply_time = apply(&client, &namespace, &world).await;
        eprintln!("[bench]   applied in {}", secs(apply_time));
        let done = readiness
            .wait_all(
                [
                    ("System", systems),
                    ("ProjectSystem", project_systems),
                    ("Connection", n),
                ],
                since,
                Duration::from_secs(1800),
            )
            .await;
        let (hwm_converge, rss_converge) = memory_kib(pid);
        let (kube_total, kube_text) = kube_delta(&kube_before, &kube_requests(cluster));
        let own = (crs + world.secrets.len()) as u64;
        report.note(format!(
            "memory: {kube_total} kube API requests while converging ({own} of them the bench's creates; {:.1} per object by the operator): {kube_text}",
            kube_total.saturating_sub(own) as f64 / crs as f64
        ));
        report.note(reconcile_profile(&metrics(&http(), &op).await));
        let state_text = |readiness: &Readiness| {
            ["System", "ProjectSystem", "Connection"]
                .iter()
                .map(|k| {
                    let (ready, seen) = readiness.count(k);
                    let rest = readiness.not_ready(k);
                    if rest.is_empty() {
                        format!("{k}: {ready}/{seen} Ready")
                    } else {
                        format!("{k}: {ready}/{seen} Ready, not ready: {rest}")
                    }
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let converge_time = done.iter().filter_map(|(_, d)| *d).max();
        report.note(format!(
            "memory: idle operator VmHWM {}; {crs} custom resources + {n} Secrets applied in {}; converged in {}; state: {}; VmHWM {} VmRSS {}",
            mib(idle),
            secs(apply_time),
            converge_time.map_or("(not all Ready)".into(), secs),
            state_text(&readiness),
            mib(hwm_converge),
            mib(rss_converge)
        ));
        op.terminate(Duration::from_secs(10));
        drop(op);
        // A restart with everything present: every object queued at once.
        let restart = Instant::now();
        let mut op = Operator::start(
            cluster,
            &emulator,
            &operator_options(&namespace, Duration::from_secs(300)),
        );
        wait_operator_ready(&mut op).await;
        let pid = operator_pid().expect("the operator's PID");
        let m = http();
        loop {
            let text = metrics(&m, &op).await;
            let done = [
                ("System", systems),
                ("ProjectSystem", project_systems),
                ("Connection", n),
            ]
            .iter()
            .all(|(kind, n)| {
                series(
                    &text,
                    &format!("versori_operator_reconciliations_total{{kind=\"{kind}\"}}"),
                ) >= *n as f64
                    && series(
                        &text,
                        &format!("versori_operator_reconciles_in_flight{{kind=\"{kind}\"}}"),
                    ) == 0.0
            });
            if done || restart.elapsed() > Duration::from_secs(900) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let restart_time = restart.elapsed();
        let (hwm_restart, rss_restart) = memory_kib(pid);
        report.note(format!(
            "memory: restart with {crs} custom resources present: first pass in {}; VmHWM {} VmRSS {}; state: {}; \
             Ready objects seen losing Ready since the first create: {}",
            secs(restart_time),
            mib(hwm_restart),
            mib(rss_restart),
            state_text(&readiness),
            readiness.flaps()
        ));
        let peak = hwm_converge.max(hwm_restart);
        report.row(
            &format!("memory: peak RSS, {crs} CRs converging from empty"),
            mib(hwm_converge),
            "",
            None,
        );
        report.row(
            &format!("memory: peak RSS, restart with {crs} CRs present"),
            mib(hwm_restart),
            "",
            None,
        );
        report.row(
            &format!("memory: peak RSS at {crs} custom resources"),
            mib(peak),
            if crs >= 10_000 {
                "< 64 MiB"
            } else {
                "(target at 10,000)"
            },
            (crs >= 10_000).then_some(peak < 64 * 1024),
        );
        for watch in watches {
            watch.abort();
        }
        op.terminate(Duration::from_secs(10));
        drop(op);
        drop(emulator);
    }

    let table = report.render();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nversori-operator benchmark, scale {} ({} s in all)",
        scale.name,
        started.elapsed().as_secs()
    );
    let _ = writeln!(out, "machine: {machine}\n");
    out.push_str(&table);
    out.push('\n');
    for note in &report.notes {
        let _ = writeln!(out, "- {note}");
    }
    println!("{out}");
    let results = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|p| match latency_ms() {
            20 => p.join(format!("bench-{}.txt", scale.name)),
            ms => p.join(format!("bench-{}-{ms}ms.txt", scale.name)),
        });
    if let Some(path) = results {
        let _ = std::fs::write(&path, &out);
        eprintln!("[bench] results written to {}", path.display());
    }
}

//! Failure test: the kube-apiserver is restarted (etcd kept) while the operator works. The
//! operator, never restarted, re-establishes its watches: what was applied before and after the
//! restart becomes Ready, and a Secret rotated after the restart still reaches Versori.
//!
//! Its own test binary, so its own control plane: the restart disturbs no other test. `make test`
//! runs the short version; `make chaos` (`CHAOS=long`) applies more objects and restarts the
//! apiserver three times with longer outages. `CHAOS_SEED=N` replays the timing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::operator::{Operator, OperatorOptions};
use common::{Emulator, TestCluster};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use versori_operator::resources::{Connection, ProjectSystem, System};

const PROJECT: &str = "01KKBR46SH7JES8AZ14EEAK0CX";

fn long() -> bool {
    std::env::var("CHAOS").is_ok_and(|v| v == "long")
}

fn chaos_seed() -> u64 {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!(
        "apiserver restart: chaos seed {seed} (replay with CHAOS_SEED={seed}), mode {}",
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

/// `systems` Systems with an api-key scheme, each linked twice to production, each template with
/// two Connections whose keys come from one Secret per Connection.
struct Fleet {
    key_prefix: String,
}

impl Fleet {
    const PER_SYSTEM: usize = 2;
    const PER_TEMPLATE: usize = 2;

    /// (kind, name) of every resource under the Systems in `systems`.
    fn names(&self, systems: std::ops::Range<usize>) -> Vec<(&'static str, String)> {
        let mut names = Vec::new();
        for i in systems {
            names.push(("System", format!("sys-{i}")));
            for j in 0..Self::PER_SYSTEM {
                names.push(("ProjectSystem", format!("ps-{i}-{j}")));
                for k in 0..Self::PER_TEMPLATE {
                    names.push(("Connection", format!("conn-{i}-{j}-{k}")));
                }
            }
        }
        names
    }

    fn key(&self, connection: &str) -> String {
        format!("{}-{connection}", self.key_prefix)
    }

    fn manifests(&self, systems: std::ops::Range<usize>) -> String {
        let mut out = String::new();
        for i in systems {
            out.push_str(&format!(
                "---\napiVersion: versori.com/v1alpha1\nkind: System\nmetadata: {{ name: sys-{i} }}\nspec:\n  domain: sys-{i}.example\n  templateBaseUrl: https://sys-{i}.example/\n  authSchemes:\n    - id: api-key\n      type: api-key\n      description: API key in a header\n      apiKey: {{ name: X-API-Key, in: header }}\n"
            ));
            for j in 0..Self::PER_SYSTEM {
                out.push_str(&format!(
                    "---\napiVersion: versori.com/v1alpha1\nkind: ProjectSystem\nmetadata: {{ name: ps-{i}-{j} }}\nspec:\n  projectId: {PROJECT}\n  environment: production\n  systemRef: {{ name: sys-{i} }}\n  authSchemeConfigId: api-key\n"
                ));
                for k in 0..Self::PER_TEMPLATE {
                    let name = format!("conn-{i}-{j}-{k}");
                    out.push_str(&format!(
                        "---\napiVersion: v1\nkind: Secret\nmetadata: {{ name: {name} }}\nstringData: {{ apiKey: {} }}\n---\napiVersion: versori.com/v1alpha1\nkind: Connection\nmetadata: {{ name: {name} }}\nspec:\n  projectSystemRef: {{ name: ps-{i}-{j} }}\n  credentials: {{ apiKey: {{ secretKeyRef: {{ name: {name}, key: apiKey }} }} }}\n",
                        self.key(&name)
                    ));
                }
            }
        }
        out
    }
}

/// (kind, name) -> (Ready, reason, Versori ID in status).
type Snapshot = BTreeMap<(&'static str, String), (bool, String, Option<String>)>;

fn entry(conditions: &[Condition], id: Option<String>) -> (bool, String, Option<String>) {
    let ready = conditions.iter().find(|c| c.type_ == "Ready");
    (
        ready.is_some_and(|c| c.status == "True"),
        ready.map(|c| c.reason.clone()).unwrap_or_default(),
        id,
    )
}

async fn snapshot(client: &kube::Client, namespace: &str) -> Result<Snapshot, kube::Error> {
    let lp = ListParams::default();
    let mut out = Snapshot::new();
    for s in Api::<System>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await?
    {
        let st = s.status.clone().unwrap_or_default();
        out.insert(
            ("System", s.name_any()),
            entry(&st.common.conditions, st.id),
        );
    }
    for p in Api::<ProjectSystem>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await?
    {
        let st = p.status.clone().unwrap_or_default();
        out.insert(
            ("ProjectSystem", p.name_any()),
            entry(&st.common.conditions, st.connection_template_id),
        );
    }
    for c in Api::<Connection>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await?
    {
        let st = c.status.clone().unwrap_or_default();
        out.insert(
            ("Connection", c.name_any()),
            entry(&st.common.conditions, st.id),
        );
    }
    Ok(out)
}

fn not_ready(snapshot: &Snapshot, expected: &[(&'static str, String)]) -> BTreeMap<String, usize> {
    let mut reasons = BTreeMap::new();
    for key in expected {
        let reason = match snapshot.get(key) {
            None => "(missing)".to_owned(),
            Some((true, _, Some(_))) => continue,
            Some((_, reason, _)) if reason.is_empty() => "(no condition)".to_owned(),
            Some((_, reason, _)) => reason.clone(),
        };
        *reasons.entry(format!("{}/{reason}", key.0)).or_default() += 1;
    }
    reasons
}

fn state_key(kind: &str) -> &'static str {
    match kind {
        "System" => "systems",
        "ProjectSystem" => "connectionTemplates",
        _ => "connections",
    }
}

fn items<'a>(state: &'a Value, key: &str) -> &'a [Value] {
    state[key].as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn log_tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `tests/cluster/restart-apiserver DIR --down SECONDS`; panics with its output on failure.
fn restart_apiserver(cluster: &TestCluster, down: Duration) -> Duration {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster/restart-apiserver");
    let started = Instant::now();
    let output = Command::new(&script)
        .arg(&cluster.dir)
        .arg("--down")
        .arg(format!("{:.3}", down.as_secs_f64()))
        .output()
        .expect("running tests/cluster/restart-apiserver");
    assert!(
        output.status.success(),
        "tests/cluster/restart-apiserver failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    started.elapsed()
}

/// `kubectl apply` of `yaml`, retried every 500 ms until the apiserver takes it.
fn apply_until_accepted(cluster: &TestCluster, namespace: &str, yaml: &str, timeout: Duration) {
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let output = cluster.kubectl_apply_stdin(yaml, &["-n", namespace]);
        if output.status.success() {
            eprintln!(
                "kubectl apply accepted after {attempts} attempt(s), {:.1?}",
                started.elapsed()
            );
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "kubectl apply still failing after {timeout:?} ({attempts} attempts):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn apiserver_pid(cluster: &TestCluster) -> String {
    std::fs::read_to_string(cluster.dir.join("apiserver.pid"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[tokio::test]
async fn the_operator_rides_out_an_apiserver_restart() {
    let started = Instant::now();
    let seed = chaos_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let (systems, restarts, down_ms) = if long() {
        (10, 3, 3000..15000)
    } else {
        (4, 1, 1000..3000)
    };
    let fleet = Fleet {
        key_prefix: format!("key-{seed:x}"),
    };
    let cluster = common::cluster().await;
    let namespace = cluster.namespace("apiserver").await;
    let emulator = Emulator::start(&seed_yaml());
    let mut options = OperatorOptions::new(&namespace);
    // No periodic resync within the test: only the watches can bring the work in (a failed
    // reconcile still retries with its backoff).
    options.resync = "1h".into();
    // kube-runtime's watch backoff decisions, for the failure message.
    options.env.push((
        "RUST_LOG".into(),
        "info,versori_operator=debug,kube_runtime::utils::stream_backoff=debug".into(),
    ));
    let mut operator = Operator::start(cluster, &emulator, &options);
    let client = cluster.client().await;
    let expected = fleet.names(0..systems);
    let half = systems / 2;
    eprintln!(
        "{} resources: {} applied before the restart, the rest after",
        expected.len(),
        fleet.names(0..half).len()
    );

    // Half, then restart(s) while the operator is busy with it.
    apply_until_accepted(
        cluster,
        &namespace,
        &fleet.manifests(0..half),
        Duration::from_secs(60),
    );
    for restart in 1..=restarts {
        let before = Duration::from_millis(rng.random_range(200..2000));
        tokio::time::sleep(before).await;
        let down = Duration::from_millis(rng.random_range(down_ms.clone()));
        let old_pid = apiserver_pid(cluster);
        let ready = snapshot(&client, &namespace)
            .await
            .map(|s| s.values().filter(|(r, _, _)| *r).count())
            .unwrap_or(0);
        eprintln!(
            "restart {restart}/{restarts} after {before:?} ({ready} resources Ready), down for {down:?}"
        );
        let restart_thread = std::thread::spawn(move || restart_apiserver(cluster, down));
        if restart == 1 {
            // The rest is applied as soon as the apiserver answers again.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (namespace, yaml) = (namespace.clone(), fleet.manifests(half..systems));
            tokio::task::spawn_blocking(move || {
                apply_until_accepted(cluster, &namespace, &yaml, Duration::from_secs(120))
            })
            .await
            .expect("applying the second half");
        }
        let took = restart_thread.join().expect("restart thread panicked");
        let new_pid = apiserver_pid(cluster);
        assert_ne!(old_pid, new_pid, "the apiserver was restarted");
        eprintln!("apiserver {old_pid} -> {new_pid} in {took:.1?}");
        assert!(
            operator.is_running(),
            "the operator exited when the apiserver went away:\n{}",
            log_tail(&operator.logs(), 40)
        );
    }

    let back = Instant::now();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);

    // A Secret rotated as soon as the apiserver is back, for a Connection made before the
    // restart: only the re-established Secret watch can bring it in (no periodic resync here).
    let early = "conn-0-0-0";
    let early_key = format!("{}-rotated-early", fleet.key(early));
    rotate(&secrets, early, &early_key).await;

    // Everything Ready and the rotated key in Versori, by the same operator process.
    let hard_timeout = Duration::from_secs(if long() { 300 } else { 180 });
    let mut early_rotation_seen = None;
    let snapshot = loop {
        let snapshot = match snapshot(&client, &namespace).await {
            Ok(s) => s,
            Err(e) => panic!("listing the resources after the restart: {e}"),
        };
        let pending = not_ready(&snapshot, &expected);
        if early_rotation_seen.is_none()
            && versori_key(&emulator.state().await, early).as_deref() == Some(early_key.as_str())
        {
            early_rotation_seen = Some(back.elapsed());
        }
        if pending.is_empty() && early_rotation_seen.is_some() {
            break snapshot;
        }
        assert!(
            back.elapsed() < hard_timeout,
            "{hard_timeout:?} after the apiserver came back: not Ready: {pending:?}; the key \
             rotated at once {}\n{}",
            if early_rotation_seen.is_some() {
                "reached Versori"
            } else {
                "never reached Versori"
            },
            diagnostics(&operator.logs())
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let recovered = back.elapsed();
    let early_rotation = early_rotation_seen.unwrap_or_default();
    eprintln!(
        "after the apiserver came back: all {} resources Ready after {recovered:.1?}, the key \
         rotated at once reached Versori after {early_rotation:.1?}",
        expected.len(),
    );
    assert!(
        operator.is_running(),
        "the same operator process is still running"
    );

    // Exactly one Versori object per resource, with the ID in status.
    let state = emulator.state().await;
    for kind in ["System", "ProjectSystem", "Connection"] {
        let wanted: Vec<&String> = expected
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n)
            .collect();
        let objects = items(&state, state_key(kind));
        assert_eq!(
            objects.len(),
            wanted.len(),
            "{} Versori {kind} objects for {} resources: {}",
            objects.len(),
            wanted.len(),
            state[state_key(kind)]
        );
        for name in wanted {
            let found: Vec<&Value> = objects.iter().filter(|o| o["name"] == **name).collect();
            let [object] = found[..] else {
                panic!("{} Versori {kind} objects named {name}", found.len());
            };
            let in_status = snapshot
                .get(&(kind, name.clone()))
                .and_then(|(_, _, id)| id.clone());
            assert_eq!(
                object["id"].as_str(),
                in_status.as_deref(),
                "{kind} {name}: status and Versori disagree on the ID"
            );
        }
    }

    // Once settled, a rotation (of a Connection made after the restart) is seen within seconds.
    let late = format!("conn-{half}-1-1");
    let late_key = format!("{}-rotated-late", fleet.key(&late));
    let rotated_at = Instant::now();
    rotate(&secrets, &late, &late_key).await;
    let deadline = Duration::from_secs(15);
    while versori_key(&emulator.state().await, &late).as_deref() != Some(late_key.as_str()) {
        assert!(
            rotated_at.elapsed() < deadline,
            "the rotated key of {late} did not reach Versori within {deadline:?}\n{}",
            diagnostics(&operator.logs())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "the key of {late}, rotated once everything was Ready, reached Versori after {:.1?}",
        rotated_at.elapsed()
    );

    // The bound on the recovery. The outage (a 5 s drain, then 1-3 s down and a few seconds of
    // startup; long: 3-15 s down, three times) is under 20 s (long: 30 s) of failing requests.
    // A watch that backs off the way client-go's reflector does (0.8 s doubling to a 30 s cap,
    // per watch, and a re-list at once on 410 Gone) is back at most ~26 s (long: 30 s) after the
    // apiserver; the work left (28 resources; long: 70) takes a few seconds more. A controller
    // that stays blind longer misses dependants becoming ready and Secret rotations as long.
    let bound = Duration::from_secs(if long() { 60 } else { 45 });
    assert!(
        recovered <= bound && early_rotation <= bound,
        "the operator took {recovered:.1?} to bring everything Ready and {early_rotation:.1?} to \
         pass on a Secret rotated as the apiserver came back (bound: {bound:?})\n{}",
        diagnostics(&operator.logs())
    );
    assert!(operator.is_running(), "the operator is still running");
    let logs = operator.logs();
    assert_eq!(
        logs.matches("\"message\":\"starting versori-operator\"")
            .count(),
        1,
        "one operator process from start to end"
    );
    eprintln!(
        "apiserver restart: {} resources, {restarts} restart(s), seed {seed}: passed in {:.1?}; \
         the operator logged {} lines, {} of them warnings",
        expected.len(),
        started.elapsed(),
        logs.lines().count(),
        logs.lines()
            .filter(|l| l.contains("\"level\":\"WARN\""))
            .count()
    );
    operator.kill();
}

/// Sets the `apiKey` of Secret `name`.
async fn rotate(secrets: &Api<Secret>, name: &str, value: &str) {
    secrets
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "stringData": { "apiKey": value } })),
        )
        .await
        .unwrap_or_else(|e| panic!("rotating Secret {name}: {e}"));
}

/// The API key Versori holds for connection `name`.
fn versori_key(state: &Value, name: &str) -> Option<String> {
    items(state, "connections")
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["credentials"][0]["credential"]["data"]["string"]["value"].as_str())
        .map(str::to_owned)
}

/// What the operator's watches did (kube-runtime's trigger backoff and the watch errors behind
/// it), for failure messages.
fn diagnostics(logs: &str) -> String {
    let mut out = Vec::new();
    for line in logs.lines() {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let message = entry["message"].as_str().unwrap_or_default();
        let error = entry["error"].as_str().unwrap_or_default();
        if message.contains("backing off") || error.contains("event queue error") {
            out.push(format!(
                "  {} {message} {} {error}",
                entry["timestamp"].as_str().unwrap_or_default(),
                entry["duration"].as_str().unwrap_or_default()
            ));
        }
    }
    format!(
        "watch errors and kube-runtime's trigger backoff in the operator:\n{}\noperator log \
         tail:\n{}",
        out.join("\n"),
        log_tail(logs, 12)
    )
}

//! Shared harness for integration tests (`mod common;`).
//!
//! * [`cluster`]: one real control plane (etcd + kube-apiserver, see `tests/cluster/start`) per test
//!   binary, started lazily by the first test that asks for it, with the repository's CRDs installed.
//!   It is torn down by a watcher process once the test binary exits.
//! * [`namespace`]: a fresh namespace per test.
//! * [`kubectl`] / [`kubectl_apply_stdin`]: kubectl bound to the test cluster.
//! * [`Emulator`]: the `versori-emulator` binary as a child process ([`emulator_binary`]).
//!
//! The control plane has no controller-manager: namespaces never finish deleting and ownerReference
//! garbage collection does not happen, so tests must not wait for either.
#![allow(dead_code)]

pub mod operator;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// The per-binary test control plane. Only paths live here: a `kube::Client` is bound to the tokio
/// runtime it was created on and every `#[tokio::test]` has its own runtime, so get a client per test
/// with [`TestCluster::client`].
#[derive(Debug)]
pub struct TestCluster {
    /// Directory holding etcd data, logs (`etcd.log`, `apiserver.log`) and credentials.
    pub dir: PathBuf,
    /// Admin kubeconfig (static token in group `system:masters`).
    pub kubeconfig: PathBuf,
}

static CLUSTER: OnceLock<Result<TestCluster, String>> = OnceLock::new();

/// The control plane for this test binary, starting it on first use (takes a few seconds).
pub async fn cluster() -> &'static TestCluster {
    tokio::task::spawn_blocking(cluster_blocking)
        .await
        .expect("starting the test control plane panicked")
}

/// Like [`cluster`], for synchronous code. Blocks the calling thread while the cluster starts.
pub fn cluster_blocking() -> &'static TestCluster {
    // The result (also a failure) is cached so that a broken control plane fails every test quickly
    // with the same message instead of every test retrying a 60 s startup.
    match CLUSTER.get_or_init(start_cluster) {
        Ok(cluster) => cluster,
        Err(message) => panic!("test control plane unavailable: {message}"),
    }
}

fn start_cluster() -> Result<TestCluster, String> {
    // target/test-clusters/<random>; `make clean-clusters` stops and removes leftovers.
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let parent = target_dir.join("test-clusters");
    std::fs::create_dir_all(&parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    prune_stopped_clusters(&parent);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{}-", std::process::id()))
        .tempdir_in(&parent)
        .map_err(|e| format!("creating a cluster directory in {}: {e}", parent.display()))?
        // The watcher stops the control plane after this process exits, so the directory must
        // outlive us; its logs stay around for debugging.
        .keep();

    let start = Path::new(MANIFEST_DIR).join("tests/cluster/start");
    let output = Command::new(&start)
        .arg(&dir)
        .arg("--owner-pid")
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", start.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} {} failed ({}):\n{}{}",
            start.display(),
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        ));
    }
    let cluster = TestCluster {
        kubeconfig: dir.join("kubeconfig"),
        dir,
    };
    cluster.install_crds()?;
    Ok(cluster)
}

/// Removes the directories of earlier runs whose test binary has exited and whose control plane has
/// been stopped (their logs are kept until the next run for debugging).
fn prune_stopped_clusters(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let owner_alive = Path::new("/proc").join(owner.to_string()).exists();
        let running = ["apiserver.pid", "etcd.pid", "watcher.pid"]
            .iter()
            .any(|pid_file| path.join(pid_file).exists());
        if !owner_alive && !running {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

impl TestCluster {
    /// A new client for the calling test's runtime.
    pub async fn client(&self) -> Client {
        Client::try_from(self.config().await).expect("building a kube::Client for the test cluster")
    }

    /// The kube configuration for the admin user of the test cluster.
    pub async fn config(&self) -> Config {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("reading test kubeconfig");
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("loading test kubeconfig")
    }

    /// Runs kubectl against this cluster.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command(args)
            .stdin(Stdio::null())
            .output()
            .expect("running kubectl (is it on PATH?)")
    }

    /// Runs `kubectl apply -f - <extra_args>` with `yaml` on stdin.
    pub fn kubectl_apply_stdin(&self, yaml: &str, extra_args: &[&str]) -> Output {
        let mut args = vec!["apply", "-f", "-"];
        args.extend_from_slice(extra_args);
        self.kubectl_stdin(&args, yaml)
    }

    /// Runs kubectl against this cluster with `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .kubectl_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl (is it on PATH?)");
        let mut stdin = child.stdin.take().expect("kubectl stdin");
        let input = input.to_owned();
        // Write from a thread so a large input cannot deadlock against kubectl's output.
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(input.as_bytes());
        });
        let output = child.wait_with_output().expect("waiting for kubectl");
        writer.join().expect("kubectl stdin writer panicked");
        output
    }

    fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env_remove("KUBECONFIG");
        command
    }

    /// Creates a namespace named `{prefix}-{random}` and returns its name.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = unique_name(prefix);
        let namespaces: Api<Namespace> = Api::all(self.client().await);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        name
    }

    /// The last `lines` lines of the kube-apiserver log, for failure messages.
    pub fn apiserver_log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("apiserver.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn install_crds(&self) -> Result<(), String> {
        let crds = Path::new(MANIFEST_DIR).join("crds");
        let has_yaml = std::fs::read_dir(&crds)
            .map(|entries| {
                entries.filter_map(Result::ok).any(|entry| {
                    entry
                        .path()
                        .extension()
                        .is_some_and(|ext| ext == "yaml" || ext == "yml")
                })
            })
            .unwrap_or(false);
        if !has_yaml {
            return Ok(());
        }
        let crds = crds.to_string_lossy();
        let steps: [&[&str]; 2] = [
            &["apply", "--server-side", "-f", &crds],
            &[
                "wait",
                "--for=condition=Established",
                "crd",
                "--all",
                "--timeout=60s",
            ],
        ];
        for args in steps {
            let mut output = self.kubectl(args);
            // `kubectl wait` fails at once ("<nil> is of the type <nil>") on a CRD the apiserver
            // has not given conditions yet: try again a few times before calling it a failure.
            for _ in 0..10 {
                if output.status.success() || args[0] != "wait" {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
                output = self.kubectl(args);
            }
            if !output.status.success() {
                return Err(format!(
                    "kubectl {} failed ({}):\n{}{}",
                    args.join(" "),
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr),
                ));
            }
        }
        Ok(())
    }
}

/// Creates a fresh namespace `{prefix}-{random}` in the test cluster and returns its name.
pub async fn namespace(prefix: &str) -> String {
    cluster().await.namespace(prefix).await
}

/// Runs kubectl against the test cluster (starting it if needed).
pub fn kubectl(args: &[&str]) -> Output {
    cluster_blocking().kubectl(args)
}

/// Runs `kubectl apply -f - <extra_args>` against the test cluster with `yaml` on stdin.
pub fn kubectl_apply_stdin(yaml: &str, extra_args: &[&str]) -> Output {
    cluster_blocking().kubectl_apply_stdin(yaml, extra_args)
}

/// Panics with kubectl's output unless it succeeded; returns stdout.
pub fn assert_success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `{prefix}-{8 random hex digits}`, made a valid DNS-1123 label.
pub fn unique_name(prefix: &str) -> String {
    let mut prefix: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    prefix.truncate(63 - 9);
    let prefix = prefix.trim_matches('-');
    let suffix = format!("{:08x}", rand::random::<u32>());
    if prefix.is_empty() {
        format!("t-{suffix}")
    } else {
        format!("{prefix}-{suffix}")
    }
}

/// The `versori-emulator` binary. It belongs to another workspace member
/// (`crates/versori-emulator`), and cargo sets `CARGO_BIN_EXE_*` only for this package's own
/// binaries, so it is looked for next to the operator's binary (same target directory and
/// profile) after a `cargo build -p versori-emulator` (once per test process; a no-op when it
/// is fresh). That way `cargo test --test X`, which builds only this package's targets, still
/// runs the current emulator.
pub fn emulator_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let operator = Path::new(env!("CARGO_BIN_EXE_versori-operator"));
        let profile_dir = operator
            .parent()
            .expect("the operator binary lives in a target profile directory");
        let binary = profile_dir.join(format!("versori-emulator{}", std::env::consts::EXE_SUFFIX));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "--quiet", "--locked", "-p", "versori-emulator"])
            .args(["--bin", "versori-emulator"])
            .current_dir(MANIFEST_DIR);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        if let Some(target_dir) = profile_dir.parent() {
            build.env("CARGO_TARGET_DIR", target_dir);
        }
        let status = build
            .status()
            .expect("running cargo build -p versori-emulator");
        assert!(
            status.success() && binary.is_file(),
            "cargo build -p versori-emulator failed ({status}) or left no {}",
            binary.display()
        );
        binary
    })
}

/// Organisation the emulator is started with by [`Emulator::start`].
pub const EMULATOR_ORGANISATION: &str = "test-org";

/// `versori-emulator` running as a child process on a random loopback port. Killed on drop.
pub struct Emulator {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base_url: String,
    /// Bearer token the emulator accepts.
    pub token: String,
    /// Organisation the emulator serves.
    pub organisation: String,
    child: Child,
    _seed: tempfile::NamedTempFile,
}

impl Emulator {
    /// Starts the emulator with organisation [`EMULATOR_ORGANISATION`], a random token and the
    /// given seed YAML (an empty string means no `--seed`).
    pub fn start(seed_yaml: &str) -> Emulator {
        let token = format!("test-token-{:016x}", rand::random::<u64>());
        Emulator::start_with(EMULATOR_ORGANISATION, &token, seed_yaml)
    }

    pub fn start_with(organisation: &str, token: &str, seed_yaml: &str) -> Emulator {
        let seed = tempfile::Builder::new()
            .prefix("emulator-seed-")
            .suffix(".yaml")
            .tempfile()
            .expect("creating emulator seed file");
        std::fs::write(seed.path(), seed_yaml).expect("writing emulator seed file");

        let mut command = Command::new(emulator_binary());
        command
            .args(["--listen", "127.0.0.1:0", "--organisation", organisation])
            .args(["--token", token]);
        if !seed_yaml.trim().is_empty() {
            command.arg("--seed").arg(seed.path());
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning versori-emulator");

        // Forward the emulator's output to the test's (captured) output, and watch stdout for the
        // line announcing the address. Both pipes must keep being drained for the child's lifetime.
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("emulator stdout");
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[emulator] {line}");
                if let Some(addr) = line.strip_prefix("versori-emulator listening on ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let stderr = child.stderr.take().expect("emulator stderr");
        std::thread::spawn(move || forward_lines("[emulator] ", stderr));

        let base_url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url.trim_end_matches('/').to_owned(),
            Err(e) => {
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "versori-emulator did not print 'versori-emulator listening on http://ADDR' \
                     ({e}; exit status: {status:?}); its output is above"
                );
            }
        };
        Emulator {
            base_url,
            token: token.to_owned(),
            organisation: organisation.to_owned(),
            child,
            _seed: seed,
        }
    }

    /// `{base_url}{path}`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// GET `/_emulator/state`.
    pub async fn state(&self) -> serde_json::Value {
        let response = http()
            .get(self.url("/_emulator/state"))
            .send()
            .await
            .expect("GET /_emulator/state");
        let response = check(response, "GET /_emulator/state").await;
        response
            .json()
            .await
            .expect("GET /_emulator/state: response is not JSON")
    }

    /// PUT `/_emulator/faults` with `faults` as the JSON body.
    pub async fn set_faults(&self, faults: serde_json::Value) {
        let response = http()
            .put(self.url("/_emulator/faults"))
            .json(&faults)
            .send()
            .await
            .expect("PUT /_emulator/faults");
        check(response, "PUT /_emulator/faults").await;
    }

    /// DELETE `/_emulator/faults`.
    pub async fn clear_faults(&self) {
        let response = http()
            .delete(self.url("/_emulator/faults"))
            .send()
            .await
            .expect("DELETE /_emulator/faults");
        check(response, "DELETE /_emulator/faults").await;
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh HTTP client: like kube clients, reqwest clients are tied to the runtime they first ran on.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("building reqwest client")
}

async fn check(response: reqwest::Response, what: &str) -> reqwest::Response {
    let status = response.status();
    if status.is_success() {
        return response;
    }
    let body = response.text().await.unwrap_or_default();
    panic!("{what}: HTTP {status}: {body}");
}

fn forward_lines(prefix: &str, stream: impl Read) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        eprintln!("{prefix}{line}");
    }
}

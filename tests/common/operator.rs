//! The `versori-operator run` binary as a child process of a test, logging to a file.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Emulator, TestCluster};

/// A running operator. Dropping it kills the process.
pub struct Operator {
    child: Option<Child>,
    /// Where its stdout and stderr go (JSON log lines).
    pub log: PathBuf,
    /// `host:port` of its metrics and health server.
    pub metrics_addr: String,
}

/// Settings a test may change.
#[derive(Clone)]
pub struct OperatorOptions {
    /// Namespace to watch.
    pub namespace: String,
    /// Drift resync interval (e.g. `3s`).
    pub resync: String,
    /// Leader election on a Lease in `namespace`.
    pub leader_election: bool,
    /// Identity for leader election.
    pub identity: String,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl OperatorOptions {
    /// Defaults for a test namespace: a short resync, no leader election.
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            resync: "3s".into(),
            leader_election: false,
            identity: format!("test-{}", std::process::id()),
            env: Vec::new(),
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free port")
}

impl Operator {
    /// Starts the operator against the test cluster and the emulator.
    pub fn start(
        cluster: &TestCluster,
        emulator: &Emulator,
        options: &OperatorOptions,
    ) -> Operator {
        let log = cluster.dir.join(format!(
            "operator-{}-{}-{}.log",
            options.namespace,
            options.identity,
            free_port()
        ));
        let file = std::fs::File::create(&log).expect("creating the operator log");
        let stderr = file.try_clone().expect("cloning the log file handle");
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_versori-operator"));
        command
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("VERSORI_API_URL", &emulator.base_url)
            .env("VERSORI_ORGANISATION_ID", &emulator.organisation)
            .env("VERSORI_API_TOKEN", &emulator.token)
            .env("WATCH_NAMESPACES", &options.namespace)
            .env("VERSORI_RESYNC_INTERVAL", &options.resync)
            .env("METRICS_ADDR", &metrics_addr)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info,versori_operator=debug")
            .env("LEADER_ELECTION", options.leader_election.to_string())
            .env("POD_NAMESPACE", &options.namespace)
            .env("POD_NAME", &options.identity)
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(stderr));
        let child = command.spawn().expect("starting versori-operator");
        Operator {
            child: Some(child),
            log,
            metrics_addr,
        }
    }

    /// Everything the operator logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `grace` before SIGKILL.
    pub fn terminate(&mut self, grace: Duration) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + grace;
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

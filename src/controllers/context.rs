//! What every reconcile shares: clients, the event recorder, metrics and per-object backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::OAuth2Settings;
use super::secrets::SecretSettings;
use crate::metrics::Metrics;
use crate::versori::VersoriClient;

/// The field manager and event reporter name.
pub const MANAGER: &str = "versori-operator";

/// Shared state of the controllers.
pub struct Context {
    /// Kubernetes client.
    pub client: kube::Client,
    /// Versori client (with its own cap on requests in flight).
    pub versori: VersoriClient,
    /// Publishes Kubernetes events (one recorder, so its de-duplication cache is shared).
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Base interval of the drift resync.
    pub resync_interval: Duration,
    /// The in-cluster authorization code flow, if configured.
    pub oauth2: Option<OAuth2Settings>,
    /// Which Secrets may be read, and the credential hash key.
    pub secret_settings: SecretSettings,
    backoffs: Mutex<HashMap<String, ExponentialBackoff>>,
    slots: HashMap<&'static str, Semaphore>,
}

impl Context {
    /// A new context.
    pub fn new(
        client: kube::Client,
        versori: VersoriClient,
        metrics: Arc<Metrics>,
        resync_interval: Duration,
        concurrency: u16,
        oauth2: Option<OAuth2Settings>,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            versori,
            metrics,
            resync_interval,
            oauth2,
            secret_settings: SecretSettings::default(),
            backoffs: Mutex::new(HashMap::new()),
            slots: ["System", "ProjectSystem", "Connection"]
                .into_iter()
                .map(|kind| (kind, Semaphore::new(usize::from(concurrency.max(1)))))
                .collect(),
        }
    }

    /// Sets the Secret policy and the credential hash key.
    pub fn with_secret_settings(mut self, settings: SecretSettings) -> Self {
        self.secret_settings = settings;
        self
    }

    /// Waits for one of the kind's reconcile slots. kube-runtime's own queue is not observable,
    /// so the controllers run unbounded there and queue here instead, where the wait shows as
    /// `versori_operator_queue_depth`. kube-runtime still never runs one object twice at once.
    pub async fn reconcile_slot(&self, kind: &'static str) -> Option<SemaphorePermit<'_>> {
        let slots = self.slots.get(kind)?;
        self.metrics.queue_wait_started(kind);
        let permit = slots.acquire().await.ok();
        self.metrics.queue_wait_finished(kind);
        permit
    }

    /// The next retry delay for a failing object: exponential from 1 s to 60 s with jitter
    /// (Crossplane's range), per object.
    pub fn next_backoff(&self, key: &str) -> Duration {
        let mut backoffs = match self.backoffs.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let backoff = backoffs.entry(key.to_owned()).or_insert_with(|| {
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_secs(1))
                .with_max_delay(Duration::from_secs(60))
                .with_factor(2.0)
                .with_jitter()
                .without_max_times()
                .build()
        });
        backoff.next().unwrap_or(Duration::from_secs(60))
    }

    /// Forgets an object's failures after a success or its deletion.
    pub fn reset_backoff(&self, key: &str) {
        let mut backoffs = match self.backoffs.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        backoffs.remove(key);
    }

    /// The resync delay with ±10 % jitter, so that many objects do not resync in the same second.
    pub fn resync_delay(&self) -> Duration {
        let jitter = rand::random_range(0.9..1.1);
        self.resync_interval.mul_f64(jitter)
    }
}

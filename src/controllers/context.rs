//! What every reconcile shares: clients, the event recorder, metrics and per-object backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};

use super::OAuth2Settings;
use super::listings::Listings;
use super::marker::Attempter;
use super::organisations::Organisations;
use super::secrets::SecretSettings;
use super::watches::Readiness;
use crate::metrics::Metrics;
use crate::resources::{ProjectSystem, System};
use crate::versori::VersoriClient;
use crate::versori::models::{ConnectionTemplate, Project};

/// How many events one recorder publishes before a fresh one (with an empty cache) takes over.
pub const RECORDER_CACHE_BOUND: usize = 1024;

/// The field manager and event reporter name.
pub const MANAGER: &str = "versori-operator";

/// Shared state of the controllers.
pub struct Context {
    /// Kubernetes client.
    pub client: kube::Client,
    /// The Versori clients: the operator's own, and one per `VersoriConfig` in use (each with
    /// its own cap on requests in flight and 401 breaker).
    pub organisations: Organisations,
    /// Publishes Kubernetes events: one recorder, so that its de-duplication cache is shared,
    /// replaced by a fresh one every [`RECORDER_CACHE_BOUND`] events (its cache keeps every
    /// event for six minutes, which at 10,000 creates is megabytes).
    recorder: Mutex<(Recorder, usize)>,
    reporter: Reporter,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Base interval of the drift resync.
    pub resync_interval: Duration,
    /// The in-cluster authorization code flow, if configured.
    pub oauth2: Option<OAuth2Settings>,
    /// Who this process is in create attempts (the pod name, and this process).
    pub attempter: Attempter,
    /// Which Secrets may be read, and the credential hash key.
    pub secret_settings: SecretSettings,
    backoffs: Mutex<HashMap<String, ExponentialBackoff>>,
    /// The resourceVersion of the operator's last write to each object (by UID), until the
    /// cache shows it.
    written: Mutex<HashMap<String, u64>>,
    /// Reconciles of one kind running at once (kube-runtime's own bound).
    pub concurrency: u16,
    /// Each environment's connection templates, shared by its ProjectSystems and Connections
    /// (by [`listings::environment_key`](super::listings::environment_key)).
    pub templates: Listings<Vec<ConnectionTemplate>>,
    /// Projects, for their environments' IDs.
    pub projects: Listings<Project>,
    /// The shared caches, once the controllers run (the OAuth 2.0 callback runs without).
    stores: OnceLock<Stores>,
    /// Per Connection (by UID): the hash of the credential Versori holds and the versions of
    /// the Secrets it was read from, so that a resync reads no Secret that did not change.
    sent_secrets: Mutex<HashMap<String, SentSecrets>>,
}

/// The Secrets behind a credential Versori holds: its hash and their (name, resourceVersion).
struct SentSecrets {
    hash: String,
    versions: Vec<(String, String)>,
}

/// The caches the reconciles read their dependencies from.
#[derive(Clone)]
pub struct Stores {
    /// Systems.
    pub systems: Store<System>,
    /// ProjectSystems.
    pub project_systems: Store<ProjectSystem>,
    /// Whether every watch has listed once.
    pub readiness: Readiness,
    /// The label selector of this operator's shard, if any.
    pub label_selector: Option<String>,
    /// Secrets, as namespace, name and resourceVersion.
    pub secrets: Store<PartialObjectMeta<Secret>>,
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
        // The pod name survives a container restart, so a restarted operator knows the attempts
        // of its previous life are over; without one every process is an instance of its own.
        let instance = std::env::var("POD_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("process-{:016x}", rand::random::<u64>()));
        Self {
            attempter: Attempter::new(instance),
            recorder: Mutex::new((Recorder::new(client.clone(), reporter.clone()), 0)),
            reporter,
            organisations: Organisations::new(
                versori,
                client.clone(),
                SecretSettings::default().policy,
            ),
            client,
            metrics,
            resync_interval,
            oauth2,
            secret_settings: SecretSettings::default(),
            backoffs: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            concurrency: concurrency.max(1),
            // Most of a resync interval: the ProjectSystems of an environment resync spread
            // over ±10 % of it and share one listing, and the operator's own writes invalidate
            // it at once; a change made behind its back shows within two intervals.
            templates: Listings::new(resync_interval.mul_f64(0.8)),
            projects: Listings::new(resync_interval),
            stores: OnceLock::new(),
            sent_secrets: Mutex::new(HashMap::new()),
        }
    }

    /// Hands the reconciles the shared caches (once).
    pub fn use_stores(&self, stores: Stores) {
        let _ = self.stores.set(stores);
    }

    /// The shared caches, if the controllers run.
    pub fn stores(&self) -> Option<&Stores> {
        self.stores.get()
    }

    /// Whether the caches are complete (or there are none to wait for).
    pub fn stores_ready(&self) -> bool {
        self.stores.get().is_none_or(|s| s.readiness.is_ready())
    }

    /// The System `name` in `namespace` from the cache: `Some(None)` when it is not cached,
    /// `None` when there is no cache to ask.
    pub fn cached_system(&self, namespace: &str, name: &str) -> Option<Option<Arc<System>>> {
        let stores = self.stores.get()?;
        Some(stores.systems.get(&ObjectRef::new(name).within(namespace)))
    }

    /// The ProjectSystem `name` in `namespace` from the cache, as [`Context::cached_system`].
    pub fn cached_project_system(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Option<Arc<ProjectSystem>>> {
        let stores = self.stores.get()?;
        Some(
            stores
                .project_systems
                .get(&ObjectRef::new(name).within(namespace)),
        )
    }

    /// The event recorder to publish with (a fresh one once the current has cached enough).
    fn recorder(&self) -> Recorder {
        let mut guard = match self.recorder.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.1 += 1;
        if guard.1 > RECORDER_CACHE_BOUND {
            *guard = (Recorder::new(self.client.clone(), self.reporter.clone()), 1);
        }
        guard.0.clone()
    }

    /// Publishes an event about `regarding` (its note cut to what the API takes); a failure is
    /// logged, never returned: an event is news, not part of the reconcile.
    pub async fn publish_event(
        &self,
        regarding: &k8s_openapi::api::core::v1::ObjectReference,
        type_: kube::runtime::events::EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = kube::runtime::events::Event {
            type_,
            reason: reason.into(),
            note: Some(super::events::truncate_note(note)),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder().publish(&event, regarding).await {
            tracing::warn!(%error, kind = ?regarding.kind, name = ?regarding.name, "could not publish an event");
        }
    }

    /// Sets the Secret policy and the credential hash key.
    pub fn with_secret_settings(mut self, settings: SecretSettings) -> Self {
        // Config token Secrets are read under the same policy as every other Secret.
        self.organisations = Organisations::new(
            self.organisations.default_client().clone(),
            self.client.clone(),
            settings.policy.clone(),
        );
        self.secret_settings = settings;
        self
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

    /// Remembers the version of an object this operator just wrote.
    pub fn wrote<K: kube::Resource>(&self, written: &K) {
        let (Some(uid), Some(version)) = (written.meta().uid.clone(), resource_version(written))
        else {
            return;
        };
        let mut map = match self.written.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let entry = map.entry(uid).or_insert(version);
        *entry = (*entry).max(version);
    }

    /// Forgets an object that is gone.
    pub fn forget_written(&self, uid: &str) {
        let mut map = match self.written.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.remove(uid);
        drop(map);
        let mut sent = match self.sent_secrets.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        sent.remove(uid);
    }

    /// Remembers that Versori holds the credential with `hash`, read from these Secret versions
    /// for the Connection with `uid`.
    pub fn remember_sent_secrets(&self, uid: &str, hash: &str, versions: Vec<(String, String)>) {
        let mut sent = match self.sent_secrets.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        sent.insert(
            uid.to_owned(),
            SentSecrets {
                hash: hash.to_owned(),
                versions,
            },
        );
    }

    /// Whether the Connection `uid` in `namespace`, which names the Secrets `names`, last had
    /// the credential with `hash` read from exactly the versions the cache shows now (then its
    /// values are what Versori holds). Without a cache, never.
    pub fn sent_secrets_unchanged(
        &self,
        uid: &str,
        namespace: &str,
        hash: &str,
        names: &[String],
    ) -> bool {
        let Some(stores) = self.stores.get() else {
            return false;
        };
        let sent = match self.sent_secrets.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(entry) = sent.get(uid) else {
            return false;
        };
        let mut wanted: Vec<&str> = names.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        wanted.dedup();
        entry.hash == hash
            && entry.versions.len() == wanted.len()
            && entry
                .versions
                .iter()
                .zip(wanted)
                .all(|((name, version), want)| {
                    let cached = stores
                        .secrets
                        .get(&ObjectRef::new(name).within(namespace))
                        .and_then(|s| s.metadata.resource_version.clone());
                    name == want && !version.is_empty() && cached.as_deref() == Some(version)
                })
    }

    /// Whether `cached` is older than this operator's last write to it. Versions are compared
    /// as etcd revisions; one that is not a number is taken as current.
    pub fn behind_own_write<K: kube::Resource>(&self, cached: &K) -> bool {
        let Some(uid) = cached.meta().uid.as_deref() else {
            return false;
        };
        let mut map = match self.written.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(&written) = map.get(uid) else {
            return false;
        };
        match resource_version(cached) {
            Some(version) if version < written => true,
            _ => {
                map.remove(uid);
                false
            }
        }
    }

    /// The resync delay with ±10 % jitter, so that many objects do not resync in the same second.
    pub fn resync_delay(&self) -> Duration {
        let jitter = rand::random_range(0.9..1.1);
        self.resync_interval.mul_f64(jitter)
    }
}

fn resource_version<K: kube::Resource>(object: &K) -> Option<u64> {
    object.meta().resource_version.as_deref()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn object(uid: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    /// A context whose clients point nowhere.
    fn context() -> Context {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URI"));
        let client = kube::Client::try_from(config).expect("a client");
        let versori = VersoriClient::new(crate::versori::ClientConfig::new(
            "http://127.0.0.1:9/".parse().expect("a URL"),
            "org",
            crate::versori::SecretValue::from("t".to_owned()),
        ))
        .expect("a client");
        Context::new(
            client,
            versori,
            Arc::new(Metrics::new()),
            Duration::from_secs(60),
            1,
            None,
        )
    }

    fn context_with_secret(
        version: &str,
    ) -> (
        Context,
        kube::runtime::reflector::store::Writer<PartialObjectMeta<Secret>>,
    ) {
        let ctx = context();
        let mut secrets = kube::runtime::reflector::store::Writer::default();
        secrets.apply_watcher_event(&kube::runtime::watcher::Event::Apply(secret(version)));
        ctx.use_stores(Stores {
            systems: kube::runtime::reflector::store::Writer::default().as_reader(),
            project_systems: kube::runtime::reflector::store::Writer::default().as_reader(),
            readiness: Readiness::default(),
            label_selector: None,
            secrets: secrets.as_reader(),
        });
        (ctx, secrets)
    }

    fn secret(version: &str) -> PartialObjectMeta<Secret> {
        PartialObjectMeta::<Secret> {
            metadata: ObjectMeta {
                name: Some("creds".into()),
                namespace: Some("ns".into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            ..PartialObjectMeta::default()
        }
    }

    #[tokio::test]
    async fn a_resync_skips_the_secrets_only_while_they_are_the_versions_versori_holds() {
        let (ctx, mut secrets) = context_with_secret("5");
        let names = vec!["creds".to_owned()];
        assert!(
            !ctx.sent_secrets_unchanged("c", "ns", "h", &names),
            "nothing remembered yet: read"
        );
        ctx.remember_sent_secrets("c", "h", vec![("creds".into(), "5".into())]);
        assert!(ctx.sent_secrets_unchanged("c", "ns", "h", &names));
        assert!(
            !ctx.sent_secrets_unchanged("c", "ns", "other", &names),
            "status holds another credential"
        );
        assert!(
            !ctx.sent_secrets_unchanged("c", "other-ns", "h", &names),
            "another namespace's Secret"
        );
        assert!(
            !ctx.sent_secrets_unchanged("c", "ns", "h", &["creds".into(), "more".into()]),
            "the spec names another Secret too"
        );
        secrets.apply_watcher_event(&kube::runtime::watcher::Event::Apply(secret("6")));
        assert!(
            !ctx.sent_secrets_unchanged("c", "ns", "h", &names),
            "the Secret changed: read"
        );
        ctx.remember_sent_secrets("c", "h", vec![("creds".into(), "6".into())]);
        assert!(ctx.sent_secrets_unchanged("c", "ns", "h", &names));
        ctx.forget_written("c");
        assert!(
            !ctx.sent_secrets_unchanged("c", "ns", "h", &names),
            "forgotten with the Connection"
        );
    }

    #[tokio::test]
    async fn a_cache_behind_the_operators_own_write_is_recognised() {
        let ctx = context();
        assert!(
            !ctx.behind_own_write(&object("a", "5")),
            "nothing written yet"
        );
        ctx.wrote(&object("a", "10"));
        ctx.wrote(&object("a", "8"));
        assert!(ctx.behind_own_write(&object("a", "9")));
        assert!(!ctx.behind_own_write(&object("b", "1")), "another object");
        assert!(!ctx.behind_own_write(&object("a", "10")), "caught up");
        assert!(
            !ctx.behind_own_write(&object("a", "9")),
            "forgotten once caught up"
        );
        ctx.wrote(&object("a", "12"));
        assert!(!ctx.behind_own_write(&object("a", "not-a-number")));
        ctx.wrote(&object("c", "3"));
        ctx.forget_written("c");
        assert!(!ctx.behind_own_write(&object("c", "1")));
    }
}

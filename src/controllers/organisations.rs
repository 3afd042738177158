//! Which Versori organisation each resource is managed in, and a client per organisation.
//!
//! A resource's `spec.configRef` names a `VersoriConfig` (its namespace) or a
//! `ClusterVersoriConfig`; without one it uses its namespace's `VersoriConfig` named `default`
//! if there is one, else the operator's own settings (as before configs existed).
//!
//! Each config gets its own [`VersoriClient`] (its own connection pool, cap on requests in
//! flight and 401 breaker: one organisation refusing its token or failing does not slow the
//! others), built on first use from the config and its token Secret. The token is read again at
//! most every [`TOKEN_CHECK_INTERVAL`] and the client replaced when it (or the config) changed,
//! so a rotation takes effect without a restart, as the operator's own token file does.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use kube::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use url::Url;

use super::error::Error;
use super::secrets::{SecretPolicy, SecretReader};
use crate::resources::versori_config::DEFAULT_CONFIG_NAME;
use crate::resources::{ClusterVersoriConfig, ConfigKind, ConfigRef, VersoriConfig};
use crate::versori::client::DEFAULT_BASE_URL;
use crate::versori::error::TOKEN_HINT;
use crate::versori::{SecretValue, VersoriClient};

/// How often a config's token Secret is read again to find a rotation.
pub const TOKEN_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// A config, by kind, namespace (for a `VersoriConfig`) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConfigKey {
    /// Its kind.
    pub kind: ConfigKind,
    /// Its namespace (`None` for a `ClusterVersoriConfig`).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl ConfigKey {
    /// The `VersoriConfig` `name` in `namespace`.
    pub fn namespaced(namespace: &str, name: &str) -> Self {
        Self {
            kind: ConfigKind::VersoriConfig,
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        }
    }

    /// The `ClusterVersoriConfig` `name`.
    pub fn cluster(name: &str) -> Self {
        Self {
            kind: ConfigKind::ClusterVersoriConfig,
            namespace: None,
            name: name.to_owned(),
        }
    }

    /// The config a reference from a resource in `namespace` names.
    pub fn from_ref(namespace: &str, reference: &ConfigRef) -> Self {
        match reference.kind {
            ConfigKind::VersoriConfig => Self::namespaced(namespace, &reference.name),
            ConfigKind::ClusterVersoriConfig => Self::cluster(&reference.name),
        }
    }
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{} {namespace}/{}", self.kind.as_str(), self.name),
            None => write!(f, "{} {}", self.kind.as_str(), self.name),
        }
    }
}

/// Where a config sends calls: URL, organisation and the token's Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigTarget {
    /// The API's base URL.
    pub api_url: String,
    /// The organisation ID.
    pub organisation: String,
    /// The token Secret's namespace, name and key.
    pub secret: (String, String, String),
}

impl ConfigTarget {
    /// Where a `VersoriConfig` sends calls.
    pub fn of_namespaced(config: &VersoriConfig) -> Self {
        let namespace = config.metadata.namespace.clone().unwrap_or_default();
        Self {
            api_url: api_url(config.spec.api_url.as_deref()),
            organisation: config.spec.organisation_id.clone(),
            secret: (
                namespace,
                config.spec.token_secret_ref.name.clone(),
                config.spec.token_secret_ref.key.clone(),
            ),
        }
    }

    /// Where a `ClusterVersoriConfig` sends calls.
    pub fn of_cluster(config: &ClusterVersoriConfig) -> Self {
        let r = &config.spec.token_secret_ref;
        Self {
            api_url: api_url(config.spec.api_url.as_deref()),
            organisation: config.spec.organisation_id.clone(),
            secret: (r.namespace.clone(), r.name.clone(), r.key.clone()),
        }
    }

    /// The organisation as a key: two configs with the same one share Versori objects.
    pub fn scope(&self) -> String {
        scope(&self.api_url, &self.organisation)
    }
}

fn api_url(set: Option<&str>) -> String {
    set.filter(|u| !u.is_empty())
        .unwrap_or(DEFAULT_BASE_URL)
        .to_owned()
}

fn scope(api_url: &str, organisation: &str) -> String {
    // Parsed, as the client's base URL is, so that a config's URL as written and a client's as
    // parsed compare equal (case of the host, a trailing slash).
    let url = Url::parse(api_url).map_or_else(|_| api_url.to_owned(), String::from);
    format!("{}|{organisation}", url.trim_end_matches('/'))
}

/// The organisation one reconcile acts in.
#[derive(Clone, Debug)]
pub struct Organisation {
    /// Its client.
    pub client: VersoriClient,
    /// The config it comes from (`None`: the operator's own settings).
    pub config: Option<ConfigKey>,
    /// The organisation as a key (URL and ID), worked out once.
    scope: String,
}

impl Organisation {
    fn new(client: VersoriClient, config: Option<ConfigKey>) -> Self {
        let scope = scope(client.base_url().as_str(), client.organisation());
        Self {
            client,
            config,
            scope,
        }
    }

    /// The organisation as a key (URL and ID), to keep shared listings apart.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// Where it comes from, for messages: "VersoriConfig team-a/default", or "the operator's
    /// own settings".
    pub fn describe(&self) -> String {
        match &self.config {
            Some(key) => key.to_string(),
            None => "the operator's own settings".to_owned(),
        }
    }
}

/// A Versori error's message for a call made with `config`'s token: the hint the client gives
/// on a 401 names the operator's own token, and for a config's client it is the config's Secret
/// to check instead.
pub fn in_terms_of(config: Option<&ConfigKey>, message: String) -> String {
    match config {
        Some(key) if message.contains(TOKEN_HINT) => message.replace(
            TOKEN_HINT,
            &format!(
                "check that the token in the Secret named by spec.tokenSecretRef of {key} is valid and belongs to its organisation"
            ),
        ),
        _ => message,
    }
}

/// The config caches, once the controllers run.
#[derive(Clone)]
pub struct ConfigStores {
    /// VersoriConfigs.
    pub namespaced: Store<VersoriConfig>,
    /// ClusterVersoriConfigs.
    pub cluster: Store<ClusterVersoriConfig>,
}

struct Entry {
    client: VersoriClient,
    target: ConfigTarget,
    token: SecretValue,
    checked: Instant,
}

/// The clients of every organisation in use.
pub struct Organisations {
    /// The operator's own client (also the template of the others' settings).
    default: VersoriClient,
    /// Its organisation as a key.
    default_scope: String,
    kube: kube::Client,
    policy: SecretPolicy,
    stores: OnceLock<ConfigStores>,
    entries: Mutex<HashMap<ConfigKey, Entry>>,
}

impl Organisations {
    /// The operator's own client, and what reads configs and their Secrets.
    pub fn new(default: VersoriClient, kube: kube::Client, policy: SecretPolicy) -> Self {
        Self {
            default_scope: scope(default.base_url().as_str(), default.organisation()),
            default,
            kube,
            policy,
            stores: OnceLock::new(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The operator's own client.
    pub fn default_client(&self) -> &VersoriClient {
        &self.default
    }

    /// Reads configs from the caches from now on (without, each is read from the apiserver).
    pub fn use_stores(&self, stores: ConfigStores) {
        let _ = self.stores.set(stores);
    }

    /// The config a resource in `namespace` with `reference` uses, if any: the named one, else
    /// the namespace's `default` when it exists (`None`: the operator's own settings).
    pub async fn config_of(
        &self,
        namespace: &str,
        reference: Option<&ConfigRef>,
    ) -> Result<Option<(ConfigKey, ConfigTarget)>, Error> {
        let key = match reference {
            Some(reference) => ConfigKey::from_ref(namespace, reference),
            None => ConfigKey::namespaced(namespace, DEFAULT_CONFIG_NAME),
        };
        let target = self.target(&key).await?;
        if target.is_none() {
            // Gone (or never there): a client built for it earlier goes with it.
            self.forget(&key);
        }
        match target {
            Some(target) => Ok(Some((key, target))),
            None if reference.is_none() => Ok(None),
            None => Err(Error::Waiting {
                reason: super::conditions::Reason::ConfigNotFound,
                message: match key.kind {
                    ConfigKind::VersoriConfig => format!(
                        "VersoriConfig {:?} (spec.configRef) does not exist in this namespace",
                        key.name
                    ),
                    ConfigKind::ClusterVersoriConfig => format!(
                        "ClusterVersoriConfig {:?} (spec.configRef) does not exist",
                        key.name
                    ),
                },
            }),
        }
    }

    /// Where the config sends calls, if it exists (from the cache when there is one).
    pub async fn target(&self, key: &ConfigKey) -> Result<Option<ConfigTarget>, Error> {
        if let Some(stores) = self.stores.get() {
            return Ok(match (&key.kind, &key.namespace) {
                (ConfigKind::VersoriConfig, Some(namespace)) => stores
                    .namespaced
                    .get(&ObjectRef::new(&key.name).within(namespace))
                    .map(|c| ConfigTarget::of_namespaced(&c)),
                (ConfigKind::ClusterVersoriConfig, _) => stores
                    .cluster
                    .get(&ObjectRef::new(&key.name))
                    .map(|c| ConfigTarget::of_cluster(&c)),
                (ConfigKind::VersoriConfig, None) => None,
            });
        }
        match (&key.kind, &key.namespace) {
            (ConfigKind::VersoriConfig, Some(namespace)) => {
                let api: Api<VersoriConfig> = Api::namespaced(self.kube.clone(), namespace);
                Ok(api
                    .get_opt(&key.name)
                    .await
                    .map_err(Error::kube("reading the VersoriConfig"))?
                    .map(|c| ConfigTarget::of_namespaced(&c)))
            }
            (ConfigKind::ClusterVersoriConfig, _) => {
                let api: Api<ClusterVersoriConfig> = Api::all(self.kube.clone());
                Ok(api
                    .get_opt(&key.name)
                    .await
                    .map_err(Error::kube("reading the ClusterVersoriConfig"))?
                    .map(|c| ConfigTarget::of_cluster(&c)))
            }
            (ConfigKind::VersoriConfig, None) => Ok(None),
        }
    }

    /// The organisation a resource in `namespace` with `reference` is managed in.
    pub async fn for_resource(
        &self,
        namespace: &str,
        reference: Option<&ConfigRef>,
    ) -> Result<Organisation, Error> {
        match self.config_of(namespace, reference).await? {
            None => Ok(Organisation {
                client: self.default.clone(),
                config: None,
                scope: self.default_scope.clone(),
            }),
            Some((key, target)) => {
                let client = self.client(&key, &target, false).await?;
                Ok(Organisation::new(client, Some(key)))
            }
        }
    }

    /// The organisation's scope (URL and ID) a resource in `namespace` with `reference` would
    /// use, without building a client: `None` when its config does not exist.
    pub async fn scope_of(&self, namespace: &str, reference: Option<&ConfigRef>) -> Option<String> {
        match self.config_of(namespace, reference).await {
            Ok(Some((_, target))) => Some(target.scope()),
            Ok(None) => Some(self.default_scope.clone()),
            Err(_) => None,
        }
    }

    /// The client of a config, built or rebuilt when the config or its token changed (the
    /// token is read again when `fresh`, or when the last read is older than
    /// [`TOKEN_CHECK_INTERVAL`]).
    pub async fn client(
        &self,
        key: &ConfigKey,
        target: &ConfigTarget,
        fresh: bool,
    ) -> Result<VersoriClient, Error> {
        {
            let entries = lock(&self.entries);
            if let Some(entry) = entries.get(key)
                && entry.target == *target
                && !fresh
                && entry.checked.elapsed() < TOKEN_CHECK_INTERVAL
            {
                return Ok(entry.client.clone());
            }
        }
        let token = self.read_token(key, target).await?;
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get_mut(key)
            && entry.target == *target
            && entry.token.expose() == token.expose()
        {
            entry.checked = Instant::now();
            return Ok(entry.client.clone());
        }
        let base_url = Url::parse(&target.api_url).map_err(|e| Error::ConfigUnusable {
            config: key.to_string(),
            message: format!("spec.apiUrl is not a URL: {e}"),
        })?;
        let client = self
            .default
            .sibling(base_url, &target.organisation, token.clone())
            .map_err(|e| Error::ConfigUnusable {
                config: key.to_string(),
                message: e.to_string(),
            })?;
        if entries.contains_key(key) {
            tracing::info!(config = %key, "a VersoriConfig or its token changed; using the new one");
        }
        entries.insert(
            key.clone(),
            Entry {
                client: client.clone(),
                target: target.clone(),
                token,
                checked: Instant::now(),
            },
        );
        Ok(client)
    }

    /// Forgets a deleted config's client.
    fn forget(&self, key: &ConfigKey) {
        lock(&self.entries).remove(key);
    }

    async fn read_token(
        &self,
        key: &ConfigKey,
        target: &ConfigTarget,
    ) -> Result<SecretValue, Error> {
        let (namespace, name, secret_key) = &target.secret;
        let mut reader = SecretReader::new(self.kube.clone(), namespace).with_policy(&self.policy);
        let token = reader
            .read(name, secret_key)
            .await
            .map_err(|source| Error::ConfigToken {
                config: key.to_string(),
                source: Box::new(source),
            })?;
        // `kubectl create secret --from-file` keeps the file's trailing newline.
        let trimmed = token.expose().trim();
        if trimmed.is_empty() {
            return Err(Error::ConfigUnusable {
                config: key.to_string(),
                message: format!("the token in Secret {name:?}, key {secret_key:?} is empty"),
            });
        }
        Ok(SecretValue::from(trimmed.to_owned()))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;

    use super::*;
    use crate::controllers::conditions::Reason;
    use crate::resources::{SecretKeyRef, VersoriConfigSpec};

    fn organisations(configs: Vec<VersoriConfig>) -> Organisations {
        let kube = kube::Client::try_from(kube::Config::new(
            "http://127.0.0.1:9".parse().expect("a URI"),
        ))
        .expect("a client for nowhere");
        let default = VersoriClient::new(crate::versori::ClientConfig::new(
            "http://127.0.0.1:9/api/v2".parse().expect("a URL"),
            "own-org",
            SecretValue::from("t".to_owned()),
        ))
        .expect("a Versori client");
        let mut namespaced = Writer::default();
        for config in configs {
            namespaced.apply_watcher_event(&watcher::Event::Apply(config));
        }
        let organisations = Organisations::new(default, kube, SecretPolicy::default());
        organisations.use_stores(ConfigStores {
            namespaced: namespaced.as_reader(),
            cluster: Writer::default().as_reader(),
        });
        organisations
    }

    fn config(namespace: &str, name: &str, organisation: &str) -> VersoriConfig {
        let mut c = VersoriConfig::new(
            name,
            VersoriConfigSpec {
                api_url: Some("https://staging.example/api/v2".into()),
                organisation_id: organisation.into(),
                token_secret_ref: SecretKeyRef {
                    name: "token".into(),
                    key: "token".into(),
                },
            },
        );
        c.metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        };
        c
    }

    #[tokio::test]
    async fn a_resource_resolves_to_its_config_its_namespaces_default_or_the_operators_own() {
        let orgs = organisations(vec![
            config("team-a", "default", "org-a"),
            config("team-a", "other", "org-x"),
        ]);
        let named = ConfigRef {
            kind: ConfigKind::VersoriConfig,
            name: "other".into(),
        };
        let found = orgs.config_of("team-a", None).await.expect("resolves");
        assert_eq!(
            found.map(|(key, target)| (key.to_string(), target.organisation)),
            Some((
                "VersoriConfig team-a/default".to_owned(),
                "org-a".to_owned()
            ))
        );
        let found = orgs
            .config_of("team-a", Some(&named))
            .await
            .expect("resolves");
        assert_eq!(found.map(|(_, t)| t.organisation).as_deref(), Some("org-x"));
        assert!(
            orgs.config_of("team-b", None)
                .await
                .expect("resolves")
                .is_none(),
            "no default there: the operator's own settings"
        );
        let missing = orgs.config_of("team-b", Some(&named)).await;
        assert!(
            matches!(
                &missing,
                Err(Error::Waiting {
                    reason: Reason::ConfigNotFound,
                    ..
                })
            ),
            "{missing:?}"
        );
        // Scopes tell organisations apart, whatever config or namespace leads to them.
        assert_eq!(
            orgs.scope_of("team-a", None).await.as_deref(),
            Some("https://staging.example/api/v2|org-a")
        );
        assert_eq!(
            orgs.scope_of("team-b", None).await.as_deref(),
            Some("http://127.0.0.1:9/api/v2|own-org")
        );
        assert_eq!(orgs.scope_of("team-b", Some(&named)).await, None);
        assert_eq!(
            scope("HTTPS://Staging.Example/api/v2/", "o"),
            scope("https://staging.example/api/v2", "o")
        );
    }
}

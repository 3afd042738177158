//! The `VersoriConfig` and `ClusterVersoriConfig` controller: checks that each config reaches
//! its organisation with its token (one cheap authenticated call), says so in `Ready`, and wakes
//! the resources that use a config when its spec or readiness changes.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Config, Controller};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::conditions::{self, READY, Reason};
use super::context::{Context, MANAGER};
use super::error::Error;
use super::organisations::{ConfigKey, ConfigTarget, in_terms_of};
use super::reconciler::{self, Managed, STORES_NOT_READY};
use super::{Shutdown, Watches};
use crate::resources::versori_config::DEFAULT_CONFIG_NAME;
use crate::resources::{ClusterVersoriConfig, ConfigKind, VersoriConfig, VersoriConfigStatus};

/// What the controller needs of either config kind.
pub trait VersoriConfigKind:
    Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The kind's name.
    const KIND: &'static str;
    /// Which config this is.
    fn key(&self) -> ConfigKey;
    /// Where it sends calls.
    fn target(&self) -> ConfigTarget;
    /// Its status.
    fn config_status(&self) -> Option<&VersoriConfigStatus>;
    /// An API to write its status through.
    fn api(client: kube::Client, namespace: Option<&str>) -> Api<Self>;
}

impl VersoriConfigKind for VersoriConfig {
    const KIND: &'static str = "VersoriConfig";

    fn key(&self) -> ConfigKey {
        ConfigKey::namespaced(&self.namespace().unwrap_or_default(), &self.name_any())
    }

    fn target(&self) -> ConfigTarget {
        ConfigTarget::of_namespaced(self)
    }

    fn config_status(&self) -> Option<&VersoriConfigStatus> {
        self.status.as_ref()
    }

    fn api(client: kube::Client, namespace: Option<&str>) -> Api<Self> {
        Api::namespaced(client, namespace.unwrap_or_default())
    }
}

impl VersoriConfigKind for ClusterVersoriConfig {
    const KIND: &'static str = "ClusterVersoriConfig";

    fn key(&self) -> ConfigKey {
        ConfigKey::cluster(&self.name_any())
    }

    fn target(&self) -> ConfigTarget {
        ConfigTarget::of_cluster(self)
    }

    fn config_status(&self) -> Option<&VersoriConfigStatus> {
        self.status.as_ref()
    }

    fn api(client: kube::Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
}

/// One check of a config: its token read anew, one authenticated call.
async fn reconcile<C: VersoriConfigKind>(obj: Arc<C>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.stores_ready() {
        return Ok(Action::requeue(STORES_NOT_READY));
    }
    let key = obj.key();
    let target = obj.target();
    let result = async {
        let client = ctx.organisations.client(&key, &target, true).await?;
        client
            .check_access()
            .await
            .map_err(Error::versori("checking the organisation and its token"))
    }
    .await;
    let old = obj.config_status().cloned().unwrap_or_default();
    let mut status = old.clone();
    let generation = obj.meta().generation;
    status.common.observed_generation = generation;
    match &result {
        Ok(()) => {
            status.common.organisation_id = Some(target.organisation.clone());
            status.api_url = Some(target.api_url.clone());
            let message = format!(
                "the token reaches organisation {} at {}",
                target.organisation, target.api_url
            );
            conditions::set(
                &mut status.common,
                READY,
                true,
                Reason::Available,
                &message,
                generation,
            );
        }
        Err(error) => {
            conditions::set(
                &mut status.common,
                READY,
                false,
                error.reason(),
                &in_terms_of(Some(&key), error.to_string()),
                generation,
            );
        }
    }
    if status != old {
        let api = C::api(ctx.client.clone(), obj.namespace().as_deref());
        let params = PatchParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PatchParams::default()
        };
        api.patch_status(
            &obj.name_any(),
            &params,
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .map_err(Error::kube("writing the config's status"))?;
        let was = conditions::get(&old.common, READY).map(|c| c.reason.clone());
        let now = conditions::get(&status.common, READY).map(|c| c.reason.clone());
        if was != now {
            let (type_, reason, note) = match &result {
                Ok(()) => (
                    EventType::Normal,
                    Reason::Available.as_str(),
                    format!("{key} reaches organisation {}", target.organisation),
                ),
                Err(error) => (
                    EventType::Warning,
                    error.reason().as_str(),
                    in_terms_of(Some(&key), error.to_string()),
                ),
            };
            ctx.publish_event(&obj.object_ref(&()), type_, reason, "Check", note)
                .await;
        }
    }
    match result {
        Ok(()) => {
            ctx.reset_backoff(&uid_of(obj.as_ref()));
            Ok(Action::requeue(ctx.resync_delay()))
        }
        Err(error) => {
            tracing::warn!(config = %key, reason = error.reason().as_str(), %error, "Versori config check failed");
            Err(error)
        }
    }
}

fn uid_of<C: Resource>(obj: &C) -> String {
    obj.meta().uid.clone().unwrap_or_else(|| obj.name_any())
}

fn error_policy<C: VersoriConfigKind>(obj: Arc<C>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.awaits_change() {
        // A missing Secret: the Secret watch (or the resync) brings the retry.
        return Action::requeue(ctx.resync_delay());
    }
    let backoff = ctx.next_backoff(&uid_of(obj.as_ref()));
    Action::requeue(error.retry_after().map_or(backoff, |r| r.max(backoff)))
}

/// The controller of one config kind: wakes on the config's own changes and on its token
/// Secret's (when that Secret is in a watched namespace; otherwise the resync finds a rotation).
pub fn controller<C: VersoriConfigKind>(
    store: Store<C>,
    trigger: impl futures::Stream<Item = Arc<C>> + Send + 'static,
    watches: &Watches,
    ctx: Arc<Context>,
    shutdown: Shutdown,
) -> Result<impl Future<Output = ()> + Send + 'static, Error> {
    let configs = store.clone();
    let controller = Controller::for_shared_stream(reconciler::own_changes(trigger), store)
        .with_config(Config::default().concurrency(ctx.concurrency.min(4)))
        .watches_shared_stream(watches.secrets.subscribe()?, move |secret| {
            let at = (secret.namespace().unwrap_or_default(), secret.name_any());
            configs
                .state()
                .into_iter()
                .filter(|c| {
                    let (namespace, name, _) = c.target().secret;
                    (namespace, name) == at
                })
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile::<C>, error_policy::<C>, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "Versori config check ended with an error");
            }
        });
    Ok(controller)
}

/// What of a config wakes its users: generation, UID (a config made anew) and `Ready`.
type ConfigState = (Option<i64>, Option<String>, Option<String>);

/// A mapper for a managed kind's controller: the resources that use a config, when the
/// config's spec, or whether it is Ready, changed (its other status writes wake nothing).
pub fn users_of<K, C>(store: Store<K>) -> impl Fn(Arc<C>) -> Vec<ObjectRef<K>> + Send + Sync
where
    K: Managed,
    C: VersoriConfigKind,
{
    let seen: Mutex<HashMap<ConfigKey, ConfigState>> = Mutex::new(HashMap::new());
    move |config: Arc<C>| {
        let key = config.key();
        let state = (
            config.meta().generation,
            config.meta().uid.clone(),
            config
                .config_status()
                .and_then(|s| conditions::get(&s.common, READY))
                .map(|c| c.status.clone()),
        );
        {
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.get(&key) == Some(&state) {
                return Vec::new();
            }
            seen.insert(key.clone(), state);
        }
        store
            .state()
            .into_iter()
            .filter(|obj| uses(obj.as_ref(), &key))
            .map(|obj| ObjectRef::from_obj(obj.as_ref()))
            .collect()
    }
}

/// Whether `obj` resolves to the config `key` (by its `configRef`, or as its namespace's
/// `default`).
fn uses<K: Managed>(obj: &K, key: &ConfigKey) -> bool {
    let namespace = obj.namespace().unwrap_or_default();
    match (obj.config_ref(), key.kind) {
        (Some(r), kind) => {
            r.kind == kind
                && r.name == key.name
                && (kind == ConfigKind::ClusterVersoriConfig
                    || key.namespace.as_deref() == Some(namespace.as_str()))
        }
        (None, ConfigKind::VersoriConfig) => {
            key.name == DEFAULT_CONFIG_NAME && key.namespace.as_deref() == Some(namespace.as_str())
        }
        (None, ConfigKind::ClusterVersoriConfig) => false,
    }
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;
    use crate::resources::{ConfigRef, System, SystemSpec};

    fn system(namespace: &str, config_ref: Option<ConfigRef>) -> System {
        let mut s = System::new(
            "s",
            SystemSpec {
                name: None,
                domain: "d".into(),
                template_base_url: "https://d.example/".into(),
                auth_schemes: Vec::new(),
                labels: None,
                system_id: None,
                deletion_policy: None,
                config_ref,
                management_policy: None,
                auth_schemes_policy: None,
            },
        );
        s.metadata = ObjectMeta {
            name: Some("s".into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        };
        s
    }

    fn reference(kind: ConfigKind, name: &str) -> Option<ConfigRef> {
        Some(ConfigRef {
            kind,
            name: name.into(),
        })
    }

    #[test]
    fn a_resource_uses_the_config_it_names_or_its_namespaces_default() {
        let team_a_default = ConfigKey::namespaced("team-a", "default");
        let team_a_other = ConfigKey::namespaced("team-a", "other");
        let shared = ConfigKey::cluster("shared");
        let cases = [
            (system("team-a", None), &team_a_default, true),
            (system("team-b", None), &team_a_default, false),
            (system("team-a", None), &team_a_other, false),
            (system("team-a", None), &shared, false),
            (
                system("team-a", reference(ConfigKind::VersoriConfig, "other")),
                &team_a_other,
                true,
            ),
            (
                system("team-a", reference(ConfigKind::VersoriConfig, "other")),
                &team_a_default,
                false,
            ),
            (
                system("team-b", reference(ConfigKind::VersoriConfig, "other")),
                &team_a_other,
                false,
            ),
            (
                system(
                    "team-b",
                    reference(ConfigKind::ClusterVersoriConfig, "shared"),
                ),
                &shared,
                true,
            ),
            (
                system("team-b", reference(ConfigKind::VersoriConfig, "shared")),
                &shared,
                false,
            ),
        ];
        for (obj, key, want) in cases {
            assert_eq!(
                uses(&obj, key),
                want,
                "{:?} in {:?} and {key}",
                obj.spec.config_ref,
                obj.metadata.namespace
            );
        }
    }

    #[test]
    fn config_keys_read_as_kind_namespace_and_name() {
        assert_eq!(
            ConfigKey::namespaced("team-a", "default").to_string(),
            "VersoriConfig team-a/default"
        );
        assert_eq!(
            ConfigKey::cluster("production").to_string(),
            "ClusterVersoriConfig production"
        );
        let from = ConfigKey::from_ref(
            "team-a",
            &ConfigRef {
                kind: ConfigKind::ClusterVersoriConfig,
                name: "production".into(),
            },
        );
        assert_eq!(from, ConfigKey::cluster("production"));
    }
}

//! The controllers: one reconciler per kind on one generic managed-resource loop
//! ([`reconciler`]), in the style of Crossplane's managed reconciler: each kind's adapter
//! observes the Versori object, then creates, updates or deletes it.

pub mod conditions;
pub mod connection;
pub mod context;
pub mod error;
pub mod events;
pub mod listings;
pub mod marker;
pub mod oauth2_callback;
pub mod organisations;
pub mod project_system;
pub mod reconciler;
pub mod secrets;
pub mod system;
pub mod versori_config;
pub mod watches;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{FutureExt, Shared};

pub use context::{Context, Stores};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use watches::{Readiness, SharedWatch, WatchScope};

use crate::resources::{ClusterVersoriConfig, Connection, ProjectSystem, System, VersoriConfig};
pub use error::Error;

use crate::metrics::Metrics;
use crate::versori::VersoriClient;

/// How the controllers run.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// Namespaces to watch; empty means all.
    pub watch_namespaces: Vec<String>,
    /// Reconciles of one kind running at once.
    pub concurrency: u16,
    /// How often a Ready object is read back from Versori to restore drift (with jitter).
    pub resync_interval: Duration,
    /// Only resources with these labels are watched (sharding several operators by label).
    pub label_selector: Option<String>,
    /// The in-cluster OAuth 2.0 authorization code flow, when a callback URL is configured.
    pub oauth2: Option<OAuth2Settings>,
    /// Which Secrets may be read, and the credential hash key.
    pub secret_settings: secrets::SecretSettings,
}

/// The in-cluster OAuth 2.0 authorization code flow.
#[derive(Clone, Debug)]
pub struct OAuth2Settings {
    /// The redirect URL Versori sends the browser back to (the operator's callback).
    pub redirect_url: String,
    /// How long an authorization URL stays valid.
    pub ttl: Duration,
}

/// A shutdown signal every controller can wait on.
pub type Shutdown = Shared<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>;

/// Every kind's shared watch.
pub struct Watches {
    /// Systems.
    pub systems: SharedWatch<System>,
    /// ProjectSystems.
    pub project_systems: SharedWatch<ProjectSystem>,
    /// Connections.
    pub connections: SharedWatch<Connection>,
    /// Secrets, as metadata only: their values are read when a reconcile needs them.
    pub secrets: SharedWatch<PartialObjectMeta<Secret>>,
    /// VersoriConfigs (every shard's: not limited by the label selector).
    pub configs: SharedWatch<VersoriConfig>,
    /// ClusterVersoriConfigs.
    pub cluster_configs: SharedWatch<ClusterVersoriConfig>,
}

/// Runs the three controllers until `shutdown` resolves, then lets in-flight reconciles finish.
/// One controller per kind serves every watched namespace; every kind is watched once, and all
/// read the same caches.
pub async fn run_controllers(
    client: kube::Client,
    versori: VersoriClient,
    metrics: Arc<Metrics>,
    settings: ControllerSettings,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
) -> Result<(), Error> {
    let shutdown: Shutdown = shutdown.shared();
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            versori,
            metrics,
            settings.resync_interval,
            settings.concurrency,
            settings.oauth2.clone(),
        )
        .with_secret_settings(settings.secret_settings.clone()),
    );
    let scope = WatchScope {
        namespaces: settings.watch_namespaces.clone(),
        label_selector: settings.label_selector.clone(),
    };
    let readiness = Readiness::default();
    let watches = Watches {
        systems: SharedWatch::new(
            &client,
            &scope,
            true,
            &readiness,
            "System",
            reconciler::trim_cached::<System>,
        ),
        project_systems: SharedWatch::new(
            &client,
            &scope,
            true,
            &readiness,
            "ProjectSystem",
            reconciler::trim_cached::<ProjectSystem>,
        ),
        connections: SharedWatch::new(
            &client,
            &scope,
            true,
            &readiness,
            "Connection",
            reconciler::trim_cached::<Connection>,
        ),
        secrets: SharedWatch::new(
            &client,
            &scope,
            false,
            &readiness,
            "Secret",
            watches::trim_secret,
        ),
        configs: SharedWatch::new(
            &client,
            &scope,
            false,
            &readiness,
            "VersoriConfig",
            watches::trim_labels::<VersoriConfig>,
        ),
        cluster_configs: SharedWatch::cluster(
            &client,
            &readiness,
            "ClusterVersoriConfig",
            watches::trim_labels::<ClusterVersoriConfig>,
        ),
    };
    ctx.organisations.use_stores(organisations::ConfigStores {
        namespaced: watches.configs.store.clone(),
        cluster: watches.cluster_configs.store.clone(),
    });
    ctx.use_stores(Stores {
        systems: watches.systems.store.clone(),
        project_systems: watches.project_systems.store.clone(),
        readiness,
        label_selector: settings.label_selector.clone(),
        secrets: watches.secrets.store.clone(),
    });
    // Every subscription exists before the watches start, so none misses the first listing.
    let controllers = vec![
        system::controller(&watches, ctx.clone(), shutdown.clone())?.boxed(),
        project_system::controller(&watches, ctx.clone(), shutdown.clone())?.boxed(),
        connection::controller(&watches, ctx.clone(), shutdown.clone())?.boxed(),
        versori_config::controller(
            watches.configs.store.clone(),
            watches.configs.subscribe()?,
            &watches,
            ctx.clone(),
            shutdown.clone(),
        )?
        .boxed(),
        versori_config::controller(
            watches.cluster_configs.store.clone(),
            watches.cluster_configs.subscribe()?,
            &watches,
            ctx.clone(),
            shutdown.clone(),
        )?
        .boxed(),
    ];
    let Watches {
        systems,
        project_systems,
        connections,
        secrets,
        configs,
        cluster_configs,
    } = watches;
    let feeds = futures::stream::select_all([
        futures::StreamExt::boxed(systems.run()),
        futures::StreamExt::boxed(project_systems.run()),
        futures::StreamExt::boxed(connections.run()),
        futures::StreamExt::boxed(secrets.run()),
        futures::StreamExt::boxed(configs.run()),
        futures::StreamExt::boxed(cluster_configs.run()),
    ]);
    let feeds = futures::StreamExt::take_until(feeds, shutdown.clone());
    let feeds = futures::StreamExt::for_each(feeds, |()| std::future::ready(()));
    tracing::info!(
        namespaces = ?settings.watch_namespaces,
        label_selector = ?settings.label_selector,
        "controllers started"
    );
    // Both end on shutdown: the controllers after their in-flight reconciles.
    futures::future::join(futures::future::join_all(controllers), feeds).await;
    tracing::info!("controllers stopped");
    Ok(())
}

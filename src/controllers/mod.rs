//! The controllers: one reconciler per kind on one generic managed-resource loop
//! ([`reconciler`]), in the style of Crossplane's managed reconciler: each kind's adapter
//! observes the Versori object, then creates, updates or deletes it.

pub mod connection;
pub mod context;
pub mod error;
pub mod events;
pub mod oauth2_callback;
pub mod project_system;
pub mod reconciler;
pub mod secrets;
pub mod system;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{FutureExt, Shared};

pub use context::Context;
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

/// Runs the three controllers until `shutdown` resolves, then lets in-flight reconciles finish.
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
    let namespaces: Vec<Option<String>> = if settings.watch_namespaces.is_empty() {
        vec![None]
    } else {
        settings
            .watch_namespaces
            .iter()
            .map(|n| Some(n.clone()))
            .collect()
    };
    let mut runs = Vec::new();
    for namespace in namespaces {
        let scope = reconciler::Scope {
            client: client.clone(),
            namespace,
        };
        runs.push(system::run(scope.clone(), ctx.clone(), shutdown.clone()).boxed());
        runs.push(project_system::run(scope.clone(), ctx.clone(), shutdown.clone()).boxed());
        runs.push(connection::run(scope, ctx.clone(), shutdown.clone()).boxed());
    }
    tracing::info!(controllers = runs.len(), "controllers started");
    futures::future::join_all(runs).await;
    tracing::info!("controllers stopped");
    Ok(())
}

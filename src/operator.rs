//! `versori-operator run`: wires the HTTP endpoint, the Kubernetes and Versori clients, leader
//! election and the controllers together.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kube::api::ListParams;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};

pub use crate::util::{kube_error_message, shutdown_signal};

use crate::config::OperatorConfig;
use crate::controllers::secrets::{SecretSettings, load_or_create_hash_key};
use crate::controllers::{
    Context, ControllerSettings, OAuth2Settings, oauth2_callback, run_controllers,
};
use crate::leader::{self, LeaderError};
use crate::metrics::Metrics;
use crate::resources::{ClusterVersoriConfig, Connection, ProjectSystem, System, VersoriConfig};
use crate::server::{self, Health};
use crate::versori::{ClientConfig, VersoriClient};

/// The kinds the controllers reconcile, as metric labels.
const KINDS: [&str; 3] = ["System", "ProjectSystem", "Connection"];
/// How long the HTTP endpoint may take to stop at exit.
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the operator stopped. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr} for /metrics, /healthz and /readyz: {reason}")]
    MetricsBind { addr: SocketAddr, reason: String },
    #[error("the /metrics endpoint failed: {0}")]
    MetricsServer(String),
    #[error("cannot listen on {addr} for the OAuth 2.0 callback (OAUTH2_CALLBACK_ADDR): {reason}")]
    CallbackBind { addr: SocketAddr, reason: String },
    #[error(
        "cannot configure the Kubernetes client (set KUBECONFIG, or run in a pod with a service account): {0}"
    )]
    KubeClient(String),
    #[error("cannot reach the Kubernetes API server: {0}")]
    KubeUnreachable(String),
    #[error("the versori.com CRDs are not installed: kubectl apply --server-side -f crds/")]
    CrdsNotInstalled,
    #[error(
        "WATCH_LABEL_SELECTOR {selector:?} is not a label selector the API server takes: {message}"
    )]
    InvalidLabelSelector { selector: String, message: String },
    #[error(
        "not allowed to list {resource} {scope}: grant the operator's service account list and watch on it ({message})"
    )]
    Forbidden {
        resource: String,
        scope: String,
        message: String,
    },
    #[error("{0}")]
    HashKey(String),
    #[error("cannot build the Versori API client: {0}")]
    VersoriClient(String),
    #[error("the controllers failed: {0}")]
    Controllers(String),
    #[error("{0}")]
    Leader(#[from] LeaderError),
}

/// Lists one object of `K` in each scope, to tell a missing CRD or missing RBAC apart from the
/// rest before the controllers start.
async fn check_listable<K>(
    client: &Client,
    namespaces: &[String],
    label_selector: Option<&str>,
) -> Result<(), RunError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let resource = format!("{}.{}", K::plural(&()), K::group(&()));
    for namespace in scopes {
        let api: Api<K> = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let mut params = ListParams::default().limit(1);
        if let Some(selector) = label_selector {
            params = params.labels(selector);
        }
        match api.list(&params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 400 && label_selector.is_some() => {
                return Err(RunError::InvalidLabelSelector {
                    selector: label_selector.unwrap_or_default().to_owned(),
                    message: status.message.replace(['\n', '\r'], " "),
                });
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(RunError::CrdsNotInstalled);
            }
            Err(kube::Error::Api(status)) if status.code == 403 => {
                return Err(RunError::Forbidden {
                    resource,
                    scope: match namespace {
                        Some(ns) => format!("in namespace {ns}"),
                        None => "in all namespaces".to_owned(),
                    },
                    message: status.message.replace(['\n', '\r'], " "),
                });
            }
            Err(other) => return Err(RunError::KubeUnreachable(kube_error_message(&other))),
        }
    }
    Ok(())
}

/// Runs the operator until SIGTERM/SIGINT (or, with leader election, until leadership is lost).
/// The same check for a cluster-scoped kind.
async fn check_cluster_listable<K>(client: &Client) -> Result<(), RunError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(RunError::CrdsNotInstalled),
        Err(kube::Error::Api(status)) if status.code == 403 => Err(RunError::Forbidden {
            resource: format!("{}.{}", K::plural(&()), K::group(&())),
            scope: "in the cluster".to_owned(),
            message: status.message.replace(['\n', '\r'], " "),
        }),
        Err(other) => Err(RunError::KubeUnreachable(kube_error_message(&other))),
    }
}

pub async fn run(config: OperatorConfig) -> Result<(), RunError> {
    info!(
        api_url = %config.api_url,
        organisation = %config.organisation,
        watch_namespaces = ?config.watch_namespaces,
        watch_label_selector = ?config.watch_label_selector,
        concurrency = config.concurrency,
        versori_max_in_flight = config.versori_max_in_flight,
        resync_interval = ?config.resync_interval,
        metrics_addr = %config.metrics_addr,
        leader_election = config.leader_election.is_some(),
        version = env!("CARGO_PKG_VERSION"),
        "starting versori-operator"
    );

    let metrics = Arc::new(Metrics::new());
    for kind in KINDS {
        metrics.init_kind(kind);
    }
    let health = Arc::new(Health::new());

    // The endpoint first: liveness answers while the clients start, and a taken port fails fast.
    let listener = server::bind(config.metrics_addr)
        .await
        .map_err(|e| RunError::MetricsBind {
            addr: config.metrics_addr,
            reason: e.to_string(),
        })?;
    let (server_stop, server_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server_task = tokio::spawn(server::serve_on(
        listener,
        Arc::clone(&metrics),
        Arc::clone(&health),
        async move {
            let _ = server_stop_rx.await;
        },
    ));

    let result = tokio::select! {
        result = run_with_endpoint(&config, Arc::clone(&metrics), Arc::clone(&health)) => result,
        joined = &mut server_task => {
            // The endpoint stopped on its own: the probes would fail, so stop too.
            let reason = match joined {
                Ok(Ok(())) => "it stopped unexpectedly".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            return Err(RunError::MetricsServer(reason));
        }
    };

    health.set_ready(false);
    let _ = server_stop.send(());
    match tokio::time::timeout(SERVER_STOP_TIMEOUT, server_task).await {
        Ok(Ok(Err(error))) => warn!(%error, "the /metrics endpoint failed while stopping"),
        Ok(Err(error)) => warn!(%error, "the /metrics endpoint task failed"),
        Err(_) => warn!("the /metrics endpoint did not stop in time"),
        Ok(Ok(Ok(()))) => {}
    }
    result
}

async fn run_with_endpoint(
    config: &OperatorConfig,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<(), RunError> {
    let client = Client::try_default()
        .await
        .map_err(|e| RunError::KubeClient(kube_error_message(&e)))?;
    check_listable::<System>(
        &client,
        &config.watch_namespaces,
        config.watch_label_selector.as_deref(),
    )
    .await?;
    check_listable::<ProjectSystem>(
        &client,
        &config.watch_namespaces,
        config.watch_label_selector.as_deref(),
    )
    .await?;
    check_listable::<Connection>(
        &client,
        &config.watch_namespaces,
        config.watch_label_selector.as_deref(),
    )
    .await?;

    check_listable::<VersoriConfig>(&client, &config.watch_namespaces, None).await?;
    check_cluster_listable::<ClusterVersoriConfig>(&client).await?;

    let hash_key =
        load_or_create_hash_key(client.clone(), &config.namespace, &config.hash_key_secret)
            .await
            .map_err(|e| RunError::HashKey(e.to_string()))?;
    let secret_settings = SecretSettings {
        policy: config.secret_policy.clone(),
        hash_key,
    };

    let breaker_metrics = Arc::clone(&metrics);
    let breaker_health = Arc::clone(&health);
    let mut client_config = ClientConfig::new(
        config.api_url.clone(),
        config.organisation.clone(),
        config.token.clone(),
    )
    .with_observer(metrics.versori_call_observer())
    .with_breaker_observer(Arc::new(move |refused| {
        breaker_metrics.set_token_refused(refused);
        breaker_health.set_token_refused(refused);
    }))
    .with_max_in_flight(config.versori_max_in_flight)
    .with_read_retries(2);
    if let Some(path) = &config.token_file {
        client_config = client_config.with_token_file(path.clone());
    }
    let versori = VersoriClient::new(client_config)
        .map_err(|e| RunError::VersoriClient(e.to_string().replace(['\n', '\r'], " ")))?;

    let oauth2 = config.oauth2_callback.as_ref().map(|c| OAuth2Settings {
        redirect_url: c.redirect_url.to_string(),
        ttl: c.ttl,
    });
    let settings = ControllerSettings {
        watch_namespaces: config.watch_namespaces.clone(),
        concurrency: config.concurrency,
        resync_interval: config.resync_interval,
        label_selector: config.watch_label_selector.clone(),
        oauth2: oauth2.clone(),
        secret_settings: secret_settings.clone(),
    };

    // The OAuth 2.0 callback runs on every replica, leader or not: a browser may reach any.
    let _callback = match &config.oauth2_callback {
        Some(callback) => {
            let listener = tokio::net::TcpListener::bind(callback.addr)
                .await
                .map_err(|e| RunError::CallbackBind {
                    addr: callback.addr,
                    reason: e.to_string(),
                })?;
            info!(
                addr = %callback.addr,
                redirect_url = %callback.redirect_url,
                "serving the OAuth 2.0 callback: register {} as the redirect URL with the provider",
                callback.redirect_url
            );
            if callback.redirect_url.scheme() == "http"
                && !callback
                    .redirect_url
                    .host_str()
                    .is_some_and(|h| h == "localhost" || h == "127.0.0.1" || h == "[::1]")
            {
                warn!(redirect_url = %callback.redirect_url, "OAUTH2_CALLBACK_URL is plain http: authorization codes would cross the network unencrypted; use https");
            }
            let ctx = Arc::new(
                Context::new(
                    client.clone(),
                    versori.clone(),
                    Arc::clone(&metrics),
                    config.resync_interval,
                    config.concurrency,
                    oauth2,
                )
                .with_secret_settings(secret_settings),
            );
            Some(AbortOnDropHandle::new(tokio::spawn(
                oauth2_callback::serve(
                    listener,
                    ctx,
                    config.watch_namespaces.clone(),
                    std::future::pending(),
                ),
            )))
        }
        None => None,
    };

    match &config.leader_election {
        None => {
            health.set_ready(true);
            let shutdown: Pin<Box<dyn Future<Output = ()> + Send + Sync>> =
                Box::pin(shutdown_signal());
            run_controllers(client, versori, metrics, settings, shutdown)
                .await
                .map_err(|e| RunError::Controllers(e.to_string()))
        }
        Some(lease) => {
            // A standby waiting for the Lease is healthy, so it is ready too.
            health.set_ready(true);
            let work_client = client.clone();
            leader::run_as_leader(client, lease.clone(), move |shutdown| {
                run_controllers(work_client, versori, metrics, settings, shutdown)
            })
            .await
            .map_err(|e| match e {
                LeaderError::Work(error) => RunError::Controllers(error.to_string()),
                other => RunError::Leader(other),
            })
        }
    }
}

//! `versori-emulator`: an in-memory implementation of the part of the Versori
//! platform API described in `versori-api.md`, strict about required fields,
//! enums, ULIDs, auth and error bodies, with fault injection and test hooks.
//!
//! Every API path is served at the root of the emulator's address
//! (`http://127.0.0.1:PORT/o/{org}/...`); the test hooks live under
//! `/_emulator/` and answer only loopback peers.
//!
//! Test hooks (no token, loopback peers only):
//! - `GET /_emulator/state`: `{organisation, projects, systems, credentials,
//!   connectionTemplates, connections, oauth2Flows, oauth1Flows,
//!   requests: {"GET /o/{org}/systems/{system_id}": n}, requestsByMethod: {"GET": n},
//!   requestsTotal, faults}`, secrets in clear. `credentials` are the auth scheme
//!   configs' credentials, in creation order, never removed: `{id, organisationId, systemId,
//!   authSchemeConfigId, type: "oauth2-client" | "oauth1", data: {clientId?, clientSecret?}
//!   | {consumerKey?, consumerSecret?}}`. An upsert of a config without `credentialId` (absent,
//!   `""` or the zero ULID) adds a new one holding just what the body carries and repoints
//!   the config at it (the old one stays: a client that never sends `credentialId` piles
//!   them up, and one that sends no secret leaves the config with none); with it, the body's
//!   keys merge into the credential the config points at. A config's `clientSecret` /
//!   `consumerSecret` (`******` on API reads) comes from its credential, absent when the
//!   credential holds none;
//! - `POST /_emulator/reset-counters`;
//! - `GET | PUT | DELETE /_emulator/faults` ([`Faults`]);
//! - `POST /_emulator/projects` (a [`SeedProject`]);
//! - `PUT /_emulator/token` `{"token": "..."}`: the API token accepted from then on;
//! - `GET /_emulator/oauth2/authorize?state=&redirect_uri=`: 302 to the flow's
//!   redirect URL with `code` and `state`;
//! - `GET /_emulator/oauth1/authorize?oauth_token=`: 302 to the OAuth 1.0 flow's
//!   redirect URL with `oauth_token` and `oauth_verifier`.
//!
//! A project environment's connection templates and static connections are
//! answered in one page (no paging parameters, `next` never set); the other
//! lists page at 20. Secrets read back as `******`.
//!
//! The emulator validates raw JSON itself (it shares no types with the
//! operator's client, `versori_operator::versori`, and does not depend on the
//! operator at all) so that both sides are checked against the contract
//! independently.

mod api;
mod error;
mod faults;
mod hooks;
mod net;
mod page;
mod store;
mod validate;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::MockConnectInfo;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

pub use error::{ApiError, ErrorBody, FieldError};
pub use faults::{Counters, Faults};
pub use net::{EmulatorListener, PeerInfo};

use faults::Decision;
use store::{Environment, Project, Store};
use validate::{ENVIRONMENT_STATUSES, ZERO_ULID, is_ulid, new_ulid};

/// How the emulator is set up.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The only organisation ID the emulator answers for (`/o/{org}/...`).
    pub organisation: String,
    /// The API key / JWT every API request must carry.
    pub token: String,
    /// Projects and environments that exist from the start.
    pub seed: Seed,
}

/// Projects present at start-up (YAML: `projects: [{id?, name, environments: [{id?, name, status?}]}]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Seed {
    #[serde(default)]
    pub projects: Vec<SeedProject>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedProject {
    /// A ULID; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub environments: Vec<SeedEnvironment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedEnvironment {
    /// A ULID; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    /// running (default) | suspended | error | draft
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A seed that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("seed is not valid YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("invalid seed: {0}")]
    Invalid(String),
}

impl Seed {
    pub fn from_yaml(text: &str) -> Result<Self, SeedError> {
        let seed: Seed = serde_yaml::from_str(text)?;
        seed.validate()?;
        Ok(seed)
    }

    /// Checks IDs (ULIDs, unique), names (non-empty, environment names unique
    /// within a project) and statuses.
    pub fn validate(&self) -> Result<(), SeedError> {
        let mut ids = std::collections::HashSet::new();
        for (i, p) in self.projects.iter().enumerate() {
            validate_seed_project(p, &format!("projects[{i}]"), &mut ids)?;
        }
        Ok(())
    }
}

fn validate_seed_project(
    p: &SeedProject,
    path: &str,
    ids: &mut std::collections::HashSet<String>,
) -> Result<(), SeedError> {
    let invalid = |m: String| Err(SeedError::Invalid(m));
    let mut check_id = |id: &Option<String>, path: &str| -> Result<(), SeedError> {
        if let Some(id) = id {
            if !is_ulid(id) || id == ZERO_ULID {
                return invalid(format!("{path}.id: {id:?} is not a ULID"));
            }
            if !ids.insert(id.to_ascii_uppercase()) {
                return invalid(format!("{path}.id: {id} is used twice"));
            }
        }
        Ok(())
    };
    check_id(&p.id, path)?;
    if p.name.trim().is_empty() {
        return invalid(format!("{path}.name is empty"));
    }
    let mut names = std::collections::HashSet::new();
    for (j, e) in p.environments.iter().enumerate() {
        let ep = format!("{path}.environments[{j}]");
        check_id(&e.id, &ep)?;
        if e.name.trim().is_empty() {
            return invalid(format!("{ep}.name is empty"));
        }
        if !names.insert(e.name.as_str()) {
            return invalid(format!("{ep}.name: {} is used twice", e.name));
        }
        if let Some(status) = &e.status
            && !ENVIRONMENT_STATUSES.contains(&status.as_str())
        {
            return invalid(format!(
                "{ep}.status must be one of {}",
                ENVIRONMENT_STATUSES.join(", ")
            ));
        }
    }
    Ok(())
}

fn project_from_seed(p: &SeedProject) -> Project {
    let id_or_new = |id: &Option<String>| {
        id.as_ref()
            .map(|i| i.to_ascii_uppercase())
            .unwrap_or_else(new_ulid)
    };
    Project {
        id: id_or_new(&p.id),
        name: p.name.clone(),
        environments: p
            .environments
            .iter()
            .map(|e| Environment {
                id: id_or_new(&e.id),
                name: e.name.clone(),
                status: e.status.clone().unwrap_or_else(|| "running".to_owned()),
            })
            .collect(),
    }
}

/// The shared state of one emulator.
#[derive(Debug)]
pub(crate) struct App {
    organisation: String,
    token: Mutex<String>,
    store: Mutex<Store>,
    faults: Mutex<Faults>,
    counters: Mutex<Counters>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl App {
    fn new(config: EmulatorConfig) -> Result<Self, SeedError> {
        config.seed.validate()?;
        let mut store = Store::default();
        for p in &config.seed.projects {
            store.projects.push(project_from_seed(p));
        }
        Ok(Self {
            organisation: config.organisation,
            token: Mutex::new(config.token),
            store: Mutex::new(store),
            faults: Mutex::new(Faults::default()),
            counters: Mutex::new(Counters::default()),
        })
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }
}

pub(crate) type AppState = Arc<App>;

/// The emulator's router. Without [`serve`] (e.g. with `tower::ServiceExt::oneshot`),
/// the `/_emulator` hooks need a `MockConnectInfo(PeerInfo::new(loopback))` layer,
/// and "drop" faults end the response body with an error instead of resetting.
///
/// # Panics
///
/// When the seed is invalid; [`try_router`] returns the error instead.
pub fn router(config: EmulatorConfig) -> Router {
    match try_router(config) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

/// [`router`], returning an invalid seed as an error.
pub fn try_router(config: EmulatorConfig) -> Result<Router, SeedError> {
    let app = Arc::new(App::new(config)?);
    Ok(api::routes()
        .merge(hooks::routes())
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app))
}

/// Serves the emulator on `listener` until `shutdown` completes (then finishes
/// the requests in flight and returns).
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: EmulatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = try_router(config)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    axum::serve(
        EmulatorListener::new(listener),
        router.into_make_service_with_connect_info::<PeerInfo>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn fallback() -> ApiError {
    ApiError::not_found("no such resource")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this resource",
    )
}

fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::DELETE | Method::PATCH
    )
}

/// A response that never reaches the client: the connection is reset (with
/// [`serve`]), or at least the body fails (with the bare router).
fn dropped(peer: Option<&PeerInfo>) -> Response {
    if let Some(peer) = peer {
        peer.kill();
    }
    let body = Body::from_stream(futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection dropped by fault injection",
        ))
    }));
    Response::new(body)
}

/// Checks `Authorization: Bearer T` or `Authorization: JWT T`.
fn authorised(req: &Request, token: &str) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized("missing Authorization header"));
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    let (scheme, given) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("malformed Authorization header"))?;
    if !(scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("jwt")) {
        return Err(ApiError::unauthorized(
            "Authorization must use the Bearer or JWT scheme",
        ));
    }
    if given.trim() != token {
        return Err(ApiError::unauthorized("invalid token"));
    }
    Ok(())
}

/// The middleware in front of everything: loopback check for the hooks;
/// counting, latency, faults, auth and the organisation check for the API;
/// one log line per request.
async fn observe(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let peer = req
        .extensions()
        .get::<ConnectInfo<PeerInfo>>()
        .map(|c| c.0.clone())
        .or_else(|| {
            req.extensions()
                .get::<MockConnectInfo<PeerInfo>>()
                .map(|c| c.0.clone())
        });
    let shown_route = route.clone().unwrap_or_else(|| path.clone());

    if path == "/_emulator" || path.starts_with("/_emulator/") {
        let response = if peer.as_ref().is_some_and(|p| p.addr.ip().is_loopback()) {
            next.run(req).await
        } else {
            ApiError::forbidden("the /_emulator hooks answer loopback peers only").into_response()
        };
        tracing::info!(method = %method, route = %shown_route, status = response.status().as_u16(), "emulator hook");
        return response;
    }

    let key = format!(
        "{method} {}",
        route.as_deref().unwrap_or("(no matching route)")
    );
    lock(&app.counters).count(method.as_str(), &key);
    let (latency, decision) = {
        let mut faults = lock(&app.faults);
        let latency = if faults.applies_to(&key) {
            faults.latency_ms
        } else {
            0
        };
        (latency, faults.decide(&key, is_write(&method)))
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let early = match decision {
        Decision::Drop => {
            tracing::info!(method = %method, route = %shown_route, status = "dropped", "request");
            return dropped(peer.as_ref());
        }
        Decision::Unavailable => Some(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "service unavailable (injected fault)",
        )),
        Decision::RateLimited { retry_after } => Some(ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests (injected fault)",
            )
        }),
        Decision::Pass | Decision::CommitThenDrop => None,
    };
    let early = early.or_else(|| {
        let token = lock(&app.token).clone();
        authorised(&req, &token).err()
    });
    let early = early.or_else(|| {
        let org = path.strip_prefix("/o/")?.split('/').next()?;
        (org != app.organisation).then(|| ApiError::not_found(format!("no organisation {org:?}")))
    });
    let response = match early {
        Some(e) => e.into_response(),
        None => next.run(req).await,
    };
    if decision == Decision::CommitThenDrop {
        tracing::info!(method = %method, route = %shown_route, status = response.status().as_u16(), "request committed, then dropped");
        return dropped(peer.as_ref());
    }
    tracing::info!(method = %method, route = %shown_route, status = response.status().as_u16(), "request");
    response
}

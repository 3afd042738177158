//! Test hooks under `/_emulator/` (no token; loopback peers only, checked by
//! the middleware).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use super::api::{Body, Q};
use super::error::{ApiError, FieldError};
use super::faults::{Counters, Faults};
use super::store::{dump, render_project};
use super::{AppState, SeedProject, lock, project_from_seed, validate_seed_project};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_emulator/state", get(state))
        .route("/_emulator/reset-counters", post(reset_counters))
        .route(
            "/_emulator/faults",
            get(get_faults).put(put_faults).delete(clear_faults),
        )
        .route("/_emulator/projects", post(add_project))
        .route("/_emulator/token", put(put_token))
        .route("/_emulator/oauth2/authorize", get(authorize))
        .route("/_emulator/oauth1/authorize", get(authorize_oauth1))
}

/// Every object with secrets in clear, the request counters and the faults.
async fn state(State(app): State<AppState>) -> Json<Value> {
    let mut out = dump(&app.store(), &app.organisation);
    let counters = lock(&app.counters).clone();
    out["requests"] = json!(counters.requests);
    out["requestsByMethod"] = json!(counters.requests_by_method);
    out["requestsTotal"] = json!(counters.requests_total);
    out["faults"] = json!(*lock(&app.faults));
    Json(out)
}

async fn reset_counters(State(app): State<AppState>) -> StatusCode {
    *lock(&app.counters) = Counters::default();
    StatusCode::NO_CONTENT
}

async fn get_faults(State(app): State<AppState>) -> Json<Faults> {
    Json(lock(&app.faults).clone())
}

async fn put_faults(State(app): State<AppState>, body: Body) -> Result<Json<Faults>, ApiError> {
    let faults: Faults = serde_json::from_value(body.into_value())
        .map_err(|e| ApiError::bad_request(format!("invalid faults: {e}")))?;
    let errors = faults.check();
    if !errors.is_empty() {
        return Err(ApiError::validation(
            errors
                .into_iter()
                .map(|(f, m)| FieldError::new(f, m))
                .collect(),
        ));
    }
    *lock(&app.faults) = faults.clone();
    Ok(Json(faults))
}

/// Replaces the API token the emulator accepts (a rotation, or a token revoked behind the
/// operator's back).
async fn put_token(State(app): State<AppState>, body: Body) -> Result<StatusCode, ApiError> {
    let token = body
        .into_value()
        .get("token")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .filter(|t| !t.is_empty() && !t.contains(char::is_whitespace))
        .ok_or_else(|| {
            ApiError::validation(vec![FieldError::new(
                "token",
                "must be a non-empty string without whitespace",
            )])
        })?;
    *lock(&app.token) = token;
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_faults(State(app): State<AppState>) -> StatusCode {
    *lock(&app.faults) = Faults::default();
    StatusCode::NO_CONTENT
}

/// Adds a project at run time (the shape of a seed entry).
async fn add_project(State(app): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let project: SeedProject = serde_json::from_value(body.into_value())
        .map_err(|e| ApiError::bad_request(format!("invalid project: {e}")))?;
    let mut store = app.store();
    let mut ids: std::collections::HashSet<String> = store
        .projects
        .iter()
        .flat_map(|p| {
            std::iter::once(p.id.clone()).chain(p.environments.iter().map(|e| e.id.clone()))
        })
        .collect();
    validate_seed_project(&project, "project", &mut ids).map_err(|e| match e {
        super::SeedError::Invalid(m) if m.contains("used twice") => ApiError::conflict(m),
        other => ApiError::bad_request(other.to_string()),
    })?;
    let project = project_from_seed(&project);
    let out = render_project(&project, &app.organisation);
    store.projects.push(project);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// The page an OAuth 2.0 authorize URL points to: redirects straight back to
/// the flow's redirect URL with a fresh `code` and the flow's `state`.
async fn authorize(State(app): State<AppState>, Q(q): Q) -> Result<Response, ApiError> {
    let state = q
        .get("state")
        .ok_or_else(|| ApiError::field("state", "is required"))?;
    let mut store = app.store();
    let flow = store
        .oauth_flows
        .iter_mut()
        .find(|f| f.state == state)
        .ok_or_else(|| {
            ApiError::field("state", "no OAuth 2.0 flow was initialised with this state")
        })?;
    if let Some(given) = q.get("redirect_uri")
        && given != flow.redirect_url
    {
        return Err(ApiError::field(
            "redirect_uri",
            "does not match the redirectUrl the flow was initialised with",
        ));
    }
    let code = hex::encode(rand::random::<[u8; 16]>());
    let mut location = url::Url::parse(&flow.redirect_url)
        .map_err(|e| ApiError::internal(format!("stored redirect URL is invalid: {e}")))?;
    location
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &flow.state);
    flow.code = Some(code);
    Ok((
        StatusCode::FOUND,
        [(header::LOCATION, location.to_string())],
    )
        .into_response())
}

/// The page an OAuth 1.0 authorize URL points to: the resource owner "approves" at once, and
/// the browser goes back to the flow's redirect URL with the temporary `oauth_token` and a
/// fresh `oauth_verifier`.
async fn authorize_oauth1(State(app): State<AppState>, Q(q): Q) -> Result<Response, ApiError> {
    let token = q
        .get("oauth_token")
        .ok_or_else(|| ApiError::field("oauth_token", "is required"))?;
    let mut store = app.store();
    let flow = store
        .oauth1_flows
        .iter_mut()
        .find(|f| f.oauth_token == token)
        .ok_or_else(|| {
            ApiError::field(
                "oauth_token",
                "no OAuth 1.0 flow was initialised with this token",
            )
        })?;
    let verifier = hex::encode(rand::random::<[u8; 16]>());
    let mut location = url::Url::parse(&flow.redirect_url)
        .map_err(|e| ApiError::internal(format!("stored redirect URL is invalid: {e}")))?;
    location
        .query_pairs_mut()
        .append_pair("oauth_token", &flow.oauth_token)
        .append_pair("oauth_verifier", &verifier);
    flow.verifier = Some(verifier);
    Ok((
        StatusCode::FOUND,
        [(header::LOCATION, location.to_string())],
    )
        .into_response())
}

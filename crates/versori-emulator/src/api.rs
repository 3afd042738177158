//! The `/o/{org}/...` API handlers.
//!
//! Order of checks in every handler: path IDs (400), existence of the path's
//! objects (404), body (400), conflicts (409).

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Map, Value, json};

use super::error::{ApiError, FieldError};
use super::page::{PageRequest, Query, no_paging, page, whole};
use super::store::{
    Connection, OAUTH1, OAUTH2_CLIENT, OAuth1Flow, OAuthFlow, SchemeCredential, Store, System,
    Template, now, render_connection, render_project, render_scheme, render_system,
    render_template,
};
use super::validate::{
    self, V, auth_scheme_config, connection_credential, index, is_ulid, join, new_ulid, scheme_id,
};
use super::{App, AppState};

type ApiResult = Result<Response, ApiError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/o/{org}/projects/{project_id}", get(get_project))
        .route("/o/{org}/systems", post(create_system).get(list_systems))
        .route(
            "/o/{org}/systems/{system_id}",
            get(get_system).put(update_system).delete(delete_system),
        )
        .route(
            "/o/{org}/systems/{system_id}/auth-scheme-configs/{auth_scheme_config_id}",
            put(upsert_auth_scheme).delete(delete_auth_scheme),
        )
        .route(
            "/o/{org}/systems/{system_id}/oauth2/initialise",
            post(initialise_oauth2),
        )
        .route(
            "/o/{org}/systems/{system_id}/oauth1/initialise",
            post(initialise_oauth1),
        )
        .route(
            "/o/{org}/projects/{project_id}/connection-templates",
            post(create_template).get(list_templates),
        )
        .route(
            "/o/{org}/projects/{project_id}/connection-templates/{template_id}",
            put(update_template).delete(delete_template),
        )
        .route(
            "/o/{org}/projects/{project_id}/connections",
            get(list_project_connections),
        )
        .route(
            "/o/{org}/connections",
            post(create_connection).get(list_connections),
        )
        .route(
            "/o/{org}/connections/{connection_id}",
            get(get_connection)
                .put(update_connection)
                .delete(delete_connection),
        )
}

// ---------------------------------------------------------------- extractors

/// Path parameters, with rejections as `Error` bodies.
pub struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Path(m)| Params(m))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

impl Params {
    fn raw(&self, name: &str) -> Result<&str, ApiError> {
        self.0
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| ApiError::internal(format!("route has no {name} parameter")))
    }

    /// A path ID that must be a ULID (400 naming the parameter otherwise).
    fn ulid(&self, name: &str) -> Result<String, ApiError> {
        let raw = self.raw(name)?;
        if is_ulid(raw) {
            Ok(raw.to_ascii_uppercase())
        } else {
            Err(ApiError::field(
                name,
                "must be a ULID (26 Crockford base32 characters)",
            ))
        }
    }
}

/// The decoded query string.
pub struct Q(pub Query);

impl<S: Send + Sync> FromRequestParts<S> for Q {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let RawQuery(raw) = RawQuery::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Q(Query::parse(raw.as_deref())))
    }
}

/// A JSON body (`Content-Type: application/json`), parsed but not typed.
pub struct Body(Value);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !(essence == "application/json" || essence.ends_with("+json")) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "request bodies must be sent with Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), "validation_failed", e.body_text()))?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request("request body is not valid JSON").with_details(e.to_string())
        })?;
        Ok(Body(value))
    }
}

impl Body {
    pub fn into_value(self) -> Value {
        self.0
    }

    fn object(&self) -> Result<&Map<String, Value>, ApiError> {
        self.0
            .as_object()
            .ok_or_else(|| ApiError::bad_request("request body must be a JSON object"))
    }
}

fn ok(status: StatusCode, body: Value) -> ApiResult {
    Ok((status, Json(body)).into_response())
}

fn no_content() -> ApiResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn project_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("project {id} not found"))
}

fn system_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("system {id} not found"))
}

/// A required ULID query parameter that names an environment of `project`.
fn env_param(q: &Query, store: &Store, project_id: &str) -> Result<String, ApiError> {
    let env = q
        .get("env_id")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::field("env_id", "is required"))?;
    if !is_ulid(env) {
        return Err(ApiError::field(
            "env_id",
            "must be a ULID (26 Crockford base32 characters)",
        ));
    }
    let env = env.to_ascii_uppercase();
    let known = store
        .project(project_id)
        .is_some_and(|p| p.environments.iter().any(|e| e.id == env));
    if known {
        Ok(env)
    } else {
        Err(ApiError::field(
            "env_id",
            format!("project {project_id} has no environment {env}"),
        ))
    }
}

// ------------------------------------------------------------------ projects

async fn get_project(State(app): State<AppState>, p: Params) -> ApiResult {
    let id = p.ulid("project_id")?;
    let store = app.store();
    let project = store.project(&id).ok_or_else(|| project_not_found(&id))?;
    ok(StatusCode::OK, render_project(project, &app.organisation))
}

/// The emulator's own authorize page for `flow` (`oauth2` or `oauth1`), at the host the request
/// came to (the browser is sent there).
fn authorize_page(headers: &HeaderMap, flow: &str) -> Result<url::Url, ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    url::Url::parse(&format!("http://{host}/_emulator/{flow}/authorize"))
        .or_else(|_| url::Url::parse(&format!("http://127.0.0.1/_emulator/{flow}/authorize")))
        .map_err(|e| ApiError::internal(e.to_string()))
}

// ------------------------------------------------------------------- systems

/// Who a settled config belongs to: the owner of the credentials its upsert makes.
struct Owner<'a> {
    organisation: &'a str,
    system_id: &'a str,
}

/// What an upsert of one config does to the credential store.
enum CredentialWrite {
    /// A new credential; the config now points at it (the one it pointed at before stays).
    Create(SchemeCredential),
    /// Keys to merge into the credential the config already points at (an absent key keeps
    /// the stored value).
    Merge {
        id: String,
        data: Map<String, Value>,
    },
}

/// The `credentialId` a member carries, unset (absent, `""`, the zero ULID) as `None`.
fn given_credential_id(member: &Map<String, Value>) -> Option<String> {
    member
        .get("credentialId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && *s != validate::ZERO_ULID)
        .map(str::to_ascii_uppercase)
}

/// Takes a member's write-only `keys` out of it (they live in the credential, not the config)
/// and settles its `credentialId` against the config it replaces: unset makes a new
/// credential holding whatever keys the body carries (possibly none); a set one must be the
/// one `previous_id` names, and the keys merge into it. `organisationId` is server-assigned:
/// dropped from the stored config (renderings take it from the credential).
fn settle_member(
    member: &mut Map<String, Value>,
    previous_id: Option<&str>,
    kind: &'static str,
    keys: [&str; 2],
    scheme: &str,
    owner: &Owner<'_>,
    field: String,
) -> Result<CredentialWrite, FieldError> {
    let given = given_credential_id(member);
    let mut data = Map::new();
    for key in keys {
        if let Some(Value::String(v)) = member.remove(key) {
            data.insert(key.to_owned(), Value::String(v));
        }
    }
    member.remove("organisationId");
    let write = match given {
        None => CredentialWrite::Create(SchemeCredential {
            id: new_ulid(),
            organisation_id: owner.organisation.to_owned(),
            system_id: owner.system_id.to_owned(),
            auth_scheme_config_id: scheme.to_owned(),
            kind,
            data,
        }),
        Some(id) => {
            if previous_id != Some(id.as_str()) {
                return Err(FieldError::new(
                    field,
                    "no such credential on this auth scheme config",
                ));
            }
            CredentialWrite::Merge { id, data }
        }
    };
    let id = match &write {
        CredentialWrite::Create(c) => c.id.clone(),
        CredentialWrite::Merge { id, .. } => id.clone(),
    };
    member.insert("credentialId".to_owned(), Value::String(id));
    Ok(write)
}

/// Settles the credentials of a config against the one it replaces, if any: an oauth2
/// `authorizationCode` or `password` grant's `clientId`/`clientSecret` ([`OAUTH2_CLIENT`])
/// and an oauth1 scheme's `consumerKey`/`consumerSecret` ([`OAUTH1`]). The
/// `clientCredentials` grant has no server-assigned credential (a secret sent there stays in
/// the config, redacted on reads). Nothing is written: the caller applies the writes once
/// every config of the request has settled.
fn settle(
    cfg: &mut Value,
    previous: Option<&Value>,
    owner: &Owner<'_>,
    path: &str,
) -> Result<Vec<CredentialWrite>, FieldError> {
    let scheme = scheme_id(cfg).to_owned();
    let mut writes = Vec::new();
    if let Some(grant) = cfg
        .pointer_mut("/oauth2/grant")
        .and_then(Value::as_object_mut)
    {
        let grant_type = grant
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if grant_type == "authorizationCode" || grant_type == "password" {
            // A grant sent without its member still gets a (new, empty) credential.
            let member = grant
                .entry(grant_type.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(member) = member.as_object_mut() {
                let previous_id = previous
                    .and_then(|p| p.pointer(&format!("/oauth2/grant/{grant_type}/credentialId")))
                    .and_then(Value::as_str);
                let field = join(
                    &join(&join(path, "oauth2.grant"), &grant_type),
                    "credentialId",
                );
                writes.push(settle_member(
                    member,
                    previous_id,
                    OAUTH2_CLIENT,
                    ["clientId", "clientSecret"],
                    &scheme,
                    owner,
                    field,
                )?);
            }
        }
    }
    if let Some(member) = cfg.get_mut("oauth1").and_then(Value::as_object_mut) {
        let previous_id = previous
            .and_then(|p| p.pointer("/oauth1/credentialId"))
            .and_then(Value::as_str);
        let field = join(&join(path, "oauth1"), "credentialId");
        writes.push(settle_member(
            member,
            previous_id,
            OAUTH1,
            ["consumerKey", "consumerSecret"],
            &scheme,
            owner,
            field,
        )?);
    }
    Ok(writes)
}

/// Applies settled writes: new credentials are added (old ones are never removed), merges
/// replace the keys they carry.
fn apply_credential_writes(store: &mut Store, writes: Vec<CredentialWrite>) {
    for write in writes {
        match write {
            CredentialWrite::Create(credential) => store.scheme_credentials.push(credential),
            CredentialWrite::Merge { id, data } => {
                if let Some(credential) = store.scheme_credential_mut(&id) {
                    credential.data.extend(data);
                }
            }
        }
    }
}

async fn create_system(State(app): State<AppState>, body: Body) -> ApiResult {
    let m = body.object()?;
    let mut v = V::new();
    let name = v.req_str(m, "name", "", true);
    let domain = v.req_str(m, "domain", "", true);
    let base_url = v.req_url(m, "templateBaseUrl", "");
    let labels = labels(&mut v, m);
    // The CLI sends `authSchemeConfigs: null`; it reads as empty. Absent is missing.
    let mut configs = Vec::new();
    match m.get("authSchemeConfigs") {
        None => v.err("authSchemeConfigs", "is required"),
        Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            let mut ids = std::collections::HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let path = index("authSchemeConfigs", i);
                if let Some(cfg) = auth_scheme_config(&mut v, item, &path, false) {
                    let id = scheme_id(&cfg).to_owned();
                    // A config whose type has no member (jwt-bearer, secret) has no ID here.
                    if !id.is_empty() && !ids.insert(id.clone()) {
                        let member = validate::scheme_member(
                            cfg.get("type").and_then(Value::as_str).unwrap_or_default(),
                        )
                        .unwrap_or_default();
                        v.err(
                            join(&join(&path, member), "id"),
                            format!("auth scheme config ID {id:?} is used twice"),
                        );
                    }
                    configs.push((path, cfg));
                }
            }
        }
        Some(_) => v.err("authSchemeConfigs", "must be an array"),
    }
    let (name, domain, base_url) = (
        name.map(str::to_owned),
        domain.map(str::to_owned),
        base_url.map(str::to_owned),
    );
    v.finish()?;
    let (Some(name), Some(domain), Some(template_base_url)) = (name, domain, base_url) else {
        return Err(ApiError::internal(
            "validation let a required field through",
        ));
    };
    let id = new_ulid();
    let owner = Owner {
        organisation: &app.organisation,
        system_id: &id,
    };
    let mut settled = Vec::new();
    let mut writes = Vec::new();
    let mut errors = Vec::new();
    for (path, mut cfg) in configs {
        match settle(&mut cfg, None, &owner, &path) {
            Ok(w) => writes.extend(w),
            Err(e) => errors.push(e),
        }
        settled.push(cfg);
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let mut store = app.store();
    apply_credential_writes(&mut store, writes);
    // System names are NOT unique: the contract is silent and the real API
    // allows duplicates, so a client looking a system up by name must handle
    // several matches.
    let system = System {
        seq: store.next_seq(),
        id,
        name,
        domain,
        template_base_url,
        labels,
        auth_scheme_configs: settled,
    };
    let out = render_system(&system, &store, &app.organisation, true);
    store.systems.push(system);
    ok(StatusCode::CREATED, out)
}

fn labels(v: &mut V, m: &Map<String, Value>) -> Option<Map<String, Value>> {
    let labels = v.opt_object(m, "labels", "")?;
    for (k, value) in labels {
        if !value.is_string() {
            v.err(format!("labels.{k}"), "must be a string");
        }
    }
    Some(labels.clone())
}

async fn list_systems(State(app): State<AppState>, Q(q): Q) -> ApiResult {
    let req = PageRequest::from_query(&q)?;
    let search = q.get("search").map(str::to_lowercase).unwrap_or_default();
    let store = app.store();
    let items = store
        .systems
        .iter()
        .filter(|s| s.name.to_lowercase().contains(&search))
        .map(|s| (s.seq, render_system(s, &store, &app.organisation, true)))
        .collect();
    ok(StatusCode::OK, page(items, req))
}

async fn get_system(State(app): State<AppState>, p: Params) -> ApiResult {
    let id = p.ulid("system_id")?;
    let store = app.store();
    let system = store.system(&id).ok_or_else(|| system_not_found(&id))?;
    ok(
        StatusCode::OK,
        render_system(system, &store, &app.organisation, true),
    )
}

async fn update_system(State(app): State<AppState>, p: Params, body: Body) -> ApiResult {
    let id = p.ulid("system_id")?;
    if app.store().system(&id).is_none() {
        return Err(system_not_found(&id));
    }
    let m = body.object()?;
    let mut v = V::new();
    let name = v.opt_str(m, "name", "").map(str::to_owned);
    let domain = v.opt_str(m, "domain", "").map(str::to_owned);
    let base_url = v.opt_url(m, "templateBaseUrl", "").map(str::to_owned);
    if name.as_deref() == Some("") {
        v.err("name", "must not be empty");
    }
    if domain.as_deref() == Some("") {
        v.err("domain", "must not be empty");
    }
    if m.contains_key("authSchemeConfigs") {
        v.err(
            "authSchemeConfigs",
            "auth schemes change only through /systems/{system_id}/auth-scheme-configs/{id}",
        );
    }
    v.finish()?;
    let mut store = app.store();
    let system = store.system_mut(&id).ok_or_else(|| system_not_found(&id))?;
    if let Some(name) = name {
        system.name = name;
    }
    if let Some(domain) = domain {
        system.domain = domain;
    }
    if let Some(base_url) = base_url {
        system.template_base_url = base_url;
    }
    let system = store.system(&id).ok_or_else(|| system_not_found(&id))?;
    ok(
        StatusCode::CREATED,
        render_system(system, &store, &app.organisation, true),
    )
}

async fn delete_system(State(app): State<AppState>, p: Params) -> ApiResult {
    let id = p.ulid("system_id")?;
    let mut store = app.store();
    if store.system(&id).is_none() {
        return Err(system_not_found(&id));
    }
    let users: Vec<&str> = store
        .templates
        .iter()
        .filter(|t| t.system_id == id)
        .map(|t| t.id.as_str())
        .collect();
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "system {id} is used by connection templates: {}",
            users.join(", ")
        )));
    }
    // Its auth scheme configs' credentials stay in the store (Versori does not
    // garbage-collect them).
    store.systems.retain(|s| s.id != id);
    no_content()
}

async fn upsert_auth_scheme(State(app): State<AppState>, p: Params, body: Body) -> ApiResult {
    let system_id = p.ulid("system_id")?;
    let scheme_path_id = p.raw("auth_scheme_config_id")?.to_owned();
    if scheme_path_id.is_empty() {
        return Err(ApiError::field(
            "auth_scheme_config_id",
            "must not be empty",
        ));
    }
    if app.store().system(&system_id).is_none() {
        return Err(system_not_found(&system_id));
    }
    body.object()?;
    let mut v = V::new();
    let cfg = auth_scheme_config(&mut v, &body.0, "", false);
    v.finish()?;
    let Some(mut cfg) = cfg else {
        return Err(ApiError::internal(
            "validation let an invalid config through",
        ));
    };
    let scheme_type = cfg
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if validate::scheme_member(&scheme_type).is_none()
        && let Some(m) = cfg.as_object_mut()
    {
        // jwt-bearer and secret carry no member, so no ID: the path names the config.
        m.insert(
            validate::MEMBERLESS_ID.to_owned(),
            Value::String(scheme_path_id.clone()),
        );
    }
    let body_id = scheme_id(&cfg).to_owned();
    if body_id != scheme_path_id {
        let member =
            validate::scheme_member(cfg.get("type").and_then(Value::as_str).unwrap_or_default())
                .unwrap_or_default();
        return Err(ApiError::field(
            join(member, "id"),
            format!("must equal the ID in the path ({scheme_path_id:?}), not {body_id:?}"),
        ));
    }
    let mut store = app.store();
    let previous = store
        .system(&system_id)
        .ok_or_else(|| system_not_found(&system_id))?
        .auth_scheme_configs
        .iter()
        .find(|c| scheme_id(c) == body_id)
        .cloned();
    let owner = Owner {
        organisation: &app.organisation,
        system_id: &system_id,
    };
    let writes = settle(&mut cfg, previous.as_ref(), &owner, "")
        .map_err(|e| ApiError::validation(vec![e]))?;
    apply_credential_writes(&mut store, writes);
    let out = render_scheme(&cfg, &store, true);
    let system = store
        .system_mut(&system_id)
        .ok_or_else(|| system_not_found(&system_id))?;
    match system
        .auth_scheme_configs
        .iter_mut()
        .find(|c| scheme_id(c) == body_id)
    {
        Some(slot) => *slot = cfg,
        None => system.auth_scheme_configs.push(cfg),
    }
    ok(StatusCode::CREATED, out)
}

async fn delete_auth_scheme(State(app): State<AppState>, p: Params) -> ApiResult {
    let system_id = p.ulid("system_id")?;
    let scheme = p.raw("auth_scheme_config_id")?.to_owned();
    let mut store = app.store();
    let system = store
        .system(&system_id)
        .ok_or_else(|| system_not_found(&system_id))?;
    if !system
        .auth_scheme_configs
        .iter()
        .any(|c| scheme_id(c) == scheme)
    {
        return Err(ApiError::not_found(format!(
            "system {system_id} has no auth scheme config {scheme:?}"
        )));
    }
    let users: Vec<&str> = store
        .templates
        .iter()
        .filter(|t| t.system_id == system_id && t.auth_scheme_config_ids.contains(&scheme))
        .map(|t| t.id.as_str())
        .collect();
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "auth scheme config {scheme:?} is used by connection templates: {}",
            users.join(", ")
        )));
    }
    // Its credentials stay in the store (Versori does not garbage-collect them).
    if let Some(system) = store.system_mut(&system_id) {
        system
            .auth_scheme_configs
            .retain(|c| scheme_id(c) != scheme);
    }
    no_content()
}

async fn initialise_oauth2(
    State(app): State<AppState>,
    p: Params,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult {
    let system_id = p.ulid("system_id")?;
    if app.store().system(&system_id).is_none() {
        return Err(system_not_found(&system_id));
    }
    let m = body.object()?;
    let mut v = V::new();
    let redirect_url = v.req_url(m, "redirectUrl", "").map(str::to_owned);
    let template_id = v.id_or_unset(m, "connectionTemplateId", "").flatten();
    let scopes = v
        .opt_array(m, "scopes", "")
        .map(|s| v.strings(s, "scopes", true, None))
        .unwrap_or_default();
    v.finish()?;
    let Some(redirect_url) = redirect_url else {
        return Err(ApiError::internal(
            "validation let a required field through",
        ));
    };
    let mut store = app.store();
    let system = store
        .system(&system_id)
        .ok_or_else(|| system_not_found(&system_id))?;
    let candidates: Vec<&Value> = match &template_id {
        Some(t) => {
            let template = store
                .template(t)
                .filter(|t| t.system_id == system_id)
                .ok_or_else(|| {
                    ApiError::field(
                        "connectionTemplateId",
                        format!("system {system_id} has no connection template {t}"),
                    )
                })?;
            system
                .auth_scheme_configs
                .iter()
                .filter(|c| {
                    template
                        .auth_scheme_config_ids
                        .iter()
                        .any(|id| id == scheme_id(c))
                })
                .collect()
        }
        None => system.auth_scheme_configs.iter().collect(),
    };
    let has_code_flow = candidates.iter().any(|c| {
        c.pointer("/oauth2/grant/type").and_then(Value::as_str) == Some("authorizationCode")
    });
    if !has_code_flow {
        return Err(ApiError::bad_request(
            "no oauth2 auth scheme config with the authorizationCode grant applies",
        ));
    }
    let state = hex::encode(rand::random::<[u8; 16]>());
    let mut url = authorize_page(&headers, "oauth2")?;
    url.query_pairs_mut()
        .append_pair("state", &state)
        .append_pair("redirect_uri", &redirect_url);
    store.oauth_flows.push(OAuthFlow {
        state,
        system_id,
        template_id,
        redirect_url,
        scopes,
        code: None,
    });
    ok(StatusCode::OK, json!({ "url": url.as_str() }))
}

/// `POST .../systems/{id}/oauth1/initialise`, body `{credential: {id, organisationId},
/// redirectUrl}`. `credential.id` is the `credentialId` of one of the system's oauth1 schemes
/// with the browser flow (`tokenAuth` not true). The contract names no place for the browser to
/// return to; the emulator takes `redirectUrl`, as `oauth2/initialise` does, and requires it.
/// Answers `{url}`: the provider's (the emulator's) authorize page with the temporary
/// `oauth_token` and the flow's `state`.
async fn initialise_oauth1(
    State(app): State<AppState>,
    p: Params,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult {
    let system_id = p.ulid("system_id")?;
    if app.store().system(&system_id).is_none() {
        return Err(system_not_found(&system_id));
    }
    let m = body.object()?;
    let mut v = V::new();
    let credential_id = v.req_object(m, "credential", "").and_then(|c| {
        if let Some(org) = v.req_str(c, "organisationId", "credential", true)
            && org != app.organisation
        {
            v.err(
                "credential.organisationId",
                format!("must be this organisation ({})", app.organisation),
            );
        }
        v.req_ulid(c, "id", "credential")
    });
    let redirect_url = v.req_url(m, "redirectUrl", "").map(str::to_owned);
    v.finish()?;
    let (Some(credential_id), Some(redirect_url)) = (credential_id, redirect_url) else {
        return Err(ApiError::internal(
            "validation let a required field through",
        ));
    };
    let mut store = app.store();
    let system = store
        .system(&system_id)
        .ok_or_else(|| system_not_found(&system_id))?;
    let scheme = system.auth_scheme_configs.iter().find(|c| {
        c.pointer("/oauth1/credentialId").and_then(Value::as_str) == Some(credential_id.as_str())
    });
    let Some(scheme) = scheme else {
        return Err(ApiError::field(
            "credential.id",
            format!("system {system_id} has no oauth1 auth scheme config with this credential"),
        ));
    };
    if scheme.pointer("/oauth1/tokenAuth").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::field(
            "credential.id",
            "this oauth1 auth scheme config uses tokenAuth: its connections carry an oauth1-token, there is no browser flow",
        ));
    }
    let state = hex::encode(rand::random::<[u8; 16]>());
    let oauth_token = hex::encode(rand::random::<[u8; 16]>());
    let mut url = authorize_page(&headers, "oauth1")?;
    url.query_pairs_mut()
        .append_pair("oauth_token", &oauth_token)
        .append_pair("state", &state);
    store.oauth1_flows.push(OAuth1Flow {
        state,
        system_id,
        credential_id,
        redirect_url,
        oauth_token,
        verifier: None,
    });
    ok(StatusCode::OK, json!({ "url": url.as_str() }))
}

// ------------------------------------------------------- connection templates

async fn create_template(State(app): State<AppState>, p: Params, body: Body) -> ApiResult {
    let project_id = p.ulid("project_id")?;
    let mut store = app.store();
    let project = store
        .project(&project_id)
        .ok_or_else(|| project_not_found(&project_id))?;
    let m = body.object()?;
    let mut v = V::new();
    let system_id = v.req_ulid(m, "systemId", "");
    let name = v.req_str(m, "name", "", true).map(str::to_owned);
    let env_id = v.req_ulid(m, "environmentId", "");
    let dynamic = v.opt_bool(m, "dynamic", "").unwrap_or(false);
    if let Some(env) = &env_id
        && !project.environments.iter().any(|e| &e.id == env)
    {
        v.err(
            "environmentId",
            format!("project {project_id} has no environment {env}"),
        );
    }
    if let Some(system) = &system_id
        && store.system(system).is_none()
    {
        v.err("systemId", format!("system {system} not found"));
    }
    v.finish()?;
    let (Some(system_id), Some(name), Some(environment_id)) = (system_id, name, env_id) else {
        return Err(ApiError::internal(
            "validation let a required field through",
        ));
    };
    if store
        .templates
        .iter()
        .any(|t| t.project_id == project_id && t.environment_id == environment_id && t.name == name)
    {
        return Err(ApiError::conflict(format!(
            "a connection template named {name:?} already exists in this environment"
        ))
        .with_fields(vec![FieldError::new("name", "is already used")]));
    }
    let first_scheme = store
        .system(&system_id)
        .and_then(|s| s.auth_scheme_configs.first())
        .map(|c| scheme_id(c).to_owned());
    let template = Template {
        id: new_ulid(),
        project_id,
        environment_id,
        system_id,
        name,
        dynamic,
        auth_scheme_config_ids: first_scheme.into_iter().collect(),
    };
    let out = render_template(&template, &store, true);
    store.templates.push(template);
    ok(StatusCode::OK, out)
}

async fn list_templates(State(app): State<AppState>, p: Params, Q(q): Q) -> ApiResult {
    let project_id = p.ulid("project_id")?;
    let store = app.store();
    if store.project(&project_id).is_none() {
        return Err(project_not_found(&project_id));
    }
    let env = env_param(&q, &store, &project_id)?;
    no_paging(&q)?;
    let items = store
        .templates
        .iter()
        .filter(|t| t.project_id == project_id && t.environment_id == env)
        .map(|t| render_template(t, &store, true))
        .collect();
    ok(StatusCode::OK, whole(items))
}

fn template_in_project<'a>(
    store: &'a Store,
    project_id: &str,
    template_id: &str,
) -> Result<&'a Template, ApiError> {
    if store.project(project_id).is_none() {
        return Err(project_not_found(project_id));
    }
    store
        .template(template_id)
        .filter(|t| t.project_id == project_id)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "connection template {template_id} not found in project {project_id}"
            ))
        })
}

async fn update_template(State(app): State<AppState>, p: Params, body: Body) -> ApiResult {
    let project_id = p.ulid("project_id")?;
    let template_id = p.ulid("template_id")?;
    let mut store = app.store();
    let template = template_in_project(&store, &project_id, &template_id)?.clone();
    let m = body.object()?;
    let mut v = V::new();
    let name = v.opt_str(m, "name", "").map(str::to_owned);
    if name.as_deref() == Some("") {
        v.err("name", "must not be empty");
    }
    let dynamic = v.opt_bool(m, "dynamic", "");
    let ids = v
        .opt_array(m, "authSchemeConfigIds", "")
        .map(|ids| v.strings(ids, "authSchemeConfigIds", true, None));
    if let Some(ids) = &ids {
        let system = store.system(&template.system_id);
        let mut seen = std::collections::HashSet::new();
        for (i, id) in ids.iter().enumerate() {
            let path = index("authSchemeConfigIds", i);
            if !seen.insert(id) {
                v.err(path, format!("{id:?} is listed twice"));
            } else if !system
                .is_some_and(|s| s.auth_scheme_configs.iter().any(|c| scheme_id(c) == id))
            {
                v.err(
                    path,
                    format!(
                        "system {} has no auth scheme config {id:?}",
                        template.system_id
                    ),
                );
            }
        }
    }
    v.finish()?;
    if let Some(name) = &name
        && store.templates.iter().any(|t| {
            t.id != template.id
                && t.project_id == template.project_id
                && t.environment_id == template.environment_id
                && &t.name == name
        })
    {
        return Err(ApiError::conflict(format!(
            "a connection template named {name:?} already exists in this environment"
        ))
        .with_fields(vec![FieldError::new("name", "is already used")]));
    }
    let Some(slot) = store.templates.iter_mut().find(|t| t.id == template_id) else {
        return Err(ApiError::internal("template vanished"));
    };
    if let Some(name) = name {
        slot.name = name;
    }
    if let Some(dynamic) = dynamic {
        slot.dynamic = dynamic;
    }
    if let Some(ids) = ids {
        slot.auth_scheme_config_ids = ids;
    }
    let updated = slot.clone();
    ok(StatusCode::OK, render_template(&updated, &store, true))
}

async fn delete_template(State(app): State<AppState>, p: Params) -> ApiResult {
    let project_id = p.ulid("project_id")?;
    let template_id = p.ulid("template_id")?;
    let mut store = app.store();
    template_in_project(&store, &project_id, &template_id)?;
    let count = store
        .connections
        .iter()
        .filter(|c| c.template_id == template_id)
        .count();
    if count > 0 {
        return Err(ApiError::conflict(format!(
            "connection template {template_id} still has {count} connection(s); delete them first"
        )));
    }
    store.templates.retain(|t| t.id != template_id);
    no_content()
}

// --------------------------------------------------------------- connections

/// Validates `credentials` and returns them normalised, IDs assigned. A given
/// (non-zero) credential ID must not belong to another connection.
fn credentials(
    v: &mut V,
    m: &Map<String, Value>,
    prefix: &str,
    app: &App,
    store: &Store,
    this: Option<&str>,
) -> Vec<Value> {
    let Some(items) = v.req_array(m, "credentials", prefix) else {
        return Vec::new();
    };
    let base = join(prefix, "credentials");
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let path = index(&base, i);
        let Some(cc) = connection_credential(v, item, &path, &app.organisation) else {
            continue;
        };
        for (pointer, field) in [("/id", "id"), ("/credential/id", "credential.id")] {
            let Some(id) = cc.pointer(pointer).and_then(Value::as_str) else {
                continue;
            };
            let used_elsewhere = store.connections.iter().any(|c| {
                Some(c.id.as_str()) != this
                    && c.credentials
                        .iter()
                        .any(|o| o.pointer(pointer).and_then(Value::as_str) == Some(id))
            });
            if !seen.insert((pointer, id.to_owned())) || used_elsewhere {
                v.err(
                    join(&path, field),
                    format!("credential ID {id} is already used"),
                );
            }
        }
        out.push(cc);
    }
    out
}

fn base_url(v: &mut V, m: &Map<String, Value>, prefix: &str, required: bool) -> Option<String> {
    let s = if required {
        v.req_str(m, "baseUrl", prefix, false)?
    } else {
        v.opt_str(m, "baseUrl", prefix)?
    };
    // Empty means "the template's base URL".
    if !s.is_empty() && !validate::is_url(s) {
        v.err(
            join(prefix, "baseUrl"),
            "must be empty or an absolute http or https URL",
        );
    }
    Some(s.to_owned())
}

fn name_taken(store: &Store, system_id: &str, name: &str, this: Option<&str>) -> bool {
    store
        .connections
        .iter()
        .any(|c| c.system_id == system_id && c.name == name && Some(c.id.as_str()) != this)
}

fn name_conflict(name: &str, field: &str) -> ApiError {
    ApiError::conflict(format!(
        "a connection named {name:?} already exists on this system"
    ))
    .with_fields(vec![FieldError::new(field, "is already used")])
}

async fn create_connection(State(app): State<AppState>, body: Body) -> ApiResult {
    let m = body.object()?;
    let mut store = app.store();
    let mut v = V::new();
    let template_id = v.req_ulid(m, "connectionTemplateId", "");
    let template = template_id.as_ref().and_then(|id| {
        let t = store.template(id).cloned();
        if t.is_none() {
            v.err(
                "connectionTemplateId",
                format!("connection template {id} not found"),
            );
        }
        t
    });
    let external_id = v
        .opt_str(m, "externalId", "")
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    if let Some(t) = &template {
        match (t.dynamic, &external_id) {
            (true, None) => v.err(
                "externalId",
                "is required: the connection template is dynamic, so its connections belong to an end user",
            ),
            (false, Some(_)) => v.err(
                "externalId",
                "must not be set: the connection template is static (not dynamic)",
            ),
            _ => {}
        }
    }
    let connection = v.req_object(m, "connection", "");
    let mut fields = None;
    if let Some(c) = connection {
        let name = v.req_str(c, "name", "connection", true).map(str::to_owned);
        let creds = credentials(&mut v, c, "connection", &app, &store, None);
        let base = base_url(&mut v, c, "connection", false);
        fields = Some((name, creds, base));
    }
    v.finish()?;
    let (Some(template), Some((Some(name), credentials, base_url))) = (template, fields) else {
        return Err(ApiError::internal(
            "validation let a required field through",
        ));
    };
    if name_taken(&store, &template.system_id, &name, None) {
        return Err(name_conflict(&name, "connection.name"));
    }
    consume_authorization_codes(&mut store, &credentials, "connection.", &template.system_id)?;
    let at = now();
    let connection = Connection {
        seq: store.next_seq(),
        id: new_ulid(),
        name,
        system_id: template.system_id.clone(),
        template_id: template.id.clone(),
        project_id: template.project_id.clone(),
        environment_id: template.environment_id.clone(),
        external_id,
        organisation_id: app.organisation.clone(),
        base_url,
        credentials,
        created_at: at.clone(),
        updated_at: at,
    };
    let out = render_connection(&connection);
    store.connections.push(connection);
    ok(StatusCode::CREATED, out)
}

/// An `oauth2-code` credential must carry a code the provider (the emulator's authorize page)
/// granted for a flow initialised on this system, with that flow's state. Each code is good
/// once: the flow is consumed, so a replayed code is refused.
fn consume_authorization_codes(
    store: &mut Store,
    credentials: &[Value],
    prefix: &str,
    system_id: &str,
) -> Result<(), ApiError> {
    for (i, credential) in credentials.iter().enumerate() {
        if let Some(oauth1) = credential.pointer("/credential/data/oauth1") {
            let field = |f: &str| oauth1.get(f).and_then(Value::as_str).unwrap_or_default();
            let found = store.oauth1_flows.iter().position(|f| {
                f.system_id == system_id
                    && f.state == field("state")
                    && f.oauth_token == field("oauthToken")
                    && f.verifier.as_deref() == Some(field("oauthVerifier"))
            });
            match found {
                Some(index) => {
                    store.oauth1_flows.remove(index);
                }
                None => {
                    return Err(ApiError::field(
                        format!("{prefix}credentials[{i}].credential.data.oauth1.oauthVerifier"),
                        "is not a verifier the provider granted for this system's OAuth 1.0 flow, state and token (wrong, reused or never issued)",
                    ));
                }
            }
            continue;
        }
        let Some(code) = credential.pointer("/credential/data/oauth2Code") else {
            continue;
        };
        let given_code = code.get("code").and_then(Value::as_str).unwrap_or_default();
        let given_state = code
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let found = store.oauth_flows.iter().position(|f| {
            f.system_id == system_id
                && f.state == given_state
                && f.code.as_deref() == Some(given_code)
        });
        match found {
            Some(index) => {
                store.oauth_flows.remove(index);
            }
            None => {
                return Err(ApiError::field(
                    format!("{prefix}credentials[{i}].credential.data.oauth2Code.code"),
                    "is not a code the provider granted for this system's authorization flow and state (wrong, reused or never issued)",
                ));
            }
        }
    }
    Ok(())
}

async fn list_connections(State(app): State<AppState>, Q(q): Q) -> ApiResult {
    let req = PageRequest::from_query(&q)?;
    let system = match q.get("system_id").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) if is_ulid(s) => Some(s.to_ascii_uppercase()),
        Some(_) => {
            return Err(ApiError::field(
                "system_id",
                "must be a ULID (26 Crockford base32 characters)",
            ));
        }
    };
    // The end user is identified by the external ID its connections were created with.
    let end_user = q.get("end_user_id").filter(|s| !s.is_empty());
    let store = app.store();
    let items = store
        .connections
        .iter()
        .filter(|c| system.as_ref().is_none_or(|s| &c.system_id == s))
        .filter(|c| end_user.is_none_or(|u| c.external_id.as_deref() == Some(u)))
        .map(|c| (c.seq, render_connection(c)))
        .collect();
    ok(StatusCode::OK, page(items, req))
}

async fn list_project_connections(State(app): State<AppState>, p: Params, Q(q): Q) -> ApiResult {
    let project_id = p.ulid("project_id")?;
    let store = app.store();
    if store.project(&project_id).is_none() {
        return Err(project_not_found(&project_id));
    }
    let env = env_param(&q, &store, &project_id)?;
    no_paging(&q)?;
    let items = store
        .connections
        .iter()
        .filter(|c| c.project_id == project_id && c.environment_id == env)
        .filter(|c| c.external_id.is_none())
        .map(render_connection)
        .collect();
    ok(StatusCode::OK, whole(items))
}

fn connection_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("connection {id} not found"))
}

async fn get_connection(State(app): State<AppState>, p: Params) -> ApiResult {
    let id = p.ulid("connection_id")?;
    let store = app.store();
    let c = store
        .connection(&id)
        .ok_or_else(|| connection_not_found(&id))?;
    ok(StatusCode::OK, render_connection(c))
}

async fn update_connection(State(app): State<AppState>, p: Params, body: Body) -> ApiResult {
    let id = p.ulid("connection_id")?;
    let mut store = app.store();
    let system_id = store
        .connection(&id)
        .ok_or_else(|| connection_not_found(&id))?
        .system_id
        .clone();
    let m = body.object()?;
    let mut v = V::new();
    let name = v.req_str(m, "name", "", true).map(str::to_owned);
    let creds = credentials(&mut v, m, "", &app, &store, Some(&id));
    let base = base_url(&mut v, m, "", true);
    v.finish()?;
    let (Some(name), Some(base)) = (name, base) else {
        return Err(ApiError::internal(
            "validation let a required field through",
        ));
    };
    if name_taken(&store, &system_id, &name, Some(&id)) {
        return Err(name_conflict(&name, "name"));
    }
    consume_authorization_codes(&mut store, &creds, "", &system_id)?;
    let Some(c) = store.connections.iter_mut().find(|c| c.id == id) else {
        return Err(connection_not_found(&id));
    };
    c.name = name;
    c.credentials = creds;
    c.base_url = Some(base);
    c.updated_at = now();
    ok(StatusCode::OK, render_connection(c))
}

async fn delete_connection(State(app): State<AppState>, p: Params) -> ApiResult {
    let id = p.ulid("connection_id")?;
    let mut store = app.store();
    if store.connection(&id).is_none() {
        return Err(connection_not_found(&id));
    }
    store.connections.retain(|c| c.id != id);
    no_content()
}

//! The in-memory objects, their JSON renderings, and redaction.
//!
//! Everything is stored in clear; the API renderings redact secrets, the
//! `/_emulator/state` dump does not.
//!
//! The write-only parts of an auth scheme config (an oauth2 `authorizationCode` or
//! `password` grant's `clientId`/`clientSecret`, an oauth1 scheme's
//! `consumerKey`/`consumerSecret`) are not kept in the config: they live in a
//! [`SchemeCredential`] the config points at by its `credentialId`, and every
//! rendering fills them in from there.

use serde_json::{Map, Value, json};

use super::validate::{MEMBERLESS_ID, credential_member, scheme_id};

/// What a redacted secret reads as: six asterisks, as the seed's listing shows.
pub const MASK: &str = "******";

#[derive(Debug, Clone)]
pub struct Environment {
    pub id: String,
    pub name: String,
    pub status: String,
}

#[derive(Debug, Clone)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub environments: Vec<Environment>,
}

#[derive(Debug, Clone)]
pub struct System {
    pub seq: u64,
    pub id: String,
    pub name: String,
    pub domain: String,
    pub template_base_url: String,
    pub labels: Option<Map<String, Value>>,
    /// Normalised `AuthSchemeConfig`s (`{type, <member>}`), secrets in clear.
    pub auth_scheme_configs: Vec<Value>,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub id: String,
    pub project_id: String,
    pub environment_id: String,
    pub system_id: String,
    pub name: String,
    pub dynamic: bool,
    pub auth_scheme_config_ids: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Connection {
    pub seq: u64,
    pub id: String,
    pub name: String,
    pub system_id: String,
    pub template_id: String,
    pub project_id: String,
    pub environment_id: String,
    pub external_id: Option<String>,
    pub organisation_id: String,
    pub base_url: Option<String>,
    /// Normalised `ConnectionCredential`s, secrets in clear.
    pub credentials: Vec<Value>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone)]
pub struct OAuthFlow {
    pub state: String,
    pub system_id: String,
    pub template_id: Option<String>,
    pub redirect_url: String,
    pub scopes: Vec<String>,
    pub code: Option<String>,
}

/// An OAuth 1.0 authorization flow started by `oauth1/initialise`: the emulator plays the
/// provider. `oauth_token` is the temporary credential in the authorize URL; the authorize page
/// sets `verifier` and sends the browser back with both.
#[derive(Debug, Clone)]
pub struct OAuth1Flow {
    pub state: String,
    pub system_id: String,
    /// The oauth1 scheme's `credentialId` the flow was started for.
    pub credential_id: String,
    pub redirect_url: String,
    pub oauth_token: String,
    pub verifier: Option<String>,
}

/// The type of a [`SchemeCredential`] holding an oauth2 grant's client ID and secret.
pub const OAUTH2_CLIENT: &str = "oauth2-client";
/// The type of a [`SchemeCredential`] holding an oauth1 scheme's consumer key and secret.
pub const OAUTH1: &str = "oauth1";

/// A credential Versori keeps for an auth scheme config's write-only secret (the one a
/// config's server-assigned `credentialId` names).
///
/// `kind` (`type` in the state dump) is one of:
/// - [`OAUTH2_CLIENT`] (`oauth2-client`): an oauth2 `authorizationCode` or `password`
///   grant's `clientId` and `clientSecret`;
/// - [`OAUTH1`] (`oauth1`): an oauth1 scheme's `consumerKey` and `consumerSecret`.
///
/// `data` holds those two keys flat, each only when it was ever sent (a credential made by an
/// upsert that carried no secret holds none).
///
/// An upsert without `credentialId` makes a new credential and repoints the config at it;
/// the old one stays in the store, as Versori does not garbage-collect it. Deleting a config
/// or a system does not delete its credentials either.
#[derive(Debug, Clone)]
pub struct SchemeCredential {
    pub id: String,
    pub organisation_id: String,
    /// The system and auth scheme config ID it was made for.
    pub system_id: String,
    pub auth_scheme_config_id: String,
    pub kind: &'static str,
    pub data: Map<String, Value>,
}

impl SchemeCredential {
    pub fn render(&self) -> Value {
        json!({
            "id": self.id,
            "organisationId": self.organisation_id,
            "systemId": self.system_id,
            "authSchemeConfigId": self.auth_scheme_config_id,
            "type": self.kind,
            "data": self.data,
        })
    }
}

#[derive(Debug, Default)]
pub struct Store {
    seq: u64,
    pub projects: Vec<Project>,
    pub systems: Vec<System>,
    pub templates: Vec<Template>,
    pub connections: Vec<Connection>,
    pub oauth_flows: Vec<OAuthFlow>,
    pub oauth1_flows: Vec<OAuth1Flow>,
    /// The auth scheme configs' credentials, in creation order (never removed).
    pub scheme_credentials: Vec<SchemeCredential>,
}

impl Store {
    /// The next creation sequence number (cursors are built from these).
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn project(&self, id: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.id == id)
    }

    pub fn system(&self, id: &str) -> Option<&System> {
        self.systems.iter().find(|s| s.id == id)
    }

    pub fn system_mut(&mut self, id: &str) -> Option<&mut System> {
        self.systems.iter_mut().find(|s| s.id == id)
    }

    pub fn template(&self, id: &str) -> Option<&Template> {
        self.templates.iter().find(|t| t.id == id)
    }

    pub fn connection(&self, id: &str) -> Option<&Connection> {
        self.connections.iter().find(|c| c.id == id)
    }

    pub fn scheme_credential(&self, id: &str) -> Option<&SchemeCredential> {
        self.scheme_credentials.iter().find(|c| c.id == id)
    }

    pub fn scheme_credential_mut(&mut self, id: &str) -> Option<&mut SchemeCredential> {
        self.scheme_credentials.iter_mut().find(|c| c.id == id)
    }
}

pub fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string())
}

fn mask(obj: &mut Value, key: &str) {
    if let Some(v) = obj.get_mut(key)
        && v.is_string()
    {
        *v = Value::String(MASK.to_owned());
    }
}

/// Redacts the write-only parts of an auth scheme config: the oauth2 grants' client secrets
/// and the oauth1 consumer secret.
pub fn redact_scheme(cfg: &mut Value) {
    if let Some(grant) = cfg.pointer_mut("/oauth2/grant") {
        for member in ["authorizationCode", "clientCredentials", "password"] {
            if let Some(g) = grant.get_mut(member) {
                mask(g, "clientSecret");
            }
        }
    }
    if let Some(oauth1) = cfg.get_mut("oauth1") {
        mask(oauth1, "consumerSecret");
    }
}

/// Redacts the secret values of a `ConnectionCredential`.
pub fn redact_connection_credential(cc: &mut Value) {
    if let Some(cfg) = cc.get_mut("authSchemeConfig") {
        redact_scheme(cfg);
    }
    let Some(credential) = cc.get_mut("credential") else {
        return;
    };
    let member = credential
        .get("type")
        .and_then(Value::as_str)
        .and_then(credential_member);
    let Some(member) = member else {
        return;
    };
    let Some(data) = credential.get_mut("data").and_then(|d| d.get_mut(member)) else {
        return;
    };
    let secrets: &[&str] = match member {
        "string" => &["value"],
        "binary" => &["valueBase64"],
        "basicAuth" | "oauth2Password" => &["password"],
        "oauth2Client" => &["clientSecret"],
        "oauth2Code" => &["code"],
        "oauth2Token" => &["refreshToken", "accessToken"],
        "certificate" => &["key"],
        "oauth1" => &["oauthToken", "oauthVerifier"],
        "oauth1Token" => &["token", "tokenSecret"],
        _ => &[],
    };
    for key in secrets {
        mask(data, key);
    }
}

/// Fills a stored config's write-only parts in from the credentials its `credentialId`s name:
/// the oauth2 grants' `clientId`, `clientSecret` and `organisationId`, the oauth1 scheme's
/// `consumerKey` and `consumerSecret`, each only when the credential holds it.
fn fill_from_credentials(cfg: &mut Value, store: &Store) {
    if let Some(grant) = cfg
        .pointer_mut("/oauth2/grant")
        .and_then(Value::as_object_mut)
    {
        for (key, member) in grant.iter_mut() {
            if (key == "authorizationCode" || key == "password")
                && let Some(m) = member.as_object_mut()
            {
                fill_member(m, store);
            }
        }
    }
    if let Some(m) = cfg.get_mut("oauth1").and_then(Value::as_object_mut) {
        fill_member(m, store);
    }
}

fn fill_member(member: &mut Map<String, Value>, store: &Store) {
    let Some(credential) = member
        .get("credentialId")
        .and_then(Value::as_str)
        .and_then(|id| store.scheme_credential(id))
    else {
        return;
    };
    for (key, value) in &credential.data {
        member.insert(key.clone(), value.clone());
    }
    if credential.kind == OAUTH2_CLIENT {
        member.insert(
            "organisationId".to_owned(),
            Value::String(credential.organisation_id.clone()),
        );
    }
}

/// An auth scheme config as the API returns it (with `validationMessages`), its write-only
/// parts filled in from the store's credentials.
pub fn render_scheme(cfg: &Value, store: &Store, redact: bool) -> Value {
    let mut out = cfg.clone();
    fill_from_credentials(&mut out, store);
    if let Some(m) = out.as_object_mut() {
        m.remove(MEMBERLESS_ID);
    }
    if let Some(member) = out
        .get("type")
        .and_then(Value::as_str)
        .and_then(super::validate::scheme_member)
        && let Some(m) = out.get_mut(member).and_then(Value::as_object_mut)
    {
        m.insert("validationMessages".to_owned(), json!([]));
    }
    if redact {
        redact_scheme(&mut out);
    }
    out
}

pub fn render_project(p: &Project, organisation: &str) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "organisationId": organisation,
        "environments": p.environments.iter().map(|e| json!({
            "id": e.id, "name": e.name, "status": e.status,
        })).collect::<Vec<_>>(),
    })
}

pub fn render_system(s: &System, store: &Store, organisation: &str, redact: bool) -> Value {
    let mut out = json!({
        "id": s.id,
        "name": s.name,
        "domain": s.domain,
        "templateBaseUrl": s.template_base_url,
        "organisationId": organisation,
        "authSchemeConfigs": s.auth_scheme_configs.iter().map(|c| render_scheme(c, store, redact)).collect::<Vec<_>>(),
    });
    if let Some(labels) = &s.labels {
        out["labels"] = Value::Object(labels.clone());
    }
    out
}

/// A `ConnectionTemplate`: `id` is the system's, the configs resolved live from it.
pub fn render_template(t: &Template, store: &Store, redact: bool) -> Value {
    let system = store.system(&t.system_id);
    let configs: Vec<Value> = t
        .auth_scheme_config_ids
        .iter()
        .filter_map(|id| {
            system?
                .auth_scheme_configs
                .iter()
                .find(|c| scheme_id(c) == id)
                .map(|c| render_scheme(c, store, redact))
        })
        .collect();
    json!({
        "id": t.system_id,
        "connectionTemplateId": t.id,
        "name": t.name,
        "domain": system.map(|s| s.domain.as_str()).unwrap_or_default(),
        "templateBaseUrl": system.map(|s| s.template_base_url.as_str()).unwrap_or_default(),
        "dynamic": t.dynamic,
        "authSchemeConfigs": configs,
        "projectId": t.project_id,
        "environmentId": t.environment_id,
    })
}

pub fn render_connection(c: &Connection) -> Value {
    let credentials: Vec<Value> = c
        .credentials
        .iter()
        .map(|cc| {
            let mut cc = cc.clone();
            redact_connection_credential(&mut cc);
            cc
        })
        .collect();
    let mut out = json!({
        "id": c.id,
        "name": c.name,
        "credentials": credentials,
        "createdAt": c.created_at,
        "updatedAt": c.updated_at,
        "systemId": c.system_id,
        "connectionTemplateId": c.template_id,
    });
    if let Some(base_url) = &c.base_url {
        out["baseUrl"] = Value::String(base_url.clone());
    }
    out
}

/// Every object, secrets in clear (for `/_emulator/state`).
pub fn dump(store: &Store, organisation: &str) -> Value {
    json!({
        "organisation": organisation,
        "projects": store.projects.iter().map(|p| render_project(p, organisation)).collect::<Vec<_>>(),
        "systems": store.systems.iter().map(|s| render_system(s, store, organisation, false)).collect::<Vec<_>>(),
        "credentials": store.scheme_credentials.iter().map(SchemeCredential::render).collect::<Vec<_>>(),
        "connectionTemplates": store.templates.iter().map(|t| json!({
            "id": t.id,
            "projectId": t.project_id,
            "environmentId": t.environment_id,
            "systemId": t.system_id,
            "name": t.name,
            "dynamic": t.dynamic,
            "authSchemeConfigIds": t.auth_scheme_config_ids,
        })).collect::<Vec<_>>(),
        "connections": store.connections.iter().map(|c| json!({
            "id": c.id,
            "name": c.name,
            "systemId": c.system_id,
            "connectionTemplateId": c.template_id,
            "projectId": c.project_id,
            "environmentId": c.environment_id,
            "externalId": c.external_id,
            "organisationId": c.organisation_id,
            "baseUrl": c.base_url,
            "credentials": c.credentials,
            "createdAt": c.created_at,
            "updatedAt": c.updated_at,
        })).collect::<Vec<_>>(),
        "oauth2Flows": store.oauth_flows.iter().map(|f| json!({
            "state": f.state,
            "systemId": f.system_id,
            "connectionTemplateId": f.template_id,
            "redirectUrl": f.redirect_url,
            "scopes": f.scopes,
            "code": f.code,
        })).collect::<Vec<_>>(),
        "oauth1Flows": store.oauth1_flows.iter().map(|f| json!({
            "state": f.state,
            "systemId": f.system_id,
            "credentialId": f.credential_id,
            "redirectUrl": f.redirect_url,
            "oauthToken": f.oauth_token,
            "oauthVerifier": f.verifier,
        })).collect::<Vec<_>>(),
    })
}

//! The Connection adapter: a Versori connection with credentials read from Secrets.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::Shutdown;
use super::context::Context;
use super::error::Error;
use super::reconciler::{
    self, ById, Managed, Named, Reconciling, Scope, adopt_by_name, observe_by_id,
};
use super::secrets::{CredentialHashKey, SecretReader, hash_secrets};
use crate::resources::common::{CommonStatus, DeletionPolicy};
use crate::resources::{Connection, ConnectionStatus, Credentials, ProjectSystem};
use crate::versori::SecretValue;
use crate::versori::models::{self as api, CredentialType};

impl Managed for Connection {
    type Status = ConnectionStatus;
    const KIND: &'static str = "Connection";

    fn status(&self) -> Option<&ConnectionStatus> {
        self.status.as_ref()
    }

    fn versori_id(status: &ConnectionStatus) -> Option<&str> {
        status.id.as_deref()
    }

    fn common(status: &mut ConnectionStatus) -> &mut CommonStatus {
        &mut status.common
    }

    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy.unwrap_or_default()
    }

    async fn apply(
        &self,
        rc: &Reconciling<'_, Self>,
        status: &mut ConnectionStatus,
    ) -> Result<String, Error> {
        let versori = &rc.ctx.versori;
        let template = resolve_template(self, rc).await?;
        if template.dynamic != self.spec.external_id.is_some() {
            return Err(external_id_mismatch(&template));
        }
        // The credential (Secrets read here) before any Versori call.
        let kind = select_credential(self.spec.credentials.as_ref(), &template)?;
        if kind == Kind::AuthorizationCode {
            return authorization_code(self, rc, status, &template).await;
        }
        clear_authorization(status);
        rc.ctx.secret_settings.policy.check_overrides(self)?;
        let desired = read_credential(self, kind, &mut rc.secrets().single_line()).await?;
        let hash = desired.hash(&rc.ctx.secret_settings.hash_key, &rc.uid());
        let name = self.versori_name();
        let base_url = self.spec.base_url.clone().unwrap_or_default();

        let existing = observe(self, rc, status, &template, &name).await?;
        let connection = match existing {
            Some(connection) => connection,
            None => {
                let config = template_config(rc, &template).await?;
                rc.mark_create_pending().await?;
                let created = versori
                    .create_connection(&api::EnvSystemConnectionCreate {
                        connection_template_id: template.template_id.clone(),
                        connection: api::ConnectionCreate {
                            name: name.clone(),
                            credentials: vec![desired.to_api(versori.organisation(), &config)],
                            base_url: self.spec.base_url.clone(),
                        },
                        external_id: self.spec.external_id.clone(),
                    })
                    .await
                    .map_err(|e| {
                        external_id_error(&e, &template)
                            .unwrap_or_else(|| Error::versori("creating the Versori connection")(e))
                    })?;
                status.id = Some(created.id.clone());
                status.credential_hash = Some(hash.clone());
                status.credential_type = Some(desired.credential_type().as_str().to_owned());
                rc.persist(status).await?;
                rc.event(
                    "Created",
                    "Create",
                    format!("created Versori connection {name:?} with ID {}", created.id),
                )
                .await;
                created
            }
        };
        let id = connection.id.clone();

        let observed_type = connection
            .credentials
            .first()
            .and_then(|c| c.credential.as_ref())
            .map(|c| c.type_);
        let rotated = status.credential_hash.as_deref() != Some(hash.as_str());
        let drifted = connection.name != name
            || connection.base_url.clone().unwrap_or_default() != base_url
            || observed_type != Some(desired.credential_type());
        if rotated || drifted {
            let config = template_config(rc, &template).await?;
            versori
                .update_connection(
                    &id,
                    &api::ConnectionUpdate {
                        name: name.clone(),
                        credentials: vec![desired.to_api(versori.organisation(), &config)],
                        base_url: base_url.clone(),
                    },
                )
                .await
                .map_err(Error::versori("updating the Versori connection"))?;
            let what = match (rotated, drifted) {
                (true, true) => "credentials and settings",
                (true, false) => "credentials",
                _ => "settings",
            };
            rc.event(
                "Updated",
                "Update",
                format!("updated the {what} of Versori connection {id}"),
            )
            .await;
        }
        status.id = Some(id.clone());
        status.connection_template_id = Some(template.template_id.clone());
        status.system_id = Some(template.system_id.clone());
        status.credential_type = Some(desired.credential_type().as_str().to_owned());
        status.credential_hash = Some(hash);
        Ok(format!("Versori connection {name:?} has ID {id}"))
    }

    async fn delete(
        &self,
        rc: &Reconciling<'_, Self>,
        status: &mut ConnectionStatus,
    ) -> Result<(), Error> {
        let versori = &rc.ctx.versori;
        let id = match (status.id.clone(), status.system_id.clone()) {
            (Some(id), _) => id,
            // An interrupted create may have made the connection without recording its ID.
            (None, system_id) if rc.create_pending() => {
                let Some(system_id) = system_id.or(template_system_id(self, rc).await) else {
                    return Ok(());
                };
                let name = self.versori_name();
                let found: Vec<_> = versori
                    .list_connections(Some(&system_id), None)
                    .await
                    .map_err(Error::versori("looking up the Versori connection by name"))?
                    .into_iter()
                    .filter(|c| c.name == name)
                    .collect();
                match found.as_slice() {
                    [one] => one.id.clone(),
                    _ => return Ok(()),
                }
            }
            _ => return Ok(()),
        };
        match versori.delete_connection(&id).await {
            Ok(()) => {
                rc.event(
                    "Deleted",
                    "Delete",
                    format!("deleted Versori connection {id}"),
                )
                .await;
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(Error::versori("deleting the Versori connection")(e)),
        }
    }
}

impl Connection {
    /// The connection's name in Versori.
    pub fn versori_name(&self) -> String {
        self.spec.name.clone().unwrap_or_else(|| self.name_any())
    }

    /// Whether the Connection references the Secret `name`.
    fn uses_secret(&self, name: &str) -> bool {
        let Some(c) = &self.spec.credentials else {
            return false;
        };
        let refs = [
            c.api_key.as_ref().map(|k| k.secret_key_ref.name.as_str()),
            c.basic_auth.as_ref().map(|b| b.secret_ref.name.as_str()),
            c.oauth2_password
                .as_ref()
                .map(|b| b.secret_ref.name.as_str()),
            c.oauth2_token.as_ref().map(|t| t.secret_ref.name.as_str()),
            c.oauth2_client_credentials
                .as_ref()
                .map(|o| o.client_secret_secret_key_ref.name.as_str()),
            c.oauth2_client_credentials
                .as_ref()
                .and_then(|o| o.client_id_secret_key_ref.as_ref())
                .map(|r| r.name.as_str()),
        ];
        refs.into_iter().flatten().any(|n| n == name)
    }
}

/// What the Connection needs of its ProjectSystem.
struct Template {
    project_id: String,
    environment_id: String,
    template_id: String,
    system_id: String,
    dynamic: bool,
    scheme_type: Option<String>,
    grant_type: Option<String>,
}

async fn resolve_template(
    obj: &Connection,
    rc: &Reconciling<'_, Connection>,
) -> Result<Template, Error> {
    let name = &obj.spec.project_system_ref.name;
    let api: Api<ProjectSystem> = Api::namespaced(rc.ctx.client.clone(), &rc.namespace);
    let waiting = |message: String| Error::Waiting {
        reason: "WaitingForProjectSystem",
        message,
    };
    let ps = api
        .get_opt(name)
        .await
        .map_err(Error::kube("reading the referenced ProjectSystem"))?
        .ok_or_else(|| {
            waiting(format!(
                "ProjectSystem {name:?} does not exist in this namespace yet"
            ))
        })?;
    let status = ps.status.unwrap_or_default();
    let ready = status
        .common
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    match (
        ready,
        status.connection_template_id,
        status.system_id,
        status.environment_id,
    ) {
        (true, Some(template_id), Some(system_id), Some(environment_id)) => Ok(Template {
            project_id: ps.spec.project_id,
            environment_id,
            template_id,
            system_id,
            dynamic: status.dynamic.unwrap_or(false),
            scheme_type: status.auth_scheme_type,
            grant_type: status.oauth2_grant_type,
        }),
        _ => Err(waiting(format!(
            "waiting for ProjectSystem {name:?} to be ready in Versori"
        ))),
    }
}

async fn template_system_id(obj: &Connection, rc: &Reconciling<'_, Connection>) -> Option<String> {
    let api: Api<ProjectSystem> = Api::namespaced(rc.ctx.client.clone(), &rc.namespace);
    api.get_opt(&obj.spec.project_system_ref.name)
        .await
        .ok()
        .flatten()
        .and_then(|ps| ps.status)
        .and_then(|s| s.system_id)
}

/// The template's auth scheme config, which every credential carries.
async fn template_config(
    rc: &Reconciling<'_, Connection>,
    template: &Template,
) -> Result<Option<api::AuthSchemeConfig>, Error> {
    let templates = rc
        .ctx
        .versori
        .list_connection_templates(&template.project_id, &template.environment_id)
        .await
        .map_err(Error::versori("reading the connection template"))?;
    Ok(templates
        .into_iter()
        .find(|t| t.connection_template_id == template.template_id)
        .and_then(|t| t.auth_scheme_configs.into_iter().next()))
}

/// Versori's refusal of an externalId (or its absence), in the operator's words.
fn external_id_error(error: &crate::versori::ApiError, template: &Template) -> Option<Error> {
    if error.status() != Some(400) || !error.fields().iter().any(|f| f.field == "externalId") {
        return None;
    }
    Some(external_id_mismatch(template))
}

fn external_id_mismatch(template: &Template) -> Error {
    let message = if template.dynamic {
        "the ProjectSystem is dynamic: its connections belong to end users, so set spec.externalId to the end user's ID"
    } else {
        "the ProjectSystem is static: remove spec.externalId, or make the ProjectSystem dynamic"
    };
    Error::InvalidReference {
        reason: "ExternalIdMismatch",
        message: message.into(),
    }
}

/// Which credential the template's auth scheme takes (the CLI's rules and words).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Bypass,
    ApiKey,
    BasicAuth,
    OAuth2Client,
    OAuth2Password,
    OAuth2Token,
    /// No credential: a person authorizes in a browser (the in-cluster authorization code flow).
    AuthorizationCode,
}

fn select_credential(
    credentials: Option<&Credentials>,
    template: &Template,
) -> Result<Kind, Error> {
    let given = credentials;
    if given.is_some_and(|c| c.bypass == Some(true)) {
        return Ok(Kind::Bypass);
    }
    let has = |f: fn(&Credentials) -> bool| given.is_some_and(f);
    // The CLI's complaints, word for word.
    let missing = |what: &str| {
        Err(Error::MissingCredential(format!(
            "{what} for this connection template"
        )))
    };
    match (
        template.scheme_type.as_deref(),
        template.grant_type.as_deref(),
    ) {
        (Some("api-key"), _) if has(|c| c.api_key.is_some()) => Ok(Kind::ApiKey),
        (Some("api-key"), _) => missing("api-key is required"),
        (Some("basic-auth"), _) if has(|c| c.basic_auth.is_some()) => Ok(Kind::BasicAuth),
        (Some("basic-auth"), _) => missing("username and password are required"),
        (Some("oauth2"), Some("clientCredentials"))
            if has(|c| c.oauth2_client_credentials.is_some()) =>
        {
            Ok(Kind::OAuth2Client)
        }
        (Some("oauth2"), Some("clientCredentials")) => {
            missing("client-id and client-secret are required")
        }
        (Some("oauth2"), Some("password")) if has(|c| c.oauth2_password.is_some()) => {
            Ok(Kind::OAuth2Password)
        }
        (Some("oauth2"), Some("password")) => missing("username and password are required"),
        (Some("oauth2"), _) if has(|c| c.oauth2_token.is_some()) => Ok(Kind::OAuth2Token),
        (Some("oauth2"), _) if given.is_none() => Ok(Kind::AuthorizationCode),
        (Some("oauth2"), _) => missing(
            "a person's authorization (leave credentials out) or a refresh token (credentials.oauth2Token) is required",
        ),
        (Some("none") | None, _) => missing("bypass is required"),
        (Some(other), _) => Err(Error::InvalidReference {
            reason: "UnsupportedAuthScheme",
            message: format!(
                "the operator cannot make a credential for a {other} auth scheme: set credentials.bypass to connect without one"
            ),
        }),
    }
}

/// A credential with its values read from Secrets.
enum Desired {
    Bypass,
    ApiKey(SecretValue),
    BasicAuth {
        username: SecretValue,
        password: SecretValue,
    },
    OAuth2Client {
        client_id: SecretValue,
        client_secret: SecretValue,
        token_url: Option<String>,
        scopes: Option<Vec<String>>,
    },
    OAuth2Password {
        username: SecretValue,
        password: SecretValue,
    },
    OAuth2Token {
        refresh_token: SecretValue,
        access_token: Option<SecretValue>,
        scopes: Option<Vec<String>>,
    },
}

async fn read_credential(
    obj: &Connection,
    kind: Kind,
    secrets: &mut SecretReader,
) -> Result<Desired, Error> {
    let Some(c) = obj.spec.credentials.as_ref() else {
        return Ok(Desired::Bypass);
    };
    Ok(match kind {
        Kind::Bypass => Desired::Bypass,
        Kind::ApiKey => {
            let Some(k) = &c.api_key else {
                return Ok(Desired::Bypass);
            };
            Desired::ApiKey(
                secrets
                    .read(&k.secret_key_ref.name, &k.secret_key_ref.key)
                    .await?,
            )
        }
        Kind::BasicAuth | Kind::OAuth2Password => {
            let b = if kind == Kind::BasicAuth {
                &c.basic_auth
            } else {
                &c.oauth2_password
            };
            let Some(b) = b else {
                return Ok(Desired::Bypass);
            };
            let username = secrets.read(&b.secret_ref.name, b.username_key()).await?;
            let password = secrets.read(&b.secret_ref.name, b.password_key()).await?;
            if kind == Kind::BasicAuth {
                Desired::BasicAuth { username, password }
            } else {
                Desired::OAuth2Password { username, password }
            }
        }
        Kind::OAuth2Token => {
            let Some(t) = &c.oauth2_token else {
                return Ok(Desired::Bypass);
            };
            let refresh_token = secrets
                .read(&t.secret_ref.name, t.refresh_token_key())
                .await?;
            let access_token = match secrets.read(&t.secret_ref.name, t.access_token_key()).await {
                Ok(token) => Some(token),
                Err(Error::SecretKeyNotFound { .. }) => None,
                Err(other) => return Err(other),
            };
            Desired::OAuth2Token {
                refresh_token,
                access_token,
                scopes: t.scopes.clone(),
            }
        }
        Kind::AuthorizationCode => Desired::Bypass,
        Kind::OAuth2Client => {
            let Some(o) = &c.oauth2_client_credentials else {
                return Ok(Desired::Bypass);
            };
            let client_id = match (&o.client_id, &o.client_id_secret_key_ref) {
                (Some(id), _) => SecretValue::from(id.clone()),
                (None, Some(r)) => secrets.read(&r.name, &r.key).await?,
                (None, None) => SecretValue::from(String::new()),
            };
            let client_secret = secrets
                .read(
                    &o.client_secret_secret_key_ref.name,
                    &o.client_secret_secret_key_ref.key,
                )
                .await?;
            Desired::OAuth2Client {
                client_id,
                client_secret,
                token_url: o.token_url.clone(),
                scopes: o.scopes.clone(),
            }
        }
    })
}

impl Desired {
    fn credential_type(&self) -> CredentialType {
        match self {
            Desired::Bypass => CredentialType::None,
            Desired::ApiKey(_) => CredentialType::String,
            Desired::BasicAuth { .. } => CredentialType::BasicAuth,
            Desired::OAuth2Client { .. } => CredentialType::OAuth2Client,
            Desired::OAuth2Password { .. } => CredentialType::OAuth2Password,
            Desired::OAuth2Token { .. } => CredentialType::OAuth2Token,
        }
    }

    /// What status keeps of the credential: a salted hash over everything sent.
    fn hash(&self, key: &CredentialHashKey, salt: &str) -> String {
        let kind = self.credential_type().as_str();
        let scopes;
        let parts: Vec<(&str, &str)> = match self {
            Desired::Bypass => vec![("type", kind)],
            Desired::ApiKey(v) => vec![("type", kind), ("value", v.expose())],
            Desired::BasicAuth { username, password }
            | Desired::OAuth2Password { username, password } => {
                vec![
                    ("type", kind),
                    ("username", username.expose()),
                    ("password", password.expose()),
                ]
            }
            Desired::OAuth2Token {
                refresh_token,
                access_token,
                scopes: s,
            } => {
                scopes = s.as_ref().map(|s| s.join(" ")).unwrap_or_default();
                vec![
                    ("type", kind),
                    ("refreshToken", refresh_token.expose()),
                    (
                        "accessToken",
                        access_token
                            .as_ref()
                            .map(SecretValue::expose)
                            .unwrap_or_default(),
                    ),
                    ("scopes", scopes.as_str()),
                ]
            }
            Desired::OAuth2Client {
                client_id,
                client_secret,
                token_url,
                scopes: s,
            } => {
                scopes = s.as_ref().map(|s| s.join(" ")).unwrap_or_default();
                vec![
                    ("type", kind),
                    ("clientId", client_id.expose()),
                    ("clientSecret", client_secret.expose()),
                    ("tokenUrl", token_url.as_deref().unwrap_or_default()),
                    ("scopes", scopes.as_str()),
                ]
            }
        };
        hash_secrets(Some(key), salt, parts)
    }

    /// The credential as Versori takes it, carrying the template's auth scheme.
    fn to_api(
        &self,
        organisation: &str,
        config: &Option<api::AuthSchemeConfig>,
    ) -> api::ConnectionCredential {
        let scheme = || config.clone().unwrap_or_else(api::AuthSchemeConfig::bypass);
        let credential = match self {
            Desired::Bypass => return api::ConnectionCredential::bypass(organisation),
            Desired::ApiKey(value) => api::Credential::api_key(organisation, value.clone()),
            Desired::BasicAuth { username, password } => {
                api::Credential::basic_auth(organisation, username.expose(), password.clone())
            }
            Desired::OAuth2Password { username, password } => {
                api::Credential::oauth2_password(organisation, username.expose(), password.clone())
            }
            Desired::OAuth2Token {
                refresh_token,
                access_token,
                scopes,
            } => {
                let default_scopes = config
                    .as_ref()
                    .and_then(|c| c.oauth2.as_ref())
                    .map(|o| o.default_scopes.clone());
                api::Credential::new(
                    organisation,
                    CredentialType::OAuth2Token,
                    Some(api::CredentialData {
                        oauth2_token: Some(api::OAuth2TokenCredential {
                            scopes: scopes.clone().or(default_scopes).unwrap_or_default(),
                            refresh_token: refresh_token.clone(),
                            access_token: access_token.clone(),
                            token_type: None,
                            expires_at: None,
                        }),
                        ..api::CredentialData::default()
                    }),
                )
            }
            Desired::OAuth2Client {
                client_id,
                client_secret,
                token_url,
                scopes,
            } => {
                let default_url = config
                    .as_ref()
                    .and_then(|c| c.oauth2.as_ref())
                    .map(|o| o.token_url.clone());
                let mut credential = api::Credential::oauth2_client(
                    organisation,
                    client_id.expose(),
                    client_secret.clone(),
                    token_url.clone().or(default_url).unwrap_or_default(),
                );
                if let Some(data) = credential
                    .data
                    .as_mut()
                    .and_then(|d| d.oauth2_client.as_mut())
                {
                    data.scopes = scopes.clone();
                }
                credential
            }
        };
        api::ConnectionCredential::new(scheme(), credential)
    }
}

/// Forgets a pending authorization (the Connection no longer needs one).
fn clear_authorization(status: &mut ConnectionStatus) {
    status.authorization_url = None;
    status.authorization_state_hash = None;
    status.authorization_expires_at = None;
}

/// SHA-256 of an authorization state, as status keeps it: the callback looks a state up by it,
/// and status never shows the state itself.
pub fn state_hash(state: &str) -> String {
    hash_secrets(None, "oauth2-state", [("state", state)])
}

/// The in-cluster authorization code flow. Once the callback has created the connection this
/// only checks it exists (Versori never returns the code, so the credential cannot be sent
/// again to repair drift). Otherwise it starts an authorization (`oauth2/initialise` with the
/// operator's callback as redirect URL), publishes the URL in status and an event, and waits
/// for a person; an expired one is replaced.
async fn authorization_code(
    obj: &Connection,
    rc: &Reconciling<'_, Connection>,
    status: &mut ConnectionStatus,
    template: &Template,
) -> Result<String, Error> {
    let name = obj.versori_name();
    if let Some(connection) = observe(obj, rc, status, template, &name).await? {
        clear_authorization(status);
        status.id = Some(connection.id.clone());
        status.connection_template_id = Some(template.template_id.clone());
        status.system_id = Some(template.system_id.clone());
        if let Some(credential) = connection
            .credentials
            .first()
            .and_then(|c| c.credential.as_ref())
        {
            status.credential_type = Some(credential.type_.as_str().to_owned());
        }
        return Ok(format!(
            "authorized Versori connection {name:?} has ID {}",
            connection.id
        ));
    }
    let Some(oauth2) = rc.ctx.oauth2.as_ref() else {
        return Err(Error::AuthorizationRequired(
            "this connection template uses the OAuth 2.0 authorization code grant and the operator has no callback URL (OAUTH2_CALLBACK_URL, chart value oauth2Callback.publicUrl): set one so a person can authorize in a browser, or give credentials.oauth2Token".into(),
        ));
    };
    let now = jiff::Timestamp::now();
    let pending_until = status
        .authorization_expires_at
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .filter(|expires| *expires > now && status.authorization_url.is_some());
    let expires = match pending_until {
        Some(expires) => expires,
        None => {
            let answer = rc
                .ctx
                .versori
                .initialise_oauth2(
                    &template.system_id,
                    &api::InitialiseOAuth2ConnectionRequest {
                        redirect_url: oauth2.redirect_url.clone(),
                        connection_template_id: Some(template.template_id.clone()),
                        scopes: None,
                    },
                )
                .await
                .map_err(Error::versori("starting the OAuth 2.0 authorization"))?;
            let state = url::Url::parse(&answer.url)
                .ok()
                .and_then(|u| u.query_pairs().find(|(k, _)| k == "state").map(|(_, v)| v.into_owned()))
                .ok_or_else(|| Error::InvalidReference {
                    reason: "UnsupportedAuthScheme",
                    message: "Versori's authorization URL carries no state, so the operator cannot match the person's return to this Connection".into(),
                })?;
            let ttl = jiff::SignedDuration::try_from(oauth2.ttl)
                .unwrap_or(jiff::SignedDuration::from_secs(600));
            let expires = now.checked_add(ttl).unwrap_or(now);
            status.authorization_url = Some(answer.url.clone());
            status.authorization_state_hash = Some(state_hash(&state));
            status.authorization_expires_at = Some(expires.to_string());
            rc.event(
                "AuthorizationRequired",
                "Authorize",
                format!(
                    "a person must authorize this connection: open {} before {expires}",
                    answer.url
                ),
            )
            .await;
            expires
        }
    };
    Err(Error::AuthorizationRequired(format!(
        "waiting for a person to authorize: open status.authorizationUrl in a browser before {expires}"
    )))
}

/// Creates the Versori connection from the code a person's browser brought back to the
/// callback, and ends the pending authorization first (its state cannot be used again).
pub async fn complete_authorization(
    obj: &Connection,
    rc: &Reconciling<'_, Connection>,
    code: SecretValue,
    state: &str,
    redirect_url: &str,
) -> Result<String, Error> {
    let template = resolve_template(obj, rc).await?;
    let config = template_config(rc, &template).await?;
    let versori = &rc.ctx.versori;
    let credential = api::Credential::new(
        versori.organisation(),
        CredentialType::OAuth2Code,
        Some(api::CredentialData {
            oauth2_code: Some(api::OAuth2CodeCredential {
                code,
                state: state.to_owned(),
                redirect_url: Some(redirect_url.to_owned()),
                additional_params: None,
            }),
            ..api::CredentialData::default()
        }),
    );
    let scheme = config.unwrap_or_else(api::AuthSchemeConfig::bypass);
    let name = obj.versori_name();
    let mut status = obj.status.clone().unwrap_or_default();
    // The pending state is spent whatever happens next: a replay finds nothing.
    clear_authorization(&mut status);
    rc.persist(&status).await?;
    rc.mark_create_pending().await?;
    let created = versori
        .create_connection(&api::EnvSystemConnectionCreate {
            connection_template_id: template.template_id.clone(),
            connection: api::ConnectionCreate {
                name: name.clone(),
                credentials: vec![api::ConnectionCredential::new(scheme, credential)],
                base_url: obj.spec.base_url.clone(),
            },
            external_id: obj.spec.external_id.clone(),
        })
        .await
        .map_err(Error::versori("creating the authorized Versori connection"))?;
    status.id = Some(created.id.clone());
    status.connection_template_id = Some(template.template_id.clone());
    status.system_id = Some(template.system_id.clone());
    status.credential_type = Some(CredentialType::OAuth2Code.as_str().to_owned());
    rc.persist(&status).await?;
    rc.event(
        "Authorized",
        "Create",
        format!(
            "a person authorized the connection; created Versori connection {name:?} with ID {}",
            created.id
        ),
    )
    .await;
    Ok(created.id)
}

/// Finds the Versori connection this resource manages: by the ID in status, the ID in spec
/// (adoption), or by name after an interrupted create. `None`: it must be created.
async fn observe(
    obj: &Connection,
    rc: &Reconciling<'_, Connection>,
    status: &mut ConnectionStatus,
    template: &Template,
    name: &str,
) -> Result<Option<api::Connection>, Error> {
    let versori = &rc.ctx.versori;
    let named = Named {
        what: "connection",
        field: "connectionId",
        name,
    };
    let recorded = status.id.clone();
    let by_id = observe_by_id(
        rc,
        named,
        recorded.as_deref(),
        obj.spec.connection_id.as_deref(),
        |id| async move { versori.get_connection(&id).await },
    );
    match by_id.await? {
        ById::Found(connection) => {
            status.id = Some(connection.id.clone());
            return Ok(Some(connection));
        }
        ById::Gone => {
            status.id = None;
            status.credential_hash = None;
        }
        ById::Unknown => {}
    }
    let found: Vec<api::Connection> = versori
        .list_connections(Some(&template.system_id), None)
        .await
        .map_err(Error::versori("looking up the Versori connection by name"))?
        .into_iter()
        .filter(|c| c.name == name)
        .collect();
    adopt_by_name(
        rc,
        status,
        named,
        found,
        |c| c.id.as_str(),
        |status, c| {
            status.id = Some(c.id.clone());
            // What the interrupted attempt sent is unknown: send the credential again.
            status.credential_hash = None;
        },
    )
    .await
}

/// Runs the Connection controller: wakes on Connection changes, on changes to their
/// ProjectSystems (a template becoming ready or switching auth scheme), and on changes to the
/// Secrets they reference (rotation).
pub async fn run(scope: Scope, ctx: Arc<Context>, shutdown: Shutdown) {
    let (store, stream) = reconciler::primary_watch(scope.api::<Connection>(), "Connection");
    let controller = Controller::for_stream(stream, store.clone());
    let by_secret = store.clone();
    controller
        .watches_stream(
            reconciler::related_watch(scope.api::<ProjectSystem>(), "ProjectSystem"),
            move |ps| {
                let (namespace, name) = (ps.namespace(), ps.name_any());
                store
                    .state()
                    .into_iter()
                    .filter(|c| {
                        c.namespace() == namespace && c.spec.project_system_ref.name == name
                    })
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            },
        )
        .watches_stream(
            reconciler::related_watch(scope.api::<PartialObjectMeta<Secret>>(), "Secret"),
            move |secret| {
                let (namespace, name) = (secret.namespace(), secret.name_any());
                by_secret
                    .state()
                    .into_iter()
                    .filter(|c| c.namespace() == namespace && c.uses_secret(&name))
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(
            reconciler::reconcile::<Connection>,
            reconciler::error_policy::<Connection>,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "Connection reconcile ended with an error");
            }
        })
        .await;
}

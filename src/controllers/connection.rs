//! The Connection adapter: a Versori connection with credentials read from Secrets.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::{Config, Controller};
use kube::{Api, ResourceExt};

use super::conditions::{self, Reason};
use super::context::Context;
use super::error::Error;
use super::listings::environment_key;
use super::reconciler::{self, External, KubeOps, Managed, Reconciling};
use super::secrets::{CredentialHashKey, SecretReader, hash_secrets};
use super::versori_config::users_of;
use super::watches::{RefIndex, outside_shard};
use super::{Shutdown, Watches};
use crate::resources::common::{CommonStatus, ConfigRef, DeletionPolicy, ManagementPolicy};
use crate::resources::{ClusterVersoriConfig, VersoriConfig};
use crate::resources::{Connection, ConnectionStatus, Credentials, ProjectSystem};
use crate::versori::SecretValue;
use crate::versori::models::{self as api, CredentialType};
use serde::{Deserialize, Serialize};

impl Managed for Connection {
    type Status = ConnectionStatus;
    const KIND: &'static str = "Connection";

    fn status(&self) -> Option<&ConnectionStatus> {
        self.status.as_ref()
    }

    fn common(status: &mut ConnectionStatus) -> &mut CommonStatus {
        &mut status.common
    }

    fn deletion_policy(&self) -> Option<DeletionPolicy> {
        self.spec.deletion_policy
    }

    fn config_ref(&self) -> Option<&ConfigRef> {
        self.spec.config_ref.as_ref()
    }

    fn management_policy(&self) -> ManagementPolicy {
        self.spec.management_policy.unwrap_or_default()
    }
}

/// What a Connection's spec wants: a connection to its ProjectSystem's template, with the
/// credential read from Secrets (or a person's authorization to come).
pub struct DesiredConnection {
    template: Template,
    name: String,
    /// The base URL override; empty: the template's.
    base_url: String,
    credential: Wanted,
}

/// The credential a Connection wants.
enum Wanted {
    /// Values from Secrets, with the hash status keeps of them and the credential's type.
    /// `credential` is `None` when the Secrets are the very versions whose values Versori holds
    /// (their hash is status's): a resync then reads no Secret, and a write reads them first.
    Send {
        credential: Option<Desired>,
        hash: String,
        type_: CredentialType,
    },
    /// A person authorizes in a browser; the operator's callback creates the connection.
    AuthorizationCode,
    /// The same for an OAuth 1.0 template without a token.
    OAuth1Authorization,
}

/// A connection is found by its name within its system (names are unique there).
#[derive(Serialize, Deserialize)]
pub struct ConnectionLocator {
    name: String,
    system_id: String,
}

impl External for Connection {
    type Desired = DesiredConnection;
    type Observed = api::Connection;
    type Locator = ConnectionLocator;
    const WHAT: &'static str = "connection";
    const ID_FIELD: &'static str = "connectionId";
    const UNIQUE_NAMES: bool = true;

    fn recorded_id(status: &ConnectionStatus) -> Option<&str> {
        status.id.as_deref()
    }

    fn forget(status: &mut ConnectionStatus) {
        status.id = None;
        status.credential_hash = None;
    }

    fn adopt_id(&self) -> Option<&str> {
        self.spec.connection_id.as_deref()
    }

    async fn desired(&self, rc: &Reconciling<'_, Self>) -> Result<DesiredConnection, Error> {
        let template = resolve_template(self, rc).await?;
        if template.dynamic != self.spec.external_id.is_some() {
            return Err(external_id_mismatch(&template));
        }
        let credential = match select_credential(self.spec.credentials.as_ref(), &template)? {
            Selected::AuthorizationCode => Wanted::AuthorizationCode,
            Selected::OAuth1Authorization => Wanted::OAuth1Authorization,
            Selected::Send(kind) => {
                rc.ctx.secret_settings.policy.check_overrides(self)?;
                let uid = rc.uid();
                let sent = self.status.as_ref().and_then(|s| s.credential_hash.clone());
                let names = self.secret_names();
                match sent.filter(|hash| {
                    rc.ctx
                        .sent_secrets_unchanged(&uid, &rc.namespace, hash, &names)
                }) {
                    Some(hash) => Wanted::Send {
                        credential: None,
                        hash,
                        type_: kind.credential_type(),
                    },
                    None => {
                        let mut secrets = rc.secrets().single_line();
                        let credential = read_credential(kind, &mut secrets).await?;
                        let hash = credential.hash(&rc.ctx.secret_settings.hash_key, &uid);
                        if self
                            .status
                            .as_ref()
                            .and_then(|s| s.credential_hash.as_deref())
                            == Some(hash.as_str())
                        {
                            // Versori holds these values: until one of these Secrets changes,
                            // a resync need not read them again.
                            rc.ctx
                                .remember_sent_secrets(&uid, &hash, secrets.versions());
                        }
                        Wanted::Send {
                            type_: credential.credential_type(),
                            credential: Some(credential),
                            hash,
                        }
                    }
                }
            }
        };
        Ok(DesiredConnection {
            template,
            name: self.versori_name(),
            base_url: self.spec.base_url.clone().unwrap_or_default(),
            credential,
        })
    }

    fn locator(desired: &DesiredConnection) -> ConnectionLocator {
        ConnectionLocator {
            name: desired.name.clone(),
            system_id: desired.template.system_id.clone(),
        }
    }

    async fn get(
        &self,
        rc: &Reconciling<'_, Self>,
        _locator: &ConnectionLocator,
        id: &str,
    ) -> Result<Option<api::Connection>, Error> {
        match rc.versori().get_connection(id).await {
            Ok(connection) => Ok(Some(connection)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(Error::versori("reading the Versori connection")(e)),
        }
    }

    async fn find_by_name(
        &self,
        rc: &Reconciling<'_, Self>,
        locator: &ConnectionLocator,
    ) -> Result<Vec<api::Connection>, Error> {
        Ok(rc
            .versori()
            .list_connections(Some(&locator.system_id), None)
            .await
            .map_err(Error::versori("looking up the Versori connection by name"))?
            .into_iter()
            .filter(|c| c.name == locator.name)
            .collect())
    }

    fn id_of(observed: &api::Connection) -> &str {
        &observed.id
    }

    async fn observe_locator(
        &self,
        rc: &Reconciling<'_, Self>,
    ) -> Result<ConnectionLocator, Error> {
        let template = resolve_template(self, rc).await?;
        Ok(ConnectionLocator {
            name: self.versori_name(),
            system_id: template.system_id,
        })
    }

    fn record_observed(
        &self,
        locator: &ConnectionLocator,
        observed: &api::Connection,
        status: &mut ConnectionStatus,
    ) -> String {
        status.id = Some(observed.id.clone());
        status.connection_template_id = observed.connection_template_id.clone();
        status.system_id = Some(locator.system_id.clone());
        status.credential_type = observed
            .credentials
            .first()
            .and_then(|c| c.credential.as_ref())
            .map(|c| c.type_.as_str().to_owned());
        format!(
            "observed Versori connection {:?} with ID {} (managementPolicy: Observe)",
            observed.name, observed.id
        )
    }

    async fn before_create(
        &self,
        rc: &Reconciling<'_, Self>,
        desired: &DesiredConnection,
        status: &mut ConnectionStatus,
    ) -> Result<(), Error> {
        match desired.credential {
            Wanted::AuthorizationCode => {
                start_authorization(rc, status, &desired.template, Flow::OAuth2).await
            }
            Wanted::OAuth1Authorization => {
                start_authorization(rc, status, &desired.template, Flow::OAuth1).await
            }
            Wanted::Send { .. } => Ok(()),
        }
    }

    async fn create(
        &self,
        rc: &Reconciling<'_, Self>,
        desired: &DesiredConnection,
    ) -> Result<api::Connection, Error> {
        let Wanted::Send { credential, .. } = &desired.credential else {
            // before_create never lets an authorization-code connection through.
            return Err(Error::AuthorizationRequired(
                "waiting for a person to authorize: open status.authorizationUrl in a browser"
                    .into(),
            ));
        };
        let credential = &self.credential_to_send(rc, desired, credential).await?;
        let versori = rc.versori();
        let config = template_config(rc, &desired.template).await?;
        versori
            .create_connection(&api::EnvSystemConnectionCreate {
                connection_template_id: desired.template.template_id.clone(),
                connection: api::ConnectionCreate {
                    name: desired.name.clone(),
                    credentials: vec![credential.to_api(versori.organisation(), &config)],
                    base_url: self.spec.base_url.clone().filter(|u| !u.is_empty()),
                },
                external_id: self.spec.external_id.clone(),
            })
            .await
            .map_err(|e| {
                external_id_error(&e, &desired.template)
                    .unwrap_or_else(|| Error::versori("creating the Versori connection")(e))
            })
    }

    fn up_to_date(
        &self,
        desired: &DesiredConnection,
        observed: &api::Connection,
        status: &ConnectionStatus,
    ) -> bool {
        let Wanted::Send { hash, type_, .. } = &desired.credential else {
            // Versori never returns the person's code, so the credential cannot be sent again:
            // drift in name or base URL is left alone.
            return true;
        };
        let observed_type = observed
            .credentials
            .first()
            .and_then(|c| c.credential.as_ref())
            .map(|c| c.type_);
        status.credential_hash.as_deref() == Some(hash.as_str())
            && observed.name == desired.name
            && observed.base_url.clone().unwrap_or_default() == desired.base_url
            && observed_type == Some(*type_)
    }

    async fn update(
        &self,
        rc: &Reconciling<'_, Self>,
        desired: &DesiredConnection,
        observed: api::Connection,
        status: &mut ConnectionStatus,
    ) -> Result<(api::Connection, String), Error> {
        let Wanted::Send {
            credential, hash, ..
        } = &desired.credential
        else {
            return Ok((observed, String::new()));
        };
        let credential = &self.credential_to_send(rc, desired, credential).await?;
        let versori = rc.versori();
        let config = template_config(rc, &desired.template).await?;
        versori
            .update_connection(
                &observed.id,
                &api::ConnectionUpdate {
                    name: desired.name.clone(),
                    credentials: vec![credential.to_api(versori.organisation(), &config)],
                    base_url: desired.base_url.clone(),
                },
            )
            .await
            .map_err(Error::versori("updating the Versori connection"))?;
        let rotated = status.credential_hash.as_deref() != Some(hash.as_str());
        let what = if rotated {
            "credentials sent again"
        } else {
            "name, base URL or credential type"
        };
        Ok((observed, what.to_owned()))
    }

    fn record(
        &self,
        desired: &DesiredConnection,
        observed: &api::Connection,
        status: &mut ConnectionStatus,
    ) -> String {
        clear_authorization(status);
        status.id = Some(observed.id.clone());
        status.connection_template_id = Some(desired.template.template_id.clone());
        status.system_id = Some(desired.template.system_id.clone());
        match &desired.credential {
            Wanted::Send { hash, type_, .. } => {
                status.credential_type = Some(type_.as_str().to_owned());
                status.credential_hash = Some(hash.clone());
            }
            Wanted::AuthorizationCode | Wanted::OAuth1Authorization => {
                if let Some(credential) = observed
                    .credentials
                    .first()
                    .and_then(|c| c.credential.as_ref())
                {
                    status.credential_type = Some(credential.type_.as_str().to_owned());
                }
            }
        }
        format!(
            "Versori connection {:?} has ID {}",
            desired.name, observed.id
        )
    }

    async fn delete(&self, rc: &Reconciling<'_, Self>, id: &str) -> Result<(), Error> {
        match rc.versori().delete_connection(id).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(Error::versori("deleting the Versori connection")(e)),
        }
    }
}

impl Connection {
    /// The credential to send: the one `desired` read, or, when it read none (the Secrets were
    /// unchanged since Versori last took them), read now.
    async fn credential_to_send(
        &self,
        rc: &Reconciling<'_, Self>,
        desired: &DesiredConnection,
        read: &Option<Desired>,
    ) -> Result<Desired, Error> {
        if let Some(credential) = read {
            return Ok(credential.clone());
        }
        match select_credential(self.spec.credentials.as_ref(), &desired.template)? {
            Selected::Send(kind) => read_credential(kind, &mut rc.secrets().single_line()).await,
            Selected::AuthorizationCode | Selected::OAuth1Authorization => {
                Err(Error::AuthorizationRequired(
                    "waiting for a person to authorize: open status.authorizationUrl in a browser"
                        .into(),
                ))
            }
        }
    }

    /// The connection's name in Versori.
    pub fn versori_name(&self) -> String {
        self.spec.name.clone().unwrap_or_else(|| self.name_any())
    }

    /// The Secrets the Connection reads.
    fn secret_names(&self) -> Vec<String> {
        let Some(c) = &self.spec.credentials else {
            return Vec::new();
        };
        let refs = [
            c.api_key.as_ref().map(|k| k.secret_key_ref.name.as_str()),
            c.basic_auth.as_ref().map(|b| b.secret_ref.name.as_str()),
            c.oauth2_password
                .as_ref()
                .map(|b| b.secret_ref.name.as_str()),
            c.oauth2_token.as_ref().map(|t| t.secret_ref.name.as_str()),
            c.certificate.as_ref().map(|t| t.secret_ref.name.as_str()),
            c.hmac.as_ref().map(|h| h.secret_key_ref.name.as_str()),
            c.oauth1_token.as_ref().map(|t| t.secret_ref.name.as_str()),
            c.binary.as_ref().map(|b| b.secret_key_ref.name.as_str()),
            c.oauth2_client_credentials
                .as_ref()
                .map(|o| o.client_secret_secret_key_ref.name.as_str()),
            c.oauth2_client_credentials
                .as_ref()
                .and_then(|o| o.client_id_secret_key_ref.as_ref())
                .map(|r| r.name.as_str()),
        ];
        refs.into_iter().flatten().map(str::to_owned).collect()
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
        reason: Reason::WaitingForProjectSystem,
        message,
    };
    let ps = match rc.ctx.cached_project_system(&rc.namespace, name) {
        Some(Some(ps)) => Some(ps),
        Some(None) => {
            outside_shard::<ProjectSystem>(rc, "ProjectSystem", name).await?;
            None
        }
        None => api
            .get_opt(name)
            .await
            .map_err(Error::kube("reading the referenced ProjectSystem"))?
            .map(Arc::new),
    };
    let ps = ps.ok_or_else(|| {
        waiting(format!(
            "ProjectSystem {name:?} does not exist in this namespace yet"
        ))
    })?;
    rc.same_organisation("ProjectSystem", name, ps.spec.config_ref.as_ref())
        .await?;
    let status = ps.status.clone().unwrap_or_default();
    let ready = conditions::is_ready(&status.common);
    match (
        ready,
        status.connection_template_id,
        status.system_id,
        status.environment_id,
    ) {
        (true, Some(template_id), Some(system_id), Some(environment_id)) => Ok(Template {
            project_id: ps.spec.project_id.clone(),
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

/// The template's auth scheme config, which every credential carries, from the listing the
/// environment's reconciles share (read anew before the template is taken as missing).
async fn template_config(
    rc: &Reconciling<'_, Connection>,
    template: &Template,
) -> Result<Option<api::AuthSchemeConfig>, Error> {
    let key = rc.listing_key(&environment_key(
        &template.project_id,
        &template.environment_id,
    ));
    for fresh in [false, true] {
        if fresh {
            rc.ctx.templates.invalidate(&key);
        }
        let templates = rc
            .ctx
            .templates
            .get(&key, || {
                rc.versori()
                    .list_connection_templates(&template.project_id, &template.environment_id)
            })
            .await
            .map_err(Error::versori("reading the connection template"))?;
        if let Some(found) = templates
            .iter()
            .find(|t| t.connection_template_id == template.template_id)
        {
            return Ok(found.auth_scheme_configs.first().cloned());
        }
    }
    Ok(None)
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
    Error::Unsatisfiable {
        reason: Reason::ExternalIdMismatch,
        message: message.into(),
    }
}

/// Which credential the template's auth scheme takes (the CLI's rules and words): the member
/// of `spec.credentials` to read, or a person's authorization.
#[derive(Clone, Copy, Debug)]
enum Selected<'c> {
    Send(Member<'c>),
    AuthorizationCode,
    /// An OAuth 1.0 template without a token: a person authorizes in a browser.
    OAuth1Authorization,
}

/// The `spec.credentials` member a credential is read from.
#[derive(Clone, Copy, Debug)]
enum Member<'c> {
    Bypass,
    ApiKey(&'c crate::resources::connection::ApiKeyCredential),
    BasicAuth(&'c crate::resources::connection::UsernamePasswordCredential),
    OAuth2Client(&'c crate::resources::connection::OAuth2ClientCredentials),
    OAuth2Password(&'c crate::resources::connection::UsernamePasswordCredential),
    OAuth2Token(&'c crate::resources::connection::OAuth2TokenCredential),
    Certificate(&'c crate::resources::connection::CertificateCredential),
    /// An hmac signing secret, or a secret / jwt-bearer scheme's value.
    Hmac(&'c crate::resources::connection::SecretValueCredential),
    OAuth1Token(&'c crate::resources::connection::OAuth1TokenCredential),
    Binary(&'c crate::resources::connection::SecretValueCredential),
}

impl Member<'_> {
    /// The type of the credential read from this member (as [`Desired::credential_type`]).
    fn credential_type(&self) -> CredentialType {
        match self {
            Member::Bypass => CredentialType::None,
            Member::ApiKey(_) | Member::Hmac(_) => CredentialType::String,
            Member::BasicAuth(_) => CredentialType::BasicAuth,
            Member::OAuth2Client(_) => CredentialType::OAuth2Client,
            Member::OAuth2Password(_) => CredentialType::OAuth2Password,
            Member::OAuth2Token(_) => CredentialType::OAuth2Token,
            Member::Certificate(_) => CredentialType::Certificate,
            Member::OAuth1Token(_) => CredentialType::OAuth1Token,
            Member::Binary(_) => CredentialType::Binary,
        }
    }
}

fn select_credential<'c>(
    given: Option<&'c Credentials>,
    template: &Template,
) -> Result<Selected<'c>, Error> {
    if given.is_some_and(|c| c.bypass == Some(true)) {
        return Ok(Selected::Send(Member::Bypass));
    }
    // A binary value fits any scheme whose secret is a file (a keystore, a private key file).
    if let Some(binary) = given.and_then(|c| c.binary.as_ref()) {
        return Ok(Selected::Send(Member::Binary(binary)));
    }
    // The CLI's complaints, word for word.
    let missing = |what: &str| {
        Err(Error::MissingCredential(format!(
            "{what} for this connection template"
        )))
    };
    let member = |f: fn(&'c Credentials) -> Option<Member<'c>>| given.and_then(f);
    let found = match (
        template.scheme_type.as_deref(),
        template.grant_type.as_deref(),
    ) {
        (Some("api-key"), _) => {
            member(|c| c.api_key.as_deref().map(Member::ApiKey)).ok_or("api-key is required")
        }
        (Some("basic-auth"), _) => member(|c| c.basic_auth.as_deref().map(Member::BasicAuth))
            .ok_or("username and password are required"),
        (Some("oauth2"), Some("clientCredentials")) => member(|c| {
            c.oauth2_client_credentials
                .as_deref()
                .map(Member::OAuth2Client)
        })
        .ok_or("client-id and client-secret are required"),
        (Some("oauth2"), Some("password")) => {
            member(|c| c.oauth2_password.as_deref().map(Member::OAuth2Password))
                .ok_or("username and password are required")
        }
        (Some("oauth2"), _) => {
            if let Some(token) = member(|c| c.oauth2_token.as_deref().map(Member::OAuth2Token)) {
                Ok(token)
            } else if given.is_none() {
                return Ok(Selected::AuthorizationCode);
            } else {
                Err(
                    "a person's authorization (leave credentials out) or a refresh token (credentials.oauth2Token) is required",
                )
            }
        }
        (Some("certificate"), _) => member(|c| c.certificate.as_deref().map(Member::Certificate))
            .ok_or("a certificate (credentials.certificate) is required"),
        (Some("hmac"), _) => member(|c| c.hmac.as_deref().map(Member::Hmac))
            .ok_or("a signing secret (credentials.hmac) is required"),
        (Some("secret" | "jwt-bearer"), _) => member(|c| c.hmac.as_deref().map(Member::Hmac))
            .ok_or("a secret value (credentials.hmac) is required"),
        (Some("oauth1"), _) => {
            if let Some(token) = member(|c| c.oauth1_token.as_deref().map(Member::OAuth1Token)) {
                Ok(token)
            } else if given.is_none() {
                return Ok(Selected::OAuth1Authorization);
            } else {
                Err(
                    "a person's authorization (leave credentials out) or a token (credentials.oauth1Token) is required",
                )
            }
        }
        (Some("none") | None, _) => Err("bypass is required"),
        (Some(other), _) => {
            return Err(Error::Unsatisfiable {
                reason: Reason::UnsupportedAuthScheme,
                message: format!(
                    "the operator cannot make a credential for a {other} auth scheme: set credentials.bypass to connect without one"
                ),
            });
        }
    };
    match found {
        Ok(member) => Ok(Selected::Send(member)),
        Err(what) => missing(what),
    }
}

/// A credential with its values read from Secrets.
#[derive(Clone)]
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
    /// PEM text; only the key is secret, but all three are hashed.
    Certificate {
        certificate: SecretValue,
        key: SecretValue,
        ca: SecretValue,
    },
    /// A `string` credential: an hmac signing secret or a secret / jwt-bearer value.
    String(SecretValue),
    OAuth1Token {
        token: SecretValue,
        token_secret: SecretValue,
    },
    /// The Secret key's bytes, base64.
    Binary(SecretValue),
}

async fn read_credential(member: Member<'_>, secrets: &mut SecretReader) -> Result<Desired, Error> {
    Ok(match member {
        Member::Bypass => Desired::Bypass,
        Member::ApiKey(k) => Desired::ApiKey(
            secrets
                .read(&k.secret_key_ref.name, &k.secret_key_ref.key)
                .await?,
        ),
        Member::BasicAuth(b) => Desired::BasicAuth {
            username: secrets.read(&b.secret_ref.name, b.username_key()).await?,
            password: secrets.read(&b.secret_ref.name, b.password_key()).await?,
        },
        Member::OAuth2Password(b) => Desired::OAuth2Password {
            username: secrets.read(&b.secret_ref.name, b.username_key()).await?,
            password: secrets.read(&b.secret_ref.name, b.password_key()).await?,
        },
        Member::OAuth2Token(t) => {
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
        Member::Certificate(c) => {
            let name = &c.secret_ref.name;
            // PEM blocks are many lines by nature, and never travel in a header.
            let certificate = secrets.read_multiline(name, c.certificate_key()).await?;
            let key = secrets.read_multiline(name, c.private_key_key()).await?;
            // The default CA key is optional (a kubernetes.io/tls Secret often has none): an
            // empty CA is sent. A CA key named in the spec must exist.
            let ca = match secrets.read_multiline(name, c.ca_key()).await {
                Ok(ca) => ca,
                Err(Error::SecretKeyNotFound { .. }) if c.ca_key.is_none() => {
                    SecretValue::default()
                }
                Err(other) => return Err(other),
            };
            Desired::Certificate {
                certificate,
                key,
                ca,
            }
        }
        Member::Hmac(h) => Desired::String(
            secrets
                .read(&h.secret_key_ref.name, &h.secret_key_ref.key)
                .await?,
        ),
        Member::OAuth1Token(t) => Desired::OAuth1Token {
            token: secrets.read(&t.secret_ref.name, t.token_key()).await?,
            token_secret: secrets
                .read(&t.secret_ref.name, t.token_secret_key())
                .await?,
        },
        Member::Binary(b) => Desired::Binary(
            secrets
                .read_base64(&b.secret_key_ref.name, &b.secret_key_ref.key)
                .await?,
        ),
        Member::OAuth2Client(o) => {
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
            Desired::Certificate { .. } => CredentialType::Certificate,
            Desired::String(_) => CredentialType::String,
            Desired::OAuth1Token { .. } => CredentialType::OAuth1Token,
            Desired::Binary(_) => CredentialType::Binary,
        }
    }

    /// What status keeps of the credential: a salted hash over everything sent.
    fn hash(&self, key: &CredentialHashKey, salt: &str) -> String {
        let kind = self.credential_type().as_str();
        let scopes;
        let parts: Vec<(&str, &str)> = match self {
            Desired::Bypass => vec![("type", kind)],
            Desired::ApiKey(v) | Desired::String(v) => vec![("type", kind), ("value", v.expose())],
            Desired::Binary(v) => vec![("type", kind), ("valueBase64", v.expose())],
            Desired::Certificate {
                certificate,
                key,
                ca,
            } => vec![
                ("type", kind),
                ("certificate", certificate.expose()),
                ("key", key.expose()),
                ("ca", ca.expose()),
            ],
            Desired::OAuth1Token {
                token,
                token_secret,
            } => vec![
                ("type", kind),
                ("token", token.expose()),
                ("tokenSecret", token_secret.expose()),
            ],
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
            Desired::String(value) => api::Credential::string(organisation, value.clone()),
            Desired::Binary(value) => api::Credential::binary(organisation, value.clone()),
            Desired::Certificate {
                certificate,
                key,
                ca,
            } => api::Credential::certificate(
                organisation,
                certificate.expose(),
                key.clone(),
                ca.expose(),
            ),
            Desired::OAuth1Token {
                token,
                token_secret,
            } => api::Credential::oauth1_token(organisation, token.clone(), token_secret.clone()),
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

/// The in-cluster authorization code flow, before a connection exists: starts an authorization
/// (`oauth2/initialise` with the operator's callback as redirect URL), publishes the URL in
/// status and an event, and waits for a person; an expired one is replaced. The callback then
/// creates the connection ([`complete_authorization`]).
async fn start_authorization(
    rc: &Reconciling<'_, Connection>,
    status: &mut ConnectionStatus,
    template: &Template,
    flow: Flow,
) -> Result<(), Error> {
    let Some(oauth2) = rc.ctx.oauth2.as_ref() else {
        return Err(Error::AuthorizationRequired(match flow {
            Flow::OAuth2 => "this connection template uses the OAuth 2.0 authorization code grant and the operator has no callback URL (OAUTH2_CALLBACK_URL, chart value oauth2Callback.publicUrl): set one so a person can authorize in a browser, or give credentials.oauth2Token".into(),
            Flow::OAuth1 => "this connection template uses OAuth 1.0 without tokenAuth and the operator has no callback URL (OAUTH2_CALLBACK_URL, chart value oauth2Callback.publicUrl): set one so a person can authorize in a browser, or give credentials.oauth1Token".into(),
        }));
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
            let answer = match flow {
                Flow::OAuth2 => rc
                    .versori()
                    .initialise_oauth2(
                        &template.system_id,
                        &api::InitialiseOAuth2ConnectionRequest {
                            redirect_url: oauth2.redirect_url.clone(),
                            connection_template_id: Some(template.template_id.clone()),
                            scopes: None,
                        },
                    )
                    .await
                    .map_err(Error::versori("starting the OAuth 2.0 authorization"))?,
                Flow::OAuth1 => {
                    let credential_id = template_config(rc, template)
                        .await?
                        .and_then(|c| c.oauth1)
                        .and_then(|o| o.credential_id)
                        .ok_or_else(|| Error::Unsatisfiable {
                            reason: Reason::UnsupportedAuthScheme,
                            message: "the template's oauth1 auth scheme has no credentialId in Versori, so no OAuth 1.0 authorization can start".into(),
                        })?;
                    rc.versori()
                        .initialise_oauth1(
                            &template.system_id,
                            &api::InitialiseOAuth1ConnectionRequest {
                                credential: api::CredentialRef {
                                    id: credential_id,
                                    organisation_id: rc.versori().organisation().to_owned(),
                                },
                                redirect_url: oauth2.redirect_url.clone(),
                            },
                        )
                        .await
                        .map_err(Error::versori("starting the OAuth 1.0 authorization"))?
                }
            };
            // What the browser brings back to match this Connection: the OAuth 2.0 state, or
            // the OAuth 1.0 temporary token (the return carries oauth_token, not the state).
            let key = url_param(&answer.url, flow.match_parameter()).ok_or_else(|| {
                Error::Unsatisfiable {
                    reason: Reason::UnsupportedAuthScheme,
                    message: format!(
                        "Versori's authorization URL carries no {}, so the operator cannot match the person's return to this Connection",
                        flow.match_parameter()
                    ),
                }
            })?;
            if flow == Flow::OAuth1 && url_param(&answer.url, "state").is_none() {
                return Err(Error::Unsatisfiable {
                    reason: Reason::UnsupportedAuthScheme,
                    message: "Versori's OAuth 1.0 authorization URL carries no state, which the oauth1 credential must carry".into(),
                });
            }
            let state = key;
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

/// The two browser flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    OAuth2,
    OAuth1,
}

impl Flow {
    /// The query parameter of the authorization URL the browser's return is matched by.
    fn match_parameter(self) -> &'static str {
        match self {
            Flow::OAuth2 => "state",
            Flow::OAuth1 => "oauth_token",
        }
    }
}

/// A query parameter of a URL.
fn url_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Creates the Versori connection from the code a person's browser brought back to the
/// callback, with the loop's create protocol, and ends the pending authorization first (its
/// state cannot be used again).
pub async fn complete_authorization(
    obj: &Connection,
    rc: &Reconciling<'_, Connection>,
    code: SecretValue,
    state: &str,
    redirect_url: &str,
) -> Result<String, Error> {
    let credential = api::Credential::new(
        rc.versori().organisation(),
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
    complete_with(obj, rc, credential).await
}

/// The OAuth 1.0 counterpart of [`complete_authorization`]: the browser brought back the
/// temporary `oauth_token` and the `oauth_verifier`; the flow's state is the one in the
/// authorization URL status holds.
pub async fn complete_oauth1_authorization(
    obj: &Connection,
    rc: &Reconciling<'_, Connection>,
    oauth_token: SecretValue,
    oauth_verifier: SecretValue,
) -> Result<String, Error> {
    let state = obj
        .status
        .as_ref()
        .and_then(|s| s.authorization_url.as_deref())
        .and_then(|u| url_param(u, "state"))
        .ok_or_else(|| Error::Unsatisfiable {
            reason: Reason::UnsupportedAuthScheme,
            message: "the pending OAuth 1.0 authorization URL carries no state".into(),
        })?;
    let credential = api::Credential::oauth1(
        rc.versori().organisation(),
        state,
        oauth_token,
        oauth_verifier,
    );
    complete_with(obj, rc, credential).await
}

async fn complete_with(
    obj: &Connection,
    rc: &Reconciling<'_, Connection>,
    credential: api::Credential,
) -> Result<String, Error> {
    let credential_type = credential.type_;
    let template = resolve_template(obj, rc).await?;
    let config = template_config(rc, &template).await?;
    let versori = rc.versori();
    let scheme = config.unwrap_or_else(api::AuthSchemeConfig::bypass);
    let name = obj.versori_name();
    let ops = KubeOps::<Connection>::new(rc.ctx, &rc.namespace);
    let mut status = obj.status.clone().unwrap_or_default();
    // The pending state is spent whatever happens next: a replay finds nothing.
    clear_authorization(&mut status);
    reconciler::Ops::write_status(&ops, obj, &status).await?;
    let locator = ConnectionLocator {
        name: name.clone(),
        system_id: template.system_id.clone(),
    };
    let created = reconciler::create_outside_loop(rc, &ops, &locator, || async {
        versori
            .create_connection(&api::EnvSystemConnectionCreate {
                connection_template_id: template.template_id.clone(),
                connection: api::ConnectionCreate {
                    name: name.clone(),
                    credentials: vec![api::ConnectionCredential::new(scheme, credential)],
                    base_url: obj.spec.base_url.clone().filter(|u| !u.is_empty()),
                },
                external_id: obj.spec.external_id.clone(),
            })
            .await
            .map_err(Error::versori("creating the authorized Versori connection"))
    })
    .await?;
    status.id = Some(created.id.clone());
    status.connection_template_id = Some(template.template_id.clone());
    status.system_id = Some(template.system_id.clone());
    status.credential_type = Some(credential_type.as_str().to_owned());
    reconciler::Ops::write_status(&ops, obj, &status).await?;
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

/// The Connection controller: wakes on Connection changes, on changes to their ProjectSystems
/// (a template becoming ready or switching auth scheme) and on changes to the Secrets they
/// reference (rotation), both found through indexes.
pub fn controller(
    watches: &Watches,
    ctx: Arc<Context>,
    shutdown: Shutdown,
) -> Result<impl Future<Output = ()> + Send + 'static, Error> {
    let store = watches.connections.store.clone();
    let by_template = Arc::new(RefIndex::<Connection>::default());
    let by_secret = Arc::new(RefIndex::<Connection>::default());
    let follow_template =
        by_template.follow(|c: &Connection| vec![c.spec.project_system_ref.name.clone()]);
    let follow_secrets = by_secret.follow(Connection::secret_names);
    let trigger = reconciler::own_changes(watches.connections.subscribe()?.inspect(move |c| {
        follow_template(c);
        follow_secrets(c);
    }));
    let (live, live_too) = (store.clone(), store.clone());
    let users = store.clone();
    let controller = Controller::for_shared_stream(trigger, store)
        .with_config(Config::default().concurrency(ctx.concurrency))
        .watches_shared_stream(watches.project_systems.subscribe()?, move |ps| {
            let key =
                RefIndex::<Connection>::key(&ps.namespace().unwrap_or_default(), &ps.name_any());
            by_template
                .lookup(&key)
                .into_iter()
                .filter(|c| live.get(c).is_some())
                .collect::<Vec<_>>()
        })
        .watches_shared_stream(watches.secrets.subscribe()?, move |secret| {
            let key = RefIndex::<Connection>::key(
                &secret.namespace().unwrap_or_default(),
                &secret.name_any(),
            );
            by_secret
                .lookup(&key)
                .into_iter()
                .filter(|c| live_too.get(c).is_some())
                .collect::<Vec<_>>()
        })
        .watches_shared_stream(
            watches.configs.subscribe()?,
            users_of::<Connection, VersoriConfig>(users.clone()),
        )
        .watches_shared_stream(
            watches.cluster_configs.subscribe()?,
            users_of::<Connection, ClusterVersoriConfig>(users),
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
        });
    Ok(controller)
}

//! The `Connection` kind: a connection to a connection template, with credentials from Secrets.

#![allow(clippy::duplicated_attributes)] // printcolumn(type_ = "string") repeats by design

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{
    CommonStatus, ConfigRef, DeletionPolicy, LocalObjectRef, ManagementPolicy, SecretKeyRef,
    SecretRef, optional_secret_key_schema, scopes_schema, ulid_schema, url_or_empty_schema,
    url_schema,
};
use super::project_system::push_immutable;

/// A Versori connection: the credentials integrations use to call a system, for one connection
/// template (a ProjectSystem).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "versori.com",
    version = "v1alpha1",
    kind = "Connection",
    namespaced,
    doc = "A Versori connection to a connection template, with credentials read from Secrets.",
    status = "ConnectionStatus",
    shortname = "vconn",
    category = "versori",
    printcolumn(
        name = "Template",
        type_ = "string",
        json_path = ".spec.projectSystemRef.name"
    ),
    printcolumn(name = "Id", type_ = "string", json_path = ".status.id"),
    printcolumn(
        name = "Credential",
        type_ = "string",
        json_path = ".status.credentialType"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Authorize At",
        type_ = "string",
        json_path = ".status.authorizationUrl",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.externalId) == has(oldSelf.externalId) && (!has(self.externalId) || self.externalId == oldSelf.externalId)").message("externalId cannot be added, changed or removed: Versori keeps a connection's end user for its lifetime; create a new Connection instead"))]
#[x_kube(validation = Rule::new("!has(oldSelf.connectionId) || (has(self.connectionId) && self.connectionId == oldSelf.connectionId)").message("connectionId cannot be changed or removed once set"))]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSpec {
    /// The ProjectSystem (in this namespace) whose connection template this connection belongs to.
    #[schemars(schema_with = "project_system_ref_schema")]
    pub project_system_ref: LocalObjectRef,
    /// The connection's name in Versori, unique within the system. Defaults to metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// Overrides the system's base URL for this connection. Empty (or unset) means the
    /// template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "url_or_empty_schema")]
    pub base_url: Option<String>,
    /// The end user's external ID, for a dynamic connection on a dynamic ProjectSystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub external_id: Option<String>,
    /// The credential, matching the template's auth scheme: exactly one member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
    /// Adopt the existing Versori connection with this ID instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "ulid_schema")]
    pub connection_id: Option<String>,
    /// `Delete` removes the Versori connection with the resource; `Orphan` leaves it. Defaults to
    /// `Delete` for one the operator created and to `Orphan` for one adopted by `connectionId`:
    /// adopting is not owning, so set `Delete` explicitly to delete an adopted object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// The Versori organisation and token to use: a `VersoriConfig` in this namespace or a
    /// `ClusterVersoriConfig`. Unset: this namespace's `VersoriConfig` named `default` if there
    /// is one, else the operator's own settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_ref: Option<ConfigRef>,
    /// `Manage` (default) creates, updates and deletes the Versori object; `Observe` only
    /// finds it (by ID, else by name) and reports it in status, and never writes to Versori.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_policy: Option<ManagementPolicy>,
}

fn project_system_ref_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<LocalObjectRef>();
    push_immutable(
        &mut schema,
        "projectSystemRef cannot be changed: a Versori connection cannot move to another template; create a new Connection instead",
    );
    schema
}

/// The credential a connection carries. Set exactly one member; which one the template's auth
/// scheme decides (api-key: apiKey; basic-auth: basicAuth; oauth2 clientCredentials:
/// oauth2ClientCredentials; oauth2 password: oauth2Password; oauth2 authorizationCode:
/// oauth2Token or none for the browser flow; certificate: certificate; hmac, secret and
/// jwt-bearer: hmac; oauth1 with tokenAuth: oauth1Token, without: none for the browser flow;
/// a binary value for any scheme: binary; any: bypass).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("[has(self.apiKey), has(self.basicAuth), has(self.oauth2ClientCredentials), has(self.oauth2Password), has(self.oauth2Token), has(self.certificate), has(self.hmac), has(self.oauth1Token), has(self.binary), has(self.bypass)].exists_one(x, x)").message("credentials must set exactly one of apiKey, basicAuth, oauth2ClientCredentials, oauth2Password, oauth2Token, certificate, hmac, oauth1Token, binary and bypass"))]
#[serde(rename_all = "camelCase")]
// Each member boxed: a Connection sets one of nine, and inline they made every cached Connection
// 700 bytes larger (BENCHMARKS.md, memory).
pub struct Credentials {
    /// An API key, for an api-key scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Box<ApiKeyCredential>>,
    /// A username and password, for a basic-auth scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<Box<UsernamePasswordCredential>>,
    /// A client ID and secret, for an oauth2 scheme with the clientCredentials grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2_client_credentials: Option<Box<OAuth2ClientCredentials>>,
    /// A username and password, for an oauth2 scheme with the password grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2_password: Option<Box<UsernamePasswordCredential>>,
    /// A refresh token (and optionally an access token) someone already obtained, for an oauth2
    /// scheme with the authorizationCode grant: no browser needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2_token: Option<Box<OAuth2TokenCredential>>,
    /// A client certificate, its private key and CA (PEM), for a certificate scheme: by default
    /// the `tls.crt`, `tls.key` and `ca.crt` of a `kubernetes.io/tls` Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Box<CertificateCredential>>,
    /// The shared signing secret of an hmac scheme, or the value of a secret or jwt-bearer
    /// scheme (sent as a `string` credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac: Option<Box<SecretValueCredential>>,
    /// A ready OAuth 1.0 token and token secret, for an oauth1 scheme with tokenAuth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth1_token: Option<Box<OAuth1TokenCredential>>,
    /// A binary value (a keystore, a private key file): the Secret key's bytes, sent base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<Box<SecretValueCredential>>,
    /// Connect without a credential, whatever the template's scheme. Must be true when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == true").message("bypass must be true when set; remove it to use a credential"))]
    pub bypass: Option<bool>,
}

/// One value read from a Secret key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretValueCredential {
    /// The Secret key holding the value.
    pub secret_key_ref: SecretKeyRef,
}

/// A certificate, its private key and its CA read from one Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateCredential {
    /// The Secret holding them, such as a `kubernetes.io/tls` Secret.
    pub secret_ref: SecretRef,
    /// The key of the certificate (PEM) in the Secret. Defaults to `tls.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_secret_key_schema")]
    pub certificate_key: Option<String>,
    /// The key of the private key (PEM) in the Secret. Defaults to `tls.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_secret_key_schema")]
    pub private_key_key: Option<String>,
    /// The key of the CA certificate (PEM) in the Secret. Defaults to `ca.crt`; when the
    /// default key is absent an empty CA is sent, when a key named here is absent it is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_secret_key_schema")]
    pub ca_key: Option<String>,
}

impl CertificateCredential {
    /// The certificate key, with its default.
    pub fn certificate_key(&self) -> &str {
        self.certificate_key.as_deref().unwrap_or("tls.crt")
    }
    /// The private key's key, with its default.
    pub fn private_key_key(&self) -> &str {
        self.private_key_key.as_deref().unwrap_or("tls.key")
    }
    /// The CA key, with its default.
    pub fn ca_key(&self) -> &str {
        self.ca_key.as_deref().unwrap_or("ca.crt")
    }
}

/// An OAuth 1.0 token and token secret read from one Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OAuth1TokenCredential {
    /// The Secret holding the token and the token secret.
    pub secret_ref: SecretRef,
    /// The key of the token in the Secret. Defaults to `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_secret_key_schema")]
    pub token_key: Option<String>,
    /// The key of the token secret in the Secret. Defaults to `tokenSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_secret_key_schema")]
    pub token_secret_key: Option<String>,
}

impl OAuth1TokenCredential {
    /// The token key, with its default.
    pub fn token_key(&self) -> &str {
        self.token_key.as_deref().unwrap_or("token")
    }
    /// The token secret key, with its default.
    pub fn token_secret_key(&self) -> &str {
        self.token_secret_key.as_deref().unwrap_or("tokenSecret")
    }
}

/// An API key read from a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyCredential {
    /// The Secret key holding the API key.
    pub secret_key_ref: SecretKeyRef,
}

/// A username and password read from one Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UsernamePasswordCredential {
    /// The Secret holding the username and the password.
    pub secret_ref: SecretRef,
    /// The key of the username in the Secret. Defaults to `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_secret_key_schema")]
    pub username_key: Option<String>,
    /// The key of the password in the Secret. Defaults to `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_secret_key_schema")]
    pub password_key: Option<String>,
}

impl UsernamePasswordCredential {
    /// The username key, with its default.
    pub fn username_key(&self) -> &str {
        self.username_key.as_deref().unwrap_or("username")
    }
    /// The password key, with its default.
    pub fn password_key(&self) -> &str {
        self.password_key.as_deref().unwrap_or("password")
    }
}

/// OAuth 2.0 tokens read from one Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2TokenCredential {
    /// The Secret holding the tokens.
    pub secret_ref: SecretRef,
    /// The key of the refresh token in the Secret. Defaults to `refreshToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_secret_key_schema")]
    pub refresh_token_key: Option<String>,
    /// The key of the access token in the Secret, sent when present. Defaults to `accessToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_secret_key_schema")]
    pub access_token_key: Option<String>,
    /// The scopes the tokens carry. Defaults to the auth scheme's defaultScopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "scopes_schema")]
    pub scopes: Option<Vec<String>>,
}

impl OAuth2TokenCredential {
    /// The refresh token key, with its default.
    pub fn refresh_token_key(&self) -> &str {
        self.refresh_token_key.as_deref().unwrap_or("refreshToken")
    }
    /// The access token key, with its default.
    pub fn access_token_key(&self) -> &str {
        self.access_token_key.as_deref().unwrap_or("accessToken")
    }
}

/// OAuth 2.0 client credentials. The client ID may be written inline or read from a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.clientId) != has(self.clientIdSecretKeyRef)").message("set exactly one of clientId and clientIdSecretKeyRef"))]
#[serde(rename_all = "camelCase")]
pub struct OAuth2ClientCredentials {
    /// The OAuth client ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub client_id: Option<String>,
    /// The Secret key holding the OAuth client ID, instead of clientId.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_secret_key_ref: Option<SecretKeyRef>,
    /// The Secret key holding the OAuth client secret.
    pub client_secret_secret_key_ref: SecretKeyRef,
    /// The token endpoint. Defaults to the auth scheme's tokenUrl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "url_schema")]
    pub token_url: Option<String>,
    /// Scopes to request. Defaults to the auth scheme's defaultScopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "scopes_schema")]
    pub scopes: Option<Vec<String>>,
}

/// What the operator last observed of the Versori connection.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// The Versori connection's ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The connection template's ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_template_id: Option<String>,
    /// The system's ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_id: Option<String>,
    /// The Versori credential type sent, such as `string` for an API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_type: Option<String>,
    /// SHA-256 over the credential last sent to Versori (credentials are write-only there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_hash: Option<String>,
    /// Where a person authorizes this connection (OAuth 2.0 authorization code grant), while
    /// that is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_url: Option<String>,
    /// SHA-256 of the pending authorization's state; the callback matches it (single use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_state_hash: Option<String>,
    /// When the pending authorization expires (RFC 3339); a new one is started after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_expires_at: Option<String>,
    /// Generation and conditions.
    #[serde(flatten)]
    pub common: CommonStatus,
}

//! The `System` kind: a Versori system (connector) and its auth schemes.

#![allow(clippy::duplicated_attributes)] // printcolumn(type_ = "string") repeats by design

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    CommonStatus, ConfigRef, DeletionPolicy, ManagementPolicy, SecretKeyRef, parameter_name_schema,
    scope_schema, scopes_schema, ulid_schema, url_schema,
};

/// A Versori system: an external API the organisation's integrations talk to, with the ways to
/// authenticate against it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "versori.com",
    version = "v1alpha1",
    kind = "System",
    namespaced,
    doc = "A Versori system and its auth schemes, kept in Versori as the spec says.",
    status = "SystemStatus",
    shortname = "vsys",
    category = "versori",
    printcolumn(name = "Domain", type_ = "string", json_path = ".spec.domain"),
    printcolumn(name = "Id", type_ = "string", json_path = ".status.id"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(oldSelf.systemId) || (has(self.systemId) && self.systemId == oldSelf.systemId)").message("systemId cannot be changed or removed once set"))]
#[x_kube(validation = Rule::new("has(self.labels) == has(oldSelf.labels) && (!has(self.labels) || self.labels == oldSelf.labels)").message("labels cannot be changed after creation: Versori takes a system's labels only when it is created (its update has no labels), so a change would never reach it; create a new System instead"))]
#[serde(rename_all = "camelCase")]
pub struct SystemSpec {
    /// The system's name in Versori. Defaults to the resource's metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// The system's domain, such as `shopify`.
    #[schemars(length(min = 1, max = 253))]
    pub domain: String,
    /// Base URL that connections to this system use unless they override it.
    #[schemars(schema_with = "url_schema")]
    pub template_base_url: String,
    /// The ways to authenticate against the system. Each `id` is unique within the system.
    #[serde(default)]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["id".into()]))]
    pub auth_schemes: Vec<AuthScheme>,
    /// Labels stored on the Versori system at creation. Immutable: Versori cannot update them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Adopt the existing Versori system with this ID instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "ulid_schema")]
    pub system_id: Option<String>,
    /// `Delete` removes the Versori system with the resource; `Orphan` leaves it. Defaults to
    /// `Delete` for one the operator created and to `Orphan` for one adopted by `systemId`:
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
    /// `Exclusive`: the system holds exactly the spec's auth schemes, and any other is
    /// deleted. `Additive`: the spec's schemes are added or updated, and only those this
    /// resource created are ever deleted (when they leave the spec). Defaults to `Additive`
    /// for a system adopted by `systemId` (its other schemes may be in use) and to `Exclusive`
    /// for one the operator created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_schemes_policy: Option<AuthSchemesPolicy>,
}

/// Which of a system's auth schemes the spec governs: `Exclusive` keeps exactly the spec's
/// (others are deleted); `Additive` adds and updates the spec's and deletes only schemes this
/// resource created. Defaults to `Additive` for a system adopted by `systemId` and to
/// `Exclusive` for one the operator created.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AuthSchemesPolicy {
    /// Exactly the spec's schemes: others are deleted.
    #[default]
    Exclusive,
    /// The spec's schemes are added or updated; only schemes this resource created are deleted.
    Additive,
}

/// Which kind of authentication an auth scheme describes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthSchemeType {
    /// No authentication.
    #[serde(rename = "none")]
    None,
    /// An API key in a header, query parameter or cookie (member `apiKey`).
    #[serde(rename = "api-key")]
    ApiKey,
    /// HTTP basic authentication.
    #[serde(rename = "basic-auth")]
    BasicAuth,
    /// OAuth 2.0 (member `oauth2`).
    #[serde(rename = "oauth2")]
    OAuth2,
    /// A request signature computed with HMAC (member `hmac`).
    #[serde(rename = "hmac")]
    Hmac,
    /// A client certificate (mutual TLS).
    #[serde(rename = "certificate")]
    Certificate,
    /// OAuth 1.0 (member `oauth1`).
    #[serde(rename = "oauth1")]
    OAuth1,
    /// A JWT bearer assertion signed with a key the connection holds. No member.
    #[serde(rename = "jwt-bearer")]
    JwtBearer,
    /// A secret value the connection holds. No member.
    #[serde(rename = "secret")]
    Secret,
}

impl AuthSchemeType {
    /// The wire name, as Versori and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ApiKey => "api-key",
            Self::BasicAuth => "basic-auth",
            Self::OAuth2 => "oauth2",
            Self::Hmac => "hmac",
            Self::Certificate => "certificate",
            Self::OAuth1 => "oauth1",
            Self::JwtBearer => "jwt-bearer",
            Self::Secret => "secret",
        }
    }
}

/// One way to authenticate against a system: a `type` and the member that type names.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.type == 'api-key' ? has(self.apiKey) : !has(self.apiKey)").message("apiKey must be set when type is api-key, and only then"))]
#[x_kube(validation = Rule::new("self.type == 'hmac' ? has(self.hmac) : !has(self.hmac)").message("hmac must be set when type is hmac, and only then"))]
#[x_kube(validation = Rule::new("self.type == 'oauth2' ? has(self.oauth2) : !has(self.oauth2)").message("oauth2 must be set when type is oauth2, and only then"))]
#[x_kube(validation = Rule::new("self.type == 'oauth1' ? has(self.oauth1) : !has(self.oauth1)").message("oauth1 must be set when type is oauth1, and only then"))]
#[serde(rename_all = "camelCase")]
pub struct AuthScheme {
    /// The scheme's ID, chosen by you and unique within the system, such as `api-key` or `oauth2-code`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
    )]
    pub id: String,
    /// The kind of authentication: none, api-key, basic-auth, oauth2, oauth1, hmac,
    /// certificate, jwt-bearer or secret. jwt-bearer and secret take no member.
    #[serde(rename = "type")]
    pub type_: AuthSchemeType,
    /// What the scheme is for, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// For type api-key: where the key goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKeyScheme>,
    /// For type hmac: how requests are signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac: Option<HmacScheme>,
    /// For type oauth2: the provider's endpoints, scopes and grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2Scheme>,
    /// For type oauth1: the consumer, the signature method and the provider's endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth1: Option<OAuth1Scheme>,
}

/// Where a key or signature is placed in a request.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ParameterLocation {
    /// A query parameter.
    Query,
    /// A request header.
    Header,
    /// A cookie.
    Cookie,
}

/// An API key scheme.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyScheme {
    /// Name of the header, query parameter or cookie, such as `X-API-Key`.
    #[schemars(schema_with = "parameter_name_schema")]
    pub name: String,
    /// Where the key goes: query, header or cookie.
    #[serde(rename = "in")]
    pub in_: ParameterLocation,
}

/// The HMAC digest algorithm.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

/// A part of the request the HMAC digest covers.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DigestInput {
    /// The request body.
    Body,
    /// The request URL.
    Url,
}

/// How the HMAC digest is encoded.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum HmacEncoding {
    /// Hexadecimal.
    Hex,
    /// Standard base64.
    Base64,
    /// URL-safe base64.
    Base64url,
}

/// An HMAC signature scheme.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HmacScheme {
    /// Name of the header, query parameter or cookie that carries the signature.
    #[schemars(schema_with = "parameter_name_schema")]
    pub name: String,
    /// Where the signature goes: query, header or cookie.
    #[serde(rename = "in")]
    pub in_: ParameterLocation,
    /// The digest algorithm: sha1, sha256 or sha512.
    pub algorithm: HmacAlgorithm,
    /// What the digest covers: body, url, or both.
    #[schemars(length(min = 1, max = 2))]
    pub digest_inputs: Vec<DigestInput>,
    /// How the digest is encoded: hex, base64 or base64url.
    pub encoding: HmacEncoding,
}

/// An OAuth 2.0 scope the provider offers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2Scope {
    /// The scope as the provider names it, such as `read_products`.
    #[schemars(schema_with = "scope_schema")]
    pub name: String,
    /// What the scope grants, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The OAuth 2.0 grant a scheme uses.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum OAuth2GrantType {
    /// A person signs in at the provider in a browser.
    AuthorizationCode,
    /// The connection holds a client ID and secret.
    ClientCredentials,
    /// The connection holds a username and password.
    Password,
}

/// The grant of an OAuth 2.0 scheme. `clientId` and `clientSecretRef` belong to the
/// authorizationCode and password grants: with clientCredentials each connection holds its own.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.type != 'clientCredentials' || (!has(self.clientId) && !has(self.clientSecretRef))").message("clientId and clientSecretRef are for the authorizationCode and password grants; with clientCredentials each Connection carries its own client credentials"))]
#[serde(rename_all = "camelCase")]
pub struct OAuth2Grant {
    /// authorizationCode, clientCredentials or password.
    #[serde(rename = "type")]
    pub type_: OAuth2GrantType,
    /// The OAuth client ID registered at the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub client_id: Option<String>,
    /// The OAuth client secret, read from a Secret in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretKeyRef>,
}

/// An OAuth 2.0 scheme.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.grant.type != 'authorizationCode' || has(self.authorizeUrl)").message("authorizeUrl is required for the authorizationCode grant"))]
#[x_kube(validation = Rule::new("!has(self.defaultScopes) || self.defaultScopes.all(s, has(self.scopes) && self.scopes.exists(x, x.name == s))").message("every entry of defaultScopes must be the name of one of scopes"))]
#[serde(rename_all = "camelCase")]
pub struct OAuth2Scheme {
    /// The provider's authorization endpoint (required for the authorizationCode grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "url_schema")]
    pub authorize_url: Option<String>,
    /// The provider's token endpoint.
    #[schemars(schema_with = "url_schema")]
    pub token_url: String,
    /// The scopes the provider offers. Optional; none is sent as `[]`.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub scopes: Vec<OAuth2Scope>,
    /// The scopes requested unless a connection asks for others. Optional; none is sent as `[]`.
    #[serde(default)]
    #[schemars(schema_with = "scopes_schema")]
    pub default_scopes: Vec<String>,
    /// The grant: how a connection obtains tokens.
    pub grant: OAuth2Grant,
    /// Extra query parameters for the authorization request, as the provider expects them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_authorize_params: Option<String>,
    /// Extra parameters for the token request, as the provider expects them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_token_params: Option<String>,
    /// Use mutual TLS with the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls_enabled: Option<bool>,
    /// The Versori credential holding the mTLS certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "ulid_schema")]
    pub mtls_credential_id: Option<String>,
    /// Use PKCE in the authorization code flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkce: Option<bool>,
}

/// The OAuth 1.0 signature method.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum OAuth1SignatureMethod {
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA1.
    Sha1,
}

/// How an OAuth 1.0 endpoint takes its parameters.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParameterTransmission {
    /// In the Authorization header.
    AuthorizationHeader,
    /// In a form-encoded body.
    Form,
    /// In the query string.
    Query,
}

/// One endpoint of an OAuth 1.0 provider.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OAuth1Endpoint {
    /// The endpoint's URL.
    #[schemars(schema_with = "url_schema")]
    pub url: String,
    /// How the endpoint takes its parameters: AuthorizationHeader, Form or Query. Defaults to
    /// the provider's (Versori's) choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_transmission: Option<ParameterTransmission>,
}

/// An OAuth 1.0 scheme. With `tokenAuth: true` connections carry a ready token
/// (`credentials.oauth1Token`) and the endpoints are optional; otherwise a person authorizes
/// each connection in a browser, which needs all three endpoints.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.tokenAuth) && self.tokenAuth) || (has(self.tempCredentialEndpoint) && has(self.resourceOwnerAuthorizationEndpoint) && has(self.tokenEndpoint))").message("without tokenAuth: true the browser flow needs tempCredentialEndpoint, resourceOwnerAuthorizationEndpoint and tokenEndpoint"))]
#[serde(rename_all = "camelCase")]
pub struct OAuth1Scheme {
    /// The consumer key registered at the provider.
    #[schemars(length(min = 1, max = 1024))]
    pub consumer_key: String,
    /// The consumer secret, read from a Secret in this namespace (Versori keeps it write-only).
    pub consumer_secret_ref: SecretKeyRef,
    /// The signature method: sha256 or sha1.
    pub signature_method: OAuth1SignatureMethod,
    /// True: connections carry a ready OAuth 1.0 token. Defaults to false (the browser flow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_auth: Option<bool>,
    /// Where temporary credentials are requested (the browser flow's first step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_credential_endpoint: Option<OAuth1Endpoint>,
    /// Where the person authorizes the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_owner_authorization_endpoint: Option<OAuth1Endpoint>,
    /// Where the temporary credentials are exchanged for a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<OAuth1Endpoint>,
}

/// What the operator last observed of the Versori system.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SystemStatus {
    /// The Versori system's ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The IDs of the auth schemes on the Versori system, in spec order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth_scheme_ids: Vec<String>,
    /// SHA-256 over the client secrets last sent to Versori (secrets are write-only there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    /// The auth schemes this resource created on the Versori system (the only ones an
    /// `Additive` policy ever deletes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created_auth_scheme_ids: Vec<String>,
    /// Generation and conditions.
    #[serde(flatten)]
    pub common: CommonStatus,
}

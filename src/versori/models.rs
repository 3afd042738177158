//! Wire models of the Versori Platform API, named and shaped as in the contract
//! (`/work/shared/versori-api.md`).
//!
//! Conventions:
//! - JSON names are camelCase, enum values exactly as the API spells them.
//! - Optional fields are `Option` and are left out when `None`.
//! - Response types tolerate unknown fields, and lists that arrive as `null` read as empty.
//! - Every credential value is a [`SecretValue`], so `Debug` of any model never shows it.
//!   Secrets are write-only in the API: on reads they come back redacted (or missing), so
//!   secret fields default to the empty value when absent.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use super::secret::SecretValue;

/// The zero ULID: the API reads it as "unset" and assigns a real ID.
pub const ZERO_ULID: &str = "00000000000000000000000000";

fn zero_ulid() -> String {
    ZERO_ULID.to_owned()
}

/// Reads `null` (or a missing field, together with `#[serde(default)]`) as `T::default()`.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// An object with no members, serialised as `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyObject {}

// ---------------------------------------------------------------------------------------------
// Pagination
// ---------------------------------------------------------------------------------------------

/// One page of a list call: `{ totalCount, next?, prev?, items }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(serialize = "T: Serialize", deserialize = "T: Deserialize<'de>")
)]
pub struct Page<T> {
    #[serde(default)]
    pub total_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub items: Vec<T>,
}

impl<T> Default for Page<T> {
    fn default() -> Self {
        Self {
            total_count: 0,
            next: None,
            prev: None,
            items: Vec::new(),
        }
    }
}

impl<T> Page<T> {
    /// The cursor of the next page, if there is one (an empty cursor means none).
    pub fn next_cursor(&self) -> Option<&str> {
        self.next.as_deref().filter(|c| !c.is_empty())
    }
}

pub type SystemPage = Page<System>;
pub type EnvironmentSystemPage = Page<ConnectionTemplate>;
pub type ConnectionPage = Page<Connection>;

// ---------------------------------------------------------------------------------------------
// Projects
// ---------------------------------------------------------------------------------------------

/// A project (only the fields the operator uses; others are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub id: String,
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub environments: Vec<ProjectEnvironment>,
}

impl Project {
    /// The environment with this name, if any.
    pub fn environment_by_name(&self, name: &str) -> Option<&ProjectEnvironment> {
        self.environments.iter().find(|e| e.name == name)
    }
}

/// An environment of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectEnvironment {
    pub id: String,
    pub name: String,
    pub status: EnvironmentStatus,
}

/// Status of a project environment. Values this client does not know read as `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvironmentStatus {
    Running,
    Suspended,
    Error,
    Draft,
    #[serde(other)]
    Unknown,
}

// ---------------------------------------------------------------------------------------------
// Auth scheme configs
// ---------------------------------------------------------------------------------------------

/// The `type` of an auth scheme config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuthSchemeType {
    #[serde(rename = "none")]
    None,
    #[serde(rename = "api-key")]
    ApiKey,
    #[serde(rename = "basic-auth")]
    BasicAuth,
    #[serde(rename = "oauth2")]
    OAuth2,
    #[serde(rename = "hmac")]
    Hmac,
    #[serde(rename = "jwt-bearer")]
    JwtBearer,
    #[serde(rename = "certificate")]
    Certificate,
    #[serde(rename = "oauth1")]
    OAuth1,
    #[serde(rename = "secret")]
    Secret,
}

impl AuthSchemeType {
    /// All values, in the contract's order.
    pub const ALL: [AuthSchemeType; 9] = [
        Self::None,
        Self::ApiKey,
        Self::BasicAuth,
        Self::OAuth2,
        Self::Hmac,
        Self::JwtBearer,
        Self::Certificate,
        Self::OAuth1,
        Self::Secret,
    ];

    /// The wire spelling, e.g. `api-key`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ApiKey => "api-key",
            Self::BasicAuth => "basic-auth",
            Self::OAuth2 => "oauth2",
            Self::Hmac => "hmac",
            Self::JwtBearer => "jwt-bearer",
            Self::Certificate => "certificate",
            Self::OAuth1 => "oauth1",
            Self::Secret => "secret",
        }
    }
}

impl fmt::Display for AuthSchemeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An auth scheme config: a `type` plus the one member named by that type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthSchemeConfig {
    #[serde(rename = "type")]
    pub type_: AuthSchemeType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub none: Option<NoneScheme>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKeyScheme>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuthScheme>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2Scheme>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth1: Option<OAuth1Scheme>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac: Option<HmacScheme>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateScheme>,
}

impl AuthSchemeConfig {
    fn empty(type_: AuthSchemeType) -> Self {
        Self {
            type_,
            none: None,
            api_key: None,
            basic_auth: None,
            oauth2: None,
            oauth1: None,
            hmac: None,
            certificate: None,
        }
    }

    /// A `none` scheme.
    pub fn none(id: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            none: Some(SimpleScheme::new(id, description)),
            ..Self::empty(AuthSchemeType::None)
        }
    }

    /// The scheme a bypass connection credential carries:
    /// `{type: none, none: {id: "", description: ""}}`.
    pub fn bypass() -> Self {
        Self::none("", "")
    }

    /// An `api-key` scheme.
    pub fn api_key(
        id: impl Into<String>,
        description: impl Into<String>,
        name: impl Into<String>,
        in_: ApiKeyLocation,
    ) -> Self {
        Self {
            api_key: Some(ApiKeyScheme {
                id: id.into(),
                description: description.into(),
                validation_messages: None,
                name: name.into(),
                in_,
            }),
            ..Self::empty(AuthSchemeType::ApiKey)
        }
    }

    /// A `basic-auth` scheme.
    pub fn basic_auth(id: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            basic_auth: Some(SimpleScheme::new(id, description)),
            ..Self::empty(AuthSchemeType::BasicAuth)
        }
    }

    /// An `oauth2` scheme.
    pub fn oauth2(scheme: OAuth2Scheme) -> Self {
        Self {
            oauth2: Some(scheme),
            ..Self::empty(AuthSchemeType::OAuth2)
        }
    }

    /// An `oauth1` scheme.
    pub fn oauth1(scheme: OAuth1Scheme) -> Self {
        Self {
            oauth1: Some(scheme),
            ..Self::empty(AuthSchemeType::OAuth1)
        }
    }

    /// A `jwt-bearer` or `secret` scheme: a type with no member, sent alone. Any other type
    /// gives its empty shape too (no member), which [`is_consistent`](Self::is_consistent) refuses.
    pub fn memberless(type_: AuthSchemeType) -> Self {
        Self::empty(type_)
    }

    /// An `hmac` scheme.
    pub fn hmac(scheme: HmacScheme) -> Self {
        Self {
            hmac: Some(scheme),
            ..Self::empty(AuthSchemeType::Hmac)
        }
    }

    /// A `certificate` scheme.
    pub fn certificate(id: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            certificate: Some(SimpleScheme::new(id, description)),
            ..Self::empty(AuthSchemeType::Certificate)
        }
    }

    /// The member named by `type`, if it is set, as its common part.
    fn member(&self) -> Option<(&str, &str, Option<&Vec<String>>)> {
        fn simple(s: &SimpleScheme) -> (&str, &str, Option<&Vec<String>>) {
            (&s.id, &s.description, s.validation_messages.as_ref())
        }
        match self.type_ {
            AuthSchemeType::None => self.none.as_ref().map(simple),
            AuthSchemeType::BasicAuth => self.basic_auth.as_ref().map(simple),
            AuthSchemeType::OAuth1 => self.oauth1.as_ref().map(|s| {
                (
                    s.id.as_str(),
                    s.description.as_str(),
                    s.validation_messages.as_ref(),
                )
            }),
            AuthSchemeType::Certificate => self.certificate.as_ref().map(simple),
            AuthSchemeType::ApiKey => self.api_key.as_ref().map(|s| {
                (
                    s.id.as_str(),
                    s.description.as_str(),
                    s.validation_messages.as_ref(),
                )
            }),
            AuthSchemeType::OAuth2 => self.oauth2.as_ref().map(|s| {
                (
                    s.id.as_str(),
                    s.description.as_str(),
                    s.validation_messages.as_ref(),
                )
            }),
            AuthSchemeType::Hmac => self.hmac.as_ref().map(|s| {
                (
                    s.id.as_str(),
                    s.description.as_str(),
                    s.validation_messages.as_ref(),
                )
            }),
            AuthSchemeType::JwtBearer | AuthSchemeType::Secret => None,
        }
    }

    /// The ID of the member named by `type` (`None` when that member is not set, or for
    /// the types that have no member: `jwt-bearer`, `secret`).
    pub fn id(&self) -> Option<&str> {
        self.member().map(|(id, _, _)| id)
    }

    /// The description of the member named by `type`.
    pub fn description(&self) -> Option<&str> {
        self.member().map(|(_, d, _)| d)
    }

    /// The server-generated validation messages of the member named by `type`.
    pub fn validation_messages(&self) -> &[String] {
        self.member()
            .and_then(|(_, _, v)| v)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Whether exactly the member named by `type` is set (and no other).
    pub fn is_consistent(&self) -> bool {
        let set = [
            (AuthSchemeType::None, self.none.is_some()),
            (AuthSchemeType::ApiKey, self.api_key.is_some()),
            (AuthSchemeType::BasicAuth, self.basic_auth.is_some()),
            (AuthSchemeType::OAuth2, self.oauth2.is_some()),
            (AuthSchemeType::OAuth1, self.oauth1.is_some()),
            (AuthSchemeType::Hmac, self.hmac.is_some()),
            (AuthSchemeType::Certificate, self.certificate.is_some()),
        ];
        set.iter().all(|(t, is_set)| *is_set == (*t == self.type_))
    }
}

/// A member with no type-specific fields (`none`, `basicAuth`, `certificate`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimpleScheme {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_messages: Option<Vec<String>>,
}

impl SimpleScheme {
    pub fn new(id: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            description: description.into(),
            validation_messages: None,
        }
    }
}

pub type NoneScheme = SimpleScheme;
pub type BasicAuthScheme = SimpleScheme;
pub type CertificateScheme = SimpleScheme;

/// The OAuth 1.0 signature method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OAuth1SignatureMethod {
    Sha256,
    Sha1,
}

/// How an OAuth 1.0 endpoint takes its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ParameterTransmission {
    #[serde(rename = "AUTH_STYLE_AUTHORIZATION_HEADER")]
    AuthorizationHeader,
    #[serde(rename = "AUTH_STYLE_FORM")]
    Form,
    #[serde(rename = "AUTH_STYLE_QUERY")]
    Query,
}

/// One OAuth 1.0 endpoint: `{url, parameterTransmission?, additionalParamConfigs?}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OAuth1Endpoint {
    #[serde(default)]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_transmission: Option<ParameterTransmission>,
    /// Shape not fixed by the contract; passed through as it comes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_param_configs: Option<serde_json::Value>,
}

impl OAuth1Endpoint {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

/// The `oauth1` member. `consumerSecret` is write-only: reads show it redacted (or not at all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OAuth1Scheme {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_messages: Option<Vec<String>>,
    #[serde(default)]
    pub consumer_key: String,
    #[serde(default)]
    pub consumer_secret: SecretValue,
    pub signature_method: OAuth1SignatureMethod,
    /// True: connections carry a ready `oauth1-token`; false or absent: the browser flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_auth: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_credential_endpoint: Option<OAuth1Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_owner_authorization_endpoint: Option<OAuth1Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<OAuth1Endpoint>,
    /// Server-assigned: the credential holding the consumer secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
}

impl OAuth1Scheme {
    /// A scheme with no endpoints and no `tokenAuth` yet.
    pub fn new(
        id: impl Into<String>,
        description: impl Into<String>,
        consumer_key: impl Into<String>,
        consumer_secret: SecretValue,
        signature_method: OAuth1SignatureMethod,
    ) -> Self {
        Self {
            id: id.into(),
            description: description.into(),
            validation_messages: None,
            consumer_key: consumer_key.into(),
            consumer_secret,
            signature_method,
            token_auth: None,
            temp_credential_endpoint: None,
            resource_owner_authorization_endpoint: None,
            token_endpoint: None,
            credential_id: None,
        }
    }
}

/// Where an API key (or HMAC signature) goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiKeyLocation {
    Query,
    Header,
    Cookie,
}

/// The `apiKey` member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyScheme {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_messages: Option<Vec<String>>,
    /// The header, query parameter or cookie name.
    pub name: String,
    #[serde(rename = "in")]
    pub in_: ApiKeyLocation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestInput {
    Body,
    Url,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacEncoding {
    Hex,
    Base64,
    Base64url,
}

/// The `hmac` member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HmacScheme {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_messages: Option<Vec<String>>,
    pub name: String,
    #[serde(rename = "in")]
    pub in_: ApiKeyLocation,
    pub algorithm: HmacAlgorithm,
    #[serde(default, deserialize_with = "null_as_default")]
    pub digest_inputs: Vec<DigestInput>,
    pub encoding: HmacEncoding,
}

/// An OAuth 2.0 scope a system offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2Scope {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The OAuth 2.0 grant type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GrantType {
    AuthorizationCode,
    ClientCredentials,
    Password,
}

impl GrantType {
    /// The wire spelling, e.g. `clientCredentials`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorizationCode",
            Self::ClientCredentials => "clientCredentials",
            Self::Password => "password",
        }
    }
}

impl fmt::Display for GrantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `authorizationCode` / `password` grant objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2ClientGrant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Write-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<SecretValue>,
    /// Server-assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    /// Server-assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organisation_id: Option<String>,
}

/// The `grant` of an OAuth 2.0 scheme.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2Grant {
    #[serde(rename = "type")]
    pub type_: GrantType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_code: Option<OAuth2ClientGrant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_credentials: Option<EmptyObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<OAuth2ClientGrant>,
}

impl OAuth2Grant {
    /// An `authorizationCode` grant.
    pub fn authorization_code(grant: OAuth2ClientGrant) -> Self {
        Self {
            type_: GrantType::AuthorizationCode,
            authorization_code: Some(grant),
            client_credentials: None,
            password: None,
        }
    }

    /// A `clientCredentials` grant.
    pub fn client_credentials() -> Self {
        Self {
            type_: GrantType::ClientCredentials,
            authorization_code: None,
            client_credentials: Some(EmptyObject {}),
            password: None,
        }
    }

    /// A `password` grant.
    pub fn password(grant: OAuth2ClientGrant) -> Self {
        Self {
            type_: GrantType::Password,
            authorization_code: None,
            client_credentials: None,
            password: Some(grant),
        }
    }
}

/// The `oauth2` member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2Scheme {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_messages: Option<Vec<String>>,
    pub token_url: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub scopes: Vec<OAuth2Scope>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub default_scopes: Vec<String>,
    pub grant: OAuth2Grant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorize_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_authorize_params: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_token_params: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls_credential_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkce: Option<bool>,
}

impl OAuth2Scheme {
    /// A scheme with the required fields set and every optional one unset.
    pub fn new(
        id: impl Into<String>,
        description: impl Into<String>,
        token_url: impl Into<String>,
        grant: OAuth2Grant,
    ) -> Self {
        Self {
            id: id.into(),
            description: description.into(),
            validation_messages: None,
            token_url: token_url.into(),
            scopes: Vec::new(),
            default_scopes: Vec::new(),
            grant,
            authorize_url: None,
            additional_authorize_params: None,
            additional_token_params: None,
            mtls_enabled: None,
            mtls_credential_id: None,
            pkce: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Systems
// ---------------------------------------------------------------------------------------------

/// Body of `POST /o/{org}/systems`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemCreate {
    pub name: String,
    pub domain: String,
    pub template_base_url: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub auth_scheme_configs: Vec<AuthSchemeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// A system.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct System {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub template_base_url: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub auth_scheme_configs: Vec<AuthSchemeConfig>,
}

impl System {
    /// The auth scheme config with this ID, if any.
    pub fn auth_scheme_config(&self, id: &str) -> Option<&AuthSchemeConfig> {
        self.auth_scheme_configs.iter().find(|c| c.id() == Some(id))
    }
}

/// Body of `PUT /o/{org}/systems/{system_id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateSystem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_base_url: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Connection templates
// ---------------------------------------------------------------------------------------------

/// Body of `POST /o/{org}/projects/{project_id}/connection-templates`.
/// `dynamic` is always sent (the CLI sends `false` rather than omitting it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkSystem {
    pub system_id: String,
    pub name: String,
    pub environment_id: String,
    #[serde(default)]
    pub dynamic: bool,
}

/// A system linked to a project environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionTemplate {
    /// The SYSTEM's ID.
    pub id: String,
    /// The template's own ID.
    #[serde(default)]
    pub connection_template_id: String,
    pub name: String,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub dynamic: bool,
    #[serde(default)]
    pub template_base_url: String,
    /// The configs in use, in order.
    #[serde(default, deserialize_with = "null_as_default")]
    pub auth_scheme_configs: Vec<AuthSchemeConfig>,
}

impl ConnectionTemplate {
    /// The system's ID (the API names it `id`).
    pub fn system_id(&self) -> &str {
        &self.id
    }
}

/// Body of `PUT /o/{org}/projects/{project_id}/connection-templates/{template_id}`:
/// only the fields being changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateConnectionTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_scheme_config_ids: Option<Vec<String>>,
}

// ---------------------------------------------------------------------------------------------
// Connections and credentials
// ---------------------------------------------------------------------------------------------

/// Body of `POST /o/{org}/connections`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvSystemConnectionCreate {
    pub connection_template_id: String,
    pub connection: ConnectionCreate,
    /// An end user's external ID: set for a dynamic connection, unset for a static one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// The connection part of [`EnvSystemConnectionCreate`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionCreate {
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub credentials: Vec<ConnectionCredential>,
    /// Overrides the system's base URL; empty means the template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

/// One credential of a connection, with the auth scheme it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionCredential {
    /// ULID; [`ZERO_ULID`] ("unset") on create.
    #[serde(default = "zero_ulid")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_scheme_config: Option<AuthSchemeConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Credential>,
}

impl Default for ConnectionCredential {
    fn default() -> Self {
        Self {
            id: zero_ulid(),
            auth_scheme_config: None,
            credential: None,
        }
    }
}

impl ConnectionCredential {
    /// A new (unsaved) connection credential for this scheme.
    pub fn new(auth_scheme_config: AuthSchemeConfig, credential: Credential) -> Self {
        Self {
            id: zero_ulid(),
            auth_scheme_config: Some(auth_scheme_config),
            credential: Some(credential),
        }
    }

    /// The credential a bypass connection carries: type `none`, no data, and the
    /// `{type: none, none: {id: "", description: ""}}` scheme whatever the template's.
    pub fn bypass(organisation_id: impl Into<String>) -> Self {
        Self::new(
            AuthSchemeConfig::bypass(),
            Credential::new(organisation_id, CredentialType::None, None),
        )
    }
}

/// The `type` of a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CredentialType {
    #[serde(rename = "none")]
    None,
    #[serde(rename = "string")]
    String,
    #[serde(rename = "binary")]
    Binary,
    #[serde(rename = "basic-auth")]
    BasicAuth,
    #[serde(rename = "oauth2-client")]
    OAuth2Client,
    #[serde(rename = "oauth1")]
    OAuth1,
    #[serde(rename = "oauth1-token")]
    OAuth1Token,
    #[serde(rename = "oauth2-code")]
    OAuth2Code,
    #[serde(rename = "oauth2-password")]
    OAuth2Password,
    #[serde(rename = "oauth2-token")]
    OAuth2Token,
    #[serde(rename = "certificate")]
    Certificate,
}

impl CredentialType {
    /// All values, in the contract's order.
    pub const ALL: [CredentialType; 11] = [
        Self::None,
        Self::String,
        Self::Binary,
        Self::BasicAuth,
        Self::OAuth2Client,
        Self::OAuth1,
        Self::OAuth1Token,
        Self::OAuth2Code,
        Self::OAuth2Password,
        Self::OAuth2Token,
        Self::Certificate,
    ];

    /// The wire spelling, e.g. `oauth2-client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::String => "string",
            Self::Binary => "binary",
            Self::BasicAuth => "basic-auth",
            Self::OAuth2Client => "oauth2-client",
            Self::OAuth1 => "oauth1",
            Self::OAuth1Token => "oauth1-token",
            Self::OAuth2Code => "oauth2-code",
            Self::OAuth2Password => "oauth2-password",
            Self::OAuth2Token => "oauth2-token",
            Self::Certificate => "certificate",
        }
    }
}

impl fmt::Display for CredentialType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    /// ULID; [`ZERO_ULID`] ("unset") on create.
    #[serde(default = "zero_ulid")]
    pub id: String,
    #[serde(default)]
    pub organisation_id: String,
    #[serde(rename = "type")]
    pub type_: CredentialType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<CredentialData>,
    /// Server-reported problems with the credential (shape not fixed by the contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl Credential {
    /// A new (unsaved) credential.
    pub fn new(
        organisation_id: impl Into<String>,
        type_: CredentialType,
        data: Option<CredentialData>,
    ) -> Self {
        Self {
            id: zero_ulid(),
            organisation_id: organisation_id.into(),
            type_,
            name: None,
            data,
            errors: None,
            expires_at: None,
        }
    }

    /// An API key credential: type `string`, data `{string: {value}}`.
    pub fn api_key(organisation_id: impl Into<String>, value: SecretValue) -> Self {
        Self::new(
            organisation_id,
            CredentialType::String,
            Some(CredentialData {
                string: Some(StringCredential { value }),
                ..CredentialData::default()
            }),
        )
    }

    /// A `basic-auth` credential.
    pub fn basic_auth(
        organisation_id: impl Into<String>,
        username: impl Into<String>,
        password: SecretValue,
    ) -> Self {
        Self::new(
            organisation_id,
            CredentialType::BasicAuth,
            Some(CredentialData {
                basic_auth: Some(BasicAuthCredential {
                    username: username.into(),
                    password,
                }),
                ..CredentialData::default()
            }),
        )
    }

    /// An `oauth2-client` credential (client credentials grant).
    pub fn oauth2_client(
        organisation_id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: SecretValue,
        token_url: impl Into<String>,
    ) -> Self {
        Self::new(
            organisation_id,
            CredentialType::OAuth2Client,
            Some(CredentialData {
                oauth2_client: Some(OAuth2ClientCredential {
                    client_id: client_id.into(),
                    client_secret,
                    token_url: token_url.into(),
                    scopes: None,
                    additional_params: None,
                }),
                ..CredentialData::default()
            }),
        )
    }

    /// A `string` credential: an hmac scheme's signing secret, or a `secret` / `jwt-bearer`
    /// scheme's value (the same wire shape as an API key).
    pub fn string(organisation_id: impl Into<String>, value: SecretValue) -> Self {
        Self::api_key(organisation_id, value)
    }

    /// A `binary` credential: `{binary: {valueBase64}}`.
    pub fn binary(organisation_id: impl Into<String>, value_base64: SecretValue) -> Self {
        Self::new(
            organisation_id,
            CredentialType::Binary,
            Some(CredentialData {
                binary: Some(BinaryCredential { value_base64 }),
                ..CredentialData::default()
            }),
        )
    }

    /// A `certificate` credential (PEM): `{certificate: {certificate, key, ca}}`.
    pub fn certificate(
        organisation_id: impl Into<String>,
        certificate: impl Into<String>,
        key: SecretValue,
        ca: impl Into<String>,
    ) -> Self {
        Self::new(
            organisation_id,
            CredentialType::Certificate,
            Some(CredentialData {
                certificate: Some(CertificateCredential {
                    certificate: certificate.into(),
                    key,
                    ca: ca.into(),
                }),
                ..CredentialData::default()
            }),
        )
    }

    /// An `oauth1-token` credential: `{oauth1Token: {token, tokenSecret}}`.
    pub fn oauth1_token(
        organisation_id: impl Into<String>,
        token: SecretValue,
        token_secret: SecretValue,
    ) -> Self {
        Self::new(
            organisation_id,
            CredentialType::OAuth1Token,
            Some(CredentialData {
                oauth1_token: Some(OAuth1TokenCredential {
                    token,
                    token_secret,
                }),
                ..CredentialData::default()
            }),
        )
    }

    /// An `oauth1` credential from the browser flow: `{oauth1: {state, oauthToken, oauthVerifier}}`.
    pub fn oauth1(
        organisation_id: impl Into<String>,
        state: impl Into<String>,
        oauth_token: SecretValue,
        oauth_verifier: SecretValue,
    ) -> Self {
        Self::new(
            organisation_id,
            CredentialType::OAuth1,
            Some(CredentialData {
                oauth1: Some(OAuth1Credential {
                    state: state.into(),
                    oauth_token,
                    oauth_verifier,
                }),
                ..CredentialData::default()
            }),
        )
    }

    /// An `oauth2-password` credential (password grant).
    pub fn oauth2_password(
        organisation_id: impl Into<String>,
        username: impl Into<String>,
        password: SecretValue,
    ) -> Self {
        Self::new(
            organisation_id,
            CredentialType::OAuth2Password,
            Some(CredentialData {
                oauth2_password: Some(OAuth2PasswordCredential {
                    username: username.into(),
                    password,
                }),
                ..CredentialData::default()
            }),
        )
    }
}

/// The data of a credential: the member matching the credential's `type` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub none: Option<EmptyObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<StringCredential>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<BinaryCredential>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuthCredential>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2_client: Option<OAuth2ClientCredential>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2_password: Option<OAuth2PasswordCredential>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2_code: Option<OAuth2CodeCredential>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2_token: Option<OAuth2TokenCredential>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateCredential>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth1: Option<OAuth1Credential>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth1_token: Option<OAuth1TokenCredential>,
}

/// `oauth1: {state, oauthToken, oauthVerifier}`, from the OAuth 1.0 browser flow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OAuth1Credential {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub oauth_token: SecretValue,
    #[serde(default)]
    pub oauth_verifier: SecretValue,
}

/// `oauth1Token: {token, tokenSecret}`, a ready OAuth 1.0 token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OAuth1TokenCredential {
    #[serde(default)]
    pub token: SecretValue,
    #[serde(default)]
    pub token_secret: SecretValue,
}

/// `string: {value}` (e.g. an API key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StringCredential {
    #[serde(default)]
    pub value: SecretValue,
}

/// `binary: {valueBase64}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BinaryCredential {
    #[serde(default)]
    pub value_base64: SecretValue,
}

/// `basicAuth: {username, password}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuthCredential {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: SecretValue,
}

/// `oauth2Client: {clientId, clientSecret, tokenUrl, scopes?, additionalParams?}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2ClientCredential {
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub client_secret: SecretValue,
    #[serde(default)]
    pub token_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_params: Option<String>,
}

/// `oauth2Password: {username, password}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2PasswordCredential {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: SecretValue,
}

/// `oauth2Code: {code, state, redirectUrl?, additionalParams?}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2CodeCredential {
    #[serde(default)]
    pub code: SecretValue,
    #[serde(default)]
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_params: Option<String>,
}

/// `oauth2Token: {scopes, refreshToken, accessToken?, tokenType?, expiresAt?}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2TokenCredential {
    #[serde(default, deserialize_with = "null_as_default")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub refresh_token: SecretValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<SecretValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// `certificate: {certificate, key, ca}` (PEM). Only the private key is secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateCredential {
    #[serde(default)]
    pub certificate: String,
    #[serde(default)]
    pub key: SecretValue,
    #[serde(default)]
    pub ca: String,
}

/// A connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    pub id: String,
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub credentials: Vec<ConnectionCredential>,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_template_id: Option<String>,
}

/// Body of `PUT /o/{org}/connections/{connection_id}`: all three fields, every time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionUpdate {
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub credentials: Vec<ConnectionCredential>,
    #[serde(default)]
    pub base_url: String,
}

// ---------------------------------------------------------------------------------------------
// OAuth 2.0 authorization-code flow
// ---------------------------------------------------------------------------------------------

/// Body of `POST /o/{org}/systems/{system_id}/oauth2/initialise`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitialiseOAuth2ConnectionRequest {
    pub redirect_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_template_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

/// Body of `POST /o/{org}/systems/{system_id}/oauth1/initialise`: the oauth1 scheme's
/// credential (its `credentialId`) and where the browser returns with `oauth_token` and
/// `oauth_verifier`. The contract lists only `credential`; `redirectUrl` is this project's
/// reading (the browser must return somewhere), taken as `oauth2/initialise` takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitialiseOAuth1ConnectionRequest {
    pub credential: CredentialRef,
    pub redirect_url: String,
}

/// `{id, organisationId}` of a credential.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialRef {
    pub id: String,
    pub organisation_id: String,
}

/// Answer of `POST /o/{org}/systems/{system_id}/oauth1/initialise`.
pub type InitialiseOAuth1ConnectionResponse = InitialiseOAuth2ConnectionResponse;

/// Answer of `POST /o/{org}/systems/{system_id}/oauth2/initialise`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitialiseOAuth2ConnectionResponse {
    pub url: String,
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// The body of every non-2xx answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<FieldError>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// One field-level problem; `field` is a path like `authSchemeConfigs[0].oauth2.tokenUrl`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldError {
    #[serde(default)]
    pub field: String,
    #[serde(default)]
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CANARY: &str = "canary-5e1f-secret-must-not-print";

    fn roundtrip<T>(value: serde_json::Value) -> T
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + fmt::Debug,
    {
        let parsed: T = serde_json::from_value(value.clone()).expect("deserialise");
        let back = serde_json::to_value(&parsed).expect("serialise");
        assert_eq!(back, value, "round trip changed the JSON");
        let again: T = serde_json::from_value(back).expect("deserialise again");
        assert_eq!(again, parsed);
        parsed
    }

    #[test]
    fn enums_use_the_wire_spelling() {
        let types: Vec<String> = AuthSchemeType::ALL
            .iter()
            .map(|t| {
                serde_json::to_value(t)
                    .expect("ser")
                    .as_str()
                    .expect("str")
                    .to_owned()
            })
            .collect();
        assert_eq!(
            types,
            [
                "none",
                "api-key",
                "basic-auth",
                "oauth2",
                "hmac",
                "jwt-bearer",
                "certificate",
                "oauth1",
                "secret"
            ]
        );
        for t in AuthSchemeType::ALL {
            assert_eq!(serde_json::to_value(t).expect("ser"), json!(t.as_str()));
        }
        let creds: Vec<String> = CredentialType::ALL
            .iter()
            .map(|t| {
                serde_json::to_value(t)
                    .expect("ser")
                    .as_str()
                    .expect("str")
                    .to_owned()
            })
            .collect();
        assert_eq!(
            creds,
            [
                "none",
                "string",
                "binary",
                "basic-auth",
                "oauth2-client",
                "oauth1",
                "oauth1-token",
                "oauth2-code",
                "oauth2-password",
                "oauth2-token",
                "certificate"
            ]
        );
        for t in CredentialType::ALL {
            assert_eq!(serde_json::to_value(t).expect("ser"), json!(t.as_str()));
        }
        assert_eq!(
            serde_json::to_value(GrantType::ClientCredentials).expect("ser"),
            json!("clientCredentials")
        );
        assert_eq!(
            serde_json::to_value(GrantType::AuthorizationCode).expect("ser"),
            json!("authorizationCode")
        );
        assert_eq!(
            serde_json::to_value(HmacEncoding::Base64url).expect("ser"),
            json!("base64url")
        );
    }

    #[test]
    fn cli_bypass_connection_round_trips() {
        let body = json!({
            "connectionTemplateId": "01HZX5V7Q9K3M2N4P6R8T0W2Y4",
            "connection": {
                "name": "bypass-conn",
                "credentials": [{
                    "id": ZERO_ULID,
                    "authSchemeConfig": {"type": "none", "none": {"id": "", "description": ""}},
                    "credential": {
                        "id": ZERO_ULID,
                        "organisationId": "01HZX5V7Q9K3M2N4P6R8T0W2Y5",
                        "type": "none"
                    }
                }]
            }
        });
        let parsed: EnvSystemConnectionCreate = roundtrip(body.clone());
        let built = EnvSystemConnectionCreate {
            connection_template_id: "01HZX5V7Q9K3M2N4P6R8T0W2Y4".into(),
            connection: ConnectionCreate {
                name: "bypass-conn".into(),
                credentials: vec![ConnectionCredential::bypass("01HZX5V7Q9K3M2N4P6R8T0W2Y5")],
                base_url: None,
            },
            external_id: None,
        };
        assert_eq!(parsed, built);
        assert_eq!(serde_json::to_value(&built).expect("ser"), body);
    }

    #[test]
    fn api_key_connection_serialises_the_secret_on_the_wire() {
        let cred = Credential::api_key("org", SecretValue::from(CANARY));
        let value = serde_json::to_value(&cred).expect("ser");
        assert_eq!(
            value,
            json!({
                "id": ZERO_ULID,
                "organisationId": "org",
                "type": "string",
                "data": {"string": {"value": CANARY}}
            })
        );
    }

    #[test]
    fn oauth2_scheme_round_trips() {
        let scheme = json!({
            "type": "oauth2",
            "oauth2": {
                "id": "oauth2-client",
                "description": "",
                "tokenUrl": "https://auth.example.com/token",
                "scopes": [{"name": "read", "description": "Read"}, {"name": "write"}],
                "defaultScopes": ["read"],
                "grant": {"type": "clientCredentials", "clientCredentials": {}},
                "authorizeUrl": "https://auth.example.com/authorize",
                "pkce": true
            }
        });
        let parsed: AuthSchemeConfig = roundtrip(scheme);
        assert_eq!(parsed.type_, AuthSchemeType::OAuth2);
        assert_eq!(parsed.id(), Some("oauth2-client"));
        assert!(parsed.is_consistent());
        let oauth2 = parsed.oauth2.as_ref().expect("oauth2 member");
        assert_eq!(oauth2.grant, OAuth2Grant::client_credentials());
        assert_eq!(oauth2.scopes[1].description, None);

        let code = json!({
            "type": "oauth2",
            "oauth2": {
                "id": "oauth2-code",
                "description": "code flow",
                "validationMessages": ["authorizeUrl is required"],
                "tokenUrl": "https://auth.example.com/token",
                "scopes": [],
                "defaultScopes": [],
                "grant": {
                    "type": "authorizationCode",
                    "authorizationCode": {
                        "clientId": "abc",
                        "credentialId": "01HZX5V7Q9K3M2N4P6R8T0W2Y6",
                        "organisationId": "01HZX5V7Q9K3M2N4P6R8T0W2Y5"
                    }
                }
            }
        });
        let parsed: AuthSchemeConfig = roundtrip(code);
        assert_eq!(parsed.validation_messages(), ["authorizeUrl is required"]);
    }

    #[test]
    fn other_schemes_round_trip() {
        let api_key: AuthSchemeConfig = roundtrip(json!({
            "type": "api-key",
            "apiKey": {"id": "api-key", "description": "", "name": "X-API-Key", "in": "header"}
        }));
        assert_eq!(
            api_key,
            AuthSchemeConfig::api_key("api-key", "", "X-API-Key", ApiKeyLocation::Header)
        );
        let hmac: AuthSchemeConfig = roundtrip(json!({
            "type": "hmac",
            "hmac": {
                "id": "sig", "description": "d", "name": "X-Sig", "in": "header",
                "algorithm": "sha256", "digestInputs": ["body", "url"], "encoding": "base64url"
            }
        }));
        assert_eq!(hmac.id(), Some("sig"));
        let basic: AuthSchemeConfig = roundtrip(json!({
            "type": "basic-auth", "basicAuth": {"id": "basic", "description": ""}
        }));
        assert_eq!(basic, AuthSchemeConfig::basic_auth("basic", ""));
        let jwt: AuthSchemeConfig = roundtrip(json!({"type": "jwt-bearer"}));
        assert_eq!(jwt.id(), None);
        // `{type: none, none: {}}` is accepted too.
        let none: AuthSchemeConfig =
            serde_json::from_value(json!({"type": "none", "none": {}})).expect("de");
        assert_eq!(none, AuthSchemeConfig::bypass());
    }

    #[test]
    fn responses_tolerate_unknown_fields_and_nulls() {
        let project: Project = serde_json::from_value(json!({
            "id": "p1", "name": "proj", "createdAt": "2024-01-01T00:00:00Z",
            "environments": [
                {"id": "e1", "name": "production", "status": "running", "publicUrl": "x"},
                {"id": "e2", "name": "staging", "status": "hibernating"}
            ]
        }))
        .expect("project");
        assert_eq!(
            project
                .environment_by_name("production")
                .map(|e| e.id.as_str()),
            Some("e1")
        );
        assert_eq!(project.environments[1].status, EnvironmentStatus::Unknown);

        let page: SystemPage = serde_json::from_value(json!({
            "totalCount": 1, "next": "c2",
            "items": [{"id": "s1", "name": "n", "domain": "d", "templateBaseUrl": "u",
                       "authSchemeConfigs": null, "labels": {"a": "b"}}]
        }))
        .expect("page");
        assert_eq!(page.next_cursor(), Some("c2"));
        assert!(page.items[0].auth_scheme_configs.is_empty());

        let create: SystemCreate = serde_json::from_value(json!({
            "name": "n", "domain": "d", "templateBaseUrl": "u", "authSchemeConfigs": null
        }))
        .expect("cli system create");
        assert!(create.auth_scheme_configs.is_empty());

        let empty: ConnectionPage =
            serde_json::from_value(json!({"totalCount": 0, "next": "", "items": null})).expect("p");
        assert_eq!(empty.next_cursor(), None);
    }

    #[test]
    fn link_system_always_sends_dynamic() {
        let link = LinkSystem {
            system_id: "s".into(),
            name: "n".into(),
            environment_id: "e".into(),
            dynamic: false,
        };
        assert_eq!(
            serde_json::to_value(&link).expect("ser"),
            json!({"systemId": "s", "name": "n", "environmentId": "e", "dynamic": false})
        );
        let update = UpdateConnectionTemplate {
            auth_scheme_config_ids: Some(vec!["a".into()]),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&update).expect("ser"),
            json!({"authSchemeConfigIds": ["a"]})
        );
        assert_eq!(
            serde_json::to_value(UpdateSystem::default()).expect("ser"),
            json!({})
        );
    }

    #[test]
    fn connection_template_and_connection_round_trip() {
        let _: ConnectionTemplate = roundtrip(json!({
            "id": "sys", "connectionTemplateId": "tpl", "name": "crm", "domain": "d",
            "dynamic": false, "templateBaseUrl": "https://api.example.com",
            "authSchemeConfigs": [{"type": "api-key",
                "apiKey": {"id": "api-key", "description": "", "name": "k", "in": "query"}}]
        }));
        let conn: Connection = roundtrip(json!({
            "id": "c1", "name": "conn", "createdAt": "2024-01-01T00:00:00Z",
            "updatedAt": "2024-01-02T00:00:00Z", "systemId": "sys",
            "credentials": [{
                "id": "01HZX5V7Q9K3M2N4P6R8T0W2Y7",
                "credential": {"id": "01HZX5V7Q9K3M2N4P6R8T0W2Y8", "organisationId": "o",
                    "type": "oauth2-token",
                    "data": {"oauth2Token": {"scopes": ["a"], "refreshToken": CANARY,
                        "accessToken": CANARY, "tokenType": "Bearer"}}}
            }]
        }));
        assert!(!format!("{conn:?}").contains(CANARY));
    }

    #[test]
    fn every_credential_member_round_trips() {
        let data: CredentialData = roundtrip(json!({
            "none": {},
            "string": {"value": "v"},
            "binary": {"valueBase64": "AAAA"},
            "basicAuth": {"username": "u", "password": "p"},
            "oauth2Client": {"clientId": "c", "clientSecret": "s", "tokenUrl": "t",
                "scopes": ["x"], "additionalParams": "a=b"},
            "oauth2Password": {"username": "u", "password": "p"},
            "oauth2Code": {"code": "c", "state": "s", "redirectUrl": "r"},
            "oauth2Token": {"scopes": [], "refreshToken": "r"},
            "certificate": {"certificate": "c", "key": "k", "ca": "a"},
            "oauth1": {"state": "s", "oauthToken": "t", "oauthVerifier": "v"},
            "oauth1Token": {"token": "t", "tokenSecret": "ts"}
        }));
        assert_eq!(
            data.oauth1_token.as_ref().map(|t| t.token_secret.expose()),
            Some("ts")
        );
        assert_eq!(
            data.oauth1.as_ref().map(|t| t.oauth_verifier.expose()),
            Some("v")
        );
        assert_eq!(
            data.oauth2_client
                .as_ref()
                .map(|c| c.client_secret.expose()),
            Some("s")
        );
        // A redacted read may leave secrets out altogether.
        let redacted: CredentialData =
            serde_json::from_value(json!({"basicAuth": {"username": "u"}})).expect("de");
        assert!(redacted.basic_auth.expect("member").password.is_empty());
    }

    #[test]
    fn debug_of_credentials_never_shows_secrets() {
        let secret = || SecretValue::from(CANARY);
        let creds = [
            Credential::api_key("o", secret()),
            Credential::basic_auth("o", "user", secret()),
            Credential::oauth2_client("o", "id", secret(), "https://t"),
            Credential::oauth2_password("o", "user", secret()),
            Credential::string("o", secret()),
            Credential::binary("o", secret()),
            Credential::certificate("o", "cert", secret(), "ca"),
            Credential::oauth1_token("o", secret(), secret()),
            Credential::oauth1("o", "state", secret(), secret()),
            Credential::new(
                "o",
                CredentialType::Certificate,
                Some(CredentialData {
                    certificate: Some(CertificateCredential {
                        certificate: "cert".into(),
                        key: secret(),
                        ca: "ca".into(),
                    }),
                    oauth2_code: Some(OAuth2CodeCredential {
                        code: secret(),
                        state: "s".into(),
                        ..Default::default()
                    }),
                    binary: Some(BinaryCredential {
                        value_base64: secret(),
                    }),
                    ..Default::default()
                }),
            ),
        ];
        for cred in &creds {
            let debug = format!("{cred:?} {cred:#?}");
            assert!(!debug.contains(CANARY), "leaked: {debug}");
            let wire = serde_json::to_string(cred).expect("ser");
            assert!(wire.contains(CANARY), "secret must go on the wire");
        }
        let grant = OAuth2ClientGrant {
            client_secret: Some(secret()),
            ..Default::default()
        };
        let scheme = AuthSchemeConfig::oauth2(OAuth2Scheme::new(
            "o2",
            "",
            "https://t",
            OAuth2Grant::authorization_code(grant),
        ));
        assert!(!format!("{scheme:?}").contains(CANARY));
        let oauth1 = AuthSchemeConfig::oauth1(OAuth1Scheme::new(
            "o1",
            "",
            "key",
            secret(),
            OAuth1SignatureMethod::Sha256,
        ));
        assert!(!format!("{oauth1:?}").contains(CANARY));
        assert!(
            serde_json::to_string(&oauth1)
                .expect("ser")
                .contains(CANARY)
        );
    }

    #[test]
    fn oauth1_scheme_round_trips_in_the_contract_shape() {
        let cfg: AuthSchemeConfig = roundtrip(json!({
            "type": "oauth1",
            "oauth1": {
                "id": "o1", "description": "", "consumerKey": "ck", "consumerSecret": "cs",
                "signatureMethod": "sha1", "tokenAuth": false,
                "tempCredentialEndpoint": {"url": "https://p/t", "parameterTransmission": "AUTH_STYLE_FORM"},
                "resourceOwnerAuthorizationEndpoint": {"url": "https://p/a"},
                "tokenEndpoint": {"url": "https://p/k", "parameterTransmission": "AUTH_STYLE_AUTHORIZATION_HEADER"},
                "credentialId": "01KKBR46SH7JES8AZ14EEAK0CX"
            }
        }));
        assert!(cfg.is_consistent());
        assert_eq!(cfg.id(), Some("o1"));
        let o = cfg.oauth1.as_ref().expect("oauth1");
        assert_eq!(o.signature_method, OAuth1SignatureMethod::Sha1);
        assert_eq!(
            o.token_endpoint
                .as_ref()
                .and_then(|e| e.parameter_transmission),
            Some(ParameterTransmission::AuthorizationHeader)
        );
        let secret: AuthSchemeConfig = roundtrip(json!({"type": "secret"}));
        assert_eq!(secret, AuthSchemeConfig::memberless(AuthSchemeType::Secret));
        assert!(secret.is_consistent());
    }

    #[test]
    fn error_body_parses() {
        let err: ErrorBody = roundtrip(json!({
            "code": "validation_failed", "message": "bad",
            "fields": [{"field": "authSchemeConfigs[0].oauth2.tokenUrl", "message": "required"}]
        }));
        assert_eq!(err.fields.as_deref().map(<[FieldError]>::len), Some(1));
    }
}

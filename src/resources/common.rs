//! Types shared by the three kinds: references, conditions, deletion policy and the schema helpers.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Regular expression for a Versori ID: a ULID (26 characters of Crockford base32, the first
/// 0-7 because a ULID is 128 bits).
pub const ULID_PATTERN: &str = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$";

/// A Kubernetes object name that can exist: a DNS subdomain (RFC 1123), at most 253 characters.
pub const DNS_SUBDOMAIN_PATTERN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A key that can exist in a Secret's data.
pub const SECRET_KEY_PATTERN: &str = "^[-._a-zA-Z0-9]+$";

/// A header, query parameter or cookie name: an HTTP token (RFC 9110), so no spaces.
pub const PARAMETER_NAME_PATTERN: &str = "^[-!#$%&'*+.^_`|~0-9A-Za-z]+$";

/// An OAuth scope token (RFC 6749 section 3.3): printable ASCII without space, `"` or `\`.
pub const SCOPE_PATTERN: &str = "^[!#-\\[\\]-~]+$";

/// A key of a Secret in the resource's own namespace. Secrets in other namespaces are never read.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as this resource.
    #[schemars(schema_with = "secret_name_schema")]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(schema_with = "secret_key_schema")]
    pub key: String,
}

/// A whole Secret in the resource's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret, in the same namespace as this resource.
    #[schemars(schema_with = "secret_name_schema")]
    pub name: String,
}

/// A reference to another resource of this operator in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    /// Name of the resource, in the same namespace.
    #[schemars(schema_with = "object_name_schema")]
    pub name: String,
}

/// What happens to the Versori object when the resource is deleted: `Delete` removes it with
/// the resource, `Orphan` leaves it. Defaults to `Delete` for an object the operator created and
/// to `Orphan` for one adopted by ID (`systemId`, `connectionTemplateId`, `connectionId`):
/// adopting is not owning, so set `Delete` explicitly to delete an adopted object.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Delete the Versori object together with the resource (the default for objects the
    /// operator created).
    #[default]
    Delete,
    /// Leave the Versori object in place; only the resource goes (the default for objects
    /// adopted by ID).
    Orphan,
}

impl DeletionPolicy {
    /// The policy in force: the one set, else `Orphan` for an object adopted by ID (adoption is
    /// not ownership, as ACK has it) and `Delete` for one the operator made.
    pub fn effective(set: Option<DeletionPolicy>, adopted: bool) -> DeletionPolicy {
        set.unwrap_or(if adopted {
            DeletionPolicy::Orphan
        } else {
            DeletionPolicy::Delete
        })
    }
}

/// What the operator may do to the Versori object: `Manage` (the default) creates, updates and
/// deletes it as the spec says; `Observe` only finds it (by the spec's ID, else by name) and
/// reports it in status, never writes to Versori, and leaves it when the resource is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ManagementPolicy {
    /// Create, update and delete it as the spec says (the default).
    #[default]
    Manage,
    /// Only look: find it (by the spec's ID, else by name) and report it in status; never
    /// create, update or delete it, and leave it when the resource is deleted.
    Observe,
}

/// The kind of a Versori connection configuration.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfigKind {
    /// A `VersoriConfig` in the resource's own namespace.
    VersoriConfig,
    /// A cluster-scoped `ClusterVersoriConfig`.
    ClusterVersoriConfig,
}

impl ConfigKind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VersoriConfig => "VersoriConfig",
            Self::ClusterVersoriConfig => "ClusterVersoriConfig",
        }
    }
}

/// Which Versori organisation (and token) a resource is managed in.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct ConfigRef {
    /// `VersoriConfig` (in this namespace) or `ClusterVersoriConfig`.
    pub kind: ConfigKind,
    /// The config's name.
    #[schemars(schema_with = "object_name_schema")]
    pub name: String,
}

/// The status fields every kind carries.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CommonStatus {
    /// The generation of the spec this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Versori organisation the resource was last reconciled in: for a System,
    /// ProjectSystem or Connection the one its object was found or made in (a resource whose
    /// config later points elsewhere is refused rather than made again there); for a
    /// VersoriConfig the one its last successful check reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organisation_id: Option<String>,
    /// Current state. `Ready` says whether Versori matches the spec; its reason says why not.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// The CEL rule of an http(s) URL with a host.
const URL_RULE: &str =
    "isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''";
const URL_MESSAGE: &str =
    "must be an absolute http or https URL with a host, such as https://api.example.com/";
/// The CEL rule of a URL without userinfo: `https://user:pass@host/` would show its credentials
/// in spec, status, printer columns and Versori.
const NO_USERINFO_RULE: &str = "!self.matches('^[^:/?#]+://[^/?#]*@')";
const NO_USERINFO_MESSAGE: &str =
    "must not contain a user name or password (user:pass@): put credentials in a Secret";

/// Schema for a Versori URL field: a string CEL checks as an http(s) URL with a host and
/// without userinfo.
pub fn url_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": 2048,
        "x-kubernetes-validations": [
            { "rule": URL_RULE, "message": URL_MESSAGE },
            { "rule": NO_USERINFO_RULE, "message": NO_USERINFO_MESSAGE }
        ]
    })
}

/// Schema for a URL field where empty means "the default" (as Helm renders unset values).
pub fn url_or_empty_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": 2048,
        "x-kubernetes-validations": [{
            "rule": format!("self == '' || ({URL_RULE})"),
            "message": format!("{URL_MESSAGE}, or empty"),
        }, {
            "rule": NO_USERINFO_RULE,
            "message": NO_USERINFO_MESSAGE,
        }]
    })
}

/// Schema for a Versori ID (ULID) field. The length is checked by the rule, not by maxLength,
/// so that a pasted UUID is told it must be a ULID rather than that it is too long.
pub fn ulid_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": 1024,
        "x-kubernetes-validations": [{
            "rule": format!("self.matches('{ULID_PATTERN}')"),
            "message": "must be a Versori ID, which is a ULID: 26 characters of 0-9 and A-Z without I, L, O and U, the first one 0-7, such as 01KKBR46SH7JES8AZ14EEAK0CX (a UUID or a name is not one)"
        }]
    })
}

/// A string field checked by one CEL rule, with a bound that keeps the rule's cost estimate low.
fn checked_string(max: u32, pattern: &str, message: &str) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": max,
        "x-kubernetes-validations": [{
            "rule": format!("self.matches('{}')", pattern.replace('\\', "\\\\").replace('\'', "\\'")),
            "message": message,
        }]
    })
}

/// Schema for the name of a Secret in this namespace.
pub fn secret_name_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    checked_string(
        253,
        DNS_SUBDOMAIN_PATTERN,
        "must be the name of a Secret: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, such as demo-api-key",
    )
}

/// Schema for a key of a Secret's data.
pub fn secret_key_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    checked_string(
        253,
        SECRET_KEY_PATTERN,
        "must be a key of a Secret: letters, digits, '-', '_' and '.', such as apiKey or tls.crt",
    )
}

/// Schema for an optional Secret key field (such as `usernameKey`).
pub fn optional_secret_key_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    secret_key_schema(g)
}

/// Schema for the name of a resource of this operator in this namespace.
pub fn object_name_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    checked_string(
        253,
        DNS_SUBDOMAIN_PATTERN,
        "must be the name of a resource: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, such as example-oauth2",
    )
}

/// Schema for a header, query parameter or cookie name.
pub fn parameter_name_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    checked_string(
        256,
        PARAMETER_NAME_PATTERN,
        "must be a header, query parameter or cookie name: letters, digits and !#$%&'*+-.^_`|~, no spaces, such as X-API-Key",
    )
}

/// Schema for one OAuth scope: a non-empty scope token.
pub fn scope_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    checked_string(
        128,
        SCOPE_PATTERN,
        "must be an OAuth scope: not empty, no spaces or quotes, such as read_products",
    )
}

/// Schema for a list of OAuth scopes (each a non-empty scope token).
pub fn scopes_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let item = scope_schema(g);
    schemars::json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": item,
    })
}

//! Types shared by the three kinds: references, conditions, deletion policy and the schema helpers.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Regular expression for a Versori ID: a ULID (26 characters of Crockford base32).
pub const ULID_PATTERN: &str = "^[0-9A-HJKMNP-TV-Z]{26}$";

/// A key of a Secret in the resource's own namespace. Secrets in other namespaces are never read.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A whole Secret in the resource's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A reference to another resource of this operator in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    /// Name of the resource, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What happens to the Versori object when the resource is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Delete the Versori object together with the resource (the default).
    #[default]
    Delete,
    /// Leave the Versori object in place; only the resource goes.
    Orphan,
}

/// The status fields every kind carries.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CommonStatus {
    /// The generation of the spec this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current state. `Ready` says whether Versori matches the spec; its reason says why not.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Schema for a Versori URL field: a string CEL checks as an http(s) URL without userinfo
/// (`https://user:pass@host/` would show its credentials in spec, status, printer columns and
/// Versori).
pub fn url_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": 2048,
        "x-kubernetes-validations": [{
            "rule": "isURL(self) && url(self).getScheme() in ['http', 'https']",
            "message": "must be an absolute http or https URL, such as https://api.example.com/"
        }, {
            "rule": "!self.matches('^[^:/?#]+://[^/?#]*@')",
            "message": "must not contain a user name or password (user:pass@): put credentials in a Secret"
        }]
    })
}

/// Schema for an optional Versori ID (ULID) field.
pub fn ulid_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": 26,
        "x-kubernetes-validations": [{
            "rule": "self.matches('^[0-9A-HJKMNP-TV-Z]{26}$')",
            "message": "must be a Versori ID: a ULID of 26 characters (0-9 and A-Z without I, L, O, U), such as 01KKBR46SH7JES8AZ14EEAK0CX"
        }]
    })
}

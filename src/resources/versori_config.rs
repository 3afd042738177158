//! The `VersoriConfig` and `ClusterVersoriConfig` kinds: which Versori organisation, at which
//! URL and with which token, the resources that name them (or a namespace's `default`) are
//! managed in. External Secrets' `SecretStore` and `ClusterSecretStore`, for Versori.

#![allow(clippy::duplicated_attributes)] // printcolumn(type_ = "string") repeats by design

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{
    CommonStatus, SecretKeyRef, secret_key_schema, secret_name_schema, url_schema,
};

/// The name of the `VersoriConfig` a namespace's resources use when they name none.
pub const DEFAULT_CONFIG_NAME: &str = "default";

/// A Versori organisation for the resources of this namespace: those whose `configRef` names
/// it, and, when it is named `default`, those that name no config.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "versori.com",
    version = "v1alpha1",
    kind = "VersoriConfig",
    namespaced,
    doc = "A Versori organisation, API URL and token for the resources of one namespace.",
    status = "VersoriConfigStatus",
    shortname = "vcfg",
    category = "versori",
    printcolumn(
        name = "Organisation",
        type_ = "string",
        json_path = ".spec.organisationId"
    ),
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
#[serde(rename_all = "camelCase")]
pub struct VersoriConfigSpec {
    /// The Versori API's base URL. Defaults to https://platform.versori.com/api/v2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "url_schema")]
    pub api_url: Option<String>,
    /// The organisation's ID, as in the API's `/o/{organisation_id}` paths.
    #[schemars(schema_with = "organisation_schema")]
    pub organisation_id: String,
    /// The API token (an API key or JWT): a key of a Secret in this namespace. A change to the
    /// Secret is used within seconds, without a restart.
    pub token_secret_ref: SecretKeyRef,
}

/// A Versori organisation any namespace's resources may name with
/// `configRef: {kind: ClusterVersoriConfig, name}`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "versori.com",
    version = "v1alpha1",
    kind = "ClusterVersoriConfig",
    doc = "A Versori organisation, API URL and token that resources in any namespace may name.",
    status = "VersoriConfigStatus",
    shortname = "cvcfg",
    category = "versori",
    printcolumn(
        name = "Organisation",
        type_ = "string",
        json_path = ".spec.organisationId"
    ),
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
#[serde(rename_all = "camelCase")]
pub struct ClusterVersoriConfigSpec {
    /// The Versori API's base URL. Defaults to https://platform.versori.com/api/v2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "url_schema")]
    pub api_url: Option<String>,
    /// The organisation's ID, as in the API's `/o/{organisation_id}` paths.
    #[schemars(schema_with = "organisation_schema")]
    pub organisation_id: String,
    /// The API token: a key of a Secret in the namespace named here. This cluster-scoped kind
    /// is the only place a Secret in another namespace may be named (creating one is a
    /// cluster administrator's act).
    pub token_secret_ref: NamespacedSecretKeyRef,
}

/// A key of a Secret in a named namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedSecretKeyRef {
    /// The Secret's namespace.
    #[schemars(schema_with = "namespace_schema")]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(schema_with = "secret_name_schema")]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(schema_with = "secret_key_schema")]
    pub key: String,
}

/// What the operator last found of the organisation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VersoriConfigStatus {
    /// The API URL the last successful check reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The organisation reached, generation and conditions: `Ready` when an authenticated call
    /// with the token succeeds.
    #[serde(flatten)]
    pub common: CommonStatus,
}

fn organisation_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": 128,
        "x-kubernetes-validations": [{
            "rule": "self.matches('^[A-Za-z0-9][A-Za-z0-9_-]*$')",
            "message": "must be a Versori organisation ID: letters, digits, '-' and '_', such as 01HQORG0000000000000000000",
        }]
    })
}

fn namespace_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": 63,
        "x-kubernetes-validations": [{
            "rule": "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
            "message": "must be a namespace name: lowercase letters, digits and '-', such as versori-system",
        }]
    })
}

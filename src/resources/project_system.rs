//! The `ProjectSystem` kind: a system linked to one project environment (a connection template).

#![allow(clippy::duplicated_attributes)] // printcolumn(type_ = "string") repeats by design

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{
    CommonStatus, ConfigRef, DeletionPolicy, LocalObjectRef, ManagementPolicy, ulid_schema,
};

/// A system linked to a project environment. Versori calls the link a connection template; project
/// code refers to it by `name`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "versori.com",
    version = "v1alpha1",
    kind = "ProjectSystem",
    namespaced,
    doc = "A System linked to a Versori project environment: a connection template.",
    status = "ProjectSystemStatus",
    shortname = "vps",
    category = "versori",
    printcolumn(name = "Template Name", type_ = "string", json_path = ".status.name"),
    printcolumn(name = "Id", type_ = "string", json_path = ".status.systemId"),
    printcolumn(
        name = "ConnectionTemplateId",
        type_ = "string",
        json_path = ".status.connectionTemplateId"
    ),
    printcolumn(
        name = "TemplateBaseUrl",
        type_ = "string",
        json_path = ".status.templateBaseUrl"
    ),
    printcolumn(name = "Dynamic", type_ = "boolean", json_path = ".status.dynamic"),
    printcolumn(
        name = "AuthSchemeConfigs.Type",
        type_ = "string",
        json_path = ".status.authSchemeType"
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
#[x_kube(validation = Rule::new("has(self.systemRef) != has(self.systemId)").message("set exactly one of systemRef (a System in this namespace) and systemId (the ID of a Versori system)"))]
#[x_kube(validation = Rule::new("has(self.systemRef) == has(oldSelf.systemRef) && (!has(self.systemRef) || self.systemRef.name == oldSelf.systemRef.name) && has(self.systemId) == has(oldSelf.systemId) && (!has(self.systemId) || self.systemId == oldSelf.systemId)").message("the linked system cannot be changed: Versori cannot move a connection template to another system; create a new ProjectSystem instead"))]
#[x_kube(validation = Rule::new("!has(oldSelf.connectionTemplateId) || (has(self.connectionTemplateId) && self.connectionTemplateId == oldSelf.connectionTemplateId)").message("connectionTemplateId cannot be changed or removed once set"))]
#[serde(rename_all = "camelCase")]
pub struct ProjectSystemSpec {
    /// The Versori project's ID.
    #[schemars(schema_with = "project_id_schema")]
    pub project_id: String,
    /// The environment's name within the project, such as `production`; resolved to its ID.
    #[schemars(schema_with = "environment_schema")]
    pub environment: String,
    /// The System resource (in this namespace) to link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_ref: Option<LocalObjectRef>,
    /// The ID of a Versori system this cluster does not manage, instead of systemRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "ulid_schema")]
    pub system_id: Option<String>,
    /// How project code refers to the system. Defaults to the resource's metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// Which of the system's auth schemes the template uses (an auth scheme `id`). Defaults to the
    /// system's first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub auth_scheme_config_id: Option<String>,
    /// Whether end users make their own (dynamic) connections. Defaults to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<bool>,
    /// Adopt the existing connection template with this ID instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "ulid_schema")]
    pub connection_template_id: Option<String>,
    /// `Delete` removes the connection template with the resource; `Orphan` leaves it. Defaults to
    /// `Delete` for one the operator created and to `Orphan` for one adopted by `connectionTemplateId`:
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

fn project_id_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = ulid_schema(generator);
    push_immutable(
        &mut schema,
        "projectId cannot be changed: create a new ProjectSystem instead",
    );
    schema
}

fn environment_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = schemars::json_schema!({ "type": "string", "minLength": 1, "maxLength": 253 });
    push_immutable(
        &mut schema,
        "environment cannot be changed: create a new ProjectSystem instead",
    );
    schema
}

/// Adds a `self == oldSelf` CEL rule with the given message to a field schema.
pub(crate) fn push_immutable(schema: &mut schemars::Schema, message: &str) {
    let rule = serde_json::json!({ "rule": "self == oldSelf", "message": message });
    if let Some(object) = schema.as_object_mut() {
        match object
            .get_mut("x-kubernetes-validations")
            .and_then(|v| v.as_array_mut())
        {
            Some(rules) => rules.push(rule),
            None => {
                object.insert(
                    "x-kubernetes-validations".into(),
                    serde_json::Value::Array(vec![rule]),
                );
            }
        }
    }
}

/// What the operator last observed of the connection template.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSystemStatus {
    /// The connection template's ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_template_id: Option<String>,
    /// The linked Versori system's ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_id: Option<String>,
    /// The environment's ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_id: Option<String>,
    /// The template's name, as project code refers to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The system's base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_base_url: Option<String>,
    /// Whether the template takes end users' dynamic connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<bool>,
    /// The IDs of the auth schemes the template uses, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth_scheme_config_ids: Vec<String>,
    /// The type of the template's (first) auth scheme, such as api-key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_scheme_type: Option<String>,
    /// For oauth2 schemes, the grant type of the template's (first) auth scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2_grant_type: Option<String>,
    /// Generation and conditions.
    #[serde(flatten)]
    pub common: CommonStatus,
}

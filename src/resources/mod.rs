//! The custom resources, one file per kind, and the types they share.

pub mod common;
pub mod connection;
pub mod project_system;
pub mod system;
pub mod versori_config;

pub use common::{
    CommonStatus, ConfigKind, ConfigRef, DeletionPolicy, LocalObjectRef, ManagementPolicy,
    SecretKeyRef, SecretRef,
};
pub use connection::{Connection, ConnectionSpec, ConnectionStatus, Credentials};
pub use project_system::{ProjectSystem, ProjectSystemSpec, ProjectSystemStatus};
pub use system::{AuthScheme, AuthSchemeType, AuthSchemesPolicy, System, SystemSpec, SystemStatus};
pub use versori_config::{
    ClusterVersoriConfig, ClusterVersoriConfigSpec, VersoriConfig, VersoriConfigSpec,
    VersoriConfigStatus,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

/// The CRDs, in dependency order: the configs first, then the three managed kinds.
///
/// Schema defaults are stripped: the operator applies every default in code (each field's
/// description states it), because defaults written by the apiserver make Argo CD report
/// applications OutOfSync forever (argo-cd#11074).
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        VersoriConfig::crd(),
        ClusterVersoriConfig::crd(),
        System::crd(),
        ProjectSystem::crd(),
        Connection::crd(),
    ];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                strip_defaults(schema);
            }
        }
    }
    crds
}

fn strip_defaults(schema: &mut JSONSchemaProps) {
    schema.default = None;
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        strip_defaults(child);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        strip_defaults(items);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = schema.additional_properties.as_mut() {
        strip_defaults(extra);
    }
}

/// The CRDs as one multi-document YAML stream, as `versori-operator crds` prints it.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

//! `docs/reference.md` must hold exactly what `versori-operator reference` prints from the CRDs.

use std::path::Path;

const REGENERATE: &str =
    "cargo run --quiet --bin versori-operator -- reference > docs/reference.md";

#[test]
fn reference_docs_match_the_crds() {
    let generated = versori_operator::reference::markdown();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference.md");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == on_disk,
        "docs/reference.md differs from the CRD schemas: run `{REGENERATE}` and commit the result"
    );
}

/// Every field of every kind's spec and status has a row, with the schema's description.
#[test]
fn reference_docs_name_every_field() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
    };

    fn paths(schema: &JSONSchemaProps, path: &str, out: &mut Vec<String>) {
        for (name, child) in schema.properties.iter().flatten() {
            let child_path = format!("{path}.{name}");
            out.push(child_path.clone());
            paths(child, &child_path, out);
        }
        if let Some(JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_ref() {
            paths(items, &format!("{path}[]"), out);
        }
        if let Some(JSONSchemaPropsOrBool::Schema(values)) = schema.additional_properties.as_ref() {
            paths(values, &format!("{path}.<key>"), out);
        }
    }

    let text = versori_operator::reference::markdown();
    for crd in versori_operator::resources::crds() {
        let kind = crd.spec.names.kind.clone();
        let section_start = text
            .find(&format!("\n## {kind}\n"))
            .expect("a section per kind");
        let section = &text[section_start + 1..];
        let section = &section[..section.find("\n## ").map_or(section.len(), |i| i + 1)];
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("a schema");
        for top in ["spec", "status"] {
            let Some(top_schema) = schema.properties.as_ref().and_then(|p| p.get(top)) else {
                continue;
            };
            let mut all = Vec::new();
            paths(top_schema, top, &mut all);
            assert!(!all.is_empty(), "{kind} {top} has fields");
            for path in all {
                assert!(
                    section.contains(&format!("| `{path}` |")),
                    "{kind}: docs/reference.md has no row for {path}"
                );
            }
        }
    }
}

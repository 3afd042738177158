//! `crds/` must hold exactly what `versori-operator crds` prints from the Rust types.

use std::path::Path;

#[test]
fn crds_directory_matches_the_rust_types() {
    let generated = versori_operator::resources::crds_yaml().expect("render CRDs");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/versori.com.yaml");
    let on_disk = std::fs::read_to_string(&path).expect("read crds/versori.com.yaml");
    assert!(
        generated == on_disk,
        "crds/versori.com.yaml differs from the Rust types: run `make crds` and commit the result"
    );
}

#[test]
fn crds_parse_and_name_the_five_kinds() {
    let crds = versori_operator::resources::crds();
    let names: Vec<String> = crds.iter().map(|c| c.spec.names.kind.clone()).collect();
    assert_eq!(
        names,
        [
            "VersoriConfig",
            "ClusterVersoriConfig",
            "System",
            "ProjectSystem",
            "Connection"
        ]
    );
    let scopes: Vec<&str> = crds.iter().map(|c| c.spec.scope.as_str()).collect();
    assert_eq!(
        scopes,
        [
            "Namespaced",
            "Cluster",
            "Namespaced",
            "Namespaced",
            "Namespaced"
        ]
    );
    for crd in &crds {
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{} has a status subresource",
            crd.spec.names.kind
        );
    }
    // Well under the 256 KiB last-applied-configuration annotation limit.
    let yaml = versori_operator::resources::crds_yaml().expect("render CRDs");
    assert!(yaml.len() < 128 * 1024, "CRDs are {} bytes", yaml.len());
}

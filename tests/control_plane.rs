//! Smoke tests for the integration-test harness: the real control plane and the emulator.
mod common;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

#[tokio::test]
async fn namespace_is_created() {
    let cluster = common::cluster().await;
    let name = common::namespace("control-plane").await;
    assert!(name.starts_with("control-plane-"), "{name}");

    let namespaces: Api<Namespace> = Api::all(cluster.client().await);
    let namespace = namespaces.get(&name).await.expect("get namespace");
    assert_eq!(namespace.metadata.name.as_deref(), Some(name.as_str()));

    let stdout =
        common::assert_success(&common::kubectl(&["get", "namespace", &name, "-o", "name"]));
    assert_eq!(stdout.trim(), format!("namespace/{name}"));
}

#[tokio::test]
async fn config_map_round_trips() {
    let cluster = common::cluster().await;
    let ns = common::namespace("configmap").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client().await, &ns);

    let created = config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("round-trip".into()),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([("key".into(), "value".into())])),
                ..ConfigMap::default()
            },
        )
        .await
        .expect("create config map");
    assert!(created.metadata.uid.is_some());

    let fetched = config_maps.get("round-trip").await.expect("get config map");
    assert_eq!(
        fetched.data,
        Some(BTreeMap::from([("key".into(), "value".into())]))
    );
    assert_eq!(fetched.metadata.uid, created.metadata.uid);

    // kubectl sees the same object, and server-side apply through stdin works.
    let applied = common::kubectl_apply_stdin(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: round-trip\ndata:\n  key: changed\n",
        &["--server-side", "--force-conflicts", "-n", &ns],
    );
    common::assert_success(&applied);
    let fetched = config_maps.get("round-trip").await.expect("get config map");
    assert_eq!(
        fetched
            .data
            .as_ref()
            .and_then(|d| d.get("key"))
            .map(String::as_str),
        Some("changed")
    );
}

#[tokio::test]
async fn emulator_starts_and_reports_state() {
    let emulator = common::Emulator::start("");
    assert!(
        emulator.base_url.starts_with("http://127.0.0.1:"),
        "{}",
        emulator.base_url
    );
    let state = emulator.state().await;
    assert!(state.is_object(), "unexpected state: {state}");
}

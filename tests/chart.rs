//! The Helm chart in `charts/versori-operator`: it lints, its schema refuses bad values, what it
//! renders is accepted by a real apiserver, it installs, and its RBAC is both sufficient (the
//! operator, running with a token of the chart's ServiceAccount, makes the examples Ready) and
//! least-privilege (with `watchNamespaces`, no Secret access outside them).
//!
//! helm is built from the Go module proxy by `tests/tools/build-helm` on first use (cached).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::TestCluster;
use common::operator::{Operator, OperatorOptions};
use serde::Deserialize;
use serde_json::Value;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

fn chart_dir() -> PathBuf {
    Path::new(MANIFEST_DIR).join("charts/versori-operator")
}

// ---------------------------------------------------------------------------------------------
// helm

/// The helm binary, built by `tests/tools/build-helm` the first time (a few minutes, then cached).
fn helm_binary() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let script = Path::new(MANIFEST_DIR).join("tests/tools/build-helm");
        let output = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        let stdout = common::assert_success(&output);
        let path = PathBuf::from(stdout.trim());
        assert!(
            path.is_file(),
            "{} printed {path:?}, which is not a file",
            script.display()
        );
        path
    })
}

/// helm with its config, cache and data directories kept inside the target directory, and no
/// ambient KUBECONFIG.
fn helm_command(args: &[&str]) -> Command {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm-home");
    let mut command = Command::new(helm_binary());
    command
        .args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null());
    command
}

fn helm(args: &[&str]) -> Output {
    helm_command(args).output().expect("running helm")
}

/// A values file for one helm invocation.
fn values_file(yaml: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new()
        .prefix("values-")
        .suffix(".yaml")
        .tempfile()
        .expect("creating a values file");
    std::fs::write(file.path(), yaml).expect("writing a values file");
    file
}

/// `helm template RELEASE chart -n NAMESPACE -f values`, as text.
fn render_text(release: &str, namespace: &str, values: &str) -> String {
    let file = values_file(values);
    let chart = chart_dir();
    let output = helm(&[
        "template",
        release,
        &chart.to_string_lossy(),
        "--namespace",
        namespace,
        "--values",
        &file.path().to_string_lossy(),
    ]);
    common::assert_success(&output)
}

/// Every non-empty document of a multi-document YAML stream.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).expect("rendered YAML parses"))
        .filter(|document| !document.is_null())
        .collect()
}

fn render(release: &str, namespace: &str, values: &str) -> Vec<Value> {
    documents(&render_text(release, namespace, values))
}

fn to_yaml(documents: &[&Value]) -> String {
    documents
        .iter()
        .map(|d| serde_yaml::to_string(d).expect("serialising YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents.iter().filter(|d| d["kind"] == kind).collect()
}

fn one_of_kind<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(documents, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

fn operator_container(documents: &[Value]) -> &Value {
    &one_of_kind(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

/// The container's env as (name, plain value); `valueFrom` entries have `None`.
fn env_of(container: &Value) -> Vec<(String, Option<String>)> {
    container["env"]
        .as_array()
        .expect("container env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().expect("env name").to_owned(),
                e["value"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    env_of(container)
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v)
}

/// Whether any rule of these (Cluster)Roles grants access to Secrets.
fn grants_secrets(roles: &[&Value]) -> bool {
    roles.iter().any(|role| {
        role["rules"].as_array().into_iter().flatten().any(|rule| {
            rule["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r == "secrets" || r == "*")
        })
    })
}

/// Whether a rule of `role` grants `verb` on `resource` (in the versori.com or core group).
fn grants(role: &Value, resource: &str, verb: &str) -> bool {
    role["rules"].as_array().into_iter().flatten().any(|rule| {
        let has = |field: &str, want: &str| {
            rule[field]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| v == want || v == "*")
        };
        has("resources", resource) && has("verbs", verb)
    })
}

/// The (Cluster)Role of `kind` whose name ends with `suffix`.
fn named<'a>(documents: &'a [Value], kind: &str, suffix: &str) -> &'a Value {
    let found: Vec<&Value> = of_kind(documents, kind)
        .into_iter()
        .filter(|d| {
            d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with(suffix))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} named *{suffix}: {found:?}"
    );
    found[0]
}

/// `kubectl apply --dry-run=server` of `documents`; returns stderr (warnings).
fn dry_run_apply(cluster: &TestCluster, documents: &[&Value]) -> String {
    let output = cluster.kubectl_apply_stdin(&to_yaml(documents), &["--dry-run=server"]);
    common::assert_success(&output);
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Values turning the OAuth 2.0 callback on, with its Ingress.
const OAUTH2_CALLBACK_VALUES: &str = "oauth2Callback:\n  publicUrl: https://versori-operator.example.com\n  \
     ingress:\n    enabled: true\n    host: versori-operator.example.com\n";

const OAUTH2_CALLBACK_ENV: [&str; 3] = [
    "OAUTH2_CALLBACK_URL",
    "OAUTH2_CALLBACK_ADDR",
    "OAUTH2_AUTHORIZATION_TTL",
];

/// The rendered objects of the OAuth 2.0 callback: the operator's `oauth2-callback` port, the
/// Service selecting every operator pod and sending to that port, and the Ingress routing only
/// the callback path to that Service. Returns the Service and the Ingress.
fn check_oauth2_callback(docs: &[Value]) -> (&Value, &Value) {
    let container = operator_container(docs);
    assert_eq!(
        env_value(container, "OAUTH2_CALLBACK_URL").as_deref(),
        Some("https://versori-operator.example.com")
    );
    assert_eq!(
        env_value(container, "OAUTH2_CALLBACK_ADDR").as_deref(),
        Some("0.0.0.0:8081")
    );
    assert_eq!(
        env_value(container, "OAUTH2_AUTHORIZATION_TTL").as_deref(),
        Some("10m")
    );
    let port = container["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .find(|p| p["name"] == "oauth2-callback")
        .expect("an oauth2-callback container port");
    assert_eq!(port["containerPort"], 8081);

    let service = of_kind(docs, "Service")
        .into_iter()
        .find(|s| {
            s["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["targetPort"] == "oauth2-callback")
        })
        .expect("a Service for the oauth2-callback port");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(service["spec"]["ports"].as_array().unwrap().len(), 1);
    assert_eq!(service["spec"]["ports"][0]["port"], 80);
    // It selects the operator's pods, all of them (every replica serves the callback).
    let pod_labels = &one_of_kind(docs, "Deployment")["spec"]["template"]["metadata"]["labels"];
    let selector = service["spec"]["selector"]
        .as_object()
        .expect("Service selector");
    assert!(!selector.is_empty());
    for (key, value) in selector {
        assert_eq!(
            &pod_labels[key], value,
            "the callback Service selects {key}={value}, the operator pods do not carry it"
        );
    }

    let ingress = one_of_kind(docs, "Ingress");
    assert_eq!(ingress["apiVersion"], "networking.k8s.io/v1");
    let rules = ingress["spec"]["rules"].as_array().expect("Ingress rules");
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["host"], "versori-operator.example.com");
    let paths = rules[0]["http"]["paths"].as_array().expect("Ingress paths");
    assert_eq!(
        paths.len(),
        1,
        "the Ingress routes more than the callback: {paths:?}"
    );
    assert_eq!(paths[0]["path"], "/oauth2/callback");
    assert_eq!(paths[0]["pathType"], "Exact");
    let backend = &paths[0]["backend"]["service"];
    assert_eq!(backend["name"], service["metadata"]["name"]);
    assert_eq!(
        backend["port"]["number"],
        service["spec"]["ports"][0]["port"]
    );
    assert!(ingress["spec"].get("defaultBackend").is_none());
    (service, ingress)
}

// ---------------------------------------------------------------------------------------------
// Static checks

#[test]
fn chart_lints_strictly() {
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    common::assert_success(&helm(&["lint", &chart]));
    common::assert_success(&helm(&["lint", "--strict", &chart]));
    let values = values_file(&format!(
        "replicas: 3\nwatchNamespaces: [team-a, team-b]\nmetrics:\n  serviceMonitor:\n    enabled: true\n\
         versori:\n  organisationId: org\n  existingSecret: versori-token\n{OAUTH2_CALLBACK_VALUES}"
    ));
    common::assert_success(&helm(&[
        "lint",
        "--strict",
        &chart,
        "--values",
        &values.path().to_string_lossy(),
    ]));
}

#[test]
fn schema_refuses_bad_values_with_clear_messages() {
    let cases: [(&str, &[&str]); 10] = [
        ("logFormat: xml\n", &["/logFormat", "'json', 'text'"]),
        (
            "clusterConfigSecretNamespaces: [Versori_System]\n",
            &["/clusterConfigSecretNamespaces/0"],
        ),
        (
            "replicaCount: 2\n",
            &["additional properties 'replicaCount'"],
        ),
        ("replicas: two\n", &["/replicas", "want integer"]),
        ("watchNamespaces: [Team_A]\n", &["/watchNamespaces/0"]),
        ("resyncInterval: 5 minutes\n", &["/resyncInterval"]),
        (
            "versori:\n  organisationId: org\n  tokn: x\n",
            &["/versori", "additional properties 'tokn'"],
        ),
        (
            "oauth2Callback:\n  publicUrl: not-a-url\n",
            &["/oauth2Callback/publicUrl", "does not match pattern"],
        ),
        (
            "oauth2Callback:\n  publicUrl: ftp://versori-operator.example.com\n",
            &["/oauth2Callback/publicUrl"],
        ),
        (
            "oauth2Callback:\n  ingress:\n    pathType: ImplementationSpecific\n",
            &["/oauth2Callback/ingress/pathType", "'Exact', 'Prefix'"],
        ),
    ];
    let chart = chart_dir();
    for (values, expected) in cases {
        let file = values_file(values);
        let output = helm(&[
            "template",
            "bad",
            &chart.to_string_lossy(),
            "--values",
            &file.path().to_string_lossy(),
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "helm template accepted {values:?}:\n{}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert!(
            stderr.contains("don't meet the specifications of the schema"),
            "{values:?}: not refused by the schema: {stderr}"
        );
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{values:?}: the message does not say {needle:?}: {stderr}"
            );
        }
    }
}

#[test]
fn chart_crds_equal_the_generated_crds() {
    let top = Path::new(MANIFEST_DIR).join("crds");
    let chart = chart_dir().join("crds");
    let yaml_files = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
            .collect();
        names.sort();
        names
    };
    let names = yaml_files(&top);
    assert!(!names.is_empty(), "no CRDs in {}", top.display());
    assert_eq!(
        names,
        yaml_files(&chart),
        "the chart's crds/ holds other files than crds/: run `make chart-crds`"
    );
    for name in names {
        let a = std::fs::read(top.join(&name)).expect("reading a CRD file");
        let b = std::fs::read(chart.join(&name)).expect("reading a chart CRD file");
        assert!(
            a == b,
            "charts/versori-operator/crds/{name} differs from crds/{name}: run `make chart-crds`"
        );
    }
}

#[test]
fn readme_documents_every_value() {
    fn leaves(prefix: &str, value: &serde_yaml::Value, out: &mut Vec<String>) {
        match value.as_mapping() {
            Some(map) if !map.is_empty() => {
                for (key, child) in map {
                    let key = key.as_str().expect("string keys in values.yaml");
                    let path = if prefix.is_empty() {
                        key.to_owned()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    leaves(&path, child, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(chart_dir().join("values.yaml")).expect("reading values.yaml"),
    )
    .expect("parsing values.yaml");
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).expect("reading README.md");
    let mut paths = Vec::new();
    leaves("", &values, &mut paths);
    let undocumented: Vec<&String> = paths
        .iter()
        .filter(|path| {
            // The value itself or one of its parents (e.g. `resources`) has a row.
            let parts: Vec<&str> = path.split('.').collect();
            !(1..=parts.len()).any(|n| readme.contains(&format!("| `{}` |", parts[..n].join("."))))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "charts/versori-operator/README.md has no row for {undocumented:?}"
    );
}

/// The rules for the config kinds, in any mode: VersoriConfigs where the operator watches (read,
/// status patched), ClusterVersoriConfigs cluster-wide (read, status patched, nothing else), and
/// for people view of both and edit of VersoriConfigs only.
fn check_config_rbac(docs: &[Value]) {
    let cluster_configs = named(docs, "ClusterRole", "-cluster-configs");
    for verb in ["get", "list", "watch"] {
        assert!(
            grants(cluster_configs, "clusterversoriconfigs", verb),
            "{verb}"
        );
    }
    assert!(grants(
        cluster_configs,
        "clusterversoriconfigs/status",
        "patch"
    ));
    assert_eq!(
        cluster_configs["rules"].as_array().map(Vec::len),
        Some(2),
        "nothing else cluster-wide: {cluster_configs:?}"
    );
    for verb in ["create", "update", "delete"] {
        assert!(
            !grants(cluster_configs, "clusterversoriconfigs", verb),
            "{verb}"
        );
    }
    let binding = named(docs, "ClusterRoleBinding", "-cluster-configs");
    assert_eq!(
        binding["roleRef"]["name"],
        cluster_configs["metadata"]["name"]
    );
    let watch_roles: Vec<&Value> = of_kind(docs, "ClusterRole")
        .into_iter()
        .chain(of_kind(docs, "Role"))
        // The operator's: it watches and patches (people's view watches, edit patches).
        .filter(|r| grants(r, "connections", "watch") && grants(r, "connections", "patch"))
        .collect();
    assert!(!watch_roles.is_empty());
    for role in watch_roles {
        for verb in ["get", "list", "watch"] {
            assert!(grants(role, "versoriconfigs", verb), "{verb}");
        }
        assert!(grants(role, "versoriconfigs/status", "patch"));
        assert!(!grants(role, "versoriconfigs", "delete"));
    }
    let view = named(docs, "ClusterRole", "-view");
    let edit = named(docs, "ClusterRole", "-edit");
    for kind in [
        "systems",
        "projectsystems",
        "connections",
        "versoriconfigs",
        "clusterversoriconfigs",
    ] {
        assert!(grants(view, kind, "list"), "view {kind}");
    }
    assert!(grants(edit, "versoriconfigs", "create"));
    for verb in ["create", "update", "patch", "delete"] {
        assert!(
            !grants(edit, "clusterversoriconfigs", verb),
            "namespace editors must not {verb} ClusterVersoriConfigs"
        );
    }
}

#[test]
fn rendering_follows_the_values() {
    // Defaults: one replica, no leader election (so no overlap on rollout), a ClusterRole, no
    // token (NOTES.txt warns), restricted security.
    let docs = render("vo", "versori-system", "");
    let container = operator_container(&docs);
    let deployment = one_of_kind(&docs, "Deployment");
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(container["args"], serde_json::json!(["run"]));
    assert_eq!(
        env_value(container, "LEADER_ELECTION").as_deref(),
        Some("false")
    );
    assert_eq!(
        env_value(container, "WATCH_NAMESPACES").as_deref(),
        Some("")
    );
    assert_eq!(
        env_value(container, "METRICS_ADDR").as_deref(),
        Some("0.0.0.0:8080")
    );
    assert_eq!(env_value(container, "LOG_FORMAT").as_deref(), Some("json"));
    assert!(env_value(container, "VERSORI_API_TOKEN_FILE").is_none());
    assert!(env_value(container, "VERSORI_API_TOKEN").is_none());
    let names: Vec<String> = env_of(container).into_iter().map(|(n, _)| n).collect();
    for name in ["POD_NAME", "POD_NAMESPACE"] {
        assert!(names.iter().any(|n| n == name), "no {name} in {names:?}");
    }
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "metrics");
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["runAsUser"], 65532);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let pod_security = &deployment["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(pod_security["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(container["resources"]["requests"]["cpu"], "50m");
    assert_eq!(container["resources"]["requests"]["memory"], "128Mi");
    assert_eq!(container["resources"]["limits"]["memory"], "256Mi");
    // Only the credential hash key Secret, and only the Role that reads it.
    let secrets = of_kind(&docs, "Secret");
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    assert!(
        secrets[0]["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("-credential-hash-key"))
    );
    assert!(of_kind(&docs, "PodDisruptionBudget").is_empty());
    let roles = of_kind(&docs, "Role");
    assert_eq!(roles.len(), 1, "{roles:?}");
    assert!(
        roles[0]["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("-hash-key"))
    );
    assert!(grants_secrets(&of_kind(&docs, "ClusterRole")));
    assert_eq!(of_kind(&docs, "ServiceMonitor").len(), 0);
    check_config_rbac(&docs);

    // watchNamespaces with clusterConfigSecretNamespaces: get on Secrets (only) in each config
    // namespace that is not watched already, and Events in `default` (those of cluster-scoped
    // objects go there).
    let docs = render(
        "vo",
        "versori-system",
        "watchNamespaces: [team-a, team-b]\nclusterConfigSecretNamespaces: [versori-system, team-a, vault]\n",
    );
    check_config_rbac(&docs);
    let config_secrets: Vec<&Value> = of_kind(&docs, "Role")
        .into_iter()
        .filter(|r| r["metadata"]["name"] == "vo-versori-operator-config-secrets")
        .collect();
    let namespaces: Vec<&str> = config_secrets
        .iter()
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["versori-system", "vault"]);
    for role in &config_secrets {
        assert_eq!(
            role["rules"],
            serde_json::json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}])
        );
    }
    let events = named(&docs, "Role", "-config-events");
    assert_eq!(events["metadata"]["namespace"], "default");
    assert!(grants(events, "events", "create") && !grants_secrets(&[events]));
    assert!(!grants_secrets(&of_kind(&docs, "ClusterRole")));
    for binding in of_kind(&docs, "RoleBinding") {
        assert_eq!(binding["subjects"][0]["name"], "vo-versori-operator");
        assert_eq!(binding["subjects"][0]["namespace"], "versori-system");
    }
    // Watching `default` itself: its Role covers the events; no second Role there.
    let docs = render("vo", "versori-system", "watchNamespaces: [default]\n");
    assert!(of_kind(&docs, "Role").iter().all(|r| {
        !r["metadata"]["name"]
            .as_str()
            .unwrap()
            .ends_with("-config-events")
    }));
    // Cluster-wide, the ClusterRole reads Secrets everywhere: the value adds nothing.
    let docs = render(
        "vo",
        "versori-system",
        "clusterConfigSecretNamespaces: [versori-system]\n",
    );
    assert_eq!(of_kind(&docs, "Role").len(), 1, "only the hash key Role");

    // The chart's own token Secret, mounted as a file.
    let docs = render("vo", "versori-system", "versori:\n  token: s3cr3t\n");
    let secret = of_kind(&docs, "Secret")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "vo-versori-operator-api-token")
        .expect("the token Secret");
    assert_eq!(secret["data"]["token"], "czNjcjN0");
    let container = operator_container(&docs);
    let path = env_value(container, "VERSORI_API_TOKEN_FILE").expect("VERSORI_API_TOKEN_FILE");
    let mount = &container["volumeMounts"][0];
    assert_eq!(
        format!("{}/token", mount["mountPath"].as_str().unwrap()),
        path
    );
    let volume = &one_of_kind(&docs, "Deployment")["spec"]["template"]["spec"]["volumes"][0];
    assert_eq!(volume["secret"]["secretName"], secret["metadata"]["name"]);

    // An existing Secret and key: no Secret of the chart's own.
    let docs = render(
        "vo",
        "versori-system",
        "versori:\n  token: ignored\n  existingSecret: mine\n  existingSecretKey: apiToken\n",
    );
    assert!(
        of_kind(&docs, "Secret")
            .iter()
            .all(|s| s["metadata"]["name"] == "vo-versori-operator-credential-hash-key"),
        "no token Secret of the chart's own"
    );
    let volume = &one_of_kind(&docs, "Deployment")["spec"]["template"]["spec"]["volumes"][0];
    assert_eq!(volume["secret"]["secretName"], "mine");
    assert_eq!(volume["secret"]["items"][0]["key"], "apiToken");
    assert_eq!(volume["secret"]["items"][0]["path"], "token");

    // leaderElection.enabled with one replica: a Lease Role, no PDB.
    let docs = render("vo", "versori-system", "leaderElection:\n  enabled: true\n");
    let container = operator_container(&docs);
    assert_eq!(
        env_value(container, "LEADER_ELECTION").as_deref(),
        Some("true")
    );
    assert_eq!(
        env_value(container, "LEASE_NAME").as_deref(),
        Some("vo-versori-operator")
    );
    assert!(of_kind(&docs, "PodDisruptionBudget").is_empty());
    assert_eq!(
        one_of_kind(&docs, "Deployment")["spec"]["strategy"]["type"],
        "RollingUpdate"
    );
}

#[test]
fn network_policy_allows_only_the_callback_metrics_dns_apiserver_and_versori() {
    let docs = render("vo", "ops", "versori:\n  organisationId: o\n");
    assert!(of_kind(&docs, "NetworkPolicy").is_empty(), "off by default");
    let docs = render(
        "vo",
        "ops",
        "versori:\n  organisationId: o\nnetworkPolicy:\n  enabled: true\n  metricsFrom: [{namespaceSelector: {matchLabels: {team: monitoring}}}]\n  versoriCidrs: [203.0.113.0/24]\noauth2Callback:\n  publicUrl: https://operator.example.com\n",
    );
    let policy = one_of_kind(&docs, "NetworkPolicy");
    let spec = &policy["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
        "vo"
    );
    assert_eq!(
        spec["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    let ingress = spec["ingress"].as_array().expect("ingress rules");
    assert_eq!(ingress.len(), 2, "{ingress:?}");
    assert_eq!(ingress[0]["ports"][0]["port"], 8081);
    assert!(ingress[0].get("from").is_none(), "the callback is public");
    assert_eq!(ingress[1]["ports"][0]["port"], 8080);
    assert_eq!(
        ingress[1]["from"][0]["namespaceSelector"]["matchLabels"]["team"],
        "monitoring"
    );
    let egress = spec["egress"].as_array().expect("egress rules");
    let ports: Vec<i64> = egress
        .iter()
        .flat_map(|r| r["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert_eq!(ports, vec![53, 53, 443, 6443, 443]);
    assert_eq!(egress[2]["to"][0]["ipBlock"]["cidr"], "203.0.113.0/24");

    // Without the callback, no ingress to its port; without metricsFrom, none to metrics.
    let docs = render(
        "vo",
        "ops",
        "versori:\n  organisationId: o\nnetworkPolicy:\n  enabled: true\n",
    );
    let policy = one_of_kind(&docs, "NetworkPolicy");
    assert!(
        policy["spec"]["ingress"]
            .as_array()
            .is_none_or(|rules| rules.is_empty()),
        "{policy:?}"
    );
}

#[test]
fn the_credential_settings_reach_the_container() {
    let docs = render(
        "vo",
        "ops",
        "versori:\n  organisationId: o\ncredentials:\n  requireLabel: true\n  allowedOverrideHosts: [api.example.com, \"*.auth.example.com\"]\n",
    );
    let container = operator_container(&docs);
    assert_eq!(
        env_value(container, "REQUIRE_CREDENTIAL_LABEL").as_deref(),
        Some("true")
    );
    assert_eq!(
        env_value(container, "ALLOWED_OVERRIDE_HOSTS").as_deref(),
        Some("api.example.com,*.auth.example.com")
    );
    assert_eq!(
        env_value(container, "CREDENTIAL_HASH_KEY_SECRET").as_deref(),
        Some("vo-versori-operator-credential-hash-key")
    );
    let secrets = of_kind(&docs, "Secret");
    let key = secrets
        .iter()
        .find(|s| s["metadata"]["name"] == "vo-versori-operator-credential-hash-key")
        .expect("the hash key Secret");
    assert_eq!(
        key["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    assert!(key["data"]["key"].as_str().is_some_and(|k| k.len() >= 64));
    // An existing key Secret: not rendered, and the Role reads only it.
    let docs = render(
        "vo",
        "ops",
        "versori:\n  organisationId: o\ncredentials:\n  hashKeySecret: my-key\n",
    );
    assert!(
        of_kind(&docs, "Secret")
            .iter()
            .all(|s| s["metadata"]["name"] != "my-key")
    );
    let role = of_kind(&docs, "Role")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "vo-versori-operator-hash-key")
        .expect("the hash key Role");
    assert_eq!(
        role["rules"][0]["resourceNames"],
        serde_json::json!(["my-key"])
    );
    assert_eq!(role["rules"][0]["verbs"], serde_json::json!(["get"]));
    assert!(matches!(
        helm_command(&[
            "template",
            "vo",
            &chart_dir().to_string_lossy(),
            "--set",
            "credentials.allowedOverrideHosts[0]=https://bad/"
        ])
        .output()
        .map(|o| o.status.success()),
        Ok(false)
    ));
}

#[test]
fn oauth2_callback_renders_only_when_configured() {
    // Defaults: no callback at all (and an Ingress asked for without publicUrl is not made).
    for values in ["", "oauth2Callback:\n  ingress:\n    enabled: true\n"] {
        let docs = render("vo", "versori-system", values);
        let container = operator_container(&docs);
        let names: Vec<String> = env_of(container).into_iter().map(|(n, _)| n).collect();
        for name in OAUTH2_CALLBACK_ENV {
            assert!(
                !names.iter().any(|n| n == name),
                "{values:?}: {name} is set"
            );
        }
        let ports = container["ports"].as_array().expect("container ports");
        assert!(
            ports.iter().all(|p| p["name"] != "oauth2-callback"),
            "{values:?}: {ports:?}"
        );
        let services = of_kind(&docs, "Service");
        assert_eq!(services.len(), 1, "{values:?}: only the metrics Service");
        assert_eq!(services[0]["spec"]["ports"][0]["name"], "metrics");
        assert!(of_kind(&docs, "Ingress").is_empty(), "{values:?}");
    }

    // Configured, with the Ingress.
    let docs = render("vo", "versori-system", OAUTH2_CALLBACK_VALUES);
    let (service, ingress) = check_oauth2_callback(&docs);
    assert_eq!(
        service["metadata"]["name"],
        "vo-versori-operator-oauth2-callback"
    );
    assert_eq!(service["metadata"]["namespace"], "versori-system");
    assert!(ingress["spec"].get("ingressClassName").is_none());
    assert!(ingress["spec"].get("tls").is_none());
    // The metrics Service is unchanged, and still the one on the metrics port.
    assert!(
        of_kind(&docs, "Service")
            .iter()
            .any(|s| s["spec"]["ports"][0]["name"] == "metrics")
    );

    // Without the Ingress: the Service only. The Ingress host defaults to publicUrl's host; the
    // rest of the Ingress follows its values.
    let docs = render(
        "vo",
        "versori-system",
        "oauth2Callback:\n  publicUrl: https://Callback.Example.com:8443/\n  port: 9090\n  \
         authorizationTtl: 900\n",
    );
    assert!(of_kind(&docs, "Ingress").is_empty());
    let container = operator_container(&docs);
    assert_eq!(
        env_value(container, "OAUTH2_CALLBACK_ADDR").as_deref(),
        Some("0.0.0.0:9090")
    );
    assert_eq!(
        env_value(container, "OAUTH2_AUTHORIZATION_TTL").as_deref(),
        Some("900s")
    );
    let docs = render(
        "vo",
        "versori-system",
        "oauth2Callback:\n  publicUrl: https://Callback.Example.com:8443/\n  ingress:\n    \
         enabled: true\n    className: nginx\n    pathType: Prefix\n    \
         tls: [{secretName: callback-tls, hosts: [callback.example.com]}]\n",
    );
    let ingress = one_of_kind(&docs, "Ingress");
    assert_eq!(ingress["spec"]["rules"][0]["host"], "callback.example.com");
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    assert_eq!(ingress["spec"]["tls"][0]["secretName"], "callback-tls");
    assert_eq!(
        ingress["spec"]["rules"][0]["http"]["paths"][0]["pathType"],
        "Prefix"
    );

    // The callback and the metrics endpoint cannot share a port.
    let file = values_file("oauth2Callback:\n  publicUrl: https://a.example.com\n  port: 8080\n");
    let output = helm(&[
        "template",
        "vo",
        &chart_dir().to_string_lossy(),
        "--values",
        &file.path().to_string_lossy(),
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("oauth2Callback.port must differ"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Against the test cluster

#[tokio::test]
async fn renders_are_accepted_by_the_apiserver() {
    let cluster = common::cluster().await;

    // Defaults, in a namespace that warns about anything the "restricted" Pod Security Standard
    // refuses: the Deployment's pod template must raise no warning.
    let namespace = cluster.namespace("chart-defaults").await;
    common::assert_success(&cluster.kubectl(&[
        "label",
        "namespace",
        &namespace,
        "pod-security.kubernetes.io/warn=restricted",
        "pod-security.kubernetes.io/enforce=restricted",
    ]));
    let docs = render(
        "defaults",
        &namespace,
        "versori:\n  token: t\n  organisationId: org\n",
    );
    let warnings = dry_run_apply(cluster, &docs.iter().collect::<Vec<_>>());
    assert!(
        !warnings.contains("PodSecurity"),
        "the pod template violates the restricted Pod Security Standard:\n{warnings}"
    );
    // The rendered pod itself is admitted where "restricted" is enforced.
    let deployment = one_of_kind(&docs, "Deployment");
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "defaults-pod", "namespace": namespace},
        "spec": deployment["spec"]["template"]["spec"],
    });
    dry_run_apply(cluster, &[&pod]);
    // ... and the check has teeth: the same pod as root is refused.
    let mut root_pod = pod.clone();
    root_pod["metadata"]["name"] = "root-pod".into();
    root_pod["spec"]["securityContext"]["runAsNonRoot"] = false.into();
    root_pod["spec"]["securityContext"]["runAsUser"] = 0.into();
    root_pod["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = false.into();
    root_pod["spec"]["containers"][0]["securityContext"]["runAsUser"] = 0.into();
    let output = cluster.kubectl_apply_stdin(&to_yaml(&[&root_pod]), &["--dry-run=server"]);
    assert!(
        !output.status.success() && String::from_utf8_lossy(&output.stderr).contains("PodSecurity"),
        "Pod Security admission did not refuse a root pod: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // watchNamespaces: a Role and RoleBinding in each (which must exist), no ClusterRole with
    // access to Secrets.
    let release_ns = cluster.namespace("chart-ns").await;
    let team_a = cluster.namespace("chart-team-a").await;
    let team_b = cluster.namespace("chart-team-b").await;
    let config_ns = cluster.namespace("chart-config-secrets").await;
    let docs = render(
        "scoped",
        &release_ns,
        &format!(
            "watchNamespaces: [{team_a}, {team_b}]\nclusterConfigSecretNamespaces: [{config_ns}]\n"
        ),
    );
    // The watch Roles (besides them: the hash key Role in the release namespace, get on Secrets
    // in the config namespace, Events in `default`).
    let roles: Vec<&Value> = of_kind(&docs, "Role")
        .into_iter()
        .filter(|r| r["metadata"]["name"] == "scoped-versori-operator")
        .collect();
    let role_namespaces: Vec<&str> = roles
        .iter()
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(role_namespaces, [team_a.as_str(), team_b.as_str()]);
    assert_eq!(of_kind(&docs, "Role").len(), 5);
    assert_eq!(of_kind(&docs, "RoleBinding").len(), 5);
    assert!(grants_secrets(&roles));
    assert_eq!(
        named(&docs, "Role", "-config-secrets")["metadata"]["namespace"],
        config_ns.as_str()
    );
    assert!(
        !grants_secrets(&of_kind(&docs, "ClusterRole")),
        "a ClusterRole grants Secrets although watchNamespaces is set"
    );
    // The one cluster-wide binding: ClusterVersoriConfigs, a cluster-scoped kind.
    let cluster_bindings = of_kind(&docs, "ClusterRoleBinding");
    assert_eq!(cluster_bindings.len(), 1, "{cluster_bindings:?}");
    assert!(
        cluster_bindings[0]["roleRef"]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("-cluster-configs"))
    );
    assert_eq!(
        env_value(operator_container(&docs), "WATCH_NAMESPACES"),
        Some(format!("{team_a},{team_b}"))
    );
    dry_run_apply(cluster, &docs.iter().collect::<Vec<_>>());

    // replicas: 3: leader election, the Lease Role, a PodDisruptionBudget.
    let namespace = cluster.namespace("chart-ha").await;
    let docs = render("ha", &namespace, "replicas: 3\n");
    assert_eq!(one_of_kind(&docs, "Deployment")["spec"]["replicas"], 3);
    assert_eq!(
        env_value(operator_container(&docs), "LEADER_ELECTION").as_deref(),
        Some("true")
    );
    let pdb = one_of_kind(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let lease_role = of_kind(&docs, "Role")
        .into_iter()
        .find(|r| r["rules"][0]["apiGroups"][0] == "coordination.k8s.io")
        .expect("a Role for the Lease");
    assert_eq!(lease_role["metadata"]["namespace"], namespace.as_str());
    dry_run_apply(cluster, &docs.iter().collect::<Vec<_>>());

    // The ServiceMonitor: its CRD is not installed here, so check the YAML and dry-run the rest.
    let namespace = cluster.namespace("chart-monitor").await;
    let docs = render(
        "mon",
        &namespace,
        "metrics:\n  serviceMonitor:\n    enabled: true\n    labels: {release: prometheus}\n",
    );
    let monitor = one_of_kind(&docs, "ServiceMonitor");
    let service = one_of_kind(&docs, "Service");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("ServiceMonitor selector");
    for (key, value) in selector {
        assert_eq!(
            &service["metadata"]["labels"][key], value,
            "the ServiceMonitor selects {key}={value}, the Service does not carry it"
        );
    }
    let rest: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] != "ServiceMonitor")
        .collect();
    dry_run_apply(cluster, &rest);

    // The OAuth 2.0 callback: its port, Service and Ingress, with two replicas (every one of
    // them serves the callback).
    let namespace = cluster.namespace("chart-oauth2").await;
    let docs = render(
        "cb",
        &namespace,
        &format!(
            "replicas: 2\nversori:\n  token: t\n  organisationId: org\n{OAUTH2_CALLBACK_VALUES}"
        ),
    );
    check_oauth2_callback(&docs);
    dry_run_apply(cluster, &docs.iter().collect::<Vec<_>>());
}

#[tokio::test]
async fn helm_install_creates_the_objects() {
    let cluster = common::cluster().await;
    let namespace = cluster.namespace("chart-install").await;
    let release = "vo";
    let chart = chart_dir();
    let kubeconfig = cluster.kubeconfig.to_string_lossy().into_owned();
    let values = values_file(
        "versori:\n  organisationId: test-org\n  token: not-a-real-token\nnetworkPolicy:\n  enabled: true\n  metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]\noauth2Callback:\n  publicUrl: https://operator.example.com\n",
    );
    let output = helm(&[
        "install",
        release,
        &chart.to_string_lossy(),
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        &namespace,
        "--values",
        &values.path().to_string_lossy(),
        "--timeout",
        "60s",
    ]);
    let stdout = common::assert_success(&output);
    assert!(stdout.contains("STATUS: deployed"), "{stdout}");
    assert!(
        stdout.contains("kubectl apply --server-side -f crds/"),
        "NOTES: {stdout}"
    );

    let fullname = "vo-versori-operator";
    let cluster_name = format!("{namespace}-{fullname}");
    for (kind, name) in [
        ("deployment", fullname.to_owned()),
        ("serviceaccount", fullname.to_owned()),
        ("secret", format!("{fullname}-api-token")),
        ("secret", format!("{fullname}-credential-hash-key")),
        ("role", format!("{fullname}-hash-key")),
        ("service", format!("{fullname}-metrics")),
        ("networkpolicy", fullname.to_owned()),
    ] {
        common::assert_success(&cluster.kubectl(&["-n", &namespace, "get", kind, &name]));
    }
    for (kind, name) in [
        ("clusterrole", cluster_name.clone()),
        ("clusterrolebinding", cluster_name.clone()),
        ("clusterrole", format!("{cluster_name}-view")),
        ("clusterrole", format!("{cluster_name}-cluster-configs")),
        (
            "clusterrolebinding",
            format!("{cluster_name}-cluster-configs"),
        ),
    ] {
        common::assert_success(&cluster.kubectl(&["get", kind, &name]));
    }

    let status = helm(&[
        "status",
        release,
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        &namespace,
    ]);
    assert!(common::assert_success(&status).contains("STATUS: deployed"));

    let output = helm(&[
        "uninstall",
        release,
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        &namespace,
    ]);
    common::assert_success(&output);
    let output = cluster.kubectl(&["get", "clusterrole", &cluster_name]);
    assert!(
        !output.status.success(),
        "the ClusterRole outlived helm uninstall"
    );
    // Helm never deletes CRDs.
    common::assert_success(&cluster.kubectl(&["get", "crd", "systems.versori.com"]));
}

// ---------------------------------------------------------------------------------------------
// RBAC proof

/// A kubeconfig for the test cluster that authenticates with `token`.
fn token_kubeconfig(cluster: &TestCluster, name: &str, token: &str) -> PathBuf {
    let admin: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(&cluster.kubeconfig).expect("reading the admin kubeconfig"),
    )
    .expect("parsing the admin kubeconfig");
    let server = admin["clusters"][0]["cluster"]["server"]
        .as_str()
        .expect("server in the admin kubeconfig");
    let ca = admin["clusters"][0]["cluster"]["certificate-authority"]
        .as_str()
        .expect("certificate-authority in the admin kubeconfig");
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "test", "user": name}}],
        "current-context": name,
    });
    let path = cluster.dir.join(format!("kubeconfig-{name}"));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).expect("writing a kubeconfig");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    path
}

/// Renders the chart into `namespace` for real (not a dry run) and returns the rendered
/// documents, the ServiceAccount's name and a kubeconfig holding a TokenRequest token for it.
fn install_rendered(
    cluster: &TestCluster,
    release: &str,
    namespace: &str,
    values: &str,
) -> (Vec<Value>, String, PathBuf) {
    let docs = render(release, namespace, values);
    let output = cluster.kubectl_apply_stdin(&to_yaml(&docs.iter().collect::<Vec<_>>()), &[]);
    common::assert_success(&output);
    let service_account = one_of_kind(&docs, "ServiceAccount")["metadata"]["name"]
        .as_str()
        .expect("ServiceAccount name")
        .to_owned();
    let output = cluster.kubectl(&[
        "create",
        "token",
        &service_account,
        "-n",
        namespace,
        "--duration=1h",
    ]);
    let token = common::assert_success(&output).trim().to_owned();
    assert!(!token.is_empty(), "kubectl create token printed nothing");
    let kubeconfig = token_kubeconfig(cluster, &format!("{namespace}-{service_account}"), &token);
    (docs, service_account, kubeconfig)
}

/// Runs kubectl with `kubeconfig` (not the admin one).
fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("running kubectl")
}

/// `kubectl auth can-i VERB RESOURCE -n NAMESPACE` with `kubeconfig`'s identity.
fn can_i(kubeconfig: &Path, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
    let mut args = vec!["auth", "can-i", verb, resource];
    match namespace {
        Some(ns) => args.extend(["-n", ns]),
        None => args.push("--all-namespaces"),
    }
    let output = kubectl_as(kubeconfig, &args);
    let answer = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    match answer.as_str() {
        "yes" => true,
        "no" => false,
        _ => panic!(
            "kubectl auth can-i {verb} {resource}: unexpected answer {answer:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// The operator process configured as the chart configures the container (the plain env values
/// of the rendered Deployment), authenticating with `kubeconfig`, watching `watch_namespaces`
/// (empty: all), against `emulator`.
fn start_operator_like_the_chart(
    cluster: &TestCluster,
    emulator: &common::Emulator,
    docs: &[Value],
    kubeconfig: &Path,
    release_namespace: &str,
    identity: &str,
) -> Operator {
    let container = operator_container(docs);
    // Where the test differs from a pod: the API URL, organisation and token come from the
    // emulator (the harness sets them), the endpoint gets a free port, the log is verbose.
    const FROM_HARNESS: [&str; 5] = [
        "VERSORI_API_URL",
        "VERSORI_ORGANISATION_ID",
        "VERSORI_API_TOKEN_FILE",
        "METRICS_ADDR",
        "RUST_LOG",
    ];
    let mut env: Vec<(String, String)> = env_of(container)
        .into_iter()
        .filter(|(name, _)| !FROM_HARNESS.contains(&name.as_str()))
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .collect();
    // The downward API's values.
    env.push(("POD_NAMESPACE".into(), release_namespace.to_owned()));
    env.push(("POD_NAME".into(), identity.to_owned()));
    env.push((
        "KUBECONFIG".into(),
        kubeconfig.to_string_lossy().into_owned(),
    ));
    let watch = env_value(container, "WATCH_NAMESPACES").unwrap_or_default();
    let mut options = OperatorOptions::new(if watch.is_empty() {
        release_namespace
    } else {
        &watch
    });
    options.identity = identity.to_owned();
    options.env = env;
    Operator::start(cluster, emulator, &options)
}

async fn wait_until<F>(what: &str, timeout: Duration, operator: &Operator, mut check: F)
where
    F: FnMut() -> bool,
{
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() > deadline {
            let logs = operator.logs();
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "timed out after {timeout:?} waiting for {what}\noperator log tail:\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The examples, and the kind/name of each one that must become Ready.
const EXAMPLE_OBJECTS: [(&str, &str); 5] = [
    ("systems.versori.com", "shopify"),
    ("systems.versori.com", "example-oauth2"),
    ("projectsystems.versori.com", "shopify"),
    ("projectsystems.versori.com", "example-oauth2"),
    ("connections.versori.com", "demo-api-key"),
];

fn is_ready(cluster: &TestCluster, namespace: &str, kind: &str, name: &str) -> bool {
    let output = cluster.kubectl(&["-n", namespace, "get", kind, name, "-o", "json"]);
    if !output.status.success() {
        return false;
    }
    let Ok(object) = serde_json::from_slice::<Value>(&output.stdout) else {
        return false;
    };
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Applies the examples into `namespace` as admin and waits until every object is Ready, then
/// deletes the Connection and waits until its finalizer is gone.
async fn examples_become_ready(cluster: &TestCluster, namespace: &str, operator: &Operator) {
    let examples = Path::new(MANIFEST_DIR).join("examples");
    common::assert_success(&cluster.kubectl(&[
        "apply",
        "-n",
        namespace,
        "-f",
        &examples.to_string_lossy(),
    ]));
    for (kind, name) in EXAMPLE_OBJECTS {
        wait_until(
            &format!("{kind}/{name} in {namespace} to be Ready"),
            Duration::from_secs(90),
            operator,
            || is_ready(cluster, namespace, kind, name),
        )
        .await;
    }
    // Deleting needs the finalizer patch (and the event): the Connection must disappear.
    common::assert_success(&cluster.kubectl(&[
        "-n",
        namespace,
        "delete",
        "connections.versori.com",
        "demo-api-key",
        "--wait=false",
    ]));
    wait_until(
        &format!("connection demo-api-key in {namespace} to be deleted"),
        Duration::from_secs(60),
        operator,
        || {
            let output = cluster.kubectl(&[
                "-n",
                namespace,
                "get",
                "connections.versori.com",
                "demo-api-key",
                "--ignore-not-found",
                "-o",
                "name",
            ]);
            output.status.success() && output.stdout.is_empty()
        },
    )
    .await;
    // Events were published (events.k8s.io create).
    let output = cluster.kubectl(&["-n", namespace, "get", "events.events.k8s.io", "-o", "json"]);
    let events: Value = serde_json::from_str(&common::assert_success(&output)).unwrap();
    assert!(
        events["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty()),
        "the operator published no events in {namespace}"
    );
    let logs = operator.logs().to_lowercase();
    assert!(
        !logs.contains("forbidden"),
        "the operator was refused something by RBAC:\n{}",
        operator
            .logs()
            .lines()
            .filter(|l| l.to_lowercase().contains("forbidden"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// As admin: a VersoriConfig `team` in `namespace` and a ClusterVersoriConfig whose token Secret
/// is in `secret_namespace`, both for the emulator's organisation; waits until the operator has
/// found both Ready (it read their Secrets and wrote their status). Returns the
/// ClusterVersoriConfig's name.
async fn configs_become_ready(
    cluster: &TestCluster,
    namespace: &str,
    secret_namespace: &str,
    emulator: &common::Emulator,
    operator: &Operator,
) -> String {
    let cluster_config = common::unique_name("chart-rbac");
    let secret = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name} }}\nstringData: {{ token: \"{}\" }}\n",
            emulator.token
        )
    };
    common::assert_success(&cluster.kubectl_apply_stdin(
        &format!(
            "{}---\napiVersion: versori.com/v1alpha1\nkind: VersoriConfig\nmetadata: {{ name: team }}\nspec:\n  apiUrl: {url}\n  organisationId: {org}\n  tokenSecretRef: {{ name: team-token, key: token }}\n",
            secret("team-token"),
            url = emulator.base_url,
            org = emulator.organisation
        ),
        &["-n", namespace],
    ));
    common::assert_success(&cluster.kubectl_apply_stdin(
        &format!(
            "{}---\napiVersion: versori.com/v1alpha1\nkind: ClusterVersoriConfig\nmetadata: {{ name: {cluster_config} }}\nspec:\n  apiUrl: {url}\n  organisationId: {org}\n  tokenSecretRef: {{ namespace: {secret_namespace}, name: platform-token, key: token }}\n",
            secret("platform-token"),
            url = emulator.base_url,
            org = emulator.organisation
        ),
        &["-n", secret_namespace],
    ));
    for (kind, name) in [
        ("versoriconfigs.versori.com", "team"),
        ("clusterversoriconfigs.versori.com", cluster_config.as_str()),
    ] {
        wait_until(
            &format!("{kind}/{name} to be Ready"),
            Duration::from_secs(60),
            operator,
            || is_ready(cluster, namespace, kind, name),
        )
        .await;
    }
    cluster_config
}

fn seed() -> String {
    std::fs::read_to_string(Path::new(MANIFEST_DIR).join("examples/emulator/seed.yaml"))
        .expect("reading the examples' emulator seed")
}

/// One test, run in sequence, because an operator watching all namespaces would also reconcile
/// the namespaced part's objects.
#[tokio::test]
async fn chart_rbac_is_sufficient_and_least_privilege() {
    let cluster = common::cluster().await;

    // 1. Cluster-wide: the chart's ClusterRole (plus the Lease Role) is all the operator needs.
    let release_ns = cluster.namespace("rbac-operator").await;
    let workload_ns = cluster.namespace("rbac-workload").await;
    let (docs, service_account, kubeconfig) = install_rendered(
        cluster,
        "vo",
        &release_ns,
        "leaderElection:\n  enabled: true\nversori:\n  organisationId: test-org\n  token: unused\n",
    );
    assert!(can_i(&kubeconfig, "list", "secrets", None));
    assert!(can_i(&kubeconfig, "watch", "connections.versori.com", None));
    assert!(!can_i(&kubeconfig, "delete", "secrets", Some(&workload_ns)));
    assert!(!can_i(
        &kubeconfig,
        "update",
        "systems.versori.com",
        Some(&workload_ns)
    ));
    assert!(!can_i(&kubeconfig, "create", "pods", Some(&release_ns)));
    assert!(!can_i(
        &kubeconfig,
        "create",
        "leases.coordination.k8s.io",
        Some(&workload_ns)
    ));
    assert!(can_i(
        &kubeconfig,
        "watch",
        "versoriconfigs.versori.com",
        None
    ));
    assert!(can_i(
        &kubeconfig,
        "watch",
        "clusterversoriconfigs.versori.com",
        None
    ));
    for (verb, resource) in [
        ("create", "versoriconfigs.versori.com"),
        ("delete", "versoriconfigs.versori.com"),
        ("create", "clusterversoriconfigs.versori.com"),
        ("update", "clusterversoriconfigs.versori.com"),
    ] {
        assert!(
            !can_i(&kubeconfig, verb, resource, None),
            "{verb} {resource}"
        );
    }

    let emulator = common::Emulator::start(&seed());
    let identity = "rbac-cluster-wide";
    let mut operator = start_operator_like_the_chart(
        cluster,
        &emulator,
        &docs,
        &kubeconfig,
        &release_ns,
        identity,
    );
    let cluster_config =
        configs_become_ready(cluster, &workload_ns, &workload_ns, &emulator, &operator).await;
    examples_become_ready(cluster, &workload_ns, &operator).await;
    // The next operator could not read this config's token Secret (nor should it).
    common::assert_success(&cluster.kubectl(&[
        "delete",
        "clusterversoriconfigs.versori.com",
        &cluster_config,
    ]));
    // The Lease was taken with the Role the chart made.
    let lease_name = env_value(operator_container(&docs), "LEASE_NAME").expect("LEASE_NAME");
    let output = cluster.kubectl(&[
        "-n",
        &release_ns,
        "get",
        "lease",
        &lease_name,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(common::assert_success(&output), identity);
    assert!(
        operator.is_running(),
        "the operator exited:\n{}",
        operator.logs()
    );
    operator.terminate(Duration::from_secs(30));
    drop(emulator);
    let _ = service_account;

    // 2. watchNamespaces: [a]: Secrets in a only, nothing cluster-wide, and still sufficient.
    let release_ns = cluster.namespace("rbac-scoped-operator").await;
    let team_a = cluster.namespace("rbac-team-a").await;
    let team_b = cluster.namespace("rbac-team-b").await;
    let config_ns = cluster.namespace("rbac-config-secrets").await;
    let (docs, service_account, kubeconfig) = install_rendered(
        cluster,
        "scoped",
        &release_ns,
        &format!(
            "watchNamespaces: [{team_a}]\nclusterConfigSecretNamespaces: [{config_ns}]\nversori:\n  organisationId: test-org\n"
        ),
    );
    assert!(can_i(&kubeconfig, "get", "secrets", Some(&team_a)));
    assert!(!can_i(&kubeconfig, "get", "secrets", Some(&team_b)));
    assert!(!can_i(&kubeconfig, "get", "secrets", Some(&release_ns)));
    assert!(!can_i(&kubeconfig, "list", "secrets", None));
    // ClusterVersoriConfig token Secrets: get, and only get, in their namespace.
    assert!(can_i(&kubeconfig, "get", "secrets", Some(&config_ns)));
    assert!(!can_i(&kubeconfig, "list", "secrets", Some(&config_ns)));
    assert!(!can_i(&kubeconfig, "watch", "secrets", Some(&config_ns)));
    // Configs: VersoriConfigs where it watches, ClusterVersoriConfigs cluster-wide.
    assert!(can_i(
        &kubeconfig,
        "list",
        "versoriconfigs.versori.com",
        Some(&team_a)
    ));
    assert!(!can_i(
        &kubeconfig,
        "list",
        "versoriconfigs.versori.com",
        Some(&team_b)
    ));
    assert!(can_i(
        &kubeconfig,
        "watch",
        "clusterversoriconfigs.versori.com",
        None
    ));
    assert!(can_i(
        &kubeconfig,
        "create",
        "events.events.k8s.io",
        Some("default")
    ));
    assert!(!can_i(&kubeconfig, "get", "secrets", Some("default")));
    assert!(!can_i(
        &kubeconfig,
        "list",
        "systems.versori.com",
        Some(&team_b)
    ));
    assert!(can_i(
        &kubeconfig,
        "patch",
        "connections.versori.com",
        Some(&team_a)
    ));
    // The same answer through impersonation, as an administrator would check it.
    let subject = format!("--as=system:serviceaccount:{release_ns}:{service_account}");
    for (namespace, expected) in [(&team_a, "yes"), (&team_b, "no")] {
        let output =
            cluster.kubectl(&["auth", "can-i", "get", "secrets", "-n", namespace, &subject]);
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), expected);
    }
    // And the API server itself refuses the read.
    let output = kubectl_as(&kubeconfig, &["-n", &team_b, "get", "secrets"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let emulator = common::Emulator::start(&seed());
    let mut operator = start_operator_like_the_chart(
        cluster,
        &emulator,
        &docs,
        &kubeconfig,
        &release_ns,
        "rbac-scoped",
    );
    let cluster_config =
        configs_become_ready(cluster, &team_a, &config_ns, &emulator, &operator).await;
    examples_become_ready(cluster, &team_a, &operator).await;
    common::assert_success(&cluster.kubectl(&[
        "delete",
        "clusterversoriconfigs.versori.com",
        &cluster_config,
    ]));
    assert!(
        operator.is_running(),
        "the operator exited:\n{}",
        operator.logs()
    );
    operator.terminate(Duration::from_secs(30));

    // Control: the operator really runs as the ServiceAccount. Pointed at a namespace the chart
    // did not grant, it stops at start-up with the RBAC error.
    let mut denied = start_operator_like_the_chart(
        cluster,
        &emulator,
        &render(
            "scoped",
            &release_ns,
            &format!("watchNamespaces: [{team_b}]\nrbac:\n  create: false\n"),
        ),
        &kubeconfig,
        &release_ns,
        "rbac-denied",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while denied.is_running() {
        assert!(
            Instant::now() < deadline,
            "the operator kept running without RBAC in {team_b}:\n{}",
            denied.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let logs = denied.logs();
    assert!(
        logs.contains("not allowed to list") && logs.contains(team_b.as_str()),
        "the operator did not report the missing RBAC:\n{logs}"
    );
}

//! The Argo CD health checks in `charts/versori-operator/argocd/` run in a real Lua 5.1 interpreter
//! (Argo CD runs them on gopher-lua, which has Lua 5.1 semantics) against objects the operator wrote.
//!
//! * The interpreter is `lua5.1` on PATH, or the file named by `$LUA5_1`; `.ci/run` installs it.
//! * Each script runs with only Lua's base library in reach and string methods switched off, as in
//!   Argo CD without `useOpenLibs`.
//! * `UPDATE_ARGOCD_FILES=1 cargo test --test argocd_health` rewrites the generated
//!   `argocd-cm-patch.yaml` and `argo-cd-values.yaml` from the scripts and, when the cluster test
//!   runs, the recorded objects under `testdata/<Health>/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::TestCluster;
use common::operator::{Operator, OperatorOptions};
use serde_json::Value;
use strum::IntoEnumIterator;
use versori_operator::controllers::conditions::{Health, Reason};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const KINDS: [&str; 5] = [
    "System",
    "ProjectSystem",
    "Connection",
    "VersoriConfig",
    "ClusterVersoriConfig",
];
const HEALTH: [&str; 4] = ["Healthy", "Progressing", "Degraded", "Suspended"];
const UPDATE: &str = "UPDATE_ARGOCD_FILES";

/// Every `Ready` reason the operator can set and the health it maps to (outside deletion: while
/// a resource is being deleted, every Ready=False reason is Progressing), from the operator's own
/// enum. docs/conditions.md and the scripts must say the same.
fn verdicts() -> Vec<(&'static str, &'static str)> {
    Reason::iter()
        .filter(|r| r.is_ready_reason())
        .map(|r| {
            let health: &'static str = match r.health() {
                Health::Healthy => "Healthy",
                Health::Progressing => "Progressing",
                Health::Suspended => "Suspended",
                Health::Degraded => "Degraded",
            };
            (r.as_str(), health)
        })
        .collect()
}

fn argocd_dir() -> PathBuf {
    Path::new(MANIFEST_DIR).join("charts/versori-operator/argocd")
}

fn script_path(kind: &str) -> PathBuf {
    argocd_dir().join(format!("health-{kind}.lua"))
}

fn script(kind: &str) -> String {
    let path = script_path(kind);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn updating() -> bool {
    std::env::var_os(UPDATE).is_some_and(|v| v == "1")
}

// ------------------------------------------------------------------------------ the Lua side

/// The Lua 5.1 interpreter: `$LUA5_1`, else `lua5.1` on PATH.
fn lua_interpreter() -> PathBuf {
    if let Some(path) = std::env::var_os("LUA5_1") {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("lua5.1"))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "lua5.1 not found on PATH: install it (`apt-get install -y lua5.1`, as .ci/run does) or \
             set LUA5_1 to a Lua 5.1 interpreter"
        )
    })
}

/// `value` as a Lua table constructor (JSON null becomes nil, as in Argo CD's conversion).
fn to_lua(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("nil"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => lua_string(s, out),
        Value::Array(items) => {
            out.push('{');
            for item in items {
                to_lua(item, out);
                out.push_str(", ");
            }
            out.push('}');
        }
        Value::Object(map) => {
            out.push('{');
            for (key, item) in map {
                out.push('[');
                lua_string(key, out);
                out.push_str("] = ");
                to_lua(item, out);
                out.push_str(", ");
            }
            out.push('}');
        }
    }
}

fn lua_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\{:03}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Runs `health-{kind}.lua` on `object` and returns Argo CD's verdict as (status, message).
fn health(kind: &str, object: &Value) -> (String, String) {
    let mut literal = String::new();
    to_lua(object, &mut literal);
    let mut script_literal = String::new();
    lua_string(&script_path(kind).to_string_lossy(), &mut script_literal);
    // Only the base library is in reach, and string methods are switched off: Argo CD opens the
    // base, table, package and a safe os library, never string (util/lua/lua.go).
    let driver = format!(
        r#"local obj = {literal}
local env = {{
  obj = obj, assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
  pcall = pcall, rawequal = rawequal, rawget = rawget, rawset = rawset, select = select,
  setmetatable = setmetatable, getmetatable = getmetatable, tonumber = tonumber,
  tostring = tostring, type = type, unpack = unpack, table = table,
}}
local chunk, err = loadfile({script_literal})
if not chunk then io.stderr:write("load: ", tostring(err), "\n") os.exit(2) end
setfenv(chunk, env)
getmetatable("").__index = {{}}
local ok, hs = pcall(chunk)
if not ok then io.stderr:write("run: ", tostring(hs), "\n") os.exit(3) end
if type(hs) ~= "table" then io.stderr:write("returned ", type(hs), ", not a table\n") os.exit(4) end
if type(hs.status) ~= "string" or type(hs.message) ~= "string" then
  io.stderr:write("status and message must be strings\n") os.exit(5)
end
io.write(hs.status, "\n", hs.message)
"#
    );
    let file = tempfile::Builder::new()
        .prefix("argocd-health-")
        .suffix(".lua")
        .tempfile()
        .expect("creating the Lua driver file");
    std::fs::write(file.path(), driver).expect("writing the Lua driver");
    let output = Command::new(lua_interpreter())
        .arg(file.path())
        .output()
        .expect("running lua5.1");
    assert!(
        output.status.success(),
        "health-{kind}.lua failed ({}): {}\nobject: {object:#}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (status, message) = stdout.split_once('\n').unwrap_or((stdout.as_str(), ""));
    assert!(
        HEALTH.contains(&status),
        "health-{kind}.lua returned status {status:?}"
    );
    (status.to_owned(), message.to_owned())
}

fn assert_health(kind: &str, object: &Value, expected: &str, what: &str) -> String {
    let (status, message) = health(kind, object);
    assert_eq!(
        status, expected,
        "{what}: health-{kind}.lua said {status} ({message:?}), expected {expected}\nobject: {object:#}"
    );
    message
}

/// An object of `kind` with a Ready condition, as the operator writes it.
fn object(kind: &str, generation: i64, ready: &str, reason: &str, message: &str) -> Value {
    serde_json::json!({
        "apiVersion": "versori.com/v1alpha1",
        "kind": kind,
        "metadata": { "name": "example", "namespace": "default", "generation": generation },
        "spec": {},
        "status": {
            "observedGeneration": generation,
            "conditions": [{
                "type": "Ready",
                "status": ready,
                "reason": reason,
                "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }],
        },
    })
}

// ---------------------------------------------------------------------------- generated files

const GENERATED_NOTE: &str = "# Generated from the health-<Kind>.lua scripts by tests/argocd_health.rs: edit the scripts,\n\
# then run `UPDATE_ARGOCD_FILES=1 cargo test --test argocd_health`.\n";

fn config_key(kind: &str) -> String {
    format!("resource.customizations.health.versori.com_{kind}")
}

/// The scripts as YAML block scalars under `keys_indent` spaces.
fn script_entries(keys_indent: usize) -> String {
    let mut out = String::new();
    for kind in KINDS {
        let text = script(kind);
        assert!(
            text.ends_with('\n') && !text.ends_with("\n\n"),
            "health-{kind}.lua must end with one newline"
        );
        assert!(
            !text.contains('\t'),
            "health-{kind}.lua must indent with spaces (YAML block scalar)"
        );
        out.push_str(&format!("{:keys_indent$}{}: |\n", "", config_key(kind)));
        for line in text.lines() {
            assert!(
                line.trim_end() == line,
                "health-{kind}.lua has trailing whitespace: {line:?}"
            );
            if line.is_empty() {
                out.push('\n');
            } else {
                out.push_str(&format!("{:width$}{line}\n", "", width = keys_indent + 2));
            }
        }
    }
    out
}

fn render_configmap_patch() -> String {
    format!(
        "# Argo CD health checks for System, ProjectSystem, Connection, VersoriConfig and\n\
         # ClusterVersoriConfig (versori.com/v1alpha1), to merge into Argo CD's argocd-cm ConfigMap\n\
         # (docs/argocd.md):\n\
         #   kubectl -n argocd patch configmap argocd-cm --type merge \\\n\
         #     --patch-file charts/versori-operator/argocd/argocd-cm-patch.yaml\n\
         {GENERATED_NOTE}\
         apiVersion: v1\n\
         kind: ConfigMap\n\
         metadata:\n  name: argocd-cm\n\
         data:\n{}",
        script_entries(2)
    )
}

fn render_helm_values() -> String {
    format!(
        "# Argo CD health checks for System, ProjectSystem, Connection, VersoriConfig and\n\
         # ClusterVersoriConfig (versori.com/v1alpha1), as values for the argo-cd Helm chart\n\
         # (docs/argocd.md):\n\
         #   helm upgrade argocd argo/argo-cd -n argocd --reuse-values \\\n\
         #     -f charts/versori-operator/argocd/argo-cd-values.yaml\n\
         {GENERATED_NOTE}\
         configs:\n  cm:\n{}",
        script_entries(4)
    )
}

fn check_generated(file: &str, rendered: &str) {
    let path = argocd_dir().join(file);
    if updating() {
        std::fs::write(&path, rendered)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == rendered,
        "{} differs from the health-*.lua scripts: run `{UPDATE}=1 cargo test --test argocd_health` \
         and commit the result",
        path.display()
    );
}

/// The scripts as the YAML file hands them to Argo CD: `path` into the document, then the keys.
fn scripts_in_yaml(file: &str, path: &[&str]) -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(argocd_dir().join(file)).expect("reading the generated file");
    let document: serde_yaml::Value =
        serde_yaml::from_str(&text).expect("the generated file is YAML");
    let mut node = &document;
    for key in path {
        node = &node[*key];
    }
    let map = node.as_mapping().expect("a mapping of health checks");
    map.iter()
        .map(|(k, v)| {
            (
                k.as_str().expect("string key").to_owned(),
                v.as_str().expect("string value").to_owned(),
            )
        })
        .collect()
}

fn assert_holds_the_scripts(file: &str, entries: Vec<(String, String)>) {
    let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    let expected: Vec<String> = KINDS.iter().map(|k| config_key(k)).collect();
    assert_eq!(keys, expected, "{file}: keys");
    for (kind, (_, value)) in KINDS.iter().zip(&entries) {
        assert!(
            *value == script(kind),
            "{file}: the {kind} entry is not health-{kind}.lua byte for byte"
        );
    }
}

#[test]
fn configmap_patch_matches_scripts() {
    check_generated("argocd-cm-patch.yaml", &render_configmap_patch());
    assert_holds_the_scripts(
        "argocd-cm-patch.yaml",
        scripts_in_yaml("argocd-cm-patch.yaml", &["data"]),
    );
}

#[test]
fn helm_values_match_scripts() {
    check_generated("argo-cd-values.yaml", &render_helm_values());
    assert_holds_the_scripts(
        "argo-cd-values.yaml",
        scripts_in_yaml("argo-cd-values.yaml", &["configs", "cm"]),
    );
}

#[test]
fn scripts_differ_only_in_their_kind() {
    let logic = |kind: &str| -> String {
        let text = script(kind);
        let kind_line = format!("local kind = \"{kind}\"");
        assert!(
            text.lines().any(|l| l == kind_line),
            "health-{kind}.lua has the line {kind_line}"
        );
        let first = text.lines().next().unwrap_or_default().to_owned();
        assert!(
            first.contains(&config_key(kind)),
            "health-{kind}.lua names its argocd-cm key on line 1"
        );
        text.lines()
            .skip(1)
            .filter(|l| *l != kind_line)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let system = logic("System");
    for kind in KINDS.into_iter().skip(1) {
        assert!(
            logic(kind) == system,
            "health-{kind}.lua and health-System.lua differ beyond the kind"
        );
    }
}

// ------------------------------------------------------------------------ reasons and verdicts

#[test]
fn every_condition_reason_has_a_verdict() {
    // Every non-Healthy verdict but Progressing (the scripts' fallback) is named in a script.
    let script = script("System");
    for (reason, verdict) in verdicts() {
        if verdict != "Progressing" && verdict != "Healthy" {
            assert!(
                script.contains(&format!("  {reason} = true")),
                "health-System.lua does not list {reason} ({verdict})"
            );
        }
    }
    let docs = std::fs::read_to_string(Path::new(MANIFEST_DIR).join("docs/conditions.md"))
        .expect("reading docs/conditions.md");
    for (reason, verdict) in verdicts() {
        let row = docs
            .lines()
            .find(|l| l.starts_with(&format!("| `{reason}` |")))
            .unwrap_or_else(|| panic!("docs/conditions.md has no table row for `{reason}`"));
        let health_cell = row
            .trim_end_matches('|')
            .rsplit('|')
            .next()
            .unwrap_or_default();
        assert!(
            health_cell.contains(verdict),
            "docs/conditions.md says {health_cell:?} for {reason}, the scripts say {verdict}"
        );
    }
}

#[test]
fn every_reason_gets_its_verdict_on_every_kind() {
    for kind in KINDS {
        for (reason, verdict) in verdicts() {
            let ready = if verdict == "Healthy" {
                "True"
            } else {
                "False"
            };
            let message = format!("the message for {reason}");
            let object = object(kind, 3, ready, reason, &message);
            let said = assert_health(kind, &object, verdict, reason);
            assert_eq!(said, message, "the verdict carries the condition's message");

            // While the resource is being deleted, every Ready=False reason waits.
            let mut deleting = object.clone();
            deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
            let expected = if verdict == "Healthy" {
                "Healthy"
            } else {
                "Progressing"
            };
            assert_health(
                kind,
                &deleting,
                expected,
                &format!("{reason} while deleting"),
            );
        }
    }
}

#[test]
fn edge_cases() {
    for kind in KINDS {
        // No status at all, an empty status, conditions without Ready.
        let mut fresh = object(kind, 1, "True", "Available", "ok");
        fresh.as_object_mut().expect("an object").remove("status");
        let message = assert_health(kind, &fresh, "Progressing", "no status");
        assert!(message.contains(kind), "{message}");
        fresh["status"] = serde_json::json!({});
        assert_health(kind, &fresh, "Progressing", "empty status");
        fresh["status"] =
            serde_json::json!({ "conditions": [{ "type": "Other", "status": "True" }] });
        assert_health(kind, &fresh, "Progressing", "no Ready condition");

        // Generation behind: Progressing whatever Ready says.
        for (ready, reason) in [
            ("True", "Available"),
            ("False", "SecretNotFound"),
            ("False", "AuthorizationRequired"),
        ] {
            let mut behind = object(kind, 2, ready, reason, "old news");
            behind["metadata"]["generation"] = 3.into();
            let message = assert_health(
                kind,
                &behind,
                "Progressing",
                &format!("generation behind, {reason}"),
            );
            assert!(
                message.contains("generation 3") && message.contains("generation 2"),
                "{message}"
            );
        }

        // The condition's observedGeneration wins over status.observedGeneration...
        let mut stale_condition = object(kind, 3, "True", "Available", "ok");
        stale_condition["status"]["conditions"][0]["observedGeneration"] = 2.into();
        assert_health(
            kind,
            &stale_condition,
            "Progressing",
            "condition behind, status current",
        );
        // ...and status.observedGeneration stands in when the condition has none.
        let mut no_condition_generation = object(kind, 3, "True", "Available", "ok");
        no_condition_generation["status"]["conditions"][0]
            .as_object_mut()
            .expect("a condition")
            .remove("observedGeneration");
        assert_health(
            kind,
            &no_condition_generation,
            "Healthy",
            "status.observedGeneration only",
        );
        no_condition_generation["status"]["observedGeneration"] = 2.into();
        assert_health(
            kind,
            &no_condition_generation,
            "Progressing",
            "status.observedGeneration behind",
        );
        no_condition_generation["status"]
            .as_object_mut()
            .expect("a status")
            .remove("observedGeneration");
        assert_health(
            kind,
            &no_condition_generation,
            "Progressing",
            "no observedGeneration anywhere",
        );

        // Argo CD may hand numbers over as strings (json.Number).
        let mut strings = object(kind, 7, "True", "Available", "ok");
        strings["metadata"]["generation"] = "7".into();
        strings["status"]["conditions"][0]["observedGeneration"] = "7".into();
        assert_health(kind, &strings, "Healthy", "generations as strings");

        // Ready=Unknown and reasons the script does not know wait instead of failing a sync.
        assert_health(
            kind,
            &object(kind, 1, "Unknown", "Creating", "creating"),
            "Progressing",
            "Ready=Unknown",
        );
        assert_health(
            kind,
            &object(kind, 1, "False", "SomethingNew", "new"),
            "Progressing",
            "unknown reason",
        );

        // Ready with a failed last reconcile: Healthy, and the message says what failed.
        let mut unsynced = object(kind, 4, "True", "Available", "Versori object has ID X");
        let synced_false = serde_json::json!({
            "type": "Synced", "status": "False", "reason": "VersoriAPIError",
            "message": "reading the Versori object: HTTP 503", "observedGeneration": 4,
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        });
        if let Some(conditions) = unsynced["status"]["conditions"].as_array_mut() {
            conditions.push(synced_false);
        }
        let message = assert_health(kind, &unsynced, "Healthy", "Ready, Synced=False");
        assert!(
            message.starts_with("Versori object has ID X") && message.contains("HTTP 503"),
            "{message}"
        );
        unsynced["status"]["conditions"][1]["status"] = "True".into();
        unsynced["status"]["conditions"][1]["message"] = "".into();
        let message = assert_health(kind, &unsynced, "Healthy", "Ready, Synced=True");
        assert_eq!(message, "Versori object has ID X");

        // An empty message falls back to the reason.
        let (_, message) = health(kind, &object(kind, 1, "False", "SecretNotFound", ""));
        assert_eq!(message, "SecretNotFound");

        paused_edge_cases(kind);
    }
}

/// `versori.com/paused: "true"`: Synced=False reason Paused, Ready kept as it was.
fn paused_edge_cases(kind: &str) {
    const HELD: &str = "the versori.com/paused annotation is \"true\": nothing is written";
    let paused = |ready: Option<(&str, &str)>, generation: i64, ready_generation: i64| {
        let mut object = object(
            kind,
            generation,
            "True",
            "Available",
            "Versori object has ID X",
        );
        object["metadata"]["annotations"] = serde_json::json!({ "versori.com/paused": "true" });
        let synced = serde_json::json!({
            "type": "Synced", "status": "False", "reason": "Paused", "message": HELD,
            "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z",
        });
        let conditions = object["status"]["conditions"]
            .as_array_mut()
            .expect("conditions");
        match ready {
            Some((status, reason)) => {
                conditions[0]["status"] = status.into();
                conditions[0]["reason"] = reason.into();
                conditions[0]["observedGeneration"] = ready_generation.into();
            }
            None => conditions.clear(),
        }
        conditions.push(synced);
        object
    };
    // Ready kept True, False for any reason, or never set (paused from the start): Suspended,
    // with Synced's message.
    for ready in [
        Some(("True", "Available")),
        Some(("False", "SecretNotFound")),
        Some(("False", "VersoriAPIError")),
        None,
    ] {
        let message = assert_health(
            kind,
            &paused(ready, 4, 4),
            "Suspended",
            &format!("paused, Ready {ready:?}"),
        );
        assert_eq!(message, HELD);
    }
    // A spec change held by the pause: Ready is for an older generation, still Suspended.
    assert_health(
        kind,
        &paused(Some(("True", "Available")), 5, 4),
        "Suspended",
        "paused, Ready behind",
    );
    // A deletion held by the pause (the finalizer stays): Suspended.
    let mut deleting = paused(Some(("True", "Available")), 4, 4);
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
    assert_health(kind, &deleting, "Suspended", "paused while deleting");
    // An empty message falls back to the reason.
    let mut bare = paused(None, 4, 4);
    bare["status"]["conditions"][0]["message"] = "".into();
    let message = assert_health(kind, &bare, "Suspended", "paused, no message");
    assert_eq!(message, "Paused");
    // The annotation removed, the operator not caught up yet: Progressing, not Healthy.
    for annotations in [
        serde_json::json!({}),
        serde_json::json!({ "versori.com/paused": "false" }),
    ] {
        let mut resumed = paused(Some(("True", "Available")), 4, 4);
        resumed["metadata"]["annotations"] = annotations;
        let message = assert_health(kind, &resumed, "Progressing", "unpaused, Synced stale");
        assert!(message.contains("paused"), "{message}");
    }
    // The annotation alone, before the operator has seen it: judged as usual.
    let mut annotated = object(kind, 4, "True", "Available", "ok");
    annotated["metadata"]["annotations"] = serde_json::json!({ "versori.com/paused": "true" });
    assert_health(kind, &annotated, "Healthy", "annotated, not yet held");
}

/// `testdata/<Health>/*.json`: objects recorded from the operator by the cluster test below.
#[test]
fn recorded_objects_get_their_verdicts() {
    let root = argocd_dir().join("testdata");
    let Ok(dirs) = std::fs::read_dir(&root) else {
        return;
    };
    let mut checked = 0;
    for dir in dirs {
        let dir = dir.expect("a directory entry").path();
        let expected = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        assert!(
            HEALTH.contains(&expected.as_str()),
            "{} is not named after a health status",
            dir.display()
        );
        for file in std::fs::read_dir(&dir).expect("reading a testdata directory") {
            let file = file.expect("a directory entry").path();
            let text = std::fs::read_to_string(&file).expect("reading a recorded object");
            let object: Value = serde_json::from_str(&text).expect("a recorded object is JSON");
            let kind = object["kind"]
                .as_str()
                .expect("a recorded object has a kind")
                .to_owned();
            assert_health(&kind, &object, &expected, &file.display().to_string());
            checked += 1;
        }
    }
    assert!(checked > 0, "no recorded objects under {}", root.display());
}

// ------------------------------------------------------------------ against the real operator

fn seed() -> String {
    std::fs::read_to_string(Path::new(MANIFEST_DIR).join("examples/emulator/seed.yaml"))
        .expect("read the examples' emulator seed")
}

struct Recorder {
    cluster: &'static TestCluster,
    namespace: String,
    recorded: Vec<(String, String, Value)>,
}

impl Recorder {
    fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        common::assert_success(&self.cluster.kubectl(&all))
    }

    fn apply(&self, yaml: &str) {
        common::assert_success(
            &self
                .cluster
                .kubectl_apply_stdin(yaml, &["-n", &self.namespace]),
        );
    }

    fn get(&self, kind: &str, name: &str) -> Value {
        let json = self.kubectl(&["get", kind, name, "-o", "json"]);
        serde_json::from_str(&json).expect("kubectl get -o json prints JSON")
    }

    /// Polls until `kind/name`'s Ready condition has `reason` and returns the object.
    fn wait_reason(&self, operator: &Operator, kind: &str, name: &str, reason: &str) -> Value {
        self.wait_condition(operator, kind, name, "Ready", reason)
    }

    /// Polls until `kind/name`'s condition `type_` has `reason` and returns the object.
    fn wait_condition(
        &self,
        operator: &Operator,
        kind: &str,
        name: &str,
        type_: &str,
        reason: &str,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let object = self.get(kind, name);
            let current = condition(&object, type_)
                .map(|c| c["reason"].as_str().unwrap_or_default().to_owned());
            if current.as_deref() == Some(reason) {
                return object;
            }
            if Instant::now() > deadline {
                let logs = operator.logs();
                let tail: Vec<&str> = logs.lines().rev().take(30).collect();
                panic!(
                    "{kind}/{name} did not reach {type_} reason {reason} in 60 s (now {current:?})\noperator log tail:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs the script for the object's kind, asserts the verdict and keeps the object for
    /// `testdata/<Health>/<file>.json`.
    fn check(&mut self, object: Value, expected: &str, file: &str) -> String {
        let kind = object["kind"]
            .as_str()
            .expect("the object has a kind")
            .to_owned();
        let message = assert_health(&kind, &object, expected, file);
        self.recorded
            .push((expected.to_owned(), file.to_owned(), object));
        message
    }

    fn write_fixtures(&self) {
        let root = argocd_dir().join("testdata");
        let _ = std::fs::remove_dir_all(&root);
        for (health, file, object) in &self.recorded {
            let dir = root.join(health);
            std::fs::create_dir_all(&dir).expect("creating a testdata directory");
            let text = serde_json::to_string_pretty(object).expect("JSON") + "\n";
            std::fs::write(dir.join(format!("{file}.json")), text)
                .expect("writing a recorded object");
        }
    }
}

fn ready(object: &Value) -> Option<&Value> {
    condition(object, "Ready")
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// The resources reach each state through the real operator and emulator; the scripts judge
/// the objects exactly as `kubectl get -o json` returns them.
#[tokio::test]
async fn verdicts_on_objects_the_operator_wrote() {
    lua_interpreter();
    let cluster = common::cluster().await;
    let namespace = cluster.namespace("argocd-health").await;
    let emulator = common::Emulator::start(&seed());
    let mut operator = Operator::start(cluster, &emulator, &OperatorOptions::new(&namespace));
    let mut r = Recorder {
        cluster,
        namespace,
        recorded: Vec::new(),
    };

    let examples = Path::new(MANIFEST_DIR).join("examples");
    r.kubectl(&["apply", "-f", &examples.to_string_lossy()]);
    r.apply(
        r#"apiVersion: versori.com/v1alpha1
kind: ProjectSystem
metadata: { name: lonely }
spec:
  projectId: 01KKBR46SH7JES8AZ14EEAK0CX
  environment: production
  systemRef: { name: no-such-system }
---
apiVersion: versori.com/v1alpha1
kind: Connection
metadata: { name: no-secret }
spec:
  projectSystemRef: { name: example-oauth2 }
  credentials:
    apiKey:
      secretKeyRef: { name: no-such-secret, key: apiKey }
---
apiVersion: versori.com/v1alpha1
kind: Connection
metadata: { name: no-key }
spec:
  projectSystemRef: { name: example-oauth2 }
---
apiVersion: versori.com/v1alpha1
kind: Connection
metadata: { name: shopify-store }
spec:
  projectSystemRef: { name: shopify }
---
apiVersion: versori.com/v1alpha1
kind: Connection
metadata: { name: no-template }
spec:
  projectSystemRef: { name: no-such-projectsystem }
  credentials: { bypass: true }
"#,
    );

    // Ready: the examples.
    for (kind, name) in [
        ("system", "shopify"),
        ("system", "example-oauth2"),
        ("projectsystem", "shopify"),
        ("projectsystem", "example-oauth2"),
        ("connection", "demo-api-key"),
    ] {
        let object = r.wait_reason(&operator, kind, name, "Available");
        r.check(object, "Healthy", &format!("{kind}-{name}-ready"));
    }

    // Waiting on a resource that may still come: Progressing.
    let object = r.wait_reason(&operator, "projectsystem", "lonely", "WaitingForSystem");
    let message = r.check(object, "Progressing", "projectsystem-waiting-for-system");
    assert!(message.contains("no-such-system"), "{message}");
    let object = r.wait_reason(
        &operator,
        "connection",
        "no-template",
        "WaitingForProjectSystem",
    );
    r.check(
        object,
        "Progressing",
        "connection-waiting-for-projectsystem",
    );

    // Needs the user: Degraded, with the operator's message.
    let object = r.wait_reason(&operator, "connection", "no-secret", "SecretNotFound");
    let message = r.check(object, "Degraded", "connection-secret-not-found");
    assert!(message.contains("no-such-secret"), "{message}");
    let object = r.wait_reason(&operator, "connection", "no-key", "MissingCredential");
    let message = r.check(object, "Degraded", "connection-missing-credential");
    assert_eq!(message, "api-key is required for this connection template");

    // Waits for a person to authorize in a browser: Suspended.
    let object = r.wait_reason(
        &operator,
        "connection",
        "shopify-store",
        "AuthorizationRequired",
    );
    let message = r.check(object, "Suspended", "connection-authorization-required");
    assert!(message.contains("authorization code"), "{message}");

    // Versori configs: Ready when the token reaches the organisation, Degraded without the
    // token's Secret. Not named `default`, so the examples keep the operator's own settings.
    let cluster_config = common::unique_name("argocd-health");
    r.apply(&format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{ name: other-token }}
stringData: {{ token: "{token}" }}
---
apiVersion: versori.com/v1alpha1
kind: VersoriConfig
metadata: {{ name: other }}
spec:
  apiUrl: {url}
  organisationId: {organisation}
  tokenSecretRef: {{ name: other-token, key: token }}
---
apiVersion: versori.com/v1alpha1
kind: VersoriConfig
metadata: {{ name: no-token }}
spec:
  apiUrl: {url}
  organisationId: {organisation}
  tokenSecretRef: {{ name: no-such-token, key: token }}
---
apiVersion: versori.com/v1alpha1
kind: ClusterVersoriConfig
metadata: {{ name: {cluster_config} }}
spec:
  apiUrl: {url}
  organisationId: {organisation}
  tokenSecretRef: {{ namespace: {namespace}, name: other-token, key: token }}
"#,
        token = emulator.token,
        url = emulator.base_url,
        organisation = emulator.organisation,
        namespace = r.namespace,
    ));
    let object = r.wait_reason(&operator, "versoriconfig", "other", "Available");
    r.check(object, "Healthy", "versoriconfig-ready");
    let object = r.wait_reason(&operator, "versoriconfig", "no-token", "SecretNotFound");
    let message = r.check(object, "Degraded", "versoriconfig-secret-not-found");
    assert!(message.contains("no-such-token"), "{message}");
    let object = r.wait_reason(
        &operator,
        "clusterversoriconfig",
        &cluster_config,
        "Available",
    );
    r.check(object, "Healthy", "clusterversoriconfig-ready");

    // With the operator stopped, nothing catches up with a spec change or a new resource.
    operator.kill();
    // Generation behind: a real spec patch of a Ready Connection (not an edited fixture).
    let before = r.get("connection", "demo-api-key");
    r.kubectl(&[
        "patch",
        "connection",
        "demo-api-key",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"baseUrl":"https://override.example.com/"}}"#,
    ]);
    let behind = r.get("connection", "demo-api-key");
    assert_eq!(
        behind["metadata"]["generation"].as_i64(),
        before["metadata"]["generation"].as_i64().map(|g| g + 1),
        "the spec patch bumped the generation"
    );
    assert_eq!(
        ready(&behind).map(|c| c["status"].clone()),
        Some("True".into()),
        "still Ready=True, for the previous generation"
    );
    let message = r.check(behind, "Progressing", "connection-generation-behind");
    assert!(message.contains("generation"), "{message}");

    // No status: a resource created while no operator runs.
    r.apply(
        r#"apiVersion: versori.com/v1alpha1
kind: System
metadata: { name: fresh }
spec:
  domain: fresh.example.com
  templateBaseUrl: https://fresh.example.com/
"#,
    );
    let fresh = r.get("system", "fresh");
    assert!(
        ready(&fresh).is_none(),
        "no operator has written a status yet"
    );
    r.check(fresh, "Progressing", "system-no-status");

    // InUse, with the operator running again.
    let operator = Operator::start(cluster, &emulator, &OperatorOptions::new(&r.namespace));
    // Outside deletion: an auth scheme removed from the spec that a template still uses.
    r.kubectl(&[
        "patch",
        "system",
        "example-oauth2",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/spec/authSchemes/1"}]"#,
    ]);
    let object = r.wait_reason(&operator, "system", "example-oauth2", "InUse");
    r.check(object, "Degraded", "system-auth-scheme-in-use");
    // While deleting: the System waits for its ProjectSystem to go.
    r.kubectl(&["delete", "system", "shopify", "--wait=false"]);
    let object = r.wait_reason(&operator, "system", "shopify", "Deleting");
    assert!(
        object["metadata"]["deletionTimestamp"].is_string(),
        "shopify is being deleted"
    );
    let synced = object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Synced"))
        .map(|c| c["reason"].clone());
    assert_eq!(
        synced,
        Some("InUse".into()),
        "Synced says why the delete waits"
    );
    r.check(object, "Progressing", "system-deleting-in-use");

    // Paused: the System made while no operator ran is Ready now; the annotation holds it.
    r.wait_reason(&operator, "system", "fresh", "Available");
    r.kubectl(&["annotate", "system", "fresh", "versori.com/paused=true"]);
    let object = r.wait_condition(&operator, "system", "fresh", "Synced", "Paused");
    let message = r.check(object, "Suspended", "system-paused");
    assert!(message.contains("versori.com/paused"), "{message}");

    if updating() {
        r.write_fixtures();
    }
}

/// The patch file merges into a real argocd-cm as the docs say (`kubectl patch --type merge`),
/// leaving its other keys alone.
#[tokio::test]
async fn configmap_patch_merges_into_argocd_cm() {
    let cluster = common::cluster().await;
    let namespace = cluster.namespace("argocd").await;
    let kubectl = |args: &[&str]| {
        let mut all = vec!["-n", namespace.as_str()];
        all.extend_from_slice(args);
        common::assert_success(&cluster.kubectl(&all))
    };
    kubectl(&[
        "create",
        "configmap",
        "argocd-cm",
        "--from-literal=url=https://argocd.example.com",
    ]);
    let patch = argocd_dir().join("argocd-cm-patch.yaml");
    kubectl(&[
        "patch",
        "configmap",
        "argocd-cm",
        "--type",
        "merge",
        "--patch-file",
        &patch.to_string_lossy(),
    ]);
    let cm: Value =
        serde_json::from_str(&kubectl(&["get", "configmap", "argocd-cm", "-o", "json"]))
            .expect("JSON");
    assert_eq!(cm["data"]["url"], "https://argocd.example.com");
    for kind in KINDS {
        assert_eq!(
            cm["data"][config_key(kind)].as_str(),
            Some(script(kind).as_str()),
            "{kind}"
        );
    }
}

//! Static checks of the `Dockerfile` and `.dockerignore` (there is no Docker engine in CI): pinned
//! base images, a multi-stage build of exactly Cargo.lock's dependencies, a non-root final stage,
//! no remote `ADD`, and the right entrypoint.

use std::path::Path;
use std::process::Command;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// One instruction: the keyword in upper case, and its arguments with continuations joined.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
    line: usize,
}

/// Parses a Dockerfile: drops comments and blank lines (also inside continuations, as Docker
/// does) and joins lines ending in `\`.
fn parse(text: &str) -> Vec<Instruction> {
    let mut instructions = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (body, continues) = match trimmed.strip_suffix('\\') {
            Some(body) => (body.trim_end(), true),
            None => (trimmed, false),
        };
        let (line, mut text) = current.take().unwrap_or((index + 1, String::new()));
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(body);
        if continues {
            current = Some((line, text));
        } else {
            instructions.push(split(line, &text));
        }
    }
    if let Some((line, text)) = current {
        instructions.push(split(line, &text));
    }
    instructions
}

fn split(line: usize, text: &str) -> Instruction {
    let (keyword, args) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    Instruction {
        keyword: keyword.to_ascii_uppercase(),
        args: args.trim().to_owned(),
        line,
    }
}

/// The instructions grouped by stage (each starting with its FROM).
fn stages(instructions: &[Instruction]) -> Vec<Vec<Instruction>> {
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for instruction in instructions {
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push(instruction.clone());
        }
    }
    stages
}

/// `FROM [--flag=..] image [AS name]` -> (image, name).
fn from_parts(args: &str) -> (String, Option<String>) {
    let words: Vec<&str> = args
        .split_whitespace()
        .filter(|w| !w.starts_with("--"))
        .collect();
    let image = words.first().copied().unwrap_or_default().to_owned();
    let name = match words.as_slice() {
        [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_ascii_lowercase()),
        _ => None,
    };
    (image, name)
}

/// The tag of `registry/path/image:tag[@digest]`, if any.
fn image_tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split_once(':').map(|(_, tag)| tag)
}

/// A JSON-array (exec form) argument list.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| {
        panic!("expected the exec form [\"...\"], got {args:?}: {e}");
    })
}

fn dockerfile() -> Vec<Instruction> {
    let path = Path::new(MANIFEST_DIR).join("Dockerfile");
    let text = std::fs::read_to_string(&path).expect("reading Dockerfile");
    parse(&text)
}

#[test]
fn parser_joins_continuations_and_skips_comments() {
    let parsed = parse(
        "# syntax=docker/dockerfile:1\nFROM a:1 AS b\nRUN one \\\n  # comment\n  two\n\nrun three\n",
    );
    let shown: Vec<(String, String)> = parsed
        .iter()
        .map(|i| (i.keyword.clone(), i.args.clone()))
        .collect();
    assert_eq!(
        shown,
        [
            ("FROM".to_owned(), "a:1 AS b".to_owned()),
            ("RUN".to_owned(), "one two".to_owned()),
            ("RUN".to_owned(), "three".to_owned()),
        ]
    );
    assert_eq!(
        image_tag("gcr.io/distroless/cc-debian12:nonroot"),
        Some("nonroot")
    );
    assert_eq!(image_tag("localhost:5000/rust"), None);
    assert_eq!(image_tag("rust:1.95@sha256:abc"), Some("1.95"));
}

#[test]
fn base_images_are_pinned_and_the_build_is_multi_stage() {
    let instructions = dockerfile();
    let stages = stages(&instructions);
    assert!(
        stages.len() >= 2,
        "expected a multi-stage build, found {} stage(s)",
        stages.len()
    );
    let mut stage_names: Vec<String> = Vec::new();
    for stage in &stages {
        let (image, name) = from_parts(&stage[0].args);
        let line = stage[0].line;
        if !stage_names.contains(&image.to_ascii_lowercase()) {
            assert!(
                !image.contains('$'),
                "line {line}: FROM {image}: pin the image literally, not through an ARG"
            );
            let pinned_by_digest = image.contains("@sha256:");
            match image_tag(&image) {
                Some("latest") => panic!("line {line}: FROM {image} uses the tag latest"),
                Some(_) => {}
                None if pinned_by_digest => {}
                None => panic!("line {line}: FROM {image} is not pinned to a tag"),
            }
        }
        if let Some(name) = name {
            stage_names.push(name);
        }
    }
    // The final stage copies the binary from an earlier one instead of building in place.
    let last = stages.last().unwrap();
    assert!(
        last.iter()
            .any(|i| i.keyword == "COPY" && i.args.contains("--from=")),
        "the final stage copies nothing from a build stage"
    );
    assert!(
        !last
            .iter()
            .any(|i| i.keyword == "RUN" && i.args.contains("cargo")),
        "the final stage runs cargo"
    );
}

#[test]
fn cargo_builds_are_locked_and_nothing_is_fetched_by_add() {
    let instructions = dockerfile();
    let builds: Vec<&Instruction> = instructions
        .iter()
        .filter(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .collect();
    assert!(!builds.is_empty(), "no RUN cargo build");
    for build in builds {
        assert!(
            build.args.contains("--locked"),
            "line {}: cargo build without --locked",
            build.line
        );
        assert!(
            build.args.contains("--bin versori-operator"),
            "line {}: cargo build does not name --bin versori-operator",
            build.line
        );
    }
    for add in instructions.iter().filter(|i| i.keyword == "ADD") {
        let lower = add.args.to_ascii_lowercase();
        assert!(
            !(lower.contains("http://") || lower.contains("https://") || lower.contains("git@")),
            "line {}: ADD of a remote URL; fetch in a RUN with a checksum, or COPY",
            add.line
        );
    }
}

#[test]
fn final_stage_runs_the_operator_as_non_root() {
    let instructions = dockerfile();
    let stages = stages(&instructions);
    let last = stages.last().expect("a stage");
    let user = last
        .iter()
        .rev()
        .find(|i| i.keyword == "USER")
        .expect("the final stage sets no USER");
    let uid = user.args.split(':').next().unwrap_or_default();
    assert!(
        !(uid == "root" || uid == "0" || uid.is_empty()),
        "line {}: the final stage runs as {:?}",
        user.line,
        user.args
    );
    assert_eq!(
        uid, "65532",
        "the chart's securityContext expects UID 65532"
    );

    let entrypoint = last
        .iter()
        .rev()
        .find(|i| i.keyword == "ENTRYPOINT")
        .expect("the final stage has no ENTRYPOINT");
    let entrypoint = exec_form(&entrypoint.args);
    assert!(
        entrypoint
            .first()
            .is_some_and(|p| p.ends_with("/versori-operator")),
        "ENTRYPOINT {entrypoint:?} does not run versori-operator"
    );
    let cmd: Vec<String> = last
        .iter()
        .rev()
        .find(|i| i.keyword == "CMD")
        .map(|i| exec_form(&i.args))
        .unwrap_or_default();
    let argv: Vec<&String> = entrypoint.iter().chain(cmd.iter()).collect();
    assert!(
        argv.get(1).is_some_and(|a| *a == "run"),
        "ENTRYPOINT + CMD {argv:?} do not run `versori-operator run`"
    );
    // The binary the ENTRYPOINT names is the one copied in.
    assert!(
        last.iter()
            .any(|i| i.keyword == "COPY" && i.args.ends_with(&entrypoint[0])),
        "nothing is copied to {}",
        entrypoint[0]
    );
    assert!(
        last.iter()
            .any(|i| i.keyword == "ENV" && i.args.replace(' ', "=").contains("LOG_FORMAT=json")),
        "the final stage does not set LOG_FORMAT=json"
    );
}

#[test]
fn dockerignore_keeps_build_output_and_test_state_out() {
    let text = std::fs::read_to_string(Path::new(MANIFEST_DIR).join(".dockerignore"))
        .expect("reading .dockerignore");
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let excludes = |name: &str| {
        patterns.iter().any(|p| {
            let p = p.trim_start_matches('/').trim_end_matches('/');
            p == name || p == format!("**/{name}")
        })
    };
    for name in ["target", ".git", ".test-clusters"] {
        assert!(excludes(name), ".dockerignore does not exclude {name}");
    }
    // Whatever the Dockerfile copies from the context must not be ignored.
    for needed in ["Cargo.toml", "Cargo.lock", "src", "crates"] {
        assert!(
            !excludes(needed),
            ".dockerignore excludes {needed}, which the build needs"
        );
    }
}

#[test]
fn build_inputs_are_copied_and_cargo_lock_is_current() {
    let instructions = dockerfile();
    let copied: Vec<&str> = instructions
        .iter()
        .filter(|i| i.keyword == "COPY" && !i.args.contains("--from="))
        .flat_map(|i| {
            let words: Vec<&str> = i.args.split_whitespace().collect();
            words[..words.len().saturating_sub(1)].to_vec()
        })
        .collect();
    for needed in ["Cargo.toml", "Cargo.lock", "src", "crates"] {
        assert!(
            copied.iter().any(|c| c.trim_end_matches('/') == needed),
            "the Dockerfile does not COPY {needed}"
        );
    }
    if Path::new(MANIFEST_DIR).join("build.rs").exists() {
        assert!(
            copied.contains(&"build.rs"),
            "the Dockerfile does not COPY build.rs"
        );
    }
    // `cargo build --locked` in the image fails when Cargo.lock is stale; find out here. With
    // network access allowed: on a fresh machine the crates of other platforms (Windows) were
    // never downloaded, and metadata needs them all, so an offline call would fail there.
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--locked", "--format-version=1"])
        .current_dir(MANIFEST_DIR)
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "Cargo.lock is not up to date (the image's `cargo build --locked` would fail): {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

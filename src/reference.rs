//! The Markdown reference of the custom resources, rendered from their CRD schemas: every field
//! with its path, type, whether it is required, its description, enum values, limits and the
//! messages of its validation rules. `versori-operator reference` prints it; `docs/reference.md`
//! holds the output and `tests/reference_docs.rs` fails when the two differ.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};

/// The reference of the operator's CRDs (`versori-operator reference`).
pub fn markdown() -> String {
    render(&crate::resources::crds())
}

/// The reference of `crds`, one section per kind, in the order given.
pub fn render(crds: &[CustomResourceDefinition]) -> String {
    let mut out = String::new();
    out.push_str("# API reference\n\n");
    out.push_str(
        "<!-- Generated from the CRD schemas by `versori-operator reference`; do not edit by hand:\n     \
         cargo run --quiet --bin versori-operator -- reference > docs/reference.md -->\n\n",
    );
    out.push_str(
        "Every field of the custom resources, as the apiserver validates it. Defaults are applied by the \
         operator, not by the schema (so that Argo CD does not report applications OutOfSync, \
         argo-cd#11074); each field's description states its default. The `Ready` condition's reasons and \
         what to do about each are in [conditions.md](conditions.md).\n\n",
    );
    for crd in crds {
        let kind = &crd.spec.names.kind;
        out.push_str(&format!("- [{kind}](#{})\n", kind.to_lowercase()));
    }
    for crd in crds {
        render_crd(crd, &mut out);
    }
    out
}

fn render_crd(crd: &CustomResourceDefinition, out: &mut String) {
    let names = &crd.spec.names;
    let kind = &names.kind;
    out.push_str(&format!("\n## {kind}\n\n"));
    let Some(version) = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage)
        .or(crd.spec.versions.first())
    else {
        out.push_str("No version is served.\n");
        return;
    };
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref());
    if let Some(description) = schema.and_then(|s| s.description.as_deref()) {
        out.push_str(&format!("{}\n\n", one_line(description)));
    }
    out.push_str(&format!(
        "- API version: `{}/{}`\n",
        crd.spec.group, version.name
    ));
    out.push_str(&format!(
        "- Kind: `{kind}` (`kubectl get {}`)\n",
        names.plural
    ));
    out.push_str(&format!("- Scope: {}\n", crd.spec.scope));
    let short_names = names.short_names.clone().unwrap_or_default();
    if !short_names.is_empty() {
        out.push_str(&format!("- Short names: {}\n", code_list(&short_names)));
    }
    let categories = names.categories.clone().unwrap_or_default();
    if !categories.is_empty() {
        out.push_str(&format!("- Categories: {}\n", code_list(&categories)));
    }
    let columns = version
        .additional_printer_columns
        .clone()
        .unwrap_or_default();
    if !columns.is_empty() {
        let shown: Vec<String> = columns
            .iter()
            .map(|c| {
                let wide = if c.priority.unwrap_or(0) > 0 {
                    ", with `-o wide`"
                } else {
                    ""
                };
                format!("{} (`{}`{wide})", c.name, escape(&c.json_path))
            })
            .collect();
        out.push_str(&format!("- `kubectl get` columns: {}\n", shown.join(", ")));
    }
    let Some(schema) = schema else {
        out.push_str("\nThis version has no schema.\n");
        return;
    };
    if let Some(rules) = rules_list(schema) {
        out.push('\n');
        out.push_str(&rules);
    }
    for (name, child) in schema.properties.iter().flatten() {
        if matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let required = is_required(schema, name);
        out.push_str(&format!(
            "\n### {kind} `{name}`{}\n\n",
            if required { " (required)" } else { "" }
        ));
        if let Some(description) = child.description.as_deref() {
            out.push_str(&format!("{}\n\n", one_line(description)));
        }
        if let Some(rules) = rules_list(child) {
            out.push_str(&rules);
            out.push('\n');
        }
        let mut rows = Vec::new();
        children(child, name, &mut rows);
        if rows.is_empty() {
            out.push_str(&format!("`{name}` is of type {}.\n", type_name(child)));
            continue;
        }
        out.push_str("| Field | Type | Required | Description |\n|---|---|---|---|\n");
        for row in rows {
            out.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                escape(&row.path),
                escape(&row.type_name),
                if row.required { "yes" } else { "" },
                row.description
            ));
        }
    }
}

/// The object-level validation rules of `schema` as a bullet list, if it has any.
fn rules_list(schema: &JSONSchemaProps) -> Option<String> {
    let rules = rule_messages(schema);
    if rules.is_empty() {
        return None;
    }
    let mut out = String::from("Validation rules:\n\n");
    for rule in rules {
        out.push_str(&format!("- {rule}\n"));
    }
    Some(out)
}

struct Row {
    path: String,
    type_name: String,
    required: bool,
    description: String,
}

/// Rows for the fields under `schema` (at `path`), depth first, fields in name order.
fn children(schema: &JSONSchemaProps, path: &str, rows: &mut Vec<Row>) {
    for (name, child) in schema.properties.iter().flatten() {
        let child_path = format!("{path}.{name}");
        rows.push(Row {
            path: child_path.clone(),
            type_name: type_name(child),
            required: is_required(schema, name),
            description: describe(child),
        });
        descend(child, &child_path, rows);
    }
}

/// Into objects, the items of arrays and the values of maps.
fn descend(schema: &JSONSchemaProps, path: &str, rows: &mut Vec<Row>) {
    if schema.properties.as_ref().is_some_and(|p| !p.is_empty()) {
        children(schema, path, rows);
    }
    let nested = |inner: &JSONSchemaProps, suffix: &str, rows: &mut Vec<Row>| {
        if inner.properties.as_ref().is_some_and(|p| !p.is_empty()) || items(inner).is_some() {
            let inner_path = format!("{path}{suffix}");
            let description = describe(inner);
            if !description.is_empty() {
                rows.push(Row {
                    path: inner_path.clone(),
                    type_name: type_name(inner),
                    required: false,
                    description,
                });
            }
            descend(inner, &inner_path, rows);
        }
    };
    if let Some(item) = items(schema) {
        nested(item, "[]", rows);
    }
    if let Some(value) = map_values(schema) {
        nested(value, ".<key>", rows);
    }
}

fn items(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match schema.items.as_ref()? {
        JSONSchemaPropsOrArray::Schema(item) => Some(item),
        JSONSchemaPropsOrArray::Schemas(list) => list.first(),
    }
}

fn map_values(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match schema.additional_properties.as_ref()? {
        JSONSchemaPropsOrBool::Schema(value) => Some(value),
        JSONSchemaPropsOrBool::Bool(_) => None,
    }
}

fn is_required(parent: &JSONSchemaProps, name: &str) -> bool {
    parent.required.iter().flatten().any(|r| r == name)
}

/// `string`, `integer (int64)`, `[]object`, `map[string]string`, ...
fn type_name(schema: &JSONSchemaProps) -> String {
    if schema.x_kubernetes_int_or_string == Some(true) {
        return "int or string".into();
    }
    match schema.type_.as_deref() {
        Some("array") => format!(
            "[]{}",
            items(schema).map_or_else(|| "any".into(), type_name)
        ),
        Some("object") => match map_values(schema) {
            Some(value) => format!("map[string]{}", type_name(value)),
            None if schema.additional_properties.is_some() => "map[string]any".into(),
            None => "object".into(),
        },
        Some(scalar) => match schema.format.as_deref() {
            Some(format) => format!("{scalar} ({format})"),
            None => scalar.into(),
        },
        None => "any".into(),
    }
}

/// The description cell: the field's description, then its constraints and rule messages.
fn describe(schema: &JSONSchemaProps) -> String {
    let mut parts = Vec::new();
    if let Some(description) = schema.description.as_deref() {
        let description = one_line(description);
        if !description.is_empty() {
            parts.push(sentence(&description));
        }
    }
    parts.extend(constraints(schema, ""));
    if let Some(item) = items(schema).filter(|i| i.properties.as_ref().is_none_or(|p| p.is_empty()))
    {
        parts.extend(constraints(item, "Each item: "));
    }
    if let Some(value) =
        map_values(schema).filter(|v| v.properties.as_ref().is_none_or(|p| p.is_empty()))
    {
        parts.extend(constraints(value, "Each value: "));
    }
    if let Some(list_type) = schema.x_kubernetes_list_type.as_deref() {
        match list_type {
            "map" => {
                let keys = schema
                    .x_kubernetes_list_map_keys
                    .clone()
                    .unwrap_or_default();
                parts.push(format!(
                    "A list keyed by {}: each key appears once.",
                    code_list(&keys)
                ));
            }
            "set" => parts.push("A set: each item appears once.".into()),
            _ => {}
        }
    }
    if schema.x_kubernetes_preserve_unknown_fields == Some(true) {
        parts.push("Any fields are kept.".into());
    }
    for message in rule_messages(schema) {
        parts.push(format!("Rule: {}", sentence(&message)));
    }
    escape(&parts.join(" "))
}

/// Enum values, pattern, lengths, item counts and bounds, as sentences; after a `prefix` such as
/// "Each item: " they start in lower case.
fn constraints(schema: &JSONSchemaProps, prefix: &str) -> Vec<String> {
    constraint_sentences(schema)
        .into_iter()
        .map(|sentence| {
            if prefix.is_empty() {
                return sentence;
            }
            let mut chars = sentence.chars();
            let first = chars
                .next()
                .map(|c| c.to_lowercase().collect::<String>())
                .unwrap_or_default();
            format!("{prefix}{first}{}", chars.as_str())
        })
        .collect()
}

fn constraint_sentences(schema: &JSONSchemaProps) -> Vec<String> {
    let mut parts = Vec::new();
    if let Some(values) = schema.enum_.as_ref().filter(|v| !v.is_empty()) {
        let values: Vec<String> = values
            .iter()
            .map(|v| match &v.0 {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        parts.push(format!("One of {}.", code_list(&values)));
    }
    if let Some(pattern) = schema.pattern.as_deref() {
        parts.push(format!("Matches `{pattern}`."));
    }
    if let Some(range) = range(schema.min_length, schema.max_length, "character") {
        parts.push(format!("{range}."));
    }
    if let Some(range) = range(schema.min_items, schema.max_items, "item") {
        parts.push(format!("{range}."));
    }
    if let Some(range) = range(schema.min_properties, schema.max_properties, "entry") {
        parts.push(format!("{range}."));
    }
    match (schema.minimum, schema.maximum) {
        (Some(min), Some(max)) => parts.push(format!("From {min} to {max}.")),
        (Some(min), None) => parts.push(format!("At least {min}.")),
        (None, Some(max)) => parts.push(format!("At most {max}.")),
        (None, None) => {}
    }
    parts
}

fn range(min: Option<i64>, max: Option<i64>, unit: &str) -> Option<String> {
    let plural = |n: i64| {
        if n == 1 {
            unit.to_owned()
        } else if unit == "entry" {
            "entries".to_owned()
        } else {
            format!("{unit}s")
        }
    };
    match (min.filter(|&n| n > 0), max) {
        (Some(min), Some(max)) if min == max => Some(format!("Exactly {min} {}", plural(max))),
        (Some(min), Some(max)) => Some(format!("{min} to {max} {}", plural(max))),
        (Some(min), None) => Some(format!("At least {min} {}", plural(min))),
        (None, Some(max)) => Some(format!("At most {max} {}", plural(max))),
        (None, None) => None,
    }
}

/// The messages of the CEL rules on `schema` (the rule itself when it has no message).
fn rule_messages(schema: &JSONSchemaProps) -> Vec<String> {
    schema
        .x_kubernetes_validations
        .iter()
        .flatten()
        .map(
            |rule| match rule.message.as_deref().filter(|m| !m.is_empty()) {
                Some(message) => one_line(message),
                None => format!("`{}`", one_line(&rule.rule)),
            },
        )
        .collect()
}

/// Whitespace runs (including line breaks) as single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` ending with a full stop.
fn sentence(text: &str) -> String {
    if text.ends_with(['.', '!', '?', ':']) {
        text.to_owned()
    } else {
        format!("{text}.")
    }
}

fn code_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Escapes what would break a Markdown table cell.
fn escape(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_kind_and_escapes_pipes() {
        let text = markdown();
        for kind in ["System", "ProjectSystem", "Connection"] {
            assert!(text.contains(&format!("\n## {kind}\n")), "{kind} section");
        }
        for line in text.lines().filter(|l| l.starts_with("| `")) {
            let unescaped = line.replace("\\|", "");
            assert_eq!(
                unescaped.matches('|').count(),
                5,
                "a table row with four cells: {line}"
            );
        }
    }

    #[test]
    fn ranges_read_naturally() {
        assert_eq!(
            range(Some(1), Some(253), "character").as_deref(),
            Some("1 to 253 characters")
        );
        assert_eq!(
            range(Some(0), Some(16), "item").as_deref(),
            Some("At most 16 items")
        );
        assert_eq!(
            range(Some(26), Some(26), "character").as_deref(),
            Some("Exactly 26 characters")
        );
        assert_eq!(
            range(Some(1), None, "entry").as_deref(),
            Some("At least 1 entry")
        );
        assert_eq!(range(None, None, "item"), None);
    }
}

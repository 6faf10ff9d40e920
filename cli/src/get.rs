//! `agora get KIND [NAME]`: objects as the server prints them — its `meta.k8s.io/v1` Tables, whose columns each kind
//! declares once (`agora_schemas::columns`), the same ones `kubectl get` shows — or as YAML, JSON or names.

use anyhow::{Context, Result};
use serde_json::Value;

/// How `agora get` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The kind's columns.
    Table,
    /// The kind's columns and the lower-priority ones.
    Wide,
    /// The objects as YAML.
    Yaml,
    /// The objects as JSON.
    Json,
    /// `kind.agora/name`, one a line.
    Name,
}

/// What to get.
#[derive(Debug, Clone)]
pub struct Get {
    pub kind: String,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub all_namespaces: bool,
    pub selector: Option<String>,
    pub output: Format,
}

/// Runs `agora get`; false when nothing was found.
///
/// # Errors
/// An unknown kind, or the server's answer (its `Status`).
pub fn run(client: &agora_client::Client, get: &Get) -> Result<bool> {
    let kind = agora_schemas::resource_info(&get.kind).with_context(|| {
        let known: Vec<&str> = agora_schemas::KINDS.iter().map(|k| k.plural).collect();
        format!("unknown kind {:?}; Agora serves {}", get.kind, known.join(", "))
    })?;
    let namespace = get.namespace.clone().or_else(|| client.default_namespace().map(str::to_owned));
    let namespace = namespace.unwrap_or_else(|| "default".to_owned());
    let across = get.all_namespaces && get.name.is_none();
    let mut path = String::from("/apis/agora/v1/");
    if kind.namespaced && !across {
        path.push_str(&format!("namespaces/{namespace}/"));
    }
    path.push_str(kind.plural);
    if let Some(name) = &get.name {
        path.push('/');
        path.push_str(name);
    }
    if let Some(selector) = &get.selector {
        let query: String = url_encode(selector);
        path.push_str(&format!("?labelSelector={query}"));
    }
    let table = matches!(get.output, Format::Table | Format::Wide);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let answer =
        runtime.block_on(client.get_json(&path, if table { agora_client::TABLE } else { "application/json" }))?;
    let items: Vec<Value> = match answer.get("items").and_then(Value::as_array) {
        Some(items) => items.clone(),
        None if answer.get("kind").and_then(Value::as_str) == Some("Table") => Vec::new(),
        None => vec![answer.clone()],
    };
    let empty = if table { answer["rows"].as_array().is_none_or(Vec::is_empty) } else { items.is_empty() };
    if empty {
        let scope = if across || !kind.namespaced { String::new() } else { format!(" in {namespace} namespace") };
        eprintln!("No resources found{scope}.");
        return Ok(true);
    }
    match get.output {
        Format::Table | Format::Wide => print!("{}", render(&answer, get.output == Format::Wide, across)),
        Format::Json => {
            println!("{}", serde_json::to_string_pretty(&answer).context("encoding JSON")?);
        }
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(&answer).context("encoding YAML")?),
        Format::Name => {
            for item in &items {
                let name = item.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
                println!("{}.agora/{name}", kind.singular);
            }
        }
    }
    Ok(true)
}

/// A Table as `kubectl get` prints it: upper-case headers, cells left-aligned in columns three spaces apart,
/// `null` cells blank, the priority-1 columns only when `wide`, a NAMESPACE column first when `namespaces`.
#[must_use]
pub fn render(table: &Value, wide: bool, namespaces: bool) -> String {
    let definitions = table["columnDefinitions"].as_array().cloned().unwrap_or_default();
    let shown: Vec<usize> = definitions
        .iter()
        .enumerate()
        .filter(|(_, c)| wide || c["priority"].as_u64().unwrap_or(0) == 0)
        .map(|(i, _)| i)
        .collect();
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut header: Vec<String> = Vec::new();
    if namespaces {
        header.push("NAMESPACE".to_owned());
    }
    header.extend(shown.iter().map(|i| definitions[*i]["name"].as_str().unwrap_or_default().to_uppercase()));
    lines.push(header);
    for row in table["rows"].as_array().into_iter().flatten() {
        let mut line = Vec::new();
        if namespaces {
            line.push(row.pointer("/object/metadata/namespace").and_then(Value::as_str).unwrap_or_default().to_owned());
        }
        for i in &shown {
            line.push(match &row["cells"][*i] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
        lines.push(line);
    }
    let columns = lines.first().map_or(0, Vec::len);
    let widths: Vec<usize> =
        (0..columns).map(|c| lines.iter().map(|l| l[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            text.push_str(cell);
            if c + 1 < columns {
                text.push_str(&" ".repeat(widths[c] - cell.chars().count() + 3));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// `selector` as a query value: what is not unreserved is percent-encoded.
fn url_encode(selector: &str) -> String {
    selector
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn table() -> Value {
        json!({
            "kind": "Table",
            "columnDefinitions": [
                {"name": "Name", "priority": 0}, {"name": "Instances", "priority": 0},
                {"name": "Running", "priority": 0}, {"name": "Age", "priority": 0},
                {"name": "Last Failure", "priority": 1},
            ],
            "rows": [
                {"cells": ["web", 3, 3, "4m", null], "object": {"metadata": {"namespace": "default"}}},
                {"cells": ["cache-large", 12, null, "2d3h", "exited 1"], "object": {"metadata": {"namespace": "shop"}}},
            ],
        })
    }

    #[test]
    fn tables_print_as_kubectl_prints_them() {
        assert_eq!(
            render(&table(), false, false),
            "NAME          INSTANCES   RUNNING   AGE\n\
             web           3           3         4m\n\
             cache-large   12                    2d3h\n"
        );
        assert_eq!(
            render(&table(), true, true),
            "NAMESPACE   NAME          INSTANCES   RUNNING   AGE    LAST FAILURE\n\
             default     web           3           3         4m\n\
             shop        cache-large   12                    2d3h   exited 1\n"
        );
    }

    #[test]
    fn selectors_are_encoded_for_the_query() {
        assert_eq!(url_encode("tier in (web,db),!canary"), "tier%20in%20%28web%2Cdb%29%2C%21canary");
    }
}

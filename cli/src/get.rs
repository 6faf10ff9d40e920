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
    /// After the list, print each change as it happens.
    pub watch: bool,
}

/// Runs `agora get`; false when nothing was found.
///
/// # Errors
/// An unknown kind, or the server's answer (its `Status`).
pub fn run(client: &agora_client::Client, get: &Get) -> Result<bool> {
    let kind = kind(&get.kind)?;
    let namespace = get.namespace.clone().or_else(|| client.default_namespace().map(str::to_owned));
    let namespace = namespace.unwrap_or_else(|| "default".to_owned());
    let across = get.all_namespaces && get.name.is_none();
    let query = get.selector.as_ref().map(|selector| format!("labelSelector={}", url_encode(selector)));
    let scope = if across { None } else { Some(namespace.as_str()) };
    let list_path = path(kind, scope, get.name.as_deref(), query.as_deref());
    let table = matches!(get.output, Format::Table | Format::Wide);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let answer = match runtime
        .block_on(client.get_json(&list_path, if table { agora_client::TABLE } else { "application/json" }))
    {
        Ok(answer) => answer,
        // A missing object is "not done" (exit 1), as for describe and delete; a failed request is an error.
        Err(e) if e.is_not_found() && get.name.is_some() => {
            eprintln!("error: {}", crate::error_chain(&e.into()));
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    let single = answer.get("items").is_none() && answer.get("kind").and_then(Value::as_str) != Some("Table");
    let items: Vec<Value> = match answer.get("items").and_then(Value::as_array) {
        Some(items) => items.clone(),
        None if answer.get("kind").and_then(Value::as_str) == Some("Table") => Vec::new(),
        None => vec![answer.clone()],
    };
    let empty = if table { answer["rows"].as_array().is_none_or(Vec::is_empty) } else { items.is_empty() };
    let wide = get.output == Format::Wide;
    let colour = crate::style::colour();
    let mut widths = Vec::new();
    let mut definitions = answer["columnDefinitions"].as_array().cloned().unwrap_or_default();
    if empty {
        let scope = if across || !kind.namespaced { String::new() } else { format!(" in {namespace} namespace") };
        eprintln!("No resources found{scope}.");
    } else {
        match get.output {
            Format::Table | Format::Wide => {
                let (header, rows) = cells(&answer, &definitions, wide, across);
                widths = column_widths(&[&[header][..], &rows].concat());
                print!("{}", render(&answer, wide, across, colour));
            }
            _ if single => print_objects(kind, &items, get.output)?,
            _ => print_list(kind, items, get.output)?,
        }
    }
    if !get.watch {
        return Ok(true);
    }
    // Where the watch starts: the list's version; for one object, the object's own (a Table of one object
    // carries it in its row, as metadata), so the watch does not print it again as ADDED.
    let own = if table {
        answer.pointer("/rows/0/object/metadata/resourceVersion")
    } else {
        answer.pointer("/metadata/resourceVersion")
    };
    let listed = answer.pointer("/metadata/resourceVersion").filter(|v| v.as_str().is_some_and(|v| !v.is_empty()));
    let start = if get.name.is_some() { own } else { listed };
    let mut resource_version = start.and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut header_printed = !empty;
    runtime.block_on(async {
        use futures::StreamExt as _;
        loop {
            let mut query = vec!["watch=true".to_owned(), format!("resourceVersion={resource_version}")];
            query.extend(get.selector.as_ref().map(|s| format!("labelSelector={}", url_encode(s))));
            query.extend(get.name.as_ref().map(|n| format!("fieldSelector=metadata.name%3D{}", url_encode(n))));
            let watch_path = path(kind, scope, None, Some(&query.join("&")));
            let accept = if table { agora_client::TABLE } else { "application/json" };
            let opened = std::time::Instant::now();
            let mut events = client.watch_json(&watch_path, accept).await?;
            while let Some(event) = events.next().await {
                let event = event?;
                let object = &event["object"];
                if event["type"] == "ERROR" {
                    let message = object["message"].as_str().unwrap_or("the watch failed");
                    anyhow::bail!("{message} (run the command again to list anew)");
                }
                if event["type"] == "BOOKMARK" {
                    continue;
                }
                if table {
                    if let Some(given) = object["columnDefinitions"].as_array().filter(|d| !d.is_empty()) {
                        definitions.clone_from(given);
                    }
                    let (header, rows) = cells(object, &definitions, wide, across);
                    if !header_printed && !definitions.is_empty() {
                        let mut lines = vec![header];
                        lines.extend(rows.iter().cloned());
                        widths = column_widths(&lines);
                        print!("{}", crate::style::aligned(&lines[..1], "", colour));
                        header_printed = true;
                    }
                    for row in &object["rows"].as_array().cloned().unwrap_or_default() {
                        if let Some(rv) = row.pointer("/object/metadata/resourceVersion").and_then(Value::as_str) {
                            resource_version = rv.to_owned();
                        }
                    }
                    for row in rows {
                        print!("{}", crate::style::aligned(&[padded(row, &widths)], "", colour));
                    }
                } else {
                    if let Some(rv) = object.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
                        resource_version = rv.to_owned();
                    }
                    print_objects(kind, std::slice::from_ref(object), get.output)?;
                }
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
            }
            // The server ended the watch (its timeout): open it again from the last version seen; one that ended
            // at once waits a moment first.
            if opened.elapsed() < std::time::Duration::from_secs(1) {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    })
}

/// Several objects as kubectl prints them: one `List` document for JSON and YAML, a name a line for names.
fn print_list(kind: &agora_schemas::KindInfo, items: Vec<Value>, output: Format) -> Result<()> {
    if output == Format::Name {
        return print_objects(kind, &items, output);
    }
    let list =
        serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items});
    print_objects(kind, std::slice::from_ref(&list), output)
}

fn print_objects(kind: &agora_schemas::KindInfo, items: &[Value], output: Format) -> Result<()> {
    match output {
        Format::Table | Format::Wide | Format::Json => {
            for item in items {
                println!("{}", serde_json::to_string_pretty(item).context("encoding JSON")?);
            }
        }
        Format::Yaml => {
            for item in items {
                print!("---\n{}", serde_yaml_ng::to_string(item).context("encoding YAML")?);
            }
        }
        Format::Name => {
            for item in items {
                let name = item.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
                println!("{}.{}/{name}", kind.singular, kind.group);
            }
        }
    }
    Ok(())
}

fn column_widths(lines: &[Vec<String>]) -> Vec<usize> {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    (0..columns).map(|c| lines.iter().filter_map(|l| l.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect()
}

/// A row of a watch, padded to the widths the header was printed with (a longer cell pushes the rest along).
fn padded(mut row: Vec<String>, widths: &[usize]) -> Vec<String> {
    for (cell, width) in row.iter_mut().zip(widths) {
        let count = cell.chars().count();
        if count < *width {
            cell.push_str(&" ".repeat(width - count));
        }
    }
    row
}

/// The kind a user named: a plural, singular or short name.
///
/// # Errors
/// An unknown name, saying which kinds there are.
pub fn kind(name: &str) -> Result<&'static agora_schemas::KindInfo> {
    agora_schemas::resource_info(name).with_context(|| {
        let known: Vec<String> = agora_schemas::KINDS
            .iter()
            .map(|k| if k.is_agoras() { k.plural.to_owned() } else { k.qualified() })
            .collect();
        format!("unknown kind {name:?}; Agora serves {}", known.join(", "))
    })
}

/// The API path of `kind` objects in `namespace` (every namespace when `None`; ignored for cluster-scoped kinds), of
/// one of them when `name` is given, with `query` (already encoded) after a `?`.
#[must_use]
pub fn path(
    kind: &agora_schemas::KindInfo,
    namespace: Option<&str>,
    name: Option<&str>,
    query: Option<&str>,
) -> String {
    let mut path = format!("/apis/{}/", kind.api_version);
    if let (true, Some(namespace)) = (kind.namespaced, namespace) {
        path.push_str(&format!("namespaces/{namespace}/"));
    }
    path.push_str(kind.plural);
    if let Some(name) = name {
        path.push('/');
        path.push_str(name);
    }
    if let Some(query) = query {
        path.push('?');
        path.push_str(query);
    }
    path
}

/// A Table as `kubectl get` prints it: upper-case headers, cells left-aligned in columns three spaces apart,
/// `null` cells blank, the priority-1 columns only when `wide`, a NAMESPACE column first when `namespaces`, status
/// words coloured when `colour`.
#[must_use]
pub fn render(table: &Value, wide: bool, namespaces: bool, colour: bool) -> String {
    let definitions = table["columnDefinitions"].as_array().cloned().unwrap_or_default();
    let (header, rows) = cells(table, &definitions, wide, namespaces);
    let mut lines = vec![header];
    lines.extend(rows);
    crate::style::aligned(&lines, "", colour)
}

/// A Table's header and rows as text cells.
/// `definitions` are the table's own or, in a watch (whose later Tables carry none), the first one's.
fn cells(table: &Value, definitions: &[Value], wide: bool, namespaces: bool) -> (Vec<String>, Vec<Vec<String>>) {
    let shown: Vec<usize> = definitions
        .iter()
        .enumerate()
        .filter(|(_, c)| wide || c["priority"].as_u64().unwrap_or(0) == 0)
        .map(|(i, _)| i)
        .collect();
    let mut header: Vec<String> = Vec::new();
    if namespaces {
        header.push("NAMESPACE".to_owned());
    }
    header.extend(shown.iter().map(|i| definitions[*i]["name"].as_str().unwrap_or_default().to_uppercase()));
    let mut rows = Vec::new();
    for row in table["rows"].as_array().into_iter().flatten() {
        let mut line = Vec::new();
        if namespaces {
            let namespace = row.pointer("/object/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
            line.push(crate::style::escaped(namespace));
        }
        for &i in &shown {
            line.push(match &row["cells"][i] {
                Value::Null => String::new(),
                Value::String(s) => crate::style::escaped(s),
                other => other.to_string(),
            });
        }
        rows.push(line);
    }
    (header, rows)
}

/// `selector` as a query value: what is not unreserved is percent-encoded.
pub fn url_encode(selector: &str) -> String {
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
            render(&table(), false, false, false),
            "NAME          INSTANCES   RUNNING   AGE\n\
             web           3           3         4m\n\
             cache-large   12                    2d3h\n"
        );
        assert_eq!(
            render(&table(), true, true, false),
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

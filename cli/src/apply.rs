//! `agora apply -f FILE|DIR|-`: server-side apply of every object of the manifests, as field manager `agora`.
//!
//! Every document of every file is decoded and validated first, as the apiserver would admit it; if any is wrong,
//! each problem is printed with its file, line and field path and nothing is applied. Then each object is applied in
//! file order (the configuration as written, not with defaults filled in, so `agora` owns only what the manifest
//! sets) and reported as `created`, `configured` or `unchanged`. A failure from the server names the object and
//! where it came from, and the others are still applied; the exit code then says so.

use anyhow::{Context, Result};
use serde_json::Value;

/// What to apply.
#[derive(Debug, Clone)]
pub struct Apply {
    pub files: Vec<std::path::PathBuf>,
    /// For objects that name no namespace.
    pub namespace: Option<String>,
    /// Take fields other managers own.
    pub force_conflicts: bool,
    /// Ask the server what would happen, changing nothing.
    pub dry_run: bool,
}

/// One object to apply, and where it came from.
struct Planned {
    origin: String,
    line: usize,
    info: &'static agora_schemas::KindInfo,
    object: Value,
}

/// How an applied object changed: by what its owners decide — everything but its status and the server's
/// bookkeeping — so a controller's status write meanwhile does not make an unchanged object "configured".
fn outcome(created: bool, before: Option<&Value>, after: &Value) -> &'static str {
    let decided = |object: &Value| {
        let mut object = object.clone();
        if let Some(map) = object.as_object_mut() {
            map.remove("status");
        }
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in ["resourceVersion", "managedFields", "generation"] {
                meta.remove(field);
            }
        }
        object
    };
    match before {
        _ if created => "created",
        None => "created",
        Some(before) if decided(before) == decided(after) => "unchanged",
        Some(_) => "configured",
    }
}

/// Runs `agora apply`; false when something was not applied.
///
/// # Errors
/// A file cannot be read, or the request cannot be made at all.
pub fn run(client: &agora_client::Client, apply: &Apply) -> Result<bool> {
    let mut planned = Vec::new();
    let mut invalid = false;
    for file in crate::expand(&apply.files)? {
        let (origin, source) = crate::read(&file)?;
        if let Err(errors) = agora_schemas::manifest::parse_and_validate(&source, &origin) {
            invalid = true;
            for error in errors {
                eprintln!("{error}");
            }
            continue;
        }
        // The configuration as written (the validated copy has the server's defaults filled in).
        let documents = agora_schemas::manifest::parse(&source, &origin).map_err(|e| anyhow::anyhow!("{e}"))?;
        for document in documents {
            planned.push(Planned {
                origin: origin.clone(),
                line: document.line,
                info: document.object.info(),
                object: document.object.to_json(),
            });
        }
    }
    if invalid {
        eprintln!("nothing was applied");
        return Ok(false);
    }
    let default_namespace =
        apply.namespace.clone().or_else(|| client.default_namespace().map(str::to_owned)).unwrap_or("default".into());
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let mut all = true;
    for mut plan in planned {
        let name = plan.object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let mut path = String::from("/apis/agora/v1/");
        if plan.info.namespaced {
            let namespace = match plan.object.pointer("/metadata/namespace").and_then(Value::as_str) {
                Some(namespace) => namespace.to_owned(),
                None => {
                    plan.object["metadata"]["namespace"] = Value::String(default_namespace.clone());
                    default_namespace.clone()
                }
            };
            path.push_str(&format!("namespaces/{namespace}/"));
        }
        path.push_str(&format!("{}/{name}", plan.info.plural));
        let what = format!("{}.agora/{name}", plan.info.singular);
        let applied = runtime.block_on(async {
            let before = match client.get_json(&path, "application/json").await {
                Ok(object) => Some(object),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e),
            };
            let (created, after) =
                client.apply_json(&path, "agora", apply.force_conflicts, apply.dry_run, &plan.object).await?;
            Ok(outcome(created, before.as_ref(), &after))
        });
        match applied {
            Ok(outcome) => {
                let dry = if apply.dry_run { " (server dry run)" } else { "" };
                println!("{what} {outcome}{dry}");
            }
            Err(e) => {
                all = false;
                let hint = if e.to_string().contains("conflict") {
                    " (another manager set these fields: --force-conflicts takes them)"
                } else {
                    ""
                };
                eprintln!("{}:{}: {what}: {}{hint}", plan.origin, plan.line, crate::error_chain(&e.into()));
            }
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_what_the_owners_decide() {
        let before = serde_json::json!({"metadata": {"name": "a", "resourceVersion": "5", "generation": 1},
            "spec": {"cmd": "x"}, "status": {"tasksRunning": 0}});
        let mut status_only = before.clone();
        status_only["metadata"]["resourceVersion"] = "7".into();
        status_only["status"]["tasksRunning"] = 3.into();
        let mut changed = status_only.clone();
        changed["spec"]["cmd"] = "y".into();
        changed["metadata"]["generation"] = 2.into();
        assert_eq!(outcome(true, None, &before), "created");
        assert_eq!(outcome(false, None, &before), "created");
        assert_eq!(outcome(false, Some(&before), &status_only), "unchanged", "a status write meanwhile");
        assert_eq!(outcome(false, Some(&before), &changed), "configured");
    }
}

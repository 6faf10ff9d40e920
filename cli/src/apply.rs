//! `agora apply -f FILE|DIR|-`: server-side apply of every object of the manifests, as field manager `agora`.
//!
//! Every document of every file is decoded and validated first, as the apiserver would admit it; if any is wrong,
//! each problem is printed with its file, line and field path and nothing is applied. Then each object is applied in
//! file order (the configuration as written, not with defaults filled in, so `agora` owns only what the manifest
//! sets) and reported as `created`, `configured` or `unchanged`. A failure from the server names the object and
//! where it came from, and the others are still applied; the exit code then says so.
//!
//! With `--prune -l SELECTOR`, objects of the kinds and namespaces the manifests touch that match the selector, were
//! applied by `agora` and are in none of the manifests are deleted. With `--wait`, each App's deployment and each
//! CronJob's first run (when due in time) are followed ([`crate::wait`]) and a failure fails the command.

use anyhow::{Context, Result};
use serde_json::Value;

/// What to apply.
#[derive(Debug, Clone, Default)]
pub struct Apply {
    pub files: Vec<std::path::PathBuf>,
    /// For objects that name no namespace.
    pub namespace: Option<String>,
    /// Take fields other managers own.
    pub force_conflicts: bool,
    /// Ask the server what would happen, changing nothing.
    pub dry_run: bool,
    /// Then follow the Apps' deployments and the CronJobs' first runs, this long at most.
    pub wait: Option<std::time::Duration>,
    /// Then delete what matches this selector, was applied by `agora`, and is in none of the manifests.
    pub prune: Option<String>,
    /// Create the objects that do not exist and leave those that do as they are (`agora up --apply`: a second
    /// start must not undo what the user changed since).
    pub only_missing: bool,
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
    for file in crate::files::expand(&apply.files)? {
        let (origin, source) = crate::files::read(&file)?;
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
    let colour = crate::style::colour();
    // What was applied: kind, namespace, name and the object as stored.
    let mut applied: Vec<(&'static agora_schemas::KindInfo, String, String, Value)> = Vec::new();
    for mut plan in planned {
        let name = plan.object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let mut path = format!("/apis/{}/", plan.info.api_version);
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
        let what = format!("{}.{}/{name}", plan.info.singular, plan.info.group);
        let namespace =
            plan.object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default().to_owned();
        let result = runtime.block_on(async {
            let before = match client.get_json(&path, "application/json").await {
                Ok(object) => Some(object),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e),
            };
            if apply.only_missing
                && let Some(existing) = &before
            {
                return Ok(("exists, left as it is", existing.clone()));
            }
            let (created, after) =
                client.apply_json(&path, "agora", apply.force_conflicts, apply.dry_run, &plan.object).await?;
            Ok((outcome(created, before.as_ref(), &after), after))
        });
        match result {
            Ok((outcome, after)) => {
                let dry = if apply.dry_run { " (server dry run)" } else { "" };
                let tone = crate::style::tone_of(outcome).unwrap_or(crate::style::Tone::Dim);
                println!("{what} {}{dry}", crate::style::paint(outcome, tone, colour));
                applied.push((plan.info, namespace, name, after));
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
    if let Some(selector) = &apply.prune {
        all &= runtime.block_on(prune(client, &applied, selector, apply.dry_run))?;
    }
    if let Some(timeout) = apply.wait {
        all &= runtime.block_on(wait_all(client, &applied, timeout))?;
    }
    Ok(all)
}

/// Deletes what `selector` matches in the kinds and namespaces of `applied`, that `agora` applied, and that is not in
/// `applied`; whether every deletion went through.
async fn prune(
    client: &agora_client::Client,
    applied: &[(&'static agora_schemas::KindInfo, String, String, Value)],
    selector: &str,
    dry_run: bool,
) -> Result<bool> {
    let mut scopes: Vec<(&'static agora_schemas::KindInfo, String)> =
        applied.iter().map(|(info, namespace, _, _)| (*info, namespace.clone())).collect();
    scopes.sort_by(|a, b| (a.0.storage, &a.1).cmp(&(b.0.storage, &b.1)));
    scopes.dedup_by(|a, b| a.0.storage == b.0.storage && a.1 == b.1);
    let mut all = true;
    for (info, namespace) in scopes {
        let query = format!("labelSelector={}", crate::get::url_encode(selector));
        let scope = info.namespaced.then_some(namespace.as_str());
        let items = crate::describe::items(client, &crate::get::path(info, scope, None, Some(&query))).await?;
        for item in items.iter().filter(|item| prunable(item, info, applied)) {
            let name = item.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            let mut object_path = crate::get::path(info, scope, Some(name), None);
            if dry_run {
                object_path.push_str("?dryRun=All");
            }
            match client.delete_json(&object_path).await {
                Ok(_) => {
                    let dry = if dry_run { " (server dry run)" } else { "" };
                    println!("{}.{}/{name} pruned{dry}", info.singular, info.group)
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    all = false;
                    eprintln!(
                        "{}.{}/{name}: pruning failed: {}",
                        info.singular,
                        info.group,
                        crate::error_chain(&e.into())
                    );
                }
            }
        }
    }
    Ok(all)
}

/// Whether a listed object is to be pruned: `agora` applied it, and it is not among what was just applied.
fn prunable(
    item: &Value,
    info: &agora_schemas::KindInfo,
    applied: &[(&'static agora_schemas::KindInfo, String, String, Value)],
) -> bool {
    let name = item.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let namespace = item.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let by_agora = item
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(|fields| fields.iter().any(|f| f["manager"] == "agora" && f["operation"] == "Apply"));
    let kept = applied
        .iter()
        .any(|(i, n, m, _)| i.storage == info.storage && m == name && (!info.namespaced || n == namespace));
    by_agora && !kept
}

/// Follows every applied App's deployment and CronJob's first run, all within `timeout`; whether all were done.
async fn wait_all(
    client: &agora_client::Client,
    applied: &[(&'static agora_schemas::KindInfo, String, String, Value)],
    timeout: std::time::Duration,
) -> Result<bool> {
    let start = std::time::Instant::now();
    let deadline =
        jiff::Timestamp::now() + jiff::SignedDuration::try_from(timeout).unwrap_or(jiff::SignedDuration::ZERO);
    let mut all = true;
    for (info, namespace, name, stored) in applied {
        let generation = stored.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
        let left = timeout.saturating_sub(start.elapsed());
        match info.kind {
            "App" => {
                let apps: agora_client::Api<agora_schemas::App> =
                    agora_client::Api::namespaced(client.clone(), namespace);
                all &= crate::verbs::wait_app(&apps, name, generation, left).await?;
            }
            "CronJob" => {
                let jobs: agora_client::Api<agora_schemas::CronJob> =
                    agora_client::Api::namespaced(client.clone(), namespace);
                let before = serde_json::from_value::<agora_schemas::CronJob>(stored.clone())
                    .map(|job| crate::wait::Counted::of(&job))
                    .unwrap_or_default();
                let progress = crate::wait::until(&format!("cronjob/{name}"), left, || async {
                    Ok(crate::wait::job(&jobs.get(name).await?, generation, before, deadline))
                })
                .await?;
                let prefix = format!("cronjob.agora/{name}:");
                match &progress {
                    crate::wait::Progress::Done(said) => println!("{prefix} {said}"),
                    crate::wait::Progress::Failed(why) | crate::wait::Progress::Waiting(why) => {
                        all = false;
                        eprintln!("{prefix} failed: {why}");
                    }
                }
            }
            _ => {}
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

    #[test]
    fn only_what_agora_applied_and_no_manifest_holds_is_pruned() {
        let apps = agora_schemas::resource_info("apps").unwrap();
        let object = |name: &str, manager: &str| {
            serde_json::json!({"metadata": {"name": name, "namespace": "shop",
                "managedFields": [{"manager": manager, "operation": "Apply"}]}})
        };
        let applied = vec![(apps, "shop".to_owned(), "cache".to_owned(), object("cache", "agora"))];
        assert!(!prunable(&object("cache", "agora"), apps, &applied), "still in the manifests");
        assert!(prunable(&object("old", "agora"), apps, &applied));
        assert!(!prunable(&object("theirs", "kubectl"), apps, &applied), "someone else's");
    }
}

//! The CLI's verbs on a running cluster beyond `get`, `apply` and `describe`: `delete`, `scale`, `rollback`,
//! `cordon`/`uncordon`/`drain`, `events`, `top` and `logs`. Each is a few requests through the normal API (the same
//! admission as kubectl's); what to change is decided by pure functions ([`rollback_target`], [`drain_plan`],
//! [`top_agents`], [`top_tasks`], [`prefixed_lines`]) tested without a server.

use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt as _;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::get::{kind, path, url_encode};
use crate::wait::Progress;

/// What every verb needs: the cluster, the namespace, and whether to colour.
pub struct Ctx {
    pub client: agora_client::Client,
    pub namespace: String,
    pub colour: bool,
    pub runtime: tokio::runtime::Runtime,
}

impl Ctx {
    /// # Errors
    /// The async runtime cannot start.
    pub fn new(client: agora_client::Client, namespace: Option<String>) -> Result<Self> {
        let namespace = namespace.or_else(|| client.default_namespace().map(str::to_owned)).unwrap_or("default".into());
        let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        Ok(Self { client, namespace, colour: crate::style::colour(), runtime })
    }

    fn apps(&self) -> agora_client::Api<agora_schemas::App> {
        agora_client::Api::namespaced(self.client.clone(), &self.namespace)
    }
}

/// One object to delete: its namespace (ignored for a cluster-scoped kind), kind and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub kind: String,
    pub name: String,
}

/// `agora delete`: each object named (or every one of `kind` matching `selector` in the context's namespace), then,
/// with `wait`, until each is gone — and the Tasks it owned (an App's, a CronJob's) with it, stopped by their agents:
/// Marathon's `DELETE /v2/apps` ends with the app's tasks killed, and so does this wait.
///
/// # Errors
/// A request that failed for another reason than the object being gone already.
pub fn delete(ctx: &Ctx, targets: &[Target], selector: Option<(&str, &str)>, wait: Option<Duration>) -> Result<bool> {
    let mut all = true;
    let mut deleted: Vec<(String, String, Option<Owner>)> = Vec::new();
    // The kinds whose Tasks carry a label naming them: only their Tasks are listed, never a whole namespace's.
    let tasks = kind("tasks")?;
    let owner = |info: &agora_schemas::KindInfo, namespace: &str, object: &Value| {
        let label = match info.kind {
            "App" => agora_schemas::APP_LABEL,
            "CronJob" => agora_schemas::CRONJOB_LABEL,
            _ => return None,
        };
        let (uid, name) = (meta(object, "uid")?, meta(object, "name")?);
        let query = format!("labelSelector={}", url_encode(&format!("{label}={name}")));
        Some((path(tasks, Some(namespace), None, Some(&query)), uid.to_owned()))
    };
    ctx.runtime.block_on(async {
        for Target { namespace, kind: kind_name, name } in targets {
            let info = kind(kind_name)?;
            let object_path = path(info, Some(namespace), Some(name), None);
            match ctx.client.delete_json(&object_path).await {
                Ok(object) => {
                    println!("{}.{}/{name} deleted", info.singular, info.group);
                    let owner = owner(info, namespace, &object);
                    deleted.push((object_path, format!("{}.{}/{name}", info.singular, info.group), owner));
                }
                Err(e) if e.is_not_found() => {
                    all = false;
                    eprintln!("{}.{}/{name}: not found in {}", info.singular, info.group, scope_of(info, namespace));
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let Some((kind_name, selector)) = selector {
            let info = kind(kind_name)?;
            let query = format!("labelSelector={}", url_encode(selector));
            let list = ctx.client.delete_json(&path(info, Some(&ctx.namespace), None, Some(&query))).await?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                eprintln!("No {} matched {selector} in {}.", info.plural, scope_of(info, &ctx.namespace));
            }
            for item in items {
                let name = item.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned();
                println!("{}.{}/{name} deleted", info.singular, info.group);
                deleted.push((
                    path(info, Some(&ctx.namespace), Some(&name), None),
                    format!("{}.{}/{name}", info.singular, info.group),
                    owner(info, &ctx.namespace, &item),
                ));
            }
        }
        if let Some(timeout) = wait {
            for (object_path, what, owner) in &deleted {
                let progress = crate::wait::until(&format!("deleting {what}"), timeout, || async {
                    match ctx.client.get_json(object_path, "application/json").await {
                        Err(e) if e.is_not_found() => {
                            let Some((list, uid)) = owner else {
                                return Ok(Progress::Done(format!("{what} is gone")));
                            };
                            let items = crate::describe::items(&ctx.client, list).await?;
                            let left = items.iter().filter(|t| owned_by(t, uid)).count();
                            Ok(if left == 0 {
                                Progress::Done(format!("{what} is gone"))
                            } else {
                                Progress::Waiting(format!("{left} of its tasks still stopping"))
                            })
                        }
                        Err(e) => Err(e.into()),
                        Ok(object) => Ok(Progress::Waiting(match object.pointer("/metadata/finalizers") {
                            Some(f) if f.as_array().is_some_and(|f| !f.is_empty()) => format!("finalizers {f}"),
                            _ => "still there".to_owned(),
                        })),
                    }
                })
                .await?;
                all &= report(&progress);
            }
        }
        anyhow::Ok(())
    })?;
    Ok(all)
}

/// A deleted App or CronJob as the owner of Tasks: the path listing the Tasks its label names, and its uid.
type Owner = (String, String);

fn meta<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.pointer(&format!("/metadata/{field}")).and_then(Value::as_str)
}

/// Whether `object` names `uid` among its owners.
fn owned_by(object: &Value, uid: &str) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|owners| owners.iter().any(|o| o["uid"].as_str() == Some(uid)))
}

fn scope_of(info: &agora_schemas::KindInfo, namespace: &str) -> String {
    if info.namespaced { format!("namespace {namespace}") } else { "the cluster".to_owned() }
}

/// Prints a wait's outcome; whether it was done.
pub fn report(progress: &Progress) -> bool {
    match progress {
        Progress::Done(said) => {
            println!("  {said}");
            true
        }
        Progress::Failed(why) | Progress::Waiting(why) => {
            eprintln!("  failed: {why}");
            false
        }
    }
}

/// Follows an App's deployment until done, failed or `timeout`; whether it was done.
///
/// # Errors
/// A request that failed.
pub async fn wait_app(
    apps: &agora_client::Api<agora_schemas::App>,
    name: &str,
    generation: i64,
    timeout: Duration,
) -> Result<bool> {
    let progress = crate::wait::until(&format!("app/{name}"), timeout, || async {
        Ok(crate::wait::app(&apps.get(name).await?, generation))
    })
    .await?;
    let prefix = format!("app.agora/{name}:");
    match &progress {
        Progress::Done(said) => println!("{prefix} {said}"),
        Progress::Failed(why) | Progress::Waiting(why) => eprintln!("{prefix} failed: {why}"),
    }
    Ok(matches!(progress, Progress::Done(_)))
}

/// `agora scale app NAME --instances N` (the scale subresource, as `kubectl scale`).
///
/// # Errors
/// A request that failed (a 422 for a negative count).
pub fn scale(ctx: &Ctx, name: &str, instances: i32, wait: Option<Duration>) -> Result<bool> {
    ctx.runtime.block_on(async {
        let apps = ctx.apps();
        let before = apps.get_scale(name).await?;
        let patch = agora_client::Patch::Merge(json!({"spec": {"replicas": instances}}));
        apps.patch_scale(name, &agora_client::PatchParams::default().manager("agora-scale"), &patch).await?;
        println!("app.agora/{name} scaled from {} to {instances}", before.spec.replicas.unwrap_or(0));
        match wait {
            None => Ok(true),
            Some(timeout) => {
                let generation = apps.get(name).await?.metadata.generation.unwrap_or(0);
                wait_app(&apps, name, generation, timeout).await
            }
        }
    })
}

/// `agora create secret docker-registry`: a DockerConfigJson Secret with credentials for one registry.
///
/// # Errors
/// Bad input (said before anything is sent), or a refused create (it exists: 409).
pub fn create_registry_secret(ctx: &Ctx, name: &str, server: &str, username: &str, password: &str) -> Result<bool> {
    anyhow::ensure!(!password.is_empty(), "no password on stdin: pipe it in (--password-stdin)");
    anyhow::ensure!(!username.contains(':'), "--docker-username must not contain ':'");
    let config = registry_config(server, username, password);
    let b64 = |bytes: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
    let secret = json!({
        "apiVersion": agora_schemas::API_VERSION, "kind": "Secret",
        "metadata": {"name": name, "namespace": ctx.namespace},
        "spec": {"type": "DockerConfigJson", "data": {agora_schemas::DOCKER_CONFIG_KEY: b64(config.to_string().as_bytes())}},
    });
    let secret: agora_schemas::Secret = serde_json::from_value(secret)?;
    ctx.runtime.block_on(async {
        let api: agora_client::Api<agora_schemas::Secret> =
            agora_client::Api::namespaced(ctx.client.clone(), &ctx.namespace);
        api.create(&agora_client::PostParams::default(), &secret).await?;
        println!("secret.agora/{name} created");
        Ok(true)
    })
}

/// A Docker `config.json` holding one registry's credentials, as `docker login` and kubectl write it.
fn registry_config(server: &str, username: &str, password: &str) -> Value {
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{username}:{password}"));
    json!({ "auths": { server: { "username": username, "password": password, "auth": auth } } })
}

/// The version to roll back to: `wanted` (a version or a prefix of one) when given, else the newest recorded version
/// other than `current`. `versions` are the App's recorded versions, newest first.
///
/// # Errors
/// No such version, an ambiguous prefix, or nothing to go back to.
pub fn rollback_target<'a>(
    versions: &'a [agora_schemas::AppVersion],
    current: &str,
    wanted: Option<&str>,
) -> Result<&'a agora_schemas::AppVersion> {
    let known = || versions.iter().map(|v| v.spec.version.as_str()).collect::<Vec<_>>().join(", ");
    match wanted {
        Some(wanted) => {
            let matching: Vec<&agora_schemas::AppVersion> =
                versions.iter().filter(|v| v.spec.version.starts_with(wanted)).collect();
            match matching[..] {
                [one] => Ok(one),
                [] => anyhow::bail!("no recorded version {wanted:?} (recorded: {})", known()),
                _ => anyhow::bail!("{wanted:?} names several versions ({}): give more of it", known()),
            }
        }
        None => versions.iter().find(|v| v.spec.version != current).with_context(|| {
            format!(
                "no earlier version to go back to (recorded: {})",
                if versions.is_empty() { "none".into() } else { known() }
            )
        }),
    }
}

/// `agora rollback app NAME [--to-version V]`: the App's spec becomes the recorded version's (its instance count
/// kept), and marathon rolls it out as any other change.
///
/// # Errors
/// A request that failed, or no version to go back to.
pub fn rollback(ctx: &Ctx, name: &str, to: Option<&str>, wait: Option<Duration>) -> Result<bool> {
    ctx.runtime.block_on(async {
        let apps = ctx.apps();
        let versions: agora_client::Api<agora_schemas::AppVersion> =
            agora_client::Api::namespaced(ctx.client.clone(), &ctx.namespace);
        let selector = format!("{}={name}", agora_schemas::APP_LABEL);
        let mut recorded = versions.list(&agora_client::ListParams::default().labels(&selector)).await?.items;
        recorded.retain(|v| v.spec.app == name);
        recorded.sort_by_key(|v| std::cmp::Reverse(v.metadata.creation_timestamp));
        // A conflict (someone else wrote meanwhile) is retried on the fresh object.
        for _ in 0..5 {
            let mut app = apps.get(name).await?;
            let current = app.status.as_ref().and_then(|s| s.version.clone()).unwrap_or_else(|| app.spec.version());
            let target = rollback_target(&recorded, &current, to)?;
            if target.spec.version == app.spec.version() {
                println!("app.agora/{name} already runs version {}", target.spec.version);
                return Ok(true);
            }
            let mut spec = target.spec.template.clone();
            spec.instances = app.spec.instances;
            app.spec = spec;
            match apps.replace(name, &agora_client::PostParams::default().manager("agora-rollback"), &app).await {
                Ok(stored) => {
                    println!("app.agora/{name} rolled back to version {} (from {current})", target.spec.version);
                    return match wait {
                        None => Ok(true),
                        Some(timeout) => wait_app(&apps, name, stored.metadata.generation.unwrap_or(0), timeout).await,
                    };
                }
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!("app {name} kept changing while rolling back: try again")
    })
}

/// `agora cordon|uncordon agent NAME`: whether new tasks are kept off it.
///
/// # Errors
/// A request that failed.
pub fn cordon(ctx: &Ctx, name: &str, on: bool) -> Result<bool> {
    ctx.runtime.block_on(set_unschedulable(ctx, name, on))?;
    println!("agent.agora/{name} {}", if on { "cordoned" } else { "uncordoned" });
    Ok(true)
}

async fn set_unschedulable(ctx: &Ctx, name: &str, on: bool) -> Result<()> {
    let agents = path(kind("agents")?, None, Some(name), None);
    ctx.client.merge_patch_json(&agents, "agora-cordon", &json!({"spec": {"unschedulable": on}})).await?;
    Ok(())
}

/// The tasks of an agent a drain kills: those not ended and not already being killed.
#[must_use]
pub fn drain_plan(tasks: &[agora_schemas::Task]) -> Vec<&agora_schemas::Task> {
    tasks
        .iter()
        .filter(|t| !t.status.as_ref().is_some_and(|s| s.state.is_terminal()))
        .filter(|t| t.spec.kill_requested != Some(true))
        .collect()
}

/// `agora drain agent NAME`: cordon it, kill its tasks (their frameworks start them again elsewhere), and wait until
/// none runs there.
///
/// # Errors
/// A request that failed.
pub fn drain(ctx: &Ctx, name: &str, timeout: Duration) -> Result<bool> {
    ctx.runtime.block_on(async {
        set_unschedulable(ctx, name, true).await?;
        println!("agent.agora/{name} cordoned");
        let tasks: agora_client::Api<agora_schemas::Task> = agora_client::Api::all(ctx.client.clone());
        let on_agent = agora_client::ListParams::default().fields(&format!("spec.agent={name}"));
        let listed = tasks.list(&on_agent).await?.items;
        let kill = drain_plan(&listed);
        for task in &kill {
            let task_name = task.metadata.name.clone().unwrap_or_default();
            let namespace = task.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            let one: agora_client::Api<agora_schemas::Task> =
                agora_client::Api::namespaced(ctx.client.clone(), &namespace);
            let patch = agora_client::Patch::Merge(json!({"spec": {"killRequested": true}}));
            match one.patch(&task_name, &agora_client::PatchParams::default().manager("agora-drain"), &patch).await {
                Ok(_) => println!("task.agora/{task_name} killed"),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let bar = crate::style::bar(kill.len() as u64, &format!("draining {name}"));
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left: Vec<agora_schemas::Task> = tasks
                .list(&on_agent)
                .await?
                .items
                .into_iter()
                .filter(|t| !t.status.as_ref().is_some_and(|s| s.state.is_terminal()))
                .collect();
            bar.set_position((kill.len().saturating_sub(left.len())) as u64);
            if left.is_empty() {
                bar.finish_and_clear();
                println!(
                    "agent.agora/{name} drained: {} tasks ended; their frameworks start them elsewhere",
                    kill.len()
                );
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                bar.finish_and_clear();
                let names: Vec<String> = left.iter().filter_map(|t| t.metadata.name.clone()).collect();
                eprintln!(
                    "agent.agora/{name}: not drained within {} s: {} still running",
                    timeout.as_secs(),
                    names.join(", ")
                );
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// `agora events [--for KIND/NAME] [-w]`: Events oldest first, then (with `watch`) each new one.
///
/// # Errors
/// A request that failed, or a bad `--for`.
pub fn events(ctx: &Ctx, all_namespaces: bool, about: Option<&str>, watch: bool) -> Result<bool> {
    let events = kind("events")?;
    let mut fields = Vec::new();
    if let Some(about) = about {
        let (kind_name, name) = about.split_once('/').with_context(|| format!("--for {about:?}: write KIND/NAME"))?;
        fields.push(format!("involvedObject.kind={}", kind(kind_name)?.kind));
        fields.push(format!("involvedObject.name={name}"));
    }
    let query = (!fields.is_empty()).then(|| format!("fieldSelector={}", url_encode(&fields.join(","))));
    let scope = if all_namespaces { None } else { Some(ctx.namespace.as_str()) };
    let list_path = path(events, scope, None, query.as_deref());
    ctx.runtime.block_on(async {
        let list = ctx.client.get_json(&list_path, "application/json").await?;
        let mut items = list["items"].as_array().cloned().unwrap_or_default();
        items.sort_by_key(|e| agora_schemas::columns::timestamp(e, "/lastTimestamp"));
        let now = Timestamp::now();
        let mut lines = vec![event_header(all_namespaces)];
        lines.extend(items.iter().map(|e| event_line(e, now, all_namespaces)));
        if items.is_empty() && !watch {
            eprintln!("No events found{}.", scope.map_or(String::new(), |n| format!(" in {n} namespace")));
            return Ok(true);
        }
        print!("{}", crate::style::aligned(&lines, "", ctx.colour));
        if !watch {
            return Ok(true);
        }
        let rv = list.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default();
        let mut watch_query = vec!["watch=true".to_owned(), format!("resourceVersion={rv}")];
        watch_query.extend(query.clone());
        let mut stream =
            ctx.client.watch_json(&path(events, scope, None, Some(&watch_query.join("&"))), "application/json").await?;
        while let Some(event) = stream.next().await {
            let event = event?;
            if event["type"] == "ERROR" {
                anyhow::bail!("{}", event["object"]["message"].as_str().unwrap_or("the watch failed"));
            }
            if event["type"] == "ADDED" || event["type"] == "MODIFIED" {
                let line = event_line(&event["object"], Timestamp::now(), all_namespaces);
                print!("{}", crate::style::aligned(&[line], "", ctx.colour));
            }
        }
        Ok(true)
    })
}

fn event_header(namespaces: bool) -> Vec<String> {
    let mut header: Vec<String> = Vec::new();
    if namespaces {
        header.push("NAMESPACE".into());
    }
    header.extend(["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"].map(str::to_owned));
    header
}

/// One Event as `agora events` prints it.
#[must_use]
pub fn event_line(event: &Value, now: Timestamp, namespaces: bool) -> Vec<String> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    let seen = agora_schemas::columns::timestamp(event, "/lastTimestamp")
        .map_or_else(String::new, |t| agora_schemas::columns::age(now, t));
    let count = event["count"].as_i64().filter(|c| *c > 1).map_or(String::new(), |c| format!(" (x{c})"));
    let object = format!(
        "{}/{}",
        text(event.pointer("/involvedObject/kind")).to_lowercase(),
        text(event.pointer("/involvedObject/name"))
    );
    let mut line = Vec::new();
    if namespaces {
        line.push(text(event.pointer("/metadata/namespace")));
    }
    line.extend([
        format!("{seen}{count}"),
        text(event.get("type")),
        text(event.get("reason")),
        object,
        text(event.get("message")),
    ]);
    line
}

/// `agora top agents`: what each agent has, what is allocated on it, and what its tasks use.
#[must_use]
pub fn top_agents(agents: &[agora_schemas::Agent], tasks: &[agora_schemas::Task]) -> Vec<Vec<String>> {
    let number = agora_schemas::columns::number;
    let mut lines = vec![
        ["NAME", "CPUS", "CPU%", "MEM(MiB)", "MEM%", "DISK(MiB)", "TASKS", "MEM USED(MiB)"].map(str::to_owned).to_vec(),
    ];
    for agent in agents {
        let name = agent.metadata.name.clone().unwrap_or_default();
        let total = &agent.spec.resources;
        let allocated = agent.status.as_ref().and_then(|s| s.allocated.clone()).unwrap_or_default();
        let running: Vec<&agora_schemas::Task> = tasks
            .iter()
            .filter(|t| t.spec.agent == name && !t.status.as_ref().is_some_and(|s| s.state.is_terminal()))
            .collect();
        let used: u64 = running.iter().filter_map(|t| t.status.as_ref()?.usage.as_ref()).map(|u| u.memory_bytes).sum();
        let percent =
            |used: f64, total: f64| if total > 0.0 { format!("{:.0}%", used / total * 100.0) } else { "-".into() };
        lines.push(vec![
            name,
            format!("{}/{}", number(allocated.cpus), number(total.cpus)),
            percent(allocated.cpus, total.cpus),
            format!("{}/{}", number(allocated.mem), number(total.mem)),
            percent(allocated.mem, total.mem),
            format!("{}/{}", number(allocated.disk), number(total.disk)),
            running.len().to_string(),
            format!("{:.1}", used as f64 / 1_048_576.0),
        ]);
    }
    lines
}

/// `agora top tasks`: each task not ended, with the CPU time and memory its cgroup reports against its limits; with
/// `namespaces` (across every namespace), a NAMESPACE column first.
#[must_use]
pub fn top_tasks(tasks: &[agora_schemas::Task], namespaces: bool) -> Vec<Vec<String>> {
    let number = agora_schemas::columns::number;
    let mut header = vec!["NAME", "AGENT", "STATE", "CPUS", "CPU(s)", "MEM(MiB)", "MEM%", "PEAK(MiB)"];
    if namespaces {
        header.insert(0, "NAMESPACE");
    }
    let mut lines = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    for task in tasks {
        let Some(status) = &task.status else { continue };
        if status.state.is_terminal() {
            continue;
        }
        let usage = status.usage.as_ref();
        let mib = |bytes: u64| format!("{:.1}", bytes as f64 / 1_048_576.0);
        let memory = usage.map(|u| u.memory_bytes);
        let namespace = namespaces.then(|| task.metadata.namespace.clone().unwrap_or_default());
        lines.push(
            namespace
                .into_iter()
                .chain([
                    task.metadata.name.clone().unwrap_or_default(),
                    task.spec.agent.clone(),
                    format!("{:?}", status.state),
                    number(task.spec.cpus),
                    usage.map_or_else(|| "-".into(), |u| number(u.cpu_seconds)),
                    memory.map_or_else(|| "-".into(), |m| format!("{}/{}", mib(m), number(task.spec.mem))),
                    memory.map_or_else(
                        || "-".into(),
                        |m| {
                            if task.spec.mem > 0.0 {
                                format!("{:.0}%", m as f64 / 1_048_576.0 / task.spec.mem * 100.0)
                            } else {
                                "-".into()
                            }
                        },
                    ),
                    usage.and_then(|u| u.memory_peak_bytes).map_or_else(|| "-".into(), mib),
                ])
                .collect(),
        );
    }
    lines
}

/// `agora top agents|tasks`.
///
/// # Errors
/// A request that failed.
pub fn top(ctx: &Ctx, what: &str, all_namespaces: bool) -> Result<bool> {
    let lines = ctx.runtime.block_on(async {
        let tasks_api: agora_client::Api<agora_schemas::Task> = if all_namespaces || what == "agents" {
            agora_client::Api::all(ctx.client.clone())
        } else {
            agora_client::Api::namespaced(ctx.client.clone(), &ctx.namespace)
        };
        let tasks = tasks_api.list(&agora_client::ListParams::default()).await?.items;
        anyhow::Ok(if what == "agents" {
            let agents: agora_client::Api<agora_schemas::Agent> = agora_client::Api::all(ctx.client.clone());
            top_agents(&agents.list(&agora_client::ListParams::default()).await?.items, &tasks)
        } else {
            top_tasks(&tasks, all_namespaces)
        })
    })?;
    if lines.len() == 1 {
        eprintln!("No {what} found.");
        return Ok(true);
    }
    print!("{}", crate::style::aligned(&lines, "", ctx.colour));
    Ok(true)
}

/// Complete lines of `chunk` (after what `partial` held from before) as `[prefix] line`; what is left without a
/// newline stays in `partial`.
pub fn prefixed_lines(prefix: &str, partial: &mut Vec<u8>, chunk: &[u8]) -> String {
    partial.extend_from_slice(chunk);
    let mut out = String::new();
    while let Some(end) = partial.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = partial.drain(..=end).collect();
        out.push_str(&format!("[{prefix}] {}", String::from_utf8_lossy(&line)));
    }
    out
}

/// What `agora logs` reads.
pub struct Logs {
    pub target: String,
    pub follow: bool,
    pub tail: Option<u64>,
    pub stderr: bool,
    pub all: bool,
    /// The bytes as the task wrote them even on a terminal (elsewhere they always are).
    pub raw: bool,
}

/// `agora logs TASK | app/NAME | cronjob/NAME`: a task's output; for an app or a job, its newest task's, or with
/// `all` every task's not ended, line by line with the task's name in front.
///
/// # Errors
/// A request that failed (a 404 for a task without a log yet).
pub fn logs(ctx: &Ctx, logs: &Logs) -> Result<bool> {
    let tasks: agora_client::Api<agora_schemas::Task> =
        agora_client::Api::namespaced(ctx.client.clone(), &ctx.namespace);
    ctx.runtime.block_on(async {
        // TASK or task/NAME is the task itself; app/NAME and cronjob/NAME are found by their tasks' label.
        let owner = match logs.target.split_once('/') {
            None => None,
            Some((kind_name, name)) => match kind(kind_name)?.kind {
                "Task" => None,
                "App" => Some((kind_name, name, agora_schemas::APP_LABEL)),
                "CronJob" => Some((kind_name, name, agora_schemas::CRONJOB_LABEL)),
                other => anyhow::bail!("{other}s have no logs: name a task, app/NAME or cronjob/NAME"),
            },
        };
        let chosen: Vec<String> = match owner {
            None => vec![logs.target.rsplit('/').next().unwrap_or_default().to_owned()],
            Some((kind_name, name, label)) => {
                let params = agora_client::ListParams::default().labels(&format!("{label}={name}"));
                let mut found = tasks.list(&params).await?.items;
                found.sort_by_key(|t| std::cmp::Reverse(t.metadata.creation_timestamp));
                if logs.all {
                    found.retain(|t| !t.status.as_ref().is_some_and(|s| s.state.is_terminal()));
                } else {
                    found.truncate(1);
                }
                let running = if logs.all { " running" } else { "" };
                anyhow::ensure!(!found.is_empty(), "{kind_name}/{name} has no tasks{running}");
                found.into_iter().filter_map(|t| t.metadata.name).collect()
            }
        };
        let mut params = agora_client::LogParams::default();
        if logs.follow {
            params = params.follow();
        }
        if let Some(lines) = logs.tail {
            params = params.tail(lines);
        }
        if logs.stderr {
            params = params.stderr();
        }
        use std::io::{IsTerminal as _, Write as _};
        // On a terminal, what a task wrote cannot drive it (escape sequences are shown, not obeyed).
        let mut shown = (!logs.raw && std::io::stdout().is_terminal()).then(crate::style::TerminalText::default);
        if let [one] = &chosen[..] {
            let mut stream = tasks.log_stream(one, &params).await?;
            let mut stdout = std::io::stdout();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                match &mut shown {
                    Some(shown) => stdout.write_all(shown.feed(&chunk).as_bytes()),
                    None => stdout.write_all(&chunk),
                }
                .context("writing the log")?;
                stdout.flush().context("writing the log")?;
            }
            return Ok::<bool, anyhow::Error>(true);
        }
        let mut streams = Vec::new();
        for name in chosen {
            let stream = tasks.log_stream(&name, &params).await?;
            streams.push(stream.map(move |chunk| (name.clone(), chunk)).boxed());
        }
        let mut merged = futures::stream::select_all(streams);
        let mut partial: std::collections::HashMap<String, Vec<u8>> = std::collections::HashMap::new();
        let mut stdout = std::io::stdout();
        while let Some((name, chunk)) = merged.next().await {
            let mut text = prefixed_lines(&name, partial.entry(name.clone()).or_default(), &chunk?);
            if let Some(shown) = &mut shown {
                text = shown.feed(text.as_bytes());
            }
            stdout.write_all(text.as_bytes()).context("writing the log")?;
            stdout.flush().context("writing the log")?;
        }
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(version: &str) -> agora_schemas::AppVersion {
        serde_json::from_value(json!({"apiVersion": "agora/v1", "kind": "AppVersion",
            "metadata": {"name": format!("web-{version}"), "namespace": "default"},
            "spec": {"app": "web", "version": version, "template": {"cmd": "x"}}}))
        .unwrap()
    }

    #[test]
    fn rollback_goes_to_the_newest_other_version_or_the_one_named() {
        let versions = [version("c3"), version("b2"), version("b7"), version("a1")];
        assert_eq!(rollback_target(&versions, "c3", None).unwrap().spec.version, "b2");
        assert_eq!(rollback_target(&versions, "b2", None).unwrap().spec.version, "c3");
        assert_eq!(rollback_target(&versions, "c3", Some("a")).unwrap().spec.version, "a1");
        let ambiguous = rollback_target(&versions, "c3", Some("b")).unwrap_err().to_string();
        assert!(ambiguous.contains("several versions"), "{ambiguous}");
        let missing = rollback_target(&versions, "c3", Some("zz")).unwrap_err().to_string();
        assert!(missing.contains("no recorded version \"zz\"") && missing.contains("c3, b2, b7, a1"), "{missing}");
        let nothing = rollback_target(&versions[..1], "c3", None).unwrap_err().to_string();
        assert!(nothing.contains("no earlier version"), "{nothing}");
    }

    fn task(name: &str, agent: &str, state: &str, kill: bool, memory: Option<u64>) -> agora_schemas::Task {
        let mut status = json!({"state": state});
        if let Some(bytes) = memory {
            status["usage"] = json!({"cpuSeconds": 1.5, "memoryBytes": bytes});
        }
        serde_json::from_value(json!({"apiVersion": "agora/v1", "kind": "Task",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"agent": agent, "framework": "marathon", "cmd": "x", "cpus": 0.5, "mem": 64.0, "disk": 0.0,
                "killRequested": kill},
            "status": status}))
        .unwrap()
    }

    #[test]
    fn a_drain_kills_what_still_runs_once() {
        let tasks = [
            task("a", "n1", "Running", false, None),
            task("b", "n1", "Finished", false, None),
            task("c", "n1", "Killing", true, None),
            task("d", "n1", "Staging", false, None),
        ];
        let names: Vec<&str> = drain_plan(&tasks).iter().filter_map(|t| t.metadata.name.as_deref()).collect();
        assert_eq!(names, ["a", "d"]);
    }

    #[test]
    fn top_shows_allocation_and_usage() {
        let agent: agora_schemas::Agent = serde_json::from_value(json!({"apiVersion": "agora/v1", "kind": "Agent",
            "metadata": {"name": "n1"}, "spec": {"resources": {"cpus": 2.0, "mem": 2048.0, "disk": 1000.0}},
            "status": {"allocated": {"cpus": 0.5, "mem": 512.0, "disk": 0.0}}}))
        .unwrap();
        let tasks =
            [task("a", "n1", "Running", false, Some(32 << 20)), task("b", "n1", "Failed", false, Some(1 << 30))];
        let text = crate::style::aligned(&top_agents(&[agent], &tasks), "", false);
        assert_eq!(
            text,
            "NAME   CPUS    CPU%   MEM(MiB)   MEM%   DISK(MiB)   TASKS   MEM USED(MiB)\n\
             n1     0.5/2   25%    512/2048   25%    0/1000      1       32.0\n"
        );
        let text = crate::style::aligned(&top_tasks(&tasks, false), "", false);
        assert_eq!(
            text,
            "NAME   AGENT   STATE     CPUS   CPU(s)   MEM(MiB)   MEM%   PEAK(MiB)\n\
             a      n1      Running   0.5    1.5      32.0/64    50%    -\n"
        );
        let text = crate::style::aligned(&top_tasks(&tasks, true), "", false);
        assert!(text.starts_with("NAMESPACE   NAME   AGENT"), "{text}");
        assert!(text.contains("\ndefault     a      n1 "), "{text}");
    }

    #[test]
    fn interleaved_logs_keep_lines_whole() {
        let mut partial = Vec::new();
        assert_eq!(prefixed_lines("web-1", &mut partial, b"hel"), "");
        assert_eq!(prefixed_lines("web-1", &mut partial, b"lo\nwor"), "[web-1] hello\n");
        assert_eq!(prefixed_lines("web-1", &mut partial, b"ld\n\n"), "[web-1] world\n[web-1] \n");
        assert!(partial.is_empty());
    }

    #[test]
    fn events_name_their_object() {
        let event = json!({"metadata": {"namespace": "shop"}, "involvedObject": {"kind": "App", "name": "cache"},
            "reason": "Deploying", "type": "Normal", "message": "m", "count": 3, "lastTimestamp": "2026-12-01T00:00:00Z"});
        let now = "2026-12-01T00:01:00Z".parse().unwrap();
        assert_eq!(event_line(&event, now, true), ["shop", "60s (x3)", "Normal", "Deploying", "app/cache", "m"]);
    }
}

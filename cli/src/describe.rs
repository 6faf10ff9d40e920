//! `agora describe KIND NAME`: one object for a person — what it is, what it was asked to be, where it stands and
//! why, what it runs, and the recent Events about it — as `kubectl describe` lays it out.
//!
//! [`render`] is a pure function of the object and what is related to it (its tasks, versions and Events), so the
//! layout is tested without a server; [`run`] only reads.

use anyhow::{Context, Result};
use jiff::Timestamp;
use serde_json::Value;

use agora_schemas::columns::{self, Column};

/// What is shown with an object.
#[derive(Debug, Default, Clone)]
pub struct Related {
    /// Its tasks (an App's or a CronJob's, or an Agent's), newest first.
    pub tasks: Vec<Value>,
    /// An App's recorded versions, newest first.
    pub versions: Vec<Value>,
    /// Events about it, oldest first.
    pub events: Vec<Value>,
}

/// Runs `agora describe`.
///
/// # Errors
/// An unknown kind, or a request that failed (a missing object is not an error: it is said, and false returned).
pub fn run(client: &agora_client::Client, kind: &str, name: &str, namespace: &str, colour: bool) -> Result<bool> {
    let info = crate::get::kind(kind)?;
    let path = crate::get::path(info, Some(namespace), Some(name), None);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let object = match runtime.block_on(client.get_json(&path, "application/json")) {
        Ok(object) => object,
        // A missing object is "not done" (exit 1), as for get and delete.
        Err(e) if e.is_not_found() => {
            eprintln!("error: {}", crate::error_chain(&e.into()));
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    let related = runtime.block_on(async {
        let mut related = Related::default();
        let selector = match info.kind {
            "App" => Some(format!("labelSelector={}%3D{name}", agora_schemas::APP_LABEL)),
            "CronJob" => Some(format!("labelSelector={}%3D{name}", agora_schemas::CRONJOB_LABEL)),
            _ => None,
        };
        let tasks = crate::get::kind("tasks")?;
        if let Some(selector) = selector {
            related.tasks = items(client, &crate::get::path(tasks, Some(namespace), None, Some(&selector))).await?;
        } else if info.kind == "Agent" {
            let selector = format!("fieldSelector=spec.agent%3D{name}");
            related.tasks = items(client, &crate::get::path(tasks, None, None, Some(&selector))).await?;
        }
        sort_newest_first(&mut related.tasks);
        if info.kind == "App" {
            let versions = crate::get::kind("appversions")?;
            let selector = format!("labelSelector={}%3D{name}", agora_schemas::APP_LABEL);
            related.versions =
                items(client, &crate::get::path(versions, Some(namespace), None, Some(&selector))).await?;
            related.versions.retain(|v| v.pointer("/spec/app").and_then(Value::as_str) == Some(name));
            sort_newest_first(&mut related.versions);
        }
        let events = crate::get::kind("events")?;
        let scope = if info.namespaced { Some(namespace) } else { None };
        let selector = format!("fieldSelector=involvedObject.kind%3D{},involvedObject.name%3D{name}", info.kind);
        related.events =
            items(client, &crate::get::path(events, scope, None, Some(&selector))).await.unwrap_or_default();
        related.events.sort_by_key(|e| columns::timestamp(e, "/lastTimestamp"));
        anyhow::Ok(related)
    })?;
    print!("{}", render(info, &object, &related, Timestamp::now(), colour));
    Ok(true)
}

/// The `items` of a list.
pub(crate) async fn items(client: &agora_client::Client, path: &str) -> Result<Vec<Value>> {
    let list = client.get_json(path, "application/json").await?;
    Ok(list.get("items").and_then(Value::as_array).cloned().unwrap_or_default())
}

fn sort_newest_first(objects: &mut [Value]) {
    objects.sort_by(|a, b| {
        let created = |o: &Value| columns::timestamp(o, "/metadata/creationTimestamp");
        created(b).cmp(&created(a)).then_with(|| b["metadata"]["name"].as_str().cmp(&a["metadata"]["name"].as_str()))
    });
}

/// The description of `object` (of kind `info`) at `now`.
#[must_use]
pub fn render(
    info: &agora_schemas::KindInfo,
    object: &Value,
    related: &Related,
    now: Timestamp,
    colour: bool,
) -> String {
    let mut out = Fields::default();
    let meta = &object["metadata"];
    out.field("Name", text(&meta["name"]));
    if info.namespaced {
        out.field("Namespace", text(&meta["namespace"]));
    }
    out.field("Kind", format!("{} ({})", info.kind, object["apiVersion"].as_str().unwrap_or("agora/v1")));
    out.field("Labels", pairs(&meta["labels"]));
    if meta.get("annotations").is_some_and(|a| a.as_object().is_some_and(|m| !m.is_empty())) {
        out.field("Annotations", pairs(&meta["annotations"]));
    }
    if let Some(created) = columns::timestamp(object, "/metadata/creationTimestamp") {
        out.field("Created", format!("{created} ({} ago)", columns::age(now, created)));
    }
    if let Some(deleting) = columns::timestamp(object, "/metadata/deletionTimestamp") {
        out.field("Deleting", format!("since {deleting}"));
    }
    let mut body = String::new();
    match info.kind {
        "App" => app(object, &mut out, &mut body, related, now, colour),
        "CronJob" => cronjob(object, &mut out, &mut body, related, now, colour),
        "Task" => task(object, &mut out, now),
        "Agent" => agent(object, &mut out, &mut body, related, now, colour),
        "Secret" => secret(object, &mut out, &mut body),
        _ => {
            for part in ["spec", "status"] {
                if let Some(value) = object.get(part) {
                    body.push_str(&format!("{}:\n", capitalised(part)));
                    body.push_str(&indented(&serde_yaml_ng::to_string(value).unwrap_or_default()));
                }
            }
        }
    }
    let mut text = out.finish();
    text.push_str(&body);
    text.push_str(&events(&related.events, now, colour));
    text
}

/// `Name:  value` lines with the values aligned.
#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl Fields {
    fn field(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((name.to_owned(), value.into()));
    }

    fn maybe(&mut self, name: &str, value: Option<String>) {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            self.field(name, value);
        }
    }

    fn finish(self) -> String {
        let width = self.0.iter().map(|(n, _)| n.len() + 1).max().unwrap_or(0);
        // What the cluster says (a command, a message, a label) cannot drive the terminal.
        self.0
            .iter()
            .map(|(name, value)| format!("{:<width$}  {}\n", format!("{name}:"), crate::style::escaped(value)))
            .collect()
    }
}

fn app(object: &Value, out: &mut Fields, body: &mut String, related: &Related, now: Timestamp, colour: bool) {
    let spec = &object["spec"];
    out.maybe("Image", spec.pointer("/container/image").map(text));
    out.field("Command", command(spec));
    out.field("Resources", resources(spec));
    let status = &object["status"];
    out.field(
        "Instances",
        format!(
            "{} wanted: {} running, {} healthy, {} staged, {} unhealthy",
            int(&spec["instances"]),
            int(&status["tasksRunning"]),
            int(&status["tasksHealthy"]),
            int(&status["tasksStaged"]),
            int(&status["tasksUnhealthy"])
        ),
    );
    out.maybe("Version", status["version"].as_str().map(str::to_owned));
    out.maybe("Health checks", list(&spec["healthChecks"], health_check));
    out.maybe("Constraints", list(&spec["constraints"], joined_words));
    out.maybe("Delayed until", status["delayedUntil"].as_str().map(str::to_owned));
    out.maybe(
        "Last failure",
        status.get("lastTaskFailure").map(|f| {
            let when =
                columns::timestamp(f, "/timestamp").map_or(String::new(), |t| format!(" {} ago", columns::age(now, t)));
            format!("{} {}{when}: {}", text(&f["task"]), text(&f["state"]), text(&f["message"]))
        }),
    );
    out.maybe(
        "Offers declined",
        status["offerRejections"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")),
    );
    match status.get("deployment") {
        Some(d) => {
            out.field(
                "Deployment",
                format!(
                    "to {} from {}: {} ({} new, {} healthy, {} old)",
                    text(&d["to"]),
                    list(&d["from"], text).unwrap_or_else(|| "nothing".into()),
                    text(&d["step"]),
                    int(&d["new"]),
                    int(&d["healthy"]),
                    int(&d["old"])
                ),
            );
            out.maybe("Waiting for", d["waiting"].as_str().map(str::to_owned));
        }
        None => out.field("Deployment", "none under way"),
    }
    body.push_str(&conditions(status, colour));
    body.push_str(&section("Tasks", agora_schemas::task::TASK_COLUMNS, &related.tasks, now, colour));
    body.push_str(&section("Versions", agora_schemas::app::APP_VERSION_COLUMNS, &related.versions, now, colour));
}

fn cronjob(object: &Value, out: &mut Fields, body: &mut String, related: &Related, now: Timestamp, colour: bool) {
    let spec = &object["spec"];
    match spec["schedule"].as_str() {
        Some(schedule) => {
            let zone = spec["scheduleTimeZone"].as_str().map_or(String::new(), |z| format!(" ({z})"));
            out.field("Schedule", format!("{schedule}{zone}"));
        }
        None => out.field("Runs after", list(&spec["parents"], text).unwrap_or_default()),
    }
    out.maybe("Image", spec.pointer("/container/image").map(text));
    out.field("Command", command(spec));
    out.field("Resources", resources(spec));
    out.maybe("Disabled", spec["disabled"].as_bool().filter(|d| *d).map(|_| "yes: only triggers run".to_owned()));
    let status = &object["status"];
    out.maybe(
        "Next run",
        columns::timestamp(object, "/status/nextScheduleTime")
            .map(|t| format!("{t} ({})", text(&columns::until(object, "/status/nextScheduleTime", now)))),
    );
    out.maybe("Last run for", status["lastScheduleTime"].as_str().map(str::to_owned));
    out.field(
        "Runs",
        format!(
            "{} succeeded, {} failed ({} since the last success), {} missed, {} skipped",
            int(&status["successCount"]),
            int(&status["errorCount"]),
            int(&status["errorsSinceLastSuccess"]),
            int(&status["missedRuns"]),
            int(&status["skippedRuns"])
        ),
    );
    out.maybe("Active", list(&status["active"], text));
    body.push_str(&conditions(status, colour));
    let runs: Vec<Vec<String>> = status["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let started = columns::timestamp(r, "/createdAt");
            let finished = columns::timestamp(r, "/finishedAt");
            let took = match (started, finished) {
                (Some(s), Some(f)) => columns::human_duration(f.as_second() - s.as_second()),
                _ => String::new(),
            };
            vec![
                text(&r["task"]),
                r["instant"].as_str().map_or_else(|| format!("manual {}", text(&r["trigger"])), str::to_owned),
                int(&r["attempt"]),
                text(&r["result"]),
                took,
                text(&r["message"]),
            ]
        })
        .collect();
    if !runs.is_empty() {
        let mut lines = vec![["TASK", "FOR", "ATTEMPT", "RESULT", "TOOK", "MESSAGE"].map(str::to_owned).to_vec()];
        lines.extend(runs);
        body.push_str("Recent runs:\n");
        body.push_str(&crate::style::aligned(&lines, "  ", colour));
    }
    body.push_str(&section("Tasks", agora_schemas::task::TASK_COLUMNS, &related.tasks, now, colour));
}

/// A Secret's type and its keys with their sizes — never a value, as `kubectl describe secret`.
fn secret(object: &Value, out: &mut Fields, body: &mut String) {
    out.field("Type", text(&object["spec"]["type"]));
    body.push_str("Data:\n");
    for (key, value) in object["spec"]["data"].as_object().into_iter().flatten() {
        let bytes = value
            .as_str()
            .and_then(|v| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, v).ok())
            .map_or(0, |b| b.len());
        body.push_str(&format!("  {key}:  {bytes} bytes\n"));
    }
}

fn task(object: &Value, out: &mut Fields, now: Timestamp) {
    let spec = &object["spec"];
    let status = &object["status"];
    out.field("Agent", text(&spec["agent"]));
    out.field("Framework", text(&spec["framework"]));
    out.maybe("Image", spec.pointer("/container/image").map(text));
    out.field("Command", command(spec));
    out.field("Resources", resources(spec));
    out.maybe("Ports", list(&spec["ports"], |p| int(&p["port"])));
    out.field("State", text(&status["state"]));
    out.maybe("Reason", status["reason"].as_str().map(str::to_owned));
    out.maybe("Message", status["message"].as_str().map(str::to_owned));
    out.maybe("Exit code", status.get("exitCode").map(int));
    out.maybe(
        "Started",
        columns::timestamp(object, "/status/startedAt").map(|t| format!("{t} ({} ago)", columns::age(now, t))),
    );
    out.maybe("Finished", status["finishedAt"].as_str().map(str::to_owned));
    out.maybe(
        "Healthy",
        status["healthy"].as_bool().map(|h| {
            let failures = int(&status["healthCheckFailures"]);
            let last =
                status.pointer("/lastHealthCheck/message").map_or(String::new(), |m| format!(", last: {}", text(m)));
            format!("{h} ({failures} failed in a row{last})")
        }),
    );
    out.maybe(
        "Usage",
        status.get("usage").map(|u| {
            format!(
                "{} s of CPU, {} MiB of memory (peak {} MiB)",
                columns::number(u["cpuSeconds"].as_f64().unwrap_or(0.0)),
                mib(&u["memoryBytes"]),
                mib(&u["memoryPeakBytes"])
            )
        }),
    );
    out.maybe("Kill requested", spec["killRequested"].as_bool().filter(|k| *k).map(|_| "yes".to_owned()));
}

fn agent(object: &Value, out: &mut Fields, body: &mut String, related: &Related, now: Timestamp, colour: bool) {
    let spec = &object["spec"];
    let status = &object["status"];
    out.maybe("Hostname", status["hostname"].as_str().map(str::to_owned));
    out.maybe("Address", status["address"].as_str().map(str::to_owned));
    out.field("Resources", text(&columns::resources(spec.get("resources"))));
    out.field("Allocated", text(&columns::resources(status.get("allocated"))));
    out.field("Attributes", pairs(&spec["attributes"]));
    out.field("Cordoned", if spec["unschedulable"].as_bool() == Some(true) { "yes: no new tasks" } else { "no" });
    out.maybe("Version", status["version"].as_str().map(str::to_owned));
    body.push_str(&conditions(status, colour));
    body.push_str(&section("Tasks", agora_schemas::task::TASK_COLUMNS, &related.tasks, now, colour));
}

fn conditions(status: &Value, colour: bool) -> String {
    let Some(list) = status["conditions"].as_array().filter(|l| !l.is_empty()) else { return String::new() };
    let mut lines = vec![["TYPE", "STATUS", "REASON", "MESSAGE"].map(str::to_owned).to_vec()];
    lines.extend(
        list.iter().map(|c| vec![text(&c["type"]), text(&c["status"]), text(&c["reason"]), text(&c["message"])]),
    );
    format!("Conditions:\n{}", crate::style::aligned(&lines, "  ", colour))
}

/// Objects as the server's Table for their kind prints them (the priority-0 columns).
fn section(title: &str, kind: &'static [Column], objects: &[Value], now: Timestamp, colour: bool) -> String {
    if objects.is_empty() {
        return format!("{title}:  <none>\n");
    }
    let shown: Vec<&Column> = columns::table_columns(kind).filter(|c| c.priority == 0).collect();
    let mut lines = vec![shown.iter().map(|c| c.name.to_uppercase()).collect::<Vec<_>>()];
    lines.extend(objects.iter().map(|o| shown.iter().map(|c| text(&c.render(o, now))).collect()));
    format!("{title}:\n{}", crate::style::aligned(&lines, "  ", colour))
}

fn events(events: &[Value], now: Timestamp, colour: bool) -> String {
    if events.is_empty() {
        return "Events:  <none>\n".to_owned();
    }
    let mut lines = vec![["LAST SEEN", "TYPE", "REASON", "FROM", "MESSAGE"].map(str::to_owned).to_vec()];
    for event in events {
        let seen = columns::timestamp(event, "/lastTimestamp").map_or(String::new(), |t| columns::age(now, t));
        let count = event["count"].as_i64().filter(|c| *c > 1).map_or(String::new(), |c| format!(" (x{c})"));
        lines.push(vec![
            format!("{seen}{count}"),
            text(&event["type"]),
            text(&event["reason"]),
            text(&event.pointer("/source/component").cloned().unwrap_or_default()),
            text(&event["message"]),
        ]);
    }
    format!("Events:\n{}", crate::style::aligned(&lines, "  ", colour))
}

fn command(spec: &Value) -> String {
    spec["cmd"].as_str().map(str::to_owned).or_else(|| spec["command"].as_str().map(str::to_owned)).unwrap_or_else(
        || {
            spec["args"].as_array().map_or_else(
                || "(the image's entrypoint)".into(),
                |a| a.iter().map(|v| serde_json::to_string(v).unwrap_or_default()).collect::<Vec<_>>().join(" "),
            )
        },
    )
}

fn resources(spec: &Value) -> String {
    let amount = |name: &str| columns::number(spec[name].as_f64().unwrap_or(0.0));
    format!("cpus {}, mem {} MiB, disk {} MiB", amount("cpus"), amount("mem"), amount("disk"))
}

fn health_check(check: &Value) -> String {
    let protocol = check["protocol"].as_str().unwrap_or("HTTP");
    let target = match protocol {
        "COMMAND" => format!("`{}`", text(&check["command"])),
        "HTTP" | "HTTPS" => {
            let index = int(&check["portIndex"]);
            format!("{} on $PORT{index} (port index {index})", check["path"].as_str().unwrap_or("/"))
        }
        _ => {
            let index = int(&check["portIndex"]);
            format!("$PORT{index} (port index {index})")
        }
    };
    format!(
        "{protocol} {target} every {}s (grace {}s, timeout {}s, {} failures kill)",
        int(&check["intervalSeconds"]),
        int(&check["gracePeriodSeconds"]),
        int(&check["timeoutSeconds"]),
        int(&check["maxConsecutiveFailures"])
    )
}

fn list(value: &Value, each: impl Fn(&Value) -> String) -> Option<String> {
    let items = value.as_array().filter(|l| !l.is_empty())?;
    Some(items.iter().map(each).collect::<Vec<_>>().join("; "))
}

fn joined_words(value: &Value) -> String {
    value.as_array().map_or_else(|| text(value), |parts| parts.iter().map(text).collect::<Vec<_>>().join(" "))
}

fn pairs(map: &Value) -> String {
    match map.as_object() {
        Some(m) if !m.is_empty() => m.iter().map(|(k, v)| format!("{k}={}", text(v))).collect::<Vec<_>>().join(", "),
        _ => "<none>".to_owned(),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn int(value: &Value) -> String {
    value.as_i64().map_or_else(|| value.as_f64().map_or("0".into(), columns::number), |n| n.to_string())
}

fn mib(bytes: &Value) -> String {
    bytes.as_f64().map_or("?".into(), |b| columns::number(b / 1_048_576.0))
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |first| first.to_uppercase().chain(chars).collect())
}

fn indented(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_app_is_described_with_its_deployment_tasks_versions_and_events() {
        let now: Timestamp = "2026-12-01T12:10:00Z".parse().unwrap();
        let app = json!({
            "apiVersion": "agora/v1", "kind": "App",
            "metadata": {"name": "web", "namespace": "default", "labels": {"tier": "frontend"},
                "creationTimestamp": "2026-12-01T12:00:00Z"},
            "spec": {"instances": 2, "cmd": "python3 -m http.server $PORT0", "cpus": 0.25, "mem": 64.0, "disk": 0.0,
                "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0, "intervalSeconds": 10,
                    "gracePeriodSeconds": 30, "timeoutSeconds": 2, "maxConsecutiveFailures": 3}]},
            "status": {"instances": 2, "tasksRunning": 2, "tasksHealthy": 1, "tasksStaged": 0, "tasksUnhealthy": 0,
                "version": "5f2c", "consecutiveFailures": 0,
                "deployment": {"from": ["a1b2"], "to": "5f2c", "step": "WaitingForHealth", "old": 1, "new": 1,
                    "healthy": 0, "waiting": "1 of 1 new tasks to pass HTTP / (last: 503)"},
                "conditions": [{"type": "Available", "status": "True", "reason": "MinimumHealthy", "message": "1 of 2 healthy"}]},
        });
        let task = json!({"metadata": {"name": "web-5f2c-1", "namespace": "default", "creationTimestamp": "2026-12-01T12:09:00Z"},
            "spec": {"agent": "a1", "framework": "marathon", "ports": [{"port": 31000}]},
            "status": {"state": "Running"}});
        let event = json!({"reason": "Deploying", "type": "Normal", "message": "rolling out 5f2c",
            "source": {"component": "marathon"}, "count": 2, "lastTimestamp": "2026-12-01T12:09:30Z"});
        let info = agora_schemas::resource_info("apps").unwrap();
        let related = Related { tasks: vec![task], versions: vec![], events: vec![event] };
        let text = render(info, &app, &related, now, false);
        let expected_start = "\
Name:           web
Namespace:      default
Kind:           App (agora/v1)
Labels:         tier=frontend
Created:        2026-12-01T12:00:00Z (10m ago)
Command:        python3 -m http.server $PORT0
Resources:      cpus 0.25, mem 64 MiB, disk 0 MiB
Instances:      2 wanted: 2 running, 1 healthy, 0 staged, 0 unhealthy
Version:        5f2c
Health checks:  HTTP / on $PORT0 (port index 0) every 10s (grace 30s, timeout 2s, 3 failures kill)
Deployment:     to 5f2c from a1b2: WaitingForHealth (1 new, 0 healthy, 1 old)
Waiting for:    1 of 1 new tasks to pass HTTP / (last: 503)
Conditions:
  TYPE        STATUS   REASON           MESSAGE
  Available   True     MinimumHealthy   1 of 2 healthy
";
        assert!(text.starts_with(expected_start), "{text}");
        assert!(text.contains("Tasks:\n  NAME         STATE"), "{text}");
        assert!(text.contains("  web-5f2c-1   Running"), "{text}");
        assert!(text.contains("Versions:  <none>\n"), "{text}");
        assert!(
            text.ends_with("Events:\n  LAST SEEN   TYPE     REASON      FROM       MESSAGE\n  30s (x2)    Normal   Deploying   marathon   rolling out 5f2c\n"),
            "{text}"
        );
    }

    #[test]
    fn other_kinds_show_their_spec_and_status() {
        let info = agora_schemas::resource_info("frameworks").unwrap();
        let fw = json!({"metadata": {"name": "spark"}, "spec": {"weight": 2.0}, "status": {"connected": false}});
        let text = render(info, &fw, &Related::default(), Timestamp::UNIX_EPOCH, false);
        assert!(text.starts_with("Name:    spark\nKind:    Framework (agora/v1)\nLabels:  <none>\n"), "{text}");
        assert!(text.contains("Spec:\n  weight: 2.0\nStatus:\n  connected: false\n"), "{text}");
        assert!(text.ends_with("Events:  <none>\n"));
    }

    #[test]
    fn a_secret_shows_its_keys_and_sizes_never_a_value() {
        let info = agora_schemas::resource_info("secrets").unwrap();
        // "dXNlcjpodW50ZXIy" is base64 of "user:hunter2".
        let secret = json!({"metadata": {"name": "regcred", "namespace": "default"},
            "spec": {"type": "DockerConfigJson", "data": {".dockerconfigjson": "dXNlcjpodW50ZXIy"}}});
        let text = render(info, &secret, &Related::default(), Timestamp::UNIX_EPOCH, false);
        assert!(text.contains("Type:       DockerConfigJson\n"), "{text}");
        assert!(text.contains("Data:\n  .dockerconfigjson:  12 bytes\n"), "{text}");
        assert!(!text.contains("dXNlcjpodW50ZXIy") && !text.contains("hunter2"), "{text}");
    }
}

//! `POST offers/{name}/accept`: a framework turns an offer into tasks, exactly once.
//!
//! In one store transaction the offer must still be Outstanding (and unexpired) and cover the tasks' cpus, mem, disk
//! and ports; then the offer is marked Accepted and every Task is created, bound to the offer's agent and framework,
//! in state Staging. If anything does not hold, the answer is a 409 (or a 422 for a malformed task) and nothing is
//! created. An acceptance without tasks declines the offer, with a refuse filter (Mesos' `refuse_seconds`).

use std::collections::BTreeSet;

use agora_schemas::cluster::DEFAULT_REFUSE_SECONDS;
use agora_schemas::{FieldError, FieldErrorKind, OfferAcceptance, StatusReason};
use axum::body::Bytes;
use serde_json::{Value, json};

use super::codec::{encode, set_meta, stored_object};
use super::error::{ApiError, ApiResult};
use super::route::Target;
use super::{ResourceApi, WRITE_ATTEMPTS, now, random_suffix};
use crate::store::{Compare, Op, Txn};

/// The longest refuse filter, as Mesos caps it: a year.
const MAX_REFUSE_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

fn invalid_task(path: String, message: impl Into<String>) -> FieldError {
    FieldError { path, kind: FieldErrorKind::Invalid, message: message.into() }
}

impl ResourceApi {
    pub(super) async fn accept(&self, target: &Target, body: Bytes) -> ApiResult<Value> {
        let offers = target.kind;
        let offer_name = target.name().to_owned();
        let request: OfferAcceptance =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body)).map_err(|e| {
                let path = agora_schemas::manifest::display_path(e.path());
                let message = agora_schemas::manifest::humanize_serde_message(&e.inner().to_string());
                ApiError::invalid(offers, &offer_name, &[invalid_task(path, message)])
            })?;
        let tasks_kind = agora_schemas::kind_info("Task")
            .ok_or_else(|| ApiError::new(StatusReason::InternalError, "no Task kind"))?;
        for _ in 0..WRITE_ATTEMPTS {
            let (kv, offer) = self.current(target).await?;
            let phase = offer.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Outstanding");
            if phase != "Outstanding" {
                return Err(ApiError::conflict(
                    offers,
                    &offer_name,
                    &format!("the offer is {phase}; an offer is used once"),
                ));
            }
            let now = now();
            if let Some(expires) = offer.pointer("/spec/expiresAt").and_then(Value::as_str)
                && expires.parse::<jiff::Timestamp>().is_ok_and(|t| t <= now)
            {
                return Err(ApiError::conflict(offers, &offer_name, &format!("the offer expired at {expires}")));
            }
            let spec = &offer["spec"];
            let field = |name: &str| spec.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
            let (agent, framework) = (field("agent"), field("framework"));
            let offer_role = spec.get("role").and_then(Value::as_str).unwrap_or("*").to_owned();
            // Mesos' semantics: a task without a user of its own runs as its framework's.
            let mut framework_user = None;
            if request.tasks.iter().any(|t| t.spec.user.is_none())
                && let Some(kv) = self.store.get(&self.keys.object_key("frameworks", None, &framework)).await?
            {
                framework_user = stored_object(&kv)?.pointer("/spec/user").and_then(Value::as_str).map(str::to_owned);
            }

            let mut tasks = Vec::new();
            let mut errors = Vec::new();
            let mut keys = Vec::new();
            let (mut cpus, mut mem, mut disk) = (0.0, 0.0, 0.0);
            let mut ports = BTreeSet::new();
            for (i, template) in request.tasks.iter().enumerate() {
                let at = format!("tasks[{i}]");
                let bound =
                    [("agent", &template.spec.agent, &agent), ("framework", &template.spec.framework, &framework)];
                for (name, given, offered) in bound {
                    if !given.is_empty() && given != offered {
                        errors.push(invalid_task(
                            format!("{at}.spec.{name}"),
                            format!("must be the offer's {name} ({offered}) or empty, not {given}"),
                        ));
                    }
                }
                if template.spec.offer.as_ref().is_some_and(|o| *o != offer_name) {
                    errors.push(invalid_task(
                        format!("{at}.spec.offer"),
                        format!("must be this offer ({offer_name}) or empty"),
                    ));
                }
                let role = template.spec.role.clone().unwrap_or_else(|| "*".to_owned());
                if role != offer_role {
                    errors.push(invalid_task(
                        format!("{at}.spec.role"),
                        format!("the offer's resources belong to role {offer_role:?}, not {role:?}"),
                    ));
                }
                let Some(namespace) = template.metadata.namespace.clone() else {
                    errors.push(FieldError {
                        path: format!("{at}.metadata.namespace"),
                        kind: FieldErrorKind::Required,
                        message: "a task's namespace is required".into(),
                    });
                    continue;
                };
                let name = match (&template.metadata.name, &template.metadata.generate_name) {
                    (Some(name), _) => name.clone(),
                    (None, Some(prefix)) => format!("{prefix}{}", random_suffix()),
                    (None, None) => {
                        errors.push(FieldError {
                            path: format!("{at}.metadata.name"),
                            kind: FieldErrorKind::Required,
                            message: "name or generateName is required".into(),
                        });
                        continue;
                    }
                };
                let mut task_spec = template.spec.clone();
                task_spec.agent.clone_from(&agent);
                task_spec.framework.clone_from(&framework);
                task_spec.offer = Some(offer_name.clone());
                if task_spec.user.is_none() {
                    task_spec.user.clone_from(&framework_user);
                }
                let mut object = json!({
                    "apiVersion": agora_schemas::API_VERSION,
                    "kind": "Task",
                    "metadata": template.metadata,
                    "spec": task_spec,
                    "status": { "state": "Staging" },
                });
                set_meta(&mut object, "name", json!(name));
                set_meta(&mut object, "uid", json!(uuid::Uuid::new_v4().to_string()));
                set_meta(&mut object, "creationTimestamp", json!(now.to_string()));
                set_meta(&mut object, "generation", json!(1));
                crate::kinds::on_create(tasks_kind, &mut object);
                match (tasks_kind.admit)(object) {
                    Ok(admitted) => {
                        cpus += task_spec.cpus;
                        mem += task_spec.mem;
                        disk += task_spec.disk;
                        for (j, port) in task_spec.ports.iter().enumerate() {
                            if !ports.insert(port.port) {
                                errors.push(invalid_task(
                                    format!("{at}.spec.ports[{j}].port"),
                                    format!("{} is given to two tasks", port.port),
                                ));
                            }
                        }
                        keys.push(self.keys.object_key(tasks_kind.storage, Some(&namespace), &name));
                        tasks.push((name, admitted));
                    }
                    Err(agora_schemas::AdmitError::Decode { path, message }) => {
                        errors.push(invalid_task(format!("{at}.{path}"), message))
                    }
                    Err(agora_schemas::AdmitError::Invalid(invalid)) => errors.extend(
                        invalid.errors().iter().map(|e| FieldError { path: format!("{at}.{}", e.path), ..e.clone() }),
                    ),
                }
            }
            if !errors.is_empty() {
                return Err(ApiError::invalid(offers, &offer_name, &errors));
            }
            // The offer must cover what the tasks use.
            let offered = &spec["resources"];
            let has = ["cpus", "mem", "disk"].map(|name| offered.get(name).and_then(Value::as_f64).unwrap_or(0.0));
            if let Some(short) = agora_schemas::shortfall([cpus, mem, disk], has) {
                return Err(ApiError::conflict(
                    offers,
                    &offer_name,
                    &format!("the offer has {} {}; the tasks need {}", short.available, short.kind, short.needed),
                ));
            }
            let ranges: Vec<(u64, u64)> = offered
                .get("ports")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(|p| Some((p.get(0)?.as_u64()?, p.get(1)?.as_u64()?))).collect())
                .unwrap_or_default();
            if let Some(port) =
                ports.iter().find(|p| !ranges.iter().any(|(from, to)| (*from..=*to).contains(&u64::from(**p))))
            {
                return Err(ApiError::conflict(
                    offers,
                    &offer_name,
                    &format!("port {port} is not among the offered ports"),
                ));
            }

            let mut decided = offer.clone();
            let mut status = json!({ "phase": if tasks.is_empty() { "Declined" } else { "Accepted" }, "decidedAt": now.to_string() });
            if tasks.is_empty() {
                let seconds = request
                    .refuse_seconds
                    .filter(|s| *s >= 0.0)
                    .unwrap_or(DEFAULT_REFUSE_SECONDS)
                    .min(MAX_REFUSE_SECONDS);
                let until = now.checked_add(jiff::SignedDuration::from_secs_f64(seconds)).unwrap_or(now);
                status["refuseUntil"] = json!(until.to_string());
            } else {
                status["tasks"] = json!(tasks.iter().map(|(name, _)| name.clone()).collect::<Vec<_>>());
            }
            decided["status"] = status;
            let offer_key = self.key(target, &offer_name);
            let mut compares = vec![Compare::ModRevision(offer_key.clone(), kv.mod_revision)];
            compares.extend(keys.iter().cloned().map(Compare::Absent));
            let mut ops = vec![Op::Put(offer_key, encode(&decided))];
            ops.extend(keys.iter().cloned().zip(&tasks).map(|(key, (_, task))| Op::Put(key, encode(task))));
            let response = self.store.txn(Txn::new(compares, ops)).await?;
            if response.succeeded {
                set_meta(&mut decided, "resourceVersion", json!(response.revision.to_string()));
                return Ok(decided);
            }
            // A task name that exists (and was chosen, not generated) can never succeed.
            for ((template, (name, _)), current) in
                request.tasks.iter().zip(&tasks).zip(response.current.iter().skip(1))
            {
                if current.is_some() && template.metadata.name.is_some() {
                    return Err(ApiError::already_exists(tasks_kind, name));
                }
            }
        }
        Err(ApiError::conflict(offers, &offer_name, "the offer kept changing; try again"))
    }
}

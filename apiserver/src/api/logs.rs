//! `GET tasks/{name}/log`: a task's stdout or stderr, proxied from the agent that runs it (its Agent status names the
//! agent's address) — `container=stdout|stderr`, `tailLines=N`, `follow=true`, as `kubectl logs` asks.

use agora_schemas::StatusReason;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde_json::Value;

use super::ResourceApi;
use super::codec::stored_object;
use super::error::{ApiError, ApiResult};
use super::route::{Query, Target, flag};

impl ResourceApi {
    pub(super) async fn log(&self, target: &Target, query: &Query) -> ApiResult<Response> {
        let (_, task) = self.current(target).await?;
        let name = target.name();
        let text = |pointer: &str| task.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_owned();
        let (uid, agent) = (text("/metadata/uid"), text("/spec/agent"));
        let container = query.get("container").map_or("stdout", String::as_str);
        if container != "stdout" && container != "stderr" {
            return Err(ApiError::bad_request(format!("container must be stdout or stderr, not {container:?}")));
        }
        let tail = match query.get("tailLines").map(|t| t.parse::<u64>()) {
            None => None,
            Some(Ok(lines)) => Some(lines),
            Some(Err(_)) => return Err(ApiError::bad_request("tailLines must be a non-negative integer")),
        };
        let unavailable = |why: String| ApiError::new(StatusReason::ServiceUnavailable, why);
        let agent_key = self.keys.object_key("agents", None, &agent);
        let agent_object = match self.store.get(&agent_key).await? {
            Some(kv) => stored_object(&kv)?,
            None => return Err(unavailable(format!("task {name}'s agent {agent:?} is not registered"))),
        };
        let status_text = |field: &str| agent_object.pointer(field).and_then(Value::as_str).map(str::to_owned);
        let address = status_text("/status/address")
            .ok_or_else(|| unavailable(format!("agent {agent} serves no logs (its status has no address)")))?;
        // An agent's HTTPS endpoint is verified against the CA it published in its status, and nothing else.
        let http = if address.starts_with("https://") {
            let ca = status_text("/status/certificateAuthority").ok_or_else(|| {
                unavailable(format!("agent {agent} serves HTTPS but its status names no certificateAuthority"))
            })?;
            super::agent_client(self.agent_token.as_deref(), Some(ca.as_bytes()))
                .map_err(|e| unavailable(format!("agent {agent}'s certificateAuthority is unusable: {e}")))?
        } else {
            self.http.clone()
        };
        let mut url =
            format!("{}/v1/tasks/{uid}/{container}?follow={}", address.trim_end_matches('/'), flag(query, "follow"));
        if let Some(lines) = tail {
            url.push_str(&format!("&tailLines={lines}"));
        }
        let response = http.get(&url).send().await.map_err(|e| {
            unavailable(format!("agent {agent} at {address} did not answer for task {name}'s log: {e}"))
        })?;
        match response.status() {
            status if status.is_success() => {}
            StatusCode::FORBIDDEN => {
                let body = response.text().await.unwrap_or_default();
                return Err(ApiError::new(StatusReason::Forbidden, format!("agent {agent}: {}", body.trim())));
            }
            StatusCode::NOT_FOUND => {
                return Err(ApiError::new(
                    StatusReason::NotFound,
                    format!("task {name} has no {container} yet on agent {agent} (it has not started there)"),
                ));
            }
            status => {
                let body = response.text().await.unwrap_or_default();
                return Err(unavailable(format!("agent {agent} answered {status} for task {name}'s log: {body}")));
            }
        }
        let stream = response.bytes_stream().map_err(std::io::Error::other);
        Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(stream)).into_response())
    }
}

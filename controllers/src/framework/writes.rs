//! What a companion writes, and how it paces and remembers its writes: requests the watch has not shown yet
//! ([`InFlight`]), writes waiting for their turn ([`Backlog`]), rate limits across owners ([`TokenBucket`]), status
//! merge patches that clear what is no longer set ([`merge_patch`]), and the writes themselves — a kill request
//! with its reason, a finished task deleted, a status patched.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_client::{Api, Client, DeleteParams, Patch, PatchParams};
use agora_schemas::names::KILL_REASON_ANNOTATION;
use agora_schemas::{Resource, Task};
use serde::Serialize;
use serde_json::{Value, json};

use crate::runtime::cache::key;

/// Requests made (task key → when) that the watch has not shown yet: assumed in progress for `ttl`, so a plan made
/// before the watch catches up does not ask again.
#[derive(Debug)]
pub struct InFlight {
    since: HashMap<String, Instant>,
    ttl: Duration,
}

impl InFlight {
    /// Requests are assumed in progress for `ttl` unless the watch shows them first.
    #[must_use]
    pub fn new(ttl: Duration) -> Self {
        Self { since: HashMap::new(), ttl }
    }

    /// A request for `key` was made now.
    pub fn insert(&mut self, key: String) {
        self.since.insert(key, Instant::now());
    }

    /// The watch showed `key`'s request done.
    pub fn remove(&mut self, key: &str) {
        self.since.remove(key);
    }

    /// Whether a request for `key` is in progress.
    #[must_use]
    pub fn contains(&self, key: &str) -> bool {
        self.since.contains_key(key)
    }

    /// Forgets the requests older than the ttl (lost, or never to be shown).
    pub fn expire(&mut self) {
        let ttl = self.ttl;
        self.since.retain(|_, at| at.elapsed() < ttl);
    }

    /// `tasks` as a plan should see them: a kill requested is assumed until the watch shows it.
    #[must_use]
    pub fn assume_killed(&self, tasks: Vec<Arc<Task>>) -> Vec<Arc<Task>> {
        if self.since.is_empty() {
            return tasks;
        }
        tasks
            .into_iter()
            .map(|t| {
                if t.spec.kill_requested != Some(true) && self.since.contains_key(&key(&*t)) {
                    let mut t = (*t).clone();
                    t.spec.kill_requested = Some(true);
                    Arc::new(t)
                } else {
                    t
                }
            })
            .collect()
    }
}

/// Writes (by owner key) waiting for their turn, each with the instant it may come: the earliest asked for wins.
#[derive(Debug, Default)]
pub struct Backlog {
    at: BTreeMap<String, Instant>,
}

impl Backlog {
    /// `owner`'s write may come at `at` (or earlier, if asked before).
    pub fn push(&mut self, owner: &str, at: Instant) {
        self.at.entry(owner.to_owned()).and_modify(|t| *t = (*t).min(at)).or_insert(at);
    }

    /// `owner`'s write no longer waits.
    pub fn remove(&mut self, owner: &str) {
        self.at.remove(owner);
    }

    /// The owners whose turn has come by `now` (they stay in the backlog until removed).
    #[must_use]
    pub fn ready(&self, now: Instant) -> Vec<String> {
        self.at.iter().filter(|(_, t)| **t <= now).map(|(k, _)| k.clone()).collect()
    }

    /// The earliest turn.
    #[must_use]
    pub fn next(&self) -> Option<Instant> {
        self.at.values().min().copied()
    }

    /// Whether nothing waits.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up; it starts with `rate`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A bucket of `rate` a second holding at most `burst`.
    #[must_use]
    pub fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst, tokens: rate.min(burst), refilled: Instant::now() }
    }

    /// The whole tokens there are now.
    pub fn available(&mut self) -> usize {
        let elapsed = self.refilled.elapsed().as_secs_f64();
        self.refilled = Instant::now();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens.floor().max(0.0) as usize
    }

    /// Spends `n` tokens (of those [`available`](Self::available) said there are).
    pub fn spend(&mut self, n: usize) {
        self.tokens -= n as f64;
    }

    /// Takes every whole token there is now.
    pub fn take_all(&mut self) -> usize {
        let n = self.available();
        self.spend(n);
        n
    }
}

/// `status` as a JSON merge patch that replaces the stored one: the fields in `nulls` that are unset are sent as
/// `null`, the lists in `lists` that are empty as `[]` (a merge patch keeps whatever it omits).
pub fn merge_patch<S: Serialize>(status: &S, nulls: &[&str], lists: &[&str]) -> Value {
    let mut value = serde_json::to_value(status).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        for field in nulls {
            map.entry(*field).or_insert(Value::Null);
        }
        for field in lists {
            map.entry(*field).or_insert(json!([]));
        }
    }
    value
}

/// How a status write went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// Stored.
    Stored,
    /// The object is gone: nothing to write.
    Gone,
    /// Not written (logged): try again later.
    Failed,
}

/// Patches `name`'s status with `patch` (a merge patch of the status) as `manager`.
pub async fn patch_status<K: Resource>(api: &Api<K>, name: &str, patch: Value, manager: &str) -> Written {
    let patch = json!({ "status": patch });
    match api.patch_status(name, &PatchParams::default().manager(manager), &Patch::Merge(patch)).await {
        Ok(_) => Written::Stored,
        Err(e) if e.is_not_found() => Written::Gone,
        Err(e) => {
            tracing::warn!(kind = K::KIND, name, error = %e, "status not written; retrying");
            Written::Failed
        }
    }
}

/// Asks for `task` to be killed, with `reason` on it for `describe` and the Events (a task already gone is done).
pub async fn request_kill(tasks: &Api<Task>, task: &str, reason: &str, manager: &str) {
    let patch = json!({
        "metadata": {"annotations": {KILL_REASON_ANNOTATION: reason}},
        "spec": {"killRequested": true},
    });
    match tasks.patch(task, &PatchParams::default().manager(manager), &Patch::Merge(patch)).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => tracing::warn!(task, error = %e, "kill request failed"),
    }
}

/// Deletes a finished `task` (a task already gone is done; a failure is left for the next plan to repeat).
pub async fn delete_task(tasks: &Api<Task>, task: &str) {
    if let Err(e) = tasks.delete(task, &DeleteParams::default()).await
        && !e.is_not_found()
    {
        tracing::debug!(task, error = %e, "deleting a finished task failed");
    }
}

/// The task API of `namespace`.
#[must_use]
pub fn tasks_in(client: &Client, namespace: &str) -> Api<Task> {
    Api::namespaced(client.clone(), namespace)
}

/// Drops what no framework's companion reads of a Task before it is cached — what to run (the owner has it), its
/// resource usage and conditions, the agent's bookkeeping — keeping the annotations in `keep`: about a third of a
/// task's memory at 100,000 tasks.
pub fn trim_to_state(task: &mut Task, keep: &[&str]) {
    let meta = &mut task.metadata;
    meta.owner_references.clear();
    meta.finalizers.clear();
    meta.generate_name = None;
    meta.uid = None;
    meta.annotations.retain(|k, _| keep.contains(&k.as_str()));
    let spec = &mut task.spec;
    spec.cmd = None;
    spec.args = None;
    spec.container = None;
    spec.env.clear();
    spec.ports.clear();
    spec.limits = None;
    spec.user = None;
    if let Some(status) = &mut task.status {
        status.usage = None;
        status.conditions.clear();
        status.host = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_patch_sends_unset_fields_as_null_and_empty_lists_as_empty() {
        #[derive(Serialize)]
        struct S {
            #[serde(skip_serializing_if = "Option::is_none")]
            since: Option<u32>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            runs: Vec<u32>,
            count: u32,
        }
        let patch = merge_patch(&S { since: None, runs: Vec::new(), count: 2 }, &["since"], &["runs"]);
        assert_eq!(patch, json!({"since": null, "runs": [], "count": 2}));
        let patch = merge_patch(&S { since: Some(1), runs: vec![3], count: 0 }, &["since"], &["runs"]);
        assert_eq!(patch, json!({"since": 1, "runs": [3], "count": 0}));
    }

    #[test]
    fn a_backlog_keeps_the_earliest_turn() {
        let now = Instant::now();
        let mut backlog = Backlog::default();
        backlog.push("a", now + Duration::from_secs(2));
        backlog.push("a", now + Duration::from_secs(1));
        backlog.push("a", now + Duration::from_secs(3));
        assert_eq!(backlog.next(), Some(now + Duration::from_secs(1)));
        assert!(backlog.ready(now).is_empty());
        assert_eq!(backlog.ready(now + Duration::from_secs(1)), vec!["a".to_owned()]);
        backlog.remove("a");
        assert!(backlog.is_empty());
    }

    #[test]
    fn a_token_bucket_gives_whole_tokens_up_to_its_burst() {
        let mut bucket = TokenBucket::new(2.0, 2.0);
        assert_eq!(bucket.take_all(), 2);
        assert_eq!(bucket.take_all(), 0, "nothing left until time passes");
        let mut bucket = TokenBucket::new(0.5, 1.0);
        assert_eq!(bucket.available(), 0, "half a token is no token");
        let mut bucket = TokenBucket::new(10.0, 10.0);
        assert_eq!(bucket.available(), 10);
        bucket.spend(3);
        assert_eq!(bucket.available(), 7);
    }

    #[test]
    fn in_flight_kills_are_assumed_until_they_expire() {
        let mut task = Task::new(agora_schemas::ObjectMeta::named(Some("ns"), "t"), agora_schemas::TaskSpec::default());
        task.spec.kill_requested = None;
        let tasks = vec![Arc::new(task)];
        let mut kills = InFlight::new(Duration::ZERO);
        assert_eq!(kills.assume_killed(tasks.clone())[0].spec.kill_requested, None);
        kills.insert("ns/t".to_owned());
        assert!(kills.contains("ns/t"));
        assert_eq!(kills.assume_killed(tasks.clone())[0].spec.kill_requested, Some(true));
        kills.expire();
        assert!(!kills.contains("ns/t"), "a zero ttl expires at once");
        assert_eq!(kills.assume_killed(tasks)[0].spec.kill_requested, None);
    }
}

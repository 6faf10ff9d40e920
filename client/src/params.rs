//! Request parameters: what a list, write, patch, delete, watch or log request may add to its query or body. Each is a
//! plain struct with `#[must_use]` fluent setters, so `ListParams::default().labels("tier=web").limit(500)` reads as it
//! is sent.

use serde::Serialize;

/// `labelSelector`, `fieldSelector`, `limit` and `continue` of a list.
///
/// ```
/// use agora_client::ListParams;
/// let params = ListParams::default().labels("tier=web").fields("status.state=Running").limit(500);
/// assert_eq!(params.limit, Some(500));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct ListParams {
    /// `tier=web,env in (prod,staging),!canary`.
    pub label_selector: Option<String>,
    /// `metadata.name=web`, `spec.agent=a1`, `status.state!=Running`.
    pub field_selector: Option<String>,
    /// At most this many items; the list's `metadata.continue` fetches the next page.
    pub limit: Option<u32>,
    /// The `continue` token of the previous page.
    pub continue_token: Option<String>,
}

impl ListParams {
    /// Only objects whose labels match `selector`.
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = Some(selector.to_owned());
        self
    }

    /// Only objects whose fields match `selector`.
    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = Some(selector.to_owned());
        self
    }

    /// Pages of at most `limit` items.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The page after the one that returned `token`.
    pub fn continue_token(mut self, token: &str) -> Self {
        self.continue_token = Some(token.to_owned());
        self
    }

    pub(crate) fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        push(&mut query, "labelSelector", self.label_selector.as_ref());
        push(&mut query, "fieldSelector", self.field_selector.as_ref());
        push(&mut query, "limit", self.limit.map(|l| l.to_string()).as_ref());
        push(&mut query, "continue", self.continue_token.as_ref());
        query
    }
}

fn push(query: &mut Vec<(&'static str, String)>, key: &'static str, value: Option<&String>) {
    if let Some(value) = value.filter(|v| !v.is_empty()) {
        query.push((key, value.clone()));
    }
}

/// How the server treats unknown or duplicate fields in a write (`fieldValidation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    /// Reject the write, naming every offending field (the server's default).
    Strict,
    /// Accept it and say what was dropped in `Warning` headers.
    Warn,
    /// Accept it silently.
    Ignore,
}

impl FieldValidation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "Strict",
            Self::Warn => "Warn",
            Self::Ignore => "Ignore",
        }
    }
}

/// `fieldManager`, `fieldValidation` and `dryRun` of a create, replace or status write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct PostParams {
    /// Who makes the change, as recorded in `managedFields` (defaults to the server's choice from the user agent).
    pub field_manager: Option<String>,
    /// How unknown fields are treated.
    pub field_validation: Option<FieldValidation>,
    /// `dryRun=All`: the server admits the write and answers with what it would store, storing nothing.
    pub dry_run: bool,
}

impl PostParams {
    /// A dry run: everything but the store write.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// Records the change as made by `manager`.
    pub fn manager(mut self, manager: &str) -> Self {
        self.field_manager = Some(manager.to_owned());
        self
    }

    /// Treats unknown fields this way.
    pub fn validation(mut self, validation: FieldValidation) -> Self {
        self.field_validation = Some(validation);
        self
    }

    pub(crate) fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        push(&mut query, "fieldManager", self.field_manager.as_ref());
        push(&mut query, "fieldValidation", self.field_validation.map(|v| v.as_str().to_owned()).as_ref());
        if self.dry_run {
            query.push(("dryRun", "All".to_owned()));
        }
        query
    }
}

/// `fieldManager`, `force`, `fieldValidation` and `dryRun` of a patch.
///
/// ```
/// use agora_client::PatchParams;
/// // Server-side apply as "my-controller", taking over fields other managers set.
/// let params = PatchParams::apply("my-controller").force();
/// assert!(params.force);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct PatchParams {
    /// Who makes the change; required for [`Patch::Apply`].
    pub field_manager: Option<String>,
    /// For [`Patch::Apply`]: take fields other managers own instead of failing with a conflict.
    pub force: bool,
    /// How unknown fields are treated.
    pub field_validation: Option<FieldValidation>,
    /// `dryRun=All`: the server applies the patch and answers with what it would store, storing nothing.
    pub dry_run: bool,
}

impl PatchParams {
    /// A dry run: everything but the store write.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// Parameters for a server-side apply by `manager`.
    pub fn apply(manager: &str) -> Self {
        Self { field_manager: Some(manager.to_owned()), ..Self::default() }
    }

    /// Records the change as made by `manager`.
    pub fn manager(mut self, manager: &str) -> Self {
        self.field_manager = Some(manager.to_owned());
        self
    }

    /// Takes conflicting fields from other managers (server-side apply only).
    pub fn force(mut self) -> Self {
        self.force = true;
        self
    }

    /// Treats unknown fields this way.
    pub fn validation(mut self, validation: FieldValidation) -> Self {
        self.field_validation = Some(validation);
        self
    }

    pub(crate) fn query(&self, applying: bool) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        push(&mut query, "fieldManager", self.field_manager.as_ref());
        push(&mut query, "fieldValidation", self.field_validation.map(|v| v.as_str().to_owned()).as_ref());
        // The server refuses `force` on anything but an apply.
        if applying && self.force {
            query.push(("force", "true".to_owned()));
        }
        if self.dry_run {
            query.push(("dryRun", "All".to_owned()));
        }
        query
    }
}

/// A patch: its kind decides the content type.
#[derive(Clone, Debug, PartialEq)]
pub enum Patch<T: Serialize> {
    /// RFC 7386 JSON merge patch (`application/merge-patch+json`): objects merge, `null` deletes, lists are replaced.
    Merge(T),
    /// RFC 6902 JSON patch (`application/json-patch+json`): a list of operations; a failed `test` is a 422 (as in
    /// Kubernetes) and nothing is changed.
    Json(json_patch::Patch),
    /// Server-side apply (`application/apply-patch+yaml`): the manager's full intent; needs
    /// [`PatchParams::apply`].
    Apply(T),
}

impl<T: Serialize> Patch<T> {
    pub(crate) fn content_type(&self) -> &'static str {
        match self {
            Self::Merge(_) => "application/merge-patch+json",
            Self::Json(_) => "application/json-patch+json",
            Self::Apply(_) => "application/apply-patch+yaml",
        }
    }

    pub(crate) fn is_apply(&self) -> bool {
        matches!(self, Self::Apply(_))
    }

    pub(crate) fn to_body(&self) -> serde_json::Result<Vec<u8>> {
        match self {
            Self::Merge(value) | Self::Apply(value) => serde_json::to_vec(value),
            Self::Json(patch) => serde_json::to_vec(patch),
        }
    }
}

/// What happens to an object's dependents when it is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PropagationPolicy {
    /// Delete the object now; the garbage collector deletes its dependents afterwards (the default).
    Background,
    /// Delete the dependents first; the object goes last.
    Foreground,
    /// Leave the dependents, removing their owner references.
    Orphan,
}

/// Conditions a delete checks first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preconditions {
    /// Delete only the object with this uid (not a namesake created since).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Delete only if the object is still at this resourceVersion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

/// The body of a delete.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[must_use]
pub struct DeleteParams {
    /// What happens to dependents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation_policy: Option<PropagationPolicy>,
    /// Checks before deleting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preconditions: Option<Preconditions>,
    /// `["All"]` for a dry run: the server answers with what it would delete (or mark), deleting nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<String>,
}

impl DeleteParams {
    /// Deletes dependents first.
    pub fn foreground() -> Self {
        Self { propagation_policy: Some(PropagationPolicy::Foreground), ..Self::default() }
    }

    /// Deletes dependents afterwards (the server's default).
    pub fn background() -> Self {
        Self { propagation_policy: Some(PropagationPolicy::Background), ..Self::default() }
    }

    /// Leaves dependents.
    pub fn orphan() -> Self {
        Self { propagation_policy: Some(PropagationPolicy::Orphan), ..Self::default() }
    }

    /// Deletes only the object with this uid.
    pub fn uid(mut self, uid: &str) -> Self {
        self.preconditions.get_or_insert_with(Preconditions::default).uid = Some(uid.to_owned());
        self
    }

    /// A dry run: everything but the store write.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = vec!["All".to_owned()];
        self
    }

    /// Deletes only if the object is still at this resourceVersion.
    pub fn resource_version(mut self, resource_version: &str) -> Self {
        self.preconditions.get_or_insert_with(Preconditions::default).resource_version =
            Some(resource_version.to_owned());
        self
    }
}

/// Selectors and options of a watch.
///
/// ```
/// use agora_client::WatchParams;
/// let params = WatchParams::default().fields("spec.agent=a1").timeout(60);
/// assert!(params.bookmarks);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct WatchParams {
    /// As [`ListParams::label_selector`].
    pub label_selector: Option<String>,
    /// As [`ListParams::field_selector`].
    pub field_selector: Option<String>,
    /// The server ends the stream after this many seconds (290 by default, as kube-rs); the client resumes.
    pub timeout: u32,
    /// Ask for BOOKMARK events, so a resumed watch starts from a recent revision.
    pub bookmarks: bool,
    /// Start with the current objects as ADDED, then a bookmark marking the end of them.
    pub send_initial_events: bool,
}

impl Default for WatchParams {
    fn default() -> Self {
        Self { label_selector: None, field_selector: None, timeout: 290, bookmarks: true, send_initial_events: false }
    }
}

impl WatchParams {
    /// Only objects whose labels match `selector`.
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = Some(selector.to_owned());
        self
    }

    /// Only objects whose fields match `selector`.
    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = Some(selector.to_owned());
        self
    }

    /// The server ends the stream after `seconds`.
    pub fn timeout(mut self, seconds: u32) -> Self {
        self.timeout = seconds;
        self
    }

    /// Without BOOKMARK events.
    pub fn disable_bookmarks(mut self) -> Self {
        self.bookmarks = false;
        self
    }

    /// Starts with the current objects and a bookmark ending them.
    pub fn initial_events(mut self) -> Self {
        self.send_initial_events = true;
        self
    }

    /// The list parameters selecting the same objects.
    pub fn list_params(&self) -> ListParams {
        ListParams {
            label_selector: self.label_selector.clone(),
            field_selector: self.field_selector.clone(),
            ..ListParams::default()
        }
    }

    pub(crate) fn query(&self, resource_version: &str) -> Vec<(&'static str, String)> {
        let mut query = vec![("watch", "true".to_owned())];
        push(&mut query, "labelSelector", self.label_selector.as_ref());
        push(&mut query, "fieldSelector", self.field_selector.as_ref());
        push(&mut query, "resourceVersion", Some(&resource_version.to_owned()));
        query.push(("timeoutSeconds", self.timeout.to_string()));
        if self.bookmarks {
            query.push(("allowWatchBookmarks", "true".to_owned()));
        }
        if self.send_initial_events {
            query.push(("sendInitialEvents", "true".to_owned()));
        }
        query
    }
}

/// Which log and how much of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct LogParams {
    /// `stdout` (default) or `stderr`.
    pub container: Option<String>,
    /// Only the last lines.
    pub tail_lines: Option<u64>,
    /// Keep the stream open and send new output as it is written.
    pub follow: bool,
}

impl LogParams {
    /// The standard error stream instead of standard output.
    pub fn stderr(mut self) -> Self {
        self.container = Some("stderr".to_owned());
        self
    }

    /// Only the last `lines` lines.
    pub fn tail(mut self, lines: u64) -> Self {
        self.tail_lines = Some(lines);
        self
    }

    /// Follows the log as it grows.
    pub fn follow(mut self) -> Self {
        self.follow = true;
        self
    }

    pub(crate) fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        push(&mut query, "container", self.container.as_ref());
        push(&mut query, "tailLines", self.tail_lines.map(|l| l.to_string()).as_ref());
        if self.follow {
            query.push(("follow", "true".to_owned()));
        }
        query
    }
}

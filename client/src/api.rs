//! [`Api<K>`]: the verbs on one kind, in one namespace (or cluster-wide), typed by the kind's Rust struct.
//!
//! Paths follow the apiserver: `/apis/agora/v1/namespaces/{ns}/{plural}[/{name}[/{subresource}]]` for namespaced
//! kinds, `/apis/agora/v1/{plural}[/...]` for cluster-scoped ones and for lists and watches across all namespaces.

use std::marker::PhantomData;
use std::time::Duration;

use agora_schemas::{List, Offer, OfferAcceptance, Resource, Scale, WatchEvent};
use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use reqwest::Method;
use serde::Serialize;

use crate::client::{Client, Request};
use crate::error::{Error, Operation, Result};
use crate::params::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, WatchParams};

/// How long past its `timeoutSeconds` a watch may stay silent before the client gives up on the connection.
const WATCH_GRACE: Duration = Duration::from_secs(30);

/// The verbs on objects of kind `K` in one namespace, across all namespaces, or (for cluster-scoped kinds) in the
/// cluster.
///
/// ```no_run
/// # async fn run() -> agora_client::Result<()> {
/// use agora_client::{Api, Client, ListParams, Patch, PatchParams};
/// use agora_schemas::App;
/// use serde_json::json;
///
/// let apps: Api<App> = Api::namespaced(Client::try_default()?, "default");
/// for app in apps.list(&ListParams::default().labels("tier=web")).await?.items {
///     println!("{}", app.metadata.display_name());
/// }
/// let patch = Patch::Merge(json!({ "spec": { "instances": 3 } }));
/// apps.patch("web", &PatchParams::default(), &patch).await?;
/// # Ok(()) }
/// ```
pub struct Api<K> {
    client: Client,
    namespace: Option<String>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Self { client: self.client.clone(), namespace: self.namespace.clone(), kind: PhantomData }
    }
}

impl<K: Resource> std::fmt::Debug for Api<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("kind", &K::KIND).field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

impl<K: Resource> Api<K> {
    /// Objects of a namespaced kind in `namespace`.
    ///
    /// # Panics
    /// When `K` is cluster-scoped (use [`Api::all`]): a programming error, like a type error.
    #[must_use]
    pub fn namespaced(client: Client, namespace: &str) -> Self {
        assert!(K::NAMESPACED, "{} is cluster-scoped: use Api::all", K::KIND);
        Self { client, namespace: Some(namespace.to_owned()), kind: PhantomData }
    }

    /// Objects of a namespaced kind in the `default` namespace.
    ///
    /// # Panics
    /// When `K` is cluster-scoped.
    #[must_use]
    pub fn default_namespaced(client: Client) -> Self {
        Self::namespaced(client, "default")
    }

    /// Every object of the kind: cluster-scoped kinds, or namespaced kinds across all namespaces (list and watch;
    /// calls naming one object need [`Api::namespaced`] or [`Api::within`]).
    #[must_use]
    pub fn all(client: Client) -> Self {
        Self { client, namespace: None, kind: PhantomData }
    }

    /// The same kind in another namespace (for a namespaced kind), sharing the client.
    #[must_use]
    pub fn within(&self, namespace: &str) -> Self {
        if K::NAMESPACED { Self::namespaced(self.client.clone(), namespace) } else { self.clone() }
    }

    /// The API for `object`'s namespace: where calls about that object go.
    #[must_use]
    pub fn for_object(&self, object: &K) -> Self {
        match object.metadata().namespace.as_deref() {
            Some(namespace) => self.within(namespace),
            None => self.clone(),
        }
    }

    /// The namespace calls go to; `None` for cluster-scoped kinds and all-namespaces APIs.
    #[must_use]
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The client calls go through.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn collection(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("/apis/{}/namespaces/{ns}/{}", K::API_VERSION, K::PLURAL),
            None => format!("/apis/{}/{}", K::API_VERSION, K::PLURAL),
        }
    }

    fn describe_collection(&self) -> String {
        match (&self.namespace, K::NAMESPACED) {
            (Some(ns), _) => format!("{} in namespace {ns}", K::PLURAL),
            (None, true) => format!("{} in all namespaces", K::PLURAL),
            (None, false) => K::PLURAL.to_owned(),
        }
    }

    fn operation(&self, verb: &'static str, name: &str) -> Operation {
        let object = match &self.namespace {
            Some(ns) => format!("{} {ns}/{name}", K::SINGULAR),
            None => format!("{} {name}", K::SINGULAR),
        };
        Operation { verb, object }
    }

    /// The path of `name` (and a subresource), or an error when the name cannot be addressed from here.
    fn object_path(&self, operation: &Operation, name: &str, subresource: Option<&str>) -> Result<String> {
        if name.is_empty() {
            return Err(Error::Request { operation: operation.clone(), message: "the object has no name".into() });
        }
        if K::NAMESPACED && self.namespace.is_none() {
            return Err(Error::Request {
                operation: operation.clone(),
                message: format!(
                    "{} are namespaced: call through Api::namespaced (or api.within(namespace))",
                    K::PLURAL
                ),
            });
        }
        let mut path = format!("{}/{}", self.collection(), encode_segment(name));
        if let Some(subresource) = subresource {
            path.push('/');
            path.push_str(subresource);
        }
        Ok(path)
    }

    async fn object_call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        verb: &'static str,
        name: &str,
        subresource: Option<&str>,
        query: &[(&'static str, String)],
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<T> {
        let operation = self.operation(verb, name);
        let path = with_query(self.object_path(&operation, name, subresource)?, query);
        let mut request = Request::new(method, path, operation);
        if let Some((content_type, bytes)) = body {
            request = request.body(content_type, bytes);
        }
        let expected = if subresource == Some("scale") { "Scale" } else { K::KIND };
        self.client.call(request, expected).await
    }

    fn encode<T: Serialize>(&self, verb: &'static str, name: &str, value: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(value).map_err(|e| Error::Request {
            operation: self.operation(verb, name),
            message: format!("cannot encode the body: {e}"),
        })
    }

    /// The object called `name`.
    ///
    /// # Errors
    /// [`Error::Api`] with 404 when it does not exist ([`Error::is_not_found`]), or any other failure.
    pub async fn get(&self, name: &str) -> Result<K> {
        self.object_call(Method::GET, "get", name, None, &[], None).await
    }

    /// The object called `name`, or `None` when it does not exist.
    ///
    /// # Errors
    /// Any failure but 404.
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>> {
        match self.get(name).await {
            Ok(object) => Ok(Some(object)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of objects (all of them without a limit), with the list's resourceVersion.
    ///
    /// # Errors
    /// 400 for a malformed selector, 410 for an expired `continue` token, or any failure.
    pub async fn list(&self, params: &ListParams) -> Result<List<K>> {
        let operation = Operation { verb: "list", object: self.describe_collection() };
        let path = with_query(self.collection(), &params.query());
        self.client.call(Request::new(Method::GET, path, operation), "list").await
    }

    /// Creates `object` (with `metadata.generateName`, the server picks the name).
    ///
    /// # Errors
    /// 409 AlreadyExists, 422 Invalid (with causes), or any failure.
    pub async fn create(&self, params: &PostParams, object: &K) -> Result<K> {
        let name = object.metadata().name.as_deref().or(object.metadata().generate_name.as_deref()).unwrap_or("");
        let operation = self.operation("create", name);
        if K::NAMESPACED && self.namespace.is_none() {
            return Err(Error::Request {
                operation,
                message: format!("{} are namespaced: create through Api::namespaced", K::PLURAL),
            });
        }
        let body = self.encode("create", name, object)?;
        let path = with_query(self.collection(), &params.query());
        let request = Request::new(Method::POST, path, operation).body("application/json", body);
        self.client.call(request, K::KIND).await
    }

    /// Replaces the object called `name` with `object`; a stale `metadata.resourceVersion` is a 409 Conflict.
    ///
    /// # Errors
    /// 409 Conflict, 404, 422, or any failure.
    pub async fn replace(&self, name: &str, params: &PostParams, object: &K) -> Result<K> {
        let body = self.encode("replace", name, object)?;
        self.object_call(Method::PUT, "replace", name, None, &params.query(), Some(("application/json", body))).await
    }

    /// Patches the object called `name`.
    ///
    /// # Errors
    /// 409 for a stale resourceVersion or a field-manager conflict; 422 for a failed JSON-patch `test` or an invalid
    /// result; 404; any failure.
    pub async fn patch<P: Serialize>(&self, name: &str, params: &PatchParams, patch: &Patch<P>) -> Result<K> {
        self.patch_at(name, None, params, patch).await
    }

    async fn patch_at<P: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        subresource: Option<&str>,
        params: &PatchParams,
        patch: &Patch<P>,
    ) -> Result<T> {
        let body = patch.to_body().map_err(|e| Error::Request {
            operation: self.operation("patch", name),
            message: format!("cannot encode the patch: {e}"),
        })?;
        let verb = match subresource {
            Some("status") => "patch status",
            Some("scale") => "patch scale",
            _ => "patch",
        };
        let query = params.query(patch.is_apply());
        self.object_call(Method::PATCH, verb, name, subresource, &query, Some((patch.content_type(), body))).await
    }

    /// Deletes the object called `name`; returns its last state, or — when finalizers hold it — its state marked
    /// with a `deletionTimestamp`.
    ///
    /// # Errors
    /// 404, 409 for a failed precondition, or any failure.
    pub async fn delete(&self, name: &str, params: &DeleteParams) -> Result<K> {
        let body = self.encode("delete", name, params)?;
        self.object_call(Method::DELETE, "delete", name, None, &[], Some(("application/json", body))).await
    }

    /// Deletes every object of the collection (this namespace, or all) that the list's selectors take, each as
    /// [`Api::delete`] would; returns what was deleted (or marked). Pagination fields of `selection` are ignored.
    ///
    /// # Errors
    /// 400 for a bad selector or preconditions (they name one object); when some could not be deleted, the
    /// server's `Status` naming them; or any failure.
    pub async fn delete_collection(&self, selection: &ListParams, params: &DeleteParams) -> Result<List<K>> {
        let operation = Operation { verb: "delete", object: self.describe_collection() };
        let selectors = ListParams { limit: None, continue_token: None, ..selection.clone() };
        let path = with_query(self.collection(), &selectors.query());
        let body = self.encode("delete", "", params)?;
        let request = Request::new(Method::DELETE, path, operation).body("application/json", body);
        self.client.call(request, "list").await
    }

    /// The object called `name`, read through its `/status` subresource.
    ///
    /// # Errors
    /// As [`Api::get`].
    pub async fn get_status(&self, name: &str) -> Result<K> {
        self.object_call(Method::GET, "get status", name, Some("status"), &[], None).await
    }

    /// Replaces the status of `name` with `object.status`; everything else in `object` is ignored but
    /// `metadata.resourceVersion` (a stale one is a 409).
    ///
    /// # Errors
    /// 409 Conflict, 404, 422, or any failure.
    pub async fn replace_status(&self, name: &str, params: &PostParams, object: &K) -> Result<K> {
        let body = self.encode("replace status", name, object)?;
        let query = params.query();
        self.object_call(Method::PUT, "replace status", name, Some("status"), &query, Some(("application/json", body)))
            .await
    }

    /// Patches the status of `name` (`{"status": {...}}` for a merge patch).
    ///
    /// # Errors
    /// As [`Api::patch`].
    pub async fn patch_status<P: Serialize>(&self, name: &str, params: &PatchParams, patch: &Patch<P>) -> Result<K> {
        self.patch_at(name, Some("status"), params, patch).await
    }

    /// The `Scale` view (desired and running instances) of `name`; Apps have one.
    ///
    /// # Errors
    /// 404 for kinds without a scale subresource, or any failure.
    pub async fn get_scale(&self, name: &str) -> Result<Scale> {
        self.object_call(Method::GET, "get scale", name, Some("scale"), &[], None).await
    }

    /// Sets the desired instances of `name` through its scale subresource.
    ///
    /// # Errors
    /// 404, 409 for a stale resourceVersion in `scale`, 422, or any failure.
    pub async fn replace_scale(&self, name: &str, params: &PostParams, scale: &Scale) -> Result<Scale> {
        let body = self.encode("replace scale", name, scale)?;
        let query = params.query();
        self.object_call(Method::PUT, "replace scale", name, Some("scale"), &query, Some(("application/json", body)))
            .await
    }

    /// Patches the scale subresource of `name` (`{"spec": {"replicas": 3}}`).
    ///
    /// # Errors
    /// As [`Api::patch`].
    pub async fn patch_scale<P: Serialize>(&self, name: &str, params: &PatchParams, patch: &Patch<P>) -> Result<Scale> {
        self.patch_at(name, Some("scale"), params, patch).await
    }

    /// A stream of changes after `resource_version` (`"0"` or `""`: first the current objects as ADDED).
    ///
    /// The stream ends when the server's `timeoutSeconds` pass or the connection drops; resume from the last
    /// resourceVersion seen (BOOKMARK events carry one). An `ERROR` event with code 410 means the version is too
    /// old: list again. Most callers want the runtime's `watcher`, which does all that.
    ///
    /// # Errors
    /// The request's failure (400 for a bad selector or version); later failures arrive as items of the stream.
    pub async fn watch(
        &self,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<impl Stream<Item = Result<WatchEvent<K>>> + Send + 'static + use<K>> {
        let operation = Operation { verb: "watch", object: self.describe_collection() };
        let path = with_query(self.collection(), &params.query(resource_version));
        let limit = Duration::from_secs(u64::from(params.timeout)) + WATCH_GRACE;
        let request = Request::new(Method::GET, path, operation.clone()).timeout(Some(limit));
        let response = self.client.send(request).await?;
        Ok(crate::client::json_lines::<WatchEvent<K>>(&self.client, response, operation, "watch event"))
    }

    /// The log of `name` (a Task's stdout or stderr), as it arrives: with `follow`, the stream stays open.
    ///
    /// # Errors
    /// 404 when the object or its log does not exist, or any failure.
    pub async fn log_stream(
        &self,
        name: &str,
        params: &LogParams,
    ) -> Result<impl Stream<Item = Result<Bytes>> + Send + 'static + use<K>> {
        let operation = self.operation("get log", name);
        let path = with_query(self.object_path(&operation, name, Some("log"))?, &params.query());
        let timeout = if params.follow { None } else { Some(Duration::ZERO) };
        let response = self.client.send(Request::new(Method::GET, path, operation.clone()).timeout(timeout)).await?;
        let client = self.client.clone();
        Ok(response.bytes_stream().map_err(move |e| client.transport_error(&operation, e)))
    }

    /// The log of `name` as text, read to its current end.
    ///
    /// # Errors
    /// As [`Api::log_stream`].
    pub async fn logs(&self, name: &str, params: &LogParams) -> Result<String> {
        let mut params = params.clone();
        params.follow = false;
        let chunks: Vec<Bytes> = self.log_stream(name, &params).await?.try_collect().await?;
        Ok(String::from_utf8_lossy(&chunks.concat()).into_owned())
    }
}

impl Api<Offer> {
    /// Accepts the offer `name` with these tasks: in one transaction the server checks the offer is still
    /// Outstanding and covers the tasks, marks it Accepted and creates them. Returns the decided offer, whose
    /// `status.tasks` names the tasks created. Without tasks, it declines the offer.
    ///
    /// # Errors
    /// 409 when the offer is no longer Outstanding, expired or too small (nothing is created); 422 for a malformed
    /// task; any failure.
    pub async fn accept(&self, name: &str, acceptance: &OfferAcceptance) -> Result<Offer> {
        let body = self.encode("accept", name, acceptance)?;
        self.object_call(Method::POST, "accept", name, Some("accept"), &[], Some(("application/json", body))).await
    }

    /// Declines the offer `name`: its resources are not offered to this framework again for `refuse_seconds`
    /// (Mesos' refuse filter; the server's default is 5 s).
    ///
    /// # Errors
    /// As [`Api::accept`].
    pub async fn decline(&self, name: &str, refuse_seconds: Option<f64>) -> Result<Offer> {
        let acceptance = OfferAcceptance { refuse_seconds, ..OfferAcceptance::default() };
        self.accept(name, &acceptance).await
    }
}

impl Api<agora_schemas::CronJob> {
    /// Starts one run of the job `name` now, whatever its schedule and even when it is disabled: the server records
    /// the trigger `id` (one is made when `None`) and chronos runs it once, as the Task `<name>-manual-<id>-0`.
    /// Returns the job. The id is an idempotency key: the same id again — before, during or after its run (while the
    /// run is in the job's history) — answers the same and starts nothing more, so a retried request is harmless.
    ///
    /// # Errors
    /// 404 for no such job; 422 for a malformed id; any failure.
    pub async fn trigger(&self, name: &str, id: Option<&str>) -> Result<agora_schemas::CronJob> {
        let body = self.encode("trigger", name, &serde_json::json!({ "id": id }))?;
        self.object_call(Method::POST, "trigger", name, Some("trigger"), &[], Some(("application/json", body))).await
    }
}

/// `path?key=value&...`, values URL-encoded.
fn with_query(mut path: String, query: &[(&'static str, String)]) -> String {
    if !query.is_empty() {
        path.push('?');
        path.push_str(&serde_urlencoded::to_string(query).unwrap_or_default());
    }
    path
}

/// A name as one path segment. Valid names need no escaping; an invalid one must not change the path's shape.
fn encode_segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

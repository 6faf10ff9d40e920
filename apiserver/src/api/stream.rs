//! `?watch=true`: the HTTP side of a watch — the initial objects, the replayed backlog, the live changes from the
//! shared cache in [`super::watch_cache`], bookmarks and the timeout — as JSON lines or Server-Sent Events.

use agora_schemas::{KindInfo, StatusReason};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::print::View;
use futures::StreamExt as _;

use super::ResourceApi;
use super::codec::stored_object;
use super::error::{ApiError, ApiResult};
use super::read::Filter;
use super::route::{Query, Target, flag};
use super::watch_cache::{self, Next, WatchCache};
use crate::store::{RangeRequest, Revision, StoreError, WatchEvent};

/// A watch event as sent: a JSON line, or a Server-Sent Event when `sse`.
pub(super) fn watch_frame(kind: &str, object: &[u8], sse: bool) -> bytes::Bytes {
    let mut out = Vec::with_capacity(object.len() + 64);
    if sse {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
    }
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(object);
    out.extend_from_slice(if sse { b"}\n\n" } else { b"}\n" });
    bytes::Bytes::from(out)
}

/// `event` (`{"type":..,"object":..}`) as sent.
pub(super) fn watch_line(event: &Value, sse: bool) -> bytes::Bytes {
    let kind = event["type"].as_str().unwrap_or("MESSAGE");
    watch_frame(kind, &serde_json::to_vec(&event["object"]).unwrap_or_default(), sse)
}

/// The live part of a watch: changes from the shared cache as the client reads them, bookmarks, the timeout.
pub(super) struct WatchStream {
    feed: Feed,
    filter: Filter,
    /// The revision the client has been brought to (for bookmarks).
    latest: Revision,
    ticker: Option<tokio::time::Interval>,
    expired: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    kind: &'static KindInfo,
    sse: bool,
    shown: Shown,
}

/// Where a watch's changes come from.
enum Source {
    /// The shared cache.
    Cache(watch_cache::Subscription),
    /// The store's history, for a watch that resumed from before the cache's window, until the window reaches where
    /// it has got to: then it joins the cache.
    Store {
        events: crate::store::WatchStream,
        prefix: String,
        cache: WatchCache,
        /// The revision of the last change sent.
        sent: Revision,
    },
}

/// A watch's changes: its source, and what to send before the source's next.
struct Feed {
    source: Source,
    /// The cache's backlog when a watch joins it.
    pending: std::collections::VecDeque<std::sync::Arc<watch_cache::Change>>,
    kind: &'static KindInfo,
    /// Every change up to this revision has reached the client: later ones from the cache only.
    floor: Revision,
}

impl Feed {
    /// The next change, progress or end; a watch served from the store joins the cache as soon as it can.
    ///
    /// Revisions are the unit: one transaction can change several objects at one revision, so "everything up to
    /// revision r has been sent" is known only at a progress, or when an event of a later revision arrives.
    async fn next(&mut self) -> Next {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Next::Change(change);
            }
            let (events, prefix, cache, sent) = match &mut self.source {
                Source::Cache(subscription) => match subscription.next().await {
                    // The client has everything up to `floor` (sent from the store, or its resourceVersion).
                    Next::Change(change) if change.revision <= self.floor => continue,
                    next => return next,
                },
                Source::Store { events, prefix, cache, sent } => (events, prefix, cache, sent),
            };
            let (complete, change) = match events.next().await {
                Some(Ok(WatchEvent::Progress { revision })) => (revision, None),
                Some(Ok(event)) => {
                    let revision = event.revision();
                    // Every change up to the last one sent is out once a later revision arrives.
                    let complete = if revision > *sent { *sent } else { 0 };
                    *sent = revision;
                    (complete, watch_cache::change_of(event, prefix).map(std::sync::Arc::new))
                }
                Some(Err(StoreError::Compacted { requested, compacted })) => {
                    return Next::End(Box::new(too_old(requested, compacted)));
                }
                Some(Err(e)) => return Next::End(ApiError::from(e).0),
                None => {
                    return Next::End(Box::new(agora_schemas::Status::failure(
                        StatusReason::Expired,
                        "the store's watch ended; list again and watch from the new resourceVersion",
                    )));
                }
            };
            // Join the cache once it holds every change after `complete`: its backlog (which has this change, if
            // any, and the rest of its revision) goes next, then it is followed.
            if complete > 0
                && let Ok(mut subscription) = cache.subscribe(self.kind, Some(complete)).await
            {
                self.pending.extend(std::mem::take(&mut subscription.backlog));
                self.source = Source::Cache(subscription);
                self.floor = complete;
                return match change {
                    Some(_) => continue,
                    None => Next::Progress(complete),
                };
            }
            return match change {
                Some(change) => Next::Change(change),
                None => Next::Progress(complete),
            };
        }
    }
}

/// The 410 for a revision the store has compacted.
fn too_old(requested: Revision, compacted: Revision) -> agora_schemas::Status {
    agora_schemas::Status::failure(
        StatusReason::Expired,
        format!("too old resource version: {requested} ({compacted})"),
    )
}

/// How a watch's objects are shown: the view asked for, and whether a Table's column definitions have gone out (only
/// the first Table of a watch carries them).
pub(super) struct Shown {
    view: View,
    defined: bool,
}

impl Shown {
    fn new(view: View) -> Self {
        Self { view, defined: false }
    }

    /// `{"type": type_, "object": object}` with the object in the view, as sent.
    fn line(&mut self, kind: &KindInfo, type_: &str, object: &Value, sse: bool) -> bytes::Bytes {
        let first = !std::mem::replace(&mut self.defined, true);
        watch_line(&json!({ "type": type_, "object": self.view.one(kind, object, first) }), sse)
    }

    /// A change as sent: the cache's own framing when the object goes as it is.
    fn change(
        &mut self,
        kind: &KindInfo,
        type_: &'static str,
        change: &watch_cache::Change,
        sse: bool,
    ) -> bytes::Bytes {
        match self.view {
            View::Object if type_ == change.kind && !sse => change.framed(),
            View::Object => watch_frame(type_, change.encoded(), sse),
            _ => self.line(kind, type_, change.object(), sse),
        }
    }

    /// A bookmark as sent.
    fn bookmark(&self, kind: &KindInfo, revision: Revision, initial_events_end: bool, sse: bool) -> bytes::Bytes {
        let event = watch_cache::bookmark(kind, revision, initial_events_end);
        watch_line(&json!({ "type": "BOOKMARK", "object": self.view.bookmark(kind, &event["object"]) }), sse)
    }
}

impl WatchStream {
    /// The events, ending at the timeout or after an ERROR.
    pub(super) fn into_stream(
        self,
    ) -> impl futures::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> + Send {
        futures::stream::unfold(Some(self), |state| async move {
            let mut watch = state?;
            let chunk = loop {
                let expired = async {
                    match watch.expired.as_mut() {
                        Some(sleep) => sleep.as_mut().await,
                        None => std::future::pending().await,
                    }
                };
                let tick = async {
                    match watch.ticker.as_mut() {
                        Some(ticker) => ticker.tick().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = expired => return None,
                    _ = tick => break watch.shown.bookmark(watch.kind, watch.latest, false, watch.sse),
                    next = watch.feed.next() => match next {
                        Next::Change(change) => {
                            watch.latest = change.revision;
                            let Some(kind) = watch.filter.event_type(&change) else { continue };
                            break watch.shown.change(watch.kind, kind, &change, watch.sse);
                        }
                        Next::Progress(revision) => watch.latest = watch.latest.max(revision),
                        Next::End(status) => {
                            let error = watch_line(&json!({ "type": "ERROR", "object": status }), watch.sse);
                            return Some((Ok(error), None));
                        }
                    },
                }
            };
            Some((Ok(chunk), Some(watch)))
        })
    }
}

impl ResourceApi {
    /// `?watch=true`: a stream of events, one JSON object per line (or Server-Sent Events for `text/event-stream`).
    pub(super) async fn watch(
        &self,
        target: &Target,
        query: &Query,
        headers: &HeaderMap,
        view: View,
    ) -> ApiResult<Response> {
        let kind = target.kind;
        let filter = Filter::new(target, query)?;
        let bookmarks = flag(query, "allowWatchBookmarks");
        let initial_events = flag(query, "sendInitialEvents");
        let timeout = match query.get("timeoutSeconds").map(|t| t.parse::<u64>()) {
            None => None,
            Some(Ok(seconds)) => Some(std::time::Duration::from_secs(seconds)),
            Some(Err(_)) => return Err(ApiError::bad_request("timeoutSeconds must be a non-negative integer")),
        };
        let sse = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/event-stream"));
        let resume =
            match query.get("resourceVersion").map(String::as_str) {
                None | Some("" | "0") => None,
                Some(rv) => Some(rv.parse::<Revision>().map_err(|_| {
                    ApiError::bad_request(format!("resourceVersion {rv:?} is not one this server issued"))
                })?),
            };
        if let Some(revision) = resume {
            self.reach(revision).await?;
        }
        // Without a revision (or with sendInitialEvents), the client first gets the current objects as ADDED.
        let initial = resume.is_none() || initial_events;
        let line = |event: &Value| watch_line(event, sse);
        let mut shown = Shown::new(view);
        // What goes before the live events: an ERROR for a compacted revision, or the initial objects and backlog.
        let mut first = Vec::new();
        let mut live = None;
        let subscription = match self.watches.subscribe(kind, if initial { None } else { resume }).await {
            Ok(subscription) => Some(subscription),
            // Older than the cache's window: from the store's history, if it still has it.
            Err(crate::store::StoreError::Compacted { .. }) => {
                let from = resume.unwrap_or_default();
                match self.watches.history(kind, from).await {
                    Ok(events) => {
                        let source = Source::Store {
                            events,
                            prefix: self.watches.prefix(kind),
                            cache: self.watches.clone(),
                            sent: from,
                        };
                        live = Some(self.live(source, from, filter, bookmarks, timeout, kind, sse, shown));
                        return Ok(watch_response(first, live, sse, view));
                    }
                    Err(crate::store::StoreError::Compacted { requested, compacted }) => {
                        first.push(line(&json!({ "type": "ERROR", "object": too_old(requested, compacted) })));
                        None
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(mut subscription) = subscription {
            if initial {
                let listed = self
                    .store
                    .range(RangeRequest {
                        prefix: self.keys.kind_prefix(kind.storage),
                        start_after: None,
                        limit: None,
                        revision: Some(subscription.revision),
                    })
                    .await?;
                for kv in &listed.kvs {
                    let object = stored_object(kv)?;
                    if filter.matches(&object) {
                        first.push(shown.line(kind, "ADDED", &object, sse));
                    }
                }
                if initial_events {
                    first.push(shown.bookmark(kind, subscription.revision, true, sse));
                }
            }
            for change in std::mem::take(&mut subscription.backlog) {
                if let Some(type_) = filter.event_type(&change) {
                    first.push(shown.change(kind, type_, &change, sse));
                }
            }
            // The body polls the subscription itself: no task and channel between the broadcast and the
            // connection, so an event reaches each client with one wake-up. A client that stops reading stops
            // polling; the broadcast then cuts it off (an ERROR event) without holding back the others.
            let backlog_end = subscription.revision;
            live =
                Some(self.live(Source::Cache(subscription), backlog_end, filter, bookmarks, timeout, kind, sse, shown));
        }
        Ok(watch_response(first, live, sse, view))
    }

    /// The live part of a watch from `source`, the client having been brought to `latest`.
    #[allow(clippy::too_many_arguments, reason = "the parts of one watch")]
    fn live(
        &self,
        source: Source,
        latest: Revision,
        filter: Filter,
        bookmarks: bool,
        timeout: Option<std::time::Duration>,
        kind: &'static KindInfo,
        sse: bool,
        shown: Shown,
    ) -> WatchStream {
        WatchStream {
            latest,
            feed: Feed { source, pending: std::collections::VecDeque::new(), kind, floor: latest },
            filter,
            ticker: bookmarks.then(|| {
                let mut ticker = tokio::time::interval(watch_cache::BOOKMARK_EVERY);
                ticker.reset();
                ticker
            }),
            expired: timeout.map(|t| Box::pin(tokio::time::sleep(t))),
            kind,
            sse,
            shown,
        }
    }
}

/// The response: what goes first (initial objects, backlog, or an ERROR), then the live events.
fn watch_response(first: Vec<bytes::Bytes>, live: Option<WatchStream>, sse: bool, view: View) -> Response {
    let first = futures::stream::iter(first.into_iter().map(Ok::<_, std::convert::Infallible>));
    let live = futures::stream::iter(live).flat_map(WatchStream::into_stream);
    let mut response = axum::body::Body::from_stream(first.chain(live)).into_response();
    let content_type = if sse { "text/event-stream" } else { view.content_type(true) };
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    response
}

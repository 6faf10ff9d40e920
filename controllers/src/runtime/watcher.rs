//! [`watcher`]: a never-ending stream of what happens to the objects of one kind — list, then watch; resume from the
//! last resourceVersion when a stream ends; list again when the server says 410; back off (with jitter) on errors.
//!
//! The watcher is a state machine, [`Empty` → `Listing` → `Listed` → `Watching`], driven by [`Watcher::next`]. It
//! reaches the apiserver only through [`ListWatch`], so it is tested against a scripted source without a server.
//!
//! Every (re)list is framed by [`Event::Init`] and [`Event::InitDone`], with the listed objects as
//! [`Event::InitApply`] in between: a [`reflector`](super::reflector) builds a fresh cache from them and swaps it in
//! at `InitDone`, so objects deleted while the watch was broken disappear from the cache too.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use agora_client::{Api, ListParams, WatchParams};
use agora_schemas::{List, Resource, Status, WatchEvent};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use super::backoff::{Backoff, BackoffConfig};

/// A watch that ends this soon without an event is retried after a backoff, not at once.
const QUICK_END: Duration = Duration::from_secs(1);

/// What happened to an object, or where a (re)list is.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<K> {
    /// The object was created or changed (seen by the watch).
    Apply(K),
    /// The object was deleted; this is its last state.
    Delete(K),
    /// A list starts: the objects that follow as `InitApply` are all that exist.
    Init,
    /// An object that exists, from the list.
    InitApply(K),
    /// The list is complete; watch events follow.
    InitDone,
}

impl<K> Event<K> {
    /// The object the event is about, if any.
    pub fn object(&self) -> Option<&K> {
        match self {
            Self::Apply(o) | Self::Delete(o) | Self::InitApply(o) => Some(o),
            Self::Init | Self::InitDone => None,
        }
    }
}

/// Why the watcher could not list or watch (it retries by itself; these are for logs).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The list failed.
    #[error("initial list failed: {0}")]
    List(#[source] agora_client::Error),
    /// Starting the watch failed.
    #[error("starting the watch failed: {0}")]
    Watch(#[source] agora_client::Error),
    /// The watch stream broke or carried something undecodable.
    #[error("the watch stream failed: {0}")]
    Stream(#[source] agora_client::Error),
    /// The server ended the watch with an ERROR event other than 410.
    #[error("the server ended the watch: {0}")]
    Server(Box<Status>),
}

/// Which objects to watch, and how.
#[derive(Clone, Debug)]
#[must_use]
pub struct Config {
    /// Only objects with matching labels.
    pub label_selector: Option<String>,
    /// Only objects with matching fields.
    pub field_selector: Option<String>,
    /// Objects per list page (the list stays consistent at one revision across pages).
    pub page_size: u32,
    /// Seconds before the server ends a watch (it is resumed at once).
    pub timeout: u32,
    /// The delays between failed attempts.
    pub backoff: BackoffConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            label_selector: None,
            field_selector: None,
            page_size: 500,
            timeout: 290,
            backoff: BackoffConfig::WATCHER,
        }
    }
}

impl Config {
    /// Only objects whose labels match.
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = Some(selector.to_owned());
        self
    }

    /// Only objects whose fields match.
    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = Some(selector.to_owned());
        self
    }

    /// List in pages of `size` objects.
    pub fn page_size(mut self, size: u32) -> Self {
        self.page_size = size.max(1);
        self
    }

    /// Ask the server to end each watch after `seconds`.
    pub fn timeout(mut self, seconds: u32) -> Self {
        self.timeout = seconds;
        self
    }

    /// Wait this way between failed attempts.
    pub fn backoff(mut self, backoff: BackoffConfig) -> Self {
        self.backoff = backoff;
        self
    }

    fn list_params(&self, continue_token: Option<&str>) -> ListParams {
        let mut params = ListParams {
            label_selector: self.label_selector.clone(),
            field_selector: self.field_selector.clone(),
            ..ListParams::default()
        }
        .limit(self.page_size);
        if let Some(token) = continue_token {
            params = params.continue_token(token);
        }
        params
    }

    fn watch_params(&self) -> WatchParams {
        WatchParams {
            label_selector: self.label_selector.clone(),
            field_selector: self.field_selector.clone(),
            timeout: self.timeout,
            ..WatchParams::default()
        }
    }
}

/// A stream of watch events, as [`ListWatch::watch`] returns it.
pub type EventStream<K> = BoxStream<'static, agora_client::Result<WatchEvent<K>>>;

/// Where the watcher lists and watches: an [`Api`], or a scripted source in tests.
pub trait ListWatch<K>: Send + Sync + 'static {
    /// One page of objects.
    fn list(&self, params: &ListParams) -> impl Future<Output = agora_client::Result<List<K>>> + Send;
    /// Events after `resource_version`.
    fn watch(
        &self,
        params: &WatchParams,
        resource_version: &str,
    ) -> impl Future<Output = agora_client::Result<EventStream<K>>> + Send;
}

impl<K: Resource> ListWatch<K> for Api<K> {
    async fn list(&self, params: &ListParams) -> agora_client::Result<List<K>> {
        Api::list(self, params).await
    }

    async fn watch(&self, params: &WatchParams, resource_version: &str) -> agora_client::Result<EventStream<K>> {
        Ok(Api::watch(self, params, resource_version).await?.boxed())
    }
}

/// Where the state machine is.
enum State<K> {
    /// Nothing known: list from the start.
    Empty,
    /// Listing; the next page is fetched with this token, and the list is at this revision.
    Listing { continue_token: String, resource_version: String },
    /// Everything up to this revision is known: watch from it.
    Listed { resource_version: String },
    /// Watching; the last revision seen is kept to resume from.
    Watching { resource_version: String, stream: EventStream<K>, since: tokio::time::Instant, events: usize },
}

/// The watcher's state machine. Most code wants [`watcher`], the stream over it.
pub struct Watcher<K, A> {
    source: A,
    config: Config,
    state: State<K>,
    pending: VecDeque<Event<K>>,
    backoff: Backoff,
    /// Set after an error: wait this long before the next attempt.
    delay: Option<Duration>,
}

impl<K: Resource, A: ListWatch<K>> Watcher<K, A> {
    /// A watcher that has not listed yet.
    pub fn new(source: A, config: Config) -> Self {
        let backoff = Backoff::new(config.backoff);
        Self { source, config, state: State::Empty, pending: VecDeque::new(), backoff, delay: None }
    }

    /// The resourceVersion the watcher would resume from, once it has listed.
    #[must_use]
    pub fn resource_version(&self) -> Option<&str> {
        match &self.state {
            State::Empty => None,
            State::Listing { resource_version, .. }
            | State::Listed { resource_version }
            | State::Watching { resource_version, .. } => Some(resource_version),
        }
    }

    /// The next event, or an error (after which the next call waits out the backoff and tries again).
    ///
    /// # Errors
    /// A failed list or watch, or a broken stream. The watcher has already arranged to retry.
    pub async fn next(&mut self) -> Result<Event<K>, Error> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            if let Some(delay) = self.delay.take() {
                tokio::time::sleep(delay).await;
            }
            if let Some(error) = self.step().await {
                self.delay = Some(self.backoff.next_delay());
                return Err(error);
            }
        }
    }

    /// Advances the state machine by one request or one watch event, queueing what it yields.
    async fn step(&mut self) -> Option<Error> {
        match std::mem::replace(&mut self.state, State::Empty) {
            State::Empty => {
                self.pending.push_back(Event::Init);
                self.list_page(None, None).await
            }
            State::Listing { continue_token, resource_version } => {
                self.list_page(Some(continue_token), Some(resource_version)).await
            }
            State::Listed { resource_version } => {
                match self.source.watch(&self.config.watch_params(), &resource_version).await {
                    Ok(stream) => {
                        let since = tokio::time::Instant::now();
                        self.state = State::Watching { resource_version, stream, since, events: 0 };
                        None
                    }
                    Err(e) if e.is_gone() => {
                        tracing::debug!(%resource_version, "watch refused with 410; listing again");
                        None // State::Empty: list again
                    }
                    Err(e) => {
                        self.state = State::Listed { resource_version };
                        Some(Error::Watch(e))
                    }
                }
            }
            State::Watching { resource_version, mut stream, since, events } => match stream.next().await {
                Some(Ok(event)) => match self.on_watch_event(event, resource_version) {
                    Ok(resource_version) => {
                        self.state = State::Watching { resource_version, stream, since, events: events + 1 };
                        None
                    }
                    Err(error) => error,
                },
                Some(Err(e)) => {
                    self.state = State::Listed { resource_version };
                    Some(Error::Stream(e))
                }
                None => {
                    // The server's timeout or a closed connection: resume where we were — at once, unless the
                    // stream ended as soon as it began, which repeated would be a busy loop against the server.
                    if events == 0 && since.elapsed() < QUICK_END {
                        self.delay = Some(self.backoff.next_delay());
                    }
                    self.state = State::Listed { resource_version };
                    None
                }
            },
        }
    }

    /// Queues what a watch event means; returns the revision to resume from, or ends the watch.
    fn on_watch_event(&mut self, event: WatchEvent<K>, resource_version: String) -> Result<String, Option<Error>> {
        let revision_of = |object: &K, fallback: String| object.metadata().resource_version.clone().unwrap_or(fallback);
        match event {
            WatchEvent::Added(object) | WatchEvent::Modified(object) => {
                let resource_version = revision_of(&object, resource_version);
                self.pending.push_back(Event::Apply(object));
                Ok(resource_version)
            }
            WatchEvent::Deleted(object) => {
                let resource_version = revision_of(&object, resource_version);
                self.pending.push_back(Event::Delete(object));
                Ok(resource_version)
            }
            WatchEvent::Bookmark(bookmark) => Ok(bookmark.metadata.resource_version),
            WatchEvent::Error(status) if status.code == 410 => {
                tracing::debug!(
                    message = status.message.as_deref().unwrap_or(""),
                    "watch expired (410); listing again"
                );
                self.state = State::Empty;
                Err(None)
            }
            WatchEvent::Error(status) => {
                self.state = State::Listed { resource_version };
                Err(Some(Error::Server(Box::new(status))))
            }
        }
    }

    async fn list_page(&mut self, continue_token: Option<String>, pinned: Option<String>) -> Option<Error> {
        match self.source.list(&self.config.list_params(continue_token.as_deref())).await {
            Ok(list) => {
                let resource_version =
                    list.metadata.resource_version.clone().filter(|rv| !rv.is_empty()).or(pinned).unwrap_or_default();
                self.pending.extend(list.items.into_iter().map(Event::InitApply));
                match list.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(token) => self.state = State::Listing { continue_token: token, resource_version },
                    None => {
                        self.pending.push_back(Event::InitDone);
                        self.backoff_after_success();
                        self.state = State::Listed { resource_version };
                    }
                }
                None
            }
            Err(e) if e.is_gone() => {
                // The continue token expired: the whole list starts again, framed by a fresh Init.
                tracing::debug!("list continuation expired; listing again");
                self.pending.clear();
                None
            }
            Err(e) => {
                // Earlier pages were delivered before this one was asked for; only a first page's undelivered `Init`
                // can be queued, and it is queued again when the list starts over.
                self.pending.clear();
                self.state = match (continue_token, pinned) {
                    (Some(continue_token), Some(resource_version)) => {
                        State::Listing { continue_token, resource_version }
                    }
                    _ => State::Empty,
                };
                Some(Error::List(e))
            }
        }
    }

    fn backoff_after_success(&mut self) {
        // A completed list proves the server is healthy again; the reset-after period covers flapping watches.
        self.backoff.reset();
    }
}

/// The events of `K` selected by `config`, forever: list, watch, resume, relist on 410, back off on errors.
///
/// ```no_run
/// # async fn run() -> agora_client::Result<()> {
/// use agora_client::{Api, Client};
/// use agora_controllers::runtime::watcher::{self, Event};
/// use agora_schemas::Task;
/// use futures::StreamExt;
///
/// let tasks: Api<Task> = Api::all(Client::try_default()?);
/// let mut events = watcher::watcher(tasks, watcher::Config::default().fields("spec.agent=a1")).boxed();
/// while let Some(event) = events.next().await {
///     match event {
///         Ok(Event::Apply(task) | Event::InitApply(task)) => println!("{}", task.metadata.display_name()),
///         Ok(_) => {}
///         Err(e) => eprintln!("watch trouble (retrying): {e}"),
///     }
/// }
/// # Ok(()) }
/// ```
pub fn watcher<K: Resource, A: ListWatch<K>>(source: A, config: Config) -> impl Stream<Item = Result<Event<K>, Error>> {
    futures::stream::unfold(Watcher::new(source, config), |mut watcher| async move {
        let item = watcher.next().await;
        Some((item, watcher))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use agora_client::Operation;
    use agora_schemas::meta::{Bookmark, BookmarkMeta};
    use agora_schemas::{App, AppSpec, ListMeta, ObjectMeta, StatusReason};

    use super::*;

    /// One scripted answer.
    enum Answer {
        List(Vec<App>, &'static str, Option<&'static str>),
        Watch(Vec<agora_client::Result<WatchEvent<App>>>),
        Fail(u16),
    }

    /// A source that answers calls from a script and records them.
    #[derive(Clone, Default)]
    struct Script {
        answers: Arc<Mutex<VecDeque<Answer>>>,
        calls: Arc<Mutex<Vec<String>>>,
    }

    fn failure(code: u16) -> agora_client::Error {
        let reason = match code {
            410 => StatusReason::Expired,
            _ => StatusReason::ServiceUnavailable,
        };
        let mut status = Status::failure(reason, "scripted");
        status.code = code;
        agora_client::Error::Api {
            operation: Operation { verb: "list", object: "apps".into() },
            status: Box::new(status),
        }
    }

    impl Script {
        fn new(answers: Vec<Answer>) -> Self {
            Self { answers: Arc::new(Mutex::new(answers.into())), calls: Arc::default() }
        }

        fn next(&self, call: String) -> Answer {
            self.calls.lock().unwrap().push(call);
            self.answers.lock().unwrap().pop_front().unwrap_or(Answer::Watch(Vec::new()))
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl ListWatch<App> for Script {
        async fn list(&self, params: &ListParams) -> agora_client::Result<List<App>> {
            let call = format!("list continue={}", params.continue_token.as_deref().unwrap_or("-"));
            match self.next(call) {
                Answer::List(items, rv, next) => Ok(List {
                    api_version: "agora/v1".into(),
                    kind: "AppList".into(),
                    metadata: ListMeta {
                        resource_version: Some(rv.into()),
                        continue_: next.map(str::to_owned),
                        ..ListMeta::default()
                    },
                    items,
                }),
                Answer::Fail(code) => Err(failure(code)),
                Answer::Watch(_) => panic!("script expected a watch"),
            }
        }

        async fn watch(&self, _: &WatchParams, rv: &str) -> agora_client::Result<EventStream<App>> {
            match self.next(format!("watch rv={rv}")) {
                Answer::Watch(events) => Ok(futures::stream::iter(events).boxed()),
                Answer::Fail(code) => Err(failure(code)),
                Answer::List(..) => panic!("script expected a list"),
            }
        }
    }

    fn app(name: &str, rv: &str) -> App {
        let mut meta = ObjectMeta::named(Some("default"), name);
        meta.resource_version = Some(rv.into());
        App::new(meta, AppSpec::default())
    }

    fn bookmark(rv: &str) -> WatchEvent<App> {
        WatchEvent::Bookmark(Bookmark {
            api_version: "agora/v1".into(),
            kind: "App".into(),
            metadata: BookmarkMeta { resource_version: rv.into(), ..BookmarkMeta::default() },
        })
    }

    /// Names events compactly: `init`, `+a@3` (InitApply), `a@5` (Apply), `-a@6`, `done`, `ERR`.
    async fn take(watcher: &mut Watcher<App, Script>, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            let label = |o: &App| {
                format!("{}@{}", o.metadata.name.clone().unwrap(), o.metadata.resource_version.clone().unwrap())
            };
            out.push(match watcher.next().await {
                Ok(Event::Init) => "init".to_owned(),
                Ok(Event::InitApply(o)) => format!("+{}", label(&o)),
                Ok(Event::InitDone) => "done".to_owned(),
                Ok(Event::Apply(o)) => label(&o),
                Ok(Event::Delete(o)) => format!("-{}", label(&o)),
                Err(_) => "ERR".to_owned(),
            });
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn lists_in_pages_then_watches_and_resumes_from_the_last_revision() {
        let script = Script::new(vec![
            Answer::List(vec![app("a", "3")], "5", Some("page2")),
            Answer::List(vec![app("b", "4")], "5", None),
            Answer::Watch(vec![Ok(WatchEvent::Modified(app("a", "6"))), Ok(bookmark("9"))]),
            Answer::Watch(vec![Ok(WatchEvent::Deleted(app("b", "10")))]),
        ]);
        let mut watcher = Watcher::new(script.clone(), Config::default());
        assert_eq!(take(&mut watcher, 6).await, ["init", "+a@3", "+b@4", "done", "a@6", "-b@10"]);
        assert_eq!(script.calls(), ["list continue=-", "list continue=page2", "watch rv=5", "watch rv=9"]);
        assert_eq!(watcher.resource_version(), Some("10"));
    }

    #[tokio::test(start_paused = true)]
    async fn relists_when_the_watch_says_410_in_an_event_or_an_answer() {
        let mut expired = Status::failure(StatusReason::Expired, "too old");
        expired.code = 410;
        let script = Script::new(vec![
            Answer::List(vec![app("a", "3")], "3", None),
            Answer::Watch(vec![Ok(WatchEvent::Error(expired)), Ok(WatchEvent::Modified(app("a", "99")))]),
            Answer::List(vec![app("a", "7")], "8", None),
            Answer::Fail(410),
            Answer::List(vec![], "12", None),
        ]);
        let mut watcher = Watcher::new(script.clone(), Config::default());
        let events = take(&mut watcher, 8).await;
        assert_eq!(events, ["init", "+a@3", "done", "init", "+a@7", "done", "init", "done"]);
        assert_eq!(
            script.calls(),
            ["list continue=-", "watch rv=3", "list continue=-", "watch rv=8", "list continue=-"],
            "the event after the 410 is never delivered; a refused watch relists"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backs_off_exponentially_on_errors_and_resets_after_success() {
        let script = Script::new(vec![
            Answer::Fail(503),
            Answer::Fail(503),
            Answer::Fail(503),
            Answer::List(vec![], "1", None),
            Answer::Fail(503),
            Answer::Watch(vec![Ok(WatchEvent::Added(app("z", "2")))]),
        ]);
        let config = Config::default().backoff(BackoffConfig::WATCHER.without_jitter());
        let mut watcher = Watcher::new(script.clone(), config);
        let start = tokio::time::Instant::now();
        let mut errors_at = Vec::new();
        for _ in 0..6 {
            if watcher.next().await.is_err() {
                errors_at.push(start.elapsed().as_millis());
            }
        }
        // Failures at 0, +0.8 s, +1.6 s; then the list succeeds (after 3.2 s), and the watch failure backs off
        // from the start again.
        assert_eq!(errors_at, [0, 800, 2400, 5600]);
        let before = tokio::time::Instant::now();
        let _ = watcher.next().await; // the retry waits the initial delay again
        assert_eq!(before.elapsed(), Duration::from_millis(800));
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_stream_is_resumed_after_a_backoff_and_an_ended_one_at_once() {
        let broken = failure(503);
        let script = Script::new(vec![
            Answer::List(vec![], "2", None),
            Answer::Watch(vec![Ok(WatchEvent::Added(app("a", "3"))), Err(broken)]),
            Answer::Watch(vec![Ok(WatchEvent::Added(app("b", "4")))]),
            Answer::Watch(vec![Ok(WatchEvent::Added(app("c", "5")))]),
        ]);
        let mut watcher =
            Watcher::new(script.clone(), Config::default().backoff(BackoffConfig::WATCHER.without_jitter()));
        let start = tokio::time::Instant::now();
        assert_eq!(take(&mut watcher, 5).await, ["init", "done", "a@3", "ERR", "b@4"]);
        assert_eq!(start.elapsed(), Duration::from_millis(800));
        assert_eq!(take(&mut watcher, 1).await, ["c@5"]);
        assert_eq!(start.elapsed(), Duration::from_millis(800), "a stream that just ended is resumed at once");
        assert_eq!(script.calls(), ["list continue=-", "watch rv=2", "watch rv=3", "watch rv=4"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_page_is_fetched_again_without_losing_the_earlier_pages() {
        let script = Script::new(vec![
            Answer::List(vec![app("a", "1")], "5", Some("p2")),
            Answer::Fail(503),
            Answer::List(vec![app("b", "2")], "5", None),
        ]);
        let mut watcher = Watcher::new(script.clone(), Config::default());
        assert_eq!(take(&mut watcher, 5).await, ["init", "+a@1", "ERR", "+b@2", "done"]);
        assert_eq!(script.calls(), ["list continue=-", "list continue=p2", "list continue=p2"]);
    }
}

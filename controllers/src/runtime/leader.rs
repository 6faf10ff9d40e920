//! [`LeaderElector`]: one active replica per controller, elected on a `Lease` object, as Kubernetes' client-go does.
//!
//! - The lease names its holder, how long a hold lasts (`leaseDurationSeconds`), when the holder took it
//!   (`acquireTime`) and last renewed it (`renewTime`), and how often it changed hands (`leaseTransitions`). Every
//!   write is a compare-and-swap on the lease's resourceVersion: two candidates never both win.
//! - A candidate takes the lease when it has no holder or when the holder has not renewed it for a whole lease
//!   duration, measured on the candidate's own clock from when it *saw* the last change (clocks of different machines
//!   are never compared). Candidates watch the lease, so they see each renewal as it happens: a dead leader's lease
//!   is taken one lease duration after its last renewal.
//! - The leader renews every `retry_period`. If it cannot renew for `renew_deadline` (shorter than the lease
//!   duration), it stops acting at once — its work future is dropped — before anyone else can take the lease.
//! - On a clean exit the leader releases the lease, so a successor need not wait out the duration.

use std::future::Future;
use std::time::Duration;

use agora_client::{Api, PostParams, WatchEvent, WatchParams};
use agora_schemas::{Lease, LeaseSpec, ObjectMeta};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use tokio::sync::watch;
use tokio::time::Instant;

/// Timing of the election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct LeaseConfig {
    /// How long a lease holds without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal. Must be shorter than `lease_duration`.
    pub renew_deadline: Duration,
    /// How often the leader renews, and how often a candidate looks again at a held lease.
    pub retry_period: Duration,
}

impl Default for LeaseConfig {
    /// Kubernetes' defaults: 15 s, 10 s, 2 s.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaseConfig {
    /// A lease of `duration`, renewed every `duration / 6`, given up after `2/3 duration` without renewal.
    pub fn with_duration(duration: Duration) -> Self {
        Self { lease_duration: duration, renew_deadline: duration * 2 / 3, retry_period: duration / 6 }
    }
}

/// Why the election cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The timing cannot guarantee a single leader.
    #[error("lease timing: {0}")]
    Config(String),
}

/// Takes part in the election for one lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    config: LeaseConfig,
    /// In a mutex only so the elector is `Sync` (its `run` future then is `Send`); taken once, at the start.
    shutdown: std::sync::Mutex<Option<BoxFuture<'static, ()>>>,
    leading: watch::Sender<bool>,
}

/// What a candidate knows of the lease.
struct Observed {
    lease: Option<Lease>,
    /// When the lease last changed, on our clock.
    changed_at: Instant,
}

impl LeaderElector {
    /// A candidate `identity` (unique per replica: hostname and pid, say) for the lease `name` in `api`'s namespace.
    #[must_use]
    pub fn new(api: Api<Lease>, name: &str, identity: &str) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            config: LeaseConfig::default(),
            shutdown: std::sync::Mutex::new(None),
            leading: watch::channel(false).0,
        }
    }

    /// Uses this timing.
    #[must_use]
    pub fn config(mut self, config: LeaseConfig) -> Self {
        self.config = config;
        self
    }

    /// Stops competing when `signal` completes: a candidate returns; a leader lets its work finish (the work should
    /// watch for the same signal, as [`Controller::shutdown_on_signal`](super::Controller::shutdown_on_signal) does),
    /// then releases the lease.
    #[must_use]
    pub fn shutdown_on(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.shutdown = std::sync::Mutex::new(Some(signal.boxed()));
        self
    }

    /// Stops competing on SIGTERM or SIGINT.
    #[must_use]
    pub fn shutdown_on_signal(self) -> Self {
        self.shutdown_on(super::shutdown_signal())
    }

    /// Whether this replica leads now, as it changes.
    #[must_use]
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Competes for the lease; while leading, runs `lead()`. If leadership is lost, the work is dropped and the
    /// candidate competes again (calling `lead` afresh when it wins). Returns when the work completes (the lease is
    /// then released) or on shutdown.
    ///
    /// ```no_run
    /// # async fn run() -> anyhow::Result<()> {
    /// use agora_client::{Api, Client};
    /// use agora_controllers::runtime::leader::LeaderElector;
    /// use agora_schemas::Lease;
    ///
    /// let client = Client::try_default()?;
    /// let leases: Api<Lease> = Api::namespaced(client, "agora-system");
    /// LeaderElector::new(leases, "my-controller", "replica-1")
    ///     .shutdown_on_signal()
    ///     .run(|| async {
    ///         // Build and run the Controller here: only the leader does.
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] when `renew_deadline` is not shorter than the lease duration, or `retry_period` not shorter
    /// than `renew_deadline`.
    pub async fn run<F, Fut>(self, mut lead: F) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        let config = self.config;
        if config.renew_deadline >= config.lease_duration || config.retry_period >= config.renew_deadline {
            return Err(Error::Config(format!(
                "need retry period ({:?}) < renew deadline ({:?}) < lease duration ({:?})",
                config.retry_period, config.renew_deadline, config.lease_duration
            )));
        }
        let taken = self.shutdown.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let mut shutdown = taken.unwrap_or_else(|| std::future::pending().boxed()).fuse();
        let mut observed = Observed { lease: None, changed_at: Instant::now() };
        loop {
            // Candidate: try now, then whenever the lease may have lapsed (or every retry period).
            match self.try_acquire(&mut observed).await {
                Ok(true) => {}
                Ok(false) => {
                    tokio::select! {
                        () = self.wait_for_lapse(&mut observed) => continue,
                        () = &mut shutdown => return Ok(()),
                    }
                }
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "cannot read or take the lease; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(config.retry_period) => continue,
                        () = &mut shutdown => return Ok(()),
                    }
                }
            }

            tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
            self.leading.send_replace(true);
            let lost = {
                let mut work = std::pin::pin!(lead().fuse());
                let mut renewer = std::pin::pin!(self.keep_renewing(&mut observed).fuse());
                let mut stopping = false;
                loop {
                    tokio::select! {
                        () = &mut work => break None,
                        reason = &mut renewer => break Some(reason),
                        () = &mut shutdown, if !stopping => stopping = true,
                    }
                }
            };
            self.leading.send_replace(false);
            if let Some(reason) = lost {
                // `work` was dropped: it stopped before the lease could lapse and be taken.
                tracing::warn!(lease = %self.name, identity = %self.identity, reason, "lost leadership; stopped acting");
                continue;
            }
            self.release(&mut observed).await;
            return Ok(());
        }
    }

    /// Renews the lease every retry period; returns (why) when leadership is lost: another replica holds the lease, or
    /// no renewal succeeded for the renew deadline.
    async fn keep_renewing(&self, observed: &mut Observed) -> &'static str {
        let config = self.config;
        let mut last_renewal = Instant::now();
        loop {
            let deadline = last_renewal + config.renew_deadline;
            tokio::time::sleep_until((Instant::now() + config.retry_period).min(deadline)).await;
            let attempt = Instant::now();
            match tokio::time::timeout_at(deadline, self.renew(observed)).await {
                Ok(Ok(true)) => last_renewal = attempt,
                Ok(Ok(false)) => return "another replica holds the lease",
                Ok(Err(e)) => tracing::warn!(lease = %self.name, error = %e, "renewing the lease failed"),
                Err(_) => return "no renewal succeeded within the renew deadline",
            }
            if Instant::now() >= last_renewal + config.renew_deadline {
                return "no renewal succeeded within the renew deadline";
            }
        }
    }

    /// Waits, as a candidate, until the lease may have lapsed: a whole lease duration after its last change, which
    /// a watch on the lease notices as it happens (so the lapse is timed from the holder's last renewal, not from
    /// when we happened to look). Returns early when the lease is deleted or released, or when the watch fails.
    async fn wait_for_lapse(&self, observed: &mut Observed) {
        let Some(lease) = observed.lease.clone() else { return };
        let resource_version = lease.metadata.resource_version.clone().unwrap_or_default();
        let params = WatchParams::default().fields(&format!("metadata.name={}", self.name)).timeout(60);
        let mut changes = match self.api.watch(&params, &resource_version).await {
            Ok(stream) => stream.boxed(),
            Err(e) => {
                tracing::debug!(lease = %self.name, error = %e, "cannot watch the lease; looking again later");
                futures::stream::empty().boxed()
            }
        };
        loop {
            let lease = observed.lease.as_ref();
            if lease.and_then(|l| l.spec.holder_identity.as_deref()).is_none_or(str::is_empty) {
                return; // released: take it now
            }
            let duration = lease
                .and_then(|l| l.spec.lease_duration_seconds)
                .map_or(self.config.lease_duration, |s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
            let lapses = observed.changed_at + duration;
            tokio::select! {
                () = tokio::time::sleep_until(lapses) => return,
                change = changes.next() => match change {
                    Some(Ok(WatchEvent::Added(lease) | WatchEvent::Modified(lease))) => self.observe(observed, lease),
                    Some(Ok(WatchEvent::Bookmark(_))) => {}
                    Some(Ok(WatchEvent::Deleted(_))) => return, // gone: create it now
                    Some(Ok(WatchEvent::Error(_)) | Err(_)) | None => {
                        // Without a watch, look again after a retry period (or at the lapse, if sooner).
                        tokio::time::sleep_until(lapses.min(Instant::now() + self.config.retry_period)).await;
                        return;
                    }
                },
            }
        }
    }

    fn spec(&self, previous: Option<&LeaseSpec>, taking: bool) -> LeaseSpec {
        let now = Timestamp::now();
        let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
        let changed_hands =
            previous.and_then(|s| s.holder_identity.as_deref()).is_some_and(|h| !h.is_empty() && h != self.identity);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX),
            ),
            acquire_time: if taking { Some(now) } else { previous.and_then(|s| s.acquire_time).or(Some(now)) },
            renew_time: Some(now),
            lease_transitions: Some(if taking && changed_hands { transitions + 1 } else { transitions }),
        }
    }

    /// Reads the lease and takes it if it is free or lapsed. `Ok(true)` when we hold it now.
    async fn try_acquire(&self, observed: &mut Observed) -> agora_client::Result<bool> {
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let mut meta = ObjectMeta::named(self.api.namespace(), &self.name);
            meta.namespace = self.api.namespace().map(str::to_owned);
            let lease = Lease::new(meta, self.spec(None, true));
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(observed, created);
                    Ok(true)
                }
                Err(e) if e.is_already_exists() => Ok(false),
                Err(e) => Err(e),
            };
        };
        self.observe(observed, current.clone());
        let holder = current.spec.holder_identity.as_deref().unwrap_or("");
        let duration = current
            .spec
            .lease_duration_seconds
            .map_or(self.config.lease_duration, |s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
        let ours = holder == self.identity;
        let lapsed = holder.is_empty() || observed.changed_at.elapsed() >= duration;
        if !ours && !lapsed {
            return Ok(false);
        }
        let mut lease = current.clone();
        lease.spec = self.spec(Some(&current.spec), !ours);
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(updated) => {
                self.observe(observed, updated);
                Ok(true)
            }
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Renews the lease we hold. `Ok(false)` when someone else holds it now.
    async fn renew(&self, observed: &mut Observed) -> agora_client::Result<bool> {
        let current = match &observed.lease {
            Some(lease) if lease.spec.holder_identity.as_deref() == Some(&self.identity) => lease.clone(),
            _ => self.api.get(&self.name).await?,
        };
        if current.spec.holder_identity.as_deref() != Some(&self.identity) {
            self.observe(observed, current);
            return Ok(false);
        }
        let mut lease = current.clone();
        lease.spec = self.spec(Some(&current.spec), false);
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(updated) => {
                self.observe(observed, updated);
                Ok(true)
            }
            Err(e) if e.is_conflict() => {
                // Our copy was stale; look at the lease as it is and decide on the next round.
                let fresh = self.api.get(&self.name).await?;
                let ours = fresh.spec.holder_identity.as_deref() == Some(&self.identity);
                self.observe(observed, fresh);
                if ours { Err(e) } else { Ok(false) }
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up so a successor need not wait for it to lapse.
    async fn release(&self, observed: &mut Observed) {
        let Some(mut lease) = observed.lease.clone() else { return };
        if lease.spec.holder_identity.as_deref() != Some(&self.identity) {
            return;
        }
        lease.spec.holder_identity = Some(String::new());
        lease.spec.lease_duration_seconds = Some(1);
        lease.spec.renew_time = Some(Timestamp::now());
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %self.name, identity = %self.identity, "released the lease"),
            Err(e) => tracing::warn!(lease = %self.name, error = %e, "could not release the lease; it will lapse"),
        }
    }

    fn observe(&self, observed: &mut Observed, lease: Lease) {
        // A watch running behind (an apiserver under load) must not put back a version older than the one a renewal
        // just answered with: renewing from it would conflict until leadership is lost. Versions are the store's
        // revisions; where they are not numbers, every observation counts.
        let revision = |l: &Lease| l.metadata.resource_version.as_deref().and_then(|v| v.parse::<u64>().ok());
        if let (Some(seen), Some(new)) = (observed.lease.as_ref().and_then(revision), revision(&lease))
            && new < seen
        {
            return;
        }
        let changed =
            observed.lease.as_ref().map(|l| &l.metadata.resource_version) != Some(&lease.metadata.resource_version);
        if changed {
            observed.changed_at = Instant::now();
        }
        observed.lease = Some(lease);
    }
}

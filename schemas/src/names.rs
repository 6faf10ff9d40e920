//! The well-known names every part of Agora agrees on — labels, annotations, finalizers and the namespaces of its
//! leases — in one place, so a component never spells another's name by hand.

/// The label on an App's tasks and versions naming the App.
pub const APP_LABEL: &str = "agora.dev/app";
/// The label on an App's tasks naming the version they were built from.
pub const APP_VERSION_LABEL: &str = "agora.dev/app-version";
/// The annotation a kill request carries: why marathon killed the task.
pub const KILL_REASON_ANNOTATION: &str = "agora.dev/kill-reason";

/// The label on a run's Task naming its CronJob.
pub const CRONJOB_LABEL: &str = "agora.dev/cronjob";
/// The label on a run's Task naming its run: the scheduled instant (`20261201t020000z`) or `manual-<id>`.
pub const RUN_LABEL: &str = "agora.dev/run";
/// The label on a run's Task with its attempt (0 for the first, then each retry).
pub const ATTEMPT_LABEL: &str = "agora.dev/attempt";
/// The annotation on a run's Task with the instant it runs for (RFC 3339).
pub const INSTANT_ANNOTATION: &str = "agora.dev/instant";
/// The annotation on a run's Task with the earliest instant it also covers, when missed instants within epsilon
/// collapsed into it (RFC 3339).
pub const COVERS_FROM_ANNOTATION: &str = "agora.dev/covers-from";
/// The prefix of the annotations `POST cronjobs/{name}/trigger` writes: `trigger.agora.dev/<id>: <requested at>`.
/// Chronos starts one run per id (its Task is `<job>-manual-<id>-0`) and then removes the annotation.
pub const TRIGGER_ANNOTATION_PREFIX: &str = "trigger.agora.dev/";

/// The finalizer an agent puts on the Tasks it runs, so a deleted task's container is stopped first.
pub const AGENT_FINALIZER: &str = "agora.dev/agent";
/// Annotation on a Task: how many seconds a hollow agent "runs" it before it finishes.
pub const HOLLOW_RUN_SECONDS_ANNOTATION: &str = "hollow.agora.dev/run-seconds";
/// Annotation on a Task: the exit code a hollow agent reports when it finishes (default 0).
pub const HOLLOW_EXIT_CODE_ANNOTATION: &str = "hollow.agora.dev/exit-code";

/// Where agents renew their heartbeat leases (one per agent, named as the agent).
pub const AGENT_LEASE_NAMESPACE: &str = "agora-agents";
/// Where frameworks renew the leases that say they are connected.
pub const FRAMEWORK_LEASE_NAMESPACE: &str = "agora-frameworks";
/// Where the controllers' leader-election leases live.
pub const CONTROLLER_LEASE_NAMESPACE: &str = "agora-system";

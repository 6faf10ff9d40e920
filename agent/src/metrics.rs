//! The agent's `/metrics` (Prometheus text): per running task, CPU seconds and memory from its cgroup; how many
//! tasks run. Series of a task go when it ends.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::cgroups::Usage;

/// Which task a series is about.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    /// `namespace/name`.
    pub task: String,
    /// The task's uid.
    pub uid: String,
}

/// The agent's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    cpu: Family<TaskLabels, Gauge<f64, AtomicU64>>,
    memory: Family<TaskLabels, Gauge>,
    memory_peak: Family<TaskLabels, Gauge>,
    running: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let cpu = Family::<TaskLabels, Gauge<f64, AtomicU64>>::default();
        let memory = Family::<TaskLabels, Gauge>::default();
        let memory_peak = Family::<TaskLabels, Gauge>::default();
        let running = Gauge::default();
        registry.register("agora_task_cpu_seconds", "CPU time a running task has used", cpu.clone());
        registry.register("agora_task_memory_bytes", "Memory a running task uses", memory.clone());
        registry.register(
            "agora_task_memory_peak_bytes",
            "The most memory a running task has used",
            memory_peak.clone(),
        );
        registry.register("agora_tasks_running", "Tasks this agent runs", running.clone());
        Self { registry: Arc::new(Mutex::new(registry)), cpu, memory, memory_peak, running }
    }
}

impl Metrics {
    /// Records a task's latest usage.
    pub fn record(&self, labels: &TaskLabels, usage: &Usage) {
        self.cpu.get_or_create(labels).set(usage.cpu_seconds);
        self.memory.get_or_create(labels).set(i64::try_from(usage.memory_bytes).unwrap_or(i64::MAX));
        self.memory_peak.get_or_create(labels).set(i64::try_from(usage.memory_peak_bytes).unwrap_or(i64::MAX));
    }

    /// Forgets an ended task's series.
    pub fn forget(&self, labels: &TaskLabels) {
        self.cpu.remove(labels);
        self.memory.remove(labels);
        self.memory_peak.remove(labels);
    }

    /// Sets how many tasks run.
    pub fn set_running(&self, count: usize) {
        self.running.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            text.clear();
        }
        text
    }
}

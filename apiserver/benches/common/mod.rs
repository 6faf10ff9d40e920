//! What the benchmarks share: a closed-loop load of concurrent workers, and percentiles.

#![allow(dead_code, reason = "each benchmark uses its own subset")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What a measurement counted: operations completed and their latencies, over some elapsed time.
#[derive(Default)]
pub struct Throughput {
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl Throughput {
    pub fn merge(&mut self, other: Throughput) {
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }

    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn p99_ms(&mut self) -> f64 {
        self.latencies.sort_unstable();
        percentile(&self.latencies, 0.99)
    }
}

/// The `q` quantile of sorted durations, in milliseconds.
pub fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0
}

/// `workers` tasks run `op(worker, i)` back to back for `duration`, after a half-second warm-up that is not counted.
pub async fn throughput<F, Fut>(workers: usize, duration: Duration, op: F) -> Throughput
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (op, measuring, stop) = (op.clone(), measuring.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    op(w, i).await;
                    if measuring.load(Ordering::Relaxed) {
                        latencies.push(started.elapsed());
                    }
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("worker"));
    }
    Throughput { elapsed, latencies }
}

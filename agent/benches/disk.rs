//! What the agent's disk enforcement costs: one measurement of every running task, as the agent makes at each usage
//! interval (`agora_agent::disk::usage` over a task's sandbox, `/tmp` and writable layer).
//!
//! 100 task directories, each with its logs and 50 files of 16 KiB in a few directories (a typical sandbox), then the
//! same with one task holding 100,000 small files (a task that unpacked a large tree). Median and slowest of 20
//! rounds; run with `cargo bench -p agora-agent --bench disk`.

use std::path::Path;
use std::time::{Duration, Instant};

fn task_dir(root: &Path, i: usize, files: usize) {
    let dir = root.join(format!("task-{i}"));
    for part in ["sandbox", "tmp", "upper"] {
        std::fs::create_dir_all(dir.join(part)).expect("a task directory");
    }
    std::fs::write(dir.join("sandbox/stdout"), vec![b'o'; 64 << 10]).expect("stdout");
    std::fs::write(dir.join("sandbox/stderr"), vec![b'e'; 16 << 10]).expect("stderr");
    for f in 0..files {
        let sub = dir.join(format!("sandbox/data/{}", f % 10));
        std::fs::create_dir_all(&sub).expect("a data directory");
        std::fs::write(sub.join(format!("f{f}")), vec![b'x'; if files > 1000 { 100 } else { 16 << 10 }])
            .expect("a file");
    }
}

fn measure(root: &Path, tasks: usize) -> (Duration, Duration, u64) {
    let dirs: Vec<_> = (0..tasks).map(|i| agora_agent::disk::written_by(&root.join(format!("task-{i}")))).collect();
    let mut times = Vec::new();
    let mut total = 0;
    for _ in 0..20 {
        let started = Instant::now();
        total = dirs.iter().map(|d| agora_agent::disk::usage(d)).sum();
        times.push(started.elapsed());
    }
    times.sort();
    (times[times.len() / 2], times[times.len() - 1], total)
}

fn main() {
    let root = tempfile::tempdir().expect("a scratch directory");
    for i in 0..100 {
        task_dir(root.path(), i, 50);
    }
    let (median, slowest, bytes) = measure(root.path(), 100);
    println!(
        "100 tasks, 52 files each ({} MiB): one measurement of all of them takes {:.2} ms (median), {:.2} ms (slowest)",
        bytes >> 20,
        median.as_secs_f64() * 1e3,
        slowest.as_secs_f64() * 1e3
    );
    task_dir(root.path(), 100, 100_000);
    let (median, slowest, _) = measure(root.path(), 101);
    println!(
        "the same and one task of 100,000 files: {:.2} ms (median), {:.2} ms (slowest)",
        median.as_secs_f64() * 1e3,
        slowest.as_secs_f64() * 1e3
    );
}

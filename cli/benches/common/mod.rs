//! What the benchmarks that run Agora as processes share: knobs, child processes and their CPU and memory, the
//! apiserver's store metrics.

#![allow(dead_code)] // each benchmark uses part of it

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// CPU seconds the process has used (user + system).
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).unwrap_or_default();
        // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
        ticks / 100.0 // USER_HZ
    }
}

pub fn agora(args: &[&str]) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(args)
        .env("AGORA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start agora");
    Proc(child)
}

/// The store's writes so far (transactions and puts), from the apiserver's metrics.
pub fn store_writes(port: u16) -> f64 {
    let metrics = agora_e2e::http_get(port, "/metrics").unwrap_or_default();
    metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_store_request_duration_seconds_count"))
        .filter(|l| l.contains("operation=\"txn\"") || l.contains("operation=\"put\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

impl Proc {
    /// The process's resident memory, bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        kib.unwrap_or(0) * 1024
    }
}

/// `agora apiserver` on the embedded store in `dir`, plain HTTP without authentication (a benchmark on loopback),
/// ready; returns it and its port.
pub fn apiserver(dir: &std::path::Path) -> (Proc, u16) {
    let port = agora_e2e::free_port();
    let data = dir.join("data");
    let listen = format!("127.0.0.1:{port}");
    let apiserver = agora(&[
        "apiserver",
        "--listen",
        &listen,
        "--data-dir",
        data.to_str().expect("a UTF-8 path"),
        "--insecure-allow-unauthenticated",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agora_e2e::http_ok(port, "/readyz") {
        assert!(Instant::now() < deadline, "the apiserver did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    (apiserver, port)
}

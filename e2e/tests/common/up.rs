//! `agora up` as a process: started on a data dir, read until it says it is up, stopped with SIGTERM (also when a
//! test fails midway, so its parts stop too).
#![allow(dead_code, unreachable_pub)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora_e2e::agora_binary;

pub struct Up {
    pub child: Child,
}

impl Up {
    pub fn start(dir: &std::path::Path, port: u16, agent_port: u16) -> Self {
        Self::start_with(dir, port, agent_port, "cpus:2;mem:2048;disk:1000;ports:[31500-31600]")
    }

    pub fn start_with(dir: &std::path::Path, port: u16, agent_port: u16, resources: &str) -> Self {
        let listen = ["--listen".to_owned(), format!("127.0.0.1:{port}")];
        let agent = ["--agent-listen".to_owned(), format!("127.0.0.1:{agent_port}")];
        let resources = ["--agent-resources".to_owned(), resources.to_owned()];
        Self::spawn(dir, listen.iter().chain(&agent).chain(&resources), Stdio::inherit())
    }

    /// `agora up --data-dir DIR ARGS`, its output piped and its errors to `stderr`.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(
        dir: &std::path::Path,
        args: impl IntoIterator<Item = S>,
        stderr: impl Into<Stdio>,
    ) -> Self {
        let child = Command::new(agora_binary())
            .args(["up", "--data-dir"])
            .arg(dir)
            .args(args)
            .env("AGORA_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("agora up starts");
        Self { child }
    }

    /// Reads its output until the line saying it is up.
    pub fn wait_up(&mut self) -> String {
        use std::io::BufRead as _;
        let stdout = self.child.stdout.take().expect("piped");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut seen = String::new();
        for line in lines.by_ref() {
            let line = line.expect("a line");
            seen.push_str(&line);
            seen.push('\n');
            if line.starts_with("Ctrl-C stops it") {
                std::thread::spawn(move || lines.for_each(drop));
                return seen;
            }
        }
        panic!("agora up ended before it was up:\n{seen}");
    }

    /// SIGTERM, and the exit status within 30 s.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "agora up did not stop within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Up {
    /// A test that failed midway stops `up` as a user would (SIGTERM), so its parts stop too; SIGKILL would orphan
    /// them, and the agent would restart the tasks the work dir's cleanup kills.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Whether a task fits this agent now, as kubelet's admission decides for a pod: whatever created the Task (an offer
//! acceptance, or kubectl binding it straight to the agent), it runs only if its cpus, memory and disk fit what is
//! free after the tasks the agent already holds, and none of its host ports is another task's.
//!
//! [`admit`] is the decision, a pure function; the runner takes it under one lock together with recording the claim,
//! so two tasks arriving at once cannot both take the same room.

use agora_schemas::{Resources, TaskSpec};

/// What one task holds on the agent from its admission until its end is recorded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Claim {
    /// CPU shares.
    pub cpus: f64,
    /// MiB of memory.
    pub mem: f64,
    /// MiB of disk.
    pub disk: f64,
    /// Host ports.
    pub ports: Vec<u16>,
}

impl Claim {
    /// What `spec` asks for.
    #[must_use]
    pub fn of(spec: &TaskSpec) -> Self {
        Self { cpus: spec.cpus, mem: spec.mem, disk: spec.disk, ports: spec.ports.iter().map(|p| p.port).collect() }
    }
}

/// Whether `asked` fits agent `agent` (offering `total`) beside the `held` claims; the refusal names what does not
/// fit, with how much is free and how much was asked.
///
/// # Errors
/// The first resource that does not fit.
pub fn admit<'a>(
    agent: &str,
    total: &Resources,
    held: impl IntoIterator<Item = &'a Claim>,
    asked: &Claim,
) -> Result<(), String> {
    let held: Vec<&Claim> = held.into_iter().collect();
    let sum = |amount: fn(&Claim) -> f64| held.iter().map(|c| amount(c)).sum::<f64>();
    let used = [sum(|c| c.cpus), sum(|c| c.mem), sum(|c| c.disk)];
    let totals = total.scalars();
    let free = [0, 1, 2].map(|i| (totals[i] - used[i]).max(0.0));
    if let Some(short) = agora_schemas::shortfall([asked.cpus, asked.mem, asked.disk], free) {
        let i = ["cpus", "mem", "disk"].iter().position(|k| *k == short.kind).unwrap_or(0);
        let (name, unit) = (short.kind, if i == 0 { "" } else { " MiB" });
        let number = agora_schemas::columns::number;
        return Err(format!(
            "the task asks for {name} {}{unit}, but agent {agent} has {}{unit} free of {}{unit} ({}{unit} held by {} \
             task(s) it runs)",
            number(short.needed),
            number(short.available),
            number(totals[i]),
            number(used[i]),
            held.len()
        ));
    }
    for port in &asked.ports {
        if held.iter().any(|c| c.ports.contains(port)) {
            return Err(format!("the task asks for host port {port}, which another task on agent {agent} holds"));
        }
        if !total.ports.is_empty() && !total.ports.iter().any(|r| r.contains(*port)) {
            return Err(format!("the task asks for host port {port}, which is not among agent {agent}'s ports"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total() -> Resources {
        Resources { cpus: 2.0, mem: 2048.0, disk: 1000.0, ports: vec![agora_schemas::PortRange(31000, 31010)] }
    }

    fn claim(cpus: f64, mem: f64, ports: &[u16]) -> Claim {
        Claim { cpus, mem, disk: 0.0, ports: ports.to_vec() }
    }

    #[test]
    fn a_task_fits_what_is_free_after_the_tasks_held() {
        assert_eq!(admit("n1", &total(), [], &claim(1.9, 64.0, &[])), Ok(()));
        let held = [claim(1.9, 64.0, &[])];
        let refused = admit("n1", &total(), &held, &claim(1.9, 64.0, &[])).unwrap_err();
        assert_eq!(
            refused,
            "the task asks for cpus 1.9, but agent n1 has 0.1 free of 2 (1.9 held by 1 task(s) it runs)"
        );
        // Exactly the rest fits.
        assert_eq!(admit("n1", &total(), &held, &claim(0.1, 64.0, &[])), Ok(()));
        let refused = admit("n1", &total(), &[claim(0.5, 2000.0, &[])], &claim(0.5, 100.0, &[])).unwrap_err();
        assert!(refused.starts_with("the task asks for mem 100 MiB, but agent n1 has 48 MiB free"), "{refused}");
    }

    #[test]
    fn a_host_port_is_one_tasks() {
        let held = [claim(0.1, 10.0, &[31001])];
        assert!(admit("n1", &total(), &held, &claim(0.1, 10.0, &[31002])).is_ok());
        let refused = admit("n1", &total(), &held, &claim(0.1, 10.0, &[31001])).unwrap_err();
        assert!(refused.contains("host port 31001, which another task"), "{refused}");
        let refused = admit("n1", &total(), &held, &claim(0.1, 10.0, &[8080])).unwrap_err();
        assert!(refused.contains("not among agent n1's ports"), "{refused}");
    }
}

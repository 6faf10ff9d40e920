//! The seeds' Mesos test framework on Agora's SDK: runs five tasks, waits until they finish, reports and
//! unregisters. Everything but the decisions below is `agora_controllers::framework`.
//!
//! `cargo run -p agora-controllers --example five_tasks -- --server URL` (or KUBECONFIG / the default kubeconfig).

use std::process::ExitCode;
use std::sync::Arc;

use agora_client::{Api, Client, Config, DeleteParams};
use agora_controllers::framework::placement::{Demand, Spread, place};
use agora_controllers::framework::{Framework, Launch, Scheduler};
use agora_schemas::{ObjectMeta, Offer, Task, TaskSpec, TaskState, TaskTemplate};
use clap::Parser;

const TASKS: usize = 5;

#[derive(Parser)]
struct Args {
    /// The apiserver's URL (default: the kubeconfig).
    #[arg(long, env = "AGORA_SERVER")]
    server: Option<String>,
    /// The framework's name; its tasks are <name>-0 … <name>-4.
    #[arg(long, default_value = "five-tasks")]
    name: String,
    /// The namespace of its tasks.
    #[arg(long, default_value = "default")]
    namespace: String,
}

struct FiveTasks {
    name: String,
    namespace: String,
}

impl FiveTasks {
    /// The task names not yet launched (a restarted framework learns them from its Tasks alone).
    fn missing(&self, tasks: &[Arc<Task>]) -> Vec<String> {
        let names = (0..TASKS).map(|i| format!("{}-{i}", self.name));
        names.filter(|n| !tasks.iter().any(|t| t.metadata.name.as_ref() == Some(n))).collect()
    }
}

impl Scheduler for FiveTasks {
    fn offers(&mut self, offers: &[Arc<Offer>], tasks: &[Arc<Task>]) -> Vec<Launch> {
        let missing = self.missing(tasks);
        let demand = Demand { cpus: 0.1, mem: 32.0, ..Demand::default() };
        let placed = place(offers.iter().map(|o| &**o), &vec![demand; missing.len()], &Spread::new());
        let mut launches: Vec<Launch> = Vec::new();
        for p in placed {
            let spec = TaskSpec {
                cmd: Some("echo hello from $TASK_ID; sleep 1".into()),
                cpus: 0.1,
                mem: 32.0,
                ..TaskSpec::default()
            };
            let task = TaskTemplate { metadata: ObjectMeta::named(Some(&self.namespace), &missing[p.demand]), spec };
            match launches.iter_mut().find(|l| l.offer == p.offer) {
                Some(launch) => launch.tasks.push(task),
                None => launches.push(Launch { offer: p.offer, tasks: vec![task] }),
            }
        }
        launches
    }

    fn wants_offers(&self, tasks: &[Arc<Task>]) -> bool {
        !self.missing(tasks).is_empty()
    }

    fn done(&self, tasks: &[Arc<Task>]) -> bool {
        let terminal = |t: &Arc<Task>| t.status.as_ref().is_some_and(|s| s.state.is_terminal());
        self.missing(tasks).is_empty() && tasks.iter().filter(|t| terminal(t)).count() >= TASKS
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt().with_env_filter(std::env::var("AGORA_LOG").unwrap_or("info".into())).init();
    let args = Args::parse();
    let config = match &args.server {
        Some(server) => Config::new(server),
        None => Config::infer()?,
    };
    let client = Client::new(config)?;
    let scheduler = FiveTasks { name: args.name.clone(), namespace: args.namespace.clone() };
    let shutdown = async { tokio::signal::ctrl_c().await.unwrap_or(()) };
    Framework::new(client.clone(), &args.name).run(scheduler, shutdown).await?;
    // Report, then remove the finished tasks (the framework itself was unregistered by `run`).
    let tasks: Api<Task> = Api::namespaced(client, &args.namespace);
    let mut finished = 0;
    for i in 0..TASKS {
        let name = format!("{}-{i}", args.name);
        let task = tasks.get(&name).await?;
        let (state, code) = task.status.map(|s| (s.state, s.exit_code)).unwrap_or((TaskState::Staging, None));
        println!("{name}: {state:?} on {} (exit {code:?})", task.spec.agent);
        finished += usize::from(state == TaskState::Finished);
        tasks.delete(&name, &DeleteParams::default()).await?;
    }
    println!("{finished}/{TASKS} tasks finished");
    Ok(if finished == TASKS { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

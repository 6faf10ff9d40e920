//! The dependency graph of a namespace's CronJobs, as pure functions: what a job's parents have done
//! ([`parents`]), and the graph as Graphviz DOT ([`dot`], like Chronos' `/scheduler/graph/dot`), each job colored
//! by its last result.

use std::fmt::Write;

use agora_schemas::{CronJob, RunResult, find_cycle};

use super::plan::Parents;

/// What `job`'s parents have done, looking other jobs of its namespace up by name (with the status last decided).
pub fn parents<'a, F>(job: &CronJob, lookup: F) -> Parents
where
    F: Fn(&str) -> Option<&'a CronJob>,
{
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let cycle = find_cycle(name, |n| {
        if n == name { Some(job.spec.parents.clone()) } else { lookup(n).map(|j| j.spec.parents.clone()) }
    })
    .map(|c| c.join(" → "));
    let completions = job
        .spec
        .parents
        .iter()
        .map(|parent| {
            let completion = match lookup(parent) {
                None => Err("no such CronJob in this namespace".to_owned()),
                Some(p) => {
                    let status = p.status.clone().unwrap_or_default();
                    let soft = if p.spec.soft_error() { status.last_error } else { None };
                    status.last_success.into_iter().chain(soft).max().ok_or_else(|| {
                        if status.last_error.is_some() {
                            "its last run failed (and it has no softError)".to_owned()
                        } else {
                            "it has not completed yet".to_owned()
                        }
                    })
                }
            };
            (parent.clone(), completion)
        })
        .collect();
    Parents { cycle, completions }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The jobs and their dependencies as a DOT digraph: an edge from each parent to its child, each node filled by its
/// last result (green: succeeded, red: failed, white: not run yet; grey outline: disabled).
#[must_use]
pub fn dot(namespace: &str, jobs: &[&CronJob]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(namespace));
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(out, "  node [shape=box, style=\"rounded,filled\", fontname=\"sans-serif\"];");
    let mut sorted: Vec<&&CronJob> = jobs.iter().collect();
    sorted.sort_by_key(|j| j.metadata.name.clone());
    for job in &sorted {
        let name = job.metadata.name.as_deref().unwrap_or_default();
        let status = job.status.clone().unwrap_or_default();
        let last = status.runs.first().map(|r| r.result);
        let (fill, result) = match last {
            Some(RunResult::Succeeded) => ("palegreen", "succeeded"),
            Some(RunResult::Replaced) => ("lightyellow", "replaced"),
            Some(_) => ("lightcoral", "failed"),
            None if status.error_count > 0 => ("lightcoral", "failed"),
            None if status.success_count > 0 => ("palegreen", "succeeded"),
            None => ("white", "not run yet"),
        };
        let what = job.spec.schedule.clone().unwrap_or_else(|| "after its parents".to_owned());
        let label = format!("{name}\\n{what}\\n{result}");
        let color = if job.spec.disabled() { "grey" } else { "black" };
        let _ = writeln!(
            out,
            "  {} [label=\"{}\", fillcolor={fill}, color={color}];",
            quote(name),
            label.replace('"', "\\\"")
        );
    }
    for job in &sorted {
        let name = job.metadata.name.as_deref().unwrap_or_default();
        for parent in &job.spec.parents {
            let _ = writeln!(out, "  {} -> {};", quote(parent), quote(name));
        }
    }
    out.push_str("}\n");
    out
}

//! Where a run's time went: the per-phase breakdown `azr-executor profile` prints, and the run as a
//! Chrome/Perfetto trace (JSON trace-event format: one track per worker, one slice per job with its
//! phases nested inside).

use crate::job::{Outcome, Timings};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Mean, p50 and p99 of each phase in milliseconds, over all jobs and per status.
pub fn breakdown(outcomes: &[Outcome]) -> String {
    let mut groups: BTreeMap<String, Vec<&Timings>> = BTreeMap::new();
    for outcome in outcomes {
        if let Some(timings) = &outcome.timings {
            groups.entry("all".into()).or_default().push(timings);
            groups.entry(outcome.status.to_string()).or_default().push(timings);
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "{:<18} {:>6}  {:>28}", "jobs", "count", "per phase: mean / p50 / p99 ms");
    for (group, timings) in &groups {
        let _ = writeln!(out, "{group:<18} {:>6}", timings.len());
        for (index, phase) in Timings::PHASES.iter().enumerate() {
            let mut values: Vec<f64> = timings.iter().map(|t| t.phases()[index] * 1e3).collect();
            values.sort_by(f64::total_cmp);
            let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
            let _ = writeln!(
                out,
                "  {phase:<16} {:>6}  {mean:>9.3} / {:>8.3} / {:>8.3}",
                "",
                percentile(&values, 0.50),
                percentile(&values, 0.99)
            );
        }
    }
    out
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The run as trace events: on each worker's track a slice per job (named by its status) holding
/// its phases in the order they ran; the queue wait is left out (it overlaps other jobs' slices).
pub fn chrome_trace(outcomes: &[Outcome]) -> Value {
    let mut events = Vec::new();
    for (index, outcome) in outcomes.iter().enumerate() {
        let Some(timings) = &outcome.timings else { continue };
        let phases = timings.phases();
        let total_us: f64 = phases[1..].iter().sum::<f64>() * 1e6;
        let tid = timings.worker;
        events.push(json!({
            "name": format!("job {index} ({})", outcome.status),
            "cat": "job",
            "ph": "X",
            "ts": timings.start_us,
            "dur": total_us,
            "pid": 1,
            "tid": tid,
            "args": {"status": outcome.status.as_str(), "queue_ms": timings.queue_s * 1e3},
        }));
        let mut at = timings.start_us as f64;
        for (phase, seconds) in Timings::PHASES.iter().zip(phases).skip(1) {
            if seconds > 0.0 {
                events.push(json!({"name": phase, "cat": "phase", "ph": "X", "ts": at, "dur": seconds * 1e6,
                                   "pid": 1, "tid": tid}));
            }
            at += seconds * 1e6;
        }
    }
    let workers: std::collections::BTreeSet<u32> =
        outcomes.iter().filter_map(|o| o.timings.as_ref().map(|t| t.worker)).collect();
    for worker in workers {
        events.push(json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": worker,
                           "args": {"name": format!("worker {worker}")}}));
    }
    json!({"traceEvents": events, "displayTimeUnit": "ms"})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Status;

    fn outcome(status: Status, worker: u32, run_s: f64) -> Outcome {
        let timings = Timings { start_us: 1_000_000, worker, run_s, instantiate_s: 0.001, ..Timings::default() };
        let mut outcome = crate::work::failed(status, String::new(), run_s);
        outcome.timings = Some(timings);
        outcome
    }

    #[test]
    fn the_breakdown_lists_every_phase_overall_and_per_status() {
        let text = breakdown(&[outcome(Status::Ok, 0, 0.002), outcome(Status::Timeout, 1, 0.5)]);
        for phase in Timings::PHASES {
            assert_eq!(text.matches(&format!("  {phase} ")).count(), 3, "{text}");
        }
        assert!(text.contains("all") && text.contains("ok") && text.contains("timeout"));
    }

    #[test]
    fn the_trace_nests_phases_inside_each_job_on_its_worker() {
        let trace = chrome_trace(&[outcome(Status::Ok, 3, 0.002)]);
        let events = trace["traceEvents"].as_array().cloned().unwrap_or_default();
        let job = events.iter().find(|e| e["cat"] == "job").cloned().unwrap_or_default();
        let run = events.iter().find(|e| e["name"] == "run").cloned().unwrap_or_default();
        assert_eq!((job["tid"].as_u64(), run["tid"].as_u64()), (Some(3), Some(3)));
        let (job_start, job_end) = (job["ts"].as_f64().unwrap_or(0.0), job["ts"].as_f64().unwrap_or(0.0) + 3000.0);
        let run_start = run["ts"].as_f64().unwrap_or(-1.0);
        assert!(job_start <= run_start && run_start + run["dur"].as_f64().unwrap_or(0.0) <= job_end + 1e-6);
        assert!(events.iter().any(|e| e["ph"] == "M" && e["args"]["name"] == "worker 3"));
    }
}

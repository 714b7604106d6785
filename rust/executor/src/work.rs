//! What a worker does with a task: run jobs in sandboxes (strict or batch), combine determinism
//! runs into a verdict, compare repr texts. Used the same way by worker threads and worker processes.

use crate::job::{Job, Limits, Mode, Outcome, Status};
use crate::runtime::Runtime;
use crate::sandbox::{RunResult, Sandbox};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

thread_local! {
    /// A fresh instance made after the previous job, ready for this worker's next first run: a
    /// job does not wait for instantiation when its worker had a moment to prepare one.
    static READY: RefCell<Option<(Limits, Sandbox<'static>)>> = const { RefCell::new(None) };
}

/// A fresh instance for the first run of a job: the one made ready earlier, if it fits.
fn fresh_first_run(runtime: &'static Runtime, limits: Limits) -> Result<Sandbox<'static>, String> {
    match READY.with(|ready| ready.borrow_mut().take()) {
        Some((ready_limits, sandbox)) if ready_limits == limits => Ok(sandbox),
        _ => Sandbox::new(runtime, limits, 0),
    }
}

fn prepare_next(runtime: &'static Runtime, limits: Limits) {
    if let Ok(sandbox) = Sandbox::new(runtime, limits, 0) {
        READY.with(|ready| *ready.borrow_mut() = Some((limits, sandbox)));
    }
}

/// Run `jobs` in `mode`; one outcome per job, in order.
pub fn run_jobs(
    runtime: &'static Runtime,
    limits: Limits,
    mode: Mode,
    jobs: &[Job],
    cancelled: &AtomicBool,
) -> Vec<Outcome> {
    match mode {
        Mode::Strict => jobs.iter().map(|job| run_strict(runtime, limits, job, cancelled)).collect(),
        Mode::Batch => run_group(runtime, limits, jobs),
    }
}

/// Every run of `job` in its own fresh instance.
fn run_strict(runtime: &'static Runtime, limits: Limits, job: &Job, cancelled: &AtomicBool) -> Outcome {
    let started = Instant::now();
    let mut runs: Vec<RunResult> = Vec::new();
    for salt in 0..u64::from(job.runs) {
        if cancelled.load(Ordering::Relaxed) {
            break;
        }
        let sandbox = if salt == 0 { fresh_first_run(runtime, limits) } else { Sandbox::new(runtime, limits, salt) };
        let run = match sandbox {
            Ok(mut sandbox) => sandbox.run(job, false),
            Err(reason) => unrunnable(reason),
        };
        let stop = run.status != Status::Ok;
        runs.push(run);
        // A run that failed settles the verdict; further runs could only repeat or contradict it.
        if stop {
            break;
        }
    }
    let outcome = verdict(&runs, started.elapsed().as_secs_f64());
    prepare_next(runtime, limits);
    outcome
}

/// One instance per determinism run runs the whole group, each job in a fresh namespace; the
/// instance is replaced after a trap or a job that may have changed shared state.
fn run_group(runtime: &Runtime, limits: Limits, jobs: &[Job]) -> Vec<Outcome> {
    let mut runs: Vec<Vec<RunResult>> = vec![Vec::new(); jobs.len()];
    let mut seconds = vec![0.0; jobs.len()];
    let most_runs = jobs.iter().map(|job| job.runs).max().unwrap_or(0);
    for salt in 0..u64::from(most_runs) {
        let mut sandbox: Option<Sandbox<'_>> = None;
        for (index, job) in jobs.iter().enumerate() {
            let settled = runs[index].last().is_some_and(|run| run.status != Status::Ok);
            if u64::from(job.runs) <= salt || settled {
                continue;
            }
            let started = Instant::now();
            let run = match sandbox.take().map_or_else(|| Sandbox::new(runtime, limits, salt), Ok) {
                Ok(mut fresh_or_warm) => {
                    let run = fresh_or_warm.run(job, true);
                    if run.reusable {
                        sandbox = Some(fresh_or_warm);
                    }
                    run
                }
                Err(reason) => unrunnable(reason),
            };
            seconds[index] += started.elapsed().as_secs_f64();
            runs[index].push(run);
        }
    }
    runs.iter().zip(seconds).map(|(runs, seconds)| verdict(runs, seconds)).collect()
}

/// AZR value equality of each pair, in one reused sandbox (the texts are checked so that they
/// cannot change shared state); a comparison the sandbox cannot finish falls back to the text.
pub fn compare(runtime: &Runtime, limits: Limits, pairs: &[(String, String)]) -> Vec<bool> {
    let mut sandbox: Option<Sandbox<'_>> = None;
    pairs
        .iter()
        .map(|(a, b)| {
            let verdict = match sandbox.take().map_or_else(|| Sandbox::new(runtime, limits, 0), Ok) {
                Ok(mut warm) => {
                    let verdict = warm.equal(a, b);
                    if verdict.is_ok() {
                        sandbox = Some(warm);
                    }
                    verdict
                }
                Err(reason) => Err(reason),
            };
            verdict.unwrap_or_else(|_| a.trim() == b.trim())
        })
        .collect()
}

/// The job's outcome from its runs: the first run's, unless a later run disagrees with it.
fn verdict(runs: &[RunResult], elapsed_s: f64) -> Outcome {
    let Some(first) = runs.first() else {
        return failed(Status::Error, "cancelled before it ran".into(), elapsed_s);
    };
    for (index, other) in runs.iter().enumerate().skip(1) {
        if (other.status, &other.output, other.matches) != (first.status, &first.output, first.matches) {
            let error = format!("run 1 gave {} but run {} gave {}", describe(first), index + 1, describe(other));
            return failed(Status::Nondeterministic, error, elapsed_s);
        }
    }
    Outcome {
        status: first.status,
        output: first.output.clone(),
        error: first.error.clone(),
        matches: first.matches,
        elapsed_s,
    }
}

fn describe(run: &RunResult) -> String {
    const SHOWN: usize = 200;
    match (&run.output, &run.error) {
        (Some(output), _) if output.len() > SHOWN => {
            format!("{}...", &output[..floor_char_boundary(output, SHOWN)])
        }
        (Some(output), _) => output.clone(),
        (None, Some(error)) => format!("{} ({error})", run.status),
        (None, None) => run.status.to_string(),
    }
}

fn floor_char_boundary(text: &str, index: usize) -> usize {
    (0..=index.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}

fn unrunnable(reason: String) -> RunResult {
    RunResult { status: Status::Error, output: None, error: Some(reason), matches: None, reusable: false }
}

/// An outcome that says why a job produced no result.
pub fn failed(status: Status, error: String, elapsed_s: f64) -> Outcome {
    Outcome { status, output: None, error: Some(error), matches: None, elapsed_s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: Status, output: Option<&str>) -> RunResult {
        RunResult { status, output: output.map(str::to_string), error: None, matches: None, reusable: true }
    }

    #[test]
    fn agreeing_runs_give_the_first_runs_outcome() {
        let outcome = verdict(&[run(Status::Ok, Some("1")), run(Status::Ok, Some("1"))], 0.5);
        assert_eq!((outcome.status, outcome.output.as_deref(), outcome.elapsed_s), (Status::Ok, Some("1"), 0.5));
    }

    #[test]
    fn disagreeing_runs_are_nondeterministic_and_say_how() {
        let outcome = verdict(&[run(Status::Ok, Some("1")), run(Status::Ok, Some("2"))], 0.1);
        assert_eq!(outcome.status, Status::Nondeterministic);
        assert_eq!(outcome.error.as_deref(), Some("run 1 gave 1 but run 2 gave 2"));
        let mut timed_out = run(Status::Timeout, None);
        timed_out.error = Some("exceeded".into());
        let outcome = verdict(&[run(Status::Ok, Some("1")), timed_out], 0.1);
        assert_eq!(outcome.error.as_deref(), Some("run 1 gave 1 but run 2 gave timeout (exceeded)"));
    }

    #[test]
    fn long_outputs_are_shortened_on_a_character_boundary() {
        let long = "é".repeat(150);
        let described = describe(&run(Status::Ok, Some(&long)));
        assert!(described.ends_with("...") && described.len() <= 203);
    }

    #[test]
    fn no_runs_means_cancelled() {
        assert_eq!(verdict(&[], 0.0).error.as_deref(), Some("cancelled before it ran"));
    }
}

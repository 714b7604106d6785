//! What a worker does with a task: run jobs in sandboxes (strict or batch), combine determinism
//! runs into a verdict, compare repr texts. Used the same way by worker threads and worker processes.

use crate::compiled;
use crate::job::{Job, Limits, Mode, Outcome, Status, Timings};
use crate::runtime::Runtime;
use crate::sandbox::{RunResult, Sandbox};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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

/// What a job's expected value says, read by the guest before any program ran in that instance:
/// its canonical text, or `None` when the text could not be read (it then matches nothing).
pub type Expected = Option<String>;

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

/// Read `text` in `sandbox`, which no program has run in yet. The sandbox comes back when it can
/// still be used.
fn read_expected<'r>(mut sandbox: Sandbox<'r>, text: &str) -> (Expected, Option<Sandbox<'r>>) {
    match sandbox.canonical(text) {
        Ok(canonical) => (Some(canonical), Some(sandbox)),
        Err(_) => (None, None),
    }
}

/// Every run of `job` in its own fresh instance; the expected value is read in the first one,
/// before the program runs.
fn run_strict(runtime: &'static Runtime, limits: Limits, job: &Job, cancelled: &AtomicBool) -> Outcome {
    let started = Instant::now();
    let mut timings = Timings { start_us: now_us(), ..Timings::default() };
    let mut runs: Vec<RunResult> = Vec::new();
    let mut expected: Option<Expected> = None;
    for salt in 0..u64::from(job.runs) {
        if cancelled.load(Ordering::Relaxed) {
            break;
        }
        let mut sandbox = timed(&mut timings.instantiate_s, || {
            if salt == 0 {
                fresh_first_run(runtime, limits)
            } else {
                Sandbox::new(runtime, limits, salt)
            }
        });
        if let (0, Some(text)) = (salt, &job.expected) {
            sandbox = match sandbox {
                Ok(fresh) => {
                    let (read, still_fresh) = timed(&mut timings.expected_s, || read_expected(fresh, text));
                    expected = Some(read);
                    match still_fresh {
                        Some(fresh) => Ok(fresh),
                        None => timed(&mut timings.instantiate_s, || Sandbox::new(runtime, limits, salt)),
                    }
                }
                Err(reason) => Err(reason),
            };
        }
        let run = match sandbox {
            Ok(mut sandbox) => {
                let run = timed(&mut timings.run_s, || {
                    let code = compiled::code_of(runtime, limits, job);
                    sandbox.run(job, false, code.as_deref())
                });
                timed(&mut timings.teardown_s, || drop(sandbox));
                run
            }
            Err(reason) => unrunnable(reason),
        };
        let stop = run.status != Status::Ok;
        runs.push(run);
        // A run that failed settles the verdict; further runs could only repeat or contradict it.
        if stop {
            break;
        }
    }
    let mut outcome = verdict(&runs, expected.as_ref(), started.elapsed().as_secs_f64());
    timed(&mut timings.prepare_s, || prepare_next(runtime, limits));
    outcome.timings = Some(timings);
    outcome
}

/// Seconds spent in `step`, added to `phase`.
fn timed<T>(phase: &mut f64, step: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = step();
    *phase += started.elapsed().as_secs_f64();
    result
}

pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(0))
}

/// One instance per determinism run runs the whole group, each job in a fresh namespace; the
/// instance is replaced after a trap or a job that may have changed shared state. Every expected
/// value of the group is read first, in the fresh instance the group starts with.
fn run_group(runtime: &Runtime, limits: Limits, jobs: &[Job]) -> Vec<Outcome> {
    let mut runs: Vec<Vec<RunResult>> = vec![Vec::new(); jobs.len()];
    let mut seconds = vec![0.0; jobs.len()];
    let mut timings: Vec<Timings> = vec![Timings::default(); jobs.len()];
    let mut sandbox: Option<Sandbox<'_>> = None;
    let mut expected: Vec<Option<Expected>> = Vec::with_capacity(jobs.len());
    for (index, job) in jobs.iter().enumerate() {
        let Some(text) = &job.expected else {
            expected.push(None);
            continue;
        };
        let started = Instant::now();
        let time = &mut timings[index];
        time.start_us = now_us();
        let instance = match sandbox.take() {
            Some(warm) => Ok(warm),
            None => timed(&mut time.instantiate_s, || Sandbox::new(runtime, limits, 0)),
        };
        match instance {
            Ok(fresh) => {
                let (read, still_fresh) = timed(&mut time.expected_s, || read_expected(fresh, text));
                expected.push(Some(read));
                sandbox = still_fresh;
            }
            Err(reason) => {
                expected.push(None);
                runs[index].push(unrunnable(reason));
            }
        }
        seconds[index] += started.elapsed().as_secs_f64();
    }
    let most_runs = jobs.iter().map(|job| job.runs).max().unwrap_or(0);
    for salt in 0..u64::from(most_runs) {
        let mut last = None;
        for (index, job) in jobs.iter().enumerate() {
            let settled = runs[index].last().is_some_and(|run| run.status != Status::Ok);
            if u64::from(job.runs) <= salt || settled {
                continue;
            }
            let started = Instant::now();
            let time = &mut timings[index];
            if time.start_us == 0 {
                time.start_us = now_us();
            }
            // A script runs in a fresh instance of its own; the warm one waits for the next job.
            let instance = match (job.script, sandbox.take()) {
                (false, Some(warm)) => Ok(warm),
                (true, warm) => {
                    sandbox = warm;
                    timed(&mut time.instantiate_s, || Sandbox::new(runtime, limits, salt))
                }
                (false, None) => timed(&mut time.instantiate_s, || Sandbox::new(runtime, limits, salt)),
            };
            let run = match instance {
                Ok(mut fresh_or_warm) => {
                    let run = timed(&mut time.run_s, || fresh_or_warm.run(job, true, None));
                    if run.reusable && !job.script {
                        sandbox = Some(fresh_or_warm);
                    } else {
                        timed(&mut time.teardown_s, || drop(fresh_or_warm));
                    }
                    run
                }
                Err(reason) => unrunnable(reason),
            };
            seconds[index] += started.elapsed().as_secs_f64();
            runs[index].push(run);
            last = Some(index);
        }
        // The next determinism run starts over in a fresh instance with its own salt.
        match last {
            Some(index) => timed(&mut timings[index].teardown_s, || sandbox = None),
            None => sandbox = None,
        }
    }
    runs.iter()
        .zip(&expected)
        .zip(seconds)
        .zip(timings)
        .map(|(((runs, expected), seconds), timings)| {
            let mut outcome = verdict(runs, expected.as_ref(), seconds);
            outcome.timings = Some(timings);
            outcome
        })
        .collect()
}

/// Reads value texts in one sandbox where no program runs (the reader only parses data, so
/// nothing read can change what it reads next); a new sandbox when the last one ran out of time
/// or memory.
struct DataReader<'r> {
    runtime: &'r Runtime,
    limits: Limits,
    sandbox: Option<Sandbox<'r>>,
}

impl<'r> DataReader<'r> {
    fn new(runtime: &'r Runtime, limits: Limits) -> Self {
        DataReader { runtime, limits, sandbox: None }
    }

    /// The canonical text of `text`, `None` when the guest could not read it. `Err` only when no
    /// sandbox could be made.
    fn read(&mut self, text: &str) -> Result<Expected, String> {
        let fresh = match self.sandbox.take() {
            Some(warm) => warm,
            None => Sandbox::new(self.runtime, self.limits, 0)?,
        };
        let (canonical, still_usable) = read_expected(fresh, text);
        self.sandbox = still_usable;
        Ok(canonical)
    }
}

/// Value equality of each pair of texts: their canonical texts are equal. A text the guest cannot
/// read (out of time or memory) is compared as text. `Err` only when no sandbox could be made:
/// then nothing was decided.
pub fn compare(runtime: &Runtime, limits: Limits, pairs: &[(String, String)]) -> Result<Vec<bool>, String> {
    let mut reader = DataReader::new(runtime, limits);
    pairs
        .iter()
        .map(|(a, b)| match (reader.read(a)?, reader.read(b)?) {
            (Some(a), Some(b)) => Ok(a == b),
            _ => Ok(a.trim() == b.trim()),
        })
        .collect()
}

/// The canonical text of each text (`None` for one the guest could not read), as a job's expected
/// value is read. `Err` only when no sandbox could be made.
pub fn canonical_texts(runtime: &Runtime, limits: Limits, texts: &[String]) -> Result<Vec<Expected>, String> {
    let mut reader = DataReader::new(runtime, limits);
    texts.iter().map(|text| reader.read(text)).collect()
}

/// The job's outcome from its runs: the first run's, unless a later run disagrees with it or the
/// machinery failed in one of them. With an expected value, `matches` says whether an `ok` result's
/// canonical text is the expected value's.
fn verdict(runs: &[RunResult], expected: Option<&Expected>, elapsed_s: f64) -> Outcome {
    let Some(first) = runs.first() else {
        return failed(Status::Internal, "cancelled before it ran".into(), elapsed_s);
    };
    if let Some(broken) = runs.iter().find(|run| run.status == Status::Internal) {
        return failed(Status::Internal, broken.error.clone().unwrap_or_default(), elapsed_s);
    }
    for (index, other) in runs.iter().enumerate().skip(1) {
        let observed = |run: &RunResult| (run.status, run.output.clone(), run.value.clone(), run.exit_code);
        if observed(other) != observed(first) {
            let error = format!("run 1 gave {} but run {} gave {}", describe(first), index + 1, describe(other));
            return failed(Status::Nondeterministic, error, elapsed_s);
        }
    }
    let matches = match expected {
        Some(expected) if first.status == Status::Ok => Some(matches(expected, &first.value)),
        _ => None,
    };
    Outcome {
        status: first.status,
        output: first.output.clone(),
        error: first.error.clone(),
        matches,
        elapsed_s,
        exit_code: first.exit_code,
        stderr: first.stderr.clone(),
        timings: None,
        value: first.value.clone(),
    }
}

/// Whether a result's canonical text is the expected value's (an unreadable expected value, or a
/// result without one, matches nothing).
pub fn matches(expected: &Expected, value: &Option<String>) -> bool {
    expected.is_some() && value.is_some() && expected == value
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

/// A run that never happened because no sandbox could be made: the machinery's failure.
fn unrunnable(reason: String) -> RunResult {
    RunResult::failed(Status::Internal, reason)
}

/// An outcome that says why a job produced no result.
pub fn failed(status: Status, error: String, elapsed_s: f64) -> Outcome {
    Outcome {
        status,
        output: None,
        error: Some(error),
        matches: None,
        elapsed_s,
        exit_code: None,
        stderr: None,
        timings: None,
        value: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: Status, output: Option<&str>) -> RunResult {
        RunResult {
            status,
            output: output.map(str::to_string),
            error: None,
            value: output.map(|text| format!("data:i{text}")),
            reusable: true,
            exit_code: None,
            stderr: None,
        }
    }

    #[test]
    fn agreeing_runs_give_the_first_runs_outcome() {
        let outcome = verdict(&[run(Status::Ok, Some("1")), run(Status::Ok, Some("1"))], None, 0.5);
        assert_eq!((outcome.status, outcome.output.as_deref(), outcome.elapsed_s), (Status::Ok, Some("1"), 0.5));
    }

    #[test]
    fn disagreeing_runs_are_nondeterministic_and_say_how() {
        let outcome = verdict(&[run(Status::Ok, Some("1")), run(Status::Ok, Some("2"))], None, 0.1);
        assert_eq!(outcome.status, Status::Nondeterministic);
        assert_eq!(outcome.error.as_deref(), Some("run 1 gave 1 but run 2 gave 2"));
        let mut timed_out = run(Status::Timeout, None);
        timed_out.error = Some("exceeded".into());
        let outcome = verdict(&[run(Status::Ok, Some("1")), timed_out], None, 0.1);
        assert_eq!(outcome.error.as_deref(), Some("run 1 gave 1 but run 2 gave timeout (exceeded)"));
    }

    #[test]
    fn long_outputs_are_shortened_on_a_character_boundary() {
        let long = "é".repeat(150);
        let described = describe(&run(Status::Ok, Some(&long)));
        assert!(described.ends_with("...") && described.len() <= 203);
    }

    #[test]
    fn matches_compare_canonical_texts_of_ok_results() {
        let ok = [run(Status::Ok, Some("1"))];
        let expected = |text: Option<&str>| Some(text.map(str::to_string));
        assert_eq!(verdict(&ok, expected(Some("data:i1")).as_ref(), 0.0).matches, Some(true));
        assert_eq!(verdict(&ok, expected(Some("data:i2")).as_ref(), 0.0).matches, Some(false));
        // An expected text the guest could not read matches nothing.
        assert_eq!(verdict(&ok, expected(None).as_ref(), 0.0).matches, Some(false));
        assert_eq!(verdict(&ok, None, 0.0).matches, None);
        let failed = [run(Status::Error, None)];
        assert_eq!(verdict(&failed, expected(Some("data:i1")).as_ref(), 0.0).matches, None);
    }

    #[test]
    fn a_run_the_machinery_failed_makes_the_job_internal() {
        let outcome = verdict(&[run(Status::Ok, Some("1")), unrunnable("no sandbox".into())], None, 0.0);
        assert_eq!((outcome.status, outcome.error.as_deref()), (Status::Internal, Some("no sandbox")));
    }

    #[test]
    fn no_runs_means_cancelled() {
        assert_eq!(verdict(&[], None, 0.0).error.as_deref(), Some("cancelled before it ran"));
    }
}

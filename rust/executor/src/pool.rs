//! The executor: a queue of tasks (chunks of a batch) served by workers, each driving one
//! sandbox at a time, in a thread of this process or in a worker process of its own.

use crate::error::{ExecutorError, Result};
use crate::groups::GroupCost;
use crate::job::{Job, Limits, Mode, Outcome, Status, Timings};
use crate::memo::{Key, Known, Memo, MemoStats};
use crate::runtime::{runtime, Runtime, WORKER_STACK_BYTES};
use crate::work::{self, Expected};
use crate::worker::{ProcessWorker, Request, Response, Setup};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::ffi::OsString;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most workers one executor may have.
pub const MAX_WORKERS: usize = 128;
/// How often a waiting caller is given the chance to cancel, even when nothing finished.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// The most jobs a batch-mode group holds by default (fewer when jobs are slow: `groups.rs`).
pub const GROUP_SIZE_DEFAULT: usize = 256;
/// The strict-mode memo's default budget.
pub const MEMO_MB_DEFAULT: usize = 64;

/// Where sandboxes run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// In threads of this process.
    Threads,
    /// In worker processes started with this command (for example `azr-executor worker`): they
    /// scale better across cores, and a crash takes down a worker rather than the caller.
    Processes(Vec<OsString>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ExecutorConfig {
    pub workers: usize,
    pub limits: Limits,
    pub mode: Mode,
    /// The most jobs one instance runs in batch mode before it is replaced (fewer when jobs
    /// are expensive: `groups.rs`).
    pub group_size: usize,
    pub isolation: Isolation,
    /// Budget of strict mode's memo of settled runs (`memo.rs`); 0 runs every job.
    pub memo_bytes: usize,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            workers: default_workers(),
            limits: Limits::default(),
            mode: Mode::Strict,
            group_size: GROUP_SIZE_DEFAULT,
            isolation: Isolation::Threads,
            memo_bytes: MEMO_MB_DEFAULT << 20,
        }
    }
}

pub fn default_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// What a progress observer wants the executor to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    Cancel,
}

enum Task {
    Jobs { batch: Arc<JobBatch>, range: Range<usize> },
    Equal { batch: Arc<EqualBatch>, range: Range<usize> },
    Judge { batch: Arc<JudgeBatch>, range: Range<usize> },
}

struct JobBatch {
    jobs: Vec<Job>,
    /// Where each job's outcome goes in the caller's list.
    indices: Vec<usize>,
    results: Sender<(usize, Outcome)>,
    cancelled: AtomicBool,
    /// When the batch was submitted, in microseconds since the Unix epoch (for `Timings::queue_s`).
    submitted_us: u64,
}

/// Jobs the memo settled whose expected values are still to be read: (index, result, expected).
struct JudgeBatch {
    items: Vec<(usize, Known, String)>,
    results: Sender<(usize, Outcome)>,
    submitted_us: u64,
}

struct EqualBatch {
    pairs: Vec<(String, String)>,
    results: Sender<(usize, Result<bool, String>)>,
}

/// A worker process's answer to a request answered with one value per item (`len` of them): `take`
/// picks the values out of the response kind the request expects.
fn listed<T>(
    answer: Result<Response, String>,
    len: usize,
    take: impl FnOnce(Response) -> Result<Vec<T>, Response>,
) -> Result<Vec<T>, String> {
    match answer {
        Ok(Response::Failed(reason)) | Err(reason) => Err(reason),
        Ok(response) => match take(response) {
            Ok(values) if values.len() == len => Ok(values),
            Ok(values) => Err(format!("the sandbox worker answered {} values for {len}", values.len())),
            Err(other) => Err(format!("the sandbox worker answered {other:?}")),
        },
    }
}

/// How one worker runs a task.
enum Backend {
    Thread(&'static Runtime),
    Process(ProcessWorker),
}

impl Backend {
    fn run(&mut self, limits: Limits, mode: Mode, jobs: &[Job], cancelled: &AtomicBool) -> Vec<Outcome> {
        match self {
            Backend::Thread(runtime) => work::run_jobs(runtime, limits, mode, jobs, cancelled),
            Backend::Process(worker) => match worker.call(&Request::Run(jobs.to_vec())) {
                Ok(Response::Run(outcomes)) if outcomes.len() == jobs.len() => outcomes,
                Ok(other) => failures(jobs.len(), &format!("the sandbox worker answered {other:?}")),
                Err(reason) => failures(jobs.len(), &format!("{reason}; the job was not finished")),
            },
        }
    }

    fn compare(&mut self, limits: Limits, pairs: &[(String, String)]) -> Result<Vec<bool>, String> {
        match self {
            Backend::Thread(runtime) => work::compare(runtime, limits, pairs),
            Backend::Process(worker) => {
                let answer = worker.call(&Request::Equal(pairs.to_vec()));
                listed(answer, pairs.len(), |response| match response {
                    Response::Equal(values) => Ok(values),
                    other => Err(other),
                })
            }
        }
    }

    fn canonical(&mut self, limits: Limits, texts: &[String]) -> Result<Vec<Expected>, String> {
        match self {
            Backend::Thread(runtime) => work::canonical_texts(runtime, limits, texts),
            Backend::Process(worker) => {
                let answer = worker.call(&Request::Canonical(texts.to_vec()));
                listed(answer, texts.len(), |response| match response {
                    Response::Canonical(values) => Ok(values),
                    other => Err(other),
                })
            }
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Backend::Thread(_) => None,
            Backend::Process(worker) => worker.pid(),
        }
    }
}

fn failures(count: usize, reason: &str) -> Vec<Outcome> {
    (0..count).map(|_| work::failed(Status::Internal, reason.to_string(), 0.0)).collect()
}

pub struct Executor {
    config: ExecutorConfig,
    tasks: Option<Sender<Task>>,
    workers: Vec<JoinHandle<()>>,
    pids: Vec<Arc<Mutex<Option<u32>>>>,
    busy: Arc<AtomicUsize>,
    memo: Option<Memo>,
    /// What batch mode's jobs have cost, which sizes the next groups.
    group_cost: Mutex<GroupCost>,
}

impl Executor {
    /// Start the workers (in thread mode, and on first use in the process, the sandbox runtime too).
    pub fn new(config: ExecutorConfig) -> Result<Self> {
        if !(1..=MAX_WORKERS).contains(&config.workers) {
            return Err(ExecutorError::InvalidConfig(format!(
                "workers must be between 1 and {MAX_WORKERS}, got {}",
                config.workers
            )));
        }
        if config.group_size == 0 {
            return Err(ExecutorError::InvalidConfig("group_size must be positive".into()));
        }
        let backends = start_backends(&config)?;
        let (tasks, queue) = crossbeam_channel::unbounded::<Task>();
        let mut workers = Vec::with_capacity(backends.len());
        let mut pids = Vec::with_capacity(backends.len());
        let busy = Arc::new(AtomicUsize::new(0));
        for (index, backend) in backends.into_iter().enumerate() {
            let queue = queue.clone();
            let (limits, mode) = (config.limits, config.mode);
            let pid = Arc::new(Mutex::new(backend.pid()));
            pids.push(Arc::clone(&pid));
            let busy = Arc::clone(&busy);
            let worker = std::thread::Builder::new()
                .name(format!("azr-worker-{index}"))
                .stack_size(WORKER_STACK_BYTES)
                .spawn(move || serve_tasks(index, backend, limits, mode, &queue, &pid, &busy))
                .map_err(|e| ExecutorError::InvalidConfig(format!("cannot start worker thread: {e}")))?;
            workers.push(worker);
        }
        let memo = (config.mode == Mode::Strict && config.memo_bytes > 0).then(|| Memo::new(config.memo_bytes));
        Ok(Executor { config, tasks: Some(tasks), workers, pids, busy, memo, group_cost: Mutex::default() })
    }

    pub fn config(&self) -> &ExecutorConfig {
        &self.config
    }

    /// Workers running a task right now.
    pub fn busy_workers(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    /// Tasks (chunks of submitted batches) waiting for a worker.
    pub fn queued_tasks(&self) -> usize {
        self.tasks.as_ref().map_or(0, Sender::len)
    }

    /// Process ids of the worker processes (empty in thread mode).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.pids.iter().filter_map(|pid| *pid.lock().unwrap_or_else(|p| p.into_inner())).collect()
    }

    /// Run `jobs`; outcomes come back in job order.
    pub fn run(&self, jobs: Vec<Job>) -> Result<Vec<Outcome>> {
        self.run_observed(jobs, &mut |_, _| Control::Continue)
    }

    /// Like [`run`](Self::run), telling `observe(done, total)` after each finished job and at least
    /// every 100 ms; returning [`Control::Cancel`] stops the batch (`Err(Cancelled)`).
    pub fn run_observed(
        &self,
        jobs: Vec<Job>,
        observe: &mut dyn FnMut(usize, usize) -> Control,
    ) -> Result<Vec<Outcome>> {
        for (index, job) in jobs.iter().enumerate() {
            job.validate().map_err(|reason| ExecutorError::InvalidJob { index, reason })?;
        }
        let total = jobs.len();
        let (results, finished) = crossbeam_channel::unbounded();
        let submitted_us = crate::work::now_us();
        let (mut to_run, mut indices, mut keys, mut to_judge) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (index, job) in jobs.into_iter().enumerate() {
            let key = self.memo.as_ref().and_then(|_| Key::of(&job, self.config.limits));
            let known = key.zip(self.memo.as_ref()).and_then(|(key, memo)| memo.recall(key, &job));
            match (known, job.expected) {
                (Some(known), Some(expected)) if known.status == Status::Ok => to_judge.push((index, known, expected)),
                (Some(known), _) => {
                    let mut outcome = known.outcome();
                    outcome.timings = Some(Timings { start_us: submitted_us, ..Timings::default() });
                    let _ = results.send((index, outcome));
                }
                (None, expected) => {
                    keys.push(key);
                    indices.push(index);
                    to_run.push(Job { expected, ..job });
                }
            }
        }
        let runs = to_run.len();
        let batch = Arc::new(JobBatch {
            jobs: to_run,
            indices,
            results: results.clone(),
            cancelled: AtomicBool::new(false),
            submitted_us,
        });
        let chunk = self.chunk_size(runs);
        for start in (0..runs).step_by(chunk) {
            self.send(Task::Jobs { batch: Arc::clone(&batch), range: start..(start + chunk).min(runs) })?;
        }
        let judging = to_judge.len();
        let judge = Arc::new(JudgeBatch { items: to_judge, results, submitted_us });
        let chunk = self.small_chunk(judging);
        for start in (0..judging).step_by(chunk) {
            self.send(Task::Judge { batch: Arc::clone(&judge), range: start..(start + chunk).min(judging) })?;
        }
        let mut outcomes: Vec<Option<Outcome>> = vec![None; total];
        let collected = collect(&finished, total, observe, |index, outcome| outcomes[index] = Some(outcome));
        if collected.is_err() {
            batch.cancelled.store(true, Ordering::Relaxed);
        }
        collected?;
        if self.config.mode == Mode::Batch {
            let ran: Vec<&Outcome> = batch.indices.iter().filter_map(|index| outcomes[*index].as_ref()).collect();
            self.group_cost.lock().unwrap_or_else(|p| p.into_inner()).add(&ran);
        }
        if let Some(memo) = &self.memo {
            for ((job, index), key) in batch.jobs.iter().zip(&batch.indices).zip(keys) {
                if let (Some(key), Some(outcome)) = (key, &outcomes[*index]) {
                    memo.remember(key, job, outcome);
                }
            }
        }
        Ok(outcomes.into_iter().flatten().map(|outcome| Outcome { value: None, ..outcome }).collect())
    }

    /// How the strict-mode memo has served (`None` in batch mode or with a budget of 0).
    pub fn memo_stats(&self) -> Option<MemoStats> {
        self.memo.as_ref().map(Memo::stats)
    }

    /// Value equality for each pair of texts (the judge's: see `guest/azr_guest/data.py`).
    /// `Err(Internal)` when the executor could not decide a pair: a failure is never a `false`.
    pub fn equal(&self, pairs: Vec<(String, String)>) -> Result<Vec<bool>> {
        let total = pairs.len();
        let (results, finished) = crossbeam_channel::unbounded();
        let batch = Arc::new(EqualBatch { pairs, results });
        let chunk = self.small_chunk(total);
        for start in (0..total).step_by(chunk) {
            self.send(Task::Equal { batch: Arc::clone(&batch), range: start..(start + chunk).min(total) })?;
        }
        let mut equal = vec![Ok(false); total];
        collect(&finished, total, &mut |_, _| Control::Continue, |index, value| equal[index] = value)?;
        equal.into_iter().collect::<std::result::Result<_, _>>().map_err(ExecutorError::Internal)
    }

    fn send(&self, task: Task) -> Result<()> {
        self.tasks.as_ref().and_then(|tasks| tasks.send(task).ok()).ok_or(ExecutorError::WorkersGone)
    }

    /// Items per task for quick work (reading value texts): spread over the workers, at most a group.
    fn small_chunk(&self, total: usize) -> usize {
        total.div_ceil(self.config.workers * 4).clamp(1, self.config.group_size)
    }

    /// Jobs per task: small in strict mode (balance), a group sized by measured cost in batch
    /// mode (`groups.rs`), but never so large that a few workers end up with all the work. When other batches already occupy every worker
    /// (a busy service), balance comes from them, and splitting this batch into smaller groups
    /// would only cost more fresh instances.
    fn chunk_size(&self, total: usize) -> usize {
        let balanced = if self.busy_workers() + self.queued_tasks() >= self.config.workers {
            total
        } else {
            total.div_ceil(self.config.workers * 4).max(1)
        };
        let chunk = match self.config.mode {
            Mode::Strict => balanced.min(8),
            Mode::Batch => {
                let sized =
                    self.group_cost.lock().unwrap_or_else(|p| p.into_inner()).group_size(self.config.group_size);
                balanced.min(sized)
            }
        };
        chunk.max(1)
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.tasks = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn start_backends(config: &ExecutorConfig) -> Result<Vec<Backend>> {
    match &config.isolation {
        Isolation::Threads => {
            let runtime = runtime()?;
            Ok((0..config.workers).map(|_| Backend::Thread(runtime)).collect())
        }
        Isolation::Processes(command) => {
            let setup = Setup { limits: config.limits, mode: config.mode };
            let spawn = || ProcessWorker::spawn(command.clone(), setup.clone()).map_err(ExecutorError::Guest);
            // The first worker alone, so that on a machine's first use one process compiles the
            // guest and the others load it from the cache.
            let mut first = spawn()?;
            first.wait_ready().map_err(ExecutorError::Guest)?;
            let mut rest = (1..config.workers).map(|_| spawn()).collect::<Result<Vec<_>>>()?;
            for worker in &mut rest {
                worker.wait_ready().map_err(ExecutorError::Guest)?;
            }
            Ok(std::iter::once(first).chain(rest).map(Backend::Process).collect())
        }
    }
}

fn collect<T>(
    finished: &Receiver<(usize, T)>,
    total: usize,
    observe: &mut dyn FnMut(usize, usize) -> Control,
    mut store: impl FnMut(usize, T),
) -> Result<()> {
    let mut done = 0;
    while done < total {
        match finished.recv_timeout(PROGRESS_INTERVAL) {
            Ok((index, value)) => {
                store(index, value);
                done += 1;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err(ExecutorError::WorkersGone),
        }
        if observe(done, total) == Control::Cancel {
            return Err(ExecutorError::Cancelled);
        }
    }
    Ok(())
}

fn serve_tasks(
    worker: usize,
    mut backend: Backend,
    limits: Limits,
    mode: Mode,
    queue: &Receiver<Task>,
    pid: &Mutex<Option<u32>>,
    busy: &AtomicUsize,
) {
    while let Ok(task) = queue.recv() {
        busy.fetch_add(1, Ordering::Relaxed);
        match task {
            // A cancelled batch's remaining tasks are dropped: nobody waits for their outcomes.
            Task::Jobs { batch, .. } if batch.cancelled.load(Ordering::Relaxed) => {}
            Task::Jobs { batch, range } => {
                let jobs = &batch.jobs[range.clone()];
                let outcomes = catch_unwind(AssertUnwindSafe(|| backend.run(limits, mode, jobs, &batch.cancelled)))
                    .unwrap_or_else(|panic| {
                        failures(jobs.len(), &format!("internal error: {}", panic_message(&panic)))
                    });
                for (index, mut outcome) in range.zip(outcomes) {
                    if let Some(timings) = outcome.timings.as_mut() {
                        place(timings, worker, batch.submitted_us);
                    }
                    let _ = batch.results.send((batch.indices[index], outcome));
                }
            }
            Task::Judge { batch, range } => {
                let items = &batch.items[range];
                let texts: Vec<String> = items.iter().map(|(_, _, expected)| expected.clone()).collect();
                let (start_us, started) = (work::now_us(), Instant::now());
                let read = catch_unwind(AssertUnwindSafe(|| backend.canonical(limits, &texts)))
                    .unwrap_or_else(|panic| Err(format!("internal error: {}", panic_message(&panic))));
                let seconds = started.elapsed().as_secs_f64() / items.len().max(1) as f64;
                for (position, (index, known, _)) in items.iter().enumerate() {
                    let outcome = match &read {
                        Ok(canonical) => {
                            let mut outcome = known.outcome();
                            outcome.matches = Some(work::matches(&canonical[position], &known.value));
                            outcome.elapsed_s = seconds;
                            let mut timings = Timings { start_us, expected_s: seconds, ..Timings::default() };
                            place(&mut timings, worker, batch.submitted_us);
                            outcome.timings = Some(timings);
                            outcome
                        }
                        Err(reason) => work::failed(Status::Internal, reason.clone(), seconds),
                    };
                    let _ = batch.results.send((*index, outcome));
                }
            }
            Task::Equal { batch, range } => {
                let start = range.start;
                let pairs = &batch.pairs[range.clone()];
                let values = catch_unwind(AssertUnwindSafe(|| backend.compare(limits, pairs)))
                    .unwrap_or_else(|panic| Err(format!("internal error: {}", panic_message(&panic))));
                for index in range {
                    let value = values.as_ref().map(|values| values[index - start]).map_err(Clone::clone);
                    let _ = batch.results.send((index, value));
                }
            }
        }
        // A worker process that died was replaced during the task.
        *pid.lock().unwrap_or_else(|p| p.into_inner()) = backend.pid();
        busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Which worker ran a job and how long it waited after its batch was submitted.
fn place(timings: &mut Timings, worker: usize, submitted_us: u64) {
    timings.worker = u32::try_from(worker).unwrap_or(u32::MAX);
    timings.queue_s = timings.start_us.saturating_sub(submitted_us) as f64 / 1e6;
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

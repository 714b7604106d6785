//! The `azr-executor` command line. The same entry point serves the standalone binary and the
//! `azr-executor` script of the Python package (through `azr._executor.cli_main`).

use crate::job::{Job, Limits, Mode, Outcome, Status};
use crate::pool::{default_workers, Control, Executor, ExecutorConfig, Isolation};
use crate::runtime::runtime;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

/// Lines of input errors printed before the rest are only counted.
const SHOWN_INPUT_ERRORS: usize = 20;

#[derive(Parser, Debug)]
#[command(
    name = "azr-executor",
    version,
    about = "Run untrusted Python programs in WebAssembly-isolated CPython sandboxes",
    long_about = "Run untrusted Python programs in WebAssembly-isolated CPython sandboxes.\n\n\
                  Each job defines a function `f` and gives its arguments as Python text; the outcome is \
                  `repr(f(<input>))` or a typed failure (error, syntax, forbidden, timeout, memory, \
                  output_limit, nondeterministic). Programs get no files, no network, no environment, \
                  fixed clocks and seeded randomness."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the jobs of a JSON-lines file and write one outcome per line, in input order.
    Run(RunArgs),
    /// Run the jobs of a JSON-lines file and print where the time went: each phase's mean, p50 and
    /// p99 (queue, instantiate, expected, run, teardown, prepare), overall and per status; write the
    /// run as a Chrome/Perfetto trace (open it at ui.perfetto.dev or chrome://tracing).
    Profile(ProfileArgs),
    /// Serve the executor over HTTP: POST /v1/run and /v1/equal (JSON or msgpack), GET /v1/info,
    /// /healthz, /readyz and /metrics (Prometheus). See docs/executor-protocol.md.
    Serve(ServeArgs),
    /// Print versions, the guest's hash and where its compiled form is cached (compiling it if needed).
    Info,
    /// Serve sandbox requests on stdin/stdout (started by the executor itself, not by hand).
    #[command(hide = true)]
    Worker,
    /// Hold N fresh sandboxes alive and print this process's private resident memory before and
    /// after, as JSON (used by the benchmark to measure memory per live instance).
    #[command(hide = true)]
    MemoryProbe {
        #[arg(default_value_t = 32)]
        instances: usize,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Jobs, one JSON object per line: {"program": "def f(a): ...", "input": "'x', 2", "runs": 2,
    /// "imports": "...", "expected": "...", "policy": "evaluation", "timeout_s": 2.5, "id": ...};
    /// only program and input are required, an "id" is copied to the outcome. `-` reads standard
    /// input.
    input: PathBuf,
    /// Where to write the outcomes (default: standard output).
    #[arg(short, long, value_name = "OUT.jsonl")]
    output: Option<PathBuf>,
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// No progress bar and no summary.
    #[arg(short, long)]
    quiet: bool,
    /// Add each job's per-phase timings to its outcome.
    #[arg(long)]
    timings: bool,
}

#[derive(Args, Debug)]
struct ProfileArgs {
    /// Jobs, as for `run`.
    input: PathBuf,
    /// Where to write the trace.
    #[arg(long, value_name = "TRACE.json", default_value = "azr-profile.json")]
    trace: PathBuf,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on (use 0.0.0.0 to accept connections from other hosts).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port; the address is printed on stdout).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Jobs admitted at once, queued or running; a request that would exceed it gets 429.
    #[arg(long, value_name = "JOBS", default_value_t = 4096)]
    max_queue: usize,
    /// Largest request body, in bytes (413 above it).
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    max_body_bytes: usize,
    /// Most jobs (or pairs) in one request (413 above it).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_jobs_per_request: usize,
    /// File holding the bearer token that /v1/ requests must carry (Authorization: Bearer <token>).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Log lines on stderr: text (key=value) or json (one object per line). Level: AZR_LOG (default info).
    #[arg(long, value_enum, default_value = "text")]
    log_format: crate::server::LogFormat,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

/// Settings of the sandboxes, shared by the commands that run jobs.
#[derive(Args, Debug, Clone)]
pub struct SandboxArgs {
    /// strict: a fresh instance for every run; batch: one instance runs a group of jobs, each in a
    /// fresh namespace (faster, shares interpreter state within a group).
    #[arg(long, value_enum, default_value = "strict")]
    pub mode: Mode,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Wall-clock limit per run, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub timeout: f64,
    /// Memory limit per sandbox, in MiB.
    #[arg(long, value_name = "MiB", default_value_t = 256)]
    pub memory_mb: u64,
    /// Largest accepted repr of a result, and most characters a program may print.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 16)]
    pub max_output_bytes: u32,
    /// The most jobs one instance runs in batch mode before it is replaced; fewer when jobs were
    /// measured to be slow (a group holds about a second of work).
    #[arg(long, value_name = "N", default_value_t = crate::pool::GROUP_SIZE_DEFAULT)]
    pub group_size: usize,
    /// Where sandboxes run: in worker processes (faster on several cores; a crash stays there) or
    /// in threads of this process.
    #[arg(long, value_enum, default_value = "process")]
    pub isolation: IsolationArg,
    /// Strict mode: MiB of settled results kept, so that a job whose runs already happened (a
    /// solver check of a validated program) is answered without running again; 0 runs every job.
    #[arg(long, value_name = "MiB", default_value_t = crate::pool::MEMO_MB_DEFAULT)]
    pub memo_mb: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsolationArg {
    Process,
    Thread,
}

impl SandboxArgs {
    pub fn config(&self) -> anyhow::Result<ExecutorConfig> {
        let limits = Limits::new(self.timeout, self.memory_mb, self.max_output_bytes).map_err(anyhow::Error::msg)?;
        let isolation = match self.isolation {
            IsolationArg::Thread => Isolation::Threads,
            IsolationArg::Process => Isolation::Processes(worker_command()?),
        };
        Ok(ExecutorConfig {
            workers: self.workers.unwrap_or_else(default_workers),
            limits,
            mode: self.mode,
            group_size: self.group_size,
            isolation,
            memo_bytes: self.memo_mb.saturating_mul(1 << 20),
        })
    }
}

/// How this program starts one of its worker processes: `$AZR_EXECUTOR_WORKER` (a JSON list of
/// words; the Python package points it at its own interpreter), else this executable.
fn worker_command() -> anyhow::Result<Vec<OsString>> {
    if let Some(command) = std::env::var_os("AZR_EXECUTOR_WORKER") {
        let words: Vec<String> = serde_json::from_str(&command.to_string_lossy()).context(
            "AZR_EXECUTOR_WORKER must be a JSON list of strings, e.g. [\"/usr/bin/azr-executor\", \"worker\"]",
        )?;
        if !words.is_empty() {
            return Ok(words.into_iter().map(OsString::from).collect());
        }
    }
    let program = std::env::current_exe().context("cannot find this executable to start workers")?;
    Ok(vec![program.into_os_string(), "worker".into()])
}

/// Run the command line; returns the process exit code. `interrupted` is polled while jobs run
/// (the Python entry point uses it to honour Ctrl-C).
pub fn main(args: impl IntoIterator<Item = OsString>, interrupted: &dyn Fn() -> bool) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return error.exit_code();
        }
    };
    let result = match cli.command {
        Command::Run(args) => run(&args, interrupted),
        Command::Profile(args) => profile(&args, interrupted),
        Command::Serve(args) => serve(args),
        Command::Info => info(),
        Command::MemoryProbe { instances } => memory_probe(instances),
        Command::Worker => worker(),
    };
    result.unwrap_or_else(|error| {
        eprintln!("azr-executor: error: {error:#}");
        1
    })
}

/// Serve as a sandbox worker, in a thread whose stack holds the guest's deepest recursion (the
/// calling thread's may be the 8 MiB main thread of whatever process started us).
fn worker() -> anyhow::Result<i32> {
    let serving = std::thread::Builder::new()
        .name("azr-worker".into())
        .stack_size(crate::runtime::WORKER_STACK_BYTES)
        .spawn(|| crate::worker::serve(std::io::stdin().lock(), std::io::stdout().lock()))
        .context("cannot start the sandbox worker's thread")?;
    let served = serving.join().map_err(|_| anyhow::anyhow!("the sandbox worker's thread panicked"))?;
    served.map(|()| 0).context("the sandbox worker's connection failed")
}

enum Line {
    Job { id: Option<Value> },
    Invalid { number: usize, error: String },
}

fn parse_line(text: &str) -> Result<(Job, Option<Value>), String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut fields) = value else {
        return Err("expected a JSON object with \"program\" and \"input\"".into());
    };
    let id = fields.remove("id");
    let job: Job = serde_json::from_value(Value::Object(fields)).map_err(|e| e.to_string())?;
    job.validate()?;
    Ok((job, id))
}

fn read_input(path: &PathBuf) -> anyhow::Result<String> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).context("cannot read standard input")?;
    } else {
        text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    }
    Ok(text)
}

/// The jobs of a JSON-lines file, each input line as a job or the reason it is not one (the first
/// reasons printed); and how many lines were invalid.
fn read_jobs(path: &PathBuf) -> anyhow::Result<(Vec<Line>, Vec<Job>, usize)> {
    let text = read_input(path)?;
    let mut lines = Vec::new();
    let mut jobs = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        match parse_line(raw) {
            Ok((job, id)) => {
                jobs.push(job);
                lines.push(Line::Job { id });
            }
            Err(error) => lines.push(Line::Invalid { number: index + 1, error }),
        }
    }
    let invalid: Vec<(usize, &str)> = lines
        .iter()
        .filter_map(|line| match line {
            Line::Invalid { number, error } => Some((*number, error.as_str())),
            Line::Job { .. } => None,
        })
        .collect();
    for (number, error) in invalid.iter().take(SHOWN_INPUT_ERRORS) {
        eprintln!("azr-executor: {}: line {number}: {error}", path.display());
    }
    if invalid.len() > SHOWN_INPUT_ERRORS {
        eprintln!("azr-executor: ... and {} more invalid lines", invalid.len() - SHOWN_INPUT_ERRORS);
    }
    let count = invalid.len();
    Ok((lines, jobs, count))
}

fn run(args: &RunArgs, interrupted: &dyn Fn() -> bool) -> anyhow::Result<i32> {
    let config = args.sandbox.config()?;
    let (lines, jobs, invalid) = read_jobs(&args.input)?;
    let executor = Executor::new(config)?;
    let (outcomes, seconds) = run_all(&executor, jobs, args.quiet, interrupted)?;
    let outcomes: Vec<Outcome> =
        if args.timings { outcomes } else { outcomes.into_iter().map(Outcome::without_timings).collect() };
    write_outcomes(args.output.as_ref(), &lines, &outcomes)?;
    if !args.quiet {
        eprintln!("{}", summary(&outcomes, seconds, executor.config()));
    }
    Ok(if invalid == 0 { 0 } else { 2 })
}

fn profile(args: &ProfileArgs, interrupted: &dyn Fn() -> bool) -> anyhow::Result<i32> {
    let (_, jobs, invalid) = read_jobs(&args.input)?;
    let executor = Executor::new(args.sandbox.config()?)?;
    let (outcomes, seconds) = run_all(&executor, jobs, false, interrupted)?;
    println!("{}", summary(&outcomes, seconds, executor.config()));
    if let Some(memo) = executor.memo_stats().filter(|memo| memo.hits > 0) {
        println!("{} jobs answered from the memo of runs already made (--memo-mb 0 runs them all)", memo.hits);
    }
    print!("{}", crate::profile::breakdown(&outcomes));
    let trace = serde_json::to_vec(&crate::profile::chrome_trace(&outcomes))?;
    std::fs::write(&args.trace, trace).with_context(|| format!("cannot write {}", args.trace.display()))?;
    println!("trace: {} (open it at https://ui.perfetto.dev or chrome://tracing)", args.trace.display());
    Ok(if invalid == 0 { 0 } else { 2 })
}

/// Run `jobs` with a progress bar; the outcomes and the seconds they took.
fn run_all(
    executor: &Executor,
    jobs: Vec<Job>,
    quiet: bool,
    interrupted: &dyn Fn() -> bool,
) -> anyhow::Result<(Vec<Outcome>, f64)> {
    let total = jobs.len();
    let bar = progress_bar(total as u64, quiet);
    let started = Instant::now();
    let outcomes = executor
        .run_observed(jobs, &mut |done, _| {
            bar.set_position(done as u64);
            if interrupted() {
                Control::Cancel
            } else {
                Control::Continue
            }
        })
        .context("running the jobs")?;
    bar.finish_and_clear();
    Ok((outcomes, started.elapsed().as_secs_f64()))
}

fn progress_bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} jobs  {per_sec}  eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

fn write_outcomes(path: Option<&PathBuf>, lines: &[Line], outcomes: &[Outcome]) -> anyhow::Result<()> {
    let sink: Box<dyn Write> = match path {
        Some(path) => {
            Box::new(std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut sink = BufWriter::new(sink);
    let mut outcomes = outcomes.iter();
    for line in lines {
        let mut record = Map::new();
        match line {
            Line::Job { id } => {
                let Some(outcome) = outcomes.next() else { bail!("fewer outcomes than jobs") };
                if let Some(id) = id {
                    record.insert("id".into(), id.clone());
                }
                if let Value::Object(fields) = serde_json::to_value(outcome)? {
                    record.extend(fields);
                }
            }
            Line::Invalid { number, error } => {
                record.insert("line".into(), (*number).into());
                record.insert("status".into(), "invalid".into());
                record.insert("error".into(), error.clone().into());
            }
        }
        serde_json::to_writer(&mut sink, &record)?;
        sink.write_all(b"\n")?;
    }
    sink.flush().context("writing the outcomes")?;
    Ok(())
}

fn summary(outcomes: &[Outcome], seconds: f64, config: &ExecutorConfig) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for outcome in outcomes {
        *counts.entry(outcome.status.as_str()).or_default() += 1;
    }
    let by_status: Vec<String> =
        Status::ALL.iter().filter_map(|status| counts.get(status.as_str()).map(|n| format!("{status} {n}"))).collect();
    format!(
        "{} jobs in {seconds:.2} s ({:.0}/s, {} mode, {} workers): {}",
        outcomes.len(),
        outcomes.len() as f64 / seconds.max(1e-9),
        config.mode.as_str(),
        config.workers,
        if by_status.is_empty() { "nothing to run".into() } else { by_status.join(", ") }
    )
}

fn serve(args: ServeArgs) -> anyhow::Result<i32> {
    let token = match &args.token_file {
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?
                .trim()
                .to_string();
            if token.is_empty() {
                bail!("the token file {} is empty", path.display());
            }
            Some(token)
        }
        None => None,
    };
    let config = crate::server::ServeConfig {
        host: args.host,
        port: args.port,
        max_queue: args.max_queue,
        max_body_bytes: args.max_body_bytes,
        max_jobs_per_request: args.max_jobs_per_request,
        token,
        log_format: args.log_format,
    };
    crate::server::serve(args.sandbox.config()?, config)?;
    Ok(0)
}

fn info() -> anyhow::Result<i32> {
    let runtime = runtime()?;
    let report = runtime.load_report();
    let info = serde_json::json!({
        "azr_executor": env!("CARGO_PKG_VERSION"),
        "wasmtime": crate::guest::WASMTIME_VERSION,
        "guest_sha256": crate::guest::GUEST_SHA256,
        "guest_bytes": crate::guest::GUEST_COMPONENT.len(),
        "compiled_guest": report.path,
        "compiled_now": report.compiled_now,
        "load_seconds": report.seconds,
        "default_workers": default_workers(),
        "max_workers": crate::pool::MAX_WORKERS,
        "resident_memory_mb": runtime.resident().bytes >> 20,
        "resident_memory_off_because": runtime.resident().off_because,
    });
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(0)
}

fn memory_probe(instances: usize) -> anyhow::Result<i32> {
    let runtime = runtime()?;
    let limits = Limits::default();
    // One instance first, so that what is shared by all of them is not counted per instance.
    let _first = crate::sandbox::Sandbox::new(runtime, limits, 0).map_err(anyhow::Error::msg)?;
    let before = resident_bytes()?;
    let mut live = (0..instances)
        .map(|salt| crate::sandbox::Sandbox::new(runtime, limits, salt as u64).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let fresh = resident_bytes()?;
    let job = Job::new("def f(xs):\n    return sorted(set(xs))", "[3, 1, 2, 3]");
    for sandbox in &mut live {
        sandbox.run(&job, false, None);
    }
    let used = resident_bytes()?;
    drop(live);
    let per_instance = |after: u64| after.saturating_sub(before) / instances.max(1) as u64;
    let report = serde_json::json!({"instances": instances, "rss_before": before, "rss_fresh": fresh,
        "rss_after_a_job": used, "bytes_per_fresh_instance": per_instance(fresh),
        "bytes_per_instance_after_a_job": per_instance(used)});
    println!("{report}");
    Ok(0)
}

/// Private resident memory (RssAnon): what each instance costs. VmRSS would count the shared
/// copy-on-write image pages once per instance that maps them, though they exist once.
fn resident_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no RssAnon in /proc/self/status")?;
    Ok(kib * 1024)
}

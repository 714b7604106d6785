//! What the executor takes and gives back: jobs, outcomes, statuses and limits. The same shapes
//! travel through the Python API, the CLI's JSON lines and the service.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::time::Duration;

/// The most determinism runs one job may ask for.
pub const MAX_RUNS: u32 = 16;
/// The largest program, input, imports or expected text accepted, in bytes.
pub const MAX_TEXT_BYTES: usize = 4 << 20;

fn check_timeout(seconds: f64) -> Result<(), String> {
    if seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0 {
        Ok(())
    } else {
        Err(format!("timeout_s must be a number of seconds in (0, 3600], got {seconds}"))
    }
}

/// One program to run: `f(<input>)` after executing `imports` and `program`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub program: String,
    pub input: String,
    /// Import lines run before the program. AZR data stores them as a list; both forms are accepted.
    #[serde(default, deserialize_with = "lines_or_text")]
    pub imports: String,
    /// The answer the result is judged against: a data text (compared as data) or, for a result that
    /// is not data, its repr text. Read before the program runs, never in its namespace.
    #[serde(default)]
    pub expected: Option<String>,
    /// How many fresh executions must agree (AZR's determinism check uses 2).
    #[serde(default = "one_run")]
    pub runs: u32,
    /// What the program may import: AZR's self-play rules, or those of evaluation.
    #[serde(default)]
    pub policy: Policy,
    /// This job's time limit in seconds, instead of the executor's (a benchmark's per-test limit).
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// Script mode: `program` runs as `__main__` with `input` as its standard input, without the
    /// policy layer (the sandbox is the boundary), always in a fresh instance; the outcome's `output`
    /// is its standard output, with `stderr` and `exit_code`.
    #[serde(default)]
    pub script: bool,
}

/// The rules a program runs under. The sandbox is the same; only the import rules differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// AZR's: no clocks, randomness, `sys`, I/O modules (a solver must be able to reason about it).
    #[default]
    Selfplay,
    /// Benchmark solutions': also `sys`, `random`, `hashlib`, `time`, `datetime`, `calendar`.
    Evaluation,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Selfplay => "selfplay",
            Policy::Evaluation => "evaluation",
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "selfplay" => Ok(Policy::Selfplay),
            "evaluation" => Ok(Policy::Evaluation),
            other => Err(format!("policy must be 'selfplay' or 'evaluation', got '{other}'")),
        }
    }
}

fn one_run() -> u32 {
    1
}

fn lines_or_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Imports {
        Text(String),
        Lines(Vec<String>),
        Null(()),
    }
    Ok(match Imports::deserialize(deserializer)? {
        Imports::Text(text) => text,
        Imports::Lines(lines) => lines.join("\n"),
        Imports::Null(()) => String::new(),
    })
}

impl Job {
    pub fn new(program: impl Into<String>, input: impl Into<String>) -> Self {
        Job {
            program: program.into(),
            input: input.into(),
            imports: String::new(),
            expected: None,
            runs: 1,
            policy: Policy::Selfplay,
            timeout_s: None,
            script: false,
        }
    }

    pub fn with_runs(mut self, runs: u32) -> Self {
        self.runs = runs;
        self
    }

    pub fn with_expected(mut self, expected: impl Into<String>) -> Self {
        self.expected = Some(expected.into());
        self
    }

    /// Why this job cannot be run at all (as opposed to running and failing), if it cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_RUNS).contains(&self.runs) {
            return Err(format!("runs must be between 1 and {MAX_RUNS}, got {}", self.runs));
        }
        if let Some(seconds) = self.timeout_s {
            check_timeout(seconds)?;
        }
        if self.script && self.expected.is_some() {
            return Err("a script job takes no expected value (compare its stdout yourself)".into());
        }
        let texts = [("program", Some(&self.program)), ("input", Some(&self.input)), ("imports", Some(&self.imports))];
        for (name, text) in texts.into_iter().chain([("expected", self.expected.as_ref())]) {
            if let Some(text) = text {
                if text.len() > MAX_TEXT_BYTES {
                    return Err(format!("{name} is {} bytes, more than the {MAX_TEXT_BYTES}-byte limit", text.len()));
                }
            }
        }
        Ok(())
    }
}

/// The verdict on one job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Error,
    Syntax,
    Forbidden,
    Timeout,
    Memory,
    OutputLimit,
    Nondeterministic,
    /// The executor failed (a worker died, the harness faulted, a service was unreachable): not the
    /// program's doing, so never a verdict on it.
    Internal,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::Ok,
        Status::Error,
        Status::Syntax,
        Status::Forbidden,
        Status::Timeout,
        Status::Memory,
        Status::OutputLimit,
        Status::Nondeterministic,
        Status::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Syntax => "syntax",
            Status::Forbidden => "forbidden",
            Status::Timeout => "timeout",
            Status::Memory => "memory",
            Status::OutputLimit => "output_limit",
            Status::Nondeterministic => "nondeterministic",
            Status::Internal => "internal",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What running a job produced. `output` is `repr(f(<input>))` when the status is `ok` (a script's
/// standard output in script mode).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: Status,
    pub output: Option<String>,
    pub error: Option<String>,
    /// Whether the result equals `expected` (as data, or by repr text for a result that is not data),
    /// when the job gave one and the program ran to `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<bool>,
    /// Seconds spent executing the job, all its runs together.
    pub elapsed_s: f64,
    /// Script mode: the exit code of a script that finished, and its standard error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// Where the job's time went, measured on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
    /// The first run's canonical text, carried from a worker to the executor's memo; the executor
    /// never returns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl Outcome {
    /// The outcome as answered when timings were not asked for.
    pub fn without_timings(self) -> Self {
        Outcome { timings: None, ..self }
    }
}

/// Where one job's time went, measured by the host around each step (the guest has only a
/// virtual clock, so what happens inside one guest call is a single phase, `run_s`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// When its worker started the job, in microseconds since the Unix epoch.
    pub start_us: u64,
    /// The worker that ran it.
    pub worker: u32,
    /// From the batch's submission to the job's start (other jobs ahead of it).
    pub queue_s: f64,
    /// Making fresh instances for it (0 when its worker had one ready).
    pub instantiate_s: f64,
    /// Reading its expected value in the guest.
    pub expected_s: f64,
    /// The guest calls that ran it: static checks, compiling, running, the result's repr and
    /// canonical text, and the component-model transfer.
    pub run_s: f64,
    /// Dropping its instances.
    pub teardown_s: f64,
    /// Making the fresh instance its worker's next job will use, after it.
    pub prepare_s: f64,
}

impl Timings {
    pub const PHASES: [&'static str; 6] = ["queue", "instantiate", "expected", "run", "teardown", "prepare"];

    pub fn phases(&self) -> [f64; 6] {
        [self.queue_s, self.instantiate_s, self.expected_s, self.run_s, self.teardown_s, self.prepare_s]
    }
}

/// How a job is isolated from the jobs run before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A fresh sandbox instance for every run of every job.
    Strict,
    /// One instance runs a group of jobs, each in a fresh namespace; it is replaced after the group,
    /// after any failure the host sees and after any job that may have changed shared state.
    Batch,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Strict => "strict",
            Mode::Batch => "batch",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "strict" => Ok(Mode::Strict),
            "batch" => Ok(Mode::Batch),
            other => Err(format!("mode must be 'strict' or 'batch', got '{other}'")),
        }
    }
}

/// Per-run resource limits.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub timeout: Duration,
    pub memory_bytes: u64,
    pub max_output_bytes: u32,
}

pub const MIN_MEMORY_MB: u64 = 64;
pub const MAX_MEMORY_MB: u64 = 4096;

impl Limits {
    pub fn new(timeout_s: f64, memory_mb: u64, max_output_bytes: u32) -> Result<Self, String> {
        check_timeout(timeout_s)?;
        if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&memory_mb) {
            return Err(format!(
                "memory_mb must be between {MIN_MEMORY_MB} (the interpreter's own snapshot needs ~20 MiB) \
                 and {MAX_MEMORY_MB} (the 32-bit guest's address space), got {memory_mb}"
            ));
        }
        if max_output_bytes == 0 {
            return Err("max_output_bytes must be positive".into());
        }
        Ok(Limits { timeout: Duration::from_secs_f64(timeout_s), memory_bytes: memory_mb << 20, max_output_bytes })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits { timeout: Duration::from_secs(5), memory_bytes: 256 << 20, max_output_bytes: 1 << 16 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_accept_text_lines_or_null() {
        let parse = |imports: &str| -> Job {
            serde_json::from_str(&format!(r#"{{"program": "p", "input": "1", "imports": {imports}}}"#)).unwrap()
        };
        assert_eq!(parse(r#""import math""#).imports, "import math");
        assert_eq!(parse(r#"["import math", "import re"]"#).imports, "import math\nimport re");
        assert_eq!(parse("null").imports, "");
        let bare: Job = serde_json::from_str(r#"{"program": "p", "input": "1"}"#).unwrap();
        assert_eq!((bare.imports.as_str(), bare.runs, bare.expected), ("", 1, None));
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(Job::new("p", "1").validate().is_ok());
        assert_eq!(Job::new("p", "1").with_runs(0).validate().unwrap_err(), "runs must be between 1 and 16, got 0");
        let huge = Job::new("x".repeat(MAX_TEXT_BYTES + 1), "1");
        assert!(huge.validate().unwrap_err().starts_with("program is 4194305 bytes"));
        let expected = Job::new("p", "1").with_expected("y".repeat(MAX_TEXT_BYTES + 1));
        assert!(expected.validate().unwrap_err().starts_with("expected is"));
    }

    #[test]
    fn limits_refuse_nonsense() {
        assert!(Limits::new(5.0, 256, 1024).is_ok());
        assert!(Limits::new(0.0, 256, 1024).unwrap_err().contains("timeout_s"));
        assert!(Limits::new(f64::NAN, 256, 1024).unwrap_err().contains("timeout_s"));
        assert!(Limits::new(5.0, 8, 1024).unwrap_err().contains("memory_mb"));
        assert!(Limits::new(5.0, 256, 0).unwrap_err().contains("max_output_bytes"));
    }

    #[test]
    fn statuses_and_modes_have_stable_names() {
        let names: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            ["ok", "error", "syntax", "forbidden", "timeout", "memory", "output_limit", "nondeterministic", "internal"]
        );
        assert_eq!(serde_json::to_string(&Status::OutputLimit).unwrap(), "\"output_limit\"");
        assert_eq!("batch".parse::<Mode>(), Ok(Mode::Batch));
        assert!("fast".parse::<Mode>().is_err());
    }
}

//! One sandbox: a fresh wasmtime store and guest instance with a memory cap, an epoch deadline,
//! capped stdout/stderr, seeded clocks and randomness, an empty environment (but
//! `PYTHONHASHSEED=0`), no files and no sockets.

use crate::bindings::{self, Guest};
use crate::clock::{ClockState, VirtualClock};
use crate::job::{Job, Limits, Policy, Status};
use crate::runtime::{Runtime, Slot, EPOCH_TICK};
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{Deterministic, HostWallClock, WasiCtx, WasiCtxView, WasiView};

/// Bytes kept of what the guest writes to its real stdout/stderr. The harness sends the
/// program's prints elsewhere; only the interpreter's own fatal messages land here.
const PIPE_BYTES: usize = 64 << 10;
/// Largest function table the guest may grow to.
const TABLE_LIMIT: usize = 1 << 16;
/// The wall clock a run sees: 2023-11-14T22:13:20Z plus one second per determinism run.
const WALL_ORIGIN_S: u64 = 1_700_000_000;
/// How much of a trapped guest's stderr is quoted in the error.
const STDERR_TAIL_BYTES: usize = 600;

pub(crate) struct HostState {
    wasi: WasiCtx,
    resources: ResourceTable,
    memory: MemoryCap,
    clock: VirtualClock,
    stderr: MemoryOutputPipe,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.resources }
    }
}

impl ClockState for HostState {
    fn clock(&mut self) -> &mut VirtualClock {
        &mut self.clock
    }

    fn resources(&mut self) -> &mut ResourceTable {
        &mut self.resources
    }
}

/// Caps linear memory and remembers that it refused, so a trap that follows is reported as
/// `memory` rather than a generic error.
struct MemoryCap {
    limit: usize,
    refused: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = desired <= self.limit;
        self.refused |= !allowed;
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_LIMIT)
    }
}

struct FixedWallClock(Duration);

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        self.0
    }
}

/// The result of one run of one job in one sandbox.
#[derive(Clone, Debug, PartialEq)]
pub struct RunResult {
    pub status: Status,
    pub output: Option<String>,
    pub error: Option<String>,
    /// The result's canonical text, compared with the expected value's by the host.
    pub value: Option<String>,
    /// Whether the sandbox may run another job: not after a trap, nor after a job that may have
    /// changed state the next job would see.
    pub reusable: bool,
    /// Script mode: the exit code and standard error.
    pub exit_code: Option<i32>,
    pub stderr: Option<String>,
}

pub struct Sandbox<'r> {
    store: Store<HostState>,
    guest: Guest,
    limits: Limits,
    /// The time limit of the call in progress: the job's own, or the executor's.
    timeout: Duration,
    salt: u64,
    _slot: Slot<'r>,
}

impl RunResult {
    /// A run that produced nothing but a reason, after which the sandbox is spent.
    pub fn failed(status: Status, error: String) -> Self {
        RunResult {
            status,
            output: None,
            error: Some(error),
            value: None,
            reusable: false,
            exit_code: None,
            stderr: None,
        }
    }
}

impl<'r> Sandbox<'r> {
    /// A fresh instance. `salt` numbers the determinism run: clocks, randomness and the guest's
    /// heap layout differ between salts, so a program that observes any of them disagrees with itself.
    pub fn new(runtime: &'r Runtime, limits: Limits, salt: u64) -> Result<Self, String> {
        let slot = runtime.slots().acquire();
        let stderr = MemoryOutputPipe::new(PIPE_BYTES);
        let wasi = WasiCtx::builder()
            .env("PYTHONHASHSEED", "0")
            .stdout(MemoryOutputPipe::new(PIPE_BYTES))
            .stderr(stderr.clone())
            .wall_clock(FixedWallClock(Duration::from_secs(WALL_ORIGIN_S + salt)))
            .secure_random(Deterministic::new(seed_bytes(salt, 1)))
            .insecure_random(Deterministic::new(seed_bytes(salt, 2)))
            .insecure_random_seed(u128::from(salt))
            .max_random_size(1 << 16)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = HostState {
            wasi,
            resources: ResourceTable::new(),
            memory: MemoryCap { limit: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX), refused: false },
            clock: VirtualClock::new(salt.wrapping_mul(1_000_000_007)),
            stderr,
        };
        let mut store = Store::new(runtime.engine(), state);
        store.limiter(|state| &mut state.memory);
        store.set_epoch_deadline(deadline_ticks(limits.timeout));
        let guest = runtime
            .pre()
            .instantiate(&mut store)
            .map_err(|e| format!("cannot instantiate the sandbox: {}", trap_message(&e)))?;
        Ok(Sandbox { store, guest, limits, timeout: limits.timeout, salt, _slot: slot })
    }

    fn request(&self, job: &Job, reuse: bool, code: Option<&[u8]>) -> bindings::Job {
        bindings::Job {
            program: job.program.clone(),
            input: job.input.clone(),
            imports: job.imports.clone(),
            output_limit: self.limits.max_output_bytes,
            salt: self.salt,
            reuse,
            evaluation: job.policy == Policy::Evaluation,
            script: job.script,
            code: code.map(<[u8]>::to_vec),
        }
    }

    /// The job's program compiled and checked by the guest, marshalled, in an instance where no
    /// program runs (see `compiled`); `None` when it does not compile or is refused (the run then
    /// compiles it itself and says why). `Err` when the call trapped: the instance is spent.
    pub fn compile(&mut self, job: &Job) -> Result<Option<Vec<u8>>, ()> {
        self.timeout = self.limits.timeout;
        self.store.set_epoch_deadline(deadline_ticks(self.timeout));
        self.store.data_mut().memory.refused = false;
        let request = self.request(job, false, None);
        self.guest.call_compile(&mut self.store, &request).map_err(drop)
    }

    /// Run one job. `reuse` says the sandbox may run more jobs afterwards, so the guest works out
    /// whether this one could have changed what they see; `code` is the program as `compile`
    /// returned it, when the host kept it.
    pub fn run(&mut self, job: &Job, reuse: bool, code: Option<&[u8]>) -> RunResult {
        self.timeout = job.timeout_s.map_or(self.limits.timeout, Duration::from_secs_f64);
        self.store.set_epoch_deadline(deadline_ticks(self.timeout));
        self.store.data_mut().memory.refused = false;
        let request = self.request(job, reuse, code);
        match self.guest.call_run(&mut self.store, &request) {
            Ok(outcome) => {
                let status = match outcome.status {
                    bindings::Status::Ok => Status::Ok,
                    bindings::Status::Error => Status::Error,
                    bindings::Status::Syntax => Status::Syntax,
                    bindings::Status::Forbidden => Status::Forbidden,
                    bindings::Status::Memory => Status::Memory,
                    bindings::Status::OutputLimit => Status::OutputLimit,
                    bindings::Status::Internal => Status::Internal,
                };
                // Once the cap refused memory, an error is the interpreter's view of that refusal
                // (a MemoryError, or an exception garbled by an allocation that failed).
                if status == Status::Memory || (status == Status::Error && self.store.data().memory.refused) {
                    let what = outcome.error.as_deref().unwrap_or("MemoryError").trim_end_matches(": ");
                    let error =
                        format!("{what} (the sandbox's memory limit is {} MiB)", self.limits.memory_bytes >> 20);
                    return RunResult::failed(Status::Memory, error);
                }
                let limit = self.limits.max_output_bytes as usize;
                // The guest caps a script's streams in characters; its bytes are checked here too,
                // since a script can reach the guest's own objects.
                let too_long = |text: &Option<String>| text.as_ref().is_some_and(|t| t.len() > 4 * limit);
                if job.script && (too_long(&outcome.output) || too_long(&outcome.stderr)) {
                    return RunResult::failed(Status::OutputLimit, format!("printed more than {limit} characters"));
                }
                RunResult {
                    status,
                    output: outcome.output,
                    error: outcome.error,
                    value: outcome.value,
                    reusable: !outcome.dirty && status != Status::Internal && !job.script,
                    exit_code: outcome.exit_code,
                    stderr: outcome.stderr,
                }
            }
            Err(error) => {
                let (status, error) = self.classify(&error);
                RunResult::failed(status, error)
            }
        }
    }

    /// The canonical text of a value text (an expected value, an answer), read by the guest. `Err`
    /// when the text could not be read (it ran out of time or memory): the instance is then spent.
    pub fn canonical(&mut self, text: &str) -> Result<String, String> {
        self.timeout = self.limits.timeout;
        self.store.set_epoch_deadline(deadline_ticks(self.timeout));
        self.store.data_mut().memory.refused = false;
        match self.guest.call_canonical(&mut self.store, text) {
            Ok(Ok(canonical)) => Ok(canonical),
            Ok(Err(message)) => Err(message),
            Err(error) => Err(self.classify(&error).1),
        }
    }

    fn classify(&self, error: &wasmtime::Error) -> (Status, String) {
        let state = self.store.data();
        let limit_mb = self.limits.memory_bytes >> 20;
        if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            let message =
                format!("the program ended the interpreter itself (exit code {}); its output is lost", exit.0);
            return (Status::Error, message);
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => {
                (Status::Timeout, format!("exceeded the {:.3} s time limit", self.timeout.as_secs_f64()))
            }
            _ if state.memory.refused => (Status::Memory, format!("exceeded the {limit_mb} MiB memory limit")),
            Some(Trap::StackOverflow) => {
                (Status::Error, "RecursionError: the sandbox's stack overflowed (recursion too deep)".into())
            }
            _ => {
                let stderr = state.stderr.contents();
                let tail = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(STDERR_TAIL_BYTES)..]);
                let tail = tail.trim();
                let detail = if tail.is_empty() { String::new() } else { format!("; the interpreter said: {tail}") };
                (Status::Error, format!("the sandbox trapped: {}{detail}", trap_message(error)))
            }
        }
    }
}

fn trap_message(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => error.to_string().lines().next().unwrap_or_default().to_string(),
    }
}

fn deadline_ticks(timeout: Duration) -> u64 {
    // One tick more than the timeout, and far from overflowing when added to the current epoch.
    let ticks = timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos());
    u64::try_from(ticks).unwrap_or(u64::MAX).min(u64::MAX / 2) + 1
}

/// 64 bytes of a splitmix64 stream: distinct per salt and per purpose, identical across machines.
fn seed_bytes(salt: u64, purpose: u64) -> Vec<u8> {
    let mut state = salt ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..8)
        .flat_map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)).to_le_bytes()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_cover_the_whole_timeout() {
        assert_eq!(deadline_ticks(Duration::from_millis(5)), 2);
        assert_eq!(deadline_ticks(Duration::from_millis(6)), 3);
        assert_eq!(deadline_ticks(Duration::from_secs(5)), 1001);
        assert_eq!(deadline_ticks(Duration::from_secs(u64::MAX)), u64::MAX / 2 + 1);
    }

    #[test]
    fn seeds_differ_by_salt_and_purpose_and_are_stable() {
        assert_eq!(seed_bytes(0, 1).len(), 64);
        assert_eq!(seed_bytes(3, 1), seed_bytes(3, 1));
        assert_ne!(seed_bytes(0, 1), seed_bytes(1, 1));
        assert_ne!(seed_bytes(0, 1), seed_bytes(0, 2));
    }
}

//! The process-wide sandbox runtime: one wasmtime `Engine` with the pooling allocator and
//! copy-on-write memory images, the guest component linked once (`InstancePre`), and a ticker
//! thread that drives epoch deadlines. Every executor in the process shares it.

use crate::bindings::GuestPre;
use crate::clock;
use crate::error::{ExecutorError, Result};
use crate::guest::{self, LoadReport};
use crate::sandbox::HostState;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; deadlines are whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Native stack the guest may use: CPython's default recursion limit (1000 frames) through C
/// wrappers such as `functools.lru_cache` needs a few MiB; the rest is headroom.
pub const WASM_STACK_BYTES: usize = 32 << 20;
/// Stack of a thread that runs guests: the wasm stack plus the host's own frames.
pub const WORKER_STACK_BYTES: usize = WASM_STACK_BYTES + (8 << 20);
/// Sandboxes alive at once in this process, across all executors (pool slots are reserved up
/// front): a strict worker holds two, its compiling instance and the one it runs or has ready.
pub const MAX_LIVE_SANDBOXES: usize = 2 * crate::pool::MAX_WORKERS;
/// Elements of the guest's largest function table (componentize-py's CPython has about 5,700).
const TABLE_ELEMENTS: usize = 1 << 14;
/// Linear memory a pool slot keeps mapped between instances, reset by copying the pages the last
/// instance wrote instead of dropping them (see [`resident_bytes`]).
const RESIDENT_MB_DEFAULT: usize = 32;
/// Overrides [`RESIDENT_MB_DEFAULT`]; `0` turns keeping memory resident off.
pub const RESIDENT_MB_ENV: &str = "AZR_EXECUTOR_RESIDENT_MB";

pub struct Runtime {
    engine: Engine,
    pre: GuestPre<HostState>,
    slots: Slots,
    load: LoadReport,
    resident: Resident,
}

/// How a pool slot's memory is reset between instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resident {
    /// Bytes of written memory reset in place by copying from the snapshot; the rest is unmapped
    /// (and faulted in again, page by page, by the next instance).
    pub bytes: usize,
    /// Why nothing is kept resident, when nothing is.
    pub off_because: Option<&'static str>,
}

static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

/// The runtime, started on first use (which may compile the guest, once per machine).
pub fn runtime() -> Result<&'static Runtime> {
    RUNTIME
        .get_or_init(|| {
            Runtime::start().map_err(|error| match error {
                ExecutorError::Guest(reason) => reason,
                other => other.to_string(),
            })
        })
        .as_ref()
        .map_err(|reason| ExecutorError::Guest(reason.clone()))
}

impl Runtime {
    fn start() -> Result<Self> {
        let resident = resident_bytes(
            std::env::var(RESIDENT_MB_ENV).ok().as_deref(),
            swap_in_use(),
            PoolingAllocationConfig::is_pagemap_scan_available(),
        )?;
        let engine = Engine::new(&engine_config(resident.bytes))
            .map_err(|e| ExecutorError::Guest(format!("cannot configure the wasm engine: {e}")))?;
        let (component, load) = guest::load(&engine, &|path| {
            eprintln!(
                "azr-executor: compiling the sandbox guest for this machine (first use only, ~15 s); \
                 caching it at {}",
                path.display()
            );
        })?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .and_then(|()| clock::link(&mut linker))
            .map_err(|e| ExecutorError::Guest(format!("cannot link WASI: {e}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(GuestPre::new)
            .map_err(|e| ExecutorError::Guest(format!("cannot link the guest: {e}")))?;
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("azr-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                ticker.increment_epoch();
            })
            .map_err(|e| ExecutorError::Guest(format!("cannot start the epoch thread: {e}")))?;
        Ok(Runtime { engine, pre, slots: Slots::new(MAX_LIVE_SANDBOXES), load, resident })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn pre(&self) -> &GuestPre<HostState> {
        &self.pre
    }

    pub(crate) fn slots(&self) -> &Slots {
        &self.slots
    }

    /// Where the compiled guest came from and how long loading took.
    pub fn load_report(&self) -> &LoadReport {
        &self.load
    }

    pub fn resident(&self) -> Resident {
        self.resident
    }
}

/// How much memory slots keep resident, from the override (MiB) and whether the machine swaps.
///
/// A slot that keeps memory resident finds the pages the last instance wrote with Linux's
/// `PAGEMAP_SCAN` (6.7+) and copies the snapshot's contents back over them: the next instance
/// then takes no copy-on-write fault for them. wasmtime 48's scan only sees pages that are
/// present, so a written page that was swapped out would keep the last instance's contents:
/// with swap in use nothing is kept resident, whatever the override says.
fn resident_bytes(override_mb: Option<&str>, swapping: bool, scan_available: bool) -> Result<Resident> {
    let mb = match override_mb.map(str::trim) {
        None | Some("") => RESIDENT_MB_DEFAULT,
        Some(text) => text.parse::<usize>().ok().filter(|mb| *mb <= 4096).ok_or_else(|| {
            ExecutorError::InvalidConfig(format!(
                "{RESIDENT_MB_ENV} must be a whole number of MiB up to 4096, got '{text}'"
            ))
        })?,
    };
    let off_because = if mb == 0 {
        Some("turned off")
    } else if swapping {
        Some("the machine has swap (a swapped-out page would not be reset)")
    } else if !scan_available {
        // Without the scan wasmtime would copy the whole budget back on every reset.
        Some("the kernel has no PAGEMAP_SCAN (Linux 6.7 or newer)")
    } else {
        None
    };
    Ok(Resident { bytes: if off_because.is_some() { 0 } else { mb << 20 }, off_because })
}

/// Whether any swap space is active (`/proc/swaps` lists more than its header). When it cannot
/// be read, assume so.
fn swap_in_use() -> bool {
    std::fs::read_to_string("/proc/swaps")
        .map_or(true, |swaps| swaps.lines().skip(1).any(|line| !line.trim().is_empty()))
}

fn engine_config(resident_bytes: usize) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    let slots = u32::try_from(MAX_LIVE_SANDBOXES).unwrap_or(u32::MAX);
    // componentize-py's component holds 14 core instances, one memory and three tables.
    pool.total_component_instances(slots)
        .total_core_instances(slots * 16)
        .total_memories(slots * 2)
        .total_tables(slots * 4)
        .total_stacks(4)
        .max_core_instances_per_component(16)
        .max_memories_per_component(2)
        .max_tables_per_component(8)
        .table_elements(TABLE_ELEMENTS)
        .max_core_instance_size(1 << 20)
        .max_component_instance_size(1 << 20)
        .max_memory_size(crate::job::MAX_MEMORY_MB as usize * (1 << 20));
    if resident_bytes > 0 {
        // The scan reports at most 32 runs of written pages (wasmtime 48); memory past the last
        // one is unmapped as before. On the seed programs this keeps ~12% of the faults away.
        pool.linear_memory_keep_resident(resident_bytes)
            .table_keep_resident(TABLE_ELEMENTS * std::mem::size_of::<usize>())
            .pagemap_scan(wasmtime::Enabled::Yes);
    }
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(WASM_STACK_BYTES)
        // Never used (calls are synchronous), but wasmtime requires it to cover the wasm stack.
        .async_stack_size(WASM_STACK_BYTES + (1 << 20))
        .memory_init_cow(true)
        .parallel_compilation(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// A counting semaphore over the pooling allocator's slots, so that many executors in one
/// process wait for a slot instead of failing to instantiate.
pub(crate) struct Slots {
    free: Mutex<usize>,
    returned: Condvar,
}

pub(crate) struct Slot<'a>(&'a Slots);

impl Slots {
    fn new(count: usize) -> Self {
        Slots { free: Mutex::new(count), returned: Condvar::new() }
    }

    pub(crate) fn acquire(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while *free == 0 {
            free = self.returned.wait(free).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *free += 1;
        self.0.returned.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_stays_resident_unless_turned_off_or_swapping() {
        assert_eq!(resident_bytes(None, false, true).unwrap().bytes, RESIDENT_MB_DEFAULT << 20);
        assert_eq!(resident_bytes(Some("8"), false, true).unwrap().bytes, 8 << 20);
        let off = resident_bytes(Some("0"), false, true).unwrap();
        assert_eq!(off, Resident { bytes: 0, off_because: Some("turned off") });
        for (swapping, scan, why) in [(true, true, "swap"), (false, false, "PAGEMAP_SCAN")] {
            let resident = resident_bytes(Some("8"), swapping, scan).unwrap();
            assert_eq!(resident.bytes, 0);
            assert!(resident.off_because.unwrap().contains(why));
        }
        assert!(resident_bytes(Some("lots"), false, true).unwrap_err().to_string().contains(RESIDENT_MB_ENV));
    }
}

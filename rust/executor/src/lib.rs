//! azr-executor: runs untrusted Python programs for Absolute Zero self-play inside
//! WebAssembly-isolated CPython, thousands per second.
//!
//! ```no_run
//! use azr_executor::{Executor, ExecutorConfig, Job, Status};
//! let executor = Executor::new(ExecutorConfig::default())?;
//! let outcomes = executor.run(vec![Job::new("def f(a):\n    return a", "'Hello world'").with_runs(2)])?;
//! assert_eq!(outcomes[0].status, Status::Ok);
//! assert_eq!(outcomes[0].output.as_deref(), Some("'Hello world'"));
//! # Ok::<(), azr_executor::ExecutorError>(())
//! ```
//!
//! The same engine is exposed to Python as `azr._executor` (feature `python`) and as the
//! `azr-executor` command line (`src/cli.rs`).

mod bindings {
    wasmtime::component::bindgen!({ path: "guest/wit", world: "guest" });
}

pub mod cli;
mod clock;
mod compiled;
mod error;
mod groups;
pub mod guest;
mod job;
mod memo;
mod metrics;
mod pool;
pub mod profile;
#[cfg(feature = "python")]
mod python;
mod runtime;
pub(crate) mod sandbox;
pub mod server;
mod work;
pub mod worker;

pub use error::{ExecutorError, Result};
pub use job::{Job, Limits, Mode, Outcome, Policy, Status, MAX_MEMORY_MB, MAX_RUNS, MAX_TEXT_BYTES, MIN_MEMORY_MB};
pub use memo::MemoStats;
pub use pool::{
    default_workers, Control, Executor, ExecutorConfig, Isolation, GROUP_SIZE_DEFAULT, MAX_WORKERS, MEMO_MB_DEFAULT,
};
pub use runtime::{runtime, Runtime};

//! `azr._executor`: the Rust executor for Python. The typed API (`Job`, `Outcome`, argument
//! checks) lives in `python/azr/executor/`; this layer moves tuples and releases the GIL for
//! the whole batch, taking it back only to report progress and check for Ctrl-C. It also defines
//! the executor's exceptions and exports the statuses, modes and limits, so that Python repeats
//! none of them (`azr/_executor.pyi` types them).

use crate::cli;
use crate::error;
use crate::guest::{GUEST_SHA256, WASMTIME_VERSION};
use crate::job::{Job, Limits, Mode, Policy, Status, MAX_MEMORY_MB, MAX_RUNS, MAX_TEXT_BYTES, MIN_MEMORY_MB};
use crate::pool::{default_workers, Control, Executor, ExecutorConfig, Isolation, GROUP_SIZE_DEFAULT, MAX_WORKERS};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use std::ffi::OsString;

pyo3::create_exception!(
    azr._executor,
    ExecutorError,
    PyRuntimeError,
    "Base of the executor's own errors (a program's failure is an outcome, never an exception)."
);
pyo3::create_exception!(azr._executor, GuestError, ExecutorError, "The sandbox guest could not be prepared.");
pyo3::create_exception!(
    azr._executor,
    InternalError,
    ExecutorError,
    "The executor's machinery failed (workers gone, a comparison it could not make)."
);
pyo3::create_exception!(
    azr._executor,
    CancelledError,
    ExecutorError,
    "A batch was stopped before all its jobs finished."
);
pyo3::create_exception!(
    azr._executor,
    RemoteExecutorError,
    ExecutorError,
    "A batch could not be run on any executor service host."
);

/// `InvalidJobError(ExecutorError, ValueError)`: made at import, since it has two bases.
static INVALID_JOB: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// (program, input, imports, expected, runs, policy, timeout_s, script)
type JobTuple = (String, String, String, Option<String>, u32, String, Option<f64>, bool);
/// (start_us, worker, queue_s, instantiate_s, expected_s, run_s, teardown_s, prepare_s)
type TimingsTuple = (u64, u32, f64, f64, f64, f64, f64, f64);
/// (status, output, error, elapsed_s, matches, exit_code, stderr, timings)
type OutcomeTuple = (
    &'static str,
    Option<String>,
    Option<String>,
    f64,
    Option<bool>,
    Option<i32>,
    Option<String>,
    Option<TimingsTuple>,
);

fn to_py(error: error::ExecutorError) -> PyErr {
    let message = error.to_string();
    match error {
        error::ExecutorError::InvalidJob { .. } | error::ExecutorError::InvalidConfig(_) => {
            Python::attach(|py| match INVALID_JOB.get(py) {
                Some(kind) => PyErr::from_type(kind.bind(py).clone(), message),
                None => PyValueError::new_err(message),
            })
        }
        error::ExecutorError::Guest(_) => GuestError::new_err(message),
        error::ExecutorError::Cancelled => CancelledError::new_err(message),
        error::ExecutorError::WorkersGone | error::ExecutorError::Internal(_) => InternalError::new_err(message),
    }
}

#[pyclass(frozen, name = "NativeExecutor", module = "azr._executor")]
struct NativeExecutor {
    inner: Executor,
}

#[pymethods]
impl NativeExecutor {
    /// `worker_command`: how to start a worker process (`None` runs sandboxes in threads).
    #[new]
    #[pyo3(signature = (*, workers, timeout_s, memory_mb, mode, max_output_bytes, group_size, worker_command, memo_mb))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        workers: usize,
        timeout_s: f64,
        memory_mb: u64,
        mode: &str,
        max_output_bytes: u32,
        group_size: usize,
        worker_command: Option<Vec<String>>,
        memo_mb: usize,
    ) -> PyResult<Self> {
        let limits = Limits::new(timeout_s, memory_mb, max_output_bytes).map_err(PyValueError::new_err)?;
        let mode: Mode = mode.parse().map_err(PyValueError::new_err)?;
        let isolation = match worker_command {
            Some(command) => Isolation::Processes(command.into_iter().map(OsString::from).collect()),
            None => Isolation::Threads,
        };
        let memo_bytes = memo_mb.saturating_mul(1 << 20);
        let config = ExecutorConfig { workers, limits, mode, group_size, isolation, memo_bytes };
        let inner = py.detach(|| Executor::new(config)).map_err(to_py)?;
        Ok(NativeExecutor { inner })
    }

    /// Run jobs and return outcome tuples in job order. `progress(done, total)` is called from
    /// this thread as jobs finish; an exception it raises (or Ctrl-C) stops the batch.
    #[pyo3(signature = (jobs, progress=None))]
    fn run(&self, py: Python<'_>, jobs: Vec<JobTuple>, progress: Option<Py<PyAny>>) -> PyResult<Vec<OutcomeTuple>> {
        let jobs: Vec<Job> = jobs
            .into_iter()
            .map(|(program, input, imports, expected, runs, policy, timeout_s, script)| {
                let policy = policy.parse().map_err(PyValueError::new_err)?;
                Ok(Job { program, input, imports, expected, runs, policy, timeout_s, script })
            })
            .collect::<PyResult<_>>()?;
        let mut failure: Option<PyErr> = None;
        let mut reported = usize::MAX;
        let result = py.detach(|| {
            self.inner.run_observed(jobs, &mut |done, total| {
                Python::attach(|py| {
                    let checked = py.check_signals().and_then(|()| match &progress {
                        Some(callback) if done != reported => callback.call1(py, (done, total)).map(drop),
                        _ => Ok(()),
                    });
                    reported = done;
                    match checked {
                        Ok(()) => Control::Continue,
                        Err(error) => {
                            failure = Some(error);
                            Control::Cancel
                        }
                    }
                })
            })
        });
        if let Some(error) = failure {
            return Err(error);
        }
        let outcomes = result.map_err(to_py)?;
        Ok(outcomes
            .into_iter()
            .map(|o| {
                let timings = o.timings.map(|t| {
                    (t.start_us, t.worker, t.queue_s, t.instantiate_s, t.expected_s, t.run_s, t.teardown_s, t.prepare_s)
                });
                (o.status.as_str(), o.output, o.error, o.elapsed_s, o.matches, o.exit_code, o.stderr, timings)
            })
            .collect())
    }

    /// Value equality of each pair of texts, as the judge compares (`InternalError` when the
    /// executor could not decide).
    fn equal(&self, py: Python<'_>, pairs: Vec<(String, String)>) -> PyResult<Vec<bool>> {
        py.detach(|| self.inner.equal(pairs)).map_err(to_py)
    }

    /// (hits, entries, bytes, budget bytes) of the strict-mode memo; zeros when there is none.
    fn memo_stats(&self) -> (u64, usize, usize, usize) {
        self.inner.memo_stats().map_or((0, 0, 0, 0), |s| (s.hits, s.entries, s.bytes, s.budget_bytes))
    }

    #[getter]
    fn workers(&self) -> usize {
        self.inner.config().workers
    }

    /// Process ids of the worker processes (empty when sandboxes run in threads).
    #[getter]
    fn worker_pids(&self) -> Vec<u32> {
        self.inner.worker_pids()
    }
}

/// The `azr-executor` command line, run in this process; returns its exit code.
#[pyfunction]
fn cli_main(py: Python<'_>, argv: Vec<String>) -> i32 {
    py.detach(|| cli::main(argv.into_iter().map(OsString::from), &|| Python::attach(|py| py.check_signals().is_err())))
}

#[pymodule]
fn _executor(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("ExecutorError", py.get_type::<ExecutorError>())?;
    module.add("GuestError", py.get_type::<GuestError>())?;
    module.add("InternalError", py.get_type::<InternalError>())?;
    module.add("CancelledError", py.get_type::<CancelledError>())?;
    module.add("RemoteExecutorError", py.get_type::<RemoteExecutorError>())?;
    let namespace = PyDict::new(py);
    namespace.set_item("__module__", "azr._executor")?;
    namespace.set_item("__doc__", "A job or a setting the executor cannot accept; also a ValueError.")?;
    let bases =
        PyTuple::new(py, [py.get_type::<ExecutorError>().into_any(), py.get_type::<PyValueError>().into_any()])?;
    let invalid = py.import("builtins")?.getattr("type")?.call1(("InvalidJobError", bases, namespace))?;
    let invalid = invalid.cast_into::<PyType>()?;
    module.add("InvalidJobError", &invalid)?;
    let _ = INVALID_JOB.set(py, invalid.unbind());
    module.add("STATUSES", PyTuple::new(py, Status::ALL.iter().map(|status| status.as_str()))?)?;
    module.add("MODES", PyTuple::new(py, [Mode::Strict.as_str(), Mode::Batch.as_str()])?)?;
    let policies = [Policy::Selfplay, Policy::Evaluation].map(|policy| policy.as_str());
    module.add("POLICIES", PyTuple::new(py, policies)?)?;
    module.add("MIN_MEMORY_MB", MIN_MEMORY_MB)?;
    module.add("MAX_MEMORY_MB", MAX_MEMORY_MB)?;
    module.add("MAX_TEXT_BYTES", MAX_TEXT_BYTES)?;
    module.add_class::<NativeExecutor>()?;
    module.add_function(wrap_pyfunction!(cli_main, module)?)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add("GUEST_SHA256", GUEST_SHA256)?;
    module.add("WASMTIME_VERSION", WASMTIME_VERSION)?;
    module.add("MAX_RUNS", MAX_RUNS)?;
    module.add("MAX_WORKERS", MAX_WORKERS)?;
    module.add("DEFAULT_WORKERS", default_workers())?;
    module.add("DEFAULT_GROUP_SIZE", GROUP_SIZE_DEFAULT)?;
    Ok(())
}

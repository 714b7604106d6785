//! `azr._executor`: the Rust executor for Python. The typed API (`Job`, `Outcome`, argument
//! checks) lives in `python/azr/executor.py`; this layer moves tuples and releases the GIL for
//! the whole batch, taking it back only to report progress and check for Ctrl-C.

use crate::cli;
use crate::error::ExecutorError;
use crate::guest::{GUEST_SHA256, WASMTIME_VERSION};
use crate::job::{Job, Limits, Mode, MAX_RUNS};
use crate::pool::{default_workers, Control, Executor, ExecutorConfig, Isolation, MAX_WORKERS};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::ffi::OsString;

/// (program, input, imports, expected, runs)
type JobTuple = (String, String, String, Option<String>, u32);
/// (status, output, error, elapsed_s, matches)
type OutcomeTuple = (&'static str, Option<String>, Option<String>, f64, Option<bool>);

fn to_py(error: ExecutorError) -> PyErr {
    match error {
        ExecutorError::InvalidJob { .. } | ExecutorError::InvalidConfig(_) => PyValueError::new_err(error.to_string()),
        ExecutorError::Guest(_) | ExecutorError::Cancelled | ExecutorError::WorkersGone => {
            PyRuntimeError::new_err(error.to_string())
        }
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
    #[pyo3(signature = (*, workers, timeout_s, memory_mb, mode, max_output_bytes, group_size, worker_command))]
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
    ) -> PyResult<Self> {
        let limits = Limits::new(timeout_s, memory_mb, max_output_bytes).map_err(PyValueError::new_err)?;
        let mode: Mode = mode.parse().map_err(PyValueError::new_err)?;
        let isolation = match worker_command {
            Some(command) => Isolation::Processes(command.into_iter().map(OsString::from).collect()),
            None => Isolation::Threads,
        };
        let config = ExecutorConfig { workers, limits, mode, group_size, isolation };
        let inner = py.detach(|| Executor::new(config)).map_err(to_py)?;
        Ok(NativeExecutor { inner })
    }

    /// Run jobs and return outcome tuples in job order. `progress(done, total)` is called from
    /// this thread as jobs finish; an exception it raises (or Ctrl-C) stops the batch.
    #[pyo3(signature = (jobs, progress=None))]
    fn run(&self, py: Python<'_>, jobs: Vec<JobTuple>, progress: Option<Py<PyAny>>) -> PyResult<Vec<OutcomeTuple>> {
        let jobs: Vec<Job> = jobs
            .into_iter()
            .map(|(program, input, imports, expected, runs)| Job { program, input, imports, expected, runs })
            .collect();
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
            .map(|outcome| (outcome.status.as_str(), outcome.output, outcome.error, outcome.elapsed_s, outcome.matches))
            .collect())
    }

    /// AZR value equality of each pair of repr texts, evaluated in sandboxes.
    fn equal(&self, py: Python<'_>, pairs: Vec<(String, String)>) -> PyResult<Vec<bool>> {
        py.detach(|| self.inner.equal(pairs)).map_err(to_py)
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
    module.add_class::<NativeExecutor>()?;
    module.add_function(wrap_pyfunction!(cli_main, module)?)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add("GUEST_SHA256", GUEST_SHA256)?;
    module.add("WASMTIME_VERSION", WASMTIME_VERSION)?;
    module.add("MAX_RUNS", MAX_RUNS)?;
    module.add("MAX_WORKERS", MAX_WORKERS)?;
    module.add("DEFAULT_WORKERS", default_workers())?;
    Ok(())
}

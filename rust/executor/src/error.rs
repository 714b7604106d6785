//! Errors of the executor itself. A program's own failure is never one of these: it is an
//! [`Outcome`](crate::Outcome) with a non-`ok` status.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ExecutorError {
    #[error("job {index}: {reason}")]
    InvalidJob { index: usize, reason: String },
    #[error("{0}")]
    InvalidConfig(String),
    #[error("the sandbox guest could not be prepared: {0}")]
    Guest(String),
    #[error("interrupted before all jobs finished")]
    Cancelled,
    #[error("the executor's worker threads stopped unexpectedly")]
    WorkersGone,
    #[error("the executor failed: {0}")]
    Internal(String),
}

pub type Result<T, E = ExecutorError> = std::result::Result<T, E>;

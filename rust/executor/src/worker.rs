//! Sandbox worker processes.
//!
//! A fresh sandbox per run is page-fault work: every instance copies the pages it writes. Threads
//! of one process share page tables, so each copied page interrupts the other cores to flush their
//! TLBs, and two threads on two cores ran strict mode only ~1.3x faster than one. Processes share
//! nothing of the kind and scale ~1.8x (docs/benchmarks.md). A crash in the runtime also ends one
//! worker rather than the caller, which is then told and gets a new worker.
//!
//! The parent talks to each worker over the worker's stdin and stdout in length-prefixed JSON
//! messages: first a [`Setup`], answered by `Ready`; then requests, each answered in turn.

use crate::job::{Job, Limits, Mode, Outcome};
use crate::runtime::runtime;
use crate::work;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::AtomicBool;

/// The largest message either side accepts.
const MAX_MESSAGE_BYTES: usize = 1 << 30;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Setup {
    pub limits: Limits,
    pub mode: Mode,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    Run(Vec<Job>),
    Equal(Vec<(String, String)>),
    Canonical(Vec<String>),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    Ready,
    Run(Vec<Outcome>),
    Equal(Vec<bool>),
    Canonical(Vec<Option<String>>),
    Failed(String),
}

fn write_message<T: Serialize>(output: &mut impl Write, message: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(message)?;
    let length = u32::try_from(bytes.len()).map_err(|_| io::Error::other("message larger than 4 GiB"))?;
    output.write_all(&length.to_le_bytes())?;
    output.write_all(&bytes)?;
    output.flush()
}

/// The next message, or `None` when the other side closed the stream between messages.
fn read_message<T: DeserializeOwned>(input: &mut impl Read) -> io::Result<Option<T>> {
    let mut length = [0u8; 4];
    match input.read_exact(&mut length) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_MESSAGE_BYTES {
        return Err(io::Error::other(format!("message of {length} bytes is over the limit")));
    }
    let mut bytes = vec![0; length];
    input.read_exact(&mut bytes)?;
    serde_json::from_slice(&bytes).map(Some).map_err(io::Error::other)
}

/// The worker's side (`azr-executor worker`): serve requests until the parent closes stdin.
pub fn serve(input: impl Read, output: impl Write) -> io::Result<()> {
    let mut input = BufReader::new(input);
    let mut output = BufWriter::new(output);
    let Some(setup) = read_message::<Setup>(&mut input)? else {
        return Ok(());
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(error) => return write_message(&mut output, &Response::Failed(error.to_string())),
    };
    write_message(&mut output, &Response::Ready)?;
    let never_cancelled = AtomicBool::new(false);
    while let Some(request) = read_message::<Request>(&mut input)? {
        let response = match request {
            Request::Run(jobs) => {
                Response::Run(work::run_jobs(runtime, setup.limits, setup.mode, &jobs, &never_cancelled))
            }
            Request::Equal(pairs) => match work::compare(runtime, setup.limits, &pairs) {
                Ok(values) => Response::Equal(values),
                Err(reason) => Response::Failed(reason),
            },
            Request::Canonical(texts) => match work::canonical_texts(runtime, setup.limits, &texts) {
                Ok(values) => Response::Canonical(values),
                Err(reason) => Response::Failed(reason),
            },
        };
        write_message(&mut output, &response)?;
    }
    Ok(())
}

/// The parent's handle on one worker process; a worker that died is replaced on the next request.
pub(crate) struct ProcessWorker {
    command: Vec<OsString>,
    setup: Setup,
    connection: Option<Connection>,
}

struct Connection {
    child: Child,
    input: BufWriter<ChildStdin>,
    output: BufReader<ChildStdout>,
}

impl ProcessWorker {
    /// Spawn the worker without waiting for it to be ready (see [`wait_ready`](Self::wait_ready)).
    pub fn spawn(command: Vec<OsString>, setup: Setup) -> Result<Self, String> {
        let mut worker = ProcessWorker { command, setup, connection: None };
        worker.connection = Some(worker.connect()?);
        Ok(worker)
    }

    fn connect(&self) -> Result<Connection, String> {
        let (program, args) = self.command.split_first().ok_or("the worker command is empty")?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the sandbox worker {:?}: {e}", self.command))?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the sandbox worker has no pipes".into());
        };
        let mut connection = Connection { child, input: BufWriter::new(input), output: BufReader::new(output) };
        write_message(&mut connection.input, &self.setup)
            .map_err(|e| connection.failure(&format!("could not be set up: {e}")))?;
        Ok(connection)
    }

    /// Wait until the worker has its runtime (on a machine's first use, it compiles the guest).
    pub fn wait_ready(&mut self) -> Result<(), String> {
        let connection = self.connection.as_mut().ok_or("the sandbox worker is not running")?;
        match read_message::<Response>(&mut connection.output) {
            Ok(Some(Response::Ready)) => Ok(()),
            Ok(Some(Response::Failed(reason))) => Err(reason),
            Ok(_) => Err(connection.failure("did not start")),
            Err(e) => Err(connection.failure(&format!("did not start: {e}"))),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.connection.as_ref().map(|connection| connection.child.id())
    }

    /// Send one request and wait for its answer. On failure the worker is dropped (and replaced
    /// on the next call); the error says what happened to it.
    pub fn call(&mut self, request: &Request) -> Result<Response, String> {
        if self.connection.is_none() {
            self.connection = Some(self.connect()?);
            self.wait_ready()?;
        }
        let connection = self.connection.as_mut().ok_or("the sandbox worker is not running")?;
        let answer = write_message(&mut connection.input, request)
            .and_then(|()| read_message::<Response>(&mut connection.output));
        match answer {
            Ok(Some(response)) => Ok(response),
            Ok(None) => Err(self.drop_connection("exited before answering")),
            Err(e) => Err(self.drop_connection(&format!("failed: {e}"))),
        }
    }

    fn drop_connection(&mut self, what: &str) -> String {
        match self.connection.take() {
            Some(mut connection) => connection.failure(what),
            None => format!("the sandbox worker {what}"),
        }
    }
}

impl Connection {
    /// Stop the child (if it still runs) and describe what became of it.
    fn failure(&mut self, what: &str) -> String {
        let _ = self.child.kill();
        let status = self.child.wait().map(|status| status.to_string()).unwrap_or_else(|e| e.to_string());
        format!("the sandbox worker process (pid {}) {what} ({status})", self.child.id())
    }
}

impl Drop for ProcessWorker {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            // Closing stdin ends the worker's loop; wait so that no zombie is left behind.
            let Connection { mut child, input, output } = connection;
            drop(input);
            drop(output);
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_end_cleanly() {
        let mut wire = Vec::new();
        write_message(&mut wire, &Request::Equal(vec![("1".into(), "1.0".into())])).unwrap();
        write_message(&mut wire, &Response::Equal(vec![true])).unwrap();
        let mut reader = wire.as_slice();
        assert!(
            matches!(read_message::<Request>(&mut reader).unwrap(), Some(Request::Equal(pairs)) if pairs.len() == 1)
        );
        assert!(
            matches!(read_message::<Response>(&mut reader).unwrap(), Some(Response::Equal(values)) if values == [true])
        );
        assert!(read_message::<Response>(&mut reader).unwrap().is_none());
    }

    #[test]
    fn broken_messages_are_errors() {
        let truncated = [10u8, 0, 0, 0, b'{'];
        assert!(read_message::<Response>(&mut truncated.as_slice()).is_err());
        let oversized = u32::MAX.to_le_bytes();
        assert!(read_message::<Response>(&mut oversized.as_slice())
            .unwrap_err()
            .to_string()
            .contains("over the limit"));
        let garbage = [2u8, 0, 0, 0, b'{', b'}'];
        assert!(read_message::<Response>(&mut garbage.as_slice()).is_err());
    }
}

//! `azr-executor serve`: the executor as an HTTP service.
//!
//! `POST /v1/run` and `POST /v1/equal` take JSON or msgpack bodies and answer in the same format;
//! `GET /v1/info`, `/healthz`, `/readyz` and `/metrics` (Prometheus) describe the service. The wire
//! format is documented in `docs/executor-protocol.md`. `POST /run_code` answers SandboxFusion's
//! API for Python (script mode), so its clients can switch by changing their endpoint.
//!
//! Back-pressure: the service admits at most `max_queue` jobs at once (queued or running); a request
//! that would exceed that is refused with `429` and `Retry-After`, never queued without bound.
//! SIGTERM or SIGINT stops accepting connections, lets in-flight requests finish, and exits 0.

use crate::error::ExecutorError;
use crate::guest::{GUEST_SHA256, WASMTIME_VERSION};
use crate::job::{Job, Outcome};
use crate::metrics::{Gauges, Metrics};
use crate::pool::{Executor, ExecutorConfig, Isolation};
use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;

/// Settings of the HTTP side of the service.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub host: String,
    pub port: u16,
    /// Jobs admitted at once, queued or running.
    pub max_queue: usize,
    pub max_body_bytes: usize,
    pub max_jobs_per_request: usize,
    /// Bearer token every `/v1/` request must carry, when set.
    pub token: Option<String>,
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

struct AppState {
    executor: Executor,
    config: ServeConfig,
    metrics: Metrics,
    admitted: AtomicUsize,
    inflight: AtomicUsize,
    draining: AtomicBool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Msgpack,
}

impl Format {
    fn of(headers: &HeaderMap) -> Result<Self, ApiError> {
        let value = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let media = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match media.as_str() {
            "application/json" => Ok(Format::Json),
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => Ok(Format::Msgpack),
            "" => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "no Content-Type: send application/json or application/msgpack",
            )),
            other => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("Content-Type {other} is not supported: send application/json or application/msgpack"),
            )),
        }
    }

    fn decode<T: for<'de> Deserialize<'de>>(self, body: &[u8]) -> Result<T, ApiError> {
        let malformed = |error: String| ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", error);
        match self {
            Format::Json => {
                serde_json::from_slice(body).map_err(|e| malformed(format!("the JSON body is malformed: {e}")))
            }
            Format::Msgpack => {
                rmp_serde::from_slice(body).map_err(|e| malformed(format!("the msgpack body is malformed: {e}")))
            }
        }
    }

    fn encode<T: Serialize>(self, value: &T) -> Response {
        let encoded = match self {
            Format::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
            Format::Msgpack => rmp_serde::to_vec_named(value).map_err(|e| e.to_string()),
        };
        match encoded {
            Ok(bytes) => {
                let content_type = if self == Format::Json { "application/json" } else { "application/msgpack" };
                ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
            }
            Err(error) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", error).into_response(),
        }
    }
}

/// An error answer: always a JSON body `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response =
            (self.status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[derive(Deserialize)]
struct RunRequest {
    jobs: Vec<Job>,
    /// Whether the outcomes carry their per-phase timings.
    #[serde(default)]
    timings: bool,
}

#[derive(Serialize)]
struct RunResponse {
    outcomes: Vec<Outcome>,
}

#[derive(Deserialize)]
struct EqualRequest {
    pairs: Vec<(String, String)>,
}

#[derive(Serialize)]
struct EqualResponse {
    equal: Vec<bool>,
}

/// Jobs counted against the queue until the request is answered.
struct Admission<'a> {
    admitted: &'a AtomicUsize,
    jobs: usize,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.admitted.fetch_sub(self.jobs, Ordering::AcqRel);
    }
}

impl AppState {
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.config.token else { return Ok(()) };
        let given =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(given) if bool::from(given.as_bytes().ct_eq(token.as_bytes())) => Ok(()),
            Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the bearer token is wrong")),
            None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "send Authorization: Bearer <token>")),
        }
    }

    fn authorize_token(&self, given: &str) -> Result<(), ApiError> {
        match &self.config.token {
            Some(token) if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) => {
                Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the token in the path is wrong"))
            }
            _ => Ok(()),
        }
    }

    fn admit(&self, jobs: usize) -> Result<Admission<'_>, ApiError> {
        let limit = self.config.max_queue;
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| (now + jobs <= limit).then_some(now + jobs))
            .map(|_| Admission { admitted: &self.admitted, jobs })
            .map_err(|now| {
                let mut error = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "busy",
                    format!("{now} jobs are queued or running, the limit is {limit}; retry later"),
                );
                error.retry_after = Some(1);
                error
            })
    }

    async fn read(&self, request: Request) -> Result<(Format, Bytes), ApiError> {
        let format = Format::of(request.headers())?;
        self.read_as(request, format).await
    }

    /// The body of a request in `format`, once the request is authorized: by its bearer token, or
    /// by the token in its path (`/t/<token>/...`).
    async fn read_as(&self, request: Request, format: Format) -> Result<(Format, Bytes), ApiError> {
        match request.uri().path().strip_prefix("/t/").and_then(|rest| rest.split('/').next()) {
            Some(token) => self.authorize_token(token)?,
            None => self.authorize(request.headers())?,
        }
        let limit = self.config.max_body_bytes;
        let body = axum::body::to_bytes(request.into_body(), limit).await.map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is larger than {limit} bytes"),
            )
        })?;
        Ok((format, body))
    }

    fn check_count(&self, count: usize, what: &str) -> Result<(), ApiError> {
        if count == 0 {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_job",
                format!("the request has no {what}"),
            ));
        }
        let most = self.config.max_jobs_per_request;
        if count > most {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_jobs",
                format!("{count} {what} in one request, the limit is {most}; split the batch"),
            ));
        }
        Ok(())
    }
}

fn executor_error(error: ExecutorError) -> ApiError {
    match error {
        ExecutorError::InvalidJob { .. } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_job", error.to_string())
        }
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", other.to_string()),
    }
}

async fn run(State(state): State<Arc<AppState>>, request: Request) -> Result<Response, ApiError> {
    let (format, body) = state.read(request).await?;
    let RunRequest { jobs, timings } = format.decode(&body)?;
    state.check_count(jobs.len(), "jobs")?;
    for (index, job) in jobs.iter().enumerate() {
        job.validate().map_err(|reason| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_job", format!("job {index}: {reason}"))
        })?;
    }
    let outcomes = execute(&state, jobs).await?;
    let outcomes = if timings { outcomes } else { outcomes.into_iter().map(Outcome::without_timings).collect() };
    Ok(format.encode(&RunResponse { outcomes }))
}

/// Run validated jobs once the queue admits them, off the async runtime; counted in the metrics.
async fn execute(state: &Arc<AppState>, jobs: Vec<Job>) -> Result<Vec<Outcome>, ApiError> {
    let _admission = state.admit(jobs.len())?;
    let worker = Arc::clone(state);
    let outcomes = tokio::task::spawn_blocking(move || worker.executor.run(jobs))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(executor_error)?;
    state.metrics.outcomes(&outcomes);
    Ok(outcomes)
}

async fn equal(State(state): State<Arc<AppState>>, request: Request) -> Result<Response, ApiError> {
    let (format, body) = state.read(request).await?;
    let EqualRequest { pairs } = format.decode(&body)?;
    state.check_count(pairs.len(), "pairs")?;
    let _admission = state.admit(pairs.len())?;
    let worker = Arc::clone(&state);
    let equal = tokio::task::spawn_blocking(move || worker.executor.equal(pairs))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(executor_error)?;
    Ok(format.encode(&EqualResponse { equal }))
}

/// SandboxFusion's `POST /run_code` request (its `RunCodeRequest`), for `language: "python"`.
#[derive(Deserialize)]
struct RunCodeRequest {
    code: String,
    language: String,
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default = "sandbox_fusion_timeout")]
    run_timeout: f64,
    #[serde(default)]
    files: std::collections::HashMap<String, Option<String>>,
    #[serde(default)]
    fetch_files: Vec<String>,
}

fn sandbox_fusion_timeout() -> f64 {
    10.0
}

/// SandboxFusion's `CommandRunResult`.
#[derive(Serialize)]
struct CommandRunResult {
    status: &'static str,
    execution_time: f64,
    return_code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// SandboxFusion's `RunCodeResponse`.
#[derive(Serialize)]
struct RunCodeResponse {
    status: &'static str,
    message: String,
    compile_result: Option<CommandRunResult>,
    run_result: Option<CommandRunResult>,
    executor_pod_name: Option<String>,
    files: std::collections::HashMap<String, String>,
}

impl RunCodeResponse {
    fn sandbox_error(message: impl Into<String>) -> Self {
        RunCodeResponse {
            status: "SandboxError",
            message: message.into(),
            compile_result: None,
            run_result: None,
            executor_pod_name: None,
            files: Default::default(),
        }
    }

    fn of(outcome: Outcome) -> Self {
        use crate::job::Status;
        let (run_status, return_code, stderr) = match outcome.status {
            Status::Ok => ("Finished", outcome.exit_code, outcome.stderr.unwrap_or_default()),
            Status::Timeout => ("TimeLimitExceeded", None, outcome.stderr.unwrap_or_default()),
            Status::Internal => return Self::sandbox_error(outcome.error.unwrap_or_default()),
            _ => {
                let why = format!("{}: {}", outcome.status, outcome.error.unwrap_or_default());
                ("Error", Some(1), format!("{}{why}\n", outcome.stderr.unwrap_or_default()))
            }
        };
        let success = run_status == "Finished" && return_code == Some(0);
        RunCodeResponse {
            status: if success { "Success" } else { "Failed" },
            message: String::new(),
            compile_result: None,
            run_result: Some(CommandRunResult {
                status: run_status,
                execution_time: outcome.elapsed_s,
                return_code,
                stdout: outcome.output.unwrap_or_default(),
                stderr,
            }),
            executor_pod_name: None,
            files: Default::default(),
        }
    }
}

/// `POST /run_code` (and `/t/<token>/run_code`, for clients that cannot send headers): one Python
/// program in script mode, in SandboxFusion's request and response shapes.
async fn run_code(State(state): State<Arc<AppState>>, request: Request) -> Result<Response, ApiError> {
    let (_, body) = state.read_as(request, Format::Json).await?;
    let RunCodeRequest { code, language, stdin, run_timeout, files, fetch_files } = Format::Json.decode(&body)?;
    let refusal = if language != "python" && language != "python3" {
        Some(format!("language '{language}' is not supported: azr-executor runs Python (\"python\") only"))
    } else if !files.is_empty() || !fetch_files.is_empty() {
        Some("files and fetch_files are not supported: the sandbox has no file system".to_string())
    } else if !(run_timeout.is_finite() && run_timeout > 0.0) {
        Some(format!("run_timeout must be a positive number of seconds, got {run_timeout}"))
    } else {
        None
    };
    if let Some(message) = refusal {
        return Ok(Format::Json.encode(&RunCodeResponse::sandbox_error(message)));
    }
    let mut job = Job::new(code, stdin.unwrap_or_default());
    job.script = true;
    job.timeout_s = Some(run_timeout.min(3600.0));
    job.validate().map_err(|reason| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_job", reason))?;
    let outcomes = execute(&state, vec![job]).await?;
    let response = outcomes
        .into_iter()
        .next()
        .map_or_else(|| RunCodeResponse::sandbox_error("the executor returned no outcome"), RunCodeResponse::of);
    Ok(Format::Json.encode(&response))
}

async fn info(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    state.authorize(&headers)?;
    let executor = state.executor.config();
    let body = serde_json::json!({
        "azr_executor": env!("CARGO_PKG_VERSION"),
        "wasmtime": WASMTIME_VERSION,
        "guest_sha256": GUEST_SHA256,
        "mode": executor.mode.as_str(),
        "workers": executor.workers,
        "isolation": if matches!(executor.isolation, Isolation::Threads) { "thread" } else { "process" },
        "limits": {
            "timeout_s": executor.limits.timeout.as_secs_f64(),
            "memory_mb": executor.limits.memory_bytes >> 20,
            "max_output_bytes": executor.limits.max_output_bytes,
            "max_body_bytes": state.config.max_body_bytes,
            "max_jobs_per_request": state.config.max_jobs_per_request,
            "max_queue": state.config.max_queue,
            "max_runs": crate::job::MAX_RUNS,
        },
        "formats": ["application/json", "application/msgpack"],
    });
    Ok(Format::Json.encode(&body))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        "ready\n".into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let gauges = Gauges {
        admitted_jobs: state.admitted.load(Ordering::Acquire),
        queued_tasks: state.executor.queued_tasks(),
        busy_workers: state.executor.busy_workers(),
        workers: state.executor.config().workers,
        inflight_requests: state.inflight.load(Ordering::Acquire),
        memo_hits: state.executor.memo_stats().map_or(0, |memo| memo.hits),
        memo_bytes: state.executor.memo_stats().map_or(0, |memo| memo.bytes),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render(&gauges)).into_response()
}

/// One log line and one metrics sample per request.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let length = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
    state.inflight.fetch_add(1, Ordering::AcqRel);
    let response = next.run(request).await;
    state.inflight.fetch_sub(1, Ordering::AcqRel);
    let seconds = started.elapsed().as_secs_f64();
    let endpoint = match path.as_str() {
        "/v1/run" | "/v1/equal" | "/v1/info" | "/healthz" | "/readyz" | "/metrics" | "/run_code" => path.as_str(),
        _ if path.ends_with("/run_code") => "/run_code",
        _ => "other",
    };
    state.metrics.request(endpoint, response.status().as_u16(), seconds);
    tracing::info!(%method, path, status = response.status().as_u16(), ms = seconds * 1e3, body_bytes = length, "request");
    response
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint: see GET /v1/info and docs/executor-protocol.md",
    )
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/run", post(run))
        .route("/v1/equal", post(equal))
        .route("/v1/info", get(info))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/run_code", post(run_code))
        .route("/t/{token}/run_code", post(run_code))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&state), observe))
        .with_state(state)
}

async fn shutdown_signal(state: Arc<AppState>) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    state.draining.store(true, Ordering::Release);
    tracing::info!("shutting down: finishing in-flight requests");
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AZR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second call (tests start several services in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Start the executor and serve until SIGTERM or SIGINT; returns once every in-flight request is answered.
pub fn serve(executor: ExecutorConfig, config: ServeConfig) -> anyhow::Result<()> {
    if config.max_jobs_per_request > config.max_queue {
        anyhow::bail!(
            "--max-jobs-per-request ({}) cannot exceed --max-queue ({}): such a request could never be admitted",
            config.max_jobs_per_request,
            config.max_queue
        );
    }
    init_logging(config.log_format);
    let executor = Executor::new(executor)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        // A (host, port) pair resolves names such as `localhost` and takes IPv6 addresses unbracketed.
        let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
        let bound = listener.local_addr()?;
        let state = Arc::new(AppState {
            executor,
            config,
            metrics: Metrics::default(),
            admitted: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
        });
        // The one line on stdout: tools (and tests) read the address from it.
        println!("azr-executor: listening on http://{bound}");
        tracing::info!(address = %bound, "listening");
        axum::serve(listener, router(Arc::clone(&state))).with_graceful_shutdown(shutdown_signal(state)).await?;
        tracing::info!("stopped");
        Ok::<(), anyhow::Error>(())
    })
}

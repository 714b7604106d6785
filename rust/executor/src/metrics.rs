//! The service's Prometheus metrics: requests by endpoint and code, jobs by status, latency
//! histograms, and gauges read at scrape time. Written out in the text exposition format.

use crate::job::{Outcome, Status, Timings};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

const REQUEST_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
const JOB_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0, 10.0];

#[derive(Clone, Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let separator = if labels.is_empty() { "" } else { "," };
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{separator}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Counts {
    requests: BTreeMap<(String, u16), u64>,
    request_seconds: BTreeMap<String, Histogram>,
    jobs: BTreeMap<Status, u64>,
    job_seconds: Option<Histogram>,
    /// Seconds per phase of a job (`Timings::PHASES`), measured on the host.
    phase_seconds: BTreeMap<&'static str, Histogram>,
    rejected_busy: u64,
}

/// What a scrape reports about the moment it is taken.
pub struct Gauges {
    pub admitted_jobs: usize,
    pub queued_tasks: usize,
    pub busy_workers: usize,
    pub workers: usize,
    pub inflight_requests: usize,
    /// Jobs answered from the strict-mode memo so far, and the bytes it holds.
    pub memo_hits: u64,
    pub memo_bytes: usize,
}

#[derive(Debug, Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
}

impl Metrics {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn request(&self, endpoint: &str, code: u16, seconds: f64) {
        let mut counts = self.counts();
        *counts.requests.entry((endpoint.to_string(), code)).or_default() += 1;
        counts
            .request_seconds
            .entry(endpoint.to_string())
            .or_insert_with(|| Histogram::new(&REQUEST_BUCKETS))
            .observe(seconds);
        if code == 429 {
            counts.rejected_busy += 1;
        }
    }

    pub fn outcomes(&self, outcomes: &[Outcome]) {
        let mut counts = self.counts();
        for outcome in outcomes {
            *counts.jobs.entry(outcome.status).or_default() += 1;
            counts.job_seconds.get_or_insert_with(|| Histogram::new(&JOB_BUCKETS)).observe(outcome.elapsed_s);
            if let Some(timings) = &outcome.timings {
                for (phase, seconds) in Timings::PHASES.iter().zip(timings.phases()) {
                    counts.phase_seconds.entry(phase).or_insert_with(|| Histogram::new(&JOB_BUCKETS)).observe(seconds);
                }
            }
        }
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let counts = self.counts();
        let mut out = String::new();
        out.push_str("# HELP azr_requests_total HTTP requests by endpoint and status code.\n");
        out.push_str("# TYPE azr_requests_total counter\n");
        for ((endpoint, code), count) in &counts.requests {
            let _ = writeln!(out, "azr_requests_total{{endpoint=\"{endpoint}\",code=\"{code}\"}} {count}");
        }
        out.push_str("# HELP azr_request_duration_seconds Time from request to response, by endpoint.\n");
        out.push_str("# TYPE azr_request_duration_seconds histogram\n");
        for (endpoint, histogram) in &counts.request_seconds {
            histogram.render(&mut out, "azr_request_duration_seconds", &format!("endpoint=\"{endpoint}\""));
        }
        out.push_str("# HELP azr_jobs_total Jobs run, by outcome status.\n# TYPE azr_jobs_total counter\n");
        for status in Status::ALL {
            let count = counts.jobs.get(&status).copied().unwrap_or(0);
            let _ = writeln!(out, "azr_jobs_total{{status=\"{status}\"}} {count}");
        }
        out.push_str("# HELP azr_job_duration_seconds Execution time of one job, all its runs.\n");
        out.push_str("# TYPE azr_job_duration_seconds histogram\n");
        counts.job_seconds.clone().unwrap_or_else(|| Histogram::new(&JOB_BUCKETS)).render(
            &mut out,
            "azr_job_duration_seconds",
            "",
        );
        out.push_str("# HELP azr_job_phase_seconds Seconds of one job per phase (queue, instantiate, expected, run, teardown, prepare).\n");
        out.push_str("# TYPE azr_job_phase_seconds histogram\n");
        for (phase, histogram) in &counts.phase_seconds {
            histogram.render(&mut out, "azr_job_phase_seconds", &format!("phase=\"{phase}\""));
        }
        let _ = writeln!(
            out,
            "# HELP azr_rejected_busy_total Requests refused with 429 because the queue was full.\n\
             # TYPE azr_rejected_busy_total counter\nazr_rejected_busy_total {}",
            counts.rejected_busy
        );
        let _ = writeln!(
            out,
            "# HELP azr_memo_hits_total Jobs answered from the memo of settled strict-mode runs.\n\
             # TYPE azr_memo_hits_total counter\nazr_memo_hits_total {}",
            gauges.memo_hits
        );
        for (name, help, value) in [
            ("azr_queue_jobs", "Jobs admitted and not yet answered (queued or running).", gauges.admitted_jobs),
            ("azr_queue_tasks", "Chunks of jobs waiting for a worker.", gauges.queued_tasks),
            ("azr_busy_workers", "Workers running a task.", gauges.busy_workers),
            ("azr_workers", "Workers of the executor.", gauges.workers),
            ("azr_inflight_requests", "Requests being handled.", gauges.inflight_requests),
            ("azr_memo_bytes", "Bytes of settled results the memo holds.", gauges.memo_bytes),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        out
    }
}

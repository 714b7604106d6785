//! Strict mode's memo of finished runs.
//!
//! A strict run is a pure function of what its sandbox sees: the program, input, imports, policy,
//! time limit and determinism salt (every run starts from the same snapshot, with clocks and
//! randomness seeded by the salt). So when a job's runs already happened, their result is what
//! running them again would give, and AZR's traffic repeats runs all the time: a proposal is
//! validated with two runs, then each solver answer of a deduction task is checked by running the
//! same program on the same input. Only the comparison with each answer's expected value is new,
//! and it is made by the guest's data reader, never by the program.
//!
//! Remembered: results the runs settled (`ok` after every run agreed, or a run that failed with a
//! verdict of its own). Never remembered: timeouts (they depend on the machine's speed),
//! `nondeterministic` and `internal` verdicts, memory failures, scripts, and anything from batch
//! mode (whose runs share an instance, so are not pure functions of the job).

use crate::job::{Job, Limits, Outcome, Status, MAX_RUNS};
use lru::LruCache;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Bytes counted for an entry beyond its texts: the key, the map's node, the fields.
const ENTRY_OVERHEAD_BYTES: usize = 160;

/// What identifies a run's result: SHA-256 over every field the sandbox sees, each one
/// length-prefixed so that no two different jobs share an encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key([u8; 32]);

impl Key {
    /// The key of `job`'s runs under `limits`, or `None` for a job the memo does not take.
    pub fn of(job: &Job, limits: Limits) -> Option<Key> {
        if job.script {
            return None;
        }
        let timeout =
            job.timeout_s.map_or(limits.timeout.as_nanos(), |s| std::time::Duration::from_secs_f64(s).as_nanos());
        let mut hash = Sha256::new();
        for field in
            [job.program.as_bytes(), job.input.as_bytes(), job.imports.as_bytes(), job.policy.as_str().as_bytes()]
        {
            hash.update((field.len() as u64).to_le_bytes());
            hash.update(field);
        }
        hash.update(timeout.to_le_bytes());
        hash.update(limits.memory_bytes.to_le_bytes());
        hash.update(limits.max_output_bytes.to_le_bytes());
        Some(Key(hash.finalize().into()))
    }
}

/// The settled result of a job's runs: the first run's fields, and how many runs agreed on it.
#[derive(Clone, Debug, PartialEq)]
pub struct Known {
    /// Jobs asking for at most this many runs are settled by this result.
    pub runs: u32,
    pub status: Status,
    pub output: Option<String>,
    pub error: Option<String>,
    /// The result's canonical text, which an expected value's is compared with.
    pub value: Option<String>,
}

impl Known {
    /// What `outcome` settled for the job it answers, if the memo may keep it.
    fn settled(job: &Job, outcome: &Outcome) -> Option<Known> {
        let runs = match outcome.status {
            Status::Ok => job.runs,
            // The first failed run ends a job, so it settles any number of runs.
            Status::Error | Status::Syntax | Status::Forbidden | Status::OutputLimit => MAX_RUNS,
            Status::Timeout | Status::Memory | Status::Nondeterministic | Status::Internal => return None,
        };
        Some(Known {
            runs,
            status: outcome.status,
            output: outcome.output.clone(),
            error: outcome.error.clone(),
            value: outcome.value.clone(),
        })
    }

    fn bytes(&self) -> usize {
        let text = |t: &Option<String>| t.as_ref().map_or(0, String::len);
        ENTRY_OVERHEAD_BYTES + text(&self.output) + text(&self.error) + text(&self.value)
    }

    /// The outcome of a job this result settles; `matches` is left for the caller to decide.
    pub fn outcome(&self) -> Outcome {
        Outcome {
            status: self.status,
            output: self.output.clone(),
            error: self.error.clone(),
            matches: None,
            elapsed_s: 0.0,
            exit_code: None,
            stderr: None,
            timings: None,
            value: None,
        }
    }
}

/// How the memo has served so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoStats {
    pub hits: u64,
    pub entries: usize,
    pub bytes: usize,
    pub budget_bytes: usize,
}

/// Settled results by key, least recently used dropped first once over the byte budget.
pub struct Memo {
    budget_bytes: usize,
    state: Mutex<State>,
    hits: AtomicU64,
}

struct State {
    entries: LruCache<Key, Known>,
    bytes: usize,
}

impl Memo {
    pub fn new(budget_bytes: usize) -> Self {
        Memo {
            budget_bytes,
            state: Mutex::new(State { entries: LruCache::unbounded(), bytes: 0 }),
            hits: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The settled result for `job`, when its runs already happened (as many of them, or more).
    pub fn recall(&self, key: Key, job: &Job) -> Option<Known> {
        let known = self.state().entries.get(&key).filter(|known| job.runs <= known.runs).cloned();
        if known.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        known
    }

    /// Keep what `outcome` settled for `job`, if it settled anything.
    pub fn remember(&self, key: Key, job: &Job, outcome: &Outcome) {
        let Some(known) = Known::settled(job, outcome) else { return };
        let bytes = known.bytes();
        if bytes > self.budget_bytes {
            return;
        }
        let mut state = self.state();
        if let Some(old) = state.entries.put(key, known) {
            state.bytes -= old.bytes();
        }
        state.bytes += bytes;
        while state.bytes > self.budget_bytes {
            match state.entries.pop_lru() {
                Some((_, dropped)) => state.bytes -= dropped.bytes(),
                None => break,
            }
        }
    }

    pub fn stats(&self) -> MemoStats {
        let state = self.state();
        MemoStats {
            hits: self.hits.load(Ordering::Relaxed),
            entries: state.entries.len(),
            bytes: state.bytes,
            budget_bytes: self.budget_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(output: &str) -> Outcome {
        let mut outcome = crate::work::failed(Status::Ok, String::new(), 0.1);
        outcome.error = None;
        outcome.output = Some(output.into());
        outcome.value = Some(format!("data:{output}"));
        outcome
    }

    #[test]
    fn keys_separate_every_field_the_sandbox_sees() {
        let limits = Limits::default();
        let base = Job::new("ab", "c");
        let key = |job: &Job| Key::of(job, limits).unwrap();
        let mut variants = vec![Job::new("a", "bc"), Job::new("ab", "c ")];
        variants.push(Job { imports: "import math".into(), ..base.clone() });
        variants.push(Job { policy: crate::job::Policy::Evaluation, ..base.clone() });
        variants.push(Job { timeout_s: Some(1.0), ..base.clone() });
        for variant in &variants {
            assert_ne!(key(variant), key(&base), "{variant:?}");
        }
        // What the sandbox does not see (the expected value, the number of runs) is not in the key.
        assert_eq!(key(&base.clone().with_expected("1").with_runs(2)), key(&base));
        let tighter = Limits { max_output_bytes: 10, ..limits };
        assert_ne!(Key::of(&base, tighter), Key::of(&base, limits));
        assert_eq!(Key::of(&Job { script: true, ..base }, limits), None);
    }

    #[test]
    fn only_settled_results_are_kept_and_only_for_as_many_runs() {
        let memo = Memo::new(1 << 20);
        let job = Job::new("p", "1").with_runs(2);
        let key = Key::of(&job, Limits::default()).unwrap();
        memo.remember(key, &job, &ok("1"));
        assert_eq!(memo.recall(key, &job.clone().with_runs(1)).unwrap().value.as_deref(), Some("data:1"));
        assert!(memo.recall(key, &job.clone().with_runs(3)).is_none());
        for status in [Status::Timeout, Status::Memory, Status::Nondeterministic, Status::Internal] {
            let other = Job::new("q", status.as_str());
            let key = Key::of(&other, Limits::default()).unwrap();
            memo.remember(key, &other, &crate::work::failed(status, "no".into(), 0.1));
            assert!(memo.recall(key, &other).is_none(), "{status}");
        }
        let failing = Job::new("r", "1");
        let key = Key::of(&failing, Limits::default()).unwrap();
        memo.remember(key, &failing, &crate::work::failed(Status::Error, "ZeroDivisionError".into(), 0.1));
        assert_eq!(memo.recall(key, &failing.with_runs(MAX_RUNS)).unwrap().status, Status::Error);
        assert_eq!(memo.stats().hits, 2);
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_budget_holds() {
        let memo = Memo::new(3 * (ENTRY_OVERHEAD_BYTES + 100 + 105));
        let jobs: Vec<Job> = (0..5).map(|i| Job::new("p", i.to_string())).collect();
        let keys: Vec<Key> = jobs.iter().map(|job| Key::of(job, Limits::default()).unwrap()).collect();
        let big = "x".repeat(100);
        for index in 0..3 {
            memo.remember(keys[index], &jobs[index], &ok(&big));
        }
        memo.recall(keys[0], &jobs[0]);
        memo.remember(keys[3], &jobs[3], &ok(&big));
        let kept: Vec<bool> = (0..4).map(|i| memo.recall(keys[i], &jobs[i]).is_some()).collect();
        assert_eq!(kept, [true, false, true, true]);
        assert!(memo.stats().bytes <= memo.stats().budget_bytes);
        memo.remember(keys[4], &jobs[4], &ok(&"y".repeat(1 << 20)));
        assert!(memo.recall(keys[4], &jobs[4]).is_none(), "larger than the whole budget");
    }
}

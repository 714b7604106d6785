//! How many jobs one instance runs in batch mode, from what jobs have cost so far.
//!
//! Large groups are what make batch mode fast: a group pays for its fresh instances once (one
//! per determinism pass, ~1 ms each with this guest) and compiles a program its jobs repeat once.
//! But a group is one worker's until it ends, so a group of expensive jobs holds that worker for
//! long while the others may idle (the end of a batch, a busy service), and a job waits behind
//! every job of its group. So a group holds at most `BUDGET_S` of measured work: cheap jobs fill
//! groups to the configured size, expensive ones get few to a group (which also shares
//! interpreter state among fewer jobs).

use crate::job::Outcome;

/// The work one group may hold, in seconds of the jobs' measured run time.
const BUDGET_S: f64 = 1.0;
/// How much of the past the estimate keeps at each new batch (so it follows a workload that
/// changes, while one small batch does not swing it).
const DECAY: f64 = 0.5;

/// Seconds of work measured over the batch-mode jobs run so far, decayed at each new batch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GroupCost {
    /// Running jobs and reading their expected values (instances are not work: they are what
    /// a large group saves).
    work_s: f64,
    /// Jobs that work ran.
    jobs: f64,
}

impl GroupCost {
    /// Add a batch's outcomes (their timings).
    pub fn add(&mut self, outcomes: &[&Outcome]) {
        let (mut work_s, mut jobs) = (0.0, 0.0);
        for timings in outcomes.iter().filter_map(|outcome| outcome.timings.as_ref()) {
            work_s += timings.run_s + timings.expected_s;
            jobs += 1.0;
        }
        if jobs == 0.0 {
            return;
        }
        self.work_s = self.work_s * DECAY + work_s;
        self.jobs = self.jobs * DECAY + jobs;
    }

    /// Jobs for a group: as many as `BUDGET_S` of work holds at the measured seconds a job, at
    /// least one and at most `most`; `most` until something was measured.
    pub fn group_size(&self, most: usize) -> usize {
        if self.jobs == 0.0 || self.work_s <= 0.0 {
            return most;
        }
        let fits = (BUDGET_S * self.jobs / self.work_s).floor();
        if fits >= most as f64 {
            most
        } else {
            // `fits` is finite, below `most` and at least 0 here.
            (fits as usize).max(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Status, Timings};

    /// A batch of `jobs` outcomes whose runs took `job_s` seconds each, the first `instance_s`
    /// to make its instance.
    fn batch(cost: &mut GroupCost, jobs: usize, job_s: f64, instance_s: f64) {
        let outcomes: Vec<Outcome> = (0..jobs)
            .map(|index| {
                let mut outcome = crate::work::failed(Status::Ok, String::new(), 0.0);
                let instantiate_s = if index == 0 { instance_s } else { 0.0 };
                outcome.timings = Some(Timings { instantiate_s, run_s: job_s, ..Timings::default() });
                outcome
            })
            .collect();
        cost.add(&outcomes.iter().collect::<Vec<_>>());
    }

    #[test]
    fn nothing_measured_gives_the_most() {
        assert_eq!(GroupCost::default().group_size(256), 256);
    }

    #[test]
    fn cheap_jobs_fill_groups_and_expensive_ones_get_few_to_a_group() {
        let mut cheap = GroupCost::default();
        batch(&mut cheap, 256, 0.000_3, 0.5);
        assert_eq!(cheap.group_size(256), 256, "instances are not work");
        assert_eq!(cheap.group_size(10_000), 3333);

        let mut expensive = GroupCost::default();
        batch(&mut expensive, 64, 0.045, 0.001);
        assert_eq!(expensive.group_size(256), 22);
        let mut slower_than_the_budget = GroupCost::default();
        batch(&mut slower_than_the_budget, 8, 2.5, 0.001);
        assert_eq!(slower_than_the_budget.group_size(256), 1);
    }

    #[test]
    fn the_estimate_follows_a_workload_that_changes() {
        let mut cost = GroupCost::default();
        batch(&mut cost, 256, 0.045, 0.001);
        assert_eq!(cost.group_size(256), 22);
        for _ in 0..10 {
            batch(&mut cost, 256, 0.000_3, 0.001);
        }
        assert_eq!(cost.group_size(256), 256);
    }

    #[test]
    fn an_empty_batch_changes_nothing() {
        let mut cost = GroupCost::default();
        batch(&mut cost, 64, 0.045, 0.001);
        let before = cost;
        cost.add(&[]);
        assert_eq!(cost, before);
    }
}

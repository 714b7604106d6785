//! Strict mode's cache of compiled programs, per worker.
//!
//! The first run of a program compiles and checks it in its fresh instance before any program ran
//! there (the guest's `compile`), and the marshalled code is kept here by content; every later run
//! of the same program under the same policy — validation's second run, the checks of an abduction
//! task's answers, an induction task's inputs — loads it instead of compiling again. The bytes stay
//! on the host, so nothing a program does reaches the code later runs get; each run unmarshals its
//! own code object. A run that loads its code finds the heap laid out a little differently from one
//! that compiled it there, so a result that shows a memory address depends on which happened: the
//! determinism check (salted heap layouts) refuses such programs as proposals already.

use crate::job::Job;
use lru::LruCache;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::rc::Rc;

/// Bytes of compiled code one worker keeps.
const BUDGET_BYTES: usize = 16 << 20;
/// Bytes counted per entry beyond its code.
const ENTRY_OVERHEAD_BYTES: usize = 96;

/// What the guest said of a program: its code, or `None` when it did not compile or was refused.
pub type Compiled = Option<Rc<[u8]>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key([u8; 32]);

impl Key {
    /// The key of what `compile` depends on: the imports, the program and the policy.
    pub fn of(job: &Job) -> Option<Key> {
        if job.script {
            return None;
        }
        let mut hash = Sha256::new();
        for field in [job.imports.as_bytes(), job.program.as_bytes(), job.policy.as_str().as_bytes()] {
            hash.update((field.len() as u64).to_le_bytes());
            hash.update(field);
        }
        Some(Key(hash.finalize().into()))
    }
}

struct Cache {
    entries: LruCache<Key, Compiled>,
    bytes: usize,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache { entries: LruCache::unbounded(), bytes: 0 });
}

fn size(compiled: &Compiled) -> usize {
    ENTRY_OVERHEAD_BYTES + compiled.as_ref().map_or(0, |code| code.len())
}

/// What this worker knows of the program behind `key`, if anything.
pub fn recall(key: Key) -> Option<Compiled> {
    CACHE.with(|cache| cache.borrow_mut().entries.get(&key).cloned())
}

pub fn remember(key: Key, compiled: Compiled) {
    let bytes = size(&compiled);
    if bytes > BUDGET_BYTES {
        return;
    }
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(old) = cache.entries.put(key, compiled) {
            cache.bytes -= size(&old);
        }
        cache.bytes += bytes;
        while cache.bytes > BUDGET_BYTES {
            match cache.entries.pop_lru() {
                Some((_, dropped)) => cache.bytes -= size(&dropped),
                None => break,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_imports_program_and_policy_but_not_the_input() {
        let base = Job::new("def f(a):\n    return a", "1");
        let key = |job: &Job| Key::of(job).unwrap();
        assert_eq!(key(&Job { input: "2".into(), ..base.clone() }), key(&base));
        assert_ne!(key(&Job { imports: "import math".into(), ..base.clone() }), key(&base));
        assert_ne!(key(&Job { policy: crate::job::Policy::Evaluation, ..base.clone() }), key(&base));
        let moved = Job { imports: "def f(a):".into(), program: "\n    return a".into(), ..base.clone() };
        assert_ne!(key(&moved), key(&base));
        assert_eq!(Key::of(&Job { script: true, ..base }), None);
    }

    #[test]
    fn what_is_remembered_is_recalled_until_the_budget_pushes_it_out() {
        let job = |n: usize| Job::new(format!("def f(a):\n    return {n}"), "1");
        remember(Key::of(&job(0)).unwrap(), Some(Rc::from(vec![1u8, 2, 3])));
        remember(Key::of(&job(1)).unwrap(), None);
        assert_eq!(recall(Key::of(&job(0)).unwrap()).unwrap().as_deref(), Some(&[1u8, 2, 3][..]));
        assert_eq!(recall(Key::of(&job(1)).unwrap()), Some(None));
        assert_eq!(recall(Key::of(&job(2)).unwrap()), None);
        for n in 3..40 {
            remember(Key::of(&job(n)).unwrap(), Some(Rc::from(vec![0u8; 1 << 20])));
        }
        assert!(recall(Key::of(&job(0)).unwrap()).is_none(), "pushed out by newer code");
        CACHE.with(|cache| assert!(cache.borrow().bytes <= BUDGET_BYTES));
    }
}

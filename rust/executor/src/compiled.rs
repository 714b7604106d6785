//! Strict mode's compiled programs, per worker: compiled apart, kept by content.
//!
//! A program is compiled and checked (the guest's `compile`) in an instance of its own that the
//! worker keeps for compiling and where no program ever runs, and the marshalled code is kept here
//! by content; every run of the same program under the same policy — both runs of a validation,
//! the checks of an abduction task's answers, an induction task's inputs — loads it instead of
//! compiling again. Compiling only reads source, so the compiling instance's history cannot change
//! what it produces (`compile` may differ only in marshal's sharing flags, never in the code). The
//! bytes stay on the host, so nothing a program does reaches the code later runs get; each run
//! unmarshals its own code object.
//!
//! Compiling apart also keeps the determinism check exact: every run of a job now meets the same
//! heap (a fresh instance, then the same code loaded), differing only by its salt's spacers. When
//! run 0 compiled in its own instance and run 1 loaded the code, the blocks compiling left on the
//! allocator's free lists could give run 1 the address run 0 had — in one of 14 guest builds tried,
//! `repr(A())` passed two runs as deterministic.

use crate::job::{Job, Limits};
use crate::runtime::Runtime;
use crate::sandbox::Sandbox;
use lru::LruCache;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::rc::Rc;

/// Bytes of compiled code one worker keeps.
const BUDGET_BYTES: usize = 16 << 20;
/// Bytes counted per entry beyond its code.
const ENTRY_OVERHEAD_BYTES: usize = 96;
/// Programs one compiling instance compiles before a fresh one replaces it, which bounds what
/// its interned names and the guest's own cache of checked programs hold.
const COMPILES_PER_INSTANCE: u32 = 512;

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

/// The instance a worker compiles in, made for `limits`, and how many programs it compiled.
struct Compiler {
    limits: Limits,
    sandbox: Sandbox<'static>,
    compiled: u32,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache { entries: LruCache::unbounded(), bytes: 0 });
    static COMPILER: RefCell<Option<Compiler>> = const { RefCell::new(None) };
}

/// The code of `job`'s program: from this worker's cache, or compiled now in its compiling
/// instance and kept. `None` when the run should compile it itself: a script, a program that does
/// not compile or is refused (the run says why), or a compile call that failed (its instance is
/// replaced, and nothing is kept, so the run meets the failure itself).
pub fn code_of(runtime: &'static Runtime, limits: Limits, job: &Job) -> Compiled {
    let key = Key::of(job)?;
    if let Some(known) = recall(key) {
        return known;
    }
    let code: Compiled = compile_apart(runtime, limits, job)?.map(Rc::from);
    remember(key, code.clone());
    code
}

/// What the guest's `compile` said of `job` in the compiling instance; `None` when the call
/// failed or no instance could be made.
fn compile_apart(runtime: &'static Runtime, limits: Limits, job: &Job) -> Option<Option<Vec<u8>>> {
    COMPILER.with(|compiler| {
        let mut compiler = compiler.borrow_mut();
        let usable = compiler.take().filter(|c| c.limits == limits && c.compiled < COMPILES_PER_INSTANCE);
        let mut current = match usable {
            Some(current) => current,
            None => Compiler { limits, sandbox: Sandbox::new(runtime, limits, 0).ok()?, compiled: 0 },
        };
        let said = current.sandbox.compile(job).ok()?;
        current.compiled += 1;
        *compiler = Some(current);
        Some(said)
    })
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

    fn compiled_by_this_worker() -> Option<u32> {
        COMPILER.with(|compiler| compiler.borrow().as_ref().map(|compiler| compiler.compiled))
    }

    #[test]
    fn a_program_compiles_once_apart_and_its_code_runs_in_a_fresh_instance() {
        let runtime = crate::runtime::runtime().unwrap();
        let limits = Limits::default();
        let job = Job::new("def f(a):\n    return a * 2", "3");
        let code = code_of(runtime, limits, &job).expect("compiles");
        let again = code_of(runtime, limits, &Job { input: "4".into(), ..job.clone() }).expect("kept");
        assert!(Rc::ptr_eq(&code, &again), "the second job loads the kept code");
        assert_eq!(compiled_by_this_worker(), Some(1));
        let run = Sandbox::new(runtime, limits, 0).unwrap().run(&job, false, Some(&code));
        assert_eq!(run.output.as_deref(), Some("6"));

        // A refused program is remembered as such; its runs compile it themselves and say why.
        let refused = Job::new("import os\ndef f(a):\n    return 1", "1");
        assert_eq!(code_of(runtime, limits, &refused), None);
        assert_eq!(recall(Key::of(&refused).unwrap()), Some(None));
        assert_eq!(compiled_by_this_worker(), Some(2));

        // Other limits get an instance of their own.
        let tighter = Limits::new(1.0, 64, 1 << 10).unwrap();
        code_of(runtime, tighter, &Job::new("def f(a):\n    return -a", "1")).expect("compiles");
        assert_eq!(compiled_by_this_worker(), Some(1));
    }

    #[test]
    fn what_one_program_compiles_to_does_not_depend_on_what_was_compiled_before() {
        let runtime = crate::runtime::runtime().unwrap();
        let limits = Limits::default();
        let program = Job::new("def f(a):\n    name = 'shared'\n    return [name, a, 10**20]", "1");
        let alone = compile_apart(runtime, limits, &program).flatten().expect("compiles");
        COMPILER.with(|compiler| compiler.borrow_mut().take());
        // Programs that could leave something behind in the compiling instance: the same names and
        // constants, a refused import, a syntax error, deep nesting, many new names.
        let before = [
            "name = 'shared'\nshared = 10**20\ndef f(a):\n    return name",
            "import os\ndef f(a):\n    return os.getcwd()",
            "def f(a:\n    return",
            &format!("def f(a):\n    return {}a{}", "(".repeat(150), ")".repeat(150)),
            &format!("def f(a):\n    return [{}]", (0..2000).map(|i| format!("'n{i}'")).collect::<Vec<_>>().join(", ")),
        ];
        for source in before {
            compile_apart(runtime, limits, &Job::new(source, "1")).expect("the call returns");
        }
        let after = compile_apart(runtime, limits, &program).flatten().expect("compiles");
        assert_eq!(compiled_by_this_worker(), Some(before.len() as u32 + 1), "one compiling instance throughout");
        assert_eq!(after, alone);
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

//! The executor end to end, in threads and in worker processes (this crate's own binary).

use azr_executor::{Executor, ExecutorConfig, Isolation, Job, Limits, Mode, Status};

fn executor(isolation: Isolation, mode: Mode) -> Executor {
    let limits = Limits::new(2.0, 128, 1 << 16).unwrap();
    Executor::new(ExecutorConfig { workers: 2, limits, mode, group_size: 8, isolation, ..ExecutorConfig::default() })
        .unwrap()
}

fn processes() -> Isolation {
    Isolation::Processes(vec![env!("CARGO_BIN_EXE_azr-executor").into(), "worker".into()])
}

fn verdicts(executor: &Executor) -> Vec<(Status, Option<String>)> {
    let jobs = vec![
        Job::new("def f(a):\n    return a", "'Hello world'").with_runs(2),
        Job::new("def f(a):\n    while True:\n        pass", "1"),
        Job::new("def f(a):\n    return [0] * 10**8", "1"),
        Job::new("import os\ndef f(a):\n    return 1", "1"),
        Job::new("def f(a):\n    return id(object())", "1").with_runs(2),
        Job::new("def f(a, b):\n    return a * b", "6, 7").with_expected("42"),
    ];
    executor.run(jobs).unwrap().into_iter().map(|o| (o.status, o.output)).collect()
}

#[test]
fn threads_and_processes_give_the_same_verdicts() {
    let expected = vec![
        (Status::Ok, Some("'Hello world'".to_string())),
        (Status::Timeout, None),
        (Status::Memory, None),
        (Status::Forbidden, None),
        (Status::Nondeterministic, None),
        (Status::Ok, Some("42".to_string())),
    ];
    for isolation in [Isolation::Threads, processes()] {
        for mode in [Mode::Strict, Mode::Batch] {
            assert_eq!(verdicts(&executor(isolation.clone(), mode)), expected, "{isolation:?} {mode:?}");
        }
    }
}

#[test]
fn equal_compares_values() {
    let executor = executor(processes(), Mode::Strict);
    let pairs = vec![("[1, 2]".into(), "[1,2]".into()), ("{1, 2}".into(), "{2, 1}".into()), ("1".into(), "'1'".into())];
    assert_eq!(executor.equal(pairs).unwrap(), [true, true, false]);
}

#[test]
fn bad_settings_and_jobs_are_refused() {
    let zero = ExecutorConfig { workers: 0, ..ExecutorConfig::default() };
    assert!(Executor::new(zero).is_err());
    let executor = executor(Isolation::Threads, Mode::Strict);
    let error = executor.run(vec![Job::new("p", "1"), Job::new("p", "1").with_runs(99)]).unwrap_err();
    assert_eq!(error.to_string(), "job 1: runs must be between 1 and 16, got 99");
}

#[test]
fn a_missing_worker_program_is_a_clear_error() {
    let limits = Limits::default();
    let config = ExecutorConfig {
        workers: 1,
        limits,
        mode: Mode::Strict,
        group_size: 8,
        isolation: Isolation::Processes(vec!["/nonexistent/azr-executor".into(), "worker".into()]),
        ..ExecutorConfig::default()
    };
    let error = Executor::new(config).err().expect("no such program").to_string();
    assert!(error.contains("cannot start the sandbox worker"), "{error}");
}

#[test]
fn answers_are_read_as_data_and_judged_on_the_host() {
    let program = "def f(a):\n    return sorted(a)[::-1]";
    for (isolation, mode) in [(Isolation::Threads, Mode::Strict), (processes(), Mode::Batch)] {
        let executor = executor(isolation, mode);
        let jobs = vec![
            Job::new(program, "[1, 2, 3]").with_expected(" [3,2,1] "),
            Job::new(program, "[1, 2, 3]").with_expected("f([1, 2, 3])"),
            Job::new(program, "[1, 2, 3]").with_expected("(3, 2, 1)"),
            Job::new(program, "[1, 2, 3]").with_expected("9 ** 9 ** 9"),
            Job::new(program, "(g := [1])").with_expected("[1]"),
        ];
        let verdicts: Vec<_> = executor.run(jobs).unwrap().into_iter().map(|o| (o.status, o.matches)).collect();
        assert_eq!(
            verdicts,
            [
                (Status::Ok, Some(true)),
                (Status::Ok, Some(false)),
                (Status::Ok, Some(false)),
                (Status::Ok, Some(false)),
                (Status::Forbidden, None),
            ],
            "{mode:?}"
        );
    }
}

#[test]
fn checks_of_a_validated_program_come_from_the_memo_in_threads_and_processes() {
    let program = "def f(xs):\n    return sorted(set(xs))";
    for isolation in [Isolation::Threads, processes()] {
        let executor = executor(isolation, Mode::Strict);
        let [valid] = executor.run(vec![Job::new(program, "[2, 1, 2]").with_runs(2)]).unwrap().try_into().unwrap();
        assert_eq!((valid.status, valid.output.as_deref()), (Status::Ok, Some("[1, 2]")));
        let answers = ["[1, 2]", "[1,2]", "[2, 1]"];
        let checks = answers.iter().map(|answer| Job::new(program, "[2, 1, 2]").with_expected(*answer)).collect();
        let outcomes = executor.run(checks).unwrap();
        let matches: Vec<Option<bool>> = outcomes.iter().map(|o| o.matches).collect();
        assert_eq!(matches, [Some(true), Some(true), Some(false)]);
        assert!(outcomes.iter().all(|o| o.value.is_none()), "the canonical text stays inside the executor");
        assert_eq!(executor.memo_stats().unwrap().hits, 3);
    }
}

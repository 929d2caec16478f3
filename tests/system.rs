//! System tests under a real systemd (PID 1 of a container, see `guest/`).

mod common;
mod guest;

use std::path::PathBuf;

use common::*;
use guest::Guest;

/// The newest build of the integration test binary `name` (beside this one).
fn test_binary(name: &str) -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    std::fs::read_dir(&deps)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let file = p.file_name().unwrap().to_string_lossy();
            file.starts_with(&format!("{name}-")) && !file.contains('.')
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!(
                "no {name} test binary in {}: build the tests first",
                deps.display()
            )
        })
}

#[test]
fn the_job_tests_pass_with_jobs_as_transient_units() {
    let repo = repo();
    let guest = Guest::boot("jobs", &[&repo]);
    let binary = test_binary("jobs");
    let run = guest.run(&[
        "env",
        "PXT_EXPECT_BACKEND=systemd",
        binary.to_str().unwrap(),
        "--test-threads=2",
    ]);
    println!("{}", run.stdout);
    assert_eq!(
        run.code, 0,
        "the job tests failed under systemd:\n{}\n{}",
        run.stdout, run.stderr
    );
    assert!(run.stdout.contains("test result: ok."), "{}", run.stdout);
}

//! Jobs run as the proxy user through a real identity switch: identity, environment,
//! visibility across logins, revocation, limits, restart, audit and bad input.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use common::*;

const NO_SUCH_JOB: &str = "org.proxyuserd1.Error.NoSuchJob";
const INVALID_ARGS: &str = "org.freedesktop.DBus.Error.InvalidArgs";

fn jobs(env: &Env, user: &str) -> Vec<serde_json::Value> {
    env.ctl_json(user, &["jobs"]).as_array().unwrap().clone()
}

fn job<'a>(list: &'a [serde_json::Value], id: &str) -> Option<&'a serde_json::Value> {
    list.iter().find(|j| j["id"] == id)
}

fn detach(env: &Env, user: &str, argv: &[&str]) -> String {
    let mut args = vec!["exec", "--detach", "--"];
    args.extend_from_slice(argv);
    env.ctl_ok(user, &args).trim().to_string()
}

#[test]
fn a_job_runs_as_the_proxy_with_all_its_groups_and_a_clean_environment() {
    let env = Env::with(
        "jobid",
        "[exec]\nenv_keep = [\"PXT_KEEP\", \"LANG\"]\n",
        &[("10-base.toml", BASE_RULES)],
    );
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let script = "id; echo cwd=$(pwd); echo umask=$(umask); env | sort; \
                  if read line; then echo stdin=data; else echo stdin=eof; fi";
    let out = env.ctl_env(
        ALICE,
        &[
            "exec",
            "--env",
            "PXT_KEEP=kept",
            "--",
            "/bin/sh",
            "-c",
            script,
        ],
        &[("PXT_SECRET", "hunter2"), ("LANG", "C.UTF-8")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !out.stderr.contains("warning"),
        "PXT_KEEP is kept: {}",
        out.stderr
    );
    let lines: Vec<&str> = out.stdout.lines().collect();

    // uid, gid and every supplementary group of etl, as `id` reports them for etl.
    let expected_id = std::process::Command::new("id").arg(ETL).output().unwrap();
    assert_eq!(
        lines[0],
        String::from_utf8_lossy(&expected_id.stdout).trim()
    );
    assert!(
        lines[0].contains("pxt-extra1") && lines[0].contains("pxt-extra2"),
        "{}",
        lines[0]
    );
    let home = nix::unistd::User::from_name(ETL).unwrap().unwrap().dir;
    // The job starts where the caller is (`/` for the harness's commands), as sudo.
    assert_eq!(lines[1], "cwd=/");
    assert_eq!(lines[2], "umask=0077");
    assert_eq!(*lines.last().unwrap(), "stdin=eof");

    let vars: BTreeMap<&str, &str> = lines[3..lines.len() - 1]
        .iter()
        .filter_map(|l| l.split_once('='))
        .collect();
    let expected: BTreeMap<&str, &str> = [
        ("HOME", home.to_str().unwrap()),
        ("LANG", "C.UTF-8"),
        ("LOGNAME", ETL),
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("PROXYUSERD_LOGIN_USER", ALICE),
        ("PWD", "/"),
        ("PXT_KEEP", "kept"),
        ("SHELL", "/bin/sh"),
        ("USER", ETL),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        vars, expected,
        "exactly the clean environment (PWD is set by sh)"
    );

    // The backend the environment expects: transient units under systemd (the system
    // tests run this suite in a guest with PXT_EXPECT_BACKEND=systemd), else a fork.
    let cgroup = env.ctl_ok(ALICE, &["exec", "--", "/bin/cat", "/proc/self/cgroup"]);
    match std::env::var("PXT_EXPECT_BACKEND").as_deref() {
        Ok("systemd") => assert!(
            cgroup.contains("/proxyuserd.slice/proxyuserd-pxt\\x2detl.slice/proxyuserd-job-"),
            "{cgroup}"
        ),
        _ => assert!(!cgroup.contains("proxyuserd-job-"), "{cgroup}"),
    }

    // cwd as given.
    let out = env.ctl_ok(ALICE, &["exec", "--cwd", "/tmp", "--", "/bin/pwd"]);
    assert_eq!(out.trim(), "/tmp");
    // A cwd etl may not enter is refused as etl would be refused.
    let out = env.ctl(ALICE, &["exec", "--cwd", "/root", "--", "/bin/true"]);
    assert_eq!(out.error_name(), Some(INVALID_ARGS), "{}", out.stderr);
    assert!(
        out.stderr.contains("Permission denied")
            || out.stderr.contains("cannot enter the working directory"),
        "{}",
        out.stderr
    );
    // Exit codes come through like sudo's.
    assert_eq!(
        env.ctl(ALICE, &["exec", "--", "/bin/sh", "-c", "exit 7"])
            .code,
        7
    );
}

#[test]
fn proxying_logins_share_the_proxy_users_jobs_and_others_do_not() {
    let env = Env::start("jobshare");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    env.ctl_ok(BOB, &["proxy", "set", ETL]);
    let id = detach(&env, ALICE, &["/bin/echo", "hello from alice"]);
    assert!(job(&jobs(&env, ALICE), &id).is_some());
    eventually("the job ends", || {
        jobs(&env, ALICE)
            .iter()
            .any(|j| j["id"] == id && j["state"] == "exited")
    });

    // bob, proxying to etl too, sees alice's job and downloads its result.
    let bobs = jobs(&env, BOB);
    let seen = job(&bobs, &id).expect("bob sees alice's job");
    assert_eq!(seen["login"], ALICE);
    assert_eq!(seen["run_as"], ETL);
    assert_eq!(seen["exit_code"], 0);
    assert_eq!(env.ctl_ok(BOB, &["result", &id]), "hello from alice\n");

    // carol, without a proxy, neither lists nor opens it.
    assert!(job(&jobs(&env, CAROL), &id).is_none());
    // Another user's job gets the answer of a job that does not exist.
    let err = env.ctl_err(CAROL, &["result", &id], NO_SUCH_JOB);
    assert!(err.contains(&format!("no job {id}")), "{err}");
    let absent = env.ctl_err(CAROL, &["result", "job-0000000000000000"], NO_SUCH_JOB);
    assert_eq!(
        err.replace(id.as_str(), "JOB"),
        absent.replace("job-0000000000000000", "JOB")
    );
    env.ctl_err(CAROL, &["cancel", &id], NO_SUCH_JOB);
    let denied = env.audit_events("denied");
    assert_eq!(denied.len(), 2);
    assert_eq!(denied[0]["operation"], "OpenResult");
    assert_eq!(denied[0]["job"], id);
    assert_eq!(denied[0]["login"], CAROL);

    // After alice clears her proxy her jobs run as alice, and she no longer sees etl's.
    env.ctl_ok(ALICE, &["proxy", "clear"]);
    assert_eq!(
        env.ctl_ok(ALICE, &["exec", "--", "/usr/bin/id", "-un"])
            .trim(),
        ALICE
    );
    let mine = jobs(&env, ALICE);
    assert!(job(&mine, &id).is_none());
    assert!(mine.iter().all(|j| j["run_as"] == ALICE));
    env.ctl_err(ALICE, &["result", &id], NO_SUCH_JOB);
}

#[test]
fn a_proxy_removed_by_reload_cannot_be_used_for_exec() {
    let env = Env::start("jobrevoke");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    assert_eq!(
        env.ctl_ok(ALICE, &["exec", "--", "/usr/bin/id", "-un"])
            .trim(),
        ETL
    );
    env.reload_without_alice();
    // A client that still believes alice proxies to etl: the daemon checks again.
    let id = detach(&env, ALICE, &["/usr/bin/id", "-un"]);
    let list = jobs(&env, ALICE);
    assert_eq!(job(&list, &id).unwrap()["run_as"], ALICE);
}

#[test]
fn cancel_kills_the_whole_process_group() {
    let env = Env::start("jobcancel");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let id = detach(
        &env,
        ALICE,
        &[
            "/bin/sh",
            "-c",
            "sleep 300 & echo $!; sleep 300 & echo $!; echo ready; wait",
        ],
    );
    let mut pids = Vec::new();
    eventually("the job started its children", || {
        let out = env.ctl_ok(ALICE, &["result", &id]);
        pids = out.lines().filter_map(|l| l.parse::<u32>().ok()).collect();
        out.contains("ready")
    });
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&p| process_alive(p)));
    // Cancel returns once the job has ended, and says how.
    let said = env.ctl_ok(ALICE, &["cancel", &id]);
    assert_eq!(
        said,
        format!("job {id} cancelled: killed (exit code 143)\n")
    );
    let record = jobs(&env, ALICE)
        .into_iter()
        .find(|j| j["id"] == id)
        .unwrap();
    assert_eq!(record["state"], "killed");
    // SIGTERM first: the shell ends of it.
    assert_eq!(record["exit_code"], 128 + 15);
    let end = env.audit_events("exec-end");
    assert!(
        end[0]["status"].contains("cancelled by pxt-alice (uid"),
        "{:?}",
        end[0]
    );
    eventually("every process of the group is gone", || {
        pids.iter().all(|&p| !process_alive(p))
    });
}

#[test]
fn what_a_job_leaves_behind_in_its_group_ends_with_it() {
    let env = Env::start("jobleftover");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let out = env.ctl(
        ALICE,
        &["exec", "--", "/bin/sh", "-c", "sleep 300 & echo $!"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let pid: u32 = out
        .stdout
        .trim()
        .parse()
        .expect("the pid of the background sleep");
    eventually("the job's leftover process is gone", || !process_alive(pid));
}

#[test]
fn the_timeout_kills_a_job() {
    let env = Env::with(
        "jobtimeout",
        "[exec]\ntimeout_secs = 1\n",
        &[("10-base.toml", BASE_RULES)],
    );
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let out = env.ctl(ALICE, &["exec", "--", "/bin/sleep", "60"]);
    assert_eq!(out.code, 137, "{}", out.stderr);
    let end = env.audit_events("exec-end");
    assert_eq!(end[0]["state"], "killed");
    assert!(
        end[0]["status"].contains("timed out after 1 s"),
        "{:?}",
        end[0]
    );
}

#[test]
fn the_output_cap_kills_a_job_and_keeps_the_cap() {
    let env = Env::with(
        "jobcap",
        "[exec]\nmax_output_bytes = 1000\n",
        &[("10-base.toml", BASE_RULES)],
    );
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let out = env.ctl(ALICE, &["exec", "--", "/usr/bin/yes"]);
    assert_eq!(out.code, 137, "{}", out.stderr);
    assert_eq!(out.stdout.len(), 1000);
    let end = env.audit_events("exec-end");
    assert!(
        end[0]["status"].contains("more than 1000 bytes"),
        "{:?}",
        end[0]
    );
    assert_eq!(end[0]["stdout_bytes"], "1000");
}

#[test]
fn max_jobs_per_user_refuses_the_next_job() {
    let env = Env::with(
        "jobmax",
        "[exec]\nmax_jobs_per_user = 2\n",
        &[("10-base.toml", BASE_RULES)],
    );
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    env.ctl_ok(BOB, &["proxy", "set", ETL]);
    let a = detach(&env, ALICE, &["/bin/sleep", "300"]);
    let b = detach(&env, BOB, &["/bin/sleep", "300"]);
    let err = env.ctl_err(
        ALICE,
        &["exec", "--", "/bin/true"],
        "org.freedesktop.DBus.Error.LimitsExceeded",
    );
    assert!(
        err.contains("pxt-etl already runs 2 jobs, the most exec.max_jobs_per_user allows"),
        "{err}"
    );
    // Another run-as user is not affected.
    assert_eq!(env.ctl(CAROL, &["exec", "--", "/bin/true"]).code, 0);
    env.ctl_ok(ALICE, &["cancel", &a]);
    eventually("a slot frees", || {
        env.ctl(ALICE, &["exec", "--", "/bin/true"]).ok()
    });
    env.ctl_ok(BOB, &["cancel", &b]);
}

#[test]
fn jobs_running_when_the_daemon_stops_are_failed_at_the_next_start() {
    let mut env = Env::start("jobrestart");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let done = env
        .ctl_ok(ALICE, &["exec", "--detach", "--", "/bin/echo", "done"])
        .trim()
        .to_string();
    eventually("first job ends", || {
        jobs(&env, ALICE)
            .iter()
            .any(|j| j["id"] == done && j["state"] == "exited")
    });

    // SIGKILL: the daemon cannot record anything; its job keeps running, orphaned.
    let orphan = detach(&env, ALICE, &["/bin/sh", "-c", "echo $$; exec sleep 300"]);
    let mut pid = 0;
    eventually("the job runs", || {
        pid = env
            .ctl_ok(ALICE, &["result", &orphan])
            .trim()
            .parse()
            .unwrap_or(0);
        pid > 0
    });
    env.kill_daemon();
    assert!(process_alive(pid));
    env.start_daemon();
    let list = jobs(&env, ALICE);
    if std::env::var("PXT_EXPECT_BACKEND").as_deref() == Ok("systemd") {
        // Under systemd a job is a unit of its own: the next daemon adopts it.
        assert_eq!(job(&list, &orphan).unwrap()["state"], "running");
        assert!(process_alive(pid), "an adopted job runs on");
        env.ctl_ok(ALICE, &["cancel", &orphan]);
        eventually("the adopted job is cancelled", || {
            job(&jobs(&env, ALICE), &orphan).unwrap()["state"] == "killed"
        });
        assert!(!process_alive(pid));
        let stopped = detach(&env, ALICE, &["/bin/sleep", "300"]);
        env.restart();
        let list = jobs(&env, ALICE);
        assert_eq!(job(&list, &stopped).unwrap()["state"], "running");
        env.ctl_ok(ALICE, &["cancel", &stopped]);
        eventually("the job is cancelled after the restart", || {
            job(&jobs(&env, ALICE), &stopped).unwrap()["state"] == "killed"
        });
        let end: Vec<_> = env
            .audit_events("exec-end")
            .into_iter()
            .filter(|r| r["job"] == stopped)
            .collect();
        assert_eq!(end.len(), 1);
        return;
    }
    assert_eq!(job(&list, &orphan).unwrap()["state"], "failed");
    assert_eq!(
        job(&list, &done).unwrap()["state"],
        "exited",
        "finished jobs are untouched"
    );
    eventually("the orphan is killed", || !process_alive(pid));

    // SIGTERM: the daemon stops its running jobs and records them as failed itself.
    let stopped = detach(&env, ALICE, &["/bin/sleep", "300"]);
    env.restart();
    let list = jobs(&env, ALICE);
    assert_eq!(job(&list, &stopped).unwrap()["state"], "failed");
    let end: Vec<_> = env
        .audit_events("exec-end")
        .into_iter()
        .filter(|r| r["job"] == stopped)
        .collect();
    assert_eq!(end.len(), 1);
    assert!(end[0]["status"].contains("proxyuserd stopped while the job ran"));
}

#[test]
fn every_exec_and_download_is_audited_in_the_store_and_the_journal() {
    let env = Env::start("jobaudit");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let before = env.audit().len();
    let out = env.ctl_ok(ALICE, &["exec", "--cwd", "/tmp", "--", "/bin/echo", "a b"]);
    assert_eq!(out, "a b\n");
    let mut records = env.audit().split_off(before);
    // proxyuserctl exec downloads both streams, as soon as the job runs (it streams
    // them), so its end may be recorded before, between or after the downloads.
    let events: Vec<&str> = records.iter().map(|r| r["event"].as_str()).collect();
    assert_eq!(events[0], "exec-start", "{events:?}");
    let mut rest = events[1..].to_vec();
    rest.sort();
    assert_eq!(rest, ["download", "download", "exec-end"]);
    records.sort_by_key(|r| match r["event"].as_str() {
        "exec-start" => 0,
        "exec-end" => 1,
        _ => 2,
    });
    let id = records[0]["job"].clone();
    for record in &records[..2] {
        assert_eq!(record["login"], ALICE);
        assert_eq!(record["proxy"], ETL);
        assert_eq!(record["effective"], ETL);
        assert_eq!(record["caller_uid"], ids(ALICE).0.to_string());
        assert!(record["caller_pid"].parse::<u32>().unwrap() > 1);
        assert_eq!(record["argv"], r#"["/bin/echo","a b"]"#);
        assert_eq!(record["cwd"], "/tmp");
        assert_eq!(record["job"], id);
    }
    assert_eq!(records[1]["state"], "exited");
    assert_eq!(records[1]["exit_code"], "0");
    assert!(records[1]["duration_us"].parse::<u64>().unwrap() > 0);
    // proxyuserctl asks for both streams at once, so either may be recorded first;
    // bytes is what the stream held when it was opened, the job perhaps still running.
    let mut downloads: Vec<(&str, &str)> = records[2..]
        .iter()
        .map(|r| (r["stream"].as_str(), r["bytes"].as_str()))
        .collect();
    downloads.sort();
    assert_eq!(downloads[0], ("stderr", "0"));
    assert_eq!(downloads[1].0, "stdout");
    assert!(["0", "4"].contains(&downloads[1].1), "{downloads:?}");
    for record in &records[2..] {
        assert_eq!(record["job"], id);
        assert_eq!(record["effective"], ETL);
    }

    for (event, want) in [("exec-start", 1), ("exec-end", 1), ("download", 2)] {
        let found = env.journal_audit(
            &[("PROXYUSERD_EVENT", event), ("PROXYUSERD_JOB", &id)],
            want,
        );
        assert_eq!(found.len(), want, "{event} in the journal");
        assert_eq!(found[0]["PROXYUSERD_LOGIN"], ALICE);
        assert_eq!(found[0]["PROXYUSERD_EFFECTIVE"], ETL);
    }
}

#[test]
fn with_the_audit_store_unwritable_no_job_starts() {
    let env = Env::start("jobfailclosed");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let shared = env.dir.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(
        &shared,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let marker = shared.join("ran");
    let pid = env.daemon_pid().to_string();
    assert!(
        std::process::Command::new("prlimit")
            .args(["--pid", &pid, "--fsize=1:unlimited"])
            .status()
            .unwrap()
            .success()
    );
    let out = env.ctl(
        ALICE,
        &["exec", "--", "/usr/bin/touch", marker.to_str().unwrap()],
    );
    assert_eq!(
        out.error_name(),
        Some("org.proxyuserd1.Error.AuditUnavailable"),
        "{}",
        out.stderr
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!marker.exists(), "the program never ran");
    // Once it can write again the daemon takes jobs again, without a restart, and
    // nothing of the refused one is left.
    assert!(
        std::process::Command::new("prlimit")
            .args(["--pid", &pid, "--fsize=unlimited:unlimited"])
            .status()
            .unwrap()
            .success()
    );
    eventually("the store takes writes again", || {
        env.ctl(ROOT, &["rules", "reload"]).ok()
    });
    assert!(jobs(&env, ALICE).is_empty(), "no job record survived");
    assert!(env.audit_events("exec-start").is_empty());
    let out = env.ctl(
        ALICE,
        &["exec", "--", "/usr/bin/touch", marker.to_str().unwrap()],
    );
    assert!(out.ok(), "{}", out.stderr);
    assert!(marker.exists());
}

#[test]
fn bad_exec_and_job_arguments_get_clear_errors() {
    let env = Env::start("jobbad");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let exec = |argv: &[&str]| {
        let mut args = vec![
            "call",
            "org.proxyuserd1",
            "/org/proxyuserd1",
            "org.proxyuserd1.Jobs",
            "Exec",
            "sasa{ss}s",
            ALICE,
        ];
        let n = argv.len().to_string();
        args.push(&n);
        args.extend_from_slice(argv);
        args.extend_from_slice(&["0", ""]);
        env.busctl(ALICE, &args)
    };
    let out = exec(&[]);
    assert!(out.stderr.contains("argv is empty"), "{}", out.stderr);
    let out = exec(&["bin/true"]);
    assert!(
        out.stderr
            .contains("program \"bin/true\" is not an absolute path"),
        "{}",
        out.stderr
    );
    let out = env.ctl(ALICE, &["exec", "--", "/nonexistent/program"]);
    assert_eq!(out.error_name(), Some(INVALID_ARGS));
    assert!(
        out.stderr
            .contains("cannot start /nonexistent/program as pxt-etl"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("No such file or directory")
            || out.stderr.contains("cannot execute the program"),
        "{}",
        out.stderr
    );
    // A relative --cwd is taken from the caller's directory (`/` here); the daemon
    // itself takes absolute paths only.
    let out = env.ctl(ALICE, &["exec", "--cwd", "relative", "--", "/bin/true"]);
    assert_eq!(out.error_name(), Some(INVALID_ARGS), "{}", out.stderr);
    assert!(out.stderr.contains(" in /relative: "), "{}", out.stderr);
    let out = env.busctl(
        ALICE,
        &[
            "call",
            "org.proxyuserd1",
            "/org/proxyuserd1",
            "org.proxyuserd1.Jobs",
            "Exec",
            "sasa{ss}s",
            ALICE,
            "1",
            "/bin/true",
            "0",
            "relative",
        ],
    );
    assert!(
        out.stderr
            .contains("cwd \"relative\" is not an absolute path"),
        "{}",
        out.stderr
    );

    let err = env.ctl_err(
        ALICE,
        &["result", "job-999999"],
        "org.proxyuserd1.Error.NoSuchJob",
    );
    assert!(err.contains("no job job-999999"), "{err}");
    let err = env.ctl_err(ALICE, &["result", "../../etc/shadow"], INVALID_ARGS);
    assert!(err.contains("invalid job id \"../../etc/shadow\""), "{err}");
    env.ctl_err(ALICE, &["cancel", "job/1"], INVALID_ARGS);
    let id = env
        .ctl_ok(ALICE, &["exec", "--detach", "--", "/bin/true"])
        .trim()
        .to_string();
    let out = env.busctl(
        ALICE,
        &[
            "call",
            "org.proxyuserd1",
            "/org/proxyuserd1",
            "org.proxyuserd1.Jobs",
            "OpenResult",
            "sss",
            ALICE,
            &id,
            "stdin",
        ],
    );
    assert!(
        out.stderr
            .contains("unknown stream \"stdin\": use stdout or stderr"),
        "{}",
        out.stderr
    );
    // Nothing here may run as root, and a login without account has nothing to run as.
    let out = env.ctl(GATEWAY, &["exec", "--login", "web-user", "--", "/bin/true"]);
    assert_eq!(
        out.error_name(),
        Some("org.proxyuserd1.Error.NoSuchUser"),
        "{}",
        out.stderr
    );
    let out = env.ctl(ROOT, &["exec", "--", "/bin/true"]);
    assert_eq!(
        out.error_name(),
        Some("org.proxyuserd1.Error.NotAllowed"),
        "{}",
        out.stderr
    );
    // A trusted caller may not run jobs as an admin (that would make it one).
    let out = env.ctl(GATEWAY, &["exec", "--login", ADMIN, "--", "/bin/true"]);
    assert_eq!(
        out.error_name(),
        Some("org.proxyuserd1.Error.NotAllowed"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "jobs do not run as pxt-admin itself: it is a member of the privileged group pxt-admins"
        ),
        "{}",
        out.stderr
    );
    // Nor for the admin itself: jobs run as proxy users or ordinary accounts only.
    let out = env.ctl(ADMIN, &["exec", "--", "/bin/true"]);
    assert_eq!(
        out.error_name(),
        Some("org.proxyuserd1.Error.NotAllowed"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_python_gateway_example_runs_a_job_for_a_web_user() {
    let env = Env::with(
        "jobgateway",
        "",
        &[
            ("10-base.toml", BASE_RULES),
            (
                "20-web.toml",
                "[[allow]]\nlogins = [\"web-alice\"]\nproxies = [\"pxt-etl\"]\n",
            ),
        ],
    );
    let out = env
        .command_as(GATEWAY, "/usr/bin/python3")
        .arg(repo().join("examples/gateway.py"))
        .args(["web-alice", ETL, "/usr/bin/id", "-un"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("web-alice acts as {ETL} (uid {})", ids(ETL).0)
    );
    assert!(lines[1].ends_with(": exited, exit code 0"), "{stdout}");
    assert_eq!(lines[2], ETL);
    let download = env.audit_events("download");
    assert_eq!(download.len(), 1);
    assert_eq!(download[0]["login"], "web-alice");
    assert_eq!(download[0]["caller"], GATEWAY);
}

#[test]
fn old_jobs_and_their_output_are_pruned() {
    let env = Env::with(
        "jobprune",
        "[exec]\nretention_secs = 1\n",
        &[("10-base.toml", BASE_RULES)],
    );
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    env.ctl_ok(ALICE, &["exec", "--", "/bin/true"]);
    let id = jobs(&env, ALICE)[0]["id"].as_str().unwrap().to_string();
    let output = env.state_dir().join("jobs").join(&id);
    assert!(output.join("stdout").exists());
    eventually("the job is pruned", || jobs(&env, ALICE).is_empty());
    assert!(!output.exists(), "its output is gone too");
    // Running jobs are never pruned.
    let running = detach(&env, ALICE, &["/bin/sleep", "300"]);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(job(&jobs(&env, ALICE), &running).is_some());
    env.ctl_ok(ALICE, &["cancel", &running]);
}

/// Processes (not zombies) whose command line contains `marker`: pid, session and
/// command line.
fn processes_with(marker: &str) -> Vec<(u32, u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.contains(marker) || !process_alive(pid) {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let session = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(3))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        found.push((pid, session, cmdline));
    }
    found
}

/// How the daemon of `env` says it contains jobs: its backend's, or `containment`'s
/// (direct backend).
fn assert_containment_logged(env: &Env, containment: &str) {
    let expected = match std::env::var("PXT_EXPECT_BACKEND").as_deref() {
        Ok("systemd") => "contained by their transient units' cgroups",
        _ if containment == "subreaper" => "contained by the daemon as child subreaper",
        _ => "contained by a cgroup each below",
    };
    let messages = env.log_messages(expected);
    let said: Vec<_> = messages
        .iter()
        .filter(|m| m.contains("contained by"))
        .collect();
    assert_eq!(said.len(), 1, "{messages:?}");
    assert!(said[0].contains(expected), "{said:?}");
}

/// The setsid escape of issue 9: the leader exits at once, its child leads a session of
/// its own and writes 5 MB after 2 s, then sleeps. Nothing of it may outlive the job.
fn escape(name: &str, containment: &str) {
    let env = Env::with(
        name,
        &format!("[exec]\nmax_output_bytes = 1048576\ncontainment = \"{containment}\"\n"),
        &[("10-base.toml", BASE_RULES)],
    );
    assert_containment_logged(&env, containment);
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let marker = format!("pxt-escape-{name}-");
    let out = env.ctl(
        ALICE,
        &[
            "exec",
            "--",
            "/usr/bin/setsid",
            "-f",
            "/bin/sh",
            "-c",
            "sleep 2; head -c 5000000 /dev/zero; sleep 3017",
            &marker,
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let list = jobs(&env, ALICE);
    let record = list.last().unwrap();
    assert_eq!(record["state"], "exited", "{record}");
    let id = record["id"].as_str().unwrap().to_string();
    let end = env.audit_events("exec-end");
    let end = end.iter().find(|r| r["job"] == id).unwrap();
    let recorded: u64 = end["stdout_bytes"].parse().unwrap();
    // What the escaped process would have done by now.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let left = processes_with(&marker);
    assert!(
        left.is_empty(),
        "processes of the job outlived it: {left:?}"
    );
    let stdout = env.ctl(ALICE, &["result", &id]);
    assert!(
        stdout.stdout.len() as u64 <= 1048576,
        "{} bytes of output past the cap",
        stdout.stdout.len()
    );
    assert_eq!(
        stdout.stdout.len() as u64,
        recorded,
        "the output changed after the exec-end record"
    );
}

#[test]
fn a_job_that_leaves_its_session_still_ends_with_the_job_and_within_its_cap() {
    escape("jobescape", "auto");
}

#[test]
fn without_cgroups_a_job_that_leaves_its_session_still_ends_with_the_job() {
    escape("jobescapereaper", "subreaper");
}

#[test]
fn a_job_inherits_no_descriptor_of_the_daemon() {
    let mut env = Env::prepare("jobfds", "", &[("10-base.toml", BASE_RULES)]);
    env.inherited_fd = Some(10);
    env.start_daemon();
    let daemon_fds = std::fs::read_dir(format!("/proc/{}/fd", env.daemon_pid()))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .collect::<Vec<_>>();
    assert!(
        daemon_fds.contains(&10),
        "the daemon did not inherit fd 10: {daemon_fds:?}"
    );
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let out = env.ctl_ok(ALICE, &["exec", "--", "/bin/ls", "-l", "/proc/self/fd"]);
    let fds: Vec<u32> = out
        .lines()
        .filter(|l| l.contains(" -> "))
        .filter_map(|l| {
            l.split(" -> ")
                .next()?
                .split_whitespace()
                .last()?
                .parse()
                .ok()
        })
        .collect();
    // 0, 1, 2 and the directory ls reads.
    assert_eq!(fds, [0, 1, 2, 3], "{out}");
    assert!(
        out.contains("3 -> /proc/") || out.contains("3 -> /proc"),
        "{out}"
    );
}

/// Kills the daemon right after an Exec, or 2 s after, several times: the job must be
/// gone once the daemon serves again.
fn crash(name: &str, containment: &str, seconds: &str) {
    let mut env = Env::with(
        name,
        &format!("[exec]\ncontainment = \"{containment}\"\n"),
        &[("10-base.toml", BASE_RULES)],
    );
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let marker = format!("pxt-crash-{name}-");
    for (try_, delay) in [0, 0, 0, 2, 2].into_iter().enumerate() {
        let id = detach(
            &env,
            ALICE,
            &[
                "/bin/sh",
                "-c",
                &format!("sleep {seconds}; : \"$0\""),
                &marker,
            ],
        );
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_secs(delay));
        }
        env.kill_daemon();
        env.start_daemon();
        if std::env::var("PXT_EXPECT_BACKEND").as_deref() == Ok("systemd") {
            // Under systemd the job is a unit of its own, which the next daemon adopts
            // (it is not a leftover): supervised again, and cancelled like any job.
            assert_eq!(job(&jobs(&env, ALICE), &id).unwrap()["state"], "running");
            env.ctl_ok(ALICE, &["cancel", &id]);
            assert_eq!(job(&jobs(&env, ALICE), &id).unwrap()["state"], "killed");
            eventually("the adopted job's processes are gone", || {
                processes_with(&marker).is_empty()
            });
            continue;
        }
        let left = processes_with(&marker)
            .into_iter()
            .chain(processes_with(&format!("sleep {seconds}")))
            .collect::<Vec<_>>();
        assert!(
            left.is_empty(),
            "try {try_} (kill {delay} s after Exec): the job outlived the crash: {left:?}"
        );
        let list = jobs(&env, ALICE);
        assert_eq!(job(&list, &id).unwrap()["state"], "failed");
    }
}

#[test]
fn no_job_survives_a_crash_of_the_daemon() {
    crash("jobcrash", "auto", "9898");
}

#[test]
fn without_cgroups_no_job_survives_a_crash_of_the_daemon() {
    crash("jobcrashreaper", "subreaper", "9899");
}

#[test]
fn a_job_ignoring_sigterm_is_killed_after_the_grace() {
    let env = Env::with(
        "jobgrace",
        "[exec]\nkill_grace_secs = 1\n",
        &[("10-base.toml", BASE_RULES)],
    );
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let id = detach(
        &env,
        ALICE,
        &["/bin/sh", "-c", "trap '' TERM; echo ready; sleep 300"],
    );
    eventually("the job ignores SIGTERM", || {
        env.ctl_ok(ALICE, &["result", &id]).contains("ready")
    });
    let said = env.ctl_ok(ALICE, &["cancel", &id]);
    assert_eq!(
        said,
        format!("job {id} cancelled: killed (exit code 137)\n")
    );
    let record = jobs(&env, ALICE)
        .into_iter()
        .find(|j| j["id"] == id)
        .unwrap();
    assert_eq!(record["state"], "killed");
    assert_eq!(record["exit_code"], 128 + 9);
    // Cancelling a job that has ended changes nothing and says how it ended.
    let said = env.ctl_ok(ALICE, &["cancel", &id]);
    assert_eq!(
        said,
        format!("job {id} cancelled: killed (exit code 137)\n")
    );
    let done = detach(&env, ALICE, &["/bin/true"]);
    assert_eq!(env.ctl(ALICE, &["wait", &done]).code, 0);
    let said = env.ctl_ok(ALICE, &["cancel", &done]);
    assert_eq!(said, format!("job {done} ended: exited (exit code 0)\n"));
}

/// `proxyuserctl exec ARGV` as alice, and its stdout line by line (each within
/// PATIENCE, else the test fails).
fn exec_piped(
    env: &Env,
    argv: &[&str],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = env
        .command_as(ALICE, bin("proxyuserctl"))
        .arg("exec")
        .arg("--")
        .args(argv)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (lines, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(stdout).map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    (child, receiver)
}

#[test]
fn exec_streams_the_output_and_a_signal_to_it_cancels_the_job() {
    let env = Env::start("jobsignal");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    for (signal, code) in [
        (nix::sys::signal::Signal::SIGINT, 130),
        (nix::sys::signal::Signal::SIGTERM, 143),
    ] {
        let (mut child, lines) = exec_piped(&env, &["/bin/sh", "-c", "echo $$; exec sleep 300"]);
        // The first line arrives while the job runs: the output is streamed.
        let first = lines
            .recv_timeout(PATIENCE)
            .expect("the job's first line while it runs");
        let pid: u32 = first.parse().unwrap();
        assert!(process_alive(pid));
        let running: Vec<_> = jobs(&env, ALICE)
            .into_iter()
            .filter(|j| j["state"] == "running")
            .collect();
        assert_eq!(running.len(), 1, "{running:?}");
        let id = running[0]["id"].as_str().unwrap().to_string();

        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "after {signal}");
        // The job ended before proxyuserctl did.
        let record = job(&jobs(&env, ALICE), &id).unwrap().clone();
        assert_eq!(record["state"], "killed", "{record:?}");
        assert_eq!(record["exit_code"], 128 + 15);
        assert!(!process_alive(pid));
    }
    let end = env.audit_events("exec-end");
    assert!(
        end.iter()
            .all(|r| r["status"].contains("cancelled by pxt-alice")),
        "{end:?}"
    );
}

#[test]
fn exec_stops_copying_at_the_output_cap_while_streaming() {
    let env = Env::with(
        "jobstreamcap",
        "[exec]\nmax_output_bytes = 100000\n",
        &[("10-base.toml", BASE_RULES)],
    );
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let out = env.ctl(
        ALICE,
        &[
            "exec",
            "--",
            "/bin/sh",
            "-c",
            "echo start; exec /usr/bin/yes",
        ],
    );
    assert_eq!(out.code, 137, "{}", out.stderr);
    assert_eq!(out.stdout.len(), 100_000);
    assert!(out.stdout.starts_with("start\ny\ny\n"));
}

#[test]
fn exec_passes_stdin_that_is_not_a_terminal() {
    let env = Env::start("jobstdin");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    // A bare name is found on the caller's PATH.
    let out = env.ctl_input(ALICE, &["exec", "--", "cat"], "x\n");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "x\n");
    let out = env.ctl_input(
        ALICE,
        &["exec", "--", "/bin/sh", "-c", "wc -l; id -un"],
        "1\n2\n3\n",
    );
    assert_eq!(out.stdout, format!("3\n{ETL}\n"), "{}", out.stderr);
    // The harness's ctl has /dev/null as its stdin: end of file at once.
    let out = env.ctl_ok(ALICE, &["exec", "--", "/bin/cat"]);
    assert_eq!(out, "");
}

#[test]
fn exec_starts_in_the_callers_directory_and_finds_programs_like_a_shell() {
    let env = Env::start("jobcwd");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let in_tmp = |args: &[&str]| {
        Out::from(
            env.command_as(ALICE, bin("proxyuserctl"))
                .current_dir("/tmp")
                .args(args)
                .output()
                .unwrap(),
        )
    };
    let out = in_tmp(&["exec", "--", "/bin/pwd"]);
    assert_eq!(out.stdout, "/tmp\n", "{}", out.stderr);
    let out = in_tmp(&["exec", "--cwd", ".", "--", "/bin/pwd"]);
    assert_eq!(out.stdout, "/tmp\n", "{}", out.stderr);
    let out = env.ctl_ok(ALICE, &["exec", "--cwd", "tmp", "--", "/bin/pwd"]);
    assert_eq!(out, "/tmp\n");
    let audited: Vec<_> = env
        .audit_events("exec-start")
        .into_iter()
        .map(|r| r["cwd"].clone())
        .collect();
    assert_eq!(audited, ["/tmp", "/tmp", "/tmp"]);
    // A relative program is taken from the caller's directory too.
    let out = Out::from(
        env.command_as(ALICE, bin("proxyuserctl"))
            .current_dir("/bin")
            .args(["exec", "--", "./echo", "relative"])
            .output()
            .unwrap(),
    );
    assert_eq!(out.stdout, "relative\n", "{}", out.stderr);

    // A directory of the caller's that etl cannot enter: refused, saying why.
    let private = env.dir.join("alice-only");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&env.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (uid, gid) = ids(ALICE);
    std::os::unix::fs::chown(&private, Some(uid), Some(gid)).unwrap();
    let out = Out::from(
        env.command_as(ALICE, bin("proxyuserctl"))
            .current_dir(&private)
            .args(["exec", "--", "/bin/true"])
            .output()
            .unwrap(),
    );
    assert_eq!(out.error_name(), Some(INVALID_ARGS), "{}", out.stderr);
    // The direct backend's chdir says "Permission denied"; systemd's exit status 200.
    let refused = format!("in {}: ", private.display());
    assert!(
        out.stderr.contains(&format!("{refused}Permission denied"))
            || out
                .stderr
                .contains(&format!("{refused}cannot enter the working directory")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("(the job starts in your current directory; --cwd chooses another)"),
        "{}",
        out.stderr
    );
    assert_eq!(env.audit_events("exec-start").len(), 5);

    // Not on PATH: "not found", exit 127, like a shell; nothing is asked of the daemon.
    let out = env.ctl(ALICE, &["exec", "--", "pxt-no-such-program", "arg"]);
    assert_eq!(out.code, 127, "{out:?}");
    assert_eq!(
        out.stderr,
        "proxyuserctl: pxt-no-such-program: command not found\n"
    );
    assert_eq!(env.audit_events("exec-start").len(), 5);
}

#[test]
fn an_env_variable_the_daemon_drops_gets_a_warning() {
    let env = Env::with(
        "jobenvwarn",
        "[exec]\nenv_keep = [\"PXT_KEEP\"]\n",
        &[("10-base.toml", BASE_RULES)],
    );
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let out = env.ctl(
        ALICE,
        &[
            "exec",
            "--env",
            "PXT_KEEP=1",
            "--env",
            "PXT_DROPPED=2",
            "--env",
            "HOME=/nowhere",
            "--",
            "/usr/bin/env",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("PXT_KEEP=1\n"), "{}", out.stdout);
    assert!(!out.stdout.contains("PXT_DROPPED"), "{}", out.stdout);
    let warnings: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        warnings,
        [
            "proxyuserctl: warning: --env PXT_DROPPED does not reach the job \
             (exec.env_keep does not name it, or proxyuserd sets it)",
            "proxyuserctl: warning: --env HOME does not reach the job \
             (exec.env_keep does not name it, or proxyuserd sets it)",
        ]
    );
}

#[test]
fn a_detached_job_is_waited_for_with_wait() {
    let env = Env::start("jobwait");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let id = detach(&env, ALICE, &["/bin/sh", "-c", "sleep 1; exit 3"]);
    assert!(id.starts_with("job-"), "{id}");
    let out = env.ctl(ALICE, &["wait", &id]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(job(&jobs(&env, ALICE), &id).unwrap()["state"], "exited");
    // Waiting again gives the same; another's job is no job.
    assert_eq!(env.ctl(ALICE, &["wait", &id]).code, 3);
    env.ctl_err(CAROL, &["wait", &id], NO_SUCH_JOB);
}

#[test]
fn exec_whose_output_nobody_reads_any_more_cancels_the_job() {
    let env = Env::start("jobpipe");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    // `proxyuserctl exec -- … | head -1`: the job goes as if it had written to the pipe.
    let (mut child, lines) =
        exec_piped(&env, &["/bin/sh", "-c", "while echo y; do sleep 0.1; done"]);
    assert_eq!(lines.recv_timeout(PATIENCE).unwrap(), "y");
    drop(lines);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 13));
    let list = jobs(&env, ALICE);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["state"], "killed", "{:?}", list[0]);
}

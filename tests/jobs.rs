//! Jobs run as the proxy user through a real identity switch: identity, environment,
//! visibility across logins, revocation, limits, restart, audit and bad input.

mod common;

use std::collections::BTreeMap;

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
    assert_eq!(lines[1], format!("cwd={}", home.display()));
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
        ("PWD", home.to_str().unwrap()),
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
    env.ctl_ok(ALICE, &["cancel", &id]);
    eventually("the job is killed", || {
        jobs(&env, ALICE)
            .iter()
            .any(|j| j["id"] == id && j["state"] == "killed")
    });
    let record = jobs(&env, ALICE)
        .into_iter()
        .find(|j| j["id"] == id)
        .unwrap();
    assert_eq!(record["exit_code"], 128 + 9);
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
    let records = env.audit().split_off(before);
    let events: Vec<&str> = records.iter().map(|r| r["event"].as_str()).collect();
    // proxyuserctl exec downloads both streams.
    assert_eq!(events, ["exec-start", "exec-end", "download", "download"]);
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
    // proxyuserctl asks for both streams at once, so either may be recorded first.
    let mut downloads: Vec<(&str, &str)> = records[2..]
        .iter()
        .map(|r| (r["stream"].as_str(), r["bytes"].as_str()))
        .collect();
    downloads.sort();
    assert_eq!(downloads, [("stderr", "0"), ("stdout", "4")]);
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
    let out = env.ctl(ALICE, &["exec", "--cwd", "relative", "--", "/bin/true"]);
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

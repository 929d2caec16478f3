//! What it costs to run a command as another user: `proxyuserctl exec -- /bin/true` as a
//! login proxying to a test user, next to `sudo -u`, `runuser -u` and `setpriv` (the
//! floor), all timed by hyperfine in one run; and the `Jobs.Exec` + `Wait` round trip
//! from a long-lived client. Targets: proxyuserctl ≤ 0.7 × sudo; the round trip within
//! 1.5 × setpriv. Needs root, hyperfine and the test users (`sudo tests/setup`).
//!
//! `cargo bench --bench exec` measures; without `--bench` it only checks that every
//! command works.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Median seconds of each command, timed by hyperfine run as `uid`/`gid`.
fn hyperfine(env: &Env, as_user: Option<&str>, runs: u32, commands: &[String]) -> Vec<f64> {
    let out_dir = env.dir.join("hyperfine");
    std::fs::create_dir_all(&out_dir).unwrap();
    let json = out_dir.join(format!("{}.json", as_user.unwrap_or("root")));
    let mut command = Command::new("hyperfine");
    command
        .args([
            "-N",
            "--style",
            "none",
            "--warmup",
            if runs > 5 { "10" } else { "1" },
        ])
        .args(["--runs", &runs.to_string(), "--export-json"])
        .arg(&json)
        .args(commands)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &env.address);
    if let Some(user) = as_user {
        let (uid, gid) = ids(user);
        chown(&out_dir, Some(uid), Some(gid)).unwrap();
        command.uid(uid).gid(gid).current_dir("/tmp");
    }
    let status = command
        .status()
        .expect("hyperfine (run `sudo tests/setup`)");
    assert!(status.success(), "hyperfine failed");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["median"].as_f64().unwrap())
        .collect()
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let (runs, round_trips) = if measuring { (200, 500) } else { (3, 5) };
    let env = Env::start("bench-exec");
    env.ctl_ok(ALICE, &["proxy", "set", ETL]);
    let ctl = bin("proxyuserctl").display().to_string();

    let proxyuserctl = hyperfine(
        &env,
        Some(ALICE),
        runs,
        &[format!("{ctl} exec -- /bin/true")],
    )[0];
    let floor = hyperfine(
        &env,
        None,
        runs,
        &[
            format!("sudo -u {ETL} /bin/true"),
            format!("runuser -u {ETL} -- /bin/true"),
            format!("setpriv --reuid={ETL} --regid={ETL} --init-groups /bin/true"),
        ],
    );
    let (sudo, runuser, setpriv) = (floor[0], floor[1], floor[2]);

    // Exec + Wait from one long-lived connection (root, acting for alice).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut trips: Vec<Duration> = runtime.block_on(async {
        let connection = zbus::connection::Builder::address(env.address.as_str())
            .build()
            .await
            .unwrap();
        let jobs = proxyuserd::client::JobsProxy::new(&connection)
            .await
            .unwrap();
        let no_env: HashMap<&str, &str> = HashMap::new();
        let mut trips = Vec::new();
        for _ in 0..round_trips {
            let start = Instant::now();
            let id = jobs.exec(ALICE, &["/bin/true"], &no_env, "").await.unwrap();
            let (state, code) = jobs.wait(ALICE, &id).await.unwrap();
            trips.push(start.elapsed());
            assert_eq!((state.as_str(), code), ("exited", 0));
        }
        trips
    });
    trips.sort();
    let trip = trips[trips.len() / 2].as_secs_f64();

    let ms = |s: f64| s * 1000.0;
    println!("exec: medians of {runs} runs (hyperfine) and {round_trips} API round trips");
    println!(
        "  proxyuserctl exec -- /bin/true   {:8.3} ms   {:.2} x sudo",
        ms(proxyuserctl),
        proxyuserctl / sudo
    );
    println!("  sudo -u {ETL} /bin/true          {:8.3} ms", ms(sudo));
    println!("  runuser -u {ETL} -- /bin/true    {:8.3} ms", ms(runuser));
    println!(
        "  setpriv ... /bin/true            {:8.3} ms   (floor)",
        ms(setpriv)
    );
    println!(
        "  Jobs.Exec + Wait (API)           {:8.3} ms   {:.2} x setpriv",
        ms(trip),
        trip / setpriv
    );
}

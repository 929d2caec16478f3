//! A real systemd for the system tests: this machine's own OS booted with
//! `systemd-nspawn --volatile=yes --directory=/` as PID 1 of a container. `/etc`, `/usr`,
//! `/var` and `/home` are writable overlays of the host's (thrown away with the guest),
//! so the test users exist, packages can be installed, and nothing on the host changes.
//! Commands run inside with `nsenter`. A guest is powered off and waited for when
//! dropped, also when the test fails. (Used beside `common`, whose `Out` it returns.)

#![allow(dead_code)]

use crate::common::Out;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Host units that make no sense in a throwaway container, masked in the guest.
const MASKED: &[&str] = &[
    "postgresql.service",
    "getty@.service",
    "console-getty.service",
    "systemd-timesyncd.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "man-db.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "dpkg-db-backup.timer",
];

pub struct Guest {
    nspawn: Child,
    /// PID 1 of the guest, as the host sees it.
    pub leader: u32,
    pub name: String,
    log: PathBuf,
}

fn check_prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "system tests must run as root: use `sudo tests/run`"
    );
    assert!(
        Path::new("/usr/bin/systemd-nspawn").exists(),
        "systemd-nspawn is missing (package systemd-container): run `sudo tests/setup`"
    );
}

impl Guest {
    /// Boots a guest; `binds` are host paths made visible read-only at the same path.
    pub fn boot(name: &str, binds: &[&Path]) -> Guest {
        check_prerequisites();
        let name = format!("pxt-{name}-{}", std::process::id());
        let log = std::env::temp_dir().join(format!("{name}.console"));
        let mut command = Command::new("systemd-nspawn");
        command.args([
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--console=passive",
            "--volatile=yes",
            "--directory=/",
            "--overlay=/etc::/etc",
            "--overlay=/usr::/usr",
            "--overlay=/var::/var",
            "--overlay=/home::/home",
        ]);
        command.arg(format!("--machine={name}"));
        for bind in binds {
            command.arg(format!("--bind-ro={}", bind.display()));
        }
        command.args(["--boot", "--"]);
        command.args(MASKED.iter().map(|unit| format!("systemd.mask={unit}")));
        let console = std::fs::File::create(&log).unwrap();
        let nspawn = command
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .expect("systemd-nspawn");
        let mut guest = Guest {
            leader: 0,
            nspawn,
            name,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while guest.leader == 0 {
            if let Some(status) = guest.nspawn.try_wait().unwrap() {
                panic!("systemd-nspawn exited ({status}):\n{}", guest.console());
            }
            assert!(
                Instant::now() < deadline,
                "the guest never started:\n{}",
                guest.console()
            );
            guest.leader = children(guest.nspawn.id())
                .into_iter()
                .find(|pid| comm(*pid).as_deref() == Some("systemd"))
                .unwrap_or(0);
            std::thread::sleep(Duration::from_millis(50));
        }
        loop {
            let state = guest.run(&["systemctl", "is-system-running"]);
            match state.stdout.trim() {
                "running" | "degraded" => break,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "the guest did not finish booting ({}):\n{}\n{}",
                state.stdout.trim(),
                guest.run(&["systemctl", "--failed", "--no-pager"]).stdout,
                guest.console()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        guest
    }

    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A command inside the guest (all its namespaces), as root.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .args(["-t", &self.leader.to_string(), "-a", "--"])
            .args([
                "env",
                "-i",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
            ])
            .args(argv);
        command
    }

    pub fn run(&self, argv: &[&str]) -> Out {
        Out::from(self.command(argv).stdin(Stdio::null()).output().unwrap())
    }

    /// Runs and requires success; stdout.
    pub fn ok(&self, argv: &[&str]) -> String {
        let run = self.run(argv);
        assert_eq!(
            run.code, 0,
            "{argv:?} failed in the guest:\n{}{}",
            run.stdout, run.stderr
        );
        run.stdout
    }

    /// A shell command line as `user` in the guest (login-like environment).
    pub fn as_user(&self, user: &str, script: &str) -> Out {
        self.run(&["runuser", "-u", user, "--", "sh", "-c", script])
    }

    /// Writes a file in the guest.
    pub fn write(&self, path: &str, text: &str) {
        use std::io::Write;
        let mut child = self
            .command(&[
                "sh",
                "-c",
                &format!("mkdir -p \"$(dirname '{path}')\" && cat > '{path}'"),
            ])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        assert!(
            child.wait().unwrap().success(),
            "cannot write {path} in the guest"
        );
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "guest console ({}):\n{}",
                self.log.display(),
                self.console()
            );
        }
        if self.leader != 0 {
            // SIGRTMIN+4: systemd powers off.
            let rtmin4 = libc::SIGRTMIN() + 4;
            // SAFETY: kill(2) with a valid signal number has no memory effects.
            unsafe { libc::kill(self.leader as i32, rtmin4) };
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.nspawn.try_wait().unwrap().is_some() {
                let _ = std::fs::remove_file(&self.log);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

//! The systemd backend: when systemd is PID 1, each job is a transient service
//! (`StartTransientUnit`) with `User=` (systemd sets the user's supplementary groups from
//! NSS), the clean environment, the result files as stdout/stderr, and `Slice=` a slice
//! per run-as user carrying the configured resource limits. The job does not inherit
//! the daemon's sandbox, and its whole cgroup is what Cancel kills.
//!
//! systemd is reached on the real system bus (its socket path, not
//! `DBUS_SYSTEM_BUS_ADDRESS`, which may name a private bus the daemon serves on).

use std::collections::HashMap;
use std::pin::Pin;

use futures_core::Stream;
use zbus::fdo::PropertiesProxy;
use zbus::names::InterfaceName;
use zbus::{Connection, OwnedObjectPath, OwnedVariant, Variant, proxy};

use super::{JobSpec, ProcessEnd};

/// The system bus socket, where systemd's manager is.
pub const SYSTEM_BUS: &str = "unix:path=/run/dbus/system_bus_socket";

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Variant<'_>)],
        aux: &[(&str, &[(&str, Variant<'_>)])],
    ) -> zbus::Result<OwnedObjectPath>;
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;
    fn set_unit_properties(
        &self,
        name: &str,
        runtime: bool,
        properties: &[(&str, Variant<'_>)],
    ) -> zbus::Result<()>;
    fn unref_unit(&self, name: &str) -> zbus::Result<()>;
    #[allow(clippy::type_complexity)]
    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<
        Vec<(
            String,
            String,
            String,
            String,
            String,
            String,
            OwnedObjectPath,
            u32,
            String,
            OwnedObjectPath,
        )>,
    >;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    fn subscribe(&self) -> zbus::Result<()>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: zbus::ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

/// How long a job may take to start (its program to be executed).
const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Variables the service manager sets for services by itself (or passes on from its
/// own environment).
const MANAGER_ENV: &[&str] = &[
    "INVOCATION_ID",
    "SYSTEMD_EXEC_PID",
    "MANAGERPID",
    "JOURNAL_STREAM",
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "TERM",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_NUMERIC",
    "LC_TIME",
    "LC_COLLATE",
    "LC_MONETARY",
    "LC_MESSAGES",
    "LC_PAPER",
    "LC_NAME",
    "LC_ADDRESS",
    "LC_TELEPHONE",
    "LC_MEASUREMENT",
    "LC_IDENTIFICATION",
];

/// Resource limits of the slice of each run-as user (0: not set).
#[derive(Debug, Clone, Default)]
pub struct SliceLimits {
    /// Percent of one CPU (200 = two CPUs).
    pub cpu_quota_percent: u64,
    pub memory_max_bytes: u64,
    pub tasks_max: u64,
}

/// Property changes of a started unit, to notice its end without polling.
pub struct UnitWatch {
    changes: Option<zbus::fdo::PropertiesChangedStream>,
}

impl UnitWatch {
    /// Completes at the unit's next property change (never, if it cannot be watched).
    pub async fn changed(&mut self) {
        match &mut self.changes {
            Some(changes) => {
                if next(changes).await.is_none() {
                    self.changes = None;
                }
            }
            None => std::future::pending().await,
        }
    }
}

/// Why a unit did not start, and whether the request was at fault (a program or a
/// working directory that is not there) or the system (systemd refused, timed out).
#[derive(Debug)]
pub struct StartError {
    pub caller_fault: bool,
    pub message: String,
}

impl StartError {
    fn system(message: String) -> Self {
        StartError {
            caller_fault: false,
            message,
        }
    }
}

/// A job's unit as systemd knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitState {
    Running,
    /// How its main process ended, and when (µs since the epoch; 0 if unknown).
    Ended(ProcessEnd, i64),
    Unknown,
}

pub struct Systemd {
    connection: Connection,
    manager: ManagerProxy<'static>,
}

/// `unit_name_escape`: what a user name becomes inside a unit name.
pub fn escape(name: &str) -> String {
    let mut out = String::new();
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || (b == b'.' && i > 0) || b == b':' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The object path of a unit (sd-bus label escaping).
pub fn unit_path(unit: &str) -> String {
    let mut out = String::from("/org/freedesktop/systemd1/unit/");
    for (i, b) in unit.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (b.is_ascii_digit() && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// What `systemctl status` says of a job: who asked, as whom, what.
fn description(unit: &str, spec: &JobSpec) -> String {
    let login = spec
        .env
        .iter()
        .find(|(k, _)| k == "PROXYUSERD_LOGIN_USER")
        .map_or("?", |(_, v)| v.as_str());
    let mut command = spec.argv.join(" ");
    if command.chars().count() > 80 {
        command = command.chars().take(79).collect::<String>() + "…";
    }
    let job = unit.trim_end_matches(".service");
    format!("{job} for {login} as {}: {command}", spec.user)
}

/// The slice of a run-as user.
pub fn slice_of(user: &str) -> String {
    format!("proxyuserd-{}.slice", escape(user))
}

/// What the exit codes systemd uses for its own failures (`EXIT_*`, 200–243) mean.
fn exec_failure(status: i32) -> &'static str {
    match status {
        200 => "cannot enter the working directory",
        203 => "cannot execute the program",
        216 => "cannot set the groups",
        217 => "cannot switch to the user",
        204 | 209 => "cannot set up stdin/stdout/stderr",
        _ => "the service manager could not start it",
    }
}

async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

fn prop<T: TryFrom<OwnedVariant>>(props: &HashMap<String, OwnedVariant>, key: &str) -> Option<T> {
    props.get(key).and_then(|v| T::try_from(v.clone()).ok())
}

impl Systemd {
    /// Connects to systemd on the system bus and subscribes to its signals.
    pub async fn connect() -> zbus::Result<Self> {
        let connection = zbus::connection::Builder::address(SYSTEM_BUS)
            .build()
            .await?;
        let manager = ManagerProxy::new(&connection).await?;
        manager.subscribe().await?;
        Ok(Systemd {
            connection,
            manager,
        })
    }

    /// The `org.freedesktop.DBus.Properties` of a unit's object.
    async fn unit_object(&self, unit: &str) -> zbus::Result<PropertiesProxy<'_>> {
        PropertiesProxy::builder(&self.connection)
            .destination("org.freedesktop.systemd1")
            .path(unit_path(unit))
            .build()
            .await
    }

    async fn unit_properties(
        &self,
        unit: &str,
        interface: &'static str,
    ) -> zbus::Result<HashMap<String, OwnedVariant>> {
        let interface = InterfaceName::from_static_str_unchecked(interface);
        let properties = self.unit_object(unit).await?;
        properties.get_all(interface).await.map_err(Into::into)
    }

    /// How the unit's main process ended as systemd reports it: (si_code, status),
    /// each 0 if absent; `None` if the unit's properties cannot be read.
    async fn exec_main(&self, unit: &str) -> Option<(i32, i32)> {
        let service = self
            .unit_properties(unit, "org.freedesktop.systemd1.Service")
            .await
            .ok()?;
        Some((
            prop(&service, "ExecMainCode").unwrap_or(0),
            prop(&service, "ExecMainStatus").unwrap_or(0),
        ))
    }

    /// Starts `spec` as the transient service `unit`. Returns once the program runs
    /// (`Type=exec`); an error says why it could not be started.
    pub async fn start(
        &self,
        unit: &str,
        spec: &JobSpec,
        limits: &SliceLimits,
        timeout_secs: u64,
    ) -> Result<UnitWatch, StartError> {
        let slice = slice_of(&spec.user);
        let mut slice_props: Vec<(&str, Variant<'_>)> = Vec::new();
        if limits.cpu_quota_percent > 0 {
            slice_props.push((
                "CPUQuotaPerSecUSec",
                Variant::from(limits.cpu_quota_percent * 10_000),
            ));
        }
        if limits.memory_max_bytes > 0 {
            slice_props.push(("MemoryMax", Variant::from(limits.memory_max_bytes)));
        }
        if limits.tasks_max > 0 {
            slice_props.push(("TasksMax", Variant::from(limits.tasks_max)));
        }
        if !slice_props.is_empty() {
            self.manager
                .set_unit_properties(&slice, true, &slice_props)
                .await
                .map_err(|e| {
                    StartError::system(format!("cannot set the limits of {slice}: {e}"))
                })?;
        }
        let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        // What the service manager would add on its own, so the job's environment is
        // exactly the one the daemon computed.
        let unset: Vec<&str> = MANAGER_ENV
            .iter()
            .copied()
            .filter(|name| !spec.env.iter().any(|(k, _)| k == name))
            .collect();
        // systemd expands $VAR in command lines when it executes them; "$$" is a "$".
        let argv: Vec<String> = spec.argv.iter().map(|a| a.replace('$', "$$")).collect();
        let exec_start = vec![(spec.argv[0].clone(), argv, false)];
        let mut props: Vec<(&str, Variant<'_>)> = vec![
            ("Description", Variant::from(description(unit, spec))),
            ("Type", Variant::from("exec")),
            ("ExecStart", Variant::from(exec_start)),
            ("User", Variant::from(spec.user.as_str())),
            (
                "WorkingDirectory",
                Variant::from(spec.cwd.display().to_string()),
            ),
            ("Environment", Variant::from(env)),
            ("UnsetEnvironment", Variant::from(unset)),
            ("UMask", Variant::from(0o077u32)),
            (
                "StandardOutputFile",
                Variant::from(spec.stdout.display().to_string()),
            ),
            (
                "StandardErrorFile",
                Variant::from(spec.stderr.display().to_string()),
            ),
            ("Slice", Variant::from(slice.as_str())),
            ("KillMode", Variant::from("control-group")),
            ("KillSignal", Variant::from(9i32)),
            // The unit outlives the daemon (a restart, an upgrade) and keeps how its
            // program ended until the daemon has recorded it: it stays "active
            // (exited)" or "failed" until `release`, also while no daemon runs.
            ("RemainAfterExit", Variant::from(true)),
            ("CollectMode", Variant::from("inactive")),
            ("AddRef", Variant::from(true)),
        ];
        match &spec.stdin {
            // Implies StandardInput=fd.
            Some(fd) => {
                props.push((
                    "StandardInputFileDescriptor",
                    Variant::from(zbus::Fd::from(std::os::fd::AsFd::as_fd(fd))),
                ));
            }
            None => props.push(("StandardInput", Variant::from("null"))),
        }
        if timeout_secs > 0 {
            // A backstop should the daemon be gone when the timeout comes.
            props.push((
                "RuntimeMaxUSec",
                Variant::from((timeout_secs + 10) * 1_000_000),
            ));
        }
        let changes = self.watch(unit).await;
        let mut removed = self
            .manager
            .receive_job_removed()
            .await
            .map_err(|e| StartError::system(format!("cannot watch systemd jobs: {e}")))?;
        let job = self
            .manager
            .start_transient_unit(unit, "fail", &props, &[])
            .await
            .map_err(|e| StartError::system(format!("systemd refused to start {unit}: {e}")))?;
        let finished = async {
            loop {
                let Some(signal) = next(&mut removed).await else {
                    return Err("lost the connection to systemd".to_string());
                };
                let Ok(args) = signal.args() else { continue };
                if args.job().as_str() == job.as_str() {
                    return Ok(args.result().to_string());
                }
            }
        };
        let result = match tokio::time::timeout(START_TIMEOUT, finished).await {
            Ok(result) => result.map_err(StartError::system)?,
            Err(_) => {
                self.kill(unit).await;
                self.release(unit).await;
                return Err(StartError::system(format!(
                    "systemd did not start {unit} within {START_TIMEOUT:?}"
                )));
            }
        };
        if result == "done" {
            return Ok(UnitWatch { changes });
        }
        let (code, status) = self.exec_main(unit).await.unwrap_or((0, 0));
        // A program that ran and ended before the start job was done (exit 7 at once)
        // fails the job too; it did start, and its end is read like any other. Only
        // systemd's own exit codes (200-243) say it never ran.
        let ran = match code {
            1 => !(200..=243).contains(&status),
            2 | 3 => true,
            _ => false,
        };
        if ran {
            return Ok(UnitWatch { changes });
        }
        self.release(unit).await;
        // systemd's own codes for what the request got wrong (no working directory, no
        // program) are the caller's; the others are the system's (the user was found
        // before the start, so one systemd cannot switch to is the system's too).
        Err(StartError {
            caller_fault: matches!(status, 200 | 203),
            message: format!(
                "{} (systemd job {result}, exit status {status})",
                exec_failure(status)
            ),
        })
    }

    /// How a unit's main process ended, once it has (the unit is kept until
    /// [`release`](Self::release)).
    pub async fn ended(&self, unit: &str) -> Option<ProcessEnd> {
        match self.state(unit).await {
            UnitState::Ended(end, _) => Some(end),
            UnitState::Running | UnitState::Unknown => None,
        }
    }

    /// Where a job's unit is: running, ended (how, and when in µs since the epoch, 0
    /// if systemd does not say), or unknown to systemd (never started, or collected).
    pub async fn state(&self, unit: &str) -> UnitState {
        let Ok(state) = self
            .unit_properties(unit, "org.freedesktop.systemd1.Unit")
            .await
        else {
            return UnitState::Unknown;
        };
        let active: String = prop(&state, "ActiveState").unwrap_or_default();
        let sub: String = prop(&state, "SubState").unwrap_or_default();
        let load: String = prop(&state, "LoadState").unwrap_or_default();
        if load != "loaded" {
            return UnitState::Unknown;
        }
        // RemainAfterExit: "active (exited)" once the program has ended well.
        let ended = active == "failed" || active == "inactive" || sub == "exited";
        if !ended {
            return UnitState::Running;
        }
        let Ok(service) = self
            .unit_properties(unit, "org.freedesktop.systemd1.Service")
            .await
        else {
            return UnitState::Unknown;
        };
        let code: i32 = prop(&service, "ExecMainCode").unwrap_or(0);
        let status: i32 = prop(&service, "ExecMainStatus").unwrap_or(0);
        let at: u64 = prop(&service, "ExecMainExitTimestamp").unwrap_or(0);
        if code == 0 && at == 0 {
            // Loaded but never ran: a unit object systemd made up for the name.
            return UnitState::Unknown;
        }
        let end = match code {
            // CLD_EXITED
            1 => ProcessEnd::Exited(status),
            // CLD_KILLED, CLD_DUMPED
            2 | 3 => ProcessEnd::Signaled(status),
            _ => ProcessEnd::Failed(format!("systemd reports exit code {code}, status {status}")),
        };
        UnitState::Ended(end, at as i64)
    }

    /// Lets systemd forget a unit whose end is recorded: stopped (from "active
    /// (exited)") or reset (from "failed"), and then collected.
    pub async fn release(&self, unit: &str) {
        let _ = self.manager.unref_unit(unit).await;
        if let Err(err) = self.manager.stop_unit(unit, "replace").await {
            tracing::debug!("cannot stop {unit}: {err}");
        }
        let _ = self.manager.reset_failed_unit(unit).await;
    }

    /// A watch of a unit started by an earlier daemon (after a restart).
    pub async fn adopt(&self, unit: &str) -> UnitWatch {
        UnitWatch {
            changes: self.watch(unit).await,
        }
    }

    /// A stream of the unit's property changes (its end among them).
    async fn watch(&self, unit: &str) -> Option<zbus::fdo::PropertiesChangedStream> {
        let properties = self.unit_object(unit).await.ok()?;
        properties.receive_properties_changed().await.ok()
    }

    /// The names of the job units systemd has loaded (of any daemon).
    pub async fn job_units(&self) -> Vec<String> {
        match self
            .manager
            .list_units_by_patterns(&[], &["proxyuserd-job-*.service"])
            .await
        {
            Ok(units) => units.into_iter().map(|u| u.0).collect(),
            Err(err) => {
                tracing::warn!("cannot list the job units: {err}");
                Vec::new()
            }
        }
    }

    /// Kills every process of a leftover unit and waits until it is inactive (at start,
    /// so that nothing of a job from before runs once the daemon serves).
    pub async fn stop(&self, unit: &str) {
        self.kill(unit).await;
        for waited in 0..3000 {
            let (active, sub): (Option<String>, Option<String>) = match self
                .unit_properties(unit, "org.freedesktop.systemd1.Unit")
                .await
            {
                Ok(state) => (prop(&state, "ActiveState"), prop(&state, "SubState")),
                Err(_) => (None, None),
            };
            match (active.as_deref(), sub.as_deref()) {
                // "active (exited)": kept after its end (RemainAfterExit) until released.
                (None | Some("inactive") | Some("failed"), _) | (_, Some("exited")) => break,
                _ if waited == 1000 => tracing::warn!("{unit} is still active 10 s after SIGKILL"),
                _ => {}
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.release(unit).await;
    }

    /// SIGKILL to every process of a unit.
    pub async fn kill(&self, unit: &str) {
        self.signal(unit, nix::sys::signal::Signal::SIGKILL).await;
    }

    /// `signal` to every process of a unit.
    pub async fn signal(&self, unit: &str, signal: nix::sys::signal::Signal) {
        if let Err(err) = self.manager.kill_unit(unit, "all", signal as i32).await {
            tracing::debug!("cannot send {signal} to {unit}: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_as_systemd_does() {
        assert_eq!(escape("pxt-etl"), "pxt\\x2detl");
        assert_eq!(escape("svc.report"), "svc.report");
        assert_eq!(slice_of("etl"), "proxyuserd-etl.slice");
        assert_eq!(
            unit_path("proxyuserd-job-17.service"),
            "/org/freedesktop/systemd1/unit/proxyuserd_2djob_2d17_2eservice"
        );
    }

    #[test]
    fn a_job_unit_says_who_asked_and_what_runs() {
        let spec = JobSpec {
            argv: vec!["/usr/bin/make".into(), "report".into()],
            env: vec![("PROXYUSERD_LOGIN_USER".into(), "alice".into())],
            cwd: "/".into(),
            user: "etl".into(),
            uid: 1001,
            gid: 1001,
            gids: vec![1001],
            stdout: "/dev/null".into(),
            stderr: "/dev/null".into(),
            stdin: None,
        };
        assert_eq!(
            description("proxyuserd-job-17-abcd.service", &spec),
            "proxyuserd-job-17-abcd for alice as etl: /usr/bin/make report"
        );
    }
}

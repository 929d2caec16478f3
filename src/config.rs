//! `/etc/proxyuserd/proxyuserd.toml`. A missing file means the defaults below, which are
//! safe: no trusted callers, only root is an admin, no rules (everything denied).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::exec::contain::ContainmentChoice;
use crate::names::{check_group_name, check_user_name};

pub const DEFAULT_PATH: &str = "/etc/proxyuserd/proxyuserd.toml";

/// The copy of the configuration file the daemon last ran on, in `state_dir`: a start
/// with a broken file runs on it (and says so) instead of not starting.
pub const LAST_GOOD: &str = "config.last-good";

/// Longest duration any setting takes (ten years), so that no deadline overflows.
const MAX_SECS: u64 = 10 * 365 * 24 * 3600;

/// Longest wait for one NSS lookup (ten minutes): past that, nothing is waiting anymore.
const MAX_NSS_TIMEOUT_MS: u64 = 600_000;

/// Bound of `denial_rate` and `denial_burst`.
const MAX_DENIALS: u32 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the sled store and job output live (`StateDirectory=` in the unit).
    pub state_dir: PathBuf,
    /// The drop-in rule files, `*.toml`, read in lexical order.
    pub rules_dir: PathBuf,
    /// Users whose processes may act for any login (gateways for their web users).
    pub trusted_callers: Vec<String>,
    /// Members of this group are admins (root always is).
    pub admin_group: Option<String>,
    /// How long a user lookup (NSS) is reused. 0 asks NSS every time.
    pub nss_cache_secs: u64,
    /// How long one user/group lookup may wait for NSS (a directory that stopped
    /// answering) before it fails; the operation needing it is refused.
    pub nss_timeout_ms: u64,
    /// How often associations are checked against NSS changes (group membership, deleted
    /// accounts) even when no rule changed.
    pub revalidate_secs: u64,
    /// Denials per second a user may cause (after a burst of `denial_burst`) before its
    /// calls are slowed down; 0 means no limit. Root, admins and trusted callers are
    /// never slowed. Every denial is recorded either way.
    pub denial_rate: u32,
    pub denial_burst: u32,
    /// Bytes per second of state (audit records, job records) an ordinary user may
    /// cause to be written, after a burst of `write_burst_bytes`, before its calls are
    /// slowed down like a user causing denials. 0 means no limit.
    pub write_rate_bytes: u64,
    pub write_burst_bytes: u64,
    /// Accounts with a uid below this are system accounts, which jobs never run as
    /// unless they are proxy users. Default: `UID_MIN` of /etc/login.defs, else 1000.
    pub uid_min: Option<u32>,
    /// Groups whose members never act for others (as proxy users, or as logins jobs run
    /// as for someone else), besides gid 0 and `admin_group`.
    pub privileged_groups: Vec<String>,
    pub exec: ExecConfig,
    pub sessions: SessionsConfig,
    pub store: StoreConfig,
    pub audit: AuditConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from("/var/lib/proxyuserd"),
            rules_dir: PathBuf::from("/etc/proxyuserd/rules.d"),
            trusted_callers: Vec::new(),
            admin_group: None,
            nss_cache_secs: 5,
            nss_timeout_ms: 5000,
            revalidate_secs: 60,
            denial_rate: 5,
            denial_burst: 20,
            write_rate_bytes: 64 * 1024,
            write_burst_bytes: 1024 * 1024,
            uid_min: None,
            privileged_groups: vec!["sudo".into(), "wheel".into(), "admin".into()],
            exec: ExecConfig::default(),
            sessions: SessionsConfig::default(),
            store: StoreConfig::default(),
            audit: AuditConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecConfig {
    /// `PATH` of every job.
    pub secure_path: String,
    /// Caller environment variables a job may receive (`Exec`'s env argument).
    pub env_keep: Vec<String>,
    /// Running jobs per run-as user; the next one is refused.
    pub max_jobs_per_user: u32,
    /// Bytes kept of each of stdout and stderr; a job writing more is killed.
    pub max_output_bytes: u64,
    /// Wall-clock limit of a job; 0 means none.
    pub timeout_secs: u64,
    /// Seconds a cancelled job has between SIGTERM and SIGKILL.
    pub kill_grace_secs: u64,
    /// Finished jobs and their output are deleted after this many seconds.
    pub retention_secs: u64,
    /// Bytes of output (stdout and stderr of all its finished jobs) kept per run-as
    /// user; the oldest jobs' output goes first (their records stay). 0: no limit.
    pub max_output_bytes_per_user: u64,
    /// Finished job records kept per run-as user; the oldest go first. 0: no limit.
    pub max_jobs_kept_per_user: u64,
    /// Bounds on what one `Exec` may ask, checked before anything is written:
    /// arguments, their total bytes, environment entries and bytes, and the working
    /// directory's length.
    pub max_args: u32,
    pub max_argv_bytes: u64,
    pub max_env_entries: u32,
    pub max_env_bytes: u64,
    pub max_cwd_bytes: u32,
    /// Whether a trusted caller (gateway) may run a job as the login itself when the
    /// login has no proxy (always only an ordinary account). `false`: gateways run jobs
    /// only as proxy users.
    pub gateway_runs_as_login: bool,
    pub backend: BackendChoice,
    /// How the direct backend keeps what a job starts inside the job.
    pub containment: ContainmentChoice,
    /// Limits of each run-as user's slice (systemd backend; 0: none): percent of one
    /// CPU, bytes of memory, number of tasks.
    pub slice_cpu_quota_percent: u64,
    pub slice_memory_max_bytes: u64,
    pub slice_tasks_max: u64,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            secure_path: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            env_keep: Vec::new(),
            max_jobs_per_user: 16,
            max_output_bytes: 64 * 1024 * 1024,
            timeout_secs: 0,
            kill_grace_secs: 5,
            retention_secs: 7 * 24 * 3600,
            max_output_bytes_per_user: 1024 * 1024 * 1024,
            max_jobs_kept_per_user: 10_000,
            max_args: 4096,
            max_argv_bytes: 128 * 1024,
            max_env_entries: 1024,
            max_env_bytes: 128 * 1024,
            max_cwd_bytes: 4096,
            gateway_runs_as_login: true,
            backend: BackendChoice::Auto,
            containment: ContainmentChoice::Auto,
            slice_cpu_quota_percent: 0,
            slice_memory_max_bytes: 0,
            slice_tasks_max: 0,
        }
    }
}

/// Where jobs run (`exec.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// Transient systemd units when systemd is PID 1, else `direct`.
    Auto,
    /// Transient systemd units; the daemon does not start without systemd.
    Systemd,
    /// The daemon forks jobs itself.
    Direct,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Absolute lifetime of a session.
    pub ttl_secs: u64,
    /// A session unused this long ends.
    pub idle_secs: u64,
    pub login_cookie: String,
    pub proxy_cookie: String,
    /// Open sessions per login; opening one more ends the oldest.
    pub max_per_login: u32,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            ttl_secs: 12 * 3600,
            idle_secs: 3600,
            login_cookie: "linkis_user_session_ticket_id_v1".into(),
            proxy_cookie: "linkis_user_session_proxy_ticket_id_v1".into(),
            max_per_login: 64,
        }
    }
}

/// `[store]`: the state store's sizes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// sled's page cache (its own default would be 1 GiB).
    pub cache_bytes: u64,
    /// A file kept beside the store and released when the disk fills up, so the store
    /// can still be opened and recorded to. 0: none.
    pub reserve_bytes: u64,
    /// Below this much free space on the state file system new jobs are refused (their
    /// output would fill it); audit, admin calls and reads go on.
    pub min_free_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_bytes: 8 * 1024 * 1024,
            reserve_bytes: 8 * 1024 * 1024,
            min_free_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[audit]`: how much of the audit log the store keeps (journald keeps the long-term
/// copy). Pruning leaves a checkpoint so that the rest still verifies.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Bytes of audit records kept in the store; the oldest are deleted past it. 0: no
    /// limit.
    pub max_bytes: u64,
    /// Records older than this are deleted. 0: kept until `max_bytes`.
    pub retention_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            max_bytes: 256 * 1024 * 1024,
            retention_secs: 0,
        }
    }
}

/// A configuration that cannot be used: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct ConfigError {
    /// `file`, or `file:line:column`.
    pub at: String,
    pub message: String,
}

impl ConfigError {
    fn new(at: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            at: at.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Reads `path`; a missing file gives the defaults. Errors say `file:line:column`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_text(path).map(|(config, _)| config)
    }

    /// [`Config::load`], with the text it was read from ("" for a missing file): what
    /// the daemon keeps as its last good configuration ([`LAST_GOOD`]).
    pub fn load_text(path: &Path) -> Result<(Self, String), ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Config::default(), String::new()));
            }
            Err(err) => {
                return Err(ConfigError::new(
                    path.display().to_string(),
                    err.to_string(),
                ));
            }
        };
        Ok((Self::parse(&path.display().to_string(), &text)?, text))
    }

    /// The state directory a configuration file names, read as leniently as it can be:
    /// its `state_dir` if the file is TOML with such a string (as most broken files
    /// are: an unknown key, a value out of range), else the default. Where a start with
    /// a broken file looks for [`LAST_GOOD`].
    pub fn state_dir_of(path: &Path) -> PathBuf {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok())
            .and_then(|table| match table.get("state_dir") {
                Some(toml::Value::String(dir)) => Some(PathBuf::from(dir)),
                _ => None,
            })
            .unwrap_or_else(|| Config::default().state_dir)
    }

    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start).min(text.len());
            let before = &text[..text.floor_char_boundary(offset)];
            let line = before.matches('\n').count() + 1;
            let column = before.chars().count()
                - before
                    .rfind('\n')
                    .map_or(0, |i| before[..=i].chars().count())
                + 1;
            ConfigError::new(format!("{file}:{line}:{column}"), e.message().trim_end())
        })?;
        config.check(file)?;
        Ok(config)
    }

    fn check(&self, file: &str) -> Result<(), ConfigError> {
        let err = |message: String| Err(ConfigError::new(file, message));
        for user in &self.trusted_callers {
            if let Err(e) = check_user_name(user) {
                return err(format!("trusted_callers: {e}"));
            }
        }
        if let Some(group) = &self.admin_group
            && let Err(e) = check_group_name(group)
        {
            return err(format!("admin_group: {e}"));
        }
        for group in &self.privileged_groups {
            if let Err(e) = check_group_name(group) {
                return err(format!("privileged_groups: {e}"));
            }
        }
        let durations = [
            ("nss_cache_secs", self.nss_cache_secs),
            ("revalidate_secs", self.revalidate_secs),
            ("exec.timeout_secs", self.exec.timeout_secs),
            ("exec.kill_grace_secs", self.exec.kill_grace_secs),
            ("exec.retention_secs", self.exec.retention_secs),
            ("sessions.ttl_secs", self.sessions.ttl_secs),
            ("sessions.idle_secs", self.sessions.idle_secs),
            ("audit.retention_secs", self.audit.retention_secs),
        ];
        for (key, secs) in durations {
            if secs > MAX_SECS {
                return err(format!(
                    "{key} = {secs} is more than {MAX_SECS} (ten years)"
                ));
            }
        }
        for (key, value) in [
            ("denial_rate", self.denial_rate),
            ("denial_burst", self.denial_burst),
        ] {
            if value > MAX_DENIALS {
                return err(format!("{key} = {value} is more than {MAX_DENIALS}"));
            }
        }
        if !(1..=MAX_NSS_TIMEOUT_MS).contains(&self.nss_timeout_ms) {
            return err(format!(
                "nss_timeout_ms = {}: it must be between 1 and {MAX_NSS_TIMEOUT_MS}",
                self.nss_timeout_ms
            ));
        }
        if self.denial_burst == 0 {
            return err("denial_burst = 0: it must be at least 1".into());
        }
        if self.write_rate_bytes > 0 && self.write_burst_bytes == 0 {
            return err(
                "write_burst_bytes = 0: it must be at least 1 when write_rate_bytes is set".into(),
            );
        }
        let exec = &self.exec;
        // Linux takes no single argument or variable of 128 KiB or more, and at most
        // about 2 MiB of argv and environment together (ARG_MAX with the default stack).
        if exec.max_argv_bytes > 1024 * 1024 || exec.max_env_bytes > 1024 * 1024 {
            return err("exec.max_argv_bytes and exec.max_env_bytes are at most 1048576 (Linux would refuse more at exec)".into());
        }
        if exec.max_args == 0 || exec.max_argv_bytes == 0 {
            return err("exec.max_args and exec.max_argv_bytes must be at least 1".into());
        }
        if !(2..=65536).contains(&exec.max_cwd_bytes) {
            return err(format!(
                "exec.max_cwd_bytes = {} is not between 2 and 65536",
                exec.max_cwd_bytes
            ));
        }
        for key in &exec.env_keep {
            let valid = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return err(format!(
                    "exec.env_keep: {key:?} is not an environment variable name"
                ));
            }
        }
        for (key, name) in [
            ("login_cookie", &self.sessions.login_cookie),
            ("proxy_cookie", &self.sessions.proxy_cookie),
        ] {
            if !crate::cookies::is_cookie_name(name) {
                return err(format!("sessions.{key}: {name:?} is not a cookie name"));
            }
        }
        if self.sessions.max_per_login == 0 {
            return err("sessions.max_per_login must be at least 1".into());
        }
        if self.store.cache_bytes < 1024 * 1024 {
            return err(format!(
                "store.cache_bytes = {} is less than 1048576",
                self.store.cache_bytes
            ));
        }
        Ok(())
    }

    /// `UID_MIN`: the configured one, else login.defs', else 1000.
    pub fn uid_min(&self) -> u32 {
        self.uid_min.unwrap_or_else(|| {
            std::fs::read_to_string("/etc/login.defs")
                .ok()
                .and_then(|defs| login_defs_uid_min(&defs))
                .unwrap_or(1000)
        })
    }
}

/// What a reload makes of a configuration file read again.
#[derive(Debug, Clone, PartialEq)]
pub struct Reloaded {
    /// The file as read, except the keys that need a restart: those keep their running
    /// values, so this is what the daemon runs with after the reload.
    pub config: Config,
    /// Keys (sections as `exec`, or `section.key`) that changed and take effect now.
    pub applied: Vec<&'static str>,
    /// Keys that changed but are read only at start: they wait for a restart.
    pub need_restart: Vec<&'static str>,
}

/// Splits a configuration read again (`read`) against the `running` one. The keys that
/// need a restart are those the daemon builds something from at start: the store
/// (`state_dir`, `store.cache_bytes`, `store.reserve_bytes`), the account cache
/// (`nss_cache_secs`, `nss_timeout_ms`), `uid_min`, and where and how jobs run
/// (`exec.backend`, `exec.containment`, `exec.slice_*`). Everything else is read where
/// it is used and takes effect at once.
pub fn reloaded(running: &Config, read: Config) -> Reloaded {
    let mut config = read;
    let mut need_restart = Vec::new();
    macro_rules! keep_running {
        ($($($key:ident).+),*) => {
            $(if config.$($key).+ != running.$($key).+ {
                need_restart.push(stringify!($($key).+));
                config.$($key).+ = running.$($key).+.clone();
            })*
        };
    }
    keep_running!(
        state_dir,
        nss_cache_secs,
        nss_timeout_ms,
        uid_min,
        store.cache_bytes,
        store.reserve_bytes,
        exec.backend,
        exec.containment,
        exec.slice_cpu_quota_percent,
        exec.slice_memory_max_bytes,
        exec.slice_tasks_max
    );
    let mut applied = Vec::new();
    macro_rules! applied {
        ($($key:ident),*) => {
            $(if config.$key != running.$key {
                applied.push(stringify!($key));
            })*
        };
    }
    applied!(
        rules_dir,
        trusted_callers,
        admin_group,
        revalidate_secs,
        denial_rate,
        denial_burst,
        write_rate_bytes,
        write_burst_bytes,
        privileged_groups,
        exec,
        sessions,
        store,
        audit
    );
    Reloaded {
        config,
        applied,
        need_restart,
    }
}

/// The `UID_MIN` of a login.defs text.
fn login_defs_uid_min(defs: &str) -> Option<u32> {
    defs.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("UID_MIN")).then(|| words.next()?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_means_safe_defaults() {
        let config = Config::load(Path::new("/nonexistent/proxyuserd.toml")).unwrap();
        assert_eq!(config, Config::default());
        assert!(config.trusted_callers.is_empty());
        assert_eq!(config.admin_group, None);
    }

    #[test]
    fn keys_parse_and_errors_are_located() {
        let config = Config::parse(
            "c.toml",
            "state_dir = \"/tmp/s\"\ntrusted_callers = [\"gw\"]\nadmin_group = \"wheel\"\n[exec]\nenv_keep = [\"LANG\"]\n",
        )
        .unwrap();
        assert_eq!(config.state_dir, PathBuf::from("/tmp/s"));
        assert_eq!(config.trusted_callers, vec!["gw".to_string()]);
        assert_eq!(config.exec.env_keep, vec!["LANG".to_string()]);
        let err = Config::parse("c.toml", "state_dir = \"/x\"\nadmin_gruop = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("c.toml:2:1: unknown field `admin_gruop`"),
            "{err}"
        );
        let err = Config::parse("c.toml", "trusted_callers = [\"a b\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid user name \"a b\""), "{err}");
        let err = Config::parse("c.toml", "[exec]\ntimeout_secs = 18446744073709551615\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exec.timeout_secs = 18446744073709551615 is more than"),
            "{err}"
        );
        let err = Config::parse("c.toml", "[exec]\nenv_keep = [\"A=B\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"A=B\" is not an environment variable name"),
            "{err}"
        );
        let err = Config::parse("c.toml", "denial_burst = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("denial_burst = 0: it must be at least 1"),
            "{err}"
        );
        let err = Config::parse("c.toml", "nss_timeout_ms = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nss_timeout_ms = 0: it must be between 1 and 600000"),
            "{err}"
        );
        let err = Config::parse("c.toml", "denial_rate = 2000000\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("denial_rate = 2000000 is more than"), "{err}");
    }

    #[test]
    fn a_reload_applies_what_is_read_where_used_and_keeps_what_needs_a_restart() {
        let running = Config::default();
        let read = Config::parse(
            "c.toml",
            "admin_group = \"wheel\"\nnss_cache_secs = 9\n[exec]\nmax_args = 9\n\
             backend = \"direct\"\n[store]\ncache_bytes = 2097152\nmin_free_bytes = 2\n",
        )
        .unwrap();
        let reloaded = reloaded(&running, read);
        assert_eq!(reloaded.applied, vec!["admin_group", "exec", "store"]);
        assert_eq!(
            reloaded.need_restart,
            vec!["nss_cache_secs", "store.cache_bytes", "exec.backend"]
        );
        let config = reloaded.config;
        assert_eq!(config.admin_group.as_deref(), Some("wheel"));
        assert_eq!(config.exec.max_args, 9);
        assert_eq!(config.store.min_free_bytes, 2);
        // What needs a restart keeps the running value.
        assert_eq!(config.nss_cache_secs, running.nss_cache_secs);
        assert_eq!(config.exec.backend, running.exec.backend);
        assert_eq!(config.store.cache_bytes, running.store.cache_bytes);
        let same = reloaded_same(&running);
        assert!(same.applied.is_empty() && same.need_restart.is_empty());
        assert_eq!(same.config, running);
    }

    fn reloaded_same(running: &Config) -> Reloaded {
        reloaded(running, running.clone())
    }

    #[test]
    fn uid_min_comes_from_login_defs() {
        let defs = "# comment\nUID_MAX 60000\nUID_MIN\t\t 1000\n#SYS_UID_MIN 100\n";
        assert_eq!(login_defs_uid_min(defs), Some(1000));
        assert_eq!(login_defs_uid_min("SYS_UID_MIN 100\n"), None);
        let config = Config::parse("c.toml", "uid_min = 500\n").unwrap();
        assert_eq!(config.uid_min(), 500);
    }

    #[test]
    fn the_example_config_is_valid_and_says_the_defaults() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/proxyuserd.toml");
        let config = Config::load(Path::new(example)).unwrap();
        let defaults = Config::default();
        assert_eq!(
            (
                config.denial_rate,
                config.denial_burst,
                config.nss_cache_secs,
                config.nss_timeout_ms
            ),
            (
                defaults.denial_rate,
                defaults.denial_burst,
                defaults.nss_cache_secs,
                defaults.nss_timeout_ms
            )
        );
    }
}

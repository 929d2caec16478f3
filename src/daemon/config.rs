//! `/etc/proxyuserd/proxyuserd.toml`. A missing file means the defaults below, which are
//! safe: no trusted callers, only root is an admin, no rules (everything denied).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::identity::name::{check_group_name, check_user_name};

pub const DEFAULT_PATH: &str = "/etc/proxyuserd/proxyuserd.toml";

/// Longest duration any setting takes (ten years), so that no deadline overflows.
const MAX_SECS: u64 = 10 * 365 * 24 * 3600;

/// Longest wait for one NSS lookup (ten minutes): past that, nothing is waiting anymore.
const MAX_NSS_TIMEOUT_MS: u64 = 600_000;

/// Bound of `denial_rate` and `denial_burst`.
const MAX_DENIALS: u32 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    pub exec: ExecConfig,
    pub sessions: SessionsConfig,
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
            exec: ExecConfig::default(),
            sessions: SessionsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// Finished jobs and their output are deleted after this many seconds.
    pub retention_secs: u64,
    /// `auto` (transient systemd units when systemd is PID 1, else `direct`),
    /// `systemd` or `direct` (the daemon forks jobs itself).
    pub backend: String,
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
            retention_secs: 7 * 24 * 3600,
            backend: "auto".into(),
            slice_cpu_quota_percent: 0,
            slice_memory_max_bytes: 0,
            slice_tasks_max: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Absolute lifetime of a session.
    pub ttl_secs: u64,
    /// A session unused this long ends.
    pub idle_secs: u64,
    pub login_cookie: String,
    pub proxy_cookie: String,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            ttl_secs: 12 * 3600,
            idle_secs: 3600,
            login_cookie: "linkis_user_session_ticket_id_v1".into(),
            proxy_cookie: "linkis_user_session_proxy_ticket_id_v1".into(),
        }
    }
}

impl Config {
    /// Reads `path`; a missing file gives the defaults. Errors say `file:line:column`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(err) => return Err(format!("{}: {err}", path.display())),
        };
        Self::parse(&path.display().to_string(), &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start).min(text.len());
            let before = &text[..text.floor_char_boundary(offset)];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{file}:{line}:{column}: {}", e.message().trim_end())
        })?;
        for user in &config.trusted_callers {
            check_user_name(user).map_err(|e| format!("{file}: trusted_callers: {e}"))?;
        }
        if let Some(group) = &config.admin_group {
            check_group_name(group).map_err(|e| format!("{file}: admin_group: {e}"))?;
        }
        let durations = [
            ("nss_cache_secs", config.nss_cache_secs),
            ("revalidate_secs", config.revalidate_secs),
            ("exec.timeout_secs", config.exec.timeout_secs),
            ("exec.retention_secs", config.exec.retention_secs),
            ("sessions.ttl_secs", config.sessions.ttl_secs),
            ("sessions.idle_secs", config.sessions.idle_secs),
        ];
        for (key, secs) in durations {
            if secs > MAX_SECS {
                return Err(format!(
                    "{file}: {key} = {secs} is more than {MAX_SECS} (ten years)"
                ));
            }
        }
        for (key, value) in [
            ("denial_rate", config.denial_rate),
            ("denial_burst", config.denial_burst),
        ] {
            if value > MAX_DENIALS {
                return Err(format!(
                    "{file}: {key} = {value} is more than {MAX_DENIALS}"
                ));
            }
        }
        if !(1..=MAX_NSS_TIMEOUT_MS).contains(&config.nss_timeout_ms) {
            return Err(format!(
                "{file}: nss_timeout_ms = {}: it must be between 1 and {MAX_NSS_TIMEOUT_MS}",
                config.nss_timeout_ms
            ));
        }
        if config.denial_burst == 0 {
            return Err(format!("{file}: denial_burst = 0: it must be at least 1"));
        }
        if !["auto", "systemd", "direct"].contains(&config.exec.backend.as_str()) {
            return Err(format!(
                "{file}: exec.backend: {:?} is not auto, systemd or direct",
                config.exec.backend
            ));
        }
        for key in &config.exec.env_keep {
            let valid = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(format!(
                    "{file}: exec.env_keep: {key:?} is not an environment variable name"
                ));
            }
        }
        for (key, name) in [
            ("login_cookie", &config.sessions.login_cookie),
            ("proxy_cookie", &config.sessions.proxy_cookie),
        ] {
            if !crate::authority::cookies::is_cookie_name(name) {
                return Err(format!(
                    "{file}: sessions.{key}: {name:?} is not a cookie name"
                ));
            }
        }
        Ok(config)
    }
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
        let err = Config::parse("c.toml", "state_dir = \"/x\"\nadmin_gruop = \"x\"\n").unwrap_err();
        assert!(
            err.starts_with("c.toml:2:1: unknown field `admin_gruop`"),
            "{err}"
        );
        let err = Config::parse("c.toml", "trusted_callers = [\"a b\"]\n").unwrap_err();
        assert!(err.contains("invalid user name \"a b\""), "{err}");
        let err =
            Config::parse("c.toml", "[exec]\ntimeout_secs = 18446744073709551615\n").unwrap_err();
        assert!(
            err.contains("exec.timeout_secs = 18446744073709551615 is more than"),
            "{err}"
        );
        let err = Config::parse("c.toml", "[exec]\nenv_keep = [\"A=B\"]\n").unwrap_err();
        assert!(
            err.contains("\"A=B\" is not an environment variable name"),
            "{err}"
        );
        let err = Config::parse("c.toml", "denial_burst = 0\n").unwrap_err();
        assert!(
            err.contains("denial_burst = 0: it must be at least 1"),
            "{err}"
        );
        let err = Config::parse("c.toml", "nss_timeout_ms = 0\n").unwrap_err();
        assert!(
            err.contains("nss_timeout_ms = 0: it must be between 1 and 600000"),
            "{err}"
        );
        let err = Config::parse("c.toml", "denial_rate = 2000000\n").unwrap_err();
        assert!(err.contains("denial_rate = 2000000 is more than"), "{err}");
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

//! The module's arguments on its stack line, e.g.
//! `auth [success=done default=ignore] pam_proxyuserd.so services=su,su-l debug`.

use std::time::Duration;

/// How long one call to the daemon may take by default, connecting included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_TIMEOUT_SECS: u64 = 60;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Log every step (LOG_DEBUG).
    pub debug: bool,
    /// Log only failures, not grants, refusals and skips.
    pub quiet: bool,
    /// The daemon unreachable → `PAM_IGNORE` instead of `PAM_AUTHINFO_UNAVAIL`.
    pub ignore_unavailable: bool,
    /// Act only in these PAM services (`services=su,su-l`); `None`: wherever the line is.
    pub services: Option<Vec<String>>,
    /// account: proxy-type users that may still be logged into directly.
    pub exempt: Vec<String>,
    pub timeout: Duration,
    /// Arguments not understood, to be logged (they change nothing).
    pub unknown: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            debug: false,
            quiet: false,
            ignore_unavailable: false,
            services: None,
            exempt: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            unknown: Vec::new(),
        }
    }
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl Options {
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Options {
        let mut options = Options::default();
        for arg in args {
            match arg.split_once('=') {
                None if arg == "debug" => options.debug = true,
                None if arg == "quiet" => options.quiet = true,
                None if arg == "ignore_unavailable" => options.ignore_unavailable = true,
                Some(("services", value)) => options.services = Some(list(value)),
                Some(("exempt", value)) => options.exempt.extend(list(value)),
                Some(("timeout", value)) => match value.parse::<u64>() {
                    Ok(secs @ 1..=MAX_TIMEOUT_SECS) => options.timeout = Duration::from_secs(secs),
                    _ => options.unknown.push(arg.to_string()),
                },
                _ => options.unknown.push(arg.to_string()),
            }
        }
        options
    }

    /// Whether the line acts in PAM service `service`.
    pub fn acts_in(&self, service: &str) -> bool {
        self.services
            .as_ref()
            .is_none_or(|services| services.iter().any(|s| s == service))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_read_and_the_rest_reported() {
        let o = Options::parse([
            "debug",
            "ignore_unavailable",
            "services=su,su-l",
            "exempt=backup",
            "exempt=etl,",
            "timeout=20",
            "timeout=0",
            "timeout=600",
            "verbose",
        ]);
        assert!(o.debug && o.ignore_unavailable && !o.quiet);
        assert_eq!(o.services, Some(vec!["su".into(), "su-l".into()]));
        assert_eq!(o.exempt, vec!["backup".to_string(), "etl".to_string()]);
        assert_eq!(o.timeout, Duration::from_secs(20));
        assert_eq!(o.unknown, vec!["timeout=0", "timeout=600", "verbose"]);
        assert!(o.acts_in("su") && o.acts_in("su-l") && !o.acts_in("polkit-1"));
    }

    #[test]
    fn without_arguments_the_line_acts_everywhere_with_the_default_timeout() {
        let o = Options::parse([]);
        assert_eq!(o, Options::default());
        assert!(o.acts_in("sshd") && o.acts_in("su"));
        assert_eq!(o.timeout, DEFAULT_TIMEOUT);
    }
}

//! The environment a job gets: a clean one (README, "Jobs"), plus only the caller's
//! variables that `exec.env_keep` names.

use std::collections::HashMap;

/// A job's environment, and what became of the caller's variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnv {
    /// The complete environment, sorted by name.
    pub vars: Vec<(String, String)>,
    /// The caller's variables it kept (names).
    pub kept: Vec<String>,
    /// The caller's variables it dropped (names, sorted).
    pub dropped: Vec<String>,
}

/// What the run-as account contributes.
pub struct RunAsEnv<'a> {
    pub name: &'a str,
    pub home: &'a str,
    pub shell: &'a str,
}

/// `PATH` (`secure_path`), `HOME`, `USER`, `LOGNAME`, `SHELL` of the run-as user and
/// `PROXYUSERD_LOGIN_USER`, which the caller cannot override, plus the caller's
/// variables named in `env_keep`.
pub fn job_env(
    requested: &HashMap<String, String>,
    env_keep: &[String],
    secure_path: &str,
    run_as: &RunAsEnv<'_>,
    login: &str,
) -> JobEnv {
    let fixed = [
        ("PATH", secure_path),
        ("HOME", run_as.home),
        ("USER", run_as.name),
        ("LOGNAME", run_as.name),
        ("SHELL", run_as.shell),
        ("PROXYUSERD_LOGIN_USER", login),
    ];
    let mut vars = Vec::new();
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for (name, value) in requested {
        let overridden = fixed.iter().any(|(f, _)| f == name);
        if env_keep.contains(name) && !overridden {
            kept.push(name.clone());
            vars.push((name.clone(), value.clone()));
        } else if !overridden {
            dropped.push(name.clone());
        }
    }
    vars.extend(fixed.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    vars.sort();
    kept.sort();
    dropped.sort();
    JobEnv {
        vars,
        kept,
        dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kept_variables_pass_and_the_fixed_ones_win() {
        let requested: HashMap<String, String> = [
            ("LANG", "C.UTF-8"),
            ("SECRET", "x"),
            ("PATH", "/evil"),
            ("HOME", "/tmp"),
            ("PROXYUSERD_LOGIN_USER", "root"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let keep = vec!["LANG".to_string(), "PATH".to_string()];
        let run_as = RunAsEnv {
            name: "etl",
            home: "/home/etl",
            shell: "/bin/sh",
        };
        let env = job_env(&requested, &keep, "/usr/bin:/bin", &run_as, "alice");
        let get = |k: &str| {
            env.vars
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("LANG"), Some("C.UTF-8"));
        assert_eq!(get("SECRET"), None);
        assert_eq!(get("PATH"), Some("/usr/bin:/bin"));
        assert_eq!(get("HOME"), Some("/home/etl"));
        assert_eq!(get("USER"), Some("etl"));
        assert_eq!(get("PROXYUSERD_LOGIN_USER"), Some("alice"));
        assert_eq!(env.kept, ["LANG"]);
        assert_eq!(env.dropped, ["SECRET"]);
        assert_eq!(env.vars.len(), 7);
    }
}

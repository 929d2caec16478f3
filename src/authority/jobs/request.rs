//! What an `Exec` may ask, checked before anything is written: the bounds of
//! `[exec]` and the shape of argv, environment and working directory.

use std::collections::HashMap;

use crate::config::ExecConfig;

use super::super::Error;

/// The longest single argument or variable Linux executes (MAX_ARG_STRLEN, 32 pages,
/// including its NUL).
const MAX_ARG_STRLEN: usize = 32 * 4096;

/// A job id: letters, digits, `-` and `_`, at most 64 bytes.
pub fn check_job_id(id: &str) -> Result<(), Error> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidArgs(format!(
            "invalid job id {:?}: job ids are letters, digits, '-' and '_'",
            shorten(id)
        )))
    }
}

/// Checks argv, env and cwd of an `Exec` against `limits`.
pub fn check(
    limits: &ExecConfig,
    argv: &[String],
    env: &HashMap<String, String>,
    cwd: &str,
) -> Result<(), Error> {
    let Some(program) = argv.first() else {
        return Err(Error::InvalidArgs(
            "argv is empty: give the program to run".into(),
        ));
    };
    if argv.len() > limits.max_args as usize {
        return Err(Error::LimitsExceeded(format!(
            "argv has {} arguments, more than exec.max_args ({})",
            argv.len(),
            limits.max_args
        )));
    }
    let argv_bytes: usize = argv.iter().map(|a| a.len() + 1).sum();
    if argv_bytes as u64 > limits.max_argv_bytes {
        return Err(Error::LimitsExceeded(format!(
            "argv is {argv_bytes} bytes, more than exec.max_argv_bytes ({})",
            limits.max_argv_bytes
        )));
    }
    if let Some((i, arg)) = argv
        .iter()
        .enumerate()
        .find(|(_, a)| a.len() >= MAX_ARG_STRLEN)
    {
        return Err(Error::InvalidArgs(format!(
            "argument {i} is {} bytes: Linux executes none of {MAX_ARG_STRLEN} bytes or more",
            arg.len()
        )));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(Error::InvalidArgs("an argument contains a NUL byte".into()));
    }
    check_path("program", program, limits)?;
    if env.len() > limits.max_env_entries as usize {
        return Err(Error::LimitsExceeded(format!(
            "{} environment variables, more than exec.max_env_entries ({})",
            env.len(),
            limits.max_env_entries
        )));
    }
    let env_bytes: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    if env_bytes as u64 > limits.max_env_bytes {
        return Err(Error::LimitsExceeded(format!(
            "the environment is {env_bytes} bytes, more than exec.max_env_bytes ({})",
            limits.max_env_bytes
        )));
    }
    for (name, value) in env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(Error::InvalidArgs(format!(
                "invalid environment variable name {:?}",
                shorten(name)
            )));
        }
        if value.contains('\0') {
            return Err(Error::InvalidArgs(format!(
                "environment variable {} contains a NUL byte",
                shorten(name)
            )));
        }
    }
    if !cwd.is_empty() {
        check_path("cwd", cwd, limits)?;
    }
    Ok(())
}

/// An absolute path of bounded length, not through `/proc` (whose `self` would be the
/// daemon), without NUL bytes.
fn check_path(what: &str, path: &str, limits: &ExecConfig) -> Result<(), Error> {
    if path.len() > limits.max_cwd_bytes as usize {
        return Err(Error::LimitsExceeded(format!(
            "{what} is {} bytes, more than exec.max_cwd_bytes ({})",
            path.len(),
            limits.max_cwd_bytes
        )));
    }
    if !path.starts_with('/') {
        let hint = if what == "program" {
            " (there is no PATH search)"
        } else {
            ""
        };
        return Err(Error::InvalidArgs(format!(
            "{what} {:?} is not an absolute path{hint}",
            shorten(path)
        )));
    }
    if path.contains('\0') {
        return Err(Error::InvalidArgs(format!("{what} contains a NUL byte")));
    }
    // `..` counted lexically, so that `/../proc` is seen for what it is.
    let mut depth = Vec::new();
    for part in std::path::Path::new(path).components() {
        match part {
            std::path::Component::Normal(name) => depth.push(name),
            std::path::Component::ParentDir => {
                depth.pop();
            }
            _ => {}
        }
    }
    let under_proc = depth.first().is_some_and(|first| *first == "proc");
    if under_proc {
        return Err(Error::InvalidArgs(format!(
            "{what} {:?} is under /proc, which jobs may not use as a path",
            shorten(path)
        )));
    }
    Ok(())
}

/// A value as error messages show it: at most 64 characters.
fn shorten(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    fn err(result: Result<(), Error>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn each_limit_is_named_when_reached() {
        let limits = ExecConfig::default();
        let none = HashMap::new();
        assert!(check(&limits, &argv(&["/bin/true"]), &none, "").is_ok());
        let big = "x".repeat(100_000);
        let e = err(check(
            &limits,
            &argv(&["/bin/true", &big, &big]),
            &none,
            "/",
        ));
        assert!(e.contains("more than exec.max_argv_bytes (131072)"), "{e}");
        let huge = "x".repeat(262_000);
        let loose = ExecConfig {
            max_argv_bytes: 1024 * 1024,
            ..ExecConfig::default()
        };
        let e = err(check(&loose, &argv(&["/bin/true", &huge]), &none, "/"));
        assert!(
            e.contains("Linux executes none of 131072 bytes or more"),
            "{e}"
        );
        let many: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
        let mut args = argv(&["/bin/true"]);
        args.extend(many);
        let e = err(check(&limits, &args, &none, "/"));
        assert!(e.contains("more than exec.max_args (4096)"), "{e}");
        let env: HashMap<String, String> = [("A".to_string(), "v".repeat(200_000))].into();
        let e = err(check(&limits, &argv(&["/bin/true"]), &env, "/"));
        assert!(e.contains("more than exec.max_env_bytes"), "{e}");
        let long_cwd = format!("/{}", "d".repeat(5000));
        let e = err(check(&limits, &argv(&["/bin/true"]), &none, &long_cwd));
        assert!(e.contains("more than exec.max_cwd_bytes (4096)"), "{e}");
    }

    #[test]
    fn paths_are_absolute_and_not_under_proc() {
        let limits = ExecConfig::default();
        let none = HashMap::new();
        let e = err(check(&limits, &argv(&["true"]), &none, ""));
        assert!(
            e.contains("not an absolute path (there is no PATH search)"),
            "{e}"
        );
        let e = err(check(
            &limits,
            &argv(&["/bin/true"]),
            &none,
            "/proc/self/cwd",
        ));
        assert!(e.contains("is under /proc"), "{e}");
        let e = err(check(&limits, &argv(&["/proc/self/exe"]), &none, ""));
        assert!(e.contains("is under /proc"), "{e}");
        let e = err(check(
            &limits,
            &argv(&["/bin/true"]),
            &none,
            "/tmp/../proc/1/cwd",
        ));
        assert!(e.contains("is under /proc"), "{e}");
        assert!(check(&limits, &argv(&["/bin/true"]), &none, "/processing").is_ok());
        let e = err(check(&limits, &argv(&["/bin/true"]), &none, "tmp"));
        assert!(e.contains("cwd \"tmp\" is not an absolute path"), "{e}");
    }
}

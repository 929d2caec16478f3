//! User and group name validation: pure, shared by the rule parser and the bus layer.
//!
//! The accepted form is the portable unix one (`useradd`'s default check) widened for
//! directory services: letters, digits, `_`, `.`, `-`, `@` (SSSD's `user@domain`), and a
//! trailing `$` (Samba machine accounts). Everything that could be misread by a shell, a
//! path, a log line or an NSS backend is refused.

use std::fmt;

/// Longest name accepted. Linux itself allows 32 for local accounts; directory services
/// produce longer fully qualified names, so leave room for those.
pub const MAX_NAME_LEN: usize = 128;

/// Why a name was refused. The message names the offending value (escaped, so that
/// control characters in it cannot forge log lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    what: &'static str,
    value: String,
    why: &'static str,
}

impl NameError {
    /// The human-readable reason, without the value.
    pub fn why(&self) -> &'static str {
        self.why
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} {:?}: {}", self.what, self.value, self.why)
    }
}

impl std::error::Error for NameError {}

/// Checks a user name (login or proxy).
pub fn check_user_name(name: &str) -> Result<(), NameError> {
    check(name, "user name")
}

/// Checks a group name.
pub fn check_group_name(name: &str) -> Result<(), NameError> {
    check(name, "group name")
}

fn check(name: &str, what: &'static str) -> Result<(), NameError> {
    let fail = |why| {
        let mut value: String = name.chars().take(MAX_NAME_LEN + 1).collect();
        if value.len() < name.len() {
            value.push('…');
        }
        Err(NameError { what, value, why })
    };
    if name.is_empty() {
        return fail("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return fail("it is longer than 128 bytes");
    }
    if name == "." || name == ".." {
        return fail("it is a path component");
    }
    let bytes = name.as_bytes();
    if matches!(bytes[0], b'-' | b'.' | b'@' | b'$') {
        return fail("it starts with '-', '.', '@' or '$'");
    }
    if bytes.iter().all(u8::is_ascii_digit) {
        return fail("it is all digits and would be taken for a uid");
    }
    let last = bytes.len() - 1;
    for (i, &b) in bytes.iter().enumerate() {
        let ok = b.is_ascii_alphanumeric()
            || matches!(b, b'_' | b'.' | b'-' | b'@')
            || (b == b'$' && i == last);
        if !ok {
            return fail(match b {
                b'/' => "it contains '/'",
                0 => "it contains NUL",
                b if b.is_ascii_whitespace() => "it contains whitespace",
                b if b.is_ascii_control() => "it contains a control character",
                b'$' => "'$' is only allowed at the end",
                b if !b.is_ascii() => "it contains a non-ASCII character",
                _ => "it contains a character other than letters, digits, '_', '.', '-', '@'",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_names() {
        for name in [
            "alice",
            "etl",
            "svc_report-2",
            "a.b",
            "alice@corp.example",
            "host$",
            "_apt",
        ] {
            assert_eq!(check_user_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn refuses_bad_names_with_reason() {
        let cases = [
            ("", "it is empty"),
            ("-rf", "it starts with '-', '.', '@' or '$'"),
            ("a/b", "it contains '/'"),
            ("a\0b", "it contains NUL"),
            ("a b", "it contains whitespace"),
            ("a\tb", "it contains whitespace"),
            ("a\x07", "it contains a control character"),
            ("..", "it is a path component"),
            ("1000", "it is all digits and would be taken for a uid"),
            ("a$b", "'$' is only allowed at the end"),
            ("ålice", "it contains a non-ASCII character"),
            (
                "a:b",
                "it contains a character other than letters, digits, '_', '.', '-', '@'",
            ),
            (
                "*",
                "it contains a character other than letters, digits, '_', '.', '-', '@'",
            ),
        ];
        for (name, why) in cases {
            let err = check_user_name(name).unwrap_err();
            assert_eq!(err.why(), why, "{name:?}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            check_user_name(&long).unwrap_err().why(),
            "it is longer than 128 bytes"
        );
        assert_eq!(check_user_name(&"a".repeat(MAX_NAME_LEN)), Ok(()));
    }

    #[test]
    fn message_names_the_value_escaped() {
        let err = check_user_name("bad\nname").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid user name "bad\nname": it contains whitespace"#
        );
    }
}

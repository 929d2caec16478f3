//! HTTP `Cookie` request headers (RFC 6265 §5.4, parsed leniently as §5.2 advises for
//! user agents' output): `name=value` pairs separated by `;`, optional whitespace,
//! optionally quoted values, duplicates kept in order, anything malformed skipped.

/// Longest header accepted (browsers send at most a few KiB; servers cap near 8 KiB).
pub const MAX_HEADER: usize = 64 * 1024;

/// Why a header was refused outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieError {
    TooLong(usize),
    ControlCharacter(usize),
}

impl std::fmt::Display for CookieError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CookieError::TooLong(len) => {
                write!(
                    f,
                    "cookie header of {len} bytes is longer than {MAX_HEADER}"
                )
            }
            CookieError::ControlCharacter(at) => {
                write!(f, "cookie header has a control character at byte {at}")
            }
        }
    }
}

/// The (name, value) pairs of a `Cookie` header, in order.
pub fn parse(header: &str) -> Result<Vec<(&str, &str)>, CookieError> {
    if header.len() > MAX_HEADER {
        return Err(CookieError::TooLong(header.len()));
    }
    if let Some(at) = header
        .bytes()
        .position(|b| b.is_ascii_control() && b != b'\t')
    {
        return Err(CookieError::ControlCharacter(at));
    }
    let mut pairs = Vec::new();
    for part in header.split(';') {
        let Some((name, value)) = part.split_once('=') else {
            continue;
        };
        let name = name.trim_matches([' ', '\t']);
        let value = value.trim_matches([' ', '\t']);
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if !is_cookie_name(name) {
            continue;
        }
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// A cookie name is an RFC 7230 token: one or more `tchar`.
pub fn is_cookie_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_token)
}

/// RFC 7230 `tchar`.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_whitespace_quotes_and_duplicates() {
        let header = "a=1; b = \"two\" ;c=3;a=4;;junk; =x; d=; bad name=5";
        assert_eq!(
            parse(header).unwrap(),
            vec![("a", "1"), ("b", "two"), ("c", "3"), ("a", "4"), ("d", "")]
        );
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("no-equals-sign").unwrap(), vec![]);
        assert_eq!(parse("\tk=v\t").unwrap(), vec![("k", "v")]);
    }

    #[test]
    fn control_characters_and_size_are_refused() {
        assert_eq!(parse("a=1\r\nb=2"), Err(CookieError::ControlCharacter(3)));
        assert_eq!(parse("a=\u{7f}"), Err(CookieError::ControlCharacter(2)));
        let long = format!("a={}", "x".repeat(MAX_HEADER));
        assert_eq!(parse(&long), Err(CookieError::TooLong(MAX_HEADER + 2)));
    }
}

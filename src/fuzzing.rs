//! Entry points of the fuzz targets (`fuzz/`, `cargo +nightly fuzz run TARGET`): each
//! feeds arbitrary bytes to one parser and panics when a promise of that parser breaks.
//! A panic here is a finding, whatever its message. Not an API: only the fuzz targets
//! and the tests below call these.
//!
//! The promises: a parser returns a value or an error that says where, never panics;
//! the fast rule reader, when it reads a file at all, reads it as the TOML reader does;
//! a parsed rule set compiles or names where it does not, and each of its rules renders
//! back to text that parses.

use std::sync::Arc;

use crate::config::Config;
use crate::cookies::{self, CookieError, MAX_HEADER};
use crate::policy::{
    self, CompiledRules, Location, RuleFile, Subject, parse_live_rule, parse_rule_file,
    parse_with_toml,
};

/// The path fuzzed rule files and configurations are named by in errors.
const RULE_PATH: &str = "/etc/proxyuserd/rules.d/50-fuzz.toml";
const CONFIG_PATH: &str = "/etc/proxyuserd/proxyuserd.toml";

/// A rule file: both readers, the live-rule reader, then the compiled set.
pub fn rules(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let read = parse_rule_file(RULE_PATH, text);
    let reference = parse_with_toml(RULE_PATH, text);
    if let Some(fast) = policy::parse_plain_form(RULE_PATH, text) {
        assert_eq!(
            reference.as_ref(),
            Ok(&fast),
            "the fast reader reads what the TOML reader does not read alike"
        );
    }
    assert_eq!(read, reference, "parse_rule_file is not its reference");
    match read {
        Ok(file) => compiled(file),
        Err(err) => located(&err.at, RULE_PATH, text),
    }
    match parse_live_rule("live-1", text) {
        Ok(rule) => {
            assert_eq!(rule.len(), 1, "a live rule is one table");
            compiled(rule);
        }
        Err(err) => located(&err.at, "rule", text),
    }
}

/// Compiles one parsed file alone; rules that compile render back to text that parses.
fn compiled(file: RuleFile) {
    let file = Arc::new(file);
    let rules = match CompiledRules::compile(vec![file.clone()], Vec::new()) {
        Ok(rules) => rules,
        Err(err) => {
            assert!(err.at.line >= 1 && err.at.column >= 1, "unlocated: {err}");
            return;
        }
    };
    for rule in file.rules() {
        let toml = rule.to_toml();
        let again = parse_live_rule("again", &toml).unwrap_or_else(|e| {
            panic!(
                "rule {} renders to text that does not parse: {e}\n{toml}",
                rule.id()
            )
        });
        let back = again.rules().next().expect("one rule").to_toml();
        assert_eq!(back, toml, "rendering is not stable");
    }
    // A few decisions over the names the file mentions, to walk the index.
    let groups = vec!["fuzz-group".to_string()];
    let names: Vec<String> = file
        .rules()
        .flat_map(|r| {
            r.to_toml()
                .split('"')
                .skip(1)
                .step_by(2)
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .take(8)
        .collect();
    for login in &names {
        for proxy in &names {
            let login = Subject {
                name: login,
                groups: &groups,
                uid: Some(1000),
            };
            let proxy = Subject {
                name: proxy,
                groups: &groups,
                uid: Some(1001),
            };
            let _ = rules.check(&login, &proxy, 1_800_000_000_000_000);
        }
    }
}

/// An error location names the file and a place inside the text (or just past it).
fn located(at: &Location, file: &str, text: &str) {
    assert_eq!(&*at.file, file, "error names another file");
    let lines = text.split('\n').count();
    assert!(
        at.line >= 1 && at.line <= lines,
        "error at line {} of a text of {lines} lines",
        at.line
    );
    let line = text.split('\n').nth(at.line - 1).unwrap_or("");
    assert!(
        at.column >= 1 && at.column <= line.chars().count() + 1,
        "error at column {} of a line of {} characters",
        at.column,
        line.chars().count()
    );
}

/// A configuration file: defaults filled in, or an error at `file` or `file:line:column`.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Err(err) = Config::parse(CONFIG_PATH, text) else {
        return;
    };
    assert!(!err.message.is_empty(), "an error without a message");
    if err.at == CONFIG_PATH {
        return;
    }
    let place = err
        .at
        .strip_prefix(CONFIG_PATH)
        .and_then(|rest| rest.strip_prefix(':'))
        .unwrap_or_else(|| panic!("error names another file: {}", err.at));
    let (line, column) = place.split_once(':').expect("file:line:column");
    let at = Location {
        file: Arc::from(CONFIG_PATH),
        line: line.parse().expect("a line number"),
        column: column.parse().expect("a column number"),
    };
    located(&at, CONFIG_PATH, text);
}

/// A `Cookie` header: pairs that are pieces of it with token names, or a refusal that
/// is true of it.
pub fn cookies(data: &[u8]) {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    match cookies::parse(header) {
        Ok(pairs) => {
            assert!(header.len() <= MAX_HEADER);
            for (name, value) in pairs {
                assert!(cookies::is_cookie_name(name), "{name:?} is not a token");
                for piece in [name, value] {
                    assert!(!piece.contains(';'), "{piece:?} spans pairs");
                    assert!(header.contains(piece), "{piece:?} is not in the header");
                    assert!(!piece.bytes().any(|b| b.is_ascii_control() && b != b'\t'));
                }
            }
        }
        Err(CookieError::TooLong(len)) => {
            assert_eq!(len, header.len());
            assert!(len > MAX_HEADER);
        }
        Err(CookieError::ControlCharacter(at)) => {
            let b = header.as_bytes()[at];
            assert!(b.is_ascii_control() && b != b'\t', "byte {at} is {b:#x}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::policy::{parse_plain_form, parse_rule_file};

    /// Found by the fuzzer: the fast reader read a comment holding a control character
    /// that TOML (and so the reference reader) refuses.
    #[test]
    fn control_characters_outside_strings_go_to_the_toml_reader() {
        for text in [
            "# a\0comment\n",
            "# \u{7f}\n[[allow]]\n",
            "[[allow]] # \u{1}\n",
        ] {
            assert_eq!(parse_plain_form("r.toml", text), None, "{text:?}");
            let err = parse_rule_file("r.toml", text).unwrap_err();
            assert_eq!(err.at.line, 1, "{err}");
            super::rules(text.as_bytes());
        }
    }

    /// Every file of the committed seed corpus (fuzz/corpus/TARGET/) passes its target.
    #[test]
    fn seed_corpus_passes_its_targets() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        type Entry = fn(&[u8]);
        let targets: [(&str, Entry); 3] = [
            ("rules", super::rules),
            ("config", super::config),
            ("cookies", super::cookies),
        ];
        for (target, entry) in targets {
            let dir = corpus.join(target);
            let mut count = 0;
            for file in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            {
                let path = file.unwrap().path();
                entry(&std::fs::read(&path).unwrap());
                count += 1;
            }
            assert!(count > 0, "no seed in {}", dir.display());
        }
    }
}

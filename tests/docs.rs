//! The documentation says what the code does: every configuration key is in
//! proxyuserd.toml(5) and in the shipped configuration with its default, every
//! proxyuserctl command has an entry in proxyuserctl(1), and every page the unit and the
//! journal catalog point at is shipped in the package.

#[path = "../examples/gen_docs.rs"]
mod gen_docs;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use proxyuserd::config::Config;

fn source(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Every key of the configuration as `section.key` (top-level keys bare), read from the
/// structs of src/config.rs: a field whose type is one of those structs is a section.
fn config_keys() -> BTreeSet<String> {
    let text = source("src/config.rs");
    let mut structs: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("pub struct ") {
            let name = rest.split([' ', '{']).next().unwrap_or_default();
            structs.push((name.to_string(), Vec::new()));
        } else if let Some(rest) = line.strip_prefix("pub ")
            && let Some((field, ty)) = rest.split_once(": ")
            && ty.ends_with(',')
            && let Some((_, fields)) = structs.last_mut()
        {
            fields.push((field.to_string(), ty.trim_end_matches(',').to_string()));
        }
    }
    let find = |name: &str| {
        structs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, fields)| fields.clone())
            .unwrap_or_else(|| panic!("no struct {name} in src/config.rs"))
    };
    let mut keys = BTreeSet::new();
    for (field, ty) in find("Config") {
        if ty.ends_with("Config") {
            for (key, _) in find(&ty) {
                keys.insert(format!("{field}.{key}"));
            }
        } else {
            keys.insert(field);
        }
    }
    assert!(
        keys.contains("exec.backend") && keys.contains("state_dir") && keys.len() > 40,
        "src/config.rs was not read right: {keys:?}"
    );
    keys
}

#[test]
fn every_config_key_is_in_the_man_page_under_its_section() {
    let page = source("man/proxyuserd.toml.5");
    let sections: Vec<&str> = page.split("\n.SH ").collect();
    let mut missing = Vec::new();
    for key in config_keys() {
        let (heading, name) = match key.split_once('.') {
            Some((section, name)) => (format!("[{section}]"), name.to_string()),
            None => ("TOP-LEVEL KEYS".to_string(), key.clone()),
        };
        let documented = sections
            .iter()
            .any(|s| s.starts_with(&heading) && s.contains(&format!("\\fB{name}\\fR")));
        if !documented {
            missing.push(key);
        }
    }
    assert!(
        missing.is_empty(),
        "man/proxyuserd.toml.5 does not describe {missing:?}"
    );
}

/// The shipped configuration shows every key commented out (`#key = value`) under its
/// section; uncommented, it is exactly the defaults.
#[test]
fn the_shipped_config_shows_every_key_with_its_default() {
    let text = source("examples/proxyuserd.toml");
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let mut shown = Config::parse("examples/proxyuserd.toml", &uncommented)
        .unwrap_or_else(|e| panic!("uncommented, the shipped config is not valid: {e}"));
    // These two have no value by default; the file shows an example.
    assert!(shown.admin_group.is_some() && shown.uid_min.is_some());
    shown.admin_group = None;
    shown.uid_min = None;
    assert_eq!(
        shown,
        Config::default(),
        "a default in examples/proxyuserd.toml is not the one of src/config.rs"
    );
    let table: toml::Table = toml::from_str(&uncommented).unwrap();
    let mut in_file = BTreeSet::new();
    for (key, value) in &table {
        match value.as_table() {
            Some(section) => in_file.extend(section.keys().map(|k| format!("{key}.{k}"))),
            None => {
                in_file.insert(key.clone());
            }
        }
    }
    let missing: Vec<_> = config_keys().difference(&in_file).cloned().collect();
    assert!(
        missing.is_empty(),
        "examples/proxyuserd.toml does not show {missing:?}"
    );
    let parsed_as_shipped = Config::parse("examples/proxyuserd.toml", &text).unwrap();
    assert_eq!(
        parsed_as_shipped,
        Config::default(),
        "the shipped config sets something"
    );
}

fn render_pages(test: &str) -> PathBuf {
    let out = std::env::temp_dir().join(format!("proxyuserd-docs-{}-{test}", std::process::id()));
    gen_docs::generate(&out).expect("generating the man pages");
    out
}

/// Each command's full name: `proxyuserctl proxy set`, and the groups themselves.
fn command_names(command: &clap::Command, prefix: &str, names: &mut Vec<String>) {
    for sub in command.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let name = format!("{prefix} {}", sub.get_name());
        names.push(name.clone());
        command_names(sub, &name, names);
    }
}

#[test]
fn every_proxyuserctl_command_has_an_entry_in_its_page() {
    let out = render_pages("commands");
    let page = std::fs::read_to_string(out.join("proxyuserctl.1")).unwrap();
    let mut names = Vec::new();
    command_names(&proxyuserd::ctl::Cli::command(), "proxyuserctl", &mut names);
    assert!(names.len() > 15, "{names:?}");
    let missing: Vec<_> = names
        .iter()
        .filter(|name| !page.contains(&format!(".SS \"{name}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "proxyuserctl(1) has no entry for {missing:?}"
    );
    // No reference to a page of its own per command: none is shipped.
    assert!(!page.contains("proxyuserctl\\-status(1)"), "{page}");
    let daemon = std::fs::read_to_string(out.join("proxyuserd.8")).unwrap();
    for section in [
        "SIGNALS",
        "STATE",
        "JOURNAL",
        "EXIT STATUS",
        "FILES",
        "--config",
    ] {
        let needle = section.replace('-', "\\-");
        assert!(daemon.contains(&needle), "proxyuserd(8) lacks {section}");
    }
    // The README's command summary names every top-level command.
    let readme = source("README.md");
    let missing: Vec<_> = names
        .iter()
        .filter(|name| name.split(' ').count() == 2 && !readme.contains(name.as_str()))
        .collect();
    assert!(missing.is_empty(), "README.md does not show {missing:?}");
    std::fs::remove_dir_all(out).unwrap();
}

/// `man:NAME(SECTION)` references in the unit and the catalog name pages the package
/// installs (Cargo.toml's assets).
#[test]
fn pages_the_unit_and_the_catalog_point_at_are_shipped() {
    let manifest: toml::Table = toml::from_str(&source("Cargo.toml")).unwrap();
    let assets = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .unwrap();
    let mut shipped = BTreeSet::new();
    for asset in assets {
        let (from, to) = (asset[0].as_str().unwrap(), asset[1].as_str().unwrap());
        if let Some(dir) = to.strip_prefix("usr/share/man/man") {
            let file = Path::new(from).file_name().unwrap().to_str().unwrap();
            let (name, section) = file.rsplit_once('.').unwrap();
            assert_eq!(dir, format!("{section}/"), "{file} installed in {to}");
            shipped.insert(format!("man:{name}({section})"));
            let in_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join(from);
            assert!(
                from.starts_with("target/assets/") || in_tree.exists(),
                "{from} is not in the tree"
            );
        }
    }
    for page in [
        "man:proxyuserd(8)",
        "man:proxyuserctl(1)",
        "man:proxyuserd.toml(5)",
        "man:proxyuserd-rules(5)",
    ] {
        assert!(shipped.contains(page), "{page} is not shipped: {shipped:?}");
    }
    let rendered = render_pages("shipped");
    for generated in ["proxyuserd.8", "proxyuserctl.1"] {
        assert!(
            rendered.join(generated).exists(),
            "gen_docs made no {generated}"
        );
    }
    std::fs::remove_dir_all(rendered).unwrap();
    let mut referenced = Vec::new();
    for file in [
        "systemd/proxyuserd.service",
        "systemd/catalog/proxyuserd.catalog",
    ] {
        for word in source(file).split_whitespace() {
            if word.starts_with("man:") {
                referenced.push((file, word.to_string()));
            }
        }
    }
    assert!(!referenced.is_empty());
    let missing: Vec<_> = referenced
        .iter()
        .filter(|(_, page)| !shipped.contains(page))
        .collect();
    assert!(missing.is_empty(), "not shipped: {missing:?}");
}

#[test]
fn the_debian_changelog_is_of_this_version() {
    let changelog = source("debian/changelog");
    let first = changelog.lines().next().unwrap_or_default();
    let expected = format!("proxyuserd ({}-1) ", env!("CARGO_PKG_VERSION"));
    assert!(
        first.starts_with(&expected),
        "debian/changelog starts with {first:?}, not {expected:?}"
    );
}

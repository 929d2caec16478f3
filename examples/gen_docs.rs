//! Generates the man pages and shell completions from the CLI definitions, for the
//! package: `cargo run --example gen_docs -- OUT_DIR`.
//!
//! `proxyuserd(8)` and `proxyuserctl(1)` are clap's options and commands followed by the
//! hand-written sections in `man/*.tail` (files, signals, state, exit status…);
//! `proxyuserctl(1)` describes every subcommand itself, so it names no other page.
//! `proxyuserd.toml(5)` and `proxyuserd-rules(5)` are written by hand in `man/` and
//! shipped as they are. tests/docs.rs renders the pages with this file and checks them.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

#[allow(dead_code)] // tests/docs.rs includes this file and calls only `generate`.
fn main() -> std::io::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/assets".into()),
    );
    generate(&out)?;
    println!("man pages and completions in {}", out.display());
    Ok(())
}

/// Writes `proxyuserd.8`, `proxyuserctl.1` and the completions into `out`.
pub fn generate(out: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    let man = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let daemon = proxyuserd::daemon::Args::command();
    let mut page = Vec::new();
    let daemon_man = clap_mangen::Man::new(daemon)
        .section("8")
        .manual("System Administration");
    daemon_man.render_title(&mut page)?;
    daemon_man.render_name_section(&mut page)?;
    daemon_man.render_synopsis_section(&mut page)?;
    daemon_man.render_description_section(&mut page)?;
    daemon_man.render_options_section(&mut page)?;
    page.extend(std::fs::read(man.join("proxyuserd.8.tail"))?);
    std::fs::write(out.join("proxyuserd.8"), page)?;

    let mut ctl = proxyuserd::ctl::Cli::command().disable_help_subcommand(true);
    ctl.build();
    let ctl_man = clap_mangen::Man::new(ctl.clone())
        .section("1")
        .manual("User Commands");
    let mut page = Vec::new();
    ctl_man.render_title(&mut page)?;
    ctl_man.render_name_section(&mut page)?;
    ctl_man.render_synopsis_section(&mut page)?;
    ctl_man.render_description_section(&mut page)?;
    if let Some(after) = ctl.get_after_help() {
        writeln!(page, ".PP\n{}", roff(&after.to_string()))?;
    }
    ctl_man.render_options_section(&mut page)?;
    writeln!(page, ".SH COMMANDS")?;
    for sub in ctl.get_subcommands() {
        commands(&mut page, sub)?;
    }
    page.extend(std::fs::read(man.join("proxyuserctl.1.tail"))?);
    std::fs::write(out.join("proxyuserctl.1"), page)?;

    for (shell, file) in [
        (Shell::Bash, "proxyuserctl.bash"),
        (Shell::Zsh, "_proxyuserctl"),
        (Shell::Fish, "proxyuserctl.fish"),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(
            shell,
            &mut proxyuserd::ctl::Cli::command(),
            "proxyuserctl",
            &mut script,
        );
        std::fs::write(out.join(file), script)?;
    }
    Ok(())
}

/// One `.SS` entry per command, its subcommands after it: usage, help, arguments.
fn commands(page: &mut Vec<u8>, command: &clap::Command) -> std::io::Result<()> {
    let usage = command.clone().render_usage().to_string();
    let usage = usage.trim_start_matches("Usage:").trim();
    let name = command.get_bin_name().unwrap_or(command.get_name());
    writeln!(page, ".SS \"{}\"", roff(name))?;
    writeln!(page, ".B {}", roff(usage))?;
    writeln!(page, ".PP")?;
    if let Some(help) = command.get_long_about().or(command.get_about()) {
        writeln!(page, "{}", roff(&help.to_string()))?;
    }
    let arguments = command
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_global_set())
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"));
    for arg in arguments {
        let value = arg
            .get_value_names()
            .map(|names| names.join(" "))
            .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
        writeln!(page, ".TP")?;
        match arg.get_long() {
            Some(long) if arg.get_num_args().is_some_and(|n| n.takes_values()) => writeln!(
                page,
                "\\fB\\-\\-{}\\fR \\fI{}\\fR",
                roff(long),
                roff(&value)
            )?,
            Some(long) => writeln!(page, "\\fB\\-\\-{}\\fR", roff(long))?,
            None => writeln!(page, "\\fI{}\\fR", roff(&value))?,
        }
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_else(|| match arg.get_id().as_str() {
                "login" => "Act for LOGIN (admins and trusted callers); default: yourself.".into(),
                _ => String::new(),
            });
        let takes_values = arg.get_num_args().is_some_and(|n| n.takes_values());
        let defaults: Vec<_> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if defaults.is_empty() || !takes_values {
            writeln!(page, "{}", roff(&help))?;
        } else {
            writeln!(page, "{} (default: {})", roff(&help), defaults.join(" "))?;
        }
    }
    for sub in command.get_subcommands() {
        commands(page, sub)?;
    }
    Ok(())
}

/// Text as roff reads it: backslashes and dashes escaped, no line taken for a request.
fn roff(text: &str) -> String {
    text.lines()
        .map(|line| {
            let line = line.replace('\\', "\\e").replace('-', "\\-");
            if line.starts_with(['.', '\'']) {
                format!("\\&{line}")
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

//! Generates the man pages and shell completions from the CLI definitions, for the
//! package: `cargo run --example gen_docs -- OUT_DIR`.

use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/assets".into()),
    );
    std::fs::create_dir_all(&out)?;
    let pages = [
        (proxyuserd::daemon::Args::command(), "proxyuserd.8", "8"),
        (proxyuserd::ctl::Cli::command(), "proxyuserctl.1", "1"),
    ];
    for (command, file, section) in pages {
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .section(section)
            .render(&mut page)?;
        std::fs::write(out.join(file), page)?;
    }
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
    println!("man pages and completions in {}", out.display());
    Ok(())
}

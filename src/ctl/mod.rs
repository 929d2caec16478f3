//! `proxyuserctl`: the admin's and user's command line. It talks D-Bus only (except
//! `rules check`, which validates files offline like `visudo -c`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use serde_json::json;
use zbus::{Connection, DBusError};

mod audit;
mod check;

use crate::client::{AdminProxy, IdentityProxy, JobsProxy};
use crate::policy::format_time;

#[derive(Parser, Debug)]
#[command(
    name = "proxyuserctl",
    version,
    about = "Control and query proxyuserd, the proxy user authority",
    after_help = "Without a LOGIN, commands act for the calling user. The bus is the system bus \
                  ($DBUS_SYSTEM_BUS_ADDRESS selects another)."
)]
pub struct Cli {
    /// Print data as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Daemon version, rule generation and who you act as.
    Status,
    /// Who LOGIN acts as now (effective user, proxy, uid, gid).
    Resolve { login: Option<String> },
    /// Who you act as now.
    Whoami,
    /// Whether LOGIN may proxy to PROXY, and why (changes nothing). Exit 1 if not.
    Check { login: String, proxy: String },
    /// Choose, end or list proxy users.
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// Administer the rules.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Run ARGV as the user you act as (your proxy, else yourself), like `sudo -u`:
    /// prints the job's stdout and stderr as it runs and exits with its exit code; your
    /// stdin reaches it unless it is a terminal; Ctrl-C or SIGTERM cancels it (exit
    /// 130 or 143).
    Exec {
        #[arg(long)]
        login: Option<String>,
        /// Set a variable for the job (only those in exec.env_keep reach it; a warning
        /// names the others).
        #[arg(long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// Working directory, relative to yours (default: your current directory).
        #[arg(long)]
        cwd: Option<String>,
        /// Print the job id and return at once (see `proxyuserctl wait`).
        #[arg(long)]
        detach: bool,
        /// The program (absolute, or found on your PATH) and its arguments.
        #[arg(required = true, last = true, value_name = "ARGV")]
        argv: Vec<String>,
    },
    /// The jobs of the user you act as.
    Jobs {
        #[arg(long)]
        login: Option<String>,
    },
    /// Print a job's stdout (or stderr); recorded as a download.
    Result {
        job: String,
        #[arg(long)]
        stderr: bool,
        #[arg(long)]
        login: Option<String>,
    },
    /// Wait for a job (one started with `exec --detach`) to end; exits with its exit
    /// code.
    Wait {
        job: String,
        #[arg(long)]
        login: Option<String>,
    },
    /// Cancel a running job: SIGTERM to all its processes, SIGKILL after
    /// exec.kill_grace_secs; says how it ended.
    Cancel {
        job: String,
        #[arg(long)]
        login: Option<String>,
    },
    /// Open web sessions (admins): login, proxy, created, last used, end. Never tickets.
    Sessions {
        #[command(subcommand)]
        command: Option<SessionsCommand>,
    },
    /// Show the audit log (admins), oldest first; the filters given must all match.
    Audit {
        /// Only records of this login.
        #[arg(long)]
        login: Option<String>,
        /// Only records of this kind (exec-start, exec-end, download, denied, …); may be
        /// given more than once.
        #[arg(long = "kind", value_name = "KIND")]
        kinds: Vec<String>,
        /// Only records written at or after TIME: now, today, -15m, -2h, -7d, 2026-12-01,
        /// 2026-12-01T10:00:00Z (times without an offset are UTC).
        #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
        since: Option<String>,
        /// Only records written at or before TIME.
        #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
        until: Option<String>,
        /// First sequence number to read.
        #[arg(long, value_name = "SEQ", default_value_t = 1)]
        from: u64,
        /// Keep printing new records as they are written, until interrupted (with --json:
        /// one object per line).
        #[arg(long, conflicts_with_all = ["verify", "until"])]
        follow: bool,
        /// Walk the hash chain from the first record and report the first broken one
        /// (progress on stderr).
        #[arg(long)]
        verify: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ProxyCommand {
    /// Proxy to PROXY from now on (replaces the current proxy).
    Set {
        proxy: String,
        #[arg(long)]
        login: Option<String>,
    },
    /// Stop proxying.
    Clear {
        #[arg(long)]
        login: Option<String>,
    },
    /// The proxy users you may choose.
    List {
        #[arg(long)]
        login: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum SessionsCommand {
    /// List open sessions (the default).
    List,
    /// Close a session by its id (a login session ends its proxy sessions).
    Close { id: String },
}

#[derive(Subcommand, Debug)]
enum RulesCommand {
    /// Every active rule with its id and source.
    List,
    /// Add a live rule from FILE ("-" for stdin): one [[allow]] or [[deny]] table.
    Add { file: PathBuf },
    /// Remove a live rule.
    Remove { id: String },
    /// Re-read the rule files, after checking the configuration file (like SIGHUP, but
    /// errors are reported here and the exit status says whether it was refused).
    Reload,
    /// Validate rule files offline; exit 1 with file:line:column errors.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// A failure to report: the message, and the D-Bus error name if any.
#[derive(Debug)]
struct Failure {
    message: String,
    name: Option<String>,
}

impl From<zbus::Error> for Failure {
    fn from(err: zbus::Error) -> Self {
        match err {
            zbus::Error::MethodError(name, description, _) => Failure {
                message: description.unwrap_or_default(),
                name: Some(name.to_string()),
            },
            zbus::Error::FDO(fdo) => Failure {
                message: fdo.description().unwrap_or_default().to_string(),
                name: Some(fdo.name().to_string()),
            },
            other => Failure {
                message: other.to_string(),
                name: None,
            },
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure {
            message,
            name: None,
        }
    }
}

type Outcome = Result<ExitCode, Failure>;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Rules(RulesCommand::Check { files }) = &cli.command {
        return check::check_files(files, cli.json);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("proxyuserctl: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(failure) => {
            match failure.name {
                Some(name) => eprintln!("proxyuserctl: {} [{name}]", as_commands(&failure.message)),
                None => eprintln!("proxyuserctl: {}", failure.message),
            }
            ExitCode::FAILURE
        }
    }
}

/// The command of each D-Bus method the daemon names in its messages ("AuditLog is for
/// admins"): a person at the command line reads the command they typed.
const COMMANDS: &[(&str, &str)] = &[
    ("SetProxy", "proxyuserctl proxy set"),
    ("ClearProxy", "proxyuserctl proxy clear"),
    ("ListProxies", "proxyuserctl proxy list"),
    ("CheckProxy", "proxyuserctl check"),
    ("Resolve", "proxyuserctl resolve"),
    ("Reload", "proxyuserctl rules reload"),
    ("ListRules", "proxyuserctl rules list"),
    ("ListProxyUsers", "proxyuserctl rules list"),
    ("AddRule", "proxyuserctl rules add"),
    ("RemoveRule", "proxyuserctl rules remove"),
    ("AuditLog", "proxyuserctl audit"),
    ("AuditHead", "proxyuserctl audit --verify"),
    ("Exec", "proxyuserctl exec"),
    ("Cancel", "proxyuserctl cancel"),
    ("Wait", "proxyuserctl wait"),
    ("ListJobs", "proxyuserctl jobs"),
    ("OpenResult", "proxyuserctl result"),
    ("ListSessions", "proxyuserctl sessions"),
    ("CloseSessionById", "proxyuserctl sessions close"),
];

/// `message` with the D-Bus methods it names (whole words) replaced by their commands.
fn as_commands(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(|c: char| c.is_ascii_uppercase()) {
        let word_end = rest[start..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .map_or(rest.len(), |n| start + n);
        let starts_word = !rest[..start].ends_with(|c: char| c.is_alphanumeric() || c == '.');
        let word = &rest[start..word_end];
        out.push_str(&rest[..start]);
        match COMMANDS.iter().find(|(method, _)| *method == word) {
            Some((_, command)) if starts_word => out.push_str(command),
            _ => out.push_str(word),
        }
        rest = &rest[word_end..];
    }
    out.push_str(rest);
    out
}

/// Names as a TOML array, as in the rule files.
fn toml_list(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

fn own_login() -> Result<String, Failure> {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => Ok(user.name),
        _ => Err(format!("uid {uid} has no user name; give a LOGIN").into()),
    }
}

fn login_or_self(login: Option<String>) -> Result<String, Failure> {
    login.map_or_else(own_login, Ok)
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

async fn run(cli: Cli) -> Outcome {
    let connection = Connection::system()
        .await
        .map_err(|e| format!("cannot connect to the system bus: {e}"))?;
    let identity = IdentityProxy::new(&connection).await?;
    let json = cli.json;
    match cli.command {
        Command::Status => status(&connection, &identity, json).await,
        Command::Resolve { login } => resolve(&identity, login_or_self(login)?, json).await,
        Command::Whoami => resolve(&identity, own_login()?, json).await,
        Command::Check { login, proxy } => {
            let (allowed, reason) = identity.check_proxy(&login, &proxy).await?;
            if json {
                print_json(
                    &json!({ "login": login, "proxy": proxy, "allowed": allowed, "reason": reason }),
                );
            } else {
                println!("{}: {reason}", if allowed { "allowed" } else { "denied" });
            }
            Ok(if allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Proxy(ProxyCommand::Set { proxy, login }) => {
            identity.set_proxy(&login_or_self(login)?, &proxy).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Proxy(ProxyCommand::Clear { login }) => {
            identity.clear_proxy(&login_or_self(login)?).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Proxy(ProxyCommand::List { login }) => {
            let login = login_or_self(login)?;
            let proxies = identity.list_proxies(&login).await?;
            if json {
                print_json(&json!(proxies));
            } else if proxies.is_empty() {
                println!("no proxy users: no rule lets {login} proxy now");
            } else {
                proxies.iter().for_each(|p| println!("{p}"));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rules(command) => rules(&AdminProxy::new(&connection).await?, command, json).await,
        Command::Audit {
            login,
            kinds,
            since,
            until,
            from,
            follow,
            verify,
        } => {
            let admin = AdminProxy::new(&connection).await?;
            if verify {
                return audit::verify(&admin, json).await;
            }
            let filter = audit::Filter::new(login, kinds, since.as_deref(), until.as_deref())?;
            audit::show(&admin, from, &filter, follow, json).await
        }
        Command::Exec {
            login,
            env,
            cwd,
            detach,
            argv,
        } => {
            let jobs = JobsProxy::new(&connection).await?;
            exec(&jobs, login_or_self(login)?, env, cwd, detach, argv).await
        }
        Command::Jobs { login } => {
            list_jobs(
                &JobsProxy::new(&connection).await?,
                login_or_self(login)?,
                json,
            )
            .await
        }
        Command::Result { job, stderr, login } => {
            let jobs = JobsProxy::new(&connection).await?;
            let stream = if stderr { "stderr" } else { "stdout" };
            copy_result(
                &jobs,
                &login_or_self(login)?,
                &job,
                stream,
                &mut std::io::stdout(),
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sessions { command } => {
            let admin = AdminProxy::new(&connection).await?;
            match command {
                Some(SessionsCommand::Close { id }) => {
                    admin.close_session_by_id(&id).await?;
                    Ok(ExitCode::SUCCESS)
                }
                None | Some(SessionsCommand::List) => list_sessions(&admin, json).await,
            }
        }
        Command::Wait { job, login } => {
            let jobs = JobsProxy::new(&connection).await?;
            let (state, code) = jobs.wait(&login_or_self(login)?, &job).await?;
            Ok(job_status(&job, &state, code))
        }
        Command::Cancel { job, login } => {
            cancel(
                &JobsProxy::new(&connection).await?,
                &login_or_self(login)?,
                &job,
                json,
            )
            .await
        }
    }
}

async fn resolve(identity: &IdentityProxy<'_>, login: String, json: bool) -> Outcome {
    let (effective, proxy, uid, gid) = identity.resolve(&login).await?;
    let id = |v: u32| if v == u32::MAX { None } else { Some(v) };
    if json {
        print_json(&json!({
            "login": login, "effective": effective, "proxy": proxy,
            "uid": id(uid), "gid": id(gid),
        }));
    } else {
        let show = |v: u32| id(v).map_or("-".to_string(), |v| v.to_string());
        println!("    Login: {login}");
        println!("    Proxy: {}", if proxy.is_empty() { "-" } else { &proxy });
        println!("Effective: {effective}");
        println!("      UID: {}", show(uid));
        println!("      GID: {}", show(gid));
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(connection: &Connection, identity: &IdentityProxy<'_>, json: bool) -> Outcome {
    let admin = AdminProxy::new(connection).await?;
    let version = admin.version().await?;
    let generation = admin.rules_generation().await?;
    let login = own_login().ok();
    let acting = match &login {
        Some(login) => Some(identity.resolve(login).await?),
        None => None,
    };
    if json {
        print_json(&json!({
            "version": version,
            "rules_generation": generation,
            "login": login,
            "effective": acting.as_ref().map(|a| &a.0),
            "proxy": acting.as_ref().map(|a| &a.1),
        }));
    } else {
        println!("proxyuserd {version} on org.proxyuserd1");
        println!("Rules generation: {generation}");
        if let (Some(login), Some((effective, proxy, _, _))) = (login, acting) {
            if proxy.is_empty() {
                println!("You ({login}) act as yourself");
            } else {
                println!("You ({login}) act as {effective} (proxy)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn rules(admin: &AdminProxy<'_>, command: RulesCommand, json: bool) -> Outcome {
    match command {
        RulesCommand::List => {
            let rules = admin.list_rules().await?;
            if json {
                let list: Vec<_> = rules
                    .iter()
                    .map(|(id, source, rule)| json!({ "id": id, "source": source, "rule": rule }))
                    .collect();
                print_json(&json!(list));
            } else {
                let declarations = admin.list_proxy_users().await?;
                for (source, users, groups) in &declarations {
                    println!("# proxy users ({source})\n[proxy_users]");
                    if !users.is_empty() {
                        println!("users = {}", toml_list(users));
                    }
                    if !groups.is_empty() {
                        println!("groups = {}", toml_list(groups));
                    }
                    println!();
                }
                if rules.is_empty() && declarations.is_empty() {
                    println!("no rules: every proxy request is denied");
                }
                for (id, source, rule) in rules {
                    println!("# {id} ({source})\n{rule}");
                }
            }
        }
        RulesCommand::Add { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?
            } else {
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?
            };
            println!("{}", admin.add_rule(&text).await?);
        }
        RulesCommand::Remove { id } => admin.remove_rule(&id).await?,
        RulesCommand::Reload => {
            let generation = admin.reload().await?;
            if json {
                print_json(&json!({ "generation": generation }));
            } else {
                println!("rules generation {generation}");
            }
        }
        RulesCommand::Check { .. } => unreachable!("handled offline in main"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The program to ask for, as a shell would find it: a bare name on the caller's PATH
/// (the daemon itself never searches), a relative path from the current directory.
/// None if a bare name is on no directory of PATH.
fn find_program(program: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return Some(absolute(Path::new(program)).display().to_string());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| absolute(&dir.join(program)))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map(|found| found.display().to_string())
}

/// `path` from the current directory, without `.` components (`..` stay: they are the
/// kernel's to resolve).
fn absolute(path: &Path) -> PathBuf {
    let full = match std::env::current_dir() {
        Ok(here) if path.is_relative() => here.join(path),
        _ => path.to_path_buf(),
    };
    full.components().collect()
}

/// The job's working directory: `--cwd` from the current directory, else the current
/// directory itself, as sudo; "" (the run-as user's home) if ours is gone.
fn working_directory(cwd: Option<&str>) -> Result<String, Failure> {
    match cwd {
        Some(dir) => {
            if Path::new(dir).is_relative()
                && !std::env::current_dir().is_ok_and(|d| d.is_absolute())
            {
                return Err(format!(
                    "--cwd {dir:?} is relative, but the current directory is gone"
                )
                .into());
            }
            Ok(absolute(Path::new(dir)).display().to_string())
        }
        // getcwd can answer "(unreachable)/…" from another mount namespace.
        None => Ok(std::env::current_dir()
            .ok()
            .filter(|d| d.is_absolute())
            .map(|d| d.display().to_string())
            .unwrap_or_default()),
    }
}

/// The signals that cancel a job `proxyuserctl exec` waits for, as sudo passes them on.
struct Interrupts {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn new() -> Result<Self, Failure> {
        use tokio::signal::unix::{SignalKind, signal};
        let on = |kind: SignalKind| {
            signal(kind).map_err(|e| Failure::from(format!("cannot handle signals: {e}")))
        };
        Ok(Interrupts {
            int: on(SignalKind::interrupt())?,
            term: on(SignalKind::terminate())?,
            hup: on(SignalKind::hangup())?,
        })
    }

    /// The number of the next signal.
    async fn next(&mut self) -> u8 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT as u8,
            _ = self.term.recv() => libc::SIGTERM as u8,
            _ = self.hup.recv() => libc::SIGHUP as u8,
        }
    }
}

async fn exec(
    jobs: &JobsProxy<'_>,
    login: String,
    env: Vec<String>,
    cwd: Option<String>,
    detach: bool,
    mut argv: Vec<String>,
) -> Outcome {
    let Some(program) = find_program(&argv[0]) else {
        eprintln!("proxyuserctl: {}: command not found", argv[0]);
        return Ok(ExitCode::from(127));
    };
    argv[0] = program;
    let defaulted_cwd = cwd.is_none();
    let cwd = working_directory(cwd.as_deref())?;
    // The caller's environment; the daemon keeps only what exec.env_keep names.
    let mut vars: BTreeMap<String, String> = std::env::vars().collect();
    let mut given = Vec::new();
    for pair in env {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("--env {pair:?}: expected NAME=VALUE"))?;
        vars.insert(k.to_string(), v.to_string());
        given.push(k.to_string());
    }
    let vars: std::collections::HashMap<&str, &str> =
        vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let argv_refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    // Stdin reaches the job unless it is a terminal (the job has none) or closed.
    let stdin = std::io::stdin();
    let stdin = if std::io::IsTerminal::is_terminal(&stdin) {
        None
    } else {
        std::os::fd::AsFd::as_fd(&stdin).try_clone_to_owned().ok()
    };
    let mut options = std::collections::HashMap::new();
    if let Some(fd) = &stdin {
        options.insert(
            "stdin",
            zbus::Variant::from(zbus::Fd::from(std::os::fd::AsFd::as_fd(fd))),
        );
    }
    // From before the job exists, so that a Ctrl-C while it starts cancels it too.
    let mut interrupts = if detach {
        None
    } else {
        Some(Interrupts::new()?)
    };
    let submitted = jobs
        .exec_with_options(&login, &argv_refs, &vars, &cwd, options)
        .await;
    drop(stdin);
    let (id, dropped) = match submitted {
        Ok(submitted) => submitted,
        Err(err) => {
            let mut failure = Failure::from(err);
            if defaulted_cwd
                && failure.name.as_deref() == Some("org.freedesktop.DBus.Error.InvalidArgs")
                && failure.message.contains(&format!(" in {cwd}: "))
            {
                failure
                    .message
                    .push_str(" (the job starts in your current directory; --cwd chooses another)");
            }
            return Err(failure);
        }
    };
    for name in given.iter().filter(|name| dropped.contains(name)) {
        eprintln!(
            "proxyuserctl: warning: --env {name} does not reach the job \
             (exec.env_keep does not name it, or proxyuserd sets it)"
        );
    }
    let Some(interrupts) = interrupts.as_mut() else {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    };
    // Both requests go out before either answer comes back: one round trip, not two.
    let (stdout, stderr) = tokio::join!(
        jobs.open_result(&login, &id, "stdout"),
        jobs.open_result(&login, &id, "stderr"),
    );
    let cap = jobs.max_output_bytes().await.unwrap_or(u64::MAX);
    let ended = Arc::new(AtomicBool::new(false));
    // What was handed out (and recorded as downloaded) is delivered before any error.
    let mut streams: Streams = Vec::new();
    let mut failed = None;
    for (fd, out) in [
        (
            stdout,
            Box::new(std::io::stdout()) as Box<dyn std::io::Write + Send>,
        ),
        (stderr, Box::new(std::io::stderr())),
    ] {
        match fd {
            Ok(fd) => streams.push((
                Some(std::fs::File::from(std::os::fd::OwnedFd::from(fd))),
                out,
            )),
            Err(err) => {
                streams.push((None, out));
                failed = Some(Failure::from(err));
            }
        }
    }
    // Told when our stdout is a pipe nobody reads any more.
    let (broken_tx, mut broken) = tokio::sync::oneshot::channel();
    let copier = {
        let ended = ended.clone();
        std::thread::spawn(move || stream_output(streams, cap, &ended, broken_tx))
    };
    let stop = tokio::select! {
        // A restart of the daemon (its jobs run on under systemd) is waited out.
        end = wait_across_restarts(jobs, &login, &id) => Err(end),
        signal = interrupts.next() => Ok(signal),
        // As the job would be had it written to the pipe itself.
        Ok(()) = &mut broken => Ok(libc::SIGPIPE as u8),
    };
    let outcome = match stop {
        Err(end) => end,
        Ok(signal) => {
            // Cancel returns once the job has ended; a second signal does not wait.
            tokio::select! {
                cancelled = jobs.cancel(&login, &id) => {
                    if let Err(err) = cancelled {
                        eprintln!("proxyuserctl: cannot cancel job {id}: {}", Failure::from(err).message);
                    }
                }
                _ = interrupts.next() => {}
            }
            Ok(("cancelled".to_string(), 128 + i32::from(signal)))
        }
    };
    ended.store(true, Ordering::Release);
    copier.thread().unpark();
    let copied = copier
        .join()
        .unwrap_or_else(|_| Err("the output copier failed".to_string()));
    let (state, code) = outcome?;
    if let Some(failure) = failed {
        return Err(failure);
    }
    copied?;
    if state == "cancelled" {
        return Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)));
    }
    Ok(job_status(&id, &state, code))
}

/// How `exec` and `wait` exit for a job that ended: with its exit code (128 + signal if
/// it was killed), 255 if it failed.
fn job_status(id: &str, state: &str, code: i32) -> ExitCode {
    match state {
        "exited" => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        "killed" => {
            eprintln!("proxyuserctl: job {id} was killed (exit code {code})");
            ExitCode::from(u8::try_from(code).unwrap_or(255))
        }
        _ => {
            eprintln!("proxyuserctl: job {id} {state}");
            ExitCode::from(255)
        }
    }
}

/// The job's stdout and stderr (None: not handed out) and where they go.
type Streams = Vec<(Option<std::fs::File>, Box<dyn std::io::Write + Send>)>;

/// Copies each job output file to its destination as it grows, at most `cap` bytes of
/// each (exec.max_output_bytes: the daemon keeps no more), until `ended` is set and
/// everything written before is copied. A closed pipe on the first (stdout) is told to
/// `broken_stdout`.
fn stream_output(
    mut streams: Streams,
    cap: u64,
    ended: &AtomicBool,
    broken_stdout: tokio::sync::oneshot::Sender<()>,
) -> Result<(), String> {
    let mut broken_stdout = Some(broken_stdout);
    use std::io::Read;
    let mut copied = vec![0u64; streams.len()];
    let mut broken: Option<String> = None;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        // Read before the reads: once set, a pass that finds nothing is the end.
        let finished = ended.load(Ordering::Acquire);
        let mut progress = false;
        for (i, ((file, out), copied)) in streams.iter_mut().zip(copied.iter_mut()).enumerate() {
            let Some(file) = file else { continue };
            let room = cap.saturating_sub(*copied).min(buffer.len() as u64) as usize;
            if room == 0 {
                continue;
            }
            let n = file
                .read(&mut buffer[..room])
                .map_err(|e| format!("cannot read the job's output: {e}"))?;
            if n == 0 {
                continue;
            }
            progress = true;
            *copied += n as u64;
            // A reader that went away (a closed pipe) ends the copy of that stream only.
            if let Err(err) = out.write_all(&buffer[..n]).and_then(|_| out.flush()) {
                *copied = cap;
                if i == 0 && err.kind() == std::io::ErrorKind::BrokenPipe {
                    if let Some(tell) = broken_stdout.take() {
                        let _ = tell.send(());
                    }
                } else {
                    broken.get_or_insert(format!("cannot write the job's output: {err}"));
                }
            }
        }
        if !progress {
            if finished {
                break;
            }
            // Woken early when the job has ended.
            std::thread::park_timeout(std::time::Duration::from_millis(50));
        }
    }
    broken.map_or(Ok(()), Err)
}

/// Cancels a job and says how it ended.
async fn cancel(jobs: &JobsProxy<'_>, login: &str, id: &str, json: bool) -> Outcome {
    jobs.cancel(login, id).await?;
    // Cancel returns once the job has ended, or while it still is ending.
    let end = tokio::time::timeout(std::time::Duration::from_secs(1), jobs.wait(login, id)).await;
    let (state, code) = match end {
        Ok(end) => end?,
        Err(_) => ("ending".to_string(), -1),
    };
    if json {
        print_json(&json!({ "job": id, "state": state, "exit_code": code }));
    } else {
        match state.as_str() {
            "killed" => println!("job {id} cancelled: killed (exit code {code})"),
            "ending" => println!("job {id} cancelled: still ending after SIGKILL"),
            _ => println!("job {id} ended: {state} (exit code {code})"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How long `exec` keeps asking for a job while no daemon answers (a restart).
const DAEMON_GONE_MAX: std::time::Duration = std::time::Duration::from_secs(120);

/// `Wait`, asked again when the daemon goes away meanwhile (a restart, an upgrade):
/// under systemd the job runs on and the next daemon knows it.
async fn wait_across_restarts(
    jobs: &JobsProxy<'_>,
    login: &str,
    id: &str,
) -> Result<(String, i32), Failure> {
    let mut gone_since: Option<std::time::Instant> = None;
    loop {
        let asked = std::time::Instant::now();
        let err = match jobs.wait(login, id).await {
            Ok(end) => return Ok(end),
            Err(err) => Failure::from(err),
        };
        if asked.elapsed() > std::time::Duration::from_secs(2) {
            // A daemon answered and waited with us before it went: a new outage.
            gone_since = None;
        }
        let since = *gone_since.get_or_insert(asked);
        let gone = err.name.as_deref().is_some_and(daemon_gone);
        if !gone || since.elapsed() > DAEMON_GONE_MAX {
            return Err(err);
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

/// Whether a D-Bus error says the daemon is not there (stopped, restarting), rather
/// than that it refused.
fn daemon_gone(name: &str) -> bool {
    matches!(
        name,
        "org.freedesktop.DBus.Error.NoReply"
            | "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner"
            | "org.freedesktop.DBus.Error.TimedOut"
            | "org.freedesktop.DBus.Error.Timeout"
    ) || name.starts_with("org.freedesktop.DBus.Error.Spawn.")
        || name == "org.freedesktop.systemd1.UnitFailed"
}

/// Copies one output stream of a job to `out` through the descriptor the daemon passes.
async fn copy_result(
    jobs: &JobsProxy<'_>,
    login: &str,
    id: &str,
    stream: &str,
    out: &mut dyn std::io::Write,
) -> Result<(), Failure> {
    let fd = jobs.open_result(login, id, stream).await?;
    copy_fd(fd, id, stream, out)
}

/// Copies what the descriptor of one output stream of job `id` reads to `out`.
fn copy_fd(
    fd: zbus::OwnedFd,
    id: &str,
    stream: &str,
    out: &mut dyn std::io::Write,
) -> Result<(), Failure> {
    let mut file = std::fs::File::from(std::os::fd::OwnedFd::from(fd));
    std::io::copy(&mut file, out).map_err(|e| format!("cannot copy the {stream} of {id}: {e}"))?;
    out.flush().map_err(|e| format!("{e}"))?;
    Ok(())
}

async fn list_jobs(jobs: &JobsProxy<'_>, login: String, json: bool) -> Outcome {
    let rows = jobs.list_jobs(&login).await?;
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(
                |(id, login, run_as, argv, state, started, finished, code)| {
                    json!({
                        "id": id, "login": login, "run_as": run_as, "argv": argv, "state": state,
                        "started": started, "finished": finished, "exit_code": code,
                    })
                },
            )
            .collect();
        print_json(&json!(list));
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no jobs of the user {login} acts as");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<8} {:>4} {:<14} {:<14} {:<27} COMMAND",
        "JOB", "STATE", "EXIT", "RUN AS", "LOGIN", "STARTED"
    );
    for (id, login, run_as, argv, state, started, _, code) in rows {
        let exit = if state == "running" {
            "-".to_string()
        } else {
            code.to_string()
        };
        let started = format_time(i64::try_from(started).unwrap_or(0));
        println!(
            "{id:<20} {state:<8} {exit:>4} {run_as:<14} {login:<14} {started:<27} {}",
            argv.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn list_sessions(admin: &AdminProxy<'_>, json: bool) -> Outcome {
    let sessions = admin.list_sessions().await?;
    let time = |t: u64| format_time(i64::try_from(t).unwrap_or(0));
    if json {
        let list: Vec<_> = sessions
            .iter()
            .map(|(id, kind, login, proxy, created, used, end)| {
                json!({
                    "id": id, "kind": kind, "login": login, "proxy": proxy,
                    "created": created, "last_used": used, "expires": end,
                })
            })
            .collect();
        print_json(&json!(list));
        return Ok(ExitCode::SUCCESS);
    }
    if sessions.is_empty() {
        println!("no open sessions");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<17} {:<5} {:<16} {:<16} {:<27} {:<27} ENDS",
        "ID", "KIND", "LOGIN", "PROXY", "CREATED", "LAST USED"
    );
    for (id, kind, login, proxy, created, used, end) in sessions {
        let proxy = if proxy.is_empty() {
            "-".to_string()
        } else {
            proxy
        };
        println!(
            "{id:<17} {kind:<5} {login:<16} {proxy:<16} {:<27} {:<27} {}",
            time(created),
            time(used),
            time(end)
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_commands_people_typed() {
        assert_eq!(
            as_commands(
                "carol is not an admin (root or a member of wheel): AuditLog is for admins"
            ),
            "carol is not an admin (root or a member of wheel): proxyuserctl audit is for admins"
        );
        assert_eq!(
            as_commands("ListRules, then Cancel."),
            "proxyuserctl rules list, then proxyuserctl cancel."
        );
        // Not whole words, or part of a D-Bus name: left alone.
        assert_eq!(
            as_commands("Execute org.proxyuserd1.Pam.OpenSession Reloaded"),
            "Execute org.proxyuserd1.Pam.OpenSession Reloaded"
        );
    }
}

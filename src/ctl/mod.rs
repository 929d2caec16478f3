//! `proxyuserctl`: the admin's and user's command line. It talks D-Bus only (except
//! `rules check`, which validates files offline like `visudo -c`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;
use zbus::{Connection, DBusError};

use crate::audit::{self, Record};
use crate::client::{AdminProxy, IdentityProxy, JobsProxy};
use crate::policy::{CompiledRules, format_time, parse_rule_file};

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
    /// waits, prints the job's stdout and stderr, exits with its exit code.
    Exec {
        #[arg(long)]
        login: Option<String>,
        /// Set a variable for the job (only those in exec.env_keep reach it).
        #[arg(long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// Working directory (default: the run-as user's home).
        #[arg(long)]
        cwd: Option<String>,
        /// Print the job id and return at once.
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
    /// Cancel a running job (kills its whole process group).
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
    /// Show the audit log (admins).
    Audit {
        /// First sequence number to show.
        #[arg(long, default_value_t = 1)]
        since: u64,
        /// Walk the hash chain from the first record and report the first broken one.
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
        return check_files(files, cli.json);
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
                Some(name) => eprintln!("proxyuserctl: {} [{name}]", failure.message),
                None => eprintln!("proxyuserctl: {}", failure.message),
            }
            ExitCode::FAILURE
        }
    }
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
            let proxies = identity.list_proxies(&login_or_self(login)?).await?;
            if json {
                print_json(&json!(proxies));
            } else {
                proxies.iter().for_each(|p| println!("{p}"));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rules(command) => rules(&AdminProxy::new(&connection).await?, command, json).await,
        Command::Audit { since, verify } => {
            audit_log(&AdminProxy::new(&connection).await?, since, verify, json).await
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
        Command::Cancel { job, login } => {
            JobsProxy::new(&connection)
                .await?
                .cancel(&login_or_self(login)?, &job)
                .await?;
            Ok(ExitCode::SUCCESS)
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

/// Validates each file on its own and all of them together (cross-file rules such as
/// "a proxy user cannot proxy" span files).
fn check_files(paths: &[PathBuf], json: bool) -> ExitCode {
    let mut errors = Vec::new();
    let mut files = Vec::new();
    for path in paths {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Err(err) => errors.push(format!("{shown}: {err}")),
            Ok(text) => match parse_rule_file(&shown, &text) {
                Ok(file) => files.push(file),
                Err(err) => errors.push(err.to_string()),
            },
        }
    }
    let rules = files.iter().map(|f| f.len()).sum::<usize>();
    let files = files.into_iter().map(std::sync::Arc::new).collect();
    if errors.is_empty()
        && let Err(err) = CompiledRules::compile(files, Vec::new())
    {
        errors.push(err.to_string());
    }
    if json {
        print_json(&json!({ "valid": errors.is_empty(), "rules": rules, "errors": errors }));
    } else if errors.is_empty() {
        println!("{} file(s), {rules} rule(s): valid", paths.len());
    } else {
        errors.iter().for_each(|e| eprintln!("{e}"));
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Records from `since` on, fetched page by page.
async fn fetch_audit(admin: &AdminProxy<'_>, since: u64) -> Result<Vec<Record>, Failure> {
    let mut records = Vec::new();
    let mut next = since;
    loop {
        let page = admin.audit_log(next, 0).await?;
        let Some((last, _)) = page.last() else { break };
        next = last + 1;
        records.extend(
            page.into_iter()
                .map(|(_, r)| r.into_iter().collect::<BTreeMap<_, _>>()),
        );
    }
    Ok(records)
}

async fn audit_log(admin: &AdminProxy<'_>, since: u64, verify: bool, json: bool) -> Outcome {
    if verify {
        return verify_audit(admin, json).await;
    }
    let records = fetch_audit(admin, since).await?;
    if json {
        print_json(&json!(records));
    } else {
        for record in &records {
            let get = |k: &str| record.get(k).map(String::as_str).unwrap_or("");
            let time = get(audit::TIME)
                .parse()
                .map(format_time)
                .unwrap_or_default();
            println!(
                "{:>6} {time} {:<14} {}",
                get(audit::SEQ),
                get(audit::EVENT),
                audit::describe(record)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `audit --verify` found.
#[derive(Default)]
struct Verification {
    records: u64,
    /// The first record where the chain does not verify.
    broken_at: Option<u64>,
    problems: Vec<String>,
    journal: String,
}

/// Walks the retained chain from the checkpoint pruning left to the head, reports the
/// losses the daemon recorded (`audit-gap`), and compares the chain with the copy in
/// journald when that can be read.
async fn verify_audit(admin: &AdminProxy<'_>, json: bool) -> Outcome {
    let (chain, checkpoint_seq, checkpoint_hash, head_seq, head_hash) = admin.audit_head().await?;
    let records = fetch_audit(admin, checkpoint_seq + 1).await?;
    let mut found = Verification::default();
    match audit::verify_from(checkpoint_seq, &checkpoint_hash, &records) {
        Ok(n) => found.records = n,
        Err(broken) => {
            found.broken_at = Some(broken.seq);
            found.problems.push(broken.to_string());
        }
    }
    let get = |r: &Record, k: &str| r.get(k).cloned().unwrap_or_default();
    if let Some(last) = records.last()
        && (get(last, audit::SEQ) != head_seq.to_string() || get(last, audit::HASH) != head_hash)
    {
        found.problems.push(format!(
            "the log ends at record {} but the daemon's head is record {head_seq}",
            get(last, audit::SEQ)
        ));
    }
    for record in records
        .iter()
        .filter(|r| get(r, audit::EVENT) == "audit-gap")
    {
        found.problems.push(format!(
            "record {} says audit records were lost: {}",
            get(record, audit::SEQ),
            get(record, "missing")
        ));
    }
    if checkpoint_seq > 0 {
        let attested = records.iter().any(|r| {
            get(r, audit::EVENT) == "audit-pruned"
                && get(r, "to_seq") == checkpoint_seq.to_string()
                && get(r, "checkpoint_hash") == checkpoint_hash
        });
        if !attested {
            found.problems.push(format!(
                "the chain starts after record {checkpoint_seq}, but no audit-pruned record                  says that record was pruned"
            ));
        }
    }
    compare_with_journal(&chain, checkpoint_seq, head_seq, &records, &mut found);
    let intact = found.problems.is_empty();
    if json {
        print_json(&json!({
            "intact": intact, "records": found.records, "chain": chain,
            "broken_at": found.broken_at,
            "checkpoint": checkpoint_seq, "head": head_seq, "head_hash": head_hash,
            "problems": found.problems, "journal": found.journal,
        }));
    } else if intact {
        let from = if checkpoint_seq > 0 {
            format!(
                " (records {}–{head_seq}; older ones pruned)",
                checkpoint_seq + 1
            )
        } else {
            String::new()
        };
        println!(
            "audit chain intact: {} {}{from}, head {head_hash}",
            found.records,
            if found.records == 1 {
                "record"
            } else {
                "records"
            }
        );
        println!("{}", found.journal);
    } else {
        for problem in &found.problems {
            println!("{problem}");
        }
        println!("{}", found.journal);
    }
    Ok(if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Cross-checks the store's records with the copies journald holds of chain `chain`
/// (sent with every record once it was durable): a copy whose record the store lacks,
/// or holds with another hash, is a loss.
fn compare_with_journal(
    chain: &str,
    checkpoint: u64,
    head: u64,
    records: &[Record],
    found: &mut Verification,
) {
    let output = std::process::Command::new("journalctl")
        .args([
            "-o",
            "json",
            "--no-pager",
            "--output-fields=PROXYUSERD_SEQ,PROXYUSERD_HASH",
        ])
        .arg("SYSLOG_IDENTIFIER=proxyuserd-audit")
        .arg(format!("PROXYUSERD_CHAIN={chain}"))
        .stderr(std::process::Stdio::null())
        .output();
    let output = match output {
        Ok(output) if output.status.success() => output,
        Ok(_) | Err(_) => {
            found.journal = "journald copy not checked (journalctl cannot read it here)".into();
            return;
        }
    };
    // The hash of what the store holds now, recomputed: an edited record whose hash
    // field was left alone differs from its copy too.
    let stored: std::collections::HashMap<String, String> = records
        .iter()
        .map(|r| {
            let seq = r.get(audit::SEQ).cloned().unwrap_or_default();
            (seq, audit::record_hash(r))
        })
        .collect();
    let mut copies = 0u64;
    let mut lost = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(seq), Some(hash)) = (
            entry["PROXYUSERD_SEQ"].as_str(),
            entry["PROXYUSERD_HASH"].as_str(),
        ) else {
            continue;
        };
        let Ok(n) = seq.parse::<u64>() else { continue };
        copies += 1;
        if n <= checkpoint {
            continue;
        }
        match stored.get(seq) {
            Some(h) if h == hash => {}
            Some(_) => lost.push(format!("record {seq} differs from its journald copy")),
            None if n > head => lost.push(format!("record {seq} is in journald, after the head")),
            None => lost.push(format!("record {seq} is in journald but not in the log")),
        }
    }
    if copies == 0 {
        found.journal = "journald holds no copy of this chain".into();
        return;
    }
    found.journal = format!(
        "journald holds {copies} copies of this chain's records: {}",
        if lost.is_empty() {
            "all match"
        } else {
            "some do not match"
        }
    );
    found.problems.extend(lost);
}

/// A bare program name is looked up on the caller's PATH, as a shell would; the daemon
/// itself never searches.
fn absolute_program(program: &str) -> String {
    if program.contains('/') {
        return program.to_string();
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|candidate| candidate.is_file())
        })
        .map_or_else(|| program.to_string(), |found| found.display().to_string())
}

async fn exec(
    jobs: &JobsProxy<'_>,
    login: String,
    env: Vec<String>,
    cwd: Option<String>,
    detach: bool,
    mut argv: Vec<String>,
) -> Outcome {
    argv[0] = absolute_program(&argv[0]);
    // The caller's environment; the daemon keeps only what exec.env_keep names.
    let mut vars: BTreeMap<String, String> = std::env::vars().collect();
    for pair in env {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("--env {pair:?}: expected NAME=VALUE"))?;
        vars.insert(k.to_string(), v.to_string());
    }
    let vars: std::collections::HashMap<&str, &str> =
        vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let argv_refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let id = jobs
        .exec(&login, &argv_refs, &vars, cwd.as_deref().unwrap_or(""))
        .await?;
    if detach {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let (state, code) = wait_across_restarts(jobs, &login, &id).await?;
    // Both requests go out before either answer comes back: one round trip, not two.
    let (stdout, stderr) = tokio::join!(
        jobs.open_result(&login, &id, "stdout"),
        jobs.open_result(&login, &id, "stderr"),
    );
    // What was handed out (and recorded as downloaded) is delivered before any error.
    let stdout = stdout.map(|fd| copy_fd(fd, &id, "stdout", &mut std::io::stdout()));
    let stderr = stderr.map(|fd| copy_fd(fd, &id, "stderr", &mut std::io::stderr()));
    stdout??;
    stderr??;
    Ok(match state.as_str() {
        "exited" => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        "killed" => {
            eprintln!("proxyuserctl: job {id} was killed (exit code {code})");
            ExitCode::from(u8::try_from(code).unwrap_or(255))
        }
        _ => {
            eprintln!("proxyuserctl: job {id} {state}");
            ExitCode::from(255)
        }
    })
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
    println!(
        "{:<12} {:<8} {:>4} {:<14} {:<14} {:<27} COMMAND",
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
            "{id:<12} {state:<8} {exit:>4} {run_as:<14} {login:<14} {started:<27} {}",
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

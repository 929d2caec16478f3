//! Who may do what: the access rules, pure. The authority gathers the facts (the caller
//! as the bus reported it, the accounts involved, what the rules say about them, the
//! configuration) and asks; the answers are `#[must_use]` decisions, never I/O.
//!
//! - [`classify`]: who a caller is (admin, trusted gateway, or neither).
//! - [`act_for`], [`admin`], [`gateway`], [`pam_client`]: may this caller make this call.
//! - [`proxy_target`]: may an account be chosen as a proxy user at all.
//! - [`run_as`]: which account a job for a login runs as, if any.
//! - [`session_login`]: may a gateway open a web session for a login.
//! - [`job_visible`]: may the caller see (wait for, cancel, download) a job.
//! - [`job_env`]: the environment a job gets.

mod env;
#[cfg(test)]
mod tests;

use std::fmt;

pub use env::{JobEnv, RunAsEnv, job_env};

/// What the access rules know of an account: NSS's answer, reduced to what matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFacts<'a> {
    pub name: &'a str,
    pub uid: u32,
    /// Every group it is in, by name (primary included).
    pub groups: &'a [String],
    /// Every group id it is in.
    pub gids: &'a [u32],
    /// The rules make it proxy-type (named as a proxy, or in a proxy group).
    pub proxy_type: bool,
}

/// The configuration the access rules depend on.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    pub admin_group: Option<&'a str>,
    pub trusted_callers: &'a [String],
    /// Accounts below this uid are system accounts (login.defs' `UID_MIN`).
    pub uid_min: u32,
    /// Groups whose members hold powers others must not borrow (besides gid 0 and the
    /// admin group): `sudo`, `wheel`, `admin` by default.
    pub privileged_groups: &'a [String],
    /// Whether a trusted caller may run jobs as a login itself (a login without a
    /// proxy). When false, gateways run jobs only as proxy users.
    pub gateway_runs_as_login: bool,
}

/// The unix user on the other end of a bus connection, as the bus reported it, with
/// what the access rules made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub pid: u32,
    /// The account name of `uid`, if it has one.
    pub name: Option<String>,
    /// uid 0 or a member of the admin group.
    pub admin: bool,
    /// Listed in `trusted_callers`: may act for any login (a gateway for its web users).
    pub trusted: bool,
}

impl Caller {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// The caller as a sentence names a person: its account name, else `uid N`. (The
    /// audit record carries uid and pid on their own.)
    pub fn who(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => format!("uid {}", self.uid),
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} (uid {}, pid {})", self.uid, self.pid),
            None => write!(f, "uid {} (pid {})", self.uid, self.pid),
        }
    }
}

/// Who the caller with `uid`/`pid` is. `account` is NSS's account for the uid, and
/// `uid_shared` whether more than one account name has that uid: then no name of it
/// earns admin or trusted status (only uid 0 is admin by uid).
pub fn classify(
    uid: u32,
    pid: u32,
    account: Option<&AccountFacts<'_>>,
    uid_shared: bool,
    policy: &Policy<'_>,
) -> Caller {
    let by_name = account.filter(|_| !uid_shared);
    let in_admin_group = match (by_name, policy.admin_group) {
        (Some(a), Some(group)) => a.groups.iter().any(|g| g == group),
        _ => false,
    };
    Caller {
        uid,
        pid,
        name: account.map(|a| a.name.to_string()),
        admin: uid == 0 || in_admin_group,
        trusted: by_name.is_some_and(|a| policy.trusted_callers.iter().any(|t| t == a.name)),
    }
}

/// Why a call, a proxy or a job is refused. `Display` is the sentence the caller gets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Refusal {
    /// The caller is neither the login, nor a gateway, nor an admin.
    NotForLogin { caller: String, login: String },
    /// An admin operation by someone who is not an admin.
    NotAdmin {
        caller: String,
        operation: String,
        group: Option<String>,
    },
    /// A gateway operation by someone who is not a trusted caller.
    NotGateway { caller: String, operation: String },
    /// A PAM operation from something that is not root.
    NotRoot { caller: String, operation: String },
    /// An account that must never act for others (root, admins, gateways, sudoers).
    Privileged { account: String, why: Privilege },
    /// A job would run as the login itself, which is not an ordinary account.
    NotOrdinary { account: String, why: String },
    /// A gateway asked for a job as a login itself, which the configuration forbids.
    GatewayAsLogin { login: String },
    /// The login has neither a proxy nor an account of its own.
    NoAccount { login: String },
    /// A job of another user.
    NotYourJob { job: String },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotForLogin { caller, login } => {
                write!(f, "{caller} may not act for login {login}")
            }
            Refusal::NotAdmin {
                caller,
                operation,
                group,
            } => match group {
                Some(group) => write!(
                    f,
                    "{caller} is not an admin (root or a member of {group}): {operation} is \
                     for admins"
                ),
                None => write!(
                    f,
                    "{caller} is not an admin (root): {operation} is for admins"
                ),
            },
            Refusal::NotGateway { caller, operation } => write!(
                f,
                "{caller} is not a trusted caller (gateway): {operation} is for gateways"
            ),
            Refusal::NotRoot { caller, operation } => {
                write!(f, "{caller} is not root: {operation} is for root (PAM)")
            }
            Refusal::Privileged {
                why: Privilege::Root,
                ..
            } => f.write_str("root is never a proxy user"),
            Refusal::Privileged { account, why } => {
                write!(f, "{account} is {why} and is never a proxy user")
            }
            Refusal::NotOrdinary { account, why } => write!(
                f,
                "jobs do not run as {account} itself: it is {why}, not an ordinary account"
            ),
            Refusal::GatewayAsLogin { login } => write!(
                f,
                "{login} has no proxy, and gateways run jobs only as proxy users \
                 (exec.gateway_runs_as_login = false)"
            ),
            Refusal::NoAccount { login } => write!(
                f,
                "{login} has no proxy and no system account: there is no user to run as"
            ),
            Refusal::NotYourJob { job } => write!(f, "no job {job}"),
        }
    }
}

/// Why an account must not be used by others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Privilege {
    Root,
    /// In group `root` (gid 0), the admin group or another privileged group.
    Group(String),
    TrustedCaller,
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Privilege::Root => f.write_str("root"),
            Privilege::Group(group) => write!(f, "a member of the privileged group {group}"),
            Privilege::TrustedCaller => f.write_str("a trusted caller"),
        }
    }
}

/// The answer to "may this caller make this call".
pub type Verdict = Result<(), Refusal>;

/// May `caller` act for `login`: self-service, a trusted caller, or an admin.
pub fn act_for(caller: &Caller, login: &str) -> Verdict {
    if caller.admin || caller.trusted || caller.name.as_deref() == Some(login) {
        Ok(())
    } else {
        Err(Refusal::NotForLogin {
            caller: caller.who(),
            login: login.to_string(),
        })
    }
}

/// Admin operations: uid 0 or the admin group.
pub fn admin(caller: &Caller, operation: &str, policy: &Policy<'_>) -> Verdict {
    if caller.admin {
        Ok(())
    } else {
        Err(Refusal::NotAdmin {
            caller: caller.who(),
            operation: operation.to_string(),
            group: policy.admin_group.map(str::to_string),
        })
    }
}

/// Gateway operations (web sessions): trusted callers and root.
pub fn gateway(caller: &Caller, operation: &str) -> Verdict {
    if caller.trusted || caller.is_root() {
        Ok(())
    } else {
        Err(Refusal::NotGateway {
            caller: caller.who(),
            operation: operation.to_string(),
        })
    }
}

/// PAM operations: only root (a module inside `su`, `sshd`, `login` runs as root) may
/// say who is asking.
pub fn pam_client(caller: &Caller, operation: &str) -> Verdict {
    if caller.is_root() {
        Ok(())
    } else {
        Err(Refusal::NotRoot {
            caller: caller.who(),
            operation: operation.to_string(),
        })
    }
}

/// Why `account` must not act for others, if it must not: root, a member of gid 0, of
/// the admin group or of a privileged group, or a trusted caller. Running as it would
/// hand out those powers.
pub fn privilege(account: &AccountFacts<'_>, policy: &Policy<'_>) -> Option<Privilege> {
    if account.uid == 0 {
        return Some(Privilege::Root);
    }
    if account.gids.contains(&0) {
        return Some(Privilege::Group("root".into()));
    }
    let privileged = policy
        .admin_group
        .into_iter()
        .chain(policy.privileged_groups.iter().map(String::as_str));
    for group in privileged {
        if account.groups.iter().any(|g| g == group) {
            return Some(Privilege::Group(group.to_string()));
        }
    }
    if policy.trusted_callers.iter().any(|t| t == account.name) {
        return Some(Privilege::TrustedCaller);
    }
    None
}

/// May `account` be a proxy user at all (whatever the rules say): never a privileged
/// account. The rules decide the rest.
pub fn proxy_target(account: &AccountFacts<'_>, policy: &Policy<'_>) -> Verdict {
    match privilege(account, policy) {
        Some(why) => Err(Refusal::Privileged {
            account: account.name.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// Whom a login acts as, as the authority found it (rules checked at this moment).
#[derive(Debug, Clone)]
pub enum Acting<'a> {
    /// The login's proxy, which the rules allow now.
    Proxy(AccountFacts<'a>),
    /// No proxy: the login itself, with its account if it has one.
    Itself(Option<AccountFacts<'a>>),
}

/// Which account a job for `login`, asked by `caller`, runs as: (a) the login's proxy,
/// allowed by the rules now (and never a privileged account); or (b) the login itself,
/// only when it is an ordinary account — uid at least `UID_MIN`, not proxy-type, not
/// privileged — and, for a gateway asking, only if `gateway_runs_as_login`.
pub fn run_as<'a>(
    caller: &Caller,
    login: &str,
    acting: &'a Acting<'a>,
    policy: &Policy<'_>,
) -> Result<&'a AccountFacts<'a>, Refusal> {
    match acting {
        Acting::Proxy(proxy) => {
            proxy_target(proxy, policy)?;
            Ok(proxy)
        }
        Acting::Itself(None) => Err(Refusal::NoAccount {
            login: login.to_string(),
        }),
        Acting::Itself(Some(account)) => {
            ordinary(account, policy)?;
            let asks_itself = caller.name.as_deref() == Some(login) && caller.uid == account.uid;
            if !asks_itself && caller.trusted && !policy.gateway_runs_as_login {
                return Err(Refusal::GatewayAsLogin {
                    login: login.to_string(),
                });
            }
            Ok(account)
        }
    }
}

/// An ordinary account: a person's, not the system's, not a proxy user, not privileged.
fn ordinary(account: &AccountFacts<'_>, policy: &Policy<'_>) -> Verdict {
    let not = |why: String| {
        Err(Refusal::NotOrdinary {
            account: account.name.to_string(),
            why,
        })
    };
    if let Some(why) = privilege(account, policy) {
        return not(why.to_string());
    }
    if account.uid < policy.uid_min {
        return not(format!(
            "a system account (uid {} is below UID_MIN {})",
            account.uid, policy.uid_min
        ));
    }
    if account.proxy_type {
        return not("a proxy user (reached only by proxying)".into());
    }
    Ok(())
}

/// May a gateway open a web session for `login`: a login without an account (a web
/// user), or one that could run jobs as itself — never root, a system account, a
/// privileged account or a proxy user.
pub fn session_login(login: Option<&AccountFacts<'_>>, policy: &Policy<'_>) -> Verdict {
    match login {
        None => Ok(()),
        Some(account) => ordinary(account, policy),
    }
}

/// May `caller`, acting for a login whose effective user is `effective`, see a job that
/// ran as `run_as`: its own effective user's jobs, or any job for an admin. Whether the
/// job exists or is another's gets the same answer.
pub fn job_visible(caller: &Caller, effective: &str, run_as: &str, job: &str) -> Verdict {
    if caller.admin || run_as == effective {
        Ok(())
    } else {
        Err(Refusal::NotYourJob {
            job: job.to_string(),
        })
    }
}

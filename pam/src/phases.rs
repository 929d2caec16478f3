//! What each PAM phase does. Every phase makes at most one call to the daemon and
//! never decides a grant itself: the daemon applies the proxy rules and audits.
//!
//! Return codes, chosen so that the recommended stack lines never lock anyone out:
//! - auth: `PAM_SUCCESS` only when the daemon granted; `PAM_AUTH_ERR` when it refused;
//!   `PAM_IGNORE` when the module has nothing to say (root asking, a switch to oneself
//!   or to root, a service not listed); daemon unreachable: `PAM_AUTHINFO_UNAVAIL`, or
//!   `PAM_IGNORE` with `ignore_unavailable`; any other failure `PAM_SERVICE_ERR`.
//!   With `[success=done default=ignore]` (or `sufficient`) all but success fall
//!   through to the rest of the stack.
//! - account: `PAM_PERM_DENIED` for a direct login to a proxy user, else `PAM_IGNORE`.
//! - session: `PAM_SUCCESS` when the session was recorded as a proxy use, `PAM_IGNORE`
//!   when it is none; a granted switch whose session cannot be recorded fails with
//!   `PAM_SESSION_ERR`.

use std::ffi::{CStr, c_int};

use crate::client::CallError;
use crate::daemon::{Daemon, Place};
use crate::options::Options;
use crate::pam::{
    Handle, Item, PAM_AUTH_ERR, PAM_AUTHINFO_UNAVAIL, PAM_IGNORE, PAM_PERM_DENIED, PAM_SERVICE_ERR,
    PAM_SESSION_ERR, PAM_SUCCESS,
};
use crate::sys;

/// Set by auth when the daemon granted the switch: the requester's name.
const GRANTED: &CStr = c"proxyuserd_granted";
/// Set by session open when the session was recorded: its id and login user.
const SESSION: &CStr = c"proxyuserd_session";
const SESSION_LOGIN: &CStr = c"proxyuserd_session_login";

/// The variable a proxied session gets, like the daemon's jobs.
pub const LOGIN_USER_VARIABLE: &str = "PROXYUSERD_LOGIN_USER";

/// Who asks for the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester {
    /// Real uid 0: a root program (sshd, login, root's `su`), which needs no rules.
    Root,
    /// The account of the real uid of the (setuid) program.
    Named(String),
    /// `PAM_RUSER` names someone else than the real uid: nothing is granted.
    Mismatch { uid_name: String, ruser: String },
    /// The real uid has no account.
    Nameless(u32),
}

/// The requester: the real uid's account (the kernel's word, which the user running a
/// setuid program cannot change), cross-checked with `PAM_RUSER` (a string any program
/// can set, so it is never the source).
pub fn requester(uid: u32, uid_name: Option<&str>, ruser: Option<&str>) -> Requester {
    match (uid, uid_name) {
        (0, _) => Requester::Root,
        (_, None) => Requester::Nameless(uid),
        (_, Some(name)) => match ruser {
            Some(ruser) if ruser != name => Requester::Mismatch {
                uid_name: name.to_string(),
                ruser: ruser.to_string(),
            },
            _ => Requester::Named(name.to_string()),
        },
    }
}

/// The login user a session is recorded for when auth granted nothing: the requester;
/// for a root program, `PAM_RUSER` if it set one (root's `su` does), else the target
/// itself (sshd, login: a direct login).
pub fn session_login(requester: &Requester, ruser: Option<&str>, target: &str) -> Option<String> {
    match requester {
        Requester::Named(name) | Requester::Mismatch { uid_name: name, .. } => Some(name.clone()),
        Requester::Root => Some(ruser.unwrap_or(target).to_string()),
        Requester::Nameless(_) => None,
    }
}

/// One hook call: the handle, the line's options, and where the transaction happens.
struct Phase<'a> {
    pam: &'a Handle,
    options: &'a Options,
    place: Place,
}

impl<'a> Phase<'a> {
    fn new(pam: &'a Handle, options: &'a Options) -> Self {
        let item = |item| pam.item(item).unwrap_or_default();
        let phase = Phase {
            pam,
            options,
            place: Place {
                service: item(Item::Service),
                tty: item(Item::Tty),
                rhost: item(Item::Rhost),
            },
        };
        for arg in &options.unknown {
            phase.error(&format!("unknown or invalid argument {arg:?} ignored"));
        }
        phase
    }

    fn debug(&self, message: &str) {
        if self.options.debug {
            self.pam.syslog(libc::LOG_DEBUG, message);
        }
    }

    /// Grants, refusals: what an admin wants to read, unless `quiet`.
    fn notice(&self, message: &str) {
        if !self.options.quiet {
            self.pam.syslog(libc::LOG_NOTICE, message);
        }
    }

    fn error(&self, message: &str) {
        self.pam.syslog(libc::LOG_ERR, message);
    }

    /// Whether this line acts in this service; logs why not.
    fn acts(&self) -> bool {
        let acts = self.options.acts_in(&self.place.service);
        if !acts {
            self.debug(&format!("not acting in service {:?}", self.place.service));
        }
        acts
    }

    fn daemon(&self) -> Daemon {
        Daemon::system(self.options.timeout)
    }

    /// The code for a call that failed: unreachable → `PAM_AUTHINFO_UNAVAIL` (or
    /// `PAM_IGNORE` with `ignore_unavailable`), anything else → `otherwise`.
    fn failed(&self, what: &str, err: &CallError, otherwise: c_int) -> c_int {
        self.error(&format!("{what}: proxyuserd {err}"));
        match err {
            CallError::Unavailable(_) if self.options.ignore_unavailable => PAM_IGNORE,
            CallError::Unavailable(_) => PAM_AUTHINFO_UNAVAIL,
            _ => otherwise,
        }
    }

    fn target(&self) -> Option<String> {
        let target = self.pam.item(Item::User);
        if target.is_none() {
            self.debug("no user set: nothing to do");
        }
        target
    }

    fn requester(&self) -> Requester {
        let uid = sys::real_uid();
        let name = match sys::user_name(uid) {
            Ok(name) => name,
            Err(err) => {
                self.error(&format!("cannot look up uid {uid}: {err}"));
                None
            }
        };
        requester(uid, name.as_deref(), self.pam.item(Item::Ruser).as_deref())
    }
}

/// Whether `user` is root by NSS (root is never a proxy user: nothing to ask).
fn is_root(user: &str) -> bool {
    matches!(sys::user_uid(user), Ok(Some(0)))
}

pub fn authenticate(pam: &Handle, options: &Options) -> c_int {
    let phase = Phase::new(pam, options);
    if !phase.acts() {
        return PAM_IGNORE;
    }
    let Some(target) = phase.target() else {
        return PAM_IGNORE;
    };
    let requester = match phase.requester() {
        Requester::Named(name) => name,
        Requester::Root => {
            phase.debug("root needs no proxy rules");
            return PAM_IGNORE;
        }
        Requester::Mismatch { uid_name, ruser } => {
            phase.notice(&format!(
                "requester {ruser:?} (PAM_RUSER) is not the real user {uid_name}: nothing granted"
            ));
            return PAM_AUTH_ERR;
        }
        Requester::Nameless(uid) => {
            phase.notice(&format!("uid {uid} has no account: nothing granted"));
            return PAM_AUTH_ERR;
        }
    };
    if requester == target || is_root(&target) {
        phase.debug(&format!("{requester} → {target} is not a proxy switch"));
        return PAM_IGNORE;
    }
    match phase.daemon().authorize(&requester, &target, &phase.place) {
        Ok((true, reason)) => {
            if !pam.set_data(GRANTED, requester.clone()) {
                phase.error("cannot keep the grant for the session phase");
            }
            phase.notice(&format!("granted: {reason}"));
            PAM_SUCCESS
        }
        Ok((false, reason)) => {
            phase.notice(&format!("not granted: {reason}"));
            PAM_AUTH_ERR
        }
        Err(err) => phase.failed(&format!("{requester} → {target}"), &err, PAM_SERVICE_ERR),
    }
}

/// Credentials: nothing to establish; a switch this module granted succeeds here too.
pub fn setcred(pam: &Handle, _: &Options) -> c_int {
    if pam.data(GRANTED).is_some() {
        PAM_SUCCESS
    } else {
        PAM_IGNORE
    }
}

pub fn account(pam: &Handle, options: &Options) -> c_int {
    let phase = Phase::new(pam, options);
    if !phase.acts() {
        return PAM_IGNORE;
    }
    let Some(user) = phase.target() else {
        return PAM_IGNORE;
    };
    if pam.data(GRANTED).is_some() {
        phase.debug(&format!("{user} reached by proxying, granted by the rules"));
        return PAM_IGNORE;
    }
    if options.exempt.contains(&user) {
        phase.debug(&format!("{user} is exempt"));
        return PAM_IGNORE;
    }
    if is_root(&user) {
        phase.debug("root is never a proxy user");
        return PAM_IGNORE;
    }
    match phase.daemon().account(&user, &phase.place) {
        Ok((true, _)) => PAM_IGNORE,
        Ok((false, reason)) => {
            phase.notice(&format!("refused: {reason}"));
            PAM_PERM_DENIED
        }
        // Not knowing whether the account may be logged into is a refusal.
        Err(err) => phase.failed(&format!("account {user}"), &err, PAM_SERVICE_ERR),
    }
}

pub fn open_session(pam: &Handle, options: &Options) -> c_int {
    let phase = Phase::new(pam, options);
    if !phase.acts() {
        return PAM_IGNORE;
    }
    let Some(target) = phase.target() else {
        return PAM_IGNORE;
    };
    let granted = pam.data(GRANTED);
    if granted.is_none() && is_root(&target) {
        return PAM_IGNORE;
    }
    let ruser = pam.item(Item::Ruser);
    let login = match granted.clone() {
        Some(login) => login,
        None => match session_login(&phase.requester(), ruser.as_deref(), &target) {
            Some(login) => login,
            None => {
                phase.error("the requesting uid has no account: session not recorded");
                return PAM_SESSION_ERR;
            }
        },
    };
    match phase.daemon().open_session(&login, &target, &phase.place) {
        Ok(Some(id)) => {
            let kept = pam.set_data(SESSION, id.clone())
                && pam.set_data(SESSION_LOGIN, login.clone())
                && pam.putenv(LOGIN_USER_VARIABLE, &login);
            if !kept {
                phase.error("cannot keep the session's id or set PROXYUSERD_LOGIN_USER");
                return PAM_SESSION_ERR;
            }
            phase.debug(&format!("session {id} of {login} as {target} recorded"));
            PAM_SUCCESS
        }
        Ok(None) => {
            phase.debug(&format!("{login} as {target} is no proxy use"));
            PAM_IGNORE
        }
        Err(err) => {
            let code = phase.failed(
                &format!("session of {login} as {target}"),
                &err,
                PAM_SESSION_ERR,
            );
            // A switch this module granted is used only if it is audited.
            if granted.is_some() {
                PAM_SESSION_ERR
            } else {
                code
            }
        }
    }
}

pub fn close_session(pam: &Handle, options: &Options) -> c_int {
    let phase = Phase::new(pam, options);
    let (Some(id), Some(login), Some(target)) =
        (pam.data(SESSION), pam.data(SESSION_LOGIN), phase.target())
    else {
        // This module recorded no session in this transaction.
        return PAM_IGNORE;
    };
    match phase
        .daemon()
        .close_session(&id, &login, &target, &phase.place)
    {
        Ok(()) => PAM_SUCCESS,
        Err(err) => phase.failed(&format!("closing session {id}"), &err, PAM_SESSION_ERR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_requester_is_the_real_uid_and_pam_ruser_only_a_cross_check() {
        let named = |n: &str| Requester::Named(n.into());
        assert_eq!(
            requester(1000, Some("alice"), Some("alice")),
            named("alice")
        );
        assert_eq!(requester(1000, Some("alice"), None), named("alice"));
        assert_eq!(
            requester(1000, Some("alice"), Some("bob")),
            Requester::Mismatch {
                uid_name: "alice".into(),
                ruser: "bob".into()
            }
        );
        // A root program is root, whatever PAM_RUSER claims.
        assert_eq!(requester(0, Some("root"), Some("alice")), Requester::Root);
        assert_eq!(
            requester(4242, None, Some("alice")),
            Requester::Nameless(4242)
        );
    }

    #[test]
    fn sessions_are_recorded_for_the_requester_or_the_direct_login() {
        let alice = Requester::Named("alice".into());
        assert_eq!(session_login(&alice, None, "etl").as_deref(), Some("alice"));
        let mismatch = Requester::Mismatch {
            uid_name: "alice".into(),
            ruser: "bob".into(),
        };
        assert_eq!(
            session_login(&mismatch, Some("bob"), "etl").as_deref(),
            Some("alice")
        );
        assert_eq!(
            session_login(&Requester::Root, Some("root"), "etl").as_deref(),
            Some("root")
        );
        assert_eq!(
            session_login(&Requester::Root, None, "etl").as_deref(),
            Some("etl")
        );
        assert_eq!(session_login(&Requester::Nameless(7), None, "etl"), None);
    }
}

//! `org.proxyuserd1.Pam`: the questions of the PAM module `pam_proxyuserd.so`, which
//! runs inside `su`, `sshd` and `login`.
//!
//! Only root may ask. The module runs in setuid or root programs, so it reaches the bus
//! as uid 0; a requester named by anyone else could be anyone. What the module says
//! about the requester is as good as the module: it takes the real uid of the program
//! (see README, "PAM").
//!
//! Every answer that lets something happen is audited before it is given: a grant
//! (`pam-auth`), a refused direct login (`denied`), a proxied session (`pam-session-open`,
//! `pam-session-close`). A switch granted here is a proxy use without an association:
//! the requester's own proxy does not change.

use crate::access::{self, Caller};
use crate::audit::{Draft, Event};
use crate::names::check_user_name;
use crate::policy::Decision;
use crate::sys::{hex, random_bytes};

use super::{Authority, Error, subject};

/// Where a PAM transaction happens: the PAM service (`su`, `sshd`, …), the terminal and
/// the remote host, as the host program set them (tty and rhost may be empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PamPlace {
    pub service: String,
    pub tty: String,
    pub rhost: String,
}

impl PamPlace {
    /// The place's fields on an audit record. They are the host program's words, so
    /// they are recorded escaped and cut, never refused: a login must not fail because
    /// of what a client put in its host name.
    fn on(&self, draft: Draft) -> Draft {
        draft
            .with("service", recordable(&self.service))
            .with("tty", recordable(&self.tty))
            .with("rhost", recordable(&self.rhost))
    }
}

/// `value` with control characters escaped, cut to 256 characters.
fn recordable(value: &str) -> String {
    value
        .chars()
        .take(256)
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

fn check_name(what: &str, name: &str) -> Result<(), Error> {
    check_user_name(name).map_err(|e| Error::InvalidArgs(format!("{what}: {e}")))
}

impl Authority {
    /// The PAM interface is for root: the module inside su/sshd/login connects as uid 0.
    fn require_root(&self, caller: &Caller, operation: &str) -> Result<(), Error> {
        access::pam_client(caller, operation).map_err(|refusal| {
            self.deny(
                caller,
                operation,
                Draft::new(Event::Denied),
                Error::AccessDenied(refusal.to_string()),
            )
        })
    }

    /// Records a refusal of `operation` for `login` → `target` and returns the answer.
    fn pam_refuse(
        &self,
        caller: &Caller,
        operation: &str,
        login: &str,
        target: &str,
        place: &PamPlace,
        reason: String,
    ) -> (bool, String) {
        let draft = Draft::new(Event::Denied)
            .with("login", login)
            .with("proxy", target);
        self.deny(
            caller,
            operation,
            place.on(draft),
            Error::NotAllowed(reason.clone()),
        );
        (false, reason)
    }

    /// May `requester` become `target` without `target`'s password? Exactly when the
    /// rules allow requester → target now (so the target is a proxy user, never root,
    /// never an admin or trusted caller). A grant is recorded before it is answered; a
    /// refusal too.
    pub fn pam_authorize(
        &self,
        caller: &Caller,
        requester: &str,
        target: &str,
        place: &PamPlace,
    ) -> Result<(bool, String), Error> {
        const OPERATION: &str = "Pam.Authorize";
        self.require_root(caller, OPERATION)?;
        check_name("requester", requester)?;
        check_name("target", target)?;
        let refuse = |reason| self.pam_refuse(caller, OPERATION, requester, target, place, reason);
        let Some(target_account) = self.directory.user(target)? else {
            return Ok(refuse(format!("no system user {target}")));
        };
        if let Err(refusal) =
            access::proxy_target(&self.facts(&target_account), &self.policy(&self.config()))
        {
            return Ok(refuse(refusal.to_string()));
        }
        let requester_account = self.login_account(requester)?;
        // Decided and recorded in one transaction, so the audit log orders this grant
        // correctly with respect to rule changes.
        let mut txn = self.begin()?;
        let decision = self.rules.load().check(
            &subject(requester, requester_account.as_deref()),
            &target_account.subject(),
            self.now(),
        );
        let reason = decision.reason(requester, target);
        let Decision::Allowed { rule } = &decision else {
            drop(txn);
            return Ok(refuse(reason));
        };
        let draft = Draft::new(Event::PamAuth)
            .with("login", requester)
            .with("proxy", target)
            .with("effective", target)
            .with("rule", rule.to_string())
            .caller(caller);
        txn.record(place.on(draft), Vec::new(), self.now())?;
        self.commit(Some(caller), txn)?;
        Ok((true, reason))
    }

    /// May `user` be logged into directly (sshd, login)? Not if it is a proxy user: those
    /// accounts are reached by proxying. Refusals are recorded.
    pub fn pam_account(
        &self,
        caller: &Caller,
        user: &str,
        place: &PamPlace,
    ) -> Result<(bool, String), Error> {
        const OPERATION: &str = "Pam.Account";
        self.require_root(caller, OPERATION)?;
        // A name the rules cannot hold is no proxy user.
        if check_user_name(user).is_err() {
            return Ok((true, format!("{user:?} is not a proxy user")));
        }
        let Some(account) = self.directory.user(user)? else {
            return Ok((true, format!("no system user {user}: not for proxyuserd")));
        };
        if !self.rules.load().is_proxy_type(&account.subject()) {
            return Ok((true, format!("{user} is not a proxy user")));
        }
        let reason = format!(
            "{user} is a proxy user: it is reached by proxying, never logged into directly"
        );
        Ok(self.pam_refuse(caller, OPERATION, user, user, place, reason))
    }

    /// Records the opening of `login`'s session as `target` when it is a proxy use (the
    /// target is a proxy user); `(recorded, session id)`.
    pub fn pam_open_session(
        &self,
        caller: &Caller,
        login: &str,
        target: &str,
        place: &PamPlace,
    ) -> Result<(bool, String), Error> {
        self.require_root(caller, "Pam.OpenSession")?;
        // A name the rules cannot hold is no proxy user.
        if check_user_name(target).is_err() {
            return Ok((false, String::new()));
        }
        let Some(account) = self.directory.user(target)? else {
            return Ok((false, String::new()));
        };
        if !self.rules.load().is_proxy_type(&account.subject()) {
            return Ok((false, String::new()));
        }
        check_name("login", login)?;
        let id = hex(&random_bytes(8).map_err(|e| Error::Failed(format!("no random bytes: {e}")))?);
        let draft = Draft::new(Event::PamSessionOpen)
            .with("login", login)
            .with("proxy", target)
            .with("effective", target)
            .with("session", id.as_str())
            .caller(caller);
        let mut txn = self.begin()?;
        txn.record(place.on(draft), Vec::new(), self.now())?;
        self.commit(Some(caller), txn)?;
        Ok((true, id))
    }

    /// Records the end of a session [`pam_open_session`](Self::pam_open_session) recorded.
    pub fn pam_close_session(
        &self,
        caller: &Caller,
        session: &str,
        login: &str,
        target: &str,
        place: &PamPlace,
    ) -> Result<(), Error> {
        self.require_root(caller, "Pam.CloseSession")?;
        if session.len() != 16 || !session.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidArgs(format!(
                "session {session:?} is not a PAM session id"
            )));
        }
        check_name("login", login)?;
        check_name("target", target)?;
        let draft = Draft::new(Event::PamSessionClose)
            .with("login", login)
            .with("proxy", target)
            .with("effective", target)
            .with("session", session)
            .caller(caller);
        let mut txn = self.begin()?;
        txn.record(place.on(draft), Vec::new(), self.now())?;
        self.commit(Some(caller), txn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_recorded_escaped_and_cut() {
        assert_eq!(recordable("pts/3"), "pts/3");
        assert_eq!(recordable("host\nforged=1"), "host\\nforged=1");
        assert_eq!(recordable(&"x".repeat(300)).len(), 256);
    }
}

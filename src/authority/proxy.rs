//! `org.proxyuserd1.Identity`: associations between logins and their proxies.

use crate::audit::{Draft, Event, Ledger};
use std::sync::Arc;

use crate::access::Caller;
use crate::accounts::Account;
use crate::names::check_user_name;
use crate::policy::{CompiledRules, Decision};
use crate::store::{Association, Tree, Write};
use crate::time::now_micros;
use crate::wire::NO_ID;

use super::{Authority, Error, Notice, subject};

/// Whom a login acts as now (`Resolve`'s answer): its effective user, with that user's
/// account when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acting {
    /// The proxy if the login has one, else the login.
    pub effective: String,
    /// "" when the login has no proxy.
    pub proxy: String,
    pub account: Option<Arc<Account>>,
}

impl Acting {
    /// uid of the effective user; [`NO_ID`] without a system account.
    pub fn uid(&self) -> u32 {
        self.account.as_ref().map_or(NO_ID, |a| a.uid)
    }

    pub fn gid(&self) -> u32 {
        self.account.as_ref().map_or(NO_ID, |a| a.gid)
    }
}

impl Authority {
    pub fn resolve(&self, caller: &Caller, login: &str) -> Result<Acting, Error> {
        self.authorize(caller, "Resolve", login)?;
        self.acting(login)
    }

    /// `Resolve` from memory only, for the hot path: `None` when answering would block
    /// (an NSS lookup the cache does not hold, a denial or a revocation to record), and
    /// the caller should use [`resolve`](Self::resolve) on a blocking thread instead.
    pub fn resolve_cached(&self, caller: &Caller, login: &str) -> Option<Acting> {
        if check_user_name(login).is_err() || !caller.may_act_for(login) {
            return None;
        }
        let login_account = self.directory.cached_user(login)?;
        let Some(association) = self.store.association(login).ok()? else {
            return Some(Acting {
                effective: login.to_string(),
                proxy: String::new(),
                account: login_account,
            });
        };
        let proxy_account = self.directory.cached_user(&association.proxy)??;
        let decision = decide(
            &self.rules.load(),
            login,
            login_account.as_deref(),
            &proxy_account,
        );
        decision.is_allowed().then(|| Acting {
            effective: proxy_account.name.clone(),
            proxy: proxy_account.name.clone(),
            account: Some(proxy_account),
        })
    }

    /// Who `login` acts as, revoking an association the rules no longer allow.
    /// Authorization is the caller's business.
    pub(crate) fn acting(&self, login: &str) -> Result<Acting, Error> {
        if let Some(association) = self.store.association(login)? {
            match self.still_allowed(&self.rules.load(), login, &association.proxy)? {
                Ok(account) => {
                    return Ok(Acting {
                        effective: association.proxy,
                        proxy: account.name.clone(),
                        account: Some(account),
                    });
                }
                Err(reason) => self.revoke(&mut self.lock(), login, &association.proxy, &reason)?,
            }
        }
        Ok(Acting {
            effective: login.to_string(),
            proxy: String::new(),
            account: self.login_account(login)?,
        })
    }

    pub fn check_proxy(
        &self,
        caller: &Caller,
        login: &str,
        proxy: &str,
    ) -> Result<(bool, String), Error> {
        self.authorize(caller, "CheckProxy", login)?;
        let proxy_account = self.proxy_account(proxy)?;
        let login_account = self.login_account(login)?;
        let decision = decide(
            &self.rules.load(),
            login,
            login_account.as_deref(),
            &proxy_account,
        );
        Ok((decision.is_allowed(), decision.reason(login, proxy)))
    }

    pub fn list_proxies(&self, caller: &Caller, login: &str) -> Result<Vec<String>, Error> {
        self.authorize(caller, "ListProxies", login)?;
        let login_account = self.login_account(login)?;
        let login_subject = subject(login, login_account.as_deref());
        let rules = self.rules.load();
        let now = now_micros();
        let (mut names, groups) = rules.offered_targets(&login_subject, now);
        for group in &groups {
            names.extend(self.directory.group_members(group)?);
        }
        names.sort();
        names.dedup();
        let mut allowed = Vec::new();
        for name in names {
            if let Some(account) = self.directory.user(&name)?
                && rules
                    .check(&login_subject, &account.subject(), now)
                    .is_allowed()
            {
                allowed.push(name);
            }
        }
        Ok(allowed)
    }

    pub fn set_proxy(&self, caller: &Caller, login: &str, proxy: &str) -> Result<(), Error> {
        self.authorize(caller, "SetProxy", login)?;
        self.associate(caller, "SetProxy", login, proxy, |draft| draft, Vec::new())
    }

    /// Makes `proxy` the proxy of `login` if the rules allow it, recording `proxy-set`
    /// (with `more` fields) together with `writes`. Proxy sessions of the login for
    /// another proxy end with it. The caller is authorized already.
    pub(super) fn associate(
        &self,
        caller: &Caller,
        operation: &str,
        login: &str,
        proxy: &str,
        more: impl FnOnce(Draft) -> Draft,
        mut writes: Vec<Write>,
    ) -> Result<(), Error> {
        let proxy_account = self.proxy_account(proxy)?;
        // NSS's spelling of the name (SSSD may fold case or qualify it).
        let proxy = proxy_account.name.as_str();
        let login_account = self.login_account(login)?;
        if let Some(what) = self.privileged(&proxy_account) {
            let err = Error::NotAllowed(format!("{proxy} is {what} and is never a proxy user"));
            let draft = Draft::new(Event::Denied)
                .with("login", login)
                .with("proxy", proxy);
            return Err(self.deny(caller, operation, draft, err));
        }
        let mut ledger = self.lock();
        let decision = decide(
            &self.rules.load(),
            login,
            login_account.as_deref(),
            &proxy_account,
        );
        let Decision::Allowed { rule } = &decision else {
            drop(ledger);
            let err = Error::NotAllowed(decision.reason(login, proxy));
            let draft = Draft::new(Event::Denied)
                .with("login", login)
                .with("proxy", proxy);
            return Err(self.deny(caller, operation, draft, err));
        };
        let previous = self.store.association(login)?.map(|a| a.proxy);
        let association = Association {
            proxy: proxy.to_string(),
            since: now_micros(),
            by_uid: caller.uid,
        };
        let (ended, ended_ids) = self.stale_proxy_sessions(login, Some(proxy))?;
        let draft = Draft::new(Event::ProxySet)
            .with("login", login)
            .with("proxy", proxy)
            .with("effective", proxy)
            .with("previous", previous.unwrap_or_default())
            .with("rule", rule.to_string())
            .with("ended_sessions", ended_ids.join(","))
            .caller(caller);
        writes.push(Write::put(Tree::Associations, login, &association));
        writes.extend(ended);
        self.record(&mut ledger, more(draft), writes)?;
        self.notify(Notice::ProxyChanged {
            login: login.into(),
            proxy: proxy.into(),
            why: "set",
        });
        Ok(())
    }

    pub fn clear_proxy(&self, caller: &Caller, login: &str) -> Result<(), Error> {
        self.authorize(caller, "ClearProxy", login)?;
        let mut ledger = self.lock();
        let Some(association) = self.store.association(login)? else {
            return Ok(());
        };
        let (mut writes, ended_ids) = self.stale_proxy_sessions(login, None)?;
        let draft = Draft::new(Event::ProxyCleared)
            .with("login", login)
            .with("proxy", association.proxy.as_str())
            .with("effective", login)
            .with("ended_sessions", ended_ids.join(","))
            .caller(caller);
        writes.push(Write::delete(Tree::Associations, login));
        self.record(&mut ledger, draft, writes)?;
        self.notify(Notice::ProxyChanged {
            login: login.into(),
            proxy: association.proxy,
            why: "cleared",
        });
        Ok(())
    }

    /// Whether `login` may still proxy to `proxy`: the proxy's account, or why not.
    fn still_allowed(
        &self,
        rules: &CompiledRules,
        login: &str,
        proxy: &str,
    ) -> Result<Result<Arc<Account>, String>, Error> {
        let Some(proxy_account) = self.directory.user(proxy)? else {
            return Ok(Err(format!("system user {proxy} no longer exists")));
        };
        let login_account = self.login_account(login)?;
        let decision = decide(rules, login, login_account.as_deref(), &proxy_account);
        Ok(match decision {
            Decision::Allowed { .. } => Ok(proxy_account),
            denied => Err(denied.reason(login, proxy)),
        })
    }

    /// Ends `login`'s association with `proxy` if it still exists (under the lock).
    fn revoke(
        &self,
        ledger: &mut Ledger,
        login: &str,
        proxy: &str,
        reason: &str,
    ) -> Result<(), Error> {
        match self.store.association(login)? {
            Some(current) if current.proxy == proxy => {}
            _ => return Ok(()),
        }
        let (mut writes, ended_ids) = self.stale_proxy_sessions(login, None)?;
        let draft = Draft::new(Event::ProxyRevoked)
            .with("login", login)
            .with("proxy", proxy)
            .with("effective", login)
            .with("reason", reason)
            .with("ended_sessions", ended_ids.join(","));
        writes.push(Write::delete(Tree::Associations, login));
        self.record(ledger, draft, writes)?;
        tracing::info!("revoked {login} → {proxy}: {reason}");
        self.notify(Notice::ProxyChanged {
            login: login.into(),
            proxy: proxy.into(),
            why: "revoked",
        });
        Ok(())
    }

    /// Revokes every association the current rules (and NSS) no longer allow. Called
    /// under the lock after each rule change, and by the expiry timer.
    /// Best effort: an association that cannot be checked or revoked now (NSS or the
    /// store failing) is logged and left for the next sweep, and the others go on.
    pub(super) fn sweep_locked(&self, ledger: &mut Ledger) -> usize {
        let rules = self.rules.load();
        let associations = match self.store.associations() {
            Ok(associations) => associations,
            Err(err) => {
                tracing::error!("cannot revalidate associations: {err}");
                return 0;
            }
        };
        let mut revoked = 0;
        for (login, association) in associations {
            let result = self
                .still_allowed(&rules, &login, &association.proxy)
                .and_then(|verdict| match verdict {
                    Ok(_) => Ok(false),
                    Err(reason) => self
                        .revoke(ledger, &login, &association.proxy, &reason)
                        .map(|_| true),
                });
            match result {
                Ok(true) => revoked += 1,
                Ok(false) => {}
                Err(err) => {
                    tracing::error!("cannot revalidate {login} → {}: {err}", association.proxy)
                }
            }
        }
        revoked
    }

    /// Revalidates all associations now (expiry timer, periodic NSS check).
    pub fn sweep(&self) -> usize {
        self.sweep_locked(&mut self.lock())
    }
}

/// What `rules` say now about `login` (with its account, if it has one) proxying to
/// `proxy`.
fn decide(
    rules: &CompiledRules,
    login: &str,
    login_account: Option<&Account>,
    proxy: &Account,
) -> Decision {
    rules.check(
        &subject(login, login_account),
        &proxy.subject(),
        now_micros(),
    )
}

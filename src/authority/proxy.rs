//! `org.proxyuserd1.Identity`: associations between logins and their proxies.

use std::sync::Arc;

use crate::access::{self, Caller};
use crate::accounts::Account;
use crate::audit::{Draft, Event, Txn};
use crate::names::check_user_name;
use crate::policy::{CompiledRules, Decision};
use crate::store::{Association, Tree, Write};
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

/// An association to end, with why.
pub(super) struct Revocation {
    pub login: String,
    pub proxy: String,
    pub reason: String,
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
        if check_user_name(login).is_err() || access::act_for(caller, login).is_err() {
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
        let decision = self.decide(
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
                Err(reason) => self.revoke_all(vec![Revocation {
                    login: login.to_string(),
                    proxy: association.proxy,
                    reason,
                }])?,
            };
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
        let proxy_account = self.proxy_account(caller, proxy)?;
        let login_account = self.login_account(login)?;
        Ok(self.proxy_answer(login, login_account.as_deref(), &proxy_account))
    }

    /// `CheckProxy` from memory only (see [`resolve_cached`](Self::resolve_cached)).
    pub fn check_proxy_cached(
        &self,
        caller: &Caller,
        login: &str,
        proxy: &str,
    ) -> Option<(bool, String)> {
        if check_user_name(login).is_err()
            || check_user_name(proxy).is_err()
            || access::act_for(caller, login).is_err()
        {
            return None;
        }
        let login_account = self.directory.cached_user(login)?;
        let proxy_account = self.directory.cached_user(proxy)??;
        Some(self.proxy_answer(login, login_account.as_deref(), &proxy_account))
    }

    /// Whether `login` may proxy to `proxy` now, and why: the access rules first (a
    /// privileged account is never a proxy), then the proxy rules.
    fn proxy_answer(
        &self,
        login: &str,
        login_account: Option<&Account>,
        proxy: &Account,
    ) -> (bool, String) {
        if let Err(refusal) = access::proxy_target(&self.facts(proxy), &self.policy(&self.config()))
        {
            return (false, refusal.to_string());
        }
        let decision = self.decide(&self.rules.load(), login, login_account, proxy);
        (decision.is_allowed(), decision.reason(login, &proxy.name))
    }

    pub fn list_proxies(&self, caller: &Caller, login: &str) -> Result<Vec<String>, Error> {
        self.authorize(caller, "ListProxies", login)?;
        let login_account = self.login_account(login)?;
        let login_subject = subject(login, login_account.as_deref());
        let rules = self.rules.load();
        let now = self.now();
        let (mut names, groups) = rules.offered_targets(&login_subject, now);
        for group in &groups {
            names.extend(self.directory.group_members(group)?);
        }
        names.sort();
        names.dedup();
        let config = self.config();
        let policy = self.policy(&config);
        let mut allowed = Vec::new();
        for name in names {
            if let Some(account) = self.directory.user(&name)?
                && access::proxy_target(&self.facts(&account), &policy).is_ok()
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
        self.associate(
            caller,
            "SetProxy",
            login,
            proxy,
            |draft| draft,
            |_| Vec::new(),
        )
    }

    /// Makes `proxy` the proxy of `login` if the rules allow it, recording `proxy-set`
    /// (with `more` fields) together with the writes `extra` makes of the proxy's name.
    /// Proxy sessions of the login for another proxy end with it. The caller is
    /// authorized already.
    pub(super) fn associate(
        &self,
        caller: &Caller,
        operation: &str,
        login: &str,
        proxy: &str,
        more: impl FnOnce(Draft) -> Draft,
        extra: impl FnOnce(&str) -> Vec<Write>,
    ) -> Result<(), Error> {
        // Facts first (NSS), the transaction after.
        let proxy_account = self.proxy_account(caller, proxy)?;
        // NSS's spelling of the name (SSSD may fold case or qualify it).
        let proxy = proxy_account.name.as_str();
        let login_account = self.login_account(login)?;
        let denied = |err: Error| {
            let draft = Draft::new(Event::Denied)
                .with("login", login)
                .with("proxy", proxy);
            self.deny(caller, operation, draft, err)
        };
        if let Err(refusal) =
            access::proxy_target(&self.facts(&proxy_account), &self.policy(&self.config()))
        {
            return Err(denied(Error::NotAllowed(refusal.to_string())));
        }
        let mut txn = self.begin()?;
        // Decided under the transaction, so a concurrent reload cannot slip in between.
        let decision = self.decide(
            &self.rules.load(),
            login,
            login_account.as_deref(),
            &proxy_account,
        );
        let Decision::Allowed { rule } = &decision else {
            drop(txn);
            return Err(denied(Error::NotAllowed(decision.reason(login, proxy))));
        };
        let store = txn.store();
        let previous = store.association(login)?.map(|a| a.proxy);
        let association = Association {
            proxy: proxy.to_string(),
            since: self.now(),
            by_uid: caller.uid,
        };
        let (mut writes, ended_ids) = self.stale_proxy_sessions(store, login, Some(proxy))?;
        let draft = Draft::new(Event::ProxySet)
            .with("login", login)
            .with("proxy", proxy)
            .with("effective", proxy)
            .with("previous", previous.unwrap_or_default())
            .with("rule", rule.to_string())
            .with("ended_sessions", ended_ids.join(","))
            .caller(caller);
        writes.push(Write::put(Tree::Associations, login, &association));
        writes.extend(extra(proxy));
        txn.record(more(draft), writes, self.now())?;
        self.commit(Some(caller), txn)?;
        self.notify(Notice::ProxyChanged {
            login: login.into(),
            proxy: proxy.into(),
            why: "set",
        });
        Ok(())
    }

    pub fn clear_proxy(&self, caller: &Caller, login: &str) -> Result<(), Error> {
        self.authorize(caller, "ClearProxy", login)?;
        let mut txn = self.begin()?;
        let store = txn.store();
        let Some(association) = store.association(login)? else {
            return Ok(());
        };
        let (mut writes, ended_ids) = self.stale_proxy_sessions(store, login, None)?;
        let draft = Draft::new(Event::ProxyCleared)
            .with("login", login)
            .with("proxy", association.proxy.as_str())
            .with("effective", login)
            .with("ended_sessions", ended_ids.join(","))
            .caller(caller);
        writes.push(Write::delete(Tree::Associations, login));
        txn.record(draft, writes, self.now())?;
        self.commit(Some(caller), txn)?;
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
        if let Err(refusal) =
            access::proxy_target(&self.facts(&proxy_account), &self.policy(&self.config()))
        {
            return Ok(Err(refusal.to_string()));
        }
        let login_account = self.login_account(login)?;
        let decision = self.decide(rules, login, login_account.as_deref(), &proxy_account);
        Ok(match decision {
            Decision::Allowed { .. } => Ok(proxy_account),
            denied => Err(denied.reason(login, proxy)),
        })
    }

    /// Ends `login`'s association with `proxy` in `txn` if it still exists.
    fn revoke(&self, txn: &mut Txn<'_>, revocation: &Revocation) -> Result<bool, Error> {
        let Revocation {
            login,
            proxy,
            reason,
        } = revocation;
        let store = txn.store();
        match store.association(login)? {
            Some(current) if &current.proxy == proxy => {}
            _ => return Ok(false),
        }
        let (mut writes, ended_ids) = self.stale_proxy_sessions(store, login, None)?;
        let draft = Draft::new(Event::ProxyRevoked)
            .with("login", login.as_str())
            .with("proxy", proxy.as_str())
            .with("effective", login.as_str())
            .with("reason", reason.as_str())
            .with("ended_sessions", ended_ids.join(","));
        writes.push(Write::delete(Tree::Associations, login.as_str()));
        txn.record(draft, writes, self.now())?;
        Ok(true)
    }

    /// Ends the given associations (each only if it is still the same), in
    /// transactions of a bounded size; announces them once durable.
    pub(super) fn revoke_all(&self, revocations: Vec<Revocation>) -> Result<usize, Error> {
        let mut revoked = 0;
        for batch in revocations.chunks(64) {
            let mut txn = self.begin()?;
            let mut done = Vec::new();
            for revocation in batch {
                if self.revoke(&mut txn, revocation)? {
                    done.push(revocation);
                }
            }
            txn.commit()?;
            for revocation in done {
                tracing::info!(
                    "revoked {} → {}: {}",
                    revocation.login,
                    revocation.proxy,
                    revocation.reason
                );
                self.notify(Notice::ProxyChanged {
                    login: revocation.login.clone(),
                    proxy: revocation.proxy.clone(),
                    why: "revoked",
                });
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    /// Revokes every association the current rules (and NSS) no longer allow. The
    /// lookups happen first, outside any transaction; each revocation is checked again
    /// inside its own. Best effort: an association that cannot be checked now (NSS
    /// failing) is logged and left for the next sweep.
    pub fn sweep(&self) -> usize {
        let rules = self.rules.load();
        let associations = match self.store.associations() {
            Ok(associations) => associations,
            Err(err) => {
                tracing::error!("cannot revalidate associations: {err}");
                return 0;
            }
        };
        let mut revocations = Vec::new();
        for (login, association) in associations {
            match self.still_allowed(&rules, &login, &association.proxy) {
                Ok(Ok(_)) => {}
                Ok(Err(reason)) => revocations.push(Revocation {
                    login,
                    proxy: association.proxy,
                    reason,
                }),
                Err(err) => {
                    tracing::error!("cannot revalidate {login} → {}: {err}", association.proxy)
                }
            }
        }
        match self.revoke_all(revocations) {
            Ok(revoked) => revoked,
            Err(err) => {
                tracing::error!("cannot revoke associations: {err}");
                0
            }
        }
    }
}

impl Authority {
    /// What `rules` say now about `login` (with its account, if it has one) proxying
    /// to `proxy`.
    fn decide(
        &self,
        rules: &CompiledRules,
        login: &str,
        login_account: Option<&Account>,
        proxy: &Account,
    ) -> Decision {
        rules.check(&subject(login, login_account), &proxy.subject(), self.now())
    }
}

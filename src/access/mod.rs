//! Who may do what: the access rules, pure. Callers hand in the facts (the caller, the
//! accounts involved, the configuration); the answers are decisions, never I/O.

use std::fmt;

use crate::accounts::Account;

/// The unix user on the other end of a bus connection, as the bus reported it.
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
    /// Builds the caller from its credentials, deciding admin and trusted status once.
    pub fn new(
        uid: u32,
        pid: u32,
        account: Option<&Account>,
        admin_group: Option<&str>,
        trusted: &[String],
    ) -> Self {
        let name = account.map(|a| a.name.clone());
        let in_admin_group = match (account, admin_group) {
            (Some(a), Some(group)) => a.groups.iter().any(|g| g == group),
            _ => false,
        };
        Caller {
            uid,
            pid,
            trusted: name.as_ref().is_some_and(|n| trusted.contains(n)),
            admin: uid == 0 || in_admin_group,
            name,
        }
    }

    /// Self-service, a trusted caller, or an admin (DESIGN §2).
    pub fn may_act_for(&self, login: &str) -> bool {
        self.admin || self.trusted || self.name.as_deref() == Some(login)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str, groups: &[&str]) -> Account {
        Account {
            name: name.into(),
            uid: 1000,
            gid: 1000,
            home: "/home/x".into(),
            shell: "/bin/sh".into(),
            gids: vec![1000],
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn caller_may_act_for_itself_only_unless_trusted_or_admin() {
        let alice = account("alice", &["alice"]);
        let caller = Caller::new(1000, 1, Some(&alice), Some("wheel"), &[]);
        assert!(caller.may_act_for("alice"));
        assert!(!caller.may_act_for("bob"));
        assert!(!caller.admin);

        let gateway = account("gw", &["gw"]);
        let caller = Caller::new(1001, 1, Some(&gateway), None, &["gw".to_string()]);
        assert!(caller.trusted && caller.may_act_for("anyone"));

        let admin = account("adm", &["adm", "wheel"]);
        assert!(Caller::new(1002, 1, Some(&admin), Some("wheel"), &[]).admin);
        assert!(Caller::new(0, 1, None, None, &[]).admin);
        let ghost = Caller::new(4242, 1, None, Some("wheel"), &[]);
        assert!(!ghost.may_act_for("4242") && !ghost.admin);
    }
}

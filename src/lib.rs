//! proxyuserd: the host-local authority for proxy user mode.
//!
//! A login user chooses a proxy user (a real system account), runs work as it and sees
//! its results while proxying; who may proxy to whom is an allowlist of rules, and every
//! proxied operation is audited. See `DESIGN.md` for the concepts and the D-Bus contract.
//!
//! Layers: [`policy`] decides (pure), [`identity`] knows users, [`store`] keeps state,
//! [`audit`] records, [`authority`] runs each operation, [`bus`] speaks D-Bus,
//! [`daemon`] wires it up, [`ctl`] is the command line.

pub mod audit;
pub mod authority;
pub mod bus;
pub mod client;
pub mod ctl;
pub mod daemon;
pub mod exec;
pub mod identity;
pub mod policy;
pub mod store;
pub(crate) mod sys;

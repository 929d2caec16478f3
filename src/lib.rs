//! proxyuserd: the host-local authority for proxy user mode.
//!
//! A login user chooses a proxy user (a real system account), runs work as it and sees
//! its results while proxying; who may proxy to whom is an allowlist of rules, and every
//! proxied operation is audited. `docs/architecture.md` describes the layers, the flow
//! of a call and the invariants.
//!
//! Layers, top down (each uses only those below it):
//! - [`daemon`] wires everything up; [`ctl`] is the command line, over [`client`];
//! - [`bus`] speaks D-Bus and forwards to [`authority`], which runs each operation;
//! - [`access`] and [`policy`] decide (pure); [`accounts`] knows users (NSS); [`store`]
//!   keeps state; [`audit`] records; [`exec`] starts jobs;
//! - shared leaves: [`config`], [`wire`], [`names`], [`cookies`], [`time`], `sys`.

pub mod access;
pub mod accounts;
pub mod audit;
pub mod authority;
pub mod bus;
pub mod client;
pub mod config;
pub mod cookies;
pub mod ctl;
pub mod daemon;
pub mod exec;
#[doc(hidden)]
pub mod fuzzing;
pub mod names;
pub mod policy;
pub mod store;
pub(crate) mod sys;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod wire;

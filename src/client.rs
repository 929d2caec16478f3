//! Client proxies of the D-Bus API, for `proxyuserctl`, tests and other Rust clients.

use std::collections::HashMap;

use zbus::proxy;

#[proxy(
    interface = "org.proxyuserd1.Identity",
    default_service = "org.proxyuserd1",
    default_path = "/org/proxyuserd1"
)]
pub trait Identity {
    fn resolve(&self, login: &str) -> zbus::Result<(String, String, u32, u32)>;
    fn check_proxy(&self, login: &str, proxy: &str) -> zbus::Result<(bool, String)>;
    fn list_proxies(&self, login: &str) -> zbus::Result<Vec<String>>;
    fn set_proxy(&self, login: &str, proxy: &str) -> zbus::Result<()>;
    fn clear_proxy(&self, login: &str) -> zbus::Result<()>;
    #[zbus(signal)]
    fn proxy_changed(&self, login: &str, proxy: &str, why: &str) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.proxyuserd1.Admin",
    default_service = "org.proxyuserd1",
    default_path = "/org/proxyuserd1"
)]
pub trait Admin {
    fn reload(&self) -> zbus::Result<u64>;
    fn list_rules(&self) -> zbus::Result<Vec<(String, String, String)>>;
    fn list_proxy_users(&self) -> zbus::Result<Vec<(String, Vec<String>, Vec<String>)>>;
    fn add_rule(&self, rule_toml: &str) -> zbus::Result<String>;
    fn remove_rule(&self, id: &str) -> zbus::Result<()>;
    fn audit_log(
        &self,
        since_seq: u64,
        max: u32,
    ) -> zbus::Result<Vec<(u64, HashMap<String, String>)>>;
    fn list_sessions(&self) -> zbus::Result<Vec<SessionRow>>;
    fn audit_head(&self) -> zbus::Result<(String, u64, String, u64, String)>;
    fn close_session_by_id(&self, id: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn rules_generation(&self) -> zbus::Result<u64>;
    #[zbus(signal)]
    fn rules_changed(&self, generation: u64) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.proxyuserd1.Jobs",
    default_service = "org.proxyuserd1",
    default_path = "/org/proxyuserd1"
)]
pub trait Jobs {
    fn exec(
        &self,
        login: &str,
        argv: &[&str],
        env: &HashMap<&str, &str>,
        cwd: &str,
    ) -> zbus::Result<String>;
    fn exec_with_options(
        &self,
        login: &str,
        argv: &[&str],
        env: &HashMap<&str, &str>,
        cwd: &str,
        options: HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<(String, Vec<String>)>;
    #[zbus(property)]
    fn max_output_bytes(&self) -> zbus::Result<u64>;
    fn wait(&self, login: &str, job_id: &str) -> zbus::Result<(String, i32)>;
    fn cancel(&self, login: &str, job_id: &str) -> zbus::Result<()>;
    fn list_jobs(&self, login: &str) -> zbus::Result<Vec<JobRow>>;
    fn list_jobs_page(
        &self,
        login: &str,
        limit: u32,
        cursor: &str,
    ) -> zbus::Result<(Vec<JobRow>, String)>;
    fn open_result(&self, login: &str, job_id: &str, stream: &str) -> zbus::Result<zbus::OwnedFd>;
    #[zbus(signal)]
    fn job_finished(
        &self,
        job_id: &str,
        run_as: &str,
        state: &str,
        exit_code: i32,
    ) -> zbus::Result<()>;
}

pub use crate::wire::{JobRow, SessionIdentity, SessionRow};

#[proxy(
    interface = "org.proxyuserd1.Sessions",
    default_service = "org.proxyuserd1",
    default_path = "/org/proxyuserd1"
)]
pub trait Sessions {
    fn open_session(&self, login: &str) -> zbus::Result<String>;
    fn open_proxy_session(&self, ticket: &str, proxy: &str) -> zbus::Result<String>;
    fn resolve_ticket(&self, ticket: &str) -> zbus::Result<SessionIdentity>;
    fn resolve_cookies(&self, cookie_header: &str) -> zbus::Result<SessionIdentity>;
    fn close_session(&self, ticket: &str) -> zbus::Result<()>;
}

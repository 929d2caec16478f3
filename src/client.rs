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
    fn add_rule(&self, rule_toml: &str) -> zbus::Result<String>;
    fn remove_rule(&self, id: &str) -> zbus::Result<()>;
    fn audit_log(
        &self,
        since_seq: u64,
        max: u32,
    ) -> zbus::Result<Vec<(u64, HashMap<String, String>)>>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn rules_generation(&self) -> zbus::Result<u64>;
    #[zbus(signal)]
    fn rules_changed(&self, generation: u64) -> zbus::Result<()>;
}

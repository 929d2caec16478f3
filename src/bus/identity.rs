//! `org.proxyuserd1.Identity` (contract: README, "D-Bus API").

use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, interface};

use super::{BusError, Shared};

pub struct IdentityInterface(pub Shared);

/// Who a login user acts as, and which proxy user it has chosen.
#[interface(name = "org.proxyuserd1.Identity")]
impl IdentityInterface {
    /// The effective user of a login: its proxy if it has one, else itself. proxy is ""
    /// without one; uid and gid are 4294967295 when the effective user has no account.
    #[zbus(out_args("effective", "proxy", "uid", "gid"))]
    async fn resolve(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        login: String,
    ) -> Result<(String, String, u32, u32), BusError> {
        let fast_login = login.clone();
        let id = self
            .0
            .call_fast(
                connection,
                &header,
                move |a, c| a.resolve_cached(c, &fast_login),
                move |a, c| a.resolve(c, &login),
            )
            .await?;
        let (uid, gid) = (id.uid(), id.gid());
        Ok((id.effective, id.proxy, uid, gid))
    }

    /// Whether the login may proxy to the user now, and why. Changes nothing.
    #[zbus(out_args("allowed", "reason"))]
    async fn check_proxy(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        login: String,
        proxy: String,
    ) -> Result<(bool, String), BusError> {
        let (fast_login, fast_proxy) = (login.clone(), proxy.clone());
        self.0
            .call_fast(
                connection,
                &header,
                move |a, c| a.check_proxy_cached(c, &fast_login, &fast_proxy),
                move |a, c| a.check_proxy(c, &login, &proxy),
            )
            .await
    }

    /// The proxy users the login may choose now.
    #[zbus(out_args("proxies"))]
    async fn list_proxies(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        login: String,
    ) -> Result<Vec<String>, BusError> {
        self.0
            .call(connection, &header, move |a, c| a.list_proxies(c, &login))
            .await
    }

    /// Makes proxy the login's proxy user, replacing any previous one.
    async fn set_proxy(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        login: String,
        proxy: String,
    ) -> Result<(), BusError> {
        self.0
            .call(connection, &header, move |a, c| {
                a.set_proxy(c, &login, &proxy)
            })
            .await
    }

    /// Ends the login's proxying; it acts as itself again.
    async fn clear_proxy(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        login: String,
    ) -> Result<(), BusError> {
        self.0
            .call(connection, &header, move |a, c| a.clear_proxy(c, &login))
            .await
    }

    /// A login's proxy changed; why is set, cleared or revoked.
    #[zbus(signal)]
    pub async fn proxy_changed(
        emitter: &SignalEmitter<'_>,
        login: &str,
        proxy: &str,
        why: &str,
    ) -> zbus::Result<()>;
}

//! `org.proxyuserd1.Sessions` (contract: README, "D-Bus API"): for trusted callers (gateways).

use zbus::message::Header;
use zbus::{Connection, interface};

use super::{BusError, Shared};
use crate::wire::SessionIdentity;

pub struct SessionsInterface(pub Shared);

/// Server-side login and proxy tickets for web gateways (the login and proxy cookies).
/// Every method is for trusted callers (and root).
#[interface(name = "org.proxyuserd1.Sessions")]
impl SessionsInterface {
    /// Opens a session for a login the gateway authenticated; returns its ticket.
    #[zbus(out_args("ticket"))]
    async fn open_session(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        login: String,
    ) -> Result<String, BusError> {
        self.0
            .call(connection, &header, move |a, c| a.open_session(c, &login))
            .await
    }

    /// Makes proxy the proxy of the ticket's login (if the rules allow it) and returns a
    /// proxy ticket bound to the login ticket.
    #[zbus(out_args("proxy_ticket"))]
    async fn open_proxy_session(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        ticket: String,
        proxy: String,
    ) -> Result<String, BusError> {
        self.0
            .call(connection, &header, move |a, c| {
                a.open_proxy_session(c, &ticket, &proxy)
            })
            .await
    }

    /// Who a ticket stands for. A login ticket gives the login alone; a proxy ticket the
    /// login and its proxy, while its login session is open, the association names the
    /// proxy and the rules allow it. NoSuchSession otherwise.
    #[zbus(out_args("login", "effective", "proxy", "uid", "gid"))]
    async fn resolve_ticket(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        ticket: String,
    ) -> Result<SessionIdentity, BusError> {
        let fast_ticket = ticket.clone();
        self.0
            .call_fast(
                connection,
                &header,
                move |a, c| a.resolve_ticket_cached(c, &fast_ticket),
                move |a, c| a.resolve_ticket(c, &ticket),
            )
            .await
    }

    /// Resolves the login and proxy cookies of an HTTP Cookie header (names from the
    /// configuration); answers like ResolveTicket.
    #[zbus(out_args("login", "effective", "proxy", "uid", "gid"))]
    async fn resolve_cookies(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        cookie_header: String,
    ) -> Result<SessionIdentity, BusError> {
        self.0
            .call(connection, &header, move |a, c| {
                a.resolve_cookies(c, &cookie_header)
            })
            .await
    }

    /// Closes a login ticket and its proxy tickets (or a single proxy ticket).
    async fn close_session(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        ticket: String,
    ) -> Result<(), BusError> {
        self.0
            .call(connection, &header, move |a, c| a.close_session(c, &ticket))
            .await
    }
}

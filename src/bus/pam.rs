//! `org.proxyuserd1.Pam`: the daemon side of `pam_proxyuserd.so`. Root only (the
//! module runs inside su, sshd and login, which connect as uid 0).

use zbus::message::Header;
use zbus::{Connection, interface};

use super::{BusError, Shared};
use crate::authority::PamPlace;

pub struct PamInterface(pub Shared);

fn place(service: String, tty: String, rhost: String) -> PamPlace {
    PamPlace {
        service,
        tty,
        rhost,
    }
}

/// Questions of the PAM module, which runs in root processes (su, sshd, login). Every
/// method is for root callers only; others get AccessDenied.
#[interface(name = "org.proxyuserd1.Pam")]
impl PamInterface {
    /// Whether requester may become target without target's password: exactly when the
    /// rules allow requester to proxy to target now. The answer is audited (pam-auth
    /// or denied); a grant sets no association.
    #[zbus(out_args("allowed", "reason"))]
    #[allow(clippy::too_many_arguments)]
    async fn authorize(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        requester: String,
        target: String,
        service: String,
        tty: String,
        rhost: String,
    ) -> Result<(bool, String), BusError> {
        let place = place(service, tty, rhost);
        self.0
            .call(connection, &header, move |a, c| {
                a.pam_authorize(c, &requester, &target, &place)
            })
            .await
    }

    /// Whether user may be logged into directly: not if it is a proxy user (refusals
    /// are audited).
    #[zbus(out_args("allowed", "reason"))]
    async fn account(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        user: String,
        service: String,
        tty: String,
        rhost: String,
    ) -> Result<(bool, String), BusError> {
        let place = place(service, tty, rhost);
        self.0
            .call(connection, &header, move |a, c| {
                a.pam_account(c, &user, &place)
            })
            .await
    }

    /// Records pam-session-open when target is a proxy user; recorded says whether it
    /// was, session is the id to close it with.
    #[zbus(out_args("recorded", "session"))]
    #[allow(clippy::too_many_arguments)]
    async fn open_session(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        login: String,
        target: String,
        service: String,
        tty: String,
        rhost: String,
    ) -> Result<(bool, String), BusError> {
        let place = place(service, tty, rhost);
        self.0
            .call(connection, &header, move |a, c| {
                a.pam_open_session(c, &login, &target, &place)
            })
            .await
    }

    /// Records pam-session-close for a session OpenSession recorded.
    #[allow(clippy::too_many_arguments)]
    async fn close_session(
        &self,
        #[zbus(connection)] connection: &Connection,
        #[zbus(header)] header: Header<'_>,
        session: String,
        login: String,
        target: String,
        service: String,
        tty: String,
        rhost: String,
    ) -> Result<(), BusError> {
        let place = place(service, tty, rhost);
        self.0
            .call(connection, &header, move |a, c| {
                a.pam_close_session(c, &session, &login, &target, &place)
            })
            .await
    }
}

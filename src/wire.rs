//! What the D-Bus API looks like on the wire, shared by the server ([`crate::bus`]) and
//! its clients ([`crate::client`]): names, the shapes of rows, and the error names.

/// The well-known name and object path (contract).
pub const BUS_NAME: &str = "org.proxyuserd1";
pub const OBJECT_PATH: &str = "/org/proxyuserd1";

/// One job as `ListJobs` reports it: id, login, run-as user, argv, state, started µs,
/// finished µs, exit code.
pub type JobRow = (String, String, String, Vec<String>, String, u64, u64, i32);

/// (login, effective, proxy, uid, gid), as the Sessions interface resolves a ticket.
pub type SessionIdentity = (String, String, String, u32, u32);

/// One web session as `ListSessions` reports it: id, kind, login, proxy, created µs,
/// last used µs, end µs.
pub type SessionRow = (String, String, String, String, u64, u64, u64);

/// uid and gid of a user without a system account.
pub const NO_ID: u32 = u32::MAX;

/// The D-Bus error names of the contract.
pub mod errors {
    pub const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
    pub const INVALID_ARGS: &str = "org.freedesktop.DBus.Error.InvalidArgs";
    pub const LIMITS_EXCEEDED: &str = "org.freedesktop.DBus.Error.LimitsExceeded";
    pub const FAILED: &str = "org.freedesktop.DBus.Error.Failed";
    pub const NOT_ALLOWED: &str = "org.proxyuserd1.Error.NotAllowed";
    pub const NO_SUCH_USER: &str = "org.proxyuserd1.Error.NoSuchUser";
    pub const NO_SUCH_JOB: &str = "org.proxyuserd1.Error.NoSuchJob";
    pub const NO_SUCH_SESSION: &str = "org.proxyuserd1.Error.NoSuchSession";
    pub const INVALID_RULES: &str = "org.proxyuserd1.Error.InvalidRules";
    pub const AUDIT_UNAVAILABLE: &str = "org.proxyuserd1.Error.AuditUnavailable";
}

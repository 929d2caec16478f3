//! `pam_proxyuserd.so`: the host's own identity switches obey proxyuserd's rules.
//!
//! - **auth**: `su etl` by alice succeeds without etl's password exactly when the rules
//!   allow alice → etl now; otherwise the stack goes on (to the password prompt).
//! - **account**: direct logins (sshd, login) to proxy users are refused.
//! - **session**: proxied sessions are audited (`pam-session-open`/`-close`) and get
//!   `PROXYUSERD_LOGIN_USER`.
//!
//! The module decides nothing itself: it asks the daemon's root-only
//! `org.proxyuserd1.Pam` interface on the system bus at its standard path (never an
//! address from the environment, which inside setuid `su` is the requester's), with one
//! blocking call per phase and a short timeout. It starts no threads and no runtime, and
//! a panic never crosses into libpam: each hook maps it to a code that lets the stack
//! go on as it would without this module (`phases.rs` lists every code).

pub mod client;
mod daemon;
pub mod message;
mod options;
mod pam;
mod phases;
mod sys;

use std::ffi::{CStr, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use options::Options;
use pam::{Handle, PAM_IGNORE, PAM_SERVICE_ERR, PAM_SESSION_ERR, PamHandle};

/// Runs `phase` for one hook call; a panic (a bug) becomes `on_panic`.
///
/// # Safety
/// `pamh`, `argc` and `argv` are what libpam passed to the hook now running.
unsafe fn hook(
    pamh: *mut PamHandle,
    argc: c_int,
    argv: *const *const c_char,
    on_panic: c_int,
    phase: fn(&Handle, &Options) -> c_int,
) -> c_int {
    // SAFETY: libpam passes the handle of the transaction, valid during the hook.
    let Some(pam) = (unsafe { Handle::new(pamh) }) else {
        return on_panic;
    };
    // SAFETY: libpam passes `argc` NUL-terminated strings in `argv`.
    let args = unsafe { arguments(argc, argv) };
    guard(on_panic, || {
        let options = Options::parse(args.iter().map(String::as_str));
        phase(&pam, &options)
    })
    .unwrap_or_else(|code| {
        pam.syslog(libc::LOG_CRIT, "internal error (a bug in pam_proxyuserd)");
        code
    })
}

/// `body`'s code, or `Err(on_panic)` if it panicked: a panic must not unwind into C, nor
/// become `PAM_ABORT`, which would stop a stack that should go on.
pub fn guard(on_panic: c_int, body: impl FnOnce() -> c_int) -> Result<c_int, c_int> {
    catch_unwind(AssertUnwindSafe(body)).map_err(|_| on_panic)
}

/// The module arguments of the stack line.
///
/// # Safety
/// `argv` holds `argc` pointers to NUL-terminated strings (or `argc` is 0).
unsafe fn arguments(argc: c_int, argv: *const *const c_char) -> Vec<String> {
    let count = usize::try_from(argc).unwrap_or(0);
    if argv.is_null() {
        return Vec::new();
    }
    (0..count)
        .filter_map(|i| {
            // SAFETY: i < argc, so argv + i stays within the array libpam passed.
            let slot = unsafe { argv.add(i) };
            // SAFETY: `slot` points at argv[i], one of the pointers libpam passed.
            let arg = unsafe { *slot };
            (!arg.is_null()).then(|| {
                // SAFETY: a non-null argv[i] is a NUL-terminated string.
                unsafe { CStr::from_ptr(arg) }
                    .to_string_lossy()
                    .into_owned()
            })
        })
        .collect()
}

/// # Safety
/// Called by libpam only, with its handle and the line's arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_authenticate(
    pamh: *mut PamHandle,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: forwarded from libpam as the hook received them.
    unsafe { hook(pamh, argc, argv, PAM_IGNORE, phases::authenticate) }
}

/// # Safety
/// Called by libpam only, with its handle and the line's arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_setcred(
    pamh: *mut PamHandle,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: forwarded from libpam as the hook received them.
    unsafe { hook(pamh, argc, argv, PAM_IGNORE, phases::setcred) }
}

/// # Safety
/// Called by libpam only, with its handle and the line's arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_acct_mgmt(
    pamh: *mut PamHandle,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // A bug must not let a proxy user log in: the account phase fails closed.
    // SAFETY: forwarded from libpam as the hook received them.
    unsafe { hook(pamh, argc, argv, PAM_SERVICE_ERR, phases::account) }
}

/// # Safety
/// Called by libpam only, with its handle and the line's arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_open_session(
    pamh: *mut PamHandle,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: forwarded from libpam as the hook received them.
    unsafe { hook(pamh, argc, argv, PAM_SESSION_ERR, phases::open_session) }
}

/// # Safety
/// Called by libpam only, with its handle and the line's arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_close_session(
    pamh: *mut PamHandle,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: forwarded from libpam as the hook received them.
    unsafe { hook(pamh, argc, argv, PAM_IGNORE, phases::close_session) }
}

/// Passwords are not this module's business.
///
/// # Safety
/// Called by libpam only.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_chauthtok(
    _pamh: *mut PamHandle,
    _flags: c_int,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    PAM_IGNORE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_the_phase_fallback_not_pam_abort() {
        let quiet_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let caught = guard(PAM_IGNORE, || panic!("a bug"));
        std::panic::set_hook(quiet_hook);
        assert_eq!(caught, Err(PAM_IGNORE));
        assert_eq!(guard(PAM_IGNORE, || 0), Ok(0));
    }

    #[test]
    fn arguments_are_read_from_argv() {
        let strings = [c"debug", c"services=su"];
        let argv: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        // SAFETY: argv holds 2 valid NUL-terminated strings.
        let args = unsafe { arguments(2, argv.as_ptr()) };
        assert_eq!(args, ["debug", "services=su"]);
        // SAFETY: a null argv is handled without reading it.
        assert!(unsafe { arguments(3, std::ptr::null()) }.is_empty());
    }
}

//! libpam's module API (`<security/pam_modules.h>`, `<security/pam_ext.h>`), declared
//! here and wrapped in a safe [`Handle`]. Only what the module uses.

use std::ffi::{CStr, CString, c_char, c_int, c_void};

/// `pam_handle_t`, opaque.
#[repr(C)]
pub struct PamHandle {
    _opaque: [u8; 0],
}

pub const PAM_SUCCESS: c_int = 0;
pub const PAM_SERVICE_ERR: c_int = 3;
pub const PAM_PERM_DENIED: c_int = 6;
pub const PAM_AUTH_ERR: c_int = 7;
pub const PAM_AUTHINFO_UNAVAIL: c_int = 9;
pub const PAM_SESSION_ERR: c_int = 14;
pub const PAM_IGNORE: c_int = 25;

/// Items of `pam_get_item`.
#[derive(Debug, Clone, Copy)]
#[repr(i32)]
pub enum Item {
    Service = 1,
    User = 2,
    Tty = 3,
    Rhost = 4,
    Ruser = 8,
}

type Cleanup = unsafe extern "C" fn(*mut PamHandle, *mut c_void, c_int);

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_get_item(pamh: *const PamHandle, item_type: c_int, item: *mut *const c_void) -> c_int;
    fn pam_set_data(
        pamh: *mut PamHandle,
        module_data_name: *const c_char,
        data: *mut c_void,
        cleanup: Option<Cleanup>,
    ) -> c_int;
    fn pam_get_data(
        pamh: *const PamHandle,
        module_data_name: *const c_char,
        data: *mut *const c_void,
    ) -> c_int;
    fn pam_putenv(pamh: *mut PamHandle, name_value: *const c_char) -> c_int;
    fn pam_syslog(pamh: *const PamHandle, priority: c_int, fmt: *const c_char, ...);
}

/// The handle libpam passed to a hook; valid for the duration of the hook call.
pub struct Handle(*mut PamHandle);

/// Frees a `String` stored by [`Handle::set_data`] (libpam calls it at `pam_end`, or
/// when the data is replaced).
unsafe extern "C" fn free_string(_: *mut PamHandle, data: *mut c_void, _: c_int) {
    if !data.is_null() {
        // SAFETY: `set_data` stored exactly this pointer, from `Box::into_raw` of a
        // `Box<String>`, and libpam calls the cleanup once per stored pointer.
        drop(unsafe { Box::from_raw(data.cast::<String>()) });
    }
}

impl Handle {
    /// # Safety
    /// `pamh` is the handle libpam passed to the hook now running (or null).
    pub unsafe fn new(pamh: *mut PamHandle) -> Option<Handle> {
        (!pamh.is_null()).then_some(Handle(pamh))
    }

    /// A string item; `None` if unset or empty. Non-UTF-8 bytes are replaced.
    pub fn item(&self, item: Item) -> Option<String> {
        let mut value: *const c_void = std::ptr::null();
        // SAFETY: the handle is valid during the hook and `value` is a valid out pointer.
        let rc = unsafe { pam_get_item(self.0, item as c_int, &mut value) };
        if rc != PAM_SUCCESS || value.is_null() {
            return None;
        }
        // SAFETY: the string items are NUL-terminated C strings owned by libpam, valid
        // until the item is changed; the bytes are copied at once.
        let text = unsafe { CStr::from_ptr(value.cast::<c_char>()) };
        let text = text.to_string_lossy().into_owned();
        (!text.is_empty()).then_some(text)
    }

    /// Keeps `value` with the handle under `key`, for a later hook of the same
    /// transaction (auth → account → session).
    pub fn set_data(&self, key: &CStr, value: String) -> bool {
        let data = Box::into_raw(Box::new(value));
        // SAFETY: the handle is valid; `key` is NUL-terminated (libpam copies it);
        // libpam owns `data` from now on and frees it with `free_string`.
        let rc = unsafe { pam_set_data(self.0, key.as_ptr(), data.cast(), Some(free_string)) };
        if rc != PAM_SUCCESS {
            // SAFETY: libpam did not take the pointer, so it is still ours alone.
            drop(unsafe { Box::from_raw(data) });
        }
        rc == PAM_SUCCESS
    }

    /// What an earlier hook stored under `key` with [`set_data`](Self::set_data).
    pub fn data(&self, key: &CStr) -> Option<String> {
        let mut data: *const c_void = std::ptr::null();
        // SAFETY: the handle is valid; `key` is NUL-terminated; `data` is a valid out
        // pointer.
        let rc = unsafe { pam_get_data(self.0, key.as_ptr(), &mut data) };
        if rc != PAM_SUCCESS || data.is_null() {
            return None;
        }
        // SAFETY: only `set_data` stores data under this module's keys, always a
        // `Box<String>` that stays alive until pam_end or replacement.
        Some(unsafe { &*data.cast::<String>() }.clone())
    }

    /// Sets `NAME=value` in the PAM environment (what the session's processes get).
    pub fn putenv(&self, name: &str, value: &str) -> bool {
        let Ok(entry) = CString::new(format!("{name}={value}")) else {
            return false;
        };
        // SAFETY: the handle is valid and `entry` is NUL-terminated; libpam copies it.
        unsafe { pam_putenv(self.0, entry.as_ptr()) == PAM_SUCCESS }
    }

    /// A line in the system log, prefixed by libpam with the module's and service's name.
    pub fn syslog(&self, priority: c_int, message: &str) {
        let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
        // SAFETY: the handle is valid; the format is a constant "%s" consuming exactly
        // the one NUL-terminated string passed.
        unsafe { pam_syslog(self.0, priority, c"%s".as_ptr(), message.as_ptr()) }
    }
}

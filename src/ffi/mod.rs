//! The C face: the only `unsafe` and the only `extern "C"` of the crate. Thin: it
//! converts pointers and numbers, calls the session, and turns errors into codes.
//! It decides nothing: no policy, no protocol rule, no retry lives here.
//!
//! Rules every export follows (checked by `every_export_is_guarded` below):
//! a doc comment; the body inside `ffi_guard!` (a panic becomes `MAILTLS_RESULT_PANIC`,
//! NULL, false or 0); NULL checks on every pointer; outputs written only on success.

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]
// Every export takes C pointers; C cannot see Rust's `unsafe` marker, so the exports
// are safe-looking functions that check for NULL and document what they require.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::ffi::{c_char, CStr, CString};

pub mod config;
pub mod io;
pub mod lmdb;
pub mod memory;
pub mod report;
pub mod session;
pub mod tickets;
// Last, so that the header keeps the order it had before this file.
pub mod starttls;
pub mod dane;
// After it, for the same reason.
pub mod tlsrpt;

pub use crate::error::Code as mailtls_result;

/// Runs an export's body behind the panic boundary; `$on_panic` is what C gets if it panics.
macro_rules! ffi_guard {
    ($on_panic:expr, $body:block) => {{
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| $body)) {
            Ok(v) => v,
            Err(_) => $on_panic,
        }
    }};
}
pub(crate) use ffi_guard;

/// Returns `$err` from the export when the pointer is NULL.
macro_rules! non_null {
    ($p:expr, $err:expr) => {
        if $p.is_null() {
            return $err;
        }
    };
}
pub(crate) use non_null;

/// A C string argument as `&str`: NULL and invalid UTF-8 are errors.
pub(crate) unsafe fn c_str<'a>(p: *const c_char) -> Result<&'a str, mailtls_result> {
    if p.is_null() {
        return Err(mailtls_result::NullParameter);
    }
    // SAFETY: the caller promises a NUL-terminated string that outlives the call.
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|_| mailtls_result::InvalidParameter)
}

/// A (pointer, length) argument as a slice; NULL is allowed only with length 0.
pub(crate) unsafe fn byte_slice<'a>(p: *const u8, len: usize) -> Result<&'a [u8], mailtls_result> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(mailtls_result::NullParameter);
    }
    // SAFETY: the caller promises `len` readable bytes at `p` for the duration of the call.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A CString from text that may hold NULs (they become '?').
pub(crate) fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "?")).unwrap_or_default()
}

static VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
    Ok(v) => v,
    Err(_) => c"unknown",
};

/// The library's version, "MAJOR.MINOR.PATCH", as a static string. Compare with the
/// `MAILTLS_VERSION_*` macros to detect a header/library mismatch.
#[no_mangle]
pub extern "C" fn mailtls_version() -> *const c_char {
    ffi_guard!(std::ptr::null(), { VERSION.as_ptr() })
}

/// A static, human-readable description of a result code ("unknown result code" for a
/// number that is not one). Never NULL.
#[no_mangle]
pub extern "C" fn mailtls_result_str(result: u32) -> *const c_char {
    ffi_guard!(c"panic".as_ptr(), {
        match mailtls_result::from_u32(result) {
            Some(c) => static_cstr(c.description()),
            None => c"unknown result code".as_ptr(),
        }
    })
}

/// A static short identifier of a result code ("reply-injection"), for logs and JSON;
/// "unknown" for a number that is not a code. Never NULL.
#[no_mangle]
pub extern "C" fn mailtls_result_name(result: u32) -> *const c_char {
    ffi_guard!(c"panic".as_ptr(), {
        match mailtls_result::from_u32(result) {
            Some(c) => static_cstr(c.name()),
            None => c"unknown".as_ptr(),
        }
    })
}

/// A NUL-terminated copy of a static string, interned once for the life of the process.
pub(crate) fn static_cstr(s: &'static str) -> *const c_char {
    use once_cell::sync::Lazy;
    use parking_lot::Mutex;
    use std::collections::HashMap;
    static TABLE: Lazy<Mutex<HashMap<&'static str, &'static CStr>>> = Lazy::new(|| Mutex::new(HashMap::new()));
    let mut t = TABLE.lock();
    let c: &'static CStr = t.entry(s).or_insert_with(|| Box::leak(cstring(s).into_boxed_c_str()));
    c.as_ptr()
}

#[cfg(test)]
mod tests {
    /// Every `extern "C"` function has a doc comment and its body starts inside `ffi_guard!`.
    #[test]
    fn every_export_is_guarded() {
        let files = [
            ("mod.rs", include_str!("mod.rs")),
            ("config.rs", include_str!("config.rs")),
            ("io.rs", include_str!("io.rs")),
            ("memory.rs", include_str!("memory.rs")),
            ("report.rs", include_str!("report.rs")),
            ("session.rs", include_str!("session.rs")),
            ("tickets.rs", include_str!("tickets.rs")),
            ("lmdb.rs", include_str!("lmdb.rs")),
            ("starttls.rs", include_str!("starttls.rs")),
            ("dane.rs", include_str!("dane.rs")),
            ("tlsrpt.rs", include_str!("tlsrpt.rs")),
        ];
        let mut exports = 0;
        for (name, src) in files {
            let lines: Vec<&str> = src.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if !line.starts_with("pub extern \"C\" fn") && !line.starts_with("pub unsafe extern \"C\" fn") {
                    continue;
                }
                exports += 1;
                assert_eq!(lines[i - 1].trim(), "#[no_mangle]", "{name}:{}: missing #[no_mangle]", i + 1);
                assert!(lines[i - 2].trim_start().starts_with("///"), "{name}:{}: export without a doc comment", i + 1);
                let body: String = lines[i..(i + 14).min(lines.len())].join("\n");
                let Some(open) = body.find('{') else { panic!("{name}:{}: no function body", i + 1) };
                let after = body[open + 1..].trim_start();
                assert!(after.starts_with("ffi_guard!("), "{name}:{}: export body not inside ffi_guard!", i + 1);
            }
        }
        assert!(exports > 40, "found only {exports} exports");
    }
}

//! A sequence of C API calls on one client or server session, with read and write
//! callbacks that serve the fuzz bytes in hostile ways (see mailtls_fuzz::ffi).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mailtls_fuzz::ffi::run(data);
});

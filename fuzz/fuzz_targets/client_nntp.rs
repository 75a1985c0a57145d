//! The nntp client dialogue fed arbitrary server bytes, whole and one byte at a time
//! (see mailtls_fuzz::dialogue for the input layout and the properties).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailtls::protocol::Proto;

fuzz_target!(|data: &[u8]| {
    mailtls_fuzz::dialogue::check(Proto::Nntp, false, data);
});

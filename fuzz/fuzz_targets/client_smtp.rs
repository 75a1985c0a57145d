//! SMTP and LMTP client dialogue fed arbitrary server bytes, whole and one byte at a
//! time (see mailtls_fuzz::dialogue for the input layout and the properties).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailtls::protocol::Proto;

fuzz_target!(|data: &[u8]| {
    // The flags byte's top bit picks LMTP (LHLO) over SMTP (EHLO).
    let proto = if data.first().is_some_and(|f| f & 0x80 != 0) { Proto::Lmtp } else { Proto::Smtp };
    mailtls_fuzz::dialogue::check(proto, false, data);
});

//! Every protocol's implicit-TLS dialogue (RFC 8314: greeting and capabilities inside
//! TLS, no STARTTLS) fed arbitrary decrypted server bytes, whole and one byte at a time.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailtls::protocol::Proto;

fuzz_target!(|data: &[u8]| {
    // The flags byte's top three bits pick the protocol.
    let proto = Proto::from_u32(u32::from(data.first().copied().unwrap_or(0) >> 5) % 6).unwrap_or(Proto::Smtp);
    mailtls_fuzz::dialogue::check(proto, true, data);
});

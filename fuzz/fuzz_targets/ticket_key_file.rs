//! The session ticket key file parser (`TicketKeys::parse`, what
//! `mailtls_config_builder_set_ticket_key_file` reads at the setter and at every build),
//! then the same bytes read by `TicketKeys::from_file` from an owner-only file.
//! Properties: an error is `TicketKeyLoad` with a detail that starts with `:LINE: ` or
//! `: ` and never quotes the file (no run of eight hex digits, so no part of a key);
//! keys that parse issue a ticket that opens again; the file gives the same answer as
//! the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailtls::error::Code;
use mailtls::tls::tickets::{TicketKeys, Tickets};
use rustls::server::ProducesTickets;

fn longest_hex_run(s: &str) -> usize {
    let (mut best, mut run) = (0, 0);
    for b in s.bytes() {
        run = if b.is_ascii_hexdigit() { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

fuzz_target!(|data: &[u8]| {
    let parsed = TicketKeys::parse(data);
    match &parsed {
        Ok(keys) => {
            let t = Tickets::with_keys(keys).expect("keys that parse make a producer");
            let ticket = t.encrypt(b"state").expect("a ticket");
            assert_eq!(t.decrypt(&ticket).as_deref(), Some(&b"state"[..]));
        }
        Err(e) => {
            assert_eq!(e.code, Code::TicketKeyLoad);
            assert!(e.detail.starts_with(':'), "{}", e.detail);
            assert!(longest_hex_run(&e.detail) < 8, "the detail quotes the file: {}", e.detail);
        }
    }

    // The same bytes through a file only its owner may read.
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::env::temp_dir().join(format!("mailtls-fuzz-ticket-keys-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).expect("a temporary file");
    std::io::Write::write_all(&mut f, data).expect("written");
    drop(f);
    let from_file = TicketKeys::from_file(&path);
    let prefix = path.display().to_string();
    match (&parsed, &from_file) {
        (Ok(_), Ok(_)) => {}
        (Err(a), Err(b)) => assert_eq!(format!("{prefix}{}", a.detail), b.detail),
        _ => panic!("the file and the bytes disagree: {:?} / {:?}", parsed.is_ok(), from_file.as_ref().map_err(|e| &e.detail)),
    }
    let _ = std::fs::remove_file(&path);
});

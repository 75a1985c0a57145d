//! The server's command checks: `protocol::server::parse` for every protocol, then a
//! server session's `check_command` over a sequence of lines. Input: a flags byte
//! (bits 0-2 protocol, bit 3 require-TLS), then lines separated by LF; a line whose
//! first byte is 0x01 marks the client authenticated (after it is checked).
//! Properties: parsing ignores the line ending and the verb's case, an IMAP tag is a
//! valid tag and only IMAP has one; check_command refuses exactly what the rules say
//! (require-TLS refuses what `allowed_before_tls` refuses, STARTTLS after a login is
//! refused); each refusal has a one-line reply carrying the IMAP tag.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use mailtls::config::{Config, ConfigBuilder, Role};
use mailtls::error::Code;
use mailtls::protocol::server::{allowed_before_tls, parse, Command};
use mailtls::protocol::Proto;
use mailtls::session::Session;

fn config(require_tls: bool) -> Arc<Config> {
    static C: OnceLock<[Arc<Config>; 2]> = OnceLock::new();
    let c = C.get_or_init(|| {
        [false, true].map(|r| ConfigBuilder::new(Role::Server).require_tls(r).build().expect("a server config"))
    });
    c[usize::from(require_tls)].clone()
}

fuzz_target!(|data: &[u8]| {
    let flags = data.first().copied().unwrap_or(0);
    let proto = Proto::from_u32(u32::from(flags & 7) % 6).expect("a protocol");
    let require_tls = flags & 8 != 0;
    let lines: Vec<&[u8]> = data.get(1..).unwrap_or(&[]).split(|&b| b == b'\n').collect();

    for line in &lines {
        for p in (0..6).filter_map(Proto::from_u32) {
            let parsed = parse(p, line);
            let mut crlf = line.to_vec();
            crlf.extend_from_slice(b"\r\n");
            assert_eq!(parse(p, &crlf), parsed, "the line ending changed the parse");
            assert_eq!(parse(p, &line.to_ascii_uppercase()).cmd, parsed.cmd, "case changed the command");
            assert_eq!(parse(p, &line.to_ascii_lowercase()).cmd, parsed.cmd, "case changed the command");
            if p == Proto::Imap {
                let t = &parsed.tag;
                assert!(t.len() <= 64 && !t.contains(' ') && !t.contains('+'), "bad IMAP tag {t:?}");
            } else {
                assert!(parsed.tag.is_empty(), "a tag outside IMAP");
            }
        }
    }

    let mut s = Session::server(config(require_tls), proto, "192.0.2.1:2525").expect("a server session");
    let mut authenticated = false;
    for line in &lines {
        let (mark, line) = match line.split_first() {
            Some((1, rest)) => (true, rest),
            _ => (false, *line),
        };
        let cmd = parse(proto, line).cmd;
        let r = s.check_command(line);
        let expected = if cmd == Command::StartTls && authenticated {
            Err(Code::StarttlsNotAllowed)
        } else if require_tls && !allowed_before_tls(proto, cmd) {
            Err(Code::TlsRequired)
        } else {
            Ok(())
        };
        assert_eq!(r.as_ref().map_err(|e| e.code), expected.as_ref().map_err(|c| *c), "line {line:?}");
        if let Err(e) = r {
            if let Some(reply) = s.server_reply(e.code) {
                assert!(reply.ends_with("\r\n") && !reply[..reply.len() - 2].contains(['\r', '\n']), "reply {reply:?}");
                let tag = parse(proto, line).tag;
                if proto == Proto::Imap && !tag.is_empty() {
                    assert!(reply.starts_with(&format!("{tag} ")), "reply {reply:?} without tag {tag:?}");
                }
            }
        }
        assert!(!s.offer_starttls() || !authenticated, "STARTTLS offered after a login");
        if mark {
            s.note_authenticated();
            authenticated = true;
        }
    }
});

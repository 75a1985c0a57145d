//! Every protocol end to end through the Rust API: a client session negotiates
//! against a server session driven by a small command loop per protocol, over a
//! real socketpair, with STARTTLS and with implicit TLS. The C suite proves the same
//! through the header; these pin the library's own behaviour.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use mailtls::config::{Config, ConfigBuilder, InjectionAction, Policy, Role};
use mailtls::error::Code;
use mailtls::protocol::Proto;
use mailtls::session::report::Outcome;
use mailtls::session::{Session, Transport};

struct Sock(UnixStream);

impl Transport for Sock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
}

fn server_cfg(require_tls: bool, injection: InjectionAction) -> Arc<Config> {
    let (cert, key) = mailtls::tls::server::self_signed(&["localhost".to_string()]).unwrap();
    let mut b = ConfigBuilder::new(Role::Server);
    b.certificate_pem(cert.as_bytes(), key.as_bytes()).require_tls(require_tls).injection(injection);
    b.build().unwrap()
}

fn client_cfg(policy: Policy) -> Arc<Config> {
    let mut b = ConfigBuilder::new(Role::Client);
    b.policy(policy).helo_name("client.test").step_timeout(Duration::from_secs(5));
    b.build().unwrap()
}

/// The greeting of each protocol; `caps` is true where the greeting carries them.
fn greeting(proto: Proto, offer: bool, auth: bool) -> String {
    match proto {
        Proto::Smtp | Proto::Lmtp => "220 test ESMTP\r\n".into(),
        Proto::Imap => "* OK test IMAP ready\r\n".into(),
        Proto::Pop3 => "+OK test POP3 ready\r\n".into(),
        Proto::Nntp => "200 test news ready\r\n".into(),
        Proto::Sieve => sieve_caps(offer, auth),
    }
}

fn sieve_caps(offer: bool, auth: bool) -> String {
    let mut s = String::from("\"IMPLEMENTATION\" \"test\"\r\n");
    if auth {
        s.push_str("\"SASL\" \"PLAIN\"\r\n");
    }
    if offer {
        s.push_str("\"STARTTLS\"\r\n");
    }
    s.push_str("\"VERSION\" \"1.0\"\r\nOK\r\n");
    s
}

/// The capability reply to a capability request; `plain` marks a capability sent only before TLS.
fn capabilities(proto: Proto, tag: &str, offer: bool, auth: bool) -> String {
    let starttls = if offer { " STARTTLS" } else { "" };
    match proto {
        Proto::Smtp | Proto::Lmtp => format!(
            "250-test\r\n{}250 {}\r\n",
            if offer { "250-STARTTLS\r\n" } else { "" },
            if auth { "AUTH PLAIN" } else { "PLAINONLY" }
        ),
        Proto::Imap => format!(
            "* CAPABILITY IMAP4rev1{starttls} {}\r\n{tag} OK done\r\n",
            if auth { "AUTH=PLAIN" } else { "LOGINDISABLED PLAINONLY" }
        ),
        Proto::Pop3 => format!("+OK\r\nTOP\r\n{}{}.\r\n", if offer { "STLS\r\n" } else { "" }, if auth { "USER\r\n" } else { "PLAINONLY\r\n" }),
        Proto::Nntp => format!(
            "101 caps\r\nVERSION 2\r\nREADER\r\n{}{}.\r\n",
            if offer { "STARTTLS\r\n" } else { "" },
            if auth { "AUTHINFO USER\r\n" } else { "PLAINONLY\r\n" }
        ),
        Proto::Sieve => sieve_caps(offer, auth),
    }
}

/// What the server saw: the commands it executed, the discarded byte count, the
/// replies it sent for refusals.
#[derive(Debug, Default)]
struct Seen {
    executed: Vec<String>,
    refused: Vec<String>,
    discarded: u64,
    tls: bool,
}

/// A server for `proto`: greeting, capabilities, STARTTLS through the library, the
/// capabilities again after TLS, one `ECHO` line, and the protocol's goodbye.
fn run_server(proto: Proto, sock: UnixStream, cfg: Arc<Config>, implicit: bool) -> Seen {
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut raw = sock.try_clone().unwrap();
    let mut s = Session::server(cfg, proto, "peer").unwrap();
    s.set_transport(Box::new(Sock(sock)));
    let mut seen = Seen::default();
    if implicit && s.server_start_implicit().is_err() {
        return seen;
    }
    let send = |s: &mut Session, raw: &mut UnixStream, bytes: &[u8]| {
        if s.tls_active() {
            let mut off = 0;
            while off < bytes.len() {
                off += s.write(&bytes[off..]).unwrap();
            }
        } else {
            raw.write_all(bytes).unwrap();
        }
    };
    let g = greeting(proto, s.offer_starttls(), s.auth_allowed());
    send(&mut s, &mut raw, g.as_bytes());
    let mut buf = Vec::new();
    let mut tmp = [0u8; 1024];
    loop {
        while !buf.contains(&b'\n') {
            let n = if s.tls_active() {
                s.read(&mut tmp).unwrap_or_default()
            } else {
                raw.read(&mut tmp).unwrap_or(0)
            };
            if n == 0 {
                seen.discarded = s.report().discarded_after_starttls;
                return seen;
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        let i = buf.iter().position(|&b| b == b'\n').unwrap();
        let line: Vec<u8> = buf.drain(..=i).collect();
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if let Err(e) = s.check_command(&line) {
            let r = s.server_reply(e.code).expect("a refusal has a reply");
            seen.refused.push(r.trim_end().to_string());
            send(&mut s, &mut raw, r.as_bytes());
            continue;
        }
        seen.executed.push(text.clone());
        let mut words = text.split(' ');
        let tag = if proto == Proto::Imap { words.next().unwrap_or("").to_string() } else { String::new() };
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" | "LHLO" | "CAPABILITY" | "CAPA" | "CAPABILITIES" => capabilities(proto, &tag, s.offer_starttls(), s.auth_allowed()),
            "STARTTLS" | "STLS" => {
                let rest = std::mem::take(&mut buf);
                match s.server_starttls(&rest) {
                    Ok(()) => {
                        seen.tls = true;
                        if proto == Proto::Sieve {
                            // RFC 5804 section 2.2: the capabilities again, unasked.
                            let c = sieve_caps(s.offer_starttls(), s.auth_allowed());
                            send(&mut s, &mut raw, c.as_bytes());
                        }
                        continue;
                    }
                    Err(e) if e.code == Code::TlsAlreadyActive || e.code == Code::TlsUnavailable => continue,
                    Err(_) => {
                        seen.discarded = s.report().discarded_after_starttls;
                        return seen;
                    }
                }
            }
            "ECHO" => format!("{}\r\n", text),
            "QUIT" | "LOGOUT" => {
                let bye = match proto {
                    Proto::Imap => format!("* BYE\r\n{tag} OK bye\r\n"),
                    Proto::Pop3 => "+OK bye\r\n".into(),
                    Proto::Nntp => "205 bye\r\n".into(),
                    Proto::Sieve => "OK \"bye\"\r\n".into(),
                    _ => "221 bye\r\n".into(),
                };
                send(&mut s, &mut raw, bye.as_bytes());
                let _ = s.close();
                seen.discarded = s.report().discarded_after_starttls;
                seen.tls = seen.tls || s.tls_active();
                return seen;
            }
            _ => match proto {
                Proto::Imap => format!("{tag} OK done\r\n"),
                Proto::Smtp | Proto::Lmtp => "250 ok\r\n".into(),
                _ => "ok\r\n".into(),
            },
        };
        send(&mut s, &mut raw, reply.as_bytes());
    }
}

const ALL: [Proto; 6] = [Proto::Smtp, Proto::Lmtp, Proto::Imap, Proto::Pop3, Proto::Nntp, Proto::Sieve];

fn client_pair(proto: Proto, policy: Policy, server: Arc<Config>, implicit: bool) -> (Session, thread::JoinHandle<Seen>) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let h = thread::spawn(move || run_server(proto, b, server, implicit));
    let mut c = Session::client(client_cfg(policy), proto, "localhost", 1).unwrap();
    c.set_implicit(implicit).unwrap();
    c.set_transport(Box::new(Sock(a)));
    (c, h)
}

fn echo(c: &mut Session, proto: Proto) -> String {
    c.write(if proto == Proto::Imap { b"t ECHO hello\r\n" } else { b"ECHO hello\r\n" }).unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 256];
    while !out.ends_with(b"\n") {
        let n = c.read(&mut b).unwrap();
        out.extend_from_slice(&b[..n]);
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn every_protocol_negotiates_starttls_and_forgets_plaintext_capabilities() {
    for proto in ALL {
        let (mut c, h) = client_pair(proto, Policy::Encrypt, server_cfg(false, InjectionAction::Discard), false);
        c.negotiate().unwrap_or_else(|e| panic!("{}: {e}", proto.name()));
        let r = c.report().clone();
        assert_eq!(r.outcome(), Outcome::Tls, "{}", proto.name());
        assert!(r.starttls_offered);
        assert!(!r.capabilities.is_empty(), "{}: post-TLS capabilities", proto.name());
        assert!(
            !r.capabilities.iter().any(|c| c.contains("PLAINONLY") || c.contains("STARTTLS") || c == "STLS"),
            "{}: plaintext-only capabilities survived TLS: {:?}",
            proto.name(),
            r.capabilities
        );
        assert!(echo(&mut c, proto).contains("hello"), "{}", proto.name());
        c.close().unwrap();
        drop(c);
        let seen = h.join().unwrap();
        assert!(seen.tls);
        assert_eq!(seen.discarded, 0);
    }
}

#[test]
fn every_protocol_over_implicit_tls() {
    for proto in ALL {
        let (mut c, h) = client_pair(proto, Policy::May, server_cfg(false, InjectionAction::Discard), true);
        c.negotiate().unwrap_or_else(|e| panic!("{}: {e}", proto.name()));
        let r = c.report().clone();
        assert_eq!(r.outcome(), Outcome::Tls, "{}", proto.name());
        assert!(!r.starttls_offered, "{}: no STARTTLS inside implicit TLS", proto.name());
        assert!(!r.capabilities.is_empty());
        // A STARTTLS on an implicit-TLS connection is refused by the server.
        let cmd: &[u8] = match proto {
            Proto::Imap => b"z STARTTLS\r\n",
            Proto::Pop3 => b"STLS\r\n",
            _ => b"STARTTLS\r\n",
        };
        c.write(cmd).unwrap();
        let mut b = [0u8; 256];
        let n = c.read(&mut b).unwrap();
        let reply = String::from_utf8_lossy(&b[..n]).to_string();
        let expect = match proto {
            Proto::Smtp | Proto::Lmtp => "554 ",
            Proto::Imap => "z BAD ",
            Proto::Pop3 => "-ERR ",
            Proto::Nntp => "502 ",
            Proto::Sieve => "NO ",
        };
        assert!(reply.starts_with(expect), "{}: {reply:?}", proto.name());
        drop(c);
        let seen = h.join().unwrap();
        assert_eq!(seen.refused.len(), 1, "{}: {:?}", proto.name(), seen);
    }
}

#[test]
fn plaintext_on_an_implicit_port_is_not_tls_even_under_may() {
    for proto in [Proto::Imap, Proto::Pop3, Proto::Smtp] {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let h = thread::spawn(move || {
            let _ = b.write_all(greeting(proto, false, true).as_bytes());
            let mut sink = [0u8; 4096];
            let _ = b.read(&mut sink);
        });
        let mut c = Session::client(client_cfg(Policy::May), proto, "localhost", 1).unwrap();
        c.set_implicit(true).unwrap();
        c.set_transport(Box::new(Sock(a)));
        let e = c.negotiate().unwrap_err();
        assert_eq!(e.code, Code::NotTls, "{}", proto.name());
        assert_eq!(c.report().outcome(), Outcome::Defer);
        drop(c);
        h.join().unwrap();
    }
}

#[test]
fn commands_pipelined_after_starttls_are_never_executed() {
    let cases: [(Proto, &[u8]); 5] = [
        (Proto::Imap, b"a STARTTLS\r\nb LOGIN u p\r\n"),
        (Proto::Pop3, b"STLS\r\nUSER u\r\n"),
        (Proto::Nntp, b"STARTTLS\r\nAUTHINFO USER u\r\n"),
        (Proto::Sieve, b"STARTTLS\r\nAUTHENTICATE \"PLAIN\" \"AHUAcA==\"\r\n"),
        (Proto::Smtp, b"STARTTLS\r\nRSET\r\nMAIL FROM:<x@y>\r\n"),
    ];
    for (proto, inject) in cases {
        for mode in [InjectionAction::Discard, InjectionAction::Close] {
            let (mut a, b) = UnixStream::pair().unwrap();
            a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let h = thread::spawn(move || run_server(proto, b, server_cfg(false, mode), false));
            let mut g = vec![0u8; 1024];
            let _ = a.read(&mut g).unwrap();
            a.write_all(inject).unwrap();
            // The go reply (discard) or nothing (close) comes back; then we leave.
            a.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let mut r = [0u8; 256];
            let n = a.read(&mut r).unwrap_or(0);
            drop(a);
            let seen = h.join().unwrap();
            let first = String::from_utf8_lossy(inject).lines().next().unwrap().to_string();
            assert_eq!(seen.executed, vec![first], "{} {mode:?}: only STARTTLS runs", proto.name());
            assert_eq!(seen.discarded as usize, inject.len() - inject.iter().position(|&c| c == b'\n').unwrap() - 1);
            match mode {
                InjectionAction::Discard => assert!(n > 0, "{}: go reply expected", proto.name()),
                InjectionAction::Close => assert_eq!(n, 0, "{}: no go reply in close mode", proto.name()),
            }
        }
    }
}

#[test]
fn require_tls_refuses_credentials_in_clear_with_each_protocols_reply() {
    let cases: [(Proto, &[u8], &str); 5] = [
        (Proto::Imap, b"a1 LOGIN u p\r\n", "a1 NO [PRIVACYREQUIRED]"),
        (Proto::Pop3, b"USER u\r\n", "-ERR [SYS/PERM]"),
        (Proto::Nntp, b"AUTHINFO USER u\r\n", "483 "),
        (Proto::Sieve, b"AUTHENTICATE \"PLAIN\"\r\n", "NO (ENCRYPT-NEEDED)"),
        (Proto::Smtp, b"MAIL FROM:<a@b>\r\n", "530 5.7.0"),
    ];
    for (proto, cmd, expect) in cases {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let h = thread::spawn(move || run_server(proto, b, server_cfg(true, InjectionAction::Discard), false));
        let mut g = vec![0u8; 1024];
        let _ = a.read(&mut g).unwrap();
        a.write_all(cmd).unwrap();
        let mut r = [0u8; 256];
        let n = a.read(&mut r).unwrap();
        assert!(String::from_utf8_lossy(&r[..n]).starts_with(expect), "{}: {:?}", proto.name(), String::from_utf8_lossy(&r[..n]));
        drop(a);
        let seen = h.join().unwrap();
        assert!(seen.executed.is_empty());
    }
}

#[test]
fn imap_preauth_in_plaintext_closes_under_encrypt_and_is_plaintext_under_may() {
    for (policy, ok) in [(Policy::Encrypt, false), (Policy::May, true)] {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let h = thread::spawn(move || {
            b.write_all(b"* PREAUTH [CAPABILITY IMAP4rev1] logged in as you\r\n").unwrap();
            b.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let mut got = Vec::new();
            let mut t = [0u8; 256];
            while let Ok(n) = b.read(&mut t) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&t[..n]);
            }
            String::from_utf8_lossy(&got).to_string()
        });
        let mut c = Session::client(client_cfg(policy), Proto::Imap, "localhost", 143).unwrap();
        c.set_transport(Box::new(Sock(a)));
        let r = c.negotiate();
        assert_eq!(r.is_ok(), ok);
        if !ok {
            assert_eq!(r.unwrap_err().code, Code::PreauthPlaintext);
        } else {
            assert_eq!(c.report().outcome(), Outcome::Plaintext);
            assert_eq!(c.report().reason, Some(Code::PreauthPlaintext));
        }
        drop(c);
        let sent = h.join().unwrap();
        assert_eq!(sent.contains("LOGOUT"), !ok, "{sent:?}");
    }
}

#[test]
fn starttls_after_login_is_neither_offered_nor_accepted() {
    for proto in [Proto::Imap, Proto::Pop3, Proto::Nntp] {
        let mut s = Session::server(server_cfg(false, InjectionAction::Discard), proto, "peer").unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        s.set_transport(Box::new(Sock(a)));
        assert!(s.offer_starttls());
        s.note_authenticated();
        assert!(!s.offer_starttls());
        let line: &[u8] = if proto == Proto::Imap { b"t9 STARTTLS\r\n" } else if proto == Proto::Pop3 { b"STLS\r\n" } else { b"STARTTLS\r\n" };
        let e = s.check_command(line).unwrap_err();
        assert_eq!(e.code, Code::StarttlsNotAllowed);
        let r = s.server_reply(e.code).unwrap();
        match proto {
            Proto::Imap => assert!(r.starts_with("t9 BAD ")),
            Proto::Pop3 => assert!(r.starts_with("-ERR ")),
            _ => assert!(r.starts_with("502 ")),
        }
    }
}

#[test]
fn a_second_session_with_the_same_configs_resumes_and_still_reports_the_certificate() {
    // rustls resumes only with the verifier that accepted the first session, and a
    // forking server only with stateless tickets: both must hold for MTAs to resume.
    let server = server_cfg(false, InjectionAction::Discard);
    let client = client_cfg(Policy::Encrypt);
    let mut resumed = Vec::new();
    for _ in 0..2 {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let srv = server.clone();
        let h = thread::spawn(move || run_server(Proto::Smtp, b, srv, false));
        let mut c = Session::client(client.clone(), Proto::Smtp, "localhost", 1).unwrap();
        c.set_transport(Box::new(Sock(a)));
        c.negotiate().unwrap();
        // the tickets come after the handshake: one exchange inside TLS collects them
        assert!(echo(&mut c, Proto::Smtp).contains("hello"));
        let r = c.report().clone();
        assert_eq!(r.outcome(), Outcome::Tls);
        assert!(r.peer_cert.is_some(), "the certificate is reported for a resumed session too");
        resumed.push(r.resumed);
        c.close().unwrap();
        drop(c);
        h.join().unwrap();
    }
    assert_eq!(resumed, [false, true]);
}

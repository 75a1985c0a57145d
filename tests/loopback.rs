//! Client and server sessions against each other over a real socketpair, through the
//! Rust API: the core paths the C suite then exercises through the header.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use mailtls::config::{Config, ConfigBuilder, Policy, Role};
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

fn server_cfg() -> (Arc<Config>, String) {
    let (cert, key) = mailtls::tls::server::self_signed(&["localhost".to_string()]).unwrap();
    let mut b = ConfigBuilder::new(Role::Server);
    b.certificate_pem(cert.as_bytes(), key.as_bytes());
    (b.build().unwrap(), cert)
}

fn client_cfg(policy: Policy, ca_pem: Option<&str>) -> Arc<Config> {
    let mut b = ConfigBuilder::new(Role::Client);
    b.policy(policy).helo_name("client.test").step_timeout(Duration::from_secs(5));
    if let Some(pem) = ca_pem {
        let path = std::env::temp_dir().join(format!("mailtls-ca-{}-{:?}.pem", std::process::id(), thread::current().id()));
        std::fs::write(&path, pem).unwrap();
        b.ca_file(path.to_str().unwrap());
    }
    b.build().unwrap()
}

/// A socket that keeps the bytes of every write, one entry per write call.
struct Logged(UnixStream, Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

impl Transport for Logged {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1.lock().unwrap().push(buf[..n].to_vec());
        Ok(n)
    }
}

/// The TLS records in `b`: (content type, length), for whole records.
fn records(b: &[u8]) -> Vec<(u8, usize)> {
    let mut out = Vec::new();
    let mut p = 0;
    while p + 5 <= b.len() {
        let len = u16::from_be_bytes([b[p + 3], b[p + 4]]) as usize;
        out.push((b[p], len));
        p += 5 + len;
    }
    out
}

/// A minimal SMTP server on the library's server API: greeting, EHLO, STARTTLS, EHLO, one line echo, QUIT.
fn run_server(sock: UnixStream, cfg: Arc<Config>) -> (u64, Vec<String>) {
    let t = Box::new(Sock(sock.try_clone().unwrap()));
    run_server_on(sock, t, cfg)
}

fn run_server_on(sock: UnixStream, transport: Box<dyn Transport>, cfg: Arc<Config>) -> (u64, Vec<String>) {
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut raw = sock.try_clone().unwrap();
    let mut s = Session::server(cfg, Proto::Smtp, "peer").unwrap();
    s.set_transport(transport);
    raw.write_all(b"220 test ESMTP\r\n").unwrap();
    let mut buf = Vec::new();
    let mut seen = Vec::new();
    let mut tmp = [0u8; 1024];
    loop {
        // Read one line in plaintext, or through TLS once active.
        while !buf.contains(&b'\n') {
            let n = if s.tls_active() {
                match s.read(&mut tmp) {
                    Ok(n) => n,
                    Err(e) if e.code == Code::Closed || e.code == Code::PeerClosed => 0,
                    Err(e) => panic!("server read: {e}"),
                }
            } else {
                raw.read(&mut tmp).unwrap()
            };
            if n == 0 {
                return (s.report().discarded_after_starttls, seen);
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        let i = buf.iter().position(|&b| b == b'\n').unwrap();
        let line: Vec<u8> = buf.drain(..=i).collect();
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        seen.push(text.clone());
        let reply: Vec<u8> = match s.check_command(&line) {
            Err(e) => format!("{} refused\r\n", if e.code == Code::TlsRequired { 530 } else { 503 }).into_bytes(),
            Ok(()) => {
                let verb = text.split(' ').next().unwrap_or("").to_ascii_uppercase();
                match verb.as_str() {
                    "EHLO" => {
                        let mut r = String::from("250-test\r\n");
                        if s.offer_starttls() {
                            r.push_str("250-STARTTLS\r\n250 PLAINONLY\r\n");
                        } else {
                            r.push_str("250 AUTH PLAIN\r\n");
                        }
                        r.into_bytes()
                    }
                    "STARTTLS" => {
                        let rest = std::mem::take(&mut buf);
                        if s.server_starttls(&rest).is_err() {
                            return (s.report().discarded_after_starttls, seen);
                        }
                        continue;
                    }
                    "QUIT" => {
                        let _ = s.write(b"221 bye\r\n");
                        let _ = s.close();
                        return (s.report().discarded_after_starttls, seen);
                    }
                    _ => b"250 ok\r\n".to_vec(),
                }
            }
        };
        if s.tls_active() {
            let mut off = 0;
            while off < reply.len() {
                off += s.write(&reply[off..]).unwrap();
            }
        } else {
            raw.write_all(&reply).unwrap();
        }
    }
}

fn smtp_line(c: &mut Session) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\n") {
        let n = c.read(&mut b).unwrap();
        out.extend_from_slice(&b[..n]);
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn starttls_end_to_end_under_verify_with_the_server_cert_as_anchor() {
    let (scfg, cert) = server_cfg();
    let (a, b) = UnixStream::pair().unwrap();
    let server = thread::spawn(move || run_server(b, scfg));
    let mut c = Session::client(client_cfg(Policy::Verify, Some(&cert)), Proto::Smtp, "localhost", 25).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.set_transport(Box::new(Sock(a)));
    c.negotiate().unwrap();
    let r = c.report().clone();
    assert_eq!(r.outcome(), Outcome::Tls);
    assert_eq!(r.tls_version.as_deref(), Some("TLSv1.3"));
    assert_eq!(r.group.as_deref(), Some("X25519MLKEM768"));
    assert_eq!(r.capabilities, vec!["AUTH PLAIN".to_string()], "only the protected capabilities count");
    assert_eq!(r.cert_verified, Some(true));
    assert!(r.starttls_offered);
    c.write(b"NOOP\r\n").unwrap();
    assert_eq!(smtp_line(&mut c), "250 ok\r\n");
    c.write(b"QUIT\r\n").unwrap();
    assert_eq!(smtp_line(&mut c), "221 bye\r\n");
    let (_, seen) = server.join().unwrap();
    assert_eq!(seen, ["EHLO client.test", "STARTTLS", "EHLO client.test", "NOOP", "QUIT"]);
}

/// A flight goes out in one write: the server's ServerHello..Finished, the client's
/// ChangeCipherSpec and Finished. One record per write would cost a system call and,
/// on TCP, a segment (and a Nagle wait) per record.
#[test]
fn each_handshake_flight_is_one_write() {
    let (scfg, _) = server_cfg();
    let (a, b) = UnixStream::pair().unwrap();
    let slog = Arc::new(std::sync::Mutex::new(Vec::new()));
    let st = Box::new(Logged(b.try_clone().unwrap(), slog.clone()));
    let server = thread::spawn(move || run_server_on(b, st, scfg));
    let clog = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut c = Session::client(client_cfg(Policy::Encrypt, None), Proto::Smtp, "localhost", 25).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.set_transport(Box::new(Logged(a, clog.clone())));
    c.negotiate().unwrap();
    c.write(b"QUIT\r\n").unwrap();
    assert_eq!(smtp_line(&mut c), "221 bye\r\n");
    server.join().unwrap();
    // The server session's first TLS write is its whole first flight: ServerHello, the
    // compatibility ChangeCipherSpec, then EncryptedExtensions, Certificate,
    // CertificateVerify and Finished in encrypted records (rustls packs them in one
    // or more). Three records at least, where one write per record would give one.
    let slog = slog.lock().unwrap();
    let sh = slog.iter().position(|w| w.first() == Some(&22)).expect("a ServerHello");
    let first = records(&slog[sh]);
    let types: Vec<u8> = first.iter().map(|r| r.0).collect();
    assert!(types.len() >= 3 && types[..2] == [22, 20] && types[2..].iter().all(|&t| t == 23), "{first:?}");
    assert_eq!(first.iter().map(|r| 5 + r.1).sum::<usize>(), slog[sh].len(), "whole records only");
    // The client's: EHLO, STARTTLS, ClientHello, then CCS + Finished together.
    let clog = clog.lock().unwrap();
    let fin = clog.iter().position(|w| w.first() == Some(&20)).expect("a ChangeCipherSpec");
    assert_eq!(records(&clog[fin]).iter().map(|r| r.0).collect::<Vec<_>>(), [20, 23], "{:?}", records(&clog[fin]));
}

#[test]
fn verify_refuses_a_name_mismatch_and_may_records_it() {
    let (scfg, cert) = server_cfg();
    let (a, b) = UnixStream::pair().unwrap();
    let scfg2 = scfg.clone();
    let server = thread::spawn(move || run_server(b, scfg2));
    let mut c = Session::client(client_cfg(Policy::Verify, Some(&cert)), Proto::Smtp, "127.0.0.1", 25).unwrap();
    c.set_server_name("wrong.example").unwrap();
    c.set_transport(Box::new(Sock(a)));
    let e = c.negotiate().unwrap_err();
    assert_eq!(e.code, Code::CertificateNameMismatch, "{e}");
    assert_eq!(c.report().outcome(), Outcome::Defer);
    assert_eq!(c.report().rfc8460, Some("certificate-host-mismatch"));
    let seen = c.report().peer_cert.clone().expect("the rejected certificate is in the report");
    assert_eq!(seen.names, ["localhost"]);
    drop(c);
    let _ = server.join();

    let (a, b) = UnixStream::pair().unwrap();
    let server = thread::spawn(move || run_server(b, scfg));
    let mut c = Session::client(client_cfg(Policy::May, Some(&cert)), Proto::Smtp, "wrong.example", 25).unwrap();
    c.set_transport(Box::new(Sock(a)));
    c.negotiate().unwrap();
    assert_eq!(c.report().outcome(), Outcome::Tls);
    assert_eq!(c.report().cert_verified, Some(false));
    assert!(c.report().cert_error.as_deref().unwrap_or("").contains("name"), "{:?}", c.report().cert_error);
    c.write(b"QUIT\r\n").unwrap();
    smtp_line(&mut c);
    server.join().unwrap();
}

#[test]
fn pipelined_command_after_starttls_is_discarded_not_executed() {
    let (scfg, _) = server_cfg();
    let (a, b) = UnixStream::pair().unwrap();
    let server = thread::spawn(move || run_server(b, scfg));
    let mut raw = a.try_clone().unwrap();
    let mut line = [0u8; 256];
    let _ = raw.read(&mut line).unwrap(); // greeting
    raw.write_all(b"EHLO evil\r\n").unwrap();
    thread::sleep(Duration::from_millis(50));
    let _ = raw.read(&mut line).unwrap();
    raw.write_all(b"STARTTLS\r\nMAIL FROM:<a@b>\r\n").unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n") {
        let n = raw.read(&mut line).unwrap();
        got.extend_from_slice(&line[..n]);
    }
    assert!(got.starts_with(b"220 "), "{:?}", String::from_utf8_lossy(&got));
    drop(raw);
    drop(a);
    let (discarded, seen) = server.join().unwrap();
    assert_eq!(discarded, "MAIL FROM:<a@b>\r\n".len() as u64);
    assert!(!seen.iter().any(|l| l.starts_with("MAIL")), "{seen:?}");
}

#[test]
fn may_goes_plaintext_when_not_offered_and_encrypt_defers() {
    for (policy, want) in [(Policy::May, Ok(Outcome::Plaintext)), (Policy::Encrypt, Err(Code::StarttlsNotOffered))] {
        let (a, mut b) = UnixStream::pair().unwrap();
        let peer = thread::spawn(move || {
            b.write_all(b"220 plain\r\n").unwrap();
            let mut got = Vec::new();
            let mut t = [0u8; 256];
            while !got.ends_with(b"\r\n") {
                let n = b.read(&mut t).unwrap();
                got.extend_from_slice(&t[..n]);
            }
            b.write_all(b"250-plain\r\n250 SIZE 100\r\n").unwrap();
            b.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let n = b.read(&mut t).unwrap_or(0);
            String::from_utf8_lossy(&t[..n]).to_string()
        });
        let mut c = Session::client(client_cfg(policy, None), Proto::Smtp, "localhost", 25).unwrap();
        c.set_transport(Box::new(Sock(a)));
        let r = c.negotiate();
        match want {
            Ok(o) => {
                r.unwrap();
                assert_eq!(c.report().outcome(), o);
                assert_eq!(c.report().reason, Some(Code::StarttlsNotOffered));
                assert_eq!(c.report().capabilities, ["SIZE 100"]);
                drop(c);
                assert_eq!(peer.join().unwrap(), "");
            }
            Err(code) => {
                assert_eq!(r.unwrap_err().code, code);
                assert_eq!(c.report().outcome(), Outcome::Defer);
                assert_eq!(peer.join().unwrap(), "QUIT\r\n");
            }
        }
    }
}

/// A transport that says "would block" on every other call and moves one byte at a time.
struct Stubborn {
    inner: UnixStream,
    flip: bool,
    blocks: usize,
}

impl Transport for Stubborn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.flip = !self.flip;
        if self.flip {
            self.blocks += 1;
            return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
        }
        self.inner.read(&mut buf[..1])
    }
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.flip = !self.flip;
        if self.flip {
            self.blocks += 1;
            return Err(std::io::Error::from_raw_os_error(libc::EWOULDBLOCK));
        }
        self.inner.write(&buf[..1])
    }
}

#[test]
fn negotiation_resumes_after_would_block_at_every_step_with_one_byte_io() {
    let (scfg, cert) = server_cfg();
    let (a, b) = UnixStream::pair().unwrap();
    let server = thread::spawn(move || run_server(b, scfg));
    let mut c = Session::client(client_cfg(Policy::Verify, Some(&cert)), Proto::Smtp, "localhost", 25).unwrap();
    c.set_transport(Box::new(Stubborn { inner: a, flip: false, blocks: 0 }));
    let mut would_block = 0;
    loop {
        match c.negotiate() {
            Ok(()) => break,
            Err(e) if e.code == Code::WouldBlock => {
                assert!(c.wants_read() || c.wants_write());
                would_block += 1;
                assert!(would_block < 100_000, "no progress");
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(would_block > 100, "only {would_block} would-blocks");
    assert_eq!(c.report().outcome(), Outcome::Tls);
    assert_eq!(c.report().capabilities, ["AUTH PLAIN"]);
    let msg = b"QUIT\r\n";
    let mut off = 0;
    while off < msg.len() {
        match c.write(&msg[off..]) {
            Ok(n) => off += n,
            Err(e) if e.code == Code::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    while c.wants_write() {
        match c.flush() {
            Ok(()) => {}
            Err(e) if e.code == Code::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    let mut got = Vec::new();
    let mut b = [0u8; 64];
    while !got.ends_with(b"\r\n") {
        match c.read(&mut b) {
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e) if e.code == Code::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, b"221 bye\r\n");
    server.join().unwrap();
}

/// A server session that receives a crafted first flight after its 220: returns the
/// result, the report, and what the client got back after the 220.
fn serve_first_flight(cfg: Arc<Config>, flight: Vec<u8>, one_byte: bool) -> (Result<(), Code>, mailtls::session::report::Report, Vec<u8>) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let client = thread::spawn(move || {
        let mut a = a;
        if one_byte {
            // The server may stop reading as soon as it has classified the hello.
            for byte in &flight {
                if a.write_all(&[*byte]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_micros(200));
            }
        } else {
            let _ = a.write_all(&flight);
        }
        let _ = a.shutdown(std::net::Shutdown::Write);
        let mut got = Vec::new();
        let _ = a.read_to_end(&mut got);
        got
    });
    let mut s = Session::server(cfg, Proto::Smtp, "192.0.2.7:4242").unwrap();
    s.set_transport(Box::new(Sock(b)));
    let r = s.server_starttls(b"").map_err(|e| e.code);
    let report = s.report().clone();
    drop(s);
    (r, report, client.join().unwrap())
}

#[test]
fn crafted_first_flights_are_classified_and_refused_in_their_own_format() {
    use mailtls::tls::sniff::{samples, HelloKind};
    let (scfg, _) = server_cfg();
    /// A first flight, its expected class, the expected result, the expected reply bytes.
    type Case = (Vec<u8>, HelloKind, Option<Code>, &'static [u8]);
    let cases: Vec<Case> = vec![
        // SSLv2-format hellos are answered with a TLS alert record, as OpenSSL does.
        (samples::sslv2_hello(0x0301), HelloKind::Sslv2Compat, Some(Code::HelloRefused), &[0x15, 3, 1, 0, 2, 2, 70]),
        (samples::sslv2_hello(0x0303), HelloKind::Sslv2Compat, Some(Code::HelloRefused), &[0x15, 3, 1, 0, 2, 2, 70]),
        (samples::tls_hello(0x0300, 0x0300, false, false), HelloKind::Ssl3, Some(Code::HelloRefused), &[0x15, 3, 0, 0, 2, 2, 40]),
        (samples::tls_hello(0x0301, 0x0301, false, true), HelloKind::Tls10, Some(Code::HelloRefused), &[0x15, 3, 1, 0, 2, 2, 70]),
        (samples::tls_hello(0x0301, 0x0303, false, false), HelloKind::Tls12, None, &[]),
        (samples::tls_hello(0x0301, 0x0303, true, true), HelloKind::Tls13, None, &[]),
        // A TLS 1.3 hello whose first record holds 3 bytes of it: read on, then served.
        (samples::fragmented(&samples::tls_hello(0x0301, 0x0303, true, true), &[3, 1000]), HelloKind::Tls13, None, &[]),
        // Unknown and malformed flights get the alert that fits, not silence.
        (vec![0x00, 0x13, 0x37, 0xff, 0x00, 0x01], HelloKind::Unknown, Some(Code::HelloRefused), &[0x15, 3, 1, 0, 2, 2, 50]),
        (vec![0x17, 0x03, 0x03, 0x00, 0x01, 0x00], HelloKind::Unknown, Some(Code::HelloRefused), &[0x15, 3, 1, 0, 2, 2, 10]),
        (vec![0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00], HelloKind::Unknown, Some(Code::HelloRefused), &[0x15, 3, 1, 0, 2, 2, 10]),
    ];
    for one_byte in [false, true] {
        for (flight, kind, code, alert) in &cases {
            let (r, rep, got) = serve_first_flight(scfg.clone(), flight.clone(), one_byte);
            assert_eq!(rep.hello.map(|h| h.kind), Some(*kind), "{flight:02x?}");
            let after_220 = &got[mailtls::protocol::smtp::REPLY_GO.len()..];
            match code {
                Some(c) => {
                    assert_eq!(r, Err(*c), "{kind:?}");
                    assert_eq!(after_220, *alert, "{kind:?}");
                }
                // Served by rustls, which then fails on the crafted content.
                None => assert!(r.is_err() && rep.hello_action == Some(mailtls::config::HelloAction::Serve), "{kind:?} {r:?}"),
            }
        }
    }
    assert_eq!(scfg.hello_counts[HelloKind::Sslv2Compat as usize].load(std::sync::atomic::Ordering::Relaxed), 4);
}

/// A TLS 1.2 ClientHello rustls can answer (ECDHE suites, groups, point formats,
/// signature algorithms) with any client_version and no supported_versions.
fn tls12_hello(client_version: u16) -> Vec<u8> {
    let mut body = client_version.to_be_bytes().to_vec();
    body.extend_from_slice(&[0x42; 32]);
    body.push(0);
    let suites: [u16; 6] = [0xc02b, 0xc02c, 0xcca9, 0xc02f, 0xc030, 0xcca8];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    suites.iter().for_each(|c| body.extend_from_slice(&c.to_be_bytes()));
    body.extend_from_slice(&[0x01, 0x00]);
    let ext: &[u8] = &[
        0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17, // supported_groups: x25519, P-256
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats: uncompressed
        0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, // signature_algorithms
    ];
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(ext);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    rec.push(0x01);
    rec.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    rec.extend_from_slice(&body);
    rec
}

/// RFC 8446 appendix D.2: a client_version above the highest the server has, without
/// supported_versions, gets the highest the server has: a TLS 1.2 ServerHello.
#[test]
fn client_versions_above_tls12_are_answered_with_a_tls12_server_hello() {
    use mailtls::tls::sniff::HelloKind;
    let (scfg, _) = server_cfg();
    for v in [0x0303u16, 0x0304, 0x0401, 0x0603, 0xfefe] {
        for frag in [false, true] {
            let mut flight = tls12_hello(v);
            if frag {
                flight = mailtls::tls::sniff::samples::fragmented(&flight, &[2, 5, 1000]);
            }
            let (_, rep, got) = serve_first_flight(scfg.clone(), flight, false);
            assert_eq!(rep.hello.map(|h| (h.kind, h.client_version)), Some((HelloKind::Tls12, v)));
            let sh = &got[mailtls::protocol::smtp::REPLY_GO.len()..];
            assert!(sh.len() > 11 && sh[0] == 0x16 && sh[5] == 0x02, "{v:#06x}: no ServerHello: {:02x?}", &sh[..sh.len().min(16)]);
            assert_eq!(&sh[9..11], &[0x03, 0x03], "{v:#06x}: ServerHello version");
        }
    }
}

#[test]
fn handoff_hands_over_exactly_the_bytes_read_and_server_memory_stops_offering() {
    use mailtls::config::HelloAction;
    use mailtls::recovery::memory::Memory;
    use mailtls::tls::sniff::{samples, HelloKind};
    let (cert, key) = mailtls::tls::server::self_signed(&["localhost".to_string()]).unwrap();
    let mut b = ConfigBuilder::new(Role::Server);
    b.certificate_pem(cert.as_bytes(), key.as_bytes());
    b.hello_action(HelloKind::Sslv2Compat, HelloAction::Handoff).unwrap();
    assert!(b.hello_action(HelloKind::Tls10, HelloAction::Serve).is_err());
    let mem = Arc::new(Memory::in_process());
    b.server_memory(Some(mem.clone()), Duration::from_secs(3600));
    let cfg = b.build().unwrap();
    let flight = samples::sslv2_hello(0x0303);
    let (a, srv) = UnixStream::pair().unwrap();
    let mut a2 = a.try_clone().unwrap();
    a2.write_all(&flight).unwrap();
    let s_transport_peer = srv.try_clone().unwrap();
    let mut s = Session::server(cfg.clone(), Proto::Smtp, "192.0.2.7:4242").unwrap();
    s.set_transport(Box::new(Sock(srv)));
    assert_eq!(s.server_starttls(b"").unwrap_err().code, Code::Handoff);
    assert_eq!(s.report().outcome(), Outcome::Handoff);
    let handed = s.handoff_bytes().to_vec();
    // Exactly what the sniffer needed (the SSLv2 header), the rest left on the transport.
    assert_eq!(handed, flight[..11].to_vec());
    let mut rest = vec![0u8; flight.len() - 11];
    let mut srv_side = s_transport_peer;
    srv_side.read_exact(&mut rest).unwrap();
    assert_eq!(rest, flight[11..].to_vec());
    // Refused: the address is remembered and not offered STARTTLS again; another is.
    let (r, _, _) = serve_first_flight(cfg.clone(), samples::tls_hello(0x0301, 0x0301, false, true), false);
    assert_eq!(r, Err(Code::HelloRefused));
    let again = Session::server(cfg.clone(), Proto::Smtp, "192.0.2.7:5555").unwrap();
    assert!(!again.offer_starttls());
    let other = Session::server(cfg.clone(), Proto::Smtp, "198.51.100.1:5555").unwrap();
    assert!(other.offer_starttls());
    mem.forget(&mailtls::recovery::memory::Key::new(Proto::Smtp, "192.0.2.7", 0));
    assert!(Session::server(cfg, Proto::Smtp, "192.0.2.7:5555").unwrap().offer_starttls());
}

#[test]
fn key_file_unreadable_at_run_time_means_454_and_no_offer_and_renewal_is_picked_up() {
    let dir = std::env::temp_dir().join(format!("mailtls-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = mailtls::tls::server::self_signed(&["localhost".to_string()]).unwrap();
    let (cp, kp) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cp, &cert).unwrap();
    std::fs::write(&kp, &key).unwrap();
    let mut b = ConfigBuilder::new(Role::Server);
    b.certificate_files(cp.to_str().unwrap(), kp.to_str().unwrap());
    let cfg = b.build().unwrap();
    assert!(Session::server(cfg.clone(), Proto::Smtp, "peer").unwrap().offer_starttls());

    std::fs::rename(&kp, dir.join("key.gone")).unwrap();
    let (a, srv) = UnixStream::pair().unwrap();
    let mut s = Session::server(cfg.clone(), Proto::Smtp, "peer").unwrap();
    assert!(!s.offer_starttls(), "never advertise STARTTLS that cannot work");
    s.set_transport(Box::new(Sock(srv)));
    assert_eq!(s.server_starttls(b"").unwrap_err().code, Code::TlsUnavailable);
    let mut got = [0u8; 128];
    let mut a = a;
    let n = a.read(&mut got).unwrap();
    assert!(got[..n].starts_with(b"454 "), "{:?}", String::from_utf8_lossy(&got[..n]));

    // A renewed pair appears: served from the next STARTTLS on, no restart.
    let (cert2, key2) = mailtls::tls::server::self_signed(&["localhost".to_string()]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&cp, &cert2).unwrap();
    std::fs::write(&kp, &key2).unwrap();
    let (a, b2) = UnixStream::pair().unwrap();
    let cfg2 = cfg.clone();
    let server = thread::spawn(move || run_server(b2, cfg2));
    let mut c = Session::client(client_cfg(Policy::Verify, Some(&cert2)), Proto::Smtp, "localhost", 25).unwrap();
    c.set_transport(Box::new(Sock(a)));
    c.negotiate().unwrap();
    c.write(b"QUIT\r\n").unwrap();
    smtp_line(&mut c);
    server.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

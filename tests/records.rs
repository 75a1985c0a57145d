//! Errors after the handshake, against mailtls-badpeer (ffi-tests/badpeer.rs), a
//! TLS 1.3 client that writes records rustls never would: a record with no content
//! type and a KeyUpdate with application data between its fragments must get a fatal
//! unexpected_message alert (RFC 8446 sections 5.4 and 5.1), never a close_notify,
//! and be reported as record errors, not as handshake failures.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};

use mailtls::config::{ConfigBuilder, Role};
use mailtls::error::{Code, Error};
use mailtls::protocol::Proto;
use mailtls::session::{Session, Transport};

struct Sock(TcpStream);

impl Transport for Sock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
}

/// Serves one badpeer connection: STARTTLS at once, read until an error, then close
/// as any server does. Returns the error and the peer's JSON line.
fn run(mode: &str) -> (Error, String) {
    let (cert, key) = mailtls::tls::server::self_signed(&["localhost".to_string()]).unwrap();
    let mut b = ConfigBuilder::new(Role::Server);
    b.certificate_pem(cert.as_bytes(), key.as_bytes());
    let cfg = b.build().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let peer = Command::new(env!("CARGO_BIN_EXE_mailtls-badpeer"))
        .args([mode, &addr])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (sock, _) = l.accept().unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut s = Session::server(cfg, Proto::Smtp, "192.0.2.5:2525").unwrap();
    s.set_transport(Box::new(Sock(sock)));
    // The client's last flight and its records may come in one read: the error can
    // surface in the STARTTLS call itself, after the handshake completed.
    let err = match s.server_starttls(b"") {
        Err(e) => e,
        Ok(()) => {
            let mut buf = [0u8; 64];
            loop {
                if let Err(e) = s.read(&mut buf) {
                    break e;
                }
            }
        }
    };
    let _ = s.close();
    drop(s);
    let out = peer.wait_with_output().unwrap();
    assert!(out.status.success(), "badpeer failed");
    (err, String::from_utf8(out.stdout).unwrap())
}

#[test]
fn a_record_without_content_type_gets_unexpected_message_not_close_notify() {
    let (e, peer) = run("no-content-type");
    assert_eq!(e.code, Code::TlsRecord, "{}", e.detail);
    assert!(e.detail.contains("no content type") && !e.detail.contains("handshake"), "{}", e.detail);
    assert!(peer.contains("\"after\":[\"unexpected_message\"],\"undecryptable\":0"), "one fatal alert, then nothing: {peer}");
}

#[test]
fn application_data_inside_a_fragmented_key_update_gets_unexpected_message() {
    let (e, peer) = run("interleaved-key-update");
    assert_eq!(e.code, Code::TlsRecord, "{}", e.detail);
    assert!(e.detail.contains("between the fragments of a handshake message"), "{}", e.detail);
    assert!(peer.contains("\"after\":[\"unexpected_message\"],\"undecryptable\":0"), "one fatal alert, then nothing: {peer}");
}

#[test]
fn a_key_update_in_one_record_is_no_violation_and_a_plain_end_gets_close_notify() {
    // The control: the KeyUpdate whole is honoured; the client then ends without
    // close_notify, a truncation and not a TLS error, so the server's close sends its
    // close_notify (under its unchanged key).
    let (e, peer) = run("key-update");
    assert_eq!(e.code, Code::PeerClosed, "{}", e.detail);
    assert!(peer.contains("\"after\":[\"close_notify\"]"), "{peer}");
}

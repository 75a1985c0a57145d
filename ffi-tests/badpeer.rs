//! A TLS 1.3 client that misbehaves after a correct handshake, for the tests of errors
//! after the handshake (Rust and C). A fixture, never part of the library.
//!
//!     mailtls-badpeer MODE HOST:PORT
//!
//! Connects, reads the server's go reply line (the server side calls
//! `server_starttls` at once), completes a TLS 1.3 handshake with rustls
//! (TLS_AES_128_GCM_SHA256, the server's certificate not checked), extracts the
//! traffic keys, sends "NOOP\r\n" in a correct record, then per MODE:
//!
//! - `no-content-type`: a record whose inner plaintext is all zeros (RFC 8446 5.4);
//! - `interleaved-key-update`: a KeyUpdate cut after two bytes, an application data
//!   record, then the rest of the KeyUpdate (RFC 8446 5.1);
//! - `key-update`: the same KeyUpdate in one record (nothing wrong: the control).
//!
//! then ends its side and reads to EOF. Prints one JSON line: the go reply and what
//! every record the server sent after the handshake was:
//! `{"go":"220 ...","after":["unexpected_message"],"undecryptable":0}`, where each
//! entry is an alert name (`close_notify`, `unexpected_message`, `alert:N:M`) or
//! `data:N` (N bytes of application data). NewSessionTicket records are left out.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ConnectionTrafficSecrets, DigitallySignedStruct, SignatureScheme};

/// Accepts any certificate: the peer under test is the server's record layer.
#[derive(Debug)]
struct AnyCert;

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// One direction's record protection: TLS_AES_128_GCM_SHA256 key, IV, sequence number.
struct Keys {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Keys {
    fn new(seq: u64, s: ConnectionTrafficSecrets) -> Keys {
        let ConnectionTrafficSecrets::Aes128Gcm { key, iv } = s else { die("the client offers AES-128-GCM only") };
        let mut v = [0u8; 12];
        v.copy_from_slice(iv.as_ref());
        let key = UnboundKey::new(&AES_128_GCM, key.as_ref()).unwrap_or_else(|_| die("bad key"));
        Keys { key: LessSafeKey::new(key), iv: v, seq }
    }

    fn nonce(&self, seq: u64) -> Nonce {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(seq.to_be_bytes()) {
            *b ^= s;
        }
        Nonce::assume_unique_for_key(n)
    }

    /// A TLS 1.3 record carrying `inner` (content, type byte, padding) as it stands.
    fn seal(&mut self, inner: &[u8]) -> Vec<u8> {
        let len = (inner.len() + 16) as u16;
        let hdr = [0x17, 0x03, 0x03, (len >> 8) as u8, len as u8];
        let mut body = inner.to_vec();
        self.key.seal_in_place_append_tag(self.nonce(self.seq), Aad::from(hdr), &mut body).unwrap_or_else(|_| die("seal"));
        self.seq += 1;
        [&hdr[..], &body].concat()
    }

    /// Decrypts one record, trying the next few sequence numbers (the server sends
    /// tickets the client never read): the inner plaintext, or None.
    fn open(&mut self, rec: &[u8]) -> Option<Vec<u8>> {
        for seq in self.seq..self.seq + 8 {
            let mut body = rec.get(5..)?.to_vec();
            if let Ok(p) = self.key.open_in_place(self.nonce(seq), Aad::from(&rec[..5]), &mut body) {
                self.seq = seq + 1;
                return Some(p.to_vec());
            }
        }
        None
    }
}

fn die(msg: &str) -> ! {
    eprintln!("mailtls-badpeer: {msg}");
    std::process::exit(2)
}

fn describe(inner: &[u8]) -> Option<String> {
    let (&typ, body) = inner.iter().rposition(|&b| b != 0).map(|i| (&inner[i], &inner[..i]))?;
    Some(match (typ, body) {
        (0x16, _) => return None, // NewSessionTicket
        (0x15, [1, 0]) => "close_notify".into(),
        (0x15, [2, 10]) => "unexpected_message".into(),
        (0x15, [level, desc]) => format!("alert:{level}:{desc}"),
        (0x17, d) => format!("data:{}", d.len()),
        (t, _) => format!("type:{t}"),
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(addr)) = (args.get(1), args.get(2)) else { die("usage: mailtls-badpeer MODE HOST:PORT") };
    let mut sock = TcpStream::connect(addr).unwrap_or_else(|e| die(&format!("connect {addr}: {e}")));
    sock.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let mut go = Vec::new();
    while !go.ends_with(b"\n") {
        let mut c = [0u8; 1];
        if sock.read(&mut c).unwrap_or(0) == 0 {
            die("no go reply");
        }
        go.push(c[0]);
    }
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256];
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap_or_else(|e| die(&e.to_string()))
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    cfg.enable_secret_extraction = true;
    let name = ServerName::try_from("localhost").unwrap_or_else(|e| die(&e.to_string()));
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap_or_else(|e| die(&e.to_string()));
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap_or_else(|e| die(&format!("handshake: {e}")));
    }
    while conn.wants_write() {
        conn.write_tls(&mut sock).unwrap_or_else(|e| die(&format!("write: {e}")));
    }
    let secrets = conn.dangerous_extract_secrets().unwrap_or_else(|e| die(&e.to_string()));
    let mut tx = Keys::new(secrets.tx.0, secrets.tx.1);
    let mut rx = Keys::new(secrets.rx.0, secrets.rx.1);
    let mut out = tx.seal(b"NOOP\r\n\x17");
    match mode.as_str() {
        "no-content-type" => out.extend(tx.seal(&[0, 0, 0])),
        "interleaved-key-update" => {
            out.extend(tx.seal(&[24, 0, 0x16]));
            out.extend(tx.seal(b"RSET\r\n\x17"));
            out.extend(tx.seal(&[1, 0, 0x16]));
        }
        "key-update" => out.extend(tx.seal(&[24, 0, 0, 1, 0, 0x16])),
        m => die(&format!("unknown mode {m}")),
    }
    let _ = sock.write_all(&out);
    let _ = sock.shutdown(std::net::Shutdown::Write);
    let mut got = Vec::new();
    let _ = sock.read_to_end(&mut got);
    let (mut after, mut undecryptable, mut p) = (Vec::new(), 0, 0);
    while p + 5 <= got.len() {
        let len = u16::from_be_bytes([got[p + 3], got[p + 4]]) as usize;
        match rx.open(&got[p..(p + 5 + len).min(got.len())]) {
            Some(inner) => after.extend(describe(&inner)),
            None => undecryptable += 1,
        }
        p += 5 + len;
    }
    let go = String::from_utf8_lossy(&go).trim_end().replace('"', "'");
    let after: Vec<String> = after.iter().map(|a| format!("\"{a}\"")).collect();
    println!("{{\"go\":\"{go}\",\"after\":[{}],\"undecryptable\":{undecryptable}}}", after.join(","));
}

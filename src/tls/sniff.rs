//! Server side: classifies a client's first flight after the go reply without
//! consuming more than it needs. SSLv2-compatible hellos (old MTAs still send them),
//! SSL 3.0, TLS 1.0 to 1.2 by client_version, TLS 1.3 by supported_versions, a
//! plaintext protocol command, or anything else. Robust to any fragmentation and to
//! hostile lengths: it never asks for more than one maximal record.

/// The format of a client's first flight.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HelloKind {
    /// No first flight was seen (no STARTTLS, or nothing arrived).
    None = 0,
    /// An SSLv2-compatible ClientHello (RFC 6101 appendix E.2, RFC 5246 appendix E.2).
    Sslv2Compat = 1,
    /// An SSL 3.0 ClientHello.
    Ssl3 = 2,
    /// A TLS ClientHello offering at most TLS 1.0.
    Tls10 = 3,
    /// A TLS ClientHello offering at most TLS 1.1.
    Tls11 = 4,
    /// A TLS ClientHello offering TLS 1.2 (and not 1.3).
    Tls12 = 5,
    /// A TLS ClientHello offering TLS 1.3 in supported_versions.
    Tls13 = 6,
    /// A plaintext protocol command where the hello belongs.
    Plaintext = 7,
    /// Anything else.
    Unknown = 8,
}

impl HelloKind {
    /// Every kind, in numeric order.
    pub(crate) const ALL: [HelloKind; 9] = [
        HelloKind::None,
        HelloKind::Sslv2Compat,
        HelloKind::Ssl3,
        HelloKind::Tls10,
        HelloKind::Tls11,
        HelloKind::Tls12,
        HelloKind::Tls13,
        HelloKind::Plaintext,
        HelloKind::Unknown,
    ];

    /// The name in logs and JSON (`sslv2-compat`, `tls1.2`, ...).
    pub fn name(self) -> &'static str {
        match self {
            HelloKind::None => "none",
            HelloKind::Sslv2Compat => "sslv2-compat",
            HelloKind::Ssl3 => "ssl3",
            HelloKind::Tls10 => "tls1.0",
            HelloKind::Tls11 => "tls1.1",
            HelloKind::Tls12 => "tls1.2",
            HelloKind::Tls13 => "tls1.3",
            HelloKind::Plaintext => "plaintext",
            HelloKind::Unknown => "unknown",
        }
    }

    /// The kind for a number from C.
    pub fn from_u32(n: u32) -> Option<HelloKind> {
        Self::ALL.get(n as usize).copied()
    }

    /// Whether rustls can serve it.
    pub fn servable(self) -> bool {
        matches!(self, HelloKind::Tls12 | HelloKind::Tls13)
    }
}

/// What the sniffer found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The format.
    pub kind: HelloKind,
    /// The record-layer version (TLS) or 0.
    pub record_version: u16,
    /// The highest version the client offers in its hello body (client_version).
    pub client_version: u16,
    /// SSLv2-compatible hellos: how many cipher specs they offer.
    pub sslv2_cipher_specs: usize,
}

/// The sniffer's answer for the bytes so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniff {
    /// At least this many bytes in all are needed.
    NeedMore(usize),
    /// Classified.
    Done(Hello),
}

/// The largest TLS record a hello may come in (2^14 plus the expansion RFC 5246 allows).
const MAX_RECORD: usize = (1 << 14) + 2048;

fn hello(kind: HelloKind, record_version: u16, client_version: u16) -> Sniff {
    Sniff::Done(Hello { kind, record_version, client_version, sslv2_cipher_specs: 0 })
}

/// Classifies the first flight from what has arrived.
pub fn sniff(b: &[u8]) -> Sniff {
    let Some(&first) = b.first() else { return Sniff::NeedMore(1) };
    if first.is_ascii_graphic() || first == b' ' {
        return hello(HelloKind::Plaintext, 0, 0);
    }
    if first & 0x80 != 0 {
        return sniff_sslv2(b);
    }
    if first != 0x16 {
        return hello(HelloKind::Unknown, 0, 0);
    }
    if b.len() < 5 {
        return Sniff::NeedMore(5);
    }
    let record_version = u16::from_be_bytes([b[1], b[2]]);
    let len = u16::from_be_bytes([b[3], b[4]]) as usize;
    if b[1] != 3 || !(4..=MAX_RECORD).contains(&len) {
        return hello(HelloKind::Unknown, record_version, 0);
    }
    if b.len() < 5 + len {
        return Sniff::NeedMore(5 + len);
    }
    let body = &b[5..5 + len];
    if body[0] != 1 || body.len() < 6 {
        return hello(HelloKind::Unknown, record_version, 0);
    }
    let client_version = u16::from_be_bytes([body[4], body[5]]);
    let offers13 = offers_tls13(&body[4..]);
    let kind = match client_version {
        _ if offers13 => HelloKind::Tls13,
        0x0300 => HelloKind::Ssl3,
        0x0301 => HelloKind::Tls10,
        0x0302 => HelloKind::Tls11,
        v if v >= 0x0303 && v >> 8 == 3 => HelloKind::Tls12,
        _ => HelloKind::Unknown,
    };
    hello(kind, record_version, client_version)
}

fn sniff_sslv2(b: &[u8]) -> Sniff {
    // Two-byte header: length with the high bit set, then MSG-CLIENT-HELLO (1),
    // version, cipher_spec_length, session_id_length, challenge_length.
    if b.len() < 11 {
        return Sniff::NeedMore(11);
    }
    let len = (((b[0] & 0x7f) as usize) << 8) | b[1] as usize;
    let client_version = u16::from_be_bytes([b[3], b[4]]);
    let specs = u16::from_be_bytes([b[5], b[6]]) as usize;
    let sid = u16::from_be_bytes([b[7], b[8]]) as usize;
    let challenge = u16::from_be_bytes([b[9], b[10]]) as usize;
    if b[2] != 1 || !specs.is_multiple_of(3) || 9 + specs + sid + challenge != len || !(16..=32).contains(&challenge) {
        return hello(HelloKind::Unknown, 0, client_version);
    }
    Sniff::Done(Hello { kind: HelloKind::Sslv2Compat, record_version: 0x0002, client_version, sslv2_cipher_specs: specs / 3 })
}

/// Whether a ClientHello body (from client_version on) lists TLS 1.3 in supported_versions.
fn offers_tls13(ch: &[u8]) -> bool {
    let mut p = 2 + 32;
    let get = |p: usize, n: usize| ch.get(p..p + n);
    let Some(sid) = get(p, 1) else { return false };
    p += 1 + sid[0] as usize;
    let Some(cs) = get(p, 2) else { return false };
    p += 2 + u16::from_be_bytes([cs[0], cs[1]]) as usize;
    let Some(cm) = get(p, 1) else { return false };
    p += 1 + cm[0] as usize;
    let Some(el) = get(p, 2) else { return false };
    p += 2;
    let end = (p + u16::from_be_bytes([el[0], el[1]]) as usize).min(ch.len());
    while p + 4 <= end {
        let t = u16::from_be_bytes([ch[p], ch[p + 1]]);
        let l = u16::from_be_bytes([ch[p + 2], ch[p + 3]]) as usize;
        let Some(data) = get(p + 4, l) else { return false };
        if t == 0x002b {
            return data.get(1..).unwrap_or(&[]).chunks_exact(2).any(|v| v == [0x03, 0x04]);
        }
        p += 4 + l;
    }
    false
}

/// The refusal to send for a hello format: a fatal alert in the record format the
/// client speaks (SSLv2 has its own error message), or nothing.
pub fn refusal_bytes(h: &Hello) -> Vec<u8> {
    match h.kind {
        // SSLv2 ERROR message, NO-CIPHER-ERROR (the SSLv2 draft's closest to "go away").
        HelloKind::Sslv2Compat => vec![0x80, 0x03, 0x00, 0x00, 0x01],
        // SSL 3.0 has no protocol_version alert: handshake_failure (40).
        HelloKind::Ssl3 => vec![0x15, 0x03, 0x00, 0x00, 0x02, 0x02, 40],
        // protocol_version (70), in the record version the client used.
        HelloKind::Tls10 | HelloKind::Tls11 | HelloKind::Tls12 | HelloKind::Tls13 => {
            let v = h.record_version.to_be_bytes();
            vec![0x15, v[0], v[1], 0x00, 0x02, 0x02, 70]
        }
        _ => Vec::new(),
    }
}

/// Test vectors: crafted first flights, byte for byte, for this module's tests and
/// for the C suite's (through the fixture program).
pub mod samples {
    /// An SSLv2-compatible ClientHello offering `version` with three cipher specs.
    pub fn sslv2_hello(version: u16) -> Vec<u8> {
        let specs: [u8; 9] = [0x01, 0x00, 0x80, 0x00, 0x00, 0x2f, 0x00, 0x00, 0x35];
        let challenge = [0x5au8; 16];
        let len = 9 + specs.len() + challenge.len();
        let mut v = vec![0x80 | (len >> 8) as u8, len as u8, 0x01];
        v.extend_from_slice(&version.to_be_bytes());
        v.extend_from_slice(&(specs.len() as u16).to_be_bytes());
        v.extend_from_slice(&0u16.to_be_bytes());
        v.extend_from_slice(&(challenge.len() as u16).to_be_bytes());
        v.extend_from_slice(&specs);
        v.extend_from_slice(&challenge);
        v
    }

    /// A TLS-format ClientHello: record version, client_version, and optionally a
    /// supported_versions extension listing TLS 1.3 and 1.2; `extensions` false sends none.
    pub fn tls_hello(record_version: u16, client_version: u16, tls13: bool, extensions: bool) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&client_version.to_be_bytes());
        body.extend_from_slice(&[0x11; 32]);
        body.push(0);
        body.extend_from_slice(&[0x00, 0x04, 0x13, 0x01, 0xc0, 0x2f]);
        body.extend_from_slice(&[0x01, 0x00]);
        if extensions {
            let mut ext = Vec::new();
            // supported_groups: x25519
            ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d]);
            if tls13 {
                ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x05, 0x04, 0x03, 0x04, 0x03, 0x03]);
            }
            body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
            body.extend_from_slice(&ext);
        }
        let mut hs = vec![0x01];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16];
        rec.extend_from_slice(&record_version.to_be_bytes());
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }
}

#[cfg(test)]
mod tests {
    use super::samples::*;
    use super::*;

    fn classify_bytewise(b: &[u8]) -> (Hello, usize) {
        // Feed one byte at a time, asking only for what the sniffer says it needs.
        let mut have = 0;
        loop {
            match sniff(&b[..have]) {
                Sniff::Done(h) => return (h, have),
                Sniff::NeedMore(n) => {
                    assert!(n > have, "no progress at {have}");
                    have += 1;
                    assert!(have <= b.len(), "needs {n} of {} bytes", b.len());
                }
            }
        }
    }

    #[test]
    fn every_format_one_byte_at_a_time() {
        let cases: Vec<(Vec<u8>, HelloKind, u16)> = vec![
            (sslv2_hello(0x0301), HelloKind::Sslv2Compat, 0x0301),
            (sslv2_hello(0x0303), HelloKind::Sslv2Compat, 0x0303),
            (tls_hello(0x0300, 0x0300, false, false), HelloKind::Ssl3, 0x0300),
            (tls_hello(0x0301, 0x0301, false, true), HelloKind::Tls10, 0x0301),
            (tls_hello(0x0301, 0x0302, false, true), HelloKind::Tls11, 0x0302),
            (tls_hello(0x0301, 0x0303, false, false), HelloKind::Tls12, 0x0303),
            (tls_hello(0x0301, 0x0303, true, true), HelloKind::Tls13, 0x0303),
            (b"EHLO x\r\n".to_vec(), HelloKind::Plaintext, 0),
            (vec![0x00, 0xff, 0x13, 0x37], HelloKind::Unknown, 0),
        ];
        for (bytes, kind, version) in cases {
            let (h, used) = classify_bytewise(&bytes);
            assert_eq!((h.kind, h.client_version), (kind, version), "{bytes:02x?}");
            assert!(used <= bytes.len());
        }
        let (h, used) = classify_bytewise(&sslv2_hello(0x0301));
        assert_eq!((h.sslv2_cipher_specs, used), (3, 11), "reads only the SSLv2 header it needs");
    }

    #[test]
    fn hostile_lengths_are_unknown_not_a_wait() {
        assert_eq!(sniff(&[0x16, 0x03, 0x01, 0xff, 0xff]), hello(HelloKind::Unknown, 0x0301, 0));
        assert_eq!(sniff(&[0x16, 0x03, 0x01, 0x00, 0x01]), hello(HelloKind::Unknown, 0x0301, 0));
        assert!(matches!(sniff(&[0x80, 0x05, 0x01, 3, 1, 0, 0, 0, 0, 0, 0]), Sniff::Done(Hello { kind: HelloKind::Unknown, .. })));
        // A hello whose extension lengths lie is still classified by client_version.
        let mut h = tls_hello(0x0301, 0x0303, true, true);
        let n = h.len();
        h[n - 6] = 0xff;
        assert!(matches!(sniff(&h), Sniff::Done(Hello { kind: HelloKind::Tls12, .. })));
    }

    #[test]
    fn refusals_speak_the_clients_format() {
        let Sniff::Done(h) = sniff(&tls_hello(0x0301, 0x0301, false, true)) else { panic!() };
        assert_eq!(refusal_bytes(&h), [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 70]);
        let Sniff::Done(h) = sniff(&sslv2_hello(0x0301)) else { panic!() };
        assert_eq!(refusal_bytes(&h)[0], 0x80);
    }
}

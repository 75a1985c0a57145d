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
    /// The TLS alert description a refusal sends (RFC 8446 section 6): what fits the
    /// format or the defect, as rustls would answer it; 0 for none (plaintext).
    pub alert: u8,
    /// For `Unknown`: what is wrong with the flight, for the log.
    pub defect: &'static str,
}

impl Hello {
    /// A plaintext protocol command where the hello belongs.
    pub fn plaintext() -> Hello {
        Hello { kind: HelloKind::Plaintext, record_version: 0, client_version: 0, sslv2_cipher_specs: 0, alert: 0, defect: "" }
    }
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
/// The largest handshake message rustls accepts (it limits TLS' 2^24 to 64 KiB).
const MAX_HANDSHAKE: usize = 0xffff;
/// The most records a ClientHello may be split into before the sniffer gives up:
/// far beyond what any client sends (one-byte fragments of a 1 KB hello fit), and a
/// bound on the work a hostile client can ask for.
const MAX_RECORDS: usize = 1024;

/// Alert descriptions (RFC 8446 section 6).
pub const ALERT_UNEXPECTED_MESSAGE: u8 = 10;
/// handshake_failure, the SSL 3.0 refusal (SSL 3.0 has no protocol_version).
pub const ALERT_HANDSHAKE_FAILURE: u8 = 40;
/// decode_error.
pub const ALERT_DECODE_ERROR: u8 = 50;
/// protocol_version.
pub const ALERT_PROTOCOL_VERSION: u8 = 70;

/// The name of an alert description this module sends.
pub fn alert_name(alert: u8) -> &'static str {
    match alert {
        ALERT_UNEXPECTED_MESSAGE => "unexpected_message",
        ALERT_HANDSHAKE_FAILURE => "handshake_failure",
        ALERT_DECODE_ERROR => "decode_error",
        ALERT_PROTOCOL_VERSION => "protocol_version",
        _ => "no",
    }
}

fn hello(kind: HelloKind, record_version: u16, client_version: u16) -> Sniff {
    let alert = match kind {
        HelloKind::Plaintext | HelloKind::None => 0,
        HelloKind::Ssl3 => ALERT_HANDSHAKE_FAILURE,
        _ => ALERT_PROTOCOL_VERSION,
    };
    Sniff::Done(Hello { kind, record_version, client_version, sslv2_cipher_specs: 0, alert, defect: "" })
}

fn unknown(record_version: u16, client_version: u16, alert: u8, defect: &'static str) -> Sniff {
    Sniff::Done(Hello { kind: HelloKind::Unknown, record_version, client_version, sslv2_cipher_specs: 0, alert, defect })
}

/// Classifies the first flight from what has arrived. A TLS ClientHello may be split
/// over several handshake records, each as short as one byte (RFC 8446 section 5.1):
/// records are read until the whole hello is there, as rustls reads them.
pub fn sniff(b: &[u8]) -> Sniff {
    let Some(&first) = b.first() else { return Sniff::NeedMore(1) };
    if first.is_ascii_graphic() || first == b' ' {
        return hello(HelloKind::Plaintext, 0, 0);
    }
    if first & 0x80 != 0 {
        return sniff_sslv2(b);
    }
    if first != 0x16 {
        // Another TLS content type first is a message out of place; anything else
        // does not decode as a record (rustls answers both so).
        return match first {
            20 | 21 | 23 => unknown(0x0301, 0, ALERT_UNEXPECTED_MESSAGE, "a TLS record other than a handshake before the ClientHello"),
            _ => unknown(0x0301, 0, ALERT_DECODE_ERROR, "not a TLS record"),
        };
    }
    if b.len() < 5 {
        return Sniff::NeedMore(5);
    }
    let record_version = u16::from_be_bytes([b[1], b[2]]);
    // The handshake bytes of the records so far, and where the next record starts.
    let (mut p, mut records) = (0usize, 0usize);
    let mut msg: Vec<u8> = Vec::new();
    loop {
        if b.len() < p + 5 {
            return Sniff::NeedMore(p + 5);
        }
        let rv = u16::from_be_bytes([b[p + 1], b[p + 2]]);
        let alert_version = if record_version >> 8 == 3 { record_version } else { 0x0301 };
        if b[p] != 0x16 {
            return unknown(alert_version, 0, ALERT_UNEXPECTED_MESSAGE, "another record type inside the fragmented ClientHello");
        }
        if rv >> 8 != 3 {
            return unknown(alert_version, 0, ALERT_DECODE_ERROR, "a record version that is not 3.x");
        }
        let len = u16::from_be_bytes([b[p + 3], b[p + 4]]) as usize;
        if len == 0 || len > MAX_RECORD {
            return unknown(alert_version, 0, ALERT_DECODE_ERROR, "a handshake record of length 0 or over 2^14 + 2048");
        }
        if b.len() < p + 5 + len {
            return Sniff::NeedMore(p + 5 + len);
        }
        msg.extend_from_slice(&b[p + 5..p + 5 + len]);
        p += 5 + len;
        records += 1;
        if msg.len() >= 4 {
            if msg[0] != 1 {
                return unknown(alert_version, 0, ALERT_UNEXPECTED_MESSAGE, "a handshake message other than ClientHello first");
            }
            let need = u32::from_be_bytes([0, msg[1], msg[2], msg[3]]) as usize;
            if need > MAX_HANDSHAKE {
                return unknown(alert_version, 0, ALERT_DECODE_ERROR, "a ClientHello over 64 KiB");
            }
            if msg.len() >= 4 + need {
                return classify_client_hello(&msg[4..4 + need], alert_version);
            }
        }
        if records >= MAX_RECORDS {
            return unknown(alert_version, 0, ALERT_DECODE_ERROR, "a ClientHello split over more than 1024 records");
        }
    }
}

/// A whole ClientHello body: the version from supported_versions (TLS 1.3) or from
/// client_version, where any value from 0x0303 up (0x0401, 0x0603, 0xfefe) means "TLS
/// 1.2 or later" and gets the highest version the server has (RFC 8446 appendix D.2).
fn classify_client_hello(body: &[u8], record_version: u16) -> Sniff {
    if body.len() < 2 + 32 + 1 {
        return unknown(record_version, 0, ALERT_DECODE_ERROR, "a ClientHello too short for its version and random");
    }
    let client_version = u16::from_be_bytes([body[0], body[1]]);
    let kind = match client_version {
        _ if offers_tls13(body) => HelloKind::Tls13,
        0x0303.. => HelloKind::Tls12,
        0x0302 => HelloKind::Tls11,
        0x0301 => HelloKind::Tls10,
        0x0300 => HelloKind::Ssl3,
        _ => return unknown(record_version, client_version, ALERT_PROTOCOL_VERSION, "a client_version below SSL 3.0"),
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
    // The refusal is a TLS alert record, as OpenSSL answers: SSL 3.0 clients get
    // handshake_failure in a 3.0 record, everyone else protocol_version in a 3.1 one.
    let (alert, record_version) =
        if client_version == 0x0300 { (ALERT_HANDSHAKE_FAILURE, 0x0300) } else { (ALERT_PROTOCOL_VERSION, 0x0301) };
    if b[2] != 1 || !specs.is_multiple_of(3) || 9 + specs + sid + challenge != len || !(16..=32).contains(&challenge) {
        return unknown(0x0301, client_version, ALERT_DECODE_ERROR, "a malformed SSLv2-format hello");
    }
    Sniff::Done(Hello {
        kind: HelloKind::Sslv2Compat,
        record_version,
        client_version,
        sslv2_cipher_specs: specs / 3,
        alert,
        defect: "",
    })
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

/// The refusal to send for a hello: a fatal alert record (RFC 8446 section 6) in the
/// record version the client used, or nothing for plaintext.
pub fn refusal_bytes(h: &Hello) -> Vec<u8> {
    if h.alert == 0 {
        return Vec::new();
    }
    let v = if h.record_version >> 8 == 3 { h.record_version } else { 0x0301 }.to_be_bytes();
    vec![0x15, v[0], v[1], 0x00, 0x02, 0x02, h.alert]
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

    /// The handshake message of a one-record TLS hello re-cut into records carrying
    /// `sizes` bytes each (the last size repeats until the message is used up), as a
    /// client may legitimately fragment it (RFC 8446 section 5.1).
    pub fn fragmented(one_record: &[u8], sizes: &[usize]) -> Vec<u8> {
        let (hdr, mut msg) = one_record.split_at(5);
        let mut out = Vec::new();
        let mut i = 0;
        while !msg.is_empty() {
            let n = sizes[i.min(sizes.len() - 1)].clamp(1, msg.len());
            out.extend_from_slice(&hdr[..3]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
            out.extend_from_slice(&msg[..n]);
            msg = &msg[n..];
            i += 1;
        }
        out
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

    fn kind_of(b: &[u8]) -> Hello {
        match sniff(b) {
            Sniff::Done(h) => h,
            other => panic!("not classified: {other:?}"),
        }
    }

    #[test]
    fn hostile_lengths_are_unknown_not_a_wait() {
        let h = kind_of(&[0x16, 0x03, 0x01, 0xff, 0xff]);
        assert_eq!((h.kind, h.alert), (HelloKind::Unknown, ALERT_DECODE_ERROR));
        assert_eq!(kind_of(&[0x16, 0x03, 0x01, 0x00, 0x00]).kind, HelloKind::Unknown, "an empty handshake record");
        // A handshake message longer than rustls' 64 KiB limit is refused at its header.
        let h = kind_of(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x01, 0x00, 0x00]);
        assert_eq!((h.kind, h.alert), (HelloKind::Unknown, ALERT_DECODE_ERROR));
        assert!(matches!(sniff(&[0x80, 0x05, 0x01, 3, 1, 0, 0, 0, 0, 0, 0]), Sniff::Done(Hello { kind: HelloKind::Unknown, .. })));
        // A hello whose extension lengths lie is still classified by client_version.
        let mut h = tls_hello(0x0301, 0x0303, true, true);
        let n = h.len();
        h[n - 6] = 0xff;
        assert!(matches!(sniff(&h), Sniff::Done(Hello { kind: HelloKind::Tls12, .. })));
        // One-byte records without end are bounded by the record count.
        let endless: Vec<u8> = [&[0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0xff, 0xff][..]]
            .into_iter()
            .chain(std::iter::repeat_n(&[0x16, 0x03, 0x01, 0x00, 0x01, 0x00][..], 2000))
            .flatten()
            .copied()
            .collect();
        assert_eq!(kind_of(&endless).kind, HelloKind::Unknown);
    }

    #[test]
    fn a_hello_fragmented_over_small_records_is_read_to_its_end() {
        for v13 in [false, true] {
            let whole = tls_hello(0x0301, 0x0303, v13, true);
            let want = if v13 { HelloKind::Tls13 } else { HelloKind::Tls12 };
            for sizes in [&[1][..], &[2], &[3, 50], &[5], &[4, 1, 7], &[40]] {
                let frag = fragmented(&whole, sizes);
                let (h, used) = classify_bytewise(&frag);
                assert_eq!(h.kind, want, "sizes {sizes:?}");
                assert_eq!(used, frag.len(), "the whole hello is read, no byte more");
                assert_eq!(h.record_version, 0x0301);
            }
        }
        // A record of another type between the fragments is an unexpected message.
        let mut frag = fragmented(&tls_hello(0x0301, 0x0303, true, true), &[3, 1000]);
        frag[8] = 0x17;
        let h = kind_of(&frag);
        assert_eq!((h.kind, h.alert), (HelloKind::Unknown, ALERT_UNEXPECTED_MESSAGE));
    }

    #[test]
    fn client_versions_above_tls12_without_supported_versions_get_tls12() {
        for v in [0x0304u16, 0x0401, 0x0603, 0xfefe, 0xffff] {
            let h = kind_of(&tls_hello(0x0301, v, false, true));
            assert_eq!((h.kind, h.client_version), (HelloKind::Tls12, v), "{v:#06x}");
            assert!(h.kind.servable());
        }
        let h = kind_of(&tls_hello(0x0301, 0x0200, false, true));
        assert_eq!((h.kind, h.alert), (HelloKind::Unknown, ALERT_PROTOCOL_VERSION));
    }

    #[test]
    fn refusals_speak_the_clients_format() {
        let Sniff::Done(h) = sniff(&tls_hello(0x0301, 0x0301, false, true)) else { panic!() };
        assert_eq!(refusal_bytes(&h), [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 70]);
        let Sniff::Done(h) = sniff(&tls_hello(0x0300, 0x0300, false, false)) else { panic!() };
        assert_eq!(refusal_bytes(&h), [0x15, 0x03, 0x00, 0x00, 0x02, 0x02, 40]);
        // SSLv2-format hellos get a TLS alert record, as OpenSSL sends, not an SSLv2 ERROR.
        let Sniff::Done(h) = sniff(&sslv2_hello(0x0301)) else { panic!() };
        assert_eq!(refusal_bytes(&h), [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 70]);
        let Sniff::Done(h) = sniff(&sslv2_hello(0x0300)) else { panic!() };
        assert_eq!(refusal_bytes(&h), [0x15, 0x03, 0x00, 0x00, 0x02, 0x02, 40]);
        // Unknown flights get the alert that fits their defect; plaintext gets nothing.
        assert_eq!(refusal_bytes(&kind_of(&[0x00, 0xff, 0x13, 0x37])), [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 50]);
        assert_eq!(refusal_bytes(&kind_of(&[0x17, 0x03, 0x03, 0x00, 0x01])), [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 10]);
        assert!(refusal_bytes(&kind_of(b"EHLO x\r\n")).is_empty());
    }
}

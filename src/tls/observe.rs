//! What the server's first flight said, read from the raw TLS records before rustls
//! sees them: whether a ServerHello arrived, its version and random (for the
//! RFC 8446 section 4.1.3 downgrade sentinel, which rustls does not check when TLS
//! 1.3 was not offered), or the alert that came instead. The failure classifier
//! needs exactly these facts: a failure before the ServerHello may be intolerance,
//! one after it never is.

/// The magic random of a HelloRetryRequest (RFC 8446 section 4.1.3).
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91, 0xc2, 0xa2, 0x11,
    0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// The last 8 bytes of ServerHello.random of a TLS 1.3 server negotiating TLS 1.2.
pub const DOWNGRADE_TLS12: [u8; 8] = *b"DOWNGRD\x01";
/// The same, negotiating TLS 1.1 or below.
pub const DOWNGRADE_TLS11: [u8; 8] = *b"DOWNGRD\x00";

/// The facts of a ServerHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerHelloFacts {
    /// legacy_version as sent.
    pub legacy_version: u16,
    /// The version from supported_versions, if the extension was there.
    pub selected_version: Option<u16>,
    /// The server random.
    pub random: [u8; 32],
    /// Whether this is a HelloRetryRequest.
    pub retry_request: bool,
}

impl ServerHelloFacts {
    /// The version the server chose.
    pub fn version(&self) -> u16 {
        self.selected_version.unwrap_or(self.legacy_version)
    }

    /// Whether the random carries a downgrade sentinel (only meaningful below TLS 1.3).
    pub fn downgrade_sentinel(&self) -> bool {
        !self.retry_request
            && self.version() < 0x0304
            && (self.random[24..] == DOWNGRADE_TLS12 || self.random[24..] == DOWNGRADE_TLS11)
    }
}

/// Observes the first records from the server. Feed it every raw byte received after
/// the ClientHello was sent; it stops looking once it knows what it needs.
#[derive(Clone, Debug, Default)]
pub struct FlightObserver {
    buf: Vec<u8>,
    done: bool,
    /// Raw bytes received from the server since the ClientHello.
    pub bytes: usize,
    /// The ServerHello (or HelloRetryRequest), once seen.
    pub server_hello: Option<ServerHelloFacts>,
    /// An alert (level, description) received before any ServerHello.
    pub alert_before_hello: Option<(u8, u8)>,
    /// The first bytes were not a TLS record at all.
    pub not_tls: bool,
}

/// Most bytes kept while looking for the ServerHello (a record is at most 2^14 + 256).
const MAX_KEEP: usize = 5 + (1 << 14) + 256;

impl FlightObserver {
    /// A fresh observer, for a new handshake.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether any server TLS byte has arrived.
    pub fn any_bytes(&self) -> bool {
        self.bytes > 0
    }

    /// Feeds raw bytes from the server.
    pub fn observe(&mut self, data: &[u8]) {
        self.bytes += data.len();
        if self.done {
            return;
        }
        self.buf.extend_from_slice(&data[..data.len().min(MAX_KEEP.saturating_sub(self.buf.len()))]);
        self.parse();
    }

    fn parse(&mut self) {
        let b = &self.buf;
        if b.is_empty() {
            return;
        }
        if !(0x14..=0x18).contains(&b[0]) || (b.len() > 1 && b[1] != 0x03) {
            self.not_tls = true;
            self.done = true;
            return;
        }
        if b.len() < 5 {
            return;
        }
        let len = u16::from_be_bytes([b[3], b[4]]) as usize;
        if b.len() < 5 + len.min(MAX_KEEP - 5) {
            return;
        }
        let body = &b[5..(5 + len).min(b.len())];
        match b[0] {
            0x15 if body.len() >= 2 => self.alert_before_hello = Some((body[0], body[1])),
            0x16 => self.server_hello = parse_server_hello(body),
            _ => {}
        }
        self.done = true;
        self.buf = Vec::new();
    }
}

fn parse_server_hello(hs: &[u8]) -> Option<ServerHelloFacts> {
    // Handshake header: type 2 (server_hello), 24-bit length.
    if hs.len() < 4 || hs[0] != 2 {
        return None;
    }
    let body = &hs[4..];
    let mut p = Parser(body);
    let legacy_version = p.u16()?;
    let random: [u8; 32] = p.take(32)?.try_into().ok()?;
    let sid = p.u8()? as usize;
    p.take(sid)?;
    p.u16()?; // cipher suite
    p.u8()?; // compression
    let mut selected_version = None;
    if let Some(ext_len) = p.u16() {
        let mut e = Parser(p.take(ext_len as usize)?);
        while let (Some(t), Some(l)) = (e.u16(), e.u16()) {
            let data = e.take(l as usize)?;
            if t == 0x002b && data.len() == 2 {
                selected_version = Some(u16::from_be_bytes([data[0], data[1]]));
            }
        }
    }
    Some(ServerHelloFacts { legacy_version, selected_version, random, retry_request: random == HRR_RANDOM })
}

struct Parser<'a>(&'a [u8]);

impl<'a> Parser<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

/// Builds a ServerHello record, for tests here and the fixture servers.
pub fn server_hello_record(version: u16, random: [u8; 32], supported_version: Option<u16>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&random);
    body.push(0); // empty session id
    body.extend_from_slice(&[0xc0, 0x2f]); // a cipher suite
    body.push(0);
    let mut exts = Vec::new();
    if let Some(v) = supported_version {
        exts.extend_from_slice(&[0x00, 0x2b, 0x00, 0x02]);
        exts.extend_from_slice(&v.to_be_bytes());
    }
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![2u8];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x03];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_with(tail: &[u8; 8]) -> [u8; 32] {
        let mut r = [7u8; 32];
        r[24..].copy_from_slice(tail);
        r
    }

    #[test]
    fn sees_a_tls12_server_hello_with_the_sentinel_one_byte_at_a_time() {
        let rec = server_hello_record(0x0303, random_with(&DOWNGRADE_TLS12), None);
        let mut o = FlightObserver::new();
        for b in &rec {
            o.observe(&[*b]);
        }
        let sh = o.server_hello.expect("server hello");
        assert_eq!(sh.version(), 0x0303);
        assert!(sh.downgrade_sentinel());
    }

    #[test]
    fn tls13_server_hello_is_not_a_downgrade() {
        let rec = server_hello_record(0x0303, random_with(&DOWNGRADE_TLS12), Some(0x0304));
        let mut o = FlightObserver::new();
        o.observe(&rec);
        assert!(!o.server_hello.unwrap().downgrade_sentinel());
        let rec = server_hello_record(0x0303, [1u8; 32], None);
        let mut o = FlightObserver::new();
        o.observe(&rec);
        assert!(!o.server_hello.unwrap().downgrade_sentinel());
    }

    #[test]
    fn hello_retry_request_is_recognised() {
        let rec = server_hello_record(0x0303, HRR_RANDOM, Some(0x0304));
        let mut o = FlightObserver::new();
        o.observe(&rec);
        assert!(o.server_hello.unwrap().retry_request);
    }

    #[test]
    fn alert_before_hello_and_non_tls() {
        let mut o = FlightObserver::new();
        o.observe(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 70]);
        assert_eq!(o.alert_before_hello, Some((2, 70)));
        assert!(o.server_hello.is_none());
        let mut o = FlightObserver::new();
        o.observe(b"250 ok\r\n");
        assert!(o.not_tls);
    }

    #[test]
    fn hostile_lengths_do_not_panic() {
        for data in [&[0x16u8, 0x03, 0x03, 0xff, 0xff][..], &[0x16, 0x03, 0x03, 0x00, 0x04, 2, 0xff, 0xff, 0xff], &[0x16]] {
            let mut o = FlightObserver::new();
            o.observe(data);
            assert!(o.server_hello.is_none());
        }
    }
}

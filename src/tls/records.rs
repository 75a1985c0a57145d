//! Record checks rustls makes without telling the peer, made here so that the peer
//! gets the alert RFC 8446 requires.
//!
//! Two protocol violations end a rustls connection with no alert at all (rustls
//! 0.23: `PeerMisbehaved::IllegalTlsInnerPlaintext` and
//! `PeerMisbehaved::MessageInterleavedWithHandshakeMessage` are returned as they are),
//! after which a `close_notify` from the application reads to the peer as an orderly
//! close:
//!
//! - a TLS 1.3 record whose inner plaintext has no non-zero byte, i.e. no content type
//!   (RFC 8446 section 5.4: "MUST terminate the connection with an unexpected_message
//!   alert");
//! - a record of another type between the fragments of a handshake message, such as
//!   application data inside a KeyUpdate split over two records (RFC 8446 section 5.1:
//!   "Handshake messages MUST NOT be interleaved with other record types").
//!
//! Every decrypted record passes through a decrypter of ours that wraps the provider's
//! (the one place rustls shows a custom provider each record with its type), which
//! sees both. It reports them to rustls as the one violation rustls answers with a
//! fatal `unexpected_message` of its own (a protected ChangeCipherSpec, RFC 8446
//! section 5), so the alert is sent encrypted by rustls' record layer, and notes the
//! real cause for the session to log and report (`take_violation`).

use std::cell::Cell;

use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, KeyBlockShape, MessageDecrypter, MessageEncrypter,
    Tls12AeadAlgorithm, Tls13AeadAlgorithm, UnsupportedOperationError,
};
use rustls::{ConnectionTrafficSecrets, ContentType, Error, PeerMisbehaved};

/// A violation this module caught, in words for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A TLS 1.3 record with no content type in its inner plaintext.
    NoContentType,
    /// A record of another type between the fragments of a handshake message.
    Interleaved(ContentType),
}

impl Violation {
    /// What happened, for the log and the report.
    pub fn describe(self) -> String {
        match self {
            Violation::NoContentType => {
                "a record with no content type (an all-zero TLS 1.3 inner plaintext, RFC 8446 section 5.4)".into()
            }
            Violation::Interleaved(t) => format!(
                "a {t:?} record between the fragments of a handshake message (RFC 8446 section 5.1)"
            ),
        }
    }
}

thread_local! {
    static VIOLATION: Cell<Option<Violation>> = const { Cell::new(None) };
}

/// The violation the last failed `process_new_packets` on this thread was about, once.
pub fn take_violation() -> Option<Violation> {
    VIOLATION.with(Cell::take)
}

/// What rustls is told, so that it sends `unexpected_message` itself.
fn refuse(v: Violation) -> Error {
    VIOLATION.with(|c| c.set(Some(v)));
    Error::PeerMisbehaved(PeerMisbehaved::IllegalMiddleboxChangeCipherSpec)
}

/// Follows the handshake-message framing across records: how much of the message in
/// progress is still to come (its 4-byte header included).
#[derive(Default)]
struct Framing {
    header: [u8; 4],
    header_len: usize,
    body_left: usize,
}

impl Framing {
    fn pending(&self) -> bool {
        self.header_len > 0 || self.body_left > 0
    }

    fn feed(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(b.len());
                self.body_left -= n;
                b = &b[n..];
                continue;
            }
            let n = (4 - self.header_len).min(b.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&b[..n]);
            self.header_len += n;
            b = &b[n..];
            if self.header_len == 4 {
                self.body_left = u32::from_be_bytes([0, self.header[1], self.header[2], self.header[3]]) as usize;
                self.header_len = 0;
            }
        }
    }
}

/// The provider's decrypter, with the two checks.
struct Checked {
    inner: Box<dyn MessageDecrypter>,
    framing: Framing,
}

impl MessageDecrypter for Checked {
    fn decrypt<'a>(&mut self, msg: InboundOpaqueMessage<'a>, seq: u64) -> Result<InboundPlainMessage<'a>, Error> {
        match self.inner.decrypt(msg, seq) {
            Err(Error::PeerMisbehaved(PeerMisbehaved::IllegalTlsInnerPlaintext)) => Err(refuse(Violation::NoContentType)),
            Ok(m) if m.typ == ContentType::Handshake => {
                self.framing.feed(m.payload);
                Ok(m)
            }
            Ok(m) if self.framing.pending() => Err(refuse(Violation::Interleaved(m.typ))),
            other => other,
        }
    }
}

fn checked(inner: Box<dyn MessageDecrypter>) -> Box<dyn MessageDecrypter> {
    Box::new(Checked { inner, framing: Framing::default() })
}

/// A TLS 1.3 AEAD whose decrypters check records (see the module text).
pub struct Checked13(pub &'static dyn Tls13AeadAlgorithm);

impl Tls13AeadAlgorithm for Checked13 {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        self.0.encrypter(key, iv)
    }
    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        checked(self.0.decrypter(key, iv))
    }
    fn key_len(&self) -> usize {
        self.0.key_len()
    }
    fn extract_keys(&self, key: AeadKey, iv: Iv) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        self.0.extract_keys(key, iv)
    }
    fn fips(&self) -> bool {
        self.0.fips()
    }
}

/// A TLS 1.2 AEAD whose decrypters check the handshake framing (TLS 1.2 has no inner
/// content type; RFC 5246 section 6.2.1 has no interleaving rule, but nothing
/// legitimate interleaves, and rustls refuses it the same way).
pub struct Checked12(pub &'static dyn Tls12AeadAlgorithm);

impl Tls12AeadAlgorithm for Checked12 {
    fn encrypter(&self, key: AeadKey, iv: &[u8], extra: &[u8]) -> Box<dyn MessageEncrypter> {
        self.0.encrypter(key, iv, extra)
    }
    fn decrypter(&self, key: AeadKey, iv: &[u8]) -> Box<dyn MessageDecrypter> {
        checked(self.0.decrypter(key, iv))
    }
    fn key_block_shape(&self) -> KeyBlockShape {
        self.0.key_block_shape()
    }
    fn extract_keys(&self, key: AeadKey, iv: &[u8], explicit: &[u8]) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        self.0.extract_keys(key, iv, explicit)
    }
    fn fips(&self) -> bool {
        self.0.fips()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_follows_messages_across_records() {
        let mut f = Framing::default();
        // A whole NewSessionTicket-sized message, then a KeyUpdate split 2 + 3.
        f.feed(&[4, 0, 0, 3, 1, 2, 3]);
        assert!(!f.pending());
        f.feed(&[24, 0]);
        assert!(f.pending());
        f.feed(&[0, 1]);
        assert!(f.pending());
        f.feed(&[0]);
        assert!(!f.pending());
        // Two messages in one record, the second cut in its body.
        f.feed(&[20, 0, 0, 1, 9, 4, 0, 0, 5, 1]);
        assert!(f.pending());
        f.feed(&[2, 3, 4, 5]);
        assert!(!f.pending());
        // A zero-length message is complete at its header.
        f.feed(&[5, 0, 0, 0]);
        assert!(!f.pending());
    }
}

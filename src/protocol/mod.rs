//! Pure dialogue code: no I/O, no TLS. Line framing with limits, reply parsers, and
//! the STARTTLS state machines of each protocol, client and server side. Everything
//! here is fed bytes and answers with bytes or decisions, so it is tested with byte
//! strings, one byte at a time if need be.
//!
//! May not touch: a transport, rustls, the memory or a pointer. It says what a reply
//! means (a go, a refusal, injected bytes); `session` decides what to do about it.

pub mod client;
pub mod imap;
pub mod lines;
pub mod nntp;
pub mod pop3;
pub mod server;
pub mod sieve;
pub mod smtp;

/// The application protocols the library knows.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// SMTP (RFC 5321) with STARTTLS (RFC 3207); submission (RFC 6409) is SMTP too.
    Smtp = 0,
    /// LMTP (RFC 2033): SMTP with LHLO.
    Lmtp = 1,
    /// IMAP (RFC 9051).
    Imap = 2,
    /// POP3 (RFC 1939).
    Pop3 = 3,
    /// NNTP (RFC 3977).
    Nntp = 4,
    /// ManageSieve (RFC 5804).
    Sieve = 5,
}

impl Proto {
    /// The protocol for a number from C.
    pub fn from_u32(n: u32) -> Option<Proto> {
        Some(match n {
            0 => Proto::Smtp,
            1 => Proto::Lmtp,
            2 => Proto::Imap,
            3 => Proto::Pop3,
            4 => Proto::Nntp,
            5 => Proto::Sieve,
            _ => return None,
        })
    }

    /// The name used in logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Smtp => "smtp",
            Proto::Lmtp => "lmtp",
            Proto::Imap => "imap",
            Proto::Pop3 => "pop3",
            Proto::Nntp => "nntp",
            Proto::Sieve => "sieve",
        }
    }

    /// Whether this release has the STARTTLS dialogue for the protocol.
    pub fn supported(self) -> bool {
        true
    }
}

/// Bounds on what a peer may send before TLS. Exceeding one is a clear error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest line accepted, in bytes, without its line ending (RFC 5321 allows 512).
    pub max_line: usize,
    /// Most lines in one multi-line reply.
    pub max_reply_lines: usize,
    /// Most plaintext bytes received from the peer before TLS starts.
    pub max_pretls_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_line: 4096, max_reply_lines: 128, max_pretls_bytes: 64 * 1024 }
    }
}

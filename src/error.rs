//! Result codes and the error type every layer carries up unchanged.
//!
//! The numbers are part of the C ABI: they are stable, documented, and never reused.
//! A code names the cause; the `Error` carrying it also keeps the full detail, which
//! the C side reads as the session's last-error message.

use std::fmt;

/// A stable result code: what the C side sees as `mailtls_result`.
///
/// Ranges: 0-99 progress, 100-199 caller errors, 200-299 configuration, 300-399 I/O,
/// 400-499 the peer's plaintext dialogue, 500-599 TLS, 600-699 server-side STARTTLS,
/// 700-799 the destination's authentication policy (DANE, MTA-STS).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// Success.
    Ok = 0,
    /// The transport would block (EAGAIN/EWOULDBLOCK); call again when it is ready.
    WouldBlock = 1,
    /// The peer closed the connection cleanly (TLS close_notify or EOF) after the session was established.
    Closed = 2,
    /// Server: the client's hello was handed off to the application's legacy TLS engine,
    /// which owns the connection from now on (the bytes already read are in the session).
    Handoff = 3,

    /// A required pointer argument was NULL.
    NullParameter = 100,
    /// An argument is out of range or malformed.
    InvalidParameter = 101,
    /// The call does not fit the object's current state.
    InvalidState = 102,
    /// The library panicked; the object is unusable. This is a bug, please report it.
    Panic = 103,
    /// The feature or protocol is not available in this build or release.
    Unsupported = 104,
    /// The caller's buffer is too small for the result.
    BufferTooSmall = 105,
    /// A TLS-RPT record line is malformed (the detail says where and why).
    TlsrptRecordInvalid = 106,

    /// The certificate chain could not be read or parsed.
    CertificateLoad = 200,
    /// The private key could not be read or parsed.
    PrivateKeyLoad = 201,
    /// The private key does not belong to the certificate.
    KeyMismatch = 202,
    /// The trust anchors (CA file or system store) could not be loaded.
    TrustAnchors = 203,
    /// A server role configuration has no usable certificate and key.
    NoCertificate = 204,
    /// rustls refused the configuration.
    TlsConfig = 205,
    /// The session ticket key file could not be read, is open to group or others, or
    /// is malformed (the detail names the file and the mode or the line).
    TicketKeyLoad = 206,

    /// A transport callback or system call failed (the errno is in the message).
    Io = 300,
    /// A step took longer than the configured timeout, or a callback returned ETIMEDOUT.
    Timeout = 301,
    /// The peer closed the connection in the middle of the dialogue or handshake.
    PeerClosed = 302,
    /// Connecting a new transport failed.
    Connect = 303,

    /// The peer sent something that is not valid for the protocol.
    Protocol = 400,
    /// A line from the peer exceeded the line-length limit.
    LineTooLong = 401,
    /// A reply from the peer had more lines than the limit.
    TooManyLines = 402,
    /// The peer sent more plaintext before TLS than the limit.
    TooMuchData = 403,
    /// The server's greeting refused the session (for example SMTP 554).
    GreetingRefused = 404,
    /// The server did not offer STARTTLS and the policy requires TLS.
    StarttlsNotOffered = 405,
    /// The server refused STARTTLS with a temporary error (for example 454).
    StarttlsRefusedTemporary = 406,
    /// The server refused STARTTLS with a permanent error (for example 554).
    StarttlsRefusedPermanent = 407,
    /// The server answered STARTTLS with something that is not a go (for example 250 or 354).
    StarttlsBadReply = 408,
    /// Bytes arrived after the server's go reply and before the TLS handshake: reply injection.
    ReplyInjection = 409,
    /// Plaintext commands were pipelined after a client's STARTTLS: command injection.
    CommandInjection = 410,
    /// The server refused the capability query (EHLO, LHLO).
    CapabilityRefused = 411,
    /// The IMAP server pre-authenticated the connection in plaintext (`PREAUTH`):
    /// STARTTLS is impossible there (RFC 9051 section 6.2.1).
    PreauthPlaintext = 412,

    /// The TLS handshake failed (the detail names the TLS error).
    TlsHandshake = 500,
    /// The peer certificate does not match the reference name.
    CertificateNameMismatch = 501,
    /// The peer certificate chain does not lead to a trusted anchor.
    CertificateUntrusted = 502,
    /// The peer certificate is expired or not yet valid.
    CertificateExpired = 503,
    /// The peer certificate is invalid for another reason.
    CertificateInvalid = 504,
    /// The peer sent a fatal TLS alert.
    TlsAlertReceived = 505,
    /// A TLS error after the handshake (bad record, decryption failure).
    TlsRecord = 506,
    /// The server signalled a TLS version downgrade (RFC 8446 section 4.1.3 sentinel).
    DowngradeDetected = 507,
    /// A fallback was refused: the peer accepted this hello recently (possible active attack).
    DowngradeSuspected = 508,
    /// A peer that negotiated TLS before no longer offers STARTTLS (possible stripping).
    StrippingSuspected = 509,
    /// Every rung of the fallback ladder failed.
    LadderExhausted = 510,
    /// The handshake failed in a way a more conservative hello may avoid: retry on a new
    /// connection with the rung the report names.
    RetryNeeded = 511,
    /// The peer spoke plaintext where TLS was expected (an implicit-TLS port, RFC 8314).
    NotTls = 512,

    /// STARTTLS cannot start now (no usable certificate); `454` or its equivalent was sent.
    TlsUnavailable = 600,
    /// STARTTLS was received while TLS is already active; it was refused.
    TlsAlreadyActive = 601,
    /// Server: the client's hello format is refused by configuration; an alert was sent.
    HelloRefused = 604,
    /// The server requires TLS and the command was refused (`530 5.7.0`).
    TlsRequired = 602,
    /// TLS has just started: the client must say EHLO again before this command.
    StateResetRequired = 603,
    /// Server: STARTTLS outside the state that allows it (after authentication).
    StarttlsNotAllowed = 605,

    /// DANE: no usable TLSA record matches the server's certificate chain.
    DaneNoMatch = 700,
    /// DANE: the DNSSEC lookup of the TLSA (or MX) records was bogus: defer.
    DnssecBogus = 701,
    /// Policy dane-only: no DNSSEC-secure TLSA record for the MX host: defer.
    DaneRequired = 702,
    /// DANE: TLSA records were found, but none is usable (usages 0 and 1, unknown
    /// selectors or matching types, malformed data): dane-only defers.
    TlsaUnusable = 703,
    /// MTA-STS enforce: the MX host matches none of the policy's `mx` patterns: defer.
    StsMxMismatch = 704,
    /// The MTA-STS policy text is not a valid STSv1 policy (RFC 8461 section 3.2).
    StsPolicyInvalid = 705,
}

impl Code {
    /// Every code, in numeric order; used for `mailtls_result_str` tests and docs.
    pub const ALL: &'static [Code] = &[
        Code::Ok, Code::WouldBlock, Code::Closed, Code::Handoff,
        Code::NullParameter, Code::InvalidParameter, Code::InvalidState, Code::Panic,
        Code::Unsupported, Code::BufferTooSmall, Code::TlsrptRecordInvalid,
        Code::CertificateLoad, Code::PrivateKeyLoad, Code::KeyMismatch, Code::TrustAnchors,
        Code::NoCertificate, Code::TlsConfig, Code::TicketKeyLoad,
        Code::Io, Code::Timeout, Code::PeerClosed, Code::Connect,
        Code::Protocol, Code::LineTooLong, Code::TooManyLines, Code::TooMuchData,
        Code::GreetingRefused, Code::StarttlsNotOffered, Code::StarttlsRefusedTemporary,
        Code::StarttlsRefusedPermanent, Code::StarttlsBadReply, Code::ReplyInjection,
        Code::CommandInjection, Code::CapabilityRefused, Code::PreauthPlaintext,
        Code::TlsHandshake, Code::CertificateNameMismatch, Code::CertificateUntrusted,
        Code::CertificateExpired, Code::CertificateInvalid, Code::TlsAlertReceived,
        Code::TlsRecord, Code::DowngradeDetected, Code::DowngradeSuspected, Code::StrippingSuspected,
        Code::LadderExhausted, Code::RetryNeeded, Code::NotTls,
        Code::TlsUnavailable, Code::TlsAlreadyActive, Code::TlsRequired,
        Code::StateResetRequired, Code::HelloRefused, Code::StarttlsNotAllowed,
        Code::DaneNoMatch, Code::DnssecBogus, Code::DaneRequired, Code::TlsaUnusable,
        Code::StsMxMismatch, Code::StsPolicyInvalid,
    ];

    /// The code for a number, if it is one.
    pub fn from_u32(n: u32) -> Option<Code> {
        Self::ALL.iter().copied().find(|c| *c as u32 == n)
    }

    /// A short, stable, human-readable description.
    pub fn description(self) -> &'static str {
        match self {
            Code::Ok => "success",
            Code::WouldBlock => "would block: call again when the transport is ready",
            Code::Closed => "the peer closed the connection",
            Code::Handoff => "handed off to the legacy TLS engine",
            Code::HelloRefused => "the client's hello format is refused",
            Code::NullParameter => "a required argument was NULL",
            Code::InvalidParameter => "an argument is invalid",
            Code::InvalidState => "the call does not fit the object's state",
            Code::Panic => "internal error (panic caught at the C boundary)",
            Code::Unsupported => "not supported by this release",
            Code::BufferTooSmall => "buffer too small",
            Code::TlsrptRecordInvalid => "malformed TLS-RPT record",
            Code::CertificateLoad => "cannot load the certificate chain",
            Code::PrivateKeyLoad => "cannot load the private key",
            Code::KeyMismatch => "the private key does not match the certificate",
            Code::TrustAnchors => "cannot load the trust anchors",
            Code::NoCertificate => "no usable certificate and key",
            Code::TlsConfig => "TLS configuration refused",
            Code::TicketKeyLoad => "cannot load the session ticket keys",
            Code::Io => "I/O error",
            Code::Timeout => "timed out",
            Code::PeerClosed => "the peer closed the connection unexpectedly",
            Code::Connect => "cannot connect",
            Code::Protocol => "protocol error from the peer",
            Code::LineTooLong => "line from the peer too long",
            Code::TooManyLines => "reply from the peer has too many lines",
            Code::TooMuchData => "too much plaintext from the peer before TLS",
            Code::GreetingRefused => "the server refused the session in its greeting",
            Code::StarttlsNotOffered => "STARTTLS not offered",
            Code::StarttlsRefusedTemporary => "STARTTLS refused (temporary)",
            Code::StarttlsRefusedPermanent => "STARTTLS refused (permanent)",
            Code::StarttlsBadReply => "the reply to STARTTLS is not a go",
            Code::ReplyInjection => "reply injection: bytes after the go reply",
            Code::CommandInjection => "command injection: commands pipelined after STARTTLS",
            Code::CapabilityRefused => "the capability query was refused",
            Code::PreauthPlaintext => "pre-authenticated in plaintext: STARTTLS impossible",
            Code::NotTls => "plaintext where TLS was expected",
            Code::StarttlsNotAllowed => "STARTTLS not allowed in this state",
            Code::TlsHandshake => "TLS handshake failed",
            Code::CertificateNameMismatch => "certificate does not match the server name",
            Code::CertificateUntrusted => "certificate not trusted",
            Code::CertificateExpired => "certificate expired or not yet valid",
            Code::CertificateInvalid => "certificate invalid",
            Code::TlsAlertReceived => "fatal TLS alert received",
            Code::TlsRecord => "TLS record error",
            Code::DowngradeDetected => "TLS downgrade detected",
            Code::DowngradeSuspected => "downgrade suspected: fallback refused",
            Code::StrippingSuspected => "STARTTLS stripping suspected",
            Code::LadderExhausted => "every rung of the fallback ladder failed",
            Code::RetryNeeded => "retry on a new connection with a more conservative hello",
            Code::TlsUnavailable => "TLS not available",
            Code::TlsAlreadyActive => "TLS already active",
            Code::TlsRequired => "TLS required",
            Code::StateResetRequired => "EHLO required after STARTTLS",
            Code::DaneNoMatch => "no TLSA record matches the server's certificate",
            Code::DnssecBogus => "the DNSSEC lookup was bogus",
            Code::DaneRequired => "no DNSSEC-secure TLSA record, and DANE is required",
            Code::TlsaUnusable => "no usable TLSA record",
            Code::StsMxMismatch => "the MX host is not in the MTA-STS policy",
            Code::StsPolicyInvalid => "invalid MTA-STS policy",
        }
    }

    /// A short stable identifier, for logs and JSON (`"reply-injection"`).
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::WouldBlock => "would-block",
            Code::Closed => "closed",
            Code::Handoff => "handoff",
            Code::HelloRefused => "hello-refused",
            Code::NullParameter => "null-parameter",
            Code::InvalidParameter => "invalid-parameter",
            Code::InvalidState => "invalid-state",
            Code::Panic => "panic",
            Code::Unsupported => "unsupported",
            Code::BufferTooSmall => "buffer-too-small",
            Code::TlsrptRecordInvalid => "tlsrpt-record-invalid",
            Code::CertificateLoad => "certificate-load",
            Code::PrivateKeyLoad => "private-key-load",
            Code::KeyMismatch => "key-mismatch",
            Code::TrustAnchors => "trust-anchors",
            Code::NoCertificate => "no-certificate",
            Code::TlsConfig => "tls-config",
            Code::TicketKeyLoad => "ticket-key-load",
            Code::Io => "io",
            Code::Timeout => "timeout",
            Code::PeerClosed => "peer-closed",
            Code::Connect => "connect",
            Code::Protocol => "protocol",
            Code::LineTooLong => "line-too-long",
            Code::TooManyLines => "too-many-lines",
            Code::TooMuchData => "too-much-data",
            Code::GreetingRefused => "greeting-refused",
            Code::StarttlsNotOffered => "starttls-not-offered",
            Code::StarttlsRefusedTemporary => "starttls-refused-temporary",
            Code::StarttlsRefusedPermanent => "starttls-refused-permanent",
            Code::StarttlsBadReply => "starttls-bad-reply",
            Code::ReplyInjection => "reply-injection",
            Code::CommandInjection => "command-injection",
            Code::CapabilityRefused => "capability-refused",
            Code::PreauthPlaintext => "preauth-plaintext",
            Code::NotTls => "not-tls",
            Code::StarttlsNotAllowed => "starttls-not-allowed",
            Code::TlsHandshake => "tls-handshake",
            Code::CertificateNameMismatch => "certificate-name-mismatch",
            Code::CertificateUntrusted => "certificate-untrusted",
            Code::CertificateExpired => "certificate-expired",
            Code::CertificateInvalid => "certificate-invalid",
            Code::TlsAlertReceived => "tls-alert-received",
            Code::TlsRecord => "tls-record",
            Code::DowngradeDetected => "downgrade-detected",
            Code::DowngradeSuspected => "downgrade-suspected",
            Code::StrippingSuspected => "stripping-suspected",
            Code::LadderExhausted => "ladder-exhausted",
            Code::RetryNeeded => "retry-needed",
            Code::TlsUnavailable => "tls-unavailable",
            Code::TlsAlreadyActive => "tls-already-active",
            Code::TlsRequired => "tls-required",
            Code::StateResetRequired => "state-reset-required",
            Code::DaneNoMatch => "dane-no-match",
            Code::DnssecBogus => "dnssec-bogus",
            Code::DaneRequired => "dane-required",
            Code::TlsaUnusable => "tlsa-unusable",
            Code::StsMxMismatch => "sts-mx-mismatch",
            Code::StsPolicyInvalid => "sts-policy-invalid",
        }
    }
}

/// An error: a stable code plus the full detail of what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// The cause, as the C side sees it.
    pub code: Code,
    /// Everything known about it, for the last-error message and the log.
    pub detail: String,
}

impl Error {
    /// An error with a code and a detailed message.
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Error { code, detail: detail.into() }
    }

    /// The error for an `io::Error` from a transport: would-block, timeout and EOF kept apart.
    pub fn from_io(e: &std::io::Error, doing: &str) -> Self {
        use std::io::ErrorKind;
        match e.kind() {
            ErrorKind::WouldBlock => Error::new(Code::WouldBlock, format!("{doing}: would block")),
            ErrorKind::TimedOut => Error::new(Code::Timeout, format!("{doing}: timed out ({e})")),
            ErrorKind::UnexpectedEof => Error::new(Code::PeerClosed, format!("{doing}: {e}")),
            _ => Error::new(Code::Io, format!("{doing}: {e}")),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code.description(), self.code as u32, self.detail)
    }
}

impl std::error::Error for Error {}

/// Shorthand for results carrying our error.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(*c as u32), "duplicate number {}", *c as u32);
            assert_eq!(Code::from_u32(*c as u32), Some(*c));
            assert!(!c.description().is_empty());
        }
        assert_eq!(Code::from_u32(99999), None);
    }

    #[test]
    fn io_errors_keep_would_block_and_timeout_apart() {
        let wb = std::io::Error::from_raw_os_error(libc::EAGAIN);
        assert_eq!(Error::from_io(&wb, "read").code, Code::WouldBlock);
        let to = std::io::Error::from_raw_os_error(libc::ETIMEDOUT);
        assert_eq!(Error::from_io(&to, "read").code, Code::Timeout);
        let rst = std::io::Error::from_raw_os_error(libc::ECONNRESET);
        assert_eq!(Error::from_io(&rst, "read").code, Code::Io);
    }
}

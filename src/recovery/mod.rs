//! Recovery from TLS-intolerant peers: the rungs of the fallback ladder, the classes
//! of a failed attempt and the moves they allow (`classify`), and the intolerance
//! memory (`memory`) (DESIGN.md, "Recovery").
//!
//! May not touch: a transport, a TLS connection or a pointer. It classifies facts it is
//! given and keeps records; the attempt loop that acts on them is `session::ladder`.

pub mod classify;
pub mod memory;

use rustls::crypto::aws_lc_rs::kx_group;
use rustls::crypto::SupportedKxGroup;
use rustls::ClientConfig;

use crate::error::Code;

static TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// A rung of the fallback ladder: one prebuilt ClientHello shape.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rung {
    /// TLS 1.3 and 1.2, post-quantum hybrid key share first (rustls' default, ~1.5 KB hello).
    Modern = 0,
    /// Same versions, X25519 share first; the hybrid stays reachable by HelloRetryRequest.
    Compact = 1,
    /// TLS 1.3 and 1.2 without any post-quantum group.
    Classic = 2,
    /// TLS 1.2 only, no resumption.
    Tls12 = 3,
}

impl Rung {
    /// Every rung, top first.
    pub const ALL: [Rung; 4] = [Rung::Modern, Rung::Compact, Rung::Classic, Rung::Tls12];

    /// The name used in logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Rung::Modern => "modern",
            Rung::Compact => "compact",
            Rung::Classic => "classic",
            Rung::Tls12 => "tls12",
        }
    }

    /// The TLS versions this rung offers.
    pub fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        match self {
            Rung::Tls12 => TLS12_ONLY,
            _ => rustls::DEFAULT_VERSIONS,
        }
    }

    /// The key-exchange groups, in preference order. P-256 is in every rung: some
    /// servers refuse a TLS 1.2 hello that offers only X25519.
    pub fn kx_groups(self) -> Vec<&'static dyn SupportedKxGroup> {
        match self {
            Rung::Modern => vec![kx_group::X25519MLKEM768, kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
            Rung::Compact => vec![kx_group::X25519, kx_group::X25519MLKEM768, kx_group::SECP256R1, kx_group::SECP384R1],
            Rung::Classic | Rung::Tls12 => vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        }
    }

    /// Settings that are not part of the provider.
    pub fn adjust(self, cfg: &mut ClientConfig) {
        if self == Rung::Tls12 {
            cfg.resumption = rustls::client::Resumption::disabled();
        }
    }
}

/// The class of a failed attempt, from what was seen on the wire.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// The attempt did not fail.
    None = 0,
    /// The peer choked on the hello (alert, reset or EOF before any ServerHello).
    Intolerance = 1,
    /// The peer speaks only what rustls will not (old versions, CBC, RSA key exchange).
    Incompatible = 2,
    /// The certificate failed verification.
    Certificate = 3,
    /// STARTTLS was refused or not offered.
    Refused = 4,
    /// Connection-level failure (connect, reset after the handshake).
    Network = 5,
    /// A step timed out.
    Timeout = 6,
    /// Signs of an active attacker: injection, downgrade sentinel, stripping.
    Attack = 7,
    /// Anything else: a protocol error, a local limit.
    Other = 8,
}

impl FailureClass {
    /// Every class.
    pub const ALL: [FailureClass; 9] = [
        FailureClass::None,
        FailureClass::Intolerance,
        FailureClass::Incompatible,
        FailureClass::Certificate,
        FailureClass::Refused,
        FailureClass::Network,
        FailureClass::Timeout,
        FailureClass::Attack,
        FailureClass::Other,
    ];

    /// The name used in logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            FailureClass::None => "none",
            FailureClass::Intolerance => "intolerance",
            FailureClass::Incompatible => "incompatible",
            FailureClass::Certificate => "certificate",
            FailureClass::Refused => "refused",
            FailureClass::Network => "network",
            FailureClass::Timeout => "timeout",
            FailureClass::Attack => "attack",
            FailureClass::Other => "other",
        }
    }

    /// The class of a failure outside the handshake (the plaintext dialogue, or a
    /// server's STARTTLS): never intolerance, which only a first flight can show.
    pub fn of_dialogue(code: Code) -> FailureClass {
        match code {
            Code::Ok => FailureClass::None,
            Code::CertificateNameMismatch
            | Code::CertificateUntrusted
            | Code::CertificateExpired
            | Code::CertificateInvalid => FailureClass::Certificate,
            Code::StarttlsNotOffered
            | Code::StarttlsRefusedTemporary
            | Code::StarttlsRefusedPermanent
            | Code::StarttlsBadReply => FailureClass::Refused,
            Code::ReplyInjection
            | Code::CommandInjection
            | Code::DowngradeDetected
            | Code::DowngradeSuspected
            | Code::StrippingSuspected => FailureClass::Attack,
            Code::Timeout => FailureClass::Timeout,
            Code::Io | Code::PeerClosed | Code::Connect => FailureClass::Network,
            Code::LadderExhausted => FailureClass::Intolerance,
            _ => FailureClass::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rung_keeps_p256() {
        for r in Rung::ALL {
            assert!(r.kx_groups().iter().any(|g| g.name() == rustls::NamedGroup::secp256r1), "{r:?}");
        }
        assert_eq!(Rung::Tls12.versions().len(), 1);
    }
}

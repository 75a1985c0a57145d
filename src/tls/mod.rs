//! rustls glue: client configs (one per ladder rung), server configs, certificate
//! policies, session tickets, the record checks rustls leaves out (`records`), the
//! server's hello sniffer, and the facts about a peer certificate that go into the report.
//!
//! May not touch: a transport, a protocol dialogue or a pointer. It builds and reads
//! TLS objects; when to start, retry or give up is `session`'s.

pub mod certinfo;
pub mod client;
pub mod observe;
pub mod provider;
pub mod records;
pub mod server;
pub mod sniff;
pub mod tickets;

use crate::error::{Code, Error};

/// Maps a rustls error to our code, keeping rustls' own words as the detail.
pub fn map_error(e: &rustls::Error, during: &str) -> Error {
    use rustls::CertificateError as C;
    let code = match e {
        rustls::Error::InvalidCertificate(ce) => match ce {
            C::NotValidForName | C::NotValidForNameContext { .. } => Code::CertificateNameMismatch,
            C::UnknownIssuer | C::UnknownRevocationStatus | C::BadSignature | C::Revoked => {
                Code::CertificateUntrusted
            }
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
                Code::CertificateExpired
            }
            // A DANE or MTA-STS verdict keeps its own code.
            C::Other(o) => match o.0.downcast_ref::<crate::auth::AuthFailure>() {
                Some(f) => return Error::new(f.code, format!("{during}: {}", f.detail)),
                None => Code::CertificateInvalid,
            },
            _ => Code::CertificateInvalid,
        },
        rustls::Error::AlertReceived(_) => Code::TlsAlertReceived,
        rustls::Error::PeerMisbehaved(rustls::PeerMisbehaved::AttemptedDowngradeToTls12WhenTls13IsSupported) => {
            Code::DowngradeDetected
        }
        // After the handshake, whatever breaks is a record error, not a handshake failure.
        _ if during == "record" => Code::TlsRecord,
        _ => Code::TlsHandshake,
    };
    Error::new(code, format!("{during}: {e}"))
}

/// The RFC 8460 (TLS-RPT) result type that fits a failure code, where one does.
pub fn rfc8460_result_type(code: Code) -> Option<&'static str> {
    Some(match code {
        Code::StarttlsNotOffered
        | Code::StarttlsRefusedTemporary
        | Code::StarttlsRefusedPermanent
        | Code::PreauthPlaintext => {
            "starttls-not-supported"
        }
        Code::CertificateNameMismatch => "certificate-host-mismatch",
        Code::CertificateUntrusted => "certificate-not-trusted",
        Code::CertificateExpired => "certificate-expired",
        Code::DaneNoMatch => "certificate-not-trusted",
        Code::DnssecBogus => "dnssec-invalid",
        Code::DaneRequired => "dane-required",
        Code::TlsaUnusable => "tlsa-invalid",
        Code::StsPolicyInvalid => "sts-policy-invalid",
        Code::StsMxMismatch => "validation-failure",
        Code::StarttlsBadReply
        | Code::ReplyInjection
        | Code::NotTls
        | Code::TlsHandshake
        | Code::TlsAlertReceived
        | Code::CertificateInvalid
        | Code::DowngradeDetected
        | Code::DowngradeSuspected
        | Code::StrippingSuspected
        | Code::LadderExhausted
        | Code::RetryNeeded => "validation-failure",
        _ => return None,
    })
}

/// A printable TLS version name ("TLSv1.3").
pub fn version_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        other => format!("{other:?}"),
    }
}

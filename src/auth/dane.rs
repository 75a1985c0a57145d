//! The DANE certificate check of RFC 7672 section 3, as a rustls verifier.
//!
//! DANE-EE(3): the server's own certificate or public key is named by a record; no
//! name, no validity dates, no chain are checked (RFC 7672 section 3.1.1). DANE-TA(2):
//! a record names a trust anchor (a certificate or a public key, self-signed or not);
//! the chain must lead from the server's certificate to it, and the certificate must
//! carry one of the reference names (RFC 7672 sections 3.1.2 and 3.2.2): the TLSA base
//! domain, the MX host name, the next-hop domain. The anchor may be in the chain the
//! server sent, or only in the record (a full-certificate record, or a full public
//! key record whose subject is the issuer of the chain's last certificate). Usages 0
//! and 1 never get here (they are unusable for SMTP). Either usage suffices: DANE-EE
//! and DANE-TA records of one RRset are alternatives, never both required.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use super::tlsa::{Tlsa, DANE_EE, DANE_TA};
use super::AuthFailure;
use crate::error::Code;
use crate::tls::client::RecordOnly;

/// Checks a server's chain against a TLSA RRset (its usable records only).
#[derive(Debug)]
pub struct DaneVerifier {
    records: Vec<Tlsa>,
    names: Vec<String>,
    provider: Arc<CryptoProvider>,
    /// The handshake signatures are checked as under every policy.
    signatures: RecordOnly,
}

impl DaneVerifier {
    /// A verifier for the usable records of an RRset and the reference names a
    /// DANE-TA chain's certificate may carry.
    pub fn new(records: &[Tlsa], names: &[String], provider: Arc<CryptoProvider>) -> Self {
        DaneVerifier {
            records: records.iter().filter(|r| r.usable()).cloned().collect(),
            names: names.to_vec(),
            signatures: RecordOnly::new(provider.clone()),
            provider,
        }
    }

    /// The verdict on a chain: Ok, or the failure with the code a report gives it.
    pub fn check(&self, ee: &CertificateDer<'_>, chain: &[CertificateDer<'_>], now: UnixTime) -> Result<String, AuthFailure> {
        if let Some(r) = self.records.iter().find(|r| r.usage == DANE_EE && r.matches(ee)) {
            return Ok(format!("DANE-EE record {} {} {} matches the server certificate", r.usage, r.selector, r.mtype));
        }
        let ta: Vec<&Tlsa> = self.records.iter().filter(|r| r.usage == DANE_TA).collect();
        let anchors = anchors(&ta, chain);
        if anchors.is_empty() {
            let ee_count = self.records.len() - ta.len();
            return Err(AuthFailure::new(
                Code::DaneNoMatch,
                format!(
                    "no TLSA record matches: {ee_count} DANE-EE record(s) match neither the certificate nor its key, and {} DANE-TA record(s) match no certificate of the chain ({} sent)",
                    ta.len(),
                    chain.len() + 1
                ),
            ));
        }
        let roots = RootCertStore { roots: anchors };
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| AuthFailure::new(Code::DaneNoMatch, format!("DANE-TA: {e}")))?;
        let mut last = None;
        for name in &self.names {
            let Ok(sn) = ServerName::try_from(name.clone()) else { continue };
            match webpki.verify_server_cert(ee, chain, &sn, &[], now) {
                Ok(_) => return Ok(format!("DANE-TA: the chain leads to a TLSA anchor, certificate valid for {name}")),
                Err(e) => last = Some(e),
            }
        }
        let e = last.map(|e| crate::tls::map_error(&e, "DANE-TA"));
        Err(match e {
            Some(e) if e.code == Code::CertificateNameMismatch => AuthFailure::new(
                e.code,
                format!("DANE-TA: the chain leads to a TLSA anchor, but the certificate names none of {}", self.names.join(", ")),
            ),
            // The anchor names the issuer, but the signatures do not lead there.
            Some(e) if e.code == Code::CertificateUntrusted => {
                AuthFailure::new(Code::DaneNoMatch, format!("{}: no chain from the server certificate to a TLSA anchor", e.detail))
            }
            Some(e) => AuthFailure::new(e.code, e.detail),
            None => AuthFailure::new(Code::DaneNoMatch, "DANE-TA: no reference name to check the certificate against"),
        })
    }
}

/// The trust anchors the DANE-TA records name: certificates of the chain they match,
/// full certificates they hold, and full public keys they hold (whose subject is the
/// issuer of the chain's last certificate: that is the only certificate such a key
/// could have signed without the server sending its own certificate).
fn anchors(ta: &[&Tlsa], chain: &[CertificateDer<'_>]) -> Vec<TrustAnchor<'static>> {
    let mut out = Vec::new();
    for cert in chain {
        if ta.iter().any(|r| r.matches(cert)) {
            if let Some(a) = anchor_of_cert(cert.as_ref()) {
                out.push(a);
            }
        }
    }
    for r in ta.iter().filter(|r| r.mtype == 0) {
        match r.selector {
            0 => out.extend(anchor_of_cert(&r.data)),
            1 => {
                let issuer = chain.last().and_then(|c| issuer_value(c.as_ref()));
                if let (Some(subject), Some(spki)) = (issuer, der_value(&r.data, 0x30)) {
                    out.push(TrustAnchor {
                        subject: subject.into(),
                        subject_public_key_info: spki.to_vec().into(),
                        name_constraints: None,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// The anchor a certificate makes: its subject and key, as webpki keeps them (the
/// contents of the two SEQUENCEs, without tag and length). The certificate's own
/// signature and dates are not the anchor's business.
fn anchor_of_cert(der: &[u8]) -> Option<TrustAnchor<'static>> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = der_value(c.tbs_certificate.subject.as_raw(), 0x30)?;
    let spki = der_value(c.tbs_certificate.subject_pki.raw, 0x30)?;
    Some(TrustAnchor {
        subject: subject.to_vec().into(),
        subject_public_key_info: spki.to_vec().into(),
        name_constraints: None,
    })
}

fn issuer_value(der: &[u8]) -> Option<Vec<u8>> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    der_value(c.tbs_certificate.issuer.as_raw(), 0x30).map(<[u8]>::to_vec)
}

/// The contents of one DER element with tag `tag` that is the whole of `der`.
fn der_value(der: &[u8], tag: u8) -> Option<&[u8]> {
    let (&t, rest) = der.split_first()?;
    if t != tag {
        return None;
    }
    let (&l, rest) = rest.split_first()?;
    let (len, rest) = if l < 0x80 {
        (l as usize, rest)
    } else {
        let n = (l & 0x7f) as usize;
        if n == 0 || n > 3 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| a << 8 | b as usize);
        (len, &rest[n..])
    };
    (rest.len() == len).then_some(rest)
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.check(end_entity, intermediates, now) {
            Ok(_) => Ok(ServerCertVerified::assertion()),
            Err(f) => Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(f))))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}

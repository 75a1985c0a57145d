//! What the report says about a peer certificate: subject, names, SHA-256 fingerprint.

use rustls::pki_types::CertificateDer;

/// The facts about one certificate that a log line or a report needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject distinguished name, RFC 4514 style (may be empty).
    pub subject: String,
    /// DNS names and IP addresses from subjectAltName; the subject CN when there is none.
    pub names: Vec<String>,
    /// SHA-256 of the DER certificate, lowercase hex without separators (as in TLSA records).
    pub sha256: String,
}

/// Lowercase hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Descriptions already made, by SHA-256 of the certificate: a client meets the same
/// few MX certificates over and over, and parsing one (x509-parser, then the subject
/// as text) was the largest cost of ours in a handshake (the `make bench` profile).
/// A description depends on the bytes alone, so the fingerprint is a safe key.
/// Bounded: emptied when it reaches `CACHE_MAX` entries.
static CACHE: once_cell::sync::Lazy<parking_lot::Mutex<std::collections::HashMap<[u8; 32], CertInfo>>> =
    once_cell::sync::Lazy::new(Default::default);
const CACHE_MAX: usize = 256;

/// Describes a DER certificate. A certificate that does not parse still gets its
/// fingerprint; subject and names are then empty.
pub fn describe(der: &CertificateDer<'_>) -> CertInfo {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    if let Some(info) = CACHE.lock().get(&key) {
        return info.clone();
    }
    let info = parse(der, hex(&key));
    let mut cache = CACHE.lock();
    if cache.len() >= CACHE_MAX {
        cache.clear();
    }
    cache.insert(key, info.clone());
    info
}

fn parse(der: &CertificateDer<'_>, sha256: String) -> CertInfo {
    let mut info = CertInfo { sha256, ..CertInfo::default() };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return info;
    };
    info.subject = cert.subject().to_string();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => info.names.push((*d).to_string()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => {
                    if let Some(s) = ip_to_string(ip) {
                        info.names.push(s)
                    }
                }
                _ => {}
            }
        }
    }
    if info.names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                info.names.push(s.to_string());
            }
        }
    }
    info
}

fn ip_to_string(raw: &[u8]) -> Option<String> {
    match raw.len() {
        4 => Some(std::net::Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]).to_string()),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(raw);
            Some(std::net::Ipv6Addr::from(a).to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_a_generated_certificate() {
        let ck = rcgen::generate_simple_self_signed(vec!["mx.example.org".to_string(), "127.0.0.1".to_string()])
            .unwrap();
        let der = CertificateDer::from(ck.cert.der().to_vec());
        let info = describe(&der);
        assert_eq!(describe(&der), info, "the cached description is the same");
        assert_eq!(info.names, vec!["mx.example.org".to_string(), "127.0.0.1".to_string()]);
        assert_eq!(info.sha256.len(), 64);
        assert!(info.subject.contains("rcgen"), "subject {}", info.subject);
    }

    #[test]
    fn garbage_still_gets_a_fingerprint() {
        let info = describe(&CertificateDer::from(vec![1u8, 2, 3]));
        assert_eq!(info.sha256.len(), 64);
        assert!(info.names.is_empty());
    }
}

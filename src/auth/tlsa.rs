//! TLSA records (RFC 6698 section 2, RFC 7218 mnemonics): reading one from the
//! caller, which usages SMTP may use (RFC 7672 section 3.1), and matching one
//! against a certificate.

use rustls::pki_types::CertificateDer;

use crate::error::{Code, Error, Result};
use crate::tls::certinfo::hex;

/// The certificate usages RFC 7672 section 3.1 leaves usable for SMTP.
pub const DANE_TA: u8 = 2;
/// DANE-EE: the record names the server's own certificate or key.
pub const DANE_EE: u8 = 3;

/// Longest record data accepted (a full certificate; DNS caps an RR at 65535 bytes).
const MAX_DATA: usize = 65535;

/// One TLSA record: certificate usage, selector, matching type, data.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tlsa {
    /// 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE (RFC 7218).
    pub usage: u8,
    /// 0 the full certificate, 1 its SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0 the data itself, 1 its SHA-256, 2 its SHA-512.
    pub mtype: u8,
    /// The association data.
    pub data: Vec<u8>,
}

impl Tlsa {
    /// A record from its fields; the data is kept whatever it holds (an unusable
    /// record is still part of the RRset that a report names).
    pub fn new(usage: u8, selector: u8, mtype: u8, data: &[u8]) -> Result<Tlsa> {
        if data.is_empty() || data.len() > MAX_DATA {
            return Err(Error::new(Code::InvalidParameter, format!("TLSA data must be 1..{MAX_DATA} bytes, not {}", data.len())));
        }
        Ok(Tlsa { usage, selector, mtype, data: data.to_vec() })
    }

    /// A record in presentation form, as a zone file or `dig +short` shows it:
    /// `3 1 1 0123ab...` (the hex may be split by spaces, RFC 6698 section 2.2).
    pub fn parse(text: &str) -> Result<Tlsa> {
        let bad = |why: &str| Error::new(Code::InvalidParameter, format!("TLSA record {:?}: {why}", crate::protocol::smtp::printable(text.as_bytes())));
        let mut fields = text.split_ascii_whitespace();
        let mut number = |what: &str| -> Result<u8> {
            let f = fields.next().ok_or_else(|| bad(&format!("no {what}")))?;
            // RFC 7218 mnemonics are accepted too: they are what operators type.
            let mnemonic = match f.to_ascii_uppercase().as_str() {
                "PKIX-TA" | "CERT" | "FULL" => Some(0),
                "PKIX-EE" | "SPKI" | "SHA2-256" => Some(1),
                "DANE-TA" | "SHA2-512" => Some(2),
                "DANE-EE" => Some(3),
                _ => None,
            };
            match mnemonic {
                Some(n) => Ok(n),
                None => f.parse::<u8>().map_err(|_| bad(&format!("{what} {f:?} is not a number 0..255"))),
            }
        };
        let usage = number("usage")?;
        let selector = number("selector")?;
        let mtype = number("matching type")?;
        let digits: String = fields.collect();
        if digits.is_empty() {
            return Err(bad("no data"));
        }
        if digits.len() % 2 != 0 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the data is not an even number of hex digits"));
        }
        let data: Vec<u8> = (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("checked hex"))
            .collect();
        Tlsa::new(usage, selector, mtype, &data).map_err(|e| bad(&e.detail))
    }

    /// The presentation form, lowercase hex, as reports show it.
    pub fn text(&self) -> String {
        format!("{} {} {} {}", self.usage, self.selector, self.mtype, hex(&self.data))
    }

    /// Whether SMTP may use this record (RFC 7672 section 3.1: only DANE-TA and
    /// DANE-EE; RFC 6698: selectors 0 and 1, matching types 0 to 2), with data of the
    /// digest's length. An unusable record is ignored, as if absent.
    pub fn usable(&self) -> bool {
        matches!(self.usage, DANE_TA | DANE_EE)
            && self.selector <= 1
            && match self.mtype {
                0 => true,
                1 => self.data.len() == 32,
                2 => self.data.len() == 64,
                _ => false,
            }
    }

    /// Whether the record's data matches the certificate (selector 0) or its
    /// public key (selector 1). A certificate that does not parse matches only a
    /// full-certificate record.
    pub fn matches(&self, cert: &CertificateDer<'_>) -> bool {
        let selected: &[u8] = match self.selector {
            0 => cert.as_ref(),
            1 => match spki_of(cert) {
                Some(spki) => return self.matches_bytes(spki),
                None => return false,
            },
            _ => return false,
        };
        self.matches_bytes(selected)
    }

    fn matches_bytes(&self, selected: &[u8]) -> bool {
        use aws_lc_rs::digest;
        match self.mtype {
            0 => selected == self.data.as_slice(),
            1 => digest::digest(&digest::SHA256, selected).as_ref() == self.data.as_slice(),
            2 => digest::digest(&digest::SHA512, selected).as_ref() == self.data.as_slice(),
            _ => false,
        }
    }
}

/// The DER SubjectPublicKeyInfo of a certificate (tag and length included).
pub fn spki_of<'a>(cert: &'a CertificateDer<'_>) -> Option<&'a [u8]> {
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let raw = c.tbs_certificate.subject_pki.raw;
    // The slice borrows from the certificate's bytes: find it there, so the
    // lifetime is the certificate's, not the parser's.
    let start = raw.as_ptr() as usize - cert.as_ref().as_ptr() as usize;
    cert.as_ref().get(start..start + raw.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presentation_form() {
        let r = Tlsa::parse("3 1 1 0123456789abcdef0123456789ABCDEF 0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!((r.usage, r.selector, r.mtype, r.data.len()), (3, 1, 1, 32));
        assert!(r.usable());
        assert_eq!(r.text(), "3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        let m = Tlsa::parse("DANE-TA SPKI SHA2-256 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff").unwrap();
        assert_eq!((m.usage, m.selector, m.mtype), (2, 1, 1));
        for bad in ["", "3", "3 1", "3 1 1", "3 1 1 0g", "3 1 1 abc", "300 1 1 00", "x 1 1 00"] {
            assert!(Tlsa::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn usable_records() {
        let d32 = [0u8; 32];
        assert!(!Tlsa::new(0, 0, 1, &d32).unwrap().usable(), "PKIX-TA");
        assert!(!Tlsa::new(1, 0, 1, &d32).unwrap().usable(), "PKIX-EE");
        assert!(Tlsa::new(2, 0, 1, &d32).unwrap().usable());
        assert!(!Tlsa::new(3, 2, 1, &d32).unwrap().usable(), "selector 2");
        assert!(!Tlsa::new(3, 1, 3, &d32).unwrap().usable(), "matching type 3");
        assert!(!Tlsa::new(3, 1, 2, &d32).unwrap().usable(), "SHA-512 of 32 bytes");
        assert!(!Tlsa::new(3, 1, 1, &d32[..31]).unwrap().usable(), "short digest");
        assert!(Tlsa::new(3, 0, 0, &[1, 2, 3]).unwrap().usable());
    }
}

//! The crypto provider every config is built from: rustls' aws-lc-rs provider with
//! the TLS 1.3 key schedule computed through precomputed HMAC keys.
//!
//! Why: the aws-lc-rs provider derives each TLS 1.3 secret with a one-shot HKDF
//! call that sets up the HMAC key (two compression-function calls) and, for secrets
//! that came from an extract, runs the extract again, on every expand. A TLS 1.3
//! handshake with SHA-384 does a few dozen expands per side; in the `make bench`
//! profile (perf, issue 7) the SHA-512 compression function was 18% of a full
//! handshake. rustls' own `HkdfUsingHmac` keys the HMAC once per secret (aws-lc-rs'
//! `hmac::Key` keeps the padded key states) and expands from there: the same
//! RFC 5869 arithmetic with about a quarter of the hashing. The AEADs, hashes, key
//! exchanges and signatures stay aws-lc-rs' own. Interoperability is checked by every
//! handshake with OpenSSL, Postfix, Dovecot and INN in the test suite; a wrong secret
//! fails the Finished check at once.

use once_cell::sync::Lazy;
use rustls::crypto::tls13::HkdfUsingHmac;
use rustls::crypto::{hmac, CryptoProvider};
use rustls::{SupportedCipherSuite, Tls12CipherSuite, Tls13CipherSuite};

use super::records::{Checked12, Checked13};

/// HMAC over aws-lc-rs for rustls' generic HKDF.
struct AwsLcHmac(aws_lc_rs::hmac::Algorithm);

struct AwsLcHmacKey(aws_lc_rs::hmac::Key);

impl hmac::Hmac for AwsLcHmac {
    fn with_key(&self, key: &[u8]) -> Box<dyn hmac::Key> {
        Box::new(AwsLcHmacKey(aws_lc_rs::hmac::Key::new(self.0, key)))
    }

    fn hash_output_len(&self) -> usize {
        self.0.digest_algorithm().output_len()
    }
}

impl hmac::Key for AwsLcHmacKey {
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> hmac::Tag {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&self.0);
        ctx.update(first);
        for m in middle {
            ctx.update(m);
        }
        ctx.update(last);
        hmac::Tag::new(ctx.sign().as_ref())
    }

    fn tag_len(&self) -> usize {
        self.0.algorithm().digest_algorithm().output_len()
    }
}

static HMAC_SHA256: AwsLcHmac = AwsLcHmac(aws_lc_rs::hmac::HMAC_SHA256);
static HMAC_SHA384: AwsLcHmac = AwsLcHmac(aws_lc_rs::hmac::HMAC_SHA384);
static HKDF_SHA256: HkdfUsingHmac<'static> = HkdfUsingHmac(&HMAC_SHA256);
static HKDF_SHA384: HkdfUsingHmac<'static> = HkdfUsingHmac(&HMAC_SHA384);

/// The suites of the aws-lc-rs provider in the same order: TLS 1.3 ones with our key
/// schedule, every one with the record checks of `records` on its decrypters. Built
/// once; the suites live for the process.
static SUITES: Lazy<Vec<SupportedCipherSuite>> = Lazy::new(|| {
    rustls::crypto::aws_lc_rs::default_provider()
        .cipher_suites
        .into_iter()
        .map(|s| match s {
            SupportedCipherSuite::Tls13(t) => {
                let hkdf: &'static HkdfUsingHmac<'static> = match t.common.hash_provider.output_len() {
                    32 => &HKDF_SHA256,
                    48 => &HKDF_SHA384,
                    _ => return s,
                };
                let suite: &'static Tls13CipherSuite = Box::leak(Box::new(Tls13CipherSuite {
                    common: rustls::CipherSuiteCommon {
                        suite: t.common.suite,
                        hash_provider: t.common.hash_provider,
                        confidentiality_limit: t.common.confidentiality_limit,
                    },
                    hkdf_provider: hkdf,
                    aead_alg: Box::leak(Box::new(Checked13(t.aead_alg))),
                    quic: t.quic,
                }));
                SupportedCipherSuite::Tls13(suite)
            }
            SupportedCipherSuite::Tls12(t) => {
                let suite: &'static Tls12CipherSuite = Box::leak(Box::new(Tls12CipherSuite {
                    common: rustls::CipherSuiteCommon {
                        suite: t.common.suite,
                        hash_provider: t.common.hash_provider,
                        confidentiality_limit: t.common.confidentiality_limit,
                    },
                    prf_provider: t.prf_provider,
                    kx: t.kx,
                    sign: t.sign,
                    aead_alg: Box::leak(Box::new(Checked12(t.aead_alg))),
                }));
                SupportedCipherSuite::Tls12(suite)
            }
        })
        .collect()
});

/// rustls' aws-lc-rs provider with the faster TLS 1.3 key schedule.
pub fn provider() -> CryptoProvider {
    CryptoProvider { cipher_suites: SUITES.clone(), ..rustls::crypto::aws_lc_rs::default_provider() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::tls13::Hkdf;

    /// RFC 5869 appendix A.1 (SHA-256), through the generic HKDF over our HMAC.
    #[test]
    fn rfc5869_vector() {
        let ikm = [0x0bu8; 22];
        let salt: Vec<u8> = (0x00u8..=0x0c).collect();
        let info: Vec<u8> = (0xf0u8..=0xf9).collect();
        let exp = HKDF_SHA256.extract_from_secret(Some(&salt), &ikm);
        let mut okm = [0u8; 42];
        exp.expand_slice(&[&info], &mut okm).unwrap();
        let want = "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865";
        let got: String = okm.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, want);
    }

    /// Every TLS 1.3 suite uses our key schedule, and the same output as aws-lc-rs'.
    #[test]
    fn same_secrets_as_aws_lc_rs() {
        let ours = provider();
        let theirs = rustls::crypto::aws_lc_rs::default_provider();
        assert_eq!(ours.cipher_suites.len(), theirs.cipher_suites.len());
        for (a, b) in ours.cipher_suites.iter().zip(theirs.cipher_suites.iter()) {
            assert_eq!(a.suite(), b.suite());
            if let (SupportedCipherSuite::Tls13(a), SupportedCipherSuite::Tls13(b)) = (a, b) {
                let (x, y) = (a.hkdf_provider.extract_from_secret(Some(b"salt"), b"secret"), b.hkdf_provider.extract_from_secret(Some(b"salt"), b"secret"));
                let (mut p, mut q) = ([0u8; 48], [0u8; 48]);
                x.expand_slice(&[b"tls13 ", b"c hs traffic"], &mut p).unwrap();
                y.expand_slice(&[b"tls13 ", b"c hs traffic"], &mut q).unwrap();
                assert_eq!(p, q, "{:?}", a.common.suite);
                let k = rustls::crypto::tls13::OkmBlock::new(&p[..a.common.hash_provider.output_len()]);
                assert_eq!(a.hkdf_provider.hmac_sign(&k, b"transcript").as_ref(), b.hkdf_provider.hmac_sign(&k, b"transcript").as_ref());
                assert!(!std::ptr::eq(a.hkdf_provider as *const dyn Hkdf as *const u8, b.hkdf_provider as *const dyn Hkdf as *const u8));
            }
        }
    }
}

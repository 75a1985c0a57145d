//! What a resolver, a policy fetch and a peer hand the DANE and MTA-STS code: TLSA
//! records in presentation form, an MTA-STS policy body, and the server's
//! certificate chain as bytes (DER that may be anything). The input is a sequence of
//! parts, each a 2-byte big-endian length and its bytes: the records (one a line),
//! the policy, then up to four chain certificates.
//! Properties: a record that parses prints as text that parses to the same record; a
//! policy that parses has an mx for every mode but none and matches its own patterns'
//! hosts; the DANE check of any chain against any records returns a verdict, never
//! panics, and a DANE-EE 3 0 0 record of a certificate always matches it.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use mailtls::auth::dane::DaneVerifier;
use mailtls::auth::sts::{Mode, Policy};
use mailtls::auth::tlsa::Tlsa;
use mailtls::auth::{plan, Destination, Dnssec};
use rustls::pki_types::{CertificateDer, UnixTime};

struct Parts<'a>(&'a [u8]);

impl<'a> Iterator for Parts<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.0.len() < 2 {
            return None;
        }
        let n = (usize::from(self.0[0]) << 8 | usize::from(self.0[1])).min(self.0.len() - 2);
        let (part, rest) = self.0[2..].split_at(n);
        self.0 = rest;
        Some(part)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut parts = Parts(data);
    let records_text = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let policy_text = parts.next().unwrap_or_default();
    let chain: Vec<CertificateDer<'static>> = parts.take(4).map(|c| CertificateDer::from(c.to_vec())).collect();

    let mut records = Vec::new();
    for line in records_text.lines() {
        if let Ok(r) = Tlsa::parse(line) {
            assert_eq!(Tlsa::parse(&r.text()).as_ref(), Ok(&r), "{line:?}");
            records.push(r);
        }
    }
    let sts = Policy::parse(policy_text);
    if let Ok(p) = &sts {
        assert!(p.mode == Mode::None || !p.mx.is_empty());
        for pattern in &p.mx {
            let host = match pattern.strip_prefix("*.") {
                Some(rest) => format!("x.{rest}"),
                None => pattern.clone(),
            };
            assert!(p.allows_mx(&host), "{pattern} does not allow {host}");
        }
    }
    let dest = Destination {
        tlsa: records.clone(),
        dnssec: Some(Dnssec::Secure),
        mx_host: Some("mx.example.test".into()),
        sts: Some(sts),
        ..Destination::default()
    };
    for policy in [mailtls::config::Policy::Dane, mailtls::config::Policy::DaneOnly, mailtls::config::Policy::May] {
        let _ = plan(policy, &dest, "mx.example.test");
    }
    if let Some((ee, rest)) = chain.split_first() {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let names = vec!["mx.example.test".to_string()];
        let v = DaneVerifier::new(&records, &names, provider.clone());
        let _ = v.check(ee, rest, UnixTime::now());
        // The anchor code reads every record's data as a certificate or a key.
        let mut own = records.clone();
        own.push(Tlsa::new(2, 0, 0, ee.as_ref()).unwrap_or_else(|_| Tlsa::new(2, 0, 0, &[0]).unwrap()));
        own.push(Tlsa::new(2, 1, 0, ee.as_ref()).unwrap_or_else(|_| Tlsa::new(2, 1, 0, &[0]).unwrap()));
        let _ = DaneVerifier::new(&own, &names, provider.clone()).check(ee, rest, UnixTime::now());
        if !ee.as_ref().is_empty() && ee.as_ref().len() <= 65535 {
            let exact = Tlsa::new(3, 0, 0, ee.as_ref()).unwrap();
            assert!(DaneVerifier::new(&[exact], &names, provider).check(ee, rest, UnixTime::now()).is_ok());
        }
    }
});

//! Who the server must prove to be, between MTAs: DANE (RFC 7672) and MTA-STS
//! (RFC 8461). The caller brings what its DNSSEC-validating resolver and its HTTPS
//! fetch said (the library does no DNS); [`plan`] turns that and the config's policy
//! into the policy one session is held to, the certificate check, the SNI, and the
//! policy a TLS-RPT report names. It decides before the first byte; it sees no
//! transport and no pointer, and nothing it decides can be weakened later: a DANE or
//! MTA-STS enforce plan requires TLS on every rung of the ladder and never falls back
//! to plaintext.

pub mod dane;
pub mod sts;
pub mod tlsa;

use std::fmt;

use crate::config::Policy;
use crate::error::{Code, Error};
use crate::tlsrpt::{PolicyId, PolicyType};
use tlsa::Tlsa;

/// What the caller's validating resolver said of the MX and TLSA lookups.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dnssec {
    /// Both lookups validated (the AD bit, or libunbound's `secure`).
    Secure = 1,
    /// Provably unsigned (an insecure delegation): DANE does not apply.
    Insecure = 2,
    /// Signed, but the signatures did not validate: an attack or a broken zone.
    Bogus = 3,
}

impl Dnssec {
    /// The status for a number from C.
    pub fn from_u32(n: u32) -> Option<Dnssec> {
        Some(match n {
            1 => Dnssec::Secure,
            2 => Dnssec::Insecure,
            3 => Dnssec::Bogus,
            _ => return None,
        })
    }

    /// The name used in logs.
    pub fn name(self) -> &'static str {
        match self {
            Dnssec::Secure => "secure",
            Dnssec::Insecure => "insecure",
            Dnssec::Bogus => "bogus",
        }
    }
}

/// What the caller knows about one destination, before connecting.
#[derive(Clone, Debug, Default)]
pub struct Destination {
    /// The TLSA RRset as the resolver returned it (unusable records included).
    pub tlsa: Vec<Tlsa>,
    /// The DNSSEC status of the MX and TLSA lookups (None: not given, as insecure).
    pub dnssec: Option<Dnssec>,
    /// The TLSA base domain (RFC 7672 section 2.2.2): the MX host, or the target of
    /// its secure CNAME chain. SNI under DANE, and a DANE-TA reference name.
    pub tlsa_base: Option<String>,
    /// The MX host name (what MTA-STS checks; a DANE-TA reference name).
    pub mx_host: Option<String>,
    /// The next-hop (recipient) domain: the policy domain of reports, a DANE-TA
    /// reference name.
    pub next_hop: Option<String>,
    /// The MTA-STS policy the caller fetched, parsed, or why it did not parse.
    pub sts: Option<Result<sts::Policy, Error>>,
}

/// A DANE or MTA-STS verdict carried through rustls to the session: the code and
/// detail it reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthFailure {
    /// The report's reason.
    pub code: Code,
    /// What did not match.
    pub detail: String,
}

impl AuthFailure {
    /// A verdict.
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        AuthFailure { code, detail: detail.into() }
    }
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for AuthFailure {}

/// How the server's certificate is checked in the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Check {
    /// As the config says: recorded under may and encrypt, chain and name under verify.
    Config,
    /// Chain to the trust anchors and one of these names (MTA-STS enforce).
    WebPki(Vec<String>),
    /// The usable TLSA records, and the reference names of a DANE-TA chain.
    Dane(Vec<Tlsa>, Vec<String>),
}

/// The policy one session is held to.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The effective policy: the config's, or what DANE and MTA-STS made of it.
    pub policy: Policy,
    /// The certificate check.
    pub check: Check,
    /// The name sent as SNI instead of the server name (DANE: the TLSA base domain).
    pub sni: Option<String>,
    /// Deliver nothing: why (a bogus lookup, dane-only without records, an MX outside
    /// an enforced MTA-STS policy).
    pub defer: Option<Error>,
    /// What a TLS-RPT report names as the policy.
    pub report: PolicyId,
    /// The RFC 8460 result type when `defer` is set or the policy itself was bad.
    pub result_type: Option<&'static str>,
    /// MTA-STS testing: the names a valid certificate should have carried; checked
    /// after the handshake, for the report only.
    pub testing: Vec<String>,
    /// One line for the log: how the plan came about.
    pub why: String,
}

impl Destination {
    /// Whether the caller said anything about DANE or MTA-STS.
    pub fn is_empty(&self) -> bool {
        self.tlsa.is_empty() && self.dnssec.is_none() && self.sts.is_none()
    }

    fn names(&self, server_name: &str) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for n in [self.tlsa_base.as_deref(), self.mx_host.as_deref(), Some(server_name), self.next_hop.as_deref()]
            .into_iter()
            .flatten()
        {
            let n = n.trim_end_matches('.').to_ascii_lowercase();
            if !n.is_empty() && !names.contains(&n) {
                names.push(n);
            }
        }
        names
    }

    fn policy_domain(&self, server_name: &str) -> String {
        self.next_hop.clone().or_else(|| self.mx_host.clone()).unwrap_or_else(|| server_name.to_string())
    }
}

/// Makes the plan for a session under `policy` to a server reached as `server_name`.
///
/// DANE (policies dane and dane-only; RFC 7672 section 2.2): a bogus lookup defers
/// (dnssec-invalid); an insecure one (or none given) leaves dane as may and defers
/// dane-only (dane-required); a secure RRset with a usable record is authenticated by
/// it, SNI being the TLSA base domain; a secure RRset whose records are all unusable
/// makes dane encrypt and defers dane-only (tlsa-invalid); a secure empty RRset is
/// no DANE (dane as may, dane-only defers). DANE takes precedence over MTA-STS
/// wherever usable TLSA records are present (RFC 8461 section 2); otherwise an
/// MTA-STS policy applies to every policy but none: enforce requires TLS and a
/// certificate valid for the MX host, which must match the policy's `mx` (else
/// defer); testing delivers as without it and reports what failed; a policy that did
/// not parse is no policy, reported as sts-policy-invalid (RFC 8461 section 5).
pub fn plan(policy: Policy, dest: &Destination, server_name: &str) -> Plan {
    let domain = dest.policy_domain(server_name);
    let mx = dest.mx_host.clone().unwrap_or_else(|| server_name.to_string());
    let mut p = Plan {
        policy,
        check: Check::Config,
        sni: None,
        defer: None,
        report: PolicyId { policy_type: Some(PolicyType::NoPolicyFound), policy_domain: domain.clone(), ..PolicyId::default() },
        result_type: None,
        testing: Vec::new(),
        why: format!("policy {}", policy.name()),
    };
    if policy == Policy::None {
        return p;
    }
    if matches!(policy, Policy::Dane | Policy::DaneOnly) && dane_decides(&mut p, dest, server_name, &domain, &mx) {
        return p;
    }
    sts_plan(&mut p, dest, &domain, &mx);
    p
}

/// The DANE half of [`plan`]: true when DANE decided (authenticated by the records,
/// or deferred); otherwise `p` holds the fallback policy for MTA-STS to refine.
fn dane_decides(p: &mut Plan, dest: &Destination, server_name: &str, domain: &str, mx: &str) -> bool {
    let policy = p.policy;
    // An RRset has no order (resolvers rotate it): sorted, the same RRset is the same
    // policy in every report, and its sessions add up under one entry.
    let mut strings: Vec<String> = dest.tlsa.iter().map(Tlsa::text).collect();
    strings.sort();
    let tlsa_report = PolicyId {
        policy_type: Some(PolicyType::Tlsa),
        policy_strings: strings,
        policy_domain: domain.to_string(),
        mx_host: vec![mx.to_string()],
    };
    let usable: Vec<Tlsa> = dest.tlsa.iter().filter(|r| r.usable()).cloned().collect();
    let only = policy == Policy::DaneOnly;
    let mut defer = |code: Code, rt: &'static str, why: String| {
        p.report = tlsa_report.clone();
        p.result_type = Some(rt);
        p.why = why.clone();
        p.defer = Some(Error::new(code, why));
        true
    };
    match dest.dnssec {
        Some(Dnssec::Bogus) => {
            defer(Code::DnssecBogus, "dnssec-invalid", format!("policy {}: the DNSSEC lookup for {mx} was bogus: deferring", policy.name()))
        }
        Some(Dnssec::Secure) if !usable.is_empty() => {
            let base = dest.tlsa_base.clone().unwrap_or_else(|| mx.to_string());
            p.why = format!(
                "policy {}: {} usable TLSA record(s) of {} for {base} (DNSSEC secure)",
                policy.name(),
                usable.len(),
                dest.tlsa.len()
            );
            p.check = Check::Dane(usable, dest.names(server_name));
            p.sni = Some(base);
            p.report = tlsa_report;
            true
        }
        Some(Dnssec::Secure) if !dest.tlsa.is_empty() => {
            if only {
                return defer(Code::TlsaUnusable, "tlsa-invalid", format!("policy dane-only: none of the {} TLSA record(s) for {mx} is usable (usages 0 and 1 are not for SMTP): deferring", dest.tlsa.len()));
            }
            p.policy = Policy::Encrypt;
            p.report = tlsa_report;
            p.why = format!("policy dane: no usable TLSA record of {} for {mx}: encrypt", dest.tlsa.len());
            false
        }
        status => {
            let what = match status {
                Some(Dnssec::Secure) => "no TLSA record (securely denied)",
                Some(_) => "an insecure lookup",
                None => "no DNSSEC status given",
            };
            if only {
                return defer(Code::DaneRequired, "dane-required", format!("policy dane-only: {what} for {mx}: deferring"));
            }
            p.policy = Policy::May;
            p.why = format!("policy dane: {what} for {mx}: may");
            false
        }
    }
}

/// The MTA-STS half of [`plan`], where DANE did not decide.
fn sts_plan(p: &mut Plan, dest: &Destination, domain: &str, mx: &str) {
    match &dest.sts {
        None => {}
        Some(Err(e)) => {
            p.report = PolicyId { policy_type: Some(PolicyType::Sts), policy_domain: domain.to_string(), ..PolicyId::default() };
            p.result_type = Some("sts-policy-invalid");
            p.why = format!("{}; {}: treated as no policy", p.why, e.detail);
        }
        Some(Ok(sts)) if sts.mode == sts::Mode::None => {
            p.why = format!("{}; MTA-STS mode none: no policy", p.why);
        }
        Some(Ok(sts)) => {
            p.report = PolicyId {
                policy_type: Some(PolicyType::Sts),
                policy_strings: sts.lines.clone(),
                policy_domain: domain.to_string(),
                mx_host: sts.mx.clone(),
            };
            let listed = sts.allows_mx(mx);
            if sts.mode == sts::Mode::Testing {
                p.testing = vec![mx.to_string()];
                p.why = format!("{}; MTA-STS testing (MX {mx} {}): deliver, report", p.why, if listed { "listed" } else { "not listed" });
                if !listed {
                    p.result_type = Some("validation-failure");
                }
            } else if !listed {
                let why = format!("MTA-STS enforce: the MX host {mx} matches none of {}: deferring", sts.mx.join(", "));
                // The session is held to the enforced policy whether or not it lets this
                // MX in: the report names it (verify), not the config's policy.
                p.policy = Policy::Verify;
                p.result_type = Some("validation-failure");
                p.defer = Some(Error::new(Code::StsMxMismatch, why.clone()));
                p.why = why;
            } else {
                p.policy = Policy::Verify;
                p.check = Check::WebPki(vec![mx.to_string()]);
                p.why = format!("{}; MTA-STS enforce: TLS with a certificate valid for {mx}", p.why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(s: &str) -> Tlsa {
        Tlsa::parse(s).unwrap()
    }

    fn dest(tlsa: &[&str], dnssec: Option<Dnssec>) -> Destination {
        Destination {
            tlsa: tlsa.iter().map(|s| rec(s)).collect(),
            dnssec,
            mx_host: Some("mx.example.test".into()),
            next_hop: Some("example.test".into()),
            ..Destination::default()
        }
    }

    const EE: &str = "3 1 1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const PKIX: &str = "1 1 1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn dane_table() {
        use Policy::{Dane, DaneOnly, Encrypt};
        let may = Policy::May;
        let secure = Some(Dnssec::Secure);
        for (policy, d, effective, defer, rt) in [
            (Dane, dest(&[EE], secure), Dane, None, None),
            (DaneOnly, dest(&[EE, PKIX], secure), DaneOnly, None, None),
            (Dane, dest(&[PKIX], secure), Encrypt, None, None),
            (DaneOnly, dest(&[PKIX], secure), DaneOnly, Some(Code::TlsaUnusable), Some("tlsa-invalid")),
            (Dane, dest(&[EE], Some(Dnssec::Insecure)), may, None, None),
            (DaneOnly, dest(&[EE], Some(Dnssec::Insecure)), DaneOnly, Some(Code::DaneRequired), Some("dane-required")),
            (Dane, dest(&[EE], Some(Dnssec::Bogus)), Dane, Some(Code::DnssecBogus), Some("dnssec-invalid")),
            (DaneOnly, dest(&[], secure), DaneOnly, Some(Code::DaneRequired), Some("dane-required")),
            (Dane, dest(&[], secure), may, None, None),
            (Dane, dest(&[], None), may, None, None),
        ] {
            let p = plan(policy, &d, "mx.example.test");
            assert_eq!(p.policy, effective, "{}", p.why);
            assert_eq!(p.defer.as_ref().map(|e| e.code), defer, "{}", p.why);
            assert_eq!(p.result_type, rt, "{}", p.why);
        }
        let p = plan(Dane, &Destination { tlsa_base: Some("base.example.test".into()), ..dest(&[EE, PKIX], secure) }, "mx.example.test");
        assert_eq!(p.sni.as_deref(), Some("base.example.test"));
        assert_eq!(p.report.policy_type, Some(PolicyType::Tlsa));
        assert_eq!(p.report.policy_strings.len(), 2, "the whole RRset is reported");
        let reversed = plan(Dane, &Destination { tlsa_base: Some("base.example.test".into()), ..dest(&[PKIX, EE], secure) }, "mx.example.test");
        assert_eq!(reversed.report, p.report, "the same RRset in another order is the same policy");
        match p.check {
            Check::Dane(r, names) => {
                assert_eq!(r.len(), 1, "only the usable record checks");
                assert_eq!(names, ["base.example.test", "mx.example.test", "example.test"]);
            }
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn sts_and_precedence() {
        let enforce = sts::Policy::parse(b"version: STSv1\nmode: enforce\nmx: *.example.test\nmax_age: 86400\n").unwrap();
        let testing = sts::Policy { mode: sts::Mode::Testing, ..enforce.clone() };
        let with = |p: &sts::Policy, mx: &str| Destination { sts: Some(Ok(p.clone())), mx_host: Some(mx.into()), ..Destination::default() };
        let p = plan(Policy::May, &with(&enforce, "mx.example.test"), "mx.example.test");
        assert_eq!((p.policy, p.check.clone()), (Policy::Verify, Check::WebPki(vec!["mx.example.test".into()])));
        let p = plan(Policy::May, &with(&enforce, "mx.elsewhere.test"), "mx.elsewhere.test");
        assert_eq!(p.policy, Policy::Verify, "held to enforce, though it defers");
        assert_eq!(p.defer.map(|e| e.code), Some(Code::StsMxMismatch));
        let p = plan(Policy::May, &with(&testing, "mx.elsewhere.test"), "mx.elsewhere.test");
        assert!(p.defer.is_none() && p.policy == Policy::May && p.testing == ["mx.elsewhere.test"]);
        assert_eq!(p.result_type, Some("validation-failure"));
        // DANE decides where usable TLSA records are present; MTA-STS is not consulted.
        let both = Destination { sts: Some(Ok(enforce.clone())), ..dest(&[EE], Some(Dnssec::Secure)) };
        let p = plan(Policy::Dane, &Destination { mx_host: Some("mx.elsewhere.test".into()), ..both }, "mx.elsewhere.test");
        assert!(p.defer.is_none() && matches!(p.check, Check::Dane(..)) && p.report.policy_type == Some(PolicyType::Tlsa));
        // An insecure TLSA lookup leaves the field to MTA-STS.
        let p = plan(Policy::Dane, &Destination { sts: Some(Ok(enforce)), ..dest(&[EE], Some(Dnssec::Insecure)) }, "mx.example.test");
        assert_eq!(p.policy, Policy::Verify);
        let bad = Destination { sts: Some(Err(Error::new(Code::StsPolicyInvalid, "x"))), ..Destination::default() };
        let p = plan(Policy::Encrypt, &bad, "mx.example.test");
        assert_eq!((p.policy, p.result_type), (Policy::Encrypt, Some("sts-policy-invalid")));
    }
}

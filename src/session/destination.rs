//! What the caller knows of the destination before connecting (the TLSA RRset and
//! its DNSSEC status, the MX host, the MTA-STS policy), the plan `auth` makes of it
//! when the negotiation starts, and what the session contributes to a TLS-RPT
//! report when it ends. The decisions are `auth`'s; this file hands them over.

use super::*;
use crate::auth::{self, tlsa::Tlsa, Dnssec};
use crate::tlsrpt::{Failure, SessionResult};

impl Session {
    fn destination_settable(&self) -> Result<()> {
        if self.role != Role::Client || self.stage != Stage::Idle {
            return Err(Error::new(Code::InvalidState, "the destination's DANE and MTA-STS facts are set on a client session before negotiating"));
        }
        Ok(())
    }

    /// Adds a record to the destination's TLSA RRset.
    pub fn add_tlsa(&mut self, record: Tlsa) -> Result<()> {
        self.destination_settable()?;
        // A duplicate is ignored, even when the RRset is full: it adds no record.
        if self.dest.tlsa.contains(&record) {
            return Ok(());
        }
        if self.dest.tlsa.len() >= 64 {
            return Err(Error::new(Code::InvalidParameter, "more than 64 TLSA records for one destination"));
        }
        self.dest.tlsa.push(record);
        Ok(())
    }

    /// Sets the DNSSEC status of the MX and TLSA lookups.
    pub fn set_dnssec(&mut self, status: Dnssec) -> Result<()> {
        self.destination_settable()?;
        self.dest.dnssec = Some(status);
        Ok(())
    }

    /// Sets a name of the destination: the TLSA base domain, the MX host or the
    /// next-hop domain (`which` says which).
    pub fn set_destination_name(&mut self, which: DestinationName, name: &str) -> Result<()> {
        self.destination_settable()?;
        let n = name.trim_end_matches('.');
        ServerName::try_from(n.to_string())
            .ok()
            .filter(|s| matches!(s, ServerName::DnsName(_)))
            .ok_or_else(|| Error::new(Code::InvalidParameter, format!("{name:?} is not a DNS name")))?;
        let slot = match which {
            DestinationName::TlsaBase => &mut self.dest.tlsa_base,
            DestinationName::MxHost => &mut self.dest.mx_host,
            DestinationName::NextHop => &mut self.dest.next_hop,
        };
        *slot = Some(n.to_ascii_lowercase());
        Ok(())
    }

    /// Sets the MTA-STS policy text the caller fetched. A policy that does not parse
    /// is kept as such: the session goes on as without a policy and reports
    /// sts-policy-invalid (RFC 8461 section 5); the error is returned too.
    pub fn set_mta_sts(&mut self, text: &[u8]) -> Result<()> {
        self.destination_settable()?;
        let parsed = auth::sts::Policy::parse(text);
        let r = parsed.as_ref().map(|_| ()).map_err(Clone::clone);
        self.dest.sts = Some(parsed);
        r
    }

    /// The policy this session is held to (the config's until the plan is made).
    pub(super) fn policy(&self) -> Policy {
        self.plan.as_ref().map_or(self.cfg.policy, |p| p.policy)
    }

    /// Makes the plan when the negotiation starts; an error defers before a byte is sent.
    pub(super) fn make_plan(&mut self) -> Result<()> {
        let plan = auth::plan(self.cfg.policy, &self.dest, &self.server_name);
        if !self.dest.is_empty() || matches!(self.cfg.policy, Policy::Dane | Policy::DaneOnly) {
            self.log(LogLevel::Info, &plan.why);
        }
        let defer = plan.defer.clone();
        self.report.policy = Some(plan.policy.name());
        if !self.dest.is_empty() || plan.policy != self.cfg.policy || matches!(self.cfg.policy, Policy::Dane | Policy::DaneOnly) {
            self.report.policy_detail = Some(plan.why.clone());
        }
        if let Some(ctls) = self.cfg.client_tls.as_ref() {
            if defer.is_none() {
                match ctls.configs_for(&plan.check) {
                    Ok(c) => self.rung_configs = Some(c),
                    Err(e) => {
                        self.plan = Some(plan);
                        return Err(e);
                    }
                }
            }
        }
        self.plan = Some(plan);
        defer.map_or(Ok(()), Err)
    }

    /// The name the handshake is opened for: SNI (the TLSA base domain under DANE).
    pub(super) fn tls_name(&self) -> String {
        self.plan.as_ref().and_then(|p| p.sni.clone()).unwrap_or_else(|| self.server_name.clone())
    }

    /// Whether the plan checks the certificate itself in the handshake (DANE, MTA-STS
    /// enforce): then an established session's certificate is verified.
    pub(super) fn plan_enforces(&self) -> bool {
        self.plan.as_ref().is_some_and(|p| p.check != auth::Check::Config)
    }

    /// MTA-STS testing, after the handshake: would the certificate have passed enforce?
    pub(super) fn check_testing(&mut self, chain: &[rustls::pki_types::CertificateDer<'static>]) {
        let Some(name) = self.plan.as_ref().and_then(|p| p.testing.first().cloned()) else { return };
        let (Some(ctls), Ok(sn)) = (self.cfg.client_tls.as_ref(), ServerName::try_from(name.clone())) else { return };
        match ctls.check_chain(chain, &sn) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                self.log(LogLevel::Warn, &format!("MTA-STS testing: the certificate would fail enforce ({}); delivering", e.detail));
                self.testing_failure = Some(e);
            }
            None => self.testing_failure = Some(Error::new(Code::TrustAnchors, "MTA-STS testing: no trust anchors to check the certificate")),
        }
    }

    /// The session's TLS-RPT result, when the negotiation has ended.
    pub(super) fn tlsrpt_result(&self) -> Option<SessionResult> {
        let plan = self.plan.as_ref()?;
        let outcome = self.report.outcome();
        let reason = self.report.reason.unwrap_or(Code::Ok);
        let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        // The failure this session reports: its own end, or what the policy found on the
        // way (an MX outside a testing policy, a certificate that would fail enforce, a
        // policy that did not parse) even when the mail went.
        let failed = |code: Code, detail: &str, rt: Option<&'static str>| Failure {
            result_type: rt.or_else(|| tls::rfc8460_result_type(code)).unwrap_or("validation-failure").to_string(),
            receiving_mx_hostname: Some(self.dest.mx_host.clone().unwrap_or_else(|| self.server_name.clone())),
            receiving_ip: self.host.parse::<std::net::IpAddr>().ok().map(|ip| ip.to_string()),
            // RFC 8460 section 4.4: failure-reason-code is the text of the error;
            // additional-information is a URI, which we have none of.
            failure_reason_code: Some(format!("{}: {detail}", code.name())),
            ..Failure::default()
        };
        let failure = match (outcome, reason) {
            (Outcome::Defer | Outcome::Fail, _) => Some(failed(reason, &self.report.detail, plan.result_type.filter(|_| plan.defer.is_some()))),
            (_, r) if r != Code::Ok && self.report.rfc8460.is_some() => Some(failed(r, &self.report.detail, self.report.rfc8460)),
            _ => match (&self.testing_failure, plan.result_type) {
                (Some(e), _) => Some(failed(e.code, &e.detail, None)),
                (None, Some(rt)) => {
                    let code = if rt == "sts-policy-invalid" { Code::StsPolicyInvalid } else { Code::StsMxMismatch };
                    Some(failed(code, &plan.why, Some(rt)))
                }
                (None, None) => None,
            },
        };
        Some(SessionResult { policy: plan.report.clone(), failure, time })
    }
}

/// Which name of the destination a setter sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationName {
    /// The TLSA base domain (SNI under DANE).
    TlsaBase,
    /// The MX host name.
    MxHost,
    /// The next-hop (recipient) domain.
    NextHop,
}

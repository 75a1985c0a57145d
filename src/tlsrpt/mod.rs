//! TLS-RPT (RFC 8460): what one delivery attempt says about the destination's
//! policy, and the aggregate report made from many. It holds plain data and the
//! report's JSON; it sees no pointer and takes no decision about a session (the
//! session fills a [`SessionResult`] in, the caller's reporter adds them up).
//! [`record`] writes and reads one session as a line, [`aggregate`] adds them up.

pub mod aggregate;
pub mod record;

pub use aggregate::Aggregate;

/// The policy a session was held to (RFC 8460 section 4.4, "policy-type").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyType {
    /// DANE TLSA records (RFC 7672).
    Tlsa,
    /// An MTA-STS policy (RFC 8461).
    Sts,
    /// Neither: no policy applied.
    NoPolicyFound,
}

impl PolicyType {
    /// The name RFC 8460 gives it.
    pub fn name(self) -> &'static str {
        match self {
            PolicyType::Tlsa => "tlsa",
            PolicyType::Sts => "sts",
            PolicyType::NoPolicyFound => "no-policy-found",
        }
    }

    /// The type for its RFC 8460 name.
    pub fn from_name(s: &str) -> Option<PolicyType> {
        Some(match s {
            "tlsa" => PolicyType::Tlsa,
            "sts" => PolicyType::Sts,
            "no-policy-found" => PolicyType::NoPolicyFound,
            _ => return None,
        })
    }
}

/// The result types of RFC 8460 section 4.3.
pub const RESULT_TYPES: &[&str] = &[
    // 4.3.1, negotiation failures
    "starttls-not-supported",
    "certificate-host-mismatch",
    "certificate-expired",
    "certificate-not-trusted",
    "validation-failure",
    // 4.3.2.1, DANE
    "tlsa-invalid",
    "dnssec-invalid",
    "dane-required",
    // 4.3.2.2, MTA-STS
    "sts-policy-fetch-error",
    "sts-policy-invalid",
    "sts-webpki-invalid",
];

/// The policy part of a report entry: what identifies one policy of the aggregate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId {
    /// `tlsa`, `sts` or `no-policy-found` (None only in a default value).
    pub policy_type: Option<PolicyType>,
    /// The policy as text: the TLSA records in presentation form, or the MTA-STS
    /// policy's lines; empty for `no-policy-found`.
    pub policy_strings: Vec<String>,
    /// The policy domain: the next-hop (recipient) domain.
    pub policy_domain: String,
    /// The MX host (DANE) or the policy's `mx` patterns (MTA-STS), when known.
    pub mx_host: Vec<String>,
}

/// Why one session failed, as a `failure-details` entry counts it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Failure {
    /// One of [`RESULT_TYPES`].
    pub result_type: String,
    /// The sending MTA's address, when the caller knows it.
    pub sending_mta_ip: Option<String>,
    /// The receiving MX host name.
    pub receiving_mx_hostname: Option<String>,
    /// The receiving MX's HELO/EHLO greeting name, when known.
    pub receiving_mx_helo: Option<String>,
    /// The receiving address, when known.
    pub receiving_ip: Option<String>,
    /// A short machine-readable reason (ours: the mailtls result name).
    pub failure_reason_code: Option<String>,
    /// Free text (ours: the failure's detail).
    pub additional_information: Option<String>,
}

/// What one session contributes to a TLS-RPT report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionResult {
    /// The policy the session was held to.
    pub policy: PolicyId,
    /// None: the session succeeded under that policy.
    pub failure: Option<Failure>,
    /// When the session ended, in seconds since the epoch.
    pub time: u64,
}

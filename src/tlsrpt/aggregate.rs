//! The aggregate report of RFC 8460 section 4: many sessions' results added up per
//! policy, and per kind of failure within a policy, written as the JSON of section
//! 4.4 for a date range.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Failure, PolicyId, PolicyType, SessionResult};
use crate::error::{Code, Error, Result};

/// The last second RFC 3339 can write (its years have four digits, section 5.6).
pub const MAX_TIME: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z

/// Sessions added up for a report. The times are kept (eight bytes a session, not
/// the session): the range is chosen when the report is written, so one aggregate
/// can be written for yesterday and, later, for today.
#[derive(Clone, Debug, Default)]
pub struct Aggregate {
    organization: String,
    contact: String,
    /// Per policy, per outcome (None: success), the time of each session.
    sessions: BTreeMap<PolicyId, BTreeMap<Option<Failure>, Vec<u64>>>,
    count: usize,
}

impl Aggregate {
    /// An empty aggregate for reports by `organization_name` ("organization-name")
    /// with `contact_info` ("contact-info": an email address or a URL, section 4.4).
    pub fn new(organization_name: impl Into<String>, contact_info: impl Into<String>) -> Aggregate {
        Aggregate { organization: organization_name.into(), contact: contact_info.into(), ..Aggregate::default() }
    }

    /// Adds one session. Refused (`TlsrptRecordInvalid`) when it could not be reported:
    /// an empty policy domain, a result type RFC 8460 section 4.3 does not define.
    /// A policy without a type counts as `no-policy-found`, as its record line says.
    pub fn add(&mut self, r: &SessionResult) -> Result<()> {
        r.check()?;
        let mut policy = r.policy.clone();
        policy.policy_type.get_or_insert(PolicyType::NoPolicyFound);
        self.sessions.entry(policy).or_default().entry(r.failure.clone()).or_default().push(r.time);
        self.count += 1;
        Ok(())
    }

    /// Adds the session of one record line ([`SessionResult::from_line`]).
    pub fn add_line(&mut self, line: &str) -> Result<()> {
        self.add(&SessionResult::from_line(line)?)
    }

    /// How many sessions were added, whatever their time.
    pub fn session_count(&self) -> usize {
        self.count
    }

    /// The earliest and the latest session time, None when nothing was added.
    pub fn time_range(&self) -> Option<(u64, u64)> {
        let times = self.sessions.values().flat_map(|o| o.values()).flatten().copied();
        times.fold(None, |acc, t| match acc {
            None => Some((t, t)),
            Some((lo, hi)) => Some((lo.min(t), hi.max(t))),
        })
    }

    /// The report (RFC 8460 section 4.4) of the sessions whose time is in
    /// `[start_unix, end_unix)`; the others are left out, not counted anywhere.
    /// "end-datetime" is written as the range's last second, `end_unix - 1`: a daily
    /// report reads 00:00:00Z to 23:59:59Z, as the reports in the field do, and
    /// no session time (whole seconds) falls between the two forms.
    ///
    /// Policies are in order of domain, type, policy strings and MX hosts; failures
    /// of a policy in order of result type then the other fields. Unknown optional
    /// fields are left out (their types are strings: null is not one); a policy
    /// without failures in the range has no "failure-details"; a policy without a
    /// session in the range is not listed. Refused (`InvalidParameter`): an empty
    /// range, an end past 9999, an empty report id.
    pub fn to_json(&self, start_unix: u64, end_unix: u64, report_id: &str) -> Result<String> {
        if start_unix >= end_unix {
            return Err(Error::new(Code::InvalidParameter, format!("TLS-RPT report: the range [{start_unix}, {end_unix}) is empty")));
        }
        if end_unix - 1 > MAX_TIME {
            return Err(Error::new(Code::InvalidParameter, format!("TLS-RPT report: end {end_unix} is after year 9999")));
        }
        if report_id.is_empty() {
            return Err(Error::new(Code::InvalidParameter, "TLS-RPT report: empty report-id"));
        }
        let inside = |times: &Vec<u64>| times.iter().filter(|t| (start_unix..end_unix).contains(*t)).count() as u64;
        let mut policies: Vec<PolicyOut> = Vec::new();
        for (policy, outcomes) in &self.sessions {
            let mut ok = 0;
            let mut details = Vec::new();
            for (failure, times) in outcomes {
                let n = inside(times);
                match failure {
                    _ if n == 0 => {}
                    None => ok += n,
                    Some(f) => details.push(DetailOut {
                        result_type: &f.result_type,
                        sending_mta_ip: f.sending_mta_ip.as_deref(),
                        receiving_mx_hostname: f.receiving_mx_hostname.as_deref(),
                        receiving_mx_helo: f.receiving_mx_helo.as_deref(),
                        receiving_ip: f.receiving_ip.as_deref(),
                        failed_session_count: n,
                        additional_information: f.additional_information.as_deref(),
                        failure_reason_code: f.failure_reason_code.as_deref(),
                    }),
                }
            }
            let failed: u64 = details.iter().map(|d| d.failed_session_count).sum();
            if ok + failed == 0 {
                continue;
            }
            policies.push(PolicyOut {
                policy: PolicyFields {
                    policy_type: policy.policy_type.unwrap_or(PolicyType::NoPolicyFound).name(),
                    policy_string: &policy.policy_strings,
                    policy_domain: &policy.policy_domain,
                    mx_host: &policy.mx_host,
                },
                summary: Summary { total_successful_session_count: ok, total_failure_session_count: failed },
                failure_details: details,
            });
        }
        // The map's order puts the type first; a reader looks for its domain first.
        policies.sort_by(|a, b| {
            let (a, b) = (&a.policy, &b.policy);
            (a.policy_domain, a.policy_type, a.policy_string, a.mx_host).cmp(&(b.policy_domain, b.policy_type, b.policy_string, b.mx_host))
        });
        let report = ReportOut {
            organization_name: &self.organization,
            date_range: DateRange { start_datetime: rfc3339(start_unix), end_datetime: rfc3339(end_unix - 1) },
            contact_info: &self.contact,
            report_id,
            policies,
        };
        serde_json::to_string(&report).map_err(|e| Error::new(Code::Panic, format!("TLS-RPT report: {e}")))
    }
}

impl Aggregate {
    /// Writes [`Aggregate::to_json`] and a line end to `path`, replacing it whole:
    /// the report goes to a file beside it first (created, mode 0644: a report is
    /// sent to the policy domain, nothing in it is secret from the host), is synced,
    /// and takes the name by rename, so a reader never sees half a report.
    pub fn write_file(&self, start_unix: u64, end_unix: u64, report_id: &str, path: &std::path::Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let json = self.to_json(start_unix, end_unix, report_id)?;
        let io = |e: std::io::Error, what: &std::path::Path| Error::new(Code::Io, format!("TLS-RPT report: {}: {e}", what.display()));
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp);
        let written = (|| {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp)?;
            f.write_all(json.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()
        })();
        if let Err(e) = written {
            // Not ours to remove when create_new found it there.
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                let _ = std::fs::remove_file(&tmp);
            }
            return Err(io(e, &tmp));
        }
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e, path)
        })
    }
}

impl SessionResult {
    /// Whether the result can go into a report: a policy domain, and on failure a
    /// result type of RFC 8460 section 4.3.
    pub fn check(&self) -> Result<()> {
        let bad = |why: String| Error::new(Code::TlsrptRecordInvalid, why);
        if self.policy.policy_domain.is_empty() {
            return Err(bad("empty policy-domain".into()));
        }
        if let Some(f) = &self.failure {
            if !super::RESULT_TYPES.contains(&f.result_type.as_str()) {
                return Err(bad(format!("unknown result-type \"{}\" (not one of RFC 8460 section 4.3)", f.result_type)));
            }
        }
        Ok(())
    }
}

// The report's JSON, field for field and in the order of RFC 8460 section 4.4.

#[derive(Serialize)]
struct ReportOut<'a> {
    #[serde(rename = "organization-name")]
    organization_name: &'a str,
    #[serde(rename = "date-range")]
    date_range: DateRange,
    #[serde(rename = "contact-info")]
    contact_info: &'a str,
    #[serde(rename = "report-id")]
    report_id: &'a str,
    policies: Vec<PolicyOut<'a>>,
}

#[derive(Serialize)]
struct DateRange {
    #[serde(rename = "start-datetime")]
    start_datetime: String,
    #[serde(rename = "end-datetime")]
    end_datetime: String,
}

#[derive(Serialize)]
struct PolicyOut<'a> {
    policy: PolicyFields<'a>,
    summary: Summary,
    #[serde(rename = "failure-details", skip_serializing_if = "Vec::is_empty")]
    failure_details: Vec<DetailOut<'a>>,
}

#[derive(Serialize)]
struct PolicyFields<'a> {
    #[serde(rename = "policy-type")]
    policy_type: &'static str,
    /// Empty for no-policy-found: there is no policy to quote, and an empty list says so.
    #[serde(rename = "policy-string")]
    policy_string: &'a [String],
    #[serde(rename = "policy-domain")]
    policy_domain: &'a str,
    /// Empty when the session did not know them: left out rather than claimed empty.
    #[serde(rename = "mx-host", skip_serializing_if = "<[String]>::is_empty")]
    mx_host: &'a [String],
}

#[derive(Serialize)]
struct Summary {
    #[serde(rename = "total-successful-session-count")]
    total_successful_session_count: u64,
    #[serde(rename = "total-failure-session-count")]
    total_failure_session_count: u64,
}

#[derive(Serialize)]
struct DetailOut<'a> {
    #[serde(rename = "result-type")]
    result_type: &'a str,
    #[serde(rename = "sending-mta-ip", skip_serializing_if = "Option::is_none")]
    sending_mta_ip: Option<&'a str>,
    #[serde(rename = "receiving-mx-hostname", skip_serializing_if = "Option::is_none")]
    receiving_mx_hostname: Option<&'a str>,
    #[serde(rename = "receiving-mx-helo", skip_serializing_if = "Option::is_none")]
    receiving_mx_helo: Option<&'a str>,
    #[serde(rename = "receiving-ip", skip_serializing_if = "Option::is_none")]
    receiving_ip: Option<&'a str>,
    #[serde(rename = "failed-session-count")]
    failed_session_count: u64,
    #[serde(rename = "additional-information", skip_serializing_if = "Option::is_none")]
    additional_information: Option<&'a str>,
    #[serde(rename = "failure-reason-code", skip_serializing_if = "Option::is_none")]
    failure_reason_code: Option<&'a str>,
}

fn leap(year: u64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Seconds since the epoch as an RFC 3339 (section 5.6) UTC date-time,
/// "2024-02-29T23:59:59Z". Counts whole years, then months, from 1970: at most
/// 8030 steps for year 9999, and no table to get wrong. Times past [`MAX_TIME`]
/// would need a fifth year digit; the callers refuse them first.
pub fn rfc3339(unix: u64) -> String {
    let secs = unix % 86_400;
    let mut days = unix / 86_400;
    let mut year = 1970;
    loop {
        let len = if leap(year) { 366 } else { 365 };
        if days < len {
            break;
        }
        days -= len;
        year += 1;
    }
    let feb = if leap(year) { 29 } else { 28 };
    let mut month = 1;
    for len in [31, feb, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] {
        if days < len {
            break;
        }
        days -= len;
        month += 1;
    }
    format!("{year:04}-{month:02}-{:02}T{:02}:{:02}:{:02}Z", days + 1, secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_rfc3339() {
        // Checked against Python's datetime.fromtimestamp(t, timezone.utc).
        for (t, s) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
            (1_704_067_200, "2024-01-01T00:00:00Z"),
            (1_709_164_800, "2024-02-29T00:00:00Z"),
            (1_709_251_199, "2024-02-29T23:59:59Z"),
            (4_107_456_000, "2100-02-28T00:00:00Z"), // 2100 is not a leap year
            (4_107_542_400, "2100-03-01T00:00:00Z"),
            (MAX_TIME, "9999-12-31T23:59:59Z"),
        ] {
            assert_eq!(rfc3339(t), s, "{t}");
        }
    }

    fn policy(t: PolicyType, domain: &str) -> PolicyId {
        PolicyId {
            policy_type: Some(t),
            policy_strings: if t == PolicyType::NoPolicyFound { vec![] } else { vec![format!("{} for {domain}", t.name())] },
            policy_domain: domain.into(),
            mx_host: if t == PolicyType::NoPolicyFound { vec![] } else { vec![format!("mx.{domain}")] },
        }
    }

    fn session(p: &PolicyId, result_type: Option<&str>, ip: &str, time: u64) -> SessionResult {
        SessionResult {
            policy: p.clone(),
            failure: result_type.map(|rt| Failure {
                result_type: rt.into(),
                receiving_ip: Some(ip.into()),
                ..Failure::default()
            }),
            time,
        }
    }

    const DAY: u64 = 1_704_067_200; // 2024-01-01

    #[test]
    fn sessions_are_grouped_per_policy_and_per_failure() {
        let sts = policy(PolicyType::Sts, "b.example");
        let tlsa = policy(PolicyType::Tlsa, "a.example");
        let none = policy(PolicyType::NoPolicyFound, "c.example");
        let mut a = Aggregate::new("Example Org", "mailto:tlsrpt@example.org");
        for i in 0..3 {
            a.add(&session(&sts, None, "", DAY + i)).unwrap();
        }
        a.add(&session(&sts, Some("certificate-expired"), "192.0.2.1", DAY + 10)).unwrap();
        a.add(&session(&sts, Some("certificate-expired"), "192.0.2.1", DAY + 11)).unwrap();
        a.add(&session(&sts, Some("certificate-expired"), "192.0.2.2", DAY + 12)).unwrap();
        a.add(&session(&tlsa, Some("tlsa-invalid"), "192.0.2.3", DAY + 13)).unwrap();
        a.add(&session(&none, None, "", DAY + 14)).unwrap();
        // Outside [DAY, DAY + 86400): added, but in no report of that day.
        a.add(&session(&tlsa, None, "", DAY - 1)).unwrap();
        a.add(&session(&none, Some("starttls-not-supported"), "192.0.2.9", DAY + 86_400)).unwrap();
        assert_eq!(a.session_count(), 10);
        assert_eq!(a.time_range(), Some((DAY - 1, DAY + 86_400)));

        let j = a.to_json(DAY, DAY + 86_400, "2024-01-01T00:00:00Z_example.org").unwrap();
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["organization-name"], "Example Org");
        assert_eq!(v["date-range"]["start-datetime"], "2024-01-01T00:00:00Z");
        assert_eq!(v["date-range"]["end-datetime"], "2024-01-01T23:59:59Z");
        assert_eq!(v["contact-info"], "mailto:tlsrpt@example.org");
        assert_eq!(v["report-id"], "2024-01-01T00:00:00Z_example.org");
        let p = v["policies"].as_array().unwrap();
        let domains: Vec<&str> = p.iter().map(|p| p["policy"]["policy-domain"].as_str().unwrap()).collect();
        assert_eq!(domains, ["a.example", "b.example", "c.example"], "sorted by domain: {j}");

        assert_eq!(p[0]["policy"]["policy-type"], "tlsa");
        assert_eq!(p[0]["summary"]["total-successful-session-count"], 0, "the success before the day is out: {j}");
        assert_eq!(p[0]["summary"]["total-failure-session-count"], 1);

        assert_eq!(p[1]["policy"]["policy-type"], "sts");
        assert_eq!(p[1]["policy"]["policy-string"][0], "sts for b.example");
        assert_eq!(p[1]["policy"]["mx-host"][0], "mx.b.example");
        assert_eq!(p[1]["summary"]["total-successful-session-count"], 3);
        assert_eq!(p[1]["summary"]["total-failure-session-count"], 3);
        let d = p[1]["failure-details"].as_array().unwrap();
        assert_eq!(d.len(), 2, "identical failures are one entry: {j}");
        assert_eq!(d[0]["receiving-ip"], "192.0.2.1");
        assert_eq!(d[0]["failed-session-count"], 2);
        assert_eq!(d[1]["receiving-ip"], "192.0.2.2");
        assert_eq!(d[1]["failed-session-count"], 1);
        assert!(d[0].get("sending-mta-ip").is_none(), "unknown fields are left out, not null: {j}");

        assert_eq!(p[2]["policy"]["policy-type"], "no-policy-found");
        assert_eq!(p[2]["policy"]["policy-string"], serde_json::json!([]));
        assert!(p[2]["policy"].get("mx-host").is_none(), "{j}");
        assert!(p[2].get("failure-details").is_none(), "no failure in the day, no details: {j}");

        // The same aggregate, another range: only the session after the day.
        let next = a.to_json(DAY + 86_400, DAY + 2 * 86_400, "next").unwrap();
        let v: serde_json::Value = serde_json::from_str(&next).unwrap();
        assert_eq!(v["policies"].as_array().unwrap().len(), 1, "{next}");
        assert_eq!(v["policies"][0]["failure-details"][0]["result-type"], "starttls-not-supported");
        // Written twice, the same bytes.
        assert_eq!(a.to_json(DAY, DAY + 86_400, "x").unwrap(), a.to_json(DAY, DAY + 86_400, "x").unwrap());
    }

    #[test]
    fn an_empty_range_has_an_empty_policy_list() {
        let a = Aggregate::new("o", "c");
        assert_eq!(a.time_range(), None);
        let j = a.to_json(0, 86_400, "r").unwrap();
        assert_eq!(
            j,
            r#"{"organization-name":"o","date-range":{"start-datetime":"1970-01-01T00:00:00Z","end-datetime":"1970-01-01T23:59:59Z"},"contact-info":"c","report-id":"r","policies":[]}"#
        );
    }

    #[test]
    fn bad_ranges_ids_and_sessions_are_refused() {
        let mut a = Aggregate::new("o", "c");
        assert_eq!(a.to_json(10, 10, "r").unwrap_err().code, Code::InvalidParameter);
        assert_eq!(a.to_json(11, 10, "r").unwrap_err().code, Code::InvalidParameter);
        assert_eq!(a.to_json(0, MAX_TIME + 2, "r").unwrap_err().code, Code::InvalidParameter);
        assert!(a.to_json(0, MAX_TIME + 1, "r").is_ok());
        assert_eq!(a.to_json(0, 1, "").unwrap_err().code, Code::InvalidParameter);
        let p = policy(PolicyType::Sts, "x.example");
        let e = a.add(&session(&p, Some("sts-something"), "192.0.2.1", 1)).unwrap_err();
        assert_eq!(e.code, Code::TlsrptRecordInvalid);
        let e = a.add(&session(&PolicyId::default(), None, "", 1)).unwrap_err();
        assert!(e.detail.contains("empty policy-domain"), "{e}");
        assert_eq!(a.add_line("{").unwrap_err().code, Code::TlsrptRecordInvalid);
        assert_eq!(a.session_count(), 0, "refused sessions are not counted");
    }

    #[test]
    fn a_policy_without_a_type_counts_as_no_policy_found() {
        let mut a = Aggregate::new("o", "c");
        let p = PolicyId { policy_domain: "d.example".into(), ..PolicyId::default() };
        a.add(&session(&p, None, "", 5)).unwrap();
        assert!(a.to_json(0, 10, "r").unwrap().contains(r#""policy-type":"no-policy-found""#));
    }
}

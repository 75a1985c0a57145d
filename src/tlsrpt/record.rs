//! One session's TLS-RPT result as one line of JSON (JSON Lines): what an MTA writes
//! when a delivery attempt ends and reads back, maybe in another process and a day
//! later, to build the report. The fields are named as RFC 8460 section 4.4 names
//! them in a report, so a line reads like a one-session report; `time` and `result`
//! are ours (a report has a date range and counts instead), and `"mailtls-tlsrpt":1`
//! says which format this is, so a later one can be told apart.
//!
//! Reading is strict: a line from a file is input, and a bad one is refused with the
//! reason rather than counted wrong.

use serde::{Deserialize, Serialize};

use super::{Failure, PolicyId, PolicyType, SessionResult};
use crate::error::{Code, Error, Result};

/// The format version written in `"mailtls-tlsrpt"`.
pub const FORMAT: u32 = 1;

/// The longest line read: a session's policy strings and names fit many times over,
/// and a corrupt or hostile file does not make the reader hold megabytes per line.
pub const MAX_LINE: usize = 64 * 1024;

/// A line as it is on disk. Field order is the order written.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(rename = "mailtls-tlsrpt")]
    format: u32,
    time: u64,
    #[serde(rename = "policy-type")]
    policy_type: String,
    #[serde(rename = "policy-string")]
    policy_string: Vec<String>,
    #[serde(rename = "policy-domain")]
    policy_domain: String,
    #[serde(rename = "mx-host")]
    mx_host: Vec<String>,
    result: String,
    #[serde(rename = "result-type", default, skip_serializing_if = "Option::is_none")]
    result_type: Option<String>,
    #[serde(rename = "sending-mta-ip", default, skip_serializing_if = "Option::is_none")]
    sending_mta_ip: Option<String>,
    #[serde(rename = "receiving-mx-hostname", default, skip_serializing_if = "Option::is_none")]
    receiving_mx_hostname: Option<String>,
    #[serde(rename = "receiving-mx-helo", default, skip_serializing_if = "Option::is_none")]
    receiving_mx_helo: Option<String>,
    #[serde(rename = "receiving-ip", default, skip_serializing_if = "Option::is_none")]
    receiving_ip: Option<String>,
    #[serde(rename = "failure-reason-code", default, skip_serializing_if = "Option::is_none")]
    failure_reason_code: Option<String>,
    #[serde(rename = "additional-information", default, skip_serializing_if = "Option::is_none")]
    additional_information: Option<String>,
}

fn bad(why: impl std::fmt::Display) -> Error {
    Error::new(Code::TlsrptRecordInvalid, why.to_string())
}

impl SessionResult {
    /// The result as one JSON object on one line, without the line end (serde_json
    /// escapes every control character, so peer text cannot break the line).
    pub fn to_line(&self) -> String {
        let f = self.failure.as_ref();
        let line = Line {
            format: FORMAT,
            time: self.time,
            policy_type: self.policy.policy_type.unwrap_or(PolicyType::NoPolicyFound).name().to_string(),
            policy_string: self.policy.policy_strings.clone(),
            policy_domain: self.policy.policy_domain.clone(),
            mx_host: self.policy.mx_host.clone(),
            result: if f.is_some() { "failure" } else { "success" }.to_string(),
            result_type: f.map(|f| f.result_type.clone()),
            sending_mta_ip: f.and_then(|f| f.sending_mta_ip.clone()),
            receiving_mx_hostname: f.and_then(|f| f.receiving_mx_hostname.clone()),
            receiving_mx_helo: f.and_then(|f| f.receiving_mx_helo.clone()),
            receiving_ip: f.and_then(|f| f.receiving_ip.clone()),
            failure_reason_code: f.and_then(|f| f.failure_reason_code.clone()),
            additional_information: f.and_then(|f| f.additional_information.clone()),
        };
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_string(&line).unwrap_or_default()
    }

    /// Reads a line written by [`SessionResult::to_line`] (one line end after it is
    /// allowed). Refuses, with `TlsrptRecordInvalid` and the reason: more than
    /// [`MAX_LINE`] bytes, anything that is not one JSON object of this format, a
    /// missing or unknown field, an unknown policy type or result type, failure
    /// fields on a success, and an empty policy domain.
    pub fn from_line(text: &str) -> Result<SessionResult> {
        if text.len() > MAX_LINE {
            return Err(bad(format!("{} bytes, more than the {MAX_LINE} a record may have", text.len())));
        }
        let text = text.strip_suffix('\n').unwrap_or(text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.contains('\n') {
            return Err(bad("more than one line"));
        }
        // serde would also take the fields as an array, in order: a record is an object.
        if !text.trim_start().starts_with('{') {
            return Err(bad("not a JSON object"));
        }
        let l: Line = serde_json::from_str(text).map_err(bad)?;
        if l.format != FORMAT {
            return Err(bad(format!("format version {} (this library reads {FORMAT})", l.format)));
        }
        let policy_type = PolicyType::from_name(&l.policy_type).ok_or_else(|| {
            bad(format!("unknown policy-type \"{}\" (tlsa, sts or no-policy-found)", l.policy_type))
        })?;
        let details = [
            &l.sending_mta_ip,
            &l.receiving_mx_hostname,
            &l.receiving_mx_helo,
            &l.receiving_ip,
            &l.failure_reason_code,
            &l.additional_information,
        ];
        let failure = match l.result.as_str() {
            "success" => {
                if l.result_type.is_some() || details.iter().any(|d| d.is_some()) {
                    return Err(bad("a success with failure fields"));
                }
                None
            }
            "failure" => {
                let Some(rt) = l.result_type else { return Err(bad("a failure without result-type")) };
                Some(Failure {
                    result_type: rt,
                    sending_mta_ip: l.sending_mta_ip,
                    receiving_mx_hostname: l.receiving_mx_hostname,
                    receiving_mx_helo: l.receiving_mx_helo,
                    receiving_ip: l.receiving_ip,
                    failure_reason_code: l.failure_reason_code,
                    additional_information: l.additional_information,
                })
            }
            other => return Err(bad(format!("result \"{other}\" (success or failure)"))),
        };
        let r = SessionResult {
            policy: PolicyId {
                policy_type: Some(policy_type),
                policy_strings: l.policy_string,
                policy_domain: l.policy_domain,
                mx_host: l.mx_host,
            },
            failure,
            time: l.time,
        };
        // The domain and the result type (RFC 8460 section 4.3 lists them all).
        r.check()?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> SessionResult {
        SessionResult {
            policy: PolicyId {
                policy_type: Some(PolicyType::Tlsa),
                policy_strings: vec!["3 1 1 0123abcd".into()],
                policy_domain: "example.org".into(),
                mx_host: vec!["mx.example.org".into()],
            },
            failure: Some(Failure {
                result_type: "certificate-expired".into(),
                sending_mta_ip: Some("192.0.2.1".into()),
                receiving_mx_hostname: Some("mx.example.org".into()),
                receiving_mx_helo: None,
                receiving_ip: Some("2001:db8::25".into()),
                failure_reason_code: Some("certificate-expired".into()),
                additional_information: Some("line\nbreak \"quoted\" \u{1}".into()),
            }),
            time: 1_700_000_000,
        }
    }

    #[test]
    fn a_failure_round_trips_on_one_line() {
        let r = failed();
        let line = r.to_line();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("{\"mailtls-tlsrpt\":1,\"time\":1700000000,\"policy-type\":\"tlsa\""), "{line}");
        assert!(line.contains("\"result\":\"failure\",\"result-type\":\"certificate-expired\""), "{line}");
        assert!(!line.contains("receiving-mx-helo"), "unknown fields are left out: {line}");
        assert!(line.contains(r#""additional-information":"line\nbreak \"quoted\" \u0001""#), "{line}");
        assert_eq!(SessionResult::from_line(&line).unwrap(), r);
        assert_eq!(SessionResult::from_line(&format!("{line}\r\n")).unwrap(), r);
    }

    #[test]
    fn a_success_round_trips_without_failure_fields() {
        let r = SessionResult {
            policy: PolicyId {
                policy_type: Some(PolicyType::NoPolicyFound),
                policy_strings: vec![],
                policy_domain: "example.net".into(),
                mx_host: vec![],
            },
            failure: None,
            time: 5,
        };
        let line = r.to_line();
        assert_eq!(
            line,
            r#"{"mailtls-tlsrpt":1,"time":5,"policy-type":"no-policy-found","policy-string":[],"policy-domain":"example.net","mx-host":[],"result":"success"}"#
        );
        assert_eq!(SessionResult::from_line(&line).unwrap(), r);
    }

    fn refused(line: &str, why: &str) {
        match SessionResult::from_line(line) {
            Ok(r) => panic!("accepted {line:?} as {r:?}"),
            Err(e) => {
                assert_eq!(e.code, Code::TlsrptRecordInvalid, "{e}");
                assert!(e.detail.contains(why), "{line:?}: {} lacks {why:?}", e.detail);
            }
        }
    }

    #[test]
    fn malformed_lines_are_refused_with_the_reason() {
        let good = failed().to_line();
        refused(&good.replace("certificate-expired\",\"sending", "certificate-stale\",\"sending"), "unknown result-type \"certificate-stale\"");
        refused(&good.replace("\"tlsa\"", "\"dane\""), "unknown policy-type \"dane\"");
        refused(&good.replace("\"mailtls-tlsrpt\":1", "\"mailtls-tlsrpt\":2"), "format version 2");
        refused(&good.replace("\"policy-domain\":\"example.org\",", ""), "missing field `policy-domain`");
        refused(&good.replace("\"example.org\"", "\"\""), "empty policy-domain");
        refused(&good.replace("\"time\":1700000000", "\"time\":-1"), "expected u64");
        refused(&good.replace("\"time\"", "\"tiem\""), "unknown field `tiem`");
        refused(&good.replace("\"failure\"", "\"maybe\""), "result \"maybe\"");
        refused(&good.replace("\"result\":\"failure\"", "\"result\":\"success\""), "a success with failure fields");
        refused(&good.replace(",\"result-type\":\"certificate-expired\"", ""), "a failure without result-type");
        refused(&format!("{good}\n{good}"), "more than one line");
        refused(&format!("{good} {good}"), "trailing characters");
        refused(&good[..good.len() - 1], "EOF");
        refused("", "not a JSON object");
        refused("{", "EOF");
        refused("[1,2]", "not a JSON object");
        let as_array = format!("[1,{},\"tlsa\",[],\"d\",[],\"success\",null,null,null,null,null,null,null]", 5);
        refused(&as_array, "not a JSON object");
        let long = format!("{}{}", good, " ".repeat(MAX_LINE));
        refused(&long, "more than the 65536");
    }
}

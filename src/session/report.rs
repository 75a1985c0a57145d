//! The report: one structured record of what a negotiation did.

use std::time::Duration;

use crate::error::Code;
use crate::recovery::{FailureClass, Rung};
use crate::tls::certinfo::CertInfo;

/// How a negotiation ended.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished yet.
    Pending = 0,
    /// TLS is established.
    Tls = 1,
    /// The session goes on in plaintext, as the policy allows.
    Plaintext = 2,
    /// Temporary failure: try again later (the mail stays queued).
    Defer = 3,
    /// Permanent failure (bounce).
    Fail = 4,
    /// Server: the connection was handed to the application's legacy TLS engine.
    Handoff = 5,
}

impl Outcome {
    /// The name used in logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Tls => "tls",
            Outcome::Plaintext => "plaintext",
            Outcome::Defer => "defer",
            Outcome::Fail => "fail",
            Outcome::Handoff => "handoff",
        }
    }
}

/// One connection attempt of a negotiation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The rung of the ladder whose hello was sent (None when no handshake began).
    pub rung: Option<Rung>,
    /// How it ended.
    pub code: Code,
    /// The failure class (None on success).
    pub class: FailureClass,
}

/// Times of the phases of a negotiation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// From start to the end of the plaintext dialogue (greeting, capabilities, STARTTLS).
    pub plaintext: Duration,
    /// The TLS handshake.
    pub handshake: Duration,
    /// From start to the end.
    pub total: Duration,
}

/// Everything the C side can read about a negotiation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// How it ended.
    pub outcome: Option<Outcome>,
    /// Why (Ok when all went to plan).
    pub reason: Option<Code>,
    /// The full detail of the reason.
    pub detail: String,
    /// The RFC 8460 result type, where one fits.
    pub rfc8460: Option<&'static str>,
    /// Whether the peer offered STARTTLS (client side).
    pub starttls_offered: bool,
    /// Negotiated TLS version ("TLSv1.3").
    pub tls_version: Option<String>,
    /// Negotiated cipher suite.
    pub cipher: Option<String>,
    /// Negotiated key-exchange group.
    pub group: Option<String>,
    /// Whether the session was resumed.
    pub resumed: bool,
    /// Whether the IMAP server greeted with `PREAUTH` (already authenticated: no login).
    pub preauth: bool,
    /// The peer's end-entity certificate.
    pub peer_cert: Option<CertInfo>,
    /// Whether the peer's chain and name verified against the trust anchors (None: not checked).
    pub cert_verified: Option<bool>,
    /// Why the chain or name did not verify.
    pub cert_error: Option<String>,
    /// The capabilities (after TLS only the protected ones).
    pub capabilities: Vec<String>,
    /// One entry per connection.
    pub attempts: Vec<Attempt>,
    /// Phase timings.
    pub timings: Timings,
    /// Server: bytes pipelined after STARTTLS that were discarded.
    pub discarded_after_starttls: u64,
    /// The rung the caller should use on a new connection (reason `RetryNeeded`).
    pub retry_rung: Option<Rung>,
    /// Whether the retry should leave SNI out.
    pub retry_without_sni: bool,
    /// What the intolerance memory did: used, recorded, pinned, suspected downgrade.
    pub memory_events: Vec<String>,
    /// Suspicious things seen in plaintext that must not be shown as trusted (an IMAP
    /// `[ALERT]` before TLS).
    pub warnings: Vec<String>,
    /// Server: the format of the client's first flight after the go reply.
    pub hello: Option<crate::tls::sniff::Hello>,
    /// Server: what was done with it.
    pub hello_action: Option<crate::config::HelloAction>,
    /// Client: what the session contributes to a TLS-RPT report (RFC 8460): the
    /// policy it was held to and, on failure, why. Set when the negotiation ends.
    pub tlsrpt: Option<crate::tlsrpt::SessionResult>,
    /// Client: the policy the session was held to, after DANE and MTA-STS.
    pub policy: Option<&'static str>,
    /// Client: how DANE and MTA-STS made it (one line), when they had a say.
    pub policy_detail: Option<String>,
}

impl Report {
    /// The outcome, Pending until decided.
    pub fn outcome(&self) -> Outcome {
        self.outcome.unwrap_or(Outcome::Pending)
    }
}

/// A JSON string literal for `s` (RFC 8259 escaping).
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_opt(s: Option<&str>) -> String {
    s.map(json_str).unwrap_or_else(|| "null".to_string())
}

fn json_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| json_str(s)).collect::<Vec<_>>().join(","))
}

impl Report {
    /// The report as one JSON object (one line), for logs and the examples' `--json`.
    pub fn to_json(&self) -> String {
        let reason = self.reason.unwrap_or(Code::Ok);
        let cert = match &self.peer_cert {
            None => "null".to_string(),
            Some(c) => format!(
                "{{\"subject\":{},\"names\":{},\"sha256\":{},\"verified\":{},\"error\":{}}}",
                json_str(&c.subject),
                json_list(&c.names),
                json_str(&c.sha256),
                match self.cert_verified {
                    Some(true) => "true",
                    Some(false) => "false",
                    None => "null",
                },
                json_opt(self.cert_error.as_deref())
            ),
        };
        let attempts: Vec<String> = self
            .attempts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                format!(
                    "{{\"connection\":{},\"rung\":{},\"result\":{},\"class\":{}}}",
                    i + 1,
                    json_opt(a.rung.map(Rung::name)),
                    json_str(a.code.name()),
                    json_str(a.class.name())
                )
            })
            .collect();
        format!(
            concat!(
                "{{\"outcome\":{},\"reason\":{},\"reason_code\":{},\"detail\":{},\"rfc8460\":{},",
                "\"starttls_offered\":{},\"tls_version\":{},\"cipher\":{},\"group\":{},\"resumed\":{},\"preauth\":{},",
                "\"peer_cert\":{},\"capabilities\":{},\"attempts\":[{}],",
                "\"timings_ms\":{{\"plaintext\":{},\"handshake\":{},\"total\":{}}},\"discarded_after_starttls\":{},",
                "\"retry_rung\":{},\"memory_events\":{},\"hello\":{},\"hello_action\":{},\"warnings\":{},",
                "\"policy\":{},\"policy_detail\":{}}}"
            ),
            json_str(self.outcome().name()),
            json_str(reason.name()),
            reason as u32,
            json_str(&self.detail),
            json_opt(self.rfc8460),
            self.starttls_offered,
            json_opt(self.tls_version.as_deref()),
            json_opt(self.cipher.as_deref()),
            json_opt(self.group.as_deref()),
            self.resumed,
            self.preauth,
            cert,
            json_list(&self.capabilities),
            attempts.join(","),
            self.timings.plaintext.as_millis(),
            self.timings.handshake.as_millis(),
            self.timings.total.as_millis(),
            self.discarded_after_starttls,
            json_opt(self.retry_rung.map(Rung::name)),
            json_list(&self.memory_events),
            json_opt(self.hello.map(|h| h.kind.name())),
            json_opt(self.hello_action.map(|a| match a {
                crate::config::HelloAction::Serve => "serve",
                crate::config::HelloAction::Handoff => "handoff",
                crate::config::HelloAction::Refuse => "refuse",
            })),
            json_list(&self.warnings),
            json_opt(self.policy),
            json_opt(self.policy_detail.as_deref()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_peer_text() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        let r = Report { detail: "x\"y".into(), ..Report::default() };
        let j = r.to_json();
        assert!(j.starts_with("{\"outcome\":\"pending\""), "{j}");
        assert!(j.contains("\"detail\":\"x\\\"y\""), "{j}");
    }
}

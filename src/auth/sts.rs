//! MTA-STS policies (RFC 8461): the text the caller fetched from
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt`, parsed, and the MX host
//! checked against its `mx` patterns. Fetching, caching and the `_mta-sts` TXT
//! record are the caller's; the library does no DNS and no HTTPS.

use crate::error::{Code, Error, Result};

/// RFC 8461 section 3.3 asks senders to bound the policy body at 64 KiB.
pub const MAX_POLICY: usize = 64 * 1024;
/// RFC 8461 section 3.2: `max_age` is at most 31557600 seconds (about a year).
pub const MAX_AGE: u64 = 31_557_600;

/// A policy's mode (RFC 8461 section 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Deliver only to a listed MX over TLS with a valid certificate for its name.
    Enforce,
    /// Deliver as without a policy; report what would have failed.
    Testing,
    /// No policy (the domain withdraws one).
    None,
}

impl Mode {
    /// The policy's own word for it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// A parsed STSv1 policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// enforce, testing or none.
    pub mode: Mode,
    /// The `mx` patterns, lowercase, without a trailing dot.
    pub mx: Vec<String>,
    /// `max_age` in seconds.
    pub max_age: u64,
    /// The policy's lines as they came (without line ends): TLS-RPT's policy-string.
    pub lines: Vec<String>,
}

impl Policy {
    /// Parses a policy body (RFC 8461 section 3.2): `key: value` lines ended by CRLF
    /// or LF; `version: STSv1`, `mode` and `max_age` are required, and at least one `mx`
    /// unless the mode is none; unknown keys are ignored (section 3.2 allows later
    /// extensions). A repeated key other than `mx` keeps its first value: the RFC does
    /// not say, and an invalid policy would be treated as no policy, which is weaker.
    pub fn parse(text: &[u8]) -> Result<Policy> {
        let bad = |why: String| Error::new(Code::StsPolicyInvalid, format!("MTA-STS policy: {why}"));
        if text.len() > MAX_POLICY {
            return Err(bad(format!("{} bytes, more than the {MAX_POLICY} RFC 8461 section 3.3 allows", text.len())));
        }
        let text = std::str::from_utf8(text).map_err(|_| bad("not UTF-8 text".into()))?;
        let (mut version, mut mode, mut max_age) = (None, None, None);
        let mut mx = Vec::new();
        let mut lines = Vec::new();
        for (i, line) in text.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            lines.push(line.to_string());
            let Some((key, value)) = line.split_once(':') else {
                return Err(bad(format!("line {}: no \"key: value\"", i + 1)));
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.') {
                return Err(bad(format!("line {}: bad key {key:?}", i + 1)));
            }
            match key {
                "version" => {
                    version.get_or_insert(value.to_string());
                }
                "mode" => {
                    mode.get_or_insert(value.to_string());
                }
                "max_age" => {
                    max_age.get_or_insert(value.to_string());
                }
                "mx" => mx.push(mx_pattern(value).ok_or_else(|| bad(format!("line {}: bad mx pattern {value:?}", i + 1)))?),
                _ => {}
            }
        }
        match version.as_deref() {
            Some("STSv1") => {}
            Some(v) => return Err(bad(format!("version {v:?}, not STSv1"))),
            None => return Err(bad("no version field".into())),
        }
        let mode = match mode.as_deref() {
            Some("enforce") => Mode::Enforce,
            Some("testing") => Mode::Testing,
            Some("none") => Mode::None,
            Some(m) => return Err(bad(format!("mode {m:?}: enforce, testing or none"))),
            None => return Err(bad("no mode field".into())),
        };
        let max_age = match max_age {
            Some(a) if !a.is_empty() && a.len() <= 10 && a.bytes().all(|b| b.is_ascii_digit()) => {
                let n: u64 = a.parse().map_err(|_| bad(format!("max_age {a:?}")))?;
                if n > MAX_AGE {
                    return Err(bad(format!("max_age {n} is more than {MAX_AGE}")));
                }
                n
            }
            Some(a) => return Err(bad(format!("max_age {a:?} is not 1 to 10 digits"))),
            None => return Err(bad("no max_age field".into())),
        };
        if mx.is_empty() && mode != Mode::None {
            return Err(bad(format!("mode {} needs at least one mx", mode.name())));
        }
        Ok(Policy { mode, mx, max_age, lines })
    }

    /// Whether the MX host matches one of the `mx` patterns (RFC 8461 section 4.1):
    /// exactly, or `*.` matching exactly one leftmost label. Case is ignored.
    pub fn allows_mx(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|p| match p.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => *p == host,
        })
    }
}

/// An `mx` value as a pattern: a host name, or `*.` and a host name.
fn mx_pattern(value: &str) -> Option<String> {
    let p = value.trim_end_matches('.').to_ascii_lowercase();
    let name = p.strip_prefix("*.").unwrap_or(&p);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC: &[u8] = b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n";

    #[test]
    fn rfc_8461_example() {
        // The example policy of RFC 8461 section 3.2.
        let p = Policy::parse(RFC).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604800);
        assert_eq!(p.mx, ["mail.example.com", "*.example.net", "backupmx.example.com"]);
        assert_eq!(p.lines.len(), 6);
        assert!(p.allows_mx("mail.example.com"));
        assert!(p.allows_mx("MAIL.Example.COM."));
        assert!(p.allows_mx("mx1.example.net"));
        assert!(!p.allows_mx("a.b.example.net"), "*. matches one label only");
        assert!(!p.allows_mx("example.net"));
        assert!(!p.allows_mx("mail.example.org"));
    }

    #[test]
    fn refusals() {
        for (text, why) in [
            (&b"mode: enforce\nmx: a.example\nmax_age: 1\n"[..], "no version"),
            (b"version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n", "version"),
            (b"version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n", "mode"),
            (b"version: STSv1\nmode: enforce\nmax_age: 1\n", "needs at least one mx"),
            (b"version: STSv1\nmode: enforce\nmx: a.example\n", "no max_age"),
            (b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n", "more than"),
            (b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n", "digits"),
            (b"version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n", "mx pattern"),
            (b"version: STSv1\nmode enforce\n", "key: value"),
            (b"\xff", "UTF-8"),
        ] {
            let e = Policy::parse(text).unwrap_err();
            assert_eq!(e.code, Code::StsPolicyInvalid);
            assert!(e.detail.contains(why), "{why}: {}", e.detail);
        }
        let none = Policy::parse(b"version: STSv1\nmode: none\nmax_age: 86400\nextension: yes\n").unwrap();
        assert_eq!(none.mode, Mode::None);
        assert!(Policy::parse(&vec![b'a'; MAX_POLICY + 1]).is_err());
    }
}

//! The client dialogue driven the way the session drives it, over arbitrary server
//! bytes, with the properties every protocol must keep.
//!
//! Input layout: `flags` (1 byte), `split` (2 bytes, little-endian), then the server's
//! bytes. The first `split` of them (modulo their length) arrive before TLS, the rest
//! after the handshake (decrypted). With implicit TLS every byte comes after it.
//!
//! flags: bit 0 asks for STARTTLS when it is offered, bit 1 asks even when it is not;
//! bit 2 sets a 64-byte line limit, bit 3 a 4-line reply limit, bit 4 a 256-byte
//! plaintext budget. The targets use bits 5-7 to pick the protocol.
//!
//! Properties, for every input:
//! - no panic, and the driver ends within a bound of polls linear in the input (no loop);
//! - fed whole, one byte at a time and in 3-byte pieces, the dialogue does the same:
//!   the same commands, decisions, go, refusal, error code, capabilities, warnings and
//!   bytes left for the application (when the input fits the plaintext budget, where
//!   the budget is counted on arrival and so depends on the pieces);
//! - every command the client sends is one line ending in CRLF (no peer byte can add a
//!   command);
//! - a go followed by any byte already received is a reply injection, never a go;
//! - only the exact go reply is a go (SMTP/LMTP `220`, IMAP `OK` with our own tag,
//!   POP3 `+OK`, NNTP `382`, ManageSieve `OK`), and an SMTP refusal is temporary for a
//!   4xx, permanent for a 5xx, "not a go" for anything else;
//! - after TLS the capabilities come from the protected bytes only: each capability's
//!   first word appears in them;
//! - an implicit-TLS dialogue never asks the policy and never gets a go;
//! - what the dialogue keeps (capabilities, warnings) is bounded by what it was fed.

use mailtls::error::Code;
use mailtls::protocol::client::{ClientAction, Dialogue};
use mailtls::protocol::{Limits, Proto};

/// One observable thing the dialogue did (NeedInput is left out: it depends on the pieces).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A command written to the server.
    Send(Vec<u8>),
    /// The policy was asked.
    Decide(bool),
    /// STARTTLS was granted and TLS started.
    Go,
    /// STARTTLS was refused, with this code.
    Refused(Code),
    /// The capabilities are known.
    Ready,
    /// The dialogue failed with this code.
    Error(Code),
    /// The server stopped sending before the dialogue was done.
    Eof,
}

/// Everything a run of the dialogue showed.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// What happened, in order.
    pub events: Vec<Event>,
    /// The capabilities at the end.
    pub caps: Vec<String>,
    /// The warnings at the end.
    pub warnings: Vec<String>,
    /// Whether the server pre-authenticated.
    pub preauth: bool,
    /// Bytes received and left for the application after Ready.
    pub unread: Vec<u8>,
}

/// The decoded input.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// Ask for STARTTLS when offered.
    pub starttls: bool,
    /// Ask for STARTTLS even when not offered.
    pub always: bool,
    /// Limits of the run.
    pub limits: Limits,
    /// Bytes before TLS.
    pub pre: &'a [u8],
    /// Bytes after TLS.
    pub post: &'a [u8],
}

/// Splits a fuzz input as the module documentation says.
pub fn decode(data: &[u8], implicit: bool) -> Input<'_> {
    let flags = data.first().copied().unwrap_or(0);
    let split = data.get(1..3).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let rest = data.get(3..).unwrap_or(&[]);
    let split = if implicit || rest.is_empty() { 0 } else { split % (rest.len() + 1) };
    let mut limits = Limits::default();
    if flags & 4 != 0 {
        limits.max_line = 64;
    }
    if flags & 8 != 0 {
        limits.max_reply_lines = 4;
    }
    if flags & 16 != 0 {
        limits.max_pretls_bytes = 256;
    }
    Input { starttls: flags & 1 != 0, always: flags & 2 != 0, limits, pre: &rest[..split], post: &rest[split..] }
}

/// Runs the dialogue over `input`, feeding `chunk` bytes at a time (0: all at once).
pub fn run(proto: Proto, implicit: bool, input: &Input<'_>, chunk: usize) -> Outcome {
    let mut d = if implicit {
        Dialogue::implicit(proto, "client.example", input.limits)
    } else {
        Dialogue::new(proto, "client.example", input.limits)
    }
    .expect("a dialogue for every protocol");
    let total = input.pre.len() + input.post.len();
    let max_polls = 4 * (total + 8) + 64;
    let mut events = Vec::new();
    let mut unread = Vec::new();
    let mut data = if implicit { input.post } else { input.pre };
    let mut in_tls = implicit;
    let mut pos = 0;
    let mut fed = 0usize;
    let mut polls = 0;
    loop {
        polls += 1;
        assert!(polls <= max_polls, "the dialogue does not end: {polls} polls for {total} bytes: {events:?}");
        let action = match d.poll() {
            Ok(a) => a,
            Err(e) => {
                events.push(Event::Error(e.code));
                break;
            }
        };
        match action {
            ClientAction::Send(cmd) => {
                assert!(cmd.ends_with(b"\r\n"), "a command without CRLF: {cmd:?}");
                assert!(
                    !cmd[..cmd.len() - 2].iter().any(|&b| b == b'\r' || b == b'\n'),
                    "a command that is more than one line: {cmd:?}"
                );
                assert!(cmd.len() <= 512, "a command of {} bytes", cmd.len());
                events.push(Event::Send(cmd));
            }
            ClientAction::NeedInput => {
                if pos >= data.len() {
                    events.push(Event::Eof);
                    break;
                }
                let end = if chunk == 0 { data.len() } else { (pos + chunk).min(data.len()) };
                fed += end - pos;
                let r = d.feed(&data[pos..end]);
                pos = end;
                if let Err(e) = r {
                    events.push(Event::Error(e.code));
                    break;
                }
            }
            ClientAction::Decide { offered } => {
                assert!(!implicit, "an implicit-TLS dialogue asked the policy");
                events.push(Event::Decide(offered));
                if (offered && input.starttls) || input.always {
                    d.request_starttls();
                } else {
                    d.finish_plain();
                }
            }
            ClientAction::Go => {
                assert!(!implicit && !in_tls, "a go without a STARTTLS outstanding");
                let sent = events.iter().rev().find_map(|e| match e {
                    Event::Send(c) => Some(c.as_slice()),
                    _ => None,
                });
                assert_exact_go(proto, sent.unwrap_or(b""), last_line(&data[..pos]));
                if pos < data.len() {
                    // The session has read these bytes with the go reply: an injection.
                    events.push(Event::Error(Code::ReplyInjection));
                    break;
                }
                events.push(Event::Go);
                d.tls_started();
                in_tls = true;
                data = input.post;
                pos = 0;
            }
            ClientAction::Refused(e) => {
                assert!(
                    matches!(
                        e.code,
                        Code::StarttlsRefusedTemporary | Code::StarttlsRefusedPermanent | Code::StarttlsBadReply
                    ),
                    "a refusal with code {:?}",
                    e.code
                );
                // One byte at a time, the refusing line is the last one fed.
                if chunk == 1 && matches!(proto, Proto::Smtp | Proto::Lmtp) {
                    let expected = match last_line(&data[..pos]).first() {
                        Some(b'4') => Code::StarttlsRefusedTemporary,
                        Some(b'5') => Code::StarttlsRefusedPermanent,
                        _ => Code::StarttlsBadReply,
                    };
                    assert_eq!(e.code, expected, "SMTP refusal {:?}", last_line(&data[..pos]));
                }
                events.push(Event::Refused(e.code));
                d.finish_plain();
            }
            ClientAction::Ready => {
                events.push(Event::Ready);
                unread = d.take_unread();
                unread.extend_from_slice(&data[pos..]);
                break;
            }
        }
    }
    let caps: Vec<String> = d.capabilities().to_vec();
    let warnings: Vec<String> = d.warnings().to_vec();
    let kept: usize = caps.iter().chain(&warnings).map(|s| s.len() + 1).sum();
    assert!(kept <= 16 * fed + 1024, "keeps {kept} bytes after being fed {fed}");
    if in_tls && events.last() == Some(&Event::Ready) {
        // ManageSieve unescapes its quoted strings: compare with backslashes left out.
        // A word with a replacement character (from_utf8_lossy) is not checked.
        let protected: Vec<u8> = input.post.iter().filter(|&&b| b != b'\\').map(u8::to_ascii_uppercase).collect();
        for c in &caps {
            let word: Vec<u8> = c
                .split_ascii_whitespace()
                .next()
                .unwrap_or("")
                .trim_matches('"')
                .to_ascii_uppercase()
                .bytes()
                .filter(|&b| b != b'\\')
                .collect();
            if word.is_empty() || String::from_utf8_lossy(&word).contains('\u{fffd}') {
                continue;
            }
            assert!(
                protected.windows(word.len()).any(|w| w == word.as_slice()),
                "capability {c:?} after TLS is not in the protected bytes"
            );
        }
    }
    Outcome { events, caps, warnings, preauth: d.preauth(), unread }
}

/// The last complete line of what was fed, without its line ending.
fn last_line(fed: &[u8]) -> &[u8] {
    let body = fed.strip_suffix(b"\n").unwrap_or(fed);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    match body.iter().rposition(|&b| b == b'\n') {
        Some(i) => &body[i + 1..],
        None => body,
    }
}

/// Only the exact go reply starts TLS (DESIGN.md: SMTP/LMTP `220`, IMAP tagged `OK`
/// with our tag, POP3 `+OK`, NNTP `382`, ManageSieve `OK`); `sent` is the STARTTLS command.
fn assert_exact_go(proto: Proto, sent: &[u8], line: &[u8]) {
    let word_then = |w: &[u8], ends: &[u8]| {
        line.len() >= w.len()
            && line[..w.len()].eq_ignore_ascii_case(w)
            && line.get(w.len()).is_none_or(|b| ends.contains(b))
    };
    let ok = match proto {
        Proto::Smtp | Proto::Lmtp => word_then(b"220", b" "),
        Proto::Nntp => word_then(b"382", b" "),
        Proto::Pop3 => word_then(b"+OK", b" \t"),
        Proto::Sieve => {
            let l = &line[line.iter().take_while(|&&b| b == b' ' || b == b'\t').count()..];
            l.len() >= 2 && l[..2].eq_ignore_ascii_case(b"OK") && l.get(2).is_none_or(|b| b" \t\"".contains(b))
        }
        Proto::Imap => {
            let tag = sent.split(|&b| b == b' ').next().unwrap_or(b"");
            let mut go = tag.to_vec();
            go.extend_from_slice(b" OK");
            !tag.is_empty() && word_then(&go, b" ")
        }
    };
    assert!(ok, "a go on {:?} after {:?}", String::from_utf8_lossy(line), String::from_utf8_lossy(sent));
}

/// The target body: every property above, for one protocol.
pub fn check(proto: Proto, implicit: bool, data: &[u8]) {
    let input = decode(data, implicit);
    let whole = run(proto, implicit, &input, 0);
    let bytewise = run(proto, implicit, &input, 1);
    let threes = run(proto, implicit, &input, 3);
    if implicit || input.pre.len() <= input.limits.max_pretls_bytes {
        assert_eq!(whole, bytewise, "whole and one byte at a time differ");
        assert_eq!(whole, threes, "whole and 3-byte pieces differ");
    }
}

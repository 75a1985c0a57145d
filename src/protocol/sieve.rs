//! ManageSieve (RFC 5804): the client's part of the dialogue. The server sends its
//! capabilities unasked in the greeting, one `"NAME" ["value"]` line each, ended by
//! `OK`; STARTTLS is answered `OK` (go) or `NO`/`BYE`; after the handshake the server
//! sends its capabilities again, unasked (RFC 5804 section 2.2), and only those count.

use super::client::{ProtocolClient, Step};
use super::smtp::printable;
use crate::error::{Code, Error, Result};

/// A token of a ManageSieve response line.
#[derive(Debug, PartialEq, Eq)]
enum Token {
    Atom(String),
    Quoted(String),
}

/// Splits a response line into atoms and quoted strings. Literals (`{n}`) and
/// unbalanced quotes are errors: they have no place in capability or status lines.
fn tokens(line: &[u8]) -> Result<Vec<Token>> {
    let bad = |why: &str| Error::new(Code::Protocol, format!("ManageSieve response {why}: {:?}", printable(line)));
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b' ' | b'\t' => i += 1,
            b'"' => {
                let mut s = Vec::new();
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err(bad("with an unterminated string")),
                        Some(b'\\') => {
                            s.push(*line.get(i + 1).ok_or_else(|| bad("with a bad escape"))?);
                            i += 2;
                        }
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(&c) => {
                            s.push(c);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Quoted(String::from_utf8_lossy(&s).into_owned()));
            }
            b'{' => return Err(bad("with a literal")),
            _ => {
                let start = i;
                while i < line.len() && line[i] != b' ' && line[i] != b'"' {
                    i += 1;
                }
                out.push(Token::Atom(String::from_utf8_lossy(&line[start..i]).to_ascii_uppercase()));
            }
        }
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Caps,
    Decide,
    StartTls,
    Done,
}

/// The ManageSieve part of the client dialogue.
#[derive(Debug)]
pub struct Client {
    state: State,
    tls: bool,
    caps: Vec<String>,
    max_lines: usize,
}

impl Client {
    /// A new parser; `max_lines` bounds the capability list.
    pub fn new(max_lines: usize) -> Self {
        Client { state: State::Caps, tls: false, caps: Vec::new(), max_lines }
    }

    fn caps_known(&mut self) -> Step {
        if self.tls {
            self.state = State::Done;
            return Step::Ready;
        }
        self.state = State::Decide;
        Step::Decide { offered: self.caps.iter().any(|c| c == "STARTTLS") }
    }
}

impl ProtocolClient for Client {
    fn on_line(&mut self, line: &[u8]) -> Result<Step> {
        let t = tokens(line)?;
        let status = match t.first() {
            Some(Token::Atom(a)) => Some(a.as_str()),
            _ => None,
        };
        match self.state {
            State::Caps => match (status, t.first()) {
                (Some("OK"), _) => Ok(self.caps_known()),
                (Some("NO" | "BYE"), _) => {
                    Err(Error::new(Code::GreetingRefused, format!("ManageSieve greeting: {}", printable(line))))
                }
                (None, Some(Token::Quoted(name))) => {
                    if self.caps.len() >= self.max_lines {
                        return Err(Error::new(Code::TooManyLines, format!("more than {} capabilities", self.max_lines)));
                    }
                    let name = name.to_ascii_uppercase();
                    self.caps.push(match t.get(1) {
                        Some(Token::Quoted(v)) => format!("{name} {v}"),
                        _ => name,
                    });
                    Ok(Step::Wait)
                }
                _ => Err(Error::new(Code::Protocol, format!("unexpected ManageSieve line: {:?}", printable(line)))),
            },
            State::StartTls => {
                self.state = State::Done;
                let temporary = t.iter().any(|x| matches!(x, Token::Atom(a) if a == "(TRYLATER)"));
                Ok(match status {
                    Some("OK") => Step::Go,
                    Some("BYE") => Step::Refused(Error::new(Code::StarttlsRefusedTemporary, format!("STARTTLS: {}", printable(line)))),
                    Some("NO") if temporary => {
                        Step::Refused(Error::new(Code::StarttlsRefusedTemporary, format!("STARTTLS: {}", printable(line))))
                    }
                    Some("NO") => Step::Refused(Error::new(Code::StarttlsRefusedPermanent, format!("STARTTLS: {}", printable(line)))),
                    _ => Step::Refused(Error::new(Code::StarttlsBadReply, format!("STARTTLS: {:?}", printable(line)))),
                })
            }
            State::Decide | State::Done => Err(Error::new(
                Code::Protocol,
                format!("unexpected ManageSieve response with nothing outstanding: {:?}", printable(line)),
            )),
        }
    }

    fn starttls(&mut self) -> Vec<u8> {
        self.state = State::StartTls;
        b"STARTTLS\r\n".to_vec()
    }

    fn tls_started(&mut self) -> Option<Vec<u8>> {
        self.tls = true;
        self.caps.clear();
        self.state = State::Caps;
        None
    }

    fn assume_tls(&mut self) {
        self.tls = true;
    }

    fn capabilities(&self) -> &[String] {
        &self.caps
    }

    fn quit(&self) -> Option<Vec<u8>> {
        Some(b"LOGOUT\r\n".to_vec())
    }
}

/// The verb of a ManageSieve command line, upper-cased.
pub fn verb(line: &[u8]) -> String {
    super::pop3::verb(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::client::{ClientAction, Dialogue};
    use crate::protocol::{Limits, Proto};

    const GREETING: &[u8] = b"\"IMPLEMENTATION\" \"Example1 ManageSieved v001\"\r\n\"SASL\" \"PLAIN\"\r\n\"SIEVE\" \"fileinto vacation\"\r\n\"StartTLS\"\r\n\"VERSION\" \"1.0\"\r\nOK\r\n";

    #[test]
    fn greeting_go_and_caps_resent_unasked() {
        for one in [false, true] {
            let mut c = Dialogue::new(Proto::Sieve, "c", Limits::default()).unwrap();
            let mut input = GREETING.to_vec();
            input.extend_from_slice(b"OK \"Begin TLS negotiation now\"\r\n");
            let chunks: Vec<&[u8]> = if one { input.chunks(1).collect() } else { vec![&input[..]] };
            let mut acts = Vec::new();
            'outer: for ch in chunks {
                c.feed(ch).unwrap();
                loop {
                    match c.poll().unwrap() {
                        ClientAction::NeedInput => break,
                        a @ ClientAction::Decide { .. } => {
                            acts.push(a);
                            c.request_starttls();
                        }
                        ClientAction::Go => break 'outer,
                        a => acts.push(a),
                    }
                }
            }
            assert_eq!(acts[0], ClientAction::Decide { offered: true });
            assert_eq!(acts[1], ClientAction::Send(b"STARTTLS\r\n".to_vec()));
            assert!(c.capabilities().contains(&"SASL PLAIN".to_string()));
            c.tls_started();
            assert!(c.capabilities().is_empty());
            assert_eq!(c.poll().unwrap(), ClientAction::NeedInput);
            c.feed(b"\"SASL\" \"PLAIN SCRAM-SHA-1\"\r\n\"VERSION\" \"1.0\"\r\nOK\r\n").unwrap();
            assert_eq!(c.poll().unwrap(), ClientAction::Ready);
            assert_eq!(c.capabilities(), ["SASL PLAIN SCRAM-SHA-1", "VERSION 1.0"]);
        }
    }

    #[test]
    fn refusals_and_injection() {
        for (reply, code) in [
            (&b"NO (TRYLATER) \"later\"\r\n"[..], Code::StarttlsRefusedTemporary),
            (b"NO \"no TLS here\"\r\n", Code::StarttlsRefusedPermanent),
            (b"BYE \"bye\"\r\n", Code::StarttlsRefusedTemporary),
            (b"\"SASL\" \"PLAIN\"\r\n", Code::StarttlsBadReply),
        ] {
            let mut c = Dialogue::new(Proto::Sieve, "c", Limits::default()).unwrap();
            c.feed(GREETING).unwrap();
            while !matches!(c.poll().unwrap(), ClientAction::Decide { .. }) {}
            c.request_starttls();
            c.poll().unwrap();
            c.feed(reply).unwrap();
            match c.poll().unwrap() {
                ClientAction::Refused(e) => assert_eq!(e.code, code),
                other => panic!("{other:?}"),
            }
        }
        let mut c = Dialogue::new(Proto::Sieve, "c", Limits::default()).unwrap();
        c.feed(GREETING).unwrap();
        while !matches!(c.poll().unwrap(), ClientAction::Decide { .. }) {}
        c.request_starttls();
        c.poll().unwrap();
        c.feed(b"OK\r\n\"SASL\" \"EXTERNAL\"\r\n").unwrap();
        assert_eq!(c.poll().unwrap_err().code, Code::ReplyInjection);
    }

    #[test]
    fn bad_lines() {
        assert_eq!(tokens(b"\"open").unwrap_err().code, Code::Protocol);
        assert_eq!(tokens(b"\"SIEVE\" {12+}").unwrap_err().code, Code::Protocol);
        let mut c = Dialogue::new(Proto::Sieve, "c", Limits::default()).unwrap();
        c.feed(b"NO \"maintenance\"\r\n").unwrap();
        assert_eq!(c.poll().unwrap_err().code, Code::GreetingRefused);
    }
}

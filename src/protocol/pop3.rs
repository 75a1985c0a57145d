//! POP3 (RFC 1939) with CAPA (RFC 2449) and STLS (RFC 2595 section 4): the client's
//! part of the dialogue. `-ERR` carries the RFC 3206 response codes `[SYS/TEMP]` and
//! `[SYS/PERM]`, which decide temporary versus permanent; without one a refusal of
//! STLS counts as temporary (the server may have a certificate tomorrow).

use super::client::{ProtocolClient, Step};
use super::smtp::printable;
use crate::error::{Code, Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Greeting,
    CapaStatus,
    CapaLines,
    Decide,
    Stls,
    Done,
}

/// The POP3 part of the client dialogue.
#[derive(Debug)]
pub struct Client {
    state: State,
    tls: bool,
    caps: Vec<String>,
    lines: usize,
    max_lines: usize,
}

/// Whether a status line is `+OK`, `-ERR`, or neither.
fn status(line: &[u8]) -> Option<bool> {
    if line.starts_with(b"+OK") && matches!(line.get(3), None | Some(b' ')) {
        Some(true)
    } else if line.starts_with(b"-ERR") && matches!(line.get(4), None | Some(b' ')) {
        Some(false)
    } else {
        None
    }
}

/// The code of a refusal: `[SYS/PERM]` is permanent, anything else temporary.
fn refusal(line: &[u8]) -> Code {
    let upper = line.to_ascii_uppercase();
    if upper.windows(10).any(|w| w == b"[SYS/PERM]") {
        Code::StarttlsRefusedPermanent
    } else {
        Code::StarttlsRefusedTemporary
    }
}

impl Client {
    /// A new parser; `max_lines` bounds the CAPA list.
    pub fn new(max_lines: usize) -> Self {
        Client { state: State::Greeting, tls: false, caps: Vec::new(), lines: 0, max_lines }
    }

    fn capa(&mut self) -> Step {
        self.state = State::CapaStatus;
        self.caps.clear();
        Step::Send(b"CAPA\r\n".to_vec())
    }

    fn caps_known(&mut self) -> Step {
        if self.tls {
            self.state = State::Done;
            return Step::Ready;
        }
        self.state = State::Decide;
        Step::Decide { offered: self.caps.iter().any(|c| c == "STLS") }
    }
}

impl ProtocolClient for Client {
    fn on_line(&mut self, line: &[u8]) -> Result<Step> {
        match self.state {
            State::Greeting => match status(line) {
                Some(true) => Ok(self.capa()),
                Some(false) => Err(Error::new(Code::GreetingRefused, format!("POP3 greeting: {}", printable(line)))),
                None => Err(Error::new(Code::Protocol, format!("not a POP3 greeting: {:?}", printable(line)))),
            },
            State::CapaStatus => match status(line) {
                Some(true) => {
                    self.state = State::CapaLines;
                    self.lines = 0;
                    Ok(Step::Wait)
                }
                // RFC 2449 section 5: a server without CAPA; it cannot offer STLS then.
                Some(false) => Ok(self.caps_known()),
                None => Err(Error::new(Code::Protocol, format!("not a POP3 reply to CAPA: {:?}", printable(line)))),
            },
            State::CapaLines => {
                if line == b"." {
                    return Ok(self.caps_known());
                }
                self.lines += 1;
                if self.lines > self.max_lines {
                    return Err(Error::new(Code::TooManyLines, format!("CAPA list longer than {} lines", self.max_lines)));
                }
                // Dot-stuffing (RFC 1939 section 3).
                let l = line.strip_prefix(b".").unwrap_or(line);
                let text = String::from_utf8_lossy(l);
                let mut words = text.split_ascii_whitespace();
                if let Some(k) = words.next() {
                    let rest: Vec<&str> = words.collect();
                    let k = k.to_ascii_uppercase();
                    self.caps.push(if rest.is_empty() { k } else { format!("{k} {}", rest.join(" ")) });
                }
                Ok(Step::Wait)
            }
            State::Stls => {
                self.state = State::Done;
                Ok(match status(line) {
                    Some(true) => Step::Go,
                    Some(false) => Step::Refused(Error::new(refusal(line), format!("STLS: {}", printable(line)))),
                    None => Step::Refused(Error::new(Code::StarttlsBadReply, format!("STLS: {:?}", printable(line)))),
                })
            }
            State::Decide | State::Done => Err(Error::new(
                Code::Protocol,
                format!("unexpected POP3 reply with nothing outstanding: {:?}", printable(line)),
            )),
        }
    }

    fn starttls(&mut self) -> Vec<u8> {
        self.state = State::Stls;
        b"STLS\r\n".to_vec()
    }

    fn tls_started(&mut self) -> Option<Vec<u8>> {
        // RFC 2595 section 4: the client MUST discard what it learnt and may ask CAPA again.
        self.tls = true;
        match self.capa() {
            Step::Send(c) => Some(c),
            _ => None,
        }
    }

    fn assume_tls(&mut self) {
        self.tls = true;
    }

    fn capabilities(&self) -> &[String] {
        &self.caps
    }

    fn quit(&self) -> Option<Vec<u8>> {
        Some(b"QUIT\r\n".to_vec())
    }
}

/// The verb of a POP3 command line, upper-cased.
pub fn verb(line: &[u8]) -> String {
    let end = line.iter().position(|&b| b == b' ' || b == b'\r' || b == b'\n').unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end]).to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::client::{ClientAction, Dialogue};
    use crate::protocol::{Limits, Proto};

    fn start(input: &[u8]) -> (Dialogue, Vec<ClientAction>) {
        let mut c = Dialogue::new(Proto::Pop3, "c", Limits::default()).unwrap();
        let mut acts = Vec::new();
        for b in input.chunks(1) {
            c.feed(b).unwrap();
            loop {
                match c.poll().unwrap() {
                    ClientAction::NeedInput => break,
                    a @ ClientAction::Decide { .. } => {
                        acts.push(a);
                        c.request_starttls();
                    }
                    a @ (ClientAction::Go | ClientAction::Ready | ClientAction::Refused(_)) => {
                        acts.push(a);
                        return (c, acts);
                    }
                    a => acts.push(a),
                }
            }
        }
        (c, acts)
    }

    #[test]
    fn capa_stls_go_and_capa_again() {
        let (mut c, acts) = start(b"+OK POP3 ready <1.2@x>\r\n+OK list\r\nUSER\r\nstls\r\nSASL PLAIN\r\n.\r\n+OK Begin TLS\r\n");
        assert_eq!(acts[0], ClientAction::Send(b"CAPA\r\n".to_vec()));
        assert_eq!(acts[1], ClientAction::Decide { offered: true });
        assert_eq!(acts[2], ClientAction::Send(b"STLS\r\n".to_vec()));
        assert_eq!(acts[3], ClientAction::Go);
        c.tls_started();
        assert_eq!(c.poll().unwrap(), ClientAction::Send(b"CAPA\r\n".to_vec()));
        c.feed(b"+OK\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n").unwrap();
        assert_eq!(c.poll().unwrap(), ClientAction::Ready);
        assert_eq!(c.capabilities(), ["USER", "SASL PLAIN LOGIN"]);
    }

    #[test]
    fn refusals() {
        for (reply, code) in [
            (&b"-ERR [SYS/TEMP] later\r\n"[..], Code::StarttlsRefusedTemporary),
            (b"-ERR [SYS/PERM] never\r\n", Code::StarttlsRefusedPermanent),
            (b"-ERR no\r\n", Code::StarttlsRefusedTemporary),
            (b"+OKAY\r\n", Code::StarttlsBadReply),
        ] {
            let mut input = b"+OK hi\r\n+OK\r\nSTLS\r\n.\r\n".to_vec();
            input.extend_from_slice(reply);
            let (_, acts) = start(&input);
            match acts.last().unwrap() {
                ClientAction::Refused(e) => assert_eq!(e.code, code),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn no_capa_means_no_stls_and_err_greeting_refuses() {
        let (_, acts) = start(b"+OK old server\r\n-ERR unknown command\r\n");
        assert_eq!(acts[1], ClientAction::Decide { offered: false });
        let mut c = Dialogue::new(Proto::Pop3, "c", Limits::default()).unwrap();
        c.feed(b"-ERR busy\r\n").unwrap();
        assert_eq!(c.poll().unwrap_err().code, Code::GreetingRefused);
    }

    #[test]
    fn injection_after_ok_aborts() {
        let mut c = Dialogue::new(Proto::Pop3, "c", Limits::default()).unwrap();
        c.feed(b"+OK hi\r\n+OK\r\nSTLS\r\n.\r\n").unwrap();
        while !matches!(c.poll().unwrap(), ClientAction::Decide { .. }) {}
        c.request_starttls();
        c.poll().unwrap();
        c.feed(b"+OK go\r\n+OK 2 messages\r\n").unwrap();
        assert_eq!(c.poll().unwrap_err().code, Code::ReplyInjection);
    }
}

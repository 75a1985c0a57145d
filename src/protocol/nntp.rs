//! NNTP (RFC 3977) with STARTTLS (RFC 4642): the client's part of the dialogue.
//! Greeting `200`/`201`; CAPABILITIES (`101` and a dot-terminated list); STARTTLS
//! answered `382` (go), `580` (TLS cannot start now: temporary) or `502` (not
//! permitted: permanent). After TLS the client asks CAPABILITIES again, and the
//! server must not advertise STARTTLS any more (RFC 4642 section 2.2.2).

use super::client::{ProtocolClient, Step};
use super::smtp::printable;
use crate::error::{Code, Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Greeting,
    CapStatus,
    CapLines,
    Decide,
    StartTls,
    Done,
}

/// The NNTP part of the client dialogue.
#[derive(Debug)]
pub struct Client {
    state: State,
    tls: bool,
    caps: Vec<String>,
    lines: usize,
    max_lines: usize,
}

/// The three-digit code of an NNTP response line (RFC 3977 section 3.2).
fn code(line: &[u8]) -> Result<u16> {
    if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) || !matches!(line.get(3), None | Some(b' ')) {
        return Err(Error::new(Code::Protocol, format!("not an NNTP response: {:?}", printable(line))));
    }
    Ok((line[0] - b'0') as u16 * 100 + (line[1] - b'0') as u16 * 10 + (line[2] - b'0') as u16)
}

impl Client {
    /// A new parser; `max_lines` bounds the capability list.
    pub fn new(max_lines: usize) -> Self {
        Client { state: State::Greeting, tls: false, caps: Vec::new(), lines: 0, max_lines }
    }

    fn ask(&mut self) -> Step {
        self.state = State::CapStatus;
        self.caps.clear();
        Step::Send(b"CAPABILITIES\r\n".to_vec())
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
        match self.state {
            State::Greeting => match code(line)? {
                200 | 201 => Ok(self.ask()),
                400 | 502 => Err(Error::new(Code::GreetingRefused, format!("NNTP greeting: {}", printable(line)))),
                _ => Err(Error::new(Code::Protocol, format!("unexpected NNTP greeting: {:?}", printable(line)))),
            },
            State::CapStatus => match code(line)? {
                101 => {
                    self.state = State::CapLines;
                    self.lines = 0;
                    Ok(Step::Wait)
                }
                // An RFC 977 server without CAPABILITIES cannot offer STARTTLS.
                c if (400..600).contains(&c) => Ok(self.caps_known()),
                _ => Err(Error::new(Code::Protocol, format!("unexpected reply to CAPABILITIES: {:?}", printable(line)))),
            },
            State::CapLines => {
                if line == b"." {
                    return Ok(self.caps_known());
                }
                self.lines += 1;
                if self.lines > self.max_lines {
                    return Err(Error::new(Code::TooManyLines, format!("capability list longer than {} lines", self.max_lines)));
                }
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
            State::StartTls => {
                self.state = State::Done;
                let c = match code(line) {
                    Ok(c) => c,
                    Err(e) => return Ok(Step::Refused(Error::new(Code::StarttlsBadReply, e.detail))),
                };
                Ok(match c {
                    382 => Step::Go,
                    580 | 400..=499 => {
                        Step::Refused(Error::new(Code::StarttlsRefusedTemporary, format!("STARTTLS: {}", printable(line))))
                    }
                    500..=599 => {
                        Step::Refused(Error::new(Code::StarttlsRefusedPermanent, format!("STARTTLS: {}", printable(line))))
                    }
                    _ => Step::Refused(Error::new(Code::StarttlsBadReply, format!("STARTTLS: {}", printable(line)))),
                })
            }
            State::Decide | State::Done => Err(Error::new(
                Code::Protocol,
                format!("unexpected NNTP response with nothing outstanding: {:?}", printable(line)),
            )),
        }
    }

    fn starttls(&mut self) -> Vec<u8> {
        self.state = State::StartTls;
        b"STARTTLS\r\n".to_vec()
    }

    fn tls_started(&mut self) -> Option<Vec<u8>> {
        self.tls = true;
        match self.ask() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::client::{ClientAction, Dialogue};
    use crate::protocol::{Limits, Proto};

    fn run(input: &[u8]) -> (Dialogue, Vec<ClientAction>) {
        let mut c = Dialogue::new(Proto::Nntp, "c", Limits::default()).unwrap();
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
    fn greeting_caps_go_and_caps_again() {
        let (mut c, acts) = run(b"200 news ready\r\n101 Capability list:\r\nVERSION 2\r\nREADER\r\nSTARTTLS\r\n.\r\n382 go\r\n");
        assert_eq!(acts[0], ClientAction::Send(b"CAPABILITIES\r\n".to_vec()));
        assert_eq!(acts[1], ClientAction::Decide { offered: true });
        assert_eq!(acts[3], ClientAction::Go);
        c.tls_started();
        assert_eq!(c.poll().unwrap(), ClientAction::Send(b"CAPABILITIES\r\n".to_vec()));
        c.feed(b"101 x\r\nVERSION 2\r\nREADER\r\nAUTHINFO USER\r\n.\r\n").unwrap();
        assert_eq!(c.poll().unwrap(), ClientAction::Ready);
        assert_eq!(c.capabilities(), ["VERSION 2", "READER", "AUTHINFO USER"]);
    }

    #[test]
    fn refusals() {
        for (reply, code) in [
            (&b"580 can not initiate TLS\r\n"[..], Code::StarttlsRefusedTemporary),
            (b"502 not permitted\r\n", Code::StarttlsRefusedPermanent),
            (b"200 ok\r\n", Code::StarttlsBadReply),
            (b"38x\r\n", Code::StarttlsBadReply),
        ] {
            let mut input = b"201 ro\r\n101 caps\r\nSTARTTLS\r\n.\r\n".to_vec();
            input.extend_from_slice(reply);
            match run(&input).1.last().unwrap() {
                ClientAction::Refused(e) => assert_eq!(e.code, code),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn old_server_and_refused_greeting() {
        let (_, acts) = run(b"200 inn\r\n500 What?\r\n");
        assert_eq!(acts[1], ClientAction::Decide { offered: false });
        let mut c = Dialogue::new(Proto::Nntp, "c", Limits::default()).unwrap();
        c.feed(b"502 no permission\r\n").unwrap();
        assert_eq!(c.poll().unwrap_err().code, Code::GreetingRefused);
    }
}

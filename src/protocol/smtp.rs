//! SMTP and LMTP: the reply parser, the client's STARTTLS dialogue (RFC 3207), and
//! the server's command classification.

use super::client::{ProtocolClient, Step};
use super::{Limits, Proto};
use crate::error::{Code, Error, Result};

/// A complete (possibly multi-line) SMTP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The text of each line, after the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    /// The whole reply as one line of text, for logs and error details.
    pub fn summary(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" / "))
    }
}

/// Assembles replies from lines (RFC 5321 section 4.2.1): `250-...` continues,
/// `250 ...` (or a bare `250`) ends; every line must carry the same code.
#[derive(Debug, Default)]
pub struct ReplyReader {
    partial: Option<Reply>,
    max_lines: usize,
}

impl ReplyReader {
    /// A reader that refuses replies of more than `max_lines` lines.
    pub fn new(max_lines: usize) -> Self {
        ReplyReader { partial: None, max_lines }
    }

    /// Feeds one line; returns the reply when this line completes it.
    pub fn line(&mut self, line: &[u8]) -> Result<Option<Reply>> {
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(Error::new(Code::Protocol, format!("not an SMTP reply line: {:?}", printable(line))));
        }
        let code = (line[0] - b'0') as u16 * 100 + (line[1] - b'0') as u16 * 10 + (line[2] - b'0') as u16;
        if !(200..600).contains(&code) {
            return Err(Error::new(Code::Protocol, format!("reply code {code} out of range")));
        }
        let (last, text) = match line.get(3) {
            None => (true, String::new()),
            Some(b' ') => (true, String::from_utf8_lossy(&line[4..]).into_owned()),
            Some(b'-') => (false, String::from_utf8_lossy(&line[4..]).into_owned()),
            Some(_) => {
                return Err(Error::new(Code::Protocol, format!("bad reply separator: {:?}", printable(line))))
            }
        };
        let reply = self.partial.get_or_insert_with(|| Reply { code, lines: Vec::new() });
        if reply.code != code {
            return Err(Error::new(
                Code::Protocol,
                format!("reply code changed from {} to {code} inside a multi-line reply", reply.code),
            ));
        }
        reply.lines.push(text);
        if reply.lines.len() > self.max_lines {
            return Err(Error::new(Code::TooManyLines, format!("reply longer than {} lines", self.max_lines)));
        }
        Ok(if last { self.partial.take() } else { None })
    }

    /// Whether a multi-line reply is half read.
    pub fn in_reply(&self) -> bool {
        self.partial.is_some()
    }
}

/// Peer text made safe for a log line.
pub fn printable(b: &[u8]) -> String {
    let s: String = b.iter().take(200).map(|&c| if (0x20..0x7f).contains(&c) { c as char } else { '.' }).collect();
    if b.len() > 200 {
        format!("{s}...")
    } else {
        s
    }
}

/// The EHLO keywords of a 250 reply: every line but the first, the keyword upper-cased
/// and its parameters kept as sent.
pub fn ehlo_capabilities(reply: &Reply) -> Vec<String> {
    reply
        .lines
        .iter()
        .skip(1)
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(' ') {
            Some((k, rest)) => format!("{} {}", k.to_ascii_uppercase(), rest.trim()),
            None => l.to_ascii_uppercase(),
        })
        .collect()
}

/// Whether a capability list names STARTTLS.
pub fn offers_starttls(caps: &[String]) -> bool {
    caps.iter().any(|c| c.split(' ').next() == Some("STARTTLS"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Greeting,
    Ehlo,
    Helo,
    Decide,
    StartTls,
    Done,
}

/// The SMTP/LMTP part of the client dialogue (RFC 5321, RFC 2033, RFC 3207).
#[derive(Debug)]
pub struct Client {
    proto: Proto,
    helo_name: String,
    state: State,
    replies: ReplyReader,
    max_lines: usize,
    tls: bool,
    caps: Vec<String>,
}

impl Client {
    /// A new parser; `helo_name` is the EHLO/LHLO argument.
    pub fn new(proto: Proto, helo_name: &str, limits: Limits) -> Self {
        Client {
            proto,
            helo_name: helo_name.to_string(),
            state: State::Greeting,
            replies: ReplyReader::new(limits.max_reply_lines),
            max_lines: limits.max_reply_lines,
            tls: false,
            caps: Vec::new(),
        }
    }

    fn hello_command(&self, helo: bool) -> Vec<u8> {
        let verb = match (self.proto, helo) {
            (Proto::Lmtp, _) => "LHLO",
            (_, true) => "HELO",
            _ => "EHLO",
        };
        format!("{verb} {}\r\n", self.helo_name).into_bytes()
    }

    fn on_reply(&mut self, reply: Reply) -> Result<Step> {
        match self.state {
            State::Greeting => {
                if reply.code != 220 {
                    return Err(Error::new(Code::GreetingRefused, format!("greeting: {}", reply.summary())));
                }
                self.state = State::Ehlo;
                Ok(Step::Send(self.hello_command(false)))
            }
            State::Ehlo => {
                if reply.code == 250 {
                    self.caps = ehlo_capabilities(&reply);
                    if self.tls {
                        self.state = State::Done;
                        return Ok(Step::Ready);
                    }
                    self.state = State::Decide;
                    return Ok(Step::Decide { offered: offers_starttls(&self.caps) });
                }
                if self.proto == Proto::Smtp && !self.tls && (500..600).contains(&reply.code) {
                    // RFC 5321 section 3.2: an old server without EHLO; HELO has no extensions.
                    self.state = State::Helo;
                    return Ok(Step::Send(self.hello_command(true)));
                }
                Err(Error::new(Code::CapabilityRefused, format!("EHLO: {}", reply.summary())))
            }
            State::Helo => {
                if reply.code != 250 {
                    return Err(Error::new(Code::CapabilityRefused, format!("HELO: {}", reply.summary())));
                }
                self.caps.clear();
                self.state = State::Decide;
                Ok(Step::Decide { offered: false })
            }
            State::StartTls => {
                self.state = State::Done;
                if reply.code == 220 {
                    return Ok(Step::Go);
                }
                let code = match reply.code {
                    400..=499 => Code::StarttlsRefusedTemporary,
                    500..=599 => Code::StarttlsRefusedPermanent,
                    _ => Code::StarttlsBadReply,
                };
                Ok(Step::Refused(Error::new(code, format!("STARTTLS: {}", reply.summary()))))
            }
            State::Decide | State::Done => Err(Error::new(
                Code::Protocol,
                format!("unexpected reply with nothing outstanding: {}", reply.summary()),
            )),
        }
    }
}

impl ProtocolClient for Client {
    fn on_line(&mut self, line: &[u8]) -> Result<Step> {
        match self.replies.line(line)? {
            Some(reply) => self.on_reply(reply),
            None => Ok(Step::Wait),
        }
    }

    fn starttls(&mut self) -> Vec<u8> {
        self.state = State::StartTls;
        b"STARTTLS\r\n".to_vec()
    }

    fn tls_started(&mut self) -> Option<Vec<u8>> {
        self.tls = true;
        self.caps.clear();
        self.replies = ReplyReader::new(self.max_lines);
        self.state = State::Ehlo;
        Some(self.hello_command(false))
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

/// A command as the server side needs to see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// EHLO, HELO or LHLO.
    Hello,
    /// STARTTLS.
    StartTls,
    /// NOOP.
    Noop,
    /// QUIT.
    Quit,
    /// RSET.
    Rset,
    /// Anything else (MAIL, RCPT, DATA, AUTH, ...).
    Other,
}

/// Classifies a command line by its verb (case-insensitive; arguments ignored).
pub fn classify_command(line: &[u8]) -> Command {
    let verb_end = line.iter().position(|&b| b == b' ' || b == b'\r' || b == b'\n').unwrap_or(line.len());
    let verb = &line[..verb_end];
    let is = |w: &str| verb.eq_ignore_ascii_case(w.as_bytes());
    if is("EHLO") || is("HELO") || is("LHLO") {
        Command::Hello
    } else if is("STARTTLS") {
        Command::StartTls
    } else if is("NOOP") {
        Command::Noop
    } else if is("QUIT") {
        Command::Quit
    } else if is("RSET") {
        Command::Rset
    } else {
        Command::Other
    }
}

/// The server's go reply to STARTTLS.
pub const REPLY_GO: &str = "220 2.0.0 Ready to start TLS\r\n";
/// TLS cannot start now (RFC 3207 section 4).
pub const REPLY_TLS_UNAVAILABLE: &str = "454 4.7.0 TLS not available due to temporary reason\r\n";
/// STARTTLS while TLS is already active.
pub const REPLY_TLS_ACTIVE: &str = "554 5.5.1 Error: TLS already active\r\n";
/// A command refused because the server requires TLS (RFC 3207 section 4).
pub const REPLY_TLS_REQUIRED: &str = "530 5.7.0 Must issue a STARTTLS command first\r\n";
/// A command after STARTTLS before the new EHLO.
pub const REPLY_EHLO_FIRST: &str = "503 5.5.1 Error: send EHLO first\r\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::client::{ClientAction, Dialogue};

    fn drive(c: &mut Dialogue, input: &[u8], one_byte: bool) -> Vec<ClientAction> {
        let mut acts = Vec::new();
        let chunks: Vec<&[u8]> = if one_byte { input.chunks(1).collect() } else { vec![input] };
        for ch in chunks {
            c.feed(ch).unwrap();
            loop {
                match c.poll() {
                    Ok(ClientAction::NeedInput) => break,
                    Ok(a @ ClientAction::Decide { .. }) => {
                        acts.push(a);
                        c.request_starttls();
                    }
                    Ok(a @ (ClientAction::Go | ClientAction::Ready | ClientAction::Refused(_))) => {
                        acts.push(a);
                        return acts;
                    }
                    Ok(a) => acts.push(a),
                    Err(e) => panic!("{e}"),
                }
            }
        }
        acts
    }

    #[test]
    fn multiline_greeting_and_ehlo_to_go() {
        for one in [false, true] {
            let mut c = Dialogue::new(Proto::Smtp, "client.example", Limits::default()).unwrap();
            let acts = drive(
                &mut c,
                b"220-mx.example ESMTP\r\n220 more\r\n250-mx.example\r\n250-PIPELINING\r\n250-starttls\r\n250 8BITMIME\r\n220 go\r\n",
                one,
            );
            assert_eq!(acts[0], ClientAction::Send(b"EHLO client.example\r\n".to_vec()));
            assert_eq!(acts[1], ClientAction::Decide { offered: true });
            assert_eq!(acts[2], ClientAction::Send(b"STARTTLS\r\n".to_vec()));
            assert_eq!(acts[3], ClientAction::Go);
        }
    }

    #[test]
    fn reply_injection_after_220_aborts() {
        let mut c = Dialogue::new(Proto::Smtp, "c", Limits::default()).unwrap();
        c.feed(b"220 hi\r\n250-x\r\n250 STARTTLS\r\n").unwrap();
        while !matches!(c.poll().unwrap(), ClientAction::Decide { .. }) {}
        c.request_starttls();
        assert!(matches!(c.poll().unwrap(), ClientAction::Send(_)));
        c.feed(b"220 go\r\n250 injected\r\n").unwrap();
        assert_eq!(c.poll().unwrap_err().code, Code::ReplyInjection);
    }

    #[test]
    fn partial_injected_line_also_aborts() {
        let mut c = Dialogue::new(Proto::Smtp, "c", Limits::default()).unwrap();
        c.feed(b"220 hi\r\n250 STARTTLS\r\n").unwrap();
        c.poll().unwrap();
        c.poll().unwrap();
        c.request_starttls();
        c.poll().unwrap();
        c.feed(b"220 go\r\n25").unwrap();
        assert_eq!(c.poll().unwrap_err().code, Code::ReplyInjection);
    }

    #[test]
    fn refusals_are_classified() {
        for (reply, code) in [
            (&b"454 4.7.0 no\r\n"[..], Code::StarttlsRefusedTemporary),
            (b"554 5.7.0 no\r\n", Code::StarttlsRefusedPermanent),
            (b"250 ok\r\n", Code::StarttlsBadReply),
            (b"354 go ahead\r\n", Code::StarttlsBadReply),
        ] {
            let mut c = Dialogue::new(Proto::Smtp, "c", Limits::default()).unwrap();
            let mut input = b"220 hi\r\n250-x\r\n250 STARTTLS\r\n".to_vec();
            input.extend_from_slice(reply);
            let acts = drive(&mut c, &input, false);
            match acts.last().unwrap() {
                ClientAction::Refused(e) => assert_eq!(e.code, code),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn tls_forgets_plaintext_capabilities() {
        let mut c = Dialogue::new(Proto::Lmtp, "c", Limits::default()).unwrap();
        let acts = drive(&mut c, b"220 hi\r\n250-x\r\n250-AUTH PLAIN\r\n250 STARTTLS\r\n220 go\r\n", false);
        assert_eq!(acts[0], ClientAction::Send(b"LHLO c\r\n".to_vec()));
        assert_eq!(c.capabilities().len(), 2);
        c.tls_started();
        assert!(c.capabilities().is_empty());
        assert_eq!(c.poll().unwrap(), ClientAction::Send(b"LHLO c\r\n".to_vec()));
        c.feed(b"250-x\r\n250 AUTH LOGIN\r\n").unwrap();
        assert_eq!(c.poll().unwrap(), ClientAction::Ready);
        assert_eq!(c.capabilities(), ["AUTH LOGIN"]);
    }

    #[test]
    fn helo_fallback_when_ehlo_is_unknown() {
        let mut c = Dialogue::new(Proto::Smtp, "c", Limits::default()).unwrap();
        let acts = drive(&mut c, b"220 old\r\n500 what\r\n250 ok\r\n", false);
        assert_eq!(acts[1], ClientAction::Send(b"HELO c\r\n".to_vec()));
        assert_eq!(acts[2], ClientAction::Decide { offered: false });
    }

    #[test]
    fn malformed_and_oversized_replies_are_errors() {
        let mut c = Dialogue::new(Proto::Smtp, "c", Limits::default()).unwrap();
        c.feed(b"hello\r\n").unwrap();
        assert_eq!(c.poll().unwrap_err().code, Code::Protocol);
        let mut c = Dialogue::new(Proto::Smtp, "c", Limits { max_reply_lines: 3, ..Limits::default() }).unwrap();
        c.feed(b"220-a\r\n220-a\r\n220-a\r\n220-a\r\n").unwrap();
        assert_eq!(c.poll().unwrap_err().code, Code::TooManyLines);
        let mut c = Dialogue::new(Proto::Smtp, "c", Limits { max_pretls_bytes: 10, ..Limits::default() }).unwrap();
        assert_eq!(c.feed(b"220-aaaaaaaaaaaaaaa").unwrap_err().code, Code::TooMuchData);
        let mut r = ReplyReader::new(10);
        r.line(b"250-a").unwrap();
        assert_eq!(r.line(b"251 b").unwrap_err().code, Code::Protocol);
    }

    #[test]
    fn greeting_refusal() {
        let mut c = Dialogue::new(Proto::Smtp, "c", Limits::default()).unwrap();
        c.feed(b"554 go away\r\n").unwrap();
        assert_eq!(c.poll().unwrap_err().code, Code::GreetingRefused);
    }

    #[test]
    fn command_classification() {
        assert_eq!(classify_command(b"ehlo x"), Command::Hello);
        assert_eq!(classify_command(b"StartTLS"), Command::StartTls);
        assert_eq!(classify_command(b"MAIL FROM:<a@b>"), Command::Other);
        assert_eq!(classify_command(b"QUIT\r\n"), Command::Quit);
        assert_eq!(classify_command(b""), Command::Other);
    }
}

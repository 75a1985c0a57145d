//! IMAP (RFC 9051, RFC 3501) with STARTTLS (RFC 2595, RFC 9051 section 6.2.1): the
//! client's part of the dialogue and the server's command rules.
//!
//! The client takes the capabilities from the greeting's `[CAPABILITY ...]` response
//! code or asks with CAPABILITY; only a tagged `OK` carrying its own STARTTLS tag is a
//! go. Untagged responses while STARTTLS is outstanding are not a go and are ignored
//! (an `[ALERT]` among them is kept as a warning, never as trusted text); a `+`, a
//! foreign tag or anything unparseable is a broken peer. `PREAUTH` in plaintext means
//! STARTTLS is impossible (the connection is already in the authenticated state).

use super::client::{ProtocolClient, Step};
use super::smtp::printable;
use crate::error::{Code, Error, Result};

/// One IMAP response line, as far as the STARTTLS dialogue needs it.
#[derive(Debug, PartialEq, Eq)]
enum Response<'a> {
    /// `* ...`: the status or data keyword and the rest.
    Untagged { keyword: String, rest: &'a str },
    /// `+ ...`: a command continuation request.
    Continuation,
    /// `TAG OK|NO|BAD ...`.
    Tagged { tag: &'a str, status: String, rest: &'a str },
}

fn parse(line: &[u8]) -> Result<Response<'_>> {
    let text = std::str::from_utf8(line)
        .map_err(|_| Error::new(Code::Protocol, format!("IMAP response is not UTF-8: {:?}", printable(line))))?;
    if text.trim_end().ends_with('}') && text.contains('{') {
        // A literal in a STARTTLS-phase response (greeting, CAPABILITY, the STARTTLS
        // reply) has no business there; refusing it keeps the framing line-based.
        return Err(Error::new(Code::Protocol, format!("IMAP literal where none belongs: {:?}", printable(line))));
    }
    let (first, rest) = text.split_once(' ').unwrap_or((text, ""));
    if first == "+" {
        return Ok(Response::Continuation);
    }
    let (word, rest2) = rest.split_once(' ').unwrap_or((rest, ""));
    if first == "*" {
        return Ok(Response::Untagged { keyword: word.to_ascii_uppercase(), rest: rest2 });
    }
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_graphic() && b != b'{' && b != b'(' && b != b'*') {
        return Err(Error::new(Code::Protocol, format!("not an IMAP response: {:?}", printable(line))));
    }
    Ok(Response::Tagged { tag: first, status: word.to_ascii_uppercase(), rest: rest2 })
}

/// The response code at the start of a status text (`[CAPABILITY IMAP4rev1 ...]`).
fn response_code(rest: &str) -> Option<(String, &str)> {
    let inner = rest.strip_prefix('[')?;
    let end = inner.find(']')?;
    let code = &inner[..end];
    let (name, args) = code.split_once(' ').unwrap_or((code, ""));
    Some((name.to_ascii_uppercase(), args))
}

/// Capability atoms, upper-cased (IMAP capability names are case-insensitive).
fn atoms(list: &str) -> Vec<String> {
    list.split_ascii_whitespace().map(str::to_ascii_uppercase).collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Greeting,
    Capability,
    Decide,
    StartTls,
    Done,
}

/// The IMAP part of the client dialogue.
#[derive(Debug)]
pub struct Client {
    state: State,
    next_tag: u32,
    tag: String,
    tls: bool,
    caps: Vec<String>,
    got_caps: bool,
    preauth: bool,
    warnings: Vec<String>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A new parser, waiting for the greeting.
    pub fn new() -> Self {
        Client {
            state: State::Greeting,
            next_tag: 1,
            tag: String::new(),
            tls: false,
            caps: Vec::new(),
            got_caps: false,
            preauth: false,
            warnings: Vec::new(),
        }
    }

    fn command(&mut self, verb: &str) -> Vec<u8> {
        self.tag = format!("MT{}", self.next_tag);
        self.next_tag += 1;
        format!("{} {verb}\r\n", self.tag).into_bytes()
    }

    /// Notes an `[ALERT]` (or any text) seen before TLS: reported, never trusted.
    fn note_untagged(&mut self, keyword: &str, rest: &str) {
        if let Some((code, _)) = response_code(rest) {
            if code == "ALERT" && !self.tls {
                self.warnings.push(format!(
                    "IMAP [ALERT] received before TLS (unauthenticated, not to be shown as trusted): * {keyword} {}",
                    printable(rest.as_bytes())
                ));
            }
            if code == "CAPABILITY" && self.state == State::Capability {
                let (_, args) = response_code(rest).expect("checked");
                self.caps = atoms(args);
                self.got_caps = true;
            }
        }
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

impl Client {
    /// The greeting: OK or PREAUTH (with or without capabilities), or BYE.
    fn on_greeting(&mut self, line: &[u8], r: Response<'_>) -> Result<Step> {
        let Response::Untagged { keyword, rest } = r else {
            return Err(Error::new(Code::Protocol, format!("IMAP greeting expected: {:?}", printable(line))));
        };
        match keyword.as_str() {
            "OK" | "PREAUTH" => {
                self.preauth = keyword == "PREAUTH";
                self.note_untagged(&keyword, rest);
                if let Some(("CAPABILITY", args)) = response_code(rest).as_ref().map(|(c, a)| (c.as_str(), *a)) {
                    self.caps = atoms(args);
                    return Ok(self.caps_known());
                }
                self.state = State::Capability;
                self.got_caps = false;
                Ok(Step::Send(self.command("CAPABILITY")))
            }
            "BYE" => Err(Error::new(Code::GreetingRefused, format!("IMAP greeting: {}", printable(line)))),
            _ => Err(Error::new(Code::Protocol, format!("IMAP greeting expected: {:?}", printable(line)))),
        }
    }

    /// The replies to CAPABILITY: untagged data, then our tagged OK.
    fn on_capability(&mut self, line: &[u8], r: Response<'_>) -> Result<Step> {
        match r {
            Response::Untagged { keyword, rest } => {
                match keyword.as_str() {
                    "CAPABILITY" => {
                        self.caps = atoms(rest);
                        self.got_caps = true;
                    }
                    "BYE" => {
                        return Err(Error::new(Code::PeerClosed, format!("IMAP server said BYE: {}", printable(line))))
                    }
                    _ => self.note_untagged(&keyword, rest),
                }
                Ok(Step::Wait)
            }
            Response::Tagged { tag, status, .. } if tag == self.tag && status == "OK" => {
                if !self.got_caps {
                    self.caps.clear();
                }
                Ok(self.caps_known())
            }
            Response::Tagged { tag, .. } if tag == self.tag => {
                Err(Error::new(Code::CapabilityRefused, format!("CAPABILITY: {}", printable(line))))
            }
            _ => Err(Error::new(Code::Protocol, format!("unexpected IMAP response to CAPABILITY: {:?}", printable(line)))),
        }
    }

    /// The reply to STARTTLS: only our tagged OK is a go.
    fn on_starttls_reply(&mut self, line: &[u8], r: Response<'_>) -> Result<Step> {
        match r {
            Response::Untagged { keyword, rest } => {
                if keyword == "BYE" {
                    self.state = State::Done;
                    return Ok(Step::Refused(Error::new(
                        Code::StarttlsRefusedTemporary,
                        format!("STARTTLS: the server said BYE: {}", printable(line)),
                    )));
                }
                // Not a go; whatever it says was sent in clear and is not kept.
                self.note_untagged(&keyword, rest);
                Ok(Step::Wait)
            }
            Response::Continuation => {
                self.state = State::Done;
                Ok(Step::Refused(Error::new(
                    Code::StarttlsBadReply,
                    format!("a continuation request is not a go to STARTTLS: {:?}", printable(line)),
                )))
            }
            Response::Tagged { tag, status, .. } => {
                self.state = State::Done;
                if tag != self.tag {
                    return Ok(Step::Refused(Error::new(
                        Code::StarttlsBadReply,
                        format!("reply to STARTTLS with a foreign tag (ours is {}): {:?}", self.tag, printable(line)),
                    )));
                }
                Ok(match status.as_str() {
                    "OK" => Step::Go,
                    "NO" => Step::Refused(Error::new(Code::StarttlsRefusedTemporary, format!("STARTTLS: {}", printable(line)))),
                    "BAD" => Step::Refused(Error::new(Code::StarttlsRefusedPermanent, format!("STARTTLS: {}", printable(line)))),
                    _ => Step::Refused(Error::new(Code::StarttlsBadReply, format!("STARTTLS: {}", printable(line)))),
                })
            }
        }
    }
}

impl ProtocolClient for Client {
    fn on_line(&mut self, line: &[u8]) -> Result<Step> {
        let r = parse(line)?;
        match self.state {
            State::Greeting => self.on_greeting(line, r),
            State::Capability => self.on_capability(line, r),
            State::StartTls => self.on_starttls_reply(line, r),
            State::Decide | State::Done => Err(Error::new(
                Code::Protocol,
                format!("unexpected IMAP response with nothing outstanding: {:?}", printable(line)),
            )),
        }
    }

    fn starttls(&mut self) -> Vec<u8> {
        self.state = State::StartTls;
        self.command("STARTTLS")
    }

    fn tls_started(&mut self) -> Option<Vec<u8>> {
        // RFC 9051 section 6.2.1: the client MUST discard cached capabilities and ask again.
        self.tls = true;
        self.caps.clear();
        self.got_caps = false;
        self.state = State::Capability;
        Some(self.command("CAPABILITY"))
    }

    fn assume_tls(&mut self) {
        self.tls = true;
    }

    fn capabilities(&self) -> &[String] {
        &self.caps
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn preauth(&self) -> bool {
        self.preauth
    }

    fn quit(&self) -> Option<Vec<u8>> {
        Some(format!("MT{} LOGOUT\r\n", self.next_tag).into_bytes())
    }
}

/// A command line as the IMAP server needs to see it: its tag and verb.
pub fn split_command(line: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\r', '\n']);
    let mut it = text.splitn(3, ' ');
    let tag = it.next().unwrap_or("").to_string();
    let mut verb = it.next().unwrap_or("").to_ascii_uppercase();
    if verb == "UID" {
        verb = format!("UID {}", it.next().unwrap_or("").split(' ').next().unwrap_or("").to_ascii_uppercase());
    }
    (tag, verb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::client::{ClientAction, Dialogue};
    use crate::protocol::{Limits, Proto};

    fn dialogue() -> Dialogue {
        Dialogue::new(Proto::Imap, "c", Limits::default()).unwrap()
    }

    /// Feeds `input` (whole or a byte at a time) and collects the actions, asking for
    /// STARTTLS at the decision.
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
    fn capabilities_in_greeting_then_go() {
        for one in [false, true] {
            let mut c = dialogue();
            let acts = drive(
                &mut c,
                b"* OK [CAPABILITY IMAP4rev1 starttls LOGINDISABLED] ready\r\n* OK still\r\nMT1 OK Begin TLS\r\n",
                one,
            );
            assert_eq!(acts[0], ClientAction::Decide { offered: true });
            assert_eq!(acts[1], ClientAction::Send(b"MT1 STARTTLS\r\n".to_vec()));
            assert_eq!(acts[2], ClientAction::Go);
            assert!(c.capabilities().contains(&"LOGINDISABLED".to_string()));
        }
    }

    #[test]
    fn capability_command_then_after_tls_again() {
        let mut c = dialogue();
        let acts = drive(&mut c, b"* OK hi\r\n* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN\r\nMT1 OK done\r\nMT2 OK go\r\n", false);
        assert_eq!(acts[0], ClientAction::Send(b"MT1 CAPABILITY\r\n".to_vec()));
        assert_eq!(acts[1], ClientAction::Decide { offered: true });
        assert_eq!(acts[3], ClientAction::Go);
        c.tls_started();
        assert!(c.capabilities().is_empty());
        assert_eq!(c.poll().unwrap(), ClientAction::Send(b"MT3 CAPABILITY\r\n".to_vec()));
        c.feed(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nMT3 OK\r\n").unwrap();
        assert_eq!(c.poll().unwrap(), ClientAction::Ready);
        assert_eq!(c.capabilities(), ["IMAP4REV1", "AUTH=PLAIN"]);
    }

    #[test]
    fn refusals_and_non_go_replies() {
        for (reply, code) in [
            (&b"MT1 NO [UNAVAILABLE] not now\r\n"[..], Code::StarttlsRefusedTemporary),
            (b"MT1 BAD unknown command\r\n", Code::StarttlsRefusedPermanent),
            (b"XX OK go\r\n", Code::StarttlsBadReply),
            (b"+ go ahead\r\n", Code::StarttlsBadReply),
            (b"* BYE shutting down\r\n", Code::StarttlsRefusedTemporary),
        ] {
            let mut c = dialogue();
            let mut input = b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n".to_vec();
            input.extend_from_slice(reply);
            match drive(&mut c, &input, false).last().unwrap() {
                ClientAction::Refused(e) => assert_eq!(e.code, code, "{}", String::from_utf8_lossy(reply)),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn untagged_after_the_tagged_ok_is_injection() {
        let mut c = dialogue();
        c.feed(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n").unwrap();
        assert!(matches!(c.poll().unwrap(), ClientAction::Decide { offered: true }));
        c.request_starttls();
        c.poll().unwrap();
        c.feed(b"* OK [ALERT] before\r\nMT1 OK go\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n").unwrap();
        assert_eq!(c.poll().unwrap_err().code, Code::ReplyInjection);
        assert_eq!(c.warnings().len(), 1);
    }

    #[test]
    fn preauth_and_bye_greetings() {
        let mut c = dialogue();
        let acts = drive(&mut c, b"* PREAUTH [CAPABILITY IMAP4rev1] welcome back\r\n", false);
        assert_eq!(acts[0], ClientAction::Decide { offered: false });
        assert!(c.preauth());
        let mut c = dialogue();
        c.feed(b"* BYE go away\r\n").unwrap();
        assert_eq!(c.poll().unwrap_err().code, Code::GreetingRefused);
    }

    #[test]
    fn alert_in_greeting_is_a_warning_and_literals_are_refused() {
        let mut c = dialogue();
        drive(&mut c, b"* OK [ALERT] Your password expires\r\n", false);
        assert_eq!(c.warnings().len(), 1);
        let mut c = dialogue();
        c.feed(b"* OK hi\r\n* CAPABILITY {5}\r\n").unwrap();
        c.poll().unwrap();
        assert_eq!(c.poll().unwrap_err().code, Code::Protocol);
    }

    #[test]
    fn command_split() {
        assert_eq!(split_command(b"a1 starttls\r\n"), ("a1".into(), "STARTTLS".into()));
        assert_eq!(split_command(b"x uid fetch 1 body[]"), ("x".into(), "UID FETCH".into()));
        assert_eq!(split_command(b""), (String::new(), String::new()));
    }
}

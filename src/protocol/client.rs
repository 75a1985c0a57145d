//! The client side of every protocol's STARTTLS dialogue, sans I/O. The rules that
//! hold for all protocols live here, once: line framing with its limits, the byte
//! budget before TLS, the reply-injection check (nothing may follow the go reply,
//! RFC 3207 section 4.2 and its siblings), and forgetting everything learnt in
//! plaintext when TLS starts. Each protocol only parses its own replies.

use super::lines::LineBuf;
use super::{Limits, Proto};
use crate::error::{Code, Error, Result};

/// What the dialogue wants the session to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientAction {
    /// Write these bytes to the peer.
    Send(Vec<u8>),
    /// Read more bytes and feed them.
    NeedInput,
    /// The plaintext capabilities are known: the policy decides whether to ask for STARTTLS.
    Decide {
        /// Whether the server advertised STARTTLS.
        offered: bool,
    },
    /// The server said go and nothing followed it: start TLS now.
    Go,
    /// STARTTLS was not granted; the error says how (temporary, permanent, not a go).
    Refused(Error),
    /// Capabilities (after TLS, or plaintext when the policy stopped there) are known.
    Ready,
}

/// What a protocol's parser answers to one line from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing yet; the next line, please.
    Wait,
    /// Send this command.
    Send(Vec<u8>),
    /// The plaintext capabilities are complete.
    Decide {
        /// Whether STARTTLS was advertised.
        offered: bool,
    },
    /// The go reply to STARTTLS.
    Go,
    /// A refusal of STARTTLS.
    Refused(Error),
    /// The capabilities asked after TLS (or in plaintext) are complete.
    Ready,
}

/// Nothing may follow the go reply to STARTTLS (RFC 3207 section 4.2 and its siblings):
/// bytes already received after it were sent before our ClientHello and would be read
/// as if protected. `extra` is what was buffered past the reply, by the dialogue or by
/// an application that ran its own STARTTLS.
pub fn nothing_after_go(extra: &[u8]) -> Result<()> {
    if extra.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        Code::ReplyInjection,
        format!(
            "{} bytes after the go reply to STARTTLS, before the TLS handshake: {:?}",
            extra.len(),
            super::smtp::printable(extra)
        ),
    ))
}

/// One protocol's part of the dialogue: parsing its replies and naming its commands.
pub trait ProtocolClient: Send {
    /// Handles one complete line from the server (without its line ending).
    fn on_line(&mut self, line: &[u8]) -> Result<Step>;
    /// The STARTTLS command; the parser then expects its reply.
    fn starttls(&mut self) -> Vec<u8>;
    /// TLS is up: forget every greeting, capability and state learnt in plaintext.
    /// Returns the command that asks for the capabilities again, or None when the
    /// server sends them unasked (ManageSieve).
    fn tls_started(&mut self) -> Option<Vec<u8>>;
    /// Implicit TLS (RFC 8314): the connection is protected from its first byte, so
    /// the capabilities after the greeting are final and no STARTTLS is asked.
    fn assume_tls(&mut self);
    /// The capabilities now known (after TLS only the protected ones).
    fn capabilities(&self) -> &[String];
    /// Whether the server put the connection straight into an authenticated state
    /// (IMAP `PREAUTH`), where STARTTLS is no longer possible.
    fn preauth(&self) -> bool {
        false
    }
    /// Things seen in plaintext that must not be shown as trusted (an IMAP `[ALERT]`).
    fn warnings(&self) -> &[String] {
        &[]
    }
    /// The command that ends the session politely, if the protocol has one.
    fn quit(&self) -> Option<Vec<u8>>;
}

/// The dialogue of one connection: a protocol's parser behind the common rules.
pub struct Dialogue {
    inner: Box<dyn ProtocolClient>,
    limits: Limits,
    lines: LineBuf,
    out: Option<Vec<u8>>,
    tls: bool,
    pretls_bytes: usize,
    parked: Option<ClientAction>,
}

impl std::fmt::Debug for Dialogue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialogue").field("tls", &self.tls).field("pending", &self.lines.pending()).finish()
    }
}

impl Dialogue {
    /// The dialogue for `proto`; `helo_name` is the SMTP/LMTP EHLO argument.
    pub fn new(proto: Proto, helo_name: &str, limits: Limits) -> Result<Self> {
        let inner: Box<dyn ProtocolClient> = match proto {
            Proto::Smtp | Proto::Lmtp => Box::new(super::smtp::Client::new(proto, helo_name, limits)),
            Proto::Imap => Box::new(super::imap::Client::new()),
            Proto::Pop3 => Box::new(super::pop3::Client::new(limits.max_reply_lines)),
            Proto::Nntp => Box::new(super::nntp::Client::new(limits.max_reply_lines)),
            Proto::Sieve => Box::new(super::sieve::Client::new(limits.max_reply_lines)),
        };
        Ok(Self::with(inner, limits))
    }

    /// The dialogue of an implicit-TLS connection (RFC 8314): it starts after the
    /// handshake, with the greeting, and ends when the capabilities are known.
    pub fn implicit(proto: Proto, helo_name: &str, limits: Limits) -> Result<Self> {
        let mut d = Self::new(proto, helo_name, limits)?;
        d.tls = true;
        d.inner.assume_tls();
        Ok(d)
    }

    /// A dialogue around any protocol parser.
    pub fn with(inner: Box<dyn ProtocolClient>, limits: Limits) -> Self {
        Dialogue { inner, limits, lines: LineBuf::new(limits.max_line), out: None, tls: false, pretls_bytes: 0, parked: None }
    }

    /// Feeds bytes received from the peer (decrypted ones once TLS runs).
    pub fn feed(&mut self, data: &[u8]) -> Result<()> {
        if !self.tls {
            self.pretls_bytes += data.len();
            if self.pretls_bytes > self.limits.max_pretls_bytes {
                return Err(Error::new(
                    Code::TooMuchData,
                    format!("more than {} bytes before TLS", self.limits.max_pretls_bytes),
                ));
            }
        }
        self.lines.extend(data);
        Ok(())
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Result<ClientAction> {
        if let Some(out) = self.out.take() {
            return Ok(ClientAction::Send(out));
        }
        if let Some(p) = self.parked.as_ref() {
            return Ok(match p {
                ClientAction::Decide { offered } => ClientAction::Decide { offered: *offered },
                ClientAction::Go => ClientAction::Go,
                ClientAction::Ready => ClientAction::Ready,
                _ => ClientAction::NeedInput,
            });
        }
        loop {
            let Some(line) = self.lines.next_line()? else { return Ok(ClientAction::NeedInput) };
            match self.inner.on_line(&line)? {
                Step::Wait => {}
                Step::Send(cmd) => return Ok(ClientAction::Send(cmd)),
                Step::Decide { offered } => {
                    self.parked = Some(ClientAction::Decide { offered });
                    return Ok(ClientAction::Decide { offered });
                }
                Step::Go => {
                    nothing_after_go(&self.lines.take())?;
                    self.parked = Some(ClientAction::Go);
                    return Ok(ClientAction::Go);
                }
                Step::Refused(e) => {
                    self.parked = Some(ClientAction::NeedInput);
                    return Ok(ClientAction::Refused(e));
                }
                Step::Ready => {
                    self.parked = Some(ClientAction::Ready);
                    return Ok(ClientAction::Ready);
                }
            }
        }
    }

    /// After `Decide`: ask for STARTTLS.
    pub fn request_starttls(&mut self) {
        self.parked = None;
        self.out = Some(self.inner.starttls());
    }

    /// After `Go`: TLS is up. Everything learnt in plaintext is forgotten and the
    /// capabilities are asked again (or awaited, where the server resends them).
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.parked = None;
        self.lines.clear();
        self.out = self.inner.tls_started();
    }

    /// Stops the dialogue where it is (plaintext, after `Decide` or `Refused`).
    pub fn finish_plain(&mut self) {
        self.parked = Some(ClientAction::Ready);
    }

    /// The capabilities now known.
    pub fn capabilities(&self) -> &[String] {
        self.inner.capabilities()
    }

    /// Whether the server pre-authenticated the connection (IMAP `PREAUTH`).
    pub fn preauth(&self) -> bool {
        self.inner.preauth()
    }

    /// Suspicious plaintext the report must mention.
    pub fn warnings(&self) -> &[String] {
        self.inner.warnings()
    }

    /// The polite goodbye, if any.
    pub fn quit(&self) -> Option<Vec<u8>> {
        self.inner.quit()
    }

    /// Bytes received but not consumed by the dialogue (handed to the application).
    pub fn take_unread(&mut self) -> Vec<u8> {
        self.lines.take()
    }
}

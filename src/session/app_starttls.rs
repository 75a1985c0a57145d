//! The handshake alone, for an application that keeps its own STARTTLS code (msmtp,
//! Exim, a mutt-like client): it sent STARTTLS and read the go reply itself, and hands
//! over the connection with whatever it read past that reply. Everything else is the
//! client negotiation's, entered at its handshake: a byte past the go reply is an
//! injection; the rung is memory's advice (or the caller's); the policy checks the
//! certificate; a failure that looks like intolerance is classified, refused as a
//! downgrade or recorded, and answered with `RetryNeeded`, since only the application
//! can redo its dialogue on a new connection. After TLS the capabilities are the
//! application's to ask again; nothing of its plaintext dialogue is in the report.
//! For implicit TLS the same call comes right after the connect (no go reply, no
//! read-ahead): the handshake is the same.

use super::*;
use crate::protocol::client::nothing_after_go;

impl Session {
    /// Runs (or resumes, after would-block) the TLS handshake of a client session
    /// whose application has sent STARTTLS and read the go reply itself. `read_ahead`
    /// is what it read past that reply: any byte there is a reply injection, refused
    /// before a byte is sent. `Ok`: TLS is established and the application's protocol
    /// goes on inside it, starting again with its capability query.
    pub fn start_tls(&mut self, read_ahead: &[u8]) -> Result<()> {
        match self.stage {
            Stage::Idle => {}
            Stage::ClientHandshake if self.app_starttls => {
                if !read_ahead.is_empty() {
                    return Err(Error::new(
                        Code::InvalidParameter,
                        "the handshake is under way: resume it with no bytes (or with continue)",
                    ));
                }
                return self.negotiate();
            }
            _ => return Err(self.start_tls_state_error()),
        }
        self.start_tls_allowed()?;
        self.io()?;
        self.app_starttls = true;
        if let Err(e) = nothing_after_go(read_ahead) {
            // One attempt, refused before its hello: it has no rung.
            self.started = Some(Instant::now());
            self.connections = 1;
            return Err(self.fail(e));
        }
        self.negotiate()
    }

    /// What the session's configuration says against a handshake after the
    /// application's STARTTLS.
    fn start_tls_allowed(&self) -> Result<()> {
        if self.implicit {
            return Err(Error::new(
                Code::InvalidState,
                "set_implicit_tls makes negotiate read the greeting itself; for implicit TLS with the application's own dialogue, call start_tls right after connecting, without set_implicit_tls",
            ));
        }
        if self.cfg.policy == Policy::None {
            return Err(Error::new(
                Code::InvalidState,
                "the config's policy is none, which never starts TLS: build it with may, encrypt or verify",
            ));
        }
        Ok(())
    }

    /// Why `start_tls` does not fit the session's stage.
    fn start_tls_state_error(&self) -> Error {
        let why = match self.stage {
            Stage::ServerPlain | Stage::ServerHandshake | Stage::Handoff => {
                "start_tls is for client sessions (a server calls server_starttls)".to_string()
            }
            Stage::Failed if self.app_starttls => format!(
                "this session's handshake has ended ({}): close the connection, reconnect, send STARTTLS again and start TLS on a new session",
                self.report.reason.map_or("failed", Code::name)
            ),
            Stage::Established | Stage::Plain | Stage::Failed => {
                "this session's negotiation is over: STARTTLS happens once per connection".to_string()
            }
            _ => "the session negotiates by itself (negotiate): start_tls is for a fresh session whose application sent STARTTLS".to_string(),
        };
        Error::new(Code::InvalidState, why)
    }
}

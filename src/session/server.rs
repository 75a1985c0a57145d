//! The server side: whether to offer STARTTLS and logins, the command checks
//! (require-TLS, a second STARTTLS, commands before the new EHLO), the go reply and
//! the handshake (STARTTLS or implicit), and the protocol's refusal replies.

use super::*;

impl Session {
    /// Whether the server should advertise STARTTLS now: a usable certificate is
    /// loaded, TLS is not active yet, and nothing has failed.
    pub fn offer_starttls(&self) -> bool {
        self.role == Role::Server
            && self.stage == Stage::ServerPlain
            && !self.authenticated
            && self.cfg.server_tls.as_ref().is_some_and(|t| t.now().is_ok())
            && !self.unserved_recently()
    }

    /// Server: whether the client may send credentials now. False in require-TLS
    /// mode before TLS: IMAP then advertises LOGINDISABLED, POP3 and SMTP leave their
    /// USER and AUTH capabilities out.
    pub fn auth_allowed(&self) -> bool {
        self.role == Role::Server && (!self.cfg.require_tls || self.stage == Stage::Established)
    }

    /// Server: the client has authenticated (or the protocol left the state where
    /// STARTTLS is allowed). From now on STARTTLS is neither offered nor accepted
    /// (RFC 9051 section 6.2.1, RFC 2595 section 4, RFC 4642 section 2.2.2).
    pub fn note_authenticated(&mut self) {
        self.authenticated = true;
    }

    /// Server: the reply line (with CRLF) for a refusal code of `check_command` or
    /// `server_starttls`, in the session's protocol, carrying the IMAP tag of the last
    /// checked command. None when the code has no reply.
    pub fn server_reply(&self, code: Code) -> Option<String> {
        let r = match code {
            Code::TlsRequired => Reply::Required,
            Code::TlsAlreadyActive => Reply::Active,
            Code::StateResetRequired => Reply::ResetFirst,
            Code::TlsUnavailable => Reply::Unavailable,
            Code::StarttlsNotAllowed => Reply::NotAllowed,
            _ => return None,
        };
        rules::reply(self.proto, r, &self.last_tag)
    }

    pub(super) fn reply_text(&self, r: Reply) -> String {
        rules::reply(self.proto, r, &self.last_tag).unwrap_or_default()
    }

    /// Whether server-side memory says this client's hello could not be served recently.
    pub(super) fn unserved_recently(&self) -> bool {
        let Some((m, ttl)) = &self.cfg.server_memory else { return false };
        if self.cfg.require_tls {
            return false;
        }
        let now = m.now();
        m.get(&self.client_key()).intolerant.is_some_and(|i| {
            i.class == FailureClass::Incompatible && now.saturating_sub(i.last) < ttl.as_secs()
        })
    }

    /// Whether TLS has just started and the client has not said EHLO again: the
    /// server must have forgotten all SMTP state (RFC 3207 section 4.2).
    pub fn reset_required(&self) -> bool {
        self.reset_required
    }

    /// Checks a command line the server received, before it acts on it: require-TLS
    /// refusals, STARTTLS when TLS is active, commands before the new EHLO after TLS.
    pub fn check_command(&mut self, line: &[u8]) -> Result<()> {
        if self.role != Role::Server {
            return Err(Error::new(Code::InvalidState, "check_command is for server sessions"));
        }
        let parsed = rules::parse(self.proto, line);
        let cmd = parsed.cmd;
        self.last_tag = parsed.tag;
        if self.stage == Stage::Established {
            if cmd == Command::StartTls {
                return Err(Error::new(Code::TlsAlreadyActive, "STARTTLS while TLS is active"));
            }
            if self.reset_required {
                match (self.proto, cmd) {
                    (Proto::Smtp | Proto::Lmtp, Command::Hello) => self.reset_required = false,
                    (Proto::Smtp | Proto::Lmtp, Command::Noop | Command::Quit | Command::Rset) => {}
                    (Proto::Smtp | Proto::Lmtp, _) => {
                        return Err(Error::new(Code::StateResetRequired, "a command before EHLO after STARTTLS"))
                    }
                    // The other protocols have no command that must come first: the
                    // application has reset its state by the time it checks the next one.
                    _ => self.reset_required = false,
                }
            }
            return Ok(());
        }
        if cmd == Command::StartTls && self.authenticated {
            return Err(Error::new(Code::StarttlsNotAllowed, "STARTTLS after authentication"));
        }
        if self.cfg.require_tls && !rules::allowed_before_tls(self.proto, cmd) {
            return Err(Error::new(Code::TlsRequired, format!("{:?} before STARTTLS", smtp::printable(line))));
        }
        Ok(())
    }

    /// Handles a received STARTTLS: `pipelined` holds whatever followed the command
    /// line in the server's buffer. Sends the reply itself (`220`, `454`, or the
    /// refusal of a second STARTTLS) and runs the handshake. On `Ok` TLS is active and
    /// the server must reset its protocol state.
    pub fn server_starttls(&mut self, pipelined: &[u8]) -> Result<()> {
        match self.stage {
            Stage::ServerPlain => {}
            Stage::ServerHandshake => return self.server_continue(),
            Stage::Established => {
                let r = self.reply_text(Reply::Active);
                self.queue(r.as_bytes())?;
                let _ = self.flush_out();
                let e = Error::new(Code::TlsAlreadyActive, "a second STARTTLS was refused");
                self.log(LogLevel::Warn, &e.detail);
                self.last_error = Some(e.clone());
                return Err(e);
            }
            _ => return Err(Error::new(Code::InvalidState, "server_starttls is for a server session before TLS")),
        }
        if self.authenticated {
            let r = self.reply_text(Reply::NotAllowed);
            self.plain_out.extend_from_slice(r.as_bytes());
            let _ = self.flush_out();
            let e = Error::new(Code::StarttlsNotAllowed, "STARTTLS after authentication was refused");
            self.log(LogLevel::Warn, &e.detail);
            self.last_error = Some(e.clone());
            return Err(e);
        }
        if self.proto == Proto::Imap && self.last_tag.is_empty() {
            return Err(Error::new(
                Code::InvalidState,
                "IMAP: pass the STARTTLS command line to check_command first, so that the go reply carries its tag",
            ));
        }
        self.io()?;
        self.started = Some(Instant::now());
        self.connections = 1;
        let available = match &self.cfg.server_tls {
            None => Err("no certificate is configured".to_string()),
            Some(t) => t.now().map_err(|e| e.detail),
        };
        let Ok(sc) = available else {
            let r = self.reply_text(Reply::Unavailable);
            self.plain_out.extend_from_slice(r.as_bytes());
            let _ = self.flush_out();
            let why = available.err().unwrap_or_default();
            let e = Error::new(Code::TlsUnavailable, format!("STARTTLS received but TLS cannot start ({why}): {} sent", r.trim_end()));
            self.log(LogLevel::Warn, &e.detail);
            self.last_error = Some(e.clone());
            return Err(e);
        };
        if !pipelined.is_empty() {
            self.report.discarded_after_starttls += pipelined.len() as u64;
            let shown = smtp::printable(pipelined);
            if self.cfg.injection == InjectionAction::Close {
                return Err(self.fail(Error::new(
                    Code::CommandInjection,
                    format!("{} bytes pipelined after STARTTLS: {shown:?}", pipelined.len()),
                )));
            }
            self.log(LogLevel::Warn, &format!("discarded {} bytes pipelined after STARTTLS: {shown:?}", pipelined.len()));
        }
        let conn = rustls::ServerConnection::new(sc)
            .map_err(|e| Error::new(Code::TlsConfig, format!("starting TLS: {e}")))?;
        let go = self.reply_text(Reply::Go);
        self.plain_out.extend_from_slice(go.as_bytes());
        self.tls = Some(Connection::Server(conn));
        self.stage = Stage::ServerHandshake;
        self.handshake_started = Some(Instant::now());
        self.new_step();
        self.server_continue()
    }

    /// Server, implicit TLS (RFC 8314): runs the handshake at once, before any
    /// protocol byte; the application sends its greeting through the session after
    /// `Ok`. A STARTTLS on such a connection is refused (`TlsAlreadyActive`).
    pub fn server_start_implicit(&mut self) -> Result<()> {
        match self.stage {
            Stage::ServerPlain if self.tls.is_none() => {}
            Stage::ServerHandshake => return self.server_continue(),
            _ => return Err(Error::new(Code::InvalidState, "implicit TLS starts on a fresh server session")),
        }
        self.io()?;
        self.started = Some(Instant::now());
        self.connections = 1;
        let sc = match &self.cfg.server_tls {
            None => return Err(self.fail(Error::new(Code::NoCertificate, "implicit TLS needs a certificate"))),
            Some(t) => match t.now() {
                Ok(sc) => sc,
                Err(e) => return Err(self.fail(e)),
            },
        };
        let conn = rustls::ServerConnection::new(sc)
            .map_err(|e| Error::new(Code::TlsConfig, format!("starting TLS: {e}")))?;
        self.implicit = true;
        self.tls = Some(Connection::Server(conn));
        self.stage = Stage::ServerHandshake;
        self.handshake_started = Some(Instant::now());
        self.new_step();
        self.server_continue()
    }

    pub(super) fn server_continue(&mut self) -> Result<()> {
        match self.server_steps() {
            Ok(()) => Ok(()),
            Err(e) if e.code == Code::WouldBlock => Err(e),
            Err(e) if e.code == Code::Handoff => {
                self.report.outcome = Some(Outcome::Handoff);
                self.report.reason = Some(Code::Handoff);
                self.report.detail = e.detail.clone();
                self.record_attempt(Code::Handoff, FailureClass::None);
                self.tls = None;
                self.stage = Stage::Handoff;
                self.deadline = None;
                Err(e)
            }
            Err(e) if e.code == Code::Timeout && self.role == Role::Server && !self.server_tls_seen => {
                let state = self.first_flight_state();
                Err(self.fail(Error::new(e.code, format!("{} {state}", e.detail))))
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    pub(super) fn server_steps(&mut self) -> Result<()> {
        loop {
            self.check_deadline()?;
            self.flush_out()?;
            let conn = self.tls.as_ref().ok_or_else(|| Error::new(Code::InvalidState, "no TLS connection"))?;
            if !conn.is_handshaking() {
                break;
            }
            if !conn.wants_write() {
                self.read_tls_once()?;
            }
        }
        self.record_tls_facts();
        self.report.outcome = Some(Outcome::Tls);
        self.report.reason = Some(Code::Ok);
        self.stage = Stage::Established;
        self.reset_required = !self.implicit;
        self.deadline = None;
        self.record_attempt(Code::Ok, FailureClass::None);
        self.log(
            LogLevel::Info,
            &format!(
                "TLS established: {} {} {}{}",
                self.report.tls_version.as_deref().unwrap_or("?"),
                self.report.cipher.as_deref().unwrap_or("?"),
                self.report.group.as_deref().unwrap_or("?"),
                if self.report.discarded_after_starttls > 0 {
                    format!(", {} pipelined bytes discarded", self.report.discarded_after_starttls)
                } else {
                    String::new()
                }
            ),
        );
        Ok(())
    }

    /// Resumes whatever stopped at "would block": a negotiation, a handshake, a flush.
    pub fn resume(&mut self) -> Result<()> {
        match self.stage {
            Stage::Dialogue | Stage::ClientHandshake => self.negotiate(),
            Stage::ServerHandshake => self.server_continue(),
            Stage::Failed => Err(self.last_error.clone().unwrap_or_else(|| Error::new(Code::InvalidState, "failed"))),
            _ => self.flush_out(),
        }
    }
}

//! The client negotiation on one connection: greeting, capabilities, the policy's
//! decision on STARTTLS (PREAUTH and refusals included), the handshake at the rung the
//! ladder chose, capabilities again under TLS, and the ending in the report (success,
//! plaintext as the policy allows, or failure with its reason).

use super::*;

impl Session {
    /// Gives the session a way to open new connections, so that it can retry by
    /// itself after a failure that a more conservative hello (or, under may,
    /// plaintext) may avoid.
    pub fn set_connector(&mut self, c: Box<dyn Connector>) {
        self.connector = Some(c);
    }

    /// Starts at this rung (and SNI setting) instead of the one memory would pick: for
    /// callers that retry on their own connection after `RetryNeeded`.
    pub fn set_start(&mut self, rung: Rung, sni: bool) -> Result<()> {
        if self.stage != Stage::Idle {
            return Err(Error::new(Code::InvalidState, "the rung must be set before negotiating"));
        }
        self.forced = Some((rung, sni));
        Ok(())
    }

    /// Implicit TLS (RFC 8314): the handshake starts on connect, before any protocol
    /// byte; the greeting and capabilities follow inside TLS. Never plaintext.
    pub fn set_implicit(&mut self, on: bool) -> Result<()> {
        if self.role != Role::Client || self.stage != Stage::Idle {
            return Err(Error::new(Code::InvalidState, "implicit TLS is chosen on a client session before negotiating"));
        }
        self.implicit = on;
        Ok(())
    }

    /// Tells the session whether the application will send credentials after the
    /// negotiation: then policy may never ends in plaintext unless the config allows
    /// plaintext authentication.
    pub fn set_will_authenticate(&mut self, on: bool) {
        self.will_authenticate = on;
    }

    pub(super) fn key(&self) -> Key {
        Key::new(self.proto, &self.host, self.port)
    }

    pub(super) fn memory(&self) -> Option<Arc<Memory>> {
        self.cfg.memory.clone()
    }

    pub(super) fn memo(&mut self, event: String) {
        self.log(LogLevel::Info, &format!("memory: {event}"));
        self.report.memory_events.push(event);
    }

    /// Runs (or resumes) the client negotiation: greeting, capabilities, STARTTLS as
    /// the policy says, the handshake, capabilities again; on a failure that looks
    /// like intolerance, again on a new connection with a more conservative hello.
    /// `Ok` means the session can carry the application's dialogue (TLS or plaintext
    /// as the policy allows).
    pub fn negotiate(&mut self) -> Result<()> {
        match self.stage {
            Stage::Idle => {
                if self.role != Role::Client {
                    return Err(Error::new(Code::InvalidState, "negotiate is for client sessions"));
                }
                self.started = Some(Instant::now());
                if let Err(e) = self.make_plan() {
                    // Decided before the first byte, even before a connection is
                    // needed: nothing is sent, no attempt made.
                    return Err(self.fail(e));
                }
                self.io()?;
                let (rung, sni) = self.first_rung();
                self.log(LogLevel::Debug, &format!("negotiating under policy {}", self.policy().name()));
                self.begin_attempt(rung, sni, self.plaintext_only);
            }
            Stage::Dialogue | Stage::ClientHandshake => {}
            Stage::Established | Stage::Plain => return Ok(()),
            Stage::Failed => {
                return Err(self.last_error.clone().unwrap_or_else(|| Error::new(Code::InvalidState, "failed")))
            }
            Stage::ServerPlain | Stage::ServerHandshake | Stage::Handoff => {
                return Err(Error::new(Code::InvalidState, "negotiate is for client sessions"))
            }
        }
        loop {
            match self.client_steps() {
                Ok(()) => return Ok(()),
                Err(e) if e.code == Code::WouldBlock => return Err(e),
                Err(e) => {
                    if let Err(e) = self.after_failure(e) {
                        return Err(self.fail(e));
                    }
                }
            }
        }
    }

    pub(super) fn client_steps(&mut self) -> Result<()> {
        loop {
            self.check_deadline()?;
            self.flush_out()?;
            match self.stage {
                // Implicit TLS, or a STARTTLS the application ran itself: TLS comes first.
                Stage::Dialogue if (self.implicit || self.app_starttls) && self.tls.is_none() => self.start_client_tls()?,
                Stage::Dialogue => {
                    let action = self.dialogue.as_mut().expect("dialogue stage has a dialogue").poll()?;
                    match action {
                        ClientAction::Send(bytes) => {
                            self.log(LogLevel::Debug, &format!("> {}", smtp::printable(&bytes).trim_end_matches('.')));
                            self.queue(&bytes)?;
                            self.new_step();
                        }
                        ClientAction::NeedInput => self.pump_dialogue()?,
                        ClientAction::Decide { offered } => self.decide(offered)?,
                        ClientAction::Go => self.start_client_tls()?,
                        ClientAction::Refused(e) => return self.refused(e),
                        ClientAction::Ready => {
                            self.finish_ok();
                            return Ok(());
                        }
                    }
                }
                Stage::ClientHandshake => {
                    if self.tls.as_ref().is_some_and(|c| c.is_handshaking()) {
                        if !self.tls.as_ref().is_some_and(|c| c.wants_write()) {
                            self.read_tls_once()?;
                        }
                    } else {
                        self.client_handshake_done();
                        if self.stage == Stage::Established {
                            // The application's own dialogue follows: what rustls still
                            // has to send (the client Finished) goes now, or with its
                            // first read or write if the transport would block.
                            return match self.flush_out() {
                                Err(e) if e.code != Code::WouldBlock => Err(e),
                                _ => Ok(()),
                            };
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    pub(super) fn pump_dialogue(&mut self) -> Result<()> {
        let mut buf = [0u8; 4096];
        if self.tls.is_some() {
            let r = self.tls.as_mut().expect("checked").reader().read(&mut buf);
            match r {
                Ok(0) => return Err(Error::new(Code::PeerClosed, "the server closed TLS in the middle of the dialogue")),
                Ok(n) => return self.dialogue.as_mut().expect("dialogue").feed(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Error::new(Code::PeerClosed, format!("reading the protected reply: {e}"))),
            }
            return self.read_tls_once();
        }
        let n = self.read_raw(&mut buf)?;
        if n == 0 {
            return Err(Error::new(Code::PeerClosed, "the server closed the connection in the middle of the dialogue"));
        }
        self.dialogue.as_mut().expect("dialogue").feed(&buf[..n])
    }

    pub(super) fn decide(&mut self, offered: bool) -> Result<()> {
        self.report.starttls_offered = offered;
        let policy = self.policy();
        if self.plaintext_only {
            self.dialogue.as_mut().expect("dialogue").finish_plain();
            return Ok(());
        }
        if self.dialogue.as_ref().is_some_and(Dialogue::preauth) {
            return self.preauth();
        }
        if !offered && self.pinned && policy != Policy::None {
            self.memo("stripping suspected: a pinned peer did not offer STARTTLS".into());
            return Err(Error::new(
                Code::StrippingSuspected,
                "STARTTLS not offered by a peer that negotiated TLS before (pinned): possible stripping",
            ));
        }
        match (policy, offered) {
            (Policy::None, _) => self.dialogue.as_mut().expect("dialogue").finish_plain(),
            (_, true) => self.dialogue.as_mut().expect("dialogue").request_starttls(),
            (Policy::May, false) => {
                if self.will_authenticate && !self.cfg.plaintext_auth {
                    return Err(Error::new(
                        Code::StarttlsNotOffered,
                        "STARTTLS not offered and credentials must not be sent in clear",
                    ));
                }
                self.report.reason = Some(Code::StarttlsNotOffered);
                self.report.rfc8460 = tls::rfc8460_result_type(Code::StarttlsNotOffered);
                self.report.detail = "STARTTLS not offered; plaintext as policy may allows".into();
                self.log(LogLevel::Warn, "STARTTLS not offered: going on in plaintext (policy may)");
                self.dialogue.as_mut().expect("dialogue").finish_plain();
            }
            (_, false) => {
                return Err(Error::new(
                    Code::StarttlsNotOffered,
                    format!("STARTTLS not offered and policy {} requires TLS", policy.name()),
                ))
            }
        }
        Ok(())
    }

    /// IMAP `PREAUTH` in plaintext: the connection is already authenticated, so
    /// STARTTLS cannot happen. Plaintext only where the policy allows it.
    pub(super) fn preauth(&mut self) -> Result<()> {
        let e = Error::new(Code::PreauthPlaintext, "the server pre-authenticated the connection in plaintext (PREAUTH): STARTTLS is impossible");
        match self.policy() {
            Policy::None => {}
            Policy::May if self.will_authenticate && !self.cfg.plaintext_auth && !self.pinned => {
                // Anyone on the path can forge this greeting to strip STARTTLS; an
                // application that came to log in must not go on in clear.
                return Err(Error::new(
                    e.code,
                    format!("{}; the session will authenticate and plaintext authentication is not allowed: deferring without sending anything", e.detail),
                ));
            }
            Policy::May if !self.pinned => {
                self.log(LogLevel::Warn, &format!("{}; going on in plaintext (policy may)", e.detail));
                self.report.reason = Some(e.code);
                self.report.rfc8460 = tls::rfc8460_result_type(e.code);
                self.report.detail = e.detail;
            }
            Policy::May => {
                self.memo("pinned peer pre-authenticated in plaintext: stripping suspected".into());
                return Err(Error::new(Code::StrippingSuspected, format!("{} (a pinned peer)", e.detail)));
            }
            _ => return Err(Error::new(e.code, format!("{}; policy {} requires TLS: closing", e.detail, self.policy().name()))),
        }
        self.dialogue.as_mut().expect("dialogue").finish_plain();
        Ok(())
    }

    pub(super) fn refused(&mut self, e: Error) -> Result<()> {
        // A 250 or 354 to STARTTLS leaves the server in an unknown state (a 354 even
        // means it now reads a message body): never go on, whatever the policy.
        if self.policy() == Policy::May && e.code != Code::StarttlsBadReply {
            if self.pinned {
                self.memo("pinned peer refused STARTTLS: no plaintext".into());
                return Err(Error::new(e.code, format!("{} (a pinned peer: no plaintext)", e.detail)));
            }
            if self.will_authenticate && !self.cfg.plaintext_auth {
                return Err(Error::new(e.code, format!("{}; credentials must not be sent in clear", e.detail)));
            }
            self.log(LogLevel::Warn, &format!("{}; going on in plaintext (policy may)", e.detail));
            self.report.reason = Some(e.code);
            self.report.rfc8460 = tls::rfc8460_result_type(e.code);
            self.report.detail = e.detail;
            self.dialogue.as_mut().expect("dialogue").finish_plain();
            self.finish_ok();
            return Ok(());
        }
        Err(e)
    }

    pub(super) fn start_client_tls(&mut self) -> Result<()> {
        let rung = self.next_rung;
        if self.cfg.client_tls.is_none() {
            return Err(Error::new(Code::InvalidState, "no client TLS config"));
        }
        let name = ServerName::try_from(self.tls_name())
            .map_err(|e| Error::new(Code::InvalidParameter, format!("server name: {e}")))?;
        let configs = self.rung_configs.as_ref().ok_or_else(|| Error::new(Code::InvalidState, "no plan for the handshake"))?;
        let config = tls::client::ClientTls::connection_config(configs, rung, self.sni);
        self.cert_seen = None;
        let conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| Error::new(Code::TlsConfig, format!("starting TLS: {e}")))?;
        self.tls = Some(Connection::Client(conn));
        self.rung = Some(rung);
        self.stage = Stage::ClientHandshake;
        self.handshake_started = Some(Instant::now());
        if let (Some(t0), false) = (self.started, self.implicit || self.app_starttls) {
            self.report.timings.plaintext = t0.elapsed();
        }
        // Until the server's first TLS byte, the wait is the (shorter) hello timeout:
        // a hang on a large hello is the most common intolerance.
        self.set_step_deadline(self.cfg.step_timeout.min(self.cfg.hello_timeout));
        if self.implicit {
            self.log(LogLevel::Debug, &format!("implicit TLS: handshake, rung {}", rung.name()));
        } else if self.app_starttls {
            self.log(LogLevel::Debug, &format!("after the application's STARTTLS: TLS handshake, rung {}", rung.name()));
        } else {
            self.log(LogLevel::Debug, &format!("go reply to STARTTLS: TLS handshake, rung {}", rung.name()));
        }
        Ok(())
    }

    pub(super) fn record_tls_facts(&mut self) {
        let Some(conn) = self.tls.as_ref() else { return };
        self.report.tls_version = conn.protocol_version().map(tls::version_name);
        self.report.cipher = conn
            .negotiated_cipher_suite()
            .map(|s| s.suite().as_str().map(str::to_string).unwrap_or_else(|| format!("{:?}", s.suite())));
        self.report.group = conn.negotiated_key_exchange_group().map(|g| format!("{:?}", g.name()));
        self.report.resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        self.report.peer_cert = conn.peer_certificates().and_then(|c| c.first()).map(tls::certinfo::describe);
        if let Some(t) = self.handshake_started {
            self.report.timings.handshake = t.elapsed();
        }
    }

    pub(super) fn client_handshake_done(&mut self) {
        self.record_tls_facts();
        let ctls = self.cfg.client_tls.as_ref().expect("client TLS config");
        if ctls.enforces() || self.plan_enforces() {
            self.report.cert_verified = Some(true);
        } else if let (Some(chain), Ok(name)) = (
            self.tls.as_ref().and_then(|c| c.peer_certificates()).map(<[_]>::to_vec),
            ServerName::try_from(self.server_name.clone()),
        ) {
            match ctls.check_chain(&chain, &name) {
                Some(Ok(())) => self.report.cert_verified = Some(true),
                Some(Err(e)) => {
                    self.report.cert_verified = Some(false);
                    self.report.cert_error = Some(e.detail);
                }
                None => {}
            }
        }
        if let Some(chain) = self.tls.as_ref().and_then(|c| c.peer_certificates()).map(<[_]>::to_vec) {
            self.check_testing(&chain);
        }
        if let (Some(m), Some(rung)) = (self.memory(), self.rung) {
            let pq = self.report.group.as_deref().is_some_and(|g| g.contains("MLKEM"));
            let tls13 = self.report.tls_version.as_deref() == Some("TLSv1.3");
            m.record_success(&self.key(), rung, self.sni, pq, tls13);
            self.memo(format!("recorded success at rung {} (pinned)", rung.name()));
        }
        self.log(
            LogLevel::Info,
            &format!(
                "TLS established: {} {} {}, rung {}, certificate {}",
                self.report.tls_version.as_deref().unwrap_or("?"),
                self.report.cipher.as_deref().unwrap_or("?"),
                self.report.group.as_deref().unwrap_or("?"),
                self.rung.map(Rung::name).unwrap_or("?"),
                match self.report.cert_verified {
                    Some(true) => "verified".to_string(),
                    Some(false) => format!("not verified ({})", self.report.cert_error.as_deref().unwrap_or("")),
                    None => "not checked".to_string(),
                }
            ),
        );
        if self.app_starttls {
            // The application asks for the capabilities again itself (RFC 3207 4.2).
            self.finish_ok();
            return;
        }
        if !self.implicit {
            self.dialogue.as_mut().expect("dialogue").tls_started();
        }
        self.stage = Stage::Dialogue;
        self.new_step();
    }

    pub(super) fn finish_ok(&mut self) {
        let tls = self.tls.is_some();
        // No dialogue after the application's own STARTTLS: it learns the rest itself.
        if let Some(d) = self.dialogue.as_mut() {
            self.report.capabilities = d.capabilities().to_vec();
            self.report.warnings = d.warnings().to_vec();
            self.report.preauth = d.preauth();
            self.app_in = d.take_unread();
        }
        if let Some(e) = self.fallback_reason.take() {
            self.report.rfc8460 = Some("validation-failure");
            self.report.reason = Some(e.code);
            self.report.detail = format!("plaintext after a failed TLS attempt: {}", e.detail);
        }
        if self.report.reason.is_none() {
            self.report.reason = Some(Code::Ok);
        }
        self.report.outcome = Some(if tls { Outcome::Tls } else { Outcome::Plaintext });
        if !tls {
            if let Some(t0) = self.started {
                self.report.timings.plaintext = t0.elapsed();
            }
            // Every plaintext outcome a TLS-capable policy did not choose is a
            // downgrade, and says so in a form a program can match.
            if let Some(code) = self.report.reason.filter(|&c| c != Code::Ok && self.policy() != Policy::None) {
                self.report.warnings.push(format!("plaintext-downgrade {}: {}", code.name(), self.report.detail));
            }
        }
        self.stage = if tls { Stage::Established } else { Stage::Plain };
        self.record_attempt(Code::Ok, FailureClass::None);
        self.report.tlsrpt = self.tlsrpt_result();
        self.deadline = None;
        if !tls {
            self.log(LogLevel::Info, &format!("plaintext session ({})", self.report.reason.map(Code::name).unwrap_or("ok")));
        }
    }

    /// Records the current connection's attempt, once.
    pub(super) fn record_attempt(&mut self, code: Code, class: FailureClass) {
        if self.report.attempts.len() < self.connections as usize {
            self.report.attempts.push(Attempt { rung: self.rung, code, class });
        }
        if let Some(t0) = self.started {
            self.report.timings.total = t0.elapsed();
        }
    }

    /// Ends the negotiation with an error: outcome, report, log, last error.
    pub(super) fn fail(&mut self, e: Error) -> Error {
        let outcome = match (self.role, e.code) {
            (Role::Client, Code::StarttlsRefusedPermanent) => Outcome::Fail,
            (Role::Client, _) => Outcome::Defer,
            (Role::Server, _) => Outcome::Fail,
        };
        if self.role == Role::Client
            && self.tls.is_none()
            && self.stage == Stage::Dialogue
            && matches!(
                e.code,
                Code::StarttlsNotOffered
                    | Code::StarttlsRefusedTemporary
                    | Code::StarttlsRefusedPermanent
                    | Code::GreetingRefused
                    | Code::CapabilityRefused
                    | Code::PreauthPlaintext
                    | Code::StrippingSuspected
            )
            && !(e.code == Code::PreauthPlaintext && self.policy() == Policy::May)
        {
            // A polite end to a sane plaintext dialogue; failing to send it changes nothing.
            if let Some(quit) = self.dialogue.as_ref().and_then(Dialogue::quit) {
                self.plain_out.clear();
                self.plain_out.extend_from_slice(&quit);
                let _ = self.flush_out();
            }
        }
        if let Some(d) = self.dialogue.as_ref() {
            self.report.warnings = d.warnings().to_vec();
        }
        self.report.outcome = Some(outcome);
        self.report.reason = Some(e.code);
        self.report.detail = e.detail.clone();
        self.report.rfc8460 = tls::rfc8460_result_type(e.code);
        if self.tls.is_some() && self.stage == Stage::ClientHandshake {
            // The handshake did not complete: nothing was negotiated, so the report
            // names no version, cipher or group; only the certificate the server showed.
            if let Some(t) = self.handshake_started {
                self.report.timings.handshake = t.elapsed();
            }
            self.report.peer_cert = self.cert_seen.as_ref().map(tls::certinfo::describe);
        }
        if let Some(d) = self.dialogue.as_ref() {
            self.report.preauth = d.preauth();
        }
        self.record_attempt(e.code, FailureClass::of_dialogue(e.code));
        self.stage = Stage::Failed;
        if self.role == Role::Client {
            self.report.tlsrpt = self.tlsrpt_result();
        }
        self.deadline = None;
        let loud = matches!(
            e.code,
            Code::ReplyInjection | Code::CommandInjection | Code::DowngradeDetected | Code::DowngradeSuspected | Code::StrippingSuspected
        );
        self.log(
            if loud { LogLevel::Error } else { LogLevel::Warn },
            &format!("{}: {} [{}]", outcome.name(), e.detail, e.code.name()),
        );
        self.last_error = Some(e.clone());
        e
    }
}

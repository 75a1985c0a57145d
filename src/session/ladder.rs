//! The attempt loop that talks to recovery: the first rung (memory's plan), each new
//! attempt, and what a failed connection leads to (a lower rung on a new connection,
//! plaintext under may, or the end), with memory records and downgrade refusals. The
//! classification itself is `recovery::classify`'s; this file only acts on it.

use super::*;

impl Session {
    /// The rung of the first attempt: forced by the caller, else memory's advice.
    pub(super) fn first_rung(&mut self) -> (Rung, bool) {
        if let Some(f) = self.forced {
            return f;
        }
        let Some(m) = self.memory() else { return (Rung::Modern, true) };
        if self.policy() == Policy::None {
            return (Rung::Modern, true);
        }
        let plan = m.plan(&self.key());
        if !plan.expired.is_empty() {
            self.memo(format!("expired and not used: {}", plan.expired.join(", ")));
        }
        self.pinned = plan.pinned;
        if plan.pinned {
            self.memo("pinned peer: TLS was negotiated before, plaintext is not allowed".into());
        }
        if plan.reprobe {
            self.reprobe = true;
            self.memo("intolerance recorded more than the re-probe interval ago: one try at the top rung".into());
        } else if plan.rung != Rung::Modern || !plan.sni {
            self.memo(format!("start at rung {}{}", plan.rung.name(), if plan.sni { "" } else { " without SNI" }));
        }
        if plan.incompatible && self.policy() == Policy::May && !plan.pinned && !self.implicit && !self.app_starttls {
            self.memo("incompatible peer (recently): plaintext without trying STARTTLS".into());
            self.plaintext_only = true;
            self.fallback_reason = Some(Error::new(Code::TlsHandshake, "the peer's TLS is incompatible (remembered)"));
        }
        (plan.rung, plan.sni)
    }

    /// Resets everything that belongs to one connection and starts its dialogue.
    pub(super) fn begin_attempt(&mut self, rung: Rung, sni: bool, plaintext_only: bool) {
        self.connections += 1;
        self.dialogue = if self.app_starttls {
            None
        } else if self.implicit {
            Dialogue::implicit(self.proto, &self.cfg.helo_name, self.cfg.limits).ok()
        } else {
            Dialogue::new(self.proto, &self.cfg.helo_name, self.cfg.limits).ok()
        };
        self.tls = None;
        self.tls_fatal = false;
        self.plain_out.clear();
        self.app_in.clear();
        self.pre_tls.clear();
        self.server_tls_seen = false;
        self.flight = FlightObserver::new();
        self.next_rung = rung;
        self.sni = sni;
        self.rung = None;
        self.plaintext_only = plaintext_only;
        self.stage = Stage::Dialogue;
        self.new_step();
    }

    /// Decides what a failed connection leads to: another attempt on a new connection
    /// (`Ok`), or the end of the negotiation (`Err`, the error to report).
    pub(super) fn after_failure(&mut self, e: Error) -> Result<()> {
        let handshake = self.stage == Stage::ClientHandshake;
        let rung = self.rung.unwrap_or(self.next_rung);
        let class = if handshake {
            classify::classify(&classify::Facts { code: e.code, rung, sni: self.sni, flight: &self.flight })
        } else {
            FailureClass::of_dialogue(e.code)
        };
        self.record_attempt(e.code, class);
        if self.out_of_time(&e) {
            // No rung and no plaintext retry fits in a negotiation whose time is up.
            return Err(if e.code == Code::Timeout { self.total_timeout_error() } else { e });
        }
        if !handshake {
            return Err(e);
        }
        let key = self.key();
        let memory = self.memory();
        if e.code == Code::DowngradeDetected {
            if let Some(m) = &memory {
                m.record_tls13_capable(&key);
                self.memo("the server proved it speaks TLS 1.3 (downgrade sentinel): its intolerance is forgotten".into());
            }
            return Err(e);
        }
        if class == FailureClass::Attack || e.code == Code::NotTls {
            return Err(e);
        }
        match classify::next_move(&classify::Facts { code: e.code, rung, sni: self.sni, flight: &self.flight }, class) {
            Some(mv) => self.move_down(e, class, rung, mv),
            None => self.ladder_floor(e, class),
        }
    }

    /// A failure the ladder answers with a more conservative hello: memory may refuse
    /// it as a downgrade; else the next attempt starts on a new connection (or the
    /// caller is asked to make one), within the connection bound.
    fn move_down(&mut self, e: Error, class: FailureClass, rung: Rung, mv: classify::Move) -> Result<()> {
        self.record_fallback(&e, class, rung, mv)?;
        let mut next = mv;
        if self.reprobe {
            // A failed re-probe goes back to what memory knew worked.
            if let Some(m) = self.memory() {
                let plan = m.plan(&self.key());
                if plan.rung > next.rung {
                    next.rung = plan.rung;
                }
            }
            self.reprobe = false;
        }
        self.log(
            LogLevel::Warn,
            &format!("{} at rung {} ({}): next rung {}{}", class.name(), rung.name(), e.detail, next.rung.name(), if next.sni { "" } else { " without SNI" }),
        );
        if !self.can_reconnect() {
            self.report.retry_rung = Some(next.rung);
            self.report.retry_without_sni = !next.sni;
            return Err(Error::new(
                Code::RetryNeeded,
                format!("{}; retry on a new connection with rung {}", e.detail, next.rung.name()),
            ));
        }
        if self.connections < self.cfg.max_connections {
            self.reconnect()?;
            self.begin_attempt(next.rung, next.sni, false);
            return Ok(());
        }
        self.plaintext_fallback(Error::new(
            Code::LadderExhausted,
            format!("connection bound ({}) reached: {}", self.cfg.max_connections, e.detail),
        ))
    }

    /// Memory's say on a move down: refused as a suspected downgrade when the peer
    /// accepted this rung recently or proved it speaks TLS 1.3 (for a TLS 1.2-only
    /// hello); else the intolerance (and an SNI switch) is recorded.
    fn record_fallback(&mut self, e: &Error, class: FailureClass, rung: Rung, mv: classify::Move) -> Result<()> {
        let Some(m) = self.memory() else { return Ok(()) };
        let key = self.key();
        if !m.fallback_allowed(&key, rung) {
            self.memo(format!("downgrade suspected: the peer accepted rung {} recently; no fallback", rung.name()));
            return Err(Error::new(
                Code::DowngradeSuspected,
                format!("{} at rung {}, which this peer accepted recently: refusing to fall back ({})", class.name(), rung.name(), e.detail),
            ));
        }
        if mv.rung == Rung::Tls12 && m.get(&key).tls13.is_some() {
            // A peer that proved it speaks TLS 1.3 (negotiated it, or sent the
            // sentinel) is never offered a hello without TLS 1.3 again.
            self.memo("downgrade suspected: the peer proved it speaks TLS 1.3; no TLS 1.2-only hello".into());
            return Err(Error::new(
                Code::DowngradeSuspected,
                format!("{} at rung {} from a peer known to speak TLS 1.3: refusing a TLS 1.2-only hello ({})", class.name(), rung.name(), e.detail),
            ));
        }
        m.record_intolerance(&key, rung, class);
        self.memo(format!("recorded {} at rung {}", class.name(), rung.name()));
        if !mv.sni && self.sni {
            m.record_sni_off(&key);
            self.memo("recorded: leave SNI out".into());
        }
        Ok(())
    }

    /// A failure with no rung left to try: what the peer is recorded as, and plaintext
    /// where the policy allows it.
    fn ladder_floor(&mut self, e: Error, class: FailureClass) -> Result<()> {
        let memory = self.memory();
        let key = self.key();
        match class {
            FailureClass::Intolerance => {
                // The floor failed too: nothing rustls can offer works with this peer.
                if let Some(m) = &memory {
                    m.record_incompatible(&key);
                    self.memo("ladder exhausted: recorded as incompatible, not as intolerant".into());
                }
                self.plaintext_fallback(Error::new(Code::LadderExhausted, format!("every rung failed; last: {}", e.detail)))
            }
            FailureClass::Incompatible => {
                if let Some(m) = &memory {
                    m.record_incompatible(&key);
                    self.memo("recorded as incompatible".into());
                }
                self.plaintext_fallback(e)
            }
            FailureClass::Certificate => Err(e),
            _ => self.plaintext_fallback(e),
        }
    }

    /// Under policy may, after a failed handshake: plaintext on a new connection,
    /// unless the peer is pinned or credentials would travel in clear.
    pub(super) fn plaintext_fallback(&mut self, e: Error) -> Result<()> {
        if self.policy() != Policy::May || self.implicit || self.app_starttls {
            return Err(e);
        }
        if self.pinned {
            self.memo("pinned peer: no plaintext fallback".into());
            return Err(e);
        }
        if self.will_authenticate && !self.cfg.plaintext_auth {
            return Err(Error::new(e.code, format!("{}; no plaintext fallback: credentials would be sent in clear", e.detail)));
        }
        // The bound counts TLS attempts: the one plaintext connection comes on top, so
        // that a first contact with a peer that fails every hello still delivers.
        if self.connector.is_none() {
            return Err(e);
        }
        self.log(LogLevel::Warn, &format!("TLS failed ({}): plaintext on a new connection (policy may)", e.detail));
        self.reconnect()?;
        self.fallback_reason = Some(e);
        self.begin_attempt(Rung::Modern, true, true);
        Ok(())
    }

    /// Whether the session opens new connections itself: it has a connector, and the
    /// dialogue before TLS is its own, never an application's STARTTLS, which only the
    /// application can send again.
    fn can_reconnect(&self) -> bool {
        self.connector.is_some() && !self.app_starttls
    }

    pub(super) fn reconnect(&mut self) -> Result<()> {
        let (host, port) = (self.host.clone(), self.port);
        let c = self.connector.as_mut().ok_or_else(|| Error::new(Code::InvalidState, "no connector"))?;
        c.close();
        let t = c.connect(&host, port).map_err(|e| Error::new(Code::Connect, format!("connecting to {host}:{port}: {e}")))?;
        self.io = Some(t);
        Ok(())
    }
}

//! The first flight after the go reply, seen from both sides: a client treats plaintext
//! there as reply injection; a server classifies the client's hello (the sniffer in
//! `tls::sniff`) and serves it, hands it off to the legacy engine, or refuses it with
//! the alert that fits, and remembers clients it could not serve.

use super::*;

impl Session {
    /// Before the peer's first TLS byte: plaintext here is injection. A client aborts;
    /// a server discards whole lines (counted) or refuses, by configuration. A server
    /// then classifies the hello and serves it, hands it off or refuses it. Returns
    /// the bytes to hand to TLS once the first TLS byte is there.
    pub(super) fn first_flight_check(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            let Some(&first) = self.pre_tls.first() else { return Ok(None) };
            if !looks_like_text(first) {
                if self.role == Role::Client {
                    self.server_tls_seen = true;
                    return Ok(Some(std::mem::take(&mut self.pre_tls)));
                }
                return self.classify_hello();
            }
            let shown = smtp::printable(&self.pre_tls);
            if self.role == Role::Server && self.implicit {
                // Nothing was pipelined after a STARTTLS here: the client speaks
                // plaintext where TLS must begin at once.
                self.note_hello(Hello::plaintext(), None);
                self.cfg.hello_counts[HelloKind::Plaintext as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(Error::new(
                    Code::NotTls,
                    format!("plaintext from the client on an implicit-TLS port, where its TLS hello belongs: {shown:?}; closing"),
                ));
            }
            if self.role == Role::Client && self.implicit {
                return Err(Error::new(
                    Code::NotTls,
                    format!("plaintext from the server on an implicit-TLS connection: {shown:?}"),
                ));
            }
            if self.role == Role::Client {
                return Err(Error::new(
                    Code::ReplyInjection,
                    format!("plaintext from the server after its go reply, where its TLS handshake belongs: {shown:?}"),
                ));
            }
            self.note_hello(Hello::plaintext(), None);
            if self.cfg.injection == InjectionAction::Close {
                return Err(Error::new(Code::CommandInjection, format!("plaintext after STARTTLS: {shown:?}")));
            }
            match self.pre_tls.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let line: Vec<u8> = self.pre_tls.drain(..=i).collect();
                    self.report.discarded_after_starttls += line.len() as u64;
                    self.log(LogLevel::Warn, &format!("discarded a command pipelined after STARTTLS: {:?}", smtp::printable(&line)));
                    if self.report.discarded_after_starttls > self.cfg.limits.max_pretls_bytes as u64 {
                        return Err(Error::new(
                            Code::CommandInjection,
                            format!("more than {} bytes of plaintext after STARTTLS", self.cfg.limits.max_pretls_bytes),
                        ));
                    }
                }
                None if self.pre_tls.len() > self.cfg.limits.max_line => {
                    return Err(Error::new(Code::CommandInjection, format!("overlong plaintext after STARTTLS: {shown:?}")));
                }
                None => return Ok(None),
            }
        }
    }

    /// Server: classifies the client's hello once enough of it is there, then acts.
    pub(super) fn classify_hello(&mut self) -> Result<Option<Vec<u8>>> {
        let h = match sniff::sniff(&self.pre_tls) {
            sniff::Sniff::NeedMore(_) => return Ok(None),
            sniff::Sniff::Done(h) => h,
        };
        let action = self.cfg.hello_action(h.kind);
        self.note_hello(h, Some(action));
        self.cfg.hello_counts[h.kind as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let what = format!("{} hello (client_version {:#06x})", h.kind.name(), h.client_version);
        match action {
            HelloAction::Serve => {
                self.log(LogLevel::Debug, &format!("{what}: served"));
                self.server_tls_seen = true;
                Ok(Some(std::mem::take(&mut self.pre_tls)))
            }
            HelloAction::Handoff => {
                self.log(LogLevel::Info, &format!("{what}: handed off to the legacy TLS engine ({} bytes read)", self.pre_tls.len()));
                self.handoff = std::mem::take(&mut self.pre_tls);
                Err(Error::new(Code::Handoff, format!("{what} handed off")))
            }
            HelloAction::Refuse => {
                let what = if h.defect.is_empty() { what } else { format!("{what}: {}", h.defect) };
                let alert = sniff::refusal_bytes(&h);
                // The refusal is a courtesy; the connection ends either way. What a
                // non-blocking transport did not take stays queued for `flush`. The
                // log says what happened to it, no more.
                let sent = if alert.is_empty() {
                    "closing without an alert".to_string()
                } else {
                    self.plain_out.extend_from_slice(&alert);
                    let name = sniff::alert_name(h.alert);
                    match self.flush_out() {
                        Ok(()) => format!("{name} alert sent, closing"),
                        Err(e) if e.code == Code::WouldBlock => format!("{name} alert queued (the transport would block), closing"),
                        Err(e) => format!("{name} alert not sent ({}), closing", e.detail),
                    }
                };
                self.remember_unserved(&what);
                let why = if h.kind == HelloKind::Unknown { "refused" } else { "refused by configuration" };
                Err(Error::new(Code::HelloRefused, format!("{what} {why}; {sent}")))
            }
        }
    }

    /// Where a server's reading of the client's first flight stood, for errors.
    pub(super) fn first_flight_state(&self) -> String {
        match (self.server_tls_seen, self.pre_tls.len()) {
            (true, _) => "during the TLS handshake".into(),
            (false, 0) => "before any TLS byte".into(),
            (false, n) => format!("after {n} byte{} of its first flight, before the hello could be classified", if n == 1 { "" } else { "s" }),
        }
    }

    pub(super) fn note_hello(&mut self, h: Hello, action: Option<HelloAction>) {
        self.report.hello = Some(h);
        self.report.hello_action = action;
    }

    /// Server-side memory: a client whose hello could not be served is not offered
    /// STARTTLS for a while, so that its plaintext retry gets through.
    pub(super) fn remember_unserved(&mut self, what: &str) {
        if self.cfg.require_tls {
            return;
        }
        if let Some((m, ttl)) = &self.cfg.server_memory {
            m.record_incompatible(&self.client_key());
            self.log(
                LogLevel::Warn,
                &format!("{what}: STARTTLS will not be offered to {} for {} s", client_ip(&self.host), ttl.as_secs()),
            );
        }
    }

    pub(super) fn client_key(&self) -> Key {
        Key::new(self.proto, client_ip(&self.host), 0)
    }

    /// The bytes of the first flight a handed-off connection had already sent.
    pub fn handoff_bytes(&self) -> &[u8] {
        &self.handoff
    }
}

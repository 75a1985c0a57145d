//! The transport and the record pump: step deadlines (each bounded by the
//! negotiation's total deadline), raw reads and writes with would-block kept apart,
//! queued output, and feeding TLS records to rustls and its errors back as ours. Takes
//! no decision about the negotiation: it moves bytes and reports what happened.

use super::*;

impl Session {
    pub(super) fn new_step(&mut self) {
        self.set_step_deadline(self.cfg.step_timeout);
    }

    /// Starts a step that may take `step`, but never past the negotiation's total deadline.
    pub(super) fn set_step_deadline(&mut self, step: Duration) {
        let mut d = Instant::now() + step;
        if let Some(total) = self.total_deadline() {
            d = d.min(total);
        }
        self.deadline = Some(d);
        if let Some(io) = self.io.as_mut() {
            io.set_deadline(Some(d));
        }
    }

    /// When the negotiation as a whole must be done (while it runs).
    pub(super) fn total_deadline(&self) -> Option<Instant> {
        match self.stage {
            Stage::Dialogue | Stage::ClientHandshake | Stage::ServerHandshake => {
                self.started.map(|t0| t0 + self.cfg.total_timeout)
            }
            _ => None,
        }
    }

    pub(super) fn total_expired(&self) -> bool {
        self.total_deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// Whether `e` ends the negotiation for want of time: the total deadline passed,
    /// or the step that timed out was the one cut short by it (a transport may give up
    /// a hair before the deadline it was told).
    pub(super) fn out_of_time(&self, e: &Error) -> bool {
        self.total_expired()
            || (e.code == Code::Timeout && self.deadline.is_some() && self.deadline == self.total_deadline())
    }

    pub(super) fn total_timeout_error(&self) -> Error {
        Error::new(
            Code::Timeout,
            format!(
                "negotiation not done within {} ms in all ({} connection{})",
                self.cfg.total_timeout.as_millis(),
                self.connections,
                if self.connections == 1 { "" } else { "s" }
            ),
        )
    }

    pub(super) fn check_deadline(&self) -> Result<()> {
        match self.deadline {
            Some(_) if self.total_expired() => Err(self.total_timeout_error()),
            Some(d) if Instant::now() >= d => Err(Error::new(
                Code::Timeout,
                format!("step not done within {} ms", self.cfg.step_timeout.as_millis()),
            )),
            _ => Ok(()),
        }
    }

    pub(super) fn io(&mut self) -> Result<&mut Box<dyn Transport>> {
        self.io.as_mut().ok_or_else(|| Error::new(Code::InvalidState, "no transport: set the I/O callbacks or fd first"))
    }

    pub(super) fn read_raw(&mut self, buf: &mut [u8]) -> Result<usize> {
        let r = self.io()?.read(buf);
        match r {
            Ok(n) => {
                self.blocked = Blocked::Nothing;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(self.read_raw(buf)?),
            Err(e) => {
                if e.kind() == io::ErrorKind::WouldBlock {
                    self.blocked = Blocked::Read;
                }
                Err(Error::from_io(&e, "read"))
            }
        }
    }

    pub(super) fn write_raw(&mut self, buf: &[u8]) -> Result<usize> {
        loop {
            match self.io()?.write(buf) {
                Ok(0) if !buf.is_empty() => return Err(Error::new(Code::Io, "write: the transport took no bytes")),
                Ok(n) => {
                    self.blocked = Blocked::Nothing;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        self.blocked = Blocked::Write;
                    }
                    return Err(Error::from_io(&e, "write"));
                }
            }
        }
    }

    /// Writes out everything queued: plaintext first, then TLS records.
    pub(super) fn flush_out(&mut self) -> Result<()> {
        while !self.plain_out.is_empty() {
            let out = std::mem::take(&mut self.plain_out);
            let r = self.write_raw(&out);
            match r {
                Ok(n) => self.plain_out = out[n..].to_vec(),
                Err(e) => {
                    self.plain_out = out;
                    return Err(e);
                }
            }
        }
        while self.tls.as_ref().is_some_and(|c| c.wants_write()) {
            let mut conn = self.tls.take().expect("checked above");
            let r = {
                let mut w = TransportWriter { io: self.io.as_deref_mut() };
                conn.write_tls(&mut w)
            };
            self.tls = Some(conn);
            match r {
                Ok(_) => self.blocked = Blocked::Nothing,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        self.blocked = Blocked::Write;
                    }
                    return Err(Error::from_io(&e, "write"));
                }
            }
        }
        if self.blocked == Blocked::Write {
            self.blocked = Blocked::Nothing;
        }
        Ok(())
    }

    pub(super) fn queue(&mut self, bytes: &[u8]) -> Result<()> {
        match self.tls.as_mut() {
            Some(conn) => conn
                .writer()
                .write_all(bytes)
                .map_err(|e| Error::new(Code::TlsRecord, format!("queueing {} bytes: {e}", bytes.len()))),
            None => {
                self.plain_out.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    /// Reads once from the transport and feeds TLS. EOF during the handshake is an
    /// error; after it, rustls learns of it and the reader reports clean or truncated close.
    pub(super) fn read_tls_once(&mut self) -> Result<()> {
        if self.stage == Stage::Established && self.tls.as_ref().is_some_and(|c| !c.is_handshaking()) {
            return self.read_tls_direct();
        }
        let mut buf = [0u8; 16 * 1024 + 512];
        // A server still classifying the client's hello reads no further than the
        // sniffer needs, so that a handoff leaves the rest on the transport.
        let want = match (self.role, self.server_tls_seen) {
            (Role::Server, false) => match sniff::sniff(&self.pre_tls) {
                // Every hello is at least 5 bytes long (a record header): ask for
                // that much at first rather than the one byte that decides the kind.
                sniff::Sniff::NeedMore(n) => n.max(5).saturating_sub(self.pre_tls.len()).clamp(1, buf.len()),
                sniff::Sniff::Done(_) => 512,
            },
            _ => buf.len(),
        };
        let n = self.read_raw(&mut buf[..want])?;
        let handshaking = self.tls.as_ref().is_some_and(|c| c.is_handshaking());
        if n == 0 {
            if handshaking {
                let what = self.first_flight_state();
                return Err(Error::new(Code::PeerClosed, format!("connection closed by the peer {what}")));
            }
            if let Some(conn) = self.tls.as_mut() {
                let _ = conn.read_tls(&mut &[][..]);
            }
            return Ok(());
        }
        if self.role == Role::Client && handshaking {
            let first = !self.flight.any_bytes();
            self.flight.observe(&buf[..n]);
            if first {
                self.new_step();
            }
            if self.rung == Some(Rung::Tls12) {
                if let Some(sh) = self.flight.server_hello.filter(|sh| sh.downgrade_sentinel()) {
                    return Err(Error::new(
                        Code::DowngradeDetected,
                        format!(
                            "the server's ServerHello (version {:#06x}) carries the RFC 8446 downgrade sentinel: it speaks TLS 1.3, so the failure of the TLS 1.3 hello was someone else's doing",
                            sh.version()
                        ),
                    ));
                }
            }
        }
        let data: Vec<u8> = if self.server_tls_seen {
            buf[..n].to_vec()
        } else {
            self.pre_tls.extend_from_slice(&buf[..n]);
            match self.first_flight_check()? {
                Some(d) => d,
                None => return Ok(()),
            }
        };
        self.feed_tls(&data)
    }

    /// After the handshake: from the transport straight into rustls' buffer, as bare
    /// rustls does (no intermediate buffer to clear and copy; nothing is observed).
    /// End of stream is rustls' to note: a missing close_notify shows on the next read.
    pub(super) fn read_tls_direct(&mut self) -> Result<()> {
        let conn = self.tls.as_mut().expect("checked by the caller");
        let got = loop {
            let mut r = TransportReader { io: self.io.as_deref_mut() };
            match conn.read_tls(&mut r) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match got {
            Ok(_) => self.blocked = Blocked::Nothing,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(Error::new(Code::TlsRecord, format!("buffering TLS: {e}")))
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::WouldBlock {
                    self.blocked = Blocked::Read;
                }
                return Err(Error::from_io(&e, "read"));
            }
        }
        let processed = conn.process_new_packets();
        if let Some(cert) = tls::client::take_seen_certificate() {
            self.cert_seen = Some(cert);
        }
        if let Err(e) = processed {
            return Err(self.tls_failed(&e));
        }
        Ok(())
    }

    /// A fatal TLS error from rustls: its alert (if it sent one) goes out, no
    /// close_notify ever follows it, and the error names what happened: a handshake
    /// failure, or a record error after the handshake.
    pub(super) fn tls_failed(&mut self, e: &rustls::Error) -> Error {
        let during = if self.tls.as_ref().is_some_and(|c| c.is_handshaking()) { "handshake" } else { "record" };
        let violation = tls::records::take_violation();
        self.tls_fatal = true;
        // Let rustls' alert reach the peer before we give up; failure to send it changes nothing.
        let _ = self.flush_out();
        match violation {
            Some(v) => Error::new(
                if during == "record" { Code::TlsRecord } else { Code::TlsHandshake },
                format!("{during}: the peer sent {}: unexpected_message alert sent", v.describe()),
            ),
            None => tls::map_error(e, during),
        }
    }

    pub(super) fn feed_tls(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let conn = self.tls.as_mut().ok_or_else(|| Error::new(Code::InvalidState, "no TLS connection"))?;
            conn.read_tls(&mut data).map_err(|e| Error::new(Code::TlsRecord, format!("buffering TLS: {e}")))?;
            let processed = conn.process_new_packets();
            if let Some(cert) = tls::client::take_seen_certificate() {
                self.cert_seen = Some(cert);
            }
            if let Err(e) = processed {
                return Err(self.tls_failed(&e));
            }
        }
        Ok(())
    }
}

/// `io::Read` over the session's transport, for rustls' `read_tls`.
struct TransportReader<'a> {
    io: Option<&'a mut (dyn Transport + 'static)>,
}

impl io::Read for TransportReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.io.as_mut() {
            Some(t) => t.read(buf),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "no transport")),
        }
    }
}

/// `io::Write` over the session's transport, for rustls' `write_tls`.
struct TransportWriter<'a> {
    io: Option<&'a mut (dyn Transport + 'static)>,
}

impl Write for TransportWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.io.as_mut() {
            Some(t) => t.write(buf),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "no transport")),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self.io.as_mut() {
            Some(t) => t.write_vectored(bufs),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "no transport")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

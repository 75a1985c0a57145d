//! Application data once the negotiation is done: reads and writes (decrypted and
//! encrypted after TLS, raw in plaintext), flushing, resuming after would-block, and
//! the close (no close_notify after a fatal error; a close mid-negotiation ends it).

use super::*;

impl Session {
    /// Reads application data: decrypted after TLS, raw in a plaintext session.
    /// `Closed` on a clean end (close_notify, or EOF in plaintext), `PeerClosed` on a
    /// truncated one.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.app_in.is_empty() {
            let n = buf.len().min(self.app_in.len());
            buf[..n].copy_from_slice(&self.app_in[..n]);
            self.app_in.drain(..n);
            return Ok(n);
        }
        if matches!(self.stage, Stage::Established | Stage::Plain) {
            self.new_step();
        }
        match self.stage {
            Stage::Established => loop {
                match self.flush_out() {
                    Ok(()) => {}
                    Err(e) if e.code == Code::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                let r = self.tls.as_mut().expect("established has TLS").reader().read(buf);
                match r {
                    Ok(0) => return Err(Error::new(Code::Closed, "the peer sent close_notify")),
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.read_tls_once()?,
                    Err(e) => {
                        return Err(Error::new(Code::PeerClosed, format!("connection closed without close_notify: {e}")))
                    }
                }
            },
            Stage::Plain => {
                let n = self.read_raw(buf)?;
                if n == 0 {
                    return Err(Error::new(Code::Closed, "the peer closed the connection"));
                }
                Ok(n)
            }
            _ => Err(Error::new(Code::InvalidState, "no session to read from: negotiate first")),
        }
    }

    /// Writes application data; returns how much was taken (encrypted and queued, or
    /// written in plaintext). Queued TLS output is flushed as far as the transport allows.
    pub fn write(&mut self, data: &[u8]) -> Result<usize> {
        if matches!(self.stage, Stage::Established | Stage::Plain | Stage::ServerPlain) {
            self.new_step();
        }
        match self.stage {
            Stage::Established => {
                match self.flush_out() {
                    Ok(()) => {}
                    Err(e) if e.code == Code::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                let n = self
                    .tls
                    .as_mut()
                    .expect("established has TLS")
                    .writer()
                    .write(data)
                    .map_err(|e| Error::new(Code::TlsRecord, format!("encrypting: {e}")))?;
                match self.flush_out() {
                    Ok(()) => Ok(n),
                    Err(e) if e.code == Code::WouldBlock && n > 0 => Ok(n),
                    Err(e) => Err(e),
                }
            }
            Stage::Plain | Stage::ServerPlain if self.io.is_some() => {
                self.flush_out()?;
                self.write_raw(data)
            }
            _ => Err(Error::new(Code::InvalidState, "no session to write to: negotiate first")),
        }
    }

    /// Writes out everything queued (for non-blocking callers after "would block").
    pub fn flush(&mut self) -> Result<()> {
        self.flush_out()
    }

    /// Sends TLS close_notify (when TLS is established) and flushes. After a fatal TLS
    /// error nothing is sent: a close_notify would tell the peer the close was orderly.
    /// A close during the negotiation ends it: the session fails, and nothing more is
    /// read or sent for the handshake (rustls would otherwise go on after its own
    /// close_notify, on a connection the application gave up).
    pub fn close(&mut self) -> Result<()> {
        if matches!(self.stage, Stage::Dialogue | Stage::ClientHandshake | Stage::ServerHandshake) {
            let _ = self.fail(Error::new(Code::InvalidState, "the application closed the session during the negotiation"));
            // Nothing queued for the handshake (the rest of a hello) goes out any more.
            self.plain_out.clear();
            self.tls = None;
            return Ok(());
        }
        if let Some(conn) = self.tls.as_mut().filter(|_| !self.tls_fatal && self.stage == Stage::Established) {
            conn.send_close_notify();
        }
        if self.io.is_some() {
            self.flush_out()?;
        }
        Ok(())
    }
}

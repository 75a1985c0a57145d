//! The session: drives the protocol dialogue, TLS and (later) recovery over a
//! transport; the one place where a negotiation's decisions are taken. Every call
//! can stop at "would block" and be resumed, so event-loop programs need no threads.

pub mod report;

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::Connection;

use crate::config::{Config, HelloAction, InjectionAction, LogLevel, Policy, Role};
use crate::error::{Code, Error, Result};
use crate::protocol::client::{ClientAction, Dialogue};
use crate::protocol::server::{self as rules, Command, Reply};
use crate::protocol::smtp;
use crate::protocol::Proto;
use crate::recovery::memory::{Key, Memory};
use crate::recovery::{classify, FailureClass, Rung};
use crate::tls::observe::FlightObserver;
use crate::tls::sniff::{self, Hello, HelloKind};
use crate::tls;
use report::{Attempt, Outcome, Report};

/// The most [`Transport::write_vectored`] gathers into one write by copying: a whole
/// handshake flight, but not full-size records, which go out as they are.
pub const COALESCE_MAX: usize = 16 * 1024;

/// A byte stream the session reads and writes: the C program's socket, through its
/// callbacks or a plain file descriptor. `read` returns Ok(0) at EOF; errors of kind
/// `WouldBlock` and `TimedOut` are kept apart from the rest.
pub trait Transport {
    /// Reads into `buf`.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes from `buf`, returning how much was taken.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Writes from several buffers in order, returning how much was taken. TLS hands
    /// over a flight as one buffer per record; sending it in one write keeps it in one
    /// segment where it fits (no Nagle wait between records, one wakeup of the peer).
    /// The default gathers small buffers into one `write`; a transport with a real
    /// gathering write (writev) overrides it.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut bufs = bufs.iter().filter(|b| !b.is_empty());
        let Some(first) = bufs.next() else { return Ok(0) };
        // The buffers that go together: the first, then as many as fit under the limit.
        let (mut n, mut total) = (1, first.len());
        for b in bufs.clone() {
            if total + b.len() > COALESCE_MAX {
                break;
            }
            n += 1;
            total += b.len();
        }
        if n == 1 {
            return self.write(first);
        }
        let mut joined = Vec::with_capacity(total);
        joined.extend_from_slice(first);
        for b in bufs.take(n - 1) {
            joined.extend_from_slice(b);
        }
        self.write(&joined)
    }
    /// The time by which the current step must be done; a transport that can wait
    /// with a limit (poll) honours it.
    fn set_deadline(&mut self, _deadline: Option<Instant>) {}
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Client, before `negotiate`.
    Idle,
    /// Client, plaintext or protected capability dialogue.
    Dialogue,
    /// Client, TLS handshake after the go.
    ClientHandshake,
    /// Server, before STARTTLS: the application does its own plaintext I/O.
    ServerPlain,
    /// Server, TLS handshake after the `220`.
    ServerHandshake,
    /// TLS is up: application data.
    Established,
    /// The client goes on in plaintext, as the policy allows.
    Plain,
    /// Finished with an error.
    Failed,
    /// Server: the connection belongs to the application's legacy TLS engine now.
    Handoff,
}

/// The address part of a peer string ("192.0.2.1:2525", "[2001:db8::1]:25", "host").
fn client_ip(peer: &str) -> &str {
    if let Some(rest) = peer.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match peer.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
        _ => peer,
    }
}

/// Opens new connections for a client's retries. The session calls `close` on the
/// connection it gives up before calling `connect` for the next.
pub trait Connector {
    /// Opens a new connection to `host:port` and returns its transport.
    fn connect(&mut self, host: &str, port: u16) -> io::Result<Box<dyn Transport>>;
    /// The session is done with its current connection.
    fn close(&mut self);
}

/// Which way the transport last blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Blocked {
    Nothing,
    Read,
    Write,
}

/// One connection's negotiation and, after it, its data.
pub struct Session {
    cfg: Arc<Config>,
    role: Role,
    proto: Proto,
    host: String,
    port: u16,
    server_name: String,
    io: Option<Box<dyn Transport>>,
    stage: Stage,
    dialogue: Option<Dialogue>,
    tls: Option<Connection>,
    plain_out: Vec<u8>,
    app_in: Vec<u8>,
    pre_tls: Vec<u8>,
    server_tls_seen: bool,
    rung: Option<Rung>,
    report: Report,
    last_error: Option<Error>,
    started: Option<Instant>,
    handshake_started: Option<Instant>,
    deadline: Option<Instant>,
    blocked: Blocked,
    reset_required: bool,
    connector: Option<Box<dyn Connector>>,
    flight: FlightObserver,
    next_rung: Rung,
    sni: bool,
    forced: Option<(Rung, bool)>,
    connections: u32,
    pinned: bool,
    reprobe: bool,
    plaintext_only: bool,
    will_authenticate: bool,
    fallback_reason: Option<Error>,
    cert_seen: Option<rustls::pki_types::CertificateDer<'static>>,
    handoff: Vec<u8>,
    implicit: bool,
    authenticated: bool,
    last_tag: String,
    tls_fatal: bool,
}

/// A byte is printable text, as a protocol line would start: never the first byte of
/// a TLS record (content types 20..24) or of an SSLv2 hello (high bit set).
fn looks_like_text(b: u8) -> bool {
    b.is_ascii_graphic() || b == b' '
}

impl Session {
    /// A client session for `host` (also the default reference name and SNI) and `port`.
    pub fn client(cfg: Arc<Config>, proto: Proto, host: &str, port: u16) -> Result<Self> {
        if cfg.role != Role::Client {
            return Err(Error::new(Code::InvalidParameter, "a client session needs a client config"));
        }
        let mut s = Self::new(cfg, Role::Client, proto, host)?;
        s.port = port;
        s.set_server_name(host)?;
        Ok(s)
    }

    /// A server session for a connection from `peer` (used in logs and reports).
    pub fn server(cfg: Arc<Config>, proto: Proto, peer: &str) -> Result<Self> {
        if cfg.role != Role::Server {
            return Err(Error::new(Code::InvalidParameter, "a server session needs a server config"));
        }
        let mut s = Self::new(cfg, Role::Server, proto, peer)?;
        s.stage = Stage::ServerPlain;
        Ok(s)
    }

    fn new(cfg: Arc<Config>, role: Role, proto: Proto, host: &str) -> Result<Self> {
        if !proto.supported() {
            return Err(Error::new(
                Code::Unsupported,
                format!("protocol {} is not supported by this release", proto.name()),
            ));
        }
        if host.is_empty() || host.len() > 255 || host.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(Error::new(Code::InvalidParameter, "host must be 1..255 printable characters"));
        }
        Ok(Session {
            cfg,
            role,
            proto,
            host: host.to_string(),
            port: 0,
            server_name: host.to_string(),
            io: None,
            stage: Stage::Idle,
            dialogue: None,
            tls: None,
            plain_out: Vec::new(),
            app_in: Vec::new(),
            pre_tls: Vec::new(),
            server_tls_seen: false,
            rung: None,
            report: Report::default(),
            last_error: None,
            started: None,
            handshake_started: None,
            deadline: None,
            blocked: Blocked::Nothing,
            reset_required: false,
            connector: None,
            flight: FlightObserver::new(),
            next_rung: Rung::Modern,
            sni: true,
            forced: None,
            connections: 0,
            pinned: false,
            reprobe: false,
            plaintext_only: false,
            will_authenticate: false,
            fallback_reason: None,
            cert_seen: None,
            handoff: Vec::new(),
            implicit: false,
            authenticated: false,
            last_tag: String::new(),
            tls_fatal: false,
        })
    }

    /// Sets the reference name checked under `verify` and sent as SNI (default: the host).
    pub fn set_server_name(&mut self, name: &str) -> Result<()> {
        ServerName::try_from(name.to_string())
            .map_err(|e| Error::new(Code::InvalidParameter, format!("server name {name:?}: {e}")))?;
        if self.stage != Stage::Idle {
            return Err(Error::new(Code::InvalidState, "the server name must be set before negotiating"));
        }
        self.server_name = name.to_string();
        Ok(())
    }

    /// Hands the session its transport (replacing any earlier one).
    pub fn set_transport(&mut self, t: Box<dyn Transport>) {
        self.io = Some(t);
    }

    /// The report so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The last error with its full detail.
    pub fn last_error(&self) -> Option<&Error> {
        self.last_error.as_ref()
    }

    /// Records an error from the caller's side (bad argument, wrong state) as the last error.
    pub fn note_error(&mut self, e: &Error) {
        if e.code != Code::WouldBlock {
            self.last_error = Some(e.clone());
        }
    }

    /// Whether output is waiting, or the transport last blocked on a write.
    pub fn wants_write(&self) -> bool {
        !self.plain_out.is_empty()
            || self.tls.as_ref().is_some_and(|c| c.wants_write())
            || self.blocked == Blocked::Write
    }

    /// Whether the transport last blocked on a read.
    pub fn wants_read(&self) -> bool {
        self.blocked == Blocked::Read
    }

    /// Whether TLS is established.
    pub fn tls_active(&self) -> bool {
        self.stage == Stage::Established
    }

    fn log(&self, level: LogLevel, msg: &str) {
        if let Some((f, max)) = &self.cfg.log {
            if level <= *max {
                let side = if self.role == Role::Client { "to" } else { "from" };
                let port = if self.port != 0 { format!(":{}", self.port) } else { String::new() };
                f(level, &format!("{} {side} {}{port}: {msg}", self.proto.name(), self.host));
            }
        }
    }

    // ---- transport plumbing ----

    fn new_step(&mut self) {
        self.set_step_deadline(self.cfg.step_timeout);
    }

    /// Starts a step that may take `step`, but never past the negotiation's total deadline.
    fn set_step_deadline(&mut self, step: Duration) {
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
    fn total_deadline(&self) -> Option<Instant> {
        match self.stage {
            Stage::Dialogue | Stage::ClientHandshake | Stage::ServerHandshake => {
                self.started.map(|t0| t0 + self.cfg.total_timeout)
            }
            _ => None,
        }
    }

    fn total_expired(&self) -> bool {
        self.total_deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// Whether `e` ends the negotiation for want of time: the total deadline passed,
    /// or the step that timed out was the one cut short by it (a transport may give up
    /// a hair before the deadline it was told).
    fn out_of_time(&self, e: &Error) -> bool {
        self.total_expired()
            || (e.code == Code::Timeout && self.deadline.is_some() && self.deadline == self.total_deadline())
    }

    fn total_timeout_error(&self) -> Error {
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

    fn check_deadline(&self) -> Result<()> {
        match self.deadline {
            Some(_) if self.total_expired() => Err(self.total_timeout_error()),
            Some(d) if Instant::now() >= d => Err(Error::new(
                Code::Timeout,
                format!("step not done within {} ms", self.cfg.step_timeout.as_millis()),
            )),
            _ => Ok(()),
        }
    }

    fn io(&mut self) -> Result<&mut Box<dyn Transport>> {
        self.io.as_mut().ok_or_else(|| Error::new(Code::InvalidState, "no transport: set the I/O callbacks or fd first"))
    }

    fn read_raw(&mut self, buf: &mut [u8]) -> Result<usize> {
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

    fn write_raw(&mut self, buf: &[u8]) -> Result<usize> {
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
    fn flush_out(&mut self) -> Result<()> {
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

    fn queue(&mut self, bytes: &[u8]) -> Result<()> {
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
    fn read_tls_once(&mut self) -> Result<()> {
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
    fn read_tls_direct(&mut self) -> Result<()> {
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
    fn tls_failed(&mut self, e: &rustls::Error) -> Error {
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

    /// Before the peer's first TLS byte: plaintext here is injection. A client aborts;
    /// a server discards whole lines (counted) or refuses, by configuration. A server
    /// then classifies the hello and serves it, hands it off or refuses it. Returns
    /// the bytes to hand to TLS once the first TLS byte is there.
    fn first_flight_check(&mut self) -> Result<Option<Vec<u8>>> {
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
    fn classify_hello(&mut self) -> Result<Option<Vec<u8>>> {
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
    fn first_flight_state(&self) -> String {
        match (self.server_tls_seen, self.pre_tls.len()) {
            (true, _) => "during the TLS handshake".into(),
            (false, 0) => "before any TLS byte".into(),
            (false, n) => format!("after {n} byte{} of its first flight, before the hello could be classified", if n == 1 { "" } else { "s" }),
        }
    }

    fn note_hello(&mut self, h: Hello, action: Option<HelloAction>) {
        self.report.hello = Some(h);
        self.report.hello_action = action;
    }

    /// Server-side memory: a client whose hello could not be served is not offered
    /// STARTTLS for a while, so that its plaintext retry gets through.
    fn remember_unserved(&mut self, what: &str) {
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

    fn client_key(&self) -> Key {
        Key::new(self.proto, client_ip(&self.host), 0)
    }

    /// The bytes of the first flight a handed-off connection had already sent.
    pub fn handoff_bytes(&self) -> &[u8] {
        &self.handoff
    }

    fn feed_tls(&mut self, mut data: &[u8]) -> Result<()> {
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

    // ---- client ----

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

    fn key(&self) -> Key {
        Key::new(self.proto, &self.host, self.port)
    }

    fn memory(&self) -> Option<Arc<Memory>> {
        self.cfg.memory.clone()
    }

    fn memo(&mut self, event: String) {
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
                self.io()?;
                self.started = Some(Instant::now());
                let (rung, sni) = self.first_rung();
                self.log(LogLevel::Debug, &format!("negotiating under policy {}", self.cfg.policy.name()));
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

    /// The rung of the first attempt: forced by the caller, else memory's advice.
    fn first_rung(&mut self) -> (Rung, bool) {
        if let Some(f) = self.forced {
            return f;
        }
        let Some(m) = self.memory() else { return (Rung::Modern, true) };
        if self.cfg.policy == Policy::None {
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
        if plan.incompatible && self.cfg.policy == Policy::May && !plan.pinned && !self.implicit {
            self.memo("incompatible peer (recently): plaintext without trying STARTTLS".into());
            self.plaintext_only = true;
            self.fallback_reason = Some(Error::new(Code::TlsHandshake, "the peer's TLS is incompatible (remembered)"));
        }
        (plan.rung, plan.sni)
    }

    /// Resets everything that belongs to one connection and starts its dialogue.
    fn begin_attempt(&mut self, rung: Rung, sni: bool, plaintext_only: bool) {
        self.connections += 1;
        self.dialogue = if self.implicit {
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
    fn after_failure(&mut self, e: Error) -> Result<()> {
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
        let mv = classify::next_move(&classify::Facts { code: e.code, rung, sni: self.sni, flight: &self.flight }, class);
        if let Some(mv) = mv {
            if let Some(m) = &memory {
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
            }
            let mut next = mv;
            if self.reprobe {
                // A failed re-probe goes back to what memory knew worked.
                if let Some(m) = &memory {
                    let plan = m.plan(&key);
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
            if self.connector.is_none() {
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
            return self.plaintext_fallback(Error::new(
                Code::LadderExhausted,
                format!("connection bound ({}) reached: {}", self.cfg.max_connections, e.detail),
            ));
        }
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
    fn plaintext_fallback(&mut self, e: Error) -> Result<()> {
        if self.cfg.policy != Policy::May || self.implicit {
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

    fn reconnect(&mut self) -> Result<()> {
        let (host, port) = (self.host.clone(), self.port);
        let c = self.connector.as_mut().ok_or_else(|| Error::new(Code::InvalidState, "no connector"))?;
        c.close();
        let t = c.connect(&host, port).map_err(|e| Error::new(Code::Connect, format!("connecting to {host}:{port}: {e}")))?;
        self.io = Some(t);
        Ok(())
    }

    fn client_steps(&mut self) -> Result<()> {
        loop {
            self.check_deadline()?;
            self.flush_out()?;
            match self.stage {
                Stage::Dialogue if self.implicit && self.tls.is_none() => self.start_client_tls()?,
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
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn pump_dialogue(&mut self) -> Result<()> {
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

    fn decide(&mut self, offered: bool) -> Result<()> {
        self.report.starttls_offered = offered;
        let policy = self.cfg.policy;
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
    fn preauth(&mut self) -> Result<()> {
        let e = Error::new(Code::PreauthPlaintext, "the server pre-authenticated the connection in plaintext (PREAUTH): STARTTLS is impossible");
        match self.cfg.policy {
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
            _ => return Err(Error::new(e.code, format!("{}; policy {} requires TLS: closing", e.detail, self.cfg.policy.name()))),
        }
        self.dialogue.as_mut().expect("dialogue").finish_plain();
        Ok(())
    }

    fn refused(&mut self, e: Error) -> Result<()> {
        // A 250 or 354 to STARTTLS leaves the server in an unknown state (a 354 even
        // means it now reads a message body): never go on, whatever the policy.
        if self.cfg.policy == Policy::May && e.code != Code::StarttlsBadReply {
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

    fn start_client_tls(&mut self) -> Result<()> {
        let rung = self.next_rung;
        let ctls = self.cfg.client_tls.as_ref().ok_or_else(|| Error::new(Code::InvalidState, "no client TLS config"))?;
        let name = ServerName::try_from(self.server_name.clone())
            .map_err(|e| Error::new(Code::InvalidParameter, format!("server name: {e}")))?;
        let config = ctls.connection_config(rung, self.sni);
        self.cert_seen = None;
        let conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| Error::new(Code::TlsConfig, format!("starting TLS: {e}")))?;
        self.tls = Some(Connection::Client(conn));
        self.rung = Some(rung);
        self.stage = Stage::ClientHandshake;
        self.handshake_started = Some(Instant::now());
        if let (Some(t0), false) = (self.started, self.implicit) {
            self.report.timings.plaintext = t0.elapsed();
        }
        // Until the server's first TLS byte, the wait is the (shorter) hello timeout:
        // a hang on a large hello is the most common intolerance.
        self.set_step_deadline(self.cfg.step_timeout.min(self.cfg.hello_timeout));
        if self.implicit {
            self.log(LogLevel::Debug, &format!("implicit TLS: handshake, rung {}", rung.name()));
        } else {
            self.log(LogLevel::Debug, &format!("go reply to STARTTLS: TLS handshake, rung {}", rung.name()));
        }
        Ok(())
    }

    fn record_tls_facts(&mut self) {
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

    fn client_handshake_done(&mut self) {
        self.record_tls_facts();
        let ctls = self.cfg.client_tls.as_ref().expect("client TLS config");
        if ctls.enforces() {
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
        if !self.implicit {
            self.dialogue.as_mut().expect("dialogue").tls_started();
        }
        self.stage = Stage::Dialogue;
        self.new_step();
    }

    fn finish_ok(&mut self) {
        let tls = self.tls.is_some();
        let d = self.dialogue.as_mut().expect("dialogue");
        self.report.capabilities = d.capabilities().to_vec();
        self.report.warnings = d.warnings().to_vec();
        self.report.preauth = d.preauth();
        self.app_in = d.take_unread();
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
            if let Some(code) = self.report.reason.filter(|&c| c != Code::Ok && self.cfg.policy != Policy::None) {
                self.report.warnings.push(format!("plaintext-downgrade {}: {}", code.name(), self.report.detail));
            }
        }
        self.stage = if tls { Stage::Established } else { Stage::Plain };
        self.record_attempt(Code::Ok, FailureClass::None);
        self.deadline = None;
        if !tls {
            self.log(LogLevel::Info, &format!("plaintext session ({})", self.report.reason.map(Code::name).unwrap_or("ok")));
        }
    }

    /// Records the current connection's attempt, once.
    fn record_attempt(&mut self, code: Code, class: FailureClass) {
        if self.report.attempts.len() < self.connections as usize {
            self.report.attempts.push(Attempt { rung: self.rung, code, class });
        }
        if let Some(t0) = self.started {
            self.report.timings.total = t0.elapsed();
        }
    }

    /// Ends the negotiation with an error: outcome, report, log, last error.
    fn fail(&mut self, e: Error) -> Error {
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
            && !(e.code == Code::PreauthPlaintext && self.cfg.policy == Policy::May)
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

    // ---- server ----

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

    fn reply_text(&self, r: Reply) -> String {
        rules::reply(self.proto, r, &self.last_tag).unwrap_or_default()
    }

    /// Whether server-side memory says this client's hello could not be served recently.
    fn unserved_recently(&self) -> bool {
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

    fn server_continue(&mut self) -> Result<()> {
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

    fn server_steps(&mut self) -> Result<()> {
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

    // ---- application data ----

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

//! The session: drives the protocol dialogue, TLS and (later) recovery over a
//! transport; the one place where a negotiation's decisions are taken. Every call
//! can stop at "would block" and be resumed, so event-loop programs need no threads.

pub mod report;

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::ServerName;
use rustls::Connection;

use crate::config::{Config, InjectionAction, LogLevel, Policy, Role};
use crate::error::{Code, Error, Result};
use crate::protocol::smtp::{self, ClientAction, Command};
use crate::protocol::Proto;
use crate::recovery::{FailureClass, Rung};
use crate::tls;
use report::{Attempt, Outcome, Report};

/// A byte stream the session reads and writes: the C program's socket, through its
/// callbacks or a plain file descriptor. `read` returns Ok(0) at EOF; errors of kind
/// `WouldBlock` and `TimedOut` are kept apart from the rest.
pub trait Transport {
    /// Reads into `buf`.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes from `buf`, returning how much was taken.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
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
    dialogue: Option<smtp::Client>,
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
        let d = Instant::now() + self.cfg.step_timeout;
        self.deadline = Some(d);
        if let Some(io) = self.io.as_mut() {
            io.set_deadline(Some(d));
        }
    }

    fn check_deadline(&self) -> Result<()> {
        match self.deadline {
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
        let mut buf = [0u8; 16 * 1024 + 512];
        let n = self.read_raw(&mut buf)?;
        let handshaking = self.tls.as_ref().is_some_and(|c| c.is_handshaking());
        if n == 0 {
            if handshaking {
                let what = if self.server_tls_seen { "during the TLS handshake" } else { "before any TLS byte" };
                return Err(Error::new(Code::PeerClosed, format!("connection closed by the peer {what}")));
            }
            if let Some(conn) = self.tls.as_mut() {
                let _ = conn.read_tls(&mut &[][..]);
            }
            return Ok(());
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

    /// Before the peer's first TLS byte: plaintext here is injection. A client aborts;
    /// a server discards whole lines (counted) or refuses, by configuration. Returns
    /// the bytes to hand to TLS once the first TLS byte is there.
    fn first_flight_check(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            let Some(&first) = self.pre_tls.first() else { return Ok(None) };
            if !looks_like_text(first) {
                self.server_tls_seen = true;
                return Ok(Some(std::mem::take(&mut self.pre_tls)));
            }
            let shown = smtp::printable(&self.pre_tls);
            if self.role == Role::Client {
                return Err(Error::new(
                    Code::ReplyInjection,
                    format!("plaintext from the server after its go reply, where its TLS handshake belongs: {shown:?}"),
                ));
            }
            if self.cfg.injection == InjectionAction::Close {
                return Err(Error::new(Code::CommandInjection, format!("plaintext after STARTTLS: {shown:?}")));
            }
            match self.pre_tls.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let line: Vec<u8> = self.pre_tls.drain(..=i).collect();
                    self.report.discarded_after_starttls += line.len() as u64;
                    self.log(LogLevel::Warn, &format!("discarded a command pipelined after STARTTLS: {:?}", smtp::printable(&line)));
                }
                None if self.pre_tls.len() > self.cfg.limits.max_line => {
                    return Err(Error::new(Code::CommandInjection, format!("overlong plaintext after STARTTLS: {shown:?}")));
                }
                None => return Ok(None),
            }
        }
    }

    fn feed_tls(&mut self, mut data: &[u8]) -> Result<()> {
        let during = if self.tls.as_ref().is_some_and(|c| c.is_handshaking()) { "handshake" } else { "record" };
        while !data.is_empty() {
            let conn = self.tls.as_mut().ok_or_else(|| Error::new(Code::InvalidState, "no TLS connection"))?;
            conn.read_tls(&mut data).map_err(|e| Error::new(Code::TlsRecord, format!("buffering TLS: {e}")))?;
            if let Err(e) = conn.process_new_packets() {
                // Let rustls' alert reach the peer before we give up; failure to send it changes nothing.
                let _ = self.flush_out();
                return Err(tls::map_error(&e, during));
            }
        }
        Ok(())
    }

    // ---- client ----

    /// Runs (or resumes) the client negotiation: greeting, capabilities, STARTTLS as
    /// the policy says, the handshake, capabilities again. `Ok` means the session can
    /// carry the application's dialogue (TLS or plaintext as the policy allows).
    pub fn negotiate(&mut self) -> Result<()> {
        match self.stage {
            Stage::Idle => {
                if self.role != Role::Client {
                    return Err(Error::new(Code::InvalidState, "negotiate is for client sessions"));
                }
                self.io()?;
                self.started = Some(Instant::now());
                self.dialogue = Some(smtp::Client::new(self.proto, &self.cfg.helo_name, self.cfg.limits));
                self.stage = Stage::Dialogue;
                self.new_step();
                self.log(LogLevel::Debug, &format!("negotiating under policy {}", self.cfg.policy.name()));
            }
            Stage::Dialogue | Stage::ClientHandshake => {}
            Stage::Established | Stage::Plain => return Ok(()),
            Stage::Failed => {
                return Err(self.last_error.clone().unwrap_or_else(|| Error::new(Code::InvalidState, "failed")))
            }
            Stage::ServerPlain | Stage::ServerHandshake => {
                return Err(Error::new(Code::InvalidState, "negotiate is for client sessions"))
            }
        }
        match self.client_steps() {
            Ok(()) => Ok(()),
            Err(e) if e.code == Code::WouldBlock => Err(e),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn client_steps(&mut self) -> Result<()> {
        loop {
            self.check_deadline()?;
            self.flush_out()?;
            match self.stage {
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
        match (policy, offered) {
            (Policy::None, _) => self.dialogue.as_mut().expect("dialogue").finish_plain(),
            (_, true) => self.dialogue.as_mut().expect("dialogue").request_starttls(),
            (Policy::May, false) => {
                self.report.reason = Some(Code::StartTlsNotOffered);
                self.report.detail = "STARTTLS not offered; plaintext as policy may allows".into();
                self.log(LogLevel::Warn, "STARTTLS not offered: going on in plaintext (policy may)");
                self.dialogue.as_mut().expect("dialogue").finish_plain();
            }
            (_, false) => {
                return Err(Error::new(
                    Code::StartTlsNotOffered,
                    format!("STARTTLS not offered and policy {} requires TLS", policy.name()),
                ))
            }
        }
        Ok(())
    }

    fn refused(&mut self, e: Error) -> Result<()> {
        // A 250 or 354 to STARTTLS leaves the server in an unknown state (a 354 even
        // means it now reads a message body): never go on, whatever the policy.
        if self.cfg.policy == Policy::May && e.code != Code::StartTlsBadReply {
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
        let rung = Rung::Modern;
        let ctls = self.cfg.client_tls.as_ref().ok_or_else(|| Error::new(Code::InvalidState, "no client TLS config"))?;
        let name = ServerName::try_from(self.server_name.clone())
            .map_err(|e| Error::new(Code::InvalidParameter, format!("server name: {e}")))?;
        let conn = rustls::ClientConnection::new(ctls.config(rung), name)
            .map_err(|e| Error::new(Code::TlsConfig, format!("starting TLS: {e}")))?;
        self.tls = Some(Connection::Client(conn));
        self.rung = Some(rung);
        self.stage = Stage::ClientHandshake;
        self.handshake_started = Some(Instant::now());
        if let Some(t0) = self.started {
            self.report.timings.plaintext = t0.elapsed();
        }
        self.new_step();
        self.log(LogLevel::Debug, &format!("220 to STARTTLS: TLS handshake, rung {}", rung.name()));
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
        self.log(
            LogLevel::Info,
            &format!(
                "TLS established: {} {} {}, certificate {}",
                self.report.tls_version.as_deref().unwrap_or("?"),
                self.report.cipher.as_deref().unwrap_or("?"),
                self.report.group.as_deref().unwrap_or("?"),
                match self.report.cert_verified {
                    Some(true) => "verified".to_string(),
                    Some(false) => format!("not verified ({})", self.report.cert_error.as_deref().unwrap_or("")),
                    None => "not checked".to_string(),
                }
            ),
        );
        self.dialogue.as_mut().expect("dialogue").tls_started();
        self.stage = Stage::Dialogue;
        self.new_step();
    }

    fn finish_ok(&mut self) {
        let tls = self.tls.is_some();
        let d = self.dialogue.as_mut().expect("dialogue");
        self.report.capabilities = d.capabilities().to_vec();
        self.app_in = d.take_unread();
        if self.report.reason.is_none() {
            self.report.reason = Some(Code::Ok);
        }
        self.report.outcome = Some(if tls { Outcome::Tls } else { Outcome::Plaintext });
        self.stage = if tls { Stage::Established } else { Stage::Plain };
        self.end_attempt(Code::Ok);
        self.deadline = None;
        if !tls {
            self.log(LogLevel::Info, &format!("plaintext session ({})", self.report.reason.map(Code::name).unwrap_or("ok")));
        }
    }

    fn end_attempt(&mut self, code: Code) {
        let class = FailureClass::of(code, self.server_tls_seen);
        self.report.attempts.push(Attempt { rung: self.rung, code, class });
        if let Some(t0) = self.started {
            self.report.timings.total = t0.elapsed();
        }
    }

    /// Ends the negotiation with an error: outcome, report, log, last error.
    fn fail(&mut self, e: Error) -> Error {
        let outcome = match (self.role, e.code) {
            (Role::Client, Code::StartTlsRefusedPermanent) => Outcome::Fail,
            (Role::Client, _) => Outcome::Defer,
            (Role::Server, _) => Outcome::Fail,
        };
        if self.role == Role::Client
            && self.tls.is_none()
            && matches!(
                e.code,
                Code::StartTlsNotOffered
                    | Code::StartTlsRefusedTemporary
                    | Code::StartTlsRefusedPermanent
                    | Code::GreetingRefused
                    | Code::CapabilityRefused
            )
        {
            // A polite end to a sane plaintext dialogue; failing to send it changes nothing.
            self.plain_out.clear();
            self.plain_out.extend_from_slice(b"QUIT\r\n");
            let _ = self.flush_out();
        }
        self.report.outcome = Some(outcome);
        self.report.reason = Some(e.code);
        self.report.detail = e.detail.clone();
        self.report.rfc8460 = tls::rfc8460_result_type(e.code);
        if self.tls.is_some() && self.stage != Stage::Established {
            self.record_tls_facts();
        }
        self.end_attempt(e.code);
        self.stage = Stage::Failed;
        self.deadline = None;
        let loud = matches!(e.code, Code::ReplyInjection | Code::CommandInjection | Code::DowngradeDetected);
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
        self.role == Role::Server && self.cfg.server_tls.is_some() && self.stage == Stage::ServerPlain
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
        let cmd = smtp::classify_command(line);
        if self.stage == Stage::Established {
            if cmd == Command::StartTls {
                return Err(Error::new(Code::TlsAlreadyActive, "STARTTLS while TLS is active"));
            }
            if self.reset_required {
                match cmd {
                    Command::Hello => self.reset_required = false,
                    Command::Noop | Command::Quit | Command::Rset => {}
                    _ => return Err(Error::new(Code::StateResetRequired, "a command before EHLO after STARTTLS")),
                }
            }
            return Ok(());
        }
        if self.cfg.require_tls && !matches!(cmd, Command::Hello | Command::StartTls | Command::Noop | Command::Quit) {
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
                self.queue(smtp::REPLY_TLS_ACTIVE.as_bytes())?;
                let _ = self.flush_out();
                let e = Error::new(Code::TlsAlreadyActive, "a second STARTTLS was refused");
                self.log(LogLevel::Warn, &e.detail);
                self.last_error = Some(e.clone());
                return Err(e);
            }
            _ => return Err(Error::new(Code::InvalidState, "server_starttls is for a server session before TLS")),
        }
        self.io()?;
        self.started = Some(Instant::now());
        let Some(sc) = self.cfg.server_tls.clone() else {
            self.plain_out.extend_from_slice(smtp::REPLY_TLS_UNAVAILABLE.as_bytes());
            let _ = self.flush_out();
            let e = Error::new(Code::TlsUnavailable, "STARTTLS received but no usable certificate: 454 sent");
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
        self.plain_out.extend_from_slice(smtp::REPLY_GO.as_bytes());
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
        self.reset_required = true;
        self.deadline = None;
        self.end_attempt(Code::Ok);
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

    /// Sends TLS close_notify (when TLS is active) and flushes.
    pub fn close(&mut self) -> Result<()> {
        if let Some(conn) = self.tls.as_mut() {
            conn.send_close_notify();
        }
        if self.io.is_some() {
            self.flush_out()?;
        }
        Ok(())
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

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

//! The session: drives the protocol dialogue, TLS and recovery over a transport; the
//! one place where a negotiation's decisions are taken. Every call can stop at "would
//! block" and be resumed, so event-loop programs need no threads. It sees no pointer
//! (that is `ffi`'s) and parses no protocol line itself (that is `protocol`'s).
//!
//! This file holds the session's state and the traits it runs over; its methods are
//! spread by concept:
//!
//! - `pump`: the transport, step and total deadlines, the record pump into rustls;
//! - `hello`: the first flight after the go reply (injection; the server's sniffer);
//! - `client`: one client negotiation, from greeting to report;
//! - `app_starttls`: the handshake alone, for an application that ran its own STARTTLS;
//! - `ladder`: the attempts across connections, talking to recovery and memory;
//! - `server`: STARTTLS and implicit TLS on the server side, and its command checks;
//! - `data`: application data, resume and close;
//! - `destination`: what the caller knows of the destination (DANE, MTA-STS), the
//!   plan `auth` makes of it, and the session's TLS-RPT result;
//! - `report`: the record of what a negotiation did.

mod app_starttls;
mod client;
mod data;
mod destination;
mod hello;
mod ladder;
mod pump;
pub mod report;
pub use destination::DestinationName;
mod server;

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
    app_starttls: bool,
    authenticated: bool,
    last_tag: String,
    tls_fatal: bool,
    /// What the caller said about the destination's DANE and MTA-STS.
    dest: crate::auth::Destination,
    /// The policy this session is held to, decided when the negotiation starts.
    plan: Option<crate::auth::Plan>,
    /// The rung configs of the plan's certificate check.
    rung_configs: Option<Arc<tls::client::RungConfigs>>,
    /// MTA-STS testing: why the certificate would have failed under enforce.
    testing_failure: Option<Error>,
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
            app_starttls: false,
            authenticated: false,
            last_tag: String::new(),
            tls_fatal: false,
            dest: Default::default(),
            plan: None,
            rung_configs: None,
            testing_failure: None,
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
}

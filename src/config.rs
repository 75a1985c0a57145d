//! Configuration: built once from a builder, then immutable and shared by every
//! session (`Arc<Config>`), as rustls does with its own configs.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Code, Error, Result};
use crate::protocol::Limits;
use crate::recovery::memory::Memory;
use crate::tls::sniff::HelloKind;
use crate::tls::client::{ClientTls, TrustSource};
use crate::tls::tickets::{TicketKeys, Tickets};

/// Which side of the connection a config is for.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A client: MUA, MTA delivering, news reader.
    Client = 0,
    /// A server: MTA receiving, IMAP/POP3/news server.
    Server = 1,
}

/// The client's TLS policy (DESIGN.md, "Policies"), after Postfix's security levels.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Never STARTTLS: plaintext.
    None = 0,
    /// Opportunistic: STARTTLS when offered; the certificate is recorded, not enforced;
    /// plaintext when STARTTLS is not offered or is refused.
    May = 1,
    /// STARTTLS required, certificate recorded but not enforced; otherwise defer or fail.
    Encrypt = 2,
    /// STARTTLS required, certificate chain and name verified; otherwise defer or fail.
    Verify = 3,
    /// DANE where the destination has it (RFC 7672): with DNSSEC-secure usable TLSA
    /// records, TLS required and the certificate checked against them; with TLSA
    /// records none of which is usable, as encrypt; with an insecure lookup or no
    /// records, as may (or as an MTA-STS policy says); a bogus lookup defers.
    Dane = 4,
    /// DANE required: as dane, but an insecure lookup, no records or no usable record
    /// defers (Postfix's dane-only).
    DaneOnly = 5,
}

impl Policy {
    /// The policy for a number from C.
    pub fn from_u32(n: u32) -> Option<Policy> {
        Some(match n {
            0 => Policy::None,
            1 => Policy::May,
            2 => Policy::Encrypt,
            3 => Policy::Verify,
            4 => Policy::Dane,
            5 => Policy::DaneOnly,
            _ => return None,
        })
    }

    /// The name used in logs.
    pub fn name(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::May => "may",
            Policy::Encrypt => "encrypt",
            Policy::Verify => "verify",
            Policy::Dane => "dane",
            Policy::DaneOnly => "dane-only",
        }
    }

    /// Whether TLS is required (plaintext is never allowed).
    pub fn requires_tls(self) -> bool {
        matches!(self, Policy::Encrypt | Policy::Verify | Policy::Dane | Policy::DaneOnly)
    }
}

/// What a server does with bytes pipelined after a STARTTLS command line.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectionAction {
    /// Discard them (never execute), count them, log a warning, go on with TLS.
    Discard = 0,
    /// Refuse: no `220`, the call fails and the server closes the connection.
    Close = 1,
}

/// What a server does with a client hello of a given format.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelloAction {
    /// rustls serves it (TLS 1.2 and 1.3 hellos only).
    Serve = 0,
    /// Hand the connection, with the bytes already read, to the application's engine.
    Handoff = 1,
    /// Refuse: the right alert for the format, close, one clear log line.
    Refuse = 2,
}

/// Log levels, most severe first.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// A failure.
    Error = 1,
    /// Something suspicious or a fallback.
    Warn = 2,
    /// What was negotiated, one line per event.
    Info = 3,
    /// Every step.
    Debug = 4,
}

impl LogLevel {
    /// The level for a number from C.
    pub fn from_u32(n: u32) -> Option<LogLevel> {
        Some(match n {
            1 => LogLevel::Error,
            2 => LogLevel::Warn,
            3 => LogLevel::Info,
            4 => LogLevel::Debug,
            _ => return None,
        })
    }
}

/// A log sink.
pub type LogFn = Arc<dyn Fn(LogLevel, &str) + Send + Sync>;

/// An immutable, shareable configuration.
pub struct Config {
    /// Client or server.
    pub role: Role,
    /// The client's policy.
    pub policy: Policy,
    /// Bounds on peer input.
    pub limits: Limits,
    /// Longest wait for one step (a reply, the handshake, one read).
    pub step_timeout: Duration,
    /// Longest time one negotiation may take in all, across every connection of the
    /// ladder: a peer that stalls each rung costs at most this much.
    pub total_timeout: Duration,
    /// The EHLO/LHLO argument.
    pub helo_name: String,
    /// The client's TLS side (absent under policy none).
    pub client_tls: Option<ClientTls>,
    /// The server's TLS config (absent without a certificate: STARTTLS is then not
    /// offered); from files it is re-checked at every STARTTLS.
    pub server_tls: Option<crate::tls::server::ServerTls>,
    /// Server: refuse everything but NOOP, EHLO, STARTTLS and QUIT before TLS.
    pub require_tls: bool,
    /// Server: what to do with bytes pipelined after STARTTLS.
    pub injection: InjectionAction,
    /// Where log lines go, and from which level on.
    pub log: Option<(LogFn, LogLevel)>,
    /// The intolerance memory shared by the config's sessions.
    pub memory: Option<Arc<Memory>>,
    /// Most TLS attempts (connections) one client negotiation may use: the ladder's
    /// bound. Under policy may, the plaintext connection after a failed ladder is one more.
    pub max_connections: u32,
    /// Whether plaintext may carry credentials under policy may.
    pub plaintext_auth: bool,
    /// Longest wait for the server's first TLS byte before the top rung counts as
    /// timed out (a hang on a large hello).
    pub hello_timeout: Duration,
    /// Server: the action for each hello format (indexed by `HelloKind`).
    pub hello_actions: [HelloAction; 9],
    /// Server: how many first flights of each format were seen (indexed by `HelloKind`).
    pub hello_counts: [AtomicU64; 9],
    /// Server: client addresses whose hello could not be served are not offered
    /// STARTTLS for this long (None: no server-side memory).
    pub server_memory: Option<(Arc<Memory>, Duration)>,
}

impl Config {
    /// The action for a hello format; only TLS 1.2 and 1.3 can be served.
    pub fn hello_action(&self, kind: HelloKind) -> HelloAction {
        match self.hello_actions[kind as usize] {
            HelloAction::Serve if !kind.servable() => HelloAction::Refuse,
            a => a,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("role", &self.role)
            .field("policy", &self.policy)
            .field("limits", &self.limits)
            .field("require_tls", &self.require_tls)
            .field("server_tls", &self.server_tls.is_some())
            .finish()
    }
}

/// Collects settings; `build` checks them and makes a `Config`. Building does not
/// consume the builder: it can be built again and is always freed by its owner.
#[derive(Clone)]
pub struct ConfigBuilder {
    role: Role,
    policy: Policy,
    trust: Option<TrustSource>,
    cert_pem: Option<Vec<u8>>,
    key_pem: Option<Vec<u8>>,
    cert_files: Option<(std::path::PathBuf, std::path::PathBuf)>,
    limits: Limits,
    step_timeout: Duration,
    total_timeout: Duration,
    helo_name: Option<String>,
    require_tls: bool,
    injection: InjectionAction,
    log: Option<(LogFn, LogLevel)>,
    memory: Option<Arc<Memory>>,
    max_connections: u32,
    plaintext_auth: bool,
    hello_timeout: Duration,
    hello_actions: [HelloAction; 9],
    server_memory: Option<(Arc<Memory>, Duration)>,
    ticket_keys: Option<TicketKeySource>,
}

/// Where a server's session ticket keys come from, when the caller gives them.
#[derive(Clone)]
enum TicketKeySource {
    Keys(TicketKeys),
    /// Read when set (to report a bad file at once) and again at every build, so a
    /// config rebuilt after a rotation has the new keys.
    File(std::path::PathBuf),
}

impl ConfigBuilder {
    /// A builder with the defaults: policy may, system trust store, 5-minute steps
    /// (RFC 5321 section 4.5.3.2), the default limits.
    pub fn new(role: Role) -> Self {
        ConfigBuilder {
            role,
            policy: Policy::May,
            trust: None,
            cert_pem: None,
            key_pem: None,
            cert_files: None,
            limits: Limits::default(),
            step_timeout: Duration::from_secs(300),
            total_timeout: Duration::from_secs(300),
            helo_name: None,
            require_tls: false,
            injection: InjectionAction::Discard,
            log: None,
            memory: None,
            max_connections: 4,
            plaintext_auth: false,
            hello_timeout: Duration::from_secs(30),
            hello_actions: HelloKind::ALL.map(|k| if k.servable() { HelloAction::Serve } else { HelloAction::Refuse }),
            server_memory: None,
            ticket_keys: None,
        }
    }

    fn server_only(&self, what: &str) -> Result<()> {
        if self.role != Role::Server {
            return Err(Error::new(Code::InvalidParameter, format!("{what} are for a server config, not a client's")));
        }
        Ok(())
    }

    /// Server: issues session tickets under `current` and opens them under `current`
    /// or `previous`, instead of a random secret drawn at build, so that servers built
    /// apart (other processes, other hosts, after a restart) resume each other's
    /// sessions. Each key is `MIN_KEY_LEN..=MAX_KEY_LEN` bytes of secret. Replaces a
    /// key file set before.
    pub fn ticket_keys(&mut self, current: &[u8], previous: Option<&[u8]>) -> Result<&mut Self> {
        self.server_only("session ticket keys")?;
        self.ticket_keys = Some(TicketKeySource::Keys(TicketKeys::new(current, previous)?));
        Ok(self)
    }

    /// Server: as `ticket_keys`, from a key file (`tls::tickets` describes it), read
    /// now and again at every build. Replaces keys set before.
    pub fn ticket_key_file(&mut self, path: &str) -> Result<&mut Self> {
        self.server_only("session ticket key files")?;
        let path = std::path::PathBuf::from(path);
        TicketKeys::from_file(&path)?;
        self.ticket_keys = Some(TicketKeySource::File(path));
        Ok(self)
    }

    fn tickets(&self) -> Result<Arc<Tickets>> {
        Ok(Arc::new(match &self.ticket_keys {
            None => Tickets::new()?,
            Some(TicketKeySource::Keys(k)) => Tickets::with_keys(k)?,
            Some(TicketKeySource::File(p)) => Tickets::with_keys(&TicketKeys::from_file(p)?)?,
        }))
    }

    /// Server: sets the action for a hello format. Serve is only possible for TLS 1.2
    /// and 1.3 hellos; asking it for another format is an error.
    pub fn hello_action(&mut self, kind: HelloKind, action: HelloAction) -> Result<&mut Self> {
        if action == HelloAction::Serve && !kind.servable() {
            return Err(Error::new(Code::InvalidParameter, format!("rustls cannot serve a {} hello", kind.name())));
        }
        self.hello_actions[kind as usize] = action;
        Ok(self)
    }

    /// Server: remember client addresses whose hello could not be served, and do not
    /// offer them STARTTLS for `ttl`, so their plaintext retry gets through.
    pub fn server_memory(&mut self, m: Option<Arc<Memory>>, ttl: Duration) -> &mut Self {
        self.server_memory = m.map(|m| (m, ttl));
        self
    }

    /// Shares an intolerance memory with the config's sessions.
    pub fn memory(&mut self, m: Option<Arc<Memory>>) -> &mut Self {
        self.memory = m;
        self
    }

    /// Sets the most TLS attempts one negotiation may use (1..=16; default 4); under
    /// policy may a plaintext connection after them is one more.
    pub fn max_connections(&mut self, n: u32) -> &mut Self {
        self.max_connections = n;
        self
    }

    /// Allows credentials over plaintext under policy may (default: no).
    pub fn plaintext_auth(&mut self, on: bool) -> &mut Self {
        self.plaintext_auth = on;
        self
    }

    /// Sets the wait for the server's first TLS byte (default 30 s).
    pub fn hello_timeout(&mut self, d: Duration) -> &mut Self {
        self.hello_timeout = d;
        self
    }

    /// Sets the client policy.
    pub fn policy(&mut self, p: Policy) -> &mut Self {
        self.policy = p;
        self
    }

    /// Uses a CA file instead of the system store.
    pub fn ca_file(&mut self, path: &str) -> &mut Self {
        self.trust = Some(TrustSource::CaFile(path.into()));
        self
    }

    /// Sets the server certificate chain and key (PEM).
    pub fn certificate_pem(&mut self, chain: &[u8], key: &[u8]) -> &mut Self {
        self.cert_pem = Some(chain.to_vec());
        self.key_pem = Some(key.to_vec());
        self.cert_files = None;
        self
    }

    /// Sets the server certificate chain and key from PEM files, loaded at build and
    /// re-checked at every STARTTLS.
    pub fn certificate_files(&mut self, chain: &str, key: &str) -> &mut Self {
        self.cert_files = Some((chain.into(), key.into()));
        self.cert_pem = None;
        self.key_pem = None;
        self
    }

    /// Sets the limits on peer input.
    pub fn limits(&mut self, l: Limits) -> &mut Self {
        self.limits = l;
        self
    }

    /// The limits now set.
    pub fn current_limits(&self) -> Limits {
        self.limits
    }

    /// Sets the per-step timeout.
    pub fn step_timeout(&mut self, d: Duration) -> &mut Self {
        self.step_timeout = d;
        self
    }

    /// Sets the bound on a whole negotiation, every connection included (default 5 minutes).
    pub fn total_timeout(&mut self, d: Duration) -> &mut Self {
        self.total_timeout = d;
        self
    }

    /// Sets the EHLO/LHLO argument (default: the host name, else `localhost`).
    pub fn helo_name(&mut self, name: &str) -> &mut Self {
        self.helo_name = Some(name.to_string());
        self
    }

    /// Server: require TLS before mail transactions.
    pub fn require_tls(&mut self, on: bool) -> &mut Self {
        self.require_tls = on;
        self
    }

    /// Server: the action on bytes pipelined after STARTTLS.
    pub fn injection(&mut self, a: InjectionAction) -> &mut Self {
        self.injection = a;
        self
    }

    /// Sets the log sink.
    pub fn log(&mut self, f: LogFn, level: LogLevel) -> &mut Self {
        self.log = Some((f, level));
        self
    }

    /// Checks everything and builds the immutable config.
    pub fn build(&self) -> Result<Arc<Config>> {
        if !(1..=16).contains(&self.max_connections) {
            return Err(Error::new(Code::InvalidParameter, "max connections must be 1..16"));
        }
        if self.limits.max_line < 64 || self.limits.max_reply_lines == 0 || self.limits.max_pretls_bytes < 512 {
            return Err(Error::new(Code::InvalidParameter, "limits too small (line >= 64, lines >= 1, bytes >= 512)"));
        }
        let client_tls = match (self.role, self.policy) {
            (Role::Client, Policy::None) | (Role::Server, _) => None,
            (Role::Client, p) => {
                let trust = self.trust.clone().unwrap_or(TrustSource::System);
                Some(ClientTls::new(Some(&trust), p == Policy::Verify)?)
            }
        };
        use crate::tls::server::ServerTls;
        let server_tls = match (self.role, &self.cert_files, &self.cert_pem, &self.key_pem) {
            (Role::Server, Some((c, k)), _, _) => Some(ServerTls::from_files(c, k, self.tickets()?)?),
            (Role::Server, None, Some(c), Some(k)) => Some(ServerTls::fixed(c, k, self.tickets()?)?),
            _ => None,
        };
        let helo_name = self.helo_name.clone().unwrap_or_else(local_host_name);
        if helo_name.is_empty() || helo_name.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(Error::new(Code::InvalidParameter, "the EHLO name must be non-empty, without spaces or controls"));
        }
        Ok(Arc::new(Config {
            role: self.role,
            policy: self.policy,
            limits: self.limits,
            step_timeout: self.step_timeout,
            total_timeout: self.total_timeout,
            helo_name,
            client_tls,
            server_tls,
            require_tls: self.require_tls,
            injection: self.injection,
            log: self.log.clone(),
            memory: self.memory.clone(),
            max_connections: self.max_connections,
            plaintext_auth: self.plaintext_auth,
            hello_timeout: self.hello_timeout,
            hello_actions: self.hello_actions,
            hello_counts: Default::default(),
            server_memory: self.server_memory.clone(),
        }))
    }
}

/// This machine's host name, or `localhost`.
pub fn local_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}

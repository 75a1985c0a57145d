//! Config builders and built configs.
//!
//! One ownership rule for every builder: `_new` gives the caller a builder, `_build`
//! does not consume it (it may be changed and built again), and the caller always
//! frees it with `_free`. A built config is immutable and reference counted: each
//! session holds a reference, and `mailtls_config_free` drops the caller's.

use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::Duration;

use super::{byte_slice, c_str, cstring, ffi_guard, mailtls_result, non_null};
use crate::config::{Config, ConfigBuilder, InjectionAction, LogLevel, Policy, Role};
use crate::protocol::Limits;

/// A config under construction (opaque).
pub struct mailtls_config_builder {
    pub(super) inner: ConfigBuilder,
    pub(super) error: Option<crate::error::Error>,
}

/// A built, immutable, reference-counted config (opaque).
pub struct mailtls_config {
    _private: [u8; 0],
}

/// A log callback: `level` is one of `MAILTLS_LOG_LEVEL_*`, `message` a NUL-terminated
/// line without a newline, valid only during the call. It may be called from any
/// thread that uses a session of the config.
pub type mailtls_log_callback = Option<extern "C" fn(userdata: *mut c_void, level: u32, message: *const c_char)>;

pub(crate) fn config_ref<'a>(p: *const mailtls_config) -> &'a Config {
    // SAFETY: a non-NULL `mailtls_config` pointer came from `Arc::into_raw` in
    // `mailtls_config_builder_build` and the caller still holds its reference.
    unsafe { &*(p as *const Config) }
}

pub(crate) fn config_arc(p: *const mailtls_config) -> Arc<Config> {
    let raw = p as *const Config;
    // SAFETY: as in `config_ref`; we add a reference for the new owner.
    unsafe {
        Arc::increment_strong_count(raw);
        Arc::from_raw(raw)
    }
}

impl mailtls_config_builder {
    /// A setter's result as a code; a failure's detail is kept for
    /// `mailtls_config_builder_last_error`.
    pub(super) fn outcome<T>(&mut self, r: crate::error::Result<T>) -> mailtls_result {
        match r {
            Ok(_) => mailtls_result::Ok,
            Err(e) => {
                let code = e.code;
                self.error = Some(e);
                code
            }
        }
    }
}

pub(super) fn builder<'a>(b: *mut mailtls_config_builder) -> &'a mut mailtls_config_builder {
    // SAFETY: non-NULL builder pointers come from `mailtls_config_builder_new`.
    unsafe { &mut *b }
}

/// Creates a config builder for `role` (`MAILTLS_ROLE_CLIENT` or `MAILTLS_ROLE_SERVER`)
/// with the defaults: policy may, the system trust store, 300-second steps, EHLO name
/// from the host name, the default limits. Free it with `mailtls_config_builder_free`.
#[no_mangle]
pub extern "C" fn mailtls_config_builder_new(role: u32, out: *mut *mut mailtls_config_builder) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(out, mailtls_result::NullParameter);
        let role = match role {
            0 => Role::Client,
            1 => Role::Server,
            _ => return mailtls_result::InvalidParameter,
        };
        let b = Box::new(mailtls_config_builder { inner: ConfigBuilder::new(role), error: None });
        // SAFETY: `out` is non-NULL and points to writable storage for a pointer.
        unsafe { *out = Box::into_raw(b) };
        mailtls_result::Ok
    })
}

/// Frees a builder. NULL is a no-op. Configs built from it are not affected.
#[no_mangle]
pub extern "C" fn mailtls_config_builder_free(b: *mut mailtls_config_builder) {
    ffi_guard!((), {
        if !b.is_null() {
            // SAFETY: `b` came from `Box::into_raw` in `mailtls_config_builder_new`.
            drop(unsafe { Box::from_raw(b) });
        }
    })
}

/// Sets the client policy: `MAILTLS_POLICY_NONE`, `_MAY` (default), `_ENCRYPT`, `_VERIFY`,
/// `_DANE` or `_DANE_ONLY` (RFC 7672; the TLSA records and their DNSSEC status are set
/// on each session: `mailtls_session_add_tlsa_text`, `mailtls_session_set_dnssec`).
#[no_mangle]
pub extern "C" fn mailtls_config_builder_set_policy(b: *mut mailtls_config_builder, policy: u32) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        match Policy::from_u32(policy) {
            Some(p) => {
                builder(b).inner.policy(p);
                mailtls_result::Ok
            }
            None => mailtls_result::InvalidParameter,
        }
    })
}

/// Uses the CA certificates of a PEM file as trust anchors instead of the system
/// store. The file is read when the config is built.
#[no_mangle]
pub extern "C" fn mailtls_config_builder_set_ca_file(b: *mut mailtls_config_builder, path: *const c_char) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        // SAFETY: `path` is a NUL-terminated string or NULL (checked).
        let path = match unsafe { c_str(path) } {
            Ok(p) => p,
            Err(e) => return e,
        };
        builder(b).inner.ca_file(path);
        mailtls_result::Ok
    })
}

/// Sets the server's certificate chain (end entity first) and private key from PEM
/// data in memory. They are parsed, and the key checked against the certificate, when
/// the config is built.
#[no_mangle]
pub extern "C" fn mailtls_config_builder_set_certificate_pem(
    b: *mut mailtls_config_builder,
    chain_pem: *const u8,
    chain_len: usize,
    key_pem: *const u8,
    key_len: usize,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        // SAFETY: the caller provides `chain_len` and `key_len` readable bytes.
        let (chain, key) = match unsafe { (byte_slice(chain_pem, chain_len), byte_slice(key_pem, key_len)) } {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) | (_, Err(e)) => return e,
        };
        builder(b).inner.certificate_pem(chain, key);
        mailtls_result::Ok
    })
}

/// Uses the server's certificate chain and private key from PEM files: checked for
/// readability now (`MAILTLS_RESULT_CERTIFICATE_LOAD`, `_PRIVATE_KEY_LOAD`), parsed
/// and matched when the config is built, and re-checked at every STARTTLS: a renewed
/// pair is picked up without a restart, and files that became unreadable make the
/// server answer 454 and stop advertising STARTTLS until they are fixed.
#[no_mangle]
pub extern "C" fn mailtls_config_builder_set_certificate_files(
    b: *mut mailtls_config_builder,
    chain_path: *const c_char,
    key_path: *const c_char,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        // SAFETY: NUL-terminated strings or NULL (checked).
        let (cp, kp) = match unsafe { (c_str(chain_path), c_str(key_path)) } {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) | (_, Err(e)) => return e,
        };
        let bl = builder(b);
        for (path, code) in [(cp, mailtls_result::CertificateLoad), (kp, mailtls_result::PrivateKeyLoad)] {
            if let Err(e) = std::fs::File::open(path) {
                bl.error = Some(crate::error::Error::new(code, format!("{path}: {e}")));
                return code;
            }
        }
        bl.inner.certificate_files(cp, kp);
        mailtls_result::Ok
    })
}

/// Generates a self-signed certificate (ECDSA P-256) for `hostname` (several names,
/// DNS names or IP addresses, may be given separated by commas: "mx.example,127.0.0.1")
/// and sets it as the server certificate: the embedded default for demos and tests. When `cert_pem_out`
/// is not NULL, the certificate's PEM (NUL-terminated) is copied there, so a client
/// can be given it as its CA file; `*written` gets its length without the NUL.
#[no_mangle]
pub extern "C" fn mailtls_config_builder_generate_self_signed(
    b: *mut mailtls_config_builder,
    hostname: *const c_char,
    cert_pem_out: *mut c_char,
    cert_pem_out_len: usize,
    written: *mut usize,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        // SAFETY: NUL-terminated string or NULL (checked).
        let host = match unsafe { c_str(hostname) } {
            Ok(h) if !h.is_empty() => h,
            Ok(_) => return mailtls_result::InvalidParameter,
            Err(e) => return e,
        };
        let names: Vec<String> =
            host.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_string).collect();
        if names.is_empty() {
            return mailtls_result::InvalidParameter;
        }
        let (cert, key) = match crate::tls::server::self_signed(&names) {
            Ok(pair) => pair,
            Err(e) => {
                let code = e.code;
                builder(b).error = Some(e);
                return code;
            }
        };
        if !cert_pem_out.is_null() {
            if cert.len() + 1 > cert_pem_out_len {
                return mailtls_result::BufferTooSmall;
            }
            // SAFETY: the caller provides `cert_pem_out_len` writable bytes; we write len+1.
            unsafe {
                std::ptr::copy_nonoverlapping(cert.as_ptr(), cert_pem_out as *mut u8, cert.len());
                *cert_pem_out.add(cert.len()) = 0;
            }
            if !written.is_null() {
                // SAFETY: non-NULL pointer to a writable size_t.
                unsafe { *written = cert.len() };
            }
        }
        builder(b).inner.certificate_pem(cert.as_bytes(), key.as_bytes());
        mailtls_result::Ok
    })
}

/// Sets the EHLO/LHLO argument the client sends (default: this machine's host name).
#[no_mangle]
pub extern "C" fn mailtls_config_builder_set_helo_name(b: *mut mailtls_config_builder, name: *const c_char) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        // SAFETY: NUL-terminated string or NULL (checked).
        match unsafe { c_str(name) } {
            Ok(n) => {
                builder(b).inner.helo_name(n);
                mailtls_result::Ok
            }
            Err(e) => e,
        }
    })
}

/// Sets the longest wait for one step (a reply, the handshake, one read or write in
/// fd mode), in milliseconds; 0 is invalid. Default 300000 (RFC 5321 section 4.5.3.2).
#[no_mangle]
pub extern "C" fn mailtls_config_builder_set_timeout_ms(b: *mut mailtls_config_builder, ms: u32) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        if ms == 0 {
            return mailtls_result::InvalidParameter;
        }
        builder(b).inner.step_timeout(Duration::from_millis(ms as u64));
        mailtls_result::Ok
    })
}

/// Sets the longest time one negotiation may take in all, in milliseconds: greeting,
/// capabilities, STARTTLS and handshake, across every connection the fallback ladder
/// opens (a server that answers the go reply and then never speaks TLS would otherwise
/// cost a step timeout on every rung). When it runs out the negotiation ends with
/// `MAILTLS_RESULT_TIMEOUT` (outcome defer), with no further attempt and no plaintext
/// fallback. Each step's own wait never reaches past it. 0 is invalid. Default 300000
/// (5 minutes).
#[no_mangle]
pub extern "C" fn mailtls_config_builder_set_total_timeout_ms(b: *mut mailtls_config_builder, ms: u32) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        if ms == 0 {
            return mailtls_result::InvalidParameter;
        }
        builder(b).inner.total_timeout(Duration::from_millis(ms as u64));
        mailtls_result::Ok
    })
}

/// Sets the limits on peer input before TLS: the longest line (default 4096), the most
/// lines in one reply (128), the most plaintext bytes before TLS (65536). A 0 keeps
/// that limit's current value. Checked when the config is built.
#[no_mangle]
pub extern "C" fn mailtls_config_builder_set_limits(
    b: *mut mailtls_config_builder,
    max_line: usize,
    max_reply_lines: usize,
    max_pretls_bytes: usize,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        let bl = builder(b);
        let cur = bl.inner.current_limits();
        let pick = |n: usize, d: usize| if n == 0 { d } else { n };
        bl.inner.limits(Limits {
            max_line: pick(max_line, cur.max_line),
            max_reply_lines: pick(max_reply_lines, cur.max_reply_lines),
            max_pretls_bytes: pick(max_pretls_bytes, cur.max_pretls_bytes),
        });
        mailtls_result::Ok
    })
}

/// Server: require TLS. Before STARTTLS, `mailtls_server_check_command` refuses every
/// command but NOOP, EHLO/HELO/LHLO, STARTTLS and QUIT with `MAILTLS_RESULT_TLS_REQUIRED`.
#[no_mangle]
pub extern "C" fn mailtls_config_builder_set_require_tls(b: *mut mailtls_config_builder, on: bool) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        builder(b).inner.require_tls(on);
        mailtls_result::Ok
    })
}

/// Server: what happens to bytes pipelined after a STARTTLS command:
/// `MAILTLS_INJECTION_ACTION_DISCARD` (default: never executed, counted, logged) or
/// `MAILTLS_INJECTION_ACTION_CLOSE` (the STARTTLS fails with
/// `MAILTLS_RESULT_COMMAND_INJECTION` and the server should close the connection).
#[no_mangle]
pub extern "C" fn mailtls_config_builder_set_injection_action(b: *mut mailtls_config_builder, action: u32) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        let a = match action {
            0 => InjectionAction::Discard,
            1 => InjectionAction::Close,
            _ => return mailtls_result::InvalidParameter,
        };
        builder(b).inner.injection(a);
        mailtls_result::Ok
    })
}

struct LogTarget {
    cb: extern "C" fn(*mut c_void, u32, *const c_char),
    userdata: usize,
}

/// Sets the log callback and the most verbose level passed to it
/// (`MAILTLS_LOG_LEVEL_ERROR` .. `MAILTLS_LOG_LEVEL_DEBUG`). `userdata` is passed on
/// every call and must stay valid while any session of the config lives.
#[no_mangle]
pub extern "C" fn mailtls_config_builder_set_log(
    b: *mut mailtls_config_builder,
    cb: mailtls_log_callback,
    userdata: *mut c_void,
    level: u32,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        let Some(cb) = cb else { return mailtls_result::NullParameter };
        let Some(level) = LogLevel::from_u32(level) else { return mailtls_result::InvalidParameter };
        let target = LogTarget { cb, userdata: userdata as usize };
        builder(b).inner.log(
            Arc::new(move |lvl: LogLevel, msg: &str| {
                let c = cstring(msg);
                (target.cb)(target.userdata as *mut c_void, lvl as u32, c.as_ptr());
            }),
            level,
        );
        mailtls_result::Ok
    })
}

/// Shares an intolerance memory with every session of the config (the config holds
/// its own reference). NULL removes it. Client role only; a server ignores it.
#[no_mangle]
pub extern "C" fn mailtls_config_builder_set_memory(
    b: *mut mailtls_config_builder,
    memory: *const super::memory::mailtls_memory,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        let m = if memory.is_null() { None } else { Some(super::memory::memory_arc(memory)) };
        builder(b).inner.memory(m);
        mailtls_result::Ok
    })
}

/// Sets the most TLS attempts one client negotiation may make, each on its own
/// connection, retries included (1..16, default 4). Under policy may, when every
/// attempt failed, the plaintext connection that follows is one more (so at most 5 by
/// default). Retries need `mailtls_session_set_connector`.
#[no_mangle]
pub extern "C" fn mailtls_config_builder_set_max_connections(b: *mut mailtls_config_builder, n: u32) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        if !(1..=16).contains(&n) {
            return mailtls_result::InvalidParameter;
        }
        builder(b).inner.max_connections(n);
        mailtls_result::Ok
    })
}

/// Under policy may: whether a session that will send credentials
/// (`mailtls_session_set_will_authenticate`) may end in plaintext, so that its
/// password travels in clear. With `allowed` true that happens exactly when the server
/// does not offer STARTTLS, when it refuses STARTTLS (a `4xx`/`5xx`, `NO`, `-ERR`, ...
/// reply), and when every TLS attempt failed and the plaintext retry runs on a new
/// connection; never to a pinned peer, never after a sign of attack (reply injection, a
/// non-go reply to STARTTLS, a downgrade), never under encrypt or verify. An IMAP
/// `PREAUTH` greeting in plaintext (which anyone on the path can forge to strip
/// STARTTLS) lets no password out either way: with `allowed` false a session that will
/// authenticate ends with `MAILTLS_RESULT_PREAUTH_PLAINTEXT` (defer) without sending a
/// byte; with `allowed` true it goes on in plaintext, already authenticated, and
/// `mailtls_report_preauthenticated` tells the application not to log in. Default
/// false: each of the cases above ends in defer instead.
#[no_mangle]
pub extern "C" fn mailtls_config_builder_set_plaintext_auth(b: *mut mailtls_config_builder, allowed: bool) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        builder(b).inner.plaintext_auth(allowed);
        mailtls_result::Ok
    })
}

/// Sets the longest wait for the server's first TLS byte after the ClientHello, in
/// milliseconds (default 30000): a hang there at the top rung counts as intolerance
/// of a large hello.
#[no_mangle]
pub extern "C" fn mailtls_config_builder_set_hello_timeout_ms(b: *mut mailtls_config_builder, ms: u32) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        if ms == 0 {
            return mailtls_result::InvalidParameter;
        }
        builder(b).inner.hello_timeout(Duration::from_millis(ms as u64));
        mailtls_result::Ok
    })
}

/// Server: the action for client hellos of format `hello` (`MAILTLS_HELLO_*`):
/// `MAILTLS_HELLO_ACTION_SERVE` (rustls; TLS 1.2 and 1.3 hellos only, the default for
/// them), `MAILTLS_HELLO_ACTION_HANDOFF` (`mailtls_server_starttls` returns
/// `MAILTLS_RESULT_HANDOFF`: the application's own TLS engine continues, see
/// `mailtls_session_handoff_bytes`), or `MAILTLS_HELLO_ACTION_REFUSE` (the default for
/// the others: the right alert for the format, close, one log line).
#[no_mangle]
pub extern "C" fn mailtls_config_builder_set_hello_action(b: *mut mailtls_config_builder, hello: u32, action: u32) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        let Some(kind) = crate::tls::sniff::HelloKind::from_u32(hello) else { return mailtls_result::InvalidParameter };
        let action = match action {
            0 => crate::config::HelloAction::Serve,
            1 => crate::config::HelloAction::Handoff,
            2 => crate::config::HelloAction::Refuse,
            _ => return mailtls_result::InvalidParameter,
        };
        let bl = builder(b);
        let r = bl.inner.hello_action(kind, action).map(|_| ());
        bl.outcome(r)
    })
}

/// Server: remembers client addresses whose hello could not be served (refused) in
/// `memory`, and does not offer them STARTTLS for `seconds` (0: the default, 86400),
/// so that their plaintext retry gets through instead of failing forever. Not applied
/// when the server requires TLS. NULL turns it off. Inspect and clear the records with
/// `mailtls_memory_lookup`/`_forget` (protocol, the client's IP address, port 0).
#[no_mangle]
pub extern "C" fn mailtls_config_builder_set_server_memory(
    b: *mut mailtls_config_builder,
    memory: *const super::memory::mailtls_memory,
    seconds: u32,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        let m = if memory.is_null() { None } else { Some(super::memory::memory_arc(memory)) };
        let ttl = Duration::from_secs(if seconds == 0 { 86400 } else { seconds as u64 });
        builder(b).inner.server_memory(m, ttl);
        mailtls_result::Ok
    })
}

/// Server: how many first flights of format `hello` (`MAILTLS_HELLO_*`) the sessions
/// of this config have seen; 0 for NULL or an unknown format.
#[no_mangle]
pub extern "C" fn mailtls_config_hello_count(cfg: *const mailtls_config, hello: u32) -> u64 {
    ffi_guard!(0, {
        non_null!(cfg, 0);
        config_ref(cfg).hello_counts.get(hello as usize).map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed))
    })
}

/// Checks the settings and builds an immutable config: trust anchors are loaded, a
/// server certificate and key are parsed and matched (`MAILTLS_RESULT_KEY_MISMATCH`).
/// On success `*out` holds a new reference; free it with `mailtls_config_free`. The
/// builder stays the caller's. On failure `mailtls_config_builder_last_error` says why.
#[no_mangle]
pub extern "C" fn mailtls_config_builder_build(
    b: *mut mailtls_config_builder,
    out: *mut *const mailtls_config,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        non_null!(out, mailtls_result::NullParameter);
        let bl = builder(b);
        match bl.inner.build() {
            Ok(cfg) => {
                bl.error = None;
                // SAFETY: `out` is non-NULL and writable.
                unsafe { *out = Arc::into_raw(cfg) as *const mailtls_config };
                mailtls_result::Ok
            }
            Err(e) => {
                let code = e.code;
                bl.error = Some(e);
                code
            }
        }
    })
}

/// Copies the full detail of the builder's last failure (NUL-terminated, truncated to
/// fit) into `buf`; an empty string when nothing failed.
#[no_mangle]
pub extern "C" fn mailtls_config_builder_last_error(
    b: *const mailtls_config_builder,
    buf: *mut c_char,
    len: usize,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(b, mailtls_result::NullParameter);
        non_null!(buf, mailtls_result::NullParameter);
        if len == 0 {
            return mailtls_result::BufferTooSmall;
        }
        // SAFETY: non-NULL builder from `mailtls_config_builder_new`.
        let bl = unsafe { &*b };
        let text = bl.error.as_ref().map(|e| e.to_string()).unwrap_or_default();
        let n = text.len().min(len - 1);
        // SAFETY: `buf` has `len` writable bytes; we write n + 1 <= len.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf as *mut u8, n);
            *buf.add(n) = 0;
        }
        mailtls_result::Ok
    })
}

/// Whether a server config has a usable certificate and key, so that STARTTLS can be
/// advertised. False for client configs and NULL.
#[no_mangle]
pub extern "C" fn mailtls_config_server_tls_ready(cfg: *const mailtls_config) -> bool {
    ffi_guard!(false, {
        non_null!(cfg, false);
        config_ref(cfg).server_tls.as_ref().is_some_and(|t| t.now().is_ok())
    })
}

/// Drops the caller's reference to a config; it is freed when no session uses it.
/// NULL is a no-op.
#[no_mangle]
pub extern "C" fn mailtls_config_free(cfg: *const mailtls_config) {
    ffi_guard!((), {
        if !cfg.is_null() {
            // SAFETY: `cfg` came from `Arc::into_raw`; this releases the caller's reference.
            drop(unsafe { Arc::from_raw(cfg as *const Config) });
        }
    })
}

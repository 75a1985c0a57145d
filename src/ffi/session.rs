//! Sessions: client negotiation, the server's STARTTLS, and application data.

use std::ffi::{c_char, c_void, CString};

use super::config::{config_arc, mailtls_config};
use std::cell::Cell;
use std::rc::Rc;

use super::io::{mailtls_read_callback, mailtls_write_callback, CallbackTransport, ConnectorCallbacks, FdTransport, FfiConnector, IoMode};
use crate::recovery::Rung;
use super::report::mailtls_report;
use super::{byte_slice, c_str, cstring, ffi_guard, mailtls_result, non_null};
use crate::error::{Error, Result};
use crate::protocol::Proto;
use crate::session::Session;

/// One connection: its negotiation, its report, then its data (opaque, single owner).
pub struct mailtls_session {
    pub(super) inner: Session,
    last_error: CString,
    report: Option<Box<mailtls_report>>,
    io: IoMode,
    connector: Option<ConnectorCallbacks>,
    fd: Rc<Cell<i32>>,
    reply: CString,
}

impl mailtls_session {
    fn install_connector(&mut self) {
        if let (Some(cb), false) = (self.connector, matches!(self.io, IoMode::None)) {
            self.inner.set_connector(Box::new(FfiConnector { cb, io: self.io, fd: self.fd.clone() }));
        }
    }

    pub(super) fn done(&mut self, r: Result<()>) -> mailtls_result {
        match r {
            Ok(()) => mailtls_result::Ok,
            Err(e) => self.err(e),
        }
    }

    fn err(&mut self, e: Error) -> mailtls_result {
        if e.code != mailtls_result::WouldBlock {
            self.inner.note_error(&e);
            self.last_error = cstring(&e.to_string());
        }
        e.code
    }
}

pub(super) fn session<'a>(s: *mut mailtls_session) -> &'a mut mailtls_session {
    // SAFETY: non-NULL session pointers come from `Box::into_raw` in the constructors,
    // and a session is used by one thread at a time (documented).
    unsafe { &mut *s }
}

fn session_ref<'a>(s: *const mailtls_session) -> &'a mailtls_session {
    // SAFETY: as in `session`.
    unsafe { &*s }
}

fn new_session(r: Result<Session>, out: *mut *mut mailtls_session) -> mailtls_result {
    match r {
        Ok(inner) => {
            let b = Box::new(mailtls_session {
                inner,
                last_error: CString::default(),
                report: None,
                io: IoMode::None,
                connector: None,
                fd: Rc::new(Cell::new(-1)),
                reply: CString::default(),
            });
            // SAFETY: `out` is non-NULL (checked by the caller) and writable.
            unsafe { *out = Box::into_raw(b) };
            mailtls_result::Ok
        }
        Err(e) => e.code,
    }
}

/// Creates a client session for `host` and `port` with protocol `proto`
/// (`MAILTLS_PROTO_SMTP`, `_LMTP`, `_IMAP`, `_POP3`, `_NNTP` or `_SIEVE`). `host` is also the reference name for `verify` and
/// the SNI, unless `mailtls_session_set_server_name` says otherwise. The session holds
/// its own reference to `cfg`. Free it with `mailtls_session_free`.
#[no_mangle]
pub extern "C" fn mailtls_client_new(
    cfg: *const mailtls_config,
    proto: u32,
    host: *const c_char,
    port: u16,
    out: *mut *mut mailtls_session,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(cfg, mailtls_result::NullParameter);
        non_null!(out, mailtls_result::NullParameter);
        let Some(proto) = Proto::from_u32(proto) else { return mailtls_result::InvalidParameter };
        // SAFETY: NUL-terminated string or NULL (checked).
        let host = match unsafe { c_str(host) } {
            Ok(h) => h,
            Err(e) => return e,
        };
        new_session(Session::client(config_arc(cfg), proto, host, port), out)
    })
}

/// Creates a server session for a connection from `peer` (an address for logs and
/// reports) with protocol `proto`. The server keeps its own command loop and calls
/// `mailtls_server_offer_starttls`, `mailtls_server_check_command` and
/// `mailtls_server_starttls`. Free it with `mailtls_session_free`.
#[no_mangle]
pub extern "C" fn mailtls_server_new(
    cfg: *const mailtls_config,
    proto: u32,
    peer: *const c_char,
    out: *mut *mut mailtls_session,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(cfg, mailtls_result::NullParameter);
        non_null!(out, mailtls_result::NullParameter);
        let Some(proto) = Proto::from_u32(proto) else { return mailtls_result::InvalidParameter };
        // SAFETY: NUL-terminated string or NULL (checked).
        let peer = match unsafe { c_str(peer) } {
            Ok(p) => p,
            Err(e) => return e,
        };
        new_session(Session::server(config_arc(cfg), proto, peer), out)
    })
}

/// Frees a session (its config reference too). Does not close the transport, which
/// stays the caller's. NULL is a no-op.
#[no_mangle]
pub extern "C" fn mailtls_session_free(s: *mut mailtls_session) {
    ffi_guard!((), {
        if !s.is_null() {
            // SAFETY: `s` came from `Box::into_raw` in a constructor.
            drop(unsafe { Box::from_raw(s) });
        }
    })
}

/// Sets the reference name checked under policy verify and sent as SNI (default: the
/// host given to `mailtls_client_new`). Only before negotiating.
#[no_mangle]
pub extern "C" fn mailtls_session_set_server_name(s: *mut mailtls_session, name: *const c_char) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        // SAFETY: NUL-terminated string or NULL (checked).
        let name = match unsafe { c_str(name) } {
            Ok(n) => n,
            Err(e) => return e,
        };
        let ss = session(s);
        let r = ss.inner.set_server_name(name);
        ss.done(r)
    })
}

/// Gives the session callback I/O: `read` and `write` get `userdata` on every call and
/// return 0 or an errno; `EAGAIN`/`EWOULDBLOCK` makes the library return
/// `MAILTLS_RESULT_WOULD_BLOCK`, `ETIMEDOUT` `MAILTLS_RESULT_TIMEOUT`. `userdata` must
/// stay valid while the session uses it.
#[no_mangle]
pub extern "C" fn mailtls_session_set_io(
    s: *mut mailtls_session,
    read: mailtls_read_callback,
    write: mailtls_write_callback,
    userdata: *mut c_void,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        let (Some(read), Some(write)) = (read, write) else { return mailtls_result::NullParameter };
        let t = CallbackTransport { read, write, userdata };
        let ss = session(s);
        ss.io = IoMode::Callbacks(t);
        ss.inner.set_transport(Box::new(t));
        ss.install_connector();
        mailtls_result::Ok
    })
}

/// Gives the session a file descriptor (a connected socket) that the library reads,
/// writes and polls itself, waiting at most the config's step timeout for each step:
/// the convenience mode for simple blocking programs. The fd stays the caller's.
#[no_mangle]
pub extern "C" fn mailtls_session_set_fd(s: *mut mailtls_session, fd: i32) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        if fd < 0 {
            return mailtls_result::InvalidParameter;
        }
        let ss = session(s);
        ss.io = IoMode::Fd;
        ss.fd.set(fd);
        ss.inner.set_transport(Box::new(FdTransport::new(fd)));
        ss.install_connector();
        mailtls_result::Ok
    })
}

/// Opens a new connection for the client's retries: `host` and `port` are the
/// session's. Return 0 or an errno. In fd mode store the new connected socket in
/// `*out_fd`; with I/O callbacks, make them use the new connection from now on.
pub type mailtls_connect_callback =
    Option<extern "C" fn(userdata: *mut c_void, host: *const c_char, port: u16, out_fd: *mut i32) -> i32>;

/// The session is done with a connection: close it. `fd` is the connection's file
/// descriptor in fd mode (-1 with I/O callbacks).
pub type mailtls_close_callback = Option<extern "C" fn(userdata: *mut c_void, fd: i32)>;

/// Lets the client retry by itself: after a failed first flight that looks like
/// intolerance it calls `close` on the connection it gives up (the caller's first one
/// too) and `connect` for a new one, at most the config's max connections in all
/// (the fallback ladder; under policy may also the plaintext retry). The connection
/// in use at the end stays the caller's (`mailtls_session_fd`). Without a connector a
/// negotiation that needs a new connection ends with `MAILTLS_RESULT_RETRY_NEEDED`
/// and the report names the rung to start at (`mailtls_report_retry_rung`).
#[no_mangle]
pub extern "C" fn mailtls_session_set_connector(
    s: *mut mailtls_session,
    connect: mailtls_connect_callback,
    close: mailtls_close_callback,
    userdata: *mut c_void,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        let Some(connect) = connect else { return mailtls_result::NullParameter };
        let ss = session(s);
        ss.connector = Some(ConnectorCallbacks { connect, close, userdata });
        ss.install_connector();
        mailtls_result::Ok
    })
}

/// The file descriptor the session uses now in fd mode (it changes when the session
/// retried on a new connection), or -1.
#[no_mangle]
pub extern "C" fn mailtls_session_fd(s: *const mailtls_session) -> i32 {
    ffi_guard!(-1, {
        non_null!(s, -1);
        session_ref(s).fd.get()
    })
}

/// Starts the negotiation at `rung` (`MAILTLS_RUNG_*`), with or without SNI, instead
/// of what memory advises: for programs that open the new connection themselves
/// after `MAILTLS_RESULT_RETRY_NEEDED`. Only before negotiating.
#[no_mangle]
pub extern "C" fn mailtls_session_set_start_rung(s: *mut mailtls_session, rung: u32, sni: bool) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        let Some(r) = Rung::ALL.get(rung as usize).copied() else { return mailtls_result::InvalidParameter };
        let ss = session(s);
        let res = ss.inner.set_start(r, sni);
        ss.done(res)
    })
}

/// Tells the session the application will send credentials (AUTH, LOGIN) after the
/// negotiation: under policy may it then never ends in plaintext unless the config
/// allows plaintext authentication (`mailtls_config_builder_set_plaintext_auth` lists
/// exactly when that lets a password travel in clear), and an IMAP `PREAUTH` greeting
/// in plaintext ends in `MAILTLS_RESULT_PREAUTH_PLAINTEXT` with nothing sent. Whatever
/// the outcome, check `mailtls_report_preauthenticated` before logging in.
#[no_mangle]
pub extern "C" fn mailtls_session_set_will_authenticate(s: *mut mailtls_session, on: bool) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        session(s).inner.set_will_authenticate(on);
        mailtls_result::Ok
    })
}

/// Runs the client negotiation: greeting, EHLO/LHLO, STARTTLS as the policy says, the
/// TLS handshake, EHLO again. `MAILTLS_RESULT_OK`: the session is ready for the
/// application's own dialogue (TLS or plaintext, as the report's outcome says).
/// `MAILTLS_RESULT_WOULD_BLOCK`: call again (or `mailtls_session_continue`) when the
/// transport is ready. Any other code: the negotiation ended (see the report, whose
/// outcome says defer or fail, and `mailtls_session_last_error`).
#[no_mangle]
pub extern "C" fn mailtls_client_negotiate(s: *mut mailtls_session) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        let ss = session(s);
        let r = ss.inner.negotiate();
        ss.done(r)
    })
}

/// Resumes whatever stopped at `MAILTLS_RESULT_WOULD_BLOCK`: a negotiation, a server
/// handshake, or queued output.
#[no_mangle]
pub extern "C" fn mailtls_session_continue(s: *mut mailtls_session) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        let ss = session(s);
        let r = ss.inner.resume();
        ss.done(r)
    })
}

/// Reads application data into `buf` (decrypted when TLS is active). On
/// `MAILTLS_RESULT_OK`, `*out_n` > 0 bytes were read. `MAILTLS_RESULT_CLOSED`: the
/// peer ended cleanly; `MAILTLS_RESULT_PEER_CLOSED`: the connection ended without
/// close_notify (possible truncation); `MAILTLS_RESULT_WOULD_BLOCK`: no data yet.
#[no_mangle]
pub extern "C" fn mailtls_session_read(s: *mut mailtls_session, buf: *mut u8, len: usize, out_n: *mut usize) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        non_null!(buf, mailtls_result::NullParameter);
        non_null!(out_n, mailtls_result::NullParameter);
        if len == 0 {
            return mailtls_result::InvalidParameter;
        }
        // SAFETY: the caller provides `len` writable bytes at `buf`.
        let b = unsafe { std::slice::from_raw_parts_mut(buf, len) };
        let ss = session(s);
        match ss.inner.read(b) {
            Ok(n) => {
                // SAFETY: non-NULL, writable.
                unsafe { *out_n = n };
                mailtls_result::Ok
            }
            Err(e) => ss.err(e),
        }
    })
}

/// Writes application data (encrypted when TLS is active). On `MAILTLS_RESULT_OK`,
/// `*out_n` bytes were taken; output that the transport could not take yet stays
/// queued (see `mailtls_session_wants_write` and `mailtls_session_flush`).
#[no_mangle]
pub extern "C" fn mailtls_session_write(
    s: *mut mailtls_session,
    buf: *const u8,
    len: usize,
    out_n: *mut usize,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        non_null!(out_n, mailtls_result::NullParameter);
        // SAFETY: the caller provides `len` readable bytes at `buf`.
        let data = match unsafe { byte_slice(buf, len) } {
            Ok(d) => d,
            Err(e) => return e,
        };
        let ss = session(s);
        match ss.inner.write(data) {
            Ok(n) => {
                // SAFETY: non-NULL, writable.
                unsafe { *out_n = n };
                mailtls_result::Ok
            }
            Err(e) => ss.err(e),
        }
    })
}

/// Writes out queued output. `MAILTLS_RESULT_WOULD_BLOCK` when the transport cannot
/// take it all yet.
#[no_mangle]
pub extern "C" fn mailtls_session_flush(s: *mut mailtls_session) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        let ss = session(s);
        let r = ss.inner.flush();
        ss.done(r)
    })
}

/// Sends TLS close_notify when TLS is active, and flushes. After a fatal TLS error
/// (`MAILTLS_RESULT_TLS_RECORD`, `MAILTLS_RESULT_TLS_HANDSHAKE`, ...) it sends nothing:
/// the fatal alert, where one was due, has gone out already, and a close_notify would
/// tell the peer the close was orderly. The transport stays open (it is the caller's).
#[no_mangle]
pub extern "C" fn mailtls_session_close(s: *mut mailtls_session) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        let ss = session(s);
        let r = ss.inner.close();
        ss.done(r)
    })
}

/// Whether the session waits to write (queued output, or the last would-block was a write).
#[no_mangle]
pub extern "C" fn mailtls_session_wants_write(s: *const mailtls_session) -> bool {
    ffi_guard!(false, {
        non_null!(s, false);
        session_ref(s).inner.wants_write()
    })
}

/// Whether the last would-block was a read: wait for the transport to be readable.
#[no_mangle]
pub extern "C" fn mailtls_session_wants_read(s: *const mailtls_session) -> bool {
    ffi_guard!(false, {
        non_null!(s, false);
        session_ref(s).inner.wants_read()
    })
}

/// Whether TLS is established on the session.
#[no_mangle]
pub extern "C" fn mailtls_session_tls_active(s: *const mailtls_session) -> bool {
    ffi_guard!(false, {
        non_null!(s, false);
        session_ref(s).inner.tls_active()
    })
}

/// The full detail of the session's last error, as a NUL-terminated string owned by
/// the session (valid until the next call on it); "" when nothing failed; NULL for NULL.
#[no_mangle]
pub extern "C" fn mailtls_session_last_error(s: *const mailtls_session) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        non_null!(s, std::ptr::null());
        session_ref(s).last_error.as_ptr()
    })
}

/// The session's report so far. The pointer is owned by the session and stays valid,
/// unchanged, until the session is freed or the next call of this function after the
/// report changed. NULL for NULL.
#[no_mangle]
pub extern "C" fn mailtls_session_report(s: *mut mailtls_session) -> *const mailtls_report {
    ffi_guard!(std::ptr::null(), {
        non_null!(s, std::ptr::null());
        let ss = session(s);
        let fresh = match &ss.report {
            Some(r) => !r.is_of(ss.inner.report()),
            None => true,
        };
        if fresh {
            ss.report = Some(Box::new(mailtls_report::new(ss.inner.report().clone())));
        }
        ss.report.as_deref().map_or(std::ptr::null(), |r| r as *const mailtls_report)
    })
}

/// Server: whether to advertise STARTTLS now. True only with a usable certificate and
/// key and before TLS; never after TLS (RFC 3207 section 4.2).
#[no_mangle]
pub extern "C" fn mailtls_server_offer_starttls(s: *const mailtls_session) -> bool {
    ffi_guard!(false, {
        non_null!(s, false);
        session_ref(s).inner.offer_starttls()
    })
}

/// Server: checks a received command line before the server acts on it.
/// `MAILTLS_RESULT_OK`: go ahead. `MAILTLS_RESULT_TLS_REQUIRED` (require-TLS mode,
/// before TLS), `MAILTLS_RESULT_TLS_ALREADY_ACTIVE` (STARTTLS after TLS) and
/// `MAILTLS_RESULT_STATE_RESET_REQUIRED` (a command before the new EHLO after TLS):
/// send `mailtls_server_reply(s, code)` and do not execute the command.
#[no_mangle]
pub extern "C" fn mailtls_server_check_command(s: *mut mailtls_session, line: *const u8, len: usize) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        // SAFETY: the caller provides `len` readable bytes.
        let line = match unsafe { byte_slice(line, len) } {
            Ok(l) => l,
            Err(e) => return e,
        };
        let ss = session(s);
        let r = ss.inner.check_command(line);
        ss.done(r)
    })
}

/// Server: the reply line (with CRLF) to send for a refusal code from
/// `mailtls_server_check_command` or `mailtls_server_starttls`, in the session's
/// protocol (SMTP `530 5.7.0`, IMAP `tag NO [PRIVACYREQUIRED]`, POP3 `-ERR`, NNTP `483`,
/// ManageSieve `NO (ENCRYPT-NEEDED)`, ...), with the tag of the last IMAP command
/// checked. NULL when the code has no reply. Owned by the session, valid until the
/// next call of this function on it.
#[no_mangle]
pub extern "C" fn mailtls_server_reply(s: *mut mailtls_session, code: u32) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        non_null!(s, std::ptr::null());
        let Some(code) = mailtls_result::from_u32(code) else { return std::ptr::null() };
        let ss = session(s);
        match ss.inner.server_reply(code) {
            Some(text) => {
                ss.reply = cstring(&text);
                ss.reply.as_ptr()
            }
            None => std::ptr::null(),
        }
    })
}

/// Server, implicit TLS (RFC 8314: ports 465, 993, 995, 563, ...): runs the TLS
/// handshake at once, before any protocol byte. `MAILTLS_RESULT_WOULD_BLOCK` resumes
/// with `mailtls_session_continue`. On `MAILTLS_RESULT_OK` send the greeting with
/// `mailtls_session_write`; a later STARTTLS is refused (`MAILTLS_RESULT_TLS_ALREADY_ACTIVE`
/// from `mailtls_server_check_command`). The client's hello is classified and served,
/// handed off or refused as with STARTTLS.
#[no_mangle]
pub extern "C" fn mailtls_server_start_implicit(s: *mut mailtls_session) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        let ss = session(s);
        let r = ss.inner.server_start_implicit();
        ss.done(r)
    })
}

/// Server: whether the client may send credentials now. False in require-TLS mode
/// before TLS: an IMAP server then advertises `LOGINDISABLED`, POP3 leaves `USER` and
/// `SASL` out of CAPA, SMTP leaves `AUTH` out of EHLO.
#[no_mangle]
pub extern "C" fn mailtls_server_auth_allowed(s: *const mailtls_session) -> bool {
    ffi_guard!(false, {
        non_null!(s, false);
        session_ref(s).inner.auth_allowed()
    })
}

/// Server: the client has logged in (IMAP LOGIN/AUTHENTICATE, POP3 PASS/APOP, NNTP
/// AUTHINFO, SMTP AUTH, ManageSieve AUTHENTICATE succeeded). From now on STARTTLS is
/// not offered (`mailtls_server_offer_starttls` is false) and a STARTTLS is refused
/// with `MAILTLS_RESULT_STARTTLS_NOT_ALLOWED`.
#[no_mangle]
pub extern "C" fn mailtls_server_note_authenticated(s: *mut mailtls_session) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        session(s).inner.note_authenticated();
        mailtls_result::Ok
    })
}

/// Client: implicit TLS (RFC 8314: SMTP submission 465, IMAPS 993, POP3S 995, NNTPS
/// 563, ...). The handshake starts as soon as `mailtls_client_negotiate` runs, before
/// any protocol byte; the greeting and the capabilities are read inside TLS. The same
/// ladder and memory apply; plaintext never does, whatever the policy. Only before
/// negotiating.
#[no_mangle]
pub extern "C" fn mailtls_session_set_implicit_tls(s: *mut mailtls_session, on: bool) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        let ss = session(s);
        let r = ss.inner.set_implicit(on);
        ss.done(r)
    })
}

/// Server: handles a received STARTTLS. `pipelined`/`len` are the bytes that followed
/// the command line in the server's input buffer (never executed: discarded and
/// counted, or refused, by config). The library writes the reply itself through the
/// session's I/O (`220`, or `454` without a usable certificate:
/// `MAILTLS_RESULT_TLS_UNAVAILABLE`, the session goes on in plaintext; or the refusal
/// of a second STARTTLS: `MAILTLS_RESULT_TLS_ALREADY_ACTIVE`), then runs the handshake.
/// The client's hello is classified first (`mailtls_report_hello`) and handled as the
/// config says: served; handed off (`MAILTLS_RESULT_HANDOFF`: the application's own
/// TLS engine continues on the transport after `mailtls_session_handoff_bytes`); or
/// refused (`MAILTLS_RESULT_HELLO_REFUSED`: the format's alert was sent, close the connection;
/// a non-blocking transport that did not take it all leaves it queued:
/// `mailtls_session_wants_write` says so and `mailtls_session_flush` sends the rest, as
/// after any failed handshake).
/// The go reply is the protocol's (SMTP `220`, IMAP `tag OK`, POP3 `+OK`, NNTP `382`,
/// ManageSieve `OK`); for IMAP pass the STARTTLS line to `mailtls_server_check_command`
/// first, so the reply carries its tag. After `mailtls_server_note_authenticated`
/// STARTTLS is refused (`MAILTLS_RESULT_STARTTLS_NOT_ALLOWED`, reply sent).
/// On `MAILTLS_RESULT_OK` TLS is active: the server MUST forget its protocol state
/// (EHLO argument, transaction, authentication) and use `mailtls_session_read` and
/// `mailtls_session_write` from now on; `mailtls_server_reset_required` stays true
/// until the client's new EHLO.
#[no_mangle]
pub extern "C" fn mailtls_server_starttls(s: *mut mailtls_session, pipelined: *const u8, len: usize) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        // SAFETY: the caller provides `len` readable bytes.
        let extra = match unsafe { byte_slice(pipelined, len) } {
            Ok(p) => p,
            Err(e) => return e,
        };
        let ss = session(s);
        let r = ss.inner.server_starttls(extra);
        ss.done(r)
    })
}

/// Server: after `MAILTLS_RESULT_HANDOFF`, the bytes of the client's first flight that
/// the library already read (the start of its hello), owned by the session. The
/// application's TLS engine must consume them before reading the transport.
#[no_mangle]
pub extern "C" fn mailtls_session_handoff_bytes(
    s: *const mailtls_session,
    out: *mut *const u8,
    len: *mut usize,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        non_null!(out, mailtls_result::NullParameter);
        non_null!(len, mailtls_result::NullParameter);
        let b = session_ref(s).inner.handoff_bytes();
        if b.is_empty() {
            return mailtls_result::InvalidState;
        }
        // SAFETY: both pointers are non-NULL and writable.
        unsafe {
            *out = b.as_ptr();
            *len = b.len();
        }
        mailtls_result::Ok
    })
}

/// Server: true from a successful STARTTLS until the client's next EHLO/HELO/LHLO
/// passes `mailtls_server_check_command`: the server must have reset its state.
#[no_mangle]
pub extern "C" fn mailtls_server_reset_required(s: *const mailtls_session) -> bool {
    ffi_guard!(false, {
        non_null!(s, false);
        session_ref(s).inner.reset_required()
    })
}

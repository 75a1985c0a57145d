//! The handshake for programs that keep their own STARTTLS code: the application
//! sent STARTTLS and read the go reply itself, and the library takes it from there.

use super::session::{mailtls_session, session};
use super::{byte_slice, ffi_guard, mailtls_result, non_null};

/// Client: runs the TLS handshake on a connection whose application did the
/// STARTTLS dialogue itself (msmtp, Exim, a mutt-like program that keeps its own
/// protocol code and wants only the TLS part).
///
/// When to call it: on a fresh session from `mailtls_client_new(cfg, proto, host,
/// port, &s)` (host and port are the peer's, as the memory knows it; host is also the
/// reference name and SNI unless `mailtls_session_set_server_name` says otherwise),
/// given the connection with `mailtls_session_set_fd` or `mailtls_session_set_io`,
/// once the application has sent STARTTLS (STLS, IMAP `tag STARTTLS`) and read the
/// server's positive reply (SMTP/LMTP `220`, IMAP tagged `OK`, POP3 `+OK`, NNTP `382`,
/// ManageSieve `OK`). Call it instead of `mailtls_client_negotiate`, never with it.
/// Implicit TLS (RFC 8314: ports 465, 993, 995, 563) for the same programs: call it
/// right after connecting, before reading anything (`len` 0), on a session NOT set
/// with `mailtls_session_set_implicit_tls` (that one makes the library read the
/// greeting itself); the application then reads the greeting inside TLS.
///
/// `read_ahead`/`len`: the bytes the application has already read from the
/// connection past the end of that reply line (what is left in its input buffer).
/// There must be none: the server may send nothing between its go reply and the TLS
/// handshake, so any byte there was injected by someone on the path, to be read
/// later as if it came under TLS. `len` > 0 ends the session with
/// `MAILTLS_RESULT_REPLY_INJECTION` before anything is sent; close the connection.
/// `read_ahead` may be NULL when `len` is 0. Read the reply line by line (or keep
/// what follows it) so that this can be told.
///
/// The handshake starts at the rung the config's memory advises for (proto, host,
/// port), or at the one `mailtls_session_set_start_rung` set; the policy applies as in
/// a negotiation (`verify` checks the certificate against the reference name at
/// every rung, `may` and `encrypt` record it in the report); the policy must not be
/// `none` (`MAILTLS_RESULT_INVALID_STATE`). Non-blocking transports give
/// `MAILTLS_RESULT_WOULD_BLOCK`: wait as `mailtls_session_wants_read/_write` say, then
/// call `mailtls_session_continue` (or this function again, with no bytes).
///
/// `MAILTLS_RESULT_OK`: TLS is established; the report has the TLS version, cipher,
/// group, certificate, rung, the one attempt and the memory events, and the success
/// is recorded in the memory (the rung that worked; the peer is pinned). The
/// application then speaks its protocol through `mailtls_session_write/_read`, and
/// MUST first forget what it learnt before TLS and ask for the capabilities again
/// (EHLO, CAPABILITY, CAPA, ...: RFC 3207 section 4.2, RFC 2595, RFC 4642). The
/// dialogue being the application's, the report has no capabilities, no plaintext
/// time, and `mailtls_report_starttls_offered` is false (the library did not see
/// it). A client Finished the transport would not take at once goes out with the
/// first write or read.
///
/// `MAILTLS_RESULT_RETRY_NEEDED`: the first flight failed in a way a more
/// conservative hello may avoid (a reset, EOF or timeout, an alert such as
/// `protocol_version`); the intolerance is recorded in the memory and
/// `mailtls_report_retry_rung` names the next rung. The library cannot redo the
/// application's dialogue, so the application must: close this connection, free the
/// session, connect again, redo its greeting/EHLO/STARTTLS, create a new session on
/// the same config and call this function again. With a memory the new session
/// starts at the right rung by itself, even in another process sharing the memory
/// (`mailtls_memory_open_file`); without one, call `mailtls_session_set_start_rung(s,
/// mailtls_report_retry_rung(rep), !mailtls_report_retry_without_sni(rep))` first. A
/// connector (`mailtls_session_set_connector`) is never used here.
///
/// Any other code ends the session with no rung left to retry at: certificate
/// failures (`MAILTLS_RESULT_CERTIFICATE_*`), `MAILTLS_RESULT_DOWNGRADE_SUSPECTED` (the
/// peer accepted this rung recently, so the failure is no proof of intolerance and
/// possibly an attack: nothing is recorded, keep the mail queued), and
/// `MAILTLS_RESULT_DOWNGRADE_DETECTED` (the RFC 8446 sentinel in a TLS 1.2 answer to
/// the `tls12` hello), `MAILTLS_RESULT_LADDER_EXHAUSTED` (every rung failed: the peer
/// is recorded as incompatible), `MAILTLS_RESULT_REPLY_INJECTION` (plaintext from the
/// server where its handshake belongs), timeouts and I/O errors. The report's
/// outcome is defer (keep the mail queued) and `mailtls_session_last_error` has the
/// detail. The library never goes on in
/// plaintext here, whatever the policy: whether to, on a new connection, is the
/// application's decision. A second call after the end, a call on a server session,
/// on a session that negotiates by itself or is set with
/// `mailtls_session_set_implicit_tls` gives `MAILTLS_RESULT_INVALID_STATE`.
#[no_mangle]
pub extern "C" fn mailtls_client_start_tls(s: *mut mailtls_session, read_ahead: *const u8, len: usize) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        // SAFETY: the caller provides `len` readable bytes (NULL only with 0).
        let extra = match unsafe { byte_slice(read_ahead, len) } {
            Ok(b) => b,
            Err(e) => return e,
        };
        let ss = session(s);
        let r = ss.inner.start_tls(extra);
        ss.done(r)
    })
}

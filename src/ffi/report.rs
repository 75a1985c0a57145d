//! The report, read through accessors (no C struct whose layout could break the ABI).
//! Strings are NUL-terminated, owned by the report; NULL means "not known".

use std::ffi::{c_char, CString};

use super::{cstring, ffi_guard, non_null, static_cstr};
use crate::session::report::Report;

/// A negotiation's report (opaque, owned by its session).
pub struct mailtls_report {
    pub(super) src: Report,
    detail: CString,
    tls_version: Option<CString>,
    cipher: Option<CString>,
    group: Option<CString>,
    subject: Option<CString>,
    sha256: Option<CString>,
    cert_error: Option<CString>,
    names: Vec<CString>,
    caps: Vec<CString>,
    warnings: Vec<CString>,
    events: Vec<CString>,
    /// Built on the first `mailtls_report_json`: most callers never ask for it.
    json: once_cell::unsync::OnceCell<CString>,
    /// Built on the first `mailtls_report_tlsrpt_record` (None: no TLS-RPT result).
    tlsrpt_line: once_cell::unsync::OnceCell<Option<CString>>,
}

impl mailtls_report {
    pub(crate) fn new(src: Report) -> Self {
        let opt = |s: &Option<String>| s.as_deref().map(cstring);
        mailtls_report {
            detail: cstring(&src.detail),
            tls_version: opt(&src.tls_version),
            cipher: opt(&src.cipher),
            group: opt(&src.group),
            subject: src.peer_cert.as_ref().map(|c| cstring(&c.subject)),
            sha256: src.peer_cert.as_ref().map(|c| cstring(&c.sha256)),
            cert_error: opt(&src.cert_error),
            names: src.peer_cert.as_ref().map(|c| c.names.iter().map(|n| cstring(n)).collect()).unwrap_or_default(),
            caps: src.capabilities.iter().map(|c| cstring(c)).collect(),
            warnings: src.warnings.iter().map(|c| cstring(c)).collect(),
            events: src.memory_events.iter().map(|c| cstring(c)).collect(),
            json: once_cell::unsync::OnceCell::new(),
            tlsrpt_line: once_cell::unsync::OnceCell::new(),
            src,
        }
    }

    pub(crate) fn is_of(&self, r: &Report) -> bool {
        &self.src == r
    }

    /// The session's TLS-RPT result, if it has one.
    pub(crate) fn tlsrpt(&self) -> Option<&crate::tlsrpt::SessionResult> {
        self.src.tlsrpt.as_ref()
    }

    /// Its record line, owned by the report, or NULL.
    pub(crate) fn tlsrpt_line(&self) -> *const c_char {
        opt_ptr(self.tlsrpt_line.get_or_init(|| self.src.tlsrpt.as_ref().map(|t| cstring(&t.to_line()))))
    }
}

pub(super) fn rep<'a>(r: *const mailtls_report) -> &'a mailtls_report {
    // SAFETY: non-NULL report pointers come from `mailtls_session_report` and live
    // as long as documented there.
    unsafe { &*r }
}

fn opt_ptr(c: &Option<CString>) -> *const c_char {
    c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
}

/// The outcome: `MAILTLS_OUTCOME_PENDING`, `_TLS`, `_PLAINTEXT`, `_DEFER` or `_FAIL`.
#[no_mangle]
pub extern "C" fn mailtls_report_outcome(r: *const mailtls_report) -> u32 {
    ffi_guard!(0, {
        non_null!(r, 0);
        rep(r).src.outcome() as u32
    })
}

/// The reason code (a `mailtls_result`): `MAILTLS_RESULT_OK` when all went to plan, or
/// why the outcome is what it is (for example `MAILTLS_RESULT_STARTTLS_NOT_OFFERED`
/// with a plaintext outcome under policy may).
#[no_mangle]
pub extern "C" fn mailtls_report_reason(r: *const mailtls_report) -> u32 {
    ffi_guard!(crate::error::Code::Panic as u32, {
        non_null!(r, crate::error::Code::NullParameter as u32);
        rep(r).src.reason.unwrap_or(crate::error::Code::Ok) as u32
    })
}

/// The full detail of the reason ("" when none).
#[no_mangle]
pub extern "C" fn mailtls_report_detail(r: *const mailtls_report) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        non_null!(r, std::ptr::null());
        rep(r).detail.as_ptr()
    })
}

/// The RFC 8460 result type ("starttls-not-supported", "certificate-host-mismatch", ...)
/// where one fits the reason, else NULL.
#[no_mangle]
pub extern "C" fn mailtls_report_rfc8460_result_type(r: *const mailtls_report) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        non_null!(r, std::ptr::null());
        rep(r).src.rfc8460.map_or(std::ptr::null(), static_cstr)
    })
}

/// Whether the server offered STARTTLS (client side).
#[no_mangle]
pub extern "C" fn mailtls_report_starttls_offered(r: *const mailtls_report) -> bool {
    ffi_guard!(false, {
        non_null!(r, false);
        rep(r).src.starttls_offered
    })
}

/// The negotiated TLS version ("TLSv1.3", "TLSv1.2"), or NULL.
#[no_mangle]
pub extern "C" fn mailtls_report_tls_version(r: *const mailtls_report) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        non_null!(r, std::ptr::null());
        opt_ptr(&rep(r).tls_version)
    })
}

/// The negotiated cipher suite ("TLS13_AES_256_GCM_SHA384"), or NULL.
#[no_mangle]
pub extern "C" fn mailtls_report_cipher(r: *const mailtls_report) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        non_null!(r, std::ptr::null());
        opt_ptr(&rep(r).cipher)
    })
}

/// The negotiated key-exchange group ("X25519MLKEM768", "X25519", "secp256r1"), or NULL.
#[no_mangle]
pub extern "C" fn mailtls_report_group(r: *const mailtls_report) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        non_null!(r, std::ptr::null());
        opt_ptr(&rep(r).group)
    })
}

/// Whether the TLS session was resumed.
#[no_mangle]
pub extern "C" fn mailtls_report_resumed(r: *const mailtls_report) -> bool {
    ffi_guard!(false, {
        non_null!(r, false);
        rep(r).src.resumed
    })
}

/// Whether the IMAP server greeted with `PREAUTH`: the connection is already in the
/// authenticated state, so the application must not send LOGIN or AUTHENTICATE (RFC
/// 9051 section 7.1.4). In plaintext such a greeting is what an attacker forges to strip
/// STARTTLS; see `mailtls_config_builder_set_plaintext_auth`.
#[no_mangle]
pub extern "C" fn mailtls_report_preauthenticated(r: *const mailtls_report) -> bool {
    ffi_guard!(false, {
        non_null!(r, false);
        rep(r).src.preauth
    })
}

/// The peer certificate's subject (RFC 4514 style), or NULL when none was seen.
#[no_mangle]
pub extern "C" fn mailtls_report_peer_cert_subject(r: *const mailtls_report) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        non_null!(r, std::ptr::null());
        opt_ptr(&rep(r).subject)
    })
}

/// The peer certificate's SHA-256 fingerprint, 64 lowercase hex digits, or NULL.
#[no_mangle]
pub extern "C" fn mailtls_report_peer_cert_sha256(r: *const mailtls_report) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        non_null!(r, std::ptr::null());
        opt_ptr(&rep(r).sha256)
    })
}

/// How many names (subjectAltName DNS names and IPs, else the CN) the peer certificate has.
#[no_mangle]
pub extern "C" fn mailtls_report_peer_cert_name_count(r: *const mailtls_report) -> usize {
    ffi_guard!(0, {
        non_null!(r, 0);
        rep(r).names.len()
    })
}

/// The peer certificate's name number `i`, or NULL when out of range.
#[no_mangle]
pub extern "C" fn mailtls_report_peer_cert_name(r: *const mailtls_report, i: usize) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        non_null!(r, std::ptr::null());
        rep(r).names.get(i).map_or(std::ptr::null(), |c| c.as_ptr())
    })
}

/// Whether the peer's chain and name verified against the trust anchors: 1 yes, 0 no
/// (see `mailtls_report_peer_cert_error`), -1 not checked. Under policy verify a
/// completed handshake is always 1; under may and encrypt it is recorded, not enforced.
#[no_mangle]
pub extern "C" fn mailtls_report_peer_cert_verified(r: *const mailtls_report) -> i32 {
    ffi_guard!(-1, {
        non_null!(r, -1);
        match rep(r).src.cert_verified {
            Some(true) => 1,
            Some(false) => 0,
            None => -1,
        }
    })
}

/// Why the peer's certificate did not verify, or NULL.
#[no_mangle]
pub extern "C" fn mailtls_report_peer_cert_error(r: *const mailtls_report) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        non_null!(r, std::ptr::null());
        opt_ptr(&rep(r).cert_error)
    })
}

/// How many capabilities the report holds (after TLS: only those learnt under TLS).
#[no_mangle]
pub extern "C" fn mailtls_report_capability_count(r: *const mailtls_report) -> usize {
    ffi_guard!(0, {
        non_null!(r, 0);
        rep(r).caps.len()
    })
}

/// Capability number `i` ("AUTH PLAIN LOGIN", "PIPELINING"; keyword upper-cased), or NULL.
#[no_mangle]
pub extern "C" fn mailtls_report_capability(r: *const mailtls_report, i: usize) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        non_null!(r, std::ptr::null());
        rep(r).caps.get(i).map_or(std::ptr::null(), |c| c.as_ptr())
    })
}

/// How many connection attempts the negotiation made.
#[no_mangle]
pub extern "C" fn mailtls_report_attempt_count(r: *const mailtls_report) -> usize {
    ffi_guard!(0, {
        non_null!(r, 0);
        rep(r).src.attempts.len()
    })
}

/// The ladder rung of attempt `i` (`MAILTLS_RUNG_*`), or -1 when no handshake began or
/// `i` is out of range.
#[no_mangle]
pub extern "C" fn mailtls_report_attempt_rung(r: *const mailtls_report, i: usize) -> i32 {
    ffi_guard!(-1, {
        non_null!(r, -1);
        rep(r).src.attempts.get(i).and_then(|a| a.rung).map_or(-1, |g| g as i32)
    })
}

/// The result code of attempt `i`, or `MAILTLS_RESULT_INVALID_PARAMETER` out of range.
#[no_mangle]
pub extern "C" fn mailtls_report_attempt_result(r: *const mailtls_report, i: usize) -> u32 {
    ffi_guard!(crate::error::Code::Panic as u32, {
        non_null!(r, crate::error::Code::NullParameter as u32);
        rep(r).src.attempts.get(i).map_or(crate::error::Code::InvalidParameter as u32, |a| a.code as u32)
    })
}

/// The failure class of attempt `i` (`MAILTLS_FAILURE_CLASS_*`; NONE on success or out of range).
#[no_mangle]
pub extern "C" fn mailtls_report_attempt_class(r: *const mailtls_report, i: usize) -> u32 {
    ffi_guard!(0, {
        non_null!(r, 0);
        rep(r).src.attempts.get(i).map_or(0, |a| a.class as u32)
    })
}

/// Milliseconds of the plaintext dialogue, of the handshake, and in total (`which`:
/// 0 plaintext, 1 handshake, 2 total; other values give 0).
#[no_mangle]
pub extern "C" fn mailtls_report_time_ms(r: *const mailtls_report, which: u32) -> u64 {
    ffi_guard!(0, {
        non_null!(r, 0);
        let t = &rep(r).src.timings;
        match which {
            0 => t.plaintext.as_millis() as u64,
            1 => t.handshake.as_millis() as u64,
            2 => t.total.as_millis() as u64,
            _ => 0,
        }
    })
}

/// Server: bytes pipelined after STARTTLS that were discarded, never executed.
#[no_mangle]
pub extern "C" fn mailtls_report_discarded_bytes(r: *const mailtls_report) -> u64 {
    ffi_guard!(0, {
        non_null!(r, 0);
        rep(r).src.discarded_after_starttls
    })
}

/// The whole report as one line of JSON (outcome, reason, detail, rfc8460,
/// starttls_offered, tls_version, cipher, group, resumed, peer_cert {subject, names,
/// sha256, verified, error}, capabilities, attempts, timings_ms, discarded_after_starttls).
#[no_mangle]
pub extern "C" fn mailtls_report_json(r: *const mailtls_report) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        non_null!(r, std::ptr::null());
        let r = rep(r);
        r.json.get_or_init(|| cstring(&r.src.to_json())).as_ptr()
    })
}

/// The name of an outcome ("tls", "plaintext", "defer", "fail", "handoff", "pending"); static.
#[no_mangle]
pub extern "C" fn mailtls_outcome_name(outcome: u32) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        use crate::session::report::Outcome;
        let o = match outcome {
            1 => Outcome::Tls,
            2 => Outcome::Plaintext,
            3 => Outcome::Defer,
            4 => Outcome::Fail,
            5 => Outcome::Handoff,
            _ => Outcome::Pending,
        };
        static_cstr(o.name())
    })
}

/// The rung to start at on a new connection after `MAILTLS_RESULT_RETRY_NEEDED`
/// (`MAILTLS_RUNG_*`), or -1.
#[no_mangle]
pub extern "C" fn mailtls_report_retry_rung(r: *const mailtls_report) -> i32 {
    ffi_guard!(-1, {
        non_null!(r, -1);
        rep(r).src.retry_rung.map_or(-1, |g| g as i32)
    })
}

/// Whether the retry after `MAILTLS_RESULT_RETRY_NEEDED` should leave SNI out.
#[no_mangle]
pub extern "C" fn mailtls_report_retry_without_sni(r: *const mailtls_report) -> bool {
    ffi_guard!(false, {
        non_null!(r, false);
        rep(r).src.retry_without_sni
    })
}

/// How many memory events (used, recorded, pinned, suspected downgrade) the report holds.
#[no_mangle]
pub extern "C" fn mailtls_report_memory_event_count(r: *const mailtls_report) -> usize {
    ffi_guard!(0, {
        non_null!(r, 0);
        rep(r).events.len()
    })
}

/// Memory event number `i`, a sentence, or NULL when out of range.
#[no_mangle]
pub extern "C" fn mailtls_report_memory_event(r: *const mailtls_report, i: usize) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        non_null!(r, std::ptr::null());
        rep(r).events.get(i).map_or(std::ptr::null(), |c| c.as_ptr())
    })
}

/// How many warnings the report holds: suspicious things seen in plaintext that must
/// not be shown to a user as trusted (an IMAP `[ALERT]` received before TLS).
#[no_mangle]
pub extern "C" fn mailtls_report_warning_count(r: *const mailtls_report) -> usize {
    ffi_guard!(0, {
        non_null!(r, 0);
        rep(r).warnings.len()
    })
}

/// Warning number `i`, a sentence quoting the suspicious text, or NULL when out of range.
#[no_mangle]
pub extern "C" fn mailtls_report_warning(r: *const mailtls_report, i: usize) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        non_null!(r, std::ptr::null());
        rep(r).warnings.get(i).map_or(std::ptr::null(), |c| c.as_ptr())
    })
}

/// The name of a rung ("modern", "compact", "classic", "tls12"), or NULL; static.
#[no_mangle]
pub extern "C" fn mailtls_rung_name(rung: u32) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        crate::recovery::Rung::ALL.get(rung as usize).map_or(std::ptr::null(), |r| static_cstr(r.name()))
    })
}

/// The name of a failure class ("intolerance", "incompatible", ...), or NULL; static.
#[no_mangle]
pub extern "C" fn mailtls_failure_class_name(class: u32) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        crate::recovery::FailureClass::ALL.get(class as usize).map_or(std::ptr::null(), |c| static_cstr(c.name()))
    })
}

/// Server: the format of the client's first flight after the go reply
/// (`MAILTLS_HELLO_*`; `MAILTLS_HELLO_NONE` when no STARTTLS happened).
#[no_mangle]
pub extern "C" fn mailtls_report_hello(r: *const mailtls_report) -> u32 {
    ffi_guard!(0, {
        non_null!(r, 0);
        rep(r).src.hello.map_or(0, |h| h.kind as u32)
    })
}

/// Server: the client_version of the hello (0x0301 for TLS 1.0 ...), or 0.
#[no_mangle]
pub extern "C" fn mailtls_report_hello_client_version(r: *const mailtls_report) -> u16 {
    ffi_guard!(0, {
        non_null!(r, 0);
        rep(r).src.hello.map_or(0, |h| h.client_version)
    })
}

/// Server: what was done with the hello (`MAILTLS_HELLO_ACTION_*`), or -1.
#[no_mangle]
pub extern "C" fn mailtls_report_hello_action(r: *const mailtls_report) -> i32 {
    ffi_guard!(-1, {
        non_null!(r, -1);
        rep(r).src.hello_action.map_or(-1, |a| a as i32)
    })
}

/// The name of a hello format ("sslv2-compat", "ssl3", "tls1.0" .. "tls1.3",
/// "plaintext", "unknown", "none"), or NULL; static.
#[no_mangle]
pub extern "C" fn mailtls_hello_name(hello: u32) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        crate::tls::sniff::HelloKind::from_u32(hello).map_or(std::ptr::null(), |k| static_cstr(k.name()))
    })
}

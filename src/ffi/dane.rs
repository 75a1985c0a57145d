//! The destination's DANE (RFC 7672) and MTA-STS (RFC 8461) facts, as the caller's
//! validating resolver and HTTPS fetch found them: set on a client session before
//! negotiating. The library does no DNS; what these facts mean is `auth`'s.

use std::ffi::c_char;

use super::report::{mailtls_report, rep};
use super::session::{mailtls_session, session};
use super::{byte_slice, c_str, ffi_guard, mailtls_result, non_null};
use crate::auth::tlsa::Tlsa;
use crate::auth::Dnssec;
use crate::error::{Code, Error};
use crate::session::DestinationName;

/// Adds a record to the destination's TLSA RRset, from its fields: `usage` (2
/// DANE-TA, 3 DANE-EE; 0 and 1 are kept but unusable for SMTP, RFC 7672 section
/// 3.1), `selector` (0 certificate, 1 public key), `mtype` (0 full, 1 SHA-256, 2
/// SHA-512) and the `len` bytes of `data`. Records are what the resolver returned for
/// `_PORT._tcp.` + the TLSA base domain; they count only under policy `dane` or
/// `dane-only`, with `mailtls_session_set_dnssec(s, MAILTLS_DNSSEC_SECURE)`. At most 64;
/// a duplicate is ignored. Only before negotiating (`MAILTLS_RESULT_INVALID_STATE`).
#[no_mangle]
pub extern "C" fn mailtls_session_add_tlsa(
    s: *mut mailtls_session,
    usage: u8,
    selector: u8,
    mtype: u8,
    data: *const u8,
    len: usize,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        // SAFETY: `len` readable bytes at `data`, or NULL with 0 (checked).
        let data = match unsafe { byte_slice(data, len) } {
            Ok(d) => d,
            Err(e) => return e,
        };
        let ss = session(s);
        let r = Tlsa::new(usage, selector, mtype, data).and_then(|t| ss.inner.add_tlsa(t));
        ss.done(r)
    })
}

/// Adds a TLSA record in presentation form, as a zone file or `dig +short TLSA`
/// shows it: `"3 1 1 e3b0c442..."` (usage, selector, matching type, hex data that
/// may be split by spaces; RFC 7218 mnemonics such as `DANE-EE SPKI SHA2-256` are
/// accepted too). A malformed record is `MAILTLS_RESULT_INVALID_PARAMETER` with the
/// reason in `mailtls_session_last_error`. Otherwise as `mailtls_session_add_tlsa`.
#[no_mangle]
pub extern "C" fn mailtls_session_add_tlsa_text(s: *mut mailtls_session, record: *const c_char) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        // SAFETY: NUL-terminated string or NULL (checked).
        let text = match unsafe { c_str(record) } {
            Ok(t) => t,
            Err(e) => return e,
        };
        let ss = session(s);
        let r = Tlsa::parse(text).and_then(|t| ss.inner.add_tlsa(t));
        ss.done(r)
    })
}

/// Sets what the caller's DNSSEC-validating resolver said of the destination's MX
/// and TLSA lookups: `MAILTLS_DNSSEC_SECURE` (both validated), `_INSECURE` (either is
/// provably unsigned; RFC 7672 section 2.2.1: an insecure MX RRset means no DANE),
/// or `_BOGUS` (either failed validation: policies `dane` and `dane-only` defer with
/// `MAILTLS_RESULT_DNSSEC_BOGUS`, RFC 8460 result type `dnssec-invalid`). Not set,
/// the lookups count as insecure. Only before negotiating.
#[no_mangle]
pub extern "C" fn mailtls_session_set_dnssec(s: *mut mailtls_session, status: u32) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        let ss = session(s);
        let r = match Dnssec::from_u32(status) {
            Some(d) => ss.inner.set_dnssec(d),
            None => Err(Error::new(Code::InvalidParameter, format!("DNSSEC status {status}: secure (1), insecure (2) or bogus (3)"))),
        };
        ss.done(r)
    })
}

fn set_name(s: *mut mailtls_session, which: DestinationName, name: *const c_char) -> mailtls_result {
    non_null!(s, mailtls_result::NullParameter);
    // SAFETY: NUL-terminated string or NULL (checked).
    let name = match unsafe { c_str(name) } {
        Ok(n) => n,
        Err(e) => return e,
    };
    let ss = session(s);
    let r = ss.inner.set_destination_name(which, name);
    ss.done(r)
}

/// Sets the TLSA base domain (RFC 7672 section 2.2.2): the MX host name, or the
/// target of its CNAME chain when every step of it was DNSSEC-secure. Under DANE it
/// is sent as SNI and is a reference name for a DANE-TA chain. Default: the MX host,
/// else the session's server name. Only before negotiating.
#[no_mangle]
pub extern "C" fn mailtls_session_set_tlsa_base(s: *mut mailtls_session, name: *const c_char) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, { set_name(s, DestinationName::TlsaBase, name) })
}

/// Sets the MX host name the connection goes to: what an MTA-STS policy's `mx`
/// patterns are matched against and its certificate checked for, a DANE-TA reference
/// name, and the receiving MX of TLS-RPT reports. Default: the session's server name.
/// Only before negotiating.
#[no_mangle]
pub extern "C" fn mailtls_session_set_mx_host(s: *mut mailtls_session, name: *const c_char) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, { set_name(s, DestinationName::MxHost, name) })
}

/// Sets the next-hop domain (the recipient domain whose MX this is): the policy
/// domain of TLS-RPT reports and a DANE-TA reference name. Only before negotiating.
#[no_mangle]
pub extern "C" fn mailtls_session_set_next_hop(s: *mut mailtls_session, domain: *const c_char) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, { set_name(s, DestinationName::NextHop, domain) })
}

/// Sets the MTA-STS policy (RFC 8461) the caller fetched for the next-hop domain:
/// the `len` bytes of the policy body (`version: STSv1`, `mode`, `mx`, `max_age`
/// lines). Under `enforce` the MX host must match an `mx` pattern (else the session
/// defers with `MAILTLS_RESULT_STS_MX_MISMATCH` before sending anything) and TLS with
/// a certificate valid for the MX host is required (the config's trust anchors); under
/// `testing` the session goes on as its policy says and the report tells what would
/// have failed; `none` is no policy. DANE takes precedence where usable TLSA records
/// are present. A policy that does not parse returns
/// `MAILTLS_RESULT_STS_POLICY_INVALID` with the reason; the session then goes on as
/// without a policy and reports `sts-policy-invalid`. Only before negotiating.
#[no_mangle]
pub extern "C" fn mailtls_session_set_mta_sts(s: *mut mailtls_session, policy: *const u8, len: usize) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(s, mailtls_result::NullParameter);
        // SAFETY: `len` readable bytes at `policy`, or NULL with 0 (checked).
        let text = match unsafe { byte_slice(policy, len) } {
            Ok(t) => t,
            Err(e) => return e,
        };
        let ss = session(s);
        let r = ss.inner.set_mta_sts(text);
        ss.done(r)
    })
}

/// The policy the session was held to, after DANE and MTA-STS had their say: `none`,
/// `may`, `encrypt`, `verify` (also MTA-STS enforce), `dane` or `dane-only` (usable
/// TLSA records decided). NULL before the negotiation started, or for a NULL report.
#[no_mangle]
pub extern "C" fn mailtls_report_policy(r: *const mailtls_report) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        non_null!(r, std::ptr::null());
        rep(r).src.policy.map_or(std::ptr::null(), super::static_cstr)
    })
}

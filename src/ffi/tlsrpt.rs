//! TLS-RPT (RFC 8460) from C: a session's record line, and an aggregate that adds
//! record lines or reports up and writes the section 4.4 report.

use std::ffi::{c_char, CString};

use super::report::{mailtls_report, rep};
use super::{c_str, cstring, ffi_guard, mailtls_result, non_null};
use crate::error::{Code, Error};
use crate::tlsrpt::Aggregate;

/// A TLS-RPT aggregate (opaque): the sessions added up for RFC 8460 reports. It has
/// one owner and is used by one thread at a time; free it with `mailtls_tlsrpt_free`.
pub struct mailtls_tlsrpt {
    agg: Aggregate,
    last_error: CString,
}

impl mailtls_tlsrpt {
    fn fail(&mut self, e: Error) -> mailtls_result {
        self.last_error = cstring(&e.to_string());
        e.code
    }
}

fn agg<'a>(a: *mut mailtls_tlsrpt) -> &'a mut mailtls_tlsrpt {
    // SAFETY: non-NULL aggregate pointers come from `Box::into_raw` in
    // `mailtls_tlsrpt_new`, and one thread at a time uses one (documented).
    unsafe { &mut *a }
}

fn agg_ref<'a>(a: *const mailtls_tlsrpt) -> &'a mailtls_tlsrpt {
    // SAFETY: as in `agg`.
    unsafe { &*a }
}

/// Creates an empty aggregate for reports by `organization` (the report's
/// "organization-name") with `contact` ("contact-info": an email address or a URL
/// where the reporting organization can be reached). Both are non-empty UTF-8
/// (`MAILTLS_RESULT_INVALID_PARAMETER` otherwise). On success `*out` is the
/// aggregate, to free with `mailtls_tlsrpt_free`.
#[no_mangle]
pub extern "C" fn mailtls_tlsrpt_new(
    organization: *const c_char,
    contact: *const c_char,
    out: *mut *mut mailtls_tlsrpt,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(out, mailtls_result::NullParameter);
        // SAFETY: NUL-terminated strings or NULL (checked).
        let (org, contact) = match unsafe { (c_str(organization), c_str(contact)) } {
            (Ok(o), Ok(c)) => (o, c),
            (Err(e), _) | (_, Err(e)) => return e,
        };
        if org.is_empty() || contact.is_empty() {
            return mailtls_result::InvalidParameter;
        }
        let b = Box::new(mailtls_tlsrpt { agg: Aggregate::new(org, contact), last_error: CString::default() });
        // SAFETY: `out` is non-NULL and writable.
        unsafe { *out = Box::into_raw(b) };
        mailtls_result::Ok
    })
}

/// Frees an aggregate; NULL is allowed.
#[no_mangle]
pub extern "C" fn mailtls_tlsrpt_free(a: *mut mailtls_tlsrpt) {
    ffi_guard!((), {
        if !a.is_null() {
            // SAFETY: from `Box::into_raw` in `mailtls_tlsrpt_new`, freed once.
            drop(unsafe { Box::from_raw(a) });
        }
    })
}

/// Adds the session of one record line, as `mailtls_report_tlsrpt_record` gives it
/// (one line end after it is allowed). A line that is not a record (not JSON, an
/// unknown field, policy type or RFC 8460 result type, more than 65536 bytes) is
/// refused with `MAILTLS_RESULT_TLSRPT_RECORD_INVALID`, the reason in
/// `mailtls_tlsrpt_last_error`, and the aggregate unchanged.
#[no_mangle]
pub extern "C" fn mailtls_tlsrpt_add_record(a: *mut mailtls_tlsrpt, line: *const c_char) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(a, mailtls_result::NullParameter);
        non_null!(line, mailtls_result::NullParameter);
        let a = agg(a);
        // SAFETY: a NUL-terminated string (checked non-NULL).
        let line = match unsafe { c_str(line) } {
            Ok(l) => l,
            Err(_) => return a.fail(Error::new(Code::TlsrptRecordInvalid, "not UTF-8")),
        };
        match a.agg.add_line(line) {
            Ok(()) => mailtls_result::Ok,
            Err(e) => a.fail(e),
        }
    })
}

/// Adds the session a report describes (its TLS-RPT result, the one
/// `mailtls_report_tlsrpt_record` writes as a line), for a reporter in the process
/// that ran the session. A report without a TLS-RPT result (a server session, a
/// negotiation not ended) is refused with `MAILTLS_RESULT_INVALID_STATE`, the reason
/// in `mailtls_tlsrpt_last_error`.
#[no_mangle]
pub extern "C" fn mailtls_tlsrpt_add_report(a: *mut mailtls_tlsrpt, r: *const mailtls_report) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(a, mailtls_result::NullParameter);
        non_null!(r, mailtls_result::NullParameter);
        let a = agg(a);
        let Some(result) = rep(r).tlsrpt() else {
            return a.fail(Error::new(
                Code::InvalidState,
                "TLS-RPT: the report has no TLS-RPT result (a server session, or a negotiation that has not ended)",
            ));
        };
        match a.agg.add(result) {
            Ok(()) => mailtls_result::Ok,
            Err(e) => a.fail(e),
        }
    })
}

/// How many sessions were added (whatever their time); 0 for NULL.
#[no_mangle]
pub extern "C" fn mailtls_tlsrpt_session_count(a: *const mailtls_tlsrpt) -> usize {
    ffi_guard!(0, {
        non_null!(a, 0);
        agg_ref(a).agg.session_count()
    })
}

/// The earliest and the latest time (seconds since the epoch) of the sessions
/// added, in `*first` and `*last`; `MAILTLS_RESULT_INVALID_STATE` when none was. A
/// tool reporting "everything" makes its range from them.
#[no_mangle]
pub extern "C" fn mailtls_tlsrpt_time_range(
    a: *const mailtls_tlsrpt,
    first: *mut u64,
    last: *mut u64,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(a, mailtls_result::NullParameter);
        non_null!(first, mailtls_result::NullParameter);
        non_null!(last, mailtls_result::NullParameter);
        let Some((lo, hi)) = agg_ref(a).agg.time_range() else { return mailtls_result::InvalidState };
        // SAFETY: non-NULL, writable (checked).
        unsafe {
            *first = lo;
            *last = hi;
        }
        mailtls_result::Ok
    })
}

/// Writes the RFC 8460 section 4.4 report of a time range into `buf` of `cap`
/// bytes, as one line of JSON, NUL-terminated. It counts the sessions whose time
/// is in [`start`, `end`) (seconds since the epoch), and no other. "end-datetime" is
/// written as the range's last second (`end` - 1: 23:59:59Z for a day). The range
/// RFC 8460 section 4.1 asks for is one UTC day, 00:00 to 24:00. `report_id` is the
/// report's unique "report-id".
///
/// `*needed` (when `needed` is not NULL) is set to the size the report needs, NUL
/// included, on success and when `buf` is NULL or `cap` too small: then the result
/// is `MAILTLS_RESULT_BUFFER_TOO_SMALL` and `buf` is not written, so a caller asks
/// with NULL and calls again with a buffer of that size. An empty range, an `end`
/// after year 9999 or an empty `report_id` give `MAILTLS_RESULT_INVALID_PARAMETER`,
/// the reason in `mailtls_tlsrpt_last_error`.
#[no_mangle]
pub extern "C" fn mailtls_tlsrpt_write(
    a: *mut mailtls_tlsrpt,
    start: u64,
    end: u64,
    report_id: *const c_char,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(a, mailtls_result::NullParameter);
        // SAFETY: a NUL-terminated string or NULL (checked).
        let id = match unsafe { c_str(report_id) } {
            Ok(id) => id,
            Err(e) => return e,
        };
        let a = agg(a);
        let json = match a.agg.to_json(start, end, id) {
            Ok(j) => j,
            Err(e) => return a.fail(e),
        };
        let size = json.len() + 1;
        if !needed.is_null() {
            // SAFETY: non-NULL, writable.
            unsafe { *needed = size };
        }
        if buf.is_null() || cap < size {
            return mailtls_result::BufferTooSmall;
        }
        // SAFETY: `buf` has `cap` >= json.len() + 1 writable bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(json.as_ptr(), buf as *mut u8, json.len());
            *buf.add(json.len()) = 0;
        }
        mailtls_result::Ok
    })
}

/// Writes the report of `mailtls_tlsrpt_write` and a line end to the file `path`,
/// replacing it whole: written to `path` plus ".tmpPID" first, synced, then
/// renamed, so no reader sees half a report. The file's mode is 0644 (less the
/// umask). A file that cannot be written gives `MAILTLS_RESULT_IO`, with the file
/// and the error in `mailtls_tlsrpt_last_error`.
#[no_mangle]
pub extern "C" fn mailtls_tlsrpt_write_file(
    a: *mut mailtls_tlsrpt,
    start: u64,
    end: u64,
    report_id: *const c_char,
    path: *const c_char,
) -> mailtls_result {
    ffi_guard!(mailtls_result::Panic, {
        non_null!(a, mailtls_result::NullParameter);
        // SAFETY: NUL-terminated strings or NULL (checked).
        let (id, path) = match unsafe { (c_str(report_id), c_str(path)) } {
            (Ok(i), Ok(p)) => (i, p),
            (Err(e), _) | (_, Err(e)) => return e,
        };
        if path.is_empty() {
            return mailtls_result::InvalidParameter;
        }
        let a = agg(a);
        match a.agg.write_file(start, end, id, std::path::Path::new(path)) {
            Ok(()) => mailtls_result::Ok,
            Err(e) => a.fail(e),
        }
    })
}

/// The full detail of the aggregate's last failed call (which record was refused
/// and why), as a NUL-terminated string owned by the aggregate, valid until the
/// next call on it; "" when nothing failed; NULL for NULL.
#[no_mangle]
pub extern "C" fn mailtls_tlsrpt_last_error(a: *const mailtls_tlsrpt) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        non_null!(a, std::ptr::null());
        agg_ref(a).last_error.as_ptr()
    })
}

/// The session's TLS-RPT result as one record line (a JSON object, no line end), to
/// write to a file per session and add up later with `mailtls_tlsrpt_add_record`:
/// {"mailtls-tlsrpt":1,"time":...,"policy-type":...,"policy-string":[...],
/// "policy-domain":...,"mx-host":[...],"result":"success" or "failure", and on
/// failure "result-type" and those of "sending-mta-ip", "receiving-mx-hostname",
/// "receiving-mx-helo", "receiving-ip", "failure-reason-code" and
/// "additional-information" that are known}. Owned by the report, like its other
/// strings. NULL when the session has no TLS-RPT result (a server session, a
/// negotiation not ended) and for NULL.
#[no_mangle]
pub extern "C" fn mailtls_report_tlsrpt_record(r: *const mailtls_report) -> *const c_char {
    ffi_guard!(std::ptr::null(), {
        non_null!(r, std::ptr::null());
        rep(r).tlsrpt_line()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::report::Report;
    use crate::tlsrpt::{Failure, PolicyId, PolicyType, SessionResult};
    use std::ffi::CStr;

    /// The report path C cannot reach until sessions fill `Report::tlsrpt` in:
    /// the record line of a report, and the same session added from the report.
    #[test]
    fn a_reports_result_is_its_record_line_and_adds_up() {
        let result = SessionResult {
            policy: PolicyId {
                policy_type: Some(PolicyType::Sts),
                policy_strings: vec!["version: STSv1".into(), "mode: enforce".into()],
                policy_domain: "example.org".into(),
                mx_host: vec!["*.example.org".into()],
            },
            failure: Some(Failure { result_type: "sts-webpki-invalid".into(), ..Failure::default() }),
            time: 100,
        };
        let with = mailtls_report::new(Report { tlsrpt: Some(result.clone()), ..Report::default() });
        let without = mailtls_report::new(Report::default());
        let line = mailtls_report_tlsrpt_record(&with);
        assert!(!line.is_null());
        // SAFETY: a NUL-terminated string owned by `with`.
        let text = unsafe { CStr::from_ptr(line) }.to_str().unwrap();
        assert_eq!(text, result.to_line());
        assert_eq!(mailtls_report_tlsrpt_record(&with), line, "the same string on every call");
        assert!(mailtls_report_tlsrpt_record(&without).is_null());

        let mut a: *mut mailtls_tlsrpt = std::ptr::null_mut();
        assert_eq!(mailtls_tlsrpt_new(c"org".as_ptr(), c"mailto:r@org".as_ptr(), &mut a), mailtls_result::Ok);
        assert_eq!(mailtls_tlsrpt_add_report(a, &with), mailtls_result::Ok);
        assert_eq!(mailtls_tlsrpt_add_record(a, line), mailtls_result::Ok);
        assert_eq!(mailtls_tlsrpt_add_report(a, &without), mailtls_result::InvalidState);
        // SAFETY: a NUL-terminated string owned by `a`.
        let why = unsafe { CStr::from_ptr(mailtls_tlsrpt_last_error(a)) }.to_str().unwrap();
        assert!(why.contains("no TLS-RPT result"), "{why}");
        assert_eq!(mailtls_tlsrpt_session_count(a), 2);
        let json = agg_ref(a).agg.to_json(0, 86_400, "r").unwrap();
        assert!(json.contains(r#""result-type":"sts-webpki-invalid","failed-session-count":2"#), "{json}");
        mailtls_tlsrpt_free(a);
    }
}
